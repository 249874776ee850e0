"""How ``--model`` values name a model: aliases, version numbers and URIs (no MLflow import)."""

from __future__ import annotations

import re

from partnerscore.features.core import PartnerscoreError

MODELS_URI = re.compile(r"models:/([^/@]+)(?:/(\d+)|@(.+))")
"""``models:/<name>/<version>`` or ``models:/<name>@<alias>``."""
LOGGED_MODEL_URI = re.compile(r"models:/(m-[0-9a-f]+)")
"""``models:/m-<id>``: an MLflow 3 logged model by id (what ``train --no-register`` prints)."""


def resolve_model_uri(model: str, registered_model: str) -> str:
    """``champion``/``challenger``/any alias, a version number, or a full models:/ runs:/ URI."""
    model = model.strip()
    if model.startswith(("models:/", "runs:/", "file:", "/")):
        return model
    if model.isdigit():
        return f"models:/{registered_model}/{model}"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", model):
        return f"models:/{registered_model}@{model}"
    raise PartnerscoreError(f"--model: expected an alias, a version number or a URI, got '{model}'")
