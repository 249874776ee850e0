"""The monitor's phase backtest reads each history row with the phasing of the version that
scored it: a row-by-row twin, a store with two versions, and the registry lookup."""

import mlflow
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.features.config import MonitorConfig
from partnerscore.features.validate import load_raw
from partnerscore.models.phasing import RevenuePhasing
from partnerscore.models.pyfunc import load_partner_model
from partnerscore.serving.history import ScoreHistory
from partnerscore.serving.monitor import phase_checks, registry_phasings, row_shares, run_backtest
from partnerscore.serving.score import run_score
from partnerscore.training.reference import load_reference_profile

AS_OF = pd.Timestamp("2026-07-01")
PAST = ("2025-06-01", "2025-10-01")


def _phasing(rng, k=3, ages=(30.0, 90.0), phase_days=30, horizon=90):
    return RevenuePhasing(
        phase_days,
        horizon,
        list(rng.dirichlet(np.ones(k))),
        list(ages),
        [list(rng.dirichlet(np.ones(k))) for _ in ages],
    )


def test_phasing_description_round_trips():
    rng = np.random.default_rng(3)
    phasing = _phasing(rng, ages=(30.0, 60.0, 180.0))
    again = RevenuePhasing.from_dict(phasing.to_dict())
    ages = np.array([0.0, 30.0, 45.0, 60.0, 179.0, 180.0, 1e9, np.nan])
    np.testing.assert_array_equal(again.shares(ages), phasing.shares(ages))
    assert again.to_dict() == phasing.to_dict()
    for bad in (None, {}, {"phase_days": 30}, {"phase_days": "x", "horizon_days": 90}, [1]):
        assert RevenuePhasing.from_dict(bad) is None
    assert phasing.same_layout(90, 30, 3)
    assert not phasing.same_layout(180, 30, 3) and not phasing.same_layout(90, 45, 3)
    assert not phasing.same_layout(90, 30, 2)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["1", "2", "3", "4", ""]),
            st.one_of(st.sampled_from([0.0, 30.0, 90.0, 1e12]), st.floats(-1e3, 1e6)),
        ),
        min_size=0,
        max_size=40,
    ),
    seed=st.integers(0, 2**16),
)
def test_row_shares_equal_a_row_by_row_reading(rows, seed):
    rng = np.random.default_rng(seed)
    monitored = _phasing(rng)
    known = {
        "1": monitored,
        "2": _phasing(rng, ages=(60.0,)),
        "3": _phasing(rng, phase_days=45, k=2),  # another layout: falls back
        "4": None,  # trained before profiles kept a phasing
    }
    frame = pd.DataFrame(
        {"model_version": [v for v, _ in rows], "age_days": [a for _, a in rows]},
        columns=["model_version", "age_days"],
    )
    shares, fallback = row_shares(frame, monitored, lambda v: known.get(v))
    assert shares.shape == (len(rows), 3)
    expect_fallback = 0
    for i, (version, age) in enumerate(rows):
        own = known.get(version)
        if own is None or own.phase_days != 30:
            own, expect_fallback = monitored, expect_fallback + 1
        np.testing.assert_array_equal(shares[i], own.shares(np.array([age]))[0])
    assert fallback == expect_fallback
    # no lookup: every row is read with the monitored model's phasing
    plain, all_rows = row_shares(frame, monitored)
    np.testing.assert_array_equal(plain, monitored.shares(frame["age_days"].to_numpy(float)))
    assert all_rows == len(rows)


@pytest.fixture()
def two_versions(store_config, raw_dir, tmp_path):
    """A history whose 2025-06-01 rows are relabelled as scored by version 2."""
    for as_of in PAST:
        run_score(raw_dir, pd.Timestamp(as_of).date(), "champion", tmp_path / f"s{as_of}.csv",
                  store_config)  # fmt: skip
    rows = ScoreHistory(store_config.paths.history_database()).read()
    version = rows["model_version"].astype(str)
    assert set(version) == {"1"}
    rows["model_version"] = np.where(rows["as_of"] == pd.Timestamp(PAST[0]), "2", version)
    store = ScoreHistory(f"sqlite:///{tmp_path / 'two.db'}")
    store.upsert(rows)
    return store, rows


def test_each_version_is_read_with_its_own_phasing(store_config, raw_dir, two_versions):
    store, rows = two_versions
    mlflow.set_tracking_uri(store_config.paths.tracking_uri())
    uri = f"models:/{store_config.train.registered_model}/1"
    champion = load_partner_model(uri).phasing
    reference = load_reference_profile(uri)
    raw = load_raw(raw_dir, write_quarantine=False)
    rng = np.random.default_rng(11)
    other = RevenuePhasing(
        champion.phase_days, champion.horizon_days, list(rng.dirichlet(np.ones(6)))
    )
    known = {"1": champion, "2": other}
    joined, _, table, _ = run_backtest(
        store, raw, AS_OF, reference, store_config, champion, known.get
    )
    assert set(joined["model_version"]) == {"1", "2"}
    # the twin: each row's expected revenue per phase with its version's shares
    expected = np.zeros(champion.n_phases)
    for rec in joined.itertuples():
        own = known[rec.model_version]
        expected += rec.pred_revenue * own.shares(np.array([rec.age_days]))[0]
    np.testing.assert_allclose(table["expected_revenue"], expected, rtol=1e-9)
    assert (table["rows_fallback_phasing"] == 0).all()
    # version 2 unknown: its rows are read with the monitored model's phasing, and counted
    _, _, fallback, _ = run_backtest(
        store, raw, AS_OF, reference, store_config, champion, {"1": champion}.get
    )
    n2 = int((joined["model_version"] == "2").sum())
    assert 0 < n2 < len(joined)
    assert (fallback["rows_fallback_phasing"] == n2).all()
    plain = np.zeros(champion.n_phases)
    for rec in joined.itertuples():
        plain += rec.pred_revenue * champion.shares(np.array([rec.age_days]))[0]
    np.testing.assert_allclose(fallback["expected_revenue"], plain, rtol=1e-9)
    assert not np.allclose(plain, expected)
    np.testing.assert_allclose(fallback["realised_revenue"], table["realised_revenue"])
    # the check says how many rows were read with a borrowed phasing
    (check,) = phase_checks(fallback, MonitorConfig())
    assert f"({n2:,} of them read with the monitored model's phasing" in check.detail
    (check,) = phase_checks(table, MonitorConfig())
    assert "monitored model's phasing" not in check.detail


def test_registry_lookup_reads_the_logged_profile(store_config):
    mlflow.set_tracking_uri(store_config.paths.tracking_uri())
    name = store_config.train.registered_model
    champion = load_partner_model(f"models:/{name}@champion").phasing
    assert load_reference_profile(f"models:/{name}@champion")["revenue_phasing"] == (
        champion.to_dict()
    )
    # the monitored version's phasing is the loaded model's, not a registry read
    sentinel = RevenuePhasing(30, 180, [1 / 6] * 6)
    of = registry_phasings(f"models:/{name}@champion", "1", sentinel, "unused")
    assert of("1") is sentinel
    # another version: read from its run's profile (here version 1 under another monitored one)
    of = registry_phasings("runs:/0123456789abcdef/model", "", None, name)
    assert of("1").to_dict() == champion.to_dict()
    for unknown in ("99", "", "not-a-version"):
        assert of(unknown) is None
