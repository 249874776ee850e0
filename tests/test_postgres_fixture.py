"""The throwaway PostgreSQL server of tests/conftest.py leaves no folder behind."""

import os
import tempfile

import pytest


def _conftest(request):
    """tests/conftest.py as pytest loaded it (--import-mode=importlib: not importable)."""
    return next(
        p for p in request.config.pluginmanager.get_plugins() if hasattr(p, "_PostgresInstance")
    )


def test_a_server_that_does_not_start_leaves_no_folder(request, tmp_path, monkeypatch):
    """initdb refused (as root, a temporary folder the server's user cannot enter, such as
    TMPDIR=$(mktemp -d)): the fixture errored and left its partnerscore-pg-XXXXXXXX folder,
    one per test asking for a server (9 in test_team_stores)."""
    conftest = _conftest(request)
    bindir = conftest._postgres_bindir()
    if bindir is None or os.geteuid() != 0:
        pytest.skip("needs the PostgreSQL binaries and root (the server runs as another user)")
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(closed))
    with pytest.raises(AssertionError, match="initdb failed"):
        conftest._PostgresInstance(bindir)
    assert list(closed.iterdir()) == []
