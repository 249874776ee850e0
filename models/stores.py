"""Reaching a team's stores: an MLflow tracking server, a database; one line when they fail.

MLflow's own clients wait minutes before they give up on a store that is down: its HTTP
client retried a refused connection 7 times with a backoff growing to 120 s (over 5 minutes of
urllib3 "Retrying ..." lines), its SQLAlchemy store retried creating its engine 10 times (1 min
45 s of "Operation will be retried in 51.1 seconds"), then "unexpected OperationalError", exit
70. :func:`reach_tracking_store` asks the store once, before a job uses it, with a short retry
(:data:`PROBE_RETRY_SECONDS`), and says what is wrong in one line: a store that cannot be
reached is a :class:`~partnerscore.features.core.ServiceUnavailable` (exit 69: try again
later), one that answers and refuses (credentials, no such database, a URL that is no MLflow
server) a configuration error (exit 2). :func:`store_failure` says the same of an error
MLflow's client raises later in a job (a server that went away mid-job). SQLite stores are
local files: nothing here applies to them.

The score history and the decision ledger use :func:`database_unavailable` for the same rule.
"""

from __future__ import annotations

import os
import re
import sys
import time

from partnerscore.features.core import PartnerscoreError, ServiceUnavailable
from partnerscore.models.model_uri import shown_uri

PROBE_ENDPOINT = "/api/2.0/mlflow/registered-models/search"
"""What :func:`reach_tracking_store` asks a tracking server (any MLflow server answers it)."""
PROBE_RETRY_SECONDS = (1.0, 2.0)
"""Waits before the probe's retries of a store that could not be reached (a blip)."""
CONNECT_TIMEOUT_SECONDS = 10
"""How long a connection to a PostgreSQL server may take (libpq's ``connect_timeout``): the
MLflow store's probe, the score history's and the decision ledger's connections
(:func:`database_connect_args`). Without it psycopg waits 130 s per attempt for a host that
never answers (a firewall dropping packets, a hung server)."""

_REFUSALS = (
    "does not exist",  # no such database or role
    "authentication failed",
    "pg_hba.conf",  # the server refuses this host or user
    "password",  # "no password supplied", "password authentication failed"
    "permission denied",
    "access denied",  # MySQL's
    "unknown database",  # MySQL's
)
"""Database connection errors that are the server's refusal, not its absence."""


def _scheme(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""


def database_unavailable(exc: BaseException) -> bool:
    """Whether a SQLAlchemy error says a database server cannot be reached now.

    A connection refused, reset or timed out, a host name not resolved, a server closing the
    connection, starting up, shutting down or out of connection slots: its DBAPI error is an
    ``OperationalError`` (psycopg says connection failures with no SQLSTATE; a server's
    ``FATAL`` refusal names the database, role or password). SQLite's errors are never (a local
    file: locked, read-only or missing is about the file).
    """
    orig = getattr(exc, "orig", None)
    if orig is None or type(orig).__module__.startswith("sqlite3"):
        return False
    # psycopg raises subclasses: ConnectionTimeout (no answer within the connect timeout),
    # AdminShutdown (57P01, a server stopping), ...
    if not {"OperationalError", "InterfaceError"} & {k.__name__ for k in type(orig).__mro__}:
        return False
    state = getattr(orig, "sqlstate", None)
    if state:  # connection exception, insufficient resources, operator intervention
        return state[:2] in ("08", "53", "57", "58")
    text = str(orig).lower()
    return not any(word in text for word in _REFUSALS)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def reach_tracking_store(uri: str) -> None:
    """Ask the MLflow store at ``uri`` once (a short retry for a blip); one line if it fails.

    A tracking server (``http(s)://``) is asked for one registered model, with MLflow's own
    client (its credentials, TLS settings and request headers) and its retry settings
    (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``..._BACKOFF_FACTOR``, ``..._TIMEOUT``:
    :data:`~partnerscore.training.quiet.MLFLOW_ENVIRONMENT` bounds them). A database store
    (``postgresql://``, ``mysql://``, ...) is connected to once, retried after
    :data:`PROBE_RETRY_SECONDS` while it cannot be reached, and MLflow's own connections to
    it get the same connect timeout (:func:`bound_store_connections`). SQLite, Databricks and
    plugin stores are left to MLflow.

    Raises:
        ServiceUnavailable: It cannot be reached (exit 69).
        PartnerscoreError: It answers and refuses, or is no MLflow server (exit 2).
    """
    scheme = _scheme(uri)
    if scheme in ("http", "https"):
        _reach_server(uri)
    elif scheme in ("postgresql", "postgres", "mysql", "mssql"):
        _reach_database(uri)
        bound_store_connections(uri)


def _reach_server(uri: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    shown = shown_uri(uri)
    try:
        response = http_request(
            get_default_host_creds(uri),
            PROBE_ENDPOINT,
            "GET",
            params={"max_results": 1},
            raise_on_status=False,
        )
    except MlflowException as exc:
        raise ServiceUnavailable(
            f"MLflow store {shown}: cannot reach it: {_http_reason(str(exc))}"
        ) from None
    status = response.status_code
    said = f"HTTP {status} {response.reason or ''}".strip()
    if status >= 500:
        raise ServiceUnavailable(f"MLflow store {shown}: cannot reach it: {said}")
    if status == 401:
        raise PartnerscoreError(
            f"MLflow store {shown}: refused: {said} (set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN)"
        )
    if status == 403:
        raise PartnerscoreError(
            f"MLflow store {shown}: refused: {said} (the user may not read its registry)"
        )
    try:
        answer = response.json() if status == 200 else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        why = said if status != 200 else "an answer that is not MLflow's JSON"
        raise PartnerscoreError(
            f"MLflow store {shown}: not an MLflow tracking server ({why} to {PROBE_ENDPOINT})"
        )


def _http_reason(text: str) -> str:
    """What went wrong in one of MLflow's "API request to ... failed with exception ..."."""
    if "timeout" in text.lower() or "timed out" in text.lower():
        return "no answer in time (MLFLOW_HTTP_REQUEST_TIMEOUT)"
    found = re.search(r"too many (\d{3}) error responses", text)
    if found:
        return f"HTTP {found.group(1)}"
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if found:
        return found.group(1).strip()
    if re.search(r"RemoteDisconnected|Connection aborted|reset by peer", text):
        return "the server closed the connection"
    return text.split(" failed with ", 1)[-1][:200]


def database_connect_args(url: str) -> dict:
    """``connect_args`` bounding how long a connection to ``url``'s server may take.

    PostgreSQL through psycopg (3 or 2): ``connect_timeout`` = :data:`CONNECT_TIMEOUT_SECONDS`,
    unless the user set one (``?connect_timeout=`` in the URL, or ``PGCONNECT_TIMEOUT``).
    Other databases: nothing (SQLite is a local file).
    """
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # the caller says what is wrong with it
        return {}
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in ("postgresql", "postgres") or driver not in ("", "psycopg", "psycopg2"):
        return {}  # pg8000, asyncpg: other keyword arguments
    if "connect_timeout" in parsed.query or "PGCONNECT_TIMEOUT" in os.environ:
        return {}
    return {"connect_timeout": CONNECT_TIMEOUT_SECONDS}


LOCK_WAIT_SECONDS = 10
"""How long the score history's, the decision ledger's and the incentives' statements wait for a
lock another session holds on PostgreSQL (its ``lock_timeout``; :func:`bound_lock_waits`): as
long as they wait for another writer of a SQLite file (its busy timeout). Without it a job
waited as long as the other session held the lock (an analyst's open transaction after a
``LOCK TABLE``, a long ``ALTER TABLE``): for ever."""


def bound_lock_waits(engine) -> None:
    """Bound how long ``engine``'s PostgreSQL sessions wait for a lock.

    Each new connection waits at most :data:`LOCK_WAIT_SECONDS`, unless the session has a bound
    already (``lock_timeout`` set by the URL's ``options``, ``PGOPTIONS``, the role's or the
    database's settings).

    A statement still waiting then fails with PostgreSQL's "canceling statement due to lock
    timeout" and its transaction rolls back (nothing written). Set by a ``SET`` on connect, not
    by the startup ``options`` a connection pooler (PgBouncer) may refuse. Other databases:
    nothing (a SQLite file has its busy timeout).
    """
    import sqlalchemy as sa

    if engine.dialect.name != "postgresql" or engine.dialect.driver not in ("psycopg", "psycopg2"):
        return

    @sa.event.listens_for(engine, "connect")
    def _bounded(dbapi_connection, _record) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True  # a SET in a transaction would roll back with it
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, false) "
                "WHERE current_setting('lock_timeout') = '0'",
                (f"{LOCK_WAIT_SECONDS}s",),
            )
        finally:
            cursor.close()
            dbapi_connection.autocommit = autocommit


_BOUNDED_STORES: set[tuple[str, str, str, str]] = set()
"""The database stores whose connections :func:`bound_store_connections` bounds (host, port,
database, user), in this process."""


def bound_store_connections(uri: str) -> None:
    """Give MLflow's own connections to the database store at ``uri`` the connect timeout.

    MLflow creates its SQLAlchemy engines itself (one per URI and process, for the tracking
    store and one for the registry: ``mlflow.store.db.utils.create_sqlalchemy_engine``) with
    no ``connect_timeout``: psycopg waited 130 s per connection to a host that never answers,
    MLflow's first connection of an engine 10 times (with 101 s of waits between them). The
    same :func:`database_connect_args` as every other database store, set by a SQLAlchemy
    ``do_connect`` listener on connections to this database only (the URI MLflow sees stays
    the user's: its engine cache, the error lines). Nothing for other databases and drivers,
    or when the user set a timeout.
    """
    import sqlalchemy as sa

    bound = database_connect_args(uri)
    if not bound:
        return
    url = sa.engine.make_url(uri)
    if not _BOUNDED_STORES:
        sa.event.listen(sa.engine.Engine, "do_connect", _bound_connection)
    _BOUNDED_STORES.add(_target(url.host, url.port, url.database, url.username))


def _target(host, port, database, user) -> tuple[str, str, str, str]:
    return tuple("" if part is None else str(part) for part in (host, port, database, user))


def _bound_connection(dialect, connection_record, cargs, cparams) -> None:
    if dialect.name != "postgresql" or dialect.driver not in ("psycopg", "psycopg2"):
        return
    if "connect_timeout" in cparams:  # the user's, in the URI
        return
    target = _target(*(cparams.get(k) for k in ("host", "port", "dbname", "user")))
    if target in _BOUNDED_STORES and "PGCONNECT_TIMEOUT" not in os.environ:
        cparams["connect_timeout"] = CONNECT_TIMEOUT_SECONDS


def first_connection(engine) -> None:
    """Connect to ``engine``'s database once, retried while its server cannot be reached.

    The one rule for every database store (the MLflow store's probe, the score history, the
    decision ledger): retried after each of :data:`PROBE_RETRY_SECONDS` while the error is
    :func:`database_unavailable` (a blip), else raised at once (a refusal, a local file).
    With :func:`database_connect_args` the worst case for a host that never answers is
    3 x :data:`CONNECT_TIMEOUT_SECONDS` + the waits (33 s).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: The last attempt's error, for the caller to say.
    """
    import sqlalchemy as sa

    waits = list(PROBE_RETRY_SECONDS)
    while True:
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return
        except sa.exc.SQLAlchemyError as exc:
            if not waits or not database_unavailable(exc):
                raise
        time.sleep(waits.pop(0))


def _reach_database(uri: str) -> None:
    import sqlalchemy as sa

    shown = shown_uri(uri)
    try:
        engine = sa.create_engine(
            uri, poolclass=sa.pool.NullPool, connect_args=database_connect_args(uri)
        )
        try:
            first_connection(engine)
        finally:
            engine.dispose()
    except sa.exc.SQLAlchemyError as exc:
        if not database_unavailable(exc):
            raise PartnerscoreError(f"MLflow store {shown}: refused: {_first_line(exc)}") from None
        raise ServiceUnavailable(
            f"MLflow store {shown}: cannot reach it: {_first_line(exc)}"
        ) from None
    except ImportError:  # a driver that is not installed: MLflow says it
        return


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def store_failure(exc: BaseException, uri: str | None) -> PartnerscoreError | None:
    """The one line for an error MLflow's client raised because its store failed, else None.

    A tracking server that went away or answers 5xx (after MLflow's bounded retries), a
    database server that cannot be reached: :class:`ServiceUnavailable` (exit 69). A server
    refusing the user (401, 403): a :class:`PartnerscoreError`. Anything else (a missing
    version, a bug): None, the caller's to say.

    Args:
        exc: The error (its causes and contexts are looked at too).
        uri: The tracking URI the job used (None: unknown, the line names no URL).
    """
    if uri is not None and _scheme(uri) == "sqlite":  # a local file: never unreachable
        return None
    mlflow_error = getattr(sys.modules.get("mlflow.exceptions"), "MlflowException", None)
    requests_error = getattr(sys.modules.get("requests.exceptions"), "ConnectionError", None)
    store = f"MLflow store {shown_uri(uri)}" if uri else "MLflow store"
    for error in _chain(exc):
        if isinstance(error, PartnerscoreError):
            return None
        if mlflow_error is not None and isinstance(error, mlflow_error):
            text = str(getattr(error, "message", error))
            if re.match(r"API request to \S+ failed with (timeout )?exception", text):
                return ServiceUnavailable(f"{store}: cannot reach it: {_http_reason(text)}")
            code = re.search(r"failed with error code (\d{3}) != 200", text)
            if code and int(code.group(1)) >= 500:
                return ServiceUnavailable(f"{store}: cannot reach it: HTTP {code.group(1)}")
            if code and int(code.group(1)) in (401, 403):
                return PartnerscoreError(f"{store}: refused: HTTP {code.group(1)}")
            if getattr(error, "error_code", None) == "TEMPORARILY_UNAVAILABLE":
                cause = next((e for e in _chain(error) if hasattr(e, "orig")), None)
                if cause is None or database_unavailable(cause):
                    detail = _first_line(cause) if cause is not None else text.splitlines()[0]
                    return ServiceUnavailable(f"{store}: cannot reach it: {detail}")
        elif requests_error is not None and isinstance(error, requests_error):
            return ServiceUnavailable(f"{store}: cannot reach it: {_http_reason(str(error))}")
        elif type(error).__module__.startswith("sqlalchemy") and database_unavailable(error):
            return ServiceUnavailable(f"{store}: cannot reach it: {_first_line(error)}")
    return None


def current_tracking_uri() -> str | None:
    """The tracking URI MLflow uses in this process (None before MLflow is imported)."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return None
    try:
        return mlflow.get_tracking_uri()
    except Exception:  # noqa: BLE001 - only to name the store in an error line
        return None


def raise_if_unreachable(exc: BaseException, uri: str | None = None) -> None:
    """Raise :func:`store_failure`'s line for ``exc`` if it has one (else return).

    For the places that read any MLflow error as "no such alias, run or artifact" (or wrap it
    as "cannot load model"): a store that went away meanwhile must not read as an empty
    registry, a gate without logged predictions, or bad input.

    Args:
        exc: The error caught.
        uri: The store's tracking URI (default: the one MLflow uses now).
    """
    failure = store_failure(exc, uri if uri is not None else current_tracking_uri())
    if failure is not None:
        raise failure from exc
