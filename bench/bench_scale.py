"""Scale benchmark: simulate, validate, build, score (pandas and Spark local), report.

Every stage runs as the real CLI in its own subprocess, itself started by a small wrapper
process, so ``getrusage(RUSAGE_CHILDREN)`` in the wrapper is exactly that stage: CPU seconds
(user + system), wall seconds and peak RSS. A model is trained once on a small program (setup,
not measured) and scores every size. ``validate`` writes the validated snapshot into
``RAW/validated``, which ``build`` and ``score`` (pandas) reuse, as the issue's goal assumes.
The Spark stage runs under ``bench/cpu_tree.py``: PySpark never reaps its JVM, so
``getrusage`` would miss the JVM's and the Python workers' CPU; the tree sampler counts them.
It reuses ``RAW/validated`` too (the same snapshot checks as the pandas job), so the two
``score`` stages compare like for like. The pandas ``score`` stage runs twice: the first batch
(as of ``AS_OF``, into a new history store) and the next month's batch (``NEXT_AS_OF``: it
reads the first batch's rows for smoothing and writes into the existing store), the steady
state of a monthly job.

    python bench/bench_scale.py --sizes 10000,100000 [--with-1m] [--no-spark] [--workdir DIR]
        [--reuse-raw] [--stages simulate,validate,build,score,spark,report]

``--reuse-raw`` keeps a size's simulated program (and its simulate measurement) from an
earlier run in the same ``--workdir``, so a 1M program is simulated once; ``--stages`` runs a
subset (``--stages simulate`` only simulates). ``--repeat N`` runs the two pandas ``score``
batches N times (each time into a new history store): wall times on a shared VM vary by
+-15% run to run, so the score goal (10k partners/s) is judged on the median and on the number
of runs that reach it, both printed.

Prints a Markdown table (and writes ``results.json`` in the work folder).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from measure import run

AS_OF = "2026-03-01"
NEXT_AS_OF = "2026-04-01"  # a second batch: the history store holds the first one
CLI = [str(Path(sys.executable).with_name("partnerscore"))]
GOAL_PARTNERS_PER_SECOND = 10_000  # issue 15: the pandas score job at 100k partners


def scored_partners(output: str) -> int | None:
    """The partners a ``score`` run scored, from its summary line (``scored 91,362 partners``)."""
    found = re.search(r"scored ([\d,]+) partners", output)
    return int(found.group(1).replace(",", "")) if found else None


def summarise_runs(runs: list[dict]) -> dict:
    """Median wall/CPU/RSS of repeated runs, with partners/s and how many reach the goal."""
    walls = [r["wall"] for r in runs]
    out = {
        "runs": runs,
        "wall": statistics.median(walls),
        "cpu": statistics.median(r["cpu"] for r in runs),
        "user": statistics.median(r["user"] for r in runs) if runs[0].get("user") else None,
        "sys": statistics.median(r["sys"] for r in runs) if runs[0].get("user") else None,
        "rss_mb": max(r["rss_mb"] for r in runs),
        "wall_min": min(walls),
        "wall_max": max(walls),
    }
    scored = scored_partners(runs[0].get("tail", ""))
    if scored:
        out["scored"] = scored
        out["partners_per_s_median"] = scored / out["wall"]
        out["runs_at_goal"] = sum(scored / w >= GOAL_PARTNERS_PER_SECOND for w in walls)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--with-1m", action="store_true", help="add 1,000,000 partners")
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--train-partners", type=int, default=2000)
    parser.add_argument("--workdir", default=None)
    parser.add_argument(
        "--reuse-raw",
        action="store_true",
        help="keep a size's simulated program from an earlier run in the same --workdir "
        "(its simulate measurement is read back from simulate.json)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the pandas score batches this many times (median and runs at the goal)",
    )
    parser.add_argument(
        "--stages",
        default=None,
        help="comma-separated subset of: simulate,validate,build,score,spark,report",
    )
    args = parser.parse_args()
    stages = set(args.stages.split(",")) if args.stages else None
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.with_1m:
        sizes.append(1_000_000)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="partnerscore-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    # Spark's shuffle and block scratch beside the benchmark's data, not in /tmp (often small)
    os.environ.setdefault("SPARK_LOCAL_DIRS", str(root / "spark-local"))
    Path(os.environ["SPARK_LOCAL_DIRS"]).mkdir(parents=True, exist_ok=True)
    cfg = root / "config.yaml"
    cfg.write_text(
        f"paths:\n  data_dir: {root / 'data'}\n  mlflow_dir: {root / 'mlflow'}\n"
        "train:\n  trials: 0\n"
    )
    c = ["-c", str(cfg)]
    small = root / "train"
    trained = small / "promoted.txt"  # the champion of an earlier run in this --workdir
    if trained.exists():
        print(f"setup: reusing the champion trained in {root}", flush=True)
    else:
        print(f"setup: training a model on {args.train_partners:,} partners in {root}", flush=True)
        for argv in (
            ["simulate", "--partners", str(args.train_partners), "--out", str(small / "raw")],
            ["build", "--raw", str(small / "raw"), "--out", str(small / "features")],
            ["train", "--features", str(small / "features")],
            ["promote"],
        ):
            run([*CLI, *argv, *c])
        trained.write_text(f"{args.train_partners}\n")
    results: dict[int, dict[str, dict]] = {}
    for n in sizes:
        work = root / f"n{n}"
        simulated = work / "simulate.json"
        reuse = args.reuse_raw and simulated.exists()
        if not reuse:
            shutil.rmtree(work, ignore_errors=True)
        (root / "data" / "scores" / "history.sqlite").unlink(missing_ok=True)
        plan = [
            ("simulate", ["simulate", "--partners", str(n), "--out", str(work / "raw")]),
            (
                "validate (writes snapshot)",
                ["validate", str(work / "raw"), "--validated", str(work / "raw" / "validated")],
            ),
            ("build", ["build", "--raw", str(work / "raw"), "--out", str(work / "features")]),
            (
                "score (pandas)",
                ["score", "--raw", str(work / "raw"), "--as-of", AS_OF, "--out"]
                + [str(work / "scores.parquet")],
            ),
            (
                "score (pandas, next batch)",
                ["score", "--raw", str(work / "raw"), "--as-of", NEXT_AS_OF, "--out"]
                + [str(work / "scores-next.parquet")],
            ),
        ]
        if not args.no_spark:
            plan.append(
                (
                    f"score (spark {args.master})",
                    ["score", "--raw", str(work / "raw"), "--as-of", AS_OF, "--engine", "spark"]
                    + ["--master", args.master, "--out", str(work / "spark" / "scores.parquet")],
                )
            )
        plan.append(
            (
                "report",
                ["report", "--scores", str(work / "scores.parquet"), "--out"]
                + [str(work / "reports")],
            )
        )
        results[n] = {}
        repeated: dict[str, list[dict]] = {}
        pandas_score = [name for name, _ in plan if name.startswith("score (pandas")]
        for name, argv in plan:
            key = "spark" if name.startswith("score (spark") else name.split()[0]
            if stages is not None and key not in stages:
                continue
            if key == "simulate" and reuse:
                results[n][name] = r = json.loads(simulated.read_text())
            elif name in pandas_score and args.repeat > 1:
                if name != pandas_score[0]:
                    continue  # run with the first batch, in order, each repetition
                for attempt in range(args.repeat):
                    (root / "data" / "scores" / "history.sqlite").unlink(missing_ok=True)
                    for batch in pandas_score:
                        r = run([*CLI, *dict(plan)[batch], *c])
                        repeated.setdefault(batch, []).append(r)
                        print(
                            f"{n:>9,} {batch:<22} run {attempt + 1}/{args.repeat} "
                            f"cpu {r['cpu']:6.1f} s  wall {r['wall']:6.2f} s  "
                            f"peak RSS {r['rss_mb']:6.0f} MB  load {os.getloadavg()[0]:.1f}",
                            flush=True,
                        )
                for batch in pandas_score:
                    results[n][batch] = summarise_runs(repeated[batch])
                continue
            else:
                r = run([*CLI, *argv, *c], tree=key == "spark")
                results[n][name] = r
                if key == "simulate":
                    simulated.write_text(json.dumps(r))
            split = f" (user {r['user']:.1f}, sys {r['sys']:.1f})" if r.get("user") else ""
            print(
                f"{n:>9,} {name:<22} cpu {r['cpu']:8.1f} s{split}  wall {r['wall']:8.1f} s  "
                f"peak RSS {r['rss_mb']:8.0f} MB",
                flush=True,
            )
    (root / "results.json").write_text(json.dumps(results, indent=1))
    names = list(dict.fromkeys(name for r in results.values() for name in r))
    print()
    print("| stage | " + " | ".join(f"{n:,} partners" for n in results) + " |")
    print("|---|" + "---|" * len(results))
    for name in names:
        cells = [
            f"{r[name]['cpu']:.0f} s CPU ({r[name]['wall']:.0f} s / {r[name]['rss_mb'] / 1024:.2f} GB)"
            if name in r
            else "-"
            for r in results.values()
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    # growth between consecutive sizes: CPU, and user CPU alone (the job's own work; system
    # time is the kernel's page faults and reclaim, which on a VM cost more per GB for memory
    # not used in the last seconds: bench_memory_touch.py)
    sizes_run = list(results)
    for small, big in zip(sizes_run, sizes_run[1:], strict=False):
        for name in names:
            a, b = results[small].get(name), results[big].get(name)
            if not a or not b:
                continue
            user = ""
            if a.get("user") and b.get("user"):
                user = f", user CPU {b['user'] / a['user']:.1f}x, system {b['sys'] / a['sys']:.1f}x"
            print(f"{small:,} -> {big:,} {name}: CPU {b['cpu'] / a['cpu']:.1f}x{user}")
    for n, r in results.items():
        for name, m in r.items():
            if "runs" in m and "scored" in m:
                print(
                    f"{n:,} {name}: {len(m['runs'])} runs, wall {m['wall_min']:.2f}-"
                    f"{m['wall_max']:.2f} s (median {m['wall']:.2f} s), {m['scored']:,} partners:"
                    f" median {m['partners_per_s_median']:,.0f} partners/s; "
                    f"{m['runs_at_goal']} of {len(m['runs'])} runs >= "
                    f"{GOAL_PARTNERS_PER_SECOND:,}/s"
                )
    print(f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
