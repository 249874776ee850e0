"""The decision ledger: tier decisions, overrides and incentive awards, beside the score history.

Two tables in the score-history database (``paths.history_url``), kept apart from the
``score_history`` table so that table can change its layout freely:

- ``score_decisions``, one row per (partner_id, as_of, model_version) scored: the raw and
  smoothed score, the candidate tier (of the smoothed score) and the decided tier (after
  hysteresis, guardrail and override), why a tier was held, the maturity band and segment
  adjustment applied, the account owner's override if one was honoured, and a small JSON of the
  columns incentive milestones test (``facts``). Re-scoring a batch replaces its rows.
- ``incentive_awards``, one row per (partner_id, milestone) ever awarded: a partner is never
  awarded the same incentive twice.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from partnerscore.features.core import PartnerscoreError
from partnerscore.models.model_uri import shown_uri
from partnerscore.serving.config import store_exists
from partnerscore.serving.history import (
    EarlierRows,
    add_missing_columns,
    check_writable,
    decisions_only,
    keep_newest,
    lacking,
    last_dates,
    rows_of_partners,
    store_engine,
    store_errors,
)

DECISION_COLUMNS = {
    "partner_id": sa.String(200),
    "as_of": sa.String(32),
    "model_version": sa.String(64),
    "age_days": sa.Float,
    "score": sa.Float,
    "score_smoothed": sa.Float,
    "score_tier_candidate": sa.String(32),
    "score_tier": sa.String(32),
    "tier_held_reason": sa.Text,
    "maturity_band": sa.String(32),
    "score_adjustment": sa.Float,
    "override_tier": sa.String(32),
    "override_action": sa.Text,
    "override_reason": sa.Text,
    "override_expires": sa.String(32),
    "facts": sa.Text,
    "shadow": sa.Boolean,
}
DECISION_KEY = ("partner_id", "as_of", "model_version")
AWARD_COLUMNS = {
    "partner_id": sa.String(200),
    "milestone": sa.String(100),
    "incentive": sa.Text,
    "amount": sa.Float,
    "achieved_as_of": sa.String(32),
    "awarded_as_of": sa.String(32),
}
AWARD_KEY = ("partner_id", "milestone")
READ_CHUNK = 5000  # partner ids per IN (...) list (SQLite allows 32,766 parameters, psycopg 65,535)


def as_of_text(values) -> list[str]:
    """Timestamps as the ledger's sortable text keys (``YYYY-MM-DDTHH:MM:SS``).

    Each distinct timestamp is formatted once (a batch has one or a few).
    """
    codes, uniques = pd.factorize(pd.Series(np.asarray(values)), use_na_sentinel=False)
    text = [pd.Timestamp(v).strftime("%Y-%m-%dT%H:%M:%S") for v in uniques]
    return [text[c] for c in codes.tolist()]


def json_values(values: list) -> list[str]:
    """``json.dumps`` of each plain value, as ``json.dumps`` writes it inside an object.

    Finite floats are their ``repr`` (what the encoder writes); other values are encoded once
    per distinct (type, value).
    """
    cache: dict = {}
    out = []
    for v in values:
        if type(v) is float and math.isfinite(v):
            out.append(float.__repr__(v))
            continue
        key = (type(v), v)
        text = cache.get(key)
        if text is None:
            text = cache[key] = json.dumps(v)
        out.append(text)
    return out


def text_values(column: pd.Series) -> list[str]:
    """``[str(v) for v in column]``; a text column without missing values in one conversion."""
    if isinstance(column.dtype, pd.StringDtype) and not column.isna().any():
        return column.to_numpy(dtype=object).tolist()
    return [str(v) for v in column]


def json_column(column: pd.Series) -> list[str]:
    """:func:`json_values` of :func:`plain_values` of a column.

    A float column whose values are all finite is the ``repr`` of each value (what
    ``json.dumps`` writes) in one pass; anything else goes through :func:`json_values`.
    """
    if column.dtype.kind == "f" and isinstance(column.dtype, np.dtype):
        values = column.to_numpy(dtype=float)
        if np.isfinite(values).all():
            return list(map(float.__repr__, values.tolist()))
    if isinstance(column.dtype, pd.StringDtype):  # each distinct text encoded once
        codes, uniques = pd.factorize(column)
        encoded = np.array([*(json.dumps(str(u)) for u in uniques), "null"], dtype=object)
        return encoded[codes].tolist()  # code -1 (missing) is the last entry: null
    return json_values(plain_values(column))


def _plain(value):
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def plain_values(column: pd.Series) -> list:
    """:func:`_plain` of every value of a column.

    Converted once per column where the dtype allows (numpy floats, integers and booleans, and
    text); other columns value by value.
    """
    kind = column.dtype.kind if isinstance(column.dtype, np.dtype) else ""
    if kind == "f":
        return [None if v != v else v for v in column.to_numpy(dtype=float).tolist()]
    if kind in ("i", "u", "b"):
        return column.to_numpy().tolist()
    if isinstance(column.dtype, pd.StringDtype):
        values = column.to_numpy(dtype=object)
        values[column.isna().to_numpy()] = None
        return values.tolist()
    return [_plain(v) for v in column.tolist()]


@dataclass
class DecisionBatch:
    """Decision rows ready to insert (:meth:`DecisionLedger.prepare_decisions`).

    Attributes:
        columns: Column name -> plain values (text, floats, None), in table order.
        rows: The same values as one tuple per row.
    """

    columns: dict[str, list]
    rows: list[tuple]


@dataclass
class StagedDecisions:
    """A :class:`DecisionBatch` also held as a small SQLite database image, ready to copy.

    Attributes:
        batch: The rows.
        image: ``sqlite3.Connection.serialize()`` of a database whose one table
            (:data:`STAGE_TABLE`) holds the rows in order, with the ledger's column types; None
            when the rows are inserted one by one (not SQLite, no rows, no serialize support).
    """

    batch: DecisionBatch
    image: bytes | None


STAGE_SCHEMA, STAGE_TABLE = "partnerscore_stage", "decisions"


class DecisionLedger:
    """Tier decisions and incentive awards.

    Args:
        url: SQLAlchemy URL of the score-history database.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: sa.Engine | None = None
        self.metadata = sa.MetaData()
        self.decisions = self._keyed_table("score_decisions", DECISION_COLUMNS, DECISION_KEY)
        self.awards = self._keyed_table("incentive_awards", AWARD_COLUMNS, AWARD_KEY)

    def _keyed_table(self, name: str, columns: dict, key: tuple[str, ...]) -> sa.Table:
        """A ledger table: integer id, ``columns`` (NULL only outside ``key``), ``key`` unique."""
        return sa.Table(
            name,
            self.metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            *(sa.Column(col, kind, nullable=col not in key) for col, kind in columns.items()),
            sa.UniqueConstraint(*key, name=f"uq_{name}_key"),
        )

    def _errors(self):
        """Database problems as one line naming the store, as the score history's."""
        return store_errors("decision ledger", self._shown)

    def _shown(self) -> str:
        return shown_uri(self.url)

    @property
    def engine(self) -> sa.Engine:
        """The engine, created lazily with the ledger's tables."""
        if self._engine is None:
            with self._errors():
                if self.url.startswith("sqlite:///"):
                    path = Path(self.url.removeprefix("sqlite:///"))
                    path.parent.mkdir(parents=True, exist_ok=True)
                engine = store_engine("decision ledger", self.url, self._shown)
                self.metadata.create_all(engine)
                add_missing_columns(engine, self.decisions)
                self._engine = engine
        return self._engine

    def _migrated(self) -> sa.Table:
        """The decisions table once the ledger is open: the columns it lacks are known.

        Queries built before the first connection read ``history.decisions_only`` of it.
        """
        with self._errors():
            _ = self.engine
        return self.decisions

    def dispose(self) -> None:
        """Close the ledger's connections."""
        if self._engine is not None:
            self._engine.dispose()

    def exists(self) -> bool:
        """Whether the database exists (a missing SQLite file means an empty ledger)."""
        return store_exists(self.url)

    def prepare_decisions(
        self,
        scores: pd.DataFrame,
        facts: tuple[str, ...] = (),
        shadow: np.ndarray | None = None,
    ) -> DecisionBatch:
        """The rows :meth:`record_decisions` writes, converted; touches no database.

        A job converts its batch while it writes its files, then records the result.
        ``shadow``: per row, whether it is a shadow row (``history.shadow_rows``; None: the
        scores' own ``shadow`` column, or NULL, which reads as a decision).
        """
        if scores.empty:
            return DecisionBatch({}, [])
        frame = scores.reset_index(drop=True)
        n = len(frame)
        versions = frame.get("model_version", pd.Series("", index=frame.index)).fillna("")
        columns: dict[str, list] = {
            "partner_id": text_values(frame["partner_id"]),
            "as_of": list(as_of_text(frame["as_of"])),
            "model_version": text_values(versions),
        }
        for name in DECISION_COLUMNS:
            if name in columns or name == "facts":
                continue
            if name == "shadow" and shadow is not None:
                columns[name] = np.asarray(shadow, dtype=bool).tolist()
                continue
            if name not in frame:
                columns[name] = [None] * n
                continue
            column = frame[name]
            if name != "override_expires" and isinstance(column.dtype, pd.StringDtype):
                # empty text is stored as NULL: whole-array, not value by value
                values = column.to_numpy(dtype=object, na_value=None)
                values[values == ""] = None
                columns[name] = values.tolist()
                continue
            values = plain_values(column)
            if name == "override_expires":
                values = [
                    pd.Timestamp(v).strftime("%Y-%m-%d") if v not in (None, "") else v
                    for v in values
                ]
            columns[name] = [v if v != "" else None for v in values]
        # json.dumps({fact: value}, sort_keys=True) per row, built from per-column encodings
        # (the per-row json.dumps is the twin in tests/serving/test_bulk_writes.py)
        fact_names = sorted(c for c in dict.fromkeys(facts) if c in frame)
        encoded = [json_column(frame[c]) for c in fact_names]
        # one %-format per row: "{" + '"name": ' + value + ", " ... + "}"
        row_format = (
            "{" + ", ".join(json.dumps(c).replace("%", "%%") + ": %s" for c in fact_names) + "}"
        )
        columns["facts"] = (
            [row_format % row for row in zip(*encoded, strict=True)] if encoded else ["{}"] * n
        )
        return DecisionBatch(columns, list(zip(*columns.values(), strict=True)))

    def record_decisions(
        self, scores: pd.DataFrame | DecisionBatch, facts: tuple[str, ...] = ()
    ) -> int:
        """Insert one decision row per score row, replacing rows of the same key.

        Args:
            scores: Score rows (missing decision columns are stored empty), or their
                :meth:`prepare_decisions` batch (``facts`` are then already in it).
            facts: Columns stored in the ``facts`` JSON (what incentive milestones test).

        Returns:
            Rows written.
        """
        batch = scores
        if not isinstance(batch, DecisionBatch):
            batch = self.prepare_decisions(scores, facts)
        if not batch.rows:
            return 0
        columns, names, rows = batch.columns, list(batch.columns), batch.rows
        t = self.decisions
        with self._errors():
            check_writable(self._migrated())
        with self._errors(), self.engine.begin() as conn:
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            # rows of the same key are replaced: one keyed delete per row (the unique index)
            conn.exec_driver_sql(
                f"DELETE FROM {t.name} WHERE as_of = {mark} AND model_version = {mark} "
                f"AND partner_id = {mark}",
                list(
                    zip(
                        columns["as_of"],
                        columns["model_version"],
                        columns["partner_id"],
                        strict=True,
                    )
                ),
            )
            # the driver's executemany on plain tuples (every column is text or a float, no
            # conversion to do): SQLAlchemy's per-row parameter handling cost seconds per 10k
            conn.exec_driver_sql(
                f"INSERT INTO {t.name} ({', '.join(names)}) "
                f"VALUES ({', '.join([mark] * len(names))})",
                rows,
            )
        return len(rows)

    def stage_decisions(self, batch: DecisionBatch) -> StagedDecisions:
        """The rows inserted into a private in-memory SQLite table; touches no database.

        A worker process stages a batch while the job writes the history, so that
        :meth:`record_staged` afterwards copies it inside SQLite (``INSERT ... SELECT``, ~0.1 s
        at 100k rows) instead of binding every row then (~0.4 s). The staged table has the
        ledger's column types, so every value is stored as :meth:`record_decisions` stores it
        (twin in ``tests/serving/test_bulk_writes.py``).
        """
        if (
            not batch.rows
            or not self.url.startswith("sqlite:///")
            or not hasattr(sqlite3.Connection, "serialize")
        ):
            return StagedDecisions(batch, None)
        from sqlalchemy.dialects import sqlite as sqlite_dialect

        dialect = sqlite_dialect.dialect()
        names = list(batch.columns)
        declared = ", ".join(
            f"{name} {self.decisions.c[name].type.compile(dialect=dialect)}" for name in names
        )
        con = sqlite3.connect(":memory:")
        try:
            con.execute(f"CREATE TABLE {STAGE_TABLE} ({declared})")
            con.executemany(
                f"INSERT INTO {STAGE_TABLE} ({', '.join(names)}) "
                f"VALUES ({', '.join(['?'] * len(names))})",
                batch.rows,
            )
            con.commit()
            return StagedDecisions(batch, con.serialize())
        finally:
            con.close()

    def record_staged(self, staged: StagedDecisions) -> int:
        """:meth:`record_decisions` of a staged batch: the same rows, ids and replacements.

        In one transaction the rows of the staged keys are deleted and the staged rows are
        copied in their order (ids given in that order, as the row-by-row insert gives them).
        """
        if staged.image is None:
            return self.record_decisions(staged.batch)
        names = ", ".join(staged.batch.columns)
        key = ", ".join(("as_of", "model_version", "partner_id"))
        stage = f"{STAGE_SCHEMA}.{STAGE_TABLE}"
        t = self.decisions
        with self._errors():
            check_writable(self._migrated())
        with self._errors(), self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            try:
                # outside a transaction (pysqlite begins one before the first DELETE/INSERT)
                raw.execute(f"ATTACH DATABASE ':memory:' AS {STAGE_SCHEMA}")
                raw.deserialize(staged.image, name=STAGE_SCHEMA)
                with conn.begin():
                    conn.exec_driver_sql(
                        f"DELETE FROM main.{t.name} WHERE ({key}) IN (SELECT {key} FROM {stage})"
                    )
                    conn.exec_driver_sql(
                        f"INSERT INTO main.{t.name} ({names}) "
                        f"SELECT {names} FROM {stage} ORDER BY rowid"
                    )
            except sqlite3.Error as exc:
                raise PartnerscoreError(
                    f"decision ledger {self.url}: {str(exc).splitlines()[0][:160]}"
                ) from exc
            finally:
                if raw.in_transaction:
                    raw.rollback()
                raw.execute(f"DETACH DATABASE {STAGE_SCHEMA}")
        return len(staged.batch.rows)

    def read_decisions(self, partner_ids: list[str] | None = None, until=None) -> pd.DataFrame:
        """Decision rows (facts expanded), one per (partner, as_of): the latest write wins.

        A shadow run's rows are not read (``history.decisions_only``).

        Args:
            partner_ids: Partners to read (None: everyone).
            until: Only rows with as_of at or before this timestamp.
        """
        columns = [c for c in DECISION_COLUMNS if c != "facts"]
        if not self.exists():
            return pd.DataFrame(columns=columns)
        t = self._migrated()
        absent = lacking(t)  # an older store nobody could migrate
        query = sa.select(*(c for c in t.columns if c.name not in absent))
        query = query.where(decisions_only(t))
        if until is not None:
            query = query.where(t.c.as_of <= as_of_text([until])[0])
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
            return pd.DataFrame(columns=columns)
        data = pd.concat(frames, ignore_index=True).sort_values("id")
        data = data.drop_duplicates(["partner_id", "as_of"], keep="last")
        data = data.sort_values(["partner_id", "as_of"], kind="stable").reset_index(drop=True)
        facts = pd.DataFrame([json.loads(f or "{}") for f in data["facts"]], index=data.index)
        facts = facts[[c for c in facts.columns if c not in data.columns]]
        out = pd.concat([data.drop(columns=["id", "facts"]), facts], axis=1)
        out["as_of"] = pd.to_datetime(out["as_of"])
        return out

    def previous(
        self, partner_ids: list[str], before, newest: int | None = None
    ) -> dict[str, list[tuple[float, str]]]:
        """Earlier (raw score, decided tier) per partner, oldest first, as_of before ``before``.

        Args:
            partner_ids: Partners to look up.
            before: One cut-off, or a partner_id -> cut-off Series (milestone scoring).
            newest: Only the last this many per partner (None: all); with one cut-off only
                the store's last batches are read in full (``history.EarlierRows``).
        """
        per_partner = isinstance(before, pd.Series)
        ids = [str(p) for p in partner_ids]
        if not self.exists() or not ids:  # no partner: no cut-off to read before
            return {}
        if newest is None or per_partner:
            latest = pd.to_datetime(before).max() if per_partner else before
            read = self._earlier_reader(latest, before if per_partner else None)
            return keep_newest(read(ids, None, None, True), newest)
        ids = sorted(set(ids))
        return self.earlier(before, newest, ids).of(ids)

    def earlier(self, before, newest: int, partner_ids: list[str] | None = None) -> EarlierRows:
        """:meth:`previous` with one cut-off and ``newest``, in two steps (``EarlierRows``).

        The store's last dates of ``partner_ids`` (None: of every partner) are read now.
        """
        if not self.exists():
            return EarlierRows({}, newest)
        cut = as_of_text([pd.Timestamp(before)])[0]
        with self._errors(), self.engine.connect() as conn:
            recent = last_dates(conn, self.decisions.c.as_of, cut, newest)
        return EarlierRows.read(partner_ids, newest, recent, self._earlier_reader(before, None))

    def _earlier_reader(self, latest, own: pd.Series | None):
        """The ``read(ids, since, until, scan)`` of :class:`EarlierRows` for the decisions.

        Decisions dated before ``latest`` (and before each partner's ``own`` cut-off, if given).
        """
        # only the columns and dates this needs (read_decisions parses every row's facts JSON)
        t = self._migrated()
        names = ["id", "partner_id", "as_of", "score", "score_tier"]
        cut = as_of_text([pd.Timestamp(latest)])[0]

        def read(ids, since, until, scan: bool) -> dict[str, list[tuple[float, str]]]:
            query = sa.select(*(t.c[c] for c in names)).where(
                t.c.as_of < (cut if until is None else until), decisions_only(t)
            )
            if since is not None:
                query = query.where(t.c.as_of >= since)
            # a whole batch in one pass over the table (at 91k partners ~0.6 s in all, against
            # ~0.84 s with IN lists): history.rows_of_partners
            with self._errors(), self.engine.connect() as conn:
                rows = rows_of_partners(conn, query, t.c.partner_id, ids, READ_CHUNK, scan)
            if not rows:
                return {}
            # column-wise from plain tuples (a frame built from Row objects probes each one)
            data = pd.DataFrame(
                {
                    name: list(values)
                    for name, values in zip(names, zip(*rows, strict=True), strict=True)
                }
            )
            data = data.sort_values("id")
            data = data.drop_duplicates(["partner_id", "as_of"], keep="last")
            data = data.sort_values(["partner_id", "as_of"], kind="stable")
            if own is not None:
                cuts = pd.to_datetime(own.reindex(data["partner_id"].to_numpy()).to_numpy())
                data = data[pd.to_datetime(data["as_of"]).to_numpy() < cuts]
            out: dict[str, list[tuple[float, str]]] = {}
            for pid, score, tier in zip(
                data["partner_id"].tolist(),
                data["score"].tolist(),
                data["score_tier"].tolist(),
                strict=True,
            ):
                if score is not None and score == score:
                    # a NULL tier is "" (pandas reads it as None or NaN depending on the rows
                    # read with it)
                    tier = "" if tier is None or tier != tier else str(tier)
                    out.setdefault(pid, []).append((float(score), tier))
            return out

        return read

    def read_awards(self) -> pd.DataFrame:
        """Every award ever recorded."""
        if not self.exists():
            return pd.DataFrame(columns=list(AWARD_COLUMNS))
        with self._errors(), self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.awards).order_by(self.awards.c.id)).mappings()
            data = pd.DataFrame(rows.all())
        if data.empty:
            return pd.DataFrame(columns=list(AWARD_COLUMNS))
        return data.drop(columns=["id"])

    def record_awards(self, awards: pd.DataFrame) -> int:
        """Insert awards whose (partner_id, milestone) is not recorded yet; one transaction.

        Returns:
            Rows inserted (already awarded pairs are skipped, never updated).
        """
        if awards.empty:
            return 0
        t = self.awards
        with self._errors(), self.engine.begin() as conn:
            done = {
                (r.partner_id, r.milestone)
                for r in conn.execute(sa.select(t.c.partner_id, t.c.milestone))
            }
            records = [
                {k: _plain(v) for k, v in rec.items() if k in AWARD_COLUMNS}
                for rec in awards.to_dict("records")
                if (str(rec["partner_id"]), rec["milestone"]) not in done
            ]
            if records:
                conn.execute(t.insert(), records)
        return len(records)
