"""Raw-contract validation inside Spark: the ``score --engine spark`` job's first pass.

Each raw table is read by Spark (CSV as all-text columns, Parquet typed) from any
Spark-readable folder, every row gets its input row number, rows are bucketed by partner
(``pmod(hash(partner_id), B)``, the id trimmed as the validator trims it: :data:`TRIM`) and each
bucket (its rows of every table) goes through the project's own validator
(:func:`~partnerscore.features.validate.load_frames`), so the rules and the reasons are the
pandas job's. The validator's cross-row checks are per partner (duplicate
partner ids, duplicate record ids, which are unique per partner, unknown partners, dates before
signing), so a bucket's verdicts equal the whole batch's. What is counted over partners (a
record id held by several of them: :func:`shared_ids_in_spark`) is aggregated over all buckets.

Row numbers are exact, as the pandas validator reports them (1-based data records, a record that
spans lines counted once): a CSV table is parsed as one ``multiLine`` stream (Arrow's
``newlines_in_values``) whose single partition numbers its records in order
(``monotonically_increasing_id`` within one partition); a Parquet file's rows are numbered by
Spark's ``_metadata.row_index``. A record's line span (for the "record spans lines" note) is
counted from the line breaks inside its values: exact unless blank lines sit between records
(then later spans shift; the reasons and row numbers do not).

The driver holds only counts, the reason counts and the few rows it needs to decide the batch
(quarantined partner rows, for rejects). Quarantine rows are written by Spark as Parquet
datasets ``<out folder>/quarantine/<table>.parquet`` (the pandas job's columns: the input
columns as text, ``_row``, ``reason``; sorted by ``_row``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from partnerscore.features.core import PartnerscoreError

KIND = "_kind"
ROW = "_row"
TABLE = "_table"
BUCKET = "_bucket"
FIRST_LINE = "_first_line"
LAST_LINE = "_last_line"
SENTINEL = "\x00partnerscore-sentinel"
"""Id of the valid partner (and deal) added to every bucket, then removed: the validator
refuses a table without data rows or without a valid partner, which a bucket may lack while
the whole batch does not."""
_DUP = re.compile(r"^(duplicate (?:\S+ '.*' \(first at row |of row ))(\d+)(\D.*)$", re.S)
"""A duplicate's reason: the row it repeats (``duplicate deal_id 'D1' (first at row 3)``, or in
a table without an id ``duplicate of row 3 (...)``) is a position within the bucket."""


@dataclass(frozen=True)
class TableInput:
    """One raw table as Spark reads it.

    Attributes:
        name: Contract table name.
        path: The file (local path or URI).
        columns: Input column names (stripped), in file order.
        is_csv: CSV (text) or Parquet (typed).
        quarantine_names: Input column -> its name in the quarantine file.
    """

    name: str
    path: str
    columns: tuple[str, ...]
    is_csv: bool
    quarantine_names: dict[str, str] = field(default_factory=dict)


@dataclass
class SparkValidation:
    """The validated batch, left in Spark: clean rows, counts and what the driver needs.

    Attributes:
        clean: Spark frame of clean rows (``_table``, ``_row``, ``_bucket``, partner_id,
            ``<table>__<column>`` typed columns), from the persisted validation output.
        counts: Table -> (input rows, valid rows, quarantined rows).
        reasons: Table -> problem code -> rows.
        data_end: Latest observed date of the clean rows (the pandas ``RawData.data_end``).
        partner_quarantine: Quarantined partner rows (``partner_id`` text, ``reason``).
        dtypes: Table -> column -> dtype of the validator's clean frames.
        inputs: The tables read.
        ignored: Files in the folder that are not contract tables.
        persisted: The persisted validation output (see :meth:`unpersist`).
        late_tail: Events that alone carry ``data_end`` (the pandas ``RawData.late_tail``:
            :func:`late_tail_in_spark`), or None.
        respelled: Table -> categorical values read in another case -> clean rows (the
            pandas ``TableReport.respelled``; free categories folded over the whole batch).
        shared_ids: Table -> record ids held by the clean rows of several partners (the pandas
            ``TableReport.shared_ids``: :func:`shared_ids_in_spark`).
        shared_id_examples: Table -> the first of them (``TableReport.shared_id_examples``).
    """

    clean: object
    counts: dict[str, tuple[int, int, int]]
    reasons: dict[str, dict[str, int]]
    data_end: pd.Timestamp
    partner_quarantine: pd.DataFrame
    dtypes: dict[str, dict[str, str]]
    inputs: dict[str, TableInput]
    ignored: list[str]
    persisted: object = None
    late_tail: object = None
    respelled: dict[str, dict[str, int]] = field(default_factory=dict)
    shared_ids: dict[str, int] = field(default_factory=dict)
    shared_id_examples: dict[str, list] = field(default_factory=dict)

    def unpersist(self) -> None:
        """Release the validated rows Spark keeps (memory and disk of the executors)."""
        if self.persisted is not None:
            self.persisted.unpersist()


def _is_uri(path: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


def location(path) -> str:
    """A folder as Spark names it.

    ``hdfs://nn/x`` survives a trip through ``Path`` (``hdfs:/nn/x``); local paths are made
    absolute (executors do not share the driver's working folder).
    """
    text = str(path)
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+):/(?!/)(.*)$", text)
    if match and match.group(1).lower() != "file":
        return f"{match.group(1)}://{match.group(2)}"
    if _is_uri(text):
        return text
    return str(Path(text.removeprefix("file:")).absolute())


def find_tables(spark, raw_dir: str) -> tuple[dict[str, str], list[str]]:
    """Table -> file of a raw folder (local or any Hadoop file system), with the pandas errors."""
    from partnerscore.features.validate import _find_files, match_tables

    if not _is_uri(raw_dir) or raw_dir.startswith("file:"):
        local = Path(raw_dir.removeprefix("file://").removeprefix("file:"))
        files, ignored = _find_files(local)
        return {n: str(p.resolve()) for n, p in files.items()}, ignored
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(raw_dir)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(hpath) or not fs.getFileStatus(hpath).isDirectory():
        raise PartnerscoreError(f"{raw_dir}: raw data folder not found")
    listing = [
        (status.getPath().getName(), status.getPath().toString())
        for status in sorted(fs.listStatus(hpath), key=lambda s: s.getPath().getName())
        if not status.getPath().getName().startswith(".") and not status.isDirectory()
    ]
    return match_tables(raw_dir, listing)


def _header(spark, path: str, is_csv: bool) -> list[str]:
    """Column names of a table file (one-line errors for empty or broken files)."""
    from partnerscore.features.core import check_quotes_close, refuse_duplicate_columns
    from partnerscore.features.validate import _header as csv_header
    from partnerscore.features.validate import check_delimiter

    local = not _is_uri(path)
    if local and Path(path).stat().st_size == 0:
        raise PartnerscoreError(f"{path}: empty file")
    if not is_csv:
        try:
            names = spark.read.parquet(path).columns
        except Exception as exc:  # Spark's analysis errors: one line, no traceback
            raise PartnerscoreError(f"{path}: cannot read file: {_one_line(exc)}") from exc
    elif local:
        names = csv_header(Path(path))
        check_delimiter(path, names)
        # Spark reads a quote that never closes in a record's last field as the rest of the
        # file, like Arrow: the pandas validator's one pass over the bytes stops it (and names
        # the line when it opens another field, where Spark only shows the record)
        check_quotes_close(Path(path))
    else:
        first = (
            spark.read.option("header", False).option("multiLine", True).csv(path).limit(1)
        ).collect()
        if not first:
            raise PartnerscoreError(f"{path}: empty file (no header line)")
        names = [("" if v is None else str(v)).lstrip("\ufeff") for v in first[0]]
    names = [str(c).strip() for c in names]
    refuse_duplicate_columns(path, names)
    return names


def _one_line(exc: BaseException) -> str:
    from partnerscore.features.validate import _first_line

    return _first_line(exc)


def table_inputs(spark, files: dict[str, str]) -> dict[str, TableInput]:
    """Headers of every table, with the pandas job's file-level errors (required columns)."""
    from partnerscore.features.contract import TABLES
    from partnerscore.features.validate import quarantine_column

    inputs = {}
    for name in TABLES:  # partners first, like the pandas validator
        if name not in files:
            continue
        path = files[name]
        is_csv = path.lower().endswith(".csv")
        columns = _header(spark, path, is_csv)
        for col in TABLES[name].columns:
            if col.required and col.name not in columns:
                raise PartnerscoreError(f"{path}: missing required column '{col.name}'")
        sources = dict.fromkeys(columns)
        inputs[name] = TableInput(
            name, path, tuple(columns), is_csv, {c: quarantine_column(c, sources) for c in columns}
        )
    return inputs


CORRUPT = "_corrupt_record"
BLANK_LINE = "^[ \\t\\r]*$"
"""A CSV record that is a line of spaces or tabs only (Java regex): skipped like an empty line."""
_SPACE = "[\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
TRIM = f"\\A{_SPACE}+|{_SPACE}+\\z"
"""Leading and trailing whitespace (Java regex): the characters Arrow's ``utf8_trim_whitespace``
strips in the validator (Python's ``str.isspace``), where Spark's ``trim`` strips spaces only, so
an id padded with a tab or a no-break space would be bucketed apart from its partner row."""


def read_table(spark, table: TableInput):
    """A raw table as a Spark frame.

    Columns: ``_table``, ``_row`` (1-based record), the bucket key ``partner_id`` (trimmed
    text), the record's line count (CSV) and the ``<table>__<column>`` input values.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    n = len(table.columns)
    positional = [f"_c{i}" for i in range(n)]
    if table.is_csv:
        schema = T.StructType(
            [T.StructField(c, T.StringType(), True) for c in [*positional, CORRUPT]]
        )
        frame = (
            spark.read.schema(schema)
            .option("header", True)
            .option("multiLine", True)
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT)
            .option("quote", '"')
            .option("escape", '"')
            .option("encoding", "UTF-8")
            .option("enforceSchema", True)
            .csv(table.path)
        )
        if frame.rdd.getNumPartitions() != 1:
            raise PartnerscoreError(f"{table.path}: expected one file per table")
        # a line of spaces or tabs is skipped like an empty one (as the pandas validator's
        # reader does); any other record of the wrong length stops the read (FAILFAST before)
        corrupt = F.col(CORRUPT)
        # (the first column too: Spark refuses a scan that needs only the corrupt column, as a
        # bare count would; a blank line's text is in it, so the test is the same)
        blank = corrupt.rlike(BLANK_LINE) & F.col(positional[0]).isNotNull()
        frame = frame.filter(corrupt.isNull() | ~blank).withColumn(
            CORRUPT,
            F.when(
                corrupt.isNotNull(),
                F.raise_error(
                    F.concat(F.lit(f"{Path(table.path).name}: Malformed CSV record: "), corrupt)
                ),
            ),
        )
        # the filter reads the column, so the optimiser cannot prune raise_error away
        frame = frame.filter(F.col(CORRUPT).isNull()).drop(CORRUPT)
        # one partition: monotonically_increasing_id is the record's position in the file
        frame = frame.withColumn(ROW, F.monotonically_increasing_id() + 1)
        # the record's lines: 1 + the line breaks in its values, as one SQL expression (built
        # from Column objects it cost ~8 round trips to the JVM per column: ~0.4 s a run)
        breaks = " + ".join(f"coalesce(size(split({c}, '\\n', -1)) - 1, 0)" for c in positional)
        frame = frame.withColumn(LAST_LINE, F.expr(f"CAST({breaks} + 1 AS BIGINT)"))
    else:
        frame = spark.read.parquet(table.path)
        # integer columns travel as their decimal text: every table's columns share one UDF
        # frame, so they are nullable there and Arrow would hand them to pandas as float64
        # (a quarantined 5 written as "5.0"; ids above 2**53 rounded into false duplicates)
        frame = frame.select(
            *(
                (
                    F.col(f"`{f.name}`").cast("string")
                    if isinstance(f.dataType, T.IntegralType)
                    else F.col(f"`{f.name}`")
                ).alias(p)
                for f, p in zip(frame.schema.fields, positional, strict=True)
            ),
            (F.col("_metadata.row_index") + 1).alias(ROW),
        )
        frame = frame.withColumn(LAST_LINE, F.lit(1).cast("long"))
    pairs = zip(positional, table.columns, strict=True)
    values = [F.col(c).alias(f"{table.name}__{name}") for c, name in pairs]
    pid = positional[table.columns.index("partner_id")]
    return frame.select(
        F.lit(table.name).alias(TABLE),
        F.col(ROW).cast("long").alias(ROW),
        F.regexp_replace(F.col(pid).cast("string"), TRIM, "").alias("partner_id"),
        F.col(LAST_LINE).alias(LAST_LINE),
        *values,
    )


def _line_spans(frame, spans: bool):
    """First and last physical line of every record (only when some record spans lines)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not spans:
        return frame.withColumn(FIRST_LINE, F.lit(None).cast("long")).withColumn(
            LAST_LINE, F.lit(None).cast("long")
        )
    # a running sum over the table's single partition (rare: malformed or quoted newlines)
    upto = Window.orderBy(ROW).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    last = F.sum(LAST_LINE).over(upto) + 1
    return frame.withColumn(FIRST_LINE, last - F.col(LAST_LINE) + 1).withColumn(LAST_LINE, last)


def probe_tables(frames: dict) -> dict[str, tuple[int, bool]]:
    """Table -> (records, whether some record spans lines) of every table read, in one job.

    It is the first job to read every record, so it meets a malformed record (read_table's
    ``raise_error``) or a file Spark cannot parse. Which table's error a job over all of them
    raises depends on the order its tasks ran in; the tables are then counted again one by
    one, in order, so the error raised is the first malformed table's, the file the pandas
    validator stops on. (The per-table probes this job replaced, 9 jobs and ~3.5 s of a warm
    15 s run on 400 partners, read only until a record spanning lines, without the corrupt
    check: the bucket job, over all tables at once, met the malformed record.)
    """
    from pyspark.sql import functions as F

    parts = [
        frame.select(F.col(TABLE), (F.col(LAST_LINE) > 1).cast("long").alias("_spans"))
        for frame in frames.values()
    ]
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    try:
        got = union.groupBy(TABLE).agg(F.count(F.lit(1)).alias("n"), F.sum("_spans").alias("s"))
        rows = {r[TABLE]: (int(r["n"]), bool(r["s"])) for r in got.collect()}
    except Exception:
        for part in parts:  # raises the first malformed table's error
            part.count()
        raise
    return {name: rows.get(name, (0, False)) for name in frames}


def clean_dtypes(inputs: dict[str, TableInput], config) -> dict[str, dict[str, str]]:
    """Table -> column -> dtype of the validator's clean frames (validated sentinel rows)."""
    raw = _validate_frames(_sentinel_frames(inputs, {}), config)
    return {n: {c: str(t) for c, t in f.dtypes.items()} for n, f in raw.tables.items()}


def _sentinel_frames(inputs, frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Each table's bucket rows plus, for partners and deals, one valid sentinel row."""
    values = {
        "partners": {
            "partner_id": SENTINEL,
            "partner_name": "-",
            "signed_at": "2000-01-01",
            "tier": "silver",
            "region": "EMEA",
            "industry": "-",
            "partner_type": "reseller",
        },
        "deals": {
            "deal_id": SENTINEL,
            "partner_id": SENTINEL,
            "created_at": "2000-01-02",
            "amount": "0",
            "status": "open",
        },
    }
    out = {}
    for name, table in inputs.items():
        frame = frames.get(name)
        if frame is None:
            frame = pd.DataFrame({c: pd.Series(dtype=object) for c in table.columns})
        if name in values:
            extra = {c: [values[name].get(c)] for c in table.columns}
            frame = pd.concat([frame, pd.DataFrame(extra)], ignore_index=True)
            frame = frame.astype(object).where(frame.notna(), None)
        out[name] = frame
    return out


def _validate_frames(frames, config):
    """The validator on one bucket's rows.

    Free categories keep their spellings: the batch's case folds are decided over every
    bucket (:func:`case_folds_in_spark`).
    """
    from partnerscore.features.validate import load_frames

    return load_frames(frames, config=config, fold_case=False)


def _schema(inputs: dict[str, TableInput], dtypes):
    """The validation UDF's output: clean typed columns, quarantine text columns, counts."""
    from pyspark.sql import types as T

    from partnerscore.serving.spark_engine import spark_type

    fields = [
        T.StructField(KIND, T.StringType()),
        T.StructField(TABLE, T.StringType()),
        T.StructField(ROW, T.LongType()),
        T.StructField(BUCKET, T.IntegerType()),
        T.StructField("partner_id", T.StringType()),
        T.StructField("reason", T.StringType()),
    ]
    for name, columns in dtypes.items():
        fields += [T.StructField(f"{name}__{c}", spark_type(t), True) for c, t in columns.items()]
    for name, table in inputs.items():
        fields += [
            T.StructField(f"q__{name}__{q}", T.StringType(), True)
            for q in table.quarantine_names.values()
        ]
    return T.StructType(fields)


def validate_bucket(
    pdf: pd.DataFrame, inputs: dict[str, TableInput], dtypes, config
) -> pd.DataFrame:
    """Validate one bucket's rows of every table with the project's validator.

    Returns:
        Clean rows (``_kind`` clean), quarantined rows (``_kind`` quarantine, ``_row`` and the
        reason as the pandas job reports them), problem-code counts (``_kind`` code: the code in
        ``reason``, the count in ``_row``) and file-level errors (``_kind`` error).
    """
    bucket = int(pdf[BUCKET].iloc[0]) if len(pdf) else 0
    pdf = pdf.sort_values([TABLE, ROW], kind="stable")
    frames, rows, spans = {}, {}, {}
    for name, table in inputs.items():
        part = pdf[pdf[TABLE].to_numpy() == name]
        frames[name] = pd.DataFrame(
            {c: part[f"{name}__{c}"].to_numpy() for c in table.columns},
            index=pd.RangeIndex(len(part)),
        )
        rows[name] = part[ROW].to_numpy(dtype=np.int64)
        spans[name] = (part[FIRST_LINE].to_numpy(), part[LAST_LINE].to_numpy())
    try:
        raw = _validate_frames(_sentinel_frames(inputs, frames), config)
    except PartnerscoreError as exc:
        return pd.DataFrame({KIND: ["error"], TABLE: [""], BUCKET: [bucket], "reason": [str(exc)]})
    out = []
    for name, table in inputs.items():
        n = len(rows[name])
        clean = raw.tables[name]
        if name in ("partners", "deals"):  # the sentinel is valid and the last row
            clean = clean.iloc[:-1]
        part = {f"{name}__{c}": clean[c].to_numpy() for c in clean.columns}
        valid_rows = _valid_positions(raw, name, n)
        out.append(_spellings(name, frames[name], valid_rows, clean, bucket))
        out.append(
            pd.DataFrame(
                {
                    KIND: "clean",
                    TABLE: name,
                    ROW: rows[name][valid_rows],
                    BUCKET: bucket,
                    "partner_id": clean["partner_id"].astype(str).to_numpy(),
                    **part,
                }
            )
        )
        bad = raw.quarantine.get(name)
        if bad is not None and len(bad):
            local = bad["_row"].to_numpy(dtype=np.int64) - 1
            reasons = [_global_reason(r, rows[name]) for r in bad["reason"].astype(str)]
            first, last = spans[name]
            if first is not None and len(local):
                f, last_ = first[local], last[local]
                reasons = [
                    r + f"; record spans lines {int(a)}-{int(b)} (a stray quote?)"
                    if a is not None and b is not None and not pd.isna(a) and b > a
                    else r
                    for r, a, b in zip(reasons, f, last_, strict=True)
                ]
            q = {
                f"q__{name}__{qn}": bad[qn].to_numpy(dtype=object)
                for qn in table.quarantine_names.values()
            }
            out.append(
                pd.DataFrame(
                    {
                        KIND: "quarantine",
                        TABLE: name,
                        ROW: rows[name][local],
                        BUCKET: bucket,
                        "partner_id": bad[table.quarantine_names["partner_id"]].to_numpy(
                            dtype=object
                        ),
                        "reason": reasons,
                        **q,
                    }
                )
            )
        codes = raw.report.tables[name].reasons
        if codes:
            out.append(
                pd.DataFrame(
                    {
                        KIND: "code",
                        TABLE: name,
                        ROW: list(codes.values()),
                        BUCKET: bucket,
                        "reason": list(codes.keys()),
                    }
                )
            )
    return pd.concat(out, ignore_index=True)


def _spellings(name: str, frame, valid_rows, clean, bucket: int) -> pd.DataFrame:
    """Clean rows per (category column, spelling read, value used): ``_kind`` spelling rows.

    The column in ``reason``, the spelling as read (trimmed) in ``partner_id``, the value the
    validator used in the column itself, the rows in ``_row``. The driver folds the free
    categories' spellings over the batch and counts the values read in another case from them.
    """
    from partnerscore.features.contract import TABLES
    from partnerscore.features.validate import read_spellings

    parts = []
    for col in TABLES[name].columns:
        if col.kind != "category" or col.name not in frame or not len(valid_rows):
            continue
        pairs = pd.DataFrame(
            {
                "was": read_spellings(frame[col.name].iloc[valid_rows].reset_index(drop=True)),
                "now": clean[col.name].astype(object).to_numpy(),
            }
        )
        counted = pairs.dropna().value_counts(sort=False).reset_index(name="n")
        parts.append(
            pd.DataFrame(
                {
                    KIND: "spelling",
                    TABLE: name,
                    ROW: counted["n"].to_numpy(dtype=np.int64),
                    BUCKET: bucket,
                    "reason": col.name,
                    "partner_id": counted["was"].to_numpy(dtype=object),
                    f"{name}__{col.name}": counted["now"].to_numpy(dtype=object),
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({KIND: []})


def case_folds_in_spark(spelled: pd.DataFrame, inputs) -> tuple[dict, dict]:
    """The batch's case folds and values read in another case, from the buckets' counts.

    Args:
        spelled: ``_table``, ``reason`` (column), ``partner_id`` (spelling read), ``_now``
            (value used), ``n`` (clean rows), summed over the buckets.
        inputs: The tables read.

    Returns:
        (table, column) -> spelling -> the one it is read as (free categories,
        :func:`~partnerscore.features.validate.case_folds`), and table -> the values read in
        another case (the pandas ``TableReport.respelled``).
    """
    from collections import Counter

    from partnerscore.features.contract import TABLES
    from partnerscore.features.validate import case_folds, ordered_respellings

    folds, respelled = {}, {}
    for name in inputs:
        changed: Counter = Counter()
        mine = spelled[spelled[TABLE] == name]
        for col in TABLES[name].columns:
            rows = mine[mine["reason"] == col.name]
            if col.kind != "category" or rows.empty:
                continue
            if col.choices:
                for was, now, n in zip(rows["partner_id"], rows["_now"], rows["n"], strict=True):
                    if was != now:
                        changed[(col.name, was, now)] += int(n)
                continue
            counts = rows.groupby("partner_id")["n"].sum().astype(int).to_dict()
            folds[(name, col.name)] = case_folds(counts)
            for was, now in folds[(name, col.name)].items():
                changed[(col.name, was, now)] += counts[was]
        respelled[name] = ordered_respellings(TABLES[name], changed)
    return {k: v for k, v in folds.items() if v}, respelled


def apply_folds_in_spark(clean, folds: dict):
    """The clean rows with each free category's spellings read as the batch's (``folds``)."""
    from pyspark.sql import functions as F

    for (name, column), mapping in folds.items():
        target = F.col(f"{name}__{column}")
        value = None
        for was, now in mapping.items():
            value = (F if value is None else value).when(target == F.lit(was), F.lit(now))
        clean = clean.withColumn(f"{name}__{column}", value.otherwise(target))
    return clean


def _valid_positions(raw, name: str, n: int) -> np.ndarray:
    """Positions (within the bucket's rows of ``name``) of the clean rows, in order."""
    bad = raw.quarantine.get(name)
    keep = np.ones(n, dtype=bool)
    if bad is not None and len(bad):
        keep[bad["_row"].to_numpy(dtype=np.int64) - 1] = False
    return np.flatnonzero(keep)


def _global_reason(reason: str, rows: np.ndarray) -> str:
    """A duplicate's reason with the row it repeats (bucket position) made the input row."""
    match = _DUP.match(reason)
    if match is None:
        return reason
    return match.group(1) + str(int(rows[int(match.group(2)) - 1])) + match.group(3)


def conform_validated(frame: pd.DataFrame, schema) -> pd.DataFrame:
    """The UDF's rows in the declared schema's columns (missing ones empty)."""
    from pyspark.sql import types as T

    out = {}
    for f in schema.fields:
        values = frame[f.name] if f.name in frame else pd.Series(None, index=frame.index)
        if isinstance(f.dataType, T.TimestampNTZType):
            out[f.name] = pd.to_datetime(values).astype("datetime64[us]")
        elif isinstance(f.dataType, (T.LongType, T.IntegerType)):
            out[f.name] = pd.to_numeric(values).astype("Int64")
        elif isinstance(f.dataType, T.DoubleType):
            out[f.name] = pd.to_numeric(values).astype("float64")
        elif isinstance(f.dataType, T.BooleanType):
            out[f.name] = values.astype("boolean")
        else:
            text = values.astype(object)
            out[f.name] = text.where(text.notna(), None)
    return pd.DataFrame(out, index=frame.index)


def validate_in_spark(
    spark,
    raw_dir: str,
    n_buckets: int | Callable[[int], int],
    config,
    quarantine_dir: str,
) -> SparkValidation:
    """Read, number, bucket and validate every raw table in Spark; write the quarantine.

    Args:
        spark: The session.
        raw_dir: Raw tables folder (any Spark-readable path).
        n_buckets: Partner buckets, or a function of the partners table's records giving them
            (counted in the first job, :func:`probe_tables`).
        config: ``ValidateConfig``; a default reference date (today) is fixed here on the
            driver so every executor applies the same bound.
        quarantine_dir: Folder of the quarantine datasets.

    Returns:
        The clean rows (persisted Spark frame) and the batch's counts.
    """
    import warnings

    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from partnerscore.features.config import ValidateConfig
    from partnerscore.features.contract import TABLES

    raw_dir = location(raw_dir)
    config = config or ValidateConfig()
    if config.reference_date is None:
        today = pd.Timestamp.now(tz="UTC").tz_convert(None).normalize().date()
        config = config.model_copy(update={"reference_date": today})
    files, ignored = find_tables(spark, raw_dir)
    inputs = table_inputs(spark, files)
    dtypes = clean_dtypes(inputs, config)
    frames = {name: read_table(spark, table) for name, table in inputs.items()}
    try:
        probed = probe_tables(frames)
    except PartnerscoreError:
        raise
    except Exception as exc:  # a record of the wrong length met by the first read
        raise worker_death(exc) or PartnerscoreError(_spark_read_error(exc, inputs)) from exc
    if callable(n_buckets):
        n_buckets = n_buckets(probed["partners"][0])
    parts = [_line_spans(frame, probed[name][1]) for name, frame in frames.items()]
    packed = parts[0]
    for part in parts[1:]:
        packed = packed.unionByName(part, allowMissingColumns=True)
    packed = packed.withColumn(BUCKET, F.expr(f"pmod(hash(partner_id), {n_buckets})"))
    schema = _schema(inputs, dtypes)

    def bucket(pdf: pd.DataFrame) -> pd.DataFrame:
        from partnerscore.serving.spark_engine import PANDAS_WARNING

        warnings.filterwarnings("ignore", message=PANDAS_WARNING, category=FutureWarning)
        return conform_validated(validate_bucket(pdf, inputs, dtypes, config), schema)

    try:
        validated = packed.groupBy(BUCKET).applyInPandas(bucket, schema=schema)
        # on disk: a bucket's rows are wide (every table's columns) and the heap stays free
        validated = validated.persist(StorageLevel.DISK_ONLY)
        # one job: rows per kind and table, and the newest observed event of the clean rows
        # (the data end: the greatest of each row's dates, then the greatest of those)
        dates = [
            F.col(f"{name}__{col.name}")
            for name in inputs
            for col in TABLES[name].columns
            if col.kind == "date" and col.observed
        ]
        newest = F.greatest(*dates) if len(dates) > 1 else dates[0]
        summary = (
            validated.filter(~F.col(KIND).isin("code", "spelling"))
            .groupBy(KIND, TABLE)
            .agg(
                F.count(F.lit(1)).alias("count"),
                F.max(F.when(F.col(KIND) == "clean", newest)).alias("_end"),
            )
            .toPandas()
        )
    except PartnerscoreError:
        raise
    except Exception as exc:  # Spark's parse errors (FAILFAST): one line naming the file
        raise worker_death(exc) or PartnerscoreError(_spark_read_error(exc, inputs)) from exc
    try:
        if (summary[KIND] == "error").any():
            errors = validated.filter(F.col(KIND) == "error").select("reason").limit(1).collect()
            message = errors[0]["reason"]
            for name, table in inputs.items():
                message = message.replace(f"<frames>/{name}", table.path)
            raise PartnerscoreError(message)
        # one job: problem codes, and the clean rows per category spelling
        categories = [
            F.col(f"{name}__{col.name}")
            for name in inputs
            for col in TABLES[name].columns
            if col.kind == "category" and col.name in dtypes.get(name, {})
        ]
        now = (F.coalesce(*categories) if categories else F.lit(None).cast("string")).alias("_now")
        counted = (
            validated.filter(F.col(KIND).isin("code", "spelling"))
            .groupBy(KIND, TABLE, "reason", "partner_id", now)
            .agg(F.sum(ROW).alias("n"))
            .toPandas()
        )
        codes = counted[counted[KIND] == "code"]
        folds, respelled = case_folds_in_spark(counted[counted[KIND] == "spelling"], inputs)
        counts, reasons = {}, {}
        for name, table in inputs.items():
            got = summary[summary[TABLE] == name].set_index(KIND)["count"]
            valid, bad = int(got.get("clean", 0)), int(got.get("quarantine", 0))
            counts[name] = (valid + bad, valid, bad)
            mine = codes[codes[TABLE] == name]
            reasons[name] = dict(zip(mine["reason"], mine["n"].astype(int), strict=True))
            if TABLES[name].required and valid + bad == 0:
                raise PartnerscoreError(f"{table.path}: no data rows")
        qdir = quarantine_dir.rstrip("/")
        _write_quarantine(validated, inputs, qdir, counts)
        if counts["partners"][1] == 0:
            raise PartnerscoreError(
                f"{inputs['partners'].path}: no valid partner rows (see {qdir}/partners.parquet)"
            )
        typed = [f"{name}__{column}" for name, columns in dtypes.items() for column in columns]
        clean = validated.filter(F.col(KIND) == "clean").select(
            TABLE, ROW, BUCKET, "partner_id", *typed
        )
        clean = apply_folds_in_spark(clean, folds)
        shared, examples = shared_ids_in_spark(clean, inputs)
        end = summary.loc[summary[KIND] == "clean", "_end"].dropna()
        data_end = pd.Timestamp(end.max()).as_unit("us") if len(end) else pd.NaT
        tail = late_tail_in_spark(clean, dtypes, counts["partners"][1], data_end)
        quarantined_partners = (
            validated.filter((F.col(KIND) == "quarantine") & (F.col(TABLE) == "partners"))
            .select("partner_id", "reason", ROW)
            .toPandas()
            .sort_values(ROW, kind="stable")
        )
    except BaseException:
        validated.unpersist()
        raise
    return SparkValidation(
        clean=clean,
        counts=counts,
        reasons=reasons,
        data_end=data_end,
        partner_quarantine=quarantined_partners.reset_index(drop=True),
        dtypes=dtypes,
        inputs=inputs,
        ignored=ignored,
        persisted=validated,
        late_tail=tail,
        respelled=respelled,
        shared_ids=shared,
        shared_id_examples=examples,
    )


def shared_ids_in_spark(clean, inputs) -> tuple[dict[str, int], dict[str, list]]:
    """Record ids held by the clean rows of several partners, as the pandas report counts them.

    A bucket sees its own partners only (a record id is unique per partner, so its verdicts
    are the batch's), but an id's partners may sit in several buckets: one aggregation over
    the clean rows' (table, id) counts them (an id's clean rows are one per partner) and keeps
    the first :data:`~partnerscore.features.validate.SHARED_IDS_KEPT` per table by their first
    row; only when there are some, a second job reads those ids' first partners. Nothing else
    reaches the driver.

    Args:
        clean: The clean rows (``_table``, ``_row``, ``partner_id``, ``<table>__<id>``).
        inputs: The tables read.

    Returns:
        Table -> such ids (the pandas ``TableReport.shared_ids``), and table -> the first of
        them (``TableReport.shared_id_examples``), for every table read.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from partnerscore.features.contract import TABLES
    from partnerscore.features.validate import SHARED_IDS_KEPT, SHARED_PARTNERS_KEPT, SharedId

    counts = dict.fromkeys(inputs, 0)
    examples: dict[str, list] = {name: [] for name in inputs}
    keyed = {n: TABLES[n].key for n in inputs if TABLES[n].key and TABLES[n].references_partner}
    if not keyed:
        return counts, examples
    key = F.coalesce(
        *(F.when(F.col(TABLE) == name, F.col(f"{name}__{k}")) for name, k in keyed.items())
    ).alias("_key")
    rows = clean.filter(F.col(TABLE).isin(list(keyed))).select(TABLE, key, ROW, "partner_id")
    per_table = Window.partitionBy(TABLE)
    first = (
        rows.groupBy(TABLE, "_key")
        .agg(F.count(F.lit(1)).alias("partners"), F.min(ROW).alias("first"))
        .filter(F.col("partners") > 1)
        .withColumn("shared", F.count(F.lit(1)).over(per_table))
        .withColumn("rank", F.row_number().over(per_table.orderBy("first")))
        .filter(F.col("rank") <= SHARED_IDS_KEPT)
        .toPandas()
        .sort_values([TABLE, "rank"], kind="stable")
    )
    if first.empty:
        return counts, examples
    wanted = F.lit(False)
    for name, ids in first.groupby(TABLE)["_key"]:
        wanted = wanted | ((F.col(TABLE) == name) & F.col("_key").isin(ids.tolist()))
    holders = (
        rows.filter(wanted)
        .withColumn("rank", F.row_number().over(Window.partitionBy(TABLE, "_key").orderBy(ROW)))
        .filter(F.col("rank") <= SHARED_PARTNERS_KEPT)
        .toPandas()
        .sort_values([TABLE, "_key", ROW], kind="stable")
        .groupby([TABLE, "_key"])["partner_id"]
        .agg(list)
    )
    for name, mine in first.groupby(TABLE, sort=False):
        counts[name] = int(mine["shared"].iloc[0])
        examples[name] = [
            SharedId.of(k, int(n), holders[(name, k)])
            for k, n in zip(mine["_key"], mine["partners"], strict=True)
        ]
    return counts, examples


def _timestamp(when: pd.Timestamp):
    """A Spark ``timestamp_ntz`` literal of ``when`` (from text: no time zone is applied)."""
    from pyspark.sql import functions as F

    return F.lit(when.strftime("%Y-%m-%d %H:%M:%S.%f")).cast("timestamp_ntz")


def late_tail_in_spark(clean, dtypes: dict[str, dict[str, str]], partners: int, newest):
    """:func:`~partnerscore.features.validate.late_tail` of the clean rows, computed in Spark.

    The same reading, the same result: the data end is supported when at least ``k`` partners
    have an event within :func:`~partnerscore.features.validate.late_tail_days` of it (one job
    over the recent rows, at most ``k`` partner ids counted). Else each partner's newest event
    is aggregated in Spark and only the ``k`` newest reach the driver: the ``k``-th is the
    supported date, and every partner beyond it is among them (fewer than ``k`` partners are
    later than the ``k``-th). One more job counts each table's dates beyond it.

    Args:
        clean: The clean rows (``_table``, ``partner_id``, ``<table>__<column>``).
        dtypes: Table -> column -> dtype of the clean tables (which columns exist).
        partners: Valid partner rows.
        newest: The data end (newest observed event).

    Returns:
        None when supported, else the :class:`~partnerscore.features.validate.LateTail`.
    """
    from pyspark.sql import functions as F

    from partnerscore.features.validate import (
        LateTail,
        late_tail_days,
        late_tail_k,
        observed_date_columns,
    )

    k = late_tail_k(partners)
    cols = observed_date_columns(dtypes)
    if k < 2 or not cols or pd.isna(newest):
        return None
    newest = pd.Timestamp(newest)
    days = pd.Timedelta(days=late_tail_days(partners))
    dates = [F.when(F.col(TABLE) == name, F.col(f"{name}__{col}")) for name, col in cols]
    event = F.greatest(*dates) if len(dates) > 1 else dates[0]  # greatest skips nulls
    events = clean.select("partner_id", event.alias("_event"))
    recent = (
        events.filter(F.col("_event") >= _timestamp(newest - days))
        .select("partner_id")
        .distinct()
        .limit(k)
        .count()
    )
    if recent >= k:
        return None
    # rare: per partner newest event, the k newest of them
    last = (
        events.groupBy("partner_id")
        .agg(F.max("_event").alias("_last"))
        .filter(F.col("_last").isNotNull())
        .orderBy(F.col("_last").desc())
        .limit(k)
        .toPandas()
    )
    if len(last) < k:
        return None
    supported = pd.Timestamp(last["_last"].iloc[k - 1])
    bound = supported + days
    late = tuple(sorted(last.loc[pd.to_datetime(last["_last"]) > bound, "partner_id"].astype(str)))
    beyond = clean.agg(
        *(
            F.count(
                F.when((F.col(TABLE) == name) & (F.col(f"{name}__{col}") > _timestamp(bound)), 1)
            ).alias(f"{name}__{col}")
            for name, col in cols
        )
    ).first()
    rows: dict[str, int] = {}
    for name, col in cols:
        n = int(beyond[f"{name}__{col}"])
        if n:
            rows[name] = rows.get(name, 0) + n
    return LateTail(newest, supported, k, late, rows)


_WORKER_LOST = (
    "Python worker exited unexpectedly",
    "Connection reset by peer",
    "Broken pipe",
    "java.io.EOFException",
)
"""How a Spark task says its Python worker went away: the worker's exit seen by the JVM (its
check after the task), or the socket to it closed mid-read or mid-write (which of them
depends on when the worker died; all three seen with a worker SIGKILLed by hand)."""


def worker_death(exc: BaseException) -> PartnerscoreError | None:
    """The one-line error (exit 71) for a Spark job whose Python worker died, else None.

    A Python worker of an executor killed mid-task (the kernel's out-of-memory killer, a
    SIGKILL) fails its task with one of :data:`_WORKER_LOST` from the JVM's Python runner;
    when the task may not be retried (``local[N]``: one attempt; ``spark.task.maxFailures``
    on a cluster, 4 by default, where a retry usually succeeds) the job stops with it. The
    same ending as a dead worker of the pandas job's pool
    (:class:`~partnerscore.features.parallel.WorkerDied`), not a bad-input error naming the
    raw tables (exit 2, until 2026-12-06) nor a Java stack trace.
    """
    from partnerscore.features.parallel import WorkerDied

    text = str(exc)
    if "PythonRunner" not in text and "Python worker" not in text:
        return None
    said = next((lost for lost in _WORKER_LOST if lost in text), None)
    if said is None:
        return None
    task = re.search(r"Lost (task [\d.]+ in stage [\d.]+)", text)
    where = f" ({task.group(1)}: {said})" if task else f" ({said})"
    return WorkerDied(
        f"a Spark Python worker process died before finishing its task{where}; out of "
        "memory? rerun with more executor memory, or on a cluster that retries tasks"
    )


def _spark_read_error(exc: BaseException, inputs: dict[str, TableInput]) -> str:
    from partnerscore.features.validate import _quietly_ragged_line

    text = str(exc)
    where = next((t.path for t in inputs.values() if Path(t.path).name in text), "raw tables")
    first = next(
        (line.strip() for line in text.splitlines() if "Malformed" in line or "Error" in line),
        _one_line(exc),
    )
    # "[USER_RAISED_EXCEPTION] deals.csv: Malformed CSV record: ... SQLSTATE: P0001"
    first = re.sub(r"^\[[A-Z_]+\]\s*", "", first)
    first = re.sub(r"\s*SQLSTATE: \w+$", "", first)
    first = first.removeprefix(f"{Path(where).name}: ")
    table = next((t for t in inputs.values() if t.path == where), None)
    if first.startswith("Malformed CSV record") and table is not None and not _is_uri(where):
        line = _quietly_ragged_line(Path(where), len(table.columns))
        if line is not None:  # the pandas validator's line number, for local files
            first = f"line {line}: {first}"
    return f"{where}: cannot read file: {first[:160]}"


def _write_quarantine(
    validated, inputs: dict[str, TableInput], qdir: str, counts: dict | None = None
) -> None:
    """One Parquet dataset per table with quarantined rows, sorted by ``_row``; stale ones go.

    ``counts`` (table -> (input, valid, quarantined), known from the validation summary) saves
    one Spark job per table finding out whether it has quarantined rows.
    """
    import shutil

    from pyspark.sql import functions as F

    from partnerscore.features.contract import TABLES

    local = not _is_uri(qdir)
    for name in TABLES:
        target = f"{qdir}/{name}.parquet"
        table = inputs.get(name)
        rows = None
        if table is not None:
            rows = validated.filter((F.col(KIND) == "quarantine") & (F.col(TABLE) == name))
            if counts is not None:
                if counts[name][2] == 0:
                    rows = None
            elif rows.limit(1).count() == 0:
                rows = None
        if rows is None:
            if local:
                shutil.rmtree(target, ignore_errors=True)
                Path(f"{qdir}/{name}.csv").unlink(missing_ok=True)
            continue
        cols = [F.col(f"q__{name}__{q}").alias(q) for q in table.quarantine_names.values()]
        (
            rows.select(*cols, F.col(ROW).alias("_row"), "reason")
            .repartition(1)
            .sortWithinPartitions("_row")
            .write.mode("overwrite")
            .parquet(target)
        )
        if local:
            Path(f"{qdir}/{name}.csv").unlink(missing_ok=True)
