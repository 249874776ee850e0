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


@pytest.fixture(scope="session")
def built_dir(raw_dir, tmp_path_factory):
    """The shared program built into a training set (training_set.parquet, manifest, truth)."""
    from partnerscore.features.config import BuildConfig
    from partnerscore.features.pipeline import run_build

    out = tmp_path_factory.mktemp("features")
    run_build(raw_dir, out, BuildConfig())
    return out


@pytest.fixture(scope="session")
def model_store(built_dir, tmp_path_factory):
    """A session MLflow store holding one trained, promoted version (trials=0 for speed).

    Returns:
        An AppConfig whose paths point at the store and a history folder of its own.
    """
    from partnerscore.serving.config import AppConfig
    from partnerscore.training.registry import run_promote
    from partnerscore.training.train import run_train

    root = tmp_path_factory.mktemp("store")
    cfg = AppConfig.model_validate(
        {
            "paths": {"data_dir": str(root / "data"), "mlflow_dir": str(root / "mlflow")},
            "train": {"trials": 0},
        }
    )
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        run_train(
            built_dir,
            cfg.train,
            policy=cfg.policy,
            tracking_uri=cfg.paths.tracking_uri(),
            artifact_root=cfg.paths.artifact_root(),
            config_hash=cfg.hash(),
        )
        # forced: the fixture needs a champion whatever the (noisy, 80-partner) holdout bias
        run_promote(
            cfg.train, tracking_uri=cfg.paths.tracking_uri(), force=True, reason="test fixture"
        )
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return cfg


@pytest.fixture()
def store_config(model_store, tmp_path, monkeypatch):
    """The session model store with a fresh score-history database for one test."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = model_store.paths.model_copy(update={"data_dir": str(tmp_path / "data")})
    return model_store.model_copy(update={"paths": paths})
