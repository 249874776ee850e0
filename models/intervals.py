"""Prediction intervals and a predictive median for the revenue head, from out-of-fold predictions.

Every construction is split conformal on out-of-fold predictions (each partner predicted by a
model that never saw it), so the guarantees hold for new partners like the calibration rows.
A batch whose mix differs from the calibration rows' gets the coverage of that mix: the newest
signing cohorts are mostly young snapshots (41% at day 30 against 25% out of fold), which one
pooled normalised quantile covers more often (81.5% at day 30, 79.2% at day 180 on 16
simulated 5k programs), so their coverage was 80.7% rather than 80%; one quantile per
onboarding age (the default) gives 80.2-80.4% at every age and 80.2% overall
(``bench/bench_interval_coverage.py``).

- ``method="normalized"`` (default): plain split conformal over **all** calibration rows on the
  normalised residual ``s = |y - mu| / mu ** g`` with ``g = power / 2`` (the tweedie variance
  function ``Var ~ mu ** power`` of the revenue head), interval
  ``[max(0, mu - q mu ** g), mu + q mu ** g]`` with ``q`` the conformal quantile of ``s``.
  Realised revenue has a point mass at zero, but the score of a zero, ``mu ** (1 - g)``, varies
  with ``mu``, so the scores have no large ties and the **marginal** coverage is the nominal one
  (``coverage <= P(covered) < coverage + 1 / (n + 1)`` for exchangeable rows), without
  randomisation. It is not conditional: partners with a small ``mu`` are covered by their zero
  more often than ``coverage``, partners with a large ``mu`` less often (whose zero falls outside
  ``[mu - q mu ** g, ...]``); :func:`conditional_coverage` reports it per prediction bin and for
  zero / positive outcomes.
- **Per onboarding age** (``fit(..., age=...)``, the training job's default): the same score
  with one conformal quantile per snapshot age of the calibration rows (30, 60, 90, 180 days:
  the ages ``build`` makes), each from that age's rows alone (at least :data:`MIN_AGE_ROWS`;
  an age with fewer rows uses the pooled ``q``). The pooled quantile covers young snapshots
  more often than old ones (out of fold ~81.3% at day 30, ~79% at day 180), and the newest
  cohorts, a holdout's or a scoring batch's, are mostly young: per age the coverage is the
  nominal one within each age's rows, whatever the batch's age mix. A row is scored with the
  quantile of the oldest calibration age it has reached (the youngest for a younger row; the
  pooled one when its age is unknown).
- ``method="mondrian"`` (the earlier construction, kept for comparison and for bundles pickled
  with it): per prediction bin, conformal quantiles of the ratio ``y / mu``; where the zero mass
  covers the lower tail the interval is ``[0, q]``, where more than ``coverage`` of a bin
  realised zero it is ``[0, 0]``, which covers that zero share — conditional per bin, but its
  marginal coverage over-shoots on zero-inflated revenue (``attainable_coverage_``).

The **predictive median** (``median``): per prediction bin, the median of the out-of-fold ratio
``y / mu`` times ``mu`` — the p50 of the empirical predictive distribution ``mu * ratio``. For a
zero-inflated target it is 0 wherever more than half of similar partners realised nothing; it
is the point forecast for absolute error (MAE is minimised by the median), while ``mu`` (the
mean) is the one that sums to a forecast.

Portfolio (segment) intervals add many partners, so they use a variance model instead of
adding per-partner bounds (``variance``, ``train.portfolio_variance``):

- ``bins`` (default, conservative): per prediction bin, the out-of-fold coefficient of
  variation ``cv_b = sqrt(mean(((y - mu) / mu) ** 2))``, so ``sd = cv_b * mu`` (deal sizes
  scale with the partner: the spread grows like ``mu``), partners independent. The per-row mean
  is dominated by small-``mu`` partners with large ratios and puts 4-6 times the realised
  squared error on a portfolio (8 simulated 5k programs): its intervals covered 88% / 93% of
  holdout tier and region cells at a nominal 80% on 5k / 20k programs, 1.9 / 1.1 times the
  expected total wide. Too wide, but it also stands in for what independent partners miss;
- ``ratio_level``: each partner's own spread per :data:`VARIANCE_BINS` prediction bins,
  ``cv_b = sqrt(sum((y - mu) ** 2) / sum(mu ** 2))`` (:func:`variance_bins`: the bin's
  predicted variance, summed, equals its realised squared error), plus a level error shared
  by a cohort (``level_cv``, ``tau``): partners signed in the same month and scored at the
  same age miss together, which independent partners cannot express; the more partners a
  segment adds, the more ``(tau * sum mu) ** 2`` dominates. ``tau`` is the method-of-moments
  estimate over the out-of-fold (signing month, age) groups of at least
  :data:`MIN_LEVEL_ROWS` rows: ``tau^2 = mean(b_g^2 - v_g)`` (at least 0), ``b_g`` the group's
  relative error ``sum(y) / sum(mu) - 1`` and ``v_g = sum(sd^2) / sum(mu)^2`` what independent
  partners alone would give it (:func:`level_cv`). Half as wide and a little under nominal:
  73.5% / 75.8% of the same cells (the newest cohorts' extrapolation error is not in the
  out-of-fold rows).

A segment's total then has mean ``M = sum mu`` and variance ``sum sd^2 + (tau M)^2`` (``tau``
0 with ``bins``), and its
interval is the central part of a compound Poisson-gamma (tweedie, variance power
:data:`PORTFOLIO_POWER`) distribution with those moments (:func:`portfolio_interval`): a sum of
a few partners' revenue is often exactly 0 and otherwise right-skewed, which a lognormal (used
before 2026-12-04) cannot be: on random groups of 5 holdout partners its 80% interval covered
52-58% of horizon totals and 9-12% of one month's (README, "Forecast file").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PORTFOLIO_POWER = 1.8
"""Variance power of the compound Poisson-gamma shape of portfolio (segment) intervals."""
TWEEDIE_EXACT_DEALS = 200.0
"""Expected deals above which a portfolio sum's compound Poisson-gamma is taken as one gamma."""
TWEEDIE_CHUNK = 64
"""Cells (sorted by expected deals) whose compound Poisson-gamma CDF is summed together."""
MIN_AGE_ROWS = 100
"""Calibration rows an onboarding age needs for a quantile of its own (else the pooled one)."""
VARIANCE_BINS = 10
"""Prediction bins of the portfolio variance model (``cv_b``)."""
RELATIVE_VARIANCE_RANGE = (1e-300, 1e300)
"""Bounds a portfolio sum's ``V / M^2`` is taken within (:func:`relative_variance`)."""
MIN_LEVEL_ROWS = 30
"""Out-of-fold rows a (signing month, age) group needs to count in the level error ``tau``."""


def quantile_edges(mu: np.ndarray, bins: int) -> np.ndarray:
    """Inner edges of ``bins`` prediction bins at quantiles of ``mu`` (repeated edges merged).

    ``np.searchsorted(edges, mu, side="right")`` is then each row's bin.
    """
    return np.unique(np.quantile(mu, np.linspace(0, 1, bins + 1)[1:-1]))


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ``ceil((n + 1) * level) / n`` empirical quantile (the split-conformal one)."""
    s = np.sort(np.asarray(scores, dtype=float))
    n = len(s)
    if n == 0:
        return float("nan")
    k = int(np.ceil((n + 1) * level)) - 1
    return float(s[min(max(k, 0), n - 1)])


class RevenueIntervals:
    """Split-conformal revenue intervals, a predictive median and a portfolio variance model.

    Args:
        coverage: Target share of partners whose realised revenue falls in their interval.
        bins: Number of prediction bins (quantiles of the out-of-fold predictions) for the
            median, the variance model and the ``mondrian`` intervals.
        method: ``normalized`` (one conformal quantile of ``|y - mu| / mu ** (power / 2)``
            over all rows; nominal marginal coverage) or ``mondrian`` (per-bin ratio quantiles).
        power: Variance power of the ``normalized`` score (the revenue head's tweedie power).
        variance: Portfolio variance model: ``bins`` (per-row mean of squared relative
            errors in the ``bins`` prediction bins, no level error; the default) or
            ``ratio_level`` (:func:`variance_bins` over :data:`VARIANCE_BINS` bins and the
            cohort level error :func:`level_cv` from ``groups``).
    """

    def __init__(
        self,
        coverage: float = 0.8,
        bins: int = 5,
        method: str = "normalized",
        power: float = 1.5,
        variance: str = "bins",
    ) -> None:
        self.coverage = coverage
        self.bins = bins
        self.method = method
        self.power = power
        self.variance = variance

    def fit(
        self,
        y: np.ndarray,
        mu: np.ndarray,
        age: np.ndarray | None = None,
        groups: np.ndarray | None = None,
    ) -> RevenueIntervals:
        """Fit from realised revenue and out-of-fold predictions of the same rows.

        Args:
            y: Realised revenue.
            mu: Out-of-fold predictions.
            age: Each row's onboarding age in days (``normalized`` only): one conformal
                quantile per age with at least :data:`MIN_AGE_ROWS` rows.
            groups: Each row's cohort (e.g. signing month and age) for the shared level error
                ``level_cv_`` (:func:`level_cv`); None: 0, partners independent.
        """
        if not 0 < self.coverage < 1:
            raise ValueError("coverage must be strictly between 0 and 1")
        if self.bins < 1:
            raise ValueError("bins must be >= 1")
        if self.method not in ("normalized", "mondrian"):
            raise ValueError("method must be 'normalized' or 'mondrian'")
        if not 1.0 <= self.power <= 2.0:
            raise ValueError("power must be in [1, 2]")
        if self.variance not in ("bins", "ratio_level"):
            raise ValueError("variance must be 'bins' or 'ratio_level'")
        y = np.asarray(y, dtype=float)
        mu = np.maximum(np.asarray(mu, dtype=float), 1e-9)
        if len(y) != len(mu) or len(y) < 20:
            raise ValueError("need at least 20 out-of-fold predictions with labels")
        self.edges_ = quantile_edges(mu, self.bins)
        which = np.searchsorted(self.edges_, mu, side="right")
        ratio = y / mu
        alpha = 1 - self.coverage
        lo, hi, attainable, cv, median = [], [], [], [], []
        for b in range(len(self.edges_) + 1):
            r = ratio[which == b]
            if len(r) == 0:
                r = ratio
            cv.append(float(np.sqrt(np.mean((r - 1.0) ** 2))))
            median.append(float(np.quantile(r, 0.5, method="inverted_cdf")))
            zero_share = float(np.mean(r <= 0))
            attainable.append((len(r), max(zero_share, self.coverage)))
            if zero_share >= alpha / 2:
                # the zero mass covers the lower tail: interval [0, q(coverage)]
                lo.append(0.0)
                hi.append(conformal_quantile(r, self.coverage))
            else:
                lo.append(conformal_quantile(r, alpha / 2))
                hi.append(conformal_quantile(r, 1 - alpha / 2))
        self.lo_ratio_ = np.array(lo)
        self.hi_ratio_ = np.array(hi)
        if self.variance == "bins":
            self.var_edges_, self.cv_, self.level_cv_ = self.edges_, np.array(cv), 0.0
        else:
            self.var_edges_, self.cv_ = variance_bins(y, mu, VARIANCE_BINS)
            self.level_cv_ = level_cv(y, mu, self.sd(mu), groups) if groups is not None else 0.0
        self.median_ratio_ = np.array(median)
        if self.method == "mondrian":
            counts, levels = np.array(attainable).T
            self.attainable_coverage_ = float(np.sum(counts * levels) / np.sum(counts))
            self.q_ = float("nan")
        else:
            score = np.abs(y - mu) / self._scale(mu)
            self.q_ = conformal_quantile(score, self.coverage)
            self.attainable_coverage_ = float(self.coverage)
            self.age_classes_, self.q_age_ = np.array([]), np.array([])
            if age is not None:
                age = np.asarray(age, dtype=float)
                if len(age) != len(y):
                    raise ValueError("need one age per prediction")
                self.age_classes_ = np.unique(age[np.isfinite(age)])
                self.q_age_ = np.array(
                    [
                        conformal_quantile(score[age == a], self.coverage)
                        if np.sum(age == a) >= MIN_AGE_ROWS
                        else self.q_
                        for a in self.age_classes_
                    ]
                )
        return self

    def quantile(self, n: int, age: np.ndarray | None = None) -> np.ndarray:
        """The ``normalized`` conformal quantile of each of ``n`` rows (per age when fitted so).

        A row takes the quantile of the oldest calibration age it has reached, the youngest
        one's below it, the pooled ``q`` when its age is missing or the model has none per age.
        """
        q = np.full(n, self.q_)
        classes = getattr(self, "age_classes_", np.array([]))
        if age is None or not len(classes):
            return q
        age = np.asarray(age, dtype=float)
        known = np.isfinite(age)
        at = np.maximum(np.searchsorted(classes, age[known], side="right") - 1, 0)
        q[known] = self.q_age_[at]
        return q

    def _scale(self, mu: np.ndarray) -> np.ndarray:
        return np.maximum(mu, 1e-9) ** (self.power / 2)

    def _bin(self, mu: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.edges_, np.maximum(mu, 1e-9), side="right")

    def predict(
        self, mu: np.ndarray, age: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) bounds per prediction; ``age``: each row's onboarding age in days."""
        mu = np.asarray(mu, dtype=float)
        if getattr(self, "method", "mondrian") == "normalized":
            half = self.quantile(len(mu), age) * self._scale(mu)
            return np.maximum(mu - half, 0.0), np.maximum(mu, 0.0) + half
        which = self._bin(mu)
        return mu * self.lo_ratio_[which], mu * self.hi_ratio_[which]

    def median(self, mu: np.ndarray) -> np.ndarray:
        """Predictive median (p50 of ``mu`` times the out-of-fold ratio of mu's bin).

        NaN for interval models fitted before the median existed.
        """
        mu = np.maximum(np.asarray(mu, dtype=float), 0.0)
        if not hasattr(self, "median_ratio_"):
            return np.full(len(mu), np.nan)
        return mu * self.median_ratio_[self._bin(mu)]

    def sd(self, mu: np.ndarray) -> np.ndarray:
        """Standard deviation of realised revenue around ``mu``: ``cv_b * mu`` for mu's bin."""
        mu = np.maximum(np.asarray(mu, dtype=float), 0.0)
        edges = getattr(self, "var_edges_", self.edges_)  # bundles before 2026-12-05: one set
        return mu * self.cv_[np.searchsorted(edges, np.maximum(mu, 1e-9), side="right")]

    @property
    def level(self) -> float:
        """The shared level error ``tau`` (0 for bundles fitted before it existed)."""
        return float(getattr(self, "level_cv_", 0.0))

    def portfolio(self, mu: np.ndarray, sd: np.ndarray | None = None) -> tuple[float, float, float]:
        """(expected total, lower, upper) of a sum of partners' revenue (with the level error)."""
        mu = np.asarray(mu, dtype=float)
        sd = self.sd(mu) if sd is None else np.asarray(sd, dtype=float)
        return portfolio_interval(mu, sd, self.coverage, level_cv=self.level)

    def to_dict(self) -> dict:
        """Plain description (logged to MLflow)."""
        return {
            "coverage": self.coverage,
            "method": getattr(self, "method", "mondrian"),
            "power": getattr(self, "power", None),
            "q": getattr(self, "q_", None),
            "q_by_age": dict(
                zip(
                    [str(int(a)) for a in getattr(self, "age_classes_", [])],
                    [float(q) for q in getattr(self, "q_age_", [])],
                    strict=True,
                )
            ),
            "median_ratio": getattr(self, "median_ratio_", np.array([])).tolist(),
            "edges": self.edges_.tolist(),
            "lo_ratio": self.lo_ratio_.tolist(),
            "hi_ratio": self.hi_ratio_.tolist(),
            "variance": getattr(self, "variance", "bins"),
            "cv": self.cv_.tolist(),
            "variance_edges": getattr(self, "var_edges_", self.edges_).tolist(),
            "level_cv": self.level,
            "attainable_coverage": self.attainable_coverage_,
        }


def variance_bins(y: np.ndarray, mu: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(edges, cv per bin) of the portfolio variance model: ``sqrt(sum((y-mu)^2) / sum(mu^2))``.

    Bins are quantiles of ``mu`` (repeated edges merged); an empty bin takes the pooled ratio.
    """
    y, mu = np.asarray(y, dtype=float), np.maximum(np.asarray(mu, dtype=float), 1e-9)
    edges = quantile_edges(mu, bins)
    which = np.searchsorted(edges, mu, side="right")
    sq = np.bincount(which, weights=np.square(y - mu), minlength=len(edges) + 1)
    m2 = np.bincount(which, weights=np.square(mu), minlength=len(edges) + 1)
    cv = np.full(len(edges) + 1, np.sqrt(sq.sum() / m2.sum()))
    ok = m2 > 0
    cv[ok] = np.sqrt(sq[ok] / m2[ok])
    return edges, cv


def level_cv(y: np.ndarray, mu: np.ndarray, sd: np.ndarray, groups: np.ndarray) -> float:
    """The relative level error shared by a cohort's partners (method of moments).

    Per group of at least :data:`MIN_LEVEL_ROWS` rows with a positive expected total ``M``:
    ``b = sum(y) / M - 1`` and ``v = sum(sd^2) / M^2`` (the part independent partners
    explain); ``tau = sqrt(max(0, mean(b^2 - v)))``; 0 with no such group.
    """
    frame = pd.DataFrame(
        {
            "g": pd.Series(np.asarray(groups)).astype(str).to_numpy(),
            "y": np.asarray(y, dtype=float),
            "mu": np.asarray(mu, dtype=float),
            "v": np.square(np.asarray(sd, dtype=float)),
        }
    )
    sums = frame.groupby("g", sort=True).agg(
        n=("y", "size"), y=("y", "sum"), mu=("mu", "sum"), v=("v", "sum")
    )
    sums = sums[(sums["n"] >= MIN_LEVEL_ROWS) & (sums["mu"] > 0)]
    if sums.empty:
        return 0.0
    excess = (sums["y"] / sums["mu"] - 1.0) ** 2 - sums["v"] / sums["mu"] ** 2
    return float(np.sqrt(max(0.0, float(excess.mean()))))


def portfolio_interval(
    mu: np.ndarray,
    sd: np.ndarray,
    coverage: float = 0.8,
    power: float | None = PORTFOLIO_POWER,
    level_cv: float = 0.0,
) -> tuple[float, float, float]:
    """(total, lower, upper) of a sum of partners' revenue.

    The sum of zero-inflated, heavy-tailed revenues is exactly 0 with some probability and
    right-skewed otherwise, so the interval is the central ``coverage`` of a compound
    Poisson-gamma distribution with the sum's mean ``M = sum mu``, variance ``V = sum sd^2``
    and variance power ``power`` (:func:`portfolio_bounds`; ``None``: the earlier lognormal,
    ``s2 = ln(1 + V / M^2)``, bounds ``M exp(-s2 / 2 -+ z sqrt(s2))``). Both tend to the normal
    interval as the sum grows. ``level_cv`` (``tau``) adds the cohort's shared level error,
    ``(tau M)^2``, to the variance.
    """
    total = float(np.sum(mu))
    var = float(np.sum(np.square(sd))) + (level_cv * total) ** 2
    lo, hi = portfolio_bounds(np.array([total]), np.array([var]), coverage, power)
    return total, float(lo[0]), float(hi[0])


def relative_variance(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """``V / M^2`` of sums with positive means, within :data:`RELATIVE_VARIANCE_RANGE`.

    Beyond the floats it overflowed to inf (a mean of 1e-300 with an s.d. of 1e12: overflow
    RuntimeWarnings, NaN lognormal bounds) or rounded to 0 (a mean of 1e6 with an s.d. of
    1e-160: 1 / 0 expected deals, NaN bounds). At the range's ends the bounds already are the
    limits' in floats: 5e-300 expected deals, so the sum is 0 with probability 1 (bounds
    (0, 0)); a spread of 1e-150 of the mean (bounds (M, M)).
    """
    with np.errstate(over="ignore", under="ignore"):
        return np.clip((np.sqrt(var) / mean) ** 2, *RELATIVE_VARIANCE_RANGE)


def portfolio_bounds(
    total: np.ndarray,
    var: np.ndarray,
    coverage: float = 0.8,
    power: float | None = PORTFOLIO_POWER,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`portfolio_interval`'s bounds for many sums at once, from their means and variances.

    ``power`` (default :data:`PORTFOLIO_POWER`): the central ``coverage`` of a compound
    Poisson-gamma (tweedie) distribution with the sum's mean ``M`` and variance ``V`` and that
    variance power: ``lambda = M^2 / ((2 - p) V)`` independent deals on average, each gamma
    with shape ``(2 - p) / (p - 1)`` and scale ``(p - 1) V / M``, and the probability
    ``exp(-lambda)`` that the sum is exactly 0 (:func:`tweedie_quantiles`). ``None``: a
    lognormal with that mean and variance (the construction before 2026-12-04; it has no mass
    at 0 and misses most sums of a few partners, see the README). A sum with a mean of 0 or
    less has the bounds (0, 0); one without variance (M, M).
    """
    total, var = np.asarray(total, dtype=float), np.asarray(var, dtype=float)
    lo, hi = np.zeros(len(total)), np.zeros(len(total))
    pos = total > 0
    sure = pos & ~(var > 0)
    lo[sure] = hi[sure] = total[sure]
    pos &= var > 0
    if not pos.any():
        return lo, hi
    if power is None:
        from scipy.stats import norm  # not at import: the score job needs none of SciPy

        s2 = np.log1p(relative_variance(total[pos], var[pos]))
        z = float(norm.ppf(0.5 + coverage / 2))
        centre = np.log(total[pos]) - s2 / 2
        lo[pos] = np.exp(centre - z * np.sqrt(s2))
        hi[pos] = np.exp(centre + z * np.sqrt(s2))
        return lo, hi
    bounds = tweedie_quantiles(
        total[pos], var[pos], power, np.array([(1 - coverage) / 2, (1 + coverage) / 2])
    )
    lo[pos], hi[pos] = bounds[:, 0], bounds[:, 1]
    return lo, hi


def tweedie_quantiles(
    mean: np.ndarray, var: np.ndarray, power: float, probs: np.ndarray
) -> np.ndarray:
    """Quantiles (n, len(probs)) of compound Poisson-gamma sums with these means and variances.

    ``N ~ Poisson(lambda)`` deals, each ``Gamma(alpha, theta)``: ``lambda = M^2 / ((2 - p) V)``,
    ``alpha = (2 - p) / (p - 1)``, ``theta = (p - 1) V / M`` (so the mean is ``M``, the
    variance ``V``). The CDF at ``x > 0`` is ``exp(-lambda) + sum_n Pois(n) P(Gamma(n alpha,
    theta) <= x)``, summed over the ``n`` holding all but ~1e-12 of the Poisson mass; a
    quantile below ``exp(-lambda)`` is 0, the others are found by bisection on the log scale
    (42 halvings of a bracket from ``M * 1e-12`` to past ``M + 40 sqrt(V)``: relative error
    below 1e-11; computed for ``X / M``, so any scale of money works; cells are summed in
    chunks of similar ``lambda``, each over the deal counts within 8 s.d. (+10) of its Poisson
    means). Above :data:`TWEEDIE_EXACT_DEALS` expected deals
    the sum is taken as a gamma with the same mean and variance: its 10% / 50% / 90% quantiles
    are then within 0.1% of the exact ones for powers up to 1.8 (0.15% at 1.95; tested).
    """
    from scipy.special import gammainc
    from scipy.stats import gamma, poisson

    if not 1.0 < power < 2.0:
        raise ValueError("power must be strictly between 1 and 2")
    mean, var = np.asarray(mean, dtype=float), np.asarray(var, dtype=float)
    probs = np.asarray(probs, dtype=float)
    # in units of the mean (X / M has mean 1 and variance rel): any scale of money works
    rel = relative_variance(mean, var)
    lam = 1 / ((2 - power) * rel)
    alpha = (2 - power) / (power - 1)
    theta = (power - 1) * rel
    out = np.empty((len(mean), len(probs)))
    many = lam > TWEEDIE_EXACT_DEALS
    if many.any():
        out[many] = gamma.ppf(probs[None, :], 1 / rel[many, None], scale=rel[many, None])
    few = np.flatnonzero(~many)
    few = few[np.argsort(lam[few], kind="stable")]
    for chunk in np.array_split(few, max(1, len(few) // TWEEDIE_CHUNK)):
        if not len(chunk):
            continue
        lam_c, theta_c = lam[chunk], theta[chunk]
        # the deal counts holding all but ~1e-15 of every cell's Poisson mass
        first = max(1, int(np.floor(lam_c.min() - 8 * np.sqrt(lam_c.min()) - 10)))
        last = int(np.ceil(lam_c.max() + 8 * np.sqrt(lam_c.max()) + 10))
        n = np.arange(first, last + 1)
        weights = poisson.pmf(n[None, :], lam_c[:, None])  # (cells, deal counts)
        shapes = n[None, :] * alpha
        p0 = np.exp(-lam_c)
        for j, q in enumerate(probs):
            lo = np.full(len(chunk), np.log(1e-12))
            hi = np.log(1 + 40 * np.sqrt(rel[chunk]))
            for _ in range(42):  # the bracket spans < 45 in log: 45 / 2^42 < 1e-11
                mid = (lo + hi) / 2
                cdf = p0 + np.sum(weights * gammainc(shapes, (np.exp(mid) / theta_c)[:, None]), 1)
                below = cdf < q
                lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
            out[chunk, j] = np.where(p0 >= q, 0.0, np.exp(hi))
    return out * mean[:, None]


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Share of rows with ``lo <= y <= hi``."""
    y = np.asarray(y, dtype=float)
    return float(np.mean((y >= np.asarray(lo)) & (y <= np.asarray(hi))))


def conditional_coverage(
    y: np.ndarray,
    mu: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    bins: int = 5,
    age: np.ndarray | None = None,
) -> pd.DataFrame:
    """Coverage overall, per quantile bin of ``mu``, for zero / positive outcomes and per age.

    Returns:
        Rows ``group`` (``all``, ``mu_bin_<k>`` from the smallest predictions, ``label_zero``,
        ``label_positive``, then ``age_<days>`` per onboarding age when ``age`` is given),
        ``rows``, ``share`` of all rows, ``coverage``, ``mu_lo`` / ``mu_hi`` (the group's
        prediction range) and ``zero_share`` (share realising 0).
    """
    y = np.asarray(y, dtype=float)
    mu = np.asarray(mu, dtype=float)
    covered = (y >= np.asarray(lo, dtype=float)) & (y <= np.asarray(hi, dtype=float))
    groups = [("all", np.ones(len(y), bool))]
    if len(y):
        edges = quantile_edges(mu, bins)
        which = np.searchsorted(edges, mu, side="right")
        groups += [(f"mu_bin_{b}", which == b) for b in range(len(edges) + 1)]
    groups += [("label_zero", y <= 0), ("label_positive", y > 0)]
    if age is not None:  # the per-age quantiles' purpose: nominal coverage at each age
        age = np.asarray(age, dtype=float)
        groups += [(f"age_{int(a)}", age == a) for a in np.unique(age[np.isfinite(age)])]
    rows = []
    for name, sel in groups:
        n = int(sel.sum())
        rows.append(
            {
                "group": name,
                "rows": n,
                "share": n / len(y) if len(y) else float("nan"),
                "coverage": float(covered[sel].mean()) if n else float("nan"),
                "mu_lo": float(mu[sel].min()) if n else float("nan"),
                "mu_hi": float(mu[sel].max()) if n else float("nan"),
                "zero_share": float((y[sel] <= 0).mean()) if n else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def coverage_cells(
    frame: pd.DataFrame,
    y: str,
    mu: str,
    sd: str,
    keys: list[str],
    coverage_level: float,
    level_cv: float = 0.0,
    sums: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Holdout totals and their portfolio intervals per group of ``keys``, all at once.

    One row per group (sorted; missing values a group of their own): ``rows``, the realised
    total ``actual``, the predicted total ``expected`` and its interval ``lo`` .. ``hi``
    (:func:`portfolio_interval` of the group's rows), ``covered``, and the total of each
    column of ``sums``. Every group's bounds come from one :func:`portfolio_bounds` call (one
    search over all cells, not one per cell); the tests hold the per-cell loop as its twin.
    """
    data = pd.DataFrame({key: frame[key].reset_index(drop=True) for key in keys})
    data["actual"] = frame[y].to_numpy(float)
    data["expected"] = frame[mu].to_numpy(float)
    data["_var"] = np.square(frame[sd].to_numpy(float))
    for col in sums:
        data[col] = frame[col].to_numpy(float)
    grouped = data.groupby(keys, observed=True, dropna=False, sort=True)
    cells = grouped.sum()
    cells.insert(0, "rows", grouped.size().to_numpy())
    cells = cells.reset_index()
    var = cells.pop("_var").to_numpy() + (level_cv * cells["expected"].to_numpy()) ** 2
    lo, hi = portfolio_bounds(cells["expected"].to_numpy(), var, coverage_level, PORTFOLIO_POWER)
    actual = cells["actual"].to_numpy()
    at = cells.columns.get_loc("expected") + 1
    for offset, (name, values) in enumerate(
        (("lo", lo), ("hi", hi), ("covered", (lo <= actual) & (actual <= hi)))
    ):
        cells.insert(at + offset, name, values)
    return cells


def segment_coverage(
    frame: pd.DataFrame,
    y: str,
    mu: str,
    sd: str,
    by: str,
    coverage_level: float,
    level_cv: float = 0.0,
    keys: tuple[str, ...] = (),
    sums: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Per segment value: realised total, predicted total and its interval, covered or not.

    Per value of ``by`` within each group of ``keys`` (if any), by :func:`coverage_cells`.
    Columns ``segment`` (``by``), ``value`` (as text), the cells' (``rows`` .. ``covered``,
    then ``sums``), then ``keys``; no rows: an empty frame without columns.
    """
    cells = coverage_cells(frame, y, mu, sd, [*keys, by], coverage_level, level_cv, sums)
    if cells.empty:
        return pd.DataFrame()
    values = cells.pop(by)
    cells.insert(0, "value", [str(v) for v in values])
    cells.insert(0, "segment", by)
    return cells[[c for c in cells.columns if c not in keys] + list(keys)]
