"""The ``score --engine spark`` job: the batch scoring job on Apache Spark (PySpark 4).

Exactness by construction: Spark only distributes; the numbers come from the project's own
functions. Two passes over partner buckets (``pmod(hash(partner_id), B)``):

1. **Validation** (:mod:`partnerscore.serving.spark_validate`): every raw table is read by Spark
   (CSV as text, Parquet typed), numbered and bucketed; each bucket goes through the project's
   validator. Quarantine rows are written by Spark; the driver gets counts, reason counts, the
   data end and the quarantined partner rows (for rejects).
2. **Scoring**: ``groupBy(bucket).applyInPandas`` hands each bucket's clean rows of every table
   to :func:`score_bucket`, which runs
   :func:`~partnerscore.features.pipeline.build_scoring_frame` (or its ``--at-age`` twin) and
   :func:`~partnerscore.models.scoring.score_features` exactly as the pandas job does, then the
   raw-row anomaly flags and the history smoothing. Point-in-time features and scores depend on
   one partner's rows only, so per-bucket results equal the whole-batch ones. The batch-wide
   values are computed once over all rows first: the data end, the tables' robust centres and
   spreads and their oldest 30-day periods (anomaly flags, :func:`anomaly_statistics`).

The model is loaded once on the driver and broadcast (executors need no access to the MLflow
store); the earlier scores for smoothing are read from the history on the driver and broadcast.
Peer percentiles, which compare partners, are Spark window functions (average ranks, as
``pandas.rank(pct=True)``).

What the driver holds: counts, the quarantined partner rows, the valid partners' ids and signing
dates (who is in scope), the earlier scores and decisions of the in-scope partners, and the
history rows of the batch (the declared history columns, collected and upserted from the
driver): about 1 KB per scored partner.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from partnerscore.features.core import PartnerscoreError, write_frame_atomic
from partnerscore.models.milestones import milestone_columns
from partnerscore.serving.config import AppConfig

EXTRA_COLUMNS = (
    "peer_percentile",
    "score_previous",
    "score_smoothed",
    "guardrail_flag",
    "config_hash",
    "model_uri",
)
"""Columns the job adds after :func:`score_features`, in the pandas job's order."""
FINITE = "_finite"
PANDAS_WARNING = "PySpark does not yet fully support pandas"
PROBE_PARTNERS = 64


@dataclass(frozen=True)
class BucketContext:
    """What every bucket needs: shipped to the executors inside the UDF's closure.

    Attributes:
        dtypes: Table -> column -> pandas dtype of the validated tables.
        data_end: The whole raw data's end (milestone scoring needs it, not a bucket's).
        cut: Scoring date for everyone, or None with ``at_age``.
        at_age: Onboarding age in days, or None.
        config_hash: Stamped on every row.
        model_uri: Stamped on every row.
        raw_anomalies: The batch's raw-row anomalies when computed on the driver; None with
            ``robust`` computes them per bucket, else leaves the anomaly columns out.
        reference: The model's reference profile (training ranges), or None.
        anomaly_as_of: The date the raw anomalies are computed for (per bucket).
        robust: (table, measure) -> whole-table (centre, scale) of the outlier checks.
        periods: Table -> 30-day periods back to its oldest row (volume checks).
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
    anomaly_as_of: pd.Timestamp | None = None
    robust: dict | None = None
    periods: dict | None = None
    monitor: object | None = None
    decisions: dict | None = None
    overrides: pd.DataFrame | None = None
    config: object | None = None
    batch_size: int | None = None


def pack(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The long frame Spark groups: ``_table``, partner_id and ``<table>__<column>`` columns.

    The pandas twin of the Spark union (used for the schema probe and by the tests).
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


def score_bucket(
    packed: pd.DataFrame,
    ctx: BucketContext,
    model,
    previous: dict[str, list[float]],
    policy,
) -> pd.DataFrame:
    """Score one bucket of partners exactly as the pandas job scores the whole batch.

    Returns:
        The pandas job's score rows (peer_percentile left NaN: it compares partners across
        buckets) plus ``_finite`` (False rows are rejects: a non-finite prediction).
    """
    from partnerscore.features.pipeline import build_scoring_frame, build_scoring_frame_at_age
    from partnerscore.features.validate import RawData
    from partnerscore.models.policy import smooth_and_guard_batch
    from partnerscore.models.scoring import score_features

    tables = unpack(packed, ctx.dtypes)
    partners = tables["partners"]
    signed = pd.to_datetime(partners["signed_at"])
    if ctx.at_age is None:
        ready = signed < ctx.cut
    else:
        ready = signed + pd.Timedelta(days=ctx.at_age) <= ctx.data_end
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
    raw_rows = ctx.raw_anomalies
    if raw_rows is None and ctx.robust is not None:
        from partnerscore.features.anomaly import raw_anomalies

        raw_rows = raw_anomalies(
            tables, ctx.anomaly_as_of, ctx.monitor, robust=ctx.robust, periods=ctx.periods
        )
    if raw_rows is not None:
        from partnerscore.features.anomaly import anomaly_columns

        flagged = anomaly_columns(scored, raw_rows, ctx.reference, ctx.monitor)
        scored = pd.concat([scored, flagged], axis=1)
    finite = np.isfinite(scored["pred_revenue"]) & np.isfinite(scored["pred_engagement"])
    smoothed, prev, flags = smooth_and_guard_batch(
        scored["partner_id"].tolist(), scored["score"].to_numpy(), previous, policy
    )
    from partnerscore.serving.score import decide_rows

    # the pandas job's decisions, row by row; the peer percentile is filled in across buckets
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
    return pd.concat(
        [decided, pd.DataFrame({FINITE: finite.to_numpy()}, index=decided.index)], axis=1
    )


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


def conform(frame: pd.DataFrame, probe: pd.DataFrame) -> pd.DataFrame:
    """A bucket's rows in the probe's columns and types (what the declared schema expects)."""
    if frame.empty:
        return probe.iloc[:0].copy()
    out = {}
    for name, dtype in probe.dtypes.items():
        values = frame[name] if name in frame else pd.Series(None, index=frame.index)
        if pd.api.types.is_float_dtype(dtype):
            out[name] = pd.to_numeric(values).astype("float64")
        elif pd.api.types.is_bool_dtype(dtype):
            out[name] = values.astype(bool)
        elif pd.api.types.is_integer_dtype(dtype):
            out[name] = values.astype("int64")
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            out[name] = pd.to_datetime(values).astype("datetime64[us]")
        else:
            text = values.astype(object)
            out[name] = text.where(text.notna(), None).map(lambda v: v if v is None else str(v))
    return pd.DataFrame(out, index=frame.index)


def _session(master: str, shuffle_partitions: int):
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise PartnerscoreError(
            "--engine spark: no Java runtime found (make services installs one; or set JAVA_HOME)"
        )
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
    spark = (
        builder.appName("partnerscore-score")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _peer_percentile(df, columns: list[str]):
    """``serving.score.peer_percentile`` as window functions: average ranks, small groups."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from partnerscore.serving.score import MIN_SEGMENT

    def pct(keys):
        order = Window.partitionBy(*keys).orderBy("score")
        ties = Window.partitionBy(*keys, "score")
        group = Window.partitionBy(*keys)
        avg_rank = F.rank().over(order).cast("double") + (F.count("*").over(ties) - 1) / 2.0
        return avg_rank / F.count("*").over(group) * 100.0, F.count("*").over(group)

    out, _ = pct([])
    if "tier" in columns:
        by_tier, tier_n = pct(["tier"])
        out = F.when(tier_n >= MIN_SEGMENT, by_tier).otherwise(out)
        if "partner_type" in columns:
            by_seg, seg_n = pct(["tier", "partner_type"])
            out = F.when(seg_n >= MIN_SEGMENT, by_seg).otherwise(out)
    rounded = F.pandas_udf(lambda s: s.round(1), "double")
    return df.withColumn("peer_percentile", rounded(out))


def anomaly_statistics(clean, tables, as_of: pd.Timestamp) -> tuple[dict, dict]:
    """Whole-batch values of the raw anomaly checks, computed over every clean row in Spark.

    Returns:
        ``robust``: (table, measure) -> (median, 1.4826 * MAD, floored) of the log1p values of
        rows dated before ``as_of``, exactly :func:`~partnerscore.features.anomaly.
        robust_center_scale` (the log1p values are numpy's, computed in a pandas UDF; Spark's
        exact ``percentile`` at 0.5 interpolates the two middle values as ``np.median`` does);
        ``periods``: table -> 30-day periods from ``as_of`` back to its oldest such row.
    """
    from pyspark.sql import functions as F

    from partnerscore.features.anomaly import (
        EVENT_TIME,
        MAD_TO_SD,
        MEASURES,
        VOLUME_TABLES,
        log1p_nonneg,
    )

    cut = F.lit(as_of.to_pydatetime()).cast("timestamp_ntz")
    robust = {}
    for index, (table, measure, _, _) in enumerate(MEASURES):
        if table not in tables:
            continue
        when = f"{table}__{EVENT_TIME[table][1]}"
        rows = clean.filter((F.col("_table") == table) & (F.col(when) < cut))
        columns = list(tables[table])

        def logs(batches, index=index, table=table, columns=columns):
            values_of = MEASURES[index][3]
            for pdf in batches:
                frame = pd.DataFrame({c: pdf[f"{table}__{c}"] for c in columns})
                x = log1p_nonneg(values_of(frame))
                yield pd.DataFrame({"x": x[np.isfinite(x)]})

        x = rows.select(*(f"{table}__{c}" for c in columns)).mapInPandas(logs, "x double")
        x = x.persist()
        center = x.agg(F.percentile("x", 0.5)).first()[0]
        if center is None:
            robust[(table, measure)] = (float("nan"), float("nan"))
        else:
            mad = x.agg(F.percentile(F.abs(F.col("x") - F.lit(float(center))), 0.5)).first()[0]
            robust[(table, measure)] = (float(center), max(MAD_TO_SD * float(mad), 1e-9))
        x.unpersist()
    periods = {}
    for table in VOLUME_TABLES:
        if table not in tables:
            continue
        when = f"{table}__{EVENT_TIME[table][1]}"
        oldest = (
            clean.filter((F.col("_table") == table) & (F.col(when) < cut))
            .agg(F.min(when))
            .first()[0]
        )
        if oldest is not None:
            periods[table] = int((as_of - pd.Timestamp(oldest)) / pd.Timedelta(days=1) // 30) + 1
    return robust, periods


class _Scope:
    """What :func:`~partnerscore.serving.score.batch_scope` reads of a validated batch."""

    def __init__(self, data_end, partners: pd.DataFrame, quarantined: pd.DataFrame):
        self.data_end = data_end
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
    shuffle_partitions: int = 8,
    spark=None,
):
    """The ``partnerscore score --engine spark`` job: :func:`run_score`'s output, on Spark.

    Args:
        raw_dir: Raw tables folder: a local path or any Spark-readable URI (``hdfs://``,
            ``s3a://``), validated in Spark.
        as_of: Scoring date for everyone (or None with ``at_age``).
        model: Alias, version number or model URI.
        out: Output Parquet dataset (a folder of part files, in bucket order); the rejects
            go to ``<stem>.rejects.csv`` beside it, the quarantine to ``quarantine/`` beside it.
        config: Application configuration.
        master: Spark master URL (``local[*]``, ``local[2]``, ``spark://host:7077``, ``yarn``).
        allow_local_model: As for :func:`run_score`.
        at_age: As for :func:`run_score`.
        buckets: Partner buckets (pandas groups); default one per ~5k partners, at least 2
            per shuffle partition.
        shuffle_partitions: ``spark.sql.shuffle.partitions``.
        spark: An existing session to use (left running); default: one is started and stopped.

    Returns:
        A :class:`~partnerscore.serving.score.ScoreResult`.
    """
    from partnerscore.serving.history import ScoreHistory
    from partnerscore.serving.model_store import load_scoring_model
    from partnerscore.serving.score import (
        ScoreResult,
        _checked_uri,
        _rejects,
        batch_scope,
        rejects_path,
    )
    from partnerscore.serving.spark_validate import validate_in_spark

    started = time.perf_counter()
    # pyspark 4 warns on every pandas 3 conversion; the equality test is what vouches for them
    warnings.filterwarnings("ignore", message=PANDAS_WARNING, category=FutureWarning)
    out = Path(out)
    if out.suffix.lower() != ".parquet":
        raise PartnerscoreError(f"--out {out}: the spark engine writes a Parquet dataset")
    if (as_of is None) == (at_age is None):
        raise PartnerscoreError("score: give either --as-of DATE or --at-age DAYS")
    if at_age is not None and at_age < 0:
        raise PartnerscoreError(f"--at-age {at_age}: must be a non-negative number of days")
    cut = pd.Timestamp(as_of) if as_of is not None else None
    uri = _checked_uri(model, config, allow_local_model)
    out.parent.mkdir(parents=True, exist_ok=True)
    loaded = load_scoring_model(uri, config.paths.tracking_uri())
    partner_model, version = loaded.model, loaded.version
    marks = {"driver (model)": time.perf_counter() - started}
    tick = time.perf_counter()
    own_session = spark is None
    if own_session:
        spark = _session(master, shuffle_partitions)
    marks["spark session"] = time.perf_counter() - tick
    tick = time.perf_counter()
    validated = None
    try:
        from pyspark.sql import functions as F

        n_buckets = buckets or max(
            2 * shuffle_partitions, _partner_rows(spark, raw_dir) // 5_000 + 1
        )
        validated = validate_in_spark(
            spark, str(raw_dir), n_buckets, config.validation, str(out.parent / "quarantine")
        )
        clean = validated.clean
        marks["validate (spark)"] = time.perf_counter() - tick
        tick = time.perf_counter()
        partners = (
            clean.filter(F.col("_table") == "partners")
            .select("_row", "partner_id", F.col("partners__signed_at").alias("signed_at"))
            .toPandas()
            .sort_values("_row", kind="stable")
            .reset_index(drop=True)
        )
        newest, partners_all, rejects, duplicates, ready = batch_scope(
            _Scope(validated.data_end, partners, validated.partner_quarantine),
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
                (signed[ready] + pd.Timedelta(days=at_age)).to_numpy(),
                index=in_scope_ids.to_numpy(),
            )
        )
        from partnerscore.serving.ledger import DecisionLedger
        from partnerscore.serving.score import read_overrides

        history = ScoreHistory(config.paths.history_database())
        previous = history.previous(in_scope_ids.tolist(), before=cut if cut is not None else cuts)
        anomaly_as_of = cut if cut is not None else cuts.max()
        robust, periods = anomaly_statistics(clean, validated.dtypes, anomaly_as_of)
        ctx = BucketContext(
            dtypes=validated.dtypes,
            data_end=newest,
            cut=cut,
            at_age=at_age,
            config_hash=config.hash(),
            model_uri=uri,
            reference=loaded.reference,
            anomaly_as_of=anomaly_as_of,
            robust=robust,
            periods=periods,
            monitor=config.monitor,
            decisions=DecisionLedger(config.paths.history_database()).previous(
                in_scope_ids.tolist(), before=cut if cut is not None else cuts
            ),
            overrides=read_overrides(config.score.overrides_path, config.policy),
            config=config,
            batch_size=len(in_scope_ids),
        )
        policy = config.policy
        marks["batch statistics (spark + driver)"] = time.perf_counter() - tick
        tick = time.perf_counter()
        # the declared output schema: the same functions on a few partners, on the driver
        probe_ids = in_scope_ids.iloc[:PROBE_PARTNERS].tolist()
        probe_rows = clean.filter(F.col("partner_id").isin(probe_ids)).toPandas()
        probe_rows = probe_rows.sort_values(["_table", "_row"], kind="stable")
        probe = score_bucket(probe_rows, ctx, partner_model, previous, policy)
        schema = spark_schema(conform(probe, probe))
        model_b = spark.sparkContext.broadcast(partner_model)
        previous_b = spark.sparkContext.broadcast(previous)

        def bucket(pdf: pd.DataFrame) -> pd.DataFrame:
            warnings.filterwarnings("ignore", message=PANDAS_WARNING, category=FutureWarning)
            pdf = pdf.sort_values(["_table", "_row"], kind="stable")
            return conform(score_bucket(pdf, ctx, model_b.value, previous_b.value, policy), probe)

        scored = clean.groupBy("_bucket").applyInPandas(bucket, schema=schema)
        scored = scored.persist()
        bad = scored.filter(~F.col(FINITE)).select("partner_id").toPandas()
        marks["features + scores (spark)"] = time.perf_counter() - tick
        tick = time.perf_counter()
        good = scored.filter(F.col(FINITE))
        good = _peer_percentile(good, list(probe.columns)).drop(FINITE)
        good.write.mode("overwrite").parquet(str(out))
        marks["peer percentiles + write (spark)"] = time.perf_counter() - tick
        tick = time.perf_counter()
        from partnerscore.serving.history import HISTORY_COLUMNS
        from partnerscore.serving.ledger import DECISION_COLUMNS

        wanted = {*HISTORY_COLUMNS, *DECISION_COLUMNS, *milestone_columns(config.incentives)}
        kept = [c for c in good.columns if c in wanted]
        rows = spark.read.parquet(str(out)).select(*kept).toPandas()
        scored.unpersist()
    finally:
        if validated is not None:
            validated.unpersist()
        if own_session:
            spark.stop()

    rejects.append(_rejects(bad["partner_id"], cuts, "non-finite prediction"))
    lost = ~in_scope_ids.isin(rows["partner_id"]) & ~in_scope_ids.isin(
        pd.concat([r["partner_id"] for r in rejects])
    )
    rejects.append(_rejects(in_scope_ids[lost], cuts, "features could not be computed"))
    reject_frame = pd.concat(rejects, ignore_index=True)
    reject_frame = reject_frame.sort_values(["partner_id", "reason"], kind="stable")
    write_frame_atomic(reject_frame.reset_index(drop=True), rejects_path(out))
    history.upsert(rows)
    DecisionLedger(config.paths.history_database()).record_decisions(
        rows, facts=milestone_columns(config.incentives)
    )
    marks["history + rejects (driver)"] = time.perf_counter() - tick
    return ScoreResult(
        out=out,
        rejects=rejects_path(out),
        as_of=as_of,
        model_uri=uri,
        model_version=version,
        in_scope=len(in_scope_ids),
        scored=len(rows),
        rejected=len(reject_frame),
        not_yet=int((~ready).sum()),
        graduated=int(rows["out_of_scope"].sum()) if "out_of_scope" in rows else 0,
        at_age=at_age,
        partners_input=validated.counts["partners"][0],
        duplicates=duplicates,
        guardrail_flags=int(rows["guardrail_flag"].sum()),
        provisional=int(rows["provisional"].sum()),
        seconds=time.perf_counter() - started,
        tiers=rows["score_tier"].value_counts().to_dict(),
        quarantined_rows={n: c[2] for n, c in validated.counts.items() if n != "partners" and c[2]},
        quarantine_dir=out.parent / "quarantine",
        stage_seconds=marks,
    )


def _partner_rows(spark, raw_dir) -> int:
    """Rows of the partners table (sizes the buckets), counted by Spark."""
    from partnerscore.serving.spark_validate import (
        find_tables,
        location,
        read_table,
        table_inputs,
    )

    files, _ = find_tables(spark, location(raw_dir))
    inputs = table_inputs(spark, {"partners": files["partners"]})
    return read_table(spark, inputs["partners"]).count()
