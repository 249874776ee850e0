"""Shared building blocks: user-facing errors, frozen configs, hashing and atomic frame I/O."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Number
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pandas is imported where used: `partnerscore --help` does not need it
    import numpy as np
    import pandas as pd

FRAME_SUFFIXES = (".csv", ".parquet")
TEXT_ID_COLUMNS = ("partner_id", "deal_id", "lead_id", "activity_id", "commitment_id", "course_id")
"""Id columns read as text from CSV outputs, whatever they look like."""
MAX_DAYS = 36_525
"""The longest day count an option takes (onboarding ages, horizons, periods): 100 years.
Longer is a typo, and a date plus more than ~86,000 days passes 2262-04-11, the last instant a
nanosecond timestamp holds (the arithmetic would wrap around silently)."""


def check_day_count(option: str, days: int, low: int = 0) -> None:
    """Stop with one line naming ``option`` unless ``low <= days <=`` :data:`MAX_DAYS`."""
    if not low <= days <= MAX_DAYS:
        raise OptionError(
            f"{option} {days}: expected a number of days from {low} to {MAX_DAYS:,} (100 years)"
        )


def case_key(text: str) -> str:
    """What two spellings of a free category must share to be one value: ``str.lower``.

    The one rule of validation's case folds (:func:`~partnerscore.features.validate.case_folds`)
    and of scoring's reading of a category the model knows in another case
    (:func:`~partnerscore.models.bundle.known_spellings`). Unicode lowercasing, not full case
    folding: ``'ZÜRICH'`` is ``'zürich'`` and the Kelvin sign ``'\u212a'`` is ``'k'``, but
    ``'STRASSE'`` is not ``'straße'``, ``'İ'`` (dotted capital I) lowers to ``'i̇'`` (two code
    points), not ``'i'``, and a composed ``'é'`` is not a decomposed one (no normalisation).
    """
    return text.lower()


def visible(text: str) -> str:
    r"""``text`` as printed in a reason or an error line, every character visible.

    Characters that print as nothing or as a plain space (control characters such as NUL or
    tab, format characters such as the zero-width space U+200B or the BOM, no-break and other
    Unicode spaces, unassigned code points) are written as Python escapes (``\x00``,
    ``\t``, ``\u200b``, ``\xa0``), so a value holding one no longer reads exactly like
    the valid value it resembles; backslashes are then doubled so that an escape is never
    ambiguous. Printable text, non-ASCII letters included (``Zürich``), is returned unchanged.
    """
    if text.isprintable():
        return text
    return "".join(
        ("\\\\" if ch == "\\" else ch)
        if ch.isprintable()
        else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
        for ch in text
    )


CLOCK_WORDS = ("today", "now")
"""Text pandas' date parsers read as the clock's time, not a date (these exact spellings): a date
column holding one would be dated whenever it is read."""


def clock_words(values: pd.Series) -> np.ndarray:
    """Where a date column holds a :data:`CLOCK_WORDS` text (pandas would date it now).

    Only text can: a typed date column (numpy's, or Arrow's ``timestamp[...][pyarrow]``, whose
    ``isin`` refuses text) holds none.
    """
    import numpy as np
    import pandas as pd

    if values.dtype != object and not pd.api.types.is_string_dtype(values.dtype):
        return np.zeros(len(values), dtype=bool)
    return values.isin(CLOCK_WORDS).to_numpy()


def not_a_date(source: object, row: int, value: object, column: str = "as_of") -> str:
    """The one line for a date cell that is empty or no date (``row``: 0-based position).

    A value that is no text says what it is: true/false (a bool column; also the text
    ``True``/``false``, which a CSV column holds as booleans unless a cell is empty) or a
    number (a numeric column: ``20260101`` is no date).
    """
    import numbers

    import numpy as np
    import pandas as pd

    if pd.isna(value):
        return f"{at_row(source, row, column)}: is empty"
    what = f"{quoted(value)} is not a date"
    if isinstance(value, bool | np.bool_) or str(value).strip().lower() in ("true", "false"):
        what += " (true/false; give dates as YYYY-MM-DD)"
    elif isinstance(value, numbers.Number):
        what += " (a number; give dates as YYYY-MM-DD)"
    return f"{at_row(source, row, column)}: {what}"


def as_of_dates(source: object, frame: pd.DataFrame, column: str = "as_of") -> pd.Series:
    """A frame's ``as_of`` column as plain timestamps; every row must hold a date.

    The one reading of an ``as_of`` column that is not raw data: scores files (``monitor``,
    ``forecast``, ``report`` and what reads scores through them), a feature frame
    (``score --features``, the pyfunc model, the API:
    :func:`~partnerscore.models.frame_check.check_feature_frame`) and a ``build --cutoffs``
    table. Values of several time zones stop with :func:`mixed_zones`' line; values of one
    zone are read in UTC with the zone dropped, as the data contract reads zoned times (score
    files carry plain dates; a zoned column ended forecast with an unexpected TypeError).
    Dates with a UTC offset among dates without one (or the reverse) are several zones too
    (``--cutoffs`` converted each to UTC, so a table of mixed offsets was a plan of instants
    nobody wrote). Values are read in ISO 8601, as raw tables' dates are: pandas' own guess
    reads a column in its first value's form, so a date in another form (``2026-01-02 10:00``
    or ``2026-01-02T00:00:00`` after ``2026-01-01``; an offset among plain dates) was made NaT
    and reported as "not a date", and a column of ``02/01/2026`` was read month-first. A
    value in another form (``02/01/2026``, ``Jan 5 2026``) is not a date, nor is ``today`` or
    ``now`` (:data:`CLOCK_WORDS`), which pandas reads as the clock's time, nor a number
    (``20260101`` was read as nanoseconds since 1970) or true/false (:func:`not_a_date`).

    Args:
        source: The file (or "features"), for messages; a dataset folder's
            :class:`PartRows` names a row by its part file and row there (:func:`at_row`).
        frame: Its rows, with ``as_of`` and ``partner_id`` columns (positions are rows).
        column: The date column read when not ``as_of`` (an assignment table's
            ``assigned_at``), in the same way and named in the messages.

    Raises:
        PartnerscoreError: as_of values of several time zones, or with and without an offset;
            an empty as_of or one that is no date (one line naming the row).
    """
    import numpy as np
    import pandas as pd

    given = frame[column]
    typed = pd.api.types.is_numeric_dtype(given) or pd.api.types.is_bool_dtype(given)
    if typed and given.notna().any():  # numbers or true/false: none is a date
        row = int(np.flatnonzero(given.notna().to_numpy())[0])
        raise PartnerscoreError(not_a_date(source, row, given.iloc[row], column))
    if given.dtype == object:  # a number among text (a Python frame): pandas read 20260101
        numbers = [v for v in pd.unique(given) if isinstance(v, Number) and not pd.isna(v)]
        if numbers:
            row = int(np.flatnonzero(given.isin(numbers).to_numpy())[0])
            raise PartnerscoreError(not_a_date(source, row, given.iloc[row], column))
    try:
        when = pd.to_datetime(given, errors="coerce", format="ISO8601")
    except (ValueError, TypeError) as exc:  # as_of values of several time zones
        raise PartnerscoreError(mixed_zones(source, frame, exc, column)) from None
    missing = when.isna().to_numpy() | clock_words(given)  # pandas dated those now
    if missing.any():  # an undated score sorted last: report kept it as a partner's latest
        row = int(np.flatnonzero(missing)[0])
        raise PartnerscoreError(not_a_date(source, row, given.iloc[row], column))
    if isinstance(when.dtype, pd.DatetimeTZDtype):
        when = when.dt.tz_convert("UTC").dt.tz_localize(None)
    return when


def mixed_zones(source: object, frame: pd.DataFrame, exc: Exception, column: str = "as_of") -> str:
    """The one-line error for as_of values pandas cannot read as one column (mixed zones).

    ``pd.to_datetime`` stops with a ``ValueError`` ("Mixed timezones detected") at as_of
    values of different UTC offsets, ``errors="coerce"`` or not (:func:`as_of_dates`).

    Args:
        source: The file (or "features"), for the message.
        frame: Its rows, with ``as_of`` and ``partner_id`` columns.
        exc: The error ``pd.to_datetime`` raised, quoted when no row's zone differs.
        column: The date column, when not ``as_of``.

    Returns:
        The message naming the first row (1-based) whose zone is not the first date's, its value
        and partner (a value that is no date has no zone); a date without a UTC offset among
        dates with one (or the reverse) is said to be so. Pandas' own first line when every
        date has the first one's zone.
    """
    import pandas as pd

    zones = []
    for value in frame[column].tolist():
        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError):
            stamp = pd.NaT
        zones.append(_NO_DATE if stamp is pd.NaT else str(stamp.tz))  # "None": no offset
    dated = [i for i, zone in enumerate(zones) if zone is not _NO_DATE]  # no date: no zone
    first = dated[0] if dated else None
    row = next((i for i in dated if zones[i] != zones[first]), None)
    if row is None:
        return f"{source}: column '{column}': {str(exc).splitlines()[0]}"
    values = frame[column]
    if "None" in (zones[row], zones[first]):
        has = "has no UTC offset" if zones[row] == "None" else "has a UTC offset"
        other = "one" if zones[row] == "None" else "none"
        what = f"{has} and {other_row(source, first, row)} ({quoted(values.iloc[first])}) has "
        what += other
    else:
        what = (
            f"has another time zone than {other_row(source, first, row)} "
            f"({quoted(values.iloc[first])})"
        )
    return (
        f"{at_row(source, row, column)}: {quoted(values.iloc[row])} {what} "
        f"(partner {quoted(frame['partner_id'].iloc[row])})"
        f"; give every {column} in one time zone, or none"
    )


_NO_DATE = object()
"""A value of :func:`mixed_zones`' scan that is no date (and so has no zone)."""


def quoted(value: object, limit: int | None = None) -> str:
    """A cell value for a reason or an error line: ``'value'`` with :func:`visible` characters.

    Args:
        value: The value (shown as ``str(value)``).
        limit: Keep the first ``limit`` characters of the value (None: all).
    """
    return f"'{visible(str(value)[:limit])}'"


class PartnerscoreError(Exception):
    """An error the user can act on: the CLI prints its one-line message, never a traceback.

    Args:
        message: One line naming the file, column and row where known.
        exit_code: Process exit code used by the CLI.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = " ".join(str(message).split())
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


UNAVAILABLE = 69
"""Exit code of a job that could not reach a service it needs: ``EX_UNAVAILABLE`` of BSD's
sysexits.h, "a service is unavailable".

The MLflow store (a tracking server, a database), the score history or the decision ledger did
not answer: a connection refused, reset or timed out, a host name not resolved, HTTP 5xx, a
database server starting up or out of connection slots. Not 2 (the input is fine) nor 70 (no
bug): a scheduler may run the job again later. A service that answers and refuses (wrong
credentials, no such database, HTTP 401/403/404) is a configuration error, exit 2.
"""


class ServiceUnavailable(PartnerscoreError):
    """A service the job needs cannot be reached now (exit :data:`UNAVAILABLE`).

    Args:
        message: One line naming the service and its URL (any password masked).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=UNAVAILABLE)


class OptionError(PartnerscoreError):
    """A bad value of one command-line option, or option values that do not go together.

    Raised where the value is checked (a job's arguments carry the options' names), for what
    the command line and the configuration decide alone: a count out of range, a malformed
    date or list, an unknown name of a fixed set. Errors about data (a file's contents, the
    registry, a model, a row) stay :class:`PartnerscoreError` s. The console script reports it
    as a usage error: the command's usage line, then the one ``error:`` line; exit code 2.
    """


class FrozenConfig(BaseModel):
    """Base for every configuration model: immutable and strict about unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def stable_hash(payload: Any, length: int = 12) -> str:
    """Hash any JSON-serialisable payload (or pydantic model) deterministically.

    Args:
        payload: A pydantic model or JSON-serialisable value.
        length: Number of hex characters to keep.

    Returns:
        The leading ``length`` hex characters of the SHA-256 of canonical JSON.
    """
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def milestone_dates(signed_at, days: int) -> pd.Series:
    """Each partner's onboarding milestone ``signed_at + days`` (``score --at-age DAYS``).

    The one definition of a milestone cut-off: the features (``build_scoring_frame_at_age``),
    the batch's scope and the Spark engine all take theirs from here. A milestone past
    2262-04-11 (the last nanosecond timestamp) is NaT: no partner reaches it within any data.
    """
    import numpy as np
    import pandas as pd

    signed = pd.Series(pd.to_datetime(signed_at)).astype("datetime64[ns]")
    ns = signed.to_numpy().view("i8")
    nat, top = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    if int(days) < 0:
        raise PartnerscoreError(f"{days}: an onboarding age is a non-negative number of days")
    step = int(days) * 86_400 * 10**9
    # NaT where the milestone would pass the last representable instant: nobody is that old
    out = np.full(len(ns), nat, dtype=np.int64)
    limit = top - step  # a Python int: the latest signing that reaches the milestone
    if limit > nat:
        reach = (ns != nat) & (ns <= limit)
        half = step // 2  # a step above 2**63 (1970 -> 2262) is added in two halves that fit
        out[reach] = (ns[reach] + half) + (step - half)
    return pd.Series(out.view("datetime64[ns]"), index=signed.index)


def file_fingerprint(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def frame_format(path: str | Path) -> str:
    """Return ``csv`` or ``parquet`` from a file name, or raise a PartnerscoreError."""
    suffix = Path(path).suffix.lower()
    if suffix not in FRAME_SUFFIXES:
        raise PartnerscoreError(f"{path}: unsupported file type '{suffix}' (use .csv or .parquet)")
    return suffix.lstrip(".")


FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula (OWASP CSV injection)."""
STALE_TMP_SECONDS = 15 * 60
"""A ``.<name>.*.tmp`` file older than this is a leftover of a killed job and is removed."""


def _neutralise(text: pd.Series) -> pd.Series:
    """Prefix ``'`` to cells a spreadsheet would run as formulas (and to already-quoted ones).

    A cell starting with ``= + - @``, tab or CR gets a leading apostrophe; so does a cell that
    already starts with apostrophes followed by such a character, so :func:`_restore` can undo
    exactly one level and every value round-trips.
    """
    s = text.astype("str")
    bare = s.str.lstrip("'")
    risky = bare.str[:1].isin(FORMULA_TRIGGERS) & bare.str.len().gt(0)
    return s.where(~risky.fillna(False) | text.isna(), "'" + s)


def _restore(text: pd.Series) -> pd.Series:
    """Undo :func:`_neutralise` on a column read back from a CSV written by partnerscore."""
    s = text.astype("str")
    escaped = s.str.startswith("'") & s.str.lstrip("'").str[:1].isin(FORMULA_TRIGGERS)
    return s.where(~escaped.fillna(False), s.str[1:])


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells cannot run as spreadsheet formulas (see README)."""
    import pandas as pd

    out = frame.copy()
    for name in out.columns:
        col = out[name]
        if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
            out[name] = _neutralise(col).where(col.notna(), None)
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _clean_stale(path: Path) -> None:
    """Remove this target's temporary files left by a killed job (older than a grace period)."""
    now = time.time()
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                tmp.unlink()
        except OSError:
            continue


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in name)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file.

    The same path once links and ``..`` are resolved, or one file by two names (a hard link,
    a folder's other name). A path not there (yet) is compared by its resolved form only.
    """
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): not the same
        return False


def write_target(path: str | Path) -> Path:
    """The file that writing ``path`` replaces: ``path``, or the file its symbolic link names.

    A temporary renamed over a link replaces the link with a plain file, and the link's
    target (``data/scores/latest.csv -> /shared/scores.csv``) is never updated: the atomic
    writers stage beside the link's final target and rename over it. A dangling link names
    the file to create (its folder too).

    Raises:
        PartnerscoreError: The links loop (one line naming ``path``).
    """
    path = Path(path)
    if not path.is_symlink():
        return path
    try:
        os.stat(path)
    except OSError as exc:  # ENOENT: a dangling link, whose target is created
        if exc.errno == errno.ELOOP:
            raise PartnerscoreError(f"{path}: cannot write: symbolic link loop") from exc
    return Path(os.path.realpath(path))


def _named(path: Path, target: Path) -> str:
    """``path`` for messages, with the file it links to (the one written) when it is a link."""
    return str(path) if target == path else f"{path} (link to {target})"


def _stage(path: Path, write: Callable[[str], None]) -> Path:
    """Write to a new temporary file beside ``path`` (mode 0666 less the umask); return it.

    For a symbolic link, beside its target (:func:`write_target`). Stale temporaries of the
    same target are cleaned first, and OS errors (read-only folder, disk full, target is a
    folder) become one-line :class:`PartnerscoreError` naming the path.
    """
    target = write_target(path)
    try:
        if target.is_dir():
            raise PartnerscoreError(f"{_named(path, target)}: is a folder, expected a file path")
        target.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale(target)
        prefix = f".{target.name}."
        fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
    except OSError as exc:
        why = exc.strerror or exc
        raise PartnerscoreError(f"{_named(path, target)}: cannot write: {why}") from exc
    os.close(fd)
    try:
        os.chmod(tmp_name, 0o666 & ~_umask())
        write(tmp_name)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        why = exc.strerror or exc
        raise PartnerscoreError(f"{_named(path, target)}: cannot write: {why}") from exc
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return Path(tmp_name)


def _publish(tmp: Path, path: Path) -> Path:
    """Rename ``tmp`` over ``path`` (over the file a symbolic link names); return ``path``.

    The temporary's bytes are flushed to the disk (fsync) before the rename and its folder
    after it: without them a power cut could leave the new name on an empty or partial file
    (the file system may write the rename before the data), and a job that orders its
    writes (``experiment assign``: the registry before the assignment table) could find the
    later one on the disk without the earlier.
    """
    try:
        target = write_target(path)
    except PartnerscoreError:
        tmp.unlink(missing_ok=True)
        raise
    try:
        _fsync(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        why = exc.strerror or exc
        raise PartnerscoreError(f"{_named(path, target)}: cannot write: {why}") from exc
    _fsync(target.parent)
    return path


def _atomic(path: Path, write: Callable[[str], None]) -> Path:
    """Write via a temporary file in the target folder, then rename over the target."""
    return _publish(_stage(path, write), path)


def dictionary_columns(frame: pd.DataFrame) -> list[str]:
    """The columns a Parquet file dictionary-encodes: every column but floating-point ones.

    Text, flags, dates and integers repeat and shrink with a dictionary; floats (scores,
    contributions) are mostly distinct, so their dictionary is built, overflows and is thrown
    away: at 100k rows x 225 float columns that cost ~1.2 s of CPU for a larger file. How
    columns are encoded never changes the values read back.
    """
    import pandas as pd

    return [str(c) for c, dtype in frame.dtypes.items() if not pd.api.types.is_float_dtype(dtype)]


def _frame_writer(frame: pd.DataFrame, path: Path, safe_csv: bool) -> Callable[[str], None]:
    if frame_format(path) == "csv":
        data = spreadsheet_safe(frame) if safe_csv else frame
        return lambda name: data.to_csv(name, index=False)
    return lambda name: frame.to_parquet(
        name, index=False, use_dictionary=dictionary_columns(frame)
    )


def stage_frames(frames: list[tuple[pd.DataFrame, str | Path]]) -> list[tuple[Path, Path]]:
    """Write frames to temporaries beside their targets: (temporary, target) pairs.

    Nothing is left behind when one fails. Publish with :func:`publish_staged`, or remove
    with :func:`discard_staged`.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for frame, path in frames:
            path = Path(path)
            staged.append((_stage(path, _frame_writer(frame, path, True)), path))
    except BaseException:
        discard_staged(staged)
        raise
    return staged


def stage_file(path: str | Path) -> Path:
    """A new empty temporary beside ``path`` for a file written piece by piece.

    Publish it with :func:`publish_staged` (``[(temporary, path)]``) once complete, or remove
    it with :func:`discard_staged`.
    """
    return _stage(Path(path), lambda name: None)


class AppendedFile:
    """A table file written frame by frame (by suffix) to a temporary beside ``path``.

    CSV: header once, dates as ``YYYY-MM-DD HH:MM:SS`` (the raw tables' format), no formula
    neutralising: the bytes ``DataFrame.to_csv`` writes for the whole table. Parquet: one
    schema fixed by the first frame (a text column that is all missing there is typed as
    text), one row group per frame, dictionaries as :func:`dictionary_columns`. After
    :meth:`close`, publish ``(tmp, path)`` with :func:`publish_staged` (or remove it with
    :func:`discard_staged`): readers never see a partial file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fmt = frame_format(path)
        self.tmp = stage_file(path)
        self.rows = 0
        self._handle = None
        self._writer = None
        self._schema = None

    def append(self, frame: pd.DataFrame) -> None:
        """Write ``frame``'s rows after the rows already written (same columns)."""
        try:
            if self.fmt == "csv":
                self._append_csv(frame)
            else:
                self._append_parquet(frame)
        except OSError as exc:
            raise PartnerscoreError(f"{self.path}: cannot write: {exc.strerror or exc}") from exc
        self.rows += len(frame)

    def _append_csv(self, frame: pd.DataFrame) -> None:
        import pandas as pd

        header = self._handle is None
        if header:
            self._handle = open(self.tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115
        dates = [c for c in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[c])]
        frame = frame.assign(**{c: frame[c].dt.strftime("%Y-%m-%d %H:%M:%S") for c in dates})
        frame.to_csv(self._handle, index=False, header=header)

    def _append_parquet(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False)
        if self._writer is None:
            fields = [
                f.with_type(pa.large_string()) if pa.types.is_null(f.type) else f
                for f in table.schema
            ]
            self._schema = pa.schema(fields, metadata=table.schema.metadata)
            table = table.cast(self._schema)
            self._writer = pq.ParquetWriter(
                self.tmp,
                self._schema,
                compression="snappy",
                use_dictionary=dictionary_columns(frame),
            )
        self._writer.write_table(table)

    def close(self) -> None:
        """Finish the file (an unwritten one stays empty)."""
        try:
            if self._handle is not None:
                self._handle.close()
            if self._writer is not None:
                self._writer.close()
        except OSError as exc:
            raise PartnerscoreError(f"{self.path}: cannot write: {exc.strerror or exc}") from exc


def discard_staged(staged: list[tuple[Path, Path]]) -> None:
    """Remove staged temporaries (the targets stay as they were)."""
    for tmp, _ in staged:
        tmp.unlink(missing_ok=True)


def publish_staged(staged: list[tuple[Path, Path]]) -> list[Path]:
    """Rename staged temporaries over their targets."""
    return [_publish(tmp, path) for tmp, path in staged]


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's) bytes to the disk, where the platform allows it."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - a folder cannot be opened (Windows)
        return
    try:
        os.fsync(handle)
    except OSError:  # pragma: no cover - a file system without fsync on folders
        pass
    finally:
        os.close(handle)


fsync_path = _fsync  # for the jobs that rename folders (the spark engine's output swap)


@contextmanager
def _folder_lock(folder: Path, shared: bool = False) -> Iterator[None]:
    """An exclusive lock on ``folder`` (flock) while the block runs, where the system has one.

    Two jobs publishing one set of files into a folder (two ``build --out DIR`` at once)
    interleaved their renames: each one's set whole, one after the other, with this. A file
    system without locks (NFS without a lock daemon) publishes unlocked, as before.
    ``shared``: a reader's lock, taken once no publish holds the folder. ``folder`` may be
    a lock file (:func:`file_lock`). Locks do not nest: a process holding one on a path
    waits forever for another on the same path.
    """
    try:
        import fcntl

        handle = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):  # pragma: no cover - not POSIX
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock for a job that reads, checks and writes back the file ``path``.

    Held on ``.<name>.lock`` beside it (created), not on the folder: a job holding it may read
    or publish other files of that folder, whose readers and publishes lock the folder
    (:func:`_folder_lock`), without waiting on itself. The file itself is replaced by each
    write (a rename), so a lock on it would be on the previous version.
    """
    lock = path.with_name(f".{path.name}.lock")
    os.close(os.open(lock, os.O_WRONLY | os.O_CREAT, 0o666 & ~_umask()))
    with _folder_lock(lock):
        yield


def publishing_mark(manifest_path: str | Path) -> Path:
    """The empty file that says a :func:`publish_listed` of ``manifest_path`` is under way."""
    manifest_path = Path(manifest_path)
    return manifest_path.with_name(f".{manifest_path.name}.publishing")


def _interrupted(mark: Path) -> bool:
    """Whether ``mark`` is there once any publish into its folder under way has finished.

    A publish holds the folder's lock while its mark exists (its renames: milliseconds), so a
    reader that met the mark waits for the lock and looks again: a mark still there was left
    by a run that died while publishing. Until 2026-12-06 a reader meeting a live publish
    refused its files as an interrupted one's.
    """
    if not mark.exists():
        return False
    with _folder_lock(mark.parent, shared=True):
        return mark.exists()


def publish_listed(
    staged: list[tuple[Path, Path]],
    manifest: dict,
    manifest_path: str | Path,
    *,
    written: Iterable[Path] = (),
    folders: Iterable[tuple[Path, Path]] = (),
    swap: Callable[[Path, Path], None] | None = None,
    indent: int = 1,
    allow_nan: bool = True,
) -> list[Path]:
    """Publish staged files, then a JSON manifest listing each one's SHA-256, renamed last.

    Several files cannot be renamed into a folder in one step: a job killed between two
    renames (SIGKILL, out of memory, a power cut) left this run's first files beside the
    previous run's others, and nothing told a reader. Here the manifest's ``files`` maps each
    file (its path relative to the manifest's folder, ``quarantine/deals.csv``) to the SHA-256
    of its bytes. Every file is flushed to the disk (fsync) first; then an empty mark
    (:func:`publishing_mark`) is created, the files are renamed over their targets (their
    folders flushed), the manifest is renamed last and the mark removed. A folder whose files
    are not those its manifest lists, with the mark beside it, is an interrupted publish,
    which :func:`check_listed` names in one line. The previous run's files stay until the
    renames begin; links and modes are as :func:`publish_staged` keeps them. The renames run
    under an exclusive lock on the manifest's folder, so two runs publishing into it at once
    leave one whole set, not their files interleaved. ``written``:
    files this run already put in place (listed too). ``folders``: staged folders of files and
    the folder each replaces (the spark engine's ``.scores.parquet.new``, ``scores.parquet``),
    their files listed under the final folder's name and flushed, each swapped in by
    ``swap(fresh, folder)`` after the files' renames and before the manifest's, under the
    mark (a folder replaced whole; :func:`os.replace` when None). ``indent``, ``allow_nan``: as
    :func:`json.dumps` writes the manifest (``allow_nan`` False: NaN raises ValueError).
    On an error before the renames the staged temporaries are removed.

    Returns:
        The published paths, ``staged``'s in order, ``folders``', then the manifest's.
    """
    manifest_path = Path(manifest_path)
    folder = manifest_path.parent
    mark = publishing_mark(manifest_path)
    try:
        files = {}
        for tmp, path in staged:
            _fsync(tmp)
            files[Path(os.path.relpath(path, folder)).as_posix()] = file_fingerprint(tmp)
        for path in written:
            files[Path(os.path.relpath(path, folder)).as_posix()] = file_fingerprint(path)
        folders = list(folders)
        for fresh, path in folders:
            for part in sorted(p for p in Path(fresh).rglob("*") if p.is_file()):
                _fsync(part)
                name = Path(os.path.relpath(Path(path) / part.relative_to(fresh), folder))
                files[name.as_posix()] = file_fingerprint(part)
            _fsync(fresh)
        text = json.dumps({**manifest, "files": files}, indent=indent, allow_nan=allow_nan)
        staged = [*staged, stage_text(text, manifest_path)]
        _fsync(staged[-1][0])
    except BaseException:
        discard_staged(staged)
        raise
    with _folder_lock(folder):  # two runs publishing into one folder take turns
        try:
            os.close(os.open(mark, os.O_WRONLY | os.O_CREAT, 0o666 & ~_umask()))
            _fsync(folder)  # the mark is on the disk before any file is replaced
        except OSError as exc:
            discard_staged(staged)
            raise PartnerscoreError(f"{mark}: cannot write: {exc.strerror or exc}") from exc
        published = publish_staged(staged[:-1])  # each flushed, renamed, its folder flushed
        for fresh, path in folders:
            (swap or os.replace)(fresh, path)
        published += [path for _, path in folders]
        for parent in {write_target(path).parent for _, path in folders}:
            _fsync(parent)
        published += publish_staged(staged[-1:])
        mark.unlink(missing_ok=True)
        _fsync(folder)
    return published


def check_listed(
    manifest_path: str | Path, again: str = "run it again", *, strict: bool = True
) -> dict:
    """The manifest written by :func:`publish_listed`, once its files are checked.

    The manifest is renamed last, so files that match it are one run's whole set; a publish
    under way in another process (its mark beside them) is waited for, and its set read
    (:func:`_interrupted`). ``again``: what
    the error tells to do (``run `partnerscore build` again``). ``strict`` False: files changed
    since (a training set edited by hand) pass unless the publishing mark says a run was
    interrupted while publishing them.

    Raises:
        PartnerscoreError: A listed file is missing or is not the one listed (its SHA-256
            differs): one line naming it; the folder mixes two runs' files.
    """
    manifest_path = Path(manifest_path)
    interrupted = _interrupted(publishing_mark(manifest_path))
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PartnerscoreError(f"{manifest_path}: not found") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PartnerscoreError(f"{manifest_path}: unreadable ({exc})") from exc
    listed = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(listed, dict):
        raise PartnerscoreError(f"{manifest_path}: lists no files to check (no 'files' key)")
    for name in _not_listed(manifest_path.parent, listed):
        path = manifest_path.parent / name
        if interrupted:
            raise PartnerscoreError(
                f"{path}: not the file {manifest_path.name} lists: the folder mixes two runs' "
                f"files (one was interrupted while publishing); {again}"
            )
        if strict:
            raise PartnerscoreError(
                f"{path}: not the file {manifest_path.name} lists (missing, changed since, or "
                f"another run's); {again}"
            )
    return manifest


def left_by_interrupted_publish(
    manifest_path: str | Path,
) -> tuple[dict | None, list[str]] | None:
    """What a :func:`publish_listed` killed between its renames left beside its manifest.

    For the next run into the folder, before it writes anything there: None when no
    publishing mark is there (one ``stat``), or when the mark was a publish under way in
    another process, waited for (:func:`_interrupted`). Otherwise the manifest in place
    (None when none was ever published, or it is unreadable) and the files it lists whose
    bytes are not the listed ones (missing ones too), in its order: empty when they are one
    run's whole set (killed before its first rename, or after its manifest's).
    """
    manifest_path = Path(manifest_path)
    if not _interrupted(publishing_mark(manifest_path)):
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None, []
    listed = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(listed, dict):
        return None, []
    return manifest, list(_not_listed(manifest_path.parent, listed))


def _not_listed(folder: Path, listed: dict) -> Iterator[str]:
    """Names in ``listed`` (name -> SHA-256) whose file in ``folder`` differs or is missing.

    In its order, each file hashed only as the caller asks for the next name.
    """
    for name, digest in listed.items():
        try:
            same = file_fingerprint(folder / name) == digest
        except OSError:
            same = False
        if not same:
            yield name


def interrupted_publish_note(
    manifest_path: str | Path,
    job: str,
    listed: bool,
    mixed: Iterable[str],
    listed_as: str = "",
) -> str:
    """The next run's ``note:`` line (without ``note: ``) on an earlier run's publish killed.

    What :func:`left_by_interrupted_publish` found, said the same way by every job: the
    folder, the publishing mark left, and whose the files are. The job adds what it did
    (``; this run replaced them with its own``).

    Args:
        manifest_path: The manifest :func:`publish_listed` writes (its folder is named).
        job: The command whose run was killed (``score``).
        listed: Whether a manifest was in place (False: a first publish killed, or unreadable).
        mixed: The files it lists whose bytes are not the listed ones, in its order.
        listed_as: What the manifest says of its run, after its name (`` (as of 2026-06-01)``).
    """
    manifest_path = Path(manifest_path)
    name, mixed = manifest_path.name, list(mixed)
    text = (
        f"{manifest_path.parent}: an earlier {job} run was killed while publishing "
        f"({publishing_mark(manifest_path).name} was left)"
    )
    if not listed:
        return text + f": no {name} lists the files, whose run cannot be told"
    if mixed:
        more = f" and {len(mixed) - 1} more are" if len(mixed) > 1 else " is"
        files = "files" if len(mixed) > 1 else "file"
        return text + (
            f": {mixed[0]}{more} not the {files} {name}{listed_as} lists, a mix of two runs' files"
        )
    return text + f", but its files are the set {name}{listed_as} lists"


@dataclass(frozen=True)
class LeftPublish:
    """An earlier run's :func:`publish_listed` killed between its renames, as the next found it.

    Found by :func:`left_publish` before the next run writes into the folder; that run's own
    publish then replaces the set (and removes the mark). The job's result holds it (its
    fields are its ``--json`` form) and its CLI command says ``note`` in one line on stderr.

    Attributes:
        folder: The folder of the set.
        manifest: The name of the manifest in place (None: none was, a first publish killed).
        mixed: Files it lists whose bytes are not the listed ones (the killed run's, or
            missing), in its order: empty when the files are one run's whole set.
        note: The ``note:`` line (without ``note: ``): what was left and what this run did.
    """

    folder: Path
    manifest: str | None
    mixed: tuple[str, ...]
    note: str


def left_publish(manifest_path: str | Path, job: str) -> LeftPublish | None:
    """An earlier ``job`` run's publish of ``manifest_path`` killed between its renames, or None.

    For the next run into the folder, before it writes anything there: one ``stat`` when no
    publishing mark is there (:func:`left_by_interrupted_publish`). ``job``: the command
    (``score``, ``build``), named in the note, which says the run replaced the files.
    """
    manifest_path = Path(manifest_path)
    left = left_by_interrupted_publish(manifest_path)
    if left is None:
        return None
    manifest, mixed = left
    listed = manifest is not None
    note = interrupted_publish_note(manifest_path, job, listed, mixed)
    return LeftPublish(
        folder=manifest_path.parent,
        manifest=manifest_path.name if listed else None,
        mixed=tuple(mixed),
        note=note + "; this run replaced them with its own",
    )


def companion_manifest(path: str | Path) -> Path:
    """The manifest :func:`publish_listed` writes for a file and its companions.

    ``<stem>.manifest.json`` beside ``path`` (``scores.parquet`` -> ``scores.manifest.json``,
    listing it, ``scores.rejects.csv`` and the quarantine files with their SHA-256).
    """
    path = Path(path)
    return path.with_name(f"{path.stem}.manifest.json")


def check_companions(path: str | Path, again: str = "run it again") -> None:
    """Refuse ``path`` only where its publish with its companions was evidently interrupted.

    A file published by :func:`publish_listed` with the manifest :func:`companion_manifest`
    is read on its own as well (a copy elsewhere, a file from a version without manifests):
    with no publishing mark beside it, it passes without being read (the files it was
    published with may since have been edited, or replaced by another run of the folder).
    With the mark (a run killed between its renames), the files must be the ones the
    manifest lists, which is one run's whole set; with the mark and no manifest (a first
    publish killed), nothing says which run a file is from. One stat when no mark.

    Raises:
        PartnerscoreError: One line naming the file of the other run (or ``path``) and
            ``again``.
    """
    path = Path(path)
    manifest = companion_manifest(path)
    mark = publishing_mark(manifest)
    if not _interrupted(mark):
        return
    if not manifest.exists():
        raise PartnerscoreError(
            f"{path}: its publish with the files beside it was interrupted ({mark.name} is "
            f"there, {manifest.name} is not): it may be another run's than they are; {again}"
        )
    check_listed(manifest, again, strict=False)


def write_frame_atomic(frame: pd.DataFrame, path: str | Path, *, safe_csv: bool = True) -> Path:
    """Write a frame as CSV or Parquet (by suffix) so that readers never see a partial file.

    The frame is written to a temporary file in the target folder and renamed over the target,
    so a killed job leaves either the old file or the new one, never half of one. CSV text
    cells that a spreadsheet would run as formulas are neutralised with a leading ``'``
    (``safe_csv``; :func:`read_frame` undoes it); Parquet is written verbatim.

    Args:
        frame: Data to write.
        path: Destination ending in ``.csv`` or ``.parquet``.
        safe_csv: Neutralise formula cells in CSV output (off only for raw input tables).

    Returns:
        The destination path.
    """
    path = Path(path)
    return _atomic(path, _frame_writer(frame, path, safe_csv))


def _text_writer(text: str) -> Callable[[str], None]:
    def write(name: str) -> None:
        with open(name, "w", encoding="utf-8") as handle:
            handle.write(text)

    return write


def stage_text(text: str, path: str | Path) -> tuple[Path, Path]:
    """Text (UTF-8) written to a temporary beside ``path``: a (temporary, target) pair.

    Publish it with :func:`publish_staged` together with other staged files, or remove it
    with :func:`discard_staged`.
    """
    path = Path(path)
    return _stage(path, _text_writer(text)), path


def stage_copy(source: str | Path, path: str | Path) -> tuple[Path, Path]:
    """A copy of the file ``source`` in a temporary beside ``path``: a (temporary, target) pair.

    Publish it with :func:`publish_staged` or :func:`publish_listed`, or remove it with
    :func:`discard_staged`.
    """
    path = Path(path)
    return _stage(path, lambda name: shutil.copyfile(source, name)), path


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write text (UTF-8) atomically: temporary file in the same folder, then rename."""
    return _atomic(Path(path), _text_writer(text))


def existing_file(path: str | Path, what: str = "file") -> Path:
    """``path`` as a Path, or a one-line error when nothing or a folder is there.

    Args:
        path: The file.
        what: What the file is, for messages ("config file"; default "file").
    """
    path = Path(path)
    if not path.exists():
        raise PartnerscoreError(f"{path}: {what} not found")
    if path.is_dir():
        raise PartnerscoreError(f"{path}: is a folder, expected a {what}")
    return path


def read_text_file(path: str | Path, what: str) -> str:
    """A UTF-8 text file's contents, or a one-line error naming it (missing, folder, encoding).

    Args:
        path: The file.
        what: What the file is, for messages ("config file", "playbook file").
    """
    path = existing_file(path, what)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise not_utf8_error(path, f"line {line}", exc.object[exc.start : exc.start + 1]) from exc
    except OSError as exc:
        raise PartnerscoreError(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc


def first_invalid_utf8(path: Path) -> int | None:
    """Byte offset of the first byte of ``path`` that is not valid UTF-8 (None: all valid)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    done = 0
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(_CSV_CHUNK)
            pending = len(decoder.getstate()[0])  # bytes of a character cut by the last chunk
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:  # exc.start counts from the pending bytes
                return done - pending + exc.start
            if not chunk:
                return None
            done += len(chunk)


class _PrefixThenMark(io.RawIOBase):
    """The first ``size`` bytes of a file, then ``mark``, read a block at a time.

    Counts the newline bytes of the file it served in ``line_breaks``.
    """

    def __init__(self, path: Path, size: int, mark: bytes) -> None:
        super().__init__()
        self._handle = open(path, "rb")  # noqa: SIM115 (closed by close(), with the reader)
        self._left, self._mark = size, mark
        self.line_breaks = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._left > 0:
            data = self._handle.read(min(len(buffer), self._left))
            self._left = self._left - len(data) if data else 0
            self.line_breaks += data.count(b"\n")
        else:
            data, self._mark = self._mark[: len(buffer)], self._mark[len(buffer) :]
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._handle.close()
        super().close()


def not_utf8_error(
    path: object, where: str, byte: bytes, at: str = "", fix: str = "save the file as UTF-8"
) -> PartnerscoreError:
    """The one line for text that is not UTF-8, whichever reader met it.

    ``<path>: <where>: not UTF-8 text (byte 0xE9<at>); <fix>``, in the style of the other
    one-line errors about a cell or a line (``column 'name' row 2: ...``, ``line 3: ...``).
    The CSV readers (:func:`not_utf8`), the text files (:func:`read_text_file`: config,
    playbook) and the Parquet text columns (``features/validate.py``) all say it so.

    Args:
        path: The file (as the option or config key gave it).
        where: ``column 'name' row 2`` (a cell: the 1-based data record), ``line 1 (the
            header)``, ``line 3`` (a text file's line, or a field past a CSV header).
        byte: The first byte that is not UTF-8.
        at: Said after the byte inside the parentheses (``" at line 3"``, ``" in field 3 ..."``).
        fix: What to do about it.
    """
    return PartnerscoreError(
        f"{path}: {where}: not UTF-8 text (byte 0x{byte.hex().upper()}{at}); {fix}"
    )


def not_utf8(path: Path) -> PartnerscoreError:
    """The one-line error for a CSV file that is not UTF-8: its column and row, or its line.

    A bad byte in a cell is said with its column (the header's name of the field) and row (the
    data record's number as in quarantine files: 1-based, blank lines not counted), its line
    beside the byte: ``column 'name' row 2: not UTF-8 text (byte 0xE9 at line 3)``. One in
    the header, or in a field past the header's (a record longer than it), is said by its
    line. A decoder's own position is no help: it counts from the start of the block it was
    decoding. Until 2026-12-06 it read ``not UTF-8 text at line 3 (row 2, column 3 (past the
    header)): byte 0xE9``.
    """
    import csv

    wrong = other_format(path)  # a Parquet file named .csv: not "byte 0xF0 at line 1"
    if wrong is not None:
        return PartnerscoreError(f"{path}: cannot read file: {wrong}")
    where = first_invalid_utf8(path)
    if where is None:
        return PartnerscoreError(f"{path}: not UTF-8 text")
    with open(path, "rb") as handle:
        handle.seek(where)
        byte = handle.read(1)
    # the text before the bad byte is valid; a marker in the bad byte's place lands in its
    # record and field, however quotes and line breaks run before it. Streamed: the file's
    # text at once took ~7 times its size (90 MB: a 648 MB peak), past memory for a large one
    mark = "\ue000"
    prefix = _PrefixThenMark(path, where, mark.encode("utf-8"))
    header: list[str] | None = None
    rows, field = 0, 0
    with io.TextIOWrapper(io.BufferedReader(prefix), encoding="utf-8-sig", newline="") as text:
        for record in csv.reader(text):
            if mark in "".join(record):  # always met: the marker is in the last record
                field = next(i for i, value in enumerate(record) if mark in value)
                break
            if header is None:
                header = record
            elif record and not blank_record(record):
                rows += 1
    line = prefix.line_breaks + 1  # every byte before the bad one was read to reach the marker
    if header is None:
        return not_utf8_error(path, f"line {line} (the header)", byte)
    if field >= len(header):
        return not_utf8_error(
            path,
            f"line {line}",
            byte,
            f" in field {field + 1} of row {rows + 1}, past the header's {len(header)} columns",
        )
    return not_utf8_error(
        path, f"column {quoted(header[field])} row {rows + 1}", byte, f" at line {line}"
    )


def refuse_duplicate_columns(path: str | Path, names: list[str]) -> None:
    """Stop with one line naming the first of ``names`` that a file's header holds twice.

    Readers would go on with it otherwise (pandas renames the second ``<name>.1``, Arrow
    refuses every later lookup of the name).
    """
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise PartnerscoreError(f"{path}: column {quoted(dup)} appears twice in the header")


def csv_header(path: Path) -> list[str]:
    """Column names of a CSV file (raises a one-line error for non-UTF-8 or broken headers)."""
    import csv

    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            spans_lines = reader.line_num > 1
    except UnicodeDecodeError as exc:
        raise not_utf8(path) from exc
    except csv.Error as exc:  # e.g. a quote that never closes: a "field larger than field limit"
        check_quotes_close(path)
        raise PartnerscoreError(f"{path}: cannot read file: {exc}") from exc
    if spans_lines:  # a header over several lines: an unclosed quote swallowed the file?
        check_quotes_close(path)
    if not header or not any(h.strip() for h in header):
        raise PartnerscoreError(f"{path}: empty file (no header line)")
    return header


_CSV_FIELD_STARTS = (b",", b"\n", b"\r")
_BOM = b"\xef\xbb\xbf"
_CSV_CHUNK = 1 << 22


_SCAN_RUNS = 256
"""Runs of quotes :func:`_quote_runs_back` reads one at a time, from the end, before it reads
the rest of the chunk at once (:func:`_quote_runs_array`)."""


def _quote_runs_back(data: bytes, before: bytes) -> tuple[bool, int, int | None]:
    """How the runs of quotes of ``data`` move a CSV reader in or out of a quoted field.

    A run of quotes at a field's start (after a comma, a line break or ``before``, the byte
    preceding ``data``) of odd length toggles the state: it opens a field when outside (the
    rest are escaped quotes) and closes one when inside. An odd run elsewhere leaves the
    reader outside whatever the state before (it closes a field, or is a literal quote in an
    unquoted one); even runs change nothing (escaped quotes, an empty quoted field). So the
    state after ``data`` depends only on the toggles after its last odd run not at a field
    start, found scanning backwards (in a well-formed file the last closing quote is near).
    Past :data:`_SCAN_RUNS` runs without one (a column of empty quoted fields ``""`` and no
    other quotes, say: a run a row), the rest of ``data`` is read at once, not run by run.

    Returns:
        Whether such a "reset" run was found, the number of toggles after it (or in all of
        ``data`` without one), and the offset of the last toggle (None without toggles).
    """
    end, toggles, last = len(data), 0, None
    for _ in range(_SCAN_RUNS):
        stop = data.rfind(b'"', 0, end)
        if stop < 0:
            return False, toggles, last
        start = stop
        while start and data[start - 1] == 0x22:
            start -= 1
        odd = (stop + 1 - start) % 2 == 1
        if (data[start - 1 : start] if start else before) in _CSV_FIELD_STARTS:
            if odd:
                toggles += 1
                last = start if last is None else last
        elif odd:
            return True, toggles, last
        end = start
    # data[:end] ends before a run of quotes (or is empty): no run is cut
    reset, more, at = _quote_runs_array(memoryview(data)[:end], before)
    return reset, toggles + more, at if last is None else last


def _quote_runs_array(data, before: bytes) -> tuple[bool, int, int | None]:
    """:func:`_quote_runs_back` of a whole bytes-like ``data`` in array operations."""
    import numpy as np

    codes = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(codes == 0x22)
    if not len(quotes):
        return False, 0, None
    head = np.r_[True, np.diff(quotes) != 1]  # the first quote of each run
    starts = quotes[head]
    odd = np.diff(np.r_[np.flatnonzero(head), len(quotes)]) % 2 == 1
    prev = codes[np.maximum(starts - 1, 0)]
    field_start = (prev == 0x2C) | (prev == 0x0A) | (prev == 0x0D)
    if starts[0] == 0:
        field_start[0] = before in _CSV_FIELD_STARTS
    resets = np.flatnonzero(odd & ~field_start)
    after = int(resets[-1]) + 1 if len(resets) else 0
    flips = np.flatnonzero(odd[after:] & field_start[after:])
    last = int(starts[after + flips[-1]]) if len(flips) else None
    return bool(len(resets)), len(flips), last


def csv_lines(path: Path) -> tuple[int, int | None]:
    """Physical lines of a CSV file, and the line of a quote that opens a field and never closes.

    One pass over the bytes (no decoding, no parsing of unquoted text). A last line without a
    line break counts. The quote rules are Arrow's and the csv module's: a quote opens a field
    only at the field's start, ``""`` inside a quoted field is a quote.

    Returns:
        ``(lines, open_line)``: ``open_line`` is the 1-based line of the quote that leaves the
        file's end inside a quoted field (the reader then takes the rest of the file as that
        field's value), None when every quoted field closes.
    """
    lines, before, inside, opened = 0, b"\n", False, None
    with open(path, "rb") as handle:
        data = handle.read(_CSV_CHUNK).removeprefix(_BOM)
        while data:
            chunk = handle.read(_CSV_CHUNK)
            if chunk:  # a run of quotes may go on in the next chunk: keep it for that one
                cut = len(data.rstrip(b'"'))
                data, chunk = data[:cut], data[cut:] + chunk
            reset, toggles, at = _quote_runs_back(data, before)
            inside = (toggles % 2 == 1) if reset else (inside != (toggles % 2 == 1))
            if not inside:
                opened = None
            elif at is not None:
                opened = lines + data.count(b"\n", 0, at) + 1
            lines += data.count(b"\n")
            before = data[-1:] or before
            data = chunk
    return lines + (before != b"\n"), opened


def unclosed_quote(path: Path, line: int) -> PartnerscoreError:
    """The one-line error for a quote opened on ``line`` of ``path`` that never closes."""
    return PartnerscoreError(
        f"{path}: cannot read file: line {line}: a quote opened on this line never closes "
        "(the field would run to the end of the file)"
    )


def check_quotes_close(path: Path) -> None:
    """Stop with one line naming the line of a quote that never closes (quiet otherwise).

    Raises:
        PartnerscoreError: A quote opens a field on some line and is never closed (see
            :func:`csv_lines`).
    """
    try:
        _, opened = csv_lines(path)
    except OSError:  # the caller reports the file it cannot read
        return
    if opened is not None:
        raise unclosed_quote(path, opened)


def blank_record(row: list[str]) -> bool:
    """A CSV record that is a line of spaces or tabs only: skipped like an empty line."""
    return len(row) == 1 and not row[0].strip(" \t\r")


def ragged_line(path: Path, fields: int) -> int | None:
    """1-based physical line of the first CSV record whose field count is not ``fields``."""
    import csv

    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        before = reader.line_num
        for row in reader:
            if row and len(row) != fields and not blank_record(row):
                return before + 1
            before = reader.line_num
    return None


PARQUET_MAGIC = (b"PAR1", b"PARE")
"""The four bytes a Parquet file begins and ends with (``PARE``: an encrypted footer)."""


def other_format(path: Path) -> str | None:
    """What a CSV or Parquet file holds when it is not what its name says, or None.

    ``a Parquet file, not CSV text (name it .parquet)`` for a ``.csv`` that begins and ends
    with Parquet's magic bytes; ``not a Parquet file (no Parquet footer; CSV text named .parquet?)``
    for a ``.parquet`` that does not begin and end with them (text, junk, a cut-off copy). The
    readers said their parser's words: ``not UTF-8 text at line 1 (the header): byte 0xF0``,
    ``Could not open Parquet input source '...': Parquet magic bytes not found in footer...``.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
            size = handle.seek(0, 2)
            handle.seek(max(size - 4, 0))
            tail = handle.read(4)
    except OSError:
        return None
    if Path(path).suffix.lower() == ".parquet":
        if head not in PARQUET_MAGIC or tail not in PARQUET_MAGIC:
            return "not a Parquet file (no Parquet footer; CSV text named .parquet?)"
        return None
    if head in PARQUET_MAGIC and tail in PARQUET_MAGIC:  # not a header "PARENT_ID,..."
        return "a Parquet file, not CSV text (name it .parquet)"
    return None


def read_frame(path: str | Path, text: Callable[[str], bool] | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file written by partnerscore (not for raw contract tables).

    Ids stay text (``000123`` is not ``123``) and neutralised CSV cells are restored.

    Args:
        path: The file.
        text: Which other CSV columns to keep as text whatever they look like.

    Raises:
        PartnerscoreError: The file is missing, empty, a folder or not readable as its type
            (a CSV quote that never closes names its line, as the raw-table reader does).
    """
    import pandas as pd

    path = existing_file(path)
    try:
        if path.stat().st_size == 0:
            raise PartnerscoreError(f"{path}: empty file")
        fmt = frame_format(path)
        wrong = other_format(path)
        if wrong is not None:
            raise PartnerscoreError(f"{path}: cannot read file: {wrong}")
        if fmt == "csv":
            import warnings

            header = csv_header(path)
            refuse_duplicate_columns(path, [h.strip() for h in header])
            # only empty cells are missing: "NA" is a region, "null" a name; ids are text
            as_text = {c: "str" for c in header if c in TEXT_ID_COLUMNS or (text and text(c))}
            with warnings.catch_warnings():
                # a first row longer than the header: pandas warns and drops its extra fields
                warnings.simplefilter("error", pd.errors.ParserWarning)
                try:
                    frame = pd.read_csv(
                        path, keep_default_na=False, na_values=[""], dtype=as_text, index_col=False
                    )
                except (pd.errors.ParserWarning, pd.errors.ParserError) as exc:
                    # a later record longer than the header: pandas' "Error tokenizing data.
                    # C error: Expected 7 fields in line 3, saw 9"
                    if isinstance(exc, pd.errors.ParserError) and "Expected" not in str(exc):
                        raise
                    line = ragged_line(path, len(header))
                    where = f"line {line}: " if line is not None else ""
                    raise PartnerscoreError(
                        f"{path}: {where}more fields than the header's {len(header)}"
                    ) from exc
            for name in frame.columns:
                if pd.api.types.is_string_dtype(frame[name].dtype) or frame[name].dtype == object:
                    frame[name] = _restore(frame[name]).where(frame[name].notna(), None)
            return frame
        # a pandas index stored in the file (to_parquet of a concatenated frame) is no column:
        # rows are positions (two rows of index 0 broke pandera's unique check with "Columns
        # with duplicate values are not supported in stack")
        return pd.read_parquet(path).reset_index(drop=True)
    except PartnerscoreError:
        raise
    except UnicodeDecodeError as exc:  # past the header's block: name the line and column
        raise not_utf8(path) from exc
    except Exception as exc:  # parser/arrow/OS errors: one line for the user
        if frame_format(path) == "csv":  # pandas' "EOF inside string starting at row N"
            check_quotes_close(path)  # names the quote's line as the raw-table reader does
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise PartnerscoreError(f"{path}: cannot read file: {first}") from exc


def isin_text(values, universe) -> np.ndarray:
    """Whether each of ``values`` is one of ``universe``: a hash lookup on object arrays.

    Same answer as ``pd.Series(values).isin(universe)``, whose ``str``-dtype version turns every
    element of ``universe`` into an Arrow scalar first (seconds for 100k ids).
    """
    import numpy as np
    import pandas as pd

    if isinstance(universe, (set, frozenset)):
        universe = list(universe)
    left = pd.Series(np.asarray(values, dtype=object), dtype=object)
    right = pd.Series(np.asarray(universe, dtype=object), dtype=object)
    return left.isin(right).to_numpy(dtype=bool)


HIDDEN_PREFIXES = ("_", ".")
"""First characters of the files a Parquet dataset folder holds beside its parts and readers
skip, as Spark and pyarrow do: ``_SUCCESS``, ``_metadata``, ``.part-00000.parquet.crc``."""


class PartRows(str):
    """A Parquet dataset folder read as one frame (:func:`read_dataset`), for messages.

    As text it is the folder (``scores.parquet``); it also knows, for each position of the
    frame read, the part file and the row within it (:func:`row_at`), so that a message naming
    a row names the part holding it: ``scores.parquet/part-00001.parquet: column 'as_of' row
    3``. A file's rows are positions of the file, so a plain path needs no such map.
    """

    files: tuple[str, ...]
    part: np.ndarray
    row: np.ndarray

    def __new__(cls, folder: str | Path, files: Iterable[str], part, row) -> PartRows:
        """The folder's text, with its part files and each frame position's part and row."""
        self = super().__new__(cls, str(folder))
        self.files = tuple(files)
        self.part = part
        self.row = row
        return self

    def __getnewargs__(self) -> tuple:
        return str(self), self.files, self.part, self.row


def row_at(source: object, row: int) -> tuple[str, int]:
    """The file and 1-based row of position ``row`` (0-based) of the rows read from ``source``.

    ``source``: a file (its rows are its positions), or a :class:`PartRows` (the part file
    holding the row, and the row within that part).
    """
    if isinstance(source, PartRows):
        return source.files[int(source.part[row])], int(source.row[row]) + 1
    return str(source), int(row) + 1


def at_row(source: object, row: int, column: str | None = None) -> str:
    """``<file>: column '<column>' row <n>`` (``<file>: row <n>`` without a column).

    The start of a one-line error about position ``row`` of the rows read from ``source``
    (:func:`row_at`): a dataset folder's row is said as its part file's.
    """
    file, number = row_at(source, row)
    return f"{file}: column '{column}' row {number}" if column else f"{file}: row {number}"


def two_rows(source: object, first: int, second: int) -> tuple[str, str]:
    """Where a message about positions ``first`` and ``second`` begins, and how it names them.

    ``(<file>, "rows 3 and 5")``; for rows of two part files of a dataset folder, ``(<folder>,
    "<part> row 3 and <other part> row 5")`` (:func:`row_at`).
    """
    (file, one), (other, two) = row_at(source, first), row_at(source, second)
    if file == other:
        return file, f"rows {one} and {two}"
    return str(source), f"{file} row {one} and {other} row {two}"


def other_row(source: object, row: int, beside: int) -> str:
    """``row <n>`` for position ``row``, in a message about position ``beside``.

    ``row <n> of <file>`` when the two rows are in different part files of a dataset folder
    (the message begins with ``beside``'s part: :func:`at_row`).
    """
    file, number = row_at(source, row)
    return f"row {number}" if file == row_at(source, beside)[0] else f"row {number} of {file}"


def dataset_parts(folder: str | Path) -> list[Path]:
    """The part files of a Parquet dataset folder (``scores.parquet/part-00000.parquet``, ...).

    Every ``*.parquet`` file in the folder, in name order; files whose names begin with ``_``
    or ``.`` are skipped, as Spark skips them (``_SUCCESS``, ``.part-00000.parquet.crc``).

    Raises:
        PartnerscoreError: An empty folder, no part file, or anything else in it (another
            file, a folder): one line naming the folder or that entry.
    """
    folder = Path(folder)
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise PartnerscoreError(f"{folder}: cannot read folder: {exc.strerror or exc}") from exc
    if not names:
        raise PartnerscoreError(
            f"{folder}: empty folder (expected a file, or a Parquet dataset folder of "
            "*.parquet part files)"
        )
    parts = []
    for name in names:
        if name.startswith(HIDDEN_PREFIXES):
            continue
        path = folder / name
        if path.is_dir():
            raise PartnerscoreError(
                f"{path}: a folder inside a Parquet dataset folder (expected only its "
                "*.parquet part files)"
            )
        if not name.lower().endswith(".parquet"):
            raise PartnerscoreError(
                f"{path}: not a Parquet part file (a Parquet dataset folder holds only "
                "*.parquet part files)"
            )
        parts.append(path)
    if not parts:
        raise PartnerscoreError(
            f"{folder}: no Parquet part files (*.parquet) in the folder, only "
            f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
        )
    return parts


def _plain_type(kind) -> str:
    """An Arrow type as the frame read from it has it (a dictionary's values; any width)."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        kind = pa.string()
    if pa.types.is_large_binary(kind):
        kind = pa.binary()
    if pa.types.is_timestamp(kind):
        return f"timestamp[{kind.tz}]" if kind.tz else "timestamp"
    return str(kind)


def _part_columns(path: Path, first: Path | None, want: dict[str, str] | None) -> dict[str, str]:
    """A part's columns and types, checked against the first part's (``want``)."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    got = {field.name: _plain_type(field.type) for field in schema}
    if want is None:
        return got
    missing = [c for c in want if c not in got]
    extra = [c for c in got if c not in want]
    if missing or extra:
        said = "; ".join(
            f"{what} {', '.join(quoted(c) for c in names[:5])}{', ...' if len(names) > 5 else ''}"
            for what, names in (("without", missing), ("with", extra))
            if names
        )
        raise PartnerscoreError(
            f"{path}: its columns are not {first.name}'s ({said}): the parts of a dataset "
            "folder hold the same columns"
        )
    for name, kind in got.items():
        if kind != want[name] and "null" not in (kind, want[name]):  # all-missing: any type
            raise PartnerscoreError(
                f"{path}: column {quoted(name)} is {kind}, {want[name]} in {first.name}: the "
                "parts of a dataset folder hold the same columns"
            )
    return got


def read_dataset(folder: str | Path, by: str | None = None) -> tuple[pd.DataFrame, PartRows]:
    """A Parquet dataset folder's part files read as one frame (``score --engine spark``'s).

    Each part (:func:`dataset_parts`) is read as :func:`read_frame` reads a Parquet file and
    the parts are stacked in name order; with ``by``, the rows are then put in that column's
    order (stable; the Spark engine writes one part per partner group, each sorted by
    partner), as the pandas job's single file holds them.

    Args:
        folder: The folder.
        by: A column to order the rows by, when the frame has it (None: parts in order).

    Returns:
        The frame and its :class:`PartRows` (the folder, for messages naming a row).

    Raises:
        PartnerscoreError: Not a dataset folder (:func:`dataset_parts`), a part that is empty
            or no Parquet file, or parts with other columns (or types) than the first's: one
            line naming the folder or the part.
    """
    import numpy as np
    import pandas as pd

    folder = Path(folder)
    parts = dataset_parts(folder)
    frames, want = [], None
    for path in parts:
        frames.append(read_frame(path))  # as a Parquet file is read, with its one-line errors
        want = _part_columns(path, parts[0], want)
    sizes = [len(f) for f in frames]
    part = np.repeat(np.arange(len(frames)), sizes)
    row = np.concatenate([np.arange(n) for n in sizes])
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    if by is not None and by in frame.columns and not frame[by].is_monotonic_increasing:
        order = frame.sort_values(by, kind="stable").index.to_numpy()
        frame = frame.iloc[order].reset_index(drop=True)
        part, row = part[order], row[order]
    return frame, PartRows(folder, [str(p) for p in parts], part, row)


def dataset_of_part(path: str | Path) -> tuple[Path, int] | None:
    """The Parquet dataset folder a file is one part of, and its number of parts, or None.

    A ``*.parquet`` file in a folder named ``*.parquet`` that holds only part files
    (:func:`dataset_parts`: ``score --engine spark``'s ``scores.parquet/``), as given or as
    its link resolves. A file in a folder of another name, or beside other files (the pandas
    job's ``results.parquet/scores.parquet`` with its rejects and manifest), is none.
    """
    path = Path(path)
    if not path.name.lower().endswith(".parquet"):
        return None
    for folder in dict.fromkeys((path.parent, path.resolve().parent)):
        if not folder.name.lower().endswith(".parquet"):
            continue
        try:
            parts = dataset_parts(folder)
        except PartnerscoreError:
            continue
        return folder, len(parts)
    return None


def read_frame_or_dataset(
    path: str | Path,
    text: Callable[[str], bool] | None = None,
    by: str | None = "partner_id",
    *,
    again: str | None = None,
) -> tuple[pd.DataFrame, Path | PartRows]:
    """A file (:func:`read_frame`) or a Parquet dataset folder (:func:`read_dataset`).

    ``again``: the input was published with companions (a scores file or folder, its rejects
    and manifest): a publish of it evidently interrupted is refused first, with ``again`` as
    the remedy (:func:`check_companions`), before anything is read.

    What the readers of a scores file use: ``score --engine spark`` writes a folder of part
    files where the pandas job writes one file, and both are read alike (a folder's rows in
    ``by``'s order, as the file holds them). One part of such a folder given alone
    (:func:`dataset_of_part`) is refused: it holds only some of the batch's partners, and the
    interrupted-publish check (:func:`check_companions`) reads the folder's manifest, not one
    beside the part. Until 2026-12-06 a part was read as a whole scores file.

    Returns:
        The frame and what messages about its rows name: the file (positions are its rows),
        or the folder's :class:`PartRows` (:func:`at_row` names the part and its row).

    Raises:
        PartnerscoreError: One line naming the file, column and row, or for a part file the
            folder to give instead; a publish interrupted (with ``again``).
    """
    path = Path(path)
    if again is not None:
        check_companions(path, again)
    if path.is_dir():
        return read_dataset(path, by)
    whole = dataset_of_part(path) if path.is_file() else None
    if whole is not None:
        folder, parts = whole
        raise PartnerscoreError(
            f"{path}: one part file of the Parquet dataset folder {folder}, which holds {parts} "
            "(`score --engine spark` writes one per partner group, each with only some of the "
            "batch's partners): give the folder"
        )
    return read_frame(path, text), path
