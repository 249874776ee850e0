"""Probability calibration maps for the engagement head (raw margin -> probability).

Three candidates, all monotone in the margin:

- :class:`PlattCalibrator` — logistic regression on the margin (2 parameters; keeps the ranking).
- :class:`BetaCalibrator` — beta calibration (Kull et al. 2017): logistic regression on
  ``ln p`` and ``-ln(1 - p)`` of the booster's probability ``p``; fixes asymmetric over- and
  under-confidence that Platt cannot, and stays strictly monotone (coefficients kept >= 0).
- :class:`SmoothIsotonicCalibrator` — isotonic regression whose steps are replaced by linear
  interpolation between the centroids of its blocks: as flexible as isotonic but strictly
  increasing between centroids, so it does not collapse thousands of scores onto ~30 values.

:func:`choose_calibrator` picks among them by cross-validated log loss on the calibration rows.

scikit-learn fits the maps; a fitted map predicts from numbers only (coefficients,
centroids), with numpy, so the scoring job can apply a copy without scikit-learn state
(:func:`lean_copy`) without importing scikit-learn (:mod:`partnerscore.models.head_scoring`).
The logistic maps also keep the fitted scikit-learn model (``model_``), which is what earlier
versions of this module predict with.
"""

from __future__ import annotations

import copy

import numpy as np

EPS = 1e-4


def _clip(p: np.ndarray) -> np.ndarray:
    return np.clip(p, EPS, 1 - EPS)


def _logistic(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """P(y = 1) of a fitted binary logistic regression.

    Its decision function ``X @ coef.T + intercept`` through the logistic function.
    """
    decision = (X @ coef.T + intercept).ravel()
    with np.errstate(over="ignore"):  # exp(-decision) = inf: probability 0, as expit gives
        return 1.0 / (1.0 + np.exp(-decision))


def _fitted_logistic(X: np.ndarray, y: np.ndarray, **options):
    """scikit-learn's LogisticRegression fitted on (X, y)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(**options).fit(X, y)


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = _clip(p)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


class _LogisticMap:
    """A map that is a logistic regression on features of the margin (Platt, beta)."""

    def _keep(self, model) -> None:
        """Keep the fitted scikit-learn model and its coefficients (what ``predict`` uses)."""
        self.model_ = model
        self.coef_, self.intercept_ = model.coef_.copy(), model.intercept_.copy()

    def _probability(self, X: np.ndarray) -> np.ndarray:
        """P(y = 1) at the map's features ``X``, clipped to [EPS, 1 - EPS]."""
        if "coef_" not in vars(self):  # fitted by an earlier version: its sklearn model only
            return _clip(self.model_.predict_proba(X)[:, 1])
        return _clip(_logistic(X, self.coef_, self.intercept_))


class PlattCalibrator(_LogisticMap):
    """Platt scaling: ``sigmoid(a * margin + b)``."""

    name = "sigmoid"

    def fit(self, margin: np.ndarray, y: np.ndarray) -> PlattCalibrator:
        """Fit on margins and 0/1 labels."""
        self._keep(_fitted_logistic(np.reshape(margin, (-1, 1)), y, C=1e6))
        return self

    def predict(self, margin: np.ndarray) -> np.ndarray:
        """Calibrated probabilities."""
        return self._probability(np.reshape(np.asarray(margin, dtype=float), (-1, 1)))


class BetaCalibrator(_LogisticMap):
    """Beta calibration on the booster's probability ``p = sigmoid(margin)``.

    ``logit(q) = a * ln p - b * ln(1 - p) + c`` with ``a, b >= 0`` (a feature whose fitted
    coefficient comes out negative is dropped and the map refitted), so the map is monotone.
    """

    name = "beta"

    @staticmethod
    def _design(margin: np.ndarray) -> np.ndarray:
        m = np.asarray(margin, dtype=float)
        # ln p = -softplus(-m); -ln(1 - p) = softplus(m)
        return np.column_stack([-np.logaddexp(0, -m), np.logaddexp(0, m)])

    def fit(self, margin: np.ndarray, y: np.ndarray) -> BetaCalibrator:
        """Fit on margins and 0/1 labels."""
        X = self._design(margin)
        self.columns_ = [0, 1]
        for _ in range(2):
            model = _fitted_logistic(X[:, self.columns_], y, C=1e6, max_iter=1000)
            negative = [c for c, w in zip(self.columns_, model.coef_[0], strict=True) if w < 0]
            if not negative:
                break
            self.columns_ = [c for c in self.columns_ if c not in negative] or [1]
        else:
            model = _fitted_logistic(X[:, self.columns_], y, C=1e6, max_iter=1000)
        self._keep(model)
        return self

    def predict(self, margin: np.ndarray) -> np.ndarray:
        """Calibrated probabilities."""
        return self._probability(self._design(margin)[:, self.columns_])


class SmoothIsotonicCalibrator:
    """Isotonic regression smoothed by linear interpolation between its block centroids."""

    name = "smooth_isotonic"

    def fit(self, margin: np.ndarray, y: np.ndarray) -> SmoothIsotonicCalibrator:
        """Fit on margins and 0/1 labels."""
        from sklearn.isotonic import IsotonicRegression

        m = np.asarray(margin, dtype=float)
        iso = IsotonicRegression(y_min=EPS, y_max=1 - EPS, out_of_bounds="clip").fit(m, y)
        fitted = iso.predict(m)
        order = np.argsort(m, kind="stable")
        m, fitted = m[order], fitted[order]
        # blocks: runs of equal fitted value; centroid = (mean margin, block value)
        starts = np.flatnonzero(np.r_[True, np.diff(fitted) != 0])
        sums = np.add.reduceat(m, starts)
        counts = np.diff(np.r_[starts, len(m)])
        self.x_ = sums / counts
        self.y_ = fitted[starts]
        return self

    def predict(self, margin: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (flat beyond the outermost centroids)."""
        return _clip(np.interp(np.asarray(margin, dtype=float), self.x_, self.y_))


CALIBRATORS = {c.name: c for c in (PlattCalibrator, BetaCalibrator, SmoothIsotonicCalibrator)}


def lean_copy(calibrator: object) -> object | None:
    """A copy of a fitted map without scikit-learn state (same predictions), or None.

    None for a scikit-learn object (the step ``isotonic`` map) and for logistic maps fitted by
    earlier versions (no coefficients of their own).
    """
    if type(calibrator) not in CALIBRATORS.values():
        return None
    if isinstance(calibrator, _LogisticMap) and "coef_" not in vars(calibrator):
        return None
    lean = copy.copy(calibrator)
    vars(lean).pop("model_", None)
    return lean


def cross_validated_log_loss(
    margin: np.ndarray, y: np.ndarray, names: tuple[str, ...], folds: int = 5, seed: int = 0
) -> dict[str, float]:
    """Out-of-fold log loss of each candidate map on (margin, y), stratified folds."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y).astype(int)
    margin = np.asarray(margin, dtype=float)
    k = int(min(folds, np.bincount(y, minlength=2).min()))
    if k < 2:
        return {name: float("nan") for name in names}
    out = {}
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    splits = list(splitter.split(margin.reshape(-1, 1), y))
    for name in names:
        p = np.empty(len(y))
        for tr, va in splits:
            p[va] = CALIBRATORS[name]().fit(margin[tr], y[tr]).predict(margin[va])
        out[name] = _log_loss(y, p)
    return out


def choose_calibrator(
    margin: np.ndarray, y: np.ndarray, names: tuple[str, ...], folds: int = 5, seed: int = 0
) -> tuple[object, dict[str, float]]:
    """The candidate with the lowest cross-validated log loss, refitted on all rows.

    Returns:
        (fitted calibrator, {candidate: CV log loss}); ties and NaNs go to the first name.
    """
    losses = cross_validated_log_loss(margin, y, names, folds, seed)
    finite = {k: v for k, v in losses.items() if np.isfinite(v)}
    best = min(finite, key=finite.get) if finite else names[0]
    return CALIBRATORS[best]().fit(margin, y), losses
