"""Per-partner HTML explanation reports and the portfolio page.

Reports are static, self-contained pages: charts are inline SVG built here, the small stylesheet
(and the portfolio page's sort/filter script) are inlined; nothing is fetched from a network.
Partner names and ids are untrusted: every text goes through Jinja2 autoescaping,
:func:`markupsafe.escape` or an escape with the same output (SVG text and attributes, partner
pages), and file names are a slug plus a hash of the exact id, so no id can collide with
another or escape the output folder.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from partnerscore.features.core import (
    PartnerscoreError,
    PartRows,
    as_of_dates,
    quoted,
    read_frame,
    read_frame_or_dataset,
    two_rows,
    write_text_atomic,
)
from partnerscore.features.parallel import worker_count
from partnerscore.features.registry import LAYERS, REGISTRY, get_spec
from partnerscore.models.bundle import PHASE_COLUMN
from partnerscore.models.config import PolicyConfig
from partnerscore.models.explain import format_values
from partnerscore.models.policy import (
    OUT_OF_SCOPE_TIER,
    QUADRANTS,
    load_playbook,
    segment_factor,
)
from partnerscore.serving.config import AppConfig

HERE = resources.files(__package__)
"""The package's folder, or its place in a zip archive on ``sys.path``: templates/, static/.

Read through :mod:`importlib.resources` (``Path(__file__)`` and a FileSystemLoader found no
file in a zip archive: the report stopped with NotADirectoryError)."""
REQUIRED = (
    "partner_id",
    "as_of",
    "score",
    "score_tier",
    "pred_revenue",
    "pred_engagement",
    "quadrant",
    "intervention",
    "intervention_detail",
)
TEXT_COLUMNS = (
    "partner_id",
    "partner_name",
    "tier",
    "region",
    "industry",
    "partner_type",
    "score_tier",
    "quadrant",
    "quadrant_label",
    "intervention",
    "intervention_detail",
    "model_version",
    "model_config_hash",
    "config_hash",
    "model_uri",
    "score_tier_candidate",
    "score_tier_raw",
    "tier_held_reason",
    "maturity_band",
    "tier_action",
    "tier_action_detail",
    "tier_action_owner",
    "tier_review_date",
    "intervention_owner",
    "intervention_review_date",
    "override_tier",
    "override_action",
    "override_reason",
    "override_expires",
    "next_tier",
    "next_tier_changes",
    "unseen_categories",
)
SEGMENT_COLUMNS = ("tier", "region", "industry", "partner_type")
KEY_METRICS = (
    "activities_touchpoints_30d",
    "trainings_certifications_todate",
    "leads_qualified_todate",
    "deals_won_amount_todate",
    "deals_open_pipeline_amount",
)
WATERFALL_TOP = 8
MIN_PEERS = 5  # as in serving.score.peer_percentile: segment, else tier, else everyone
SCATTER_LIMIT = 4000
QUADRANT_COLORS = dict(zip(QUADRANTS, ("#2f855a", "#b7791f", "#3b6ea5", "#8a9bb0"), strict=True))
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
REPORT_NAME = re.compile(r"[A-Za-z0-9_-]+-[0-9a-f]{10}\.html")


def report_filename(partner_id: str) -> str:
    """A safe, unique file name for any partner id (slug of safe characters + hash of the id).

    Args:
        partner_id: Any string, including path separators, markup or unicode.

    Returns:
        ``<slug>-<10 hex>.html`` using only ``[A-Za-z0-9_-]`` before the extension.
    """
    slug = _UNSAFE.sub("_", str(partner_id)).strip("_")[:40] or "partner"
    digest = hashlib.sha256(str(partner_id).encode("utf-8")).hexdigest()[:10]
    return f"{slug}-{digest}.html"


def _finite(v) -> float:
    if v.__class__ is float:
        return v if math.isfinite(v) else math.nan
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _money(v, sign: bool = False) -> str:
    """Dollars, rounded to whole dollars first: never ``$-0`` or ``-$0``."""
    v = _finite(v)
    if math.isnan(v):
        return "–"
    whole = round(v)
    if whole == 0:
        return "+$0" if sign else "$0"
    if whole < 0:
        return f"-${-whole:,.0f}"
    return f"+${whole:,.0f}" if sign else f"${whole:,.0f}"


def _compact_money(v: float) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"${v / scale:,.0f}{suffix}"
    return _money(v)


def _pct(v, digits: int = 0) -> str:
    v = _finite(v)
    return "–" if math.isnan(v) else f"{v:.{digits}%}"


def _shown(text: str) -> float:
    """The number a text of :func:`_num`, :func:`_money` or :func:`_pct` shows (NaN for –)."""
    if text == "–":
        return math.nan
    return float(text.replace("$", "").replace(",", "").replace("%", ""))


def change_measure(label: str, kind: str, before, after) -> tuple[str, str, str, str]:
    """A row of "What changed since the last batch": label, before, now and the change.

    The change is the difference of the two numbers as shown, so the row adds up on the
    page: "83.4% -> 78.9%, -4.5 pts", never "83% -> 79%, -4.5 pts" (exact points against
    rounded percents), nor a score "48.6 -> 43.0, -5.7" (the exact difference rounded).

    Args:
        label: The measure's name.
        kind: ``score`` (one decimal), ``money`` (whole dollars) or ``pct`` (a probability as
            a percent with one decimal; the change in percentage points).
        before: The previous batch's value.
        after: This batch's value.
    """
    if kind == "money":
        a, b = _money(before), _money(after)
        return label, a, b, _money(_shown(b) - _shown(a), sign=True)
    if kind == "pct":
        a, b = _pct(before, 1), _pct(after, 1)
        return label, a, b, _num(_shown(b) - _shown(a), sign=True) + " pts"
    a, b = _num(before), _num(after)
    return label, a, b, _num(_shown(b) - _shown(a), sign=True)


def _num(v, digits: int = 1, sign: bool = False) -> str:
    v = _finite(v)
    if math.isnan(v):
        return "–"
    return f"{v:+z,.{digits}f}" if sign else f"{v:z,.{digits}f}"


def num_texts(values: list[float], digits: int = 1, sign: bool = False) -> list[str]:
    """:func:`_num` of every value of a list of floats (a column of pages at a time)."""
    spec = f"{'+' if sign else ''}z,.{digits}f"  # z: never "-0.0"
    # x - x is 0.0 for a finite number, NaN (true) for NaN and infinities
    return ["–" if x - x else format(x, spec) for x in values]


def money_texts(values: list[float], sign: bool = False) -> list[str]:
    """:func:`_money` of every value of a list of floats."""
    out = []
    zero = "+$0" if sign else "$0"
    for x in values:
        if x - x:
            out.append("–")
            continue
        whole = round(x)
        if whole == 0:
            out.append(zero)
        elif whole < 0:
            out.append(f"-${-whole:,.0f}")
        else:
            out.append(f"+${whole:,.0f}" if sign else f"${whole:,.0f}")
    return out


def pct_texts(values: list[float]) -> list[str]:
    """:func:`_pct` of every value of a list of floats."""
    return ["–" if x - x else f"{x:.0%}" for x in values]


def _flag(v) -> bool:
    """A boolean from a scores file cell (bool, 0/1, "True"/"False" or missing)."""
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return False
    return bool(v)


def _text(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def text_column(column) -> pd.Series:
    """``column.map(_text)`` (objects): one call per distinct cell instead of one per cell."""
    column = column if isinstance(column, pd.Series) else pd.Series(column, dtype=object)
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    uniques = np.asarray(uniques, dtype=object).tolist()  # not one Arrow scalar at a time
    if any(u.__class__ is not str for u in uniques):  # 1, 1.0 and True are one key
        return column.map(_text).astype(object)
    texts = np.array([*uniques, ""], dtype=object)
    return pd.Series(texts[codes], index=column.index, dtype=object)


def _label(feature: str) -> str:
    spec = get_spec(feature)
    return spec.label if spec else feature


def absent_features(frame: pd.DataFrame) -> frozenset[str]:
    """The feature columns of the tables a batch was scored without (missing on every row).

    A table the raw data did not hold leaves every one of its features missing for every
    partner, while a table that is there gives a partner without rows in it counts of 0: so a
    source table none of whose feature columns has a value anywhere in the batch was absent,
    and its missing values read ``unknown`` (as the driver sentences say them), not ``not
    yet`` (no touchpoint, no certification), which would be a claim about the partner.
    """
    by_source: dict[str, list[str]] = {}
    for spec in REGISTRY:
        if spec.name in frame.columns and spec.source != "partners":
            by_source.setdefault(spec.source, []).append(spec.name)
    absent: set[str] = set()
    for columns in by_source.values():
        if len(frame) and all(frame[c].isna().all() for c in columns):
            absent.update(columns)
    return frozenset(absent)


def metric_texts(key: str, values, known: bool = True) -> list[str]:
    """Values of a prediction or feature column as readable text (vectorised for features).

    Args:
        key: The column (``pred_engagement``, ``pred_revenue`` or a feature).
        values: Its values.
        known: False for a feature whose source table was not supplied
            (:func:`absent_features`): missing values read ``unknown``, not ``not yet``.
    """
    if isinstance(values, pd.Series):
        values = values.to_numpy()
    elif not isinstance(values, np.ndarray):
        values = list(values)
    if key == "pred_engagement":
        return [_pct(v) for v in values]
    if key == "pred_revenue":
        return [_money(v) for v in values]
    spec = get_spec(key)
    if spec is None:
        return [_num(v) for v in values]
    if spec.kind == "numeric":
        array = np.asarray(values)
        if array.dtype.kind in "fiub":  # as _finite, without a call per value
            array = array.astype(float)
            values = np.where(np.isfinite(array), array, np.nan)
        else:
            values = [_finite(v) for v in values]
    return [str(t) for t in format_values(values, spec, known)]


def waterfall_svg(
    contributions: dict[str, float], base: float, pred: float, money: bool, width: int = 520
) -> Markup:
    """Horizontal waterfall: base -> top contributions (+ other features) -> prediction.

    Args:
        contributions: Output-scale contribution per feature column name.
        base: Prediction of the average partner.
        pred: This partner's prediction (base + sum of contributions).
        money: Dollars (revenue head) or probability points (engagement head).
        width: Width in pixels.

    Returns:
        An escaped ``<svg>`` fragment.
    """
    names = list(contributions)
    values = np.fromiter(contributions.values(), dtype=float, count=len(names))
    order = np.argsort(-np.abs(values), kind="stable")  # as sorted(): ties keep their order
    return _waterfall(names, values[order].tolist(), order.tolist(), base, pred, money, width)


_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"})


def _esc(text: str) -> str:
    """:func:`markupsafe.escape` as plain text (same output), for SVG built from strings."""
    return text.translate(_ESCAPES)


@functools.lru_cache(maxsize=4096)
def _bar_label(label: str) -> tuple[str, str]:
    """A waterfall row label, escaped: in full (tooltip) and cut to 32 characters (axis)."""
    return _esc(label), _esc(label[:32])


def _points(v: float) -> str:
    """A probability change in percentage points, signed (``+1.2 pts``)."""
    return f"{v * 100:+z.1f} pts"


@functools.lru_cache(maxsize=4096)
def _feature_label(name: str) -> str:
    return _label(name)


def _waterfall(
    names: list[str],
    ordered: list[float],
    order: list[int],
    base: float,
    pred: float,
    money: bool,
    width: int = 520,
) -> Markup:
    """:func:`waterfall_svg` on contributions already sorted by decreasing size.

    Args:
        names: Feature column names.
        ordered: Contributions, largest absolute value first.
        order: ``names`` index of each entry of ``ordered``.
        base: Prediction of the average partner.
        pred: This partner's prediction.
        money: Dollars (revenue head) or probability points (engagement head).
        width: Width in pixels.
    """
    n_top = min(len(ordered), WATERFALL_TOP)
    labels = [_feature_label(names[k]) for k in order[:n_top]]
    n_rest = len(ordered) - n_top
    rest = sum(ordered[n_top:]) if n_rest else 0.0
    return waterfall_rows(labels, ordered[:n_top], n_rest, rest, base, pred, money, width)


def waterfall_rows(
    labels: list[str],
    values: list[float],
    n_rest: int,
    rest: float,
    base: float,
    pred: float,
    money: bool,
    width: int = 520,
) -> Markup:
    """:func:`waterfall_svg` from its top rows: labels and contributions, largest first.

    Args:
        labels: Readable names of the top (at most WATERFALL_TOP) features.
        values: Their contributions.
        n_rest: How many other features there are (0: no "other features" row).
        rest: Their contributions summed left to right (as ``sum()``).
        base: Prediction of the average partner.
        pred: This partner's prediction.
        money: Dollars (revenue head) or probability points (engagement head).
        width: Width in pixels.
    """
    if n_rest:
        labels = [*labels, f"{n_rest} other feature{'s' if n_rest > 1 else ''}"]
        values = [*values, rest]
    if money:
        texts = money_texts([base, *values, pred])
    else:  # _points of the bars, _pct of the levels
        texts = [_pct(base), *(f"{v * 100:+z.1f} pts" for v in values), _pct(pred)]
    starts = []
    level = base
    lo, hi = min(0.0, base, pred), max(base, pred)
    for value in values:
        end = level + value
        starts.append(level)
        # lo, hi = min(lo, level, end), max(hi, level, end), as the builtins compare
        if level < lo:
            lo = level
        if end < lo:
            lo = end
        if level > hi:
            hi = level
        if end > hi:
            hi = end
        level = end
    hi = hi if hi > lo else lo + 1.0
    label_w, bar_w, row_h = 190, width - 190 - 90, 22
    height = (len(values) + 3) * row_h + 10
    span = hi - lo
    right = width - 4
    bars = [("base", 0.0, base, "base (average partner)", "")]
    for label, start, value in zip(labels, starts, values, strict=True):
        bars.append(("pos" if value >= 0 else "neg", start, start + value, label, ""))
    bars.append(("base", 0.0, pred, "prediction", ' font-weight="bold"'))
    parts = [
        f'<svg class="waterfall" role="img" aria-label="'
        f'{waterfall_label(labels, texts, money)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    y = 4
    # value texts are our own number formats (digits, $ , . + - % pts): nothing to escape
    for (cls, a, b, label, weight), value in zip(bars, texts, strict=True):
        xa = label_w + (a - lo) / span * bar_w
        xb = label_w + (b - lo) / span * bar_w
        w = abs(xb - xa)  # max(abs(xb - xa), 1), as the builtin compares
        head, middle, tail = _bar_pieces(cls, y, label, weight, right)
        parts.append(
            f"{head}{xa if xa < xb else xb:.1f}{middle}{1 if w < 1 else w:.1f}"
            f"{tail[0]}{value}{tail[1]}{value}</text>"
        )
        y += row_h
    parts.append(_waterfall_legend(label_w, y))
    return Markup("".join(parts))


def waterfall_label(labels: list[str], texts: list[str], money: bool) -> str:
    """A waterfall's accessible name (escaped): what it shows, its two levels, top 3 bars.

    ``texts`` are the shown values: the base, one per bar of ``labels``, the prediction.
    """
    what = "Expected revenue" if money else "Engagement likelihood"
    signed = [f"+{t}" if t[:1] == "$" else t for t in texts[1:4]]  # bars: signed amounts
    top = ", ".join(f"{label} {text}" for label, text in zip(labels[:3], signed, strict=False))
    return _esc(
        f"{what}: average partner {texts[0]}, this partner {texts[-1]}"
        + (f"; largest contributions: {top}" if top else "")
    )


@functools.lru_cache(maxsize=8192)
def _bar_pieces(
    cls: str, y: int, label: str, weight: str, right: int
) -> tuple[str, str, tuple[str, str]]:
    """The fixed text of a waterfall row around its x, width and value (once per row shape).

    A row is ``head x middle width tail[0] value tail[1] value </text>``.
    """
    full, short = _bar_label(label)
    return (
        f'<rect class="{cls}" x="',
        f'" y="{y}" width="',
        (
            f'" height="16"><title>{full}: ',
            f'</title></rect><text x="4" y="{y + 12}"{weight}>{short}</text>'
            f'<text x="{right}" y="{y + 12}" text-anchor="end">',
        ),
    )


@functools.lru_cache(maxsize=64)
def _waterfall_legend(label_w: int, y: int) -> str:
    return (
        f'<rect class="pos" x="{label_w}" y="{y + 2}" width="10" height="10"/>'
        f'<text x="{label_w + 14}" y="{y + 11}">raises</text>'
        f'<rect class="neg" x="{label_w + 70}" y="{y + 2}" width="10" height="10"/>'
        f'<text x="{label_w + 84}" y="{y + 11}">lowers</text>'
        f'<rect class="base" x="{label_w + 140}" y="{y + 2}" width="10" height="10"/>'
        f'<text x="{label_w + 154}" y="{y + 11}">level</text>'
        "</svg>"
    )


SERIES_CLASSES = ("line", "line2", "line3")
CHART_PADS = (14, 24, 24)
"""Right, bottom and top padding of a line chart, in pixels (the left one holds its y labels)."""


def line_svg(
    xs: list[float],
    series: dict[str, list[float]],
    width: int = 560,
    height: int = 190,
    thresholds: dict[str, float] | None = None,
) -> Markup:
    """Line chart of up to three series (0-100 scale) over onboarding age in days.

    Args:
        xs: Onboarding age (days since signing) of each point.
        series: Name -> values on a 0-100 scale (NaN points are skipped).
        width: Width in pixels.
        height: Height in pixels.
        thresholds: Tier name -> lower bound, drawn as dashed lines.

    Returns:
        An escaped ``<svg>`` fragment with a legend.
    """
    frame = _line_frame(width, height, tuple((thresholds or {}).items()))
    return line_chart(
        frame, xs, series, SERIES_CLASSES, width, height, 36, (0.0, 100.0),
        label=trajectory_label(xs, series, thresholds),
    )  # fmt: skip


def trajectory_label(
    xs: list[float], series: dict[str, list[float]], thresholds: dict[str, float] | None
) -> str:
    """The trajectory chart's accessible name.

    Its days, each series' first and last value (one decimal) and the tier lines drawn.
    """
    x_lo, x_hi = min(xs), max(xs)
    parts = []
    for name, values in list(series.items())[: len(SERIES_CLASSES)]:
        shown = [v for v in values if math.isfinite(v)]
        if shown:
            parts.append(f"{name} {shown[0]:.1f} to {shown[-1]:.1f}")
    lines = [f"{name} from {bound:g}" for name, bound in (thresholds or {}).items()
             if 0 < bound < 100]  # fmt: skip
    return (
        f"Trajectory over onboarding, day {x_lo:.0f} to day {x_hi:.0f}"
        + (f": {'; '.join(parts)}" if parts else "")
        + (f"; tier lines {', '.join(lines)}" if lines else "")
    )


@functools.lru_cache(maxsize=16)
def _line_frame(width: int, height: int, thresholds: tuple[tuple[str, float], ...]) -> str:
    """The trajectory chart's opening tag, grid and tier threshold lines (same on every page)."""
    pad_l, pad_r = 36, CHART_PADS[0]
    scale = (0.0, 100.0)
    parts = [chart_frame(width, height, pad_l, scale, ((0, "0"), (50, "50"), (100, "100")))]
    for name, bound in thresholds:
        if 0 < bound < 100:
            y = _chart_y(bound, scale, height)
            parts.append(
                f'<line class="threshold" x1="{pad_l}" y1="{y:.1f}" '
                f'x2="{width - pad_r}" y2="{y:.1f}"><title>tier {_esc(name)} from '
                f"{bound:g}</title></line>"
                f'<text class="threshold-label" x="{width - pad_r}" y="{y - 2:.1f}" '
                f'text-anchor="end">tier {_esc(name)}</text>'
            )
    return "".join(parts)


def _chart_y(value: float, scale: tuple[float, float], height: int) -> float:
    """The y pixel of ``value`` on a line chart whose plot spans ``scale`` (clamped to it)."""
    lo, hi = scale
    v = lo if value < lo else value
    if v > hi:
        v = hi
    _, pad_b, pad_t = CHART_PADS
    return pad_t + (hi - v) / (hi - lo) * (height - pad_t - pad_b)


def chart_frame(width: int, height: int, pad_l: int, scale: tuple[float, float], grid) -> str:
    """A line chart's opening ``<svg>`` tag and its horizontal grid lines.

    Args:
        width: Width in pixels.
        height: Height in pixels.
        pad_l: Left padding in pixels (room for the grid labels).
        scale: The values at the bottom and the top of the plot.
        grid: (value, label) of each grid line.
    """
    pad_r = CHART_PADS[0]
    parts = [
        f'<svg class="trajectory" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for value, label in grid:
        y = _chart_y(value, scale, height)
        parts.append(
            f'<line class="grid" x1="{pad_l}" y1="{y:.1f}" x2="{width - pad_r}" '
            f'y2="{y:.1f}"/><text x="4" y="{y + 4:.1f}">{escape(label)}</text>'
        )
    return "".join(parts)


def line_chart(
    frame: str,
    xs: list[float],
    series: dict[str, list[float]],
    classes: tuple[str, ...],
    width: int,
    height: int,
    pad_l: int,
    scale: tuple[float, float],
    value_text=None,
    x_label: str = "day",
    label: str = "",
) -> Markup:
    """A line chart: its frame, then what it draws over it (``line_svg``, ``arms_line_svg``).

    After ``frame`` come the x labels (every x up to 8 of them, else the first and the last),
    one polyline with a marker (and tooltip) per finite point for each series, and the legend.

    Args:
        frame: The chart's opening tag and grid (:func:`chart_frame`).
        xs: The x of each point (a day count, labelled ``x_label`` and the number).
        series: Name -> values; NaN and infinite points are skipped, the others drawn within
            ``scale`` (clamped to it). Series beyond ``classes`` are left out.
        classes: CSS class of each series' line, in order.
        width: Width in pixels.
        height: Height in pixels.
        pad_l: Left padding in pixels.
        scale: The values at the bottom and the top of the plot.
        value_text: Value -> its tooltip text (default: with one decimal).
        x_label: Unit of the x labels and tooltips.
        label: The chart's accessible name (``aria-label``; empty: none), plain text.

    Returns:
        The escaped ``<svg>`` fragment.
    """
    if label:  # the frame is cached and shared: its opening tag gets this chart's name
        frame = frame.replace(' role="img" ', f' role="img" aria-label="{_esc(label)}" ', 1)
    pad_r, pad_b, pad_t = CHART_PADS
    x_lo, x_hi = min(xs), max(xs)
    span = x_hi - x_lo or 1.0
    x_w = width - pad_l - pad_r
    y_lo, y_hi = scale
    y_span = y_hi - y_lo
    y_h = height - pad_t - pad_b
    unit = _esc(x_label)
    parts = [frame]
    ticks = xs if len(xs) <= 8 else [x_lo, x_hi]
    for t in ticks:
        anchor = "start" if t == x_lo else "end" if t == x_hi else "middle"
        parts.append(
            f'<text x="{pad_l + (t - x_lo) / span * x_w:.1f}" y="{height - 6}" '
            f'text-anchor="{anchor}">{unit} {t:.0f}</text>'
        )
    legend_x = pad_l
    for cls, (name, values) in zip(classes, series.items(), strict=False):
        label = _esc(name)
        points = []
        circles = []
        for a, b in zip(xs, values, strict=True):
            if not math.isfinite(b):
                continue
            # min(max(b, y_lo), y_hi), as the builtins compare
            c = y_lo if b < y_lo else b
            if c > y_hi:
                c = y_hi
            x = f"{pad_l + (a - x_lo) / span * x_w:.1f}"
            y = f"{pad_t + (y_hi - c) / y_span * y_h:.1f}"
            points.append(f"{x},{y}")
            text = f"{b:.1f}" if value_text is None else escape(value_text(b))
            circles.append(
                f'<circle cx="{x}" cy="{y}" r="3" class="{cls}">'
                f"<title>{label}: {text} at {unit} {a:.0f}</title></circle>"
            )
        parts.append(f'<polyline class="{cls}" points="{" ".join(points)}"/>')
        parts.extend(circles)
        parts.append(
            f'<line class="{cls}" x1="{legend_x}" y1="10" x2="{legend_x + 18}" y2="10"/>'
            f'<text x="{legend_x + 22}" y="14">{label}</text>'
        )
        legend_x += 30 + 7 * len(name)
    parts.append("</svg>")
    return Markup("".join(parts))


def histogram_svg(
    scores: np.ndarray,
    width: int = 520,
    height: int = 220,
    thresholds: dict[str, float] | None = None,
) -> Markup:
    """Histogram of composite scores in 10-point bins, with axes and tier threshold lines."""
    scores = np.asarray(scores, dtype=float)
    counts, _ = np.histogram(np.clip(scores[np.isfinite(scores)], 0, 100), bins=10, range=(0, 100))
    top = max(int(counts.max()), 1)
    left, bottom, top_pad = 34, 34, 16
    bw = (width - left - 10) / 10
    plot_h = height - bottom - top_pad

    def px(score: float) -> float:
        return left + score / 100 * (width - left - 10)

    peak = int(np.argmax(counts))
    lines = [f"{name} from {bound:g}" for name, bound in (thresholds or {}).items()
             if 0 < bound < 100]  # fmt: skip
    label = (
        f"Histogram of composite scores: {int(counts.sum()):,} partners in 10-point bins, "
        f"most in {peak * 10}-{peak * 10 + 10} ({int(counts[peak]):,} partners)"
        + (f"; tier lines {', '.join(lines)}" if lines else "")
    )
    parts = [
        f'<svg class="histogram" role="img" aria-label="{_esc(label)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<line class="axis" x1="{left}" y1="{height - bottom}" x2="{width - 10}" '
        f'y2="{height - bottom}"/>',
        f'<line class="axis" x1="{left}" y1="{top_pad}" x2="{left}" y2="{height - bottom}"/>',
    ]
    for i, c in enumerate(counts):
        h = c / top * plot_h
        x = left + i * bw
        parts.append(
            f'<rect class="bar" x="{x + 2:.1f}" y="{height - bottom - h:.1f}" '
            f'width="{bw - 4:.1f}" height="{h:.1f}"><title>score {i * 10}-{i * 10 + 10}: '
            f"{c} partners</title></rect>"
            f'<text x="{x:.1f}" y="{height - bottom + 13}" text-anchor="middle">{i * 10}</text>'
        )
    parts.append(
        f'<text x="{width - 10}" y="{height - bottom + 13}" text-anchor="end">100</text>'
        f'<text x="{left - 4}" y="{top_pad + 4}" text-anchor="end">{top}</text>'
        f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">0</text>'
        f'<text class="axis-label" x="{(left + width) / 2:.0f}" y="{height - 4}" '
        'text-anchor="middle">composite score</text>'
        f'<text class="axis-label" x="10" y="{top_pad + plot_h / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 10 {top_pad + plot_h / 2:.0f})">partners</text>'
    )
    for name, bound in (thresholds or {}).items():
        if 0 < bound < 100:
            parts.append(
                f'<line class="threshold" x1="{px(bound):.1f}" y1="{top_pad - 4}" '
                f'x2="{px(bound):.1f}" y2="{height - bottom}"><title>tier {escape(name)} from '
                f"{bound:g}</title></line>"
                f'<text class="threshold-label" x="{px(bound) + 3:.1f}" y="{top_pad + 6}">'
                f"{escape(name)} ≥ {bound:g}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def scatter_svg(
    frame: pd.DataFrame,
    width: int = 520,
    height: int = 260,
    limit: int = SCATTER_LIMIT,
    engagement_high: float | None = None,
) -> Markup:
    """Expected revenue (log scale) vs engagement likelihood, one point per partner.

    Portfolios larger than ``limit`` are thinned to an even sample (sorted by score) to keep
    the page small.
    """
    data = frame
    if len(data) > limit:
        # frame.sort_values("score", kind="stable"), sorting the one column
        order = frame["score"].reset_index(drop=True).sort_values(kind="stable").index
        keep = order.to_numpy()[np.linspace(0, len(order) - 1, limit).round().astype(int)]
        columns = ["pred_revenue", "pred_engagement", "quadrant", "partner_name", "partner_id"]
        data = frame[columns].iloc[keep]
    rev = np.log10(np.maximum(np.nan_to_num(data["pred_revenue"].to_numpy(float)), 1.0))
    eng = np.clip(np.nan_to_num(data["pred_engagement"].to_numpy(float)), 0.0, 1.0)
    lo = float(rev.min())
    hi = float(max(rev.max(), lo + 1))
    pad = 40

    def px(v):
        return pad + (v - lo) / (hi - lo) * (width - pad - 10)

    def py(v):
        return 10 + (1 - v) * (height - 10 - pad)

    label = (
        f"Expected revenue (log scale) against engagement likelihood, one point per partner "
        f"({len(data):,} shown), coloured by quadrant"
        + (f"; high engagement from {engagement_high:.0%}" if engagement_high is not None else "")
    )
    parts = [
        f'<svg class="scatter" role="img" aria-label="{_esc(label)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<line class="axis" x1="{pad}" y1="{height - pad}" '
        f'x2="{width - 10}" y2="{height - pad}"/>',
        f'<line class="axis" x1="{pad}" y1="10" x2="{pad}" y2="{height - pad}"/>',
    ]
    for r, e, q, name, pid in zip(
        rev, eng, data["quadrant"], data["partner_name"], data["partner_id"], strict=True
    ):
        parts.append(
            f'<circle cx="{px(r):.1f}" cy="{py(e):.1f}" r="2.5" '
            f'fill="{QUADRANT_COLORS.get(q, "#555555")}" fill-opacity="0.6">'
            f"<title>&#x2068;{escape(name)}&#x2069; ({escape(pid)})</title></circle>"
        )
    for decade in range(math.ceil(lo), math.floor(hi) + 1):
        anchor = "end" if px(decade) > width - 30 else "middle"
        parts.append(
            f'<text x="{px(decade):.1f}" y="{height - pad + 14}" text-anchor="{anchor}">'
            f"{_compact_money(10.0**decade)}</text>"
        )
    if engagement_high is not None:
        parts.append(
            f'<line class="threshold" x1="{pad}" y1="{py(engagement_high):.1f}" '
            f'x2="{width - 10}" y2="{py(engagement_high):.1f}"/>'
            f'<text class="threshold-label" x="{width - 10}" y="{py(engagement_high) - 3:.1f}" '
            f'text-anchor="end">high engagement ≥ {engagement_high:.0%}</text>'
        )
    parts.append(
        f'<text class="axis-label" x="{width - 10}" y="{height - 4}" text-anchor="end">'
        "expected revenue (log scale)</text>"
        f'<text class="axis-label" x="10" y="{height / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 10 {height / 2:.0f})">engagement likelihood</text>'
        f'<text x="{pad - 3}" y="20" text-anchor="end">100%</text>'
        f'<text x="{pad - 3}" y="{height - pad}" text-anchor="end">0%</text>'
        "</svg>"
    )
    return Markup("".join(parts))


class _ReportEnvironment(Environment):
    """Jinja whose ``d.key`` looks a dict's key up first; other objects as usual.

    Jinja tries ``getattr`` first, and the AttributeError raised and caught for every dict
    lookup was ~20% of a partner page's rendering.
    """

    def getattr(self, obj, attribute):
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


def _environment() -> Environment:
    return _ReportEnvironment(
        loader=PackageLoader(__package__, "templates"),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
    )


def read_scores(
    path: str | Path, model_version: str | None = None, *, version_option: str | None = None
) -> pd.DataFrame:
    """Read a scores file, keeping ids, names and other text columns as strings.

    A partner's page shows one score: of several rows of a partner, the one of the latest
    as_of. Two rows of a partner at that as_of (two batches of one date in one file, e.g. one
    scored by model version 1 and one by version 2) have no latest one: the file is refused,
    naming both rows and their versions (the last of them was kept, silently, whichever version
    scored it). ``model_version`` keeps the rows of that version only (``report
    --model-version``), as a file of that version's batch alone.

    Args:
        path: CSV or Parquet scores file written by ``partnerscore score``, or the Parquet
            dataset folder ``score --engine spark`` writes (its part files read as one file,
            in partner order; a row of it is named by its part file and row within it).
        model_version: Read only the rows of this model version (the ``model_version`` column).
        version_option: The caller's option that sets ``model_version`` (``report``'s
            ``--model-version``), named in the message of a partner scored by two versions;
            None: the message asks for one batch per file.

    Returns:
        The scores, one row per partner (the latest as_of when a file holds several).

    Raises:
        PartnerscoreError: Missing or unreadable file, missing columns, no rows, an as_of that
            is not a date or in another time zone than row 1's (file, column, row), a partner
            scored twice at its latest as_of (both rows and versions), no row of
            ``model_version``, or a ``score`` run killed while publishing the file and its
            rejects (:func:`~partnerscore.features.core.check_companions`).
    """
    frame, path = read_frame_or_dataset(  # a publish killed midway refused
        path,
        text=lambda c: c in TEXT_COLUMNS or c.startswith("driver_"),
        again="run `partnerscore score` again",
    )
    for col in REQUIRED:
        if col not in frame.columns:
            raise PartnerscoreError(
                f"{path}: missing column '{col}' (not a partnerscore scores file)"
            )
    if frame.empty:
        raise PartnerscoreError(f"{path}: no scored partners")
    frame = frame.reset_index(drop=True)  # the index: each row's data record in the file
    frame["partner_id"] = text_column(frame["partner_id"]).astype(str)
    frame["as_of"] = as_of_dates(path, frame)
    if model_version is not None:
        frame = _of_version(frame, path, model_version)
    for col in ("partner_name", *SEGMENT_COLUMNS):
        frame[col] = text_column(frame[col]).astype(str) if col in frame else ""
    if "quadrant_label" not in frame:
        frame["quadrant_label"] = frame["quadrant"].astype(str).str.replace("_", " ")
    if frame["partner_id"].duplicated().any():
        frame = frame.sort_values("as_of", kind="stable")
        _refuse_two_latest(frame, path, version_option if model_version is None else None)
        frame = frame.drop_duplicates("partner_id", keep="last")
    if not frame["partner_id"].is_monotonic_increasing:  # scores files are written sorted
        frame = frame.sort_values("partner_id", kind="stable")
    return frame.reset_index(drop=True)


def _of_version(frame: pd.DataFrame, path: Path | PartRows, version: str) -> pd.DataFrame:
    """The rows of one model version (``report --model-version``), file row numbers as index."""
    option = f"--model-version {version}"
    if "model_version" not in frame.columns:
        raise PartnerscoreError(f"{path}: {option}: the file has no column 'model_version'")
    versions = text_column(frame["model_version"]).astype(str).str.strip()
    mine = (versions == str(version).strip()).to_numpy()
    if not mine.any():
        held = sorted(set(versions) - {""}, key=lambda v: (len(v), v))
        shown = ", ".join(held[:10]) + (", ..." if len(held) > 10 else "")
        raise PartnerscoreError(
            f"{path}: {option}: no row of this model version (the file holds "
            f"{'versions ' + shown if held else 'no model versions'})"
        )
    return frame[mine]


def not_reported(path: str | Path, model_version: str | None) -> Callable[[str], str]:
    """What a selected partner without a row to report is, for ``report``'s one-line error.

    Without ``model_version`` it is not in the scores file. With it, a partner the file holds
    only in rows of other versions (``--model-version 2`` and ``--partners C``, C scored by
    version 1 alone) says so and names them: it was "not in the scores file", though the file
    holds it. The file is read again only then (an error's path).

    Args:
        path: The scores file.
        model_version: The version ``report --model-version`` keeps (None: all rows).

    Returns:
        A function of a partner id giving the phrase after the option or file, row and column.
    """

    def what(pid: str) -> str:
        if model_version is not None:
            frame, _ = read_frame_or_dataset(
                path, text=lambda c: c in ("partner_id", "model_version")
            )
            if "model_version" in frame.columns:
                ids = text_column(frame["partner_id"]).astype(str)
                mine = (ids == pid).to_numpy()
                versions = text_column(frame["model_version"][mine]).astype(str).str.strip()
                held = sorted(set(versions) - {""}, key=lambda v: (len(v), v))
                if mine.any():
                    which = (
                        f"for model version{'s' if len(held) > 1 else ''} {', '.join(held)}"
                        if held
                        else "without a model version"
                    )
                    return (
                        f"{quoted(pid)} has rows only {which} in the scores file, not for "
                        f"--model-version {model_version}"
                    )
        return f"{quoted(pid)} is not in the scores file"

    return what


def _refuse_two_latest(frame: pd.DataFrame, path: Path | PartRows, option: str | None) -> None:
    """Stop when a partner has two rows at its latest as_of: its page would show either.

    ``frame`` is sorted by as_of (stable) and indexed by the rows' 0-based data records in the
    file; the kept row of a partner is its last. The first such partner in the file is named,
    with both rows (1-based data records, as ``forecast`` names them), the date and, from the
    ``model_version`` column, the versions (and ``option``, which picks one, when they differ).
    A dataset folder's rows (``path`` a :class:`~partnerscore.features.core.PartRows`) are
    named by their part files and rows within them.
    """
    keys = frame[["partner_id", "as_of"]].reset_index(drop=True)
    latest = keys.drop_duplicates("partner_id", keep="last").assign(_latest=True)
    at_latest = keys.merge(latest, on=["partner_id", "as_of"], how="left")["_latest"].notna()
    clash = (at_latest & keys.duplicated(keep=False)).to_numpy()
    if not clash.any():
        return
    # the first row in the file that repeats an earlier row's partner and latest as_of
    rows = np.sort(frame.index.to_numpy()[clash])
    ids = frame["partner_id"]
    seen: dict[str, int] = {}
    for row in rows.tolist():
        pid = ids.loc[row]
        if pid in seen:
            first, second = seen[pid], row
            break
        seen[pid] = row
    when = frame["as_of"].loc[first]
    if pd.isna(when):
        when = "of no date (as_of empty)"
    else:
        when = f"of {when:%Y-%m-%d}" if when == when.normalize() else f"of {when}"
    versions, hint = "", "use one batch per file"
    if "model_version" in frame.columns:
        v1, v2 = (_text(frame["model_version"].loc[r]).strip() for r in (first, second))
        if v1 != v2:
            versions = f" by model versions {v1 or '(none)'} and {v2 or '(none)'}"
            if option:
                hint = f"pick one with {option}, or use one batch per file"
        elif v1:
            versions = f" and by model version {v1}"
    where, rows = two_rows(path, first, second)
    raise PartnerscoreError(
        f"{where}: partner {quoted(pid)} is scored in {rows}, both as "
        f"{when}{versions}: a report shows one score per partner, the latest; {hint}"
    )


def peer_groups(frame: pd.DataFrame, band=None) -> tuple[np.ndarray, np.ndarray]:
    """Each partner's peer group: band x tier x type, else tier x type, else tier, else all.

    Mirrors ``serving.score.peer_percentile`` (a group needs at least 5 scored partners), with
    the maturity band first: partners are compared with peers at the same onboarding stage.

    Args:
        frame: Scores (tier, partner_type).
        band: (n,) maturity band per row (None: no band level).

    Returns:
        (group key per row, readable group name per row). A group's members are every
        partner with the same value at its level (:func:`peer_level_keys`): a partner that
        falls back to its segment is compared with the whole segment, including the partners
        whose own band group is big enough.
    """
    tier = frame["tier"].astype(str)
    ptype = frame["partner_type"].astype(str)
    seg = tier + " " + ptype  # readable name only: "a b" + "c" and "a" + "b c" read alike
    seg_key = _group_key(tier, ptype)
    seg_n = seg_key.map(seg_key.value_counts()).to_numpy()
    tier_n = tier.map(tier.value_counts()).to_numpy()
    has_tier = (tier != "").to_numpy()
    has_seg = has_tier & (ptype != "").to_numpy()
    use_seg = has_seg & (seg_n >= MIN_PEERS)
    use_tier = ~use_seg & has_tier & (tier_n >= MIN_PEERS)
    key = np.where(use_seg, "s:" + seg_key, np.where(use_tier, "t:" + tier, "all"))
    name = np.where(use_seg, seg, np.where(use_tier, "tier " + tier, "all partners"))
    if band is not None:
        band = text_column(pd.Series(np.asarray(band, dtype=object), index=frame.index))
        banded = _group_key(tier, ptype, band)
        band_n = banded.map(banded.value_counts()).to_numpy()
        use_band = has_seg & (band != "").to_numpy() & (band_n >= MIN_PEERS)
        key = np.where(use_band, "b:" + banded, key)
        name = np.where(use_band, seg + ", days " + band, name)
    return key, name


def peer_level_keys(frame: pd.DataFrame, band=None) -> list[np.ndarray]:
    """Each row's group key at every level of :func:`peer_groups` (band, segment, tier).

    A group key of :func:`peer_groups` lists as members the rows holding that key at its own
    level (``"all"`` holds everyone).
    """
    tier = frame["tier"].astype(str)
    ptype = frame["partner_type"].astype(str)
    levels = [("s:" + _group_key(tier, ptype)).to_numpy(), ("t:" + tier).to_numpy()]
    if band is not None:
        band = text_column(pd.Series(np.asarray(band, dtype=object), index=frame.index))
        levels.insert(0, ("b:" + _group_key(tier, ptype, band)).to_numpy())
    return levels


def _group_key(*parts: pd.Series) -> pd.Series:
    """One text key per row for a tuple of text columns, without collisions.

    Each part is length-prefixed (``"3:a b|1:c"``), so no value can make two different tuples
    read alike, whatever characters the values hold.
    """
    key = None
    for part in parts:
        piece = part.str.len().astype(str) + ":" + part
        key = piece if key is None else key + "|" + piece
    return key


@dataclass
class ReportResult:
    """What ``run_report`` wrote."""

    out_dir: Path
    index: Path
    reports: int
    seconds: float
    bytes_per_report: float
    with_history: int = 0
    removed_stale: int = 0
    workers: int = 1
    model_version: str | None = None

    def summary(self) -> str:
        """Counts, sizes and where to open the portfolio page."""
        lines = [
            f"wrote {self.reports:,} partner report{'' if self.reports == 1 else 's'} and the "
            "portfolio page "
            f"in {self.seconds:.1f} s with {self.workers} worker{'s' if self.workers > 1 else ''} "
            f"(~{self.bytes_per_report / 1024:.0f} KiB each; "
            f"{self.with_history:,} with a score trajectory)"
        ]
        if self.model_version is not None:
            lines.append(
                f"  rows of model version {self.model_version} only (--model-version; rows of "
                "other versions left out)"
            )
        if self.removed_stale:
            lines.append(
                f"  removed {self.removed_stale:,} report{'' if self.removed_stale == 1 else 's'} "
                "of partners no longer scored"
            )
        lines.append(f"  open {self.index}")
        return "\n".join(lines)


def tier_thresholds(policy: PolicyConfig, frame: pd.DataFrame | None = None) -> list[dict]:
    """The tiers, best first: score range, playbook action, owner role, review days, count.

    A tier holds the scores from its lower bound (included) to the next tier's (excluded), as
    ``models.policy.score_tier`` assigns them: "75-100", then "50 to under 75"; the lowest
    tier also holds the scores under its own bound ("0 to under 50" for a bound of 25).
    """
    book = load_playbook(policy)
    ordered = sorted(policy.tier_cutoffs.items(), key=lambda kv: kv[1], reverse=True)
    tiers = text_column(frame["score_tier"]) if frame is not None else None
    out = []
    upper = None
    for rank, (name, lower) in enumerate(ordered):
        entry = book["tiers"].get(name, {})
        low = 0.0 if rank == len(ordered) - 1 or lower < 0 else lower
        out.append(
            {
                "name": name,
                "lower": lower,
                "range": f"{low:g}-100" if upper is None else f"{low:g} to under {upper:g}",
                "action": entry.get("title", ""),
                "owner": entry.get("owner", ""),
                "review_days": entry.get("review_days", ""),
                "n": int((tiers == name).sum()) if tiers is not None else 0,
            }
        )
        upper = lower
    return out


def tier_basis_text(tier: str, raw: str, held: str, override: str, smoothed: str) -> str:
    """Why the tier is not the one of the score shown beside it, when no held reason says so.

    Tiers are decided from the smoothed score (hysteresis), so a partner can read "46.8 · tier
    B" under thresholds that put 46.8 in C; the page then says the tier follows the smoothed
    score. Empty when the tiers agree, a held reason or an override explains the tier, or the
    partner is graduated.
    """
    if held or override or not raw or not tier or tier in (raw, OUT_OF_SCOPE_TIER):
        return ""
    of = f" {smoothed}" if smoothed and smoothed != "–" else ""
    return f"tier from the smoothed score{of}; this batch's score alone is tier {raw}"


def score_limit_text(score, adjustment, factor) -> str:
    """``, then held at 100`` (or ``0``) when the 0-100 limits clipped the score, else empty.

    The score is ``clip(factor x weighted, 0, 100)`` and ``score_adjustment`` is ``score -
    weighted`` (the segment factor and the clipping), so the weighted points are ``score -
    adjustment``. Without this note a clipped partner's page read "segment adjustment none
    (factor 1): -1.5 points".
    """
    score, adjustment, factor = _finite(score), _finite(adjustment), _finite(factor)
    if math.isnan(score) or math.isnan(adjustment):
        return ""
    raw = (1.0 if math.isnan(factor) else factor) * (score - adjustment)
    if raw > 100 + 1e-9 and score >= 100 - 1e-9:
        return ", then held at 100, the top of the scale"
    if raw < -1e-9 and score <= 1e-9:
        return ", then held at 0, the bottom of the scale"
    return ""


def policy_explanation(rec: dict, policy: PolicyConfig) -> dict:
    """How the policy turned the model's score points into this partner's score."""
    band = _text(rec.get("maturity_band"))
    weights = ""
    if band in policy.band_names():
        bands = policy.maturity_bands[policy.band_names().index(band)]
        weights = ", ".join(
            f"{layer} ×{m:.2f}"
            for layer, m in zip(LAYERS, bands.weights.multipliers(), strict=True)
        )
    segments = []
    for key, factors in policy.segment_adjustments.items():
        value = _text(rec.get(key))
        factor = segment_factor(factors, value)
        if factor is not None:
            segments.append(f"{key.replace('_', ' ')} {value} ×{factor:g}")
    return {
        "band": band or "–",
        "weights": weights,
        "factor": _num(rec.get("score_adjustment_factor"), 2),
        "segments": ", ".join(segments) or "none (factor 1)",
        "limit": score_limit_text(
            rec.get("score"), rec.get("score_adjustment"), rec.get("score_adjustment_factor")
        ),
        "adjustment": _num(rec.get("score_adjustment"), sign=True),
        "model_score": _num(rec.get("score_model")),
    }


def _remove_stale(folder: Path, keep: set[str]) -> int:
    removed = 0
    for path in folder.iterdir():
        if path.name not in keep and REPORT_NAME.fullmatch(path.name) and path.is_file():
            path.unlink()
            removed += 1
    return removed


def read_notes(path: str | Path | None) -> dict[str, list[dict]]:
    """Account owners' free-text feedback notes per partner, newest first.

    The ``notes`` file (CSV or Parquet) has ``partner_id`` and ``note`` and optionally
    ``noted_at`` (date) and ``author``. (The contract's ``feedback`` table holds scores only,
    no text, so notes come from this separate file.)

    Raises:
        PartnerscoreError: Missing column or an unreadable date (file, column and row).
    """
    if path is None:
        return {}
    frame = read_frame(path, text=lambda c: True)
    for col in ("partner_id", "note"):
        if col not in frame:
            raise PartnerscoreError(f"{path}: missing column '{col}'")
    frame = frame.astype(object).where(frame.notna(), "")
    if "noted_at" in frame:
        for i, value in enumerate(frame["noted_at"], start=1):
            if value and pd.isna(pd.to_datetime(value, errors="coerce")):
                raise PartnerscoreError(
                    f"{path}: row {i}: column 'noted_at': {quoted(value)} is not a date"
                )
        frame["_t"] = pd.to_datetime(frame["noted_at"].replace("", None), errors="coerce")
        frame = frame.sort_values("_t", ascending=False, kind="stable", na_position="last")
    out: dict[str, list[dict]] = {}
    for rec in frame.to_dict("records"):
        if str(rec["note"]).strip():
            out.setdefault(str(rec["partner_id"]), []).append(
                {
                    "text": str(rec["note"]).strip(),
                    "when": str(rec.get("noted_at", "") or "")[:10],
                    "author": str(rec.get("author", "") or ""),
                }
            )
    return out


def read_partner_ids(
    path: str | Path, scored: set[str] | None = None, absent: Callable[[str], str] | None = None
) -> list[str]:
    """The partner ids of a ``report --partners-file``: its ``partner_id`` column, as written.

    A CSV or Parquet file (CSV quoting lets an id hold a comma, a quote or a line break; no
    id is split or trimmed), so any id can be selected, where ``--partners`` splits on commas.

    Args:
        path: The file.
        scored: The scores file's partner ids: an id not among them stops (None: not checked).
        absent: What an id not in ``scored`` is, for the message (:func:`not_reported`; None:
            "not in the scores file").

    Raises:
        PartnerscoreError: Unreadable file, no ``partner_id`` column, no row, an empty cell, or
            an id not in ``scored`` (file, column and row).
    """
    frame = read_frame(path, text=lambda c: True)
    if "partner_id" not in frame.columns:
        raise PartnerscoreError(
            f"{path}: missing column 'partner_id' (one partner id per row, under a "
            "'partner_id' header)"
        )
    if frame.empty:
        raise PartnerscoreError(f"{path}: no partner id given")
    ids = text_column(frame["partner_id"]).astype(str).tolist()
    for row, pid in enumerate(ids, start=1):
        if pid == "":
            raise PartnerscoreError(f"{path}: column 'partner_id' row {row}: missing")
        if scored is not None and pid not in scored:
            what = (absent or not_reported(path, None))(pid)
            raise PartnerscoreError(f"{path}: column 'partner_id' row {row}: {what}")
    return ids


def _select(
    frame: pd.DataFrame,
    partners: list[str] | None,
    tier: str | None,
    listed: list[str] | None = None,
    absent: Callable[[str], str] | None = None,
) -> np.ndarray:
    """Rows to write pages for (``report --partners`` / ``--tier``); all by default.

    ``partners`` are trimmed (the CLI's comma form); ``listed`` ids (``--partners-file``,
    checked by :func:`read_partner_ids`) are matched as they are. Both given: either's.
    ``absent`` says what a partner without a row is (:func:`not_reported`; None: "not in the
    scores file").
    """
    keep = np.ones(len(frame), dtype=bool)
    if partners is not None or listed is not None:
        wanted = {str(p).strip() for p in partners or () if str(p).strip()}
        unknown = sorted(wanted - set(frame["partner_id"]))
        if unknown:
            what = (absent or not_reported("", None))(unknown[0])
            raise PartnerscoreError(f"--partners: {what}")
        wanted.update(listed or ())
        keep &= frame["partner_id"].isin(wanted).to_numpy()
    if tier is not None:
        in_tier = (text_column(frame["score_tier"]) == tier).to_numpy()
        if not in_tier.any():
            raise PartnerscoreError(f"--tier {tier}: no partner in this tier")
        keep &= in_tier
        if not keep.any():  # both given: the pages are the listed partners in the tier
            given = " or ".join(
                name
                for name, ids in (("--partners", partners), ("--partners-file", listed))
                if ids is not None
            )
            raise PartnerscoreError(
                f"--tier {tier}: none of the {given} is in this tier (it has "
                f"{int(in_tier.sum()):,} partners)"
            )
    return keep


def scored_when(frame: pd.DataFrame) -> str:
    """When the portfolio's partners were scored, for the page's header.

    ``as of 2026-07-01`` for one batch; per-partner cut-offs (``score --at-age 90``) give
    ``at onboarding day 90, as of 2023-09-30 to 2026-06-30 (858 dates)``, other files of
    several dates their range (the header read the latest date alone, as if every partner had
    been scored then).
    """
    days = pd.to_datetime(frame["as_of"]).dt.normalize()
    first, last = days.min(), days.max()
    if first == last:
        return f"as of {last:%Y-%m-%d}"
    dates = f"as of {first:%Y-%m-%d} to {last:%Y-%m-%d} ({days.nunique():,} dates)"
    if "age_days" in frame:
        ages = pd.to_numeric(frame["age_days"], errors="coerce")
        if ages.notna().all() and ages.nunique() == 1:
            return f"at onboarding day {ages.iloc[0]:,.0f}, {dates}"
    return dates


def monthly_revenue(frame: pd.DataFrame, config: AppConfig) -> tuple[list[dict], str]:
    """The in-scope expected revenue by the calendar month it is expected in, for the portfolio.

    The phased monthly totals of ``partnerscore forecast --phased`` (the same table, with its
    portfolio intervals at ``train.interval_coverage``), formatted, each with a bar width
    (px, 160 for the largest month). Empty, with the reason, for scores without revenue
    phases or intervals.
    """
    from partnerscore.serving.forecast import forecast_table

    if not any(c.startswith(PHASE_COLUMN) for c in frame.columns):
        return [], "the scores have no revenue phases (scored by a model trained without them)"
    try:
        table = forecast_table(
            frame,
            (),
            None,
            config.train.interval_coverage,
            period="month",
            phased=True,
            build=config.build,
        )
    except PartnerscoreError as exc:
        return [], str(exc)
    top = float(table["expected_revenue"].max()) if len(table) else 0.0
    return [
        {
            "month": f"{rec.period_start:%b %Y}",
            "revenue": _money(rec.expected_revenue),
            "range": f"{_money(rec.revenue_lo)} – {_money(rec.revenue_hi)}",
            "partners": f"{rec.partners:,}",
            "width": round(160 * rec.expected_revenue / top) if top > 0 else 0,
        }
        for rec in table.itertuples()
    ], f"{config.train.interval_coverage:.0%}"


def portfolio_page(
    frame: pd.DataFrame,
    rows: np.ndarray,
    files: list[str],
    config: AppConfig,
    *,
    subset_note: str = "",
) -> str:
    """The portfolio page (``index.html``): summary, charts and the paged partner table.

    Summary, thresholds and charts cover every row of ``frame``; the table (embedded JSON,
    :func:`serving.report_pages.portfolio_data`) lists ``rows``.

    Args:
        frame: Scores, the whole batch.
        rows: Positions of the partners with pages.
        files: Report file name per row of ``frame``.
        config: Application configuration (policy thresholds).
        subset_note: Shown under the title when only some partners got pages.
    """
    from partnerscore.serving import report_pages as rp

    css = Markup((HERE / "static" / "report.css").read_text(encoding="utf-8"))
    js = Markup((HERE / "static" / "app.js").read_text(encoding="utf-8"))
    thresholds = tier_thresholds(config.policy, frame)
    cutoffs = dict(config.policy.tier_cutoffs)
    score_tier = text_column(frame["score_tier"])
    # a partner without a score has no tier (empty): counted apart, not as a tier named ""
    named = sorted(t for t in score_tier.unique() if t)
    tiers = [{"name": t, "n": int((score_tier == t).sum())} for t in named]
    untiered = int((score_tier == "").sum())
    provisional = frame["provisional"].map(_flag) if "provisional" in frame else None
    guardrail = frame["guardrail_flag"].map(_flag) if "guardrail_flag" in frame else None
    # partners past the trained onboarding ages: the model was not validated there, so their
    # expected revenue is shown apart from the onboarding total (as `forecast` leaves it out),
    # and the charts, whose tier lines and quadrants are onboarding readings, leave them out
    # while the batch has partners in scope
    graduated = rp.flag_column(frame, "out_of_scope", np.arange(len(frame)))
    # the quadrant's playbook action: provisional partners get onboarding and graduated ones
    # the hand-over instead, so neither speaks for the quadrant
    own = ~graduated
    if provisional is not None:
        own &= ~provisional.to_numpy(dtype=bool)
    charted = ~graduated if (~graduated).any() else np.ones(len(frame), dtype=bool)
    chart_note = (
        f"{int(charted.sum()):,} partners in onboarding scope; "
        f"{int(graduated.sum()):,} graduated not shown"
        if graduated.any() and not charted.all()
        else ""
    )
    quads = []
    for q in [*QUADRANTS, *sorted(set(text_column(frame["quadrant"])) - set(QUADRANTS))]:
        sel = (frame["quadrant"] == q).to_numpy()
        if not (sel & charted).any():  # none charted (all graduated): no row of 0 partners
            continue
        pool = frame.loc[sel & own, "intervention"]
        pool = pool if len(pool) else frame.loc[sel, "intervention"]
        quads.append(
            {
                "key": q,
                "label": frame.loc[sel, "quadrant_label"].iloc[0],
                "n": int((sel & charted).sum()),
                "action": pool.mode().iloc[0],
                "color": QUADRANT_COLORS.get(q, "#555555"),
            }
        )

    def distinct(col: str) -> str:
        return ", ".join(sorted(text_column(frame[col]).unique())) if col in frame else "?"

    revenue = frame["pred_revenue"].to_numpy(float)
    charted_rows = frame if charted.all() else frame[charted]
    monthly, monthly_note = monthly_revenue(frame, config)

    return (
        _environment()
        .get_template("index.html")
        .render(
            css=css,
            js=js,
            n=len(frame),
            scored=scored_when(frame),
            model=distinct("model_uri"),
            model_version=distinct("model_version"),
            config_hash=distinct("config_hash"),
            tiers=tiers,
            untiered=untiered,
            total_revenue=_money(revenue[~graduated].sum()),
            graduated_revenue=_money(revenue[graduated].sum()) if graduated.any() else "",
            provisional=int(provisional.sum()) if provisional is not None else 0,
            flags=int(guardrail.sum()) if guardrail is not None else 0,  # the whole batch
            histogram=histogram_svg(charted_rows["score"].to_numpy(float), thresholds=cutoffs),
            scatter=scatter_svg(charted_rows, engagement_high=config.policy.engagement_high),
            subset_note=subset_note,
            chart_note=chart_note,
            scatter_note=(
                f"even sample of {SCATTER_LIMIT:,} partners"
                if len(charted_rows) > SCATTER_LIMIT
                else ""
            ),
            quadrants=quads,
            thresholds=thresholds,
            monthly=monthly,
            monthly_note=monthly_note,
            shown=len(rows),
            data_json=rp.script_json(rp.portfolio_data(frame, rows, files)),
        )
    )


def unfinished_index(scores: str | Path, frame: pd.DataFrame) -> str:
    """``index.html`` while a report run rewrites the pages (replaced by the portfolio page)."""
    dates = pd.to_datetime(frame["as_of"]) if len(frame) else pd.Series(dtype="datetime64[ns]")
    newest = f"{dates.max():%Y-%m-%d}" if len(dates) and pd.notna(dates.max()) else "unknown"
    said = (
        f"Report being written from {scores} (scores as of {newest}), started "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. If this page stays, the run was interrupted "
        "and the partner pages are a mix of this batch and the previous one: run "
        "partnerscore report again."
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Report incomplete</title></head>\n"
        f"<body><h1>Report incomplete</h1><p>{escape(said)}</p></body></html>\n"
    )


def run_report(
    scores: str | Path,
    out_dir: str | Path,
    config: AppConfig,
    *,
    partners: list[str] | None = None,
    tier: str | None = None,
    notes: str | Path | None = None,
    workers: int | None = None,
    partners_file: str | Path | None = None,
    model_version: str | None = None,
) -> ReportResult:
    """The ``partnerscore report`` job: one HTML report per partner plus ``index.html``.

    Reports go to ``out_dir/partners/<safe name>.html``; earlier reports in that folder of
    partners absent from this scores file are removed so the folder matches the index. Pages
    are rendered by ``workers`` processes (default: the available cores); the output does not
    depend on the number of workers.

    Args:
        scores: A scores file written by ``partnerscore score``.
        out_dir: Output folder (``index.html`` and ``partners/``).
        config: Application configuration (history store location, horizon).
        partners: Write pages only for these partner ids (``report --partners``; trimmed).
        tier: Write pages only for this score tier (``report --tier``). Peers and portfolio
            statistics still come from the whole scores file; stale pages are kept.
        notes: Optional notes file (:func:`read_notes`) shown on the partner pages.
        workers: Processes rendering pages (None: the available cores; 1: no pool).
        partners_file: Also write pages for the ids of this file (``report --partners-file``,
            :func:`read_partner_ids`: any id, as written).
        model_version: Report only the rows of this model version (``report
            --model-version``; :func:`read_scores`): a file holding two versions' batches of
            one date is refused without it.

    Returns:
        Paths, counts and sizes.
    """
    from partnerscore.serving import report_pages as rp
    from partnerscore.training.progress import task

    started = time.perf_counter()
    workers = worker_count(workers)
    frame = read_scores(scores, model_version, version_option="--model-version")
    absent = not_reported(scores, model_version)
    listed = None
    if partners_file is not None:
        listed = read_partner_ids(partners_file, set(frame["partner_id"]), absent)
    keep = _select(frame, partners, tier, listed, absent)  # a bad selection writes no folder
    out_dir = Path(out_dir)
    partners_dir = out_dir / "partners"
    try:
        partners_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PartnerscoreError(f"{partners_dir}: cannot write: {exc.strerror or exc}") from exc
    names = [report_filename(pid) for pid in frame["partner_id"].tolist()]
    if len(set(names)) != len(names):  # 40-bit hashes: never seen, but never silently overwrite
        raise PartnerscoreError(f"{scores}: two partner ids map to the same report file name")
    # the stylesheet is inlined: each page is one self-contained file
    css = Markup((HERE / "static" / "report.css").read_text(encoding="utf-8"))
    rows = np.flatnonzero(keep)
    subset = partners is not None or listed is not None or tier is not None
    plan = rp.plan_pages(
        frame, keep, names, config, out_dir=out_dir, css=css, note_map=read_notes(notes)
    )
    subset_note = (
        f"pages written for {len(rows):,} of {len(frame):,} partners "
        f"({'tier ' + tier if tier else 'selected partners'}); summary, peers and charts "
        "cover the whole batch"
        if subset
        else ""
    )
    index_html: list[str] = []

    def portfolio() -> None:  # built while the workers write the partner pages
        index_html.append(portfolio_page(frame, rows, names, config, subset_note=subset_note))

    rp.remove_stale_temporaries(partners_dir)
    # the pages are replaced one by one, the portfolio page last: until then index.html says
    # the folder is being rewritten, so an interrupted run (SIGTERM, Ctrl-C, a failed page)
    # leaves no portfolio page of the previous batch over a mix of both batches' pages
    write_text_atomic(unfinished_index(scores, frame), out_dir / "index.html")
    total_bytes = with_history = 0
    with task("writing partner reports", len(rows)) as bar:
        for pages, written, trajectories in rp.render_pages(plan, workers, meanwhile=portfolio):
            total_bytes += written
            with_history += trajectories
            bar.advance(pages)
    removed = 0 if subset else _remove_stale(partners_dir, set(names))
    index = write_text_atomic(index_html[0], out_dir / "index.html")
    return ReportResult(
        out_dir=out_dir,
        index=index,
        reports=len(rows),
        seconds=time.perf_counter() - started,
        bytes_per_report=total_bytes / max(len(rows), 1),
        with_history=with_history,
        removed_stale=removed,
        workers=min(workers, max(len(rows), 1)),
        model_version=model_version,
    )
