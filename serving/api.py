"""The public Python API: the command-line jobs on DataFrames as well as paths.

Re-exported by the top-level package, so ``from partnerscore import simulate, validate, build,
train, score, forecast, load_model`` works. Every function takes in-memory tables or file
paths, returns DataFrames or result objects, and raises
:class:`~partnerscore.features.core.PartnerscoreError` with a one-line message for bad input.
Nothing is written unless a function is given a place to write it (``out`` / ``workdir``),
except what MLflow stores when training.

Example (runs as is; about a minute on 2 cores)::

    import tempfile
    from partnerscore import build, score, simulate, train

    tables = simulate(partners=600, seed=3)
    training_set = build(tables)
    store = tempfile.mkdtemp()
    trained = train(training_set, tracking_uri=f"sqlite:///{store}/mlflow.db", trials=0)
    scores = score(trained.version, raw=tables, as_of="2026-06-01",
                   tracking_uri=f"sqlite:///{store}/mlflow.db")
    onboarding = scores[~scores["out_of_scope"]]  # graduated partners: their own action
    print(onboarding[["partner_id", "age_days", "score", "score_tier", "intervention"]].head())
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from partnerscore.features.config import BuildConfig, SimulateConfig, ValidateConfig
from partnerscore.features.core import (
    PartnerscoreError,
    PartRows,
    read_frame,
    read_frame_or_dataset,
    write_frame_atomic,
)
from partnerscore.features.validate import RawData
from partnerscore.models.model_uri import check_tracking_uri, sqlite_file
from partnerscore.models.stores import raise_if_unreachable

Raw = str | Path | Mapping[str, pd.DataFrame] | RawData


def simulate(
    partners: int = 2000, seed: int = 7, *, config: SimulateConfig | None = None, **settings
) -> dict[str, pd.DataFrame]:
    """A seeded synthetic partner program: every contract table plus ``truth``.

    Args:
        partners: Number of partners.
        seed: Random seed (same seed, same tables).
        config: Base settings (default: the shipped ones; a SimulateConfig or a dict).
        **settings: Other :class:`SimulateConfig` fields, e.g. ``end_date``, ``years``.

    Returns:
        Table name -> DataFrame.

    Raises:
        PartnerscoreError: A setting out of range or unknown (one line naming it).
    """
    from partnerscore.features.simulate import simulate_program

    base = _given(SimulateConfig, config, "config").model_dump()
    given = {**base, "partners": partners, "seed": seed, **settings}
    return simulate_program(_settings(SimulateConfig, given, "simulate"))


def validate(
    raw: Raw,
    *,
    quarantine_dir: str | Path | None = None,
    config: ValidateConfig | None = None,
) -> RawData:
    """Validate raw tables against the contract.

    Args:
        raw: A folder of table files, a mapping of table name -> DataFrame, or already
            validated data (returned as is).
        quarantine_dir: Where to write quarantine CSVs (a folder input defaults to
            ``<folder>/quarantine``; in-memory tables default to not writing them).
        config: Plausibility rules (a ValidateConfig or a dict of its settings).

    Returns:
        Clean typed tables, counts (``.report``) and the quarantined rows (``.quarantine``).

    Raises:
        PartnerscoreError: Anything else than those three, a missing required table or
            column, a column given twice (one line naming the table and column); rows that
            break the contract are quarantined, not raised.
    """
    from partnerscore.features.validate import load_frames, load_raw

    if isinstance(raw, RawData):
        return raw
    config = _given(ValidateConfig, config, "config")
    if isinstance(raw, Mapping):
        return load_frames(dict(raw), quarantine_dir, config=config)
    if not isinstance(raw, str | os.PathLike):
        raise PartnerscoreError(
            "raw: expected a folder of table files, a mapping of table name -> DataFrame or "
            f"the result of validate(), got {type(raw).__name__}"
        )
    return load_raw(raw, quarantine_dir, config=config)


def build(
    raw: Raw,
    *,
    config: BuildConfig | None = None,
    cutoffs: pd.DataFrame | None = None,
    validation: ValidateConfig | None = None,
) -> pd.DataFrame:
    """The stacked point-in-time training set (features before each as_of, labels after).

    Args:
        raw: Raw tables (see :func:`validate`).
        config: Ages, horizon, label rules, data end (a BuildConfig or a dict).
        cutoffs: Explicit snapshots (partner_id, as_of) instead of the onboarding ages.
        validation: Plausibility rules used when ``raw`` still needs validating.

    Returns:
        One row per complete snapshot: partner_id, as_of, features, signed_at, cohort, labels.
        ``frame.attrs["build_config"]`` and ``frame.attrs["snapshots_dropped"]`` record how it
        was built (:func:`train` reads the first).
    """
    from partnerscore.features.pipeline import build_training_set, training_snapshots

    cfg = _given(BuildConfig, config, "config")
    if cutoffs is not None and not isinstance(cutoffs, pd.DataFrame):
        raise PartnerscoreError(
            f"cutoffs: expected a DataFrame of (partner_id, as_of), got {type(cutoffs).__name__}"
        )
    data = _validated(raw, validation)
    planned = None
    if cutoffs is not None:
        planned = _cutoff_frame(cutoffs, data)
    snaps, dropped = training_snapshots(data, cfg, planned)
    frame = build_training_set(data, cfg, snaps)
    frame.attrs["build_config"] = cfg.model_dump(mode="json")
    frame.attrs["snapshots_dropped"] = dropped
    return frame


def _validated(raw: Raw, config=None) -> RawData:
    """``validate(raw)`` writing nothing: a folder's quarantine files are left as they are."""
    if isinstance(raw, str | os.PathLike):
        from partnerscore.features.validate import load_raw

        return load_raw(raw, config=_given(ValidateConfig, config, "validation"),
                        write_quarantine=False)  # fmt: skip
    return validate(raw, config=config)


def _cutoff_frame(cutoffs: pd.DataFrame, data: RawData) -> pd.DataFrame:
    from partnerscore.features.pipeline import read_cutoffs

    with tempfile.TemporaryDirectory() as tmp:
        path = write_frame_atomic(cutoffs, Path(tmp) / "cutoffs.parquet")
        try:
            return read_cutoffs(path, data.tables["partners"])
        except PartnerscoreError as exc:  # named after the caller's frame, not the temporary
            raise PartnerscoreError(str(exc).replace(str(path), "cutoffs")) from None


def train(
    training_set: pd.DataFrame | str | Path,
    *,
    tracking_uri: str,
    trials: int | None = None,
    config=None,
    policy=None,
    register: bool = True,
):
    """Train both heads and the baselines, log to MLflow and register a ``challenger``.

    Args:
        training_set: A frame from :func:`build`, or a folder written by ``partnerscore build``.
        tracking_uri: MLflow tracking/registry URI (e.g. ``sqlite:///path/mlflow.db``).
        trials: Optuna trials per head (default: the config's).
        config: A :class:`~partnerscore.training.config.TrainConfig` or a dict of its settings
            (default: shipped).
        policy: A :class:`~partnerscore.models.config.PolicyConfig` (or a dict) bundled with
            the model.
        register: Register the model; False logs it in the run only (``result.model_uri``).

    Returns:
        The training result: ``run_id``, registered ``version``, holdout ``metrics``,
        ``identical_to`` (earlier runs of the same training set and configuration).

    The run logs the hash of the configuration in effect (``config``, ``policy`` and the
    training set's build settings, the rest at the shipped defaults): the hash ``partnerscore
    train`` logs for the same settings, and what the model's score rows carry as
    ``model_config_hash``.
    """
    from partnerscore.features.registry import feature_specs, registry_version
    from partnerscore.models.config import PolicyConfig
    from partnerscore.serving.config import AppConfig
    from partnerscore.training.config import TrainConfig
    from partnerscore.training.train import run_train

    _quiet()
    check_tracking_uri(tracking_uri, "tracking_uri")
    cfg = _given(TrainConfig, config, "config")
    policy = _given(PolicyConfig, policy, "policy")
    if trials is not None:
        cfg = _settings(TrainConfig, {**cfg.model_dump(), "trials": trials}, "train")
    build_config = BuildConfig()
    if isinstance(training_set, pd.DataFrame) and "build_config" in training_set.attrs:
        build_config = _settings(BuildConfig, training_set.attrs["build_config"], "build_config")
    resolved = AppConfig(build=build_config, train=cfg, policy=policy)
    options = {
        "policy": resolved.policy,
        "tracking_uri": tracking_uri,
        "config_hash": resolved.hash(),
        "register": register,
        "resolved_config": resolved.model_dump(mode="json"),
    }
    if not isinstance(training_set, pd.DataFrame):
        if not isinstance(training_set, str | os.PathLike):
            raise PartnerscoreError(
                "training_set: expected a frame from build() or a folder written by "
                f"`partnerscore build`, got {type(training_set).__name__}"
            )
        with _caller_mlflow_kept("train"):
            return _registered(lambda: run_train(training_set, cfg, **options))
    for col in ("partner_id", "as_of", "signed_at", "label_revenue", "label_engaged"):
        if col not in training_set.columns:
            raise PartnerscoreError(f"training set: missing column '{col}' (use build())")
    names = [s.name for s in feature_specs() if s.name in training_set.columns]
    manifest = {
        "feature_names": names,
        "build_config": build_config.model_dump(mode="json"),
        "registry_version": registry_version(),
        "source": "partnerscore.train(DataFrame)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = write_frame_atomic(training_set, Path(tmp) / "training_set.parquet")
        Path(tmp, "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        try:
            with _caller_mlflow_kept("train"):
                return _registered(lambda: run_train(tmp, cfg, **options))
        except PartnerscoreError as exc:  # named after the caller's frame, not the temporary
            raise PartnerscoreError(str(exc).replace(str(path), "training set")) from None


def _registered(job):
    """``job()`` (a training run), warning of a Ctrl-C or SIGTERM its registration held.

    The registration, the job's last step, holds a signal until the version is whole, then
    finishes (:func:`~partnerscore.features.parallel.signals_deferred`, ``commit``): the
    version is its result. The CLI says so in a note; a notebook's interrupt was recorded and
    nothing said it (until 2026-12-06). Now a :class:`RuntimeWarning`.
    """
    from partnerscore.features import parallel

    parallel.take_held_at_commit()  # an earlier job's, unsaid
    result = job()
    name = parallel.take_held_at_commit()
    if name is not None:
        warnings.warn(
            f"{name} came as train registered its version: version {result.version} is "
            "whole, and train returned it",
            RuntimeWarning,
            stacklevel=3,
        )
    return result


def load_model(model: str = "champion", *, tracking_uri: str, allow_local: bool = False):
    """Load a registered PartnerModel (both heads, explainer and policy).

    A version in a local SQLite registry is read from its files directly, as the score job
    does (:func:`~partnerscore.serving.model_store.load_scoring_model`: MLflow is not
    imported); any other store or URI goes through MLflow.

    Args:
        model: Alias (``champion``/``challenger``), version number or ``models:/`` URI.
        tracking_uri: MLflow tracking/registry URI.
        allow_local: Accept a model folder outside the registry (it is unpickled, which runs
            code: trusted folders only).

    Returns:
        The :class:`~partnerscore.models.bundle.PartnerModel` (``.metadata["version"]``: its
        registry version), for :func:`score`.

    Raises:
        PartnerscoreError: A model argument that names no model, a registry file that does not
            exist (none is created), a version or alias the registry lacks, a version whose
            registration by ``train`` did not finish (tag ``partnerscore.incomplete``, unless
            ``promote --force --reason`` accepted it), a store MLflow cannot reach (one line).
    """
    from partnerscore.models.model_uri import missing_registry, resolve_model_uri
    from partnerscore.serving.model_store import load_scoring_model
    from partnerscore.training.config import TrainConfig

    _quiet()
    check_tracking_uri(tracking_uri, "tracking_uri")
    if isinstance(model, bool) or not isinstance(model, str | Integral):
        raise PartnerscoreError(
            "model: expected an alias, a version number or a models:/ URI, "
            f"got {type(model).__name__} {model!r}"
        )
    try:
        uri = resolve_model_uri(str(model), TrainConfig().registered_model)
    except PartnerscoreError as exc:  # its message names the CLI's option
        raise PartnerscoreError(str(exc).replace("--model:", "model:", 1)) from None
    if not uri.startswith(("models:/", "runs:/")) and not allow_local:
        raise PartnerscoreError(
            f"model {model}: not a registered model; a local folder needs allow_local=True"
        )
    missing = missing_registry(tracking_uri) if uri.startswith(("models:/", "runs:/")) else None
    if missing is not None:  # said with this function's argument, not the CLI's settings
        raise PartnerscoreError(
            f"tracking_uri: no model registry found at {missing} (train() creates one; none "
            "was created)"
        )
    through_mlflow = sqlite_file(tracking_uri) is None  # a SQLite registry is read directly
    with _caller_mlflow_kept("load_model", run_allowed=True, uses_mlflow=through_mlflow):
        return load_scoring_model(uri, tracking_uri).model


def score(
    model,
    *,
    raw: Raw | None = None,
    features: pd.DataFrame | str | Path | None = None,
    as_of: str | date | np.datetime64 | None = None,
    at_age: int | None = None,
    tracking_uri: str | None = None,
    allow_missing_features: bool = False,
    policy=None,
) -> pd.DataFrame:
    """Score partners: predictions, composite score, tier, action, drivers and subscores.

    Nothing is written: no scores file, no history, no quarantine (use the CLI or
    :func:`partnerscore.serving.score.run_score` for the recorded batch job). The inputs are
    not modified.

    Args:
        model: A loaded PartnerModel (:func:`load_model`), or an alias/version/URI (then
            ``tracking_uri`` is needed).
        raw: Raw tables to build features from (with ``as_of`` or ``at_age``).
        features: A prebuilt feature frame (or file) instead of ``raw``; checked strictly. It
            carries its own ``as_of`` column: no ``as_of``/``at_age`` with it.
        as_of: One scoring date for every partner signed before it: ``"YYYY-MM-DD"``, a
            ``date``, or a ``datetime`` / ``pd.Timestamp`` / ``np.datetime64`` at midnight
            (a zoned one at midnight UTC, the time raw dates are read in).
        at_age: Score each partner at signed_at + ``at_age`` days (a whole number, 0 to 36,525).
        tracking_uri: MLflow URI, when ``model`` is not loaded yet.
        allow_missing_features: Score a feature frame that lacks some feature columns as if
            those were missing (as when an optional table is absent).
        policy: Scoring policy, a PolicyConfig or a dict (default: the model's own).

    Returns:
        One score row per partner (per input row with ``features``, in the input's order, on a
        fresh 0..n-1 index); the columns of "Scores and explanations" in the README that
        scoring gives (``unseen_categories`` among them: categories the model never saw,
        scored as missing), without what only the batch job adds (peer percentiles, history,
        decisions, anomaly flags).

    Raises:
        PartnerscoreError: Bad input, in one line: raw tables as :func:`validate` says, a
            feature frame as ``score --features`` says (column and row), an ``as_of`` that is
            no date or more than ``score.as_of_tolerance_days`` (45) after the newest event,
            or before every partner's signing, an ``at_age`` no partner has reached, a model
            that cannot be loaded. The same checks as ``partnerscore score``.
    """
    from partnerscore.features.pipeline import build_scoring_frame, build_scoring_frame_at_age
    from partnerscore.models.bundle import PartnerModel
    from partnerscore.models.frame_check import check_feature_frame
    from partnerscore.models.scoring import score_features

    if isinstance(model, str | Integral) and not isinstance(model, bool):
        if tracking_uri is None:
            raise PartnerscoreError("score: a model name needs tracking_uri")
        model = load_model(str(model), tracking_uri=tracking_uri)
    if not isinstance(model, PartnerModel):
        raise PartnerscoreError(
            "score: model: expected a loaded model (load_model()) or an alias, version number "
            f"or models:/ URI, got {type(model).__name__}"
        )
    if policy is not None:
        from partnerscore.models.config import PolicyConfig

        policy = _given(PolicyConfig, policy, "policy")
    if (raw is None) == (features is None):
        raise PartnerscoreError("score: give either raw tables or a feature frame")
    if features is not None:
        if as_of is not None or at_age is not None:
            given = "as_of" if as_of is not None else "at_age"
            raise PartnerscoreError(f"score: a feature frame carries its own as_of; drop {given}")
        if not isinstance(features, pd.DataFrame | str | os.PathLike):
            raise PartnerscoreError(
                "score: features: expected a DataFrame or a CSV/Parquet file, "
                f"got {type(features).__name__}"
            )
        source = str(features) if not isinstance(features, pd.DataFrame) else "features"
        frame = features if isinstance(features, pd.DataFrame) else read_frame(features)
        check_feature_frame(model, frame, source=source, allow_missing=allow_missing_features)
        # unseen_categories included; consolidated: the caller goes on working on the frame
        return score_features(model, frame, policy=policy, consolidate=True)
    if (as_of is None) == (at_age is None):
        raise PartnerscoreError("score: give either as_of or at_age")
    when = _scoring_date(as_of) if as_of is not None else None
    days = _age(at_age) if at_age is not None else None
    data = _validated(raw)
    from partnerscore.serving.config import AppConfig
    from partnerscore.serving.score import batch_scope

    where = str(raw) if isinstance(raw, str | os.PathLike) else "the raw tables"
    batch_scope(data, where, when, days, AppConfig(), names=("as_of", "at_age"))
    if days is not None:
        frame = build_scoring_frame_at_age(data, days)[0]
    else:
        frame = build_scoring_frame(data, pd.Timestamp(when))
    return score_features(model, frame, policy=policy, consolidate=True)


def _scoring_date(value) -> date:
    """``score``'s as_of as a calendar date, or one line saying why it is none.

    Text is read as ``partnerscore score --as-of`` reads it (``YYYY-MM-DD`` only: no
    ``today``, no ``06/01/2026``); a date, datetime, Timestamp or datetime64 must fall on
    midnight (UTC for a zoned one: raw dates are read in UTC).
    """
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise PartnerscoreError(f"as_of: expected a date YYYY-MM-DD, got {value!r}") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, datetime | np.datetime64):  # pd.Timestamp is a datetime
        raise PartnerscoreError(
            "as_of: expected a date (YYYY-MM-DD text, date, datetime, pd.Timestamp or "
            f"np.datetime64), got {type(value).__name__} {value!r}"
        )
    when = pd.Timestamp(value)
    if pd.isna(when):
        raise PartnerscoreError(f"as_of: expected a date, got {value!r}")
    if when.tzinfo is not None:
        when = when.tz_convert("UTC").tz_localize(None)
    if when != when.normalize():
        raise PartnerscoreError(
            f"as_of: {value!r} is {when:%Y-%m-%d %H:%M:%S} UTC, not a date (midnight): scores "
            "are as of a calendar day"
        )
    return when.date()


def _age(value) -> int:
    """``score``'s at_age as a whole number of days from 0 to 36,525, or one line."""
    from partnerscore.features.core import check_day_count

    whole = isinstance(value, Integral) or (isinstance(value, Real) and float(value).is_integer())
    if isinstance(value, bool) or not whole:
        raise PartnerscoreError(f"at_age: expected a whole number of days, got {value!r}")
    check_day_count("at_age", int(value))
    return int(value)


def forecast(
    scores: pd.DataFrame | str | Path,
    *,
    by: str | tuple[str, ...] = ("tier", "region"),
    period: str | None = None,
    phased: bool = False,
    include_out_of_scope: bool = False,
    coverage: float = 0.8,
    horizon_days: int | None = None,
    phase_days: int | None = None,
) -> pd.DataFrame:
    """Expected revenue with portfolio intervals per segment and period (``partnerscore forecast``).

    Nothing is written (the CLI writes the file).

    Args:
        scores: Score rows (from :func:`score`) or a scores file: CSV or Parquet, or the
            Parquet dataset folder ``score --engine spark`` writes (read as one file).
        by: Segment columns (``"tier,region"`` or a tuple; empty or None: totals only).
        period: ``day``, ``week``, ``month`` or ``quarter`` (default ``day``; ``month`` with
            ``phased``).
        phased: By the calendar period the revenue is expected in (the model's phases).
        include_out_of_scope: Also sum the partners scored out of onboarding scope.
        coverage: Nominal coverage of the portfolio intervals.
        horizon_days: The model's horizon: the scores' ``revenue_horizon_days`` (given, it must
            agree), else this, else ``build.horizon_days`` (180).
        phase_days: The model's phase length: the scores' ``revenue_phase_days``, else this,
            else ``build.phase_days`` (30).

    Returns:
        The forecast table (README, "Forecast file").
    """
    from partnerscore.serving.forecast import forecast_table, parse_by

    if not isinstance(scores, pd.DataFrame | str | os.PathLike):
        raise PartnerscoreError(
            "scores: expected score rows (a DataFrame) or a scores file, "
            f"got {type(scores).__name__}"
        )
    source, frame = "scores", scores
    if not isinstance(scores, pd.DataFrame):  # a scores file: a publish killed midway refused
        # a file, or the folder of part files `score --engine spark` writes
        frame, source = read_frame_or_dataset(scores, again="run `partnerscore score` again")
        source = source if isinstance(source, PartRows) else str(scores)
    try:
        return forecast_table(
            frame,
            parse_by(by) if isinstance(by, str) else tuple(by or ()),
            horizon_days,
            coverage,
            source=source,
            include_out_of_scope=include_out_of_scope,
            period=period or ("month" if phased else "day"),
            phased=phased,
            phase_days=phase_days,
        )
    except PartnerscoreError as exc:  # the job's messages name the CLI's options
        raise PartnerscoreError(_argument_names(str(exc))) from None


def _quiet() -> None:
    """No MLflow telemetry (called before MLflow is used, never at import)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")


def _settings(kind: type[BaseModel], values: dict, where: str):
    """A frozen settings model from ``values``, or one line naming the first bad setting."""
    try:
        return kind.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        said = f"{key}: {message} (got {err.get('input')!r})" if key else message
        raise PartnerscoreError(f"{where}: {said}") from None


def _argument_names(message: str) -> str:
    """A job's message with the CLI's option names as this API's argument names."""
    import re

    return re.sub(r"^--([a-z-]+)", lambda m: m.group(1).replace("-", "_"), message)


def _given(kind: type[BaseModel], value, where: str):
    """A settings argument: None (the shipped defaults), the settings, or a dict of them."""
    if value is None:
        return kind()
    if isinstance(value, kind):
        return value
    if isinstance(value, Mapping):
        return _settings(kind, dict(value), where)
    raise PartnerscoreError(
        f"{where}: expected a {kind.__name__} or a dict of its settings, got {type(value).__name__}"
    )


_MLFLOW_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
)


@contextmanager
def _caller_mlflow_kept(
    job: str, run_allowed: bool = False, uses_mlflow: bool = True
) -> Iterator[None]:
    """Give the caller's MLflow settings back after a job pointed MLflow at its own store.

    ``train`` (and ``load_model`` through MLflow) set the process-wide tracking and registry
    URIs, the active experiment and their environment variables: a notebook's own MLflow
    logging went on in partnerscore's store afterwards. They are restored as they were (unset
    when they were). MLflow cannot start the job's run beside a run of the caller's that is
    active in this thread, so ``train`` refuses one in one line (MLflow's own error, raised
    after the tracking URI had moved, left the caller's run unable to end).

    MLflow is quiet while the job runs, as in the CLI
    (:func:`~partnerscore.training.quiet.quiet_mlflow`): a notebook's ``train`` printed
    MLflow's INFO lines (a new store's migrations, "Validating input example ..."), artifact
    progress bars and the pyfunc pickling warning. The ``mlflow``, ``mlflow.pyfunc`` and
    ``alembic`` logger levels and the variables it sets are given back too. ``uses_mlflow``:
    the job imports MLflow (it is imported first, so its loggers are configured as the
    caller's own import would configure them, not quiet for good). Jobs overlapping in threads
    share one saving of the caller's settings, given back when the last one ends (:data:`_KEPT`).
    A store that goes away during the job is a one-line
    :class:`~partnerscore.features.core.ServiceUnavailable` (``exit_code`` 69), not MLflow's
    error (:func:`~partnerscore.models.stores.store_failure`).
    """
    import sys

    before = sys.modules.get("mlflow")
    if before is not None and not run_allowed and before.active_run() is not None:
        raise PartnerscoreError(
            f"{job}: an MLflow run is active in this process "
            f"({before.active_run().info.run_id}); end it first (mlflow.end_run()): {job} "
            "logs its own run in tracking_uri"
        )
    with _KEPT["lock"]:
        if _KEPT["jobs"] == 0:
            _KEPT["caller"] = _caller_settings(uses_mlflow)
        elif uses_mlflow and "mlflow" not in sys.modules:
            import mlflow  # noqa: F401 - as the first job would have
        _KEPT["jobs"] += 1
    try:
        yield
    except Exception as exc:
        # a store gone mid-job: one line, as the CLI says it (MLflow's own error was a
        # multi-line "API request to ... failed with exception HTTPConnectionPool(...)")
        if not isinstance(exc, PartnerscoreError):
            raise_if_unreachable(exc)
        raise
    finally:
        with _KEPT["lock"]:
            _KEPT["jobs"] -= 1
            if _KEPT["jobs"] == 0:
                _give_back(_KEPT.pop("caller"))


_KEPT: dict = {"lock": threading.Lock(), "jobs": 0}
"""The API's jobs running now (``jobs``) and the caller's MLflow settings (``caller``) they
give back. Taken by the first job, given back by the last: with jobs overlapping in threads
(two ``load_model`` calls of a server's threads), each one saved the settings it found and
gave them back as it ended, so the first to end put the caller's back under the other (MLflow
chatty again, its tracking URI the caller's mid-job) and the last one left MLflow quiet and
pointed at partnerscore's store for good."""


def _caller_settings(uses_mlflow: bool) -> tuple:
    """The caller's MLflow settings, saved; then MLflow quiet (see :func:`_caller_mlflow_kept`)."""
    import logging
    import sys

    from partnerscore.training.quiet import MLFLOW_ENVIRONMENT, MLFLOW_LOGGERS, quiet_mlflow

    env = {name: os.environ.get(name) for name in (*_MLFLOW_VARIABLES, *MLFLOW_ENVIRONMENT)}
    before = sys.modules.get("mlflow")
    settings = _mlflow_settings() if before is not None else (None, None, None)
    if before is None and uses_mlflow:
        import mlflow  # noqa: F401 - configures its loggers as the caller's own import would
    levels = {name: logging.getLogger(name).level for name in MLFLOW_LOGGERS}
    quiet_mlflow()  # no INFO lines or progress bars in the caller's notebook
    return env, settings, levels


def _give_back(caller: tuple) -> None:
    """The caller's MLflow settings as :func:`_caller_settings` saved them."""
    import logging
    import sys

    env, settings, levels = caller
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    if "mlflow" in sys.modules:
        import mlflow
        from mlflow.tracking import fluent

        tracking, registry, experiment = settings
        mlflow.set_tracking_uri(tracking)
        mlflow.set_registry_uri(registry)
        fluent._active_experiment_id = experiment
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _mlflow_settings() -> tuple[str | None, str | None, str | None]:
    """MLflow's process-wide tracking URI, registry URI and active experiment, as set.

    None where not set: MLflow keeps them in module globals, with no public getter for that.
    """
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    return tracking._tracking_uri, registry._registry_uri, fluent._active_experiment_id
