"""Per-row scoring: predictions, output-scale SHAP effects, subscores, drivers and the policy.

:func:`score_features` is what the registered MLflow pyfunc returns and what the batch job builds
on. It is deterministic and vectorised: SHAP contributions are computed once per head and the
predictions are derived from them (so drivers and predictions can never disagree); driver
sentences are built only for the top drivers of each row, grouped by feature.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from partnerscore.features.core import PartnerscoreError, as_of_dates
from partnerscore.features.registry import LAYERS
from partnerscore.models import explain
from partnerscore.models import policy as pol
from partnerscore.models.bundle import RESPELLED, UNSEEN, PartnerModel
from partnerscore.models.config import PolicyConfig
from partnerscore.models.frame_check import unseen_categories

PASSTHROUGH = ("partner_name", "signed_at", "tier", "region", "industry", "partner_type")
MIN_ROWS_PER_THREAD = 5000
MIN_DRIVER_POINTS = 0.05  # a feature moving the score by less than this is nobody's driver


def contributions(
    model: PartnerModel, features: pd.DataFrame, num_threads: int | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Both heads' SHAP contributions, computed on row blocks by ``num_threads`` threads.

    Each thread asks LightGBM for one thread (or runs the compiled tables, whose numpy work
    releases the GIL), so the cores are used once either way. Rows are independent: the result
    is identical to one ``model.raw_contributions`` call.
    """
    threads = num_threads or max(model.revenue.n_jobs, model.engagement.n_jobs, 1)
    n = len(features)
    if threads <= 1 or n < 2 * MIN_ROWS_PER_THREAD:
        return model.raw_contributions(features, num_threads=threads)
    model.raw_contributions(features.iloc[:1], num_threads=1)  # builds cached state once
    bounds = np.linspace(0, n, min(threads, n // MIN_ROWS_PER_THREAD) + 1).astype(int)
    blocks = [features.iloc[a:b] for a, b in itertools.pairwise(bounds)]
    with ThreadPoolExecutor(len(blocks)) as pool:
        parts = list(pool.map(lambda block: model.raw_contributions(block, num_threads=1), blocks))
    return {
        head: (
            np.concatenate([p[head][0] for p in parts]),
            np.concatenate([p[head][1] for p in parts]),
        )
        for head in parts[0]
    }


def repeated_text(values) -> pd.api.extensions.ExtensionArray:
    """A ``str`` column from text with few distinct values (missing stays missing).

    Each distinct value is encoded once and gathered by Arrow, instead of converting every
    row's Python string: ~15x faster for columns such as the intervention detail.
    """
    codes, uniques = pd.factorize(np.asarray(values, dtype=object))
    table = pa.array(np.asarray(uniques, dtype=object), type=pa.string())
    return pd.array(table.take(pa.array(codes, mask=codes < 0)), dtype="str")


def top_features(points: np.ndarray, m: int, positive: bool) -> np.ndarray:
    """Column indices of each row's ``m`` largest (``positive``) or smallest values, best first.

    Ties go to the lower column index, so the ranking is deterministic: the first ``m`` columns
    of a stable ``argsort``. For finite values they are picked by ``m`` passes of ``argmax``
    (the first maximum), each pick then masked, far cheaper than sorting whole rows.
    """
    n, k = points.shape
    m = min(m, k)
    key = points if positive else -points
    if not np.isfinite(points).all():  # NaN and infinities: the stable sort itself
        return np.argsort(-key, axis=1, kind="stable")[:, :m]
    key = key.copy()
    rows = np.arange(n)
    out = np.empty((n, m), dtype=np.intp)
    for j in range(m):
        out[:, j] = key.argmax(axis=1)
        key[rows, out[:, j]] = -np.inf
    return out


def _driver_values(
    model: PartnerModel, features: pd.DataFrame, f: int, rows: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Codes and distinct ``<label>: <value> — `` prefixes of feature ``f`` at ``rows``."""
    spec = model.feature_specs[f]
    known = spec.name in features.columns
    if not known:
        column = np.full(len(rows), np.nan)
    else:
        column = features[spec.name].iloc[rows].to_numpy()
        if spec.kind == "categorical":
            # the model treats unseen categories as missing: so does the text
            seen = model.categories.get(spec.name, [])
            column = np.where(pd.Series(column, dtype=object).isin(seen), column, None)
    codes, texts = explain.value_text_codes(column, spec, known)
    return codes, [f"{spec.label}: {text} — " for text in texts]


def _drivers(
    model: PartnerModel,
    features: pd.DataFrame,
    points: np.ndarray,
    revenue: np.ndarray,
    engagement: np.ndarray,
    top: int,
) -> dict[str, pd.api.extensions.ExtensionArray]:
    """``driver_pos_1..top`` and ``driver_neg_1..top`` sentences, ranked by score points.

    All slots at once, in Arrow: each feature's distinct values among the drivers shown are
    formatted once (``<label>: <value> — ``), the effect clauses are joined from pieces
    gathered from small tables, and each slot's column is a slice of one array. Slots whose
    driver moves the score by less than :data:`MIN_DRIVER_POINTS` stay empty.
    """
    n, k = points.shape
    rows = np.arange(n)
    names, feature, shown, positive = [], [], [], []
    for sign, is_positive in (("pos", True), ("neg", False)):
        ranked = top_features(points, top, is_positive) if k else np.zeros((n, 0), dtype=np.intp)
        for j in range(top):
            names.append(f"driver_{sign}_{j + 1}")
            positive.append(np.full(n, is_positive))
            if j >= ranked.shape[1]:
                feature.append(np.zeros(n, dtype=np.intp))
                shown.append(np.zeros(n, dtype=bool))
                continue
            idx = ranked[:, j]
            pts = points[rows, idx]
            feature.append(idx)
            shown.append(pts > MIN_DRIVER_POINTS if is_positive else pts < -MIN_DRIVER_POINTS)
    # one position per (slot, row), slot by slot
    feature_at, shown_at = np.concatenate(feature), np.concatenate(shown)
    row_at = np.tile(rows, len(names))
    # "<label>: <value> — " of every driver shown, each distinct one formatted once
    prefixes: list[str] = [""]
    codes = np.zeros(len(row_at), dtype=np.int64)  # not shown: ""
    live = np.flatnonzero(shown_at)
    order = live[np.argsort(feature_at[live], kind="stable")]
    feats, starts = np.unique(feature_at[order], return_index=True)
    ends = np.append(starts[1:], len(order))[: len(feats)]
    for f, a, b in zip(feats.tolist(), starts, ends, strict=True):
        part = order[a:b]
        value_codes, texts = _driver_values(model, features, f, row_at[part])
        codes[part] = value_codes + len(prefixes)
        prefixes.extend(texts)
    if k:
        effects = (revenue[row_at, feature_at], engagement[row_at, feature_at])
    else:
        effects = (np.zeros(len(row_at)), np.zeros(len(row_at)))
    pieces = explain.clause_pieces(*effects, np.concatenate(positive), shown_at)
    texts = pc.binary_join_element_wise(pa.array(prefixes, pa.string()).take(codes), *pieces, "")
    return {name: pd.array(texts.slice(i * n, n), dtype="str") for i, name in enumerate(names)}


def _interval_columns(
    model: PartnerModel, pred_revenue: np.ndarray, age: np.ndarray
) -> dict[str, np.ndarray]:
    """Interval columns for the revenue predictions (NaN when the bundle has no intervals)."""
    out = model.revenue_intervals(pred_revenue, age)
    if out is None:
        nan = np.full(len(pred_revenue), np.nan)
        return {
            "pred_revenue_lo": nan,
            "pred_revenue_hi": nan.copy(),
            "pred_revenue_sd": nan.copy(),
            "pred_revenue_median": nan.copy(),
        }
    return out


def horizon_columns(model: PartnerModel, n: int) -> dict[str, np.ndarray]:
    """``revenue_horizon_days`` and ``revenue_phase_days`` of the model, one value per row.

    The horizon comes from the training set's build (``metadata["horizon_days"]``), the phase
    length from the model's phasing; a column is left out when the model does not know it
    (bundles trained before it was recorded), and ``partnerscore forecast`` then falls back to
    the config.
    """
    out = {}
    horizon = model.metadata.get("horizon_days")
    if horizon is None and model.phasing is not None:
        horizon = model.phasing.horizon_days
    if horizon is not None:
        out["revenue_horizon_days"] = np.full(n, int(horizon), dtype=np.int64)
    if model.phasing is not None:
        out["revenue_phase_days"] = np.full(n, int(model.phasing.phase_days), dtype=np.int64)
    return out


class PolicyScore(NamedTuple):
    """The policy's composite score of feature rows and the pieces it is built from.

    Attributes:
        rev: Revenue head: base, per-feature effects (dollars) and predictions.
        eng: Engagement head: base, per-feature effects (probability) and predictions.
        age: (n,) ``age_days`` as numbers (NaN where missing or without the column).
        points: (n, k) score points per feature of the model's own composite (unweighted).
        model: (n,) the model's own composite score (``score_model``).
        base: (n,) its base points (``score_base``).
        model_layers: Layer -> (n,) unweighted layer points (``score_model_<layer>``).
        band: (n,) maturity band names.
        multipliers: (n, 3) layer multipliers of each row's band.
        factor: (n,) segment adjustment factor.
        score: (n,) the policy's composite (``score``).
        weighted_layers: Layer -> (n,) band-weighted layer points (``score_<layer>``).
        adjustment: (n,) points the segment factor adds (``score_adjustment``).
    """

    rev: explain.HeadEffects
    eng: explain.HeadEffects
    age: np.ndarray
    points: np.ndarray
    model: np.ndarray
    base: np.ndarray
    model_layers: dict[str, np.ndarray]
    band: np.ndarray
    multipliers: np.ndarray
    factor: np.ndarray
    score: np.ndarray
    weighted_layers: dict[str, np.ndarray]
    adjustment: np.ndarray


def policy_score(
    model: PartnerModel,
    features: pd.DataFrame,
    policy: PolicyConfig,
    num_threads: int | None = None,
    raw: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> PolicyScore:
    """Both heads, their score points per feature and the policy's composite score.

    The score computation of :func:`score_features`, and all of what-if's fast
    :func:`~partnerscore.models.whatif.policy_scores`. ``features`` is already respelled
    (:meth:`~partnerscore.models.bundle.PartnerModel.respell`) with a fresh index, and the
    model has its reference quantiles.

    Args:
        model: The model.
        features: The rows; with ``raw``, only their ``age_days`` and segment columns are read.
        policy: Scoring policy.
        num_threads: Threads for the contributions.
        raw: The rows' contributions (:meth:`~partnerscore.models.bundle.PartnerModel.
            raw_contributions`) when the caller has them: what-if's candidates, computed from
            a feature matrix (:func:`~partnerscore.models.whatif.candidate_scores`).
    """
    ref = model.reference
    if raw is None:
        raw = contributions(model, features, num_threads)
    rev = explain.explain_head(*raw["revenue"], np.exp)
    eng = explain.explain_head(*raw["engagement"], model.engagement.calibrate)

    score, score_rev, score_eng = pol.composite_score(rev.pred, eng.pred, ref, policy)
    w = policy.revenue_weight
    rq, eq = ref["revenue_quantiles"], ref["engagement_quantiles"]
    # score points per feature: each head's share of the score split like its output effects
    pts_rev = explain.explain_head(
        rev.effects, rev.base, lambda x: 100 * w * pol.percentile_of(x, rq), pred=score_rev
    )
    pts_eng = explain.explain_head(
        eng.effects, eng.base, lambda x: 100 * (1 - w) * pol.percentile_of(x, eq), pred=score_eng
    )
    points = pts_rev.effects + pts_eng.effects

    age = (
        pd.to_numeric(features["age_days"], errors="coerce").to_numpy(float)
        if "age_days" in features
        else np.full(len(features), np.nan)
    )
    # the policy's composite: layer points weighted by maturity band, times the segment factor
    score_base = pts_rev.base + pts_eng.base
    model_layers = explain.layer_subscores(points, model.feature_specs)
    band, multipliers = pol.maturity_band(age, policy)
    factor = pol.adjustment_factor(features, policy)
    weighted, weighted_layers, adjustment = pol.weighted_score(
        score_base, model_layers, multipliers, factor
    )
    return PolicyScore(
        rev=rev,
        eng=eng,
        age=age,
        points=points,
        model=score,
        base=score_base,
        model_layers=model_layers,
        band=band,
        multipliers=multipliers,
        factor=factor,
        score=weighted,
        weighted_layers=weighted_layers,
        adjustment=adjustment,
    )


def score_features(
    model: PartnerModel,
    features: pd.DataFrame,
    policy: PolicyConfig | None = None,
    num_threads: int | None = None,
    consolidate: bool = False,
) -> pd.DataFrame:
    """Score a feature frame: one output row per input row, in input order.

    Args:
        model: The PartnerModel.
        features: partner_id, as_of and feature columns (plain dtypes are fine; a missing
            feature column counts as all-missing); optional passthrough columns partner_name,
            signed_at, tier, region, industry, partner_type.
        policy: Scoring policy (default: the one bundled with the model).
        num_threads: Threads for SHAP contributions (default: the heads' n_jobs).
        consolidate: Return the frame with its columns in one block per dtype (a copy of the
            numbers) for a caller who goes on working on it (the Python API, the MLflow
            model): by default each column is a block of its own, which the batch jobs write
            out as they are, and pandas warns ``PerformanceWarning: DataFrame is highly
            fragmented`` on each column then added.

    Returns:
        The score rows: partner_id, as_of, age_days, passthrough columns, pred_revenue,
        pred_revenue_lo / pred_revenue_hi (conformal interval at the model's coverage, NaN for
        bundles without one), pred_revenue_sd (for portfolio intervals), pred_revenue_median
        (p50 of the predictive distribution: the point forecast for absolute error; 0 where
        most similar partners realise nothing; NaN without intervals),
        ``pred_revenue_phase_<k>`` (expected revenue per ``phase_days`` phase of the horizon,
        adding up to pred_revenue; absent for bundles without phasing), pred_engagement,
        score, score_tier, quadrant, quadrant_label, intervention, intervention_detail,
        ``<head>_base`` and ``<head>_<layer>`` subscores for revenue and engagement (adding up
        to ``pred_<head>``), ``score_base``, band-weighted ``score_<layer>`` and
        ``score_adjustment`` (adding up to ``score``), the model's own composite
        ``score_model`` = ``score_base`` + unweighted ``score_model_<layer>``,
        ``maturity_band`` and ``score_adjustment_factor``,
        driver_pos_1..n, driver_neg_1..n, provisional, model_version, model_config_hash,
        ``revenue_horizon_days`` and ``revenue_phase_days`` (the model's horizon and phase
        length, which a forecast of these rows needs; absent when the model does not record
        them),
        every feature value (a category the model knows in another case in the model's
        spelling), ``shap_revenue_<feature>`` (dollars), ``shap_engagement_<feature>``
        (probability), ``respelled_categories`` (:data:`RESPELLED`) and
        ``unseen_categories`` (:data:`UNSEEN`: categories the model never saw, scored as
        missing; :func:`~partnerscore.models.frame_check.unseen_categories`, the rule of
        ``score --features``).

    Raises:
        PartnerscoreError: The frame lacks partner_id/as_of, or the model lacks its reference.
    """
    policy = policy or model.policy
    missing = [c for c in ("partner_id", "as_of") if c not in features.columns]
    if missing:
        raise PartnerscoreError(f"feature frame: missing column '{missing[0]}'")
    ref = model.reference
    if not ref.get("revenue_quantiles") or not ref.get("engagement_quantiles"):
        raise PartnerscoreError("model has no reference quantiles: retrain it with this version")
    features = features.reset_index(drop=True)
    # a category the model knows in another case is read as that category, everywhere below
    respelled = model.respell(features)
    features = respelled.frame
    # the others are scored as missing, and listed (score --features's rule: the same function)
    unseen = unseen_categories(model, features)
    n = len(features)
    specs = model.feature_specs
    names = [s.name for s in specs]

    scored = policy_score(model, features, policy, num_threads)
    rev, eng, age, score = scored.rev, scored.eng, scored.age, scored.score
    score_model, score_base, model_layers = scored.model, scored.base, scored.model_layers
    band, factor = scored.band, scored.factor
    weighted_layers, adjustment = scored.weighted_layers, scored.adjustment
    points = scored.points * scored.multipliers[:, [LAYERS.index(s.layer) for s in specs]]
    quads = pol.quadrant(rev.pred, eng.pred, ref, policy)
    provisional = pol.is_provisional(age, policy)
    scope = pol.out_of_scope(age, model.metadata.get("trained_ages"), policy)
    q_label, title, detail = pol.interventions(quads, provisional, policy, scope)
    tiers = pol.score_tier(score, policy)
    tiers[scope] = pol.OUT_OF_SCOPE_TIER

    cols: dict[str, object] = {
        "partner_id": features["partner_id"].astype(str).to_numpy(dtype=object),
        # ISO 8601 in any of its forms, zoned times in UTC: as check_feature_frame reads it
        "as_of": as_of_dates("features", features).to_numpy(),
        "age_days": age,
    }
    for name in PASSTHROUGH:
        if name in features:
            cols[name] = features[name].to_numpy()
    cols.update(
        {
            "pred_revenue": rev.pred,
            **_interval_columns(model, rev.pred, age),
            **model.revenue_phases(rev.pred, age),
            "pred_engagement": eng.pred,
            "score": score,
            "score_tier": repeated_text(tiers),
            "quadrant": repeated_text(quads),
            "quadrant_label": repeated_text(q_label),
            "intervention": repeated_text(title),
            "intervention_detail": repeated_text(detail),
        }
    )
    for head, base, effects in (
        ("revenue", rev.base, rev.effects),
        ("engagement", eng.base, eng.effects),
    ):
        cols[f"{head}_base"] = base
        for layer, subscore in explain.layer_subscores(effects, specs).items():
            cols[f"{head}_{layer}"] = subscore
    cols["score_base"] = score_base
    cols.update({f"score_{layer}": weighted_layers[layer] for layer in LAYERS})
    cols["score_adjustment"] = adjustment
    cols["score_model"] = score_model
    cols.update({f"score_model_{layer}": model_layers[layer] for layer in LAYERS})
    cols["maturity_band"] = repeated_text(band)
    cols["score_adjustment_factor"] = factor
    cols.update(_drivers(model, features, points, rev.effects, eng.effects, policy.top_drivers))
    cols["provisional"] = provisional
    cols["out_of_scope"] = scope
    for col, key in (("model_version", "version"), ("model_config_hash", "config_hash")):
        cols[col] = repeated_text(np.full(n, str(model.metadata.get(key, "")), dtype=object))
    cols.update(horizon_columns(model, n))
    for name in names:
        if name not in cols:
            cols[name] = features[name].to_numpy() if name in features else np.full(n, np.nan)
    categorical = {spec.name for spec in specs if spec.kind == "categorical"}
    for name in (*PASSTHROUGH, *names):
        if name in cols and name in features:
            if name in categorical:
                cols[name] = repeated_text(cols[name])
            elif name in names and cols[name].dtype.kind in "Ob":  # numbers given as objects
                # (a Python frame's ints and floats, text numbers) or true/false: the numbers
                # scored, as float like every other feature column of the score rows
                cols[name] = pd.to_numeric(pd.Series(cols[name]), errors="coerce").to_numpy(
                    dtype=float, na_value=np.nan
                )
            else:  # never share memory with the caller's frame
                cols[name] = np.array(cols[name], copy=True)
    for head, effects in (("revenue", rev.effects), ("engagement", eng.effects)):
        by_feature = np.ascontiguousarray(effects.T)
        for j, name in enumerate(names):
            cols[f"shap_{head}_{name}"] = by_feature[j]
    empty = pa.array([""], pa.string()).take(np.zeros(n, dtype=np.int32))
    cols[RESPELLED] = (
        repeated_text(respelled.notes)
        if respelled.notes is not None
        else pd.array(empty, dtype="str")
    )
    cols[UNSEEN] = repeated_text(unseen) if (unseen != "").any() else pd.array(empty, dtype="str")
    # every array above is our own: no defensive copies, no block consolidation (~4x faster)
    frame = pd.DataFrame(cols, copy=False)
    return frame.copy() if consolidate else frame
