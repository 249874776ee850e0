"""Validated snapshots: validate raw tables once, reuse the typed result while they are unchanged.

``partnerscore validate RAW --validated DIR`` writes, besides the quarantine files of today:

- ``DIR/<table>.parquet``: the clean typed frame of every table present, exactly as
  :func:`~partnerscore.features.validate.load_raw` returns it (the contract's columns in contract
  order, the same dtypes);
- ``DIR/quarantine/<table>.parquet``: the quarantined rows (original text, ``_row``, ``reason``),
  from which the ``<table>.csv`` quarantine files of a later job are written again byte for byte;
- ``DIR/manifest.json`` (written last): the input fingerprints (per table: file name, size,
  mtime_ns, SHA-256 of the content), the contract and snapshot format versions, the package
  version, the quarantine reasons' wording version, the validation rules that decide the result,
  the data end and the per-table counts.

:func:`load_validated` (used by ``build`` and ``score``) returns the same :class:`RawData` as
validating again when every raw table file has the recorded content and the rules give the same
outcome; otherwise it says which file or rule changed in one line.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from partnerscore.features.config import ValidateConfig
from partnerscore.features.contract import CONTRACT_VERSION, TABLES
from partnerscore.features.core import (
    PartnerscoreError,
    file_fingerprint,
    same_file,
    write_frame_atomic,
    write_text_atomic,
)
from partnerscore.features.validate import (
    REASONS_VERSION,
    LateTail,
    RawData,
    SharedId,
    TableReport,
    ValidationReport,
    _data_end,
    _find_files,
    _Source,
    _to_dates,
    load_raw,
    write_quarantine,
)

SNAPSHOT_FORMAT = 1
"""Version of the snapshot layout (files and manifest keys); another one is not read."""
MANIFEST = "manifest.json"
DEFAULT_DIRNAME = "validated"
"""``RAW/validated``: where ``build`` and ``score`` look for a snapshot without ``--validated``."""
FUTURE_CODE = " in the future"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def default_dir(raw_dir: str | Path) -> Path:
    """The well-known snapshot folder of a raw folder: ``RAW/validated``."""
    return Path(raw_dir) / DEFAULT_DIRNAME


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("partnerscore")
    except PackageNotFoundError:  # pragma: no cover - source tree without install
        return "0+unknown"


def _stamp(value: pd.Timestamp | np.datetime64 | None) -> str | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).strftime(TIME_FORMAT)


def _latest_observed(raw: RawData, bound: pd.Timestamp) -> pd.Timestamp | None:
    """Latest observed event date below ``bound`` over every row, quarantined ones included.

    Clean rows give ``data_end``; quarantined rows are parsed again from their text, with the
    validator's own date parser.
    """
    found = [raw.data_end] if raw.tables else []
    for name, bad in raw.quarantine.items():
        if bad.empty:
            continue
        for col in TABLES[name].columns:
            if col.kind != "date" or not col.observed or col.name not in bad:
                continue
            text = pa.chunked_array([pa.array(bad[col.name], from_pandas=True).cast(pa.string())])
            dates = _to_dates(_Source(text)).astype("datetime64[ns]", copy=False)
            dates = dates[~np.isnat(dates) & (dates < bound.to_datetime64())]
            if dates.size:
                found.append(pd.Timestamp(dates.max()))
    return max(found) if found else None


def _rules(config: ValidateConfig, raw: RawData) -> dict:
    bound = config.latest_plausible()
    future = sum(
        n
        for t in raw.report.tables.values()
        for code, n in t.reasons.items()
        if code.endswith(FUTURE_CODE)
    )
    return {
        "reference_date": None if config.reference_date is None else str(config.reference_date),
        "future_tolerance_days": config.future_tolerance_days,
        "latest_plausible": _stamp(bound),
        "latest_observed": _stamp(_latest_observed(raw, bound)),
        "future_quarantined": int(future),
    }


def _refuse_raw_folder(out: Path, raw_dir: str | Path) -> None:
    """Refuse a snapshot folder that is the raw folder itself, in one line.

    Its tables would sit beside the raw files and each table be given twice (deals.parquet
    beside deals.csv).
    """
    if same_file(out, raw_dir):
        raise PartnerscoreError(
            f"--validated {out}: is the raw folder itself; use a folder such as {out}/validated"
        )


def write_validated(
    raw: RawData, out_dir: str | Path, config: ValidateConfig | None = None
) -> Path:
    """Write ``raw`` (validated from files by ``load_raw`` under ``config``) as a snapshot.

    The manifest is removed first and written last: a killed write leaves no usable snapshot,
    never a half one. Table files of tables no longer present are removed.

    Args:
        raw: The result of :func:`load_raw` on a raw folder.
        out_dir: Snapshot folder (created).
        config: The rules ``raw`` was validated with.

    Returns:
        The manifest path.
    """
    config = config or ValidateConfig()
    out = Path(out_dir)
    if not raw.files or any(str(p).startswith("<frames>") for p in raw.files.values()):
        raise PartnerscoreError(f"{out}: only tables validated from files can be snapshotted")
    _refuse_raw_folder(out, raw.report.raw_dir)
    try:
        (out / "quarantine").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PartnerscoreError(f"{out}: cannot create folder: {exc.strerror or exc}") from exc
    (out / MANIFEST).unlink(missing_ok=True)
    inputs, tables = {}, {}
    for name in TABLES:
        table_file, bad_file = out / f"{name}.parquet", out / "quarantine" / f"{name}.parquet"
        if name not in raw.tables:
            table_file.unlink(missing_ok=True)
            bad_file.unlink(missing_ok=True)
            continue
        path = raw.files[name]
        stat = path.stat()
        inputs[name] = {
            "file": path.name,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": raw.fingerprints[name],
        }
        write_frame_atomic(raw.tables[name], table_file)
        write_frame_atomic(raw.quarantine[name], bad_file)
        t = raw.report.tables[name]
        tables[name] = {
            "file": table_file.name,
            "quarantine_file": f"quarantine/{bad_file.name}",
            "columns": list(raw.tables[name].columns),
            "input_rows": t.input_rows,
            "valid_rows": t.valid_rows,
            "quarantined": t.quarantined,
            "reasons": t.reasons,
            "physical_lines": t.physical_lines,
            "multiline_records": [list(r) for r in t.multiline_records],
            "respelled": t.respelled,
            "shared_ids": t.shared_ids,
            "shared_id_examples": [vars(e) for e in t.shared_id_examples],
        }
    manifest = {
        "format": SNAPSHOT_FORMAT,
        "contract_version": CONTRACT_VERSION,
        "package_version": _package_version(),
        "reasons_version": REASONS_VERSION,
        "created_at": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
        "raw_dir": str(Path(raw.report.raw_dir).resolve()),
        "validation": _rules(config, raw),
        "data_end": _stamp(raw.data_end),
        "late_tail": raw.late_tail.to_dict() if raw.late_tail is not None else None,
        "inputs": inputs,
        "tables": tables,
    }
    return write_text_atomic(json.dumps(manifest, indent=2) + "\n", out / MANIFEST)


@dataclass
class SnapshotReport(ValidationReport):
    """A validation report plus where its snapshot was written."""

    snapshot_dir: Path | None = None

    def summary(self) -> str:
        """The validation summary and the snapshot folder."""
        text = super().summary()
        if self.snapshot_dir is not None:
            text += f"\nvalidated tables written to {self.snapshot_dir} ({MANIFEST})"
        return text


def run_validate_snapshot(
    raw_dir: str | Path, out_dir: str | Path, config: ValidateConfig | None = None
) -> SnapshotReport:
    """The ``partnerscore validate RAW --validated DIR`` job: validate, quarantine, snapshot."""
    _refuse_raw_folder(Path(out_dir), raw_dir)  # before minutes of validation, not after
    raw = load_raw(raw_dir, config=config)
    write_validated(raw, out_dir, config)
    return SnapshotReport(**vars(raw.report), snapshot_dir=Path(out_dir))


class StaleSnapshot(PartnerscoreError):
    """A snapshot that does not (or no longer) describe the raw folder under these rules."""


def _manifest(snap: Path) -> dict:
    path = snap / MANIFEST
    if not path.is_file():
        raise StaleSnapshot(
            f"{snap}: not a validated snapshot (no {MANIFEST}); write one with "
            f"`partnerscore validate RAW --validated {snap}`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(manifest, dict)
        keys = ("format", "contract_version", "inputs", "tables", "validation")
        missing = next((k for k in keys if k not in manifest), None)
    except (OSError, UnicodeDecodeError, ValueError, AssertionError) as exc:
        raise StaleSnapshot(f"{path}: unreadable manifest (not a JSON object)") from exc
    if missing is not None:
        raise StaleSnapshot(f"{path}: unreadable manifest (no '{missing}' key)")
    for key in ("inputs", "tables", "validation"):
        value = manifest[key]
        if not isinstance(value, dict) or (
            key != "validation" and not all(isinstance(v, dict) for v in value.values())
        ):
            raise StaleSnapshot(f"{path}: unreadable manifest ('{key}' is not a mapping)")
    if manifest["format"] != SNAPSHOT_FORMAT:
        raise StaleSnapshot(
            f"{path}: snapshot format {manifest['format']}, this version reads {SNAPSHOT_FORMAT}"
        )
    if manifest["contract_version"] != CONTRACT_VERSION:
        raise StaleSnapshot(
            f"{path}: validated against contract v{manifest['contract_version']}, "
            f"this version checks v{CONTRACT_VERSION}; validate again"
        )
    if manifest.get("package_version") != _package_version():
        raise StaleSnapshot(
            f"{path}: written by partnerscore {manifest.get('package_version')}, "
            f"this is {_package_version()}; validate again"
        )
    if manifest.get("reasons_version", 1) != REASONS_VERSION:
        raise StaleSnapshot(
            f"{path}: its quarantine reasons are worded as in version "
            f"{manifest.get('reasons_version', 1)}, this partnerscore words them as in version "
            f"{REASONS_VERSION}; validate again"
        )
    return manifest


def _check_inputs(
    manifest: dict, files: dict[str, Path], snap: Path, content: bool = True
) -> dict[str, str]:
    """SHA-256 of every raw table file, or a StaleSnapshot naming the first changed one.

    With ``content=False`` only names and sizes are checked (no hashes returned).
    """
    recorded: dict = manifest["inputs"]
    for name, path in files.items():
        if name not in recorded:
            raise StaleSnapshot(f"{snap} is stale: {path.name} is new since it was validated")
    for name, entry in recorded.items():
        if name not in files:
            raise StaleSnapshot(f"{snap} is stale: {entry.get('file', name)} is gone")
    hashes = {}
    for name, path in files.items():
        entry = recorded[name]
        if entry.get("file") != path.name:
            raise StaleSnapshot(
                f"{snap} is stale: table '{name}' was {entry.get('file')}, now {path.name}"
            )
        try:
            size = path.stat().st_size
            if size != entry.get("size"):
                raise StaleSnapshot(
                    f"{snap} is stale: {path.name} changed ({entry.get('size')} -> {size} bytes)"
                )
            if not content:
                continue
            hashes[name] = file_fingerprint(path)
        except OSError as exc:  # dangling symlink, permissions: as validation would say
            raise PartnerscoreError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
        if content and hashes[name] != entry.get("sha256"):
            raise StaleSnapshot(f"{snap} is stale: {path.name} changed (content differs)")
    return hashes


def _check_rules(manifest: dict, config: ValidateConfig, snap: Path) -> None:
    """Same outcome under ``config``'s future-date bound as under the recorded one, or raise.

    Equal bounds give equal results. Another bound gives the same result only when no row was
    quarantined as "in the future" (their reasons name the bound) and no observed date of any
    row reaches the new bound.
    """
    rules = manifest["validation"]
    new = config.latest_plausible()
    try:
        old = pd.Timestamp(rules["latest_plausible"])
        seen = rules.get("latest_observed")
        seen = pd.Timestamp(seen) if seen is not None else None
        future = int(rules["future_quarantined"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StaleSnapshot(f"{snap / MANIFEST}: unreadable manifest (validation rules)") from exc
    if new == old:
        return
    shown = f"{new - pd.Timedelta(seconds=1):%Y-%m-%d}"
    if future:
        raise StaleSnapshot(
            f"{snap} is stale: {future} rows were quarantined as in the future under "
            f"validation rules that now give another latest plausible date ({shown}); "
            "validate again"
        )
    if seen is not None and seen >= new:
        raise StaleSnapshot(
            f"{snap} is stale: an event dated {seen:%Y-%m-%d} is after the latest plausible "
            f"date {shown} of the current validation rules; validate again"
        )


def _read_parquet(
    path: Path, snap: Path, columns: list[str] | None = None, full: list[str] | None = None
) -> pd.DataFrame:
    """A snapshot file as a frame.

    With ``columns`` only those are decoded; the file must then hold exactly the columns
    ``full``, as a whole read would check.
    """
    if not path.is_file():
        raise StaleSnapshot(f"{snap}: {path.relative_to(snap)} is missing; validate again")
    try:
        if columns is not None and pq.read_schema(path).names != full:
            raise StaleSnapshot(
                f"{path}: does not match {MANIFEST} (rows or columns); validate again"
            )
        return pq.read_table(path, columns=columns).to_pandas()
    except StaleSnapshot:
        raise
    except Exception as exc:  # arrow errors: one line, no traceback
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise StaleSnapshot(f"{path}: unreadable snapshot file ({first}); validate again") from exc


def read_validated(
    raw_dir: str | Path,
    snapshot_dir: str | Path,
    quarantine_dir: str | Path | None = None,
    *,
    write_quarantine_files: bool = True,
    config: ValidateConfig | None = None,
    skip_columns: dict[str, tuple[str, ...]] | None = None,
) -> RawData:
    """The snapshot in ``snapshot_dir`` as the :class:`RawData` that validating would give.

    ``skip_columns`` (table -> columns) leaves columns a job never reads out of the clean
    tables (they are neither decoded nor held in memory); the quarantine is read whole.

    Raises:
        StaleSnapshot: The snapshot is missing, unreadable, from another contract or package
            version, or does not match the raw files or the validation rules (one line naming
            what changed).
    """
    raw_dir, snap = Path(raw_dir), Path(snapshot_dir)
    config = config or ValidateConfig()
    qdir = Path(quarantine_dir) if quarantine_dir is not None else raw_dir / "quarantine"
    manifest = _manifest(snap)
    files, ignored = _find_files(raw_dir)
    # the raw files are hashed (SHA-256 releases the GIL) while the snapshot is read; a changed
    # input is still the error reported first, as when hashing ran before everything else
    with ThreadPoolExecutor(max_workers=1) as pool:
        hashing = pool.submit(_check_inputs, manifest, files, snap)
        try:
            report, tables, quarantine = _read_tables(
                manifest,
                files,
                ignored,
                snap,
                raw_dir,
                qdir,
                config,
                write_quarantine_files,
                skip_columns,
            )
        except BaseException:
            hashing.result()
            raise
        hashes = hashing.result()
    if write_quarantine_files:
        write_quarantine(quarantine, qdir)
    tail = LateTail.from_dict(manifest.get("late_tail"))
    report.data_end_note = tail.note() if tail is not None else None
    return RawData(
        tables=tables,
        report=report,
        files=files,
        fingerprints=hashes,
        data_end=_data_end(tables),
        quarantine=quarantine,
        late_tail=tail,
    )


def _table_report(manifest: dict, name: str, file: Path, snap: Path) -> TableReport:
    """A table's validation counts as the manifest records them.

    Raises:
        StaleSnapshot: The manifest has no readable entry for the table.
    """
    entry = manifest["tables"].get(name)
    if not isinstance(entry, dict):
        raise StaleSnapshot(f"{snap / MANIFEST}: unreadable manifest (no table '{name}')")
    try:
        return TableReport(
            file=file,
            input_rows=int(entry["input_rows"]),
            valid_rows=int(entry["valid_rows"]),
            quarantined=int(entry["quarantined"]),
            reasons={str(k): int(v) for k, v in entry["reasons"].items()},
            physical_lines=entry["physical_lines"],
            multiline_records=[tuple(int(x) for x in r) for r in entry["multiline_records"]],
            respelled={str(k): int(v) for k, v in entry.get("respelled", {}).items()},
            shared_ids=int(entry["shared_ids"]),
            shared_id_examples=[
                SharedId.of(e["id"], e["partner_count"], e["partners"])
                for e in entry["shared_id_examples"]
            ],
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StaleSnapshot(
            f"{snap / MANIFEST}: unreadable manifest (table '{name}' counts)"
        ) from exc


def _read_tables(
    manifest, files, ignored, snap, raw_dir, qdir, config, write_quarantine_files, skip_columns
):
    """The snapshot's tables, quarantine frames and report (after the rules are checked)."""
    _check_rules(manifest, config, snap)
    report = ValidationReport(
        raw_dir=raw_dir, ignored=ignored, quarantine_dir=qdir if write_quarantine_files else None
    )
    tables, quarantine = {}, {}
    for name in TABLES:  # contract order, like validation
        if name not in files:
            continue
        report.tables[name] = _table_report(manifest, name, files[name], snap)
        skipped = (skip_columns or {}).get(name, ())
        wanted = [c.name for c in TABLES[name].columns if c.name not in skipped]
        tables[name] = _read_parquet(
            snap / f"{name}.parquet",
            snap,
            wanted if skipped else None,
            [c.name for c in TABLES[name].columns],
        )
        quarantine[name] = _read_parquet(snap / "quarantine" / f"{name}.parquet", snap)
        if (len(tables[name]), len(quarantine[name])) != (
            report.tables[name].valid_rows,
            report.tables[name].quarantined,
        ) or list(tables[name].columns) != wanted:
            raise StaleSnapshot(
                f"{snap / name}.parquet: does not match {MANIFEST} (rows or columns); "
                "validate again"
            )
    return report, tables, quarantine


@dataclass(frozen=True)
class SnapshotFiles:
    """A matching snapshot, checked but not decoded (a distributed engine reads its tables).

    Attributes:
        snapshot_dir: The snapshot folder.
        report: The validation counts recorded for it (as :func:`read_validated` gives them).
        tables: Table -> its clean typed Parquet file, for the tables present, contract order.
        quarantine: Table -> its quarantine Parquet file.
        data_end: The recorded data end.
    """

    snapshot_dir: Path
    report: ValidationReport
    tables: dict[str, Path]
    quarantine: dict[str, Path]
    data_end: pd.Timestamp
    manifest: dict
    files: dict[str, Path]

    def verify_content(self) -> dict[str, str]:
        """The SHA-256 check of the raw files (when :func:`check_snapshot` deferred it).

        Returns:
            Table -> SHA-256 of its raw file (``RawData.fingerprints``).

        Raises:
            StaleSnapshot: A raw file's content differs from the recorded one.
        """
        return _check_inputs(self.manifest, self.files, self.snapshot_dir)


def check_snapshot(
    raw_dir: str | Path,
    snapshot_dir: str | Path,
    quarantine_dir: str | Path | None = None,
    *,
    config: ValidateConfig | None = None,
    content: bool = True,
) -> SnapshotFiles:
    """The checks of :func:`read_validated` without reading the tables' values.

    Same manifest, input fingerprint (SHA-256) and rule checks, in the same order and with the
    same one-line errors; every table file must hold exactly the contract's columns and the
    recorded row counts (read from the Parquet footers). With ``content=False`` the raw files'
    names and sizes are checked but not hashed: call :meth:`SnapshotFiles.verify_content`
    before using the result (the pandas job also hashes while it reads). A rule error is then
    reported only after the hashes, so a changed file is still the error reported first.

    Raises:
        StaleSnapshot: As :func:`read_validated`.
    """
    raw_dir, snap = Path(raw_dir), Path(snapshot_dir)
    config = config or ValidateConfig()
    qdir = Path(quarantine_dir) if quarantine_dir is not None else raw_dir / "quarantine"
    manifest = _manifest(snap)
    files, ignored = _find_files(raw_dir)
    _check_inputs(manifest, files, snap, content)
    try:
        _check_rules(manifest, config, snap)
    except StaleSnapshot:
        if not content:
            _check_inputs(manifest, files, snap)
        raise
    report = ValidationReport(raw_dir=raw_dir, ignored=ignored, quarantine_dir=qdir)
    tables, quarantine = {}, {}
    for name in TABLES:
        if name not in files:
            continue
        report.tables[name] = _table_report(manifest, name, files[name], snap)
        tables[name] = snap / f"{name}.parquet"
        quarantine[name] = snap / "quarantine" / f"{name}.parquet"
        full = [c.name for c in TABLES[name].columns]
        for path, rows, columns in (
            (tables[name], report.tables[name].valid_rows, full),
            (quarantine[name], report.tables[name].quarantined, None),
        ):
            if not path.is_file():
                raise StaleSnapshot(f"{snap}: {path.relative_to(snap)} is missing; validate again")
            try:
                meta = pq.ParquetFile(path).metadata
                names = meta.schema.to_arrow_schema().names
            except Exception as exc:  # arrow errors: one line, no traceback
                first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
                raise StaleSnapshot(
                    f"{path}: unreadable snapshot file ({first}); validate again"
                ) from exc
            if meta.num_rows != rows or (columns is not None and names != columns):
                raise StaleSnapshot(
                    f"{snap / name}.parquet: does not match {MANIFEST} (rows or columns); "
                    "validate again"
                )
    try:
        data_end = pd.Timestamp(manifest["data_end"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StaleSnapshot(f"{snap / MANIFEST}: unreadable manifest (data_end)") from exc
    return SnapshotFiles(snap, report, tables, quarantine, data_end, manifest, files)


def find_snapshot(
    raw_dir: str | Path,
    snapshot_dir: str | Path | None = None,
    quarantine_dir: str | Path | None = None,
    *,
    config: ValidateConfig | None = None,
    content: bool = True,
) -> SnapshotFiles | None:
    """:func:`load_validated`'s choice, without loading: the snapshot to use, or None.

    ``snapshot_dir`` must match (else :class:`StaleSnapshot`); without it ``RAW/validated`` is
    used when it matches, and None (with the same ``note:`` line) means: validate the raw tables.
    ``content``: as for :func:`check_snapshot` (a caller that defers the hashes handles a
    stale automatic snapshot itself, with :func:`stale_note`).
    """
    if snapshot_dir is not None:
        return check_snapshot(raw_dir, snapshot_dir, quarantine_dir, config=config, content=content)
    auto = default_dir(raw_dir)
    if (auto / MANIFEST).is_file():
        try:
            return check_snapshot(raw_dir, auto, quarantine_dir, config=config, content=content)
        except StaleSnapshot as exc:
            stale_note(exc, raw_dir)
    return None


def stale_note(exc: StaleSnapshot, raw_dir: str | Path) -> None:
    """The ``note:`` line of a stale automatic snapshot (the raw tables are validated again)."""
    print(f"note: {exc}; validating {raw_dir} again", file=sys.stderr)  # noqa: T201


def load_validated(
    raw_dir: str | Path,
    snapshot_dir: str | Path | None = None,
    quarantine_dir: str | Path | None = None,
    *,
    config: ValidateConfig | None = None,
    skip_columns: dict[str, tuple[str, ...]] | None = None,
) -> RawData:
    """What ``build`` and ``score`` load: a matching snapshot, else the validated raw tables.

    Args:
        raw_dir: Raw tables folder.
        snapshot_dir: A snapshot the caller asked for (``--validated DIR``): it must match, or
            a one-line :class:`StaleSnapshot` (exit 2) says which file or rule changed. None:
            ``RAW/validated`` is used when it exists and matches; when it exists but does not,
            the raw tables are validated again and one ``note:`` line on stderr says why.
        quarantine_dir: Where the quarantine CSVs go (as :func:`load_raw`).
        config: Validation rules.
        skip_columns: Table -> columns left out of the clean tables (columns the job never
            reads; see :func:`read_validated`).

    Returns:
        Exactly what ``load_raw(raw_dir, quarantine_dir, config=config)`` returns (less the
        skipped columns).
    """
    if snapshot_dir is not None:
        return read_validated(
            raw_dir, snapshot_dir, quarantine_dir, config=config, skip_columns=skip_columns
        )
    auto = default_dir(raw_dir)
    if (auto / MANIFEST).is_file():
        try:
            return read_validated(
                raw_dir, auto, quarantine_dir, config=config, skip_columns=skip_columns
            )
        except StaleSnapshot as exc:
            print(f"note: {exc}; validating {raw_dir} again", file=sys.stderr)  # noqa: T201
    raw = load_raw(raw_dir, quarantine_dir, config=config)
    raw.drop_columns(skip_columns or {})
    return raw


__all__ = [
    "MANIFEST",
    "SnapshotFiles",
    "SnapshotReport",
    "StaleSnapshot",
    "check_snapshot",
    "default_dir",
    "find_snapshot",
    "load_validated",
    "read_validated",
    "run_validate_snapshot",
    "write_validated",
]
