"""Revenue intervals and the predictive median on a simulated holdout (newest cohorts)."""

import numpy as np
import pytest

from partnerscore.features.config import BuildConfig, SimulateConfig
from partnerscore.features.pipeline import build_training_set
from partnerscore.features.registry import feature_specs
from partnerscore.features.simulate import simulate_program
from partnerscore.features.validate import RawData
from partnerscore.models.config import PolicyConfig
from partnerscore.models.intervals import conditional_coverage, coverage
from partnerscore.training.config import TrainConfig
from partnerscore.training.splits import holdout_split
from partnerscore.training.train import _head_kwargs, fit_partner_model


@pytest.fixture(scope="module")
def split():
    tables = simulate_program(SimulateConfig(partners=2000, seed=21))
    frame = build_training_set(RawData.from_frames(tables), BuildConfig())
    frame = frame.sort_values(["partner_id", "as_of"], kind="stable").reset_index(drop=True)
    train_mask, hold_mask = holdout_split(frame, 0.25)
    specs = [s for s in feature_specs() if s.name in frame.columns]
    return frame[train_mask].reset_index(drop=True), frame[hold_mask].reset_index(drop=True), specs


def _fit(split, method):
    train, hold, specs = split
    config = TrainConfig(trials=0, interval_method=method)
    model = fit_partner_model(
        train,
        specs,
        config,
        PolicyConfig(),
        {**_head_kwargs(config.revenue, 7), "tweedie_variance_power": 1.3},
        _head_kwargs(config.engagement, 7),
    )
    mu = model.predict(hold)["pred_revenue"].to_numpy()
    return model, mu, model.revenue_intervals(mu)


def test_normalized_intervals_cover_about_80_percent_of_a_simulated_holdout(split):
    _, hold, _ = split
    y = hold["label_revenue"].to_numpy(float)
    assert (y == 0).mean() > 0.75  # most partners realise nothing in the horizon
    model, mu, cols = _fit(split, "normalized")
    assert model.intervals.method == "normalized"
    lo, hi = cols["pred_revenue_lo"], cols["pred_revenue_hi"]
    marginal = coverage(y, lo, hi)
    assert 0.75 <= marginal <= 0.85
    report = conditional_coverage(y, mu, lo, hi).set_index("group")
    assert report.loc["all", "coverage"] == pytest.approx(marginal)
    # the per-bin construction over-covers on the same holdout (its [0, 0] intervals)
    _, _, old = _fit(split, "mondrian")
    assert coverage(y, old["pred_revenue_lo"], old["pred_revenue_hi"]) > marginal
    # the predictive median: mostly 0, better than the mean on absolute error
    median = cols["pred_revenue_median"]
    assert (median == 0).mean() > 0.5
    assert np.mean(np.abs(y - median)) < np.mean(np.abs(y - mu))
