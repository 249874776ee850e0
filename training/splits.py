"""Time-based splits by signing cohort: train on older partners, validate on newer ones.

Splits are by partner signing date, never random, and every snapshot of a partner lands on the
same side, so a model is always judged on partners it has never seen, signed after those it
learned from.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _partner_order(frame: pd.DataFrame) -> pd.Series:
    """Partners ordered by signing time (ties by id): partner_id -> rank 0..n-1."""
    first = (
        frame[["partner_id", "signed_at"]]
        .drop_duplicates("partner_id")
        .sort_values(["signed_at", "partner_id"], kind="stable")
    )
    return pd.Series(np.arange(len(first)), index=first["partner_id"].to_numpy())


def newest_partners_mask(frame: pd.DataFrame, share: float) -> np.ndarray:
    """Rows of the newest ``share`` of partners by signing date.

    Args:
        frame: Snapshots with partner_id and signed_at.
        share: Fraction of partners (0-1) to select, newest first.

    Returns:
        Boolean mask over ``frame`` rows.
    """
    if not 0 < share < 1:
        raise ValueError("share must be strictly between 0 and 1")
    rank = _partner_order(frame)
    cut = int(np.floor(len(rank) * (1 - share)))
    return frame["partner_id"].map(rank).to_numpy() >= cut


def holdout_split(frame: pd.DataFrame, holdout_share: float) -> tuple[np.ndarray, np.ndarray]:
    """(train mask, holdout mask): holdout is the newest signing cohorts."""
    hold = newest_partners_mask(frame, holdout_share)
    return ~hold, hold


def time_folds(frame: pd.DataFrame, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window folds over signing order.

    Partners are cut into ``n_folds + 1`` consecutive blocks by signing date; fold i trains on
    blocks 0..i and validates on block i + 1.

    Returns:
        List of (train mask, validation mask).
    """
    if n_folds < 1:
        raise ValueError("n_folds must be >= 1")
    rank = _partner_order(frame)
    block = np.floor(frame["partner_id"].map(rank).to_numpy() * (n_folds + 1) / len(rank))
    return [(block <= i, block == i + 1) for i in range(n_folds)]
