"""The end-to-end demo (``make demo``) on a fresh synthetic partner program.

simulate -> validate -> build -> train -> promote -> score (at four monthly dates, so reports
have trajectories) -> report, everything under one folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from partnerscore.features.pipeline import run_build
from partnerscore.features.simulate import run_simulate
from partnerscore.features.validate import run_validate
from partnerscore.serving.config import AppConfig
from partnerscore.serving.report import run_report
from partnerscore.serving.score import run_score
from partnerscore.training.registry import run_promote
from partnerscore.training.train import run_train

SCORE_OFFSETS_DAYS = (90, 60, 30, 0)


@dataclass
class DemoResult:
    """What the demo did and where everything is."""

    workdir: Path
    steps: list[tuple[str, float, str]] = field(default_factory=list)
    index: Path | None = None
    tracking_uri: str = ""
    mlflow_dir: Path | None = None

    def summary(self) -> str:
        """Step timings, then where to look."""
        lines = ["partnerscore demo"]
        for name, seconds, note in self.steps:
            lines.append(f"  {name:<9} {seconds:6.1f} s  {note}")
        total = sum(s for _, s, _ in self.steps)
        lines.append(f"  {'total':<9} {total:6.1f} s")
        lines.append("")
        lines.append(f"Reports:      {self.index}  (open in a browser)")
        lines.append(f"MLflow store: {self.tracking_uri}")
        if self.tracking_uri.startswith("sqlite:///"):
            lines.append(
                "MLflow UI:    .venv/bin/mlflow ui --backend-store-uri "
                f"{self.tracking_uri} --port 5000   (then http://127.0.0.1:5000)"
            )
        lines.append(
            "For a team:   MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow server "
            "--backend-store-uri <database URL> --artifacts-destination <bucket or folder>, "
            "then set MLFLOW_TRACKING_URI for partnerscore"
        )
        return "\n".join(lines)


def run_demo(
    workdir: str | Path,
    config: AppConfig,
    *,
    partners: int | None = None,
    trials: int | None = None,
) -> DemoResult:
    """Run the whole job end to end on a synthetic program.

    Args:
        workdir: Root of everything the demo writes (raw/, features/, mlflow/, scores/, reports/).
        config: Base configuration; its paths are pointed at ``workdir``.
        partners: Override of the simulated program size.
        trials: Override of Optuna trials per head.

    Returns:
        Step timings and locations.
    """
    workdir = Path(workdir)
    update: dict = {
        "paths": config.paths.model_copy(
            update={"data_dir": str(workdir), "mlflow_dir": str(workdir / "mlflow")}
        )
    }
    if partners is not None:
        update["simulate"] = config.simulate.model_copy(update={"partners": partners})
    if trials is not None:
        update["train"] = config.train.model_copy(update={"trials": trials})
    cfg = AppConfig.model_validate(
        {**config.model_dump(), **{k: v.model_dump() for k, v in update.items()}}
    )
    result = DemoResult(
        workdir=workdir,
        tracking_uri=cfg.paths.tracking_uri(),
        mlflow_dir=Path(cfg.paths.mlflow_dir),
    )
    raw, features = workdir / "raw", workdir / "features"

    def step(name: str, fn, note):
        started = time.perf_counter()
        out = fn()
        result.steps.append((name, time.perf_counter() - started, note(out)))
        return out

    step(
        "simulate",
        lambda: run_simulate(cfg.simulate, raw),
        lambda r: f"{r.rows['partners']:,} partners, {sum(r.rows.values()):,} rows -> {raw}",
    )
    step(
        "validate",
        lambda: run_validate(raw),
        lambda r: f"{r.quarantined_total:,} rows quarantined",
    )
    step(
        "build",
        lambda: run_build(raw, features, cfg.build),
        lambda r: f"{r.rows:,} snapshots x {r.features} features",
    )
    trained = step(
        "train",
        lambda: run_train(
            features,
            cfg.train,
            policy=cfg.policy,
            tracking_uri=cfg.paths.tracking_uri(),
            artifact_root=cfg.paths.artifact_root(),
            config_hash=cfg.hash(),
        ),
        lambda r: (
            f"v{r.version}: revenue gini {r.metrics['revenue_normalized_gini']:.3f}, "
            f"engagement AUC {r.metrics['engagement_roc_auc']:.3f}"
        ),
    )
    step(
        "promote",
        lambda: run_promote(
            cfg.train, tracking_uri=cfg.paths.tracking_uri(), version=trained.version
        ),
        lambda r: r.summary(),
    )
    end = cfg.simulate.end_date + timedelta(days=1)
    latest = None
    for offset in SCORE_OFFSETS_DAYS:
        as_of = end - timedelta(days=offset)
        out = workdir / "scores" / f"scores_{as_of:%Y-%m-%d}.parquet"
        step(
            "score",
            lambda as_of=as_of, out=out: run_score(raw, as_of, "champion", out, cfg),
            lambda r: f"{r.scored:,} partners as of {r.as_of}, {r.guardrail_flags} guardrail flags",
        )
        latest = out
    report = step(
        "report",
        lambda: run_report(latest, workdir / "reports", cfg),
        lambda r: f"{r.reports:,} partner reports",
    )
    result.index = report.index.resolve()
    return result
