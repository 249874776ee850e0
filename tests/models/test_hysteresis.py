"""Stable decisions: tiers from the smoothed score, hysteresis, guardrail holds."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.models import policy as pol
from partnerscore.models.config import PolicyConfig


def run_batches(scores, cfg):
    """The scoring job's decision loop for one partner, batch after batch (pure twin)."""
    raw_history, decided_history, out = [], [], []
    for s in scores:
        smoothed, _, flag = pol.smooth_and_guard(s, raw_history, cfg)
        tier, candidate, reason = pol.stable_tier(
            smoothed, s, flag, list(zip(raw_history, decided_history, strict=True)), cfg
        )
        raw_history.append(s)
        decided_history.append(tier)
        out.append((tier, candidate, reason))
    return out


@settings(max_examples=300, deadline=None)
@given(
    base=st.floats(0, 100),
    noise=st.floats(-100, 100),
    before=st.integers(1, 5),
    after=st.integers(0, 6),
)
def test_a_single_noisy_batch_cannot_flip_a_tier(base, noise, before, after):
    cfg = PolicyConfig()
    assert cfg.tier_change_margin >= cfg.guardrail_threshold / cfg.smoothing_window
    noisy = min(max(base + noise, 0.0), 100.0)
    scores = [base] * before + [noisy] + [base] * after
    expected = pol.score_tier(np.array([base]), cfg)[0]
    assert [t for t, _, _ in run_batches(scores, cfg)] == [expected] * len(scores)


def test_a_sustained_move_changes_the_tier_after_the_configured_batches():
    cfg = PolicyConfig(tier_change_batches=2, tier_change_margin=10)
    decisions = run_batches([60, 60, 60, 80, 80, 80], cfg)
    tiers = [t for t, _, _ in decisions]
    # smoothed: 60, 60, 60, 66.7 (B), 73.3 (B), 80 (A): adopted at once, its raw streak is 3
    assert tiers == ["B", "B", "B", "B", "B", "A"]
    held = run_batches([60, 76, 76], cfg.model_copy(update={"smoothing_window": 1}))
    assert [t for t, _, _ in held] == ["B", "B", "A"]
    assert held[1][2].startswith("hysteresis") and "1 of 2 batches" in held[1][2]


def test_margin_adopts_a_clear_change_at_once():
    cfg = PolicyConfig(tier_change_batches=5, tier_change_margin=3, smoothing_window=1)
    tiers = [t for t, _, _ in run_batches([60, 79], cfg)]
    assert tiers == ["B", "A"]  # 79 is 4 points past 75
    tiers = [t for t, _, _ in run_batches([60, 76], cfg)]
    assert tiers == ["B", "B"]  # 1 point past, 1 of 5 batches


def test_downgrades_need_confirmation_too():
    cfg = PolicyConfig(smoothing_window=1, tier_change_margin=50)
    decisions = run_batches([80, 70, 70], cfg)
    assert [t for t, _, _ in decisions] == ["A", "A", "B"]
    assert "tier A held" in decisions[1][2] and decisions[1][1] == "B"


def test_guardrail_holds_the_previous_tier_and_says_so():
    cfg = PolicyConfig(smoothing_window=1, guardrail_threshold=20, tier_change_margin=0)
    tier, candidate, reason = pol.stable_tier(90.0, 90.0, True, [(40.0, "C")], cfg)
    assert (tier, candidate) == ("C", "A")
    assert reason.startswith("guardrail") and "tier C held" in reason
    # a first score has nothing to hold
    assert pol.stable_tier(90.0, 90.0, True, [], cfg) == ("A", "A", "")
    # an earlier graduated decision is not a tier to hold
    assert pol.stable_tier(90.0, 90.0, False, [(40.0, "graduated")], cfg)[0] == "A"


def test_batch_version_matches_rows_and_freezes_out_of_scope():
    cfg = PolicyConfig()
    previous = {"a": [(60.0, "B")], "b": [(80.0, "A")]}
    tiers, cands, reasons = pol.stable_tiers(
        ["a", "b", "c"],
        np.array([62.0, 70.0, 30.0]),
        np.array([62.0, 70.0, 30.0]),
        np.array([False, False, False]),
        previous,
        cfg,
        frozen=np.array([False, False, True]),
    )
    assert tiers.tolist() == ["B", "A", "graduated"]
    assert cands.tolist() == ["B", "B", "graduated"]
    assert reasons[1].startswith("hysteresis") and reasons[0] == ""
