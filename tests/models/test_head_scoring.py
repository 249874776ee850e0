"""The scoring view (lean heads) against the fitted model it was made from (the slow twin)."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partnerscore.features.registry import feature_specs
from partnerscore.models.bundle import PartnerModel
from partnerscore.models.calibration import (
    CALIBRATORS,
    BetaCalibrator,
    PlattCalibrator,
    lean_copy,
)
from partnerscore.models.head_scoring import LeanEngagementHead, LeanRevenueHead
from partnerscore.models.heads import EngagementClassifier, RevenueRegressor
from partnerscore.models.intervals import RevenueIntervals
from partnerscore.models.scoring import score_features
from partnerscore.models.whatif import training_ranges

HEAVY = ("lightgbm", "sklearn", "scipy", "mlflow", "shap")
EXTREMES = [0.0, -0.0, 1e-300, -1e-300, 1e300, -1e300, np.nan, np.inf, -np.inf, 7.5, -3.0]


@pytest.fixture(scope="module")
def frame(built_dir):
    return pd.read_parquet(built_dir / "training_set.parquet")


def fitted(frame: pd.DataFrame, calibration: str, **revenue_params) -> PartnerModel:
    """A small model as the training job makes it: recalibrated, segment factors (revenue) and
    offsets (engagement), intervals."""
    specs = [s for s in feature_specs() if s.name in frame.columns]
    model = PartnerModel(
        revenue=RevenueRegressor(n_estimators=40, **revenue_params),
        engagement=EngagementClassifier(
            n_estimators=40, calibration=calibration, segment_columns=("age_days", "tier")
        ),
        feature_specs=specs,
        categories=PartnerModel.categories_from(frame, specs),
    )
    X = model.prepare(frame)
    cut = int(len(X) * 0.7)
    y = frame["label_engaged"].to_numpy()
    model.revenue.fit(X, frame["label_revenue"])
    tiers = sorted(frame["tier"].dropna().astype(str).unique())
    model.revenue.recalibrate(1.3).recalibrate_segments(
        {"tier": {t: 0.8 + 0.1 * i for i, t in enumerate(tiers)}, "age_days": {30: 1.2, 90: 0.9}},
        numeric=("age_days",),
    )
    model.engagement.fit(X[:cut], y[:cut], X[cut:], y[cut:])
    pred = model.revenue.predict(X)
    model.intervals = RevenueIntervals(power=1.3).fit(frame["label_revenue"].to_numpy(), pred)
    model.set_reference(frame)
    model.metadata = {"version": "7", "config_hash": "abc", "trained_ages": [30, 60, 90]}
    return model


@pytest.fixture(scope="module", params=sorted(CALIBRATORS))
def model(request, frame):
    return fitted(frame, request.param)


def test_the_view_has_lean_heads_and_keeps_everything_else(model):
    view = model.scoring_view()
    assert isinstance(view.revenue, LeanRevenueHead)
    assert isinstance(view.engagement, LeanEngagementHead)
    assert view.feature_specs == model.feature_specs and view.categories == model.categories
    assert view.reference == model.reference and view.metadata == model.metadata
    assert view.metadata is not model.metadata and view.intervals is model.intervals
    assert "model_" not in vars(view.engagement.calibrator_)
    offsets = model.engagement.segment_offsets_
    assert view.engagement.segment_offsets_ == offsets and set(offsets) == {"age_days", "tier"}
    assert training_ranges(view) == training_ranges(model) != {}
    # the fitted model keeps its boosters and scikit-learn maps
    assert model.revenue.booster_ is not None
    assert type(model.revenue) is RevenueRegressor


def test_lean_margins_equal_the_boosters(model, frame):
    view = model.scoring_view()
    X = model.prepare(frame)
    for lean, head in ((view.revenue, model.revenue), (view.engagement, model.engagement)):
        np.testing.assert_allclose(lean.raw_score(X), head.raw_score(X), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        view.predict(frame).to_numpy(), model.predict(frame).to_numpy(), rtol=1e-9, atol=1e-12
    )


def perturbed(frame: pd.DataFrame, model: PartnerModel, data) -> pd.DataFrame:
    """Rows of the training set with random features set to extremes, missing or unseen."""
    rows = data.draw(st.lists(st.integers(0, len(frame) - 1), min_size=1, max_size=40))
    out = frame.iloc[rows].reset_index(drop=True).copy()
    for spec in model.feature_specs:
        if not data.draw(st.booleans()):
            continue
        at = data.draw(st.lists(st.integers(0, len(out) - 1), min_size=1, max_size=len(out)))
        if spec.kind == "categorical":
            value = data.draw(st.sampled_from([None, "never-seen", *model.categories[spec.name]]))
            column = out[spec.name].astype(object)
            column.iloc[at] = value
            out[spec.name] = column
        else:
            column = pd.to_numeric(out[spec.name], errors="coerce").astype(float)
            column.iloc[at] = data.draw(st.sampled_from(EXTREMES))
            out[spec.name] = column
    return out


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_the_view_scores_as_the_model_bit_for_bit(model, frame, data):
    rows = perturbed(frame, model, data)
    view = model.scoring_view()
    pd.testing.assert_frame_equal(
        score_features(view, rows), score_features(model, rows), check_exact=True
    )


PROGRAM = """
import json, pickle, sys
import pandas as pd
with open(sys.argv[1], "rb") as file:
    view = pickle.load(file)
from partnerscore.models.scoring import score_features
from partnerscore.models.whatif import training_ranges
out = score_features(view, pd.read_parquet(sys.argv[2]))
ranges = training_ranges(view)
out.to_pickle(sys.argv[3])
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_a_fresh_process_scores_the_view_without_lightgbm_or_sklearn(model, frame, tmp_path):
    view_file, rows_file, out_file = (
        tmp_path / "view.pkl",
        tmp_path / "rows.parquet",
        tmp_path / "o",
    )
    view_file.write_bytes(pickle.dumps(model.scoring_view()))
    rows = frame.head(200)
    rows.to_parquet(rows_file)
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(view_file), str(rows_file), str(out_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    modules = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert not set(HEAVY) & modules, set(HEAVY) & modules
    assert "pyarrow" in modules  # the check would notice a real import
    pd.testing.assert_frame_equal(
        pd.read_pickle(out_file), score_features(model, rows), check_exact=True
    )


def test_no_view_when_a_head_needs_lightgbm_or_sklearn_to_score(frame):
    # trees too large for the compiled tables: scored by LightGBM's pred_contrib
    large = fitted(frame, "sigmoid", num_leaves=40, max_depth=8, min_child_samples=2)
    assert large.revenue._shap_tables() is None
    assert large.scoring_view() is None
    # the step isotonic map is a scikit-learn object
    assert fitted(frame, "isotonic").scoring_view() is None


@settings(max_examples=100, deadline=None)
@given(
    margins=st.lists(
        st.one_of(
            st.floats(-50, 50),
            st.sampled_from([0.0, -0.0, 1e-300, 700.0, -700.0, 1e5, -1e5, 1e300, -1e300]),
        ),
        min_size=1,
        max_size=30,
    ),
    seed=st.integers(0, 2**16),
)
def test_logistic_maps_predict_as_their_sklearn_models(margins, seed):
    rng = np.random.default_rng(seed)
    train = rng.normal(0, 2, 300)
    y = (rng.random(300) < 1 / (1 + np.exp(-(0.7 * train - 0.3)))).astype(int)
    m = np.asarray(margins)
    for cls in (PlattCalibrator, BetaCalibrator):
        fitted_map = cls().fit(train, y)
        lean = lean_copy(fitted_map)
        old = cls().fit(train, y)
        del old.coef_, old.intercept_  # as fitted by an earlier version: its sklearn model only
        assert lean_copy(old) is None and "model_" not in vars(lean)
        np.testing.assert_array_equal(lean.predict(m), fitted_map.predict(m))
        np.testing.assert_allclose(fitted_map.predict(m), old.predict(m), rtol=1e-14, atol=0)
