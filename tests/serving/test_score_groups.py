"""``score`` in partner groups from a validated snapshot equals the score job at once.

The fast path (:mod:`partnerscore.serving.score_groups`, the default above ``GROUP_PARTNERS``
partners) splits the snapshot's event rows by ranges of sorted partner ids and builds, scores
and checks one group at a time; its slow twin is the whole job (``group_partners=0``). Both
must write the same scores and rejects files byte for byte and the same history and ledger
rows, over runs that read their own history, by milestone age, with one or more workers, with
extreme rows in the input and with stale snapshots.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import stored_rows

from partnerscore.features.core import PartnerscoreError
from partnerscore.features.validated import StaleSnapshot, default_dir, run_validate_snapshot
from partnerscore.serving import score_groups
from partnerscore.serving.score import rejects_path, run_score

RUNS = (
    ("2026-01-15", "scores-a.parquet"),
    ("2026-03-01", "scores-b.parquet"),  # reads the first run's history
    ("2026-03-01", "scores-c.csv"),  # replaces the second run's rows
)


UNSEEN_EVERY = 17
"""Every 17th partner of ``snap_raw`` serves an industry the model never saw ('aerospace'),
every 34th is in a region it never saw too ('MEA'): listed in ``unseen_categories``."""


@pytest.fixture(scope="module")
def snap_raw(raw_dir, tmp_path_factory) -> Path:
    """The shared program's raw folder, a few categories the model never saw, its snapshot."""
    dest = tmp_path_factory.mktemp("groups") / "raw"
    shutil.copytree(raw_dir, dest)
    partners = pd.read_csv(dest / "partners.csv", dtype=str, keep_default_na=False)
    partners.loc[::UNSEEN_EVERY, "industry"] = "aerospace"
    partners.loc[:: 2 * UNSEEN_EVERY, "region"] = "MEA"
    partners.to_csv(dest / "partners.csv", index=False)
    run_validate_snapshot(dest, default_dir(dest))
    return dest


@pytest.fixture(scope="module")
def whole_jobs(tmp_path_factory) -> tuple[Path, dict]:
    """One data folder for the module's runs of ``snap_raw`` and their whole jobs' outcomes.

    The data folder is in the config hash that every score row carries, so runs of several
    tests compare equal only in one folder (:func:`_runs` empties it first). The outcomes of
    the whole job (``group_partners=0``) by (runs, workers): each is run once for the module.
    """
    return tmp_path_factory.mktemp("group-data") / "data", {}


@pytest.fixture()
def group_config(store_config, whole_jobs):
    """``store_config`` with the module's one data folder (:func:`whole_jobs`)."""
    paths = store_config.paths.model_copy(update={"data_dir": str(whole_jobs[0])})
    return store_config.model_copy(update={"paths": paths})


def _whole_job(whole_jobs, raw, config, runs, workers) -> dict:
    """:func:`_runs` of the whole job (``group_partners=0``) on ``snap_raw``, run once."""
    done = whole_jobs[1]
    if (runs, workers) not in done:
        done[runs, workers] = _runs(raw, config, runs, group_partners=0, workers=workers)
    return done[runs, workers]


@pytest.fixture()
def splits(monkeypatch) -> list:
    """Group counts of the jobs that ran in groups (a spy on the real split)."""
    seen: list = []
    real = score_groups.SnapshotGroups.split

    def split(self, *args, **kwargs):
        try:
            return real(self, *args, **kwargs)
        finally:  # also when it fails (a stale snapshot is found while splitting)
            seen.append(self.ranges.n_groups)

    monkeypatch.setattr(score_groups.SnapshotGroups, "split", split)
    return seen


def _runs(raw, config, runs=RUNS, **kwargs) -> dict:
    """The runs on a fresh history: every file's bytes and the stored rows."""
    folder = Path(config.paths.data_dir)
    shutil.rmtree(folder, ignore_errors=True)
    got: dict = {}
    for when, name in runs:
        out = folder / "out" / name
        as_of = None if isinstance(when, int) else pd.Timestamp(when).date()
        at_age = when if isinstance(when, int) else None
        result = run_score(raw, as_of, "champion", out, config, at_age=at_age, **kwargs)
        got[name] = out.read_bytes()
        got[name + ".rejects"] = rejects_path(out).read_bytes()
        got[name + ".counts"] = (result.scored, result.rejected, result.not_yet)
        got.setdefault("unseen", {})[name] = result.unseen_categories
        got[name + ".unseen"] = result.unseen
        for q in sorted((out.parent / "quarantine").glob("*.csv")):
            got[f"{name}:{q.name}"] = q.read_bytes()
        assert not list(out.parent.glob(".score-groups-*")), "scratch folder left behind"
    got["rows"] = stored_rows(folder / "scores" / "history.sqlite")
    return got


def assert_same(fast: dict, slow: dict) -> None:
    assert fast.keys() == slow.keys()
    for key, value in slow.items():
        assert fast[key] == value, f"{key} differs in groups"


@pytest.mark.parametrize("size,workers", [(7, 1), (37, 2), (10_000, 2)])
def test_grouped_score_writes_the_whole_job(
    snap_raw, group_config, whole_jobs, size, workers, splits
):
    slow = _whole_job(whole_jobs, snap_raw, group_config, RUNS, workers)
    assert splits == []  # the whole job's runs, where this test ran them, did not split
    fast = _runs(snap_raw, group_config, group_partners=size, workers=workers)
    if size < 10_000:
        assert len(splits) == len(RUNS) and splits[0] > 1
    else:  # not more partners than a group: scored at once
        assert splits == []
    assert len(slow["rows"]["score_history_v2"]) > 0
    assert slow["unseen"] and all(n > 0 for n in slow["unseen"].values())
    assert_same(fast, slow)


def test_grouped_score_by_milestone_age(snap_raw, store_config, splits):
    runs = ((60, "age60.parquet"), (90, "age90.csv"))  # the second reads the first's history
    slow = _runs(snap_raw, store_config, runs, group_partners=0, workers=2)
    fast = _runs(snap_raw, store_config, runs, group_partners=23, workers=2)
    assert len(splits) == 2
    assert_same(fast, slow)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    # 2 to 16 groups of the 400 partners (133 and 57 leave one partner alone in the last
    # group); the smallest groups are [7-1]'s, whose 58 groups made each example ~25 s here
    size=st.integers(25, 200),
    partner=st.integers(0, 99),
    amount=st.sampled_from([0.0, 1e-6, 1e12, 9.9e15]),
    hours=st.sampled_from([0.0, 1e-9, 1e9, 1e15]),
    days=st.sampled_from([0, 1, 3650, 36500]),
)
def test_property_grouped_equals_whole_with_extreme_rows(
    raw_dir, store_config, tmp_path_factory, size, partner, amount, hours, days
):
    """An extreme deal amount, a far-future close date and an extreme response time on one
    partner: the table-wide statistics of the anomaly checks move for everyone, and the
    grouped job (statistics computed first, checks per group) still equals the whole one."""
    raw = tmp_path_factory.mktemp("prop") / "raw"
    shutil.copytree(raw_dir, raw)
    partners = pd.read_csv(raw / "partners.csv", dtype=str, keep_default_na=False)
    pid = partners["partner_id"].iloc[partner]
    signed = pd.Timestamp(partners["signed_at"].iloc[partner])
    deals = pd.read_csv(raw / "deals.csv", dtype=str, keep_default_na=False)
    extra = deals.iloc[[0]].copy()
    extra["deal_id"], extra["partner_id"], extra["status"] = "D-EXTREME", pid, "won"
    extra["amount"] = repr(amount)
    created = signed + pd.Timedelta(days=2)
    extra["created_at"] = f"{created:%Y-%m-%d %H:%M:%S}"
    extra["closed_at"] = f"{created + pd.Timedelta(days=days):%Y-%m-%d %H:%M:%S}"
    pd.concat([deals, extra]).to_csv(raw / "deals.csv", index=False)
    activities = pd.read_csv(raw / "activities.csv", dtype=str, keep_default_na=False)
    row = activities.iloc[[0]].copy()
    row["activity_id"], row["partner_id"] = "A-EXTREME", pid
    row["response_hours"] = repr(hours)
    row["occurred_at"] = f"{signed + pd.Timedelta(days=5):%Y-%m-%d %H:%M:%S}"
    pd.concat([activities, row]).to_csv(raw / "activities.csv", index=False)
    run_validate_snapshot(raw, default_dir(raw))
    runs = (("2026-01-15", "a.parquet"), ("2026-03-01", "b.parquet"))
    slow = _runs(raw, store_config, runs, group_partners=0, workers=1)
    fast = _runs(raw, store_config, runs, group_partners=size, workers=1)
    assert_same(fast, slow)


def test_grouped_score_refuses_or_replaces_a_stale_snapshot(
    snap_raw, store_config, tmp_path, capsys, splits
):
    """The explicit stale snapshot is refused in one line; the automatic one is noted once and
    the raw tables are validated, as the whole job does."""
    raw = tmp_path / "raw"
    shutil.copytree(snap_raw, raw)
    shutil.copytree(default_dir(raw), tmp_path / "snap")
    path = raw / "leads.csv"
    lines = path.read_text().split("\n")
    lines[1], lines[2] = lines[2], lines[1]  # same size, new content
    path.write_text("\n".join(lines))
    out = tmp_path / "x" / "scores.parquet"
    with pytest.raises(StaleSnapshot, match=r"leads\.csv changed \(content differs\)"):
        run_score(
            raw, pd.Timestamp("2026-03-01").date(), "champion", out, store_config,
            validated=tmp_path / "snap", group_partners=9,
        )  # fmt: skip
    assert not list(out.parent.glob(".score-groups-*"))
    capsys.readouterr()
    fast = _runs(raw, store_config, RUNS[:1], group_partners=9, workers=1)
    assert capsys.readouterr().err.count("validating") == 1
    assert len(splits) == 2  # both split (the stale content is found while splitting)
    shutil.rmtree(default_dir(raw))  # no snapshot at all: validated at once
    slow = _runs(raw, store_config, RUNS[:1], group_partners=0, workers=1)
    assert_same(fast, slow)


def test_a_bad_as_of_stops_the_grouped_job_before_the_split(snap_raw, store_config, splits):
    out = Path(store_config.paths.data_dir) / "late" / "scores.parquet"
    with pytest.raises(PartnerscoreError, match="--as-of 2030-01-01: more than"):
        run_score(
            snap_raw, pd.Timestamp("2030-01-01").date(), "champion", out, store_config,
            group_partners=9,
        )  # fmt: skip
    assert splits == []


def test_negative_group_size_is_a_user_error(snap_raw, store_config, tmp_path):
    with pytest.raises(PartnerscoreError, match="--group-partners -1"):
        run_score(
            snap_raw, pd.Timestamp("2026-03-01").date(), "champion", tmp_path / "s.parquet",
            store_config, group_partners=-1,
        )  # fmt: skip
