"""The batch policy functions against the per-partner rules they vectorise (exact twins)."""

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from partnerscore.models import policy as pol
from partnerscore.models.config import PolicyConfig

score = st.floats(0, 100, allow_nan=False)
TIERS = ["A", "B", "C", "D", "graduated"]


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(score, st.lists(score, max_size=6), st.booleans()), min_size=1, max_size=25
    ),
    window=st.integers(1, 5),
    threshold=st.floats(1, 40),
)
def test_smooth_and_guard_batch_equals_the_scalar_rule(rows, window, threshold):
    cfg = PolicyConfig(smoothing_window=window, guardrail_threshold=threshold)
    ids = [f"P{i}" for i in range(len(rows))]
    previous = {pid: past for pid, (_, past, keep) in zip(ids, rows, strict=True) if keep}
    scores = np.array([r[0] for r in rows])
    smoothed, prev, flags = pol.smooth_and_guard_batch(ids, scores, previous, cfg)
    for i, pid in enumerate(ids):
        s, p, f = pol.smooth_and_guard(float(scores[i]), previous.get(pid, []), cfg)
        assert smoothed[i] == s  # exact, not approximately
        assert (np.isnan(prev[i]) and p is None) or prev[i] == p
        assert bool(flags[i]) == f


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            score,
            score,
            st.booleans(),
            st.booleans(),
            st.lists(st.tuples(score, st.sampled_from(TIERS)), max_size=4),
        ),
        min_size=1,
        max_size=25,
    ),
    margin=st.floats(0, 10),
    batches=st.integers(1, 4),
)
def test_stable_tiers_equals_the_scalar_rule(rows, margin, batches):
    cfg = PolicyConfig(tier_change_margin=margin, tier_change_batches=batches)
    ids = [f"P{i}" for i in range(len(rows))]
    smoothed = np.array([r[0] for r in rows])
    scores = np.array([r[1] for r in rows])
    guard = np.array([r[2] for r in rows])
    frozen = np.array([r[3] for r in rows])
    previous = {pid: r[4] for pid, r in zip(ids, rows, strict=True) if r[4]}
    tiers, cands, reasons = pol.stable_tiers(
        ids, smoothed, scores, guard, previous, cfg, frozen=frozen
    )
    for i, pid in enumerate(ids):
        if frozen[i]:
            want = ("graduated", "graduated", "")
        else:
            want = pol.stable_tier(smoothed[i], scores[i], guard[i], previous.get(pid, []), cfg)
        assert (tiers[i], cands[i], reasons[i]) == want


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            score,
            score,
            st.booleans(),
            st.lists(st.tuples(score, st.sampled_from(TIERS)), max_size=8),
        ),
        min_size=1,
        max_size=25,
    ),
    window=st.integers(1, 6),
    margin=st.floats(0, 10),
    batches=st.integers(1, 6),
    threshold=st.floats(1, 40),
)
# a tier change confirmed by the last 3 earlier raw scores (tier_change_batches 4), not by 1
@example(
    rows=[(76.0, 76.0, False, [(10.0, "B"), (80.0, "B"), (80.0, "B"), (80.0, "B")])],
    window=1,
    margin=10.0,
    batches=4,
    threshold=40.0,
)
# a smoothing window of 4 averages the last 3 earlier scores, not only the last one
@example(
    rows=[(50.0, 50.0, False, [(0.0, "C"), (30.0, "C"), (60.0, "C"), (90.0, "B")])],
    window=4,
    margin=0.0,
    batches=1,
    threshold=40.0,
)
def test_the_earlier_batches_a_job_reads_are_all_the_decisions_look_at(
    rows, window, margin, batches, threshold
):
    """A job reads only ``earlier_batches_needed`` earlier rows per partner: smoothing, the
    guardrail and the tier hysteresis decide the same with those as with the whole history."""
    from partnerscore.serving.history import keep_newest

    cfg = PolicyConfig(
        smoothing_window=window,
        guardrail_threshold=threshold,
        tier_change_margin=margin,
        tier_change_batches=batches,
    )
    ids = [f"P{i}" for i in range(len(rows))]
    scores = np.array([r[0] for r in rows])
    decisions = {pid: r[3] for pid, r in zip(ids, rows, strict=True) if r[3]}
    earlier = {pid: [s for s, _ in past] for pid, past in decisions.items()}
    need_scores, need_decisions = pol.earlier_batches_needed(cfg)
    full = pol.smooth_and_guard_batch(ids, scores, earlier, cfg)
    cut = pol.smooth_and_guard_batch(ids, scores, keep_newest(earlier, need_scores), cfg)
    for a, b in zip(full, cut, strict=True):
        np.testing.assert_array_equal(a, b)
    smoothed, _, flags = full
    frozen = np.array([r[2] for r in rows])
    args = (ids, smoothed, np.array([r[1] for r in rows]), flags)
    whole = pol.stable_tiers(*args, decisions, cfg, frozen=frozen)
    newest = pol.stable_tiers(*args, keep_newest(decisions, need_decisions), cfg, frozen=frozen)
    for a, b in zip(whole, newest, strict=True):
        np.testing.assert_array_equal(a, b)
