"""Time-based splits by signing cohort: train on older partners, validate on newer ones.

Splits are by partner signing date, never random, and every snapshot of a partner lands on the
same side, so a model is always judged on partners it has never seen, signed after those it
learned from.

When the frame has a ``cohort`` column (the signing quarter written by ``partnerscore build``),
cuts fall on cohort boundaries: the holdout is the newest whole cohorts whose partner count is
closest to the requested share, and tuning folds are expanding windows of whole cohorts. If no
cohort boundary comes within half of the requested share (e.g. two huge cohorts), or there are
too few cohorts for the folds, the cut falls between partners in signing order instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _partners(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per partner (partner_id, signed_at[, cohort]) ordered by signing time, then id."""
    cols = ["partner_id", "signed_at"] + (["cohort"] if "cohort" in frame.columns else [])
    return (
        frame[cols]
        .drop_duplicates("partner_id")
        .sort_values(["signed_at", "partner_id"], kind="stable")
        .reset_index(drop=True)
    )


def _cohort_index(partners: pd.DataFrame) -> np.ndarray | None:
    """Cohort number per partner (0 = oldest), or None when cohorts cannot define cuts.

    Cohorts are usable when every partner has one and each cohort is a contiguous run of
    partners in signing order (a signing period), with at least two cohorts.
    """
    if "cohort" not in partners.columns or partners["cohort"].isna().any():
        return None
    first = partners.groupby("cohort", sort=False)["signed_at"].min().sort_values(kind="stable")
    if len(first) < 2:
        return None
    index = partners["cohort"].map(pd.Series(np.arange(len(first)), index=first.index))
    index = index.to_numpy(dtype=int)
    if (np.diff(index) < 0).any():
        return None
    return index


def _by_partner(frame: pd.DataFrame, partners: pd.DataFrame, values: np.ndarray) -> np.ndarray:
    """Broadcast per-partner values (aligned with ``partners``) to the rows of ``frame``."""
    lookup = pd.Series(values, index=partners["partner_id"].to_numpy())
    return frame["partner_id"].map(lookup).to_numpy()


def newest_partners_mask(frame: pd.DataFrame, share: float) -> np.ndarray:
    """Rows of the newest signing cohorts holding about ``share`` of the partners.

    Args:
        frame: Snapshots with partner_id, signed_at and optionally cohort.
        share: Fraction of partners (0-1) to select, newest first.

    Returns:
        Boolean mask over ``frame`` rows (all snapshots of a partner on the same side).
    """
    if not 0 < share < 1:
        raise ValueError("share must be strictly between 0 and 1")
    partners = _partners(frame)
    n = len(partners)
    target = share * n
    cut = int(np.floor(n * (1 - share)))
    cohort = _cohort_index(partners)
    if cohort is not None:
        starts = np.searchsorted(cohort, np.arange(1, cohort.max() + 1))
        held = n - starts
        best = int(starts[np.argmin(np.abs(held - target))])
        if 0.5 * target <= n - best <= 1.5 * target:
            cut = best
    newest = np.arange(n) >= cut
    return _by_partner(frame, partners, newest).astype(bool)


def holdout_split(frame: pd.DataFrame, holdout_share: float) -> tuple[np.ndarray, np.ndarray]:
    """(train mask, holdout mask): the holdout is the newest signing cohorts."""
    hold = newest_partners_mask(frame, holdout_share)
    return ~hold, hold


def time_folds(frame: pd.DataFrame, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window folds over signing order.

    Partners are cut into ``n_folds + 1`` consecutive blocks of about equal size by signing
    date (whole cohorts when there are enough of them); fold i trains on blocks 0..i and
    validates on block i + 1.

    Returns:
        List of (train mask, validation mask).
    """
    if n_folds < 1:
        raise ValueError("n_folds must be >= 1")
    partners = _partners(frame)
    n = len(partners)
    block = np.floor(np.arange(n) * (n_folds + 1) / n).astype(int)
    cohort = _cohort_index(partners)
    if cohort is not None and cohort.max() + 1 >= n_folds + 1:
        # every cohort goes to the block of its middle partner: blocks follow cohort bounds
        starts = np.searchsorted(cohort, np.arange(cohort.max() + 1))
        sizes = np.bincount(cohort, minlength=cohort.max() + 1)
        snapped = block[starts + sizes // 2][cohort]
        if len(np.unique(snapped)) == n_folds + 1:
            block = snapped
    rows = _by_partner(frame, partners, block)
    return [(rows <= i, rows == i + 1) for i in range(n_folds)]


def partner_folds(
    frame: pd.DataFrame, n_folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_folds`` random folds of partners (every snapshot of a partner in one fold).

    Fold i trains on every other fold and validates on fold i, so each row is out of fold
    exactly once. Partners are shuffled with ``seed`` and dealt round-robin: fold sizes
    differ by at most one partner.

    Returns:
        List of (train mask, validation mask).
    """
    if n_folds < 2:
        raise ValueError("n_folds must be >= 2")
    partners = _partners(frame)
    fold = np.empty(len(partners), dtype=int)
    fold[np.random.default_rng(seed).permutation(len(partners))] = (
        np.arange(len(partners)) % n_folds
    )
    rows = _by_partner(frame, partners, fold)
    return [(rows != i, rows == i) for i in range(n_folds)]
