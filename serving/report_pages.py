"""The fast path of ``partnerscore report``: partner pages from plain columns, in parallel.

The scores frame is turned into plain Python lists once (no per-row pandas access); every
per-group statistic (peer medians, typical driver values) is computed once per group and
formatted once per group; the score history is read once for the selected partners (only the
columns the pages show) and indexed by partner. :class:`PageBatch` holds all of it as picklable
plain values, and :func:`render_pages` writes the pages with a process pool over chunks of
partners: each worker compiles the partner template once and renders its chunks. A page depends
only on the batch, never on the worker or the chunking, so the output is byte-identical for any
number of workers. The straightforward per-partner twin of these numbers is
``tests/serving/report_reference.py``.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup

from partnerscore.features.core import STALE_TMP_SECONDS, PartnerscoreError
from partnerscore.features.registry import LAYERS, REGISTRY, get_spec
from partnerscore.models.config import PolicyConfig
from partnerscore.serving.history import HISTORY_METRICS, ScoreHistory
from partnerscore.serving.report import (
    KEY_METRICS,
    QUADRANT_COLORS,
    SEGMENT_COLUMNS,
    TEXT_COLUMNS,
    _environment,
    _finite,
    _flag,
    _label,
    _money,
    _num,
    _pct,
    _text,
    _waterfall,
    line_svg,
    metric_texts,
    policy_explanation,
)

PAGE_CHUNK = 250
"""Pages per task of the worker pool (small enough to balance two workers on small batches)."""
HISTORY_READ = (
    "age_days",
    "score",
    "score_smoothed",
    "pred_revenue",
    "pred_engagement",
    "score_tier",
    *HISTORY_METRICS,
)
"""History columns the pages show (trajectory, changes since the last batch)."""
NUMERIC_PAGE_COLUMNS = (
    "score",
    "score_smoothed",
    "score_previous",
    "pred_revenue",
    "pred_engagement",
    "peer_percentile",
    "age_days",
    "revenue_base",
    "engagement_base",
    "score_base",
    "score_adjustment",
    "score_adjustment_factor",
    "score_model",
    *(f"{kind}_{layer}" for kind in ("revenue", "engagement", "score", "score_model")
      for layer in LAYERS),
)  # fmt: skip
"""Scores-file cells the pages format (missing columns read as missing values)."""


def available_workers() -> int:
    """Cores this process may run on (the default number of page workers)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


@dataclass
class PageHistory:
    """The selected partners' history rows, sorted by (partner, as_of), as plain columns."""

    spans: list[tuple[int, int]]
    """Per page: [start, end) of its partner's rows (up to the page's as_of)."""
    as_of_ns: list[int]
    as_of_text: list[str]
    values: dict[str, list[float]]
    """Numeric history columns (NaN when missing)."""
    texts: dict[str, list[str]]
    """Display texts: ``age``, ``score``, ``revenue``, ``engagement``, and each measure."""
    tiers: list[str]
    metrics: list[str]
    """Trajectory table measures (KEY_METRICS recorded in the store)."""
    """History columns a previous row can be compared on."""


@dataclass
class PageBatch:
    """Everything the selected partners' pages need, as plain picklable values.

    Lists are indexed by page number ``j`` (the j-th selected row of the scores frame).
    """

    out_dir: str
    css: str
    horizon: int
    policy: PolicyConfig
    thresholds: list[dict]
    cutoffs: dict[str, float]
    files: list[str]
    present: frozenset[str]
    text: dict[str, list[str]]
    values: dict[str, list]
    as_of_text: list[str]
    as_of_ns: list[int]
    flags: list[tuple[bool, bool, bool, str]]
    """(provisional, guardrail swing, input anomaly, the anomaly's reasons) per page."""
    heads: dict[str, tuple[list[str], np.ndarray, np.ndarray]]
    """Per model head: feature names, contributions (page x feature) and each row's order."""
    drivers: dict[str, list[list[tuple[str, str]]]]
    peers: list[tuple[str, list[str], list[str]]]
    """(label, value text per page, peer-group median text per page) per peer metric."""
    peer_label: list[str]
    peer_n: list[int]
    history: PageHistory
    change_features: list[tuple[str, str, list, list[str]]]
    """(column, label, this batch's value and its text per page) of the measures compared
    with the previous batch."""
    notes: list[list[dict]]

    def __len__(self) -> int:
        return len(self.files)


def _column(frame: pd.DataFrame, name: str, rows: np.ndarray) -> list:
    """A column's cells for the selected rows as plain Python values (None when absent)."""
    if name not in frame.columns:
        return [None] * len(rows)
    return frame[name].to_numpy(dtype=object)[rows].tolist()


def _texts(cells: list) -> list[str]:
    """:func:`serving.report._text` of each cell (strings pass through untouched)."""
    return [v if v.__class__ is str else _text(v) for v in cells]


def _group_medians(
    frame: pd.DataFrame, columns: list[str], groups: pd.Index, levels: list[np.ndarray]
) -> pd.DataFrame:
    """Median of each column over every group's members (rows: ``groups``), a pass per level.

    A group key's members are the rows holding that key at its level (``"all"``: everyone).
    """
    numbers = pd.DataFrame(
        {c: pd.to_numeric(frame[c], errors="coerce").astype("float64") for c in columns},
        index=frame.index,
    )
    tables = [numbers.groupby(keys).median() for keys in levels]
    tables.append(numbers.median().to_frame("all").T)
    return pd.concat(tables).reindex(groups)


def _read_history(
    config_url: str, ids: list[str], as_of: pd.Series, change_candidates: list[str]
) -> tuple[PageHistory, list[str]]:
    """The selected partners' history rows up to each page's as_of, with display texts."""
    store = ScoreHistory(config_url)
    empty = PageHistory([(0, 0)] * len(ids), [], [], {}, {}, [], [])
    if not store.exists():
        return empty, []
    try:
        data = store.read(ids, columns=list(HISTORY_READ))
        recorded_metrics = store.recorded(list(HISTORY_METRICS))
    finally:
        store.dispose()
    recorded = {c for c in HISTORY_READ if c not in HISTORY_METRICS} | set(recorded_metrics)
    if data.empty:
        return empty, []
    cutoff = data["partner_id"].map(dict(zip(ids, as_of, strict=True)))
    data = data[data["as_of"].to_numpy() <= pd.to_datetime(cutoff).to_numpy()]
    data = data.sort_values(["partner_id", "as_of"], kind="stable").reset_index(drop=True)
    position = {pid: j for j, pid in enumerate(ids)}
    spans = [(0, 0)] * len(ids)
    pids = data["partner_id"].to_numpy()
    if len(pids):
        starts = np.flatnonzero(np.r_[True, pids[1:] != pids[:-1]])
        ends = np.r_[starts[1:], len(pids)]
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            spans[position[pids[s]]] = (s, e)
    values = {c: data[c].astype("float64").tolist() for c in HISTORY_READ if c != "score_tier"}
    texts = {
        "age": [_num(v, 0) for v in values["age_days"]],
        "score": [_num(v) for v in values["score"]],
        "revenue": [_money(v) for v in values["pred_revenue"]],
        "engagement": [_pct(v) for v in values["pred_engagement"]],
    }
    compared = [c for c in change_candidates if c in recorded]
    for name in dict.fromkeys([*(m for m in KEY_METRICS if m in recorded), *compared]):
        texts[f"text:{name}"] = metric_texts(name, data[name]) if name in data else []
    history = PageHistory(
        spans=spans,
        as_of_ns=data["as_of"].astype("datetime64[ns]").astype("int64").tolist(),
        as_of_text=data["as_of"].dt.strftime("%Y-%m-%d").tolist(),
        values=values,
        texts=texts,
        tiers=_texts(data["score_tier"].tolist()),
        metrics=[m for m in KEY_METRICS if m in recorded],
    )
    return history, compared


def build_batch(
    frame: pd.DataFrame,
    keep: np.ndarray,
    files: list[str],
    config,
    *,
    out_dir: str | Path = "",
    css: str = "",
    note_map: dict[str, list[dict]] | None = None,
) -> PageBatch:
    """Turn the scores frame into a :class:`PageBatch` for the selected rows (``keep``).

    Whole-batch statistics (peer groups and medians) use every row; per-page values, history
    and texts only the selected ones.

    Args:
        frame: Scores (:func:`serving.report.read_scores`), every partner of the batch.
        keep: (n,) bool, the partners to write pages for.
        files: Report file name per row.
        config: Application configuration (policy, horizon, history store).
        out_dir: The report folder (pages go to its ``partners/``).
        css: The stylesheet inlined in each page.
        note_map: Account owners' notes per partner id.
    """
    from partnerscore.models.policy import maturity_band
    from partnerscore.serving.report import peer_groups, peer_level_keys, tier_thresholds

    note_map = note_map or {}
    if "maturity_band" in frame:
        band = frame["maturity_band"].map(_text).to_numpy(dtype=object)
    else:
        band = maturity_band(frame.get("age_days", pd.Series(np.nan, index=frame.index)),
                             config.policy)[0]  # fmt: skip
    group_key, group_name = peer_groups(frame, band)
    levels = peer_level_keys(frame, band)
    peer_metrics = [
        ("score", "Composite score"),
        ("pred_revenue", "Expected revenue"),
        ("pred_engagement", "Engagement likelihood"),
        *((m, _label(m)) for m in KEY_METRICS if m in frame.columns),
    ]
    thresholds = tier_thresholds(config.policy, frame)
    store = ScoreHistory(config.paths.history_database())
    history_url = store.url if store.exists() else None
    rows = np.flatnonzero(keep)
    codes, uniques = pd.factorize(pd.Series(group_key), sort=True)
    groups = pd.Index(uniques)
    sizes = pd.concat([pd.Series(keys).value_counts() for keys in levels])
    group_size = sizes.reindex(groups).fillna(len(frame)).astype(int).to_numpy()  # "all"
    text = {}
    for c in TEXT_COLUMNS:
        text[c] = _texts(_column(frame, c, rows))
    values = {c: _column(frame, c, rows) for c in NUMERIC_PAGE_COLUMNS}
    present = frozenset(frame.columns)
    as_of = frame["as_of"].iloc[rows]
    ids = text["partner_id"]
    heads = {}
    for head in ("revenue", "engagement"):
        cols = [c for c in frame.columns if c.startswith(f"shap_{head}_")]
        matrix = (
            np.nan_to_num(frame[cols].to_numpy(float)[rows]) if cols else np.zeros((len(rows), 0))
        )
        # each row's contributions by decreasing size, as sorted() orders them (stable)
        order = np.argsort(-np.abs(matrix), axis=1, kind="stable")
        heads[head] = ([c[len(f"shap_{head}_") :] for c in cols], matrix, order)
    # drivers, with the peer group's typical value of the driver's measure
    by_label = {spec.label: spec.name for spec in REGISTRY}
    driver_cols = {
        sign: sorted(
            (c for c in frame.columns if c.startswith(f"driver_{sign}_")
             and c.rsplit("_", 1)[1].isdigit()),
            key=lambda c: int(c.rsplit("_", 1)[1]),
        )
        for sign in ("pos", "neg")
    }  # fmt: skip
    sentences = {
        sign: [_texts(_column(frame, c, rows)) for c in cols] for sign, cols in driver_cols.items()
    }
    features = {}  # driver label -> feature with a peer median ("typical" value), else None
    for per_col in sentences.values():
        for cells in per_col:
            for sentence in cells:
                label = sentence.split(": ", 1)[0]
                if not sentence or label in features:
                    continue
                feature = by_label.get(label)
                spec = get_spec(feature) if feature is not None else None
                numeric = spec is not None and spec.kind == "numeric" and feature in frame.columns
                features[label] = feature if numeric else None
    wanted = sorted({f for f in features.values() if f is not None})
    medians = _group_medians(frame, wanted, groups, levels)
    typical = {f: metric_texts(f, medians[f].to_numpy()) for f in wanted}
    row_codes = codes[rows].tolist()
    drivers: dict[str, list[list[tuple[str, str]]]] = {}
    for sign, per_col in sentences.items():
        pages: list[list[tuple[str, str]]] = [[] for _ in rows]
        for cells in per_col:
            for j, sentence in enumerate(cells):
                if not sentence:
                    continue
                feature = features[sentence.split(": ", 1)[0]]
                group_text = typical[feature][row_codes[j]] if feature is not None else ""
                pages[j].append((sentence, group_text))
        drivers[sign] = pages
    peer_medians = _group_medians(frame, [key for key, _ in peer_metrics], groups, levels)
    peers = []
    for key, label in peer_metrics:
        group_texts = metric_texts(key, peer_medians[key].to_numpy())
        peers.append(
            (label, metric_texts(key, frame[key].iloc[rows]), [group_texts[c] for c in row_codes])
        )
    candidates = [
        c
        for c in frame.columns
        if c in HISTORY_READ and (spec := get_spec(c)) is not None and spec.kind == "numeric"
    ]
    if history_url is None:
        history = PageHistory([(0, 0)] * len(rows), [], [], {}, {}, [], [])
        compared: list[str] = []
    else:
        history, compared = _read_history(history_url, ids, as_of, candidates)
    change_features = [
        (c, get_spec(c).label, _column(frame, c, rows), metric_texts(c, frame[c].iloc[rows]))
        for c in compared
    ]
    flags = list(
        zip(
            [_flag(v) for v in _column(frame, "provisional", rows)],
            [_flag(v) for v in _column(frame, "guardrail_flag", rows)],
            [_flag(v) for v in _column(frame, "anomaly", rows)],
            _texts(_column(frame, "anomaly_reason", rows)),
            strict=True,
        )
    )
    return PageBatch(
        out_dir=str(out_dir),
        css=css,
        horizon=config.build.horizon_days,
        policy=config.policy,
        thresholds=thresholds,
        cutoffs=dict(config.policy.tier_cutoffs),
        files=[files[i] for i in rows.tolist()],
        present=present,
        text=text,
        values=values,
        as_of_text=as_of.dt.strftime("%Y-%m-%d").tolist(),
        as_of_ns=as_of.astype("datetime64[ns]").astype("int64").tolist(),
        flags=flags,
        heads=heads,
        drivers=drivers,
        peers=peers,
        peer_label=[str(v) for v in np.asarray(group_name)[rows].tolist()],
        peer_n=group_size[codes[rows]].tolist(),
        history=history,
        change_features=change_features,
        notes=[note_map.get(pid, []) for pid in ids],
    )


def _policy_text(b: PageBatch, j: int) -> dict:
    """:func:`serving.report.policy_explanation` of page j."""
    rec = {k: b.text[k][j] for k in ("maturity_band", *SEGMENT_COLUMNS)}
    for k in ("score_adjustment_factor", "score_adjustment", "score_model"):
        rec[k] = b.values[k][j]
    return policy_explanation(rec, b.policy)


def page_changes(b: PageBatch, j: int) -> dict | None:
    """What changed since the partner's previous batch (None without an earlier batch)."""
    h = b.history
    start, end = h.spans[j]
    now = b.as_of_ns[j]
    k = end - 1
    while k >= start and h.as_of_ns[k] >= now:
        k -= 1
    if k < start:
        return None
    hv, v = h.values, b.values
    measures = [
        ("Composite score", _num(hv["score"][k]), _num(v["score"][j]),
         _num(_finite(v["score"][j]) - hv["score"][k], sign=True)),
        ("Tier", h.tiers[k], b.text["score_tier"][j], ""),
        ("Expected revenue", _money(hv["pred_revenue"][k]), _money(v["pred_revenue"][j]),
         _money(_finite(v["pred_revenue"][j]) - hv["pred_revenue"][k], sign=True)),
        ("Engagement likelihood", _pct(hv["pred_engagement"][k]), _pct(v["pred_engagement"][j]),
         _num((_finite(v["pred_engagement"][j]) - hv["pred_engagement"][k]) * 100, sign=True)
         + " pts"),
    ]  # fmt: skip
    features = []
    for name, label, now_values, now_text in b.change_features:
        a, c = hv[name][k], _finite(now_values[j])
        if (math.isnan(a) and math.isnan(c)) or a == c:
            continue
        before, after = h.texts[f"text:{name}"][k], now_text[j]
        if before != after:
            features.append({"label": label, "before": before, "after": after})
    return {
        "since": h.as_of_text[k],
        "measures": measures,
        "features": features[:12],
        "more": max(len(features) - 12, 0),
    }


def page_trajectory(b: PageBatch, j: int) -> tuple[Markup | None, list[str], list[list[str]]]:
    """The score trajectory chart and table of page j (None, [], [] under two points)."""
    h = b.history
    start, end = h.spans[j]
    if end - start < 2:
        return None, [], []
    hv = h.values
    ages = hv["age_days"][start:end]
    if any(math.isnan(a) for a in ages):
        return None, [], []
    series = {"score": hv["score"][start:end]}
    smoothed = hv["score_smoothed"][start:end]
    if any(math.isfinite(x) for x in smoothed):
        series["smoothed score"] = smoothed
    series["engagement %"] = [x * 100 for x in hv["pred_engagement"][start:end]]
    head = ["as of", "day", "score", "expected revenue", "engagement", *map(_label, h.metrics)]
    t = h.texts
    metric_texts_ = [t[f"text:{m}"] for m in h.metrics]
    rows = [
        [h.as_of_text[k], t["age"][k], t["score"][k], t["revenue"][k], t["engagement"][k],
         *(m[k] for m in metric_texts_)]
        for k in range(start, end)
    ]  # fmt: skip
    return line_svg(ages, series, thresholds=b.cutoffs), head, rows


def page_context(b: PageBatch, j: int) -> dict:
    """The partner template's variables for page j."""
    v, text = b.values, b.text
    p = {k: text[k][j] for k in TEXT_COLUMNS}
    waterfalls = {}
    for head, (features, matrix, order) in b.heads.items():
        row = matrix[j]
        pred = _finite(v[f"pred_{head}"][j])
        base = _finite(v[f"{head}_base"][j])
        if math.isnan(base):
            base = pred - sum(row.tolist())
        o = order[j]
        waterfalls[head] = _waterfall(
            features, row[o].tolist(), o.tolist(), base, pred, money=head == "revenue"
        )
    layers = [
        {
            "name": "base (average partner)",
            "revenue": _money(v["revenue_base"][j]),
            "engagement": _num(_finite(v["engagement_base"][j]) * 100),
            "score": _num(v["score_base"][j]),
        },
        *(
            {
                "name": layer,
                "revenue": _money(v[f"revenue_{layer}"][j]),
                "engagement": _num(_finite(v[f"engagement_{layer}"][j]) * 100, sign=True),
                "score": _num(v[f"score_{layer}"][j], sign=True),
                "model": _num(v[f"score_model_{layer}"][j], sign=True),
            }
            for layer in LAYERS
        ),
        {
            "name": "segment adjustment",
            "revenue": "",
            "engagement": "",
            "score": _num(v["score_adjustment"][j], sign=True),
            "model": "",
        },
    ]
    traj_svg, traj_head, traj_rows = page_trajectory(b, j)
    provisional, guardrail, anomaly, anomaly_reason = b.flags[j]
    return {
        "css": b.css,
        "thresholds": b.thresholds,
        "policy": _policy_text(b, j),
        "p": p,
        "segment": [text[c][j] for c in SEGMENT_COLUMNS if text[c][j]],
        "as_of": b.as_of_text[j],
        "age": _num(v["age_days"][j], 0),
        "horizon": b.horizon,
        "flags": {
            "provisional": provisional,
            "guardrail": guardrail,
            "anomaly": anomaly,
            "anomaly_reason": anomaly_reason,
        },
        "fmt": {
            "score": _num(v["score"][j]),
            "smoothed": _num(v["score_smoothed"][j]) if "score_smoothed" in b.present else "",
            "previous": _num(v["score_previous"][j]),
            "revenue": _money(v["pred_revenue"][j]),
            "engagement": _pct(v["pred_engagement"][j]),
            "peer": _num(v["peer_percentile"][j], 0),
        },
        "quadrant_color": QUADRANT_COLORS.get(p["quadrant"], "#555555"),
        "drivers_pos": [{"text": s, "typical": t} for s, t in b.drivers["pos"][j]],
        "drivers_neg": [{"text": s, "typical": t} for s, t in b.drivers["neg"][j]],
        "changes": page_changes(b, j),
        "notes": b.notes[j],
        "waterfall_revenue": waterfalls["revenue"],
        "waterfall_engagement": waterfalls["engagement"],
        "layers": layers,
        "trajectory_svg": traj_svg,
        "trajectory_head": traj_head,
        "trajectory_rows": traj_rows,
        "peers": [
            {"label": label, "value": value[j], "median": median[j]}
            for label, value, median in b.peers
        ],
        "peer_label": b.peer_label[j],
        "peer_n": b.peer_n[j],
    }


# -- writing ---------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(batch: PageBatch) -> None:
    """Pool initializer: keep the batch and compile the partner template once per process."""
    _WORKER["batch"] = batch
    _WORKER["template"] = _environment().get_template("partner.html")


def _write_page(folder: str, name: str, data: bytes) -> None:
    """Write one page atomically (temporary file beside it, then rename), 0666 less umask."""
    path = os.path.join(folder, name)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise PartnerscoreError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def _render_chunk(bounds: tuple[int, int]) -> tuple[int, int]:
    """Render and write pages [start, end) of the worker's batch; (pages, bytes) written."""
    b: PageBatch = _WORKER["batch"]
    template = _WORKER["template"]
    folder = os.path.join(b.out_dir, "partners")
    written = 0
    for j in range(*bounds):
        data = template.render(page_context(b, j)).encode("utf-8")
        _write_page(folder, b.files[j], data)
        written += len(data)
    return bounds[1] - bounds[0], written


def remove_stale_temporaries(folder: Path) -> None:
    """Remove page temporaries left by a killed run (older than the grace period), once."""
    now = time.time()
    for entry in os.scandir(folder):
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            try:
                if now - entry.stat().st_mtime > STALE_TMP_SECONDS:
                    os.unlink(entry.path)
            except OSError:
                continue


def _chunks(n: int, workers: int) -> list[tuple[int, int]]:
    size = max(min(PAGE_CHUNK, math.ceil(n / max(workers, 1))), 1)
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def render_pages(batch: PageBatch, workers: int) -> Iterator[tuple[int, int]]:
    """Write every page of the batch; yields (pages, bytes) per finished chunk.

    Args:
        batch: The pages' data.
        workers: Processes to render with (1: in this process, no pool).
    """
    chunks = _chunks(len(batch), workers)
    if workers <= 1 or len(chunks) <= 1:
        _init_worker(batch)
        try:
            for bounds in chunks:
                yield _render_chunk(bounds)
        finally:
            _WORKER.clear()
        return
    methods = multiprocessing.get_all_start_methods()
    # fork shares the batch with the workers without pickling it; elsewhere it is pickled once
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with context.Pool(min(workers, len(chunks)), _init_worker, (batch,)) as pool:
        yield from pool.imap_unordered(_render_chunk, chunks)


# -- the portfolio page's data -----------------------------------------------------------------

PORTFOLIO_FORMAT = "partnerscore-portfolio/1"
PORTFOLIO_PAGE_SIZE = 100
PORTFOLIO_CATEGORIES = (
    "score_tier",
    "quadrant",
    "quadrant_label",
    "action",
    "tier",
    "region",
    "industry",
    "partner_type",
)
"""Text columns stored as codes into ``categories[<column>]`` (sorted distinct values)."""


def _rounded(values: np.ndarray, digits: int) -> list:
    """Numbers rounded as the pages print them (``digits`` decimals); None for missing."""
    out = []
    for x in values.tolist():
        if not math.isfinite(x):
            out.append(None)
        elif digits == 0:
            out.append(round(x))
        else:
            out.append(round(x, digits))
    return out


def portfolio_data(frame: pd.DataFrame, rows: np.ndarray, files: list[str]) -> dict:
    """The portfolio table as compact columns (format ``partnerscore-portfolio/1``).

    Args:
        frame: The scores (every row).
        rows: Positions of the rows the table lists (the partners with pages).
        files: Report file name per row of ``frame``.

    Returns:
        ``{"format", "rows", "page_size", "columns": {name: [value per row]},
        "categories": {name: [distinct texts]}}``: see the README ("Portfolio page data").
    """

    def numbers(name: str) -> np.ndarray:
        if name not in frame.columns:
            return np.full(len(rows), np.nan)
        return pd.to_numeric(frame[name].iloc[rows], errors="coerce").to_numpy(float)

    def texts(name: str) -> list[str]:
        return _texts(_column(frame, name, rows))

    provisional = [_flag(v) for v in _column(frame, "provisional", rows)]
    guardrail = [_flag(v) for v in _column(frame, "guardrail_flag", rows)]
    columns: dict[str, list] = {
        "id": texts("partner_id"),
        "name": texts("partner_name"),
        "file_hash": [files[i][-15:-5] for i in rows.tolist()],
        "score": _rounded(numbers("score"), 1),
        "revenue": _rounded(numbers("pred_revenue"), 0),
        "engagement": _rounded(numbers("pred_engagement") * 100, 0),
        "peer": _rounded(numbers("peer_percentile"), 0),
        "flags": [int(a) | (int(b) << 1) for a, b in zip(provisional, guardrail, strict=True)],
    }
    categories = {}
    source = {"action": "intervention"}
    for name in PORTFOLIO_CATEGORIES:
        values = texts(source.get(name, name))
        codes, uniques = pd.factorize(pd.Series(values, dtype=object), sort=True)
        columns[name] = codes.tolist()
        categories[name] = [str(u) for u in uniques]
    return {
        "format": PORTFOLIO_FORMAT,
        "rows": len(rows),
        "page_size": PORTFOLIO_PAGE_SIZE,
        "columns": columns,
        "categories": categories,
    }


def script_json(data: dict) -> Markup:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&``."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                     ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):  # fmt: skip
        text = text.replace(ch, code)
    return Markup(text)
