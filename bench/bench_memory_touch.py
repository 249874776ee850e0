"""How much kernel time this machine charges for touching fresh memory (not partnerscore code).

Each measurement runs in a new process that allocates and fills SIZE GB with numpy; each size
is measured twice in a row ('first', 'again'), with user and system seconds per GB. On the
benchmark VM, memory not used in the last seconds (returned to the host) cost 1.0-2.6 s of
system time per GB and memory reused at once 0.12-0.20 s, at 1.5 and at 12 GB alike: what it
depends on is how recently the memory was used, not the process's size. A 1M-partner job's
arrays are above glibc's mmap threshold, so each allocation pays the first price again: the
system-time part of the scale benchmark's CPU growth from 100k to 1M partners (README,
"Scale benchmark").

    .venv/bin/python bench/bench_memory_touch.py [--sizes 1.5,12] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, numpy as np
gb = float(sys.argv[1])
a = np.ones(int(gb * 2**30) // 8)
u = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"user": u.ru_utime, "sys": u.ru_stime, "minflt": u.ru_minflt}))
"""


def touch(gb: float) -> dict:
    """User and system seconds of a fresh process that fills ``gb`` GB."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(gb)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1.5,12", help="GB per process, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    for rnd in range(args.rounds):
        for gb in sizes:
            for label in ("first", "again"):
                r = touch(gb)
                print(
                    f"round {rnd + 1}  {gb:5.1f} GB {label}: system {r['sys']:6.2f} s "
                    f"({r['sys'] / gb:.2f} s/GB), user {r['user']:5.2f} s, "
                    f"{r['minflt']:,} minor faults",
                    flush=True,
                )


if __name__ == "__main__":
    main()
