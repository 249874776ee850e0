"""Property-based point-in-time tests: generated programs, fast builders vs the slow reference.

Hypothesis generates small programs (2-6 partners, a few rows in every contract table; optional
tables absent, empty or filled; optional columns absent) with hostile but finite values: amounts
from 5e-324 to 1.8e308, timestamps from 1678 to 9999-12-30 (microsecond frames) or over the
contract's years (nanosecond frames), ties exactly at as_of and at window edges, duplicate
timestamps, missing optional values. It checks that

- ``build_features`` and ``build_labels`` equal the per-partner reference of ``pit_reference.py``
  exactly (NaN == NaN; sums are compared bit for bit, see that module for why this is possible);
- a partner's features and labels are byte-identical whether other partners' rows are present,
  dropped, or altered (huge amounts, moved dates);
- features at as_of are byte-identical after appending any rows dated at or after as_of;
- the timeline's packed (partner, time) keys count exactly, for any int64 seconds.

Runs are derandomized and use no example database, so CI sees the same examples every time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import example, given, settings
from hypothesis import strategies as st
from support import costly_examples, sibling

from partnerscore.features.builders import Snapshots, Timeline
from partnerscore.features.config import BuildConfig
from partnerscore.features.contract import ACTIVITY_TYPES, END_DATE, FIRST_DATE
from partnerscore.features.pipeline import (
    PHASE_PREFIX,
    build_features,
    build_labels,
    revenue_phases,
)
from partnerscore.features.registry import feature_specs

ref = sibling(__file__, "pit_reference")

# each example builds, and computes the reference of, a whole program (~0.3 s): the counts keep
# the file well under 30 s; raise them locally (e.g. 2000) for a deeper search. No shrinking
# phase: the generated programs are small already, and shrinking one costs minutes on 2 cores.
SETTINGS = costly_examples(20)
FEWER = settings(SETTINGS, max_examples=10)

DAY = 86_400


def _sec(ts: str) -> int:
    return int(np.datetime64(pd.Timestamp(ts).as_unit("s").asm8, "s").astype(np.int64))


# (first second, last second, unit of the frames' timestamps)
REGIMES = {
    "contract": (_sec(str(FIRST_DATE)), _sec(str(END_DATE)) - 1, "ns"),
    "wide": (_sec("1678-01-01"), _sec("9999-12-30"), "us"),
}
# as_of, its neighbours, window edges (30 and 90 days), trend midpoints (15 and 45 days)
EDGES = [0, -1, 1, -30 * DAY, -30 * DAY - 1, -30 * DAY + 1, -90 * DAY, -15 * DAY, -45 * DAY]
EDGES += [30 * DAY, 90 * DAY]
AMOUNTS = [
    0.0,
    5e-324,
    1e-300,
    0.1,
    0.2,
    0.3,
    1.0,
    2.5,
    1e15 + 0.5,
    1e300,
    1e308,
    1.7976931348623157e308,
]
OPTIONAL = (
    "activities",
    "trainings",
    "portal_events",
    "marketing_commitments",
    "leads",
    "feedback",
)


# ------------------------------------------------------------------------------ strategies


@st.composite
def instants(draw, lo: int, hi: int, anchor: int) -> int:
    """A whole second: near the anchor (often exactly on a window edge or a coarse grid, so that
    timestamps tie) or anywhere."""
    kind = draw(st.sampled_from(["edge", "edge", "grid", "grid", "near", "far", "end"]))
    if kind == "edge":
        t = anchor + draw(st.sampled_from(EDGES))
    elif kind == "grid":
        t = anchor + draw(st.integers(-12, 12)) * 10 * DAY
    elif kind == "near":
        t = anchor + draw(st.integers(-400 * DAY, 400 * DAY))
    elif kind == "far":
        t = draw(st.integers(lo, hi))
    else:
        t = draw(st.sampled_from([lo, hi]))
    return min(max(t, lo), hi)


def amounts():
    return st.one_of(
        st.sampled_from(AMOUNTS),
        st.floats(0, 1.7976931348623157e308, allow_nan=False, allow_infinity=False),
    )


def _stamps(values, unit):
    arr = np.array([np.datetime64("NaT") if v is None else v for v in values], dtype="M8[s]")
    return pd.Series(arr.astype(f"M8[{unit}]"))


def _frame(columns: dict[str, str], rows: list[dict], unit: str) -> pd.DataFrame:
    """Typed frame (times in whole seconds -> datetime64[unit]), also when ``rows`` is empty."""
    out = {}
    for col, kind in columns.items():
        values = [r[col] for r in rows]
        if kind == "time":
            out[col] = _stamps(values, unit)
        elif kind == "float":
            out[col] = pd.Series([np.nan if v is None else v for v in values], dtype=float)
        elif kind == "bool":
            out[col] = pd.Series(values, dtype=bool)
        else:
            out[col] = pd.Series(values, dtype=object).astype("str")
    return pd.DataFrame(out)


COLUMNS = {
    "deals": {
        "deal_id": "id",
        "partner_id": "id",
        "created_at": "time",
        "closed_at": "time",
        "amount": "float",
        "status": "id",
    },
    "activities": {
        "activity_id": "id",
        "partner_id": "id",
        "occurred_at": "time",
        "activity_type": "id",
        "response_hours": "float",
    },
    "trainings": {
        "partner_id": "id",
        "course_id": "id",
        "enrolled_at": "time",
        "completed_at": "time",
        "is_certification": "bool",
    },
    "portal_events": {"partner_id": "id", "occurred_at": "time", "event_type": "id"},
    "marketing_commitments": {
        "commitment_id": "id",
        "partner_id": "id",
        "committed_at": "time",
        "due_at": "time",
        "delivered_at": "time",
    },
    "leads": {
        "lead_id": "id",
        "partner_id": "id",
        "created_at": "time",
        "qualified_at": "time",
        "converted_at": "time",
    },
    "feedback": {"partner_id": "id", "submitted_at": "time", "score": "float"},
}


@st.composite
def table_rows(draw, name: str, ids: list[str], when, n_max: int = 5) -> list[dict]:
    """Contract-valid rows of one event table (ordered timestamps, consistent statuses)."""
    rows = []
    for i in range(draw(st.integers(0, n_max))):
        pid = draw(st.sampled_from(ids))
        t0 = draw(when)

        def later(nullable=True, t0=t0):
            if nullable and draw(st.booleans()):
                return None
            return max(t0, draw(when)) if draw(st.booleans()) else t0

        if name == "deals":
            status = draw(st.sampled_from(["open", "won", "lost", "won"]))
            closed = None if status == "open" else later(nullable=False)
            rows.append(
                dict(
                    deal_id=f"D{i}",
                    partner_id=pid,
                    created_at=t0,
                    closed_at=closed,
                    amount=draw(amounts()),
                    status=status,
                )
            )
        elif name == "activities":
            hours = draw(
                st.one_of(
                    st.none(),
                    st.sampled_from([0.0, 0.5, 1 / 3600, 24.0, 1e7, 1e308]),
                    st.floats(0, 1e6, allow_nan=False),
                )
            )
            rows.append(
                dict(
                    activity_id=f"A{i}",
                    partner_id=pid,
                    occurred_at=t0,
                    activity_type=draw(st.sampled_from(ACTIVITY_TYPES)),
                    response_hours=hours,
                )
            )
        elif name == "trainings":
            rows.append(
                dict(
                    partner_id=pid,
                    course_id=f"C{i}",
                    enrolled_at=t0,
                    completed_at=later(),
                    is_certification=draw(st.booleans()),
                )
            )
        elif name == "portal_events":
            rows.append(dict(partner_id=pid, occurred_at=t0, event_type="login"))
        elif name == "marketing_commitments":
            rows.append(
                dict(
                    commitment_id=f"M{i}",
                    partner_id=pid,
                    committed_at=t0,
                    due_at=later(nullable=False),
                    delivered_at=later(),
                )
            )
        elif name == "leads":
            qualified = later()
            converted = later()
            if converted is not None and qualified is not None:
                converted = max(converted, qualified)
            rows.append(
                dict(
                    lead_id=f"L{i}",
                    partner_id=pid,
                    created_at=t0,
                    qualified_at=qualified,
                    converted_at=converted,
                )
            )
        else:
            score = draw(st.sampled_from([1.0, 2.0, 3.0, 4.5, 5.0]))
            rows.append(dict(partner_id=pid, submitted_at=t0, score=score))
    return rows


@st.composite
def programs(draw):
    """(tables, snapshots, label config, anchor seconds, unit) of a small hostile program."""
    lo, hi, unit = REGIMES[draw(st.sampled_from(sorted(REGIMES)))]
    anchor = draw(
        st.one_of(
            st.sampled_from([_sec("2024-03-01"), lo + 400 * DAY, hi - 400 * DAY]),
            st.integers(lo + 400 * DAY, hi - 400 * DAY),
        )
    )
    when = instants(lo, hi, anchor)
    n = draw(st.integers(2, 6))
    ids = draw(
        st.lists(
            st.sampled_from(["P1", "P2", "007", "7", "a b", "Z9", "p-3", "ÄÖ"]),
            min_size=n,
            max_size=n,
            unique=True,
        )
    )
    fit = st.one_of(st.none(), st.sampled_from([1.0, 2.5, 5.0]))
    # signing often 30/60/90 days before the anchor: events then tie with signing and with the
    # edges of the 30-day periods since signing
    signing = st.one_of(
        st.sampled_from([anchor - k * DAY for k in (90, 60, 30, 0)] + [anchor - 30 * DAY - 1]),
        when,
    )
    partners = pd.DataFrame(
        {
            "partner_id": pd.Series(ids, dtype=object).astype("str"),
            "partner_name": [f"name {i}" for i in ids],
            "signed_at": _stamps([min(max(draw(signing), lo), hi) for _ in ids], unit),
            "tier": [draw(st.sampled_from(["gold", "silver"])) for _ in ids],
            "region": [draw(st.sampled_from(["NA", "EMEA"])) for _ in ids],
            "industry": ["software"] * n,
            "partner_type": [draw(st.sampled_from(["reseller", "msp"])) for _ in ids],
        }
    )
    for col in ("market_alignment", "channel_reach", "product_adoption_potential"):
        if draw(st.booleans()):
            partners[col] = pd.Series([draw(fit) for _ in ids], dtype=float)
    tables = {
        "partners": partners,
        "deals": _frame(COLUMNS["deals"], draw(table_rows("deals", ids, when, 7)), unit),
    }
    for name in OPTIONAL:
        shape = draw(st.sampled_from(["absent", "empty", "rows", "rows", "rows"]))
        if shape == "absent":
            continue
        rows = [] if shape == "empty" else draw(table_rows(name, ids, when))
        frame = _frame(COLUMNS[name], rows, unit)
        if name == "activities" and draw(st.integers(0, 4)) == 0:
            frame = frame.drop(columns="response_hours")  # the optional column is absent
        tables[name] = frame
    # snapshots: mostly exactly on one of the partner's own event times (ties with as_of), else
    # on the anchor or anywhere
    snaps = []
    for pid in ids:
        own = sorted(
            {
                int(t)
                for name, frame in tables.items()
                if name != "partners"
                for col in frame.columns
                if pd.api.types.is_datetime64_any_dtype(frame[col])
                for t in frame.loc[frame["partner_id"] == pid, col]
                .dropna()
                .to_numpy()
                .astype("M8[s]")
                .astype(np.int64)
            }
        )
        pool = st.sampled_from(own) if own else st.just(anchor)
        as_of = st.one_of(pool, pool, pool, st.just(anchor), when)
        snaps += [(pid, draw(as_of)) for _ in range(draw(st.integers(1, 2)))]
    snapshots = pd.DataFrame(
        {"partner_id": [p for p, _ in snaps], "as_of": _stamps([t for _, t in snaps], unit)}
    )
    config = BuildConfig(
        horizon_days=draw(st.sampled_from([1, 30, 90, 180])),
        engagement_period_days=draw(st.sampled_from([7, 30])),
        engagement_min_share=draw(st.sampled_from([0.25, 0.5, 1.0])),
        phase_days=draw(st.sampled_from([1, 7, 30, 45])),
    )
    return tables, snapshots, config, anchor, unit


# ------------------------------------------------------------------------------ assertions


def assert_same_bytes(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Same columns, and every column's values identical to the last bit."""
    assert list(a.columns) == list(b.columns)
    for col in a.columns:
        x, y = a[col], b[col]
        if pd.api.types.is_float_dtype(x) or pd.api.types.is_integer_dtype(x):
            assert x.to_numpy().tobytes() == y.to_numpy().tobytes(), col
        else:
            assert x.astype(object).tolist() == y.astype(object).tolist(), col


def reference_frame(tables, snapshots):
    rows = [
        ref.reference_features(tables, pid, t)
        for pid, t in zip(snapshots["partner_id"], snapshots["as_of"], strict=True)
    ]
    return pd.DataFrame(rows)


def only(tables, keep_ids):
    return {
        name: frame[frame["partner_id"].isin(keep_ids)].reset_index(drop=True)
        for name, frame in tables.items()
    }


# ------------------------------------------------------------------------------ properties


@SETTINGS
@given(programs())
def test_builders_equal_the_reference_exactly(program):
    tables, snapshots, config, _, _ = program
    fast = build_features(tables, snapshots, n_jobs=1)
    slow = reference_frame(tables, snapshots)
    specs = feature_specs(tables)
    assert list(fast.columns[2:]) == [s.name for s in specs] == list(slow.columns)
    for spec in specs:
        got, want = fast[spec.name], slow[spec.name]
        if spec.kind == "categorical":
            assert got.tolist() == want.tolist(), spec.name
        else:
            np.testing.assert_array_equal(
                got.to_numpy(float), want.to_numpy(float), err_msg=spec.name, strict=True
            )
    labels = build_labels(tables, snapshots, config)
    expected = [
        ref.reference_labels(tables, pid, t, config)
        for pid, t in zip(snapshots["partner_id"], snapshots["as_of"], strict=True)
    ]
    np.testing.assert_array_equal(
        labels["label_revenue"].to_numpy(), np.array([r for r, _ in expected]), strict=True
    )
    assert labels["label_engaged"].tolist() == [e for _, e in expected]
    phases = labels.filter(like=PHASE_PREFIX)
    assert phases.shape[1] == revenue_phases(config) >= 1
    want = [
        ref.reference_revenue_phases(tables, pid, t, config)
        for pid, t in zip(snapshots["partner_id"], snapshots["as_of"], strict=True)
    ]
    np.testing.assert_array_equal(phases.to_numpy(), np.array(want), strict=True)


@FEWER
@given(programs(), st.data())
def test_a_partner_never_depends_on_other_partners(program, data):
    tables, snapshots, config, _, unit = program
    ids = tables["partners"]["partner_id"].tolist()
    pid = data.draw(st.sampled_from(ids))
    mine = snapshots[snapshots["partner_id"] == pid].reset_index(drop=True)
    features = build_features(tables, mine, n_jobs=1)
    labels = build_labels(tables, mine, config)
    # other partners dropped entirely
    alone = only(tables, [pid])
    assert_same_bytes(features, build_features(alone, mine, n_jobs=1))
    assert_same_bytes(labels, build_labels(alone, mine, config))
    # other partners' rows altered: every amount huge, every timestamp moved by a few seconds
    shift = pd.Timedelta(seconds=data.draw(st.sampled_from([-1, 1, 3600])))
    altered = {}
    for name, frame in tables.items():
        frame = frame.copy()
        others = frame["partner_id"] != pid
        if name != "partners":
            for col in frame.columns:
                if pd.api.types.is_datetime64_any_dtype(frame[col]):
                    frame.loc[others, col] = frame.loc[others, col] + shift
        if name == "deals":
            frame.loc[others, "amount"] = 1e308
        altered[name] = frame
    assert_same_bytes(features, build_features(altered, mine, n_jobs=1))
    assert_same_bytes(labels, build_labels(altered, mine, config))


@FEWER
@given(programs(), st.data())
def test_rows_at_or_after_as_of_never_change_features(program, data):
    tables, _, _, anchor, unit = program
    lo, hi, _ = next(r for r in REGIMES.values() if r[2] == unit)
    ids = tables["partners"]["partner_id"].tolist()
    snapshots = pd.DataFrame({"partner_id": ids, "as_of": _stamps([anchor] * len(ids), unit)})
    before = build_features(tables, snapshots, n_jobs=1)
    # appended rows: every timestamp of every row at or after as_of (often exactly at it)
    late = st.one_of(st.just(anchor), st.integers(anchor, min(anchor + 400 * DAY, hi)))
    grown = dict(tables)
    for name in COLUMNS:
        if name not in tables:
            continue
        extra = data.draw(table_rows(name, ids, late, 4))
        for i, row in enumerate(extra):  # unique ids for the appended rows
            for key in ("deal_id", "activity_id", "commitment_id", "lead_id"):
                if key in row:
                    row[key] = f"X{i}"
        frame = _frame(COLUMNS[name], extra, unit)[list(tables[name].columns)]
        grown[name] = pd.concat([tables[name], frame], ignore_index=True)
    assert_same_bytes(before, build_features(grown, snapshots, n_jobs=1))


EXTREME_SECONDS = [-(2**63) + 1, -(2**62), -1, 0, 1, 2**62, 2**63 - 1]
"""Seconds at the ends of int64 (a span that needs the rank axis) and around 0."""


def any_seconds():
    """int64 seconds, often one of :data:`EXTREME_SECONDS` (so events and queries tie)."""
    return st.one_of(st.integers(-(2**63) + 1, 2**63 - 1), st.sampled_from(EXTREME_SECONDS))


@settings(SETTINGS, max_examples=60)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), any_seconds(), st.floats(0, 1e308, allow_nan=False)),
        max_size=12,
    ),
    st.lists(st.tuples(st.integers(0, 3), any_seconds()), min_size=1, max_size=6),
)
@example(  # the rank axis (the span overflows int64) with a query on an event's second
    events=[(0, -(2**63) + 1, 1.0), (0, 0, 2.0), (0, 2**63 - 1, 4.0)], queries=[(0, 0)]
)
def test_timeline_keys_count_exactly_for_any_seconds(events, queries):
    """Packed (partner, time) keys never overflow or alias, whatever the int64 seconds.

    Queries draw from the same extremes as events: drawn independently over int64, a query
    never fell on an event's second, and the rank axis's tie rule (an event at the query's
    second is not before it) could be changed without this test failing.
    """
    partners = pd.Index(["a", "b", "c", "d"])
    q_codes = np.array([c for c, _ in queries], dtype=np.int64)
    q_secs = np.array([t for _, t in queries], dtype=np.int64)
    snaps = Snapshots(
        partner_ids=partners.to_numpy()[q_codes],
        codes=q_codes,
        as_of=q_secs,
        signed=np.zeros(len(queries), np.int64),
        partner_index=partners,
    )
    codes = np.array([c for c, _, _ in events], dtype=np.int64)
    secs = np.array([t for _, t, _ in events], dtype=np.int64)
    values = np.array([v for _, _, v in events], dtype=float)
    tl = Timeline(snaps, codes, secs, {"v": values})
    for i, (c, t) in enumerate(queries):
        mine = [(s, v) for cc, s, v in events if cc == c]
        assert tl.count_before()[i] == sum(s < t for s, _ in mine)
        assert tl.position(q_secs, side="right")[i] - tl.start[i] == sum(s <= t for s, _ in mine)
        ordered = [v for s, v in sorted(mine, key=lambda e: e[0]) if s < t]
        assert tl.sum_before("v")[i] == ref.total(ordered)
