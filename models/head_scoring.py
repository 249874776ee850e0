"""The scoring half of the two heads, which needs neither LightGBM nor scikit-learn.

A fitted head (:mod:`partnerscore.models.heads`) scores through its compiled SHAP tables
(:mod:`partnerscore.models.treeshap`), its recalibration factors and its calibration map: numpy
work only. The mixins here hold that code once, for the fitted heads and for their lean copies.

A lean head (:class:`LeanRevenueHead`, :class:`LeanEngagementHead`) keeps only that state: no
booster, no scikit-learn object. ``PartnerModel.scoring_view`` swaps both heads for lean copies,
and the training job logs that view beside the model (:mod:`partnerscore.models.pyfunc`). The
score job loads the view: importing LightGBM and scikit-learn (with SciPy) costs ~2 s of CPU in
every score process, and the view's scores, drivers and subscores are the model's, bit for bit
(they run the same code on the same tables; tested).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from partnerscore.models.calibration import lean_copy
from partnerscore.models.explain import row_sums


def segment_row_offsets(
    X: pd.DataFrame,
    names: list[str],
    tables: dict[str, dict[str, float]] | None,
    numeric: tuple[str, ...],
    to_margin,
    neutral: float,
) -> list[tuple[int, np.ndarray]]:
    """(feature column, margin offset per row) for every column with a table of values.

    ``tables`` maps a feature to ``{value: v}``; a row's offset is ``to_margin(v)`` of its
    value's entry (``neutral`` for a value without one, or a missing value). Columns in
    ``numeric`` have numbers as keys that start bands: a row gets the entry of the largest
    key <= its value (the smallest key's below it).
    """
    if not tables:
        return []
    out = []
    for column, table in tables.items():
        values = X[column]
        if column in numeric and table:
            keys = np.array(sorted(float(k) for k in table))
            margins = to_margin([table[k] for k in sorted(table, key=float)])
            x = values.to_numpy(dtype=float)
            band = np.clip(np.searchsorted(keys, x, side="right") - 1, 0, len(keys) - 1)
            offset = np.where(np.isnan(x), 0.0, margins[band])
        elif isinstance(values.dtype, pd.CategoricalDtype):
            cats = values.cat.categories
            lut = to_margin([table.get(str(c), neutral) for c in cats] + [neutral])
            codes = values.cat.codes.to_numpy()
            offset = lut[np.where(codes < 0, len(cats), codes)]
        else:
            text = values.astype(object).where(values.notna(), None).astype(str)
            offset = to_margin(text.map(table).astype(float).fillna(neutral).to_numpy())
        out.append((names.index(column), offset))
    return out


class HeadScoring:
    """SHAP contributions in raw-margin space, from compiled tables (booster fallback)."""

    def _offset(self) -> float:
        """Constant added to the booster's margin (the revenue head's recalibration)."""
        return 0.0

    def _row_offsets(self, X: pd.DataFrame) -> list[tuple[int, np.ndarray]]:
        """Per-row margin offsets, each folded into one feature's contribution (none here)."""
        return []

    def raw_contributions(self, X: pd.DataFrame, num_threads: int | None = None) -> np.ndarray:
        """SHAP contributions in raw-margin space: shape (n, k + 1), last column the base value.

        Exact path-dependent TreeSHAP (as ``shap.TreeExplainer`` and LightGBM ``pred_contrib``);
        row sums equal :meth:`raw_score`. Small trees go through precompiled lookup tables
        (:mod:`partnerscore.models.treeshap`), several times faster than ``pred_contrib``.
        """
        tables = self._shap_tables()
        if tables is not None:
            contrib = tables.contributions(X)
        else:
            contrib = self.booster_.predict(
                X, pred_contrib=True, num_threads=num_threads or self.n_jobs
            )
        return self.with_offsets(contrib, X)

    def offset_columns(self) -> list[str]:
        """The columns of a prepared frame the per-row offsets are read from (none here)."""
        return []

    def with_offsets(self, contrib: np.ndarray, X: pd.DataFrame) -> np.ndarray:
        """The trees' contributions (n, k + 1) of ``X``'s rows with the head's offsets added.

        The recalibration goes into the base value, a segment's factor into its feature's
        contribution (in place). ``X`` is the prepared rows, or only their
        :meth:`offset_columns`: what-if scores its candidates from a feature matrix
        (:func:`~partnerscore.models.whatif.candidate_scores`).
        """
        offset = self._offset()
        if offset:
            contrib[:, -1] += offset  # the recalibration is part of the base value
        for column, row_offset in self._row_offsets(X):
            contrib[:, column] += row_offset  # a segment's factor is part of its feature's effect
        return contrib


class RevenueScoring(HeadScoring):
    """The revenue head's recalibration: an overall factor and factors per segment."""

    def _offset(self) -> float:
        return float(np.log(getattr(self, "calibration_factor_", 1.0)))

    def offset_columns(self) -> list[str]:
        """The segment columns with factors (:meth:`_row_offsets` reads them)."""
        return list(getattr(self, "segment_factors_", None) or {})

    def _row_offsets(self, X: pd.DataFrame) -> list[tuple[int, np.ndarray]]:
        """(feature column, log factor per row) for every segment column with factors."""
        return segment_row_offsets(
            X,
            list(self.feature_names_in_),
            getattr(self, "segment_factors_", None),
            getattr(self, "segment_numeric_", ()),
            np.log,
            1.0,
        )

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Expected revenue per row (exp of the raw margin, recalibration included)."""
        return np.exp(self.raw_score(X))


class EngagementScoring(HeadScoring):
    """The engagement head's segment offsets and calibration map (raw margin -> probability).

    Segment offsets (``segment_offsets_``, logits per value of a column, e.g. per onboarding
    age band and tier) are added to the margin before the map and to that feature's SHAP
    contribution, as the revenue head's segment factors are.
    """

    def offset_columns(self) -> list[str]:
        """The columns with segment offsets (:meth:`_row_offsets` reads them)."""
        return list(getattr(self, "segment_offsets_", None) or {})

    def _row_offsets(self, X: pd.DataFrame) -> list[tuple[int, np.ndarray]]:
        """(feature column, logit offset per row) for every column with segment offsets."""
        return segment_row_offsets(
            X,
            list(self.feature_names_in_),
            getattr(self, "segment_offsets_", None),
            getattr(self, "segment_numeric_", ()),
            lambda v: np.asarray(v, dtype=float),
            0.0,
        )

    def calibrate(self, margin: np.ndarray) -> np.ndarray:
        """Map raw margins to calibrated probabilities."""
        margin = np.asarray(margin, dtype=float)
        if hasattr(self.calibrator_, "predict_proba"):  # a LogisticRegression (older bundles)
            return self.calibrator_.predict_proba(margin.reshape(-1, 1))[:, 1]
        return self.calibrator_.predict(margin)  # ours, or a step IsotonicRegression

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities, shape (n, 2)."""
        p = self.calibrate(self.raw_score(X))
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """0/1 at probability 0.5."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


class _LeanHead:
    """A fitted head's scoring state, copied: tables, factors, map, feature ranges."""

    STATE: tuple[str, ...] = ("n_jobs", "feature_names_in_", "shap_tables_")

    def __init__(self, head) -> None:
        for name in self.STATE:
            if hasattr(head, name):
                setattr(self, name, getattr(head, name))
        self.feature_ranges_ = head.feature_ranges()

    def _shap_tables(self):
        return self.shap_tables_

    def raw_score(self, X: pd.DataFrame) -> np.ndarray:
        """Raw margin per row: the contributions' sum (the booster's margin to rounding)."""
        return row_sums(self.raw_contributions(X))

    def feature_ranges(self) -> dict[str, tuple[float, float]]:
        """The fitted head's :meth:`feature_ranges`, recorded when the copy was made."""
        return dict(self.feature_ranges_)


class LeanRevenueHead(_LeanHead, RevenueScoring):
    """The revenue head without its booster (see the module docstring)."""

    STATE = (
        *_LeanHead.STATE,
        "calibration_factor_",
        "segment_factors_",
        "segment_numeric_",
    )


class LeanEngagementHead(_LeanHead, EngagementScoring):
    """The engagement head without its booster (see the module docstring)."""

    # calibrator_: a lean copy (lean_head)
    STATE = (*_LeanHead.STATE, "calibration_method_", "segment_offsets_", "segment_numeric_")


def lean_head(head) -> LeanRevenueHead | LeanEngagementHead | None:
    """A lean copy of a fitted head, or None when it cannot score without LightGBM.

    None when a tree is too large for the compiled tables (those rows go through LightGBM's
    ``pred_contrib``) or when the calibration map is a scikit-learn object (the step
    ``isotonic`` map, or a bundle of an earlier version).
    """
    tables = head._shap_tables()
    if tables is None:
        return None
    if isinstance(head, EngagementScoring):
        calibrator = lean_copy(head.calibrator_)
        if calibrator is None:
            return None
        lean = LeanEngagementHead(head)
        lean.calibrator_ = calibrator
        return lean
    return LeanRevenueHead(head)
