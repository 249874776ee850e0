"""Per-partner HTML explanation reports and the portfolio page.

Reports are static, self-contained pages: charts are inline SVG built here, the small stylesheet
(and the portfolio page's sort/filter script) are inlined; nothing is fetched from a network.
Partner names and ids are untrusted: every text goes through Jinja2 autoescaping or
:func:`markupsafe.escape` (SVG included), and file names are derived from a slug plus a hash
of the id, so no id can collide with another or escape the output folder.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from partnerscore.features.core import PartnerscoreError, read_frame, write_text_atomic
from partnerscore.features.registry import LAYERS, get_spec
from partnerscore.models.explain import format_value
from partnerscore.models.policy import QUADRANTS
from partnerscore.serving.config import AppConfig
from partnerscore.serving.history import ScoreHistory

HERE = Path(__file__).parent
REQUIRED = (
    "partner_id",
    "as_of",
    "score",
    "score_tier",
    "pred_revenue",
    "pred_engagement",
    "quadrant",
    "quadrant_label",
    "intervention",
    "intervention_detail",
)
KEY_METRICS = (
    "activities_touchpoints_30d",
    "trainings_certifications_todate",
    "leads_qualified_todate",
    "deals_won_amount_todate",
    "deals_open_pipeline_amount",
)
WATERFALL_TOP = 8


def report_filename(partner_id: str) -> str:
    """A safe, unique file name for any partner id (slug + hash of the exact id)."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", str(partner_id)).strip("_")[:40] or "partner"
    digest = hashlib.sha256(str(partner_id).encode("utf-8")).hexdigest()[:10]
    return f"{slug}-{digest}.html"


def _money(v: float) -> str:
    if v is None or not np.isfinite(v):
        return "–"
    return f"-${-v:,.0f}" if v < 0 else f"${v:,.0f}"


def _pct(v: float) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.0%}"


def _num(v, digits: int = 1) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "–"
    return "–" if not np.isfinite(v) else f"{v:,.{digits}f}"


def _label(feature: str) -> str:
    spec = get_spec(feature)
    return spec.label if spec else feature


def _feature_value(feature: str, value) -> str:
    spec = get_spec(feature)
    if spec is None:
        return str(value)
    if spec.kind == "numeric":
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = float("nan")
    return format_value(value, spec)


def waterfall_svg(
    contributions: dict[str, float], base: float, pred: float, money: bool, width: int = 520
) -> Markup:
    """Horizontal waterfall: base -> top contributions (+ other features) -> prediction."""
    items = sorted(contributions.items(), key=lambda kv: -abs(kv[1]))
    top = items[:WATERFALL_TOP]
    rest = sum(v for _, v in items[WATERFALL_TOP:])
    steps = [(_label(name), value) for name, value in top]
    if abs(rest) > 1e-12:
        steps.append((f"{len(items) - len(top)} other features", rest))
    fmt = _money if money else (lambda v: f"{v * 100:+.1f} pts")
    fmt_level = _money if money else _pct
    rows = [("base (average partner)", base, "base")]
    level = base
    spans = []
    for label, value in steps:
        spans.append((label, level, level + value, value))
        level += value
    lo = min([0.0, base, pred] + [min(a, b) for _, a, b, _ in spans])
    hi = max([base, pred] + [max(a, b) for _, a, b, _ in spans]) or 1.0
    label_w, bar_w = 190, width - 190 - 90
    row_h = 22
    n = len(spans) + 2
    height = n * row_h + 10

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo if hi > lo else 1.0) * bar_w

    parts = [
        f'<svg class="waterfall" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    y = 4
    for label, value, _ in rows:
        parts.append(
            f'<rect class="base" x="{x(min(0, value)):.1f}" y="{y}" '
            f'width="{max(abs(x(value) - x(0)), 1):.1f}" height="{row_h - 6}"></rect>'
            f'<text x="4" y="{y + 12}">{escape(label)}</text>'
            f'<text x="{width - 4}" y="{y + 12}" text-anchor="end">'
            f"{escape(fmt_level(value))}</text>"
        )
        y += row_h
    for label, start, end, value in spans:
        cls = "pos" if value >= 0 else "neg"
        parts.append(
            f'<rect class="{cls}" x="{min(x(start), x(end)):.1f}" y="{y}" '
            f'width="{max(abs(x(end) - x(start)), 1):.1f}" height="{row_h - 6}"></rect>'
            f'<text x="4" y="{y + 12}">{escape(label[:32])}</text>'
            f'<text x="{width - 4}" y="{y + 12}" text-anchor="end">{escape(fmt(value))}</text>'
        )
        y += row_h
    parts.append(
        f'<rect class="base" x="{x(min(0, pred)):.1f}" y="{y}" '
        f'width="{max(abs(x(pred) - x(0)), 1):.1f}" height="{row_h - 6}"></rect>'
        f'<text x="4" y="{y + 12}" font-weight="bold">prediction</text>'
        f'<text x="{width - 4}" y="{y + 12}" text-anchor="end">{escape(fmt_level(pred))}</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def line_svg(
    xs: list[float], series: dict[str, list[float]], width: int = 560, height: int = 180
) -> Markup:
    """Line chart of one or two series over onboarding age (days), 0-100 scale."""
    pad_l, pad_b, pad_t = 36, 24, 10
    x_lo, x_hi = min(xs), max(xs)
    span = x_hi - x_lo or 1.0

    def px(v: float) -> float:
        return pad_l + (v - x_lo) / span * (width - pad_l - 10)

    def py(v: float) -> float:
        return pad_t + (100 - v) / 100 * (height - pad_t - pad_b)

    parts = [
        f'<svg class="trajectory" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<line class="axis" x1="{pad_l}" y1="{py(0):.1f}" x2="{width - 10}" y2="{py(0):.1f}"/>',
    ]
    for tick in (0, 50, 100):
        parts.append(f'<text x="4" y="{py(tick) + 4:.1f}">{tick}</text>')
    for cls, (name, values) in zip(("line", "line2"), series.items(), strict=False):
        pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(xs, values, strict=True))
        parts.append(
            f'<polyline class="{cls}" points="{pts}"><title>{escape(name)}</title></polyline>'
        )
        for a, b in zip(xs, values, strict=True):
            parts.append(
                f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="3" class="{cls}">'
                f"<title>{escape(name)}: {b:.1f} at day {a:.0f}</title></circle>"
            )
    parts.append(
        f'<text x="{pad_l}" y="{height - 6}">day {x_lo:.0f}</text>'
        f'<text x="{width - 10}" y="{height - 6}" text-anchor="end">day {x_hi:.0f}</text>'
    )
    legend = " · ".join(series)
    parts.append(
        f'<text x="{width - 10}" y="{pad_t + 4}" text-anchor="end">{escape(legend)}</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def histogram_svg(scores: np.ndarray, width: int = 520, height: int = 200) -> Markup:
    """Histogram of composite scores in 10-point bins."""
    counts, _ = np.histogram(np.clip(scores, 0, 100), bins=10, range=(0, 100))
    top = max(int(counts.max()), 1)
    bw = (width - 40) / 10
    parts = [
        f'<svg class="histogram" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, c in enumerate(counts):
        h = c / top * (height - 40)
        x = 30 + i * bw
        parts.append(
            f'<rect class="bar" x="{x + 2:.1f}" y="{height - 20 - h:.1f}" width="{bw - 4:.1f}" '
            f'height="{h:.1f}"><title>{i * 10}-{i * 10 + 10}: {c} partners</title></rect>'
            f'<text x="{x + bw / 2:.1f}" y="{height - 6}" text-anchor="middle">{i * 10}</text>'
        )
    parts.append(f'<text x="4" y="14">{top}</text></svg>')
    return Markup("".join(parts))


def scatter_svg(frame: pd.DataFrame, width: int = 520, height: int = 260, limit: int = 4000):
    """Expected revenue (log scale) vs engagement likelihood, one point per partner."""
    data = frame.head(limit)
    rev = np.log10(np.maximum(data["pred_revenue"].to_numpy(float), 1.0))
    eng = data["pred_engagement"].to_numpy(float)
    lo, hi = float(rev.min()), float(max(rev.max(), rev.min() + 1))
    pad = 34

    def px(v):
        return pad + (v - lo) / (hi - lo) * (width - pad - 10)

    def py(v):
        return 10 + (1 - v) * (height - 10 - pad)

    parts = [
        f'<svg class="scatter" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<line class="axis" x1="{pad}" y1="{height - pad}" '
        f'x2="{width - 10}" y2="{height - pad}"/>',
        f'<line class="axis" x1="{pad}" y1="10" x2="{pad}" y2="{height - pad}"/>',
    ]
    colors = dict(zip(QUADRANTS, ("#2f855a", "#b7791f", "#3b6ea5", "#8a9bb0"), strict=True))
    for r, e, q, name in zip(rev, eng, data["quadrant"], data["partner_name"], strict=True):
        parts.append(
            f'<circle cx="{px(r):.1f}" cy="{py(e):.1f}" r="2.5" fill="{colors.get(q, "#555")}" '
            f'fill-opacity="0.6"><title>{escape(name)}</title></circle>'
        )
    parts.append(
        f'<text x="{width - 10}" y="{height - 8}" text-anchor="end">expected revenue (log scale)'
        f'</text><text x="4" y="20">100%</text><text x="4" y="{height - pad}">0%</text>'
        "</svg>"
    )
    return Markup("".join(parts))


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(HERE / "templates")),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        trim_blocks=False,
    )


def _contribs(row: pd.Series, head: str) -> dict[str, float]:
    prefix = f"shap_{head}_"
    return {c[len(prefix) :]: float(row[c]) for c in row.index if c.startswith(prefix)}


def _drivers(row: pd.Series, sign: str) -> list[str]:
    out = []
    for i in range(1, 10):
        value = row.get(f"driver_{sign}_{i}")
        if value is None:
            break
        if isinstance(value, str) and value:
            out.append(value)
    return out


def _segment(frame: pd.DataFrame) -> pd.Series:
    return frame["tier"].astype(str) + " " + frame["partner_type"].astype(str)


@dataclass
class ReportResult:
    """What ``run_report`` wrote."""

    out_dir: Path
    index: Path
    reports: int
    seconds: float
    bytes_per_report: float

    def summary(self) -> str:
        """Where the reports are."""
        return (
            f"wrote {self.reports:,} partner reports and the portfolio page "
            f"in {self.seconds:.1f} s "
            f"(~{self.bytes_per_report / 1024:.0f} KiB each)\n  open {self.index}"
        )


def _trajectory(history: pd.DataFrame) -> tuple[Markup | None, list[str], list[list[str]]]:
    if history.empty or len(history) < 2:
        return None, [], []
    h = history.sort_values("as_of")
    ages = h["age_days"].astype(float).tolist()
    series = {"score": h["score"].astype(float).tolist()}
    if "score_smoothed" in h and h["score_smoothed"].notna().all():
        series["smoothed"] = h["score_smoothed"].astype(float).tolist()
    svg = line_svg(ages, series)
    metrics = [m for m in KEY_METRICS if m in h.columns]
    head = [
        "as of",
        "day",
        "score",
        "expected revenue",
        "engagement",
        *(_label(m) for m in metrics),
    ]
    rows = []
    for _, r in h.iterrows():
        rows.append(
            [
                pd.Timestamp(r["as_of"]).strftime("%Y-%m-%d"),
                _num(r["age_days"], 0),
                _num(r["score"]),
                _money(float(r["pred_revenue"])),
                _pct(float(r["pred_engagement"])),
                *(_feature_value(m, r[m]) for m in metrics),
            ]
        )
    return svg, head, rows


def run_report(scores: str | Path, out_dir: str | Path, config: AppConfig) -> ReportResult:
    """The ``partnerscore report`` job: one HTML report per partner plus ``index.html``.

    Args:
        scores: A scores file written by ``partnerscore score``.
        out_dir: Output folder (``index.html`` and ``partners/``).
        config: Application configuration (history store location, horizon).

    Returns:
        Paths and counts.
    """
    started = time.perf_counter()
    scores = Path(scores)
    frame = read_frame(scores)
    for col in REQUIRED:
        if col not in frame.columns:
            raise PartnerscoreError(
                f"{scores}: missing column '{col}' (not a partnerscore scores file)"
            )
    if frame.empty:
        raise PartnerscoreError(f"{scores}: no scored partners")
    for col in ("partner_name", "tier", "region", "industry", "partner_type"):
        if col not in frame:
            frame[col] = ""
    frame["partner_id"] = frame["partner_id"].astype(str)
    frame["partner_name"] = frame["partner_name"].fillna("").astype(str)
    out_dir = Path(out_dir)
    (out_dir / "partners").mkdir(parents=True, exist_ok=True)
    # styles and script are inlined: each page is one self-contained file
    css = Markup((HERE / "static" / "report.css").read_text(encoding="utf-8"))
    js = Markup((HERE / "static" / "app.js").read_text(encoding="utf-8"))

    history_store = ScoreHistory(config.paths.history_database())
    history = history_store.read(frame["partner_id"].tolist()) if history_store.exists() else None
    by_partner = (
        dict(tuple(history.groupby("partner_id"))) if history is not None and len(history) else {}
    )
    segment = _segment(frame)
    seg_size = segment.map(segment.value_counts())
    env = _environment()
    partner_tpl = env.get_template("partner.html")
    horizon = config.build.horizon_days
    as_of = pd.to_datetime(frame["as_of"]).max().strftime("%Y-%m-%d")
    peer_metrics = [
        ("score", "Composite score"),
        ("pred_revenue", "Expected revenue"),
        ("pred_engagement", "Engagement likelihood"),
    ]
    peer_metrics += [(m, _label(m)) for m in KEY_METRICS if m in frame.columns]
    medians = {key: frame.groupby(segment)[key].median() for key, _ in peer_metrics}
    all_medians = {key: frame[key].median() for key, _ in peer_metrics}

    total_bytes = 0
    rows = []
    for i, (_, row) in enumerate(frame.iterrows()):
        pid = row["partner_id"]
        href = f"partners/{report_filename(pid)}"
        seg = segment.iloc[i]
        use_segment = seg_size.iloc[i] >= 5
        peers = []
        for key, label in peer_metrics:
            med = medians[key].get(seg) if use_segment else all_medians[key]
            if key == "pred_revenue" or key.endswith("amount_todate") or key.endswith("_amount"):
                value, median = _money(float(row[key])), _money(float(med))
            elif key == "pred_engagement":
                value, median = _pct(float(row[key])), _pct(float(med))
            else:
                value, median = _num(row[key]), _num(med)
            peers.append({"label": label, "value": value, "median": median})
        layers = [
            {
                "name": layer,
                "revenue": _money(float(row.get(f"revenue_{layer}", np.nan))),
                "engagement": f"{float(row.get(f'engagement_{layer}', np.nan)) * 100:+.1f}",
                "score": f"{float(row.get(f'score_{layer}', np.nan)):+.1f}",
            }
            for layer in LAYERS
        ]
        layers.insert(
            0,
            {
                "name": "base (average partner)",
                "revenue": _money(float(row.get("revenue_base", np.nan))),
                "engagement": f"{float(row.get('engagement_base', np.nan)) * 100:.1f}",
                "score": _num(row.get("score_base", np.nan)),
            },
        )
        traj_svg, traj_head, traj_rows = _trajectory(by_partner.get(pid, pd.DataFrame()))
        html = partner_tpl.render(
            css=css,
            p=row.to_dict(),
            as_of=pd.Timestamp(row["as_of"]).strftime("%Y-%m-%d"),
            age=_num(row.get("age_days", np.nan), 0),
            horizon=horizon,
            fmt={
                "score": _num(row["score"]),
                "smoothed": _num(row["score_smoothed"]) if "score_smoothed" in row else "",
                "revenue": _money(float(row["pred_revenue"])),
                "engagement": _pct(float(row["pred_engagement"])),
                "peer": _num(row.get("peer_percentile", np.nan), 0),
            },
            drivers_pos=_drivers(row, "pos"),
            drivers_neg=_drivers(row, "neg"),
            waterfall_revenue=waterfall_svg(
                _contribs(row, "revenue"),
                float(row.get("revenue_base", 0.0)),
                float(row["pred_revenue"]),
                money=True,
            ),
            waterfall_engagement=waterfall_svg(
                _contribs(row, "engagement"),
                float(row.get("engagement_base", 0.0)),
                float(row["pred_engagement"]),
                money=False,
            ),
            layers=layers,
            trajectory_svg=traj_svg,
            trajectory_head=traj_head,
            trajectory_rows=traj_rows,
            peers=peers,
            peer_label=seg if use_segment else "all partners (segment under 5)",
            peer_n=int(seg_size.iloc[i]) if use_segment else len(frame),
        )
        path = write_text_atomic(html, out_dir / href)
        total_bytes += path.stat().st_size
        rows.append(
            {
                "href": href,
                "name": row["partner_name"],
                "id": pid,
                "search": " ".join(
                    str(row[c]).lower()
                    for c in (
                        "partner_name",
                        "partner_id",
                        "tier",
                        "region",
                        "industry",
                        "partner_type",
                    )
                ),
                "segment": f"{row['tier']} · {row['region']} · {row['partner_type']}",
                "score": _num(row["score"]),
                "score_value": f"{float(row['score']):.4f}",
                "score_tier": row["score_tier"],
                "revenue": _money(float(row["pred_revenue"])),
                "revenue_value": f"{float(row['pred_revenue']):.2f}",
                "engagement": _pct(float(row["pred_engagement"])),
                "engagement_value": f"{float(row['pred_engagement']):.4f}",
                "quadrant": row["quadrant"],
                "quadrant_label": row["quadrant_label"],
                "peer": _num(row.get("peer_percentile", np.nan), 0),
                "peer_value": f"{float(row.get('peer_percentile', np.nan)):.1f}",
                "action": row["intervention"],
                "provisional": bool(row.get("provisional", False)),
            }
        )
    tiers = [
        {"name": t, "n": int((frame["score_tier"] == t).sum())}
        for t in sorted(frame["score_tier"].astype(str).unique())
    ]
    settled = ~frame["provisional"].astype(bool) if "provisional" in frame else True
    quads = []
    for q in QUADRANTS:
        sel = frame["quadrant"] == q
        if sel.any():
            # the action of the quadrant's settled partners (provisional ones get onboarding)
            pool = frame.loc[sel & settled, "intervention"]
            pool = pool if len(pool) else frame.loc[sel, "intervention"]
            quads.append(
                {
                    "key": q,
                    "label": frame.loc[sel, "quadrant_label"].iloc[0],
                    "n": int(sel.sum()),
                    "action": pool.mode().iloc[0],
                }
            )
    model = ", ".join(sorted({str(v) for v in frame.get("model_uri", pd.Series(["?"]))}))
    index_html = env.get_template("index.html").render(
        css=css,
        js=js,
        n=len(frame),
        as_of=as_of,
        model=model,
        config_hash=", ".join(sorted({str(v) for v in frame.get("config_hash", pd.Series(["?"]))})),
        tiers=tiers,
        total_revenue=_money(float(frame["pred_revenue"].sum())),
        provisional=int(frame.get("provisional", pd.Series([False])).astype(bool).sum()),
        flags=int(frame.get("guardrail_flag", pd.Series([False])).astype(bool).sum()),
        histogram=histogram_svg(frame["score"].to_numpy(float)),
        scatter=scatter_svg(frame),
        quadrants=quads,
        rows=rows,
    )
    index = write_text_atomic(index_html, out_dir / "index.html")
    return ReportResult(
        out_dir=out_dir,
        index=index,
        reports=len(frame),
        seconds=time.perf_counter() - started,
        bytes_per_report=total_bytes / max(len(frame), 1),
    )
