"""Chunked date parsing equals the obviously-correct whole-column parse, value for value.

The fast path casts with Arrow's strict ISO 8601 parser and sends only the chunks holding other
values to pandas; the slow twin parses the whole column with pandas' ISO 8601 parser whenever
Arrow cannot take all of it. Hypothesis mixes naive and offset values, forms only pandas accepts,
impossible and far dates, sub-microsecond fractions and garbage, with tiny chunks.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.features import validate
from partnerscore.features.validate import _Source, _to_dates

POOL = [
    "2024-03-01",
    "2024-03-01 14:30",
    "2024-03-01T14:30:00",
    "2024-03-01T14:30:00.123",
    "2024-03-01 14",
    "2024-03-01T14:30:00+02:00",
    "2024-03-01T14:30Z",
    "2024-03-01T14:30:00+0200",
    "2024-03-01T14Z",
    "2024-03-01T14:30:00.5-05:00",
    "2024-3-1",
    "20240301",
    "2024-02-30",
    "2024-03-01T24:00:00",
    "2024-03-01 14:30:00.123456789",
    "2024-03-01T14:30:00 +02:00",
    "9999-12-31",
    "1850-06-01",
    "0001-01-01",
    "not a date",
    "",
]


def reference(values: list[str]) -> list:
    """Whole column: Arrow if it takes every value, else pandas for every value."""
    text = pa.chunked_array([pa.array(values, type=pa.string())])
    for target in (pa.timestamp("us"), pa.timestamp("us", tz="UTC")):
        try:
            out = text.cast(target).cast(pa.timestamp("us")).to_numpy(zero_copy_only=False)
            return pd.Series(out).tolist()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    parsed = pd.to_datetime(text.to_pandas(), errors="coerce", utc=True, format="ISO8601")
    return pd.Series(parsed.dt.tz_convert(None).to_numpy()).tolist()


def parse(values: list[str]) -> list:
    return pd.Series(_to_dates(_Source(pa.chunked_array([pa.array(values)])))).tolist()


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        (pd.isna(x) and pd.isna(y)) or (not pd.isna(x) and not pd.isna(y) and x == y)
        for x, y in zip(a, b, strict=True)
    )


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.sampled_from(POOL), min_size=1, max_size=40),
    chunk=st.sampled_from([1, 3, 8, 1 << 16]),
)
def test_chunked_parse_equals_whole_column(values, chunk):
    original = validate.DATE_CHUNK
    validate.DATE_CHUNK = chunk
    try:
        fast = parse(values)
    finally:
        validate.DATE_CHUNK = original
    assert same(fast, reference(values)), (values, fast)


@pytest.mark.parametrize("bad", ["2024-3-1", "garbage", "2024-03-01T10:00:00+02:00"])
def test_one_odd_value_costs_one_chunk(bad, monkeypatch):
    """A column of clean values and one odd one: pandas sees only the odd value's chunk."""
    seen = []
    real = validate._pandas_dates
    monkeypatch.setattr(validate, "_pandas_dates", lambda t: seen.append(len(t)) or real(t))
    monkeypatch.setattr(validate, "DATE_CHUNK", 1000)
    values = ["2024-03-01 10:00:00"] * 5000
    values[2500] = bad
    out = parse(values)
    assert seen == [1000]
    assert same(out, reference(values))
    assert pd.isna(out[2500]) == (bad == "garbage")
