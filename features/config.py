"""Configuration for simulation and the point-in-time feature build."""

from __future__ import annotations

from datetime import date

import pandas as pd
from pydantic import Field, field_validator

from partnerscore.features.core import FrozenConfig

QUALIFYING_TOUCHPOINTS = ("meeting", "qbr", "co_sell", "joint_event", "lead", "deal")


class SimulateConfig(FrozenConfig):
    """A seeded synthetic partner program.

    Attributes:
        partners: Number of partners to simulate.
        seed: Random seed; the same seed gives byte-identical tables.
        end_date: Last day of observed data (the program's "today").
        years: Signing dates spread over this many years before ``end_date``.
        event_scale: Multiplier on the volume of activity/portal events (for benchmarks).
        horizon_days: Horizon of the truth table's expectations.
        truth_ages: Onboarding ages (days since signing) at which truth is written.
    """

    partners: int = Field(default=2000, ge=1)
    seed: int = 7
    end_date: date = date(2026, 6, 30)
    years: float = Field(default=3.0, gt=0)
    event_scale: float = Field(default=1.0, gt=0)
    horizon_days: int = Field(default=180, ge=1)
    truth_ages: tuple[int, ...] = (30, 60, 90, 180)


class BuildConfig(FrozenConfig):
    """How training sets are stacked and labelled.

    Attributes:
        ages: Onboarding ages (days after signed_at) at which snapshots are taken.
        horizon_days: Label window length after each as_of: [as_of, as_of + horizon).
        engagement_period_days: Length of the periods the horizon is cut into.
        engagement_min_share: Share of periods that need a qualifying touchpoint.
        engagement_touchpoints: Activity types (plus ``lead``/``deal`` creation) that qualify.
        data_end: Last date with complete data; default is the latest date seen in the input.
    """

    ages: tuple[int, ...] = (30, 60, 90, 180)
    horizon_days: int = Field(default=180, ge=1)
    engagement_period_days: int = Field(default=30, ge=1)
    engagement_min_share: float = Field(default=0.5, gt=0, le=1)
    engagement_touchpoints: tuple[str, ...] = QUALIFYING_TOUCHPOINTS
    data_end: date | None = None

    @field_validator("ages")
    @classmethod
    def _ages_positive_sorted(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(a < 0 for a in value):
            raise ValueError("ages must be a non-empty list of non-negative day counts")
        return tuple(sorted(set(value)))


class ValidateConfig(FrozenConfig):
    """Plausibility rules applied while validating raw tables.

    Attributes:
        reference_date: The data's "today": observed events dated after it (plus the tolerance)
            are implausible and quarantined. Default: the current UTC date when validating.
        future_tolerance_days: Days after ``reference_date`` still accepted (clock skew, time
            zones, late loads).
    """

    reference_date: date | None = None
    future_tolerance_days: int = Field(default=1, ge=0)

    def latest_plausible(self) -> pd.Timestamp:
        """The latest accepted timestamp of an observed event (exclusive bound)."""
        ref = (
            pd.Timestamp(self.reference_date)
            if self.reference_date is not None
            else pd.Timestamp.now(tz="UTC").tz_convert(None).normalize()
        )
        return ref + pd.Timedelta(days=1 + self.future_tolerance_days)
