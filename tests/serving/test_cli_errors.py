"""The command-line error corpus: every bad input or environment gives exit 2 and one line.

Each case sets up a hostile situation (a broken config, an impossible option, a file that is a
folder, a symlink loop, a locked history database, a full disk...), runs the real console entry
point and asserts: the exit code, exactly one ``error:`` line on stderr naming the file, option or
config key, no traceback, no "unexpected", and nothing published where a run was refused.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import assert_one_error, with_sitecustomize

from partnerscore.features.core import read_frame
from partnerscore.serving.cli import main
from partnerscore.serving.score import rejects_path

BASE = Path(__file__).parents[1] / "features" / "malformed" / "_base"


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def raw_copy(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(BASE, raw)
    return raw


def config_file(tmp_path: Path, data: dict, name: str = "cfg.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# ------------------------------------------------------------------ no model needed


def _config_not_utf8(tmp):
    path = tmp / "cfg.yaml"
    path.write_bytes(b"policy:\n  revenue_weight: 0.5 \xff\xfe\n")
    return ["build", "--raw", raw_copy(tmp), "--out", tmp / "f", "--config", path], [
        "cfg.yaml",
        "not UTF-8",
    ]


def _config_is_folder(tmp):
    (tmp / "cfg.json").mkdir()
    return ["build", "--raw", raw_copy(tmp), "--config", tmp / "cfg.json"], [
        "cfg.json",
        "is a folder",
    ]


def _config_unknown_key(tmp):
    cfg = config_file(tmp, {"policy": {"revenue_weigth": 0.3}})
    return ["build", "--raw", raw_copy(tmp), "--config", cfg], ["policy.revenue_weigth"]


def _config_empty_tiers(tmp):
    cfg = config_file(tmp, {"policy": {"tier_cutoffs": {}}})
    return ["build", "--raw", raw_copy(tmp), "--config", cfg], ["policy.tier_cutoffs"]


def _config_tier_out_of_range(tmp):
    cfg = config_file(tmp, {"policy": {"tier_cutoffs": {"A": 150, "B": 0}}})
    return ["build", "--raw", raw_copy(tmp), "--config", cfg], [
        "policy.tier_cutoffs",
        "outside 0-100",
    ]


def _config_unknown_history_scheme(tmp):
    cfg = config_file(tmp, {"paths": {"history_url": "mongodb://localhost/x"}})
    return ["build", "--raw", raw_copy(tmp), "--config", cfg], [
        "paths.history_url",
        "'mongodb'",
    ]


def _config_history_scheme_without_driver(tmp):
    """A scheme SQLAlchemy knows whose driver is not installed passed validation; the store
    then failed on its import (`unexpected ModuleNotFoundError`, exit 70)."""
    cfg = config_file(tmp, {"paths": {"history_url": "mysql://u:secret@127.0.0.1:1/x"}})
    argv = ["score", "--raw", raw_copy(tmp), "--as-of", "2024-03-15", "--out", tmp / "s.csv"]
    return argv + ["--config", cfg], ["paths.history_url", "'mysql'", "MySQLdb"]


def _config_hashed_file_missing(tmp):
    """The config hash reads the files it names (their content, not their path): one it
    cannot read names the file and its key (train ran on, hashing the path, until 2026-12-06)."""
    (tmp / "feat").mkdir()
    cfg = config_file(tmp, {"score": {"overrides_path": str(tmp / "gone.csv")}})
    return ["train", "--features", tmp / "feat", "--config", cfg], [
        "gone.csv: overrides file (config key score.overrides_path) not found"
    ]


def _config_bad_toml(tmp):
    path = tmp / "cfg.toml"
    path.write_text("[policy\nrevenue_weight = 0.5\n", encoding="utf-8")
    return ["build", "--raw", raw_copy(tmp), "--config", path], ["cfg.toml", "cannot parse"]


def _config_bad_suffix(tmp):
    path = tmp / "cfg.ini"
    path.write_text("x=1\n", encoding="utf-8")
    return ["build", "--raw", raw_copy(tmp), "--config", path], ["cfg.ini", ".json, .toml"]


def _negative_ages(tmp):
    return ["build", "--raw", raw_copy(tmp), "--out", tmp / "f", "--ages", "-5"], ["--ages"]


def _ages_not_numbers(tmp):
    return ["build", "--raw", raw_copy(tmp), "--ages", "30,sixty"], ["--ages", "sixty"]


def _zero_horizon(tmp):
    return ["build", "--raw", raw_copy(tmp), "--out", tmp / "f", "--horizon", "0"], [
        "--horizon",
    ]


def _zero_engagement_period(tmp):
    return ["build", "--raw", raw_copy(tmp), "--engagement-period", "0"], ["--engagement-period"]


def _bad_data_end(tmp):
    return ["build", "--raw", raw_copy(tmp), "--data-end", "2024-02-30"], ["--data-end"]


def _config_no_calibration_candidates(tmp):
    # an internal ValueError after ~5 s of training before
    cfg = config_file(tmp, {"train": {"calibration": "sigmoid", "calibration_candidates": []}})
    return ["build", "--raw", raw_copy(tmp), "--config", cfg], [
        "config key 'train.calibration_candidates'",
        "at least 1 item",
    ]


def _report_no_partner_ids(tmp):
    # wrote no page and exited 0 before
    return ["report", "--scores", tmp / "s.csv", "--out", tmp / "r", "--partners", " , "], [
        "--partners ' , ': no partner id given",
    ]


def _ages_past_a_century(tmp):
    # signed_at + 100000 days wrapped past 2262 into the 1700s, silently (exit 0)
    return ["build", "--raw", raw_copy(tmp), "--out", tmp / "f", "--ages", "30,100000"], [
        "--ages 30,100000",
        "at most 36,525 days",
    ]


def _horizon_past_a_century(tmp):
    return ["build", "--raw", raw_copy(tmp), "--out", tmp / "f", "--horizon", "90000"], [
        "--horizon 90000",
    ]


def _data_end_past_the_contract_years(tmp):
    return ["build", "--raw", raw_copy(tmp), "--out", tmp / "f", "--data-end", "9999-12-31"], [
        "--data-end 9999-12-31",
        "1900-2199",
    ]


def _data_end_after_the_newest_event(tmp):
    # labels up to 2030 would count four years the data does not cover as quiet
    return ["build", "--raw", raw_copy(tmp), "--out", tmp / "f", "--data-end", "2030-01-01"], [
        "--data-end 2030-01-01",
        "2132 days after the newest event in the data (2024-03-01)",
        "build.data_end_tolerance_days",
    ]


CUTOFF_FILES = {
    "after_2262": (
        "P1,2024-06-01\nP2,3000-01-01",
        "column 'as_of' row 2: '3000-01-01' is outside the years 1900-2199",
    ),
    "numeric_as_of": ("P1,1e308", "column 'as_of' row 1: '1e308' is not a date"),
    "as_of_today": ("P1,today", "column 'as_of' row 1: 'today' is not a date"),
    # read as text; a scores file's column of True/False cells is read as booleans: one line
    "as_of_true": (
        "P1,2024-06-01\nP2,TRUE",
        "column 'as_of' row 2: 'TRUE' is not a date (true/false; give dates as YYYY-MM-DD)",
    ),
    # an empty cell was "'nan' is not a date": a value the user never wrote
    "empty_as_of": ("P1,2024-06-01\nP2,", "column 'as_of' row 2: is empty"),
    # pandas took the first column as the index and read 'extra' as the date
    "extra_field": ("P1,2024-06-01,extra", "line 2: more fields than the header's 2"),
    "missing_partner_id": (
        "P1,2024-06-01\n,2024-06-01",
        "column 'partner_id' row 2: missing partner id",
    ),
    # merged without a count before: the build had fewer snapshots than the plan (exit 0)
    "repeated_snapshot": (
        "P1,2024-06-01\nP2,2024-06-01\nP1,2024-06-01\nP2,2024-07-01",
        "columns 'partner_id', 'as_of' rows 1 and 3: the same snapshot twice (partner 'P1', "
        "as_of '2024-06-01'; repeated rows in the file: 1): a cut-off table is a plan, give "
        "each snapshot once",
    ),
    "repeated_snapshot_written_two_ways": (
        "P2,2024-07-01\nP1,2024-06-01\nP2,2024-07-01T00:00:00\nP2,2024-07-01 00:00",
        "columns 'partner_id', 'as_of' rows 1 and 3: the same snapshot twice (partner 'P2', "
        "as_of '2024-07-01' and '2024-07-01T00:00:00'; repeated rows in the file: 2)",
    ),
    "repeated_snapshot_in_two_offsets_forms": (
        "P2,2024-07-01T00:00:00Z\nP1,2024-06-01T00:00:00+00:00\nP2,2024-07-01T00:00:00+00:00",
        "columns 'partner_id', 'as_of' rows 1 and 3: the same snapshot twice (partner 'P2', "
        "as_of '2024-07-01T00:00:00Z' and '2024-07-01T00:00:00+00:00'; repeated rows",
    ),
    # read in UTC with exit 0, where scores files and score --features refuse several zones
    "as_of_in_two_time_zones": (
        "P1,2024-06-01T00:00:00+02:00\nP2,2024-06-01T00:00:00Z",
        "column 'as_of' row 2: '2024-06-01T00:00:00Z' has another time zone than row 1 "
        "('2024-06-01T00:00:00+02:00') (partner 'P2'); give every as_of in one time zone, or none",
    ),
    "as_of_with_and_without_an_offset": (
        "P1,2024-06-01\nP2,2024-06-01\nP3,2024-06-01T00:00:00+00:00",
        "column 'as_of' row 3: '2024-06-01T00:00:00+00:00' has a UTC offset and row 1 "
        "('2024-06-01') has none (partner 'P3'); give every as_of in one time zone, or none",
    ),
    # read month-first ('mixed' parsing): a snapshot on 1 February, not 2 January
    "month_first_date": (
        "P1,2024-06-01\nP2,02/01/2025",
        "column 'as_of' row 2: '02/01/2025' is not a date",
    ),
    # read_frame gave pandas' "C error: EOF inside string starting at row 2" (a 0-based line)
    "unclosed_quote": (
        'P1,2024-06-01\nP2,"2024-06-01\nP3,2024-07-01',
        "cannot read file: line 3: a quote opened on this line never closes",
    ),
    "unclosed_quote_first_field": (
        '"P1,2024-06-01\nP2,2024-06-01',
        "cannot read file: line 2: a quote opened on this line never closes",
    ),
}
"""Cut-off files (``partner_id,as_of`` and these rows) that stop ``build --cutoffs``."""


@pytest.mark.parametrize("case", sorted(CUTOFF_FILES))
def test_cutoff_file_errors(case, tmp_path, capsys):
    rows, said = CUTOFF_FILES[case]
    (tmp_path / "c.csv").write_text(f"partner_id,as_of\n{rows}\n")
    raw = raw_copy(tmp_path)
    code, _, err = run(
        ["build", "--raw", raw, "--out", tmp_path / "f", "--cutoffs", tmp_path / "c.csv"], capsys
    )
    assert code == 2
    assert_one_error(err, f"c.csv: {said}")


@pytest.mark.parametrize(
    ("column", "said"),
    [
        # a Parquet bool column was "'True' is not a date" in --cutoffs and "(a number; ...)"
        # in scores files: say what it is
        ([True, False], "'True' is not a date (true/false; give dates as YYYY-MM-DD)"),
        ([20240601, 20240701], "'20240601' is not a date (a number; give dates as YYYY-MM-DD)"),
    ],
)
def test_cutoff_parquet_as_of_of_another_type(tmp_path, capsys, column, said):
    pd.DataFrame({"partner_id": ["P1", "P2"], "as_of": column}).to_parquet(tmp_path / "c.parquet")
    raw = raw_copy(tmp_path)
    argv = ["build", "--raw", raw, "--out", tmp_path / "f", "--cutoffs", tmp_path / "c.parquet"]
    code, _, err = run(argv, capsys)
    assert code == 2
    line = f"error: --cutoffs {tmp_path / 'c.parquet'}: column 'as_of' row 1: {said}"
    assert assert_one_error(err) == line


def _cutoffs_column_twice(tmp):
    (tmp / "c.csv").write_text("partner_id,as_of,as_of\nP1,2024-06-01,2024-07-01\n")
    return ["build", "--raw", raw_copy(tmp), "--out", tmp / "f", "--cutoffs", tmp / "c.csv"], [
        "c.csv: column 'as_of' appears twice in the header",
    ]


def _at_age_past_a_century(tmp):
    argv = ["score", "--raw", raw_copy(tmp), "--at-age", "99999999999", "--out", tmp / "s.csv"]
    return argv, ["--at-age 99999999999", "0 to 36,525"]


def _zero_partners(tmp):
    return ["simulate", "--partners", "0", "--out", tmp / "r"], ["--partners"]


def _simulate_bad_format(tmp):
    return ["simulate", "--partners", "5", "--out", tmp / "r", "--format", "xlsx"], ["xlsx"]


def _raw_folder_missing(tmp):
    return ["validate", tmp / "nope"], ["nope", "not found"]


def _dangling_symlink(tmp):
    raw = raw_copy(tmp)
    (raw / "leads.csv").symlink_to(tmp / "gone.csv")
    return ["validate", raw], ["leads.csv", "cannot read file"]


def _symlink_loop(tmp):
    raw = raw_copy(tmp)
    (raw / "leads.csv").symlink_to(raw / "leads.csv")
    return ["validate", raw], ["leads.csv", "cannot read file"]


def _table_is_folder(tmp):
    raw = raw_copy(tmp)
    (raw / "deals.csv").unlink()
    (raw / "deals.csv").mkdir()
    return ["validate", raw], ["missing required table 'deals'"]


def _report_empty_scores(tmp):
    (tmp / "scores.csv").write_bytes(b"")
    return ["report", "--scores", tmp / "scores.csv", "--out", tmp / "rep"], [
        "scores.csv",
        "empty file",
    ]


def _report_corrupt_scores(tmp):
    (tmp / "scores.parquet").write_bytes(b"PAR1 this is not parquet")
    return ["report", "--scores", tmp / "scores.parquet", "--out", tmp / "rep"], [
        "scores.parquet",
        "cannot read file",
    ]


def _report_not_scores(tmp):
    pd.DataFrame({"a": [1]}).to_csv(tmp / "scores.csv", index=False)
    return ["report", "--scores", tmp / "scores.csv", "--out", tmp / "rep"], [
        "scores.csv",
        "missing column",
    ]


def _report_scores_folder(tmp):
    (tmp / "scores.csv").mkdir()
    # a folder is taken as score --engine spark's dataset of part files: an empty one says so
    return ["report", "--scores", tmp / "scores.csv", "--out", tmp / "rep"], [
        "scores.csv",
        "empty folder (expected a file, or a Parquet dataset folder of *.parquet part files)",
    ]


def _score_without_as_of(tmp):
    return ["score", "--raw", raw_copy(tmp)], ["--as-of", "--at-age"]


def _unknown_command(tmp):
    return ["scroe"], ["scroe"]


def _unknown_option(tmp):
    return ["build", "--agez", "30"], ["--agez"]


def _score_bad_date(tmp):
    return ["score", "--raw", raw_copy(tmp), "--as-of", "2024-13-01"], ["--as-of", "2024-13-01"]


def _score_bad_suffix(tmp):
    return ["score", "--raw", raw_copy(tmp), "--as-of", "2024-06-01", "--out", tmp / "s.xlsx"], [
        "s.xlsx",
        "unsupported file type",
    ]


def _score_out_is_folder(tmp):
    (tmp / "s.csv").mkdir()
    return ["score", "--raw", raw_copy(tmp), "--as-of", "2024-06-01", "--out", tmp / "s.csv"], [
        "s.csv",
        "is a folder",
    ]


def _score_local_model(tmp):
    (tmp / "model").mkdir()
    argv = ["score", "--raw", raw_copy(tmp), "--as-of", "2024-06-01", "--model", tmp / "model"]
    return argv + ["--out", tmp / "s.csv"], ["--model", "--allow-local-model"]


def _score_playbook_not_utf8(tmp):
    (tmp / "book.yaml").write_bytes(b"quadrants: \xff\n")
    cfg = config_file(tmp, {"policy": {"playbook_path": str(tmp / "book.yaml")}})
    argv = ["score", "--raw", raw_copy(tmp), "--as-of", "2024-06-01", "--out", tmp / "s.csv"]
    return argv + ["--config", cfg], ["book.yaml", "not UTF-8"]


def _score_playbook_folder(tmp):
    (tmp / "book.yaml").mkdir()
    cfg = config_file(tmp, {"policy": {"playbook_path": str(tmp / "book.yaml")}})
    argv = ["score", "--raw", raw_copy(tmp), "--as-of", "2024-06-01", "--out", tmp / "s.csv"]
    return argv + ["--config", cfg], ["book.yaml", "is a folder"]


def _score_stale_as_of(tmp):
    argv = ["score", "--raw", raw_copy(tmp), "--as-of", "9999-12-31", "--out", tmp / "s.csv"]
    return argv, ["--as-of 9999-12-31", "newest event", "score.as_of_tolerance_days"]


def _score_before_everyone(tmp):
    argv = ["score", "--raw", raw_copy(tmp), "--as-of", "2000-01-01", "--out", tmp / "s.csv"]
    return argv, ["--as-of 2000-01-01", "no partner signed before"]


def make_snapshot(tmp) -> tuple[Path, Path, dict]:
    """A raw copy of the base tables and its validated snapshot (folder, manifest)."""
    from partnerscore.features.validated import run_validate_snapshot

    raw = raw_copy(tmp)
    run_validate_snapshot(raw, tmp / "snap")
    return raw, tmp / "snap", json.loads((tmp / "snap" / "manifest.json").read_text("utf-8"))


def _build_validated_corrupt_manifest(tmp):
    raw, snap, _ = make_snapshot(tmp)
    (snap / "manifest.json").write_text('{"format": 1, "inputs": ', "utf-8")
    argv = ["build", "--raw", raw, "--validated", snap, "--out", tmp / "feat"]
    return argv, ["manifest.json", "unreadable manifest"]


def _build_validated_missing_parquet(tmp):
    raw, snap, _ = make_snapshot(tmp)
    (snap / "deals.parquet").unlink()
    argv = ["build", "--raw", raw, "--validated", snap, "--out", tmp / "feat"]
    return argv, ["deals.parquet is missing", "validate again"]


def _build_validated_not_a_snapshot(tmp):
    (tmp / "empty").mkdir()
    argv = ["build", "--raw", raw_copy(tmp), "--validated", tmp / "empty", "--out", tmp / "feat"]
    return argv, ["empty: not a validated snapshot", "partnerscore validate RAW --validated"]


def _build_validated_other_contract(tmp):
    raw, snap, manifest = make_snapshot(tmp)
    (snap / "manifest.json").write_text(json.dumps({**manifest, "contract_version": 2}), "utf-8")
    argv = ["build", "--raw", raw, "--validated", snap, "--out", tmp / "feat"]
    return argv, ["manifest.json", "contract v2", "validate again"]


def _score_validated_stale(tmp):
    raw, snap, _ = make_snapshot(tmp)
    with open(raw / "deals.csv", "a", encoding="utf-8") as handle:
        handle.write("d9,p1,2024-02-01,,10,open\n")
    argv = ["score", "--raw", raw, "--validated", snap, "--as-of", "2024-06-01"]
    return argv + ["--out", tmp / "s.csv"], ["snap is stale", "deals.csv changed", "bytes"]


def _score_validated_stale_with_spark(tmp):
    """--engine spark checks a snapshot as the pandas job does (before starting Spark)."""
    raw, snap, _ = make_snapshot(tmp)
    with open(raw / "deals.csv", "a", encoding="utf-8") as handle:
        handle.write("d9,p1,2024-02-01,,10,open\n")
    argv = ["score", "--raw", raw, "--validated", snap, "--as-of", "2024-06-01", "--engine"]
    return argv + ["spark", "--out", tmp / "s.parquet"], ["snap is stale", "deals.csv changed"]


CASES = {
    name.removeprefix("_"): fn
    for name, fn in dict(globals()).items()
    if name.startswith("_") and callable(fn) and not name.startswith("__")
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_error_case(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the repository's data/ folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    sqlite3.connect(tmp_path / "mlflow.db").close()  # a registry (empty): input errors first
    argv, parts = CASES[case](tmp_path)
    code, out, err = run(argv, capsys)
    assert code == 2, (code, out, err)
    assert_one_error(err, *parts)
    assert not (tmp_path / "s.csv").is_file()


def test_corpus_size():
    # with the folder corpus of tests/features/malformed this covers the issue's >= 45 cases
    malformed = [p for p in (BASE.parent).iterdir() if p.is_dir() and not p.name.startswith("_")]
    assert len(CASES) + len(malformed) >= 45 + 30


USAGE_ERRORS = {
    "score_neither_date": (["score", "--raw", "RAW"], ["--as-of DATE or --at-age DAYS"]),
    "score_both_dates": (
        ["score", "--raw", "RAW", "--as-of", "2024-06-01", "--at-age", "30"],
        ["--as-of DATE or --at-age DAYS"],
    ),
    "score_features_with_as_of": (
        ["score", "--features", "f.csv", "--as-of", "2024-06-01"],
        ["score --features", "drop --as-of"],
    ),
    "score_features_with_at_age": (  # the error named --as-of, which was not given
        ["score", "--features", "f.csv", "--at-age", "90"],
        ["score --features", "drop --at-age"],
    ),
    "score_features_with_raw_options": (
        ["score", "--features", "f.csv", "--validated", "snap"],
        ["score --features", "--validated", "raw tables only"],
    ),
    "score_spark_without_history": (
        ["score", "--raw", "RAW", "--as-of", "2024-06-01", "--engine", "spark", "--no-history"],
        ["--no-history", "--engine spark"],
    ),
    "score_spark_with_groups": (
        ["score", "--raw", "RAW", "--as-of", "2024-06-01", "--engine", "spark"]
        + ["--group-partners", "10"],
        ["--group-partners"],
    ),
    "build_ages_and_cutoffs": (
        ["build", "--raw", "RAW", "--ages", "30", "--cutoffs", "c.csv"],
        ["--ages or --cutoffs"],
    ),
    "simulate_drift_and_treatment": (
        ["simulate", "--out", "r", "--drift", "leads_dry_up", "--treatment", "t"],
        ["--drift and --treatment"],
    ),
    "simulate_effect_without_treatment": (
        ["simulate", "--out", "r", "--effect-revenue", "0.1"],
        ["--effect-revenue", "need --treatment"],
    ),
    "promote_force_without_reason": (["promote", "--force"], ["--force needs --reason"]),
    "whatif_policy_alone": (["whatif", "--policy", "p.json"], ["--policy FILE --scores FILE"]),
    "whatif_no_as_of": (["whatif", "--partner", "P1"], ["--partner ID --as-of DATE"]),
    "whatif_no_change": (
        ["whatif", "--partner", "P1", "--as-of", "2024-06-01"],
        ["at least one --set"],
    ),
    "plan_no_spread": (
        ["experiment", "plan", "--partners", "100"],
        ["--revenue-sd", "--base-rate", "--raw DIR"],
    ),
}
"""Option checks after parsing that are usage errors: a needed option missing, or options that
do not go together. Each prints its command's usage line, as the parser's own errors do (so do
:data:`BAD_OPTION_VALUES`)."""


SIMULATE = ["simulate", "--out", "r"]
INJECT = [*SIMULATE, "--treatment", "t"]  # the injection options need an experiment name
ASSIGN = ["experiment", "assign", "--scores", "s.csv", "--name", "e", "--out", "a.csv"]
ANALYZE = ["experiment", "analyze", "--assignments", "a.csv", "--raw", "RAW", "--out", "an"]
PLAN = ["experiment", "plan", "--partners", "100", "--base-rate", "0.3"]
SCORE = ["score", "--raw", "RAW", "--as-of", "2024-06-01"]
FORECAST = ["forecast", "--scores", "s.csv", "--out", "fc.csv"]
WHATIF = ["whatif", "--raw", "RAW", "--partner", "P1", "--as-of", "2024-06-01"]
BAD_OPTION_VALUES = {
    "simulate_partners": ([*SIMULATE, "--partners", "0"], ["--partners 0"]),
    "simulate_seed": ([*SIMULATE, "--seed", "-1"], ["--seed -1"]),  # numpy's ValueError, exit 1
    "simulate_event_scale": ([*SIMULATE, "--event-scale", "0"], ["--event-scale 0.0"]),
    "simulate_format": ([*SIMULATE, "--format", "xml"], ["--format", "'xml'"]),
    "simulate_drift": ([*SIMULATE, "--drift", "nope"], ["--drift", "'nope'"]),
    "simulate_treatment": ([*SIMULATE, "--treatment", " "], ["--treatment", "must not be empty"]),
    "simulate_effect_revenue": ([*INJECT, "--effect-revenue", "-2"], ["--effect-revenue", "-2.0"]),
    "simulate_effect_engagement": (
        [*INJECT, "--effect-engagement", "-1"],
        ["--effect-engagement", "-1.0"],
    ),
    "simulate_treated_fraction": (
        [*INJECT, "--treated-fraction", "1.5"],
        ["--treated-fraction", "1.5"],
    ),
    "simulate_assigned_at_not_a_date": (
        [*INJECT, "--assigned-at", "2024-02-30"],
        ["--assigned-at", "'2024-02-30'"],
    ),
    "simulate_assigned_at_past_the_end": (
        [*INJECT, "--assigned-at", "2099-01-01"],
        ["--assigned-at 2099-01-01", "would pass the data end"],
    ),
    "build_ages": (["build", "--raw", "RAW", "--ages", "30,sixty"], ["--ages", "'30,sixty'"]),
    "build_ages_negative": (["build", "--raw", "RAW", "--ages", "-5"], ["--ages -5"]),
    "build_ages_past_a_century": (
        ["build", "--raw", "RAW", "--ages", "30,100000"],
        ["--ages 30,100000", "at most 36,525 days"],
    ),
    "build_horizon": (["build", "--raw", "RAW", "--horizon", "0"], ["--horizon 0"]),
    "build_engagement_period": (
        ["build", "--raw", "RAW", "--engagement-period", "0"],
        ["--engagement-period 0"],
    ),
    "build_data_end": (
        ["build", "--raw", "RAW", "--data-end", "2024-02-30"],
        ["--data-end", "'2024-02-30'"],
    ),
    # a period longer than the horizon is cut at its end: label_engaged silently became "any
    # qualifying touchpoint in the horizon" (exit 0)
    "build_horizon_shorter_than_the_engagement_period": (
        ["build", "--raw", "RAW", "--horizon", "20"],
        ["build.engagement_period_days 30 is longer than --horizon 20", "at most the horizon"],
    ),
    "build_engagement_period_past_the_horizon": (
        ["build", "--raw", "RAW", "--horizon", "30", "--engagement-period", "60"],
        ["--engagement-period 60 is longer than --horizon 30"],
    ),
    "build_data_end_past_the_contract_years": (
        ["build", "--raw", "RAW", "--data-end", "9999-12-31"],
        ["--data-end 9999-12-31", "1900-2199"],
    ),
    "build_group_partners": (
        ["build", "--raw", "RAW", "--group-partners", "-1"],
        ["--group-partners -1"],
    ),
    "train_trials": (["train", "--trials", "-1"], ["--trials -1"]),
    "score_engine": ([*SCORE, "--engine", "foo"], ["--engine foo", "pandas or spark"]),
    "score_workers": ([*SCORE, "--workers", "0"], ["--workers 0: must be at least 1"]),
    "score_as_of": ([*SCORE[:3], "--as-of", "2024-13-01"], ["--as-of", "'2024-13-01'"]),
    "score_at_age": (
        [*SCORE[:3], "--at-age", "99999999999"],
        ["--at-age 99999999999", "0 to 36,525"],
    ),
    "score_group_partners": ([*SCORE, "--group-partners", "-1"], ["--group-partners -1"]),
    "score_model": ([*SCORE, "--model", "no good!"], ["--model", "'no good!'"]),
    "report_partners": (
        ["report", "--scores", "s.csv", "--partners", " , "],
        ["--partners ' , ': no partner id given"],
    ),
    "report_workers": (["report", "--scores", "s.csv", "--workers", "0"], ["--workers 0"]),
    "forecast_by_repeated": ([*FORECAST, "--by", "tier,tier"], ["--by", "'tier,tier'"]),
    "forecast_by_its_own_column": ([*FORECAST, "--by", "model_version"], ["--by model_version"]),
    "forecast_coverage": ([*FORECAST, "--coverage", "1.5"], ["--coverage", "1.5"]),
    "forecast_period": ([*FORECAST, "--period", "fortnight"], ["--period fortnight"]),
    "monitor_as_of": (["monitor", "--raw", "RAW", "--as-of", "soon"], ["--as-of", "'soon'"]),
    "monitor_model": (
        ["monitor", "--raw", "RAW", "--as-of", "2024-06-01", "--model", "no good!"],
        ["--model", "'no good!'"],
    ),
    "incentives_as_of": (["incentives", "--as-of", "soon"], ["--as-of", "'soon'"]),
    "whatif_as_of": ([*WHATIF[:5], "--as-of", "2024-02-30", "--set", "x=1"], ["--as-of"]),
    "whatif_set": ([*WHATIF, "--set", "nonsense"], ["--set nonsense", "feature=value"]),
    "demo_partners": (["demo", "--partners", "0"], ["--partners 0"]),  # ValidationError, exit 1
    "demo_trials": (["demo", "--trials", "-1"], ["--trials -1"]),
    "assign_arms": ([*ASSIGN, "--arms", "control"], ["--arms", "'control'"]),
    "assign_fraction": ([*ASSIGN, "--fraction", "1.5"], ["--fraction", "1.5"]),
    "assign_assigned_at": ([*ASSIGN, "--assigned-at", "2026-02-30"], ["--assigned-at"]),
    "assign_name": (
        ["experiment", "assign", "--scores", "s.csv", "--name", " ", "--out", "a.csv"],
        ["--name", "must not be empty"],
    ),
    "analyze_horizon": ([*ANALYZE, "--horizon", "0"], ["--horizon 0"]),
    "analyze_milestones": (
        [*ANALYZE, "--horizon", "30", "--milestones", "10,x"],
        ["--milestones", "'10,x'"],
    ),
    "analyze_milestones_past_the_horizon": (
        [*ANALYZE, "--horizon", "30", "--milestones", "10,60"],
        ["--milestones", "the horizon 30"],
    ),
    "analyze_alpha": ([*ANALYZE, "--horizon", "30", "--alpha", "2"], ["--alpha", "2.0"]),
    "analyze_bootstrap": ([*ANALYZE, "--horizon", "30", "--bootstrap", "0"], ["--bootstrap"]),
    "analyze_seed": ([*ANALYZE, "--horizon", "30", "--seed", "-1"], ["--seed -1"]),  # exit 1
    "plan_partners": (
        ["experiment", "plan", "--partners", "2", "--base-rate", "0.3"],
        ["--partners", "got 2"],
    ),
    "plan_horizon": ([*PLAN, "--horizon", "0"], ["--horizon 0"]),
    "plan_age": ([*PLAN, "--age", "-1"], ["--age -1"]),
    "plan_fraction": ([*PLAN, "--fraction", "0"], ["--fraction", "0.0"]),
    "plan_alpha": ([*PLAN, "--alpha", "0"], ["--alpha", "0.0"]),
    "plan_power": ([*PLAN, "--power", "1"], ["--power", "1.0"]),
    "plan_r_squared": ([*PLAN, "--r-squared", "1"], ["--r-squared", "1.0"]),
    "plan_revenue_sd": ([*PLAN[:4], "--revenue-sd", "-5"], ["--revenue-sd", "-5.0"]),
    "plan_base_rate": ([*PLAN[:4], "--base-rate", "1.5"], ["--base-rate", "1.5"]),
    "plan_effect_engagement": (
        [*PLAN[:4], "--base-rate", "0.5", "--effect-engagement", "0.6"],
        ["--effect-engagement 0.6", "the base rate 50.0%"],
    ),
}
"""Bad values of one option (or of options read together), found by the command or its job
from the command line and the configuration alone: usage errors too. Errors about data that
name an option (a --data-end past the newest event, a --tier no partner is in) are not."""
SCORES = (
    "partner_id,as_of,pred_revenue,pred_revenue_sd,tier,region,model_version\n"
    "P1,2024-06-01,100.0,10.0,A,NA,1\n"
)
"""A scores file as far as ``forecast`` reads before its option checks (``s.csv``)."""


@pytest.mark.parametrize("case", sorted(USAGE_ERRORS.keys() | BAD_OPTION_VALUES.keys()))
def test_usage_errors_print_the_usage_line(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the repository's data/ folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    argv, parts = {**USAGE_ERRORS, **BAD_OPTION_VALUES}[case]
    raw = raw_copy(tmp_path)
    (tmp_path / "s.csv").write_text(SCORES, encoding="utf-8")
    code, out, err = run([raw if a == "RAW" else a for a in argv], capsys)
    assert code == 2, (code, out, err)
    assert_one_error(err, *parts)
    command = argv[: 2 if argv[0] == "experiment" else 1]
    usage = err.splitlines()[0]  # the program's name is pytest's here
    assert usage.startswith("Usage: ") and usage.endswith(f" {' '.join(command)} [OPTIONS]"), err
    # the same two lines as the parser's own usage errors
    code, _, parser_err = run([*command, "--nope"], capsys)
    assert code == 2 and parser_err.splitlines()[0] == usage
    assert not (tmp_path / "r").exists() and not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "data").exists() and not (tmp_path / "fc.csv").exists()


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        ([*SCORE, "--workers", "x"], "--workers: 'x' is not an integer"),
        (["train", "--trials", "1.5"], "--trials: '1.5' is not an integer"),
        ([*FORECAST, "--coverage", "most"], "--coverage: 'most' is not a number"),
        ([*ANALYZE, "--horizon", "six months"], "--horizon: 'six months' is not an integer"),
        ([*PLAN, "--alpha", "5%"], "--alpha: '5%' is not a number"),
        (["demo", "--partners", "many"], "--partners: 'many' is not an integer"),
    ],
)
def test_a_value_the_parser_cannot_read_is_named(argv, said, tmp_path, capsys, monkeypatch):
    """``--workers x`` said "Invalid value for '--workers': Input should be a valid integer,
    unable to parse string as an integer", without the value given: the parser's errors of
    every command now name the option and the value."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run([raw_copy(tmp_path) if a == "RAW" else a for a in argv], capsys)
    assert code == 2
    line = assert_one_error(err, said)
    assert line == f"error: {said}", line


def test_errors_about_data_stay_one_line(tmp_path, capsys, monkeypatch):
    """An error about the data that names an option is bad input (one line), not a usage
    error: here the data ends before --data-end, and no partner signed before --as-of."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    sqlite3.connect(tmp_path / "mlflow.db").close()  # a registry (empty): input errors first
    raw = raw_copy(tmp_path)
    for argv, said in (
        (["build", "--raw", raw, "--out", "f", "--data-end", "2030-01-01"], "newest event"),
        (["score", "--raw", raw, "--as-of", "2000-01-01"], "no partner signed before"),
    ):
        code, _, err = run(argv, capsys)
        assert code == 2
        assert_one_error(err, said)
        assert not err.startswith("Usage:"), err


READS_THE_REGISTRY = {
    "score": ["score", "--raw", "RAW", "--as-of", "2024-03-01", "--out", "s.csv"],
    "score_features": ["score", "--features", "f.csv", "--out", "s.csv"],
    "score_spark": ["score", "--raw", "RAW", "--as-of", "2024-03-01", "--engine", "spark"]
    + ["--out", "s.parquet"],
    "models": ["models"],
    "promote": ["promote"],
    "monitor": ["monitor", "--raw", "RAW", "--as-of", "2024-03-01", "--out", "mon"],
    "whatif": ["whatif", "--raw", "RAW", "--partner", "P1", "--as-of", "2024-03-01"]
    + ["--set", "age_days=30"],
}
"""Commands that only read the model registry (promote moves an alias of a version in it)."""


@pytest.mark.parametrize("case", sorted(READS_THE_REGISTRY))
def test_no_registry_is_one_line_and_none_is_created(case, tmp_path, capsys, monkeypatch):
    """From another folder without MLFLOW_TRACKING_URI, MLflow created an empty data/mlflow
    there, then the command failed: 'Registered Model with name=partnerscore not found'."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    raw = raw_copy(tmp_path)
    argv = [raw if a == "RAW" else a for a in READS_THE_REGISTRY[case]]
    code, out, err = run(argv, capsys)
    assert code == 2, (code, out, err)
    store = (tmp_path / "data" / "mlflow" / "mlflow.db").resolve()
    assert_one_error(err, f"no model registry found at {store}", "MLFLOW_TRACKING_URI", "--config")
    assert not (tmp_path / "data").exists()
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "mon").exists()


# ------------------------------------------------------------------ with a trained model


@pytest.fixture()
def store_file(store_config, tmp_path):
    """The session model store as a --config file (history in this test's folder)."""
    return config_file(tmp_path, store_config.model_dump(mode="json"), "store.json")


@pytest.mark.parametrize("case", ["models", "promote", "score", "monitor", "whatif"])
def test_a_registered_model_name_typo_names_the_models_the_store_holds(
    case, tmp_path, raw_dir, store_config, capsys
):
    """train.registered_model 'partnerscor' in a store holding 'partnerscore': `models` said
    "no registered versions of 'partnerscor' yet (run `partnerscore train`)" with exit 0, and
    score "has no alias 'champion' (promote a version first)": both sent one to the wrong fix."""
    data = store_config.model_dump(mode="json")
    data["train"]["registered_model"] = "partnerscor"
    cfg = config_file(tmp_path, data)
    argv = [a if a != "RAW" else raw_dir for a in READS_THE_REGISTRY[case]]
    code, out, err = run([*argv, "--config", cfg], capsys)
    assert code == 2, (code, out, err)
    assert_one_error(err, "no registered model 'partnerscor'", "it holds: partnerscore")


def test_missing_optional_column_builds(tmp_path, raw_dir, capsys):
    """activities without the optional response_hours column: valid, and build works."""
    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    acts = pd.read_csv(raw / "activities.csv", dtype=str, keep_default_na=False)
    acts.drop(columns=["response_hours"]).to_csv(raw / "activities.csv", index=False)
    code, out, err = run(["build", "--raw", raw, "--out", tmp_path / "f"], capsys)
    assert code == 0, err
    built = pd.read_parquet(tmp_path / "f" / "training_set.parquet")
    assert built["activities_response_hours_median_todate"].isna().all()


def test_duplicate_partner_is_scored_once_and_not_rejected(tmp_path, raw_dir, store_file, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    partners = pd.read_csv(raw / "partners.csv", dtype=str, keep_default_na=False)
    pd.concat([partners, partners.iloc[[3]]]).to_csv(raw / "partners.csv", index=False)
    out = tmp_path / "s.csv"
    code, text, err = run(
        ["score", "--raw", raw, "--as-of", "2026-04-01", "--out", out, "--config", store_file],
        capsys,
    )
    assert code == 0, err
    scores, rejects = read_frame(out), read_frame(rejects_path(out))
    dup = partners.iloc[3]["partner_id"]
    assert (scores["partner_id"] == dup).sum() == 1
    assert dup not in set(rejects["partner_id"])
    assert "duplicate rows of kept partners 1" in text
    signed = pd.to_datetime(partners["signed_at"])
    late = int((signed >= pd.Timestamp("2026-04-01")).sum())
    assert len(scores) + len(rejects) + late + 1 == len(partners) + 1


def test_padded_partner_rows_keep_their_id_in_quarantine(tmp_path, raw_dir, store_file, capsys):
    """The quarantine file showed a padded id trimmed (' 007' as '007'); scoring still counts a
    padded duplicate of a kept partner as a duplicate and rejects the others by their id."""
    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    partners = pd.read_csv(raw / "partners.csv", dtype=str, keep_default_na=False)
    kept = partners.iloc[3]["partner_id"]
    padded = partners.iloc[[3, 4]].copy()
    padded["partner_id"] = [f" {kept} ", " P-NEW"]
    padded["signed_at"] = [padded["signed_at"].iloc[0], "not a date"]
    pd.concat([partners, padded]).to_csv(raw / "partners.csv", index=False)
    out = tmp_path / "s.csv"
    code, text, err = run(
        ["score", "--raw", raw, "--as-of", "2026-04-01", "--out", out, "--config", store_file],
        capsys,
    )
    assert code == 0, err
    quarantine = pd.read_csv(tmp_path / "quarantine" / "partners.csv", dtype=str)
    assert quarantine["partner_id"].tolist() == [f" {kept} ", " P-NEW"]
    assert quarantine["reason"].str.contains(f"duplicate partner_id '{kept}'").tolist() == [
        True,
        False,
    ]
    scores, rejects = read_frame(out), read_frame(rejects_path(out))
    assert (scores["partner_id"] == kept).sum() == 1
    assert "duplicate rows of kept partners 1" in text
    new = rejects[rejects["reason"].str.startswith("partner row quarantined")]
    assert new["partner_id"].tolist() == ["P-NEW"]


def test_ids_stay_text_through_csv_scores(tmp_path, raw_dir, store_file, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    for path in raw.glob("*.csv"):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "partner_id" in frame:
            frame["partner_id"] = "000" + frame["partner_id"].str.lstrip("P")
            frame.to_csv(path, index=False)
    out = tmp_path / "s.csv"
    argv = ["score", "--raw", raw, "--as-of", "2026-04-01", "--out", out, "--config", store_file]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    ids = read_frame(out)["partner_id"]
    assert ids.str.startswith("000").all()


def test_formula_cells_neutralised_in_csv_but_verbatim_in_parquet(
    tmp_path, raw_dir, store_file, capsys
):
    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    partners = pd.read_csv(raw / "partners.csv", dtype=str, keep_default_na=False)
    partners.loc[0, "partner_name"] = '=HYPERLINK("http://evil","x")'
    partners.loc[1, "partner_name"] = "@SUM(1+1)"
    partners.to_csv(raw / "partners.csv", index=False)
    for out in (tmp_path / "s.csv", tmp_path / "s.parquet"):
        argv = ["score", "--raw", raw, "--as-of", "2026-04-01", "--out", out]
        code, _, err = run([*argv, "--config", store_file], capsys)
        assert code == 0, err
    text = (tmp_path / "s.csv").read_text(encoding="utf-8")
    assert "'=HYPERLINK" in text and "'@SUM(1+1)" in text
    assert "\n=HYPERLINK" not in text and ",=HYPERLINK" not in text
    names_csv = read_frame(tmp_path / "s.csv").set_index("partner_id")["partner_name"]
    names_pq = pd.read_parquet(tmp_path / "s.parquet").set_index("partner_id")["partner_name"]
    assert names_csv.to_dict() == names_pq.to_dict()  # round trip restores the cells
    assert (names_pq == "@SUM(1+1)").sum() == 1


def test_outputs_respect_the_umask(tmp_path, raw_dir, store_file, capsys):
    old = os.umask(0o022)
    try:
        out = tmp_path / "s.csv"
        argv = ["score", "--raw", raw_dir, "--as-of", "2026-04-01", "--out", out]
        code, _, err = run([*argv, "--config", store_file], capsys)
    finally:
        os.umask(old)
    assert code == 0, err
    assert out.stat().st_mode & 0o777 == 0o644
    assert rejects_path(out).stat().st_mode & 0o777 == 0o644


def test_stale_temporaries_are_cleaned(tmp_path, raw_dir, store_file, capsys):
    out = tmp_path / "s.csv"
    stale = tmp_path / ".s.csv.abc123.tmp"
    fresh = tmp_path / ".s.csv.def456.tmp"
    stale.write_text("half a file")
    fresh.write_text("another job, still writing")
    os.utime(stale, (1_000_000_000, 1_000_000_000))
    argv = ["score", "--raw", raw_dir, "--as-of", "2026-04-01", "--out", out]
    code, _, err = run([*argv, "--config", store_file], capsys)
    assert code == 0, err
    assert not stale.exists() and fresh.exists()


def test_locked_history_publishes_nothing(tmp_path, raw_dir, store_config, capsys):
    cfg = store_config
    url = cfg.paths.history_database()
    db = Path(url.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    store = config_file(tmp_path, cfg.model_dump(mode="json"), "store.json")
    out = tmp_path / "s.csv"
    argv = ["score", "--raw", raw_dir, "--as-of", "2026-04-01", "--out", out, "--config", store]
    assert run(argv, capsys)[0] == 0  # creates the store and a first scores file
    before = out.read_bytes()
    lock = sqlite3.connect(db, timeout=0.1)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        code, _, err = run([*argv[:4], "2026-05-01", *argv[5:]], capsys)
    finally:
        lock.rollback()
        lock.close()
    assert code == 2
    assert_one_error(err, "score history", "locked")
    assert out.read_bytes() == before  # the old file stays: no batch missing from history
    assert not list(tmp_path.glob(".s.csv.*.tmp"))


def test_unwritable_output_names_the_path(tmp_path, raw_dir, store_file, capsys):
    target = Path("/sys/partnerscore-test/s.csv")  # read-only even for root
    argv = ["score", "--raw", raw_dir, "--as-of", "2026-04-01", "--out", target]
    code, _, err = run([*argv, "--config", store_file], capsys)
    assert code == 2
    assert_one_error(err, str(target), "cannot write")


def test_disk_full_names_the_path(tmp_path, raw_dir, store_file):
    """A real write failure (file size limit: EFBIG, like ENOSPC) in a child process."""
    out = tmp_path / "s.csv"
    code = (
        "import sys; from partnerscore.serving.cli import main; "
        f"sys.exit(main({['score', '--raw', str(raw_dir), '--as-of', '2026-04-01', '--out', str(out), '--config', str(store_file)]!r}))"
    )

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert_one_error(done.stderr, "cannot write", "too large")
    assert not out.exists()


def test_score_a_prebuilt_feature_table(tmp_path, raw_dir, store_file, capsys):
    from partnerscore.features.pipeline import build_scoring_frame
    from partnerscore.features.validate import load_raw

    feats = build_scoring_frame(
        load_raw(raw_dir, write_quarantine=False), pd.Timestamp("2026-04-01")
    )
    feats.loc[0, "region"] = "atlantis"
    feats.to_parquet(tmp_path / "feats.parquet", index=False)
    out = tmp_path / "s.csv"
    argv = ["--json", "score", "--features", tmp_path / "feats.parquet", "--out", out]
    code, text, err = run([*argv, "--no-history", "--config", store_file], capsys)
    assert code == 0, err
    summary = json.loads(text)
    assert summary["scored"] == len(feats) and summary["as_of"] is None
    assert summary["partners"] == feats["partner_id"].nunique()
    assert summary["partners_input"] == len(feats)
    assert summary["unseen_categories"] == 1 and summary["unseen"] == {"region=atlantis": 1}
    assert "categories the model never saw): 1 rows: region=atlantis (1)" in summary["summary"]
    scores = read_frame(out)
    assert (
        scores.loc[scores["partner_id"] == feats.loc[0, "partner_id"], "unseen_categories"].item()
        == "region=atlantis"
    )
    store = json.loads(store_file.read_text())["paths"]["data_dir"]
    assert not (Path(store) / "scores" / "history.sqlite").exists()  # --no-history
    feats.drop(columns=["deals_won_todate"]).to_csv(tmp_path / "feats.csv", index=False)
    code, _, err = run(
        ["score", "--features", tmp_path / "feats.csv", "--out", out, "--config", store_file],
        capsys,
    )
    assert code == 2
    assert_one_error(err, "feats.csv", "missing feature column 'deals_won_todate'")
    # options of the raw-table job are refused, not silently ignored
    for extra, named in (
        (["--engine", "spark"], "--engine spark"),
        (["--group-partners", "10"], "--group-partners"),
    ):
        code, _, err = run([*argv, "--no-history", "--config", store_file, *extra], capsys)
        assert code == 2
        assert_one_error(err, "score --features", named, "raw tables only")


def test_score_features_reads_a_category_known_in_another_case(
    tmp_path, raw_dir, store_file, capsys
):
    """A feature table spelling tiers 'Registered' (the model knows 'registered') scored them
    as missing, silently: other scores. They are now read as the model's category, counted in
    the summary and ``--json`` (``respelled_categories``) and noted on the row, not listed as
    unseen."""
    from partnerscore.features.pipeline import build_scoring_frame
    from partnerscore.features.validate import load_raw

    feats = build_scoring_frame(
        load_raw(raw_dir, write_quarantine=False), pd.Timestamp("2026-04-01")
    )
    registered = feats["tier"].eq("registered")
    assert registered.any() and not registered.all()
    feats.to_parquet(tmp_path / "plain.parquet", index=False)
    feats.loc[registered, "tier"] = "Registered"
    feats.to_parquet(tmp_path / "shouted.parquet", index=False)
    scores = {}
    for name in ("plain", "shouted"):
        out = tmp_path / f"{name}.csv"
        argv = ["--json", "score", "--features", tmp_path / f"{name}.parquet", "--out", out]
        code, text, err = run([*argv, "--no-history", "--config", store_file], capsys)
        assert code == 0, err
        scores[name] = (json.loads(text), read_frame(out))
    (plain, a), (shouted, b) = scores["plain"], scores["shouted"]
    assert plain["respelled_categories"] == 0 and plain["respelled"] == {}
    assert shouted["respelled_categories"] == int(registered.sum())
    said = "tier 'Registered' -> 'registered'"
    assert shouted["respelled"] == {said: int(registered.sum())}
    assert (
        f"another case): {registered.sum():,} rows: {said} ({registered.sum():,})"
        in (shouted["summary"])
    )
    assert "another case" not in plain["summary"]
    np.testing.assert_array_equal(a["score"], b["score"])
    assert (b["tier"] == a["tier"]).all() and (b["unseen_categories"].fillna("") == "").all()
    by_id = b.set_index("partner_id")["respelled_categories"].fillna("")
    wanted = np.where(registered.to_numpy(), said, "")
    assert (by_id.reindex(feats["partner_id"]).to_numpy() == wanted).all()


def test_score_features_errors_show_invisible_characters(tmp_path, raw_dir, store_file, capsys):
    """A value with a zero-width space (U+200B) was quoted raw, so the error read exactly like
    a valid value ('1' is not a number; partner 'P00003'); it is now shown as an escape, and so
    is an unseen category listed in ``unseen_categories``."""
    from partnerscore.features.pipeline import build_scoring_frame
    from partnerscore.features.validate import load_raw

    feats = build_scoring_frame(
        load_raw(raw_dir, write_quarantine=False), pd.Timestamp("2026-04-01")
    )
    pid = feats.loc[2, "partner_id"]
    bad = feats.astype({"deals_won_todate": object})
    bad.loc[2, "deals_won_todate"] = "1\u200b"
    bad.loc[2, "partner_id"] = pid + "\u200b"
    path = tmp_path / "feats.csv"
    bad.to_csv(path, index=False)
    out = tmp_path / "s.csv"
    argv = ["score", "--features", path, "--out", out, "--no-history", "--config", store_file]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert_one_error(
        err,
        f"{path}: column 'deals_won_todate' row 3: '1\\u200b' is not a number",
        f"(partner '{pid}\\u200b')",
    )
    good = feats.copy()
    good.loc[0, "region"] = "EMEA\u200b"  # not the region EMEA the model knows
    good.to_csv(path, index=False)
    code, _, err = run(argv, capsys)
    assert code == 0, err
    scores = read_frame(out)
    listed = scores.loc[scores["partner_id"] == feats.loc[0, "partner_id"], "unseen_categories"]
    assert listed.item() == "region=EMEA\\u200b"


def test_score_features_refuses_infinite_values_impossible_ages_and_far_dates(
    tmp_path, raw_dir, store_file, capsys
):
    """``score --features`` scored ``inf``/``-inf`` features, a negative ``age_days`` and an
    ``as_of`` in 2200 silently; each now stops with one line naming the file, column, row and
    partner, nothing written. A NaN (an empty cell) is still a missing value."""
    from partnerscore.features.pipeline import build_scoring_frame
    from partnerscore.features.validate import load_raw

    feats = build_scoring_frame(
        load_raw(raw_dir, write_quarantine=False), pd.Timestamp("2026-04-01")
    )
    number = "deals_won_todate"
    assert pd.api.types.is_float_dtype(feats[number]) and feats["age_days"].notna().all()
    out = tmp_path / "s.csv"
    for column, value, said in (
        (number, "inf", "is not a finite number"),
        (number, "-inf", "is not a finite number"),
        ("age_days", "-5", "is not an onboarding age (0 to 36,525 days)"),  # read as -5.0
        ("age_days", "36526", "is not an onboarding age"),
        ("as_of", "2200-01-01", "is outside the years 1900-2199"),
        ("as_of", "1899-12-31", "is outside the years 1900-2199"),
        # one as_of with a time zone among dates without: pandas raised "Mixed timezones"
        ("as_of", "2026-04-01T00:00:00+05:00", "has a UTC offset and row 1"),
        (number, "many", "is not a number"),
        # values no build makes: a negative count, a share given as a percentage
        (number, "-1", "is outside the range of its unit (count: 0 or more)"),
        ("deals_win_rate_todate", "75", "(share: 0 to 1); a share is a fraction, not a percentage"),
    ):
        bad = feats.astype({column: object})
        bad.loc[2, column] = value
        path = tmp_path / "feats.csv"
        bad.to_csv(path, index=False)
        argv = ["score", "--features", path, "--out", out, "--no-history", "--config", store_file]
        code, _, err = run(argv, capsys)
        assert code == 2, (column, value)
        named = f"{path}: column '{column}' row 3: '{value}"
        assert_one_error(err, named, said, f"(partner '{feats.loc[2, 'partner_id']}')")
        assert not out.exists()
    # the same checks on Parquet's typed columns (a float inf, not its text)
    bad = feats.copy()
    bad.loc[4, number] = -np.inf
    bad.to_parquet(tmp_path / "feats.parquet", index=False)
    argv = ["score", "--features", tmp_path / "feats.parquet", "--out", out, "--no-history"]
    code, _, err = run([*argv, "--config", store_file], capsys)
    assert code == 2
    assert_one_error(err, f"column '{number}' row 5: '-inf' is not a finite number")
    # a missing value is scored as missing
    bad = feats.copy()
    bad.loc[4, number] = np.nan
    bad.to_parquet(tmp_path / "feats.parquet", index=False)
    code, _, err = run([*argv, "--config", store_file], capsys)
    assert code == 0, err
    assert len(read_frame(out)) == len(feats)


def test_version_and_json_and_log_level(capsys):
    from partnerscore import __version__

    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.strip() == f"partnerscore {__version__}"
    code, out, err = run(["--json", "validate", str(BASE)], capsys)
    assert code == 0 and json.loads(out)["tables"]["deals"]["input_rows"] == 3
    # every command answers --json (metrics, forecast, monitor and experiment printed text)
    code, out, _ = run(["--json", "metrics"], capsys)
    payload = json.loads(out)
    specs = payload["features"]
    assert code == 0 and specs[0]["name"] == "age_days" and {"unit", "layer"} <= set(specs[0])
    # the summary line every command's --json carries (the README says so; metrics had none)
    code, text, _ = run(["metrics"], capsys)
    assert (
        payload["summary"]
        == text.splitlines()[0]
        == f"registry {payload['registry_version']}: {len(specs)} features"
    )
    code, out, _ = run(
        ["--json", "experiment", "plan", "--partners", "500", "--base-rate", "0.3"], capsys
    )
    assert code == 0 and "summary" in json.loads(out)
    code, _, err = run(["--log-level", "loud", "metrics"], capsys)
    assert code == 2
    assert_one_error(err, "--log-level loud")
    # a usage error: the program's usage line first, as the parser's own errors print it
    code, _, parser_err = run(["--nope", "metrics"], capsys)
    assert code == 2 and err.splitlines()[0] == parser_err.splitlines()[0]
    assert err.splitlines()[0].endswith(" [OPTIONS] COMMAND [ARGS]...")


def test_a_missing_as_of_is_not_named_for_its_time_zone():
    """mixed_zones read a missing as_of (NaT) as a date without an offset, and named it as the
    row whose zone differs; a missing value has no zone, as a value that is no date."""
    from partnerscore.features.core import mixed_zones

    frame = pd.DataFrame(
        {
            "partner_id": ["P1", "P2", "P3"],
            "as_of": ["2026-01-01T00:00:00+02:00", None, "2026-01-01"],
        }
    )
    said = mixed_zones("s.csv", frame, ValueError("Mixed timezones detected"))
    assert said.startswith(
        "s.csv: column 'as_of' row 3: '2026-01-01' has no UTC offset and row 1 "
        "('2026-01-01T00:00:00+02:00') has one (partner 'P3')"
    ), said


def test_a_value_that_is_no_date_is_not_named_for_its_time_zone():
    """frame_check.mixed_zones named the first row that was no date ('soon') as having
    'another time zone'; it names the first date whose zone differs from the first date's."""
    from partnerscore.features.core import mixed_zones

    for values, row, first in (
        (["2026-01-01T00:00:00+02:00", "soon", "2026-01-01T00:00:00+00:00"], 3, 1),
        (["soon", "2026-01-01T00:00:00+02:00", "2026-01-01T00:00:00+00:00"], 3, 2),
    ):
        frame = pd.DataFrame({"partner_id": ["P1", "P2", "P3"], "as_of": values})
        said = mixed_zones("s.csv", frame, ValueError("Mixed timezones detected"))
        assert said.startswith(
            f"s.csv: column 'as_of' row {row}: '2026-01-01T00:00:00+00:00' has another time zone "
            f"than row {first} ('2026-01-01T00:00:00+02:00') (partner 'P3')"
        ), said


def job_failing(kind):
    """A ``validate`` whose job raises ``kind`` (a bug, Ctrl-C): what main makes of it."""

    def run_validate(*_args, **_kwargs):
        raise kind("boom\nsecond line")

    return run_validate


JSON_FAILURES = {
    # (argv, exit code, command, words of the error line); RAW: a copy of the base raw tables
    "bad_input": (["build", "--raw", "nowhere"], 2, "build", ["nowhere", "not found"]),
    "usage_by_the_command": (["score", "--raw", "RAW"], 2, "score", ["--as-of DATE"]),
    "bad_option_value": (
        ["score", "--raw", "RAW", "--as-of", "2024-13-01"],
        2,
        "score",
        ["--as-of", "2024-13-01"],
    ),
    "missing_required_option": (["monitor"], 2, "monitor", ["Missing option '--as-of'"]),
    "not_an_int": (["simulate", "--partners", "many"], 2, "simulate", ["--partners", "integer"]),
    "unknown_option": (["build", "--bogus"], 2, "build", ["--bogus"]),
    "nested_command": (["experiment", "assign"], 2, "experiment assign", ["--scores"]),
    # (without --json: its help on stdout, and exit 2)
    "group_without_command": (["experiment"], 2, "experiment", ["Missing command"]),
    "unknown_command": (["nosuch"], 2, None, ["No such command 'nosuch'"]),
    "bad_global_option": (["--log-level", "loud", "metrics"], 2, "metrics", ["--log-level"]),
    "global_option_without_value": (["--log-level"], 2, None, ["--log-level"]),
    "unexpected": (["validate", "RAW"], 70, "validate", ["unexpected RuntimeError: boom"]),
    "interrupted": (["validate", "RAW"], 130, "validate", ["aborted"]),
}


@pytest.mark.parametrize("case", sorted(JSON_FAILURES))
def test_json_failures_are_one_object_on_stdout(case, tmp_path, capsys, monkeypatch):
    """With --json a failure printed nothing on stdout: a batch job parsing it read empty
    output. It prints one JSON object (the error line, exit code and command) there; stderr
    and everything without --json are unchanged."""
    from partnerscore.features import validate

    monkeypatch.chdir(tmp_path)  # nothing may land in the repository's data/ folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("PARTNERSCORE_DEBUG", raising=False)
    if case in ("unexpected", "interrupted"):
        kind = RuntimeError if case == "unexpected" else KeyboardInterrupt
        monkeypatch.setattr(validate, "run_validate", job_failing(kind))
    argv, exit_code, command, parts = JSON_FAILURES[case]
    raw = raw_copy(tmp_path)
    argv = [raw if a == "RAW" else a for a in argv]
    code, plain_out, plain_err = run(argv, capsys)
    assert code == exit_code, (code, plain_out, plain_err)
    code, out, err = run(["--json", *argv], capsys)
    assert code == exit_code, (code, out, err)
    if case == "group_without_command":  # its help, then an error line that said nothing
        assert "Usage:" in plain_out and plain_err.splitlines()[-1] == "error: Missing command."
    else:
        assert plain_out.strip() == "" and err == plain_err, (plain_out, err, plain_err)
    said = err.splitlines()[-1]
    if exit_code != 130:
        if "unexpected" in said:
            assert len([line for line in err.splitlines() if line.startswith("error: ")]) == 1
        else:
            assert_one_error(err)
        said = said.removeprefix("error: ")
    assert json.loads(out) == {"error": said, "exit_code": exit_code, "command": command}, out
    for part in parts:
        assert part in said, (part, said)
    assert not (tmp_path / "data").exists()


_A_BUG_IN_VALIDATE = """
import partnerscore.features.validate as validate


def check_delimiter(path, header):  # a bug: one past the last column
    return header[len(header)]


validate.check_delimiter = check_delimiter
"""
"""A sitecustomize for the command's process: a bug in the raw-table reader."""


@pytest.mark.parametrize("debug", [False, True, "0"])
def test_a_crash_has_its_own_exit_code(tmp_path, debug):
    """An unexpected error (a bug) exited 1, as a monitor alarm and a refused promote do: a
    scheduler branching on the code could not tell a crash from those outcomes (only
    `--json`'s `error` could). It exits 70 (sysexits.h's EX_SOFTWARE), with or without
    PARTNERSCORE_DEBUG (which used to re-raise: Python's own exit 1), in one error line."""
    env = {k: v for k, v in os.environ.items() if k != "PARTNERSCORE_DEBUG"}
    with_sitecustomize(env, tmp_path / "hook", _A_BUG_IN_VALIDATE)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    if debug:  # "0": off, as unset (it printed the traceback: any value did)
        env["PARTNERSCORE_DEBUG"] = "1" if debug is True else debug
    job = subprocess.run(
        [sys.executable, "-m", "partnerscore.serving.console", "--json", "validate"]
        + [str(raw_copy(tmp_path))],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = "unexpected IndexError: list index out of range (set PARTNERSCORE_DEBUG=1 for details)"
    assert job.returncode == 70, job.stderr
    assert job.stderr.splitlines()[-1] == f"error: {line}", job.stderr
    assert ("Traceback" in job.stderr) == (debug is True), job.stderr
    assert json.loads(job.stdout) == {"error": line, "exit_code": 70, "command": "validate"}


def test_json_success_output_is_unchanged_by_the_error_objects(capsys):
    """A command that works prints its summary object only (no error fields)."""
    code, out, _ = run(["--json", "validate", str(BASE)], capsys)
    payload = json.loads(out)
    assert code == 0 and "summary" in payload and "error" not in payload


def test_json_without_a_command_is_an_error_object(capsys):
    code, out, err = run(["--json"], capsys)
    assert code == 2 and err.splitlines()[-1] == "error: Missing command."
    assert json.loads(out) == {"error": "Missing command.", "exit_code": 2, "command": None}


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "MISSING", "--json"],
        ["validate", "--json", "MISSING"],
        ["--log-level", "info", "validate", "MISSING", "--json"],
        ["--json", "validate", "MISSING", "--json"],  # twice: once is enough
    ],
)
def test_json_after_the_command_is_the_global_option(argv, tmp_path, capsys):
    """``--json`` after the command was "No such option: --json" as text (exit 2): a script
    passing it last read no JSON. It is the global option wherever it is given."""
    argv = [str(tmp_path / "missing") if a == "MISSING" else a for a in argv]
    code, out, err = run(argv, capsys)
    line = f"RAW {tmp_path / 'missing'}: raw data folder not found"
    assert code == 2 and err.splitlines()[-1] == f"error: {line}", err
    assert json.loads(out) == {"error": line, "exit_code": 2, "command": "validate"}


def test_json_after_the_command_prints_the_result_object(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["validate", BASE, "--validated", tmp_path / "v", "--json"], capsys)
    assert code == 0 and "summary" in json.loads(out)
    # a value that is the text --json stays the option's value (the parser gives it so)
    code, out, _ = run(["validate", BASE, "--validated", "--json"], capsys)
    assert code == 0 and not out.lstrip().startswith("{"), out
    assert (tmp_path / "--json").is_dir()
    code, out, err = run(["--log-level", "--json", "validate", BASE], capsys)
    assert code == 2 and out == "" and "--log-level --json: use debug" in err


@pytest.mark.parametrize("argv", [["--json", "--version"], ["--version", "--json"]])
def test_json_version_is_an_object(argv, capsys):
    from partnerscore import __version__

    code, out, _ = run(argv, capsys)
    assert code == 0
    assert json.loads(out) == {"version": __version__, "summary": f"partnerscore {__version__}"}


BAD_TRACKING_URIS = {
    "foo://x": "unsupported scheme 'foo'",
    "sqlite:/x.db": "not a database URL SQLAlchemy can read",
    "postgres://someone:secret@127.0.0.1:1/mlflow": "PostgreSQL is postgresql://",
    "sqlite//x.db": "MLFLOW_ALLOW_FILE_STORE",
    # upper case: SQLAlchemy knows no 'SQLITE' dialect; it was told "three slashes"
    "SQLITE:///x.db": "the scheme 'SQLITE' must be lower case: 'sqlite:///x.db'",
}


@pytest.mark.parametrize("uri", sorted(BAD_TRACKING_URIS))
@pytest.mark.parametrize("case", sorted(READS_THE_REGISTRY) + ["train"])
def test_an_unsupported_tracking_uri_is_one_line(
    case, uri, tmp_path, capsys, monkeypatch, built_dir
):
    """MLflow's own exception ("unexpected UnsupportedModelRegistryStoreURIException: Model
    registry functionality is unavailable; ...", "unexpected ArgumentError: Could not parse
    SQLAlchemy URL", "unexpected MlflowException: The filesystem tracking backend ...")
    became one line naming MLFLOW_TRACKING_URI, its value (no password) and what is
    supported; nothing is created."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    raw = raw_copy(tmp_path)
    pd.DataFrame({"partner_id": ["P1"]}).to_csv(tmp_path / "f.csv", index=False)
    argv = ["train", "--features", built_dir, "--trials", "0"] if case == "train" else None
    argv = argv or [raw if a == "RAW" else a for a in READS_THE_REGISTRY[case]]
    code, out, err = run(argv, capsys)
    shown = uri.replace("secret", "***")
    line = assert_one_error(err, f"MLFLOW_TRACKING_URI: cannot open the MLflow store '{shown}'")
    assert BAD_TRACKING_URIS[uri] in line and "supported: sqlite:///FILE" in line, line
    assert "secret" not in err and code in (1, 2), (code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.csv", "raw"]
