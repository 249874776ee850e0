"""The scoring job's direct registry read against MLflow's own loading (the slow twin)."""

import dataclasses
import json
import shutil

import pandas as pd
import pytest

from partnerscore.features.core import PartnerscoreError
from partnerscore.models.scoring import score_features
from partnerscore.serving.model_store import (
    _pyfunc_artifacts,
    load_located,
    load_scoring_model,
    local_folder,
    locate_model,
)

URI = "models:/partnerscore@champion"


def test_direct_read_equals_mlflow_load(store_config, built_dir):
    import mlflow

    from partnerscore.models.pyfunc import load_partner_model, model_version_of
    from partnerscore.training.reference import load_reference_profile

    tracking = store_config.paths.tracking_uri()
    fast = load_scoring_model(URI, tracking)
    assert fast.fast
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    slow = load_partner_model(URI)
    assert fast.version == model_version_of(URI) == fast.model.metadata["version"]
    assert fast.reference is not None
    assert fast.reference == load_reference_profile(URI, required=False)
    # the end of the data it was trained on (train copies the build manifest's data_end)
    data_end = pd.Timestamp(json.loads((built_dir / "manifest.json").read_text())["data_end"])
    assert fast.model.training_data_end == slow.training_data_end == data_end
    frame = pd.read_parquet(built_dir / "training_set.parquet").head(300)
    pd.testing.assert_frame_equal(score_features(fast.model, frame), score_features(slow, frame))
    by_version = locate_model(f"models:/partnerscore/{fast.version}", tracking)
    assert (
        by_version is not None and by_version.model_file == locate_model(URI, tracking).model_file
    )


def test_the_lean_load_is_the_scoring_view_with_the_same_scores(store_config, built_dir):
    from partnerscore.models.head_scoring import LeanEngagementHead, LeanRevenueHead
    from partnerscore.models.heads import RevenueRegressor

    tracking = store_config.paths.tracking_uri()
    located = locate_model(URI, tracking)
    assert located.scoring_file is not None
    assert located.scoring_file.parent == located.model_file.parent
    lean, full = load_scoring_model(URI, tracking, lean=True), load_scoring_model(URI, tracking)
    assert isinstance(lean.model.revenue, LeanRevenueHead)
    assert isinstance(lean.model.engagement, LeanEngagementHead)
    assert isinstance(full.model.revenue, RevenueRegressor)
    assert lean.version == full.version == lean.model.metadata["version"]
    assert lean.reference == full.reference
    assert lean.model.training_data_end == full.model.training_data_end is not None
    frame = pd.read_parquet(built_dir / "training_set.parquet").head(300)
    pd.testing.assert_frame_equal(
        score_features(lean.model, frame), score_features(full.model, frame), check_exact=True
    )


def test_a_version_without_a_scoring_view_loads_whole(store_config, tmp_path):
    from partnerscore.models.heads import RevenueRegressor

    located = locate_model(URI, store_config.paths.tracking_uri())
    model_dir = located.model_file.parent.parent
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    files = _pyfunc_artifacts(copy)
    assert set(files) == {"partner_model", "partner_model_scoring"}
    (copy / files["partner_model_scoring"].relative_to(copy)).unlink()
    assert set(_pyfunc_artifacts(copy)) == {"partner_model"}  # a declared file gone: left out
    earlier = dataclasses.replace(located, scoring_file=None)  # as logged by earlier versions
    model = load_located(earlier, lean=True)
    assert isinstance(model.revenue, RevenueRegressor)
    assert model.metadata["version"] == located.version


def test_aliases_follow_the_registry_and_unknown_ones_fall_back(store_config, tmp_path):
    from mlflow import MlflowClient

    # a copy of the registry database (artifact locations stay absolute): aliases move freely
    db = tmp_path / "mlflow.db"
    shutil.copy(store_config.paths.tracking_uri().removeprefix("sqlite:///"), db)
    tracking = f"sqlite:///{db}"
    assert locate_model("models:/partnerscore@fresh", tracking) is None
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    version = locate_model(URI, tracking).version
    client.set_registered_model_alias("partnerscore", "fresh", version)
    assert locate_model("models:/partnerscore@fresh", tracking).version == version
    client.delete_registered_model_alias("partnerscore", "fresh")
    assert locate_model("models:/partnerscore@fresh", tracking) is None
    # the fallback is MLflow itself, with its one-line error
    with pytest.raises(PartnerscoreError, match="cannot load model 'models:/partnerscore@fresh'"):
        load_scoring_model("models:/partnerscore@fresh", tracking)


def test_other_stores_and_uris_go_through_mlflow(store_config, tmp_path):
    tracking = store_config.paths.tracking_uri()
    assert locate_model("runs:/abc/model", tracking) is None
    assert locate_model(URI, "postgresql://user@host/mlflow") is None
    assert locate_model(URI, f"sqlite:///{tmp_path / 'missing.db'}") is None
    assert local_folder("s3://bucket/x") is None and local_folder("file://host/x") is None
    assert local_folder(tmp_path.as_uri()) == tmp_path and local_folder(str(tmp_path)) == tmp_path


def test_the_score_job_never_imports_mlflow_on_a_local_store(store_config, raw_dir, tmp_path):
    import json
    import subprocess
    import sys

    program = """
import json, sys
from datetime import date
from partnerscore.serving.config import AppConfig
from partnerscore.serving.score import run_score
cfg = AppConfig.model_validate(json.loads(sys.argv[1]))
result = run_score(sys.argv[2], date(2026, 1, 1), "champion", sys.argv[3], cfg)
print(json.dumps({"scored": result.scored, "mlflow": "mlflow" in sys.modules}))
"""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            program,
            json.dumps(store_config.model_dump(mode="json")),
            str(raw_dir),
            str(tmp_path / "scores.parquet"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in __import__("os").environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["scored"] > 0 and seen["mlflow"] is False


def test_a_missing_alias_or_version_stops_the_score_job_before_any_work(store_config, tmp_path):
    from datetime import date

    from partnerscore.serving.model_store import missing_model
    from partnerscore.serving.score import run_score

    tracking = store_config.paths.tracking_uri()
    version = locate_model(URI, tracking).version
    assert missing_model(URI, tracking) is None
    assert missing_model(f"models:/partnerscore/{version}", tracking) is None
    assert missing_model("runs:/abc/model", tracking) is None  # not certain: MLflow answers
    assert missing_model(URI, "postgresql://user@host/mlflow") is None
    assert missing_model("models:/partnerscore@nope", tracking) == (
        "cannot load model 'models:/partnerscore@nope': registered model 'partnerscore' has "
        "no alias 'nope'"
    )
    assert "has no version 999" in missing_model("models:/partnerscore/999", tracking)
    assert missing_model(URI, f"sqlite:///{tmp_path / 'none.db'}") is None  # the load answers
    # the same answer as MLflow's own load gives, only earlier
    with pytest.raises(PartnerscoreError, match="cannot load model 'models:/partnerscore@nope'"):
        load_scoring_model("models:/partnerscore@nope", tracking)
    # the raw folder does not exist: the model error comes first, so no table was read
    with pytest.raises(PartnerscoreError, match="has no alias 'nope'"):
        run_score(
            tmp_path / "no-raw-here", date(2026, 1, 1), "nope", tmp_path / "s.csv", store_config
        )
    assert not (tmp_path / "s.csv").exists()


def test_a_missing_raw_folder_stops_the_score_job_before_the_model_loads(
    store_config, tmp_path, monkeypatch
):
    """The raw folder and its required tables are looked for before the model's thread starts
    (an error raised after it waits for the load, ~2 s, before it is reported)."""
    from datetime import date

    from partnerscore.serving import score as score_module

    loads = []
    monkeypatch.setattr(score_module, "_load_for_scoring", lambda *a: loads.append(a))
    with pytest.raises(PartnerscoreError, match="raw data folder not found"):
        score_module.run_score(
            tmp_path / "no-raw-here", date(2026, 1, 1), "champion", tmp_path / "s.csv", store_config
        )
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "partners.csv").write_text("partner_id\n")
    with pytest.raises(PartnerscoreError, match="missing required table"):
        score_module.run_score(
            tmp_path / "raw", date(2026, 1, 1), "champion", tmp_path / "s.csv", store_config
        )
    assert loads == [] and not (tmp_path / "s.csv").exists()


def _champion_through_mlflow(store_config):
    """The store's tracking URI, set as MLflow's tracking and registry URI, and its champion."""
    import mlflow

    tracking = store_config.paths.tracking_uri()
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    return tracking, mlflow.MlflowClient().get_model_version_by_alias("partnerscore", "champion")


def test_a_runs_uri_names_the_registry_version_of_its_logged_model(store_config):
    """``--model runs:/<run>/model`` of a registered model scores as that version (it wrote an
    empty model_version, and a run of the champion's own model was recorded as a shadow run)."""

    from partnerscore.models.pyfunc import model_version_of

    tracking, champion = _champion_through_mlflow(store_config)
    uri, version = f"runs:/{champion.run_id}/model", str(champion.version)
    assert model_version_of(uri) == version
    loaded = load_scoring_model(uri, tracking)
    assert not loaded.fast and loaded.version == loaded.model.metadata["version"] == version
    assert model_version_of(f"runs:/{champion.run_id}/no-such-model") == ""


def test_a_load_through_mlflow_leaves_nothing_in_the_temporary_folder(
    store_config, tmp_path, monkeypatch
):
    """MLflow copies a model it reads through a ``runs:/`` URI (or from a tracking server) into
    a new temporary folder it never removes, as it does the MLmodel file the version lookup
    reads: each load of ``runs:/<run>/model`` (score --model, the Python API's load_model, the
    monitor) left tmpXXXXXXXX/model (~5.4 MB) in the system's temporary folder, a version
    lookup tmpXXXXXXXX/model/MLmodel, and a lookup of no model an empty tmpXXXXXXXX."""
    import tempfile

    from partnerscore.models.pyfunc import load_partner_model, model_version_of
    from partnerscore.serving.api import load_model

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    tracking, champion = _champion_through_mlflow(store_config)
    uri, version = f"runs:/{champion.run_id}/model", str(champion.version)
    assert model_version_of(uri) == version
    assert model_version_of(f"runs:/{champion.run_id}/no-such-model") == ""
    assert sorted(p.name for p in temp.iterdir()) == []
    loaded = load_scoring_model(uri, tracking)
    assert not loaded.fast and loaded.version == version
    assert load_model(uri, tracking_uri=tracking).metadata["version"] == version
    assert load_partner_model(f"models:/partnerscore/{version}").metadata["version"] == version
    assert sorted(p.name for p in temp.iterdir()) == []
