"""Score history: every scoring run's rows, keyed by (partner_id, as_of, model_version).

An embedded SQLite file by default; a PostgreSQL server (``postgresql://``, ``postgres://`` or
``postgresql+psycopg://`` URLs, all through psycopg 3) for a team; any other SQLAlchemy URL
whose driver is installed works too (:func:`~partnerscore.serving.database.database_url`).
The table ``score_history_v2`` is columnar and declared (:data:`HISTORY_COLUMNS`): typed
columns for the values the reports' trajectories and the score smoothing need, nothing else.
Feature values, subscores, drivers and contributions stay in each run's scores file (they used
to ride along as ~4 KB of JSON per row). The unique key (partner_id, as_of, model_version)
is the index the reads use: a partner's rows in date order.

Re-running the same as_of with the same model replaces its rows (idempotent): rows are upserted
(``INSERT ... ON CONFLICT DO UPDATE``) in key order in one transaction, so concurrent writers
never fail on each other's keys or deadlock, and each key ends up with the last committed write.
A store written by an older version (table ``score_history`` with a JSON payload) is migrated
once, on first use.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from partnerscore.features.core import PartnerscoreError, ServiceUnavailable
from partnerscore.models import stores
from partnerscore.models.model_uri import shown_uri
from partnerscore.models.stores import (
    bound_lock_waits,
    database_connect_args,
    database_unavailable,
    first_connection,
)
from partnerscore.serving.config import store_exists
from partnerscore.serving.database import database_url

TABLE = "score_history_v2"
LEGACY_TABLE = "score_history"
KEY = ("partner_id", "as_of", "model_version")
HISTORY_METRICS = (
    "activities_touchpoints_30d",
    "trainings_certifications_todate",
    "leads_qualified_todate",
    "deals_won_amount_todate",
    "deals_open_pipeline_amount",
)
"""Feature values kept per row: the report's trajectory table (``report.KEY_METRICS``)."""
HISTORY_COLUMNS: dict[str, type[sa.types.TypeEngine]] = {
    "partner_id": sa.String,
    "as_of": sa.DateTime,
    "model_version": sa.String,
    "age_days": sa.Float,
    "score": sa.Float,
    "score_smoothed": sa.Float,
    "pred_revenue": sa.Float,
    "pred_engagement": sa.Float,
    "peer_percentile": sa.Float,
    "score_tier": sa.String,
    "quadrant": sa.String,
    "tier": sa.String,
    "region": sa.String,
    "partner_type": sa.String,
    "provisional": sa.Boolean,
    "guardrail_flag": sa.Boolean,
    "out_of_scope": sa.Boolean,
    "config_hash": sa.String,
    "shadow": sa.Boolean,
    **dict.fromkeys(HISTORY_METRICS, sa.Float),
}
"""The declared history row: name -> SQL type. Other columns of a scores frame are not stored."""
CORE = {k: v for k, v in HISTORY_COLUMNS.items() if k not in HISTORY_METRICS}
"""Columns every read returns; the metric columns are returned when any row has a value."""
_CHUNK = 500
SCAN_ABOVE = 5000
"""Rows of more partners than this are read in one pass over the table and filtered here
(:func:`rows_of_partners`; at 91k partners ``ScoreHistory.previous`` ~0.75 s against ~0.84 s
with 183 ``IN (...)`` lists, ``DecisionLedger.previous`` ~0.6 s against ~0.84 s); the same rows
either way (twin in ``tests/serving/test_bulk_writes.py``)."""
SQLITE_BUSY_SECONDS = 10
"""How long a job waits for another writer of a SQLite history or ledger file before
"database is locked" (as :data:`~partnerscore.models.stores.LOCK_WAIT_SECONDS` on PostgreSQL)."""


def rows_of_partners(
    conn, query, column, ids: list[str] | None, chunk: int, scan: bool = True
) -> list:
    """The rows of ``query`` whose ``column`` (one of its selected columns) is in ``ids``.

    ``ids`` None: every row. More than :data:`SCAN_ABOVE` ids (a whole batch) are read in one
    pass over the table and filtered here (unless ``scan`` is False: a few rows of many
    partners); fewer by ``IN (...)`` lists of ``chunk`` ids. The same rows either way, in no
    particular order (callers sort).
    """
    if ids is None:
        return conn.execute(query).all()
    if len(ids) <= SCAN_ABOVE or not scan:
        rows: list = []
        for start in range(0, len(ids), chunk):
            rows.extend(conn.execute(query.where(column.in_(ids[start : start + chunk]))).all())
        return rows
    at = list(query.selected_columns.keys()).index(column.key)
    keep = set(ids)
    return [row for row in conn.execute(query).all() if row[at] in keep]


def keep_newest(earlier: dict[str, list], newest: int | None) -> dict[str, list]:
    """Each partner's last ``newest`` entries (None: all of them)."""
    if newest is None:
        return earlier
    if newest < 1:
        raise ValueError(f"newest: {newest}, expected at least 1")
    return {pid: rows[-newest:] if len(rows) > newest else rows for pid, rows in earlier.items()}


def last_dates(conn, column, cut, newest: int) -> list:
    """The newest ``newest`` distinct values of the date ``column`` below ``cut``, newest first.

    Dates of decision rows only (:func:`decisions_only`): a shadow run's date is not a batch.
    """
    query = sa.select(column).where(column < cut, decisions_only(column.table))
    query = query.distinct().order_by(column.desc()).limit(newest)
    return conn.execute(query).scalars().all()


def decisions_only(table: sa.Table):
    """The condition keeping a store's decision rows: ``shadow`` false or NULL (older rows).

    A shadow run (a model version other than the champion, :func:`shadow_rows`) is recorded
    for comparison, but smoothing, tier hysteresis, guardrails, incentives, trajectories and
    the monitor read decisions only: a challenger scored on 07-01 is not the champion's
    ``score_previous`` on 07-20.
    """
    if "shadow" in lacking(table):  # an older store nobody could migrate: no shadow rows
        return sa.true()
    return sa.or_(table.c.shadow.is_(None), table.c.shadow == sa.false())


def add_missing_columns(engine: sa.Engine, table: sa.Table) -> None:
    """Add the columns ``table`` declares but its database table lacks, as nullable columns.

    A store written by an older version (e.g. without ``shadow``): existing rows get NULL.
    Safe against a concurrent job doing the same: a column another one added meanwhile is
    fine. A store this connection may not alter (a read-only file, a role that does not own
    the table, a read-only replica) is still read: the columns it lacks are noted
    (:func:`lacking`), reads leave them out (an older store holds no shadow rows: every row
    is a decision), and a write raises the error (:func:`check_writable`).
    """
    have = {c["name"] for c in sa.inspect(engine).get_columns(table.name)}
    missing = [c for c in table.columns if c.name not in have]
    failed: dict[str, sa.exc.DBAPIError] = {}
    for column in missing:
        ddl = sa.schema.CreateColumn(column).compile(dialect=engine.dialect)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
        except sa.exc.DBAPIError as exc:
            if column.name not in {c["name"] for c in sa.inspect(engine).get_columns(table.name)}:
                failed[column.name] = exc
    table.info["lacking"] = failed


def lacking(table: sa.Table) -> dict[str, sa.exc.DBAPIError]:
    """Declared columns the store lacks and could not be given (:func:`add_missing_columns`)."""
    return table.info.get("lacking", {})


def check_writable(table: sa.Table) -> None:
    """Before a write: raise the error that kept a declared column from an older store.

    Raises:
        sqlalchemy.exc.DBAPIError: The ``ALTER TABLE`` error (the stores name it).
    """
    for exc in lacking(table).values():
        raise exc


class EarlierRows:
    """A store's earlier entries per partner (oldest first), in two steps.

    A monthly store grows by a batch a month, but smoothing and the tier hysteresis look at a
    partner's last one or two (``earlier_batches_needed``): reading every earlier row would
    make each month's job slower than the last. :meth:`read` reads the store's last
    ``newest`` dates before the cut-off in full (for given partners, or for every partner:
    before a job knows its batch); :meth:`of` then gives a batch's partners their last
    ``newest`` entries, looking further back, by id, only for partners short of ``newest``
    there (new partners, partners a batch skipped): a partner with ``newest`` entries from
    those dates has its last ones among them. The same as keeping the last ``newest`` of
    everything (twin in ``tests/serving/test_bulk_writes.py``).
    """

    def __init__(self, recent: dict[str, list], newest: int, since=None, older=None) -> None:
        self.recent, self.newest, self.since, self._older = recent, newest, since, older

    @classmethod
    def read(
        cls,
        ids: list[str] | None,
        newest: int,
        recent_dates: list,
        read: Callable[[list[str] | None, object, object, bool], dict[str, list]],
    ) -> EarlierRows:
        """Read the store's last dates for ``ids`` (None: for every partner).

        ``recent_dates``: the store's newest ``newest`` distinct dates before the cut-off,
        newest first. ``read(ids, since, until, scan)``: the partners' entries (None: every
        partner's) dated ``since`` (or any) up to before ``until`` (or the cut-off).
        """
        if len(recent_dates) < newest:  # the store holds fewer dates: that is all of them
            return cls(read(ids, None, None, True), newest)
        since = recent_dates[-1]
        return cls(read(ids, since, None, True), newest, since, read)

    def of(self, ids: list[str]) -> dict[str, list]:
        """The last ``newest`` entries of the partners ``ids`` (those that have any)."""
        out = {pid: self.recent[pid] for pid in ids if pid in self.recent}
        if self.since is not None:
            short = [pid for pid in ids if len(out.get(pid, ())) < self.newest]
            if short:
                for pid, rows in self._older(short, None, self.since, False).items():
                    out[pid] = rows + out.get(pid, [])
        return keep_newest(out, self.newest)


class _NotCommitted(Exception):
    """Carries a ``before_commit`` error past the store's error wrapping (rolled back)."""


@contextmanager
def store_errors(store: str, shown: Callable[[], str]) -> Iterator[None]:
    """Database problems (locked, unreachable, read-only, unparsable URL) as one line.

    The score history's and the decision ledger's wrapper: ``<store> <URL>: <detail>``, the
    URL as ``shown()`` gives it (:func:`~partnerscore.models.model_uri.shown_uri`: no password).

    Args:
        store: What the database is to the user (``score history``, ``decision ledger``).
        shown: The URL to name, called only when there is an error.

    A database server that cannot be reached (refused, down, timed out, out of connection
    slots) is a :class:`~partnerscore.features.core.ServiceUnavailable`, exit 69, as for the
    MLflow store (:func:`~partnerscore.models.stores.database_unavailable`); other problems
    (a wrong password, no such database, a read-only file) exit 2.
    """
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None)
        detail = str(orig or exc).splitlines()[0][:160]
        if getattr(orig, "sqlstate", None) == "55P03":  # lock_not_available (lock_timeout)
            detail += f" (another session held a lock it needed for {stores.LOCK_WAIT_SECONDS} s)"
        if database_unavailable(exc):
            raise ServiceUnavailable(f"{store} {shown()}: {detail}") from exc
        raise PartnerscoreError(f"{store} {shown()}: {detail}") from exc
    except OSError as exc:
        detail = exc.strerror or str(exc)
        raise PartnerscoreError(f"{store} {shown()}: {detail}") from exc


def store_engine(store: str, url: str, shown: Callable[[], str], **kwargs) -> sa.Engine:
    """An engine for ``url`` (:func:`database_url`) whose server answered, or one line.

    A URL the stores cannot open (``sqlite:/x.db``, a port that is no number, an unknown
    scheme, a driver that is not installed) is a :class:`PartnerscoreError` with
    :func:`database_url`'s reason: config validation stops those first with the same rule,
    the Python API and a job given a URL directly did not (a traceback, or MLflow-free
    ``ValueError``). A database server is reached as the MLflow store is
    (:func:`~partnerscore.models.stores.first_connection`): a bounded connect timeout
    (:func:`~partnerscore.models.stores.database_connect_args`), retried twice while it
    cannot be reached, then :func:`store_errors`' line (exit 69; a refusal exit 2).
    """
    with store_errors(store, shown):
        try:
            target = database_url(url)
        except ValueError as exc:
            raise PartnerscoreError(f"{store} {shown()}: {exc}") from None
        connect_args = {**database_connect_args(target), **kwargs.pop("connect_args", {})}
        if target.startswith("sqlite"):
            # wait this long for another writer of the file before "database is locked" (the
            # ledger, and so incentives, waited pysqlite's default 5 s where the history 10 s)
            connect_args.setdefault("timeout", SQLITE_BUSY_SECONDS)
        engine = sa.create_engine(target, connect_args=connect_args, **kwargs)
        bound_lock_waits(engine)
        if engine.dialect.name != "sqlite":  # a local file: nothing to wait for
            try:
                first_connection(engine)
            except BaseException:
                engine.dispose()
                raise
        return engine


def _to_columns(frame: pd.DataFrame, columns: list[str]) -> list[list]:
    """Each column as a list of plain Python values (None for missing), one conversion each."""
    values = []
    for name in columns:
        col = frame[name]
        kind = HISTORY_COLUMNS.get(name)
        if kind is sa.Float:
            col = pd.to_numeric(col, errors="raise").astype("float64")
        elif kind is sa.Boolean:
            col = col.astype(object).where(col.notna(), None)
            col = col.map(lambda v: None if v is None else bool(v))
        elif kind is sa.DateTime:
            col = pd.Series(pd.to_datetime(col).dt.to_pydatetime(), dtype=object)
        elif kind is sa.String:
            col = col.astype(object).where(col.notna(), None)
            col = col.map(lambda v: None if v is None else str(v))
        out = col.astype(object).where(col.notna(), None).tolist()
        values.append(out)
    return values


def _to_records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    """Rows as dicts of plain Python values (None for missing), one conversion per column."""
    values = _to_columns(frame, columns)
    return [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]


def _plain_column(col: pd.Series, kind) -> list:
    """What :func:`_to_columns` gives for one column, without its per-value pandas ``map``.

    Float, numpy bool, datetime and text columns are converted with whole-array operations;
    any other dtype (e.g. an object column of mixed values) goes through :func:`_to_columns`.
    """
    if kind is sa.Float:
        values = pd.to_numeric(col, errors="raise").astype("float64").to_numpy()
        return [None if v != v else v for v in values.tolist()]
    if kind is sa.Boolean and col.dtype == np.bool_:
        return col.to_numpy().tolist()
    if kind is sa.DateTime and col.dtype.kind == "M":
        codes, uniques = pd.factorize(col, use_na_sentinel=True)
        stamps = list(pd.DatetimeIndex(uniques).to_pydatetime())
        return [None if c < 0 else stamps[c] for c in codes.tolist()]
    if kind is sa.String and isinstance(col.dtype, pd.StringDtype):
        return col.to_numpy(dtype=object, na_value=None).tolist()
    if kind is None and col.dtype.kind in "iu":
        return col.to_numpy().tolist()
    return _to_columns(col.to_frame(), [col.name])[0]


def _driver_rows(
    frame: pd.DataFrame,
    columns: list[str],
    table: sa.Table,
    dialect,
    plain: dict[str, list] | None = None,
) -> list[tuple]:
    """Rows as tuples of what the driver receives, through each column type's bind processor.

    The values SQLAlchemy itself would bind (a SQLite datetime becomes its text form, a boolean
    0/1), computed column by column instead of row by row: whole-array conversions
    (:func:`_plain_column`), and a processor applied once per distinct value of a datetime,
    boolean or text column (floats: once per value). The per-value conversion is the twin in
    ``tests/serving/test_bulk_writes.py``. ``plain``: columns already converted by
    :func:`_plain_column` (a :class:`HistoryBatch`).
    """
    values = []
    for name in columns:
        if plain is not None and name in plain:
            column = plain[name]
        else:
            column = _plain_column(frame[name], HISTORY_COLUMNS.get(name))
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            if HISTORY_COLUMNS.get(name) is sa.Float:
                column = [None if v is None else process(v) for v in column]
            else:
                done: dict = {}
                column = [
                    None
                    if v is None
                    else (done[v] if v in done else done.setdefault(v, process(v)))
                    for v in column
                ]
        values.append(column)
    return list(zip(*values, strict=True))


@dataclass
class HistoryBatch:
    """Score rows ready to upsert (:meth:`ScoreHistory.prepare`), converted without the store.

    Attributes:
        frame: The declared columns, one row per key (the last of a repeated key), in key order.
        plain: Each column of ``frame`` as plain Python values (:func:`_plain_column`).
    """

    frame: pd.DataFrame
    plain: dict[str, list]

    def __len__(self) -> int:
        return len(self.frame)


class ScoreHistory:
    """The score-history store.

    Args:
        url: SQLAlchemy database URL; a ``sqlite:///`` file's folder is created on first write.
    """

    def __init__(self, url: str, shown: str | None = None) -> None:
        self.url = url
        self._shown_as = shown  # how errors name the store (a job's scratch file: the store's)
        self._engine: sa.Engine | None = None
        self.metadata = sa.MetaData()
        self.table = sa.Table(
            TABLE,
            self.metadata,
            sa.Column(
                "id",
                sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                primary_key=True,
                autoincrement=True,
            ),
            *(sa.Column(name, kind(), nullable=name not in KEY) for name, kind in CORE.items()),
            *(sa.Column(name, sa.Float(), nullable=True) for name in HISTORY_METRICS),
            # nanoseconds of the write: orders model versions scored on one date (latest wins)
            sa.Column("written_at", sa.BigInteger(), nullable=False),
            sa.UniqueConstraint(*KEY, name=f"uq_{TABLE}_key"),
        )

    def _errors(self):
        """Database problems as one line naming the store (:func:`store_errors`)."""
        return store_errors("score history", self._shown)

    def _shown(self) -> str:
        return self._shown_as if self._shown_as is not None else shown_uri(self.url)

    @property
    def engine(self) -> sa.Engine:
        """The engine, created lazily (nothing touches the database before first use)."""
        if self._engine is None:
            with self._errors():
                if self.url.startswith("sqlite:///"):
                    Path(self.url.removeprefix("sqlite:///")).parent.mkdir(
                        parents=True, exist_ok=True
                    )
                engine = store_engine("score history", self.url, self._shown)
                self.metadata.create_all(engine)
                add_missing_columns(engine, self.table)
                self._migrate_legacy(engine)
                self._engine = engine
        return self._engine

    def _migrated(self) -> sa.Table:
        """The table once the store is open: the columns it lacks are known (:func:`lacking`).

        Queries built before the first connection read :func:`decisions_only` of it.
        """
        with self._errors():
            _ = self.engine
        return self.table

    def _migrate_legacy(self, engine: sa.Engine) -> None:
        """Copy a pre-v2 store (core columns + JSON payload) into the columnar table, once."""
        if not sa.inspect(engine).has_table(LEGACY_TABLE):
            return
        legacy = sa.Table(LEGACY_TABLE, sa.MetaData(), autoload_with=engine)
        if "payload" not in legacy.c:
            return
        with engine.begin() as conn:
            rows = conn.execute(sa.select(legacy).order_by(legacy.c.id)).mappings().all()
            if rows:
                data = pd.DataFrame(rows)
                payload = pd.DataFrame([json.loads(p) for p in data["payload"]])
                keep = [c for c in payload.columns if c in HISTORY_COLUMNS and c not in data]
                data = pd.concat([data.drop(columns="payload"), payload[keep]], axis=1)
                data["as_of"] = pd.to_datetime(data["as_of"])
                # older rows keep their order among themselves and lose to any new write
                self._write(conn, data, written_at=data["id"].to_numpy(dtype="int64"))
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {LEGACY_TABLE}"))

    def exists(self) -> bool:
        """Whether the store has been written to (a missing SQLite file means no history)."""
        return store_exists(self.url)

    def prepare(self, scores: pd.DataFrame, shadow: np.ndarray | None = None) -> HistoryBatch:
        """The rows :meth:`upsert` writes, converted to plain values; touches no database.

        A job converts its batch while it writes its files, then upserts the result.
        ``shadow``: per row, whether it is a shadow row (:func:`shadow_rows`; None: the
        scores' own ``shadow`` column, or NULL, which reads as a decision).
        """
        # the columns as they are (text stays Arrow-backed; a round trip through numpy objects
        # cost ~0.5 s at 100k rows); missing ones are None
        frame = pd.DataFrame(
            {
                name: scores[name].reset_index(drop=True) if name in scores.columns else None
                for name in HISTORY_COLUMNS
            },
            index=pd.RangeIndex(len(scores)),
        )
        if shadow is not None:
            frame["shadow"] = np.asarray(shadow, dtype=bool)
        if len(frame):
            frame["as_of"] = pd.to_datetime(frame["as_of"])
            if getattr(frame["as_of"].dt, "tz", None) is not None:
                frame["as_of"] = frame["as_of"].dt.tz_localize(None)
            frame["model_version"] = frame["model_version"].fillna("").astype(str)
            frame["partner_id"] = frame["partner_id"].astype(str)
            frame = frame.drop_duplicates(list(KEY), keep="last")
            frame = frame.sort_values(list(KEY), kind="stable")
        plain = {name: _plain_column(frame[name], kind) for name, kind in HISTORY_COLUMNS.items()}
        return HistoryBatch(frame, plain)

    def upsert(
        self,
        scores: pd.DataFrame | HistoryBatch,
        before_commit: Callable[[], object] | None = None,
    ) -> int:
        """Insert score rows, replacing rows with the same (partner_id, as_of, model_version).

        The declared columns (:data:`HISTORY_COLUMNS`) are stored; missing ones are NULL, and
        every other column (features beyond the trajectory metrics, subscores, drivers,
        ``shap_*``) stays in the scores file. One transaction: a failed upsert leaves the store
        as it was. Within a batch a repeated key keeps its last row.

        Args:
            scores: Score rows, or the :meth:`prepare` d batch of them.
            before_commit: Called once the rows are written, before the commit; its error
                (raised as is) rolls the transaction back. A job writes its rows while its
                files are still being staged and commits only once they are.

        Returns:
            Number of rows written.
        """
        if not len(scores):
            if before_commit is not None:
                before_commit()
            return 0
        batch = scores if isinstance(scores, HistoryBatch) else self.prepare(scores)
        stamp = np.full(len(batch), time.time_ns(), dtype="int64")
        try:
            with self._errors():
                check_writable(self._migrated())
            with self._errors(), self.engine.begin() as conn:
                self._write(conn, batch.frame, written_at=stamp, plain=batch.plain)
                if before_commit is not None:
                    try:
                        before_commit()
                    except BaseException as exc:
                        raise _NotCommitted from exc
        except _NotCommitted as stop:
            raise stop.__cause__ from None
        return len(batch)

    def _write(
        self,
        conn: sa.Connection,
        frame: pd.DataFrame,
        written_at: np.ndarray,
        plain: dict[str, list] | None = None,
    ) -> None:
        """Upsert rows in key order (concurrent writers lock keys in the same order).

        ``plain``: ``frame``'s columns already converted, ``frame`` already in key order.
        """
        frame = frame.assign(written_at=written_at)
        if plain is None:
            frame = frame.sort_values(list(KEY), kind="stable")
        columns = [c for c in (*HISTORY_COLUMNS, "written_at") if c in frame.columns]
        t = self.table
        dialect = conn.dialect.name
        if dialect in ("postgresql", "sqlite"):
            # one compiled statement, the driver's executemany on plain tuples: SQLAlchemy's
            # per-row parameter processing cost ~40 s per 100k rows (twin in tests/serving)
            rows = _driver_rows(frame, columns, t, conn.dialect, plain)
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in KEY)
            sql = (
                f"INSERT INTO {TABLE} ({', '.join(columns)}) VALUES "
                f"({', '.join([mark] * len(columns))}) "
                f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {updates}"
            )
            for start in range(0, len(rows), 50_000):
                conn.exec_driver_sql(sql, rows[start : start + 50_000])
            return
        records = _to_records(frame, columns)
        for (as_of_value, version), group in frame.groupby(["as_of", "model_version"]):
            ids = group["partner_id"].tolist()
            for start in range(0, len(ids), _CHUNK):
                conn.execute(
                    t.delete().where(
                        t.c.as_of == as_of_value.to_pydatetime(),
                        t.c.model_version == version,
                        t.c.partner_id.in_(ids[start : start + _CHUNK]),
                    )
                )
        conn.execute(t.insert(), records)

    def _select(
        self,
        partner_ids: list[str] | None,
        columns: list[str],
        before=None,
        since=None,
        scan: bool = True,
    ) -> pd.DataFrame:
        """One row per (partner, as_of), the latest write when several versions scored it.

        Rows dated ``since`` (if given) up to before ``before`` (if given); ``scan``: see
        :func:`rows_of_partners`.
        """
        wanted = list(dict.fromkeys([*KEY, *columns, "written_at", "id"]))
        if not self.exists():
            return pd.DataFrame(columns=wanted)
        t = self.table
        absent = lacking(self._migrated())  # an older store nobody could migrate
        selected = [c for c in wanted if c not in absent]
        query = sa.select(*(t.c[c] for c in selected)).where(decisions_only(t))
        if before is not None:
            query = query.where(t.c.as_of < pd.Timestamp(before).to_pydatetime())
        if since is not None:
            query = query.where(t.c.as_of >= pd.Timestamp(since).to_pydatetime())
        with self._errors(), self.engine.connect() as conn:
            if partner_ids is None:
                rows = conn.execute(query).all()
            else:
                ids = sorted({str(p) for p in partner_ids})
                rows = rows_of_partners(conn, query, t.c.partner_id, ids, _CHUNK, scan)
        if not rows:
            return pd.DataFrame(columns=wanted)
        # column-wise from plain tuples (a frame built from Row objects probes each one)
        data = pd.DataFrame(
            {
                name: list(values)
                for name, values in zip(selected, zip(*rows, strict=True), strict=True)
            }
        )
        data = data.reindex(columns=wanted)  # a column the store lacks: empty
        data["as_of"] = pd.to_datetime(data["as_of"])
        data = data.sort_values(["written_at", "id"], kind="stable")
        data = data.drop_duplicates(["partner_id", "as_of"], keep="last")
        return data.sort_values(["partner_id", "as_of"], kind="stable").reset_index(drop=True)

    def read(
        self, partner_ids: list[str] | None = None, columns: list[str] | None = None
    ) -> pd.DataFrame:
        """History rows ordered by partner_id, as_of; one per (partner, as_of).

        Decision rows only (:func:`decisions_only`): a shadow run's rows are not read.

        Args:
            partner_ids: Partners to read (None: everyone).
            columns: Declared columns to read besides the key (None: all of them; metric
                columns without any value in the result are left out, as a feature the model
                does not have).
        """
        names = list(HISTORY_COLUMNS) if columns is None else list(columns)
        unknown = [c for c in names if c not in HISTORY_COLUMNS]
        if unknown:
            raise PartnerscoreError(
                f"score history: unknown column(s) {', '.join(unknown)}; "
                f"stored are {', '.join(HISTORY_COLUMNS)}"
            )
        data = self._select(partner_ids, names)
        keep = list(dict.fromkeys([*KEY, *names]))
        if columns is None:
            keep = [c for c in keep if c not in HISTORY_METRICS or data[c].notna().any()]
        out = data[keep].copy()
        for name in keep:
            kind = HISTORY_COLUMNS[name]
            if kind is sa.Float:
                out[name] = pd.to_numeric(out[name]).astype("float64")
            elif kind is sa.Boolean and out[name].notna().all():
                out[name] = out[name].astype(bool)
        out["as_of"] = pd.to_datetime(out["as_of"]).astype("datetime64[us]")
        return out.reset_index(drop=True)

    def recorded(self, columns: list[str]) -> list[str]:
        """The declared columns holding a value in at least one row of the store.

        A measure a store has never recorded (an older store, a program without that table)
        is left out of trajectories rather than shown as missing everywhere. One indexed probe
        per column: it stops at the first row with a value.
        """
        unknown = [c for c in columns if c not in HISTORY_COLUMNS]
        if unknown:
            raise PartnerscoreError(f"score history: unknown column(s) {', '.join(unknown)}")
        if not self.exists():
            return []
        t = self.table
        with self._errors(), self.engine.connect() as conn:
            return [
                c
                for c in columns
                if c not in lacking(t)
                and conn.execute(
                    sa.select(t.c.id).where(t.c[c].is_not(None), decisions_only(t)).limit(1)
                ).first()
                is not None
            ]

    def decision_keys(self, model_version: str, since, until) -> pd.DataFrame:
        """(partner_id, as_of) whose decision is ``model_version``'s, dated since..until.

        A shadow run of a version that was once the champion keeps that version's earlier
        decisions decisions (:func:`shadow_rows`), unless another version has decided the same
        key since (the new champion re-scored that date): the latest decision is the one read.
        """
        if not self.exists():
            return pd.DataFrame({"partner_id": [], "as_of": pd.to_datetime([])})
        until = pd.Timestamp(until) + pd.Timedelta(microseconds=1)  # since..until, inclusive
        data = self._select(None, ["model_version"], before=until, since=since)
        data = data[data["model_version"].astype(str) == str(model_version)]
        return pd.DataFrame(
            {
                "partner_id": data["partner_id"].astype(str).tolist(),
                "as_of": pd.to_datetime(data["as_of"]).astype("datetime64[us]").to_numpy(),
            }
        )

    def dispose(self) -> None:
        """Close the store's connections (before forking workers that do not use them)."""
        if self._engine is not None:
            self._engine.dispose()

    def previous(
        self, partner_ids: list[str], before, newest: int | None = None
    ) -> dict[str, list[float]]:
        """Earlier scores per partner, oldest first, from runs with as_of before ``before``.

        Used for smoothing and guardrails; one score per (partner, as_of) (the latest write when
        several model versions scored the same date). Partners without history are absent.
        Reads only the key and the score.

        Args:
            partner_ids: Partners to look up.
            before: One cut-off for everyone, or a partner_id -> cut-off Series (milestone
                scoring: each partner's own as_of).
            newest: Only the last this many scores per partner (None: all); with one cut-off
                only the store's last batches are read in full (:class:`EarlierRows`).
        """
        per_partner = isinstance(before, pd.Series)
        latest = pd.to_datetime(before).max() if per_partner else before

        if newest is None or per_partner or not self.exists():
            read = self._earlier_reader(latest, before if per_partner else None)
            return keep_newest(read(partner_ids, None, None, True), newest)
        ids = sorted({str(p) for p in partner_ids})
        return self.earlier(latest, newest, ids).of(ids)

    def earlier(self, before, newest: int, partner_ids: list[str] | None = None) -> EarlierRows:
        """:meth:`previous` with one cut-off and ``newest``, in two steps (:class:`EarlierRows`).

        The store's last dates of ``partner_ids`` (None: of every partner) are read now.
        """
        if not self.exists():
            return EarlierRows({}, newest)
        cut = pd.Timestamp(before).to_pydatetime()
        with self._errors(), self.engine.connect() as conn:
            recent = last_dates(conn, self.table.c.as_of, cut, newest)
        return EarlierRows.read(partner_ids, newest, recent, self._earlier_reader(before, None))

    def _earlier_reader(self, latest, own: pd.Series | None):
        """The ``read(ids, since, until, scan)`` of :class:`EarlierRows` for the scores.

        Scores dated before ``latest`` (and before each partner's ``own`` cut-off, if given).
        """

        def read(ids, since, until, scan: bool) -> dict[str, list[float]]:
            data = self._select(
                ids, ["score"], before=latest if until is None else until, since=since, scan=scan
            )
            if own is not None and not data.empty:
                cuts = pd.to_datetime(own.reindex(data["partner_id"].to_numpy()).to_numpy())
                data = data[(pd.to_datetime(data["as_of"]).to_numpy() < cuts)]
            return _score_lists(data)

        return read


def shadow_rows(scores: pd.DataFrame, shadow: bool, history: ScoreHistory) -> np.ndarray:
    """Which rows of a decided batch are recorded as shadow rows (True) rather than decisions.

    ``shadow``: the run scored with a version other than the registry's champion
    (``serving.model_store.champion_version``). A key that version (the batch's
    ``model_version``) recorded as a decision, when it was the champion (e.g. an old date
    re-scored after a promotion), stays a decision unless another version decided it since.
    """
    flags = np.full(len(scores), bool(shadow))
    if not shadow or not len(scores):
        return flags
    as_of = pd.to_datetime(scores["as_of"]).astype("datetime64[us]")
    version = str(scores["model_version"].iloc[0])
    kept = history.decision_keys(version, as_of.min(), as_of.max())
    if kept.empty:
        return flags
    keys = pd.MultiIndex.from_arrays([scores["partner_id"].astype(str).to_numpy(), as_of])
    decided = pd.MultiIndex.from_frame(kept)
    return flags & ~keys.isin(decided)


def _score_lists(data: pd.DataFrame) -> dict[str, list[float]]:
    """Usable scores (not NULL or NaN) per partner, in the frame's (date) order."""
    out: dict[str, list[float]] = {}
    ids, scores = data["partner_id"].tolist(), data["score"].tolist()
    for pid, score in zip(ids, scores, strict=True):
        if score is not None and score == score:
            out.setdefault(pid, []).append(float(score))
    return out
