"""Tests do not inherit an earlier test's MLflow registry URI (support.reset_mlflow_uris)."""

import mlflow
from support import reset_mlflow_uris


def test_a_registry_uri_set_by_an_earlier_test_is_cleared(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'tracking.db'}")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'another.db'}")  # as a score job would
    reset_mlflow_uris({"MLFLOW_TRACKING_URI": None, "MLFLOW_REGISTRY_URI": None})
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mine.db'}")  # a test setting only this
    assert mlflow.get_registry_uri() == f"sqlite:///{tmp_path / 'mine.db'}"
