"""Incentive milestones: configurable conditions evaluated on a partner's score history.

A milestone is met at the first scored batch (oldest first) where every condition holds on that
batch's row and, if ``within_days`` is set, the partner's onboarding age is at most that many
days. Everything here is pure: the incentives job (``serving/incentives.py``) reads the decision
ledger, calls :func:`first_achievements` and records awards.
"""

from __future__ import annotations

import operator
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from partnerscore.features.core import FrozenConfig, PartnerscoreError

OPS = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


class Condition(FrozenConfig):
    """One test on a score row: ``column op value`` (e.g. ``score_tier == A``)."""

    column: str = Field(min_length=1)
    op: Literal[">=", ">", "<=", "<", "==", "!="] = ">="
    value: float | str


class Milestone(FrozenConfig):
    """A milestone and the incentive it unlocks.

    Attributes:
        name: Identifier (a partner is awarded each milestone at most once).
        incentive: What the partner receives (training budget, joint-marketing funds...).
        amount: Value of the incentive in dollars (0: not monetary).
        within_days: Must be met at an onboarding age of at most this many days (None: any).
        conditions: All must hold on the same scored batch.
    """

    name: str = Field(min_length=1, max_length=100)
    incentive: str = Field(min_length=1)
    amount: float = Field(default=0.0, ge=0)
    within_days: int | None = Field(default=None, ge=0)
    conditions: tuple[Condition, ...] = Field(min_length=1)


DEFAULT_MILESTONES = (
    Milestone(
        name="tier_a_within_90_days",
        incentive="Training budget for two more certifications",
        amount=5000.0,
        within_days=90,
        conditions=(Condition(column="score_tier", op="==", value="A"),),
    ),
    Milestone(
        name="first_certification_and_won_deal",
        incentive="Joint-marketing funds for a first co-branded campaign",
        amount=10000.0,
        conditions=(
            Condition(column="trainings_certifications_todate", op=">=", value=1),
            Condition(column="deals_won_todate", op=">=", value=1),
        ),
    ),
)


class IncentivesConfig(FrozenConfig):
    """Milestones that unlock incentives (``partnerscore incentives``)."""

    milestones: tuple[Milestone, ...] = DEFAULT_MILESTONES

    @field_validator("milestones")
    @classmethod
    def _unique(cls, value: tuple[Milestone, ...]) -> tuple[Milestone, ...]:
        names = [m.name for m in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"milestone name '{dupes[0]}' is used twice")
        return value


def milestone_columns(config: IncentivesConfig) -> tuple[str, ...]:
    """Score columns the milestones test (recorded with every decision)."""
    cols = {c.column for m in config.milestones for c in m.conditions}
    return tuple(sorted(cols))


def condition_holds(frame: pd.DataFrame, condition: Condition) -> np.ndarray:
    """Rows where the condition holds (a missing value never satisfies it)."""
    if condition.column not in frame:
        return np.zeros(len(frame), dtype=bool)
    col = frame[condition.column]
    compare = OPS[condition.op]
    if isinstance(condition.value, str):
        text = col.astype(object)
        ok = col.notna().to_numpy(bool)
        return ok & np.array([bool(compare(str(v), condition.value)) for v in text], dtype=bool)
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & compare(values, float(condition.value))


def first_achievements(history: pd.DataFrame, config: IncentivesConfig) -> pd.DataFrame:
    """The first batch at which each partner met each milestone.

    Args:
        history: Decision rows with partner_id, as_of, age_days and the milestone columns.
        config: The milestones.

    Returns:
        partner_id, milestone, incentive, amount, achieved_as_of (one row per pair met),
        sorted by partner_id and milestone.

    Raises:
        PartnerscoreError: A milestone tests a column no history row has.
    """
    out = []
    for m in config.milestones:
        for cond in m.conditions:
            if len(history) and cond.column not in history:
                raise PartnerscoreError(
                    f"incentives.milestones '{m.name}': column '{cond.column}' is not recorded "
                    "in the score history (score again with this milestone configured)"
                )
        if history.empty:
            continue
        met = np.ones(len(history), dtype=bool)
        for cond in m.conditions:
            met &= condition_holds(history, cond)
        if m.within_days is not None:
            age = pd.to_numeric(history["age_days"], errors="coerce").to_numpy(float)
            met &= np.nan_to_num(age, nan=np.inf) <= m.within_days
        hits = history.loc[met, ["partner_id", "as_of"]].sort_values(
            ["partner_id", "as_of"], kind="stable"
        )
        first = hits.drop_duplicates("partner_id", keep="first")
        out.append(
            pd.DataFrame(
                {
                    "partner_id": first["partner_id"].astype(str).to_numpy(),
                    "milestone": m.name,
                    "incentive": m.incentive,
                    "amount": m.amount,
                    "achieved_as_of": pd.to_datetime(first["as_of"]).to_numpy(),
                }
            )
        )
    columns = ["partner_id", "milestone", "incentive", "amount", "achieved_as_of"]
    if not out:
        return pd.DataFrame(columns=columns)
    result = pd.concat(out, ignore_index=True)
    return result.sort_values(["partner_id", "milestone"], kind="stable").reset_index(drop=True)
