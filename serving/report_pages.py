"""The fast path of ``partnerscore report``: partner pages from plain columns, in parallel.

:func:`plan_pages` turns the whole batch into a compact :class:`PagePlan` once (number columns
as arrays, texts as codes into their distinct values, every peer-group statistic computed and
formatted once per group). :func:`render_pages` hands chunks of pages to a process pool that
inherits the plan by fork; a worker turns its chunk into a :class:`PageBatch` of plain values
(:func:`chunk_batch`, which also reads the chunk's history rows), and :class:`PageRenderer`
writes each page as one string, the same bytes as ``templates/partner.html`` rendered by Jinja
from :func:`page_context`. A page depends only on the plan, never on the worker or the
chunking, so the output is byte-identical for any number of workers. The straightforward
per-partner twin of these numbers is ``tests/serving/report_reference.py``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup

from partnerscore.features.core import STALE_TMP_SECONDS, PartnerscoreError, write_target
from partnerscore.features.parallel import WorkerPool
from partnerscore.features.registry import LAYERS, REGISTRY, get_spec
from partnerscore.models.bundle import PHASE_COLUMN
from partnerscore.models.config import PolicyConfig
from partnerscore.models.phasing import phase_bounds
from partnerscore.models.policy import OUT_OF_SCOPE_TIER, load_playbook
from partnerscore.serving.history import HISTORY_METRICS, ScoreHistory
from partnerscore.serving.report import (
    KEY_METRICS,
    QUADRANT_COLORS,
    SEGMENT_COLUMNS,
    TEXT_COLUMNS,
    WATERFALL_TOP,
    _feature_label,
    _finite,
    _flag,
    _label,
    _money,
    _num,
    _pct,
    _text,
    _waterfall,
    absent_features,
    change_measure,
    line_svg,
    metric_texts,
    money_texts,
    num_texts,
    pct_texts,
    policy_explanation,
    score_limit_text,
    text_column,
    tier_basis_text,
    waterfall_rows,
)

PAGE_CHUNK = 250
"""Fewest pages per task of the worker pool (fewer only to give every worker a task)."""
PAGE_CHUNK_MAX = 1000
"""Most pages per task: per-page Python objects exist only for the tasks being rendered."""
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
    "revenue_horizon_days",
    "revenue_phase_days",
    "pred_revenue_lo",
    "pred_revenue_hi",
    "pred_revenue_median",
    "revenue_interval_coverage",
    *(f"{kind}_{layer}" for kind in ("revenue", "engagement", "score", "score_model")
      for layer in LAYERS),
)  # fmt: skip
"""Scores-file cells the pages format (missing columns read as missing values)."""


@dataclass
class TextCodes:
    """A text column as codes into its distinct display texts (compact at millions of rows)."""

    codes: np.ndarray
    """(n,) int32 index into ``texts``."""
    texts: list[str]

    def take(self, start: int, end: int) -> list[str]:
        """The texts of rows [start, end)."""
        texts = self.texts
        return [texts[c] for c in self.codes[start:end].tolist()]


def text_codes(cells, rows: np.ndarray | None = None) -> TextCodes:
    """:func:`serving.report._text` of every cell (of ``rows``), as codes into distinct texts.

    One ``_text`` per distinct cell; missing cells (None, NaN) read ``""``. Cells that are not
    text (numbers in an object column) are converted one by one, as equal numbers of different
    types print differently.

    Args:
        cells: A column (Series, array or list).
        rows: Positions to keep (None: every cell).
    """
    codes, uniques = pd.factorize(cells, use_na_sentinel=True)
    uniques = np.asarray(uniques, dtype=object).tolist()  # not one Arrow scalar at a time
    if any(u.__class__ is not str for u in uniques):
        values = np.asarray(cells, dtype=object)
        texts = _texts((values if rows is None else values[rows]).tolist())
        codes, uniques = pd.factorize(np.asarray(texts, dtype=object))
        return TextCodes(codes.astype(np.int32), list(uniques))
    if rows is not None:
        codes = codes[rows]
    codes = np.where(codes < 0, len(uniques), codes).astype(np.int32)
    return TextCodes(codes, [*uniques, ""])


def _text_codes(frame: pd.DataFrame, name: str, rows: np.ndarray) -> TextCodes:
    """A text column's selected cells as :class:`TextCodes` (``""`` when the column is absent)."""
    if name not in frame.columns:
        return TextCodes(np.zeros(len(rows), dtype=np.int32), [""])
    return text_codes(frame[name], rows)


def float_column(frame: pd.DataFrame, name: str, rows: np.ndarray) -> np.ndarray:
    """:func:`serving.report._finite` of a column's selected cells (NaN when absent or bad)."""
    if name not in frame.columns:
        return np.full(len(rows), np.nan)
    column = frame[name]
    if column.dtype.kind in "fiub":
        values = column.to_numpy(dtype=float, na_value=np.nan)[rows]
        return np.where(np.isfinite(values), values, np.nan)
    cells = column.to_numpy(dtype=object)[rows].tolist()
    return np.fromiter((_finite(v) for v in cells), dtype=float, count=len(cells))


def flag_column(frame: pd.DataFrame, name: str, rows: np.ndarray) -> np.ndarray:
    """:func:`serving.report._flag` of a column's selected cells (one call per distinct cell)."""
    if name not in frame.columns:
        return np.zeros(len(rows), dtype=bool)
    codes, uniques = pd.factorize(frame[name], use_na_sentinel=True)
    uniques = np.asarray(uniques, dtype=object).tolist()
    table = np.array([*(_flag(u) for u in uniques), False], dtype=bool)
    return table[codes[rows]]  # code -1 (missing): the last entry


@dataclass
class PageHistory:
    """The pages' history rows, sorted by (partner, as_of), as plain columns."""

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


@dataclass
class PagePlan:
    """Everything the selected partners' pages need, compact: arrays and coded texts.

    Built once from the whole batch (peer groups, medians and every per-group text); page
    ``j`` is the j-th selected row of the scores frame. :func:`chunk_batch` turns pages
    [start, end) into a :class:`PageBatch` of plain values (and reads their history), so no
    process ever holds per-page Python objects for every partner at once. Workers share the
    plan by fork (numpy buffers are not copied) or receive it pickled once.
    """

    out_dir: str
    css: str
    horizon: int
    """The config's horizon: pages whose rows lack ``revenue_horizon_days`` show it."""
    phase_days: int
    """The config's phase length, for rows without ``revenue_phase_days``."""
    policy: PolicyConfig
    thresholds: list[dict]
    cutoffs: dict[str, float]
    files: list[str]
    present: frozenset[str]
    absent: frozenset[str]
    """Feature columns of the tables the batch was scored without (:func:`absent_features`)."""
    text: dict[str, TextCodes]
    values: dict[str, np.ndarray]
    """NUMERIC_PAGE_COLUMNS, float per page (NaN when missing)."""
    phases: np.ndarray
    """(pages, k) expected revenue per phase of the horizon (k = 0 without phase columns)."""
    as_of_ns: np.ndarray
    as_of_text: TextCodes
    flags: np.ndarray
    """(pages, 3) bool: provisional, guardrail swing, input anomaly."""
    graduated: np.ndarray
    """(pages,) bool: out of onboarding scope (``out_of_scope``: the playbook's hand-over)."""
    anomaly_reason: TextCodes
    heads: dict[str, tuple[list[str], np.ndarray]]
    """Per model head: feature names and contributions (page x feature, missing as 0)."""
    driver_sentences: dict[str, list[TextCodes]]
    """Per sign (pos, neg): each driver column's sentences."""
    driver_feature: dict[str, str | None]
    """Driver label -> the feature with a peer median (None: no typical value)."""
    typical: dict[str, list[str]]
    """Feature -> its peer-group median text per group code."""
    group: np.ndarray
    """(pages,) peer group code."""
    group_label: list[str]
    group_size: list[int]
    peers: list[tuple[str, str, np.ndarray, list[str]]]
    """(column, label, value per page, median text per group code) per peer metric."""
    history_url: str | None
    history_metrics: list[str]
    """KEY_METRICS recorded in the history store (trajectory table columns)."""
    change_features: list[tuple[str, str, np.ndarray]]
    """(column, label, this batch's value per page) of the measures compared with the
    previous batch."""
    note_map: dict[str, list[dict]]
    provisional_title: str = ""
    """The playbook's ``provisional`` action's title (empty without one)."""

    def __len__(self) -> int:
        return len(self.files)


@dataclass
class PageBatch:
    """Pages [start, end) of a :class:`PagePlan` as plain values (index j: page start + j)."""

    out_dir: str
    css: str
    horizon_days: list[int]
    """Each page's horizon: its model's ``revenue_horizon_days``, else the config's."""
    policy: PolicyConfig
    thresholds: list[dict]
    cutoffs: dict[str, float]
    files: list[str]
    present: frozenset[str]
    text: dict[str, list[str]]
    values: dict[str, list]
    phase_rows: list[list[dict]]
    """Per page, :func:`page_phases`' rows (built a chunk at a time, :func:`phase_rows`)."""
    as_of_text: list[str]
    as_of_ns: list[int]
    flags: list[tuple[bool, bool, bool, str]]
    """(provisional, guardrail swing, input anomaly, the anomaly's reasons) per page."""
    graduated: list[bool]
    """Per page: out of onboarding scope (its first action is the playbook's hand-over)."""
    heads: dict[str, tuple[list[str], np.ndarray, np.ndarray]]
    """Per model head: feature names, contributions (page x feature) and each row's order."""
    tops: dict[str, tuple[list[list[str]], list[list[float]], int, list[float]]]
    """Per model head, the waterfall rows: top feature labels and contributions per page, the
    number of other features and their summed contribution per page."""
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
    provisional_title: str = ""

    def __len__(self) -> int:
        return len(self.files)


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


def _history_store(url: str) -> ScoreHistory:
    """The history store of this process (one per process: never shared across fork)."""
    key = ("history", url, os.getpid())
    store = _STORES.get(key)
    if store is None:
        _STORES.clear()
        store = _STORES[key] = ScoreHistory(url)
    return store


_STORES: dict = {}


def close_history() -> None:
    """Dispose of this process's history store connection (if any)."""
    for store in _STORES.values():
        store.dispose()
    _STORES.clear()


def _empty_history(n: int) -> PageHistory:
    return PageHistory([(0, 0)] * n, [], [], {}, {}, [], [])


def _read_history(
    plan: PagePlan, start: int, end: int, ids: list[str], as_of_ns: list[int]
) -> PageHistory:
    """Pages [start, end)'s history rows up to each page's as_of, with display texts."""
    if plan.history_url is None:
        return _empty_history(len(ids))
    data = _history_store(plan.history_url).read(ids, columns=list(HISTORY_READ))
    if data.empty:
        return _empty_history(len(ids))
    cutoff = data["partner_id"].map(dict(zip(ids, as_of_ns, strict=True))).to_numpy(np.int64)
    data = data[data["as_of"].astype("datetime64[ns]").astype("int64").to_numpy() <= cutoff]
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
    compared = [name for name, _, _ in plan.change_features]
    for name in dict.fromkeys([*plan.history_metrics, *compared]):
        known = name not in plan.absent
        texts[f"text:{name}"] = metric_texts(name, data[name], known) if name in data else []
    dates, days = pd.factorize(data["as_of"])
    day_text = days.strftime("%Y-%m-%d").tolist() if len(days) else []
    return PageHistory(
        spans=spans,
        as_of_ns=data["as_of"].astype("datetime64[ns]").astype("int64").tolist(),
        as_of_text=[day_text[c] for c in dates.tolist()],
        values=values,
        texts=texts,
        tiers=text_codes(data["score_tier"].to_numpy(dtype=object)).take(0, len(data)),
        metrics=list(plan.history_metrics),
    )


def plan_pages(
    frame: pd.DataFrame,
    keep: np.ndarray,
    files: list[str],
    config,
    *,
    out_dir: str | Path = "",
    css: str = "",
    note_map: dict[str, list[dict]] | None = None,
) -> PagePlan:
    """Turn the scores frame into a :class:`PagePlan` for the selected rows (``keep``).

    Whole-batch statistics (peer groups and medians) use every row; per-page values only the
    selected ones. The history store is only probed here; pages read their own rows.

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

    if "maturity_band" in frame:
        band = text_column(frame["maturity_band"]).to_numpy(dtype=object)
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
    rows = np.flatnonzero(keep)
    codes, uniques = pd.factorize(pd.Series(group_key), sort=True)
    groups = pd.Index(uniques)
    sizes = pd.concat([pd.Series(keys).value_counts() for keys in levels])
    group_size = sizes.reindex(groups).fillna(len(frame)).astype(int).tolist()  # "all"
    names_of_group = pd.Series(np.asarray(group_name, dtype=object)).groupby(codes).first()
    text = {c: _text_codes(frame, c, rows) for c in TEXT_COLUMNS}
    heads = {}
    for head in ("revenue", "engagement"):
        cols = [c for c in frame.columns if c.startswith(f"shap_{head}_")]
        matrix = np.empty((len(rows), len(cols)))
        for k, c in enumerate(cols):  # a column at a time: no copy of the whole block
            matrix[:, k] = np.nan_to_num(frame[c].to_numpy(dtype=float, na_value=np.nan)[rows])
        heads[head] = ([c[len(f"shap_{head}_") :] for c in cols], matrix)
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
        sign: [_text_codes(frame, c, rows) for c in cols] for sign, cols in driver_cols.items()
    }
    features: dict[str, str | None] = {}  # driver label -> feature with a peer median, else None
    for per_col in sentences.values():
        for column in per_col:
            for sentence in column.texts:  # each distinct sentence once
                label = sentence.split(": ", 1)[0]
                if not sentence or label in features:
                    continue
                feature = by_label.get(label)
                spec = get_spec(feature) if feature is not None else None
                numeric = spec is not None and spec.kind == "numeric" and feature in frame.columns
                features[label] = feature if numeric else None
    wanted = sorted({f for f in features.values() if f is not None})
    medians = _group_medians(frame, wanted, groups, levels)
    absent = absent_features(frame)
    typical = {f: metric_texts(f, medians[f].to_numpy(), f not in absent) for f in wanted}
    peer_medians = _group_medians(frame, [key for key, _ in peer_metrics], groups, levels)
    peers = [
        (
            key,
            label,
            float_column(frame, key, rows),
            metric_texts(key, peer_medians[key].to_numpy(), key not in absent),
        )
        for key, label in peer_metrics
    ]
    store = ScoreHistory(config.paths.history_database())
    history_url, recorded = None, []
    try:
        if store.exists():
            history_url = store.url
            recorded = store.recorded(list(HISTORY_METRICS))
    finally:
        store.dispose()
    compared = [
        c
        for c in frame.columns
        if c in HISTORY_READ
        and (spec := get_spec(c)) is not None
        and spec.kind == "numeric"
        and (c not in HISTORY_METRICS or c in recorded)
    ]
    as_of = frame["as_of"].iloc[rows]
    dates, days = pd.factorize(as_of)
    phase_cols = sorted(
        (
            c
            for c in frame.columns
            if c.startswith(PHASE_COLUMN) and c[len(PHASE_COLUMN) :].isdigit()
        ),
        key=lambda c: int(c[len(PHASE_COLUMN) :]),
    )
    phases = np.empty((len(rows), len(phase_cols)))
    for k, c in enumerate(phase_cols):
        phases[:, k] = float_column(frame, c, rows)
    return PagePlan(
        out_dir=str(out_dir),
        css=css,
        horizon=config.build.horizon_days,
        phase_days=config.build.phase_days,
        phases=phases,
        policy=config.policy,
        thresholds=tier_thresholds(config.policy, frame),
        cutoffs=dict(config.policy.tier_cutoffs),
        files=[files[i] for i in rows.tolist()],
        present=frozenset(frame.columns),
        absent=absent,
        text=text,
        values={c: float_column(frame, c, rows) for c in NUMERIC_PAGE_COLUMNS},
        as_of_ns=as_of.astype("datetime64[ns]").astype("int64").to_numpy(),
        as_of_text=TextCodes(dates.astype(np.int32), days.strftime("%Y-%m-%d").tolist()),
        flags=np.column_stack(
            [flag_column(frame, c, rows) for c in ("provisional", "guardrail_flag", "anomaly")]
        ),
        graduated=flag_column(frame, "out_of_scope", rows),
        anomaly_reason=_text_codes(frame, "anomaly_reason", rows),
        heads=heads,
        driver_sentences=sentences,
        driver_feature=features,
        typical=typical,
        group=codes[rows].astype(np.int32),
        group_label=[str(names_of_group[c]) for c in range(len(groups))],
        group_size=group_size,
        peers=peers,
        history_url=history_url,
        history_metrics=[m for m in KEY_METRICS if m in recorded],
        change_features=[(c, get_spec(c).label, float_column(frame, c, rows)) for c in compared],
        note_map=note_map or {},
        provisional_title=(load_playbook(config.policy)["provisional"] or {}).get("title", ""),
    )


def chunk_batch(plan: PagePlan, start: int, end: int) -> PageBatch:
    """Pages [start, end) of the plan as plain values, with their history rows."""
    text = {c: codes.take(start, end) for c, codes in plan.text.items()}
    ids = text["partner_id"]
    as_of_ns = plan.as_of_ns[start:end].tolist()
    heads = {}
    tops = {}
    for head, (features, matrix) in plan.heads.items():
        part = matrix[start:end]
        # each row's contributions by decreasing size, as sorted() orders them (stable)
        order = np.argsort(-np.abs(part), axis=1, kind="stable")
        heads[head] = (features, part, order)
        ordered = np.take_along_axis(part, order, axis=1)
        n_rest = max(len(features) - WATERFALL_TOP, 0)
        # sum() of the rest, left to right from 0.0, for every row at once
        zero = np.zeros((len(part), 1))
        rest = np.add.accumulate(np.hstack([zero, ordered[:, WATERFALL_TOP:]]), axis=1)[:, -1]
        labels = [_feature_label(f) for f in features]
        tops[head] = (
            [[labels[k] for k in row] for row in order[:, :WATERFALL_TOP].tolist()],
            ordered[:, :WATERFALL_TOP].tolist(),
            n_rest,
            rest.tolist(),
        )
    group = plan.group[start:end].tolist()
    drivers: dict[str, list[list[tuple[str, str]]]] = {}
    for sign, per_col in plan.driver_sentences.items():
        pages: list[list[tuple[str, str]]] = [[] for _ in range(end - start)]
        for column in per_col:
            for j, sentence in enumerate(column.take(start, end)):
                if not sentence:
                    continue
                feature = plan.driver_feature[sentence.split(": ", 1)[0]]
                group_text = plan.typical[feature][group[j]] if feature is not None else ""
                pages[j].append((sentence, group_text))
        drivers[sign] = pages
    flags = plan.flags[start:end].tolist()
    horizons = _layout_days(plan.values["revenue_horizon_days"][start:end], plan.horizon)
    return PageBatch(
        out_dir=plan.out_dir,
        css=plan.css,
        horizon_days=horizons.tolist(),
        phase_rows=phase_rows(
            plan.phases[start:end],
            horizons,
            _layout_days(plan.values["revenue_phase_days"][start:end], plan.phase_days),
            plan.as_of_ns[start:end],
        ),
        policy=plan.policy,
        thresholds=plan.thresholds,
        cutoffs=plan.cutoffs,
        files=plan.files[start:end],
        present=plan.present,
        text=text,
        values={c: v[start:end].tolist() for c, v in plan.values.items()},
        as_of_text=plan.as_of_text.take(start, end),
        as_of_ns=as_of_ns,
        flags=[
            (a, b, c, reason)
            for (a, b, c), reason in zip(flags, plan.anomaly_reason.take(start, end), strict=True)
        ],
        graduated=plan.graduated[start:end].tolist(),
        heads=heads,
        tops=tops,
        drivers=drivers,
        peers=[
            (
                label,
                metric_texts(key, values[start:end], key not in plan.absent),
                [medians[g] for g in group],
            )
            for key, label, values, medians in plan.peers
        ],
        peer_label=[plan.group_label[g] for g in group],
        peer_n=[plan.group_size[g] for g in group],
        history=_read_history(plan, start, end, ids, as_of_ns),
        change_features=[
            (
                c,
                label,
                values[start:end].tolist(),
                metric_texts(c, values[start:end], c not in plan.absent),
            )
            for c, label, values in plan.change_features
        ],
        notes=[plan.note_map.get(pid, []) for pid in ids],
        provisional_title=plan.provisional_title,
    )


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
    """Every selected page as one :class:`PageBatch` (:func:`plan_pages` + :func:`chunk_batch`).

    For tests and small batches; ``run_report`` renders from the plan chunk by chunk.
    """
    plan = plan_pages(frame, keep, files, config, out_dir=out_dir, css=css, note_map=note_map)
    try:
        return chunk_batch(plan, 0, len(plan))
    finally:
        close_history()


def page_tier_basis(b: PageBatch, j: int) -> str:
    """:func:`serving.report.tier_basis_text` of page j."""
    t = b.text
    smoothed = _num(b.values["score_smoothed"][j]) if "score_smoothed" in b.present else ""
    return tier_basis_text(
        t["score_tier"][j], t["score_tier_raw"][j], t["tier_held_reason"][j],
        t["override_tier"][j], smoothed,
    )  # fmt: skip


def _policy_text(b: PageBatch, j: int) -> dict:
    """:func:`serving.report.policy_explanation` of page j."""
    rec = {k: b.text[k][j] for k in ("maturity_band", *SEGMENT_COLUMNS)}
    for k in ("score_adjustment_factor", "score_adjustment", "score_model", "score"):
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
        change_measure("Composite score", "score", hv["score"][k], v["score"][j]),
        ("Tier", h.tiers[k], b.text["score_tier"][j], ""),
        change_measure("Expected revenue", "money", hv["pred_revenue"][k], v["pred_revenue"][j]),
        change_measure(
            "Engagement likelihood", "pct", hv["pred_engagement"][k], v["pred_engagement"][j]
        ),
    ]
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
    thresholds = None if page_graduated(b, j) else b.cutoffs
    return line_svg(ages, series, thresholds=thresholds), head, rows


def page_waterfall(b: PageBatch, j: int, head: str) -> Markup:
    """Page j's waterfall of one model head (``revenue`` or ``engagement``)."""
    features, matrix, order = b.heads[head]
    row = matrix[j]
    v = b.values
    pred = _finite(v[f"pred_{head}"][j])
    base = _finite(v[f"{head}_base"][j])
    if math.isnan(base):
        base = pred - sum(row.tolist())
    o = order[j]
    return _waterfall(features, row[o].tolist(), o.tolist(), base, pred, money=head == "revenue")


def _page_waterfall_rows(b: PageBatch, j: int, head: str) -> Markup:
    """:func:`page_waterfall` from the chunk's top rows (sorted and summed for all pages)."""
    labels, values, n_rest, rest = b.tops[head]
    v = b.values
    pred = _finite(v[f"pred_{head}"][j])
    base = _finite(v[f"{head}_base"][j])
    if math.isnan(base):
        base = pred - sum(b.heads[head][1][j].tolist())
    return waterfall_rows(
        labels[j], values[j], n_rest, rest[j], base, pred, money=head == "revenue"
    )


def page_horizon(b: PageBatch, j: int) -> int:
    """Page j's horizon in days: its model's (``revenue_horizon_days``), else the config's."""
    return b.horizon_days[j]


def page_revenue_range(b: PageBatch, j: int) -> str:
    """Page j's revenue interval as a line under the expected revenue ('' without one).

    ``80% range $0 – $48,210 · most likely $0``: the conformal interval at the model's
    coverage (``revenue_interval_coverage``) and the predictive median, so an account owner
    sees how uncertain a mean is (most new partners realise nothing in a horizon).
    """
    v = b.values
    lo, hi, cover = (
        v["pred_revenue_lo"][j],
        v["pred_revenue_hi"][j],
        v["revenue_interval_coverage"][j],
    )
    if not (lo == lo and hi == hi and cover == cover and 0 < cover < 1):
        return ""
    text = f"{_pct(cover)} range {_money(lo)} – {_money(hi)}"
    median = v["pred_revenue_median"][j]
    return text + (f" · most likely {_money(median)}" if median == median else "")


def _layout_days(values: np.ndarray, fallback: int) -> np.ndarray:
    """Whole days per page: the model's value where it makes sense (1 to 1e6), else fallback."""
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(values) & (values >= 1) & (values < 1e6)
    return np.where(ok, np.floor(np.where(ok, values, 0)), fallback).astype(np.int64)


def phase_rows(
    amounts: np.ndarray, h: np.ndarray, p: np.ndarray, as_of_ns: np.ndarray
) -> list[list[dict]]:
    """:func:`page_phases` of a chunk of pages, a column at a time.

    Args:
        amounts: (pages, k) expected revenue per phase.
        h: Each page's horizon in whole days (:func:`_layout_days`).
        p: Each page's phase length in whole days (likewise).
        as_of_ns: Each page's scoring date (ns since the epoch).
    """
    m, k = amounts.shape
    out: list[list[dict]] = [[] for _ in range(m)]
    if not k or not m:
        return out
    total = amounts.sum(axis=1)
    complete = ~np.isnan(amounts).any(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where((total > 0)[:, None], amounts / total[:, None], np.nan)
    day = np.asarray(as_of_ns, dtype="int64").astype("datetime64[ns]").astype("datetime64[D]")
    revenue = money_texts(amounts.ravel().tolist())
    shares = pct_texts(share.ravel().tolist())
    widths = np.where(np.isnan(share), 0, np.round(120 * np.nan_to_num(share))).astype(int)
    widths = widths.ravel().tolist()
    layouts = pd.DataFrame({"h": h, "p": p}).groupby(["h", "p"], sort=False).indices
    for (hh, pp), rows in layouts.items():
        bounds = phase_bounds(int(hh), int(pp))
        rows = rows[complete[rows]]
        if len(bounds) != k or not len(rows):
            continue
        lo = np.array([a for a, _ in bounds])
        hi = np.array([b for _, b in bounds])
        firsts = np.datetime_as_string(day[rows, None] + lo[None, :], unit="D")
        lasts = np.datetime_as_string(day[rows, None] + (hi - 1)[None, :], unit="D")
        spans = [f"{a + 1}–{b}" for a, b in bounds]
        for i, r in enumerate(rows.tolist()):
            at = r * k
            out[r] = [
                {
                    "days": spans[q],
                    "dates": f"{firsts[i, q]} – {lasts[i, q]}",
                    "revenue": revenue[at + q],
                    "share": shares[at + q],
                    "width": widths[at + q],
                }
                for q in range(k)
            ]
    return out


def page_phases(b: PageBatch, j: int) -> list[dict]:
    """When page j's expected revenue arrives: one row per phase of its horizon.

    ``days`` (1-based, inclusive) and ``dates`` (from the scoring date), the phase's expected
    revenue, its share of the horizon's and a bar width (px, 120 for the whole horizon).
    Empty without phase columns, with a missing amount, or when the columns do not cut the
    page's horizon into its phases. Built for the whole chunk by :func:`phase_rows`.
    """
    return b.phase_rows[j]


def action_scope(graduated: bool, tier: str, quadrant_label: str, provisional: bool = False) -> str:
    """Whom the first recommended action speaks for: the quadrant, or a graduated partner.

    A provisional partner gets the playbook's ``provisional`` action (when it has one), not
    its quadrant's: ``provisional`` is true then, and the card says "for a provisional
    partner" (it said "for the quadrant (Dormant)" above "Complete onboarding first").

    A partner past the trained onboarding ages (``out_of_scope``: ``graduated``) gets the
    playbook's hand-over, not its quadrant's action, so the card does not say "for the
    quadrant"; its tier may be an override's (a tier override keeps the hand-over), so the
    flag decides, as it decides the action (``models.policy.interventions``). ``tier`` alone
    tells only for a scores file without the flag.

    A missing quadrant (a missing prediction: ``models.policy.quadrant`` gives none) reads
    "–" and its action is the model's missing reading, not a quadrant's.
    """
    quadrant_label = quadrant_label or "–"
    if graduated or tier == OUT_OF_SCOPE_TIER:
        return f"for a graduated partner (quadrant {quadrant_label})"
    if provisional:
        return f"for a provisional partner (quadrant {quadrant_label})"
    if quadrant_label == "–":
        return "no quadrant: the model gave no prediction for this partner"
    return f"for the quadrant ({quadrant_label})"


def page_graduated(b: PageBatch, j: int) -> bool:
    """Whether page j's partner is past the trained onboarding ages (graduated).

    Its page shows no onboarding tier thresholds (table, trajectory lines): they do not apply
    to it. ``out_of_scope`` decides (a tier override keeps the hand-over); the ``graduated``
    tier alone tells for a scores file without the flag, as in :func:`action_scope`.
    """
    return bool(b.graduated[j]) or b.text["score_tier"][j] == OUT_OF_SCOPE_TIER


def provisional_action(b: PageBatch, j: int) -> bool:
    """Whether page j's partner is provisional and has the playbook's provisional action."""
    title = b.provisional_title
    return bool(title) and bool(b.flags[j][0]) and b.text["intervention"][j] == title


def page_context(b: PageBatch, j: int) -> dict:
    """The partner template's variables for page j."""
    v, text = b.values, b.text
    p = {k: text[k][j] for k in TEXT_COLUMNS}
    waterfalls = {head: page_waterfall(b, j, head) for head in b.heads}
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
        "tier_basis": page_tier_basis(b, j),
        "graduated": page_graduated(b, j),
        "p": p,
        "action_scope": action_scope(
            b.graduated[j], p["score_tier"], p["quadrant_label"], provisional_action(b, j)
        ),
        "segment": [text[c][j] for c in SEGMENT_COLUMNS if text[c][j]],
        "as_of": b.as_of_text[j],
        "age": _num(v["age_days"][j], 0),
        "horizon": page_horizon(b, j),
        "revenue_range": page_revenue_range(b, j),
        "phases": page_phases(b, j),
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


# -- the partner page without a template engine ---------------------------------------------------

_ESCAPE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"})


def _e(text: str) -> str:
    """:func:`markupsafe.escape` of a text, as plain text (same output)."""
    if "&" in text or "<" in text or ">" in text or '"' in text or "'" in text:
        return text.translate(_ESCAPE)
    return text


def _v(value) -> str:
    """A template value as Jinja prints it with autoescaping (markup passes through)."""
    if isinstance(value, Markup):
        return str(value)
    return _e(value if value.__class__ is str else str(value))


_PROVISIONAL = (
    '<span class="badge warn" id="provisional" title="younger than the minimum observation '
    'period: little evidence yet">provisional</span>'
)
_GUARDRAIL = (
    '<span class="badge warn" id="guardrail" title="the score moved more than the guardrail '
    'allows since the previous run">large score swing</span>'
)
_NO_DRIVERS = '<li class="muted">nothing notable</li>'
_GRADUATED_TIERS = (
    '<h2>Onboarding tiers</h2>\n  <p id="thresholds-graduated">Onboarding tiers do not apply: '
    "this partner is past the onboarding ages the model learned from, so it is handed over to "
    "standard account management instead of getting an onboarding tier. Its score below is "
    "shown for reference only.</p>"
)


class PageRenderer:
    """Writes ``templates/partner.html`` for the pages of one :class:`PageBatch` without Jinja.

    The same bytes as ``_environment().get_template("partner.html").render(page_context(b, j))``
    (the tests compare both on every page of a scored program): static text is pasted as is,
    every value is escaped as Jinja's autoescaping does, and what is the same on every page of
    the batch (stylesheet, tier thresholds table, trajectory table head) is built once.
    """

    def __init__(self, b: PageBatch) -> None:
        self.b = b
        self.css = _v(b.css)
        self.head_html = "".join(
            f'<th class="num">{_e(h)}</th>'
            for h in ["as of", "day", "score", "expected revenue", "engagement",
                      *map(_label, b.history.metrics)]
        )  # fmt: skip
        self._thresholds: dict[str, str] = {}
        self._policy: dict[tuple, tuple[str, str, str]] = {}
        # every number of the pages, formatted a column at a time
        v = b.values
        self.fmt = {
            "score": num_texts(v["score"]),
            "smoothed": num_texts(v["score_smoothed"]),
            "previous": num_texts(v["score_previous"]),
            "revenue": money_texts(v["pred_revenue"]),
            "engagement": pct_texts(v["pred_engagement"]),
            "peer": num_texts(v["peer_percentile"], 0),
            "age": num_texts(v["age_days"], 0),
            "factor": num_texts(v["score_adjustment_factor"], 2),
            "adjustment": num_texts(v["score_adjustment"], sign=True),
            "model_score": num_texts(v["score_model"]),
        }
        layers = [
            list(
                zip(
                    money_texts(v["revenue_base"]),
                    num_texts([x * 100 for x in v["engagement_base"]]),
                    num_texts(v["score_base"]),
                    strict=True,
                )
            )
        ]
        for layer in LAYERS:
            layers.append(
                list(
                    zip(
                        money_texts(v[f"revenue_{layer}"]),
                        num_texts([x * 100 for x in v[f"engagement_{layer}"]], sign=True),
                        num_texts(v[f"score_{layer}"], sign=True),
                        num_texts(v[f"score_model_{layer}"], sign=True),
                        strict=True,
                    )
                )
            )
        self.layers = layers
        self.layer_names = [_e(layer) for layer in LAYERS]

    def thresholds(self, tier: str) -> str:
        """The tier thresholds table body, with this partner's tier marked."""
        html = self._thresholds.get(tier)
        if html is None:
            current = ' class="current"', ' <span class="badge">this partner</span>'
            html = "".join(
                f"<tr{current[0] if t['name'] == tier else ''}><td>{_v(t['name'])}"
                f'{current[1] if t["name"] == tier else ""}</td><td class="num">'
                f"{_v(t['range'])}</td><td>{_v(t['action'])}</td><td>{_v(t['owner'])}</td>"
                f'<td class="num">{_v(t["review_days"])} days</td></tr>'
                for t in self.b.thresholds
            )
            self._thresholds[tier] = html
        return html

    def policy(self, j: int) -> tuple[str, str]:
        """Page j's band, band weights and segment factors, escaped (once per distinct key).

        The texts of :func:`serving.report.policy_explanation`.
        """
        b = self.b
        key = tuple(b.text[k][j] for k in ("maturity_band", *SEGMENT_COLUMNS))
        parts = self._policy.get(key)
        if parts is None:
            rec = dict(zip(("maturity_band", *SEGMENT_COLUMNS), key, strict=True))
            explained = policy_explanation(rec, b.policy)
            parts = self._policy[key] = (
                _e(explained["band"]),
                f" ({_e(explained['weights'])})" if explained["weights"] else "",
                _e(explained["segments"]),
            )
        return parts

    def __call__(self, j: int) -> str:
        """Page j's HTML."""
        b = self.b
        t = b.text
        name, pid = _e(t["partner_name"][j]), _e(t["partner_id"][j])
        tier = t["score_tier"][j]
        quadrant_label = _e(t["quadrant_label"][j]) or "–"  # no prediction: no quadrant
        provisional, guardrail, anomaly, anomaly_reason = b.flags[j]
        fmt = self.fmt
        score = fmt["score"][j]
        out = [
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>&#x2068;',
            name, "&#x2069; (", pid, ") · partnerscore</title>\n<style>", self.css,
            "</style>\n</head>\n<body>\n<header>\n  <h1><bdi>", name, '</bdi> <span class="badge">',
            pid,
            "</span>\n    ", _PROVISIONAL if provisional else "", "\n    ",
            _GUARDRAIL if guardrail else "", "\n    ",
        ]  # fmt: skip
        if anomaly:
            out += ['<span class="badge warn" id="anomaly" title="unusual input rows for this '
                    "partner (see monitor): ", _e(anomaly_reason),
                    '">unusual input</span>']  # fmt: skip
        out.append('</h1>\n  <div class="meta" id="segment">')
        for c in SEGMENT_COLUMNS:
            if t[c][j]:
                out += [_e(t[c][j]), " · "]
        smoothed = fmt["smoothed"][j] if "score_smoothed" in b.present else ""
        previous = fmt["previous"][j]
        out += [
            "scored as of ", _e(b.as_of_text[j]), " · ", fmt["age"][j],
            ' days since signing · <a href="../index.html">portfolio</a></div>',
            '\n  <div class="held" id="unseen">Categories the model never saw, scored as unknown: '
            + _e(t["unseen_categories"][j]) + "</div>" if t["unseen_categories"][j] else "",
            '\n</header>\n'
            '<main>\n<section>\n  <h2>Scores</h2>\n  <div class="cards">\n    <div class="card">'
            '<div class="k">Composite score</div><div class="v" id="score">', score,
            '</div>\n      <div class="muted">tier <strong id="tier">', _e(tier) or "–",
            "</strong>",
            f" · smoothed {smoothed}" if smoothed else "",
            f" · previous {previous}" if previous != "–" else "",
            "</div>\n      ",
        ]  # fmt: skip
        if t["tier_held_reason"][j]:
            out += ['<div class="held" id="tier-held">', _e(t["tier_held_reason"][j]), "</div>"]
        elif basis := page_tier_basis(b, j):
            out += ['<div class="held" id="tier-basis">', _e(basis), "</div>"]
        horizon = str(page_horizon(b, j))
        out += [
            '</div>\n    <div class="card"><div class="k">Expected revenue (', horizon,
            ' days)</div><div class="v">', fmt["revenue"][j], "</div>",
        ]  # fmt: skip
        revenue_range = page_revenue_range(b, j)
        if revenue_range:
            out += ['\n      <div class="muted" id="revenue-range">', _e(revenue_range), "</div>"]
        out += [
            '</div>\n    <div class="card"><div class="k">Engagement likelihood</div>'
            '<div class="v">', fmt["engagement"][j],
            '</div></div>\n    <div class="card"><div class="k">Quadrant</div>'
            '<div class="v quadrant"><span class="swatch" style="background:',
            _e(QUADRANT_COLORS.get(t["quadrant"][j], "#555555")), '"></span>', quadrant_label,
            '</div></div>\n    <div class="card"><div class="k">Peer percentile</div>'
            '<div class="v">', fmt["peer"][j],
            '</div>\n      <div class="muted">within ', _e(b.peer_label[j]),
            "</div></div>\n  </div>\n</section>\n",
        ]  # fmt: skip
        phases = page_phases(b, j)
        if phases:
            out.append(
                '<section id="phasing">\n  <h2>When the revenue is expected</h2>\n'
                '  <table id="phases">\n    <thead><tr><th>days</th><th>dates</th>'
                '<th class="num">expected revenue</th><th class="num">share</th><th></th></tr>'
                "</thead>\n    <tbody>"
            )
            for r in phases:
                out += ["<tr><td>", _e(r["days"]), "</td><td>", _e(r["dates"]),
                        '</td><td class="num">', _e(r["revenue"]), '</td><td class="num">',
                        _e(r["share"]), '</td><td><span class="bar" style="width:',
                        str(r["width"]), 'px"></span></td></tr>']  # fmt: skip
            out += ['</tbody>\n  </table>\n  <p class="muted">The expected revenue of the ',
                    horizon, " days split by when partners at the same onboarding age earned "
                    "theirs in training (the model's revenue phasing).</p>\n"
                    "</section>"]  # fmt: skip
        out += [
            '\n<section>\n  <h2>Recommended actions</h2>\n'
            '  <div class="two">\n    <div class="action" id="quadrant-action">'
            '<div class="muted">', _e(action_scope(b.graduated[j], tier, t["quadrant_label"][j],
                            provisional_action(b, j))),
            "</div><strong>",
            _e(t["intervention"][j]), "</strong><br>", _e(t["intervention_detail"][j]),
            "\n      ",
        ]  # fmt: skip
        if t["intervention_owner"][j]:
            out += ['<div class="owner">owner: ', _e(t["intervention_owner"][j]),
                    " · review by ", _e(t["intervention_review_date"][j]), "</div>"]  # fmt: skip
        out.append("</div>\n    ")
        if t["tier_action"][j] and t["tier_action"][j] != t["intervention"][j]:
            out += ['<div class="action" id="tier-action"><div class="muted">for tier ', _e(tier),
                    "</div><strong>", _e(t["tier_action"][j]), "</strong><br>",
                    _e(t["tier_action_detail"][j]), '\n      <div class="owner">owner: ',
                    _e(t["tier_action_owner"][j]), " · review by ", _e(t["tier_review_date"][j]),
                    "</div></div>"]  # fmt: skip
        out.append("\n  </div>\n</section>\n")
        if t["override_reason"][j]:
            o_tier, o_action = t["override_tier"][j], t["override_action"][j]
            out.append(
                '<section id="override">\n  <h2>Manual override</h2>\n  <div class="action">'
            )
            if o_tier:
                out += ["Tier set to <strong>", _e(o_tier), "</strong>"]
            if o_tier and o_action:
                out.append(" · ")
            if o_action:
                out += ["action: <strong>", _e(o_action), "</strong>"]
            out += ["<br>reason: ", _e(t["override_reason"][j]), " · expires ",
                    _e(t["override_expires"][j]), "</div>\n</section>"]  # fmt: skip
        out.append("\n")
        if t["next_tier"][j]:
            nxt = _e(t["next_tier"][j])
            out += ["<section>\n  <h2>What would move it to tier ", nxt, "</h2>\n  "]
            if t["next_tier_changes"][j]:
                out += ['<p id="next-tier">Smallest changes to actionable measures (within the '
                        "ranges seen in training) that lift the score into tier ", nxt,
                        ": <strong>", _e(t["next_tier_changes"][j]),
                        "</strong>.</p>\n  "]  # fmt: skip
            else:
                out += ['<p class="muted" id="next-tier">No change to at most three actionable '
                        "measures reaches tier ", nxt,
                        " within the ranges seen in training.</p>"]  # fmt: skip
            out.append("\n</section>")
        out.append("\n<section>\n  <h2>What changed since the last batch</h2>\n  ")
        changes = page_changes(b, j)
        if changes:
            out += ['<table id="changes">\n    <thead><tr><th>since ', _e(changes["since"]),
                    '</th><th class="num">before</th><th class="num">now</th>'
                    '<th class="num">change</th></tr></thead>\n    <tbody>']  # fmt: skip
            for m in changes["measures"]:
                out += ["<tr><td>", _e(m[0]), '</td><td class="num">', _e(m[1]),
                        '</td><td class="num">', _e(m[2]), '</td><td class="num">', _e(m[3]),
                        "</td></tr>"]  # fmt: skip
            out.append("\n    ")
            for f in changes["features"]:
                out += ['<tr class="feature"><td>', _e(f["label"]), '</td><td class="num">',
                        _e(f["before"]), '</td><td class="num">', _e(f["after"]),
                        "</td><td></td></tr>"]  # fmt: skip
            out.append("</tbody>\n  </table>")
            if changes["more"]:
                out += ['<p class="muted">and ', str(changes["more"]),
                        " more measures changed</p>"]  # fmt: skip
            out.append("\n  ")
        else:
            out.append('<p class="muted" id="changes-none">First scored batch: nothing to compare '
                       "with yet.</p>")  # fmt: skip
        out.append("\n</section>\n<section>\n  <h2>Account owner notes</h2>\n  ")
        notes = b.notes[j]
        if notes:
            out.append('<ul id="notes">')
            for n in notes:
                out.append("<li>")
                if n["when"]:
                    out += ['<span class="muted">', _v(n["when"])]
                    if n["author"]:
                        out += [" · ", _v(n["author"])]
                    out.append(":</span> ")
                out += [_v(n["text"]), "</li>"]
            out.append("</ul>\n  ")
        else:
            out.append('<p class="muted" id="notes-none">No feedback notes for this partner.</p>')
        band, weights, segments = self.policy(j)
        candidate = t["score_tier_candidate"][j]
        if page_graduated(b, j):
            out.append(f"\n</section>\n<section>\n  {_GRADUATED_TIERS}\n  ")
        else:
            out += [
                '\n</section>\n<section>\n  <h2>Tier thresholds</h2>\n  <table id="thresholds">\n'
                '    <thead><tr><th>tier</th><th class="num">score</th><th>action</th>'
                '<th>owner</th><th class="num">review after</th></tr></thead>\n    <tbody>',
                self.thresholds(tier), "</tbody>\n  </table>\n  ",
            ]  # fmt: skip
        out += [
            '<p class="muted" id="policy">Score ', score,
            " = the model's ", fmt["model_score"][j], " re-weighted for onboarding band "
            '<strong id="maturity-band">', band, "</strong> days", weights,
            ", segment adjustment ", segments,
            score_limit_text(b.values["score"][j], b.values["score_adjustment"][j],
                             b.values["score_adjustment_factor"][j]),
            ': <span id="score-adjustment">',
            fmt["adjustment"][j], "</span> points.",
            f" The smoothed score points to tier {_e(candidate)}."
            if candidate and candidate != tier else "",
            '</p>\n</section>\n<section class="two">\n  <div>\n    <h2>What lifts the score</h2>\n'
            '    <ul class="drivers pos">',
        ]  # fmt: skip
        for sign in ("pos", "neg"):
            drivers = b.drivers[sign][j]
            for sentence, typical in drivers:
                out += ["<li>", _e(sentence)]
                if typical:
                    out += [' <span class="typical">(typical for peers: ', _e(typical), ")</span>"]
                out.append("</li>")
            if not drivers:
                out.append(_NO_DRIVERS)
            if sign == "pos":
                out.append('</ul>\n  </div>\n  <div>\n    <h2>What holds it back</h2>\n'
                           '    <ul class="drivers neg">')  # fmt: skip
        out += [
            '</ul>\n  </div>\n</section>\n<section>\n  <h2>What drives the predictions</h2>\n'
            '  <div class="two">\n    <div><h3>Expected revenue</h3>',
            _page_waterfall_rows(b, j, "revenue"),
            "</div>\n    <div><h3>Engagement likelihood</h3>",
            _page_waterfall_rows(b, j, "engagement"),
            '</div>\n  </div>\n  <table id="layers">\n    <thead><tr><th>layer</th>'
            '<th class="num">revenue</th><th class="num">engagement (pts)</th>'
            '<th class="num">score (pts, weighted)</th><th class="num">model (pts)</th></tr>'
            "</thead>\n    <tbody>\n    "
            '<tr><td>base (average partner)</td><td class="num">',
        ]  # fmt: skip
        revenue, engagement, points = self.layers[0][j]
        out += [revenue, '</td><td class="num">', engagement, '</td><td class="num">', points,
                '</td><td class="num"></td></tr>\n    ']  # fmt: skip
        for layer, texts in zip(self.layer_names, self.layers[1:], strict=True):
            revenue, engagement, points, model = texts[j]
            out += ["<tr><td>", layer, '</td><td class="num">', revenue, '</td><td class="num">',
                    engagement, '</td><td class="num">', points, '</td><td class="num">', model,
                    "</td></tr>\n    "]  # fmt: skip
        out += [
            '<tr><td>segment adjustment</td><td class="num"></td><td class="num"></td>'
            '<td class="num">', fmt["adjustment"][j],
            '</td><td class="num"></td></tr>\n    </tbody>\n  </table>\n</section>\n<section>\n'
            "  <h2>Trajectory over onboarding</h2>\n  ",
        ]  # fmt: skip
        svg, _, rows = page_trajectory(b, j)
        if svg:
            out += [str(svg), '\n  <table id="trajectory">\n    <thead><tr>', self.head_html,
                    "</tr></thead>\n    <tbody>"]  # fmt: skip
            for row in rows:
                out.append("<tr>")
                for cell in row:
                    out += ['<td class="num">', _e(cell), "</td>"]
                out.append("</tr>")
            out.append("</tbody>\n  </table>\n  ")
        else:
            out.append('<p class="muted" id="no-history">No history yet: score this partner at '
                       "more dates to see a trajectory.</p>")  # fmt: skip
        out += [
            "\n</section>\n<section>\n  <h2>Peer comparison <span class=\"muted\">(",
            _e(b.peer_label[j]), ", ", str(b.peer_n[j]), ' partners)</span></h2>\n'
            '  <table id="peers">\n    <thead><tr><th>metric</th><th class="num">this partner</th>'
            '<th class="num">peer median</th></tr></thead>\n    <tbody>',
        ]  # fmt: skip
        for label, values, medians in b.peers:
            out += ["<tr><td>", _e(label), '</td><td class="num">', _e(values[j]),
                    '</td><td class="num">', _e(medians[j]), "</td></tr>"]  # fmt: skip
        out += [
            "</tbody>\n  </table>\n</section>\n</main>\n<footer>model version ",
            _e(t["model_version"][j] or "–"), " · ", _e(t["model_uri"][j]), " · model config ",
            _e(t["model_config_hash"][j]), " · scoring config ", _e(t["config_hash"][j]),
            "</footer>\n</body>\n</html>",
        ]  # fmt: skip
        return "".join(out)


# -- writing ---------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(plan: PagePlan) -> None:
    """Pool initializer: keep the plan (inherited by fork, else pickled once)."""
    _WORKER["plan"] = plan


def _write_page(folder: str, name: str, data: bytes) -> None:
    """Write one page atomically (temporary file beside it, then rename), 0666 less umask.

    A page that is a symbolic link is written at the file it names (:func:`write_target`).
    """
    path = os.path.join(folder, name)
    linked = os.path.islink(path)
    if linked:  # renamed over, the link became a plain file
        path = str(write_target(path))
        folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        if linked:  # a dangling link's target is created, with its folder
            os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise PartnerscoreError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def _render_chunk(bounds: tuple[int, int]) -> tuple[int, int, int]:
    """Render and write pages [start, end) of the worker's plan.

    Returns:
        (pages, bytes written, pages with a trajectory).
    """
    plan: PagePlan = _WORKER["plan"]
    b = chunk_batch(plan, *bounds)
    render = PageRenderer(b)
    folder = os.path.join(plan.out_dir, "partners")
    written = 0
    for j in range(len(b)):
        data = render(j).encode("utf-8")
        _write_page(folder, b.files[j], data)
        written += len(data)
    return len(b), written, sum(e - s >= 2 for s, e in b.history.spans)


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
    """Page ranges: ~8 per worker, 250-1,000 pages each (fewer pages: one per worker)."""
    size = min(max(math.ceil(n / max(workers * 8, 1)), PAGE_CHUNK), PAGE_CHUNK_MAX)
    size = max(min(size, math.ceil(n / max(workers, 1))), 1)
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def render_pages(
    plan: PagePlan, workers: int, meanwhile: Callable[[], None] | None = None
) -> Iterator[tuple[int, int, int]]:
    """Write every page of the plan; yields (pages, bytes, with a trajectory) per chunk.

    Args:
        plan: The pages' data.
        workers: Processes to render with (1: in this process, no pool).
        meanwhile: Called once in this process while the workers render (with one worker:
            before rendering).
    """
    chunks = _chunks(len(plan), workers)
    if workers <= 1 or len(chunks) <= 1:
        if meanwhile is not None:
            meanwhile()
        _init_worker(plan)
        try:
            for bounds in chunks:
                yield _render_chunk(bounds)
        finally:
            _WORKER.clear()
            close_history()
        return
    # fork shares the plan with the workers without pickling it; elsewhere it is pickled once
    pool = WorkerPool(min(workers, len(chunks)), _init_worker, (plan,))
    try:
        pending = [pool.submit(_render_chunk, bounds) for bounds in chunks]
        if meanwhile is not None:
            meanwhile()
        for future in as_completed(pending):
            yield pool.result(future)
    except BaseException:  # also the consumer's error or a closed generator
        pool.stop()
        raise
    pool.close()


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
    finite = np.isfinite(values)
    if digits == 0 and finite.all() and (np.abs(values) < 2.0**62).all():
        # round() of a float is the nearest integer, ties to even: np.rint, as whole numbers
        return np.rint(values).astype(np.int64).tolist()
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
        return _text_codes(frame, name, rows).take(0, len(rows))

    provisional = flag_column(frame, "provisional", rows).astype(int)
    guardrail = flag_column(frame, "guardrail_flag", rows).astype(int)
    columns: dict[str, list] = {
        "id": texts("partner_id"),
        "name": texts("partner_name"),
        "file_hash": [files[i][-15:-5] for i in rows.tolist()],
        "score": _rounded(numbers("score"), 1),
        "revenue": _rounded(numbers("pred_revenue"), 0),
        "engagement": _rounded(numbers("pred_engagement") * 100, 0),
        "peer": _rounded(numbers("peer_percentile"), 0),
        "flags": (provisional | (guardrail << 1)).tolist(),
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
