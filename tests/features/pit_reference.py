"""The slow, obviously-correct twin of the point-in-time builders (features and labels).

One snapshot at a time, in plain pandas: take the partner's own rows, keep those dated strictly
before as_of (features) or in [as_of, as_of + horizon) (labels), and compute every value from
them directly. Shared by ``test_point_in_time.py`` and ``test_pit_properties.py`` (loaded by file
path, since tests are imported without packages).

Floating point is made deterministic rather than approximate, so fast and slow results can be
compared for exact equality:

- sums add the values one after the other from 0.0, in time order (ties in input order) — the
  order the builders use (Python's ``sum`` would compensate, pandas' would pair up);
- day counts divide whole seconds by 86,400 (timestamps compare at one-second resolution);
- a median of an even count is the midpoint of the middle two, computed without overflow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DAY = pd.Timedelta(days=1)


# ------------------------------------------------------------------------------ arithmetic


def seconds(ts) -> int:
    """A timestamp as whole seconds since the epoch (floored), in exact integer arithmetic.

    Differences are taken in seconds, not as pandas Timedeltas, which overflow beyond 292 years.
    """
    return int(pd.Timestamp(ts).asm8.astype("M8[s]").astype(np.int64))


def days(later, earlier) -> float:
    """Days from ``earlier`` to ``later``: whole seconds / 86,400."""
    return (seconds(later) - seconds(earlier)) / 86_400


def first_days(times, signed) -> float:
    return days(times.min(), signed) if len(times) else np.nan


def ratio(num, den) -> float:
    return num / den if den > 0 else np.nan


def total(values) -> float:
    """Left-to-right float sum from 0.0."""
    out = 0.0
    for v in values:
        out += float(v)
    return out


def midpoint(a: float, b: float) -> float:
    if (a >= 0) == (b >= 0):
        return a + (b - a) / 2
    return (a + b) / 2


def median(values) -> float:
    v = sorted(float(x) for x in values if not np.isnan(x))
    if not v:
        return np.nan
    m = len(v)
    return midpoint(v[(m - 1) // 2], v[m // 2])


def balance(a: float, b: float) -> float:
    """(b - a) / (b + a), computed on a / m and b / m with m = max(a, b); NaN if both are 0."""
    m = max(a, b)
    if not m > 0:
        return np.nan
    x, y = a / m, b / m
    return (y - x) / (y + x)


# ------------------------------------------------------------------------------ event histories


class History:
    """The times (and values) of one kind of event of one partner, as seen at as_of."""

    def __init__(self, frame, col, as_of, signed, value=None):
        frame = frame[frame[col].notna()].sort_values(col, kind="stable")
        self.all_times = frame[col].to_numpy().astype("M8[s]").astype(np.int64).tolist()
        self.all_values = [] if value is None else frame[value].astype(float).tolist()
        self.t, self.signed = seconds(as_of), seconds(signed)
        # events strictly before as_of, in time order (ties in input order)
        self.times = [t for t in self.all_times if t < self.t]
        self.values = self.all_values[: len(self.times)]

    def window(self, lo, hi):
        """(times, values) of the events with lo <= t < hi (seconds)."""
        keep = [i for i, t in enumerate(self.all_times) if lo <= t < hi]
        values = [self.all_values[i] for i in keep] if self.all_values else []
        return [self.all_times[i] for i in keep], values

    def count(self, days_back):
        return float(len(self.window(self.t - days_back * 86_400, self.t)[0]))

    def total(self, days_back):
        return total(self.window(self.t - days_back * 86_400, self.t)[1])

    def days_since_last(self):
        return (self.t - self.times[-1]) / 86_400 if self.times else np.nan

    def gap_mean_days(self):
        n = len(self.times)
        if n < 2:
            return np.nan
        gaps = [b - a for a, b in zip(self.times, self.times[1:], strict=False)]
        return sum(gaps) / (n - 1) / 86_400  # integer sum: exactly last - first

    def gap_median_days(self):
        return median([(b - a) / 86_400 for a, b in zip(self.times, self.times[1:], strict=False)])

    def active_period_share(self, days_per_period=30):
        age = self.t - self.signed
        if age <= 0:
            return np.nan
        period = days_per_period * 86_400
        active = {(t - self.signed) // period for t in self.times if t >= self.signed}
        elapsed = -(-age // period)
        return len(active) / elapsed

    def trend(self, days_back, values=False):
        half = min(max(self.t - self.signed, 0), days_back * 86_400) // 2
        if half <= 0:
            return np.nan
        first = self.window(self.t - 2 * half, self.t - half)
        second = self.window(self.t - half, self.t)
        if values:
            return balance(total(first[1]), total(second[1]))
        return balance(float(len(first[0])), float(len(second[0])))


# ------------------------------------------------------------------------------ features


def reference_features(tables, partner_id, as_of):
    """Every feature of one snapshot, computed the slow way from the partner's filtered rows.

    Only the features of tables present in ``tables`` are returned.
    """
    p = tables["partners"].set_index("partner_id").loc[partner_id]
    signed = p["signed_at"]
    age = days(as_of, signed)
    w30 = as_of - 30 * DAY

    def rows(name):
        frame = tables[name]
        return frame[frame["partner_id"] == partner_id]

    def before(frame, col):
        """Rows with ``col`` strictly before as_of, in time order (ties in input order)."""
        return frame[frame[col] < as_of].sort_values(col, kind="stable")

    def opt(col):
        return float(p[col]) if col in p.index and pd.notna(p[col]) else np.nan

    out = {
        "age_days": float(np.floor(age)),
        "tier": p["tier"],
        "region": p["region"],
        "industry": p["industry"],
        "partner_type": p["partner_type"],
        "partners_market_alignment": opt("market_alignment"),
        "partners_channel_reach": opt("channel_reach"),
        "partners_adoption_potential": opt("product_adoption_potential"),
    }
    if "marketing_commitments" in tables:
        mc = rows("marketing_commitments")
        due = before(mc, "due_at")
        on_time = (due["delivered_at"].notna() & (due["delivered_at"] <= due["due_at"])).sum()
        out["marketing_commitments_count_todate"] = float((mc["committed_at"] < as_of).sum())
        out["marketing_adherence_rate_todate"] = ratio(on_time, len(due))
        made = History(mc, "committed_at", as_of, signed)
        out["marketing_commitments_90d"] = made.count(90)
        out["marketing_commitments_days_since_last"] = made.days_since_last()

    if "trainings" in tables:
        tr = rows("trainings")
        enrolled = before(tr, "enrolled_at")
        done = before(tr, "completed_at")
        certs = done[done["is_certification"].astype(bool)]
        out["trainings_enrolled_todate"] = float(len(enrolled))
        out["trainings_completion_rate_todate"] = ratio(len(done), len(enrolled))
        out["trainings_certifications_todate"] = float(len(certs))
        out["trainings_days_to_first_completion"] = first_days(done["completed_at"], signed)
        out["trainings_days_to_first_certification"] = first_days(certs["completed_at"], signed)
        completed = History(tr, "completed_at", as_of, signed)
        out["trainings_completed_90d"] = completed.count(90)
        out["trainings_days_since_last_completion"] = completed.days_since_last()

    if "activities" in tables:
        act = rows("activities")
        seen = before(act, "occurred_at")
        n30 = float((seen["occurred_at"] >= w30).sum())
        per30 = len(seen) / max(age, 1.0) * 30
        recent = n30 / min(max(age, 1.0), 30) * 30
        # a response is known once it arrived: occurred_at + response_hours < as_of
        hours = act["response_hours"] if "response_hours" in act else pd.Series(np.nan, act.index)
        answered = [
            h
            for t, h in zip(act["occurred_at"], hours, strict=True)
            if pd.notna(h) and h * 3600 < seconds(as_of) - seconds(t)
        ]
        out["activities_touchpoints_per30d_todate"] = per30
        out["activities_touchpoints_30d"] = n30
        out["activities_trend_30d_vs_todate"] = ratio(recent, per30)
        out["activities_days_since_last"] = (
            days(as_of, seen["occurred_at"].max()) if len(seen) else np.nan
        )
        out["activities_days_to_first"] = first_days(seen["occurred_at"], signed)
        out["activities_response_hours_median_todate"] = median(answered)
        out["activities_collaborations_todate"] = float(
            seen["activity_type"].isin(["co_sell", "joint_event"]).sum()
        )
        history = History(act, "occurred_at", as_of, signed)
        out["activities_touchpoints_90d"] = history.count(90)
        out["activities_gap_mean_days_todate"] = history.gap_mean_days()
        out["activities_active_periods_share_todate"] = history.active_period_share()
        out["activities_touchpoints_trend_90d"] = history.trend(90)

    if "portal_events" in tables:
        seen = before(rows("portal_events"), "occurred_at")
        out["portal_events_per30d_todate"] = len(seen) / max(age, 1.0) * 30
        out["portal_events_30d"] = float((seen["occurred_at"] >= w30).sum())
        history = History(rows("portal_events"), "occurred_at", as_of, signed)
        out["portal_events_90d"] = history.count(90)
        out["portal_events_days_since_last"] = history.days_since_last()
        out["portal_events_active_periods_share_todate"] = history.active_period_share()
        out["portal_events_trend_90d"] = history.trend(90)

    if "feedback" in tables:
        seen = before(rows("feedback"), "submitted_at")
        scores = seen["score"].dropna()
        out["feedback_score_mean_todate"] = ratio(total(scores), len(scores))
        out["feedback_count_todate"] = float(len(seen))
        out["feedback_score_last_todate"] = float(scores.iloc[-1]) if len(scores) else np.nan
        out["feedback_days_since_last"] = History(
            rows("feedback"), "submitted_at", as_of, signed
        ).days_since_last()

    if "leads" in tables:
        leads = rows("leads")
        created = before(leads, "created_at")
        qualified = before(leads, "qualified_at")
        out["leads_created_todate"] = float(len(created))
        out["leads_qualified_todate"] = float(len(qualified))
        out["leads_qualified_30d"] = float((qualified["qualified_at"] >= w30).sum())
        out["leads_conversion_rate_todate"] = ratio(
            (leads["converted_at"] < as_of).sum(), len(created)
        )
        out["leads_days_to_first"] = first_days(created["created_at"], signed)
        history = History(leads, "created_at", as_of, signed)
        out["leads_created_90d"] = history.count(90)
        out["leads_days_since_last"] = history.days_since_last()

    deals = rows("deals")
    created = before(deals, "created_at")
    closed = before(deals, "closed_at")
    won = closed[closed["status"] == "won"]
    won_amount = total(won["amount"])
    out["deals_created_todate"] = float(len(created))
    out["deals_won_todate"] = float(len(won))
    out["deals_won_amount_todate"] = won_amount
    out["deals_win_rate_todate"] = ratio(len(won), len(closed))
    out["deals_avg_won_size_todate"] = ratio(won_amount, len(won))
    out["deals_velocity_days_todate"] = median(
        [days(c, s) for s, c in zip(closed["created_at"], closed["closed_at"], strict=True)]
    )
    still_open = created[~(created["closed_at"] < as_of)]
    out["deals_open_pipeline_amount"] = total(still_open["amount"])
    out["deals_days_to_first"] = first_days(created["created_at"], signed)
    out["deals_days_to_first_won"] = first_days(won["closed_at"], signed)
    out["deals_has_won_todate"] = float(len(won) > 0)
    registered = History(deals, "created_at", as_of, signed)
    out["deals_created_90d"] = registered.count(90)
    out["deals_active_periods_share_todate"] = registered.active_period_share()
    wins = History(deals[deals["status"] == "won"], "closed_at", as_of, signed, value="amount")
    out["deals_days_since_last_won"] = wins.days_since_last()
    out["deals_won_30d"] = wins.count(30)
    out["deals_won_90d"] = wins.count(90)
    out["deals_won_amount_30d"] = wins.total(30)
    out["deals_won_amount_90d"] = wins.total(90)
    out["deals_first_won_amount"] = wins.values[0] if wins.values else np.nan
    out["deals_won_gap_median_days_todate"] = wins.gap_median_days()
    out["deals_won_amount_trend_90d"] = wins.trend(90, values=True)
    return out


# ------------------------------------------------------------------------------ labels


def reference_labels(tables, partner_id, as_of, config):
    """(label_revenue, label_engaged) of one snapshot: events in [as_of, as_of + horizon)."""
    end = as_of + config.horizon_days * DAY

    def rows(name):
        frame = tables[name]
        return frame[frame["partner_id"] == partner_id]

    deals = rows("deals")
    won = deals[(deals["status"] == "won") & (deals["closed_at"] >= as_of)]
    won = won[won["closed_at"] < end].sort_values("closed_at", kind="stable")
    revenue = total(won["amount"])
    touches = [deals["created_at"]] if "deal" in config.engagement_touchpoints else []
    if "activities" in tables:
        act = rows("activities")
        touches.append(
            act.loc[act["activity_type"].isin(config.engagement_touchpoints), "occurred_at"]
        )
    if "leads" in tables and "lead" in config.engagement_touchpoints:
        touches.append(rows("leads")["created_at"])
    times = [t for series in touches for t in series if pd.notna(t)]
    period = config.engagement_period_days * DAY
    n_periods = int(np.ceil(config.horizon_days / config.engagement_period_days))
    active = 0
    for j in range(n_periods):
        lo, hi = as_of + j * period, min(as_of + (j + 1) * period, end)
        active += any(lo <= t < hi for t in times)
    return revenue, int(active >= config.engagement_min_share * n_periods - 1e-9)


def reference_revenue_phases(tables, partner_id, as_of, config):
    """Won amounts per ``phase_days`` phase of [as_of, as_of + horizon), the last one cut."""
    end = as_of + config.horizon_days * DAY
    phase = config.phase_days * DAY
    deals = tables["deals"]
    deals = deals[(deals["partner_id"] == partner_id) & (deals["status"] == "won")]
    out = []
    lo = as_of
    while lo < end:
        hi = min(lo + phase, end)
        won = deals[(deals["closed_at"] >= lo) & (deals["closed_at"] < hi)]
        out.append(total(won.sort_values("closed_at", kind="stable")["amount"]))
        lo = hi
    return out
