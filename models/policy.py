"""The scoring policy: composite score, tiers, quadrants, playbook, provisional flag, smoothing.

Everything here is a pure function of predictions, the model's reference quantiles and the
:class:`~partnerscore.models.config.PolicyConfig`, so a score does not depend on which other
partners are in the batch.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources

import numpy as np
import pandas as pd
import yaml

from partnerscore.features.core import PartnerscoreError, case_key, read_text_file
from partnerscore.features.registry import LAYERS
from partnerscore.models.config import PolicyConfig

QUADRANTS = (
    "high_revenue_high_engagement",
    "high_revenue_low_engagement",
    "low_revenue_high_engagement",
    "low_revenue_low_engagement",
)
GRID = np.linspace(0.0, 1.0, 101)
SHIPPED_PLAYBOOK = resources.files(__package__) / "playbook.yaml"  # also in a zip archive


def percentile_of(values: np.ndarray, quantiles: list[float]) -> np.ndarray:
    """Position (0-1) of each value within a reference distribution given by 101 quantiles.

    Values equal to a run of tied quantiles get the middle of the run; values between
    quantiles are interpolated linearly; outside the range they clip to 0 or 1. A missing
    value (NaN) has no position: NaN (``np.searchsorted`` sorts it above every quantile,
    which made it 1.0, the top of the distribution).
    """
    q = np.asarray(quantiles, dtype=float)
    v = np.asarray(values, dtype=float)
    left = np.searchsorted(q, v, side="left")
    right = np.searchsorted(q, v, side="right")
    steps = len(q) - 1
    tied = right > left
    mid = (left + right - 1) / 2 / steps
    lo = np.clip(left - 1, 0, steps)
    hi = np.clip(left, 0, steps)
    span = q[hi] - q[lo]
    frac = np.where(span > 0, (v - q[lo]) / np.where(span > 0, span, 1), 0.0)
    interp = (lo + frac) / steps
    out = np.where(tied, mid, interp)
    out = np.clip(np.where(left == 0, np.where(tied, mid, 0.0), out), 0.0, 1.0)
    return np.where(np.isnan(v), np.nan, out)


def composite_score(
    pred_revenue: np.ndarray,
    pred_engagement: np.ndarray,
    reference: dict[str, list[float]],
    policy: PolicyConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Composite 0-100 from the heads' percentiles among the training predictions.

    Returns:
        (score, revenue part, engagement part); the parts add up to the score.
    """
    w = policy.revenue_weight
    rev = 100 * w * percentile_of(pred_revenue, reference["revenue_quantiles"])
    eng = 100 * (1 - w) * percentile_of(pred_engagement, reference["engagement_quantiles"])
    return rev + eng, rev, eng


def score_tier(score: np.ndarray, policy: PolicyConfig) -> np.ndarray:
    """Tier name of each score: the best tier whose lower bound it reaches.

    Below every bound: the lowest tier. A missing score (NaN) has no tier: None, a missing
    ``score_tier`` in the scores file. NaN reaches no bound, which the count of bounds above
    the score read as "below none of them": the best tier (unreachable while the heads always
    predict; a missing score must never pass as a top partner, as in :func:`percentile_of`).
    """
    cutoffs = sorted(policy.tier_cutoffs.items(), key=lambda kv: kv[1], reverse=True)
    names = np.array([name for name, _ in cutoffs] + [cutoffs[-1][0]], dtype=object)
    bounds = np.array([bound for _, bound in cutoffs])
    values = np.asarray(score, dtype=float)
    idx = (values[:, None] < bounds[None, :]).sum(axis=1)
    tiers = names[np.minimum(idx, len(cutoffs) - 1)]
    tiers[np.isnan(values)] = None
    return tiers


def quadrant(
    pred_revenue: np.ndarray,
    pred_engagement: np.ndarray,
    reference: dict[str, list[float]],
    policy: PolicyConfig,
) -> np.ndarray:
    """Revenue (high: at or above the reference quantile) x engagement (high: >= threshold).

    A missing prediction (NaN) of either head has no quadrant: None. NaN is below every
    threshold, which read it as low/low (``low_revenue_low_engagement``, "Dormant", and its
    playbook action); as with :func:`score_tier`, a missing prediction is never read as a
    reading of the partner (unreachable while the heads always predict).
    """
    threshold = float(np.interp(policy.revenue_high_quantile, GRID, reference["revenue_quantiles"]))
    rev = np.asarray(pred_revenue, dtype=float)
    eng = np.asarray(pred_engagement, dtype=float)
    high_rev = rev >= threshold
    high_eng = eng >= policy.engagement_high
    names = np.array(QUADRANTS, dtype=object)
    idx = np.where(high_rev, np.where(high_eng, 0, 1), np.where(high_eng, 2, 3))
    quads = names[idx]
    quads[np.isnan(rev) | np.isnan(eng)] = None
    return quads


DEFAULT_OWNER = "channel account manager"
DEFAULT_REVIEW_DAYS = 30
OPTIONAL = ("owner", "review_days")


def _check_entry(entry, where: str, keys: tuple[str, ...]) -> dict:
    """A playbook entry: required text keys, plus an optional owner role and review_days."""
    if not isinstance(entry, dict):
        raise PartnerscoreError(f"{where}: expected a mapping with {', '.join(keys)}")
    for key in keys:
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise PartnerscoreError(f"{where}: missing or empty key '{key}'")
    unknown = sorted(set(entry) - set(keys) - set(OPTIONAL), key=str)
    if unknown:
        expected = ", ".join((*keys, *OPTIONAL))
        raise PartnerscoreError(f"{where}: unknown key '{unknown[0]}' (expected {expected})")
    out: dict = {key: " ".join(entry[key].split()) for key in keys}
    owner = entry.get("owner", DEFAULT_OWNER)
    if not isinstance(owner, str) or not owner.strip():
        raise PartnerscoreError(f"{where}: key 'owner' must be a role name")
    days = entry.get("review_days", DEFAULT_REVIEW_DAYS)
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 3650:
        raise PartnerscoreError(f"{where}: key 'review_days' must be a whole number of days 0-3650")
    out["owner"] = " ".join(owner.split())
    out["review_days"] = days
    return out


def _load_playbook(path: str | None) -> dict:
    """The validated playbook, read on every call (an edited file counts at once).

    Parsing YAML costs ~0.1 s, more than scoring 2,000 partners: the parsed result of each
    distinct text is kept (small, bounded) and every caller gets its own copy.
    """
    if path is None:
        text = SHIPPED_PLAYBOOK.read_text(encoding="utf-8")
        source = "playbook.yaml (shipped)"
    else:
        text = read_text_file(path, "playbook file")
        source = str(path)
        if not text.strip():
            raise PartnerscoreError(f"{source}: empty playbook file")
    return copy.deepcopy(_parse_playbook(text, source))


@functools.lru_cache(maxsize=16)
def _parse_playbook(text: str, source: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" line {line + 1}" if line is not None else ""
        raise PartnerscoreError(f"{source}:{where} not valid YAML") from exc
    if not isinstance(data, dict) or not isinstance(data.get("quadrants"), dict):
        raise PartnerscoreError(f"{source}: missing key 'quadrants'")
    extra = sorted(set(data) - {"quadrants", "tiers", "provisional", "graduated"}, key=str)
    if extra:
        raise PartnerscoreError(
            f"{source}: unknown key '{extra[0]}' "
            "(expected quadrants, tiers, provisional, graduated)"
        )
    unknown = sorted(set(data["quadrants"]) - set(QUADRANTS), key=str)
    if unknown:
        raise PartnerscoreError(f"{source}: unknown quadrant 'quadrants.{unknown[0]}'")
    quads = {}
    for name in QUADRANTS:
        if name not in data["quadrants"]:
            raise PartnerscoreError(f"{source}: missing key 'quadrants.{name}'")
        quads[name] = _check_entry(
            data["quadrants"][name], f"{source}: quadrants.{name}", ("label", "title", "detail")
        )
    tiers = data.get("tiers") or {}
    if not isinstance(tiers, dict):
        raise PartnerscoreError(f"{source}: key 'tiers' must map tier names to actions")
    tier_actions = {
        str(name): _check_entry(entry, f"{source}: tiers.{name}", ("title", "detail"))
        for name, entry in tiers.items()
    }
    special = {}
    for key in ("provisional", "graduated"):
        special[key] = (
            _check_entry(data[key], f"{source}: {key}", ("title", "detail"))
            if data.get(key) is not None
            else None
        )
    if special["graduated"] is None:
        special["graduated"] = {
            **GRADUATED,
            "owner": DEFAULT_OWNER,
            "review_days": DEFAULT_REVIEW_DAYS,
        }
    return {"quadrants": quads, "tiers": tier_actions, **special}


def load_playbook(policy: PolicyConfig) -> dict:
    """The validated playbook (shipped, or ``policy.playbook_path``).

    Raises:
        PartnerscoreError: Invalid YAML or keys, or a ``tiers`` section missing a tier of
            ``policy.tier_cutoffs``.
    """
    book = _load_playbook(policy.playbook_path)
    if book["tiers"]:
        source = policy.playbook_path or "playbook.yaml (shipped)"
        for name in policy.tier_cutoffs:
            if name not in book["tiers"]:
                raise PartnerscoreError(f"{source}: missing key 'tiers.{name}'")
    return book


def action_schedule(
    tiers: np.ndarray,
    quadrants: np.ndarray,
    provisional: np.ndarray,
    out_of_scope: np.ndarray,
    as_of,
    policy: PolicyConfig,
) -> dict[str, np.ndarray]:
    """Tier actions and the owner role and review date of every action.

    Tiers map to the playbook's ``tiers`` actions, quadrants to its ``quadrants`` actions.
    Provisional partners keep the ``provisional`` action and graduated (out-of-scope) partners
    the ``graduated`` one, for both. A review date is ``as_of + review_days``.

    Args:
        tiers: (n,) decided tiers.
        quadrants: (n,) quadrant keys.
        provisional: (n,) provisional flags.
        out_of_scope: (n,) out-of-scope flags.
        as_of: One timestamp or (n,) timestamps.
        policy: The playbook location.

    Returns:
        Columns tier_action, tier_action_detail, tier_action_owner, tier_review_date,
        intervention_owner and intervention_review_date ((n,) each; empty text when the
        playbook has no ``tiers`` section).
    """
    book = load_playbook(policy)
    n = len(tiers)
    when = pd.to_datetime(pd.Series(np.broadcast_to(np.asarray(as_of), (n,))))
    blank = {"title": "", "detail": "", "owner": "", "review_days": None}
    # a missing tier (no score) has no tier action: blank, as without a ``tiers`` section
    tier_entries = [book["tiers"].get(t, blank) if isinstance(t, str) else blank for t in tiers]
    # a missing quadrant (no prediction) has no quadrant action: blank
    quad_entries = [book["quadrants"][q] if isinstance(q, str) else blank for q in quadrants]
    prov, done = np.asarray(provisional, dtype=bool), np.asarray(out_of_scope, dtype=bool)
    for i in range(n):
        special = book["graduated"] if done[i] else book["provisional"] if prov[i] else None
        if special is not None:
            tier_entries[i] = quad_entries[i] = special

    def due(entries: list[dict]) -> np.ndarray:
        days = pd.to_timedelta([e["review_days"] for e in entries], unit="D")
        # a batch has a handful of distinct review dates: each is formatted once
        codes, dates = pd.factorize(when + days)  # no date (NaT): code -1, empty text
        text = [*pd.DatetimeIndex(dates).strftime("%Y-%m-%d"), ""]
        return np.array(text, dtype=object)[codes]

    return {
        "tier_action": np.array([e["title"] for e in tier_entries], dtype=object),
        "tier_action_detail": np.array([e["detail"] for e in tier_entries], dtype=object),
        "tier_action_owner": np.array([e["owner"] for e in tier_entries], dtype=object),
        "tier_review_date": due(tier_entries),
        "intervention_owner": np.array([e["owner"] for e in quad_entries], dtype=object),
        "intervention_review_date": due(quad_entries),
    }


def interventions(
    quadrants: np.ndarray,
    provisional: np.ndarray,
    policy: PolicyConfig,
    out_of_scope: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(quadrant label, intervention title, intervention detail) per row.

    Provisional partners get the playbook's ``provisional`` action; partners past the
    onboarding ages the model learned from get its ``graduated`` action. A missing quadrant
    (None: no prediction) has no label and no action (None), unless one of those applies.
    """
    book = load_playbook(policy)
    # the last entry serves a missing quadrant: no label, no action
    label = np.array([book["quadrants"][q]["label"] for q in QUADRANTS] + [None], dtype=object)
    title = np.array([book["quadrants"][q]["title"] for q in QUADRANTS] + [None], dtype=object)
    detail = np.array([book["quadrants"][q]["detail"] for q in QUADRANTS] + [None], dtype=object)
    quads = np.asarray(quadrants, dtype=object)
    idx = pd.Index(QUADRANTS).get_indexer(quads)
    missing = np.array([q is None for q in quads], dtype=bool)
    if (idx[~missing] < 0).any():
        raise ValueError(f"unknown quadrant {quads[(idx < 0) & ~missing][0]!r}")
    idx[missing] = len(QUADRANTS)
    t, d = title[idx].copy(), detail[idx].copy()
    if book["provisional"] is not None:
        prov = np.asarray(provisional, dtype=bool)
        t[prov] = book["provisional"]["title"]
        d[prov] = book["provisional"]["detail"]
    if out_of_scope is not None:
        done = np.asarray(out_of_scope, dtype=bool)
        t[done] = book["graduated"]["title"]
        d[done] = book["graduated"]["detail"]
    return label[idx], t, d


GRADUATED = {
    "title": "Graduated: hand over to standard account management",
    "detail": (
        "Past the onboarding ages this model learned from: its onboarding scores no longer "
        "apply. Manage the partner with the standard account process."
    ),
}
OUT_OF_SCOPE_TIER = "graduated"


def out_of_scope(
    age_days: np.ndarray, trained_ages: list[int] | None, policy: PolicyConfig
) -> np.ndarray:
    """Partners older than the oldest trained onboarding age plus the policy's tolerance.

    Args:
        age_days: Onboarding age of each row at as_of.
        trained_ages: The onboarding ages of the model's training snapshots (None: unknown,
            nobody is out of scope).
        policy: ``scope_tolerance_days``.
    """
    age = np.asarray(age_days, dtype=float)
    if not trained_ages:
        return np.zeros(len(age), dtype=bool)
    return age > max(trained_ages) + policy.scope_tolerance_days


def is_provisional(age_days: np.ndarray, policy: PolicyConfig) -> np.ndarray:
    """Scores of partners younger than the minimum observation period are provisional."""
    return np.asarray(age_days, dtype=float) < policy.min_observation_days


def smooth_and_guard(
    score: float, previous: list[float], policy: PolicyConfig
) -> tuple[float, float | None, bool]:
    """Moving average and swing guardrail for one partner.

    Args:
        score: The new score.
        previous: Earlier scores of the partner, oldest first (any length).
        policy: smoothing_window and guardrail_threshold.

    Returns:
        (smoothed score, previous score or None, guardrail flag).
    """
    window = (
        [*previous[-(policy.smoothing_window - 1) :], score]
        if policy.smoothing_window > 1
        else [score]
    )
    prev = previous[-1] if previous else None
    flag = prev is not None and abs(score - prev) > policy.guardrail_threshold
    return float(np.mean(window)), prev, bool(flag)


def earlier_batches_needed(policy: PolicyConfig) -> tuple[int, int]:
    """How many earlier batches of a partner a decision looks at: (scores, decisions).

    Smoothing and the guardrail (:func:`smooth_and_guard_batch`) use the last
    ``smoothing_window - 1`` scores and the last one; the tier hysteresis (:func:`stable_tiers`)
    the last decided tier and the last ``tier_change_batches - 1`` raw scores. Older rows
    change nothing, so a job reads only these (the history grows by a batch a month).
    """
    return max(policy.smoothing_window - 1, 1), max(policy.tier_change_batches - 1, 1)


def smooth_and_guard_batch(
    partner_ids, scores: np.ndarray, previous: dict[str, list[float]], policy: PolicyConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`smooth_and_guard` for a batch.

    Args:
        partner_ids: (n,) partner ids.
        scores: (n,) new scores.
        previous: Earlier scores per partner id, oldest first (missing: no history).
        policy: smoothing_window and guardrail_threshold.

    Returns:
        (smoothed scores, previous score or NaN, guardrail flags), each (n,).
    """
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    smoothed, prev = scores.copy(), np.full(n, np.nan)
    keep = policy.smoothing_window - 1
    # rows grouped by window length: each group's means in one call, the same float sums as
    # smooth_and_guard's np.mean of the row's list (exact twins in tests/models)
    windows: dict[int, tuple[list[int], list[list[float]]]] = {}
    for i, pid in enumerate(partner_ids):
        earlier = previous.get(pid)
        if not earlier:
            continue  # no history: smoothed = score, no previous, no flag
        prev[i] = earlier[-1]
        tail = earlier[-keep:] if keep > 0 else []
        rows, values = windows.setdefault(len(tail), ([], []))
        rows.append(i)
        values.append(tail)
    for width, (rows, values) in windows.items():
        idx = np.asarray(rows, dtype=np.intp)
        block = np.empty((len(idx), width + 1))
        if width:
            block[:, :width] = np.asarray(values, dtype=float)
        block[:, width] = scores[idx]
        smoothed[idx] = block.mean(axis=1)
    with np.errstate(invalid="ignore"):
        flags = np.abs(scores - prev) > policy.guardrail_threshold
    return smoothed, prev, flags


def maturity_band(age_days: np.ndarray, policy: PolicyConfig) -> tuple[np.ndarray, np.ndarray]:
    """Each row's maturity band and the multipliers of its layer score points.

    Args:
        age_days: (n,) onboarding age at as_of (missing: the first band).
        policy: ``maturity_bands``.

    Returns:
        (band name per row, (n, 3) multipliers of the strategic, execution and results points).
    """
    age = np.nan_to_num(np.asarray(age_days, dtype=float), nan=0.0)
    starts = np.array([band.start_day for band in policy.maturity_bands], dtype=float)
    idx = np.clip(np.searchsorted(starts, np.floor(age), side="right") - 1, 0, len(starts) - 1)
    names = np.array(policy.band_names(), dtype=object)
    mult = np.array([band.weights.multipliers() for band in policy.maturity_bands], dtype=float)
    return names[idx], mult[idx]


def segment_factor(factors: dict[str, float], value: object) -> float | None:
    """The factor of one segment value, its case ignored (:func:`case_key`); None: unlisted.

    Validation folds a free category's spellings to the batch's most frequent one and scoring
    reads a category the model knows in another case as the model's, so a policy written
    ``EMEA: 1.2`` must not miss partners spelled ``emea`` (their factor was silently 1).
    """
    if not isinstance(value, str):
        return None
    return next((f for name, f in factors.items() if case_key(name) == case_key(value)), None)


def adjustment_factor(segments: pd.DataFrame, policy: PolicyConfig) -> np.ndarray:
    """Product of the partner's region, tier and partner-type factors (unlisted: 1.0)."""
    factor = np.ones(len(segments))
    for key, factors in policy.segment_adjustments.items():
        if key in segments and factors:
            codes, values = pd.factorize(segments[key].astype(object))
            per_value = [segment_factor(factors, v) for v in values]
            # code -1 (a missing value) takes the last entry: 1.0
            table = np.array([1.0 if f is None else f for f in per_value] + [1.0])
            factor *= table[codes]
    return factor


def weighted_score(
    base: np.ndarray,
    layer_points: dict[str, np.ndarray],
    multipliers: np.ndarray,
    factor: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """The policy's composite: band-weighted layer points, the segment factor, clipped to 0-100.

    ``score = clip(factor x (base + sum over layers of multiplier x points), 0, 100)``, written
    as ``base + weighted layers + adjustment``, so every point is traceable to a layer (and its
    band weight) or to the segment adjustment (which includes the clipping).

    Args:
        base: (n,) score points of the average partner.
        layer_points: Layer -> (n,) unweighted score points (the model's own split).
        multipliers: (n, 3) band multipliers in :data:`LAYERS` order.
        factor: (n,) segment adjustment factors.

    Returns:
        (score, weighted points per layer, adjustment points).
    """
    weighted = {
        layer: multipliers[:, i] * np.asarray(layer_points[layer], dtype=float)
        for i, layer in enumerate(LAYERS)
    }
    before = np.asarray(base, dtype=float) + sum(weighted.values())
    score = np.clip(before * factor, 0.0, 100.0)
    return score, weighted, score - before


def _tier_bounds(policy: PolicyConfig) -> dict[str, tuple[int, float]]:
    """Tier name -> (rank, lower bound); rank 0 is the best tier."""
    ordered = sorted(policy.tier_cutoffs.items(), key=lambda kv: kv[1], reverse=True)
    return {name: (rank, bound) for rank, (name, bound) in enumerate(ordered)}


def stable_tier(
    smoothed: float,
    score: float,
    guardrail: bool,
    previous: list[tuple[float, str]],
    policy: PolicyConfig,
) -> tuple[str | None, str | None, str]:
    """One partner's tier decision, with hysteresis (a pure twin-friendly scalar rule).

    The candidate is the tier of the smoothed score. With no earlier decision it is adopted.
    Otherwise the previous tier is kept unless the candidate is confirmed: the smoothed score is
    ``tier_change_margin`` points past the boundary between the two tiers, or the raw score has
    been past that boundary in each of the last ``tier_change_batches`` batches (this one
    included). A raised guardrail (a swing beyond ``guardrail_threshold``) always holds the
    previous tier.

    Args:
        smoothed: This batch's smoothed score.
        score: This batch's raw score.
        guardrail: Whether this batch's swing raised the guardrail.
        previous: Earlier batches' (raw score, decided tier), oldest first.
        policy: Tier cutoffs, margin, batches, guardrail threshold.

    Returns:
        (decided tier, candidate tier, reason the previous tier was held or ""); no tier
        (None, None, "") for a missing smoothed score.
    """
    bounds = _tier_bounds(policy)
    candidate = score_tier(np.array([smoothed]), policy)[0]
    return _decide_tier(smoothed, score, guardrail, previous, policy, candidate, bounds)


def _decide_tier(
    smoothed: float,
    score: float,
    guardrail: bool,
    previous: list[tuple[float, str]],
    policy: PolicyConfig,
    candidate: str | None,
    bounds: dict[str, tuple[int, float]],
) -> tuple[str | None, str | None, str]:
    """:func:`stable_tier` given the candidate tier and the tier bounds (computed once a batch).

    A missing smoothed score (no candidate tier) decides no tier: nothing to hold a tier
    against, and a missing score is never read as any tier.
    """
    if candidate is None:
        return None, None, ""
    prev = previous[-1][1] if previous else None
    if prev not in bounds:  # no earlier decision, or one outside the tiers (graduated)
        return candidate, candidate, ""
    if guardrail:
        return (
            prev,
            candidate,
            f"guardrail: the score moved more than {policy.guardrail_threshold:g} points since "
            f"the previous batch; tier {prev} held (smoothed score points to {candidate})",
        )
    if candidate == prev:
        return prev, candidate, ""
    up = bounds[candidate][0] < bounds[prev][0]
    boundary = bounds[candidate][1] if up else bounds[prev][1]
    past = smoothed - boundary if up else boundary - smoothed
    now = score >= boundary if up else score < boundary
    if past >= policy.tier_change_margin and now:
        return candidate, candidate, ""
    n = policy.tier_change_batches
    raw = [s for s, _ in previous[-(n - 1) :]] + [score] if n > 1 else [score]
    streak = 0
    for value in reversed(raw):
        if (value >= boundary) if up else (value < boundary):
            streak += 1
        else:
            break
    if streak >= n:
        return candidate, candidate, ""
    return (
        prev,
        candidate,
        f"hysteresis: the smoothed score points to tier {candidate}, {past:.1f} points past "
        f"the boundary ({policy.tier_change_margin:g} needed) and {streak} of "
        f"{n} batches confirm it; tier {prev} held",
    )


def stable_tiers(
    partner_ids,
    smoothed: np.ndarray,
    scores: np.ndarray,
    guardrail: np.ndarray,
    previous: dict[str, list[tuple[float, str]]],
    policy: PolicyConfig,
    frozen: np.ndarray | None = None,
    frozen_tier: str = OUT_OF_SCOPE_TIER,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`stable_tier` for a batch; ``frozen`` rows (out of scope) keep ``frozen_tier``.

    Returns:
        (decided tier, candidate tier, held reason), each (n,) object arrays.
    """
    n = len(smoothed)
    smoothed = np.asarray(smoothed, dtype=float)
    scores = np.asarray(scores, dtype=float)
    guardrail = np.asarray(guardrail, dtype=bool)
    frozen = np.zeros(n, dtype=bool) if frozen is None else np.asarray(frozen, dtype=bool)
    partner_ids = list(partner_ids)
    if not len(partner_ids) == len(scores) == len(guardrail) == len(frozen) == n:
        raise ValueError("stable_tiers: inputs of different lengths")
    candidates = score_tier(smoothed, policy)  # None where the smoothed score is missing
    candidates[frozen] = frozen_tier
    tiers = candidates.copy()
    reasons = np.full(n, "", dtype=object)
    bounds = _tier_bounds(policy)
    for i, pid in enumerate(partner_ids):
        earlier = previous.get(pid)
        if frozen[i] or not earlier or earlier[-1][1] not in bounds:
            continue  # frozen, or no earlier decision in the tiers: the candidate is adopted
        tiers[i], candidates[i], reasons[i] = _decide_tier(
            float(smoothed[i]),
            float(scores[i]),
            bool(guardrail[i]),
            earlier,
            policy,
            candidates[i],
            bounds,
        )
    return tiers, candidates, reasons


OVERRIDE_COLUMNS = ("partner_id", "tier", "action", "reason", "expires")


def apply_overrides(
    partner_ids,
    as_of,
    tiers: np.ndarray,
    overrides: pd.DataFrame,
) -> dict[str, np.ndarray]:
    """Account owners' manual overrides in force at each row's as_of (expires on or after it).

    Args:
        partner_ids: (n,) partner ids.
        as_of: One timestamp or (n,) timestamps.
        tiers: (n,) decided tiers (an override replaces them).
        overrides: Checked overrides: partner_id, tier (or ""), action (or ""), reason,
            expires (timestamps); at most one row per partner.

    Returns:
        score_tier (after overrides), override_tier, override_action, override_reason and
        override_expires (YYYY-MM-DD) per row ("" where no override is in force).
    """
    n = len(tiers)
    ids = pd.Series(np.asarray(partner_ids, dtype=object)).astype(str)
    when = pd.to_datetime(pd.Series(np.broadcast_to(np.asarray(as_of), (n,))))
    table = overrides.set_index(overrides["partner_id"].astype(str))
    out = {k: np.full(n, "", dtype=object) for k in ("tier", "action", "reason", "expires")}
    tiers = np.asarray(tiers, dtype=object).copy()
    hit = ids.isin(table.index).to_numpy()
    for i in np.flatnonzero(hit):
        row = table.loc[ids.iat[i]]
        if pd.Timestamp(row["expires"]) < when.iat[i].normalize():
            continue
        out["tier"][i] = row["tier"]
        out["action"][i] = row["action"]
        out["reason"][i] = row["reason"]
        out["expires"][i] = pd.Timestamp(row["expires"]).strftime("%Y-%m-%d")
        if row["tier"]:
            tiers[i] = row["tier"]
    return {"score_tier": tiers, **{f"override_{k}": v for k, v in out.items()}}
