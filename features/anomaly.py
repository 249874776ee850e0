"""Data-quality and anomaly checks on a raw batch: outliers, volumes, staleness, ranges.

Anomalous rows are not contract violations: they stay in the data and are scored, but they are
listed with a reason (:data:`ANOMALY_COLUMNS`) and the partners they belong to carry an
``anomaly`` flag on their score rows.

- **Table outliers**: amounts, durations and volumes on a log1p scale, robust z against the
  table's median and MAD (rows dated before as_of, each partner's rows weighing 1 in all, so
  that one partner's many rows cannot set them); the upper tail only (spikes: a $0 deal or a
  same-day close is plausible, a thousand-fold amount is not; drops in volume are checked per
  table instead).
- **Partner outliers**: rows of the recent window against the same partner's earlier rows,
  and the partner's events of the last 30 days against its earlier 30-day periods.
- **Volumes**: rows per day per table in a window, compared with the previous batch.
- **Staleness**: days between each table's newest event before as_of and as_of.
- **Training range**: feature values beyond the training [min, max] by more than a margin.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from partnerscore.features.checks import Check
from partnerscore.features.config import MonitorConfig
from partnerscore.features.core import isin_text
from partnerscore.features.drift import psi, psi_check

ANOMALY_COLUMNS = (
    "table",
    "record_id",
    "partner_id",
    "occurred_at",
    "column",
    "value",
    "score",
    "reason",
)
MAD_TO_SD = 1.4826
DAY = pd.Timedelta(days=1)

# table -> (record id column or None, event time column)
EVENT_TIME = {
    "partners": (None, "signed_at"),
    "deals": ("deal_id", "created_at"),
    "activities": ("activity_id", "occurred_at"),
    "trainings": (None, "enrolled_at"),
    "portal_events": (None, "occurred_at"),
    "marketing_commitments": ("commitment_id", "committed_at"),
    "leads": ("lead_id", "created_at"),
    "feedback": (None, "submitted_at"),
}


def _days(frame: pd.DataFrame, end: str, start: str) -> np.ndarray:
    delta = pd.to_datetime(frame[end]) - pd.to_datetime(frame[start])
    return (delta / DAY).to_numpy(dtype=float)


# (table, measure name, unit, values from the table)
MEASURES: tuple[tuple[str, str, str, Callable[[pd.DataFrame], np.ndarray]], ...] = (
    ("deals", "amount", "$", lambda f: pd.to_numeric(f["amount"]).to_numpy(dtype=float)),
    ("deals", "cycle_days", "days", lambda f: _days(f, "closed_at", "created_at")),
    (
        "activities",
        "response_hours",
        "hours",
        lambda f: pd.to_numeric(f["response_hours"]).to_numpy(dtype=float),
    ),
    ("leads", "qualify_days", "days", lambda f: _days(f, "qualified_at", "created_at")),
    ("leads", "convert_days", "days", lambda f: _days(f, "converted_at", "created_at")),
    ("trainings", "completion_days", "days", lambda f: _days(f, "completed_at", "enrolled_at")),
    (
        "marketing_commitments",
        "delivery_days",
        "days",
        lambda f: _days(f, "delivered_at", "committed_at"),
    ),
    (
        "partners",
        "channel_reach",
        "accounts",
        lambda f: pd.to_numeric(f["channel_reach"]).to_numpy(dtype=float),
    ),
)
VOLUME_TABLES = ("activities", "portal_events", "leads", "deals")
# when a measure is known: a duration only once it ended (a recent window of start times holds
# only the short ones)
MEASURE_TIME = {
    "amount": "created_at",
    "cycle_days": "closed_at",
    "response_hours": "occurred_at",
    "qualify_days": "qualified_at",
    "convert_days": "converted_at",
    "completion_days": "completed_at",
    "delivery_days": "delivered_at",
    "channel_reach": "signed_at",
}


def log1p_nonneg(values) -> np.ndarray:
    """log1p of non-negative values (negatives, impossible after validation, become NaN)."""
    x = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(x >= 0, np.log1p(np.where(x >= 0, x, 0.0)), np.nan)


def robust_center_scale(
    values: np.ndarray, floor: float = 1e-9, partners: np.ndarray | None = None
) -> tuple[float, float]:
    """Median and MAD-based standard deviation (1.4826 * MAD, at least ``floor``).

    With ``partners`` (each value's partner code), each partner's finite values weigh 1 in all
    (:func:`weighted_median`): the table's typical value is the typical partner's, so one
    partner's rows, however many, move the centre and the spread by one partner's weight
    (a partner with more rows than all others together once set both: a thousand equal deals
    made the MAD 0 and every other partner's deals outliers at a billion robust SDs).
    """
    finite = np.isfinite(values)
    x = values[finite]
    if x.size == 0:
        return float("nan"), float("nan")
    if partners is None:
        center = float(np.median(x))
        scale = MAD_TO_SD * float(np.median(np.abs(x - center)))
        return center, max(scale, floor)
    codes = np.asarray(partners)[finite]
    _, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    center = weighted_median(x, weights)
    scale = MAD_TO_SD * weighted_median(np.abs(x - center), weights)
    return center, max(scale, floor)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value where the cumulative weight of the sorted values reaches half the total.

    The mean of it and the next value when the weight below it is exactly half (equal
    weights: ``np.median``). Ordered by (value, weight), so the rows' order does not matter.

    "Exactly half" allows the rounding of the float sums: weights such as a partner's
    ``1 / 3`` per row add up to ``0.9999999999999999`` or ``1.0000000000000002``, and an exact
    comparison put the centre of two partners (one at 0, one with three rows at 10) at 0
    instead of 5, or at either end for equal row counts, by the last bit of a sum. Each of the
    ``n`` additions rounds by at most ``eps`` times the total, so cumulative weights within
    ``2 n eps`` of the total from half are half.
    """
    order = np.lexsort((weights, values))
    x, cum = values[order], np.cumsum(weights[order])
    half = cum[-1] / 2
    slack = 2 * x.size * np.finfo(float).eps * cum[-1]
    i = int(np.searchsorted(cum, half - slack, side="left"))
    if cum[i] <= half + slack and i + 1 < x.size:
        return float((x[i] + x[i + 1]) / 2)
    return float(x[i])


def batch_statistics(
    tables: dict[str, pd.DataFrame], as_of: Cutoff
) -> dict[tuple[str, str], tuple[float, float]]:
    """The whole-batch values of :func:`raw_anomalies`, for checks run on partner groups.

    Returns:
        (table, measure) -> :func:`robust_center_scale` of the log1p values of the rows dated
        before ``as_of``, each partner's weighing 1 (what :func:`table_outliers` computes
        without ``robust``). ``tables`` need only the columns :data:`READ_COLUMNS` names
        (partner ids included). (The per-partner checks read only
        the partner's own rows and signing date: nothing of theirs is batch-wide.)
    """
    cache: dict[str, _Before] = {}
    robust = {}
    for table, measure, _, values_of in MEASURES:
        if table not in tables:
            continue
        before = _before(tables, table, as_of, cache)
        if not before.empty:
            robust[(table, measure)] = robust_center_scale(
                log1p_nonneg(known_values(before, measure, values_of)),
                partners=before.partners()[0],
            )
    return robust


def snapshot_statistics(
    files: dict, partners: pd.DataFrame, as_of: Cutoff
) -> dict[tuple[str, str], tuple[float, float]]:
    """:func:`batch_statistics` of a validated snapshot, one table's columns in memory at a time.

    Args:
        files: Table -> its clean Parquet file (only the numbers and dates of
            :data:`READ_COLUMNS` are read; tables without a measure are not read).
        partners: The partners table (already in memory).
        as_of: The checks' as_of.
    """
    import pyarrow.parquet as pq

    robust: dict[tuple[str, str], tuple[float, float]] = {}
    measures = {m[0] for m in MEASURES}
    for name, path in files.items():
        if name not in measures:
            continue
        if name == "partners":
            frame = partners
        else:
            ids = {pair[0] for pair in EVENT_TIME.values() if pair[0]}  # record ids: unread
            read = [c for c in pq.read_schema(path).names if c in READ_COLUMNS - ids]
            frame = pq.read_table(path, columns=read).to_pandas()
        robust.update(batch_statistics({name: frame}, as_of))
    return robust


def _period_index(as_of, when) -> np.ndarray:
    """30-day periods counted back from as_of (period 0 is the last 30 days), per row.

    ``as_of``: one date, or each row's (an array as long as ``when``).
    """
    if np.ndim(as_of) > 0:
        as_of = pd.Series(pd.to_datetime(np.asarray(as_of)))
    elif isinstance(as_of, np.ndarray):
        as_of = pd.Timestamp(as_of[()])
    return ((as_of - pd.Series(when)) / DAY // 30).astype(int).to_numpy()


Cutoff = pd.Timestamp | pd.Series
"""The raw checks' as_of: one date for every partner, or partner_id -> the partner's own (its
score's as_of under ``score --at-age``: each partner's checks read its rows before its
milestone, never a date another partner's signing sets)."""


def _row_cuts(frame: pd.DataFrame, as_of: Cutoff):
    """Each row's cut-off: ``as_of`` as one datetime64, or per row by its partner.

    A partner without a cut-off gets NaT: none of its rows is read.
    """
    if not isinstance(as_of, pd.Series):
        return pd.Timestamp(as_of).to_datetime64()
    codes, uniques = _factorized_partners(frame)
    by_id = pd.Series(pd.to_datetime(as_of).to_numpy(), index=as_of.index.astype(str))
    cut = by_id.reindex(np.asarray(uniques, dtype=object)).to_numpy()
    out = np.full(len(codes), np.datetime64("NaT"), dtype=cut.dtype)
    known = codes >= 0
    out[known] = cut[codes[known]]
    return out


def _frame(table, before, idx, partner, when, column, value, score, reason) -> pd.DataFrame:
    """Anomaly rows of ``before``'s rows at positions ``idx`` (:class:`_Before`)."""
    record = before.record_ids(idx)
    return pd.DataFrame(
        {
            "table": table,
            "record_id": record,
            "partner_id": np.asarray(partner, dtype=object),
            "occurred_at": pd.to_datetime(pd.Series(when)).to_numpy(),
            "column": column,
            "value": np.asarray(value, dtype=float),
            "score": np.round(np.asarray(score, dtype=float), 2),
            "reason": reason,
        },
        columns=list(ANOMALY_COLUMNS),
    )


def empty_anomalies() -> pd.DataFrame:
    """An anomaly list with no rows and the declared columns."""
    return pd.DataFrame(
        {
            "table": pd.Series(dtype=object),
            "record_id": pd.Series(dtype=object),
            "partner_id": pd.Series(dtype=object),
            "occurred_at": pd.Series(dtype="datetime64[us]"),
            "column": pd.Series(dtype=object),
            "value": pd.Series(dtype=float),
            "score": pd.Series(dtype=float),
            "reason": pd.Series(dtype=object),
        }
    )


# every column the outlier checks read (ids, event times, measures): the rows before as_of are
# copied with these only, not with every text column of the table
READ_COLUMNS = frozenset(
    {"partner_id", *MEASURE_TIME.values(), "amount", "response_hours", "channel_reach"}
    | {c for pair in EVENT_TIME.values() for c in pair if c}
)


class _Before:
    """A raw table's rows dated before as_of, read column by column.

    The rows are selected once by position; numeric and date columns are taken as numpy
    arrays, text columns (record and partner ids) only where a result needs them, and partner
    ids are factorized once per table. Copying every text column of a million-row table for
    each check cost seconds; the results are the same as filtering the frame (the twin in
    ``tests/features/test_anomaly_flags.py``).
    """

    def __init__(self, frame: pd.DataFrame, table: str, as_of: Cutoff) -> None:
        self.frame, self.table = frame, table
        when = pd.to_datetime(frame[EVENT_TIME[table][1]]).to_numpy()
        cut = _row_cuts(frame, as_of)
        keep = when < cut  # NaT is never before (nor is anything before a NaT cut-off)
        self.rows = np.flatnonzero(keep)
        self.size = len(self.rows)
        self._cut = cut if np.ndim(cut) == 0 else cut[self.rows]
        self._numeric: pd.DataFrame | None = None
        self._partners: tuple[np.ndarray, np.ndarray] | None = None

    def cuts(self) -> np.ndarray:
        """Each of these rows' cut-off (its partner's as_of; one value: a 0-d array)."""
        return np.asarray(self._cut)

    def partner_cuts(self) -> np.ndarray:
        """The cut-off of each partner of :meth:`partners` (their ``uniques``' order)."""
        codes, uniques = self.partners()
        cut = self.cuts()
        if cut.ndim == 0:
            return np.full(len(uniques), cut)
        out = np.full(len(uniques), np.datetime64("NaT"), dtype=cut.dtype)
        known = codes >= 0
        out[codes[known]] = cut[known]
        return out

    @property
    def empty(self) -> bool:
        return self.size == 0

    def numeric(self) -> pd.DataFrame:
        """The read columns that are not text (measures, event times), these rows only."""
        if self._numeric is None:
            text = {"partner_id", *(pair[0] for pair in EVENT_TIME.values() if pair[0])}
            names = [c for c in self.frame.columns if c in READ_COLUMNS and c not in text]
            self._numeric = pd.DataFrame(
                {c: self.frame[c].to_numpy()[self.rows] for c in names}, columns=names
            )
        return self._numeric

    def when(self) -> np.ndarray:
        """Event times of these rows (datetime64)."""
        return pd.to_datetime(self.numeric()[EVENT_TIME[self.table][1]]).to_numpy()

    def partners(self) -> tuple[np.ndarray, np.ndarray]:
        """``pd.factorize`` of these rows' partner ids as text: (codes, uniques as objects).

        The whole column is factorized once; the codes of these rows are then renumbered in
        order of first appearance, which is what factorizing the selected rows gives.
        """
        if self._partners is None:
            codes, uniques = _factorized_partners(self.frame)
            sub, order = pd.factorize(codes[self.rows])
            if (order < 0).any():  # a missing id keeps code -1, as factorizing the rows gives
                na = int(np.flatnonzero(order < 0)[0])
                sub = np.where(sub == na, -1, sub - (sub > na))
                order = np.delete(order, na)
            self._partners = (
                sub.astype(np.intp, copy=False),
                np.asarray(uniques, dtype=object)[order],
            )
        return self._partners

    def text(self, column: str, idx: np.ndarray) -> np.ndarray:
        """A column as text at positions ``idx`` of these rows."""
        return self.frame[column].take(self.rows[idx]).astype(str).to_numpy()

    def record_ids(self, idx: np.ndarray) -> np.ndarray:
        """Record ids of the rows at positions ``idx``.

        The id column as text, or for tables without one the row number among these rows as
        ``row <n + 2>``.
        """
        id_col = EVENT_TIME[self.table][0]
        if id_col and id_col in self.frame:
            return self.text(id_col, idx)
        return np.array([f"row {i + 2}" for i in idx], dtype=object)  # file line (header = 1)


def known_values(before, measure: str, values_of) -> np.ndarray:
    """A measure of ``before``'s rows as known at each row's cut-off (its partner's as_of).

    A duration is known once it ended (:data:`MEASURE_TIME`): a deal created before as_of
    and closed after it is open at as_of, so its cycle is NaN here like an open deal's. Read
    with the end date, a deal closing in 2032 was listed at an as_of of 2024 as a 2,989-day
    cycle, and a past as_of's flags changed as later rows arrived.
    """
    values = values_of(before.numeric())
    column = MEASURE_TIME[measure]
    if column == EVENT_TIME[before.table][1]:
        return values
    ended = pd.to_datetime(before.numeric()[column]).to_numpy()
    return np.where(ended < before.cuts(), values, np.nan)  # NaT never ended


def known_times(before, measure: str) -> np.ndarray:
    """When each of ``before``'s rows' measure became known (:data:`MEASURE_TIME`).

    A duration's end, any other measure's event time. A window of recent rows is a window of
    these times: by their start, a recent window held only durations shorter than itself.
    """
    column = MEASURE_TIME[measure]
    if column == EVENT_TIME[before.table][1]:
        return before.when()
    return pd.to_datetime(before.numeric()[column]).to_numpy()


def _factorized_partners(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return pd.factorize(frame["partner_id"].astype(str))


def _before(
    tables: dict[str, pd.DataFrame],
    table: str,
    as_of: Cutoff,
    cache: dict[str, _Before] | None = None,
) -> _Before:
    """``tables[table]``'s rows before ``as_of`` (one :class:`_Before` per table in ``cache``)."""
    if cache is None:
        return _Before(tables[table], table, as_of)
    if table not in cache:
        cache[table] = _Before(tables[table], table, as_of)
    return cache[table]


def table_outliers(
    tables: dict[str, pd.DataFrame],
    as_of: Cutoff,
    config: MonitorConfig,
    robust: dict[tuple[str, str], tuple[float, float]] | None = None,
    cache: dict | None = None,
) -> tuple[pd.DataFrame, list[Check]]:
    """Rows whose amount, duration or volume is far above the table's robust centre.

    Args:
        tables: Clean raw tables.
        as_of: Only rows dated before it are considered.
        config: ``outlier_z`` lists a row; ``outlier_z_alarm`` on the largest z alarms.
        robust: (table, measure) -> (centre, scale) of the whole table, when ``tables`` hold
            only some partners' rows (a distributed job computes them once over every row).
        cache: Rows before as_of per table, shared by the checks of one batch.

    Returns:
        (anomaly rows, one ``quality.outliers.<table>.<measure>`` check per measure).
    """
    frames, checks = [], []
    for table, measure, unit, values_of in MEASURES:
        if table not in tables:
            continue
        before = _before(tables, table, as_of, cache)
        if before.empty:
            continue
        raw = known_values(before, measure, values_of)
        x = log1p_nonneg(raw)
        center, scale = (
            robust[(table, measure)]
            if robust is not None and (table, measure) in robust
            else robust_center_scale(x, partners=before.partners()[0])
        )
        z = (x - center) / scale
        finite = np.isfinite(z)
        hit = np.flatnonzero(finite & (z >= config.outlier_z))
        top = float(np.max(z[finite])) if finite.any() else None
        if hit.size:
            typical = float(np.expm1(center))
            reasons = [
                f"{table}.{measure} {raw[i]:,.2f} {unit} is {z[i]:.1f} robust SDs above the "
                f"table's typical {typical:,.2f} (log scale)"
                for i in hit
            ]
            frames.append(
                _frame(
                    table,
                    before,
                    hit,
                    before.text("partner_id", hit),
                    before.when()[hit],
                    measure,
                    raw[hit],
                    z[hit],
                    reasons,
                )
            )
        status = "skip" if top is None else "ok"
        if top is not None and top >= config.outlier_z_alarm:
            status = "alarm"
        elif hit.size:
            status = "warn"
        checks.append(
            Check(
                f"quality.outliers.{table}.{measure}",
                "quality",
                f"{table}.{measure}",
                "all",
                "max_robust_z",
                top,
                config.outlier_z,
                config.outlier_z_alarm,
                None,
                status,
                f"{hit.size} of {int(finite.sum())} rows at or above z {config.outlier_z:g}",
            )
        )
    out = pd.concat(frames, ignore_index=True) if frames else empty_anomalies()
    return out, checks


def partner_outliers(
    tables: dict[str, pd.DataFrame],
    as_of: Cutoff,
    config: MonitorConfig,
    cache: dict | None = None,
) -> pd.DataFrame:
    """New rows and recent volumes far above the same partner's own history.

    - Measures (amounts, durations) known in [as_of - window_days, as_of) against the
      partner's measures known before the window (at least ``partner_min_history`` of them):
      an amount from its row's date, a duration from its end (:func:`known_times`).
    - Events per table in [as_of - 30 days, as_of) against the partner's earlier full 30-day
      periods since signing (at least ``partner_min_history`` periods).

    Robust z on log1p values with the scale floored at ``partner_scale_floor``; rows at or
    above ``partner_z`` are listed. Each partner's result depends on its own rows and signing
    date only (``tables`` may hold some partners' rows: a distributed job's group).
    ``cache``: rows before as_of per table, shared by the checks of one batch.
    """
    frames = []
    window = np.timedelta64(config.window_days, "D")
    for table, measure, unit, values_of in MEASURES:
        if table not in tables or table == "partners":
            continue
        before = _before(tables, table, as_of, cache)
        if before.empty:
            continue
        when = before.when()
        known = known_times(before, measure)  # a duration: its end (NaT: x is NaN)
        start = before.cuts() - window  # each row's partner's window start
        raw = known_values(before, measure, values_of)
        x = log1p_nonneg(raw)
        codes, uniques = before.partners()
        old = (known < start) & np.isfinite(x)
        new = np.flatnonzero((known >= start) & np.isfinite(x))
        if new.size == 0 or not old.any():
            continue
        hist = pd.Series(x[old]).groupby(codes[old])
        n_hist = hist.size()
        center = hist.median()
        dev = np.abs(x[old] - center.reindex(codes[old]).to_numpy())
        mad = pd.Series(dev).groupby(codes[old]).median()
        c = center.reindex(codes[new]).to_numpy()
        s = np.maximum(MAD_TO_SD * mad.reindex(codes[new]).to_numpy(), config.partner_scale_floor)
        enough = n_hist.reindex(codes[new]).fillna(0).to_numpy() >= config.partner_min_history
        z = (x[new] - c) / s
        keep = enough & (z >= config.partner_z)
        hit, zh, ch = new[keep], z[keep], c[keep]
        if hit.size:
            reasons = [
                f"{table}.{measure} {raw[i]:,.2f} {unit} is {zi:.1f} robust SDs above this "
                f"partner's own typical {np.expm1(ci):,.2f}"
                for i, zi, ci in zip(hit, zh, ch, strict=True)
            ]
            pid = uniques[codes[hit]]
            frames.append(
                _frame(table, before, hit, pid, when[hit], measure, raw[hit], zh, reasons)
            )
    frames.append(_volume_spikes(tables, as_of, config, cache))
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else empty_anomalies()


def _median_with_zeros(
    owner: np.ndarray, values: np.ndarray, sizes: np.ndarray, filler: np.ndarray | None = None
) -> np.ndarray:
    """Per partner, the median of its ``values`` plus ``sizes - count`` copies of a filler.

    ``owner``: each value's partner (0 .. len(sizes) - 1; at most ``sizes`` values each);
    ``filler``: the value of the missing ones per partner (None: 0, below every value). The
    median is that of the partner's whole row (the middle value, or the mean of the two
    middle ones; NaN for an empty one), without building the row (its dense twin is in
    ``tests/features/test_anomaly_flags.py``).
    """
    n = len(sizes)
    fill = np.zeros(n) if filler is None else np.asarray(filler, dtype=float)
    order = np.lexsort((values, owner))
    owner, values = owner[order], values[order]
    start = np.searchsorted(owner, np.arange(n))
    count = np.bincount(owner, minlength=n)
    missing = sizes - count
    # values below the filler come first, then the filler's copies, then the rest
    below = np.bincount(owner, weights=values < fill[owner], minlength=n).astype(np.int64)

    def at(p: np.ndarray) -> np.ndarray:
        first = p < below
        filled = ~first & (p < below + missing)
        idx = np.where(first, p, p - missing)
        picked = values[np.clip(start + idx, 0, max(len(values) - 1, 0))] if len(values) else fill
        return np.where(filled, fill, picked)

    lo, hi = at(np.maximum(sizes - 1, 0) // 2), at(sizes // 2)
    median = np.where(sizes % 2 == 1, lo, (lo + hi) / 2)
    return np.where(sizes == 0, np.nan, median)


def _volume_spikes(
    tables: dict[str, pd.DataFrame],
    as_of: Cutoff,
    config: MonitorConfig,
    cache: dict | None = None,
) -> pd.DataFrame:
    """Partners whose events of the last 30 days are far above their own earlier periods.

    A partner's history is its full 30-day periods since signing before the last 30 days
    (``1 .. age - 1``, counted back from as_of), each with its event count, an empty one as 0:
    only its own rows and signing date count, never another partner's (the table's oldest
    row used to bound every partner's history: one row dated 1900 changed everyone's). The
    counts are kept sparse, one per (partner, period) with events: the empty periods are
    zeros placed first in the sorted history (:func:`_median_with_zeros`), so a partner
    signed in 1900 costs no row of a hundred years of periods.
    """
    partners = tables["partners"]
    signed = pd.Series(
        pd.to_datetime(partners["signed_at"]).to_numpy(),
        index=partners["partner_id"].astype(str).to_numpy(),
    )
    rows = []
    for table in VOLUME_TABLES:
        if table not in tables:
            continue
        before = _before(tables, table, as_of, cache)
        if before.empty:
            continue
        codes, uniques = before.partners()
        period = _period_index(before.cuts(), before.when())
        cut = pd.to_datetime(before.partner_cuts())
        # full periods since signing, excluding period 0 (an unknown signing date: none)
        age_periods = ((cut - signed.reindex(uniques).to_numpy()) / DAY // 30).to_numpy()
        age_periods = np.nan_to_num(age_periods, nan=0).astype(np.int64)
        n_hist = np.maximum(age_periods - 1, 0)
        known = codes >= 0
        recent = np.bincount(codes[known & (period == 0)], minlength=len(uniques))
        # periods before signing are not history
        inside = known & (period >= 1) & (period <= np.where(known, n_hist[codes], 0))
        cell_code, cell_period = codes[inside].astype(np.int64), period[inside].astype(np.int64)
        width = int(cell_period.max()) + 1 if cell_period.size else 1
        cells, counts = np.unique(cell_code * width + cell_period, return_counts=True)
        owner = cells // width
        center = _median_with_zeros(owner, np.log1p(counts.astype(float)), n_hist)
        mad = _median_with_zeros(
            owner, np.abs(np.log1p(counts.astype(float)) - center[owner]), n_hist, center
        )
        scale = np.maximum(MAD_TO_SD * mad, config.partner_scale_floor)
        with np.errstate(invalid="ignore"):
            z = (np.log1p(recent) - center) / scale
        hit = np.flatnonzero((n_hist >= config.partner_min_history) & (z >= config.partner_z))
        for i in hit:
            rows.append(
                {
                    "table": table,
                    "record_id": "",
                    "partner_id": uniques[i],
                    "occurred_at": cut[i] - pd.Timedelta(days=30),
                    "column": "events_last_30_days",
                    "value": float(recent[i]),
                    "score": round(float(z[i]), 2),
                    "reason": (
                        f"{table}: {int(recent[i])} events in the last 30 days, {z[i]:.1f} "
                        f"robust SDs above this partner's typical {np.expm1(center[i]):.1f} "
                        "per 30 days"
                    ),
                }
            )
    if not rows:
        return empty_anomalies()
    out = pd.DataFrame(rows, columns=list(ANOMALY_COLUMNS))
    out["occurred_at"] = pd.to_datetime(out["occurred_at"])
    return out


def raw_measure_drift(
    tables: dict[str, pd.DataFrame], as_of: pd.Timestamp, config: MonitorConfig
) -> list[Check]:
    """Amounts and durations known in the window versus those known before it, per measure.

    The batch's own history is the reference here (the training profile holds features, not
    raw rows): PSI on the deciles of the earlier log1p values and the exact two-sample KS test
    (rows are events, independent enough), Bonferroni-adjusted over the measures. Catches
    shifts like inflated deal sizes that onboarding features see through few partners.
    """
    start = as_of - pd.Timedelta(days=config.window_days)
    found = []
    for table, measure, _, values_of in MEASURES:
        if table not in tables:
            continue
        frame = tables[table]
        when = pd.to_datetime(frame[MEASURE_TIME[measure]]).to_numpy()
        x = log1p_nonneg(values_of(frame))
        ok = np.isfinite(x) & ~pd.isna(when)
        before, now = x[ok & (when < start)], x[ok & (when >= start) & (when < as_of)]
        found.append((table, measure, before, now))
    checks = []
    m = max(sum(1 for *_, b, n in found if min(b.size, n.size) >= config.min_rows), 1)
    for table, measure, before, now in found:
        name = f"drift.raw.{table}.{measure}"
        sizes = f"{before.size:,} earlier vs {now.size:,} in the window"
        if min(before.size, now.size) < config.min_rows:
            checks.append(psi_check(name, f"{table}.{measure}", "all", None, None, sizes, config))
            continue
        edges = np.unique(np.quantile(before, np.linspace(0, 1, 11)[1:-1]))
        r = np.bincount(np.searchsorted(edges, before), minlength=edges.size + 1)
        c = np.bincount(np.searchsorted(edges, now), minlength=edges.size + 1)
        value = psi(r, c)
        from scipy import stats  # imported only by the monitor's drift check

        test = stats.ks_2samp(before, now)
        p = min(1.0, float(test.pvalue) * m)
        shift = float(np.expm1(np.median(now)) - np.expm1(np.median(before)))
        detail = (
            f"{table}.{measure}: PSI {value:.3f}, KS D {test.statistic:.3f} (adjusted p "
            f"{p:.2g}, {sizes}); median {np.expm1(np.median(before)):,.1f} -> "
            f"{np.expm1(np.median(now)):,.1f} ({shift:+,.1f})"
        )
        checks.append(psi_check(name, f"{table}.{measure}", "all", value, p, detail, config))
    return checks


def table_volumes(
    tables: dict[str, pd.DataFrame], start: pd.Timestamp, end: pd.Timestamp
) -> dict[str, int]:
    """Rows per table whose event time falls in [start, end)."""
    out = {}
    for table, (_, col) in EVENT_TIME.items():
        if table in tables:
            when = pd.to_datetime(tables[table][col])
            out[table] = int(((when >= start) & (when < end)).sum())
    return out


def volume_checks(
    current: dict[str, int],
    previous: dict[str, int],
    current_days: float,
    previous_days: float,
    config: MonitorConfig,
    source: str,
) -> list[Check]:
    """Rows per day of each table versus the previous batch (ratio either way).

    Args:
        current: Rows per table in this batch's window.
        previous: Rows per table in the previous batch's window.
        current_days: Length of this batch's window in days.
        previous_days: Length of the previous window in days.
        config: Ratio thresholds.
        source: Where the previous counts come from (for the detail text).
    """
    checks = []
    for table, now in current.items():
        before = previous.get(table)
        if before is None:
            change, status = None, "skip"
            detail = f"{table}: no previous batch to compare with"
        else:
            rate_now = (now + 0.5) / current_days
            rate_before = (before + 0.5) / previous_days
            ratio = rate_now / rate_before
            change = max(ratio, 1 / ratio)
            status = "ok"
            if table == "partners":
                status = "info"  # signings come in bursts; reported, not judged
            elif change >= config.volume_alarm_ratio:
                status = "alarm"
            elif change >= config.volume_warn_ratio:
                status = "warn"
            direction = "spike" if ratio > 1 else "drop"
            detail = (
                f"{table}: {now:,} rows ({rate_now:.1f}/day) vs {before:,} ({rate_before:.1f}"
                f"/day) in {source}: {direction} x{ratio:.2f}"
            )
        checks.append(
            Check(
                f"quality.volume.{table}",
                "quality",
                table,
                "all",
                "volume_ratio",
                change,
                config.volume_warn_ratio,
                config.volume_alarm_ratio,
                None,
                status,
                detail,
            )
        )
    return checks


def staleness_checks(
    tables: dict[str, pd.DataFrame], as_of: pd.Timestamp, config: MonitorConfig
) -> list[Check]:
    """Days between each table's newest event before as_of and as_of.

    The partners table (newest signing) is reported as ``info``: signings come in bursts.
    """
    checks = []
    for table, (_, col) in EVENT_TIME.items():
        if table not in tables:
            continue
        when = pd.to_datetime(tables[table][col])
        when = when[when < as_of]
        if when.empty:
            days, newest = None, "no event before as_of"
        else:
            days = float((as_of - when.max()) / DAY)
            newest = f"newest event {when.max():%Y-%m-%d %H:%M}"
        status = "alarm" if days is None else "ok"
        if table == "partners":
            # signings are not an event stream: a quiet month of signings is news, not staleness
            status = "info"
        elif days is not None and days >= config.stale_alarm_days:
            status = "alarm"
        elif days is not None and days >= config.stale_warn_days:
            status = "warn"
        said = (
            f"{table}: {newest}"
            if days is None
            else f"{table}: {newest}, {days:.1f} days before as_of"
        )
        checks.append(
            Check(
                f"staleness.days.{table}",
                "staleness",
                table,
                "all",
                "days_stale",
                days,
                config.stale_warn_days,
                config.stale_alarm_days,
                None,
                status,
                said,
            )
        )
    return checks


NOT_RANGE_CHECKED = ("age_days",)
"""Features the range check leaves out. ``age_days`` is the batch's own clock, not an input:
a partner signed days before the batch is younger than the youngest training snapshot (30
days by default) every month, by construction (the policy marks it ``provisional``), and one
older than the trained ages is out of scope (flagged, and not range-checked). It flagged every
new partner as anomalous and warned in every monthly monitor run of a steady program."""


def training_range(spec: dict, margin: float) -> tuple[float, float, bool] | None:
    """(low, high, log scale) bounds of a numeric profile column, or None without a range."""
    if spec.get("kind") != "numeric" or spec.get("min") is None:
        return None
    lo, hi = float(spec["min"]), float(spec["max"])
    log = bool(spec.get("nonnegative"))
    if log:
        lo, hi = float(np.log1p(lo)), float(np.log1p(hi))
    width = max(hi - lo, 1e-9)
    return lo - margin * width, hi + margin * width, log


def out_of_range(features: pd.DataFrame, columns: dict[str, dict], margin: float) -> pd.DataFrame:
    """Feature values outside the widened training range, one anomaly row per value.

    Args:
        features: Rows with partner_id, as_of and feature columns.
        columns: The reference profile's ``columns``.
        margin: Share of the range added on both sides.
    """
    frames = []
    for name, spec in columns.items():
        bounds = training_range(spec, margin)
        if bounds is None or name not in features or name.startswith("pred_"):
            continue
        if name in NOT_RANGE_CHECKED:
            continue
        lo, hi, log = bounds
        x = pd.to_numeric(features[name], errors="coerce").to_numpy(dtype=float)
        t = log1p_nonneg(x) if log else x
        bad = np.flatnonzero(np.isfinite(t) & ((t < lo) | (t > hi)))
        if bad.size == 0:
            continue
        lo_v, hi_v = float(spec["min"]), float(spec["max"])
        frames.append(
            pd.DataFrame(
                {
                    "table": "features",
                    "record_id": "",
                    "partner_id": features["partner_id"].astype(str).to_numpy()[bad],
                    "occurred_at": pd.to_datetime(features["as_of"]).to_numpy()[bad],
                    "column": name,
                    "value": x[bad],
                    "score": np.nan,
                    "reason": [
                        f"feature {name} = {x[i]:,.4g} is outside the training range "
                        f"[{lo_v:,.4g}, {hi_v:,.4g}]"
                        for i in bad
                    ],
                },
                columns=list(ANOMALY_COLUMNS),
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else empty_anomalies()


def partner_flags(partner_ids, anomalies: pd.DataFrame, max_reasons: int = 3) -> pd.DataFrame:
    """``anomaly`` and ``anomaly_reason`` per partner from an anomaly list.

    Args:
        partner_ids: Partners to flag (one output row each, in this order).
        anomalies: Anomaly rows (:data:`ANOMALY_COLUMNS`).
        max_reasons: Reasons joined into ``anomaly_reason`` (the most extreme first), the
            rest counted.

    Returns:
        partner_id, anomaly (bool), anomaly_reason (empty text when not anomalous).
    """
    ids = pd.Series(partner_ids, dtype=object).astype(str).reset_index(drop=True)
    text = pd.Series(dtype=object)
    if not anomalies.empty:
        # most extreme first per partner (equal scores in reason order: not in the rows' order,
        # whose record ids of tables without an id column are positions that a partner group
        # numbers differently), each distinct reason once (first occurrence), the
        # first max_reasons joined and the rest counted: whole-column operations, no loop per
        # partner (the per-partner loop is the twin in tests/features/test_anomaly_flags.py)
        ordered = pd.DataFrame(
            {
                "partner_id": anomalies["partner_id"].astype(str).to_numpy(dtype=object),
                "reason": anomalies["reason"].astype(str).to_numpy(dtype=object),
                "_s": anomalies["score"].fillna(np.inf).to_numpy(dtype=float),
            }
        ).sort_values(["partner_id", "_s", "reason"], ascending=[True, False, True], kind="stable")
        ordered = ordered.drop_duplicates(["partner_id", "reason"], keep="first")
        rank = ordered.groupby("partner_id", sort=False).cumcount().to_numpy()
        total = ordered.groupby("partner_id", sort=False)["reason"].size()
        shown = ordered[rank < max_reasons].groupby("partner_id", sort=False)["reason"]
        text = shown.agg("; ".join)
        more = total.reindex(text.index) - max_reasons
        suffix = np.where(more > 0, "; and " + more.astype(str) + " more", "")
        text = text + suffix
    # object before the fill: no reason matched (an empty batch) maps to float NaN, which
    # pandas 3 fills with text under a Pandas4Warning and pandas 4 will refuse
    reason = ids.map(text.to_dict()).astype(object).fillna("")
    return pd.DataFrame(
        {"partner_id": ids, "anomaly": (reason != "").to_numpy(), "anomaly_reason": reason}
    )


def raw_anomalies(
    tables: dict[str, pd.DataFrame],
    as_of: Cutoff,
    config: MonitorConfig,
    robust: dict | None = None,
) -> pd.DataFrame:
    """The raw-table part of :func:`batch_anomalies` (table and per-partner outliers).

    The table outliers need whole tables (a table's median and spread); a distributed job
    computes those once (``robust``: see :func:`table_outliers`) and calls this per partner
    group, like :func:`row_anomalies`. The per-partner checks read each partner's own rows.
    """
    cache: dict = {}  # each table's rows before as_of, selected once for both checks
    rows, _ = table_outliers(tables, as_of, config, robust, cache=cache)
    outliers = partner_outliers(tables, as_of, config, cache=cache)
    frames = [f for f in (rows, outliers) if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else empty_anomalies()


def row_anomalies(
    raw_rows: pd.DataFrame,
    features: pd.DataFrame | None,
    reference: dict | None,
    config: MonitorConfig,
) -> pd.DataFrame:
    """Raw-row anomalies plus features outside the training range, sorted for flagging."""
    frames = [raw_rows]
    if features is not None and reference is not None and not features.empty:
        # partners older than the trained ages are out of scope: their to-date counts exceed
        # the training range by construction
        in_scope = features["age_days"].to_numpy(dtype=float) <= max(reference["ages"])
        frames.append(out_of_range(features[in_scope], reference["columns"], config.range_margin))
    frames = [f for f in frames if not f.empty]
    out = pd.concat(frames, ignore_index=True) if frames else empty_anomalies()
    key = ["partner_id", "table", "column", "record_id"]
    out = out.sort_values(key, kind="stable").reset_index(drop=True)
    # one row per record and column: a value that is an outlier of its table and of its
    # partner's own history is listed once, with both reasons, at its most extreme score
    dup = out.duplicated(key, keep=False).to_numpy() & out["record_id"].notna().to_numpy()
    if dup.any():
        both = out[dup]
        reasons = both.groupby(key, sort=False)["reason"].agg(
            lambda r: "; ".join(dict.fromkeys(r.astype(str)))
        )
        first = both.sort_values("score", ascending=False, kind="stable").drop_duplicates(key)
        first = first.set_index(key)
        first["reason"] = reasons.reindex(first.index).to_numpy()
        merged = first.reset_index()[list(out.columns)]
        out = pd.concat([out[~dup], merged], ignore_index=True)
        out = out.sort_values(key, kind="stable").reset_index(drop=True)
    return out


def anomaly_columns(
    scored: pd.DataFrame, raw_rows: pd.DataFrame, reference: dict | None, config: MonitorConfig
) -> pd.DataFrame:
    """``anomaly`` and ``anomaly_reason`` aligned with ``scored``'s rows."""
    ids = scored["partner_id"].astype(str)
    mine = raw_rows[isin_text(raw_rows["partner_id"].astype(str), ids)]
    anomalies = row_anomalies(mine, scored, reference, config)
    flags = partner_flags(scored["partner_id"], anomalies)
    return pd.DataFrame(
        {
            "anomaly": flags["anomaly"].to_numpy(dtype=bool),
            "anomaly_reason": flags["anomaly_reason"].to_numpy(dtype=object),
        },
        index=scored.index,
    )
