"""`partnerscore demo` end to end on a small program (what `make demo` runs)."""

import json

import mlflow
import pandas as pd
import pytest

from partnerscore.features.core import check_listed, companion_manifest
from partnerscore.serving.cli import main
from partnerscore.serving.config import AppConfig
from partnerscore.serving.demo import demo_config, mlflow_command
from partnerscore.serving.history import ScoreHistory
from partnerscore.serving.score import rejects_path


def test_demo_config_keeps_everything_under_workdir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = AppConfig.model_validate(
        {"paths": {"history_url": "postgresql://team/db"}, "train": {"trials": 9}}
    )
    cfg = demo_config(tmp_path / "w", base, partners=300, trials=1)
    work = (tmp_path / "w").resolve()
    assert cfg.simulate.partners == 300 and cfg.train.trials == 1
    assert cfg.paths.tracking_uri() == f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"
    assert cfg.paths.artifact_root().startswith((work / "mlflow").as_uri())
    assert cfg.paths.history_database() == f"sqlite:///{work / 'scores' / 'history.sqlite'}"
    assert demo_config(tmp_path, base).train.trials == 9  # no override: the config's value


def test_demo_end_to_end_and_rerun(tmp_path, tracking_uri, capsys):
    work = tmp_path / "demo"
    # a `score --out scores.parquet` run before: its rejects and manifest are replaced too
    (work / "scores").mkdir(parents=True)
    for name in ("scores.parquet", "scores.rejects.csv"):
        (work / "scores" / name).write_text("another run's\n")
    (work / "scores" / "scores.manifest.json").write_text(
        json.dumps({"files": {"scores.rejects.csv": "0" * 64}})
    )
    args = ["demo", "--workdir", str(work), "--partners", "300", "--trials", "1"]
    assert main(args) == 0
    listed = check_listed(work / "scores" / "scores.manifest.json")  # one run's whole set
    assert set(listed["files"]) == {"scores.parquet", "scores.rejects.csv"}
    newest = sorted((work / "scores").glob("scores_*.parquet"))[-1]
    assert listed["rows"] == json.loads(companion_manifest(newest).read_text())["rows"]
    for copy, source in (
        (work / "scores" / "scores.parquet", newest),
        (rejects_path(work / "scores" / "scores.parquet"), rejects_path(newest)),
    ):
        assert copy.read_bytes() == source.read_bytes()
    out = capsys.readouterr().out
    for step in ("simulate", "validate", "build", "train", "promote", "score", "report"):
        assert f"  {step}" in out
    forecast = pd.read_csv(work / "scores" / "forecast.csv")
    latest = pd.read_parquet(work / "scores" / "scores.parquet")
    total = forecast[forecast["level"] == "total"].iloc[0]
    in_scope = latest[~latest["out_of_scope"].astype(bool)]
    assert total["expected_revenue"] == pytest.approx(in_scope["pred_revenue"].sum())
    assert f"from {len(in_scope):,} partners in onboarding scope" in out
    monthly = pd.read_csv(work / "scores" / "forecast_monthly.csv")
    months = monthly[monthly["level"] == "total"]
    assert months["expected_revenue"].sum() == pytest.approx(total["expected_revenue"])
    assert "by the month it is expected in: " in out and "forecast_monthly.csv" in out
    assert f"Reports:      {(work / 'reports' / 'index.html').resolve()}" in out
    assert f"MLflow store: {tracking_uri}  (from MLFLOW_TRACKING_URI)" in out
    assert f"mlflow ui --backend-store-uri {tracking_uri} --port 5000" in out
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in out
    assert {p.name for p in work.iterdir()} >= {"raw", "features", "scores", "reports"}
    reports = list((work / "reports" / "partners").iterdir())
    assert len(reports) == 300
    assert len(list((work / "scores").glob("scores_*.parquet"))) == 4
    history = ScoreHistory(f"sqlite:///{work / 'scores' / 'history.sqlite'}").read()
    assert history["as_of"].nunique() == 4  # trajectories for the reports
    index = (work / "reports" / "index.html").read_text(encoding="utf-8")
    assert '"format":"partnerscore-portfolio/1","rows":300,' in index  # the paged table
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    assert str(client.get_model_version_by_alias("partnerscore", "champion").version) == "1"
    # a second run (smaller program) trains version 2 and lets the gate decide, without failing
    args[args.index("300")] = "250"
    assert main(args) == 0
    aliases = {a: str(v) for a, v in client.get_registered_model("partnerscore").aliases.items()}
    # v2 is the challenger, or the champion with no challenger alias left on it
    assert aliases in ({"champion": "1", "challenger": "2"}, {"champion": "2"})
    out = capsys.readouterr().out
    assert "  promote" in out and "v2:" in out
    # a fresh program: its history restarts and reports of vanished partners are removed
    again = ScoreHistory(f"sqlite:///{work / 'scores' / 'history.sqlite'}").read()
    assert again["partner_id"].nunique() == 250
    assert len(list((work / "reports" / "partners").iterdir())) == 250


def test_the_mlflow_ui_hint_names_the_mlflow_beside_this_python(tmp_path):
    """`make demo` prints `.venv/bin/mlflow`; an installed package run elsewhere its real path.

    The hint was always `.venv/bin/mlflow ui`, which exists only in the repository's folder.
    """
    bin_dir = tmp_path / "env" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    assert mlflow_command(str(python), tmp_path) == "mlflow"  # none beside it: from PATH
    (bin_dir / "mlflow").write_text("#!/bin/sh\n")
    assert mlflow_command(str(python), tmp_path) == "env/bin/mlflow"
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    assert mlflow_command(str(python), elsewhere) == str(bin_dir / "mlflow")
