"""Session fixtures shared by every test package: a small seeded synthetic program on disk."""

from __future__ import annotations

import os

# Set before any library reads them: offline, quiet, no busy-waiting OpenMP threads.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import pytest  # noqa: E402

SIM_PARTNERS = 400
SIM_SEED = 11


@pytest.fixture(scope="session")
def sim_config():
    """Configuration of the shared small synthetic program."""
    from partnerscore.features.config import SimulateConfig

    return SimulateConfig(partners=SIM_PARTNERS, seed=SIM_SEED)


@pytest.fixture(scope="session")
def sim_tables(sim_config):
    """Every simulated table (contract tables plus ``truth``) as DataFrames. Do not mutate."""
    from partnerscore.features.simulate import simulate_program

    return simulate_program(sim_config)


@pytest.fixture(scope="session")
def raw_dir(sim_tables, tmp_path_factory):
    """A folder holding the shared synthetic program as CSV files, one per table."""
    from partnerscore.features.simulate import write_tables

    out = tmp_path_factory.mktemp("raw")
    write_tables(sim_tables, out, fmt="csv")
    return out


@pytest.fixture()
def tracking_uri(tmp_path, monkeypatch):
    """A fresh local SQLite MLflow store for one test (MLFLOW_TRACKING_URI points at it)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
