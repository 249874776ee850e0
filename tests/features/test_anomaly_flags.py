"""Vectorised partner anomaly flags and text-id lookups against their obvious twins."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.features.anomaly import ANOMALY_COLUMNS, partner_flags, row_nanmedian
from partnerscore.features.core import isin_text


def partner_flags_reference(partner_ids, anomalies, max_reasons=3):
    """The per-partner loop the scoring job used before (the obviously correct twin)."""
    ids = pd.Series(partner_ids, dtype=object).astype(str).reset_index(drop=True)
    reasons = {}
    if not anomalies.empty:
        ordered = anomalies.assign(_s=anomalies["score"].fillna(np.inf)).sort_values(
            ["partner_id", "_s"], ascending=[True, False], kind="stable"
        )
        for pid, group in ordered.groupby("partner_id", sort=False):
            texts = list(dict.fromkeys(group["reason"].astype(str)))
            text = "; ".join(texts[:max_reasons])
            if len(texts) > max_reasons:
                text += f"; and {len(texts) - max_reasons} more"
            reasons[str(pid)] = text
    reason = ids.map(reasons).fillna("")
    return pd.DataFrame(
        {"partner_id": ids, "anomaly": (reason != "").to_numpy(), "anomaly_reason": reason}
    )


rows = st.lists(
    st.tuples(
        st.sampled_from(["P1", "P2", "P3", "P10", "007"]),
        st.one_of(st.none(), st.floats(-5, 50, allow_nan=False)),
        st.sampled_from(["deal spike", "late delivery", "feature out of range", "volume"]),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(rows=rows, max_reasons=st.integers(1, 4), order=st.permutations(["P1", "P2", "P3", "P4"]))
def test_partner_flags_equal_the_per_partner_loop(rows, max_reasons, order):
    anomalies = pd.DataFrame(
        {
            "table": "deals",
            "record_id": [f"r{i}" for i in range(len(rows))],
            "partner_id": [r[0] for r in rows],
            "occurred_at": pd.Timestamp("2025-01-01"),
            "column": "amount",
            "value": 1.0,
            "score": pd.array([np.nan if r[1] is None else r[1] for r in rows], dtype=float),
            "reason": [r[2] for r in rows],
        },
        columns=list(ANOMALY_COLUMNS),
    )
    ids = [*order, "007"]
    got = partner_flags(ids, anomalies, max_reasons)
    want = partner_flags_reference(ids, anomalies, max_reasons)
    assert got["partner_id"].tolist() == want["partner_id"].tolist()
    assert got["anomaly"].tolist() == want["anomaly"].tolist()
    assert got["anomaly_reason"].tolist() == want["anomaly_reason"].tolist()


def test_partner_flags_counts_the_reasons_left_out():
    anomalies = pd.DataFrame(
        {
            "partner_id": ["P1"] * 5,
            "score": [1.0, 5.0, np.nan, 3.0, 5.0],
            "reason": ["a", "b", "c", "d", "b"],
        }
    )
    got = partner_flags(["P1", "P2"], anomalies, max_reasons=2)
    assert got["anomaly_reason"].tolist() == ["c; b; and 2 more", ""]
    assert got["anomaly"].tolist() == [True, False]


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.sampled_from(["P1", "P2", "01", "1", "", "x y"]), max_size=20),
    universe=st.lists(st.sampled_from(["P1", "01", "", "z"]), max_size=20),
)
def test_isin_text_equals_pandas_isin(values, universe):
    want = pd.Series(values, dtype="str").isin(pd.Series(universe, dtype="str")).to_numpy()
    assert isin_text(pd.Series(values, dtype="str"), universe).tolist() == want.tolist()
    assert isin_text(values, set(universe)).tolist() == want.tolist()


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.one_of(st.just(np.nan), st.floats(0, 20)), min_size=3, max_size=3),
        min_size=1,
        max_size=12,
    )
)
def test_row_nanmedian_equals_numpy(rows):
    import warnings

    values = np.array(rows, dtype=float)
    with warnings.catch_warnings():  # all-NaN rows warn in numpy
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanmedian(values, axis=1)
    assert np.array_equal(row_nanmedian(values), want, equal_nan=True)
