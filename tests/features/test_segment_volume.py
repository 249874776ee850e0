"""Per-segment volume against exposure: a plain per-segment twin, a steady year, leads_dry_up.

The whole-table volume check saw leads_dry_up in region NA as a x0.75 drop of the leads table
(under its 1.5 warn ratio); a per-segment rows-per-day check against the previous run was
tried and reverted (false warnings in 6 of 12 months of a steady program: a segment's rows
follow how many partners it has at each onboarding age). The check reads each segment's rows
against the rows its partners' onboarding ages lead one to expect.
"""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import tables_known_at

from partnerscore.features.config import MonitorConfig, SimulateConfig
from partnerscore.features.drift_sim import DRIFT_KINDS, apply_drift, drift_start
from partnerscore.features.segment_volume import (
    AGE_EDGES,
    VOLUME_TABLES,
    segment_volume_checks,
    segment_volume_rows,
)
from partnerscore.features.simulate import simulate_program

DAY = pd.Timedelta(days=1)
ORIGIN = pd.Timestamp("2024-01-01")


def _plain_rows(tables, as_of, config):
    """The same numbers, one segment, partner and age bucket at a time, in pandas."""
    partners = tables["partners"].assign(partner_id=lambda f: f["partner_id"].astype(str))
    end = pd.Timestamp(as_of)
    mid = end - config.window_days * DAY
    start = mid - config.volume_baseline_days * DAY
    buckets = [
        (lo * DAY, (AGE_EDGES[i + 1] * DAY if i + 1 < len(AGE_EDGES) else None))
        for i, lo in enumerate(AGE_EDGES)
    ]

    def overlap(a, b, c, d):  # days of [a, b) inside [c, d), b None: open
        hi = d if b is None else min(b, d)
        return max((hi - max(a, c)) / DAY, 0.0)

    def bucket_of(age):
        for k, (lo, hi) in enumerate(buckets):
            if age < lo:
                return max(k - 1, 0)
            if hi is None or age < hi:
                return k
        return len(buckets) - 1

    rows = []
    for table, column in VOLUME_TABLES.items():
        if table not in tables:
            continue
        events = tables[table].assign(partner_id=lambda f: f["partner_id"].astype(str))
        events = events.merge(partners[["partner_id", "signed_at"]], on="partner_id")
        events = events[events[column].notna()]
        for name in config.volume_segments:
            for value in sorted(set(partners[name].astype(str))):
                members = partners[partners[name].astype(str) == value]
                x = {"base": [0.0] * len(buckets), "win": [0.0] * len(buckets)}
                counts = {}  # (partner, period, bucket) -> rows
                for _, p in members.iterrows():
                    signed = pd.Timestamp(p["signed_at"])
                    for k, (lo, hi) in enumerate(buckets):
                        a, b = signed + lo, None if hi is None else signed + hi
                        x["base"][k] += overlap(a, b, start, mid)
                        x["win"][k] += overlap(a, b, mid, end)
                    mine = events[events["partner_id"] == p["partner_id"]]
                    for when in pd.to_datetime(mine[column]):
                        period = (
                            "base" if start <= when < mid else "win" if mid <= when < end else None
                        )
                        if period is not None:
                            key = (p["partner_id"], period, bucket_of(when - signed))
                            counts[key] = counts.get(key, 0) + 1
                both = [k for k in range(len(buckets)) if x["base"][k] > 0 and x["win"][k] > 0]
                observed = sum(n for (_, per, k), n in counts.items() if per == "win" and k in both)
                num = den = 0.0  # Mantel-Haenszel: window and baseline rows, cross-weighted
                for k in both:
                    total = x["win"][k] + x["base"][k]
                    for (_, per, kk), n in counts.items():
                        if kk == k and per == "win":
                            num += n * x["base"][k] / total
                        elif kk == k:
                            den += n * x["win"][k] / total
                u = {}
                for (pid, per, k), n in counts.items():
                    if k not in both:
                        continue
                    share = x["win"][k] / (x["win"][k] + x["base"][k])
                    u[pid] = u.get(pid, 0.0) + (n if per == "win" else 0) - share * n
                g = len(u)
                var = sum(v * v for v in u.values()) * g / (g - 1) if g > 1 else 0.0
                z = sum(u.values()) / var**0.5 if var > 0 else float("nan")
                ratio = (num + 0.5) / (den + 0.5)
                rows.append((table, f"{name}={value}", float(observed), ratio, z, g))
    return rows


@st.composite
def _programs(draw):
    n = draw(st.integers(1, 12))
    signed = draw(st.lists(st.integers(0, 900 * 24), min_size=n, max_size=n))  # hours
    regions = draw(st.lists(st.sampled_from(["NA", "EMEA"]), min_size=n, max_size=n))
    partners = pd.DataFrame(
        {
            "partner_id": [f"P{i}" for i in range(n)],
            "signed_at": [ORIGIN + pd.Timedelta(hours=h) for h in signed],
            "region": regions,
        }
    )
    events = draw(
        st.lists(
            st.tuples(st.integers(-1, n - 1), st.integers(0, 1000 * 24)), min_size=0, max_size=60
        )
    )
    leads = pd.DataFrame(
        {
            "partner_id": [f"P{i}" if i >= 0 else "UNKNOWN" for i, _ in events],
            "created_at": pd.to_datetime([ORIGIN + pd.Timedelta(hours=h) for _, h in events]),
        }
    )
    # an event exactly at an age edge or at the window's start is in the later bucket/period
    return {"partners": partners, "leads": leads}


@settings(max_examples=60, deadline=None)
@given(_programs(), st.integers(30, 400), st.integers(30, 500))
def test_segment_volume_rows_equal_a_plain_per_segment_count(tables, window, baseline):
    config = MonitorConfig(
        window_days=window, volume_baseline_days=baseline, volume_segments=("region",)
    )
    as_of = ORIGIN + 1000 * DAY
    fast = segment_volume_rows(tables, as_of, config)
    slow = _plain_rows(tables, as_of, config)
    assert [r[:2] for r in fast] == [r[:2] for r in slow]
    for f, s in zip(fast, slow, strict=True):
        assert f[2] == s[2] and f[5] == s[5], (f, s)
        assert f[3] == pytest.approx(s[3], rel=1e-9, abs=1e-9), (f, s)
        assert (np.isnan(f[4]) and np.isnan(s[4])) or f[4] == pytest.approx(s[4], rel=1e-9), (
            f,
            s,
        )


def test_the_edges_of_age_and_window():
    """A row at day 30 exactly is in the 30-60 bucket, one at the window's start in the window,
    one before its partner signed in the first bucket."""
    from partnerscore.features.segment_volume import _ns, partner_counts

    as_of = ORIGIN + 400 * DAY
    when = _ns([ORIGIN + 30 * DAY, as_of - 90 * DAY, ORIGIN - DAY])
    signed = _ns([ORIGIN])
    partner = np.array([0, 0, 0])
    base = partner_counts(when, partner, signed, int(_ns([ORIGIN - 60 * DAY])[0]), when[1])
    win = partner_counts(when, partner, signed, when[1], int(_ns([as_of])[0]))
    assert base[0, :3].tolist() == [1.0, 1.0, 0.0] and base.sum() == 2
    assert win[0, AGE_EDGES.index(270)] == 1.0 and win.sum() == 1
    partners = pd.DataFrame({"partner_id": ["A"], "signed_at": [ORIGIN], "region": ["NA"]})
    leads = pd.DataFrame({"partner_id": ["A"] * 3, "created_at": pd.to_datetime(when)})
    config = MonitorConfig(volume_segments=("region",))
    tables = {"partners": partners, "leads": leads}
    assert segment_volume_rows(tables, as_of, config)[0][:3] == ("leads", "region=NA", 1.0)
    assert _plain_rows(tables, as_of, config)[0][:3] == ("leads", "region=NA", 1.0)


def _statuses(tables, months, config=None):
    config = config or MonitorConfig()
    out = {}
    for month in months:
        checks = segment_volume_checks(tables_known_at(tables, month), month, config)
        out[month] = [c for c in checks if c.status in ("warn", "alarm")]
    return out


@pytest.fixture(scope="module")
def program():
    config = SimulateConfig(partners=3000, seed=3)
    return config, simulate_program(config)


def test_a_steady_program_monitored_monthly_for_a_year_raises_no_warning(program):
    """Twelve monthly runs of a steady 3,000-partner program (each segment's cohorts grow and
    age): no segment warns. A rows-per-day check per segment against the previous run warned
    in 6 of 12 months."""
    _, tables = program
    months = pd.date_range("2025-08-01", "2026-07-01", freq="MS")
    found = _statuses(tables, months)
    assert {m: [c.detail for c in w] for m, w in found.items() if w} == {}
    checks = segment_volume_checks(tables_known_at(tables, months[-1]), months[-1], MonitorConfig())
    assert len(checks) == 7 * 12  # seven event tables x (4 regions, 4 tiers, 4 partner types)
    assert all(c.status == "ok" for c in checks)


def test_leads_drying_up_in_one_region_warns_within_two_monthly_runs(program):
    """leads_dry_up (region NA, 600 -> ~0 leads per 90 days, the leads table x0.75): the
    first or second monthly run after the drift starts warns on leads of region=NA, and the
    third alarms; no other table is named."""
    config, tables = program
    start = drift_start(config.end_date, 180)
    drifted = apply_drift(tables, "leads_dry_up", start)
    months = pd.date_range(start + pd.offsets.MonthBegin(1), periods=3, freq="MS")
    found = _statuses(drifted, months)
    na = {m: {c.status for c in w if c.segment == "region=NA"} for m, w in found.items()}
    assert na[months[0]] | na[months[1]]
    assert na[months[2]] == {"alarm"}
    assert {c.subject for w in found.values() for c in w} == {"leads"}
    worst = max(found[months[2]], key=lambda c: c.value)
    assert worst.segment == "region=NA" and "drop x0.0" in worst.detail, worst.detail


@pytest.mark.parametrize("kind", [k for k in DRIFT_KINDS if k != "leads_dry_up"])
def test_drifts_that_move_no_volume_raise_no_segment_volume_warning(program, kind):
    config, tables = program
    start = drift_start(config.end_date, 180)
    drifted = apply_drift(tables, kind, start, seed=config.seed)
    months = pd.date_range("2026-02-01", "2026-07-01", freq="MS")
    assert {m: w for m, w in _statuses(drifted, months).items() if w} == {}


def test_a_segment_column_the_partners_table_has_not_is_a_config_error(tmp_path, capsys):
    """monitor.volume_segments naming no partners column was skipped without a word."""
    import json

    from partnerscore.serving.cli import main

    with pytest.raises(ValueError, match="'country' is not a partners column to segment by"):
        MonitorConfig(volume_segments=("region", "country"))
    assert MonitorConfig(volume_segments=("industry", "industry")).volume_segments == ("industry",)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"monitor": {"volume_segments": ["country"]}}))
    argv = ["monitor", "--as-of", "2026-07-01", "--raw", str(tmp_path), "--config", str(cfg)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "monitor.volume_segments" in err, err
    assert "'country' is not a partners column to segment by" in err
