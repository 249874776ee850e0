"""PartnerModel: both heads plus everything needed to score and explain a plain feature frame."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from partnerscore.features.core import case_key, quoted
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


RESPELLED = "respelled_categories"
"""Score column: per row, the categories read in the model's spelling
(:meth:`PartnerModel.respell`: ``tier 'Registered' -> 'registered'``, several joined by ``; ``;
empty when none)."""

UNSEEN = "unseen_categories"
"""Score column: per row, the categories the model never saw, scored as missing
(:func:`~partnerscore.models.frame_check.unseen_categories`: ``industry=aerospace``, several
joined by ``; ``; empty when none). A category known in another case is in :data:`RESPELLED`
instead."""


def known_spellings(categories: Iterable[str]) -> dict[str, str]:
    """:func:`~partnerscore.features.core.case_key` -> the one known category of that key.

    A key two known categories share (a model trained on both ``EMEA`` and ``emea``) is left
    out: a value of that key names neither.
    """
    groups: dict[str, list[str]] = {}
    for category in categories:
        groups.setdefault(case_key(category), []).append(category)
    return {key: spelt[0] for key, spelt in groups.items() if len(spelt) == 1}


def respellings(values: Iterable, categories: list[str]) -> dict[str, str]:
    """Values the model does not know -> the known category they equal but for case.

    The rule of validation's case folds (:func:`~partnerscore.features.core.case_key`), against
    the model's categories instead of the batch's most frequent spelling: a value equal to
    exactly one known category but for case is read as that category (``Registered`` ->
    ``registered``); a known value, a value matching none, one matching several (the model
    knows ``EMEA`` and ``emea``: ``Emea``) and a value that is not text are left out (scored as
    now: the category itself, or missing).

    Args:
        values: Distinct values of one categorical feature (any, missing included).
        categories: The categories the model was trained on.
    """
    known = set(categories)
    keys: dict[str, str] | None = None
    out = {}
    for value in values:
        if not isinstance(value, str) or value in known:
            continue
        if keys is None:  # built only when some value is unknown
            keys = known_spellings(categories)
        found = keys.get(case_key(value))
        if found is not None:
            out[value] = found
    return out


@dataclass
class Respelled:
    """What :meth:`PartnerModel.respell` read in the model's spelling.

    Attributes:
        frame: The feature frame with those values replaced (the input itself when none were).
        notes: Per row, ``feature 'Read' -> 'known'`` for every value read so, joined by ``; ``
            (empty string when none); None when no row has one.
    """

    frame: pd.DataFrame
    notes: np.ndarray | None = None

    @property
    def rows(self) -> int:
        """Rows with at least one category read in the model's spelling."""
        return 0 if self.notes is None else int((self.notes != "").sum())


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

    def respell(self, X: pd.DataFrame) -> Respelled:
        """``X`` with every categorical value the model knows in another case in its spelling.

        A value the model never saw that equals exactly one of its categories of that feature
        but for case (:func:`respellings`) is that category: ``Registered`` scores as the
        ``registered`` the model was trained on, everywhere (model input, drivers, the policy's
        segment factors, the score row's feature column), instead of as missing. Other unseen
        values are left as they are (scored as missing).

        Returns:
            The frame (the input itself when nothing was respelled; else a shallow copy with
            new categorical columns) and the per-row notes.
        """
        out, notes = X, None
        for spec in self.feature_specs:
            if spec.kind != "categorical" or spec.name not in X.columns:
                continue
            col = X[spec.name]
            categories = self.categories.get(spec.name, [])
            unknown = ~col.isin(categories).to_numpy() & col.notna().to_numpy()
            if not unknown.any():
                continue  # every value known or missing: the fast path
            read = col.to_numpy(dtype=object)
            found = respellings(pd.unique(read[unknown]), categories)
            if not found:
                continue
            hit = unknown & pd.Series(read).isin(list(found)).to_numpy()
            used = read.copy()
            used[hit] = pd.Series(read[hit]).map(found).to_numpy(dtype=object)
            if out is X:
                out = X.copy(deep=False)
            kept = col.dtype if isinstance(col.dtype, pd.StringDtype) else object
            out[spec.name] = pd.Series(used, index=X.index, dtype=kept)
            text = {v: f"{spec.name} {quoted(v)} -> {quoted(k)}" for v, k in found.items()}
            said = np.array([text[v] for v in read[hit]], dtype=object)
            if notes is None:
                notes = np.full(len(X), "", dtype=object)
            notes[hit] = np.where(notes[hit] == "", said, notes[hit] + "; " + said)
        return Respelled(out, notes)

    def prepare(self, X: pd.DataFrame) -> pd.DataFrame:
        """Model-ready frame: ordered columns, float numerics, training categories.

        Missing columns (e.g. an optional table absent at scoring time) become all-missing;
        a category the model knows in another case is that category (:meth:`respell`); other
        unseen categories become missing. Plain ``str``/object input is accepted, which is what
        the MLflow pyfunc receives.
        """
        data = {}
        n = len(X)
        for spec in self.feature_specs:
            col = X[spec.name] if spec.name in X.columns else pd.Series(np.nan, index=X.index)
            if spec.kind == "categorical":
                categories = self.categories.get(spec.name, [])
                dtype = pd.CategoricalDtype(categories)
                if isinstance(col.dtype, pd.StringDtype):  # text already: missing stays missing
                    codes = dtype.categories.get_indexer(col)  # -1: missing or unseen
                else:
                    text = col.astype(object).where(col.notna(), None)
                    codes = pd.Categorical(text.to_numpy(dtype=object), dtype=dtype).codes
                lost = (codes < 0) & col.notna().to_numpy()
                if lost.any():  # unseen, or known in another case (the slow path)
                    values = col.to_numpy(dtype=object)[lost]
                    found = respellings(pd.unique(values), categories)
                    if found:
                        codes = np.array(codes, dtype=np.int64)
                        codes[lost] = dtype.categories.get_indexer(
                            [found.get(v, v) if isinstance(v, str) else v for v in values]
                        )
                data[spec.name] = pd.Categorical.from_codes(codes, dtype=dtype)
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
