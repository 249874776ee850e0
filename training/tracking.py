"""MLflow tracking: store setup and the diagnostic plots logged with every training run."""

from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from partnerscore.features.core import PartnerscoreError, glob_escape
from partnerscore.features.parallel import signals_deferred
from partnerscore.models.model_uri import sqlite_file
from partnerscore.models.stores import reach_tracking_store


@contextmanager
def local_store_lock(tracking_uri: str) -> Iterator[None]:
    """Hold an exclusive lock on a local SQLite store's folder while the block runs.

    MLflow creates and migrates a new SQLite database on first contact, without a lock: two
    ``train`` runs that reached a new store together both ran the migrations, and one of them
    ended with "unexpected CommandError: Online migration expected to match one row ... in
    'alembic_version'" after all its work. Ctrl-C waits for the end of the block (a new
    store's migrations take about a second). Other stores (a server, PostgreSQL) pass through.
    """
    database = sqlite_file(tracking_uri)
    if database is None or database in ("", ":memory:"):  # no file (SQLite's in-memory store)
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    # a symlinked store is its target: SQLite opens (and creates) the file the link names
    try:
        database = Path(database).resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError: a link loop (Python < 3.13)
        raise PartnerscoreError(f"MLflow store {database}: symbolic link loop") from exc
    if database.is_dir():  # MLflow retried opening it for over a minute, then "unexpected"
        raise PartnerscoreError(
            f"MLflow store {database}: is a folder, expected the database file "
            f"(sqlite:///{database / 'mlflow.db'})"
        )
    folder = database.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise _cannot_create(database, exc) from exc
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as exc:  # ENOLCK (NFS without a lock daemon): "unexpected", exit 70
            raise _cannot_lock(database, exc) from exc
        with signals_deferred():  # MLflow's migrations are not one transaction: never half
            if not database.exists():
                create_sqlite_store(database)
            yield
    finally:
        os.close(handle)  # releases the lock


def _cannot_create(database: Path, exc: BaseException) -> PartnerscoreError:
    """The one line for a new SQLite store that cannot be created (read-only, disk full)."""
    if isinstance(exc, OSError):
        detail = exc.strerror or str(exc)
        if exc.filename and Path(exc.filename) != database:
            detail = f"{detail}: {exc.filename}"
    else:  # SQLAlchemy's: SQLite's own words (sqlite3.OperationalError)
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    return PartnerscoreError(f"MLflow store {database}: cannot create it: {detail}")


def _cannot_lock(database: Path, exc: OSError) -> PartnerscoreError:
    """The one line for a store folder whose lock the file system refuses (NFS, say)."""
    why = exc.strerror or str(exc)
    if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
        why += " (a file system without locks: put the store on a local disk, or use a server)"
    return PartnerscoreError(
        f"MLflow store {database}: cannot lock its folder {database.parent}: {why}"
    )


def create_sqlite_store(database: Path) -> None:
    """Create a new SQLite store whole: tables and every migration, then one rename.

    MLflow creates the file first and migrates it in place over about a second (more on a
    loaded machine). A job killed meanwhile (SIGKILL, a second Ctrl-C, which acts at once,
    a power cut) left a half-migrated file, and every later command stopped on it with
    "unexpected OperationalError: table ... already exists". Here the tables are built in a
    hidden file beside it, under the caller's lock; an earlier job's leftover is removed.

    Raises:
        PartnerscoreError: The file cannot be created (a read-only folder, a full disk): one
            line naming it; nothing is left behind.
    """
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables  # what MLflow runs on first contact

    leftovers = f".{glob_escape(database.name)}.partial-*"  # SQLite's journal beside it too
    for stale in database.parent.glob(leftovers):
        stale.unlink(missing_ok=True)
    partial = database.with_name(f".{database.name}.partial-{os.getpid()}")
    try:
        engine = sqlalchemy.create_engine(f"sqlite:///{partial}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        os.replace(partial, database)
    except BaseException as exc:
        # a read-only folder, a full disk: "unexpected OperationalError" (exit 70) before,
        # and the job's half-built partial stayed until the next job
        for left in database.parent.glob(leftovers):
            left.unlink(missing_ok=True)
        if isinstance(exc, OSError | sqlalchemy.exc.SQLAlchemyError):
            raise _cannot_create(database, exc) from exc
        raise


def setup_tracking(tracking_uri: str, experiment: str, artifact_root: str | None) -> str:
    """Point MLflow at the store and make sure the experiment exists.

    A new experiment on a local store gets ``artifact_root/<experiment>`` as its artifact
    location (otherwise MLflow would write ./mlruns in the current directory). A local SQLite
    store is created (or reached) under :func:`local_store_lock`, so jobs starting together
    on one new store take turns; an experiment another client created meanwhile is used. A
    server or database store is asked first whether it answers
    (:func:`~partnerscore.models.stores.reach_tracking_store`: one line, exit 69 or 2).

    Returns:
        The experiment id.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    reach_tracking_store(tracking_uri)  # one line now, not MLflow's minutes of retries
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with local_store_lock(tracking_uri):
        found = mlflow.get_experiment_by_name(experiment)
        if found is None:
            location = None
            database = sqlite_file(tracking_uri)
            if artifact_root is None and database is not None:
                # Beside the database, never MLflow's default ./mlruns in the current directory.
                artifact_root = (Path(database).parent / "artifacts").resolve().as_uri()
            if artifact_root and not tracking_uri.startswith(("http://", "https://", "databricks")):
                location = f"{artifact_root.rstrip('/')}/{experiment}"
            try:
                exp_id = mlflow.create_experiment(experiment, artifact_location=location)
            except mlflow.exceptions.MlflowException:
                found = mlflow.get_experiment_by_name(experiment)  # created meanwhile
                if found is None:
                    raise
                exp_id = found.experiment_id
        else:
            exp_id = found.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def _pyplot():
    """``matplotlib.pyplot`` on the Agg backend, imported without matplotlib's folder warnings.

    Where matplotlib cannot create its config and cache folder (``~/.config/matplotlib``: a
    read-only or missing HOME, e.g. a scheduler's ``HOME=/nonexistent``) it uses a temporary
    folder, removed at exit, and said so in two WARNING lines on every ``train``'s stderr,
    advising MPLCONFIGDIR. The fallback is kept; only its lines are left out (MPLCONFIGDIR,
    when set, is used as before).
    """
    import logging

    logger = logging.getLogger("matplotlib")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    finally:
        logger.setLevel(level)
    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)
    return path


def plot_importance(importance: pd.Series, title: str, path: Path, top: int = 20) -> Path:
    """Horizontal bar chart of the top features by gain."""
    plt = _pyplot()

    imp = importance.head(top)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(imp) + 1.2))
    ax.barh(imp.index, imp.to_numpy(), color="#3b6ea5")
    ax.set_title(title)
    ax.set_xlabel("total gain")
    return _save(fig, path)


def plot_shap_summary(contrib: np.ndarray, X: pd.DataFrame, title: str, path: Path) -> Path:
    """SHAP beeswarm summary (shap's own plot) of raw-margin contributions."""
    plt = _pyplot()
    import shap

    data = X.copy()
    for col in data.columns:
        if isinstance(data[col].dtype, pd.CategoricalDtype):
            data[col] = data[col].cat.codes.astype(float).where(data[col].notna())
    explanation = shap.Explanation(
        values=contrib, data=data.to_numpy(dtype=float), feature_names=list(X.columns)
    )
    with warnings.catch_warnings():
        # a feature missing in every shown row (common on a small holdout) has no colour
        # range: shap's nanpercentile warned "All-NaN slice encountered" on train's stderr
        warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
        shap.plots.beeswarm(explanation, max_display=15, show=False)
    fig = plt.gcf()
    fig.suptitle(title)
    return _save(fig, path)


def plot_calibration(
    y: np.ndarray, p: np.ndarray, path: Path, bins: int = 10, subtitle: str = ""
) -> Path:
    """Reliability diagram of engagement probabilities (``subtitle``: e.g. map and ECE)."""
    plt = _pyplot()

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
    plt = _pyplot()

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


def _window(frame: pd.DataFrame, column: str) -> str:
    """``min .. max`` of a date column as days (empty when absent or empty)."""
    if column not in frame or frame.empty:
        return ""
    values = pd.to_datetime(frame[column])
    return f"{values.min():%Y-%m-%d} .. {values.max():%Y-%m-%d}"


def data_window(train: pd.DataFrame, holdout: pd.DataFrame) -> dict[str, str | int]:
    """Rows, partners, signing and snapshot windows of the training and holdout cohorts."""
    out: dict[str, str | int] = {}
    for name, frame in (("train", train), ("holdout", holdout)):
        out[f"{name}_rows"] = len(frame)
        out[f"{name}_partners"] = int(frame["partner_id"].nunique()) if len(frame) else 0
        out[f"{name}_signed"] = _window(frame, "signed_at")
        out[f"{name}_as_of"] = _window(frame, "as_of")
    return out


def describe_training(
    window: dict[str, str | int],
    metrics: dict[str, float],
    baselines: dict[str, dict[str, float]],
    refit_rows: int | None = None,
) -> str:
    """Markdown description of a training run / model version: data window and metrics."""

    def fmt(key: str, spec: str = ".3f") -> str:
        value = metrics.get(key, float("nan"))
        return format(value, spec) if np.isfinite(value) else "n/a"

    best = max(
        baselines.items(),
        key=lambda item: item[1].get("primary_score", float("-inf")),
        default=(None, {}),
    )
    lines = [
        f"Trained on {window['train_rows']:,} snapshots of {window['train_partners']:,} partners "
        f"signed {window['train_signed']} (snapshots {window['train_as_of']}); "
        f"holdout {window['holdout_rows']:,} snapshots of {window['holdout_partners']:,} "
        f"partners signed {window['holdout_signed']} (newest signing cohorts).",
        "",
        f"Holdout: primary score {fmt('primary_score')}, revenue normalized Gini "
        f"{fmt('revenue_normalized_gini')}, top-decile capture "
        f"{fmt('revenue_top_decile_capture')}, portfolio bias "
        f"{fmt('revenue_portfolio_bias', '+.1%')}; engagement ROC AUC "
        f"{fmt('engagement_roc_auc')}, Brier {fmt('engagement_brier')}, ECE "
        f"{fmt('engagement_ece')}.",
    ]
    if best[0] is not None:
        score = best[1].get("primary_score", float("nan"))
        lines.append(f"Best baseline ({best[0]}): primary score {score:.3f}.")
    if refit_rows:
        lines.append(
            f"The registered model was refitted on all {refit_rows:,} snapshots (holdout "
            "metrics are the pre-refit model's)."
        )
    return "\n".join(lines)


def log_datasets(
    train: pd.DataFrame, holdout: pd.DataFrame, source: str | Path, sha256: str = ""
) -> None:
    """Log the training and holdout cohorts as MLflow dataset inputs of the active run.

    Each is a :func:`mlflow.data.from_pandas` dataset (digest, source = the training set file,
    schema), logged with context ``training`` / ``holdout`` and a ``sha256`` tag of the file.
    """
    import mlflow.data

    from partnerscore.models.pyfunc import text_as_object

    for name, frame, context in (
        ("training_cohorts", train, "training"),
        ("holdout_cohorts", holdout, "holdout"),
    ):
        with warnings.catch_warnings():  # "source can be interpreted in multiple ways", ints
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(text_as_object(frame), source=str(source), name=name)
            mlflow.log_input(dataset, context=context, tags={"sha256": sha256} if sha256 else None)


def log_trials(studies: dict, parent_run_id: str, experiment_id: str) -> int:
    """One nested child run per Optuna trial (params, loss, fold losses, state).

    Runs are named ``<head>-trial-<n>`` and tagged ``partnerscore.head``, ``optuna.state`` and
    ``optuna.best`` (the chosen trial of each head). Logged with batched client calls.

    Returns:
        The number of child runs created.
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    client = mlflow.MlflowClient()
    created = 0
    for head, study in studies.items():
        if study is None:
            continue
        best = study.best_trial.number
        for trial in study.trials:
            start = trial.datetime_start or trial.datetime_complete
            start_ms = int(start.timestamp() * 1000) if start else None
            end = trial.datetime_complete or start
            end_ms = int(end.timestamp() * 1000) if end else None
            name = f"{head}-trial-{trial.number}"
            run = client.create_run(
                experiment_id,
                start_time=start_ms,
                tags={
                    MLFLOW_PARENT_RUN_ID: parent_run_id,
                    MLFLOW_RUN_NAME: name,
                    "partnerscore.head": head,
                    "optuna.state": trial.state.name,
                    "optuna.best": str(trial.number == best).lower(),
                },
                run_name=name,
            )
            ts = end_ms or 0
            metrics = [
                Metric("fold_mean_loss", float(v), ts, int(step))
                for step, v in sorted(trial.intermediate_values.items())
            ]
            if trial.value is not None:
                metrics.append(Metric("loss", float(trial.value), ts, 0))
            if "n_estimators" in trial.user_attrs:
                metrics.append(
                    Metric("n_estimators", float(trial.user_attrs["n_estimators"]), ts, 0)
                )
            params = [Param(k, str(v)) for k, v in trial.params.items()]
            params += [Param("head", head), Param("trial", str(trial.number))]
            client.log_batch(
                run.info.run_id,
                metrics=metrics,
                params=params,
                tags=[RunTag("optuna.study", study.study_name)],
            )
            client.set_terminated(run.info.run_id, status="FINISHED", end_time=end_ms)
            created += 1
    return created
