"""The scoring job's model, version and reference profile, without MLflow's fixed costs.

``mlflow.pyfunc.load_model("models:/partnerscore@champion")`` costs ~4 s of CPU on 2 cores before
a row is scored: importing MLflow (~2.5 s), creating its SQLAlchemy tracking store (schema check),
copying the artifacts to a temporary folder and checking every pinned requirement; the version
and the reference profile cost two more client round trips. In the common case -- the SQLite
tracking store and local artifact folders that ``train`` writes -- everything the job needs is a
few registry rows and files already on disk:

- alias or version -> (version, run id, storage location): ``registered_model_aliases`` and
  ``model_versions``, read through a read-only SQLite connection;
- the :class:`PartnerModel`: the pyfunc's ``partner_model`` artifact, at the path its ``MLmodel``
  file declares (the same ``joblib`` file ``PartnerScorePyfunc.load_context`` loads); with
  ``lean=True`` its ``partner_model_scoring`` artifact instead when the version has one
  (``PartnerModel.scoring_view``: the same scores without importing LightGBM or scikit-learn,
  ~2 s of CPU in every score process);
- the reference profile: ``monitoring/reference_profile.json`` in the run's artifact folder
  (``runs.artifact_uri``).

Anything else -- a tracking server or PostgreSQL store, remote artifacts, ``runs:/`` URIs, a
version that is not ``READY``, a registry layout this module does not recognise -- goes through
MLflow exactly as before (:func:`load_scoring_model` falls back by itself). Either way a
version whose registration by ``train`` did not finish is refused before it loads
(:func:`refuse_unfinished`).
``tests/serving/test_model_store.py`` checks that both ways give the same scores, version and
profile.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from partnerscore.features.core import PartnerscoreError
from partnerscore.models.model_uri import (
    MODELS_URI,
    check_registry,
    incomplete_version,
    missing_registry,
    unknown_name,
)
from partnerscore.models.stores import raise_if_unreachable

ARTIFACT_KEY = "partner_model"  # models/pyfunc.py: the pyfunc's artifact holding PartnerModel
SCORING_ARTIFACT_KEY = "partner_model_scoring"  # models/pyfunc.py: its scoring view
PYFUNC_LOADER = "mlflow.pyfunc.model"
REFERENCE_ARTIFACT = "monitoring/reference_profile.json"  # training/reference.py
DELETED_STAGE = "Deleted_Internal"  # MLflow's mark of a deleted model version
DEFAULT_WORKSPACE = "default"


@dataclass(frozen=True)
class LocatedModel:
    """A registered model version whose files are on this machine.

    Attributes:
        uri: The models:/ URI it was located from.
        version: Registry version.
        run_id: The training run that logged it.
        model_file: The pickled PartnerModel (``<model>/artifacts/partner_model.joblib``).
        run_artifacts: The run's artifact folder (None when not on a local disk).
        scoring_file: Its pickled scoring view (None for versions logged without one).
    """

    uri: str
    version: str
    run_id: str
    model_file: Path
    run_artifacts: Path | None
    scoring_file: Path | None = None


def local_folder(uri: str | None) -> Path | None:
    """The existing local folder a ``file://`` URI or absolute path names, else None."""
    if not uri:
        return None
    if uri.startswith("file:"):
        parsed = urllib.parse.urlparse(uri)
        if parsed.netloc not in ("", "localhost") or parsed.query:
            return None
        path = Path(urllib.request.url2pathname(parsed.path))
    elif uri.startswith("/"):
        path = Path(uri)
    else:
        return None
    return path if path.is_dir() else None


def _registry_file(tracking_uri: str) -> Path | None:
    """The database file of a local SQLite registry read directly, else None.

    A ``sqlite:///`` URI without a query whose file exists; anything else MLflow answers for.
    """
    if not tracking_uri.startswith("sqlite:///") or "?" in tracking_uri:
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    return db if db.is_file() else None


@contextmanager
def _read_only(db: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the registry file ``db`` (never creates or writes it)."""
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        yield con
    finally:
        con.close()


def _aliases(con: sqlite3.Connection, name: str, alias: str) -> list[dict]:
    """The registry rows of ``alias`` of the registered model ``name`` (any workspace)."""
    return _rows(
        con,
        "SELECT * FROM registered_model_aliases WHERE name = ? AND alias = ?",
        (name, alias),
    )


def _rows(con: sqlite3.Connection, sql: str, args: tuple) -> list[dict]:
    cur = con.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _in_default_workspace(row: dict) -> bool:
    return row.get("workspace") in (None, DEFAULT_WORKSPACE)


def _pyfunc_artifacts(model_dir: Path) -> dict[str, Path] | None:
    """The artifact files of a logged partnerscore pyfunc folder, or None if it is not one.

    Keys are the artifact names (``partner_model``, always there; ``partner_model_scoring``);
    a declared file that is missing or outside the folder is left out.
    """
    import yaml

    try:
        spec = yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    flavor = (spec.get("flavors") or {}).get("python_function") or {}
    if flavor.get("loader_module") != PYFUNC_LOADER:
        return None
    declared = flavor.get("artifacts") or {}
    out = {}
    for key in (ARTIFACT_KEY, SCORING_ARTIFACT_KEY):
        artifact = declared.get(key) or {}
        if not isinstance(artifact, dict) or not artifact.get("path"):
            continue
        path = (model_dir / artifact["path"]).resolve()
        if path.is_file() and path.is_relative_to(model_dir.resolve()):
            out[key] = path
    return out if ARTIFACT_KEY in out else None


def locate_model(uri: str, tracking_uri: str) -> LocatedModel | None:
    """Find a models:/ URI's version and local files in a SQLite registry.

    Args:
        uri: ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.
        tracking_uri: The tracking (and registry) URI.

    Returns:
        The located version, or None whenever MLflow itself must answer (not a SQLite file
        store, not a models:/ URI, unknown alias or version, a version that is not READY or was
        deleted, rows of another workspace, artifacts not on a local disk, or any registry
        layout or read error).
    """
    match = MODELS_URI.fullmatch(uri)
    db = _registry_file(tracking_uri)
    if not match or db is None:
        return None
    name, version, alias = match.groups()
    try:
        with _read_only(db) as con:
            if alias is not None:
                found = _aliases(con, name, alias)
                if len(found) != 1 or not _in_default_workspace(found[0]):
                    return None
                version = str(found[0]["version"])
            versions = _rows(
                con,
                "SELECT * FROM model_versions WHERE name = ? AND version = ?",
                (name, int(version)),
            )
            if len(versions) != 1 or not _in_default_workspace(versions[0]):
                return None
            mv = versions[0]
            if mv.get("status") != "READY" or mv.get("current_stage") == DELETED_STAGE:
                return None
            runs = _rows(con, "SELECT * FROM runs WHERE run_uuid = ?", (mv.get("run_id"),))
    except (sqlite3.Error, KeyError, ValueError):
        return None
    model_dir = local_folder(mv.get("storage_location"))
    files = _pyfunc_artifacts(model_dir) if model_dir is not None else None
    if files is None:
        return None
    run_artifacts = local_folder(runs[0].get("artifact_uri")) if len(runs) == 1 else None
    run_id = str(mv.get("run_id") or "")
    return LocatedModel(
        uri,
        str(version),
        run_id,
        files[ARTIFACT_KEY],
        run_artifacts,
        files.get(SCORING_ARTIFACT_KEY),
    )


def missing_model(uri: str, tracking_uri: str) -> str | None:
    """Why ``uri`` certainly names no model to load in a local SQLite registry, or None.

    A cheap check for the score job to run before any work (the model itself loads in a
    helper thread while the tables are read, so an unknown alias would otherwise stop the run
    only after the features are built). None whenever the answer is not certain from the
    registry tables (not a SQLite file store, not a models:/ URI, no or an unreadable database
    file): the load then says what is wrong. An alias or version is missing only when no
    workspace holds it; one that is there is refused still when its registration by ``train``
    did not finish (:func:`unfinished_model`).

    Args:
        uri: ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.
        tracking_uri: The tracking (and registry) URI.

    Returns:
        A one-line error (``cannot load model '<uri>': ...``), or None.
    """
    match = MODELS_URI.fullmatch(uri)
    # no registry file at all: None (the input checks still run first, then the load)
    db = _registry_file(tracking_uri)
    if not match or db is None:
        return None
    name, version, alias = match.groups()
    try:
        with _read_only(db) as con:
            held = sorted({row[0] for row in con.execute("SELECT name FROM registered_models")})
            if held and name not in held:  # a typo of the name: say which the store holds
                return f"cannot load model '{uri}': {unknown_name(name, held)}"
            if alias is not None:
                found = con.execute(
                    "SELECT 1 FROM registered_model_aliases WHERE name = ? AND alias = ?",
                    (name, alias),
                ).fetchone()
                what = f"registered model '{name}' has no alias '{alias}'"
            else:
                found = con.execute(
                    "SELECT 1 FROM model_versions WHERE name = ? AND version = ?",
                    (name, int(version)),
                ).fetchone()
                what = f"registered model '{name}' has no version {version}"
    except (sqlite3.Error, ValueError):
        return None
    if found is not None:  # there: refused still if its registration did not finish
        return unfinished_model(uri, tracking_uri)
    hint = " (promote a version first)" if alias == "champion" else ""
    return f"cannot load model '{uri}': {what}{hint}"


def refuse_missing_model(uri: str, tracking_uri: str) -> None:
    """Raise :func:`missing_model`'s line, if any (a job's check before any work).

    Raises:
        PartnerscoreError: ``uri`` certainly names no model to load.
    """
    problem = missing_model(uri, tracking_uri)
    if problem is not None:
        raise PartnerscoreError(problem)


def unfinished_model(uri: str, tracking_uri: str) -> str | None:
    """Why the registered version ``uri`` names must not be loaded, or None.

    Its registration by ``train`` did not finish (:func:`~partnerscore.models.model_uri.
    incomplete_version`, the rule ``promote`` applies too). The version's tags are read from a
    local SQLite registry directly (MLflow is not imported), from any other store through
    MLflow. None for a URI that names no registered version (a run, a logged model, a local
    folder) and for an alias or version the store lacks (the load says so).

    Args:
        uri: The model URI.
        tracking_uri: The tracking (and registry) URI.

    Returns:
        A one-line error (``cannot load model '<uri>': version V of '<name>' is incomplete:
        ...``), or None.
    """
    match = MODELS_URI.fullmatch(uri)
    if not match:
        return None
    name, version, alias = match.groups()
    db = _registry_file(tracking_uri)
    if db is not None:
        try:
            with _read_only(db) as con:
                if alias is not None:
                    found = [r for r in _aliases(con, name, alias) if _in_default_workspace(r)]
                    if len(found) != 1:
                        return None
                    version = str(found[0]["version"])
                rows = _rows(
                    con,
                    "SELECT * FROM model_version_tags WHERE name = ? AND version = ?",
                    (name, int(version)),
                )
            tags = {r["key"]: r["value"] for r in rows if _in_default_workspace(r)}
            return incomplete_version(uri, version, tags)
        except (sqlite3.Error, KeyError, ValueError):
            pass  # a layout this module does not know: MLflow answers
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        mv = (
            client.get_model_version_by_alias(name, alias)
            if alias is not None
            else client.get_model_version(name, version)
        )
    except MlflowException as exc:
        raise_if_unreachable(exc)
        return None
    return incomplete_version(uri, str(mv.version), dict(mv.tags or {}))


def refuse_unfinished(uri: str, tracking_uri: str) -> None:
    """Raise :func:`unfinished_model`'s line, if any (before a registered version is loaded).

    Raises:
        PartnerscoreError: The version's registration by ``train`` did not finish.
    """
    problem = unfinished_model(uri, tracking_uri)
    if problem is not None:
        raise PartnerscoreError(problem)


def champion_version(uri: str, registered_model: str, tracking_uri: str) -> str | None:
    """The version the registry's ``champion`` alias names, or None (no registry, no alias).

    Of the registered model ``uri`` names (``models:/<name>/...``), else of
    ``registered_model``. Read from a local SQLite registry directly; any other store through
    MLflow. A missing SQLite file is no registry: nothing is created.
    """
    match = MODELS_URI.fullmatch(uri)
    name = match.group(1) if match else registered_model
    if missing_registry(tracking_uri) is not None:  # also with a query: MLflow would create it
        return None
    db = _registry_file(tracking_uri)
    if db is not None:
        try:
            with _read_only(db) as con:
                found = [
                    row for row in _aliases(con, name, "champion") if _in_default_workspace(row)
                ]
            return str(found[0]["version"]) if len(found) == 1 else None
        except sqlite3.Error:
            pass  # a layout this module does not know: MLflow answers
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        return str(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException as exc:
        raise_if_unreachable(exc)
        return None


def load_located(located: LocatedModel, lean: bool = False):
    """The PartnerModel of a located version, with ``metadata["version"]`` set.

    ``lean``: its scoring view when the version has one (scores only; no booster).
    """
    if lean and located.scoring_file is not None:
        import pickle

        with open(located.scoring_file, "rb") as file:
            model = pickle.load(file)
    else:
        import joblib

        model = joblib.load(located.model_file)
    model.metadata["version"] = located.version
    return model


def located_reference(located: LocatedModel) -> dict | None:
    """The version's reference profile from its run folder (None when the run logged none)."""
    if located.run_artifacts is None:
        return None
    path = located.run_artifacts / REFERENCE_ARTIFACT
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass
class ScoringModel:
    """What the scoring job needs from the registry.

    Attributes:
        model: The PartnerModel (``metadata["version"]`` set).
        version: Registry version ('' when not registered).
        reference: The training run's reference profile (None without one).
        fast: Whether it was read from the store's files directly (False: through MLflow).
    """

    model: object
    version: str
    reference: dict | None
    fast: bool


def load_through_mlflow(uri: str, tracking_uri: str):
    """The model behind ``uri`` as MLflow's pyfunc loads it, and its registry version.

    MLflow's tracking and registry URIs are set to ``tracking_uri`` first (so the run's
    artifacts read after it come from the same store). The version is ``''`` when the URI
    names none MLflow can resolve (a run or a local folder). Shared by
    :func:`load_scoring_model` (when :func:`locate_model` does not find the model) and the
    monitor job, which reads its model's run through MLflow anyway.

    Returns:
        (:class:`~partnerscore.models.bundle.PartnerModel`, version).

    Raises:
        PartnerscoreError: MLflow cannot load the URI; a version whose registration by
            ``train`` did not finish (:func:`refuse_unfinished`, before anything is loaded).
    """
    import mlflow

    from partnerscore.models.pyfunc import load_partner_model, model_version_of

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    refuse_unfinished(uri, tracking_uri)
    model = load_partner_model(uri)
    try:
        version = model_version_of(uri)
    except mlflow.exceptions.MlflowException as exc:
        raise_if_unreachable(exc)
        version = ""
    return model, version


def load_scoring_model(uri: str, tracking_uri: str, lean: bool = False) -> ScoringModel:
    """The model behind ``uri``, its registry version and reference profile.

    Read directly from the SQLite registry and the local artifact folders when
    :func:`locate_model` finds them; through MLflow otherwise (imported only then).
    ``lean``: the version's scoring view when it has one (for jobs that only score: the same
    scores, drivers and upgrade paths; no booster for ``predict``-style or training use).

    Raises:
        PartnerscoreError: MLflow cannot load the URI (e.g. no ``champion`` yet); a version
            whose registration by ``train`` did not finish (:func:`refuse_unfinished`).
    """
    check_registry(tracking_uri, uri)  # else MLflow would create an empty one
    located = locate_model(uri, tracking_uri)
    if located is not None:
        refuse_unfinished(uri, tracking_uri)  # through MLflow, load_through_mlflow refuses it
        return ScoringModel(
            load_located(located, lean), located.version, located_reference(located), True
        )
    from partnerscore.training.reference import load_reference_profile

    model, version = load_through_mlflow(uri, tracking_uri)
    model.metadata["version"] = version
    # a local folder's run is looked up in the store: not in one that is not there (MLflow
    # would create it)
    reference = None
    if missing_registry(tracking_uri) is None:
        reference = load_reference_profile(uri, required=False)
    return ScoringModel(model, version, reference, False)
