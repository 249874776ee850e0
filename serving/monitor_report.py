"""monitor.html: the monitoring run as one self-contained page with inline SVG charts.

Same stylesheet as the partner reports (inlined); every text is escaped (feature names,
categories and partner ids come from data).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from partnerscore.features.profile import ALL, column_counts
from partnerscore.serving.report import HERE, _environment, _esc

STATUS_FILL = {"alarm": "#e8a29a", "warn": "#f3d08f", "ok": "#cfe8d8", "skip": "#eef1f4"}
HEAT_ROWS = 25
DIST_CHARTS = 6
SEGMENT_CHARTS = 12
"""Most per-segment volume charts on the page (alarms, then warnings, then explained)."""


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:,.{digits}f}".rstrip("0").rstrip(".")


def heatmap_svg(checks) -> Markup:
    """PSI of the most drifted columns (rows) in every group (columns), coloured by status."""
    drift = [c for c in checks if c.section == "drift" and c.statistic == "psi"]
    if not drift:
        return Markup('<p class="muted">No drift checks in this run.</p>')
    groups = [ALL, *sorted({c.segment for c in drift if c.segment != ALL})]
    worst: dict[str, float] = {}
    for c in drift:
        score = (c.value or 0.0) + (10 if c.status == "alarm" else 5 if c.status == "warn" else 0)
        worst[c.subject] = max(worst.get(c.subject, -1.0), score)
    subjects = sorted(worst, key=lambda s: -worst[s])[:HEAT_ROWS]
    cell = {(c.subject, c.segment): c for c in drift}
    cw, ch, left, top = 26, 16, 250, 130
    width, height = left + cw * len(groups) + 10, top + ch * len(subjects) + 10
    parts = [
        f'<svg class="heatmap" role="img" '
        f'aria-label="{_esc(heatmap_label(drift, subjects, groups))}" '
        f'width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for j, g in enumerate(groups):
        x = left + j * cw + cw / 2
        parts.append(
            f'<text transform="translate({x:.1f},{top - 6}) rotate(-60)">{escape(g[:24])}</text>'
        )
    for i, s in enumerate(subjects):
        y = top + i * ch
        parts.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{escape(s)}</text>')
        for j, g in enumerate(groups):
            c = cell.get((s, g))
            if c is None:
                continue
            fill = STATUS_FILL.get(c.status, "#eef1f4")
            label = "" if c.value is None else f"{c.value:.2f}"
            parts.append(
                f'<rect x="{left + j * cw}" y="{y}" width="{cw - 1}" height="{ch - 1}" '
                f'fill="{fill}"><title>{escape(c.detail)} [{c.status}]</title></rect>'
            )
            if c.status in ("alarm", "warn"):
                parts.append(
                    f'<text x="{left + j * cw + cw / 2:.1f}" y="{y + 11}" '
                    f'text-anchor="middle" font-size="8">{escape(label)}</text>'
                )
    parts.append("</svg>")
    return Markup("".join(parts))


def heatmap_label(drift, subjects: list[str], groups: list[str]) -> str:
    """The heatmap's accessible name: what it shows, alarm and warning counts, top columns."""
    shown = [c for c in drift if c.subject in set(subjects) and c.segment in set(groups)]
    alarms = sum(c.status == "alarm" for c in shown)
    warns = sum(c.status == "warn" for c in shown)
    top = {c.subject: c for c in drift if c.segment == ALL}
    worst = ", ".join(
        f"{s} {top[s].value:.2f}" for s in subjects[:3] if s in top and top[s].value is not None
    )
    return (
        f"Drift heatmap: PSI of the {len(subjects)} most drifted columns in {len(groups)} "
        f"groups; {alarms} alarms, {warns} warnings"
        + (f"; overall PSI of the top columns: {worst}" if worst else "")
    )


def distribution_svg(
    name: str, ref: dict, cur: dict, spec: dict, width: int = 360, height: int = 150
) -> Markup:
    """Reference vs batch share per bin (numeric) or category, side by side."""
    if spec["kind"] == "numeric":
        edges = spec["edges"]
        labels = [f"≤{_fmt(edges[0])}"] if edges else ["all"]
        labels += [f"≤{_fmt(e)}" for e in edges[1:]]
        if edges:
            labels.append(f">{_fmt(edges[-1])}")
        r, c = list(ref["counts"]), list(cur["counts"])
    else:
        others = sorted(set(cur.get("other", {})))
        labels = [*spec["categories"], *others]
        r = [*ref["counts"], *([0] * len(others))]
        c = [*cur["counts"], *(cur["other"][k] for k in others)]
    miss_r = ref["missing"] / max(ref["n"], 1)
    miss_c = cur["missing"] / max(cur["n"], 1)
    rp = np.asarray(r, float) / max(sum(r), 1)
    cp = np.asarray(c, float) / max(sum(c), 1)
    top = max(float(rp.max()), float(cp.max()), 1e-9)
    n = len(labels)
    bw = (width - 20) / n
    shift = int(np.argmax(np.abs(cp - rp)))
    label = (
        f"{name}: share of present values per {'bin' if spec['kind'] == 'numeric' else 'category'}"
        f", training against batch; missing {miss_r:.0%} in training, {miss_c:.0%} in the batch;"
        f" largest shift {labels[shift]} {rp[shift]:.1%} to {cp[shift]:.1%}"
    )
    parts = [
        f'<svg class="dist" role="img" aria-label="{_esc(label)}" '
        f'width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="4" y="12">{escape(name)}</text>',
        f'<text x="4" y="26" class="muted">missing {miss_r:.0%} -> {miss_c:.0%}; shares of '
        "present values</text>",
        '<rect x="200" y="3" width="10" height="10" fill="#8a9bb0"/>'
        '<text x="214" y="12">training</text>'
        '<rect x="270" y="3" width="10" height="10" class="bar"/><text x="284" y="12">batch</text>',
    ]
    base = height - 22
    for i in range(n):
        bars = [
            (rp[i], 'fill="#8a9bb0"', f"{labels[i]}: training {rp[i]:.1%}"),
            (cp[i], 'class="bar"', f"{labels[i]}: batch {cp[i]:.1%}"),
        ]
        parts += _bar_pair(i, n, bw, base, base - 34, top, bars, labels[i][:12])
    parts.append("</svg>")
    return Markup("".join(parts))


def bars_svg(
    rows: list[tuple[str, float, str, str]], unit: str, what: str, width: int = 460
) -> Markup:
    """Horizontal bars (label, value, status, tooltip) scaled to the largest value.

    ``what`` (plain text) begins the chart's accessible name; every bar's value follows.
    """
    if not rows:
        return Markup('<p class="muted">Nothing to show.</p>')
    top = max([v for _, v, _, _ in rows if math.isfinite(v)] + [1e-9])
    height = 20 * len(rows) + 8
    label = f"{what}: " + ", ".join(
        f"{name} {_fmt(value)} {unit}" + (f" ({status})" if status in ("alarm", "warn") else "")
        for name, value, status, _ in rows
    )
    parts = [
        f'<svg class="bars" role="img" aria-label="{_esc(label)}" '
        f'width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, value, status, tip) in enumerate(rows):
        y = 4 + i * 20
        w = 0 if not math.isfinite(value) else value / top * (width - 230)
        parts.append(
            f'<text x="140" y="{y + 12}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="146" y="{y}" width="{w:.1f}" height="14" '
            f'fill="{STATUS_FILL.get(status, "#cfe8d8")}"><title>{escape(tip)}</title></rect>'
            f'<text x="{150 + w:.1f}" y="{y + 12}">{escape(_fmt(value))} {escape(unit)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _age_label(bucket: dict) -> str:
    hi = bucket["age_to"]
    return f">{bucket['age_from']}" if hi is None else f"{bucket['age_from']}-{hi}"


def _rates(buckets: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Rows per partner per 30 days at each bucket: (baseline, window)."""
    base = np.array([30 * b["base_rows"] / b["base_days"] for b in buckets], dtype=float)
    win = np.array([30 * b["window_rows"] / b["window_days"] for b in buckets], dtype=float)
    return base, win


def _segment_bars(buckets, base, win, top, floor, span, width, rest=False) -> list[str]:
    """Baseline and window bars of each age bucket, from ``floor`` up to ``span`` pixels."""
    parts = []
    n = max(len(buckets), 1)
    bw = (width - 20) / n
    labels = [_age_label(b) for b in buckets]
    whose = " (the rest)" if rest else ""
    for i, b in enumerate(buckets):
        bars = [
            (v, fill, f"{labels[i]} days, {what}{whose}: {v:.2f} rows per partner per 30 days "
             f"({rows:,.0f} rows in {days:,.0f} partner-days)")
            for v, fill, what, rows, days in (
                (base[i], 'fill="#8a9bb0"', "baseline", b["base_rows"], b["base_days"]),
                (win[i], 'class="bar rest"' if rest else 'class="bar"', "window",
                 b["window_rows"], b["window_days"]),
            )
        ]  # fmt: skip
        parts += _bar_pair(i, n, bw, floor, span, top, bars, labels[i])
    return parts


def _bar_pair(i, n, bw, floor, span, top, bars, label: str) -> list[str]:
    """Column ``i`` of ``n`` (``bw`` wide): two bars side by side, and its label below.

    ``bars``: (value, fill attribute, tooltip) each, scaled to ``top`` over ``span`` pixels up
    from ``floor``. Every column is labelled up to 7 columns, else the first and last only.
    """
    x = 10 + i * bw
    parts = []
    for k, (v, fill, tip) in enumerate(bars):
        h = v / top * span
        parts.append(
            f'<rect {fill} x="{x + 1 + k * (bw - 2) / 2:.1f}" y="{floor - h:.1f}" '
            f'width="{max((bw - 2) / 2 - 1, 1):.1f}" height="{h:.1f}">'
            f"<title>{escape(tip)}</title></rect>"
        )
    if n <= 7 or i in (0, n - 1):
        anchor = "start" if i == 0 and n > 7 else "end" if i == n - 1 and n > 7 else "middle"
        tx = x if anchor == "start" else x + bw if anchor == "end" else x + bw / 2
        parts.append(
            f'<text x="{tx:.1f}" y="{floor + 14}" text-anchor="{anchor}" '
            f'font-size="9">{escape(label)}</text>'
        )
    return parts


def segment_volume_svg(view: dict, config, width: int = 360, height: int = 150) -> Markup:
    """One segment's rows per partner per 30 days at each onboarding age: baseline vs window.

    What the per-segment volume check compares (``features/segment_volume.py``): the
    bars of each age bucket are the segment's rows over its partners' days at that age in
    the baseline and in the window, times 30. An explained segment (``view["rest"]``) gets a
    second panel on the same scale: its partners outside the explaining segments, the rest
    its explanation was tested on (a reader sees the drop is theirs and the rest flat).
    """
    buckets = view["buckets"]
    rest = view.get("rest")
    labels = [_age_label(b) for b in buckets]
    base, win = _rates(buckets)
    rest_base, rest_win = _rates(rest["buckets"]) if rest else (np.zeros(0), np.zeros(0))
    top = max(*(float(a.max(initial=0)) for a in (base, win, rest_base, rest_win)), 1e-9)
    ratio = view["ratio"]
    title = f"{view['table']} of {view['segment']}"
    said = f"{'spike' if ratio > 1 else 'drop'} x{ratio:.2f}"
    status = f"explained by {view['explained_by']}" if view.get("explained_by") else view["status"]
    shift = int(np.argmax(np.abs(win - base))) if buckets else 0
    label = (
        f"{title}: rows per partner per 30 days at each onboarding age (days since signing), "
        f"the {config.volume_baseline_days} days before the window against the "
        f"{config.window_days}-day window; {said} ({status})"
        + (
            f"; largest change at {labels[shift]} days: {base[shift]:.2f} to {win[shift]:.2f}"
            if buckets
            else ""
        )
    )
    if rest:
        r_ratio = rest["ratio"]
        r_said = f"{'spike' if r_ratio > 1 else 'drop'} x{r_ratio:.2f}"
        without = ", ".join(rest["without"])
        r_labels = [_age_label(b) for b in rest["buckets"]]
        r_shift = int(np.argmax(np.abs(rest_win - rest_base))) if rest["buckets"] else 0
        label += f"; the rest, without the partners of {without}: {r_said}" + (
            f", largest change at {r_labels[r_shift]} days: {rest_base[r_shift]:.2f} to "
            f"{rest_win[r_shift]:.2f}"
            if rest["buckets"]
            else ", no age both periods saw"
        )
        height = 2 * height - 30
    parts = [
        f'<svg class="segvol" role="img" aria-label="{_esc(label)}" '
        f'width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="4" y="12">{escape(title[:40])}</text>',
        f'<text x="4" y="26" class="muted">{escape(said)} · {escape(status[:40])}</text>',
        '<rect x="214" y="3" width="10" height="10" fill="#8a9bb0"/>'
        '<text x="228" y="12">baseline</text>'
        '<rect x="286" y="3" width="10" height="10" class="bar"/>'
        '<text x="300" y="12">window</text>',
    ]
    panel = 150 - 22  # the first panel's floor (a chart of 150 pixels)
    parts += _segment_bars(buckets, base, win, top, panel, panel - 34, width)
    if rest:
        head = panel + 28
        parts.append(
            f'<text x="4" y="{head}" class="muted">'
            f"{escape(f'the rest, without {without}: {r_said}'[:58])}</text>"
        )
        floor = height - 22
        parts += _segment_bars(
            rest["buckets"], rest_base, rest_win, top, floor, floor - head - 8, width, rest=True
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def segment_volume_charts(views: list[dict], config) -> list[Markup]:
    """The flagged segments' charts: alarms, warnings, then the explained ones.

    At most :data:`SEGMENT_CHARTS`; the page says how many more monitor.json holds.
    """
    rank = {"alarm": 0, "warn": 1}
    ordered = sorted(
        views, key=lambda v: (rank.get(v["status"], 2), -max(v["ratio"], 1 / v["ratio"]))
    )
    return [segment_volume_svg(v, config) for v in ordered[:SEGMENT_CHARTS]]


def trend_svg(table: pd.DataFrame, width: int = 560, height: int = 200) -> Markup:
    """Realised revenue Gini and engagement AUC per completed batch."""
    per = table[(table["segment"] == ALL) & (table["as_of"] != ALL)].sort_values("as_of")
    if per.empty:
        return Markup('<p class="muted">No completed batch yet.</p>')
    dates = pd.to_datetime(per["as_of"])
    xs = ((dates - dates.min()).dt.days).to_numpy(dtype=float)
    span = float(xs.max()) or 1.0
    pad_l, pad_r, pad_t, pad_b = 36, 14, 24, 26

    def px(v):
        return pad_l + (v / span if xs.max() else 0.5) * (width - pad_l - pad_r)

    def py(v):
        return pad_t + (1 - min(max(v, 0.0), 1.0)) * (height - pad_t - pad_b)

    parts = [
        f'<svg class="trajectory" role="img" aria-label="{_esc(trend_label(per, dates))}" '
        f'width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for tick in (0.0, 0.5, 1.0):
        parts.append(
            f'<line class="grid" x1="{pad_l}" y1="{py(tick):.1f}" x2="{width - pad_r}" '
            f'y2="{py(tick):.1f}"/><text x="4" y="{py(tick) + 4:.1f}">{tick:.1f}</text>'
        )
    for x, d in zip(xs, dates, strict=True):
        parts.append(
            f'<text x="{px(x):.1f}" y="{height - 8}" text-anchor="middle">{d:%Y-%m-%d}</text>'
        )
    legend_x = pad_l
    for cls, metric, name in (
        ("line", "revenue_normalized_gini", "revenue Gini"),
        ("line2", "engagement_roc_auc", "engagement AUC"),
    ):
        vals = per[metric].to_numpy(dtype=float)
        pts = [(a, b) for a, b in zip(xs, vals, strict=True) if math.isfinite(b)]
        parts.append(
            f'<polyline class="{cls}" points="'
            + " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in pts)
            + '"/>'
        )
        for a, b in pts:
            parts.append(
                f'<circle class="{cls}" cx="{px(a):.1f}" cy="{py(b):.1f}" r="3">'
                f"<title>{name}: {b:.3f}</title></circle>"
            )
        parts.append(
            f'<line class="{cls}" x1="{legend_x}" y1="10" x2="{legend_x + 18}" y2="10"/>'
            f'<text x="{legend_x + 22}" y="14">{name}</text>'
        )
        legend_x += 140
    parts.append("</svg>")
    return Markup("".join(parts))


def trend_label(per: pd.DataFrame, dates: pd.Series) -> str:
    """The backtest trend's accessible name: its batches and each metric's first and last."""
    parts = []
    for metric, name in (
        ("revenue_normalized_gini", "revenue Gini"),
        ("engagement_roc_auc", "engagement AUC"),
    ):
        vals = [v for v in per[metric].to_numpy(dtype=float) if math.isfinite(v)]
        if vals:
            parts.append(f"{name} {vals[0]:.3f} to {vals[-1]:.3f}")
    return (
        f"Realised revenue Gini and engagement AUC per completed batch, {len(per)} batches "
        f"from {dates.min():%Y-%m-%d} to {dates.max():%Y-%m-%d}"
        + (f": {'; '.join(parts)}" if parts else "")
    )


def render_monitor_html(result, reference: dict, batch: pd.DataFrame, config, payload) -> str:
    """The monitor page."""
    checks = result.checks
    flagged = [c for c in checks if c.status in ("alarm", "warn")]
    flagged.sort(key=lambda c: (c.status != "alarm", c.section, c.name))
    drift = [c for c in checks if c.section == "drift" and c.value is not None]
    top_cols = []
    rank = {"alarm": 0, "warn": 1}
    for c in sorted(drift, key=lambda c: (rank.get(c.status, 2), -(c.value or 0))):
        if c.segment == ALL and c.subject in reference["columns"] and c.subject not in top_cols:
            top_cols.append(c.subject)
        if len(top_cols) >= DIST_CHARTS:
            break
    dists = []
    if not batch.empty:
        ref_all = reference["groups"][ALL]
        for name in top_cols:
            spec = reference["columns"][name]
            cur = column_counts(batch[name], spec)
            dists.append(distribution_svg(name, ref_all[name], cur, spec))
    volumes = [
        (c.subject, c.value if c.value is not None else float("nan"), c.status, c.detail)
        for c in checks
        if c.statistic == "volume_ratio"
    ]
    stale = [
        (c.subject, c.value if c.value is not None else float("nan"), c.status, c.detail)
        for c in checks
        if c.section == "staleness"
    ]
    segment_views = getattr(result, "segment_volumes", [])
    explained = [c for c in checks if c.explained_by is not None]
    backtest = result.backtest
    overall = backtest[backtest["as_of"] == ALL] if not backtest.empty else backtest
    anomalies = result.anomalies.head(200)
    env = _environment()
    css = Markup((HERE / "static" / "report.css").read_text(encoding="utf-8"))
    return env.get_template("monitor.html").render(
        css=css,
        payload=payload,
        result=result,
        flagged=flagged,
        heatmap=heatmap_svg(checks),
        dists=dists,
        volumes=bars_svg(volumes, "x", "Rows per day against the previous batch, ratio either way"),
        segvols=segment_volume_charts(segment_views, config.monitor),
        segvols_total=len(segment_views),
        segvols_max=SEGMENT_CHARTS,
        baseline_days=config.monitor.volume_baseline_days,
        explained=explained,
        staleness=bars_svg(stale, "days", "Days since the newest event of each table"),
        trend=trend_svg(backtest) if not backtest.empty else None,
        overall=overall.to_dict("records"),
        phases=result.backtest_phases.to_dict("records"),
        window_note=(payload.get("backtest_training_window") or {}).get("note", ""),
        labels_note=(payload.get("backtest_label_definition") or {}).get("note", ""),
        backtest_empty=next(
            (c.detail for c in checks if c.name == "backtest.batches"),
            "no scored batch in the history has a completed horizon yet",
        ),
        anomalies=anomalies.to_dict("records"),
        anomalies_total=len(result.anomalies),
        fmt=_fmt,
        all_checks=sorted(checks, key=lambda c: c.name),
    )
