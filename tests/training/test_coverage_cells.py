"""Holdout coverage cells computed at once (``coverage_cells``) against a cell-by-cell reading.

The twins below are the code the training run used until 2026-12-07: one
:func:`portfolio_interval` per segment value, per onboarding age and per phase (72 interval
searches for a 6-phase, 4-age holdout, ~0.9 s of every training run). Hypothesis compares them
with :func:`segment_coverage`, :func:`portfolio_coverage` and :func:`phase_coverage` on random
holdouts: tiny and huge amounts, zeros, missing and categorical segments, one row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.models.intervals import portfolio_interval, segment_coverage
from partnerscore.models.phasing import RevenuePhasing
from partnerscore.training.train import phase_coverage, portfolio_coverage

PHASE_PREFIX = "label_revenue_phase_"


def twin_segment(frame, y, mu, sd, by, level, level_cv=0.0) -> pd.DataFrame:
    rows = []
    for value, part in frame.groupby(by, observed=True, dropna=False):
        total, lo, hi = portfolio_interval(part[mu], part[sd], level, level_cv=level_cv)
        actual = float(part[y].sum())
        rows.append(
            {
                "segment": by,
                "value": str(value),
                "rows": len(part),
                "actual": actual,
                "expected": total,
                "lo": lo,
                "hi": hi,
                "covered": lo <= actual <= hi,
            }
        )
    return pd.DataFrame(rows)


def twin_portfolio(data, level, level_cv=0.0) -> pd.DataFrame:
    ages = (
        [(float(a), part) for a, part in data.groupby("age_days", sort=True)]
        if "age_days" in data
        else [(float("nan"), data)]
    )
    parts = [
        twin_segment(part, "label_revenue", "_mu", "_sd", seg, level, level_cv).assign(age_days=age)
        for age, part in ages
        for seg in ("tier", "region")
        if seg in part
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def twin_phases(holdout, pred, sd, phasing, level, level_cv=0.0) -> pd.DataFrame:
    """The per-cell loop of ``phase_coverage`` (without the share gap's s.e.); until
    2026-12-07 it raised KeyError on a missing tier (``astype(str)`` keeps it missing), which
    the contract keeps out of training sets."""
    ages = holdout["age_days"].to_numpy(float) if "age_days" in holdout else None
    shares = phasing.shares(ages, len(holdout))
    by_age = "age_days" if "age_days" in holdout else None
    parts = []
    for k in range(phasing.n_phases):
        data = holdout.assign(
            _y=holdout[f"{PHASE_PREFIX}{k + 1}"].to_numpy(float),
            _mu=pred * shares[:, k],
            _sd=sd * np.sqrt(shares[:, k]),
            _pred=pred,
            all="all",
        )
        groups = data.groupby(by_age, sort=True) if by_age else [(float("nan"), data)]
        for age, part in groups:
            for seg in ("all", "tier", "region"):
                if seg not in part:
                    continue
                cells = twin_segment(part, "_y", "_mu", "_sd", seg, level, level_cv)
                sums = part.groupby(seg, observed=True, dropna=False)[
                    ["_mu", "_pred", "_y", "label_revenue"]
                ].sum()
                sums.index = [str(v) for v in sums.index]  # a missing tier: "nan", as the value
                sums = sums.loc[cells["value"]]
                with np.errstate(invalid="ignore", divide="ignore"):
                    cells["expected_share"] = (sums["_mu"] / sums["_pred"]).to_numpy()
                    cells["realised_share"] = (sums["_y"] / sums["label_revenue"]).to_numpy()
                parts.append(cells.assign(age_days=float(age), phase=k + 1))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def assert_same_cells(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same cells in the same order; totals to 1e-12, bounds to 1e-9 (one interval search
    over all cells at once brackets each quantile as the search of one cell does, to ~1e-11);
    ``covered`` equal unless the realised total sits within that tolerance of a bound."""
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    if want.empty:
        return
    text = [c for c in ("segment", "value") if c in want]
    assert got[text].equals(want[text])
    assert got["rows"].tolist() == want["rows"].tolist()
    for col in want.columns.difference([*text, "rows", "covered"]):
        np.testing.assert_allclose(
            got[col].to_numpy(float), want[col].to_numpy(float), rtol=1e-9, atol=0, err_msg=col
        )
    actual = want["actual"].to_numpy(float)
    edge = np.isclose(actual, want["lo"].to_numpy(float), rtol=1e-9, atol=0) | np.isclose(
        actual, want["hi"].to_numpy(float), rtol=1e-9, atol=0
    )
    # both bounds equal a sum without spread (sd 0): exactly inside either way
    assert (got["covered"].to_numpy(bool) == want["covered"].to_numpy(bool))[~edge].all()


amounts = st.sampled_from([0.0, 1e-300, 1e-3, 1.0, 250.0, 1e6, 1e12, 1e150])


@st.composite
def holdouts(draw, phases: int = 0):
    n = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    scale = draw(amounts)
    zero_share = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))
    tiers = np.array(["platinum", "gold", "silver", "registered", None], dtype=object)
    frame = pd.DataFrame(
        {
            "partner_id": [f"P{i % max(1, n // 2)}" for i in range(n)],
            "tier": tiers[rng.integers(0, 5 if draw(st.booleans()) else 4, n)],
            "region": rng.choice(["NA", "EMEA", "APAC"], n),
        }
    )
    if draw(st.booleans()):
        frame["tier"] = frame["tier"].astype("category")
    if draw(st.booleans()):
        frame["age_days"] = rng.choice([30.0, 60.0, 90.0, 180.0], n)
    heavy = rng.lognormal(0.0, 2.0, n) * (rng.random(n) >= zero_share) * scale
    frame["label_revenue"] = heavy
    mu = rng.lognormal(0.0, 1.0, n) * scale * (rng.random(n) >= zero_share / 2)
    sd = rng.lognormal(0.5, 1.0, n) * scale * (rng.random(n) >= 0.1)
    if phases:
        split = rng.dirichlet(np.ones(phases), n)
        for k in range(phases):
            frame[f"{PHASE_PREFIX}{k + 1}"] = heavy * split[:, k]
    return frame, mu, sd


@settings(max_examples=60, deadline=None)
@given(
    case=holdouts(),
    level=st.sampled_from([0.5, 0.8, 0.95]),
    level_cv=st.sampled_from([0.0, 0.1]),
    by=st.sampled_from(["tier", "region"]),
)
def test_segment_coverage_equals_one_interval_per_value(case, level, level_cv, by):
    frame, mu, sd = case
    frame = frame.assign(_mu=mu, _sd=sd)
    got = segment_coverage(frame, "label_revenue", "_mu", "_sd", by, level, level_cv=level_cv)
    assert_same_cells(got, twin_segment(frame, "label_revenue", "_mu", "_sd", by, level, level_cv))


@settings(max_examples=60, deadline=None)
@given(case=holdouts(), level=st.sampled_from([0.5, 0.8]), level_cv=st.sampled_from([0.0, 0.1]))
def test_portfolio_coverage_equals_one_interval_per_age_and_value(case, level, level_cv):
    frame, mu, sd = case
    frame = frame.assign(_mu=mu, _sd=sd)
    got = portfolio_coverage(frame, level, level_cv)
    assert_same_cells(got, twin_portfolio(frame, level, level_cv))


@settings(max_examples=60, deadline=None)
@given(
    phases=st.integers(1, 6),
    data=st.data(),
    level=st.sampled_from([0.5, 0.8]),
    level_cv=st.sampled_from([0.0, 0.1]),
    own_ages=st.booleans(),
)
def test_phase_coverage_equals_one_interval_per_phase_age_and_value(
    phases, data, level, level_cv, own_ages
):
    frame, mu, sd = data.draw(holdouts(phases))
    pooled = list(np.full(phases, 1 / phases))
    if own_ages and "age_days" in frame:
        ages = [30.0, 90.0]
        by_age = [list(np.random.default_rng(int(a)).dirichlet(np.ones(phases))) for a in ages]
    else:
        ages, by_age = [], []
    phasing = RevenuePhasing(30, 30 * phases, pooled, ages, by_age)
    got = phase_coverage(frame, mu, sd, phasing, level, level_cv)
    want = twin_phases(frame, mu, sd, phasing, level, level_cv)
    assert "share_gap_se" in got
    assert_same_cells(got.drop(columns="share_gap_se"), want)
    # the whole ages' rows carry the share gap's s.e., the tier and region rows none
    assert got.loc[got["segment"] != "all", "share_gap_se"].isna().all()


def test_an_empty_holdout_has_no_cells():
    frame = pd.DataFrame(
        {"tier": pd.Series([], dtype=object), "label_revenue": [], "_mu": [], "_sd": []}
    )
    assert segment_coverage(frame, "label_revenue", "_mu", "_sd", "tier", 0.8).empty
    assert portfolio_coverage(frame.assign(region="x").iloc[:0], 0.8).empty


@pytest.mark.parametrize("level_cv", [0.0, 0.2])
def test_a_segment_without_spread_is_its_expected_total(level_cv):
    frame = pd.DataFrame(
        {"tier": ["a", "a", "b"], "y": [1.0, 2.0, 0.0], "mu": [1.0, 2.0, 0.0], "sd": 0.0}
    )
    got = segment_coverage(frame, "y", "mu", "sd", "tier", 0.8, level_cv=level_cv)
    a = got.set_index("value").loc["a"]
    if level_cv == 0.0:  # no spread at all: the interval is the point, and 3 is inside it
        assert (a["lo"], a["hi"], bool(a["covered"])) == (3.0, 3.0, True)
    else:
        assert a["lo"] < 3.0 < a["hi"]
    b = got.set_index("value").loc["b"]
    assert (b["expected"], b["lo"], b["hi"], bool(b["covered"])) == (0.0, 0.0, 0.0, True)
