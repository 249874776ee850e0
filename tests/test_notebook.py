"""The data scientists' notebook runs top to bottom against a real store."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compare_models.ipynb"


def test_compare_models_notebook_executes(model_store, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", model_store.paths.tracking_uri())
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    table = next(o for o in nb.cells[2].outputs if o.get("output_type") == "execute_result")
    assert "champion" in table["data"]["text/plain"]
    printed = "".join(o.get("text", "") for o in nb.cells[4].outputs)
    assert "champion: [1]" in printed
