import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.isotonic import IsotonicRegression

from partnerscore.models.calibration import (
    CALIBRATORS,
    BetaCalibrator,
    PlattCalibrator,
    SmoothIsotonicCalibrator,
    choose_calibrator,
    cross_validated_log_loss,
)
from partnerscore.models.intervals import (
    RevenueIntervals,
    conformal_quantile,
    coverage,
    portfolio_interval,
)


def _miscalibrated(n, seed=0):
    """Margins whose true probability is a non-logistic (beta-shaped) function of them."""
    rng = np.random.default_rng(seed)
    m = rng.normal(0, 2, n)
    p_model = 1 / (1 + np.exp(-m))
    # true map: logit(q) = 2 ln p - 0.5 ln(1 - p) - 1 (a beta-calibration family member)
    logit_q = 2 * np.log(p_model) - 0.5 * np.log(1 - p_model) - 1
    q = 1 / (1 + np.exp(-logit_q))
    return m, (rng.random(n) < q).astype(int), q


@pytest.mark.parametrize("name", sorted(CALIBRATORS))
def test_every_map_is_monotone_and_in_range(name):
    m, y, _ = _miscalibrated(3000)
    cal = CALIBRATORS[name]().fit(m, y)
    grid = np.linspace(-8, 8, 400)
    p = cal.predict(grid)
    assert ((p > 0) & (p < 1)).all()
    assert (np.diff(p) >= -1e-12).all()


def test_beta_beats_platt_on_asymmetric_miscalibration():
    m, y, q = _miscalibrated(6000)
    m_test, _, q_test = _miscalibrated(6000, seed=1)
    beta = BetaCalibrator().fit(m, y).predict(m_test)
    platt = PlattCalibrator().fit(m, y).predict(m_test)
    assert np.mean(np.abs(beta - q_test)) < 0.6 * np.mean(np.abs(platt - q_test))


def test_smooth_isotonic_keeps_resolution_and_matches_isotonic_at_centroids():
    m, y, _ = _miscalibrated(4000)
    smooth = SmoothIsotonicCalibrator().fit(m, y)
    steps = IsotonicRegression(y_min=1e-4, y_max=1 - 1e-4, out_of_bounds="clip").fit(m, y)
    assert len(np.unique(smooth.predict(m))) > 20 * len(np.unique(steps.predict(m)))
    # at each block centroid the smoothed map equals the isotonic block value
    np.testing.assert_allclose(smooth.predict(smooth.x_), np.clip(smooth.y_, 1e-4, 1 - 1e-4))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-6, 6), min_size=10, max_size=80), st.integers(0, 10_000))
def test_smooth_isotonic_monotone_property(margins, seed):
    m = np.array(margins)
    y = (np.random.default_rng(seed).random(len(m)) < 1 / (1 + np.exp(-m))).astype(int)
    cal = SmoothIsotonicCalibrator().fit(m, y)
    grid = np.sort(np.concatenate([m, np.linspace(-7, 7, 50)]))
    assert (np.diff(cal.predict(grid)) >= -1e-12).all()


def test_choose_calibrator_picks_the_lowest_cross_validated_loss():
    m, y, _ = _miscalibrated(3000)
    names = ("sigmoid", "beta", "smooth_isotonic")
    cal, losses = choose_calibrator(m, y, names, folds=5, seed=3)
    assert set(losses) == set(names)
    assert cal.name == min(losses, key=losses.get)
    assert cal.name != "sigmoid"  # the truth is not logistic in the margin
    # slow twin of the CV loss for one candidate: explicit folds, explicit log loss
    from sklearn.model_selection import StratifiedKFold

    p = np.empty(len(y))
    for tr, va in StratifiedKFold(5, shuffle=True, random_state=3).split(m.reshape(-1, 1), y):
        p[va] = np.clip(PlattCalibrator().fit(m[tr], y[tr]).predict(m[va]), 1e-4, 1 - 1e-4)
    slow = -np.mean([np.log(pi) if yi else np.log(1 - pi) for pi, yi in zip(p, y, strict=True)])
    assert losses["sigmoid"] == pytest.approx(slow, rel=1e-9)
    assert cross_validated_log_loss(m, y, ("beta",), 5, 3)["beta"] == losses["beta"]


def test_conformal_quantile_matches_its_definition():
    rng = np.random.default_rng(0)
    for n in (1, 5, 19, 200):
        s = rng.exponential(size=n)
        for level in (0.1, 0.5, 0.8, 0.95):
            k = int(np.ceil((n + 1) * level))
            expected = sorted(s)[min(k, n) - 1]
            assert conformal_quantile(s, level) == expected


def _tweedie_like(n, rng):
    mu = np.exp(rng.normal(9, 1, n))
    # compound Poisson-gamma: zero mass plus a heavy tail, mean mu
    counts = rng.poisson(0.8, n)
    y = np.array([rng.gamma(2.0, m / 1.6, c).sum() for m, c in zip(mu, counts, strict=True)])
    return mu, y


def test_intervals_cover_their_target_on_exchangeable_data():
    rng = np.random.default_rng(1)
    mu, y = _tweedie_like(4000, rng)
    iv = RevenueIntervals(coverage=0.8).fit(y, mu)
    mu2, y2 = _tweedie_like(4000, rng)
    lo, hi = iv.predict(mu2)
    assert (lo >= 0).all() and (hi >= lo).all()
    assert 0.77 <= coverage(y2, lo, hi) <= 0.83
    assert iv.lo_ratio_.min() == 0.0  # the zero mass (45%) carries the lower tail


def test_portfolio_interval_is_the_normal_sum():
    mu = np.array([100.0, 200.0, 50.0])
    sd = np.array([30.0, 40.0, 0.0])
    total, lo, hi = portfolio_interval(mu, sd, 0.8)
    assert total == 350.0
    assert hi - total == pytest.approx(1.2815515655 * 50.0)
    assert lo == pytest.approx(350.0 - 1.2815515655 * 50.0)
    assert portfolio_interval(mu, sd * 100, 0.8)[1] == 0.0  # bounded below by zero


def test_interval_inputs_validated():
    with pytest.raises(ValueError, match="coverage"):
        RevenueIntervals(coverage=1.2).fit(np.ones(30), np.ones(30))
    with pytest.raises(ValueError, match="at least 20"):
        RevenueIntervals().fit(np.ones(5), np.ones(5))
