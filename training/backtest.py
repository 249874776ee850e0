"""Backtest metrics: past predictions against what partners then did, per batch and segment."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from partnerscore.features.registry import PHASE_PREFIX
from partnerscore.training.metrics import expected_calibration_error, normalized_gini

BACKTEST_COLUMNS = (
    "as_of",
    "segment",
    "rows",
    "revenue_normalized_gini",
    "revenue_bias",
    "revenue_predicted_mean",
    "revenue_realised_mean",
    "engagement_roc_auc",
    "engagement_ece",
    "engagement_predicted_rate",
    "engagement_realised_rate",
)
ALL_BATCHES = "all"
IN_TRAINING_WINDOW = "in_training_window"
"""History-row column: the row's outcome period lies in its model's training data."""


def group_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """Realised metrics of one group of (prediction, label) rows.

    - ``revenue_normalized_gini``: Gini of realised revenue ordered by prediction / perfect.
    - ``revenue_bias``: sum predicted / sum realised - 1 (NaN without realised revenue).
    - ``engagement_roc_auc``: NaN when only one class occurred.
    - ``engagement_ece``: expected calibration error over 10 probability bins.
    """
    y_rev = frame["label_revenue"].to_numpy(dtype=float)
    p_rev = frame["pred_revenue"].to_numpy(dtype=float)
    y_eng = frame["label_engaged"].to_numpy(dtype=float)
    p_eng = frame["pred_engagement"].to_numpy(dtype=float)
    realised = y_rev.sum()
    return {
        "rows": float(len(frame)),
        "revenue_normalized_gini": normalized_gini(y_rev, p_rev) if realised > 0 else np.nan,
        "revenue_bias": float(p_rev.sum() / realised - 1) if realised > 0 else np.nan,
        "revenue_predicted_mean": float(p_rev.mean()),
        "revenue_realised_mean": float(y_rev.mean()),
        "engagement_roc_auc": (
            float(roc_auc_score(y_eng, p_eng)) if len(np.unique(y_eng)) == 2 else np.nan
        ),
        "engagement_ece": expected_calibration_error(y_eng, p_eng),
        "engagement_predicted_rate": float(p_eng.mean()),
        "engagement_realised_rate": float(y_eng.mean()),
    }


def backtest_table(
    frame: pd.DataFrame, segments: tuple[str, ...], min_rows: int = 1
) -> pd.DataFrame:
    """Metrics per batch (``as_of``) and over all batches, overall and per segment value.

    Args:
        frame: One row per scored (partner, as_of) with pred_revenue, pred_engagement,
            label_revenue, label_engaged and the segment columns.
        segments: Segment columns (``segment`` is ``all`` or ``<column>=<value>``).
        min_rows: Groups with fewer rows are left out.

    Returns:
        :data:`BACKTEST_COLUMNS`; ``as_of`` is the batch date as text or ``all``.
    """
    rows = []
    batches = [(ALL_BATCHES, frame)] + [
        (pd.Timestamp(k).strftime("%Y-%m-%d"), g) for k, g in frame.groupby("as_of", sort=True)
    ]
    for as_of, batch in batches:
        groups = [("all", batch)]
        for seg in segments:
            groups += [(f"{seg}={v}", g) for v, g in batch.groupby(seg, sort=True)]
        for name, group in groups:
            if len(group) >= min_rows:
                rows.append({"as_of": as_of, "segment": name, **group_metrics(group)})
    out = pd.DataFrame(rows, columns=list(BACKTEST_COLUMNS))
    out["rows"] = out["rows"].astype(int)
    return out


def in_training_window(as_of, ends, horizon_days: int) -> np.ndarray:
    """Rows whose outcome period ``[as_of, as_of + horizon)`` ends on or before ``ends``.

    Such a row's label lies in the data the model that scored it was trained on (the build
    labels only snapshots with ``as_of + horizon <= data_end``): comparing its prediction with
    that label is an in-sample fit, not a forecast.

    Args:
        as_of: Each row's scoring date.
        ends: Each row's training data end (NaT: unknown, never in the window).
        horizon_days: The label horizon.

    Returns:
        Boolean array, one per row.
    """
    as_of = pd.to_datetime(pd.Series(as_of)).to_numpy("datetime64[ns]")
    ends = pd.to_datetime(pd.Series(ends, dtype="datetime64[ns]")).to_numpy("datetime64[ns]")
    known = ~np.isnat(ends)
    out = np.zeros(len(as_of), dtype=bool)
    # as_of <= end - horizon: as_of + horizon would wrap past 2262 for a far date
    out[known] = as_of[known] <= ends[known] - np.timedelta64(int(horizon_days), "D")
    return out


WINDOW_SOURCES = ("version", "monitored", "unknown")
"""Where a history row's training data end came from: the version that scored it, the
monitored model's (that version's is unknown), or nowhere (the row is kept)."""


def stamp_text(stamp: pd.Timestamp) -> str:
    """A data end as text: the date, with the time of day when it is not midnight."""
    stamp = pd.Timestamp(stamp)
    return f"{stamp:%Y-%m-%d}" if stamp == stamp.normalize() else f"{stamp:%Y-%m-%d %H:%M:%S}"


@dataclass(frozen=True)
class TrainingWindowSplit:
    """How the completed history rows split at their model's training data end.

    Attributes:
        horizon_days: The label horizon of the rule ``as_of + horizon <= training_data_end``.
        rows: Completed rows judged (in onboarding scope).
        in_window: Rows inside the training window: in-sample, left out of the backtest.
        by_monitored: Rows whose version's training data end is unknown, judged by the
            monitored model's.
        unknown: Rows with no known training data end at all: kept (cannot tell).
        versions: Per version that scored rows (``''``: none recorded): ``training_data_end``
            (text or None), ``source`` (:data:`WINDOW_SOURCES`), ``rows``, ``in_window``.
        batches: Scoring dates with rows inside the window.
    """

    horizon_days: int
    rows: int = 0
    in_window: int = 0
    by_monitored: int = 0
    unknown: int = 0
    versions: dict[str, dict] = field(default_factory=dict)
    batches: list[str] = field(default_factory=list)

    @property
    def out_of_time(self) -> int:
        """Rows the backtest reads."""
        return self.rows - self.in_window

    def note(self) -> str:
        """One sentence: how many rows were left out and why ('' when nothing to say)."""
        parts = []
        if self.in_window:
            ends = ", ".join(
                f"{stamp_text(pd.Timestamp(v['training_data_end']))} for "
                + (f"version {name}" if name else "unversioned rows")
                + (" (the monitored model's end)" if v["source"] == "monitored" else "")
                for name, v in self.versions.items()
                if v["in_window"]
            )
            parts.append(
                f"{self.in_window:,} of {self.rows:,} completed rows lie inside the training "
                f"window of the model that scored them (as_of + {self.horizon_days} days <= "
                f"{ends}): in-sample, left out of the backtest table and checks"
            )
        if self.by_monitored:
            parts.append(
                f"{self.by_monitored:,} rows of versions whose training data end is unknown "
                "were judged by the monitored model's"
            )
        if self.unknown:
            parts.append(
                f"{self.unknown:,} rows have no known training data end (neither their "
                "version's nor the monitored model's): kept, in-sample or not"
            )
        return "; ".join(parts)

    def to_dict(self) -> dict:
        """The ``backtest_training_window`` field of monitor.json."""
        return {
            "rule": "as_of + horizon_days <= training_data_end of the version that scored the row",
            "horizon_days": self.horizon_days,
            "completed_rows": self.rows,
            "in_training_window_rows": self.in_window,
            "out_of_time_rows": self.out_of_time,
            "judged_by_monitored_model_rows": self.by_monitored,
            "unknown_training_end_rows": self.unknown,
            "batches_in_training_window": list(self.batches),
            "versions": self.versions,
            "note": self.note(),
        }


def training_window_split(rows: pd.DataFrame, horizon_days: int) -> TrainingWindowSplit:
    """Count the rows :func:`in_training_window` marked, per version and source.

    Args:
        rows: Completed history rows with ``as_of``, ``model_version``, ``training_data_end``,
            ``training_end_source`` and ``in_training_window`` (an empty frame: nothing).
        horizon_days: The label horizon the rows were judged with.
    """
    if rows.empty or IN_TRAINING_WINDOW not in rows.columns:
        return TrainingWindowSplit(int(horizon_days))
    inside = rows[IN_TRAINING_WINDOW].to_numpy(dtype=bool)
    source = rows["training_end_source"].astype(str).to_numpy(dtype=object)
    versions = {}
    for version, group in rows.groupby("model_version", sort=True):
        end = group["training_data_end"].iloc[0]
        versions[str(version)] = {
            "training_data_end": None if pd.isna(end) else f"{pd.Timestamp(end):%Y-%m-%d %H:%M:%S}",
            "source": str(group["training_end_source"].iloc[0]),
            "rows": len(group),
            "in_window": int(group[IN_TRAINING_WINDOW].sum()),
        }
    batches = sorted({f"{pd.Timestamp(d):%Y-%m-%d}" for d in rows.loc[inside, "as_of"]})
    return TrainingWindowSplit(
        int(horizon_days),
        rows=len(rows),
        in_window=int(inside.sum()),
        by_monitored=int((source == "monitored").sum()),
        unknown=int((source == "unknown").sum()),
        versions=versions,
        batches=batches,
    )


def trend(table: pd.DataFrame, metric: str) -> float:
    """Least-squares slope of a metric across batches (overall segment), per 30 days."""
    per = table[(table["segment"] == "all") & (table["as_of"] != ALL_BATCHES)]
    per = per[np.isfinite(per[metric].to_numpy(dtype=float))]
    if len(per) < 2:
        return float("nan")
    days = (pd.to_datetime(per["as_of"]) - pd.to_datetime(per["as_of"]).min()).dt.days
    x = days.to_numpy(dtype=float) / 30.0
    if np.ptp(x) == 0:
        return float("nan")
    return float(np.polyfit(x, per[metric].to_numpy(dtype=float), 1)[0])


PHASE_BACKTEST_COLUMNS = (
    "phase",
    "days_from",
    "days_to",
    "rows",
    "expected_share",
    "realised_share",
    "share_gap",
    "share_gap_se",
    "expected_revenue",
    "realised_revenue",
    "rows_fallback_phasing",
)
"""One row per phase of the horizon: when revenue was expected against when it came."""


def phase_backtest(
    frame: pd.DataFrame,
    shares: np.ndarray,
    bounds: list[tuple[int, int]],
    rounds: int = 200,
    seed: int = 0,
    fallback_rows: int = 0,
) -> pd.DataFrame:
    """Expected and realised share of the horizon's revenue per phase, over completed rows.

    Args:
        frame: One row per scored (partner, as_of) with ``partner_id``, ``pred_revenue``,
            ``label_revenue`` and ``label_revenue_phase_<k>`` (k = 1 .. len(bounds)).
        shares: (rows, phases) the model's phasing share of each row's revenue.
        bounds: Each phase's [from, to) days after the scoring date.
        rounds: Partner bootstrap resamples for ``share_gap_se`` (0: NaN).
        seed: Bootstrap seed.
        fallback_rows: How many rows' ``shares`` are not those of the model that scored them
            (reported as ``rows_fallback_phasing``).

    Returns:
        :data:`PHASE_BACKTEST_COLUMNS`: ``expected_share`` is the prediction-weighted share
        ``sum(pred * share_k) / sum(pred)``, ``realised_share`` ``sum(y_k) / sum(y)``,
        ``share_gap`` their difference (realised - expected) with its partner-bootstrap s.e.;
        the revenue columns are ``sum(pred * share_k)`` and ``sum(y_k)``. Empty without
        predicted or realised revenue.
    """
    k = len(bounds)
    pred = frame["pred_revenue"].to_numpy(dtype=float)
    y = np.column_stack([frame[f"{PHASE_PREFIX}{j + 1}"].to_numpy(dtype=float) for j in range(k)])
    expected = pred[:, None] * np.asarray(shares, dtype=float)
    if pred.sum() <= 0 or y.sum() <= 0:
        return pd.DataFrame(columns=list(PHASE_BACKTEST_COLUMNS))

    def gaps(exp_sums: np.ndarray, real_sums: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return real_sums / real_sums.sum(-1, keepdims=True) - exp_sums / exp_sums.sum(
                -1, keepdims=True
            )

    exp_sums, real_sums = expected.sum(0), y.sum(0)
    se = np.full(k, np.nan)
    if rounds > 0:
        # resample partners (a partner's batches overlap in time): sums per partner first
        codes, _ = pd.factorize(frame["partner_id"].astype(str))
        n = int(codes.max()) + 1
        per_exp = np.zeros((n, k))
        per_real = np.zeros((n, k))
        np.add.at(per_exp, codes, expected)
        np.add.at(per_real, codes, y)
        rng = np.random.default_rng(seed)
        boot = np.empty((rounds, k))
        for r in range(rounds):  # one resample at a time: memory O(partners)
            w = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
            boot[r] = gaps(w @ per_exp, w @ per_real)
        se = np.nanstd(boot, axis=0, ddof=1) if rounds > 1 else se
    return pd.DataFrame(
        {
            "phase": np.arange(1, k + 1),
            "days_from": [a for a, _ in bounds],
            "days_to": [b for _, b in bounds],
            "rows": len(frame),
            "expected_share": exp_sums / exp_sums.sum(),
            "realised_share": real_sums / real_sums.sum(),
            "share_gap": gaps(exp_sums, real_sums),
            "share_gap_se": se,
            "expected_revenue": exp_sums,
            "realised_revenue": real_sums,
            "rows_fallback_phasing": int(fallback_rows),
        },
        columns=list(PHASE_BACKTEST_COLUMNS),
    )


def _settings_text(settings: dict) -> str:
    """``key value, ...`` (touchpoints joined by '/')."""
    return ", ".join(f"{key} {_value_text(v)}" for key, v in settings.items())


@dataclass(frozen=True)
class LabelDefinitionSplit:
    """Which label definition the backtest's labels were built with, and whose rows it fits.

    A history row's predictions are those of the version that scored it, trained to predict
    the labels its training set defined (horizon, engagement period, share, touchpoints).
    The backtest builds labels with the monitored model's definition, and reads only rows
    whose version defined labels the same way: a row of a version that defined them otherwise
    is left out and counted (judged against another target, and pooled into one AUC, ECE or
    bias with rows of another base rate, it would read as drift).

    Attributes:
        definition: The settings the labels were built with (``LABEL_KEYS``, JSON values).
        source: ``model`` (the monitored model's training manifest), ``config`` (it logged
            none: the current config's build settings) or ``model and config`` (its manifest
            lacks some settings).
        from_config: Settings taken from the config (the horizon is always the profile's).
        reason: Why settings came from the config ('' when none did).
        rows: Completed history rows in onboarding scope, before this split (each row's
            horizon that of the version that scored it, when it records one).
        other_definition: Rows of versions that defined labels otherwise: left out.
        unknown: Rows of versions whose definition is unknown (no manifest, a deleted or
            unregistered version): labelled with :attr:`definition` and kept.
        versions: Per version that scored rows (``''``: none recorded): ``rows``, ``status``
            (``same``, ``other``, ``unknown``) and ``differences`` (``{setting: [the
            version's, the backtest's]}``).
    """

    definition: dict
    source: str = "model"
    from_config: tuple[str, ...] = ()
    reason: str = ""
    rows: int = 0
    other_definition: int = 0
    unknown: int = 0
    versions: dict[str, dict] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        """Rows labelled and passed on (to the training-window split and the tables)."""
        return self.rows - self.other_definition

    def note(self) -> str:
        """One sentence: where the definition came from, which rows it left out ('' if clean)."""
        parts = []
        if self.from_config:
            used = {key: self.definition.get(key) for key in self.from_config}
            parts.append(f"{self.reason}: labels built with the config's {_settings_text(used)}")
        if self.other_definition:
            apart = "; ".join(
                (f"version {name}" if name else "unversioned rows")
                + f" ({v['rows']:,} rows): "
                + ", ".join(
                    f"{key} {_value_text(own)} where the monitored model has {_value_text(used)}"
                    for key, (own, used) in v["differences"].items()
                )
                for name, v in self.versions.items()
                if v["status"] == "other"
            )
            parts.append(
                f"{self.other_definition:,} of {self.rows:,} completed rows were scored by "
                f"versions that defined their labels otherwise ({apart}): left out of the "
                "backtest table and checks"
            )
        if self.unknown:
            parts.append(
                f"{self.unknown:,} rows of versions whose label definition is unknown were "
                "labelled with the monitored model's"
            )
        return "; ".join(parts)

    def to_dict(self) -> dict:
        """The ``backtest_label_definition`` field of monitor.json."""
        return {
            "rule": "labels by the monitored model's definition; rows of versions that defined "
            "labels otherwise are left out",
            "source": self.source,
            "definition": dict(self.definition),
            "from_config": list(self.from_config),
            "completed_rows": self.rows,
            "other_definition_rows": self.other_definition,
            "unknown_definition_rows": self.unknown,
            "versions": self.versions,
            "note": self.note(),
        }


def _value_text(value) -> str:
    return "/".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
