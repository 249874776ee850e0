"""Database URLs of the score history and the decision ledger: the one rule of what they open.

Config validation (``paths.history_url``) and the stores themselves (``store_engine``) both ask
:func:`database_url`, so a URL the configuration accepts is one the stores can open, and one
they cannot open is refused with the same one-line reason before any job starts.
"""

from __future__ import annotations

import sqlalchemy as sa

_USE = "use sqlite:///FILE or postgresql://..."


def database_url(url: str) -> str:
    """The SQLAlchemy URL the stores connect with, or why they cannot open ``url``.

    Plain ``postgresql://`` and its old alias ``postgres://`` go through psycopg 3
    (SQLAlchemy's default PostgreSQL driver, psycopg2, is not installed; SQLAlchemy 2 no longer
    knows ``postgres://`` itself). Any other SQLAlchemy URL whose dialect and driver load is
    taken as it is (``sqlite:///FILE``, ``sqlite://`` in memory).

    Raises:
        ValueError: One line, without the URL (it may hold a password): unparsable, a port that
            is no number, an unknown scheme, or a scheme whose driver is not installed.
    """
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:  # ValueError: a port that is no number
        detail = "a port that is no number" if isinstance(exc, ValueError) else "unparsable"
        raise ValueError(f"not a database URL ({detail}; {_USE})") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    scheme = url.split(":", 1)[0]
    try:
        dialect = parsed.get_dialect()
    except sa.exc.NoSuchModuleError:
        raise ValueError(f"unknown database URL scheme '{scheme}' ({_USE})") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:  # mysql:// without MySQLdb: create_engine's import
        raise ValueError(
            f"database URL scheme '{scheme}' needs a driver that is not installed ({exc}; {_USE})"
        ) from None
    return parsed.render_as_string(hide_password=False)
