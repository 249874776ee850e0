"""``partnerscore experiment assign | analyze | plan | stop``: the experiment command group.

Thin Typer commands over :mod:`partnerscore.serving.experiment`; errors surface through the main
CLI (one line, exit code 2; usage errors after the command's usage line). Heavy imports happen
inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from partnerscore.features.core import OptionError
from partnerscore.serving.cli_common import (
    ConfigOption,
    UsageError,
    emit,
    input_path,
    load,
    name_input,
    name_output,
    new_app,
    note_left,
)

experiment_app = new_app(
    "experiment",
    "Controlled experiments: assign partners to arms, analyse effects, plan sample sizes.",
)
RegistryOption = Annotated[
    Path | None,
    typer.Option(
        help="Registry of running experiments (default DATA_DIR/experiments/registry.csv)."
    ),
]


_config = load


def _columns(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _days(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise OptionError(f"{option}: expected comma-separated days, got '{text}'") from exc


def _timestamp(text: str | None, option: str):
    if text is None:
        return None
    import pandas as pd

    try:
        return pd.Timestamp(text)
    except ValueError as exc:
        raise OptionError(f"{option}: expected a date YYYY-MM-DD, got '{text}'") from exc


@experiment_app.command()
def assign(
    scores: Annotated[Path, typer.Option(help="Scores file written by `score` (pre-period).")],
    name: Annotated[str, typer.Option(help="Experiment name.")],
    out: Annotated[Path, typer.Option(help="Assignment table to write (.csv or .parquet).")],
    arms: Annotated[str, typer.Option(help="Arm names, control first.")] = "control,treatment",
    fraction: Annotated[float, typer.Option(help="Share of partners in the treatment arms.")] = 0.5,
    stratify: Annotated[
        str, typer.Option(help="Scores columns defining the strata ('' for none).")
    ] = "tier,quadrant",
    seed: Annotated[int, typer.Option(help="Randomisation seed.")] = 0,
    assigned_at: Annotated[
        str | None, typer.Option(help="Assignment date (default: the scores' as_of).")
    ] = None,
    registry: RegistryOption = None,
    config: ConfigOption = None,
) -> None:
    """Randomise the scored partners into arms (stratified, seeded, recorded in the registry)."""
    from partnerscore.features.experiments import parse_arms
    from partnerscore.serving.experiment import run_assign

    name_input(scores, "--scores", whole=True)
    name_input(registry, "--registry")
    name_output(registry, "--registry")  # read and written
    name_output(out, "--out")
    result = run_assign(
        scores,
        name,
        parse_arms(arms),
        out,
        _config(config),
        fraction=fraction,
        stratify=_columns(stratify),
        seed=seed,
        assigned_at=_timestamp(assigned_at, "--assigned-at"),
        registry=registry,
    )
    emit(result)


@experiment_app.command()
def analyze(
    assignments: Annotated[Path, typer.Option(help="Assignment table.")],
    raw: Annotated[Path, typer.Option(help="Raw tables folder with the outcomes.")],
    horizon: Annotated[int, typer.Option(help="Outcome window after assignment, in days.")],
    out: Annotated[Path, typer.Option(help="Output folder (results.json, report.html, ...).")],
    name: Annotated[
        str | None, typer.Option(help="Experiment, if the table holds several.")
    ] = None,
    control: Annotated[str, typer.Option(help="Name of the control arm.")] = "control",
    history: Annotated[
        str | None, typer.Option(help="Score history (URL or SQLite file) for score trajectories.")
    ] = None,
    milestones: Annotated[
        str | None,
        typer.Option(
            help="Trajectory days, e.g. 30,60,90 (default every 30, from the engagement period "
            "on; none shorter than that period)."
        ),
    ] = None,
    alpha: Annotated[float, typer.Option(help="1 - confidence level.")] = 0.05,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 2000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    mlflow: Annotated[bool, typer.Option("--mlflow", help="Log the analysis to MLflow.")] = False,
    config: ConfigOption = None,
) -> None:
    """Effects per arm with 95% intervals, per stratum, over time; sample-ratio check."""
    from partnerscore.serving.experiment import ANALYZE_FILES, run_analyze

    name_input(assignments, "--assignments")
    input_path(raw, "--raw", folder=True, what="raw data folder")
    if history is not None and "://" not in history:  # a SQLite file (else a database URL)
        input_path(Path(history), "--history", what="score history file")
    name_output(out, "--out", writes=ANALYZE_FILES)  # the files run_analyze writes
    result = run_analyze(
        assignments,
        raw,
        horizon,
        out,
        _config(config),
        name=name,
        control=control,
        history=history,
        milestones=_days(milestones, "--milestones"),
        alpha=alpha,
        n_boot=bootstrap,
        seed=seed,
        log_mlflow=mlflow,
    )
    note_left(result)
    mismatch = bool(result.results["sample_ratio"]["mismatch"])
    emit(result, exit_code=int(mismatch))
    if mismatch:
        raise typer.Exit(1)


@experiment_app.command()
def plan(
    ctx: typer.Context,
    partners: Annotated[int, typer.Option(help="Partners in the experiment (both arms).")],
    fraction: Annotated[float, typer.Option(help="Share in the treatment arm.")] = 0.5,
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.05,
    power: Annotated[float, typer.Option(help="Target power.")] = 0.8,
    raw: Annotated[
        Path | None, typer.Option(help="Raw tables to estimate the outcome spread from.")
    ] = None,
    horizon: Annotated[int, typer.Option(help="Outcome window (days) for the estimate.")] = 180,
    age: Annotated[int, typer.Option(help="Onboarding age at assignment, for the estimate.")] = 90,
    revenue_sd: Annotated[float | None, typer.Option(help="Revenue sd per partner.")] = None,
    revenue_mean: Annotated[float | None, typer.Option(help="Revenue mean per partner.")] = None,
    base_rate: Annotated[
        float | None, typer.Option(help="Engaged share without treatment.")
    ] = None,
    r_squared: Annotated[
        float | None, typer.Option(help="Revenue variance explained by pre-period covariates.")
    ] = None,
    effect_revenue: Annotated[
        float | None, typer.Option(help="Revenue difference to size the experiment for.")
    ] = None,
    effect_engagement: Annotated[
        float | None, typer.Option(help="Engagement lift (0-1 points) to size it for.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Minimum detectable effects for a sample size, or the size needed for an effect."""
    if raw is None and revenue_sd is None and base_rate is None:
        from partnerscore.serving.experiment import PLAN_NEEDS_SPREAD

        raise UsageError(PLAN_NEEDS_SPREAD, ctx)
    from partnerscore.serving.experiment import run_plan

    input_path(raw, "--raw", folder=True, what="raw data folder")
    result = run_plan(
        _config(config),
        partners,
        fraction=fraction,
        alpha=alpha,
        power=power,
        revenue_sd=revenue_sd,
        revenue_mean=revenue_mean,
        base_rate=base_rate,
        r_squared=r_squared,
        raw_dir=raw,
        horizon=horizon,
        age=age,
        effect_revenue=effect_revenue,
        effect_engagement=effect_engagement,
    )
    emit(result)


@experiment_app.command()
def stop(
    name: Annotated[str, typer.Option(help="Experiment to stop.")],
    registry: RegistryOption = None,
    config: ConfigOption = None,
) -> None:
    """Mark a running experiment stopped: its partners may be assigned again under its name."""
    from partnerscore.serving.experiment import run_stop

    name_input(registry, "--registry")
    emit(run_stop(name, _config(config), registry=registry))
