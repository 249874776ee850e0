"""The MLflow pyfunc wrapper: one registered model bundling both heads, explainer and policy.

The pyfunc takes a plain feature frame (strings and numbers: pandas ``category`` columns break
pyfunc input handling) and returns the scored frame of
:func:`partnerscore.models.scoring.score_features`: predictions, drivers, subscores, tier,
quadrant and intervention.
"""

from __future__ import annotations

import re
import tempfile
from importlib import metadata
from pathlib import Path

import joblib
import mlflow
import pandas as pd

from partnerscore.features.core import PartnerscoreError
from partnerscore.models.bundle import PartnerModel

ARTIFACT_KEY = "partner_model"
_PINNED = (
    "lightgbm",
    "scikit-learn",
    "pandas",
    "numpy",
    "scipy",
    "mlflow",
    "pydantic",
    "pyarrow",
    "joblib",
    "pyyaml",
)


class PartnerScorePyfunc(mlflow.pyfunc.PythonModel):
    """Loads the pickled :class:`PartnerModel` artifact and scores plain feature frames."""

    def load_context(self, context) -> None:
        """Load the bundled PartnerModel."""
        self.model: PartnerModel = joblib.load(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        """Score a feature frame (one row per partner snapshot)."""
        from partnerscore.models.scoring import score_features

        return score_features(self.model, pd.DataFrame(model_input))


def pip_requirements() -> list[str]:
    """Pinned requirements of the serving environment (avoids MLflow's slow inference)."""
    reqs = []
    for name in _PINNED:
        try:
            reqs.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return reqs


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns for text, float for numbers: what signature inference handles."""
    out = pd.DataFrame(index=frame.index)
    for col in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[col]) and not pd.api.types.is_bool_dtype(frame[col]):
            out[col] = frame[col].astype(float)
        else:
            out[col] = frame[col].astype(object).where(frame[col].notna(), None)
    return out


def log_partner_model(
    model: PartnerModel,
    registered_model_name: str | None,
    input_example: pd.DataFrame,
    name: str = "model",
):
    """Log (and optionally register) the model inside the active MLflow run.

    Args:
        model: The fitted bundle.
        registered_model_name: Registry name; None logs without registering.
        input_example: A few feature rows (plain columns) for the signature and example.
        name: Model name inside the run.

    Returns:
        MLflow's ModelInfo (``registered_model_version`` set when registered).
    """
    from mlflow.models import infer_signature

    cols = ["partner_id", "as_of", *model.feature_names]
    example = input_example[[c for c in cols if c in input_example.columns]].head(5).copy()
    example["as_of"] = pd.to_datetime(example["as_of"]).dt.strftime("%Y-%m-%d")
    example = _plain(example)
    signature = infer_signature(example)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "partner_model.joblib"
        joblib.dump(model, path)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=PartnerScorePyfunc(),
            artifacts={ARTIFACT_KEY: str(path)},
            pip_requirements=pip_requirements(),
            signature=signature,
            input_example=example,
            registered_model_name=registered_model_name,
        )


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


def load_partner_model(model_uri: str) -> PartnerModel:
    """Load the PartnerModel bundled in a logged pyfunc model.

    Raises:
        PartnerscoreError: The URI names no model (e.g. no ``champion`` yet).
    """
    try:
        loaded = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:  # MlflowException, OSError: one line for the user
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PartnerscoreError(f"cannot load model '{model_uri}': {first}") from exc
    return loaded.unwrap_python_model().model


def model_version_of(model_uri: str) -> str:
    """The registry version a models:/ URI resolves to (empty string when not registered)."""
    match = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@(.+))", model_uri)
    if not match:
        return ""
    name, version, alias = match.groups()
    if version:
        return version
    client = mlflow.MlflowClient()
    return str(client.get_model_version_by_alias(name, alias).version)
