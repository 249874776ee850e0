"""Training-row keys (fingerprints) against a plain column-by-column comparison."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.training.row_keys import (
    _COLUMNS_META,
    fingerprint_columns,
    row_keys,
    rows_in,
    write_training_rows,
)

VALUES = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 1.0, 1e300, -1e-300, 5e-324]),
)


def reference(logged: pd.DataFrame, frame: pd.DataFrame, every_column: bool = False) -> np.ndarray:
    """Row i of ``frame`` is logged when some logged row has its keys and every value equal.

    The values compared are those of the columns both frames hold (none: no row); with
    ``every_column`` (the first format) those of every logged column, and no row when
    ``frame`` lacks one.
    """
    columns = [c for c in fingerprint_columns(logged) if c in fingerprint_columns(frame)]
    out = np.zeros(len(frame), dtype=bool)
    if not columns or (every_column and columns != fingerprint_columns(logged)):
        return out
    for i in range(len(frame)):
        row = frame.iloc[i]
        for j in range(len(logged)):
            other = logged.iloc[j]
            if str(row["partner_id"]) != str(other["partner_id"]):
                continue
            if pd.Timestamp(row["as_of"]) != pd.Timestamp(other["as_of"]):
                continue
            same = True
            for c in columns:
                a, b = row[c], other[c]
                if pd.isna(a) and pd.isna(b):
                    continue
                if pd.isna(a) or pd.isna(b) or a != b:
                    same = False
                    break
            if same:
                out[i] = True
                break
    return out


REGISTRIES = ("same", "drops tier", "adds y")
"""The feature registry a frame was built with: the logged one, one that drops a feature, one
that adds one."""


def frame_of(rows: list[tuple], registry: str = "same") -> pd.DataFrame:
    """Rows (partner, day, x, tier, y, label) as a training frame of ``registry``'s columns."""
    frame = pd.DataFrame(
        {
            "partner_id": [f"P{r[0]}" for r in rows],
            "as_of": pd.to_datetime("2026-01-01") + pd.to_timedelta([r[1] for r in rows], "D"),
            "signed_at": pd.to_datetime("2025-01-01"),
            "x": pd.array([r[2] for r in rows], dtype="float64"),
            "tier": pd.array([r[3] for r in rows], dtype=object),
            "y": pd.array([r[4] for r in rows], dtype="float64"),
            "label_revenue": [r[5] for r in rows],
            "cohort": "2025Q1",
        }
    )
    drop = {"same": ["y"], "drops tier": ["tier", "y"], "adds y": []}[registry]
    return frame.drop(columns=drop)


ROW = st.tuples(
    st.integers(0, 3),
    st.integers(0, 2),
    VALUES,
    st.sampled_from(["gold", "silver", None, "", "nan"]),
    VALUES,
    st.floats(0, 10),
)


def write_first_format(frame: pd.DataFrame, path):
    """The first format's writer (one fingerprint of the whole row), as runs logged it until
    2026-12-05: ``tests/training/data/training_rows_v1.parquet`` is one of its files."""
    columns = fingerprint_columns(frame)
    table = pa.Table.from_pandas(row_keys(frame, columns), preserve_index=False)
    meta = {**(table.schema.metadata or {}), _COLUMNS_META: "\n".join(columns).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


@settings(max_examples=80, deadline=None)
@given(
    logged=st.lists(ROW, max_size=8),
    asked=st.lists(ROW, max_size=8),
    theirs=st.sampled_from(REGISTRIES),
    mine=st.sampled_from(REGISTRIES),
    first_format=st.booleans(),
    data=st.data(),
)
def test_rows_in_matches_a_plain_comparison(
    tmp_path_factory, logged, asked, theirs, mine, first_format, data
):
    """Keys and every feature both frames hold (NaN equal to NaN, -0.0 to 0.0) and signed_at;
    labels ignored; the logged rows' registry and the asked rows' each the same, one without
    a feature, or one with another. A file of the first format matches as it always did."""
    logged_frame = frame_of(logged, theirs)
    # some asked rows are logged rows again, with other labels
    repeats = data.draw(st.lists(st.sampled_from(logged), max_size=4)) if logged else []
    asked_frame = frame_of(asked + [(*r[:-1], r[-1] + 1.0) for r in repeats], mine)
    folder = tmp_path_factory.mktemp("keys")
    write = write_first_format if first_format else write_training_rows
    got = rows_in(write(logged_frame, folder / "rows.parquet"), asked_frame)
    np.testing.assert_array_equal(got, reference(logged_frame, asked_frame, first_format))
    if not first_format or set(fingerprint_columns(logged_frame)) <= set(asked_frame):
        assert got[len(asked) :].all()  # a logged row asked again is found


def test_keys_survive_dtypes_and_a_parquet_round_trip(tmp_path):
    frame = frame_of([(1, 0, 3.0, "gold", 5.0, 1.0), (2, 1, None, None, None, 0.0)])
    path = write_training_rows(frame, tmp_path / "rows.parquet")
    again = frame.assign(
        x=frame["x"].astype("Float64"),  # nullable, as another reader may give it
        as_of=frame["as_of"].dt.tz_localize("UTC"),
        signed_at=frame["signed_at"].astype("datetime64[us]"),
        tier=frame["tier"].astype("category"),
    )
    np.testing.assert_array_equal(rows_in(path, again), [True, True])
    frame.to_parquet(tmp_path / "f.parquet")
    np.testing.assert_array_equal(rows_in(path, pd.read_parquet(tmp_path / "f.parquet")), [1, 1])
    zero = frame_of([(1, 0, 0.0, "gold", 5.0, 1.0)])
    path_zero = write_training_rows(zero, tmp_path / "zero.parquet")
    assert rows_in(path_zero, zero.assign(x=[-0.0])).all()  # -0.0 == 0.0, as in the reference
    changed = frame.assign(x=[3.0000001, np.nan])  # one feature moved: another build's row
    np.testing.assert_array_equal(rows_in(path, changed), [False, True])
    # another registry's frame, without a logged feature or with a new one: the columns both
    # hold decide (the first format found none of these rows without "tier")
    np.testing.assert_array_equal(rows_in(path, frame.drop(columns="tier")), [True, True])
    np.testing.assert_array_equal(rows_in(path, changed.drop(columns="tier")), [False, True])
    np.testing.assert_array_equal(rows_in(path, frame.drop(columns="x")), [True, True])
    np.testing.assert_array_equal(rows_in(path, changed.drop(columns="x")), [True, True])
    np.testing.assert_array_equal(rows_in(path, frame.assign(z=[1.0, 2.0])), [True, True])
    assert rows_in(path, frame.iloc[:0]).shape == (0,)
    keys_only = frame[["partner_id", "as_of", "label_revenue", "cohort"]]
    assert not rows_in(path, keys_only).any()  # no column to compare: a namesake or not?


def test_a_file_of_the_first_format_is_matched_as_before():
    """A run logged before 2026-12-05 wrote one fingerprint of the whole row: its rows are
    found when every value is the same, and none when the frame lacks a column it covered."""
    path = Path(__file__).parent / "data" / "training_rows_v1.parquet"
    frame = pd.DataFrame(
        {
            "partner_id": ["P1", "P2", "P3", "P9"],
            "as_of": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-01"]),
            "signed_at": pd.to_datetime("2025-01-01"),
            "x": [3.0, None, 0.0, 3.0],
            "tier": ["gold", None, "silver", "gold"],
            "label_revenue": [9.0, 9.0, 9.0, 9.0],
            "cohort": "2026Q1",
        }
    )
    np.testing.assert_array_equal(rows_in(path, frame), [True, True, True, False])
    np.testing.assert_array_equal(
        rows_in(path, frame.assign(x=[3.0, 1.0, -0.0, 3.0])), [1, 0, 1, 0]
    )
    np.testing.assert_array_equal(rows_in(path, frame.assign(z=1.0)), [1, 1, 1, 0])
    assert not rows_in(path, frame.drop(columns="tier")).any()


def test_an_unreadable_keys_file_reads_as_no_rows(tmp_path, monkeypatch):
    """A corrupt artifact leaves the gate as it was before the keys were logged, no traceback."""
    from partnerscore.training import registry

    garbage = tmp_path / "training_rows.parquet"
    garbage.write_bytes(b"PAR1 not a parquet file")
    monkeypatch.setattr(registry, "_read_artifact", lambda client, run, name, read: read(garbage))
    frame = frame_of([(1, 0, 3.0, "gold", 5.0, 1.0)])
    assert not registry.rows_in_logged_training(None, "run", frame).any()
