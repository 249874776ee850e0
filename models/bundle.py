"""PartnerModel: both heads plus everything needed to score and explain a plain feature frame."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from partnerscore.features.registry import FeatureSpec
from partnerscore.models.config import PolicyConfig
from partnerscore.models.intervals import RevenueIntervals
from partnerscore.models.phasing import RevenuePhasing

if TYPE_CHECKING:  # LightGBM and scikit-learn: not needed to score (see scoring_view)
    from partnerscore.models.heads import EngagementClassifier, RevenueRegressor

QUANTILES = np.linspace(0.0, 1.0, 101)

PHASE_COLUMN = "pred_revenue_phase_"
"""Prefix of the score columns of expected revenue per phase (``pred_revenue_phase_1`` ...)."""


def parse_data_end(value) -> pd.Timestamp | None:
    """A recorded data end (text such as ``2026-06-30 23:58:23``) as a timestamp, else None."""
    if isinstance(value, str):
        if not re.match(r"\d{4}-\d{2}-\d{2}", value.strip()):  # not "today", "now" or junk
            return None
    elif not isinstance(value, pd.Timestamp):
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if pd.isna(stamp) or stamp.tzinfo is not None:
        return None
    return stamp


@dataclass
class PartnerModel:
    """The registered model: revenue and engagement heads with their feature contract.

    Attributes:
        revenue: Fitted revenue head.
        engagement: Fitted engagement head.
        feature_specs: Declarations of the features, in model column order.
        categories: Categorical feature -> categories seen in training.
        policy: Scoring policy bundled with the model.
        reference: Quantiles of both heads' predictions on the training set
            (``revenue_quantiles``, ``engagement_quantiles``; 101 points each).
        metadata: config_hash, registry_version, trained_at, training summary, version,
            ``training_data_end`` (the build's label data end, text; see
            :attr:`training_data_end`).
        intervals: Conformal revenue intervals and portfolio variance model (None in
            bundles trained before they existed).
        phasing: When the horizon's revenue arrives (share per phase and onboarding age;
            None in bundles trained before it existed or on labels without phases).
    """

    revenue: RevenueRegressor
    engagement: EngagementClassifier
    feature_specs: list[FeatureSpec]
    categories: dict[str, list[str]]
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    reference: dict[str, list[float]] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    intervals: RevenueIntervals | None = None
    phasing: RevenuePhasing | None = None

    @property
    def feature_names(self) -> list[str]:
        """Model input columns, in order."""
        return [spec.name for spec in self.feature_specs]

    @property
    def training_data_end(self) -> pd.Timestamp | None:
        """The end of the data the model was trained on (the build's ``data_end``).

        Every training row's outcome period ``[as_of, as_of + horizon)`` ends on or before it.
        None for a model trained before ``train`` recorded it (``metadata["training_data_end"]``)
        or with an unreadable value.
        """
        return parse_data_end(self.metadata.get("training_data_end"))

    @staticmethod
    def categories_from(frame: pd.DataFrame, specs: list[FeatureSpec]) -> dict[str, list[str]]:
        """Sorted categories of every categorical feature in a (training) frame."""
        out = {}
        for spec in specs:
            if spec.kind == "categorical":
                values = frame[spec.name].dropna().astype(str).unique().tolist()
                out[spec.name] = sorted(values)
        return out

    def prepare(self, X: pd.DataFrame) -> pd.DataFrame:
        """Model-ready frame: ordered columns, float numerics, training categories.

        Missing columns (e.g. an optional table absent at scoring time) become all-missing;
        unseen categories become missing. Plain ``str``/object input is accepted, which is what
        the MLflow pyfunc receives.
        """
        data = {}
        n = len(X)
        for spec in self.feature_specs:
            col = X[spec.name] if spec.name in X.columns else pd.Series(np.nan, index=X.index)
            if spec.kind == "categorical":
                categories = self.categories.get(spec.name, [])
                if isinstance(col.dtype, pd.StringDtype):  # text already: missing stays missing
                    dtype = pd.CategoricalDtype(categories)
                    codes = dtype.categories.get_indexer(col)  # -1: missing or unseen
                    data[spec.name] = pd.Categorical.from_codes(codes, dtype=dtype)
                    continue
                text = col.astype(object).where(col.notna(), None)
                data[spec.name] = pd.Categorical(text.to_numpy(dtype=object), categories=categories)
            elif col.dtype == np.float64:
                data[spec.name] = col.to_numpy(dtype=float, copy=True)
            else:
                data[spec.name] = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
        # every column is a new array of our own: no consolidation copy
        return pd.DataFrame(data, index=pd.RangeIndex(n), copy=False)

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        """pred_revenue and pred_engagement per row."""
        prepared = self.prepare(X)
        return pd.DataFrame(
            {
                "pred_revenue": self.revenue.predict(prepared),
                "pred_engagement": self.engagement.predict_proba(prepared)[:, 1],
            }
        )

    def raw_contributions(
        self, X: pd.DataFrame, num_threads: int | None = None
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-head SHAP contributions in raw-margin space.

        Returns:
            ``{"revenue": (contrib (n, k), base (n,)), "engagement": (...)}``; for each head
            ``base + contrib.sum(1)`` is the raw margin (log revenue, engagement logit).
        """
        prepared = self.prepare(X)
        out = {}
        for name, head in (("revenue", self.revenue), ("engagement", self.engagement)):
            contrib = head.raw_contributions(prepared, num_threads=num_threads)
            out[name] = (contrib[:, :-1], contrib[:, -1])
        return out

    def set_reference(self, X: pd.DataFrame) -> None:
        """Store prediction quantiles of a (training) frame for stable composite scores."""
        preds = self.predict(X)
        self.reference = {
            "revenue_quantiles": np.quantile(preds["pred_revenue"], QUANTILES).tolist(),
            "engagement_quantiles": np.quantile(preds["pred_engagement"], QUANTILES).tolist(),
        }

    def scoring_view(self) -> PartnerModel | None:
        """The model with lean heads: it scores without importing LightGBM or scikit-learn.

        The same scores, drivers and subscores as the model's, bit for bit
        (:mod:`~partnerscore.models.head_scoring`); ``predict`` sums the contributions
        instead of asking the booster (equal to rounding). None when a head needs LightGBM to
        score (a tree too large for the compiled tables) or scikit-learn (a step ``isotonic``
        calibration map).
        """
        from partnerscore.models.head_scoring import lean_head

        revenue, engagement = lean_head(self.revenue), lean_head(self.engagement)
        if revenue is None or engagement is None:
            return None
        return dataclasses.replace(
            self, revenue=revenue, engagement=engagement, metadata=dict(self.metadata)
        )

    def revenue_intervals(
        self, pred_revenue: np.ndarray, age_days: np.ndarray | None = None
    ) -> dict[str, np.ndarray] | None:
        """The interval columns: ``pred_revenue_lo`` / ``_hi`` / ``_sd`` / ``_median``, level.

        ``revenue_level_cv`` is the interval model's shared level error, on every row.

        ``pred_revenue_median`` is the p50 of the predictive distribution (NaN for interval
        models fitted before it existed). ``age_days`` (each row's onboarding age) picks the
        conformal quantile of its age when the interval model has them.

        None when the bundle has no interval model (older versions).
        """
        intervals = getattr(self, "intervals", None)
        if intervals is None:
            return None
        lo, hi = intervals.predict(pred_revenue, age_days)
        return {
            "pred_revenue_lo": lo,
            "pred_revenue_hi": hi,
            "pred_revenue_sd": intervals.sd(pred_revenue),
            "pred_revenue_median": intervals.median(pred_revenue),
            # the model's shared level error: a sum of rows adds (level * its mean)^2 to the
            # variance of independent partners (README, "Forecast file")
            "revenue_level_cv": np.full(len(pred_revenue), intervals.level),
            "revenue_interval_coverage": np.full(len(pred_revenue), float(intervals.coverage)),
        }

    def revenue_phases(
        self, pred_revenue: np.ndarray, age_days: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """``pred_revenue_phase_<k>``: expected revenue per phase of the horizon.

        ``pred_revenue`` times the phase's share of the horizon's revenue at the row's
        onboarding age (:class:`~partnerscore.models.phasing.RevenuePhasing`); the phases add
        up to ``pred_revenue``. Empty when the bundle has no phasing (older versions).
        """
        phasing = getattr(self, "phasing", None)
        if phasing is None:
            return {}
        pred = np.asarray(pred_revenue, dtype=float)
        shares = phasing.shares(age_days, len(pred))
        return {f"{PHASE_COLUMN}{k + 1}": pred * shares[:, k] for k in range(phasing.n_phases)}
