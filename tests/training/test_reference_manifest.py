"""One reader of a training run's ``training/manifest.json`` serves ``promote``'s label
comparison (through a client) and the monitor (a model URI, the tracking URI set): the same
None / ``{}`` answers on a real SQLite store."""

import mlflow
import pytest
from mlflow import MlflowClient

from partnerscore.models.bundle import parse_data_end
from partnerscore.training.reference import (
    MANIFEST_ARTIFACT,
    label_definition,
    logged_manifest,
    run_label_definition,
    run_manifest,
)

BUILD = {"horizon_days": 90, "engagement_period_days": 15, "ages": [30, 60]}


@pytest.fixture()
def runs(tracking_uri, tmp_path):
    """``{kind: run_id}``: a manifest, none, one without build settings, a JSON list, not JSON."""
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.create_experiment("m", (tmp_path / "artifacts").as_uri())
    out = {}
    for kind, body in (
        ("manifest", {"data_end": "2025-08-31 23:59:00", "build_config": BUILD}),
        ("none", None),
        ("bare", {"data_end": "not a date"}),
        ("list", [1, 2]),
        ("text", "{not json"),
    ):
        run_id = client.create_run(experiment).info.run_id
        if isinstance(body, str):
            client.log_text(run_id, body, MANIFEST_ARTIFACT)
        elif body is not None:
            client.log_dict(run_id, body, MANIFEST_ARTIFACT)
        out[kind] = run_id
    return client, out


def test_both_call_sites_read_the_manifest_alike(runs):
    client, ids = runs
    definition = {"horizon_days": 90, "engagement_period_days": 15}
    assert run_manifest(ids["manifest"])["build_config"] == BUILD
    assert run_label_definition(client, ids["manifest"]) == definition
    logged = logged_manifest(f"runs:/{ids['manifest']}/model")
    assert label_definition(logged) == definition
    assert str(parse_data_end(logged["data_end"])) == "2025-08-31 23:59:00"
    # a manifest without build settings: {} (it records none); no readable manifest: None
    assert run_label_definition(client, ids["bare"]) == {}
    bare = logged_manifest(f"runs:/{ids['bare']}/model")
    assert label_definition(bare) == {} and parse_data_end(bare["data_end"]) is None
    for kind in ("none", "list", "text"):
        assert run_manifest(ids[kind], client) is None
        assert run_label_definition(client, ids[kind]) is None
        assert logged_manifest(f"runs:/{ids[kind]}/model") is None
    assert run_label_definition(client, "0" * 32) is None  # no such run
    assert logged_manifest("models:/nobody/1") is None
