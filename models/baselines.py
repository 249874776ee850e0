"""Baselines the GBM heads must beat, scored on the same holdout.

- :class:`LayeredScorecard`: the seed's hand-weighted layered scorecard — robust z-scores of the
  features, signed by their declared direction, averaged per layer, combined with fixed layer
  weights; the score is mapped to revenue and to an engagement probability by monotone fits.
- :class:`LinearBaseline`: ridge regression on log1p(revenue) with smearing back-transform, and
  logistic regression for engagement, on one-hot categoricals and imputed numerics.
- :class:`NaiveExtrapolation`: revenue won to date per day of age times the horizon; engagement
  = share of training partners engaged at the same recent-touchpoint level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from partnerscore.features.registry import LAYERS, FeatureSpec

SEED_LAYER_WEIGHTS = {"strategic": 0.3, "execution": 0.3, "results": 0.4}


def _numeric_specs(specs: list[FeatureSpec]) -> list[FeatureSpec]:
    return [s for s in specs if s.kind == "numeric" and s.name != "age_days"]


class LayeredScorecard(BaseEstimator):
    """Hand-weighted layered scorecard (no learned weights, only monotone output maps).

    Args:
        specs: Feature declarations (layer and direction are used).
        layer_weights: Weight of each layer in the total score.
    """

    def __init__(self, specs: list[FeatureSpec], layer_weights: dict[str, float] | None = None):
        self.specs = specs
        self.layer_weights = layer_weights

    def score(self, X: pd.DataFrame) -> np.ndarray:
        """The scorecard total: weighted mean of per-layer mean signed z-scores."""
        weights = self.layer_weights or SEED_LAYER_WEIGHTS
        total = np.zeros(len(X))
        for layer in LAYERS:
            cols = [s for s in self.used_ if s.layer == layer]
            if not cols:
                continue
            z = np.column_stack(
                [
                    np.clip(
                        (
                            pd.to_numeric(X[s.name], errors="coerce").to_numpy(float)
                            - self.center_[s.name]
                        )
                        / self.scale_[s.name],
                        -3,
                        3,
                    )
                    * (1 if s.direction == "higher_is_better" else -1)
                    for s in cols
                ]
            )
            total += weights[layer] * np.nan_to_num(z).mean(axis=1)
        return total

    def fit(
        self, X: pd.DataFrame, y_revenue: np.ndarray, y_engaged: np.ndarray
    ) -> LayeredScorecard:
        """Fit feature centres/scales and the monotone maps from score to each label."""
        self.used_ = [s for s in _numeric_specs(self.specs) if s.direction != "neutral"]
        self.center_, self.scale_ = {}, {}
        for s in self.used_:
            v = pd.to_numeric(X[s.name], errors="coerce")
            med = float(v.median()) if v.notna().any() else 0.0
            iqr = float(v.quantile(0.75) - v.quantile(0.25)) if v.notna().any() else 0.0
            self.center_[s.name] = med
            self.scale_[s.name] = iqr if iqr > 0 else (float(v.std()) or 1.0)
        s = self.score(X)
        self.revenue_map_ = IsotonicRegression(out_of_bounds="clip").fit(s, y_revenue)
        self.engagement_map_ = IsotonicRegression(
            y_min=1e-4, y_max=1 - 1e-4, out_of_bounds="clip"
        ).fit(s, y_engaged)
        return self

    def predict(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(pred_revenue, pred_engagement)."""
        s = self.score(X)
        return self.revenue_map_.predict(s), self.engagement_map_.predict(s)


class LinearBaseline(BaseEstimator):
    """Ridge on log1p(revenue) and logistic regression on engagement."""

    def __init__(self, specs: list[FeatureSpec], alpha: float = 1.0, C: float = 1.0):
        self.specs = specs
        self.alpha = alpha
        self.C = C

    def _design(self) -> ColumnTransformer:
        num = [s.name for s in self.specs if s.kind == "numeric"]
        cat = [s.name for s in self.specs if s.kind == "categorical"]
        return ColumnTransformer(
            [
                (
                    "num",
                    make_pipeline(
                        SimpleImputer(
                            strategy="median", add_indicator=True, keep_empty_features=True
                        ),
                        StandardScaler(),
                    ),
                    num,
                ),
                (
                    "cat",
                    make_pipeline(
                        SimpleImputer(strategy="constant", fill_value="missing"),
                        OneHotEncoder(handle_unknown="ignore"),
                    ),
                    cat,
                ),
            ]
        )

    @staticmethod
    def _frame(X: pd.DataFrame, specs: list[FeatureSpec]) -> pd.DataFrame:
        out = {}
        for s in specs:
            if s.kind == "categorical":
                out[s.name] = X[s.name].astype(object).where(X[s.name].notna(), "missing")
            else:
                v = pd.to_numeric(X[s.name], errors="coerce").to_numpy(float)
                # heavy-tailed amounts and counts: log scale for a linear model
                out[s.name] = np.sign(v) * np.log1p(np.abs(v))
        return pd.DataFrame(out)

    def fit(self, X: pd.DataFrame, y_revenue: np.ndarray, y_engaged: np.ndarray) -> LinearBaseline:
        """Fit both linear models."""
        data = self._frame(X, self.specs)
        y_log = np.log1p(np.asarray(y_revenue, dtype=float))
        self.revenue_ = make_pipeline(self._design(), Ridge(alpha=self.alpha)).fit(data, y_log)
        # back-transform scaled so training predictions add up to training revenue (Duan's
        # smearing explodes on zero-inflated, heavy-tailed targets)
        cap = float(np.max(y_log)) if len(y_log) else 0.0
        fitted = np.maximum(np.expm1(np.minimum(self.revenue_.predict(data), cap)), 0.0)
        total = float(fitted.sum())
        self.smearing_ = float(np.sum(y_revenue) / total) if total > 0 else 1.0
        self.cap_ = cap
        self.engagement_ = make_pipeline(
            self._design(), LogisticRegression(C=self.C, max_iter=2000)
        ).fit(data, np.asarray(y_engaged).astype(int))
        return self

    def predict(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(pred_revenue, pred_engagement)."""
        data = self._frame(X, self.specs)
        rev = np.expm1(np.minimum(self.revenue_.predict(data), self.cap_)) * self.smearing_
        return np.maximum(rev, 0.0), self.engagement_.predict_proba(data)[:, 1]


class NaiveExtrapolation(BaseEstimator):
    """Run-rate extrapolation: what a spreadsheet would do.

    Revenue = revenue won to date / age * horizon. Engagement = training engagement rate of
    partners in the same band of last-30-day touchpoints (0, 1, 2-3, 4+).
    """

    def __init__(self, horizon_days: int = 180):
        self.horizon_days = horizon_days

    @staticmethod
    def _band(X: pd.DataFrame) -> np.ndarray:
        if "activities_touchpoints_30d" not in X:
            return np.zeros(len(X), dtype=int)
        t = pd.to_numeric(X["activities_touchpoints_30d"], errors="coerce").fillna(0).to_numpy()
        return np.digitize(t, [0.5, 1.5, 3.5])

    def fit(self, X: pd.DataFrame, y_revenue: np.ndarray, y_engaged: np.ndarray):
        """Learn the engagement rate per touchpoint band."""
        y = np.asarray(y_engaged, dtype=float)
        band = self._band(X)
        self.overall_ = float(y.mean())
        self.rates_ = {int(b): float(y[band == b].mean()) for b in np.unique(band)}
        return self

    def predict(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(pred_revenue, pred_engagement)."""
        won = pd.to_numeric(X.get("deals_won_amount_todate", 0), errors="coerce")
        won = np.nan_to_num(np.asarray(won, dtype=float) * np.ones(len(X)))
        age = np.maximum(pd.to_numeric(X["age_days"], errors="coerce").to_numpy(float), 1.0)
        rev = won / age * self.horizon_days
        eng = np.array([self.rates_.get(int(b), self.overall_) for b in self._band(X)])
        return rev, eng


BASELINES = {
    "scorecard": LayeredScorecard,
    "linear": LinearBaseline,
    "naive": NaiveExtrapolation,
}
