"""Policy as data: maturity bands with layer weights and segment adjustment factors."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.features.core import PartnerscoreError
from partnerscore.features.registry import LAYERS
from partnerscore.models import policy as pol
from partnerscore.models.config import PolicyConfig
from partnerscore.models.pyfunc import load_partner_model
from partnerscore.models.scoring import score_features
from partnerscore.serving.config import load_config

EQUAL = {"strategic": 1 / 3, "execution": 1 / 3, "results": 1 / 3}
LATE = {"strategic": 0.1, "execution": 0.2, "results": 0.7}


def test_default_bands_and_names():
    cfg = PolicyConfig()
    assert cfg.band_names() == ["0-45", "46-90", "91-180", "181+"]
    ages = np.array([0, 45, 45.9, 46, 90, 91, 180, 181, 5000, np.nan])
    names, mult = pol.maturity_band(ages, cfg)
    assert names.tolist() == [
        "0-45", "0-45", "0-45", "46-90", "46-90", "91-180", "91-180", "181+", "181+", "0-45"
    ]  # fmt: skip
    early, late = mult[0], mult[7]
    # the seed's idea: strategy and execution weigh more early, results more later
    assert early[0] > late[0] and early[1] > late[1] and early[2] < late[2]
    np.testing.assert_allclose(mult.sum(axis=1), 3.0)


@pytest.mark.parametrize(
    ("policy", "needle"),
    [
        ({"maturity_bands": [{"start_day": 5, "weights": EQUAL}]}, "policy.maturity_bands"),
        (
            {"maturity_bands": [{"start_day": 0, "weights": {**EQUAL, "results": 0.9}}]},
            "policy.maturity_bands.0.weights",
        ),
        (
            {
                "maturity_bands": [
                    {"start_day": 0, "weights": EQUAL},
                    {"start_day": 0, "weights": EQUAL},
                ]
            },
            "increasing start_day",
        ),
        ({"segment_adjustments": {"country": {"DE": 1.1}}}, "unknown segment 'country'"),
        ({"segment_adjustments": {"region": {"EMEA": -1}}}, "policy.segment_adjustments"),
        (
            {"segment_adjustments": {"region": {"EMEA": 1.2, "emea": 1.1}}},
            "region 'EMEA' and 'emea' are one value (case is ignored)",
        ),
        ({"tier_change_batches": 0}, "policy.tier_change_batches"),
    ],
)
def test_invalid_policy_is_one_line_naming_the_key(tmp_path, policy, needle):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"policy": policy}))
    with pytest.raises(PartnerscoreError) as err:
        load_config(path)
    assert needle in err.value.message and "\n" not in err.value.message


@settings(max_examples=60, deadline=None)
@given(
    base=st.floats(0, 100),
    points=st.lists(st.floats(-60, 60), min_size=3, max_size=3),
    shares=st.lists(st.integers(0, 10), min_size=3, max_size=3).filter(lambda v: sum(v) > 0),
    factor=st.floats(0.1, 3),
)
def test_weighted_score_adds_up(base, points, shares, factor):
    mult = np.array([[3 * s / sum(shares) for s in shares]])
    layers = {layer: np.array([p]) for layer, p in zip(LAYERS, points, strict=True)}
    score, weighted, adjustment = pol.weighted_score(np.array([base]), layers, mult, [factor])
    assert 0 <= score[0] <= 100
    total = base + sum(w[0] for w in weighted.values()) + adjustment[0]
    assert total == pytest.approx(score[0], abs=1e-9)
    # the obviously-correct twin
    expected = min(max(factor * (base + sum(m * p for m, p in zip(mult[0], points))), 0), 100)  # noqa: B905
    assert score[0] == pytest.approx(expected, abs=1e-9)


def test_adjustment_factor_multiplies_segments():
    cfg = PolicyConfig(segment_adjustments={"region": {"EMEA": 1.2}, "partner_type": {"msp": 0.5}})
    frame = pd.DataFrame(
        {"region": ["EMEA", "NA", "EMEA", None], "partner_type": ["msp", "msp", "si", "si"]}
    )
    np.testing.assert_allclose(pol.adjustment_factor(frame, cfg), [0.6, 0.5, 1.2, 1.0])


def test_adjustment_factor_ignores_case_as_scoring_does():
    """Validation folds spellings per batch and scoring reads a category in the model's
    spelling: a policy's 'EMEA: 1.2' left partners spelled 'emea' at factor 1 (silently)."""
    cfg = PolicyConfig(segment_adjustments={"region": {"EMEA": 1.2}, "tier": {"Gold": 0.5}})
    frame = pd.DataFrame(
        {
            "region": ["emea", "EMEA", "Emea", "NA", None, "EMEA "],
            "tier": ["gold", "GOLD", "silver", "gold", "gold", None],
        }
    )
    factors = pol.adjustment_factor(frame, cfg)
    np.testing.assert_allclose(factors, [0.6, 0.6, 1.2, 0.5, 0.5, 1.0])
    # the obviously-correct twin: row by row, lowercased
    twin = [
        (1.2 if isinstance(r, str) and r.lower() == "emea" else 1.0)
        * (0.5 if isinstance(t, str) and t.lower() == "gold" else 1.0)
        for r, t in zip(frame["region"], frame["tier"], strict=True)
    ]
    np.testing.assert_allclose(factors, twin)


@pytest.fixture(scope="module")
def model_and_frame(model_store, built_dir):
    import mlflow

    mlflow.set_tracking_uri(model_store.paths.tracking_uri())
    model = load_partner_model("models:/partnerscore@champion")
    frame = pd.read_parquet(built_dir / "training_set.parquet").head(400)
    return model, frame


def test_composite_changes_with_the_maturity_band_as_configured(model_and_frame):
    model, frame = model_and_frame
    flat = PolicyConfig(maturity_bands=[{"start_day": 0, "weights": EQUAL}])
    banded = PolicyConfig(
        maturity_bands=[{"start_day": 0, "weights": EQUAL}, {"start_day": 91, "weights": LATE}]
    )
    a = score_features(model, frame, policy=flat)
    b = score_features(model, frame, policy=banded)
    # equal shares reproduce the model's own composite
    np.testing.assert_allclose(a["score"], a["score_model"].clip(0, 100), atol=1e-9)
    early = (frame["age_days"] < 91).to_numpy()
    assert early.any() and (~early).any()
    np.testing.assert_allclose(b.loc[early, "score"], a.loc[early, "score"], atol=1e-12)
    assert set(b.loc[early, "maturity_band"]) == {"0-90"}
    assert set(b.loc[~early, "maturity_band"]) == {"91+"}
    late = b[~early]
    expected = late["score_base"] + sum(
        3 * LATE[layer] * late[f"score_model_{layer}"] for layer in LAYERS
    )
    np.testing.assert_allclose(late["score"], expected.clip(0, 100), atol=1e-9)
    assert (np.abs(late["score"] - a.loc[~early, "score"]) > 0.01).mean() > 0.5
    # predictions and the model's own split do not depend on the policy
    np.testing.assert_allclose(b["score_model"], a["score_model"])
    np.testing.assert_allclose(b["pred_revenue"], a["pred_revenue"])
    # tiers follow the policy's score
    assert (b["score_tier"] == pol.score_tier(b["score"].to_numpy(), banded)).all()


def test_segment_adjustment_is_its_own_column(model_and_frame):
    model, frame = model_and_frame
    region = str(frame["region"].iloc[0])
    cfg = PolicyConfig(segment_adjustments={"region": {region: 1.25}})
    plain = score_features(model, frame, policy=PolicyConfig())
    adjusted = score_features(model, frame, policy=cfg)
    mine = (frame["region"].astype(str) == region).to_numpy()
    np.testing.assert_allclose(adjusted.loc[~mine, "score"], plain.loc[~mine, "score"])
    np.testing.assert_allclose(
        adjusted.loc[mine, "score"], (plain.loc[mine, "score"] * 1.25).clip(0, 100), atol=1e-9
    )
    np.testing.assert_allclose(adjusted.loc[mine, "score_adjustment_factor"], 1.25)
    parts = ["score_base", *(f"score_{layer}" for layer in LAYERS), "score_adjustment"]
    np.testing.assert_allclose(adjusted[parts].sum(axis=1), adjusted["score"], atol=1e-9)
