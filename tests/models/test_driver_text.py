"""The vectorised driver sentences (Arrow path in scoring) equal a plain per-row reference.

``reference_sentence`` below is the slow, obviously-correct twin: one row at a time with
Python's own number formatting and an if/else per clause. Hypothesis feeds both implementations
extreme, missing, negative, huge and zero values.
"""

import math
import sys

import numpy as np
import pandas as pd
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.features.registry import feature_specs, get_spec
from partnerscore.models import explain
from partnerscore.models.bundle import PartnerModel
from partnerscore.models.heads import EngagementClassifier, RevenueRegressor
from partnerscore.models.scoring import MIN_DRIVER_POINTS, _drivers, top_features

# one feature of every (unit, kind, profile or not) the registry declares
NAMES = [
    "age_days",
    "tier",
    "partner_type",
    "partners_market_alignment",
    "partners_channel_reach",
    "marketing_commitments_count_todate",
    "marketing_adherence_rate_todate",
    "marketing_commitments_days_since_last",
    "activities_touchpoints_per30d_todate",
    "activities_trend_30d_vs_todate",
    "activities_response_hours_median_todate",
    "activities_touchpoints_trend_90d",
    "feedback_score_mean_todate",
    "deals_won_amount_todate",
    "deals_has_won_todate",
]
SPECIAL = [
    0.0,
    -0.0,
    0.5,
    -0.5,
    1.0,
    -1.0,
    1.5,
    2.5,
    0.04999,
    0.0005,
    0.00049999,
    0.995,
    999.5,
    999999.5,
    999999999999.6,
    1e12,
    1e15 - 0.4,
    1e15,
    1e18,
    1e300,
    float("nan"),
    float("inf"),
    float("-inf"),
]
numbers = st.one_of(
    st.sampled_from(SPECIAL),
    st.sampled_from(SPECIAL).map(lambda x: -x),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e7, 1e7),
    st.integers(-(10**6), 10**6).map(lambda i: i / 20),
)
CATEGORIES = ["gold", "silver", "value_added_reseller", "  two  spaces ", "unseen_value"]


# ---- the per-row reference ---------------------------------------------------------------


def _grouped(x: float, decimals: int) -> str:
    units = round(abs(x) * 10**decimals)  # half to even, like numpy's rint
    if decimals == 0:
        return f"{units:,}"
    return f"{units // 10**decimals:,}.{units % 10**decimals:0{decimals}d}"


def _signed(x: float, decimals: int) -> str:
    return ("-" if round(x * 10**decimals) < 0 else "") + _grouped(x, decimals)


def _plain(x: float) -> str:
    return _signed(x, 0) if abs(x - round(x)) < 1e-9 else _signed(x, 1)


def reference_value(value, spec, known: bool = True) -> str:
    """A feature value as text, one value at a time."""
    categorical = spec.kind == "categorical"
    missing = "unknown" if not known or categorical or spec.source == "partners" else "not yet"
    if categorical:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return missing
        return " ".join(str(value).replace("_", " ").split())
    x = float("nan") if value is None else float(value)
    if not math.isfinite(x):
        return missing
    if abs(x) >= 1e12:
        return f"{x:,.0f}"
    one = abs(round(x)) == 1
    unit = spec.unit
    if unit == "USD":
        return ("-$" if x <= -0.5 else "$") + _grouped(x, 0)
    if unit == "share":
        return _signed(x * 100, 0) + "%"
    if unit == "days":
        return _signed(x, 0) + (" day" if one else " days")
    if unit == "hours":
        return _signed(x, 1) + " hours"
    if unit == "rate/30d":
        return _signed(x, 1) + " per month"
    if unit.startswith("score"):
        return _signed(x, 1) + " of " + (unit.rsplit("-", 1)[-1] if "-" in unit else "5")
    if unit == "ratio":
        return _signed(x, 2) + "x"
    if unit == "accounts":
        return _plain(x) + (" account" if one and abs(x - 1) < 1e-9 else " accounts")
    return _plain(x)


def _finite(x: float) -> float:
    if math.isnan(x):
        return 0.0
    return math.copysign(sys.float_info.max, x) if math.isinf(x) else x


def reference_clause(revenue: float, engagement: float, positive: bool) -> str:
    """What a driver does to both heads, one row at a time."""
    r, e = _finite(revenue), _finite(engagement)
    r_txt = f"expected revenue by ${round(abs(r)):,}"
    e_txt = f"engagement likelihood by {_grouped(min(abs(e), 1.0) * 100, 1)} pts"
    r_show, e_show = abs(r) >= 0.5, abs(e) >= 0.0005
    r_up, e_up = r > 0, e > 0
    if not r_show and not e_show:
        return "barely moves expected revenue or engagement likelihood"
    both = r_show and e_show
    engagement_first = (r_up != positive and e_up == positive) if both else e_show
    first, first_up = (e_txt, e_up) if engagement_first else (r_txt, r_up)
    second, second_up = (r_txt, r_up) if engagement_first else (e_txt, e_up)
    out = ("raises " if first_up else "lowers ") + first
    if both:
        if second_up == first_up:
            out += " and " + second
        else:
            out += (" but raises " if second_up else " but lowers ") + second
    return out


def reference_sentence(spec, value, revenue, engagement, positive, known=True) -> str:
    """``<label>: <value> — <clause>``, one row at a time."""
    clause = reference_clause(revenue, engagement, positive)
    return f"{spec.label}: {reference_value(value, spec, known)} — {clause}"


def reference_drivers(specs, columns, categories, points, revenue, engagement, top):
    """Driver columns row by row: rank by points (ties: lower column), text each driver."""
    n, k = points.shape
    out = {f"driver_{s}_{j + 1}": [""] * n for s in ("pos", "neg") for j in range(top)}
    for i in range(n):
        for sign, positive in (("pos", True), ("neg", False)):
            order = sorted(range(k), key=lambda j: (-points[i, j] if positive else points[i, j], j))
            for slot, f in enumerate(order[:top]):
                p = points[i, f]
                if not (p > MIN_DRIVER_POINTS if positive else p < -MIN_DRIVER_POINTS):
                    continue
                spec = specs[f]
                known = spec.name in columns
                value = columns[spec.name][i] if known else None
                if spec.kind == "categorical" and value not in categories.get(spec.name, []):
                    value = None  # unseen categories read as missing, like the model
                text = reference_sentence(
                    spec, value, revenue[i, f], engagement[i, f], positive, known
                )
                out[f"driver_{sign}_{slot + 1}"][i] = text
    return out


# ---- properties ------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    rows=st.lists(
        st.tuples(numbers, numbers, numbers, st.booleans(), st.sampled_from(CATEGORIES + [None])),
        min_size=1,
        max_size=30,
    ),
    known=st.booleans(),
)
def test_sentences_equal_the_per_row_reference(name, rows, known):
    spec = get_spec(name)
    values = [c if spec.kind == "categorical" else v for v, _, _, _, c in rows]
    revenue = np.array([r for _, r, _, _, _ in rows])
    engagement = np.array([e for _, _, e, _, _ in rows])
    positive = np.array([p for _, _, _, p, _ in rows])
    expected = [
        reference_sentence(spec, v, r, e, p, known)
        for v, r, e, p in zip(values, revenue, engagement, positive, strict=True)
    ]
    # the Arrow path scoring uses: distinct values formatted once, clause pieces joined
    codes, texts = explain.value_text_codes(np.array(values, dtype=object), spec, known)
    prefix = [f"{spec.label}: {texts[c]} — " for c in codes]
    clauses = pc.binary_join_element_wise(
        *explain.clause_pieces(revenue, engagement, positive), ""
    ).to_pylist()
    assert [p + c for p, c in zip(prefix, clauses, strict=True)] == expected
    # the object-array functions (reports, what-if) agree too
    for flag in (True, False):
        part = positive == flag
        got = explain.driver_sentences(
            spec, np.array(values, dtype=object)[part], revenue[part], engagement[part], flag, known
        )
        assert got.tolist() == [t for t, keep in zip(expected, part, strict=True) if keep]


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    top=st.integers(1, 5),
    k=st.integers(1, 8),
    ties=st.booleans(),
)
def test_driver_columns_equal_the_per_row_reference(seed, n, top, k, ties):
    rng = np.random.default_rng(seed)
    pool = [s for s in feature_specs() if s.name in NAMES]
    specs = [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]
    categories = {s.name: ["gold", "silver", "value_added_reseller"] for s in specs}
    specials = np.array([v for v in SPECIAL if math.isfinite(v)] + [np.nan])
    columns = {}
    for spec in specs[: max(1, k - 1)]:  # the last feature's column is absent (unknown)
        if spec.kind == "categorical":
            pick = rng.choice(len(CATEGORIES) + 1, size=n)
            columns[spec.name] = [(CATEGORIES + [None])[j] for j in pick]
        else:
            values = rng.normal(0, 10 ** rng.uniform(0, 7), size=n)
            special = rng.random(n) < 0.4
            values[special] = rng.choice(specials, size=special.sum())
            columns[spec.name] = values.tolist()
    as_objects = rng.random() < 0.5  # numbers in object columns, or float64 ones
    features = pd.DataFrame(
        {
            name: np.array(v, dtype=object if as_objects or isinstance(v[0], str | None) else float)
            for name, v in columns.items()
        }
    )
    if ties:  # many equal points: the ranking's tie rule decides
        points = rng.choice([-1.0, -0.05, 0.0, 0.05, 0.06, 2.0], size=(n, k))
    else:
        points = rng.normal(0, 1, size=(n, k))
    revenue = rng.normal(0, 10 ** rng.uniform(-1, 6), size=(n, k))
    engagement = rng.normal(0, 0.05, size=(n, k))
    revenue[rng.random((n, k)) < 0.1] = 0.0
    engagement[rng.random((n, k)) < 0.1] = 0.0
    model = PartnerModel(
        revenue=RevenueRegressor(),
        engagement=EngagementClassifier(),
        feature_specs=specs,
        categories=categories,
    )
    got = _drivers(model, features, points, revenue, engagement, top)
    expected = reference_drivers(specs, columns, categories, points, revenue, engagement, top)
    assert list(got) == list(expected)
    for name, texts in expected.items():
        assert got[name].dtype == "str"
        assert list(got[name]) == texts, name


@settings(max_examples=100, deadline=None)
@given(
    points=st.lists(
        st.lists(
            st.one_of(st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.05]), numbers),
            min_size=1,
            max_size=9,
        ).map(lambda row: row + [0.0] * (9 - len(row))),
        min_size=1,
        max_size=12,
    ),
    m=st.integers(1, 12),
    positive=st.booleans(),
)
def test_top_features_is_the_stable_sort(points, m, positive):
    p = np.array(points)
    finite = np.nan_to_num(p, nan=0.0, posinf=7.0, neginf=-7.0)  # the argmax passes
    for values in (p, finite):
        key = -values if positive else values
        expected = np.argsort(key, axis=1, kind="stable")[:, :m]
        np.testing.assert_array_equal(top_features(values, m, positive), expected)
