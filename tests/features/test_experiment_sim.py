"""The effect injector: only treated partners change, only after assignment, truth is exact."""

import json

import numpy as np
import pandas as pd
import pytest

from partnerscore.features.core import PartnerscoreError
from partnerscore.features.experiment_sim import (
    EXTRA_ACTIVITY,
    TRUTH_COLUMNS,
    inject_effect,
    run_inject_effect,
    simulated_assignment,
)
from partnerscore.features.experiments import ASSIGNMENT_COLUMNS

ASSIGNED = pd.Timestamp("2025-10-01")
END = pd.Timestamp("2026-07-01")
HORIZON = 180


@pytest.fixture(scope="module")
def injected(sim_tables):
    tables = {k: v for k, v in sim_tables.items() if k != "truth"}
    assignment = simulated_assignment(tables["partners"], "onb", ASSIGNED, 0.5, seed=3)
    return tables, inject_effect(tables, assignment, 0.25, 1.5, HORIZON, seed=3, data_end=END)


def _won_in_window(deals: pd.DataFrame, start: pd.Series, days: int) -> pd.Series:
    """Slow twin of the revenue label: plain pandas over every deal."""
    merged = deals.merge(start.rename("start"), left_on="partner_id", right_index=True)
    closed = pd.to_datetime(merged["closed_at"])
    inside = (
        (merged["status"] == "won")
        & (closed >= merged["start"])
        & (closed < merged["start"] + pd.Timedelta(days=days))
    )
    return merged[inside].groupby("partner_id")["amount"].sum()


def test_only_treated_partners_change_and_only_after_assignment(injected):
    tables, result = injected
    treated = set(result.truth.loc[result.truth["treated"], "partner_id"])
    before, after = tables["deals"], result.tables["deals"]
    assert before["deal_id"].tolist() == after["deal_id"].tolist()
    changed = before["amount"].to_numpy() != after["amount"].to_numpy()
    assert changed.any()
    moved = before[changed]
    assert set(moved["partner_id"]) <= treated
    assert (moved["status"] == "won").all()
    assert (pd.to_datetime(moved["closed_at"]) >= ASSIGNED).all()
    ratio = after.loc[changed, "amount"].to_numpy() / moved["amount"].to_numpy()
    assert np.allclose(ratio, 1.25, rtol=1e-3)
    # extra meetings: only for treated partners, after assignment, before the data end
    extra = result.tables["activities"].merge(tables["activities"], how="left", indicator=True)
    extra = extra[extra["_merge"] == "left_only"]
    assert len(extra) > 0 and set(extra["partner_id"]) <= treated
    assert (extra["activity_type"] == EXTRA_ACTIVITY).all()
    assert extra["occurred_at"].between(ASSIGNED, END, inclusive="left").all()
    assert extra["activity_id"].is_unique
    assert result.tables["activities"]["activity_id"].is_unique


def test_truth_matches_a_plain_recount(injected):
    tables, result = injected
    truth = result.truth.set_index("partner_id")
    start = pd.to_datetime(truth["assigned_at"])
    y0 = _won_in_window(tables["deals"], start, HORIZON).reindex(truth.index, fill_value=0.0)
    assert np.allclose(truth["revenue_y0"], y0, atol=0.01)
    # observed revenue: Y(1) for treated, Y(0) for control
    observed = _won_in_window(result.tables["deals"], start, HORIZON)
    observed = observed.reindex(truth.index, fill_value=0.0)
    expect = np.where(truth["treated"], truth["revenue_y1"], truth["revenue_y0"])
    assert np.allclose(observed, expect, atol=0.01)
    # potential outcomes: a 25% uplift on the window's won revenue, for everyone
    assert np.allclose(truth["revenue_y1"], truth["revenue_y0"] * 1.25, rtol=1e-3, atol=0.05)
    assert (truth["engaged_y1"] >= truth["engaged_y0"]).all()
    summary = result.summary
    assert summary["true_effect"]["revenue"] == pytest.approx(
        (truth["revenue_y1"] - truth["revenue_y0"]).mean()
    )
    assert summary["true_effect"]["engaged"] > 0


def test_no_effect_changes_nothing(sim_tables):
    tables = {k: v for k, v in sim_tables.items() if k != "truth"}
    assignment = simulated_assignment(tables["partners"], "null", ASSIGNED, 0.5, seed=1)
    result = inject_effect(tables, assignment, 0.0, 0.0, HORIZON, seed=1, data_end=END)
    pd.testing.assert_frame_equal(result.tables["deals"], tables["deals"])
    assert len(result.tables["activities"]) == len(tables["activities"])
    assert result.summary["true_effect"] == {"revenue": 0.0, "engaged": 0.0}


def test_assignment_is_stratified_by_tier_and_reproducible(sim_tables):
    partners = sim_tables["partners"]
    a = simulated_assignment(partners, "x", ASSIGNED, 0.3, seed=9)
    b = simulated_assignment(partners, "x", ASSIGNED, 0.3, seed=9)
    pd.testing.assert_frame_equal(a, b)
    assert (
        pd.to_datetime(partners.set_index("partner_id").loc[a["partner_id"], "signed_at"])
        < ASSIGNED
    ).all()
    for _, group in a.groupby("stratum"):
        treated = (group["arm"] == "treatment").sum()
        assert abs(treated - 0.3 * len(group)) < 1
    assert set(a.loc[a["arm"] == "treatment", "target_share"]) == {0.3}


def test_bad_effects_are_one_line_errors(sim_tables):
    tables = {k: v for k, v in sim_tables.items() if k != "truth"}
    assignment = simulated_assignment(tables["partners"], "e", ASSIGNED, 0.5, seed=1)
    with pytest.raises(PartnerscoreError, match="--effect-revenue: must be greater than -1"):
        inject_effect(tables, assignment, -1.0, 0.0)
    with pytest.raises(PartnerscoreError, match="--effect-engagement"):
        inject_effect(tables, assignment, 0.1, -2.0)
    with pytest.raises(PartnerscoreError, match="no partner signed before it"):
        simulated_assignment(tables["partners"], "e", pd.Timestamp("2000-01-01"), 0.5, seed=1)


def test_run_inject_effect_writes_tables_and_truth(sim_tables, tmp_path):
    from partnerscore.features.simulate import write_tables
    from partnerscore.features.validate import load_raw

    write_tables(sim_tables, tmp_path, fmt="parquet")
    result = run_inject_effect(tmp_path, "onb", 0.5, 1.0, 0.5, ASSIGNED, seed=2, horizon_days=90)
    assert {p.name for p in result.files.values()} == {
        "experiment_assignment.csv",
        "experiment_truth.csv",
        "experiment_truth.json",
    }
    truth = pd.read_csv(tmp_path / "experiment_truth.csv")
    assert tuple(truth.columns) == TRUTH_COLUMNS
    assignment = pd.read_csv(tmp_path / "experiment_assignment.csv")
    assert tuple(assignment.columns) == tuple(ASSIGNMENT_COLUMNS)
    summary = json.loads((tmp_path / "experiment_truth.json").read_text())
    assert summary["horizon_days"] == 90 and summary["true_effect"]["revenue"] > 0
    raw = load_raw(tmp_path, write_quarantine=False)  # still a valid program
    assert sum(t.quarantined for t in raw.report.tables.values()) == 0
    assert not (tmp_path / "deals.csv").exists()  # written back in the folder's format
    assert "onb" in result.text()
