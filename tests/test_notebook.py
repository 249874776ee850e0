"""The data scientists' notebook runs top to bottom against a real store."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compare_models.ipynb"


def outputs(cell, kind):
    return [o for o in cell.outputs if o.get("output_type") == kind]


def test_compare_models_notebook_executes(model_store, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", model_store.paths.tracking_uri())
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
    images = [o for o in outputs(code[3], "display_data") if "image/png" in o["data"]]
    assert len(images) == 1
    printed = "".join(o.get("text", "") for o in outputs(code[3], "stream"))
    assert "champion: [1]" in printed
