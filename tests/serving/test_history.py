import pandas as pd
import pytest

from partnerscore.serving.history import ScoreHistory


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


@pytest.fixture()
def store(tmp_path):
    return ScoreHistory(f"sqlite:///{tmp_path / 'sub' / 'history.sqlite'}")


def test_empty_store_reads_nothing_and_creates_nothing(store, tmp_path):
    assert not store.exists()
    assert store.read().empty
    assert store.previous(["P1"], pd.Timestamp("2025-01-01")) == {}
    assert not (tmp_path / "sub").exists()


def test_upsert_is_idempotent(store):
    store.upsert(rows("2025-01-01"))
    store.upsert(rows("2025-01-01", scores=(11.0, 21.0)))
    data = store.read()
    assert len(data) == 2
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


def test_latest_model_version_wins_per_date(store):
    store.upsert(rows("2025-01-01", version="1", scores=(10.0, 20.0)))
    store.upsert(rows("2025-01-01", version="2", scores=(15.0, 25.0)))
    data = store.read()
    assert data["model_version"].tolist() == ["2", "2"]
    assert data["score"].tolist() == [15.0, 25.0]
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from score_history").scalar() == 4


def test_many_partners_in_chunks(store):
    n = 1234
    frame = pd.concat([rows("2025-01-01", scores=(1.0,))] * n, ignore_index=True)
    frame["partner_id"] = [f"P{i}" for i in range(n)]
    store.upsert(frame)
    store.upsert(frame)
    assert len(store.read([f"P{i}" for i in range(n)])) == n


def test_payload_round_trip(store):
    frame = rows("2025-01-01")
    frame["peer_percentile"] = [12.5, 80.0]
    frame["partner_name"] = ["Ünïcödé & Co", "x"]
    store.upsert(frame)
    data = store.read()
    assert data["peer_percentile"].tolist() == [12.5, 80.0]
    assert data["partner_name"].tolist() == ["Ünïcödé & Co", "x"]
    assert data["provisional"].tolist() == [True, False]
    assert data["age_days"].tolist() == [30.0, 60.0]
    assert pd.isna(data["activities_touchpoints_30d"].iloc[1])


def test_failed_upsert_changes_nothing(store):
    store.upsert(rows("2025-01-01", scores=(10.0, 20.0)))
    bad = rows("2025-01-01", scores=(11.0, 21.0))
    bad["score"] = bad["score"].astype(object)
    bad.loc[1, "score"] = object()  # not storable: the whole transaction rolls back
    with pytest.raises(Exception):  # noqa: B017 - the driver's error type
        store.upsert(bad)
    assert store.read()["score"].tolist() == [10.0, 20.0]


def test_server_style_url_without_file(tmp_path):
    store = ScoreHistory("sqlite://")  # in-memory: any SQLAlchemy URL works
    store.upsert(rows("2025-01-01"))
    assert len(store.read()) == 2
    assert store.previous(["P1"], pd.Timestamp("2025-02-01")) == {"P1": [10.0]}
