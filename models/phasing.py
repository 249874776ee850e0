"""When a horizon's revenue arrives: the share of it in each phase, per onboarding age.

The revenue head predicts a partner's expected revenue over the whole horizon
``[as_of, as_of + horizon)``. A forecast that feeds a monthly plan needs it by calendar month,
and revenue does not arrive evenly: a partner scored at day 30 is still ramping up, so more of
its horizon's revenue comes late than for one scored at day 180. The training set's phases
(``label_revenue_phase_<k>``, ``build.phase_days`` each, the last one cut at the horizon's end)
give, per snapshot age, the revenue-weighted share of each phase:
``share_k = sum(phase_k) / sum(label_revenue)`` over that age's rows (an age with fewer than
:data:`MIN_REVENUE_ROWS` rows with revenue uses the pooled shares). The expected revenue of a
partner in phase ``k`` is ``pred_revenue * share_k``: summed over partners it is unbiased for the
portfolio whenever the head is (the shares are the portfolio's own, not a per-partner model).

A phase's revenue is spread evenly over its days (:func:`calendar_weights`), so a calendar
period receives each partner's phases in proportion to the days they share with it.

Variance: a partner's revenue in a part ``w`` of its horizon (``w``: that part's share of its
expected revenue) has a standard deviation of at most ``sqrt(w)`` times the horizon's
(``pred_revenue_sd``): deals arriving independently give ``w`` times the variance, a partner's
own level (shared by all of its phases) ``w ** 2`` times, and ``w ** 2 <= w``. The portfolio
interval of a calendar period uses that bound (conservative: the holdout's per-phase cells are
covered at least as often as the nominal coverage, see the README).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

MIN_REVENUE_ROWS = 50
"""Rows with revenue an onboarding age needs for shares of its own (else the pooled ones)."""


@dataclass
class RevenuePhasing:
    """Shares of the horizon's revenue per phase, per onboarding age.

    Attributes:
        phase_days: Length of a phase (the last one is cut at the horizon's end).
        horizon_days: Length of the horizon.
        pooled: Shares over all training rows (add up to 1).
        ages: Onboarding ages with shares of their own (ascending).
        by_age: One share vector per age in ``ages``.
    """

    phase_days: int
    horizon_days: int
    pooled: list[float]
    ages: list[float] = field(default_factory=list)
    by_age: list[list[float]] = field(default_factory=list)

    @property
    def n_phases(self) -> int:
        """How many phases cover the horizon."""
        return len(self.pooled)

    @classmethod
    def fit(
        cls,
        revenue: np.ndarray,
        phases: np.ndarray,
        age: np.ndarray | None,
        phase_days: int,
        horizon_days: int,
    ) -> RevenuePhasing | None:
        """Shares from realised revenue (``label_revenue``) and its phases (n rows, k phases).

        None when no row has revenue (nothing says when it arrives).
        """
        revenue = np.asarray(revenue, dtype=float)
        phases = np.asarray(phases, dtype=float).reshape(len(revenue), -1)
        if phases.shape[1] != int(np.ceil(horizon_days / phase_days)):
            raise ValueError(
                f"{phases.shape[1]} phases do not cut a {horizon_days}-day horizon into "
                f"{phase_days}-day phases"
            )
        ok = np.isfinite(revenue) & np.isfinite(phases).all(axis=1)
        pooled = _shares(phases[ok])
        if pooled is None:
            return None
        ages, by_age = [], []
        if age is not None:
            age = np.asarray(age, dtype=float)
            for a in np.unique(age[ok & np.isfinite(age)]):
                rows = ok & (age == a)
                if np.sum(rows & (revenue > 0)) >= MIN_REVENUE_ROWS:
                    ages.append(float(a))
                    by_age.append(_shares(phases[rows]))
        return cls(phase_days, horizon_days, pooled, ages, by_age)

    def shares(self, age: np.ndarray | None, n: int | None = None) -> np.ndarray:
        """(n, k) shares per row: those of the oldest fitted age a row has reached.

        A row younger than every fitted age takes the youngest one's, a row without an age (or
        a model without ages) the pooled shares.
        """
        if age is None:
            return np.tile(np.asarray(self.pooled, dtype=float), (n or 0, 1))
        age = np.asarray(age, dtype=float)
        out = np.tile(np.asarray(self.pooled, dtype=float), (len(age), 1))
        if self.ages:
            known = np.isfinite(age)
            at = np.maximum(np.searchsorted(self.ages, age[known], side="right") - 1, 0)
            out[known] = np.asarray(self.by_age, dtype=float)[at]
        return out

    def to_dict(self) -> dict:
        """Plain description (logged with the run, kept in the bundle's metadata)."""
        return {
            "phase_days": self.phase_days,
            "horizon_days": self.horizon_days,
            "pooled": list(self.pooled),
            "by_age": {str(int(a)): list(s) for a, s in zip(self.ages, self.by_age, strict=True)},
        }

    @classmethod
    def from_dict(cls, data: dict | None) -> RevenuePhasing | None:
        """The phasing :meth:`to_dict` described (None for None or an unreadable description)."""
        if not isinstance(data, dict):
            return None
        try:
            by_age = data.get("by_age") or {}
            ages = sorted(by_age, key=float)
            return cls(
                int(data["phase_days"]),
                int(data["horizon_days"]),
                [float(v) for v in data["pooled"]],
                [float(a) for a in ages],
                [[float(v) for v in by_age[a]] for a in ages],
            )
        except (KeyError, TypeError, ValueError):
            return None

    def same_layout(self, horizon_days: int, phase_days: int, n_phases: int) -> bool:
        """True when this phasing cuts ``horizon_days`` into the same ``n_phases`` phases."""
        return (
            int(self.horizon_days) == int(horizon_days)
            and int(self.phase_days) == int(phase_days)
            and self.n_phases == int(n_phases)
            and all(len(s) == self.n_phases for s in self.by_age)
        )


def _shares(phases: np.ndarray) -> list[float] | None:
    total = phases.sum()
    if not total > 0:
        return None
    return (phases.sum(axis=0) / total).tolist()


def phase_bounds(horizon_days: int, phase_days: int) -> list[tuple[int, int]]:
    """Each phase's [first day, end day) after as_of; the last one cut at the horizon's end."""
    starts = range(0, horizon_days, phase_days)
    return [(s, min(s + phase_days, horizon_days)) for s in starts]


def calendar_weights(
    as_of: pd.Series, phase_amounts: np.ndarray, horizon_days: int, phase_days: int, freq: str
) -> pd.DataFrame:
    """Each row's expected revenue per calendar period, phases spread evenly over their days.

    Args:
        as_of: Each row's cut-off (its horizon starts that day).
        phase_amounts: (n, k) expected revenue per phase (``pred_revenue_phase_<k>``).
        horizon_days: Horizon length.
        phase_days: Phase length.
        freq: Pandas period frequency of the calendar periods (``D``, ``W-SUN``, ``M``, ``Q``).

    Returns:
        Long frame ``row`` (position in the input), ``period_start`` (first day of the
        calendar period), ``amount`` (expected revenue of the row in it) and ``share`` (the
        period's share of the row's horizon revenue), one line per (row, period) with days of
        the row's horizon in it.
    """
    start = pd.to_datetime(pd.Series(as_of)).dt.floor("D").to_numpy("datetime64[D]")
    amounts = np.asarray(phase_amounts, dtype=float)
    n = len(start)
    bounds = phase_bounds(horizon_days, phase_days)
    if amounts.shape != (n, len(bounds)):
        raise ValueError(f"expected {len(bounds)} phase amounts per row, got {amounts.shape}")
    rows, periods, parts = [], [], []
    for k, (a, b) in enumerate(bounds):
        lo, hi = start + a, start + b  # the phase's days [lo, hi)
        per_day = amounts[:, k] / (b - a)
        period = pd.PeriodIndex(lo, freq=freq)
        live = np.ones(n, dtype=bool)
        while live.any():
            p_start = period.start_time.to_numpy("datetime64[D]")
            p_end = (period + 1).start_time.to_numpy("datetime64[D]")
            days = (np.minimum(p_end, hi) - np.maximum(p_start, lo)).astype(np.int64)
            take = live & (days > 0)
            rows.append(np.flatnonzero(take))
            periods.append(p_start[take])
            parts.append(per_day[take] * days[take])
            live &= p_end < hi
            period = period + 1
    frame = pd.DataFrame(
        {
            "row": np.concatenate(rows) if rows else np.empty(0, np.int64),
            "period_start": np.concatenate(periods) if periods else np.empty(0, "datetime64[D]"),
            "amount": np.concatenate(parts) if parts else np.empty(0),
        }
    )
    out = frame.groupby(["row", "period_start"], sort=True, as_index=False)["amount"].sum()
    total = amounts.sum(axis=1)[out["row"].to_numpy()]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["share"] = np.where(total > 0, out["amount"].to_numpy() / total, 0.0)
    return out
