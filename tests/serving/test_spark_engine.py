"""The Spark engine against the pandas job on the shared program (local[2])."""

import os
import shutil

import numpy as np
import pandas as pd
import pytest

from partnerscore.serving.spark_engine import pack, unpack


def _needs_java():
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        message = "no Java runtime (make services installs one)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def test_pack_unpack_round_trip(sim_tables):
    from partnerscore.features.validate import TABLES

    tables = {n: f for n, f in sim_tables.items() if n in TABLES}
    dtypes = {n: {c: str(t) for c, t in f.dtypes.items()} for n, f in tables.items()}
    back = unpack(pack(tables), dtypes)
    for name, frame in tables.items():
        pd.testing.assert_frame_equal(back[name], frame.reset_index(drop=True), check_dtype=True)


def _same(pandas_out: pd.DataFrame, spark_out: pd.DataFrame):
    assert list(spark_out.columns) == list(pandas_out.columns)
    assert spark_out["partner_id"].tolist() == pandas_out["partner_id"].tolist()
    for name in pandas_out.columns:
        a, b = pandas_out[name], spark_out[name]
        if pd.api.types.is_bool_dtype(a.dtype):
            assert b.astype(bool).tolist() == a.tolist(), name
        elif pd.api.types.is_numeric_dtype(a.dtype):
            np.testing.assert_allclose(
                b.to_numpy(float), a.to_numpy(float), rtol=0, atol=1e-9, err_msg=name
            )
        elif pd.api.types.is_datetime64_any_dtype(a.dtype):
            assert (pd.to_datetime(b) == pd.to_datetime(a)).all(), name
        else:
            left = [None if pd.isna(v) else str(v) for v in a]
            right = [None if pd.isna(v) else str(v) for v in b]
            assert right == left, name


@pytest.mark.slow
def test_spark_scores_equal_the_pandas_job(raw_dir, store_config, tmp_path):
    _needs_java()
    from partnerscore.features.core import read_frame
    from partnerscore.serving.history import ScoreHistory
    from partnerscore.serving.score import run_score
    from partnerscore.serving.spark_engine import run_score_spark

    cfg = store_config
    # an earlier run in the history: both engines smooth against it
    first = run_score(
        raw_dir, pd.Timestamp("2026-01-01").date(), "champion", tmp_path / "a.csv", cfg
    )
    when = pd.Timestamp("2026-03-01").date()
    expected = run_score(raw_dir, when, "champion", tmp_path / "p" / "scores.parquet", cfg)
    got = run_score_spark(
        raw_dir,
        when,
        "champion",
        tmp_path / "s" / "scores.parquet",
        cfg,
        master="local[2]",
        shuffle_partitions=2,
        buckets=3,
    )
    pandas_out = read_frame(expected.out)
    spark_out = pd.read_parquet(got.out).sort_values("partner_id", ignore_index=True)
    assert len(pandas_out) > 100 and pandas_out["score_previous"].notna().any()
    _same(pandas_out, spark_out)
    assert got.scored == expected.scored and got.rejected == expected.rejected
    assert got.tiers == expected.tiers and got.guardrail_flags == expected.guardrail_flags
    assert read_frame(got.rejects).equals(read_frame(expected.rejects))
    # the spark run recorded the same batch in the history (same key: replaced, not doubled)
    history = ScoreHistory(cfg.paths.history_database()).read()
    assert len(history) == first.scored + expected.scored
    assert (history["as_of"] == pd.Timestamp(when)).sum() == expected.scored
