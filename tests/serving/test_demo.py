"""`partnerscore demo` end to end on a small program (what `make demo` runs)."""

import mlflow

from partnerscore.serving.cli import main


def test_demo_end_to_end_and_rerun(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = tmp_path / "demo"
    args = ["demo", "--workdir", str(work), "--partners", "300", "--trials", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for step in ("simulate", "validate", "build", "train", "promote", "score", "report"):
        assert f"  {step}" in out
    assert "Reports:" in out and "mlflow ui --backend-store-uri sqlite:///" in out
    assert (work / "reports" / "index.html").exists()
    reports = list((work / "reports" / "partners").iterdir())
    assert len(reports) == 300
    assert len(list((work / "scores").glob("scores_*.parquet"))) == 4
    uri = f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert str(client.get_model_version_by_alias("partnerscore", "champion").version) == "1"
    # a second run trains version 2 and lets the gate decide, without failing
    assert main(args) == 0
    assert str(client.get_model_version_by_alias("partnerscore", "challenger").version) == "2"
    assert "promote" in capsys.readouterr().out
