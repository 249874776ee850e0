"""Evaluation metrics for both heads, oracle ratios and per-segment breakdowns."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    mean_tweedie_deviance,
    roc_auc_score,
)

TWEEDIE_POWER = 1.3


def gini(actual: np.ndarray, pred: np.ndarray) -> float:
    """Gini of ``actual`` ordered by ``pred`` (ties broken by order of appearance)."""
    actual = np.asarray(actual, dtype=float)
    pred = np.asarray(pred, dtype=float)
    order = np.lexsort((np.arange(len(pred)), -pred))
    sorted_actual = actual[order]
    total = sorted_actual.sum()
    if total == 0:
        return 0.0
    cum = np.cumsum(sorted_actual) / total
    n = len(actual)
    return float(cum.sum() / n - (n + 1) / (2 * n))


def normalized_gini(actual: np.ndarray, pred: np.ndarray) -> float:
    """Gini of the predictions divided by the Gini of a perfect ordering (1 = perfect)."""
    best = gini(actual, actual)
    return float(gini(actual, pred) / best) if best else 0.0


def top_decile_capture(actual: np.ndarray, pred: np.ndarray) -> float:
    """Share of total actual revenue held by the top 10% of rows by prediction."""
    actual = np.asarray(actual, dtype=float)
    k = max(1, int(np.ceil(0.1 * len(actual))))
    top = np.argsort(-np.asarray(pred, dtype=float), kind="stable")[:k]
    total = actual.sum()
    return float(actual[top].sum() / total) if total else 0.0


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Weighted mean |observed rate - mean prediction| over equal-width probability bins."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    err = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            err += sel.mean() * abs(y[sel].mean() - p[sel].mean())
    return float(err)


def revenue_metrics(actual: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Ranking, error and portfolio metrics of revenue predictions."""
    actual = np.asarray(actual, dtype=float)
    pred = np.asarray(pred, dtype=float)
    total = actual.sum()
    return {
        "normalized_gini": normalized_gini(actual, pred),
        "spearman": _spearman(actual, pred),
        "mae": float(np.mean(np.abs(actual - pred))),
        "rmse": float(np.sqrt(np.mean((actual - pred) ** 2))),
        "tweedie_deviance": float(
            mean_tweedie_deviance(actual, np.maximum(pred, 1e-9), power=TWEEDIE_POWER)
        ),
        "top_decile_capture": top_decile_capture(actual, pred),
        "portfolio_bias": float(pred.sum() / total - 1) if total else float("nan"),
    }


def engagement_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Discrimination and calibration metrics of engagement probabilities."""
    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    both = len(np.unique(y)) == 2
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "ece": expected_calibration_error(y, p),
    }


def primary_score(metrics: dict[str, float]) -> float:
    """The single number the promotion gate compares: mean of revenue Gini and engagement AUC."""
    return 0.5 * metrics["revenue_normalized_gini"] + 0.5 * metrics["engagement_roc_auc"]


def evaluate(
    frame: pd.DataFrame, pred_revenue: np.ndarray, pred_engagement: np.ndarray
) -> dict[str, float]:
    """All metrics of both heads on a labelled frame, prefixed ``revenue_``/``engagement_``."""
    out = {
        f"revenue_{k}": v for k, v in revenue_metrics(frame["label_revenue"], pred_revenue).items()
    }
    out.update(
        {
            f"engagement_{k}": v
            for k, v in engagement_metrics(frame["label_engaged"], pred_engagement).items()
        }
    )
    out["primary_score"] = primary_score(out)
    return out


ORACLE_MIN_PARTNERS = 100
"""Fewest holdout partners an oracle ratio is logged for (README, "Models": measured noise)."""
ORACLE_Z = 2.0
"""An oracle's metric must exceed chance by this many partner-bootstrap s.e. for its ratio."""
_CHANCE = {
    "revenue_normalized_gini": 0.0,
    "revenue_spearman": 0.0,
    "engagement_roc_auc": 0.5,
}


def oracle_ratios(
    metrics: dict[str, float],
    frame: pd.DataFrame,
    truth: pd.DataFrame,
    rounds: int = 0,
    seed: int = 0,
    min_partners: int = ORACLE_MIN_PARTNERS,
) -> dict[str, float]:
    """Model metrics relative to an oracle predicting the simulator's true expectations.

    A ratio is only as meaningful as its denominator: on a tiny holdout the oracle's own Gini
    can sit near 0 (ratios of 6.00 and -2.00 were printed for a 150-partner program). A ratio
    is therefore returned only when the rows matched to the truth hold at least
    ``min_partners`` partners and the oracle's metric exceeds chance (Gini and Spearman 0,
    AUC 0.5) by more than :data:`ORACLE_Z` times its partner-bootstrap s.e. (by more than 0
    with ``rounds`` 0); the primary score's ratio needs both of its parts. The oracle's
    metrics, their s.e. and ``oracle_partners`` are returned either way.

    Args:
        metrics: Output of :func:`evaluate` for the model.
        frame: The labelled evaluation frame (partner_id, as_of).
        truth: partner_id, as_of, true_expected_revenue, true_engagement_prob.
        rounds: Partner-level bootstrap resamples for the oracle's s.e. (0: none).
        seed: Bootstrap seed.
        min_partners: Fewest partners a ratio is returned for.

    Returns:
        oracle metrics (``oracle_<key>``, ``oracle_<key>_se``, ``oracle_partners``) and the
        meaningful model/oracle ratios (``oracle_ratio_<key>``) for Gini, Spearman, AUC and
        the primary score.
    """
    merged = frame[["partner_id", "as_of", "label_revenue", "label_engaged"]].merge(
        truth[["partner_id", "as_of", "true_expected_revenue", "true_engagement_prob"]],
        on=["partner_id", "as_of"],
        how="left",
    )
    ok = merged["true_expected_revenue"].notna() & merged["true_engagement_prob"].notna()
    if not ok.any():
        return {}
    m = merged[ok].reset_index(drop=True)
    oracle = evaluate(m, m["true_expected_revenue"], m["true_engagement_prob"])
    out = {f"oracle_{k}": v for k, v in oracle.items() if k in _ORACLE_KEYS}
    partners = int(m["partner_id"].nunique())
    out["oracle_partners"] = float(partners)
    if partners < min_partners:
        return out
    ses = _oracle_se(m, rounds, seed) if rounds else {}
    meaningful = {}
    for key, chance in _CHANCE.items():
        noise = 0.0
        if rounds:
            out[f"oracle_{key}_se"] = ses[key]
            noise = ORACLE_Z * ses[key] if ses[key] == ses[key] else 0.0
        meaningful[key] = bool(np.isfinite(oracle[key]) and oracle[key] - chance > noise)
    meaningful["primary_score"] = (
        meaningful["revenue_normalized_gini"] and meaningful["engagement_roc_auc"]
    )
    for key in _ORACLE_KEYS:
        if meaningful[key] and np.isfinite(metrics.get(key, np.nan)):
            out[f"oracle_ratio_{key}"] = metrics[key] / oracle[key]
    return out


_ORACLE_KEYS = (
    "revenue_normalized_gini",
    "revenue_spearman",
    "engagement_roc_auc",
    "primary_score",
)


def _oracle_se(merged: pd.DataFrame, rounds: int, seed: int) -> dict[str, float]:
    """Partner-bootstrap s.e. of the oracle's Gini, Spearman and AUC (one pass, on arrays).

    The same resamples and values as :func:`bootstrap_se` of each metric, without a frame
    per resample: on a 50k program's holdout (18k rows, 200 rounds, 2 busy cores) 3.1 s
    instead of 11.5 s.
    """
    revenue = merged["label_revenue"].to_numpy(float)
    engaged = merged["label_engaged"].to_numpy(int)
    true_revenue = merged["true_expected_revenue"].to_numpy(float)
    true_engaged = merged["true_engagement_prob"].to_numpy(float)
    values: dict[str, list[float]] = {key: [] for key in _CHANCE}
    for rows in partner_resamples(merged, rounds, seed):
        y, p = revenue[rows], true_revenue[rows]
        values["revenue_normalized_gini"].append(normalized_gini(y, p))
        values["revenue_spearman"].append(_spearman(y, p))
        values["engagement_roc_auc"].append(rank_auc(engaged[rows], true_engaged[rows]))
    out = {}
    for key, got in values.items():
        finite = [v for v in got if np.isfinite(v)]
        out[key] = float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan")
    return out


def _spearman(actual: np.ndarray, pred: np.ndarray) -> float:
    """Spearman correlation, 0 when either side is constant (as :func:`revenue_metrics`)."""
    if np.ptp(pred) > 0 and np.ptp(actual) > 0:
        return float(spearmanr(actual, pred).statistic)
    return 0.0


def rank_auc(y: np.ndarray, pred: np.ndarray) -> float:
    """ROC AUC of 0/1 labels ``y`` by ``pred`` from the ranks (Mann-Whitney): NaN with one class.

    The same number as ``sklearn.metrics.roc_auc_score`` (tied predictions count one half; the
    tests compare the two on random inputs), without its input checks, which took most of each
    call: the engagement comparison's 200 paired resamples of the tests' 257-row holdout took
    1.27 s of CPU, now 0.23 s. The oracle's s.e. reads it per resample too. Predictions that
    are not all finite go to sklearn, which refuses them as it did.
    """
    y = np.asarray(y).astype(bool)
    pred = np.asarray(pred, dtype=float)
    positives = int(y.sum())
    negatives = len(y) - positives
    if not positives or not negatives:
        return float("nan")
    if not np.isfinite(pred).all():
        return float(roc_auc_score(y, pred))
    ranks = rankdata(pred)  # ties get their mean rank
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def segment_metrics(
    frame: pd.DataFrame,
    pred_revenue: np.ndarray,
    pred_engagement: np.ndarray,
    segments: tuple[str, ...] = ("tier", "region"),
    min_rows: int = 30,
    rounds: int = 0,
    seed: int = 0,
    truth: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Key metrics per segment value (segments with fewer than ``min_rows`` rows skipped).

    Args:
        frame: The labelled evaluation frame (partner_id, as_of, labels, segment columns).
        pred_revenue: The model's revenue predictions of its rows.
        pred_engagement: The model's engagement probabilities of its rows.
        segments: Segment columns.
        min_rows: Smallest segment (rows) reported.
        rounds: Partner-level bootstrap resamples for each segment's revenue-bias s.e.
            (``revenue_portfolio_bias_se``; NaN with 0).
        seed: Bootstrap seed.
        truth: partner_id, as_of, true_expected_revenue (simulated programs): adds
            ``revenue_portfolio_bias_vs_truth``, ``sum(pred) / sum(truth) - 1``.

    Returns:
        One row per segment value: segment, value, rows, partners, revenue Gini, portfolio
        bias and its s.e., (bias vs truth), engagement AUC and ECE.
    """
    rows = []
    data = frame.assign(_pr=np.asarray(pred_revenue), _pe=np.asarray(pred_engagement))
    if truth is not None:
        data = data.merge(
            truth[["partner_id", "as_of", "true_expected_revenue"]],
            on=["partner_id", "as_of"],
            how="left",
        )
    for seg in segments:
        if seg not in data:
            continue
        for value, part in data.groupby(seg, dropna=False, observed=True):
            if len(part) < min_rows:
                continue
            m = evaluate(part, part["_pr"], part["_pe"])
            row = {
                "segment": seg,
                "value": str(value),
                "rows": len(part),
                "partners": int(part["partner_id"].nunique()),
                "revenue_normalized_gini": m["revenue_normalized_gini"],
                "revenue_portfolio_bias": m["revenue_portfolio_bias"],
                "revenue_portfolio_bias_se": (
                    bootstrap_se(
                        part[["partner_id", "label_revenue"]],
                        revenue_bias_metric,
                        part["_pr"].to_numpy(float),
                        rounds,
                        seed,
                    )
                    if rounds > 1
                    else float("nan")
                ),
            }
            if truth is not None:
                true_total = float(part["true_expected_revenue"].sum())
                known = part["true_expected_revenue"].notna().all() and true_total > 0
                row["revenue_portfolio_bias_vs_truth"] = (
                    float(part["_pr"].sum() / true_total - 1) if known else float("nan")
                )
            row["engagement_roc_auc"] = m["engagement_roc_auc"]
            row["engagement_ece"] = m["engagement_ece"]
            rows.append(row)
    return pd.DataFrame(rows)


def segment_bias_summary(
    segments: pd.DataFrame, min_partners: int, max_bias: float, z: float
) -> dict[str, float]:
    """The per-segment revenue bias read against a limit, over segments of ``min_partners``+.

    Returns:
        ``revenue_segments_checked`` (segments with at least ``min_partners`` partners),
        ``revenue_segment_bias_max_abs`` (their largest |bias|; NaN when none is checked),
        ``revenue_segments_beyond_bias_limit`` (how many have ``|bias| - z * s.e. >
        max_bias``: beyond the limit by more than their sampling noise, the promotion
        gate's reading; the s.e. counts as 0 where it is NaN) and, when the table has the
        bias vs truth, ``revenue_segment_bias_vs_truth_max_abs``.
    """
    if segments.empty or "partners" not in segments:
        return {"revenue_segments_checked": 0.0}
    checked = segments[segments["partners"] >= min_partners]
    bias = checked["revenue_portfolio_bias"].to_numpy(float)
    se = checked["revenue_portfolio_bias_se"].fillna(0.0).to_numpy(float)
    out = {
        "revenue_segments_checked": float(len(checked)),
        "revenue_segment_bias_max_abs": float(np.max(np.abs(bias))) if len(bias) else np.nan,
        "revenue_segments_beyond_bias_limit": float(np.sum(np.abs(bias) - z * se > max_bias)),
    }
    if "revenue_portfolio_bias_vs_truth" in checked:
        vs_truth = checked["revenue_portfolio_bias_vs_truth"].to_numpy(float)
        out["revenue_segment_bias_vs_truth_max_abs"] = (
            float(np.nanmax(np.abs(vs_truth))) if np.isfinite(vs_truth).any() else np.nan
        )
    return out


def paired_bootstrap(
    frame: pd.DataFrame,
    metric,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    rounds: int = 200,
    seed: int = 0,
) -> tuple[float, float]:
    """Difference ``metric(a) - metric(b)`` on ``frame`` and its paired bootstrap s.e.

    Partners (all their snapshots together) are resampled with replacement; both predictions
    are scored on the same resample, so the s.e. is that of the difference.

    Args:
        frame: Evaluation rows with ``partner_id`` and the labels ``metric`` reads.
        metric: ``metric(columns, pred) -> float``; ``columns`` maps each column of ``frame``
            to its values in the resample (a plain array: a DataFrame per resample cost
            more than the metrics themselves).
        pred_a: Predictions of the first model (row-aligned with ``frame``).
        pred_b: Predictions of the second model.
        rounds: Bootstrap resamples (0: s.e. is NaN).
        seed: Resampling seed.

    Returns:
        (difference on the full frame, bootstrap standard error of the difference).
    """
    frame = frame.reset_index(drop=True)
    pred_a, pred_b = np.asarray(pred_a, dtype=float), np.asarray(pred_b, dtype=float)
    columns = _columns(frame)
    diff = float(metric(columns, pred_a) - metric(columns, pred_b))
    diffs = []
    for rows in partner_resamples(frame, rounds, seed):
        sample = {col: values[rows] for col, values in columns.items()}
        d = metric(sample, pred_a[rows]) - metric(sample, pred_b[rows])
        if np.isfinite(d):
            diffs.append(d)
    return diff, float(np.std(diffs, ddof=1)) if len(diffs) > 1 else float("nan")


def _columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each column of ``frame`` as an array: what a bootstrap ``metric`` reads."""
    return {col: frame[col].to_numpy() for col in frame.columns}


def partner_resamples(frame: pd.DataFrame, rounds: int, seed: int = 0):
    """Row indices of ``rounds`` partner-level bootstrap resamples of ``frame`` (positional).

    Each resample draws as many partners as ``frame`` holds, with replacement, and takes all
    snapshots of every drawn partner.
    """
    codes, partners = pd.factorize(frame["partner_id"])
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(partners)))
    counts = np.bincount(codes, minlength=len(partners))
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        pick = rng.integers(0, len(partners), len(partners))
        yield order[np.repeat(starts[pick], counts[pick]) + _ranges(counts[pick])]


def _ranges(counts: np.ndarray) -> np.ndarray:
    """0..c-1 for every count, concatenated."""
    ends = np.cumsum(counts)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts, counts)


def bootstrap_se(
    frame: pd.DataFrame, metric, pred: np.ndarray, rounds: int = 200, seed: int = 0
) -> float:
    """Partner-level bootstrap standard error of ``metric(columns, pred)``.

    ``metric`` as for :func:`paired_bootstrap`.
    """
    frame = frame.reset_index(drop=True)
    pred = np.asarray(pred, dtype=float)
    columns = _columns(frame)
    values = [
        metric({col: v[rows] for col, v in columns.items()}, pred[rows])
        for rows in partner_resamples(frame, rounds, seed)
    ]
    values = [v for v in values if np.isfinite(v)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def revenue_gini_metric(columns: Mapping, pred: np.ndarray) -> float:
    """Normalized Gini of ``label_revenue`` (for :func:`paired_bootstrap`)."""
    return normalized_gini(np.asarray(columns["label_revenue"], dtype=float), pred)


def revenue_bias_metric(columns: Mapping, pred: np.ndarray) -> float:
    """Portfolio bias sum(pred) / sum(label) - 1 (for :func:`paired_bootstrap`)."""
    total = np.asarray(columns["label_revenue"], dtype=float).sum()
    return float(np.sum(pred) / total - 1) if total else float("nan")


def revenue_mae_metric(columns: Mapping, pred: np.ndarray) -> float:
    """Mean absolute error of revenue (for :func:`paired_bootstrap`)."""
    return float(np.mean(np.abs(np.asarray(columns["label_revenue"], dtype=float) - pred)))


def revenue_rmse_metric(columns: Mapping, pred: np.ndarray) -> float:
    """Root mean squared error of revenue (a ``metric`` for :func:`paired_bootstrap`)."""
    actual = np.asarray(columns["label_revenue"], dtype=float)
    return float(np.sqrt(np.mean((actual - pred) ** 2)))


def engagement_auc_metric(columns: Mapping, pred: np.ndarray) -> float:
    """ROC AUC of ``label_engaged`` (NaN with one class; for :func:`paired_bootstrap`)."""
    return rank_auc(np.asarray(columns["label_engaged"]).astype(int), pred)
