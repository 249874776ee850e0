"""Report benchmark: pages per second of ``partnerscore report`` on a scores file.

Runs the real CLI in a subprocess under a wrapper reading ``getrusage(RUSAGE_CHILDREN)``, so the
CPU seconds (user + system) include the page workers, once per worker count; then splits one
in-process run into its parts (reading the scores, the plan, the portfolio page, per-page data
with history, rendering, writing) with CPU timers.

    python bench/bench_report.py --scores FILE --config CFG [--workers 1,2] [--workdir DIR]

A scores file comes from ``partnerscore score`` (see the README, "Report benchmark"); its
history store (the config's ``paths``) gives the pages their trajectories.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from measure import run

CLI = [str(Path(sys.executable).with_name("partnerscore"))]


def parts(scores: Path, config: Path, out: Path, pages: int) -> dict[str, float]:
    """CPU seconds of the parts of one in-process, one-worker run (first ``pages`` pages)."""
    import numpy as np
    from markupsafe import Markup

    from partnerscore.serving import report as rep
    from partnerscore.serving import report_pages as rp
    from partnerscore.serving.config import load_config

    cfg = load_config(config)
    clock = time.process_time
    t0 = clock()
    frame = rep.read_scores(scores)
    t1 = clock()
    names = [rep.report_filename(p) for p in frame["partner_id"].tolist()]
    css = Markup((rep.HERE / "static" / "report.css").read_text(encoding="utf-8"))
    keep = np.ones(len(frame), dtype=bool)
    plan = rp.plan_pages(frame, keep, names, cfg, out_dir=out, css=css)
    t2 = clock()
    index = rep.portfolio_page(frame, np.flatnonzero(keep), names, cfg)
    t3 = clock()
    pages = min(pages, len(plan))
    batch = rp.chunk_batch(plan, 0, pages)
    t4 = clock()
    render = rp.PageRenderer(batch)
    html = [render(j).encode("utf-8") for j in range(pages)]
    t5 = clock()
    folder = out / "partners"
    folder.mkdir(parents=True, exist_ok=True)
    for j, data in enumerate(html):
        rp._write_page(str(folder), batch.files[j], data)
    t6 = clock()
    rp.close_history()
    return {
        "partners": len(frame),
        "read scores (s)": t1 - t0,
        "file names and plan (s)": t2 - t1,
        "portfolio page (s)": t3 - t2,
        "index.html (MB)": len(index.encode("utf-8")) / 1e6,
        "page data and history (ms/page)": (t4 - t3) / pages * 1000,
        "render (ms/page)": (t5 - t4) / pages * 1000,
        "write (ms/page)": (t6 - t5) / pages * 1000,
        "page size (KB)": sum(map(len, html)) / pages / 1000,
    }


def report_argv(scores: str, out: Path, config: str, workers: int) -> list[str]:
    """The measured ``partnerscore report`` run's arguments."""
    return [
        "report",
        "--scores",
        scores,
        "--out",
        str(out),
        "-c",
        config,
        "--workers",
        str(workers),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scores", required=False)
    parser.add_argument("--config", required=False)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--parts-pages", type=int, default=3000)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    if not args.scores or not args.config:
        parser.error("--scores and --config are required")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    root = Path(args.workdir or tempfile.mkdtemp(prefix="partnerscore-report-"))
    print(f"load average {os.getloadavg()[0]:.1f} at the start ({os.cpu_count()} cores)")
    split = parts(Path(args.scores), Path(args.config), root / "parts", args.parts_pages)
    for name, value in split.items():
        print(f"  {name:<34} {value:10.3f}")
    rows = []
    for workers in [int(w) for w in args.workers.split(",") if w]:
        out = root / f"w{workers}"
        r = run([*CLI, *report_argv(args.scores, out, args.config, workers)])
        n = len(list((out / "partners").iterdir()))
        rows.append((workers, n, r))
        print(
            f"workers {workers}: {n:,} pages, CPU {r['cpu']:.1f} s ({n / r['cpu']:,.0f} pages "
            f"per CPU second), wall {r['wall']:.1f} s ({n / r['wall']:,.0f} pages/s), "
            f"peak RSS {r['rss_mb']:.0f} MB, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    (root / "results.json").write_text(
        json.dumps({"parts": split, "runs": [dict(workers=w, pages=n, **r) for w, n, r in rows]})
    )


if __name__ == "__main__":
    main()
