import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from partnerscore.features.config import BuildConfig
from partnerscore.features.core import PartnerscoreError
from partnerscore.models.intervals import portfolio_interval
from partnerscore.serving.cli import main
from partnerscore.serving.config import AppConfig
from partnerscore.serving.forecast import (
    PERIOD_DAYS,
    forecast_columns,
    forecast_table,
    run_forecast,
)


def _scores():
    rng = np.random.default_rng(0)
    n = 40
    return pd.DataFrame(
        {
            "partner_id": [f"P{i}" for i in range(n)],
            "as_of": np.where(np.arange(n) < 25, "2026-01-01", "2026-04-01"),
            "tier": rng.choice(["gold", "silver"], n),
            "region": rng.choice(["NA", "EMEA"], n),
            "pred_revenue": rng.exponential(1000, n),
            "pred_revenue_sd": rng.exponential(500, n),
            "model_version": "3",
            "out_of_scope": rng.random(n) < 0.3,
        }
    )


@pytest.mark.parametrize("include", [False, True])
def test_forecast_sums_match_a_slow_twin(include):
    scores = _scores()
    table = forecast_table(scores, ("tier", "region"), 180, 0.8, include_out_of_scope=include)
    assert list(table.columns) == forecast_columns(("tier", "region"))
    for rec in table.itertuples():
        part = scores[pd.to_datetime(scores["as_of"]) == rec.period_start]
        if rec.level == "segment":
            part = part[(part["tier"] == rec.tier) & (part["region"] == rec.region)]
        else:
            assert rec.tier == rec.region == "ALL"
        assert rec.out_of_scope_partners == part["out_of_scope"].sum()
        if not include:
            part = part[~part["out_of_scope"]]
        sd = float(np.sqrt(sum(v * v for v in part["pred_revenue_sd"])))
        assert rec.partners == len(part)
        if part.empty:
            assert rec.expected_revenue == rec.revenue_lo == rec.revenue_hi == 0
            continue
        assert rec.expected_revenue == pytest.approx(part["pred_revenue"].sum())
        assert rec.revenue_sd == pytest.approx(sd)
        # the interval of the segment's own partners (tested against its twins in
        # tests/models/test_calibration_intervals.py)
        _, lo, hi = portfolio_interval(part["pred_revenue"], part["pred_revenue_sd"], 0.8)
        assert (rec.revenue_lo, rec.revenue_hi) == pytest.approx((lo, hi), rel=1e-9)
        assert rec.period_end == rec.period_start + pd.Timedelta(days=180)
        assert rec.model_version == "3"
    # segment rows add up to the period total
    for _, period in table.groupby("period_start"):
        seg = period[period["level"] == "segment"]
        total = period[period["level"] == "total"].iloc[0]
        assert seg["expected_revenue"].sum() == pytest.approx(total["expected_revenue"])
        assert seg["partners"].sum() == total["partners"]


def test_forecast_errors_name_file_column_and_row():
    scores = _scores()
    with pytest.raises(PartnerscoreError, match="missing column 'segment'"):
        forecast_table(scores, ("segment",), 180, 0.8, source="s.csv")
    bad = scores.assign(pred_revenue_sd=np.where(np.arange(len(scores)) == 3, np.nan, 1.0))
    with pytest.raises(PartnerscoreError, match=r"s.csv: column 'pred_revenue_sd' row 4"):
        forecast_table(bad, (), 180, 0.8, source="s.csv")
    flags = scores.assign(out_of_scope=np.where(np.arange(len(scores)) == 6, "maybe", "False"))
    with pytest.raises(PartnerscoreError, match=r"s.csv: column 'out_of_scope' row 7: .*'maybe'"):
        forecast_table(flags, (), 180, 0.8, source="s.csv")


@pytest.mark.parametrize(
    ("col", "value", "said"),
    [
        ("pred_revenue", "abc", "'abc' is not a number"),
        ("pred_revenue", "nan", "'nan' is not a number"),
        ("pred_revenue", np.inf, "inf is not finite"),
        ("pred_revenue", -1e6, "-1000000.0 is negative"),
        ("pred_revenue", 1e308, "too large to sum"),
        ("pred_revenue_sd", np.inf, "inf is not finite"),
        ("pred_revenue_sd", -5.0, "-5.0 is negative"),
        ("pred_revenue_sd", 1e200, "too large to sum"),  # its square overflows
        ("pred_revenue_sd", None, "missing (scored by a model without intervals"),
    ],
)
def test_forecast_refuses_revenue_that_is_not_a_finite_amount(col, value, said):
    """inf, 1e308 and negative predictions were summed into inf, blank or negative cells
    (exit 0); each now stops with its row (1-based data record)."""
    scores = _scores().astype({col: object})
    scores.loc[7, col] = value
    with pytest.raises(PartnerscoreError, match=rf"s.csv: column '{col}' row 8: .*") as got:
        forecast_table(scores, ("tier",), 180, 0.8, source="s.csv")
    assert said in str(got.value)


def test_forecast_refuses_an_empty_file_and_its_own_columns_as_segments():
    with pytest.raises(PartnerscoreError, match="s.csv: no scored partners"):
        forecast_table(_scores().iloc[:0], ("tier",), 180, 0.8, source="s.csv")
    for col in ("model_version", "pred_revenue", "expected_revenue", "out_of_scope"):
        scores = _scores().assign(expected_revenue=1.0)
        with pytest.raises(PartnerscoreError, match=rf"--by {col}: the forecast reads or writes"):
            forecast_table(scores, ("tier", col), 180, 0.8, source="s.csv")


def test_forecast_reads_scope_flags_written_as_text():
    scores = _scores()
    text = scores.assign(out_of_scope=scores["out_of_scope"].map({True: "True", False: "false"}))
    pd.testing.assert_frame_equal(
        forecast_table(text, ("tier",), 180, 0.8), forecast_table(scores, ("tier",), 180, 0.8)
    )
    unflagged = forecast_table(scores.drop(columns="out_of_scope"), ("tier",), 180, 0.8)
    included = forecast_table(scores, ("tier",), 180, 0.8, include_out_of_scope=True)
    pd.testing.assert_frame_equal(
        unflagged.drop(columns="out_of_scope_partners"),
        included.drop(columns="out_of_scope_partners"),
    )
    assert (unflagged["out_of_scope_partners"] == 0).all()


def test_forecast_job_on_real_scores(scored_dir, tmp_path, capsys):
    root, cfg = scored_dir
    scores = pd.read_csv(root / "scores.csv", keep_default_na=False, na_values=[""])
    assert {"pred_revenue_lo", "pred_revenue_hi", "pred_revenue_sd"} <= set(scores.columns)
    # an interval for realised revenue: with a large zero mass it may be [0, 0] below the mean
    assert (scores["pred_revenue_lo"] >= 0).all()
    assert (scores["pred_revenue_lo"] <= scores["pred_revenue_hi"]).all()
    assert (scores["pred_revenue_sd"] > 0).all()
    result = run_forecast(cfg, root / "scores.csv", tmp_path / "f.parquet", ("tier",))
    written = pd.read_parquet(tmp_path / "f.parquet")
    assert len(written) == len(result.table) > 1
    total = written[written["level"] == "total"].iloc[0]
    in_scope = ~scores["out_of_scope"].astype(bool)
    assert total["expected_revenue"] == pytest.approx(scores.loc[in_scope, "pred_revenue"].sum())
    assert total["out_of_scope_partners"] == (~in_scope).sum()
    every = run_forecast(
        cfg, root / "scores.csv", tmp_path / "g.csv", ("tier",), include_out_of_scope=True
    ).table
    every_total = every[every["level"] == "total"].iloc[0]
    assert every_total["expected_revenue"] == pytest.approx(scores["pred_revenue"].sum())
    assert (
        main(["forecast", "--scores", str(root / "scores.csv"), "--out", str(tmp_path / "f.csv")])
        == 0
    )
    assert "expected" in capsys.readouterr().out
    json_out = ["--json", "forecast", "--scores", str(root / "scores.csv"), "--out"]
    assert main([*json_out, str(tmp_path / "j.csv")]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["partners"] == len(scores) and "expected" in payload["summary"]
    # every score row splits its expected revenue into the model's phases ...
    phases = scores[[f"pred_revenue_phase_{k}" for k in range(1, 7)]]
    np.testing.assert_allclose(phases.sum(axis=1), scores["pred_revenue"], rtol=1e-9)
    assert (phases >= 0).all().all()
    # ... which --phased spreads over the calendar months: the same total, month by month
    phased = run_forecast(
        cfg, root / "scores.csv", tmp_path / "p.csv", ("tier",), phased=True
    ).table
    months = phased[phased["level"] == "total"]
    first = pd.Timestamp(scores["as_of"].iloc[0]).to_period("M")
    last = (pd.Timestamp(scores["as_of"].iloc[0]) + pd.Timedelta(days=179)).to_period("M")
    assert len(months) == (last - first).n + 1  # the months the 180-day horizon touches
    assert months["expected_revenue"].sum() == pytest.approx(total["expected_revenue"])
    assert (months["period_start"].dt.day == 1).all()
    assert main(["forecast", "--scores", str(root / "scores.csv"), "--phased"]) == 0
    assert "phased: revenue by the month it is expected in" in capsys.readouterr().out
    assert main(["forecast", "--scores", str(tmp_path / "none.csv")]) == 2
    assert main(["forecast", "--scores", str(root / "scores.csv"), "--by", "nope"]) == 2
    assert "missing column 'nope'" in capsys.readouterr().err


def _bucket_start(day: pd.Timestamp, period: str) -> pd.Timestamp:
    """Slow twin of the calendar buckets: the first day of the week (Monday), month or quarter."""
    if period == "week":
        return day - pd.Timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day.replace(month=3 * ((day.month - 1) // 3) + 1, day=1)


@settings(max_examples=30, deadline=None)
@given(
    days=st.lists(st.integers(0, 800), min_size=1, max_size=60),
    period=st.sampled_from(["week", "month", "quarter"]),
)
def test_calendar_periods_sum_each_bucket_of_scoring_dates(days, period):
    n = len(days)
    rng = np.random.default_rng(n)
    as_of = pd.Timestamp("2024-01-01") + pd.to_timedelta(days, "D")
    scores = pd.DataFrame(
        {
            "partner_id": [f"P{i}" for i in range(n)],
            "as_of": as_of,
            "tier": rng.choice(["gold", "silver"], n),
            "pred_revenue": rng.exponential(1000, n),
            "pred_revenue_sd": rng.exponential(500, n),
        }
    )
    table = forecast_table(scores, ("tier",), 90, 0.8, period=period)
    buckets = np.array([_bucket_start(d, period) for d in as_of])
    totals = table[table["level"] == "total"]
    assert list(totals["period_start"]) == sorted(set(buckets))
    for rec in table.itertuples():
        sel = buckets == rec.period_start
        if rec.level == "segment":
            sel &= (scores["tier"] == rec.tier).to_numpy()
        assert rec.partners == sel.sum()
        assert rec.expected_revenue == pytest.approx(scores.loc[sel, "pred_revenue"].sum())
        latest = as_of[buckets == rec.period_start].max()
        assert rec.period_end == latest + pd.Timedelta(days=90)
    assert totals["partners"].sum() == n


def test_day_periods_are_the_scoring_dates_and_the_summary_points_to_months(tmp_path):
    days = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(40) * 3, "D")
    scores = pd.DataFrame(
        {
            "partner_id": [f"P{i}" for i in range(40)],
            "as_of": days,
            "pred_revenue": 100.0,
            "pred_revenue_sd": 50.0,
        }
    )
    scores.to_csv(tmp_path / "s.csv", index=False)
    result = run_forecast(AppConfig(), tmp_path / "s.csv", tmp_path / "f.csv", ())
    assert list(result.table["period_start"]) == list(days)
    text = result.summary()
    assert "... and 28 more periods in the file" in text and "--period month" in text
    months = run_forecast(AppConfig(), tmp_path / "s.csv", tmp_path / "m.csv", (), period="month")
    assert len(months.table) == 4 and "hint" not in months.summary()
    with pytest.raises(PartnerscoreError, match="--period fortnight: expected one of day, week"):
        forecast_table(scores, (), 90, 0.8, period="fortnight")


def _phased_twin(scores, horizon, phase_days, period):
    """Per partner and day of its horizon: the day's part of its phase, in the day's bucket."""
    cells = {}
    n_phases = -(-horizon // phase_days)
    for rec in scores.to_dict("records"):
        amounts = [rec[f"pred_revenue_phase_{k + 1}"] for k in range(n_phases)]
        total = sum(amounts)
        parts = {}
        for d in range(horizon):
            k = d // phase_days
            length = min((k + 1) * phase_days, horizon) - k * phase_days
            day = pd.Timestamp(rec["as_of"]).floor("D") + pd.Timedelta(days=d)
            bucket = day if period == "day" else _bucket_start(day, period)
            parts[bucket] = parts.get(bucket, 0.0) + amounts[k] / length
        for bucket, amount in parts.items():
            share = amount / total if total > 0 else 0.0
            for key in ((bucket, "ALL"), (bucket, rec["tier"])):
                cell = cells.setdefault(key, {"partners": 0, "mean": 0.0, "var": 0.0})
                cell["partners"] += 1
                cell["mean"] += amount
                cell["var"] += rec["pred_revenue_sd"] ** 2 * share
    return cells


@settings(max_examples=25, deadline=None)
@given(
    days=st.lists(st.integers(0, 400), min_size=1, max_size=12),
    horizon=st.sampled_from([1, 30, 45, 90, 180]),
    phase_days=st.sampled_from([1, 7, 30, 31]),
    period=st.sampled_from(["day", "week", "month", "quarter"]),
    seed=st.integers(0, 2**16),
)
def test_phased_forecast_equals_a_per_partner_per_day_twin(days, horizon, phase_days, period, seed):
    assume(PERIOD_DAYS[period] >= phase_days / 2)  # shorter periods are refused (below)
    n, n_phases = len(days), -(-horizon // phase_days)
    rng = np.random.default_rng(seed)
    phases = rng.exponential(1000, (n, n_phases)) * (rng.random((n, n_phases)) < 0.8)
    phases[rng.random(n) < 0.2] = 0.0  # partners expected to earn nothing at all
    scores = pd.DataFrame(
        {
            "partner_id": [f"P{i}" for i in range(n)],
            "as_of": pd.Timestamp("2024-01-01 13:45") + pd.to_timedelta(days, "D"),
            "tier": rng.choice(["gold", "silver"], n),
            "pred_revenue": phases.sum(axis=1),
            "pred_revenue_sd": rng.exponential(500, n),
            **{f"pred_revenue_phase_{k + 1}": phases[:, k] for k in range(n_phases)},
        }
    )
    table = forecast_table(
        scores, ("tier",), horizon, 0.8, period=period, phased=True, phase_days=phase_days
    )
    twin = _phased_twin(scores, horizon, phase_days, period)
    got = {
        (rec.period_start, "ALL" if rec.level == "total" else rec.tier): rec
        for rec in table.itertuples()
    }
    assert set(got) == set(twin)
    for key, cell in twin.items():
        rec = got[key]
        assert rec.partners == cell["partners"]
        assert rec.expected_revenue == pytest.approx(cell["mean"], rel=1e-9, abs=1e-6)
        assert rec.revenue_sd == pytest.approx(np.sqrt(cell["var"]), rel=1e-9, abs=1e-6)
        freq = {"day": "D", "week": "W-SUN", "month": "M", "quarter": "Q"}[period]
        end = pd.Period(rec.period_start, freq=freq).end_time.floor("D") + pd.Timedelta(days=1)
        assert rec.period_end == end
    # nothing is lost: the periods add up to the scores' expected revenue
    totals = table[table["level"] == "total"]
    assert totals["expected_revenue"].sum() == pytest.approx(scores["pred_revenue"].sum())


def test_phased_forecast_errors_and_defaults(tmp_path):
    scores = _scores()
    with pytest.raises(PartnerscoreError, match="missing column 'pred_revenue_phase_1'.*retrain"):
        forecast_table(scores, (), 180, 0.8, source="s.csv", phased=True)
    six = scores.assign(**{f"pred_revenue_phase_{k}": 1.0 for k in range(1, 7)})
    with pytest.raises(PartnerscoreError, match="6 revenue phase columns do not cut the 180-day"):
        forecast_table(six, (), 180, 0.8, source="s.csv", phased=True, phase_days=60)
    gap = six.assign(pred_revenue_phase_4=np.where(np.arange(len(six)) == 2, np.nan, 1.0))
    with pytest.raises(PartnerscoreError, match="s.csv: column 'pred_revenue_phase_4' row 3"):
        forecast_table(gap, (), 180, 0.8, source="s.csv", phased=True)
    six.to_csv(tmp_path / "s.csv", index=False)
    result = run_forecast(AppConfig(), tmp_path / "s.csv", tmp_path / "f.csv", (), phased=True)
    assert result.period == "month" and "phased" in result.summary()
    assert (result.table["period_start"].dt.day == 1).all()


def test_forecast_uses_the_scoring_models_horizon_and_phases(tmp_path):
    """Score rows record the model's horizon and phase length; the config only serves old files."""
    scores = _scores().assign(
        out_of_scope=False,
        revenue_horizon_days=90,
        revenue_phase_days=45,
        pred_revenue_phase_1=lambda d: d["pred_revenue"] * 0.25,
        pred_revenue_phase_2=lambda d: d["pred_revenue"] * 0.75,
    )
    scores.to_csv(tmp_path / "s.csv", index=False)
    config = AppConfig()  # build.horizon_days 180, build.phase_days 30: not this model's
    plain = run_forecast(config, tmp_path / "s.csv", tmp_path / "f.csv", ()).table
    starts = pd.to_datetime(plain["period_start"])
    assert (pd.to_datetime(plain["period_end"]) == starts + pd.Timedelta(days=90)).all()
    phased = run_forecast(
        config, tmp_path / "s.csv", tmp_path / "g.csv", (), phased=True, period="month"
    ).table
    twin = {
        key: cell for key, cell in _phased_twin(scores, 90, 45, "month").items() if key[1] == "ALL"
    }
    assert len(phased) == len(twin)
    for rec in phased.itertuples():
        assert rec.expected_revenue == pytest.approx(twin[(rec.period_start, "ALL")]["mean"])
    # a stated layout must agree with the model's
    same = forecast_table(scores, (), 90, 0.8, phase_days=45)
    pd.testing.assert_frame_equal(same, forecast_table(scores, (), None, 0.8))
    with pytest.raises(PartnerscoreError, match="horizon_days 180: .*model with 90.*s.csv"):
        forecast_table(scores, (), 180, 0.8, source="s.csv")
    with pytest.raises(PartnerscoreError, match="phase_days 30: .*model with 45"):
        forecast_table(scores, (), None, 0.8, phase_days=30, phased=True)
    mixed = scores.assign(revenue_horizon_days=np.where(np.arange(len(scores)) < 7, 90, 180))
    with pytest.raises(
        PartnerscoreError, match="s.csv: column 'revenue_horizon_days' row 8: 180 days where row 1"
    ):
        forecast_table(mixed, (), None, 0.8, source="s.csv")
    broken = scores.assign(revenue_phase_days=np.where(np.arange(len(scores)) == 3, 0, 45))
    with pytest.raises(PartnerscoreError, match="'revenue_phase_days' row 4: expected a whole"):
        forecast_table(broken, (), None, 0.8, source="s.csv", phased=True)
    # a forecast that is not phased does not read the phase length (rows of a model without
    # phasing leave it empty in a concatenated file)
    pd.testing.assert_frame_equal(
        forecast_table(broken, (), None, 0.8), forecast_table(scores, (), None, 0.8)
    )
    endless = scores.assign(revenue_horizon_days=np.where(np.arange(len(scores)) == 1, np.inf, 90))
    with pytest.raises(PartnerscoreError, match="'revenue_horizon_days' row 2: expected a whole"):
        forecast_table(endless, (), None, 0.8, source="s.csv")
    # without the columns (score files from before they were recorded): the given or fallback
    old = scores.drop(columns=["revenue_horizon_days", "revenue_phase_days"])
    fell = forecast_table(old, (), None, 0.8, build=BuildConfig(horizon_days=60, phase_days=45))
    assert (fell["period_end"] == fell["period_start"] + pd.Timedelta(days=60)).all()


def test_forecast_adds_the_models_level_error_to_each_cell():
    """Each cell's variance: its partners' sd^2 plus (level * its expected total)^2."""
    scores = _scores().assign(out_of_scope=False, revenue_level_cv=0.2)
    table = forecast_table(scores, ("tier",), 180, 0.8)
    for rec in table.itertuples():
        part = scores[pd.to_datetime(scores["as_of"]) == rec.period_start]
        if rec.level == "segment":
            part = part[part["tier"] == rec.tier]
        var = (part["pred_revenue_sd"] ** 2).sum() + (0.2 * part["pred_revenue"].sum()) ** 2
        assert rec.revenue_sd == pytest.approx(np.sqrt(var), rel=1e-12)
        _, lo, hi = portfolio_interval(
            part["pred_revenue"], part["pred_revenue_sd"], 0.8, level_cv=0.2
        )
        assert (rec.revenue_lo, rec.revenue_hi) == pytest.approx((lo, hi), rel=1e-9)
    # rows of two models: the larger level (fully correlated bound)
    mixed = scores.assign(revenue_level_cv=np.where(np.arange(len(scores)) < 5, 0.05, 0.2))
    pd.testing.assert_frame_equal(forecast_table(mixed, ("tier",), 180, 0.8), table)
    # without the column (older scores): independent partners
    plain = forecast_table(scores.drop(columns="revenue_level_cv"), ("tier",), 180, 0.8)
    assert (plain["revenue_sd"] < table["revenue_sd"]).all()
    bad = scores.assign(revenue_level_cv=np.where(np.arange(len(scores)) == 4, -1.0, 0.2))
    with pytest.raises(PartnerscoreError, match="s.csv: column 'revenue_level_cv' row 5: expected"):
        forecast_table(bad, (), 180, 0.8, source="s.csv")


@pytest.mark.parametrize(("period", "phase_days"), [("day", 30), ("week", 30), ("day", 7)])
def test_phased_periods_shorter_than_half_a_phase_are_refused(period, phase_days):
    """Daily phased totals spread each 30-day phase evenly and their 80% intervals covered 62%
    of realised days on the demo (96% with the upper end below the expected value)."""
    scores = _scores().assign(pred_revenue_phase_1=lambda d: d["pred_revenue"])
    with pytest.raises(PartnerscoreError, match=rf"--period {period}: shorter than half"):
        forecast_table(
            scores, (), phase_days, 0.8, period=period, phased=True, phase_days=phase_days
        )


@pytest.mark.parametrize(
    ("coverage", "text"),
    [(0.8, "80%"), (0.95, "95%"), (0.999999, "99.9999%"), (0.125, "12.5%"), (0.9995, "99.95%")],
)
def test_the_coverage_is_printed_as_given(coverage, text):
    from partnerscore.serving.forecast import coverage_text

    assert coverage_text(coverage) == text  # 0.999999 read "100% interval"


@pytest.mark.parametrize(
    ("second", "period", "phased", "said"),
    [
        # one batch scored by two model versions, concatenated: every partner twice
        ({"as_of": "2026-01-01", "model_version": "4"}, "day", False, "by model versions 3 and 4"),
        # two monthly batches in one quarter
        ({"as_of": "2026-02-01"}, "quarter", False, "the period 2026-01-01 (--period quarter)"),
        # two monthly batches whose 180-day horizons overlap
        ({"as_of": "2026-02-01"}, "month", True, "the month starting 2026-02-01"),
    ],
)
def test_forecast_refuses_a_partner_counted_twice_in_a_period(second, period, phased, said):
    """A scores file holding a partner twice in one period summed its revenue twice while
    `partners` counted it once (the demo's four batches by quarter: 40.5M 'from 625 partners';
    --phased: July 9.07M against the latest batch's 1.93M)."""
    first = _scores().assign(as_of="2026-01-01")
    for k in range(1, 7):
        first[f"pred_revenue_phase_{k}"] = first["pred_revenue"] / 6
    again = first.assign(**second)
    scores = pd.concat([first, again], ignore_index=True)
    with pytest.raises(PartnerscoreError) as got:
        forecast_table(scores, ("tier",), 180, 0.8, source="s.csv", period=period, phased=phased)
    text = str(got.value)
    assert text.startswith("s.csv: partner 'P0' is scored in rows 1 and 41") and said in text
    assert "counted twice" in text
    # apart, or as batches on separate days, each partner is summed once per period
    days = forecast_table(pd.concat([first, first.assign(as_of="2026-02-01")]), (), 180, 0.8)
    assert list(days["partners"]) == [len(first) - first["out_of_scope"].sum()] * 2


def test_phased_batches_whose_horizons_do_not_overlap_share_a_month():
    """--phased sums each day's revenue of a partner once: a batch scored the day the first
    batch's 180-day horizon ends expects revenue for other days, though both have days in
    June. It was refused as 'their horizons overlap'; overlapping ones still are."""
    first = _scores().assign(as_of="2026-01-01")
    for k in range(1, 7):
        first[f"pred_revenue_phase_{k}"] = first["pred_revenue"] / 6
    after = first.assign(as_of="2026-06-30")  # 2026-01-01 + 180 days: the next day after it
    both = pd.concat([first, after], ignore_index=True)
    table = forecast_table(both, (), 180, 0.8, period="month", phased=True)
    alone = [forecast_table(f, (), 180, 0.8, period="month", phased=True) for f in (first, after)]
    june = pd.Timestamp("2026-06-01")
    summed = sum(t.loc[t["period_start"] == june, "expected_revenue"].sum() for t in alone)
    got = table.loc[table["period_start"] == june, "expected_revenue"]
    np.testing.assert_allclose(got.to_numpy(), [summed])
    a_day_early = pd.concat([first, first.assign(as_of="2026-06-29")], ignore_index=True)
    with pytest.raises(PartnerscoreError, match="the month starting 2026-06-01 .--phased"):
        forecast_table(a_day_early, (), 180, 0.8, source="s.csv", period="month", phased=True)


def _refusal(tmp_path, capsys, scores: pd.DataFrame, suffix: str = "csv") -> str:
    """``forecast`` of ``scores`` written as ``s.<suffix>``: exit 2, one line, no output file.

    Returns:
        The error line.
    """
    path = tmp_path / f"s.{suffix}"
    scores.to_csv(path, index=False) if suffix == "csv" else scores.to_parquet(path)
    assert main(["forecast", "--scores", str(path), "--out", str(tmp_path / "f.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "unexpected" not in err, err
    assert not (tmp_path / "f.csv").exists()
    return err


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_forecast_cli_refuses_a_partner_counted_twice_in_one_line(tmp_path, capsys, suffix):
    """The rows are 1-based data records in either format (they were CSV lines: index + 2,
    one past the record in a Parquet file), as every other one-line error counts them."""
    scores = _scores().assign(as_of="2026-01-01")
    both = pd.concat([scores, scores.assign(model_version="4")], ignore_index=True)
    err = _refusal(tmp_path, capsys, both, suffix)
    assert "partner 'P0' is scored in rows 1 and 41" in err and "versions 3 and 4" in err


@pytest.mark.parametrize("phased", [False, True])
def test_a_partner_twice_out_of_scope_is_refused_only_when_summed(phased):
    """Two rows of a partner out of onboarding scope are left out of the sums: no double count
    (they were refused as 'counted twice'); --include-out-of-scope sums them, and refuses."""
    scores = _scores().assign(as_of="2026-01-01")
    for k in range(1, 7):
        scores[f"pred_revenue_phase_{k}"] = scores["pred_revenue"] / 6
    outside = scores[scores["out_of_scope"]].iloc[[0]]  # P2, row 3
    both = pd.concat([scores, outside.assign(model_version="4")], ignore_index=True)
    period = "month" if phased else "day"
    table = forecast_table(both, (), 180, 0.8, source="s.csv", period=period, phased=phased)
    alone = forecast_table(scores, (), 180, 0.8, period=period, phased=phased)
    pd.testing.assert_frame_equal(table, alone)  # P2 is counted out of scope once
    with pytest.raises(PartnerscoreError) as got:
        forecast_table(
            both, (), 180, 0.8, source="s.csv", period=period, phased=phased,
            include_out_of_scope=True,
        )  # fmt: skip
    assert str(got.value).startswith("s.csv: partner 'P2' is scored in rows 3 and 41")
    assert "counted twice" in str(got.value)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_forecast_cli_names_an_as_of_in_another_time_zone(tmp_path, capsys, suffix):
    """as_of values of two UTC offsets ended in 'unexpected ValueError: Mixed timezones
    detected' (exit 1); frame_check's line names the row, its value and partner."""
    scores = _scores().assign(as_of="2026-01-01T00:00:00+02:00")
    scores.loc[4, "as_of"] = "2026-01-01T00:00:00+00:00"
    assert (
        f"s.{suffix}: column 'as_of' row 5: '2026-01-01T00:00:00+00:00' has another time zone "
        "than row 1 ('2026-01-01T00:00:00+02:00') (partner 'P4')"
    ) in _refusal(tmp_path, capsys, scores, suffix)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_forecast_cli_names_an_as_of_with_an_offset_among_plain_dates(tmp_path, capsys, suffix):
    """An as_of with a UTC offset among plain dates was 'row 5: not a date' (pandas read the
    column in row 1's form and made it NaT): the line says it has an offset and row 1 none."""
    scores = _scores()
    scores.loc[4, "as_of"] = "2026-01-01T00:00:00+02:00"
    err = _refusal(tmp_path, capsys, scores, suffix)
    assert "not a date" not in err
    assert (
        f"s.{suffix}: column 'as_of' row 5: '2026-01-01T00:00:00+02:00' has a UTC offset and "
        "row 1 ('2026-01-01') has none (partner 'P4'); give every as_of in one time zone, or none"
    ) in err


def test_forecast_reads_as_of_dates_written_in_several_forms(tmp_path, capsys):
    """A date with a time (or a 'T00:00:00') after plain dates was 'row 5: not a date': pandas
    read the column in row 1's form and made the others NaT. The same forecast as plain dates."""
    plain = _scores()
    forms = plain.copy()
    forms.loc[4, "as_of"] = "2026-01-01 10:00"
    forms.loc[5, "as_of"] = "2026-01-01T00:00:00"
    out = {}
    for name, frame in (("plain", plain), ("forms", forms)):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        argv = ["forecast", "--scores", str(tmp_path / f"{name}.csv")]
        assert main([*argv, "--out", str(tmp_path / f"f_{name}.csv")]) == 0, capsys.readouterr()
        out[name] = pd.read_csv(tmp_path / f"f_{name}.csv")
    pd.testing.assert_frame_equal(out["forms"], out["plain"])


def test_forecast_refuses_an_empty_as_of(tmp_path, capsys):
    scores = _scores()
    scores.loc[2, "as_of"] = None
    err = _refusal(tmp_path, capsys, scores)
    assert err.endswith("s.csv: column 'as_of' row 3: is empty"), err


def test_forecast_reads_as_of_values_of_one_time_zone_in_utc(tmp_path, capsys):
    """as_of values all at +02:00 ended in 'unexpected TypeError' (exit 1); they are read in UTC,
    as the data contract reads zoned times: the same forecast as the plain UTC dates."""
    scores = _scores().assign(as_of="2026-01-02T01:00:00+02:00")  # 2026-01-01 23:00 UTC
    zoned, plain = tmp_path / "zoned.csv", tmp_path / "plain.csv"
    scores.to_csv(zoned, index=False)
    scores.assign(as_of="2026-01-01 23:00:00").to_csv(plain, index=False)
    for path in (zoned, plain):
        argv = ["forecast", "--scores", str(path), "--out", str(tmp_path / f"f_{path.name}")]
        assert main(argv) == 0, capsys.readouterr().err
    got, want = (pd.read_csv(tmp_path / f"f_{p.name}") for p in (zoned, plain))
    pd.testing.assert_frame_equal(got, want)
    assert (got["period_start"] == "2026-01-01").all()


@pytest.mark.parametrize("other", ["02/01/2026", "Jan 5 2026"])
def test_forecast_refuses_an_as_of_in_another_form_than_iso_8601(tmp_path, capsys, other):
    """After plain dates, a value pandas' 'mixed' parser guesses ('02/01/2026' as 1 February,
    month first; 'Jan 5 2026') was read silently: the value-by-value
    reading is ISO 8601, as the feature tables' dates are, and such a value is not a date."""
    scores = _scores()
    scores.loc[4, "as_of"] = other
    err = _refusal(tmp_path, capsys, scores)
    assert err.endswith(f"s.csv: column 'as_of' row 5: '{other}' is not a date"), err


@pytest.mark.parametrize(
    ("column", "said"),
    [
        # a whole column in one non-ISO form was read month-first: 02/01/2026 as 1 February
        (["02/01/2026"] * 40, "'02/01/2026' is not a date"),
        # a number was read as nanoseconds since 1970 (forecast bucketed 1970-01-01)
        ([20260101] * 40, "'20260101' is not a date (a number; give dates as YYYY-MM-DD)"),
        # a bool column was said to be "a number"
        ([True, False] * 20, "'True' is not a date (true/false; give dates as YYYY-MM-DD)"),
    ],
)
def test_forecast_refuses_an_as_of_column_that_holds_no_iso_date(tmp_path, capsys, column, said):
    err = _refusal(tmp_path, capsys, _scores().assign(as_of=column), "parquet")
    assert err.endswith(f"s.parquet: column 'as_of' row 1: {said}"), err


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_forecast_refuses_an_as_of_of_today(tmp_path, capsys, suffix):
    """pandas reads 'today' and 'now' as the clock's time: such an as_of was dated whenever the
    file was read (exit 0), where build --cutoffs refuses them."""
    scores = _scores()
    scores.loc[4, "as_of"] = "today"
    err = _refusal(tmp_path, capsys, scores, suffix)
    assert err.endswith(f"s.{suffix}: column 'as_of' row 5: 'today' is not a date"), err


def test_forecast_of_extreme_spreads_has_finite_intervals_and_no_warning(tmp_path, capsys):
    """A partner predicted 1e-300 with an s.d. of 1e12 gave five RuntimeWarnings (overflow,
    divide, invalid) on the user's stderr; one predicted 1e6 with an s.d. of 1e-160 (its
    variance rounds below the floats) got the interval "nan - nan" (empty in the file)."""
    import warnings

    scores = _scores().head(2)
    scores["as_of"] = ["2026-01-01", "2026-04-01"]
    scores["out_of_scope"] = False
    scores["pred_revenue"] = [1e-300, 1e6]
    scores["pred_revenue_sd"] = [1e12, 1e-160]
    scores.to_csv(tmp_path / "s.csv", index=False)
    argv = ["forecast", "--scores", str(tmp_path / "s.csv"), "--out", str(tmp_path / "f.csv")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0, capsys.readouterr().err
    assert [str(w.message) for w in caught] == []
    assert "nan" not in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "f.csv")
    assert table[["revenue_lo", "revenue_hi"]].notna().all().all(), table
    first = table["period_start"] == "2026-01-01"
    assert (table.loc[first, ["revenue_lo", "revenue_hi"]] == 0).all().all()
    assert table.loc[~first, ["revenue_lo", "revenue_hi"]].to_numpy() == pytest.approx(1e6)


def reference_forecast(scores: pd.DataFrame, by, horizon, coverage, include) -> dict:
    """The forecast cells, one (date, segment) at a time: key -> (partners, out of scope,
    revenue, sd, lo, hi, versions, period end)."""
    rows = scores.to_dict("records")
    level = max((r.get("revenue_level_cv", 0.0) for r in rows), default=0.0)

    def segment(r):
        return tuple("missing" if r[c] is None else str(r[c]) for c in by)

    out = {}
    dates = sorted({pd.Timestamp(r["as_of"]) for r in rows})
    for day in dates:
        mine = [r for r in rows if pd.Timestamp(r["as_of"]) == day]
        keys = [("total", ("ALL",) * len(by))] + [
            ("segment", s) for s in {segment(r) for r in mine} if by
        ]
        for lvl, seg in keys:
            cell = [r for r in mine if lvl == "total" or segment(r) == seg]
            oos = {r["partner_id"] for r in cell if r["out_of_scope"]}
            summed = [r for r in cell if include or not r["out_of_scope"]]
            revenue = sum(r["pred_revenue"] for r in summed)
            var = sum(r["pred_revenue_sd"] ** 2 for r in summed) + (level * revenue) ** 2
            if summed:
                _, lo, hi = portfolio_interval(
                    [r["pred_revenue"] for r in summed],
                    [r["pred_revenue_sd"] for r in summed],
                    coverage,
                    level_cv=level,
                )
            else:
                lo = hi = 0.0
            versions = ",".join(sorted({str(r["model_version"]) for r in summed}))
            end = day + pd.Timedelta(days=horizon)
            out[(day, lvl, seg)] = (len(summed), len(oos), revenue, var**0.5, lo, hi, versions, end)
    return out


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    partners=st.lists(
        st.tuples(
            st.integers(0, 2),  # scoring date
            st.sampled_from(["gold", "silver", "GOLD", None]),
            st.sampled_from(["NA", "EMEA", None]),
            st.one_of(st.sampled_from([0.0, 1e-300, 1e12, 1e150]), st.floats(0, 1e6)),
            st.one_of(st.sampled_from([0.0, 1e-300, 1e12, 1e150]), st.floats(0, 1e6)),
            st.booleans(),
            st.sampled_from(["3", "4"]),
        ),
        min_size=1,
        max_size=30,
    ),
    by=st.sampled_from([(), ("tier",), ("tier", "region")]),
    include=st.booleans(),
    level=st.sampled_from([None, 0.0, 0.2]),
    coverage=st.sampled_from([0.5, 0.8, 0.999]),
)
def test_forecast_cells_equal_a_per_cell_twin(partners, by, include, level, coverage):
    """Sums, partners, out-of-scope counts, sd, interval, versions and ends of every cell."""
    dates = ["2026-01-01", "2026-01-02", "2026-04-01"]
    scores = pd.DataFrame(
        {
            "partner_id": [f"P{i}" for i in range(len(partners))],
            "as_of": [dates[p[0]] for p in partners],
            "tier": pd.Series([p[1] for p in partners], dtype=object),
            "region": pd.Series([p[2] for p in partners], dtype=object),
            "pred_revenue": [p[3] for p in partners],
            "pred_revenue_sd": [p[4] for p in partners],
            "out_of_scope": [p[5] for p in partners],
            "model_version": [p[6] for p in partners],
        }
    )
    if level is not None:
        scores["revenue_level_cv"] = level
    table = forecast_table(scores, by, 180, coverage, include_out_of_scope=include)
    expected = reference_forecast(scores, by, 180, coverage, include)
    assert len(table) == len(expected)
    for rec in table.to_dict("records"):
        key = (rec["period_start"], rec["level"], tuple(rec[c] for c in by))
        partners_, oos, revenue, sd, lo, hi, versions, end = expected[key]
        assert (rec["partners"], rec["out_of_scope_partners"]) == (partners_, oos), key
        assert rec["expected_revenue"] == pytest.approx(revenue, rel=1e-12, abs=1e-300)
        assert rec["revenue_sd"] == pytest.approx(sd, rel=1e-12, abs=1e-300)
        assert (rec["revenue_lo"], rec["revenue_hi"]) == pytest.approx((lo, hi), rel=1e-9), key
        assert rec["model_version"] == versions and rec["period_end"] == end
