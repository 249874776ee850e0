"""The end-to-end demo (``make demo``) on a fresh synthetic partner program.

simulate -> validate -> build -> train -> promote -> score (at four monthly dates, so reports
have trajectories) -> forecast (the latest batch by tier and region, ``scores/forecast.csv``;
by calendar month with ``--phased``, ``scores/forecast_monthly.csv``)
-> report, everything under one folder (raw/, features/, mlflow/, scores/, reports/). The
MLflow store is ``<workdir>/mlflow/mlflow.db`` unless MLFLOW_TRACKING_URI is set.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from partnerscore.features.pipeline import run_build
from partnerscore.features.simulate import run_simulate
from partnerscore.features.validate import run_validate
from partnerscore.serving.config import AppConfig
from partnerscore.serving.forecast import run_forecast
from partnerscore.serving.report import run_report
from partnerscore.serving.score import publish_copy, run_score
from partnerscore.training import progress
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
    from_env: bool = False

    def summary(self) -> str:
        """Step timings, then where to look."""
        lines = ["partnerscore demo"]
        for name, seconds, note in self.steps:
            lines.append(f"  {name:<9} {seconds:6.1f} s  {note}")
        total = sum(s for _, s, _ in self.steps)
        lines.append(f"  {'total':<9} {total:6.1f} s")
        lines.append("")
        lines.append(f"Reports:      {self.index}  (open in a browser)")
        source = "  (from MLFLOW_TRACKING_URI)" if self.from_env else ""
        lines.append(f"MLflow store: {self.tracking_uri}{source}")
        if self.tracking_uri.startswith("sqlite:///"):
            lines.append(
                f"MLflow UI:    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {mlflow_command()} ui "
                f"--backend-store-uri {self.tracking_uri} --port 5000   "
                "(then open http://127.0.0.1:5000)"
            )
        lines.append(
            "For a team:   MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow server "
            "--backend-store-uri <database URL> --artifacts-destination <bucket or folder>, "
            "then set MLFLOW_TRACKING_URI for partnerscore"
        )
        return "\n".join(lines)


def mlflow_command(python: str | None = None, cwd: Path | None = None) -> str:
    """How to run the ``mlflow`` installed beside this Python, as the user would type it.

    Relative to the working folder when under it (``.venv/bin/mlflow`` after ``make demo``),
    else absolute (an installed package run from any folder); plain ``mlflow`` if there is none.
    """
    script = Path(python or sys.executable).parent / "mlflow"
    if not script.is_file():
        return "mlflow"
    here = (cwd or Path.cwd()).absolute()
    return str(script.relative_to(here)) if script.is_relative_to(here) else str(script)


def _forecast_note(result) -> str:
    """The period total of the demo's forecast step, in one line."""
    total = result.table[result.table["level"] == "total"].iloc[0]
    note = (
        f"expected revenue {total['expected_revenue']:,.0f} ({total['coverage']:.0%} interval "
        f"{total['revenue_lo']:,.0f} - {total['revenue_hi']:,.0f}) from "
        f"{total['partners']:,} partners in onboarding scope"
    )
    if total["out_of_scope_partners"]:
        note += f", {total['out_of_scope_partners']:,} graduated not summed"
    return f"{note} -> {result.out.name}"


def _monthly_note(result) -> str:
    """The demo's phased forecast: expected revenue per calendar month, in one line."""
    totals = result.table[result.table["level"] == "total"]
    months = ", ".join(
        f"{rec.period_start:%b} {rec.expected_revenue / 1e6:,.2f}M" for rec in totals.itertuples()
    )
    return f"by the month it is expected in: {months} -> {result.out.name}"


def demo_config(
    workdir: Path, config: AppConfig, *, partners: int | None = None, trials: int | None = None
) -> AppConfig:
    """The configuration the demo runs with: every path under ``workdir``, overrides applied.

    Args:
        workdir: Demo root folder.
        config: Base configuration.
        partners: Override of the simulated program size.
        trials: Override of Optuna trials per head.

    Returns:
        A validated configuration whose data and MLflow folders are under ``workdir``.
    """
    data = config.model_dump()
    data["paths"].update(
        {"data_dir": str(workdir), "mlflow_dir": str(workdir / "mlflow"), "history_url": None}
    )
    if partners is not None:
        data["simulate"]["partners"] = partners
    if trials is not None:
        data["train"]["trials"] = trials
    return AppConfig.model_validate(data)


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
    cfg = demo_config(workdir, config, partners=partners, trials=trials)
    # a fresh program: trajectories of an earlier demo program would mix with the new one
    Path(cfg.paths.history_database().removeprefix("sqlite:///")).unlink(missing_ok=True)
    result = DemoResult(
        workdir=workdir,
        tracking_uri=cfg.paths.tracking_uri(),
        mlflow_dir=Path(cfg.paths.mlflow_dir),
        from_env=bool(os.environ.get("MLFLOW_TRACKING_URI")),
    )
    raw, features = workdir / "raw", workdir / "features"

    def step(name: str, fn, note):
        started = time.perf_counter()
        with progress.task(f"demo: {name}"):
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
        lambda: run_validate(raw, cfg.validation),
        lambda r: f"{r.quarantined_total:,} rows quarantined",
    )
    step(
        "build",
        lambda: run_build(raw, features, cfg.build, validation=cfg.validation),
        lambda r: f"{r.rows:,} snapshots x {r.features} features",
    )
    trained = step(
        "train",
        lambda: run_train(
            features,
            cfg.train,
            **cfg.train_arguments(),
            resolved_config=cfg.model_dump(mode="json"),
        ),
        lambda r: (
            f"v{r.version}: revenue gini {r.metrics['revenue_normalized_gini']:.3f}, "
            f"engagement AUC {r.metrics['engagement_roc_auc']:.3f}"
        ),
    )

    def promote():
        result = run_promote(
            cfg.train, tracking_uri=cfg.paths.tracking_uri(), version=trained.version
        )
        if result.promoted or result.champion is not None:
            return result
        # no champion to score with, and a small demo holdout is noisy (the bias gate may
        # refuse): promote anyway, on the record (forced, with the gate's verdict as reason)
        return run_promote(
            cfg.train,
            tracking_uri=cfg.paths.tracking_uri(),
            version=trained.version,
            force=True,
            reason=f"demo: the gate refused ({result.summary()}); promoted to score the demo",
        )

    step("promote", promote, lambda r: r.summary().splitlines()[0])
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
    # the latest scores also under the CLI's default name: `partnerscore report` works as is
    publish_copy(latest, workdir / "scores" / "scores.parquet")
    step(
        "forecast",
        lambda: run_forecast(cfg, latest, workdir / "scores" / "forecast.csv"),
        _forecast_note,
    )
    step(
        "forecast",
        lambda: run_forecast(cfg, latest, workdir / "scores" / "forecast_monthly.csv", phased=True),
        _monthly_note,
    )
    report = step(
        "report",
        lambda: run_report(latest, workdir / "reports", cfg),
        lambda r: f"{r.reports:,} partner reports, {r.with_history:,} with a trajectory",
    )
    result.index = report.index.resolve()
    return result
