"""The raw-data contract v1 as declared (DESIGN.md) and its pandera schemas of clean typed frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest

from partnerscore.features.contract import REQUIRED_TABLES, TABLES, contract_markdown, schema

# table -> (required, unique key, columns in contract order), straight from DESIGN.md
EXPECTED = {
    "partners": (
        True,
        "partner_id",
        [
            "partner_id",
            "partner_name",
            "signed_at",
            "tier",
            "region",
            "industry",
            "partner_type",
            "market_alignment",
            "channel_reach",
            "product_adoption_potential",
        ],
    ),
    "deals": (
        True,
        "deal_id",
        ["deal_id", "partner_id", "created_at", "closed_at", "amount", "status"],
    ),
    "activities": (
        False,
        "activity_id",
        ["activity_id", "partner_id", "occurred_at", "activity_type", "response_hours"],
    ),
    "trainings": (
        False,
        None,
        ["partner_id", "course_id", "enrolled_at", "completed_at", "is_certification"],
    ),
    "portal_events": (False, None, ["partner_id", "occurred_at", "event_type"]),
    "marketing_commitments": (
        False,
        "commitment_id",
        ["commitment_id", "partner_id", "committed_at", "due_at", "delivered_at"],
    ),
    "leads": (
        False,
        "lead_id",
        ["lead_id", "partner_id", "created_at", "qualified_at", "converted_at"],
    ),
    "feedback": (False, None, ["partner_id", "submitted_at", "score"]),
}
NULLABLE = {
    "market_alignment",
    "channel_reach",
    "product_adoption_potential",
    "closed_at",
    "response_hours",
    "completed_at",
    "delivered_at",
    "qualified_at",
    "converted_at",
}
FIT = ("market_alignment", "channel_reach", "product_adoption_potential")
# columns a file may leave out (load_raw then returns them empty): the assessed fit, response times
OPTIONAL_COLUMNS = {*FIT, "response_hours"}


def test_tables_columns_keys_and_requirements_match_the_design():
    assert list(TABLES) == list(EXPECTED)  # partners first: every other table references it
    assert REQUIRED_TABLES == ("partners", "deals")
    for name, (required, key, columns) in EXPECTED.items():
        spec = TABLES[name]
        assert spec.name == name
        assert spec.required is required, name
        assert spec.key == key, name
        assert [c.name for c in spec.columns] == columns, name
        for col in spec.columns:
            assert col.nullable is (col.name in NULLABLE), (name, col.name)
            assert col.required is (col.name not in OPTIONAL_COLUMNS), (name, col.name)


def test_rules_match_the_design():
    def col(table, name):
        return TABLES[table].column(name)

    assert col("deals", "status").choices == ("open", "won", "lost")
    assert col("activities", "activity_type").choices == (
        "meeting",
        "call",
        "email",
        "qbr",
        "co_sell",
        "joint_event",
    )
    bounds = {
        ("partners", "market_alignment"): (1, 5),
        ("partners", "product_adoption_potential"): (1, 5),
        ("partners", "channel_reach"): (0, None),
        ("deals", "amount"): (0, None),
        ("activities", "response_hours"): (0, None),
        ("feedback", "score"): (1, 5),
    }
    for (table, name), (lo, hi) in bounds.items():
        assert (col(table, name).min, col(table, name).max) == (lo, hi), (table, name)
    assert TABLES["deals"].order == (("closed_at", "created_at"),)
    assert ("completed_at", "enrolled_at") in TABLES["trainings"].order
    assert {("qualified_at", "created_at"), ("converted_at", "created_at")} <= set(
        TABLES["leads"].order
    )
    for name, spec in TABLES.items():
        if name != "partners":  # every event table is dated no earlier than the signing
            assert len(spec.after_signing) == 1, name


def ts(*values, unit="us"):
    return pd.Series(pd.to_datetime(list(values)), dtype=f"datetime64[{unit}]")


def good_frames() -> dict[str, pd.DataFrame]:
    """One small clean typed frame per table, as load_raw returns them."""
    s = pd.StringDtype(na_value=np.nan)
    return {
        "partners": pd.DataFrame(
            {
                "partner_id": pd.Series(["P1", "P2"], dtype=s),
                "partner_name": pd.Series(["Acme", "Beta"], dtype=s),
                "signed_at": ts("2024-01-10", "2024-02-01"),
                "tier": pd.Series(["gold", "silver"], dtype=s),
                "region": pd.Series(["NA", "EMEA"], dtype=s),
                "industry": pd.Series(["software", "retail"], dtype=s),
                "partner_type": pd.Series(["reseller", "msp"], dtype=s),
                "market_alignment": [4.0, np.nan],
                "channel_reach": [120.0, 0.0],
                "product_adoption_potential": [np.nan, 5.0],
            }
        ),
        "deals": pd.DataFrame(
            {
                "deal_id": pd.Series(["D1", "D2"], dtype=s),
                "partner_id": pd.Series(["P1", "P2"], dtype=s),
                "created_at": ts("2024-02-01", "2024-03-01"),
                "closed_at": ts("2024-03-01", None),
                "amount": [1000.0, 0.0],
                "status": pd.Series(["won", "open"], dtype=s),
            }
        ),
        "activities": pd.DataFrame(
            {
                "activity_id": pd.Series(["A1"], dtype=s),
                "partner_id": pd.Series(["P1"], dtype=s),
                "occurred_at": ts("2024-02-01"),
                "activity_type": pd.Series(["qbr"], dtype=s),
                "response_hours": [np.nan],
            }
        ),
        "trainings": pd.DataFrame(
            {
                "partner_id": pd.Series(["P1", "P1"], dtype=s),
                "course_id": pd.Series(["C1", "C2"], dtype=s),
                "enrolled_at": ts("2024-02-01", "2024-02-01"),
                "completed_at": ts(None, "2024-02-03"),
                "is_certification": [True, False],
            }
        ),
        "portal_events": pd.DataFrame(
            {
                "partner_id": pd.Series(["P1"], dtype=s),
                "occurred_at": ts("2024-02-01"),
                "event_type": pd.Series(["login"], dtype=s),
            }
        ),
        "marketing_commitments": pd.DataFrame(
            {
                "commitment_id": pd.Series(["M1"], dtype=s),
                "partner_id": pd.Series(["P1"], dtype=s),
                "committed_at": ts("2024-02-01"),
                "due_at": ts("2024-03-01"),
                "delivered_at": ts(None),
            }
        ),
        "leads": pd.DataFrame(
            {
                "lead_id": pd.Series(["L1"], dtype=s),
                "partner_id": pd.Series(["P1"], dtype=s),
                "created_at": ts("2024-02-01"),
                "qualified_at": ts("2024-02-02"),
                "converted_at": ts(None),
            }
        ),
        "feedback": pd.DataFrame(
            {
                "partner_id": pd.Series(["P1"], dtype=s),
                "submitted_at": ts("2024-02-01"),
                "score": [4.5],
            }
        ),
    }


@pytest.mark.parametrize("table", list(EXPECTED))
def test_schema_accepts_clean_typed_frames(table):
    frame = good_frames()[table]
    schema(table).validate(frame, lazy=True)
    assert set(schema(table).columns) == set(EXPECTED[table][2])


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_schema_accepts_any_naive_datetime_resolution(unit):
    frame = good_frames()["deals"]
    frame = frame.assign(
        created_at=frame["created_at"].astype(f"datetime64[{unit}]"),
        closed_at=frame["closed_at"].astype(f"datetime64[{unit}]"),
    )
    schema("deals").validate(frame, lazy=True)


def test_schema_accepts_partners_without_the_optional_fit_columns():
    schema("partners").validate(good_frames()["partners"].drop(columns=list(FIT)), lazy=True)


def _set(frame: pd.DataFrame, column: str, values) -> pd.DataFrame:
    return frame.assign(**{column: values})


VIOLATIONS = [
    ("deals", "negative amount", lambda f: _set(f, "amount", [-1.0, 2.0])),
    ("deals", "amount as text", lambda f: _set(f, "amount", ["1000", "0"])),
    ("deals", "amount as int", lambda f: _set(f, "amount", [1000, 0])),
    ("deals", "unknown status", lambda f: _set(f, "status", ["won", "pending"])),
    (
        "deals",
        "duplicate key of one partner",  # another partner's row may hold the id (per partner)
        lambda f: _set(_set(f, "deal_id", ["D1", "D1"]), "partner_id", ["P1", "P1"]),
    ),
    ("deals", "missing id", lambda f: _set(f, "deal_id", ["D1", None])),
    ("deals", "missing created_at", lambda f: _set(f, "created_at", ts("2024-02-01", None))),
    ("deals", "extra column", lambda f: f.assign(note=["a", "b"])),
    ("deals", "missing column", lambda f: f.drop(columns="status")),
    ("deals", "dates as text", lambda f: _set(f, "created_at", ["2024-02-01", "2024-03-01"])),
    (
        "deals",
        "timezone-aware dates",
        lambda f: _set(f, "created_at", f["created_at"].dt.tz_localize("UTC")),
    ),
    (
        "deals",
        "date after 2199",
        lambda f: _set(f, "created_at", ts("2024-02-01", "2300-01-01")),
    ),
    ("partners", "alignment above 5", lambda f: _set(f, "market_alignment", [6.0, np.nan])),
    ("partners", "potential below 1", lambda f: _set(f, "product_adoption_potential", [0.0, 1.0])),
    ("partners", "negative reach", lambda f: _set(f, "channel_reach", [-1.0, 0.0])),
    ("partners", "duplicate partner", lambda f: _set(f, "partner_id", ["P1", "P1"])),
    ("partners", "missing name", lambda f: _set(f, "partner_name", ["Acme", None])),
    ("activities", "unknown type", lambda f: _set(f, "activity_type", ["webinar"])),
    ("activities", "negative response", lambda f: _set(f, "response_hours", [-0.5])),
    ("trainings", "boolean as text", lambda f: _set(f, "is_certification", ["yes", "no"])),
    ("feedback", "score below 1", lambda f: _set(f, "score", [0.0])),
    ("feedback", "score above 5", lambda f: _set(f, "score", [5.5])),
    ("leads", "duplicate lead", lambda f: pd.concat([f, f], ignore_index=True)),
]


@pytest.mark.parametrize(
    ("table", "mutate"), [(t, m) for t, _, m in VIOLATIONS], ids=[v[1] for v in VIOLATIONS]
)
def test_schema_rejects_contract_violations(table, mutate):
    frame = mutate(good_frames()[table])
    with pytest.raises((pa.errors.SchemaError, pa.errors.SchemaErrors)):
        schema(table).validate(frame, lazy=True)


def test_contract_markdown_documents_every_table_column_and_rule():
    text = contract_markdown()
    assert text.startswith("# Raw-data contract v1")
    for name, spec in TABLES.items():
        need = "required" if spec.required else "optional"
        assert f"## `{name}` ({need})" in text
        for col in spec.columns:
            assert f"| `{col.name}` |" in text, (name, col.name)
    for rule in (
        "one of open, won, lost",
        "one of meeting, call, email, qbr, co_sell, joint_event",
        ">= 0",
        "<= 5",
        "unique",
        "not before signed_at",
        "not before created_at",
    ):
        assert rule in text, rule
    for words in ("ISO 8601", "UTC", "quarantine/<table>.csv", "_row", "first otherwise valid row"):
        assert words in text, words
    # a Markdown table per table: header, separator, one row per column
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == sum(len(spec.columns) for spec in TABLES.values())
