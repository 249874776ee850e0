"""The slow twin of ``models.whatif.upgrade_paths``: one partner at a time, in plain Python.

Follows the docstrings of ``upgrade_paths``, ``search_values``, ``refine_reaching`` and
``change_cost`` candidate by candidate: no arrays of (row, feature, grid) candidates, no
groupby, no chunks. Each candidate is its partner's row with one feature set, scored by
``policy_scores`` (itself checked against ``score_features`` in ``test_whatif.py``); a row's
score does not depend on the other rows of the frame, so one partner's candidates are scored
together.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from partnerscore.models import policy as pol
from partnerscore.models import whatif as wi


def as_number(value) -> float:
    """A feature value as a float; NaN when missing or not a number."""
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iat[0]
    return math.nan if pd.isna(number) else float(number)


def tried_values(spec, x: float, lo: float, hi: float, grid: int) -> list[tuple[float, float]]:
    """(value, value tried before it or NaN) for one feature at current value ``x``, in order."""
    if spec.recency:  # an event now, only; nothing when the latest event is already now
        return [] if x <= wi.RECENCY_NOW else [(wi.RECENCY_NOW, math.nan)]
    up = spec.direction == "higher_is_better"
    start = x if math.isfinite(x) else (lo if up else hi)
    end = hi if up else lo
    previous = start if math.isfinite(x) else math.nan
    out = []
    for g in range(1, grid + 1):
        v = start + (end - start) * g / grid
        if spec.unit in wi.INTEGER_UNITS:
            v = float(math.ceil(v) if up else math.floor(v))
        better = v > start if up else v < start
        if better and not (math.isfinite(x) and v == x):
            out.append((v, previous))
        previous = v
    return out


def upgrade_path_of_one(model, row: pd.DataFrame, tier, policy, specs, ranges, grid, max_steps):
    """The path of one partner (``row``: a one-row frame)."""
    bounds = pol._tier_bounds(policy)
    if tier not in bounds or bounds[tier][0] == 0:
        return []
    target = next(lower for rank, lower in bounds.values() if rank == bounds[tier][0] - 1)

    def score(values: list[dict[str, float]]) -> list[float]:
        frame = pd.concat([row] * len(values), ignore_index=True)
        for i, changes in enumerate(values):
            for name, value in changes.items():
                column = np.array(pd.to_numeric(frame[name], errors="coerce"), dtype=float)
                column[i] = value
                frame[name] = column
        return list(wi.policy_scores(model, frame, policy))

    def cost(spec, before: float, value: float) -> float:
        lo, hi = ranges[spec.name]
        up = spec.direction == "higher_is_better"
        start = before if math.isfinite(before) else (lo if up else hi)
        return abs(value - start) / (hi - lo)

    state: dict[str, float] = {}  # changes so far
    current = score([{}])[0]
    taken = []
    for _ in range(max_steps):
        candidates = []  # (feature index, value, value before, grid index, current value)
        for j, spec in enumerate(specs):
            x = state.get(spec.name, as_number(row[spec.name].iat[0]))
            lo, hi = ranges[spec.name]
            for g, (value, below) in enumerate(tried_values(spec, x, lo, hi, grid), start=1):
                candidates.append([j, value, below, g, x])
        if not candidates:
            break
        scores = score([{**state, specs[c[0]].name: c[1]} for c in candidates])
        # each feature's first reaching grid value: cut back by bisection while it reaches
        refined = set()
        for k, (j, value, below, _g, _x) in enumerate(candidates):
            if j in refined or scores[k] < target:
                continue
            refined.add(j)
            if not math.isfinite(below):
                continue
            spec = specs[j]
            up = spec.direction == "higher_is_better"
            lo, hi = below, value
            for _ in range(wi.REFINE_STEPS):
                mid = (lo + hi) / 2
                if spec.unit in wi.INTEGER_UNITS:
                    mid = float(math.ceil(mid) if up else math.floor(mid))
                if mid == hi:
                    break
                trial = score([{**state, spec.name: mid}])[0]
                if trial >= target:
                    hi, scores[k] = mid, trial
                else:
                    lo = mid
            candidates[k][1] = hi
        costs = [cost(specs[j], x, value) for j, value, _b, _g, x in candidates]
        reaching = [k for k in range(len(candidates)) if scores[k] >= target]
        if reaching:  # the cheapest; ties: the first feature, then the first grid value
            best = min(reaching, key=lambda k: (costs[k], candidates[k][0], candidates[k][3]))
        else:  # the largest gain; ties: the cheapest, then the first candidate
            best = min(range(len(candidates)), key=lambda k: (-scores[k], costs[k], k))
            if scores[best] - current <= 0:
                return []  # nothing actionable helps
        name = specs[candidates[best][0]].name
        state[name] = candidates[best][1]
        taken.append(name)
        current = scores[best]
        if reaching:
            break
    if current < target:
        return []
    order = list(dict.fromkeys(taken))
    return [(name, as_number(row[name].iat[0]), state[name]) for name in order]


def upgrade_paths_reference(model, features, tiers, policy, *, grid=5, max_steps=3):
    """Per row, :func:`upgrade_path_of_one` (the specs and ranges as ``upgrade_paths`` picks)."""
    ranges = wi.training_ranges(model)
    specs = [
        s
        for s in model.feature_specs
        if s.actionable
        and s.kind == "numeric"
        and s.direction != "neutral"
        and s.name in ranges
        and ranges[s.name][1] > ranges[s.name][0]
        and s.name in features.columns
    ]
    features = features.reset_index(drop=True)
    return [
        upgrade_path_of_one(
            model, features.iloc[[i]], tiers[i], policy, specs, ranges, grid, max_steps
        )
        if specs
        else []
        for i in range(len(features))
    ]
