"""Scenario planning: changed feature inputs, a different policy, the way up one tier.

Pure computation over a :class:`~partnerscore.models.bundle.PartnerModel` and a
:class:`~partnerscore.models.config.PolicyConfig`; the jobs live in ``serving/whatif.py``.

- :func:`apply_changes` / :func:`compare_scores`: re-score rows with some feature values set,
  and report the new predictions, score and tier next to the old ones, and every feature's
  change in effect (the driver deltas).
- :func:`reapply_policy`, :func:`migration_matrix`, :func:`revenue_by_segment`: a scores file
  re-scored under another policy (bands, adjustments, tier cutoffs) without the model: the
  file's unweighted layer points (``score_model_<layer>``) are all a policy needs.
- :func:`upgrade_paths`: for each partner, the smallest changes to actionable features that
  move its score into the next better tier (greedy coordinate search over a grid inside each
  feature's observed training range, scored by the model).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from partnerscore.features.core import OptionError, PartnerscoreError, case_key, quoted
from partnerscore.features.registry import LAYERS, FeatureSpec, is_recency
from partnerscore.models import explain
from partnerscore.models import policy as pol
from partnerscore.models.bundle import PartnerModel, respellings
from partnerscore.models.config import SEGMENT_KEYS, PolicyConfig
from partnerscore.models.frame_check import out_of_range
from partnerscore.models.scoring import policy_score, score_features
from partnerscore.models.treeshap import TreeShapTables

SEGMENT_COLUMNS = ("region", "partner_type")
# the columns of revenue_by_segment, the schema of ``whatif --policy --out``
REVENUE_BY_SEGMENT_COLUMNS = (
    *SEGMENT_COLUMNS,
    "tier",
    "partners_before",
    "partners_after",
    "revenue_before",
    "revenue_after",
    "revenue_delta",
)


def split_assignments(assignments: list[str]) -> list[tuple[str, str, str]]:
    """(text, feature, value) of each ``feature=value`` text, name and value trimmed.

    Raises:
        OptionError: A text without ``=`` or without a feature name, or a feature set twice.
    """
    out = []
    for text in assignments:
        name, sep, value = text.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise OptionError(f"--set {text}: expected feature=value")
        if any(name == earlier for _, earlier, _ in out):
            raise OptionError(f"--set {text}: {name} is set twice; give each feature once")
        out.append((text, name, value))
    return out


def parse_changes(
    assignments: list[str],
    specs: list[FeatureSpec],
    categories: dict[str, list[str]] | None = None,
) -> dict[str, object]:
    """``feature=value`` strings as a mapping, checked against the model's features.

    Args:
        assignments: ``feature=value`` texts (an empty value: missing).
        specs: The model's features.
        categories: Categorical feature -> the categories the model was trained on; a value
            outside them would be scored as missing, so it is refused instead, unless it
            equals exactly one of them but for case (read as that one, as scoring reads it).

    Raises:
        PartnerscoreError: Malformed assignment, unknown feature, a non-numeric or infinite
            value for a numeric feature, a value ``score --features`` refuses as impossible
            (an ``age_days`` outside 0 to 36,525 days, a value outside its unit's range), or an
            unknown category (one line naming it).
    """
    known = {s.name: s for s in specs}
    out: dict[str, object] = {}
    for text, name, value in split_assignments(assignments):
        if name not in known:
            raise PartnerscoreError(f"--set {text}: '{name}' is not a feature of the model")
        if known[name].kind == "numeric":
            try:
                number = float(value) if value.lower() not in ("", "nan", "none") else np.nan
            except ValueError as exc:
                raise PartnerscoreError(f"--set {text}: '{value}' is not a number") from exc
            if np.isinf(number):
                raise PartnerscoreError(f"--set {text}: '{value}' is not a finite number")
            bad, why = out_of_range(known[name], np.array([number]))  # as score --features
            if bad.any():
                raise PartnerscoreError(f"--set {text}: '{value}' {why}")
            out[name] = number
        else:
            seen = (categories or {}).get(name)
            if value and seen is not None and value not in seen:
                value = respellings([value], seen).get(value, value)  # as scoring reads it
            if value and seen is not None and value not in seen:
                listed = ", ".join(seen[:12]) + (", ..." if len(seen) > 12 else "")
                twins = [c for c in seen if case_key(c) == case_key(value)]
                which = (
                    f" (it equals {' and '.join(map(quoted, twins))} but for case)" if twins else ""
                )
                raise PartnerscoreError(
                    f"--set {text}: the model never saw {name} '{value}'{which} (it would be "
                    f"scored as missing); known: {listed}"
                )
            out[name] = value or None
    return out


def value_text(value) -> str:
    """A feature value as a reader wants it: ``missing``, ``30``, ``26.94``, ``1,250,000``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "missing"
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        number = float(value)
        if abs(number) >= 1000:
            return f"{number:,.0f}"
        return f"{number:.2f}".rstrip("0").rstrip(".")
    return str(value)


def apply_changes(features: pd.DataFrame, changes: dict[str, object]) -> pd.DataFrame:
    """A copy of ``features`` with the given columns set to the given values."""
    out = features.copy()
    for name, value in changes.items():
        out[name] = value
    return out


def compare_scores(
    model: PartnerModel, before: pd.DataFrame, after: pd.DataFrame, policy: PolicyConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score rows before and after a change.

    Returns:
        (summary, drivers): ``summary`` has one row per measure (pred_revenue,
        pred_engagement, score, score_tier, quadrant) and row of input with columns
        partner_id, measure, before, after, delta (numbers only); ``drivers`` one row per
        (partner, feature) whose value or effect changed: value_before, value_after,
        revenue_effect_before/after/delta (dollars), engagement_effect_before/after/delta
        (probability), sorted by the largest absolute change of either effect.
    """
    a = score_features(model, before, policy=policy)
    b = score_features(model, after, policy=policy)
    rows = []
    for i in range(len(a)):
        for measure in ("pred_revenue", "pred_engagement", "score", "score_tier", "quadrant"):
            x, y = a[measure].iat[i], b[measure].iat[i]
            numeric = measure not in ("score_tier", "quadrant")
            rows.append(
                {
                    "partner_id": a["partner_id"].iat[i],
                    "measure": measure,
                    "before": x,
                    "after": y,
                    "delta": float(y) - float(x) if numeric else np.nan,
                }
            )
    summary = pd.DataFrame(rows, columns=["partner_id", "measure", "before", "after", "delta"])
    parts = []
    for spec in model.feature_specs:
        f = spec.name
        frame = pd.DataFrame(
            {
                "partner_id": a["partner_id"],
                "feature": f,
                "label": spec.label,
                "value_before": a[f].astype(object),
                "value_after": b[f].astype(object),
                "revenue_effect_before": a[f"shap_revenue_{f}"],
                "revenue_effect_after": b[f"shap_revenue_{f}"],
                "engagement_effect_before": a[f"shap_engagement_{f}"],
                "engagement_effect_after": b[f"shap_engagement_{f}"],
            }
        )
        parts.append(frame)
    drivers = pd.concat(parts, ignore_index=True)
    for head in ("revenue", "engagement"):
        drivers[f"{head}_effect_delta"] = (
            drivers[f"{head}_effect_after"] - drivers[f"{head}_effect_before"]
        )
    changed_value = ~(
        (drivers["value_before"] == drivers["value_after"])
        | (drivers["value_before"].isna() & drivers["value_after"].isna())
    )
    moved = (drivers["revenue_effect_delta"].abs() >= explain.REVENUE_EPS) | (
        drivers["engagement_effect_delta"].abs() >= explain.ENGAGEMENT_EPS
    )
    drivers = drivers[changed_value | moved].copy()
    # rank by the effect change, dollars and probability points on one scale via the score
    drivers["_rank"] = np.maximum(
        drivers["revenue_effect_delta"].abs() / max(float(a["pred_revenue"].abs().max()), 1.0),
        drivers["engagement_effect_delta"].abs(),
    )
    drivers = drivers.sort_values(["partner_id", "_rank"], ascending=[True, False], kind="stable")
    return summary, drivers.drop(columns="_rank").reset_index(drop=True)


CANDIDATE_CHUNK = 8_192
"""Candidate rows :func:`upgrade_paths` scores at once: its memory is a few KB per candidate
row (contributions of both heads, points, layers), and a batch has up to partners x actionable
features x grid candidates per step (1,890 partners: ~150,000, 0.9 GB at once)."""


class CandidateRows(NamedTuple):
    """The rows :func:`candidate_scores` changes, prepared once for all their candidates.

    Attributes:
        current: The feature rows as given.
        frame: Their columns the policy reads (``age_days``, the segment keys), respelled
            (:meth:`~partnerscore.models.bundle.PartnerModel.respell`); None: score each
            candidate frame as :func:`policy_scores` does (a head without compiled SHAP tables).
        matrix: (k, n) the prepared rows as the heads' compiled SHAP tables read them, one
            contiguous row per model feature (``TreeShapTables.feature_major``).
        segments: The prepared rows' columns the heads' per-row offsets read
            (``offset_columns``).
        codes: Per head (revenue, engagement), the matrix's value codes
            (``TreeShapTables.codes``).
    """

    current: pd.DataFrame
    frame: pd.DataFrame | None = None
    matrix: np.ndarray | None = None
    segments: pd.DataFrame | None = None
    codes: tuple[dict[int, np.ndarray], ...] = ()


def candidate_rows(model: PartnerModel, current: pd.DataFrame) -> CandidateRows:
    """``current`` prepared for :func:`candidate_scores` (respelled, prepared, feature-major).

    A candidate is one of these rows with one numeric feature set: its model input is the
    row's prepared values with that one value set (preparing is row by row, and a numeric
    value prepares to itself), so the rows are prepared once instead of every candidate
    frame; without compiled tables for both heads the frames are scored as they are.
    """
    current = current.reset_index(drop=True)
    tables = [head._shap_tables() for head in (model.revenue, model.engagement)]
    if any(t is None for t in tables):
        return CandidateRows(current)
    frame = model.respell(current).frame  # as policy_scores
    prepared = model.prepare(frame)
    matrix = TreeShapTables.feature_major(prepared)
    columns = [*model.revenue.offset_columns(), *model.engagement.offset_columns()]
    return CandidateRows(
        current=current,
        frame=frame[[c for c in ("age_days", *SEGMENT_KEYS) if c in frame.columns]],
        matrix=matrix,
        segments=prepared[list(dict.fromkeys(columns))],
        codes=tuple(t.codes(matrix) for t in tables),
    )


def candidate_scores(
    model: PartnerModel,
    current: pd.DataFrame | CandidateRows,
    rows: np.ndarray,
    feats: np.ndarray,
    values: np.ndarray,
    specs: list,
    policy: PolicyConfig,
    chunk: int = CANDIDATE_CHUNK,
) -> np.ndarray:
    """The policy score of each candidate (``current``'s row with one feature changed).

    Candidate ``i`` is row ``rows[i]`` with feature ``specs[feats[i]]`` set to ``values[i]``.
    Built and scored ``chunk`` candidates at a time: every score depends on its own row only,
    so they are those of one pass, bit for bit (``tests/serving/test_whatif.py``). Each
    chunk's model input is gathered from the rows' feature matrix (:func:`candidate_rows`)
    and scored by :func:`~partnerscore.models.scoring.policy_score` with those contributions:
    the scores of :func:`policy_scores` on the candidate frames, bit for bit (tested), without
    building, respelling and preparing a frame of every feature per chunk.
    """
    base = current if isinstance(current, CandidateRows) else candidate_rows(model, current)
    out = np.empty(len(rows))
    for start in range(0, len(rows), chunk):
        part = slice(start, start + chunk)
        score = _frame_scores if base.matrix is None else _matrix_scores
        out[part] = score(model, base, rows[part], feats[part], values[part], specs, policy)
    return out


def _frame_scores(
    model: PartnerModel,
    base: CandidateRows,
    rows: np.ndarray,
    feats: np.ndarray,
    values: np.ndarray,
    specs: list,
    policy: PolicyConfig,
) -> np.ndarray:
    """:func:`candidate_scores` of one chunk: the candidate frames, by :func:`policy_scores`."""
    cand = base.current.iloc[rows].reset_index(drop=True).copy()
    for j, spec in enumerate(specs):
        sel = feats == j
        if sel.any():
            col = np.array(pd.to_numeric(cand[spec.name], errors="coerce"), dtype=float)
            col[sel] = values[sel]
            cand[spec.name] = col
    return policy_scores(model, cand, policy)


def _matrix_scores(
    model: PartnerModel,
    base: CandidateRows,
    rows: np.ndarray,
    feats: np.ndarray,
    values: np.ndarray,
    specs: list,
    policy: PolicyConfig,
) -> np.ndarray:
    """:func:`candidate_scores` of one chunk: the rows' feature matrix with each value set."""
    index = {s.name: i for i, s in enumerate(model.feature_specs)}
    matrix = np.take(base.matrix, rows, axis=1)  # a copy, feature-major and contiguous
    frame = base.frame.iloc[rows].reset_index(drop=True)
    segments = base.segments.iloc[rows].reset_index(drop=True)
    changed = []  # (model feature, candidates that set it)
    for j, spec in enumerate(specs):
        sel = feats == j
        if not sel.any():
            continue
        matrix[index[spec.name], sel] = values[sel]
        changed.append((index[spec.name], sel))
        for part in (frame, segments):  # as the frame's column (age_days: the policy's band)
            if spec.name in part.columns:
                col = np.array(pd.to_numeric(part[spec.name], errors="coerce"), dtype=float)
                col[sel] = values[sel]
                part[spec.name] = col
    raw = {}
    heads = (("revenue", model.revenue), ("engagement", model.engagement))
    for (name, head), row_codes in zip(heads, base.codes, strict=True):
        tables = head._shap_tables()
        # a code depends on its value only: the rows' codes, each changed value coded anew
        codes = {f: np.take(c, rows) for f, c in row_codes.items()}
        for f, sel in changed:
            if f in codes:
                codes[f][sel] = tables.code(f, matrix[f, sel])
        # (n, k + 1) as a view of the feature-major result: the explanation's arithmetic is
        # element by element and its row sums add column by column, so the layout changes no
        # bit, and reading a feature's column is reading contiguous memory
        by_feature = tables.contributions_by_feature(matrix, codes)
        contrib = head.with_offsets(by_feature.T, segments)
        raw[name] = (contrib[:, :-1], contrib[:, -1])
    return policy_score(model, frame, policy, num_threads=1, raw=raw).score


def policy_scores(model: PartnerModel, features: pd.DataFrame, policy: PolicyConfig) -> np.ndarray:
    """The policy's composite score only (no drivers or text): equal to ``score_features``.

    The fast path of :func:`upgrade_paths`: the same computation
    (:func:`~partnerscore.models.scoring.policy_score`) without the columns;
    ``tests/serving/test_whatif.py`` checks it against
    :func:`~partnerscore.models.scoring.score_features`.
    """
    features = model.respell(features.reset_index(drop=True)).frame  # as score_features
    return policy_score(model, features, policy, num_threads=1).score


def reapply_policy(scores: pd.DataFrame, policy: PolicyConfig) -> pd.DataFrame:
    """Score and tier of every row of a scores file under another policy.

    Needs the file's ``score_base``, ``score_model_<layer>`` and ``age_days`` (and the segment
    columns the policy adjusts by); predictions do not change, so no model is needed.

    ``tier_before`` is the tier of the file's own score (``score_tier_raw``), not the decided
    ``score_tier``: smoothing, hysteresis, guardrails and overrides would otherwise count as
    the policy's effect.

    Returns:
        partner_id, score_before, tier_before, score_after, tier_after, maturity_band_after.

    Raises:
        PartnerscoreError: A needed column is missing (a scores file from an older version).
    """
    needed = ["score_base", *(f"score_model_{layer}" for layer in LAYERS), "age_days"]
    for col in needed:
        if col not in scores:
            raise PartnerscoreError(
                f"scores file: missing column '{col}' (score again with this version)"
            )
    band, mult = pol.maturity_band(scores["age_days"].to_numpy(float), policy)
    factor = pol.adjustment_factor(scores, policy)
    layers = {layer: scores[f"score_model_{layer}"].to_numpy(float) for layer in LAYERS}
    score, _, _ = pol.weighted_score(scores["score_base"].to_numpy(float), layers, mult, factor)
    tier = _tier_text(pol.score_tier(score, policy))  # no score: "missing", never a tier
    graduated = scores["score_tier"].astype(str).to_numpy() == pol.OUT_OF_SCOPE_TIER
    if "score_tier_raw" in scores:  # scope, not a decision: the raw tier says it too
        graduated |= scores["score_tier_raw"].astype(str).to_numpy() == pol.OUT_OF_SCOPE_TIER
    tier[graduated] = pol.OUT_OF_SCOPE_TIER
    # like against like: the score's own tier under the file's policy, before smoothing,
    # hysteresis, guardrails and overrides decided the published one (comparing the decided
    # tier moved 82 of the demo's 2,000 partners under an unchanged policy)
    before = "score_tier_raw" if "score_tier_raw" in scores else "score_tier"
    tier_before = _tier_text(scores[before])
    tier_before[graduated] = pol.OUT_OF_SCOPE_TIER
    return pd.DataFrame(
        {
            "partner_id": scores["partner_id"].astype(str).to_numpy(),
            "score_before": scores["score"].to_numpy(float),
            "tier_before": tier_before,
            "score_after": score,
            "tier_after": tier,
            "maturity_band_after": band,
        }
    )


MISSING_TIER = "missing"
"""A missing tier (a row without a score) in the what-if's tables: ``forecast``'s label for a
missing segment value."""


def _tier_text(values) -> np.ndarray:
    """Tiers as text, a missing one (None, NaN) as :data:`MISSING_TIER` (object array).

    A missing tier was NaN beside the tier names (``astype(str)`` keeps it missing), and the
    migration matrix's sort of them failed: ``whatif --policy`` stopped with "unexpected
    TypeError", exit 70.
    """
    column = pd.Series(np.asarray(values, dtype=object), dtype=object)
    return column.where(column.notna(), MISSING_TIER).astype(str).to_numpy(dtype=object)


def migration_matrix(moves: pd.DataFrame, tiers: list[str]) -> pd.DataFrame:
    """Partners per (tier before, tier after): rows before, columns after, in tier order."""
    seen = set(moves["tier_before"]) | set(moves["tier_after"])
    order = [*tiers, *sorted(seen - set(tiers))]
    table = pd.crosstab(moves["tier_before"], moves["tier_after"])
    table = table.reindex(index=order, columns=order, fill_value=0)
    table.index.name, table.columns.name = "tier_before", "tier_after"
    return table


def revenue_by_segment(scores: pd.DataFrame, moves: pd.DataFrame, tiers: list[str]) -> pd.DataFrame:
    """Expected revenue per segment and tier, before and after the policy change.

    Returns:
        :data:`REVENUE_BY_SEGMENT_COLUMNS`: region, partner_type, tier, partners_before,
        partners_after, revenue_before, revenue_after, revenue_delta (dollars of expected
        revenue in that tier).
    """
    seg = {c: scores[c].astype(str).to_numpy() if c in scores else "" for c in SEGMENT_COLUMNS}
    rev = scores["pred_revenue"].to_numpy(float)
    parts = []
    for when in ("before", "after"):
        parts.append(
            pd.DataFrame({**seg, "tier": moves[f"tier_{when}"].to_numpy(), "revenue": rev, "n": 1})
            .groupby([*SEGMENT_COLUMNS, "tier"])
            .sum()
            .add_suffix(f"_{when}")
        )
    table = pd.concat(parts, axis=1).fillna(0).reset_index()
    table = table.rename(columns={"n_before": "partners_before", "n_after": "partners_after"})
    table["revenue_delta"] = table["revenue_after"] - table["revenue_before"]
    rank = {t: i for i, t in enumerate(tiers)}
    table["_t"] = table["tier"].map(rank).fillna(len(rank))
    table = table.sort_values([*SEGMENT_COLUMNS, "_t"], kind="stable").drop(columns="_t")
    table[["partners_before", "partners_after"]] = table[
        ["partners_before", "partners_after"]
    ].astype(int)
    return table[list(REVENUE_BY_SEGMENT_COLUMNS)].reset_index(drop=True)


def training_ranges(model: PartnerModel) -> dict[str, tuple[float, float]]:
    """Observed (min, max) of each numeric feature in the training data, from the boosters.

    LightGBM records every feature's range in the model (``feature_infos``; each head's
    ``feature_ranges``); features neither head ever split on are left out (changing them cannot
    move a score).
    """
    out: dict[str, tuple[float, float]] = {}
    for head in (model.revenue, model.engagement):
        for name, (lo, hi) in head.feature_ranges().items():
            if name in out:
                lo, hi = min(lo, out[name][0]), max(hi, out[name][1])
            out[name] = (lo, hi)
    return out


INTEGER_UNITS = ("count", "days")
REFINE_STEPS = 8  # halvings of a grid step: a change within 1/256 of the step of the least
RECENCY_NOW = 0.0
"""A recency's value after a new event now (features count events strictly before as_of: one
just before it is a fraction of a day old); the only value the search tries for a recency."""


def search_values(
    spec: FeatureSpec, x: np.ndarray, bounds: tuple[float, float], grid: int
) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """The values :func:`upgrade_paths` tries for one feature of rows whose values are ``x``.

    ``grid`` values from the current value (a missing one: the worse end of the training range
    ``bounds``) to the better end, counts and days rounded to whole numbers in the better
    direction. A recency (registry ``recency``: days since the latest event) is tried at
    :data:`RECENCY_NOW` only, missing or not: an owner cannot make the last touchpoint 37 days
    ago, only add one now; any value in between would suggest an action nobody can take.

    Returns:
        Per value tried: (grid index from 1, value per row, the value tried before it per row
        (the current value for the first; NaN where it is missing or the feature is a
        recency: nothing to bisect towards), rows where it is a change for the better).
    """
    if is_recency(spec):
        now = np.full(len(x), RECENCY_NOW)
        return [(1, now, np.full(len(x), np.nan), ~(x <= RECENCY_NOW))]  # NaN: ~False
    lo, hi = bounds
    up = spec.direction == "higher_is_better"
    start = np.where(np.isfinite(x), x, lo if up else hi)
    end = hi if up else lo
    previous = np.where(np.isfinite(x), start, np.nan)  # a missing value: no bracket
    out = []
    for g in range(1, grid + 1):
        v = start + (end - start) * g / grid
        if spec.unit in INTEGER_UNITS:
            v = np.ceil(v) if up else np.floor(v)
        better = v > start if up else v < start
        out.append((g, v, previous, better & ~(np.isfinite(x) & (v == x))))
        previous = v
    return out


def refine_reaching(
    model: PartnerModel,
    current: pd.DataFrame | CandidateRows,
    specs: list,
    policy: PolicyConfig,
    candidates: tuple[np.ndarray, ...],
    target: np.ndarray,
    steps: int = REFINE_STEPS,
) -> tuple[np.ndarray, np.ndarray]:
    """Move each row's first reaching grid value per feature back while it still reaches.

    Returns the candidates' values and scores, the first reaching grid value of each (row,
    feature) moved towards the grid value before it by bisection. The grid alone overstates
    the change a suggestion asks for by up to a whole grid step, a fifth of the feature's
    training range by default. Only the cheapest reaching candidate of each (row, feature)
    moves, and only to values that were scored and reach the target, so every suggestion still
    reaches it; with a score monotone in the feature (the models' direction constraints) it is
    the least such change to within 1/2**steps of a grid step (to the whole number for counts
    and days).

    Args:
        model: The model (scores the bisection's values).
        current: Feature rows the candidates change (or them prepared: :func:`candidate_rows`).
        specs: Actionable feature specs (``feats`` index them).
        policy: Scoring policy.
        candidates: (rows, feats, grid, values, below, score): candidate i sets feature
            ``specs[feats[i]]`` of row ``rows[i]`` to ``values[i]``, its ``grid[i]``-th grid
            value; ``below[i]`` is the grid value before it (the current value for the
            first; NaN when that is missing: the missing value scores apart from every
            value, so the first grid value stays; NaN for a recency, whose one value, now,
            stays); ``score`` their scores.
        target: Each row's score to reach.
        steps: Most halvings.
    """
    rows, feats, grid, values, below, score = candidates
    values, score = values.copy(), score.copy()
    reach = score >= target[rows]
    order = np.lexsort((grid, feats, rows))
    first = order[reach[order]]
    keys = rows[first] * len(specs) + feats[first]
    first = first[np.r_[True, keys[1:] != keys[:-1]]] if len(first) else first
    first = first[np.isfinite(below[first])]
    if not len(first):
        return values, score
    lo, hi, best = below[first].astype(float), values[first].astype(float), score[first]
    up = np.array([specs[f].direction == "higher_is_better" for f in feats[first]])
    whole = np.array([specs[f].unit in INTEGER_UNITS for f in feats[first]])
    for _ in range(steps):
        mid = (lo + hi) / 2
        mid = np.where(whole, np.where(up, np.ceil(mid), np.floor(mid)), mid)
        open_ = mid != hi
        if not open_.any():
            break
        idx = np.flatnonzero(open_)
        trial = candidate_scores(
            model, current, rows[first][idx], feats[first][idx], mid[idx], specs, policy
        )
        ok = trial >= target[rows[first][idx]]
        hi[idx[ok]], best[idx[ok]] = mid[idx[ok]], trial[ok]
        lo[idx[~ok]] = mid[idx[~ok]]
    values[first], score[first] = hi, best
    return values, score


def change_cost(
    values: np.ndarray,
    before: np.ndarray,
    feats: np.ndarray,
    specs: list,
    ranges: dict[str, tuple[float, float]],
) -> np.ndarray:
    """Each change's size as a share of its feature's training range.

    A missing value counts from where the search starts it, the worse end of the range (the
    bottom for higher-is-better features, the top for lower-is-better ones): counted from the
    bottom, "days since the last lead: none -> 0" cost nothing and won every tie. A recency's
    one candidate, 0 days (:func:`search_values`), is costed the same way.
    """
    lo = np.array([ranges[s.name][0] for s in specs])
    hi = np.array([ranges[s.name][1] for s in specs])
    up = np.array([s.direction == "higher_is_better" for s in specs])
    start = np.where(np.isfinite(before), before, np.where(up, lo, hi)[feats])
    return np.abs(values - start) / (hi - lo)[feats]


def upgrade_paths(
    model: PartnerModel,
    features: pd.DataFrame,
    tiers: np.ndarray,
    policy: PolicyConfig,
    *,
    grid: int = 5,
    max_steps: int = 3,
) -> list[list[tuple[str, float, float]]]:
    """Per row, the changes to actionable features that lift the score into the next tier.

    Greedy coordinate search: at each step, every actionable feature the model uses is tried at
    ``grid`` values between the current value and the end of its observed training range in
    its better direction (counts and days rounded to whole numbers), a recency (days since the
    latest event) at 0 only, an event now (:func:`search_values`); the features of a missing
    optional table (absent columns) are not tried. If some single change
    reaches the next tier's lower bound, it is cut back by bisection towards the grid value
    before it while it still reaches (:func:`refine_reaching`), the cheapest one wins (cost:
    the change as a share of the feature's training range) and the search stops; otherwise
    the change with the largest score gain is kept and the search goes on, up to
    ``max_steps`` features.

    Args:
        model: The model (scores every candidate).
        features: Feature rows (as scored).
        tiers: Each row's current tier (rows in the best tier, or outside the tiers, are
            skipped).
        policy: Scoring policy (tier cutoffs, bands, adjustments).
        grid: Values tried per feature and step.
        max_steps: Most features changed.

    Returns:
        Per row a list of (feature, from, to); empty when the row is skipped or no path within
        ``max_steps`` changes reaches the next tier.
    """
    features = features.reset_index(drop=True)
    n = len(features)
    bounds = pol._tier_bounds(policy)
    by_rank = {rank: (name, lower) for name, (rank, lower) in bounds.items()}
    target = np.full(n, np.nan)
    for i, t in enumerate(np.asarray(tiers, dtype=object)):
        if t in bounds and bounds[t][0] > 0:
            target[i] = by_rank[bounds[t][0] - 1][1]
    ranges = training_ranges(model)
    specs = [
        s
        for s in model.feature_specs
        if getattr(s, "actionable", False)
        and s.kind == "numeric"
        and s.direction != "neutral"
        and s.name in ranges
        and ranges[s.name][1] > ranges[s.name][0]
        and s.name in features.columns  # a missing optional table's features are absent
    ]
    paths: list[list[tuple[str, float, float]]] = [[] for _ in range(n)]
    active = np.flatnonzero(np.isfinite(target))
    if not specs or not len(active):
        return paths
    current = features.iloc[active].reset_index(drop=True).copy()
    origin = current.copy()
    steps: list[list[tuple[str, float, float]]] = [[] for _ in active]
    done = np.zeros(len(active), dtype=bool)
    base_score = policy_scores(model, current, policy)
    for _ in range(max_steps):
        live = np.flatnonzero(~done)
        if not len(live):
            break
        rows, feats, values, below, order, before = [], [], [], [], [], []
        for j, spec in enumerate(specs):
            x = pd.to_numeric(current[spec.name].iloc[live], errors="coerce").to_numpy(float)
            for g, v, previous, keep in search_values(spec, x, ranges[spec.name], grid):
                rows.append(live[keep])
                feats.append(np.full(keep.sum(), j))
                values.append(v[keep])
                below.append(previous[keep])
                order.append(np.full(keep.sum(), g))
                before.append(x[keep])
        rows_a, feats_a, values_a, below_a, order_a, before_a = (
            np.concatenate(r) for r in (rows, feats, values, below, order, before)
        )
        if not len(rows_a):
            break
        prepared = candidate_rows(model, current)  # the step's rows, for all its candidates
        score = candidate_scores(model, prepared, rows_a, feats_a, values_a, specs, policy)
        values_a, score = refine_reaching(
            model,
            prepared,
            specs,
            policy,
            (rows_a, feats_a, order_a, values_a, below_a, score),
            target[active],
        )
        reach = score >= target[active][rows_a]
        cost = change_cost(values_a, before_a, feats_a, specs, ranges)
        gain = score - base_score[rows_a]
        pick = chosen_candidates(rows_a, feats_a, reach, cost, gain)
        picked = rows_a[pick]
        hit = reach[pick]
        done[picked[hit]] = True
        stuck = ~hit & (gain[pick] <= 0)  # nothing actionable helps: no path
        done[picked[stuck]] = True
        for r in picked[stuck]:
            steps[r] = []
        take = pick[~stuck]
        for j in np.unique(feats_a[take]):
            name = specs[j].name
            mine = take[feats_a[take] == j]
            col = np.array(pd.to_numeric(current[name], errors="coerce"), dtype=float)
            col[rows_a[mine]] = values_a[mine]
            current[name] = col
        base_score[rows_a[take]] = score[take]
        for k in take:
            steps[rows_a[k]].append((specs[feats_a[k]].name, 0.0, float(values_a[k])))
    reached = base_score >= target[active]
    numbers: dict[str, np.ndarray | None] = {}  # numeric columns' values before, as floats
    for k, r in enumerate(active):
        if not reached[k]:
            continue
        merged: dict[str, float] = {}
        for name, _, value in steps[k]:
            merged[name] = value
        for name in merged:
            if name not in numbers:
                numbers[name] = as_numbers(origin[name])
        paths[r] = [(name, number_at(origin, name, numbers, k), v) for name, v in merged.items()]
    return paths


def as_numbers(column: pd.Series) -> np.ndarray | None:
    """A column of numpy floats or integers as floats (None for any other dtype)."""
    if isinstance(column.dtype, np.dtype) and column.dtype.kind in "fiu":
        return column.to_numpy(dtype=float)
    return None


def number_at(
    frame: pd.DataFrame, name: str, numbers: dict[str, np.ndarray | None], k: int
) -> float:
    """Row ``k`` of column ``name`` as a number, NaN when missing or not a number.

    ``numbers[name]`` (:func:`as_numbers`) holds it already for a numeric numpy column (the
    same float); any other value is read one at a time, as ``pd.to_numeric`` reads it.
    """
    if numbers[name] is not None:
        return float(numbers[name][k])
    return float(pd.to_numeric(pd.Series([frame[name].iat[k]]), errors="coerce").iat[0])


def chosen_candidates(
    rows: np.ndarray,
    feats: np.ndarray,
    reach: np.ndarray,
    cost: np.ndarray,
    gain: np.ndarray,
) -> np.ndarray:
    """The candidate :func:`upgrade_paths` keeps for each row: indices, rows ascending.

    A row with candidates that reach its target keeps the cheapest of them (ties: the lower
    feature, then the earlier candidate); a row without keeps the one with the largest gain
    (ties: the cheaper, then the earlier). NaN sorts last (never the largest gain, never the
    cheapest), as pandas' ``sort_values`` of each row's candidates did: one ``np.lexsort``
    per kind of row instead (``tests/serving/test_whatif.py`` compares it with the per-row
    sort under hypothesis).
    """
    index = np.arange(len(rows))
    hit_rows = np.unique(rows[reach])
    hits = index[reach]
    hits = hits[np.lexsort((feats[hits], cost[hits], rows[hits]))]
    rest = index[~np.isin(rows, hit_rows)]
    rest = rest[np.lexsort((cost[rest], -gain[rest], rows[rest]))]
    order = np.concatenate([hits, rest])
    order = order[np.argsort(rows[order], kind="stable")]
    first = np.r_[True, rows[order][1:] != rows[order][:-1]] if len(order) else []
    return order[first]
