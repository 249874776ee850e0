"""Validation against the raw-data contract, with quarantine.

Every input row is either used (returned in a clean, typed frame) or written to
``<quarantine>/<table>.csv`` with its 1-based data-row number (``_row``) and the reason, so
``valid + quarantined == input`` for every table. Problems that make a whole file unusable
(missing required table or column, empty or unreadable file) stop with a one-line
:class:`PartnerscoreError` naming the file and column.

Files are read with Arrow (CSV: every column as text, so every bad value can be reported by
row; Parquet: typed columns kept). All checks are vectorised; reasons are built only for the
rows that fail, and dates/numbers go through Arrow's strict parsers first, pandas' ISO 8601
parser only when a column holds something else. 10M-row events validate in ~20 s on 2 cores.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from partnerscore.features.config import ValidateConfig
from partnerscore.features.contract import (
    BOOLEAN_FALSE,
    BOOLEAN_TRUE,
    END_DATE,
    FIRST_DATE,
    REQUIRED_TABLES,
    TABLES,
    Column,
    TableSpec,
)
from partnerscore.features.core import (
    PartnerscoreError,
    blank_record,
    case_key,
    check_quotes_close,
    clock_words,
    csv_header,
    csv_lines,
    file_fingerprint,
    isin_text,
    not_utf8,
    not_utf8_error,
    other_format,
    quoted,
    ragged_line,
    refuse_duplicate_columns,
    unclosed_quote,
    write_frame_atomic,
)

SHARED_IDS_KEPT = 10
"""Record ids held by several partners a table's report keeps as examples (``--json``, the
validated snapshot's manifest); the summary line shows :data:`SHARED_IDS_SHOWN`."""
SHARED_IDS_SHOWN = 3
SHARED_PARTNERS_KEPT = 5
"""Partners an example names (those of its first rows), then how many more."""
SHARED_ID_CHARS = 200
"""Characters of an example id kept (a longer one is cut)."""


@dataclass
class SharedId:
    """A record id held by kept rows of several partners (one example of the report's count).

    Attributes:
        id: The id (its first :data:`SHARED_ID_CHARS` characters).
        partner_count: Partners whose kept rows hold it.
        partners: The first :data:`SHARED_PARTNERS_KEPT` of them, in order of their row.
    """

    id: str
    partner_count: int
    partners: list[str]

    @classmethod
    def of(cls, value: str, partner_count: int, partners: list[str]) -> SharedId:
        """One example, bounded as both engines bound it."""
        return cls(
            id=str(value)[:SHARED_ID_CHARS],
            partner_count=int(partner_count),
            partners=[str(p) for p in partners[:SHARED_PARTNERS_KEPT]],
        )

    def text(self) -> str:
        """``'D1' (partners 'P1', 'P2')``, then ``and N more`` past the partners kept."""
        more = self.partner_count - len(self.partners)
        return (
            f"{quoted(self.id, 60)} (partners "
            + ", ".join(quoted(p, 60) for p in self.partners)
            + (f" and {more:,} more" if more > 0 else "")
            + ")"
        )


@dataclass
class TableReport:
    """Validation counts of one table."""

    file: Path
    input_rows: int
    valid_rows: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)
    physical_lines: int | None = None
    multiline_records: list[tuple[int, int, int]] = field(default_factory=list)
    respelled: dict[str, int] = field(default_factory=dict)
    shared_ids: int = 0
    """Record-id values (deal_id, ...) held by the kept rows of several partners: every such
    row is kept (a record id is unique per partner), though often a data error (a deal
    exported under two partners counts for both)."""
    shared_id_examples: list[SharedId] = field(default_factory=list)
    """The first :data:`SHARED_IDS_KEPT` of them, in order of their first kept row."""

    def respelled_note(self, name: str) -> str | None:
        """A line listing the categorical values read in another case (:func:`respelled`)."""
        if not self.respelled:
            return None
        shown = [f"{what} ({n:,})" for what, n in list(self.respelled.items())[:RESPELLED_SHOWN]]
        more = len(self.respelled) - RESPELLED_SHOWN
        return (
            f"{name}: read in another case: "
            + ", ".join(shown)
            + (f" and {more} more" if more > 0 else "")
        )

    def shared_ids_note(self, name: str) -> str | None:
        """A line counting the record ids held by several partners, with examples, or None."""
        if not self.shared_ids:
            return None
        key = TABLES[name].key
        values = "value" if self.shared_ids == 1 else "values"
        shown = ", ".join(e.text() for e in self.shared_id_examples[:SHARED_IDS_SHOWN])
        return (
            f"{name}: {self.shared_ids:,} {key} {values} held by several partners "
            f"(all rows kept), e.g. {shown}"
        )

    def lines_note(self) -> str | None:
        """A line saying which records span several physical lines (CSV only), or None."""
        if self.physical_lines is None or self.physical_lines <= self.input_rows + 1:
            return None
        where = ", ".join(f"row {r} (lines {a}-{b})" for r, a, b in self.multiline_records[:5])
        more = len(self.multiline_records) - 5
        where += f" and {more} more" if more > 0 else ""
        return (
            f"{self.file.name}: {self.physical_lines:,} physical lines hold "
            f"{self.input_rows:,} records + header"
            + (
                f"; spanning several lines: {where} (quoted line breaks, or a stray quote)"
                if where
                else "; blank lines skipped"
            )
        )


@dataclass
class ValidationReport:
    """Validation counts of every table read."""

    raw_dir: Path
    tables: dict[str, TableReport] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    quarantine_dir: Path | None = None
    data_end_note: str | None = None

    @property
    def quarantined_total(self) -> int:
        """Rows quarantined across tables."""
        return sum(t.quarantined for t in self.tables.values())

    def summary(self) -> str:
        """A compact table of counts and top reasons, then where quarantine files are."""
        lines = [f"{'table':<22}{'input':>10}{'valid':>10}{'quarantined':>13}  top reasons"]
        for name, t in self.tables.items():
            top = ", ".join(
                f"{r} ({n})" for r, n in sorted(t.reasons.items(), key=lambda kv: -kv[1])[:3]
            )
            lines.append(
                f"{name:<22}{t.input_rows:>10,}{t.valid_rows:>10,}{t.quarantined:>13,}  {top}"
            )
        absent = [n for n in TABLES if n not in self.tables]
        if absent:
            lines.append(
                f"optional tables absent (their features are skipped): {', '.join(absent)}"
            )
        lines += [note for n, t in self.tables.items() if (note := t.respelled_note(n))]
        lines += [note for n, t in self.tables.items() if (note := t.shared_ids_note(n))]
        lines += [note for t in self.tables.values() if (note := t.lines_note())]
        if self.ignored:
            lines.append(f"ignored files: {', '.join(self.ignored)}")
        if self.data_end_note:
            lines.append(f"warning: {self.data_end_note}")
        if self.quarantined_total and self.quarantine_dir is not None:
            lines.append(f"quarantined rows written to {self.quarantine_dir}/<table>.csv")
        else:
            lines.append(
                "no rows quarantined" if not self.quarantined_total else "quarantine not written"
            )
        return "\n".join(lines)


@dataclass
class RawData:
    """Validated raw data.

    Attributes:
        tables: Clean typed frames of the tables present.
        report: Validation counts.
        files: Table -> source file.
        fingerprints: Table -> SHA-256 of the source file.
        data_end: Latest timestamp in any date column of the clean tables.
        quarantine: Table -> quarantined rows (original values, ``_row``, ``reason``).
        late_tail: Events that alone carry ``data_end`` (:func:`late_tail`), or None.
    """

    tables: dict[str, pd.DataFrame]
    report: ValidationReport
    files: dict[str, Path]
    fingerprints: dict[str, str]
    data_end: pd.Timestamp
    quarantine: dict[str, pd.DataFrame] = field(default_factory=dict)
    late_tail: LateTail | None = None

    @classmethod
    def from_frames(
        cls, tables: dict[str, pd.DataFrame], data_end: pd.Timestamp | None = None
    ) -> RawData:
        """Wrap frames that are already clean and typed (e.g. from the simulator) unvalidated.

        Args:
            tables: Contract tables (other keys, such as ``truth``, are dropped).
            data_end: Data end; default the latest observed date in the frames.
        """
        kept = {name: frame for name, frame in tables.items() if name in TABLES}
        return cls(
            tables=kept,
            report=ValidationReport(raw_dir=Path(".")),
            files={},
            fingerprints={},
            data_end=pd.Timestamp(data_end) if data_end is not None else _data_end(kept),
        )

    def drop_columns(self, columns: dict[str, tuple[str, ...]]) -> None:
        """Leave out columns no job step reads (table -> column names; absent ones ignored)."""
        for name, names in columns.items():
            if name in self.tables:
                self.tables[name] = self.tables[name].drop(columns=list(names), errors="ignore")


def _find_files(raw_dir: Path) -> tuple[dict[str, Path], list[str]]:
    if not raw_dir.is_dir():
        raise PartnerscoreError(f"{raw_dir}: raw data folder not found")
    listing = [
        (path.name, path)
        for path in sorted(raw_dir.iterdir())
        if not path.is_dir() and not path.name.startswith(".")
    ]
    return match_tables(raw_dir, listing)


def match_tables(
    raw_dir: str | Path, listing: list[tuple[str, Path | str]]
) -> tuple[dict[str, Path | str], list[str]]:
    """Which files of a raw folder hold which table, and the names of the others.

    The rule of every engine (local folders here, Hadoop file systems in
    :func:`~partnerscore.serving.spark_validate.find_tables`): ``<table>.csv`` or
    ``<table>.parquet``, suffix in any case, one file per table.

    Args:
        raw_dir: The folder, for messages.
        listing: (name, file) of each of its files, by name; folders and hidden files left out.

    Raises:
        PartnerscoreError: A table given twice, or a required table missing.
    """
    found: dict[str, Path | str] = {}
    names: dict[str, str] = {}
    ignored = []
    for name, file in listing:
        stem, dot, suffix = name.rpartition(".")
        if dot and stem in TABLES and suffix.lower() in ("csv", "parquet"):
            if stem in found:
                raise PartnerscoreError(
                    f"{raw_dir}: table '{stem}' given twice ({names[stem]} and {name}); keep one"
                )
            found[stem], names[stem] = file, name
        else:
            ignored.append(name)
    for name in REQUIRED_TABLES:
        if name not in found:
            raise PartnerscoreError(
                f"{raw_dir}: missing required table '{name}' ({name}.csv or {name}.parquet)"
            )
    return found, ignored


def _header(path: Path) -> list[str]:
    """Column names of a CSV file (one-line errors for non-UTF-8 or broken headers)."""
    return csv_header(path)


def _first_line(exc: BaseException) -> str:
    text = (str(exc).splitlines() or [type(exc).__name__])[0]
    text = "".join(ch if ch.isprintable() else "?" for ch in text)  # parsers echo raw bytes
    return text if len(text) <= 160 else text[:157] + "..."


def _duplicate_parquet_column(path: Path) -> None:
    """Raise the CSV reader's one line when a Parquet file names a column twice (quiet else).

    Arrow refuses to read such a file with "Multiple matches for FieldRef.Name(...)".
    """
    try:
        names = [str(n).strip() for n in pq.read_schema(path).names]
    except Exception:  # unreadable metadata: the caller reports the read error
        return
    refuse_duplicate_columns(path, names)


_DELIMITERS = {";": "';'", "\t": "tabs", "|": "'|'"}


def check_delimiter(path: Path | str, header: list[str]) -> None:
    """Stop with one line when a CSV header reads as one column holding another delimiter.

    A semicolon file from a spreadsheet in a decimal-comma locale, or a tab-separated export:
    every contract table has several columns, so such a header is never right, and the errors
    that would follow ("missing required column 'deal_id'", or a data row of decimal commas
    "Expected 1 columns, got 2") would not say why.
    """
    if len(header) != 1:
        return
    found = next((d for d in _DELIMITERS if d in header[0]), None)
    if found is not None:
        shown = header[0] if len(header[0]) <= 60 else header[0][:57] + "..."
        raise PartnerscoreError(
            f"{path}: the header is one column {quoted(shown)}: the file is separated by "
            f"{_DELIMITERS[found]}, not by commas as the contract's CSV files are"
        )


def _read_arrow(path: Path) -> pa.Table:
    """One raw table as Arrow strings (CSV) or as stored (Parquet); errors in one line.

    Arrow's own SIGINT/SIGTERM handler is off (``pa.enable_signal_handlers``, process-wide):
    around a CSV read it replaced Python's handler with one that forwards the signal to the
    read through a helper thread, and a signal landing as the read ended was lost when that
    thread had not forwarded it yet (8 of 200 reads ending with a SIGTERM, in a process
    alone: a job ran on as if not signalled). A signal now reaches Python's handler and acts
    once the read returns.
    """
    pa.enable_signal_handlers(False)
    try:
        size = path.stat().st_size
    except OSError as exc:  # dangling symlink, symlink loop, permissions
        raise PartnerscoreError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    if size == 0:
        raise PartnerscoreError(f"{path}: empty file")
    if path.suffix.lower() == ".parquet":
        try:
            return pq.read_table(path)
        except Exception as exc:  # arrow errors: one line, no traceback
            _duplicate_parquet_column(path)
            said = other_format(path) or _first_line(exc)  # not Arrow's "magic bytes" words
            raise PartnerscoreError(f"{path}: cannot read file: {said}") from exc
    header = _header(path)
    check_delimiter(path, header)
    refuse_duplicate_columns(path, header)
    try:
        return pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(
                newlines_in_values=True, invalid_row_handler=_skip_blank_rows
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        message = _first_line(exc)
        if "UTF8" in message or "utf-8" in message.lower():
            raise not_utf8(path) from exc
        # a quote that never closes: "Expected 6 columns, got 2" or, past Arrow's 1 MB
        # blocks, "straddling object straddles two block boundaries", neither with a line
        check_quotes_close(path)
        if "Expected" in message and "columns" in message:  # a record of the wrong length
            line = _quietly_ragged_line(path, len(header))
            if line is not None:
                message = f"line {line}: {message}"
        raise PartnerscoreError(f"{path}: cannot read file: {message}") from exc
    except Exception as exc:  # any other arrow/OS error: one line, no traceback
        raise PartnerscoreError(f"{path}: cannot read file: {_first_line(exc)}") from exc


def _skip_blank_rows(row) -> str:
    """Arrow's handler of a record of the wrong length: a blank line is skipped, else stop.

    A line of spaces or tabs is skipped like an empty one (and :func:`record_lines` counts it
    so); any other record of the wrong length stops the read.
    """
    return "skip" if blank_record([row.text]) else "error"


def _quietly_ragged_line(path: Path, fields: int) -> int | None:
    """The line of the first record of the wrong length (None when the file cannot tell)."""
    try:
        return ragged_line(path, fields)
    except (csv.Error, UnicodeDecodeError, OSError):
        return None


_EDGE_BYTES = np.zeros(256, dtype=bool)
_EDGE_BYTES[[*range(0x09, 0x0E), *range(0x1C, 0x21), *range(0x80, 0x100)]] = True
"""Bytes a string that ``utf8_trim_whitespace`` changes can start or end with: ASCII
whitespace (tab to carriage return, the separators 0x1C-0x1F, space) and any byte of a
multi-byte character (Unicode spaces such as U+00A0 are multi-byte)."""


def may_need_trim(values: pa.ChunkedArray) -> bool:
    """Whether ``pc.utf8_trim_whitespace`` may change any string of ``values`` (Arrow ``string``).

    False only when no non-empty string starts or ends with a byte in :data:`_EDGE_BYTES`,
    read straight from the Arrow buffers (no copy of the text): a CSV table's text columns are
    rarely padded, and trimming them all copied every string (~5 GB at 1M partners). True
    means "maybe": the exact trim then runs.
    """
    for chunk in values.chunks:
        if len(chunk) == 0:
            continue
        _, offsets_buf, data_buf = chunk.buffers()
        if data_buf is None:
            continue
        offsets = np.frombuffer(offsets_buf, dtype=np.int32)[
            chunk.offset : chunk.offset + len(chunk) + 1
        ]
        data = np.frombuffer(data_buf, dtype=np.uint8)
        starts, ends = offsets[:-1], offsets[1:]
        filled = ends > starts
        if not filled.any():
            continue
        if _EDGE_BYTES[data[starts[filled]]].any() or _EDGE_BYTES[data[ends[filled] - 1]].any():
            return True
    return False


class _Source:
    """One column of a table file as read: arrow values, which cells are present, their text.

    Strings are stripped and only an empty cell is missing ("NA", "null" are text); Parquet
    columns keep their type (timezone-aware timestamps as UTC wall time, NaN floats missing)
    so typed files are not round-tripped through text. Quarantine files show the strings as
    read (:meth:`text_as_read`).
    """

    def __init__(self, values: pa.ChunkedArray) -> None:
        kind = values.type
        if pa.types.is_dictionary(kind):  # categorical Parquet columns
            values = values.cast(kind.value_type)
            kind = values.type
        if pa.types.is_timestamp(kind) and kind.tz is not None:
            values = values.cast(pa.timestamp(kind.unit))
        elif any(
            f(kind) for f in (pa.types.is_large_string, pa.types.is_string_view, pa.types.is_null)
        ):
            values = values.cast(pa.string())
        blank = None
        self.read: pa.ChunkedArray | None = None  # the strings as read, if trimmed
        if pa.types.is_string(values.type):
            if may_need_trim(values):  # else trimming would copy every string unchanged
                self.read = values
                values = pc.utf8_trim_whitespace(values)
            blank = pc.equal(values, "")
        elif pa.types.is_floating(values.type):
            blank = pc.is_nan(values)
        if blank is not None and pc.any(blank).as_py():  # only then pay for a copy
            values = pc.if_else(blank, pa.scalar(None, values.type), values)
        self.values = values
        self.present = values.is_valid().to_numpy(zero_copy_only=False)

    @property
    def is_text(self) -> bool:
        return pa.types.is_string(self.values.type)

    def as_text(self) -> pa.ChunkedArray:
        """Every value as a string (Parquet numbers, booleans, dates included)."""
        if self.is_text:
            return self.values
        try:
            return _pretty(self.values.cast(pa.string()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            text = [None if v is None else str(v) for v in self.values.to_pylist()]
            return pa.chunked_array([pa.array(text, type=pa.string())])

    def text(self, idx: np.ndarray) -> np.ndarray:
        """The values at rows ``idx`` as an object array of str (None where missing)."""
        sub = _Source(self.values.take(pa.array(idx, type=pa.int64())))
        return np.array(sub.as_text().to_pylist(), dtype=object)

    def text_as_read(self, idx: np.ndarray) -> np.ndarray:
        """The values at rows ``idx`` as the file holds them, for quarantine files.

        Like :meth:`text`, but strings keep their padding (a quarantined `` 007`` is shown so,
        not as ``007``); an empty cell is None.
        """
        if self.read is None:
            return self.text(idx)
        read = self.read.take(pa.array(idx, type=pa.int64())).to_pylist()
        return np.array([value or None for value in read], dtype=object)


def _pretty(text: pa.ChunkedArray) -> pa.ChunkedArray:
    """Arrow writes timestamps with '.000000': drop an all-zero fraction."""
    return pc.replace_substring_regex(text, pattern=r"(\d\d:\d\d:\d\d)\.0+$", replacement=r"\1")


def record_lines(path: Path, records: int) -> tuple[int, np.ndarray | None]:
    """Physical line count of a CSV file and, when records span lines, each record's lines.

    Every data record normally sits on one physical line. When the file has more lines than
    records + header, some records hold quoted line breaks (fine) or a stray quote merged
    lines (a data problem); the (first, last) 1-based line numbers of every data record tell
    which. Blank lines are skipped like the reader does. Returns ``(lines, None)`` when every
    record is one line, or when Python's csv reader and Arrow disagree on the record count.

    Raises:
        PartnerscoreError: A quote opened on some line never closes. Arrow reads such a file
            when the quote opens the last field of a record (that field takes the rest of the
            file: ``"open`` on the last line reads as ``open``, later records vanish into it).
    """
    lines, opened = csv_lines(path)
    if opened is not None:
        raise unclosed_quote(path, opened)
    if lines <= records + 1:
        return lines, None
    spans = np.zeros((records, 2), dtype=np.int64)
    i = 0
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            next(reader, None)
            before = reader.line_num
            for row in reader:
                after = reader.line_num
                if row and any(row) and not blank_record(row):
                    if i >= records:
                        return lines, None
                    spans[i] = (before + 1, after)
                    i += 1
                before = after
    except (csv.Error, UnicodeDecodeError):  # Arrow read it: its records stand
        return lines, None
    return lines, (spans if i == records else None)


_BINARY = (
    pa.types.is_binary,
    pa.types.is_large_binary,
    pa.types.is_binary_view,
    pa.types.is_fixed_size_binary,
)


def _utf8(path: Path, name: str, values: pa.ChunkedArray) -> pa.ChunkedArray:
    """A Parquet column of bytes as text, or a one-line error naming its first non-UTF-8 cell.

    Some writers store text as plain BINARY (no UTF-8 annotation). Read as Python ``bytes``
    every cell would become its ``repr`` (``b'P001'``), so ids would match nothing.
    """
    if pa.types.is_dictionary(values.type):  # categorical Parquet columns of bytes
        values = values.cast(values.type.value_type)
    if not any(f(values.type) for f in _BINARY):
        return values
    try:
        return values.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        for row, value in enumerate(values.to_pylist(), start=1):  # the error path only
            try:
                (value or b"").decode("utf-8")
            except UnicodeDecodeError as exc:
                raise not_utf8_error(
                    path,
                    f"column {quoted(name)} row {row}",
                    value[exc.start : exc.start + 1],
                    fix="write the column as UTF-8 strings",
                ) from exc
        raise


def _read(path: Path, table: pa.Table | None = None) -> tuple[dict[str, _Source], int]:
    """Read a table file (or take ``table``): columns by (stripped) name, number of rows."""
    table = _read_arrow(path) if table is None else table
    names = [str(c).strip() for c in table.column_names]
    refuse_duplicate_columns(path, names)
    try:
        sources = {
            name: _Source(_utf8(path, name, col))
            for name, col in zip(names, table.columns, strict=True)
        }
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:  # exotic arrow types
        raise PartnerscoreError(f"{path}: cannot read file: {_first_line(exc)}") from exc
    return sources, table.num_rows


Message = Callable[[np.ndarray], "np.ndarray | str"]


class _Checker:
    """Collects per-row problems of one table, vectorised; messages are built for bad rows only."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.items: list[tuple[np.ndarray, Message, str]] = []

    def add(self, mask: np.ndarray, message: Message, code: str) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            self.items.append((mask, message, code))

    @property
    def bad(self) -> np.ndarray:
        out = np.zeros(self.n, dtype=bool)
        for mask, _, _ in self.items:
            out |= mask
        return out

    def reasons(self, bad_pos: np.ndarray) -> tuple[np.ndarray, Counter]:
        """Reason text for the rows at ``bad_pos`` (ascending) and counts per problem code."""
        text = np.full(len(bad_pos), "", dtype=object)
        codes: Counter = Counter()
        for mask, message, code in self.items:
            idx = np.flatnonzero(mask)
            where = np.searchsorted(bad_pos, idx)
            part = message(idx)
            part = np.asarray(part, dtype=object) if not isinstance(part, str) else part
            prev = text[where]
            text[where] = np.where(prev == "", part, prev + "; " + part)
            codes[code] += len(idx)
        return text, codes


def _quoted(src: _Source, idx: np.ndarray) -> np.ndarray:
    """``'value'`` for the rows at ``idx``, as an object array.

    Cut at 60 characters, invisible characters escaped (:func:`~partnerscore.features.core.quoted`).
    """
    return np.array([quoted(v or "", 60) for v in src.text(idx)], dtype=object)


def _said(name: str, src: _Source, suffix: str) -> Message:
    return lambda idx: f"{name} " + _quoted(src, idx) + suffix


def _to_dates(src: _Source) -> np.ndarray:
    """datetime64 (naive UTC wall time, any unit) with NaT for missing or unparseable values."""
    values, kind = src.values, src.values.type
    if pa.types.is_timestamp(kind):
        return values.to_numpy(zero_copy_only=False)
    if pa.types.is_date(kind):
        return values.cast(pa.timestamp("s")).to_numpy(zero_copy_only=False)
    text = src.as_text()
    whole = _arrow_dates(text)
    if whole is not None:
        return whole
    # some values are not in Arrow's subset: chunk by chunk, so one odd value costs pandas one
    # chunk, not the column (6.1M values: Arrow 0.3 s CPU, pandas 2.5 s)
    parts = []
    for start in range(0, len(text), DATE_CHUNK):
        chunk = text.slice(start, DATE_CHUNK)
        part = _arrow_dates(chunk)
        if part is None:
            part = _pandas_dates(chunk)
            if part.dtype == np.dtype("datetime64[ns]"):  # sub-microsecond values: as before,
                return _pandas_dates(text)  # the whole column at pandas' resolution
        parts.append(part.astype("datetime64[us]"))
    return np.concatenate(parts)


DATE_CHUNK = 1 << 16
"""Values per chunk when a text date column is not entirely in Arrow's ISO 8601 subset."""


def _arrow_dates(text: pa.ChunkedArray) -> np.ndarray | None:
    """Arrow's strict ISO 8601 cast as naive UTC ``datetime64[us]``, or None.

    Arrow accepts a subset of what pandas accepts and agrees with it there; it takes a column
    only when every value is in that subset and all are naive or all carry an offset.
    """
    first = pc.index(text.is_valid(), True).as_py()
    # only the kind of the first value can succeed (a naive value fails the offset cast and
    # the other way round), and a failing offset cast costs ~16x a successful one: try that one
    offset = first >= 0 and OFFSET.search(text[first].as_py()) is not None
    target = pa.timestamp("us", tz="UTC") if offset else pa.timestamp("us")
    try:
        return text.cast(target).cast(pa.timestamp("us")).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


OFFSET = re.compile(r"\d\d:\d\d(?::\d\d(?:\.\d*)?)?(?:[Zz]|[+-]\d\d(?::?\d\d)?)$")
"""A time with a UTC offset at the end (``14:30Z``, ``14:30:00+02``, ``+0200``, ``+02:00``); a
misread only costs speed (the failing cast sends the column to the chunked path)."""


def _pandas_dates(text: pa.ChunkedArray) -> np.ndarray:
    """Values parsed by pandas' ISO 8601 parser one by one (NaT where it fails), naive UTC.

    ``today`` and ``now`` (:data:`CLOCK_WORDS`), which pandas reads as the clock's time, are NaT.
    """
    values = text.to_pandas()
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    parsed[clock_words(values)] = pd.NaT
    return parsed.dt.tz_convert(None).to_numpy()


def _to_numbers(src: _Source) -> np.ndarray:
    """float64 with NaN for missing or unparseable values (inf stays inf)."""
    values, kind = src.values, src.values.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        # unsafe: integers beyond 2**53 round to the nearest double, as their CSV text does
        return values.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    text = src.as_text()
    try:  # fast path: every value a plain number
        return text.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pd.to_numeric(text.to_pandas(), errors="coerce").astype("float64").to_numpy()


def _mask(values: pa.ChunkedArray) -> np.ndarray:
    """A boolean arrow result as a numpy mask (null -> False)."""
    return values.fill_null(False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def _parse(
    col: Column, src: _Source, check: _Checker, latest: np.datetime64 | None = None
) -> np.ndarray | pa.ChunkedArray:
    """Typed values of one column (numpy, or arrow strings); problems go to ``check``.

    ``latest`` (exclusive) bounds observed event dates: an event dated after the data's
    reference date plus the tolerance has not happened yet, and would otherwise be counted as
    history by any later as_of.
    """
    present = src.present
    name = col.name
    if col.kind == "date":
        naive = _to_dates(src)
        missing = np.isnat(naive)
        check.add(present & missing, _said(name, src, " is not a date"), f"{name} not a date")
        # sentinels such as 9999-12-31 parse but are not plausible event times and do not fit
        # datetime64[ns]: a row problem, never a crash
        outside = ~missing & ((naive < FIRST_DATE) | (naive >= END_DATE))
        check.add(
            outside,
            _said(name, src, f" outside years {FIRST_DATE.year}-{END_DATE.year - 1}"),
            f"{name} out of range",
        )
        if latest is not None and col.observed:
            future = ~missing & ~outside & (naive >= latest)
            shown = pd.Timestamp(latest - np.timedelta64(1, "s")).strftime("%Y-%m-%d")
            check.add(
                future,
                _said(name, src, f" after the latest plausible date {shown}"),
                f"{name} in the future",
            )
        value = np.where(outside, np.datetime64("NaT"), naive).astype("datetime64[ns]")
    elif col.kind == "float":
        vals = _to_numbers(src)
        finite = np.isfinite(vals)
        check.add(present & ~finite, _said(name, src, " is not a number"), f"{name} not a number")
        vals = np.where(finite, vals, np.nan)
        with np.errstate(invalid="ignore"):
            if col.min is not None:
                check.add(
                    finite & (vals < col.min),
                    _said(name, src, f" below {col.min:g}"),
                    f"{name} below {col.min:g}",
                )
            if col.max is not None:
                check.add(
                    finite & (vals > col.max),
                    _said(name, src, f" above {col.max:g}"),
                    f"{name} above {col.max:g}",
                )
        value = vals
    elif col.kind == "bool":
        if pa.types.is_boolean(src.values.type):
            is_true = _mask(src.values)
            is_false = _mask(pc.invert(src.values))
        else:
            low = _case_keys(src.as_text())
            is_true = _mask(pc.is_in(low, value_set=pa.array(BOOLEAN_TRUE)))
            is_false = _mask(pc.is_in(low, value_set=pa.array(BOOLEAN_FALSE)))
        check.add(
            present & ~is_true & ~is_false,
            _said(name, src, " is not true/false"),
            f"{name} not boolean",
        )
        value = is_true
    else:
        value = src.as_text()
        if col.choices:
            # any case: a value equal to an allowed one but for case is read as that one
            allowed = "/".join(col.choices)
            lowered = pa.array([case_key(c) for c in col.choices])
            at = pc.index_in(_case_keys(value), value_set=lowered)
            check.add(
                present & ~_mask(pc.is_valid(at)),
                _said(name, src, f" not one of {allowed}"),
                f"{name} unknown value",
            )
            value = pc.coalesce(pc.take(pa.array(col.choices), at), value)
    if not col.nullable:
        check.add(~present, lambda idx: f"{name} is missing", f"{name} missing")
    return value


def _case_keys(text: pa.ChunkedArray) -> pa.Array:
    """:func:`~partnerscore.features.core.case_key` of every value (null stays null).

    Through the few distinct values, not Arrow's ``utf8_lower``: the two disagree on the
    dotted capital I (Arrow writes 'i') and the final sigma, and enumerations, free
    categories and the repeated-row check must read case one way.
    """
    encoded = pc.dictionary_encode(text.combine_chunks())
    keys = pa.array([case_key(v) for v in encoded.dictionary.to_pylist()], type=pa.string())
    return keys.take(encoded.indices)


def _nested_name(kind: pa.DataType) -> str:
    """'lists', 'structs', 'maps' or 'unions' (Arrow's own names differ by writer)."""
    if pa.types.is_map(kind):  # a map is also a list
        return "maps"
    for test, name in ((pa.types.is_struct, "structs"), (pa.types.is_union, "unions")):
        if test(kind):
            return name
    return "lists"


_KIND_NAMES = {"date": "dates", "float": "numbers", "bool": "true/false values"}
_KIND_NAMES.update(dict.fromkeys(("id", "str", "category"), "text"))


def _validate_table(
    spec: TableSpec,
    sources: dict[str, _Source],
    n: int,
    path: Path,
    partners: pd.DataFrame | None,
    latest: np.datetime64 | None = None,
    spans: np.ndarray | None = None,
    held: pd.DataFrame | None = None,
    fold: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, Counter, dict[str, int], tuple[int, list[SharedId]]]:
    for col in spec.columns:
        if col.required and col.name not in sources:
            raise PartnerscoreError(f"{path}: missing required column '{col.name}'")
        kind = sources[col.name].values.type if col.name in sources else None
        if kind is not None and pa.types.is_nested(kind):  # Parquet lists, structs, maps
            raise PartnerscoreError(
                f"{path}: column '{col.name}' holds {_nested_name(kind)}, not "
                f"{_KIND_NAMES[col.kind]}"
            )
    if spec.required and n == 0:
        raise PartnerscoreError(f"{path}: no data rows")
    check = _Checker(n)
    typed = {
        c.name: _parse(c, sources[c.name], check, latest) for c in spec.columns if c.name in sources
    }
    partner_at = None  # each row's position in partners (-1: unknown), when looked up

    if spec.name == "deals":
        status = sources["status"]
        closed = ~np.isnat(typed["closed_at"])
        check.add(
            _mask(pc.is_in(typed["status"], value_set=pa.array(["won", "lost"]))) & ~closed,
            _said("status", status, " needs closed_at"),
            "won/lost without closed_at",
        )
        check.add(
            _mask(pc.equal(typed["status"], "open")) & closed,
            lambda idx: "status 'open' but closed_at is set",
            "open with closed_at",
        )
    for later, earlier in spec.order:
        if later in typed and earlier in typed:
            check.add(
                typed[later] < typed[earlier],  # NaT compares False
                lambda idx, later=later, earlier=earlier: (
                    f"{later} "
                    + _quoted(sources[later], idx)
                    + f" before {earlier} "
                    + _quoted(sources[earlier], idx)
                ),
                f"{later} before {earlier}",
            )
    if spec.name == "leads" and "qualified_at" in sources:
        # the funnel is created -> qualified -> converted: a conversion with an empty
        # qualified_at lacks that date (as a won deal without closed_at); a qualified_at that
        # is not a date is reported as such only
        converted = sources["converted_at"]
        check.add(
            ~np.isnat(typed["converted_at"]) & ~sources["qualified_at"].present,
            _said("converted_at", converted, " needs qualified_at"),
            "converted without qualified_at",
        )
    if spec.references_partner and partners is not None:
        pid = sources["partner_id"]
        ids = pa.array(partners["partner_id"].to_numpy(dtype=object), type=pa.string())
        where = pc.index_in(typed["partner_id"], value_set=ids).fill_null(-1).to_numpy()
        partner_at = where
        known = where >= 0
        # an id whose partners row was quarantined is not unknown: say why it is missing
        held_at = np.full(n, -1, dtype=np.int64)
        if held is not None and len(held) and not known.all():
            held_ids = pa.array(held["partner_id"].to_numpy(dtype=object), type=pa.string())
            found = pc.index_in(typed["partner_id"], value_set=held_ids).fill_null(-1)
            held_at = found.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        is_held = ~known & (held_at >= 0)
        held_reasons = (
            np.array([], dtype=object) if held is None else held["reason"].to_numpy(dtype=object)
        )
        check.add(
            pid.present & ~known & ~is_held,
            lambda idx: "unknown partner_id " + _quoted(pid, idx),
            "unknown partner_id",
        )
        check.add(
            is_held,
            lambda idx: (
                "partner_id "
                + _quoted(pid, idx)
                + " is quarantined in partners ("
                + held_reasons[held_at[idx]]
                + ")"
            ),
            "partner_id quarantined in partners",
        )
        signed_all = partners["signed_at"].to_numpy(dtype="datetime64[ns]")
        signed = np.where(known, signed_all[np.maximum(where, 0)], np.datetime64("NaT"))
        for col in spec.after_signing:
            if col in typed:
                check.add(
                    typed[col] < signed,  # NaT compares False
                    lambda idx, col=col: (
                        f"{col} "
                        + _quoted(sources[col], idx)
                        + " before the partner's signed_at "
                        + pd.Series(signed[idx]).dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy(object)
                    ),
                    f"{col} before signing",
                )
    if spec.key:
        # duplicates among otherwise valid rows: the first valid occurrence is kept. A record
        # id is unique per partner: rows of different partners never repeat each other (one
        # partner's rows holding another's ids would otherwise quarantine that partner's rows)
        ok_pos = np.flatnonzero(~check.bad)
        first_at = np.zeros(n, dtype=np.int64)
        dup = np.zeros(n, dtype=bool)
        if ok_pos.size:
            keys = typed[spec.key]
            keys = (keys if ok_pos.size == n else keys.take(pa.array(ok_pos))).combine_chunks()
            codes = pc.dictionary_encode(keys).indices.to_numpy(zero_copy_only=False)
            if partner_at is not None:  # (partner, key) numbered in order of first appearance
                codes = codes.astype(np.int64) + (int(codes.max()) + 1) * partner_at[ok_pos]
                codes = pd.factorize(codes)[0]
            # codes are numbered in order of first appearance: a first occurrence raises the max
            top = np.maximum.accumulate(codes)
            is_first = np.ones(codes.size, dtype=bool)
            is_first[1:] = top[1:] > top[:-1]
            dup_pos = ok_pos[~is_first]
            dup[dup_pos] = True
            first_at[dup_pos] = ok_pos[is_first][codes[~is_first]] + 1
        check.add(
            dup,
            lambda idx: (
                f"duplicate {spec.key} "
                + _quoted(sources[spec.key], idx)
                + " (first at row "
                + first_at[idx].astype(str).astype(object)
                + ")"
            ),
            f"duplicate {spec.key}",
        )

    else:
        # no id: a row equal in every contract column to an earlier otherwise valid row is the
        # same record given twice (counted twice by every feature): the first is kept
        ok_pos = np.flatnonzero(~check.bad)
        first_at = np.zeros(n, dtype=np.int64)
        dup = np.zeros(n, dtype=bool)
        if ok_pos.size > 1:
            repeat, first = _repeats(spec, typed, ok_pos, partner_at)
            dup[ok_pos[repeat]] = True
            first_at[ok_pos[repeat]] = ok_pos[first[repeat]] + 1
        check.add(
            dup,
            lambda idx: (
                "duplicate of row "
                + first_at[idx].astype(str).astype(object)
                + " (same value in every contract column)"
            ),
            "duplicate row",
        )

    bad = check.bad
    bad_pos = np.flatnonzero(bad)
    reasons, codes = check.reasons(bad_pos)
    if spans is not None and bad_pos.size:
        first, last = spans[bad_pos, 0], spans[bad_pos, 1]
        multi = last > first
        if multi.any():
            note = (
                "; record spans lines "
                + first[multi].astype(str).astype(object)
                + "-"
                + last[multi].astype(str).astype(object)
                + " (a stray quote?)"
            )
            reasons[multi] = reasons[multi] + note
    quarantine = pd.DataFrame(
        {
            quarantine_column(name, sources): pd.Series(src.text_as_read(bad_pos), dtype="str")
            for name, src in sources.items()
        },
        index=pd.RangeIndex(bad_pos.size),
    )
    quarantine["_row"] = bad_pos + 1
    quarantine["reason"] = pd.Series(reasons, dtype="str")

    keep = ~bad
    keep_arrow = pa.array(keep)
    everything = bool(keep.all())  # nothing quarantined: no filtered copies
    shared: tuple[int, list[SharedId]] = (0, [])
    if spec.key and partner_at is not None and keep.any():
        shared = shared_ids(
            typed[spec.key], partner_at, keep, partners["partner_id"].to_numpy(dtype=object)
        )
    changed: Counter = Counter()
    for col in spec.columns:
        value = typed.get(col.name)
        if col.kind != "category" or value is None:
            continue
        folds = {}
        if not col.choices and fold:
            kept = value if everything else value.filter(keep_arrow)
            folds = case_folds(spelling_counts(kept))
            if folds:
                value = typed[col.name] = apply_folds(value, folds)
        if col.choices or folds:  # the clean values read in another spelling, counted
            read = sources[col.name].as_text()
            read = read if everything else read.filter(keep_arrow)
            new = value if everything else value.filter(keep_arrow)
            other = _mask(pc.not_equal(read, new))
            if other.any():  # a spelling is always read as one value: count by spelling
                was, now = read.filter(pa.array(other)), new.filter(pa.array(other))
                for spelling, used, rows in _respelled_counts(was, now):
                    changed[(col.name, spelling, used)] += rows
    respelled = ordered_respellings(spec, changed)
    columns = {}
    for col in spec.columns:
        value = typed.pop(col.name, None)  # released column by column
        if value is None:  # optional column left out of the file: present and empty
            columns[col.name] = _empty(col, int(keep.sum()))
        elif isinstance(value, pa.ChunkedArray):
            kept = value if everything else value.filter(keep_arrow)
            columns[col.name] = kept.to_pandas().reset_index(drop=True)
        else:
            columns[col.name] = pd.Series(value if everything else value[keep])
    clean = pd.DataFrame(columns, index=pd.RangeIndex(int(keep.sum())))
    return clean, quarantine, codes, respelled, shared


def shared_ids(
    keys: pa.ChunkedArray, partner_at: np.ndarray, keep: np.ndarray, partner_ids: np.ndarray
) -> tuple[int, list[SharedId]]:
    """Record ids held by the kept rows of several partners: how many, and the first few.

    Kept rows hold a record id once per partner (later ones are duplicates), so an id's kept
    rows count its partners. Nothing is quarantined for it: one partner's rows never decide
    another's (the data steward reads the count and the examples).

    Args:
        keys: The table's record ids (every row).
        partner_at: Each row's position in the partners table.
        keep: The kept rows.
        partner_ids: The partners table's ids.

    Returns:
        The number of such ids and the first :data:`SHARED_IDS_KEPT` (in order of their first
        kept row), each with its partner count and first partners in row order.
    """
    pos = np.flatnonzero(keep)
    kept = keys if pos.size == len(keep) else keys.take(pa.array(pos, type=pa.int64()))
    encoded = pc.dictionary_encode(kept.combine_chunks())  # codes in order of first appearance
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    holders = np.bincount(codes, minlength=len(encoded.dictionary))
    shared = np.flatnonzero(holders > 1)
    if not shared.size:
        return 0, []
    examples = shared[:SHARED_IDS_KEPT]
    at = np.flatnonzero(np.isin(codes, examples))  # their rows, in row order
    owners = partner_ids[partner_at[pos[at]]]
    values = encoded.dictionary.take(pa.array(examples, type=pa.int64())).to_pylist()
    return int(shared.size), [
        SharedId.of(value, int(holders[code]), owners[codes[at] == code].tolist())
        for code, value in zip(examples, values, strict=True)
    ]


RESPELLED_SHOWN = 6
"""Values read in another case a table's summary line lists (then "and N more")."""


def spelling_counts(values: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """Rows per distinct (non-missing) text value."""
    counted = pc.value_counts(values)
    if isinstance(counted, pa.ChunkedArray):
        counted = counted.combine_chunks()
    pairs = zip(
        counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True
    )
    return {v: int(n) for v, n in pairs if v is not None}


def _respelled_counts(was: pa.ChunkedArray, now: pa.ChunkedArray) -> list[tuple[str, str, int]]:
    """(spelling read, value used, rows) per distinct spelling of ``was`` (no nulls).

    Each spelling is read as one value, so its first row's ``now`` is every row's: one
    dictionary encoding, not a scan of ``was`` per spelling (quadratic in a free category with
    thousands of respelled values).
    """
    encoded = pc.dictionary_encode(was.combine_chunks())
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)  # codes 0..k-1, each present
    rows = np.bincount(codes, minlength=len(encoded.dictionary)).tolist()
    used = now.take(pa.array(first, type=pa.int64())).to_pylist()
    return list(zip(encoded.dictionary.to_pylist(), used, rows, strict=True))


def case_folds(counts: dict[str, int]) -> dict[str, str]:
    """Spellings of a free category that differ only by case, each -> the one it is read as.

    The batch's most frequent spelling of a value wins; a tie goes to the first in code-point
    order (``EMEA`` before ``emea``). Values spelt one way only are absent (unchanged). One
    function for both engines: the Spark job counts its buckets' clean values and calls it.

    Args:
        counts: Clean rows per spelling of one column (the whole batch).
    """
    groups: dict[str, list[str]] = {}
    for spelling in counts:
        groups.setdefault(case_key(spelling), []).append(spelling)
    out = {}
    for spellings in groups.values():
        if len(spellings) > 1:
            winner = min(spellings, key=lambda v: (-counts[v], v))
            out.update({v: winner for v in spellings if v != winner})
    return out


def apply_folds(values: pa.ChunkedArray, folds: dict[str, str]) -> pa.ChunkedArray:
    """``values`` with every spelling in ``folds`` replaced by the one it is read as."""
    at = pc.index_in(values, value_set=pa.array(list(folds), type=pa.string()))
    return pc.coalesce(pc.take(pa.array(list(folds.values()), type=pa.string()), at), values)


def ordered_respellings(spec: TableSpec, changed: Counter) -> dict[str, int]:
    """``column 'Was' -> 'now'`` -> clean rows, in contract column order, then by spelling.

    Args:
        spec: The table.
        changed: (column, spelling read, spelling used) -> clean rows.
    """
    order = {c.name: i for i, c in enumerate(spec.columns)}
    keys = sorted(changed, key=lambda k: (order[k[0]], k[1], k[2]))
    return {
        f"{c} {quoted(was, 60)} -> {quoted(now, 60)}": changed[(c, was, now)]
        for c, was, now in keys
    }


def _column_codes(col: Column, value, pos: np.ndarray | None) -> np.ndarray:
    """int64 values of one typed column at ``pos`` (all rows: None), equal where its values are.

    Text as dictionary codes (a free category lowercased), dates as their int64, numbers by
    their bits (NaN equals NaN, -0.0 equals 0.0), booleans as 0/1.
    """
    if isinstance(value, pa.ChunkedArray):
        part = value if pos is None else value.take(pa.array(pos, type=pa.int64()))
        encoded = pc.dictionary_encode(part.combine_chunks())
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        if col.kind == "category" and not col.choices:  # lowercase the few distinct values
            # case_key (str.lower), as case_folds groups spellings (Arrow's utf8_lower maps 'İ'
            # to 'i' and never writes a final sigma: other groups, so a folded repeat went
            # unnoticed)
            lowered = [case_key(v) for v in encoded.dictionary.to_pylist()]
            same = np.append(pd.factorize(pd.Series(lowered, dtype=object))[0], -1)
            codes = same.astype(np.int64)[codes]  # -1 (missing) stays -1
        return codes
    values = value if pos is None else value[pos]
    if values.dtype.kind == "f":
        return np.where(np.isnan(values), np.nan, values + 0.0).view(np.int64)
    return values.view(np.int64) if values.dtype.kind == "M" else values.astype(np.int64)


def _repeats(
    spec: TableSpec, typed: dict, pos: np.ndarray, partner_at: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Which rows at ``pos`` repeat an earlier one in every contract column, and which.

    Rows are equal when every contract column read the same typed value: the same instant,
    number or boolean however written, the same trimmed text, a free category in any case (the
    batch folds those into one spelling). A 64-bit hash of each row finds the candidates (one
    sort of the hashes); only rows whose hash repeats are compared exactly.

    Args:
        spec: The table.
        typed: Column -> typed values of every row.
        pos: The rows compared (the otherwise valid ones), ascending.
        partner_at: Each row's position in the partners table, when known: the partner_id's
            code (no second hashing of the ids).

    Returns:
        A mask over ``pos`` of the repeating rows and, for each, the index (into ``pos``) of the
        first row it repeats.
    """
    columns = [(col, typed[col.name]) for col in spec.columns if typed.get(col.name) is not None]
    whole = None if pos.size == len(next(iter(typed.values()))) else pos
    mixed = np.zeros(pos.size, dtype=np.uint64)

    def codes(col: Column, value, at: np.ndarray | None) -> np.ndarray:
        if col.name == "partner_id" and partner_at is not None:
            return partner_at.astype(np.int64) if at is None else partner_at[at].astype(np.int64)
        return _column_codes(col, value, at)

    with np.errstate(over="ignore"):
        for col, value in columns:
            part = codes(col, value, whole).view(np.uint64)
            mixed = (mixed ^ part) * np.uint64(0x9E3779B97F4A7C15)
            mixed ^= mixed >> np.uint64(29)
    repeat = np.zeros(pos.size, dtype=bool)
    first = np.zeros(pos.size, dtype=np.int64)
    ordered = np.sort(mixed)  # a vectorised sort: ~5x faster than a hash table of the rows
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return repeat, first
    candidates = np.flatnonzero(np.isin(mixed, np.unique(ordered[1:][same])))
    key = np.zeros(candidates.size, dtype=np.int64)
    for col, value in columns:  # exact: factorised codes combined column by column
        column = pd.factorize(codes(col, value, pos[candidates]))[0].astype(np.int64)
        key = pd.factorize(key * (int(column.max()) + 1) + column)[0].astype(np.int64)
    top = np.maximum.accumulate(key)  # codes number groups in order of first appearance
    is_first = np.ones(key.size, dtype=bool)
    is_first[1:] = top[1:] > top[:-1]
    repeat[candidates[~is_first]] = True
    first[candidates[~is_first]] = candidates[is_first][key[~is_first]]
    return repeat, first


REASONS_VERSION = 8
"""Version of the quarantine reasons' wording and rules (2: a row of a quarantined partner says
so, not "unknown partner_id"; 3: invisible characters in quoted values are escapes; 4: a
converted lead needs qualified_at, a repeated row of a table without an id is a duplicate,
categorical text ignores case; 5: ``today`` and ``now`` are not dates; 6: enumerations ignore
case by ``case_key``, not Arrow's lowercase; 7: a record id is unique per partner, rows of
different partners holding one id are both kept; 8: the report counts those ids, a snapshot's
manifest holds ``shared_ids`` and ``shared_id_examples``). A validated snapshot
holds the reasons and clean rows of its day: one written under another version is validated
again (``features.validated``)."""

QUARANTINE_COLUMNS = ("_row", "reason")
"""Columns every quarantine file adds; an input column of the same name is renamed."""


def quarantine_column(name: str, sources: dict) -> str:
    """Name of an input column in the quarantine file: reserved names get ``_input`` appended."""
    out = name
    while out in QUARANTINE_COLUMNS or (out != name and out in sources):
        out += "_input"
    return out


SPANS_NOTE = re.compile(r"; record spans lines \d+-\d+ \(a stray quote\?\)$")
"""The line-span note a quarantined CSV record's reason may end with."""


def _held_partners(quarantine: pd.DataFrame | None, partners: pd.DataFrame) -> pd.DataFrame:
    """Ids of quarantined partner rows that no valid row has, with the first such row's reason.

    Rows of other tables with such an id are quarantined too; their reason quotes this one
    (without its line-span note, which belongs to the partners file's record).

    Args:
        quarantine: The partners table's quarantine (ids as the file holds them), or None.
        partners: The valid partner rows (ids trimmed).

    Returns:
        ``partner_id`` (trimmed, as the validator compares ids) and ``reason``, one row per id.
    """
    if quarantine is None or quarantine.empty or "partner_id" not in quarantine:
        return pd.DataFrame(
            {"partner_id": pd.Series(dtype="str"), "reason": pd.Series(dtype="str")}
        )
    text = pa.array(
        quarantine["partner_id"].to_numpy(dtype=object), type=pa.string(), from_pandas=True
    )
    ids = pd.Series(pc.utf8_trim_whitespace(text).to_pandas(), dtype=object)
    held = pd.DataFrame(
        {
            "partner_id": ids,
            "reason": quarantine["reason"].astype(str).str.replace(SPANS_NOTE, "", regex=True),
        }
    )
    held = held[held["partner_id"].notna() & (held["partner_id"] != "")]
    held = held[~isin_text(held["partner_id"], partners["partner_id"])]
    return held.drop_duplicates("partner_id", keep="first").reset_index(drop=True)


def _empty(col: Column, n: int) -> pd.Series:
    """An all-missing column of ``col``'s typed dtype."""
    if col.kind == "bool":
        return pd.Series(np.zeros(n, dtype=bool))
    dtype = {"date": "datetime64[ns]", "float": "float64"}.get(col.kind, "str")
    return pd.Series([None] * n, dtype=dtype)


def _data_end(tables: dict[str, pd.DataFrame]) -> pd.Timestamp:
    """Latest timestamp in an observed (not planned) date column of the tables."""
    ends = [
        tables[name][col].max()
        for name, col in observed_date_columns(tables)
        if tables[name][col].notna().any()
    ]
    return max(ends)


LATE_TAIL_DAYS = 7
"""How far the newest event may lie beyond the ``k``-th newest partner's last event (programs
of :data:`LATE_TAIL_SMALL_PROGRAM` partners or more)."""

LATE_TAIL_SMALL_PROGRAM = 200
"""Below this many partners ``k`` is 2 (1% of them would be fewer) and the tolerance is
:data:`LATE_TAIL_SMALL_DAYS`."""

LATE_TAIL_SMALL_DAYS = 45
"""How far the newest event may lie beyond the second newest partner's last event in a program
of fewer than :data:`LATE_TAIL_SMALL_PROGRAM` partners: the quiet days at the end of an extract
that ``--data-end`` may run past the newest event (``build.data_end_tolerance_days``, 45), and
``score --as-of`` past the data (``score.as_of_tolerance_days``). A few partners may well be
the only ones active for a week in a small program; one partner alone for more than 45 days is
what both limits refuse for the whole program."""


@dataclass(frozen=True)
class LateTail:
    """A few partners' events that alone carry the data end (:func:`late_tail`).

    Attributes:
        newest: The data end they set (the newest observed event).
        supported: The ``k``-th newest partner's last event: where every other partner's data
            ends.
        k: How many partners the data end needs behind it.
        partners: The partners with events more than :func:`late_tail_days` after ``supported``.
        rows: Table -> rows dated more than :func:`late_tail_days` after ``supported``.
    """

    newest: pd.Timestamp
    supported: pd.Timestamp
    k: int
    partners: tuple[str, ...]
    rows: dict[str, int]

    def note(self) -> str:
        """One line: what carries the data end, and where everyone else's data ends."""
        shown = ", ".join(self.partners[:3]) + (", ..." if len(self.partners) > 3 else "")
        rows = ", ".join(f"{n:,} {t}" for t, n in self.rows.items())
        kth = {2: "2nd", 3: "3rd"}.get(self.k, f"{self.k}th")
        days = (self.newest.normalize() - self.supported.normalize()).days
        return (
            f"the data end {self.newest:%Y-%m-%d} rests on {len(self.partners)} partner(s) "
            f"({shown}: {rows} row(s) dated after {self.supported:%Y-%m-%d}); every other "
            f"partner's data ends by {self.supported:%Y-%m-%d}, {days:,} days earlier (the "
            f"{kth} newest partner's last event)"
        )

    def to_dict(self) -> dict:
        """JSON-able (a validated snapshot's manifest keeps it)."""
        return {
            "newest": self.newest.isoformat(),
            "supported": self.supported.isoformat(),
            "k": self.k,
            "partners": list(self.partners),
            "rows": dict(self.rows),
        }

    @classmethod
    def from_dict(cls, data: dict | None) -> LateTail | None:
        """The inverse of :meth:`to_dict` (None for None or an unreadable entry)."""
        try:
            return cls(
                pd.Timestamp(data["newest"]),
                pd.Timestamp(data["supported"]),
                int(data["k"]),
                tuple(str(p) for p in data["partners"]),
                {str(t): int(n) for t, n in data["rows"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def observed_date_columns(
    tables: dict[str, pd.DataFrame] | dict[str, dict],
) -> list[tuple[str, str]]:
    """(table, column) of every observed (not planned) date column the tables hold.

    The columns :func:`late_tail` (and the data end) read; the Spark engine's twin
    (:func:`~partnerscore.serving.spark_validate.late_tail_in_spark`) reads the same ones.

    Args:
        tables: Table -> its frame, or its columns (any container of their names).
    """
    return [
        (name, col.name)
        for name, spec in TABLES.items()
        if name in tables
        for col in spec.columns
        if col.kind == "date" and col.observed and col.name in tables[name]
    ]


def late_tail_k(partners: int) -> int:
    """How many partners the data end needs behind it: 1% of them, at least 2, at most 10.

    A program of fewer than 2 partners is not checked (0). Shared by :func:`late_tail` and
    the Spark engine's twin (:func:`~partnerscore.serving.spark_validate.late_tail_in_spark`).
    """
    return 0 if partners < 2 else max(2, min(10, partners // 100))


def late_tail_days(partners: int) -> int:
    """How far the data end may lie beyond the ``k``-th newest partner's last event.

    :data:`LATE_TAIL_DAYS`, or :data:`LATE_TAIL_SMALL_DAYS` in a program of fewer than
    :data:`LATE_TAIL_SMALL_PROGRAM` partners (shared with the Spark engine's twin).
    """
    return LATE_TAIL_DAYS if partners >= LATE_TAIL_SMALL_PROGRAM else LATE_TAIL_SMALL_DAYS


def supported_end(data_end, tail: LateTail | None) -> pd.Timestamp:
    """The newest event every partner's data is vouched for: ``tail.supported``, else ``data_end``.

    What ``score`` reads for "old enough" under ``--at-age`` (and its stale ``--as-of`` check):
    a few partners' late rows (:func:`late_tail`) do not move it.
    """
    return pd.Timestamp(tail.supported if tail is not None else data_end)


def late_tail(tables: dict[str, pd.DataFrame], days: int | None = None) -> LateTail | None:
    """Whether a few partners' events alone carry the data end, and which.

    The data end is the newest observed event; labels run up to it for every partner. A row
    of one partner dated months after everyone else's (a mistyped month, a late load) would
    move it, and every other partner's label window would then count days its data does not
    cover as quiet. The data end is *supported* when at least ``k`` partners have an event
    within ``days`` of it, ``k`` = 1% of the partners, at least 2 and at most 10
    (:func:`late_tail_k`); ``days`` defaults to :func:`late_tail_days`: 7, or 45 in a program
    of fewer than 200 partners (one partner's late row there moved the data end, and with it
    who ``score --at-age`` found old enough, for every partner: 14 of 150 at 90 days).

    Returns:
        None when supported; else the :class:`LateTail` (the ``k``-th newest partner's last
        event, the partners and rows beyond it).
    """
    partners = tables.get("partners")
    k = late_tail_k(len(partners)) if partners is not None else 0
    cols = observed_date_columns(tables)
    if k < 2 or not cols:
        return None
    if days is None:
        days = late_tail_days(len(partners))
    newest = _data_end(tables)
    if pd.isna(newest):
        return None
    recent: set[str] = set()
    for name, col in cols:
        frame = tables[name]
        hit = (frame[col] >= newest - pd.Timedelta(days=days)).to_numpy()
        recent.update(frame.loc[hit, "partner_id"].astype(str).unique().tolist())
        if len(recent) >= k:
            return None
    # rare: per partner newest event, the k-th newest of them
    last = pd.concat(
        [
            tables[name].groupby(tables[name]["partner_id"].astype(str))[col].max()
            for name, col in cols
        ]
    )
    last = last.groupby(level=0).max().dropna().sort_values(ascending=False)
    if len(last) < k:
        return None
    supported = pd.Timestamp(last.iloc[k - 1])
    bound = supported + pd.Timedelta(days=days)
    late = tuple(sorted(last.index[last > bound].astype(str)))
    rows: dict[str, int] = {}
    for name, col in cols:
        n = int((tables[name][col] > bound).sum())
        if n:
            rows[name] = rows.get(name, 0) + n
    return LateTail(newest, supported, k, late, rows)


def load_raw(
    raw_dir: str | Path,
    quarantine_dir: str | Path | None = None,
    *,
    write_quarantine: bool = True,
    config: ValidateConfig | None = None,
) -> RawData:
    """Validate every contract table in ``raw_dir`` and return the clean typed frames.

    Args:
        raw_dir: Folder with one ``<table>.csv`` or ``<table>.parquet`` per table.
        quarantine_dir: Where ``<table>.csv`` quarantine files go (default ``raw_dir/quarantine``).
        write_quarantine: Write (and clear stale) quarantine files.
        config: Plausibility rules (default: events after today + 1 day are quarantined).

    Returns:
        Clean tables, counts, fingerprints, data end and the quarantined rows.

    Raises:
        PartnerscoreError: A required table or column is missing, or a file is empty/unreadable.
    """
    raw_dir = Path(raw_dir)
    qdir = Path(quarantine_dir) if quarantine_dir is not None else raw_dir / "quarantine"
    files, ignored = _find_files(raw_dir)
    return _validate_all(
        {name: (path, None) for name, path in files.items()},
        ValidationReport(
            raw_dir=raw_dir, ignored=ignored, quarantine_dir=qdir if write_quarantine else None
        ),
        qdir if write_quarantine else None,
        config,
    )


def arrow_column(values: pd.Series) -> pa.Array:
    """A frame's column as :func:`load_frames` reads it (mixed Python objects: their text).

    A pandas ``Period`` column is its periods' start times (Arrow would give their ordinals,
    quarantined as ``'20308' is not a date``).
    """
    if isinstance(values.dtype, pd.PeriodDtype):
        values = values.dt.to_timestamp()
    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # mixed Python objects (numbers and text): validate their text, as from a CSV
        text = [None if pd.isna(v) else str(v) for v in values.tolist()]
        return pa.array(text, type=pa.string())


def read_spellings(values: pd.Series) -> list:
    """A column's values as the validator reads a category: trimmed text, None when empty."""
    return _Source(pa.chunked_array([arrow_column(values)])).as_text().to_pylist()


def load_frames(
    frames: dict[str, pd.DataFrame],
    quarantine_dir: str | Path | None = None,
    *,
    config: ValidateConfig | None = None,
    fold_case: bool = True,
) -> RawData:
    """Validate in-memory tables exactly like files (the Python API's entry point).

    Args:
        frames: Table name -> DataFrame with the contract's columns (text or typed values);
            other names (e.g. ``truth``) are ignored and listed as such.
        quarantine_dir: Where quarantine CSVs go (default: not written; the quarantined rows
            are on the result either way).
        config: Plausibility rules.
        fold_case: Read a free category's spellings that differ only by case as one
            (:func:`case_folds`); off for a part of a batch (the Spark job's buckets).

    Returns:
        Clean tables, counts and quarantined rows; table "files" are named ``<frames>/<name>``.
    """
    for name in frames:  # a misspelt contract table would be ignored: its features lost
        if name not in TABLES:
            meant = _meant_table(name, frames)
            if meant is not None:
                raise PartnerscoreError(
                    f"frames: unknown table {quoted(name)}: did you mean '{meant}'? (names "
                    f"that are no contract table are ignored; the tables: {', '.join(TABLES)})"
                )
    for name in REQUIRED_TABLES:
        if name not in frames:
            raise PartnerscoreError(f"frames: missing required table '{name}'")
    inputs = {}
    for name, frame in frames.items():
        if name not in TABLES:
            continue
        if not isinstance(frame, pd.DataFrame):
            raise PartnerscoreError(f"frames: table '{name}' is not a DataFrame")
        twice = frame.columns[frame.columns.duplicated()]
        if len(twice):  # as a file's header naming a column twice
            raise PartnerscoreError(f"<frames>/{name}: column '{twice[0]}' appears twice")
        frame = frame.reset_index(drop=True)
        columns = {str(col): arrow_column(frame[col]) for col in frame.columns}
        table = pa.table(columns) if columns else pa.table({})
        inputs[name] = (Path("<frames>") / name, table)
    qdir = Path(quarantine_dir) if quarantine_dir is not None else None
    report = ValidationReport(
        raw_dir=Path("<frames>"),
        ignored=sorted(set(frames) - set(TABLES)),
        quarantine_dir=qdir,
    )
    return _validate_all(inputs, report, qdir, config, fold_case)


def _meant_table(name: object, given) -> str | None:
    """The contract table a frame's unknown name misspells, if any.

    Only tables not given under their own name: equal but for case, or close (``deal``,
    ``activity``, ``portal_event``); else None.
    """
    import difflib

    text = str(name).strip().lower()
    missing = [table for table in TABLES if table not in given]
    singular = {re.sub("ies$", "y", t).removesuffix("s"): t for t in missing}
    if text in missing or text in singular:
        return singular.get(text, text)
    close = difflib.get_close_matches(text, missing, n=1, cutoff=0.8)
    return close[0] if close else None


def _validate_all(
    inputs: dict[str, tuple[Path, pa.Table | None]],
    report: ValidationReport,
    qdir: Path | None,
    config: ValidateConfig | None,
    fold: bool = True,
) -> RawData:
    """Validate every table (partners first), write quarantine files when ``qdir`` is set.

    ``fold=False`` leaves free categories as spelt (the Spark job's buckets: it folds their
    spellings over the whole batch).
    """
    latest = (config or ValidateConfig()).latest_plausible().to_datetime64()
    tables: dict[str, pd.DataFrame] = {}
    quarantine: dict[str, pd.DataFrame] = {}
    held = None
    for name, spec in TABLES.items():  # partners first: the others reference it
        if name not in inputs:
            continue
        path, given = inputs[name]
        sources, n_rows = _read(path, given)
        lines, spans = (None, None)
        if given is None and path.suffix.lower() == ".csv":
            lines, spans = record_lines(path, n_rows)
        clean, bad, codes, respelled, (shared, examples) = _validate_table(
            spec, sources, n_rows, path, tables.get("partners"), latest, spans, held, fold
        )
        tables[name] = clean
        quarantine[name] = bad
        report.tables[name] = TableReport(
            file=path,
            input_rows=n_rows,
            valid_rows=len(clean),
            quarantined=len(bad),
            reasons=dict(codes),
            physical_lines=lines,
            multiline_records=[]
            if spans is None
            else [(i + 1, int(a), int(b)) for i, (a, b) in enumerate(spans.tolist()) if b > a],
            respelled=respelled,
            shared_ids=shared,
            shared_id_examples=examples,
        )
        if name == "partners" and clean.empty:
            where = ""
            if qdir is not None:
                write_frame_atomic(bad, qdir / "partners.csv")
                where = f" (see {qdir / 'partners.csv'})"
            raise PartnerscoreError(f"{path}: no valid partner rows{where}")
        if name == "partners":  # ids the other tables' rows may name: say why they are absent
            held = _held_partners(bad, clean)
    if qdir is not None:
        write_quarantine(quarantine, qdir)
    files = {name: path for name, (path, given) in inputs.items() if given is None}
    tail = late_tail(tables)
    report.data_end_note = tail.note() if tail is not None else None
    return RawData(
        tables=tables,
        report=report,
        files={name: path for name, (path, _) in inputs.items()},
        fingerprints={name: file_fingerprint(path) for name, path in files.items()},
        data_end=_data_end(tables),
        quarantine=quarantine,
        late_tail=tail,
    )


def write_quarantine(quarantine: dict[str, pd.DataFrame], qdir: Path) -> None:
    """Write ``<qdir>/<table>.csv`` for every table with quarantined rows; remove stale ones."""
    for name in TABLES:
        target = qdir / f"{name}.csv"
        if name in quarantine and not quarantine[name].empty:
            write_frame_atomic(quarantine[name], target)
        else:
            target.unlink(missing_ok=True)


def run_validate(raw_dir: str | Path, config: ValidateConfig | None = None) -> ValidationReport:
    """The ``partnerscore validate`` job: quarantine to ``raw_dir/quarantine``, return counts."""
    return load_raw(raw_dir, config=config).report
