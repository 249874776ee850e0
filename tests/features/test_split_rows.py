"""The partner-group split read back equals a filtered whole read, on random tables.

:func:`~partnerscore.features.groups.split_rows` keeps the partner ids as dictionary codes from
the Parquet file to the group files (a per-group dictionary per batch) and
:func:`~partnerscore.features.groups.group_tables` decodes them. Its slow, obviously correct
twin: ``pq.read_table(path).to_pandas()`` and a boolean filter by each row's group. Hypothesis
draws the ids (any text, repeated, unsorted), the Parquet layout (row-group size, dictionary
pages or plain ones, ``string`` or ``large_string``), the split's batch size (batches that
straddle row groups, so a batch's dictionary comes from two of them), whole-file tasks or one
task per row group (rows numbered and merged back), range or hash groups.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partnerscore.features import groups
from partnerscore.features.groups import RangeGroups, group_tables, hash_groups, split_rows

IDS = st.text(min_size=0, max_size=6)


@st.composite
def tables(draw):
    ids = draw(st.lists(IDS, min_size=1, max_size=12, unique=True))
    n = draw(st.integers(0, 60))
    rows = draw(st.lists(st.sampled_from(ids), min_size=n, max_size=n))
    stamps = draw(
        st.lists(st.one_of(st.none(), st.integers(-(2**62), 2**62)), min_size=n, max_size=n)
    )
    amounts = draw(
        st.lists(
            st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
            min_size=n,
            max_size=n,
        )
    )
    text = pa.large_string() if draw(st.booleans()) else pa.string()
    table = pa.table(
        {
            "amount": pa.array(amounts, pa.float64()),
            "partner_id": pa.array(rows, text),
            "occurred_at": pa.array(stamps, pa.timestamp("ns")),
            "status": pa.array([f"s{len(p) % 3}" for p in rows], text),
        }
    )
    return ids, table


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    drawn=tables(),
    row_group=st.integers(1, 25),
    dictionary=st.booleans(),
    batch=st.integers(1, 30),
    chunked=st.booleans(),
    by_range=st.booleans(),
    n_groups=st.integers(1, 4),
)
def test_split_read_back_equals_a_filtered_whole_read(
    tmp_path_factory, monkeypatch, drawn, row_group, dictionary, batch, chunked, by_range, n_groups
):
    ids, table = drawn
    folder = tmp_path_factory.mktemp("split")
    path = folder / "events.parquet"
    pq.write_table(table, path, row_group_size=row_group, use_dictionary=dictionary)
    monkeypatch.setattr(groups, "SPLIT_BATCH", batch)
    if by_range:
        group_of = RangeGroups(ids, max(1, -(-len(ids) // n_groups)))
        n_groups = group_of.n_groups
    else:
        group_of = hash_groups
    columns = ["partner_id", "occurred_at", "amount", "status"]
    meta = pq.ParquetFile(path).metadata
    if chunked:  # the Spark engine's tasks: one per row group, rows numbered
        start = 0
        for index in range(meta.num_row_groups):
            spec = (index, "events", str(path), columns, [index], start)
            split_rows(spec, str(folder / "rows"), n_groups, group_of)
            start += meta.row_group(index).num_rows
    else:  # build's and score's tasks: the whole file
        spec = (0, "events", str(path), columns, None, 0)
        assert split_rows(spec, str(folder / "rows"), n_groups, group_of) == ("events", len(table))
    whole = pq.read_table(path, columns=columns)
    expected = whole.to_pandas()
    group = group_of(whole.column("partner_id"), n_groups)
    empty = {"events": whole.schema.empty_table()}
    seen = 0
    for g in range(n_groups):
        got = group_tables(str(folder / "rows"), g, empty)["events"]
        want = expected[group == g].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        assert list(got.columns) == columns
        seen += len(got)
    assert seen == len(table)


def test_split_refuses_a_row_without_partner(tmp_path):
    """A validated snapshot has no such row; a file with one stops the split in one line."""
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({"partner_id": ["P1", None], "x": [1, 2]}), path)
    with pytest.raises(ValueError, match="without a partner_id"):
        split_rows((0, "events", str(path), None, None, 0), str(tmp_path / "rows"), 2)


def test_group_files_hold_codes_not_ids(tmp_path):
    """The point of the dictionary path: the group files store each id once per part."""
    import pyarrow.ipc as ipc

    path = tmp_path / "events.parquet"
    ids = np.repeat([f"P{i:06d}" for i in range(50)], 200)
    pq.write_table(pa.table({"partner_id": pa.array(ids, pa.large_string())}), path)
    split_rows((0, "events", str(path), None, None, 0), str(tmp_path / "rows"), 1)
    (part,) = (tmp_path / "rows" / "g00000").glob("events-*.arrow")
    stored = ipc.open_stream(pa.memory_map(str(part))).read_all().column("partner_id")
    assert pa.types.is_dictionary(stored.type)
    assert sum(len(chunk.dictionary) for chunk in stored.chunks) == 50
