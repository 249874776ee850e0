"""Drift statistics, profiles, anomaly detection and the drift simulator on small frames."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.multitest import multipletests

from partnerscore.features.anomaly import (
    ANOMALY_COLUMNS,
    out_of_range,
    partner_flags,
    partner_outliers,
    staleness_checks,
    table_outliers,
    volume_checks,
)
from partnerscore.features.config import MonitorConfig, SimulateConfig
from partnerscore.features.drift import (
    benjamini_hochberg,
    chi_square,
    drift_checks,
    grouped_ks,
    psi,
    unseen_category_checks,
)
from partnerscore.features.drift_sim import (
    ABSURD_AMOUNT,
    DRIFT_KINDS,
    NEW_PARTNER_TYPE,
    apply_drift,
    drift_start,
)
from partnerscore.features.profile import (
    age_band,
    build_profile,
    column_counts,
    current_profile,
    design_effect,
    numeric_column_spec,
)

CFG = MonitorConfig()


def test_psi_by_hand():
    r, c = [50, 30, 20], [20, 30, 50]
    rp = (np.array(r) + 0.5) / 101.5
    cp = (np.array(c) + 0.5) / 101.5
    assert psi(r, c) == pytest.approx(float(np.sum((cp - rp) * np.log(cp / rp))))
    assert psi(r, r) == 0.0
    assert psi([100, 0], [0, 100]) > 5


@settings(max_examples=40, deadline=None)
@given(
    a=st.lists(st.integers(0, 12), min_size=5, max_size=80),
    b=st.lists(st.integers(0, 12), min_size=5, max_size=80),
)
def test_grouped_ks_equals_exact_ks_when_every_value_has_its_bin(a, b):
    """With one bin per possible value the grouped statistic is the exact two-sample KS D."""
    edges = np.arange(0, 12)  # bins (-inf,0], (0,1], ..., (11, inf)
    ra = np.bincount(np.searchsorted(edges, a), minlength=13)
    rb = np.bincount(np.searchsorted(edges, b), minlength=13)
    d, p = grouped_ks(ra, rb)
    assert d == pytest.approx(stats.ks_2samp(a, b, method="asymp").statistic, abs=1e-12)
    assert 0.0 <= p <= 1.0


def test_grouped_ks_is_never_larger_than_exact():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 400), rng.normal(0.3, 1, 300)
    edges = np.quantile(a, np.linspace(0, 1, 11)[1:-1])
    ra = np.bincount(np.searchsorted(edges, a), minlength=10)
    rb = np.bincount(np.searchsorted(edges, b), minlength=10)
    d, _ = grouped_ks(ra, rb)
    assert d <= stats.ks_2samp(a, b).statistic + 1e-12


def test_chi_square_matches_scipy_and_handles_unseen_cells():
    stat, p = chi_square([40, 30, 0], [10, 30, 25])
    ref = stats.chi2_contingency(np.array([[40, 30, 0], [10, 30, 25]]), correction=False)
    assert stat == pytest.approx(ref[0]) and p == pytest.approx(ref[1])
    assert chi_square([5, 0], [5, 0]) == (0.0, 1.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=60))
def test_benjamini_hochberg_matches_statsmodels(p):
    expected = multipletests(p, method="fdr_bh")[1]
    np.testing.assert_allclose(benjamini_hochberg(p), expected, rtol=1e-12, atol=1e-15)


def test_age_band():
    bands = age_band([0, 30, 31, 60, 90.5, 180, 181, np.nan], (30, 60, 90, 180))
    assert list(bands) == [
        "0-30", "0-30", "31-60", "31-60", "91-180", "91-180", ">180", "unknown",
    ]  # fmt: skip


def test_point_mass_gets_bins_of_its_own_tail():
    x = pd.Series([0.0] * 900 + list(np.linspace(1, 100, 100)))
    spec = numeric_column_spec(x)
    assert len(spec["edges"]) >= 9  # deciles of the non-zero tail, not one edge at 0
    counts = column_counts(pd.concat([x, pd.Series([np.nan, np.nan])]), spec)
    assert sum(counts["counts"]) == 1000 and counts["missing"] == 2 and counts["n"] == 1002


def _frame(seed, n, shift=0.0, region_shift=None):
    rng = np.random.default_rng(seed)
    partners = [f"P{i:04d}" for i in range(n // 2)]
    frame = pd.DataFrame(
        {
            "partner_id": np.repeat(partners, 2),
            "age_days": np.tile([30, 90], n // 2),
            "tier": rng.choice(["silver", "gold"], n),
            "region": rng.choice(["NA", "EMEA"], n),
            "partner_type": rng.choice(["msp", "si"], n),
            "x": rng.gamma(2.0, 10.0, n) + shift,
            "c": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]),
        }
    )
    if region_shift:
        frame.loc[frame["region"] == "NA", "x"] += region_shift
    return frame


def test_profile_counts_add_up_and_design_effect():
    frame = _frame(0, 1000)
    prof = build_profile(frame, ["x"], ["c"], (30, 60, 90, 180))
    assert design_effect(prof) == pytest.approx(2.0)
    assert sum(prof["groups"]["all"]["x"]["counts"]) == 1000
    na = prof["groups"]["region=NA"]["x"]["n"] + prof["groups"]["region=EMEA"]["x"]["n"]
    assert na == 1000
    assert {"age_band=0-30", "age_band=61-90"} <= set(prof["groups"])


def test_drift_checks_quiet_on_same_distribution_and_name_the_shifted_segment():
    ref = build_profile(_frame(0, 2000), ["x"], ["c"], (30, 60, 90, 180))
    same = drift_checks(ref, current_profile(_frame(1, 2000), ref), CFG)
    assert not [c for c in same if c.status in ("warn", "alarm")]
    moved = drift_checks(ref, current_profile(_frame(2, 2000, region_shift=40), ref), CFG)
    alarms = {(c.subject, c.segment) for c in moved if c.status == "alarm"}
    assert ("x", "region=NA") in alarms
    assert ("x", "region=EMEA") not in alarms
    assert all(c.subject == "x" for c in moved if c.status == "alarm")


def test_small_groups_are_skipped_not_judged():
    ref = build_profile(_frame(0, 2000), ["x"], ["c"], (30, 60, 90, 180))
    checks = drift_checks(ref, current_profile(_frame(3, 20, shift=100), ref), CFG)
    assert {c.status for c in checks if c.section == "drift"} == {"skip"}


def test_unseen_categories_alarm():
    ref = build_profile(_frame(0, 500), ["x"], ["c"], (30, 60, 90, 180))
    cur = _frame(1, 500)
    cur.loc[:100, "c"] = "new"
    checks = unseen_category_checks(ref, current_profile(cur, ref), CFG)
    check = next(c for c in checks if c.subject == "c")
    assert check.status == "alarm" and "'new' (101)" in check.detail


def _tables(n_deals=400, seed=0):
    rng = np.random.default_rng(seed)
    partners = pd.DataFrame(
        {
            "partner_id": [f"P{i}" for i in range(20)],
            "signed_at": pd.Timestamp("2024-01-01"),
            "channel_reach": rng.integers(5, 50, 20).astype(float),
        }
    )
    created = pd.Timestamp("2024-02-01") + pd.to_timedelta(rng.uniform(0, 800, n_deals), "D")
    deals = pd.DataFrame(
        {
            "deal_id": [f"D{i}" for i in range(n_deals)],
            "partner_id": rng.choice(partners["partner_id"], n_deals),
            "created_at": created,
            "closed_at": created + pd.to_timedelta(rng.gamma(2, 20, n_deals), "D"),
            "amount": np.round(np.exp(rng.normal(9.5, 1.0, n_deals)), 2),
            "status": "won",
        }
    )
    return {"partners": partners, "deals": deals}


def test_table_outlier_flags_the_absurd_deal_only():
    tables = _tables()
    as_of = pd.Timestamp("2026-07-01")
    clean, checks = table_outliers(tables, as_of, CFG)
    assert clean.empty and all(c.status == "ok" for c in checks)
    tables["deals"].loc[7, "amount"] = ABSURD_AMOUNT
    rows, checks = table_outliers(tables, as_of, CFG)
    assert list(rows["record_id"]) == ["D7"] and list(rows.columns) == list(ANOMALY_COLUMNS)
    assert next(c for c in checks if c.name == "quality.outliers.deals.amount").status == "alarm"
    flags = partner_flags(tables["partners"]["partner_id"], rows)
    pid = tables["deals"].loc[7, "partner_id"]
    assert flags.set_index("partner_id").loc[pid, "anomaly"]
    assert flags["anomaly"].sum() == 1


def test_partner_outlier_against_its_own_history():
    tables = _tables(n_deals=600)
    deals = tables["deals"]
    as_of = pd.Timestamp("2026-07-01")
    # one partner with steady small deals, then a 100x deal inside the window
    small = pd.DataFrame(
        {
            "deal_id": [f"S{i}" for i in range(8)],
            "partner_id": "P0",
            "created_at": pd.date_range("2024-03-01", periods=8, freq="30D"),
            "closed_at": pd.date_range("2024-03-20", periods=8, freq="30D"),
            "amount": [1000.0, 1100.0, 900.0, 1050.0, 950.0, 1000.0, 1020.0, 980.0],
            "status": "won",
        }
    )
    spike = small.iloc[[0]].assign(
        deal_id="S99", created_at=as_of - pd.Timedelta(days=10), closed_at=pd.NaT,
        amount=100_000.0, status="open",
    )  # fmt: skip
    tables["deals"] = pd.concat([deals[deals["partner_id"] != "P0"], small, spike])
    rows = partner_outliers(tables, as_of, CFG)
    hit = rows[rows["table"] == "deals"]
    assert list(hit["record_id"]) == ["S99"]
    assert "this partner's own typical" in hit["reason"].iloc[0]


def test_volume_and_staleness_checks():
    checks = volume_checks({"deals": 320, "leads": 100}, {"deals": 100, "leads": 95}, 90, 90, CFG,
                           "the previous run")  # fmt: skip
    status = {c.subject: c.status for c in checks}
    assert status == {"deals": "alarm", "leads": "ok"}
    stale = staleness_checks(_tables(), pd.Timestamp("2026-07-01"), CFG)
    by = {c.subject: c for c in stale}
    assert by["partners"].status == "info"
    assert by["deals"].value > 0
    assert by["deals"].detail.endswith(" days before as_of")
    # no event before as_of: an alarm that says so (it read "..., - days before as_of")
    empty = staleness_checks(_tables(), pd.Timestamp("1990-01-01"), CFG)
    deals = next(c for c in empty if c.subject == "deals")
    assert deals.status == "alarm" and deals.value is None
    assert deals.detail == "deals: no event before as_of"


def test_out_of_range_uses_log_scale_and_margin():
    spec = numeric_column_spec(pd.Series(np.linspace(0, 1000, 200)))
    feats = pd.DataFrame(
        {"partner_id": ["a", "b", "c"], "as_of": pd.Timestamp("2026-01-01"), "x": [5, 1500, 1e9]}
    )
    rows = out_of_range(feats, {"x": spec}, margin=0.25)
    assert list(rows["partner_id"]) == ["c"]


@pytest.mark.parametrize("kind", DRIFT_KINDS)
def test_drift_simulator_changes_only_the_drifted_period(kind, sim_tables):
    start = drift_start(SimulateConfig().end_date, 180)
    out = apply_drift(sim_tables, kind, start)
    assert set(out) == set(sim_tables)
    if kind == "leads_dry_up":
        late = out["leads"].merge(sim_tables["partners"][["partner_id", "region"]])
        assert not ((late["region"] == "NA") & (late["created_at"] >= start)).any()
        early = sim_tables["leads"][sim_tables["leads"]["created_at"] < start]
        assert len(out["leads"]) >= len(early)
    elif kind == "inflated_deals":
        ratio = out["deals"]["amount"] / sim_tables["deals"]["amount"]
        late = (sim_tables["deals"]["created_at"] >= start).to_numpy()
        assert np.allclose(ratio[late], 5.0, rtol=1e-3) and np.allclose(ratio[~late], 1.0)
    elif kind == "new_partner_type":
        new = out["partners"]["partner_type"] == NEW_PARTNER_TYPE
        assert new.any() and (out["partners"].loc[new, "signed_at"] >= start).all()
    else:
        assert (out["deals"]["amount"] == ABSURD_AMOUNT).sum() == 1
    assert sim_tables["deals"]["amount"].max() < ABSURD_AMOUNT  # input untouched


def _slow_partner_outliers(tables, as_of, cfg):
    """Row-by-row twin of partner_outliers: (table, partner_id, column, rounded z) hits."""
    from partnerscore.features.anomaly import EVENT_TIME, MEASURE_TIME, MEASURES, VOLUME_TABLES

    def robust(values):
        med = float(np.median(values))
        mad = float(np.median([abs(v - med) for v in values]))
        return med, max(1.4826 * mad, cfg.partner_scale_floor)

    hits = set()
    start = as_of - pd.Timedelta(days=cfg.window_days)
    for table, measure, _, values_of in MEASURES:
        if table == "partners" or table not in tables:
            continue
        frame = tables[table]
        # when the measure is known: a duration at its end (after as_of or never: unknown)
        when = pd.to_datetime(frame[MEASURE_TIME[measure]])
        x = np.where((when < as_of).to_numpy(), np.log1p(values_of(frame)), np.nan)
        for pid in frame["partner_id"].unique():
            mine = (frame["partner_id"] == pid).to_numpy()
            past = x[mine & (when < start).to_numpy() & np.isfinite(x)]
            if len(past) < cfg.partner_min_history:
                continue
            med, scale = robust(past)
            for v in x[mine & (when >= start).to_numpy() & (when < as_of).to_numpy()]:
                if np.isfinite(v) and (v - med) / scale >= cfg.partner_z:
                    hits.add((table, pid, measure, round((v - med) / scale, 2)))
    signed = dict(
        zip(tables["partners"]["partner_id"], tables["partners"]["signed_at"], strict=True)
    )
    for table in VOLUME_TABLES:
        frame = tables[table]
        when = pd.to_datetime(frame[EVENT_TIME[table][1]])
        for pid, group_when in when.groupby(frame["partner_id"]):
            group_when = group_when[group_when < as_of]
            if group_when.empty:
                continue
            full = int((as_of - signed[pid]) / pd.Timedelta(days=30))
            periods = [
                sum(1 for t in group_when if as_of - pd.Timedelta(days=30 * (k + 1)) <= t
                    < as_of - pd.Timedelta(days=30 * k))
                for k in range(full)
            ]  # fmt: skip
            if full - 1 < cfg.partner_min_history:
                continue
            med, scale = robust(np.log1p(periods[1:]))
            z = (np.log1p(periods[0]) - med) / scale
            if z >= cfg.partner_z:
                hits.add((table, pid, "events_last_30_days", round(z, 2)))
    return hits


def test_partner_outliers_match_a_row_by_row_twin(sim_tables):
    cfg = MonitorConfig(partner_z=2.0)  # low, so that the comparison has hits on both paths
    keep = set(sim_tables["partners"]["partner_id"].iloc[::5])  # 80 partners keep it quick
    tables = {
        k: v[v["partner_id"].isin(keep)].reset_index(drop=True)
        for k, v in sim_tables.items()
        if k in ("partners", "deals", "activities", "leads", "portal_events")
    }
    as_of = pd.Timestamp("2026-03-01")
    fast = partner_outliers(tables, as_of, cfg)
    got = {
        (r.table, r.partner_id, r.column, round(r.score, 2)) for r in fast.itertuples(index=False)
    }
    expected = _slow_partner_outliers(tables, as_of, cfg)
    assert len(expected) >= 8
    assert got == expected


def test_profile_groups_equal_per_group_column_counts():
    """The coded-once fast path against column_counts on each group's rows."""
    from partnerscore.features.profile import profile_groups, segment_frame

    def group_counts(frame, columns):  # the slow twin: column_counts of every column
        return {name: column_counts(frame[name], s) for name, s in columns.items() if name in frame}

    ages = (30, 60, 90, 180)
    ref = _frame(0, 600)
    spec = build_profile(ref, ["x"], ["c"], ages)["columns"]
    cur = _frame(5, 400, shift=7.0)
    cur.loc[::7, "x"] = np.nan
    cur.loc[::5, "c"] = None
    cur.loc[::11, "c"] = "unseen"
    cur.loc[::13, "x"] = np.inf
    fast = profile_groups(cur, spec, ages)
    segments = segment_frame(cur, ages)
    slow = {"all": group_counts(cur, spec)}
    for seg in segments.columns:
        for value, index in segments.groupby(seg, sort=True).groups.items():
            slow[f"{seg}={value}"] = group_counts(cur.loc[index], spec)
    assert fast == slow
    assert fast["all"]["c"]["other"] == {"unseen": int((cur["c"] == "unseen").sum())}


def test_a_profiled_column_absent_from_the_batch_is_all_missing():
    """A batch without a profiled column (its optional table not delivered) profiles as that
    column all-missing, the twin of the column present and empty; it was left out, so no
    check named it."""
    ref = build_profile(_frame(0, 1000), ["x"], ["c"], (30, 60, 90, 180))
    cur = _frame(1, 1000)
    without = current_profile(cur.drop(columns=["x", "c"]), ref)
    assert without == current_profile(cur.assign(x=np.nan, c=None), ref)
    checks = {c.name: c for c in drift_checks(ref, without, CFG)}
    assert checks["quality.missing_rate.x"].status == "alarm"
    assert checks["quality.missing_rate.c"].status == "alarm"


def test_out_of_range_leaves_the_onboarding_age_out():
    """age_days is the batch's clock: every month the partners signed in the last weeks are
    younger than the youngest training snapshot (30 days), by construction. They were listed as
    anomalous ("feature age_days = 18.62 is outside the training range [30, 180]"), and the
    monitor warned on every monthly run of a steady program (11% of in-scope partners)."""
    ages = pd.Series(np.tile([30.0, 60.0, 90.0, 180.0], 50))
    spec = numeric_column_spec(ages)
    feats = pd.DataFrame(
        {
            "partner_id": ["new", "old"],
            "as_of": pd.Timestamp("2026-01-01"),
            "age_days": [2.5, 180.0],
            "x": [5.0, 1e9],
        }
    )
    x_spec = numeric_column_spec(pd.Series(np.linspace(0, 1000, 200)))
    rows = out_of_range(feats, {"age_days": spec, "x": x_spec}, margin=0.25)
    assert list(rows["column"]) == ["x"] and list(rows["partner_id"]) == ["old"]


def _plain_band(age, ages) -> str:
    """The age band of one age, read off the labels: (previous age, age] (whole ages)."""
    if age is None or age != age:
        return "unknown"
    low = 0
    for a in ages:
        if age <= a:
            return f"{low}-{a}"
        low = a + 1
    return f">{ages[-1]}"


def _plain_counts(rows, spec) -> dict:
    """One column's counts over a list of values, one value at a time."""
    n, missing = len(rows), 0
    if spec["kind"] == "numeric":
        counts = [0] * (len(spec["edges"]) + 1)
        for v in rows:
            x = float("nan") if v is None else float(v)
            if x != x or x in (float("inf"), float("-inf")):
                missing += 1
            else:
                counts[sum(1 for e in spec["edges"] if e < x)] += 1
        return {"n": n, "missing": missing, "counts": counts}
    counts, other = [0] * len(spec["categories"]), {}
    for v in rows:
        if v is None or (isinstance(v, float) and v != v):
            missing += 1
        elif str(v) in spec["categories"]:
            counts[spec["categories"].index(str(v))] += 1
        else:
            other[str(v)] = other.get(str(v), 0) + 1
    return {"n": n, "missing": missing, "counts": counts, "other": dict(sorted(other.items()))}


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.sampled_from([-5.0, 0.0, 30.0, 30.5, 31.0, 180.0, 180.2])),
            st.sampled_from(["gold", "silver", None]),
            st.one_of(
                st.none(),
                st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0, 1e300, -1e300]),
                st.floats(-50, 200),
            ),
            st.sampled_from(["a", "b", "c", "unseen", "A", None]),
        ),
        max_size=40,
    )
)
def test_profile_groups_equal_a_per_row_count(rows):
    """Every group's counts (all, tier, region, partner_type, age band) against a plain loop
    over rows: NaN, infinities, 1e300, values on the bin edges, unseen and missing categories,
    ages on and between the band limits, empty batches."""
    from partnerscore.features.profile import profile_groups

    ages = (30, 60, 90, 180)
    spec = build_profile(_frame(0, 600), ["x"], ["c"], ages)["columns"]
    edges = spec["x"]["edges"]
    frame = pd.DataFrame(
        {
            "age_days": [r[0] for r in rows],
            "tier": pd.Series([r[1] for r in rows], dtype=object),
            "region": "NA",
            "x": pd.Series([edges[len(rows) % len(edges)] if i % 5 == 0 else r[2]
                            for i, r in enumerate(rows)], dtype=object),
            "c": pd.Series([r[3] for r in rows], dtype=object),
        }
    )  # fmt: skip
    got = profile_groups(frame, spec, ages)
    records = frame.to_dict("records")

    def key(r, seg):
        if seg == "age_band":
            return _plain_band(r["age_days"], ages)
        value = r.get(seg)
        return "unknown" if value is None or value != value else str(value)

    expected = {"all": records}
    for seg in ("tier", "region", "partner_type", "age_band"):
        for r in records:
            expected.setdefault(f"{seg}={key(r, seg)}", []).append(r)
    assert set(got) == set(expected)
    for group, members in expected.items():
        for name in ("x", "c"):
            assert got[group][name] == _plain_counts([m[name] for m in members], spec[name]), (
                group,
                name,
            )
