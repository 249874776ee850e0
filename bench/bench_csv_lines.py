"""Benchmark: the line and open-quote pass over raw CSV files (``features/core.py: csv_lines``).

Every validate and every score from raw tables runs it once per CSV table, beside Arrow's own
read. Writes files of ``--rows`` rows in three shapes (no quotes; quoted text with commas;
only empty quoted fields ``""``, as PostgreSQL's CSV export writes an empty text, which has no
closing quote to stop the backward scan) and prints, per shape, the CPU seconds of
``csv_lines`` and of Arrow reading the same file. Asserts nothing.

    .venv/bin/python bench/bench_csv_lines.py [--rows 2000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.csv as pacsv

from partnerscore.features.core import csv_lines

SHAPES = {
    "plain": b"P0001,2026-01-05,3.5,open\n",
    "quoted text": b'P0001,"Acme, Inc.",3.5,"open, late"\n',
    "empty quoted fields": b'1,"",2,""\n',
}


def cpu(fn, repeat: int) -> float:
    """Least CPU seconds of ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for shape, row in SHAPES.items():
            path = Path(tmp) / "t.csv"
            path.write_bytes(b"a,b,c,d\n" + row * args.rows)
            lines = csv_lines(path)
            assert lines == (args.rows + 1, None), lines
            ours = cpu(lambda p=path: csv_lines(p), args.repeat)
            arrow = cpu(lambda p=path: pacsv.read_csv(p), args.repeat)
            size = path.stat().st_size / 1e6
            print(
                f"{shape:<20} {args.rows:>10,} rows {size:7.1f} MB: csv_lines {ours:6.3f} s CPU, "
                f"Arrow read {arrow:6.3f} s CPU"
            )


if __name__ == "__main__":
    main()
