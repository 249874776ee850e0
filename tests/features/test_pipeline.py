import json

import numpy as np
import pandas as pd
import pytest

from partnerscore.features.config import BuildConfig
from partnerscore.features.core import PartnerscoreError
from partnerscore.features.pipeline import (
    build_features,
    build_labels,
    build_scoring_frame,
    build_training_set,
    make_snapshots,
)
from partnerscore.features.registry import feature_specs
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
    assert p1["activities_response_hours_mean_todate"] == pytest.approx(3.0)
    assert p1["activities_days_since_last"] == pytest.approx(1 / 1440)
    assert p1["deals_created_todate"] == 2
    assert p1["deals_won_todate"] == 0  # D1 closes exactly at as_of: not yet known
    assert p1["deals_open_pipeline_amount"] == 350
    assert np.isnan(p1["deals_win_rate_todate"])
    assert f.loc["P2", "tier"] == "silver"
    assert np.isnan(f.loc["P2", "partners_market_alignment"])
    later = build_features(tiny_tables(), snapshot("2024-03-02")).set_index("partner_id").loc["P1"]
    assert later["deals_won_todate"] == 2
    assert later["deals_won_amount_todate"] == 350
    assert later["deals_avg_won_size_todate"] == 175
    assert later["deals_win_rate_todate"] == 1.0
    assert later["deals_open_pipeline_amount"] == 40
    assert later["deals_days_to_first_won"] == 31


def test_labels_boundaries():
    tables = tiny_tables()
    labels = build_labels(tables, snapshot(), BuildConfig(horizon_days=30)).set_index("partner_id")
    # D1 closes exactly at as_of (excluded), D2 on 03-01 = as_of + 29 days (included)
    assert labels.loc["P1", "label_revenue"] == 250
    labels = build_labels(tables, snapshot("2024-07-30"), BuildConfig(horizon_days=30))
    # P2's D4 closes at 2024-08-29 = as_of + 30 days: the last instant of the horizon counts
    assert labels.set_index("partner_id").loc["P2", "label_revenue"] == 1000


def test_engagement_label_counts_periods():
    tables = tiny_tables()
    cfg = BuildConfig(horizon_days=90, engagement_period_days=30, engagement_min_share=0.5)
    labels = build_labels(tables, snapshot("2024-01-01"), cfg).set_index("partner_id")
    # P1 periods: (01-01,01-31]: meeting 01-05, deals created; (01-31,03-01]: qbr 02-01, deal 02-15
    assert labels.loc["P1", "label_engaged"] == 1
    # P2: only a call (not qualifying) and a deal created 01-05 -> 1 of 3 periods
    assert labels.loc["P2", "label_engaged"] == 0


FUTURE = T("2024-02-01")


@pytest.mark.parametrize("as_of", ["2025-01-01", "2025-06-15"])
def test_point_in_time_events_after_as_of_never_change_features(sim_tables, as_of):
    tables = {k: v for k, v in sim_tables.items() if k != "truth"}
    cut = T(as_of)
    partners = tables["partners"]
    scope = partners[partners["signed_at"] < cut]
    snaps = pd.DataFrame({"partner_id": scope["partner_id"], "as_of": cut})
    before = build_features(tables, snaps)
    # move every event at/after as_of further into the future, and add new future events
    mutated = {}
    for name, frame in tables.items():
        frame = frame.copy()
        for col in frame.columns:
            if pd.api.types.is_datetime64_any_dtype(frame[col]) and name != "partners":
                late = frame[col] >= cut
                frame.loc[late, col] = frame.loc[late, col] + pd.Timedelta(days=37)
        mutated[name] = frame
    extra = mutated["activities"].head(200).copy()
    extra["activity_id"] = "X" + extra["activity_id"]
    extra["occurred_at"] = cut
    mutated["activities"] = pd.concat([mutated["activities"], extra], ignore_index=True)
    # deals open at as_of that later close: turn them into wins closed exactly at as_of, with
    # a different amount (the classic leak: a win known only afterwards)
    deals = mutated["deals"]
    later = (deals["created_at"] < cut) & deals["closed_at"].ge(cut)
    assert later.any()
    deals.loc[later, "closed_at"] = cut
    deals.loc[later, "status"] = "won"
    after = build_features(mutated, snaps)
    pd.testing.assert_frame_equal(before, after)


def test_point_in_time_earlier_events_do_change_features(sim_tables):
    tables = {k: v for k, v in sim_tables.items() if k != "truth"}
    cut = T("2025-06-15")
    partners = tables["partners"]
    snaps = pd.DataFrame({"partner_id": partners["partner_id"], "as_of": cut})
    snaps = snaps[partners["signed_at"] < cut]
    before = build_features(tables, snaps)
    extra = tables["activities"].head(1).copy()
    extra["partner_id"] = snaps["partner_id"].iloc[0]
    extra["occurred_at"] = cut - pd.Timedelta(seconds=1)
    changed = dict(tables, activities=pd.concat([tables["activities"], extra], ignore_index=True))
    after = build_features(changed, snaps)
    assert (
        after["activities_touchpoints_30d"].iloc[0]
        == before["activities_touchpoints_30d"].iloc[0] + 1
    )


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


def test_build_cli_writes_outputs_and_manifest(raw_dir, tmp_path, capsys):
    out = tmp_path / "features"
    assert (
        main(
            [
                "build",
                "--raw",
                str(raw_dir),
                "--out",
                str(out),
                "--ages",
                "30,90",
                "--horizon",
                "120",
            ]
        )
        == 0
    )
    assert "training set:" in capsys.readouterr().out
    ts = pd.read_parquet(out / "training_set.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == len(ts)
    assert manifest["build_config"]["ages"] == [30, 90]
    assert manifest["build_config"]["horizon_days"] == 120
    assert set(manifest["input_fingerprints"]) >= {"partners", "deals"}
    assert manifest["feature_names"] == [s.name for s in feature_specs(manifest["tables"])]
    truth = pd.read_parquet(out / "truth.parquet")
    assert len(truth) == len(ts) and truth["true_expected_revenue"].notna().all()


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
