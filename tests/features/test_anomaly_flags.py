"""Vectorised partner anomaly flags and text-id lookups against their obvious twins."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from partnerscore.features.anomaly import ANOMALY_COLUMNS, partner_flags
from partnerscore.features.core import isin_text


def row_nanmedian(values: np.ndarray) -> np.ndarray:
    """``np.nanmedian(values, axis=1)``, exactly, without its per-row Python loop on wide arrays.

    Each row is sorted (missing values last); the median of its ``k`` present values is the
    middle one, or the mean of the two middle ones; NaN when none is present (no warning).
    """
    x = np.sort(np.asarray(values, dtype=float), axis=1)
    n, width = x.shape
    out = np.full(n, np.nan)
    if width == 0:
        return out
    k = (~np.isnan(x)).sum(axis=1)
    rows = np.arange(n)
    lo = x[rows, np.maximum(k - 1, 0) // 2]
    hi = x[rows, k // 2]  # k <= width, so k // 2 < width
    return np.where(k == 0, np.nan, np.where(k % 2 == 1, lo, (lo + hi) / 2))


def partner_flags_reference(partner_ids, anomalies, max_reasons=3):
    """The per-partner loop the scoring job used before (the obviously correct twin)."""
    ids = pd.Series(partner_ids, dtype=object).astype(str).reset_index(drop=True)
    reasons = {}
    if not anomalies.empty:
        ordered = anomalies.assign(_s=anomalies["score"].fillna(np.inf)).sort_values(
            ["partner_id", "_s", "reason"], ascending=[True, False, True], kind="stable"
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


def before_reference(frame, table, as_of):
    """The rows before as_of as the checks selected them before (the twin): a filtered copy."""
    from partnerscore.features.anomaly import EVENT_TIME

    when = pd.to_datetime(frame[EVENT_TIME[table][1]])
    return frame[(when < as_of).to_numpy()].reset_index(drop=True)


deal_rows = st.lists(
    st.tuples(
        st.sampled_from(["P1", "P2", "P3", "P10", "007", None]),
        st.one_of(st.none(), st.integers(0, 400)),  # created, days after 2024-01-01
        st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False)),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(rows=deal_rows, cut=st.integers(0, 420))
def test_rows_before_as_of_equal_the_filtered_frame(rows, cut):
    from partnerscore.features.anomaly import _Before

    start = pd.Timestamp("2024-01-01")
    frame = pd.DataFrame(
        {
            "deal_id": pd.array([f"D{i}" for i in range(len(rows))], dtype="str"),
            "partner_id": pd.array([r[0] for r in rows], dtype="str"),
            "created_at": pd.to_datetime(
                [pd.NaT if r[1] is None else start + pd.Timedelta(days=r[1]) for r in rows]
            ),
            "closed_at": pd.NaT,
            "amount": [np.nan if r[2] is None else r[2] for r in rows],
            "status": "won",
        }
    )
    as_of = start + pd.Timedelta(days=cut)
    fast, slow = _Before(frame, "deals", as_of), before_reference(frame, "deals", as_of)
    assert fast.size == len(slow) and fast.empty == slow.empty
    numeric = fast.numeric()
    assert "partner_id" not in numeric and "deal_id" not in numeric
    pd.testing.assert_frame_equal(numeric, slow[list(numeric.columns)])
    codes, uniques = fast.partners()
    want_codes, want_uniques = pd.factorize(slow["partner_id"].astype(str))
    np.testing.assert_array_equal(codes, want_codes)
    assert list(uniques) == list(np.asarray(want_uniques, dtype=object))
    idx = np.arange(len(slow))[::2]
    assert list(fast.record_ids(idx)) == list(slow["deal_id"].astype(str).to_numpy()[idx])
    assert list(fast.text("partner_id", idx)) == list(
        slow["partner_id"].astype(str).to_numpy()[idx]
    )


class BeforeReference:
    """``anomaly._Before`` the obvious way: a filtered copy of the whole frame (the twin)."""

    def __init__(self, frame, table, as_of):
        self.frame, self.table = before_reference(frame, table, as_of), table
        self.size, self.empty = len(self.frame), self.frame.empty
        self.as_of = np.asarray(pd.Timestamp(as_of).to_datetime64())  # one date for all

    def cuts(self):
        return self.as_of

    def partner_cuts(self):
        return np.full(len(self.partners()[1]), self.as_of)

    def numeric(self):
        return self.frame

    def when(self):
        from partnerscore.features.anomaly import EVENT_TIME

        return pd.to_datetime(self.frame[EVENT_TIME[self.table][1]]).to_numpy()

    def partners(self):
        codes, uniques = pd.factorize(self.frame["partner_id"].astype(str))
        return codes, np.asarray(uniques, dtype=object)

    def text(self, column, idx):
        return self.frame[column].astype(str).to_numpy()[idx]

    def record_ids(self, idx):
        from partnerscore.features.anomaly import EVENT_TIME

        id_col = EVENT_TIME[self.table][0]
        if id_col and id_col in self.frame:
            return self.text(id_col, idx)
        return np.array([f"row {i + 2}" for i in idx], dtype=object)


def test_raw_anomalies_equal_the_filtered_frame_twin(raw_dir, tmp_path, monkeypatch):
    """Rows selected once per table, text taken only for hits == filtering each frame anew."""
    from partnerscore.features import anomaly
    from partnerscore.features.config import MonitorConfig
    from partnerscore.features.validate import load_raw

    tables = load_raw(raw_dir, tmp_path / "q").tables
    config = MonitorConfig(outlier_z=2.0, partner_z=1.0, partner_min_history=2)  # low bars
    cuts = (pd.Timestamp("2025-06-01"), pd.Timestamp("2026-01-15"))
    fast = [anomaly.raw_anomalies(tables, cut, config) for cut in cuts]
    monkeypatch.setattr(anomaly, "_Before", BeforeReference)
    slow = [anomaly.raw_anomalies(tables, cut, config) for cut in cuts]
    for got, want in zip(fast, slow, strict=True):
        assert len(want) > 0 and set(want["column"]) > {"events_last_30_days"}  # not vacuous
        pd.testing.assert_frame_equal(got, want)


def test_batch_statistics_per_partner_group_equal_the_whole_batch(raw_dir, tmp_path):
    """Checks run on partner groups with ``batch_statistics`` of the whole batch (what the Spark
    engine does) list exactly the whole batch's anomalies, group by group; the statistics are
    computed from the checks' columns alone. (``record_id`` of a table without an id column is
    the row's position among the rows checked, so it is a group's position here: distinct per
    row either way, which is all the partner flags use it for.)"""
    from partnerscore.features import anomaly
    from partnerscore.features.config import MonitorConfig
    from partnerscore.features.core import isin_text
    from partnerscore.features.validate import load_raw

    tables = load_raw(raw_dir, tmp_path / "q").tables
    config = MonitorConfig(outlier_z=2.0, partner_z=1.0, partner_min_history=2)  # low bars
    cut = pd.Timestamp("2026-01-15")
    whole = anomaly.raw_anomalies(tables, cut, config)
    slim = {n: f[[c for c in f.columns if c in anomaly.READ_COLUMNS]] for n, f in tables.items()}
    robust = anomaly.batch_statistics(slim, cut)
    assert robust == anomaly.batch_statistics(tables, cut) and len(robust) >= 5
    ids = tables["partners"]["partner_id"].astype(str)
    key = ["partner_id", "table", "column", "occurred_at", "value"]
    parts = []
    for group in range(3):
        mine = ids[np.arange(len(ids)) % 3 == group]
        part = {n: f[isin_text(f["partner_id"].astype(str), mine)] for n, f in tables.items()}
        part = {n: f.reset_index(drop=True) for n, f in part.items()}
        parts.append(anomaly.raw_anomalies(part, cut, config, robust=robust))
    got = pd.concat(parts, ignore_index=True).drop(columns=["record_id"])
    want = whole.drop(columns=["record_id"])
    assert len(want) > 0
    pd.testing.assert_frame_equal(
        got.sort_values(key, ignore_index=True), want.sort_values(key, ignore_index=True)
    )


event_days = st.lists(
    st.one_of(st.none(), st.integers(-40_000, 40_000)),  # days from 2024-01-01; None: NaT
    min_size=0,
    max_size=30,
)


@settings(max_examples=40, deadline=None)
@given(days=event_days, cut=st.integers(-100, 500))
@example(days=[0], cut=1)  # no deal closed before the cut-off: NaN statistics on both sides
def test_snapshot_statistics_equal_batch_statistics_of_the_frames(days, cut):
    """A validated snapshot's statistics (each table's read columns from its Parquet file)
    equal ``batch_statistics`` of the frames; extreme and missing dates too."""
    import tempfile
    from pathlib import Path

    from partnerscore.features import anomaly

    start = pd.Timestamp("2024-01-01")
    when = [pd.NaT if d is None else start + pd.Timedelta(days=d) for d in days]
    frame = pd.DataFrame(
        {
            "deal_id": pd.array([f"D{i}" for i in range(len(days))], dtype="str"),
            "partner_id": pd.array([f"P{i % 3}" for i in range(len(days))], dtype="str"),
            "created_at": pd.to_datetime(pd.Series(when, dtype="datetime64[ns]")),
            "closed_at": pd.to_datetime(pd.Series(when, dtype="datetime64[ns]"))
            + pd.Timedelta(days=3),
            "amount": np.arange(len(days), dtype=float) * 10.0,
        }
    )
    as_of = start + pd.Timedelta(days=cut)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "deals.parquet"
        frame.to_parquet(path, index=False)
        events = Path(folder) / "portal_events.parquet"  # no measure: not read
        frame[["partner_id", "created_at"]].to_parquet(events, index=False)
        got = anomaly.snapshot_statistics(
            {"deals": path, "portal_events": events}, frame.iloc[:0], as_of
        )
    # NaN where no value is before the cut-off: equal as values (float("nan") is not itself)
    np.testing.assert_equal(got, anomaly.batch_statistics({"deals": frame}, as_of))


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.one_of(st.none(), st.integers(0, 6)), min_size=0, max_size=9),
        min_size=1,
        max_size=6,
    )
)
def test_median_with_zeros_equals_the_dense_rows(rows):
    """The volume check's sparse medians (events per period; empty periods as zeros, then the
    deviations from the centre) equal ``row_nanmedian`` of the dense rows (the twin)."""
    from partnerscore.features.anomaly import _median_with_zeros

    width = max(len(r) for r in rows)
    # a row's periods: its length (None: beyond it); 0 events is an empty period
    dense = np.full((len(rows), max(width, 1)), np.nan)
    for i, r in enumerate(rows):
        dense[i, : len(r)] = [0 if v is None else v for v in r]
    logs = np.log1p(dense)
    sizes = np.array([len(r) for r in rows], dtype=np.int64)
    owner, counts = [], []
    for i, r in enumerate(rows):
        for v in r:
            if v:  # only periods with events are stored
                owner.append(i)
                counts.append(v)
    owner = np.array(owner, dtype=np.int64)
    values = np.log1p(np.array(counts, dtype=float))
    center = _median_with_zeros(owner, values, sizes)
    np.testing.assert_array_equal(center, row_nanmedian(logs))
    mad = _median_with_zeros(owner, np.abs(values - center[owner]), sizes, center)
    np.testing.assert_array_equal(mad, row_nanmedian(np.abs(logs - center[:, None])))


def _volume_program(hostile_when: str | None) -> dict[str, pd.DataFrame]:
    """P1 signed 2024-01-01, 2 portal events per 30 days from mid 2025, then a recent spike of
    20; with ``hostile_when``, partner PX (signed 2025-01-01) has one event then."""
    as_of = pd.Timestamp("2026-03-01")
    when = [as_of - pd.Timedelta(days=30 * k + d) for k in range(1, 9) for d in (3, 11)]
    when += [as_of - pd.Timedelta(days=1, hours=h) for h in range(20)]
    ids = ["P1"] * len(when)
    if hostile_when is not None:
        when.append(pd.Timestamp(hostile_when))
        ids.append("PX")
    partners = pd.DataFrame(
        {
            "partner_id": pd.array(["P1", "PX"], dtype="str"),
            "signed_at": pd.to_datetime(["2024-01-01", "2025-01-01"]),
            "channel_reach": [10.0, 10.0],
        }
    )
    events = pd.DataFrame(
        {"partner_id": pd.array(ids, dtype="str"), "occurred_at": pd.to_datetime(when)}
    )
    return {"partners": partners, "portal_events": events}


def test_volume_spikes_of_a_partner_ignore_other_partners_oldest_event():
    """A partner's event counts were compared with its 30-day periods since signing, but only
    back to the table's oldest event before as_of, whoever's it was: one event of another
    partner dated 1900 (or any day before this partner's first event) added this partner's
    quiet periods and changed its flag and reason (and built a partners x periods array of
    ~1,500 periods per partner). Each partner's periods since its own signing now count,
    empty ones as 0, whatever other partners' rows hold."""
    from partnerscore.features.anomaly import raw_anomalies
    from partnerscore.features.config import MonitorConfig

    config = MonitorConfig(partner_z=2.0, partner_min_history=3)
    as_of = pd.Timestamp("2026-03-01")
    alone = raw_anomalies(_volume_program(None), as_of, config)
    assert alone["partner_id"].tolist() == ["P1"]
    for when in ("1900-01-01", "2024-06-01", "2025-02-01", "2026-02-20"):
        got = raw_anomalies(_volume_program(when), as_of, config)
        pd.testing.assert_frame_equal(got[got["partner_id"] == "P1"], alone)
    # since signing (2024-01-01): 25 full periods before the last 30 days, 17 of them empty
    assert "typical 0.0 per 30 days" in alone["reason"].iat[0]


def test_one_partners_many_rows_do_not_set_the_table_outlier_centre(sim_tables):
    """The table's median and MAD were taken over rows: one partner with more deals than all
    others together (1,000 deals of $100) made the MAD 0 and flagged 225 other partners'
    ordinary deals at ~4.8e9 robust SDs (and 1,000 deals of 1e300 the same through their
    one-day cycles). Each partner's rows now weigh 1 in all: the hostile partner moves the
    centre by one partner's weight, and no other partner is flagged."""
    from partnerscore.features.anomaly import raw_anomalies, robust_center_scale
    from partnerscore.features.config import MonitorConfig

    tables = {k: v for k, v in sim_tables.items() if k != "truth"}
    cut, config = pd.Timestamp("2026-03-01"), MonitorConfig()
    assert raw_anomalies(tables, cut, config).empty
    partners, deals = tables["partners"], tables["deals"]
    one = partners.iloc[:1].assign(partner_id="PX", signed_at=pd.Timestamp("2023-01-01"))
    for amount in (100.0, 1e300):
        many = pd.DataFrame(
            {
                "deal_id": [f"X{i}" for i in range(1000)],
                "partner_id": "PX",
                "created_at": pd.Timestamp("2024-01-01"),
                "closed_at": pd.Timestamp("2024-01-02"),
                "amount": amount,
                "status": "won",
            }
        ).astype({c: deals[c].dtype for c in deals.columns})
        hostile = dict(
            tables,
            partners=pd.concat([partners, one], ignore_index=True),
            deals=pd.concat([deals, many], ignore_index=True),
        )
        found = raw_anomalies(hostile, cut, config)
        assert set(found["partner_id"]) <= {"PX"}
    # equal weights (one row per partner): the plain median and MAD
    x = np.array([1.0, 5.0, 2.0, 9.0, 4.0, 4.0])
    plain = robust_center_scale(x)
    assert robust_center_scale(x, partners=np.arange(6)) == plain
    # a partner's rows weigh 1 in all: P0's three rows count as one value among four
    assert robust_center_scale(x, partners=np.array([0, 1, 0, 2, 0, 3]))[0] == 4.5


def test_per_partner_cutoffs_equal_each_partners_own_date(sim_tables):
    """Under ``score --at-age`` the raw checks ran at one date for everyone, the batch's newest
    milestone: a partner signed after every other moved it and flipped other partners' flags
    (``tests/serving/test_score_isolation.py``, example LATE), and a partner scored at its
    30-day milestone in 2023 was flagged for rows of 2026. Given partner_id -> as_of, each
    partner's own-history checks equal the one-date checks at its date (the twin), and one
    date for everyone equals the one-date checks."""
    from partnerscore.features.anomaly import partner_outliers, raw_anomalies
    from partnerscore.features.config import MonitorConfig

    tables = {k: v for k, v in sim_tables.items() if k != "truth"}
    config = MonitorConfig(outlier_z=2.0, partner_z=1.0, partner_min_history=2)  # low bars
    partners = tables["partners"].iloc[::7]
    cuts = pd.Series(
        (partners["signed_at"] + pd.Timedelta(days=400)).to_numpy(),
        index=partners["partner_id"].astype(str).to_numpy(),
    )
    got = partner_outliers(tables, config=config, as_of=cuts)
    assert set(got["partner_id"]) <= set(cuts.index) and got["partner_id"].nunique() >= 5
    for pid, cut in cuts.items():
        want = partner_outliers(tables, pd.Timestamp(cut), config)
        want = want[want["partner_id"] == pid].reset_index(drop=True)
        mine = got[got["partner_id"] == pid].reset_index(drop=True)
        # occurred_at's unit is the rows' (event times: seconds here; a volume row's window
        # start: microseconds), so one partner's rows alone may differ in dtype, not in value
        pd.testing.assert_frame_equal(mine, want, check_dtype=False)
    cut = pd.Timestamp("2026-01-15")
    everyone = pd.Series(cut, index=tables["partners"]["partner_id"].astype(str).to_numpy())
    pd.testing.assert_frame_equal(
        raw_anomalies(tables, everyone, config), raw_anomalies(tables, cut, config)
    )


def expanded_median(values, partners) -> float:
    """The plain median of the rows repeated so that each partner weighs 1 in all: partner p's
    ``c_p`` rows are each repeated ``L / c_p`` times (``L`` the counts' least common multiple)."""
    import math

    counts = {p: list(partners).count(p) for p in set(partners)}
    lcm = math.lcm(*counts.values())
    rows = sorted(v for v, p in zip(values, partners, strict=True) for _ in range(lcm // counts[p]))
    n = len(rows)
    return rows[n // 2] if n % 2 else (rows[n // 2 - 1] + rows[n // 2]) / 2


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 3),
            st.one_of(
                st.sampled_from([0.0, 10.0]),  # ties: the cumulative weight meets half exactly
                st.sampled_from([0.0, 1.0, 10.0, 1e-300, 700.0]),
                st.floats(-1e6, 1e6, width=32),
            ),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_partner_weighted_centre_and_spread_equal_the_expanded_rows(rows):
    """Each partner weighs 1: the centre and MAD equal the plain median and MAD of the rows
    repeated to equal partner weights. The cumulative weights (sums of 1/count) were compared
    with half the total exactly, so two partners of 6 rows each, one all at 0 and one all at
    10, had the centre 10 (7 rows each: 0), where the repeated rows' median is 5."""
    from partnerscore.features.anomaly import MAD_TO_SD, robust_center_scale

    partners = [p for p, _ in rows]
    x = np.array([v for _, v in rows])
    center, scale = robust_center_scale(x, partners=np.array(partners))
    want = expanded_median(x.tolist(), partners)
    assert center == pytest.approx(want, rel=1e-12, abs=1e-300)
    spread = MAD_TO_SD * expanded_median([abs(v - center) for v in x.tolist()], partners)
    assert scale == pytest.approx(max(spread, 1e-9), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("count", range(1, 30))
def test_two_partners_of_equal_rows_have_the_centre_between_them(count):
    from partnerscore.features.anomaly import robust_center_scale

    x = np.concatenate([np.zeros(count), np.full(count, 10.0)])
    partners = np.repeat([0, 1], count)
    assert robust_center_scale(x, partners=partners)[0] == 5.0


def test_a_batch_without_anomalies_gets_empty_reasons_without_a_pandas_warning():
    """No anomaly at all mapped every partner to float NaN, filled with text under pandas'
    Pandas4Warning (an error in pandas 4); the reasons are now text throughout."""
    import warnings

    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in ANOMALY_COLUMNS})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flags = partner_flags(["P1", "P2"], empty)
    assert flags["anomaly_reason"].tolist() == ["", ""]
    assert not flags["anomaly"].any()
