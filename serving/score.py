"""The batch scoring job: every partner signed before as_of, scored, explained and recorded."""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from partnerscore.features.anomaly import anomaly_columns, raw_anomalies
from partnerscore.features.core import (
    LeftPublish,
    PartnerscoreError,
    check_day_count,
    check_listed,
    companion_manifest,
    discard_staged,
    frame_format,
    isin_text,
    left_publish,
    milestone_dates,
    publish_listed,
    quoted,
    read_frame,
    stage_copy,
    stage_frames,
)
from partnerscore.features.parallel import (
    WorkerPool,
    can_fork,
    collector_paused,
    signals_deferred,
    start_tasks,
    worker_count,
)
from partnerscore.features.pipeline import build_scoring_frame, build_scoring_frame_at_age
from partnerscore.features.validate import _find_files, load_raw, supported_end
from partnerscore.features.validated import load_validated
from partnerscore.models.bundle import RESPELLED, UNSEEN
from partnerscore.models.milestones import milestone_columns
from partnerscore.models.model_uri import check_registry, resolve_model_uri
from partnerscore.models.policy import (
    action_schedule,
    apply_overrides,
    earlier_batches_needed,
    load_playbook,
    smooth_and_guard_batch,
    stable_tiers,
)
from partnerscore.serving.config import AppConfig, store_exists
from partnerscore.serving.model_store import (
    ScoringModel,
    load_scoring_model,
    refuse_missing_model,
)
from partnerscore.training import progress

if TYPE_CHECKING:
    from partnerscore.models.bundle import PartnerModel
    from partnerscore.serving.score_groups import SnapshotGroups

MIN_SEGMENT = 5
UNREAD_COLUMNS = {"portal_events": ("event_type",), "trainings": ("course_id",)}
"""Raw columns no feature and no anomaly check reads: the score job does not load them (105 MB
of text at 100k partners). ``tests/serving/test_score_job_columns.py`` checks that features and
anomaly flags are the same with and without them."""
REJECT_COLUMNS = ("partner_id", "as_of", "reason")
MIN_WORKER_PARTNERS = 20_000
"""Smaller batches use helper threads only (a worker process costs more than it saves)."""
READER_MIN_BYTES = 8 << 20
"""A SQLite history store smaller than this (less than one batch of
:data:`MIN_WORKER_PARTNERS` partners: ~0.5 KB per partner and batch) is read by the job itself;
a larger one, or a database server, by a worker forked at the start (:class:`_EarlierReader`)."""


@contextlib.contextmanager
def helper_thread() -> Iterator[ThreadPoolExecutor]:
    """One helper thread of the job, not waited for when the job is interrupted.

    A Ctrl-C or SIGTERM can land in the job's thread inside Python's import machinery while
    the helper thread imports too (the model loads there while the tables are read): the
    import lock is then never released and the helper waits for it for ever. Waiting for the
    helper (``with ThreadPoolExecutor()``) hung the interrupted job for ever, holding its
    stdout (seen in ~1 of 25 SIGTERMs sent as the job started). The console script ends an
    interrupted job without waiting for its threads (:func:`partnerscore.serving.cli.main`).
    On any other error the job still waits for the helper, as ``with ThreadPoolExecutor()``.
    """
    pool, interrupted = ThreadPoolExecutor(max_workers=1), False
    try:
        yield pool
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=interrupted)


def peer_percentile(scores: pd.DataFrame) -> np.ndarray:
    """Percentile (0-100) of each score among the partner's peers in this run.

    Peers are the partner's segment, tier x partner_type. A segment with fewer than
    :data:`MIN_SEGMENT` (5) scored partners is too small to compare against, so those partners
    are compared within their tier instead, and within everyone scored when the tier is small
    too. Ties share the average rank (``rank(pct=True)``); rounded to 0.1.
    """
    score = scores["score"]
    overall = score.rank(pct=True, method="average") * 100
    out = overall.copy()
    if "tier" in scores:
        tier = scores["tier"].astype(str)
        by_tier = score.groupby(tier).rank(pct=True, method="average") * 100
        tier_n = score.groupby(tier).transform("size")
        out = by_tier.where(tier_n >= MIN_SEGMENT, out)
        if "partner_type" in scores:
            seg = [tier, scores["partner_type"].astype(str)]  # a tuple key: no collisions
            by_seg = score.groupby(seg).rank(pct=True, method="average") * 100
            seg_n = score.groupby(seg).transform("size")
            out = by_seg.where(seg_n >= MIN_SEGMENT, out)
    return out.round(1).to_numpy()


def _scores_out(out: str | Path) -> Path:
    """``--out`` of a score run as a Path: a .csv or .parquet file path, not a folder."""
    out = Path(out)
    frame_format(out)
    if out.is_dir():
        raise PartnerscoreError(f"--out {out}: is a folder, expected a .csv or .parquet file")
    return out


def rejects_path(out: Path) -> Path:
    """Where the rejects of a scores file go: ``<stem>.rejects.csv`` beside it."""
    return out.with_name(f"{out.stem}.rejects.csv")


def publish_copy(scores: Path, out: Path) -> Path:
    """Publish a copy of the scores file ``scores`` as ``out``, with its companions.

    The rejects and the manifest (its ``files`` under the new names; other files it lists,
    the quarantine's, as they are) go with it, as one set (:func:`publish_listed`), so
    ``out`` is never beside another run's rejects or manifest. ``out`` is in ``scores``'s
    folder. The demo's latest batch under the CLI's default name used to be a plain copy of
    the file, left beside the rejects and manifest of a ``score`` run into that name before.

    Raises:
        PartnerscoreError: One line when ``scores`` is not the file its manifest lists.
    """
    payload = check_listed(companion_manifest(scores))
    files = payload.pop("files")
    staged = []
    try:
        for source, target in ((scores, out), (rejects_path(scores), rejects_path(out))):
            files.pop(source.name, None)
            staged.append(stage_copy(source, target))
    except BaseException:
        discard_staged(staged)
        raise
    payload.update(scores=out.name, rejects=rejects_path(out).name)
    publish_listed(
        staged, payload, companion_manifest(out), written=[out.parent / name for name in files]
    )
    return out


def scores_manifest(out: Path, uri: str, rows: int, rejected: int, **more) -> dict:
    """``<stem>.manifest.json``'s keys for a scores file ``out``, either engine's.

    :func:`~partnerscore.features.core.publish_listed` adds its files' SHA-256. ``more``:
    ``recorded`` (whether the history and ledger hold the batch) and the engine's own.
    """
    return {
        "scores": out.name,
        "rejects": rejects_path(out).name,
        "model_uri": uri,
        "rows": rows,
        "rejected": rejected,
        **more,
    }


@dataclass
class ScoreResult:
    """Outcome of ``run_score``."""

    out: Path
    rejects: Path
    as_of: date | None
    model_uri: str
    model_version: str
    eligible: int
    """Partners due a score: valid partner rows signed before as_of (or ``at_age`` days old by
    the data end), graduated ones included; a feature table's rows."""
    scored: int
    rejected: int
    not_yet: int
    partners_input: int
    """Partners in the input: the partners table's rows (quarantined ones included) for raw
    tables; a feature table's distinct partner ids (its rows are ``rows_input``)."""
    guardrail_flags: int = 0
    provisional: int = 0
    duplicates: int = 0
    graduated: int = 0
    at_age: int | None = None
    seconds: float = 0.0
    tiers: dict[str, int] = field(default_factory=dict)
    quarantined_rows: dict[str, int] = field(default_factory=dict)
    quarantine_dir: Path | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    rounds: int = 0
    """A feature table's rounds (``run_score_features``: each partner's k-th row in round k)."""
    partners: int = 0
    """Distinct partners with a score row: ``scored`` for raw tables (one row per partner),
    fewer for a feature table that holds several rows of a partner (``rounds``)."""
    shadow_of: str | None = None
    """The champion's version when the run scored another version: its rows are recorded as
    shadow rows (``history.decisions_only``), which later decisions do not read."""
    recorded: bool = True
    """Whether the batch was recorded in the history and the ledger."""
    shadow_rows: int = 0
    """Rows recorded as shadow rows (a shadow run's rows, but for keys its version decided
    when it was the champion: ``history.shadow_rows``)."""
    late_tail: str | None = None
    """The raw data's late tail (``LateTail.note``): a few partners' rows carry the data end."""
    rows_input: int | None = None
    """Rows of the input: a feature table's rows (several per partner in a training set); for
    raw tables, one partners-table row per partner, ``partners_input`` (the default)."""
    respelled_categories: int = 0
    """Scored rows with a category the model knows only in another case, read as the model's
    spelling (``Registered`` as ``registered``; the rows' ``respelled_categories`` column)."""
    respelled: dict[str, int] = field(default_factory=dict)
    """Those rows per ``respelled_categories`` text (``tier 'Registered' -> 'registered'``)."""
    unseen_categories: int = 0
    """Scored rows with a category the model never saw, scored as missing (the rows'
    ``unseen_categories`` column: ``industry=aerospace``)."""
    unseen: dict[str, int] = field(default_factory=dict)
    """Those rows per ``unseen_categories`` text (``industry=aerospace``)."""
    shared_ids: dict[str, int] = field(default_factory=dict)
    """Table -> record ids held by the rows of several partners (validation's
    ``TableReport.shared_ids``; every such row is kept and counts for its partner)."""
    interrupted_publish: LeftPublish | None = None
    """An earlier run's publish of this set (``<stem>.manifest.json``) this run found killed
    between its renames (None: none), replaced by this run's; said in one ``note:`` line."""

    def __post_init__(self) -> None:
        if self.rows_input is None:
            self.rows_input = self.partners_input

    @classmethod
    def of_rows(cls, rows: pd.DataFrame, **fields) -> ScoreResult:
        """A result counting the scored rows (by either engine); ``fields``: the rest.

        Scored, partners, graduated, provisional, guardrail flags, tiers, categories read
        in the model's spelling (:func:`respelled_counts`) and categories it never saw
        (:func:`unseen_counts`) are counted from ``rows``.
        """
        return cls(
            scored=len(rows),
            partners=int(rows["partner_id"].nunique()),
            **respelled_counts(rows),
            **unseen_counts(rows),
            graduated=int(rows["out_of_scope"].sum()) if "out_of_scope" in rows else 0,
            guardrail_flags=int(rows["guardrail_flag"].sum()),
            provisional=int(rows["provisional"].sum()),
            tiers=rows["score_tier"].value_counts().to_dict(),
            **fields,
        )

    @property
    def in_scope(self) -> int:
        """Scored partners within the onboarding scope (not graduated)."""
        return self.scored - self.graduated

    def json_payload(self) -> dict:
        """``--json``: the fields plus the summary's split of the scored partners.

        ``in_scope`` (within the onboarding scope) and ``out_of_scope`` (graduated, also
        ``graduated``): they add up to ``scored``.
        """
        from partnerscore.serving.cli_common import jsonable

        payload = jsonable(self)
        payload["in_scope"] = self.in_scope
        payload["out_of_scope"] = self.graduated
        return payload

    def summary(self) -> str:
        """Counts that add up, where things went, and the model used."""
        tiers = ", ".join(f"{k}: {v:,}" for k, v in sorted(self.tiers.items()))
        when = (
            f"at onboarding age {self.at_age} days"
            if self.at_age is not None
            else (f"as of {self.as_of}")
        )
        not_yet = (
            f"not {self.at_age} days old by the data end"
            if self.at_age is not None
            else "signed on/after as_of"
        )
        if self.rounds:
            lines = [
                f"scored {self.scored:,} rows of {self.partners:,} partners from a feature table "
                f"in {self.rounds:,} round(s) (a partner's k-th as_of in round k) with "
                f"{self.model_uri} (version {self.model_version or '-'}) in {self.seconds:.1f} s",
                f"  rows in input {self.rows_input:,} (of {self.partners_input:,} partners) = "
                f"scored {self.scored:,} + rejected {self.rejected:,}",
            ]
        else:
            lines = [
                f"scored {self.scored:,} partners {when} with {self.model_uri} "
                f"(version {self.model_version or '-'}) in {self.seconds:.1f} s",
                f"  partner rows in input {self.partners_input:,} = scored {self.scored:,} + "
                f"rejected {self.rejected:,} + {not_yet} {self.not_yet:,}"
                + (
                    f" + duplicate rows of kept partners {self.duplicates:,}"
                    if self.duplicates
                    else ""
                ),
            ]
        lines += [
            f"  score tiers: {tiers or 'none'}; provisional: {self.provisional:,}; "
            f"in onboarding scope: {self.in_scope:,}; "
            f"graduated (past the trained onboarding ages): {self.graduated:,}; "
            f"guardrail flags: {self.guardrail_flags:,}",
        ]
        if self.quarantined_rows:
            counts = ", ".join(f"{k} {v:,}" for k, v in sorted(self.quarantined_rows.items()))
            lines.append(
                f"  quarantined rows (scored without them): {counts} -> {self.quarantine_dir}"
            )
        if self.respelled_categories:
            lines.append(
                f"  read in the model's spelling (categories it knows in another case): "
                f"{self.respelled_categories:,} rows: {_listed(self.respelled)}"
            )
        if self.unseen_categories:
            lines.append(
                "  scored as missing (categories the model never saw): "
                f"{self.unseen_categories:,} rows: {_listed(self.unseen)}"
            )
        if self.shared_ids:
            counts = ", ".join(f"{k} {v:,}" for k, v in sorted(self.shared_ids.items()))
            lines.append(
                "  record ids held by several partners (all rows kept, each counts for its "
                f"partner; `partnerscore validate` lists examples): {counts}"
            )
        if self.late_tail is not None:
            lines.append(f"  warning: {self.late_tail}")
        if self.shadow_of is not None:
            unread = (
                "which smoothing, tier hysteresis, incentives, reports and the monitor do not read"
            )
            kept = self.scored - self.shadow_rows
            if not self.recorded:
                recorded = "this batch is not recorded (--no-history)"
            elif not kept:
                recorded = f"this batch is recorded as shadow rows, {unread}"
            else:
                recorded = (
                    f"{self.shadow_rows:,} rows are recorded as shadow rows, {unread}; {kept:,} "
                    "stay this version's decisions on their dates (it was the champion then)"
                )
            lines.append(f"  shadow run: the champion is version {self.shadow_of}; {recorded}")
        lines += [f"  wrote {self.out}", f"  rejects {self.rejects}"]
        return "\n".join(lines)


RESPELLED_SHOWN = 6
"""Texts the score summary lists per kind (spellings, unseen categories; then "and N more")."""


def _listed(counts: dict[str, int]) -> str:
    """The summary's list of texts with their rows: the first :data:`RESPELLED_SHOWN`."""
    shown = "; ".join(f"{text} ({rows:,})" for text, rows in list(counts.items())[:RESPELLED_SHOWN])
    more = len(counts) - RESPELLED_SHOWN
    return shown + (f"; and {more:,} more" if more > 0 else "")


def _text_counts(rows: pd.DataFrame, column: str) -> tuple[int, dict[str, int]]:
    """Rows with a non-empty ``column`` and rows per text, most first, then by text."""
    if column not in rows:
        return 0, {}
    notes = rows[column].astype(object).where(rows[column].notna(), "")
    counted = notes[notes != ""].value_counts()
    ordered = sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))
    return int(counted.sum()), {str(text): int(n) for text, n in ordered}


def respelled_counts(rows: pd.DataFrame) -> dict:
    """``respelled_categories`` (rows) and ``respelled`` (rows per text) of score rows.

    Counted from the rows' ``respelled_categories`` column (``score_features``), so both
    engines count alike; rows without the column (none) count nothing. ``respelled`` is sorted
    by rows, most first, then by text.
    """
    total, by_text = _text_counts(rows, RESPELLED)
    return {"respelled_categories": total, "respelled": by_text}


def unseen_counts(rows: pd.DataFrame) -> dict:
    """``unseen_categories`` (rows) and ``unseen`` (rows per text) of score rows.

    Counted from the rows' ``unseen_categories`` column (``score_features``, for raw tables and
    feature tables alike), as :func:`respelled_counts`.
    """
    total, by_text = _text_counts(rows, UNSEEN)
    return {"unseen_categories": total, "unseen": by_text}


@collector_paused()
def run_score(
    raw_dir: str | Path,
    as_of: date | None,
    model: str,
    out: str | Path,
    config: AppConfig,
    *,
    allow_local_model: bool = False,
    at_age: int | None = None,
    record_history: bool = True,
    validated: str | Path | None = None,
    workers: int | None = None,
    group_partners: int | None = None,
) -> ScoreResult:
    """The ``partnerscore score`` job.

    Validates the raw tables (quarantine beside the output), builds features strictly before
    ``as_of`` for every partner signed before it, scores them with the registered model,
    adds peer percentiles, smoothing and guardrails from the score history, writes the scores
    file atomically (CSV or Parquet by suffix) and a rejects file, then records the run in the
    history store (re-running the same as_of replaces its rows).

    Args:
        raw_dir: Raw tables folder.
        as_of: Scoring date for everyone (or None with ``at_age``).
        model: Alias, version number or model URI.
        out: Scores file path.
        config: Application configuration (policy, paths; its hash is stamped on every row).
        allow_local_model: Accept a model folder or file: URI outside the registry. Loading a
            model unpickles it, which runs code: only do this for folders you trust.
        at_age: Score every partner at its own milestone signed_at + ``at_age`` days instead
            of one date; partners not that old by the data end are skipped and counted.
        record_history: Record the batch in the score history (smoothing still reads it).
        validated: A validated snapshot to reuse (must match); default: ``raw_dir/validated``
            when it matches, else the raw tables are validated (see ``features.validated``).
        workers: Processes (None: the available cores). With more than one, a batch of
            :data:`MIN_WORKER_PARTNERS` partners or more runs the raw-table anomaly checks in a
            forked worker process while this one scores, and the ledger rows are converted
            and written by another while this one writes the history; with one, or without
            ``fork``, helper threads do that work in this process. The output does not
            depend on it.
        group_partners: From a validated snapshot of more partners, read, build, score and
            check groups of this many at a time (:mod:`partnerscore.serving.score_groups`:
            the same output with one group's rows in memory; default
            :data:`~partnerscore.features.pipeline.GROUP_PARTNERS`, as ``build``; 0: all at
            once).

    Returns:
        Counts and paths.

    Raises:
        PartnerscoreError: Bad input, a stale as_of, an unusable model or history store; in
            every case nothing is published (scores, rejects and history stay as they were).
    """
    started = time.perf_counter()
    out = _scores_out(out)
    if (as_of is None) == (at_age is None):
        raise PartnerscoreError("score: give either --as-of DATE or --at-age DAYS")
    if at_age is not None:
        check_day_count("--at-age", at_age)
    workers = worker_count(workers)
    from partnerscore.features.pipeline import group_size

    size = group_size(group_partners)
    cut = pd.Timestamp(as_of) if as_of is not None else None
    uri = _checked_uri(model, config, allow_local_model)
    # before any work: the model itself loads while tables are read
    refuse_missing_model(uri, config.paths.tracking_uri())
    # a missing raw folder or table, too: once the model's thread has started, an error waits
    # for its load before it is reported
    _find_files(Path(raw_dir))
    # before this run writes there (its quarantine files, below): a publish killed earlier
    left = left_publish(companion_manifest(out), "score")
    from partnerscore.serving.score_groups import score_groups

    qdir = out.parent / "quarantine"
    # the model (its scoring view: SQLAlchemy for the history is imported on the way; a
    # version without a view imports LightGBM and scikit-learn, ~2 s) loads in a helper
    # thread while the raw tables are read and the features built; the raw-table anomaly
    # checks then run while the batch is scored: in a worker process (forked once that
    # thread is done: no thread may run at fork) or, with one worker, in a helper thread.
    # The batch's earlier scores and decisions (smoothing, hysteresis) are read by a worker
    # forked now, before any thread starts, and told the partners once the tables are read
    with contextlib.ExitStack() as stack:
        reader = None
        if workers > 1 and can_fork():
            reader = _EarlierReader.start(
                config.paths.history_database(), cut, earlier_batches_needed(config.policy)
            )
            if reader is not None:
                stack.callback(reader.close)
        pool = stack.enter_context(helper_thread())
        model_job = pool.submit(_load_for_scoring, uri, config.paths.tracking_uri())
        groups, stale = _split_groups(Path(raw_dir), validated, qdir, config, size, as_of, at_age)
        if groups is not None:
            stack.callback(groups.close)
            raw = groups.raw
        else:
            with progress.task("score: validating raw tables"):
                if stale:  # noted: the raw tables are validated, as load_validated does
                    raw = load_raw(Path(raw_dir), qdir, config=config.validation)
                    raw.drop_columns(UNREAD_COLUMNS)
                else:
                    raw = load_validated(
                        Path(raw_dir),
                        validated,
                        qdir,
                        config=config.validation,
                        skip_columns=UNREAD_COLUMNS,
                    )
        end, partners_all, rejects, duplicates, ready = batch_scope(
            raw, raw_dir, as_of, at_age, config
        )
        if reader is not None:
            reader.ask(*_batch_cutoffs(partners_all, ready, cut, at_age))
        if groups is not None:
            with progress.task("score: loading the model"):
                loaded = model_job.result()
            checks_as_of = cut if cut is not None else milestone_cutoffs(partners_all, at_age, end)
            with progress.task(f"score: {groups.ranges.n_groups} groups of partners"):
                grouped = score_groups(
                    groups, loaded.model, cut, at_age, checks_as_of, ready, config
                )
            groups.close()
            keys = grouped.keys
            cuts = pd.Series(pd.to_datetime(keys["as_of"]).to_numpy(), index=keys["partner_id"])
            earlier = None
            if reader is not None:
                earlier = reader.result(keys["partner_id"], cut if cut is not None else cuts)
            scored, raw_rows, reasons = grouped.scored, grouped.raw_rows, grouped.reasons
            del grouped, keys
        else:  # the whole batch at once
            with progress.task("score: building point-in-time features"):
                if at_age is None:
                    features = build_scoring_frame(raw, cut)
                else:
                    features = build_scoring_frame_at_age(raw, at_age)[0]
            cuts = pd.Series(
                pd.to_datetime(features["as_of"]).to_numpy(), index=features["partner_id"]
            )
            # under --at-age each partner's checks read its rows before its own milestone
            checks = partial(
                raw_anomalies, raw.tables, cut if cut is not None else cuts, config.monitor
            )
            with progress.task("score: loading the model"):
                loaded = model_job.result()
            # the earlier rows, if the reader was asked (it has finished before the fork below)
            earlier = None
            if reader is not None:
                earlier = reader.result(features["partner_id"], cut if cut is not None else cuts)
            if workers > 1 and can_fork() and len(features) >= MIN_WORKER_PARTNERS:
                pool.shutdown(wait=True)
                anomalies = start_tasks([checks], workers)
            else:
                anomalies_job = pool.submit(checks)
                anomalies = lambda: [anomalies_job.result()]  # noqa: E731
            # on an error below, wait for the checks (as the thread pool does) before raising
            stack.callback(_quietly, anomalies)
            from partnerscore.models.scoring import score_features

            with progress.task(f"score: scoring and explaining {len(features):,} partners"):
                scored = score_features(loaded.model, features, policy=config.policy)
            scored = with_upgrade_paths(loaded.model, features, scored, config)
            reasons = unscorable(loaded.model, features, scored)
            raw_rows = anomalies()[0]
    version = loaded.version
    shadow_of = _shadow_of(uri, version, config)
    in_scope_ids = partners_all.loc[ready, "partner_id"].astype(str)
    not_yet = int((~ready).sum())
    kept = reasons == ""
    when = cut if cut is not None else cuts
    rejects.append(_rejects(scored.loc[~kept, "partner_id"], when, reasons[~kept]))
    scored = scored[kept].reset_index(drop=True)
    lost = ~isin_text(in_scope_ids, scored["partner_id"]) & ~isin_text(
        in_scope_ids, pd.concat([r["partner_id"] for r in rejects])
    )
    rejects.append(_rejects(in_scope_ids[lost], when, "features could not be computed"))
    flags = anomaly_columns(scored, raw_rows, loaded.reference, config.monitor)
    scored = pd.concat([scored, flags], axis=1)
    scored, reject_frame, shadowed = _publish(
        scored,
        rejects,
        cut if cut is not None else cuts,
        uri,
        out,
        config,
        record_history,
        workers,
        earlier,
        shadow=shadow_of is not None,
        quarantine=qdir,
    )
    quarantined_rows = {
        name: len(frame)
        for name, frame in raw.quarantine.items()
        if name != "partners" and len(frame)
    }
    return ScoreResult.of_rows(
        scored,
        out=out,
        rejects=rejects_path(out),
        as_of=as_of,
        model_uri=uri,
        model_version=version,
        eligible=len(in_scope_ids),
        rejected=len(reject_frame),
        not_yet=not_yet,
        at_age=at_age,
        partners_input=len(partners_all) + len(raw.quarantine.get("partners", ())),
        duplicates=duplicates,
        seconds=time.perf_counter() - started,
        quarantined_rows=quarantined_rows,
        # named only when this run wrote quarantine files there (partner rows included)
        quarantine_dir=qdir if any(len(f) for f in raw.quarantine.values()) else None,
        shadow_of=shadow_of,
        recorded=record_history,
        shadow_rows=shadowed,
        late_tail=raw.late_tail.note() if raw.late_tail is not None else None,
        shared_ids={n: t.shared_ids for n, t in raw.report.tables.items() if t.shared_ids},
        interrupted_publish=left,
    )


def with_upgrade_paths(
    model: PartnerModel,
    features: pd.DataFrame,
    scored: pd.DataFrame,
    config: AppConfig,
    batch_size: int | None = None,
) -> pd.DataFrame:
    """Add ``next_tier`` and ``next_tier_changes`` (scenario planning for every partner).

    ``next_tier_changes`` lists the smallest actionable changes that lift the partner's score
    into the next tier; empty for the best tier, graduated partners, when no path within
    ``whatif.upgrade_max_steps`` features exists, or for batches above
    ``whatif.upgrade_max_partners`` (``batch_size``: the whole batch's size when ``scored`` is
    one group of it).
    """
    from partnerscore.models.whatif import upgrade_paths
    from partnerscore.serving.whatif import change_text

    n = len(scored)
    tiers = scored["score_tier"].to_numpy(dtype=object)
    ordered = [k for k, _ in sorted(config.policy.tier_cutoffs.items(), key=lambda kv: -kv[1])]
    above = {t: ordered[i - 1] for i, t in enumerate(ordered) if i > 0}
    text = [""] * n
    if n > 0 and (batch_size or n) <= config.whatif.upgrade_max_partners:
        paths = upgrade_paths(
            model,
            features,
            tiers,
            config.policy,
            grid=config.whatif.upgrade_grid,
            max_steps=config.whatif.upgrade_max_steps,
        )
        text = [change_text(model.feature_specs, p) if p else "" for p in paths]
    extra = pd.DataFrame(
        {
            "next_tier": pd.array([above.get(t, "") for t in tiers], dtype="str"),
            "next_tier_changes": pd.array(text, dtype="str"),
        },
        index=scored.index,
    )
    return pd.concat([scored, extra], axis=1)


NON_FINITE = "non-finite prediction"


def finite_predictions(scored: pd.DataFrame) -> np.ndarray:
    """Per score row, whether both its predictions (revenue, engagement) are finite."""
    return np.isfinite(scored["pred_revenue"].to_numpy(dtype=float)) & np.isfinite(
        scored["pred_engagement"].to_numpy(dtype=float)
    )


def unscorable(model, features: pd.DataFrame, scored: pd.DataFrame) -> np.ndarray:
    """Per score row (``features``' rows, in order), why it is a reject ("" when it is kept).

    A feature that is infinite (a partner's raw amounts add past the float range) is named:
    the row's numbers say nothing (:func:`~partnerscore.models.frame_check.infinite_features`);
    else a prediction that is not finite. Shared by the whole job, the grouped job and the
    Spark engine.
    """
    from partnerscore.models.frame_check import infinite_features

    reasons = infinite_features(model, features)
    finite = finite_predictions(scored)
    return np.where(reasons != "", reasons, np.where(finite, "", NON_FINITE)).astype(object)


def read_overrides(path: str | None, policy) -> pd.DataFrame:
    """Account owners' overrides (CSV/Parquet), checked; empty when no file is configured.

    Columns: partner_id, tier (a configured tier, or empty), action (text, or empty), reason
    (required), expires (date, required). One row per partner.

    Raises:
        PartnerscoreError: Missing column, bad tier or date, no reason, or a partner listed
            twice: one line naming the file, column and row.
    """
    from partnerscore.models.policy import OVERRIDE_COLUMNS

    if path is None:
        return pd.DataFrame(columns=list(OVERRIDE_COLUMNS))
    frame = read_frame(path, text=lambda c: True)
    for col in ("partner_id", "reason", "expires"):
        if col not in frame:
            raise PartnerscoreError(f"{path}: missing column '{col}'")
    for col in ("tier", "action"):
        if col not in frame:
            frame[col] = ""
    frame = frame[list(OVERRIDE_COLUMNS)].astype(object).where(frame.notna(), "")
    frame = frame.map(lambda v: " ".join(str(v).split()))
    for i, rec in enumerate(frame.to_dict("records"), start=1):
        if not rec["partner_id"]:
            raise PartnerscoreError(f"{path}: row {i}: column 'partner_id' is empty")
        if rec["tier"] and rec["tier"] not in policy.tier_cutoffs:
            raise PartnerscoreError(
                f"{path}: row {i}: column 'tier': {quoted(rec['tier'])} is not a tier "
                f"({', '.join(policy.tier_cutoffs)})"
            )
        if not rec["reason"]:
            raise PartnerscoreError(f"{path}: row {i}: column 'reason' is empty")
        if not rec["tier"] and not rec["action"]:
            raise PartnerscoreError(f"{path}: row {i}: give a 'tier' or an 'action' to override")
        try:
            pd.Timestamp(rec["expires"]).date()
        except (ValueError, TypeError) as exc:
            raise PartnerscoreError(
                f"{path}: row {i}: column 'expires': {quoted(rec['expires'])} is not a date"
            ) from exc
    dupes = frame["partner_id"].duplicated()
    if dupes.any():
        row = int(np.flatnonzero(dupes.to_numpy())[0]) + 2
        raise PartnerscoreError(
            f"{path}: row {row}: partner {quoted(frame['partner_id'][dupes].iat[0])} is listed "
            "twice"
        )
    frame["expires"] = pd.to_datetime(frame["expires"])
    return frame


def batch_scope(
    raw,
    raw_dir,
    as_of: date | None,
    at_age: int | None,
    config: AppConfig,
    names: tuple[str, str] = ("--as-of", "--at-age"),
):
    """Who a scoring batch covers (shared by the pandas and Spark jobs and the Python API).

    Refuses a stale as_of; turns quarantined partner rows into rejects (a duplicate row of a
    kept partner is counted instead, never rejected); marks partners signed before as_of, or
    ``at_age`` days old by the supported data end (the newest event, or where every other
    partner's data ends when a few partners' rows alone carry it:
    :func:`~partnerscore.features.validate.supported_end`).

    ``names`` are what messages call as_of and at_age (the options, or the API's arguments).

    Returns:
        (supported data end, valid partners, reject frames, duplicate rows, ready mask).
    """
    as_of_name, at_age_name = names
    newest = pd.Timestamp(raw.data_end)
    limit = newest.normalize() + pd.Timedelta(days=1 + config.score.as_of_tolerance_days)
    cut = pd.Timestamp(as_of) if as_of is not None else None
    if cut is not None and cut > limit:
        raise PartnerscoreError(
            f"{as_of_name} {as_of}: more than {config.score.as_of_tolerance_days} days after the "
            f"newest event in {raw_dir} ({newest:%Y-%m-%d}); scores would describe a present the "
            "data does not cover (score.as_of_tolerance_days)"
        )
    tail = raw.late_tail
    if cut is not None and tail is not None:
        supported = tail.supported.normalize() + pd.Timedelta(
            days=1 + config.score.as_of_tolerance_days
        )
        if cut > supported:
            raise PartnerscoreError(
                f"{as_of_name} {as_of}: more than {config.score.as_of_tolerance_days} days after "
                f"every other partner's data ends: {tail.note()}; scores would describe a "
                "present the data does not cover for all but those partners"
            )
    partners_all = raw.tables["partners"]
    quarantined = raw.quarantine.get("partners", pd.DataFrame(columns=["partner_id", "reason"]))
    # quarantine rows hold the ids as the file does (padded or not), the valid rows trimmed
    ids = quarantined["partner_id"].astype(str).str.strip()
    # a duplicate row of a valid partner is in the quarantine file, but the partner is scored
    duplicate = isin_text(ids, partners_all["partner_id"].astype(str))
    duplicates = int(duplicate.sum())
    quarantined, ids = quarantined[~duplicate], ids[~duplicate]
    rejects = [
        _rejects(
            ids,
            cut,
            "partner row quarantined: " + quarantined["reason"].astype(str),
        )
    ]
    end = supported_end(newest, tail)
    if at_age is None:
        signed = pd.to_datetime(partners_all["signed_at"])
        ready = (signed < cut).to_numpy()
        if not ready.any():
            raise PartnerscoreError(f"{as_of_name} {as_of}: no partner signed before this date")
    else:
        milestone = milestone_dates(partners_all["signed_at"], at_age)
        ready = (milestone <= end).to_numpy()
        if not ready.any():
            said = "the data end" if tail is None else "the supported data end"
            raise PartnerscoreError(
                f"{at_age_name} {at_age}: no partner is {at_age} days old by {said} {end:%Y-%m-%d}"
            )
    return end, partners_all, rejects, duplicates, ready


def _split_groups(
    raw_dir: Path,
    validated: str | Path | None,
    qdir: Path,
    config: AppConfig,
    size: int,
    as_of: date | None,
    at_age: int | None,
) -> tuple[SnapshotGroups | None, bool]:
    """The validated snapshot split by partner group, when it has more than ``size`` partners.

    Returns:
        (the groups or None: score the batch whole; whether the automatic snapshot turned
        out stale while it was split: noted, the raw tables are to be validated).
    """
    from partnerscore.features.validated import StaleSnapshot, stale_note
    from partnerscore.serving.score_groups import SnapshotGroups

    groups = SnapshotGroups.open(raw_dir, validated, qdir, config.validation, size, UNREAD_COLUMNS)
    if groups is None:
        return None, False
    # a bad as_of stops the job before the split (the scope itself is taken again afterwards:
    # the quarantined partner rows, which make rejects, are read once the files are checked)
    batch_scope(groups.raw, raw_dir, as_of, at_age, config)
    with progress.task("score: splitting the snapshot by partner group"):
        try:
            groups.split(qdir.parent, qdir)
        except StaleSnapshot as exc:
            if validated is not None:
                raise
            stale_note(exc, raw_dir)
            return None, True
    return groups, False


def milestone_cutoffs(partners: pd.DataFrame, at_age: int, data_end) -> pd.Series:
    """partner_id -> milestone of every partner ready by ``data_end``.

    The anomaly checks' as_of under ``--at-age``: each partner's own, as its features' (one
    date for everyone, the newest milestone, let a partner signed after every other move
    everyone's checks).

    ``data_end``: the supported data end (:func:`batch_scope`'s), which decides who is ready.
    """
    milestone = milestone_dates(partners["signed_at"], at_age)
    ready = (milestone <= data_end).to_numpy()
    ids = partners["partner_id"].astype(str).to_numpy()[ready]
    return pd.Series(pd.to_datetime(milestone[ready]).to_numpy(), index=ids)


def _quietly(wait) -> None:
    """Call ``wait``, ignoring its error (one being raised already says what went wrong)."""
    with contextlib.suppress(Exception):
        wait()


def _shadow_of(uri: str, version: str, config: AppConfig) -> str | None:
    """The champion's version when the run scores another one (a shadow run), else None.

    The champion decides: a run of any other version (a challenger, an older version, a
    model folder) is recorded for comparison as shadow rows. No champion (no registry, or
    nothing promoted yet): the run decides.
    """
    from partnerscore.serving.model_store import champion_version

    champion = champion_version(uri, config.train.registered_model, config.paths.tracking_uri())
    return None if champion is None or champion == str(version) else champion


def _checked_uri(model: str, config: AppConfig, allow_local_model: bool) -> str:
    """The model URI, refusing unregistered folders unless allowed; checks the playbook too.

    A registered model needs its registry: a local one that is not there is refused (MLflow
    would create it empty).
    """
    uri = resolve_model_uri(model, config.train.registered_model)
    if not uri.startswith(("models:/", "runs:/")) and not allow_local_model:
        raise PartnerscoreError(
            f"--model {model}: not a registered model; loading a model folder runs its pickled "
            "code, so a local path needs --allow-local-model"
        )
    load_playbook(config.policy)  # a broken playbook stops the run before any work
    read_overrides(config.score.overrides_path, config.policy)  # ... and so do bad overrides
    check_registry(config.paths.tracking_uri(), uri)
    return uri


def _load_for_scoring(uri: str, tracking_uri: str) -> ScoringModel:
    """:func:`load_scoring_model`, importing the scoring code and SQLAlchemy on the way.

    Runs in a helper thread while the main one reads the snapshot and builds features.
    """
    from partnerscore.models import scoring  # noqa: F401  (pandas, pyarrow: no LightGBM)
    from partnerscore.serving import history, ledger  # noqa: F401  (SQLAlchemy: ~0.4 s)

    # the scoring view: importing LightGBM and scikit-learn would cost ~2 s of CPU (README)
    return load_scoring_model(uri, tracking_uri, lean=True)


def _load(uri: str, config: AppConfig) -> tuple[PartnerModel, str]:
    """The PartnerModel behind ``uri`` and its registry version ('' when not registered)."""
    loaded = load_scoring_model(uri, config.paths.tracking_uri())
    return loaded.model, loaded.version


def _publish(
    scored: pd.DataFrame,
    rejects: list[pd.DataFrame],
    before: pd.Timestamp | pd.Series,
    uri: str,
    out: Path,
    config: AppConfig,
    record_history: bool,
    workers: int = 1,
    earlier: tuple[dict, dict] | None = None,
    decided: pd.DataFrame | None = None,
    shadow: bool = False,
    quarantine: Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Peers, smoothing and guardrails from the history, then scores + rejects + history.

    The history rows are written while the files are staged (into a store that exists
    already), committed only once both files are staged; the files are published only once
    the history holds the batch: either both describe this run, or (history locked, disk
    full) neither changes. With ``workers`` > 1 (and a batch of :data:`MIN_WORKER_PARTNERS`
    or more) a worker process converts and writes the ledger rows, after the history's, as
    this process would. ``earlier``: :func:`earlier_rows` of (at least) the batch's partners,
    read already (by :class:`_EarlierReader` while the tables were read); None reads them here.
    ``decided``: rows of earlier rounds of the same job, decided and recorded already
    (:func:`_record_round`): written to the scores file with this batch's, not recorded again.
    ``shadow``: the run scored a version other than the champion (:func:`_shadow_of`): its
    rows are recorded as shadow rows (``history.shadow_rows``). ``quarantine``: the folder
    of this run's quarantine files (validation wrote them), listed in the manifest.

    The two files cannot be renamed in one step: they are published with
    :func:`~partnerscore.features.core.publish_listed`, ``<stem>.manifest.json``
    (:func:`~partnerscore.features.core.companion_manifest`) renamed last, listing the
    scores, the rejects and the quarantine files with their SHA-256, a mark beside it while
    the renames run; a SIGKILL between two renames (which no handler holds) left new scores
    beside the previous run's rejects with no sign, and the readers of a scores file
    (:func:`~partnerscore.features.core.check_companions`) now refuse such a mix. The
    history (and the ledger) is committed before the renames: killed in between, the history
    holds this batch while the files are the previous run's (or a refused mix), and the same
    batch run again replaces its history and ledger rows (same keys) and publishes the files.

    Returns:
        (the scores file's rows, the rejects, how many rows were recorded as shadow rows).
    """
    from partnerscore.serving.history import (  # SQLAlchemy (see _load_for_scoring)
        ScoreHistory,
        shadow_rows,
    )
    from partnerscore.serving.ledger import DecisionLedger

    history = ScoreHistory(config.paths.history_database())
    scored = _decided_batch(scored, before, uri, config, history.url, earlier)
    if decided is not None and len(decided):
        file_rows = pd.concat([decided, scored], ignore_index=True)
        file_rows = file_rows.sort_values("partner_id", kind="stable").reset_index(drop=True)
    else:
        file_rows = scored
    reject_frame = pd.concat(rejects, ignore_index=True)
    reject_frame = reject_frame.sort_values(["partner_id", "reason"], kind="stable")
    reject_frame = reject_frame.reset_index(drop=True)
    ledger = DecisionLedger(config.paths.history_database())
    facts = milestone_columns(config.incentives)
    flags = shadow_rows(scored, shadow, history) if record_history else None
    writer = None
    # from the history's commit until the files are published, Ctrl-C and SIGTERM wait (a
    # second one acts at once), and the job then finishes: a signal between the commit and
    # the ledger's write left the history holding a batch the ledger and the files did not
    commit_guard, held = contextlib.ExitStack(), []

    def hold_signals() -> None:
        if not held:  # once (it may be called again as the commit's hook)
            held.append(True)
            commit_guard.enter_context(signals_deferred(commit=True))

    if record_history and workers > 1 and can_fork() and len(scored) >= MIN_WORKER_PARTNERS:
        # a worker process converts and writes the ledger rows while this one writes the
        # history; it writes only once the history holds the batch (forked before the file
        # writer thread starts: no thread runs at fork)
        writer = _LedgerWriter(ledger.url, scored, facts, flags)
    try:
        with progress.task("score: writing scores and history"):
            # the files are written by a second thread (Parquet encoding releases the GIL)
            # while this one converts the history rows and writes them into an existing
            # store; the history commits only once both files are staged and the ledger rows
            # converted, the ledger is written after it, and the files are published only
            # once the store holds the batch
            with ThreadPoolExecutor(max_workers=1) as pool:
                staging = None

                def staged_and_converted() -> None:
                    staging.result()  # re-raises a failed write (it staged nothing then)
                    if writer is not None:
                        writer.prepared()  # re-raises a failed conversion
                    hold_signals()

                rows = decisions = None
                try:
                    # signals held while the write is handed to the thread: a SIGTERM inside
                    # submit (it waits for the thread to start) came after the write was
                    # queued but before it was known here, and its staged files were left
                    # behind (3 of 250 SIGTERMs sent as the job started)
                    with signals_deferred():
                        staging = pool.submit(
                            stage_frames, [(file_rows, out), (reject_frame, rejects_path(out))]
                        )
                    if record_history:
                        rows = history.prepare(scored, shadow=flags)
                        if writer is None:
                            decisions = ledger.prepare_decisions(scored, facts=facts, shadow=flags)
                        if _new_sqlite_store(history):
                            _upsert_new_store(history, rows, staged_and_converted)
                        else:
                            if not history.exists():  # created only for a staged batch
                                staged_and_converted()
                            history.upsert(rows, before_commit=staged_and_converted)
                except BaseException:
                    if staging is not None and staging.exception() is None:  # waits for it
                        discard_staged(staging.result())
                    raise
                staged = staging.result()
            try:
                if record_history:
                    if writer is None:
                        ledger.record_decisions(decisions)
                    else:
                        writer.write()
            except BaseException:
                discard_staged(staged)
                raise
        written = sorted(quarantine.glob("*.csv")) if quarantine is not None else []
        manifest = scores_manifest(
            out, uri, len(file_rows), len(reject_frame), recorded=record_history
        )
        # the manifest, listing every file's SHA-256, renamed last
        publish_listed(staged, manifest, companion_manifest(out), written=written)
    finally:
        try:
            if writer is not None:
                writer.close()
        finally:
            commit_guard.close()  # a signal held meanwhile: the batch whole, the job finishes
    return file_rows, reject_frame, 0 if flags is None else int(flags.sum())


def _decided_batch(
    scored: pd.DataFrame,
    before: pd.Timestamp | pd.Series,
    uri: str,
    config: AppConfig,
    url: str,
    earlier: tuple[dict, dict] | None = None,
) -> pd.DataFrame:
    """A batch sorted by partner, with its peers, smoothing, guardrails and tier decisions.

    ``earlier``: the partners' earlier scores and decisions (:func:`earlier_rows`; None reads
    them from the store at ``url``, before ``before``).
    """
    scored = scored.sort_values("partner_id", kind="stable").reset_index(drop=True)
    if earlier is None:
        earlier = earlier_rows(
            url, scored["partner_id"].tolist(), before, earlier_batches_needed(config.policy)
        )
    previous, decisions = earlier
    smoothed, prev, flags = smooth_and_guard_batch(
        scored["partner_id"].tolist(), scored["score"].to_numpy(), previous, config.policy
    )
    return _decide(scored, smoothed, prev, flags, decisions, uri, config)


def feature_rounds(partner_ids: pd.Series, as_of: np.ndarray) -> np.ndarray:
    """Each row's round: 0 for a partner's earliest as_of, 1 for its next, and so on."""
    order = np.lexsort((as_of, partner_ids.astype(str).to_numpy()))
    ids = partner_ids.astype(str).to_numpy()[order]
    start = np.r_[True, ids[1:] != ids[:-1]] if len(ids) else np.zeros(0, bool)
    first = np.maximum.accumulate(np.where(start, np.arange(len(ids)), 0))
    rounds = np.empty(len(ids), dtype=np.int64)
    rounds[order] = np.arange(len(ids)) - first
    return rounds


def _cutoffs(rows: pd.DataFrame, as_of: np.ndarray) -> pd.Series:
    """partner_id -> cut-off of one round's rows (one row per partner)."""
    return pd.Series(as_of, index=rows["partner_id"].astype(str).to_numpy())


def _record_round(
    scored: pd.DataFrame,
    before: pd.Series,
    uri: str,
    config: AppConfig,
    record: bool,
    shadow: bool = False,
) -> tuple[pd.DataFrame, int]:
    """One earlier round of a feature table: decided as its own run, recorded in the stores.

    The history and the ledger then hold it (unless ``record`` is False) before the table's
    next round is decided, as if ``score --features`` had run on this round's rows alone.

    Returns:
        (the decided rows, how many were recorded as shadow rows).
    """
    from partnerscore.serving.history import ScoreHistory, shadow_rows
    from partnerscore.serving.ledger import DecisionLedger

    history = ScoreHistory(config.paths.history_database())
    ledger = DecisionLedger(config.paths.history_database())
    shadowed = 0
    try:
        decided = _decided_batch(scored, before, uri, config, history.url)
        if record:
            flags = shadow_rows(decided, shadow, history)
            shadowed = int(flags.sum())
            history.upsert(history.prepare(decided, shadow=flags))
            facts = milestone_columns(config.incentives)
            ledger.record_decisions(ledger.prepare_decisions(decided, facts=facts, shadow=flags))
    finally:
        history.dispose()
        ledger.dispose()
    return decided, shadowed


def _new_sqlite_store(history) -> bool:
    """Whether the history is a SQLite file that does not exist yet (a first batch)."""
    url = history.url
    return url.startswith("sqlite:///") and "?" not in url and not history.exists()


def _upsert_new_store(history, rows, before_commit: Callable[[], object]) -> None:
    """Write a first batch while its files are staged, into a store that does not exist yet.

    The rows go into a new SQLite file beside the store, created by the same code (so the
    same tables), committed only once ``before_commit`` passes (files staged, ledger rows
    converted); that file then becomes the store by ``os.link``, which never replaces a
    store: if one appeared meanwhile (another job), the batch is upserted into it as before.
    A failed write or staging leaves no file behind, so a store is still created only for a
    staged batch. Without this the first batch's history insert waited for the file staging.
    """
    from partnerscore.serving.history import ScoreHistory

    target = Path(history.url.removeprefix("sqlite:///"))
    # the folders the scratch store's engine creates (removed again on a failure)
    made = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    scratch_file = target.with_name(f".{target.name}.{os.getpid()}.new")
    scratch = ScoreHistory(f"sqlite:///{scratch_file}", shown=history._shown())
    linked = False
    try:
        scratch_file.unlink(missing_ok=True)
        scratch.upsert(rows, before_commit=before_commit)
        scratch.dispose()  # every connection closed: the file is the whole store
        try:
            os.link(scratch_file, target)
            linked = True
        except OSError:  # a store appeared meanwhile, or no hard links here
            pass
    except BaseException:
        with contextlib.suppress(OSError):
            scratch_file.unlink(missing_ok=True)
            for folder in made:  # innermost first; only while empty: as if never created
                folder.rmdir()
        raise
    finally:
        scratch.dispose()
        scratch_file.unlink(missing_ok=True)
    if not linked:
        history.upsert(rows)


class _LedgerWriter:
    """A forked worker converting a batch's decisions and writing them when told to.

    ``prepared()`` waits for the conversion (re-raising its error; once); ``write()`` lets the
    worker write and waits for it; ``close()`` (always) stops a worker not told to write,
    without writing. Two pipes carry one byte each way; the batch is inherited by fork.
    """

    def __init__(
        self,
        url: str,
        scored: pd.DataFrame,
        facts: tuple[str, ...],
        shadow: np.ndarray | None = None,
    ) -> None:
        self._ready = os.pipe()  # worker -> this process: b"1" converted, b"0" failed
        self._go = os.pipe()  # this process -> worker: b"1" write, b"0" (or EOF) stop
        task = partial(_convert_and_write_ledger, url, scored, facts, self._ready, self._go, shadow)
        self._done = start_tasks([task], 2)
        os.close(self._ready[1])
        os.close(self._go[0])
        self._told = self._converted = False

    def prepared(self) -> None:
        if self._converted:
            return
        if os.read(self._ready[0], 1) != b"1":
            self._tell(b"0")
            self._done()  # raises the worker's error
            raise PartnerscoreError("decision ledger: the writer process stopped")
        self._converted = True

    def write(self) -> None:
        self._tell(b"1")
        self._done()

    def _tell(self, signal: bytes) -> None:
        if not self._told:
            self._told = True
            with contextlib.suppress(BrokenPipeError):  # the worker has stopped already
                os.write(self._go[1], signal)
            os.close(self._go[1])

    def close(self) -> None:
        if not self._told:  # an error elsewhere: the worker stops without writing
            self._tell(b"0")
            with contextlib.suppress(Exception):  # the error being raised says why
                self._done()
        os.close(self._ready[0])


def _convert_and_write_ledger(
    url: str,
    scored: pd.DataFrame,
    facts: tuple[str, ...],
    ready: tuple[int, int],
    go: tuple[int, int],
    shadow: np.ndarray | None = None,
) -> int:
    """In the worker: convert the decisions, report, wait for the word, then write them."""
    from partnerscore.serving.ledger import DecisionLedger

    os.close(ready[0])
    os.close(go[1])
    try:
        try:
            ledger = DecisionLedger(url)  # its own engine: never one inherited by fork
            decisions = ledger.prepare_decisions(scored, facts=facts, shadow=shadow)
            # staged in memory (no database touched) while the history is written: the write
            # after the history's commit is then one copy inside SQLite
            staged = ledger.stage_decisions(decisions)
        except BaseException:
            os.write(ready[1], b"0")
            raise
        os.write(ready[1], b"1")
        if os.read(go[0], 1) != b"1":
            return 0
        return ledger.record_staged(staged)
    finally:
        os.close(ready[1])
        os.close(go[0])


def _batch_cutoffs(
    partners: pd.DataFrame, ready: np.ndarray, cut: pd.Timestamp | None, at_age: int | None
) -> tuple[list[str], pd.Timestamp | pd.Series]:
    """The partners a batch scores and their cut-offs, known once the tables are read.

    What the features will say (``as_of`` per partner); :meth:`_EarlierReader.result`
    checks that they did.
    """
    ids = partners.loc[ready, "partner_id"].astype(str)
    if at_age is None:
        return ids.tolist(), cut
    milestone = milestone_dates(partners.loc[ready, "signed_at"], at_age)
    return ids.tolist(), pd.Series(milestone.to_numpy(), index=ids.to_numpy())


class _EarlierReader:
    """A worker reading a batch's earlier scores and decisions while the batch is built.

    Forked before the job starts any thread (:meth:`start`). With one cut-off (``--as-of``)
    it reads the store's last dates for every partner at once, while this process reads its
    tables; once told the batch's partners (:meth:`ask`, after the tables) it picks theirs
    and looks further back for the few short of rows (``history.EarlierRows``); with
    per-partner cut-offs it runs :func:`earlier_rows` once told them. Either way at the depth
    ``newest`` (``earlier_batches_needed``). A batch of fewer than
    :data:`MIN_WORKER_PARTNERS` partners is read in this process instead (the worker ends
    unasked). :meth:`result` returns None unless the rows read cover the batch
    as built (the same partners and cut-offs), so the caller then reads them itself: the
    rows never depend on where they were read. ``close()`` (always) stops the worker.
    """

    def __init__(
        self,
        url: str,
        cut: pd.Timestamp | None = None,
        newest: tuple[int | None, int | None] = (None, None),
    ) -> None:
        read_end, self._write = os.pipe()
        self._pool = WorkerPool(1)
        gc.freeze()  # the worker's collector must not write to every inherited page
        try:
            task = (_read_when_asked, url, read_end, self._write, cut, newest)
            self._future = self._pool.submit(*task)
        except BaseException:  # a Ctrl-C or SIGTERM held while forking acts here
            os.close(self._write)  # the worker's request ends: it can act on the signal
            self._pool.stop()
            raise
        finally:
            gc.unfreeze()
            os.close(read_end)
        self._asked: tuple[set[str], pd.Timestamp | pd.Series] | None = None

    @classmethod
    def start(
        cls,
        url: str,
        cut: pd.Timestamp | None = None,
        newest: tuple[int | None, int | None] = (None, None),
    ) -> _EarlierReader | None:
        """A reader for the store at ``url``, or None (the job reads the rows itself).

        None when the store is a SQLite file below :data:`READER_MIN_BYTES`, or none yet.
        """
        if not store_exists(url):
            return None
        if url.startswith("sqlite:///"):
            try:
                if Path(url.removeprefix("sqlite:///")).stat().st_size < READER_MIN_BYTES:
                    return None
            except OSError:  # gone meanwhile: the job's own read says what it finds
                return None
        return cls(url, cut, newest)

    def ask(self, partner_ids: list[str], before: pd.Timestamp | pd.Series) -> None:
        """Hand the batch's partners and cut-offs to the worker.

        Fewer than :data:`MIN_WORKER_PARTNERS` partners: the worker ends unasked.
        """
        if len(partner_ids) >= MIN_WORKER_PARTNERS:
            payload = pickle.dumps((partner_ids, before), protocol=pickle.HIGHEST_PROTOCOL)
            with contextlib.suppress(BrokenPipeError):  # the worker died: result() says so
                _write_all(self._write, payload)
            self._asked = (set(partner_ids), before)
        os.close(self._write)  # the end of the request (or of none)
        self._write = None

    def result(self, partner_ids, before: pd.Timestamp | pd.Series) -> tuple[dict, dict] | None:
        """The rows read (the worker's error raised here).

        None if not asked, or if they do not cover ``partner_ids`` at cut-offs ``before``
        (the batch as built).
        """
        if self._asked is None:
            return None
        asked_ids, asked_before = self._asked
        self._asked = None
        rows = self._pool.result(self._future)
        self._pool.close()
        ids = pd.Series(partner_ids).astype(str).tolist()
        if not asked_ids.issuperset(ids):
            return None
        if isinstance(before, pd.Series) != isinstance(asked_before, pd.Series):
            return None
        if isinstance(before, pd.Series):
            if not asked_before.index.is_unique:
                return None
            wanted = pd.to_datetime(before).to_numpy()
            had = asked_before.reindex(before.index.astype(str))
            return rows if bool((pd.to_datetime(had).to_numpy() == wanted).all()) else None
        return rows if pd.Timestamp(before) == pd.Timestamp(asked_before) else None

    def close(self) -> None:
        if self._write is not None:
            os.close(self._write)
            self._write = None
        if self._future.done():
            self._pool.close()
        else:  # an error elsewhere: the rows are not needed
            self._pool.stop()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_to_end(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as source:
        return source.read()


def _read_when_asked(
    url: str,
    read_end: int,
    write_end: int,
    cut: pd.Timestamp | None,
    newest: tuple[int | None, int | None],
):
    """In the reader's worker: wait for (partner_ids, before), then read their earlier rows.

    With one cut-off known at the start (``score --as-of``) and a depth, the store's last
    dates are read for every partner while the job reads its tables (``EarlierRows``); the
    request then only picks the batch's partners and looks further back for the few short
    of rows there.
    """
    os.close(write_end)  # this process's copy: the parent's close is the end of the request
    from partnerscore.serving.history import ScoreHistory
    from partnerscore.serving.ledger import DecisionLedger

    # the request is taken off the pipe as soon as it is sent, while the store is read: a
    # batch's ids fill the pipe's buffer (64 KB) many times over, so the job's ask() would
    # otherwise wait for the read below to end
    request = ThreadPoolExecutor(max_workers=1)
    try:
        payload_job = request.submit(_read_to_end, read_end)
        early = None
        if cut is not None and None not in newest:
            history, ledger = ScoreHistory(url), DecisionLedger(url)
            early = (history.earlier(cut, newest[0]), ledger.earlier(cut, newest[1]))
        payload = payload_job.result()
    finally:
        request.shutdown(wait=True)
    if not payload:
        return None  # not asked
    partner_ids, before = pickle.loads(payload)
    if early is not None and isinstance(before, pd.Timestamp) and before == cut:
        try:
            return early[0].of(partner_ids), early[1].of(partner_ids)
        finally:
            history.dispose()
            ledger.dispose()
    return earlier_rows(url, partner_ids, before, newest)


def earlier_rows(
    url: str,
    partner_ids: list[str],
    before: pd.Timestamp | pd.Series,
    newest: tuple[int | None, int | None] = (None, None),
) -> tuple[dict[str, list[float]], dict[str, list[tuple[float, str]]]]:
    """The partners' earlier scores (smoothing, guardrails) and decisions (hysteresis).

    ``ScoreHistory.previous`` and ``DecisionLedger.previous`` of the store at ``url``, read
    through connections of their own (a worker process never uses one inherited by fork);
    ``newest``: how many of each to keep per partner (``earlier_batches_needed``; None: all).
    """
    from partnerscore.serving.history import ScoreHistory
    from partnerscore.serving.ledger import DecisionLedger

    history, ledger = ScoreHistory(url), DecisionLedger(url)
    try:
        return (
            history.previous(partner_ids, before=before, newest=newest[0]),
            ledger.previous(partner_ids, before=before, newest=newest[1]),
        )
    finally:
        history.dispose()
        ledger.dispose()


def _decide(
    scored: pd.DataFrame,
    smoothed: np.ndarray,
    prev: np.ndarray,
    flags: np.ndarray,
    decisions: dict[str, list[tuple[float, str]]],
    uri: str,
    config: AppConfig,
) -> pd.DataFrame:
    """Stable tier decisions (hysteresis, guardrail holds) and the actions that follow.

    ``score_tier`` becomes the decided tier; the model's tier of the raw score is kept as
    ``score_tier_raw`` and the tier of the smoothed score as ``score_tier_candidate``.
    ``decisions``: the partners' earlier decisions (``DecisionLedger.previous``).
    """
    return decide_rows(
        scored,
        smoothed,
        prev,
        flags,
        decisions,
        read_overrides(config.score.overrides_path, config.policy),
        peer_percentile(scored),
        uri,
        config,
    )


def decide_rows(
    scored: pd.DataFrame,
    smoothed: np.ndarray,
    prev: np.ndarray,
    flags: np.ndarray,
    decisions: dict,
    overrides: pd.DataFrame,
    peers: np.ndarray | float,
    uri: str,
    config: AppConfig,
) -> pd.DataFrame:
    """The row-wise part of :func:`_decide`, given the earlier decisions and the overrides.

    Every row depends only on its own partner's inputs (plus ``peers``, the batch-wide peer
    percentile), so a distributed engine applies it per partner group and fills the peers in
    afterwards.
    """
    decided, candidate, held = stable_tiers(
        scored["partner_id"].tolist(),
        smoothed,
        scored["score"].to_numpy(),
        flags,
        decisions,
        config.policy,
        frozen=scored["out_of_scope"].to_numpy(bool),
    )
    extra = pd.DataFrame(
        {
            "peer_percentile": peers,
            "score_previous": prev,
            "score_smoothed": smoothed,
            "guardrail_flag": flags,
            "score_tier_raw": scored["score_tier"].to_numpy(),
            "score_tier_candidate": pd.array(candidate, dtype="str"),
            "tier_held_reason": pd.array(held, dtype="str"),
            "config_hash": config.hash(),
            "model_uri": uri,
        },
        index=scored.index,
    )
    scored = pd.concat([scored, extra], axis=1)
    applied = apply_overrides(scored["partner_id"], scored["as_of"].to_numpy(), decided, overrides)
    scored["score_tier"] = pd.array(applied.pop("score_tier"), dtype="str")
    columns = {name: pd.array(values, dtype="str") for name, values in applied.items()}
    scored = pd.concat([scored, pd.DataFrame(columns, index=scored.index)], axis=1)
    action = applied["override_action"] != ""
    if action.any():
        scored["intervention"] = scored["intervention"].astype(object)
        scored.loc[action, "intervention"] = applied["override_action"][action]
        scored.loc[action, "intervention_detail"] = (
            "Manual override by the account owner: " + applied["override_reason"][action]
        )
    schedule = action_schedule(
        scored["score_tier"].to_numpy(dtype=object),
        scored["quadrant"].to_numpy(dtype=object),
        scored["provisional"].to_numpy(bool),
        scored["out_of_scope"].to_numpy(bool),
        scored["as_of"].to_numpy(),
        config.policy,
    )
    columns = {k: pd.array(v, dtype="str") for k, v in schedule.items()}
    return pd.concat([scored, pd.DataFrame(columns, index=scored.index)], axis=1)


def run_score_features(
    features: str | Path,
    model: str,
    out: str | Path,
    config: AppConfig,
    *,
    allow_local_model: bool = False,
    allow_missing_features: bool = False,
    record_history: bool = True,
) -> ScoreResult:
    """``partnerscore score --features FILE``: score a prebuilt feature table.

    The table (CSV or Parquet: partner_id, as_of and the model's feature columns, e.g. written
    by ``build`` or by another system) is checked strictly first: missing feature columns
    (unless allowed), text in numeric columns and duplicate (partner_id, as_of) rows stop the
    run with one line naming the column and row; unseen categories are scored as missing and
    listed in the ``unseen_categories`` column.

    Args:
        features: The feature table.
        model: Alias, version number or model URI.
        out: Scores file path.
        config: Application configuration.
        allow_local_model: Accept a model folder outside the registry (trusted only).
        allow_missing_features: Score absent feature columns as missing.
        record_history: Record the batch in the score history.

    Returns:
        Counts and paths.
    """
    from partnerscore.models.frame_check import check_feature_frame

    started = time.perf_counter()
    out = _scores_out(out)
    uri = _checked_uri(model, config, allow_local_model)
    left = left_publish(companion_manifest(out), "score")  # a publish killed earlier
    frame = read_frame(features)
    partner_model, version = _load(uri, config)
    shadow_of = _shadow_of(uri, version, config)
    check_feature_frame(
        partner_model, frame, source=str(features), allow_missing=allow_missing_features
    )
    frame = frame.reset_index(drop=True)
    from partnerscore.models.scoring import score_features

    # score_features lists unseen categories (unseen_categories), as for raw tables
    scored = score_features(partner_model, frame, policy=config.policy)
    scored = with_upgrade_paths(partner_model, frame, scored, config)
    as_of = pd.to_datetime(scored["as_of"]).to_numpy()
    finite = finite_predictions(scored)
    rejects = [_rejects(scored.loc[~finite, "partner_id"], as_of[~finite], NON_FINITE)]
    scored, as_of = scored[finite].reset_index(drop=True), as_of[finite]
    # a partner with several rows (build's training set: one per onboarding age) is scored in
    # rounds, each partner's k-th row by as_of in round k: each round is one run (its peers,
    # smoothing and tier hysteresis against the history and the earlier rounds), recorded
    # before the next, as running score --features on each round's rows in turn would be
    rounds = feature_rounds(scored["partner_id"], as_of)
    decided, shadowed = [], 0  # rows recorded as shadow rows, all rounds
    n_rounds = int(rounds.max()) + 1 if len(rounds) else 1
    for k in range(n_rounds - 1):
        with progress.task(f"score: round {k + 1} of {n_rounds} (recorded before the next)"):
            at = rounds == k
            rows, in_round = _record_round(
                scored[at], _cutoffs(scored[at], as_of[at]), uri, config, record_history,
                shadow_of is not None,
            )  # fmt: skip
            decided.append(rows)
            shadowed += in_round
    at = rounds == n_rounds - 1
    scored, reject_frame, in_round = _publish(
        scored[at].reset_index(drop=True),
        rejects,
        _cutoffs(scored[at], as_of[at]),
        uri,
        out,
        config,
        record_history,
        decided=pd.concat(decided, ignore_index=True) if decided else None,
        shadow=shadow_of is not None,
    )
    return ScoreResult.of_rows(
        scored,  # the scores file's rows: every round's
        out=out,
        rejects=rejects_path(out),
        as_of=None,
        model_uri=uri,
        model_version=version,
        eligible=len(frame),
        rejected=len(reject_frame),
        not_yet=0,
        partners_input=int(frame["partner_id"].astype(str).nunique()),
        rows_input=len(frame),
        seconds=time.perf_counter() - started,
        rounds=n_rounds,
        shadow_of=shadow_of,
        recorded=record_history,
        shadow_rows=shadowed + in_round,
        interrupted_publish=left,
    )


def _rejects(partner_ids, as_of: pd.Timestamp | pd.Series | None, reason) -> pd.DataFrame:
    """Reject rows: partner_id (text; empty when the row had none), as_of and reason.

    ``as_of`` is one cut-off, a partner_id -> cut-off series (milestone scoring), an array of
    one per row, or None (unknown: the partner row itself was unusable).
    """
    ids = pd.Series(partner_ids, dtype=object).reset_index(drop=True)
    if isinstance(as_of, pd.Series):
        as_of = as_of.reindex(ids.astype(str).to_numpy()).to_numpy()
    elif isinstance(as_of, np.ndarray):  # one cut-off per row (a feature table)
        as_of = as_of.reshape(-1)
    elif as_of is None:
        as_of = pd.NaT
    if isinstance(reason, str):
        reasons = pd.Series(reason, index=ids.index, dtype=object)
    else:
        reasons = pd.Series(reason, dtype=object).reset_index(drop=True)
    return pd.DataFrame(
        {
            "partner_id": ids.where(ids.notna(), "").astype(str),
            "as_of": pd.Series(as_of, index=ids.index, dtype="datetime64[us]"),
            "reason": reasons.astype(str),
        },
        columns=list(REJECT_COLUMNS),
    )
