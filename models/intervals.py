"""Prediction intervals for the revenue head: split conformal on out-of-fold predictions.

Per partner: the conformity score is the ratio ``y / mu`` of realised to predicted revenue,
computed on out-of-fold predictions (each partner predicted by a model that never saw it).
Scores are grouped into bins of ``mu`` (Mondrian conformal: a small prediction and a large one
do not share a spread), and per bin the interval is ``[mu * q_lo, mu * q_hi]`` with the
finite-sample conformal quantiles of the scores. Revenue has a point mass at zero: where at
least ``1 - coverage`` of a bin's partners realised nothing... the lower end is 0 and the upper
quantile alone carries the coverage, so the interval is not wasted on zeros.

Portfolio (segment) intervals add many partners, so they use a variance model instead of
adding per-partner bounds: ``Var(y) = phi * mu ** power`` (tweedie form), ``phi`` estimated out of
fold, partners independent, and a normal approximation of the sum — ``sum mu +- z * sqrt(sum
phi mu^power)``, bounded below by 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ``ceil((n + 1) * level) / n`` empirical quantile (the split-conformal one)."""
    s = np.sort(np.asarray(scores, dtype=float))
    n = len(s)
    if n == 0:
        return float("nan")
    k = int(np.ceil((n + 1) * level)) - 1
    return float(s[min(max(k, 0), n - 1)])


class RevenueIntervals:
    """Mondrian split-conformal intervals for expected revenue plus a portfolio variance model.

    Args:
        coverage: Target share of partners whose realised revenue falls in their interval.
        bins: Number of prediction bins (quantiles of the out-of-fold predictions).
        power: Variance power of the portfolio variance model.
    """

    def __init__(self, coverage: float = 0.8, bins: int = 5, power: float = 1.5) -> None:
        self.coverage = coverage
        self.bins = bins
        self.power = power

    def fit(self, y: np.ndarray, mu: np.ndarray) -> RevenueIntervals:
        """Fit from realised revenue and out-of-fold predictions of the same rows."""
        if not 0 < self.coverage < 1:
            raise ValueError("coverage must be strictly between 0 and 1")
        if self.bins < 1:
            raise ValueError("bins must be >= 1")
        y = np.asarray(y, dtype=float)
        mu = np.maximum(np.asarray(mu, dtype=float), 1e-9)
        if len(y) != len(mu) or len(y) < 20:
            raise ValueError("need at least 20 out-of-fold predictions with labels")
        edges = np.quantile(mu, np.linspace(0, 1, self.bins + 1)[1:-1])
        self.edges_ = np.unique(edges)
        which = np.searchsorted(self.edges_, mu, side="right")
        ratio = y / mu
        alpha = 1 - self.coverage
        lo, hi = [], []
        for b in range(len(self.edges_) + 1):
            r = ratio[which == b]
            if len(r) == 0:
                r = ratio
            zero_share = float(np.mean(r <= 0))
            if zero_share >= alpha / 2:
                # the zero mass covers the lower tail: interval [0, q(coverage)]
                lo.append(0.0)
                hi.append(conformal_quantile(r, self.coverage))
            else:
                lo.append(conformal_quantile(r, alpha / 2))
                hi.append(conformal_quantile(r, 1 - alpha / 2))
        self.lo_ratio_ = np.array(lo)
        self.hi_ratio_ = np.array(hi)
        self.phi_ = float(np.mean((y - mu) ** 2 / mu**self.power))
        return self

    def predict(self, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) bounds per prediction."""
        mu = np.asarray(mu, dtype=float)
        which = np.searchsorted(self.edges_, np.maximum(mu, 1e-9), side="right")
        return mu * self.lo_ratio_[which], mu * self.hi_ratio_[which]

    def sd(self, mu: np.ndarray) -> np.ndarray:
        """Standard deviation of realised revenue around ``mu`` under the variance model."""
        mu = np.maximum(np.asarray(mu, dtype=float), 0.0)
        return np.sqrt(self.phi_ * mu**self.power)

    def portfolio(self, mu: np.ndarray, sd: np.ndarray | None = None) -> tuple[float, float, float]:
        """(expected total, lower, upper) of a sum of independent partners' revenue."""
        mu = np.asarray(mu, dtype=float)
        sd = self.sd(mu) if sd is None else np.asarray(sd, dtype=float)
        return portfolio_interval(mu, sd, self.coverage)

    def to_dict(self) -> dict:
        """Plain description (logged to MLflow)."""
        return {
            "coverage": self.coverage,
            "edges": self.edges_.tolist(),
            "lo_ratio": self.lo_ratio_.tolist(),
            "hi_ratio": self.hi_ratio_.tolist(),
            "power": self.power,
            "phi": self.phi_,
        }


def portfolio_interval(
    mu: np.ndarray, sd: np.ndarray, coverage: float = 0.8
) -> tuple[float, float, float]:
    """(total, lower, upper): normal approximation of a sum of independent partners."""
    total = float(np.sum(mu))
    spread = float(norm.ppf(0.5 + coverage / 2) * np.sqrt(np.sum(np.square(sd))))
    return total, max(total - spread, 0.0), total + spread


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Share of rows with ``lo <= y <= hi``."""
    y = np.asarray(y, dtype=float)
    return float(np.mean((y >= np.asarray(lo)) & (y <= np.asarray(hi))))


def segment_coverage(
    frame: pd.DataFrame, y: str, mu: str, sd: str, by: str, coverage_level: float
) -> pd.DataFrame:
    """Per segment value: realised total, predicted total and its interval, covered or not."""
    rows = []
    for value, part in frame.groupby(by, observed=True, dropna=False):
        total, lo, hi = portfolio_interval(part[mu], part[sd], coverage_level)
        actual = float(part[y].sum())
        rows.append(
            {
                "segment": by,
                "value": str(value),
                "rows": len(part),
                "actual": actual,
                "expected": total,
                "lo": lo,
                "hi": hi,
                "covered": lo <= actual <= hi,
            }
        )
    return pd.DataFrame(rows)
