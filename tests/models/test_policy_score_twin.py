"""The account owner's score, tier, band and composite against a plain per-row reference.

``models/scoring.policy_score`` (vectorised: searchsorted percentiles, the span-slope sharing of
:mod:`~partnerscore.models.explain`, band lookup, factorised segment factors, tier bounds) is what
``score_features`` and what-if's fast ``policy_scores`` both read, so comparing those two checks
nothing independent. ``reference_scores`` below is the slow twin: one row at a time, plain
Python, from the README's definitions, sharing only its inputs with the fast path (the heads'
margin contributions, the calibration map, the reference quantiles and the policy). Hypothesis
feeds both random policies, reference distributions with tied runs, and rows with missing,
zero, huge, infinite and unseen values, single rows and empty frames.
"""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partnerscore.features.registry import LAYERS, feature_specs
from partnerscore.models import policy as pol
from partnerscore.models.bundle import PartnerModel
from partnerscore.models.config import PolicyConfig
from partnerscore.models.heads import EngagementClassifier, RevenueRegressor
from partnerscore.models.scoring import policy_score, score_features
from partnerscore.models.whatif import policy_scores, reapply_policy

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
EXTREMES = [0.0, -0.0, 1e-300, -1e-300, 1e300, -1e300, np.nan, np.inf, -np.inf, 7.5, -3.0]
AGES = [0, 44.9, 45, 45.99, 46, 90, 91, 180.5, 181, 271, 400, -1, -1e300, 1e300, np.nan, np.inf]


# ---- the per-row reference ---------------------------------------------------------------


def reference_percentile(value: float, quantiles: list[float]) -> float:
    """Position 0-1 of ``value`` among 101 quantiles, as the README defines it."""
    steps = len(quantiles) - 1
    tied = [i for i, q in enumerate(quantiles) if q == value]
    if tied:  # a run of equal quantiles: the middle of the run
        return (tied[0] + tied[-1]) / 2 / steps
    if value < quantiles[0]:
        return 0.0
    if value > quantiles[-1]:
        return 1.0
    for i in range(steps):  # strictly between two quantiles: linear
        lo, hi = quantiles[i], quantiles[i + 1]
        if lo < value < hi:
            return (i + (value - lo) / (hi - lo)) / steps
    raise AssertionError(f"{value} not placed among {quantiles}")


def reference_effects(phi: list[float], base: float, link, pred: float) -> tuple[float, list]:
    """One row's output-scale base and per-feature effects (explain.py's docstring).

    The gap ``pred - link(base)`` is shared in proportion to ``phi`` at the slope of the link
    from ``base + negative phi`` to ``base + positive phi`` per unit of ``sum |phi|``; what that
    leaves is shared in proportion to ``|phi|``; with no contribution, equally.
    """
    out_base = link(base)
    gap = pred - out_base
    k = len(phi)
    total_abs = sum(abs(p) for p in phi)
    if total_abs == 0:
        return out_base, [gap / k] * k
    positive = sum(p for p in phi if p > 0)
    negative = sum(p for p in phi if p < 0)
    slope = (link(base + positive) - link(base + negative)) / total_abs
    rest = (gap - slope * sum(phi)) / total_abs
    return out_base, [p * slope + abs(p) * rest for p in phi]


def reference_band(age, policy: PolicyConfig) -> int:
    """Index of the band holding the whole day of ``age`` (missing or before day 0: the first)."""
    day = 0.0 if age is None or math.isnan(age) else math.floor(age) if math.isfinite(age) else age
    found = 0
    for i, band in enumerate(policy.maturity_bands):
        if band.start_day <= day:
            found = i
    return found


def reference_factor(row: dict, policy: PolicyConfig) -> float:
    """Product of the row's segment factors, names matched in any case (unlisted: 1)."""
    factor = 1.0
    for key, factors in policy.segment_adjustments.items():
        value = row.get(key)
        for name, f in factors.items():
            if isinstance(value, str) and name.lower() == value.lower():
                factor *= f
    return factor


def reference_tier(score: float, policy: PolicyConfig) -> str:
    """The best tier whose lower bound the score reaches (below every bound: the lowest)."""
    ordered = sorted(policy.tier_cutoffs.items(), key=lambda kv: -kv[1])
    for name, bound in ordered:
        if score >= bound:
            return name
    return ordered[-1][0]


def reference_quadrant(pred_rev: float, pred_eng: float, rq: list, policy) -> str | None:
    """High revenue: at or above the policy's quantile of the reference (read linearly between
    its 101 points); high engagement: at or above the threshold. None: within rounding of the
    revenue threshold (either answer is right)."""
    at = policy.revenue_high_quantile * 100
    i = min(int(at), 99)
    threshold = rq[i] + (at - i) * (rq[i + 1] - rq[i])
    if abs(pred_rev - threshold) <= 1e-9 * max(abs(threshold), 1e-300):
        return None
    revenue = "high_revenue" if pred_rev >= threshold else "low_revenue"
    engagement = "high_engagement" if pred_eng >= policy.engagement_high else "low_engagement"
    return f"{revenue}_{engagement}"


def reference_age(value) -> float:
    """``age_days`` as a number (anything unreadable is missing)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def reference_scores(model, frame, policy, raw, preds) -> list[dict]:
    """Every row's composite, its parts, band, factor and tier, one row at a time.

    Args:
        model: The model (its specs, reference quantiles and engagement calibration map).
        frame: The feature rows.
        policy: The policy.
        raw: The heads' margin contributions ``{head: (phi (n, k), base (n,))}``.
        preds: ``{head: (n,) predictions}`` (each head's link of its margin).
    """
    w = policy.revenue_weight
    rq = list(model.reference["revenue_quantiles"])
    eq = list(model.reference["engagement_quantiles"])
    specs = model.feature_specs
    calibrate = model.engagement.calibrate
    out = []
    for i, row in enumerate(frame.to_dict("records")):
        phi_rev, b_rev = list(raw["revenue"][0][i]), float(raw["revenue"][1][i])
        phi_eng, b_eng = list(raw["engagement"][0][i]), float(raw["engagement"][1][i])
        pred_rev, pred_eng = float(preds["revenue"][i]), float(preds["engagement"][i])
        base_rev, eff_rev = reference_effects(phi_rev, b_rev, math.exp, pred_rev)
        base_eng, eff_eng = reference_effects(
            phi_eng, b_eng, lambda x: float(calibrate(np.array([x]))[0]), pred_eng
        )
        part_rev = 100 * w * reference_percentile(pred_rev, rq)
        part_eng = 100 * (1 - w) * reference_percentile(pred_eng, eq)
        base_r, pts_r = reference_effects(
            eff_rev, base_rev, lambda x: 100 * w * reference_percentile(x, rq), part_rev
        )
        base_e, pts_e = reference_effects(
            eff_eng, base_eng, lambda x: 100 * (1 - w) * reference_percentile(x, eq), part_eng
        )
        points = [a + b for a, b in zip(pts_r, pts_e, strict=True)]
        layers = {
            layer: sum(p for p, s in zip(points, specs, strict=True) if s.layer == layer)
            for layer in LAYERS
        }
        band = reference_band(reference_age(row.get("age_days")), policy)
        weights = policy.maturity_bands[band].weights
        multiplier = {layer: 3 * getattr(weights, layer) for layer in LAYERS}
        factor = reference_factor(row, policy)
        base = base_r + base_e
        before = base + sum(multiplier[layer] * layers[layer] for layer in LAYERS)
        score = min(max(factor * before, 0.0), 100.0)
        out.append(
            {
                "pred_revenue": pred_rev,
                "pred_engagement": pred_eng,
                "score_model": part_rev + part_eng,
                "score_base": base,
                **{f"score_model_{layer}": layers[layer] for layer in LAYERS},
                **{f"score_{layer}": multiplier[layer] * layers[layer] for layer in LAYERS},
                "score_adjustment": score - before,
                "score": score,
                "maturity_band": policy.band_names()[band],
                "score_adjustment_factor": factor,
                "score_tier": reference_tier(score, policy),
                "quadrant": reference_quadrant(pred_rev, pred_eng, rq, policy),
                "revenue_base": base_rev,
                "revenue_effects": eff_rev,
                "engagement_base": base_eng,
                "engagement_effects": eff_eng,
            }
        )
    return out


# ---- a small fitted model and random inputs ----------------------------------------------


@pytest.fixture(scope="module")
def frame(built_dir):
    return pd.read_parquet(built_dir / "training_set.parquet")


@pytest.fixture(scope="module")
def model(frame):
    """A small model as the training job makes it: recalibrated, with segment factors."""
    specs = [s for s in feature_specs() if s.name in frame.columns]
    model = PartnerModel(
        revenue=RevenueRegressor(n_estimators=30),
        engagement=EngagementClassifier(n_estimators=30),
        feature_specs=specs,
        categories=PartnerModel.categories_from(frame, specs),
    )
    X = model.prepare(frame)
    y = frame["label_engaged"].to_numpy()
    cut = int(len(X) * 0.7)
    model.revenue.fit(X, frame["label_revenue"])
    tiers = sorted(frame["tier"].dropna().astype(str).unique())
    model.revenue.recalibrate(1.2).recalibrate_segments(
        {"tier": {t: 0.8 + 0.1 * i for i, t in enumerate(tiers)}}
    )
    model.engagement.fit(X[:cut], y[:cut], X[cut:], y[cut:])
    model.set_reference(frame)
    model.metadata = {"version": "1", "config_hash": "x", "trained_ages": [30, 60, 90, 180]}
    return model


def case_variants(value: str) -> list[str]:
    return [value, value.upper(), value.lower(), value.title(), value + " "]


@st.composite
def policies(draw, model: PartnerModel) -> PolicyConfig:
    """Random weights, tiers (ties, no tier at 0), bands and segment factors in any case."""
    weight = draw(st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(0, 1)))
    names = ["A", "B", "C", "D"][: draw(st.integers(1, 4))]
    bounds = draw(
        st.lists(
            st.one_of(st.sampled_from([0.0, 25.0, 50.0, 100.0]), st.floats(0, 100)),
            min_size=len(names),
            max_size=len(names),
        )
    )
    starts = sorted(set(draw(st.lists(st.integers(1, 400), max_size=3))))
    bands = []
    for start in [0, *starts]:
        a, b = draw(st.integers(0, 10)), draw(st.integers(0, 10))
        a, b = min(a, b), max(a, b)
        shares = (a / 10, (b - a) / 10, 1 - b / 10)
        bands.append({"start_day": start, "weights": dict(zip(LAYERS, shares, strict=True))})
    segments = {}
    for key in draw(st.lists(st.sampled_from(["region", "tier", "partner_type"]), unique=True)):
        known = model.categories.get(key, [])
        values = draw(st.lists(st.sampled_from([*known, "elsewhere"]), unique=True, max_size=3))
        segments[key] = {
            draw(st.sampled_from(case_variants(v))): draw(
                st.one_of(st.sampled_from([0.01, 1.0, 10.0]), st.floats(0.01, 10))
            )
            for v in values
        }
    return PolicyConfig(
        revenue_weight=weight,
        revenue_high_quantile=draw(st.one_of(st.just(0.75), st.floats(0.01, 0.99))),
        engagement_high=draw(st.one_of(st.just(0.5), st.floats(0.01, 0.99))),
        min_observation_days=draw(st.sampled_from([0, 45, 60, 91])),
        scope_tolerance_days=draw(st.sampled_from([0, 90])),
        tier_cutoffs=dict(zip(names, bounds, strict=True)),
        maturity_bands=bands,
        segment_adjustments=segments,
    )


def rows_of(frame: pd.DataFrame, model: PartnerModel, data) -> pd.DataFrame:
    """Training rows (none, one or many, repeated) with features set to extremes or unseen."""
    picks = data.draw(st.lists(st.integers(0, len(frame) - 1), max_size=30))
    out = frame.iloc[picks].reset_index(drop=True).copy()
    if not len(out):
        return out
    for spec in model.feature_specs:
        if not data.draw(st.booleans()):
            continue
        at = data.draw(st.lists(st.integers(0, len(out) - 1), min_size=1, max_size=len(out)))
        if spec.kind == "categorical":
            known = model.categories[spec.name]
            options = [None, "never-seen", *known, *(v.upper() for v in known)]
            column = out[spec.name].astype(object)
            column.iloc[at] = data.draw(st.sampled_from(options))
            out[spec.name] = column
        else:
            column = pd.to_numeric(out[spec.name], errors="coerce").astype(float)
            pool = AGES if spec.name == "age_days" else EXTREMES
            column.iloc[at] = data.draw(st.sampled_from(pool))
            out[spec.name] = column
    return out


def with_tied_reference(model: PartnerModel, preds: dict, data) -> PartnerModel:
    """The model, or a copy whose reference quantiles repeat some of the rows' predictions."""
    if not data.draw(st.booleans()):
        return model
    reference = {}
    for head, key in (("revenue", "revenue_quantiles"), ("engagement", "engagement_quantiles")):
        pool = [*model.reference[key], *preds[head]]
        picks = data.draw(st.lists(st.sampled_from(pool), min_size=101, max_size=101))
        reference[key] = sorted(float(v) for v in picks)
    return dataclasses.replace(model, reference=reference)


def fast_inputs(model: PartnerModel, rows: pd.DataFrame) -> tuple[dict, dict]:
    """The heads' contributions and predictions the policy reads (checked against LightGBM)."""
    raw = model.raw_contributions(rows)
    margins = {
        head: np.array([b + sum(phi) for phi, b in zip(*raw[head], strict=True)], dtype=float)
        for head in raw
    }
    preds = {
        "revenue": np.exp(margins["revenue"]),
        "engagement": model.engagement.calibrate(margins["engagement"]),
    }
    return raw, preds


COLUMNS = [
    "score",
    "score_model",
    "score_base",
    "score_adjustment",
    *(f"score_{layer}" for layer in LAYERS),
    *(f"score_model_{layer}" for layer in LAYERS),
]


def assert_rows_equal(got: dict[str, np.ndarray], expected: list[dict], policy) -> None:
    n = len(expected)
    for name in COLUMNS:
        want = np.array([r[name] for r in expected], dtype=float).reshape(n)
        np.testing.assert_allclose(got[name], want, rtol=1e-9, atol=1e-7, err_msg=name)
    for name in ("maturity_band", "score_adjustment_factor"):
        assert list(got[name]) == [r[name] for r in expected], name
    # the tier is the reference rule on the fast score (a score 1e-12 from a bound may go
    # either way), and the reference's own tier wherever its score is clear of every bound
    assert [str(t) for t in got["score_tier"]] == [reference_tier(s, policy) for s in got["score"]]
    bounds = np.array(list(policy.tier_cutoffs.values()))
    for i, r in enumerate(expected):
        if np.abs(bounds - r["score"]).min() > 1e-6:
            assert str(got["score_tier"][i]) == r["score_tier"]


# ---- properties ------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_policy_score_equals_the_per_row_reference(model, frame, data):
    rows = rows_of(frame, model, data)
    raw, preds = fast_inputs(model, rows)
    scored_model = with_tied_reference(model, preds, data)
    policy = data.draw(policies(model))
    got = policy_score(scored_model, scored_model.respell(rows).frame, policy)
    expected = reference_scores(scored_model, rows, policy, raw, preds)
    np.testing.assert_allclose(got.rev.pred, preds["revenue"], rtol=1e-12)
    np.testing.assert_allclose(got.eng.pred, preds["engagement"], rtol=1e-12)
    columns = {
        "score": got.score,
        "score_model": got.model,
        "score_base": got.base,
        "score_adjustment": got.adjustment,
        **{f"score_{layer}": got.weighted_layers[layer] for layer in LAYERS},
        **{f"score_model_{layer}": got.model_layers[layer] for layer in LAYERS},
        "maturity_band": got.band,
        "score_adjustment_factor": got.factor,
        "score_tier": pol.score_tier(got.score, policy),
    }
    assert_rows_equal(columns, expected, policy)
    # each head's output-scale effects (the dollars and points of the driver sentences)
    for head, effects in (("revenue", got.rev), ("engagement", got.eng)):
        want = np.array([r[f"{head}_effects"] for r in expected]).reshape(effects.effects.shape)
        np.testing.assert_allclose(effects.effects, want, rtol=1e-9, atol=1e-9, err_msg=head)
        base = [r[f"{head}_base"] for r in expected]
        np.testing.assert_allclose(effects.base, base, rtol=1e-12, err_msg=head)
    # what-if's fast path reads the same score
    np.testing.assert_allclose(
        policy_scores(scored_model, rows, policy), [r["score"] for r in expected], atol=1e-7
    )


@settings(SETTINGS, max_examples=60)
@given(data=st.data())
def test_score_rows_equal_the_per_row_reference(model, frame, data):
    """The score file's columns (tier included) are the reference's, for any batch."""
    rows = rows_of(frame, model, data)
    policy = data.draw(policies(model))
    raw, preds = fast_inputs(model, rows)
    expected = reference_scores(model, rows, policy, raw, preds)
    out = score_features(model, rows, policy=policy)
    assert len(out) == len(rows)
    scope = out["out_of_scope"].to_numpy(dtype=bool)
    got = {name: out[name].to_numpy() for name in (*COLUMNS, "maturity_band")}
    got["score_adjustment_factor"] = out["score_adjustment_factor"].to_numpy()
    got["score_tier"] = np.where(
        scope, np.array([reference_tier(s, policy) for s in out["score"]]), out["score_tier"]
    )
    assert_rows_equal(got, expected, policy)
    assert (out.loc[scope, "score_tier"] == "graduated").all()
    ages = [reference_age(a) for a in rows["age_days"]] if len(rows) else []
    oldest = max(model.metadata["trained_ages"]) + policy.scope_tolerance_days
    assert list(scope) == [a > oldest for a in ages]
    assert list(out["provisional"]) == [a < policy.min_observation_days for a in ages]
    for got_quadrant, r in zip(out["quadrant"], expected, strict=True):
        assert r["quadrant"] in (None, got_quadrant)
    # the heads' predictions are LightGBM's own (the compiled tables are a fast path too)
    if len(rows):
        booster = model.predict(rows)
        np.testing.assert_allclose(out["pred_revenue"], booster["pred_revenue"], rtol=1e-9)
        np.testing.assert_allclose(
            out["pred_engagement"], booster["pred_engagement"], rtol=1e-9, atol=1e-12
        )


def test_the_reference_reads_the_readme_examples():
    """The twin itself on hand-checked values: ties, clipping, bands and bounds."""
    q = [0.0] * 11 + [float(i) for i in range(1, 91)]
    assert reference_percentile(0.0, q) == pytest.approx(5 / 100)
    assert reference_percentile(1.5, q) == pytest.approx(11.5 / 100)
    assert reference_percentile(-1.0, q) == 0.0 and reference_percentile(1e300, q) == 1.0
    policy = PolicyConfig()
    assert [reference_band(a, policy) for a in (math.nan, -3, 45.9, 46, 180.9, 181)] == [
        0, 0, 0, 1, 2, 3
    ]  # fmt: skip
    assert [reference_tier(s, policy) for s in (0, 24.99, 25, 74.999, 75, 100)] == [
        "D", "D", "C", "B", "A", "A"
    ]  # fmt: skip
    assert reference_tier(10, PolicyConfig(tier_cutoffs={"A": 60, "B": 30})) == "B"


@settings(SETTINGS, max_examples=60)
@given(data=st.data())
def test_reapplied_policy_equals_the_per_row_reference(model, frame, data):
    """``whatif --policy``: the scores file's own parts under another policy, row by row."""
    rows = rows_of(frame, model, data)
    first, other = data.draw(policies(model)), data.draw(policies(model))
    scores = score_features(model, rows, policy=first)
    moves = reapply_policy(scores, other)
    assert len(moves) == len(scores)
    for i, row in enumerate(scores.to_dict("records")):
        band = reference_band(reference_age(row["age_days"]), other)
        weights = other.maturity_bands[band].weights
        before = row["score_base"] + sum(
            3 * getattr(weights, layer) * row[f"score_model_{layer}"] for layer in LAYERS
        )
        score = min(max(reference_factor(row, other) * before, 0.0), 100.0)
        assert moves["score_after"].iat[i] == pytest.approx(score, rel=1e-9, abs=1e-7)
        assert moves["maturity_band_after"].iat[i] == other.band_names()[band]
        if row["score_tier"] == "graduated":
            assert moves["tier_after"].iat[i] == moves["tier_before"].iat[i] == "graduated"
        else:
            assert moves["tier_after"].iat[i] == reference_tier(moves["score_after"].iat[i], other)
            assert moves["tier_before"].iat[i] == row["score_tier"]
