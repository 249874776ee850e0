"""Stratified randomisation and the assignment-table contract."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.features.core import PartnerscoreError
from partnerscore.features.experiments import (
    arm_shares,
    assign_arms,
    assignment_schema,
    parse_arms,
    stratum_keys,
)

IDS = [f"P{i:04d}" for i in range(300)]
STRATA = np.array(["gold", "silver", "registered"], dtype=object)[np.arange(300) % 3]
ARMS = ("control", "treatment")


def test_same_seed_same_assignment_whatever_the_row_order():
    first = assign_arms(IDS, STRATA, ARMS, 0.5, seed=4, salt="x")
    order = np.random.default_rng(0).permutation(len(IDS))
    shuffled = assign_arms(np.array(IDS)[order], STRATA[order], ARMS, 0.5, seed=4, salt="x")
    again = dict(zip(np.array(IDS)[order], shuffled, strict=True))
    assert [again[i] for i in IDS] == list(first)
    assert list(assign_arms(IDS, STRATA, ARMS, 0.5, seed=5, salt="x")) != list(first)
    # the experiment name salts the seed: two experiments are randomised independently
    assert list(assign_arms(IDS, STRATA, ARMS, 0.5, seed=4, salt="y")) != list(first)


def test_adding_a_stratum_leaves_the_others_alone():
    base = assign_arms(IDS, STRATA, ARMS, 0.5, seed=1)
    more_ids = [*IDS, "Q1", "Q2", "Q3"]
    more = assign_arms(more_ids, [*STRATA, "new", "new", "new"], ARMS, 0.5, seed=1)
    assert list(more[: len(IDS)]) == list(base)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**31),
    n_treated_arms=st.integers(1, 3),
)
def test_every_stratum_is_split_within_one_partner_of_its_design(
    sizes, fraction, seed, n_treated_arms
):
    ids, strata = [], []
    for s, n in enumerate(sizes):
        ids += [f"S{s}-{i}" for i in range(n)]
        strata += [f"s{s}"] * n
    arms = ("control", *[f"t{k}" for k in range(n_treated_arms)])
    out = assign_arms(ids, strata, arms, fraction, seed)
    frame = pd.DataFrame({"stratum": strata, "arm": out})
    assert set(out) <= set(arms)
    for _, group in frame.groupby("stratum"):
        treated = (group["arm"] != "control").sum()
        assert abs(treated - len(group) * fraction) < 1
        per_arm = group.loc[group["arm"] != "control", "arm"].value_counts()
        if len(per_arm) > 1:
            assert per_arm.max() - per_arm.min() <= 1


def test_each_partner_is_treated_with_the_design_probability():
    # randomised rounding: over many seeds a partner of a 3-partner stratum is treated ~30%
    hits = np.mean(
        [
            assign_arms(["a", "b", "c"], ["s"] * 3, ARMS, 0.3, seed=s)[0] != "control"
            for s in range(1000)
        ]
    )
    assert abs(hits - 0.3) < 0.05  # 3.4 binomial sd


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_fraction_out_of_range_is_a_one_line_error(fraction):
    with pytest.raises(PartnerscoreError, match="--fraction: expected a share between 0 and 1"):
        arm_shares(ARMS, fraction)


def test_arm_shares_split_the_treated_fraction():
    assert arm_shares(("c", "a", "b"), 0.6) == pytest.approx({"c": 0.4, "a": 0.3, "b": 0.3})


@pytest.mark.parametrize("text", ["control", "control,control", ",", "a,,a"])
def test_bad_arms_are_rejected(text):
    with pytest.raises(PartnerscoreError, match="--arms"):
        parse_arms(text)


def test_stratum_keys_join_columns_and_name_a_missing_one():
    frame = pd.DataFrame({"tier": ["gold", "silver"], "quadrant": ["star", None]})
    assert list(stratum_keys(frame, ("tier", "quadrant"))) == ["gold|star", "silver|"]
    assert list(stratum_keys(frame, ())) == ["all", "all"]
    with pytest.raises(PartnerscoreError, match=r"scores.csv: missing column 'region'"):
        stratum_keys(frame, ("tier", "region"), source="scores.csv")


def test_assignment_schema_rejects_duplicates_and_bad_shares():
    good = pd.DataFrame(
        {
            "experiment": ["e", "e"],
            "partner_id": ["a", "b"],
            "arm": ["control", "treatment"],
            "stratum": ["all", "all"],
            "assigned_at": pd.to_datetime(["2026-01-01", "2026-01-01"]),
            "target_share": [0.5, 0.5],
            "seed": [1, 1],
        }
    )
    assignment_schema().validate(good)
    import pandera.pandas as pa

    with pytest.raises(pa.errors.SchemaError):
        assignment_schema().validate(good.assign(partner_id=["a", "a"]))
    with pytest.raises(pa.errors.SchemaError):
        assignment_schema().validate(good.assign(target_share=[0.5, 1.5]))
