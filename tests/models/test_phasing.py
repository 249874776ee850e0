import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.models.phasing import (
    MIN_REVENUE_ROWS,
    RevenuePhasing,
    calendar_weights,
    phase_bounds,
)


def _labels(seed: int, n: int = 600, k: int = 6):
    rng = np.random.default_rng(seed)
    age = rng.choice([30.0, 60.0, 90.0, 180.0], n, p=[0.4, 0.3, 0.25, 0.05])
    phases = rng.lognormal(8, 2, (n, k)) * (rng.random((n, k)) < 0.3)
    phases[:, -1] *= np.where(age == 30, 3.0, 1.0)  # young partners ramp up: a later phase
    return age, phases


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 800))
def test_shares_equal_a_per_age_groupby_twin(seed, n):
    age, phases = _labels(seed, n)
    revenue = phases.sum(axis=1)
    fitted = RevenuePhasing.fit(revenue, phases, age, 30, 180)
    if revenue.sum() == 0:
        assert fitted is None
        return
    frame = pd.DataFrame(phases).assign(age=age, revenue=revenue)
    np.testing.assert_allclose(fitted.pooled, phases.sum(axis=0) / revenue.sum())
    assert np.isclose(sum(fitted.pooled), 1.0)
    want_ages = [
        a for a, part in frame.groupby("age") if (part["revenue"] > 0).sum() >= MIN_REVENUE_ROWS
    ]
    assert fitted.ages == want_ages
    for a, shares in zip(fitted.ages, fitted.by_age, strict=True):
        part = frame[frame["age"] == a]
        np.testing.assert_allclose(shares, part[list(range(6))].sum() / part["revenue"].sum())
    # each row: the shares of the oldest fitted age it has reached (youngest below them,
    # pooled without an age)
    probe = np.array([0.0, 29.0, 30.0, 45.0, 60.0, 100.0, 180.0, 5000.0, np.nan])
    got = fitted.shares(probe)
    for row, a in zip(got, probe, strict=True):
        reached = [x for x in fitted.ages if x <= a]
        if np.isnan(a) or not fitted.ages:
            want = fitted.pooled
        else:
            want = fitted.by_age[fitted.ages.index(reached[-1] if reached else fitted.ages[0])]
        np.testing.assert_allclose(row, want)


def test_young_partners_get_their_own_back_loaded_shares():
    age, phases = _labels(0, 20_000)
    fitted = RevenuePhasing.fit(phases.sum(axis=1), phases, age, 30, 180)
    young, old = fitted.shares(np.array([30.0, 90.0]))
    assert young[-1] > 0.3 and old[-1] < 0.25
    assert fitted.to_dict()["by_age"]["30"] == pytest.approx(young.tolist())


def test_fit_refuses_phases_that_do_not_cut_the_horizon():
    age, phases = _labels(1)
    with pytest.raises(ValueError, match="6 phases do not cut a 180-day horizon into 45-day"):
        RevenuePhasing.fit(phases.sum(axis=1), phases, age, 45, 180)
    assert RevenuePhasing.fit(np.zeros(5), np.zeros((5, 6)), None, 30, 180) is None


@settings(max_examples=40, deadline=None)
@given(
    starts=st.lists(st.integers(-40_000, 2_900_000), min_size=1, max_size=8),
    horizon=st.integers(1, 400),
    phase_days=st.integers(1, 120),
    freq=st.sampled_from(["D", "W-SUN", "M", "Q"]),
    scale=st.sampled_from([0.0, 1e-300, 1.0, 1e6, 1e300]),
)
def test_calendar_weights_spread_each_phase_evenly_over_its_days(
    starts, horizon, phase_days, freq, scale
):
    """Twin: every day of the horizon holds its phase's amount / the phase's length."""
    starts = [s % 2_900_000 for s in starts]  # days after 1970 up to ~9900
    as_of = pd.Series(pd.to_datetime(starts, unit="D"))
    bounds = phase_bounds(horizon, phase_days)
    rng = np.random.default_rng(len(starts) + horizon)
    amounts = rng.random((len(starts), len(bounds))) * scale
    got = calendar_weights(as_of, amounts, horizon, phase_days, freq)
    want: dict = {}
    for row, start in enumerate(as_of):
        for k, (a, b) in enumerate(bounds):
            for d in range(a, b):
                period = pd.Period(start + pd.Timedelta(days=d), freq=freq).start_time
                key = (row, period)
                want[key] = want.get(key, 0.0) + amounts[row, k] / (b - a)
    assert len(got) == len(want)
    for rec in got.itertuples():
        assert rec.amount == pytest.approx(want[(rec.row, pd.Timestamp(rec.period_start))])
    totals = got.groupby("row")["amount"].sum().to_numpy()
    np.testing.assert_allclose(totals, amounts.sum(axis=1), rtol=1e-9)
    shares = got.groupby("row")["share"].sum().to_numpy()
    np.testing.assert_allclose(shares, np.where(amounts.sum(axis=1) > 0, 1.0, 0.0), rtol=1e-9)
