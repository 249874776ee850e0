"""The out-of-fold cohort-drift diagnostic against a plain per-partner reading, and its power."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.training.recalibration import cohort_trend


def reference(signed, pid, y, m, blocks):
    """Slow twin: partner sums in signing order, groups, log ratios, weighted least squares."""
    partners = {}
    for s, p, a, b in zip(signed, pid, y, m, strict=True):
        t, sy, sm = partners.get(p, (s, 0.0, 0.0))
        partners[p] = (t, sy + a, sm + b)
    order = sorted(partners.items(), key=lambda kv: (kv[1][0], kv[0]))
    n, t0 = len(order), order[0][1][0]
    groups = [[] for _ in range(blocks)]
    for i, (_, (t, sy, sm)) in enumerate(order):
        groups[i * blocks // n].append(((t - t0) / pd.Timedelta(days=365.25), sy, sm))
    xs, rs, ws = [], [], []
    for g in groups:
        sy, sm = sum(a for _, a, _ in g), sum(b for _, _, b in g)
        if len(g) < 2 or sy <= 0 or sm <= 0:
            continue
        ratio = sy / sm
        var = sum((a - ratio * b) ** 2 for _, a, b in g) / sy**2
        if var <= 0:
            continue
        xs.append(sum(t for t, _, _ in g) / len(g))
        rs.append(np.log(ratio))
        ws.append(1 / var)
    if len(xs) < 3:
        return float("nan"), float("nan")
    sw = sum(ws)
    xb = sum(w * x for w, x in zip(ws, xs, strict=True)) / sw
    rb = sum(w * r for w, r in zip(ws, rs, strict=True)) / sw
    sxx = sum(w * (x - xb) ** 2 for w, x in zip(ws, xs, strict=True))
    sxy = sum(w * (x - xb) * (r - rb) for w, x, r in zip(ws, xs, rs, strict=True))
    return sxy / sxx, (1 / sxx) ** 0.5


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    partners=st.integers(3, 60),
    blocks=st.integers(3, 6),
    extreme=st.sampled_from([1.0, 1e4, 1e9]),
)
def test_cohort_trend_matches_a_per_partner_reading(seed, partners, blocks, extreme):
    rng = np.random.default_rng(seed)
    snaps = rng.integers(1, 4, partners)
    pid = np.repeat([f"P{i:03d}" for i in range(partners)], snaps)
    days = rng.integers(0, 1000, partners)  # ties between partners included
    signed = pd.Timestamp("2023-01-01") + pd.to_timedelta(np.repeat(days, snaps), "D")
    n = len(pid)
    y = rng.lognormal(5, 2, n) * (rng.random(n) < 0.5)
    y[rng.integers(0, n)] *= extreme
    m = rng.lognormal(5, 1, n)
    got = cohort_trend(pd.Series(signed), pid, y, m, blocks)
    want = reference(list(signed), list(pid), list(y), list(m), blocks)
    if np.isnan(want[0]):
        assert np.isnan(got[0]) and np.isnan(got[1])
    else:
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def _program(trend: float, seed: int, partners: int = 4000):
    """Zero-inflated heavy-tailed revenue whose level moves by ``trend`` per signing year."""
    rng = np.random.default_rng(seed)
    years = np.sort(rng.uniform(0, 3, partners))
    m = rng.lognormal(8, 1, partners)  # the model's (drift-blind) prediction
    y = m * np.exp(trend * (years - 1.5)) * rng.lognormal(-0.5, 1.0, partners) / 0.5
    y *= rng.random(partners) < 0.5
    signed = pd.Timestamp("2023-01-01") + pd.to_timedelta(years * 365.25, "D")
    return signed, np.array([f"P{i}" for i in range(partners)]), y, m


def test_cohort_trend_finds_a_drift_and_not_its_absence():
    slope, se = cohort_trend(*_program(0.3, 1))
    assert slope == pytest.approx(0.3, abs=3 * se) and slope > 3 * se
    flat = [cohort_trend(*_program(0.0, s)) for s in range(20)]
    z = np.array([s / e for s, e in flat])
    assert np.mean(np.abs(z) > 2) <= 0.2  # ~5% expected; heavy tails make the s.e. noisy
    assert abs(np.mean([s for s, _ in flat])) < 0.05
