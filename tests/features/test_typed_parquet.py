"""Typed Parquet is validated on its native values, exactly like the same table as all-text CSV.

The slow twin of the typed path: one program with good and bad rows is written twice, as typed
Parquet (timestamps naive and timezone-aware, int ids, floats with NaN/inf, booleans with nulls,
a dictionary-encoded column) and as the all-text CSV a user would export from it. Validation must
give identical clean frames (values and dtypes), counts and reasons; reasons may differ only in
the quoted original value (``'2024-01-01 10:30:00'`` against ``'2024-01-01 12:30:00+02:00'``),
which names the text form.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from partnerscore.features.config import ValidateConfig
from partnerscore.features.validate import load_raw

CONFIG = ValidateConfig(reference_date="2026-06-30")
PLUS2 = timezone(timedelta(hours=2))


def typed_tables() -> dict[str, pa.Table]:
    signed = [datetime(2024, 1, d, 10, 30, tzinfo=PLUS2) for d in (1, 2, 3, 4)] + [None]
    partners = pa.table(
        {
            "partner_id": ["P1", "P2", "P3", "P4", "P5"],
            "partner_name": ["Acme", " Beta ", "Gamma", "Delta", "Eps"],
            "signed_at": pa.array(signed, type=pa.timestamp("us", tz="+02:00")),
            "tier": pa.array(["gold", "silver", "gold", "bronze", "gold"]).dictionary_encode(),
            "region": ["emea"] * 5,
            "industry": ["it"] * 5,
            "partner_type": ["msp", "si", "msp", "reseller", "si"],
            "market_alignment": [1.0, np.nan, 7.0, 3.5, 2.0],
            "channel_reach": pa.array([10, -3, 0, 5, 1], type=pa.int64()),
            "product_adoption_potential": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    created = [
        datetime(2024, 2, 1),
        datetime(1850, 1, 1),
        datetime(2190, 1, 1),
        datetime(2024, 3, 1, 8, 15, 42),
        datetime(2024, 3, 2),
        datetime(2024, 3, 3),
        datetime(2023, 6, 1),
    ]
    deals = pa.table(
        {
            "deal_id": pa.array([101, 102, 103, 104, 105, 101, 107], type=pa.int64()),
            "partner_id": ["P1", "P1", "P4", "P4", "P9", "P1", "P4"],
            "created_at": pa.array(created, type=pa.timestamp("us")),
            "closed_at": pa.array(
                [datetime(2024, 3, 1), None, None, None, None, None, datetime(2023, 5, 1)],
                type=pa.timestamp("us"),
            ),
            "amount": [100.5, 10.0, -5.0, np.inf, np.nan, 3.0, 250.0],
            "status": ["won", "open", "open", "open", "open", "open", "won"],
        }
    )
    trainings = pa.table(
        {
            "partner_id": ["P1", "P4", "P4", "P1"],
            "course_id": ["c1", "c2", "c3", "c4"],
            "enrolled_at": pa.array(
                [datetime(2024, 2, 1, tzinfo=UTC)] * 4, type=pa.timestamp("ms", tz="UTC")
            ),
            "completed_at": pa.array(
                [None, datetime(2024, 2, 3, tzinfo=UTC), None, datetime(2024, 1, 1, tzinfo=UTC)],
                type=pa.timestamp("ms", tz="UTC"),
            ),
            "is_certification": pa.array([True, False, None, True]),
        }
    )
    return {"partners": partners, "deals": deals, "trainings": trainings}


def as_text(column: pa.ChunkedArray) -> list[str]:
    """What a CSV export of the typed column holds: ISO dates (with offset when aware)."""
    out = []
    for value in column.to_pylist():
        if value is None or (isinstance(value, float) and np.isnan(value)):
            out.append("")
        elif isinstance(value, datetime):
            out.append(value.isoformat(sep=" "))
        elif isinstance(value, bool):
            out.append("true" if value else "false")
        else:
            out.append(str(value))
    return out


QUOTED = re.compile(r"'[^']*'")


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    text_dir, typed_dir = tmp_path_factory.mktemp("text"), tmp_path_factory.mktemp("typed")
    for name, table in typed_tables().items():
        pq.write_table(table, typed_dir / f"{name}.parquet")
        frame = pd.DataFrame({c: as_text(table[c]) for c in table.column_names})
        frame.to_csv(text_dir / f"{name}.csv", index=False)
    return (
        load_raw(text_dir, tmp_path_factory.mktemp("qt"), config=CONFIG),
        load_raw(typed_dir, tmp_path_factory.mktemp("qp"), config=CONFIG),
    )


def test_typed_parquet_equals_all_text_csv(both):
    text, typed = both
    assert list(typed.tables) == list(text.tables) == ["partners", "deals", "trainings"]
    for name in text.tables:
        pd.testing.assert_frame_equal(typed.tables[name], text.tables[name], check_exact=True)
        assert typed.report.tables[name].reasons == text.report.tables[name].reasons, name
        qt, qp = text.quarantine[name], typed.quarantine[name]
        assert qp["_row"].tolist() == qt["_row"].tolist(), name
        assert [QUOTED.sub("'?'", r) for r in qp["reason"]] == [
            QUOTED.sub("'?'", r) for r in qt["reason"]
        ], name
    assert typed.data_end == text.data_end


def test_every_rule_was_exercised(both):
    """The fixture really holds each kind of problem, checked on native values."""
    _, typed = both
    reasons = {code for t in typed.report.tables.values() for code in t.reasons}
    assert {
        "market_alignment above 5",
        "channel_reach below 0",
        "signed_at missing",
        "created_at out of range",
        "created_at in the future",
        "amount below 0",
        "amount not a number",
        "amount missing",
        "unknown partner_id",
        "duplicate deal_id",
        "created_at before signing",
        "closed_at before created_at",
        "is_certification missing",
        "completed_at before enrolled_at",
    } <= reasons, reasons
    partners = typed.tables["partners"]
    # +02:00 wall time converted to UTC; ids from int64 are text; dictionary column is text
    instant = typed_tables()["partners"]["signed_at"][0].as_py()  # aware, offset +02:00
    assert instant.utcoffset() == timedelta(hours=2)
    assert partners["signed_at"].iloc[0] == pd.Timestamp(instant).tz_convert(None)
    assert typed.tables["deals"]["deal_id"].tolist() == ["101"]
    assert partners["tier"].dtype == "str" and partners["partner_name"].iloc[0] == "Acme"
    bad = typed.quarantine["deals"]
    assert bad.loc[bad["deal_id"] == "103", "amount"].item() == "-5"  # typed value as text
