"""Which snapshots a training run fitted on, logged compactly so a later gate can tell.

A run logs its holdout in full (``evaluation/holdout.parquet``), but its training rows only as
keys: ``partner_id``, ``as_of`` and a 64-bit fingerprint of every other column but the labels
and ``cohort`` (the features and ``signed_at``), ~24 bytes a row instead of ~70 columns. A row
of another training set is one of these when all three match: the same snapshot of the same
partner, built from the same data, whatever the horizon or onboarding ages of its build; a
namesake from another program or another data end differs in some feature and does not match.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TRAINING_ROWS_ARTIFACT = "evaluation/training_rows.parquet"
KEYS = ("partner_id", "as_of")
_COLUMNS_META = b"partnerscore.fingerprint_columns"
_MISSING_TEXT = "\x00missing"


def fingerprint_columns(frame: pd.DataFrame) -> list[str]:
    """The columns a row's fingerprint covers: all but the keys, labels and ``cohort``."""
    return sorted(
        c
        for c in frame.columns
        if c not in KEYS and c != "cohort" and not str(c).startswith("label_")
    )


def _canonical(column: pd.Series) -> pd.Series:
    """One representation per value whatever the dtype it was read with.

    Numbers and flags as float64, times as UTC nanoseconds, anything else as text (a missing
    value as one marker), so a parquet round trip or an integer read as float hashes alike.
    """
    if pd.api.types.is_datetime64_any_dtype(column):
        times = pd.to_datetime(column, utc=True).dt.tz_localize(None).astype("datetime64[ns]")
        return pd.Series(times.to_numpy().view("int64"), index=column.index)
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return pd.Series(pd.to_numeric(column).to_numpy(dtype=float), index=column.index)
    text = column.astype(object)
    return text.where(text.notna(), _MISSING_TEXT).astype(str)


def row_keys(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``partner_id`` (text), ``as_of`` (UTC nanoseconds) and ``fingerprint`` per row."""
    canonical = pd.DataFrame({c: _canonical(frame[c]) for c in columns}, index=frame.index)
    fingerprint = pd.util.hash_pandas_object(canonical, index=False).to_numpy(dtype=np.uint64)
    return pd.DataFrame(
        {
            "partner_id": frame["partner_id"].astype(str).to_numpy(),
            "as_of": _canonical(pd.to_datetime(frame["as_of"])).to_numpy(),
            "fingerprint": fingerprint,
        }
    )


def write_training_rows(frame: pd.DataFrame, path: Path) -> Path:
    """Write the keys of a training frame's rows, with the columns they cover, to ``path``."""
    columns = fingerprint_columns(frame)
    table = pa.Table.from_pandas(row_keys(frame, columns), preserve_index=False)
    meta = {**(table.schema.metadata or {}), _COLUMNS_META: "\n".join(columns).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def rows_in(path: Path, frame: pd.DataFrame) -> np.ndarray:
    """Which of ``frame``'s rows are rows whose keys :func:`write_training_rows` wrote.

    All False when ``frame`` lacks a column the logged fingerprints cover (another registry of
    features: not the same rows).
    """
    table = pq.read_table(path)
    columns = (table.schema.metadata or {}).get(_COLUMNS_META, b"").decode().split("\n")
    columns = [c for c in columns if c]
    if not len(frame) or any(c not in frame.columns for c in columns):
        return np.zeros(len(frame), dtype=bool)
    logged = table.to_pandas().drop_duplicates()
    mine = row_keys(frame.reset_index(drop=True), columns)
    got = mine.merge(logged, on=["partner_id", "as_of", "fingerprint"], how="left", indicator=True)
    return (got["_merge"] == "both").to_numpy()
