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
from support import champion_store, reset_mlflow_uris  # noqa: E402

SIM_PARTNERS = 400
SIM_SEED = 11
_MLFLOW_URIS = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}

# The slowest test files (minutes of one worker on a fresh clone), collected first: `make
# test`'s workers take whole files in collection order (--dist loadfile
# --no-loadscope-reorder). xdist's default order, most tests first, put these files of 2-4
# slow tests (Spark jobs, notebooks) last, where one worker could run them alone while the
# others had nothing left. Longest first keeps them all busy to the end. Order only: every file
# still runs whole, in its own order, in one worker.
SLOW_FILES_FIRST = (  # seconds on the fresh clone of 2026-12-06 evening (3,474 s in all)
    "training/test_train_registry.py",  # 373
    "serving/test_spark_engine.py",  # 369
    "serving/test_team_stores.py",  # 367
    "serving/test_spark_swap_interrupt.py",  # 161
    "serving/test_score_workers.py",  # 155
    "serving/test_score_groups.py",  # 152
    "serving/test_api.py",  # 143
    "serving/test_spark_worker_death.py",  # 126
    "serving/test_monitor_interrupt.py",  # 118
    "serving/test_cli.py",  # 103
)


def pytest_collection_modifyitems(config, items):
    """Put the tests of :data:`SLOW_FILES_FIRST` first, in that order (a stable sort)."""
    root = config.rootpath / "tests"
    gone = [name for name in SLOW_FILES_FIRST if not (root / name).is_file()]
    if gone:  # a renamed or removed file: keep the list true
        raise pytest.UsageError(f"tests/conftest.py SLOW_FILES_FIRST: no file {', '.join(gone)}")
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}

    def key(item):
        try:
            name = item.path.relative_to(root).as_posix()
        except ValueError:
            return len(rank)
        return rank.get(name, len(rank))

    items.sort(key=key)


def _mlruns_entries(folder) -> set[str]:
    """What MLflow's default artifact root holds: experiment / kind / run or model folders."""
    root = folder / "mlruns"
    if not root.is_dir():
        return set()
    return {
        p.relative_to(root).as_posix() for depth in ("*", "*/*", "*/*/*") for p in root.glob(depth)
    }


@pytest.fixture(scope="session", autouse=True)
def _nothing_left_in_the_working_folders_mlruns():
    """No test writes MLflow artifacts into ``./mlruns`` of the working folder (MLflow's default
    artifact root for an experiment created without one): an experiment of a pyfunc test did,
    one logged model per run of the suite, found 2026-12-07. Checked as each worker's session
    ends; a folder that was there before keeps what it held."""
    from pathlib import Path

    folder = Path.cwd()
    before = _mlruns_entries(folder)
    yield
    new = sorted(_mlruns_entries(folder) - before)
    if new:
        pytest.fail(
            f"a test wrote MLflow artifacts into {folder / 'mlruns'}: {', '.join(new[:5])} (give "
            "its experiment an artifact location under tmp_path)",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _mlflow_uris_as_the_session_began():
    """Every test starts with the MLflow URI variables the session began with."""
    reset_mlflow_uris(_MLFLOW_URIS)


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
def prepared_training(built_dir):
    """The shared training set, its feature specs and its model matrix (``prepare``): (frame,
    specs, X). Do not mutate (copy first)."""
    import pandas as pd

    from partnerscore.features.registry import feature_specs
    from partnerscore.models.bundle import PartnerModel
    from partnerscore.models.heads import EngagementClassifier, RevenueRegressor

    frame = pd.read_parquet(built_dir / "training_set.parquet")
    specs = [s for s in feature_specs() if s.name in frame.columns]
    model = PartnerModel(
        revenue=RevenueRegressor(),
        engagement=EngagementClassifier(),
        feature_specs=specs,
        categories=PartnerModel.categories_from(frame, specs),
    )
    return frame, specs, model.prepare(frame)


@pytest.fixture(scope="session")
def model_store(built_dir, tmp_path_factory):
    """A session MLflow store holding one trained, promoted version (trials=0 for speed).

    Returns:
        An AppConfig whose paths point at the store and a history folder of its own.
    """
    return champion_store(built_dir, tmp_path_factory.mktemp("store"))


FIRST_VERSIONS = {
    "default": {},
    "no_refit": {"refit": False},
    "no_refit_holdout_10": {"refit": False, "holdout_share": 0.1},
    "segment_bias_20": {"segment_bias_min_partners": 20},
}
"""The first versions several training tests begin with: ``TrainConfig`` overrides of trials 0
and no plots (``train.plots: false``: no test reads a first version's plots)."""


@pytest.fixture(scope="session")
def first_version(built_dir, tmp_path_factory):
    """``first_version(name, tracking_uri, tmp_path)``: the store and result the training
    tests' first ``run_train(built_dir, TrainConfig(trials=0, plots=False, **FIRST_VERSIONS[name]),
    tracking_uri=tracking_uri, artifact_root=(tmp_path / "art").as_uri(), config_hash="cafe")``
    leaves (``tracking_uri``: the ``tracking_uri`` fixture's store in ``tmp_path``).

    Each is trained once for the session in a store of its own (the first time a test asks
    for it) and copied into the test's ``tmp_path`` (:func:`support.copy_store`: far cheaper
    than training), MLflow then pointed at the copy as ``run_train`` leaves it. The test goes
    on from there (promotes, trains its later versions) in its own copy.
    """
    import copy

    from support import copy_store

    from partnerscore.training.config import TrainConfig
    from partnerscore.training.tracking import setup_tracking
    from partnerscore.training.train import run_train

    trained = {}

    def restore(name: str, uri: str, tmp_path):
        assert uri == f"sqlite:///{tmp_path / 'mlflow.db'}"  # the tracking_uri fixture's store
        if name not in trained:
            root = tmp_path_factory.mktemp(name)
            result = run_train(
                built_dir,
                TrainConfig(trials=0, plots=False, **FIRST_VERSIONS[name]),
                tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                artifact_root=(root / "art").as_uri(),
                config_hash="cafe",
            )
            trained[name] = root, result
        root, result = trained[name]
        copy_store(root, tmp_path)
        setup_tracking(uri, TrainConfig().experiment, (tmp_path / "art").as_uri())
        return copy.deepcopy(result)

    return restore


@pytest.fixture(scope="session")
def early_store(raw_dir, tmp_path_factory):
    """A store of its own whose champion was trained on the program's data to 2025-08-31 only.

    ``build --data-end 2025-08-31`` (its ``training_data_end``: 2025-09-01), trials 0: a
    batch it scores after 2025-03-05 completes its 180-day horizon out of time, where every
    completed row of the session champion (trained on the whole program) is in-sample.

    Returns:
        An AppConfig whose paths point at the store and a history folder of its own.
    """
    from datetime import date

    from partnerscore.features.config import BuildConfig
    from partnerscore.features.pipeline import run_build

    root = tmp_path_factory.mktemp("early")
    run_build(raw_dir, root / "features", BuildConfig(data_end=date(2025, 8, 31)))
    return champion_store(root / "features", root)


@pytest.fixture()
def store_config(model_store, tmp_path, monkeypatch):
    """The session model store with a fresh score-history database for one test."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = model_store.paths.model_copy(update={"data_dir": str(tmp_path / "data")})
    return model_store.model_copy(update={"paths": paths})


# --- a real, throwaway PostgreSQL server (score-history tests) --------------------------------


def _postgres_bindir():
    """Folder of Debian's initdb/pg_ctl (``make services`` installs them), or None."""
    import glob
    import shutil
    from pathlib import Path

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class _PostgresInstance:
    """A PostgreSQL server on a free loopback port in a folder of its own (``info``: host,
    port, user), with ``stop(mode)`` and ``start()`` for tests of a server that goes away."""

    def __init__(self, bindir) -> None:
        import tempfile
        from pathlib import Path

        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="partnerscore-pg-"))
        self.as_user: list[str] = []
        self.data = self.root / "data"
        try:
            self._set_up()
        except BaseException:  # initdb or the start failed: its folder was left behind
            self.remove()
            raise

    def _set_up(self) -> None:
        import pwd
        import socket

        if os.geteuid() == 0:
            user = next(
                (u for u in ("postgres", "nobody") if _has_user(u)),
                None,
            )
            assert user, "no unprivileged user to run PostgreSQL as"
            entry = pwd.getpwnam(user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self.as_user = ["runuser", "-u", user, "--"]
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.options = (
            f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=40"
        )
        self.info = {"host": "127.0.0.1", "port": port, "user": "partnerscore"}
        initdb = (self.bindir / "initdb", "-D", self.data, "-U", "partnerscore", "--auth=trust")
        self._run(*initdb, "-E", "UTF8")
        self.start()

    def _run(self, *args) -> None:
        import subprocess

        done = subprocess.run([*self.as_user, *map(str, args)], capture_output=True, text=True)
        assert done.returncode == 0, f"{args[0]} failed: {done.stdout}{done.stderr}"

    def start(self) -> None:
        self._run(
            self.bindir / "pg_ctl",
            "-D",
            self.data,
            "-l",
            self.root / "server.log",
            "-w",
            "-t",
            "60",
            "-o",
            self.options,
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: its sessions told so; ``immediate``: none), waiting."""
        self._run(*self.stop_command(mode)[len(self.as_user) :])

    def stop_command(self, mode: str = "fast") -> list[str]:
        """The command :meth:`stop` runs (for a child process to stop the server itself)."""
        return [
            *self.as_user,
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-m",
            mode,
            "-w",
            "stop",
        ]

    def remove(self) -> None:
        import shutil
        import subprocess

        subprocess.run(
            [
                *self.as_user,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def _postgres_instance() -> _PostgresInstance:
    bindir = _postgres_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries not installed (make services installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return _PostgresInstance(bindir)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server on a free loopback port for this session, removed afterwards.

    Runs as the ``postgres`` user when the tests run as root (the server refuses root). Skips
    when the server binaries are missing, except under CI=true, where that is a failure.
    """
    instance = _postgres_instance()
    try:
        yield instance.info
    finally:
        instance.remove()


@pytest.fixture()
def own_postgres_server():
    """A PostgreSQL server of this test's own (``stop()``/``start()`` it), removed afterwards."""
    instance = _postgres_instance()
    try:
        yield instance
    finally:
        instance.remove()


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture()
def postgres_url(postgres_server):
    """A fresh, empty database on the session server: its ``postgresql+psycopg://`` URL."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    server = postgres_server
    admin = f"host={server['host']} port={server['port']} user={server['user']} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"postgresql+psycopg://{server['user']}@{server['host']}:{server['port']}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
