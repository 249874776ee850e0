"""CPU seconds of a command and every process it starts (a Spark driver's JVM and its workers).

``/usr/bin/time`` and ``getrusage(RUSAGE_CHILDREN)`` count only children that were waited for:
PySpark leaves its JVM a zombie the driver never reaps, so their CPU is lost. This samples the
whole process tree from /proc every 0.2 s and sums each process's own user + system time (the
last value seen; a process living less than one interval is missed) and the peak of the tree's
summed resident memory. Linux only.

    python bench/cpu_tree.py -- partnerscore score --engine spark ...

Prints one line: ``cpu_s=<user+sys> wall_s=<wall> peak_rss_mb=<tree> load=<1-min load avg>``;
with ``CPU_TREE_DETAIL=1`` in the environment, first one line per process (CPU seconds and
the start of its command line: the driver, the JVM, each Python worker).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> tuple[int, float, int] | None:
    """(parent pid, user + system seconds, resident bytes) of a process, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK, int(fields[21]) * PAGE


def _command(pid: int) -> str:
    """The start of a process's command line (which part of a Spark run it is)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            parts = handle.read().split(b"\0")
    except OSError:
        return ""
    text = " ".join(p.decode(errors="replace") for p in parts if p)
    return text[:60] + (" ... " + text[-40:] if len(text) > 100 else text[60:100])


def main(argv: list[str]) -> int:
    """Run ``argv`` (after ``--``) and print its tree's CPU, wall and peak memory."""
    command = argv[argv.index("--") + 1 :] if "--" in argv else argv
    load = os.getloadavg()[0]
    start = time.perf_counter()
    child = subprocess.Popen(command)
    cpu: dict[int, float] = {}
    names: dict[int, str] = {}
    peak = 0
    while child.poll() is None:
        stats = {}
        for name in os.listdir("/proc"):
            if name.isdigit() and (found := _stat(int(name))) is not None:
                stats[int(name)] = found
        tree, grew = {child.pid}, True
        while grew:
            grew = False
            for pid, (parent, _, _) in stats.items():
                if parent in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        rss = 0
        for pid in tree:
            if pid in stats:
                cpu[pid] = max(cpu.get(pid, 0.0), stats[pid][1])
                rss += stats[pid][2]
                if pid not in names:
                    names[pid] = _command(pid)
        peak = max(peak, rss)
        time.sleep(0.2)
    wall = time.perf_counter() - start
    if os.environ.get("CPU_TREE_DETAIL") == "1":
        for pid, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
            print(f"  pid {pid:>7} cpu {seconds:8.1f} s  {names.get(pid, '')}", file=sys.stderr)
    print(
        f"cpu_s={sum(cpu.values()):.1f} wall_s={wall:.1f} peak_rss_mb={peak / 2**20:.0f} "
        f"load={load:.1f}->{os.getloadavg()[0]:.1f} processes={len(cpu)} rc={child.returncode}",
        file=sys.stderr,
    )
    return child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
