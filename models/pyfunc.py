"""The MLflow pyfunc wrapper: one registered model bundling both heads, explainer and policy.

Any MLflow user can load it (``mlflow.pyfunc.load_model("models:/partnerscore@champion")``)
without installing partnerscore: the project's code is logged with the model (``code_paths``:
the ``partnerscore`` package tree under ``<model>/code/``, which MLflow puts on ``sys.path`` at
load time) and ``requirements.txt`` pins every runtime dependency of the package, so an
environment created from the model's own requirements loads and predicts.

The signature is declared, not inferred: ``partner_id`` (string), ``as_of`` (datetime), every
model feature (double for numeric, string for categorical; all required, as the strict
feature-frame checks want) and optional passthrough columns. Extra columns (labels, cohort) are
ignored, so the training set written by ``partnerscore build`` predicts as it is. The output
schema is the scored frame of :func:`partnerscore.models.scoring.score_features` (its
``unseen_categories`` among them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import sys
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

import joblib
import mlflow
import pandas as pd

from partnerscore.features.core import PartnerscoreError
from partnerscore.models.bundle import PartnerModel
from partnerscore.models.model_uri import (
    LOGGED_MODEL_URI,
    MODELS_URI,
    missing_registry,
    resolve_model_uri,  # noqa: F401 (re-exported)
)
from partnerscore.models.stores import raise_if_unreachable

ARTIFACT_KEY = "partner_model"
# PartnerModel.scoring_view(): what the score job loads (no LightGBM or scikit-learn import)
SCORING_ARTIFACT_KEY = "partner_model_scoring"
PACKAGE = "partnerscore"
# imported by the package but not declared by it (transitive dependencies used directly)
_ALSO_PINNED = ("scipy", "joblib")
# optional input columns passed through to the output when present
PASSTHROUGH_COLUMNS = {"partner_name": "string", "signed_at": "datetime", "age_days": "double"}
_log = logging.getLogger(__name__)


class PartnerScorePyfunc(mlflow.pyfunc.PythonModel):
    """Loads the pickled :class:`PartnerModel` artifact and scores feature frames."""

    def load_context(self, context) -> None:
        """Load the bundled PartnerModel and find the registry version it was registered as."""
        self.model: PartnerModel = joblib.load(context.artifacts[ARTIFACT_KEY])
        config = context.model_config or {}
        version = registered_version(
            Path(context.artifacts[ARTIFACT_KEY]), config.get("registered_model")
        )
        if version:
            self.model.metadata["version"] = version

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        """Score a feature frame (one row per partner snapshot), checked strictly first.

        Raises:
            PartnerscoreError: Missing columns, text in numeric columns, duplicate keys.
        """
        from partnerscore.models.frame_check import check_feature_frame
        from partnerscore.models.scoring import score_features

        frame = pd.DataFrame(model_input).reset_index(drop=True)
        check_feature_frame(self.model, frame, source="model input")
        # unseen categories are listed by score_features itself (``unseen_categories``)
        return score_features(self.model, frame, consolidate=True)


def registered_version(artifact: Path, registered_model: str | None) -> str:
    """The registry version of the logged model holding ``artifact`` ('' when unknown).

    Looked up in the registry named by the tracking URI (set explicitly, never MLflow's
    default), matching the logged model's id in its MLmodel file; the newest version wins when
    the same logged model was registered twice. Any failure (no registry, a model folder
    loaded from disk) gives ''.
    """
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    if not registered_model or not is_tracking_uri_set():
        return ""
    if missing_registry(mlflow.get_registry_uri()) is not None:  # MLflow would create it
        return ""
    try:
        root = next(p for p in artifact.parents if (p / "MLmodel").exists())
        model_id = mlflow.models.Model.load(str(root / "MLmodel")).model_id
        if not model_id:
            return ""
        found = versions_of_logged_model(model_id, f"name='{registered_model}'")
    except Exception as exc:  # an unreachable or absent registry: the version stays unknown
        _log.debug("registry version lookup failed: %s", exc)
        return ""
    return str(max(found)) if found else ""


def versions_of_logged_model(model_id: str, filter_string: str | None = None) -> list[int]:
    """Registry versions made from the logged model ``model_id`` (by id, or by source path)."""
    return [
        int(mv.version)
        for mv in mlflow.MlflowClient().search_model_versions(filter_string)
        if getattr(mv, "model_id", None) == model_id
        or (mv.source or "").rstrip("/").endswith(model_id)
    ]


def pip_requirements() -> list[str]:
    """The package's runtime dependencies pinned at their installed versions.

    Explicit (MLflow's own inference takes ~4 s and misses what the code imports lazily);
    every import of the logged code resolves in an environment created from these.
    """
    from packaging.requirements import Requirement

    names = []
    for text in metadata.requires(PACKAGE) or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.append(req.name)
    reqs = []
    for name in [*names, *_ALSO_PINNED]:
        try:
            reqs.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return sorted(set(reqs), key=str.lower)


def package_tree(dest: Path) -> Path:
    """Copy the installed ``partnerscore`` package (all subpackages, data files) to ``dest``.

    The source folders are where the running package was imported from (the repository's
    features/, models/, training/, serving/ and serving/_top in an editable install; the
    package folder of a wheel; or a zip archive on ``sys.path``), laid out as the importable
    tree ``dest/partnerscore/...`` that ``code_paths`` logs. Files are read through
    :mod:`importlib.resources` and written anew: a package installed read-only (by root, or
    in a read-only image) gives a writable copy. ``shutil.copytree`` copied its modes too, and
    then could not write the subpackages into the read-only copy of the package folder
    (``partnerscore train`` failed with "Permission denied" under ``/tmp/.../code``).

    Returns:
        ``dest / "partnerscore"``.
    """
    from importlib import resources

    root = dest / PACKAGE
    subpackages = ("features", "models", "training", "serving")
    _copy_resources(resources.files(PACKAGE), root, skip={"_top", *subpackages})
    for sub in subpackages:
        _copy_resources(resources.files(f"{PACKAGE}.{sub}"), root / sub, skip={"_top"})
    return root


def _copy_resources(src, dest: Path, skip: set[str]) -> None:
    """Write the files under the importlib Traversable ``src`` to ``dest`` (no bytecode)."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.name in skip or item.name == "__pycache__" or item.name.endswith(".pyc"):
            continue
        if item.is_dir():
            _copy_resources(item, dest / item.name, skip=set())
        else:
            (dest / item.name).write_bytes(item.read_bytes())


def input_schema(model: PartnerModel):
    """The declared input schema: ids, every feature (required), optional passthrough."""
    from mlflow.types import ColSpec, Schema

    cols = [ColSpec("string", "partner_id"), ColSpec("datetime", "as_of")]
    names = set(model.feature_names)
    for spec in model.feature_specs:
        cols.append(ColSpec("string" if spec.kind == "categorical" else "double", spec.name))
    for name, kind in PASSTHROUGH_COLUMNS.items():
        if name not in names:
            cols.append(ColSpec(kind, name, required=False))
    return Schema(cols)


def example_frame(model: PartnerModel, frame: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """A few rows of ``frame`` in the input schema's columns and types."""
    schema = input_schema(model)
    out = pd.DataFrame(index=range(min(rows, len(frame))))
    head = frame.head(rows).reset_index(drop=True)
    for col in schema.inputs:
        if col.name not in head.columns:
            continue
        kind = col.type.name
        values = head[col.name]
        if kind == "datetime":
            out[col.name] = pd.to_datetime(values).astype("datetime64[ns]")
        elif kind == "double":
            out[col.name] = pd.to_numeric(values, errors="coerce").astype(float)
        else:
            out[col.name] = values.astype(object).where(values.notna(), None)
    return out


def text_as_object(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with text columns (pandas 3 ``str``) as object, missing as None.

    MLflow's schema inference (model signatures, dataset inputs) predates pandas 3 ``str``.
    """
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_string_dtype(out[col].dtype) and out[col].dtype != object:
            out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out


def signature_for(model: PartnerModel, example: pd.DataFrame):
    """Declared input schema and the output schema of scoring ``example``."""
    from mlflow.models import ModelSignature
    from mlflow.types.utils import _infer_schema

    scored = PartnerScorePyfunc()
    scored.model = model
    output = scored.predict(None, example)
    with warnings.catch_warnings():  # the hint on integer columns concerns inputs, not outputs
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        outputs = _infer_schema(text_as_object(output))
    return ModelSignature(inputs=input_schema(model), outputs=outputs)


@contextlib.contextmanager
def no_dead_code_paths():
    """``sys.path`` without the entries added inside the block whose folder is gone after it.

    MLflow puts a loaded model's ``code/`` folder first on ``sys.path`` (the load's, and
    ``log_model``'s check of the model it logs), and both loads read from temporary folders
    that are removed: every training run and every load (a service loading the champion per
    batch) left one more dead entry, searched by every later import that misses the first
    ones.
    """
    before = set(sys.path)
    try:
        yield
    finally:
        sys.path[:] = [p for p in sys.path if p in before or os.path.exists(p)]


def log_partner_model(
    model: PartnerModel,
    registered_model_name: str | None,
    input_example: pd.DataFrame,
    name: str = "model",
    registry_name: str | None = None,
):
    """Log (and optionally register) the model inside the active MLflow run.

    Args:
        model: The fitted bundle.
        registered_model_name: Registry name to register under now; None logs only.
        input_example: Feature rows (e.g. the holdout) the example and output schema come from.
        name: Model name inside the run.
        registry_name: Registry name the model looks its version up in when loaded
            (default ``registered_model_name``; set it when registering later).

    Returns:
        MLflow's ModelInfo (``registered_model_version`` set when registered).
    """
    example = example_frame(model, input_example)
    signature = signature_for(model, example)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "partner_model.joblib"
        joblib.dump(model, path)
        artifacts = {ARTIFACT_KEY: str(path)}
        view = model.scoring_view()
        if view is not None:
            artifacts[SCORING_ARTIFACT_KEY] = str(Path(tmp) / "partner_model_scoring.pkl")
            with open(artifacts[SCORING_ARTIFACT_KEY], "wb") as file:
                pickle.dump(view, file, protocol=pickle.HIGHEST_PROTOCOL)
        code = package_tree(Path(tmp) / "code")
        with no_dead_code_paths():
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=PartnerScorePyfunc(),
                artifacts=artifacts,
                code_paths=[str(code)],
                pip_requirements=pip_requirements(),
                signature=signature,
                input_example=example,
                model_config={"registered_model": registry_name or registered_model_name or ""},
                registered_model_name=registered_model_name,
            )


def load_partner_model(model_uri: str) -> PartnerModel:
    """Load the PartnerModel bundled in a logged pyfunc model.

    Raises:
        PartnerscoreError: The URI names no model (e.g. no ``champion`` yet).
    """
    try:
        # MLflow copies a model it does not read in place (a runs:/ URI, a tracking server's
        # artifacts) into a new temporary folder it never removes (~5.4 MB each): into one of
        # ours, removed once the PartnerModel is read into memory
        with no_dead_code_paths(), tempfile.TemporaryDirectory(prefix="partnerscore-model-") as tmp:
            loaded = mlflow.pyfunc.load_model(model_uri, dst_path=tmp)
    except Exception as exc:  # MlflowException, OSError: one line for the user
        raise_if_unreachable(exc)  # a store that went away: exit 69, not "cannot load"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        missing = _missing_files(model_uri)
        if missing is not None:
            first = missing
        raise PartnerscoreError(f"cannot load model '{model_uri}': {first}") from exc
    return loaded.unwrap_python_model().model


def _missing_files(model_uri: str) -> str | None:
    """Why a registered version cannot load when its files' local folder is not there, else None.

    A database store without a tracking server (``MLFLOW_TRACKING_URI=postgresql+psycopg://``)
    keeps a version's files in the folder the training job wrote them to, on that machine:
    from another machine (or once the folder was moved) MLflow said only "No such artifact: ''".
    """
    import urllib.parse
    import urllib.request

    match = MODELS_URI.fullmatch(model_uri)
    if not match:
        return None
    name, version, alias = match.groups()
    try:
        client = mlflow.MlflowClient()
        if version is None:
            version = client.get_model_version_by_alias(name, alias).version
        location = client.get_model_version_download_uri(name, version)
    except Exception:  # noqa: BLE001 - only to say more than MLflow did
        return None
    if location.startswith("file:"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(location).path))
    elif location.startswith("/"):
        path = Path(location)
    else:
        return None
    if path.exists():
        return None
    return (
        f"version {version}'s files are not on this machine: {path} is missing (a store "
        "without a tracking server keeps them where the training job wrote them; a team "
        "shares them through `mlflow server --artifacts-destination`)"
    )


def _logged_model_id(model_uri: str) -> str | None:
    """The logged model id a ``runs:/`` URI's MLmodel file records.

    Read from a temporary folder of ours: ``mlflow.models.get_model_info`` copies the file into
    a new one it never removes (an empty one when there is no such model).
    """
    with tempfile.TemporaryDirectory(prefix="partnerscore-mlmodel-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{model_uri.rstrip('/')}/MLmodel", dst_path=tmp
        )
        return mlflow.models.Model.load(local).model_id


def model_version_of(model_uri: str) -> str:
    """The registry version a models:/ or runs:/ URI resolves to (empty string when not registered).

    A logged model's ``models:/m-<id>`` (what ``train --no-register`` prints) or its run's
    ``runs:/<run_id>/model`` gives the newest registered version of that logged model, if any.
    """
    logged = LOGGED_MODEL_URI.fullmatch(model_uri)
    if logged or model_uri.startswith("runs:/"):
        try:
            model_id = logged.group(1) if logged else _logged_model_id(model_uri)
            found = versions_of_logged_model(model_id) if model_id else []
        except (mlflow.exceptions.MlflowException, OSError) as exc:
            raise_if_unreachable(exc)
            return ""
        return str(max(found)) if found else ""
    match = MODELS_URI.fullmatch(model_uri)
    if not match:
        return ""
    name, version, alias = match.groups()
    if version:
        return version
    client = mlflow.MlflowClient()
    return str(client.get_model_version_by_alias(name, alias).version)
