import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from partnerscore.features.core import PartnerscoreError
from partnerscore.models import policy
from partnerscore.models.config import PolicyConfig

REF = {
    "revenue_quantiles": list(np.linspace(0, 1000, 101)),
    "engagement_quantiles": list(np.linspace(0, 1, 101)),
}


def test_percentile_of_reference():
    q = REF["revenue_quantiles"]
    np.testing.assert_allclose(
        policy.percentile_of([0, 500, 1000, 5000, -3, 255], q), [0, 0.5, 1, 1, 0, 0.255]
    )
    tied = [0.0] * 50 + list(np.linspace(0, 1, 51))
    assert policy.percentile_of([0.0], tied)[0] == pytest.approx(
        0.25
    )  # middle of the tied run 0..50


def percentile_reference(value: float, quantiles: list[float]) -> float:
    """The slow twin of ``percentile_of`` for one value: the definition, case by case."""
    if math.isnan(value):
        return math.nan
    steps = len(quantiles) - 1
    tied = [i for i, q in enumerate(quantiles) if q == value]
    if tied:  # quantiles are sorted: a tied run is contiguous
        return (tied[0] + tied[-1]) / 2 / steps
    if value < quantiles[0]:
        return 0.0
    if value > quantiles[-1]:
        return 1.0
    for i in range(steps):
        lo, hi = quantiles[i], quantiles[i + 1]
        if lo < value < hi:
            return (i + (value - lo) / (hi - lo)) / steps
    raise AssertionError("unreachable")


# few distinct values: ties and runs of equal quantiles are common
quantile_values = st.sampled_from([-1e12, -1.0, 0.0, 0.5, 1.0, 2.5, 1e12]) | st.floats(-1e12, 1e12)


@settings(max_examples=150, deadline=None)
@given(
    quantiles=st.lists(quantile_values, min_size=2, max_size=12).map(sorted),
    values=st.lists(quantile_values | st.sampled_from([math.nan, math.inf, -math.inf]), max_size=8),
)
@example(quantiles=[0.0, 1.0], values=[math.nan])  # was 1.0: the top of the distribution
def test_percentile_of_equals_the_case_by_case_definition(quantiles, values):
    fast = policy.percentile_of(values, quantiles)
    slow = [percentile_reference(v, quantiles) for v in values]
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-15)


def test_a_missing_prediction_has_no_percentile_and_no_score():
    """NaN was placed above every quantile: a missing prediction scored 100 (never reached in
    production, where the heads always predict; kept NaN so it cannot pass as a top partner)."""
    q = REF["revenue_quantiles"]
    assert np.isnan(policy.percentile_of([np.nan], q)).all()
    score, rev, eng = policy.composite_score(
        np.array([np.nan, 500.0]), np.array([0.5, np.nan]), REF, PolicyConfig()
    )
    assert np.isnan(score).all() and np.isnan(rev[0]) and np.isnan(eng[1])
    assert rev[1] == pytest.approx(100 * PolicyConfig().revenue_weight * 0.5)


def test_composite_score_is_stable_across_batches():
    cfg = PolicyConfig(revenue_weight=0.75)
    rev, eng = np.array([1000.0, 0.0, 500.0, 250.0]), np.array([1.0, 0.0, 0.5, 0.9])
    score, r, e = policy.composite_score(rev, eng, REF, cfg)
    np.testing.assert_allclose(score, [100, 0, 50, 0.75 * 25 + 0.25 * 90])
    np.testing.assert_allclose(r + e, score)
    alone, _, _ = policy.composite_score(rev[3:], eng[3:], REF, cfg)
    assert alone[0] == score[3]  # a partner's score does not depend on the batch


def test_tiers_and_quadrants():
    cfg = PolicyConfig()
    tiers = policy.score_tier(np.array([100, 75, 74.9, 50, 10, 0]), cfg)
    assert tiers.tolist() == ["A", "A", "B", "B", "D", "D"]
    custom = PolicyConfig(tier_cutoffs={"top": 90.0, "rest": 10.0})
    assert policy.score_tier(np.array([95.0, 50.0, 5.0]), custom).tolist() == [
        "top",
        "rest",
        "rest",
    ]
    # high revenue: at or above the reference 75th percentile (750); engagement >= 0.5
    quads = policy.quadrant(
        np.array([750.0, 800.0, 749.0, 100.0]), np.array([0.5, 0.1, 0.9, 0.49]), REF, cfg
    )
    assert quads.tolist() == list(policy.QUADRANTS)


def test_a_missing_prediction_has_no_quadrant_and_no_quadrant_action():
    """A NaN prediction of either head is below every threshold, which read it as low/low
    ("Dormant", with its playbook action) until 2026-12-06: now no quadrant (None), no label
    and no action, unless the partner is provisional or graduated (their actions do not speak
    for a quadrant); the action schedule's quadrant columns are blank for it."""
    cfg = PolicyConfig()
    quads = policy.quadrant(
        np.array([np.nan, 800.0, np.nan, 100.0]), np.array([0.9, np.nan, np.nan, 0.1]), REF, cfg
    )
    assert quads.tolist() == [None, None, None, "low_revenue_low_engagement"]
    provisional = np.array([False, True, False, False])
    graduated = np.array([False, False, True, False])
    label, title, detail = policy.interventions(quads, provisional, cfg, graduated)
    book = policy.load_playbook(cfg)
    assert label.tolist() == [None, None, None, "Dormant"]
    assert title.tolist() == [
        None,
        book["provisional"]["title"],
        book["graduated"]["title"],
        book["quadrants"]["low_revenue_low_engagement"]["title"],
    ]
    assert detail[0] is None
    with pytest.raises(ValueError, match="unknown quadrant 'middle'"):
        policy.interventions(np.array(["middle", None], dtype=object), provisional[:2], cfg)
    actions = policy.action_schedule(
        np.array(["A", "B", "C", "D"], dtype=object),
        quads,
        provisional,
        graduated,
        "2026-01-01",
        cfg,
    )
    assert actions["intervention_owner"][0] == ""
    assert actions["intervention_review_date"][0] == ""


def tier_reference(score: float, cutoffs: dict[str, float]) -> str | None:
    """The slow twin of ``score_tier`` for one score: the best tier whose bound it reaches,
    the lowest tier below every bound, and no tier (None) for a missing score."""
    if math.isnan(score):
        return None
    ordered = sorted(cutoffs.items(), key=lambda kv: kv[1], reverse=True)
    for name, bound in ordered:
        if score >= bound:
            return name
    return ordered[-1][0]


@settings(max_examples=200, deadline=None)
@given(
    bounds=st.lists(st.floats(0, 100), min_size=1, max_size=5, unique=True),
    scores=st.lists(
        st.floats(-10, 110) | st.sampled_from([math.nan, 0.0, 25.0, 50.0, 75.0, 100.0]),
        max_size=12,
    ),
)
@example(bounds=[75.0, 50.0, 25.0, 0.0], scores=[math.nan])  # was "A": the best tier
def test_score_tier_equals_the_case_by_case_definition(bounds, scores):
    cutoffs = {f"T{i}": bound for i, bound in enumerate(bounds)}
    cfg = PolicyConfig(tier_cutoffs=cutoffs)
    fast = policy.score_tier(np.array(scores, dtype=float), cfg)
    assert fast.tolist() == [tier_reference(s, cutoffs) for s in scores]


def test_a_missing_score_has_no_tier():
    """NaN reached no lower bound, which the count of bounds above the score read as "below
    none of them": the best tier, A (unreachable while the heads always predict). A missing
    score now has no tier (None; a missing cell in the scores file), in the hysteresis too."""
    cfg = PolicyConfig()
    assert policy.score_tier(np.array([np.nan, 80.0, np.nan]), cfg).tolist() == [None, "A", None]
    assert policy.stable_tier(np.nan, np.nan, False, [], cfg) == (None, None, "")
    assert policy.stable_tier(np.nan, np.nan, False, [(80.0, "A")], cfg) == (None, None, "")
    tiers, candidates, reasons = policy.stable_tiers(
        ["p", "q", "r"],
        np.array([np.nan, np.nan, 80.0]),
        np.array([np.nan, np.nan, 80.0]),
        np.array([False, False, False]),
        {"q": [(60.0, "B")], "r": [(80.0, "A")]},
        cfg,
    )
    assert tiers.tolist() == [None, None, "A"] and candidates.tolist() == [None, None, "A"]
    assert reasons.tolist() == ["", "", ""]
    schedule = policy.action_schedule(
        np.array([None, "A"], dtype=object),
        np.array(["low_revenue_low_engagement"] * 2, dtype=object),
        np.array([False, False]),
        np.array([False, False]),
        np.datetime64("2026-03-01"),
        cfg,
    )
    assert schedule["tier_action"][0] == "" and schedule["tier_review_date"][0] == ""
    assert schedule["tier_action"][1] != ""


def test_shipped_playbook_interventions_and_provisional():
    cfg = PolicyConfig(min_observation_days=60)
    prov = policy.is_provisional(np.array([30, 60, 400]), cfg)
    assert prov.tolist() == [True, False, False]
    label, title, detail = policy.interventions(
        np.array(["high_revenue_low_engagement"] * 3, dtype=object), prov, cfg
    )
    assert label.tolist() == ["At-risk earners"] * 3
    assert title.tolist()[1:] == ["Targeted coaching and accelerated training"] * 2
    assert title[0] == "Complete onboarding first"
    assert "coaching" in detail[1]


def _playbook(path, quads=None, extra=""):
    quads = quads or {q: (f"L{i}", f"T{i}", f"D{i}") for i, q in enumerate(policy.QUADRANTS)}
    body = "\n".join(
        f"  {q}:\n    label: {lab}\n    title: {t}\n    detail: {d}"
        for q, (lab, t, d) in quads.items()
    )
    path.write_text(f"quadrants:\n{body}\n{extra}")
    return PolicyConfig(playbook_path=str(path))


def test_playbook_override(tmp_path):
    cfg = _playbook(tmp_path / "book.yaml")
    _, title, detail = policy.interventions(
        np.array(["low_revenue_low_engagement", "high_revenue_high_engagement"], dtype=object),
        np.array([True, False]),
        cfg,
    )
    assert title.tolist() == ["T3", "T0"]  # no provisional entry: the quadrant action applies
    assert detail.tolist() == ["D3", "D0"]
    cfg = _playbook(
        tmp_path / "book.yaml", extra="provisional:\n  title: Wait\n  detail: Too early.\n"
    )
    _, title, _ = policy.interventions(np.array(["low_revenue_low_engagement"]), [True], cfg)
    assert title.tolist() == ["Wait"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda q: q.update({"low_revenue_high_engagement": ("L", "", "D")}),
            r"book.yaml: quadrants.low_revenue_high_engagement: missing or empty key 'title'",
        ),
        (
            lambda q: q.pop("high_revenue_low_engagement"),
            r"book.yaml: missing key 'quadrants.high_revenue_low_engagement'",
        ),
        (
            lambda q: q.update({"high_revenue_medium_engagement": ("L", "T", "D")}),
            r"book.yaml: unknown quadrant 'quadrants.high_revenue_medium_engagement'",
        ),
    ],
)
def test_bad_playbook_names_file_and_key(tmp_path, mutate, message):
    quads = {q: ("L", "T", "D") for q in policy.QUADRANTS}
    mutate(quads)
    cfg = _playbook(tmp_path / "book.yaml", quads)
    with pytest.raises(PartnerscoreError, match=message):
        policy.load_playbook(cfg)


def test_playbook_errors_are_one_line(tmp_path):
    cfg = _playbook(tmp_path / "book.yaml", extra="provisonal:\n  title: x\n  detail: y\n")
    with pytest.raises(PartnerscoreError, match="book.yaml: unknown key 'provisonal'") as err:
        policy.load_playbook(cfg)
    assert "\n" not in str(err.value)
    cfg = _playbook(tmp_path / "book.yaml", extra="provisional:\n  title: x\n  detial: y\n")
    with pytest.raises(PartnerscoreError, match="provisional: missing or empty key 'detail'"):
        policy.load_playbook(cfg)
    bad = tmp_path / "bad.yaml"
    bad.write_text("quadrants:\n  a: [unclosed\n")
    with pytest.raises(PartnerscoreError, match=r"bad.yaml: line \d+ not valid YAML"):
        policy.load_playbook(PolicyConfig(playbook_path=str(bad)))
    with pytest.raises(PartnerscoreError, match="none.yaml: playbook file not found"):
        policy.load_playbook(PolicyConfig(playbook_path=str(tmp_path / "none.yaml")))
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(PartnerscoreError, match="list.yaml: missing key 'quadrants'"):
        policy.load_playbook(PolicyConfig(playbook_path=str(tmp_path / "list.yaml")))


def test_smoothing_and_guardrail_hand_computed():
    cfg = PolicyConfig(smoothing_window=3, guardrail_threshold=20)
    assert policy.smooth_and_guard(50.0, [], cfg) == (50.0, None, False)
    smoothed, prev, flag = policy.smooth_and_guard(90.0, [10.0, 40.0, 60.0], cfg)
    assert smoothed == pytest.approx((40 + 60 + 90) / 3)
    assert prev == 60.0 and flag is True  # |90 - 60| = 30 > 20
    assert policy.smooth_and_guard(80.0, [60.0], cfg) == (70.0, 60.0, False)  # exactly 20: no
    one = PolicyConfig(smoothing_window=1)
    assert policy.smooth_and_guard(75.0, [10.0], one) == (75.0, 10.0, True)


def test_smoothing_batch():
    cfg = PolicyConfig(smoothing_window=2, guardrail_threshold=10)
    smoothed, prev, flags = policy.smooth_and_guard_batch(
        ["a", "b", "c"], np.array([50.0, 30.0, 10.0]), {"a": [20.0, 40.0], "c": [5.0]}, cfg
    )
    np.testing.assert_allclose(smoothed, [45.0, 30.0, 7.5])
    np.testing.assert_allclose(prev, [40.0, np.nan, 5.0])
    assert flags.tolist() == [False, False, False]
    _, _, flags = policy.smooth_and_guard_batch(["a"], np.array([51.0]), {"a": [40.0]}, cfg)
    assert flags.tolist() == [True]
