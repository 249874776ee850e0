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
    TWEEDIE_EXACT_DEALS,
    RevenueIntervals,
    conditional_coverage,
    conformal_quantile,
    coverage,
    level_cv,
    portfolio_bounds,
    portfolio_interval,
    tweedie_quantiles,
    variance_bins,
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


@pytest.mark.parametrize("method", ["normalized", "mondrian"])
def test_intervals_cover_their_target_on_exchangeable_data(method):
    rng = np.random.default_rng(1)
    mu, y = _tweedie_like(4000, rng)
    iv = RevenueIntervals(coverage=0.8, method=method).fit(y, mu)
    mu2, y2 = _tweedie_like(4000, rng)
    lo, hi = iv.predict(mu2)
    assert (lo >= 0).all() and (hi >= lo).all()
    assert 0.77 <= coverage(y2, lo, hi) <= 0.83
    assert iv.lo_ratio_.min() == 0.0  # the zero mass (45%) carries the lower tail


def _zero_inflated(n, rng):
    """Like the simulator's holdout: ~83% zeros, the zero share falling as mu grows."""
    mu = np.exp(rng.normal(8, 1.5, n))
    rate = 0.12 * (mu / np.exp(8)) ** 0.5  # expected deals won in the horizon
    counts = rng.poisson(rate)
    size = mu / np.maximum(rate, 1e-12)  # mean amount so that E[y] = mu
    y = np.array([rng.gamma(1.5, s / 1.5, c).sum() for s, c in zip(size, counts, strict=True)])
    return mu, y


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_normalized_intervals_hit_nominal_marginal_coverage_where_zeros_dominate(seed):
    rng = np.random.default_rng(seed)
    mu, y = _zero_inflated(5000, rng)
    mu2, y2 = _zero_inflated(5000, rng)
    assert 0.78 < np.mean(y2 == 0) < 0.9
    iv = RevenueIntervals(coverage=0.8, power=1.3).fit(y, mu)
    lo, hi = iv.predict(mu2)
    assert (lo >= 0).all() and (hi >= lo).all()
    assert 0.77 <= coverage(y2, lo, hi) <= 0.83
    # the per-bin construction covers the zero share instead: more than nominal
    mondrian = RevenueIntervals(coverage=0.8, method="mondrian").fit(y, mu)
    assert coverage(y2, *mondrian.predict(mu2)) > 0.84
    # slow twin of the normalized interval: its definition, row by row
    scores = sorted(abs(a - m) / m**0.65 for a, m in zip(y, mu, strict=True))
    q = scores[int(np.ceil(0.8 * (len(scores) + 1))) - 1]
    for m, a, b in list(zip(mu2, lo, hi, strict=True))[:50]:
        assert a == pytest.approx(max(0.0, m - q * m**0.65), rel=1e-9, abs=1e-9)
        assert b == pytest.approx(m + q * m**0.65, rel=1e-9)


def test_conditional_coverage_report_matches_a_row_by_row_count():
    rng = np.random.default_rng(6)
    mu, y = _zero_inflated(3000, rng)
    iv = RevenueIntervals(coverage=0.8, power=1.3).fit(y[:1500], mu[:1500])
    lo, hi = iv.predict(mu[1500:])
    y2, mu2 = y[1500:], mu[1500:]
    report = conditional_coverage(y2, mu2, lo, hi, bins=4).set_index("group")
    assert list(report.index) == [
        "all",
        "mu_bin_0",
        "mu_bin_1",
        "mu_bin_2",
        "mu_bin_3",
        "label_zero",
        "label_positive",
    ]
    assert report.loc["all", "coverage"] == pytest.approx(coverage(y2, lo, hi))
    bins = report.loc[[f"mu_bin_{b}" for b in range(4)]]
    assert bins["rows"].sum() == len(y2)
    assert report.loc["label_zero", "rows"] + report.loc["label_positive", "rows"] == len(y2)
    for name, row in bins.iterrows():
        sel = [(row.mu_lo <= m <= row.mu_hi) for m in mu2]
        hits = [a <= v <= b for v, a, b, s in zip(y2, lo, hi, sel, strict=True) if s]
        assert row.coverage == pytest.approx(np.mean(hits)), name
    # not conditional: small predictions are covered by their zero more often than large ones
    assert bins["coverage"].iloc[0] > bins["coverage"].iloc[-1]
    # per onboarding age, when given (rows without an age in no age group)
    age = np.random.default_rng(8).choice([30.0, 90.0, np.nan], len(y2))
    by_age = conditional_coverage(y2, mu2, lo, hi, bins=4, age=age).set_index("group")
    assert list(by_age.index[-2:]) == ["age_30", "age_90"]
    for a in (30.0, 90.0):
        rows = zip(y2, lo, hi, age, strict=True)
        hits = [b_lo <= v <= b_hi for v, b_lo, b_hi, g in rows if g == a]
        assert by_age.loc[f"age_{int(a)}", "rows"] == len(hits)
        assert by_age.loc[f"age_{int(a)}", "coverage"] == pytest.approx(np.mean(hits))


def test_predictive_median_is_the_binned_median_ratio_and_wins_on_absolute_error():
    rng = np.random.default_rng(7)
    mu, y = _zero_inflated(4000, rng)
    iv = RevenueIntervals(coverage=0.8, bins=5).fit(y, mu)
    mu2, y2 = _zero_inflated(4000, rng)
    med = iv.median(mu2)
    # slow twin: the lower sample median of the ratios of the prediction's bin
    for m in (np.quantile(mu, 0.1), np.quantile(mu, 0.99)):
        b = sum(m >= e for e in iv.edges_)
        ratios = sorted(
            a / v for a, v in zip(y, mu, strict=True) if sum(v >= e for e in iv.edges_) == b
        )
        assert iv.median(np.array([m]))[0] == pytest.approx(
            m * ratios[int(np.ceil(0.5 * len(ratios))) - 1], rel=1e-9
        )
    assert (med >= 0).all() and (med == 0).mean() > 0.5  # most partners realise nothing
    assert np.mean(np.abs(y2 - med)) < np.mean(np.abs(y2 - mu2))
    # the mean, not the median, adds up to the portfolio
    assert abs(mu2.sum() / y2.sum() - 1) < abs(med.sum() / y2.sum() - 1)


def test_portfolio_interval_lognormal_variant_is_moment_matched():
    mu = np.array([100.0, 200.0, 50.0])
    sd = np.array([30.0, 40.0, 0.0])
    total, lo, hi = portfolio_interval(mu, sd, 0.8, power=None)
    assert total == 350.0
    # slow twin: the lognormal with mean 350 and variance 2500, its 10% and 90% quantiles
    from scipy.stats import lognorm

    s = np.sqrt(np.log(1 + 2500 / 350**2))
    dist = lognorm(s=s, scale=350 * np.exp(-(s**2) / 2))
    assert dist.mean() == pytest.approx(350) and dist.var() == pytest.approx(2500)
    assert (lo, hi) == pytest.approx((dist.ppf(0.1), dist.ppf(0.9)))


def _tweedie_quantile_slow(mean, var, power, q):
    """One quantile of a compound Poisson-gamma sum: its CDF term by term, solved by brentq."""
    from scipy.optimize import brentq
    from scipy.stats import gamma, poisson

    lam = mean**2 / ((2 - power) * var)
    alpha, theta = (2 - power) / (power - 1), (power - 1) * var / mean
    p0 = float(np.exp(-lam))
    if p0 >= q:
        return 0.0
    terms = np.arange(1, int(lam + 40 * np.sqrt(lam) + 60))
    weights = poisson.pmf(terms, lam)

    def cdf(x):  # every deal count's term, added up
        return p0 + float(np.sum(weights * gamma.cdf(x, terms * alpha, scale=theta)))

    upper = mean + 50 * np.sqrt(var)
    return brentq(lambda x: cdf(x) - q, 0.0, upper, xtol=mean * 1e-13, rtol=1e-13)


@settings(max_examples=40, deadline=None)
@given(
    mean=st.sampled_from([1e-140, 1e-3, 1.0, 350.0, 7.3e5, 1e140]),
    deals=st.floats(0.01, 150.0),
    power=st.sampled_from([1.05, 1.3, 1.5, 1.8, 1.95]),
    q=st.sampled_from([0.025, 0.1, 0.5, 0.9, 0.975]),
)
def test_tweedie_quantiles_equal_a_term_by_term_twin(mean, deals, power, q):
    """Any scale (extreme means included), from a fraction of a deal to 150 deals expected."""
    var = mean**2 / ((2 - power) * deals)  # so that lambda = deals
    got = tweedie_quantiles(np.array([mean]), np.array([var]), power, np.array([q]))[0, 0]
    want = _tweedie_quantile_slow(mean, var, power, q)
    assert got == pytest.approx(want, rel=1e-6, abs=mean * 1e-9)


def test_tweedie_quantiles_beyond_the_exact_range_are_its_moment_matched_gamma():
    rng = np.random.default_rng(4)
    for power in (1.1, 1.5, 1.8):
        mean = np.array([1e3, 1e3])
        var = mean**2 / ((2 - power) * np.array([TWEEDIE_EXACT_DEALS * 1.01, 5e4]))
        got = tweedie_quantiles(mean, var, power, np.array([0.1, 0.5, 0.9]))
        exact = [_tweedie_quantile_slow(1e3, var[0], power, q) for q in (0.1, 0.5, 0.9)]
        assert got[0] == pytest.approx(exact, rel=1e-3)
        # Monte Carlo of the compound sum itself at the second cell (50,000 deals expected)
        n = rng.poisson(5e4, 4000)
        alpha, theta = (2 - power) / (power - 1), (power - 1) * var[1] / mean[1]
        draws = rng.gamma(np.maximum(n * alpha, 1e-300), theta)
        assert got[1] == pytest.approx(np.quantile(draws, [0.1, 0.5, 0.9]), rel=2e-3)


def test_portfolio_interval_has_the_mass_at_zero_of_a_few_partners():
    mu = np.array([100.0, 200.0, 50.0])
    sd = np.array([30.0, 40.0, 0.0])
    total, lo, hi = portfolio_interval(mu, sd, 0.8)
    assert total == 350.0
    # 350^2 / (0.2 * 2500) = 245 deals expected: beyond the exact range, within 0.1% of it
    assert (lo, hi) == pytest.approx(
        (
            _tweedie_quantile_slow(350.0, 2500.0, 1.8, 0.1),
            _tweedie_quantile_slow(350.0, 2500.0, 1.8, 0.9),
        ),
        rel=1e-3,
    )
    _, lo3, hi3 = portfolio_interval(mu, sd * 2, 0.8)  # 61 deals: exact
    var3 = float(np.sum((sd * 2) ** 2))
    assert (lo3, hi3) == pytest.approx(
        (
            _tweedie_quantile_slow(350.0, var3, 1.8, 0.1),
            _tweedie_quantile_slow(350.0, var3, 1.8, 0.9),
        ),
        rel=1e-6,
    )
    # three partners with 5x spreads: most often they earn nothing at all -> lower end 0
    t, lo2, hi2 = portfolio_interval(mu, sd * 20 + 250, 0.8)
    lam = t**2 / (0.2 * np.sum((sd * 20 + 250) ** 2))
    assert np.exp(-lam) > 0.1 and lo2 == 0.0 < t < hi2
    assert portfolio_interval(np.zeros(3), np.zeros(3)) == (0.0, 0.0, 0.0)
    assert portfolio_interval(mu, np.zeros(3)) == (350.0, 350.0, 350.0)
    with pytest.raises(ValueError, match="power"):
        tweedie_quantiles(np.ones(1), np.ones(1), 2.0, np.array([0.5]))


@pytest.mark.parametrize("power", [1.8, None])
def test_portfolio_bounds_where_the_relative_variance_leaves_the_floats(power):
    """V / M^2 overflowed to inf (a mean of 1e-300 with an s.d. of 1e12: RuntimeWarnings on
    the forecast's stderr; the lognormal's upper bound NaN) or rounded to 0 (a mean of 1e6
    with an s.d. of 1e-160: 1 / 0 expected deals, bounds NaN, "80% interval nan - nan").
    Their limits: no deal with probability 1 - 1e-300 -> (0, 0); a spread below 1e-150 of
    the mean -> (M, M); without a warning."""
    import warnings

    total = np.array([1e-300, 5e-324, 1e-150, 1e6, 1e300, 1e12, 1.0])
    var = np.array([1e24, 1.0, 1e24, 1e-320, 1e-10, 5e-324, 1e-300])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lo, hi = portfolio_bounds(total, var, 0.8, power)
    assert np.isfinite(lo).all() and np.isfinite(hi).all(), (lo, hi)
    none, flat = slice(0, 3), slice(3, None)
    assert (lo[none] >= 0).all() and (lo[none] <= hi[none]).all()
    assert (hi[none] <= total[none] * 1e-100).all()  # the lognormal's: e^-311 M at most
    if power is not None:  # the compound sum is exactly 0 with probability 1 (in floats)
        assert (lo[none] == 0).all() and (hi[none] == 0).all()
    assert lo[flat] == pytest.approx(total[flat], rel=1e-12)
    assert hi[flat] == pytest.approx(total[flat], rel=1e-12)


def test_interval_inputs_validated():
    with pytest.raises(ValueError, match="coverage"):
        RevenueIntervals(coverage=1.2).fit(np.ones(30), np.ones(30))
    with pytest.raises(ValueError, match="at least 20"):
        RevenueIntervals().fit(np.ones(5), np.ones(5))
    with pytest.raises(ValueError, match="method"):
        RevenueIntervals(method="random").fit(np.ones(30), np.ones(30))
    with pytest.raises(ValueError, match="power"):
        RevenueIntervals(power=2.5).fit(np.ones(30), np.ones(30))


def _bin_cv_twin(variance, y, mu):
    """The bin's coefficient of variation, written plainly for each variance model."""
    if variance == "bins":
        return np.sqrt(np.mean((y / mu - 1) ** 2))  # the mean of squared relative errors
    return np.sqrt(np.sum((y - mu) ** 2) / np.sum(mu**2))  # the ratio of squared errors


@pytest.mark.parametrize("variance", ["bins", "ratio_level"])
def test_portfolio_sd_is_the_binned_coefficient_of_variation(variance):
    rng = np.random.default_rng(2)
    mu, y = _tweedie_like(3000, rng)
    # no groups, or (the default) no level error whatever the groups
    groups = np.arange(3000) % 7 if variance == "bins" else None
    iv = RevenueIntervals(coverage=0.8, bins=4, variance=variance).fit(y, mu, groups=groups)
    assert iv.level == 0.0
    # slow twin: bin by the stored variance edges (the median's 4 bins for the default, the
    # 10 VARIANCE_BINS for ratio_level), cv from that bin's rows
    edges = iv.var_edges_
    assert len(edges) == (3 if variance == "bins" else 9)
    for m in (np.quantile(mu, 0.1), np.quantile(mu, 0.5), np.quantile(mu, 0.95)):
        b = sum(m >= e for e in edges)
        in_bin = np.array([sum(v >= e for e in edges) == b for v in mu])
        cv = _bin_cv_twin(variance, y[in_bin], mu[in_bin])
        assert iv.sd(np.array([m]))[0] == pytest.approx(cv * m, rel=1e-9)
    if variance == "ratio_level":  # each bin's predicted variance adds up to its squared error
        assert np.sum(iv.sd(mu) ** 2) == pytest.approx(np.sum((y - mu) ** 2), rel=1e-9)
    # sums of many exchangeable partners: covered about 80% of the time
    hits = []
    for _ in range(300):
        mu2, y2 = _tweedie_like(150, rng)
        _, lo, hi = iv.portfolio(mu2)
        hits.append(lo <= y2.sum() <= hi)
    assert 0.7 <= np.mean(hits) <= 0.9
    with pytest.raises(ValueError, match="variance"):
        RevenueIntervals(variance="lognormal").fit(y, mu)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    bins=st.integers(1, 12),
    scale=st.sampled_from([1e-6, 1.0, 1e4, 1e12]),
    ties=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_variance_bins_equal_a_per_bin_twin(n, bins, scale, ties, seed):
    rng = np.random.default_rng(seed)
    mu = scale * (np.round(rng.exponential(1, n)) if ties else rng.exponential(1, n))
    y = scale * rng.exponential(3, n) * (rng.random(n) < 0.3)
    edges, cv = variance_bins(y, mu, bins)
    m = np.maximum(mu, 1e-9)
    assert list(edges) == sorted(set(np.quantile(m, np.linspace(0, 1, bins + 1)[1:-1])))
    pooled = np.sqrt(np.sum((y - m) ** 2) / np.sum(m**2))
    for b in range(len(edges) + 1):
        members = [i for i in range(n) if sum(m[i] >= e for e in edges) == b]
        if not members:
            assert cv[b] == pytest.approx(pooled)
            continue
        num = sum((y[i] - m[i]) ** 2 for i in members)
        den = sum(m[i] ** 2 for i in members)
        assert cv[b] == pytest.approx(np.sqrt(num / den), rel=1e-9)


def _cohorts(n_groups, size, tau, rng):
    """Cohorts whose partners share one level shock (relative sd ``tau``) on top of their own."""
    mu, y, g = [], [], []
    for k in range(n_groups):
        m, own = _tweedie_like(size, rng)
        shock = max(0.0, 1.0 + tau * rng.standard_normal())
        mu.append(m), y.append(own * shock), g.append(np.full(size, f"c{k}"))
    return np.concatenate(mu), np.concatenate(y), np.concatenate(g)


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 80), min_size=1, max_size=12),
    seed=st.integers(0, 2**16),
    big=st.booleans(),
)
def test_level_cv_equals_a_per_group_twin(sizes, seed, big):
    rng = np.random.default_rng(seed)
    groups = np.concatenate([np.full(s, f"g{k}") for k, s in enumerate(sizes)])
    mu = rng.exponential(1e9 if big else 100.0, len(groups)) * (rng.random(len(groups)) < 0.9)
    y = rng.exponential(2.0, len(groups)) * mu * (rng.random(len(groups)) < 0.5)
    sd = mu * rng.uniform(0.5, 3.0, len(groups))
    excess = []
    for k in range(len(sizes)):
        at = groups == f"g{k}"
        total = mu[at].sum()
        if at.sum() < 30 or total <= 0:
            continue
        excess.append((y[at].sum() / total - 1) ** 2 - (sd[at] ** 2).sum() / total**2)
    want = np.sqrt(max(0.0, np.mean(excess))) if excess else 0.0
    assert level_cv(y, mu, sd, groups) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_level_error_is_recovered_and_restores_the_coverage_of_large_sums():
    rng = np.random.default_rng(5)
    mu, y, g = _cohorts(120, 200, 0.25, rng)
    shared = RevenueIntervals(coverage=0.8, variance="ratio_level").fit(y, mu, groups=g)
    assert 0.18 <= shared.level <= 0.32
    independent = RevenueIntervals(coverage=0.8, variance="ratio_level").fit(y, mu)
    hits = {"level": [], "independent": []}
    for _ in range(300):  # a new cohort of 200: its shock moves every partner
        m, own = _tweedie_like(200, rng)
        total = own.sum() * max(0.0, 1.0 + 0.25 * rng.standard_normal())
        for name, iv in (("level", shared), ("independent", independent)):
            _, lo, hi = iv.portfolio(m)
            hits[name].append(lo <= total <= hi)
    assert 0.72 <= np.mean(hits["level"]) <= 0.88
    assert np.mean(hits["independent"]) < 0.65
    # without a shared shock the estimate is about 0
    mu0, y0, g0 = _cohorts(120, 200, 0.0, rng)
    fitted = RevenueIntervals(coverage=0.8, variance="ratio_level").fit(y0, mu0, groups=g0)
    assert fitted.level < 0.06


def _aged(n, rng):
    """Zero-inflated revenue whose spread around mu grows with the onboarding age."""
    age = rng.choice([30.0, 60.0, 90.0, 180.0], n)
    mu, _ = _zero_inflated(n, rng)
    spread = {30.0: 0.5, 60.0: 1.0, 90.0: 1.5, 180.0: 2.5}
    noise = np.array([spread[a] for a in age]) * rng.standard_normal(n) * mu**0.65
    return age, mu, np.maximum(mu + noise, 0.0)


def test_per_age_quantiles_cover_each_age_where_the_pooled_one_does_not():
    rng = np.random.default_rng(11)
    age, mu, y = _aged(20000, rng)
    age2, mu2, y2 = _aged(20000, rng)
    pooled = RevenueIntervals(coverage=0.8, power=1.3).fit(y, mu)
    by_age = RevenueIntervals(coverage=0.8, power=1.3).fit(y, mu, age=age)
    for a in (30.0, 180.0):
        at = age2 == a
        lo, hi = pooled.predict(mu2[at])
        assert abs(coverage(y2[at], lo, hi) - 0.8) > 0.05  # the pooled q misses per age
        lo, hi = by_age.predict(mu2[at], np.full(at.sum(), a))
        assert 0.78 <= coverage(y2[at], lo, hi) <= 0.82
    # whatever the age mix: a batch of day-30 rows alone is covered nominally too
    young = age2 == 30.0
    assert 0.78 <= coverage(y2[young], *by_age.predict(mu2[young], age2[young])) <= 0.82
    assert by_age.to_dict()["q_by_age"].keys() == {"30", "60", "90", "180"}


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(
        st.one_of(st.integers(0, 160), st.sampled_from([99, 100, 101])), min_size=1, max_size=4
    ),
    asked=st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))), min_size=1, max_size=30),
    seed=st.integers(0, 2**16),
)
def test_per_age_quantile_twin(sizes, asked, seed):
    """Slow twin: each age's quantile from its own scores, row by row; the age lookup by hand."""
    from partnerscore.models.intervals import MIN_AGE_ROWS

    rng = np.random.default_rng(seed)
    ages = [30.0 * (i + 1) for i in range(len(sizes))]
    age = np.repeat(ages, sizes)
    extra = max(0, 20 - len(age))  # the fit needs 20 rows: some without an age
    age = np.concatenate([age, np.full(extra, np.nan)])
    mu = np.exp(rng.normal(8, 1, len(age)))
    y = np.where(rng.random(len(age)) < 0.7, 0.0, mu * rng.gamma(1.0, 2.0, len(age)))
    iv = RevenueIntervals(coverage=0.8, power=1.4).fit(y, mu, age=age)
    scores = list(np.abs(y - mu) / mu**0.7)  # the score itself is the pooled tests' business
    pooled = conformal_quantile(np.array(scores), 0.8)
    assert iv.q_ == pooled
    own = {}
    for a in ages:
        mine = sorted(s for s, b in zip(scores, age, strict=True) if b == a)
        if len(mine) >= MIN_AGE_ROWS:
            k = int(np.ceil(0.8 * (len(mine) + 1))) - 1
            own[a] = mine[min(k, len(mine) - 1)]
        elif mine:
            own[a] = pooled
    asked = asked + [a + d for a in ages for d in (-0.5, 0.0, 0.5)]  # at and beside each age
    got = iv.quantile(len(asked), np.array(asked))
    for value, q in zip(asked, got, strict=True):
        reached = [a for a in sorted(own) if a <= value]
        if np.isnan(value) or not own:
            want = pooled
        elif reached:
            want = own[reached[-1]]
        else:
            want = own[min(own)]
        assert q == want
    # a model pickled before the per-age quantiles existed: the pooled one for every row
    del iv.age_classes_, iv.q_age_
    assert (iv.quantile(len(asked), np.array(asked)) == pooled).all()


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    n=st.integers(20, 120),
    bins=st.integers(1, 8),
    zeros=st.floats(0, 1),
    seed=st.integers(0, 2**16),
    asked=st.lists(
        st.one_of(
            st.sampled_from([0.0, -0.0, 1e-300, 1e-9, 1e300, -5.0, float("nan")]),
            st.floats(0, 1e5),
        ),
        max_size=20,
    ),
)
def test_bin_median_and_sd_equal_a_per_row_reading_of_the_training_rows(
    n, bins, zeros, seed, asked
):
    """``median`` / ``sd`` of each asked prediction: the training rows of its bin, read by
    hand (median: the lower middle ratio; sd: root mean squared ratio error; an empty bin
    reads every row), for asked values on the edges, 0, 1e-300, 1e300, negative and NaN."""
    rng = np.random.default_rng(seed)
    mu = np.round(np.exp(rng.normal(5, 2, n)), int(rng.integers(0, 3)))  # ties when rounded
    mu = np.maximum(mu, 1e-9)
    y = np.where(rng.random(n) < zeros, 0.0, mu * rng.gamma(1.0, 1.0, n))
    iv = RevenueIntervals(coverage=0.8, bins=bins, method="mondrian", variance="bins").fit(y, mu)
    # the bins are the fitted model's (quantiles of mu, to rounding of the probabilities)
    edges = iv.edges_.tolist()
    assert edges == pytest.approx(
        sorted(set(np.quantile(mu, [i / bins for i in range(1, bins)]).tolist())), rel=1e-12
    )
    asked = asked + edges  # exactly on every edge

    def rows_of(value):  # the training rows sharing the asked value's bin
        b = sum(1 for e in edges if e <= max(value, 1e-9))
        mine = [(yi, mi) for yi, mi in zip(y, mu, strict=True)
                if sum(1 for e in edges if e <= mi) == b]  # fmt: skip
        return mine or list(zip(y, mu, strict=True))

    got_median, got_sd = iv.median(np.array(asked)), iv.sd(np.array(asked))
    for value, median, sd in zip(asked, got_median, got_sd, strict=True):
        if np.isnan(value):
            assert np.isnan(median) and np.isnan(sd)
            continue
        ratios = sorted(yi / mi for yi, mi in rows_of(value))
        want_median = max(value, 0.0) * ratios[(len(ratios) + 1) // 2 - 1]
        want_sd = max(value, 0.0) * (sum((r - 1) ** 2 for r in ratios) / len(ratios)) ** 0.5
        assert median == pytest.approx(want_median, rel=1e-12, abs=1e-300)
        assert sd == pytest.approx(want_sd, rel=1e-9, abs=1e-300)
