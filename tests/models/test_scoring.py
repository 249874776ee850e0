import numpy as np
import pandas as pd
import pytest

from partnerscore.models.pyfunc import load_partner_model, resolve_model_uri
from partnerscore.models.scoring import score_features


@pytest.fixture(scope="module")
def scored(model_store, built_dir):
    import mlflow

    mlflow.set_tracking_uri(model_store.paths.tracking_uri())
    model = load_partner_model("models:/partnerscore@champion")
    frame = pd.read_parquet(built_dir / "training_set.parquet").head(300)
    return model, frame, score_features(model, frame)


def test_one_row_per_input_in_order(scored):
    _, frame, out = scored
    assert out["partner_id"].tolist() == frame["partner_id"].tolist()
    assert len(out) == len(frame)


def test_predictions_match_model_and_subscores_add_up(scored):
    model, frame, out = scored
    preds = model.predict(frame)
    np.testing.assert_allclose(out["pred_revenue"], preds["pred_revenue"], rtol=1e-9)
    np.testing.assert_allclose(out["pred_engagement"], preds["pred_engagement"], atol=1e-9)
    for head in ("revenue", "engagement"):
        layers = out[[f"{head}_base", f"{head}_strategic", f"{head}_execution", f"{head}_results"]]
        np.testing.assert_allclose(layers.sum(axis=1), out[f"pred_{head}"], rtol=1e-6, atol=1e-6)
        shap_cols = [c for c in out.columns if c.startswith(f"shap_{head}_")]
        assert len(shap_cols) == len(model.feature_specs)
        np.testing.assert_allclose(
            out[shap_cols].sum(axis=1) + out[f"{head}_base"],
            out[f"pred_{head}"],
            rtol=1e-6,
            atol=1e-6,
        )
    score_parts = out[["score_base", "score_strategic", "score_execution", "score_results"]]
    np.testing.assert_allclose(score_parts.sum(axis=1), out["score"], atol=1e-6)


def test_policy_columns(scored):
    _, frame, out = scored
    assert out["score"].between(0, 100).all()
    assert set(out["score_tier"]) <= {"A", "B", "C", "D"}
    assert out["quadrant"].str.contains("_revenue_").all()
    assert (out["provisional"] == (frame["age_days"] < 60).to_numpy()).all()
    assert out["intervention"].str.len().gt(0).all()
    assert out["model_config_hash"].str.len().eq(12).all()


def test_drivers_are_sentences_with_values_and_signs(scored):
    _, _, out = scored
    pos = out["driver_pos_1"][out["driver_pos_1"] != ""]
    neg = out["driver_neg_1"][out["driver_neg_1"] != ""]
    assert len(pos) > len(out) / 2 and len(neg) > len(out) / 2
    assert pos.str.contains(r": .+ \(raises the score by \d+\.\d pts\)$").all()
    assert neg.str.contains(r"\(lowers the score by \d+\.\d pts\)$").all()
    row = out.iloc[0]
    firsts = [row[f"driver_pos_{i}"] for i in (1, 2, 3) if row[f"driver_pos_{i}"]]
    points = [float(s.rsplit("by ", 1)[1].split(" ")[0]) for s in firsts]
    assert points == sorted(points, reverse=True)


def test_deterministic(scored):
    model, frame, out = scored
    again = score_features(model, frame)
    pd.testing.assert_frame_equal(out, again)


def test_pyfunc_round_trip_returns_scored_frame(model_store, built_dir):
    import mlflow

    mlflow.set_tracking_uri(model_store.paths.tracking_uri())
    pyfunc = mlflow.pyfunc.load_model("models:/partnerscore@champion")
    frame = pd.read_parquet(built_dir / "training_set.parquet").head(20)
    plain = frame.drop(columns=["label_revenue", "label_engaged", "cohort", "signed_at"])
    for col in plain.columns:
        if plain[col].dtype == "str" or plain[col].dtype == object:
            plain[col] = plain[col].astype(object)
    plain["as_of"] = plain["as_of"].dt.strftime("%Y-%m-%d")
    out = pyfunc.predict(plain)
    assert {"pred_revenue", "pred_engagement", "score", "driver_pos_1"} <= set(out.columns)
    assert len(out) == 20


def test_resolve_model_uri():
    assert resolve_model_uri("champion", "ps") == "models:/ps@champion"
    assert resolve_model_uri("7", "ps") == "models:/ps/7"
    assert resolve_model_uri("runs:/abc/model", "ps") == "runs:/abc/model"
    from partnerscore.features.core import PartnerscoreError

    with pytest.raises(PartnerscoreError, match="--model"):
        resolve_model_uri("two words", "ps")
