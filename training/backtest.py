"""Backtest metrics: past predictions against what partners then did, per batch and segment."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

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
