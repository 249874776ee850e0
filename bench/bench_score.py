"""Benchmark: scoring with SHAP drivers vs plain prediction (rows/s on this machine).

Trains both heads with the shipped default parameters on a simulated program, then times
``PartnerModel.predict`` (plain) and ``score_features`` (predictions + exact TreeSHAP drivers,
subscores, policy and sentences) on N partner rows. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_score.py [--partners 20000] [--rows 200000] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pandas as pd  # noqa: E402

from partnerscore.features.config import BuildConfig, SimulateConfig  # noqa: E402
from partnerscore.features.pipeline import build_training_set  # noqa: E402
from partnerscore.features.registry import feature_specs  # noqa: E402
from partnerscore.features.simulate import simulate_program  # noqa: E402
from partnerscore.features.validate import RawData  # noqa: E402
from partnerscore.models.config import PolicyConfig  # noqa: E402
from partnerscore.models.scoring import score_features  # noqa: E402
from partnerscore.training.config import TrainConfig  # noqa: E402
from partnerscore.training.train import fit_partner_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partners", type=int, default=20000)
    parser.add_argument("--rows", type=int, default=200000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    cfg = SimulateConfig(partners=args.partners, seed=5)
    tables = {k: v for k, v in simulate_program(cfg).items() if k != "truth"}
    end = pd.Timestamp(cfg.end_date) + pd.Timedelta(days=1)
    train = build_training_set(RawData.from_frames(tables, end), BuildConfig())
    specs = feature_specs(tables)
    tcfg = TrainConfig()
    t0 = time.perf_counter()
    params = {**tcfg.revenue.model_dump(), "n_jobs": args.threads}
    model = fit_partner_model(train, specs, tcfg, PolicyConfig(), params, params)
    fit_s = time.perf_counter() - t0
    reps = -(-args.rows // len(train))
    rows = pd.concat([train] * reps, ignore_index=True).head(args.rows)

    model.predict(rows.head(1000))  # warm-up
    t0 = time.perf_counter()
    model.predict(rows)
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    contrib = model.raw_contributions(rows, num_threads=args.threads)
    shap_s = time.perf_counter() - t0
    del contrib
    prepared = model.prepare(rows)
    t0 = time.perf_counter()
    for head in (model.revenue, model.engagement):
        head.booster_.predict(prepared, pred_contrib=True, num_threads=args.threads)
    lgb_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scored = score_features(model, rows, num_threads=args.threads)
    full = time.perf_counter() - t0
    n = len(rows)
    print(
        f"model: {tcfg.revenue.n_estimators} trees, {tcfg.revenue.num_leaves} leaves, "
        f"depth {tcfg.revenue.max_depth}, {len(specs)} features; fit {fit_s:.1f} s on "
        f"{len(train):,} snapshots; threads {args.threads}"
    )
    print(f"plain prediction (both heads):        {n / plain:>10,.0f} rows/s")
    print(f"LightGBM pred_contrib (both heads):   {n / lgb_s:>10,.0f} rows/s")
    print(f"SHAP via compiled tables (both heads):{n / shap_s:>10,.0f} rows/s")
    print(
        f"score_features with drivers:          {n / full:>10,.0f} rows/s "
        f"({full / plain:.1f}x plain; {scored.shape[1]} columns)"
    )


if __name__ == "__main__":
    main()
