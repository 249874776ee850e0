"""Which snapshots a training run fitted on, logged compactly so a later gate can tell.

A run logs its holdout in full (``evaluation/holdout.parquet``), but its training rows only as
keys: ``partner_id``, ``as_of`` and, for every other column but the labels and ``cohort`` (the
features and ``signed_at``), a 64-bit hash of the row's value. A row of another training set
is one of these when its partner, ``as_of`` and every column both hold match: the same
snapshot of the same partner, built from the same data, whatever the horizon or onboarding
ages of its build; a namesake from another program or another data end differs in some
feature and does not match. That is the rule of the logged holdout's comparison
(``training/registry.py: rows_in_logged_holdout``), so the gate reads both alike.

Why a hash per column, not one per row. A newer feature registry adds or drops features, and
the gate then holds a challenger's holdout against a champion's training rows with other
columns. One fingerprint of the whole row (the first format, still read) can only be
recomputed when the asked frame has every column it covered: a champion whose registry had a
feature the challenger's dropped went undetected, its training rows scored as if unseen. Per
column, the match uses the columns both runs have. A fingerprint of a fixed subset that no
registry changes (``signed_at`` and the partner's attributes) was the alternative: the
partner's attributes reach a training set only as registry features (``tier``, ``region``,
``partners_market_alignment``, ...), so no subset is safe from a registry change but
``signed_at``, and with the keys alone a namesake from another program signed the same day
would match. The price is size: ~77 bytes a row on the demo's training set instead of ~14
(Parquet's dictionary encoding keeps repeated values, most counts and every missing value,
to one hash each; the training set itself is ~74 bytes a row).

A feature redefined under the same name (another window, say) differs in every row and
matches nothing, as in the holdout's comparison; the registry version changed with it.
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
"""Metadata of the first format: the columns of the one ``fingerprint`` column's hash."""
_HASHED_META = b"partnerscore.hashed_columns"
"""Metadata of the per-column format: the columns hashed, one uint64 column each, same name."""
_MISSING_TEXT = "\x00missing"


def fingerprint_columns(frame: pd.DataFrame) -> list[str]:
    """The columns whose values are logged: all but the keys, labels and ``cohort``."""
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


def _keys(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """``partner_id`` as text and ``as_of`` as UTC nanoseconds."""
    return {
        "partner_id": frame["partner_id"].astype(str).to_numpy(),
        "as_of": _canonical(pd.to_datetime(frame["as_of"])).to_numpy(),
    }


def row_keys(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``partner_id``, ``as_of`` and one ``fingerprint`` of ``columns`` per row (first format)."""
    canonical = pd.DataFrame({c: _canonical(frame[c]) for c in columns}, index=frame.index)
    fingerprint = pd.util.hash_pandas_object(canonical, index=False).to_numpy(dtype=np.uint64)
    return pd.DataFrame({**_keys(frame), "fingerprint": fingerprint})


def column_hashes(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``partner_id``, ``as_of`` and a 64-bit hash of each row's value of each of ``columns``.

    A value hashes alike whatever dtype it was read with (see :func:`_canonical`); NaN hashes
    like NaN and -0.0 like 0.0, as they compare.
    """
    hashed = {
        c: pd.util.hash_pandas_object(_canonical(frame[c]), index=False).to_numpy(np.uint64)
        for c in columns
    }
    return pd.DataFrame({**_keys(frame), **hashed})


def write_training_rows(frame: pd.DataFrame, path: Path) -> Path:
    """Write the keys and per-column value hashes of a training frame's rows to ``path``."""
    columns = fingerprint_columns(frame)
    table = pa.Table.from_pandas(column_hashes(frame, columns), preserve_index=False)
    meta = {**(table.schema.metadata or {}), _HASHED_META: "\n".join(columns).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def _listed(meta: dict, key: bytes) -> list[str] | None:
    """The column names a metadata entry lists (None when the entry is absent)."""
    if key not in meta:
        return None
    return [c for c in meta[key].decode().split("\n") if c]


def _combined(hashes: pd.DataFrame) -> np.ndarray:
    """One hash per row of some columns' value hashes (the same columns, in the same order)."""
    return pd.util.hash_pandas_object(hashes, index=False).to_numpy(dtype=np.uint64)


def rows_in(path: Path, frame: pd.DataFrame) -> np.ndarray:
    """Which of ``frame``'s rows are rows whose keys :func:`write_training_rows` wrote.

    A row matches on ``partner_id``, ``as_of`` and the value of every logged column ``frame``
    holds too (a newer or older registry of features: the features both have, and
    ``signed_at``). Files of the first format (one fingerprint of the whole row) are matched
    as they were: all False when ``frame`` lacks a column the fingerprints cover.
    """
    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    hashed = _listed(meta, _HASHED_META)
    if hashed is None:  # the first format
        columns = _listed(meta, _COLUMNS_META) or []
        if not len(frame) or any(c not in frame.columns for c in columns):
            return np.zeros(len(frame), dtype=bool)
        logged = table.to_pandas().drop_duplicates()
        mine = row_keys(frame.reset_index(drop=True), columns)
        on = ["partner_id", "as_of", "fingerprint"]
    else:
        asked = set(fingerprint_columns(frame))
        shared = [c for c in hashed if c in asked]
        if not len(frame) or not shared:
            return np.zeros(len(frame), dtype=bool)
        theirs = table.select(list(KEYS) + shared).to_pandas()
        logged = pd.DataFrame(
            {"partner_id": theirs["partner_id"].astype(str), "as_of": theirs["as_of"]}
        )
        logged["shared"] = _combined(theirs[shared])
        logged = logged.drop_duplicates()
        ours = column_hashes(frame.reset_index(drop=True), shared)
        mine = ours[list(KEYS)].assign(shared=_combined(ours[shared]))
        on = ["partner_id", "as_of", "shared"]
    got = mine.merge(logged, on=on, how="left", indicator=True)
    return (got["_merge"] == "both").to_numpy()
