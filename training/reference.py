"""The reference profile logged with every trained model version, and its loader.

Monitoring compares new batches with this profile (feature and prediction distributions,
overall and by segment), so it never needs the training data again.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from partnerscore.features.core import PartnerscoreError
from partnerscore.features.profile import PREDICTIONS, build_profile
from partnerscore.models.bundle import PartnerModel
from partnerscore.models.model_uri import LOGGED_MODEL_URI, MODELS_URI
from partnerscore.models.stores import raise_if_unreachable

REFERENCE_ARTIFACT = "monitoring/reference_profile.json"
MANIFEST_ARTIFACT = "training/manifest.json"
"""The training-set manifest (``partnerscore build``) logged with every training run."""
DEFAULT_AGES = (30, 60, 90, 180)
LABEL_KEYS = (
    "horizon_days",
    "engagement_period_days",
    "engagement_min_share",
    "engagement_touchpoints",
)
"""The build settings that define ``label_revenue`` and ``label_engaged``."""


def reference_profile(model: PartnerModel, frame: pd.DataFrame, manifest: dict) -> dict:
    """Profile of every model feature and both predictions on the training frame.

    Args:
        model: The fitted model (its feature specs and predictions).
        frame: Every labelled snapshot the model was built from (training and holdout cohorts).
        manifest: The training-set manifest (its ``build_config`` gives ages and horizon).

    Returns:
        The JSON-able profile, with ``horizon_days``, the model's feature names and its
        revenue phasing (``revenue_phasing``, :meth:`RevenuePhasing.to_dict`, when it has one).
    """
    build = manifest.get("build_config", {}) or {}
    ages = tuple(build.get("ages") or DEFAULT_AGES)
    data = frame.reset_index(drop=True).copy()
    preds = model.predict(data)
    for name in PREDICTIONS:
        data[name] = preds[name].to_numpy()
    numeric = [s.name for s in model.feature_specs if s.kind == "numeric"] + list(PREDICTIONS)
    categorical = [s.name for s in model.feature_specs if s.kind == "categorical"]
    profile = build_profile(data, numeric, categorical, ages)
    profile["horizon_days"] = int(build.get("horizon_days") or 180)
    profile["feature_names"] = model.feature_names
    phasing = getattr(model, "phasing", None)
    if phasing is not None:  # the monitor reads rows this version scored with its own shares
        profile["revenue_phasing"] = phasing.to_dict()
    return profile


def run_id_of(model_uri: str) -> str:
    """The MLflow run that logged a model given by its URI.

    ``runs:/``, ``models:/<name>/<version>``, ``models:/<name>@<alias>`` or a logged model's
    ``models:/m-<id>`` (what ``train --no-register`` prints).
    """
    match = re.fullmatch(r"runs:/([^/]+)(?:/.*)?", model_uri)
    if match:
        return match.group(1)
    logged = LOGGED_MODEL_URI.fullmatch(model_uri)
    if logged:
        try:
            run_id = mlflow.MlflowClient().get_logged_model(logged.group(1)).source_run_id
        except mlflow.exceptions.MlflowException as exc:
            raise_if_unreachable(exc)
            first = str(exc).splitlines()[0]
            raise PartnerscoreError(f"cannot resolve model '{model_uri}': {first}") from exc
        if not run_id:
            raise PartnerscoreError(f"--model: model '{model_uri}' was logged outside a run")
        return run_id
    match = MODELS_URI.fullmatch(model_uri)
    if not match:
        raise PartnerscoreError(f"--model: cannot find the training run of '{model_uri}'")
    name, version, alias = match.groups()
    client = mlflow.MlflowClient()
    try:
        mv = (
            client.get_model_version(name, version)
            if version
            else client.get_model_version_by_alias(name, alias)
        )
    except mlflow.exceptions.MlflowException as exc:
        raise_if_unreachable(exc)
        first = str(exc).splitlines()[0]
        raise PartnerscoreError(f"cannot resolve model '{model_uri}': {first}") from exc
    return mv.run_id


def label_definition(manifest) -> dict | None:
    """The label-defining build settings (:data:`LABEL_KEYS`) of a training-set manifest.

    Args:
        manifest: A training-set manifest (``partnerscore build``'s ``manifest.json``).

    Returns:
        ``{setting: value}`` for the keys its ``build_config`` records (JSON values: the
        touchpoints a list), or None when it is not a manifest.
    """
    if not isinstance(manifest, dict):
        return None
    build = manifest.get("build_config") or {}
    if not isinstance(build, dict):
        return None
    return {key: build[key] for key in LABEL_KEYS if key in build}


def label_differences(ours: dict, theirs: dict) -> dict:
    """``{setting: (ours, theirs)}`` for the label settings both record and set apart.

    The touchpoints compare as a set (their order defines nothing).
    """

    def same(key: str) -> bool:
        a, b = ours[key], theirs[key]
        if key == "engagement_touchpoints" and isinstance(a, (list, tuple)):
            return isinstance(b, (list, tuple)) and sorted(map(str, a)) == sorted(map(str, b))
        return a == b

    return {
        key: (ours[key], theirs[key])
        for key in LABEL_KEYS
        if key in ours and key in theirs and not same(key)
    }


def run_manifest(run_id: str, client: mlflow.MlflowClient | None = None) -> dict | None:
    """The training-set manifest (:data:`MANIFEST_ARTIFACT`) a training run logged, or None.

    The one reader of that artifact (``promote``'s label comparison, the monitor's training
    ends and label definitions).

    Args:
        run_id: The training run.
        client: Read through this client (its own tracking URI); by default one on the
            tracking URI already set.

    Returns:
        The manifest, or None when the run or the artifact is missing, or the artifact is not
        a JSON object.
    """
    client = client if client is not None else mlflow.MlflowClient()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(client.download_artifacts(run_id, MANIFEST_ARTIFACT, tmp))
            manifest = json.loads(path.read_text(encoding="utf-8"))
    except (mlflow.exceptions.MlflowException, OSError, ValueError) as exc:
        raise_if_unreachable(exc)
        return None  # no such run or artifact (by store), not UTF-8, not JSON
    return manifest if isinstance(manifest, dict) else None


def run_label_definition(client: mlflow.MlflowClient, run_id: str) -> dict | None:
    """The label definition (:func:`label_definition`) of the manifest a training run logged.

    Read through ``client`` (its own tracking URI, :func:`run_manifest`); None when the run
    logged no readable manifest.
    """
    return label_definition(run_manifest(run_id, client))


def logged_manifest(model_uri: str) -> dict | None:
    """The training manifest logged with a model's run (:func:`run_manifest`), or None.

    None when the model's run cannot be found or logged no readable manifest (tracking URI
    already set).
    """
    try:
        run_id = run_id_of(model_uri)
    except PartnerscoreError:
        run_id = _folder_run_id(model_uri)
    if run_id is None:
        return None
    return run_manifest(run_id)


def _folder_run_id(model_uri: str) -> str | None:
    """The ``run_id`` a local model folder's ``MLmodel`` records (None if none or no folder)."""
    import yaml

    folder = Path(model_uri.removeprefix("file://").removeprefix("file:"))
    try:
        run_id = mlflow.models.Model.load(str(folder)).run_id
    except (mlflow.exceptions.MlflowException, OSError, yaml.YAMLError):  # none, or broken
        return None
    return str(run_id) if run_id else None


def load_reference_profile(model_uri: str, *, required: bool = True) -> dict | None:
    """The reference profile logged with the model's training run.

    Args:
        model_uri: models:/ or runs:/ URI (tracking URI already set).
        required: Raise when absent (else return None).

    Raises:
        PartnerscoreError: No profile (a model trained before monitoring existed) and required.
    """
    try:
        run_id = run_id_of(model_uri)
    except PartnerscoreError:
        # a local model folder: its MLmodel names the run that logged it, if any
        run_id = _folder_run_id(model_uri)
        if run_id is None:
            if required:
                raise
            return None
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{REFERENCE_ARTIFACT}")
    except Exception as exc:  # missing artifact: MlflowException or OSError by store
        if not required:
            return None
        raise PartnerscoreError(
            f"model '{model_uri}' (run {run_id}) has no {REFERENCE_ARTIFACT}: it was trained "
            "before monitoring existed; retrain it to monitor"
        ) from exc
