"""MLflow tracking: store setup and the diagnostic plots logged with every training run."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd


def setup_tracking(tracking_uri: str, experiment: str, artifact_root: str | None) -> str:
    """Point MLflow at the store and make sure the experiment exists.

    A new experiment on a local store gets ``artifact_root/<experiment>`` as its artifact
    location (otherwise MLflow would write ./mlruns in the current directory).

    Returns:
        The experiment id.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        mlflow.set_experiment(experiment_id=found.experiment_id)
        return found.experiment_id
    location = None
    if artifact_root and not tracking_uri.startswith(("http://", "https://", "databricks")):
        location = f"{artifact_root.rstrip('/')}/{experiment}"
    exp_id = mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_importance(importance: pd.Series, title: str, path: Path, top: int = 20) -> Path:
    """Horizontal bar chart of the top features by gain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imp = importance.head(top)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(imp) + 1.2))
    ax.barh(imp.index, imp.to_numpy(), color="#3b6ea5")
    ax.set_title(title)
    ax.set_xlabel("total gain")
    return _save(fig, path)


def plot_shap_summary(contrib: np.ndarray, X: pd.DataFrame, title: str, path: Path) -> Path:
    """SHAP beeswarm summary (shap's own plot) of raw-margin contributions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    data = X.copy()
    for col in data.columns:
        if isinstance(data[col].dtype, pd.CategoricalDtype):
            data[col] = data[col].cat.codes.astype(float).where(data[col].notna())
    explanation = shap.Explanation(
        values=contrib, data=data.to_numpy(dtype=float), feature_names=list(X.columns)
    )
    shap.plots.beeswarm(explanation, max_display=15, show=False)
    fig = plt.gcf()
    fig.suptitle(title)
    return _save(fig, path)


def plot_calibration(
    y: np.ndarray, p: np.ndarray, path: Path, bins: int = 10, subtitle: str = ""
) -> Path:
    """Reliability diagram of engagement probabilities (``subtitle``: e.g. map and ECE)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    xs, ys, ns = [], [], []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            xs.append(p[sel].mean())
            ys.append(y[sel].mean())
            ns.append(sel.sum())
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.scatter(xs, ys, s=20 + 200 * np.array(ns) / max(ns), color="#3b6ea5", label="bins")
    ax.plot(xs, ys, color="#3b6ea5")
    ax.set_xlabel("predicted engagement probability")
    ax.set_ylabel("observed engagement rate")
    ax.set_title("Engagement calibration (holdout)" + (f"\n{subtitle}" if subtitle else ""))
    ax.legend()
    return _save(fig, path)


def plot_lift(actual: np.ndarray, pred: np.ndarray, path: Path) -> Path:
    """Revenue by predicted decile: actual vs predicted mean per decile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame({"actual": actual, "pred": pred})
    frame["decile"] = pd.qcut(frame["pred"].rank(method="first"), 10, labels=False) + 1
    agg = frame.groupby("decile")[["actual", "pred"]].mean()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(agg.index - 0.2, agg["actual"], width=0.4, label="actual", color="#3b6ea5")
    ax.bar(agg.index + 0.2, agg["pred"], width=0.4, label="predicted", color="#e39b3b")
    ax.set_xlabel("predicted revenue decile (10 = highest)")
    ax.set_ylabel("mean revenue over horizon")
    ax.set_title("Revenue lift by decile (holdout)")
    ax.legend()
    return _save(fig, path)
