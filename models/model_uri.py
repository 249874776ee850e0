"""How ``--model`` values name a model: aliases, version numbers and URIs (no MLflow import)."""

from __future__ import annotations

import re
from pathlib import Path

from partnerscore.features.core import OptionError, PartnerscoreError

MODELS_URI = re.compile(r"models:/([^/@]+)(?:/(\d+)|@(.+))")
"""``models:/<name>/<version>`` or ``models:/<name>@<alias>``."""
LOGGED_MODEL_URI = re.compile(r"models:/(m-[0-9a-f]+)")
"""``models:/m-<id>``: an MLflow 3 logged model by id (what ``train --no-register`` prints)."""


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

    Raises:
        PartnerscoreError: No database file at the URI's path.
    """
    if uri is not None and not uri.startswith(("models:/", "runs:/")):
        return
    missing = missing_registry(tracking_uri)
    if missing is not None:
        raise PartnerscoreError(
            f"no model registry found at {missing}: point at one with MLFLOW_TRACKING_URI or "
            "paths.mlflow_dir in a --config file (`partnerscore train` creates it)"
        )
