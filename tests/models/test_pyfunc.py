"""The registered pyfunc: typed signature, loads and predicts for any MLflow user."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from partnerscore.models.pyfunc import pip_requirements


@pytest.fixture()
def registry(model_store, monkeypatch):
    uri = model_store.paths.tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def model_dir(uri: str) -> Path:
    return Path(mlflow.artifacts.download_artifacts(uri))


def test_pyfunc_signature_and_training_set_predict(registry, built_dir):
    model = mlflow.pyfunc.load_model("models:/partnerscore/1")
    inputs = {c.name: (c.type.name, c.required) for c in model.metadata.signature.inputs.inputs}
    assert inputs["as_of"] == ("datetime", True)
    assert inputs["partner_id"] == ("string", True)
    assert inputs["tier"] == ("string", True)
    assert inputs["signed_at"] == ("datetime", False)
    outputs = model.metadata.signature.outputs.input_names()
    assert {"pred_revenue", "pred_revenue_median", "pred_engagement", "score"} <= set(outputs)
    assert "model_version" in outputs
    types = {c.name: c.type.name for c in model.metadata.signature.outputs.inputs}
    assert types["pred_revenue_median"] == "double"

    # the project's own training set (datetime64 as_of, labels as extra columns) predicts
    frame = pd.read_parquet(built_dir / "training_set.parquet")
    assert str(frame["as_of"].dtype).startswith("datetime64")
    scored = model.predict(frame)
    assert len(scored) == len(frame)
    assert list(scored.columns) == outputs
    assert set(scored["model_version"]) == {"1"}
    assert np.isfinite(scored["score"]).all()
    assert (scored["unseen_categories"] == "").all()

    # the same rows through the bundle directly: identical predictions
    bundle = model.unwrap_python_model().model
    direct = bundle.predict(frame)
    assert np.allclose(scored["pred_revenue"], direct["pred_revenue"])

    # the logged input example predicts; an unseen category is flagged, a missing column refused
    example = model.input_example
    assert len(example) == 5 and {"partner_id", "as_of", "tier"} <= set(example.columns)
    assert pd.to_datetime(example["as_of"]).notna().all()
    root = model_dir("models:/partnerscore/1")
    saved = json.loads((root / "input_example.json").read_text())
    numeric = saved["columns"].index("partners_market_alignment")
    assert all(isinstance(row[numeric], float | None) for row in saved["data"])
    assert len(model.predict(example)) == len(example)
    odd = frame.head(3).assign(region="Atlantis")
    assert (model.predict(odd)["unseen_categories"] == "region=Atlantis").all()
    # a tier the model knows in another case: read as it (the same score), noted, not unseen
    same = model.predict(frame.head(3).assign(tier="registered"))
    loud = model.predict(frame.head(3).assign(tier="REGISTERED"))
    assert (loud["unseen_categories"] == "").all()
    assert (loud["respelled_categories"] == "tier 'REGISTERED' -> 'registered'").all()
    np.testing.assert_array_equal(loud["score"], same["score"])
    with pytest.raises(MlflowException, match="tier"):
        model.predict(frame.drop(columns=["tier"]).head(3))


def test_logged_code_and_requirements(registry):
    root = model_dir("models:/partnerscore/1")
    code = root / "code" / "partnerscore"
    for path in (
        "__init__.py",
        "features/core.py",
        "models/scoring.py",
        "models/playbook.yaml",
        "training/train.py",
        "serving/api.py",
    ):
        assert (code / path).is_file(), path
    assert not list(code.rglob("__pycache__"))
    reqs = (root / "requirements.txt").read_text().split()
    assert reqs == pip_requirements()
    pinned = {r.split("==")[0] for r in reqs}
    assert {"lightgbm", "mlflow", "pandas", "pandera", "scikit-learn", "pyyaml", "scipy"} <= pinned


def test_mlflow_models_predict_cli(registry, built_dir, tmp_path):
    frame = pd.read_parquet(built_dir / "training_set.parquet").head(25)
    payload = json.loads(frame.to_json(orient="split", date_format="iso", index=False))
    payload.pop("index", None)
    (tmp_path / "input.json").write_text(json.dumps({"dataframe_split": payload}))
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry, "MLFLOW_REGISTRY_URI": registry}
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    done = subprocess.run(
        [
            str(mlflow_cli),
            "models",
            "predict",
            "-m",
            "models:/partnerscore/1",
            "-i",
            str(tmp_path / "input.json"),
            "-o",
            str(tmp_path / "out.json"),
            "--env-manager",
            "local",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "out.json").read_text())["predictions"]
    assert len(rows) == 25
    assert {r["model_version"] for r in rows} == {"1"}
    assert [r["partner_id"] for r in rows] == frame["partner_id"].tolist()
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


@pytest.mark.slow
def test_fresh_environment_from_logged_requirements(registry, built_dir, tmp_path):
    """A venv built only from the model's requirements.txt loads it and predicts."""
    root = model_dir("models:/partnerscore/1")
    uv = Path(sys.executable).with_name("uv")
    venv = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [str(uv), "pip", "install", "-q", "--python", str(python)]
    reqs = ["-r", str(root / "requirements.txt")]
    done = subprocess.run([*install, "--offline", *reqs], capture_output=True, text=True)
    if done.returncode != 0:  # not all in the local uv cache: fetch from PyPI
        done = subprocess.run([*install, *reqs], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    check = subprocess.run(
        [str(python), "-c", "import partnerscore"], capture_output=True, text=True
    )
    assert check.returncode != 0  # the project itself is not installed there
    script = (
        "import sys, mlflow, pandas as pd\n"
        "m = mlflow.pyfunc.load_model('models:/partnerscore/1')\n"
        "out = m.predict(pd.read_parquet(sys.argv[1]))\n"
        "import partnerscore\n"
        "print(len(out), out['model_version'].iloc[0], float(out['score'].sum()))\n"
        "print(partnerscore.__file__)\n"
    )
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry,
        "MLFLOW_REGISTRY_URI": registry,
        "PYTHONPATH": "",
    }
    training_set = built_dir / "training_set.parquet"
    done = subprocess.run(
        [str(python), "-c", script, str(training_set)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    count, version, total = done.stdout.splitlines()[0].split()
    frame = pd.read_parquet(training_set)
    assert int(count) == len(frame) and version == "1"
    local = mlflow.pyfunc.load_model("models:/partnerscore/1").predict(frame)
    assert float(total) == pytest.approx(float(local["score"].sum()), rel=1e-9)
    assert "/code/partnerscore/__init__.py" in done.stdout.splitlines()[1]


def test_loading_and_logging_a_model_leave_sys_path_as_it_was(
    registry, built_dir, tmp_path, monkeypatch
):
    """MLflow prepends a loaded model's ``code/`` folder to ``sys.path``: load_partner_model
    loads into a temporary folder it removes, and log_model checks the model it logs by
    loading it from one of MLflow's own; every load and every training run left one more
    entry naming a folder that no longer exists (here two loads and a log: three, first on
    the path)."""
    from partnerscore.models.pyfunc import load_partner_model, log_partner_model

    before = list(sys.path)
    for _ in range(2):
        model = load_partner_model("models:/partnerscore/1")
    assert sys.path == before
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    frame = pd.read_parquet(built_dir / "training_set.parquet")
    experiment = mlflow.MlflowClient(uri).create_experiment(
        "sys-path", (tmp_path / "artifacts").as_uri()
    )  # not the default ./mlruns of the working folder
    with mlflow.start_run(experiment_id=experiment):
        info = log_partner_model(model, None, frame)
    assert info.model_uri
    assert sys.path == before
