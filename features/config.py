"""Configuration for simulation and the point-in-time feature build."""

from __future__ import annotations

from datetime import date

import pandas as pd
from pydantic import Field, field_validator

from partnerscore.features.core import MAX_DAYS, FrozenConfig

QUALIFYING_TOUCHPOINTS = ("meeting", "qbr", "co_sell", "joint_event", "lead", "deal")


class SimulateConfig(FrozenConfig):
    """A seeded synthetic partner program.

    Attributes:
        partners: Number of partners to simulate.
        seed: Random seed (0 or more); the same seed gives byte-identical tables.
        end_date: Last day of observed data (the program's "today").
        years: Signing dates spread over this many years before ``end_date``.
        event_scale: Multiplier on the volume of activity/portal events (for benchmarks).
        horizon_days: Horizon of the truth table's expectations.
        truth_ages: Onboarding ages (days since signing) at which truth is written.
        cohort_trend: Cohort drift: the log mean deal size changes by this much per year of
            signing date (relative to the middle of the signing span), so newer cohorts close
            larger (> 0) or smaller (< 0) deals; the truth table follows it. 0 (default): the
            cohorts are exchangeable.
    """

    partners: int = Field(default=2000, ge=1)
    seed: int = Field(default=7, ge=0)
    end_date: date = date(2026, 6, 30)
    years: float = Field(default=3.0, gt=0)
    event_scale: float = Field(default=1.0, gt=0)
    horizon_days: int = Field(default=180, ge=1)
    truth_ages: tuple[int, ...] = (30, 60, 90, 180)
    cohort_trend: float = Field(default=0.0, ge=-1.0, le=1.0)


class BuildConfig(FrozenConfig):
    """How training sets are stacked and labelled.

    Attributes:
        ages: Onboarding ages (days after signed_at) at which snapshots are taken.
        horizon_days: Label window length after each as_of: [as_of, as_of + horizon).
        engagement_period_days: Length of the periods the horizon is cut into; at most
            ``horizon_days`` in a config file or on the command line
            (:func:`engagement_period_conflict`).
        engagement_min_share: Share of periods that need a qualifying touchpoint.
        engagement_touchpoints: Activity types (plus ``lead``/``deal`` creation) that qualify.
        phase_days: Length of the revenue phases the horizon is cut into
            (``label_revenue_phase_<k>``: when the horizon's revenue arrives; the forecast
            phases each partner's expected revenue into calendar periods with them).
        data_end: Last date with complete data; default is the latest date seen in the input.
        data_end_tolerance_days: How many days after the newest event in the data
            ``data_end`` may lie (quiet days at the end of an extract); a later one is refused:
            its labels would count days the data does not cover.

    Day counts are at most :data:`~partnerscore.features.core.MAX_DAYS` (100 years).
    """

    ages: tuple[int, ...] = (30, 60, 90, 180)
    horizon_days: int = Field(default=180, ge=1, le=MAX_DAYS)
    engagement_period_days: int = Field(default=30, ge=1, le=MAX_DAYS)
    engagement_min_share: float = Field(default=0.5, gt=0, le=1)
    engagement_touchpoints: tuple[str, ...] = QUALIFYING_TOUCHPOINTS
    phase_days: int = Field(default=30, ge=1, le=MAX_DAYS)
    data_end: date | None = None
    data_end_tolerance_days: int = Field(default=45, ge=0, le=MAX_DAYS)

    @field_validator("ages")
    @classmethod
    def _ages_positive_sorted(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(a < 0 for a in value):
            raise ValueError("ages must be a non-empty list of non-negative day counts")
        if any(a > MAX_DAYS for a in value):
            raise ValueError(f"ages must be at most {MAX_DAYS:,} days (100 years)")
        return tuple(sorted(set(value)))

    @field_validator("data_end")
    @classmethod
    def _data_end_in_contract_years(cls, value: date | None) -> date | None:
        if value is not None and not 1900 <= value.year <= 2199:
            raise ValueError("data_end must lie in the years 1900-2199 (the data contract's)")
        return value


def engagement_period_conflict(
    config: BuildConfig,
    horizon: str = "build.horizon_days",
    period: str = "build.engagement_period_days",
) -> str | None:
    """Why ``config``'s engagement period cannot define ``label_engaged``, or None.

    A period longer than the horizon is cut at the horizon's end: the horizon is one period,
    and the label silently becomes "any qualifying touchpoint in the horizon". The builders
    accept it (the simulator's truth and the property tests use short horizons with the
    default period); the configuration file and the command line refuse it
    (:class:`~partnerscore.serving.config.AppConfig`, ``partnerscore build``).

    Args:
        config: Build settings.
        horizon: How the message names the horizon (a config key or an option).
        period: How the message names the engagement period.

    Returns:
        One line naming both settings and their values, or None when the period fits.
    """
    if config.engagement_period_days <= config.horizon_days:
        return None
    return (
        f"{period} {config.engagement_period_days} is longer than {horizon} "
        f"{config.horizon_days}: label_engaged would be one period cut at the horizon (any "
        "qualifying touchpoint in it); give an engagement period of at most the horizon"
    )


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


VOLUME_SEGMENT_COLUMNS = ("region", "tier", "partner_type", "industry")
"""The partners table's categories the per-segment volume check may segment by."""


class MonitorConfig(FrozenConfig):
    """Thresholds of ``partnerscore monitor`` (statuses: ok < warn < alarm).

    Attributes:
        window_days: The current batch for drift: snapshots at the trained onboarding ages
            whose as_of falls in [as_of - window_days, as_of).
        min_rows: Fewest rows a group (overall or one segment value) needs, in the reference
            and in the batch, to be compared; smaller groups are skipped.
        psi_warn: Population stability index that warns.
        psi_alarm: Population stability index that alarms.
        alpha: Significance level of the distribution tests (KS and chi-square for numeric
            columns, chi-square for categorical ones), Benjamini-Hochberg adjusted over all
            drift tests of a run: a drift check warns or alarms only when its PSI passes the
            threshold *and* the shift is significant, so small segments do not raise noise.
        missing_warn: Absolute change of a column's missing rate that warns.
        missing_alarm: Absolute change of a column's missing rate that alarms.
        unseen_warn: Share of batch rows with a category never seen in training that warns.
        unseen_alarm: Share of batch rows with an unseen category that alarms.
        outlier_z: Robust z (median/MAD of log1p values) from which a raw row is listed as
            an outlier (upper tail: amounts, durations, volumes).
        outlier_z_alarm: Robust z of the most extreme row that alarms.
        partner_z: Robust z against the partner's own earlier rows from which a new row is
            listed (scale floored at ``partner_scale_floor`` log units).
        partner_scale_floor: Smallest robust scale (log1p units) used for a partner's history.
        partner_min_history: Earlier rows (or months) a partner needs for its own baseline.
        volume_warn_ratio: Rows-per-day ratio (either way) versus the previous batch that warns.
        volume_alarm_ratio: Rows-per-day ratio (either way) that alarms.
        volume_baseline_days: Per-segment volume check: days before the window whose rows
            give each segment's rate per partner-day at each onboarding age (its exposure).
        volume_segments: Partner columns whose values the per-segment volume check tests.
        range_margin: A feature is outside the training range when it lies beyond
            [min, max] by more than this share of the range (log1p scale for non-negative
            features).
        out_of_range_warn: Share of in-scope partners with a feature outside the range that
            warns.
        out_of_range_alarm: Share that alarms.
        stale_warn_days: Days since a table's newest event that warn.
        stale_alarm_days: Days since a table's newest event that alarm.
        backtest_min_rows: Fewest rows a backtest group needs.
        gini_warn: Realised normalized Gini at or below which the revenue head warns.
        gini_alarm: Realised normalized Gini at or below which it alarms.
        auc_warn: Realised ROC AUC at or below which the engagement head warns.
        auc_alarm: Realised ROC AUC at or below which it alarms.
        bias_warn: |sum predicted / sum realised - 1| (revenue) that warns.
        bias_alarm: The same that alarms.
        ece_warn: Engagement calibration error that warns.
        ece_alarm: Engagement calibration error that alarms.
        phase_share_warn: How far a phase's realised share of the horizon's revenue may be
            from the model's phasing, beyond two bootstrap standard errors, before it warns.
        phase_share_alarm: The same that alarms.
    """

    window_days: int = Field(default=90, ge=7)
    min_rows: int = Field(default=30, ge=5)
    psi_warn: float = Field(default=0.1, gt=0)
    psi_alarm: float = Field(default=0.25, gt=0)
    alpha: float = Field(default=0.01, gt=0, lt=1)
    missing_warn: float = Field(default=0.1, gt=0, le=1)
    missing_alarm: float = Field(default=0.25, gt=0, le=1)
    unseen_warn: float = Field(default=0.0, ge=0, le=1)
    unseen_alarm: float = Field(default=0.05, gt=0, le=1)
    outlier_z: float = Field(default=6.0, gt=0)
    outlier_z_alarm: float = Field(default=12.0, gt=0)
    partner_z: float = Field(default=6.0, gt=0)
    partner_scale_floor: float = Field(default=0.5, gt=0)
    partner_min_history: int = Field(default=5, ge=2)
    volume_warn_ratio: float = Field(default=1.5, gt=1)
    volume_alarm_ratio: float = Field(default=3.0, gt=1)
    volume_baseline_days: int = Field(default=365, ge=30)
    volume_segments: tuple[str, ...] = ("region", "tier", "partner_type")

    @field_validator("volume_segments")
    @classmethod
    def _segments_are_partner_categories(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in VOLUME_SEGMENT_COLUMNS]
        if unknown:
            raise ValueError(
                f"{unknown[0]!r} is not a partners column to segment by "
                f"(one of {', '.join(VOLUME_SEGMENT_COLUMNS)})"
            )
        return tuple(dict.fromkeys(value))

    range_margin: float = Field(default=0.25, ge=0)
    out_of_range_warn: float = Field(default=0.02, gt=0, le=1)
    out_of_range_alarm: float = Field(default=0.2, gt=0, le=1)
    stale_warn_days: float = Field(default=14, gt=0)
    stale_alarm_days: float = Field(default=45, gt=0)
    backtest_min_rows: int = Field(default=30, ge=5)
    gini_warn: float = 0.2
    gini_alarm: float = 0.0
    auc_warn: float = 0.6
    auc_alarm: float = 0.5
    bias_warn: float = Field(default=0.25, gt=0)
    bias_alarm: float = Field(default=0.5, gt=0)
    ece_warn: float = Field(default=0.1, gt=0)
    ece_alarm: float = Field(default=0.2, gt=0)
    phase_share_warn: float = Field(default=0.05, gt=0)
    phase_share_alarm: float = Field(default=0.15, gt=0)
