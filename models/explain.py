"""The explainer: SHAP contributions -> output-scale drivers -> layer subscores -> sentences.

LightGBM's TreeSHAP contributions (identical to ``shap.TreeExplainer``) live in each head's raw
margin space: log revenue for the tweedie head, the logit for the engagement head. Account owners
read dollars and probability points, so contributions are mapped to the output scale: the gap
between the prediction and the base prediction (the link applied to the base margin) is shared
among features in proportion to their margin contributions. The result adds up exactly:
``base + sum(contributions) == prediction`` for every row, and so do the layer subscores.
"""

from __future__ import annotations

import math

import numpy as np

from partnerscore.features.registry import LAYERS, FeatureSpec


def to_output_scale(raw_contrib: np.ndarray, pred: np.ndarray, base_out: np.ndarray) -> np.ndarray:
    """Share ``pred - base_out`` among features in proportion to their raw contributions.

    Args:
        raw_contrib: (n, k) margin-space contributions.
        pred: (n,) predictions on the output scale.
        base_out: (n,) output-scale prediction at the base margin.

    Returns:
        (n, k) output-scale contributions; each row sums to ``pred - base_out``.
    """
    raw_contrib = np.asarray(raw_contrib, dtype=float)
    gap = np.asarray(pred, dtype=float) - np.asarray(base_out, dtype=float)
    total = raw_contrib.sum(axis=1)
    k = raw_contrib.shape[1]
    tiny = np.abs(total) < 1e-12
    ratio = np.where(tiny, 0.0, gap / np.where(tiny, 1.0, total))
    out = raw_contrib * ratio[:, None]
    if tiny.any() and k:
        # margins cancel out exactly: nothing to attribute proportionally; spread evenly
        out[tiny] = (gap[tiny] / k)[:, None]
    return out


def layer_subscores(contrib: np.ndarray, specs: list[FeatureSpec]) -> dict[str, np.ndarray]:
    """Sum of output-scale contributions per scorecard layer."""
    layers = np.array([s.layer for s in specs])
    return {layer: contrib[:, layers == layer].sum(axis=1) for layer in LAYERS}


def _fmt_number(value: float, digits: int = 1) -> str:
    if abs(value - round(value)) < 1e-9:
        return f"{int(round(value)):,}"
    return f"{value:,.{digits}f}"


def format_value(value, spec: FeatureSpec) -> str:
    """A feature value as a reader would say it, with its unit."""
    if spec.kind == "categorical":
        return (
            "unknown"
            if value is None or (isinstance(value, float) and math.isnan(value))
            else str(value)
        )
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none yet" if spec.unit == "days" else "unknown"
    v = float(value)
    unit = spec.unit
    if unit == "USD":
        return f"${v:,.0f}"
    if unit == "share":
        return f"{v:.0%}"
    if unit == "days":
        return f"{v:,.0f} days"
    if unit == "hours":
        return f"{v:,.1f} h"
    if unit == "rate/30d":
        return f"{v:,.1f} per month"
    if unit.startswith("score"):
        return f"{v:.1f} of 5"
    if unit == "ratio":
        return f"{v:.2f}x"
    return _fmt_number(v)


def driver_sentence(spec: FeatureSpec, value, score_points: float) -> str:
    """One readable sentence for a driver.

    Example: ``Certifications earned: 2 (raises the score by 6.1 pts)``. Per-head effects in
    dollars and probability points are in the ``shap_*`` columns.
    """
    verb = "raises" if score_points >= 0 else "lowers"
    text = format_value(value, spec)
    return f"{spec.label}: {text} ({verb} the score by {abs(score_points):.1f} pts)"


def driver_sentences(spec: FeatureSpec, values: np.ndarray, score_points: np.ndarray) -> list[str]:
    """:func:`driver_sentence` for many rows of one feature (value labels cached)."""
    cache: dict = {}
    labels = []
    for value in values:
        key = "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else value
        text = cache.get(key)
        if text is None:
            text = cache[key] = format_value(value, spec)
        labels.append(text)
    head = f"{spec.label}: "
    points = np.abs(score_points).round(1).tolist()
    verb = np.where(score_points >= 0, " (raises the score by ", " (lowers the score by ").tolist()
    return [f"{head}{label}{v}{p} pts)" for label, v, p in zip(labels, verb, points, strict=True)]
