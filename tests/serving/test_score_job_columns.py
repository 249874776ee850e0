"""The score job leaves raw columns it never reads out of its tables (``UNREAD_COLUMNS``):
features and anomaly flags are the same as with every column (the twin), and a snapshot
read with columns left out is checked as strictly as a whole read."""

import pandas as pd
import pyarrow.parquet as pq
import pytest

from partnerscore.features.anomaly import raw_anomalies
from partnerscore.features.config import MonitorConfig
from partnerscore.features.pipeline import build_scoring_frame
from partnerscore.features.validated import (
    StaleSnapshot,
    load_validated,
    read_validated,
    run_validate_snapshot,
)
from partnerscore.serving.score import UNREAD_COLUMNS


@pytest.fixture(scope="module")
def snapshot(raw_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("validated")
    run_validate_snapshot(raw_dir, out)
    return out


def test_unread_columns_change_no_feature_and_no_anomaly(raw_dir, snapshot, tmp_path):
    whole = read_validated(raw_dir, snapshot, tmp_path / "q1")
    lean = read_validated(raw_dir, snapshot, tmp_path / "q2", skip_columns=UNREAD_COLUMNS)
    for name, frame in whole.tables.items():
        skipped = [c for c in UNREAD_COLUMNS.get(name, ()) if c in frame]
        pd.testing.assert_frame_equal(lean.tables[name], frame.drop(columns=skipped))
    assert any(c in whole.tables[t] for t, cols in UNREAD_COLUMNS.items() for c in cols)
    for cut in (pd.Timestamp("2025-06-01"), pd.Timestamp("2026-01-15")):
        pd.testing.assert_frame_equal(
            build_scoring_frame(lean, cut), build_scoring_frame(whole, cut)
        )
        config = MonitorConfig(outlier_z=2.0, partner_z=1.0, partner_min_history=2)
        pd.testing.assert_frame_equal(
            raw_anomalies(lean.tables, cut, config), raw_anomalies(whole.tables, cut, config)
        )
    # validating instead of reusing a snapshot leaves the same columns out
    fresh = load_validated(raw_dir, None, tmp_path / "q3", skip_columns=UNREAD_COLUMNS)
    for name, frame in lean.tables.items():
        pd.testing.assert_frame_equal(fresh.tables[name], frame)


def test_a_snapshot_file_with_other_columns_is_stale_even_when_columns_are_skipped(
    raw_dir, snapshot, tmp_path
):
    copy = tmp_path / "validated"
    copy.mkdir()
    for path in snapshot.rglob("*"):
        target = copy / path.relative_to(snapshot)
        if path.is_dir():
            target.mkdir(exist_ok=True)
        else:
            target.write_bytes(path.read_bytes())
    table = pq.read_table(copy / "portal_events.parquet")
    pq.write_table(table.drop_columns(["event_type"]), copy / "portal_events.parquet")
    with pytest.raises(StaleSnapshot, match="portal_events.parquet: does not match"):
        read_validated(raw_dir, copy, tmp_path / "q", skip_columns=UNREAD_COLUMNS)
    with pytest.raises(StaleSnapshot, match="portal_events"):
        read_validated(raw_dir, copy, tmp_path / "q")
