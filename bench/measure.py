"""Measure one command: CPU seconds (user + system, and each), wall seconds and peak RSS.

The command runs under a small wrapper process (this file run as a script), so
``getrusage(RUSAGE_CHILDREN)`` in the wrapper is exactly that command and its waited-for
children. With ``tree=True`` the command runs under ``cpu_tree.py`` instead, which samples the
whole process tree: PySpark never reaps its JVM, so ``getrusage`` would miss the JVM's and the
Python workers' CPU.

    from measure import run   # bench scripts run as `python bench/x.py`: bench/ is on sys.path
    result = run(["partnerscore", "score", ...])  # {"rc", "wall", "cpu", "user", "sys", "rss_mb", "tail"}
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _wrapper(argv: list[str]) -> None:
    """Run ``argv`` and print its usage as JSON (this process's children only)."""
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "rc": done.returncode,
                "wall": wall,
                "cpu": usage.ru_utime + usage.ru_stime,
                "user": usage.ru_utime,
                "sys": usage.ru_stime,
                "rss_mb": usage.ru_maxrss / 1024,
                "tail": (done.stdout + done.stderr)[-2000:],
            }
        )
    )


def run(argv: list[str], tree: bool = False) -> dict:
    """Run ``argv`` measured; a non-zero exit stops the benchmark with the command's output."""
    if tree:
        argv = [sys.executable, str(HERE / "cpu_tree.py"), "--", *argv]
    done = subprocess.run(
        [sys.executable, __file__, json.dumps(argv)], capture_output=True, text=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{result['tail']}")
    if tree:  # the whole tree's CPU and summed peak RSS: cpu_tree's last line
        line = result["tail"].strip().splitlines()[-1]
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        result["cpu"] = float(fields["cpu_s"])
        result["user"] = result["sys"] = None  # the tree's samples: user + system only
        result["rss_mb"] = float(fields["peak_rss_mb"])
    return result


if __name__ == "__main__":
    _wrapper(json.loads(sys.argv[1]))
