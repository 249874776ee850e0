"""Benchmark: the upgrade-path search (``models/whatif.py: upgrade_paths``) for N partners.

Every ``score`` run of a batch up to ``whatif.upgrade_max_partners`` (5,000) gives each partner
``next_tier_changes`` through this search, so its time is part of every scoring run. Simulates
a ``--partners`` program, fits both heads with the shipped default parameters (no tuning), takes
each partner's features at onboarding day 90 (then day 60, 120, 30, 180 while more rows are
needed), scores them for their tiers, and times ``upgrade_paths`` (default grid 5, 3 steps) on
the first N rows of each ``--sizes`` entry: wall seconds (median and fastest of ``--repeat``)
and CPU seconds (user + system of this process), the partners below the best tier (the ones
searched) and the ones with a path, and a digest of the paths (sha256 of their ``repr``): equal
digests, equal paths, bit for bit, so a faster search can be checked against the one before on
the same program. Asserts nothing.

    .venv/bin/python bench/bench_whatif.py [--partners 5000] [--sizes 2000,5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pandas as pd  # noqa: E402

from partnerscore.features.config import BuildConfig, SimulateConfig  # noqa: E402
from partnerscore.features.pipeline import (  # noqa: E402
    build_scoring_frame_at_age,
    build_training_set,
)
from partnerscore.features.registry import feature_specs  # noqa: E402
from partnerscore.features.simulate import simulate_program  # noqa: E402
from partnerscore.features.validate import RawData  # noqa: E402
from partnerscore.models.config import PolicyConfig  # noqa: E402
from partnerscore.models.scoring import score_features  # noqa: E402
from partnerscore.models.whatif import upgrade_paths  # noqa: E402
from partnerscore.training.config import TrainConfig  # noqa: E402
from partnerscore.training.train import fit_partner_model  # noqa: E402

AGES = (90, 60, 120, 30, 180)  # onboarding days whose feature rows are stacked, in this order


def main() -> None:
    """Run the benchmark and print figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--partners", type=int, default=5000)
    parser.add_argument("--sizes", default="2000,5000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    t0 = time.perf_counter()
    cfg = SimulateConfig(partners=args.partners, seed=args.seed)
    tables = {k: v for k, v in simulate_program(cfg).items() if k != "truth"}
    raw = RawData.from_frames(tables, pd.Timestamp(cfg.end_date) + pd.Timedelta(days=1))
    train = build_training_set(raw, BuildConfig())
    specs = feature_specs(tables)
    tcfg = TrainConfig()
    revenue = {**tcfg.revenue.model_dump(), "n_jobs": 1}
    engagement = {**tcfg.engagement.model_dump(), "n_jobs": 1}
    model = fit_partner_model(train, specs, tcfg, PolicyConfig(), revenue, engagement)
    frames = []
    for age in AGES:
        if sum(len(f) for f in frames) >= max(sizes):
            break
        frames.append(build_scoring_frame_at_age(raw, age)[0])
    rows = pd.concat(frames, ignore_index=True)
    policy = PolicyConfig()
    tiers = score_features(model, rows, policy=policy)["score_tier"].to_numpy(dtype=object)
    print(
        f"{args.partners:,} simulated partners (seed {args.seed}), default model fitted; "
        f"{len(rows):,} feature rows at days {', '.join(map(str, AGES[: len(frames)]))} in "
        f"{time.perf_counter() - t0:.1f} s; best of {args.repeat}"
    )
    best = max(policy.tier_cutoffs, key=policy.tier_cutoffs.get)
    for n in sizes:
        part, part_tiers = rows.head(n), tiers[:n]
        walls, cpus, paths = [], [], None
        for _ in range(args.repeat):
            w0, c0 = time.perf_counter(), time.process_time()
            paths = upgrade_paths(model, part, part_tiers, policy)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        searched = sum(t in policy.tier_cutoffs and t != best for t in part_tiers)
        found = sum(bool(p) for p in paths)
        digest = hashlib.sha256(repr(paths).encode()).hexdigest()[:16]
        print(
            f"  upgrade_paths {len(part):>6,} partners ({searched:,} below the best tier, "
            f"{found:,} with a path): {statistics.median(walls):.2f} s median, "
            f"{min(walls):.2f} s fastest, {min(cpus):.2f} s CPU; paths sha256 {digest}"
        )
    print("  load average (1, 5, 15 min): " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
