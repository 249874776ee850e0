"""The monitor's raw outlier checks against their slow twins: one row (or partner) at a time.

``table_outliers`` (robust z against the whole table, each partner weighing 1) and
``partner_outliers`` (robust z against the partner's own earlier rows, and its last 30 days of
events against its earlier 30-day periods) are vectorized over every row; the twins below
follow their docstrings row by row in plain Python, with exact fractions for the partner
weights, and hypothesis compares them on random tables with extreme values: $0 and $1e12
amounts, runs of identical values (MAD 0), partners with fewer rows than
``partner_min_history``, partners signed in 1900 or missing from the partners table.
"""

from __future__ import annotations

import math
from fractions import Fraction
from statistics import median

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from partnerscore.features import anomaly
from partnerscore.features.config import MonitorConfig

START = pd.Timestamp("2024-01-01")
DAY = pd.Timedelta(days=1)
COLUMNS = ["table", "record_id", "partner_id", "occurred_at", "column", "value", "score", "reason"]


def log1p_or_nan(value) -> float:
    """log1p of a non-negative number; NaN for a missing or negative one."""
    if value is None or pd.isna(value) or value < 0:
        return math.nan
    return math.log1p(float(value))


def weighted_median_reference(pairs: list[tuple[float, Fraction]]) -> float:
    """The value where the exact cumulative weight reaches half (at exactly half: the mean of
    it and the next value)."""
    pairs = sorted(pairs)
    total = sum(w for _, w in pairs)
    cum = Fraction(0)
    for i, (x, w) in enumerate(pairs):
        cum += w
        if cum == total / 2 and i + 1 < len(pairs):
            return (x + pairs[i + 1][0]) / 2
        if cum >= total / 2:
            return x
    raise AssertionError("unreachable")


def measure_rows(tables, as_of):
    """Per (table, measure): the rows dated before as_of as dicts with their value, in order."""
    out = {}
    for table, measure, unit, values_of in anomaly.MEASURES:
        if table not in tables:
            continue
        frame = tables[table]
        id_col, time_col = anomaly.EVENT_TIME[table]
        rows = []
        for pos in range(len(frame)):
            one = frame.iloc[[pos]]
            when = pd.Timestamp(one[time_col].iat[0])
            if pd.isna(when) or not when < as_of:
                continue
            raw = float(values_of(one)[0])
            ended = pd.Timestamp(one[anomaly.MEASURE_TIME[measure]].iat[0])
            if pd.isna(ended) or not ended < as_of:  # a duration is known once it ended
                raw = math.nan
            rows.append(
                {
                    "record_id": str(one[id_col].iat[0]) if id_col else f"row {len(rows) + 2}",
                    "partner_id": str(one["partner_id"].iat[0]),
                    "when": when,
                    "known": ended,  # a duration's end; any other measure's own date
                    "raw": raw,
                }
            )
        if rows:
            out[(table, measure, unit)] = rows
    return out


def table_outliers_reference(tables, as_of, config):
    """Every row before as_of, one at a time, against the table's partner-weighted median/MAD."""
    found, tops = [], {}
    for (table, measure, unit), rows in measure_rows(tables, as_of).items():
        finite = [r for r in rows if math.isfinite(log1p_or_nan(r["raw"]))]
        per_partner = {}
        for r in finite:
            per_partner[r["partner_id"]] = per_partner.get(r["partner_id"], 0) + 1
        top = None
        if finite:
            weights = [Fraction(1, per_partner[r["partner_id"]]) for r in finite]
            xs = [log1p_or_nan(r["raw"]) for r in finite]
            center = weighted_median_reference(list(zip(xs, weights, strict=True)))
            spread = [abs(x - center) for x in xs]
            mad = weighted_median_reference(list(zip(spread, weights, strict=True)))
            scale = max(anomaly.MAD_TO_SD * mad, 1e-9)
            for r in rows:
                z = (log1p_or_nan(r["raw"]) - center) / scale
                if not math.isfinite(z):
                    continue
                top = z if top is None else max(top, z)
                if z >= config.outlier_z:
                    reason = (
                        f"{table}.{measure} {r['raw']:,.2f} {unit} is {z:.1f} robust SDs above "
                        f"the table's typical {math.expm1(center):,.2f} (log scale)"
                    )
                    found.append(row_of(table, r, measure, z, reason))
        tops[f"quality.outliers.{table}.{measure}"] = top
    return frame_of(found), tops


def partner_outliers_reference(tables, as_of, config):
    """Every row known in the recent window (a duration: its end) against its own partner's rows
    known before it; then each partner's last 30 days of events against its earlier full 30-day
    periods since signing."""
    found = []
    start = as_of - pd.Timedelta(days=config.window_days)
    for (table, measure, unit), rows in measure_rows(tables, as_of).items():
        if table == "partners":
            continue
        for r in rows:
            x = log1p_or_nan(r["raw"])
            if not (math.isfinite(x) and r["known"] >= start):  # known in the window
                continue
            history = [
                log1p_or_nan(h["raw"])
                for h in rows
                if h["partner_id"] == r["partner_id"]
                and h["known"] < start
                and math.isfinite(log1p_or_nan(h["raw"]))
            ]
            if len(history) < config.partner_min_history:
                continue
            center = median(history)
            mad = median(abs(h - center) for h in history)
            z = (x - center) / max(anomaly.MAD_TO_SD * mad, config.partner_scale_floor)
            if z >= config.partner_z:
                reason = (
                    f"{table}.{measure} {r['raw']:,.2f} {unit} is {z:.1f} robust SDs above this "
                    f"partner's own typical {math.expm1(center):,.2f}"
                )
                found.append(row_of(table, r, measure, z, reason))
    signed = dict(
        zip(
            tables["partners"]["partner_id"].astype(str),
            pd.to_datetime(tables["partners"]["signed_at"]),
            strict=True,
        )
    )
    for table in anomaly.VOLUME_TABLES:
        if table not in tables:
            continue
        frame = tables[table]
        time_col = anomaly.EVENT_TIME[table][1]
        events: dict[str, list[pd.Timestamp]] = {}
        for pid, when in zip(frame["partner_id"].astype(str), frame[time_col], strict=True):
            if pd.notna(when) and pd.Timestamp(when) < as_of:
                events.setdefault(pid, []).append(pd.Timestamp(when))
        for pid, times in events.items():

            def period(t):
                return math.floor((as_of - t) / DAY / 30)

            recent = sum(1 for t in times if period(t) == 0)
            when_signed = signed.get(pid, pd.NaT)
            if pd.isna(when_signed):
                continue  # no signing date: no history
            history_periods = max(math.floor((as_of - when_signed) / DAY / 30) - 1, 0)
            if history_periods < config.partner_min_history:
                continue
            counts = [
                math.log1p(sum(1 for t in times if period(t) == p))
                for p in range(1, history_periods + 1)
            ]
            center = median(counts)
            mad = median(abs(c - center) for c in counts)
            scale = max(anomaly.MAD_TO_SD * mad, config.partner_scale_floor)
            z = (math.log1p(recent) - center) / scale
            if z >= config.partner_z:
                reason = (
                    f"{table}: {recent} events in the last 30 days, {z:.1f} robust SDs above "
                    f"this partner's typical {math.expm1(center):.1f} per 30 days"
                )
                found.append(
                    {
                        "table": table,
                        "record_id": "",
                        "partner_id": pid,
                        "occurred_at": as_of - 30 * DAY,
                        "column": "events_last_30_days",
                        "value": float(recent),
                        "score": round(z, 2),
                        "reason": reason,
                    }
                )
    return frame_of(found)


def row_of(table, r, measure, z, reason):
    return {
        "table": table,
        "record_id": r["record_id"],
        "partner_id": r["partner_id"],
        "occurred_at": r["when"],
        "column": measure,
        "value": r["raw"],
        "score": round(z, 2),
        "reason": reason,
    }


def frame_of(rows):
    return pd.DataFrame(rows, columns=COLUMNS)


def assert_same_anomalies(fast: pd.DataFrame, slow: pd.DataFrame):
    """The same rows in any order (the fast checks list them measure by measure)."""
    key = ["table", "column", "partner_id", "record_id", "occurred_at", "value"]

    def norm(frame):
        frame = frame[COLUMNS].copy()
        frame["occurred_at"] = pd.to_datetime(frame["occurred_at"]).astype("datetime64[us]")
        for col in ("table", "record_id", "partner_id", "column", "reason"):
            frame[col] = frame[col].astype(object)
        frame["value"] = frame["value"].astype(float)
        frame["score"] = frame["score"].astype(float)
        return frame.sort_values(key, kind="stable").reset_index(drop=True)

    a, b = norm(fast), norm(slow)
    assert len(a) == len(b), (a, b)
    pd.testing.assert_frame_equal(a.drop(columns="score"), b.drop(columns="score"))
    np.testing.assert_allclose(a["score"], b["score"], rtol=0, atol=0.0100001)


# --- random programs ------------------------------------------------------------------------

PIDS = ["P1", "P2", "P3", "P4"]  # P4 is never in the partners table: no signing date
amounts = st.sampled_from([0.0, 1.0, 100.0, 100.0, 5_000.0, 1e12]) | st.floats(0, 1e12)
# days after START: 1900 and 2133 included
days = st.sampled_from([-45_000, 0, 1, 300, 330, 360, 365, 40_000]) | st.integers(0, 400)


def build_program(signed, reach, deals, activities, cut, config):
    """Tables from plain tuples: partners P1-P3 (signing day, channel reach), deals (partner,
    created day, days to close or None, amount), activities (partner, day, hour, response
    hours or None); as_of is ``cut`` days after START."""
    partners = pd.DataFrame(
        {
            "partner_id": pd.array(PIDS[:3], dtype="str"),
            "signed_at": [START + DAY * d for d in signed],
            "channel_reach": np.array([np.nan if r is None else r for r in reach], dtype=float),
        }
    )
    tables = {
        "partners": partners,
        "deals": pd.DataFrame(
            {
                "deal_id": pd.array([f"D{i}" for i in range(len(deals))], dtype="str"),
                "partner_id": pd.array([d[0] for d in deals], dtype="str"),
                "created_at": pd.to_datetime([START + DAY * d[1] for d in deals]),
                "closed_at": pd.to_datetime(
                    [pd.NaT if d[2] is None else START + DAY * (d[1] + d[2]) for d in deals]
                ),
                "amount": np.array([d[3] for d in deals], dtype=float),
            }
        ),
        "activities": pd.DataFrame(
            {
                "activity_id": pd.array([f"A{i}" for i in range(len(activities))], dtype="str"),
                "partner_id": pd.array([a[0] for a in activities], dtype="str"),
                "occurred_at": pd.to_datetime(
                    [START + DAY * a[1] + pd.Timedelta(hours=a[2]) for a in activities]
                ),
                "response_hours": np.array(
                    [np.nan if a[3] is None else a[3] for a in activities], dtype=float
                ),
            }
        ),
    }
    return tables, START + DAY * cut, config


@st.composite
def programs(draw):
    cut = draw(st.sampled_from([0, 200, 366, 401]) | st.integers(0, 420))
    signed = [
        draw(st.sampled_from([-45_000, -400, -200, 0]) | st.integers(-900, 400)) for _ in range(3)
    ]
    reach = [draw(st.none() | amounts) for _ in range(3)]
    deals = draw(
        st.lists(
            st.tuples(st.sampled_from(PIDS), days, st.none() | st.integers(0, 500), amounts),
            max_size=30,
        )
    )
    same = draw(st.integers(0, 12))  # a run of identical deals of one partner: MAD 0
    deals += [("P1", 10 + i, 30, 2_500.0) for i in range(same)]
    spike = draw(st.none() | amounts)  # a new deal of P1 against that history
    if spike is not None:
        deals.append(("P1", cut - 1, None, spike))
    activities = draw(
        st.lists(
            st.tuples(
                st.sampled_from(PIDS),
                days,
                st.integers(0, 23),
                st.none() | st.sampled_from([0.0, 0.0, 2.0, 1e9]) | st.floats(0, 1e4),
            ),
            max_size=40,
        )
    )
    config = MonitorConfig(
        window_days=draw(st.sampled_from([7, 30, 90])),
        outlier_z=draw(st.sampled_from([0.5, 2.0, 6.0])),
        partner_z=draw(st.sampled_from([0.5, 1.0, 6.0])),
        partner_scale_floor=draw(st.sampled_from([1e-6, 0.05, 0.5])),
        partner_min_history=draw(st.sampled_from([2, 3, 5])),
    )
    return build_program(signed, reach, deals, activities, cut, config)


# fixed extremes: identical history (MAD 0) then $1e12 and $0; one row short of the history;
# a partner signed in 1900 with a burst of events now; a partner missing from the partners table
STRICT = MonitorConfig(partner_min_history=5, partner_scale_floor=1e-6)
SAME = [("P1", 10 + i, 30, 2_500.0) for i in range(5)]
EXTREMES = [
    build_program([0, 0, 0], [1.0, 1.0, 1e12], [*SAME, ("P1", 399, None, 1e12)], [], 400, STRICT),
    build_program([0, 0, 0], [0, 0, 0], [*SAME, ("P1", 399, None, 0.0)], [], 400, STRICT),
    build_program([0, 0, 0], [0, 0, 0], [*SAME[:4], ("P1", 399, None, 1e12)], [], 400, STRICT),
    build_program(
        [-45_000, 0, 0],
        [None, None, None],
        [("P2", 5, 1, 10.0), ("P3", 6, 2, 10.0), ("P4", 399, 0, 1e12)],
        [("P1", 399, h, None) for h in range(20)] + [("P4", 399, h, 1e9) for h in range(20)],
        400,
        STRICT,
    ),
]


def with_extremes(test):
    """The fixed extremes as explicit examples of a ``program`` test."""
    for program in reversed(EXTREMES):
        test = example(program=program)(test)
    return test


RANDOM = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@RANDOM
@given(program=programs())
@with_extremes
def test_table_outliers_equal_the_row_by_row_twin(program):
    tables, as_of, config = program
    fast, checks = anomaly.table_outliers(tables, as_of, config)
    slow, tops = table_outliers_reference(tables, as_of, config)
    assert_same_anomalies(fast, slow)
    got = {c.name: c.value for c in checks}
    assert set(got) == set(tops)
    for name, top in tops.items():
        if top is None:
            assert got.get(name) is None
        else:
            assert got[name] == np.float64(top) or math.isclose(got[name], top, rel_tol=1e-9)


@RANDOM
@given(program=programs())
@with_extremes
def test_partner_outliers_equal_the_row_by_row_twin(program):
    tables, as_of, config = program
    fast = anomaly.partner_outliers(tables, as_of, config)
    slow = partner_outliers_reference(tables, as_of, config)
    assert_same_anomalies(fast, slow)


def test_the_fixed_extremes_are_listed_as_expected():
    """The examples above do reach the checks: the $1e12 deal after five identical ones is a
    partner outlier, $0 is not (upper tail only), four earlier rows are too few, and P1's
    burst of events after 1,300 quiet periods is a volume spike."""
    found = [anomaly.partner_outliers(*program) for program in EXTREMES]
    amounts = [f.loc[f["column"] == "amount", "value"].tolist() for f in found]
    assert amounts[:3] == [[1e12], [], []]
    spikes = found[3][found[3]["column"] == "events_last_30_days"]
    assert spikes[["table", "partner_id", "value"]].values.tolist() == [["activities", "P1", 20.0]]


def test_a_duration_is_read_only_once_it_ended_before_as_of():
    """A deal created before as_of and closed years after it is open at as_of: its cycle is
    neither listed (it was, as a 2,989-day cycle at an as_of of 2024-04-10) nor in the table's
    centre; after its close it is listed."""
    ordinary = [(pid, 5 * i, 20 + i % 7, 1_000.0) for i in range(12) for pid in ("P1", "P2")]
    late = [("P1", 60, 2_989, 1_000.0)]  # created 2024-03-01, closed 2032-05-08
    config = MonitorConfig(outlier_z=4.0)
    for cut, listed in ((100, []), (3_100, ["D24"])):
        tables, as_of, _ = build_program([0, 0, 0], [1, 1, 1], ordinary + late, [], cut, config)
        found, _ = anomaly.table_outliers(tables, as_of, config)
        assert found.loc[found["column"] == "cycle_days", "record_id"].tolist() == listed
        centre, _ = anomaly.batch_statistics(tables, as_of)[("deals", "cycle_days")]
        assert centre < np.log1p(30)


def test_a_partners_long_duration_is_new_when_it_ends_in_the_window():
    """The per-partner check put a row in its recent window by its start: a duration is known
    only once it ended, so the window held only durations shorter than ``window_days``, and a
    360-day cycle of a partner whose deals close in ~20 days, closed 10 days before as_of, was
    never listed (its deal was created before the window: history). Durations enter the window
    when they end, as ``raw_measure_drift`` reads them."""
    config = MonitorConfig(partner_z=3.0, partner_min_history=3)
    ordinary = [("P1", 20 * i, 20 + i % 3, 1_000.0) for i in range(8)]
    long = [("P1", 200, 360, 1_000.0)]  # D8: created day 200, closed day 560
    for cut, listed in ((555, []), (570, ["D8"]), (700, [])):  # open; closed in; before window
        tables, as_of, _ = build_program([0, 0, 0], [1, 1, 1], ordinary + long, [], cut, config)
        found = anomaly.partner_outliers(tables, as_of, config)
        assert found.loc[found["column"] == "cycle_days", "record_id"].tolist() == listed, cut
        slow = frame_of(partner_outliers_reference(tables, as_of, config))
        assert_same_anomalies(found, slow)
