import re

import numpy as np
import pandas as pd
import pytest

from partnerscore.features.core import PartnerscoreError
from partnerscore.models.pyfunc import load_partner_model, resolve_model_uri
from partnerscore.models.scoring import score_features, top_features

SENTENCE = re.compile(
    r"^(?P<label>[^:]+): (?P<value>.+?) — (?:raises|lowers) "
    r"(?:expected revenue by \$[\d,]+|engagement likelihood by \d+\.\d pts)"
    r"(?:(?: and | but raises | but lowers )"
    r"(?:expected revenue by \$[\d,]+|engagement likelihood by \d+\.\d pts))?$"
)


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
    assert (out["as_of"].to_numpy() == frame["as_of"].to_numpy()).all()


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
    score_parts = out[
        ["score_base", "score_strategic", "score_execution", "score_results", "score_adjustment"]
    ]
    np.testing.assert_allclose(score_parts.sum(axis=1), out["score"], atol=1e-6)
    model_parts = out[
        ["score_base", "score_model_strategic", "score_model_execution", "score_model_results"]
    ]
    np.testing.assert_allclose(model_parts.sum(axis=1), out["score_model"], atol=1e-6)


def test_policy_columns(scored):
    model, frame, out = scored
    assert out["score"].between(0, 100).all()
    assert set(out["score_tier"]) <= set(model.policy.tier_cutoffs)
    assert out["quadrant"].str.contains("_revenue_").all()
    assert (out["provisional"] == (frame["age_days"] < 60).to_numpy()).all()
    assert out["intervention"].str.len().gt(0).all()
    assert out["intervention_detail"].str.len().gt(out["intervention"].str.len()).all()
    assert out["model_config_hash"].str.len().eq(12).all()
    for spec in model.feature_specs:  # every feature value under its own name
        pd.testing.assert_series_equal(
            out[spec.name], frame[spec.name].reset_index(drop=True), check_dtype=False
        )


def test_drivers_are_sentences_with_values_and_effects(scored):
    model, _, out = scored
    by_label = {s.label: s for s in model.feature_specs}
    for col in [f"driver_{s}_{i}" for s in ("pos", "neg") for i in (1, 2, 3)]:
        texts = out[col][out[col] != ""]
        assert len(texts) > len(out) / 3, col
        assert texts.str.match(SENTENCE.pattern).all(), texts[~texts.str.match(SENTENCE.pattern)]
    # the dollars in a sentence are the feature's revenue effect in the shap_revenue_ column
    checked = 0
    for i, text in out["driver_pos_1"].items():
        m = SENTENCE.match(text)
        dollars = re.search(r"expected revenue by \$([\d,]+)", text)
        if not m or not dollars:
            continue
        spec = by_label[m["label"]]
        effect = out.loc[i, f"shap_revenue_{spec.name}"]
        assert int(dollars[1].replace(",", "")) == round(abs(effect)), text
        checked += 1
    assert checked > 50


def test_top_features_ranks_with_deterministic_ties():
    points = np.array([[0.5, 3.0, -2.0, 3.0, 1.0], [-1.0, -1.0, -5.0, 0.0, 2.0]])
    assert top_features(points, 3, positive=True).tolist() == [[1, 3, 4], [4, 3, 0]]
    assert top_features(points, 2, positive=False).tolist() == [[2, 0], [2, 0]]
    assert top_features(points, 9, positive=True).shape == (2, 5)


def test_deterministic(scored):
    model, frame, out = scored
    again = score_features(model, frame)
    pd.testing.assert_frame_equal(out, again)
    assert out.to_csv(index=False) == again.to_csv(index=False)


def test_absent_table_and_unseen_category_are_scored_not_rejected(scored):
    model, frame, out = scored
    trainings = [s.name for s in model.feature_specs if s.source == "trainings"]
    changed = frame.drop(columns=trainings).head(40).copy()
    changed["region"] = "atlantis"
    result = score_features(model, changed)
    assert len(result) == 40 and np.isfinite(result["score"]).all()
    assert result[trainings].isna().all().all()
    texts = pd.concat([result[f"driver_{s}_{i}"] for s in ("pos", "neg") for i in (1, 2, 3)])
    assert not texts.str.contains("Courses enrolled: not yet").any()
    assert not texts.str.contains("Region: atlantis").any()  # unseen: treated as missing


def test_requires_keys(scored):
    model, frame, _ = scored
    with pytest.raises(PartnerscoreError, match="missing column 'partner_id'"):
        score_features(model, frame.drop(columns=["partner_id"]))


def test_pyfunc_round_trip_returns_scored_frame(model_store, built_dir):
    import mlflow

    mlflow.set_tracking_uri(model_store.paths.tracking_uri())
    pyfunc = mlflow.pyfunc.load_model("models:/partnerscore@champion")
    frame = pd.read_parquet(built_dir / "training_set.parquet").head(20)
    plain = frame.drop(columns=["label_revenue", "label_engaged", "cohort", "signed_at"])
    for col in plain.columns:
        if plain[col].dtype == "str" or plain[col].dtype == object:
            plain[col] = plain[col].astype(object)
    # as_of stays datetime64: the signature types it as a datetime
    out = pyfunc.predict(plain)
    assert {"pred_revenue", "pred_engagement", "score", "driver_pos_1"} <= set(out.columns)
    assert len(out) == 20


def test_resolve_model_uri():
    assert resolve_model_uri("champion", "ps") == "models:/ps@champion"
    assert resolve_model_uri("7", "ps") == "models:/ps/7"
    assert resolve_model_uri("runs:/abc/model", "ps") == "runs:/abc/model"
    with pytest.raises(PartnerscoreError, match="--model"):
        resolve_model_uri("two words", "ps")


def test_predictive_median_column(scored):
    model, frame, out = scored
    median = out["pred_revenue_median"].to_numpy()
    assert out["pred_revenue_median"].dtype == np.float64
    np.testing.assert_allclose(
        median, model.intervals.median(out["pred_revenue"].to_numpy()), rtol=1e-12
    )
    assert (median >= 0).all() and (median <= out["pred_revenue_hi"] + 1e-9).all()
    # for a zero-inflated target the p50 is 0 for most partners, the mean never is
    assert (median == 0).mean() > 0.5 and (out["pred_revenue"] > 0).all()


def test_a_category_known_in_another_case_scores_as_that_category(scored):
    """A model trained on 'registered' read 'Registered' as a category it never saw (missing):
    another score. It is now read as 'registered' (every path goes through score_features and
    PartnerModel.prepare), in the model's spelling in the row, and noted."""
    from partnerscore.models.bundle import RESPELLED

    model, frame, out = scored
    assert "registered" in model.categories["tier"] and "EMEA" in model.categories["region"]
    shouted = frame.assign(tier=frame["tier"].str.capitalize(), region=frame["region"].str.lower())
    again = score_features(model, shouted)
    pd.testing.assert_frame_equal(again.drop(columns=RESPELLED), out.drop(columns=RESPELLED))
    assert (out[RESPELLED] == "").all()
    row = frame.index[(frame["tier"] == "registered") & (frame["region"] == "EMEA")][0]
    assert again.loc[row, RESPELLED] == "tier 'Registered' -> 'registered'; region 'emea' -> 'EMEA'"
    assert (again[RESPELLED] != "").all()  # every tier and region was respelled
    # the model's own input (predict, the contributions): object columns as the pyfunc gets
    loose = shouted.astype({"tier": object, "region": object})
    pd.testing.assert_frame_equal(model.predict(loose), model.predict(frame))
    assert model.respell(frame).frame is frame  # nothing to read otherwise: the input itself
    odd = shouted.astype({"tier": object})
    odd.loc[:4, "tier"] = ["REGISTERED", None, "Registered\u200b", "gold", 7]
    read = model.respell(odd).frame
    for name in ("tier", "region"):  # the vectorised frame against the rule cell by cell
        known = model.categories[name]
        twin = [slow_respellings([v], known).get(v, v) for v in odd[name]]
        assert read[name].tolist() == twin, name


def slow_respellings(values, categories):
    """The rule cell by cell (the fast path's twin): an unknown text value equal to exactly one
    known category once both are lowered is that category."""
    out = {}
    for value in values:
        if not isinstance(value, str) or value in categories:
            continue
        hits = [c for c in categories if c.lower() == value.lower()]
        if len(hits) == 1:
            out[value] = hits[0]
    return out


def test_respellings_follow_the_validators_case_rule():
    """Scoring reads a value as a known category exactly when validation's case folds would
    make the two one value (``str.lower``, Unicode included): 'ZÜRICH' is 'Zürich' and the
    Kelvin sign is 'k', but 'STRASSE' is not 'straße', 'İ' not 'i', a decomposed 'é' not a
    composed one; a value equal to two known categories but for case names neither."""
    from partnerscore.features.validate import case_folds
    from partnerscore.models.bundle import respellings

    categories = ["EMEA", "emea", "Zürich", "straße", "istanbul", "café", "k", "registered"]
    values = [
        "Emea", "EMEA", "ZÜRICH", "zürich", "STRASSE", "Straße", "İstanbul", "ISTANBUL",
        "cafe\u0301", "CAFÉ", "\u212a", "K", "Registered", "REGISTERED ", "Registered\u200b",
        None, 3, float("nan"), "ſtraße",
    ]  # fmt: skip
    got = respellings(values, categories)
    assert got == slow_respellings(values, categories)
    assert got == {
        "ZÜRICH": "Zürich",
        "zürich": "Zürich",
        "Straße": "straße",
        "ISTANBUL": "istanbul",
        "CAFÉ": "café",
        "\u212a": "k",
        "K": "k",
        "Registered": "registered",
    }
    for value in (v for v in values if isinstance(v, str)):  # one rule with validation's
        for category in categories:
            if value == category:
                continue
            folds = case_folds({category: 2, value: 1})
            alone = respellings([value], [category])
            assert (folds == {value: category}) == (alone == {value: category}), (value, category)


def test_a_value_equal_to_two_known_categories_but_for_case_stays_unseen(scored, built_dir):
    """A model trained on both 'EMEA' and 'emea' (two categories): 'Emea' names neither, so it
    is scored as missing and listed in unseen_categories, as before; the two it knows score
    as themselves, and a tier in another case is still read as the known one."""
    from partnerscore.models.bundle import RESPELLED
    from partnerscore.models.config import PolicyConfig
    from partnerscore.models.frame_check import check_feature_frame, unseen_categories
    from partnerscore.training.config import TrainConfig
    from partnerscore.training.train import fit_partner_model

    champion, frame, _ = scored
    train = pd.read_parquet(built_dir / "training_set.parquet")
    emea = np.flatnonzero(train["region"].eq("EMEA").to_numpy())
    train.loc[emea[::2], "region"] = "emea"
    config = TrainConfig()
    params = {**config.revenue.model_dump(), "n_jobs": 1}
    model = fit_partner_model(train, champion.feature_specs, config, PolicyConfig(), params, params)
    assert {"EMEA", "emea"} <= set(model.categories["region"])
    rows = frame.head(3).assign(tier="Registered")
    odd = rows.assign(region="Emea")
    check_feature_frame(model, odd)  # no error: scored as missing, listed
    assert unseen_categories(model, odd).tolist() == ["region=Emea"] * 3
    got = score_features(model, odd)
    assert got[RESPELLED].tolist() == ["tier 'Registered' -> 'registered'"] * 3
    assert got["region"].tolist() == ["Emea"] * 3
    missing = score_features(model, rows.assign(region=None))
    np.testing.assert_array_equal(got["score"], missing["score"])
    for known in ("EMEA", "emea"):
        check_feature_frame(model, rows.assign(region=known))
        assert (unseen_categories(model, rows.assign(region=known)) != "").sum() == 0
        assert score_features(model, rows.assign(region=known))["region"].eq(known).all()


@pytest.mark.parametrize(
    ("column", "said"),
    [
        # pandas' 'mixed' parser read 'today' as the clock's time: scored as of whenever run
        (["today"] * 3, "'today' is not a date"),
        # and a whole column of 02/01/2026 month-first (1 February)
        (["02/01/2026"] * 3, "'02/01/2026' is not a date"),
        # and a number as nanoseconds since 1970 (inside the contract's years: scored)
        ([20260101] * 3, "'20260101' is not a date (a number; give dates as YYYY-MM-DD)"),
        # a bool column was said to be "a number"
        ([True, False, True], "'True' is not a date (true/false; give dates as YYYY-MM-DD)"),
        # a CSV column of True and empty cells is read as objects: True is no date
        ([True, None, None], "'True' is not a date (true/false; give dates as YYYY-MM-DD)"),
    ],
)
def test_a_feature_frame_reads_as_of_in_iso_8601_as_scores_files(scored, column, said):
    """check_feature_frame (score --features, the pyfunc, the API) read as_of with pandas'
    'mixed' guess, while scores files and --cutoffs were read in ISO 8601 only."""
    from partnerscore.models.frame_check import check_feature_frame

    model, frame, _ = scored
    odd = frame.head(3).assign(as_of=column)
    with pytest.raises(PartnerscoreError) as err:
        check_feature_frame(model, odd, source="f.csv")
    assert str(err.value) == f"f.csv: column 'as_of' row 1: {said}"


def test_a_number_among_dates_in_a_python_frame_is_not_a_date(scored):
    """A Python frame's object as_of column with an int among date strings (the API, the
    pyfunc) was read by pandas as a date (20260101 -> 2026-01-01, with a deprecation warning),
    while a numeric column stops."""
    from partnerscore.models.frame_check import check_feature_frame

    model, frame, _ = scored
    odd = frame.head(3).assign(as_of=pd.Series(["2026-01-01", 20260101, "2026-01-03"]))
    with pytest.raises(PartnerscoreError) as err:
        check_feature_frame(model, odd, source="features")
    assert str(err.value) == (
        "features: column 'as_of' row 2: '20260101' is not a date (a number; give dates as "
        "YYYY-MM-DD)"
    )


def test_a_feature_frame_with_as_of_in_several_iso_forms_scores_as_plain_dates(scored):
    """check_feature_frame accepts as_of in several ISO 8601 forms; score_features then read
    the column in row 1's form (pandas' guess) and stopped with an unexpected ValueError
    ('unconverted data remains') on '2026-01-02 00:00'."""
    model, frame, _ = scored
    rows = frame.head(3).assign(as_of=["2026-01-01", "2026-01-02 00:00", "2026-01-03T00:00:00"])
    plain = frame.head(3).assign(as_of=pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"]))
    got, want = score_features(model, rows), score_features(model, plain)
    pd.testing.assert_frame_equal(got, want)
