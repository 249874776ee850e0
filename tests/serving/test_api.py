"""The public Python API: DataFrames and paths give the same results; strict feature frames."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import partnerscore
from partnerscore.features.core import PartnerscoreError
from partnerscore.features.validate import load_raw


def test_version_and_lazy_import():
    assert partnerscore.__version__ and partnerscore.__version__ != "0+unknown"
    code = "import sys, partnerscore; partnerscore.__version__; print(sorted(m for m in ('mlflow', 'lightgbm', 'sklearn', 'shap', 'pandas') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert set(partnerscore.__all__) <= set(dir(partnerscore))
    assert partnerscore.PartnerscoreError is PartnerscoreError  # the README catches it so
    with pytest.raises(AttributeError):
        partnerscore.nothing_here  # noqa: B018


def test_frames_and_folder_validate_alike(raw_dir, sim_tables):
    from_frames = partnerscore.validate({k: v for k, v in sim_tables.items()})
    from_files = load_raw(raw_dir, write_quarantine=False)
    assert from_frames.report.ignored == ["truth"]
    for name, frame in from_files.tables.items():
        pd.testing.assert_frame_equal(from_frames.tables[name], frame, check_dtype=False)


def test_frames_get_row_level_quarantine(sim_tables):
    tables = {k: v.copy() for k, v in sim_tables.items() if k != "truth"}
    deals = tables["deals"].astype(object)
    deals.loc[0, "amount"] = "lots"
    deals.loc[1, "partner_id"] = "NOBODY"
    tables["deals"] = deals
    data = partnerscore.validate(tables)
    t = data.report.tables["deals"]
    assert t.quarantined == 2 and t.valid_rows + t.quarantined == t.input_rows
    reasons = data.quarantine["deals"]["reason"].tolist()
    assert "amount 'lots' is not a number" in reasons[0]
    assert "unknown partner_id 'NOBODY'" in reasons[1]
    with pytest.raises(PartnerscoreError, match="frames: missing required table 'deals'"):
        partnerscore.validate({"partners": tables["partners"]})


@pytest.fixture(scope="module")
def api_model(built_dir, tmp_path_factory):
    """A model trained through the API on a DataFrame (trials=0)."""
    store = tmp_path_factory.mktemp("api_store")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    training = pd.read_parquet(built_dir / "training_set.parquet")
    result = partnerscore.train(training, tracking_uri=uri, trials=0)
    return uri, result


def test_build_from_frames_matches_the_build_job(sim_tables, built_dir):
    frame = partnerscore.build({k: v for k, v in sim_tables.items()})
    job = pd.read_parquet(built_dir / "training_set.parquet")
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), job, check_dtype=False)
    assert frame.attrs["snapshots_dropped"] > 0


def test_train_and_score_on_frames(api_model, sim_tables):
    uri, result = api_model
    assert result.version
    # artifacts live beside the store's database, never in ./mlruns of the current directory
    store = Path(uri.removeprefix("sqlite:///")).parent
    assert any((store / "artifacts").rglob("MLmodel"))
    model = partnerscore.load_model(result.version, tracking_uri=uri)
    tables = {k: v for k, v in sim_tables.items()}
    scores = partnerscore.score(model, raw=tables, as_of="2026-04-01")
    assert len(scores) and np.isfinite(scores["score"]).all()
    # the same model through a prebuilt feature frame gives the same scores
    from partnerscore.features.pipeline import build_scoring_frame

    feats = build_scoring_frame(partnerscore.validate(tables), pd.Timestamp("2026-04-01"))
    again = partnerscore.score(model, features=feats)
    np.testing.assert_allclose(again["score"], scores["score"], rtol=0, atol=1e-9)
    assert (again["unseen_categories"] == "").all()
    by_age = partnerscore.score(result.version, raw=tables, at_age=60, tracking_uri=uri)
    assert (by_age["age_days"] == 60).all()
    # the forecast of those scores: by scoring date, and by the month the revenue arrives
    in_scope = scores[~scores["out_of_scope"]]
    totals = partnerscore.forecast(scores, by="tier")
    total = totals[totals["level"] == "total"].iloc[0]
    assert total["expected_revenue"] == pytest.approx(in_scope["pred_revenue"].sum())
    monthly = partnerscore.forecast(scores, by=(), phased=True)
    assert monthly["expected_revenue"].sum() == pytest.approx(total["expected_revenue"])
    assert (monthly["period_start"].dt.day == 1).all() and len(monthly) in (6, 7)
    with pytest.raises(PartnerscoreError, match="missing column 'nope'"):
        partnerscore.forecast(scores, by="nope")
    with pytest.raises(PartnerscoreError, match="not a registered model"):
        partnerscore.load_model("/tmp", tracking_uri=uri)


def test_load_model_reads_a_sqlite_registry_without_mlflow(api_model, sim_tables):
    """A local registry's version is read from its files (MLflow not imported, as in the score
    job) and is the model MLflow loads: same version, same scores, to the last bit."""
    uri, result = api_model
    code = (
        "import sys, partnerscore\n"
        f"m = partnerscore.load_model({result.version!r}, tracking_uri={uri!r})\n"
        "print(m.metadata['version'], 'mlflow' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [str(result.version), "False"]

    import mlflow

    from partnerscore.models.pyfunc import load_partner_model

    fast = partnerscore.load_model("challenger", tracking_uri=uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    slow = load_partner_model(f"models:/partnerscore/{result.version}")
    assert fast.metadata["version"] == str(result.version)
    tables = dict(sim_tables)
    a = partnerscore.score(fast, raw=tables, as_of="2026-04-01")
    b = partnerscore.score(slow, raw=tables, as_of="2026-04-01")
    pd.testing.assert_frame_equal(a, b)


def test_feature_frames_are_checked_strictly(api_model, sim_tables):
    uri, result = api_model
    model = partnerscore.load_model(result.version, tracking_uri=uri)
    from partnerscore.features.pipeline import build_scoring_frame

    feats = build_scoring_frame(partnerscore.validate(dict(sim_tables)), pd.Timestamp("2026-04-01"))
    with pytest.raises(PartnerscoreError, match=r"missing feature column '.+' and 2 more"):
        partnerscore.score(model, features=feats.drop(columns=feats.columns[3:6]))
    loose = partnerscore.score(
        model, features=feats.drop(columns=feats.columns[3:6]), allow_missing_features=True
    )
    assert len(loose) == len(feats)
    bad = feats.astype({"deals_won_todate": object})
    bad.loc[4, "deals_won_todate"] = "seven"
    with pytest.raises(PartnerscoreError, match=r"column 'deals_won_todate' row 5: 'seven'"):
        partnerscore.score(model, features=bad)
    odd = feats.copy()
    odd.loc[2, "region"] = "atlantis"
    flagged = partnerscore.score(model, features=odd)
    assert flagged.loc[2, "unseen_categories"] == "region=atlantis"
    assert (flagged["unseen_categories"] != "").sum() == 1
    with pytest.raises(PartnerscoreError, match="missing column 'as_of'"):
        partnerscore.score(model, features=feats.drop(columns=["as_of"]))
    dup = pd.concat([feats.head(2), feats.head(1)])
    with pytest.raises(PartnerscoreError, match="row 3: duplicate"):
        partnerscore.score(model, features=dup)
