"""The stores a team runs: a real ``mlflow server`` over HTTP and a PostgreSQL backend store.

The rest of the suite uses SQLite stores only. Here the CLI trains, lists, promotes and scores
on a tracking server (artifacts proxied as ``mlflow-artifacts:``; its backend SQLite or
PostgreSQL) and on PostgreSQL without a server, with the same predictions as on the session's SQLite store; stores that are down or refuse are one
line naming the store (password masked), exit 69 (unavailable) or 2 (refused), MLflow's own
connections to a PostgreSQL store included; and a server killed (a database server stopped) in
the middle of ``train``'s registration leaves no version holding ``challenger``, nor one that
``promote`` takes without ``--force --reason``.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from support import assert_one_error, with_sitecustomize

from partnerscore.serving.cli import main

AS_OF = "2026-01-01"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_mlflow_server(root: Path, backend: str | None = None) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` (the venv's) on a free port: artifacts in ``root``, its backend store
    ``backend`` (default: a SQLite file in ``root``).

    Its own process group (the server starts uvicorn workers), no job workers. Returns once
    ``/health`` answers.
    """
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        backend or f"sqlite:///{root / 'backend.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = open(root / "server.log", "wb")  # noqa: SIM115 - the server's, closed with it
    server = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/health", timeout=2) as answer,
        ):
            if answer.status == 200:
                return server, url
        if server.poll() is not None or time.monotonic() > deadline:
            _stop(server)
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()}")
        time.sleep(0.2)


def _stop(server: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server for the session: its URL."""
    server, url = _start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield url
    finally:
        _stop(server)


@pytest.fixture(scope="session")
def mlflow_server_on_postgresql(postgres_server, tmp_path_factory):
    """A real MLflow tracking server whose backend store is a database on the session's
    PostgreSQL server (as a team runs it): its URL."""
    import psycopg

    info = postgres_server
    admin = f"host={info['host']} port={info['port']} user={info['user']} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE mlflow_server")
    backend = f"postgresql+psycopg://{info['user']}@{info['host']}:{info['port']}/mlflow_server"
    server, url = _start_mlflow_server(tmp_path_factory.mktemp("mlflow-server-pg"), backend)
    try:
        yield url
    finally:
        _stop(server)


@pytest.fixture(params=["server", "postgresql", "server-on-postgresql"])
def team_store(request):
    """The tracking URI of a team's store: the session's server (SQLite backend), a fresh
    PostgreSQL database, or the session's server with a PostgreSQL backend."""
    if request.param == "server":
        return request.getfixturevalue("mlflow_server")
    if request.param == "server-on-postgresql":
        return request.getfixturevalue("mlflow_server_on_postgresql")
    return request.getfixturevalue("postgres_url")


def _config(tmp_path: Path, name: str, **paths) -> str:
    path = tmp_path / f"{name}.json"
    settings = {"data_dir": str(tmp_path / name), "mlflow_dir": str(tmp_path / name / "mlflow")}
    train = {"trials": 0, "plots": False}
    path.write_text(json.dumps({"paths": {**settings, **paths}, "train": train}))
    return str(path)


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)  # stdout is the one JSON object, nothing more


@pytest.fixture(scope="module")
def session_store_scored(built_dir, raw_dir, model_store, tmp_path_factory):
    """What every team store's champion must give: the session SQLite store's champion's
    ``score`` file and its scores of the training set's first 200 rows (computed once)."""
    from partnerscore.models.scoring import score_features
    from partnerscore.serving.api import load_model

    root = tmp_path_factory.mktemp("session-store-scored")
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        local = _config(root, "local", mlflow_dir=model_store.paths.mlflow_dir)
        out = root / "local.csv"
        score = ["score", "--raw", str(raw_dir), "--as-of", AS_OF, "--model", "champion"]
        assert main([*score, "--out", str(out), "-c", local]) == 0
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    frame = pd.read_parquet(built_dir / "training_set.parquet").head(200)
    ours = load_model("champion", tracking_uri=model_store.paths.tracking_uri())
    return pd.read_csv(out), frame, score_features(ours, frame)


def test_train_models_promote_score_on_a_team_store(
    team_store, session_store_scored, built_dir, raw_dir, tmp_path, monkeypatch, capsys
):
    """The whole registry cycle on a server (HTTP, proxied artifacts; its backend SQLite or
    PostgreSQL) and on PostgreSQL without a server.

    On the server, MLflow printed its run links ("View run ... at: http://...") on stdout,
    before ``train --json``'s object. Scores equal the session SQLite store's (same data,
    same settings, trained the same way).
    """
    from partnerscore.models.scoring import score_features
    from partnerscore.serving.api import load_model

    config = _config(tmp_path, "team")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_store)
    assert main(["--json", "train", "--features", str(built_dir), "-c", config]) == 0
    trained = _json(capsys)
    assert trained["version"] == "1" and trained["model_uri"] == "models:/partnerscore/1"

    assert main(["--json", "models", "-c", config]) == 0
    (listed,) = _json(capsys)["versions"]
    assert listed["version"] == 1 and listed["aliases"] == "challenger"
    assert listed["run_id"] == trained["run_id"]
    assert listed["primary"] == pytest.approx(trained["metrics"]["primary_score"])
    assert main(["models", "-c", config]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row[:2] == ["1", "challenger"] and trained["run_id"][:8] in row

    assert main(["promote", "--force", "--reason", "team store test", "-c", config]) == 0
    assert capsys.readouterr().out.startswith("promoted v1 to champion")
    assert main(["--json", "models", "-c", config]) == 0
    assert _json(capsys)["versions"][0]["aliases"] == "champion"

    team_scores = tmp_path / "team.csv"
    score = ["score", "--raw", str(raw_dir), "--as-of", AS_OF, "--model", "champion"]
    assert main([*score, "--out", str(team_scores), "-c", config]) == 0
    capsys.readouterr()
    local_scores, frame, ours = session_store_scored
    pd.testing.assert_frame_equal(pd.read_csv(team_scores), local_scores)

    theirs = load_model("champion", tracking_uri=team_store)
    assert theirs.metadata["version"] == "1"
    pd.testing.assert_frame_equal(score_features(theirs, frame), ours)

    if team_store.startswith("postgresql"):
        # without a server the version's files stay where train wrote them (paths.mlflow_dir):
        # another machine (here: the folder moved) read "No such artifact: ''"
        artifacts = tmp_path / "team" / "mlflow" / "artifacts"
        artifacts.rename(tmp_path / "elsewhere")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", team_store)
        assert main([*score, "--out", str(tmp_path / "again.csv"), "-c", config]) == 2
        err = capsys.readouterr().err
        assert_one_error(err, "version 1's files are not on this machine:", str(artifacts))


# --- stores that are down or refuse ---------------------------------------------------------


def _console(args: list[str], env: dict, timeout: int = 120) -> subprocess.CompletedProcess:
    """The console script in a process of its own (its logging set up as a user's is)."""
    return subprocess.run(
        [sys.executable, "-m", "partnerscore.serving.console", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,  # MLflow's own retries took over 5 minutes
    )


def _env(**variables) -> dict:
    env = {**os.environ, **variables}
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        env.pop(name, None)  # the CLI's own bounds
    return env


HTTP, POSTGRESQL = "http://someone:secret@", "postgresql+psycopg://someone:secret@"


@pytest.mark.parametrize(
    ("scheme", "command"),
    [(HTTP, "models"), (POSTGRESQL, "models"), (POSTGRESQL, "train"), (HTTP, "score")],
)
def test_a_store_that_is_down_is_one_line_exit_69(scheme, command, tmp_path, built_dir, raw_dir):
    """Nothing listens on the port: MLflow's clients retried for minutes (the server with
    urllib3 "Retrying" lines for over 5, PostgreSQL 1 min 45 s of "Operation will be retried",
    then "unexpected OperationalError", exit 70). ``train`` asks the store where it sets up
    its experiment, the readers where they check the registry: both schemes go through both.
    """
    uri = f"{scheme}127.0.0.1:{_free_port()}" + ("/mlflow" if "postgresql" in scheme else "")
    args = {
        "models": ["models"],
        "train": ["train", "--features", str(built_dir)],
        "score": ["score", "--raw", str(raw_dir), "--as-of", AS_OF, "--out", "x.csv"],
    }[command]
    done = _console([*args, "-c", _config(tmp_path, "c")], _env(MLFLOW_TRACKING_URI=uri))
    assert done.returncode == 69, done.stderr
    shown = uri.replace("secret", "***")
    line = assert_one_error(done.stderr, f"MLflow store {shown}: cannot reach it:")
    assert "refused" in line.lower() and "secret" not in done.stderr
    assert done.stderr.count("\n") == 1  # no urllib3 "Retrying", no MLflow warnings
    assert done.stdout == ""


@pytest.mark.parametrize("what", ["database", "role"])
def test_a_database_store_that_refuses_is_one_line_exit_2(
    what, postgres_server, tmp_path, monkeypatch, capsys
):
    """The server answers and refuses: a configuration to fix, not a service to wait for."""
    server = postgres_server
    user, database = ("nobody_here", "postgres") if what == "role" else (server["user"], "nodb")
    uri = f"postgresql+psycopg://{user}:pw@{server['host']}:{server['port']}/{database}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["models", "-c", _config(tmp_path, "c")]) == 2
    shown = uri.replace(":pw@", ":***@")
    assert_one_error(capsys.readouterr().err, f"MLflow store {shown}: refused:", "does not exist")


class _Answering(http.server.BaseHTTPRequestHandler):
    """A web server that is no MLflow server (or one behind an authenticating proxy)."""

    status = 404

    def do_GET(self):  # noqa: N802 - http.server's name
        status = int(self.path.split("/")[1]) if self.path.split("/")[1].isdigit() else 404
        body = b"<html>no MLflow here</html>"
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def web_server():
    """A real HTTP server in a thread; ``/<status>/...`` answers every request with <status>."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "code", "said"),
    [
        (401, 2, "refused: HTTP 401 Unauthorized (set MLFLOW_TRACKING_USERNAME"),
        (403, 2, "refused: HTTP 403 Forbidden"),
        (404, 2, "not an MLflow tracking server (HTTP 404 Not Found"),
        (200, 2, "not an MLflow tracking server (an answer that is not MLflow's JSON"),
        (503, 69, "cannot reach it: HTTP 503"),
    ],
)
def test_a_url_that_refuses_or_is_no_mlflow_server(
    status, code, said, web_server, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")  # 503: retried at once
    uri = f"{web_server}/{status}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["models", "-c", _config(tmp_path, "c")]) == code
    assert_one_error(capsys.readouterr().err, f"MLflow store {uri}: {said}")


# --- the score history and the decision ledger: the same rule ---------------------------------


def test_an_unreachable_history_database_is_exit_69(store_config, raw_dir, tmp_path, capsys):
    """It was exit 2, as bad input; a refusing one stays 2 (tests/serving/test_history.py)."""
    url = f"postgresql://someone:secret@127.0.0.1:{_free_port()}/history"
    config = _config(tmp_path, "c", mlflow_dir=store_config.paths.mlflow_dir, history_url=url)
    score = ["score", "--raw", str(raw_dir), "--as-of", AS_OF, "--out", str(tmp_path / "s.csv")]
    assert main([*score, "-c", config]) == 69
    line = assert_one_error(capsys.readouterr().err, "postgresql://someone:***@127.0.0.1:")
    assert line.startswith(("error: score history ", "error: decision ledger "))
    assert "Connection refused" in line and "secret" not in line


@contextlib.contextmanager
def _silent_server(give_up: float = 20.0):
    """A TCP server on loopback that accepts connections and never says a word.

    A host behind a firewall that drops packets, or a server that hangs: PostgreSQL's client
    waits for the server's first message, psycopg 130 s per attempt without a connect
    timeout. Accepted connections are closed after ``give_up`` seconds so that a job without
    a bounded wait ends anyway ("server closed the connection unexpectedly"). Yields the port
    and the list of connections accepted (one per connection attempt).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)
    accepted: list[tuple[socket.socket, float]] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            for conn, at in list(accepted):
                if conn.fileno() != -1 and time.monotonic() - at > give_up:
                    conn.close()
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append((conn, time.monotonic()))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join()
        for conn, _ in accepted:
            conn.close()
        listener.close()


@pytest.mark.parametrize("store", ["MLflow store", "score history", "decision ledger"])
def test_a_database_that_never_answers_is_one_line_exit_69_after_the_same_retry(
    store, store_config, raw_dir, tmp_path, monkeypatch, capsys
):
    """A server that accepts the connection and never answers: the MLflow store's probe gave
    up after its connect timeout and retried twice; the history and the ledger had neither
    (psycopg's own 130 s per attempt, here the silent server's 20 s: "server closed the
    connection unexpectedly", one attempt). All three: the same timeout (made small here),
    three attempts, one line, exit 69."""
    from partnerscore.models import stores
    from partnerscore.serving.ledger import DecisionLedger

    monkeypatch.setattr(stores, "CONNECT_TIMEOUT_SECONDS", 2)  # psycopg's least
    monkeypatch.setattr(stores, "PROBE_RETRY_SECONDS", (0.1, 0.2))
    with _silent_server() as (port, accepted):
        url = f"postgresql+psycopg://someone:secret@127.0.0.1:{port}/db"
        shown = url.replace("secret", "***")
        if store == "MLflow store":
            monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
            assert main(["models", "-c", _config(tmp_path, "c")]) == 69
            line = assert_one_error(capsys.readouterr().err, f"{store} {shown}: cannot reach it:")
        elif store == "score history":
            config = _config(
                tmp_path, "c", mlflow_dir=store_config.paths.mlflow_dir, history_url=url
            )
            out = tmp_path / "s.csv"
            score = ["score", "--raw", str(raw_dir), "--as-of", AS_OF, "--out", str(out)]
            assert main([*score, "-c", config]) == 69
            line = assert_one_error(capsys.readouterr().err, f"{store} {shown}:")
            assert not out.exists()
        else:
            from partnerscore.features.core import ServiceUnavailable

            with pytest.raises(ServiceUnavailable) as err:
                _ = DecisionLedger(url).engine
            line = str(err.value)
            assert line.startswith(f"{store} {shown}:") and "\n" not in line
        attempts = len(accepted)
    assert "connection timeout expired" in line and "secret" not in line
    if store == "score history":  # the job's reader process tries too, meanwhile (then stopped)
        assert attempts >= 3
    else:
        assert attempts == 3


@contextlib.contextmanager
def _forwarder(to_port: int, give_up: float = 20.0):
    """A TCP forwarder on loopback to ``to_port`` (a real PostgreSQL server) that can lose it.

    ``lose()`` drops every forwarded connection (the server's host gone, or failed over) and
    from then on accepts connections and never says a word, as :func:`_silent_server` does
    (a host that does not answer). Yields its port, ``lose`` and the list of connections
    accepted since (one per connection attempt).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)
    forwarded: list[socket.socket] = []
    silent: list[tuple[socket.socket, float]] = []
    lost, stop = threading.Event(), threading.Event()

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        while not stop.is_set():
            for conn, at in list(silent):
                if conn.fileno() != -1 and time.monotonic() - at > give_up:
                    conn.close()
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if lost.is_set():
                silent.append((conn, time.monotonic()))
                continue
            upstream = socket.create_connection(("127.0.0.1", to_port))
            forwarded.extend([conn, upstream])
            for ends in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=pump, args=ends, daemon=True).start()

    def lose() -> None:
        lost.set()
        for end in forwarded:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], lose, silent
    finally:
        stop.set()
        thread.join()
        for end in [*forwarded, *(conn for conn, _ in silent)]:
            end.close()
        listener.close()


def test_mlflow_s_own_connections_to_a_database_store_get_the_connect_timeout(
    postgres_url, monkeypatch
):
    """MLflow's engine for a ``postgresql://`` store had no connect timeout: once the store's
    host stopped answering mid-job, each new connection waited psycopg's 130 s (here the
    silent host's 20 s, then "server closed the connection unexpectedly"), and each of the
    10 tries MLflow makes at creating an engine as long. Now the store's own
    ``CONNECT_TIMEOUT_SECONDS`` (made small here), one connection attempt."""
    import sqlalchemy as sa
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from partnerscore.features.core import ServiceUnavailable
    from partnerscore.models import stores

    monkeypatch.setattr(stores, "CONNECT_TIMEOUT_SECONDS", 2)  # psycopg's least
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    database = sa.engine.make_url(postgres_url)
    with _forwarder(database.port) as (port, lose, silent):
        uri = database.set(port=port).render_as_string(hide_password=False)
        stores.reach_tracking_store(uri)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        assert client.search_registered_models() == []  # MLflow's engine, connected
        lose()
        with pytest.raises(MlflowException) as err:
            client.search_registered_models()
        attempts = len(silent)
    failure = stores.store_failure(err.value, uri)
    assert isinstance(failure, ServiceUnavailable)
    assert failure.message == f"MLflow store {uri}: cannot reach it: connection timeout expired"
    assert attempts == 1, attempts  # one attempt, ended by the timeout (the message says so)


# --- a server that goes away in the middle of train ------------------------------------------

_KILL_FIRST = """
import json, os, signal, socket, subprocess, time

import mlflow
from mlflow.tracking.client import MlflowClient


def _kill_the_server():
    if "TEST_STOP_COMMAND" in os.environ:  # a database server: pg_ctl stop
        subprocess.run(json.loads(os.environ["TEST_STOP_COMMAND"]), check=True)
        return
    os.killpg(int(os.environ["TEST_SERVER_GROUP"]), signal.SIGKILL)
    port, deadline = int(os.environ["TEST_SERVER_PORT"]), time.monotonic() + 30
    while time.monotonic() < deadline:  # until its port refuses: gone, not going
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return
        time.sleep(0.05)


def _first_killing(function):
    def killing(*args, **kwargs):
        _kill_the_server()
        return function(*args, **kwargs)

    return killing


if os.environ["TEST_KILL_BEFORE"] == "register_model":
    mlflow.register_model = _first_killing(mlflow.register_model)
else:
    MlflowClient.set_registered_model_alias = _first_killing(
        MlflowClient.set_registered_model_alias
    )
"""


@pytest.mark.parametrize("before", ["register_model", "alias"])
def test_a_server_killed_during_train_leaves_no_challenger(before, built_dir, tmp_path):
    """The server dies after the run was logged, before its version is registered or before
    its alias is set (a deterministic hook in the child: SIGKILL, then wait until its port
    refuses). ``train`` ends with one line, exit 69, and no version holds ``challenger``; a
    version registered without it is named in the line."""
    server, url = _start_mlflow_server(tmp_path / "server")
    try:
        env = _env(
            MLFLOW_TRACKING_URI=url,
            MLFLOW_LOGGING_LEVEL="WARNING",  # read when the hook imports MLflow
            TEST_SERVER_GROUP=str(server.pid),
            TEST_SERVER_PORT=url.rsplit(":", 1)[1],
            TEST_KILL_BEFORE=before,
        )
        env = with_sitecustomize(env, tmp_path / "hook", _KILL_FIRST)
        config = _config(tmp_path, "c")
        done = _console(["train", "--features", str(built_dir), "-c", config], env)
    finally:
        _stop(server)
    assert done.returncode == 69, done.stderr
    line = assert_one_error(done.stderr, f"MLflow store {url}: cannot reach it:")
    with contextlib.closing(sqlite3.connect(tmp_path / "server" / "backend.db")) as db:
        aliases = db.execute("SELECT alias, version FROM registered_model_aliases").fetchall()
        versions = db.execute("SELECT version FROM model_versions").fetchall()
    assert aliases == []
    if before == "register_model":
        assert versions == [] and "left without" not in line
    else:  # written before the alias, and the store was gone when train deleted it again
        assert versions == [(1,)]
        assert "version 1 of 'partnerscore' was left without its 'challenger' alias" in line


@pytest.mark.parametrize("before", ["register_model", "alias"])
def test_a_database_store_stopped_during_train_leaves_no_challenger(
    before, own_postgres_server, built_dir, raw_dir, tmp_path, monkeypatch, capsys
):
    """The same on a PostgreSQL store without a server (``postgresql://``): the database
    server stops (``pg_ctl stop -m fast``) after the run was logged, before the version is
    registered or before its alias is set. One line, exit 69, no version holding
    ``challenger``. Once the server is back, the version left without its alias is named by
    ``models`` and refused by ``promote --version`` (it was promoted like any other) and by
    ``score --model`` (it was scored silently) unless promoted with ``--force --reason``."""
    import psycopg

    server = own_postgres_server
    info = server.info
    admin = f"host={info['host']} port={info['port']} user={info['user']} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE mlflow")
    url = f"postgresql://{info['user']}@{info['host']}:{info['port']}/mlflow"
    env = _env(
        MLFLOW_TRACKING_URI=url,
        MLFLOW_LOGGING_LEVEL="WARNING",
        TEST_STOP_COMMAND=json.dumps(server.stop_command("fast")),
        TEST_KILL_BEFORE=before,
    )
    env = with_sitecustomize(env, tmp_path / "hook", _KILL_FIRST)
    config = _config(tmp_path, "c")
    # MLflow's 10 tries at creating its engine (101 s of waits) would pass _console's timeout
    done = _console(["train", "--features", str(built_dir), "-c", config], env)
    assert done.returncode == 69, done.stderr
    line = assert_one_error(done.stderr, f"MLflow store {url}: cannot reach it:")
    server.start()
    with psycopg.connect(admin.replace("dbname=postgres", "dbname=mlflow")) as conn:
        aliases = conn.execute("SELECT alias, version FROM registered_model_aliases").fetchall()
        versions = conn.execute("SELECT version FROM model_versions").fetchall()
    assert aliases == []
    if before == "register_model":
        assert versions == [] and "left without" not in line
        return
    assert versions == [(1,)]
    assert "version 1 of 'partnerscore' was left without its 'challenger' alias" in line

    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    assert main(["--json", "models", "-c", config]) == 0
    listed = _json(capsys)
    assert [v["aliases"] for v in listed["versions"]] == ["-"]
    assert any(
        note.startswith("v1: its registration by `train` did not finish")
        for note in listed["notes"]
    )
    promote = ["promote", "--version", "1", "-c", config]
    assert main(promote) == 2
    assert_one_error(capsys.readouterr().err, "version 1 of 'partnerscore' is incomplete:")
    # nor is it scored (it was, silently, until 2026-12-06): its tags read through MLflow
    out = tmp_path / "scored" / "scores.csv"
    score = ["score", "--raw", str(raw_dir), "--as-of", AS_OF, "--model", "1", "-c", config]
    assert main([*score, "--out", str(out)]) == 2
    assert_one_error(capsys.readouterr().err, "version 1 of 'partnerscore' is incomplete:")
    assert not out.parent.exists()
    assert main([*promote, "--force", "--reason", "checked by hand"]) == 0
    assert capsys.readouterr().out.startswith("promoted v1 to champion")
    assert main([*score, "--out", str(out)]) == 0 and out.exists()  # accepted: it loads


def _lose(server: subprocess.Popen, url: str) -> None:
    """SIGKILL the server's process group, then wait until its port refuses (gone, not going)."""
    os.killpg(server.pid, signal.SIGKILL)
    port, deadline = int(url.rsplit(":", 1)[1]), time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return
        time.sleep(0.05)


@pytest.mark.parametrize("job", ["train", "load_model"])
def test_the_api_says_a_server_lost_mid_job_in_one_line(job, built_dir, tmp_path, monkeypatch):
    """The server answers the job's first question, then dies (a hook right after it).

    ``train()`` raised MLflow's own multi-line MlflowException ("API request to ... failed
    with exception HTTPConnectionPool(...)"), ``load_model()`` "cannot load model ...", exit
    code 2 as for bad input: now ServiceUnavailable, exit code 69, one line.
    """
    from partnerscore.features.core import PartnerscoreError
    from partnerscore.serving import api, model_store
    from partnerscore.training import tracking

    server, url = _start_mlflow_server(tmp_path / "server")
    try:
        if job == "train":
            reached = tracking.reach_tracking_store

            def reached_then_lost(uri):
                reached(uri)
                _lose(server, url)

            monkeypatch.setattr(tracking, "reach_tracking_store", reached_then_lost)
            with pytest.raises(PartnerscoreError) as err:
                api.train(str(built_dir), tracking_uri=url, trials=0)
        else:
            located = model_store.locate_model

            def lost_then_located(uri, tracking_uri):
                _lose(server, url)
                return located(uri, tracking_uri)

            monkeypatch.setattr(model_store, "locate_model", lost_then_located)
            with pytest.raises(PartnerscoreError) as err:
                api.load_model("champion", tracking_uri=url)
    finally:
        _stop(server)
    assert err.value.exit_code == 69, str(err.value)
    assert str(err.value).startswith(f"MLflow store {url}: cannot reach it: ")
    assert "\n" not in str(err.value)


# --- a history server stopped in the middle of score's write ---------------------------------


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_history_server_stopped_mid_write_publishes_nothing(
    mode, own_postgres_server, store_config, raw_dir, tmp_path, monkeypatch, capsys
):
    """The server stops (``pg_ctl stop -m fast``: its sessions told; ``immediate``: not)
    right after ``score`` has written its rows into the history, before the commit (a hook on
    the write). One line, exit 69; no scores file, no rejects file, nothing staged beside
    them, and once the server is back neither the history nor the ledger holds a row."""
    import psycopg

    from partnerscore.serving.history import ScoreHistory

    server = own_postgres_server
    info = server.info
    admin = f"host={info['host']} port={info['port']} user={info['user']} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE history")
    url = f"postgresql+psycopg://{info['user']}@{info['host']}:{info['port']}/history"
    written = ScoreHistory._write

    def write_then_stop(self, *args, **kwargs):
        written(self, *args, **kwargs)
        server.stop(mode)

    monkeypatch.setattr(ScoreHistory, "_write", write_then_stop)
    config = _config(tmp_path, "c", mlflow_dir=store_config.paths.mlflow_dir, history_url=url)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    score = ["score", "--raw", str(raw_dir), "--as-of", AS_OF, "--out", str(out_dir / "s.csv")]
    assert main([*score, "-c", config]) == 69
    err = capsys.readouterr().err  # psycopg's "server closed the connection unexpectedly"
    assert err.count("\n") == 1 and err.startswith(f"error: score history {url}: "), err
    assert "Traceback" not in err and "error: unexpected" not in err
    assert list(out_dir.iterdir()) == []  # no scores, no rejects, nothing staged
    server.start()
    monkeypatch.undo()
    with psycopg.connect(admin.replace("dbname=postgres", "dbname=history")) as conn:
        tables = {
            name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
    assert tables.get("score_history_v2") == 0
    assert tables.get("score_decisions", 0) == 0
