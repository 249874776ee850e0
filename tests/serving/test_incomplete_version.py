"""A version whose registration by ``train`` did not finish is loaded by no job.

``train`` registers a version tagged ``partnerscore.incomplete`` and removes the tag after its
``challenger`` alias; a registration cut short (the store lost, the process killed) leaves it.
``models`` named such a version and ``promote`` refused it, but ``score --model V`` (either
engine, and ``whatif``, ``monitor``, ``score --features``, the API's ``load_model``) loaded it silently
until 2026-12-06. Now each refuses it in one line (exit 2, nothing written), through the
direct SQLite read and through MLflow alike; once ``promote --force --reason`` accepted it
(tag ``promoted_incomplete``) it loads. Real SQLite stores (``first_version``'s v1, tagged by
hand).
"""

import json

import mlflow
import pandas as pd
import pytest
from support import assert_one_error, needs_java

from partnerscore.features.core import PartnerscoreError
from partnerscore.models.model_uri import INCOMPLETE_TAG
from partnerscore.serving.cli import main

AS_OF = "2026-03-01"
SAID = (
    "version 1 of 'partnerscore' is incomplete: the `train` that registered it did not finish "
    f"(tag {INCOMPLETE_TAG}); train again, or use another version (the champion); "
    "`promote --version 1 --force --reason` accepts it as it is"
)


@pytest.fixture()
def incomplete(first_version, tracking_uri, tmp_path):
    """v1 (alias ``challenger``, no champion) tagged as a cut-short registration leaves it;
    a config file whose data folder is the test's."""
    first_version("default", tracking_uri, tmp_path)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.set_model_version_tag("partnerscore", "1", INCOMPLETE_TAG, "true")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"paths": {"data_dir": str(tmp_path / "data")}}))
    return str(config)


def _commands(raw_dir, built_dir, tmp_path, model: str) -> dict[str, list[str]]:
    """Every command that loads ``--model``, its outputs under ``tmp_path / "out"``."""
    out = tmp_path / "out"
    partner = pd.read_csv(raw_dir / "partners.csv", dtype=str)["partner_id"].iloc[0]
    features = str(built_dir / "training_set.parquet")
    return {
        "score": ["score", "--raw", str(raw_dir), "--as-of", AS_OF, "--out", f"{out}/s.csv"],
        "score_spark": ["score", "--engine", "spark", "--raw", str(raw_dir), "--as-of", AS_OF]
        + ["--out", f"{out}/s.parquet"],
        "score_features": ["score", "--features", features, "--out", f"{out}/f.csv"],
        "whatif": ["whatif", "--raw", str(raw_dir), "--partner", partner, "--as-of", AS_OF]
        + ["--set", "trainings_certifications_todate=3", "--out", f"{out}/w.csv"],
        "monitor": ["monitor", "--raw", str(raw_dir), "--as-of", AS_OF, "--out", f"{out}/m"],
    }


@pytest.mark.parametrize("model", ["1", "challenger", "models:/partnerscore/1"])
def test_every_job_refuses_an_incomplete_version_in_one_line(
    model, incomplete, raw_dir, built_dir, tmp_path, capsys
):
    needs_java()  # the Spark engine refuses it before its session starts
    for name, argv in _commands(raw_dir, built_dir, tmp_path, model).items():
        code = main([*argv, "--model", model, "-c", incomplete])
        err = capsys.readouterr().err
        uri = model if model.startswith("models:/") else None
        line = assert_one_error(err, SAID, *([f"cannot load model '{uri}'"] if uri else []))
        assert code == 2, (name, line)
        assert not (tmp_path / "out").exists(), name  # nothing written
    assert not (tmp_path / "data" / "scores").exists()  # no history recorded


def test_the_loaders_refuse_it_through_mlflow_and_directly(incomplete, tracking_uri):
    """The direct SQLite read (the score job's) and MLflow's load (other stores, ``monitor``)
    refuse it alike; a URI with a query is read through MLflow."""
    from partnerscore.serving import api
    from partnerscore.serving.model_store import (
        load_scoring_model,
        load_through_mlflow,
        missing_model,
        unfinished_model,
    )

    through_mlflow = f"{tracking_uri}?timeout=20"
    for uri in ("models:/partnerscore/1", "models:/partnerscore@challenger"):
        for store in (tracking_uri, through_mlflow):
            assert unfinished_model(uri, store) == f"cannot load model '{uri}': {SAID}"
            for load in (load_scoring_model, load_through_mlflow):
                with pytest.raises(PartnerscoreError) as info:
                    load(uri, store)
                assert str(info.value) == f"cannot load model '{uri}': {SAID}"
        assert missing_model(uri, tracking_uri) == f"cannot load model '{uri}': {SAID}"
        assert missing_model(uri, through_mlflow) is None  # not certain: the load answers
    for model in ("1", 1, "challenger"):
        with pytest.raises(PartnerscoreError, match="version 1 of 'partnerscore' is incomplete"):
            api.load_model(model, tracking_uri=tracking_uri)
    # a run's URI, a missing version: not this rule's (the load says what it says)
    assert unfinished_model("runs:/abc/model", tracking_uri) is None
    assert unfinished_model("models:/partnerscore/7", tracking_uri) is None
    assert unfinished_model("models:/partnerscore/7", through_mlflow) is None


def test_a_version_promoted_with_force_and_reason_loads(
    incomplete, raw_dir, built_dir, tracking_uri, tmp_path, capsys
):
    from partnerscore.serving import api
    from partnerscore.serving.model_store import load_through_mlflow

    promote = ["promote", "--version", "1", "-c", incomplete]
    assert main(promote) == 2
    assert_one_error(capsys.readouterr().err, "version 1 of 'partnerscore' is incomplete:")
    assert main([*promote, "--force", "--reason", "checked by hand"]) == 0
    capsys.readouterr()
    tags = mlflow.MlflowClient(tracking_uri=tracking_uri).get_model_version("partnerscore", "1")
    assert tags.tags[INCOMPLETE_TAG] == "true" and tags.tags["promoted_incomplete"] == "true"
    assert main(["--json", "models", "-c", incomplete]) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert any("promoted all the same with --force --reason" in note for note in notes), notes
    commands = _commands(raw_dir, built_dir, tmp_path, "1")
    for model in ("1", "champion"):
        assert main([*commands["score"], "--model", model, "-c", incomplete]) == 0, model
        assert (tmp_path / "out" / "s.csv").exists()
    assert api.load_model("1", tracking_uri=tracking_uri).metadata["version"] == "1"
    model, version = load_through_mlflow("models:/partnerscore/1", f"{tracking_uri}?timeout=20")
    assert version == "1"


_KILLED_AFTER_THE_ALIAS = """
import os
import signal

from mlflow import MlflowClient

_set_alias = MlflowClient.set_registered_model_alias


def set_registered_model_alias(self, *args, **kwargs):
    _set_alias(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # the champion moved, its tags not yet written


MlflowClient.set_registered_model_alias = set_registered_model_alias
"""


def test_a_forced_promote_killed_after_the_alias_leaves_a_champion_that_loads(
    incomplete, raw_dir, built_dir, tracking_uri, tmp_path
):
    """``promote --force --reason`` tagged the version accepted after moving ``champion``: a
    promote killed between the two left a champion every job refused, and the next promote
    said "already champion" and tagged nothing. The acceptance is now written first."""
    import os
    import subprocess
    import sys

    from support import with_sitecustomize

    env = with_sitecustomize(
        {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        tmp_path / "hook",
        _KILLED_AFTER_THE_ALIAS,
    )
    done = subprocess.run(
        [sys.executable, "-m", "partnerscore.serving.cli", "promote", "--version", "1"]
        + ["--force", "--reason", "checked by hand", "-c", incomplete],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -9, done.stderr  # killed by the hook, after the alias
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    assert str(client.get_model_version_by_alias("partnerscore", "champion").version) == "1"
    argv = _commands(raw_dir, built_dir, tmp_path, "champion")["score"]
    assert main([*argv, "--model", "champion", "-c", incomplete]) == 0
