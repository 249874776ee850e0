"""Revenue intervals and the predictive median on a simulated holdout (newest cohorts)."""

import numpy as np
import pandas as pd
import pytest
from support import fit_model

from partnerscore.features.config import BuildConfig, SimulateConfig
from partnerscore.features.pipeline import build_training_set
from partnerscore.features.registry import feature_specs
from partnerscore.features.simulate import simulate_program
from partnerscore.features.validate import RawData
from partnerscore.models.intervals import conditional_coverage, coverage
from partnerscore.training.config import TrainConfig
from partnerscore.training.splits import holdout_split


@pytest.fixture(scope="module")
def split():
    tables = simulate_program(SimulateConfig(partners=2000, seed=21))
    frame = build_training_set(RawData.from_frames(tables), BuildConfig())
    frame = frame.sort_values(["partner_id", "as_of"], kind="stable").reset_index(drop=True)
    train_mask, hold_mask = holdout_split(frame, 0.25)
    specs = [s for s in feature_specs() if s.name in frame.columns]
    return frame[train_mask].reset_index(drop=True), frame[hold_mask].reset_index(drop=True), specs


def _fit(split, method, **train_config):
    train, hold, specs = split
    config = TrainConfig(trials=0, interval_method=method, **train_config)
    model = fit_model(train, specs, config, revenue={"tweedie_variance_power": 1.3})
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


def test_ratio_level_variance_flows_from_the_fit_to_the_forecast(split):
    """train.portfolio_variance ratio_level: the cohort level error, its score column, its use."""
    from partnerscore.features.core import PartnerscoreError
    from partnerscore.serving.forecast import forecast_table

    _, hold, _ = split
    default, mu, cols = _fit(split, "normalized")
    assert default.intervals.level == 0.0 and (cols["revenue_level_cv"] == 0.0).all()
    model, mu, cols = _fit(split, "normalized", portfolio_variance="ratio_level")
    iv = model.intervals
    assert iv.variance == "ratio_level" and len(iv.var_edges_) == 9
    assert model.metadata["fit"]["intervals"]["level_cv"] == iv.level >= 0.0
    assert (cols["revenue_level_cv"] == iv.level).all()
    # the per-partner spread is the ratio estimator's, not the default's
    assert not np.allclose(
        cols["pred_revenue_sd"], default.revenue_intervals(mu)["pred_revenue_sd"]
    )
    scores = hold.assign(pred_revenue=mu, pred_revenue_sd=cols["pred_revenue_sd"])
    scores = scores.assign(revenue_level_cv=cols["revenue_level_cv"])
    table = forecast_table(scores, ("tier",), 180, 0.8)
    for rec in table[table["level"] == "total"].itertuples():
        part = scores[pd.to_datetime(scores["as_of"]).dt.floor("D") == rec.period_start]
        assert len(part)
        var = (part["pred_revenue_sd"] ** 2).sum() + (iv.level * part["pred_revenue"].sum()) ** 2
        assert rec.revenue_sd == pytest.approx(np.sqrt(var), rel=1e-9)
    with pytest.raises(PartnerscoreError):
        forecast_table(scores.assign(revenue_level_cv="x"), (), 180, 0.8)
