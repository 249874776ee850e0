"""Controlled experiments: assign partners to arms, analyse outcomes, plan sample sizes.

Three jobs behind ``partnerscore experiment assign | analyze | plan`` (plus ``stop``):

- :func:`run_assign` randomises the partners of a scores file into arms (stratified, seeded) and
  writes the assignment table (contract: :mod:`partnerscore.features.experiments`). Running
  experiments are recorded in a registry CSV (default ``<data_dir>/experiments/registry.csv``,
  one row per experiment and partner, ``status`` running/stopped): a partner already running in
  an experiment of the same name is never re-assigned; re-running the identical assignment is a
  no-op, and ``stop`` ends an experiment so its name can be reused.
- :func:`run_analyze` reads outcomes from the raw data after each partner's ``assigned_at``
  (revenue won and engagement by the label rules of ``build_labels`` with ``as_of =
  assigned_at``, cumulatively at each milestone, and the score trajectory when a score history
  is given), estimates every treatment arm's effect against the control with 95% intervals
  (Welch difference in means, regression adjustment on the pre-period covariates, bootstrap for
  revenue) overall and per stratum, checks the sample ratio, and writes ``results.json``,
  ``effects.csv``, ``outcomes.csv`` and ``report.html``; optionally logs them to MLflow.
- :func:`run_plan` turns a sample size into minimum detectable effects (or an effect into a
  sample size), with outcome spread and covariate strength estimated from the raw data.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from partnerscore.features.config import BuildConfig, engagement_period_conflict
from partnerscore.features.core import (
    LeftPublish,
    OptionError,
    PartnerscoreError,
    as_of_dates,
    check_day_count,
    discard_staged,
    existing_file,
    file_lock,
    frame_format,
    left_publish,
    publish_listed,
    publish_staged,
    quoted,
    read_frame,
    same_file,
    stage_frames,
    stage_text,
    write_frame_atomic,
    write_target,
)
from partnerscore.features.experiments import (
    ASSIGNMENT_COLUMNS,
    arm_shares,
    assign_arms,
    assignment_schema,
    stratum_keys,
)
from partnerscore.features.registry import get_spec
from partnerscore.serving.config import AppConfig
from partnerscore.training.experiments import (
    DEFAULT_ALPHA,
    Estimate,
    adjusted_difference,
    bootstrap_difference,
    minimum_detectable_effect,
    minimum_detectable_lift,
    required_partners,
    sample_ratio_mismatch,
    welch_difference,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from partnerscore.serving.history import ScoreHistory

RESULTS_SCHEMA_VERSION = 1
ANALYZE_FILES = ("effects.csv", "outcomes.csv", "report.html", "results.json")
"""The files ``experiment analyze`` writes in its ``--out`` folder (an input among them is
refused)."""
PLAN_NEEDS_SPREAD = "plan: give --revenue-sd and/or --base-rate, or --raw DIR to estimate them"
"""run_plan's error (and the CLI's usage error) when it has neither spread nor data."""
REGISTRY_COLUMNS = (
    "experiment",
    "partner_id",
    "arm",
    "stratum",
    "assigned_at",
    "seed",
    "status",
    "assignment_file",
)
PRE_COLUMNS = (
    "score",
    "pred_revenue",
    "pred_engagement",
    "score_tier",
    "quadrant",
)
# effects.csv / results.json["effects"]: one row per arm x outcome x stratum x day x method
EFFECT_COLUMNS = {
    "arm": "Treatment arm compared with the control.",
    "outcome": "revenue (won in the window), engaged (label rule, 0/1) or score (history).",
    "stratum": "Stratum key, or 'all' for the whole experiment.",
    "day": "Window length in days after assigned_at (the horizon, or a milestone).",
    "method": "welch, adjusted (regression on pre-period covariates, HC3) or bootstrap.",
    "effect": "Treatment mean minus control mean (adjusted: regression estimate).",
    "ci_low": "Lower bound of the 95% interval (1 - alpha).",
    "ci_high": "Upper bound.",
    "se": "Standard error.",
    "p_value": "Two-sided p-value of no effect (empty for the bootstrap).",
    "significant": "Whether the interval excludes zero.",
    "n_treatment": "Partners in the treatment arm.",
    "n_control": "Partners in the control arm.",
    "mean_treatment": "Outcome mean in the treatment arm.",
    "mean_control": "Outcome mean in the control arm.",
}
# outcomes.csv: one row per partner
OUTCOME_COLUMNS = {
    "partner_id": "Partner.",
    "arm": "Arm.",
    "stratum": "Stratum key.",
    "assigned_at": "Assignment instant.",
    "revenue": "Won deal amounts closed in [assigned_at, assigned_at + horizon).",
    "engaged": "Engagement label over the horizon (build_labels rule).",
    "pre_revenue": "Won deal amounts closed in the horizon-long window before assigned_at.",
    "pre_engaged": "Engagement label over that pre-period window.",
    "pre_score": "Composite score before assignment (from the assignment table; may be empty).",
    "revenue_d<N>": "Revenue won in the first N days after assignment, per milestone.",
    "engaged_d<N>": "Engagement label over the first N days, per milestone.",
}
RESULT_KEYS = {
    "schema_version": "Version of this layout.",
    "experiment": "Experiment name.",
    "control_arm": "The arm every other arm is compared with.",
    "arms": "Arm names.",
    "assigned_at_min": "Earliest assignment.",
    "assigned_at_max": "Latest assignment.",
    "horizon_days": "Outcome window.",
    "milestones": "Milestone days of the trajectory.",
    "alpha": "1 - confidence level.",
    "data_end": "End of the raw data.",
    "covariates": "Pre-period covariates of the adjusted estimate.",
    "sample_ratio": "Chi-square sample-ratio check (observed, expected, chi2, p_value, mismatch).",
    "effects": "Rows of effects.csv (EFFECT_COLUMNS).",
    "trajectory": "Per arm, outcome and day: n and mean (score rows before assignment: day < 0).",
    "inputs": "Assignment file, raw folder, score history and their fingerprints.",
    "files": "effects.csv, outcomes.csv and report.html with the SHA-256 of their bytes "
    "(results.json is renamed after them: features/core.py check_listed).",
}
EXPERIMENT_TRACKING = "partnerscore-experiments"
HEADLINE_METHOD = "adjusted"
"""The method of ``experiment analyze``'s headline effects: regression adjustment (CUPED), the
narrowest intervals at the calibration's coverage (README, Controlled experiments)."""
_METHOD_NAMES = {"welch": "welch", "adjusted": "adjusted (CUPED)", "bootstrap": "bootstrap"}
HERE = resources.files(__package__)  # templates/, static/ (also in a zip archive)


def horizon_effects(results: dict, method: str, stratum: str | None = "all") -> list[dict]:
    """Revenue and engagement effect rows of ``method`` at the horizon, in the results' order.

    The one selection behind the summary's and ``--json``'s headline and report.html's headline
    and per-stratum tables, so that they show the same numbers.

    Args:
        results: ``run_analyze``'s results dictionary.
        method: ``welch``, ``adjusted`` or ``bootstrap``.
        stratum: One stratum key (``all``: overall), or None for every stratum but ``all``.

    Returns:
        Rows with ``EFFECT_COLUMNS``.
    """
    h = results["horizon_days"]
    return [
        e
        for e in results["effects"]
        if e["day"] == h
        and e["method"] == method
        and e["outcome"] != "score"
        and (e["stratum"] != "all" if stratum is None else e["stratum"] == stratum)
    ]


# ----------------------------------------------------------------------------------- reading ---
def _read_table(path: Path, what: str) -> pd.DataFrame:
    """An experiment table (assignments, registry) read as every partnerscore file is.

    :func:`~partnerscore.features.core.read_frame`: missing, empty, a folder, not UTF-8 (its
    line, row and column) in one line; ids, experiment, arm and stratum kept as text.
    """
    try:
        return read_frame(path, text=lambda column: column in _TEXT_COLUMNS)
    except PartnerscoreError:
        raise
    except Exception as exc:  # parser errors of pandas / pyarrow
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise PartnerscoreError(f"{path}: cannot read {what}: {first}") from exc


_TEXT_COLUMNS = {"partner_id", "experiment", "arm", "stratum"}


def read_assignments(path: str | Path) -> pd.DataFrame:
    """Read and check an assignment table (declared columns, types, one row per partner).

    Raises:
        PartnerscoreError: Missing file or column, bad values (naming the column and row).
    """
    from partnerscore.features.contract import load_pandera

    pa = load_pandera()  # without pandas-on-Spark: its import and pandas-version warning
    path = Path(path)
    frame = _read_table(path, "assignments")
    for col in ASSIGNMENT_COLUMNS:
        if col not in frame.columns:
            raise PartnerscoreError(f"{path}: missing column '{col}' (not an assignment table)")
    if frame.empty:
        raise PartnerscoreError(f"{path}: no assigned partners")
    for col in ("experiment", "partner_id", "arm", "stratum"):
        frame[col] = _text(frame[col])
    # an empty id read "not in the partners table" (2026-12-06); the stratum may be empty
    _refuse_empty(path, frame, ("experiment", "partner_id", "arm"))
    # read as every as_of is: ISO 8601, one time zone (dropped), the row of a bad one named
    frame["assigned_at"] = as_of_dates(path, frame, "assigned_at")
    try:
        return assignment_schema().validate(frame)
    except (pa.errors.SchemaError, pa.errors.SchemaErrors, ValueError, TypeError) as exc:
        if isinstance(exc, pa.errors.SchemaErrors):  # lazy validation or coercion: the first
            exc = exc.schema_errors[0] if exc.schema_errors else exc
        col = getattr(getattr(exc, "schema", None), "name", None)
        cases = getattr(exc, "failure_cases", None)
        row = ""
        first = (str(exc).splitlines() or [""])[0].rstrip(": ")
        twice = "not unique" in first  # an (experiment, partner_id) pair given twice
        if cases is not None and len(cases) and "index" in cases:
            indexes = cases["index"].dropna()
            # the second of two equal rows is the one to name
            idx = (indexes.max() if twice else indexes.iloc[0]) if len(indexes) else None
            row = f" row {int(idx) + 1}" if idx is not None else ""
            if "failure_case" in cases and "coerc" in first:  # say which value, not the type
                kind = "whole number" if "type int" in first else "number"
                first = f"{quoted(cases['failure_case'].iloc[0])} is not a {kind}"
        if col and twice:
            col, first = "partner_id", "a partner assigned twice in one experiment"
        where = f"column '{col}'{row}: " if col else ""
        raise PartnerscoreError(f"{path}: {where}{first}") from exc


def _text(values: pd.Series) -> pd.Series:
    """A text column with its empty cells as ``""`` (``astype(str)`` made them ``'None'``)."""
    return values.astype(object).where(values.notna(), "").astype(str)


def _refuse_empty(path: Path, frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    """Stop at the first empty (or blank) cell of ``columns``: its column and 1-based row."""
    for col in columns:
        empty = frame[col].str.strip().eq("").to_numpy()
        if empty.any():
            row = int(np.flatnonzero(empty)[0]) + 1
            raise PartnerscoreError(f"{path}: column '{col}' row {row}: is empty")


REGISTRY_STATUSES = ("running", "stopped")
"""The registry's ``status`` values: ``assign`` writes ``running``, ``stop`` ``stopped``."""


def _read_registry(path: Path) -> pd.DataFrame:
    """Read and check the experiment registry (one line naming the column and row, exit 2).

    The rows ``assign`` and ``stop`` rely on: experiment, partner_id, arm and status filled,
    status ``running`` or ``stopped`` (an ``Running`` or ``paused`` row was no running
    experiment: its partner was assigned again, and ``stop`` found nothing to stop),
    ``assigned_at`` read as an assignment table's (ISO 8601, one time zone, none empty), and a
    partner running at most once per experiment (``stop`` counted a row given twice as two
    partners released; ``assign``'s refusal printed a pandas Series). A partner may be
    ``stopped`` in an experiment any number of times (each ``stop`` then ``assign`` of a name
    leaves one), beside one ``running`` row, and run in several experiments of other names at
    once (the design allows overlapping experiments). The rows are kept as written: a checked
    registry is written back unchanged but for what the job changes.

    Raises:
        PartnerscoreError: ``<path>: column 'status' row 3: 'paused' is not running or
            stopped`` and the like (the CLI puts ``--registry`` before the path).
    """
    if not path.exists():
        return pd.DataFrame({c: pd.Series(dtype=object) for c in REGISTRY_COLUMNS})
    frame = _read_table(path, "experiment registry")
    missing = [c for c in REGISTRY_COLUMNS if c not in frame.columns]
    if missing:
        raise PartnerscoreError(
            f"{path}: missing column '{missing[0]}' (not an experiment registry)"
        )
    for col in ("experiment", "partner_id", "arm", "status"):
        frame[col] = _text(frame[col])
    _refuse_empty(path, frame, ("experiment", "partner_id", "arm", "status"))
    unknown = ~frame["status"].isin(REGISTRY_STATUSES).to_numpy()
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise PartnerscoreError(
            f"{path}: column 'status' row {row + 1}: {quoted(frame['status'].iloc[row])} is "
            f"not {' or '.join(REGISTRY_STATUSES)}"
        )
    as_of_dates(path, frame, "assigned_at")  # checked; the text is kept as written
    running = frame["status"].eq("running").to_numpy()
    keys = frame.loc[running, ["experiment", "partner_id"]]
    twice = keys.duplicated(keep=False).to_numpy()
    if twice.any():
        rows = np.flatnonzero(running)[twice]  # positions of the rows of the first such pair
        first = frame.iloc[rows[0]]
        same = rows[
            (frame["experiment"].iloc[rows] == first["experiment"]).to_numpy()
            & (frame["partner_id"].iloc[rows] == first["partner_id"]).to_numpy()
        ]
        raise PartnerscoreError(
            f"{path}: column 'partner_id' row {same[1] + 1}: a partner running twice in one "
            f"experiment (row {same[0] + 1} too: {quoted(first['partner_id'])} in "
            f"{quoted(first['experiment'])})"
        )
    return frame


def _registry_dates(reg: pd.DataFrame, when: pd.Series) -> pd.Series:
    """New registry rows' ``assigned_at`` text, in the registry's time zone.

    ``when`` (plain, UTC as every plain date is read) as ``2026-03-01 00:00:00``, or in the
    registry's offset when its dates carry one (``2026-03-01 02:00:00+02:00``): plain rows,
    or another offset, among them made a registry of two time zones, refused by the next
    command.
    """
    stamp = "%Y-%m-%d %H:%M:%S"
    given = pd.to_datetime(reg["assigned_at"], format="ISO8601") if len(reg) else None
    if given is None or not isinstance(given.dtype, pd.DatetimeTZDtype):
        return when.dt.strftime(stamp)
    local = when.dt.tz_localize("UTC").dt.tz_convert(given.dt.tz)
    offset = local.dt.strftime("%z")  # +0200: written +02:00, as ISO 8601's extended form
    return local.dt.strftime(stamp) + offset.str[:3] + ":" + offset.str[3:]


def _refuse_shared_registry(
    reg_path: Path, registry: str | Path | None, files: dict[str, tuple[str | Path, bool]]
) -> None:
    """Refuse an ``assign`` whose assignment table or scores file is the registry it writes.

    The CLI refuses options naming one file before the job (``--out a.csv --registry a.csv``);
    the default registry (``DATA_DIR/experiments/registry.csv``) is known here only. The
    registry replaced the assignment table (or the scores file), exit 0, until 2026-12-06.

    Args:
        reg_path: The registry file.
        registry: The ``--registry`` value (None: the default).
        files: Option -> (its path, whether it is an input).
    """
    said = (
        "also given as --registry"
        if registry is not None
        else "is the experiment registry (DATA_DIR/experiments/registry.csv)"
    )
    for option, (path, is_input) in files.items():
        if same_file(path, reg_path):  # the CLI's own rule (cli_common._claim)
            what = (
                "an output must not overwrite an input"
                if is_input
                else "two outputs cannot share one file"
            )
            raise OptionError(f"{option} {path}: {said}; {what}")


@contextmanager
def registry_lock(reg_path: Path) -> Iterator[None]:
    """An exclusive lock on the registry while a job reads, checks and rewrites it.

    ``assign`` and ``stop`` read the registry, check it and write it back whole: two at once
    (two experiments' schedulers) each wrote back what it had read plus its own rows, and
    the one renamed last dropped the other's, leaving partners assigned that the registry no
    longer protected (until 2026-12-06). The lock is :func:`features.core.file_lock`'s
    (flock on ``.registry.csv.lock`` beside the file written, its folder created if missing),
    not the registry folder's: ``assign`` reads a scores file, whose check may wait for that
    folder's lock, while it holds this one.

    Raises:
        PartnerscoreError: The folder cannot be created (one line naming it).
    """
    target = write_target(reg_path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PartnerscoreError(f"{reg_path}: cannot write: {exc.strerror or exc}") from exc
    with file_lock(target):
        yield


def registry_path(config: AppConfig, registry: str | Path | None) -> Path:
    """The experiment registry file: ``registry`` or ``<data_dir>/experiments/registry.csv``."""
    if registry is not None:
        return Path(registry)
    return Path(config.paths.data_dir) / "experiments" / "registry.csv"


# ------------------------------------------------------------------------------------ assign ---
@dataclass
class AssignResult:
    """What ``run_assign`` wrote."""

    out: Path
    registry: Path
    experiment: str
    arms: dict[str, int]
    strata: int
    assigned_at: pd.Timestamp
    unchanged: bool = False

    def summary(self) -> str:
        """Arm counts, strata and where the table and registry are."""
        arms = ", ".join(f"{a} {n:,}" for a, n in self.arms.items())
        # the table is written either way (again, or for the first time after a run killed
        # between the registry and the table): only the registry is as it was
        same = " (identical to the running assignment: registry unchanged)"
        note = same if self.unchanged else ""
        return "\n".join(
            [
                f"experiment '{self.experiment}': {sum(self.arms.values()):,} partners in "
                f"{self.strata} strata -> {arms}; assigned at {self.assigned_at:%Y-%m-%d %H:%M}"
                f"{note}",
                f"  wrote {self.out}",
                f"  registry {self.registry}",
            ]
        )


def run_assign(
    scores: str | Path,
    name: str,
    arms: tuple[str, ...],
    out: str | Path,
    config: AppConfig,
    fraction: float = 0.5,
    stratify: tuple[str, ...] = ("tier", "quadrant"),
    seed: int = 0,
    assigned_at: pd.Timestamp | None = None,
    registry: str | Path | None = None,
) -> AssignResult:
    """The ``experiment assign`` job: stratified, seeded randomisation of a scores file.

    Args:
        scores: Scores file written by ``partnerscore score`` (the pre-period scores).
        name: Experiment name.
        arms: Arm names, control first.
        out: Assignment table to write (.csv or .parquet).
        config: Application config (``paths.data_dir`` locates the default registry).
        fraction: Share of partners in the treatment arms together.
        stratify: Scores-file columns whose values define the strata (empty: one stratum).
        seed: Randomisation seed.
        assigned_at: Assignment instant; default the scores' as_of (outcomes count from there).
        registry: Registry file of running experiments (default under ``data_dir``).

    Returns:
        Counts and paths.
    """
    from partnerscore.serving.report import read_scores

    name = str(name).strip()
    if not name:
        raise OptionError("--name: the experiment name must not be empty")
    shares = arm_shares(arms, fraction)
    out = Path(out)
    frame_format(out)
    reg_path = registry_path(config, registry)
    frame_format(reg_path)
    _refuse_shared_registry(reg_path, registry, {"--out": (out, False), "--scores": (scores, True)})
    with registry_lock(reg_path):  # read, checked and written back by one run at a time
        reg = _read_registry(reg_path)  # a bad registry is said before any work
        scores = Path(scores)
        frame = read_scores(scores)
        as_of = pd.to_datetime(frame["as_of"]).max()
        when = as_of if assigned_at is None else pd.Timestamp(assigned_at)
        if when.tzinfo is not None:  # in UTC, zone dropped, as every as_of is read (it was exit 70:
            when = when.tz_convert("UTC").tz_localize(None)  # "Cannot compare tz-naive and ...")
        if when < as_of:
            raise PartnerscoreError(
                f"--assigned-at {when:%Y-%m-%d}: before the scores' as_of {as_of:%Y-%m-%d} "
                "(the pre-period score would see outcomes)"
            )
        strata = stratum_keys(frame, stratify, source=str(scores))
        ids = frame["partner_id"].astype(str).to_numpy()
        arm = assign_arms(ids, strata, arms, fraction, seed, salt=name)
        table = pd.DataFrame(
            {
                "experiment": name,
                "partner_id": ids,
                "arm": arm,
                "stratum": strata,
                "assigned_at": when,
                "target_share": [shares[a] for a in arm],
                "seed": int(seed),
                "pre_as_of": pd.to_datetime(frame["as_of"]).to_numpy(),
            }
        )
        for col in PRE_COLUMNS:
            if col in frame.columns:
                table[f"pre_{col}"] = frame[col].to_numpy()
        for col in frame.columns:
            if get_spec(col) is not None and f"pre_{col}" not in table:
                table[f"pre_{col}"] = frame[col].to_numpy()
        table = table.sort_values("partner_id", kind="stable").reset_index(drop=True)

        running = reg[(reg["experiment"] == name) & (reg["status"] == "running")]
        new_rows = pd.DataFrame(
            {
                "experiment": name,
                "partner_id": table["partner_id"],
                "arm": table["arm"],
                "stratum": table["stratum"],
                "assigned_at": _registry_dates(reg, table["assigned_at"]),
                "seed": int(seed),
                "status": "running",
                "assignment_file": str(out.resolve()),
            }
        )
        unchanged = False
        if len(running):
            prior = running.set_index("partner_id")
            overlap = new_rows[new_rows["partner_id"].isin(prior.index)]
            same = (
                len(overlap) == len(new_rows) == len(prior)
                and (
                    overlap["arm"].to_numpy() == prior.loc[overlap["partner_id"], "arm"].to_numpy()
                ).all()
                and (  # as dates: a registry's hand-written "2026-03-01" is 00:00:00's
                    table.loc[overlap.index, "assigned_at"].to_numpy()
                    == as_of_dates(reg_path, prior, "assigned_at")
                    .loc[overlap["partner_id"]]
                    .to_numpy()
                ).all()
            )
            if same:
                unchanged = True
            elif len(overlap):
                pid = overlap["partner_id"].iloc[0]
                was = prior.loc[pid]
                raise PartnerscoreError(
                    f"partner '{pid}' is already in running experiment '{name}' (arm {was['arm']}, "
                    f"assigned {str(was['assigned_at'])[:10]}, {len(overlap):,} partners overlap; "
                    f"registry {reg_path}): use another --name or `partnerscore experiment stop "
                    f"--name {name}` first"
                )
        stamp = "%Y-%m-%d %H:%M:%S"
        written = table.assign(
            assigned_at=table["assigned_at"].dt.strftime(stamp),
            pre_as_of=pd.to_datetime(table["pre_as_of"]).dt.strftime(stamp),
        )
        # the table is staged (a full disk or a read-only folder stops the run here, nothing
        # changed), the registry written, the table renamed in last: killed between the two
        # (SIGKILL, out of memory), the partners are protected with no table yet, and the
        # identical run again finds them running (unchanged) and writes the table, while another
        # assignment of them is refused. The table first left partners assigned that the
        # registry did not protect (until 2026-12-06)
        staged = stage_frames([(written, out)])
        try:
            if not unchanged:
                write_frame_atomic(pd.concat([reg, new_rows], ignore_index=True), reg_path)
        except BaseException:
            discard_staged(staged)
            raise
        publish_staged(staged)
    counts = table["arm"].value_counts()
    return AssignResult(
        out=out,
        registry=reg_path,
        experiment=name,
        arms={a: int(counts.get(a, 0)) for a in arms},
        strata=int(pd.Series(strata).nunique()),
        assigned_at=when,
        unchanged=unchanged,
    )


@dataclass
class StopResult:
    """What ``run_stop`` changed."""

    registry: Path
    experiment: str
    stopped: int

    def summary(self) -> str:
        """One line."""
        return (
            f"experiment '{self.experiment}' stopped: {self.stopped:,} partners released "
            f"({self.registry})"
        )


def run_stop(name: str, config: AppConfig, registry: str | Path | None = None) -> StopResult:
    """Mark a running experiment stopped in the registry (its partners may be assigned again)."""
    reg_path = registry_path(config, registry)
    with registry_lock(reg_path):
        reg = _read_registry(reg_path)
        hit = (reg["experiment"] == name) & (reg["status"] == "running")
        if not hit.any():
            raise PartnerscoreError(f"--name: no running experiment '{name}' in {reg_path}")
        reg.loc[hit, "status"] = "stopped"
        write_frame_atomic(reg, reg_path)
    return StopResult(registry=reg_path, experiment=name, stopped=int(hit.sum()))


# ----------------------------------------------------------------------------------- analyze ---
def default_milestones(horizon: int, period: int = 30) -> tuple[int, ...]:
    """Every 30 days up to the horizon from the engagement ``period`` on, and the horizon.

    A milestone shorter than the period would make its engagement label "any qualifying
    touchpoint" (:func:`check_milestones_hold_a_period`).
    """
    days = [day for day in range(30, horizon, 30) if day >= period]
    return tuple([*days, horizon])


def experiment_outcomes(
    tables: dict[str, pd.DataFrame],
    assignment: pd.DataFrame,
    horizon: int,
    milestones: tuple[int, ...],
    build: BuildConfig,
) -> pd.DataFrame:
    """Outcomes per assigned partner, by the label rules with ``as_of = assigned_at``.

    Args:
        tables: Clean raw tables.
        assignment: Assignment rows (partner_id, arm, stratum, assigned_at, optional pre_score).
        horizon: Outcome window in days.
        milestones: Shorter windows for the trajectory.
        build: Engagement rule (periods, share, touchpoints).

    Returns:
        ``OUTCOME_COLUMNS`` (one ``revenue_d<N>``/``engaged_d<N>`` pair per milestone).
    """
    from partnerscore.features.pipeline import build_labels

    snaps = pd.DataFrame(
        {
            "partner_id": assignment["partner_id"].astype(str).to_numpy(),
            "as_of": pd.to_datetime(assignment["assigned_at"]).to_numpy(),
        }
    )

    def labels(days: int, shift_days: int = 0) -> pd.DataFrame:
        rule = build.model_copy(update={"horizon_days": int(days)})
        frame = snaps.assign(as_of=snaps["as_of"] - pd.Timedelta(days=shift_days))
        return build_labels(tables, frame, rule)

    post = labels(horizon)
    pre = labels(horizon, shift_days=horizon)
    pre_score = (
        pd.to_numeric(assignment["pre_score"], errors="coerce").to_numpy()
        if "pre_score" in assignment
        else np.full(len(assignment), np.nan)
    )
    out = pd.DataFrame(
        {
            "partner_id": snaps["partner_id"].to_numpy(),
            "arm": assignment["arm"].astype(str).to_numpy(),
            "stratum": assignment["stratum"].astype(str).to_numpy(),
            "assigned_at": snaps["as_of"].to_numpy(),
            "revenue": post["label_revenue"].to_numpy(),
            "engaged": post["label_engaged"].to_numpy(),
            "pre_revenue": pre["label_revenue"].to_numpy(),
            "pre_engaged": pre["label_engaged"].to_numpy(),
            "pre_score": pre_score,
        }
    )
    for day in milestones:
        part = post if day == horizon else labels(day)
        out[f"revenue_d{day}"] = part["label_revenue"].to_numpy()
        out[f"engaged_d{day}"] = part["label_engaged"].to_numpy()
    return out


def _effect_row(arm: str, outcome: str, stratum: str, day: int, est: Estimate) -> dict:
    row = {"arm": arm, "outcome": outcome, "stratum": stratum, "day": int(day)}
    data = est.to_dict()
    row.update({k: data.get(k) for k in EFFECT_COLUMNS if k not in row})
    return row


def estimate_effects(
    outcomes: pd.DataFrame,
    control: str,
    covariates: list[str],
    horizon: int,
    milestones: tuple[int, ...],
    alpha: float = DEFAULT_ALPHA,
    n_boot: int = 2000,
    seed: int = 0,
    bootstrap_method: str = "basic",
) -> list[dict]:
    """Every effect row of an experiment's outcomes.

    Per treatment arm and outcome: overall at the horizon (Welch, adjusted, and the bootstrap
    for revenue), per stratum (Welch and adjusted) and at each milestone (Welch).

    Returns:
        Rows with ``EFFECT_COLUMNS``.
    """
    rows = []
    arms = [a for a in sorted(outcomes["arm"].unique()) if a != control]
    for arm in arms:
        sub = outcomes[outcomes["arm"].isin([arm, control])]
        for stratum, part in [("all", sub), *sorted(sub.groupby("stratum", sort=True))]:
            if stratum != "all" and outcomes["stratum"].nunique() < 2:
                continue
            d = (part["arm"] == arm).to_numpy().astype(int)
            x = part[covariates].to_numpy(dtype=float)
            for outcome in ("revenue", "engaged"):
                y = part[outcome].to_numpy(dtype=float)
                ests = [
                    welch_difference(y[d == 1], y[d == 0], alpha),
                    adjusted_difference(y, d, x, alpha),
                ]
                if outcome == "revenue" and stratum == "all":
                    ests.append(
                        bootstrap_difference(
                            y[d == 1],
                            y[d == 0],
                            alpha,
                            n_resamples=n_boot,
                            seed=seed,
                            method=bootstrap_method,
                        )
                    )
                rows += [_effect_row(arm, outcome, str(stratum), horizon, e) for e in ests]
        d = (sub["arm"] == arm).to_numpy()
        for day in milestones:
            if day == horizon:
                continue
            for outcome in ("revenue", "engaged"):
                y = sub[f"{outcome}_d{day}"].to_numpy(dtype=float)
                est = welch_difference(y[d], y[~d], alpha)
                rows.append(_effect_row(arm, outcome, "all", day, est))
    return rows


def history_store_url(history: str) -> str:
    """The database URL of ``--history``: a URL as it is, a SQLite file checked first.

    The file must be a score history (the score job's SQLite store): one line beginning with
    the path when it is missing, a folder, empty, no SQLite database (a CSV, Parquet or junk)
    or a SQLite database without the history's table. Opening the store (SQLAlchemy) said
    ``score history sqlite:////abs/path: file is not a database`` after the whole analysis,
    without the option, and wrote the history's empty table into an empty file or another
    database. The file is opened read-only here.

    Raises:
        PartnerscoreError: ``h.sqlite: not a SQLite database (file is not a database)``.
    """
    import contextlib
    import sqlite3

    from partnerscore.serving.history import LEGACY_TABLE, SQLITE_BUSY_SECONDS, TABLE

    if "://" in history:
        return history
    path = existing_file(history, "score history file")
    if path.stat().st_size == 0:
        raise PartnerscoreError(f"{path}: empty file (no score history)")
    try:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        # a score job committing to the file: waited as long as the stores wait (pysqlite's
        # own 5 s until 2026-12-07: "database is locked")
        with contextlib.closing(
            sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_SECONDS)
        ) as conn:
            tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error as exc:
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        if "not a database" in detail:
            raise PartnerscoreError(f"{path}: not a SQLite database ({detail})") from None
        raise PartnerscoreError(f"{path}: cannot read score history: {detail}") from None
    if not tables & {TABLE, LEGACY_TABLE}:
        raise PartnerscoreError(
            f"{path}: no score history in this SQLite database (no table {TABLE})"
        )
    return f"sqlite:///{path.resolve()}"


def _shown_history(history: str) -> str:
    """``--history`` as messages and results show it: a database URL's password masked."""
    from partnerscore.models.model_uri import shown_uri

    return shown_uri(history) if "://" in history else history  # a file path as given


@contextmanager
def _named_history(history: str):
    """The store's errors (``score history <URL>: <detail>``) said as ``--history``'s."""
    try:
        yield
    except PartnerscoreError as exc:
        shown = _shown_history(history)
        detail = exc.message.split(": ", 1)[-1] if exc.message.startswith("score history ") else ""
        if not detail:
            raise
        raise PartnerscoreError(f"--history {shown}: {detail}", exc.exit_code) from exc


def open_history(history: str) -> ScoreHistory:
    """``--history``'s store, opened (connected) before the analysis, its errors named.

    A database URL that cannot be reached said ``score history postgresql://...: failed to
    resolve host`` after the whole analysis and bootstrap; now ``--history postgresql://...:
    failed to resolve host ...`` before them.
    """
    from partnerscore.serving.history import ScoreHistory

    url = history_store_url(history)
    store = ScoreHistory(url)
    with _named_history(history):
        if store.exists():
            _ = store.engine
    return store


def _score_history(
    store: ScoreHistory, history: str, assignment: pd.DataFrame, control: str, alpha: float
) -> tuple[list[dict], list[dict]]:
    """Score trajectory per arm from the history store, by days since assignment.

    ``store``: :func:`open_history`'s, of ``--history`` ``history``.
    """
    if not store.exists():
        raise PartnerscoreError(f"--history: no score history at {history}")
    with _named_history(history):
        hist = store.read(assignment["partner_id"].astype(str).tolist())
    if hist.empty:
        return [], []
    hist["partner_id"] = hist["partner_id"].astype(str)
    hist = hist.merge(assignment[["partner_id", "arm", "assigned_at"]], on="partner_id")
    delta = pd.to_datetime(hist["as_of"]) - pd.to_datetime(hist["assigned_at"])
    hist["day"] = np.floor(delta / pd.Timedelta(days=1)).astype(int)
    hist["score"] = pd.to_numeric(hist["score"], errors="coerce")
    hist = hist[hist["score"].notna()]
    traj, effects = [], []
    for (day, arm), part in hist.groupby(["day", "arm"], sort=True):
        traj.append(
            {
                "arm": arm,
                "outcome": "score",
                "day": int(day),
                "n": len(part),
                "mean": float(part["score"].mean()),
            }
        )
    for day, part in hist[hist["day"] >= 0].groupby("day", sort=True):
        y_c = part.loc[part["arm"] == control, "score"].to_numpy()
        for arm in sorted(set(part["arm"]) - {control}):
            y_t = part.loc[part["arm"] == arm, "score"].to_numpy()
            est = welch_difference(y_t, y_c, alpha)
            effects.append(_effect_row(arm, "score", "all", int(day), est))
    return traj, effects


@dataclass
class AnalyzeResult:
    """What ``run_analyze`` wrote and found."""

    out_dir: Path
    files: dict[str, Path]
    results: dict
    seconds: float = 0.0
    mlflow_run_id: str | None = None
    interrupted_publish: LeftPublish | None = None
    """An earlier analysis's publish into ``out_dir`` killed between its renames (None: none),
    found before this run wrote there and replaced by its files (:func:`left_publish`)."""

    def headline(self) -> list[dict]:
        """Overall effects at the horizon by :data:`HEADLINE_METHOD` (rows name their method)."""
        return self._overall(HEADLINE_METHOD)

    def _overall(self, method: str) -> list[dict]:
        return horizon_effects(self.results, method)

    def json_payload(self) -> dict:
        """``--json``: the fields plus ``headline`` (the summary's effects, with their method)."""
        from partnerscore.serving.cli_common import jsonable

        payload = jsonable(self)
        payload["headline_method"] = HEADLINE_METHOD
        payload["headline"] = jsonable(self.headline())
        return payload

    def summary(self) -> str:
        """Arms, the sample-ratio check, headline effects (named by method; Welch's too), files."""
        r = self.results
        srm = r["sample_ratio"]
        arms = ", ".join(f"{a} {n:,}" for a, n in srm["observed"].items())
        lines = [
            f"experiment '{r['experiment']}' ({arms}) over {r['horizon_days']} days "
            f"after assignment ({self.seconds:.1f} s)",
            f"  sample ratio: chi2 {srm['chi2']:.2f}, p {srm['p_value']:.3g}"
            + ("  MISMATCH: randomisation or data loss is suspect" if srm["mismatch"] else " ok"),
        ]
        welch = {(e["arm"], e["outcome"]): e for e in self._overall("welch")}
        for e in self.headline():
            fmt = _money_text if e["outcome"] == "revenue" else _points_text
            plain = welch.get((e["arm"], e["outcome"]))
            lines.append(
                f"  {e['arm']} vs {r['control_arm']}: {e['outcome']} {fmt(e['effect'])} "
                f"[{fmt(e['ci_low'])}, {fmt(e['ci_high'])}] {_METHOD_NAMES[e['method']]}"
                + (" significant" if e["significant"] else "")
                + (f"; welch {fmt(plain['effect'])}" if plain is not None else "")
            )
        lines += [f"  wrote {p}" for p in self.files.values()]
        if self.mlflow_run_id:
            lines.append(f"  MLflow run {self.mlflow_run_id}")
        return "\n".join(lines)


def _money_text(v) -> str:
    if v is None or not math.isfinite(float(v)):
        return "–"
    return f"-${-v:,.0f}" if v < 0 else f"+${v:,.0f}"


def _points_text(v) -> str:
    if v is None or not math.isfinite(float(v)):
        return "–"
    return f"{v * 100:+.1f} pts"


def check_horizon_holds_a_period(build: BuildConfig, horizon: int) -> None:
    """Stop when ``--horizon`` is shorter than ``build.engagement_period_days``.

    Such a horizon is one period cut at its end: ``engaged`` would be "any qualifying
    touchpoint in the horizon" (:func:`~partnerscore.features.config.engagement_period_conflict`).

    Raises:
        OptionError: One line naming both settings and values.
    """
    update = {"horizon_days": int(horizon)}
    conflict = engagement_period_conflict(build.model_copy(update=update), horizon="--horizon")
    if conflict is not None:
        raise OptionError(conflict)


def check_milestones_hold_a_period(build: BuildConfig, milestones: tuple[int, ...]) -> None:
    """Stop at the first milestone shorter than ``build.engagement_period_days``.

    As a horizon (:func:`check_horizon_holds_a_period`), such a milestone is one period cut
    at its end: ``engaged_d<N>`` would be "any qualifying touchpoint in the N days", the
    trajectory's first points a different label from the horizon's.

    Raises:
        OptionError: One line naming the milestone and the engagement period.
    """
    period = build.engagement_period_days
    short = [day for day in milestones if day < period]
    if short:
        raise OptionError(
            f"build.engagement_period_days {period} is longer than --milestones day {short[0]}: "
            f"engaged_d{short[0]} would be one period cut at the milestone (any qualifying "
            f"touchpoint in it); give milestones of at least {period} days"
        )


def run_analyze(
    assignments: str | Path,
    raw_dir: str | Path,
    horizon: int,
    out_dir: str | Path,
    config: AppConfig,
    name: str | None = None,
    control: str = "control",
    history: str | None = None,
    milestones: tuple[int, ...] | None = None,
    alpha: float = DEFAULT_ALPHA,
    n_boot: int = 2000,
    seed: int = 0,
    log_mlflow: bool = False,
) -> AnalyzeResult:
    """The ``experiment analyze`` job.

    Args:
        assignments: Assignment table (from ``experiment assign`` or the simulator).
        raw_dir: Raw tables holding the outcomes.
        horizon: Outcome window after assigned_at, in days; must be complete in the raw data
            and at least the config's ``build.engagement_period_days`` (a shorter one made
            ``engaged`` "any qualifying touchpoint in the horizon").
        out_dir: Output folder (results.json, effects.csv, outcomes.csv, report.html).
        config: Application config (engagement rule, MLflow store).
        name: Experiment to analyse when the table holds several.
        control: The control arm's name.
        history: Score-history database URL or SQLite file for the score trajectory.
        milestones: Trajectory days (default every 30 days from the engagement period on, and
            the horizon); none may be shorter than ``build.engagement_period_days``.
        alpha: 1 - confidence level.
        n_boot: Bootstrap resamples.
        seed: Bootstrap seed.
        log_mlflow: Log parameters, headline metrics and the files to MLflow.

    Returns:
        Files, the results dictionary and the MLflow run id.
    """
    from partnerscore.features.core import file_fingerprint
    from partnerscore.features.validate import load_raw, supported_end

    started = time.perf_counter()
    check_day_count("--horizon", horizon, low=1)
    check_horizon_holds_a_period(config.build, horizon)
    if not 0 < alpha < 1:
        raise OptionError(f"--alpha: expected a level between 0 and 1, got {alpha}")
    if n_boot < 1:
        raise OptionError(f"--bootstrap: expected a positive number of resamples, got {n_boot}")
    if seed < 0:  # numpy's generators take no negative seed
        raise OptionError(f"--seed {seed}: expected 0 or more")
    period = config.build.engagement_period_days
    milestones = tuple(sorted(set(milestones or default_milestones(horizon, period)) | {horizon}))
    if milestones[0] < 1 or milestones[-1] > horizon:
        raise OptionError(f"--milestones: days must be between 1 and the horizon {horizon}")
    check_milestones_hold_a_period(config.build, milestones)
    store = open_history(history) if history else None  # before the analysis
    assignments = Path(assignments)
    table = read_assignments(assignments)
    names = sorted(table["experiment"].unique())
    if name is None and len(names) > 1:
        raise PartnerscoreError(
            f"{assignments}: holds experiments {', '.join(names)}: choose one with --name"
        )
    name = name or names[0]
    if name not in names:
        raise PartnerscoreError(f"--name: no experiment '{name}' in {assignments}")
    table = table[table["experiment"] == name].reset_index(drop=True)
    arms = sorted(table["arm"].unique())
    if control not in arms:
        raise PartnerscoreError(
            f"--control: unknown arm '{control}' (arms in {assignments}: {', '.join(arms)})"
        )
    if len(arms) < 2:
        raise PartnerscoreError(f"{assignments}: experiment '{name}' has only the arm '{control}'")

    raw = load_raw(raw_dir, write_quarantine=False)
    known = set(raw.tables["partners"]["partner_id"].astype(str))
    unknown = ~table["partner_id"].isin(known)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise PartnerscoreError(
            f"{assignments}: row {row + 1}: partner_id {quoted(table['partner_id'].iloc[row])} "
            f"is not in the partners table of {raw_dir}"
        )
    # a few partners' late rows (a late tail) do not complete anyone else's horizon
    data_end = supported_end(raw.data_end, raw.late_tail)
    last = pd.to_datetime(table["assigned_at"]).max()
    if last + pd.Timedelta(days=horizon) > data_end:
        tail = "" if raw.late_tail is None else f" (a late tail aside: {raw.late_tail.note()})"
        covered = (data_end - last) // pd.Timedelta(days=1)  # whole days of outcomes in the data
        if covered < 1:  # no horizon fits: "a shorter --horizon" would be no help
            raise PartnerscoreError(
                f"{assignments}: the latest assigned_at, {last:%Y-%m-%d}, is not a day before "
                f"the end of the data in {raw_dir} ({data_end:%Y-%m-%d}){tail}: no outcomes to "
                "analyse yet; run it on raw data that covers the horizon"
            )
        if covered < period:  # every horizon that fits is refused as shorter than the period
            raise PartnerscoreError(
                f"{assignments}: the latest assigned_at, {last:%Y-%m-%d}, is {covered} "
                f"day{'s' if covered > 1 else ''} before the end of the data in {raw_dir} "
                f"({data_end:%Y-%m-%d}){tail}, fewer than build.engagement_period_days "
                f"{period}, the shortest --horizon: run it on raw data that covers the horizon"
            )
        raise PartnerscoreError(
            f"--horizon {horizon}: the data ends {data_end:%Y-%m-%d}{tail}, before the horizon "
            f"of the assignment at {last:%Y-%m-%d} is complete (use --horizon {covered} or less)"
        )
    outcomes = experiment_outcomes(raw.tables, table, horizon, milestones, config.build)
    covariates = ["pre_revenue", "pre_engaged"]
    if outcomes["pre_score"].notna().all():
        covariates.append("pre_score")

    shares = table.groupby("arm")["target_share"].first().to_dict()
    observed = outcomes["arm"].value_counts().to_dict()
    srm = sample_ratio_mismatch(observed, shares)
    effects = estimate_effects(
        outcomes, control, covariates, horizon, milestones, alpha=alpha, n_boot=n_boot, seed=seed
    )
    trajectory = []
    for arm, part in outcomes.groupby("arm", sort=True):
        for day in milestones:
            for outcome in ("revenue", "engaged"):
                col = f"{outcome}_d{day}"
                trajectory.append(
                    {
                        "arm": arm,
                        "outcome": outcome,
                        "day": int(day),
                        "n": len(part),
                        "mean": float(part[col].mean()),
                    }
                )
    inputs = {
        "assignments": str(assignments.resolve()),
        "assignments_sha256": file_fingerprint(assignments),
        "raw_dir": str(Path(raw_dir).resolve()),
        "raw_fingerprints": dict(sorted(raw.fingerprints.items())),
        # a database URL's password masked: results.json and report.html carried it as given
        "history": _shown_history(history) if history else history,
    }
    if history:
        score_traj, score_effects = _score_history(store, history, table, control, alpha)
        trajectory += score_traj
        effects += score_effects
    results = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "experiment": name,
        "control_arm": control,
        "arms": arms,
        "assigned_at_min": f"{pd.to_datetime(table['assigned_at']).min():%Y-%m-%d %H:%M:%S}",
        "assigned_at_max": f"{last:%Y-%m-%d %H:%M:%S}",
        "horizon_days": int(horizon),
        "milestones": list(milestones),
        "alpha": float(alpha),
        "data_end": f"{data_end:%Y-%m-%d %H:%M:%S}",
        "covariates": covariates,
        "sample_ratio": srm.to_dict(),
        "effects": effects,
        "trajectory": trajectory,
        "inputs": inputs,
    }
    out_dir = Path(out_dir)
    left = left_publish(out_dir / "results.json", "experiment analyze")  # before any write there
    effects_frame = pd.DataFrame(effects, columns=list(EFFECT_COLUMNS))
    outcome_file = outcomes.assign(
        assigned_at=pd.to_datetime(outcomes["assigned_at"]).dt.strftime("%Y-%m-%d %H:%M:%S")
    )
    # results.json is renamed last and lists the others' SHA-256: killed between two renames,
    # the job left one analysis's files beside another's (each renamed as soon as written)
    staged = stage_frames(
        [(effects_frame, out_dir / "effects.csv"), (outcome_file, out_dir / "outcomes.csv")]
    )
    try:
        staged.append(stage_text(render_report(results), out_dir / "report.html"))
    except BaseException:
        discard_staged(staged)
        raise
    effects_path, outcomes_path, report_path, results_path = publish_listed(
        staged, results, out_dir / "results.json", indent=2, allow_nan=False
    )
    results["files"] = json.loads(results_path.read_text(encoding="utf-8"))["files"]
    files = {
        "results": results_path,
        "effects": effects_path,
        "outcomes": outcomes_path,
        "report": report_path,
    }
    result = AnalyzeResult(
        out_dir=out_dir,
        files=files,
        results=results,
        seconds=time.perf_counter() - started,
        interrupted_publish=left,
    )
    if log_mlflow:
        result.mlflow_run_id = _log_mlflow(result, config)
    return result


def _log_mlflow(result: AnalyzeResult, config: AppConfig) -> str:
    import mlflow

    from partnerscore.training.tracking import setup_tracking

    r = result.results
    exp_id = setup_tracking(
        config.paths.tracking_uri(), EXPERIMENT_TRACKING, config.paths.artifact_root()
    )
    with mlflow.start_run(experiment_id=exp_id, run_name=r["experiment"]) as run:
        mlflow.log_params(
            {
                "experiment": r["experiment"],
                "control_arm": r["control_arm"],
                "arms": ",".join(r["arms"]),
                "horizon_days": r["horizon_days"],
                "alpha": r["alpha"],
                "covariates": ",".join(r["covariates"]),
                "assigned_at_max": r["assigned_at_max"],
            }
        )
        metrics = {
            "srm_p_value": r["sample_ratio"]["p_value"],
            "srm_chi2": r["sample_ratio"]["chi2"],
        }
        for e in r["effects"]:
            if e["stratum"] != "all" or e["day"] != r["horizon_days"]:
                continue
            key = f"{e['arm']}.{e['outcome']}.{e['method']}"
            for field_name in ("effect", "ci_low", "ci_high"):
                if e[field_name] is not None:
                    metrics[f"{key}.{field_name}"] = e[field_name]
        mlflow.log_metrics({_metric_name(k): v for k, v in metrics.items()})
        for path in result.files.values():
            mlflow.log_artifact(str(path))
        return run.info.run_id


def _metric_name(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in key)


# ------------------------------------------------------------------------------------ report ---
ARM_CLASSES = ("line2", "line", "line3")  # control dashed amber, first treatment solid blue


def arms_line_svg(
    xs: list[float],
    series: dict[str, list[float]],
    fmt,
    x_label: str = "day",
    width: int = 500,
    height: int = 200,
    what: str = "",
) -> Markup:
    """Line chart of one outcome's mean per arm over days since assignment (any scale).

    Args:
        xs: Days since assignment.
        series: Arm -> mean per day (NaN skipped); the first is drawn as the control.
        fmt: Value -> axis/tooltip text.
        x_label: Prefix of the x tick labels.
        width: Width in pixels.
        height: Height in pixels.
        what: What the chart shows (plain text; empty: no accessible name), followed in its
            name by the days and each arm's first and last mean.

    Returns:
        An escaped ``<svg>`` fragment with a legend, styled by report.css.
    """
    from partnerscore.serving.report import chart_frame, line_chart

    pad_l = 62
    values = [v for vals in series.values() for v in vals if math.isfinite(v)]
    lo = min([0.0, *values]) if values else 0.0
    hi = max(values) if values else 1.0
    hi = hi if hi > lo else lo + 1.0
    scale = (lo, hi)
    frame = chart_frame(width, height, pad_l, scale, [(t, fmt(t)) for t in (lo, (lo + hi) / 2, hi)])
    label = ""
    if what:
        arms = [
            f"{arm}{' (control)' if i == 0 and arm != 'control' else ''} "
            f"{fmt(shown[0])} to {fmt(shown[-1])}"
            for i, (arm, vals) in enumerate(series.items())
            if (shown := [v for v in vals if math.isfinite(v)])
        ]
        label = f"{what}, {x_label} {min(xs):.0f} to {x_label} {max(xs):.0f}" + (
            f": {'; '.join(arms)}" if arms else ""
        )
    return line_chart(
        frame, xs, series, ARM_CLASSES, width, height, pad_l, scale, fmt, x_label, label=label
    )


def interval_label(rows: list[dict], fmt, what: str) -> str:
    """An interval chart's accessible name: ``what``, then each row's effect and interval."""
    shown = [
        f"{r['arm']} {_METHOD_NAMES.get(r['method'], r['method'])} {fmt(r['effect'])} "
        f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"
        for r in rows
    ]
    return f"{what}: " + "; ".join(shown) if shown else what


def interval_svg(rows: list[dict], fmt, what: str, width: int = 560) -> Markup:
    """Forest plot: one horizontal 95% interval per row, with the point estimate and zero.

    ``what`` (plain text) begins the chart's accessible name; every row's effect follows.
    """
    from partnerscore.serving.report import _esc

    finite = [r for r in rows if r["ci_low"] is not None and r["ci_high"] is not None]
    label_w, row_h = 200, 24
    height = max(len(rows), 1) * row_h + 24
    lo = min([0.0, *(r["ci_low"] for r in finite)])
    hi = max([0.0, *(r["ci_high"] for r in finite)])
    hi = hi if hi > lo else lo + 1.0
    bar_w = width - label_w - 20

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * bar_w

    parts = [
        f'<svg class="intervals" role="img" '
        f'aria-label="{_esc(interval_label(rows, fmt, what))}" '
        f'width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<line class="axis" x1="{x(0):.1f}" y1="4" x2="{x(0):.1f}" y2="{height - 18}"/>',
        f'<text x="{x(0):.1f}" y="{height - 4}" text-anchor="middle">0</text>',
        f'<text x="{width - 4}" y="{height - 4}" text-anchor="end">{escape(fmt(hi))}</text>',
    ]
    if lo < 0 and x(0) - label_w > 40:
        parts.append(f'<text x="{label_w}" y="{height - 4}">{escape(fmt(lo))}</text>')
    for i, r in enumerate(rows):
        y = 12 + i * row_h
        label = f"{r['arm']} · {_METHOD_NAMES.get(r['method'], r['method'])}"
        parts.append(f'<text x="4" y="{y + 4}">{escape(label)}</text>')
        if r["ci_low"] is None or r["ci_high"] is None:
            continue
        cls = "pos" if r["ci_low"] > 0 else "neg" if r["ci_high"] < 0 else "base"
        tip = f"{label}: {fmt(r['effect'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"
        parts.append(
            f'<rect class="{cls}" x="{x(r["ci_low"]):.1f}" y="{y - 3}" '
            f'width="{max(x(r["ci_high"]) - x(r["ci_low"]), 1):.1f}" height="6">'
            f"<title>{escape(tip)}</title></rect>"
            f'<circle cx="{x(r["effect"]):.1f}" cy="{y}" r="4" class="line"/>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


_OUTCOME_NAMES = {"revenue": "revenue", "engaged": "engagement"}


def _fmt_value(outcome: str):
    if outcome == "revenue":
        return lambda v: "–" if v is None else f"${v:,.0f}"
    if outcome == "engaged":
        return lambda v: "–" if v is None else f"{v:.0%}"
    return lambda v: "–" if v is None else f"{v:.1f}"


def _fmt_effect(outcome: str):
    if outcome == "revenue":
        return _money_text
    if outcome == "engaged":
        return _points_text
    return lambda v: "–" if v is None else f"{v:+.1f}"


def render_report(results: dict) -> str:
    """The experiment page: self-contained HTML with inline SVG and the reports' stylesheet."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader(__package__, "templates"),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
    )
    css = (HERE / "static" / "report.css").read_text(encoding="utf-8")
    control = results["control_arm"]
    arms = [control, *[a for a in results["arms"] if a != control]]
    effects = results["effects"]
    # the summary's headline (HEADLINE_METHOD, overall and per stratum), Welch's beside it
    welch = {
        (e["arm"], e["outcome"], e["stratum"]): e
        for e in horizon_effects(results, "welch", stratum="all")
        + horizon_effects(results, "welch", stratum=None)
    }

    def beside(e: dict, fmt) -> dict:
        """Welch's effect and interval for the row's arm, outcome and stratum ('–': none)."""
        plain = welch.get((e["arm"], e["outcome"], e["stratum"]))
        if plain is None:
            return {"welch": "–", "welch_ci": "–"}
        ci = f"[{fmt(plain['ci_low'])}, {fmt(plain['ci_high'])}]"
        return {"welch": fmt(plain["effect"]), "welch_ci": ci}

    overall = horizon_effects(results, HEADLINE_METHOD)
    headline = []
    for outcome in ("revenue", "engaged"):
        rows = [e for e in overall if e["outcome"] == outcome]
        fmt = _fmt_effect(outcome)
        # the plot: the headline's interval first, then every other method's, per arm
        others = [
            e
            for method in _METHOD_NAMES
            if method != HEADLINE_METHOD
            for e in horizon_effects(results, method)
            if e["outcome"] == outcome
        ]
        plotted = sorted([*rows, *others], key=lambda e: (e["arm"], e["method"] != HEADLINE_METHOD))
        headline.append(
            {
                "outcome": outcome,
                "svg": interval_svg(
                    plotted,
                    fmt,
                    f"Effect on {_OUTCOME_NAMES[outcome]} against {control}, 95% intervals",
                ),
                "rows": [
                    {
                        "arm": e["arm"],
                        "method": _METHOD_NAMES[e["method"]],
                        "effect": fmt(e["effect"]),
                        "ci": f"[{fmt(e['ci_low'])}, {fmt(e['ci_high'])}]",
                        "p": "–" if e["p_value"] is None else f"{e['p_value']:.3g}",
                        "significant": e["significant"],
                        **beside(e, fmt),
                        "n": f"{e['n_treatment']:,} / {e['n_control']:,}",
                        "means": f"{_fmt_value(outcome)(e['mean_treatment'])} vs "
                        f"{_fmt_value(outcome)(e['mean_control'])}",
                    }
                    for e in rows
                ],
            }
        )
    charts = []
    titles = {
        "revenue": "Revenue won per partner since assignment",
        "engaged": "Share engaged (label rule over the window)",
        "score": "Composite score (score history; day 0 = assignment)",
    }
    for outcome in ("revenue", "engaged", "score"):
        traj = [t for t in results["trajectory"] if t["outcome"] == outcome]
        if not traj:
            continue
        days = sorted({t["day"] for t in traj})
        series = {}
        for arm in arms:
            by_day = {t["day"]: t["mean"] for t in traj if t["arm"] == arm}
            series[arm] = [by_day.get(d, math.nan) for d in days]
        fmt = _fmt_value(outcome)
        milestone_rows = [
            e
            for e in effects
            if e["outcome"] == outcome and e["stratum"] == "all" and e["method"] == "welch"
        ]
        eff = _fmt_effect(outcome)
        charts.append(
            {
                "id": outcome,
                "title": titles[outcome],
                "svg": arms_line_svg(
                    [float(d) for d in days], series, fmt, what=f"{titles[outcome]}, mean per arm"
                ),
                "rows": [
                    [
                        str(e["day"]),
                        e["arm"],
                        eff(e["effect"]),
                        f"[{eff(e['ci_low'])}, {eff(e['ci_high'])}]",
                    ]
                    for e in sorted(milestone_rows, key=lambda e: (e["day"], e["arm"]))
                ],
            }
        )
    strata = []
    for e in horizon_effects(results, HEADLINE_METHOD, stratum=None):
        fmt = _fmt_effect(e["outcome"])
        secondary = beside(e, fmt)
        strata.append(
            [
                e["stratum"],
                e["arm"],
                e["outcome"],
                f"{e['n_treatment']:,} / {e['n_control']:,}",
                fmt(e["effect"]),
                f"[{fmt(e['ci_low'])}, {fmt(e['ci_high'])}]",
                secondary["welch"],
                secondary["welch_ci"],
            ]
        )
    srm = results["sample_ratio"]
    return env.get_template("experiment.html").render(
        css=Markup(css),
        r=results,
        arms=arms,
        srm=srm,
        srm_rows=[
            [a, f"{srm['observed'].get(a, 0):,}", f"{srm['expected'].get(a, 0):,.1f}"] for a in arms
        ],
        headline=headline,
        headline_method=_METHOD_NAMES[HEADLINE_METHOD],
        charts=charts,
        strata=strata,
    )


# --------------------------------------------------------------------------------------- plan ---
@dataclass
class PlanResult:
    """Minimum detectable effects (or required sizes) for a planned experiment."""

    partners: int
    fraction: float
    alpha: float
    power: float
    revenue_sd: float | None
    revenue_mean: float | None
    base_rate: float | None
    r_squared: float
    mde_revenue: float | None = None
    mde_revenue_adjusted: float | None = None
    mde_engaged: float | None = None
    required: dict = field(default_factory=dict)
    source: str = "given"

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def summary(self) -> str:
        """The MDEs in readable units."""
        n_t = round(self.partners * self.fraction)
        lines = [
            f"plan: {self.partners:,} partners ({n_t:,} treated, {self.partners - n_t:,} control), "
            f"alpha {self.alpha:g}, power {self.power:.0%}; outcome spread {self.source}"
        ]
        if self.mde_revenue is not None and math.isfinite(self.mde_revenue):
            rel = ""
            if self.revenue_mean:
                share = self.mde_revenue / self.revenue_mean
                rel = f" ({share:.0%} of the mean ${self.revenue_mean:,.0f})"
            lines.append(
                f"  revenue: detectable difference ${self.mde_revenue:,.0f} per partner{rel}; "
                f"with covariate adjustment (R² {self.r_squared:.2f}) "
                f"${self.mde_revenue_adjusted:,.0f}"
            )
        if self.mde_engaged is not None and math.isfinite(self.mde_engaged):
            lines.append(
                f"  engagement: detectable lift {self.mde_engaged * 100:.1f} pts from a base rate "
                f"of {self.base_rate:.0%}"
            )
        for key, value in self.required.items():
            lines.append(f"  partners needed to detect {key}: {value:,}")
        return "\n".join(lines)


def outcome_spread(
    raw_dir: str | Path, horizon: int, age: int, build: BuildConfig
) -> tuple[float, float, float, float, int]:
    """Revenue sd and mean, engagement rate and covariate R² from past snapshots.

    Takes every partner at onboarding age ``age`` whose following horizon is complete, the
    outcome over the horizon and the pre-period covariates (revenue and engagement of the
    horizon-long window before), as ``experiment analyze`` would see them.

    Returns:
        (revenue sd, revenue mean, engaged rate, revenue R² on the covariates, partners used)
    """
    import statsmodels.api as sm

    from partnerscore.features.validate import load_raw, supported_end

    raw = load_raw(raw_dir, write_quarantine=False)
    partners = raw.tables["partners"]
    as_of = pd.to_datetime(partners["signed_at"]) + pd.Timedelta(days=age)
    keep = as_of + pd.Timedelta(days=horizon) <= supported_end(raw.data_end, raw.late_tail)
    if keep.sum() < 10:
        raise PartnerscoreError(
            f"--raw {raw_dir}: fewer than 10 partners with {age} + {horizon} days of history"
        )
    assignment = pd.DataFrame(
        {
            "partner_id": partners.loc[keep, "partner_id"].astype(str).to_numpy(),
            "arm": "control",
            "stratum": "all",
            "assigned_at": as_of[keep].to_numpy(),
        }
    )
    out = experiment_outcomes(raw.tables, assignment, horizon, (horizon,), build)
    y = out["revenue"].to_numpy(float)
    x = sm.add_constant(out[["pre_revenue", "pre_engaged"]].to_numpy(float), has_constant="add")
    r2 = float(sm.OLS(y, x).fit().rsquared) if y.std() > 0 else 0.0
    return float(y.std(ddof=1)), float(y.mean()), float(out["engaged"].mean()), r2, len(out)


def run_plan(
    config: AppConfig,
    partners: int,
    fraction: float = 0.5,
    alpha: float = DEFAULT_ALPHA,
    power: float = 0.8,
    revenue_sd: float | None = None,
    revenue_mean: float | None = None,
    base_rate: float | None = None,
    r_squared: float | None = None,
    raw_dir: str | Path | None = None,
    horizon: int = 180,
    age: int = 90,
    effect_revenue: float | None = None,
    effect_engagement: float | None = None,
) -> PlanResult:
    """The ``experiment plan`` job: MDEs for a sample size, or sizes for target effects.

    Args:
        config: Application config (engagement rule).
        partners: Partners in the experiment (both arms).
        fraction: Share in the treatment arm.
        alpha: Significance level.
        power: Target power.
        revenue_sd: Revenue standard deviation per partner (else estimated from ``raw_dir``).
        revenue_mean: Revenue mean (for the relative MDE).
        base_rate: Engaged share in the control arm (else estimated from ``raw_dir``).
        r_squared: Revenue variance share explained by pre-period covariates.
        raw_dir: Raw tables to estimate the spread from.
        horizon: Outcome window for the estimate (at least ``build.engagement_period_days``
            when the base rate is estimated).
        age: Onboarding age at which partners would be assigned, for the estimate.
        effect_revenue: A revenue difference to size the experiment for.
        effect_engagement: An engagement lift (proportion points) to size it for.

    Returns:
        The plan.
    """
    if partners < 4:
        raise OptionError(f"--partners: need at least 4 partners, got {partners}")
    check_day_count("--horizon", horizon, low=1)
    check_day_count("--age", age)
    arm_shares(("control", "treatment"), fraction)
    for label, value in (("--alpha", alpha), ("--power", power)):
        if not 0 < value < 1:
            raise OptionError(f"{label}: expected a value between 0 and 1, got {value}")
    given = {"--revenue-sd": revenue_sd, "--base-rate": base_rate, "--r-squared": r_squared}

    def bad(option: str, message: str) -> PartnerscoreError:
        """A given value's error is an option's; an estimated one's is about the data."""
        return (PartnerscoreError if given[option] is None else OptionError)(message)

    source = "given"
    if raw_dir is not None and base_rate is None:  # the engaged rate is estimated: the label
        check_horizon_holds_a_period(config.build, horizon)
    if raw_dir is not None:
        sd, mean, rate, r2, used = outcome_spread(raw_dir, horizon, age, config.build)
        revenue_sd = sd if revenue_sd is None else revenue_sd
        revenue_mean = mean if revenue_mean is None else revenue_mean
        base_rate = rate if base_rate is None else base_rate
        r_squared = r2 if r_squared is None else r_squared
        source = f"estimated from {used:,} partners at day {age} over {horizon} days"
    if revenue_sd is None and base_rate is None:
        raise PartnerscoreError(PLAN_NEEDS_SPREAD)
    r_squared = float(r_squared or 0.0)
    if not 0 <= r_squared < 1:
        raise bad("--r-squared", f"--r-squared: expected a value in [0, 1), got {r_squared}")
    n_t = max(int(round(partners * fraction)), 1)
    n_c = partners - n_t
    plan = PlanResult(
        partners=partners,
        fraction=fraction,
        alpha=alpha,
        power=power,
        revenue_sd=revenue_sd,
        revenue_mean=revenue_mean,
        base_rate=base_rate,
        r_squared=r_squared,
        source=source,
    )
    if revenue_sd is not None:
        if not revenue_sd > 0:
            raise bad("--revenue-sd", f"--revenue-sd: must be positive, got {revenue_sd}")
        plan.mde_revenue = minimum_detectable_effect(n_t, n_c, revenue_sd, alpha, power)
        plan.mde_revenue_adjusted = minimum_detectable_effect(
            n_t, n_c, revenue_sd, alpha, power, r_squared
        )
        if effect_revenue:
            plan.required[f"a revenue difference of ${effect_revenue:,.0f}"] = required_partners(
                effect_revenue, revenue_sd, fraction, alpha, power
            )
            if r_squared > 0:
                key = f"it with covariate adjustment (R² {r_squared:.2f})"
                plan.required[key] = required_partners(
                    effect_revenue, revenue_sd, fraction, alpha, power, r_squared
                )
    if base_rate is not None:
        if not 0 < base_rate < 1:
            message = f"--base-rate: expected a share in (0, 1), got {base_rate}"
            raise bad("--base-rate", message)
        plan.mde_engaged = minimum_detectable_lift(n_t, n_c, base_rate, alpha, power)
        if effect_engagement:
            from statsmodels.stats.power import NormalIndPower
            from statsmodels.stats.proportion import proportion_effectsize

            target = base_rate + effect_engagement
            if not 0 < target < 1:
                raise bad(
                    "--base-rate",
                    f"--effect-engagement {effect_engagement:g}: the base rate {base_rate:.1%} "
                    f"plus the lift is {target:.1%}, outside (0%, 100%)",
                )
            h = abs(proportion_effectsize(target, base_rate))
            n1 = NormalIndPower().solve_power(
                effect_size=h, nobs1=None, alpha=alpha, power=power, ratio=(1 - fraction) / fraction
            )
            plan.required[f"an engagement lift of {effect_engagement * 100:.1f} pts"] = int(
                math.ceil(float(n1) / fraction)
            )
    return plan


__all__ = [
    "EFFECT_COLUMNS",
    "OUTCOME_COLUMNS",
    "RESULT_KEYS",
    "AnalyzeResult",
    "AssignResult",
    "PlanResult",
    "StopResult",
    "estimate_effects",
    "experiment_outcomes",
    "horizon_effects",
    "read_assignments",
    "render_report",
    "run_analyze",
    "run_assign",
    "run_plan",
    "run_stop",
]
