"""The ``score --engine spark`` job: the batch scoring job on Apache Spark (PySpark 4).

Exactness by construction: Spark only distributes; the numbers come from the project's own
functions, run per group of partners (every cross-row rule is per partner), with the
batch-wide values computed over all rows first (data end, the anomaly checks' robust centres
and spreads: :func:`~partnerscore.features.anomaly.batch_statistics`;
peer percentiles: :func:`~partnerscore.serving.score.peer_percentile` on the driver).

Two sources of clean rows:

- **A validated snapshot** (``RAW/validated`` or ``--validated``, checked exactly as the pandas
  job checks it: :func:`~partnerscore.features.validated.find_snapshot`). The driver reads the
  partners table and the anomaly statistics' columns; a Spark stage of Python tasks splits every
  table's rows by partner group into Arrow files with pyarrow
  (:func:`~partnerscore.features.groups.split_rows`), and a second stage scores each group from
  its files (:func:`~partnerscore.features.groups.group_tables`): rows never pass through the
  JVM.
- **Raw tables** validated in Spark (:mod:`partnerscore.serving.spark_validate`): the clean rows
  of every table in one narrow frame (:func:`make_layout`, :func:`narrow_frame`), one
  ``repartition`` by partner and ``mapInArrow`` (:func:`tables_from_arrow`).

Each group is scored by :func:`score_tables` (``build_scoring_frame`` or its ``--at-age``
twin, ``score_features``, upgrade paths, raw-row anomaly flags, smoothing and tier decisions,
as the pandas job); the task writes the rows as a Parquet part file and hands Spark only its
row count. The driver reads the columns it needs from the parts (history, decisions, tier and
partner type for the peers), adds the peer percentiles to the parts, records the history and
ledger, then publishes the dataset and the rejects.

The model, the earlier scores and the earlier decisions are broadcast (executors need no
access to the MLflow store or the history). What the driver holds: counts, the partners table,
the quarantined partner rows, the statistics' numeric columns, the earlier scores and
decisions of the in-scope partners, and the batch's history and decision columns (~1 KB per
scored partner).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from partnerscore.features.core import (
    PartnerscoreError,
    check_day_count,
    companion_manifest,
    fsync_path,
    left_publish,
    milestone_dates,
    publish_listed,
    stage_frames,
    write_target,
)
from partnerscore.features.groups import group_tables, split_rows
from partnerscore.models.milestones import milestone_columns
from partnerscore.serving.config import AppConfig

REJECT = "_reject"
"""Each score row's reject reason ("" when it is kept), dropped from the published files."""
PANDAS_WARNING = "PySpark does not yet fully support pandas"
PROBE_PARTNERS = 64
ARROW_BATCH = 50_000
JAVA_OPTIONS = "-XX:+UseSerialGC"
PARTNERS_PER_GROUP = 20_000
SPLIT_ROW_GROUPS = 2


@dataclass(frozen=True)
class BucketContext:
    """What every bucket needs: shipped to the executors inside the UDF's closure.

    Attributes:
        dtypes: Table -> column -> pandas dtype of the validated tables.
        data_end: The whole raw data's supported end (who is old enough under ``at_age``: not
            a bucket's, nor a late tail's: :func:`~partnerscore.features.validate.supported_end`).
        cut: Scoring date for everyone, or None with ``at_age``.
        at_age: Onboarding age in days, or None.
        config_hash: Stamped on every row.
        model_uri: Stamped on every row.
        raw_anomalies: The batch's raw-row anomalies when computed on the driver; None with
            ``robust`` computes them per bucket, else leaves the anomaly columns out.
        reference: The model's reference profile (training ranges), or None.
        anomaly_as_of: The date the raw anomalies are computed for (per bucket), or
            partner_id -> each partner's (``--at-age``: its milestone).
        robust: (table, measure) -> whole-table (centre, scale) of the outlier checks.
        monitor: Monitoring thresholds.
        decisions: Earlier tier decisions per partner (the decision ledger, read on the driver).
        overrides: Account owners' overrides.
        config: The application config (policy, hash) the tier decisions follow.
        batch_size: Partners in the whole batch (the upgrade-path search's size limit).
    """

    dtypes: dict[str, dict[str, str]]
    data_end: pd.Timestamp
    cut: pd.Timestamp | None
    at_age: int | None
    config_hash: str
    model_uri: str
    raw_anomalies: pd.DataFrame | None = None
    reference: dict | None = None
    anomaly_as_of: pd.Timestamp | pd.Series | None = None
    robust: dict | None = None
    monitor: object | None = None
    decisions: dict | None = None
    overrides: pd.DataFrame | None = None
    config: object | None = None
    batch_size: int | None = None


def pack(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The long frame Spark groups: ``_table``, partner_id and ``<table>__<column>`` columns.

    The pandas twin of the Spark union (the tests compare it with :func:`unpack`).
    """
    parts = []
    for name, frame in tables.items():
        part = pd.DataFrame({f"{name}__{c}": frame[c].to_numpy() for c in frame.columns})
        part.insert(0, "partner_id", frame["partner_id"].astype(str).to_numpy())
        part.insert(0, "_table", name)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def unpack(packed: pd.DataFrame, dtypes: dict[str, dict[str, str]]) -> dict[str, pd.DataFrame]:
    """The validated tables of a bucket back from the long frame, with their original dtypes."""
    tables = {}
    for name, columns in dtypes.items():
        part = packed[packed["_table"].to_numpy() == name]
        frame = pd.DataFrame(index=range(len(part)))
        for column, dtype in columns.items():
            values = part[f"{name}__{column}"].to_numpy()
            if dtype.startswith("datetime64"):
                frame[column] = pd.to_datetime(values).astype(dtype)
            else:
                frame[column] = pd.Series(values, dtype=object).astype(dtype)
        tables[name] = frame
    return tables


def score_tables(
    tables: dict[str, pd.DataFrame],
    ctx: BucketContext,
    model,
    previous: dict[str, list[float]],
    policy,
) -> pd.DataFrame:
    """Score one group of partners exactly as the pandas job scores the whole batch.

    Args:
        tables: The group's clean rows of every table (all rows of its partners, in input
            order, with the validated dtypes).
        ctx: The batch-wide values.
        model: The scoring model.
        previous: Earlier scores per partner (smoothing).
        policy: The scorecard policy.

    Returns:
        The pandas job's score rows (peer_percentile left NaN: it compares partners across
        groups) plus ``_reject``: a reject's reason, as the pandas job's
        :func:`~partnerscore.serving.score.unscorable` ("" when the row is kept).
    """
    from partnerscore.features.pipeline import build_scoring_frame, build_scoring_frame_at_age
    from partnerscore.features.validate import RawData
    from partnerscore.models.policy import smooth_and_guard_batch
    from partnerscore.models.scoring import score_features

    partners = tables["partners"]
    signed = pd.to_datetime(partners["signed_at"])
    if ctx.at_age is None:
        ready = signed < ctx.cut
    else:
        ready = milestone_dates(signed, ctx.at_age) <= ctx.data_end
    if not ready.any():
        return pd.DataFrame()
    raw = RawData.from_frames(tables, data_end=ctx.data_end)
    if ctx.at_age is None:
        features = build_scoring_frame(raw, ctx.cut)
    else:
        features = build_scoring_frame_at_age(raw, ctx.at_age)[0]
    scored = score_features(model, features, policy=policy)
    if ctx.config is not None:
        from partnerscore.serving.score import with_upgrade_paths

        scored = with_upgrade_paths(model, features, scored, ctx.config, ctx.batch_size)
    from partnerscore.serving.score import unscorable

    reasons = unscorable(model, features, scored)
    raw_rows = ctx.raw_anomalies
    if raw_rows is None and ctx.robust is not None:
        from partnerscore.features.anomaly import raw_anomalies

        raw_rows = raw_anomalies(tables, ctx.anomaly_as_of, ctx.monitor, robust=ctx.robust)
    if raw_rows is not None:
        from partnerscore.features.anomaly import anomaly_columns

        flagged = anomaly_columns(scored, raw_rows, ctx.reference, ctx.monitor)
        scored = pd.concat([scored, flagged], axis=1)
    smoothed, prev, flags = smooth_and_guard_batch(
        scored["partner_id"].tolist(), scored["score"].to_numpy(), previous, policy
    )
    from partnerscore.serving.score import decide_rows

    # the pandas job's decisions, row by row; the peer percentile is filled in across groups
    decided = decide_rows(
        scored,
        smoothed,
        prev,
        flags,
        ctx.decisions or {},
        ctx.overrides,
        np.nan,
        ctx.model_uri,
        ctx.config,
    )
    marks = pd.DataFrame({REJECT: reasons}, index=decided.index)
    return pd.concat([decided, marks], axis=1)


def spark_type(dtype):
    """The Spark type of a pandas dtype (text for anything else)."""
    from pyspark.sql import types as T

    if pd.api.types.is_bool_dtype(dtype):
        return T.BooleanType()
    if pd.api.types.is_integer_dtype(dtype):
        return T.LongType()
    if pd.api.types.is_float_dtype(dtype):
        return T.DoubleType()
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return T.TimestampNTZType()
    return T.StringType()


def spark_schema(frame: pd.DataFrame):
    """The Spark schema of a score frame (from its pandas dtypes; text for all-missing)."""
    from pyspark.sql import types as T

    return T.StructType(
        [T.StructField(str(name), spark_type(dtype), True) for name, dtype in frame.dtypes.items()]
    )


def _kind(dtype) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "date"
    if pd.api.types.is_object_dtype(dtype):
        return "object"
    return "text"


def conform(frame: pd.DataFrame, probe: pd.DataFrame) -> pd.DataFrame:
    """A group's rows in the probe's columns and types (what the declared schema expects).

    Raises:
        PartnerscoreError: A column holds values of another kind than the probe's (the
            declared schema came from a probe whose column was all missing).
    """
    if frame.empty:
        return probe.iloc[:0].copy()
    out = {}
    for name, dtype in probe.dtypes.items():
        values = frame[name] if name in frame else pd.Series(None, index=frame.index)
        want, got = _kind(dtype), _kind(values.dtype)
        if (
            got not in ("object", want)
            and not (want in ("float", "int") and got in ("float", "int", "bool"))
            and values.notna().any()
        ):
            raise PartnerscoreError(
                f"--engine spark: score column '{name}' is {got} in one partner group but "
                f"{want} in the schema probe; score with --engine pandas and report this"
            )
        if want == "float":
            out[name] = pd.to_numeric(values).astype("float64")
        elif want == "bool":
            out[name] = values.astype(bool)
        elif want == "int":
            out[name] = values.astype("int64")
        elif want == "date":
            out[name] = pd.to_datetime(values).astype("datetime64[us]")
        else:
            text = values.astype(object)
            out[name] = text.where(text.notna(), None).map(lambda v: v if v is None else str(v))
    return pd.DataFrame(out, index=frame.index)


def _check_runtime() -> None:
    """Stop with one line if pyspark or a Java runtime is missing.

    The messages name what to install: an installed package has no Makefile (the repository's
    ``make services`` installs Java). Without the ``spark`` extra the job stopped with
    "unexpected ModuleNotFoundError: No module named 'pyspark'", after loading the model.
    """
    if importlib.util.find_spec("pyspark") is None:
        raise PartnerscoreError(
            "--engine spark: pyspark is not installed (pip install 'partnerscore[spark]')"
        )
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise PartnerscoreError(
            "--engine spark: no Java runtime found (install one, e.g. apt-get install "
            "default-jre-headless, or set JAVA_HOME)"
        )


SPARK_LOG_BYTES = 10 * 1024 * 1024
"""A run's Spark log rolls over at this size, one older file kept: at most twice it per run."""
SPARK_LOG_KEEP_DAYS = 7
"""A failed run's Spark log folder older than this is removed when the next job starts."""
SPARK_LOG_PREFIX = "partnerscore-spark-"
_LOG4J2 = """\
# partnerscore: Spark's WARN and ERROR lines in this run's file, none on the console
status = error
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {path}
appender.file.filePattern = {path}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{yyyy-MM-dd HH:mm:ss.SSS}} %p %c: %m%n%ex
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = {size}
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 1
"""


class SparkLog:
    """A run's Spark log: the driver JVM's WARN and ERROR lines, in a folder of its own.

    The console stays quiet (a failed task's Java stack trace flooded stderr before the job's
    one error line), but an operator whose Spark job fails for a reason of Spark's own (a
    master that cannot be reached, an executor lost, the JVM out of memory) reads Spark's
    errors in ``spark.log``, which the error line names. The folder is made in the system's
    temporary folder (``TMPDIR``), never in the output's, and removed when the job succeeds
    or fails with an error that does not name it; a named one is kept, and removed by a later
    job after :data:`SPARK_LOG_KEEP_DAYS`. The file rolls over at :data:`SPARK_LOG_BYTES`
    (one older part kept). Until 2026-12-06 Spark's level was FATAL: its own errors were
    nowhere.
    """

    def __init__(self) -> None:
        import tempfile

        base = Path(tempfile.gettempdir())
        _prune_spark_logs(base)
        self.folder = Path(tempfile.mkdtemp(prefix=SPARK_LOG_PREFIX, dir=base))
        self.path = self.folder / "spark.log"
        self.workers = self.folder / "workers.log"  # local Python workers' stderr (spark_daemon)
        self.config = self.folder / "log4j2.properties"
        self.config.write_text(
            _LOG4J2.format(path=self.path, size=SPARK_LOG_BYTES), encoding="utf-8"
        )
        self.keep = False

    def java_option(self) -> str:
        """The driver JVM's option reading the configuration as it starts.

        Given to spark-submit in ``SPARK_SUBMIT_OPTS`` (:func:`_session`).
        """
        return f"-Dlog4j2.configurationFile={self.config.as_uri()}"

    def apply(self, spark) -> None:
        """Point the driver JVM's logging at this run's file.

        A JVM that was already running (an earlier session in this process) kept its start-up
        options: that session's file.
        """
        import contextlib

        with contextlib.suppress(Exception):
            jvm = spark.sparkContext._jvm
            uri = jvm.java.net.URI.create(self.config.as_uri())
            jvm.org.apache.logging.log4j.core.config.Configurator.reconfigure(uri)

    def named(self, message: str) -> str:
        """``message`` naming the log, which is then kept."""
        self.keep = True
        return f"{message}; Spark's log: {self.path}"

    def close(self) -> None:
        """Remove the folder unless an error named the log."""
        if not self.keep:
            shutil.rmtree(self.folder, ignore_errors=True)


def _prune_spark_logs(base: Path) -> None:
    """Remove failed runs' Spark log folders older than :data:`SPARK_LOG_KEEP_DAYS`."""
    limit = time.time() - SPARK_LOG_KEEP_DAYS * 86_400
    for folder in base.glob(f"{SPARK_LOG_PREFIX}*"):
        try:
            if folder.is_dir() and not folder.is_symlink() and folder.stat().st_mtime < limit:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


MASTER_FORMS = (
    r"local",
    r"local\[(\d+|\*)\]",
    r"local\[(\d+|\*)\s*,\s*\d+\]",
    r"local-cluster\[\s*\d+\s*,\s*\d+\s*,\s*\d+\s*\]",
    r"spark://.+",
    r"yarn",
    r"k8s://.+",
)
"""The master URLs Spark parses (SparkContext's own patterns; ``k8s://`` its cluster manager)."""


def check_master(master: str) -> None:
    """Refuse a master URL Spark cannot parse, before a JVM starts for it.

    A bad one printed spark-submit's Java stack trace and ended with ``unexpected
    PySparkRuntimeError: [JAVA_GATEWAY_EXITED] ...`` (``bogus``) or ``unexpected
    Py4JJavaError`` (``localhost``), exit 70.
    """
    import re

    from partnerscore.features.core import OptionError

    if not any(re.fullmatch(form, master) for form in MASTER_FORMS):
        raise OptionError(
            f"--master {master}: expected local, local[N], local[*], local[N,F], "
            "spark://HOST:PORT, yarn or k8s://HOST:PORT"
        )


def spark_failure(exc: BaseException, log: SparkLog | None) -> PartnerscoreError | None:
    """The one-line error (exit 71) of a Spark job that failed for a reason of Spark's own.

    A Java exception that reached Python unconverted (``Py4JJavaError``: a job aborted, a
    stopped context, a master that cannot be reached, the JVM out of memory), a JVM gone
    (``Py4JError``) or a gateway that exited: ``the Spark job failed: SparkException: Job
    aborted due to stage failure: ...; Spark's log: /tmp/partnerscore-spark-.../spark.log``.
    It was ``unexpected Py4JJavaError: An error occurred while calling o123.collect.``, exit
    70, with nothing of Spark's reason anywhere. Other errors (the job's own, PySpark's
    converted ones) are None: they stay what they are.
    """
    from partnerscore.features.parallel import WORKER_DIED

    kind = type(exc).__name__
    text = str(exc)
    if kind == "Py4JJavaError":
        lines = [line.strip() for line in text.splitlines()]
        java = next(
            (line[2:] for line in lines if line.startswith(": ")), lines[0] if lines else ""
        )
        reason = java.split(": ", 1)
        name = reason[0].rsplit(".", 1)[-1]  # org.apache.spark.SparkException: SparkException
        said = f"{name}: {reason[1]}" if len(reason) == 2 else name
    elif kind in ("Py4JError", "Py4JNetworkError") or "JAVA_GATEWAY_EXITED" in text:
        said = (text.splitlines() or [kind])[0]
    else:
        return None
    said = said if len(said) <= 300 else said[:297] + "..."
    message = f"the Spark job failed: {said}"
    return PartnerscoreError(log.named(message) if log is not None else message, WORKER_DIED)


def _session(master: str, shuffle_partitions: int, log: SparkLog | None = None):
    _check_runtime()
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master)
    if master.startswith("local"):  # executors are local processes: this interpreter
        # PySpark's Python side reads PYSPARK_PYTHON (default "python3" on PATH, which need not
        # be this virtual environment); the JVM side reads spark.pyspark.python
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.config("spark.pyspark.python", os.environ["PYSPARK_PYTHON"])
        # local executors live in the driver's JVM: Spark's 1 GB default heap runs out near
        # 100k partners (PARTNERSCORE_SPARK_DRIVER_MEMORY overrides)
        memory = os.environ.get("PARTNERSCORE_SPARK_DRIVER_MEMORY", "4g")
        builder = builder.config("spark.driver.memory", memory)
        java = os.environ.get("PARTNERSCORE_SPARK_JAVA_OPTIONS", JAVA_OPTIONS)
        if java:
            builder = builder.config("spark.driver.extraJavaOptions", java)
        if log is not None:  # the workers' stderr (a killed task's BrokenPipeError tracebacks)
            from partnerscore.serving.spark_daemon import WORKER_LOG_VARIABLE

            builder = builder.config(
                "spark.python.daemon.module", "partnerscore.serving.spark_daemon"
            ).config(f"spark.executorEnv.{WORKER_LOG_VARIABLE}", str(log.workers))
    # the log's configuration reaches the driver JVM (this machine's, whatever the master) as
    # spark-submit's own options: spark.driver.extraJavaOptions would replace a cluster's
    # (spark-defaults.conf), SPARK_SUBMIT_OPTS comes before them
    given = os.environ.get("SPARK_SUBMIT_OPTS")
    if log is not None:
        os.environ["SPARK_SUBMIT_OPTS"] = f"{given or ''} {log.java_option()}".strip()
    try:
        spark = _started(builder, shuffle_partitions)
    finally:
        if given is None:
            os.environ.pop("SPARK_SUBMIT_OPTS", None)
        else:
            os.environ["SPARK_SUBMIT_OPTS"] = given
    # Spark's lines go to the run's log file, none to the console: a failed task (a Python
    # worker killed mid-task) logged its Java stack trace on stderr before the job's one error
    # line; every such failure reaches the driver as the exception that line reports
    if log is not None:
        log.apply(spark)
    return spark


def _started(builder, shuffle_partitions: int):
    """The session of ``builder`` with the job's settings."""
    return (
        builder.appName("partnerscore-score")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # rows per Arrow batch to and from the Python workers (default 10,000): fewer, larger
        # transfers for the scoring pass's long input
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH))
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )


# --- the scoring pass: every table's clean rows in one narrow frame, one shuffle by partner ---

SLOT_TYPES = {"s": "string", "t": "bigint", "f": "double", "b": "boolean"}
"""Slot kinds of the narrow frame: text, date (int64 nanoseconds since the epoch), number,
flag. A table's columns take the first free slots of their kind, so the frame is as wide as the
widest table per kind (not the sum of every table's columns: a shuffled row pays for every
column, null or not)."""
_KIND_SLOT = {"date": "t", "float": "f", "bool": "b"}


@dataclass(frozen=True)
class Layout:
    """Where each table's columns travel in the narrow frame.

    Attributes:
        tables: Table -> (code, ((column, slot), ...)) in contract column order; ``partner_id``
            travels in the ``partner_id`` column (the shuffle key).
        slots: Slot columns with their Spark type, in frame order.
    """

    tables: dict[str, tuple[int, tuple[tuple[str, str], ...]]]
    slots: tuple[tuple[str, str], ...]

    def dtypes(self) -> dict[str, dict[str, str]]:
        """Table -> column -> pandas dtype of the frames :func:`tables_from_arrow` builds."""
        kinds = {"s": "str", "t": "datetime64[ns]", "f": "float64", "b": "bool"}
        return {
            name: {c: ("str" if c == "partner_id" else kinds[slot[0]]) for c, slot in columns}
            for name, (_, columns) in self.tables.items()
        }


def make_layout(columns: dict[str, list[str]]) -> Layout:
    """The narrow frame's layout for these tables (table -> columns read), by contract kind."""
    from partnerscore.features.contract import TABLES

    tables, width = {}, dict.fromkeys(SLOT_TYPES, 0)
    for code, (name, names) in enumerate(columns.items()):
        kinds = {c.name: c.kind for c in TABLES[name].columns}
        used = dict.fromkeys(SLOT_TYPES, 0)
        placed = []
        for column in names:
            if column == "partner_id":
                placed.append((column, "partner_id"))
                continue
            kind = _KIND_SLOT.get(kinds.get(column, "str"), "s")
            placed.append((column, f"{kind}{used[kind]}"))
            used[kind] += 1
        width = {k: max(width[k], used[k]) for k in SLOT_TYPES}
        tables[name] = (code, tuple(placed))
    slots = tuple((f"{k}{i}", t) for k, t in SLOT_TYPES.items() for i in range(width[k]))
    return Layout(tables, slots)


def narrow_frame(spark_tables: dict, layout: Layout):
    """One Spark frame of every table's rows in the layout's slots.

    Args:
        spark_tables: Table -> Spark frame with ``_row`` (input order) and the table's columns
            (dates as int64 nanoseconds, or as timestamps, converted here).
        layout: Where each column goes (:func:`make_layout`).
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    parts = []
    for name, (code, columns) in layout.tables.items():
        frame = spark_tables[name]
        types = {f.name: f.dataType for f in frame.schema.fields}
        placed = dict((slot, column) for column, slot in columns)
        cols = [F.lit(code).cast("int").alias("_t"), F.col("_row").cast("bigint").alias("_row")]
        cols.append(F.col(f"`{dict(columns)['partner_id']}`").alias("partner_id"))
        for slot, spark_type in layout.slots:
            column = placed.get(slot)
            if column is None:
                cols.append(F.lit(None).cast(spark_type).alias(slot))
                continue
            value = F.col(f"`{column}`")
            if slot[0] == "t" and isinstance(types[column], (T.TimestampType, T.TimestampNTZType)):
                value = F.unix_micros(value.cast("timestamp")) * 1000
            cols.append(value.cast(spark_type).alias(slot))
        parts.append(frame.select(*cols))
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out


def tables_from_arrow(batch, layout: Layout) -> dict[str, pd.DataFrame]:
    """The group's frames from its narrow Arrow rows: each table's rows in input order.

    The frames are what ``pyarrow.parquet.read_table(...).to_pandas()`` gives for the
    validated snapshot's files (the pandas job's frames): text as ``str``, dates as
    ``datetime64[ns]``, numbers as ``float64``, flags as ``bool``.
    """
    import pyarrow as pa

    codes = batch.column("_t").to_numpy()
    rows = batch.column("_row").to_numpy()
    out = {}
    for name, (code, columns) in layout.tables.items():
        idx = np.flatnonzero(codes == code)
        idx = idx[np.argsort(rows[idx], kind="stable")]
        take = pa.array(idx, type=pa.int64())
        arrays = {}
        for column, slot in columns:
            values = batch.column(slot).take(take)
            if slot[0] == "t":
                values = values.cast(pa.int64()).cast(pa.timestamp("ns"))
            elif slot == "partner_id" or slot[0] == "s":
                values = values.cast(pa.large_string())
            arrays[column] = values
        out[name] = pa.table(arrays).to_pandas()
    return out


def _partitions(partners: int, cores: int) -> int:
    """Scoring groups: ~20k partners each (a worker's memory), a multiple of the cores."""
    groups = max(1, -(-partners // PARTNERS_PER_GROUP))
    return max(cores, -(-groups // cores) * cores)


def _raw_statistics(clean, dtypes, as_of: pd.Timestamp | pd.Series, partners) -> dict:
    """:func:`~partnerscore.features.anomaly.batch_statistics` of the clean rows in Spark.

    One Spark job collects the columns the checks read (event times, measures and partner ids
    of the rows dated before ``as_of``; no record ids or other text) and the driver runs the
    pandas job's own function on them (it replaced three Spark aggregates per measure).
    """
    from pyspark.sql import functions as F

    from partnerscore.features.anomaly import EVENT_TIME, MEASURES, READ_COLUMNS, batch_statistics

    # per-partner cut-offs (``--at-age``): the newest here, each partner's in batch_statistics
    newest = as_of.max() if isinstance(as_of, pd.Series) else as_of
    cut = F.lit(pd.Timestamp(newest).to_pydatetime()).cast("timestamp_ntz")
    measured = {m[0] for m in MEASURES}  # a table without a measure has no statistics
    wanted = {
        name: [
            c
            for c, dtype in columns.items()
            if c in READ_COLUMNS and not str(dtype).startswith(("str", "object"))
        ]
        for name, columns in dtypes.items()
        if name != "partners" and name in measured
    }
    before = F.lit(False)
    for name in wanted:
        when = F.col(f"{name}__{EVENT_TIME[name][1]}")
        before = before | ((F.col("_table") == name) & (when < cut))
    names = [f"{n}__{c}" for n, cols in wanted.items() for c in cols]
    # the partner ids too: each partner's rows weigh 1 in a table's centre and spread
    rows = clean.filter(before).select("_table", "partner_id", *names).toPandas()
    tables = {"partners": partners}
    for name, cols in wanted.items():
        part = rows[rows["_table"].to_numpy() == name]
        tables[name] = pd.DataFrame(
            {
                "partner_id": part["partner_id"].astype(str).to_numpy(),
                **{c: part[f"{name}__{c}"].to_numpy() for c in cols},
            },
            index=pd.RangeIndex(len(part)),
        )
        for c in cols:
            if str(dtypes[name][c]).startswith("datetime64"):
                tables[name][c] = pd.to_datetime(tables[name][c]).astype("datetime64[ns]")
    return batch_statistics(tables, as_of)


class _Scope:
    """What :func:`~partnerscore.serving.score.batch_scope` reads of a validated batch."""

    def __init__(self, data_end, partners: pd.DataFrame, quarantined: pd.DataFrame, late_tail):
        self.data_end = data_end
        self.late_tail = late_tail
        self.tables = {"partners": partners}
        self.quarantine = {"partners": quarantined}


def run_score_spark(
    raw_dir: str | Path,
    as_of: date | None,
    model: str,
    out: str | Path,
    config: AppConfig,
    *,
    master: str = "local[*]",
    allow_local_model: bool = False,
    at_age: int | None = None,
    buckets: int | None = None,
    groups: int | None = None,
    shuffle_partitions: int = 8,
    spark=None,
    validated: str | Path | None = None,
):
    """The ``partnerscore score --engine spark`` job: :func:`run_score`'s output, on Spark.

    Args:
        raw_dir: Raw tables folder: a local path or any Spark-readable URI (``hdfs://``,
            ``s3a://``).
        as_of: Scoring date for everyone (or None with ``at_age``).
        model: Alias, version number or model URI.
        out: Output Parquet dataset (a folder of part files, one per partner group); the
            rejects go to ``<stem>.rejects.csv`` beside it, the quarantine to ``quarantine/``
            beside it.
        config: Application configuration.
        master: Spark master URL (``local[*]``, ``local[2]``, ``spark://host:7077``, ``yarn``).
        allow_local_model: As for :func:`run_score`.
        at_age: As for :func:`run_score`.
        buckets: Validation buckets (raw tables validated in Spark); default one per ~5k
            partners, at least 2 per shuffle partition.
        groups: Scoring groups (one Python task each); default ~20k partners per group, a
            multiple of the cores.
        shuffle_partitions: ``spark.sql.shuffle.partitions``.
        spark: An existing session to use (left running); default: one is started and stopped.
        validated: A validated snapshot to reuse (``--validated``), checked as the pandas job
            checks it; default ``RAW/validated`` when it matches (local raw folders), else the
            raw tables are validated in Spark.

    Returns:
        A :class:`~partnerscore.serving.score.ScoreResult`.
    """
    from partnerscore.features.parallel import WorkerDied
    from partnerscore.features.validated import StaleSnapshot, find_snapshot, stale_note
    from partnerscore.serving.score import _checked_uri
    from partnerscore.serving.spark_validate import _is_uri, worker_death

    started = time.perf_counter()
    # pyspark 4 warns on every pandas 3 conversion; the equality test is what vouches for them
    warnings.filterwarnings("ignore", message=PANDAS_WARNING, category=FutureWarning)
    # a failed task's Java stack trace, as a warning before the error it raises (reported in
    # one line: worker_death, the reader's errors)
    warnings.filterwarnings("ignore", message="toPandas attempted Arrow optimization")
    out = Path(out)
    if out.suffix.lower() != ".parquet":
        raise PartnerscoreError(f"--out {out}: the spark engine writes a Parquet dataset")
    if (as_of is None) == (at_age is None):
        raise PartnerscoreError("score: give either --as-of DATE or --at-age DAYS")
    if at_age is not None:
        check_day_count("--at-age", at_age)  # as the pandas job checks it
    if spark is None:
        _check_runtime()
    uri = _checked_uri(model, config, allow_local_model)
    from partnerscore.serving.model_store import refuse_missing_model

    # as the pandas job, before any work: an unknown alias, a version whose registration is
    # unfinished
    refuse_missing_model(uri, config.paths.tracking_uri())
    # before this run writes there (an aside folder put back, the quarantine): a publish
    # of the set killed earlier, said and replaced as by the pandas job
    left = left_publish(companion_manifest(out), "score")
    out.parent.mkdir(parents=True, exist_ok=True)
    recover_aside(write_target(out))  # a swap a killed run left half done, finished
    remote = _is_uri(str(raw_dir))
    if remote and validated is not None:
        raise PartnerscoreError(
            f"--validated with --raw {raw_dir}: a snapshot is checked against local raw files"
        )
    marks: dict[str, float] = {}
    tick = time.perf_counter()
    snapshot = None
    if not remote:  # checked first: a stale snapshot stops the run before any Spark work
        snapshot = find_snapshot(
            raw_dir, validated, out.parent / "quarantine", config=config.validation, content=False
        )
    marks["snapshot check (driver)"] = time.perf_counter() - tick
    # the raw files are hashed (I/O, SHA-256 releases the GIL) and the JVM starts while the
    # driver loads the model and reads the partners and the anomaly statistics' columns
    job = None
    own = spark is None
    if own:
        check_master(master)
    log = SparkLog() if own else None  # a session given is its owner's, and so is its log
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            hashing = pool.submit(snapshot.verify_content) if snapshot is not None else None
            session = pool.submit(_session, master, shuffle_partitions, log) if own else None
            try:
                tick = time.perf_counter()
                from partnerscore.serving.model_store import load_scoring_model

                loaded = load_scoring_model(uri, config.paths.tracking_uri(), lean=True)
                marks["model (driver)"] = time.perf_counter() - tick
                tick = time.perf_counter()
                if snapshot is not None:
                    job = _SnapshotJob(snapshot)
                    try:
                        job.prepare(as_of, at_age, config, out)
                    finally:
                        hashing.result()  # a changed raw file is the error reported first
                    _copy_quarantine(snapshot.quarantine, out.parent / "quarantine")
                    marks["partners, statistics, quarantine (driver)"] = time.perf_counter() - tick
            except StaleSnapshot as exc:
                if validated is not None:
                    if session is not None:
                        _stop_later(session)
                    raise
                stale_note(exc, raw_dir)  # the automatic snapshot is a cache: validate again
                job = None
            except BaseException:
                if session is not None:
                    _stop_later(session)
                raise
            tick = time.perf_counter()
            if own:
                spark = session.result()
            marks["spark session (waited)"] = time.perf_counter() - tick
        try:
            if job is None:
                job = _RawJob(spark, raw_dir, buckets, shuffle_partitions)
                tick = time.perf_counter()
                job.prepare(as_of, at_age, config, out)
                marks["validate + statistics (spark)"] = time.perf_counter() - tick
            result = _score_job(
                spark, job, loaded, uri, raw_dir, as_of, at_age, config, out, groups, marks, started
            )
            result.interrupted_publish = left  # replaced by this run's publish
            return result
        finally:
            if job is not None:
                job.release()
            if own:
                spark.stop()
    except WorkerDied as exc:  # a dead Python worker found by the readers: its log named
        if log is None:
            raise
        raise WorkerDied(log.named(exc.message)) from exc
    except PartnerscoreError:
        raise
    except Exception as exc:
        died = worker_death(exc)  # a Python worker killed mid-task: exit 71, as the pandas job's
        if died is not None:
            raise WorkerDied(log.named(died.message) if log is not None else died.message) from exc
        failed = spark_failure(exc, log)  # Spark failed for a reason of its own: its log named
        if failed is None:
            raise
        raise failed from exc
    finally:
        if log is not None:
            log.close()


def _stop_later(session) -> None:
    import contextlib

    with contextlib.suppress(Exception):  # the first error is the one reported
        session.result().stop()


class _SnapshotJob:
    """The batch from a validated snapshot: checked on the driver, tables read by Spark."""

    def __init__(self, snapshot) -> None:
        self.snapshot = snapshot

    def prepare(self, as_of, at_age, config: AppConfig, out: Path) -> None:
        """Partners (who is in scope) and the anomaly statistics, on the driver.

        The partners table (ids, signing dates) and the columns the anomaly statistics read
        are read with pyarrow: the same values, and the same functions, as the pandas job.
        """
        import pyarrow.parquet as pq

        from partnerscore.features.anomaly import snapshot_statistics
        from partnerscore.features.validate import LateTail
        from partnerscore.serving.score import UNREAD_COLUMNS

        snap = self.snapshot
        self.files = dict(snap.tables)
        self.columns = {
            name: [f for f in pq.read_schema(path).names if f not in UNREAD_COLUMNS.get(name, ())]
            for name, path in self.files.items()
        }
        self.data_end = snap.data_end
        self.late_tail = LateTail.from_dict(snap.manifest.get("late_tail"))
        self.partners = pq.read_table(self.files["partners"]).to_pandas()
        self.partner_quarantine = pq.read_table(snap.quarantine["partners"]).to_pandas()
        self.counts = {
            n: (t.input_rows, t.valid_rows, t.quarantined) for n, t in snap.report.tables.items()
        }
        self.shared_ids = {n: t.shared_ids for n, t in snap.report.tables.items() if t.shared_ids}
        self.cut = pd.Timestamp(as_of) if as_of is not None else None
        self.anomaly_as_of = self._anomaly_as_of(at_age)
        self.robust = snapshot_statistics(self.files, self.partners, self.anomaly_as_of)

    def _anomaly_as_of(self, at_age):
        if self.cut is not None:
            return self.cut
        from partnerscore.features.validate import supported_end
        from partnerscore.serving.score import milestone_cutoffs

        end = supported_end(self.data_end, self.late_tail)
        return milestone_cutoffs(self.partners, at_age, end)

    def score_groups(self, spark, layout, n_groups, score_group, schema, staging) -> pd.DataFrame:
        """Split the snapshot's rows by partner group, then ``score_group`` per group.

        Two Spark stages of Python tasks. Split: one task per table file chunk (up to
        :data:`SPLIT_ROW_GROUPS` Parquet row groups) reads its rows with pyarrow (typed, the
        columns the job reads), numbers them and appends each group's rows to an Arrow file
        ``<staging>/rows/g<group>/<table>-<task>.arrow``. Score: one task per group reads its
        files back, in input order, as the frames the pandas job reads from the snapshot. Rows
        never pass through the JVM (which would convert and shuffle every value: ~2 us per row
        of JVM CPU measured, more than the scoring itself), so the staging folder, like
        ``--out``, must be on storage every executor shares.
        """
        import pyarrow.parquet as pq

        rows_dir = str((staging / "rows").absolute())
        specs = []
        for name, path in self.files.items():
            meta = pq.ParquetFile(path).metadata
            start, groups = 0, list(range(meta.num_row_groups))
            for first in range(0, len(groups), SPLIT_ROW_GROUPS):
                chunk = groups[first : first + SPLIT_ROW_GROUPS]
                specs.append((len(specs), name, str(path), self.columns[name], chunk, start))
                start += sum(meta.row_group(g).num_rows for g in chunk)
        empty = {
            name: pq.read_schema(path).empty_table().select(self.columns[name])
            for name, path in self.files.items()
        }

        def split(specs_part):
            for spec in specs_part:
                yield split_rows(spec, rows_dir, n_groups)

        spark.sparkContext.parallelize(specs, len(specs)).mapPartitions(split).collect()

        def run(batches):
            for batch in batches:
                for index in batch.column("id").to_pylist():
                    tables = group_tables(rows_dir, int(index), empty)
                    yield from score_group(tables, int(index))

        ids = spark.range(0, n_groups, 1, numPartitions=n_groups)
        return ids.mapInArrow(run, schema).toPandas()

    def probe_partners(self, ids) -> pd.DataFrame:
        """The full partner rows of ``ids`` (the schema probe)."""
        from partnerscore.features.core import isin_text

        return self.partners[isin_text(self.partners["partner_id"], ids)].reset_index(drop=True)

    def release(self) -> None:
        """Nothing is kept in Spark."""


class _RawJob:
    """The batch from raw tables, validated in Spark (:mod:`.spark_validate`)."""

    def __init__(self, spark, raw_dir, buckets, shuffle_partitions) -> None:
        self.spark, self.raw_dir = spark, raw_dir
        self.buckets, self.shuffle_partitions = buckets, shuffle_partitions
        self.validated = None

    def prepare(self, as_of, at_age, config: AppConfig, out: Path) -> None:
        """Validate in Spark, write the quarantine, compute the batch-wide values."""
        from pyspark.sql import functions as F

        from partnerscore.serving.score import UNREAD_COLUMNS
        from partnerscore.serving.spark_validate import validate_in_spark

        spark = self.spark
        least = 2 * self.shuffle_partitions
        self.validated = validate_in_spark(
            spark,
            str(self.raw_dir),
            self.buckets or (lambda partners: max(least, partners // 5_000 + 1)),
            config.validation,
            str(out.parent / "quarantine"),
        )
        validated = self.validated
        clean = validated.clean
        self.dtypes = validated.dtypes
        self.columns = {
            name: [c for c in columns if c not in UNREAD_COLUMNS.get(name, ())]
            for name, columns in validated.dtypes.items()
        }
        self.data_end = validated.data_end
        self.late_tail = validated.late_tail
        self.counts = validated.counts
        self.shared_ids = {n: c for n, c in validated.shared_ids.items() if c}
        self.partner_quarantine = validated.partner_quarantine
        partner_columns = [f"partners__{c}" for c in validated.dtypes["partners"]]
        packed = (
            clean.filter(F.col("_table") == "partners")
            .select("_table", "_row", "partner_id", *partner_columns)
            .toPandas()
            .sort_values("_row", kind="stable")
            .reset_index(drop=True)
        )
        self.partners = unpack(packed, {"partners": validated.dtypes["partners"]})["partners"]
        self.cut = pd.Timestamp(as_of) if as_of is not None else None
        if self.cut is not None:
            self.anomaly_as_of = self.cut
        else:
            from partnerscore.features.validate import supported_end
            from partnerscore.serving.score import milestone_cutoffs

            end = supported_end(self.data_end, self.late_tail)
            self.anomaly_as_of = milestone_cutoffs(self.partners, at_age, end)
        self.robust = _raw_statistics(clean, validated.dtypes, self.anomaly_as_of, self.partners)

    def spark_tables(self, spark) -> dict:
        """Each table's clean rows, from the persisted validation output."""
        from pyspark.sql import functions as F

        clean = self.validated.clean
        return {
            name: clean.filter(F.col("_table") == name).select(
                "_row", *(F.col(f"{name}__{c}").alias(c) for c in columns)
            )
            for name, columns in self.columns.items()
        }

    def probe_partners(self, ids) -> pd.DataFrame:
        from partnerscore.features.core import isin_text

        return self.partners[isin_text(self.partners["partner_id"], ids)].reset_index(drop=True)

    def score_groups(self, spark, layout, n_groups, score_group, schema, staging) -> pd.DataFrame:
        """One shuffle of the clean rows by partner, then ``score_group`` per partition."""
        import pyarrow as pa
        from pyspark import TaskContext

        def run(batches):
            batches = list(batches)
            if not batches:
                return
            rows = pa.Table.from_batches(batches)
            del batches
            if rows.num_rows:
                tables = tables_from_arrow(rows, layout)
                del rows
                yield from score_group(tables, TaskContext.get().partitionId())

        frame = narrow_frame(self.spark_tables(spark), layout).repartition(n_groups, "partner_id")
        return frame.mapInArrow(run, schema).toPandas()

    def release(self) -> None:
        if self.validated is not None:
            self.validated.unpersist()


def _copy_quarantine(files: dict[str, Path], qdir: Path) -> None:
    """The snapshot's quarantine rows as the Spark job's quarantine datasets (same columns).

    ``quarantine/<table>.parquet/part-00000.parquet`` for every table with quarantined rows;
    stale datasets and CSVs of the others are removed, as a validating run does.
    """
    import pyarrow.parquet as pq

    from partnerscore.features.contract import TABLES

    for name in TABLES:
        target = qdir / f"{name}.parquet"
        shutil.rmtree(target, ignore_errors=True)
        (qdir / f"{name}.csv").unlink(missing_ok=True)
        source = files.get(name)
        if source is None or pq.ParquetFile(source).metadata.num_rows == 0:
            continue
        target.mkdir(parents=True)
        shutil.copyfile(source, target / "part-00000.parquet")


def _score_job(
    spark, job, loaded, uri, raw_dir, as_of, at_age, config, out, groups, marks, started
):
    """Scope, the scoring pass, peers, the output dataset, rejects and history."""
    import pyarrow as pa
    from pyspark.sql import types as T
    from pyspark.sql.pandas.types import to_arrow_schema

    from partnerscore.features.core import isin_text
    from partnerscore.models.bundle import RESPELLED, UNSEEN
    from partnerscore.models.policy import earlier_batches_needed
    from partnerscore.serving.history import HISTORY_COLUMNS, ScoreHistory, shadow_rows
    from partnerscore.serving.ledger import DECISION_COLUMNS, DecisionLedger
    from partnerscore.serving.score import (
        ScoreResult,
        _rejects,
        _shadow_of,
        batch_scope,
        earlier_rows,
        peer_percentile,
        read_overrides,
        rejects_path,
        scores_manifest,
    )

    tick = time.perf_counter()
    cut = job.cut
    end, partners_all, rejects, duplicates, ready = batch_scope(
        _Scope(job.data_end, job.partners, job.partner_quarantine, job.late_tail),
        raw_dir,
        as_of,
        at_age,
        config,
    )
    signed = pd.to_datetime(partners_all["signed_at"])
    in_scope_ids = partners_all.loc[ready, "partner_id"].astype(str)
    cuts = (
        pd.Series(cut, index=in_scope_ids.to_numpy())
        if cut is not None
        else pd.Series(
            milestone_dates(signed[ready], at_age).to_numpy(), index=in_scope_ids.to_numpy()
        )
    )
    history = ScoreHistory(config.paths.history_database())
    ledger = DecisionLedger(config.paths.history_database())
    shadow_of = _shadow_of(uri, loaded.version, config)
    before = cut if cut is not None else cuts
    previous, decisions = earlier_rows(
        history.url, in_scope_ids.tolist(), before, earlier_batches_needed(config.policy)
    )
    layout = make_layout(job.columns)
    ctx = BucketContext(
        dtypes=layout.dtypes(),
        data_end=end,
        cut=cut,
        at_age=at_age,
        config_hash=config.hash(),
        model_uri=uri,
        reference=loaded.reference,
        anomaly_as_of=job.anomaly_as_of,
        robust=job.robust,
        monitor=config.monitor,
        overrides=read_overrides(config.score.overrides_path, config.policy),
        config=config,
        batch_size=len(in_scope_ids),
    )
    policy = config.policy
    # the declared output schema: the same functions on a few partners, on the driver (their
    # partner rows only: no scan of the event tables)
    probe_tables = {
        name: pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
        for name, columns in ctx.dtypes.items()
    }
    probe_tables["partners"] = job.probe_partners(in_scope_ids.iloc[:PROBE_PARTNERS])
    probe = score_tables(probe_tables, ctx, loaded.model, previous, policy)
    probe = conform(probe, probe)
    schema = spark_schema(probe)
    arrow_schema = to_arrow_schema(schema)
    shared = spark.sparkContext.broadcast((loaded.model, previous, decisions))
    wanted = {
        *HISTORY_COLUMNS,
        *DECISION_COLUMNS,
        *milestone_columns(config.incentives),
        "tier",
        "partner_type",
        RESPELLED,  # counted by the summary, as the pandas job's rows
        UNSEEN,
        REJECT,
    }
    kept = [c for c in probe.columns if c in wanted]
    done_schema = T.StructType(
        [T.StructField("group", T.LongType()), T.StructField("rows", T.LongType())]
    )
    target = write_target(out)  # a symbolic link: its target is replaced, never the link
    staging = out.parent / f".{out.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    stage_dir = str(staging.absolute())
    marks["scope, history read, probe (driver)"] = time.perf_counter() - tick
    tick = time.perf_counter()

    def score_group(tables: dict[str, pd.DataFrame], index: int):
        warnings.filterwarnings("ignore", message=PANDAS_WARNING, category=FutureWarning)
        model, prev, decided = shared.value
        scored = score_tables(tables, replace(ctx, decisions=decided), model, prev, policy)
        if scored.empty:
            return
        scored = conform(scored, probe)
        scored = scored.sort_values("partner_id", kind="stable").reset_index(drop=True)
        table = pa.Table.from_pandas(scored, schema=arrow_schema, preserve_index=False)
        del scored
        # the rows go straight to a part file (the pandas job's Parquet encodings); Spark carries
        # only the group's row count, the driver reads the few columns it needs from the parts
        _write_part(table, stage_dir, index)
        yield pa.RecordBatch.from_pydict(
            {"group": [index], "rows": [table.num_rows]}, schema=done_arrow
        )

    done_arrow = to_arrow_schema(done_schema)
    n_groups = groups or _partitions(len(partners_all), spark.sparkContext.defaultParallelism)
    try:
        done = job.score_groups(spark, layout, n_groups, score_group, done_schema, staging)
        marks["features + scores (spark)"] = time.perf_counter() - tick
        tick = time.perf_counter()
        narrow = _read_parts(staging, kept, done)
        finite = (narrow[REJECT] == "").to_numpy()
        bad = narrow.loc[~finite, ["partner_id", REJECT]]
        good = narrow[finite].sort_values("partner_id", kind="stable").reset_index(drop=True)
        # the pandas job's own peer percentiles, over the whole batch's finite rows
        good["peer_percentile"] = peer_percentile(good)
        rows = good.drop(columns=[REJECT])
        rejects.append(_rejects(bad["partner_id"], cuts, bad[REJECT].astype(str).to_numpy()))
        lost = ~isin_text(in_scope_ids, rows["partner_id"]) & ~isin_text(
            in_scope_ids, pd.concat([r["partner_id"] for r in rejects])
        )
        rejects.append(_rejects(in_scope_ids[lost], cuts, "features could not be computed"))
        reject_frame = pd.concat(rejects, ignore_index=True)
        reject_frame = reject_frame.sort_values(["partner_id", "reason"], kind="stable")
        reject_frame = reject_frame.reset_index(drop=True)
        # as the pandas job: the parts (with their peers) and the rejects are staged by a second
        # thread (Parquet decoding and encoding release the GIL) while this one prepares the
        # history and ledger rows; the files are published once the store holds the batch
        with ThreadPoolExecutor(max_workers=1) as pool:
            staged = pool.submit(_stage_parts, staging, target, good)
            flags = shadow_rows(rows, shadow_of is not None, history)
            batch = history.prepare(rows, shadow=flags)
            decisions = ledger.prepare_decisions(
                rows, facts=milestone_columns(config.incentives), shadow=flags
            )
            fresh = staged.result()
        marks["peer percentiles + staged parts (driver)"] = time.perf_counter() - tick
        tick = time.perf_counter()
        history.upsert(batch)
        ledger.record_decisions(decisions)
        manifest = scores_manifest(
            out, uri, len(rows), len(reject_frame), recorded=True, engine="spark"
        )
        publish_dataset(out, fresh, reject_frame, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(target.with_name(f".{target.name}.new"), ignore_errors=True)
    marks["history, ledger, publish (driver)"] = time.perf_counter() - tick
    return ScoreResult.of_rows(
        rows,
        out=out,
        rejects=rejects_path(out),
        as_of=as_of,
        model_uri=uri,
        model_version=loaded.version,
        eligible=len(in_scope_ids),
        rejected=len(reject_frame),
        not_yet=int((~ready).sum()),
        at_age=at_age,
        partners_input=job.counts["partners"][0],
        duplicates=duplicates,
        seconds=time.perf_counter() - started,
        quarantined_rows={n: c[2] for n, c in job.counts.items() if n != "partners" and c[2]},
        # named only when this run wrote quarantine files there (partner rows included)
        quarantine_dir=out.parent / "quarantine"
        if any(c[2] for c in job.counts.values())
        else None,
        stage_seconds=marks,
        shadow_of=shadow_of,
        shadow_rows=int(flags.sum()),
        late_tail=job.late_tail.note() if job.late_tail is not None else None,
        shared_ids=job.shared_ids,
    )


def _write_part(table, folder: str, index: int) -> None:
    """One group's score rows as ``part-<index>.parquet`` (atomic: a retried task replaces it)."""
    import pyarrow.parquet as pq

    target = Path(folder) / f"part-{index:05d}.parquet"
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp, use_dictionary=_dictionary(table.schema))
    os.replace(tmp, target)


def _dictionary(schema) -> list[str]:
    """:func:`~partnerscore.features.core.dictionary_columns` for an Arrow schema."""
    import pyarrow as pa

    return [f.name for f in schema if not pa.types.is_floating(f.type)]


def _read_parts(staging: Path, columns: list[str], done: pd.DataFrame) -> pd.DataFrame:
    """The driver's columns of every staged part (checked against the groups' row counts)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = {int(p.stem.split("-")[1]): p for p in staging.glob("part-*.parquet")}
    expected = dict(zip(done["group"].astype(int), done["rows"].astype(int), strict=True))
    tables = [pq.read_table(parts[g], columns=columns) for g in sorted(parts)]
    got = {g: t.num_rows for g, t in zip(sorted(parts), tables, strict=True)}
    if got != expected:
        raise PartnerscoreError(
            f"--engine spark: staged score parts {sorted(got)} do not match the groups scored "
            f"{sorted(expected)}; run again"
        )
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return pa.concat_tables(tables).to_pandas()


def _stage_parts(staging: Path, out: Path, good: pd.DataFrame) -> Path:
    """The staged parts with their peer percentiles, less rejected rows, beside ``out``.

    Each part is read, filtered and written again into ``.<out>.new`` (two threads: Parquet
    decoding and encoding release the GIL); :func:`_swap` then replaces ``out`` whole.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    peers = pd.Series(good["peer_percentile"].to_numpy(float), index=good["partner_id"].to_numpy())
    fresh = out.with_name(f".{out.name}.new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)

    def one(path: Path) -> None:
        table = pq.read_table(path)
        table = table.filter(pc.equal(table[REJECT], "")).drop_columns([REJECT])
        ids = table["partner_id"].to_numpy(zero_copy_only=False)
        values = pa.array(peers.reindex(ids).to_numpy(float), type=pa.float64())
        where = table.schema.get_field_index("peer_percentile")
        table = table.set_column(where, "peer_percentile", values)
        pq.write_table(table, fresh / path.name, use_dictionary=_dictionary(table.schema))

    parts = sorted(staging.glob("part-*.parquet"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(one, parts))
    return fresh


def publish_dataset(out: Path, fresh: Path, rejects: pd.DataFrame, manifest: dict) -> None:
    """Publish a run's staged folder ``fresh`` as ``out`` and its ``rejects`` beside it.

    As the pandas job's files: the rejects and the folder under one manifest renamed last
    (``scores.manifest.json``, a publishing mark beside it meanwhile), which the readers of a
    scores file check; the folder swapped in by :func:`_swap`. The rejects were written alone
    before the swap until 2026-12-06, and a kill between the two left this run's rejects
    beside the previous run's scores.

    Args:
        out: The ``--out`` folder (a link: its target is replaced).
        fresh: The staged folder of part files (``.<out>.new``, :func:`_stage_parts`).
        rejects: The run's rejected rows.
        manifest: The manifest's keys (:func:`~partnerscore.serving.score.scores_manifest`).
    """
    from partnerscore.serving.score import rejects_path

    publish_listed(
        stage_frames([(rejects, rejects_path(out))]),
        manifest,
        companion_manifest(out),
        folders=[(fresh, write_target(out))],
        swap=_swap,
    )


def _aside(out: Path) -> Path:
    """Where :func:`_swap` keeps the previous output until the new one is in place."""
    return out.with_name(f".{out.name}.old")


def _remove(path: Path) -> None:
    """Remove a file or a folder (of part files), if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def recover_aside(out: Path) -> None:
    """Finish a swap a killed run left half done (:func:`_swap`'s ``.<out>.old``).

    Killed between its two renames, a run left the previous output aside and no ``out``: it
    is put back (the previous run's results, whole). Killed after the second, the new output
    is in place and the aside one is the previous run's, removed.
    """
    aside = _aside(out)
    if not (aside.exists() or aside.is_symlink()):
        return
    if out.exists() or out.is_symlink():
        _remove(aside)
    else:
        os.replace(aside, out)
    fsync_path(out.parent)


def _swap(fresh: Path, out: Path) -> None:
    """``fresh`` becomes ``out`` (a folder of part files; an old file or folder goes).

    The old output is renamed aside (``.<out>.old``), ``fresh`` renamed in, and only then is
    the old one removed: a run killed at any point (SIGKILL, out of memory) leaves the old
    output or the new one, whole, or the old one aside, which the next run puts back first
    (:func:`recover_aside`). Until 2026-12-06 the old folder was deleted before the rename,
    and a kill between the two left no scores at all.
    """
    recover_aside(out)
    aside = _aside(out)
    if out.exists() or out.is_symlink():
        os.replace(out, aside)
    os.replace(fresh, out)
    fsync_path(out.parent)
    _remove(aside)
