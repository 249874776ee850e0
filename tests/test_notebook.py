"""The data scientists' notebook runs top to bottom against a real store."""

from pathlib import Path

import mlflow
import nbformat
import pandas as pd
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compare_models.ipynb"


def outputs(cell, kind):
    return [o for o in cell.outputs if o.get("output_type") == kind]


def test_compare_models_notebook_executes(model_store, monkeypatch, tmp_path):
    # earlier tests' mlflow.set_tracking_uri calls can leave MLFLOW_TRACKING_URI set in this
    # process, and tracking_uri() prefers it: clear it to get the session store's own URI
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = model_store.paths.tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
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
    assert "saw_rows" in table and "True" in table  # v1 was refitted on this training set
    assert "NaN" not in table
    # the chart renders inline as a PNG
    images = [o for o in outputs(code[4], "display_data") if "image/png" in o["data"]]
    assert len(images) == 1
    printed = "".join(o.get("text", "") for o in outputs(code[4], "stream"))
    assert "champion: [1]" in printed
