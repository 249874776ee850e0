"""Score history: every scoring run's rows, keyed by (partner_id, as_of, model_version).

An embedded SQLite file by default; any SQLAlchemy database URL (e.g. PostgreSQL) for a team.
Re-running the same as_of with the same model replaces its rows (idempotent). Core columns are
real columns; feature values, subscores and drivers ride along in a JSON payload so the table
survives feature changes between model versions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from partnerscore.features.core import PartnerscoreError

CORE = {
    "partner_id": sa.String(200),
    "as_of": sa.String(32),
    "model_version": sa.String(64),
    "age_days": sa.Float,
    "score": sa.Float,
    "score_smoothed": sa.Float,
    "pred_revenue": sa.Float,
    "pred_engagement": sa.Float,
    "score_tier": sa.String(32),
    "quadrant": sa.String(64),
    "provisional": sa.Boolean,
    "guardrail_flag": sa.Boolean,
    "config_hash": sa.String(32),
}
KEY = ("partner_id", "as_of", "model_version")
_PAYLOAD_PREFIXES = ("revenue_", "engagement_", "score_")


def _as_of_text(values) -> list[str]:
    return [pd.Timestamp(v).strftime("%Y-%m-%dT%H:%M:%S") for v in values]


def _clean(value):
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


class ScoreHistory:
    """The score-history store.

    Args:
        url: SQLAlchemy database URL; a ``sqlite:///`` file's folder is created on first write.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: sa.Engine | None = None
        self.metadata = sa.MetaData()
        self.table = sa.Table(
            "score_history",
            self.metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            *(sa.Column(name, kind, nullable=name not in KEY) for name, kind in CORE.items()),
            sa.Column("payload", sa.Text, nullable=False),
            sa.UniqueConstraint(*KEY, name="uq_score_history_key"),
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Database problems (locked, unreachable, read-only) as one line naming the store."""
        try:
            yield
        except sa.exc.SQLAlchemyError as exc:
            detail = str(getattr(exc, "orig", None) or exc).splitlines()[0][:160]
            shown = sa.engine.make_url(self.url).render_as_string(hide_password=True)
            raise PartnerscoreError(f"score history {shown}: {detail}") from exc
        except OSError as exc:
            raise PartnerscoreError(f"score history {self.url}: {exc.strerror or exc}") from exc

    @property
    def engine(self) -> sa.Engine:
        """The engine, created lazily (nothing touches the database before first use)."""
        if self._engine is None:
            if self.url.startswith("sqlite:///"):
                Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self._engine = sa.create_engine(self.url)
            self.metadata.create_all(self._engine)
        return self._engine

    def exists(self) -> bool:
        """Whether the store has been written to (a missing SQLite file means no history)."""
        if self.url.startswith("sqlite:///"):
            return Path(self.url.removeprefix("sqlite:///")).exists()
        return True

    def upsert(self, scores: pd.DataFrame) -> int:
        """Insert score rows, replacing rows with the same (partner_id, as_of, model_version).

        Core columns are stored as columns; every other column except drivers and ``shap_*``
        (feature values, subscores, percentiles, ...) goes into the JSON payload. One
        transaction: a failed upsert leaves the store as it was.

        Returns:
            Number of rows written.
        """
        if scores.empty:
            return 0
        scores = scores.reset_index(drop=True)
        core = pd.DataFrame(index=scores.index)
        for name in CORE:
            if name in scores.columns:
                core[name] = scores[name].astype(object).where(scores[name].notna(), None)
            else:
                core[name] = None
        core["as_of"] = _as_of_text(scores["as_of"])
        core["model_version"] = scores.get("model_version", pd.Series("", index=scores.index))
        core["model_version"] = core["model_version"].fillna("").astype(str)
        core["partner_id"] = scores["partner_id"].astype(str)
        payload_cols = [
            c
            for c in scores.columns
            if c not in CORE and not c.startswith("shap_") and not c.startswith("driver_")
        ]
        payload = scores[payload_cols].to_json(
            orient="records", lines=True, date_format="iso", double_precision=15
        )
        core["payload"] = payload.splitlines() if payload_cols else ["{}"] * len(scores)
        records = [
            {name: _clean(value) for name, value in rec.items()} for rec in core.to_dict("records")
        ]
        t = self.table
        with self._errors(), self.engine.begin() as conn:
            for (as_of_value, version), group in core.groupby(["as_of", "model_version"]):
                ids = group["partner_id"].tolist()
                for start in range(0, len(ids), 500):
                    conn.execute(
                        t.delete().where(
                            t.c.as_of == as_of_value,
                            t.c.model_version == version,
                            t.c.partner_id.in_(ids[start : start + 500]),
                        )
                    )
            conn.execute(t.insert(), records)
        return len(records)

    def _select(self, partner_ids: list[str] | None, before=None) -> pd.DataFrame:
        if not self.exists():
            return pd.DataFrame(columns=[*CORE, "payload", "id"])
        t = self.table
        query = sa.select(t)
        if before is not None:
            query = query.where(t.c.as_of < _as_of_text([before])[0])
        frames = []
        with self._errors(), self.engine.connect() as conn:
            if partner_ids is None:
                frames.append(pd.DataFrame(conn.execute(query).mappings().all()))
            else:
                ids = [str(p) for p in partner_ids]
                for start in range(0, len(ids), 500):
                    chunk = query.where(t.c.partner_id.in_(ids[start : start + 500]))
                    frames.append(pd.DataFrame(conn.execute(chunk).mappings().all()))
        frames = [f for f in frames if not f.empty]
        if not frames:
            return pd.DataFrame(columns=[*CORE, "payload", "id"])
        data = pd.concat(frames, ignore_index=True)
        # one row per (partner, as_of): the latest write wins when several model versions scored it
        data = data.sort_values("id").drop_duplicates(["partner_id", "as_of"], keep="last")
        return data.sort_values(["partner_id", "as_of"], kind="stable").reset_index(drop=True)

    def read(self, partner_ids: list[str] | None = None) -> pd.DataFrame:
        """History rows with the payload expanded into columns, ordered by partner_id, as_of."""
        data = self._select(partner_ids)
        if data.empty:
            return pd.DataFrame(columns=list(CORE))
        payload = pd.DataFrame([json.loads(p) for p in data["payload"]])
        payload = payload[[c for c in payload.columns if c not in data.columns]]
        out = pd.concat([data.drop(columns=["payload", "id"]), payload], axis=1)
        out["as_of"] = pd.to_datetime(out["as_of"])
        return out

    def previous(self, partner_ids: list[str], before) -> dict[str, list[float]]:
        """Earlier scores per partner, oldest first, from runs with as_of before ``before``.

        Used for smoothing and guardrails; one score per (partner, as_of) (the latest write when
        several model versions scored the same date). Partners without history are absent.

        Args:
            partner_ids: Partners to look up.
            before: One cut-off for everyone, or a partner_id -> cut-off Series (milestone
                scoring: each partner's own as_of).
        """
        per_partner = isinstance(before, pd.Series)
        latest = pd.to_datetime(before).max() if per_partner else before
        data = self._select(partner_ids, before=latest)
        if per_partner and not data.empty:
            own = pd.to_datetime(before.reindex(data["partner_id"].to_numpy()).to_numpy())
            data = data[(pd.to_datetime(data["as_of"]).to_numpy() < own)]
        out: dict[str, list[float]] = {}
        for pid, score in zip(data["partner_id"], data["score"], strict=True):
            if score is not None and score == score:
                out.setdefault(pid, []).append(float(score))
        return out
