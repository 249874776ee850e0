"""Shadow runs: a version other than the champion is recorded apart from the decisions.

The history and the ledger keep every version's rows (key: partner, as_of, model_version), but
smoothing, tier hysteresis, guardrails, incentives, reports and the monitor read decisions only:
a challenger scored in shadow on one date is never the champion's ``score_previous`` later.
"""

import pandas as pd
import pytest
import sqlalchemy as sa
from support import stored_history as stored

from partnerscore.serving.history import TABLE, ScoreHistory
from partnerscore.serving.ledger import DecisionLedger
from partnerscore.serving.model_store import champion_version
from partnerscore.serving.score import run_score

D1, D2 = pd.Timestamp("2026-01-01").date(), pd.Timestamp("2026-02-01").date()
NAME = "partnerscore"  # the registered model of the fixture two_versions (conftest)


def test_champion_version_reads_the_alias(two_versions, tmp_path):
    cfg, client, v1, v2 = two_versions
    tracking = cfg.paths.tracking_uri()
    assert champion_version(f"models:/{NAME}@champion", NAME, tracking) == v1
    assert champion_version(f"models:/{NAME}/{v2}", NAME, tracking) == v1
    assert champion_version("/some/folder", NAME, tracking) == v1
    assert champion_version("models:/other@champion", "other", tracking) is None
    missing = tmp_path / "nothing" / "mlflow.db"
    assert champion_version(f"models:/{NAME}@champion", NAME, f"sqlite:///{missing}") is None
    assert not missing.parent.exists()
    queried = f"sqlite:///{missing}?timeout=20"  # MLflow answered, creating the store
    assert champion_version(f"models:/{NAME}@champion", NAME, queried) is None
    assert not missing.parent.exists()


def test_a_shadow_run_is_recorded_but_never_read_as_a_decision(raw_dir, two_versions, tmp_path):
    cfg, client, v1, v2 = two_versions
    champion = run_score(raw_dir, D1, "champion", tmp_path / "c1.parquet", cfg)
    assert champion.shadow_of is None and "shadow run" not in champion.summary()
    shadow = run_score(raw_dir, D1, v2, tmp_path / "s1.parquet", cfg)
    assert shadow.shadow_of == v1 and shadow.shadow_rows == shadow.scored
    assert f"shadow run: the champion is version {v1}; this batch is recorded as shadow" in (
        shadow.summary()
    )
    rows = stored(cfg)
    assert set(rows.loc[rows["model_version"] == v1, "shadow"]) == {False}
    assert set(rows.loc[rows["model_version"] == v2, "shadow"]) == {True}
    assert (rows["model_version"] == v2).sum() == champion.scored
    # the challenger wrote last, yet the history and the ledger read the champion's rows
    history = ScoreHistory(cfg.paths.history_database())
    assert set(history.read()["model_version"]) == {v1}
    assert set(DecisionLedger(cfg.paths.history_database()).read_decisions()["model_version"]) == {
        v1
    }
    # a challenger whose scores differ (set apart here: version 2 is the same model): the
    # champion's next batch smooths against its own earlier scores, never the challenger's
    engine = sa.create_engine(cfg.paths.history_database())
    with engine.begin() as conn:
        for table in (TABLE, "score_decisions"):
            conn.execute(
                sa.text(f"update {table} set score = 999 where model_version = :v"), {"v": v2}
            )
    engine.dispose()
    run_score(raw_dir, D2, "champion", tmp_path / "c2.parquet", cfg)
    first = pd.read_parquet(tmp_path / "c1.parquet").set_index("partner_id")["score"]
    second = pd.read_parquet(tmp_path / "c2.parquet").set_index("partner_id")
    earlier = second["score_previous"].dropna()
    assert len(earlier) and (earlier != 999).all()
    pd.testing.assert_series_equal(earlier, first.loc[earlier.index], check_names=False)


def test_decisions_stay_decisions_after_a_promotion(raw_dir, two_versions, tmp_path):
    cfg, client, v1, v2 = two_versions
    run_score(raw_dir, D1, "champion", tmp_path / "a.parquet", cfg)
    client.set_registered_model_alias(NAME, "champion", v2)
    # the old champion re-scores its own date (e.g. a lost file): its decisions stay decisions
    again = run_score(raw_dir, D1, v1, tmp_path / "b.parquet", cfg)
    assert again.shadow_of == v2 and again.shadow_rows == 0
    assert f"{again.scored:,} stay this version's decisions on their dates" in again.summary()
    rows = stored(cfg)
    assert set(rows["shadow"]) == {False} and set(rows["model_version"]) == {v1}
    # ... while a date it never decided is a shadow date
    run_score(raw_dir, D2, v1, tmp_path / "c.parquet", cfg)
    rows = stored(cfg)
    assert set(rows.loc[rows["as_of"] == pd.Timestamp(D2), "shadow"]) == {True}
    assert ScoreHistory(cfg.paths.history_database()).read()["as_of"].max() == pd.Timestamp(D1)
    # the new champion decides
    run_score(raw_dir, D2, "champion", tmp_path / "d.parquet", cfg)
    history = ScoreHistory(cfg.paths.history_database()).read()
    assert set(history.loc[history["as_of"] == pd.Timestamp(D2), "model_version"]) == {v2}


def test_an_old_champion_does_not_take_back_a_date_the_new_one_decided(
    raw_dir, two_versions, tmp_path
):
    """Its re-run of a date the new champion has re-scored since is a shadow run: it was
    kept a decision and, written last, became the date's decision again."""
    cfg, client, v1, v2 = two_versions
    run_score(raw_dir, D1, "champion", tmp_path / "a.parquet", cfg)
    client.set_registered_model_alias(NAME, "champion", v2)
    run_score(raw_dir, D1, "champion", tmp_path / "b.parquet", cfg)
    run_score(raw_dir, D1, v1, tmp_path / "c.parquet", cfg)
    rows = stored(cfg)
    assert set(rows.loc[rows["model_version"] == v1, "shadow"]) == {True}
    assert set(rows.loc[rows["model_version"] == v2, "shadow"]) == {False}
    assert set(ScoreHistory(cfg.paths.history_database()).read()["model_version"]) == {v2}
    ledger = DecisionLedger(cfg.paths.history_database())
    assert set(ledger.read_decisions()["model_version"]) == {v2}


def test_no_history_says_the_shadow_run_was_not_recorded(raw_dir, two_versions, tmp_path):
    cfg, client, v1, v2 = two_versions
    result = run_score(raw_dir, D1, v2, tmp_path / "s.parquet", cfg, record_history=False)
    assert result.shadow_of == v1
    assert "this batch is not recorded (--no-history)" in result.summary()
    assert not ScoreHistory(cfg.paths.history_database()).exists()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request, tmp_path):
    """The ledger on an embedded SQLite file and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return DecisionLedger(f"sqlite:///{tmp_path / 'history.sqlite'}")
    from partnerscore.serving.history import database_url

    return DecisionLedger(database_url(request.getfixturevalue("postgres_url")))


def decisions(version, scores, tiers, as_of="2025-01-01"):
    return pd.DataFrame(
        {
            "partner_id": ["P1", "P2"],
            "as_of": pd.Timestamp(as_of),
            "model_version": version,
            "score": scores,
            "score_tier": tiers,
        }
    )


def test_the_ledger_reads_decisions_only(ledger):
    import numpy as np

    ledger.record_decisions(decisions("1", [10.0, 20.0], ["D", "C"]))
    shadow = ledger.prepare_decisions(decisions("2", [80.0, 90.0], ["A", "A"]), shadow=np.ones(2))
    ledger.record_decisions(shadow)
    staged = ledger.stage_decisions(
        ledger.prepare_decisions(
            decisions("2", [81.0, 91.0], ["A", "A"], "2025-02-01"), shadow=np.ones(2)
        )
    )
    ledger.record_staged(staged)
    read = ledger.read_decisions()
    assert read["model_version"].tolist() == ["1", "1"]
    assert read["score_tier"].tolist() == ["D", "C"]
    expected = {"P1": [(10.0, "D")], "P2": [(20.0, "C")]}
    assert ledger.previous(["P1", "P2"], pd.Timestamp("2025-03-01")) == expected
    assert ledger.previous(["P1", "P2"], pd.Timestamp("2025-03-01"), newest=1) == expected
    # a ledger written before the column existed gains it; its rows are decisions
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("alter table score_decisions drop column shadow")
    ledger.dispose()
    again = DecisionLedger(ledger.url)
    assert len(again.read_decisions()) == 4  # the shadow mark went with the column
    again.record_decisions(decisions("3", [1.0, 2.0], ["D", "D"], "2025-03-01"))
    assert len(again.read_decisions()) == 6
