"""Benchmark: the monitoring computations, and the full monthly monitoring protocol.

By default (no MLflow, no model) prints the time of the raw-batch anomaly checks (what
``score`` adds to every scoring run), the raw-measure drift checks, building a reference
profile on a stacked training frame, and the drift checks of a window batch against it.

    .venv/bin/python bench/bench_monitor.py [--partners 20000]

``--protocol SEED [SEED ...]`` runs README "Monitoring"'s protocol instead: the tests' model
(400 partners, seed 11, no tuning, promoted) in a temporary store; per seed a 3,000-partner
program (``--partners``) simulated once, its raw tables cut at each month start as an
operator's export holds them (``features.drift_sim.tables_known_at``), and ``run_monitor``
run monthly into one ``--out`` per scenario: the steady year 2025-08-01 to 2026-07-01,
``leads_dry_up`` (region NA from 2026-01-01) and NA + ``partner_type=msp`` 2026-02-01 to
2026-07-01. One line per run (exit code, warnings, alarms, the flagged and the explained
segments), then per seed: warnings per run, exit codes, the runs where leads of region=NA
first warn and alarm (the protocol wants run 1 and run 2), and the steady year's warnings.

    .venv/bin/python bench/bench_monitor.py --protocol 3 4 5 [--partners 3000]
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd

from partnerscore.features.anomaly import partner_outliers, raw_measure_drift, table_outliers
from partnerscore.features.config import BuildConfig, MonitorConfig, SimulateConfig
from partnerscore.features.drift import drift_checks
from partnerscore.features.pipeline import build_features, make_snapshots
from partnerscore.features.profile import build_profile, current_profile
from partnerscore.features.registry import feature_specs
from partnerscore.features.simulate import CONTRACT_TABLES, simulate_program

SCENARIOS = ("steady", "leads_dry_up", "NA+msp")


def _model(root: Path):
    """The tests' model (``tests/support.py: champion_store``): 400 partners seed 11."""
    from partnerscore.features.config import BuildConfig
    from partnerscore.features.pipeline import run_build
    from partnerscore.features.simulate import write_tables
    from partnerscore.serving.config import AppConfig
    from partnerscore.training.registry import run_promote
    from partnerscore.training.train import run_train

    raw = root / "train_raw"
    write_tables(simulate_program(SimulateConfig(partners=400, seed=11)), raw, fmt="parquet")
    run_build(raw, root / "features", BuildConfig())
    cfg = AppConfig.model_validate(
        {
            "paths": {"data_dir": str(root / "data"), "mlflow_dir": str(root / "mlflow")},
            "train": {"trials": 0},
        }
    )
    run_train(root / "features", cfg.train, **cfg.train_arguments())
    run_promote(cfg.train, tracking_uri=cfg.paths.tracking_uri(), force=True, reason="bench")
    return cfg


def _run_line(result) -> tuple[str, dict]:
    """One run's line and its figures."""
    seg = [c for c in result.checks if c.name.startswith("quality.segment_volume.")]
    flagged = [c for c in seg if c.status in ("warn", "alarm")]
    explained = [c for c in seg if c.explained_by]
    na = {c.status for c in flagged if c.subject == "leads" and c.segment == "region=NA"}
    other = [
        c.name
        for c in result.checks
        if c.status in ("warn", "alarm") and not c.name.startswith("quality.segment_volume.")
    ]
    figures = {
        "exit": result.exit_code,
        "warn": result.count("warn"),
        "alarm": result.count("alarm"),
        "segment_flagged": len(flagged),
        "explained": len(explained),
        "na": "alarm" if "alarm" in na else "warn" if na else "",
    }
    line = (
        f"exit {result.exit_code} alarm {figures['alarm']} warn {figures['warn']} | segment: "
        + ("; ".join(f"{c.status} {c.subject}/{c.segment} x{c.value:.2f}" for c in flagged) or "-")
        + (f" | explained {len(explained)}" if explained else "")
        + (f" | other: {', '.join(other)}" if other else "")
    )
    return line, figures


def protocol(seeds: list[int], partners: int) -> None:
    """README "Monitoring"'s protocol on each seed (see the module's docstring)."""
    from partnerscore.features.drift_sim import apply_drift, drift_start, tables_known_at
    from partnerscore.features.simulate import write_tables
    from partnerscore.serving.monitor import run_monitor

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench_monitor_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        cfg = _model(root)
        print(f"model (400 partners, seed 11) {time.perf_counter() - t0:.0f} s", flush=True)
        summary = []
        for seed in seeds:
            sim = SimulateConfig(partners=partners, seed=seed)
            tables = simulate_program(sim)
            start = drift_start(sim.end_date, 180)
            dry = apply_drift(tables, "leads_dry_up", start)
            two = apply_drift(dry, "leads_dry_up", start, segment="partner_type=msp")
            drifted = pd.date_range("2026-02-01", "2026-07-01", freq="MS")
            runs = {
                "steady": (tables, pd.date_range("2025-08-01", "2026-07-01", freq="MS")),
                "leads_dry_up": (dry, drifted),
                "NA+msp": (two, drifted),
            }
            figures = {}
            for name, (frames, months) in runs.items():
                figures[name] = []
                for month in months:
                    raw = root / f"raw_{seed}" / name / f"{month:%Y-%m-%d}"
                    write_tables(tables_known_at(frames, month), raw, fmt="parquet")
                    t0 = time.perf_counter()
                    out = root / f"out_{seed}" / name
                    result = run_monitor(cfg, raw, month.date(), out, log_to_mlflow=False)
                    line, fig = _run_line(result)
                    figures[name].append(fig)
                    took = time.perf_counter() - t0
                    print(f"seed {seed} {name} {month:%Y-%m-%d}: {line} ({took:.1f} s)", flush=True)
            summary.append((seed, figures))
        print()
        for seed, figures in summary:
            for name in SCENARIOS:
                runs = figures[name]
                na = [f["na"] for f in runs]
                first = {
                    s: next((i + 1 for i, v in enumerate(na) if v == s), None)
                    for s in ("warn", "alarm")
                }
                print(
                    f"seed {seed} {name:12s} warnings per run "
                    + ",".join(str(f["warn"]) for f in runs)
                    + " | alarms "
                    + ",".join(str(f["alarm"]) for f in runs)
                    + " | exit "
                    + ",".join(str(f["exit"]) for f in runs)
                    + " | explained "
                    + ",".join(str(f["explained"]) for f in runs)
                    + (
                        f" | leads region=NA first warns in run {first['warn']}, "
                        f"alarms in run {first['alarm']}"
                        if name != "steady"
                        else f" | {sum(f['warn'] for f in runs)} warnings in {len(runs)} runs"
                    )
                )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partners", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--protocol", type=int, nargs="+", metavar="SEED", help="run the monthly protocol"
    )
    args = parser.parse_args()
    if args.protocol:
        protocol(args.protocol, args.partners or 3000)
        return
    args.partners = args.partners or 20000
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
