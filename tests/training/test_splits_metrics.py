import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.training import metrics
from partnerscore.training.splits import (
    holdout_split,
    newest_partners_mask,
    partner_folds,
    time_folds,
)


def frame():
    partners = [f"P{i:02d}" for i in range(20)]
    signed = pd.date_range("2024-01-01", periods=20, freq="7D")
    rows = []
    for p, s in zip(partners, signed, strict=True):
        for age in (30, 90):
            rows.append({"partner_id": p, "signed_at": s, "as_of": s + pd.Timedelta(days=age)})
    return pd.DataFrame(rows)


def test_holdout_is_newest_partners_never_split():
    f = frame()
    train, hold = holdout_split(f, 0.25)
    assert not (train & hold).any() and (train | hold).all()
    assert set(f.loc[hold, "partner_id"]) == {f"P{i:02d}" for i in range(15, 20)}
    assert f.loc[train, "signed_at"].max() < f.loc[hold, "signed_at"].min()
    with pytest.raises(ValueError):
        newest_partners_mask(f, 1.5)


def test_time_folds_expand_forward():
    f = frame()
    folds = time_folds(f, 3)
    assert len(folds) == 3
    sizes = [tr.sum() for tr, _ in folds]
    assert sizes == sorted(sizes)
    for tr, va in folds:
        assert f.loc[tr, "signed_at"].max() < f.loc[va, "signed_at"].min()
        assert not set(f.loc[tr, "partner_id"]) & set(f.loc[va, "partner_id"])


@settings(max_examples=60, deadline=None)
@given(
    snapshots=st.lists(st.integers(1, 4), min_size=2, max_size=40),
    n_folds=st.integers(2, 6),
    seed=st.integers(0, 2**31),
)
def test_partner_folds_put_each_partner_out_of_fold_once(snapshots, n_folds, seed):
    """Against a per-partner reading: one fold per partner, every row validated exactly once."""
    rows = [
        {"partner_id": f"P{i:03d}", "signed_at": pd.Timestamp("2024-01-01") + pd.Timedelta(days=i)}
        for i, k in enumerate(snapshots)
        for _ in range(k)
    ]
    f = pd.DataFrame(rows).sample(frac=1.0, random_state=seed % 1000).reset_index(drop=True)
    folds = partner_folds(f, n_folds, seed)
    assert len(folds) == n_folds
    validated = np.zeros(len(f), dtype=int)
    fold_of = {}
    for i, (tr, va) in enumerate(folds):
        assert not (tr & va).any() and (tr | va).all()
        validated += va
        for p in f.loc[va, "partner_id"]:
            assert fold_of.setdefault(p, i) == i  # all of a partner's rows in one fold
    assert (validated == 1).all()
    sizes = np.bincount(list(fold_of.values()), minlength=n_folds)
    assert sizes.max() - sizes.min() <= 1
    again = partner_folds(f, n_folds, seed)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again, strict=True))


def test_partner_folds_need_two_folds():
    with pytest.raises(ValueError, match=">= 2"):
        partner_folds(frame(), 1, 0)


def test_gini_hand_computed():
    actual = np.array([0.0, 0.0, 10.0, 30.0])
    assert metrics.normalized_gini(actual, actual) == pytest.approx(1.0)
    assert metrics.normalized_gini(actual, -actual) == pytest.approx(-1.0)
    # ordering by pred [3,2,1,0]: cum shares 0.75,1,1,1 -> gini = 3.75/4 - 5/8 = 0.3125
    assert metrics.gini(actual, np.array([0.0, 1.0, 2.0, 3.0])) == pytest.approx(0.3125)
    assert metrics.top_decile_capture(actual, np.array([0.0, 1.0, 2.0, 3.0])) == pytest.approx(0.75)


def test_revenue_and_engagement_metrics():
    y = np.array([0.0, 100.0, 0.0, 300.0])
    p = np.array([10.0, 90.0, 10.0, 310.0])
    m = metrics.revenue_metrics(y, p)
    assert m["mae"] == pytest.approx(10.0)
    assert m["rmse"] == pytest.approx(10.0)
    assert m["portfolio_bias"] == pytest.approx(20 / 400)
    assert m["spearman"] == pytest.approx(1.0, abs=0.2)
    e = metrics.engagement_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert e["roc_auc"] == pytest.approx(0.75)
    assert e["brier"] == pytest.approx(np.mean([0.01, 0.16, 0.4225, 0.04]))
    assert metrics.expected_calibration_error(
        np.array([1, 0]), np.array([0.5, 0.5])
    ) == pytest.approx(0.0)
    assert metrics.expected_calibration_error(
        np.array([1, 1]), np.array([0.2, 0.2])
    ) == pytest.approx(0.8)


def test_oracle_ratio_and_segments():
    f = pd.DataFrame(
        {
            "partner_id": list("abcdefgh"),
            "as_of": pd.Timestamp("2025-01-01"),
            "label_revenue": [0, 0, 5, 10, 0, 20, 0, 40.0],
            "label_engaged": [0, 0, 1, 1, 0, 1, 0, 1],
            "tier": ["gold"] * 4 + ["silver"] * 4,
        }
    )
    truth = f[["partner_id", "as_of"]].assign(
        true_expected_revenue=[1, 1, 4, 9, 1, 18, 1, 35.0],
        true_engagement_prob=[0.1, 0.2, 0.8, 0.9, 0.1, 0.8, 0.2, 0.9],
    )
    m = metrics.evaluate(f, f["label_revenue"] * 0 + 1, np.full(8, 0.5))
    ratios = metrics.oracle_ratios(m, f, truth, min_partners=1)
    assert ratios["oracle_revenue_normalized_gini"] == pytest.approx(1.0)
    assert ratios["oracle_ratio_engagement_roc_auc"] == pytest.approx(0.5)
    # 8 partners: the oracle's metrics, no ratio (the default floor is 100 partners)
    small = metrics.oracle_ratios(m, f, truth)
    assert small["oracle_partners"] == 8 and small["oracle_revenue_normalized_gini"] == 1.0
    assert not any(k.startswith("oracle_ratio_") for k in small)
    seg = metrics.segment_metrics(f, f["label_revenue"], f["label_engaged"], min_rows=2)
    assert set(seg["value"]) == {"gold", "silver"}


def test_oracle_ratio_only_where_the_oracle_beats_chance_beyond_its_noise():
    rng = np.random.default_rng(3)
    n = 400
    f = pd.DataFrame(
        {
            "partner_id": np.arange(n).astype(str),
            "as_of": pd.Timestamp("2025-01-01"),
            "label_revenue": rng.gamma(0.5, 1000.0, n) * (rng.random(n) < 0.3),
            "label_engaged": (rng.random(n) < 0.4).astype(int),
        }
    )
    # the truth ranks revenue well and engagement no better than a coin
    truth = f[["partner_id", "as_of"]].assign(
        true_expected_revenue=f["label_revenue"] + rng.gamma(0.5, 200.0, n),
        true_engagement_prob=rng.random(n),
    )
    m = metrics.evaluate(f, f["label_revenue"] + 1.0, rng.random(n))
    out = metrics.oracle_ratios(m, f, truth, rounds=50, seed=1)
    assert out["oracle_partners"] == n
    assert out["oracle_revenue_normalized_gini"] > 2 * out["oracle_revenue_normalized_gini_se"]
    assert out["oracle_ratio_revenue_normalized_gini"] == pytest.approx(
        m["revenue_normalized_gini"] / out["oracle_revenue_normalized_gini"]
    )
    # the engagement oracle sits within 2 s.e. of 0.5: no AUC ratio, nor a primary one
    assert abs(out["oracle_engagement_roc_auc"] - 0.5) < 2 * out["oracle_engagement_roc_auc_se"]
    assert "oracle_ratio_engagement_roc_auc" not in out
    assert "oracle_ratio_primary_score" not in out
    from partnerscore.training.train import oracle_line

    line = oracle_line({**m, **out})
    assert line.startswith("oracle ratio (simulated truth): revenue gini ")
    assert "engagement AUC not shown (the oracle's" in line and "of chance, 0.5)" in line
    few = metrics.oracle_ratios(m, f.iloc[:60], truth, rounds=50, seed=1)
    assert "not shown, the holdout holds 60 partners (< 100" in oracle_line({**m, **few})


def test_the_oracles_se_is_the_partner_bootstrap_se_of_each_metric():
    """_oracle_se computes the three s.e. on arrays in one pass (its own AUC from ranks, ties
    half): the same values as bootstrap_se of each metric on the same resamples, snapshots of
    a partner together and tied predictions included."""
    rng = np.random.default_rng(5)
    n = 240
    f = pd.DataFrame(
        {
            "partner_id": (np.arange(n) // 3).astype(str),  # three snapshots per partner
            "label_revenue": rng.gamma(0.5, 1000.0, n) * (rng.random(n) < 0.3),
            "label_engaged": (rng.random(n) < 0.4).astype(int),
            "true_expected_revenue": rng.gamma(0.5, 200.0, n),
            "true_engagement_prob": rng.integers(0, 5, n) / 4,  # ties
        }
    )
    got = metrics._oracle_se(f, rounds=40, seed=2)
    spearman = lambda columns, pred: metrics._spearman(  # noqa: E731
        np.asarray(columns["label_revenue"], dtype=float), pred
    )
    for key, metric, pred in (
        ("revenue_normalized_gini", metrics.revenue_gini_metric, "true_expected_revenue"),
        ("revenue_spearman", spearman, "true_expected_revenue"),
        ("engagement_roc_auc", metrics.engagement_auc_metric, "true_engagement_prob"),
    ):
        want = metrics.bootstrap_se(f, metric, f[pred].to_numpy(), rounds=40, seed=2)
        assert got[key] == pytest.approx(want, rel=1e-9), key
