import re
from itertools import product

import numpy as np
import pandas as pd
import pytest

from partnerscore.features.config import BuildConfig, SimulateConfig
from partnerscore.features.contract import TABLES
from partnerscore.features.pipeline import build_labels, make_snapshots
from partnerscore.features.simulate import (
    close_share,
    poisson_binomial_tail,
    run_simulate,
    simulate_program,
    write_tables,
)

DATED = {
    "deals": ("created_at", "closed_at"),
    "activities": ("occurred_at",),
    "trainings": ("enrolled_at", "completed_at"),
    "portal_events": ("occurred_at",),
    "marketing_commitments": ("committed_at", "delivered_at"),
    "leads": ("created_at", "qualified_at", "converted_at"),
    "feedback": ("submitted_at",),
}
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2})?$")


def _contract_tables(tables):
    return {k: v for k, v in tables.items() if k != "truth"}


def _won_revenue(tables):
    won = tables["deals"].query("status == 'won'").groupby("partner_id")["amount"].sum()
    return won.reindex(tables["partners"]["partner_id"], fill_value=0.0)


def test_deterministic_and_seed_sensitive(sim_tables, sim_config):
    again = simulate_program(sim_config)
    for name, frame in sim_tables.items():
        pd.testing.assert_frame_equal(frame, again[name])
    other = simulate_program(sim_config.model_copy(update={"seed": sim_config.seed + 1}))
    for name in ("partners", "deals", "activities", "truth"):
        assert not other[name].equals(sim_tables[name]), name


def test_every_contract_table_column_and_kind(sim_tables):
    assert set(sim_tables) == set(TABLES) | {"truth"}
    for name, spec in TABLES.items():
        frame = sim_tables[name]
        assert list(frame.columns) == [c.name for c in spec.columns], name
        assert len(frame) > 0, name
        for col in spec.columns:
            values = frame[col.name]
            if col.kind in ("date", "datetime"):
                assert pd.api.types.is_datetime64_dtype(values), (name, col.name)
                assert values.dt.tz is None
            elif col.kind == "float":
                assert values.dtype == np.float64, (name, col.name)
            elif col.kind == "bool":
                assert values.dtype == bool, (name, col.name)
            else:
                assert pd.api.types.is_string_dtype(values), (name, col.name)
            if not col.nullable:
                assert values.notna().all(), (name, col.name)
            if col.choices:
                assert set(values.dropna()) <= set(col.choices), (name, col.name)
            if col.min is not None:
                assert (values.dropna() >= col.min).all(), (name, col.name)
            if col.max is not None:
                assert (values.dropna() <= col.max).all(), (name, col.name)
        if spec.key:
            assert frame[spec.key].is_unique, name
        if spec.references_partner:
            assert frame["partner_id"].isin(sim_tables["partners"]["partner_id"]).all(), name


def test_id_formats_and_untrusted_names(sim_tables):
    formats = {
        "partners": ("partner_id", r"P\d{5}"),
        "deals": ("deal_id", r"D\d{7}"),
        "activities": ("activity_id", r"A\d{8}"),
        "marketing_commitments": ("commitment_id", r"M\d{7}"),
        "leads": ("lead_id", r"L\d{7}"),
    }
    for table, (col, pattern) in formats.items():
        assert sim_tables[table][col].str.fullmatch(pattern).all(), table
    names = sim_tables["partners"]["partner_name"]
    assert names.str.len().gt(2).all()
    assert names.str.contains("&", regex=False).any()
    assert names.str.contains("'", regex=False).any()
    assert names.str.contains(",", regex=False).any()
    assert names.map(lambda s: not s.isascii()).any()
    assert names.nunique() > 0.8 * len(names)


def test_heterogeneous_program(sim_tables, sim_config):
    partners = sim_tables["partners"]
    assert set(partners["tier"]) == {"registered", "silver", "gold", "platinum"}
    assert set(partners["region"]) == {"NA", "EMEA", "APAC", "LATAM"}
    assert set(partners["partner_type"]) == {"reseller", "referral", "msp", "si"}
    assert partners["industry"].nunique() >= 5
    span = partners["signed_at"].max() - partners["signed_at"].min()
    assert span > pd.Timedelta(days=900)
    assert partners["signed_at"].max() < pd.Timestamp(sim_config.end_date) - pd.Timedelta(days=25)
    # segments differ in outcome: platinum partners win more than registered ones on average
    revenue = _won_revenue(sim_tables).to_numpy()
    tier = partners["tier"].to_numpy()
    assert revenue[tier == "platinum"].mean() > revenue[tier == "registered"].mean()


def test_no_event_before_signing_or_after_end(sim_tables, sim_config):
    signed = sim_tables["partners"].set_index("partner_id")["signed_at"]
    end = pd.Timestamp(sim_config.end_date) + pd.Timedelta(days=1)
    for table, cols in DATED.items():
        frame = sim_tables[table]
        start = frame["partner_id"].map(signed)
        for col in cols:
            values = frame[col].dropna()
            assert (values >= start[values.index]).all(), (table, col)
            assert (values < end).all(), (table, col)
    commitments = sim_tables["marketing_commitments"]
    assert (commitments["due_at"] > commitments["committed_at"]).all()
    truth = sim_tables["truth"]
    assert (truth["as_of"] < end).all()
    assert (
        truth["as_of"]
        == truth["partner_id"].map(signed) + pd.to_timedelta(truth["age_days"], unit="D")
    ).all()


def test_ordered_dates_within_a_row(sim_tables):
    pairs = {
        "deals": ("created_at", "closed_at"),
        "trainings": ("enrolled_at", "completed_at"),
        "marketing_commitments": ("committed_at", "delivered_at"),
        "leads": ("qualified_at", "converted_at"),
    }
    for table, (early, late) in pairs.items():
        frame = sim_tables[table].dropna(subset=[late])
        assert (frame[late] >= frame[early]).all(), table
    leads = sim_tables["leads"]
    assert (leads["converted_at"].isna() | leads["qualified_at"].notna()).all()


def test_deals_consistent(sim_tables):
    deals = sim_tables["deals"]
    assert (deals["amount"] >= 0).all()
    assert set(deals["status"]) == {"open", "won", "lost"}
    assert (deals["closed_at"].isna() == (deals["status"] == "open")).all()


def test_zero_inflated_heavy_tailed_revenue(sim_tables):
    per_partner = _won_revenue(sim_tables)
    assert 0.3 < (per_partner == 0).mean() < 0.9
    top = per_partner.sort_values(ascending=False)
    assert top.head(len(top) // 10).sum() / top.sum() > 0.5
    amounts = sim_tables["deals"].query("status == 'won'")["amount"]
    assert amounts.quantile(0.99) > 10 * amounts.median()


def test_some_values_missing(sim_tables):
    partners = sim_tables["partners"]
    for col in ("market_alignment", "channel_reach", "product_adoption_potential"):
        assert 0.01 < partners[col].isna().mean() < 0.3, col
    nullable = {
        "activities": "response_hours",
        "trainings": "completed_at",
        "marketing_commitments": "delivered_at",
        "leads": "qualified_at",
        "deals": "closed_at",
    }
    for table, col in nullable.items():
        assert 0.01 < sim_tables[table][col].isna().mean() < 0.9, (table, col)


def test_some_partners_go_quiet(sim_tables, sim_config):
    acts = sim_tables["activities"]
    last = acts.groupby("partner_id")["occurred_at"].max()
    signed = sim_tables["partners"].set_index("partner_id")["signed_at"]
    old = signed[signed < pd.Timestamp(sim_config.end_date) - pd.Timedelta(days=540)].index
    quiet = (pd.Timestamp(sim_config.end_date) - last.reindex(old)).dt.days > 180
    assert 0.02 < quiet.mean() < 0.7


def test_early_signals_predict_later_revenue(sim_tables):
    partners = sim_tables["partners"]
    snaps = make_snapshots(partners, (90,))
    as_of = snaps.set_index("partner_id")["as_of"]
    labels = build_labels(_contract_tables(sim_tables), snaps, BuildConfig(horizon_days=360))
    later = np.log1p(labels.set_index("partner_id")["label_revenue"])

    def early_count(table, col, frame=None):
        frame = sim_tables[table] if frame is None else frame
        before = frame[col] < frame["partner_id"].map(as_of)
        counts = frame[before].groupby("partner_id").size()
        return counts.reindex(later.index, fill_value=0).to_numpy()

    trainings = sim_tables["trainings"].dropna(subset=["completed_at"])
    for name, early in {
        "activities": early_count("activities", "occurred_at"),
        "trainings": early_count("trainings", "completed_at", trainings),
        "portal": early_count("portal_events", "occurred_at"),
    }.items():
        assert np.corrcoef(early, later)[0, 1] > 0.1, name


def test_quality_shows_in_behaviour(sim_tables):
    """Partners with more true revenue respond faster, keep commitments and qualify more leads."""
    truth = sim_tables["truth"].query("age_days == 180").set_index("partner_id")
    good = truth["true_expected_revenue"] > truth["true_expected_revenue"].median()

    def by_quality(frame, values):
        per_partner = values.groupby(frame["partner_id"]).mean()
        group = per_partner.index.map(good)
        known = group.notna()
        better = per_partner[known].groupby(group[known].astype(bool)).mean()
        return better[True], better[False]

    acts = sim_tables["activities"]
    fast_good, fast_bad = by_quality(acts, acts["response_hours"])
    assert fast_good < fast_bad
    com = sim_tables["marketing_commitments"]
    kept_good, kept_bad = by_quality(com, com["delivered_at"].notna().astype(float))
    assert kept_good > kept_bad
    leads = sim_tables["leads"]
    qual_good, qual_bad = by_quality(leads, leads["qualified_at"].notna().astype(float))
    assert qual_good > qual_bad


def test_truth_covers_every_partner_and_age(sim_tables, sim_config):
    truth = sim_tables["truth"]
    signed = sim_tables["partners"].set_index("partner_id")["signed_at"]
    end = pd.Timestamp(sim_config.end_date) + pd.Timedelta(days=1)
    expected = {
        (pid, age)
        for pid, age in product(signed.index, sim_config.truth_ages)
        if signed[pid] + pd.Timedelta(days=age) < end
    }
    assert set(zip(truth["partner_id"], truth["age_days"], strict=True)) == expected
    assert len(truth) == len(expected)
    assert (truth["horizon_days"] == sim_config.horizon_days).all()
    assert (truth["true_expected_revenue"] >= 0).all()
    assert truth["true_engagement_prob"].between(0, 1).all()


@pytest.mark.parametrize(
    ("ages", "horizon"), [((30, 60, 90, 180), 180), ((45, 100), 100)], ids=["default", "odd"]
)
def test_truth_matches_realised_labels(ages, horizon):
    cfg = SimulateConfig(partners=1500, seed=3, truth_ages=ages, horizon_days=horizon)
    tables = simulate_program(cfg)
    end = pd.Timestamp(cfg.end_date) + pd.Timedelta(days=1)
    truth = tables["truth"]
    truth = truth[truth["as_of"] + pd.Timedelta(days=horizon) < end].reset_index(drop=True)
    labels = build_labels(
        _contract_tables(tables), truth[["partner_id", "as_of"]], BuildConfig(horizon_days=horizon)
    )
    assert (labels["partner_id"].to_numpy() == truth["partner_id"].to_numpy()).all()
    realised, expected = labels["label_revenue"].mean(), truth["true_expected_revenue"].mean()
    assert realised == pytest.approx(expected, rel=0.2)
    assert labels["label_engaged"].mean() == pytest.approx(
        truth["true_engagement_prob"].mean(), abs=0.03
    )
    rho = labels["label_revenue"].corr(truth["true_expected_revenue"], method="spearman")
    assert rho > 0.3
    # calibrated across the range, not only on average
    high = truth["true_engagement_prob"] > 0.8
    low = truth["true_engagement_prob"] < 0.2
    assert labels["label_engaged"][high].mean() > 0.75
    assert labels["label_engaged"][low].mean() < 0.25


def test_close_share_is_exact():
    rng = np.random.default_rng(0)
    start, lo, hi, shape, scale = 10.0, 25.0, 70.0, 2.0, np.array([7.0, 25.0, 60.0])
    created = start + 30 * rng.random(400_000)
    closes = created[:, None] + rng.gamma(shape, scale[None, :], (created.size, scale.size))
    sampled = ((closes > lo) & (closes <= hi)).mean(axis=0)
    exact = close_share(np.array(start), lo, hi, shape, scale)
    np.testing.assert_allclose(exact, sampled, atol=0.004)
    # a window before creation holds nothing; an endless window after creation holds all
    assert close_share(np.array(50.0), 0.0, 50.0, shape, scale).max() == 0.0
    np.testing.assert_allclose(close_share(np.array(0.0), 0.0, 1e6, shape, scale), 1.0)


def test_poisson_binomial_tail_matches_enumeration():
    probs = np.array([[0.1, 0.5, 0.9, 0.3], [0.0, 1.0, 0.2, 0.7]])
    for need in range(5):
        brute = []
        for row in probs:
            total = 0.0
            for outcome in product((0, 1), repeat=row.size):
                if sum(outcome) >= need:
                    total += np.prod([p if o else 1 - p for p, o in zip(row, outcome, strict=True)])
            brute.append(total)
        np.testing.assert_allclose(poisson_binomial_tail(probs, need), brute)


def test_event_scale_multiplies_activity_volume():
    base = simulate_program(SimulateConfig(partners=300, seed=5))
    scaled = simulate_program(SimulateConfig(partners=300, seed=5, event_scale=3.0))
    for table in ("activities", "portal_events"):
        assert len(scaled[table]) == pytest.approx(3 * len(base[table]), rel=0.1), table
    for table in ("partners", "deals"):
        pd.testing.assert_frame_equal(scaled[table], base[table])
    revenue = ["partner_id", "age_days", "true_expected_revenue"]
    pd.testing.assert_frame_equal(scaled["truth"][revenue], base["truth"][revenue])
    assert (
        scaled["truth"]["true_engagement_prob"].mean()
        > base["truth"]["true_engagement_prob"].mean()
    )


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_write_round_trip(sim_tables, tmp_path, fmt):
    paths = write_tables(sim_tables, tmp_path, fmt=fmt)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.{fmt}" for n in sim_tables)
    for name, frame in sim_tables.items():
        dates = [c for c in frame.columns if pd.api.types.is_datetime64_dtype(frame[c])]
        if fmt == "csv":
            text = pd.read_csv(paths[name], dtype=str, keep_default_na=False)
            for col in dates:
                cells = text[col][text[col] != ""]
                assert cells.str.fullmatch(ISO).all(), (name, col)
            back = pd.read_csv(paths[name], keep_default_na=False, na_values=[""])
        else:
            back = pd.read_parquet(paths[name])
        for col in dates:
            back[col] = pd.to_datetime(back[col]).astype("datetime64[s]")
        pd.testing.assert_frame_equal(back, frame, check_dtype=False, obj=name)


def test_run_simulate_summary_and_format_switch(tmp_path):
    cfg = SimulateConfig(partners=50, seed=1)
    run_simulate(cfg, tmp_path, fmt="csv")
    result = run_simulate(cfg, tmp_path, fmt="parquet")
    assert not list(tmp_path.glob("*.csv"))
    summary = result.summary()
    for name in ("partners", "deals", "truth"):
        assert name in summary and f"{name}.parquet" in summary
    assert " 50 rows" in summary
    assert result.rows["partners"] == 50 and result.paths["deals"].exists()


def _replayed(cfg: SimulateConfig):
    """(tables, program, partner ids): the program's latent state replayed from the same seed,
    its deals and leads drawn again (the first lead / deal days the momentum conditions on)."""
    from partnerscore.features import simulate as sim

    tables = simulate_program(cfg)
    program = sim._Program(cfg)  # the same seed replays the same draws
    ids = sim._partners(program)["partner_id"].to_numpy(dtype=object)
    sim._deals(program, ids)
    sim._leads(program, ids)
    return tables, program, ids


def _labelled(tables, cfg: SimulateConfig, truth: pd.DataFrame):
    """(truth rows whose horizon ends before the data end, their realised engagement labels)."""
    end = pd.Timestamp(cfg.end_date) + pd.Timedelta(days=1)
    truth = truth[truth["as_of"] + pd.Timedelta(days=cfg.horizon_days) < end]
    truth = truth.reset_index(drop=True)
    labels = build_labels(_contract_tables(tables), truth[["partner_id", "as_of"]], BuildConfig())
    return truth, labels["label_engaged"].to_numpy(float)


def test_truth_is_exact_where_observable_momentum_acts():
    """The engagement truth follows the touchpoint momentum (early pipeline x tier threshold,
    certification x enablement) group by group; a truth that ignored it would be off."""
    from partnerscore.features import simulate as sim

    cfg = SimulateConfig(partners=4000, seed=5)
    tables, program, ids = _replayed(cfg)
    sim._trainings(program, ids)
    pipeline_day = np.minimum(program.first_deal_day, program.first_lead_day)
    program.momentum(pipeline_day, program.cert_day)
    pd.testing.assert_frame_equal(sim._activities(program, ids), tables["activities"])
    latent = program.rate_activity_latent
    program.rate_activity = latent
    ignoring = sim._truth(program, ids)["true_engagement_prob"].to_numpy()

    truth, engaged = _labelled(tables, cfg, tables["truth"].assign(ignoring=ignoring))
    index = pd.Index(ids).get_indexer(truth["partner_id"])
    tier = program.tier[index]
    no_pipeline = pipeline_day[index] >= sim.EARLY_PIPELINE_DAYS
    certified = program.cert_day[index] < truth["age_days"].to_numpy() + cfg.horizon_days
    groups = {
        "no pipeline, lower tiers": no_pipeline & np.isin(tier, ("registered", "silver")),
        "no pipeline, higher tiers": no_pipeline & np.isin(tier, ("gold", "platinum")),
        "pipeline": ~no_pipeline,
        "certified with enablement": certified,
    }
    off = 0
    for name, sel in groups.items():
        p = truth["true_engagement_prob"].to_numpy()[sel]
        se = np.sqrt(np.sum(p * (1 - p))) / sel.sum()
        assert sel.sum() > 300, name
        assert abs(engaged[sel].mean() - p.mean()) < 4 * se, name
        wrong = truth["ignoring"].to_numpy()[sel].mean()
        off += abs(engaged[sel].mean() - wrong) > 4 * se
    # the momentum is large enough to matter where it acts most: both no-pipeline groups
    # (certified partners are engaged anyway: x2.5 touchpoints moves them ~1 point)
    assert off >= 2


def test_day_30_truth_conditions_on_the_first_lead_or_deal():
    """A day-30 horizon overlaps the first 60 days, where the momentum conditions on the first
    lead or deal: the engagement truth must agree with realised labels per group of first
    lead/deal day (< 30, 30-60, none by 60); treating those leads and deals as unconditioned
    Poisson draws put it 12 points under for 30-60 and 2.4 over for none."""
    cfg = SimulateConfig(partners=6000, seed=11)
    tables, program, ids = _replayed(cfg)
    first = np.minimum(program.first_deal_day, program.first_lead_day)
    truth, engaged = _labelled(tables, cfg, tables["truth"].query("age_days == 30"))
    day = first[pd.Index(ids).get_indexer(truth["partner_id"])]
    groups = {"before day 30": day < 30, "days 30-60": (day >= 30) & (day < 60), "none": day >= 60}
    for name, sel in groups.items():
        p = truth["true_engagement_prob"].to_numpy()[sel]
        se = np.sqrt(np.sum(p * (1 - p))) / sel.sum()
        assert sel.sum() > 500, name
        assert abs(engaged[sel].mean() - p.mean()) < 4 * se, (name, engaged[sel].mean(), p.mean())


def test_cohort_trend_moves_deal_sizes_and_the_truth_exactly():
    base_cfg = SimulateConfig(partners=600, seed=11)
    trend_cfg = SimulateConfig(partners=600, seed=11, cohort_trend=0.3)
    base, drifted = simulate_program(base_cfg), simulate_program(trend_cfg)
    # the same draws: only deal amounts (and the truth's revenue) move
    for name in ("partners", "activities", "leads"):
        pd.testing.assert_frame_equal(base[name], drifted[name])
    end = pd.Timestamp(base_cfg.end_date) + pd.Timedelta(days=1)
    span = int(base_cfg.years * 365)
    signed = base["partners"].set_index("partner_id")["signed_at"]
    years = ((signed - (end - pd.Timedelta(days=span))) / pd.Timedelta(days=1) - span / 2) / 365
    factor = np.exp(0.3 * years)
    deals = base["deals"].assign(drifted=drifted["deals"]["amount"].to_numpy())
    expected = deals["amount"] * factor.loc[deals["partner_id"]].to_numpy()
    assert np.allclose(deals["drifted"], expected, rtol=1e-3, atol=0.02)
    t0, t1 = base["truth"], drifted["truth"]
    pd.testing.assert_frame_equal(
        t0.drop(columns="true_expected_revenue"), t1.drop(columns="true_expected_revenue")
    )
    # both rounded to cents: |t1 - t0 * factor| <= 0.005 * (1 + factor)
    scaled = t0["true_expected_revenue"].to_numpy() * factor.loc[t0["partner_id"]].to_numpy()
    assert np.allclose(t1["true_expected_revenue"], scaled, rtol=1e-9, atol=0.02)
    # newest cohorts are richer than the oldest by ~exp(0.3 * 2 years)
    assert factor.max() / factor.min() == pytest.approx(np.exp(0.3 * (span - 30) / 365), rel=0.05)


def test_truth_matches_realised_labels_under_cohort_drift():
    cfg = SimulateConfig(partners=1500, seed=3, cohort_trend=0.4)
    tables = simulate_program(cfg)
    end = pd.Timestamp(cfg.end_date) + pd.Timedelta(days=1)
    truth = tables["truth"]
    truth = truth[truth["as_of"] + pd.Timedelta(days=180) < end].reset_index(drop=True)
    labels = build_labels(_contract_tables(tables), truth[["partner_id", "as_of"]], BuildConfig())
    realised, expected = labels["label_revenue"].mean(), truth["true_expected_revenue"].mean()
    assert realised == pytest.approx(expected, rel=0.2)
