"""The ``partnerscore`` console script: thin commands over ``run_x(config) -> Result`` functions.

Every command loads the configuration (shipped defaults, optionally one ``--config`` file), calls
one job function and prints its summary. A :class:`PartnerscoreError` becomes one line on stderr
and exit code 2; a usage error (an option missing, options that clash, a bad option value: an
:class:`~partnerscore.features.core.OptionError`) prints the command's usage line first, as the
parser's own errors do. An unexpected error (a bug) is one line too, exit code 70
(:data:`CRASHED`); a worker process that died (killed by the kernel when out of memory) exit
code 71 (:data:`~partnerscore.features.parallel.WORKER_DIED`). Nothing prints a traceback
unless ``PARTNERSCORE_DEBUG=1``. With ``--json`` every failure also prints one JSON object on
stdout (``error``, ``exit_code``, ``command``), as every success prints its result.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # `python -m partnerscore.serving.cli` starts as the console script does
    # (`serving/console.py`: SIGTERM and Ctrl-C handled before the CLI's imports, which it
    # then makes, this module anew); the imports below ran first and a signal meanwhile ended
    # the process by it (-15, or -2 with a KeyboardInterrupt traceback)
    from partnerscore.serving.console import main as _console_main

    sys.exit(_console_main())

import _thread
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from partnerscore.features.core import OptionError, PartnerscoreError
from partnerscore.serving.cli_common import (
    _STATE,
    ConfigOption,
    UsageError,
    command_name,
    emit,
    emit_error,
    input_path,
    json_first,
    jsonable,
    load,
    name_input,
    name_output,
    named_error,
    new_app,
    note_left,
    said_result,
    say,
    say_json,
)
from partnerscore.serving.console import (
    ENDING,
    ended_as_said,
    json_requested,
    terminated_before_the_job,
)
from partnerscore.serving.experiment_cli import experiment_app

app = new_app(
    "partnerscore",
    "Score newly onboarded channel partners: future revenue and engagement, explained.",
)


ValidatedOption = Annotated[
    Path | None,
    typer.Option(
        help="Validated snapshot folder: `validate` writes it; `build`/`score` reuse it (it must "
        "match the raw files). Without it they reuse RAW/validated when it matches."
    ),
]


def _version(value: bool) -> None:
    if value:
        from partnerscore import __version__

        if _STATE["json"]:  # set by main(): this eager option runs before the callback
            say_json({"version": __version__, "summary": f"partnerscore {__version__}"})
        else:
            typer.echo(f"partnerscore {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print each command's summary as JSON.")
    ] = False,
    log_level: Annotated[
        str, typer.Option(help="Logging level: debug, info, warning or error.")
    ] = "warning",
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Progress bars on stderr (default: on a terminal, off in CI).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Score newly onboarded channel partners: future revenue and engagement, explained."""
    import logging

    _STATE["json"] = json_output  # first: a bad global option below is reported as JSON too

    level = getattr(logging, log_level.upper(), None)
    if log_level.lower() not in ("debug", "info", "warning", "error") or level is None:
        raise UsageError(f"--log-level {log_level}: use debug, info, warning or error", ctx)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("partnerscore").setLevel(level)
    from partnerscore.training import progress as bars

    bars.set_enabled(progress)


def _quiet_environment() -> None:
    """Offline, quiet defaults: no MLflow telemetry, no idle-spinning OpenMP threads."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    import warnings

    from partnerscore.training.quiet import quiet_mlflow

    # pandera imports pyspark.pandas when pyspark is installed (the spark extra), which warns
    # about pandas 3 on every command; nothing here uses pandas-on-Spark
    warnings.filterwarnings(
        "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
    )
    quiet_mlflow()


_config = load


def _updated(cfg, options: dict[str, tuple[str, object]]):
    """``cfg`` with command-line values applied; an invalid one is an :class:`OptionError`.

    Args:
        cfg: A frozen config model.
        options: Field name -> (option name, value); ``None`` values are left out.
    """
    from pydantic import ValidationError

    update = {field: value for field, (_, value) in options.items() if value is not None}
    try:
        return type(cfg).model_validate({**cfg.model_dump(), **update})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        option = options.get(field, (field,))[0]
        shown = update.get(field, "")
        if isinstance(shown, tuple):
            shown = ",".join(str(v) for v in shown)
        message = err["msg"].removeprefix("Value error, ")
        raise OptionError(f"{option} {shown}: {message}") from exc


def _parse_ages(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        message = f"--ages: expected comma-separated day counts, got '{text}'"
        raise OptionError(message) from exc


def _parse_date(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise OptionError(f"{option}: expected a date YYYY-MM-DD, got '{text}'") from exc


def _batch_job() -> None:
    """Memory settings for a process that runs one batch job and ends with it.

    For validate, build and score: the allocator reuses freed memory instead of faulting in
    fresh pages (:func:`~partnerscore.features.parallel.tune_batch_memory`; placement only).
    Measured at 100k partners (README, "Scale benchmark"): 0.3-1.7 s less system time each
    for validate and build; not for simulate (-25% CPU, but peak RSS +34%: 2.1 GB at 100k) nor
    report (no gain: its page workers' memory is small and reused already).
    """
    from partnerscore.features.parallel import tune_batch_memory

    tune_batch_memory()


def _batch_done() -> None:
    """Mark the batch job's files and store writes done (and published).

    The console script may then skip the interpreter's teardown of the job's objects and
    imported libraries (~0.4 s at 100k partners; :func:`_exit_now`).
    """
    _STATE["exit_now"] = True


@app.command()
def simulate(
    ctx: typer.Context,
    partners: Annotated[
        int | None,
        typer.Option(help="Number of partners (default 2000: config simulate.partners)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed (default 7: config simulate.seed).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder for the raw tables.")] = Path("data/raw"),
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    event_scale: Annotated[
        float | None,
        typer.Option(help="Multiplier on event volume (default 1.0: config simulate.event_scale)."),
    ] = None,
    treatment: Annotated[
        str | None, typer.Option(help="Inject a known experiment effect under this name.")
    ] = None,
    effect_revenue: Annotated[
        float, typer.Option(help="Relative uplift of won deal amounts after assignment.")
    ] = 0.0,
    effect_engagement: Annotated[
        float, typer.Option(help="Extra meetings per 30 days after assignment.")
    ] = 0.0,
    treated_fraction: Annotated[float, typer.Option(help="Share of partners treated.")] = 0.5,
    assigned_at: Annotated[
        str | None, typer.Option(help="Assignment date (default: end date - horizon).")
    ] = None,
    drift: Annotated[
        str | None, typer.Option(help="Inject known drift: leads_dry_up, inflated_deals, ...")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Write a seeded synthetic partner program (every contract table plus `truth`)."""
    cfg = _updated(
        _config(config).simulate,
        {
            "partners": ("--partners", partners),
            "seed": ("--seed", seed),
            "event_scale": ("--event-scale", event_scale),
        },
    )
    from partnerscore.features.simulate import run_simulate

    if drift is not None and treatment is not None:
        raise UsageError("simulate: --drift and --treatment cannot be combined", ctx)
    if treatment is None and (effect_revenue or effect_engagement or assigned_at is not None):
        raise UsageError(
            "simulate: --effect-revenue, --effect-engagement and --assigned-at need --treatment",
            ctx,
        )
    if treatment is not None:  # checked before any table is written
        import pandas as pd

        from partnerscore.features.experiment_sim import check_injection, simulated_start

        start = _parse_date(assigned_at, "--assigned-at") or simulated_start(cfg)
        check_injection(
            treatment,
            effect_revenue,
            effect_engagement,
            treated_fraction,
            start,
            pd.Timestamp(cfg.end_date),  # the simulation's last day (its events run through it)
            cfg.horizon_days,
        )
    if drift is not None:
        from partnerscore.features.drift_sim import run_simulate_drift

        emit(run_simulate_drift(cfg, out, drift, fmt=fmt))
        _batch_done()
        return
    result = run_simulate(cfg, out, fmt=fmt)
    if treatment is not None:
        from partnerscore.features.experiment_sim import run_inject_effect

        injected = run_inject_effect(
            out,
            treatment,
            effect_revenue,
            effect_engagement,
            treated_fraction,
            start,
            seed=cfg.seed,
            horizon_days=cfg.horizon_days,
        )
        result = _WithExperiment(result, injected)
    emit(result)  # one summary, or one JSON object with --json
    _batch_done()


@dataclass
class _WithExperiment:
    """``simulate --treatment``'s result: the program and the experiment injected into it."""

    simulated: object
    injected: object

    def json_payload(self) -> dict:
        """The simulation's fields with the experiment's under ``experiment``."""
        payload = (
            self.simulated.json_payload()
            if hasattr(self.simulated, "json_payload")
            else jsonable(self.simulated)
        )
        return {**payload, "experiment": jsonable(self.injected)}

    def summary(self) -> str:
        """The simulation's summary, then the experiment's lines."""
        return f"{self.simulated.summary()}\n{self.injected.text()}"


app.add_typer(experiment_app, name="experiment")


@app.command()
def validate(
    raw: Annotated[
        Path, typer.Argument(metavar="RAW", help="Folder with one CSV/Parquet file per table.")
    ],
    validated: ValidatedOption = None,
    config: ConfigOption = None,
) -> None:
    """Check every raw table against the contract; bad rows go to RAW/quarantine/<table>.csv."""
    input_path(raw, "RAW", folder=True, what="raw data folder")
    _batch_job()
    if validated is not None:
        from partnerscore.features.validated import run_validate_snapshot

        emit(run_validate_snapshot(raw, validated, _config(config).validation))
    else:
        from partnerscore.features.validate import run_validate

        emit(run_validate(raw, _config(config).validation))
    _batch_done()


@app.command()
def build(
    ctx: typer.Context,
    raw: Annotated[Path, typer.Option(help="Raw tables folder.")] = Path("data/raw"),
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("data/features"),
    ages: Annotated[
        str | None,
        typer.Option(help="Onboarding ages in days (default 30,60,90,180: config build.ages)."),
    ] = None,
    horizon: Annotated[
        int | None,
        typer.Option(help="Label horizon in days (default 180: config build.horizon_days)."),
    ] = None,
    data_end: Annotated[
        str | None,
        typer.Option(
            help="Last day with complete data (default: config build.data_end, else the newest "
            "event)."
        ),
    ] = None,
    engagement_period: Annotated[
        int | None,
        typer.Option(
            help="Days per engagement period of the horizon "
            "(default 30: config build.engagement_period_days)."
        ),
    ] = None,
    cutoffs: Annotated[
        Path | None,
        typer.Option(help="CSV/Parquet of explicit (partner_id, as_of) snapshots (not --ages)."),
    ] = None,
    validated: ValidatedOption = None,
    group_partners: Annotated[
        int | None,
        typer.Option(
            help="From a validated snapshot of more partners, build groups of this many at a "
            "time (same output, one group's memory; default 100000; 0: all at once)."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Build the stacked point-in-time training set (features before as_of, labels after)."""
    name_input(cutoffs, "--cutoffs")
    app_cfg = _config(config)
    cfg = _updated(
        app_cfg.build,
        {
            "ages": ("--ages", _parse_ages(ages)),
            "horizon_days": ("--horizon", horizon),
            "data_end": ("--data-end", _parse_date(data_end, "--data-end")),
            "engagement_period_days": ("--engagement-period", engagement_period),
        },
    )
    from partnerscore.features.config import engagement_period_conflict

    # each setting named as the user gave it: an option, else the config key
    names = {
        "horizon": "--horizon" if horizon is not None else "build.horizon_days",
        "period": "build.engagement_period_days",
    }
    if engagement_period is not None:
        names["period"] = "--engagement-period"
    conflict = engagement_period_conflict(cfg, **names)
    if conflict is not None:
        raise OptionError(conflict)
    from partnerscore.features.pipeline import BUILD_FILES, run_build

    if cutoffs is not None and ages is not None:
        raise UsageError("build: give either --ages or --cutoffs, not both", ctx)
    input_path(raw, "--raw", folder=True, what="raw data folder")  # after the usage errors
    input_path(validated, "--validated", folder=True)
    name_output(out, "--out", writes=BUILD_FILES)  # the files run_build writes
    _batch_job()
    result = run_build(
        raw,
        out,
        cfg,
        validation=app_cfg.validation,
        cutoffs=cutoffs,
        validated=validated,
        group_partners=group_partners,
    )
    note_left(result)
    emit(result)
    _batch_done()


@app.command()
def metrics(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print as Markdown.")] = False,
    config: ConfigOption = None,
) -> None:
    """Print the data dictionary of every feature in the metric registry."""
    if config is not None:  # every command takes --config (checked; the registry is fixed);
        _config(config)  # only when given: the defaults' load imports pandas, kept off here
    from partnerscore.features.registry import data_dictionary

    if _STATE["json"]:  # the specs themselves, for tools that document or check features
        from partnerscore.features.registry import REGISTRY, registry_version

        version = registry_version()
        payload = {
            "registry_version": version,
            "features": [spec.model_dump(mode="json") for spec in REGISTRY],
            "summary": f"registry {version}: {len(REGISTRY)} features",  # the text's first line
        }
        said_result(lambda: say_json(payload))
    else:
        text = data_dictionary(fmt="markdown" if markdown else "text")
        said_result(lambda: say(text))


@app.command()
def train(
    features: Annotated[Path, typer.Option(help="Folder written by `build`.")] = Path(
        "data/features"
    ),
    trials: Annotated[
        int | None, typer.Option(help="Optuna trials per head (default 5: config train.trials).")
    ] = None,
    register: Annotated[
        bool, typer.Option("--register/--no-register", help="Register a `challenger` version.")
    ] = True,
    config: ConfigOption = None,
) -> None:
    """Train both heads and the baselines, log to MLflow, register a `challenger` version."""
    app_cfg = _config(config)
    tcfg = _updated(app_cfg.train, {"trials": ("--trials", trials)})
    input_path(features, "--features", folder=True)
    from partnerscore.training.train import run_train

    # the config in effect (--trials included): its hash is the one the run logs
    resolved = app_cfg.model_copy(update={"train": tcfg})
    result = run_train(
        features,
        tcfg,
        **resolved.train_arguments(),
        register=register,
        resolved_config=resolved.model_dump(mode="json"),
    )
    emit(result)


@app.command()
def models(config: ConfigOption = None) -> None:
    """Compare registered model versions (aliases, holdout metrics) in a table."""
    app_cfg = _config(config)
    from partnerscore.training.registry import run_models

    emit(run_models(app_cfg.train, tracking_uri=app_cfg.paths.tracking_uri()))


@app.command()
def promote(
    ctx: typer.Context,
    version: Annotated[
        str | None, typer.Option(help="Version to promote (default: the `challenger`).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Promote even if the gate fails (logged).")] = False,
    reason: Annotated[
        str | None,
        typer.Option(
            help="Why, recorded on the version (tag promotion_reason); --force needs one."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Move the `champion` alias if the challenger beats it on the holdout by the margin."""
    from partnerscore.training.registry import missing_reason, run_promote

    problem = missing_reason(force, reason)
    if problem is not None:
        raise UsageError(problem, ctx)
    app_cfg = _config(config)

    result = run_promote(
        app_cfg.train,
        tracking_uri=app_cfg.paths.tracking_uri(),
        version=version,
        force=force,
        reason=reason,
    )
    refused = not result.promoted and not result.already_champion
    emit(result, exit_code=int(refused))
    if refused:
        raise typer.Exit(1)


@app.command()
def score(
    ctx: typer.Context,
    as_of: Annotated[
        str | None, typer.Option(help="Scoring date YYYY-MM-DD for every partner.")
    ] = None,
    at_age: Annotated[
        int | None,
        typer.Option(help="Score each partner at signed_at + DAYS instead of one date."),
    ] = None,
    raw: Annotated[Path, typer.Option(help="Raw tables folder.")] = Path("data/raw"),
    model: Annotated[
        str, typer.Option(help="Alias (champion/challenger), version number or models:/ URI.")
    ] = "champion",
    out: Annotated[Path, typer.Option(help="Scores file (.csv or .parquet).")] = Path(
        "data/scores/scores.parquet"
    ),
    allow_local_model: Annotated[
        bool,
        typer.Option(
            help="Accept a model folder outside the registry (it is unpickled: trusted only)."
        ),
    ] = False,
    features: Annotated[
        Path | None,
        typer.Option(help="Score a prebuilt feature table (CSV/Parquet) instead of --raw."),
    ] = None,
    allow_missing_features: Annotated[
        bool, typer.Option(help="With --features: score absent feature columns as missing.")
    ] = False,
    history: Annotated[
        bool, typer.Option("--history/--no-history", help="Record the batch in the history.")
    ] = True,
    engine: Annotated[
        str, typer.Option(help="pandas (one machine) or spark (writes a Parquet dataset).")
    ] = "pandas",
    master: Annotated[
        str, typer.Option(help="Spark master URL with --engine spark: local[*], spark://...")
    ] = "local[*]",
    overrides: Annotated[
        Path | None,
        typer.Option(
            help="CSV/Parquet of manual overrides (partner_id,tier,action,reason,expires; "
            "default: config score.overrides_path)."
        ),
    ] = None,
    validated: ValidatedOption = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processes (default: the available cores): with 2+, batches of 20,000 "
            "partners or more run the anomaly checks and the ledger writes in worker "
            "processes. The output does not depend on it."
        ),
    ] = None,
    group_partners: Annotated[
        int | None,
        typer.Option(
            help="From a validated snapshot of more partners, score groups of this many at a "
            "time (same output, one group's rows in memory; default 100000; 0: all at once)."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Score every partner signed before AS_OF (or at its milestone), with drivers and actions."""
    name_input(features, "--features")
    app_cfg = _config(config)
    name_input(overrides, "--overrides")  # after the config's: the option's file is used
    if overrides is not None:
        score_cfg = _updated(app_cfg.score, {"overrides_path": ("--overrides", str(overrides))})
        app_cfg = app_cfg.model_copy(update={"score": score_cfg})
    from partnerscore.features.parallel import worker_count

    worker_count(workers)  # before the --features branch, which has no workers
    if engine not in ("pandas", "spark"):
        raise OptionError(f"--engine {engine}: expected pandas or spark")
    if features is not None:
        if as_of is not None or at_age is not None:
            given = "--as-of" if as_of is not None else "--at-age"
            raise UsageError(f"score --features: the table carries as_of; drop {given}", ctx)
        raw_only = {
            "--engine spark": engine != "pandas",
            "--group-partners": group_partners is not None,
            "--validated": validated is not None,
        }
        given = [name for name, used in raw_only.items() if used]
        if given:
            raise UsageError(
                f"score --features: {', '.join(given)} applies to scoring raw tables only; "
                "a feature table is scored in this process, whole",
                ctx,
            )
        from partnerscore.serving.score import rejects_path, run_score_features

        name_output(out, "--out")
        name_output(rejects_path(out), "--out's rejects file")
        result = run_score_features(
            features,
            model,
            out,
            app_cfg,
            allow_local_model=allow_local_model,
            allow_missing_features=allow_missing_features,
            record_history=history,
        )
        note_left(result)
        emit(result)
        return
    if (as_of is None) == (at_age is None):
        raise UsageError("score: give either --as-of DATE or --at-age DAYS", ctx)
    as_of_date = _parse_date(as_of, "--as-of")
    from partnerscore.serving.score import rejects_path, run_score

    options = {
        "record_history": history,
        "validated": validated,
        "workers": workers,
        "group_partners": group_partners,
    }
    if engine == "pandas":
        _batch_job()
    if engine == "spark":
        if not history:
            raise UsageError("--no-history: not supported with --engine spark", ctx)
        if group_partners is not None:
            raise UsageError("--group-partners: the spark engine has its own groups", ctx)
        from partnerscore.serving.spark_engine import check_master, run_score_spark

        check_master(master)  # a usage error, before any work
        run_score = partial(run_score_spark, master=master)
        options = {"validated": validated}
    input_path(raw, "--raw", folder=True, what="raw data folder")  # after the usage errors
    input_path(validated, "--validated", folder=True)
    name_output(out, "--out")
    name_output(rejects_path(out), "--out's rejects file")
    result = run_score(
        raw,
        as_of_date,
        model,
        out,
        app_cfg,
        allow_local_model=allow_local_model,
        at_age=at_age,
        **options,
    )
    note_left(result)
    emit(result)
    if engine == "pandas":
        _batch_done()


@app.command()
def report(
    scores: Annotated[Path, typer.Option(help="Scores file written by `score`.")] = Path(
        "data/scores/scores.parquet"
    ),
    out: Annotated[Path, typer.Option(help="Output folder for the HTML reports.")] = Path(
        "data/reports"
    ),
    partners: Annotated[
        str | None, typer.Option(help="Only these partner ids (comma-separated).")
    ] = None,
    partners_file: Annotated[
        Path | None,
        typer.Option(
            help="Only the partner ids of this CSV/Parquet file's partner_id column, one per "
            "row as written (quote an id holding a comma); with --partners: either's."
        ),
    ] = None,
    tier: Annotated[str | None, typer.Option(help="Only partners in this score tier.")] = None,
    model_version: Annotated[
        str | None,
        typer.Option(
            help="Only the rows scored by this model version (a file holding two versions' "
            "batches of one date is refused without it)."
        ),
    ] = None,
    notes: Annotated[
        Path | None,
        typer.Option(help="CSV/Parquet of notes (partner_id, note[, noted_at, author])."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Processes rendering pages (default: available cores).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Write one HTML report per partner and an index.html portfolio page."""
    from partnerscore.serving.report import run_report

    name_input(scores, "--scores", whole=True)
    name_input(partners_file, "--partners-file")
    name_input(notes, "--notes")
    name_output(out, "--out")
    ids = [p.strip() for p in partners.split(",") if p.strip()] if partners is not None else None
    if ids is not None and not ids:
        raise OptionError(f"--partners '{partners}': no partner id given")
    if model_version is not None and not model_version.strip():
        raise OptionError(f"--model-version '{model_version}': no model version given")
    cfg = _config(config)
    result = run_report(
        scores,
        out,
        cfg,
        partners=ids,
        tier=tier,
        notes=notes,
        workers=workers,
        partners_file=partners_file,
        model_version=model_version,
    )
    emit(result)
    _batch_done()


@app.command()
def forecast(
    scores: Annotated[Path, typer.Option(help="Scores file written by `score`.")] = Path(
        "data/scores/scores.parquet"
    ),
    by: Annotated[str, typer.Option(help="Segment columns, comma-separated.")] = "tier,region",
    out: Annotated[Path, typer.Option(help="Forecast file (.csv or .parquet).")] = Path(
        "data/scores/forecast.csv"
    ),
    coverage: Annotated[
        float | None,
        typer.Option(help="Interval coverage, 0-1 (default 0.8: config train.interval_coverage)."),
    ] = None,
    include_out_of_scope: Annotated[
        bool,
        typer.Option(
            help="Also sum partners scored out of onboarding scope (older than the trained "
            "ages; the model was not validated there)."
        ),
    ] = False,
    period: Annotated[
        str | None,
        typer.Option(
            help="day, week, month or quarter: the calendar bucket of the scoring dates "
            "(per-partner cut-offs give one date per signing day), or with --phased of the "
            "days the revenue is expected. Default: day, month with --phased."
        ),
    ] = None,
    phased: Annotated[
        bool,
        typer.Option(
            help="Spread each partner's expected revenue over the calendar periods it is "
            "expected in (the model's revenue phases) instead of summing it at the scoring "
            "date."
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Expected revenue with intervals per segment and period, for downstream forecasting."""
    from partnerscore.serving.forecast import parse_by, run_forecast

    name_input(scores, "--scores", whole=True)
    name_output(out, "--out")
    result = run_forecast(
        _config(config),
        scores,
        out,
        parse_by(by),
        coverage=coverage,
        include_out_of_scope=include_out_of_scope,
        period=period,
        phased=phased,
    )
    emit(result)


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
    input_path(raw, "--raw", folder=True, what="raw data folder")
    name_input(scores, "--scores", whole=True)
    from partnerscore.serving.monitor import MONITOR_FILES, run_monitor

    name_output(out, "--out", writes=MONITOR_FILES)  # the files run_monitor writes

    result = run_monitor(_config(config), raw, as_of_date, out, model=model, scores=scores)
    if result.interrupted_publish is not None:  # an earlier run's publish, killed: replaced
        typer.echo(f"note: {result.interrupted_publish.note()}", err=True)
    emit(result, exit_code=result.exit_code)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command()
def incentives(
    as_of: Annotated[str, typer.Option(help="Evaluate the score history up to DATE.")],
    out: Annotated[Path, typer.Option(help="Awards file (.csv or .parquet).")] = Path(
        "data/scores/incentives.csv"
    ),
    config: ConfigOption = None,
) -> None:
    """Award incentives to partners newly meeting a milestone (never twice)."""
    from partnerscore.serving.incentives import run_incentives

    when = _parse_date(as_of, "--as-of")
    emit(run_incentives(_config(config), when, out))


@app.command()
def whatif(
    ctx: typer.Context,
    partner: Annotated[str | None, typer.Option(help="Partner id to re-score.")] = None,
    as_of: Annotated[str | None, typer.Option(help="Date YYYY-MM-DD of the features.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="feature=value (repeatable).")
    ] = None,
    raw: Annotated[Path, typer.Option(help="Raw tables folder.")] = Path("data/raw"),
    model: Annotated[str, typer.Option(help="Alias, version or models:/ URI.")] = "champion",
    policy: Annotated[
        Path | None, typer.Option(help="Config file whose `policy` to re-apply to --scores.")
    ] = None,
    scores: Annotated[Path | None, typer.Option(help="Scores file (with --policy).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the detail table (.csv/.parquet).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Scenario planning: re-score a partner with changed inputs, or re-apply a policy."""
    from partnerscore.serving import whatif as jobs

    cfg = _config(config)
    if policy is not None or scores is not None:
        if policy is None or scores is None or partner is not None or set_:
            raise UsageError("whatif: give --policy FILE --scores FILE together, alone", ctx)
        input_path(policy, "--policy", what="config file")
        name_input(scores, "--scores", whole=True)
        name_output(out, "--out")
        emit(jobs.run_whatif_policy(cfg, policy, scores, out))
        return
    if partner is None or as_of is None:
        raise UsageError("whatif: give --partner ID --as-of DATE --set f=v, or --policy", ctx)
    when = _parse_date(as_of, "--as-of")
    if not set_:
        raise UsageError("whatif: give at least one --set feature=value", ctx)
    input_path(raw, "--raw", folder=True, what="raw data folder")
    name_output(out, "--out")
    emit(jobs.run_whatif_partner(cfg, raw, partner, when, set_, model, out))


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Root folder for all demo output.")] = Path("data"),
    partners: Annotated[
        int | None,
        typer.Option(help="Number of simulated partners (default 2000: config simulate.partners)."),
    ] = None,
    trials: Annotated[
        int | None, typer.Option(help="Optuna trials per head (default 5: config train.trials).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Simulate -> validate -> build -> train -> promote -> score -> report, end to end."""
    from partnerscore.serving.demo import run_demo

    cfg = _config(config)
    update = {
        "simulate": _updated(cfg.simulate, {"partners": ("--partners", partners)}),
        "train": _updated(cfg.train, {"trials": ("--trials", trials)}),
    }
    emit(run_demo(workdir, cfg.model_copy(update=update)))


INTERRUPTED = 130
"""Exit code of a job ended by Ctrl-C (SIGINT), as a shell reports it."""
TERMINATED = 143
"""Exit code of a job ended by SIGTERM (128 + 15), as a shell reports a killed job."""
CRASHED = 70
"""Exit code of an unexpected error (a bug, not bad input): ``EX_SOFTWARE`` of BSD's
sysexits.h, "internal software error". It was 1, which also means a monitor alarm or a refused
promote: a scheduler branching on the code could not tell a crash from those outcomes."""


def debugging() -> bool:
    """``PARTNERSCORE_DEBUG`` set to anything but empty, ``0``, ``false``, ``no`` or ``off``.

    ``PARTNERSCORE_DEBUG=0`` printed the tracebacks too (any value did).
    """
    value = os.environ.get("PARTNERSCORE_DEBUG", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the job the way Ctrl-C does, and neither is lost where it lands.

    A scheduler stops a job with SIGTERM (a timeout, ``kill PID``, a new deployment). Python's
    default action ends the process at once, without its ``finally`` blocks: a forked worker
    (the score job's history reader, the pools of ``--workers``) then stayed behind forever,
    holding the job's stdout (a scheduler reading it waited for ever) and its memory. Here
    the signal raises KeyboardInterrupt in this process: the job stops its workers, discards
    its staged files and says ``terminated``, exit 143. A process forked from this one (a
    worker) still ends at once, as by default. Only in the main thread with Python's default
    handler in place, or the console script's for its imports
    (:mod:`partnerscore.serving.console`; a caller's own handler is left alone); the previous
    one is back after.

    Ctrl-C raises KeyboardInterrupt as Python's own handler does (in a forked worker too),
    and the job also notes it (:func:`~partnerscore.training.progress.request_stop`), as for
    SIGTERM: a KeyboardInterrupt swallowed where it lands (C code that clears errors, a
    library's broad ``except``) is raised again at the job's next step. With Python's handler
    alone a `train` swallowed it and ran on to register its version, exit 0 (a Ctrl-C sent as
    the job set up its store). Only where Python's handler is in place (an ignored SIGINT stays
    ignored).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigterm = signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, terminated_before_the_job)
    sigint = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if not (sigterm or sigint):
        yield
        return
    from partnerscore.training import progress as bars

    job = os.getpid()

    def terminate(number: int, _frame) -> None:
        if os.getpid() != job:  # a forked worker: the default action, at once
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)
            return
        if ENDING["code"] is not None:  # the result is printed: the job ends as it said
            return
        _STATE["terminated"] = True
        bars.request_stop()  # raised again at the job's next step if swallowed where it lands
        raise KeyboardInterrupt

    def interrupt(number: int, frame) -> None:
        if os.getpid() == job and ENDING["code"] is None:  # the job's own, still at work
            bars.request_stop()  # raised again at the job's next step if swallowed
        signal.default_int_handler(number, frame)  # KeyboardInterrupt, as without this one

    unraisable, running = sys.unraisablehook, [True]

    def interrupt_soon(number: int) -> None:  # in a thread of its own
        time.sleep(0.01)
        if running:  # not once the job has unwound: Python's Ctrl-C would end the exit, -2
            _thread.interrupt_main(number)

    def interrupt_again(info) -> None:
        # Python runs a signal's handler wherever the job's thread is: inside a finalizer
        # (``__del__``, a weakref callback, seen in WeakKeyDictionary's) its KeyboardInterrupt
        # cannot propagate, is printed as "Exception ignored" and dropped, and the job ran to
        # its end (exit 0). The signal is delivered again, 10 ms later from another thread (not
        # waited for) so that the job's thread handles it once out of the finalizer (and again
        # if that lands in another one)
        if isinstance(info.exc_value, KeyboardInterrupt) and os.getpid() == job:
            number = signal.SIGTERM if _STATE["terminated"] else signal.SIGINT
            _thread.start_new_thread(interrupt_soon, (number,))
            return
        if _STATE["terminated"] and not debugging():
            # a finalizer's error as the interrupted job unwinds (SQLAlchemy's weakref
            # callback: "TypeError: weak object has gone away"): the interrupt's aftermath,
            # not worth a traceback under `terminated`
            return
        unraisable(info)

    previous = {}
    if sigterm:
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, terminate)
    if sigint:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, interrupt)
    sys.unraisablehook = interrupt_again
    try:
        yield
    finally:
        running.clear()
        bars.request_stop(False)  # the job has unwound: a later one in this process runs on
        sys.unraisablehook = unraisable
        for number, handler in previous.items():
            signal.signal(number, handler)


def _is_click_error(exc: BaseException) -> bool:
    """Click's exceptions, whichever click raised them (typer bundles its own copy)."""
    import click

    bundled = getattr(typer, "_click", None)
    kinds = [click.ClickException]
    if bundled is not None:
        kinds.append(bundled.exceptions.ClickException)
    return isinstance(exc, tuple(kinds))


_UNREADABLE = {
    "int_parsing": "is not an integer",
    "int_from_float": "is not an integer",
    "int_type": "is not an integer",
    "float_parsing": "is not a number",
    "float_type": "is not a number",
    "finite_number": "is not a finite number",
    "bool_parsing": "is not true or false",
}
"""Pydantic's error types of a value the parser could not convert, said as our errors say it."""


def _unreadable_value(exc) -> str | None:
    """A value the parser could not convert, named: ``--workers: 'x' is not an integer``.

    Typer converts option values with pydantic, whose message ("Input should be a valid
    integer, unable to parse string as an integer") does not say which value was given; the
    value is in the validation error the usage error was raised from. None for other errors.
    """
    from pydantic import ValidationError

    param, cause = getattr(exc, "param", None), exc.__cause__
    if param is None or not isinstance(cause, ValidationError) or not cause.errors():
        return None
    error = cause.errors()[0]
    if param.param_type_name == "option" and param.opts:
        name = max(param.opts, key=len)  # --workers rather than -w
    else:
        name = param.human_readable_name
    said = _UNREADABLE.get(error["type"])
    if said is None:  # another conversion: pydantic's words after the value
        msg = str(error["msg"])
        said = msg[:1].lower() + msg[1:]
        return f"{name}: {error['input']!r}: {said}"
    return f"{name}: {error['input']!r} {said}"


def _usage_error(exc) -> tuple[str, int]:
    """The usage line on stderr; the one ``error:`` line's message and exit code (2)."""
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        typer.echo(ctx.get_usage(), err=True)
    message = _unreadable_value(exc) or " ".join(exc.format_message().split())
    if not message and type(exc).__name__ == "NoArgsIsHelpError":  # the help went to stdout
        message = "Missing command."
    return message, exc.exit_code


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point.

    A failure prints one ``error:`` line on stderr (after the usage line for usage errors)
    and, with ``--json``, one JSON object on stdout (see
    :func:`~partnerscore.serving.cli_common.emit_error`).

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    try:
        return _main(argv)
    finally:
        if argv is not None:
            # a caller running main() in its own process (a test, a notebook) goes on after it:
            # the ending it said must not outlive it (a later job's SIGTERM was ignored as
            # "after the result"; the console script keeps it while the process exits)
            ENDING["code"] = None


def _main(argv: list[str] | None) -> int:
    """:func:`main`'s work."""
    _quiet_environment()
    _STATE["json"] = False
    _STATE["exit_now"] = False
    _STATE["command"] = None
    _STATE["terminated"] = False
    ENDING["code"] = None
    _STATE["inputs"] = {}
    _STATE["files"] = []
    from partnerscore.training import progress as bars

    bars.set_enabled(None)
    bars.request_stop(False)
    _say_held_at_commit(clear=True)
    args = sys.argv[1:] if argv is None else list(argv)
    if "--json" in args:  # also after the command: moved before it, where it belongs
        args = json_first(args, typer.main.get_command(app))
        _STATE["json"] = json_requested(args)
    command = None
    try:
        # without standalone mode click returns the code of typer.Exit instead of raising it
        with _signals_as_interrupt():
            code = app(args=args, standalone_mode=False)
    except PartnerscoreError as exc:
        if isinstance(exc, UsageError):  # options the parser could not check: as its errors
            typer.echo(exc.usage, err=True)
            command = exc.command
        message, code = named_error(exc.message), exc.exit_code
    except typer.Exit as exc:  # a command's own code (monitor's alarm, promote's refusal)
        _say_held_at_commit()
        return _ended(exc.exit_code, argv)
    except (typer.Abort, KeyboardInterrupt):
        if ENDING["code"] is not None:  # Ctrl-C once the result was printed: as it said
            return _ended(ENDING["code"], argv)
        message, code = "aborted", INTERRUPTED
    except Exception as exc:  # click usage errors and anything unexpected
        if _is_click_error(exc):
            command = command_name(getattr(exc, "ctx", None))
            message, code = _usage_error(exc)
        elif (failure := _store_failure(exc)) is not None:  # the MLflow store went away mid-job
            message, code = failure.message, failure.exit_code
        else:
            first = str(exc).splitlines()[0] if str(exc) else ""
            message = (
                f"unexpected {type(exc).__name__}: {first} (set PARTNERSCORE_DEBUG=1 for details)"
            )
            code = CRASHED
            if debugging():  # the traceback, then the same ending
                import traceback

                traceback.print_exception(exc)
    else:
        code = code if isinstance(code, int) else 0
        if code == INTERRUPTED and ENDING["code"] is not None:  # Ctrl-C after the result
            code = ENDING["code"]
        if code != INTERRUPTED:
            _say_held_at_commit()
            return _ended(code, argv)
        message = "aborted"  # typer turns Ctrl-C in a command into this code, silently
    if _STATE["terminated"]:
        # whatever the SIGTERM's KeyboardInterrupt became on its way out: C code it lands in
        # may raise another error instead (import machinery: "TypeError: expected a message
        # argument"; a closed descriptor: "OSError: Bad file descriptor"), which said
        # "unexpected", exit 70 (2 of 250 SIGTERMs sent as `score` started)
        message, code = "terminated", TERMINATED
    if code in (INTERRUPTED, TERMINATED):
        _stop_workers()
        typer.echo(message, err=True)
    else:
        typer.echo(f"error: {message}", err=True)
    _report_failure(message, code, command, args)
    # interrupted, the job has unwound (its files discarded, its workers stopped); a helper
    # thread may wait for ever on an import lock the interrupt left taken
    # (serving/score.py::helper_thread): the interpreter's exit would wait for it
    return _ended(code, argv, unwound=code in (INTERRUPTED, TERMINATED))


def _store_failure(exc: BaseException) -> PartnerscoreError | None:
    """The one line for an error that says the job's MLflow store failed, else None.

    A tracking server or database that went away after the job's first contact with it (its
    run, its registration, a model download) ended in "unexpected MlflowException: API
    request to ... failed with exception ...", exit 70: now ``MLflow store <URL>: cannot reach
    it: <why>``, exit 69 (:func:`~partnerscore.models.stores.store_failure`).
    """
    from partnerscore.models.stores import current_tracking_uri, store_failure

    return store_failure(exc, current_tracking_uri())


def _said(code: int, argv: list[str] | None) -> int:
    """The job's ending is said (its result or error printed): record its exit ``code``.

    As the console script (``argv`` None), a SIGTERM or Ctrl-C from now on, while the process
    exits, ends it at once with ``code`` and says nothing more
    (:func:`~partnerscore.serving.console.ended_as_said`); a caller running :func:`main` in
    its own process keeps its handlers. Returns ``code``.
    """
    ENDING["code"] = code
    if argv is None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, ended_as_said)
        signal.signal(signal.SIGINT, ended_as_said)
    return code


def _say_held_at_commit(clear: bool = False) -> None:
    """Say (on stderr) that a signal came as the job published its results, and forget it.

    The job's last step held it and finished (``signals_deferred(commit=True)``): its results
    are whole, and it exits with its own code. ``clear``: forget it unsaid (a job starting).
    Only if the job imported the worker module, where it is recorded.
    """
    parallel = sys.modules.get("partnerscore.features.parallel")
    name = parallel.take_held_at_commit() if parallel is not None else None
    if name is not None and not clear:
        typer.echo(
            f"note: {name} came as the job published its results: they are whole, and the "
            "job finished",
            err=True,
        )


def _stop_workers() -> None:
    """Stop the worker processes an interrupted job left running (none once it unwound).

    Only if the job imported the worker pools (the import is not worth it otherwise).
    """
    parallel = sys.modules.get("partnerscore.features.parallel")
    if parallel is not None:
        parallel.stop_workers()


def _report_failure(message: str, code: int, command: str | None, args: list[str]) -> None:
    """With ``--json``, the failure as one JSON object on stdout too."""
    if _STATE["json"] or json_requested(args):
        emit_error(message, code, command or _STATE["command"])


def _ended(code: int, argv: list[str] | None, *, unwound: bool = False) -> int:
    """The job's ending is said (:func:`_said`); the console script then exits at once.

    :func:`_exit_now`, after a batch job (:func:`_batch_done`) or an interrupted job that has
    unwound (``unwound``) at once; after any other once its threads are done, as the
    interpreter's exit would wait for them (``threading._shutdown``: an executor's pending
    writes; MLflow's idle artifact-repository worker). Only the teardown is skipped: it puts
    Python's default signal handlers back before it frees the modules (~0.5-1 s after
    `train`), and a Ctrl-C or SIGTERM then killed the process by the signal, -2 or -15 with
    nothing said, for a job that had printed its result and registered its version (6 of 6
    Ctrl-Cs sent 0-0.25 s after `train`'s result). Returns ``code``.
    """
    _said(code, argv)
    if argv is None:
        if not (unwound or _STATE["exit_now"]):
            shutdown = getattr(threading, "_shutdown", None)
            if shutdown is None:  # pragma: no cover - not CPython: the interpreter's own exit
                return code
            shutdown()
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End the console-script process now: no interpreter teardown after the job's ending.

    The teardown frees every object of the batch and of the imported libraries one by one.
    The atexit functions still run (logging, multiprocessing, ``weakref.finalize`` cleanups
    such as temporary folders) and stdout/stderr are flushed; only then the process exits.
    Called only by :func:`main` run as the console script (``argv`` None), never when a caller
    (a test, another program) runs ``main`` in its own process; without CPython's atexit
    runner, or under a profiler or tracer (cProfile, coverage: they write their results after
    ``main()`` returns), it returns and the process ends normally.
    """
    import atexit
    import contextlib

    run_exit_functions = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_functions is None:  # pragma: no cover - not CPython
        return
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return
    run_exit_functions()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)
