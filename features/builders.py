"""Point-in-time feature builders, one per source table.

Every builder takes the raw tables and a :class:`Snapshots` context and returns a dict of feature
columns aligned to the snapshots. The machinery is a sorted *timeline* per event kind: events are
sorted by (partner, time) and encoded as one exact int64 key, so "events of partner p strictly
before t" is one ``searchsorted``. No event at or after ``as_of`` can reach a feature: the lookup
key is (partner, as_of) with ``side="left"``.

Aggregates are computed per partner, never across partners: counts are differences of positions,
and sums add each snapshot's own run of events [lo, hi) one after the other in time order (ties in
input order), starting from 0.0. A partner's value therefore depends only on its own rows before
as_of, and is byte-identical whatever other partners' rows, or rows dated at/after as_of, exist.

Times are compared at one-second resolution (both sides floored to the second): an event in the
same second as as_of counts as at as_of, never before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

DAY = 86_400
WINDOW_DAYS = 30
NAT = np.iinfo(np.int64).min
"""Seconds value standing for a missing timestamp."""
_INT64_MAX = int(np.iinfo(np.int64).max)


def to_seconds(values: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
    """Datetimes (any unit) -> int64 seconds since the epoch (floored); NaT -> :data:`NAT`."""
    arr = pd.to_datetime(pd.Series(values)).to_numpy(dtype="datetime64[s]")
    out = arr.astype("int64")
    out[np.isnat(arr)] = NAT
    return out


def lookup_codes(ids: pd.Series, value_set: pa.Array) -> np.ndarray:
    """Position of each id in ``value_set`` (-1 when absent), hashed in Arrow, no Python str."""
    arr = pa.array(ids.astype("str"), type=pa.string()) if len(ids) else pa.array([], pa.string())
    found = pc.index_in(arr, value_set=value_set)
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def runs(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten the index runs [lo[i], hi[i]) of every snapshot i.

    Returns:
        (snapshot number, timeline index) of every element of every run, runs in snapshot order
        and each run in timeline (time) order.
    """
    n = np.maximum(hi - lo, 0)
    total = int(n.sum())
    seg = np.repeat(np.arange(len(n)), n)
    offsets = np.cumsum(n) - n
    return seg, np.arange(total) - offsets[seg] + lo[seg]


def run_sums(seg: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Sum of ``values`` per snapshot number ``seg``, added one after the other from 0.0.

    ``np.bincount`` accumulates sequentially in array order, so a run's sum is exactly the
    left-to-right float sum of its values (the same as a plain Python loop), no matter what
    other runs hold.
    """
    return np.bincount(seg, weights=values, minlength=n).astype(float)


def run_medians(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Median of ``values`` over each snapshot's timeline run [lo, hi) (NaN for an empty run).

    The runs are gathered into one array, sorted by (snapshot, value) and the middle element(s)
    of every run read off. Missing values must be left out (they would sort last and count).
    """
    n = np.maximum(hi - lo, 0)
    out = np.full(len(lo), np.nan)
    seg, idx = runs(lo, hi)
    if len(idx) == 0:
        return out
    offsets = np.cumsum(n) - n
    vals = values[idx]
    vals = vals[np.lexsort((vals, seg))]
    has = n > 0
    o, m = offsets[has], n[has]
    out[has] = midpoint(vals[o + (m - 1) // 2], vals[o + m // 2])
    return out


def balance(a: np.ndarray, b: np.ndarray, defined: np.ndarray | bool = True) -> np.ndarray:
    """(b - a) / (b + a) for a, b >= 0 computed on a / m, b / m (m = max): NaN if both 0."""
    m = np.maximum(a, b)
    ok = defined & (m > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        x, y = a / np.where(ok, m, 1.0), b / np.where(ok, m, 1.0)
        return np.where(ok, (y - x) / (y + x), np.nan)


def midpoint(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a + b) / 2 for a <= b without overflow (finite inputs give a finite result)."""
    with np.errstate(over="ignore", invalid="ignore"):
        same_sign = (a >= 0) == (b >= 0)
        return np.where(same_sign, a + (b - a) / 2, (a + b) / 2)


@dataclass
class Snapshots:
    """Snapshot rows (partner, as_of) with the encodings the timelines need.

    Attributes:
        partner_ids: Partner id per snapshot.
        codes: Partner code per snapshot (index into ``partner_index``).
        as_of: Cut-off per snapshot, seconds since the epoch.
        signed: Signing time per snapshot, seconds since the epoch.
        partner_index: Partner ids in code order.
        partner_signed: Signing time per partner code (None: only the snapshots' are known).
    """

    partner_ids: np.ndarray
    codes: np.ndarray
    as_of: np.ndarray
    signed: np.ndarray
    partner_index: pd.Index
    partner_signed: np.ndarray | None = None
    _codes: dict = field(default_factory=dict, repr=False)

    def codes_of(self, table: str, frame: pd.DataFrame) -> np.ndarray:
        """Partner codes of a table's rows (-1 for unknown partners), computed once per table."""
        if table not in self._codes:
            self._codes[table] = lookup_codes(frame["partner_id"], self._index_arrow)
        return self._codes[table]

    @property
    def _index_arrow(self) -> pa.Array:
        if "__index__" not in self._codes:
            ids = self.partner_index.to_numpy(dtype=object)
            self._codes["__index__"] = pa.array(ids, type=pa.string())
        return self._codes["__index__"]

    @classmethod
    def from_frame(cls, snapshots: pd.DataFrame, partners: pd.DataFrame) -> Snapshots:
        """Encode ``snapshots`` (partner_id, as_of) against the partners table."""
        # sorted ids: snapshots sorted by partner give increasing keys (fast searchsorted)
        index = pd.Index(np.sort(partners["partner_id"].astype(object).to_numpy()))
        codes = lookup_codes(
            snapshots["partner_id"], pa.array(index.to_numpy(dtype=object), type=pa.string())
        )
        if (codes < 0).any():
            missing = snapshots["partner_id"].to_numpy()[codes < 0][0]
            raise ValueError(f"snapshot partner_id {missing!r} is not in the partners table")
        as_of = to_seconds(snapshots["as_of"])
        if (as_of == NAT).any():
            raise ValueError("snapshot as_of is missing")
        signed_all = to_seconds(partners["signed_at"])
        signed_all = signed_all[np.argsort(partners["partner_id"].astype(object).to_numpy())]
        return cls(
            partner_ids=snapshots["partner_id"].astype(str).to_numpy(),
            codes=codes.astype(np.int64),
            as_of=as_of,
            signed=signed_all[codes],
            partner_index=index,
            partner_signed=signed_all,
        )

    def __len__(self) -> int:
        return len(self.codes)

    def days_since_signing(self, seconds: np.ndarray) -> np.ndarray:
        """Days from signing to ``seconds`` (float)."""
        return (seconds - self.signed) / DAY

    @property
    def age_days(self) -> np.ndarray:
        """Onboarding age at as_of, days (float)."""
        return self.days_since_signing(self.as_of)


class _TimeAxis:
    """Exact int64 offsets of times within one timeline, so (partner, time) packs into one key.

    Event times map to offsets that keep their order and ties; a query time maps to an offset
    that compares with every event offset exactly as the query time compares with the event
    time. Offsets lie in [0, width), so ``code * width + offset`` never crosses into another
    partner's keys. When ``partners * width`` fits in int64 the offset is the time itself
    (shifted); otherwise (absurd time spans) times are replaced by their ranks.
    """

    def __init__(self, seconds: np.ndarray, n_codes: int) -> None:
        self.uniq: np.ndarray | None = None
        if len(seconds) == 0:
            self.lo, self.hi, self.width = 0, 0, 1
            return
        lo, hi = int(seconds.min()), int(seconds.max())
        width = hi - lo + 3  # events in [1, width - 2], queries clipped to [0, width - 1]
        if (
            lo - 1 >= -_INT64_MAX - 1
            and hi + 1 <= _INT64_MAX
            and max(n_codes, 1) * width <= (_INT64_MAX)
        ):
            self.lo, self.hi, self.width = lo, hi, width
        else:
            self.uniq = np.unique(seconds)
            self.lo, self.hi, self.width = 0, 0, 2 * len(self.uniq) + 3

    def events(self, seconds: np.ndarray) -> np.ndarray:
        """Offsets of event times."""
        if self.uniq is None:
            return seconds - np.int64(self.lo - 1)
        return 2 * np.searchsorted(self.uniq, seconds).astype(np.int64) + 2

    def queries(self, seconds: np.ndarray) -> np.ndarray:
        """Offsets of query times (any int64 seconds)."""
        if self.uniq is None:
            clipped = np.clip(seconds, self.lo - 1, self.hi + 1)
            return clipped - np.int64(self.lo - 1)
        at = np.searchsorted(self.uniq, seconds).astype(np.int64)
        exact = self.uniq[np.minimum(at, len(self.uniq) - 1)] == seconds
        return 2 * at + np.where(exact, 2, 1)


class Timeline:
    """Events of one kind sorted by (partner, time), ties in input order.

    Attributes:
        keys: Sorted int64 keys ``code * width + time offset``.
        times: Event times (seconds) in timeline order.
        rows: Index of each timeline event in the arrays given to the constructor.
        values: Value columns in timeline order.
    """

    def __init__(
        self,
        snaps: Snapshots,
        codes: np.ndarray,
        times: pd.Series | np.ndarray,
        values: dict[str, np.ndarray] | None = None,
    ) -> None:
        codes = np.asarray(codes, dtype=np.int64)
        secs = (
            times
            if isinstance(times, np.ndarray) and times.dtype == np.int64
            else to_seconds(times)
        )
        keep = (codes >= 0) & (secs != NAT)
        kept = None if keep.all() else np.flatnonzero(keep)
        if kept is not None:
            codes, secs = codes[kept], secs[kept]
        self.axis = _TimeAxis(secs, len(snaps.partner_index))
        width = np.int64(self.axis.width)
        keys = codes * width + self.axis.events(secs)
        # rows usually come sorted or nearly sorted by time, which the stable sort (timsort)
        # handles fastest; stable keeps ties in input order, so sums add them in a fixed order
        order = None
        if len(keys) and (np.diff(keys) < 0).any():
            order = np.argsort(keys, kind="stable")
            keys, secs = keys[order], secs[order]
        self.keys = keys
        self.times = secs
        self._kept, self._order, self._rows = kept, order, None
        self.values: dict[str, np.ndarray] = {
            name: self._take(np.asarray(vals, dtype=float)) for name, vals in (values or {}).items()
        }
        self.snaps = snaps
        self._width = width
        self._at: np.ndarray | None = None
        self._start = np.searchsorted(self.keys, snaps.codes * width, side="left")

    def _take(self, column: np.ndarray) -> np.ndarray:
        """A column given to the constructor, in timeline order (events dropped left out)."""
        column = column if self._kept is None else column[self._kept]
        return column if self._order is None else column[self._order]

    @property
    def rows(self) -> np.ndarray:
        """Index of each timeline event in the arrays given to the constructor."""
        if self._rows is None:
            kept = np.arange(len(self.keys)) if self._kept is None else self._kept
            self._rows = kept if self._order is None else kept[self._order]
        return self._rows

    def _query(self, seconds: np.ndarray) -> np.ndarray:
        return self.snaps.codes * self._width + self.axis.queries(seconds)

    def position(self, seconds: np.ndarray, side: str = "left") -> np.ndarray:
        """Index of the partner's first event at/after (side=left) or after (right) ``seconds``."""
        if seconds is self.snaps.as_of and side == "left":
            if self._at is None:
                self._at = np.searchsorted(self.keys, self._query(seconds))
            return self._at
        return np.searchsorted(self.keys, self._query(seconds), side=side)

    @property
    def start(self) -> np.ndarray:
        """Index of each snapshot's partner's first event."""
        return self._start

    def count_before(self, seconds: np.ndarray | None = None) -> np.ndarray:
        """Events of the partner strictly before ``seconds`` (default: as_of)."""
        t = self.snaps.as_of if seconds is None else seconds
        return (self.position(t) - self._start).astype(float)

    def count_between(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Events of the partner with lo <= t < hi."""
        return np.maximum(self.position(hi) - self.position(lo), 0).astype(float)

    def count_window(self, days: float) -> np.ndarray:
        """Events in [as_of - days, as_of)."""
        return self.count_between(self.snaps.as_of - int(days * DAY), self.snaps.as_of)

    def sum_range(self, name: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Sum of a value column over each snapshot's timeline run [lo, hi), in time order."""
        seg, idx = runs(lo, hi)
        return run_sums(seg, self.values[name][idx], len(self.snaps))

    def sum_before(self, name: str, seconds: np.ndarray | None = None) -> np.ndarray:
        """Sum of a value column over events strictly before ``seconds`` (default as_of)."""
        t = self.snaps.as_of if seconds is None else seconds
        return self.sum_range(name, self._start, self.position(t))

    def sum_between(self, name: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Sum of a value column over events with lo <= t < hi."""
        return self.sum_range(name, self.position(lo), self.position(hi))

    def median_before(self, name: str) -> np.ndarray:
        """Median of a value column over the partner's events before as_of (NaN if none).

        Each snapshot's events are a contiguous run of the timeline; the runs are gathered into
        one array, sorted by (snapshot, value) and the middle element(s) of every run read off.
        Missing values must be left out of the timeline (they would sort last and count).
        """
        return run_medians(self.values[name], self._start, self.position(self.snaps.as_of))

    def gap_median_days(self) -> np.ndarray:
        """Median days between consecutive events before as_of (NaN with fewer than two)."""
        gaps = np.empty(len(self.times))
        if len(gaps):
            gaps[0] = np.nan
            gaps[1:] = np.diff(self.times) / DAY  # the gap before event i; the first is unused
        return run_medians(gaps, self._start + 1, self.position(self.snaps.as_of))

    def gap_mean_days(self) -> np.ndarray:
        """Mean days between consecutive events before as_of: (last - first) / (n - 1)."""
        n = self.count_before()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n >= 2, (self.last_time() - self.first_time()) / (n - 1) / DAY, np.nan)

    def first_value(self, name: str) -> np.ndarray:
        """Value of the partner's first event if it is before as_of, else NaN."""
        out = np.full(len(self.snaps), np.nan)
        has = self.count_before() > 0
        out[has] = self.values[name][self._start[has]]
        return out

    def last_value(self, name: str) -> np.ndarray:
        """Value of the partner's latest event before as_of (last in input order on ties)."""
        hi = self.position(self.snaps.as_of)
        out = np.full(len(self.snaps), np.nan)
        has = hi > self._start
        out[has] = self.values[name][hi[has] - 1]
        return out

    def days_since_last(self) -> np.ndarray:
        """Days from the partner's latest event before as_of to as_of (NaN if none)."""
        return (self.snaps.as_of - self.last_time()) / DAY

    def trend(self, days: int, name: str | None = None) -> np.ndarray:
        """Second half vs first half of the last ``min(days, age)`` days before as_of.

        The window [as_of - 2h, as_of) with h = min(days, age) // 2 (whole seconds) is cut into
        [as_of - 2h, as_of - h) and [as_of - h, as_of); counts (or sums of ``name``) a, b give
        (b - a) / (b + a), from -1 (all in the first half) to 1 (all in the second); NaN when
        both are 0 or the partner is not yet 2 seconds old. Computed on a / m, b / m with
        m = max(a, b), which cannot overflow.
        """
        age = np.maximum(self.snaps.as_of - self.snaps.signed, 0)
        half = np.minimum(age, days * DAY) // 2
        t, mid, lo = self.snaps.as_of, self.snaps.as_of - half, self.snaps.as_of - 2 * half
        p_lo, p_mid, p_t = self.position(lo), self.position(mid), self.position(t)
        if name is None:
            a, b = (p_mid - p_lo).astype(float), (p_t - p_mid).astype(float)
        else:
            a, b = self.sum_range(name, p_lo, p_mid), self.sum_range(name, p_mid, p_t)
        return balance(a, b, half > 0)

    def active_period_share(self, days: int = WINDOW_DAYS) -> np.ndarray:
        """Share of the ``days``-long periods since signing that hold an event before as_of.

        Periods are [signed + k * days, signed + (k + 1) * days), k >= 0; the one holding as_of
        counts as elapsed. Events before signing count in no period. NaN if as_of <= signed.
        """
        period = np.int64(days * DAY)
        if self.snaps.partner_signed is None:
            raise ValueError("active_period_share needs the partners' signing times")
        partner_signed = self.snaps.partner_signed
        bounds = np.searchsorted(self.keys, np.arange(len(partner_signed) + 1) * self._width)
        sizes = np.diff(bounds)
        signed = np.repeat(partner_signed, sizes)  # each event's partner's signing time
        since = self.times - signed
        if (partner_signed == NAT).any():
            since[signed == NAT] = -1  # no signing time: no period
        k = since // period  # negative before signing
        # the first event of each (partner, period) on or after signing: counting those before
        # as_of counts the active periods
        new = since >= 0
        new[1:] &= k[1:] != k[:-1]
        firsts = bounds[:-1][sizes > 0]
        new[firsts] = since[firsts] >= 0
        flagged = np.flatnonzero(new)
        active = np.searchsorted(flagged, self.position(self.snaps.as_of)) - np.searchsorted(
            flagged, self._start
        )
        age = self.snaps.as_of - self.snaps.signed
        elapsed = -(-age // period)  # ceil for age > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(age > 0, active / np.maximum(elapsed, 1), np.nan)

    def first_time(self) -> np.ndarray:
        """Time of the partner's first event if it is before as_of, else NaN."""
        has = self.count_before() > 0
        idx = np.minimum(self._start, max(len(self.times) - 1, 0))
        out = np.full(len(self.snaps), np.nan)
        if len(self.times):
            out[has] = self.times[idx[has]]
        return out

    def last_time(self) -> np.ndarray:
        """Time of the partner's latest event before as_of, else NaN."""
        hi = self.position(self.snaps.as_of)
        has = hi > self._start
        out = np.full(len(self.snaps), np.nan)
        out[has] = self.times[hi[has] - 1]
        return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _numeric(frame: pd.DataFrame, col: str) -> np.ndarray:
    """A numeric column as float (NaN where missing; all NaN when the optional column is absent)."""
    if col not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)


def _open_pipeline(
    snaps: Snapshots, created: Timeline, closed_s: np.ndarray, amount: np.ndarray
) -> np.ndarray:
    """Sum of amounts of deals created before as_of and not closed before as_of.

    Summed directly over each snapshot's deals in creation order (never created-sum minus
    closed-sum, a difference that cancels).
    """
    seg, idx = runs(created.start, created.position(snaps.as_of))
    rows = created.rows[idx]
    closed = closed_s[rows]
    still_open = (closed == NAT) | (closed >= snaps.as_of[seg])
    return run_sums(seg[still_open], amount[rows[still_open]], len(snaps))


def _days_after_signing(snaps: Snapshots, seconds: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(seconds), np.nan, (seconds - snaps.signed) / DAY)


def _per30(count: np.ndarray, snaps: Snapshots) -> np.ndarray:
    return count / np.maximum(snaps.age_days, 1.0) * WINDOW_DAYS


Builder = Callable[[dict[str, pd.DataFrame], Snapshots], dict[str, np.ndarray]]


def build_partners(tables: dict[str, pd.DataFrame], snaps: Snapshots) -> dict[str, np.ndarray]:
    """Profile and assessed fit (values as given at onboarding)."""
    partners = tables["partners"].set_index(tables["partners"]["partner_id"].astype(str))
    rows = partners.reindex(snaps.partner_ids)

    def num(col: str) -> np.ndarray:
        if col not in rows:
            return np.full(len(snaps), np.nan)
        return pd.to_numeric(rows[col], errors="coerce").to_numpy(dtype=float)

    def cat(col: str) -> np.ndarray:
        return rows[col].astype(object).where(rows[col].notna(), None).to_numpy(dtype=object)

    return {
        "age_days": np.floor(snaps.age_days),
        "tier": cat("tier"),
        "region": cat("region"),
        "industry": cat("industry"),
        "partner_type": cat("partner_type"),
        "partners_market_alignment": num("market_alignment"),
        "partners_channel_reach": num("channel_reach"),
        "partners_adoption_potential": num("product_adoption_potential"),
    }


def build_marketing(tables: dict[str, pd.DataFrame], snaps: Snapshots) -> dict[str, np.ndarray]:
    """Joint-marketing commitments made and kept."""
    mc = tables["marketing_commitments"]
    codes = snaps.codes_of("marketing_commitments", mc)
    made = Timeline(snaps, codes, mc["committed_at"])
    delivered = to_seconds(mc["delivered_at"])
    due = to_seconds(mc["due_at"])
    on_time = (delivered != NAT) & (delivered <= due)
    by_due = Timeline(snaps, codes, due)
    kept = Timeline(snaps, codes[on_time], due[on_time])
    return {
        "marketing_commitments_count_todate": made.count_before(),
        "marketing_adherence_rate_todate": _ratio(kept.count_before(), by_due.count_before()),
        "marketing_commitments_90d": made.count_window(90),
        "marketing_commitments_days_since_last": made.days_since_last(),
    }


def build_trainings(tables: dict[str, pd.DataFrame], snaps: Snapshots) -> dict[str, np.ndarray]:
    """Enrolment, completion and certification."""
    tr = tables["trainings"]
    codes = snaps.codes_of("trainings", tr)
    done = to_seconds(tr["completed_at"])
    cert = tr["is_certification"].astype(bool).to_numpy()
    enrolled = Timeline(snaps, codes, tr["enrolled_at"])
    completed = Timeline(snaps, codes, done)
    certified = Timeline(snaps, codes[cert], done[cert])
    return {
        "trainings_enrolled_todate": enrolled.count_before(),
        "trainings_completion_rate_todate": _ratio(
            completed.count_before(), enrolled.count_before()
        ),
        "trainings_certifications_todate": certified.count_before(),
        "trainings_days_to_first_completion": _days_after_signing(snaps, completed.first_time()),
        "trainings_days_to_first_certification": _days_after_signing(snaps, certified.first_time()),
        "trainings_completed_90d": completed.count_window(90),
        "trainings_days_since_last_completion": completed.days_since_last(),
    }


def build_activities(tables: dict[str, pd.DataFrame], snaps: Snapshots) -> dict[str, np.ndarray]:
    """CRM touchpoints: frequency, recency, trend, responsiveness and collaboration."""
    act = tables["activities"]
    hours = _numeric(act, "response_hours")
    codes = snaps.codes_of("activities", act)
    when = to_seconds(act["occurred_at"])
    tl = Timeline(snaps, codes, when)
    # a response time is known once the partner has responded: occurred_at + response_hours <
    # as_of, i.e. hours * 3600 < (as_of - occurred_at) in seconds; floor(hours * 3600) gives the
    # same comparison in whole seconds. Responses arriving after the latest as_of never count
    # (and would overflow int64 for huge values): they are left out.
    latest = snaps.as_of.max() if len(snaps) else NAT
    with np.errstate(over="ignore"):
        delay = hours * 3600
    with np.errstate(invalid="ignore"):
        answered = ~np.isnan(delay) & (when != NAT) & (delay < (latest - when).astype(float))
    replied = when[answered] + np.floor(delay[answered]).astype(np.int64)
    responses = Timeline(snaps, codes[answered], replied, {"hours": hours[answered]})
    collab = act["activity_type"].isin(["co_sell", "joint_event"]).to_numpy()
    collab_tl = Timeline(snaps, codes[collab], when[collab])
    total = tl.count_before()
    last30 = tl.count_window(WINDOW_DAYS)
    rate_todate = _per30(total, snaps)
    recent_rate = last30 / np.minimum(np.maximum(snaps.age_days, 1.0), WINDOW_DAYS) * WINDOW_DAYS
    return {
        "activities_touchpoints_per30d_todate": rate_todate,
        "activities_touchpoints_30d": last30,
        "activities_trend_30d_vs_todate": _ratio(recent_rate, rate_todate),
        "activities_days_since_last": tl.days_since_last(),
        "activities_days_to_first": _days_after_signing(snaps, tl.first_time()),
        "activities_response_hours_median_todate": responses.median_before("hours"),
        "activities_collaborations_todate": collab_tl.count_before(),
        "activities_touchpoints_90d": tl.count_window(90),
        "activities_gap_mean_days_todate": tl.gap_mean_days(),
        "activities_active_periods_share_todate": tl.active_period_share(),
        "activities_touchpoints_trend_90d": tl.trend(90),
    }


def build_portal(tables: dict[str, pd.DataFrame], snaps: Snapshots) -> dict[str, np.ndarray]:
    """Partner-portal use."""
    pe = tables["portal_events"]
    tl = Timeline(snaps, snaps.codes_of("portal_events", pe), pe["occurred_at"])
    return {
        "portal_events_per30d_todate": _per30(tl.count_before(), snaps),
        "portal_events_30d": tl.count_window(WINDOW_DAYS),
        "portal_events_90d": tl.count_window(90),
        "portal_events_days_since_last": tl.days_since_last(),
        "portal_events_active_periods_share_todate": tl.active_period_share(),
        "portal_events_trend_90d": tl.trend(90),
    }


def build_feedback(tables: dict[str, pd.DataFrame], snaps: Snapshots) -> dict[str, np.ndarray]:
    """Qualitative feedback scores."""
    fb = tables["feedback"]
    score = _numeric(fb, "score")
    codes = snaps.codes_of("feedback", fb)
    when = to_seconds(fb["submitted_at"])
    tl = Timeline(snaps, codes, when)
    given = ~np.isnan(score)
    scored = Timeline(snaps, codes[given], when[given], {"score": score[given]})
    return {
        "feedback_score_mean_todate": _ratio(scored.sum_before("score"), scored.count_before()),
        "feedback_count_todate": tl.count_before(),
        "feedback_score_last_todate": scored.last_value("score"),
        "feedback_days_since_last": tl.days_since_last(),
    }


def build_leads(tables: dict[str, pd.DataFrame], snaps: Snapshots) -> dict[str, np.ndarray]:
    """Lead generation, qualification and conversion."""
    leads = tables["leads"]
    codes = snaps.codes_of("leads", leads)
    created = Timeline(snaps, codes, leads["created_at"])
    qualified = Timeline(snaps, codes, leads["qualified_at"])
    converted = Timeline(snaps, codes, leads["converted_at"])
    n_created = created.count_before()
    return {
        "leads_created_todate": n_created,
        "leads_qualified_todate": qualified.count_before(),
        "leads_qualified_30d": qualified.count_window(WINDOW_DAYS),
        "leads_conversion_rate_todate": _ratio(converted.count_before(), n_created),
        "leads_days_to_first": _days_after_signing(snaps, created.first_time()),
        "leads_created_90d": created.count_window(90),
        "leads_days_since_last": created.days_since_last(),
    }


def build_deals(tables: dict[str, pd.DataFrame], snaps: Snapshots) -> dict[str, np.ndarray]:
    """Deals: volume, wins, size, velocity and open pipeline — closed facts only once closed."""
    deals = tables["deals"]
    amount = _numeric(deals, "amount")
    status = deals["status"].astype(str).to_numpy()
    created_s = to_seconds(deals["created_at"])
    closed_s = to_seconds(deals["closed_at"])
    is_closed = closed_s != NAT
    won = (status == "won") & is_closed
    cycle = np.where(is_closed, (closed_s - created_s) / DAY, np.nan)
    codes = snaps.codes_of("deals", deals)
    created = Timeline(snaps, codes, created_s)
    closed = Timeline(snaps, codes[is_closed], closed_s[is_closed], {"cycle": cycle[is_closed]})
    won_tl = Timeline(snaps, codes[won], closed_s[won], {"amount": amount[won]})
    n_closed = closed.count_before()
    n_won = won_tl.count_before()
    won_amount = won_tl.sum_before("amount")
    return {
        "deals_created_todate": created.count_before(),
        "deals_won_todate": n_won,
        "deals_won_amount_todate": won_amount,
        "deals_win_rate_todate": _ratio(n_won, n_closed),
        "deals_avg_won_size_todate": _ratio(won_amount, n_won),
        "deals_velocity_days_todate": closed.median_before("cycle"),
        "deals_open_pipeline_amount": _open_pipeline(snaps, created, closed_s, amount),
        "deals_days_to_first": _days_after_signing(snaps, created.first_time()),
        "deals_days_to_first_won": _days_after_signing(snaps, won_tl.first_time()),
        "deals_has_won_todate": (n_won > 0).astype(float),
        "deals_created_90d": created.count_window(90),
        "deals_active_periods_share_todate": created.active_period_share(),
        "deals_days_since_last_won": won_tl.days_since_last(),
        "deals_won_30d": won_tl.count_window(WINDOW_DAYS),
        "deals_won_90d": won_tl.count_window(90),
        "deals_won_amount_30d": won_tl.sum_between("amount", snaps.as_of - 30 * DAY, snaps.as_of),
        "deals_won_amount_90d": won_tl.sum_between("amount", snaps.as_of - 90 * DAY, snaps.as_of),
        "deals_first_won_amount": won_tl.first_value("amount"),
        "deals_won_gap_median_days_todate": won_tl.gap_median_days(),
        "deals_won_amount_trend_90d": won_tl.trend(90, "amount"),
    }


BUILDERS: dict[str, Builder] = {
    "partners": build_partners,
    "marketing_commitments": build_marketing,
    "trainings": build_trainings,
    "activities": build_activities,
    "portal_events": build_portal,
    "feedback": build_feedback,
    "leads": build_leads,
    "deals": build_deals,
}
