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
