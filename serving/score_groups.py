"""The pandas ``score`` job on a large validated snapshot: one group of partners at a time.

Every feature, score, driver, upgrade path and raw-row anomaly is per partner, given two
batch-wide values computed first (the data end, and the anomaly checks' robust centres and
spreads: :func:`~partnerscore.features.anomaly.snapshot_statistics`).
So the job can read the snapshot's event rows one group of partners at a time, as the grouped
``build`` does: the rows are split once into Arrow files in a scratch folder beside the output
(:func:`~partnerscore.features.pipeline.split_snapshot`, the raw files hashed meanwhile), and
each group is read back, built, scored and checked. The groups are consecutive partner ids in
sorted order (:class:`~partnerscore.features.groups.RangeGroups`), so the parts concatenated in
group order are the whole job's rows in its order. What follows (peers, smoothing, history,
the files) runs on the whole batch's score rows, as before.

Memory: the partners table, one group's rows and the score rows so far, instead of every
table at once (~12 GB at 1M partners). ``tests/serving/test_score_groups.py`` checks that the
scores, rejects and history equal the whole job's.
"""

from __future__ import annotations

import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from partnerscore.features.config import ValidateConfig


@dataclass
class SnapshotGroups:
    """A validated snapshot's partners in memory and its event rows split by partner group.

    Attributes:
        raw: What the whole job's ``load_validated`` gives, less the event rows (the tables
            are empty frames of the read columns): partners, quarantine, data end, counts.
        snapshot: The snapshot's files.
        events: Event table -> an empty Arrow table of the columns read.
        size: Partners per group.
    """

    raw: object
    snapshot: object
    events: dict
    size: int
    scratch: Path | None = None
    ranges: object = None
    partner_group: object = None

    @classmethod
    def open(
        cls,
        raw_dir: Path,
        validated: str | Path | None,
        qdir: Path,
        config: ValidateConfig | None,
        size: int,
        unread: dict[str, tuple[str, ...]],
    ) -> SnapshotGroups | None:
        """The snapshot's partners, when it is larger than ``size``; None: score it whole.

        None also when there is no matching snapshot (the whole job validates the raw tables
        or reports the mismatch, as before). The raw files are not hashed yet
        (:meth:`split` does that).
        """
        from partnerscore.features.pipeline import (
            _snapshot_partners,
            partners_only,
            snapshot_columns,
        )
        from partnerscore.features.validated import find_snapshot

        if size < 1 or _snapshot_partners(raw_dir, validated) <= size:
            return None
        snapshot = find_snapshot(raw_dir, validated, qdir, config=config, content=False)
        if snapshot is None:
            return None
        empty = snapshot_columns(snapshot, unread)
        raw = partners_only(snapshot, empty)
        events = {name: t for name, t in empty.items() if name != "partners"}
        return cls(raw=raw, snapshot=snapshot, events=events, size=size)

    def split(self, where: Path, qdir: Path) -> None:
        """Split the event rows into a scratch folder in ``where``; write the quarantine files.

        Raises:
            StaleSnapshot: A raw file changed since the snapshot (nothing is left behind).
        """
        from partnerscore.features.groups import RangeGroups, text_ids
        from partnerscore.features.pipeline import snapshot_quarantine, split_snapshot

        partners = self.raw.tables["partners"]
        self.ranges = RangeGroups(partners["partner_id"], self.size)
        self.partner_group = self.ranges(text_ids(partners["partner_id"]))
        where.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix=".score-groups-", dir=where))
        try:
            self.raw.fingerprints = split_snapshot(
                self.snapshot, self.events, self.ranges, self.scratch
            )
        except BaseException:
            self.close()
            raise
        self.raw.quarantine = snapshot_quarantine(self.snapshot, qdir)

    def tables(self, group: int) -> dict[str, pd.DataFrame]:
        """One group's rows of every table, as the whole job's tables filtered to its partners."""
        from partnerscore.features.groups import group_tables

        partners = self.raw.tables["partners"]
        mine = partners[self.partner_group == group].reset_index(drop=True)
        return {"partners": mine} | group_tables(str(self.scratch), group, self.events)

    def close(self) -> None:
        """Remove the scratch folder."""
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


@dataclass
class GroupedScores:
    """The whole batch's rows from :func:`score_groups`."""

    keys: pd.DataFrame
    scored: pd.DataFrame
    raw_rows: pd.DataFrame
    reasons: np.ndarray
    """Per score row, its reject reason ("" when kept: ``score.unscorable``)."""


def score_groups(
    groups: SnapshotGroups,
    model,
    cut: pd.Timestamp | None,
    at_age: int | None,
    anomaly_as_of: pd.Timestamp | pd.Series,
    ready: np.ndarray,
    config,
) -> GroupedScores:
    """Features, scores, upgrade paths and raw-row anomalies, one group at a time.

    Each group's raw-row checks run in a helper thread while the group is built and scored
    (NumPy, Arrow and the builders' threads release the GIL for much of either).

    Args:
        groups: The split snapshot.
        model: The scoring model.
        cut: The batch's as_of (None with ``at_age``).
        at_age: Score each partner at signed_at + ``at_age`` days.
        anomaly_as_of: The raw-table checks' as_of (the whole job's): one date, or
            partner_id -> each partner's milestone (``--at-age``).
        ready: Per row of the partners table, whether the partner is in the batch
            (``batch_scope``'s mask): a group with none is skipped.
        config: Application configuration.

    Returns:
        (partner_id, as_of) of every partner built, the score rows (as the whole job's
        ``score_features`` and upgrade paths give them), the raw-row anomalies and each score
        row's reject reason.
    """
    from partnerscore.features.anomaly import empty_anomalies, raw_anomalies, snapshot_statistics
    from partnerscore.features.pipeline import build_scoring_frame, build_scoring_frame_at_age
    from partnerscore.features.validate import RawData, supported_end
    from partnerscore.models.scoring import score_features
    from partnerscore.serving.score import unscorable, with_upgrade_paths

    robust = snapshot_statistics(
        groups.snapshot.tables, groups.raw.tables["partners"], anomaly_as_of
    )
    keys, scored, anomalies, reasons = [], [], [], []
    # who is old enough reads the supported data end (a late tail does not move it)
    data_end = supported_end(groups.raw.data_end, groups.raw.late_tail)
    batch_size = int(ready.sum())  # the upgrade paths' limit is the whole batch's
    with ThreadPoolExecutor(max_workers=1) as pool:
        for g in range(groups.ranges.n_groups):
            if not ready[groups.partner_group == g].any():
                continue  # the whole job's raw checks find nothing for partners it does not score
            tables = groups.tables(g)
            checks = pool.submit(raw_anomalies, tables, anomaly_as_of, config.monitor, robust)
            raw = RawData.from_frames(tables, data_end=data_end)
            if at_age is None:
                features = build_scoring_frame(raw, cut)
            else:
                features = build_scoring_frame_at_age(raw, at_age)[0]
            if len(features):
                part = score_features(model, features, policy=config.policy)
                part = with_upgrade_paths(model, features, part, config, batch_size)
                scored.append(part)
                reasons.append(unscorable(model, features, part))
                keys.append(features[["partner_id", "as_of"]])
            anomalies.append(checks.result())
            del tables, raw, features
    found = [a for a in anomalies if not a.empty]
    return GroupedScores(
        keys=pd.concat(keys, ignore_index=True),
        scored=pd.concat(scored, ignore_index=True),
        raw_rows=pd.concat(found, ignore_index=True) if found else empty_anomalies(),
        reasons=np.concatenate(reasons),
    )


__all__ = ["GroupedScores", "SnapshotGroups", "score_groups"]
