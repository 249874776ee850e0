"""The monitoring job: drift, data quality, staleness, scope and backtests of one raw batch.

``run_monitor`` compares a raw batch with the reference profile logged with the model version
(so the training data is never needed), lists anomalous rows, checks table volumes against the
previous run and freshness against as_of, and backtests every past scoring batch in the score
history whose label horizon has completed and whose outcome period lies outside the training
data of the version that scored it (in-sample rows are counted apart, never backtested).
Every check has a value, thresholds and a status; the job's exit code is 0 when all are green
or warn, 1 when at least one alarms (bad input raises :class:`PartnerscoreError`, exit code 2).

Files written to the output folder (all documented in the README):

- ``monitor.json``: run metadata, counts and every check (:data:`CHECK_COLUMNS`), plus the
  backtest table and the training-window split (``backtest_training_window``);
- ``monitor.html``: the same as a self-contained page with inline SVG charts;
- ``anomalies.csv``: anomalous rows (:data:`ANOMALY_COLUMNS`) with their reason;
- ``backtest.csv``: realised metrics per batch and segment (:data:`BACKTEST_COLUMNS`);
- ``monitor_state.json``: table volumes of this run, the baseline of the next one (and the
  baseline this run read, for a re-run of the same date).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from partnerscore.features.anomaly import (
    ANOMALY_COLUMNS,
    empty_anomalies,
    partner_flags,
    partner_outliers,
    raw_measure_drift,
    row_anomalies,
    staleness_checks,
    table_outliers,
    table_volumes,
    volume_checks,
)
from partnerscore.features.checks import CHECK_COLUMNS, Check, level
from partnerscore.features.config import BuildConfig, MonitorConfig
from partnerscore.features.core import (
    MAX_DAYS,
    PartnerscoreError,
    as_of_dates,
    at_row,
    discard_staged,
    interrupted_publish_note,
    left_by_interrupted_publish,
    publish_listed,
    quoted,
    read_frame_or_dataset,
    stage_frames,
    stage_text,
)
from partnerscore.features.drift import drift_checks, unseen_category_checks
from partnerscore.features.pipeline import build_features, build_labels, make_snapshots
from partnerscore.features.profile import PREDICTIONS, SEGMENTS, current_profile, segment_frame
from partnerscore.features.registry import PHASE_PREFIX
from partnerscore.features.segment_volume import segment_volume_report
from partnerscore.features.validate import load_raw, supported_end
from partnerscore.models.bundle import parse_data_end
from partnerscore.models.config import PolicyConfig
from partnerscore.models.model_uri import MODELS_URI, check_registry
from partnerscore.models.phasing import RevenuePhasing, phase_bounds
from partnerscore.models.policy import out_of_scope
from partnerscore.models.pyfunc import resolve_model_uri
from partnerscore.serving.config import AppConfig
from partnerscore.serving.history import ScoreHistory
from partnerscore.serving.model_store import load_through_mlflow, refuse_missing_model
from partnerscore.training.backtest import (
    BACKTEST_COLUMNS,
    IN_TRAINING_WINDOW,
    PHASE_BACKTEST_COLUMNS,
    LabelDefinitionSplit,
    TrainingWindowSplit,
    backtest_table,
    in_training_window,
    phase_backtest,
    training_window_split,
    trend,
)
from partnerscore.training.reference import (
    LABEL_KEYS,
    label_definition,
    label_differences,
    load_reference_profile,
    logged_manifest,
)

MONITOR_EXPERIMENT = "partnerscore-monitoring"
STATE_FILE = "monitor_state.json"
MONITOR_FILES = (
    "anomalies.csv",
    "backtest.csv",
    "backtest_phases.csv",
    "monitor.html",
    STATE_FILE,
    "monitor.json",
)
"""The files ``monitor`` writes in its ``--out`` folder (an input among them is refused)."""
SEVERITY = {"alarm": 3, "warn": 2, "ok": 1, "info": 0, "skip": 0}
BACKTEST_HEADLINE = (
    ("revenue_normalized_gini", "gini_warn", "gini_alarm", False),
    ("engagement_roc_auc", "auc_warn", "auc_alarm", False),
    ("revenue_bias", "bias_warn", "bias_alarm", True),
    ("engagement_ece", "ece_warn", "ece_alarm", True),
)


@dataclass(frozen=True)
class InterruptedPublish:
    """An earlier monitor run's publish killed between its renames, as the next run found it.

    Read before the next run writes into ``--out`` (:func:`interrupted_publish`).

    Attributes:
        folder: The output folder.
        listed_as_of: The as_of of the ``monitor.json`` in place (None: none was published).
        mixed: Files that ``monitor.json`` lists whose bytes are not the listed ones (the
            interrupted run's, or missing): empty when the files are one run's whole set.
        state_as_of: The as_of of the ``monitor_state.json`` this run read (None: none).
        state_run: Whose that state is: ``last whole run`` (the bytes monitor.json lists),
            ``interrupted run`` (other bytes, or no monitor.json at all), ``either run``
            (monitor.json does not list it: its run, a backfill, kept an earlier state; or it
            lists no files), None without one.
        state_kept: This run (an earlier date's) kept the state file as it was.
    """

    folder: Path
    listed_as_of: str | None
    mixed: tuple[str, ...]
    state_as_of: str | None
    state_run: str | None
    state_kept: bool = False

    def note(self) -> str:
        """The one ``note:`` line (without ``note: ``): what was left and what this run did."""
        text = interrupted_publish_note(
            self.folder / "monitor.json",
            "monitor",
            self.listed_as_of is not None,
            self.mixed,
            f" (as of {self.listed_as_of})",
        )
        if self.state_run is None:
            text += f"; no {STATE_FILE} was left: volumes compared with the data's preceding window"
        else:
            whose = {
                "last whole run": "the last whole run's",
                "interrupted run": "the interrupted run's (renamed whole before the kill)",
                "either run": "either run's (monitor.json does not list it)",
            }[self.state_run]
            text += f"; {STATE_FILE} (as of {self.state_as_of or '?'}) is {whose}"
            text += ", read as the previous run's state"
        if self.state_kept:
            return text + f"; this run replaced every file but {STATE_FILE}, kept (a later date's)"
        return text + "; this run replaced every file with its own"

    def to_dict(self) -> dict:
        """As ``monitor.json`` and ``--json`` hold it (``note`` included)."""
        return {
            "folder": str(self.folder),
            "listed_as_of": self.listed_as_of,
            "mixed": list(self.mixed),
            "state_as_of": self.state_as_of,
            "state_run": self.state_run,
            "state_kept": self.state_kept,
            "note": self.note(),
        }


def interrupted_publish(out_dir: Path) -> InterruptedPublish | None:
    """An earlier run's publish into ``out_dir`` killed between its renames, or None.

    Read before the run writes anything there (its quarantine files are listed too). One
    ``stat`` when no publishing mark is there (:func:`left_by_interrupted_publish`). The state
    file is whole whoever wrote it (one rename) and is read as the previous run's: its
    ``state_run`` says whose it is, by the SHA-256 monitor.json lists for it.
    """
    left = left_by_interrupted_publish(out_dir / "monitor.json")
    if left is None:
        return None
    manifest, mixed = left
    try:
        state = _state(out_dir)
    except PartnerscoreError:  # said by the run's own read of it, after the raw tables'
        state = {}
    state_as_of = str(state["as_of"]) if state.get("as_of") else None
    listed = manifest.get("files", {}) if manifest is not None else {}
    if not (out_dir / STATE_FILE).exists():
        state_run = None
    elif STATE_FILE in mixed or not (out_dir / "monitor.json").exists():
        state_run = "interrupted run"  # the first publish into the folder, if no monitor.json
    elif STATE_FILE in listed:
        state_run = "last whole run"
    else:
        state_run = "either run"
    return InterruptedPublish(
        folder=out_dir,
        listed_as_of=str(manifest.get("as_of")) if manifest is not None else None,
        mixed=tuple(mixed),
        state_as_of=state_as_of,
        state_run=state_run,
    )


@dataclass
class MonitorResult:
    """Outcome of ``run_monitor``."""

    out_dir: Path
    as_of: date
    model_uri: str
    model_version: str
    checks: list[Check]
    anomalies: pd.DataFrame
    backtest: pd.DataFrame
    backtest_phases: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(PHASE_BACKTEST_COLUMNS))
    )
    """When revenue came against the model's phasing (:func:`phase_backtest`)."""
    backtest_window: TrainingWindowSplit | None = None
    """Completed history rows inside their model's training window, left out of both
    backtests (:func:`mark_training_window`)."""
    backtest_labels: LabelDefinitionSplit | None = None
    """The label definition the backtest used and the rows of versions that defined labels
    otherwise, left out (:func:`split_by_label_definition`)."""
    batch_rows: int = 0
    segment_volumes: list[dict] = field(default_factory=list)
    """Rows and partner-days per onboarding age of each flagged or explained segment, for
    the page (:func:`segment_volume_report`)."""
    seconds: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)
    run_id: str = ""
    interrupted_publish: InterruptedPublish | None = None
    """An earlier run's publish into ``out_dir`` this run found killed between its renames
    (None: none), replaced by this run's files; said in one ``note:`` line on stderr."""

    def count(self, status: str) -> int:
        """Number of checks with a status."""
        return sum(1 for c in self.checks if c.status == status)

    @property
    def exit_code(self) -> int:
        """0 all green (warnings allowed), 1 at least one alarm."""
        return 1 if self.count("alarm") else 0

    def json_payload(self) -> dict:
        """``--json``: the result's fields plus ``exit_code`` and the status counts.

        Compact for a scheduler: ``checks`` holds the alarming and warning checks in full
        (most severe first, as in monitor.json), ``checks_total`` how many checks ran and
        ``checks_file`` the monitor.json that keeps every one of them (it printed all ~1,300
        checks, ~0.5 MB, on every run). ``backtest_window`` is monitor.json's
        ``backtest_training_window`` (the same keys, with ``out_of_time_rows`` and the
        ``note``), not the split's attribute names.
        """
        from partnerscore.serving.cli_common import jsonable

        payload = jsonable(replace(self, checks=[]))
        payload.pop("segment_volumes", None)  # the page's chart data
        flagged = [c for c in self.checks if c.status in ("alarm", "warn")]
        ordered = sorted(flagged, key=lambda c: (-SEVERITY[c.status], c.section, c.name))
        payload["checks"] = [c.to_dict() for c in ordered]
        payload["checks_total"] = len(self.checks)
        json_file = self.files.get("json")
        payload["checks_file"] = str(json_file) if json_file is not None else None
        if self.backtest_window is not None:
            payload["backtest_window"] = jsonable(self.backtest_window.to_dict())
        if self.backtest_labels is not None:
            payload["backtest_labels"] = jsonable(self.backtest_labels.to_dict())
        if self.interrupted_publish is not None:
            payload["interrupted_publish"] = self.interrupted_publish.to_dict()
        payload["exit_code"] = self.exit_code
        payload["counts"] = {status: self.count(status) for status in SEVERITY}
        return payload

    def alarms(self) -> list[Check]:
        """The alarming checks."""
        return [c for c in self.checks if c.status == "alarm"]

    def summary(self) -> str:
        """Counts, the alarms and where everything went."""
        lines = [
            f"monitored as of {self.as_of} with {self.model_uri} (version "
            f"{self.model_version or '-'}) in {self.seconds:.1f} s: {len(self.checks):,} checks, "
            f"{self.count('alarm'):,} alarm, {self.count('warn'):,} warn, {self.count('ok'):,} ok, "
            f"{self.count('info'):,} info, {self.count('skip'):,} skipped",
            f"  drift batch: {self.batch_rows:,} snapshots; anomalous rows listed: "
            f"{len(self.anomalies):,}; backtest rows: {len(self.backtest):,}",
        ]
        note = self.backtest_window.note() if self.backtest_window is not None else ""
        if note:
            lines.append(f"  backtest window: {note}")
        note = self.backtest_labels.note() if self.backtest_labels is not None else ""
        if note:
            lines.append(f"  backtest labels: {note}")
        for check in self.alarms()[:15]:
            lines.append(f"  ALARM {check.name}: {check.detail}")
        if len(self.alarms()) > 15:
            lines.append(f"  ... and {len(self.alarms()) - 15} more alarms (see monitor.json)")
        for name, path in self.files.items():
            lines.append(f"  {name}: {path}")
        return "\n".join(lines)


def _state(out_dir: Path) -> dict:
    path = out_dir / STATE_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PartnerscoreError(f"{path}: unreadable monitor state ({exc})") from exc


def batch_anomalies(
    tables: dict[str, pd.DataFrame],
    as_of: pd.Timestamp,
    config: MonitorConfig,
    features: pd.DataFrame | None = None,
    reference: dict | None = None,
) -> tuple[pd.DataFrame, list[Check]]:
    """Every anomalous row of a batch: table and partner outliers, features out of range.

    Args:
        tables: Clean raw tables.
        as_of: Rows dated before it are considered.
        config: Thresholds.
        features: Scoring-frame features at as_of (with age_days) for the range check.
        reference: Reference profile (its ``columns`` and ``ages``); without it the range
            check is skipped.

    Returns:
        (anomaly rows sorted by partner, table, column, the table-outlier checks).
    """
    cache: dict = {}  # each table's rows before as_of, selected once for both checks
    rows, checks = table_outliers(tables, as_of, config, cache=cache)
    raw_rows = pd.concat(
        [f for f in (rows, partner_outliers(tables, as_of, config, cache=cache)) if not f.empty]
        or [empty_anomalies()],
        ignore_index=True,
    )
    return row_anomalies(raw_rows, features, reference, config), checks


def window_batch(
    raw, as_of: pd.Timestamp, reference: dict, model, window_days: int
) -> pd.DataFrame:
    """The current batch: snapshots at the trained ages whose as_of falls in the window.

    Features and both predictions, comparable row for row with the reference profile.
    """
    partners = raw.tables["partners"]
    snaps = make_snapshots(partners, tuple(reference["ages"]))
    start = as_of - pd.Timedelta(days=window_days)
    snaps = snaps[(snaps["as_of"] >= start) & (snaps["as_of"] < as_of)].reset_index(drop=True)
    if snaps.empty:
        return pd.DataFrame()
    # a category the model knows in another case is the model's, as scoring reads it
    # (PartnerModel.respell): 'Registered' is no unseen category nor tier drift
    feats = model.respell(build_features(raw.tables, snaps[["partner_id", "as_of"]])).frame
    preds = model.predict(feats)
    for name in PREDICTIONS:
        feats[name] = preds[name].to_numpy()
    return feats


def _scope_checks(
    partners: pd.DataFrame, as_of: pd.Timestamp, ages: list[int], policy: PolicyConfig
) -> list[Check]:
    """The share of partners past the onboarding scope, as ``score`` decides it.

    Past the oldest trained age plus ``policy.scope_tolerance_days`` (``models.policy.
    out_of_scope``): the check counted every partner past the oldest trained age and said they
    were "flagged, not scored as new", while ``score`` scores those within the tolerance as
    new (1,626 here against the 1,362 that `score` graduated in the same batch).
    """
    signed = pd.to_datetime(partners["signed_at"])
    # whole days, as the features' age_days that score reads (a partner signed at 09:00 is
    # 270 days old at midnight 270.6 days later, and in scope)
    age = np.floor(((as_of - signed[signed < as_of]) / pd.Timedelta(days=1)).to_numpy())
    n = len(age)
    past = out_of_scope(age, ages, policy)
    limit = f"{max(ages)} days plus policy.scope_tolerance_days {policy.scope_tolerance_days}"
    return [
        Check(
            "scope.outside_trained_ages",
            "scope",
            "partners",
            "all",
            "share",
            float(past.mean()) if n else None,
            None,
            None,
            None,
            "info" if n else "skip",
            f"{int(past.sum()):,} of {n:,} partners signed before as_of are past the "
            f"onboarding scope (older than the trained onboarding ages, max {limit}): scored "
            "as graduated, not as new",
        )
    ]


def run_backtest(
    history: ScoreHistory,
    raw,
    as_of: pd.Timestamp,
    reference: dict,
    config: AppConfig,
    phasing: RevenuePhasing | None = None,
    version_phasing: Callable[[str], RevenuePhasing | None] | None = None,
    training_end: Callable[[str], pd.Timestamp | None] | None = None,
    fallback_end: pd.Timestamp | None = None,
    definition: dict | None = None,
    version_definition: Callable[[str], dict | None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, LabelDefinitionSplit]:
    """Labels for every past scored (partner, as_of) whose horizon completed before as_of.

    The labels follow the monitored model's label definition (``definition``, what its
    training manifest logged, :func:`~partnerscore.training.reference.label_definition`;
    the horizon is the profile's): engagement period, share and touchpoints; a setting it does
    not record (a run without a manifest: None) is the config's, and said so
    (:func:`backtest_build`). A row whose version (``version_definition(version)``) defined
    labels otherwise is left out and counted (:class:`LabelDefinitionSplit`): its
    predictions were made for another target; a row whose version's definition is unknown is
    labelled with the monitored model's and counted. Whether a row's horizon has completed is
    judged by its version's horizon (:func:`row_horizons`): a row of a 365-day version is not
    counted completed once the monitored model's 180 days have passed.

    A row whose outcome period ends on or before the training data end of the version that
    scored it (``training_end(version)``; ``fallback_end``, the monitored model's, when that
    is unknown) is in-sample: the model was fitted on that label. It is marked
    ``in_training_window`` (:func:`mark_training_window`) and left out of both tables; without
    any known end a row is kept.

    With the monitored model's ``phasing`` (and a horizon that matches it), the in-scope rows'
    realised revenue per phase is set against the shares they were scored with
    (:func:`~partnerscore.training.backtest.phase_backtest`, :func:`row_shares`): the history
    keeps ``pred_revenue`` and the ``model_version`` that scored it, not the phases, so a row's
    shares are its version's (``version_phasing``), and the monitored model's only when its
    version gives none of the same layout (counted as ``rows_fallback_phasing``).

    Returns:
        (joined rows: predictions, labels, segments and the training-window columns, in-sample
        rows included, rows of another label definition not; :data:`BACKTEST_COLUMNS` table
        of the out-of-time rows; :data:`PHASE_BACKTEST_COLUMNS` table of the out-of-time rows,
        empty without phasing; the label definition used and the rows it left out).
    """
    empty = pd.DataFrame(columns=list(BACKTEST_COLUMNS))
    no_phases = pd.DataFrame(columns=list(PHASE_BACKTEST_COLUMNS))
    horizon = pd.Timedelta(days=int(reference.get("horizon_days", 180)))
    if phasing is not None and int(phasing.horizon_days) != int(horizon.days):
        phasing = None  # a phasing of another horizon says nothing about these labels
    build, labels_split = backtest_build(
        config.build,
        definition,
        int(horizon.days),
        int(phasing.phase_days) if phasing is not None else None,
    )
    if not history.exists():
        return pd.DataFrame(), empty, no_phases, labels_split
    data = history.read()
    if data.empty:
        return pd.DataFrame(), empty, no_phases, labels_split
    # a few partners' late rows (a late tail) do not complete anyone else's horizon
    end = min(as_of, supported_end(raw.data_end, raw.late_tail).ceil("D"))
    data = data[pd.to_datetime(data["as_of"]) < end]
    known = set(raw.tables["partners"]["partner_id"].astype(str))
    data = data[data["partner_id"].astype(str).isin(known)]
    data = data[np.isfinite(pd.to_numeric(data["pred_revenue"], errors="coerce"))]
    # the model's job is partners within the trained onboarding ages
    data = data[pd.to_numeric(data["age_days"]) <= max(reference["ages"])]
    # completed under each row's own horizon: a version of another one is not judged by ours
    days = row_horizons(data, int(horizon.days), version_definition)
    data = data[horizon_completed(data["as_of"], days, end)]
    if data.empty:
        return pd.DataFrame(), empty, no_phases, labels_split
    data = data.reset_index(drop=True)
    same, labels_split = split_by_label_definition(data, labels_split, version_definition)
    data = data[same].reset_index(drop=True)
    if data.empty:
        return pd.DataFrame(), empty, no_phases, labels_split
    snaps = pd.DataFrame(
        {"partner_id": data["partner_id"].astype(str), "as_of": pd.to_datetime(data["as_of"])}
    )
    labels = build_labels(raw.tables, snaps, build)
    joined = pd.DataFrame(
        {
            "partner_id": snaps["partner_id"],
            "as_of": snaps["as_of"],
            "pred_revenue": pd.to_numeric(data["pred_revenue"]).to_numpy(dtype=float),
            "pred_engagement": pd.to_numeric(data["pred_engagement"]).to_numpy(dtype=float),
            "label_revenue": labels["label_revenue"].to_numpy(dtype=float),
            "label_engaged": labels["label_engaged"].to_numpy(),
            "age_days": pd.to_numeric(data["age_days"]).to_numpy(dtype=float),
            "model_version": data["model_version"].fillna("").astype(str).to_numpy(dtype=object)
            if "model_version" in data
            else "",
        }
    )
    phase_cols = [c for c in labels.columns if c.startswith(PHASE_PREFIX)]
    for col in phase_cols:
        joined[col] = labels[col].to_numpy(dtype=float)
    seg = segment_frame(data.assign(age_days=joined["age_days"]), reference["ages"])
    for name in SEGMENTS:
        joined[name] = seg[name].to_numpy()
    joined = mark_training_window(joined, int(horizon.days), training_end, fallback_end)
    # an in-sample fit says nothing about how the model forecasts: out-of-time rows only
    fresh = joined[~joined[IN_TRAINING_WINDOW].to_numpy(dtype=bool)].reset_index(drop=True)
    if fresh.empty:
        return joined, empty, no_phases, labels_split
    phases = no_phases
    bounds = phase_bounds(int(horizon.days), int(phasing.phase_days)) if phasing else []
    if phasing is not None and len(bounds) == len(phase_cols) == phasing.n_phases:
        shares, fallback = row_shares(fresh, phasing, version_phasing)
        phases = phase_backtest(fresh, shares, bounds, fallback_rows=fallback)
    table = backtest_table(fresh, SEGMENTS, min_rows=config.monitor.backtest_min_rows)
    return joined, table, phases, labels_split


def backtest_build(
    build: BuildConfig, definition: dict | None, horizon_days: int, phase_days: int | None
) -> tuple[BuildConfig, LabelDefinitionSplit]:
    """The build settings the backtest labels with: the monitored model's label definition.

    Args:
        build: The current config's build settings (for what the definition lacks).
        definition: The monitored model's label definition (None: its run logged no
            manifest).
        horizon_days: The horizon of its reference profile.
        phase_days: Its phasing's phase length (None: no phasing; the config's, whose phase
            columns the backtest then does not read).

    Returns:
        (the settings, a :class:`LabelDefinitionSplit` naming them and any taken from the
        config, with no rows yet).
    """
    keys = [key for key in LABEL_KEYS if key != "horizon_days"]
    given = {key: definition[key] for key in keys if key in (definition or {})}
    fixed = {"horizon_days": int(horizon_days)}
    if phase_days is not None:
        fixed["phase_days"] = int(phase_days)
    reason = (
        "the monitored model's training run logged no training-set manifest"
        if definition is None
        else "the monitored model's training manifest does not record them"
    )
    try:
        used = BuildConfig.model_validate({**build.model_dump(), **given, **fixed})
    except ValueError:  # pydantic's ValidationError: a manifest edited by hand
        given = {}
        reason = "the monitored model's training manifest records invalid label settings"
        used = BuildConfig.model_validate({**build.model_dump(), **fixed})
    from_config = tuple(key for key in keys if key not in given)
    source = "model" if not from_config else "config" if not given else "model and config"
    dumped = used.model_dump(mode="json")
    split = LabelDefinitionSplit(
        definition={key: dumped[key] for key in LABEL_KEYS},
        source=source,
        from_config=from_config,
        reason=reason if from_config else "",
    )
    return used, split


def row_horizons(
    rows: pd.DataFrame,
    horizon_days: int,
    version_definition: Callable[[str], dict | None] | None = None,
) -> np.ndarray:
    """Each history row's label horizon in days: that of the version that scored it.

    A version's is the ``horizon_days`` its label definition records (``version_definition``);
    ``horizon_days`` (the monitored model's) when it records none, is unknown, or records
    one that is not a whole number of days in [1, ``MAX_DAYS``] (a manifest edited by hand;
    ``build`` takes no other).
    """
    versions = rows["model_version"].fillna("").astype(str).to_numpy(dtype=object)
    days = np.full(len(rows), int(horizon_days), dtype=np.int64)
    for version in pd.unique(versions):
        own = version_definition(str(version)) if version_definition is not None else None
        value = (own or {}).get("horizon_days")
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if 1 <= value <= MAX_DAYS and value == int(value):  # NaN, inf, 1e400 fail the range
            days[versions == version] = int(value)
    return days


def horizon_completed(as_of: pd.Series, days: np.ndarray, end: pd.Timestamp) -> np.ndarray:
    """Whether each row's horizon has completed by ``end``: ``as_of + days <= end``.

    Compared as ``end - as_of >= days`` (no date past the nanosecond range is formed).
    """
    starts = pd.to_datetime(as_of).to_numpy(dtype="datetime64[ns]")
    span = pd.Timestamp(end).to_datetime64().astype("datetime64[ns]") - starts
    return span >= days.astype(np.int64) * np.timedelta64(86_400_000_000_000, "ns")


def split_by_label_definition(
    rows: pd.DataFrame,
    split: LabelDefinitionSplit,
    version_definition: Callable[[str], dict | None] | None = None,
) -> tuple[np.ndarray, LabelDefinitionSplit]:
    """Which rows' versions defined labels as ``split.definition`` does, and the counts.

    A version's definition (``version_definition(version)``, None: unknown) is compared on
    the settings it records (:func:`~partnerscore.training.reference.label_differences`);
    a version that sets one apart is ``other`` and its rows are not kept; an unknown one is
    kept (labelled with the monitored model's definition) and counted.

    Returns:
        (boolean mask of the rows kept, ``split`` with the row counts and versions).
    """
    versions = rows["model_version"].fillna("").astype(str).to_numpy(dtype=object)
    keep = np.ones(len(rows), dtype=bool)
    per: dict[str, dict] = {}
    other = unknown = 0
    for version in sorted(pd.unique(versions)):
        at = versions == version
        own = version_definition(str(version)) if version_definition is not None else None
        apart = label_differences(own, split.definition) if own is not None else {}
        status = "unknown" if own is None else "other" if apart else "same"
        per[str(version)] = {
            "rows": int(at.sum()),
            "status": status,
            "differences": {key: list(pair) for key, pair in apart.items()},
        }
        if status == "other":
            keep[at] = False
            other += int(at.sum())
        elif status == "unknown":
            unknown += int(at.sum())
    return keep, replace(
        split, rows=len(rows), other_definition=other, unknown=unknown, versions=per
    )


def mark_training_window(
    rows: pd.DataFrame,
    horizon_days: int,
    training_end: Callable[[str], pd.Timestamp | None] | None = None,
    fallback_end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """``rows`` with each one's training data end, its source and ``in_training_window``.

    Rows are judged by the model version that scored them (``model_version``): their
    ``pred_revenue`` is that version's, and so is the data it was fitted on. A version whose
    end ``training_end`` does not know (none recorded, a deleted or unresolvable version) is
    judged by ``fallback_end`` (the monitored model's) and marked ``monitored``; with neither,
    ``unknown`` and kept (``in_training_window`` False).

    Args:
        rows: Completed history rows with ``as_of`` and ``model_version``.
        horizon_days: The label horizon.
        training_end: A version's training data end (None: unknown).
        fallback_end: The end for rows whose version's is unknown.

    Returns:
        A copy with ``training_data_end`` (NaT: unknown), ``training_end_source``
        (:data:`~partnerscore.training.backtest.WINDOW_SOURCES`) and ``in_training_window``.
    """
    versions = rows["model_version"].fillna("").astype(str).to_numpy(dtype=object)
    ends = np.full(len(rows), np.datetime64("NaT", "ns"))
    source = np.full(len(rows), "unknown", dtype=object)
    for version in pd.unique(versions):
        end, how = training_end(str(version)) if training_end is not None else None, "version"
        if end is None and fallback_end is not None:
            end, how = fallback_end, "monitored"
        if end is None:
            continue
        at = versions == version
        ends[at] = pd.Timestamp(end).to_datetime64().astype("datetime64[ns]")
        source[at] = how
    return rows.assign(
        training_data_end=ends,
        training_end_source=source,
        **{IN_TRAINING_WINDOW: in_training_window(rows["as_of"], ends, horizon_days)},
    )


def registry_manifests(
    model_uri: str, version: str, monitored: dict | None, registered_model: str
) -> Callable[[str], dict | None]:
    """A version's training manifest (``training/manifest.json``), downloaded once per run.

    One reader for a monitor run: each version's manifest (its training end, its label
    definition) is read the first time it is asked for
    (:func:`~partnerscore.training.reference.logged_manifest`; the model itself is not
    loaded); the monitored ``version`` gives ``monitored`` (read through the monitored
    model's own URI, :func:`_per_version`).
    """
    return _per_version(model_uri, version, monitored, registered_model, logged_manifest)


def monitored_training_end(model, manifest: dict | None) -> pd.Timestamp | None:
    """The monitored model's training data end: its metadata, else its run's logged manifest.

    Models trained before ``train`` recorded ``training_data_end`` fall back to the
    ``data_end`` of the training manifest their run logged (``manifest``); None when neither
    is there.
    """
    end = getattr(model, "training_data_end", None)
    if end is not None:
        return end
    return parse_data_end((manifest or {}).get("data_end"))


def _per_version(model_uri: str, version: str, value, registered_model: str, read):
    """``version -> value`` for the versions of the monitored model's registered name.

    History rows name the registry version that scored them; the versions are those of the
    monitored model's registered name (``models:/<name>/...``; ``registered_model`` for another
    URI). The monitored ``version`` gives ``value`` (the loaded model's); any other digits
    ``read(f"models:/<name>/<v>")``, once each; anything else (``''``, rows scored by an
    unregistered model) None.
    """
    match = MODELS_URI.fullmatch(model_uri)
    name = match.group(1) if match else registered_model
    known = {version: value} if version else {}

    def of(row_version: str):
        if row_version not in known:
            known[row_version] = (
                read(f"models:/{name}/{row_version}") if row_version.isdigit() else None
            )
        return known[row_version]

    return of


def registry_training_ends(
    manifests: Callable[[str], dict | None], version: str, end: pd.Timestamp | None
) -> Callable[[str], pd.Timestamp | None]:
    """A version's training data end, read from the training manifest its run logged.

    The monitored ``version`` is the loaded model's ``end``; another version's is its
    manifest's ``data_end`` (``manifests``, :func:`registry_manifests`, shared with
    :func:`registry_label_definitions`); a version that cannot be resolved (or ``''``) gives
    None.
    """

    def of(row_version: str) -> pd.Timestamp | None:
        if version and row_version == version:
            return end
        return parse_data_end((manifests(row_version) or {}).get("data_end"))

    return of


def registry_phasings(
    model_uri: str, version: str, phasing: RevenuePhasing | None, registered_model: str
) -> Callable[[str], RevenuePhasing | None]:
    """A version's revenue phasing, read from the reference profile its training run logged.

    The monitored ``version`` is the loaded model's ``phasing``; a version that cannot be
    resolved, or whose profile has no phasing (trained before profiles kept it), gives None
    (:func:`_per_version`).
    """

    def read(uri: str) -> RevenuePhasing | None:
        try:
            profile = load_reference_profile(uri, required=False)
        except PartnerscoreError:  # a deleted version
            profile = None
        return RevenuePhasing.from_dict((profile or {}).get("revenue_phasing"))

    return _per_version(model_uri, version, phasing, registered_model, read)


def registry_label_definitions(
    manifests: Callable[[str], dict | None], version: str, definition: dict | None
) -> Callable[[str], dict | None]:
    """A version's label definition, read from the training manifest its run logged.

    The monitored ``version`` gives ``definition`` (already read); another version's is its
    manifest's (``manifests``, :func:`registry_manifests`, shared with
    :func:`registry_training_ends`); a version that cannot be resolved, or whose run logged no
    manifest, gives None.
    """

    def of(row_version: str) -> dict | None:
        if version and row_version == version:
            return definition
        return label_definition(manifests(row_version))

    return of


def row_shares(
    rows: pd.DataFrame,
    phasing: RevenuePhasing,
    version_phasing: Callable[[str], RevenuePhasing | None] | None = None,
) -> tuple[np.ndarray, int]:
    """Each row's phase shares at its ``age_days``: those of the ``model_version`` that scored it.

    ``version_phasing(version)`` gives a version's phasing (None when unknown: an unregistered
    model, a version trained before its profile kept one); a row whose version gives none, or
    one of another layout (horizon, phase length), is read with ``phasing`` (the monitored
    model's, whose layout the labels were built with).

    Returns:
        ((rows, phases) shares, how many rows were read with ``phasing`` as a fallback).
    """
    ages = rows["age_days"].to_numpy(dtype=float)
    shares = phasing.shares(ages)
    if version_phasing is None or not len(rows):
        return shares, len(rows)
    fallback = np.ones(len(rows), dtype=bool)
    versions = rows["model_version"].astype(str).to_numpy(dtype=object)
    for version in pd.unique(versions):
        own = version_phasing(str(version))
        if own is None or not own.same_layout(
            phasing.horizon_days, phasing.phase_days, phasing.n_phases
        ):
            continue
        at = versions == version
        shares[at] = own.shares(ages[at])
        fallback[at] = False
    return shares, int(fallback.sum())


def phase_checks(
    table: pd.DataFrame,
    config: MonitorConfig,
    window: TrainingWindowSplit | None = None,
    labels: LabelDefinitionSplit | None = None,
) -> list[Check]:
    """The largest gap between a phase's realised and expected share of the horizon's revenue.

    A gap counts only beyond two partner-bootstrap standard errors (heavy-tailed deals make a
    few hundred partners' phases noisy): the check's value is ``|gap| - 2 se`` of the phase
    where that is largest, against ``phase_share_warn`` / ``phase_share_alarm``. ``window``:
    the training-window split of the completed rows (its reason when all were in-sample).
    """

    def check(value: float | None, status: str, detail: str) -> list[Check]:
        return [
            Check(
                "backtest.revenue_phase_share_gap",
                "backtest",
                "revenue phases",
                "all",
                "share_gap_beyond_2se",
                value,
                config.phase_share_warn,
                config.phase_share_alarm,
                None,
                status,
                detail,
            )
        ]

    gap = table["share_gap"].to_numpy(dtype=float)
    se = np.nan_to_num(table["share_gap_se"].to_numpy(dtype=float))
    excess = np.abs(gap) - 2 * se
    if not np.isfinite(excess).any():
        if window is not None and window.rows and not window.out_of_time:
            return check(None, "skip", _empty_backtest_reason(window, 0))
        if labels is not None and labels.other_definition and not labels.kept:
            return check(None, "skip", _empty_backtest_reason(None, 0, labels))
        return check(
            None, "skip", "no completed horizon with revenue, or a model without revenue phasing"
        )
    at = int(np.nanargmax(excess))
    value = max(float(excess[at]), 0.0)
    row = table.iloc[at]
    return check(
        value,
        level(value, config.phase_share_warn, config.phase_share_alarm, True),
        f"days {int(row['days_from']) + 1}-{int(row['days_to'])}: "
        f"{row['realised_share']:.1%} of the horizon's revenue arrived, "
        f"{row['expected_share']:.1%} expected (s.e. {row['share_gap_se']:.1%}) over "
        f"{int(row['rows']):,} scored partners{_fallback_note(row)}",
    )


def _fallback_note(row) -> str:
    """How many rows were read with the monitored model's phasing instead of their own."""
    fallback = row.get("rows_fallback_phasing", 0)
    if not fallback or not np.isfinite(fallback):
        return ""
    return (
        f" ({int(fallback):,} of them read with the monitored model's phasing: the version "
        "that scored them logged none of this layout)"
    )


def _window_checks(window: TrainingWindowSplit | None) -> list[Check]:
    """``backtest.in_training_window``: completed rows left out as in-sample (info)."""
    if window is None or not window.rows:
        return []
    return [
        Check(
            "backtest.in_training_window",
            "backtest",
            "history",
            "all",
            "rows",
            float(window.in_window),
            None,
            None,
            None,
            "info",
            window.note()
            or f"none of the {window.rows:,} completed rows lies inside the training window of "
            f"the model that scored it (as_of + {window.horizon_days} days <= its training "
            "data end): all out of time",
        )
    ]


def _label_checks(labels: LabelDefinitionSplit | None) -> list[Check]:
    """``backtest.label_definition`` (info; value = rows left out) when there is a note."""
    note = labels.note() if labels is not None else ""
    if not note:
        return []
    return [
        Check(
            "backtest.label_definition",
            "backtest",
            "history",
            "all",
            "rows",
            float(labels.other_definition),
            None,
            None,
            None,
            "info",
            note,
        )
    ]


def _empty_backtest_reason(
    window: TrainingWindowSplit | None,
    min_rows: int,
    labels: LabelDefinitionSplit | None = None,
) -> str:
    """Why no backtest group has rows: none completed, other labels, in-sample, or too few."""
    if (window is None or not window.rows) and labels is not None and labels.other_definition:
        return (
            f"every completed row ({labels.rows:,}) was scored by a version that defined its "
            "labels otherwise than the monitored model: nothing to backtest with its labels yet"
        )
    if window is None or not window.rows:
        return "no scored batch in the history has a completed horizon yet"
    if not window.out_of_time:
        return (
            f"every completed row ({window.rows:,}) lies inside the training window of the "
            "model that scored it: in-sample, nothing to backtest yet"
        )
    return (
        f"{window.out_of_time:,} out-of-time completed rows: fewer than backtest_min_rows "
        f"({min_rows}) in every group"
    )


def _backtest_checks(
    table: pd.DataFrame,
    config: MonitorConfig,
    window: TrainingWindowSplit | None = None,
    labels: LabelDefinitionSplit | None = None,
) -> list[Check]:
    checks = _window_checks(window)
    if table.empty:
        return checks + [
            Check(
                "backtest.batches",
                "backtest",
                "history",
                "all",
                "batches",
                0.0,
                None,
                None,
                None,
                "skip",
                _empty_backtest_reason(window, config.backtest_min_rows, labels),
            )
        ]
    overall = table[(table["as_of"] == "all") & (table["segment"] == "all")]
    batches = table[(table["as_of"] != "all") & (table["segment"] == "all")]
    latest = batches.sort_values("as_of").tail(1)
    for label, rows in (("all_batches", overall), ("latest_batch", latest)):
        if rows.empty:
            continue
        row = rows.iloc[0]
        for metric, warn_key, alarm_key, absolute in BACKTEST_HEADLINE:
            value = float(row[metric])
            shown = abs(value) if absolute else value
            warn, alarm = getattr(config, warn_key), getattr(config, alarm_key)
            status = level(shown if math.isfinite(shown) else None, warn, alarm, absolute)
            when = "all completed batches" if label == "all_batches" else f"batch {row['as_of']}"
            checks.append(
                Check(
                    f"backtest.{metric}.{label}",
                    "backtest",
                    metric,
                    "all",
                    metric,
                    value,
                    warn,
                    alarm,
                    None,
                    status,
                    f"{metric} {value:.3f} over {int(row['rows']):,} scored partners ({when})",
                )
            )
    for metric in ("revenue_normalized_gini", "engagement_roc_auc"):
        slope = trend(table, metric)
        checks.append(
            Check(
                f"backtest.trend.{metric}",
                "backtest",
                metric,
                "all",
                "slope_per_30_days",
                slope if math.isfinite(slope) else None,
                None,
                None,
                None,
                "info" if math.isfinite(slope) else "skip",
                f"{metric} changes by {slope:+.3f} per 30 days across {len(batches)} batches"
                if math.isfinite(slope)
                else "fewer than two completed batches: no trend",
            )
        )
    return checks


def _batch_scores(path: Path, cut: pd.Timestamp) -> pd.DataFrame:
    """The ``--scores`` file, checked to be this batch's: scores, with rows, as of ``cut``.

    A file, or the Parquet dataset folder ``score --engine spark`` writes (its parts read as
    one file, a row named by its part file and row within it).

    Its anomaly flags are compared with the batch's at ``cut``: a file of another scoring date
    (or of per-partner cut-offs) read a false warning, or a false ok, from another day's flags.

    Raises:
        PartnerscoreError: Not a scores file, no rows, as_of values of several time zones, or
            a row of another (or no) date.
    """
    # a file, or score --engine spark's folder; a publish killed midway refused
    scores, source = read_frame_or_dataset(path, again="run `partnerscore score` again")
    for col in ("partner_id", "score", "as_of"):  # a scores file, not any table with ids
        if col not in scores.columns:
            raise PartnerscoreError(f"{path}: missing column '{col}' (not a scores file?)")
    if scores.empty:
        raise PartnerscoreError(f"{path}: no scored partners")
    when = as_of_dates(source, scores)
    other = (when != cut).to_numpy()
    if other.any():
        row = int(np.flatnonzero(other)[0])
        raise PartnerscoreError(
            f"{at_row(source, row, 'as_of')}: {quoted(scores['as_of'].iloc[row])} is not "
            f"the monitored --as-of {cut:%Y-%m-%d} (its anomaly flags are checked against this "
            "batch's): give the scores of this batch"
        )
    return scores


def _scores_checks(path: Path, scores: pd.DataFrame, flags: pd.DataFrame) -> list[Check]:
    if "anomaly" not in scores.columns:
        value, status = None, "warn"
        detail = f"{path.name} has no anomaly column (scored before monitoring existed)"
    else:
        ids = scores["partner_id"].astype(str)
        flagged = set(flags.loc[flags["anomaly"], "partner_id"].astype(str))
        marked = set(ids[scores["anomaly"].astype(str).str.lower().isin(("true", "1"))])
        missing = sorted((flagged & set(ids)) - marked)
        value, status = float(len(missing)), "warn" if missing else "ok"
        detail = (
            f"{len(marked):,} score rows flagged anomalous in {path.name}; "
            f"{len(missing):,} anomalous partners without the flag"
            + (f" (e.g. {', '.join(missing[:3])})" if missing else "")
        )
    return [
        Check(
            "quality.score_flags",
            "quality",
            "scores",
            "all",
            "unflagged_partners",
            value,
            1.0,
            None,
            None,
            status,
            detail,
        )
    ]


def _metric_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_./ -]", "_", text)[:250]


def _log_mlflow(result: MonitorResult, config: AppConfig, as_of: pd.Timestamp) -> str:
    from partnerscore.training import tracking

    tracking.setup_tracking(
        config.paths.tracking_uri(), MONITOR_EXPERIMENT, config.paths.artifact_root()
    )
    with mlflow.start_run(run_name=f"monitor-{as_of:%Y-%m-%d}") as run:
        mlflow.set_tags(
            {
                "partnerscore.job": "monitor",
                "as_of": f"{as_of:%Y-%m-%d}",
                "model_uri": result.model_uri,
                "model_version": result.model_version,
                "config_hash": config.hash(),
            }
        )
        metrics = {
            "checks_alarm": result.count("alarm"),
            "checks_warn": result.count("warn"),
            "checks_ok": result.count("ok"),
            "anomalous_rows": len(result.anomalies),
            "batch_rows": result.batch_rows,
        }
        for check in result.checks:
            if check.segment == "all" and check.value is not None and math.isfinite(check.value):
                metrics[_metric_name(check.name)] = float(check.value)
        items = list(metrics.items())
        for start in range(0, len(items), 900):
            mlflow.log_metrics(dict(items[start : start + 900]))
        for path in result.files.values():
            if path.name != STATE_FILE:
                mlflow.log_artifact(str(path))
        return run.info.run_id


def run_monitor(
    config: AppConfig,
    raw_dir: str | Path,
    as_of: date,
    out_dir: str | Path,
    *,
    model: str = "champion",
    scores: str | Path | None = None,
    log_to_mlflow: bool = True,
) -> MonitorResult:
    """The ``partnerscore monitor`` job.

    Args:
        config: Application configuration (``monitor`` thresholds, paths, build rules).
        raw_dir: Raw tables folder of the batch.
        as_of: Monitoring date (the batch's scoring date).
        out_dir: Output folder.
        model: Alias, version number or model URI whose reference profile is used.
        scores: Optional scores file of this batch, checked for the ``anomaly`` flag.
        log_to_mlflow: Log metrics and files to the ``partnerscore-monitoring`` experiment.

    Returns:
        Every check, the anomaly list and the backtest table; ``exit_code`` 0 or 1.

    Raises:
        PartnerscoreError: Bad input (missing raw tables, unknown model, no reference
            profile, unreadable scores file).
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    cut = pd.Timestamp(as_of)
    mcfg = config.monitor
    if scores is not None and not Path(scores).exists():
        raise PartnerscoreError(f"{scores}: scores file not found")
    # the input files first: a bad one is named whatever the model store holds
    batch_scores = _batch_scores(Path(scores), cut) if scores is not None else None
    uri = resolve_model_uri(model, config.train.registered_model)
    check_registry(config.paths.tracking_uri())  # the reference profile is a run's, in it
    refuse_missing_model(uri, config.paths.tracking_uri())  # one line, names a typo
    # through MLflow, which the reference profile and the manifests are read with after it
    partner_model, version = load_through_mlflow(uri, config.paths.tracking_uri())
    reference = load_reference_profile(uri)

    # before this run writes there (its quarantine files, below): a publish killed earlier
    left = interrupted_publish(out_dir)
    raw = load_raw(Path(raw_dir), out_dir / "quarantine")
    tables = raw.tables
    if not (pd.to_datetime(tables["partners"]["signed_at"]) < cut).any():
        # nothing to monitor, and its all-zero volumes would be the next run's baseline
        raise PartnerscoreError(f"--as-of {as_of}: no partner signed before this date")
    checks: list[Check] = []

    # drift: snapshots at the trained ages inside the window vs the reference profile
    batch = window_batch(raw, cut, reference, partner_model, mcfg.window_days)
    if batch.empty:
        checks.append(
            Check(
                "drift.batch_rows",
                "drift",
                "snapshots",
                "all",
                "rows",
                0.0,
                None,
                None,
                None,
                "skip",
                f"no partner reached a trained onboarding age in the {mcfg.window_days}"
                " days before as_of: nothing to compare",
            )
        )
    else:
        current = current_profile(batch, reference)
        checks += drift_checks(reference, current, mcfg)
        checks += unseen_category_checks(reference, current, mcfg)

    # data quality on the raw batch and the partners scored at as_of
    from partnerscore.features.pipeline import build_scoring_frame

    # someone signed before as_of (refused above otherwise): the frame has rows
    features = build_scoring_frame(raw, cut)
    features["age_days"] = (cut - pd.to_datetime(features["signed_at"])) / pd.Timedelta(days=1)
    checks += raw_measure_drift(tables, cut, mcfg)
    anomalies, outlier_checks = batch_anomalies(tables, cut, mcfg, features, reference)
    checks += outlier_checks
    flags = partner_flags(features["partner_id"], anomalies)
    in_scope = features["age_days"].to_numpy(dtype=float) <= max(reference["ages"])
    scoped = set(features.loc[in_scope, "partner_id"].astype(str))
    oor = anomalies[anomalies["table"] == "features"]
    share = oor["partner_id"].nunique() / len(scoped) if scoped else None
    cols = oor["column"].value_counts().head(5)
    listed = ", ".join(f"{k} ({v})" for k, v in cols.items()) or "none"
    checks.append(
        Check(
            "quality.out_of_training_range",
            "quality",
            "features",
            "all",
            "partner_share",
            share,
            mcfg.out_of_range_warn,
            mcfg.out_of_range_alarm,
            None,
            level(share, mcfg.out_of_range_warn, mcfg.out_of_range_alarm),
            f"{oor['partner_id'].nunique():,} of {len(scoped):,} in-scope partners have a "
            f"feature outside the training range; most often {listed}",
        )
    )
    checks.append(
        Check(
            "quality.anomalous_partners",
            "quality",
            "partners",
            "all",
            "count",
            float(flags["anomaly"].sum()),
            None,
            None,
            None,
            "info",
            f"{int(flags['anomaly'].sum()):,} partners scored at as_of carry an anomaly flag",
        )
    )

    # volumes vs the previous run (state file), else vs the preceding window of this data
    window = pd.Timedelta(days=mcfg.window_days)
    volumes = table_volumes(tables, cut - window, cut)
    state = _state(out_dir)
    last_as_of = pd.Timestamp(state["as_of"]) if state.get("as_of") else None
    baseline = state
    if last_as_of == cut:
        # a re-run of this as_of: the baseline its first run read (the state file holds this
        # date's volumes now; read as the baseline, a re-run compared otherwise)
        baseline = state.get("baseline") or {}
    prev_as_of = pd.Timestamp(baseline["as_of"]) if baseline.get("as_of") else None
    # the previous run is the baseline only when it is recent: an old or mistaken run (years
    # before, all-zero volumes) would make every table a spike
    recent = prev_as_of is not None and cut - 2 * window <= prev_as_of < cut
    used = None
    if recent and baseline.get("volumes"):
        previous = baseline["volumes"]
        prev_days = float(baseline.get("window_days", mcfg.window_days))
        source = f"the previous run (as of {prev_as_of:%Y-%m-%d})"
        used = {"as_of": f"{prev_as_of:%Y-%m-%d}", "window_days": prev_days, "volumes": previous}
    else:
        previous = table_volumes(tables, cut - 2 * window, cut - window)
        prev_days = float(mcfg.window_days)
        source = "the preceding window of this data"
    checks += volume_checks(volumes, previous, float(mcfg.window_days), prev_days, mcfg, source)
    # per segment, against the rows its partners' onboarding ages lead one to expect
    segment_checks, segment_views = segment_volume_report(tables, cut, mcfg)
    checks += segment_checks
    # a re-run of an earlier date (a backfill) leaves the state of the latest run: the next
    # scheduled run's baseline stays the run before it
    new_state = None
    if last_as_of is None or cut >= last_as_of:
        new_state = {"as_of": f"{cut:%Y-%m-%d}", "window_days": mcfg.window_days}
        new_state |= {"volumes": volumes, "baseline": used}
    checks += staleness_checks(tables, cut, mcfg)
    checks += _scope_checks(tables["partners"], cut, reference["ages"], config.policy)

    history = ScoreHistory(config.paths.history_database())
    phasing = getattr(partner_model, "phasing", None)
    # each version's training manifest (its training end, its label definition) read once
    monitored = logged_manifest(uri)
    manifests = registry_manifests(uri, version, monitored, config.train.registered_model)
    trained_to = monitored_training_end(partner_model, monitored)
    definition = label_definition(monitored)
    joined, backtest, backtest_phases, labels = run_backtest(
        history,
        raw,
        cut,
        reference,
        config,
        phasing,
        registry_phasings(uri, version, phasing, config.train.registered_model),
        registry_training_ends(manifests, version, trained_to),
        trained_to,
        definition,
        registry_label_definitions(manifests, version, definition),
    )
    window = training_window_split(joined, int(reference.get("horizon_days", 180)))
    checks += _label_checks(labels)
    checks += _backtest_checks(backtest, mcfg, window, labels)
    checks += phase_checks(backtest_phases, mcfg, window, labels)
    if scores is not None:
        checks += _scores_checks(Path(scores), batch_scores, flags)

    result = MonitorResult(
        out_dir=out_dir,
        as_of=as_of,
        model_uri=uri,
        model_version=version,
        checks=checks,
        anomalies=anomalies,
        backtest=backtest,
        backtest_phases=backtest_phases,
        backtest_window=window,
        backtest_labels=labels,
        batch_rows=len(batch),
        segment_volumes=segment_views,
    )
    if left is not None:
        result.interrupted_publish = replace(left, state_kept=new_state is None)
    _write(result, reference, batch, config, new_state, cut)
    result.seconds = time.perf_counter() - started
    if log_to_mlflow:
        result.run_id = _log_mlflow(result, config, cut)
    return result


def _write(result, reference, batch, config, state: dict | None, cut) -> None:
    """The output files, published together (``state`` None: the state file is kept).

    ``state`` is None for a run of an earlier date than the state file's. Every file is
    staged first (a temporary beside it) and all are renamed over their targets at once,
    with Ctrl-C and SIGTERM held meanwhile (a second one acts at once): a run interrupted
    while rendering the page used to leave this run's CSVs and monitor.json beside the
    previous run's page and state. Interrupted before the renames, the run publishes
    nothing and leaves no temporary. ``monitor.json`` is renamed last and lists every other
    file's SHA-256 (the quarantine files too): a job killed between two renames (SIGKILL, out
    of memory), where no signal can be held, leaves files that do not match it, which
    :func:`~partnerscore.features.core.check_listed` names in one line (it was a silent mix).
    """
    from partnerscore.features.parallel import signals_deferred
    from partnerscore.serving.monitor_report import render_monitor_html

    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    names = ["anomalies", "backtest", "backtest_phases"]
    staged = stage_frames(
        [
            (result.anomalies[list(ANOMALY_COLUMNS)], out / "anomalies.csv"),
            (result.backtest[list(BACKTEST_COLUMNS)], out / "backtest.csv"),
            (result.backtest_phases[list(PHASE_BACKTEST_COLUMNS)], out / "backtest_phases.csv"),
        ]
    )
    try:
        ordered = sorted(result.checks, key=lambda c: (-SEVERITY[c.status], c.section, c.name))
        payload = {
            "as_of": f"{cut:%Y-%m-%d}",
            "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "model_uri": result.model_uri,
            "model_version": result.model_version,
            "config_hash": config.hash(),
            "exit_code": result.exit_code,
            "counts": {s: result.count(s) for s in ("alarm", "warn", "ok", "skip", "info")},
            "batch_rows": result.batch_rows,
            "anomalous_rows": len(result.anomalies),
            "check_columns": list(CHECK_COLUMNS),
            "checks": [c.to_dict() for c in ordered],
            "backtest": json.loads(result.backtest.to_json(orient="records")),
            "backtest_phases": json.loads(result.backtest_phases.to_json(orient="records")),
            "backtest_training_window": (
                result.backtest_window.to_dict() if result.backtest_window is not None else None
            ),
            "backtest_label_definition": (
                result.backtest_labels.to_dict() if result.backtest_labels is not None else None
            ),
            "interrupted_publish": (
                result.interrupted_publish.to_dict()
                if result.interrupted_publish is not None
                else None
            ),
        }
        html = render_monitor_html(result, reference, batch, config, payload)
        staged.append(stage_text(html, out / "monitor.html"))
        names.append("html")
        if state is not None:
            staged.append(stage_text(json.dumps(state, indent=1), out / STATE_FILE))
            names.append("state")
        names.append("json")
        # this run's quarantine files (load_raw wrote them) are listed with the others
        quarantine = sorted((out / "quarantine").glob("*.csv"))
    except BaseException:
        discard_staged(staged)
        raise
    with signals_deferred(commit=True):  # monitor.json (every file's SHA-256) renamed last
        published = publish_listed(staged, payload, out / "monitor.json", written=quarantine)
    files = dict(zip(names, published, strict=True))
    if state is None:
        files["state"] = out / STATE_FILE
    result.files = files
