"""Benchmark: simulating and writing a synthetic partner program (goal: 5,000 partners < 30 s).

Prints rows per table, simulate time, write time per format and the contract validation time.
``--event-scale`` multiplies activity/portal volume; ~10M raw events (every table but partners
and truth): ``--partners 50000 --event-scale 2.5``.

    .venv/bin/python bench/bench_simulate.py [--partners 5000] [--event-scale 1] [--format csv]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

from partnerscore.features.config import SimulateConfig
from partnerscore.features.simulate import CONTRACT_TABLES, simulate_program, write_tables
from partnerscore.features.validate import load_raw


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partners", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--event-scale", type=float, default=1.0)
    parser.add_argument("--format", default="both", choices=["csv", "parquet", "both"])
    parser.add_argument("--no-validate", action="store_true", help="Skip the loader timing.")
    args = parser.parse_args()
    cfg = SimulateConfig(partners=args.partners, seed=args.seed, event_scale=args.event_scale)
    t0 = time.perf_counter()
    tables = simulate_program(cfg)
    sim = time.perf_counter() - t0
    events = sum(len(tables[t]) for t in CONTRACT_TABLES if t != "partners")
    print(f"{args.partners:,} partners, event_scale {args.event_scale:g}: {events:,} raw events")
    for name, frame in tables.items():
        print(f"  {name:<22}{len(frame):>12,} rows")
    print(f"simulate          {sim:7.2f} s")
    formats = ("csv", "parquet") if args.format == "both" else (args.format,)
    for fmt in formats:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            write_tables(tables, tmp, fmt=fmt)
            write = time.perf_counter() - t0
            print(f"write {fmt:<11} {write:7.2f} s")
            if not args.no_validate:
                t0 = time.perf_counter()
                raw = load_raw(tmp, write_quarantine=False)
                validate = time.perf_counter() - t0
                print(
                    f"validate {fmt:<8} {validate:7.2f} s "
                    f"({raw.report.quarantined_total} rows quarantined)"
                )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory       {peak:7.0f} MB")


if __name__ == "__main__":
    main()
