"""Per-segment holdout metrics: partners, the revenue bias, its partner-bootstrap s.e. and the
bias vs truth, each against a plain per-partner reading; and the limit summary."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.training import metrics


def holdout(seed: int, partners: int, extreme: float) -> tuple[pd.DataFrame, np.ndarray]:
    """Snapshots at one to three ages per partner; zero-inflated heavy-tailed revenue."""
    rng = np.random.default_rng(seed)
    ages = rng.integers(1, 4, partners)
    pid = np.repeat([f"P{i:03d}" for i in range(partners)], ages)
    n = len(pid)
    tier = np.repeat(rng.choice(["gold", "silver", "registered"], partners), ages)
    region = np.repeat(rng.choice(["NA", "EMEA"], partners), ages)
    y = rng.lognormal(8, 2, n) * (rng.random(n) < 0.4)
    y[rng.integers(0, n)] *= extreme  # one extreme value
    f = pd.DataFrame(
        {
            "partner_id": pid,
            "as_of": pd.Timestamp("2025-01-01")
            + pd.to_timedelta(np.concatenate([np.arange(a) * 30 for a in ages]), "D"),
            "label_revenue": y,
            "label_engaged": (rng.random(n) < 0.5).astype(int),
            "tier": tier,
            "region": region,
        }
    )
    pred = y.mean() * rng.lognormal(0, 1, n)
    return f, pred


def reference_bias_se(part: pd.DataFrame, pred: np.ndarray, rounds: int, seed: int) -> float:
    """Slow twin: per-partner sums, the same partner draws, the ratio of resampled sums."""
    codes, _ = pd.factorize(part["partner_id"])
    y = np.bincount(codes, weights=part["label_revenue"].to_numpy(float))
    p = np.bincount(codes, weights=pred)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        pick = rng.integers(0, len(y), len(y))
        if y[pick].sum() > 0:
            values.append(p[pick].sum() / y[pick].sum() - 1)
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    partners=st.integers(20, 80),
    extreme=st.sampled_from([1.0, 1e3, 1e9]),
)
def test_segment_bias_se_and_truth_match_a_per_partner_reading(seed, partners, extreme):
    f, pred = holdout(seed, partners, extreme)
    truth = f[["partner_id", "as_of"]].assign(
        true_expected_revenue=np.random.default_rng(seed + 1).lognormal(8, 1, len(f)),
        true_engagement_prob=0.5,
    )
    seg = metrics.segment_metrics(
        f, pred, np.full(len(f), 0.5), min_rows=1, rounds=30, seed=seed, truth=truth
    )
    for row in seg.itertuples():
        sel = (f[row.segment] == row.value).to_numpy()
        part = f[sel]
        assert row.rows == sel.sum()
        assert row.partners == part["partner_id"].nunique()
        total = part["label_revenue"].sum()
        if total > 0:
            assert row.revenue_portfolio_bias == pytest.approx(pred[sel].sum() / total - 1)
        se = reference_bias_se(part, pred[sel], 30, seed)
        if np.isfinite(se):
            assert row.revenue_portfolio_bias_se == pytest.approx(se, rel=1e-9, abs=1e-12)
        true_total = truth.loc[sel, "true_expected_revenue"].sum()
        assert row.revenue_portfolio_bias_vs_truth == pytest.approx(
            pred[sel].sum() / true_total - 1
        )


def test_segment_table_without_rounds_or_truth_keeps_its_columns():
    f, pred = holdout(3, 40, 1.0)
    seg = metrics.segment_metrics(f, pred, np.full(len(f), 0.5), min_rows=1)
    assert seg["revenue_portfolio_bias_se"].isna().all()
    assert "revenue_portfolio_bias_vs_truth" not in seg
    assert {"partners", "revenue_portfolio_bias"} <= set(seg.columns)


def test_bias_summary_counts_only_large_segments_beyond_limit_and_noise():
    seg = pd.DataFrame(
        {
            "segment": ["tier"] * 4 + ["region"],
            "value": ["a", "b", "c", "d", "NA"],
            "partners": [500, 500, 500, 100, 900],
            "revenue_portfolio_bias": [-0.30, 0.12, 0.04, 0.90, -0.20],
            "revenue_portfolio_bias_se": [0.05, 0.05, np.nan, 0.01, 0.06],
        }
    )
    out = metrics.segment_bias_summary(seg, min_partners=200, max_bias=0.1, z=2.0)
    # d (100 partners) is not checked; a: 0.30 - 0.10 > 0.1 beyond; b: 0.12 - 0.10 within;
    # c: within; NA: 0.20 - 0.12 = 0.08 within
    assert out["revenue_segments_checked"] == 4
    assert out["revenue_segment_bias_max_abs"] == pytest.approx(0.30)
    assert out["revenue_segments_beyond_bias_limit"] == 1
    literal = metrics.segment_bias_summary(seg, min_partners=200, max_bias=0.1, z=0.0)
    assert literal["revenue_segments_beyond_bias_limit"] == 3  # a, b, NA
    assert "revenue_segment_bias_vs_truth_max_abs" not in out
    none = metrics.segment_bias_summary(seg, min_partners=1000, max_bias=0.1, z=2.0)
    assert none["revenue_segments_checked"] == 0 and np.isnan(none["revenue_segment_bias_max_abs"])
