"""Fixtures for report tests: a scored program with hostile partner names and a history."""

import pandas as pd
import pytest

HOSTILE = {
    0: ("<script>alert(1)</script>", "../../etc/passwd"),
    1: ('"><img src=x onerror=alert(2)>', "P/1"),
    2: ("Ünïcödé & Søns — 株式会社 " + "x" * 300, "ID with spaces & <b>"),
    3: ('<svg onload="window.__pwned=1"></svg>', '"><script>window.__pwned=2</script>'),
}


@pytest.fixture(scope="session")
def scored_dir(raw_dir, model_store, tmp_path_factory):
    """Two scoring runs (history) of a copy of the program whose first partners are hostile."""
    import os

    from partnerscore.features.simulate import write_tables
    from partnerscore.features.validate import load_raw
    from partnerscore.serving.score import run_score

    root = tmp_path_factory.mktemp("scored")
    raw = load_raw(raw_dir, write_quarantine=False)
    tables = {name: frame.copy() for name, frame in raw.tables.items()}
    partners = tables["partners"]
    mapping = {}
    for row, (name, new_id) in HOSTILE.items():
        mapping[partners.loc[row, "partner_id"]] = new_id
        partners.loc[row, "partner_name"] = name
    for frame in tables.values():
        frame["partner_id"] = frame["partner_id"].replace(mapping)
    write_tables(tables, root / "raw", fmt="parquet")
    paths = model_store.paths.model_copy(update={"data_dir": str(root / "data")})
    cfg = model_store.model_copy(update={"paths": paths})
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        run_score(
            root / "raw", pd.Timestamp("2026-01-01").date(), "champion", root / "a.parquet", cfg
        )
        run_score(
            root / "raw", pd.Timestamp("2026-03-01").date(), "champion", root / "scores.csv", cfg
        )
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return root, cfg


@pytest.fixture(scope="session")
def report_dir(scored_dir):
    from partnerscore.serving.report import run_report

    root, cfg = scored_dir
    out = root / "reports"
    run_report(root / "scores.csv", out, cfg)
    return out


@pytest.fixture()
def cli_config(model_store, tmp_path):
    """A config file for CLI runs: data under ``tmp_path/data``, the session's model store.

    Returns the file and the environment for a CLI process of its own: without
    ``MLFLOW_TRACKING_URI``, so that the file's store is the one used.
    """
    from support import cli_config_in

    return cli_config_in(tmp_path, model_store)


@pytest.fixture()
def two_versions(store_config, tmp_path):
    """The session store's registry copied, with version 2 registered beside the champion.

    Version 2 is the champion's model registered again (artifact locations stay absolute).
    """
    import shutil

    from mlflow import MlflowClient

    mlflow_dir = tmp_path / "mlflow"
    mlflow_dir.mkdir()
    db = mlflow_dir / "mlflow.db"
    shutil.copy(store_config.paths.tracking_uri().removeprefix("sqlite:///"), db)
    tracking = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    first = client.get_model_version_by_alias("partnerscore", "champion")
    # its files' location (a models:/m-... source is looked up in MLflow's global store)
    files = client.get_model_version_download_uri("partnerscore", first.version)
    second = client.create_model_version("partnerscore", files, run_id=first.run_id)
    paths = store_config.paths.model_copy(update={"mlflow_dir": str(mlflow_dir)})
    cfg = store_config.model_copy(update={"paths": paths})
    assert cfg.paths.tracking_uri() == tracking
    return cfg, client, str(first.version), str(second.version)
