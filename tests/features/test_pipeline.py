import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.features.config import BuildConfig
from partnerscore.features.core import PartnerscoreError
from partnerscore.features.pipeline import (
    _sorted_snapshots,
    build_features,
    build_labels,
    build_scoring_frame,
    build_training_set,
    make_snapshots,
    read_cutoffs,
    training_snapshots,
)
from partnerscore.features.registry import feature_specs, registry_version
from partnerscore.features.validate import load_raw
from partnerscore.serving.cli import main

T = pd.Timestamp


def tiny_tables():
    partners = pd.DataFrame(
        {
            "partner_id": ["P1", "P2"],
            "partner_name": ["A", "B"],
            "signed_at": [T("2024-01-01"), T("2024-01-01")],
            "tier": ["gold", "silver"],
            "region": ["NA", "EMEA"],
            "industry": ["software", "retail"],
            "partner_type": ["reseller", "msp"],
            "market_alignment": [4.0, np.nan],
            "channel_reach": [10.0, 3.0],
            "product_adoption_potential": [3.0, 2.0],
        }
    )
    deals = pd.DataFrame(
        {
            "deal_id": ["D1", "D2", "D3", "D4"],
            "partner_id": ["P1", "P1", "P1", "P2"],
            "created_at": [T("2024-01-10"), T("2024-01-20"), T("2024-02-15"), T("2024-01-05")],
            "closed_at": [T("2024-02-01"), T("2024-03-01"), pd.NaT, T("2024-08-29")],
            "amount": [100.0, 250.0, 40.0, 1000.0],
            "status": ["won", "won", "open", "won"],
        }
    )
    activities = pd.DataFrame(
        {
            "activity_id": [f"A{i}" for i in range(6)],
            "partner_id": ["P1"] * 5 + ["P2"],
            "occurred_at": [
                T("2024-01-05"),
                T("2024-01-25"),
                T("2024-01-31 23:59"),
                T("2024-02-01"),
                T("2024-04-15"),
                T("2024-01-02"),
            ],
            "activity_type": ["meeting", "email", "co_sell", "qbr", "meeting", "call"],
            "response_hours": [2.0, 4.0, np.nan, 6.0, 1.0, 3.0],
        }
    )
    return {"partners": partners, "deals": deals, "activities": activities}


def snapshot(as_of="2024-02-01"):
    return pd.DataFrame({"partner_id": ["P1", "P2"], "as_of": [T(as_of), T(as_of)]})


def test_features_on_hand_built_data():
    f = build_features(tiny_tables(), snapshot()).set_index("partner_id")
    p1 = f.loc["P1"]
    assert p1["age_days"] == 31
    assert p1["activities_touchpoints_30d"] == 3  # 01-05 is 27 days... window is [as_of-30d, as_of)
    assert p1["activities_collaborations_todate"] == 1
    # responses at 01-05 02:00 and 01-25 04:00 (the 01-31 co_sell has none): median of 2 and 4
    assert p1["activities_response_hours_median_todate"] == pytest.approx(3.0)
    assert p1["activities_days_since_last"] == pytest.approx(1 / 1440)
    assert p1["deals_created_todate"] == 2
    assert p1["deals_won_todate"] == 0  # D1 closes exactly at as_of: not yet known
    assert p1["deals_open_pipeline_amount"] == 350
    assert np.isnan(p1["deals_win_rate_todate"])
    assert np.isnan(p1["deals_velocity_days_todate"])
    assert p1["deals_days_to_first"] == 9 and p1["deals_has_won_todate"] == 0
    assert f.loc["P2", "tier"] == "silver"
    assert np.isnan(f.loc["P2", "partners_market_alignment"])
    later = build_features(tiny_tables(), snapshot("2024-03-02")).set_index("partner_id").loc["P1"]
    assert later["deals_won_todate"] == 2
    assert later["deals_won_amount_todate"] == 350
    assert later["deals_avg_won_size_todate"] == 175
    assert later["deals_win_rate_todate"] == 1.0
    assert later["deals_open_pipeline_amount"] == 40
    assert later["deals_days_to_first_won"] == 31
    assert later["deals_has_won_todate"] == 1
    # D1 took 22 days (01-10 -> 02-01), D2 41 days (01-20 -> 03-01): median 31.5
    assert later["deals_velocity_days_todate"] == 31.5


def test_labels_boundaries():
    # the horizon is [as_of, as_of + horizon): an event exactly at as_of is a label event (and
    # no feature: features stop strictly before as_of), one exactly at the end is not
    tables = tiny_tables()
    labels = build_labels(tables, snapshot(), BuildConfig(horizon_days=30)).set_index("partner_id")
    # D1 closes exactly at as_of 02-01 (included), D2 on 03-01 = as_of + 29 days (included)
    assert labels.loc["P1", "label_revenue"] == 100 + 250
    features = build_features(tables, snapshot()).set_index("partner_id")
    assert features.loc["P1", "deals_won_amount_todate"] == 0
    labels = build_labels(tables, snapshot("2024-07-30"), BuildConfig(horizon_days=30))
    # P2's D4 closes at 2024-08-29 = as_of + 30 days: the end of the horizon is excluded ...
    assert labels.set_index("partner_id").loc["P2", "label_revenue"] == 0
    # ... and one day later it is the last day inside it
    labels = build_labels(tables, snapshot("2024-07-31"), BuildConfig(horizon_days=30))
    assert labels.set_index("partner_id").loc["P2", "label_revenue"] == 1000
    # one second before as_of: a feature, not a label
    early = snapshot("2024-02-01 00:00:01")
    labels = build_labels(tables, early, BuildConfig(horizon_days=30)).set_index("partner_id")
    assert labels.loc["P1", "label_revenue"] == 250
    features = build_features(tables, early).set_index("partner_id")
    assert features.loc["P1", "deals_won_amount_todate"] == 100


def test_engagement_label_counts_periods():
    tables = tiny_tables()
    cfg = BuildConfig(horizon_days=90, engagement_period_days=30, engagement_min_share=0.5)
    labels = build_labels(tables, snapshot("2024-01-01"), cfg).set_index("partner_id")
    # P1 periods [01-01, 01-31): meeting 01-05, deals created 01-10 and 01-20;
    # [01-31, 03-01): co_sell 01-31 23:59, qbr 02-01, deal 02-15; [03-01, 03-31): nothing -> 2 of 3
    assert labels.loc["P1", "label_engaged"] == 1
    # P2: only a call (not qualifying) and a deal created 01-05 -> 1 of 3 periods
    assert labels.loc["P2", "label_engaged"] == 0


def test_engagement_periods_are_half_open():
    tables = tiny_tables()
    as_of = T("2024-06-01")
    act = pd.DataFrame(
        {
            "activity_id": ["B1", "B2", "B3"],
            "partner_id": ["P2"] * 3,
            # exactly at as_of, exactly at the second period's start, exactly at the horizon end
            "occurred_at": [as_of, as_of + pd.Timedelta(days=30), as_of + pd.Timedelta(days=60)],
            "activity_type": ["meeting", "qbr", "co_sell"],
            "response_hours": [np.nan] * 3,
        }
    )
    tables = dict(tables, activities=act)
    cfg = BuildConfig(horizon_days=60, engagement_period_days=30, engagement_min_share=1.0)
    labels = build_labels(tables, snapshot("2024-06-01"), cfg).set_index("partner_id")
    # [06-01, 07-01) holds B1, [07-01, 07-31) holds B2; B3 at 07-31 is after the horizon
    assert labels.loc["P2", "label_engaged"] == 1
    later = build_labels(tables, snapshot("2024-06-01 00:00:01"), cfg).set_index("partner_id")
    # one second later B1 is before as_of, B2 in the first period and B3 in the second
    assert later.loc["P2", "label_engaged"] == 1
    cut = build_labels(
        tables.copy() | {"activities": act.iloc[[0, 2]]}, snapshot("2024-06-01"), cfg
    )
    # without B2 the second period [07-01, 07-31) is empty: B3 sits exactly on the end
    assert cut.set_index("partner_id").loc["P2", "label_engaged"] == 0


def test_training_set_only_complete_horizons(raw_dir):
    raw = load_raw(raw_dir, write_quarantine=False)
    cfg = BuildConfig()
    ts = build_training_set(raw, cfg)
    assert (ts["as_of"] + pd.Timedelta(days=cfg.horizon_days) <= raw.data_end).all()
    assert set(ts["age_days"]) == set(cfg.ages)
    assert ts["cohort"].str.match(r"^\d{4}Q[1-4]$").all()
    assert ts["label_engaged"].isin([0, 1]).all() and (ts["label_revenue"] >= 0).all()
    expected = ["partner_id", "as_of", *[s.name for s in feature_specs(raw.tables)]]
    assert list(ts.columns[: len(expected)]) == expected
    snaps = make_snapshots(raw.tables["partners"], cfg.ages)
    assert len(ts) < len(snaps)


def test_missing_optional_tables_drop_features(raw_dir, tmp_path):
    for name in ("partners", "deals"):
        (tmp_path / f"{name}.csv").write_bytes((raw_dir / f"{name}.csv").read_bytes())
    raw = load_raw(tmp_path, write_quarantine=False)
    ts = build_training_set(raw, BuildConfig())
    assert "activities_touchpoints_30d" not in ts.columns
    assert "deals_won_amount_todate" in ts.columns


def test_scoring_frame_scope(raw_dir):
    raw = load_raw(raw_dir, write_quarantine=False)
    cut = T("2025-01-01")
    frame = build_scoring_frame(raw, cut)
    signed = raw.tables["partners"].set_index("partner_id")["signed_at"]
    assert (signed[frame["partner_id"]] < cut).all()
    assert len(frame) == int((signed < cut).sum())
    assert frame["partner_id"].is_monotonic_increasing
    assert {"partner_name", "signed_at"} <= set(frame.columns)


def test_build_cli_writes_outputs_and_manifest(raw_dir, sim_tables, tmp_path, capsys):
    out = tmp_path / "features"
    assert main(["build", "--raw", str(raw_dir), "--out", str(out), "--ages", "30,90"]) == 0
    assert "training set:" in capsys.readouterr().out
    ts = pd.read_parquet(out / "training_set.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == len(ts) == sum(manifest["rows_by_age"].values())
    assert set(manifest["rows_by_age"]) == {"30", "90"}
    assert manifest["build_config"]["ages"] == [30, 90]
    assert manifest["as_of_min"] == f"{ts['as_of'].min():%Y-%m-%d}"
    assert set(manifest["input_fingerprints"]) == set(manifest["tables"]) >= {"partners", "deals"}
    assert manifest["registry_version"] == registry_version()
    assert manifest["feature_names"] == [s.name for s in feature_specs(manifest["tables"])]
    assert {f["layer"] for f in manifest["features"]} == {"strategic", "execution", "results"}
    assert manifest["labels"]["engaged_share"] == pytest.approx(ts["label_engaged"].mean())
    data_end = pd.Timestamp(manifest["data_end"])
    assert (ts["as_of"] + pd.Timedelta(days=180) <= data_end).all()
    # truth: one row per snapshot, the simulator's own as_of for that partner and age
    truth = pd.read_parquet(out / "truth.parquet")
    assert truth[["partner_id", "as_of"]].equals(ts[["partner_id", "as_of"]])
    assert truth["true_expected_revenue"].notna().all()
    sim = sim_tables["truth"].merge(truth, on=["partner_id", "age_days"], suffixes=("", "_build"))
    assert len(sim) == len(ts) and (sim["as_of"] == sim["as_of_build"]).all()

    # another horizon than the truth's: no truth written, and the earlier file is gone
    assert main(["build", "--raw", str(raw_dir), "--out", str(out), "--horizon", "120"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["build_config"]["horizon_days"] == 120 and not manifest["truth"]
    assert "120-day horizon" in manifest["truth_note"]
    assert not (out / "truth.parquet").exists()


def test_build_without_complete_horizon_is_user_error(raw_dir, tmp_path, capsys):
    code = main(["build", "--raw", str(raw_dir), "--out", str(tmp_path), "--horizon", "5000"])
    assert code == 2
    assert "no snapshot has a complete 5000-day horizon" in capsys.readouterr().err
    with pytest.raises(PartnerscoreError):
        build_training_set(
            load_raw(raw_dir, write_quarantine=False), BuildConfig(horizon_days=5000)
        )


def test_validated_csv_and_in_memory_frames_build_the_same_training_set(raw_dir, sim_tables):
    from partnerscore.features.validate import RawData

    from_disk = build_training_set(load_raw(raw_dir, write_quarantine=False), BuildConfig())
    in_memory = RawData.from_frames(sim_tables)
    assert in_memory.data_end == load_raw(raw_dir, write_quarantine=False).data_end
    from_memory = build_training_set(in_memory, BuildConfig())
    pd.testing.assert_frame_equal(from_disk, from_memory, check_dtype=False)


def test_build_from_explicit_cutoffs_counts_incomplete_horizons(raw_dir, tmp_path):
    from partnerscore.features.config import BuildConfig
    from partnerscore.features.core import PartnerscoreError
    from partnerscore.features.pipeline import run_build

    partners = pd.read_csv(raw_dir / "partners.csv", dtype=str).head(3)
    signed = pd.to_datetime(partners["signed_at"])
    cutoffs = pd.DataFrame(
        {
            "partner_id": [*partners["partner_id"], partners["partner_id"].iloc[0]],
            "as_of": [
                *(signed + pd.Timedelta(days=45)).dt.strftime("%Y-%m-%d %H:%M:%S"),
                "2026-06-01",  # horizon passes the data end: dropped and counted
            ],
        }
    )
    cutoffs.to_csv(tmp_path / "cutoffs.csv", index=False)
    result = run_build(raw_dir, tmp_path / "out", BuildConfig(), cutoffs=tmp_path / "cutoffs.csv")
    built = pd.read_parquet(tmp_path / "out" / "training_set.parquet")
    assert sorted(built["partner_id"]) == sorted(partners["partner_id"])
    assert (built["age_days"] == 45).all()
    assert result.manifest["snapshots_dropped_incomplete_horizon"] == 1
    assert "snapshots dropped (horizon passes the data end): 1" in result.summary()

    cutoffs.loc[1, "partner_id"] = "NOPE"
    cutoffs.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(PartnerscoreError, match=r"bad.csv: column 'partner_id' row 2: unknown"):
        run_build(raw_dir, tmp_path / "out2", BuildConfig(), cutoffs=tmp_path / "bad.csv")
    cutoffs.loc[1, "partner_id"] = partners["partner_id"].iloc[1]
    cutoffs.loc[2, "as_of"] = "soon"
    cutoffs.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(PartnerscoreError, match=r"bad.csv: column 'as_of' row 3: 'soon'"):
        run_build(raw_dir, tmp_path / "out2", BuildConfig(), cutoffs=tmp_path / "bad.csv")


def test_default_build_counts_dropped_snapshots(built_dir):
    import json

    manifest = json.loads((built_dir / "manifest.json").read_text())
    assert manifest["snapshots_dropped_incomplete_horizon"] > 0


@settings(max_examples=150, deadline=None)
@given(
    ids=st.lists(st.sampled_from(["P1", "P10", "P100", "P2", "p1", "é", "Z", ""]), max_size=8),
    days=st.lists(st.one_of(st.none(), st.integers(-400, 4000)), min_size=8, max_size=8),
    ages=st.lists(st.integers(0, 400), min_size=1, max_size=5),
    unique=st.booleans(),
)
def test_make_snapshots_equals_sorting_every_row(ids, days, ages, unique):
    # the rows laid out in sorted order equal the slow twin that sorts them all (repeated ids,
    # missing signing dates, unsorted and repeated ages included)
    if unique:
        ids = list(dict.fromkeys(ids))
    signed = [
        None if d is None else pd.Timestamp("2024-01-01 09:30") + pd.Timedelta(days=d)
        for d in days[: len(ids)]
    ]
    partners = pd.DataFrame({"partner_id": ids, "signed_at": pd.to_datetime(pd.Series(signed))})
    got = make_snapshots(partners, tuple(ages))
    pd.testing.assert_frame_equal(got, _sorted_snapshots(partners, tuple(ages)))


@settings(max_examples=200, deadline=None)
@given(
    days=st.lists(st.one_of(st.none(), st.integers(-80_000, 87_000)), min_size=1, max_size=6),
    age=st.one_of(st.integers(0, 120_000), st.integers(0, 10**15)),
)
def test_milestone_dates_equal_per_partner_date_arithmetic(days, age):
    """The twin: Python's datetime per partner; a milestone past 2262-04-11 (or a missing
    signing) is NaT, never a date wrapped into the 1700s (100,000 days did that before)."""
    from datetime import datetime, timedelta

    from partnerscore.features.core import milestone_dates

    signed = [None if d is None else datetime(2024, 1, 1, 9, 30) + timedelta(days=d) for d in days]
    stamps = pd.to_datetime(pd.Series(signed, dtype=object)).astype("datetime64[ns]")
    got = milestone_dates(stamps.set_axis(range(5, 5 + len(days))), age)
    assert list(got.index) == list(range(5, 5 + len(days)))
    for when, value in zip(signed, got, strict=True):
        try:
            want = None if when is None else pd.Timestamp(when + timedelta(days=age))
        except OverflowError:  # beyond datetime's year 9999
            want = None
        if want is not None and want > pd.Timestamp.max:
            want = None
        assert (pd.isna(value) and want is None) or value == want, (when, age, value, want)


def test_snapshots_past_2262_stop_with_one_line():
    # validated tables hold nanosecond timestamps, whose arithmetic wraps past 2262-04-11
    signed = pd.to_datetime(["2024-01-01", "2199-06-01"]).astype("datetime64[ns]")
    partners = pd.DataFrame({"partner_id": ["P1", "P2"], "signed_at": signed})
    assert make_snapshots(partners, (30, 20_000))["as_of"].max() == pd.Timestamp("2254-03-05")
    for frame in (partners, pd.concat([partners, partners.iloc[:1]])):  # fast and sorted paths
        with pytest.raises(PartnerscoreError, match=r"--ages 36525: partner 'P2' \(signed 2199"):
            make_snapshots(frame, (30, 36_525))


def test_a_far_cutoff_plus_the_horizon_is_incomplete_not_wrapped(tmp_path):
    """as_of 2199 + a 100-year horizon passes 2262: the snapshot's horizon is incomplete (it
    wrapped to the 1700s before and counted as complete, labelled from no data)."""
    from partnerscore.features.validate import RawData

    partners = pd.DataFrame(
        {"partner_id": ["P1", "P2"], "signed_at": pd.to_datetime(["2024-01-01", "2024-01-01"])}
    )
    path = tmp_path / "c.csv"
    pd.DataFrame({"partner_id": ["P1", "P2"], "as_of": ["2024-03-01", "2199-01-01"]}).to_csv(
        path, index=False
    )
    cutoffs = read_cutoffs(path, partners)
    assert cutoffs["as_of"].dtype == "datetime64[ns]"
    raw = RawData.from_frames({"partners": partners}, data_end=pd.Timestamp("2199-06-01"))
    kept, dropped = training_snapshots(raw, BuildConfig(horizon_days=36_525), cutoffs)
    assert kept["partner_id"].tolist() == ["P1"] and dropped == 1
