"""The Spark engine against the pandas job (local[2], one Spark session for the module).

The pandas job is the slow, obviously-correct twin: validation, quarantine, scores and rejects
of the Spark job must equal it.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from support import assert_one_error, needs_java, sibling, with_sitecustomize

from partnerscore.features.config import MonitorConfig
from partnerscore.serving.spark_engine import pack, unpack

FLAGGING = MonitorConfig(partner_z=1.5, partner_min_history=3)
"""Low bars for the per-partner anomaly checks, so that both engines' anomaly columns are
compared on many flagged partners (the program has few anomalies at the defaults; the
onboarding age, which flagged every partner younger than 30 days, is not range-checked)."""

MALFORMED = Path(__file__).parents[1] / "features" / "malformed"


@pytest.fixture(scope="module")
def spark():
    """One local[2] session for every test of the module."""
    needs_java()
    from partnerscore.serving.spark_engine import SparkLog, _session

    log = SparkLog()  # Spark's lines in a file, as the job's own session's
    session = _session("local[2]", 2, log)
    yield session
    session.stop()
    log.close()


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
            assert _text(b) == _text(a), name


def _text(values) -> list:
    return [None if pd.isna(v) else str(v) for v in values]


def _same_quarantine(pandas_dir: Path, spark_dir: Path, tables) -> int:
    """Every table's quarantine: same rows, columns, values and reasons. Returns the rows."""
    from partnerscore.features.core import read_frame

    total = 0
    for name in tables:
        csv, parquet = pandas_dir / f"{name}.csv", spark_dir / f"{name}.parquet"
        assert csv.exists() == parquet.exists(), name
        if not csv.exists():
            continue
        expected = read_frame(csv, text=lambda column: True)
        got = pd.read_parquet(parquet)
        assert list(got.columns) == list(expected.columns), name
        assert got["_row"].tolist() == expected["_row"].astype(int).tolist(), name
        for column in expected.columns:
            if column != "_row":
                left = [v or None for v in _text(expected[column])]
                assert _text(got[column]) == left, (name, column)
        total += len(got)
    return total


def _malformed_program(raw_dir: Path, dest: Path) -> Path:
    """The shared program with contract violations added (one per kind, some per partner)."""
    shutil.copytree(raw_dir, dest)
    partners = pd.read_csv(dest / "partners.csv", dtype=str, keep_default_na=False)
    deals = pd.read_csv(dest / "deals.csv", dtype=str, keep_default_na=False)
    first, second = partners["partner_id"].iloc[0], partners["partner_id"].iloc[1]
    extra_partners = partners.iloc[[0, 5]].copy()
    extra_partners.iloc[1, extra_partners.columns.get_loc("partner_id")] = "P-NEW"
    extra_partners.iloc[1, extra_partners.columns.get_loc("signed_at")] = "not a date"
    bad = deals.iloc[[0, 1, 2, 3]].copy()
    bad["deal_id"] = ["X1", "X2", "X3", deals["deal_id"].iloc[3]]  # the last: a duplicate
    bad.iloc[0, bad.columns.get_loc("amount")] = "-5"
    bad.iloc[1, bad.columns.get_loc("partner_id")] = "GHOST"
    bad.iloc[2, bad.columns.get_loc("created_at")] = "1800-01-01"
    pd.concat([partners, extra_partners]).to_csv(dest / "partners.csv", index=False)
    # a deal of one partner exported under another too: kept, counted as a shared id
    other = deals[deals["partner_id"] != deals["partner_id"].iloc[0]].iloc[[0]].copy()
    other["deal_id"] = deals["deal_id"].iloc[0]
    pd.concat([deals.iloc[:50], bad, deals.iloc[50:], other]).to_csv(
        dest / "deals.csv", index=False
    )
    with open(dest / "activities.csv", "a", encoding="utf-8") as handle:
        handle.write(f'A-X1,{first},2025-01-01,meeting,"two\nlines"\n')
        handle.write(f"A-X2,{second},2025-01-02,telepathy,\n")
    return dest


def _same_readings(pandas_file: Path, spark_folder: Path, raw: Path, when, cfg, tmp: Path):
    """Every reader of a scores file gives the same output from the Spark job's folder of
    part files as from the pandas job's file (until 2026-12-06 they refused the folder: "is a
    folder, expected a file"): report pages, forecast (daily and phased), monitor --scores,
    experiment assign and whatif --policy."""
    import functools
    import json

    from partnerscore.serving import api
    from partnerscore.serving.experiment import run_assign
    from partnerscore.serving.forecast import run_forecast
    from partnerscore.serving.monitor import run_monitor
    from partnerscore.serving.report import read_scores, run_report
    from partnerscore.serving.whatif import run_whatif_policy

    assert spark_folder.is_dir() and len(list(spark_folder.glob("part-*.parquet"))) > 1
    # the same rows and values; dates in their own Parquet units (the Spark job's schema
    # stores microseconds, the pandas job's file the frame's units)
    got, want = read_scores(spark_folder), read_scores(pandas_file)
    units = {
        c: (str(got[c].dtype), str(want[c].dtype)) for c in want if got[c].dtype != want[c].dtype
    }
    assert all(
        a.startswith("datetime64") and b.startswith("datetime64") for a, b in units.values()
    ), units
    for frame in (got, want):
        for column in units:
            frame[column] = frame[column].astype("datetime64[ns]")
    pd.testing.assert_frame_equal(got, want)
    policy = tmp / "policy.yaml"
    policy.write_text("policy:\n  revenue_weight: 0.6\n", encoding="utf-8")
    outputs = {}
    for engine, scores in (("pandas", pandas_file), ("spark", spark_folder)):
        out = tmp / "read" / engine
        pages = run_report(scores, out / "report", cfg, workers=1)
        assert pages.reports == len(read_scores(pandas_file))
        run_forecast(cfg, scores, out / "forecast.csv", ("tier", "region"))
        run_forecast(cfg, scores, out / "phased.csv", ("tier",), phased=True)
        phased = api.forecast(scores, by="tier", phased=True)
        monitored = run_monitor(cfg, raw, when, out / "monitor", scores=scores, log_to_mlflow=False)
        assert "quality.score_flags" in {c.name for c in monitored.checks}
        run_assign(scores, "e", ("control", "treatment"), out / "assign.csv", cfg,
                   registry=out / "registry.csv")  # fmt: skip
        run_whatif_policy(cfg, policy, scores, out / "whatif.csv")
        here = [(str(out), "OUT"), (str(scores), "SCORES")]  # the registry records paths
        files = {
            str(p.relative_to(out)): functools.reduce(
                lambda data, pair: data.replace(pair[0].encode(), pair[1].encode()),
                here,
                p.read_bytes(),
            )
            for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix in (".csv", ".html") and p.name != "monitor.html"
        }
        report = json.loads((out / "monitor" / "monitor.json").read_text())
        report.pop("generated_at")
        report["files"].pop("monitor.html")  # its generation time
        outputs[engine] = files, report, [c.to_dict() for c in monitored.checks], phased
    assert any(name.startswith("report/partners/") for name in outputs["spark"][0])
    assert sorted(outputs["spark"][0]) == sorted(outputs["pandas"][0])
    for name, data in outputs["pandas"][0].items():
        assert outputs["spark"][0][name] == data, name
    spark_json, pandas_json = outputs["spark"][1], outputs["pandas"][1]
    assert spark_json.keys() == pandas_json.keys()
    for key, value in pandas_json.items():
        if key == "checks":
            mine = {c["name"]: c for c in spark_json[key]}
            for check in value:
                assert mine[check["name"]] == check
        assert spark_json[key] == value, key
    assert outputs["spark"][2] == outputs["pandas"][2]
    pd.testing.assert_frame_equal(outputs["spark"][3], outputs["pandas"][3])


@pytest.mark.slow
def test_spark_scores_and_quarantine_equal_the_pandas_job(raw_dir, store_config, tmp_path, spark):
    from partnerscore.features.contract import TABLES
    from partnerscore.features.core import read_frame
    from partnerscore.serving.history import ScoreHistory
    from partnerscore.serving.score import run_score
    from partnerscore.serving.spark_engine import run_score_spark

    cfg = store_config.model_copy(update={"monitor": FLAGGING})
    raw = _malformed_program(raw_dir, tmp_path / "raw")
    # every registered tier spelt 'Registered': read as the model's 'registered', counted
    partners = pd.read_csv(raw / "partners.csv", dtype=str, keep_default_na=False)
    partners["tier"] = partners["tier"].replace({"registered": "Registered"})
    # an industry and a region the model never saw: listed in unseen_categories, counted
    partners.loc[::17, "industry"] = "aerospace"
    partners.loc[::34, "region"] = "MEA"
    partners.to_csv(raw / "partners.csv", index=False)
    # an earlier run in the history: both engines smooth against it
    first = run_score(raw, pd.Timestamp("2026-01-01").date(), "champion", tmp_path / "a.csv", cfg)
    when = pd.Timestamp("2026-03-01").date()
    expected = run_score(raw, when, "champion", tmp_path / "p" / "scores.parquet", cfg)
    got = run_score_spark(
        raw,
        when,
        "champion",
        tmp_path / "s" / "scores.parquet",
        cfg,
        shuffle_partitions=2,
        buckets=3,
        spark=spark,
    )
    pandas_out = read_frame(expected.out)
    spark_out = pd.read_parquet(got.out).sort_values("partner_id", ignore_index=True)
    assert len(pandas_out) > 100 and pandas_out["score_previous"].notna().any()
    assert pandas_out["anomaly"].sum() >= 20
    _same(pandas_out, spark_out)
    assert got.scored == expected.scored and got.rejected == expected.rejected
    assert got.duplicates == expected.duplicates == 1
    assert got.partners_input == expected.partners_input
    assert got.partners == expected.partners == expected.scored
    assert got.quarantined_rows == expected.quarantined_rows
    assert got.shared_ids == expected.shared_ids == {"deals": 1}
    shared = [line for line in expected.summary().splitlines() if "several partners" in line]
    assert shared == [line for line in got.summary().splitlines() if "several partners" in line]
    assert len(shared) == 1 and shared[0].endswith(": deals 1")
    # named only when quarantine files were written (beside each job's own output)
    assert (got.quarantine_dir is None) == (expected.quarantine_dir is None)
    assert got.tiers == expected.tiers and got.guardrail_flags == expected.guardrail_flags
    registered = int(pandas_out["tier"].eq("registered").sum())
    assert registered and got.respelled_categories == expected.respelled_categories == registered
    assert got.respelled == expected.respelled == {"tier 'Registered' -> 'registered'": registered}
    unseen = int((pandas_out["unseen_categories"] != "").sum())
    assert unseen and got.unseen_categories == expected.unseen_categories == unseen
    assert got.unseen == expected.unseen and "industry=aerospace" in got.unseen
    assert read_frame(got.rejects).equals(read_frame(expected.rejects))
    quarantined = _same_quarantine(
        tmp_path / "p" / "quarantine", tmp_path / "s" / "quarantine", TABLES
    )
    assert quarantined == 8
    # the spark run recorded the same batch in the history (same key: replaced, not doubled)
    history = ScoreHistory(cfg.paths.history_database()).read()
    assert len(history) == first.scored + expected.scored
    assert (history["as_of"] == pd.Timestamp(when)).sum() == expected.scored
    # the readers of a scores file take the Spark job's folder as the pandas job's file
    _same_readings(expected.out, got.out, raw, when, cfg, tmp_path)


@pytest.mark.parametrize(
    "case",
    [
        "stray_quote",
        "mixed_good_bad",
        "whitespace_lines",
        "padded_values_quarantined",
        "quarantined_partner_cascade",
        "invisible_characters",
        "unicode_padded_ids",
        "converted_without_qualified",
        "duplicate_rows_without_id",
        "case_insensitive_categories",
        "duplicate_ids",
    ],
)
def test_spark_validation_equals_the_pandas_validator(case, tmp_path, spark):
    """Counts, data end, quarantine rows and the clean rows of malformed folders."""
    from partnerscore.features.validate import load_raw
    from partnerscore.serving.spark_validate import validate_in_spark

    sys.path.insert(0, str(MALFORMED.parent))
    from test_malformed import materialise

    materialise(case, tmp_path / "raw")
    expected = load_raw(tmp_path / "raw", tmp_path / "pq")
    got = validate_in_spark(spark, str(tmp_path / "raw"), 3, None, str(tmp_path / "sq"))
    assert got.data_end == expected.data_end
    for name, report in expected.report.tables.items():
        assert got.counts[name] == (report.input_rows, report.valid_rows, report.quarantined)
        assert got.reasons[name] == report.reasons
        assert got.respelled[name] == report.respelled
        assert got.shared_ids[name] == report.shared_ids
        assert got.shared_id_examples[name] == report.shared_id_examples
    if case == "duplicate_ids":  # ids of several partners, in several buckets
        assert got.shared_ids == {
            "partners": 0,
            "deals": 2,
            "activities": 1,
            "marketing_commitments": 0,
            "leads": 1,
        }
    assert _same_quarantine(tmp_path / "pq", tmp_path / "sq", expected.tables) > 0
    if case == "padded_values_quarantined":  # ids as the file holds them (not trimmed)
        ids = pd.read_parquet(tmp_path / "sq" / "partners.parquet")["partner_id"]
        assert ids.tolist() == [" P1 ", " P4"]
    if case == "quarantined_partner_cascade":  # the partner row's reason, found in its bucket
        reasons = pd.read_parquet(tmp_path / "sq" / "deals.parquet")["reason"].tolist()
        assert reasons[0] == (
            "partner_id 'P4' is quarantined in partners (signed_at 'someday' is not a date)"
        )
        assert reasons[-1] == "unknown partner_id 'P9'"
    clean = got.clean.toPandas().sort_values(["_table", "_row"], kind="stable")
    for name, frame in unpack(clean, got.dtypes).items():
        pd.testing.assert_frame_equal(frame, expected.tables[name], check_dtype=True)
    got.unpersist()


def test_spark_bucket_trim_strips_what_the_validator_strips():
    """The bucket key's whitespace class is Python's str.isspace, which Arrow's trim strips.

    (Java and Python read this character class alike; the Spark run of the case
    ``unicode_padded_ids`` above checks it in Java.)
    """
    import re

    import pyarrow as pa
    import pyarrow.compute as pc

    from partnerscore.serving.spark_validate import _SPACE

    points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    matched = [c for c in points if re.fullmatch(_SPACE, chr(c))]
    trimmed = pc.utf8_trim_whitespace(pa.array(["a" + chr(c) for c in points])).to_pylist()
    assert matched == [c for c, t in zip(points, trimmed, strict=True) if t == "a"]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("too_many_fields", "line 5: Malformed CSV record: D4,P1,2024-02-01,,5,open,surplus"),
        ("unclosed_quote", "line 5: a quote opened on this line never closes"),
        ("unclosed_quote_mid", "line 3: a quote opened on this line never closes"),
        # Spark alone reads it: the last field takes the rest of the file
        ("unclosed_quote_last_field", "line 5: a quote opened on this line never closes"),
    ],
)
def test_spark_validation_stops_on_a_record_of_the_wrong_length(case, message, tmp_path, spark):
    """Like the pandas validator: one line naming the file and the line (a blank line is
    skipped instead)."""
    from partnerscore.features.core import PartnerscoreError
    from partnerscore.serving.spark_validate import validate_in_spark

    sys.path.insert(0, str(MALFORMED.parent))
    from test_malformed import materialise

    materialise(case, tmp_path / "raw")
    with pytest.raises(PartnerscoreError) as got:
        validate_in_spark(spark, str(tmp_path / "raw"), 3, None, str(tmp_path / "sq"))
    assert str(got.value).startswith(f"{tmp_path / 'raw' / 'deals.csv'}: cannot read file: ")
    assert message in str(got.value)
    assert "\n" not in str(got.value)


def test_a_records_line_count_is_one_plus_the_line_breaks_in_its_values(tmp_path, spark):
    """``read_table``'s line count (one SQL expression) against a plain count in Python, on
    values with LF, CRLF, blank lines, a lone line break, empty and missing values."""
    import csv

    from partnerscore.serving.spark_validate import LAST_LINE, ROW, TableInput, read_table

    rows = [
        ["P1", "x\ny\n\nz", "3"],
        ["P2", "", None],
        ["P3", "q\r\nw", "e\nf"],
        ["P4", "plain", "\n"],
        ["P5", "\r\n\r\n", "a\n\n\nb"],
    ]
    path = tmp_path / "notes.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["partner_id", "a", "b"])
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])
    table = TableInput("notes", str(path), ("partner_id", "a", "b"), True)
    got = read_table(spark, table).orderBy(ROW).select(LAST_LINE).toPandas()[LAST_LINE].tolist()
    assert got == [1 + sum((v or "").count("\n") for v in row) for row in rows]


def test_two_malformed_tables_name_the_first_in_table_order(raw_dir, tmp_path, spark):
    """The first job reads every table at once (``probe_tables``), and its tasks may meet a
    later table's malformed record first: here activities' first record, while deals' last
    record is ~100k records into its file. The error names deals.csv and its line, as the
    pandas validator's does (before, the bucket job met activities' record first)."""
    from partnerscore.features.core import PartnerscoreError
    from partnerscore.features.validate import load_raw
    from partnerscore.serving.spark_validate import validate_in_spark

    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    header, *rows = (raw / "deals.csv").read_text().splitlines()
    body = rows * (100_000 // len(rows) + 1)
    (raw / "deals.csv").write_text("\n".join([header, *body, rows[0] + ",surplus"]) + "\n")
    header, *rows = (raw / "activities.csv").read_text().splitlines()
    (raw / "activities.csv").write_text("\n".join([header, rows[0] + ",surplus", *rows]) + "\n")
    with pytest.raises(PartnerscoreError) as got:
        validate_in_spark(spark, str(raw), 3, None, str(tmp_path / "sq"))
    where = f"{raw / 'deals.csv'}: cannot read file: line {len(body) + 2}: "
    assert str(got.value).startswith(where + "Malformed CSV record")
    assert "\n" not in str(got.value)
    with pytest.raises(PartnerscoreError) as pandas_job:
        load_raw(raw, write_quarantine=False)
    assert str(pandas_job.value).startswith(where)


def test_spark_validation_stops_on_text_that_is_not_utf8_as_the_pandas_validator(tmp_path, spark):
    """The pandas validator's line (one helper, ``features/core.py::not_utf8``), naming the
    column, row and byte, not a row read with U+FFFD for the byte."""
    from partnerscore.features.core import PartnerscoreError
    from partnerscore.serving.spark_validate import validate_in_spark

    sys.path.insert(0, str(MALFORMED.parent))
    from test_malformed import materialise

    spec = materialise("latin1_text", tmp_path / "raw")
    with pytest.raises(PartnerscoreError) as got:
        validate_in_spark(spark, str(tmp_path / "raw"), 3, None, str(tmp_path / "sq"))
    assert str(got.value) == f"{tmp_path / 'raw'}/{spec['error']}"


def test_record_ids_of_partners_in_two_buckets_are_kept_as_the_pandas_validator_keeps_them(
    tmp_path, spark
):
    """A record id held by rows of two partners stopped the run when their buckets differed
    (the pandas validator kept the first row across partners); record ids are unique per
    partner now, so each bucket decides its partners' rows as the whole batch does."""
    from partnerscore.features.validate import load_raw
    from partnerscore.serving.spark_validate import validate_in_spark

    sys.path.insert(0, str(MALFORMED.parent))
    from test_malformed import materialise

    materialise("duplicate_ids", tmp_path / "raw")
    # deal D1 is under P1 and P3: a bucket count that puts them apart
    bucket = "pmod(hash('{}'), {})"
    n = next(
        b
        for b in range(2, 50)
        if spark.sql(f"select {bucket.format('P1', b)} = {bucket.format('P3', b)}").first()[0]
        is False
    )
    expected = load_raw(tmp_path / "raw", tmp_path / "pq")
    got = validate_in_spark(spark, str(tmp_path / "raw"), n, None, str(tmp_path / "sq"))
    for name, report in expected.report.tables.items():
        assert got.counts[name] == (report.input_rows, report.valid_rows, report.quarantined)
        assert got.reasons[name] == report.reasons
        assert got.shared_ids[name] == report.shared_ids
        assert got.shared_id_examples[name] == report.shared_id_examples
    assert [e.partners for e in got.shared_id_examples["deals"]] == [
        ["P1", "P3", "P2"],
        ["P2", "P3"],
    ]
    clean = got.clean.toPandas().sort_values(["_table", "_row"], kind="stable")
    deals = unpack(clean, got.dtypes)["deals"]
    assert deals["deal_id"].tolist() == ["D1", "D2", "D1", "D4", "D7", "D2", "D1"]
    pd.testing.assert_frame_equal(deals, expected.tables["deals"], check_dtype=True)
    got.unpersist()


def test_spark_validation_keeps_parquet_integers_exact(tmp_path, spark):
    """Typed Parquet integers: quarantined values read '5' (not '5.0'), ids above 2**53 stay
    distinct (float64 would round 2**60 + 1 and 2**60 + 2 into one duplicate id)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from partnerscore.features.validate import load_raw
    from partnerscore.serving.spark_validate import validate_in_spark

    sys.path.insert(0, str(MALFORMED.parent))
    from test_malformed import materialise

    materialise("mixed_good_bad", tmp_path / "csv")
    raw = tmp_path / "raw"
    raw.mkdir()
    partners = pd.read_csv(tmp_path / "csv" / "partners.csv", dtype=str, keep_default_na=False)
    pq.write_table(pa.Table.from_pandas(partners, preserve_index=False), raw / "partners.parquet")
    base = 2**60
    deals = pa.table(
        {
            "deal_id": pa.array([base + 1, base + 2, base + 3, base + 3, base + 4], pa.int64()),
            "partner_id": ["P1", "P1", "P3", "P3", "P2"],
            "created_at": ["2024-02-01", "2024-02-05", "2024-03-01", "2023-07-01", "2024-03-05"],
            "closed_at": ["2024-03-01", "2024-03-02", None, "2023-08-15", None],
            "amount": pa.array([1000, -5, 500, 7, None], pa.int64()),
            "status": ["won", "won", "open", "lost", "open"],
        }
    )
    pq.write_table(deals, raw / "deals.parquet")
    expected = load_raw(raw, tmp_path / "pq")
    got = validate_in_spark(spark, str(raw), 3, None, str(tmp_path / "sq"))
    for name, report in expected.report.tables.items():
        assert got.counts[name] == (report.input_rows, report.valid_rows, report.quarantined)
    # the negative and the missing amount and the repeated id are quarantined, the other
    # near-2**60 ids are not
    assert expected.report.tables["deals"].quarantined == 3
    assert _same_quarantine(tmp_path / "pq", tmp_path / "sq", expected.tables) == 3
    q = pd.read_parquet(tmp_path / "sq" / "deals.parquet")
    assert "-5" in q["amount"].tolist() and str(base + 3) in q["deal_id"].tolist()
    clean = got.clean.toPandas().sort_values(["_table", "_row"], kind="stable")
    for name, frame in unpack(clean, got.dtypes).items():
        pd.testing.assert_frame_equal(frame, expected.tables[name], check_dtype=True)
    got.unpersist()


def test_split_groups_equal_the_snapshot_tables(raw_dir, tmp_path):
    """The snapshot path's split (pyarrow tasks writing each partner group's rows to Arrow
    files) read back per group: the pandas job's snapshot frames of that group's partners, in
    input order, with the same dtypes. Its slow twin: ``read_validated`` and a filter."""
    import pyarrow.parquet as pq

    from partnerscore.features.groups import group_tables, hash_groups, split_rows
    from partnerscore.features.validate import load_raw
    from partnerscore.features.validated import check_snapshot, read_validated, write_validated
    from partnerscore.serving.score import UNREAD_COLUMNS

    raw = _malformed_program(raw_dir, tmp_path / "raw")
    snap = tmp_path / "snap"
    write_validated(load_raw(raw, tmp_path / "q"), snap)
    files = check_snapshot(raw, snap, tmp_path / "q").tables
    columns = {
        n: [c for c in pq.read_schema(p).names if c not in UNREAD_COLUMNS.get(n, ())]
        for n, p in files.items()
    }
    expected = read_validated(
        raw, snap, tmp_path / "q", write_quarantine_files=False, skip_columns=UNREAD_COLUMNS
    ).tables
    n_groups, folder = 3, str(tmp_path / "rows")
    index = 0
    for name, path in files.items():  # one row group per task, as many tasks as row groups
        meta = pq.ParquetFile(path).metadata
        start = 0
        for group in range(meta.num_row_groups):
            split_rows((index, name, str(path), columns[name], [group], start), folder, n_groups)
            index += 1
            start += meta.row_group(group).num_rows
    empty = {n: pq.read_schema(p).empty_table().select(columns[n]) for n, p in files.items()}
    seen = dict.fromkeys(files, 0)
    for g in range(n_groups):
        got = group_tables(folder, g, empty)
        for name, frame in expected.items():
            mine = hash_groups(pq.read_table(files[name], columns=["partner_id"])["partner_id"], 3)
            want = frame[mine == g].reset_index(drop=True)
            pd.testing.assert_frame_equal(got[name], want, check_dtype=True)
            seen[name] += len(got[name])
    assert seen == {n: len(f) for n, f in expected.items()}


@pytest.mark.slow
def test_spark_on_a_validated_snapshot_equals_the_pandas_job(
    raw_dir, store_config, tmp_path, spark
):
    """``--validated DIR`` with both engines: same scores, rejects, counts, quarantine rows and
    history; a stale snapshot stops both with the same one-line error."""
    from partnerscore.features.contract import TABLES
    from partnerscore.features.core import read_frame
    from partnerscore.features.validated import StaleSnapshot, run_validate_snapshot
    from partnerscore.serving.history import ScoreHistory
    from partnerscore.serving.score import run_score
    from partnerscore.serving.spark_engine import run_score_spark

    cfg = store_config.model_copy(update={"monitor": FLAGGING})
    raw = _malformed_program(raw_dir, tmp_path / "raw")
    snap = tmp_path / "snapshot"
    run_validate_snapshot(raw, snap, cfg.validation)
    run_score(raw, pd.Timestamp("2026-01-01").date(), "champion", tmp_path / "a.csv", cfg)
    when = pd.Timestamp("2026-03-01").date()
    expected = run_score(
        raw, when, "champion", tmp_path / "p" / "scores.parquet", cfg, validated=snap
    )
    got = run_score_spark(
        raw,
        when,
        "champion",
        tmp_path / "s" / "scores.parquet",
        cfg,
        groups=3,
        spark=spark,
        validated=snap,
    )
    assert "snapshot check (driver)" in got.stage_seconds
    assert "validate + statistics (spark)" not in got.stage_seconds
    pandas_out = read_frame(expected.out)
    spark_out = pd.read_parquet(got.out).sort_values("partner_id", ignore_index=True)
    assert len(pandas_out) > 100 and pandas_out["score_previous"].notna().any()
    assert pandas_out["anomaly"].sum() >= 20
    _same(pandas_out, spark_out)
    assert len(list(got.out.glob("part-*.parquet"))) <= 3
    assert got.scored == expected.scored and got.rejected == expected.rejected
    assert got.duplicates == expected.duplicates == 1
    assert got.partners_input == expected.partners_input
    assert got.quarantined_rows == expected.quarantined_rows
    assert got.shared_ids == expected.shared_ids == {"deals": 1}
    # named only when quarantine files were written (beside each job's own output)
    assert (got.quarantine_dir is None) == (expected.quarantine_dir is None)
    assert got.tiers == expected.tiers and got.guardrail_flags == expected.guardrail_flags
    assert read_frame(got.rejects).equals(read_frame(expected.rejects))
    assert (
        _same_quarantine(tmp_path / "p" / "quarantine", tmp_path / "s" / "quarantine", TABLES) == 8
    )
    history = ScoreHistory(cfg.paths.history_database()).read()
    assert (history["as_of"] == pd.Timestamp(when)).sum() == expected.scored
    # the same stale-snapshot error as the pandas job, before any Spark work
    with open(raw / "deals.csv", "a", encoding="utf-8") as handle:
        handle.write("D-NEW,P-NEW,2025-01-01,,1,open\n")
    errors = []
    for run in (run_score, run_score_spark):
        with pytest.raises(StaleSnapshot) as info:
            kwargs = {"spark": spark} if run is run_score_spark else {}
            run(raw, when, "champion", tmp_path / "x.parquet", cfg, validated=snap, **kwargs)
        errors.append(str(info.value))
    assert errors[0] == errors[1] and "deals.csv changed" in errors[0]


@pytest.mark.slow
def _both_at_age(raw, cfg, tmp_path, spark, snap):
    """``score --at-age 90`` by the pandas job and by the Spark job (3 groups).

    Returns:
        (pandas result, Spark result, pandas scores, Spark scores sorted by partner_id).
    """
    from partnerscore.features.core import read_frame
    from partnerscore.serving.score import run_score
    from partnerscore.serving.spark_engine import run_score_spark

    expected = run_score(
        raw, None, "champion", tmp_path / "p" / "scores.parquet", cfg, at_age=90, validated=snap
    )
    got = run_score_spark(
        raw,
        None,
        "champion",
        tmp_path / "s" / "scores.parquet",
        cfg,
        at_age=90,
        groups=3,
        spark=spark,
        validated=snap,
    )
    pandas_out = read_frame(expected.out)
    spark_out = pd.read_parquet(got.out).sort_values("partner_id", ignore_index=True)
    return expected, got, pandas_out, spark_out


@pytest.mark.slow
def test_spark_rejects_an_infinite_feature_as_the_pandas_job(
    raw_dir, store_config, tmp_path, spark
):
    """Two largest-float won deals of one partner add up to inf in its features: both engines
    reject the partner naming them (Spark scored it silently), and the rest equal."""
    from support import sibling

    from partnerscore.features.core import read_frame
    from partnerscore.serving.score import run_score
    from partnerscore.serving.spark_engine import run_score_spark

    huge = sibling(__file__, "test_score_infinite")
    raw = tmp_path / "raw"
    pid = huge._program_with_two_huge_deals(raw_dir, raw)
    when = pd.Timestamp(huge.AS_OF).date()
    expected = run_score(raw, when, "champion", tmp_path / "p" / "scores.parquet", store_config)
    got = run_score_spark(
        raw,
        when,
        "champion",
        tmp_path / "s" / "scores.parquet",
        store_config,
        shuffle_partitions=2,
        buckets=3,
        spark=spark,
    )
    rejects = read_frame(got.rejects)
    assert rejects.equals(read_frame(expected.rejects))
    assert rejects.loc[rejects["partner_id"] == pid, "reason"].tolist() == [huge.REASON]
    assert (got.scored, got.rejected, got.not_yet) == (
        expected.scored,
        expected.rejected,
        expected.not_yet,
    )
    assert got.partners_input == got.scored + got.rejected + got.not_yet
    spark_out = pd.read_parquet(got.out).sort_values("partner_id", ignore_index=True)
    _same(read_frame(expected.out), spark_out)


@pytest.mark.parametrize("snapshot", [False, True])
def test_spark_at_onboarding_age_equals_the_pandas_job(
    raw_dir, store_config, tmp_path, spark, snapshot
):
    """``--at-age``: every partner at its own milestone, with both engines (raw tables
    validated in Spark, or a validated snapshot): same scores, rejects and counts, including
    the partners not that old yet, and the same history rows."""
    from partnerscore.features.core import read_frame
    from partnerscore.features.validated import run_validate_snapshot
    from partnerscore.serving.history import ScoreHistory

    cfg = store_config
    snap = None
    if snapshot:
        snap = tmp_path / "snapshot"
        run_validate_snapshot(raw_dir, snap, cfg.validation)
    expected, got, pandas_out, spark_out = _both_at_age(raw_dir, cfg, tmp_path, spark, snap)
    assert expected.not_yet > 0 and len(pandas_out) > 100
    assert pandas_out["as_of"].nunique() > 1  # per-partner cut-offs
    _same(pandas_out, spark_out)
    assert got.scored == expected.scored and got.not_yet == expected.not_yet
    assert got.rejected == expected.rejected and got.tiers == expected.tiers
    assert read_frame(got.rejects).equals(read_frame(expected.rejects))
    history = ScoreHistory(cfg.paths.history_database()).read()
    assert len(history) == expected.scored  # the same keys: replaced, not doubled


def test_spark_late_tail_equals_the_pandas_late_tail(raw_dir, tmp_path, spark):
    """The Spark validation measures the late tail (features/validate.py::late_tail): the same
    partners, tables, row counts, dates and text, with the late rows in other buckets than
    most partners; none on the program without the late rows."""
    from support import with_late_rows

    from partnerscore.features.validate import load_raw
    from partnerscore.serving.spark_validate import validate_in_spark

    late = with_late_rows(raw_dir, tmp_path / "raw")
    for raw in (tmp_path / "raw", raw_dir):
        expected = load_raw(raw, write_quarantine=False)
        got = validate_in_spark(spark, str(raw), 3, None, str(tmp_path / "sq"))
        assert got.late_tail == expected.late_tail
        got.unpersist()
        if raw != raw_dir:
            tail = expected.late_tail
            assert tail.partners == late and tail.rows == {"deals": 2, "portal_events": 1}
            assert got.late_tail.note() == tail.note()
        else:
            assert expected.late_tail is None


def test_spark_late_tail_equals_the_pandas_late_tail_in_a_small_program(raw_dir, tmp_path, spark):
    """Below 200 partners (k = 2, 45 days: features/validate.py::late_tail_days) the Spark
    validation finds the same tail: one partner's login months after the other 150's data."""
    from support import newest_partners

    from partnerscore.features.validate import load_raw
    from partnerscore.serving.spark_validate import validate_in_spark

    newest_partners(raw_dir, tmp_path / "raw", 150)
    with open(tmp_path / "raw" / "portal_events.csv", "a", encoding="utf-8") as handle:
        handle.write("P00300,2026-11-20 10:00:00,login\n")
    expected = load_raw(tmp_path / "raw", write_quarantine=False)
    got = validate_in_spark(spark, str(tmp_path / "raw"), 3, None, str(tmp_path / "sq"))
    assert got.late_tail == expected.late_tail
    assert expected.late_tail.partners == ("P00300",) and expected.late_tail.k == 2
    assert got.late_tail.note() == expected.late_tail.note()
    got.unpersist()


@pytest.mark.slow
@pytest.mark.parametrize("snapshot", [False, True])
def test_spark_reads_a_late_tail_as_the_pandas_job(
    raw_dir, store_config, tmp_path, spark, snapshot
):
    """Under a late tail the Spark job (raw tables validated in Spark, or a validated
    snapshot) refuses the same stale --as-of with the same line, and --at-age scores the same
    partners: those whose milestone lies past the supported end are not ready yet."""
    from support import with_late_rows

    from partnerscore.features.core import PartnerscoreError, read_frame
    from partnerscore.features.validated import run_validate_snapshot
    from partnerscore.serving.score import run_score
    from partnerscore.serving.spark_engine import run_score_spark

    cfg = store_config
    raw = tmp_path / "raw"
    with_late_rows(raw_dir, raw)
    snap = None
    if snapshot:
        snap = tmp_path / "snapshot"
        run_validate_snapshot(raw, snap, cfg.validation)
    when = pd.Timestamp("2026-12-01").date()  # 11 days after the newest event
    errors = []
    for run in (run_score, run_score_spark):
        kwargs = {"spark": spark} if run is run_score_spark else {}
        out = tmp_path / "x" / "scores.parquet"
        with pytest.raises(PartnerscoreError, match=r"rests on 2 partner") as info:
            run(raw, when, "champion", out, cfg, validated=snap, **kwargs)
        errors.append(str(info.value))
    assert errors[0] == errors[1]
    expected, got, pandas_out, spark_out = _both_at_age(raw, cfg, tmp_path, spark, snap)
    assert pd.to_datetime(pandas_out["as_of"]).max() <= pd.Timestamp("2026-07-01")
    _same(pandas_out, spark_out)
    assert got.scored == expected.scored and got.not_yet == expected.not_yet > 0
    assert read_frame(got.rejects).equals(read_frame(expected.rejects))
    # both summaries carry the late tail's line
    assert got.late_tail == expected.late_tail and "rests on 2 partner" in got.late_tail
    assert f"warning: {got.late_tail}" in got.summary()


def test_spark_shadow_run_records_what_the_pandas_job_records(
    raw_dir, two_versions, tmp_path, spark
):
    """A challenger scored by the Spark job is a shadow run as by the pandas job: the same
    history rows flagged, the same line; the champion's rows stay the ones read."""
    from support import stored_history

    from partnerscore.serving.history import ScoreHistory
    from partnerscore.serving.score import run_score
    from partnerscore.serving.spark_engine import run_score_spark

    cfg, _, v1, v2 = two_versions
    when = pd.Timestamp("2026-03-01").date()
    got = {}
    for engine in ("pandas", "spark"):
        paths = cfg.paths.model_copy(update={"data_dir": str(tmp_path / engine)})
        mine = cfg.model_copy(update={"paths": paths})
        run_score(raw_dir, when, "champion", tmp_path / engine / "c.parquet", mine)
        if engine == "pandas":
            result = run_score(raw_dir, when, v2, tmp_path / engine / "s.parquet", mine)
        else:
            result = run_score_spark(
                raw_dir, when, v2, tmp_path / engine / "s.parquet", mine, groups=3, spark=spark
            )
        assert result.shadow_of == v1 and result.shadow_rows == result.scored > 0
        assert "this batch is recorded as shadow rows" in result.summary()
        rows = stored_history(mine).sort_values(["model_version", "partner_id"], ignore_index=True)
        got[engine] = rows[["partner_id", "model_version", "shadow"]]
        assert set(ScoreHistory(mine.paths.history_database()).read()["model_version"]) == {v1}
    assert set(got["spark"].loc[got["spark"]["model_version"] == v2, "shadow"]) == {True}
    pd.testing.assert_frame_equal(got["pandas"], got["spark"])


cases = sibling(__file__, "program_cases")


@pytest.mark.slow
@settings(cases.ENGINE_SETTINGS, max_examples=1)  # 20-35 s an example: 2 in all; raise locally
@given(case=cases.small_programs(400))
@cases.with_fixed(1)  # the onboarding age: test_spark_at_onboarding_age_equals_the_pandas_job
def test_spark_scores_a_random_small_program_as_the_pandas_job(case, raw_dir, store_config, spark):
    """Random small programs (``program_cases.py``: any slice of the shared program, a hostile
    partner with a far-future date, absurd amounts and broken cells, a partner with no
    events, a date or an onboarding age): every output column, the rejects and the
    quarantine of the Spark job equal the pandas job's, or both stop with the same error."""
    from partnerscore.features.contract import TABLES
    from partnerscore.features.core import read_frame
    from partnerscore.serving.score import run_score
    from partnerscore.serving.spark_engine import run_score_spark

    root = Path(tempfile.mkdtemp(prefix="spark-twin-"))
    try:
        raw = root / "raw"
        cases.write_program(raw_dir, raw, case)
        as_of, at_age = cases.as_of_of(case)
        cfg = store_config.model_copy(update={"monitor": FLAGGING})
        data = Path(cfg.paths.data_dir)  # one folder (it is in the config hash), emptied
        shutil.rmtree(data, ignore_errors=True)
        expected = cases.outcome(
            lambda: run_score(
                raw, as_of, "champion", root / "p" / "scores.parquet", cfg, at_age=at_age
            )
        )
        shutil.rmtree(data, ignore_errors=True)
        got = cases.outcome(
            lambda: run_score_spark(
                raw, as_of, "champion", root / "s" / "scores.parquet", cfg,
                at_age=at_age, shuffle_partitions=2, buckets=2, spark=spark,
            )
        )  # fmt: skip
        if isinstance(expected, tuple) or isinstance(got, tuple):
            assert got == expected
            return
        pandas_out = read_frame(expected.out)
        spark_out = pd.read_parquet(got.out).sort_values("partner_id", ignore_index=True)
        _same(pandas_out, spark_out)
        assert read_frame(got.rejects).equals(read_frame(expected.rejects))
        assert (got.scored, got.rejected, got.not_yet, got.partners_input) == (
            expected.scored,
            expected.rejected,
            expected.not_yet,
            expected.partners_input,
        )
        _same_quarantine(root / "p" / "quarantine", root / "s" / "quarantine", TABLES)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_spark_scores_are_written_through_a_symbolic_link(raw_dir, store_config, tmp_path, spark):
    """``--out latest.parquet -> /shared/scores.parquet``: the link was removed and the parts
    folder put in its place; the target was never updated. Now the target becomes the parts
    folder and the link stays."""
    from partnerscore.serving.spark_engine import run_score_spark

    shared = tmp_path / "shared" / "scores.parquet"
    shared.parent.mkdir()
    shared.write_text("old")
    out = tmp_path / "data" / "latest.parquet"
    out.parent.mkdir()
    out.symlink_to(shared)
    when = pd.Timestamp("2026-03-01").date()
    got = run_score_spark(raw_dir, when, "champion", out, store_config, groups=2, spark=spark)
    assert out.is_symlink() and os.path.realpath(out) == str(shared)
    assert shared.is_dir() and len(pd.read_parquet(shared)) == got.scored > 0
    assert sorted(p.name for p in shared.parent.iterdir()) == ["scores.parquet"]


@pytest.mark.parametrize("missing", ["pyspark", "java"])
def test_a_missing_spark_runtime_is_one_line_naming_what_to_install(missing, model_store, tmp_path):
    """The ``spark`` extra or a Java runtime absent (an installed package, not the repo):
    without pyspark the job stopped with "unexpected ModuleNotFoundError: No module named
    'pyspark'" (exit 70) after loading the model; without Java it advised ``make services``,
    which exists only in the repository."""
    (tmp_path / "raw").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["MLFLOW_TRACKING_URI"] = model_store.paths.tracking_uri()
    if missing == "pyspark":  # as if not installed: a None entry makes its import fail
        with_sitecustomize(env, tmp_path / "site", "import sys\nsys.modules['pyspark'] = None\n")
    else:
        env["PATH"] = str(Path(sys.executable).parent)  # no java on it
    done = subprocess.run(
        [sys.executable, "-m", "partnerscore", "score", "--engine", "spark"]
        + ["--as-of", "2026-06-01", "--raw", "raw", "--out", "scores.parquet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    line = assert_one_error(done.stderr, "--engine spark")
    assert "make " not in line
    if missing == "pyspark":
        assert "pip install 'partnerscore[spark]'" in line
    else:
        assert "no Java runtime found" in line and "JAVA_HOME" in line


@pytest.mark.parametrize("master", ["bogus", "localhost", "local[]", "spark://"])
def test_a_master_spark_cannot_parse_is_a_usage_error(master, tmp_path, capsys):
    """It started a JVM for it: spark-submit's Java stack trace on stderr, then ``unexpected
    PySparkRuntimeError: [JAVA_GATEWAY_EXITED] ...`` (``bogus``) or ``unexpected
    Py4JJavaError`` (``localhost``), exit 70."""
    from partnerscore.serving.cli import main

    argv = ["score", "--engine", "spark", "--master", master, "--raw", str(tmp_path)]
    code = main([*argv, "--as-of", "2026-03-01", "--out", str(tmp_path / "s.parquet")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.splitlines()[0].startswith("Usage: ") and " score " in err.splitlines()[0], err
    assert err.splitlines()[1:] == [
        f"error: --master {master}: expected local, local[N], local[*], local[N,F], "
        "spark://HOST:PORT, yarn or k8s://HOST:PORT"
    ], err


def test_a_runs_spark_log_is_its_own_bounded_and_removed_unless_named(tmp_path, monkeypatch):
    """The run's folder in the temporary folder (not beside --out), a rolling file of bounded
    size, removed on success; a folder an error named is kept, and removed by a later run
    once older than SPARK_LOG_KEEP_DAYS."""
    import os
    import tempfile
    import time

    from partnerscore.serving.spark_engine import SPARK_LOG_BYTES, SPARK_LOG_KEEP_DAYS, SparkLog

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old, recent = tmp_path / "partnerscore-spark-old", tmp_path / "partnerscore-spark-recent"
    for folder, days in ((old, SPARK_LOG_KEEP_DAYS + 1), (recent, SPARK_LOG_KEEP_DAYS - 1)):
        folder.mkdir()
        (folder / "spark.log").write_text("ERROR ...\n")
        stamp = time.time() - days * 86_400
        os.utime(folder, (stamp, stamp))
    log = SparkLog()
    assert not old.exists() and recent.exists()
    assert log.folder.parent == tmp_path and log.path == log.folder / "spark.log"
    config = log.config.read_text()
    assert f"appender.file.fileName = {log.path}" in config
    assert f"size = {SPARK_LOG_BYTES}" in config and "strategy.max = 1" in config
    assert "Console" not in config  # nothing on the console
    assert log.java_option() == f"-Dlog4j2.configurationFile={log.config.as_uri()}"
    log.close()
    assert not log.folder.exists()  # success: nothing left
    failed = SparkLog()
    assert failed.named("the Spark job failed: x") == (
        f"the Spark job failed: x; Spark's log: {failed.path}"
    )
    failed.close()
    assert failed.folder.exists()  # the error line names it
