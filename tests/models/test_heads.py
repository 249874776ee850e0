import numpy as np
import pandas as pd
import pytest

from partnerscore.features.registry import feature_specs
from partnerscore.models.baselines import LayeredScorecard, LinearBaseline, NaiveExtrapolation
from partnerscore.models.bundle import PartnerModel
from partnerscore.models.heads import EngagementClassifier, RevenueRegressor


@pytest.fixture(scope="module")
def training(built_dir):
    frame = pd.read_parquet(built_dir / "training_set.parquet")
    specs = [s for s in feature_specs() if s.name in frame.columns]
    model = PartnerModel(
        revenue=RevenueRegressor(),
        engagement=EngagementClassifier(),
        feature_specs=specs,
        categories=PartnerModel.categories_from(frame, specs),
    )
    return frame, specs, model.prepare(frame)


def test_revenue_head_contributions_add_up(training):
    frame, _, X = training
    head = RevenueRegressor(n_estimators=60).fit(X, frame["label_revenue"])
    pred = head.predict(X)
    contrib = head.raw_contributions(X)
    assert contrib.shape == (len(X), X.shape[1] + 1)
    np.testing.assert_allclose(np.exp(contrib.sum(axis=1)), pred, rtol=1e-9)
    assert (pred > 0).all()
    # tweedie predictions are expectations: the training total is close to the label total
    assert pred.sum() == pytest.approx(frame["label_revenue"].sum(), rel=0.15)


def test_revenue_head_contributions_match_shap_treeexplainer(training):
    import shap

    frame, _, X = training
    head = RevenueRegressor(n_estimators=30).fit(X, frame["label_revenue"])
    sample = X.head(50)
    ours = head.raw_contributions(sample)[:, :-1]
    theirs = shap.TreeExplainer(head.booster_).shap_values(sample)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_engagement_head_is_calibrated_on_later_cohort(training):
    frame, _, X = training
    y = frame["label_engaged"].to_numpy()
    cut = int(len(X) * 0.7)
    head = EngagementClassifier(n_estimators=60).fit(X[:cut], y[:cut], X[cut:], y[cut:])
    p = head.predict_proba(X)[:, 1]
    assert ((p > 0) & (p < 1)).all()
    margins = head.raw_contributions(X).sum(axis=1)
    np.testing.assert_allclose(head.calibrate(margins), p)
    assert abs(p[cut:].mean() - y[cut:].mean()) < 0.02  # calibrated on that slice
    assert head.calibration_method_ in ("isotonic", "sigmoid")


def test_params_validated_in_fit(training):
    frame, _, X = training
    with pytest.raises(ValueError, match="max_depth"):
        RevenueRegressor(max_depth=40).fit(X, frame["label_revenue"])
    with pytest.raises(ValueError, match="non-negative"):
        RevenueRegressor().fit(X, -frame["label_revenue"] - 1)
    with pytest.raises(ValueError, match="0/1"):
        EngagementClassifier().fit(X, frame["label_engaged"] * 2)
    assert RevenueRegressor(num_leaves=5).get_params()["num_leaves"] == 5


def test_prepare_restores_categories_and_tolerates_missing_columns(training):
    frame, specs, _ = training
    model = PartnerModel(
        revenue=RevenueRegressor(),
        engagement=EngagementClassifier(),
        feature_specs=specs,
        categories={"tier": ["gold", "silver"]},
    )
    raw = frame.head(3).drop(columns=["activities_touchpoints_30d"]).copy()
    raw["tier"] = ["gold", "platinum-new", None]
    X = model.prepare(raw)
    assert list(X.columns) == [s.name for s in specs]
    assert list(X["tier"].cat.categories) == ["gold", "silver"]
    assert X["tier"].tolist()[0] == "gold" and X["tier"].isna().tolist()[1:] == [True, True]
    assert X["activities_touchpoints_30d"].isna().all()


@pytest.mark.parametrize("cls", [LayeredScorecard, LinearBaseline])
def test_baselines_learn_something(training, cls):
    frame, specs, _ = training
    est = cls(specs).fit(frame, frame["label_revenue"], frame["label_engaged"])
    rev, eng = est.predict(frame)
    assert (rev >= 0).all() and ((eng >= 0) & (eng <= 1)).all()
    assert np.corrcoef(rev, frame["label_revenue"])[0, 1] > 0.05
    assert np.corrcoef(eng, frame["label_engaged"])[0, 1] > 0.2


def test_naive_extrapolation(training):
    frame, _, _ = training
    est = NaiveExtrapolation(horizon_days=180).fit(
        frame, frame["label_revenue"], frame["label_engaged"]
    )
    rev, eng = est.predict(frame)
    expected = frame["deals_won_amount_todate"] / frame["age_days"].clip(lower=1) * 180
    np.testing.assert_allclose(rev, expected.to_numpy())
    assert set(np.round(eng, 6)) <= {round(v, 6) for v in est.rates_.values()}


def test_revenue_recalibration_scales_predictions_and_keeps_shap_additive(training):
    frame, _, X = training
    head = RevenueRegressor(n_estimators=40).fit(X, frame["label_revenue"])
    before = head.predict(X)
    order = np.argsort(before)
    head.recalibrate(1.25)
    after = head.predict(X)
    np.testing.assert_allclose(after, 1.25 * before, rtol=1e-12)
    np.testing.assert_array_equal(np.argsort(after), order)  # ranking unchanged
    contrib = head.raw_contributions(X)
    np.testing.assert_allclose(np.exp(contrib.sum(axis=1)), after, rtol=1e-9)
    # the factor sits in the base value only: feature contributions are untouched
    raw = head.booster_.predict(X, pred_contrib=True)
    np.testing.assert_allclose(contrib[:, :-1], raw[:, :-1], atol=1e-9)
    with pytest.raises(ValueError, match="positive"):
        head.recalibrate(0.0)
    head.fit(X, frame["label_revenue"])  # refitting resets the factor
    np.testing.assert_allclose(head.predict(X), before, rtol=1e-12)


def test_early_stopping_sets_best_iteration(training):
    frame, _, X = training
    y = frame["label_engaged"].to_numpy()
    cut = int(len(X) * 0.7)
    head = EngagementClassifier(n_estimators=400, learning_rate=0.3).fit(
        X[:cut], y[:cut], X_valid=X[cut:], y_valid=y[cut:], early_stopping_rounds=10
    )
    assert 1 <= head.best_iteration_ < 400
    assert EngagementClassifier(n_estimators=30).fit(X, y).best_iteration_ == 30


def test_auto_calibration_records_cv_losses(training):
    frame, _, X = training
    y = frame["label_engaged"].to_numpy()
    cut = int(len(X) * 0.6)
    head = EngagementClassifier(calibration="auto", n_estimators=40).fit(
        X[:cut], y[:cut], X[cut:], y[cut:]
    )
    losses = head.calibration_losses_
    assert set(losses) == {"sigmoid", "beta", "smooth_isotonic"}
    assert head.calibration_method_ == min(losses, key=losses.get)
    with pytest.raises(ValueError, match="calibration"):
        EngagementClassifier(calibration="magic").fit(X, y)
