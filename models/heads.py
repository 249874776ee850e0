"""The two LightGBM heads: revenue (tweedie) and engagement (binary, calibrated).

Both follow scikit-learn conventions: ``__init__`` stores parameters, ``fit`` validates them and
returns self. Inputs are frames prepared by ``PartnerModel.prepare`` (numeric columns float,
categoricals as pandas ``category`` with the training categories).
Tree size is bounded on purpose: every scored row carries SHAP contributions, whose cost grows
with leaves and depth.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression

from partnerscore.models.calibration import CALIBRATORS, choose_calibrator
from partnerscore.models.head_scoring import EngagementScoring, HeadScoring, RevenueScoring
from partnerscore.models.treeshap import TreeShapTables

MAX_DEPTH = 8
MAX_LEAVES = 63
MAX_TREES = 2000
MAX_SEGMENT_VALUES = 12  # distinct values of a numeric segment column (onboarding ages)
SEGMENT_PRIOR = 10.0  # L2 penalty of a segment offset, in Hessian units (~40 rows at p = 0.5)


class _LightGBMHead(BaseEstimator, HeadScoring):
    """Parameters shared by both heads (the scoring code: :mod:`~partnerscore.models.head_scoring`).

    ``monotone_constraints`` (one of -1, 0, 1 per input column, or None) makes the margin
    non-decreasing (1) or non-increasing (-1) in a feature; the training job derives it from
    each feature's declared direction, so a "higher is better" feature can never push a
    prediction down as it grows, which also keeps the drivers shown to account owners coherent.
    """

    # a head pickled before 2026-12-07 has no such attribute of its own: it was fitted without
    unknown_category_share: float = 0.0

    def __init__(
        self,
        n_estimators: int = 120,
        learning_rate: float = 0.08,
        num_leaves: int = 8,
        max_depth: int = 3,
        min_child_samples: int = 40,
        subsample: float = 0.8,
        subsample_freq: int = 1,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        reg_alpha: float = 0.0,
        n_jobs: int = 1,
        random_state: int = 7,
        monotone_constraints: tuple[int, ...] | None = None,
        unknown_category_share: float = 0.0,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.subsample_freq = subsample_freq
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.reg_alpha = reg_alpha
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.monotone_constraints = monotone_constraints
        self.unknown_category_share = unknown_category_share

    def _validate(self) -> None:
        if not 1 <= self.n_estimators <= MAX_TREES:
            raise ValueError(f"n_estimators must be in [1, {MAX_TREES}], got {self.n_estimators}")
        if not 1 <= self.max_depth <= MAX_DEPTH:
            raise ValueError(f"max_depth must be in [1, {MAX_DEPTH}], got {self.max_depth}")
        if not 2 <= self.num_leaves <= MAX_LEAVES:
            raise ValueError(f"num_leaves must be in [2, {MAX_LEAVES}], got {self.num_leaves}")
        if not self.learning_rate > 0:
            raise ValueError("learning_rate must be positive")
        if self.monotone_constraints is not None and set(self.monotone_constraints) - {-1, 0, 1}:
            raise ValueError("monotone_constraints must be -1, 0 or 1 per feature")
        if not 0 <= self.unknown_category_share < 1:
            raise ValueError("unknown_category_share must be in [0, 1)")

    def _with_unknown_categories(self, X: pd.DataFrame) -> pd.DataFrame:
        """The booster's training matrix, a share of each categorical column made missing.

        ``unknown_category_share`` of each categorical column's values, drawn at random (the
        rows and every other value kept).

        A category the model never saw is scored as missing, and LightGBM sends a missing
        category down one side of each split: with no missing value among the training rows
        that side is whichever the split put last, and on the simulated programs it was the
        low-revenue one (an unseen partner type -20% to -25% of the revenue total; README,
        "Categories the model never saw"). Trained with some values missing, every split
        sends them where they fit best: toward the training mix's average. Drawn from
        ``random_state``, so a fit is reproducible.
        """
        share = self.unknown_category_share
        if not share:
            return X
        rng = np.random.default_rng([self.random_state, 20261207])
        # only the categorical columns are replaced: the numeric ones are not copied
        blanked = {
            column: values.where(rng.random(len(X)) >= share)
            for column, values in X.items()
            if isinstance(values.dtype, pd.CategoricalDtype)
        }
        return X.assign(**blanked)

    def _lgb_params(self) -> dict:
        return {
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_child_samples": self.min_child_samples,
            "subsample": self.subsample,
            "subsample_freq": self.subsample_freq,
            "colsample_bytree": self.colsample_bytree,
            "reg_lambda": self.reg_lambda,
            "reg_alpha": self.reg_alpha,
            "n_jobs": self.n_jobs,
            "random_state": self.random_state,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
            **(
                {
                    "monotone_constraints": list(self.monotone_constraints),
                    "monotone_constraints_method": "advanced",
                }
                if self.monotone_constraints is not None and any(self.monotone_constraints)
                else {}
            ),
        }

    def _fit_kwargs(self, X_valid, y_valid, early_stopping_rounds: int | None) -> dict:
        """eval_set and early-stopping callback for LightGBM's fit (empty without a set)."""
        if X_valid is None or y_valid is None or not early_stopping_rounds:
            return {}
        return {
            "eval_X": (X_valid,),
            "eval_y": (np.asarray(y_valid),),
            "callbacks": [lgb.early_stopping(early_stopping_rounds, verbose=False)],
        }

    @property
    def best_iteration_(self) -> int:
        """Trees used: the early-stopping optimum if a validation set was given, else all."""
        best = getattr(self.model_, "best_iteration_", None)
        return int(best) if best else int(self.n_estimators)

    @property
    def booster_(self) -> lgb.Booster:
        """The fitted LightGBM booster."""
        return self.model_.booster_

    def raw_score(self, X: pd.DataFrame) -> np.ndarray:
        """Raw margin (log for revenue, logit for engagement) per row."""
        margin = self.booster_.predict(X, raw_score=True, num_threads=self.n_jobs) + self._offset()
        for _, offset in self._row_offsets(X):
            margin += offset
        return margin

    def _shap_tables(self) -> TreeShapTables | None:
        """Compiled SHAP tables when every tree is small enough, else None (cached)."""
        if getattr(self, "shap_tables_", None) is None:
            tables = TreeShapTables(self.booster_)
            self.shap_tables_ = tables if all(t.table is not None for t in tables.trees) else False
        return self.shap_tables_ or None

    def feature_ranges(self) -> dict[str, tuple[float, float]]:
        """Observed (min, max) of each numeric feature the booster splits on, from training.

        LightGBM records every feature's range in the model (``feature_infos``); features the
        head never split on, and categorical ones, are left out.
        """
        dump = self.booster_.dump_model()
        used = self.booster_.feature_importance(importance_type="split")
        infos = dump.get("feature_infos", {})
        out = {}
        for name, count in zip(self.booster_.feature_name(), used, strict=True):
            info = infos.get(name)
            if count <= 0 or not isinstance(info, dict) or "min_value" not in info:
                continue
            out[name] = (float(info["min_value"]), float(info["max_value"]))
        return out

    def feature_importance(self) -> pd.Series:
        """Total gain per feature, descending."""
        gain = self.booster_.feature_importance(importance_type="gain")
        return pd.Series(gain, index=self.booster_.feature_name()).sort_values(ascending=False)


class RevenueRegressor(RevenueScoring, _LightGBMHead):
    """Expected revenue over the horizon: LightGBM with a tweedie objective (log link).

    Tweedie (1 < power < 2) fits a point mass at zero plus a heavy right tail, the shape of
    partner revenue; predictions are expectations, so they add up to a portfolio forecast.
    """

    def __init__(
        self,
        tweedie_variance_power: float = 1.3,
        n_estimators: int = 120,
        learning_rate: float = 0.08,
        num_leaves: int = 8,
        max_depth: int = 3,
        min_child_samples: int = 40,
        subsample: float = 0.8,
        subsample_freq: int = 1,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        reg_alpha: float = 0.0,
        n_jobs: int = 1,
        random_state: int = 7,
        monotone_constraints: tuple[int, ...] | None = None,
        unknown_category_share: float = 0.0,
    ) -> None:
        super().__init__(
            n_estimators=n_estimators,
            learning_rate=learning_rate,
            num_leaves=num_leaves,
            max_depth=max_depth,
            min_child_samples=min_child_samples,
            subsample=subsample,
            subsample_freq=subsample_freq,
            colsample_bytree=colsample_bytree,
            reg_lambda=reg_lambda,
            reg_alpha=reg_alpha,
            n_jobs=n_jobs,
            random_state=random_state,
            monotone_constraints=monotone_constraints,
            unknown_category_share=unknown_category_share,
        )
        self.tweedie_variance_power = tweedie_variance_power

    def fit(
        self,
        X: pd.DataFrame,
        y: np.ndarray,
        X_valid: pd.DataFrame | None = None,
        y_valid: np.ndarray | None = None,
        early_stopping_rounds: int | None = None,
    ) -> RevenueRegressor:
        """Fit on prepared features and non-negative revenue.

        With a validation set and ``early_stopping_rounds`` LightGBM stops adding trees once
        the validation tweedie deviance stops improving (used by the tuner, which then sets
        ``n_estimators`` to the best iteration). The recalibration factor is reset to 1.
        """
        self._validate()
        if not 1.0 < self.tweedie_variance_power < 2.0:
            raise ValueError("tweedie_variance_power must be in (1, 2)")
        y = np.asarray(y, dtype=float)
        if (y < 0).any() or not np.isfinite(y).all():
            raise ValueError("revenue labels must be finite and non-negative")
        self.model_ = lgb.LGBMRegressor(
            objective="tweedie",
            tweedie_variance_power=self.tweedie_variance_power,
            **self._lgb_params(),
        )
        self.model_.fit(
            self._with_unknown_categories(X),
            y,
            **self._fit_kwargs(X_valid, y_valid, early_stopping_rounds),
        )
        self.feature_names_in_ = list(X.columns)
        self.shap_tables_ = None
        self.calibration_factor_ = 1.0
        self.segment_factors_ = {}
        self.segment_numeric_ = ()
        return self

    def recalibrate(self, factor: float) -> RevenueRegressor:
        """Multiply every prediction by ``factor`` (> 0).

        The factor is applied on the log scale as a constant added to the margin, so it is
        part of the SHAP base value: contributions still add up to the prediction and the
        ranking is unchanged. The training job fits it out of fold (:mod:`training.train`).
        """
        if not (np.isfinite(factor) and factor > 0):
            raise ValueError(f"recalibration factor must be positive and finite, got {factor}")
        self.calibration_factor_ = float(factor)
        return self

    # --- per-segment recalibration (training/recalibration.py fits the factors) ---

    def recalibrate_segments(
        self, factors: dict[str, dict[str, float]], numeric: tuple[str, ...] = ()
    ) -> RevenueRegressor:
        """Multiply predictions by a factor per value (or band) of some input columns.

        ``factors`` maps a column (a feature of this head, e.g. ``tier``) to
        ``{value: factor > 0}``. A row's prediction is multiplied by the factor of each of its
        values; values without a factor (unseen, missing) get 1, leaving the overall factor of
        :meth:`recalibrate` only. Columns in ``numeric`` (e.g. ``age_days``, fitted at the
        trained onboarding ages) have numbers as keys that start bands: a row gets the factor
        of the largest key <= its value (the smallest key's below it; missing: 1). Each log
        factor is added to the margin and to that feature's SHAP contribution, so
        contributions still add up to the prediction and the segment's correction shows as
        part of the segment's own effect.

        Raises:
            ValueError: A column that is not an input feature, or a non-positive factor.
        """
        names = list(self.feature_names_in_)
        for column, table in factors.items():
            if column not in names:
                raise ValueError(f"segment column '{column}' is not a feature of the head")
            bad = [v for v, f in table.items() if not (np.isfinite(f) and f > 0)]
            if bad:
                raise ValueError(f"segment factor of {column}={bad[0]} must be positive")
            if column in numeric:
                try:
                    [float(v) for v in table]
                except ValueError as err:
                    raise ValueError(f"numeric segment column '{column}' needs numbers") from err
        self.segment_factors_ = {
            col: {str(v): float(f) for v, f in table.items()} for col, table in factors.items()
        }
        self.segment_numeric_ = tuple(c for c in numeric if c in factors)
        return self


class EngagementClassifier(EngagementScoring, _LightGBMHead):
    """Probability of sustained engagement: LightGBM binary, then a calibration map.

    The booster is first fitted on older cohorts; the calibration map is fitted on the raw
    margins it gives the newest training cohorts (``X_calib``), partners it has not seen, so the
    map corrects the optimism of in-sample margins. ``calibration`` is one map
    (``sigmoid`` = Platt, ``beta``, ``smooth_isotonic``, or step ``isotonic``) or ``auto``: the
    candidates in ``calibration_candidates`` are compared by cross-validated log loss on the
    calibration rows and the best is kept (:mod:`partnerscore.models.calibration`); the CV
    losses are in ``calibration_losses_``. With ``refit`` the booster is then refitted with the
    same parameters on all rows (training + calibration slice) and keeps the map: the newest
    cohorts are the most informative ones, and a refit with the same parameters produces
    margins on the same scale. Either way the training job judges the result on a holdout of
    newer cohorts still.

    ``segment_columns`` (features, e.g. ``age_days`` and ``tier``) get one logit offset per
    value (numeric ones: per band starting at each distinct training value, at most
    ``MAX_SEGMENT_VALUES``), fitted after each booster fit on the booster's own rows so that
    every value's mean probability before the map matches its label rate (penalised Newton
    steps, ``SEGMENT_PRIOR``). The booster stops short of those means: with the default 120
    trees its in-sample probabilities were about 1 point low at day 30 and 1.4 points low
    for platinum, a conditional tilt that one pooled map cannot remove (README, "Models").
    The offsets are part of the margin (the map is fitted on margins that include them) and
    of that feature's SHAP contribution.
    """

    def __init__(
        self,
        calibration: str = "sigmoid",
        calibration_candidates: tuple[str, ...] = ("sigmoid", "beta", "smooth_isotonic"),
        refit: bool = False,
        segment_columns: tuple[str, ...] = (),
        n_estimators: int = 120,
        learning_rate: float = 0.08,
        num_leaves: int = 8,
        max_depth: int = 3,
        min_child_samples: int = 40,
        subsample: float = 0.8,
        subsample_freq: int = 1,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        reg_alpha: float = 0.0,
        n_jobs: int = 1,
        random_state: int = 7,
        monotone_constraints: tuple[int, ...] | None = None,
        unknown_category_share: float = 0.0,
    ) -> None:
        super().__init__(
            n_estimators=n_estimators,
            learning_rate=learning_rate,
            num_leaves=num_leaves,
            max_depth=max_depth,
            min_child_samples=min_child_samples,
            subsample=subsample,
            subsample_freq=subsample_freq,
            colsample_bytree=colsample_bytree,
            reg_lambda=reg_lambda,
            reg_alpha=reg_alpha,
            n_jobs=n_jobs,
            random_state=random_state,
            monotone_constraints=monotone_constraints,
            unknown_category_share=unknown_category_share,
        )
        self.calibration = calibration
        self.calibration_candidates = calibration_candidates
        self.refit = refit
        self.segment_columns = segment_columns

    def fit(
        self,
        X: pd.DataFrame,
        y: np.ndarray,
        X_calib: pd.DataFrame | None = None,
        y_calib: np.ndarray | None = None,
        X_valid: pd.DataFrame | None = None,
        y_valid: np.ndarray | None = None,
        early_stopping_rounds: int | None = None,
    ) -> EngagementClassifier:
        """Fit the booster on (X, y) and the calibration map on (X_calib, y_calib).

        Without a calibration slice the map is fitted on the training margins (less honest;
        the training job always passes one) and ``refit`` has nothing to add. ``X_valid`` with
        ``early_stopping_rounds`` stops the booster at the best validation log loss (tuning).
        """
        self._validate()
        known = {"auto", "isotonic", *CALIBRATORS}
        if self.calibration not in known:
            raise ValueError(f"calibration must be one of {sorted(known)}")
        if set(self.calibration_candidates) - set(CALIBRATORS) or not self.calibration_candidates:
            raise ValueError(f"calibration_candidates must be among {sorted(CALIBRATORS)}")
        y = self._labels(y)
        missing = [c for c in self.segment_columns if c not in X.columns]
        if missing:
            raise ValueError(f"segment column '{missing[0]}' is not a feature of the head")
        has_slice = X_calib is not None and y_calib is not None and len(X_calib) > 0
        if has_slice:
            y_calib = self._labels(y_calib)
        if not has_slice or len(np.unique(y_calib)) < 2:
            has_slice = False
            X_calib, y_calib = X, y
        self._fit_booster(X, y, self._fit_kwargs(X_valid, y_valid, early_stopping_rounds))
        margin = self.raw_score(X_calib)
        self.calibration_losses_ = {}
        if self.calibration == "auto":
            self.calibrator_, self.calibration_losses_ = choose_calibrator(
                margin, y_calib, tuple(self.calibration_candidates), seed=self.random_state
            )
        elif self.calibration == "isotonic":
            self.calibrator_ = IsotonicRegression(
                y_min=1e-4, y_max=1 - 1e-4, out_of_bounds="clip", increasing=True
            ).fit(margin, y_calib)
        else:
            self.calibrator_ = CALIBRATORS[self.calibration]().fit(margin, y_calib)
        self.calibration_method_ = getattr(self.calibrator_, "name", "isotonic")
        self.refitted_ = bool(self.refit and has_slice)
        if self.refitted_:
            self._fit_booster(
                pd.concat([X, X_calib], ignore_index=True), np.concatenate([y, y_calib]), {}
            )
        return self

    @staticmethod
    def _labels(y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        if len(y) and set(np.unique(y).tolist()) - {0, 1}:
            raise ValueError("engagement labels must be 0/1")
        return y.astype(int)

    def _fit_booster(self, X: pd.DataFrame, y: np.ndarray, fit_kwargs: dict) -> None:
        self.model_ = lgb.LGBMClassifier(objective="binary", **self._lgb_params())
        self.model_.fit(self._with_unknown_categories(X), y, **fit_kwargs)
        self.feature_names_in_ = list(X.columns)
        self.shap_tables_ = None
        self._fit_segment_offsets(X, y)

    def _fit_segment_offsets(self, X: pd.DataFrame, y: np.ndarray) -> None:
        """One logit offset per value of each ``segment_columns`` feature, on the fit's rows.

        Minimises the log loss of ``sigmoid(margin + offsets)`` plus ``SEGMENT_PRIOR / 2``
        times each squared offset, by Newton steps on one column at a time (backfitting), so
        each value's mean probability matches its label rate up to the penalty. Missing
        values and unseen categories get no offset.

        Raises:
            ValueError: A numeric column with more than ``MAX_SEGMENT_VALUES`` distinct values.
        """
        self.segment_offsets_, self.segment_numeric_ = {}, ()
        if not self.segment_columns:
            return
        margin = self.booster_.predict(X, raw_score=True, num_threads=self.n_jobs)
        index, keys, numeric = {}, {}, []
        for column in self.segment_columns:
            values = X[column]
            if isinstance(values.dtype, pd.CategoricalDtype):
                index[column] = values.cat.codes.to_numpy()
                keys[column] = [str(c) for c in values.cat.categories]
                continue
            x = values.to_numpy(dtype=float)
            distinct = np.unique(x[~np.isnan(x)])
            if len(distinct) > MAX_SEGMENT_VALUES:
                raise ValueError(
                    f"numeric segment column '{column}' has {len(distinct)} distinct values; "
                    f"at most {MAX_SEGMENT_VALUES} (discrete values such as the onboarding ages)"
                )
            index[column] = np.where(np.isnan(x), -1, np.searchsorted(distinct, x))
            keys[column] = [str(float(v)) for v in distinct]
            numeric.append(column)
        offsets = {c: np.zeros(len(keys[c])) for c in self.segment_columns}
        y = np.asarray(y, dtype=float)

        def row_offsets(column: str) -> np.ndarray:
            at = index[column]
            return np.where(at < 0, 0.0, offsets[column][np.maximum(at, 0)])

        total = np.zeros(len(y))
        for _ in range(50):
            largest = 0.0
            for column in self.segment_columns:
                at, known = index[column], index[column] >= 0
                p = 1.0 / (1.0 + np.exp(-(margin + total)))
                size = len(keys[column])
                grad = np.bincount(at[known], (y - p)[known], minlength=size)
                hess = np.bincount(at[known], (p * (1 - p))[known], minlength=size)
                step = (grad - SEGMENT_PRIOR * offsets[column]) / (hess + SEGMENT_PRIOR)
                total -= row_offsets(column)
                offsets[column] += step
                total += row_offsets(column)
                largest = max(largest, float(np.abs(step).max(initial=0.0)))
            if largest < 1e-8:
                break
        self.segment_offsets_ = {
            c: dict(zip(keys[c], map(float, offsets[c]), strict=True)) for c in self.segment_columns
        }
        self.segment_numeric_ = tuple(numeric)
