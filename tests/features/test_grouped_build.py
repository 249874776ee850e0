"""``build`` in partner groups from a validated snapshot equals the build at once.

The fast path (:func:`partnerscore.features.pipeline._build_in_groups`, the default above
``GROUP_PARTNERS`` partners) splits the snapshot's rows by ranges of sorted partner ids and
builds one group at a time; its slow twin is the whole build (``group_partners=0``). Both must
write the same training set (values, dtypes, row order), truth rows, manifest and quarantine
files, whatever the group size, with explicit cut-offs, with extreme values in the input, and
with stale snapshots.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partnerscore.features.config import BuildConfig, SimulateConfig
from partnerscore.features.core import PartnerscoreError, check_listed
from partnerscore.features.groups import RangeGroups
from partnerscore.features.pipeline import run_build
from partnerscore.features.simulate import simulate_program, write_tables
from partnerscore.features.validated import StaleSnapshot, default_dir, run_validate_snapshot

PARTNERS = 240


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory) -> Path:
    """A 240-partner simulated program as CSV (no snapshot yet)."""
    out = tmp_path_factory.mktemp("grouped-raw")
    write_tables(simulate_program(SimulateConfig(partners=PARTNERS, seed=11)), out, fmt="csv")
    return out


def snapshotted(source: Path, dest: Path) -> Path:
    """A copy of ``source`` with its automatic snapshot ``dest/validated`` written."""
    shutil.copytree(source, dest)
    run_validate_snapshot(dest, default_dir(dest))
    return dest


def assert_same_build(fast: Path, slow: Path) -> None:
    """Two build folders hold the same training set, truth, manifest and quarantine files."""
    assert (fast / "truth.parquet").exists() == (slow / "truth.parquet").exists()
    for name in ("training_set.parquet", "truth.parquet"):
        if not (slow / name).exists():
            continue
        got, want = pd.read_parquet(fast / name), pd.read_parquet(slow / name)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        assert dict(got.dtypes) == dict(want.dtypes), name
    # the files' SHA-256 differ (one Parquet row group per group of partners), not the values
    fast_m = check_listed(fast / "manifest.json")
    slow_m = check_listed(slow / "manifest.json")
    assert set(fast_m.pop("files")) == set(slow_m.pop("files"))
    assert fast_m == slow_m
    fast_q = sorted(p.name for p in (fast / "quarantine").glob("*.csv"))
    assert fast_q == sorted(p.name for p in (slow / "quarantine").glob("*.csv"))
    for name in fast_q:
        assert (fast / "quarantine" / name).read_bytes() == (
            slow / "quarantine" / name
        ).read_bytes()
    assert not list(fast.glob(".build-groups-*")), "the scratch folder is removed"


def test_range_groups_are_consecutive_sorted_ids():
    ids = [f"P{i:03d}" for i in (5, 1, 9, 3, 7, 2)] + ["ü-last", "A-first"]
    import pyarrow as pa

    groups = RangeGroups(ids, 3)
    got = dict(zip(ids, groups(pa.array(ids)).tolist(), strict=True))
    ordered = sorted(ids)
    assert got == {pid: k // 3 for k, pid in enumerate(ordered)}
    assert groups.n_groups == 3
    assert groups(pa.array(["0-before-all"])).tolist() == [0]
    with pytest.raises(ValueError, match="at least 1"):
        RangeGroups(ids, 0)


def test_range_groups_take_ids_of_any_kind_as_their_text():
    # a list, a pandas column or an Arrow array of the same ids give the same ranges
    import pyarrow as pa

    expected = RangeGroups(["3", "10", "2", "10"], 2).starts.tolist()
    assert expected == ["10", "3"]
    for ids in (
        [3, 10, 2, 10],
        pd.Series([3, 10, 2, 10]),
        pd.Series(["3", "10", "2", "10"], dtype=object),
        pa.array(["3", "10", "2", "10"]),
        pa.chunked_array([["3", "10"], ["2", "10"]]),
        pa.array([3, 10, 2, 10]),
    ):
        assert RangeGroups(ids, 2).starts.tolist() == expected, ids


@settings(max_examples=200, deadline=None)
@given(
    ids=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)),
    size=st.integers(1, 5),
)
def test_range_groups_start_where_python_sorting_says(ids, size):
    # Arrow sorts the ids (UTF-8 bytes); the slow twin is Python's sorted() (code points)
    import pyarrow as pa

    groups = RangeGroups(ids, size)
    ordered = sorted(set(ids))
    assert groups.starts.tolist() == (ordered[::size] or [""])
    if ids:
        got = groups(pa.array(ids, pa.string())).tolist()
        assert got == [ordered.index(pid) // size for pid in ids]


@pytest.mark.parametrize("size", [1, 37, PARTNERS - 1])
def test_grouped_build_writes_the_whole_build(small_raw, tmp_path, size):
    raw = snapshotted(small_raw, tmp_path / "raw")
    slow = run_build(raw, tmp_path / "whole", BuildConfig(), group_partners=0)
    fast = run_build(raw, tmp_path / "groups", BuildConfig(), group_partners=size)
    assert (fast.rows, fast.partners) == (slow.rows, slow.partners)
    assert_same_build(tmp_path / "groups", tmp_path / "whole")


def test_grouped_build_with_cutoffs_and_its_own_settings(small_raw, tmp_path):
    raw = snapshotted(small_raw, tmp_path / "raw")
    partners = pd.read_csv(raw / "partners.csv", dtype={"partner_id": str})
    signed = pd.to_datetime(partners["signed_at"])
    rng = np.random.default_rng(3)
    cutoffs = pd.DataFrame(
        {
            "partner_id": partners["partner_id"],
            "as_of": (
                signed.dt.normalize() + pd.to_timedelta(rng.integers(1, 400, len(signed)), "D")
            ).dt.date,
        }
    ).sample(frac=1.0, random_state=1)  # any order: the build sorts them
    cutoffs.to_csv(tmp_path / "cutoffs.csv", index=False)
    config = BuildConfig(horizon_days=120, engagement_period_days=20)
    kwargs = {"cutoffs": tmp_path / "cutoffs.csv"}
    run_build(raw, tmp_path / "whole", config, group_partners=0, **kwargs)
    result = run_build(raw, tmp_path / "groups", config, group_partners=50, **kwargs)
    assert result.manifest["snapshots"] == "cutoffs file"
    assert_same_build(tmp_path / "groups", tmp_path / "whole")


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    size=st.integers(1, PARTNERS + 5),
    partner=st.integers(0, PARTNERS - 1),
    amount=st.sampled_from([0.0, 1e-6, 1e12, 9.9e15]),
    days=st.sampled_from([0, 1, 3650, 36500]),
)
def test_property_grouped_equals_whole_with_extreme_rows(
    small_raw, tmp_path_factory, size, partner, amount, days
):
    """An extreme deal amount and a far-future close date on one partner's deal: the grouped
    build still equals the whole one (the row is used or quarantined the same way by both)."""
    tmp = tmp_path_factory.mktemp("prop")
    raw = tmp / "raw"
    shutil.copytree(small_raw, raw)
    deals = pd.read_csv(raw / "deals.csv", dtype=str, keep_default_na=False)
    partners = pd.read_csv(raw / "partners.csv", dtype=str, keep_default_na=False)
    pid = partners["partner_id"].iloc[partner]
    extra = deals.iloc[[0]].copy()
    extra["deal_id"] = "D-EXTREME"
    extra["partner_id"] = pid
    extra["amount"] = repr(amount)
    extra["status"] = "won"
    created = pd.Timestamp(partners["signed_at"].iloc[partner]) + pd.Timedelta(days=2)
    extra["created_at"] = f"{created:%Y-%m-%d %H:%M:%S}"
    extra["closed_at"] = f"{created + pd.Timedelta(days=days):%Y-%m-%d %H:%M:%S}"
    pd.concat([deals, extra]).to_csv(raw / "deals.csv", index=False)
    run_validate_snapshot(raw, default_dir(raw))
    run_build(raw, tmp / "whole", BuildConfig(), group_partners=0)
    run_build(raw, tmp / "groups", BuildConfig(), group_partners=size)
    assert_same_build(tmp / "groups", tmp / "whole")


def test_grouped_build_refuses_or_replaces_a_stale_snapshot(small_raw, tmp_path, capsys):
    """Same content change, same outcome as the whole build: the explicit snapshot is refused
    in one line; the automatic one is noted once and the raw tables are validated again."""
    raw = snapshotted(small_raw, tmp_path / "raw")
    shutil.copytree(default_dir(raw), tmp_path / "snap")
    path = raw / "leads.csv"
    lines = path.read_text().split("\n")
    lines[1], lines[2] = lines[2], lines[1]  # same size, new content
    path.write_text("\n".join(lines))
    with pytest.raises(StaleSnapshot, match=r"leads\.csv changed \(content differs\)"):
        run_build(raw, tmp_path / "x", BuildConfig(), validated=tmp_path / "snap", group_partners=9)
    capsys.readouterr()
    run_build(raw, tmp_path / "groups", BuildConfig(), group_partners=9)
    notes = capsys.readouterr().err.count("validating")
    assert notes == 1
    shutil.rmtree(default_dir(raw))  # no snapshot at all: validated at once
    run_build(raw, tmp_path / "whole", BuildConfig(), group_partners=0)
    assert_same_build(tmp_path / "groups", tmp_path / "whole")


def test_negative_group_size_is_a_user_error(small_raw, tmp_path):
    with pytest.raises(PartnerscoreError, match="--group-partners -1"):
        run_build(small_raw, tmp_path / "x", BuildConfig(), group_partners=-1)


def test_build_reads_none_of_the_columns_it_skips(small_raw):
    """``BUILD_UNREAD_COLUMNS`` (left out of the build's tables): the training set built from
    every column equals the one built without them (the slow twin reads everything)."""
    from partnerscore.features.pipeline import (
        BUILD_UNREAD_COLUMNS,
        build_training_set,
        training_snapshots,
    )
    from partnerscore.features.validate import RawData, load_raw

    full = load_raw(small_raw, write_quarantine=False)
    lean = RawData(
        {
            name: frame.drop(columns=list(BUILD_UNREAD_COLUMNS.get(name, ())))
            for name, frame in full.tables.items()
        },
        full.report,
        full.files,
        full.fingerprints,
        full.data_end,
    )
    assert all(
        set(cols) <= set(full.tables[name].columns) for name, cols in BUILD_UNREAD_COLUMNS.items()
    )
    snaps = training_snapshots(full, BuildConfig())[0]
    pd.testing.assert_frame_equal(
        build_training_set(lean, BuildConfig(), snaps),
        build_training_set(full, BuildConfig(), snaps),
        check_exact=True,
    )


def test_a_late_tail_stops_every_build_path_until_the_data_end_is_given(small_raw, tmp_path):
    """One partner's portal event months after everyone else's data moved the data end, and
    every other partner's label window ran over days its data does not cover (1,198 extra
    snapshots with truncated labels on the demo). Whole, snapshot and grouped builds stop with
    the same line; --data-end decides."""
    from partnerscore.features.core import PartnerscoreError

    raw = tmp_path / "raw"
    shutil.copytree(small_raw, raw)
    pid = pd.read_csv(raw / "partners.csv", dtype=str)["partner_id"].iloc[3]
    with open(raw / "portal_events.csv", "a", encoding="utf-8") as handle:
        handle.write(f"{pid},2026-11-20 10:00:00,login\n")  # the data ends 2026-06-30
    said = rf"the data end 2026-11-20 rests on 1 partner\(s\) \({pid}: 1 portal_events row"
    with pytest.raises(PartnerscoreError, match=said + r".*--data-end 2026-06-30"):
        run_build(raw, tmp_path / "whole", BuildConfig(), group_partners=0)
    run_validate_snapshot(raw, default_dir(raw))  # the snapshot's manifest keeps the tail
    for size in (0, 50):
        with pytest.raises(PartnerscoreError, match=said):
            run_build(raw, tmp_path / f"s{size}", BuildConfig(), group_partners=size)
    given = BuildConfig(data_end=pd.Timestamp("2026-06-30").date())
    slow = run_build(raw, tmp_path / "whole", given, group_partners=0)
    run_build(raw, tmp_path / "groups", given, group_partners=50)
    assert_same_build(tmp_path / "groups", tmp_path / "whole")
    assert slow.manifest["data_end"] == "2026-07-01 00:00:00"
