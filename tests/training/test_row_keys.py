"""Training-row keys (fingerprints) against a plain column-by-column comparison."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.training.row_keys import fingerprint_columns, rows_in, write_training_rows

VALUES = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 1.0, 1e300, -1e-300, 5e-324]),
)


def reference(logged: pd.DataFrame, frame: pd.DataFrame) -> np.ndarray:
    """Row i of ``frame`` is logged when some logged row has its keys and every value equal."""
    columns = fingerprint_columns(logged)
    out = np.zeros(len(frame), dtype=bool)
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


def frame_of(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "partner_id": [f"P{p}" for p, *_ in rows],
            "as_of": pd.to_datetime("2026-01-01") + pd.to_timedelta([d for _, d, *_ in rows], "D"),
            "signed_at": pd.to_datetime("2025-01-01"),
            "x": pd.array([x for *_, x, _, _ in rows], dtype="float64"),
            "tier": pd.array([t for *_, t, _ in rows], dtype=object),
            "label_revenue": [r for *_, r in rows],
            "cohort": "2025Q1",
        }
    )


ROW = st.tuples(
    st.integers(0, 3),
    st.integers(0, 2),
    VALUES,
    st.sampled_from(["gold", "silver", None, "", "nan"]),
    st.floats(0, 10),
)


@settings(max_examples=60, deadline=None)
@given(logged=st.lists(ROW, max_size=8), asked=st.lists(ROW, max_size=8), data=st.data())
def test_rows_in_matches_a_plain_comparison(tmp_path_factory, logged, asked, data):
    """Keys, every feature (NaN equal to NaN, -0.0 to 0.0) and signed_at; labels ignored."""
    logged_frame = frame_of(logged)
    # some asked rows are logged rows again, with other labels
    repeats = data.draw(st.lists(st.sampled_from(logged), max_size=4)) if logged else []
    asked_frame = frame_of(asked + [(*r[:-1], r[-1] + 1.0) for r in repeats])
    path = write_training_rows(logged_frame, tmp_path_factory.mktemp("keys") / "rows.parquet")
    got = rows_in(path, asked_frame)
    np.testing.assert_array_equal(got, reference(logged_frame, asked_frame))
    assert got[len(asked) :].all()  # a logged row asked again is found


def test_keys_survive_dtypes_and_a_parquet_round_trip(tmp_path):
    frame = frame_of([(1, 0, 3.0, "gold", 1.0), (2, 1, None, None, 0.0)])
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
    zero = frame_of([(1, 0, 0.0, "gold", 1.0)])
    path_zero = write_training_rows(zero, tmp_path / "zero.parquet")
    assert rows_in(path_zero, zero.assign(x=[-0.0])).all()  # -0.0 == 0.0, as in the reference
    changed = frame.assign(x=[3.0000001, np.nan])  # one feature moved: another build's row
    np.testing.assert_array_equal(rows_in(path, changed), [False, True])
    # a frame without a fingerprinted column cannot hold these rows
    assert not rows_in(path, frame.drop(columns="tier")).any()
    assert rows_in(path, frame.iloc[:0]).shape == (0,)


def test_an_unreadable_keys_file_reads_as_no_rows(tmp_path, monkeypatch):
    """A corrupt artifact leaves the gate as it was before the keys were logged, no traceback."""
    from partnerscore.training import registry

    garbage = tmp_path / "training_rows.parquet"
    garbage.write_bytes(b"PAR1 not a parquet file")
    monkeypatch.setattr(registry, "_read_artifact", lambda client, run, name, read: read(garbage))
    frame = frame_of([(1, 0, 3.0, "gold", 1.0)])
    assert not registry.rows_in_logged_training(None, "run", frame).any()
