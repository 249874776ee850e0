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

``--growth-rounds N`` then measures each stage's growth between the two largest sizes run
(e.g. 100k -> 1M) as the goal is judged, on a VM whose speed drifts by tens of percent within
minutes: N rounds, each running every stage at both sizes back to back (the larger size first
in every other round), the programs and champion of the main run reused. A round's ratio is
1M CPU / 100k CPU of that stage; the **pooled** ratio is the sum over the rounds of the larger
size's CPU over the smaller's. Each size keeps its own history store in these rounds (its own
config, same champion), so the two ``score`` batches and ``report`` run as in the main run:
the first batch into a new store, the next month's reading it, the report over both.
``--growth-stages`` picks the stages (default: validate,build,score,report; ``score`` is
both batches).

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


def write_config(path: Path, data_dir: Path, mlflow_dir: Path) -> list[str]:
    """Write the benchmark's config (no tuning trials) and return its ``-c`` arguments."""
    path.write_text(
        f"paths:\n  data_dir: {data_dir}\n  mlflow_dir: {mlflow_dir}\ntrain:\n  trials: 0\n"
    )
    return ["-c", str(path)]


def setup_plan(work: Path, partners: int) -> list[list[str]]:
    """The CLI arguments that train and promote the champion in ``work`` (not measured)."""
    return [
        ["simulate", "--partners", str(partners), "--out", str(work / "raw")],
        ["build", "--raw", str(work / "raw"), "--out", str(work / "features")],
        ["train", "--features", str(work / "features")],
        # forced: the benchmark needs a champion to score with, whatever the gate says of a
        # small training program's noisy holdout (1,000 partners: bias beyond the limit)
        ["promote", "--force", "--reason", "bench_scale setup"],
    ]


def stage_plan(
    work: Path, partners: int, spark_master: str | None = None
) -> list[tuple[str, list[str]]]:
    """The measured runs of one size in ``work``, in order: (name, CLI arguments); Spark only
    with a master."""
    plan = [
        ("simulate", ["simulate", "--partners", str(partners), "--out", str(work / "raw")]),
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
    if spark_master is not None:
        plan.append(
            (
                f"score (spark {spark_master})",
                ["score", "--raw", str(work / "raw"), "--as-of", AS_OF, "--engine", "spark"]
                + ["--master", spark_master, "--out", str(work / "spark" / "scores.parquet")],
            )
        )
    plan.append(
        (
            "report",
            ["report", "--scores", str(work / "scores.parquet"), "--out", str(work / "reports")],
        )
    )
    return plan


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
    parser.add_argument(
        "--growth-rounds",
        type=int,
        default=0,
        help="then run each stage at the two largest sizes back to back this many times "
        "and print per-round and pooled CPU ratios",
    )
    parser.add_argument(
        "--growth-stages",
        default="validate,build,score,report",
        help="comma-separated stages for --growth-rounds (score: both pandas batches)",
    )
    args = parser.parse_args()
    # before the main run: a misspelt growth stage would otherwise end the job after it
    unknown = [s for s in args.growth_stages.split(",") if s not in GROWTH_STAGES]
    if unknown:
        raise SystemExit(f"--growth-stages: unknown stage {unknown[0]!r}")
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
    c = write_config(root / "config.yaml", root / "data", root / "mlflow")
    small = root / "train"
    trained = small / "promoted.txt"  # the champion of an earlier run in this --workdir
    if trained.exists():
        print(f"setup: reusing the champion trained in {root}", flush=True)
    else:
        print(f"setup: training a model on {args.train_partners:,} partners in {root}", flush=True)
        for argv in setup_plan(small, args.train_partners):
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
        plan = stage_plan(work, n, None if args.no_spark else args.master)
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
    if args.growth_rounds > 0 and len(sizes_run) >= 2:
        growth = growth_rounds(
            root, sizes_run[-2], sizes_run[-1], args.growth_rounds, args.growth_stages.split(",")
        )
        (root / "results.json").write_text(json.dumps({**results, "growth": growth}, indent=1))
    print(f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")


GROWTH_STAGES = {  # stage -> the runs of one size, in order (the score batches share a store)
    "validate": ["validate (writes snapshot)"],
    "build": ["build"],
    "score": ["score (pandas)", "score (pandas, next batch)"],
    "report": ["report"],
}


def growth_rounds(root: Path, small: int, big: int, rounds: int, stages: list[str]) -> dict:
    """Each stage at ``small`` and ``big`` partners back to back, ``rounds`` times.

    Returns:
        Per run name: the CPU/user/sys/wall/RSS of every round at both sizes, the ratio of
        each round and the pooled ratio (sum of the big size's CPU / sum of the small's).
    """
    configs = {  # each size its own history store, the main run's champion
        n: write_config(
            root / f"config-growth-{n}.yaml", root / f"data-growth-{n}", root / "mlflow"
        )
        for n in (small, big)
    }
    plans = {n: dict(stage_plan(root / f"n{n}", n)) for n in (small, big)}
    runs: dict[str, dict[int, list[dict]]] = {}
    for k in range(rounds):
        order = (small, big) if k % 2 == 0 else (big, small)
        for stage in stages:
            for n in order:  # the stage at both sizes, back to back
                if stage == "score":
                    history = root / f"data-growth-{n}" / "scores" / "history.sqlite"
                    history.unlink(missing_ok=True)
                for name in GROWTH_STAGES[stage]:
                    r = run([*CLI, *plans[n][name], *configs[n]])
                    r.pop("tail", None)
                    runs.setdefault(name, {small: [], big: []})[n].append(r)
                    print(
                        f"growth round {k + 1}/{rounds} {n:>9,} {name:<26} cpu {r['cpu']:7.1f} s "
                        f"(user {r['user']:.1f}, sys {r['sys']:.1f})  wall {r['wall']:7.1f} s  "
                        f"peak RSS {r['rss_mb'] / 1024:5.2f} GB  load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
    out = {}
    print(f"\n| stage | {small:,} CPU per round | {big:,} CPU per round | ratio per round "
          "| pooled ratio (user) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for name, by_size in runs.items():
        a, b = by_size[small], by_size[big]
        pooled = sum(r["cpu"] for r in b) / sum(r["cpu"] for r in a)
        pooled_user = sum(r["user"] for r in b) / sum(r["user"] for r in a)
        per_round = [y["cpu"] / x["cpu"] for x, y in zip(a, b, strict=True)]
        out[name] = {
            "small": small, "big": big, "runs_small": a, "runs_big": b,
            "ratios": per_round, "pooled": pooled, "pooled_user": pooled_user,
        }  # fmt: skip
        cpu_a, cpu_b = (" / ".join(f"{r['cpu']:.1f}" for r in rs) for rs in (a, b))
        ratios = " / ".join(f"{x:.1f}x" for x in per_round)
        print(
            f"| {name} | {cpu_a} s | {cpu_b} s | {ratios} | **{pooled:.1f}x** "
            f"({pooled_user:.1f}x) |"
        )
    return out


if __name__ == "__main__":
    main()
