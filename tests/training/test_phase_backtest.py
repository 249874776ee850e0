"""The monitor's phase backtest against a row-by-row reading, extreme values included."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.models.phasing import phase_bounds
from partnerscore.training.backtest import PHASE_BACKTEST_COLUMNS, phase_backtest

amount = st.one_of(st.just(0.0), st.floats(1e-6, 1e12, allow_nan=False))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 6), amount, st.lists(amount, min_size=3, max_size=3)),
        min_size=1,
        max_size=30,
    ),
    seed=st.integers(0, 2**16),
)
def test_phase_backtest_equals_a_row_by_row_reading(rows, seed):
    rng = np.random.default_rng(seed)
    bounds = phase_bounds(90, 30)
    shares = rng.dirichlet(np.ones(3), len(rows))
    frame = pd.DataFrame(
        {
            "partner_id": [f"P{p}" for p, _, _ in rows],
            "pred_revenue": [pred for _, pred, _ in rows],
            **{f"label_revenue_phase_{k + 1}": [y[k] for _, _, y in rows] for k in range(3)},
        }
    )
    table = phase_backtest(frame, shares, bounds, rounds=20, seed=seed)
    assert list(table.columns) == list(PHASE_BACKTEST_COLUMNS)
    exp = [sum(r[1] * shares[i][k] for i, r in enumerate(rows)) for k in range(3)]
    real = [sum(r[2][k] for r in rows) for k in range(3)]
    if sum(r[1] for r in rows) <= 0 or sum(real) <= 0:
        assert table.empty
        return
    assert table["phase"].tolist() == [1, 2, 3] and (table["rows"] == len(rows)).all()
    assert table["days_from"].tolist() == [0, 30, 60] and table["days_to"].tolist() == [30, 60, 90]
    for k in range(3):
        rec = table.iloc[k]
        assert rec["expected_revenue"] == pytest.approx(exp[k], rel=1e-9, abs=1e-300)
        assert rec["realised_revenue"] == pytest.approx(real[k], rel=1e-9)
        assert rec["expected_share"] == pytest.approx(exp[k] / sum(exp), rel=1e-9, abs=1e-12)
        assert rec["realised_share"] == pytest.approx(real[k] / sum(real), rel=1e-9, abs=1e-12)
        gap = real[k] / sum(real) - exp[k] / sum(exp)
        assert rec["share_gap"] == pytest.approx(gap, rel=1e-9, abs=1e-12)
        assert not rec["share_gap_se"] < 0  # NaN when a resample has no revenue at all
    # the same seed, the same standard errors; none without resamples
    again = phase_backtest(frame, shares, bounds, rounds=20, seed=seed)
    pd.testing.assert_frame_equal(table, again)
    assert phase_backtest(frame, shares, bounds, rounds=0)["share_gap_se"].isna().all()


def test_phase_backtest_standard_error_shrinks_with_partners():
    """Bootstrap by partner: a partner's overlapping batches move together."""
    rng = np.random.default_rng(3)
    bounds = phase_bounds(180, 30)

    def program(n):
        y = rng.gamma(0.3, 1000, (n, 6)) * (rng.random((n, 1)) < 0.3)
        frame = pd.DataFrame(
            {
                "partner_id": [f"P{i % (n // 2)}" for i in range(n)],  # two rows per partner
                "pred_revenue": y.sum(1) * rng.uniform(0.5, 1.5, n) + 1.0,
                **{f"label_revenue_phase_{k + 1}": y[:, k] for k in range(6)},
            }
        )
        return phase_backtest(frame, np.full((n, 6), 1 / 6), bounds, rounds=200)

    small, large = program(200), program(20_000)
    assert (large["share_gap_se"] < small["share_gap_se"] / 4).all()
    # revenue arrives evenly here: the gaps are noise, within a few standard errors
    assert (large["share_gap"].abs() < 4 * large["share_gap_se"] + 1e-9).all()


def test_phase_check_counts_a_gap_only_beyond_its_noise():
    from partnerscore.features.config import MonitorConfig
    from partnerscore.serving.monitor import phase_checks

    config = MonitorConfig()
    bounds = phase_bounds(90, 30)

    def table(gaps, ses):
        return pd.DataFrame(
            {
                "phase": [1, 2, 3],
                "days_from": [a for a, _ in bounds],
                "days_to": [b for _, b in bounds],
                "rows": 500,
                "expected_share": 1 / 3,
                "realised_share": [1 / 3 + g for g in gaps],
                "share_gap": gaps,
                "share_gap_se": ses,
                "expected_revenue": 1.0,
                "realised_revenue": 1.0,
            }
        )

    (empty,) = phase_checks(pd.DataFrame(columns=list(PHASE_BACKTEST_COLUMNS)), config)
    assert empty.status == "skip" and empty.value is None
    (noise,) = phase_checks(table([0.10, -0.05, -0.05], [0.06, 0.03, 0.03]), config)
    assert noise.status == "ok" and noise.value == 0.0  # 0.10 < 2 x 0.06
    (warn,) = phase_checks(table([0.02, 0.12, -0.14], [0.01, 0.02, 0.04]), config)
    assert warn.status == "warn" and warn.value == pytest.approx(0.08)  # phase 2: 0.12 - 0.04
    assert warn.detail.startswith("days 31-60:")
    (alarm,) = phase_checks(table([0.25, -0.2, -0.05], [0.02, 0.02, 0.02]), config)
    assert alarm.status == "alarm" and alarm.value == pytest.approx(0.21)
    (nan,) = phase_checks(table([np.nan] * 3, [np.nan] * 3), config)
    assert nan.status == "skip"
