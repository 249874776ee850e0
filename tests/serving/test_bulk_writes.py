"""History and ledger writes through the driver's executemany against SQLAlchemy's own
per-row statements (the slow twins): the same stored values, byte for byte, on SQLite and
PostgreSQL; and the ledger's narrow ``previous`` read against the full ``read_decisions``."""

import json

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partnerscore.serving.history import (
    HISTORY_COLUMNS,
    KEY,
    TABLE,
    ScoreHistory,
    _to_records,
    keep_newest,
)
from partnerscore.serving.ledger import (
    DECISION_COLUMNS,
    DECISION_KEY,
    DecisionBatch,
    DecisionLedger,
    _plain,
    as_of_text,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'h.sqlite'}"
    return request.getfixturevalue("postgres_url")


def scores(as_of="2025-01-01 10:30:00.123456", version="1", n=6, seed=0):
    rng = np.random.default_rng(seed)
    score = rng.uniform(0, 100, n)
    score[1] = np.nan
    return pd.DataFrame(
        {
            "partner_id": [f"P{i}" for i in range(n - 1)] + ['O\'Brien "&" Co'],
            "as_of": pd.Timestamp(as_of),
            "model_version": version,
            "age_days": rng.uniform(0, 400, n),
            "score": score,
            "score_smoothed": score,
            "pred_revenue": rng.uniform(0, 1e6, n),
            "pred_engagement": rng.uniform(0, 1, n),
            "peer_percentile": rng.uniform(0, 100, n),
            "score_tier": pd.array(["A", "B", None, "D", "C", "A"][:n], dtype="str"),
            "quadrant": "q",
            "tier": "gold",
            "provisional": [True, False] * (n // 2),
            "guardrail_flag": pd.array([True, None, False, False, True, False][:n], dtype=object),
            "out_of_scope": False,
            "config_hash": "abc",
            "activities_touchpoints_30d": [1.0, np.nan] * (n // 2),
            "score_tier_candidate": "B",
            "tier_held_reason": ["", "hysteresis: held"] * (n // 2),
            "maturity_band": "early",
            "score_adjustment": 0.0,
            "override_tier": "",
            "override_action": ["", "call them"] * (n // 2),
            "override_reason": ["", "owner's call"] * (n // 2),
            "override_expires": ["", "2025-02-01"] * (n // 2),
            "deals_won_todate": np.arange(n),
            "odd_floats": [-0.0, np.inf, 1e-320, 0.1, np.nan, -np.inf][:n],
            "text_fact": pd.array(['é "q"', None, "", "x", "y", "z"][:n], dtype="str"),
        }
    )


def stored(engine, table, skip=("id", "written_at")):
    with engine.connect() as conn:
        cols = [c for c in sa.inspect(engine).get_columns(table) if c["name"] not in skip]
        names = ", ".join(c["name"] for c in cols)
        return conn.exec_driver_sql(f"SELECT {names} FROM {table} ORDER BY {names}").all()


def history_slow_write(store, frame):
    """The per-row SQLAlchemy upsert the history used before (the twin)."""
    frame = frame[[c for c in HISTORY_COLUMNS if c in frame]].assign(written_at=1)
    frame["partner_id"] = frame["partner_id"].astype(str)
    frame = frame.sort_values(list(KEY), kind="stable")
    columns = list(frame.columns)
    records = _to_records(frame, columns)
    with store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(store.table)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(KEY), set_={c: stmt.excluded[c] for c in columns if c not in KEY}
        )
        conn.execute(stmt, records)


def test_history_bulk_upsert_stores_what_sqlalchemy_stores(url):
    store = ScoreHistory(url)
    first, again = scores(), scores(seed=1)  # the second batch replaces the first's rows
    history_slow_write(store, first)
    history_slow_write(store, again)
    want = stored(store.engine, TABLE)
    slow_read = store.read()
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM {TABLE}")
    store.upsert(first)
    store.upsert(again)
    assert stored(store.engine, TABLE) == want
    pd.testing.assert_frame_equal(store.read(), slow_read)
    before = pd.Timestamp("2025-06-01")
    assert store.previous(["P0", "P2"], before) == {
        "P0": [again["score"][0]],
        "P2": [again["score"][2]],
    }


def ledger_slow_write(ledger, frame, facts):
    """The per-row records and SQLAlchemy insert the ledger used before (the twin)."""
    frame = frame.reset_index(drop=True)
    records = []
    for rec in frame.to_dict("records"):
        row = {"partner_id": str(rec["partner_id"]), "as_of": as_of_text([rec["as_of"]])[0]}
        row["model_version"] = str(rec["model_version"])
        for name in DECISION_COLUMNS:
            if name in row or name == "facts":
                continue
            value = _plain(rec[name]) if name in rec else None
            if name == "override_expires" and value not in (None, ""):
                value = pd.Timestamp(value).strftime("%Y-%m-%d")
            row[name] = None if value == "" else value
        row["facts"] = json.dumps({c: _plain(rec[c]) for c in facts if c in rec}, sort_keys=True)
        records.append(row)
    with ledger.engine.begin() as conn:
        conn.execute(ledger.decisions.insert(), records)


def test_ledger_bulk_insert_stores_what_sqlalchemy_stores(url):
    ledger = DecisionLedger(url)
    facts = ("provisional", "deals_won_todate", "activities_touchpoints_30d", "odd_floats")
    facts = (*facts, "text_fact", "score_tier", "provisional", "not_a_column")
    frame = scores()
    ledger_slow_write(ledger, frame, facts)
    want = stored(ledger.engine, "score_decisions")
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM score_decisions")
    assert ledger.record_decisions(frame, facts=facts) == len(frame)
    assert stored(ledger.engine, "score_decisions") == want


def previous_reference(ledger, partner_ids, before):
    """``previous`` as it was: every decision row read back, then filtered (the twin)."""
    per_partner = isinstance(before, pd.Series)
    latest = pd.to_datetime(before).max() if per_partner else pd.Timestamp(before)
    data = ledger.read_decisions(partner_ids)
    if data.empty:
        return {}
    if per_partner:
        own = pd.to_datetime(before.reindex(data["partner_id"].to_numpy()).to_numpy())
        data = data[data["as_of"].to_numpy() < own]
    else:
        data = data[data["as_of"] < latest]
    out = {}
    for pid, score, tier in zip(data["partner_id"], data["score"], data["score_tier"], strict=True):
        if score is not None and score == score:
            tier = "" if tier is None or tier != tier else str(tier)  # NULL tier: ""
            out.setdefault(pid, []).append((float(score), tier))
    return out


def test_ledger_previous_equals_reading_every_decision(tmp_path):
    ledger = DecisionLedger(f"sqlite:///{tmp_path / 'h.sqlite'}")
    assert ledger.previous(["P0"], pd.Timestamp("2025-01-01")) == {}
    for i, when in enumerate(["2025-01-01", "2025-02-01", "2025-03-01", "2025-02-01"]):
        for version in ("1", "2"):
            ledger.record_decisions(scores(when, version=version, seed=i), facts=("provisional",))
    ids = [f"P{i}" for i in range(6)] + ["nobody"]
    for cut in ("2025-01-01", "2025-02-01", "2025-02-02", "2025-12-31"):
        got = ledger.previous(ids, pd.Timestamp(cut))
        assert got == previous_reference(ledger, ids, pd.Timestamp(cut))
    cuts = pd.Series(pd.to_datetime(["2025-02-15", "2025-03-02", "2025-01-01"]), index=ids[:3])
    assert ledger.previous(ids[:3], cuts) == previous_reference(ledger, ids[:3], cuts)
    assert ledger.previous(ids[:3], cuts)  # not vacuous


def driver_rows_reference(frame, columns, table, dialect):
    """Per-value conversion and bind processing as the history did it before (the twin)."""
    from partnerscore.serving.history import _to_columns

    values = []
    for name, column in zip(columns, _to_columns(frame, columns), strict=True):
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            column = [None if v is None else process(v) for v in column]
        values.append(column)
    return list(zip(*values, strict=True))


history_rows = st.lists(
    st.tuples(
        st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
        st.one_of(st.none(), st.booleans()),
        st.booleans(),
        st.one_of(st.none(), st.integers(0, 3)),  # as_of: NaT or one of a few dates
        st.one_of(st.none(), st.text(max_size=4)),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=history_rows)
def test_history_column_conversion_equals_the_per_value_twin(rows, tmp_path):
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.dialects.postgresql import psycopg

    from partnerscore.serving.history import _driver_rows

    day = pd.Timestamp("2025-01-01 10:30:00.123456")
    frame = pd.DataFrame(
        {
            "partner_id": pd.array([r[4] for r in rows], dtype="str"),
            "as_of": pd.to_datetime(
                [pd.NaT if r[3] is None else day + pd.Timedelta(days=r[3]) for r in rows]
            ),
            "score": [np.nan if r[0] is None else r[0] for r in rows],
            "provisional": [r[2] for r in rows],
            "guardrail_flag": pd.array([r[1] for r in rows], dtype=object),
            "score_tier": pd.array([r[4] for r in rows], dtype=object),
            "written_at": np.arange(len(rows), dtype="int64"),
        }
    )
    store = ScoreHistory(f"sqlite:///{tmp_path / 'never-created.sqlite'}")
    columns = list(frame.columns)
    for dialect in (sqlite.dialect(), psycopg.dialect()):
        fast = _driver_rows(frame, columns, store.table, dialect)
        slow = driver_rows_reference(frame, columns, store.table, dialect)
        assert repr(fast) == repr(slow)  # repr: -0.0 and 0.0 differ, NaN never equals itself
        batch = store.prepare(frame.drop(columns="written_at"))
        prepared = _driver_rows(batch.frame, list(batch.plain), store.table, dialect, batch.plain)
        assert repr(prepared) == repr(
            driver_rows_reference(batch.frame, list(batch.plain), store.table, dialect)
        )


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))),
    texts=st.lists(st.one_of(st.none(), st.text(max_size=5))),
)
def test_ledger_column_encodings_equal_the_per_value_twins(values, texts):
    from partnerscore.serving.ledger import json_column, text_values

    floats = pd.Series([np.nan if v is None else v for v in values], dtype=float)
    assert json_column(floats) == [json.dumps(_plain(v)) for v in floats.tolist()]
    strings = pd.Series(pd.array(texts, dtype="str"))
    assert text_values(strings) == [str(v) for v in strings]
    assert json_column(strings) == [json.dumps(_plain(v)) for v in strings.tolist()]


def _typed_rows(path, table="score_decisions"):
    """Every row, ids included, each value with its SQLite storage type, in id order."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        typed = ", ".join(f"typeof({c}), {c}" for c in cols)
        return conn.execute(f"SELECT {typed} FROM {table} ORDER BY id").fetchall()


ledger_floats = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, 1e308, -1e308, 1.0, 2.0**53, 0.1]),
)
ledger_texts = st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["", "1.5", "12", "é"]))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    keys=st.lists(st.sampled_from([f"P{i}" for i in range(8)] + ["O'B", "1"]), max_size=12),
    floats=st.lists(ledger_floats, min_size=5, max_size=5),
    texts=st.lists(ledger_texts, min_size=9, max_size=9),
    earlier=st.integers(0, 3),
)
def test_staged_ledger_write_stores_what_the_row_by_row_insert_stores(
    keys, floats, texts, earlier, tmp_path_factory
):
    """``stage_decisions`` + ``record_staged`` (the worker's fast path) against
    ``record_decisions``: the same rows, ids, storage types and replacements, extreme floats,
    text that looks numeric and NULLs included, on a fresh store and on one holding rows."""
    keys = list(dict.fromkeys(keys))
    names = list(DECISION_COLUMNS)
    float_names = [n for n, kind in DECISION_COLUMNS.items() if kind is sa.Float]
    text_names = [n for n in names if n not in float_names and n not in DECISION_KEY]

    def batch(ids, as_of, seed):
        rows = []
        for i, pid in enumerate(ids):
            values = {"partner_id": pid, "as_of": as_of, "model_version": "1"}
            for j, name in enumerate(float_names):
                values[name] = floats[(i + j + seed) % len(floats)]
            for j, name in enumerate(text_names):
                values[name] = texts[(i + j + seed) % len(texts)]
            rows.append(tuple(values[n] for n in names))
        return DecisionBatch({n: [r[k] for r in rows] for k, n in enumerate(names)}, rows)

    results = []
    for staged in (False, True):
        path = tmp_path_factory.mktemp("ledger") / "h.sqlite"
        ledger = DecisionLedger(f"sqlite:///{path}")
        # earlier batches: another date, and (earlier > 1) this date's rows to be replaced
        for k in range(earlier):
            as_of = "2026-03-01" if k % 2 else "2026-01-15"
            ledger.record_decisions(batch(list(reversed(keys)) + ["Z"], as_of, seed=k + 1))
        new = batch(keys, "2026-03-01", seed=0)
        if staged:
            image = ledger.stage_decisions(new)
            assert (image.image is not None) == bool(keys)
            assert ledger.record_staged(image) == len(keys)
        else:
            assert ledger.record_decisions(new) == len(keys)
        results.append(_typed_rows(path) if path.exists() else None)
    assert results[1] == results[0]


@settings(max_examples=25, deadline=None)
@given(
    batches=st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(["1", "2"]), st.integers(0, 50)),
        min_size=0,
        max_size=5,
    ),
    wanted=st.lists(st.sampled_from([f"P{i}" for i in range(6)] + ["nobody"]), max_size=8),
    cut=st.integers(0, 4),
    per_partner=st.booleans(),
)
def test_previous_reads_the_same_rows_by_table_scan_and_by_id_lists(
    batches, wanted, cut, per_partner
):
    """A large batch's earlier rows come from one pass over the table (``SCAN_ABOVE``), a
    small one's from ``IN (...)`` lists: the same rows, history and ledger alike."""
    import tempfile
    from unittest import mock

    from partnerscore.serving import history as history_module

    dates = pd.to_datetime(["2025-01-01", "2025-02-01", "2025-03-01", "2025-04-01", "2026-01-01"])
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/h.sqlite"
        history, ledger = ScoreHistory(url), DecisionLedger(url)
        for day, version, seed in batches:
            frame = scores(str(dates[day]), version=version, seed=seed)
            history.upsert(frame)
            ledger.record_decisions(frame, facts=("provisional",))
        before = dates[cut]
        if per_partner and wanted:  # milestone scoring: each partner's own cut-off
            before = pd.Series(dates[[(cut + i) % 5 for i in range(len(set(wanted)))]])
            before.index = sorted(set(wanted))
        found = []
        for scan_above in (0, 10**9):
            with mock.patch.object(history_module, "SCAN_ABOVE", scan_above):  # both stores
                found.append((history.previous(wanted, before), ledger.previous(wanted, before)))
        assert found[0] == found[1]


def _store_batches(history, ledger, batches, dates):
    """Write (date index, model version, scores of P0..P5) batches into both stores."""
    for day, version, values in batches:
        frame = scores(str(dates[day]), version=version)
        frame["score"] = np.asarray(values, dtype=float)
        history.upsert(frame)
        ledger.record_decisions(frame, facts=("provisional",))


SCORE_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0, 50.0]),
)


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(
        st.tuples(
            st.integers(0, 4),
            st.sampled_from(["1", "2"]),
            st.lists(SCORE_VALUES, min_size=6, max_size=6),
        ),
        max_size=7,
    ),
    wanted=st.lists(st.sampled_from([f"P{i}" for i in range(6)] + ["nobody"]), max_size=8),
    cut=st.integers(0, 5),
    per_partner=st.booleans(),
    newest=st.integers(1, 4),
    scan=st.booleans(),
)
def test_the_newest_earlier_rows_picked_by_the_database_are_the_last_ones_read(
    batches, wanted, cut, per_partner, newest, scan
):
    """``previous(..., newest=k)`` reads the store's last k dates, then older rows only of the
    partners short of k there: the same as reading every earlier row and keeping each
    partner's last k (the twin), with NaN, NULL and infinite scores, a NaN latest write over
    another version's number, partners missing from recent batches, per-partner cut-offs."""
    import tempfile
    from unittest import mock

    from partnerscore.serving import history as history_module
    from partnerscore.serving.history import keep_newest

    dates = pd.to_datetime(
        ["2025-01-01", "2025-02-01", "2025-03-01", "2025-04-01", "2025-05-01", "2026-01-01"]
    )
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/h.sqlite"
        history, ledger = ScoreHistory(url), DecisionLedger(url)
        _store_batches(history, ledger, batches, dates)
        before = dates[cut]
        if per_partner and wanted:
            before = pd.Series(dates[[(cut + i) % 6 for i in range(len(set(wanted)))]])
            before.index = sorted(set(wanted))
        with mock.patch.object(history_module, "SCAN_ABOVE", 0 if scan else 10**9):
            for store in (history, ledger):
                everything = store.previous(wanted, before)
                assert store.previous(wanted, before, newest=newest) == keep_newest(
                    everything, newest
                )
                if not isinstance(before, pd.Series):  # read before the partners are known
                    early = store.earlier(before, newest)
                    assert early.of(wanted) == keep_newest(everything, newest)


def test_the_newest_earlier_rows_on_both_databases(url):
    """The newest earlier rows on SQLite and PostgreSQL: NaN (PostgreSQL stores it), NULL and
    infinite scores, a later version's NaN write over an earlier version's number on the same
    date (the date then has no score), a partner short of rows in the last dates."""
    from partnerscore.serving.history import keep_newest

    history, ledger = ScoreHistory(url), DecisionLedger(url)
    dates = pd.to_datetime(["2025-01-01", "2025-02-01", "2025-03-01", "2025-04-01"])
    nan, inf = np.nan, np.inf
    batches = [
        (0, "1", [10.0, 11.0, inf, nan, 14.0, 15.0]),
        (1, "1", [20.0, 21.0, 22.0, 23.0, -inf, 25.0]),
        (2, "1", [30.0, 31.0, 32.0, 33.0, 34.0, 35.0]),
        (2, "2", [nan, 41.0, nan, 43.0, 44.0, 45.0]),  # the later write of date 2
        (3, "1", [nan, nan, 52.0, nan, 54.0, 55.0]),
    ]
    _store_batches(history, ledger, batches, dates)
    ids = [f"P{i}" for i in range(5)] + ['O\'Brien "&" Co', "nobody"]
    for store in (history, ledger):
        everything = store.previous(ids, pd.Timestamp("2026-01-01"))
        assert len(everything) == 6
        for newest in (1, 2, 3):
            assert store.previous(ids, pd.Timestamp("2026-01-01"), newest=newest) == (
                keep_newest(everything, newest)
            )
    # P0: date 2's latest write is NaN and date 3 is NaN: its newest usable dates are 1 and 0
    assert history.previous(["P0"], pd.Timestamp("2026-01-01"), newest=2) == {"P0": [10.0, 20.0]}
    assert history.previous(["P2"], pd.Timestamp("2026-01-01"), newest=3) == {
        "P2": [inf, 22.0, 52.0]
    }


def test_only_partners_short_of_rows_in_the_last_dates_are_read_further_back(tmp_path, monkeypatch):
    """A store of many batches: the job reads the last batches, then older rows by id only
    for partners without enough rows there (here P3, absent from the last two batches, and
    P1, whose score is always NaN), so its cost does not grow with the store's age."""
    from partnerscore.serving import history as history_module

    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    history, ledger = ScoreHistory(url), DecisionLedger(url)
    dates = pd.to_datetime(["2025-01-01", "2025-02-01", "2025-03-01", "2025-04-01"])
    for i, when in enumerate(dates):
        frame = scores(str(when), seed=i)
        if i >= 2:
            frame = frame[frame["partner_id"] != "P3"]
        history.upsert(frame)
        ledger.record_decisions(frame, facts=("provisional",))
    calls = []
    real = history_module.rows_of_partners

    def spy(conn, query, column, ids, chunk, scan=True):
        calls.append((sorted(ids), str(query.compile(compile_kwargs={"literal_binds": True}))))
        return real(conn, query, column, ids, chunk, scan)

    monkeypatch.setattr(history_module, "rows_of_partners", spy)
    ids = [f"P{i}" for i in range(6)]
    got = history.previous(ids, pd.Timestamp("2026-01-01"), newest=2)
    # P5 is not in the store (the sixth row is O'Brien's): short too
    assert [c[0] for c in calls] == [ids, ["P1", "P3", "P5"]]
    assert ">= '2025-03-01" in calls[0][1] and "< '2025-03-01" in calls[1][1]
    assert got == keep_newest(history.previous(ids, pd.Timestamp("2026-01-01")), 2)
    assert len(got["P3"]) == 2 and "P1" not in got
