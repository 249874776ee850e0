"""``score --features`` on a table with several rows per partner (build's training set): one run
in rounds equals running each round's rows in turn, history and decisions included."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.features.core import read_frame
from partnerscore.serving.history import ScoreHistory
from partnerscore.serving.ledger import DecisionLedger
from partnerscore.serving.score import feature_rounds, run_score_features


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "10", "9", ""]), st.integers(-(10**6), 10**7)),
        max_size=40,
        unique=True,
    )
)
def test_rounds_rank_each_partners_rows_by_date(rows):
    ids = pd.Series([p for p, _ in rows], dtype=object)
    as_of = np.array([np.datetime64("2025-01-01") + np.timedelta64(d, "D") for _, d in rows])
    rounds = feature_rounds(ids, as_of)  # dates far past 2262 included
    for i, (pid, day) in enumerate(rows):  # the k-th row: k earlier rows of the same partner
        assert rounds[i] == sum(1 for p, d in rows if p == pid and d < day)


def _config(store_config, tmp_path, name):
    paths = store_config.paths.model_copy(update={"data_dir": str(tmp_path / name)})
    return store_config.model_copy(update={"paths": paths})


def _stores(config):
    url = config.paths.history_database()
    history = ScoreHistory(url).read().sort_values(["partner_id", "as_of"], kind="stable")
    ledger = DecisionLedger(url)
    with ledger.engine.connect() as conn:
        decisions = pd.read_sql_table("score_decisions", conn)
    drop = [c for c in decisions.columns if c in ("id", "decided_at", "recorded_at", "written_at")]
    decisions = decisions.drop(columns=drop).sort_values(["partner_id", "as_of"], kind="stable")
    return history.reset_index(drop=True), decisions.reset_index(drop=True)


def test_one_run_in_rounds_equals_each_round_in_turn(store_config, built_dir, tmp_path):
    table = pd.read_parquet(built_dir / "training_set.parquet")
    keep = table["partner_id"].drop_duplicates().sample(250, random_state=4)
    table = table[table["partner_id"].isin(keep)].reset_index(drop=True)
    assert table.groupby("partner_id").size().max() > 1  # several ages per partner
    table.to_parquet(tmp_path / "all.parquet", index=False)
    whole = _config(store_config, tmp_path, "whole")
    result = run_score_features(tmp_path / "all.parquet", "champion", tmp_path / "all.csv", whole)
    rounds = feature_rounds(table["partner_id"], pd.to_datetime(table["as_of"]).to_numpy())
    assert result.rounds == rounds.max() + 1 and result.partners == 250
    assert result.scored == len(table)
    assert "from a feature table" in result.summary()

    turns = _config(store_config, tmp_path, "turns")
    parts = []
    for k in range(result.rounds):
        path = tmp_path / f"round{k}.parquet"
        table[rounds == k].to_parquet(path, index=False)
        run_score_features(path, "champion", tmp_path / f"round{k}.csv", turns)
        parts.append(read_frame(tmp_path / f"round{k}.csv"))
    expected = pd.concat(parts, ignore_index=True).sort_values("partner_id", kind="stable")
    got = read_frame(tmp_path / "all.csv")
    # the two stores' configs differ in their data folder only: the same config_hash (the
    # hash leaves out paths; the config_hash columns were dropped here before)
    # (a column empty in one round file is read back as object, not text: values compared)
    pd.testing.assert_frame_equal(got, expected.reset_index(drop=True), check_dtype=False)
    # the later rounds were smoothed against the earlier ones, as separate runs would be
    assert got["score_previous"].notna().sum() == int((rounds > 0).sum())
    for a, b in zip(_stores(whole), _stores(turns), strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_rounds_without_history_and_non_finite_rows(store_config, built_dir, tmp_path):
    table = pd.read_parquet(built_dir / "training_set.parquet").head(400)
    table.to_parquet(tmp_path / "t.parquet", index=False)
    config = _config(store_config, tmp_path, "none")
    result = run_score_features(
        tmp_path / "t.parquet", "champion", tmp_path / "t.csv", config, record_history=False
    )
    assert result.scored == len(table) and result.rejected == 0
    assert not ScoreHistory(config.paths.history_database()).exists()
    got = read_frame(tmp_path / "t.csv")
    assert got["score_previous"].isna().all()  # no history: no round sees another
    assert sorted(zip(got["partner_id"], pd.to_datetime(got["as_of"]), strict=True)) == sorted(
        zip(table["partner_id"], pd.to_datetime(table["as_of"]), strict=True)
    )


@pytest.mark.parametrize("rows", [0])
def test_an_empty_table_scores_nothing(store_config, built_dir, tmp_path, rows):
    table = pd.read_parquet(built_dir / "training_set.parquet").head(rows)
    table.to_parquet(tmp_path / "e.parquet", index=False)
    config = _config(store_config, tmp_path, "empty")
    result = run_score_features(tmp_path / "e.parquet", "champion", tmp_path / "e.csv", config)
    assert result.scored == 0 and result.rejected == 0


def test_an_empty_table_scores_nothing_beside_a_recorded_batch(store_config, built_dir, tmp_path):
    """With batches in the history, an empty table stopped with 'unexpected ValueError: NaTType
    does not support strftime' (exit 1): the decision ledger read earlier rows before the
    latest of no cut-offs."""
    table = pd.read_parquet(built_dir / "training_set.parquet")
    table.head(5).to_parquet(tmp_path / "some.parquet", index=False)
    table.head(0).to_parquet(tmp_path / "e.parquet", index=False)
    config = _config(store_config, tmp_path, "recorded")
    run_score_features(tmp_path / "some.parquet", "champion", tmp_path / "some.csv", config)
    result = run_score_features(tmp_path / "e.parquet", "champion", tmp_path / "e.csv", config)
    assert result.scored == 0 and result.rejected == 0
    assert read_frame(tmp_path / "e.csv").empty
    assert "score tiers: none; provisional: 0;" in result.summary()  # was "score tiers: ;"


def test_partners_input_counts_partners_not_rows(store_config, built_dir, tmp_path, capsys):
    """``partners_input`` counted a feature table's rows: with two as_of snapshots per partner
    it said twice the partners. It counts distinct partners (as from raw tables, one row per
    partner) and ``rows_input`` the rows."""
    import json

    from partnerscore.serving.cli import main

    table = pd.read_parquet(built_dir / "training_set.parquet")
    table = table.sort_values(["partner_id", "as_of"], kind="stable")
    table = table[table.groupby("partner_id").cumcount() < 2]
    table = table[table.groupby("partner_id")["partner_id"].transform("size") == 2]
    keep = table["partner_id"].drop_duplicates().head(60)
    table = table[table["partner_id"].isin(keep)].reset_index(drop=True)
    assert len(table) == 2 * 60  # two snapshots of each of 60 partners
    table.to_csv(tmp_path / "two.csv", index=False)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(store_config.model_dump_json())
    argv = ["--json", "score", "--features", str(tmp_path / "two.csv"), "--out",
            str(tmp_path / "s.csv"), "--no-history", "--config", str(cfg)]  # fmt: skip
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["partners_input"] == 60 == payload["partners"]
    assert payload["rows_input"] == 120 == payload["scored"] + payload["rejected"]
    assert payload["rounds"] == 2
    assert "rows in input 120 (of 60 partners) = scored 120 + rejected 0" in payload["summary"]
