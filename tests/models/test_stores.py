"""The connect timeout every database store gets, unless the user set one."""

from __future__ import annotations

import pytest

from partnerscore.models import stores


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://u@h/db", {"connect_timeout": stores.CONNECT_TIMEOUT_SECONDS}),
        ("postgresql://u@h/db", {"connect_timeout": stores.CONNECT_TIMEOUT_SECONDS}),
        ("postgres://u@h/db", {"connect_timeout": stores.CONNECT_TIMEOUT_SECONDS}),
        ("postgresql+psycopg2://u@h/db", {"connect_timeout": stores.CONNECT_TIMEOUT_SECONDS}),
        ("postgresql+psycopg://u@h/db?connect_timeout=60", {}),  # the user's own
        ("postgresql+pg8000://u@h/db", {}),  # another driver: other keyword arguments
        ("sqlite:///x.db", {}),
        ("mysql://u@h/db", {}),
        ("not a url", {}),
    ],
)
def test_database_connect_args(url, expected, monkeypatch):
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    assert stores.database_connect_args(url) == expected


def test_pgconnect_timeout_is_the_users_own(monkeypatch):
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "60")
    assert stores.database_connect_args("postgresql+psycopg://u@h/db") == {}


def test_bound_store_connections_bounds_the_store_s_database_only(monkeypatch):
    """MLflow's connections to the store's database get the timeout; another database on the
    same server, and a store URI with its own ``connect_timeout``, keep theirs."""
    import socket

    import sqlalchemy as sa

    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    with socket.socket() as sock:  # nothing listens: each connection is refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = f"postgresql+psycopg://someone@127.0.0.1:{port}/mlflow"
    stores.bound_store_connections(store)
    seen = []

    def record(dialect, connection_record, cargs, cparams):
        seen.append((cparams["dbname"], cparams.get("connect_timeout")))

    sa.event.listen(sa.engine.Engine, "do_connect", record)  # after bound_store_connections'
    try:
        for uri in (store, store.replace("/mlflow", "/other"), f"{store}?connect_timeout=60"):
            engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
            with pytest.raises(sa.exc.OperationalError):
                engine.connect()
    finally:
        sa.event.remove(sa.engine.Engine, "do_connect", record)
    assert seen == [
        ("mlflow", stores.CONNECT_TIMEOUT_SECONDS),
        ("other", None),
        ("mlflow", "60"),
    ]
