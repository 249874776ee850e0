"""Model registry jobs: compare versions (``partnerscore models``) and the promotion gate."""

from __future__ import annotations

import getpass
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from partnerscore.features.core import PartnerscoreError
from partnerscore.models.model_uri import (
    ACCEPTED_INCOMPLETE_TAG,
    INCOMPLETE_TAG,
    check_registry,
    unknown_name,
)
from partnerscore.models.pyfunc import load_partner_model
from partnerscore.models.stores import raise_if_unreachable
from partnerscore.training.config import TrainConfig
from partnerscore.training.names import (
    CHALLENGER,
    CHAMPION,
    HOLDOUT_ARTIFACT,
    HOLDOUT_PREDICTIONS_ARTIFACT,
    drifting,
)
from partnerscore.training.reference import label_differences as differing_labels
from partnerscore.training.reference import run_label_definition
from partnerscore.training.row_keys import TRAINING_ROWS_ARTIFACT, rows_in

_SHOWN = (
    ("holdout_primary_score", "primary"),
    ("holdout_revenue_normalized_gini", "rev_gini"),
    ("holdout_revenue_top_decile_capture", "rev_top10"),
    ("holdout_revenue_portfolio_bias", "rev_bias"),
    ("holdout_engagement_roc_auc", "eng_auc"),
    ("holdout_engagement_brier", "eng_brier"),
    ("holdout_engagement_ece", "eng_ece"),
)


def _client(tracking_uri: str) -> mlflow.MlflowClient:
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _versions(client: mlflow.MlflowClient, name: str) -> list:
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except mlflow.exceptions.MlflowException as exc:
        raise_if_unreachable(exc)
        return []
    return sorted(versions, key=lambda v: int(v.version))


def _check_name(client: mlflow.MlflowClient, name: str) -> None:
    """Refuse a registered model name the store does not hold while it holds others (a typo).

    A store holding no registered model at all is simply empty (nothing trained yet).
    """
    try:
        held = sorted({model.name for model in client.search_registered_models()})
    except mlflow.exceptions.MlflowException as exc:
        raise_if_unreachable(exc)
        return
    if held and name not in held:
        raise PartnerscoreError(unknown_name(name, held))


def run_of(client: mlflow.MlflowClient, version):
    """A version's training run, or None when it is gone from the store (``mlflow gc``)."""
    if not version.run_id:
        return None
    try:
        return client.get_run(version.run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise_if_unreachable(exc)
        return None


def _gone(version) -> str:
    return (
        f"v{version.version}: training run {version.run_id} is not in the store (deleted and"
        " purged): no holdout metrics, and `promote` cannot judge it"
    )


@dataclass
class ModelsResult:
    """Registered versions with aliases and holdout metrics."""

    table: pd.DataFrame
    name: str
    notes: list[str] = field(default_factory=list)

    def json_payload(self) -> dict:
        """``--json``: every version's row (aliases, run, holdout metrics), not only a count.

        The values MLflow holds: the whole run id and every metric unrounded (pandas'
        ``to_json`` kept 10 digits), a missing metric as null.
        """
        rows = [
            {
                key: None
                if value is pd.NA or (isinstance(value, float) and not np.isfinite(value))
                else value
                for key, value in row.items()
            }
            for row in self.table.to_dict(orient="records")
        ]
        return {"name": self.name, "versions": rows, "notes": list(self.notes)}

    def summary(self) -> str:
        """The comparison table as text (run ids shortened to 8 characters)."""
        if self.table.empty:
            return f"no registered versions of '{self.name}' yet (run `partnerscore train`)"
        shown = self.table.assign(run_id=self.table["run_id"].str[:8])
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            text = f"registered model '{self.name}'\n" + shown.to_string(
                index=False, float_format=lambda v: f"{v:.3f}"
            )
        return "\n".join([text, *self.notes])


def run_models(config: TrainConfig, *, tracking_uri: str) -> ModelsResult:
    """Table of every version: aliases, run, creation time, config hash, holdout metrics."""
    check_registry(tracking_uri)  # a read: MLflow would create an empty local store
    client = _client(tracking_uri)
    _check_name(client, config.registered_model)
    rows, notes = [], []
    sets: dict[int, str] = {}  # version: its training set's sha256 and holdout share
    labels: dict[int, dict | None] = {}  # version: its label definition
    for listed in _versions(client, config.registered_model):
        # search results do not carry aliases on every store: fetch each version
        mv = client.get_model_version(config.registered_model, listed.version)
        run = run_of(client, mv)
        if run is None and mv.run_id:
            notes.append(_gone(mv))
        elif run is not None and run.info.lifecycle_stage == "deleted":
            notes.append(
                f"v{mv.version}: training run {mv.run_id} is deleted (its metrics are shown;"
                f" `mlflow runs restore --run-id {mv.run_id}` brings it back, `mlflow gc`"
                " purges it)"
            )
        if (mv.tags or {}).get(ACCEPTED_INCOMPLETE_TAG) == "true":
            notes.append(
                f"v{mv.version}: its registration by `train` did not finish (tag "
                f"{INCOMPLETE_TAG}), and it was promoted all the same with --force --reason "
                f"(tag {ACCEPTED_INCOMPLETE_TAG}): the jobs load it"
            )
        elif INCOMPLETE_TAG in (mv.tags or {}):
            notes.append(
                f"v{mv.version}: its registration by `train` did not finish (tag "
                f"{INCOMPLETE_TAG}: the store was lost, or a `train` is registering it now); "
                "`promote` refuses it without --force --reason, and `score`, `whatif`, "
                "`monitor` and the API refuse to load it; delete it if no `train` is running"
            )
        metrics = run.data.metrics if run else {}
        row = {
            "version": int(mv.version),
            "aliases": ",".join(sorted(mv.aliases)) or "-",
            "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).strftime(
                "%Y-%m-%d %H:%M"
            ),
            "run_id": mv.run_id or "",
            "config_hash": (run.data.tags.get("config_hash", "") if run else ""),
            # what the holdout metrics were measured on and with: they compare across
            # versions only where these agree (notes below the table say where not)
            "features": _int_param(run, "features"),
            "holdout": _int_param(run, "holdout_rows"),
        }
        for key, label in _SHOWN:
            row[label] = metrics.get(key, float("nan"))
        sets[int(mv.version)] = (  # one holdout: one training set cut at one share
            f"{run.data.tags.get('training_set_sha256', '')} {run.data.params.get('holdout_share')}"
            if run and run.data.tags.get("training_set_sha256")
            else ""
        )
        labels[int(mv.version)] = run_label_definition(client, mv.run_id) if run else None
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.astype({"features": "Int64", "holdout": "Int64"})
        notes += _comparability_notes(table, sets, labels)
    return ModelsResult(table=table, name=config.registered_model, notes=notes)


def _int_param(run, key: str):
    """A count a run logged as a param, or NA (no run, or a run from before it)."""
    try:
        return int(run.data.params[key]) if run is not None else pd.NA
    except (KeyError, ValueError):
        return pd.NA


def _comparability_notes(table: pd.DataFrame, sets: dict, labels: dict) -> list[str]:
    """Where the versions' holdout metrics do not measure the same thing.

    Each version's metrics are on its own holdout: versions of other training sets hold other
    rows, and versions whose labels were defined otherwise (horizon, engagement period, ...)
    predict other targets. Against the champion (else the newest version), one line each.
    """
    notes = []
    champion = table.loc[table["aliases"].str.split(",").map(lambda a: CHAMPION in a), "version"]
    ref = int(champion.iloc[0]) if len(champion) else int(table["version"].max())
    holdouts = {key for key in sets.values() if key}
    if len(holdouts) > 1:
        sizes = sorted({int(n) for n in table["holdout"].dropna()})
        rows = f" (rows {', '.join(f'{n:,}' for n in sizes)})" if len(sizes) > 1 else ""
        notes.append(
            f"holdout metrics are each version's own holdout, and these versions have "
            f"{len(holdouts)} different ones{rows}: other training sets or holdout shares;"
            " compare the versions on one with `partnerscore promote` or the repository's"
            " notebooks/compare_models.ipynb"
        )
    ours = labels.get(ref)
    for v, theirs in sorted(labels.items()):
        if v == ref or not theirs or not ours:
            continue
        differ = differing_labels(ours, theirs)
        if differ:
            said = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in sorted(differ.items()))
            notes.append(
                f"v{v} was trained on other labels than v{ref} ({said}): their metrics measure "
                "different targets"
            )
    return notes


_BASELINE_HEADS = (
    # (what the line calls it, the key of its compare_* metrics, its holdout metric)
    ("revenue Gini", "revenue_gini", "revenue_normalized_gini"),
    ("engagement AUC", "engagement_auc", "engagement_roc_auc"),
)
_BASELINE_PREFIX = "baseline_"
_BEST_TAG = "_best_baseline_is_"


@dataclass(frozen=True)
class BaselineCheck:
    """One head of a challenger against its best baseline on its own holdout.

    Read from the training run's metrics (:func:`baseline_checks`): the pre-refit GBM's holdout
    metric (``value``), the best baseline's (``baseline``, ``baseline_value``) and the GBM
    minus that baseline with its paired partner-bootstrap s.e. (``diff``, ``se``).

    Attributes:
        head: The metric compared ("revenue Gini", "engagement AUC").
        value: The GBM's holdout metric (NaN when the run logged none).
        baseline: The best baseline's name ("" when the run logged no baseline).
        baseline_value: The best baseline's holdout metric (NaN when none).
        diff: GBM minus the best baseline (NaN when neither was logged).
        se: Paired bootstrap s.e. of ``diff`` (NaN when the run logged none).
        z: The noise allowance in s.e. (``train.baseline_gate_z``).
        verdict: ``worse`` / ``better`` (beyond ``z`` s.e.), ``within`` the noise, or
            ``unchecked`` (no difference or no s.e. logged: reported, not gated).
        blocks: Whether this head refuses the promotion under ``train.baseline_gate``.
        note: Why a head is unchecked ("" otherwise).
    """

    head: str
    value: float
    baseline: str
    baseline_value: float
    diff: float
    se: float
    z: float
    verdict: str
    blocks: bool
    note: str = ""

    def line(self) -> str:
        """The comparison in one line: value, baseline, difference, s.e. and verdict."""
        vs = (
            f"{self.value:.3f} vs {self.baseline} {self.baseline_value:.3f}"
            if self.baseline
            else f"{self.value:.3f}, no baseline logged"
        )
        diff = f", diff {self.diff:+.3f}" if self.diff == self.diff else ""
        se = f" (s.e. {self.se:.3f})" if self.se == self.se else ""
        if self.verdict == "unchecked":
            word = f"not checked: {self.note}"
        elif self.verdict == "within":
            word = f"within {self.z:g} s.e. of the baseline"
        else:
            word = f"{self.verdict.upper()} than the baseline by more than {self.z:g} s.e."
        return f"  {self.head} {vs}{diff}{se}: {word}" + (
            " (refuses the promotion)" if self.blocks else ""
        )


_ROUNDS_KEY = "compare_bootstrap_rounds"
"""The partner resamples a training run drew for its paired s.e. (``train._compare``)."""


def _no_se_note(rounds: float | None) -> str:
    """Why a logged difference has no s.e.: no resamples drawn, or too few gave a difference.

    Args:
        rounds: The run's ``compare_bootstrap_rounds`` (None for runs from before it was
            logged, which cannot tell the two apart).
    """
    if rounds is None:
        return (
            "the run logged no paired s.e. (train.bootstrap_rounds 0, or fewer than 2 "
            "resamples gave a difference)"
        )
    if rounds == 0:
        return "the run logged no paired s.e. (train.bootstrap_rounds 0)"
    return (
        f"the run logged no paired s.e. (fewer than 2 of its {rounds:.0f} partner resamples "
        "gave a difference, e.g. a holdout of very few partners)"
    )


def baseline_checks(metrics: dict, z: float, rule: str = "not_worse") -> list[BaselineCheck]:
    """Each head's GBM against its best baseline, as the challenger's training run logged it.

    The run logs, per head, ``compare_<key>_diff`` and ``compare_<key>_diff_se`` (GBM minus
    the best baseline with its paired partner-bootstrap s.e., ``train._compare``), which
    baseline that is (``compare_<key>_best_baseline_is_<name>``) and every baseline's holdout
    metrics (``baseline_<name>_<metric>``). A head is ``worse`` when ``diff < -z * se``,
    ``better`` when ``diff > z * se``, ``within`` otherwise; ``rule`` (``train.baseline_gate``)
    decides which verdicts refuse: ``not_worse`` refuses ``worse``, ``better`` refuses
    ``worse`` and ``within``. A run that logged no difference (trained before 2026-12-02:
    the difference is then read from the logged metrics, without s.e.) or no s.e.
    (``bootstrap_rounds: 0``) is ``unchecked``: reported, never refused.

    Args:
        metrics: The training run's metrics (``client.get_run(...).data.metrics``).
        z: The noise allowance in s.e. (``train.baseline_gate_z``).
        rule: ``not_worse`` or ``better``.

    Returns:
        One check per head: revenue Gini, then engagement AUC.
    """
    checks = []
    for head, key, metric in _BASELINE_HEADS:
        nan = float("nan")
        value = metrics.get(f"holdout_{metric}", nan)
        tag = f"compare_{key}{_BEST_TAG}"
        best = next((k.removeprefix(tag) for k in sorted(metrics) if k.startswith(tag)), "")
        compared = bool(best)  # the run logged its comparison (diff and s.e. when finite)
        logged = {
            k.removeprefix(_BASELINE_PREFIX).removesuffix(f"_{metric}"): v
            for k, v in metrics.items()
            if k.startswith(_BASELINE_PREFIX) and k.endswith(f"_{metric}") and v == v
        }
        if not best and logged:  # before the comparison was logged: the best by the metric
            best = max(logged, key=logged.get)
        baseline_value = logged.get(best, nan)
        diff = metrics.get(f"compare_{key}_diff", nan)
        se = metrics.get(f"compare_{key}_diff_se", nan)
        note = ""
        if f"compare_{key}_diff" not in metrics:
            diff = value - baseline_value
            if compared:  # logged only when finite
                note = "no difference on this holdout (e.g. it holds one engagement class)"
            elif best:
                note = "the run logged no paired s.e. (trained before 2026-12-02)"
            else:
                note = "the run logged no baseline"
        elif not (se == se and se >= 0):
            note = _no_se_note(metrics.get(_ROUNDS_KEY))
        if note:
            verdict = "unchecked"
        elif diff < -z * se:
            verdict = "worse"
        elif diff > z * se:
            verdict = "better"
        else:
            verdict = "within"
        blocks = verdict == "worse" or (rule == "better" and verdict == "within")
        checks.append(
            BaselineCheck(head, value, best, baseline_value, diff, se, z, verdict, blocks, note)
        )
    return checks


RUN_GONE = (
    "read by its registered model, its training run is gone (the rows it was fitted on are unknown)"
)


@dataclass
class PromoteResult:
    """Outcome of the promotion gate."""

    promoted: bool
    challenger: str
    champion: str | None
    challenger_score: float
    champion_score: float | None
    margin: float
    forced: bool = False
    reason: str = ""
    details: dict = field(default_factory=dict)
    bias: float | None = None
    max_bias: float | None = None
    bias_noise: float = 0.0
    already_champion: bool = False
    segments_checked: int | None = None
    segments_beyond: int | None = None
    label_differences: dict = field(default_factory=dict)
    cohort_trend: float | None = None
    cohort_trend_se: float | None = None
    baseline: list[BaselineCheck] = field(default_factory=list)
    baseline_rule: str = "not_worse"

    def _change(self) -> str:
        """The challenger's relative change over the champion (``+1.4%, ``), if defined."""
        if not self.champion_score or self.challenger_score != self.challenger_score:
            return ""
        return f"{self.challenger_score / self.champion_score - 1:+.1%}, "

    def summary(self) -> str:
        """What the gate decided and why."""
        if self.already_champion:
            return f"v{self.challenger} is already champion: nothing to do"
        if self.champion is None:
            basis = "no champion yet"
        elif self.champion_score is None:
            basis = f"champion v{self.champion} could not be scored"
        else:
            basis = (
                f"challenger v{self.challenger} primary score {self.challenger_score:.4f} vs "
                f"champion v{self.champion} {self.champion_score:.4f} on the challenger's "
                f"holdout ({self._change()}needs +{self.margin:.1%})"
            )
            how = {
                v: str(self.details.get(f"{key}_predictions", ""))
                for v, key in ((self.challenger, "challenger"), (self.champion, "champion"))
            }
            # "<which model>[; <features it lacked>]" (unseen_predictions)
            parts = {v: h.split("; ", 1) for v, h in how.items()}
            seen = [
                f"v{v} {p[0]}"
                for v, p in parts.items()
                if p[0].startswith(("refitted on", "trained on", RUN_GONE))
            ]
            if seen:  # a version that saw the rows and logged no predictions of them
                basis += f" [{' and '.join(seen)}: optimistic]"
            short = [f"v{v} {p[1]}" for v, p in parts.items() if len(p) > 1]
            if short:  # a version scored without some of its features: off, either way
                basis += f" [{' and '.join(short)}: not its real score]"
        if self.label_differences:  # reported, not gated
            diffs = ", ".join(
                f"{key} {theirs} vs {ours}"
                for key, (theirs, ours) in sorted(self.label_differences.items())
            )
            basis += (
                f"; champion v{self.champion} was trained on other labels ({diffs}): its score "
                "is how it ranks the challenger's"
            )
        if self.bias is not None and self.max_bias is not None:
            ok = abs(self.bias) - self.bias_noise <= self.max_bias
            noise = f" + {self.bias_noise:.0%} sampling noise" if self.bias_noise else ""
            basis += (
                f"; holdout revenue portfolio bias {self.bias:+.1%} "
                f"({'within' if ok else 'BEYOND'} the ±{self.max_bias:.0%}{noise} limit)"
            )
        if self.segments_checked:  # reported, not gated
            basis += (
                f"; {self.segments_beyond or 0} of {self.segments_checked} tier/region segments "
                "beyond that limit by more than their noise (not gated)"
            )
        trend, se = self.cohort_trend, self.cohort_trend_se
        if drifting(trend, se):
            basis += (
                f"; cohort drift? out of fold newer cohorts earn {trend:+.0%} per year "
                f"(s.e. {se:.0%}) relative to the model"
            )
        if self.baseline:
            refused = [c.head for c in self.baseline if c.blocks]
            ask = "not worse than" if self.baseline_rule == "not_worse" else "better than"
            if refused:
                said = f"FAILED on {' and '.join(refused)}"
            elif all(c.verdict == "unchecked" for c in self.baseline):
                said = "not checked"  # each head's line says why
            else:
                said = "passed"
            basis += f"; baseline check ({ask} the best baseline beyond the noise): {said}"
        heads = "".join(f"\n{c.line()}" for c in self.baseline)
        if self.promoted and self.forced:
            return (
                f"FORCED: v{self.challenger} is now champion ({basis}); reason: {self.reason}"
                + heads
            )
        if self.promoted:
            return f"promoted v{self.challenger} to champion: {basis}{heads}"
        return f"not promoted: {basis}. Use --force --reason '...' to override.{heads}"


def _int_metric(metrics: dict, key: str) -> int | None:
    """A count logged as an MLflow metric (a float), or None for runs from before it."""
    value = metrics.get(key)
    return int(value) if value is not None and value == value else None


def _read_artifact(client: mlflow.MlflowClient, run_id: str, artifact: str, read):
    """``read(path)`` of a run's artifact, downloaded to a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        return read(Path(client.download_artifacts(run_id, artifact, tmp)))


def _holdout_of(client: mlflow.MlflowClient, run_id: str) -> pd.DataFrame:
    return _read_artifact(client, run_id, HOLDOUT_ARTIFACT, pd.read_parquet)


def _logged_predictions(
    client: mlflow.MlflowClient, run_id: str, holdout: pd.DataFrame
) -> pd.DataFrame | None:
    """A run's pre-refit holdout predictions of ``holdout``'s rows, in its row order.

    Rows the run logged no prediction for are NaN; None when it logged none at all (trained
    before they were logged) or logged a key twice.
    """
    try:
        logged = _read_artifact(client, run_id, HOLDOUT_PREDICTIONS_ARTIFACT, pd.read_parquet)
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        raise_if_unreachable(exc)
        return None
    if logged.duplicated(_KEYS).any():
        return None
    got = _keyed(holdout)[_KEYS].merge(_keyed(logged), on=_KEYS, how="left", validate="one_to_one")
    return got[["pred_revenue", "pred_engagement"]]


_KEYS = ["partner_id", "as_of"]


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its keys as text ids and timestamps, index reset (for joins)."""
    return frame.assign(
        partner_id=frame["partner_id"].astype(str), as_of=pd.to_datetime(frame["as_of"])
    ).reset_index(drop=True)


def rows_in_logged_holdout(
    client: mlflow.MlflowClient, run_id: str, holdout: pd.DataFrame
) -> np.ndarray:
    """Which of ``holdout``'s rows are rows of the holdout a training run logged.

    A row matches on ``partner_id`` and ``as_of`` and on the value of every column both frames
    hold except labels and ``cohort`` (features, ``signed_at``): the same snapshot of the same
    partner, whatever the horizon or onboarding ages its training set was built with, and never
    a namesake from another program. A run refitted on all rows (``train.refit``) has seen
    these rows, so its registered model is optimistic on them.

    Returns:
        A boolean mask over ``holdout``'s rows (all False when the run logged no holdout).
    """
    try:
        theirs = _holdout_of(client, run_id)
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        raise_if_unreachable(exc)
        return np.zeros(len(holdout), dtype=bool)
    compared = [
        c
        for c in holdout.columns
        if c in theirs.columns and c not in _KEYS and c != "cohort" and not c.startswith("label_")
    ]
    theirs = _keyed(theirs)[_KEYS + compared].drop_duplicates(_KEYS, keep=False)
    got = _keyed(holdout)[_KEYS + compared].merge(
        theirs, on=_KEYS, how="left", suffixes=("", "_logged"), indicator=True
    )
    seen = (got["_merge"] == "both").to_numpy().copy()
    for column in compared:
        mine, logged = got[column].astype(object), got[f"{column}_logged"].astype(object)
        seen &= ((mine == logged) | (mine.isna() & logged.isna())).to_numpy()
    return seen


def rows_in_logged_training(
    client: mlflow.MlflowClient, run_id: str, holdout: pd.DataFrame
) -> np.ndarray:
    """Which of ``holdout``'s rows a training run fitted its (pre-refit) model on.

    Matched on the keys the run logged (:mod:`~partnerscore.training.row_keys`): partner,
    ``as_of`` and a hash of each feature's and ``signed_at``'s value, compared on the columns
    both hold, so a champion of another feature registry (one more or one fewer feature) is
    still caught (runs logged before 2026-12-05 one fingerprint of the whole row: matched only
    when ``holdout`` has every column it covered). All False for runs from before that
    artifact, and for an unreadable one (the gate then reads the version as it did before the
    keys were logged).
    """
    try:
        return _read_artifact(
            client, run_id, TRAINING_ROWS_ARTIFACT, lambda path: rows_in(path, holdout)
        )
    except (mlflow.exceptions.MlflowException, OSError, ValueError):  # Arrow's are ValueErrors
        return np.zeros(len(holdout), dtype=bool)


def unseen_predictions(
    client: mlflow.MlflowClient,
    name: str,
    version,
    run,
    holdout: pd.DataFrame,
    holdout_sha: str,
) -> tuple[pd.DataFrame, str]:
    """A version's predictions of the gate's holdout from a model that never saw those rows.

    A version refitted on all rows has seen its own holdout: on the very training set the gate's
    holdout comes from (its run's ``training_set_sha256``), or on another build of the same
    program whose holdout holds the gate's rows (same partner, ``as_of`` and features, e.g.
    other onboarding ages or another horizon: :func:`rows_in_logged_holdout`). Its run's
    pre-refit predictions of those rows stand in when they cover every row. Otherwise the
    registered model predicts them.

    ``run`` is the version's training run (``client.get_run(version.run_id)``), None when it
    is gone from the store (purged by ``mlflow gc``): the registered model predicts the rows,
    and the basis says the rows it was fitted on are unknown. The promotion
    gate's reading of a version (:func:`run_promote`); the compare notebook
    (``notebooks/compare_models.ipynb``) reads every version through it, so both compare
    versions on the same basis. Loads a registered model through the tracking URI set in
    ``mlflow`` (the gate's CLI and the notebook set it).

    Rows the version was trained on before any refit (another build of the program, or a
    training set cut with another holdout share: :func:`rows_in_logged_training`) have no
    unseen prediction at all: the basis then says "trained on k of these n rows".

    Returns:
        (pred_revenue and pred_engagement in the holdout's row order, which model: "pre-refit",
        "registered", "refitted on these rows" when a refitted run logged no predictions of
        them, "refitted on k of these n rows" when it saw some of them, "trained on k of
        these n rows", or :data:`RUN_GONE`).
    """
    if run is None:
        model = load_partner_model(f"models:/{name}/{version.version}")
        return model.predict(holdout)[["pred_revenue", "pred_engagement"]], RUN_GONE
    refit = str(run.data.params.get("refit", "False")).lower() == "true"
    trained = rows_in_logged_training(client, version.run_id, holdout)
    held = np.zeros(len(holdout), dtype=bool)  # its logged holdout, seen by a refit
    if refit:
        same_set = bool(holdout_sha) and run.data.tags.get("training_set_sha256") == holdout_sha
        held = (
            np.ones(len(holdout), dtype=bool)
            if same_set
            else rows_in_logged_holdout(client, version.run_id, holdout)
        )
    if refit and held.all() and not trained.any():
        logged = _logged_predictions(client, version.run_id, holdout)
        if logged is not None and not logged.isna().any().any():
            return logged, "pre-refit"
    if trained.any():
        basis = f"trained on {int((trained | held).sum()):,} of these {len(holdout):,} rows"
    elif refit and held.all():
        basis = "refitted on these rows"
    elif held.any():
        basis = f"refitted on {int(held.sum()):,} of these {len(holdout):,} rows"
    else:
        basis = "registered"
    model = load_partner_model(f"models:/{name}/{version.version}")
    absent = [s.name for s in model.feature_specs if s.name not in holdout.columns]
    if absent:  # features of its registry the gate's build lacks: its own holdout has them
        frame = _with_own_features(client, version.run_id, holdout, absent)
        if frame is None:
            return model.predict(holdout)[["pred_revenue", "pred_engagement"]], (
                f"{basis}; {len(absent)} of its features absent from these rows (scored as"
                f" missing: {', '.join(absent[:3])}{', ...' if len(absent) > 3 else ''})"
            )
        holdout = frame
    return model.predict(holdout)[["pred_revenue", "pred_engagement"]], basis


def _with_own_features(
    client: mlflow.MlflowClient, run_id: str, holdout: pd.DataFrame, absent: list[str]
) -> pd.DataFrame | None:
    """``holdout`` completed with the ``absent`` feature columns of a run's own logged holdout.

    A version built with a feature registry that had features the gate's build lacks would be
    scored with those features all-missing, a handicap no real batch gives it. Where every
    row is a row of its own logged holdout (:func:`rows_in_logged_holdout`: same partner,
    ``as_of`` and common feature values), that holdout holds their values. None otherwise.
    """
    if not rows_in_logged_holdout(client, run_id, holdout).all():
        return None
    try:
        theirs = _holdout_of(client, run_id)
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        raise_if_unreachable(exc)
        return None
    if any(c not in theirs.columns for c in absent):
        return None
    values = _keyed(theirs)[_KEYS + absent].drop_duplicates(_KEYS, keep=False)
    got = _keyed(holdout)[_KEYS].merge(values, on=_KEYS, how="left", validate="one_to_one")
    return holdout.reset_index(drop=True).assign(**{c: got[c].to_numpy() for c in absent})


def _retire_challenger_alias(client: mlflow.MlflowClient, name: str, version) -> None:
    """Drop ``challenger`` from a version just promoted: it is the champion now.

    Left in place, ``--model challenger`` and ``models`` kept naming the champion a challenger
    until the next training run moved the alias. An alias on another version stays.
    """
    try:
        current = client.get_model_version_by_alias(name, CHALLENGER)
    except mlflow.exceptions.MlflowException as exc:
        raise_if_unreachable(exc)
        return
    if str(current.version) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)


def _label_differences(client: mlflow.MlflowClient, champion_run, challenger_run) -> dict:
    """``{setting: (champion's, challenger's)}`` where the two runs' labels are defined apart."""
    theirs = run_label_definition(client, champion_run.info.run_id)
    ours = run_label_definition(client, challenger_run.info.run_id)
    if not theirs or not ours:
        return {}
    return differing_labels(theirs, ours)


def missing_reason(force: bool, reason: str | None) -> str | None:
    """Why a forced promotion cannot go ahead (no reason to record on the version), or None.

    Checked by :func:`run_promote` and, as a usage error, by the CLI before any work.
    """
    if force and not (reason or "").strip():
        return "--force needs --reason '...' (recorded on the model version)"
    return None


def run_promote(
    config: TrainConfig,
    *,
    tracking_uri: str,
    version: str | None = None,
    force: bool = False,
    reason: str | None = None,
) -> PromoteResult:
    """Move ``champion`` to the challenger when it beats the champion by the margin.

    Both models are scored on the challenger's holdout (the newest cohorts it was evaluated
    on, stored with its run), so the comparison is on identical rows, each by a model that
    never saw them: a version refitted on that training set (by default every new one) is
    scored by its run's pre-refit predictions (:func:`unseen_predictions`). The primary
    score is the mean of revenue normalized Gini and engagement ROC AUC; the challenger must
    exceed the champion's by ``promotion_margin`` (relative). With no champion the first
    version needs only the checks below. Either way the challenger's revenue portfolio bias
    on its holdout — the pre-refit value logged by its training run
    (``holdout_revenue_portfolio_bias``), honest even when the registered model was refitted
    on those cohorts — must be within
    ``max_portfolio_bias`` plus ``portfolio_bias_z`` times its logged bootstrap s.e.: a
    forecast built on a biased model inherits the bias. And, first version included, each
    head must hold its own against its best baseline on that holdout: the training run's GBM
    minus the best baseline, with its paired bootstrap s.e., under ``baseline_gate`` and
    ``baseline_gate_z`` (:func:`baseline_checks`; one line per head in the summary). ``force``
    promotes regardless and records who, when and why on the version.
    """
    from partnerscore.training.metrics import evaluate  # SciPy: not for `models`

    problem = missing_reason(force, reason)
    if problem is not None:
        raise PartnerscoreError(problem)
    check_registry(tracking_uri)
    client = _client(tracking_uri)
    name = config.registered_model
    _check_name(client, name)
    if not _versions(client, name):
        raise PartnerscoreError(f"no registered versions of '{name}' (run `partnerscore train`)")
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException as exc:
        raise_if_unreachable(exc)
        champion = None
    try:
        challenger = (
            client.get_model_version(name, version)
            if version
            else client.get_model_version_by_alias(name, CHALLENGER)
        )
    except mlflow.exceptions.MlflowException as exc:
        raise_if_unreachable(exc)
        if not version and champion is not None:  # promoted: its alias went with it
            challenger = champion
        else:
            what = f"version {version}" if version else f"alias '{CHALLENGER}'"
            raise PartnerscoreError(f"model '{name}' has no {what}") from exc
    if INCOMPLETE_TAG in (challenger.tags or {}) and not force:
        raise PartnerscoreError(
            f"version {challenger.version} of '{name}' is incomplete: the `train` that "
            f"registered it did not finish (tag {INCOMPLETE_TAG}); train again, or promote "
            "it anyway with --force --reason"
        )
    if champion is not None and champion.version == challenger.version:
        return PromoteResult(
            promoted=False,
            challenger=str(challenger.version),
            champion=str(champion.version),
            challenger_score=float("nan"),
            champion_score=None,
            margin=config.promotion_margin,
            reason="already champion",
            already_champion=True,
        )

    ch_run = run_of(client, challenger)  # read once: metrics, tags and params
    if ch_run is None:
        raise PartnerscoreError(
            f"challenger v{challenger.version}'s training run {challenger.run_id} is not in the"
            " store (deleted and purged): its holdout and metrics are gone, so the gate cannot"
            " judge it; promote another version (--version V) or train a new one"
        )
    run_metrics = ch_run.data.metrics
    bias = run_metrics.get("holdout_revenue_portfolio_bias")
    bias_se = run_metrics.get("holdout_revenue_portfolio_bias_se", 0.0)
    holdout = _holdout_of(client, challenger.run_id)
    holdout_sha = ch_run.data.tags.get("training_set_sha256", "")
    ch_pred, ch_basis = unseen_predictions(client, name, challenger, ch_run, holdout, holdout_sha)
    ch_metrics = evaluate(holdout, ch_pred["pred_revenue"], ch_pred["pred_engagement"])
    ch_score = ch_metrics["primary_score"]
    champ_score = None
    label_differences: dict = {}
    details = {"challenger": ch_metrics, "challenger_predictions": ch_basis}
    if champion is not None:
        cp_run = run_of(client, champion)  # None: a rollback to a version purged since
        cp_pred, cp_basis = unseen_predictions(client, name, champion, cp_run, holdout, holdout_sha)
        cp_metrics = evaluate(holdout, cp_pred["pred_revenue"], cp_pred["pred_engagement"])
        champ_score = cp_metrics["primary_score"]
        label_differences = _label_differences(client, cp_run, ch_run) if cp_run else {}
        details["champion"] = cp_metrics
        details["champion_predictions"] = cp_basis
        passes = ch_score >= champ_score * (1 + config.promotion_margin)
    else:
        passes = True
    if bias is None:  # a run from before the bias was logged: measure it on the holdout
        bias = ch_metrics["revenue_portfolio_bias"]
    noise = config.portfolio_bias_z * (bias_se if bias_se == bias_se else 0.0)
    bias_ok = bool(abs(bias) - noise <= config.max_portfolio_bias)
    details["bias_ok"] = bias_ok
    against = baseline_checks(run_metrics, config.baseline_gate_z, config.baseline_gate)
    baseline_ok = not any(check.blocks for check in against)
    details["baseline_ok"] = baseline_ok
    passes = passes and bias_ok and baseline_ok
    promoted = passes or force
    result = PromoteResult(
        promoted=promoted,
        challenger=str(challenger.version),
        champion=str(champion.version) if champion else None,
        challenger_score=ch_score,
        champion_score=champ_score,
        margin=config.promotion_margin,
        forced=force and not passes,
        reason=reason or ("gate passed" if passes else "gate failed"),
        details=details,
        bias=float(bias),
        max_bias=config.max_portfolio_bias,
        bias_noise=float(noise),
        segments_checked=_int_metric(run_metrics, "holdout_revenue_segments_checked"),
        segments_beyond=_int_metric(run_metrics, "holdout_revenue_segments_beyond_bias_limit"),
        label_differences=label_differences,
        cohort_trend=run_metrics.get("holdout_fit_revenue_oof_cohort_trend"),
        cohort_trend_se=run_metrics.get("holdout_fit_revenue_oof_cohort_trend_se"),
        baseline=against,
        baseline_rule=config.baseline_gate,
    )
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    tags = {
        "promotion_decision": "promoted" if promoted else "rejected",
        "promotion_checked_at": now,
        "promotion_challenger_score": f"{ch_score:.4f}",
        "promotion_champion_score": "" if champ_score is None else f"{champ_score:.4f}",
        "promotion_portfolio_bias": f"{bias:.4f}",
        "promotion_bias_ok": str(bias_ok).lower(),
        "promotion_baseline_ok": str(baseline_ok).lower(),
        "promotion_baseline": "; ".join(check.line().strip() for check in against),
    }
    if promoted:
        if INCOMPLETE_TAG in (challenger.tags or {}):  # --force --reason past INCOMPLETE_TAG
            # before the alias: a promote cut short between the two left a champion no job
            # loads, and the next promote found it "already champion", tagging nothing
            client.set_model_version_tag(name, challenger.version, ACCEPTED_INCOMPLETE_TAG, "true")
        client.set_registered_model_alias(name, CHAMPION, challenger.version)
        _retire_challenger_alias(client, name, challenger.version)
        tags["promoted_at"] = now
        tags["promoted_by"] = getpass.getuser()
        if result.forced:
            tags["promotion_forced"] = "true"
        if champion is not None:
            client.set_model_version_tag(name, champion.version, "replaced_at", now)
    if (reason or "").strip():  # given, it is recorded: forced, passing the gate or refused
        tags["promotion_reason"] = reason
    for key, value in tags.items():
        client.set_model_version_tag(name, challenger.version, key, value)
    return result
