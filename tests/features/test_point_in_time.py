"""Point-in-time correctness: features see only rows dated strictly before as_of.

Three kinds of proof:

- a slow, obviously-correct reference (``pit_reference.py``: filter each table to the partner's
  rows before as_of, one snapshot at a time, in plain pandas) must agree exactly with the
  vectorised builders on every feature and label (``test_pit_properties.py`` does the same on
  generated programs with hostile values);
- adding or altering events dated at or after as_of — in every source table — never changes a
  feature, while the same kind of change before as_of does;
- the classic leak (a deal open at as_of that closes as a win later) stays pipeline.
"""

import numpy as np
import pandas as pd
import pytest
from support import sibling

from partnerscore.features.config import BuildConfig
from partnerscore.features.pipeline import build_features, build_labels, make_snapshots
from partnerscore.features.registry import feature_specs

T = pd.Timestamp
DAY = pd.Timedelta(days=1)
AS_OF = T("2024-03-01")


def contract_tables(sim_tables):
    return {k: v for k, v in sim_tables.items() if k != "truth"}


# ---------------------------------------------------------------- reference implementation


ref = sibling(__file__, "pit_reference")
reference_features, reference_labels = ref.reference_features, ref.reference_labels


def sample_snapshots(tables, n_partners=40, seed=3):
    """Snapshots at onboarding ages plus as_of placed exactly on event timestamps."""
    rng = np.random.default_rng(seed)
    partners = tables["partners"]
    ids = rng.choice(partners["partner_id"].to_numpy(), n_partners, replace=False)
    snaps = make_snapshots(partners[partners["partner_id"].isin(ids)], (30, 90, 180, 400))
    exact = []
    for name, col in [
        ("deals", "closed_at"),
        ("deals", "created_at"),
        ("activities", "occurred_at"),
        ("trainings", "completed_at"),
        ("leads", "qualified_at"),
        ("marketing_commitments", "due_at"),
        ("portal_events", "occurred_at"),
        ("feedback", "submitted_at"),
    ]:
        frame = tables[name].dropna(subset=[col])
        frame = frame[frame["partner_id"].isin(ids)].sample(5, random_state=seed)
        exact.append(pd.DataFrame({"partner_id": frame["partner_id"], "as_of": frame[col]}))
    snaps = pd.concat([snaps[["partner_id", "as_of"]], *exact], ignore_index=True)
    return snaps.sort_values(["partner_id", "as_of"]).reset_index(drop=True)


def test_builders_match_a_row_by_row_reference(sim_tables):
    tables = contract_tables(sim_tables)
    snaps = sample_snapshots(tables)
    fast = build_features(tables, snaps)
    pairs = zip(snaps["partner_id"], snaps["as_of"], strict=True)
    slow = pd.DataFrame([reference_features(tables, pid, t) for pid, t in pairs])
    names = [s.name for s in feature_specs(tables)]
    assert list(slow.columns) == names
    for spec in feature_specs(tables):
        got, want = fast[spec.name], slow[spec.name]
        if spec.kind == "categorical":
            assert got.tolist() == want.tolist(), spec.name
        else:
            np.testing.assert_array_equal(
                got.to_numpy(float), want.to_numpy(float), err_msg=spec.name, strict=True
            )
    # the sample exercises what it claims to: every feature varies (the comparison is never
    # vacuous), features that are undefined and defined
    assert [s.name for s in feature_specs(tables) if fast[s.name].nunique() < 2] == []
    assert fast["deals_velocity_days_todate"].isna().any()
    assert fast["deals_velocity_days_todate"].notna().any()
    assert fast["activities_response_hours_median_todate"].notna().any()


def test_labels_match_a_row_by_row_reference(sim_tables):
    tables = contract_tables(sim_tables)
    snaps = sample_snapshots(tables)
    config = BuildConfig(horizon_days=150, engagement_period_days=30, engagement_min_share=0.4)
    fast = build_labels(tables, snaps, config)
    slow = [
        reference_labels(tables, pid, t, config)
        for pid, t in zip(snaps["partner_id"], snaps["as_of"], strict=True)
    ]
    np.testing.assert_array_equal(fast["label_revenue"], [r for r, _ in slow], strict=True)
    assert fast["label_engaged"].tolist() == [e for _, e in slow]
    assert (fast["label_revenue"] > 0).any() and fast["label_engaged"].nunique() == 2


# ------------------------------------------------------ invariance on a hand-built program


def program():
    """Two partners with a few rows in every table, around AS_OF = 2024-03-01."""
    partners = pd.DataFrame(
        {
            "partner_id": ["P1", "P2"],
            "partner_name": ["A", "B"],
            "signed_at": [T("2024-01-01"), T("2023-11-15")],
            "tier": ["gold", "silver"],
            "region": ["NA", "EMEA"],
            "industry": ["software", "retail"],
            "partner_type": ["reseller", "msp"],
            "market_alignment": [4.0, 2.0],
            "channel_reach": [10.0, 3.0],
            "product_adoption_potential": [3.0, 2.0],
        }
    )
    deals = pd.DataFrame(
        {
            "deal_id": ["D1", "D2", "D3", "D4"],
            "partner_id": ["P1", "P1", "P1", "P2"],
            "created_at": [T("2024-01-10"), T("2024-01-20"), T("2024-02-15"), T("2023-12-05")],
            "closed_at": [T("2024-02-01"), T("2024-03-20"), pd.NaT, T("2024-02-10")],
            "amount": [100.0, 250.0, 40.0, 1000.0],
            "status": ["won", "won", "open", "lost"],
        }
    )
    activities = pd.DataFrame(
        {
            "activity_id": ["A1", "A2", "A3", "A4", "A5"],
            "partner_id": ["P1", "P1", "P1", "P2", "P2"],
            "occurred_at": [
                T("2024-01-05"),
                T("2024-02-10"),
                T("2024-02-29 20:00"),
                T("2023-12-01"),
                T("2024-02-20"),
            ],
            "activity_type": ["meeting", "co_sell", "email", "call", "qbr"],
            "response_hours": [2.0, 5.0, 10.0, np.nan, 30.0],
        }
    )
    trainings = pd.DataFrame(
        {
            "partner_id": ["P1", "P1", "P2"],
            "course_id": ["C1", "C2", "C1"],
            "enrolled_at": [T("2024-01-03"), T("2024-02-01"), T("2023-11-20")],
            "completed_at": [T("2024-01-20"), T("2024-04-01"), pd.NaT],
            "is_certification": [False, True, False],
        }
    )
    portal = pd.DataFrame(
        {
            "partner_id": ["P1", "P1", "P2"],
            "occurred_at": [T("2024-01-02"), T("2024-02-25"), T("2023-12-24")],
            "event_type": ["login", "content_view", "login"],
        }
    )
    marketing = pd.DataFrame(
        {
            "commitment_id": ["M1", "M2", "M3"],
            "partner_id": ["P1", "P1", "P2"],
            "committed_at": [T("2024-01-15"), T("2024-02-01"), T("2023-12-01")],
            "due_at": [T("2024-02-15"), T("2024-04-01"), T("2024-01-15")],
            "delivered_at": [T("2024-02-10"), pd.NaT, T("2024-01-20")],
        }
    )
    leads = pd.DataFrame(
        {
            "lead_id": ["L1", "L2", "L3"],
            "partner_id": ["P1", "P1", "P2"],
            "created_at": [T("2024-01-12"), T("2024-02-05"), T("2023-12-10")],
            "qualified_at": [T("2024-01-20"), T("2024-03-05"), pd.NaT],
            "converted_at": [pd.NaT, pd.NaT, pd.NaT],
        }
    )
    feedback = pd.DataFrame(
        {
            "partner_id": ["P1", "P2"],
            "submitted_at": [T("2024-02-01"), T("2024-01-10")],
            "score": [4.0, 2.0],
        }
    )
    return {
        "partners": partners,
        "deals": deals,
        "activities": activities,
        "trainings": trainings,
        "portal_events": portal,
        "marketing_commitments": marketing,
        "leads": leads,
        "feedback": feedback,
    }


def snaps_at(as_of=AS_OF):
    return pd.DataFrame({"partner_id": ["P1", "P2"], "as_of": [as_of, as_of]})


def add_rows(tables, name, **row):
    out = dict(tables)
    out[name] = pd.concat([tables[name], pd.DataFrame([row])], ignore_index=True)
    return out


def set_value(tables, name, key_col, key, col, value):
    frame = tables[name].copy()
    frame.loc[frame[key_col] == key, col] = value
    return dict(tables, **{name: frame})


LATE = AS_OF + pd.Timedelta(days=3)

# each: (source, how to change the program at or after AS_OF)
FUTURE_CHANGES = {
    "activity exactly at as_of": lambda t: add_rows(
        t,
        "activities",
        activity_id="A9",
        partner_id="P1",
        occurred_at=AS_OF,
        activity_type="co_sell",
        response_hours=1.0,
    ),
    "activity after as_of": lambda t: add_rows(
        t,
        "activities",
        activity_id="A9",
        partner_id="P2",
        occurred_at=LATE,
        activity_type="meeting",
        response_hours=1.0,
    ),
    "response arriving after as_of": lambda t: set_value(
        t, "activities", "activity_id", "A3", "response_hours", 20.0
    ),
    "open deal closes as a win later": lambda t: set_value(
        set_value(t, "deals", "deal_id", "D3", "closed_at", LATE),
        "deals",
        "deal_id",
        "D3",
        "status",
        "won",
    ),
    "deal closing later is lost instead": lambda t: set_value(
        t, "deals", "deal_id", "D2", "status", "lost"
    ),
    "deal closing later closes at as_of": lambda t: set_value(
        t, "deals", "deal_id", "D2", "closed_at", AS_OF
    ),
    "deal created at as_of": lambda t: add_rows(
        t,
        "deals",
        deal_id="D9",
        partner_id="P2",
        created_at=AS_OF,
        closed_at=LATE,
        amount=5.0,
        status="won",
    ),
    "training completed later": lambda t: set_value(
        t, "trainings", "course_id", "C2", "completed_at", AS_OF
    ),
    "enrolment at as_of": lambda t: add_rows(
        t,
        "trainings",
        partner_id="P2",
        course_id="C7",
        enrolled_at=AS_OF,
        completed_at=LATE,
        is_certification=True,
    ),
    "portal events at and after as_of": lambda t: add_rows(
        add_rows(t, "portal_events", partner_id="P1", occurred_at=AS_OF, event_type="login"),
        "portal_events",
        partner_id="P2",
        occurred_at=LATE,
        event_type="login",
    ),
    "commitment delivered later": lambda t: set_value(
        t, "marketing_commitments", "commitment_id", "M2", "delivered_at", LATE
    ),
    "commitment made at as_of": lambda t: add_rows(
        t,
        "marketing_commitments",
        commitment_id="M9",
        partner_id="P2",
        committed_at=AS_OF,
        due_at=LATE,
        delivered_at=LATE,
    ),
    "lead qualified and converted later": lambda t: set_value(
        set_value(t, "leads", "lead_id", "L1", "converted_at", AS_OF),
        "leads",
        "lead_id",
        "L3",
        "qualified_at",
        LATE,
    ),
    "lead created at as_of": lambda t: add_rows(
        t,
        "leads",
        lead_id="L9",
        partner_id="P2",
        created_at=AS_OF,
        qualified_at=AS_OF,
        converted_at=LATE,
    ),
    "feedback at as_of": lambda t: add_rows(
        t, "feedback", partner_id="P1", submitted_at=AS_OF, score=1.0
    ),
}


@pytest.mark.parametrize("change", sorted(FUTURE_CHANGES))
def test_events_at_or_after_as_of_never_change_features(change):
    tables = program()
    before = build_features(tables, snaps_at())
    after = build_features(FUTURE_CHANGES[change](tables), snaps_at())
    pd.testing.assert_frame_equal(before, after)


EARLY = AS_OF - pd.Timedelta(seconds=1)

# each: (change just before AS_OF, a feature of P1 or P2 it must move)
PAST_CHANGES = {
    "activity": (
        lambda t: add_rows(
            t,
            "activities",
            activity_id="A9",
            partner_id="P2",
            occurred_at=EARLY,
            activity_type="co_sell",
            response_hours=np.nan,
        ),
        ("P2", "activities_collaborations_todate"),
    ),
    "response arriving just before as_of": (
        lambda t: set_value(t, "activities", "activity_id", "A3", "response_hours", 3.0),
        ("P1", "activities_response_hours_median_todate"),
    ),
    "deal closing just before as_of": (
        lambda t: set_value(t, "deals", "deal_id", "D2", "closed_at", EARLY),
        ("P1", "deals_won_amount_todate"),
    ),
    "training completed": (
        lambda t: set_value(t, "trainings", "course_id", "C2", "completed_at", EARLY),
        ("P1", "trainings_certifications_todate"),
    ),
    "portal event": (
        lambda t: add_rows(
            t, "portal_events", partner_id="P2", occurred_at=EARLY, event_type="login"
        ),
        ("P2", "portal_events_30d"),
    ),
    "commitment delivered late": (
        lambda t: set_value(
            t, "marketing_commitments", "commitment_id", "M1", "delivered_at", T("2024-02-20")
        ),
        ("P1", "marketing_adherence_rate_todate"),
    ),
    "lead converted": (
        lambda t: set_value(t, "leads", "lead_id", "L1", "converted_at", EARLY),
        ("P1", "leads_conversion_rate_todate"),
    ),
    "feedback": (
        lambda t: add_rows(t, "feedback", partner_id="P1", submitted_at=EARLY, score=1.0),
        ("P1", "feedback_score_mean_todate"),
    ),
}


@pytest.mark.parametrize("change", sorted(PAST_CHANGES))
def test_events_just_before_as_of_do_change_features(change):
    mutate, (partner, feature) = PAST_CHANGES[change]
    tables = program()
    before = build_features(tables, snaps_at()).set_index("partner_id")
    after = build_features(mutate(tables), snaps_at()).set_index("partner_id")
    assert after.loc[partner, feature] != before.loc[partner, feature]
    other = "P2" if partner == "P1" else "P1"
    pd.testing.assert_series_equal(after.loc[other], before.loc[other])


def test_hand_built_values_at_as_of():
    f = build_features(program(), snaps_at()).set_index("partner_id")
    p1, p2 = f.loc["P1"], f.loc["P2"]
    # D2 is still open at as_of (closes 03-20): pipeline, not revenue
    assert p1["deals_won_todate"] == 1 and p1["deals_won_amount_todate"] == 100
    assert p1["deals_open_pipeline_amount"] == 290
    assert p1["deals_velocity_days_todate"] == 22
    assert p1["deals_days_to_first"] == 9 and p1["deals_has_won_todate"] == 1
    # A3's response arrives 03-01 06:00, after as_of: median of 2 and 5 only
    assert p1["activities_response_hours_median_todate"] == 3.5
    assert p1["trainings_completion_rate_todate"] == 0.5
    assert np.isnan(p1["trainings_days_to_first_certification"])
    assert p1["leads_qualified_todate"] == 1 and p1["marketing_adherence_rate_todate"] == 1.0
    assert p2["deals_win_rate_todate"] == 0 and p2["deals_has_won_todate"] == 0
    assert p2["marketing_adherence_rate_todate"] == 0.0
    assert p2["activities_response_hours_median_todate"] == 30


def test_hand_built_event_history_values_at_as_of():
    f = build_features(program(), snaps_at()).set_index("partner_id")
    p1, p2 = f.loc["P1"], f.loc["P2"]
    # P1 (signed 01-01, age 60 days) won D1 (100) on 02-01; D2 closes after as_of
    assert p1["deals_days_since_last_won"] == 29
    assert p1["deals_won_30d"] == 1 and p1["deals_won_amount_30d"] == 100
    assert p1["deals_won_90d"] == 1 and p1["deals_won_amount_90d"] == 100
    assert p1["deals_first_won_amount"] == 100
    assert np.isnan(p1["deals_won_gap_median_days_todate"])  # one win: no gap yet
    # window min(90, 60) = 60 days: halves [01-01, 01-31) and [01-31, 03-01): all won recently
    assert p1["deals_won_amount_trend_90d"] == 1.0
    # deals created 01-10, 01-20 (period 0) and 02-15 (period 1) of 2 elapsed periods
    assert p1["deals_active_periods_share_todate"] == 1.0 and p1["deals_created_90d"] == 3
    # activities 01-05, 02-10, 02-29 20:00: gaps average (55 days 20 h) / 2
    assert p1["activities_gap_mean_days_todate"] == pytest.approx((55 + 20 / 24) / 2)
    assert (
        p1["activities_touchpoints_90d"] == 3 and p1["activities_active_periods_share_todate"] == 1
    )
    # halves [01-01, 01-31) and [01-31, 03-01) hold 1 and 2 activities: (2 - 1) / (2 + 1)
    assert p1["activities_touchpoints_trend_90d"] == pytest.approx(1 / 3)
    assert p1["portal_events_days_since_last"] == 5 and p1["portal_events_90d"] == 2
    assert p1["trainings_completed_90d"] == 1 and p1["trainings_days_since_last_completion"] == 41
    assert p1["marketing_commitments_days_since_last"] == 29
    assert p1["leads_days_since_last"] == 25 and p1["leads_created_90d"] == 2
    assert p1["feedback_score_last_todate"] == 4 and p1["feedback_days_since_last"] == 29
    # P2 (signed 2023-11-15, age 107 days) lost its only deal: no won history at all
    assert np.isnan(p2["deals_days_since_last_won"]) and p2["deals_won_amount_90d"] == 0
    assert np.isnan(p2["deals_won_amount_trend_90d"]) and np.isnan(p2["deals_first_won_amount"])
    # P2's activities 12-01 (period 0) and 02-20 (period 3) of 4 elapsed periods
    assert p2["activities_active_periods_share_todate"] == 2 / 4


# ------------------------------------------------------------ invariance on the simulation


@pytest.mark.parametrize("as_of", ["2025-01-01", "2025-06-15"])
def test_simulated_future_never_changes_features(sim_tables, as_of):
    tables = contract_tables(sim_tables)
    cut = T(as_of)
    partners = tables["partners"]
    scope = partners[partners["signed_at"] < cut]
    snaps = pd.DataFrame({"partner_id": scope["partner_id"], "as_of": cut})
    before = build_features(tables, snaps)
    # move every event at/after as_of further into the future, and add new events at as_of
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
    # deals open at as_of that later close: turn them into wins closed exactly at as_of (the
    # classic leak: a win known only afterwards)
    deals = mutated["deals"]
    later = (deals["created_at"] < cut) & deals["closed_at"].ge(cut)
    assert later.any()
    deals.loc[later, "closed_at"] = cut
    deals.loc[later, "status"] = "won"
    after = build_features(mutated, snaps)
    pd.testing.assert_frame_equal(before, after)
    # ... and the same mutation does move features one second later
    moved = build_features(mutated, snaps.assign(as_of=cut + pd.Timedelta(seconds=1)))
    assert (moved["deals_won_todate"] > before["deals_won_todate"]).any()
    assert (moved["activities_touchpoints_30d"] > before["activities_touchpoints_30d"]).any()


def test_dates_far_from_the_epoch_keep_their_order():
    tables = program()
    partners = tables["partners"].copy()
    partners.loc[partners["partner_id"] == "P2", "signed_at"] = T("1965-01-01")
    old = pd.DataFrame(
        {
            "activity_id": ["O1", "O2", "F1"],
            "partner_id": ["P2", "P2", "P1"],
            "occurred_at": [T("1965-02-01"), T("1966-01-01"), T("2200-01-01")],
            "activity_type": ["meeting", "meeting", "meeting"],
            "response_hours": [1.0, 3.0, 1.0],
        }
    )
    tables = dict(
        tables,
        partners=partners,
        activities=pd.concat([tables["activities"], old], ignore_index=True),
    )
    snaps = pd.DataFrame({"partner_id": ["P1", "P2"], "as_of": [AS_OF, T("1965-12-01")]})
    f = build_features(tables, snaps).set_index("partner_id")
    assert f.loc["P2", "activities_touchpoints_per30d_todate"] > 0
    assert f.loc["P2", "activities_days_to_first"] == 31
    assert f.loc["P2", "activities_response_hours_median_todate"] == 1.0
    assert f.loc["P2", "activities_days_since_last"] == 303
    # P1's activity in 2200 neither counts nor disturbs its partner's timeline
    assert f.loc["P1", "activities_days_since_last"] == pytest.approx(4 / 24)
    assert f.loc["P1", "activities_touchpoints_per30d_todate"] == 3 / 60 * 30


def test_a_huge_amount_moves_only_its_own_partner():
    """Issue #9: one 1e308 deal used to cancel every later partner's running sums."""
    tables = program()
    base = build_features(tables, snaps_at()).set_index("partner_id")
    huge = set_value(tables, "deals", "deal_id", "D1", "amount", 1e308)
    f = build_features(huge, snaps_at()).set_index("partner_id")
    assert f.loc["P1", "deals_won_amount_todate"] == 1e308
    assert f.loc["P1", "deals_open_pipeline_amount"] == 290  # D1 is closed: not in the pipeline
    pd.testing.assert_series_equal(f.loc["P2"], base.loc["P2"])
    labels = build_labels(huge, snaps_at(T("2024-01-15")), BuildConfig(horizon_days=30))
    assert labels.set_index("partner_id").loc["P1", "label_revenue"] == 1e308


def test_far_future_dates_never_reach_another_partner():
    """Issue #9: a deal dated after 2106 was read as the next partner's past win."""
    tables = program()
    deals = tables["deals"].copy()
    deals["created_at"] = deals["created_at"].astype("datetime64[us]")
    deals["closed_at"] = deals["closed_at"].astype("datetime64[us]")
    far = pd.DataFrame(
        {
            "deal_id": ["F1", "F2"],
            "partner_id": ["P1", "P1"],
            "created_at": [T("2106-03-01"), T("9999-12-29")],
            "closed_at": [T("2106-03-02"), T("9999-12-30")],
            "amount": [7.0, 9.0],
            "status": ["won", "won"],
        }
    ).astype({"created_at": "datetime64[us]", "closed_at": "datetime64[us]"})
    grown = dict(tables, deals=pd.concat([deals, far], ignore_index=True))
    base = build_features(tables, snaps_at()).set_index("partner_id")
    f = build_features(grown, snaps_at()).set_index("partner_id")
    pd.testing.assert_frame_equal(f, base)
    # ... and they count for their own partner once as_of is past them
    late = pd.DataFrame({"partner_id": ["P1", "P2"], "as_of": [T("9999-12-31")] * 2})
    f = build_features(grown, late.astype({"as_of": "datetime64[us]"})).set_index("partner_id")
    assert f.loc["P1", "deals_won_todate"] == 4 and f.loc["P2", "deals_won_todate"] == 0
    assert f.loc["P1", "deals_days_since_last_won"] == 1
