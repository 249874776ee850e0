"""Raw-data contract v1: the tables, their columns and rules, and pandera schemas of clean frames.

The contract is declared once here (:data:`TABLES`); validation (``features.validate``) enforces
it row by row and the pandera schemas (:func:`schema`) check the typed frames it produces.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import pandas as pd

if TYPE_CHECKING:
    import pandera.pandas as pa


def load_pandera():
    """``pandera.pandas``, imported on first use.

    ~1 s of CPU that a job reusing a validated snapshot never needs (it checks no schema).
    pandera imports pandas-on-Spark (pyspark.pandas) whenever pyspark is installed: seconds of
    imports and a pandas-version warning on every command. The contract never uses it (the
    Spark engine uses pyspark.sql only), so that one import is refused while pandera loads.
    """
    refused = "pyspark.pandas" not in sys.modules
    if refused:
        sys.modules["pyspark.pandas"] = None  # type: ignore[assignment]
    try:
        import pandera.pandas as pa
    finally:
        if refused:
            del sys.modules["pyspark.pandas"]
    return pa


CONTRACT_VERSION = 1
"""Version of this contract (stamped on validated snapshots; another version is not reused)."""

Kind = Literal["id", "str", "category", "date", "float", "bool"]

ACTIVITY_TYPES = ("meeting", "call", "email", "qbr", "co_sell", "joint_event")
DEAL_STATUSES = ("open", "won", "lost")
BOOLEAN_TRUE = ("true", "1", "yes")
BOOLEAN_FALSE = ("false", "0", "no")
# plausible event times: a sentinel such as 9999-12-31 is a row problem (and would not fit
# datetime64[ns]); FIRST_DATE inclusive, END_DATE exclusive
FIRST_DATE = pd.Timestamp("1900-01-01")
END_DATE = pd.Timestamp("2200-01-01")

FILE_RULES = (
    "One file per table in one folder: `<table>.csv` (UTF-8, header row; a byte-order mark and "
    "CRLF line ends are fine) or `<table>.parquet`, never both. Other files are ignored.",
    "A missing required table or column, an empty or unreadable file, a column named twice, or a "
    "required table without data rows stops validation with a one-line error.",
    "Values are stripped; only an empty cell is missing (`NA`, `null` are text). Unknown columns "
    "are allowed: kept out of the typed tables, preserved in quarantine files.",
    "Dates are ISO 8601 (`2024-03-01`, `2024-03-01 14:30`, `2024-03-01T14:30:00+02:00`); values "
    "with an offset are converted to UTC, values without one are taken as UTC (`today` and "
    "`now` are not dates); years "
    f"{FIRST_DATE.year}-{END_DATE.year - 1}. Booleans: "
    + "/".join(BOOLEAN_TRUE)
    + " or "
    + "/".join(BOOLEAN_FALSE)
    + " (any case).",
    "Categorical text ignores case. An enumerated value equal to an allowed one but for case is "
    "read as the contract's spelling (`WON` as `won`); any other value is quarantined. In a free "
    "category (tier, region, industry, partner_type, event_type) spellings that differ only by "
    "case are one value, spelt as the batch's most frequent spelling (a tie: the first in "
    "code-point order, `EMEA` before `emea`); the validation summary lists the values read in "
    "another case (six per table, then how many more; `--json` and a validated snapshot's "
    "manifest hold every one).",
    "A row that breaks a rule goes to `quarantine/<table>.csv` with its data-row number (`_row`, "
    "1 = first row after the header) and every reason; other rows are used. A record id "
    "(deal_id, activity_id, commitment_id, lead_id) is unique per partner: a partner's duplicate "
    "ids keep the first otherwise valid row, and rows of different partners holding one id are "
    "all kept (one partner's rows never quarantine another's); partner_id is unique. In a "
    "table without an id column (trainings, portal_events, feedback) a row whose contract "
    "columns all read the same as an earlier one's is a duplicate too (`duplicate of row N`). "
    "Rows of a partner missing from (or quarantined in) "
    "`partners` are quarantined. A deal that is won or lost needs `closed_at`; an open one must "
    "not have it. A converted lead needs `qualified_at` (created, then qualified, then "
    "converted).",
)


@dataclass(frozen=True)
class Column:
    """One contract column.

    Attributes:
        name: Column name.
        kind: How values are parsed.
        nullable: Whether empty values are allowed.
        required: Whether the column must be present in the file.
        choices: Allowed values (matched in any case, read as spelt here); None for a free
            category (any value; spellings differing only by case are one value).
        min: Inclusive lower bound (numbers).
        max: Inclusive upper bound (numbers).
        description: Meaning, for the published contract.
        observed: Whether the column records something that happened (counts toward the data
            end); planned dates such as ``due_at`` do not.
    """

    name: str
    kind: Kind
    nullable: bool = False
    required: bool = True
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    description: str = ""
    observed: bool = True


@dataclass(frozen=True)
class TableSpec:
    """One contract table.

    Attributes:
        name: Table (and file stem) name.
        required: Whether the table must be present.
        columns: Columns in contract order.
        key: Column whose values must be unique, if any (per partner in a table of partners'
            rows: another partner's row may hold the same id).
        after_signing: Date columns that cannot precede the partner's signed_at.
        order: (later, earlier) date-column pairs: later may not precede earlier.
        description: What a row is.
    """

    name: str
    required: bool
    columns: tuple[Column, ...]
    key: str | None = None
    after_signing: tuple[str, ...] = ()
    order: tuple[tuple[str, str], ...] = ()
    description: str = ""
    references_partner: bool = field(default=True)

    def column(self, name: str) -> Column:
        """The column called ``name``."""
        return next(c for c in self.columns if c.name == name)


def _pid(description: str = "Partner the row belongs to (must exist in partners).") -> Column:
    return Column("partner_id", "id", description=description)


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "partners",
            required=True,
            references_partner=False,
            key="partner_id",
            description="One row per partner: master data and assessed fit.",
            columns=(
                Column("partner_id", "id", description="Unique partner identifier."),
                Column("partner_name", "str", description="Display name (untrusted text)."),
                Column("signed_at", "date", description="When the partnership was signed."),
                Column("tier", "category", description="Program tier."),
                Column("region", "category", description="Sales region."),
                Column("industry", "category", description="Main industry served."),
                Column("partner_type", "category", description="reseller, referral, msp, si."),
                Column(
                    "market_alignment",
                    "float",
                    True,
                    False,
                    min=1,
                    max=5,
                    description="Assessed market alignment, 1-5.",
                ),
                Column(
                    "channel_reach",
                    "float",
                    True,
                    False,
                    min=0,
                    description="Assessed reachable customer accounts, >= 0.",
                ),
                Column(
                    "product_adoption_potential",
                    "float",
                    True,
                    False,
                    min=1,
                    max=5,
                    description="Assessed product adoption potential, 1-5.",
                ),
            ),
        ),
        TableSpec(
            "deals",
            required=True,
            key="deal_id",
            after_signing=("created_at",),
            order=(("closed_at", "created_at"),),
            description="Deals registered by partners.",
            columns=(
                Column("deal_id", "id", description="Unique deal identifier."),
                _pid(),
                Column("created_at", "date", description="When the deal was registered."),
                Column(
                    "closed_at",
                    "date",
                    nullable=True,
                    description="When it was won or lost; empty while open.",
                ),
                Column("amount", "float", min=0, description="Deal value, >= 0."),
                Column(
                    "status",
                    "category",
                    choices=DEAL_STATUSES,
                    description="open, won or lost; won/lost need closed_at.",
                ),
            ),
        ),
        TableSpec(
            "activities",
            required=False,
            key="activity_id",
            after_signing=("occurred_at",),
            description="CRM activity log.",
            columns=(
                Column("activity_id", "id", description="Unique activity identifier."),
                _pid(),
                Column("occurred_at", "date", description="When it happened."),
                Column(
                    "activity_type",
                    "category",
                    choices=ACTIVITY_TYPES,
                    description=", ".join(ACTIVITY_TYPES) + ".",
                ),
                Column(
                    "response_hours",
                    "float",
                    True,
                    False,
                    min=0,
                    description="Partner response time in hours, >= 0.",
                ),
            ),
        ),
        TableSpec(
            "trainings",
            required=False,
            after_signing=("enrolled_at",),
            order=(("completed_at", "enrolled_at"),),
            description="Training enrolments and completions.",
            columns=(
                _pid(),
                Column("course_id", "str", description="Course identifier."),
                Column("enrolled_at", "date", description="Enrolment time."),
                Column(
                    "completed_at",
                    "date",
                    nullable=True,
                    description="Completion time; empty if not completed.",
                ),
                Column("is_certification", "bool", description="true/false, 1/0, yes/no."),
            ),
        ),
        TableSpec(
            "portal_events",
            required=False,
            after_signing=("occurred_at",),
            description="Partner-portal events.",
            columns=(
                _pid(),
                Column("occurred_at", "date", description="Event time."),
                Column("event_type", "category", description="Event type (free vocabulary)."),
            ),
        ),
        TableSpec(
            "marketing_commitments",
            required=False,
            key="commitment_id",
            after_signing=("committed_at",),
            order=(("due_at", "committed_at"), ("delivered_at", "committed_at")),
            description="Joint-marketing commitments and their delivery.",
            columns=(
                Column("commitment_id", "id", description="Unique commitment identifier."),
                _pid(),
                Column("committed_at", "date", description="When it was committed."),
                Column("due_at", "date", description="When it is due.", observed=False),
                Column(
                    "delivered_at",
                    "date",
                    nullable=True,
                    description="When delivered; empty if not (yet).",
                ),
            ),
        ),
        TableSpec(
            "leads",
            required=False,
            key="lead_id",
            after_signing=("created_at",),
            order=(
                ("qualified_at", "created_at"),
                ("converted_at", "created_at"),
                ("converted_at", "qualified_at"),
            ),
            description="Leads registered by partners.",
            columns=(
                Column("lead_id", "id", description="Unique lead identifier."),
                _pid(),
                Column("created_at", "date", description="Registration time."),
                Column("qualified_at", "date", nullable=True, description="Qualification."),
                Column(
                    "converted_at",
                    "date",
                    nullable=True,
                    description="Conversion; needs qualified_at (no direct conversion).",
                ),
            ),
        ),
        TableSpec(
            "feedback",
            required=False,
            after_signing=("submitted_at",),
            description="Partner feedback surveys.",
            columns=(
                _pid(),
                Column("submitted_at", "date", description="Submission time."),
                Column("score", "float", min=1, max=5, description="Score 1-5."),
            ),
        ),
    )
}

REQUIRED_TABLES = tuple(name for name, spec in TABLES.items() if spec.required)


def _naive_datetime(series) -> bool:
    """Timezone-naive datetime64 of any resolution (s, ms, us, ns)."""
    return pd.api.types.is_datetime64_dtype(series.dtype)  # False for timezone-aware


def _pa_column(col: Column) -> pa.Column:
    pa = load_pandera()
    checks = []
    if col.choices:
        checks.append(pa.Check.isin(list(col.choices)))
    if col.min is not None:
        checks.append(pa.Check.ge(col.min))
    if col.max is not None:
        checks.append(pa.Check.le(col.max))
    if col.kind == "date":
        # no fixed resolution (pandas 3 parses to us, the simulator writes s): check, never coerce
        checks += [
            pa.Check(_naive_datetime, name="naive_datetime64", error="timezone-naive datetime64"),
            pa.Check.ge(FIRST_DATE),
            pa.Check.lt(END_DATE),
        ]
    dtype = {"id": str, "str": str, "category": str, "date": None, "float": float, "bool": bool}
    return pa.Column(
        dtype[col.kind],
        checks=checks or None,
        nullable=col.nullable,
        required=col.required,
        unique=False,
    )


def _unique_columns(spec: TableSpec) -> list[str] | None:
    """The columns a clean frame's rows are unique in, or None.

    The key; per partner in a table of partners' rows (a record id is unique per partner).
    """
    if not spec.key:
        return None
    return ["partner_id", spec.key] if spec.references_partner else [spec.key]


def schema(table: str) -> pa.DataFrameSchema:
    """The pandera schema every clean (validated, typed) frame of ``table`` satisfies."""
    spec = TABLES[table]
    pa = load_pandera()
    return pa.DataFrameSchema(
        {col.name: _pa_column(col) for col in spec.columns},
        unique=_unique_columns(spec),
        strict=True,
        name=table,
    )


def contract_markdown() -> str:
    """The published contract as Markdown: file rules, then one table per contract table."""
    lines = ["# Raw-data contract v1", "", *(f"- {rule}" for rule in FILE_RULES), ""]
    for spec in TABLES.values():
        need = "required" if spec.required else "optional"
        lines += [f"## `{spec.name}` ({need})", "", spec.description, ""]
        lines += ["| column | type | nullable | rule | meaning |", "|---|---|---|---|---|"]
        for col in spec.columns:
            rule = []
            if col.choices:
                rule.append("one of " + ", ".join(col.choices) + " (any case)")
            elif col.kind == "category":
                rule.append("free; one value in any case")
            if col.kind == "date":
                rule.append(f"ISO 8601, years {FIRST_DATE.year}-{END_DATE.year - 1}")
            if col.min is not None:
                rule.append(f">= {col.min:g}")
            if col.max is not None:
                rule.append(f"<= {col.max:g}")
            if col.name == spec.key:
                rule.append("unique per partner" if spec.references_partner else "unique")
            if col.name in spec.after_signing:
                rule.append("not before signed_at")
            for later, earlier in spec.order:
                if col.name == later:
                    rule.append(f"not before {earlier}")
            if not col.required:
                rule.append("column optional")
            nullable = "yes" if col.nullable else "no"
            cells = [f"`{col.name}`", col.kind, nullable, "; ".join(rule), col.description]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
