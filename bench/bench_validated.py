"""Validate once: validate / build / score with and without a reused validated snapshot.

Every stage runs as the real CLI in its own subprocess under a small wrapper, so
``getrusage(RUSAGE_CHILDREN)`` is exactly that stage: CPU seconds (user + system), wall seconds
and peak RSS. Then, in this process, the loading step alone: ``load_raw`` against
``read_validated`` (which includes hashing every raw file), and the hashing alone.

    python bench/bench_validated.py --raw /tmp/bench/raw10k --config cfg.yaml [--as-of DATE]

RAW must hold a simulated program (``partnerscore simulate --partners N --out RAW``) and the
config a registered ``champion`` (e.g. trained on a small program). ``RAW/validated`` is
removed first and written by the ``validate --validated`` stage. Scores are written without
history (``--no-history``) so both score runs do the same work after loading.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from measure import run

CLI = [str(Path(sys.executable).with_name("partnerscore"))]


def loading(raw: Path) -> dict[str, float]:
    """CPU seconds of the loading step alone, in this process."""
    from partnerscore.features.core import file_fingerprint
    from partnerscore.features.validate import load_raw
    from partnerscore.features.validated import default_dir, read_validated

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (
            ("load_raw", lambda: load_raw(raw, Path(tmp) / "q1")),
            ("read_validated", lambda: read_validated(raw, default_dir(raw), Path(tmp) / "q2")),
            ("sha256 of the raw files", lambda: [file_fingerprint(p) for p in raw.glob("*.csv")]),
        ):
            started = time.process_time()
            fn()
            out[name] = time.process_time() - started
    return out


def stage_plan(raw: Path, as_of: str) -> list[tuple[str, list[str]]]:
    """The measured runs, in order: (name, CLI arguments); outputs go to ``RAW-out``."""
    work = raw.with_name(raw.name + "-out")
    score = ["score", "--raw", str(raw), "--as-of", as_of, "--no-history", "--out"]
    return [
        ("validate", ["validate", str(raw)]),
        ("build", ["build", "--raw", str(raw), "--out", str(work / "features")]),
        ("score", [*score, str(work / "scores.parquet")]),
        ("validate --validated", ["validate", str(raw), "--validated", str(raw / "validated")]),
        ("build (snapshot reused)", ["build", "--raw", str(raw), "--out", str(work / "f2")]),
        ("score (snapshot reused)", [*score, str(work / "scores2.parquet")]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--raw")
    parser.add_argument("--config")
    parser.add_argument("--as-of", default="2026-03-01")
    args = parser.parse_args()
    raw = Path(args.raw)
    shutil.rmtree(raw / "validated", ignore_errors=True)
    c = ["-c", args.config]
    for name, argv in stage_plan(raw, args.as_of):
        r = run([*CLI, *argv, *c])
        print(
            f"{raw.name:<10} {name:<26} cpu {r['cpu']:7.1f} s  wall {r['wall']:7.1f} s  "
            f"peak RSS {r['rss_mb']:7.0f} MB",
            flush=True,
        )
    for name, cpu in loading(raw).items():
        print(f"{raw.name:<10} in-process {name:<28} cpu {cpu:6.2f} s", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
