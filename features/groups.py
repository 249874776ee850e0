"""Split a validated snapshot's rows by partner group, and read a group's tables back.

Every cross-row rule of the features, labels and scores is per partner, so a job can run on
groups of partners one at a time (``build`` on a large program, the Spark engine's tasks) and
give the whole job's result. The split reads each snapshot file in batches of
:data:`SPLIT_BATCH` rows with pyarrow (typed, no pandas) and appends each group's rows to one
Arrow IPC stream per (group, table, split task): ``<folder>/g<group>/<table>-<task>.arrow``. A
task that splits one chunk (some row groups) of a table numbers its rows (``_row``) so that the
chunks' parts can be merged back in input order; a task that splits a whole file writes no
numbers (its parts are in input order already, and every byte written costs).

The partner ids stay dictionary codes from the Parquet file to the group's file: they are read
from the file's dictionary pages (``read_dictionary``), each batch's groups are found from its
distinct ids, and a group's part keeps 4-byte codes into a dictionary of that group's ids. The
ids are decoded once, when a group is read back. Against decoding every id, hashing it to find
its group and writing it out in full, this writes ~36% fewer bytes (the page-cache writes are
most of the split's system time on the benchmark's VM; README, "Fourteenth round").
:func:`group_tables` reads a group's files back as the frames a whole read gives for that
group's partners (``pq.read_table(...).to_pandas()`` filtered), rows in input order.
Memory: one batch while splitting, one group while reading.

Two ways to assign groups, both a pure function of the id text (the same in every process):

- :func:`hash_groups`: a fixed-key SipHash of the id (groups of even size in expectation;
  the Spark engine's groups);
- :class:`RangeGroups`: contiguous ranges of the sorted ids, so results concatenated in
  group order are sorted by ``partner_id`` as a whole-table job's are (``build``).

Nothing happens at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

SPLIT_BATCH = 1_000_000
"""Rows per batch while splitting (the split's memory)."""

GroupOf = Callable[..., np.ndarray]
"""``group_of(ids, n_groups)`` -> int64 group per id (``ids`` an Arrow string array)."""


def _distinct(ids) -> tuple[np.ndarray, np.ndarray]:
    """(distinct ids as Python strings, each id's index into them) of an Arrow string array."""
    import pyarrow.compute as pc

    codes = pc.dictionary_encode(ids)
    if hasattr(codes, "combine_chunks"):  # a ChunkedArray (a table's column)
        codes = codes.combine_chunks()
    uniques = codes.dictionary.to_numpy(zero_copy_only=False).astype(object)
    return uniques, codes.indices.to_numpy(zero_copy_only=False)


def text_ids(ids):
    """Every id as its text (``str(p)``): an Arrow ``large_string`` array.

    Arrow arrays are cast and pandas columns converted as a column, without a Python object
    per id; any other iterable goes through ``str`` one id at a time.
    """
    import pyarrow as pa

    if isinstance(ids, pa.Array | pa.ChunkedArray):
        return ids.cast(pa.large_string())
    if isinstance(ids, pd.Series):
        return pa.array(ids.astype(str).array, pa.large_string())
    return pa.array([str(p) for p in ids], pa.large_string())


def hash_groups(ids, n_groups: int) -> np.ndarray:
    """Partner group of each id: a fixed-key SipHash of the text (the same in every process)."""
    uniques, index = _distinct(ids)
    group = (pd.util.hash_array(uniques, categorize=False) % np.uint64(n_groups)).astype(np.int64)
    return group[index]


class RangeGroups:
    """Groups of consecutive partner ids in sorted (code point) order, ``size`` ids each.

    Group ``g`` holds the ids from its first id (``starts[g]``) up to the next group's first;
    an id that is not among ``partner_ids`` (none in a validated snapshot) falls in the range
    it sorts into, group 0 if it sorts before every id.
    """

    def __init__(self, partner_ids: Iterable[str], size: int) -> None:
        if size < 1:
            raise ValueError(f"group size must be at least 1, got {size}")
        import pyarrow.compute as pc

        ids = pc.unique(text_ids(partner_ids))
        # Arrow orders text by its UTF-8 bytes: the code point order of sorted()
        firsts = ids.take(pc.sort_indices(ids).to_numpy()[::size]).to_pylist()
        self.starts = np.asarray(firsts or [""], dtype=object)
        self.n_groups = len(self.starts)

    def __call__(self, ids, n_groups: int | None = None) -> np.ndarray:
        """Group of each id (``n_groups`` is fixed by the ranges; accepted for the signature)."""
        uniques, index = _distinct(ids)
        group = np.searchsorted(self.starts, uniques, side="right").astype(np.int64) - 1
        return np.maximum(group, 0)[index]


def split_rows(
    spec: tuple, folder: str, n_groups: int, group_of: GroupOf = hash_groups
) -> tuple[str, int]:
    """Append a table chunk's rows to each partner group's Arrow file (one split task).

    Args:
        spec: ``(task index, table name, Parquet path, columns, row groups or None for all,
            number of the chunk's first row)``. With row groups the rows get an ``_row`` column
            (their number in the file); every task of a table split in chunks must give them.
        folder: The groups' folder.
        n_groups: Number of groups.
        group_of: Group of each id.

    Returns:
        (table name, rows split).
    """
    import pyarrow as pa
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    index, name, path, columns, row_groups, start = spec
    writers = {}
    offset = start
    try:
        reader = pq.ParquetFile(path, read_dictionary=["partner_id"])
        for batch in reader.iter_batches(
            batch_size=SPLIT_BATCH, row_groups=row_groups, columns=columns, use_threads=False
        ):
            n = batch.num_rows
            table = pa.Table.from_batches([batch])
            ids = table.column("partner_id").combine_chunks()
            if ids.null_count:  # a validated snapshot has none: validation quarantines them
                raise ValueError(f"{path}: a row without a partner_id cannot be split")
            at = table.schema.get_field_index("partner_id")
            table = table.drop_columns(["partner_id"])
            if row_groups is not None:  # one chunk of several: number the rows to merge them
                table = table.append_column(
                    "_row", pa.array(np.arange(offset + 1, offset + n + 1, dtype=np.int64))
                )
            offset += n
            codes = ids.indices.to_numpy()
            id_group = group_of(ids.dictionary, n_groups)
            by_id = _Grouped(id_group, n_groups)
            local = by_id.positions()  # each id's code in its group's dictionary
            rows = _Grouped(id_group[codes], n_groups)
            for g in rows.groups():
                taken = rows.members(g)
                part_ids = pa.DictionaryArray.from_arrays(
                    pa.array(local[codes[taken]]), ids.dictionary.take(pa.array(by_id.members(g)))
                )
                part = (
                    table.take(pa.array(taken)).add_column(at, "partner_id", part_ids)
                    if table.num_columns  # (a table of ids alone has no rows once they go)
                    else pa.table({"partner_id": part_ids})
                )
                if g not in writers:
                    target = Path(folder) / f"g{g:05d}"
                    target.mkdir(parents=True, exist_ok=True)
                    # a stream: every part brings its own dictionary (a file allows only one)
                    writers[g] = ipc.new_stream(
                        str(target / f"{name}-{index:05d}.arrow"), part.schema
                    )
                writers[g].write_table(part)
    finally:
        for writer in writers.values():
            writer.close()
    return name, offset - start


class _Grouped:
    """Positions ``0..n-1`` ordered by group (stable): the members of each group, in order."""

    def __init__(self, group: np.ndarray, n_groups: int) -> None:
        self.order = np.argsort(group, kind="stable")
        self.bounds = np.searchsorted(group[self.order], np.arange(n_groups + 1))

    def groups(self) -> np.ndarray:
        """The groups with members, ascending."""
        return np.flatnonzero(np.diff(self.bounds))

    def members(self, g: int) -> np.ndarray:
        """Group ``g``'s positions, ascending."""
        return self.order[self.bounds[g] : self.bounds[g + 1]]

    def positions(self) -> np.ndarray:
        """Each position's rank among its group's members (int32)."""
        rank = np.empty(len(self.order), dtype=np.int32)
        starts = np.repeat(self.bounds[:-1], np.diff(self.bounds))
        rank[self.order] = np.arange(len(self.order), dtype=np.int32) - starts
        return rank


def _decoded_ids(table):
    """``table`` with its dictionary-coded ``partner_id`` column decoded (:func:`split_rows`)."""
    import pyarrow as pa

    at = table.schema.get_field_index("partner_id")
    column = table.column(at)
    if not pa.types.is_dictionary(column.type):
        return table
    dense = pa.chunked_array(
        [chunk.dictionary.take(chunk.indices) for chunk in column.chunks],
        column.type.value_type,
    )
    return table.set_column(at, "partner_id", dense)


def group_tables(folder: str, group: int, empty: dict) -> dict[str, pd.DataFrame]:
    """A group's rows of every table, in input order, as ``pq.read_table(...).to_pandas()``.

    Args:
        folder: The groups' folder (:func:`split_rows`).
        group: The group.
        empty: Table -> an empty Arrow table of its columns (the frame of a group without rows).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.ipc as ipc

    where = Path(folder) / f"g{group:05d}"
    out = {}
    for name, schema_table in empty.items():
        # memory-mapped: the rows are copied once, into the frame (not first into Arrow buffers;
        # only the partner ids are decoded into new ones)
        parts = [
            _decoded_ids(ipc.open_stream(pa.memory_map(str(path))).read_all())
            for path in sorted(where.glob(f"{name}-*.arrow"))
        ]
        if not parts:
            out[name] = schema_table.to_pandas()
            continue
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        if len(parts) > 1:  # chunks of one table: merged back into input order
            table = table.take(pc.sort_indices(table["_row"]))
        if "_row" in table.column_names:
            table = table.drop_columns(["_row"])
        out[name] = table.to_pandas()
    return out


__all__ = [
    "SPLIT_BATCH",
    "RangeGroups",
    "group_tables",
    "hash_groups",
    "split_rows",
    "text_ids",
]
