"""The MLflow store setup, the whole-or-nothing registration and the logged plots."""

import os
import signal
import subprocess
import sys
import time
import warnings

import mlflow
import numpy as np
import pandas as pd
import pytest

from partnerscore.training import tracking

STARTS_TOGETHER = """
import sys, time
from pathlib import Path
from partnerscore.training.tracking import setup_tracking
Path(sys.argv[2] + ".ready").touch()
while not Path(sys.argv[3]).exists():
    time.sleep(0.002)
setup_tracking(sys.argv[1], "partnerscore", None)
"""


def test_jobs_reaching_a_new_sqlite_store_together_take_turns(tmp_path):
    # MLflow migrates a new SQLite database without a lock: of three jobs reaching it at once
    # two typically ended "unexpected CommandError: Online migration expected to match one
    # row ... in 'alembic_version'" (7 of 9 such jobs in three rounds)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    go = tmp_path / "go"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", STARTS_TOGETHER, uri, str(tmp_path / f"job{i}"), str(go)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"job{i}.ready").exists() for i in range(3)):
        assert time.monotonic() < deadline and all(j.poll() is None for j in jobs)
        time.sleep(0.01)
    go.touch()
    errors = [job.communicate(timeout=120)[1] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0, 0], errors
    experiments = mlflow.MlflowClient(tracking_uri=uri).search_experiments()
    assert [e.name for e in experiments if e.name == "partnerscore"] == ["partnerscore"]


KILLED_IN_MIGRATION = """
import os, signal, sys
import mlflow.store.db.utils as utils
from partnerscore.training.tracking import setup_tracking

def killed(engine):  # MLflow's migrations begin: the job dies there (SIGKILL, power cut)
    os.kill(os.getpid(), signal.SIGKILL)

utils._upgrade_db = killed
setup_tracking(sys.argv[1], "partnerscore", None)
"""


def test_a_job_killed_while_a_new_store_is_created_leaves_no_half_store(tmp_path):
    # MLflow created the file, then migrated it in place: a job killed meanwhile left a
    # half-built database, and every later command stopped with "unexpected
    # OperationalError: index index_params_run_uuid already exists"
    database = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{database}"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    job = subprocess.run(
        [sys.executable, "-c", KILLED_IN_MIGRATION, uri], env=env, capture_output=True, timeout=120
    )
    assert job.returncode == -signal.SIGKILL, job.stderr
    assert not database.exists()
    left = [p.name for p in database.parent.iterdir()]
    assert len(left) == 1 and left[0].startswith(".mlflow.db.partial-"), left
    setup = "import sys; from partnerscore.training.tracking import setup_tracking as s; "
    setup += "s(sys.argv[1], 'partnerscore', None)"
    again = subprocess.run([sys.executable, "-c", setup, uri], env=env, capture_output=True)
    assert again.returncode == 0, again.stderr  # the next job creates it whole
    assert [p.name for p in database.parent.iterdir() if p.is_file()] == ["mlflow.db"]
    names = [e.name for e in mlflow.MlflowClient(tracking_uri=uri).search_experiments()]
    assert "partnerscore" in names


CREATES_A_STORE = """
import resource, signal, sys
from partnerscore.features.core import PartnerscoreError
from partnerscore.training.tracking import setup_tracking

if len(sys.argv) > 2:  # files may grow to this many bytes only (a full disk, as SQLite sees it)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
try:
    setup_tracking(sys.argv[1], "partnerscore", None)
except PartnerscoreError as exc:
    print(exc)
    sys.exit(2)
"""


def create_store(uri: str, *limit: str) -> subprocess.CompletedProcess:
    """:data:`CREATES_A_STORE` run on ``uri`` in a child Python (``limit``: its file size cap)."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run(
        [sys.executable, "-c", CREATES_A_STORE, uri, *limit],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("case", ["folder_is_a_file", "disk_full"])
def test_a_store_that_cannot_be_created_is_one_line_and_leaves_nothing(tmp_path, case):
    # a store in a folder that cannot be made, or on a full disk, stopped train with
    # "unexpected FileExistsError" / "unexpected OperationalError: (sqlite3.OperationalError)
    # database or disk is full" (exit 70), and the full disk's half-built partial file stayed
    folder = tmp_path / "store"
    if case == "folder_is_a_file":
        folder.write_text("")
        database, limit = folder / "mlflow.db", []
    else:
        folder.mkdir()
        database, limit = folder / "mlflow.db", ["65536"]
    job = create_store(f"sqlite:///{database}", *limit)
    assert job.returncode == 2, job.stderr
    line = job.stdout.strip()
    assert line.startswith(f"MLflow store {database}: cannot create it: "), line
    assert "\n" not in line
    if case == "disk_full":
        assert list(folder.iterdir()) == []  # no store, no partial, no journal


def test_a_store_that_is_a_folder_is_one_line_at_once(tmp_path):
    # sqlite:///FOLDER: MLflow retried opening the folder as a database for over a minute
    # ("Operation will be retried in ... seconds"), then "unexpected OperationalError: unable
    # to open database file" (exit 70)
    job = create_store(f"sqlite:///{tmp_path}")
    assert job.returncode == 2, job.stderr
    assert job.stdout.strip() == (
        f"MLflow store {tmp_path}: is a folder, expected the database file "
        f"(sqlite:///{tmp_path / 'mlflow.db'})"
    )


def test_a_symlinked_new_store_is_created_at_the_link_target(tmp_path):
    # the store was built beside the link and renamed over it: the link became a plain file
    # and its target (a shared folder, say) was never created
    (tmp_path / "link").mkdir()
    target = tmp_path / "shared" / "mlflow.db"
    (tmp_path / "link" / "mlflow.db").symlink_to(target)
    uri = f"sqlite:///{tmp_path / 'link' / 'mlflow.db'}"
    job = create_store(uri)
    assert job.returncode == 0, job.stderr
    assert (tmp_path / "link" / "mlflow.db").is_symlink()
    assert target.is_file()
    assert [p.name for p in target.parent.iterdir()] == ["mlflow.db"]  # no partial left
    names = [e.name for e in mlflow.MlflowClient(tracking_uri=uri).search_experiments()]
    assert "partnerscore" in names


def test_a_store_link_loop_is_one_line(tmp_path):
    # Path.resolve raised "unexpected RuntimeError: Symlink loop from ..." (exit 70)
    (tmp_path / "a.db").symlink_to(tmp_path / "b.db")
    (tmp_path / "b.db").symlink_to(tmp_path / "a.db")
    job = create_store(f"sqlite:///{tmp_path / 'a.db'}")
    assert job.returncode == 2, job.stderr
    assert job.stdout.strip() == f"MLflow store {tmp_path / 'a.db'}: symbolic link loop"


@pytest.fixture
def ctrl_c():
    """Python's own Ctrl-C handler for the test: a pytest-xdist worker may hold another (a
    Spark session's, installed by an earlier test of the worker) or ignore SIGINT."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_signals_wait_for_the_end_of_a_deferred_block(ctrl_c):
    reached = []
    with pytest.raises(KeyboardInterrupt), tracking.signals_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # a handler would have run by now
        reached.append("end of block")
    assert reached == ["end of block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_signal_acts_at_once(ctrl_c):
    reached = []
    with pytest.raises(KeyboardInterrupt), tracking.signals_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        reached.append("after the first")
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        reached.append("after the second")
    assert reached == ["after the first"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_version_that_cannot_be_completed_is_deleted(tracking_uri, built_dir, tmp_path):
    """register_version: a version with its description, tags and alias, or none at all."""
    from partnerscore.training.train import CHALLENGER, register_version

    tracking.setup_tracking(tracking_uri, "partnerscore", None)
    with mlflow.start_run():
        mlflow.log_text("x", "x.txt")
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    version = register_version(info.model_uri, "m", "described", {"holdout_primary_score": "1"})
    done = client.get_model_version("m", version)
    assert done.description == "described" and done.tags == {"holdout_primary_score": "1"}
    assert str(client.get_model_version_by_alias("m", CHALLENGER).version) == version
    with pytest.raises(mlflow.exceptions.MlflowException):
        register_version(info.model_uri, "m", "described", {"bad/../key": "1"})
    assert [str(v.version) for v in client.search_model_versions("name='m'")] == [version]
    assert str(client.get_model_version_by_alias("m", CHALLENGER).version) == version


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        return model_input


def test_the_shap_summary_of_a_feature_missing_everywhere_warns_nothing(tmp_path):
    # a small holdout: a feature missing in every row made shap's beeswarm print numpy's
    # "RuntimeWarning: All-NaN slice encountered" twice on train's stderr
    X = pd.DataFrame({"seen": np.arange(20.0), "never": np.full(20, np.nan)})
    contrib = np.random.default_rng(0).normal(size=(20, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        tracking.plot_shap_summary(contrib, X, "summary", tmp_path / "shap.png")
    assert (tmp_path / "shap.png").stat().st_size > 0


def test_a_sqlite_store_named_by_the_environment_keeps_its_artifacts_beside_it(
    tmp_path, monkeypatch
):
    """MLFLOW_TRACKING_URI=sqlite:///... run from another folder: the experiment's artifacts
    went to that folder's ./data/mlflow/artifacts (paths.mlflow_dir is relative), where no
    other folder's job could load the models."""
    from partnerscore.serving.config import load_config

    store = tmp_path / "team"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path / "home")
    arguments = load_config().train_arguments()
    assert arguments["tracking_uri"] == uri
    tracking.setup_tracking(uri, "partnerscore", arguments["artifact_root"])
    location = mlflow.get_experiment_by_name("partnerscore").artifact_location
    assert location == f"{(store / 'artifacts').resolve().as_uri()}/partnerscore"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the default store: beside mlflow_dir still
    assert load_config().paths.artifact_root() == (
        (tmp_path / "home" / "data" / "mlflow" / "artifacts").resolve().as_uri()
    )


@pytest.mark.parametrize("code", ["ENOLCK", "EBADF"])
def test_a_store_folder_that_cannot_be_locked_is_one_line(
    code, built_dir, tmp_path, monkeypatch, capsys
):
    # flock refused by the file system (ENOLCK: NFS without a lock daemon) stopped train with
    # "unexpected OSError: [Errno 37] No locks available" (exit 70). The lock is an OS call:
    # it is made to fail here as such a file system fails it.
    import errno
    import fcntl

    from partnerscore.serving.cli import main

    def refuse(fd, operation):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    monkeypatch.setattr(fcntl, "flock", refuse)
    database = tmp_path / "store" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{database}")
    assert main(["train", "--features", str(built_dir), "--trials", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: MLflow store {database}: cannot lock its folder {database.parent}: "
        f"{os.strerror(getattr(errno, code))}"
        + (
            " (a file system without locks: put the store on a local disk, or use a server)"
            if code == "ENOLCK"
            else ""
        )
    ), err
    assert not database.exists()


def test_the_plots_say_nothing_when_home_cannot_hold_matplotlibs_folder(tmp_path):
    """A scheduler's HOME may be missing or read-only (HOME=/nonexistent): matplotlib then
    uses a temporary folder and said so in two WARNING lines on every train's stderr (advising
    MPLCONFIGDIR). HOME below a file: no one, root included, can create a folder there."""
    (tmp_path / "file").write_text("")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")
    }
    env["HOME"] = str(tmp_path / "file" / "home")
    script = (
        "import sys, pandas as pd\n"
        "from partnerscore.training.tracking import plot_importance\n"
        "plot_importance(pd.Series({'a': 2.0, 'b': 1.0}), 'gain', sys.argv[1])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "gain.png")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "gain.png").stat().st_size > 0
    assert done.stderr == ""
