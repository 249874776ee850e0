"""The ``partnerscore`` console script: thin commands over ``run_x(config) -> Result`` functions.

Every command loads the configuration (shipped defaults, optionally one ``--config`` file), calls
one job function and prints its summary. A :class:`PartnerscoreError` becomes one line on stderr
and exit code 2; nothing prints a traceback unless ``PARTNERSCORE_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from partnerscore.features.core import PartnerscoreError

app = typer.Typer(
    name="partnerscore",
    help="Score newly onboarded channel partners: future revenue and engagement, explained.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Override file (.json, .toml or .yaml) for the defaults."),
]


def _quiet_environment() -> None:
    """Offline, quiet defaults: no MLflow telemetry, no idle-spinning OpenMP threads."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # MLflow warns that a PythonModel object is pickled: ours is a thin, versioned wrapper
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _config(path: Path | None):
    from partnerscore.serving.config import load_config

    return load_config(path)


def _parse_ages(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        message = f"--ages: expected comma-separated day counts, got '{text}'"
        raise PartnerscoreError(message) from exc


def _parse_date(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise PartnerscoreError(f"{option}: expected a date YYYY-MM-DD, got '{text}'") from exc


@app.command()
def simulate(
    partners: Annotated[int | None, typer.Option(help="Number of partners.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    out: Annotated[Path, typer.Option(help="Output folder for the raw tables.")] = Path("data/raw"),
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    event_scale: Annotated[float | None, typer.Option(help="Multiplier on event volume.")] = None,
    drift: Annotated[
        str | None, typer.Option(help="Inject known drift: leads_dry_up, inflated_deals, ...")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Write a seeded synthetic partner program (every contract table plus `truth`)."""
    cfg = _config(config).simulate
    overrides = {"partners": partners, "seed": seed, "event_scale": event_scale}
    cfg = cfg.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    cfg = type(cfg).model_validate(cfg.model_dump())
    from partnerscore.features.simulate import run_simulate

    if drift is not None:
        from partnerscore.features.drift_sim import run_simulate_drift

        typer.echo(run_simulate_drift(cfg, out, drift, fmt=fmt).summary())
        return
    typer.echo(run_simulate(cfg, out, fmt=fmt).summary())


@app.command()
def validate(
    raw: Annotated[Path, typer.Argument(help="Folder with one CSV/Parquet file per table.")],
) -> None:
    """Check every raw table against the contract; bad rows go to RAW/quarantine/<table>.csv."""
    from partnerscore.features.validate import run_validate

    typer.echo(run_validate(raw).summary())


@app.command()
def build(
    raw: Annotated[Path, typer.Option(help="Raw tables folder.")] = Path("data/raw"),
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("data/features"),
    ages: Annotated[str | None, typer.Option(help="Onboarding ages, e.g. 30,60,90,180.")] = None,
    horizon: Annotated[int | None, typer.Option(help="Label horizon in days.")] = None,
    config: ConfigOption = None,
) -> None:
    """Build the stacked point-in-time training set (features before as_of, labels after)."""
    cfg = _config(config).build
    update = {"ages": _parse_ages(ages), "horizon_days": horizon}
    cfg = type(cfg).model_validate(
        {**cfg.model_dump(), **{k: v for k, v in update.items() if v is not None}}
    )
    from partnerscore.features.pipeline import run_build

    typer.echo(run_build(raw, out, cfg).summary())


@app.command()
def metrics(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print as Markdown.")] = False,
) -> None:
    """Print the data dictionary of every feature in the metric registry."""
    from partnerscore.features.registry import data_dictionary

    typer.echo(data_dictionary(fmt="markdown" if markdown else "text"))


@app.command()
def train(
    features: Annotated[Path, typer.Option(help="Folder written by `build`.")] = Path(
        "data/features"
    ),
    trials: Annotated[int | None, typer.Option(help="Optuna trials per head.")] = None,
    config: ConfigOption = None,
) -> None:
    """Train both heads and the baselines, log to MLflow, register a `challenger` version."""
    app_cfg = _config(config)
    tcfg = app_cfg.train
    if trials is not None:
        tcfg = type(tcfg).model_validate({**tcfg.model_dump(), "trials": trials})
    from partnerscore.training.train import run_train

    result = run_train(
        features,
        tcfg,
        policy=app_cfg.policy,
        tracking_uri=app_cfg.paths.tracking_uri(),
        artifact_root=app_cfg.paths.artifact_root(),
        config_hash=app_cfg.hash(),
    )
    typer.echo(result.summary())


@app.command()
def models(config: ConfigOption = None) -> None:
    """Compare registered model versions (aliases, holdout metrics) in a table."""
    app_cfg = _config(config)
    from partnerscore.training.registry import run_models

    typer.echo(run_models(app_cfg.train, tracking_uri=app_cfg.paths.tracking_uri()).summary())


@app.command()
def promote(
    version: Annotated[
        str | None, typer.Option(help="Version to promote (default: the `challenger`).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Promote even if the gate fails (logged).")] = False,
    reason: Annotated[str | None, typer.Option(help="Why (recorded with --force).")] = None,
    config: ConfigOption = None,
) -> None:
    """Move the `champion` alias if the challenger beats it on the holdout by the margin."""
    app_cfg = _config(config)
    from partnerscore.training.registry import run_promote

    result = run_promote(
        app_cfg.train,
        tracking_uri=app_cfg.paths.tracking_uri(),
        version=version,
        force=force,
        reason=reason,
    )
    typer.echo(result.summary())
    if not result.promoted:
        raise typer.Exit(1)


@app.command()
def score(
    as_of: Annotated[str, typer.Option(help="Scoring date YYYY-MM-DD.")],
    raw: Annotated[Path, typer.Option(help="Raw tables folder.")] = Path("data/raw"),
    model: Annotated[
        str, typer.Option(help="Alias (champion/challenger), version number or models:/ URI.")
    ] = "champion",
    out: Annotated[Path, typer.Option(help="Scores file (.csv or .parquet).")] = Path(
        "data/scores/scores.parquet"
    ),
    config: ConfigOption = None,
) -> None:
    """Score every partner signed before AS_OF, with drivers, tiers and interventions."""
    as_of_date = _parse_date(as_of, "--as-of")
    from partnerscore.serving.score import run_score

    typer.echo(run_score(raw, as_of_date, model, out, _config(config)).summary())


@app.command()
def report(
    scores: Annotated[Path, typer.Option(help="Scores file written by `score`.")] = Path(
        "data/scores/scores.parquet"
    ),
    out: Annotated[Path, typer.Option(help="Output folder for the HTML reports.")] = Path(
        "data/reports"
    ),
    config: ConfigOption = None,
) -> None:
    """Write one HTML report per partner and an index.html portfolio page."""
    from partnerscore.serving.report import run_report

    typer.echo(run_report(scores, out, _config(config)).summary())


@app.command()
def monitor(
    as_of: Annotated[str, typer.Option(help="Monitoring date YYYY-MM-DD.")],
    raw: Annotated[Path, typer.Option(help="Raw tables folder of the batch.")] = Path("data/raw"),
    model: Annotated[str, typer.Option(help="Alias, version number or models:/ URI.")] = (
        "champion"
    ),
    scores: Annotated[Path | None, typer.Option(help="Scores file of this batch.")] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("data/monitor"),
    config: ConfigOption = None,
) -> None:
    """Drift, anomalies, staleness and backtests of a batch (exit 1 on any alarm)."""
    as_of_date = _parse_date(as_of, "--as-of")
    from partnerscore.serving.monitor import run_monitor

    result = run_monitor(_config(config), raw, as_of_date, out, model=model, scores=scores)
    typer.echo(result.summary())
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Root folder for all demo output.")] = Path("data"),
    partners: Annotated[int | None, typer.Option(help="Number of simulated partners.")] = None,
    trials: Annotated[int | None, typer.Option(help="Optuna trials per head.")] = None,
    config: ConfigOption = None,
) -> None:
    """Simulate -> validate -> build -> train -> promote -> score -> report, end to end."""
    from partnerscore.serving.demo import run_demo

    typer.echo(run_demo(workdir, _config(config), partners=partners, trials=trials).summary())


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    _quiet_environment()
    try:
        # without standalone mode click returns the code of typer.Exit instead of raising it
        code = app(args=argv, standalone_mode=False)
    except PartnerscoreError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        return 130
    except Exception as exc:  # click usage errors and anything unexpected
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        if os.environ.get("PARTNERSCORE_DEBUG"):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {first} "
            "(set PARTNERSCORE_DEBUG=1 for details)",
            err=True,
        )
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
