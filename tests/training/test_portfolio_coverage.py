"""Holdout portfolio intervals per tier / region, one onboarding age at a time."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.models.intervals import portfolio_interval
from partnerscore.training.train import portfolio_coverage


def twin(data: pd.DataFrame, level: float) -> set[tuple]:
    """Each (age, segment column, value) cell written out: (cell..., covered)."""
    out = set()
    for age in sorted(data["age_days"].unique()):
        at_age = data[data["age_days"] == age]
        for col in ("tier", "region"):
            for value in sorted(at_age[col].unique()):
                cell = at_age[at_age[col] == value]
                _, lo, hi = portfolio_interval(
                    cell["_mu"].to_numpy(), cell["_sd"].to_numpy(), level
                )
                actual = cell["label_revenue"].sum()
                out.add((float(age), col, str(value), len(cell), bool(lo <= actual <= hi)))
    return out


@settings(max_examples=40, deadline=None)
@given(
    partners=st.integers(1, 30),
    ages=st.lists(st.sampled_from([30.0, 60.0, 90.0, 180.0]), min_size=1, max_size=4, unique=True),
    seed=st.integers(0, 2**31),
    scale=st.sampled_from([1e-3, 1.0, 1e6]),
)
def test_each_age_is_summed_on_its_own(partners, ages, seed, scale):
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame(
        [
            {"partner_id": p, "age_days": a, "tier": f"t{p % 3}", "region": f"r{p % 2}"}
            for p in range(partners)
            for a in ages
        ]
    )
    n = len(rows)
    heavy = rng.lognormal(0.0, 2.0, n) * (rng.random(n) < 0.3)  # zero-inflated, heavy tail
    rows = rows.assign(
        label_revenue=heavy * scale,
        _mu=rng.lognormal(0.0, 1.0, n) * scale,
        _sd=rng.lognormal(0.5, 1.0, n) * scale,
    )
    got = portfolio_coverage(rows, 0.8)
    assert len(got) == len(twin(rows, 0.8))
    cells = {(r.age_days, r.segment, r.value, r.rows, bool(r.covered)) for r in got.itertuples()}
    assert cells == twin(rows, 0.8)
    # every holdout row counted once per segment column
    assert got.groupby("segment")["rows"].sum().to_dict() == {"region": n, "tier": n}


def test_without_ages_the_whole_holdout_is_one_cell():
    rows = pd.DataFrame(
        {
            "tier": ["a", "a", "b"],
            "region": ["x", "y", "y"],
            "label_revenue": [1.0, 0.0, 5.0],
            "_mu": [1.0, 1.0, 4.0],
            "_sd": [2.0, 2.0, 3.0],
        }
    )
    got = portfolio_coverage(rows, 0.8)
    assert got["age_days"].isna().all()
    assert sorted(zip(got["segment"], got["value"], got["rows"], strict=True)) == [
        ("region", "x", 1),
        ("region", "y", 2),
        ("tier", "a", 2),
        ("tier", "b", 1),
    ]
