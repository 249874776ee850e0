"""The explainer: SHAP contributions -> output-scale effects -> layer subscores -> sentences.

LightGBM's TreeSHAP contributions (identical to ``shap.TreeExplainer``) live in each head's raw
margin space: log revenue for the tweedie head (``pred = exp(base + sum(phi))``), the logit for
the engagement head (``p = calibrate(base + sum(phi))``). Account owners read dollars and
probability points, so :func:`explain_head` maps them to the output scale, and the effects add up
exactly: ``link(base) + sum(effects) == prediction`` for every row, and so do the layer subscores.

How the gap ``prediction - link(base)`` is shared: in proportion to ``phi`` at the average slope of
the link over the span the contributions cover (from ``base + sum of negative phi`` to ``base + sum
of positive phi``); whatever that leaves over is shared in proportion to ``|phi|``. When a row's
contributions all have one sign this is exactly "proportional to phi" (the slope is then the
secant ``gap / sum(phi)``). When positive and negative contributions cancel (``sum(phi) ~ 0``),
plain proportional sharing would divide by almost nothing, and for a flat-or-steep link such as
an isotonic calibration map blow effects up far beyond the output range. The span slope never
divides by a small sum, keeps effects on the scale of the link's range over the span (their
absolute sum is at most twice that range plus the gap), and for two opposing features comes close
to their Shapley values on the output scale.

The same mapping turns output-scale effects into composite-score points (the link being the
percentile of the reference distribution), which is how drivers are ranked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from partnerscore.features.registry import LAYERS, FeatureSpec

REVENUE_EPS = 0.5  # an effect that rounds to $0 is not worth a clause
ENGAGEMENT_EPS = 0.0005  # ... nor one that rounds to 0.0 probability points


class HeadEffects(NamedTuple):
    """One head's prediction, split into an output-scale base and per-feature effects.

    Attributes:
        base: (n,) output at the base margin (the link applied to the expected margin).
        effects: (n, k) output-scale contributions; ``base + effects.sum(1) == pred``.
        pred: (n,) predictions on the output scale.
    """

    base: np.ndarray
    effects: np.ndarray
    pred: np.ndarray


def row_sums(values: np.ndarray) -> np.ndarray:
    """Each row's values added left to right, from its first (0.0 for a row of none).

    The same for a row whatever else its batch holds: numpy's ``sum(axis=1)`` adds a
    C-ordered row pairwise but the columns of a Fortran-ordered array one after the other, and
    a one-row array is both, so a partner's explanation could differ in the last place
    between a batch of one and a larger one (a grouped score job has groups of any size).
    """
    values = np.asarray(values, dtype=float)
    n, k = values.shape
    if k == 0:
        return np.zeros(n)
    out = values[:, 0].copy()
    for j in range(1, k):
        out += values[:, j]
    return out


def _share(
    contrib: np.ndarray,
    magnitude: np.ndarray,
    total: np.ndarray,
    total_abs: np.ndarray,
    gap: np.ndarray,
    span: np.ndarray,
) -> np.ndarray:
    """Share each row's ``gap`` among features: by ``contrib`` at slope ``span / sum|contrib|``.

    Whatever ``slope * sum(contrib)`` leaves of the gap is shared in proportion to ``|contrib|``.

    Args:
        contrib: (n, k) contributions on the input scale (margins, or output-scale effects).
        magnitude: ``|contrib|`` (consumed: the result is written into it).
        total: (n,) row sums of ``contrib``.
        total_abs: (n,) row sums of ``magnitude``.
        gap: (n,) total to share on the output scale (prediction minus base output).
        span: (n,) ``link(base + sum of positive contrib) - link(base + sum of negative
            contrib)``.

    Returns:
        (n, k) shares; each row sums to ``gap`` (to floating-point rounding).
    """
    n, k = contrib.shape
    if k == 0:
        return np.zeros((n, 0))
    live = total_abs > 0
    safe = np.where(live, total_abs, 1.0)
    slope = np.where(live, span / safe, 0.0)
    rest = np.where(live, (gap - slope * total) / safe, 0.0)
    out = np.multiply(contrib, slope[:, None])
    out += np.multiply(magnitude, rest[:, None], out=magnitude)
    if not live.all():
        # no contribution at all: the prediction is the base (gap 0 up to rounding); spread it
        out[~live] = (gap[~live] / k)[:, None]
    return out


def explain_head(
    contrib: np.ndarray,
    base_margin: np.ndarray,
    link: Callable[[np.ndarray], np.ndarray],
    pred: np.ndarray | None = None,
) -> HeadEffects:
    """Map one head's margin-space contributions to output-scale effects.

    Args:
        contrib: (n, k) SHAP contributions in margin space.
        base_margin: (n,) base margin (the expected margin; SHAP's last column).
        link: Vectorised map margin -> output (``np.exp``, a calibration map, a percentile).
        pred: Predictions to explain exactly; default ``link(base_margin + contrib.sum(1))``.

    Returns:
        Base output, effects and predictions with ``base + effects.sum(1) == pred``.
    """
    contrib = np.asarray(contrib, dtype=float)
    n = contrib.shape[0]
    base_margin = np.broadcast_to(np.asarray(base_margin, dtype=float), (n,))
    magnitude = np.abs(contrib)
    total = row_sums(contrib)
    total_abs = row_sums(magnitude)
    up = (total + total_abs) / 2  # sum of the positive contributions
    down = (total - total_abs) / 2  # sum of the negative ones
    points = [base_margin, base_margin + up, base_margin + down]
    if pred is None:
        points.append(base_margin + total)
    out = np.asarray(link(np.concatenate(points)), dtype=float)
    base, high, low = out[:n], out[n : 2 * n], out[2 * n : 3 * n]
    pred = out[3 * n :] if pred is None else np.asarray(pred, dtype=float)
    effects = _share(contrib, magnitude, total, total_abs, pred - base, high - low)
    return HeadEffects(base=base, effects=effects, pred=pred)


def layer_subscores(effects: np.ndarray, specs: list[FeatureSpec]) -> dict[str, np.ndarray]:
    """Sum of effects per scorecard layer (strategic, execution, results).

    :func:`row_sums`, so a partner's subscores do not depend on the other rows of its batch (a
    matrix product's do, in the last place: BLAS picks its kernels by the number of rows).
    """
    effects = np.asarray(effects, dtype=float)
    out = {}
    for layer in LAYERS:
        mine = [i for i, s in enumerate(specs) if s.layer == layer]
        out[layer] = row_sums(effects[:, mine])
    return out


# Vectorised number formatting: digit groups are looked up in tables and joined by numpy's
# element-wise object addition, so no Python-level loop runs per row.
_DIGITS = np.array([str(i) for i in range(1000)], dtype=object)
_PADDED = np.array([f"{i:03d}" for i in range(1000)], dtype=object)
_FRACTIONS = {d: np.array([f"{i:0{d}d}" for i in range(10**d)], dtype=object) for d in (1, 2)}
_BIG = 10**15


def _obj(n: int, text: str = "") -> np.ndarray:
    out = np.empty(n, dtype=object)
    out[:] = text
    return out


def int_text(x) -> np.ndarray:
    """Non-negative integers as text with thousands separators (``1,281``), vectorised."""
    x = np.asarray(x, dtype=np.int64)
    out = _DIGITS[x % 1000]
    for level in (1, 2, 3, 4):
        rows = np.flatnonzero(x >= 1000**level)
        if not len(rows):
            break
        v = x[rows]
        text = _DIGITS[(v // 1000**level) % 1000]
        for lower in range(level - 1, -1, -1):
            text = text + "," + _PADDED[(v // 1000**lower) % 1000]
        out[rows] = text
    return out


def _decimal_text(v: np.ndarray, decimals: int) -> np.ndarray:
    """Signed numbers rounded to ``decimals`` places (half to even), vectorised."""
    sign = np.where(np.rint(v * 10**decimals) < 0, "-", "")
    return sign.astype(object) + _rounded(v, decimals)


def _rounded(v: np.ndarray, decimals: int) -> np.ndarray:
    """|v| rounded to ``decimals`` (0-2) places, half to even, as text (``1,234.5``)."""
    scale = 10**decimals
    units = np.rint(np.abs(v) * scale).astype(np.int64)
    if decimals == 0:
        return int_text(units)
    return int_text(units // scale) + "." + _FRACTIONS[decimals][units % scale]


def _plain_number(v: np.ndarray) -> np.ndarray:
    """Whole numbers without decimals, others with one (``2``, ``2.5``)."""
    whole = np.abs(v - np.rint(v)) < 1e-9
    out = _decimal_text(v, 1)
    if whole.any():
        out[whole] = _decimal_text(v[whole], 0)
    return out


def _numeric_text(v: np.ndarray, unit: str) -> np.ndarray:
    """Finite numbers with their unit, vectorised."""
    one = np.abs(np.rint(v)) == 1
    if unit == "USD":
        return np.where(v <= -0.5, "-$", "$").astype(object) + _rounded(v, 0)
    if unit == "share":
        return _decimal_text(v * 100, 0) + "%"
    if unit == "days":
        return _decimal_text(v, 0) + np.where(one, " day", " days").astype(object)
    if unit == "hours":
        return _decimal_text(v, 1) + " hours"
    if unit == "rate/30d":
        return _decimal_text(v, 1) + " per month"
    if unit.startswith("score"):
        top = unit.rsplit("-", 1)[-1] if "-" in unit else "5"
        return _decimal_text(v, 1) + f" of {top}"
    if unit == "ratio":
        return _decimal_text(v, 2) + "x"
    if unit == "accounts":
        return _plain_number(v) + np.where(one & (np.abs(v - 1) < 1e-9), " account", " accounts")
    return _plain_number(v)


def format_values(values, spec: FeatureSpec, known: bool = True) -> np.ndarray:
    """Feature values as a reader would say them, with their unit (vectorised).

    Missing values read ``unknown`` for categories, assessed profile fields and features whose
    source table was not supplied (``known=False``), and ``not yet`` for activity measures (the
    event has not happened: no certification, no closed deal, no touchpoint).

    Args:
        values: (m,) raw feature values (numbers, text or missing).
        spec: The feature's declaration (kind and unit).
        known: False when the feature could not be computed at all (source table absent).

    Returns:
        (m,) object array of text such as ``$12,346``, ``50%``, ``45 days``, ``2.2 per month``,
        ``3.5 of 5``, ``0.80x``, ``gold``, ``not yet``.
    """
    missing_text = (
        "unknown"
        if not known or spec.kind == "categorical" or spec.source == "partners"
        else "not yet"
    )
    if spec.kind == "categorical":
        codes, uniques = pd.factorize(pd.Series(np.asarray(values, dtype=object)), sort=False)
        names = [" ".join(str(u).replace("_", " ").split()) for u in uniques]
        table = np.array([*names, missing_text], dtype=object)
        return table[np.where(codes < 0, len(names), codes)]
    v = pd.to_numeric(pd.Series(np.asarray(values, dtype=object)), errors="coerce")
    v = v.to_numpy(dtype=float, na_value=np.nan)
    out = _obj(len(v), missing_text)
    finite = np.isfinite(v)
    sane = finite & (np.abs(v) < _BIG / 1000)
    if sane.any():
        out[sane] = _numeric_text(v[sane], spec.unit)
    odd = finite & ~sane
    if odd.any():
        out[odd] = [f"{x:,.0f}" for x in v[odd]]
    return out


def format_value(value, spec: FeatureSpec, known: bool = True) -> str:
    """One feature value as text (see :func:`format_values`)."""
    return format_values([value], spec, known)[0]


# Arrow twins of the text builders above, for the driver sentences of a whole batch: every
# piece is gathered from a small table or concatenated element-wise in Arrow's C++ kernels
# (no Python object per row), and the result is the Arrow string array a ``str`` column holds.
_GROUP_HEAD = pa.array([str(i) for i in range(1000)], pa.string())
_GROUP_TAIL = pa.array([f",{i:03d}" for i in range(1000)] + [""], pa.string())  # 1000: none
_ARROW_LEVELS = 6  # digit groups handled in Arrow: integers below 10**18
_VERBS = pa.array(["lowers ", "raises ", ""], pa.string())
_JOINS = pa.array(["", " and ", " but raises ", " but lowers "], pa.string())
NO_EFFECT = "barely moves expected revenue or engagement likelihood"
# clause pieces: the engagement effect in tenths of a point (0.0 to 100.0), then the others
_PIECES = pa.array(
    [f"engagement likelihood by {u // 10}.{u % 10} pts" for u in range(1001)]
    + ["expected revenue by $", "", NO_EFFECT],
    pa.string(),
)
_REVENUE, _EMPTY, _NO_EFFECT = 1001, 1002, 1003


def int_text_arrow(x) -> pa.Array:
    """:func:`int_text` as an Arrow string array (non-negative integers below 10**18)."""
    x = np.asarray(x, dtype=np.int64)
    levels = np.zeros(len(x), dtype=np.int64)  # digit groups after the leading one
    for level in range(1, _ARROW_LEVELS):
        levels += x >= 1000**level
    top = int(levels.max()) if len(x) else 0
    powers = 1000 ** np.arange(_ARROW_LEVELS, dtype=np.int64)
    parts = [_GROUP_HEAD.take(x // powers[levels])]
    for level in range(top - 1, -1, -1):
        group = np.where(levels > level, (x // powers[level]) % 1000, 1000)
        parts.append(_GROUP_TAIL.take(group))
    return parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, "")


def _dollars_arrow(a: np.ndarray) -> pa.Array:
    """Whole dollars ``3,214`` of amounts ``a >= 0``, half to even, with thousands separators."""
    units = np.rint(a)
    sane = units < 1e18
    digits = int_text_arrow(np.where(sane, units, 0).astype(np.int64))
    if sane.all():
        return digits
    # astronomically large effects: formatted one by one, merged back in row order
    odd = np.flatnonzero(~sane)
    order = np.empty(len(a), dtype=np.int64)
    order[sane] = np.arange(len(a) - len(odd))
    order[odd] = np.arange(len(odd)) + (len(a) - len(odd))
    texts = pa.array([f"{x:,.0f}" for x in a[odd]], pa.string())
    return pa.concat_arrays([digits.filter(pa.array(sane)), texts]).take(order)


def clause_pieces(revenue, engagement, positive, shown=None) -> list[pa.Array]:
    """The pieces of :func:`effect_clauses` (Arrow arrays whose element-wise join is the clause).

    Args:
        revenue: (m,) effects on expected revenue in dollars.
        engagement: (m,) effects on the engagement probability.
        positive: Whether each row is a positive driver (one flag or (m,)).
        shown: (m,) rows that get a clause (default all); the others get "".
    """
    r = np.nan_to_num(np.asarray(revenue, dtype=float))
    e = np.nan_to_num(np.asarray(engagement, dtype=float))
    positive = np.broadcast_to(np.asarray(positive, dtype=bool), r.shape)
    shown = np.ones(r.shape, dtype=bool) if shown is None else np.asarray(shown, dtype=bool)
    digits = _dollars_arrow(np.abs(r))
    tenths = np.rint(np.abs(np.minimum(np.abs(e), 1.0) * 100) * 10).astype(np.int64)
    r_show, e_show = np.abs(r) >= REVENUE_EPS, np.abs(e) >= ENGAGEMENT_EPS
    r_up, e_up = r > 0, e > 0
    both = r_show & e_show & shown
    engagement_first = (e_show & ~r_show) | (both & (r_up != positive) & (e_up == positive))
    first_up = np.where(engagement_first, e_up, r_up)
    second_up = np.where(engagement_first, r_up, e_up)
    clause = shown & (r_show | e_show)  # the others barely move anything, or show nothing
    verb = np.where(clause, first_up, 2)
    first = np.where(engagement_first, tenths, _REVENUE)
    first = np.where(clause, first, np.where(shown, _NO_EFFECT, _EMPTY))
    join = np.where(both, np.where(second_up == first_up, 1, np.where(second_up, 2, 3)), 0)
    second = np.where(both, np.where(engagement_first, _REVENUE, tenths), _EMPTY)
    return [
        _VERBS.take(verb),
        _PIECES.take(first),
        pc.if_else(pa.array(clause & ~engagement_first), digits, ""),
        _JOINS.take(join),
        _PIECES.take(second),
        pc.if_else(pa.array(both & engagement_first), digits, ""),
    ]


def effect_clause_array(revenue, engagement, positive) -> pa.Array:
    """:func:`effect_clauses` as an Arrow string array; ``positive`` may differ per row."""
    if not len(revenue):
        return pa.array([], pa.string())
    return pc.binary_join_element_wise(*clause_pieces(revenue, engagement, positive), "")


def effect_clauses(revenue, engagement, positive: bool) -> np.ndarray:
    """What each driver does to both heads, as a clause (vectorised).

    For example ``raises expected revenue by $3,200 and engagement likelihood by 4.1 pts``.
    Effects too small to show (under $0.50, under 0.05 pts) are left out. When the heads move in
    opposite directions, the clause matching the driver's sign comes first (``raises engagement
    likelihood by 8.0 pts but lowers expected revenue by $50`` for a positive driver).

    Args:
        revenue: (m,) effects on expected revenue in dollars.
        engagement: (m,) effects on the engagement probability (0-1; shown in points).
        positive: Whether these are positive drivers of the score.

    Returns:
        (m,) object array, one clause per row.
    """
    return np.array(effect_clause_array(revenue, engagement, positive).to_pylist(), dtype=object)


def value_text_codes(values, spec: FeatureSpec, known: bool = True) -> tuple[np.ndarray, list]:
    """:func:`format_values` of each distinct value once: (codes, texts), texts[codes] = text.

    Numbers are compared as the floats :func:`format_values` reads them as; categories as
    they are.
    """
    values = np.asarray(values, dtype=object if spec.kind == "categorical" else None)
    if spec.kind != "categorical":
        if values.dtype != np.float64:
            values = pd.to_numeric(pd.Series(values.astype(object)), errors="coerce")
            values = values.to_numpy(dtype=float, na_value=np.nan)
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        return codes, format_values(uniques, spec, known).tolist()
    codes, uniques = pd.factorize(values)
    texts = format_values(np.append(np.asarray(uniques, dtype=object), None), spec, known)
    return np.where(codes < 0, len(uniques), codes), texts.tolist()


def driver_sentences(
    spec: FeatureSpec,
    values,
    revenue,
    engagement,
    positive: bool,
    known: bool = True,
) -> np.ndarray:
    """Readable driver sentences for many rows of one feature (vectorised).

    Example: ``Certifications earned: 2 — raises expected revenue by $3,200 and engagement
    likelihood by 4.1 pts``.

    Args:
        spec: The feature's declaration.
        values: (m,) the feature's values.
        revenue: (m,) effects on expected revenue (dollars).
        engagement: (m,) effects on the engagement probability (0-1).
        positive: Whether these are positive drivers of the score (orders the clauses).
        known: False when the feature's source table was not supplied.

    Returns:
        (m,) object array of ``<label>: <value> — <effects>``.
    """
    head = f"{spec.label}: "
    return (
        head
        + format_values(values, spec, known)
        + " — "
        + effect_clauses(revenue, engagement, positive)
    )
