"""Experiment estimators: slow hand-written twins, and a calibration study (marked slow)."""

import math

import numpy as np
import pytest
from scipy import stats

from partnerscore.training.experiments import (
    adjusted_difference,
    bootstrap_difference,
    minimum_detectable_effect,
    minimum_detectable_lift,
    required_partners,
    sample_ratio_mismatch,
    welch_difference,
)


def _program(rng, n=400, effect=0.0):
    """Zero-inflated lognormal revenue (heavy tail) whose pre-period value predicts it.

    Returns:
        (outcome, treated 0/1, pre-period covariate, true effect = sample average of Y1 - Y0)
    """
    quality = rng.normal(size=n)
    active = rng.random(n) < 1 / (1 + np.exp(-quality))
    pre = np.where(active, np.exp(9 + 0.9 * quality + rng.normal(0, 0.5, n)), 0.0)
    y0 = np.where(
        active & (rng.random(n) < 0.8), np.exp(9 + 0.9 * quality + rng.normal(0, 0.6, n)), 0.0
    )
    treated = np.zeros(n, dtype=int)
    treated[rng.permutation(n)[: n // 2]] = 1
    y1 = y0 * (1 + effect)
    y = np.where(treated == 1, y1, y0)
    return y, treated, pre, float((y1 - y0).mean())


def test_welch_matches_the_textbook_formula():
    rng = np.random.default_rng(1)
    t, c = rng.exponential(3, 40), rng.exponential(2, 70)
    est = welch_difference(t, c)
    vt, vc = t.var(ddof=1) / len(t), c.var(ddof=1) / len(c)
    se = math.sqrt(vt + vc)
    df = (vt + vc) ** 2 / (vt**2 / (len(t) - 1) + vc**2 / (len(c) - 1))
    q = stats.t.ppf(0.975, df)
    diff = t.mean() - c.mean()
    assert est.effect == pytest.approx(diff)
    assert est.se == pytest.approx(se)
    assert (est.ci_low, est.ci_high) == pytest.approx((diff - q * se, diff + q * se))
    assert est.p_value == pytest.approx(stats.ttest_ind(t, c, equal_var=False).pvalue)


@pytest.mark.parametrize("cov_type, power", [("HC2", 1), ("HC3", 2)])
def test_adjusted_matches_a_hand_written_interacted_ols(cov_type, power):
    rng = np.random.default_rng(2)
    y, d, pre, _ = _program(rng, n=120, effect=0.2)
    est = adjusted_difference(y, d, pre, cov_type=cov_type)
    xc = pre - pre.mean()
    X = np.column_stack([np.ones_like(y), d, xc, d * xc])
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    resid = y - X @ beta
    bread = np.linalg.inv(X.T @ X)
    leverage = np.einsum("ij,jk,ik->i", X, bread, X)
    meat = X.T @ (X * (resid**2 / (1 - leverage) ** power)[:, None])
    se = math.sqrt((bread @ meat @ bread)[1, 1])
    q = stats.t.ppf(0.975, len(y) - X.shape[1])
    assert est.effect == pytest.approx(beta[1], rel=1e-9)
    assert est.se == pytest.approx(se, rel=1e-9)
    assert (est.ci_low, est.ci_high) == pytest.approx((beta[1] - q * se, beta[1] + q * se))


def test_adjusted_without_useful_covariates_is_the_difference_in_means():
    rng = np.random.default_rng(3)
    y, d, _, _ = _program(rng, n=100)
    est = adjusted_difference(y, d, np.ones(len(y)))  # constant covariate is dropped
    assert est.effect == pytest.approx(y[d == 1].mean() - y[d == 0].mean())


def test_covariates_not_identifiable_within_an_arm_are_dropped():
    import warnings

    rng = np.random.default_rng(5)
    y, d, pre, _ = _program(rng, n=60)
    flag = np.where(d == 1, 1.0, rng.integers(0, 2, len(d)))  # constant among the treated
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no rank-deficiency warning from statsmodels
        both = adjusted_difference(y, d, np.column_stack([pre, flag, 2 * pre]))
    assert both.effect == pytest.approx(adjusted_difference(y, d, pre).effect)
    assert both.se == pytest.approx(adjusted_difference(y, d, pre).se)


def test_too_small_arms_give_undefined_intervals_not_errors():
    est = welch_difference([1.0], [2.0, 3.0])
    assert math.isnan(est.ci_low) and not est.significant
    assert math.isnan(adjusted_difference([1.0, 2, 3], [1, 0, 0], [1.0, 2, 4]).ci_low)
    assert math.isnan(bootstrap_difference([1.0, 1.0], [1.0, 1.0]).ci_low)
    assert est.to_dict()["ci_low"] is None


def test_bootstrap_is_seeded_and_centred_on_the_difference():
    rng = np.random.default_rng(4)
    t, c = rng.lognormal(0, 1, 200), rng.lognormal(0, 1, 200)
    a, b = bootstrap_difference(t, c, seed=7), bootstrap_difference(t, c, seed=7)
    assert a == b
    assert a.ci_low < a.effect < a.ci_high
    assert a.se == pytest.approx(welch_difference(t, c).se, rel=0.15)


def test_sample_ratio_mismatch_is_the_pearson_chi_square():
    check = sample_ratio_mismatch(
        {"control": 600, "treatment": 400}, {"control": 1, "treatment": 1}
    )
    assert check.chi2 == pytest.approx((100**2 / 500) * 2)
    assert check.p_value == pytest.approx(stats.chi2.sf(40.0, 1))
    assert check.mismatch
    fine = sample_ratio_mismatch(
        {"control": 505, "treatment": 495}, {"control": 0.5, "treatment": 0.5}
    )
    assert not fine.mismatch
    # unequal design: 30% treated is not a mismatch, 50% is
    design = {"control": 0.7, "treatment": 0.3}
    assert not sample_ratio_mismatch({"control": 700, "treatment": 300}, design).mismatch
    assert sample_ratio_mismatch({"control": 500, "treatment": 500}, design).mismatch
    with pytest.raises(ValueError, match="no design share"):
        sample_ratio_mismatch({"x": 3}, design)


def test_power_calculations_round_trip():
    from statsmodels.stats.power import TTestIndPower

    mde = minimum_detectable_effect(500, 500, sd=10.0)
    power = TTestIndPower().power(mde / 10.0, nobs1=500, alpha=0.05, ratio=1.0)
    assert power == pytest.approx(0.8, abs=1e-6)
    assert required_partners(mde, 10.0) == pytest.approx(1000, abs=2)
    # adjustment with R² = 0.75 halves the residual sd, so the MDE
    assert minimum_detectable_effect(500, 500, 10.0, r_squared=0.75) == pytest.approx(mde / 2)
    lift = minimum_detectable_lift(500, 500, base_rate=0.4)
    assert 0.05 < lift < 0.12
    assert math.isnan(minimum_detectable_effect(1, 500, 10.0))


@pytest.mark.slow
def test_calibration_coverage_cuped_and_false_positives():
    """400 seeded replications: intervals cover the true effect ~95% of the time, regression
    adjustment narrows them, a null effect is significant at most at the nominal rate, and a
    sample-ratio mismatch is detected."""
    reps = 400
    cover = {"welch": [], "adjusted": [], "bootstrap": []}
    width = {"welch": [], "adjusted": []}
    null_sig = {"welch": [], "adjusted": [], "bootstrap": []}
    for r in range(reps):
        rng = np.random.default_rng(1000 + r)
        y, d, pre, truth = _program(rng, effect=0.25)
        ests = [
            welch_difference(y[d == 1], y[d == 0]),
            adjusted_difference(y, d, pre),
            bootstrap_difference(y[d == 1], y[d == 0], n_resamples=499, seed=r, method="basic"),
        ]
        for e in ests:
            cover[e.method].append(e.covers(truth))
        width["welch"].append(ests[0].width)
        width["adjusted"].append(ests[1].width)
        y, d, pre, truth = _program(rng, effect=0.0)
        assert truth == 0.0
        ests = [
            welch_difference(y[d == 1], y[d == 0]),
            adjusted_difference(y, d, pre),
            bootstrap_difference(y[d == 1], y[d == 0], n_resamples=499, seed=r, method="basic"),
        ]
        for e in ests:
            null_sig[e.method].append(e.significant)
    sd = math.sqrt(0.95 * 0.05 / reps)  # ~0.011
    print({m: round(float(np.mean(v)), 3) for m, v in cover.items()}, "coverage")
    print({m: round(float(np.mean(v)), 3) for m, v in null_sig.items()}, "null significant")
    for method, hits in cover.items():
        assert abs(np.mean(hits) - 0.95) < 3.5 * sd, (method, np.mean(hits))
    for method, hits in null_sig.items():
        assert np.mean(hits) < 0.05 + 3.5 * sd, (method, np.mean(hits))
    ratio = np.mean(width["adjusted"]) / np.mean(width["welch"])
    print(f"adjusted / welch mean width {ratio:.3f}")
    assert ratio < 0.9, ratio
    assert np.mean(np.array(width["adjusted"]) < np.array(width["welch"])) > 0.9

    # sample ratio: 3,000 partners at 50/50 with 20% of the treated lost is flagged nearly always
    rng = np.random.default_rng(0)
    shares = {"control": 0.5, "treatment": 0.5}
    detected, false_alarms = [], []
    for _ in range(reps):
        treated = rng.binomial(3000, 0.5)
        counts = {"control": 3000 - treated, "treatment": treated}
        false_alarms.append(sample_ratio_mismatch(counts, shares).mismatch)
        counts["treatment"] = rng.binomial(treated, 0.8)
        detected.append(sample_ratio_mismatch(counts, shares).mismatch)
    assert np.mean(false_alarms) < 0.01
    assert np.mean(detected) > 0.95
