"""Benchmark: the monitoring computations on a large simulated program (no MLflow, no model).

Prints the time of the raw-batch anomaly checks (what ``score`` adds to every scoring run), the
raw-measure drift checks, building a reference profile on a stacked training frame, and the
drift checks of a window batch against it.

    .venv/bin/python bench/bench_monitor.py [--partners 20000]
"""

from __future__ import annotations

import argparse
import resource
import time

import pandas as pd

from partnerscore.features.anomaly import partner_outliers, raw_measure_drift, table_outliers
from partnerscore.features.config import BuildConfig, MonitorConfig, SimulateConfig
from partnerscore.features.drift import drift_checks
from partnerscore.features.pipeline import build_features, make_snapshots
from partnerscore.features.profile import build_profile, current_profile
from partnerscore.features.registry import feature_specs
from partnerscore.features.simulate import CONTRACT_TABLES, simulate_program


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partners", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sim = SimulateConfig(partners=args.partners, seed=args.seed)
    tables = {k: v for k, v in simulate_program(sim).items() if k in CONTRACT_TABLES}
    events = sum(len(v) for k, v in tables.items() if k != "partners")
    as_of = pd.Timestamp(sim.end_date) + pd.Timedelta(days=1)
    cfg = MonitorConfig()
    print(f"{args.partners:,} partners, {events:,} raw events, as of {as_of:%Y-%m-%d}")

    t0 = time.perf_counter()
    rows, _ = table_outliers(tables, as_of, cfg)
    mine = partner_outliers(tables, as_of, cfg)
    print(f"anomaly checks     {time.perf_counter() - t0:7.2f} s ({len(rows) + len(mine)} rows)")

    t0 = time.perf_counter()
    raw_measure_drift(tables, as_of, cfg)
    print(f"raw measure drift  {time.perf_counter() - t0:7.2f} s")

    ages = BuildConfig().ages
    snaps = make_snapshots(tables["partners"], ages)
    old = snaps[snaps["as_of"] < as_of - pd.Timedelta(days=365)].reset_index(drop=True)
    new = snaps[snaps["as_of"] >= as_of - pd.Timedelta(days=90)]
    new = new[new["as_of"] < as_of].reset_index(drop=True)
    ref_frame = build_features(tables, old[["partner_id", "as_of"]])
    cur_frame = build_features(tables, new[["partner_id", "as_of"]])
    specs = feature_specs(tables)
    numeric = [s.name for s in specs if s.kind == "numeric"]
    categorical = [s.name for s in specs if s.kind == "categorical"]

    t0 = time.perf_counter()
    reference = build_profile(ref_frame, numeric, categorical, ages)
    print(f"reference profile  {time.perf_counter() - t0:7.2f} s ({len(ref_frame):,} snapshots)")

    t0 = time.perf_counter()
    checks = drift_checks(reference, current_profile(cur_frame, reference), cfg)
    alarms = sum(c.status == "alarm" for c in checks)
    print(
        f"drift checks       {time.perf_counter() - t0:7.2f} s "
        f"({len(cur_frame):,} snapshots, {len(checks)} checks, {alarms} alarms)"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory        {peak:7.0f} MB")


if __name__ == "__main__":
    main()
