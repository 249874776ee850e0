"""The application configuration: shipped defaults, one optional file override, one hash."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator

from partnerscore.features.config import (
    BuildConfig,
    MonitorConfig,
    SimulateConfig,
    ValidateConfig,
    engagement_period_conflict,
)
from partnerscore.features.core import (
    FrozenConfig,
    PartnerscoreError,
    existing_file,
    file_fingerprint,
    read_text_file,
    stable_hash,
)
from partnerscore.models.config import PolicyConfig
from partnerscore.models.milestones import IncentivesConfig
from partnerscore.models.model_uri import check_tracking_uri, sqlite_file
from partnerscore.training.config import TrainConfig


class PathsConfig(FrozenConfig):
    """Working folders (relative paths resolve against the current directory).

    Attributes:
        data_dir: Root of the working data folders.
        mlflow_dir: Folder of the local SQLite MLflow store and its artifacts.
        history_url: Score-history database URL; default is a SQLite file under data_dir/scores.
    """

    data_dir: str = "data"
    mlflow_dir: str = "data/mlflow"
    history_url: str | None = None

    @field_validator("history_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from partnerscore.serving.database import database_url

        database_url(value)  # the stores' own rule: accepted here if and only if they open it
        return value

    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI if set, else the local SQLite store under ``mlflow_dir``."""
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env:
            return check_tracking_uri(env, "MLFLOW_TRACKING_URI")
        db = (Path(self.mlflow_dir) / "mlflow.db").resolve()
        return f"sqlite:///{db}"

    def artifact_root(self) -> str | None:
        """Artifact folder used for experiments created by partnerscore on a local store.

        ``mlflow_dir/artifacts`` beside the default store. A SQLite store named by
        MLFLOW_TRACKING_URI keeps its artifacts beside its own database (None: see
        :func:`~partnerscore.training.tracking.setup_tracking`): ``mlflow_dir`` is relative to
        the folder a job runs in, so a team store's models were written under each user's
        ``./data/mlflow/artifacts`` and could not be loaded from anywhere else.
        """
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env and sqlite_file(env) is not None:
            return None
        return (Path(self.mlflow_dir) / "artifacts").resolve().as_uri()

    def history_database(self) -> str:
        """The score-history database URL."""
        if self.history_url:
            return self.history_url
        return f"sqlite:///{(Path(self.data_dir) / 'scores' / 'history.sqlite').resolve()}"


def store_exists(url: str) -> bool:
    """Whether a history store has been written to.

    A missing ``sqlite:///`` file means an empty store (nothing to read, nothing created by
    asking); any other database URL names a server, which is taken to exist. No SQLAlchemy.
    """
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).exists()
    return True


class ScoreConfig(FrozenConfig):
    """Batch-scoring guards.

    Attributes:
        as_of_tolerance_days: Refuse an as_of more than this many days after the newest event
            in the raw data (scores would describe a present the data does not cover).
        overrides_path: CSV/Parquet of account owners' manual overrides (partner_id, tier,
            action, reason, expires; ``score --overrides FILE``), honoured until they expire.
    """

    as_of_tolerance_days: int = Field(default=45, ge=0)
    overrides_path: str | None = None


class WhatIfConfig(FrozenConfig):
    """Scenario planning in the scoring job.

    Attributes:
        upgrade_max_partners: Batches up to this size get each partner's smallest actionable
            changes to reach the next tier (``next_tier_changes``); larger batches skip it.
        upgrade_grid: Values tried per actionable feature and search step.
        upgrade_max_steps: Most features changed in one suggestion.
    """

    upgrade_max_partners: int = Field(default=5000, ge=0)
    upgrade_grid: int = Field(default=5, ge=1, le=50)
    upgrade_max_steps: int = Field(default=3, ge=1, le=10)


HASH_EXCLUDES = {"paths"}
"""Sections of the configuration its hash leaves out: where files live, not what is computed."""

HASH_CONTENT_KEYS = {
    ("policy", "playbook_path"): "playbook file",
    ("score", "overrides_path"): "overrides file",
}
"""Keys naming an input file whose content decides results: the hash takes the file's bytes
(SHA-256), not its path, so an edited file changes the hash and a moved copy keeps it."""


def content_fingerprint(path: str, key: str, what: str) -> str:
    """SHA-256 of the bytes of the file a :data:`HASH_CONTENT_KEYS` key names, or one line.

    Raises:
        PartnerscoreError: Missing, a folder or unreadable: ``<path>: <what> (config key
            <key>) not found`` and the like.
    """
    what = f"{what} (config key {key})"
    checked = existing_file(path, what)
    try:
        return file_fingerprint(checked)
    except OSError as exc:
        raise PartnerscoreError(f"{checked}: cannot read {what}: {exc.strerror or exc}") from exc


class AppConfig(FrozenConfig):
    """Everything configurable, with shipped defaults."""

    paths: PathsConfig = PathsConfig()
    simulate: SimulateConfig = SimulateConfig()
    validation: ValidateConfig = ValidateConfig()
    build: BuildConfig = BuildConfig()
    score: ScoreConfig = ScoreConfig()
    train: TrainConfig = TrainConfig()
    policy: PolicyConfig = PolicyConfig()
    monitor: MonitorConfig = MonitorConfig()
    incentives: IncentivesConfig = IncentivesConfig()
    whatif: WhatIfConfig = WhatIfConfig()

    @model_validator(mode="after")
    def _engagement_period_fits_the_horizon(self) -> AppConfig:
        conflict = engagement_period_conflict(self.build)
        if conflict is not None:
            raise ValueError(conflict)
        return self

    def hash(self) -> str:
        """Stable hash logged with every run and stamped on every score row.

        It identifies the settings that decide results: every section but ``paths`` (where
        the data folder, the MLflow store and the score history live). The same settings run
        from another folder, or with the history on PostgreSQL instead of SQLite, stamp the
        same hash. Until 2026-12-06 ``paths`` was hashed too (README, "Configuration"): a
        hash stamped before then differs from today's for the same settings. The files that
        :data:`HASH_CONTENT_KEYS` name enter by their content (until 2026-12-06 by their
        path: an edited playbook kept the hash, a moved copy changed it).

        Raises:
            PartnerscoreError: Such a file cannot be read (one line naming it and its key).
        """
        payload = self.model_dump(mode="json", exclude=HASH_EXCLUDES)
        for (section, key), what in HASH_CONTENT_KEYS.items():
            path = payload[section][key]
            if path is not None:
                payload[section][key] = {
                    "sha256": content_fingerprint(path, f"{section}.{key}", what)
                }
        return stable_hash(payload)

    def train_arguments(self) -> dict:
        """The keywords of ``run_train`` this configuration decides.

        The policy bundled with the model, where the run is tracked and its artifacts go, and
        the config hash it logs (``train``, ``demo`` and the tests' stores alike).
        """
        return {
            "policy": self.policy,
            "tracking_uri": self.paths.tracking_uri(),
            "artifact_root": self.paths.artifact_root(),
            "config_hash": self.hash(),
        }


def load_config(path: str | Path | None = None) -> AppConfig:
    """Load the shipped defaults, overridden by one JSON, TOML or YAML file.

    Args:
        path: Optional override file; keys not given keep their defaults.

    Returns:
        The validated, frozen configuration.

    Raises:
        PartnerscoreError: The file is missing, unreadable or has unknown or invalid keys.
    """
    if path is None:
        return AppConfig()
    path = Path(path)
    text = read_text_file(path, "config file")
    if not text.strip():  # a truncated copy, not "no overrides" (that is no config file)
        raise PartnerscoreError(f"{path}: empty config file (give the keys to override)")
    try:
        suffix = path.suffix.lower()
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise PartnerscoreError(f"{path}: config must be .json, .toml or .yaml")
    except PartnerscoreError:
        raise
    except Exception as exc:  # parse errors of three libraries
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PartnerscoreError(f"{path}: cannot parse config: {first}") from exc
    try:
        return AppConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a rule between keys (AppConfig's own validator) names them
            raise PartnerscoreError(f"{path}: {err['msg'].removeprefix('Value error, ')}") from exc
        where = ".".join(str(p) for p in err["loc"])
        raise PartnerscoreError(f"{path}: config key '{where}': {err['msg']}") from exc
