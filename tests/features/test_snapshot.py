"""Validated snapshots: reusing one is exactly validating again, and a stale one is never reused.

- every passing case of the malformed corpus (tests/features/malformed), and the session's
  simulated program: ``validate --validated`` then :func:`load_validated` returns the same
  clean frames (values and dtypes), quarantined rows, quarantine CSV bytes, counts, data end and
  fingerprints as :func:`load_raw` (the slow twin);
- a changed, added or removed raw file, another contract version, a corrupt manifest or a
  missing Parquet file is refused in one line (explicit snapshot) or re-validated with a note
  (the automatic ``RAW/validated``);
- property (hypothesis): under any pair of validation reference dates, a snapshot is either
  refused as stale or equal to validating again under the new rules.
"""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import CASES, spec_of
from support import materialise as copy_case

from partnerscore.features.config import ValidateConfig
from partnerscore.features.validate import load_raw
from partnerscore.features.validated import (
    MANIFEST,
    StaleSnapshot,
    default_dir,
    load_validated,
    read_validated,
    run_validate_snapshot,
)

PASSING = [c for c in CASES if spec_of(c)["exit"] == 0]


def materialise(case: str, dest: Path) -> Path:
    """A corpus case materialised in ``dest`` (see ``tests/support.py``); returns ``dest``."""
    copy_case(case, dest)
    return dest


def assert_same(fast, slow, fast_q: Path | None = None, slow_q: Path | None = None) -> None:
    """Snapshot-loaded data equals freshly validated data, dtypes and quarantine included."""
    assert list(fast.tables) == list(slow.tables)
    for name in slow.tables:
        pd.testing.assert_frame_equal(fast.tables[name], slow.tables[name], check_exact=True)
        assert dict(fast.tables[name].dtypes) == dict(slow.tables[name].dtypes), name
        pd.testing.assert_frame_equal(fast.quarantine[name], slow.quarantine[name])
    assert fast.data_end == slow.data_end
    assert fast.fingerprints == slow.fingerprints and fast.files == slow.files
    assert fast.report.tables == slow.report.tables
    assert fast.report.ignored == slow.report.ignored
    if fast_q is not None and slow_q is not None:
        fast_files = sorted(p.name for p in fast_q.glob("*.csv"))
        assert fast_files == sorted(p.name for p in slow_q.glob("*.csv"))
        for name in fast_files:
            assert (fast_q / name).read_bytes() == (slow_q / name).read_bytes(), name


@pytest.mark.parametrize("case", PASSING)
def test_corpus_snapshot_then_load_equals_load_raw(case, tmp_path):
    raw = materialise(case, tmp_path / "raw")
    snap = tmp_path / "snap"
    report = run_validate_snapshot(raw, snap)
    assert report.snapshot_dir == snap and (snap / MANIFEST).is_file()
    fast = read_validated(raw, snap, tmp_path / "q_fast")
    slow = load_raw(raw, tmp_path / "q_slow")
    assert_same(fast, slow, tmp_path / "q_fast", tmp_path / "q_slow")


def test_simulated_program_reused_automatically(raw_dir, tmp_path, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    run_validate_snapshot(raw, default_dir(raw))
    manifest = json.loads((default_dir(raw) / MANIFEST).read_text("utf-8"))
    assert set(manifest) >= {"inputs", "tables", "validation", "contract_version", "data_end"}
    assert manifest["inputs"]["deals"]["size"] == (raw / "deals.csv").stat().st_size
    fast = load_validated(raw, None, tmp_path / "q_fast")
    assert capsys.readouterr().err == ""  # reused silently
    assert_same(fast, load_raw(raw, tmp_path / "q_slow"), tmp_path / "q_fast", tmp_path / "q_slow")


def test_stale_automatic_snapshot_is_revalidated_with_a_note(raw_dir, tmp_path, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    run_validate_snapshot(raw, default_dir(raw))
    deals = pd.read_csv(raw / "deals.csv", dtype=str, keep_default_na=False)
    deals.iloc[:-1].to_csv(raw / "deals.csv", index=False)  # one deal fewer
    data = load_validated(raw, None, tmp_path / "q")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("note: ")
    assert "deals.csv changed" in err and "validating" in err
    assert len(data.tables["deals"]) == len(load_raw(raw, tmp_path / "q2").tables["deals"])
    with pytest.raises(StaleSnapshot, match="deals.csv changed"):
        load_validated(raw, default_dir(raw), tmp_path / "q")


def test_same_size_edit_and_touch(tmp_path):
    raw = materialise("mixed_good_bad", tmp_path / "raw")
    snap = tmp_path / "snap"
    run_validate_snapshot(raw, snap)
    # touched (new mtime), same bytes: still the same data, reused
    path = raw / "deals.csv"
    path.write_bytes(path.read_bytes())
    read_validated(raw, snap, tmp_path / "q")
    # one digit changed, same size: the content hash catches it
    text = path.read_text("utf-8")
    digit = next(i for i, ch in enumerate(text) if ch.isdigit() and i > text.index("\n"))
    changed = text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1 :]
    path.write_text(changed, "utf-8")
    with pytest.raises(StaleSnapshot, match=r"deals.csv changed \(content differs\)"):
        read_validated(raw, snap, tmp_path / "q")


def test_check_snapshot_with_deferred_hashes_reports_as_read_validated(tmp_path):
    """``check_snapshot(content=False)`` + ``verify_content`` (the Spark engine) refuses what
    ``read_validated`` refuses, with the same line: a same-size edit (at verify time), and a
    changed file before a rule change."""
    from partnerscore.features.validated import check_snapshot

    raw = materialise("mixed_good_bad", tmp_path / "raw")
    snap = tmp_path / "snap"
    run_validate_snapshot(raw, snap)
    files = check_snapshot(raw, snap, content=False)
    files.verify_content()
    assert files.report.tables == read_validated(raw, snap, tmp_path / "q").report.tables
    path = raw / "deals.csv"
    text = path.read_text("utf-8")
    digit = next(i for i, ch in enumerate(text) if ch.isdigit() and i > text.index("\n"))
    path.write_text(text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1 :], "utf-8")
    deferred = check_snapshot(raw, snap, content=False)  # names and sizes still match
    with pytest.raises(StaleSnapshot) as got:
        deferred.verify_content()
    with pytest.raises(StaleSnapshot) as want:
        read_validated(raw, snap, tmp_path / "q")
    assert str(got.value) == str(want.value) and "content differs" in str(got.value)
    # another rule outcome as well: the changed file is still the error named
    manifest = json.loads((snap / MANIFEST).read_text("utf-8"))
    manifest["validation"]["future_quarantined"] = 3
    (snap / MANIFEST).write_text(json.dumps(manifest), "utf-8")
    other = ValidateConfig(reference_date=date(2030, 1, 1))
    with pytest.raises(StaleSnapshot) as got:
        check_snapshot(raw, snap, content=False, config=other)
    with pytest.raises(StaleSnapshot) as want:
        read_validated(raw, snap, tmp_path / "q", config=other)
    assert str(got.value) == str(want.value) and "content differs" in str(got.value)


def test_added_and_removed_tables_are_stale(tmp_path):
    raw = materialise("mixed_good_bad", tmp_path / "raw")
    snap = tmp_path / "snap"
    run_validate_snapshot(raw, snap)
    (raw / "feedback.csv").write_text("partner_id,submitted_at,score\n", "utf-8")
    with pytest.raises(StaleSnapshot, match="feedback.csv is new"):
        read_validated(raw, snap)
    (raw / "feedback.csv").unlink()
    run_validate_snapshot(raw, snap)
    extra = materialise("future_events", tmp_path / "raw2")
    shutil.copy(extra / "leads.csv", raw / "leads.csv")
    run_validate_snapshot(raw, snap)
    (raw / "leads.csv").unlink()
    with pytest.raises(StaleSnapshot, match="leads.csv is gone"):
        read_validated(raw, snap)
    # re-validating removes the gone table's Parquet files from the snapshot
    run_validate_snapshot(raw, snap)
    assert not (snap / "leads.parquet").exists()
    assert not (snap / "quarantine" / "leads.parquet").exists()


def test_damaged_snapshots_are_refused_in_one_line(tmp_path):
    raw = materialise("mixed_good_bad", tmp_path / "raw")
    snap = tmp_path / "snap"
    run_validate_snapshot(raw, snap)
    manifest = json.loads((snap / MANIFEST).read_text("utf-8"))

    def refused(pattern: str) -> None:
        with pytest.raises(StaleSnapshot, match=pattern) as info:
            read_validated(raw, snap)
        assert "\n" not in str(info.value)

    (snap / MANIFEST).write_text(json.dumps({**manifest, "contract_version": 0}), "utf-8")
    refused("contract v0")
    (snap / MANIFEST).write_text("{not json", "utf-8")
    refused("unreadable manifest")
    (snap / MANIFEST).write_text(json.dumps({**manifest, "package_version": "0.0.1"}), "utf-8")
    refused("partnerscore 0.0.1")
    (snap / MANIFEST).write_text(json.dumps({**manifest, "inputs": ["deals.csv"]}), "utf-8")
    refused("'inputs' is not a mapping")
    (snap / MANIFEST).write_text(json.dumps(manifest), "utf-8")
    (snap / "deals.parquet").write_bytes(b"PAR1 truncated")
    refused("deals.parquet: unreadable snapshot file")
    (snap / "deals.parquet").unlink()
    refused("deals.parquet is missing")
    (snap / MANIFEST).unlink()
    refused("not a validated snapshot")


def test_snapshot_with_reasons_of_an_earlier_wording_is_validated_again(tmp_path, capsys):
    """A snapshot replays the quarantine reasons of the day it was written: one written before
    the wording changed (no or another ``reasons_version``) would keep telling the user an id of
    a quarantined partner is unknown, so it is stale."""
    raw = materialise("quarantined_partner_cascade", tmp_path / "raw")
    run_validate_snapshot(raw, default_dir(raw))
    manifest = json.loads((default_dir(raw) / MANIFEST).read_text("utf-8"))
    old = {k: v for k, v in manifest.items() if k != "reasons_version"}  # as before the key
    (default_dir(raw) / MANIFEST).write_text(json.dumps(old), "utf-8")
    bad = default_dir(raw) / "quarantine" / "deals.parquet"
    frame = pd.read_parquet(bad)
    frame["reason"] = "unknown partner_id 'P4'"  # what that version wrote
    frame.to_parquet(bad)
    data = load_validated(raw, None, tmp_path / "q")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("note: ") and "worded as in version 1" in err
    assert data.quarantine["deals"]["reason"].iloc[0].startswith("partner_id 'P4' is quarantined")
    with pytest.raises(StaleSnapshot, match="validate again"):
        load_validated(raw, default_dir(raw), tmp_path / "q")


REF = date(2026, 6, 30)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    first=st.integers(-400, 60_000),
    second=st.integers(-400, 60_000),
    tolerance=st.integers(0, 3),
    case=st.sampled_from(["future_events", "mixed_good_bad", "far_dates"]),
)
def test_reuse_under_other_rules_is_refused_or_exact(
    first, second, tolerance, case, tmp_path_factory
):
    """Any pair of reference dates: the snapshot is refused as stale, or equals validating again.

    Dates span 1900..2190 so some rules quarantine the corpus' far-future events and some keep
    them; equal rules must always reuse.
    """
    tmp = tmp_path_factory.mktemp("rules")
    raw = materialise(case, tmp / "raw")
    old = ValidateConfig(reference_date=REF + timedelta(days=first))
    new = ValidateConfig(
        reference_date=REF + timedelta(days=second), future_tolerance_days=tolerance
    )
    run_validate_snapshot(raw, tmp / "snap", old)
    slow = load_raw(raw, tmp / "q_slow", config=new)
    try:
        fast = read_validated(raw, tmp / "snap", tmp / "q_fast", config=new)
    except StaleSnapshot as exc:
        assert "is stale" in str(exc)
        assert old.latest_plausible() != new.latest_plausible()
        return
    assert_same(fast, slow, tmp / "q_fast", tmp / "q_slow")


def test_snapshot_into_the_raw_folder_is_refused(tmp_path):
    """Its deals.parquet would sit beside deals.csv: the table would be given twice."""
    from partnerscore.features.core import PartnerscoreError

    raw = materialise("mixed_good_bad", tmp_path / "raw")
    with pytest.raises(PartnerscoreError, match="is the raw folder itself"):
        run_validate_snapshot(raw, raw)
    assert not (raw / "deals.parquet").exists()
    # refused before validating (it validated first, and wrote the quarantine, until 2026-12-06)
    assert not (raw / "quarantine").exists()
    with pytest.raises(PartnerscoreError, match="is the raw folder itself"):
        run_validate_snapshot(raw, raw / ".." / raw.name)  # the same folder by another name
    assert not (raw / "quarantine").exists()
