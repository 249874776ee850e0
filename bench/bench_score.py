"""Benchmark: scoring with SHAP drivers vs plain prediction (rows/s on this machine).

Simulates a partner program, builds its training set (~3 snapshots per partner, 67 features)
and fits both heads once per ``--models`` entry: ``default``, the shipped default parameters
(small trees: exact SHAP through compiled lookup tables); ``tuned_max``, the largest model the
tuner can return (``training/tune.py``: 300 trees of depth 3, 8 leaves, still compiled tables);
``bounded``, 400 trees, 31 leaves, depth 6 (SHAP through LightGBM's ``pred_contrib``): beyond
what the tuner can return since its trees were capped at depth 3, kept for comparison and slow
(~300 rows/s with drivers). For each, on N partner rows it times

- plain prediction (``PartnerModel.predict``, both heads),
- SHAP contributions alone (LightGBM ``pred_contrib``, and the path scoring uses),
- ``score_features``: predictions, exact SHAP effects in dollars and probability points, layer
  subscores, policy (score, tier, quadrant, intervention) and 3 + 3 driver sentences per row,
- reading categories in the model's spelling (``PartnerModel.respell``): alone, on rows whose
  categories the model knows (the fast path every batch takes) and on rows spelling every tier
  in another case (``REGISTERED``: each read as ``registered``), and ``score_features`` on the
  latter,
- listing categories the model never saw (``frame_check.unseen_categories``, which
  ``score_features`` calls on every batch): on rows whose categories it knows (the fast path)
  and on rows with an industry it never saw (``aerospace`` on every row),

and prints rows/s and the ratio to plain prediction, and for ``score_features`` its CPU
seconds (user + system of this process, all threads) and the load average: on a shared
machine wall-clock rows/s are noise, CPU seconds much less so. Asserts nothing.

    .venv/bin/python bench/bench_score.py [--partners 20000] [--rows 200000] [--threads 2]
        [--models default,tuned_max] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pandas as pd  # noqa: E402

from partnerscore.features.config import BuildConfig, SimulateConfig  # noqa: E402
from partnerscore.features.pipeline import build_training_set  # noqa: E402
from partnerscore.features.registry import feature_specs  # noqa: E402
from partnerscore.features.simulate import simulate_program  # noqa: E402
from partnerscore.features.validate import RawData  # noqa: E402
from partnerscore.models.config import PolicyConfig  # noqa: E402
from partnerscore.models.frame_check import unseen_categories  # noqa: E402
from partnerscore.models.scoring import contributions, score_features  # noqa: E402
from partnerscore.training.config import TrainConfig  # noqa: E402
from partnerscore.training.train import fit_partner_model  # noqa: E402

MODELS = {
    "default": {},
    "bounded": {"n_estimators": 400, "num_leaves": 31, "max_depth": 6},
    # the largest model the tuner can return (training/tune.py): still compiled tables
    "tuned_max": {"n_estimators": 300, "num_leaves": 8, "max_depth": 3},
}


def best_of(repeat: int, fn, cpu: list[float] | None = None) -> float:
    """Fastest wall-clock time of ``repeat`` runs (their CPU seconds appended to ``cpu``)."""
    times = []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        if cpu is not None:
            cpu.append(time.process_time() - c0)
    return min(times)


def main() -> None:
    """Run the benchmark and print figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--partners", type=int, default=20000)
    parser.add_argument("--rows", type=int, default=200000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="default,tuned_max")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    t0 = time.perf_counter()
    cfg = SimulateConfig(partners=args.partners, seed=5)
    tables = {k: v for k, v in simulate_program(cfg).items() if k != "truth"}
    end = pd.Timestamp(cfg.end_date) + pd.Timedelta(days=1)
    train = build_training_set(RawData.from_frames(tables, end), BuildConfig())
    specs = feature_specs(tables)
    reps = -(-args.rows // len(train))
    rows = pd.concat([train] * reps, ignore_index=True).head(args.rows)
    n = len(rows)
    print(
        f"{args.partners:,} simulated partners -> {len(train):,} training snapshots x "
        f"{len(specs)} features in {time.perf_counter() - t0:.1f} s; scoring {n:,} rows; "
        f"threads {args.threads}; best of {args.repeat}"
    )
    tcfg = TrainConfig()
    for name in args.models.split(","):
        params = {**tcfg.revenue.model_dump(), **MODELS[name], "n_jobs": args.threads}
        t0 = time.perf_counter()
        model = fit_partner_model(train, specs, tcfg, PolicyConfig(), params, params)
        fit_s = time.perf_counter() - t0
        prepared = model.prepare(rows)
        score_features(model, rows.head(2000), num_threads=args.threads)  # warm-up

        plain = best_of(args.repeat, lambda m=model: m.predict(rows))
        lgb_contrib = best_of(
            args.repeat,
            lambda m=model, p=prepared: [
                h.booster_.predict(p, pred_contrib=True, num_threads=args.threads)
                for h in (m.revenue, m.engagement)
            ],
        )
        used = best_of(args.repeat, lambda m=model: contributions(m, rows, args.threads))
        cpu: list[float] = []
        full = best_of(
            args.repeat, lambda m=model: score_features(m, rows, num_threads=args.threads), cpu
        )
        # a batch spelling every tier in another case than the model's ('REGISTERED'): each
        # row's tier is read as the model's category (PartnerModel.respell), the slow path
        loud = rows.assign(tier=rows["tier"].str.upper())
        respell = best_of(args.repeat, lambda m=model: m.respell(rows))
        respell_loud = best_of(args.repeat, lambda m=model, x=loud: m.respell(x))
        cpu_loud: list[float] = []
        full_loud = best_of(
            args.repeat,
            lambda m=model, x=loud: score_features(m, x, num_threads=args.threads),
            cpu_loud,
        )
        unseen = best_of(args.repeat, lambda m=model: unseen_categories(m, rows))
        alien = rows.assign(industry="aerospace")
        unseen_all = best_of(args.repeat, lambda m=model, x=alien: unseen_categories(m, x))
        compiled = model.revenue._shap_tables() is not None
        print(
            f"\n[{name}] {params['n_estimators']} trees, {params['num_leaves']} leaves, depth "
            f"{params['max_depth']} per head; fit {fit_s:.1f} s; SHAP path: "
            f"{'compiled lookup tables' if compiled else 'LightGBM pred_contrib'}"
        )
        print(f"  plain prediction (both heads)        {n / plain:>10,.0f} rows/s")
        print(f"  LightGBM pred_contrib (both heads)   {n / lgb_contrib:>10,.0f} rows/s")
        print(f"  SHAP as scoring computes it          {n / used:>10,.0f} rows/s")
        print(
            f"  score_features with drivers          {n / full:>10,.0f} rows/s "
            f"({full / plain:.1f}x the time of plain prediction); {min(cpu):.2f} s CPU, "
            f"{n / min(cpu):,.0f} rows per CPU-second"
        )
        print(
            f"  category spellings, all known        {n / respell:>10,.0f} rows/s "
            f"({respell / full:.1%} of score_features); every tier in another case "
            f"{n / respell_loud:,.0f} rows/s"
        )
        print(
            f"  score_features, every tier respelled {n / full_loud:>10,.0f} rows/s; "
            f"{min(cpu_loud):.2f} s CPU, {n / min(cpu_loud):,.0f} rows per CPU-second"
        )
        print(
            f"  unseen categories, all known         {n / unseen:>10,.0f} rows/s "
            f"({unseen / full:.1%} of score_features); an unseen industry on every row "
            f"{n / unseen_all:,.0f} rows/s"
        )
        print("  load average (1, 5, 15 min): " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
