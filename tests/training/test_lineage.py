"""MLflow lineage of a training run: datasets, resolved config, trial runs, descriptions."""

import json

import mlflow
import pandas as pd
import pytest

from partnerscore.features.core import PartnerscoreError
from partnerscore.serving.cli import main
from partnerscore.training.config import TrainConfig
from partnerscore.training.train import run_train


def test_training_run_lineage(built_dir, tracking_uri, tmp_path):
    result = run_train(
        built_dir,
        TrainConfig(trials=2),
        tracking_uri=tracking_uri,
        artifact_root=(tmp_path / "art").as_uri(),
        config_hash="cafe",
        resolved_config={"train": {"trials": 2}, "note": "resolved"},
    )
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run = client.get_run(result.run_id)

    # training and holdout cohorts as dataset inputs with digest, source and schema
    inputs = {
        next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
        for d in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"training", "holdout"}
    frame = pd.read_parquet(built_dir / "training_set.parquet")
    for context, dataset in inputs.items():
        assert len(dataset.digest) >= 8, context
        assert str(built_dir / "training_set.parquet") in dataset.source
        columns = {c["name"]: c["type"] for c in json.loads(dataset.schema)["mlflow_colspec"]}
        assert columns["as_of"] == "datetime" and columns["partner_id"] == "string"
        assert set(columns) == set(frame.columns)
        profile = json.loads(dataset.profile)
        assert profile["num_rows"] == result.rows["train" if context == "training" else "holdout"]
    assert inputs["training"].digest != inputs["holdout"].digest

    # the resolved config as an artifact
    resolved = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/config/resolved.json")
    assert resolved == {"train": {"trials": 2}, "note": "resolved"}

    # one nested run per Optuna trial, with its params and loss
    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert result.trial_runs == len(children) == 4
    names = sorted(c.data.tags["mlflow.runName"] for c in children)
    assert names == [
        "engagement-trial-0",
        "engagement-trial-1",
        "revenue-trial-0",
        "revenue-trial-1",
    ]
    for child in children:
        assert {"learning_rate", "num_leaves", "head", "trial"} <= set(child.data.params)
        assert child.info.status == "FINISHED"
        if child.data.tags["optuna.state"] == "COMPLETE":
            assert child.data.metrics["loss"] > 0
    best = [c for c in children if c.data.tags["optuna.best"] == "true"]
    assert sorted(c.data.params["head"] for c in best) == ["engagement", "revenue"]
    revenue_best = next(c for c in best if c.data.params["head"] == "revenue")
    assert revenue_best.data.metrics["loss"] == run.data.metrics["tuning_revenue_best_loss"]

    # descriptions: the run and the model version name the data window and metrics
    note = run.data.tags["mlflow.note.content"]
    train_rows = result.rows["train"]
    assert f"Trained on {train_rows:,} snapshots" in note and "Holdout: primary score" in note
    signed = pd.to_datetime(frame["signed_at"])
    assert f"{signed.min():%Y-%m-%d}" in note and f"{signed.max():%Y-%m-%d}" in note
    mv = client.get_model_version("partnerscore", result.version)
    assert "Holdout: primary score" in mv.description and "refitted on all" in mv.description
    assert run.data.params["data_train_signed"].startswith(f"{signed.min():%Y-%m-%d}")


def test_train_no_register_and_promote_messages(built_dir, tracking_uri, capsys):
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    code = main(["train", "--features", str(built_dir), "--trials", "0", "--no-register"])
    out = capsys.readouterr().out
    assert code == 0
    assert "not registered (--no-register)" in out
    assert client.search_registered_models() == []
    uri = out.split("the model is at ")[1].split()[0]
    model = mlflow.pyfunc.load_model(uri)
    assert model.metadata.signature is not None
    # the printed models:/m-<id> URI names its training run (score and monitor read the
    # run's reference profile through it; they refused it before)
    from partnerscore.training.reference import load_reference_profile, run_id_of

    mlflow.set_tracking_uri(tracking_uri)
    run_id = out.split("MLflow run ")[1].split()[0]
    assert run_id_of(uri) == run_id
    assert load_reference_profile(uri)["feature_names"]
    with pytest.raises(PartnerscoreError, match="cannot resolve model 'models:/m-0000'"):
        run_id_of("models:/m-0000")

    assert main(["--json", "train", "--features", str(built_dir), "--trials", "0"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["version"] == "1" and payload["model_uri"] == "models:/partnerscore/1"
    # a logged model's URI names its registry version, if it has one (score wrote "")
    from partnerscore.models.pyfunc import model_version_of

    registered = client.get_model_version("partnerscore", "1").source  # models:/m-<id>
    assert model_version_of(registered) == "1"
    assert model_version_of(uri) == ""  # the --no-register model: never registered

    # --force needs --reason: a usage error (the usage line, one error line), exit 2, nothing
    # changed
    assert main(["promote", "--force"]) == 2
    usage, error = capsys.readouterr().err.strip().split("\n")
    assert usage.startswith("Usage: ") and error.startswith("error: ") and "--reason" in error
    assert main(["promote", "--force", "--reason", "first version"]) == 0
    capsys.readouterr()
    # promoting the champion again says so and succeeds
    assert main(["promote"]) == 0
    out = capsys.readouterr().out
    assert "v1 is already champion" in out and "nan" not in out
    assert main(["promote", "--version", "1"]) == 0
    assert "already champion" in capsys.readouterr().out
