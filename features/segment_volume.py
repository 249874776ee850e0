"""Rows per segment against what the segment's partners, at their onboarding ages, produce.

The whole-table volume check (:func:`partnerscore.features.anomaly.volume_checks`) misses a
drop confined to one segment (leads of region NA drying up move the leads table by x0.75),
and a plain per-segment rows-per-day check warns on a steady program: a segment's volume
follows how many partners it has at each onboarding age, and its cohorts grow and age.

So each segment's rows are set against its **exposure**: partner-days at each onboarding-age
bucket (:data:`AGE_EDGES`). For a table and a segment (``region=NA``, ``tier=gold``, ...):

- the *baseline* is the ``volume_baseline_days`` before the window, the *window* the
  ``window_days`` before as_of (the drift batch's); both from the batch's own rows;
- the check's value is the segment's rows per partner-day in the window against the
  baseline's at the same onboarding ages: the Mantel-Haenszel rate ratio over the age
  buckets both periods saw (:func:`rate_test`), either way (a drop x0.5 reads 2);
- the test is the conditional (stratified) score test of equal rates in both periods: given
  a bucket's rows ``n_a``, the window holds ``Binomial(n_a, p_a)`` with
  ``p_a = x_W[a] / (x_W[a] + x_B[a])``, so ``U = sum_a (c_W[a] - p_a n_a)``. Its variance is
  taken over partners (cluster-robust, ``sum_i u_i^2`` of each partner's share of ``U``,
  times ``G / (G - 1)``): partners differ far more than Poisson counts do;
- p-values (two-sided, normal) are Benjamini-Hochberg adjusted over every segment of every
  table of the run; a check warns (alarms) when the ratio, either way, reaches
  ``volume_warn_ratio`` (``volume_alarm_ratio``) **and** the adjusted p-value is below
  ``alpha``, as the drift tests do; segments with fewer than ``min_rows`` partners with rows
  in the compared buckets are skipped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from partnerscore.features.checks import Check
from partnerscore.features.config import MonitorConfig
from partnerscore.features.drift import benjamini_hochberg
from partnerscore.features.validate import late_tail_days, late_tail_k

AGE_EDGES = (0, 30, 60, 90, 120, 180, 270, 365, 545, 730, 1095)
"""Lower edges (days since signing) of the onboarding-age buckets; the last is open."""
VOLUME_TABLES = {
    "deals": "created_at",
    "activities": "occurred_at",
    "trainings": "enrolled_at",
    "portal_events": "occurred_at",
    "marketing_commitments": "committed_at",
    "leads": "created_at",
    "feedback": "submitted_at",
}
"""Event tables and the time column whose rows are counted (signings are not judged)."""
DAY_NS = 86_400 * 10**9


NAT = np.iinfo(np.int64).min
"""What :func:`_ns` gives a missing time (NaT)."""


def _ns(values) -> np.ndarray:
    """Datetimes -> int64 nanoseconds since 1970 (NaT -> the smallest int64, :data:`NAT`)."""
    ts = pd.to_datetime(pd.Series(values)).astype("datetime64[ns]")
    return ts.to_numpy().astype("int64")


def exposure(signed: np.ndarray, start: int, end: int, edges=AGE_EDGES) -> np.ndarray:
    """Partner-days in [start, end) at each onboarding-age bucket, (partners, buckets).

    Args:
        signed: Signing time of each partner in ns (:func:`_ns`).
        start: Period start in ns.
        end: Period end in ns (exclusive).
        edges: Lower edges of the age buckets in days; the last bucket is open.
    """
    sign = signed.astype(float)[:, None]
    lo = sign + np.asarray(edges, dtype=float)[None, :] * DAY_NS
    hi = np.concatenate([lo[:, 1:], np.full((len(signed), 1), np.inf)], axis=1)
    days = np.minimum(hi, float(end)) - np.maximum(lo, float(start))
    return np.clip(days, 0.0, None) / DAY_NS


def partner_counts(
    when: np.ndarray, partner: np.ndarray, signed: np.ndarray, start: int, end: int
) -> np.ndarray:
    """Rows in [start, end) per partner and onboarding-age bucket, (partners, buckets).

    A row dated before its partner's signing counts in the first bucket.

    Args:
        when: Each row's event time in ns.
        partner: Each row's partner index into ``signed`` (-1: unknown partner, left out).
        signed: Signing time of each partner in ns.
        start: Period start.
        end: Period end (exclusive).
    """
    k = len(AGE_EDGES)
    keep = (partner >= 0) & (when >= start) & (when < end)
    p = partner[keep]
    age = when[keep] - signed[p]  # whole nanoseconds: a row at day 30 exactly is in 30-60
    edges = np.asarray(AGE_EDGES, dtype=np.int64) * DAY_NS
    bucket = np.clip(np.searchsorted(edges, age, side="right") - 1, 0, k - 1)
    flat = np.bincount(p * k + bucket, minlength=len(signed) * k)
    return flat.reshape(len(signed), k).astype(float)


def rate_test(
    x_base: np.ndarray, x_win: np.ndarray, c_base: np.ndarray, c_win: np.ndarray
) -> tuple[float, float, float, int]:
    """Window rows of one segment, its rate ratio to the baseline and the test's z.

    The rate ratio is the Mantel-Haenszel estimate over the age buckets both periods saw,
    ``sum_a c_W[a] x_B[a] / T_a`` over ``sum_a c_B[a] x_W[a] / T_a`` (``T_a = x_W[a] +
    x_B[a]``), each half a row more so that no rows reads as a finite ratio: a bucket the
    baseline barely saw (the oldest partners' newest age) weighs by its partner-days there,
    where rows over partner-days of each bucket read one partner's rows in a few baseline
    partner-days as a rate (x4 expected activities in a steady segment).

    Args:
        x_base: Baseline partner-days (partners, buckets) of the segment's partners.
        x_win: Window partner-days.
        c_base: Baseline rows (partners, buckets).
        c_win: Window rows.

    Returns:
        (window rows in the compared buckets, rate ratio window / baseline, z (nan when
        untestable), partners with a row in the compared buckets).
    """
    xb, xw = x_base.sum(axis=0), x_win.sum(axis=0)
    both = (xb > 0) & (xw > 0)
    cb, cw = c_base[:, both], c_win[:, both]
    observed = float(cw.sum())
    total = xw[both] + xb[both]
    num = float((cw.sum(axis=0) * xb[both] / total).sum())
    den = float((cb.sum(axis=0) * xw[both] / total).sum())
    share = xw[both] / total
    u = (cw - share[None, :] * (cw + cb)).sum(axis=1)
    active = (cw + cb).sum(axis=1) > 0
    g = int(active.sum())
    var = float((u[active] ** 2).sum()) * g / (g - 1) if g > 1 else 0.0
    z = float(u.sum()) / np.sqrt(var) if var > 0 else float("nan")
    return observed, (num + 0.5) / (den + 0.5), z, g


def _segments(partners: pd.DataFrame, names) -> list[tuple[str, np.ndarray]]:
    """(``name=value``, partner mask) of every value of every segment column present.

    A partner whose value is missing is in no segment of that column (it was counted as a
    segment ``unknown``, one with partners whose value is the text ``unknown``).
    """
    out = []
    for name in names:
        if name not in partners.columns:
            continue
        values = partners[name].astype("string")
        present = values.notna().to_numpy()
        values = values.fillna("").to_numpy(dtype=object)
        for value in sorted(set(values[present])):
            out.append((f"{name}={value}", present & (values == value)))
    return out


def coverage_start(day: np.ndarray, partner: np.ndarray, k: int, days: int) -> int | None:
    """The first day from which a table's rows are sustained: ``k`` partners within ``days``.

    The mirror of the late tail at the data's end (:func:`~partnerscore.features.validate.
    late_tail`): one back-filled or mistyped row dated years before an export's first month
    must not set where the table's data begins. The start is the first day ``D``, on or
    after the first row's, such that rows of at least ``k`` distinct partners are dated in
    ``[D, D + days)``; ``k`` and ``days`` are the late tail's
    (:func:`~partnerscore.features.validate.late_tail_k`: 1% of the partners, at least 2,
    at most 10; :func:`~partnerscore.features.validate.late_tail_days`: 7, or 45 below 200
    partners).

    Args:
        day: Each row's day (days since 1970, floored).
        partner: Each row's partner (any integer ids).
        k: Partners the start needs behind it; below 2 the first row's day is the start.
        days: Span in days.

    Returns:
        The start day, the first row's when it is supported or ``k`` is below 2; None when
        there is no row, or no day has rows of ``k`` partners within ``days`` (too sparse
        to tell; the caller reads the table from its first row).
    """
    if day.size == 0:
        return None
    first = int(day.min())
    if k < 2 or np.unique(partner[day < first + days]).size >= k:
        return first
    order = np.lexsort((day, partner))
    p, d = partner[order], day[order]
    keep = np.ones(p.size, dtype=bool)
    keep[1:] = (p[1:] != p[:-1]) | (d[1:] != d[:-1])
    p, d = p[keep], d[keep]
    # a row on day r supports every D in [r - days + 1, r]; one partner's rows closer than
    # ``days`` apart support one run of days, counted once
    new = np.ones(p.size, dtype=bool)
    new[1:] = (p[1:] != p[:-1]) | (d[1:] - d[:-1] > days)
    lo = d[new] - days + 1
    hi = d[np.append(new[1:], True)]  # each run's last day
    at, where = np.unique(np.concatenate([lo, hi + 1]), return_inverse=True)
    step = np.concatenate([np.ones(lo.size), -np.ones(hi.size)])
    count = np.cumsum(np.bincount(where, weights=step, minlength=at.size))
    hit = np.flatnonzero(count >= k)  # the count at[i] holds until at[i + 1]
    return max(int(at[hit[0]]), first) if hit.size else None


def _prepare(tables: dict[str, pd.DataFrame], as_of: pd.Timestamp, config: MonitorConfig):
    """Segments and, per event table, the exposure and row counts of every partner.

    A table's baseline starts where its rows are sustained (:func:`coverage_start`) when that
    is later than the ``volume_baseline_days`` before the window (an export holding a year
    of events of partners signed long before: their partner-days before it had no rows to
    count); rows dated before that start (a back-filled record years earlier) are left out.

    Returns:
        (segments as (``name=value``, partner mask), [(table, baseline start in ns or None
        when the table has no sustained rows before the window, x_base, x_win, c_base,
        c_win)], table -> its rows left out as (rows, partner ids, first, last, start) in
        ns, for the tables with such rows).
    """
    partners = tables["partners"]
    signed = _ns(partners["signed_at"])
    known = ~pd.isna(pd.to_datetime(partners["signed_at"])).to_numpy()
    ids = partners["partner_id"].astype(str)
    end = int(_ns([as_of])[0])
    mid = end - config.window_days * DAY_NS
    start = mid - config.volume_baseline_days * DAY_NS
    k, span = late_tail_k(len(partners)), late_tail_days(len(partners))
    x_win = exposure(signed, mid, end) * known[:, None]
    segments = _segments(partners, config.volume_segments)
    counted, early = [], {}
    for table, column in VOLUME_TABLES.items():
        if table not in tables:
            continue
        frame = tables[table]
        when = _ns(frame[column])
        pid = frame["partner_id"].astype(str)
        partner = pd.Index(ids).get_indexer(pid)
        dated = (when != NAT) & (when < end)
        first = None
        if dated.any():
            days = np.floor_divide(when[dated], DAY_NS)
            who = partner[dated]  # a partner not in partners counts too, by its id
            unknown = who < 0
            if unknown.any():
                who[unknown] = len(ids) + pd.factorize(pid[dated][unknown])[0]
            day = coverage_start(days, who, k, span)
            first = int(when[dated].min()) if day is None else int(when[dated][days >= day].min())
            before = dated & (when < first)
            if before.any():
                who = sorted(set(frame.loc[before, "partner_id"].astype(str)))
                span_ns = (int(when[before].min()), int(when[before].max()), first)
                early[table] = (int(before.sum()), who, *span_ns)
            if first >= mid:
                first = None
        begin = start if first is None else max(start, first)
        x_base = exposure(signed, begin, mid) * known[:, None]
        partner = np.where(known[partner] & (partner >= 0), partner, -1)
        c_base = partner_counts(when, partner, signed, begin, mid)
        c_win = partner_counts(when, partner, signed, mid, end)
        counted.append((table, begin if first is not None else None, x_base, x_win, c_base, c_win))
    return segments, counted, early


def segment_volume_rows(
    tables: dict[str, pd.DataFrame], as_of: pd.Timestamp, config: MonitorConfig
) -> list[tuple[str, str, float, float, float, int]]:
    """(table, segment, observed, expected, z, partners) of every event table and segment.

    See :func:`segment_volume_checks`; :func:`rate_test` gives the numbers.
    """
    segments, counted, _ = _prepare(tables, as_of, config)
    return _rate_rows(segments, counted)


def _rate_rows(segments, counted) -> list[tuple[str, str, float, float, float, int]]:
    """:func:`segment_volume_rows` of ``_prepare``'s segments and counted tables."""
    return [
        (table, segment, *rate_test(x_base[mask], x_win[mask], c_base[mask], c_win[mask]))
        for table, _, x_base, x_win, c_base, c_win in counted
        for segment, mask in segments
    ]


def _flagged(ratio: float, adjusted: float, config: MonitorConfig) -> str:
    """ok, warn or alarm of a rate ratio (either way) and its adjusted p-value."""
    change = max(ratio, 1 / ratio)
    if adjusted < config.alpha and change >= config.volume_alarm_ratio:
        return "alarm"
    if adjusted < config.alpha and change >= config.volume_warn_ratio:
        return "warn"
    return "ok"


def _residual(data, mask: np.ndarray, config: MonitorConfig) -> tuple[float, float, float, int]:
    """(ratio, z, p two-sided, partners) of a segment's partners in ``mask`` (nan p: untestable)."""
    x_base, x_win, c_base, c_win = data
    _, ratio, z, g = rate_test(x_base[mask], x_win[mask], c_base[mask], c_win[mask])
    testable = g >= config.min_rows and np.isfinite(z)
    return ratio, z, (2 * _norm_sf(abs(z)) if testable else float("nan")), g


def _rest(masks: dict[str, np.ndarray], name: str, without) -> np.ndarray:
    """Segment ``name``'s partners outside the segments ``without``."""
    rest = masks[name].copy()
    for other in without:
        rest &= ~masks[other]
    return rest


def explain_overlaps(
    flagged: dict[str, tuple[float, float]],
    masks: dict[str, np.ndarray],
    data,
    config: MonitorConfig,
) -> dict[str, tuple[list[str], tuple[float, float, float, int]]]:
    """Which flagged segments of one table are another flagged segment seen through a column.

    A drop confined to region NA also moves every tier and partner type holding NA's
    partners. Greedy, most specific first: the flagged segment of the largest change (either
    way; then the largest |z|) is kept; every other flagged segment is tested again
    without the kept segments' partners (:func:`rate_test` on the rest); one whose rest
    shows no change left (its p-value, Benjamini-Hochberg adjusted over that round's tests,
    not under ``alpha``; a change the other way; or fewer than ``min_rows`` partners left)
    is explained by the kept segments that share partners with it; of the rest the largest
    change of its remainder is kept next, and so on. Last, a kept segment with no change
    left without the other kept ones' partners is explained by them (a small segment mostly
    inside the real one can come first). Two independent drifts both stay, even while
    one's rest is under the warn ratio (the first month of a drift).

    Args:
        flagged: ``name=value`` -> (rate ratio, z) of the table's warning and alarming
            segments.
        masks: ``name=value`` -> partner mask.
        data: The table's (x_base, x_win, c_base, c_win), partners by buckets.
        config: ``min_rows``, ``alpha``.

    Returns:
        Explained segment -> (the kept segments that explain it, the test of its rest:
        ratio, z, p (unadjusted), partners, the segments whose partners that rest is
        without: the explaining ones when it was tested; they differ only where one of
        those was itself explained later).
    """

    def strength(ratio_z):
        ratio, z = ratio_z[0], ratio_z[1]
        return (max(ratio, 1 / ratio), abs(z) if np.isfinite(z) else 0.0)

    def still(names, kept):
        """Of ``names``, those whose rest without ``kept``'s partners still warns."""
        out = {name: _residual(data, _rest(masks, name, kept), config) for name in names}
        tested = [n for n in names if np.isfinite(out[n][2])]
        q = dict(zip(tested, benjamini_hochberg([out[n][2] for n in tested]), strict=True))
        same_way = {n for n in tested if (out[n][0] > 1) == (flagged[n][0] > 1)}
        return out, {n for n in same_way if q[n] < config.alpha}

    def explainers(name, kept):
        return [k for k in kept if (masks[k] & masks[name]).any()]

    kept: list[str] = []
    explained: dict[str, tuple[list[str], tuple[float, float, float, int], list[str]]] = {}
    remaining = dict(flagged)
    while remaining:
        if kept:
            tests, warns = still(list(remaining), kept)
            for name in list(remaining):
                if name not in warns:
                    by = explainers(name, kept)
                    explained[name] = (by, tests[name], by)
                    del remaining[name]
            remaining = {n: tests[n][:2] for n in remaining}
            if not remaining:
                break
        pick = max(remaining, key=lambda n: strength(remaining[n]))
        kept.append(pick)
        del remaining[pick]
    changed = True
    while changed and len(kept) > 1:
        changed = False
        for name in list(kept):
            others = [k for k in kept if k != name]
            tests, warns = still([name], others)
            if name not in warns and explainers(name, others):
                by = explainers(name, others)
                explained[name] = (by, tests[name], by)
                kept.remove(name)
                changed = True
                break
    for name, (by, test, rest) in explained.items():  # explained by one later demoted
        explained[name] = (explainers(name, kept) or by, test, rest)
    return explained


def segment_volume_checks(
    tables: dict[str, pd.DataFrame], as_of: pd.Timestamp, config: MonitorConfig
) -> list[Check]:
    """``quality.segment_volume.<table>.<segment>``: rows against the segment's exposure.

    Args:
        tables: Clean raw tables (``partners`` with the segment columns).
        as_of: Monitoring date: the window is the ``window_days`` before it, the baseline the
            ``volume_baseline_days`` before the window.
        config: ``window_days``, ``volume_baseline_days``, ``volume_segments``, ``min_rows``,
            ``alpha`` and the volume ratios.

    Returns:
        One check per event table and segment value (skipped when too few rows); a flagged
        segment whose change is another flagged segment's (:func:`explain_overlaps`) is
        ``info`` with ``explained_by``.
    """
    return segment_volume_report(tables, as_of, config)[0]


def segment_volume_report(
    tables: dict[str, pd.DataFrame], as_of: pd.Timestamp, config: MonitorConfig
) -> tuple[list[Check], list[dict]]:
    """The checks of :func:`segment_volume_checks` and the flagged segments' rates.

    For the page: each flagged or explained segment's rows and partner-days at each
    onboarding age the test compared, baseline and window.

    Returns:
        (checks, views): a view is ``table, segment, status, explained_by, ratio, buckets``
        with per compared age bucket ``age_from, age_to (None: open), base_rows,
        base_days, window_rows, window_days``; an explained segment's view also has
        ``rest``: the same for its partners outside the explaining segments, as its rest was
        tested (``ratio`` the rest's, ``without`` the segments whose partners it leaves out).
    """
    if not config.volume_segments:
        off = "per-segment volume check off: monitor.volume_segments is empty"
        return [_note("quality.segment_volume.off", "all", "info", off, config)], []
    segments, counted, early = _prepare(tables, as_of, config)
    masks = dict(segments)
    data = {}
    notes = []
    mid = as_of - pd.Timedelta(days=config.window_days)
    n_partners = len(tables["partners"])
    k, span = late_tail_k(n_partners), late_tail_days(n_partners)
    for table, begin, x_base, x_win, c_base, c_win in counted:
        if begin is None:
            said = f"{table}: no row before the {config.window_days} days before as_of"
            if table in early:
                said = (
                    f"{table}: its rows are sustained only from "
                    f"{pd.Timestamp(early[table][4], unit='ns'):%Y-%m-%d}, inside the "
                    f"{config.window_days} days before as_of (the first day from which {k} "
                    f"partners have rows within {span} days; {_early_text(table, early)})"
                )
            notes.append(
                _note(
                    f"quality.segment_volume.{table}.all",
                    table,
                    "skip",
                    f"{said}, no baseline to compare its segments with",
                    config,
                )
            )
            continue
        data[table] = (x_base, x_win, c_base, c_win)
    rows = _rate_rows(segments, [c for c in counted if c[1] is not None])
    short = [
        (table, begin)
        for table, begin, *_ in counted
        if begin is not None and begin > _ns([mid])[0] - config.volume_baseline_days * DAY_NS
    ]
    if short:
        days = {t: (_ns([mid])[0] - b) / DAY_NS for t, b in short}
        notes.append(
            _note(
                "quality.segment_volume.baseline",
                "all",
                "info",
                f"the {config.volume_baseline_days}-day baseline reaches before the data: "
                + ", ".join(
                    f"{t} from {pd.Timestamp(b, unit='ns'):%Y-%m-%d} ({days[t]:,.0f} days"
                    + (f"; {_early_text(t, early)}" if t in early else "")
                    + ")"
                    for t, b in short
                )
                + "; each is read from its first row"
                + (
                    f", the rows left out dated before the first day from which {k} partners "
                    f"have rows within {span} days (its sustained rows; a back-filled or "
                    "mistyped date does not set the start)"
                    if any(t in early for t, _ in short)
                    else ""
                ),
                config,
            )
        )
    tested = [i for i, r in enumerate(rows) if r[5] >= config.min_rows and np.isfinite(r[4])]
    p = [2 * _norm_sf(abs(rows[i][4])) for i in tested]
    q = dict(zip(tested, benjamini_hochberg(p), strict=True))
    status = {i: _flagged(rows[i][3], float(q[i]), config) for i in q}
    explained: dict[tuple[str, str], tuple[list[str], tuple, list[str]]] = {}
    kept: dict[tuple[str, str], list[str]] = {}
    for table in data:
        flagged = {
            r[1]: (r[3], r[4])
            for i, r in enumerate(rows)
            if r[0] == table and status.get(i, "ok") != "ok"
        }
        if len(flagged) > 1:
            for name, why in explain_overlaps(flagged, masks, data[table], config).items():
                explained[(table, name)] = why
                for k in why[0]:
                    kept.setdefault((table, k), []).append(name)
    checks, views = [], []
    for i, (table, segment, observed, ratio, z, partners_active) in enumerate(rows):
        change = max(ratio, 1 / ratio)
        said = (
            f"{table} of {segment}: {observed:,.0f} rows in the {config.window_days} days "
            f"before as_of ({partners_active:,} partners with rows in it or the baseline)"
        )
        explained_by = None
        if i not in q:
            state, value, adjusted = "skip", None, None
            detail = f"{said}: too few to judge (min_rows {config.min_rows} partners)"
            x_base, x_win, _, c_win = data[table]
            if not x_base[masks[segment]].any():
                detail = (
                    f"{table} of {segment}: new, no partner-days in the "
                    f"{config.volume_baseline_days} days before the window, nothing to compare "
                    f"({c_win[masks[segment]].sum():,.0f} rows in the {config.window_days} days "
                    "before as_of)"
                )
        else:
            adjusted = float(q[i])
            value = change
            state = status[i]
            direction = "spike" if ratio > 1 else "drop"
            detail = (
                f"{said}: {direction} x{ratio:.2f} in rows per partner-day against the "
                f"{config.volume_baseline_days} days before at the same onboarding ages "
                f"(Mantel-Haenszel; z {z:.1f}, adjusted p {adjusted:.2g})"
            )
            if (table, segment) in explained:
                by, (r_ratio, r_z, r_p, r_g), _ = explained[(table, segment)]
                explained_by = ", ".join(by)
                rest = (
                    f"x{r_ratio:.2f} (z {r_z:.1f}, p {r_p:.2g}, {r_g:,} partners)"
                    if np.isfinite(r_p)
                    else f"too few to judge ({r_g:,} partners)"
                )
                detail += (
                    f"; explained by {explained_by} (would {state}): without "
                    f"{'their' if len(by) > 1 else 'its'} partners the rest reads {rest}"
                )
                state = "info"
            elif (table, segment) in kept:
                detail += (
                    f"; explains {', '.join(sorted(kept[(table, segment)]))} (the same change "
                    "seen through another column)"
                )
        if state in ("warn", "alarm") or explained_by is not None:
            view = _view(table, segment, state, explained_by, ratio, data[table], masks[segment])
            if explained_by is not None:
                _, (r_ratio, *_), without = explained[(table, segment)]
                rest = _rest(masks, segment, without)
                view["rest"] = _view(table, segment, state, None, r_ratio, data[table], rest)
                view["rest"]["without"] = without
            views.append(view)
        checks.append(
            Check(
                f"quality.segment_volume.{table}.{segment}",
                "quality",
                table,
                segment,
                "volume_vs_exposure",
                value,
                config.volume_warn_ratio,
                config.volume_alarm_ratio,
                adjusted,
                state,
                detail,
                explained_by,
            )
        )
    return notes + checks, views


def _early_text(table: str, early: dict) -> str:
    """``1 leads row of 1 partner (P7) dated 2023-03-02 left out, ...``: what the start left out."""
    n, who, lo, hi, _ = early[table]
    lo, hi = pd.Timestamp(lo, unit="ns"), pd.Timestamp(hi, unit="ns")
    shown = ", ".join(who[:3]) + (", ..." if len(who) > 3 else "")
    dates = f"{lo:%Y-%m-%d}" + (f" to {hi:%Y-%m-%d}" if hi.normalize() != lo.normalize() else "")
    return (
        f"{n:,} {table} row{'s' if n != 1 else ''} of {len(who):,} "
        f"partner{'s' if len(who) != 1 else ''} ({shown}) dated {dates} left out"
    )


def _note(name: str, subject: str, status: str, detail: str, config: MonitorConfig) -> Check:
    """A check of the segment volume check that measures nothing (off, no baseline)."""
    return Check(
        name,
        "quality",
        subject,
        "all",
        "volume_vs_exposure",
        None,
        config.volume_warn_ratio,
        config.volume_alarm_ratio,
        None,
        status,
        detail,
    )


def _view(table, segment, status, explained_by, ratio, data, mask) -> dict:
    """Rows and partner-days per compared onboarding-age bucket of one segment's partners."""
    x_base, x_win, c_base, c_win = (a[mask].sum(axis=0) for a in data)
    buckets = [
        {
            "age_from": AGE_EDGES[a],
            "age_to": AGE_EDGES[a + 1] if a + 1 < len(AGE_EDGES) else None,
            "base_rows": float(c_base[a]),
            "base_days": float(x_base[a]),
            "window_rows": float(c_win[a]),
            "window_days": float(x_win[a]),
        }
        for a in range(len(AGE_EDGES))
        if x_base[a] > 0 and x_win[a] > 0
    ]
    return {
        "table": table,
        "segment": segment,
        "status": status,
        "explained_by": explained_by,
        "ratio": float(ratio),
        "buckets": buckets,
    }


def _norm_sf(z: float) -> float:
    from scipy import stats  # imported only by the monitor

    return float(stats.norm.sf(z))
