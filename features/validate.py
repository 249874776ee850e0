"""Validation against the raw-data contract, with quarantine.

Every input row is either used (returned in a clean, typed frame) or written to
``<quarantine>/<table>.csv`` with its 1-based data-row number (``_row``) and the reason, so
``valid + quarantined == input`` for every table. Problems that make a whole file unusable
(missing required table or column, empty or unreadable file) stop with a one-line
:class:`PartnerscoreError` naming the file and column.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from partnerscore.features.contract import REQUIRED_TABLES, TABLES, Column, TableSpec, schema
from partnerscore.features.core import PartnerscoreError, file_fingerprint, write_frame_atomic

TRUE = {"true", "1", "yes", "y", "t"}
FALSE = {"false", "0", "no", "n", "f"}


@dataclass
class TableReport:
    """Validation counts of one table."""

    file: Path
    input_rows: int
    valid_rows: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class ValidationReport:
    """Validation counts of every table read."""

    raw_dir: Path
    tables: dict[str, TableReport] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    quarantine_dir: Path | None = None

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
        if self.ignored:
            lines.append(f"ignored files: {', '.join(self.ignored)}")
        if self.quarantined_total and self.quarantine_dir is not None:
            lines.append(f"quarantined rows written to {self.quarantine_dir}/<table>.csv")
        else:
            lines.append("no rows quarantined")
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
    """

    tables: dict[str, pd.DataFrame]
    report: ValidationReport
    files: dict[str, Path]
    fingerprints: dict[str, str]
    data_end: pd.Timestamp
    quarantine: dict[str, pd.DataFrame] = field(default_factory=dict)

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


def _find_files(raw_dir: Path) -> tuple[dict[str, Path], list[str]]:
    if not raw_dir.is_dir():
        raise PartnerscoreError(f"{raw_dir}: raw data folder not found")
    found: dict[str, Path] = {}
    ignored = []
    for path in sorted(raw_dir.iterdir()):
        if path.is_dir() or path.name.startswith("."):
            continue
        stem, suffix = path.stem, path.suffix.lower()
        if stem in TABLES and suffix in (".csv", ".parquet"):
            if stem in found:
                raise PartnerscoreError(
                    f"{raw_dir}: table '{stem}' given twice ({found[stem].name} and {path.name}); "
                    "keep one"
                )
            found[stem] = path
        else:
            ignored.append(path.name)
    for name in REQUIRED_TABLES:
        if name not in found:
            raise PartnerscoreError(
                f"{raw_dir}: missing required table '{name}' ({name}.csv or {name}.parquet)"
            )
    return found, ignored


def _read(path: Path) -> pd.DataFrame:
    """Read a table file with every value as text (None for empty)."""
    if path.stat().st_size == 0:
        raise PartnerscoreError(f"{path}: empty file")
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(
                path, dtype=str, keep_default_na=False, encoding="utf-8-sig", on_bad_lines="error"
            )
        else:
            frame = pd.read_parquet(path)
    except PartnerscoreError:
        raise
    except UnicodeDecodeError as exc:
        raise PartnerscoreError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except pd.errors.EmptyDataError as exc:
        raise PartnerscoreError(f"{path}: empty file") from exc
    except Exception as exc:  # parser and arrow errors: one line, no traceback
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise PartnerscoreError(f"{path}: cannot read file: {first}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    text = {}
    for col in frame.columns:
        values = frame[col]
        missing = values.isna().to_numpy()
        if pd.api.types.is_datetime64_any_dtype(values):
            s = values.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").astype(object)
        else:
            s = values.astype("str").str.strip().astype(object)
        s[missing | (s == "").to_numpy()] = None
        text[col] = s
    text = pd.DataFrame(text, index=frame.index, columns=list(frame.columns))
    return text.reset_index(drop=True)


class _Checker:
    """Collects per-row problems for one table, vectorised."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.messages: list[tuple[np.ndarray, pd.Series | str, str]] = []

    def add(self, mask, message: pd.Series | str, code: str) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            self.messages.append((mask, message, code))

    @property
    def bad(self) -> np.ndarray:
        out = np.zeros(self.n, dtype=bool)
        for mask, _, _ in self.messages:
            out |= mask
        return out

    def reasons(self) -> tuple[pd.Series, Counter]:
        text = pd.Series([""] * self.n, dtype=object)
        codes: Counter = Counter()
        for mask, message, code in self.messages:
            part = message[mask] if isinstance(message, pd.Series) else message
            text[mask] = text[mask] + "; " + part
            codes[code] += int(mask.sum())
        return text.str.removeprefix("; "), codes


def _quote(values: pd.Series) -> pd.Series:
    return "'" + values.astype(object).fillna("").astype(str).str.slice(0, 60) + "'"


def _parse(col: Column, raw: pd.Series, check: _Checker) -> pd.Series:
    present = raw.notna().to_numpy()
    if col.kind == "datetime":
        parsed = pd.to_datetime(raw, errors="coerce", utc=True, format="ISO8601")
        parsed = parsed.dt.tz_convert(None).astype("datetime64[ns]")
        check.add(
            present & parsed.isna().to_numpy(),
            f"{col.name} " + _quote(raw) + " is not a date",
            f"{col.name} not a date",
        )
        value = parsed
    elif col.kind == "float":
        parsed = pd.to_numeric(raw, errors="coerce").astype(float)
        finite = np.isfinite(parsed.to_numpy())
        check.add(
            present & ~finite,
            f"{col.name} " + _quote(raw) + " is not a number",
            f"{col.name} not a number",
        )
        parsed = parsed.where(finite)
        vals = parsed.to_numpy()
        with np.errstate(invalid="ignore"):
            if col.min is not None:
                check.add(
                    finite & (vals < col.min),
                    f"{col.name} " + _quote(raw) + f" below {col.min:g}",
                    f"{col.name} below {col.min:g}",
                )
            if col.max is not None:
                check.add(
                    finite & (vals > col.max),
                    f"{col.name} " + _quote(raw) + f" above {col.max:g}",
                    f"{col.name} above {col.max:g}",
                )
        value = parsed
    elif col.kind == "bool":
        low = raw.str.lower()
        is_true = low.isin(TRUE).to_numpy()
        is_false = low.isin(FALSE).to_numpy()
        check.add(
            present & ~is_true & ~is_false,
            f"{col.name} " + _quote(raw) + " is not true/false",
            f"{col.name} not boolean",
        )
        value = pd.Series(is_true, index=raw.index)
    else:
        value = raw.astype("str").where(raw.notna(), None)
        if col.choices:
            check.add(
                present & ~raw.isin(col.choices).to_numpy(),
                f"{col.name} " + _quote(raw) + " not one of " + "/".join(col.choices),
                f"{col.name} unknown value",
            )
    if not col.nullable:
        check.add(~present, f"{col.name} is missing", f"{col.name} missing")
    return value


def _validate_table(
    spec: TableSpec, raw: pd.DataFrame, path: Path, partners: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame, Counter]:
    for col in spec.columns:
        if col.required and col.name not in raw.columns:
            raise PartnerscoreError(f"{path}: missing required column '{col.name}'")
    if spec.required and raw.empty:
        raise PartnerscoreError(f"{path}: no data rows")
    n = len(raw)
    check = _Checker(n)
    typed = {}
    for col in spec.columns:
        if col.name in raw.columns:
            typed[col.name] = _parse(col, raw[col.name], check)
    clean = pd.DataFrame(typed)

    if spec.name == "deals":
        status = raw["status"]
        closed = clean["closed_at"].notna().to_numpy()
        finished = status.isin(["won", "lost"]).to_numpy()
        check.add(
            finished & ~closed,
            "status " + _quote(status) + " needs closed_at",
            "won/lost without closed_at",
        )
        check.add(
            (status == "open").to_numpy() & closed,
            "status 'open' but closed_at is set",
            "open with closed_at",
        )
    for later, earlier in spec.order:
        if later in clean and earlier in clean:
            bad = (clean[later] < clean[earlier]).to_numpy()
            check.add(
                bad,
                f"{later} " + _quote(raw[later]) + f" before {earlier} " + _quote(raw[earlier]),
                f"{later} before {earlier}",
            )
    if spec.references_partner and partners is not None:
        signed = partners.set_index("partner_id")["signed_at"]
        pid = raw["partner_id"]
        known = pid.isin(signed.index).to_numpy()
        check.add(
            pid.notna().to_numpy() & ~known,
            "unknown partner_id " + _quote(pid),
            "unknown partner_id",
        )
        partner_signed = pid.map(signed)
        for col in spec.after_signing:
            if col in clean:
                bad = (clean[col] < partner_signed).fillna(False).to_numpy(dtype=bool)
                check.add(
                    bad,
                    f"{col} "
                    + _quote(raw[col])
                    + " before the partner's signed_at "
                    + partner_signed.dt.strftime("%Y-%m-%d %H:%M:%S").fillna(""),
                    f"{col} before signing",
                )
    if spec.key:
        ok = ~check.bad
        keys = raw[spec.key]
        # duplicates among otherwise valid rows only: the first valid occurrence is kept
        ok_keys = keys[ok]
        dup_ok = ok_keys.duplicated(keep="first")
        dup = np.zeros(n, dtype=bool)
        dup[np.flatnonzero(ok)[dup_ok.to_numpy()]] = True
        first_row = (
            pd.Series(np.flatnonzero(ok) + 1, index=ok_keys.index)
            .groupby(ok_keys.to_numpy())
            .transform("first")
        )
        first = pd.Series("", index=raw.index, dtype=object)
        first[first_row.index] = first_row.astype(str)
        check.add(
            dup,
            f"duplicate {spec.key} " + _quote(keys) + " (first at row " + first + ")",
            f"duplicate {spec.key}",
        )

    bad = check.bad
    reasons, codes = check.reasons()
    quarantine = raw[bad].copy()
    quarantine.insert(0, "_row", np.flatnonzero(bad) + 1)
    quarantine["reason"] = reasons[bad].to_numpy()
    clean = clean[~bad].reset_index(drop=True)
    for col in spec.columns:
        if col.kind in ("id", "text", "category") and col.name in clean:
            clean[col.name] = clean[col.name].astype("str").where(clean[col.name].notna(), None)
    return clean, quarantine.reset_index(drop=True), codes


def _data_end(tables: dict[str, pd.DataFrame]) -> pd.Timestamp:
    """Latest timestamp in an observed (not planned) date column of the tables."""
    ends = [
        tables[name][col.name].max()
        for name, spec in TABLES.items()
        if name in tables
        for col in spec.columns
        if col.kind == "datetime"
        and col.observed
        and col.name in tables[name]
        and tables[name][col.name].notna().any()
    ]
    return max(ends)


def load_raw(
    raw_dir: str | Path, quarantine_dir: str | Path | None = None, *, write_quarantine: bool = True
) -> RawData:
    """Validate every contract table in ``raw_dir`` and return the clean typed frames.

    Args:
        raw_dir: Folder with one ``<table>.csv`` or ``<table>.parquet`` per table.
        quarantine_dir: Where ``<table>.csv`` quarantine files go (default ``raw_dir/quarantine``).
        write_quarantine: Write (and clear stale) quarantine files.

    Returns:
        Clean tables, counts, fingerprints, data end and the quarantined rows.

    Raises:
        PartnerscoreError: A required table or column is missing, or a file is empty/unreadable.
    """
    raw_dir = Path(raw_dir)
    qdir = Path(quarantine_dir) if quarantine_dir is not None else raw_dir / "quarantine"
    files, ignored = _find_files(raw_dir)
    report = ValidationReport(raw_dir=raw_dir, ignored=ignored, quarantine_dir=qdir)
    tables: dict[str, pd.DataFrame] = {}
    quarantine: dict[str, pd.DataFrame] = {}
    for name, spec in TABLES.items():  # partners first: the others reference it
        if name not in files:
            continue
        path = files[name]
        raw = _read(path)
        clean, bad, codes = _validate_table(spec, raw, path, tables.get("partners"))
        tables[name] = clean
        quarantine[name] = bad
        report.tables[name] = TableReport(
            file=path,
            input_rows=len(raw),
            valid_rows=len(clean),
            quarantined=len(bad),
            reasons=dict(codes),
        )
        if name == "partners" and clean.empty:
            raise PartnerscoreError(f"{path}: no valid partner rows (see {qdir / 'partners.csv'})")
    if write_quarantine:
        for name in TABLES:
            target = qdir / f"{name}.csv"
            if name in quarantine and not quarantine[name].empty:
                write_frame_atomic(quarantine[name], target)
            else:
                target.unlink(missing_ok=True)
    return RawData(
        tables=tables,
        report=report,
        files=files,
        fingerprints={name: file_fingerprint(path) for name, path in files.items()},
        data_end=_data_end(tables),
        quarantine=quarantine,
    )


def check_schemas(raw: RawData) -> None:
    """Assert the clean frames satisfy the published pandera schemas (used by tests)."""
    for name, frame in raw.tables.items():
        schema(name).validate(frame, lazy=True)


def run_validate(raw_dir: str | Path) -> ValidationReport:
    """The ``partnerscore validate`` job: quarantine to ``raw_dir/quarantine``, return counts."""
    return load_raw(raw_dir).report
