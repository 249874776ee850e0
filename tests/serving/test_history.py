import threading

import pandas as pd
import pytest
import sqlalchemy as sa
from support import sqlite_write_lock_held

from partnerscore.serving.history import (
    HISTORY_COLUMNS,
    HISTORY_METRICS,
    TABLE,
    ScoreHistory,
    database_url,
)


def rows(as_of, version="1", scores=(10.0, 20.0)):
    return pd.DataFrame(
        {
            "partner_id": ["P1", "P2"][: len(scores)],
            "as_of": pd.Timestamp(as_of),
            "model_version": version,
            "age_days": [30.0, 60.0][: len(scores)],
            "score": list(scores),
            "score_smoothed": list(scores),
            "pred_revenue": [100.0, 200.0][: len(scores)],
            "pred_engagement": [0.1, 0.2][: len(scores)],
            "score_tier": ["D", "D"][: len(scores)],
            "quadrant": ["low_revenue_low_engagement"] * len(scores),
            "provisional": [True, False][: len(scores)],
            "guardrail_flag": [False, False][: len(scores)],
            "config_hash": "abc",
            "activities_touchpoints_30d": [1.0, float("nan")][: len(scores)],
            "driver_pos_1": ["x", "y"][: len(scores)],
            "shap_revenue_age_days": [0.1, 0.2][: len(scores)],
        }
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """The same tests against an embedded SQLite file and a real PostgreSQL server."""
    if request.param == "sqlite":
        return ScoreHistory(f"sqlite:///{tmp_path / 'sub' / 'history.sqlite'}")
    return ScoreHistory(request.getfixturevalue("postgres_url"))


def count(store):
    with store.engine.connect() as conn:
        return conn.exec_driver_sql(f"select count(*) from {TABLE}").scalar()


def test_empty_store_reads_nothing_and_creates_nothing(store, tmp_path):
    if store.url.startswith("sqlite"):
        assert not store.exists()
    assert store.read().empty
    assert store.previous(["P1"], pd.Timestamp("2025-01-01")) == {}
    assert not (tmp_path / "sub").exists()


def test_upsert_is_idempotent(store):
    store.upsert(rows("2025-01-01"))
    store.upsert(rows("2025-01-01", scores=(11.0, 21.0)))
    data = store.read()
    assert len(data) == 2
    assert count(store) == 2
    assert data["score"].tolist() == [11.0, 21.0]
    assert data["activities_touchpoints_30d"].iloc[0] == 1.0
    assert "driver_pos_1" not in data.columns and "shap_revenue_age_days" not in data.columns


def test_trajectory_and_previous(store):
    store.upsert(rows("2025-01-01", scores=(10.0, 20.0)))
    store.upsert(rows("2025-02-01", scores=(30.0, 40.0)))
    store.upsert(rows("2025-03-01", scores=(50.0,)))
    data = store.read(["P1"])
    assert data["as_of"].tolist() == [
        pd.Timestamp(d) for d in ("2025-01-01", "2025-02-01", "2025-03-01")
    ]
    assert store.previous(["P1", "P2"], pd.Timestamp("2025-03-01")) == {
        "P1": [10.0, 30.0],
        "P2": [20.0, 40.0],
    }
    # milestone scoring: each partner's own cut-off
    cuts = pd.Series(pd.to_datetime(["2025-02-01", "2025-03-02"]), index=["P1", "P2"])
    assert store.previous(["P1", "P2"], cuts) == {"P1": [10.0], "P2": [20.0, 40.0]}


def test_latest_model_version_wins_per_date(store):
    store.upsert(rows("2025-01-01", version="1", scores=(10.0, 20.0)))
    store.upsert(rows("2025-01-01", version="2", scores=(15.0, 25.0)))
    data = store.read()
    assert data["model_version"].tolist() == ["2", "2"]
    assert data["score"].tolist() == [15.0, 25.0]
    assert count(store) == 4
    # re-writing version 1 makes it the latest write again
    store.upsert(rows("2025-01-01", version="1", scores=(12.0, 22.0)))
    assert store.read()["score"].tolist() == [12.0, 22.0]
    assert store.previous(["P1"], pd.Timestamp("2025-02-01")) == {"P1": [12.0]}


def test_many_partners_in_chunks(store):
    n = 1234
    frame = pd.concat([rows("2025-01-01", scores=(1.0,))] * n, ignore_index=True)
    frame["partner_id"] = [f"P{i}" for i in range(n)]
    store.upsert(frame)
    store.upsert(frame)
    assert len(store.read([f"P{i}" for i in range(n)])) == n
    assert count(store) == n


def test_declared_columns_round_trip_and_others_stay_out(store):
    frame = rows("2025-01-01")
    frame["peer_percentile"] = [12.5, 80.0]
    frame["partner_name"] = ["Ünïcödé & Co", "x"]  # in the scores file, not the history
    frame["revenue_commitment"] = [1.0, 2.0]
    frame["partner_id"] = ["Ünïcödé/1", "P 2"]
    store.upsert(frame)
    data = store.read()
    assert set(data.columns) <= set(HISTORY_COLUMNS)
    assert "partner_name" not in data and "revenue_commitment" not in data
    assert data["partner_id"].tolist() == ["P 2", "Ünïcödé/1"]
    assert data["peer_percentile"].tolist() == [80.0, 12.5]
    assert data["provisional"].tolist() == [False, True]
    assert data["age_days"].tolist() == [60.0, 30.0]
    assert data["as_of"].dtype == "datetime64[us]"
    assert pd.isna(data["activities_touchpoints_30d"].iloc[0])
    # a metric nobody has is absent, as a feature the model lacks; only what a page needs
    assert "leads_qualified_todate" not in data
    page = store.read(["P 2"], columns=["score", "age_days"])
    assert list(page.columns) == ["partner_id", "as_of", "model_version", "score", "age_days"]
    with pytest.raises(Exception, match="unknown column"):
        store.read(columns=["partner_name"])


def test_failed_upsert_changes_nothing(store):
    store.upsert(rows("2025-01-01", scores=(10.0, 20.0)))
    bad = rows("2025-01-01", scores=(11.0, 21.0))
    bad["score"] = bad["score"].astype(object)
    bad.loc[1, "score"] = object()  # not storable: nothing is written
    with pytest.raises(Exception):  # noqa: B017 - the conversion's error type
        store.upsert(bad)
    assert store.read()["score"].tolist() == [10.0, 20.0]
    long_id = rows("2025-01-01", scores=(11.0, 21.0))
    long_id.loc[1, "partner_id"] = "x" * 5000  # ids of any length are stored
    store.upsert(long_id)
    assert len(store.read()) == 3


def test_index_serves_partner_date_reads(store):
    store.upsert(rows("2025-01-01"))
    inspector = sa.inspect(store.engine)
    keys = [tuple(u["column_names"]) for u in inspector.get_unique_constraints(TABLE)]
    keys += [tuple(i["column_names"]) for i in inspector.get_indexes(TABLE)]
    assert any(k[:2] == ("partner_id", "as_of") for k in keys)


def test_two_concurrent_writers_end_with_the_union(store):
    """Two writers upsert different and overlapping batches at once, in several rounds.

    No writer fails; the table holds exactly the union of keys; keys one writer owns hold its
    last round; the shared keys all hold the last round of one writer (whole batches commit
    atomically, the last committed wins).
    """
    store.upsert(rows("2024-12-01"))  # create the table before the race
    rounds = 4
    own = {"A": [f"A{i}" for i in range(80)], "B": [f"B{i}" for i in range(80)]}
    shared = [f"S{i}" for i in range(120)]
    errors = []

    def writer(name, offset):
        try:
            mine = ScoreHistory(store.url)
            for r in range(rounds):
                ids = own[name] + shared
                frame = pd.concat([rows("2025-01-01", scores=(1.0,))] * len(ids), ignore_index=True)
                frame["partner_id"] = ids if r % 2 else ids[::-1]  # both lock orders offered
                frame["score"] = offset + r
                mine.upsert(frame)
        except Exception as exc:  # pragma: no cover - the assertion below shows it
            errors.append(repr(exc))

    threads = [threading.Thread(target=writer, args=(n, o)) for n, o in (("A", 100), ("B", 200))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    data = store.read()
    data = data[data["as_of"] == pd.Timestamp("2025-01-01")].set_index("partner_id")["score"]
    assert sorted(data.index) == sorted(own["A"] + own["B"] + shared)
    assert (data[own["A"]] == 100 + rounds - 1).all()
    assert (data[own["B"]] == 200 + rounds - 1).all()
    assert data[shared].nunique() == 1
    assert data[shared].iloc[0] in (100 + rounds - 1, 200 + rounds - 1)
    assert count(store) == len(data) + 2


def test_server_style_url_without_file(tmp_path):
    store = ScoreHistory("sqlite://")  # in-memory: any SQLAlchemy URL works
    store.upsert(rows("2025-01-01"))
    assert len(store.read()) == 2
    assert store.previous(["P1"], pd.Timestamp("2025-02-01")) == {"P1": [10.0]}


def test_plain_postgresql_url_goes_through_psycopg(postgres_url):
    assert database_url("postgresql://u:p@h:5/db") == "postgresql+psycopg://u:p@h:5/db"
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    store = ScoreHistory(plain)
    store.upsert(rows("2025-01-01"))
    assert store.previous(["P1", "P2"], pd.Timestamp("2025-02-01")) == {
        "P1": [10.0],
        "P2": [20.0],
    }


@pytest.mark.parametrize("kind", ["score history", "decision ledger"])
def test_unreachable_server_is_one_line_exit_69(kind):
    """A server that does not answer is a service to wait for (sysexits.h's EX_UNAVAILABLE),
    as for the MLflow store; it was exit 2, as bad input."""
    from partnerscore.features.core import UNAVAILABLE, PartnerscoreError

    store = _store_of(kind, "postgresql://someone:secret@127.0.0.1:1/nothing")
    with pytest.raises(PartnerscoreError) as err:
        _ = store.engine
    assert f"{kind} postgresql://someone:***@127.0.0.1:1/nothing: " in str(err.value)
    assert "Connection refused" in str(err.value)
    assert "secret" not in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == UNAVAILABLE == 69


@pytest.mark.parametrize("kind", ["score history", "decision ledger"])
def test_a_server_that_refuses_is_exit_2(kind, postgres_url):
    """It answers: no such database (or role) is a setting to fix, not a service to wait for."""
    from partnerscore.features.core import PartnerscoreError

    url = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(PartnerscoreError) as err:
        _ = _store_of(kind, url).engine
    assert 'database "no_such_database" does not exist' in str(err.value)
    assert err.value.exit_code == 2


def _store_of(kind: str, url: str):
    from partnerscore.serving.ledger import DecisionLedger

    return ScoreHistory(url) if kind == "score history" else DecisionLedger(url)


@pytest.mark.parametrize("kind", ["score history", "decision ledger"])
@pytest.mark.parametrize(
    "url",
    [
        "sqlite:/x.db",  # a slash short: SQLAlchemy cannot parse it
        "postgresql://someone:secret@db.example:port/nothing",  # a port that is no number
        "postgresql://someone:secret@db.example:5432:1/nothing",
    ],
)
def test_unparsable_url_is_one_line_without_the_password(kind, url):
    """Config validation stops such URLs; the API or a job given a URL directly did not.

    The decision ledger raised SQLAlchemy's ArgumentError (its wrapper parsed the URL again
    to name it), both stores a ValueError for a port that is no number.
    """
    from partnerscore.features.core import PartnerscoreError

    with pytest.raises(PartnerscoreError) as err:
        _ = _store_of(kind, url).engine
    message = str(err.value)
    assert message.startswith(f"{kind} {url.replace('secret', '***')}: ")  # masked, named
    assert "secret" not in message and "\n" not in message


MASKED = {
    # a password holding '/' (a generated one often does): the tracking URIs' pattern showed it
    "slash": ("://someone:Se/cret@db.example/x", "://someone:***@db.example/x"),
    # an '@' unencoded: both maskings showed what follows it
    "at": ("://someone:Se@cret@db.example/x", "://someone:***@db.example/x"),
    # libpq's password parameter: both showed it
    "query": ("://someone@db.example/x?password=Secret", "://someone@db.example/x?password=***"),
    # the host left out, the password read as a port: the tracking URIs' pattern showed it
    "no_host": ("://someone:Secret/x", "://someone:***/x"),
}
"""URL (after the scheme) -> as error lines show it."""


@pytest.mark.parametrize("case", sorted(MASKED))
def test_every_store_masks_a_password_wherever_it_is(case):
    """One masking (models/model_uri.shown_uri) for MLflow tracking URIs and the history's and
    ledger's database URLs. The tracking URIs' pattern showed a password holding '/' or one
    where a port goes; SQLAlchemy's rendering (the stores') showed `?password=`; both showed
    the end of a password holding '@'."""
    from partnerscore.features.core import PartnerscoreError
    from partnerscore.models.model_uri import check_tracking_uri
    from partnerscore.serving.ledger import DecisionLedger

    given, shown = MASKED[case]
    with pytest.raises(PartnerscoreError) as err:  # postgres:// is no MLflow scheme
        check_tracking_uri(f"postgres{given}", "MLFLOW_TRACKING_URI")
    message = str(err.value)
    assert f"cannot open the MLflow store 'postgres{shown}': " in message, message
    assert "cret" not in message, message
    for store in (ScoreHistory(f"postgresql{given}"), DecisionLedger(f"postgresql{given}")):
        assert store._shown() == f"postgresql{shown}"  # what their error lines name


@pytest.mark.parametrize("kind", ["score history", "decision ledger"])
def test_both_stores_name_the_server_without_the_password(kind, tmp_path):
    from partnerscore.features.core import PartnerscoreError

    for url in (
        "postgresql://someone:secret@127.0.0.1:1/nothing",
        "postgres://someone:secret@127.0.0.1:1/nothing",  # psycopg 3 for both spellings
    ):
        store = _store_of(kind, url)
        with pytest.raises(PartnerscoreError) as err:
            store.read() if kind == "score history" else store.read_decisions()
        scheme = url.split(":", 1)[0]
        assert str(err.value).startswith(f"{kind} {scheme}://someone:***@127.0.0.1:1/nothing: ")
        assert "connection" in str(err.value)  # reached the server: not "Can't load plugin"
        assert "secret" not in str(err.value) and "\n" not in str(err.value)
    blocked = tmp_path / "file"
    blocked.write_text("")
    store = _store_of(kind, f"sqlite:///{blocked}/sub/history.sqlite")
    with pytest.raises(PartnerscoreError, match=f"^{kind} sqlite:///.*: Not a directory$"):
        _ = store.engine


def test_legacy_json_store_is_migrated_once(tmp_path):
    path = tmp_path / "history.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "create table score_history (id integer primary key, partner_id varchar, "
            "as_of varchar, model_version varchar, age_days float, score float, "
            "score_smoothed float, pred_revenue float, pred_engagement float, "
            "score_tier varchar, quadrant varchar, provisional boolean, guardrail_flag boolean, "
            "config_hash varchar, payload text not null)"
        )
        conn.exec_driver_sql(
            "insert into score_history values (1, 'P1', '2025-01-01T00:00:00', '1', 30, 10, 10, "
            "100, 0.1, 'D', 'q', 1, 0, 'abc', "
            '\'{"activities_touchpoints_30d": 3.0, "peer_percentile": 40.0, "x": 1}\'),'
            " (2, 'P1', '2025-01-01T00:00:00', '2', 30, 11, 11, 100, 0.1, 'D', 'q', 1, 0, "
            "'abc', '{}')"
        )
    engine.dispose()
    store = ScoreHistory(f"sqlite:///{path}")
    data = store.read()
    assert data["score"].tolist() == [11.0]  # the later write of the two versions
    assert count(store) == 2
    assert not sa.inspect(store.engine).has_table("score_history")
    with store.engine.connect() as conn:
        migrated = conn.exec_driver_sql(
            f"select activities_touchpoints_30d, peer_percentile from {TABLE} "
            "where model_version = '1'"
        ).one()
    assert tuple(migrated) == (3.0, 40.0)
    store.upsert(rows("2025-01-01", version="1", scores=(12.0,)))  # new writes win
    assert ScoreHistory(f"sqlite:///{path}").read()["score"].tolist() == [12.0]


def test_report_trajectory_metrics_are_stored():
    from partnerscore.serving.report import KEY_METRICS

    assert set(KEY_METRICS) <= set(HISTORY_METRICS)


def test_shadow_rows_are_kept_but_never_read(store):
    import numpy as np

    store.upsert(rows("2025-01-01", version="1", scores=(10.0, 20.0)))
    store.upsert(store.prepare(rows("2025-01-01", version="2", scores=(15.0, 25.0)), np.ones(2)))
    store.upsert(store.prepare(rows("2025-02-01", version="2", scores=(35.0, 45.0)), np.ones(2)))
    assert count(store) == 6
    data = store.read()
    assert data["model_version"].tolist() == ["1", "1"]  # the shadow write came later
    assert data["score"].tolist() == [10.0, 20.0]
    assert store.previous(["P1", "P2"], pd.Timestamp("2025-03-01")) == {
        "P1": [10.0],
        "P2": [20.0],
    }
    assert store.previous(["P1"], pd.Timestamp("2025-03-01"), newest=1) == {"P1": [10.0]}
    cuts = pd.Series(pd.to_datetime(["2025-03-01"]), index=["P1"])
    assert store.previous(["P1"], cuts) == {"P1": [10.0]}
    keys = store.decision_keys("1", "2025-01-01", "2025-02-01")
    assert sorted(keys["partner_id"]) == ["P1", "P2"]
    assert store.decision_keys("2", "2025-01-01", "2025-02-01").empty


def test_a_store_without_the_shadow_column_gains_it(store):
    store.upsert(rows("2025-01-01", version="1", scores=(10.0, 20.0)))
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"alter table {TABLE} drop column shadow")
    store.dispose()
    again = ScoreHistory(store.url)
    assert again.read()["score"].tolist() == [10.0, 20.0]  # older rows: decisions
    columns = {c["name"] for c in sa.inspect(again.engine).get_columns(TABLE)}
    assert "shadow" in columns
    again.upsert(rows("2025-01-01", version="2", scores=(15.0, 25.0)))
    assert again.read()["score"].tolist() == [15.0, 25.0]


def test_an_older_store_is_read_by_a_role_that_cannot_migrate_it(postgres_url):
    """A role that may read but not alter a store from before ``shadow`` (a report's, a
    replica's) reads it as before, every row a decision; its writes name why they fail."""
    import uuid

    from partnerscore.features.core import PartnerscoreError
    from partnerscore.serving.ledger import DecisionLedger

    owner, ledger = ScoreHistory(postgres_url), DecisionLedger(postgres_url)
    owner.upsert(rows("2025-01-01", version="1", scores=(10.0, 20.0)))
    ledger.record_decisions(rows("2025-01-01", version="1", scores=(10.0, 20.0)))
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with owner.engine.begin() as conn:
        conn.exec_driver_sql(f"alter table {TABLE} drop column shadow")
        conn.exec_driver_sql("alter table score_decisions drop column shadow")
        conn.exec_driver_sql(f"create role {role} login")
        conn.exec_driver_sql(f"grant select on all tables in schema public to {role}")
    owner.dispose()
    ledger.dispose()
    url = sa.engine.make_url(postgres_url).set(username=role).render_as_string(False)
    reader, decisions = ScoreHistory(url), DecisionLedger(url)
    try:
        assert reader.read()["score"].tolist() == [10.0, 20.0]
        assert reader.read(columns=["score"])["score"].tolist() == [10.0, 20.0]
        assert reader.recorded(["score", "shadow"]) == ["score"]
        assert reader.previous(["P1", "P2"], pd.Timestamp("2025-02-01"), newest=1) == {
            "P1": [10.0],
            "P2": [20.0],
        }
        assert decisions.read_decisions()["score_tier"].tolist() == ["D", "D"]
        assert decisions.previous(["P1"], pd.Timestamp("2025-02-01"), newest=1) == {
            "P1": [(10.0, "D")]
        }
        with pytest.raises(PartnerscoreError, match="score history .*must be owner"):
            reader.upsert(rows("2025-02-01", version="1"))
        with pytest.raises(PartnerscoreError, match="decision ledger .*must be owner"):
            decisions.record_decisions(rows("2025-02-01", version="1"))
    finally:
        reader.dispose()
        decisions.dispose()
        with owner.engine.begin() as conn:
            conn.exec_driver_sql(f"drop owned by {role}")
            conn.exec_driver_sql(f"drop role {role}")
        owner.dispose()


@pytest.mark.parametrize("kind", ["score history", "decision ledger"])
def test_a_sqlite_store_waits_the_same_bound_for_another_writer(kind, tmp_path):
    """The ledger (and so incentives) waited pysqlite's default 5 s for another writer of its
    file, the history 10 s (``SQLITE_BUSY_SECONDS``). Both now wait 10 s: here another process
    holds the file's write lock for 7 s, then commits; the ledger's write failed with
    "database is locked" after 5 s, and now waits and writes."""
    from partnerscore.serving.history import SQLITE_BUSY_SECONDS

    store = _store_of(kind, f"sqlite:///{tmp_path / 'store.sqlite'}")
    with store.engine.connect() as conn:  # SQLite's own reading of the connection's bound
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1000 * SQLITE_BUSY_SECONDS
    try:
        with sqlite_write_lock_held(tmp_path / "store.sqlite", 7):
            if kind == "score history":
                store.upsert(rows("2025-01-01"))
                assert len(store.read()) == 2
            else:
                store.record_decisions(rows("2025-02-01"))
                assert len(store.read_decisions()) == 2
    finally:
        store.dispose()


@pytest.mark.parametrize("kind", ["score history", "decision ledger"])
def test_a_lock_another_session_holds_is_waited_for_a_bounded_time(kind, postgres_url, monkeypatch):
    """An analyst's open transaction holding the table (`LOCK TABLE`, a long `ALTER TABLE`)
    made a score job wait as long as it was held: for ever. Now PostgreSQL's `lock_timeout`
    (`stores.LOCK_WAIT_SECONDS`, as a SQLite file's busy timeout) ends it in one line, exit 2,
    nothing written. Here the other session releases its lock after 30 s: before, the read
    waited and returned."""
    import threading

    import psycopg

    from partnerscore.features.core import PartnerscoreError
    from partnerscore.models import stores

    monkeypatch.setattr(stores, "LOCK_WAIT_SECONDS", 1)
    store = _store_of(kind, postgres_url)
    _ = store.engine  # its tables created
    read = store.read if kind == "score history" else store.read_decisions
    table = TABLE if kind == "score history" else "score_decisions"
    holder = psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    release = threading.Timer(30, holder.commit)
    release.start()
    try:
        with pytest.raises(PartnerscoreError) as err:
            read()
    finally:
        release.cancel()
        holder.close()
        store.dispose()
    assert str(err.value).endswith(
        "canceling statement due to lock timeout (another session held a lock it needed for 1 s)"
    )
    assert str(err.value).startswith(f"{kind} postgresql+psycopg://") and "\n" not in str(err.value)
    assert err.value.exit_code == 2
    assert read().empty  # released: read as before


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, "10s"),
        ({"query": "?options=-c%20lock_timeout%3D5s"}, "5s"),  # the URL's own bound
        ({"env": "-c lock_timeout=7s"}, "7s"),  # PGOPTIONS
        ({"role": "3s"}, "3s"),  # the role's setting (ALTER ROLE ... SET)
        ({"query": "?options=-c%20search_path%3Dpublic"}, "10s"),  # other options only
    ],
)
def test_the_lock_bound_keeps_the_users_own(given, expected, postgres_url, monkeypatch):
    import psycopg

    from partnerscore.serving.ledger import DecisionLedger

    monkeypatch.delenv("PGOPTIONS", raising=False)
    if "env" in given:
        monkeypatch.setenv("PGOPTIONS", given["env"])
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    if "role" in given:
        role = f"r_{plain.rsplit('/', 1)[1]}"
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN")
            conn.execute(f"ALTER ROLE {role} SET lock_timeout = '{given['role']}'")
            conn.execute(f"GRANT ALL ON SCHEMA public TO {role}")
        plain = plain.replace("://partnerscore@", f"://{role}@")
    url = plain + given.get("query", "")
    for store in (ScoreHistory(url), DecisionLedger(url)):
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == expected
        store.dispose()
