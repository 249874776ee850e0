"""The batch policy functions against the per-partner rules they vectorise (exact twins)."""

import numpy as np
from hypothesis import given, settings
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
