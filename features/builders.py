"""Point-in-time feature builders, one per source table.

Every builder takes the raw tables and a :class:`Snapshots` context and returns a dict of feature
columns aligned to the snapshots. The machinery is a sorted *timeline* per event kind: events are
sorted by (partner, time) and encoded as one int64 key, so "events of partner p strictly before
t" is one ``searchsorted`` and window sums are differences of cumulative sums. No event at or after
``as_of`` can reach a feature: the lookup key is (partner, as_of) with ``side="left"``.
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
# timeline key = partner code * 2**41 + (seconds clipped to +-2**40, about +-34,800 years, + 2**40)
_TIME_BITS = 41
_SHIFT = np.int64(1) << np.int64(_TIME_BITS)
_HALF = np.int64(1) << np.int64(_TIME_BITS - 1)
MAX_PARTNERS = 1 << (62 - _TIME_BITS)


def to_seconds(values: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
    """Datetimes (any unit) -> int64 seconds since the epoch; NaT -> :data:`NAT`."""
    arr = pd.to_datetime(pd.Series(values)).to_numpy(dtype="datetime64[s]")
    out = arr.astype("int64")
    out[np.isnat(arr)] = NAT
    return out


def _keys(codes: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Sortable (partner, time) keys; times beyond +-34,800 years are clipped (order kept)."""
    if len(seconds) and (seconds.min() < -_HALF or seconds.max() >= _HALF):
        seconds = np.clip(seconds, -_HALF, _HALF - 1)
    return codes * _SHIFT + (seconds + _HALF)


def lookup_codes(ids: pd.Series, value_set: pa.Array) -> np.ndarray:
    """Position of each id in ``value_set`` (-1 when absent), hashed in Arrow, no Python str."""
    arr = pa.array(ids.astype("str"), type=pa.string()) if len(ids) else pa.array([], pa.string())
    found = pc.index_in(arr, value_set=value_set)
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


@dataclass
class Snapshots:
    """Snapshot rows (partner, as_of) with the encodings the timelines need.

    Attributes:
        partner_ids: Partner id per snapshot.
        codes: Partner code per snapshot (index into ``partner_index``).
        as_of: Cut-off per snapshot, seconds since the epoch.
        signed: Signing time per snapshot, seconds since the epoch.
        partner_index: Partner ids in code order.
    """

    partner_ids: np.ndarray
    codes: np.ndarray
    as_of: np.ndarray
    signed: np.ndarray
    partner_index: pd.Index
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
        if len(partners) >= MAX_PARTNERS:
            raise ValueError(f"at most {MAX_PARTNERS - 1:,} partners per build")
        index = pd.Index(np.sort(partners["partner_id"].astype(object).to_numpy()))
        codes = lookup_codes(
            snapshots["partner_id"], pa.array(index.to_numpy(dtype=object), type=pa.string())
        )
        if (codes < 0).any():
            missing = snapshots["partner_id"].to_numpy()[codes < 0][0]
            raise ValueError(f"snapshot partner_id {missing!r} is not in the partners table")
        signed_all = to_seconds(partners["signed_at"])
        signed_all = signed_all[np.argsort(partners["partner_id"].astype(object).to_numpy())]
        return cls(
            partner_ids=snapshots["partner_id"].astype(str).to_numpy(),
            codes=codes.astype(np.int64),
            as_of=to_seconds(snapshots["as_of"]),
            signed=signed_all[codes],
            partner_index=index,
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


class Timeline:
    """Events of one kind sorted by (partner, time), with cumulative sums of value columns."""

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
        everything = bool(keep.all())
        if not everything:
            codes, secs = codes[keep], secs[keep]
        keys = _keys(codes, secs)
        # ties share a key: their order does not matter for counts and sums; rows usually come
        # sorted or nearly sorted by time, which the stable sort (timsort) handles fastest
        order = None
        if len(keys) and (np.diff(keys) < 0).any():
            order = np.argsort(keys, kind="stable")
        self.keys = keys if order is None else keys[order]
        self.times = secs if order is None else secs[order]
        self.cums: dict[str, np.ndarray] = {}
        self.values: dict[str, np.ndarray] = {}
        for name, vals in (values or {}).items():
            v = np.asarray(vals, dtype=float)
            v = v if everything else v[keep]
            v = v if order is None else v[order]
            self.values[name] = v
            self.cums[name] = np.concatenate([[0.0], np.cumsum(np.nan_to_num(v))])
            self.cums[name + "__n"] = np.concatenate([[0.0], np.cumsum(~np.isnan(v))])
        self.snaps = snaps
        self._at: np.ndarray | None = None
        self._start = np.searchsorted(self.keys, snaps.codes * _SHIFT, side="left")

    def position(self, seconds: np.ndarray, side: str = "left") -> np.ndarray:
        """Index of the first event of each snapshot's partner at/after ``seconds`` (side=left)."""
        if seconds is self.snaps.as_of and side == "left":
            if self._at is None:
                self._at = np.searchsorted(self.keys, _keys(self.snaps.codes, seconds))
            return self._at
        return np.searchsorted(self.keys, _keys(self.snaps.codes, seconds), side=side)

    def count_before(self, seconds: np.ndarray | None = None) -> np.ndarray:
        """Events of the partner strictly before ``seconds`` (default: as_of)."""
        t = self.snaps.as_of if seconds is None else seconds
        return (self.position(t) - self._start).astype(float)

    def count_window(self, days: float) -> np.ndarray:
        """Events in [as_of - days, as_of)."""
        hi = self.position(self.snaps.as_of)
        lo = self.position(self.snaps.as_of - int(days * DAY))
        return (hi - np.maximum(lo, self._start)).astype(float)

    def sum_before(self, name: str, seconds: np.ndarray | None = None) -> np.ndarray:
        """Sum of a value column over events strictly before ``seconds`` (default as_of)."""
        t = self.snaps.as_of if seconds is None else seconds
        cum = self.cums[name]
        return cum[self.position(t)] - cum[self._start]

    def nonnull_before(self, name: str) -> np.ndarray:
        """Number of non-missing values of a column before as_of."""
        cum = self.cums[name + "__n"]
        return cum[self.position(self.snaps.as_of)] - cum[self._start]

    def median_before(self, name: str) -> np.ndarray:
        """Median of a value column over the partner's events before as_of (NaN if none).

        Each snapshot's events are a contiguous run of the timeline; the runs are gathered into
        one array, sorted by (snapshot, value) and the middle element(s) of every run read off.
        Missing values must be left out of the timeline (they would sort last and count).
        """
        lo = self._start
        n = self.position(self.snaps.as_of) - lo
        out = np.full(len(self.snaps), np.nan)
        total = int(n.sum())
        if total == 0:
            return out
        offsets = np.cumsum(n) - n
        seg = np.repeat(np.arange(len(n)), n)
        idx = np.arange(total) - offsets[seg] + lo[seg]
        vals = self.values[name][idx]
        vals = vals[np.lexsort((vals, seg))]
        has = n > 0
        o, m = offsets[has], n[has]
        out[has] = (vals[o + (m - 1) // 2] + vals[o + m // 2]) / 2
        return out

    def sum_between(self, name: str | None, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Sum (or count when ``name`` is None) over events with lo < t <= hi."""
        a = self.position(lo, side="right")
        b = self.position(hi, side="right")
        if name is None:
            return (b - a).astype(float)
        cum = self.cums[name]
        return cum[b] - cum[a]

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


def money(values: np.ndarray) -> np.ndarray:
    """Amounts rounded to cents.

    Sums read off cumulative sums over a whole table carry float noise of the order of the
    table's total (an open pipeline of 3.7e-09 instead of 0); cents are exact enough.
    """
    return np.round(values, 2) + 0.0  # + 0.0 turns -0.0 into 0.0


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
    on_time = ((delivered != NAT) & (delivered <= due)).astype(float)
    by_due = Timeline(snaps, codes, due, {"on_time": on_time})
    return {
        "marketing_commitments_count_todate": made.count_before(),
        "marketing_adherence_rate_todate": _ratio(
            by_due.sum_before("on_time"), by_due.count_before()
        ),
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
    }


def build_activities(tables: dict[str, pd.DataFrame], snaps: Snapshots) -> dict[str, np.ndarray]:
    """CRM touchpoints: frequency, recency, trend, responsiveness and collaboration."""
    act = tables["activities"]
    hours = pd.to_numeric(act["response_hours"], errors="coerce").to_numpy(dtype=float)
    codes = snaps.codes_of("activities", act)
    when = to_seconds(act["occurred_at"])
    tl = Timeline(snaps, codes, when)
    # a response time is known once the partner has responded: occurred_at + response_hours
    answered = ~np.isnan(hours) & (when != NAT)
    replied = when[answered] + np.round(hours[answered] * 3600).astype(np.int64)
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
        "activities_days_since_last": np.where(
            np.isnan(tl.last_time()), np.nan, (snaps.as_of - tl.last_time()) / DAY
        ),
        "activities_days_to_first": _days_after_signing(snaps, tl.first_time()),
        "activities_response_hours_median_todate": responses.median_before("hours"),
        "activities_collaborations_todate": collab_tl.count_before(),
    }


def build_portal(tables: dict[str, pd.DataFrame], snaps: Snapshots) -> dict[str, np.ndarray]:
    """Partner-portal use."""
    pe = tables["portal_events"]
    tl = Timeline(snaps, snaps.codes_of("portal_events", pe), pe["occurred_at"])
    return {
        "portal_events_per30d_todate": _per30(tl.count_before(), snaps),
        "portal_events_30d": tl.count_window(WINDOW_DAYS),
    }


def build_feedback(tables: dict[str, pd.DataFrame], snaps: Snapshots) -> dict[str, np.ndarray]:
    """Qualitative feedback scores."""
    fb = tables["feedback"]
    score = pd.to_numeric(fb["score"], errors="coerce").to_numpy(dtype=float)
    tl = Timeline(snaps, snaps.codes_of("feedback", fb), fb["submitted_at"], {"score": score})
    return {
        "feedback_score_mean_todate": _ratio(tl.sum_before("score"), tl.nonnull_before("score")),
        "feedback_count_todate": tl.count_before(),
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
    }


def build_deals(tables: dict[str, pd.DataFrame], snaps: Snapshots) -> dict[str, np.ndarray]:
    """Deals: volume, wins, size, velocity and open pipeline — closed facts only once closed."""
    deals = tables["deals"]
    amount = pd.to_numeric(deals["amount"], errors="coerce").to_numpy(dtype=float)
    status = deals["status"].astype(str).to_numpy()
    created_s = to_seconds(deals["created_at"])
    closed_s = to_seconds(deals["closed_at"])
    is_closed = closed_s != NAT
    won = (status == "won") & is_closed
    cycle = np.where(is_closed, (closed_s - created_s) / DAY, np.nan)
    codes = snaps.codes_of("deals", deals)
    created = Timeline(snaps, codes, created_s, {"amount": amount})
    closed = Timeline(
        snaps,
        codes[is_closed],
        closed_s[is_closed],
        {
            "amount": amount[is_closed],
            "won": won[is_closed].astype(float),
            "cycle": cycle[is_closed],
        },
    )
    won_tl = Timeline(snaps, codes[won], closed_s[won], {"amount": amount[won]})
    n_closed = closed.count_before()
    n_won = won_tl.count_before()
    won_amount = money(won_tl.sum_before("amount"))
    return {
        "deals_created_todate": created.count_before(),
        "deals_won_todate": n_won,
        "deals_won_amount_todate": won_amount,
        "deals_win_rate_todate": _ratio(closed.sum_before("won"), n_closed),
        "deals_avg_won_size_todate": _ratio(won_amount, n_won),
        "deals_velocity_days_todate": closed.median_before("cycle"),
        "deals_open_pipeline_amount": money(
            created.sum_before("amount") - closed.sum_before("amount")
        ),
        "deals_days_to_first": _days_after_signing(snaps, created.first_time()),
        "deals_days_to_first_won": _days_after_signing(snaps, won_tl.first_time()),
        "deals_has_won_todate": (n_won > 0).astype(float),
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
