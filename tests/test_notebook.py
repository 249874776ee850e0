"""The data scientists' notebook runs top to bottom against a real store."""

from pathlib import Path

import mlflow
import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from partnerscore.training.metrics import evaluate
from partnerscore.training.train import HOLDOUT_PREDICTIONS_ARTIFACT

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compare_models.ipynb"


def outputs(cell, kind):
    return [o for o in cell.outputs if o.get("output_type") == kind]


def table_value(text: str, index: str, column: str) -> str:
    """One cell of a DataFrame's printed text (wrapped in blocks of columns or not).

    The last column of a block may hold spaces (its value is the rest of the line).
    """
    header: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if not words or words == ["version"] or words == ["\\"]:
            continue
        if words[0] == index:
            values = words[1:]
            if column in header:
                at = header.index(column)
                rest = values[at:] if at == len(header) - 1 else values[at : at + 1]
                return " ".join(w for w in rest if w != "\\")
        elif not words[0].isdigit():
            header = [w for w in words if w != "\\"]
    raise AssertionError(f"no {column} of {index} in:\n{text}")


def test_compare_models_notebook_executes(model_store, monkeypatch, tmp_path):
    # earlier tests' mlflow.set_tracking_uri calls can leave MLFLOW_TRACKING_URI set in this
    # process, and tracking_uri() prefers it: clear it to get the session store's own URI
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = model_store.paths.tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    # the kernel's temporary folder: the common holdout was downloaded into a tempfile.mkdtemp()
    # left behind (tmpXXXXXXXX/evaluation/holdout.parquet) at every run of the notebook
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    assert sorted(p.name for p in temp.iterdir()) == []
    code = [c for c in nb.cells if c.cell_type == "code"]
    store = "".join(o.get("text", "") for o in outputs(code[0], "stream"))
    assert model_store.paths.tracking_uri() in store
    table = outputs(code[1], "execute_result")[0]["data"]["text/plain"]
    assert "champion" in table
    assert "NaN" not in table and "None" not in table  # every holdout metric was found
    deltas = outputs(code[2], "execute_result")[0]["data"]["text/plain"]
    assert "revenue_gini" in deltas
    # every version scored on one common holdout: the newest run's stored holdout
    common = "".join(o.get("text", "") for o in outputs(code[3], "stream"))
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run_id = client.get_model_version("partnerscore", "1").run_id
    holdout = pd.read_parquet(
        client.download_artifacts(run_id, "evaluation/holdout.parquet", str(tmp_path))
    )
    assert f"common holdout: {len(holdout):,} snapshots" in common
    table = outputs(code[3], "execute_result")[0]["data"]["text/plain"]
    assert "NaN" not in table
    # v1 was refitted on this training set: the notebook scored the refitted model on rows it
    # saw (flagged saw_rows); as the promotion gate, it reads the run's pre-refit predictions
    assert table_value(table, "1", "predictions") == "pre-refit" and "saw_rows" not in table
    logged = pd.read_parquet(
        client.download_artifacts(run_id, HOLDOUT_PREDICTIONS_ARTIFACT, str(tmp_path))
    )
    keys = ["partner_id", "as_of"]
    pre_refit = holdout[keys].merge(logged, on=keys, how="left", validate="one_to_one")
    assert pre_refit["pred_revenue"].notna().all()
    honest = evaluate(holdout, pre_refit["pred_revenue"], pre_refit["pred_engagement"])
    assert float(table_value(table, "1", "primary")) == pytest.approx(
        honest["primary_score"], abs=1e-4
    )
    # the chart renders inline as a PNG
    images = [o for o in outputs(code[4], "display_data") if "image/png" in o["data"]]
    assert len(images) == 1
    printed = "".join(o.get("text", "") for o in outputs(code[4], "stream"))
    assert "champion: [1]" in printed


def _execute(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    return [c for c in nb.cells if c.cell_type == "code"]


def test_the_notebook_flags_other_labels_and_reads_a_version_whose_run_is_gone(
    raw_dir, first_version, tracking_uri, monkeypatch, tmp_path
):
    """v1 learnt 180-day labels, v2 90-day ones: the common holdout (v2's) ranked v1 on labels
    it never learnt without a word (the gate's line names them). Then v1's run is purged
    (``mlflow gc``): the notebook stopped at `client.get_run` with MlflowException."""
    from support import purge_run

    from partnerscore.features.config import BuildConfig
    from partnerscore.features.pipeline import run_build
    from partnerscore.training.config import TrainConfig
    from partnerscore.training.registry import RUN_GONE, run_promote
    from partnerscore.training.train import run_train

    monkeypatch.delenv("MPLBACKEND", raising=False)

    def train(features):
        return run_train(
            features,
            TrainConfig(trials=0),
            tracking_uri=tracking_uri,
            artifact_root=(tmp_path / "art").as_uri(),
            config_hash="cafe",
        )

    first = first_version("default", tracking_uri, tmp_path)  # train(built_dir), copied
    run_promote(TrainConfig(trials=0, max_portfolio_bias=10.0), tracking_uri=tracking_uri)
    short = tmp_path / "short"
    run_build(raw_dir, short, BuildConfig(horizon_days=90))
    train(short)
    code = _execute(tmp_path)
    printed = "".join(o.get("text", "") for o in outputs(code[3], "stream"))
    assert "v1 labels vs the common holdout's: horizon_days 180 vs 90" in printed
    table = outputs(code[3], "execute_result")[0]["data"]["text/plain"]
    assert table_value(table, "2", "labels") == "same"
    # v1's run deleted and purged: listed without metrics, read by its registered model
    purge_run(tracking_uri, first.run_id)
    code = _execute(tmp_path)
    printed = "".join(o.get("text", "") for o in outputs(code[1], "stream"))
    assert f"v1: training run {first.run_id} is not in the store" in printed
    printed = "".join(o.get("text", "") for o in outputs(code[3], "stream"))
    assert "v1 labels vs the common holdout's: unknown" in printed
    html = outputs(code[3], "execute_result")[0]["data"]["text/html"]
    assert RUN_GONE[:40] in html  # (pandas cuts a cell at 50 characters)
