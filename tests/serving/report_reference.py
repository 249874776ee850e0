"""The slow, obviously-correct twin of the report's per-page numbers (serving/report_pages.py).

One partner at a time, in plain Python and pandas: the peer group is found by counting the
partners that share the partner's tier, type and onboarding band (falling back as the docs say),
peer medians are medians of those partners' values, and the history is every stored row of the
partner (all declared columns) up to the page's date, as dicts. The fast path must give the same
texts for every page.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
from markupsafe import Markup, escape

from partnerscore.features.registry import LAYERS, REGISTRY, get_spec
from partnerscore.serving.history import ScoreHistory
from partnerscore.serving.report import (
    KEY_METRICS,
    MIN_PEERS,
    SERIES_CLASSES,
    WATERFALL_TOP,
    _finite,
    _label,
    _money,
    _num,
    _pct,
    _text,
    metric_texts,
)


def peer_members(frame: pd.DataFrame, band: list[str], i: int) -> tuple[list[int], str]:
    """Rows of partner i's peer group and its name: band x tier x type, tier x type, tier, all."""
    tier = [_text(v) for v in frame["tier"]]
    ptype = [_text(v) for v in frame["partner_type"]]
    everyone = list(range(len(frame)))
    if tier[i] and ptype[i] and band[i]:
        same = [k for k in everyone if (tier[k], ptype[k], band[k]) == (tier[i], ptype[i], band[i])]
        if len(same) >= MIN_PEERS:
            return same, f"{tier[i]} {ptype[i]}, days {band[i]}"
    if tier[i] and ptype[i]:
        same = [k for k in everyone if (tier[k], ptype[k]) == (tier[i], ptype[i])]
        if len(same) >= MIN_PEERS:
            return same, f"{tier[i]} {ptype[i]}"
    if tier[i]:
        same = [k for k in everyone if tier[k] == tier[i]]
        if len(same) >= MIN_PEERS:
            return same, f"tier {tier[i]}"
    return everyone, "all partners"


def table_was_absent(frame: pd.DataFrame, column: str) -> bool:
    """No feature of the column's source table has a value on any row of the batch."""
    spec = get_spec(column)
    if spec is None or spec.source == "partners" or not len(frame):
        return False
    same = [s.name for s in REGISTRY if s.source == spec.source and s.name in frame.columns]
    return all(frame[c].isna().all() for c in same)


def group_median_text(frame: pd.DataFrame, members: list[int], column: str) -> str:
    values = pd.to_numeric(frame[column].iloc[members], errors="coerce").astype(float)
    return metric_texts(column, [values.median()], not table_was_absent(frame, column))[0]


def history_rows(store_url: str, frame: pd.DataFrame) -> dict[str, list[dict]]:
    """Every partner's stored rows up to its page's as_of, oldest first, as dicts."""
    store = ScoreHistory(store_url)
    if not store.exists():
        return {}
    data = store.read(frame["partner_id"].tolist())
    out: dict[str, list[dict]] = {}
    as_of = dict(zip(frame["partner_id"], frame["as_of"], strict=True))

    def absent(column: str) -> bool:
        return column in frame.columns and table_was_absent(frame, column)

    for rec in data.to_dict("records"):
        if pd.Timestamp(rec["as_of"]) <= as_of[rec["partner_id"]]:
            for m in KEY_METRICS:
                if m in rec:
                    rec[f"text:{m}"] = metric_texts(m, [rec[m]], not absent(m))[0]
            out.setdefault(rec["partner_id"], []).append(rec)
    for rows in out.values():
        rows.sort(key=lambda r: pd.Timestamp(r["as_of"]))
    return out


def changes_since_last(
    rec: dict, history: list[dict], absent: Callable[[str], bool] = lambda c: False
) -> dict | None:
    """Score, prediction, layer and feature-value changes since the partner's previous batch.

    Args:
        rec: This batch's score row.
        history: The partner's history rows, oldest first (up to this batch).
        absent: Whether a feature's source table was not supplied (its missing values read
            ``unknown``).

    Returns:
        None without an earlier batch; else the previous as_of, measure rows and the features
        whose value changed (label, before, after).
    """
    now = pd.Timestamp(rec["as_of"])
    earlier = [h for h in history if pd.Timestamp(h["as_of"]) < now]
    if not earlier:
        return None
    prev = earlier[-1]
    # each change is the difference of the two numbers as shown (rounded first)
    score = [round(_finite(r.get("score")), 1) for r in (prev, rec)]
    revenue = [
        round(_finite(r.get("pred_revenue")))
        if math.isfinite(_finite(r.get("pred_revenue")))
        else math.nan
        for r in (prev, rec)
    ]
    engagement = [round(_finite(r.get("pred_engagement")) * 100, 1) for r in (prev, rec)]
    pct = [("–" if math.isnan(e) else f"{e:.1f}%") for e in engagement]
    measures = [
        ("Composite score", _num(prev.get("score")), _num(rec.get("score")),
         _num(score[1] - score[0], sign=True)),
        ("Tier", _text(prev.get("score_tier")), _text(rec.get("score_tier")), ""),
        ("Expected revenue", _money(prev.get("pred_revenue")), _money(rec.get("pred_revenue")),
         _money(revenue[1] - revenue[0], sign=True)),
        ("Engagement likelihood", pct[0], pct[1],
         _num(engagement[1] - engagement[0], sign=True) + " pts"),
    ]  # fmt: skip
    for layer in LAYERS:
        key = f"score_{layer}"
        if key in prev and key in rec:
            delta = _finite(rec.get(key)) - _finite(prev.get(key))
            measures.append(
                (f"{layer} points", _num(prev.get(key), sign=True), _num(rec.get(key), sign=True),
                 _num(delta, sign=True))
            )  # fmt: skip
    features = []
    for name in rec:
        spec = get_spec(name)
        if spec is None or name not in prev or spec.kind != "numeric":
            continue
        a, b = _finite(prev.get(name)), _finite(rec.get(name))
        if (math.isnan(a) and math.isnan(b)) or a == b:
            continue
        before, after = metric_texts(name, [a, b], not absent(name))
        if before != after:
            features.append({"label": spec.label, "before": before, "after": after})
    return {
        "since": pd.Timestamp(prev["as_of"]).strftime("%Y-%m-%d"),
        "measures": measures,
        "features": features[:12],
        "more": max(len(features) - 12, 0),
    }


def trajectory(history: list[dict], thresholds: dict[str, float]):
    """(chart, table head, table rows) of the partner's score over onboarding age."""
    if len(history) < 2:
        return None, [], []
    ages = [_finite(r.get("age_days")) for r in history]
    if any(math.isnan(a) for a in ages):
        return None, [], []
    series = {"score": [_finite(r.get("score")) for r in history]}
    smoothed = [_finite(r.get("score_smoothed")) for r in history]
    if any(math.isfinite(v) for v in smoothed):
        series["smoothed score"] = smoothed
    series["engagement %"] = [_finite(r.get("pred_engagement")) * 100 for r in history]
    metrics = [m for m in KEY_METRICS if any(m in r for r in history)]
    head = ["as of", "day", "score", "expected revenue", "engagement", *map(_label, metrics)]
    rows = [
        [
            pd.Timestamp(r["as_of"]).strftime("%Y-%m-%d"),
            _num(r.get("age_days"), 0),
            _num(r.get("score")),
            _money(r.get("pred_revenue")),
            _pct(r.get("pred_engagement")),
            *(r.get(f"text:{m}", "–") for m in metrics),
        ]
        for r in history
    ]
    return line_svg_reference(ages, series, thresholds=thresholds), head, rows


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def phase_rows(rec: dict, config) -> tuple[int, list[dict]]:
    """The page's horizon and its phases table, worked out day by day for this row alone."""
    # a model's values when they make sense (1 day to a million), else the config's
    horizon = _number(rec.get("revenue_horizon_days"))
    ok = horizon is not None and 1 <= horizon < 1e6
    horizon = int(horizon) if ok else config.build.horizon_days
    length = _number(rec.get("revenue_phase_days"))
    ok = length is not None and 1 <= length < 1e6
    length = int(length) if ok else config.build.phase_days
    amounts, k = [], 1
    while f"pred_revenue_phase_{k}" in rec:
        amounts.append(_number(rec[f"pred_revenue_phase_{k}"]))
        k += 1
    if not amounts or any(a is None for a in amounts):
        return horizon, []
    # which phase each day of the horizon falls in
    days_of = {}
    for day in range(horizon):
        days_of.setdefault(day // length, []).append(day)
    if len(days_of) != len(amounts):
        return horizon, []
    start = pd.Timestamp(rec["as_of"]).normalize()
    total = sum(amounts)
    rows = []
    for phase, amount in enumerate(amounts):
        days = days_of[phase]
        share = amount / total if total > 0 else None
        first, last = start + pd.Timedelta(days=days[0]), start + pd.Timedelta(days=days[-1])
        rows.append(
            {
                "days": f"{days[0] + 1}–{days[-1] + 1}",
                "dates": f"{first:%Y-%m-%d} – {last:%Y-%m-%d}",
                "revenue": _money(amount),
                "share": "–" if share is None else f"{share:.0%}",
                "width": 0 if share is None else round(120 * share),
            }
        )
    return horizon, rows


def revenue_range(rec: dict) -> str:
    """The interval line under the expected revenue, from this row alone."""
    lo, hi = _number(rec.get("pred_revenue_lo")), _number(rec.get("pred_revenue_hi"))
    cover = _number(rec.get("revenue_interval_coverage"))
    if lo is None or hi is None or cover is None or not 0 < cover < 1:
        return ""
    median = _number(rec.get("pred_revenue_median"))
    text = f"{round(cover * 100)}% range {_money(lo)} – {_money(hi)}"
    return text if median is None else f"{text} · most likely {_money(median)}"


def reference_page(frame: pd.DataFrame, band: list[str], history: dict, i: int, config) -> dict:
    """The per-page numbers of row i, computed for that partner alone."""
    rec = frame.iloc[i].to_dict()
    members, group = peer_members(frame, band, i)

    def absent(column: str) -> bool:
        return table_was_absent(frame, column)

    peers = [
        {"label": label, "value": metric_texts(key, [rec[key]], not absent(key))[0],
         "median": group_median_text(frame, members, key)}
        for key, label in (("score", "Composite score"), ("pred_revenue", "Expected revenue"),
                           ("pred_engagement", "Engagement likelihood"),
                           *((m, _label(m)) for m in KEY_METRICS if m in frame.columns))
    ]  # fmt: skip
    by_label = {spec.label: spec.name for spec in REGISTRY}

    def typical(sentence: str) -> str:
        feature = by_label.get(sentence.split(": ", 1)[0])
        spec = get_spec(feature) if feature else None
        if spec is None or spec.kind != "numeric" or feature not in frame.columns:
            return ""
        return group_median_text(frame, members, feature)

    drivers = {
        sign: [
            {"text": _text(rec[c]), "typical": typical(_text(rec[c]))}
            for c in sorted(
                (c for c in frame.columns if c.startswith(f"driver_{sign}_")),
                key=lambda c: int(c.rsplit("_", 1)[1]),
            )
            if _text(rec[c])
        ]
        for sign in ("pos", "neg")
    }
    rows = history.get(rec["partner_id"], [])
    # a graduated partner (past the trained onboarding ages): no onboarding tier lines
    flag = rec.get("out_of_scope")
    graduated = (
        (str(flag).strip().lower() in ("true", "1", "yes"))
        if isinstance(flag, str)
        else (flag is not None and flag == flag and bool(flag))
    )
    graduated = graduated or _text(rec.get("score_tier")) == "graduated"
    svg, head, table = trajectory(rows, {} if graduated else dict(config.policy.tier_cutoffs))
    horizon, phases = phase_rows(rec, config)
    return {
        "horizon": horizon,
        "revenue_range": revenue_range(rec),
        "phases": phases,
        "peers": peers,
        "peer_label": group,
        "peer_n": len(members),
        "drivers_pos": drivers["pos"],
        "drivers_neg": drivers["neg"],
        "changes": changes_since_last(rec, rows, absent),
        "trajectory_svg": svg,
        "trajectory_head": head,
        "trajectory_rows": table,
    }


def line_svg_reference(
    xs: list[float],
    series: dict[str, list[float]],
    width: int = 560,
    height: int = 190,
    thresholds: dict[str, float] | None = None,
) -> Markup:
    """serving.report.line_svg written plainly: every coordinate computed where it is drawn."""
    pad_l, pad_r, pad_b, pad_t = 36, 14, 24, 24
    x_lo, x_hi = min(xs), max(xs)
    span = x_hi - x_lo or 1.0

    def px(v: float) -> float:
        return pad_l + (v - x_lo) / span * (width - pad_l - pad_r)

    def py(v: float) -> float:
        return pad_t + (100 - min(max(v, 0.0), 100.0)) / 100 * (height - pad_t - pad_b)

    # its accessible name: days, each drawn series' first and last value, the tier lines
    named = []
    for name, values in list(series.items())[:3]:
        finite = [v for v in values if math.isfinite(v)]
        if finite:
            named.append(f"{name} {finite[0]:.1f} to {finite[-1]:.1f}")
    label = f"Trajectory over onboarding, day {x_lo:.0f} to day {x_hi:.0f}"
    if named:
        label += ": " + "; ".join(named)
    drawn = [f"{n} from {b:g}" for n, b in (thresholds or {}).items() if 0 < b < 100]
    if drawn:
        label += "; tier lines " + ", ".join(drawn)
    parts = [
        f'<svg class="trajectory" role="img" aria-label="{escape(label)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for tick in (0, 50, 100):
        parts.append(
            f'<line class="grid" x1="{pad_l}" y1="{py(tick):.1f}" x2="{width - pad_r}" '
            f'y2="{py(tick):.1f}"/><text x="4" y="{py(tick) + 4:.1f}">{tick}</text>'
        )
    for name, bound in (thresholds or {}).items():
        if 0 < bound < 100:
            parts.append(
                f'<line class="threshold" x1="{pad_l}" y1="{py(bound):.1f}" '
                f'x2="{width - pad_r}" y2="{py(bound):.1f}"><title>tier {escape(name)} from '
                f"{bound:g}</title></line>"
                f'<text class="threshold-label" x="{width - pad_r}" y="{py(bound) - 2:.1f}" '
                f'text-anchor="end">tier {escape(name)}</text>'
            )
    ticks = xs if len(xs) <= 8 else [x_lo, x_hi]
    for t in ticks:
        anchor = "start" if t == x_lo else "end" if t == x_hi else "middle"
        parts.append(
            f'<text x="{px(t):.1f}" y="{height - 6}" text-anchor="{anchor}">day {t:.0f}</text>'
        )
    legend_x = pad_l
    for cls, (name, values) in zip(SERIES_CLASSES, series.items(), strict=False):
        points = [(a, b) for a, b in zip(xs, values, strict=True) if math.isfinite(b)]
        pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in points)
        parts.append(f'<polyline class="{cls}" points="{pts}"/>')
        for a, b in points:
            parts.append(
                f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="3" class="{cls}">'
                f"<title>{escape(name)}: {b:.1f} at day {a:.0f}</title></circle>"
            )
        parts.append(
            f'<line class="{cls}" x1="{legend_x}" y1="10" x2="{legend_x + 18}" y2="10"/>'
            f'<text x="{legend_x + 22}" y="14">{escape(name)}</text>'
        )
        legend_x += 30 + 7 * len(name)
    parts.append("</svg>")
    return Markup("".join(parts))


def waterfall_reference(
    contributions: dict[str, float], base: float, pred: float, money: bool, width: int = 520
) -> Markup:
    """serving.report.waterfall_svg written plainly: sorted(), min/max and one bar at a time."""
    items = sorted(contributions.items(), key=lambda kv: -abs(kv[1]))
    labels = [_label(name) for name, _ in items[:WATERFALL_TOP]]
    values = [value for _, value in items[:WATERFALL_TOP]]
    rest = items[WATERFALL_TOP:]
    if rest:
        labels.append(f"{len(rest)} other feature{'s' if len(rest) > 1 else ''}")
        values.append(sum(value for _, value in rest))
    fmt = _money if money else (lambda v: f"{v * 100:+z.1f} pts")
    fmt_level = _money if money else _pct
    starts = []
    level = base
    lo, hi = min(0.0, base, pred), max(base, pred)
    for value in values:
        end = level + value
        starts.append(level)
        lo, hi = min(lo, level, end), max(hi, level, end)
        level = end
    hi = hi if hi > lo else lo + 1.0
    label_w, bar_w, row_h = 190, width - 190 - 90, 22
    height = (len(values) + 3) * row_h + 10
    span = hi - lo
    right = width - 4

    def bar(cls: str, a: float, b: float, y: int, label: str, value: str, weight="") -> str:
        xa = label_w + (a - lo) / span * bar_w
        xb = label_w + (b - lo) / span * bar_w
        return (
            f'<rect class="{cls}" x="{xa if xa < xb else xb:.1f}" y="{y}" '
            f'width="{max(abs(xb - xa), 1):.1f}" height="16"><title>{escape(label)}: {value}'
            f'</title></rect><text x="4" y="{y + 12}"{weight}>{escape(label[:32])}</text>'
            f'<text x="{right}" y="{y + 12}" text-anchor="end">{value}</text>'
        )

    shown = [fmt_level(base), *(fmt(v) for v in values), fmt_level(pred)]
    label = (
        f"{'Expected revenue' if money else 'Engagement likelihood'}: average partner "
        f"{shown[0]}, this partner {shown[-1]}"
    )
    if labels:
        top = [
            f"{name} {'+' if shown[k + 1].startswith('$') else ''}{shown[k + 1]}"
            for k, name in enumerate(labels[:3])
        ]
        label += "; largest contributions: " + ", ".join(top)
    parts = [
        f'<svg class="waterfall" role="img" aria-label="{escape(label)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        bar("base", 0.0, base, 4, "base (average partner)", fmt_level(base)),
    ]
    y = 4 + row_h
    for label, start, value in zip(labels, starts, values, strict=True):
        parts.append(
            bar("pos" if value >= 0 else "neg", start, start + value, y, label, fmt(value))
        )
        y += row_h
    parts.append(bar("base", 0.0, pred, y, "prediction", fmt_level(pred), ' font-weight="bold"'))
    y += row_h
    parts.append(
        f'<rect class="pos" x="{label_w}" y="{y + 2}" width="10" height="10"/>'
        f'<text x="{label_w + 14}" y="{y + 11}">raises</text>'
        f'<rect class="neg" x="{label_w + 70}" y="{y + 2}" width="10" height="10"/>'
        f'<text x="{label_w + 84}" y="{y + 11}">lowers</text>'
        f'<rect class="base" x="{label_w + 140}" y="{y + 2}" width="10" height="10"/>'
        f'<text x="{label_w + 154}" y="{y + 11}">level</text>'
        "</svg>"
    )
    return Markup("".join(parts))
