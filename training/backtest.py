"""Backtest metrics: past predictions against what partners then did, per batch and segment."""

from __future__ import annotations

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
