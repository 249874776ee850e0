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


def _ns(values) -> np.ndarray:
    """Datetimes -> int64 nanoseconds since 1970 (NaT -> the smallest int64)."""
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
    """(``name=value``, partner mask) of every value of every segment column present."""
    out = []
    for name in names:
        if name not in partners.columns:
            continue
        values = partners[name].astype("string").fillna("unknown").to_numpy(dtype=object)
        for value in sorted(set(values)):
            out.append((f"{name}={value}", values == value))
    return out


def segment_volume_rows(
    tables: dict[str, pd.DataFrame], as_of: pd.Timestamp, config: MonitorConfig
) -> list[tuple[str, str, float, float, float, int]]:
    """(table, segment, observed, expected, z, partners) of every event table and segment.

    See :func:`segment_volume_checks`; :func:`rate_test` gives the numbers.
    """
    partners = tables["partners"]
    signed = _ns(partners["signed_at"])
    known = ~pd.isna(pd.to_datetime(partners["signed_at"])).to_numpy()
    ids = partners["partner_id"].astype(str)
    end = int(_ns([as_of])[0])
    mid = end - config.window_days * DAY_NS
    start = mid - config.volume_baseline_days * DAY_NS
    x_base = exposure(signed, start, mid) * known[:, None]
    x_win = exposure(signed, mid, end) * known[:, None]
    segments = _segments(partners, config.volume_segments)
    rows = []
    for table, column in VOLUME_TABLES.items():
        if table not in tables:
            continue
        frame = tables[table]
        when = _ns(frame[column])
        partner = pd.Index(ids).get_indexer(frame["partner_id"].astype(str))
        partner = np.where(known[partner] & (partner >= 0), partner, -1)
        c_base = partner_counts(when, partner, signed, start, mid)
        c_win = partner_counts(when, partner, signed, mid, end)
        for segment, mask in segments:
            test = rate_test(x_base[mask], x_win[mask], c_base[mask], c_win[mask])
            rows.append((table, segment, *test))
    return rows


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
        One check per event table and segment value (skipped when too few rows).
    """
    rows = segment_volume_rows(tables, as_of, config)
    tested = [i for i, r in enumerate(rows) if r[5] >= config.min_rows and np.isfinite(r[4])]
    p = [2 * _norm_sf(abs(rows[i][4])) for i in tested]
    q = dict(zip(tested, benjamini_hochberg(p), strict=True))
    checks = []
    for i, (table, segment, observed, ratio, z, partners_active) in enumerate(rows):
        change = max(ratio, 1 / ratio)
        said = (
            f"{table} of {segment}: {observed:,.0f} rows in the {config.window_days} days "
            f"before as_of ({partners_active:,} partners with rows in it or the baseline)"
        )
        if i not in q:
            status, value, adjusted = "skip", None, None
            detail = f"{said}: too few to judge (min_rows {config.min_rows} partners)"
        else:
            adjusted = float(q[i])
            value = change
            status = "ok"
            if adjusted < config.alpha and change >= config.volume_alarm_ratio:
                status = "alarm"
            elif adjusted < config.alpha and change >= config.volume_warn_ratio:
                status = "warn"
            direction = "spike" if ratio > 1 else "drop"
            detail = (
                f"{said}: {direction} x{ratio:.2f} in rows per partner-day against the "
                f"{config.volume_baseline_days} days before at the same onboarding ages "
                f"(Mantel-Haenszel; z {z:.1f}, adjusted p {adjusted:.2g})"
            )
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
                status,
                detail,
            )
        )
    return checks


def _norm_sf(z: float) -> float:
    from scipy import stats  # imported only by the monitor

    return float(stats.norm.sf(z))
