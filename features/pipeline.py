"""Point-in-time training sets and scoring frames.

A snapshot is (partner_id, as_of). Features use only rows dated strictly before as_of; labels use
[as_of, as_of + horizon), so every event lands in exactly one side. Training sets stack snapshots
at several onboarding ages and keep only those whose horizon is complete.
"""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from partnerscore.features.builders import BUILDERS, DAY, Snapshots, Timeline, to_seconds
from partnerscore.features.config import BuildConfig, ValidateConfig
from partnerscore.features.contract import END_DATE, FIRST_DATE
from partnerscore.features.core import (
    LeftPublish,
    OptionError,
    PartnerscoreError,
    as_of_dates,
    discard_staged,
    left_publish,
    milestone_dates,
    publish_listed,
    quoted,
    read_frame,
    stage_frames,
)
from partnerscore.features.registry import PHASE_PREFIX, feature_specs, registry_version

if TYPE_CHECKING:
    from partnerscore.features.validate import RawData

TRUTH_FILES = ("truth.csv", "truth.parquet")
BUILD_FILES = ("training_set.parquet", "truth.parquet", "manifest.json")
"""The files ``build`` writes in its ``--out`` folder (an input among them is refused)."""


def make_snapshots(partners: pd.DataFrame, ages: tuple[int, ...]) -> pd.DataFrame:
    """One snapshot per partner and onboarding age: as_of = signed_at + age days.

    Args:
        partners: The partners table (partner_id, signed_at).
        ages: Onboarding ages in days.

    Returns:
        Frame of partner_id, as_of, age_days, signed_at sorted by partner_id, as_of (ties in
        the order of ``ages``).

    The rows are laid out in their sorted order directly: the partners sorted by id (one
    stable sort of the partners, not of every snapshot's text), each partner's ages ascending.
    With a repeated id or a missing signing date that would not be the sorted order, so
    those tables are sorted as a whole (:func:`_sorted_snapshots`, the reference).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    signed = pd.to_datetime(partners["signed_at"])
    ids = partners["partner_id"].astype(str).array
    order = ids.argsort(kind="stable")
    ordered = pa.array(ids.take(order), pa.large_string())
    repeated = len(ordered) > 1 and not pc.all(pc.not_equal(ordered[1:], ordered[:-1])).as_py()
    _check_reach(partners, signed, ages)
    if not len(ids) or repeated or signed.isna().any():
        return _sorted_snapshots(partners, ages)
    steps = np.asarray([int(age) for age in ages], dtype=np.int64)
    by_age = np.argsort(steps, kind="stable")
    rows = np.repeat(order, len(steps))
    days = np.tile(steps[by_age], len(order))
    signed_at = signed.to_numpy()[rows]
    return pd.DataFrame(
        {
            "partner_id": ids.take(rows),
            "as_of": signed_at + days.astype("timedelta64[D]"),
            "age_days": days,
            "signed_at": signed_at,
        }
    )


def _check_reach(partners: pd.DataFrame, signed: pd.Series, ages: tuple[int, ...]) -> None:
    """Stop when a partner's oldest snapshot would pass 2262-04-11 (the timestamps' end).

    ``signed_at + age`` in nanoseconds would wrap around to the 1700s silently.
    """
    if not len(ages) or not signed.notna().any():
        return
    oldest = max(int(age) for age in ages)
    limit = milestone_dates(signed, oldest)
    past = signed.notna().to_numpy() & limit.isna().to_numpy()
    if past.any():
        row = int(np.flatnonzero(past)[0])
        raise PartnerscoreError(
            f"--ages {oldest}: partner {quoted(partners['partner_id'].iloc[row])} (signed "
            f"{signed.iloc[row]:%Y-%m-%d}) would be {oldest} days old after 2262-04-11, "
            "the last date the pipeline can represent"
        )


def _sorted_snapshots(partners: pd.DataFrame, ages: tuple[int, ...]) -> pd.DataFrame:
    """:func:`make_snapshots` by sorting every (partner, age) row (any partners table)."""
    signed = pd.to_datetime(partners["signed_at"])
    frames = [
        pd.DataFrame(
            {
                "partner_id": partners["partner_id"].astype(str).to_numpy(),
                "as_of": (signed + pd.Timedelta(days=int(age))).to_numpy(),
                "age_days": int(age),
                "signed_at": signed.to_numpy(),
            }
        )
        for age in ages
    ]
    snaps = pd.concat(frames, ignore_index=True)
    return snaps.sort_values(["partner_id", "as_of"], kind="stable").reset_index(drop=True)


def build_features(
    tables: dict[str, pd.DataFrame], snapshots: pd.DataFrame, n_jobs: int = 2
) -> pd.DataFrame:
    """Features of every snapshot from rows dated strictly before its as_of.

    Args:
        tables: Clean typed raw tables (``partners`` required).
        snapshots: Frame with partner_id and as_of.
        n_jobs: Threads running the per-table builders (their numpy/Arrow kernels release the
            GIL, so two cores build two tables at once).

    Returns:
        partner_id, as_of, then every feature available from ``tables`` in registry order.
    """
    snaps = Snapshots.from_frame(snapshots, tables["partners"])
    sources = [s for s in BUILDERS if s in tables]
    # biggest tables first so the threads finish together
    sources.sort(key=lambda s: -len(tables[s]))
    columns: dict[str, np.ndarray] = {}
    if n_jobs > 1 and len(sources) > 1:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            for part in pool.map(lambda s: BUILDERS[s](tables, snaps), sources):
                columns.update(part)
    else:
        for source in sources:
            columns.update(BUILDERS[source](tables, snaps))
    specs = feature_specs(tables)
    out = pd.DataFrame(
        {
            "partner_id": snapshots["partner_id"].astype(str).to_numpy(),
            "as_of": pd.to_datetime(snapshots["as_of"]).to_numpy(),
        }
    )
    for spec in specs:
        values = columns[spec.name]
        if spec.kind == "categorical":
            out[spec.name] = (
                pd.Series(values, dtype=object)
                .astype("str")
                .where(pd.notna(pd.Series(values, dtype=object)), None)
            )
        else:
            out[spec.name] = np.asarray(values, dtype=float)
    return out


def build_labels(
    tables: dict[str, pd.DataFrame], snapshots: pd.DataFrame, config: BuildConfig
) -> pd.DataFrame:
    """Labels from the horizon [as_of, as_of + horizon).

    An event exactly at as_of is a label event (features see only events strictly before
    as_of); one exactly at as_of + horizon is not.

    - ``label_revenue``: sum of won deal amounts closed in the horizon, added in closing order
      (per partner: other partners' deals never enter the sum).
    - ``label_revenue_phase_<k>`` (k = 1 .. :func:`revenue_phases`): the same sum over the
      horizon's k-th phase [as_of + (k - 1) * phase, as_of + k * phase) (the last one cut at
      the horizon's end): when the revenue arrives. The phases add up to ``label_revenue``
      (up to the order of the float additions).
    - ``label_engaged``: 1 if at least ``engagement_min_share`` of the horizon's periods
      [as_of + j * period, as_of + (j + 1) * period) (the last one cut at the horizon's end) hold
      a qualifying touchpoint (activity types, ``lead`` created, ``deal`` created), else 0.

    Args:
        tables: Clean typed raw tables.
        snapshots: Frame with partner_id and as_of.
        config: Horizon and engagement rule.

    Returns:
        partner_id, as_of, label_revenue, label_engaged, label_revenue_phase_1 .. n.
    """
    snaps = Snapshots.from_frame(snapshots, tables["partners"])
    horizon = config.horizon_days * DAY
    deals = tables["deals"]
    won = (deals["status"].astype(str) == "won").to_numpy() & deals["closed_at"].notna().to_numpy()
    amount = pd.to_numeric(deals["amount"], errors="coerce").to_numpy(dtype=float)
    end = snaps.as_of + horizon
    deal_codes = snaps.codes_of("deals", deals)
    closed_s = to_seconds(deals["closed_at"])
    won_tl = Timeline(snaps, deal_codes[won], closed_s[won], {"amount": amount[won]})
    revenue = won_tl.sum_between("amount", snaps.as_of, end)
    phase = config.phase_days * DAY
    phases = {
        f"{PHASE_PREFIX}{k}": won_tl.sum_between(
            "amount",
            snaps.as_of + (k - 1) * phase,
            np.minimum(snaps.as_of + k * phase, end),
        )
        for k in range(1, revenue_phases(config) + 1)
    }

    codes, times = [], []
    kinds = set(config.engagement_touchpoints)
    if "activities" in tables:
        act = tables["activities"]
        sel = act["activity_type"].isin(kinds).to_numpy()
        codes.append(snaps.codes_of("activities", act)[sel])
        times.append(to_seconds(act["occurred_at"])[sel])
    if "lead" in kinds and "leads" in tables:
        codes.append(snaps.codes_of("leads", tables["leads"]))
        times.append(to_seconds(tables["leads"]["created_at"]))
    if "deal" in kinds:
        codes.append(deal_codes)
        times.append(to_seconds(deals["created_at"]))
    touch = Timeline(
        snaps,
        np.concatenate(codes) if codes else np.empty(0, np.int64),
        np.concatenate(times) if times else np.empty(0, np.int64),
    )
    period = config.engagement_period_days * DAY
    n_periods = int(np.ceil(config.horizon_days / config.engagement_period_days))
    active = np.zeros(len(snaps))
    for j in range(n_periods):
        lo = snaps.as_of + j * period
        hi = np.minimum(snaps.as_of + (j + 1) * period, end)
        active += touch.count_between(lo, hi) > 0
    need = int(np.ceil(config.engagement_min_share * n_periods - 1e-9))
    return pd.DataFrame(
        {
            "partner_id": snaps.partner_ids,
            "as_of": pd.to_datetime(snapshots["as_of"]).to_numpy(),
            "label_revenue": revenue,
            "label_engaged": (active >= need).astype(np.int64),
            **phases,
        }
    )


def revenue_phases(config: BuildConfig) -> int:
    """How many ``phase_days`` phases cover the horizon (the last one may be shorter)."""
    return int(np.ceil(config.horizon_days / config.phase_days))


def _data_end(raw: RawData, config: BuildConfig) -> pd.Timestamp:
    """The end of the labels' data: ``build.data_end`` (the whole day) or the newest event.

    Without ``data_end``, a newest event that a few partners' rows alone carry
    (:func:`~partnerscore.features.validate.late_tail`) stops the build: the user decides.

    Raises:
        PartnerscoreError: ``data_end`` lies more than ``data_end_tolerance_days`` after the
            newest event: its labels would count days the data does not cover as quiet.
    """
    newest = pd.Timestamp(raw.data_end)
    if config.data_end is None:
        tail = getattr(raw, "late_tail", None)
        if tail is not None:
            raise PartnerscoreError(
                f"build: {tail.note()}; labels up to {newest:%Y-%m-%d} would count every "
                f"other partner's days after {tail.supported:%Y-%m-%d} as quiet. Check those "
                "rows, or give "
                f"--data-end {tail.supported:%Y-%m-%d} (or --data-end {newest:%Y-%m-%d} to "
                "keep them)"
            )
        return newest
    end = pd.Timestamp(config.data_end) + pd.Timedelta(days=1)
    after = (pd.Timestamp(config.data_end) - newest.normalize()).days
    if after > config.data_end_tolerance_days:
        raise PartnerscoreError(
            f"--data-end {config.data_end:%Y-%m-%d}: {after} days after the newest event in the "
            f"data ({newest:%Y-%m-%d}); labels would count days the data does not cover "
            f"(build.data_end_tolerance_days: {config.data_end_tolerance_days})"
        )
    return end


def _cohort(signed: pd.Series) -> pd.Series:
    signed = pd.to_datetime(signed)
    return signed.dt.year.astype(str) + "Q" + signed.dt.quarter.astype(str)


def read_cutoffs(path: str | Path, partners: pd.DataFrame) -> pd.DataFrame:
    """An explicit snapshot table (partner_id, as_of) from a CSV or Parquet file.

    Every row must name a known partner and a date on or after its signing; anything else
    stops with one line naming the file, column and row (a cut-off table is a plan, not data
    to quarantine). ``as_of`` is read as scores files and feature frames read theirs
    (:func:`~partnerscore.features.core.as_of_dates`): ISO 8601 dates in one time zone or
    none (several UTC offsets, or dates with and without one, stop naming the row; they were
    each converted to UTC).

    Returns:
        partner_id, as_of, signed_at sorted by partner_id, as_of. A snapshot named twice
        (the same partner and as_of, however the date is written) stops too, naming both
        rows.
    """
    path = Path(path)
    frame = read_frame(path, text=lambda col: col == "as_of")
    for col in ("partner_id", "as_of"):
        if col not in frame.columns:
            raise PartnerscoreError(f"{path}: missing column '{col}'")
    if frame.empty:
        raise PartnerscoreError(f"{path}: no cut-off rows")
    missing_id = frame["partner_id"].isna().to_numpy()
    if missing_id.any():
        row = int(np.flatnonzero(missing_id)[0])
        raise PartnerscoreError(f"{path}: column 'partner_id' row {row + 1}: missing partner id")
    ids = frame["partner_id"].astype("str")
    given = frame["as_of"]
    as_of = as_of_dates(path, frame)  # as scores files and score --features read theirs
    years = as_of.dt.year.to_numpy()
    outside = (years < FIRST_DATE.year) | (years >= END_DATE.year)  # the contract's years
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise PartnerscoreError(
            f"{path}: column 'as_of' row {row + 1}: {quoted(given.iloc[row])} is outside the "
            f"years {FIRST_DATE.year}-{END_DATE.year - 1}"
        )
    as_of = as_of.astype("datetime64[ns]")
    signed = pd.Series(
        pd.to_datetime(partners["signed_at"]).to_numpy(),
        index=partners["partner_id"].astype(str).to_numpy(),
    )
    known = ids.isin(signed.index)
    if not known.all():
        row = int(np.flatnonzero(~known.to_numpy())[0])
        raise PartnerscoreError(
            f"{path}: column 'partner_id' row {row + 1}: unknown partner {quoted(ids.iloc[row])}"
        )
    signed_at = signed.reindex(ids.to_numpy()).to_numpy()
    early = as_of.to_numpy() < signed_at
    if early.any():
        row = int(np.flatnonzero(early)[0])
        raise PartnerscoreError(
            f"{path}: column 'as_of' row {row + 1}: {as_of.iloc[row]:%Y-%m-%d} is before "
            f"partner {quoted(ids.iloc[row])} signed"
        )
    out = pd.DataFrame({"partner_id": ids.to_numpy(), "as_of": as_of.to_numpy()})
    _check_no_repeats(path, out, given)
    out["signed_at"] = signed_at
    return out.sort_values(["partner_id", "as_of"], kind="stable").reset_index(drop=True)


def _check_no_repeats(path: Path, snaps: pd.DataFrame, given: pd.Series) -> None:
    """Stop at the first row naming a snapshot (partner_id, as_of) an earlier row names.

    A plan lists each snapshot once; a repeat (often a join that multiplied rows, or one date
    written two ways) was merged silently, so the build had fewer rows than the file.

    Raises:
        PartnerscoreError: Naming the file, both columns, both rows (1-based), the partner and
            the dates as written, and how many rows repeat an earlier one.
    """
    repeats = snaps.duplicated(["partner_id", "as_of"]).to_numpy()
    if not repeats.any():
        return
    second = int(np.flatnonzero(repeats)[0])
    partner, when = snaps["partner_id"].iloc[second], snaps["as_of"].iloc[second]
    same = (snaps["partner_id"] == partner).to_numpy() & (snaps["as_of"] == when).to_numpy()
    first = int(np.flatnonzero(same)[0])
    texts = [quoted(given.iloc[first]), quoted(given.iloc[second])]
    written = texts[0] if texts[0] == texts[1] else " and ".join(texts)
    raise PartnerscoreError(
        f"{path}: columns 'partner_id', 'as_of' rows {first + 1} and {second + 1}: the same "
        f"snapshot twice (partner {quoted(partner)}, as_of {written}; repeated rows in the "
        f"file: {int(repeats.sum()):,}): a cut-off table is a plan, give each snapshot once"
    )


def training_snapshots(
    raw: RawData, config: BuildConfig, cutoffs: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, int]:
    """The snapshots to label: onboarding ages (or explicit cut-offs) with a complete horizon.

    Args:
        raw: Validated raw data.
        config: Ages, horizon and data end.
        cutoffs: Explicit (partner_id, as_of, signed_at) rows replacing the ages.

    Returns:
        (snapshots with a complete horizon, number dropped because the horizon passes the data
        end).
    """
    snaps = make_snapshots(raw.tables["partners"], config.ages) if cutoffs is None else cutoffs
    end = _data_end(raw, config)
    # as_of <= end - horizon: as_of + horizon would wrap past 2262 for a far cut-off
    complete = snaps["as_of"] <= end - pd.Timedelta(days=config.horizon_days)
    kept = snaps[complete.to_numpy()].reset_index(drop=True)
    if kept.empty:
        raise PartnerscoreError(
            f"no snapshot has a complete {config.horizon_days}-day horizon before the data end "
            f"{end:%Y-%m-%d}: nothing to train on (use shorter --ages/--horizon or more history)"
        )
    return kept, int((~complete).sum())


def build_training_set(
    raw: RawData, config: BuildConfig, snapshots: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Stacked, labelled snapshots whose horizon is complete.

    Args:
        raw: Validated raw data.
        config: Ages, horizon and label rules.
        snapshots: Snapshots to build (default: :func:`training_snapshots` of the ages).

    Returns:
        Features + signed_at + cohort + label_revenue + label_engaged + the revenue phases
        (``label_revenue_phase_<k>``), sorted by partner, as_of.
    """
    tables = raw.tables
    snaps = training_snapshots(raw, config)[0] if snapshots is None else snapshots
    with ThreadPoolExecutor(max_workers=1) as pool:
        labels_job = pool.submit(build_labels, tables, snaps, config)
        feats = build_features(tables, snaps)
        labels = labels_job.result()
    feats["signed_at"] = snaps["signed_at"].to_numpy()
    feats["cohort"] = _cohort(snaps["signed_at"]).to_numpy()
    feats["label_revenue"] = labels["label_revenue"].to_numpy()
    feats["label_engaged"] = labels["label_engaged"].to_numpy()
    for col in labels.columns:
        if col.startswith(PHASE_PREFIX):
            feats[col] = labels[col].to_numpy()
    return feats


def build_scoring_frame(raw: RawData, as_of: date | pd.Timestamp) -> pd.DataFrame:
    """Features at ``as_of`` for every partner signed before it.

    Args:
        raw: Validated raw data.
        as_of: Scoring cut-off (features use rows strictly before it).

    Returns:
        partner_id, as_of, features, partner_name, signed_at; sorted by partner_id.
    """
    partners = raw.tables["partners"]
    cut = pd.Timestamp(as_of)
    signed = pd.to_datetime(partners["signed_at"])
    scope = partners[signed < cut].sort_values("partner_id", kind="stable")
    snaps = pd.DataFrame({"partner_id": scope["partner_id"].astype(str).to_numpy(), "as_of": cut})
    snaps["as_of"] = pd.to_datetime(snaps["as_of"])
    feats = build_features(raw.tables, snaps)
    feats["partner_name"] = scope["partner_name"].astype(str).to_numpy()
    feats["signed_at"] = pd.to_datetime(scope["signed_at"]).to_numpy()
    return feats


def build_scoring_frame_at_age(raw: RawData, days: int) -> tuple[pd.DataFrame, int]:
    """Features of every partner at its own onboarding milestone signed_at + ``days``.

    Partners whose milestone lies after the raw data's supported end are not that old yet
    (their features would miss days the data does not cover): they are skipped and counted.
    The supported end is the newest event, or, when a few partners' rows alone carry it
    (``raw.late_tail``), where every other partner's data ends
    (:func:`~partnerscore.features.validate.supported_end`).

    Returns:
        (features as in :func:`build_scoring_frame` with a per-row as_of, partners skipped).
    """
    from partnerscore.features.validate import supported_end

    partners = raw.tables["partners"].sort_values("partner_id", kind="stable")
    signed = pd.to_datetime(partners["signed_at"])
    as_of = milestone_dates(signed, days)
    ready = (as_of <= supported_end(raw.data_end, raw.late_tail)).to_numpy()
    scope = partners[ready]
    snaps = pd.DataFrame(
        {
            "partner_id": scope["partner_id"].astype(str).to_numpy(),
            "as_of": as_of[ready].to_numpy(),
        }
    )
    feats = build_features(raw.tables, snaps)
    feats["partner_name"] = scope["partner_name"].astype(str).to_numpy()
    feats["signed_at"] = signed[ready].to_numpy()
    return feats, int((~ready).sum())


def _read_truth(raw_dir: Path) -> pd.DataFrame | None:
    for name in TRUTH_FILES:
        path = raw_dir / name
        if path.exists():
            if path.suffix == ".csv":
                # ids stay text ("007" is not 7); only empty cells are missing
                truth = pd.read_csv(
                    path, dtype={"partner_id": str}, keep_default_na=False, na_values=[""]
                )
            else:
                truth = pd.read_parquet(path)
            needed = {"partner_id", "age_days", "true_expected_revenue", "true_engagement_prob"}
            missing = needed - set(truth.columns)
            if missing:
                raise PartnerscoreError(f"{path}: missing column '{sorted(missing)[0]}'")
            truth["partner_id"] = truth["partner_id"].astype(str)
            return truth
    return None


def _align_truth(
    truth: pd.DataFrame | None, training: pd.DataFrame, config: BuildConfig
) -> tuple[pd.DataFrame | None, str]:
    """The simulator's true expectations for the training snapshots, or None with a reason.

    Truth rows hold expectations for one horizon (``horizon_days``); rows for another horizon
    than this build's would be compared with labels they do not describe, so they are dropped.
    """
    if truth is None:
        return None, "no truth table in the raw folder"
    if "horizon_days" in truth.columns:
        truth = truth[truth["horizon_days"] == config.horizon_days]
        if truth.empty:
            return None, f"truth has no rows for the {config.horizon_days}-day horizon"
    aligned = training[["partner_id", "as_of"]].copy()
    aligned["age_days"] = training["age_days"].astype(int).to_numpy()
    truth = truth.drop(columns=["as_of"], errors="ignore")
    truth = truth.drop_duplicates(["partner_id", "age_days"], keep="last")
    aligned = aligned.merge(truth, on=["partner_id", "age_days"], how="left")
    matched = int(aligned["true_expected_revenue"].notna().sum())
    return aligned, f"{matched:,} of {len(aligned):,} snapshots have a true expectation"


def _snapshot_partners(raw_dir: Path, validated: str | Path | None) -> int:
    """Partners recorded by the snapshot a build would use (0: none found or unreadable).

    Only decides whether to build in groups; the snapshot is checked properly afterwards.
    """
    from partnerscore.features.validated import MANIFEST, default_dir

    manifest = Path(validated if validated is not None else default_dir(raw_dir)) / MANIFEST
    try:
        return int(json.loads(manifest.read_text())["tables"]["partners"]["valid_rows"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def snapshot_columns(snapshot, unread: dict[str, tuple[str, ...]]) -> dict:
    """Table -> an empty Arrow table of the snapshot's columns a job reads (all but ``unread``)."""
    import pyarrow.parquet as pq

    empty = {}
    for name, path in snapshot.tables.items():
        schema = pq.read_schema(path)
        skip = unread.get(name, ())
        empty[name] = schema.empty_table().select([c for c in schema.names if c not in skip])
    return empty


def partners_only(snapshot, empty: dict) -> RawData:
    """What a grouped job starts from: the partners read, every event table an empty frame.

    The partners table has the columns of ``empty["partners"]``, each event table an empty
    frame of ``empty``'s columns; the counts, files and data end are the snapshot's (no
    fingerprints yet: the raw files are hashed while the rows are split).
    """
    import pyarrow.parquet as pq

    from partnerscore.features.validate import RawData

    partners = pq.read_table(
        snapshot.tables["partners"], columns=empty["partners"].column_names
    ).to_pandas()
    from partnerscore.features.validate import LateTail

    return RawData(
        tables={name: table.to_pandas() for name, table in empty.items()} | {"partners": partners},
        report=snapshot.report,
        files=snapshot.files,
        fingerprints={},
        data_end=snapshot.data_end,
        late_tail=LateTail.from_dict(snapshot.manifest.get("late_tail")),
    )


def snapshot_quarantine(snapshot, qdir: Path) -> dict[str, pd.DataFrame]:
    """The snapshot's quarantined rows per table, written to ``qdir`` as validation writes them."""
    import pyarrow.parquet as pq

    from partnerscore.features.validate import write_quarantine

    quarantine = {
        name: pq.read_table(path).to_pandas() for name, path in snapshot.quarantine.items()
    }
    write_quarantine(quarantine, qdir)
    return quarantine


def split_snapshot(snapshot, events: dict, ranges, scratch: Path) -> dict:
    """Split the snapshot's event tables by partner group into ``scratch``, checking its files.

    Two threads split the tables, biggest first (Parquet decoding and Arrow writes release the
    GIL; :func:`~partnerscore.features.groups.split_rows`) while a third hashes the raw files
    (SHA-256 releases it too).

    Args:
        snapshot: A :class:`~partnerscore.features.validated.SnapshotFiles` found with
            ``content=False``.
        events: Event table -> an empty Arrow table of the columns to split.
        ranges: The groups (:class:`~partnerscore.features.groups.RangeGroups`).
        scratch: The groups' folder.

    Returns:
        The raw files' fingerprints.

    Raises:
        StaleSnapshot: A raw file changed since the snapshot (reported before a split error).
    """
    from partnerscore.features.groups import split_rows

    specs = [
        (i, name, str(snapshot.tables[name]), table.column_names, None, 0)
        for i, (name, table) in enumerate(events.items())
    ]
    specs.sort(key=lambda spec: -Path(spec[2]).stat().st_size)
    with ThreadPoolExecutor(max_workers=1) as pool:
        hashing = pool.submit(snapshot.verify_content)
        try:
            with ThreadPoolExecutor(max_workers=2) as splitters:
                list(
                    splitters.map(
                        lambda spec: split_rows(spec, str(scratch), ranges.n_groups, ranges),
                        specs,
                    )
                )
        finally:
            fingerprints = hashing.result()  # a changed raw file is the error reported first
    return fingerprints


def _build_in_groups(
    raw_dir: Path,
    validated: str | Path | None,
    qdir: Path,
    validation: ValidateConfig | None,
    config: BuildConfig,
    cutoffs: str | Path | None,
    size: int,
    target: Path,
) -> tuple[RawData, pd.DataFrame, int, list[tuple[Path, Path]]]:
    """Build the training set from a validated snapshot one group of partners at a time.

    The snapshot is checked as :func:`~partnerscore.features.validated.load_validated` checks
    it (the raw files are hashed while the rows are split). The partners table gives the
    snapshots (onboarding ages or ``cutoffs``) and the groups: consecutive partner ids in
    sorted order, ``size`` each (:class:`~partnerscore.features.groups.RangeGroups`), so the
    parts, written in group order to one Parquet file, are the whole build's rows in its
    order. Every event table's rows are split once by group into Arrow files in a scratch
    folder beside ``target`` (removed at the end); each group's tables are then read back (its
    partners taken from the partners table in memory) and built with
    :func:`build_training_set`, with the whole snapshot's data end.

    Returns:
        (a :class:`RawData` with the counts, fingerprints, data end and the tables' names, the
        training set's :data:`GROUP_KEYS` columns, snapshots dropped for an incomplete horizon,
        the training set staged beside ``target``: ``[(temporary, target)]``, published by the
        caller with the manifest). A stale automatic snapshot is noted and the raw tables are
        validated and built at once, as :func:`~partnerscore.features.validated.load_validated`
        would.
    """
    import shutil
    import tempfile

    from partnerscore.features.core import AppendedFile, discard_staged
    from partnerscore.features.groups import RangeGroups, group_tables, text_ids
    from partnerscore.features.validate import RawData, load_raw
    from partnerscore.features.validated import StaleSnapshot, find_snapshot, stale_note

    def validate_and_build() -> tuple[RawData, pd.DataFrame, int, list[tuple[Path, Path]]]:
        # a stale automatic snapshot (noted) is a cache: validate, as load_validated does
        raw = load_raw(raw_dir, qdir, config=validation)
        return raw, *_whole_build(raw, config, cutoffs, target)

    snapshot = find_snapshot(raw_dir, validated, qdir, config=validation, content=False)
    if snapshot is None:
        return validate_and_build()
    empty = snapshot_columns(snapshot, BUILD_UNREAD_COLUMNS)
    whole = partners_only(snapshot, empty)
    partners = whole.tables["partners"]
    planned = read_cutoffs(cutoffs, partners) if cutoffs is not None else None
    snapshots, dropped = training_snapshots(whole, config, planned)
    ranges = RangeGroups(partners["partner_id"], size)

    snap_group = ranges(text_ids(snapshots["partner_id"]))
    # the partners table is in memory already: each group takes its rows from it, not a split
    partner_group = ranges(text_ids(partners["partner_id"]))
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".build-groups-", dir=target.parent))
    keys: list[pd.DataFrame] = []
    events = {name: table for name, table in empty.items() if name != "partners"}

    def write_groups() -> list[tuple[Path, Path]]:
        out = AppendedFile(target)
        try:
            for g in range(ranges.n_groups):
                rows = snap_group == g
                if not rows.any():
                    continue
                tables = {
                    "partners": partners[partner_group == g].reset_index(drop=True)
                } | group_tables(str(scratch), g, events)
                part = build_training_set(
                    RawData(tables, snapshot.report, snapshot.files, {}, snapshot.data_end),
                    config,
                    snapshots[rows].reset_index(drop=True),
                )
                out.append(part)
                keys.append(part[list(GROUP_KEYS)])
            out.close()
        except BaseException:
            with contextlib.suppress(PartnerscoreError):  # the first error is the one to report
                out.close()
            discard_staged([(out.tmp, target)])
            raise
        return [(out.tmp, target)]

    try:
        try:
            fingerprints = split_snapshot(snapshot, events, ranges, scratch)
        except StaleSnapshot as exc:
            if validated is not None:
                raise
            stale_note(exc, raw_dir)
            return validate_and_build()
        quarantine = snapshot_quarantine(snapshot, qdir)
        staged = write_groups()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    whole.fingerprints = fingerprints
    whole.quarantine = quarantine
    return whole, pd.concat(keys, ignore_index=True), dropped, staged


def _whole_build(
    raw: RawData, config: BuildConfig, cutoffs: str | Path | None, target: Path
) -> tuple[pd.DataFrame, int, list[tuple[Path, Path]]]:
    """The training set of ``raw`` built at once and staged beside ``target``.

    Returns:
        (it, snapshots dropped, ``[(temporary, target)]`` for the caller to publish).
    """
    planned = read_cutoffs(cutoffs, raw.tables["partners"]) if cutoffs is not None else None
    snapshots, dropped = training_snapshots(raw, config, planned)
    training = build_training_set(raw, config, snapshots)
    return training, dropped, stage_frames([(training, target)])


@dataclass
class BuildResult:
    """What ``run_build`` wrote."""

    out_dir: Path
    rows: int
    partners: int
    features: int
    files: dict[str, Path] = field(default_factory=dict)
    quarantined: int = 0
    seconds: float = 0.0
    manifest: dict = field(default_factory=dict)
    interrupted_publish: LeftPublish | None = None
    """An earlier build's publish into ``out_dir`` this run found killed between its renames
    (None: none), replaced by this build's files; said in one ``note:`` line on stderr."""

    def summary(self) -> str:
        """Human-readable summary."""
        m = self.manifest
        lines = [
            f"training set: {self.rows:,} snapshots of {self.partners:,} partners, "
            f"{self.features} features ({self.seconds:.1f} s)",
            f"  as_of range {m['as_of_min']} .. {m['as_of_max']}, data end {m['data_end']}",
            f"  label_revenue > 0: {m['labels']['revenue_positive_share']:.1%}, "
            f"label_engaged: {m['labels']['engaged_share']:.1%}",
            f"  snapshots dropped (horizon passes the data end): "
            f"{m.get('snapshots_dropped_incomplete_horizon', 0):,}",
            f"  quarantined input rows: {self.quarantined:,}",
        ]
        lines += [f"  wrote {path}" for path in self.files.values()]
        return "\n".join(lines)


BUILD_UNREAD_COLUMNS = {
    "partners": ("partner_name",),
    "deals": ("deal_id",),
    "activities": ("activity_id",),
    "marketing_commitments": ("commitment_id",),
    "leads": ("lead_id",),
    "portal_events": ("event_type",),
    "trainings": ("course_id",),
}
"""Raw columns no feature and no label reads (row ids, names, the portal event and course
kinds): ``build`` does not load them. ``tests/features/test_grouped_build.py`` checks that the
training set is the same with and without them."""
GROUP_PARTNERS = 100_000
"""``build`` and ``score`` from a validated snapshot of more partners than this run on groups of
this many (``--group-partners``)."""


def group_size(group_partners: int | None) -> int:
    """``--group-partners``: the given size, else :data:`GROUP_PARTNERS` (0: no groups).

    Raises:
        OptionError: A negative size.
    """
    size = GROUP_PARTNERS if group_partners is None else group_partners
    if size < 0:
        raise OptionError(f"--group-partners {size}: must be 0 (no groups) or more")
    return size


GROUP_KEYS = ("partner_id", "as_of", "age_days", "cohort", "label_revenue", "label_engaged")
"""Training-set columns kept in memory by a grouped build (manifest, truth alignment)."""


def run_build(
    raw_dir: str | Path,
    out_dir: str | Path,
    config: BuildConfig,
    *,
    validation: ValidateConfig | None = None,
    cutoffs: str | Path | None = None,
    validated: str | Path | None = None,
    group_partners: int | None = None,
) -> BuildResult:
    """The ``partnerscore build`` job: validate, build the training set, write it with a manifest.

    From a validated snapshot of more than ``group_partners`` partners the training set is
    built one group of partners at a time (:func:`_build_in_groups`): the same file, with the
    memory of one group. Every feature and label is per partner, so this is exact.

    Args:
        raw_dir: Folder of raw contract tables.
        out_dir: Output folder.
        config: Build settings.
        validation: Plausibility rules for the raw tables.
        cutoffs: Optional CSV/Parquet of explicit (partner_id, as_of) snapshots replacing the
            onboarding ages.
        validated: A validated snapshot to reuse (must match the raw files); default: reuse
            ``raw_dir/validated`` when it matches, else validate (see ``features.validated``).
        group_partners: Partners per group (default :data:`GROUP_PARTNERS`; 0: never group).

    Returns:
        Paths and counts.
    """
    from partnerscore.features.validated import load_validated

    started = time.perf_counter()
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    size = group_size(group_partners)
    qdir = out_dir / "quarantine"
    files = {"training_set": out_dir / "training_set.parquet"}
    # before this build writes there (its quarantine files): a publish killed earlier
    left = left_publish(out_dir / "manifest.json", "build")
    if size and _snapshot_partners(raw_dir, validated) > size:
        raw, training, dropped, staged = _build_in_groups(
            raw_dir, validated, qdir, validation, config, cutoffs, size, files["training_set"]
        )
    else:
        raw = load_validated(
            raw_dir, validated, qdir, config=validation, skip_columns=BUILD_UNREAD_COLUMNS
        )
        training, dropped, staged = _whole_build(raw, config, cutoffs, files["training_set"])
    try:
        truth, truth_note = _align_truth(_read_truth(raw_dir), training, config)
        truth_path = out_dir / "truth.parquet"
        if truth is not None:
            staged += stage_frames([(truth, truth_path)])
            files["truth"] = truth_path
        manifest = _manifest(raw, config, cutoffs, training, dropped, truth, truth_note)
    except BaseException:
        discard_staged(staged)
        raise
    if truth is None:  # a stale one would be read as this build's truth (the manifest says so)
        truth_path.unlink(missing_ok=True)
    # the training set and truth renamed, then the manifest listing their SHA-256 (`train`
    # checks them): a build killed between the renames leaves files it does not describe
    files["manifest"] = publish_listed(staged, manifest, out_dir / "manifest.json", indent=2)[-1]
    return BuildResult(
        out_dir=out_dir,
        rows=len(training),
        partners=manifest["partners"],
        features=len(manifest["feature_names"]),
        files=files,
        quarantined=sum(t.quarantined for t in raw.report.tables.values()),
        seconds=time.perf_counter() - started,
        manifest=manifest,
        interrupted_publish=left,
    )


def _manifest(
    raw: RawData,
    config: BuildConfig,
    cutoffs: str | Path | None,
    training: pd.DataFrame,
    dropped: int,
    truth: pd.DataFrame | None,
    truth_note: str,
) -> dict:
    """``manifest.json`` of a build (:func:`run_build` adds the files' SHA-256)."""
    specs = feature_specs(raw.tables)
    feature_names = [s.name for s in specs]
    return {
        "rows": len(training),
        "partners": int(training["partner_id"].nunique()),
        "as_of_min": f"{training['as_of'].min():%Y-%m-%d}",
        "as_of_max": f"{training['as_of'].max():%Y-%m-%d}",
        "data_end": f"{_data_end(raw, config):%Y-%m-%d %H:%M:%S}",
        "snapshots": "cutoffs file" if cutoffs is not None else "onboarding ages",
        "snapshots_dropped_incomplete_horizon": dropped,
        "rows_by_age": {
            str(int(k)): int(v) for k, v in training["age_days"].value_counts().sort_index().items()
        },
        "cohorts": sorted(training["cohort"].unique().tolist()),
        "labels": {
            "revenue_mean": float(training["label_revenue"].mean()),
            "revenue_positive_share": float((training["label_revenue"] > 0).mean()),
            "engaged_share": float(training["label_engaged"].mean()),
        },
        "tables": sorted(raw.tables),
        "input_fingerprints": {name: fp for name, fp in sorted(raw.fingerprints.items())},
        "input_rows": {
            name: {"input": t.input_rows, "valid": t.valid_rows, "quarantined": t.quarantined}
            for name, t in raw.report.tables.items()
        },
        "registry_version": registry_version(),
        "build_config": config.model_dump(mode="json"),
        "features": [{"name": s.name, "layer": s.layer, "kind": s.kind} for s in specs],
        "feature_names": feature_names,
        "truth": truth is not None,
        "truth_note": truth_note,
    }


__all__ = [
    "BuildResult",
    "build_features",
    "build_labels",
    "PHASE_PREFIX",
    "revenue_phases",
    "build_scoring_frame",
    "build_scoring_frame_at_age",
    "read_cutoffs",
    "training_snapshots",
    "build_training_set",
    "make_snapshots",
    "partners_only",
    "run_build",
    "snapshot_columns",
    "snapshot_quarantine",
    "split_snapshot",
    "to_seconds",
]
