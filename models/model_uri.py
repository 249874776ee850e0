"""How ``--model`` values name a model: aliases, version numbers and URIs (no MLflow import)."""

from __future__ import annotations

import re
from pathlib import Path

from partnerscore.features.core import PartnerscoreError

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
    raise PartnerscoreError(f"--model: expected an alias, a version number or a URI, got '{model}'")
