"""How ``--model`` values name a model: aliases, version numbers and URIs (no MLflow import)."""

from __future__ import annotations

import re
from pathlib import Path

from partnerscore.features.core import OptionError, PartnerscoreError

MODELS_URI = re.compile(r"models:/([^/@]+)(?:/(\d+)|@(.+))")
"""``models:/<name>/<version>`` or ``models:/<name>@<alias>``."""
LOGGED_MODEL_URI = re.compile(r"models:/(m-[0-9a-f]+)")
"""``models:/m-<id>``: an MLflow 3 logged model by id (what ``train --no-register`` prints)."""
INCOMPLETE_TAG = "partnerscore.incomplete"
"""Tag of a version whose registration by ``train`` has not finished: written with the version
(one request), removed after its ``challenger`` alias. A version still holding it was left by a
``train`` that lost its store mid-registration (or is being registered now): ``models`` names
it, ``promote`` refuses it without ``--force --reason``, and no job loads it
(:func:`incomplete_version`)."""
ACCEPTED_INCOMPLETE_TAG = "promoted_incomplete"
"""Tag ``promote --force --reason`` sets (``"true"``) on a version it promoted past
:data:`INCOMPLETE_TAG`: accepted by hand as it is, so it loads."""


def incomplete_version(uri: str, version: str, tags: dict[str, str]) -> str | None:
    """The one line refusing to load a registered version whose registration did not finish.

    The rule every job that loads a model by its registry (``score``, ``whatif``, ``monitor``,
    the Python API's ``load_model``, the Spark engine) applies, as ``promote`` does: a version
    tagged :data:`INCOMPLETE_TAG` is refused, unless ``promote --force --reason`` accepted it
    (:data:`ACCEPTED_INCOMPLETE_TAG`). Until 2026-12-06 such a version was scored silently.

    Args:
        uri: The ``models:/`` URI asked for (an alias or a version of a registered model).
        version: The version it names.
        tags: The version's tags.

    Returns:
        ``cannot load model '<uri>': version V of '<name>' is incomplete: ...``, or None.
    """
    if INCOMPLETE_TAG not in tags or tags.get(ACCEPTED_INCOMPLETE_TAG) == "true":
        return None
    match = MODELS_URI.fullmatch(uri)
    name = match.group(1) if match else uri
    return (
        f"cannot load model '{uri}': version {version} of '{name}' is incomplete: the `train` "
        f"that registered it did not finish (tag {INCOMPLETE_TAG}); train again, or use "
        f"another version (the champion); `promote --version {version} --force --reason` "
        "accepts it as it is"
    )


def resolve_model_uri(model: str, registered_model: str) -> str:
    """The URI of a ``--model`` value.

    ``champion``/``challenger``/any alias, a version number, a full models:/ runs:/ URI, or a
    local model folder (absolute, ``file:``, or relative with a ``/``: made absolute).
    """
    model = model.strip()
    if model.startswith(("models:/", "runs:/", "file:", "/")):
        return model
    if model.startswith((".", "~")) or "/" in model or "\\" in model:  # a local folder
        return str(Path(model).expanduser().resolve())
    if model.isdigit():
        return f"models:/{registered_model}/{model}"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", model):
        return f"models:/{registered_model}@{model}"
    raise OptionError(f"--model: expected an alias, a version number or a URI, got '{model}'")


def sqlite_file(tracking_uri: str) -> str | None:
    """The database file of a ``sqlite:///`` URI, its query dropped; None for other stores."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]


_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
"""MLflow's database stores (``mlflow.store.db.db_types.DATABASE_ENGINES``), ``+driver`` allowed."""
_SERVERS = ("http", "https", "databricks", "databricks-uc", "uc")
"""MLflow's other stores (``mlflow.tracking._tracking_service.utils``: REST and Databricks)."""
SUPPORTED_TRACKING = "sqlite:///FILE, postgresql://, mysql://, mssql://, http(s)://, databricks"
"""The tracking URIs MLflow 3 takes, as error lines name them (a plugin's scheme too)."""


def shown_uri(uri: str) -> str:
    """A URI or database URL as error lines show it: any password in it masked (``***``).

    For every store the project names (MLflow tracking URIs, the score history's and the
    decision ledger's database URLs), parsable or not, since where a password sits in a
    malformed URL is a guess: masked are everything between ``user:`` and the *last* ``@``
    (a password may hold ``/`` or ``@`` unencoded: ``u:pa/ss@host``, ``u:p@ss@host``), a
    "port" that is no number when no ``@`` follows (``postgresql://user:secret/db``, the host
    left out) and ``password=`` query parameters (libpq and the MySQL drivers read them).
    It may hide a little more than the password (the host of ``http://h:5000/p?mail=a@b``),
    never less.
    """
    cut = uri.find("//")
    start = cut + 2 if cut >= 0 else uri.find(":") + 1  # after the scheme
    head, rest = uri[:start], uri[start:]
    at = rest.rfind("@")
    if at >= 0 and ":" in rest[:at]:
        rest = f"{rest[:at].split(':', 1)[0]}:***{rest[at:]}"
    elif at < 0 and not rest.startswith("["):  # host[:port], no user (IPv6 hosts left alone)
        found = re.match(r"([^/?#:]*):([^/?#]*)", rest)
        if found and found.group(2) and not found.group(2).isdigit():
            rest = f"{found.group(1)}:***{rest[found.end() :]}"
    return head + re.sub(r"(?i)([?&;]password=)[^&;#]*", r"\1***", rest)


def _plugin_schemes() -> set[str]:
    """Schemes that installed MLflow plugins register (``mlflow.tracking_store`` entry points)."""
    from importlib.metadata import entry_points

    return {point.name for point in entry_points(group="mlflow.tracking_store")}


def check_tracking_uri(uri, name: str) -> str:
    """``uri`` if MLflow can open a store there, else one line naming ``name`` and the value.

    MLflow's own errors for an unsupported scheme (``foo://``, ``postgres://``: an
    ``UnsupportedModelRegistryStoreURIException`` listing its registry), a database URL
    SQLAlchemy cannot parse (``sqlite:/x.db``: "Could not parse SQLAlchemy URL") or a path
    without a scheme (MLflow 3 refuses its file store unless ``MLFLOW_ALLOW_FILE_STORE`` is
    true) reached the user as several lines, the CLI's as "unexpected ...". Checked before
    MLflow is imported, and without it (the score job reads a SQLite registry directly).

    Args:
        uri: The tracking URI.
        name: Where it was given (``MLFLOW_TRACKING_URI``, the API's ``tracking_uri``).

    Returns:
        The URI, unchanged.

    Raises:
        PartnerscoreError: Not one of :data:`SUPPORTED_TRACKING` (nor a plugin's).
    """
    import os
    from urllib.parse import urlsplit

    if not isinstance(uri, str) or not uri.strip():
        got = f"{uri!r}" if isinstance(uri, str) else type(uri).__name__
        raise PartnerscoreError(
            f"{name}: expected a tracking URI ({SUPPORTED_TRACKING}), got {got}"
        )
    shown = shown_uri(uri)
    scheme = urlsplit(uri).scheme.lower() if ":" in uri else ""
    base = scheme.split("+", 1)[0]
    problem = None
    if base in _DATABASES:
        import sqlalchemy as sa

        try:
            sa.engine.make_url(uri)
        except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is no number
            problem = "not a database URL SQLAlchemy can read"
        written = uri.lstrip()[: len(scheme)]
        if written != scheme and written.lower() == scheme:  # SQLAlchemy: "Can't load plugin"
            fixed = scheme + shown.lstrip()[len(scheme) :]
            problem = f"the scheme '{written}' must be lower case: '{fixed}'"
        elif base == "sqlite" and problem is None and not uri.startswith(f"{scheme}:///"):
            problem = "a SQLite store is sqlite:///FILE (three slashes, then the file)"
    elif base in ("", "file"):
        allowed = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower()
        if allowed not in ("true", "1"):
            problem = (
                "a folder is MLflow's file store, which MLflow 3 refuses unless "
                "MLFLOW_ALLOW_FILE_STORE=true"
            )
    elif base in ("http", "https"):
        if not urlsplit(uri).netloc:
            problem = "no server named after http(s)://"
    elif scheme not in _SERVERS and scheme not in _plugin_schemes():
        hint = "; PostgreSQL is postgresql://" if scheme in ("postgres", "pg", "psql") else ""
        problem = f"unsupported scheme '{scheme}'{hint}"
    if problem is not None:
        raise PartnerscoreError(
            f"{name}: cannot open the MLflow store '{shown}': {problem} "
            f"(supported: {SUPPORTED_TRACKING})"
        )
    return uri


def missing_registry(tracking_uri: str) -> Path | None:
    """The database file of a local SQLite registry that is not there, else None.

    MLflow creates an empty store on the first use of a ``sqlite:///`` URI: a job that only
    reads the registry must not use one that is missing. Servers and other databases: None
    (MLflow answers for them).
    """
    path = sqlite_file(tracking_uri)
    if path is None or path in ("", ":memory:") or Path(path).is_file():
        return None
    return Path(path).resolve()


def unknown_name(name: str, held: list[str]) -> str:
    """The one line for a registered model name the store does not hold (a typo).

    Args:
        name: The name asked for.
        held: The registered model names the store holds (at least one).
    """
    return (
        f"no registered model '{name}' in this store (it holds: {', '.join(held)}): check"
        " train.registered_model or the model URI"
    )


def check_registry(tracking_uri: str, uri: str | None = None) -> None:
    """Refuse to read a local SQLite model registry that is not there.

    A command that only reads models (``score``, ``models``, ...) run from another folder left
    an empty ``data/mlflow`` there, created by MLflow, and then failed to find the model.

    Args:
        tracking_uri: The tracking (and registry) URI.
        uri: The model asked for, if any: only ``models:/`` and ``runs:/`` URIs need the store
            (a local model folder does not).

    A tracking server or database store is asked once whether it answers
    (:func:`~partnerscore.models.stores.reach_tracking_store`): MLflow's own clients retried
    one that was down for minutes.

    Raises:
        PartnerscoreError: No database file at the URI's path; a store that refuses.
        ServiceUnavailable: A server or database store that cannot be reached (exit 69).
    """
    if uri is not None and not uri.startswith(("models:/", "runs:/")):
        return
    if sqlite_file(tracking_uri) is None:
        from partnerscore.models.stores import reach_tracking_store

        reach_tracking_store(tracking_uri)
    missing = missing_registry(tracking_uri)
    if missing is not None:
        raise PartnerscoreError(
            f"no model registry found at {missing}: point at one with MLFLOW_TRACKING_URI or "
            "paths.mlflow_dir in a --config file (`partnerscore train` creates it)"
        )
