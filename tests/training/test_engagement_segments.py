"""The engagement head's segment offsets in the training job's fit (``train.engagement_segment_
columns``): fitted by default, off with ``[]``, refused for columns the fit cannot use."""

import numpy as np
import pytest
from support import fit_model, simulated_training_set

from partnerscore.features.core import PartnerscoreError
from partnerscore.models import explain
from partnerscore.training.config import TrainConfig
from partnerscore.training.train import segment_factor_metrics


@pytest.fixture(scope="module")
def train_frame():
    return simulated_training_set(partners=600, seed=23)


def _fit(train_frame, **overrides):
    frame, specs = train_frame
    config = TrainConfig(trials=0, **overrides)
    return fit_model(
        frame,
        specs,
        config,
        revenue={"n_estimators": 20, "tweedie_variance_power": 1.3},
        engagement={"n_estimators": 40},
    )


def test_the_engagement_head_gets_offsets_per_age_and_tier_by_default(train_frame):
    frame, _ = train_frame
    model = _fit(train_frame)
    plain = _fit(train_frame, engagement_segment_columns=())
    offsets = model.metadata["fit"]["engagement_segment_offsets"]
    assert set(offsets) == {"age_days", "tier"}
    assert set(offsets["age_days"]) == {"30.0", "60.0", "90.0", "180.0"}
    assert set(offsets["tier"]) == set(frame["tier"].astype(str).unique())
    assert model.engagement.segment_offsets_ == offsets
    assert plain.metadata["fit"]["engagement_segment_offsets"] is None
    assert plain.engagement.segment_offsets_ == {}
    metrics = segment_factor_metrics(model.metadata["fit"])
    assert metrics["fit_engagement_segment_offset_age_days_30.0"] == offsets["age_days"]["30.0"]
    # the drivers still add up to pred_engagement, the offsets inside age's and tier's effects
    X = model.prepare(frame)
    contrib = model.engagement.raw_contributions(X)
    p = model.predict(frame)["pred_engagement"].to_numpy()
    effects = explain.explain_head(contrib[:, :-1], contrib[:, -1], model.engagement.calibrate)
    np.testing.assert_allclose(effects.pred, p, atol=1e-12)
    np.testing.assert_allclose(effects.base + explain.row_sums(effects.effects), p, atol=1e-9)


@pytest.mark.parametrize(
    "columns, message",
    [
        (("planet",), "engagement_segment_columns: 'planet' is not a feature of the model"),
        (
            ("activities_touchpoints_per30d_todate",),
            "engagement_segment_columns: numeric 'activities_touchpoints_per30d_todate' has",
        ),
    ],
)
def test_a_bad_engagement_segment_column_is_refused_before_anything_is_fitted(
    train_frame, monkeypatch, columns, message
):
    from partnerscore.training import train as job

    def fitted(*args, **kwargs):
        raise AssertionError("fitted before the configuration was checked")

    monkeypatch.setattr(job, "tune_heads", fitted)
    monkeypatch.setattr(job.RevenueRegressor, "fit", fitted)
    monkeypatch.setattr(job.EngagementClassifier, "fit", fitted)
    frame, _ = train_frame
    config = TrainConfig(trials=0, engagement_segment_columns=columns)
    with pytest.raises(PartnerscoreError, match=message):
        job.train_and_evaluate(frame, {}, None, config)
    with pytest.raises(PartnerscoreError, match=message):
        _fit(train_frame, engagement_segment_columns=columns)
