import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from partnerscore.models.heads import EngagementClassifier
from partnerscore.training import tune
from partnerscore.training.metrics import (
    bootstrap_se,
    engagement_auc_metric,
    paired_bootstrap,
    partner_resamples,
    rank_auc,
    revenue_bias_metric,
    revenue_gini_metric,
    revenue_mae_metric,
    revenue_rmse_metric,
)
from partnerscore.training.splits import time_folds


def _frame(seed=0, partners=60):
    rng = np.random.default_rng(seed)
    ids = np.repeat([f"P{i:03d}" for i in range(partners)], rng.integers(1, 5, partners))
    return pd.DataFrame(
        {
            "partner_id": ids,
            "label_revenue": rng.exponential(100, len(ids)) * (rng.random(len(ids)) < 0.4),
            "label_engaged": rng.integers(0, 2, len(ids)),
        }
    )


def test_partner_resamples_match_a_slow_twin():
    frame = _frame()
    fast = list(partner_resamples(frame, 5, seed=4))
    # slow twin: same partner draws, rows gathered partner by partner in frame order
    codes, partners = pd.factorize(frame["partner_id"])
    rng = np.random.default_rng(4)
    for rows in fast:
        pick = rng.integers(0, len(partners), len(partners))
        slow = np.concatenate([np.flatnonzero(codes == p) for p in pick])
        np.testing.assert_array_equal(rows, slow)


_PREDICTIONS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),  # extremes: 1e308, 5e-324, -0.0
    st.sampled_from([0.0, 0.25, 0.5, 1.0]),  # many ties
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), _PREDICTIONS), min_size=1, max_size=60))
def test_rank_auc_is_sklearn_s_roc_auc(rows):
    """The bootstrap's AUC from ranks against its slow twin, ``sklearn``'s ``roc_auc_score``."""
    y = np.array([label for label, _ in rows], dtype=int)
    pred = np.array([p for _, p in rows], dtype=float)
    fast = rank_auc(y, pred)
    if len(np.unique(y)) < 2:
        assert np.isnan(fast)
    else:
        assert fast == pytest.approx(roc_auc_score(y, pred), abs=1e-12)


def test_rank_auc_refuses_what_sklearn_refuses():
    with pytest.raises(ValueError, match="NaN"):
        rank_auc(np.array([0, 1, 1]), np.array([0.1, np.nan, 0.3]))


def test_paired_bootstrap_difference_and_se():
    frame = _frame(partners=150)
    rng = np.random.default_rng(1)
    good = frame["label_engaged"] + rng.normal(0, 0.8, len(frame))
    bad = frame["label_engaged"] + rng.normal(0, 3.0, len(frame))
    diff, se = paired_bootstrap(frame, engagement_auc_metric, good, bad, rounds=150, seed=0)
    assert diff == pytest.approx(
        engagement_auc_metric(frame, good) - engagement_auc_metric(frame, bad)
    )
    assert diff > 2 * se > 0
    # identical predictions: the paired difference is exactly zero in every resample
    assert paired_bootstrap(frame, revenue_bias_metric, good, good, 30) == (0.0, 0.0)
    assert np.isnan(paired_bootstrap(frame, revenue_bias_metric, good, bad, 0)[1])


_METRICS = {
    "gini": revenue_gini_metric,
    "bias": revenue_bias_metric,
    "mae": revenue_mae_metric,
    "rmse": revenue_rmse_metric,
    "auc": engagement_auc_metric,
}


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    partners=st.integers(1, 40),
    scale=st.sampled_from([1e-300, 1.0, 1e6, 1e150]),
    metric=st.sampled_from(sorted(_METRICS)),
    rounds=st.sampled_from([0, 2, 25]),
)
def test_the_bootstrap_on_label_arrays_equals_a_frame_per_resample(
    seed, partners, scale, metric, rounds
):
    """Slow twin: each resample as a DataFrame (the code until 2026-12-07), the same draws."""
    frame = _frame(seed, partners).assign(extra="x")  # a column no metric reads
    frame["label_revenue"] *= scale
    frame.index = frame.index * 3 + 7  # not a range: positions, not labels, are resampled
    rng = np.random.default_rng(seed)
    a = frame["label_revenue"].to_numpy() * rng.lognormal(0, 1, len(frame))
    b = rng.permutation(a)
    fn = _METRICS[metric]
    flat = frame.reset_index(drop=True)

    def slow(rows, pred):
        return fn(flat.iloc[rows].reset_index(drop=True), pred[rows])

    diffs, values = [], []
    for rows in partner_resamples(flat, rounds, seed):
        d = slow(rows, a) - slow(rows, b)
        if np.isfinite(d):
            diffs.append(d)
        v = slow(rows, a)
        if np.isfinite(v):
            values.append(v)
    whole = np.arange(len(flat))
    want_diff = float(slow(whole, a) - slow(whole, b))
    want_se = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else float("nan")
    want_one = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    diff, se = paired_bootstrap(frame, fn, a, b, rounds, seed)
    np.testing.assert_array_equal([diff, se], [want_diff, want_se])  # NaN equals NaN here
    np.testing.assert_array_equal(bootstrap_se(frame, fn, a, rounds, seed), want_one)


@pytest.fixture(scope="module")
def prepared(prepared_training):
    """The shared prepared training set, sorted by (partner, as_of)."""
    frame, _, X = prepared_training
    order = frame.sort_values(["partner_id", "as_of"], kind="stable").index
    return frame.loc[order].reset_index(drop=True), X.loc[order].reset_index(drop=True)


def test_each_head_has_its_own_search(prepared):
    frame, X = prepared
    folds = time_folds(frame, 2)
    base = {"n_jobs": 1, "random_state": 7}
    rev, rev_study = tune.tune_head(
        "revenue", X, frame["label_revenue"].to_numpy(), folds, base, 3, seed=7
    )
    eng, eng_study = tune.tune_head(
        "engagement", X, frame["label_engaged"].to_numpy(), folds, base, 3, seed=7
    )
    assert "tweedie_variance_power" in rev and "tweedie_variance_power" not in eng
    # different sampler seeds: the sampled (non-enqueued) candidates differ
    assert (
        rev_study.trials[1].params["learning_rate"] != eng_study.trials[1].params["learning_rate"]
    )
    for params, head in ((rev, "revenue"), (eng, "engagement")):
        space = tune.SEARCH_SPACES[head]
        for key, (lo, hi) in space.items():
            if key in params and key in rev_study.best_params | eng_study.best_params:
                assert lo <= params[key] <= hi, key
        # trees learnt by early stopping, capped so SHAP tables stay cheap
        assert 10 <= params["n_estimators"] <= tune.MAX_TREES
        assert params["max_depth"] <= 3 and params["num_leaves"] <= 8
    with pytest.raises(ValueError, match="unknown head"):
        tune.tune_head("margin", X, frame["label_revenue"].to_numpy(), folds, base, 1, 7)


def test_an_engagement_fold_can_be_scored_as_the_head_is_fitted(prepared):
    frame, X = prepared
    y = frame["label_engaged"].to_numpy()
    train, valid = time_folds(frame, 2)[1]
    calib = np.zeros(len(frame), bool)
    calib[np.flatnonzero(train)[-len(frame) // 10 :]] = True  # the fold's newest rows
    params = {"n_jobs": 1, "random_state": 7, "learning_rate": 0.1}
    head = {"calibration": "auto", "segment_columns": ("age_days", "tier")}

    def by_hand(kwargs, fit_rows, X_calib, y_calib):
        model = EngagementClassifier(**kwargs, **params, n_estimators=tune.MAX_TREES).fit(
            X[fit_rows], y[fit_rows], X_calib, y_calib, X[valid], y[valid], 25
        )
        p = np.clip(model.predict_proba(X[valid])[:, 1], 1e-6, 1 - 1e-6)
        return -np.mean(y[valid] * np.log(p) + (1 - y[valid]) * np.log(1 - p)), model

    as_head = tune.fold_loss("engagement", params, X, y, train, valid, head, calib)
    expected, model = by_hand(head, train & ~calib, X[calib], y[calib])
    assert as_head[0] == pytest.approx(expected, rel=1e-9)
    assert as_head[1] == model.best_iteration_ and model.segment_offsets_["tier"]
    # the training job's fold (the default): a Platt map on the fold's own margins, no offsets
    plain = tune.fold_loss("engagement", params, X, y, train, valid)
    assert plain[0] == pytest.approx(by_hand({"calibration": "sigmoid"}, train, None, None)[0])
    assert plain[0] != pytest.approx(as_head[0])
    # the search scores the same candidates by the fold loss it is given
    studies = [
        tune.tune_head("engagement", X, y, [(train, valid)], params, 2, 7, None, *extra)[1]
        for extra in ((), (head, [calib]))
    ]
    assert [t.params for t in studies[0].trials] == [t.params for t in studies[1].trials]
    assert studies[1].trials[1].value != pytest.approx(studies[0].trials[1].value)
