"""Benchmark: simulating and writing a synthetic partner program (goal: 5,000 partners < 30 s).

.venv/bin/python bench/bench_simulate.py [--partners 5000] [--format csv]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from partnerscore.features.config import SimulateConfig
from partnerscore.features.simulate import simulate_program, write_tables
from partnerscore.features.validate import load_raw


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partners", type=int, default=5000)
    parser.add_argument("--format", default="csv", choices=["csv", "parquet"])
    args = parser.parse_args()
    t0 = time.perf_counter()
    tables = simulate_program(SimulateConfig(partners=args.partners, seed=1))
    sim = time.perf_counter() - t0
    rows = sum(len(t) for t in tables.values())
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_tables(tables, tmp, fmt=args.format)
        write = time.perf_counter() - t0
        t0 = time.perf_counter()
        raw = load_raw(tmp, write_quarantine=False)
        validate = time.perf_counter() - t0
    print(f"{args.partners:,} partners, {rows:,} rows in {len(tables)} tables")
    print(
        f"simulate {sim:6.2f} s   write {args.format} {write:6.2f} s   "
        f"validate {validate:6.2f} s ({raw.report.quarantined_total} quarantined)"
    )


if __name__ == "__main__":
    main()
