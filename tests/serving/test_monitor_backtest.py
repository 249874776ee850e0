"""Monitoring on the demo-like history: backtest vs a direct computation, anomaly flags on score
rows, MLflow logging and exit codes."""

import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from partnerscore.features.drift_sim import ABSURD_AMOUNT, apply_drift
from partnerscore.features.simulate import write_tables
from partnerscore.features.validate import load_raw
from partnerscore.serving.cli import main
from partnerscore.serving.monitor import MONITOR_EXPERIMENT, run_monitor
from partnerscore.serving.score import run_score

AS_OF = pd.Timestamp("2026-07-01")
PAST = ("2025-06-01", "2025-10-01", "2026-03-01")  # the last one's horizon is not complete
TOUCH = {"meeting", "qbr", "co_sell", "joint_event"}


def _direct_labels(tables, partner_id, as_of, horizon=180, period=30):
    """Labels of one snapshot by plain filtering: (as_of, as_of + horizon]."""
    end = as_of + pd.Timedelta(days=horizon)
    deals = tables["deals"][tables["deals"]["partner_id"] == partner_id]
    won = deals[
        (deals["status"] == "won") & (deals["closed_at"] > as_of) & (deals["closed_at"] <= end)
    ]
    acts = tables["activities"][tables["activities"]["partner_id"] == partner_id]
    leads = tables["leads"][tables["leads"]["partner_id"] == partner_id]
    times = list(acts.loc[acts["activity_type"].isin(TOUCH), "occurred_at"])
    times += list(leads["created_at"]) + list(deals["created_at"])
    active = 0
    n_periods = math.ceil(horizon / period)
    for j in range(n_periods):
        lo = as_of + pd.Timedelta(days=period * j)
        hi = min(as_of + pd.Timedelta(days=period * (j + 1)), end)
        active += any(lo < t <= hi for t in times)
    return float(won["amount"].sum()), int(active >= math.ceil(0.5 * n_periods))


def _direct_auc(y, p):
    pos = [pi for yi, pi in zip(y, p, strict=True) if yi == 1]
    neg = [pi for yi, pi in zip(y, p, strict=True) if yi == 0]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def _direct_gini(actual, pred):
    def gini(order_by):
        rows = sorted(range(len(actual)), key=lambda i: (-order_by[i], i))
        total, running, area = sum(actual), 0.0, 0.0
        for i in rows:
            running += actual[i]
            area += running / total
        n = len(actual)
        return area / n - (n + 1) / (2 * n)

    return gini(pred) / gini(actual)


@pytest.fixture()
def history(early_store, raw_dir, tmp_path, monkeypatch):
    """Three past scoring runs of the training program recorded in a fresh history, by the
    early store's champion (conftest: trained on the program's data to 2025-08-31)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = early_store.paths.model_copy(update={"data_dir": str(tmp_path / "data")})
    config = early_store.model_copy(update={"paths": paths})
    for as_of in PAST:
        run_score(raw_dir, pd.Timestamp(as_of).date(), "champion", tmp_path / f"s{as_of}.csv",
                  config)  # fmt: skip
    return config


def test_backtest_agrees_with_direct_computation(history, raw_dir, tmp_path):
    # the champion's data ended 2025-08-31: both completed batches are out of time (in-sample
    # rows are left out: test_monitor_training_window)
    result = run_monitor(history, raw_dir, AS_OF.date(), tmp_path / "m", log_to_mlflow=False)
    assert result.backtest_window.in_window == 0 and result.backtest_window.rows > 0
    table = pd.read_csv(tmp_path / "m" / "backtest.csv", keep_default_na=False, na_values=[""])
    assert set(table["as_of"]) == {"all", "2025-06-01", "2025-10-01"}

    tables = load_raw(raw_dir, write_quarantine=False).tables
    for as_of in ("2025-06-01", "2025-10-01"):
        scores = pd.read_csv(tmp_path / f"s{as_of}.csv", keep_default_na=False, na_values=[""])
        scores = scores[scores["age_days"] <= 180]
        labels = [
            _direct_labels(tables, str(pid), pd.Timestamp(as_of)) for pid in scores["partner_id"]
        ]
        rev = [r for r, _ in labels]
        eng = [e for _, e in labels]
        row = table[(table["as_of"] == as_of) & (table["segment"] == "all")].iloc[0]
        assert row["rows"] == len(scores)
        pred_rev = scores["pred_revenue"].tolist()
        pred_eng = scores["pred_engagement"].tolist()
        assert row["revenue_realised_mean"] == pytest.approx(np.mean(rev), rel=1e-9)
        assert row["engagement_realised_rate"] == pytest.approx(np.mean(eng), rel=1e-9)
        assert row["revenue_normalized_gini"] == pytest.approx(_direct_gini(rev, pred_rev), 1e-6)
        assert row["engagement_roc_auc"] == pytest.approx(_direct_auc(eng, pred_eng), 1e-9)
        assert row["revenue_bias"] == pytest.approx(sum(pred_rev) / sum(rev) - 1, rel=1e-6)
    segs = set(table.loc[table["as_of"] == "all", "segment"])
    assert {"all", "tier=registered", "region=NA"} <= segs
    assert any(s.startswith("age_band=") for s in segs)
    names = {c.name for c in result.checks}
    assert "backtest.revenue_normalized_gini.latest_batch" in names
    assert "backtest.trend.engagement_roc_auc" in names
    # when the revenue came: per 30-day phase [as_of + lo, as_of + hi), by plain filtering, and
    # what the score rows' phase columns expected
    phases = pd.read_csv(tmp_path / "m" / "backtest_phases.csv")
    assert phases["phase"].tolist() == [1, 2, 3, 4, 5, 6]
    won = tables["deals"][tables["deals"]["status"] == "won"]
    realised, expected, n = np.zeros(6), np.zeros(6), 0
    for as_of in ("2025-06-01", "2025-10-01"):
        scores = pd.read_csv(tmp_path / f"s{as_of}.csv", keep_default_na=False, na_values=[""])
        scores = scores[scores["age_days"] <= 180]
        n += len(scores)
        start = pd.Timestamp(as_of)
        for pid in scores["partner_id"].astype(str):
            mine = won[won["partner_id"] == pid]
            for k in range(6):
                lo, hi = start + pd.Timedelta(days=30 * k), start + pd.Timedelta(days=30 * k + 30)
                realised[k] += mine.loc[
                    (mine["closed_at"] >= lo) & (mine["closed_at"] < hi), "amount"
                ].sum()
        for k in range(6):
            expected[k] += scores[f"pred_revenue_phase_{k + 1}"].sum()
    assert (phases["rows"] == n).all()
    assert (phases["rows_fallback_phasing"] == 0).all()  # the champion's own profile phasing
    np.testing.assert_allclose(phases["realised_revenue"], realised, rtol=1e-9)
    np.testing.assert_allclose(phases["expected_revenue"], expected, rtol=1e-9)
    np.testing.assert_allclose(phases["realised_share"], realised / realised.sum(), rtol=1e-9)
    np.testing.assert_allclose(phases["expected_share"], expected / expected.sum(), rtol=1e-9)
    assert (phases["share_gap_se"] > 0).all()
    check = next(c for c in result.checks if c.name == "backtest.revenue_phase_share_gap")
    worst = (phases["share_gap"].abs() - 2 * phases["share_gap_se"]).max()
    assert check.value == pytest.approx(max(worst, 0.0)) and check.status != "skip"
    html = (tmp_path / "m" / "monitor.html").read_text(encoding="utf-8")
    assert 'id="backtest-phases"' in html


def test_every_monitor_chart_has_an_accessible_name(history, raw_dir, tmp_path):
    """monitor.html's charts had role="img" and no name (screen readers skip them): each one
    now says what it shows with its key numbers, as the partner reports' charts do."""
    from support import chart_names

    run_monitor(history, raw_dir, AS_OF.date(), tmp_path / "m", log_to_mlflow=False)
    names = chart_names((tmp_path / "m" / "monitor.html").read_text(encoding="utf-8"))
    expected = {"heatmap": "PSI", "dist": "training", "bars": "", "trajectory": "Gini"}
    assert set(names) == set(expected), names
    for cls, words in expected.items():
        for name in names[cls]:
            assert name and words in name, (cls, name)
            assert any(ch.isdigit() for ch in name), (cls, name)  # its key numbers


def test_absurd_deal_is_flagged_on_its_partners_score_row(store_config, raw_dir, tmp_path):
    raw = load_raw(raw_dir, write_quarantine=False)
    tables = apply_drift(raw.tables, "absurd_deal", AS_OF)
    deals = tables["deals"]
    absurd = deals[deals["amount"] == ABSURD_AMOUNT].iloc[0]
    write_tables(tables, tmp_path / "raw", fmt="parquet")

    run_score(tmp_path / "raw", AS_OF.date(), "champion", tmp_path / "scores.csv", store_config)
    scores = pd.read_csv(tmp_path / "scores.csv", keep_default_na=False, na_values=[""])
    row = scores[scores["partner_id"] == absurd["partner_id"]].iloc[0]
    assert bool(row["anomaly"]) is True
    assert "deals.amount 999,999,999,999.00" in row["anomaly_reason"]
    assert scores["anomaly"].mean() < 0.2  # the flag is news, not the rule

    result = run_monitor(
        store_config, tmp_path / "raw", AS_OF.date(), tmp_path / "m", scores=tmp_path /
        "scores.csv", log_to_mlflow=False,
    )  # fmt: skip
    by_name = {c.name: c for c in result.checks}
    assert by_name["quality.outliers.deals.amount"].status == "alarm"
    assert by_name["quality.score_flags"].status == "ok"
    listed = pd.read_csv(tmp_path / "m" / "anomalies.csv", keep_default_na=False, na_values=[""])
    hit = listed[(listed["table"] == "deals") & (listed["column"] == "amount")]
    assert list(hit["record_id"]) == [absurd["deal_id"]]
    assert list(hit["partner_id"]) == [absurd["partner_id"]]
    # a file that is not a scores file, or one without rows, is refused (it read "0 anomalous
    # partners without the flag" while the batch had some)
    from partnerscore.features.core import PartnerscoreError

    # nor is the scores file of another date: its flags read against this batch's gave a
    # false warning (another month's file) or a false ok (a file of a few early partners)
    scores[["partner_id"]].to_csv(tmp_path / "ids.csv", index=False)
    scores.iloc[:0].to_csv(tmp_path / "empty.csv", index=False)
    before = (AS_OF - pd.Timedelta(days=30)).strftime("%Y-%m-%d")
    other = scores.assign(as_of=np.where(scores.index == 3, before, scores["as_of"]))
    other.to_csv(tmp_path / "other.csv", index=False)
    other.to_parquet(tmp_path / "other.parquet")  # its row was one past: CSV lines counted
    for name, said in (
        ("ids.csv", "missing column 'score'"),
        ("empty.csv", "no scored partners"),
        ("other.csv", f"other.csv: column 'as_of' row 4: '{before}' is not the monitored"),
        ("other.parquet", f"other.parquet: column 'as_of' row 4: '{before}' is not the"),
    ):
        with pytest.raises(PartnerscoreError, match=said):
            run_monitor(
                store_config, tmp_path / "raw", AS_OF.date(), tmp_path / "m2",
                scores=tmp_path / name, log_to_mlflow=False,
            )  # fmt: skip


def _config_file(cfg, path):
    path.write_text(json.dumps({"paths": cfg.paths.model_dump(), "train": {"trials": 0}}))
    return path


def test_cli_exit_codes_and_mlflow_run(store_config, raw_dir, tmp_path, capsys):
    cfg = _config_file(store_config, tmp_path / "cfg.json")
    base = ["--config", str(cfg), "--out", str(tmp_path / "out")]
    # the session store: tests run before this one in the worker may have logged monitor runs
    client = mlflow.MlflowClient(tracking_uri=store_config.paths.tracking_uri())
    known = client.get_experiment_by_name(MONITOR_EXPERIMENT)
    earlier = {r.info.run_id for r in client.search_runs([known.experiment_id])} if known else set()
    assert main(["monitor", "--as-of", "2026-06-01", "--raw", str(raw_dir), *base]) == 0
    state = json.loads((tmp_path / "out" / "monitor_state.json").read_text())
    assert state["as_of"] == "2026-06-01" and state["volumes"]["deals"] > 0

    mlflow.set_tracking_uri(store_config.paths.tracking_uri())
    runs = mlflow.search_runs(experiment_names=[MONITOR_EXPERIMENT])
    runs = runs[~runs["run_id"].isin(earlier)]  # this monitor's run, one
    assert len(runs) == 1 and runs["metrics.checks_alarm"].iloc[0] == 0

    raw = load_raw(raw_dir, write_quarantine=False)
    write_tables(apply_drift(raw.tables, "absurd_deal", AS_OF), tmp_path / "bad", fmt="csv")
    assert main(["monitor", "--as-of", "2026-07-01", "--raw", str(tmp_path / "bad"), *base]) == 1
    payload = json.loads((tmp_path / "out" / "monitor.json").read_text())
    volume = next(c for c in payload["checks"] if c["name"] == "quality.volume.deals")
    assert "previous run (as of 2026-06-01)" in volume["detail"]
    assert payload["checks"][0]["status"] == "alarm"  # most severe first
    # --json says what the exit code says, for a scheduler that reads the output
    bad = ["monitor", "--as-of", "2026-07-01", "--raw", str(tmp_path / "bad"), *base]
    capsys.readouterr()
    assert main(["--json", *bad]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["exit_code"] == 1 and printed["counts"]["alarm"] >= 1
    # compact: the alarms and warnings in full, and the file that holds every check
    assert {c["status"] for c in printed["checks"]} <= {"alarm", "warn"}
    assert len(printed["checks"]) == printed["counts"]["alarm"] + printed["counts"]["warn"]
    every = json.loads(Path(printed["checks_file"]).read_text())["checks"]
    assert len(every) == printed["checks_total"] == sum(printed["counts"].values()) > 1000
    assert printed["checks"] == [c for c in every if c["status"] in ("alarm", "warn")]

    # an as_of before any signing is refused (exit 2) and leaves the state alone: its all-zero
    # volumes made every table a spike in the next run
    assert main(["monitor", "--as-of", "2020-01-01", "--raw", str(raw_dir), *base]) == 2
    assert json.loads((tmp_path / "out" / "monitor_state.json").read_text())["as_of"] == (
        "2026-07-01"
    )
    # a previous run more than two windows (2 x 90 days) back is not the baseline either
    main(["monitor", "--as-of", "2027-02-01", "--raw", str(raw_dir), *base])
    payload = json.loads((tmp_path / "out" / "monitor.json").read_text())
    volume = next(c for c in payload["checks"] if c["name"] == "quality.volume.deals")
    assert "the preceding window of this data" in volume["detail"]

    today = ["monitor", "--as-of", "2026-07-01", "--config", str(cfg)]
    assert main([*today, "--raw", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert main(["monitor", "--as-of", "2026-13-01", "--raw", str(raw_dir)]) == 2
    assert main([*today, "--raw", str(raw_dir), "--model", "99", "--out", str(tmp_path / "y")]) == 2


def test_cli_names_a_scores_as_of_in_another_time_zone(store_config, raw_dir, tmp_path, capsys):
    """--scores whose as_of values hold two UTC offsets ended in 'unexpected ValueError: Mixed
    timezones detected' (exit 1): frame_check's line for feature tables names the row."""
    cfg = _config_file(store_config, tmp_path / "cfg.json")
    scores = pd.DataFrame(
        {
            "partner_id": ["P1", "P2", "P3"],
            "score": 50.0,
            "as_of": ["2026-07-01T00:00:00+02:00"] * 2 + ["2026-07-01T00:00:00+00:00"],
        }
    )
    scores.to_csv(tmp_path / "s.csv", index=False)
    argv = ["monitor", "--as-of", "2026-07-01", "--raw", str(raw_dir), "--config", str(cfg)]
    capsys.readouterr()
    assert main([*argv, "--scores", str(tmp_path / "s.csv"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unexpected" not in err
    assert (
        "s.csv: column 'as_of' row 3: '2026-07-01T00:00:00+00:00' has another time zone than "
        "row 1 ('2026-07-01T00:00:00+02:00') (partner 'P3')"
    ) in err


def test_simulate_drift_cli(tmp_path):
    out = tmp_path / "raw"
    args = ["simulate", "--partners", "60", "--seed", "5", "--out", str(out)]
    assert main([*args, "--drift", "new_partner_type"]) == 0
    partners = pd.read_csv(out / "partners.csv", keep_default_na=False, na_values=[""])
    assert main([*args, "--drift", "no_such_kind"]) == 2
    assert set(partners["partner_type"]) <= {"reseller", "referral", "msp", "si", "distributor"}


def test_reference_profile_is_logged_with_the_model(store_config):
    from partnerscore.training.reference import load_reference_profile

    mlflow.set_tracking_uri(store_config.paths.tracking_uri())
    profile = load_reference_profile("models:/partnerscore@champion")
    assert profile["ages"] == [30, 60, 90, 180] and profile["horizon_days"] == 180
    assert {"pred_revenue", "pred_engagement", "tier"} <= set(profile["columns"])
    assert set(profile["feature_names"]) <= set(profile["columns"])
    assert {"all", "tier=gold", "region=NA", "partner_type=msp", "age_band=0-30"} <= set(
        profile["groups"]
    )
    assert sum(profile["groups"]["all"]["tier"]["counts"]) == profile["rows"]


def test_a_late_tail_completes_no_horizon(store_config, raw_dir, tmp_path):
    """Two partners' rows up to 2026-11-20 do not complete a horizon past 2026-06-30, where
    everyone else's data ends: those labels would count the missing days as quiet."""
    from support import with_late_rows

    late = tmp_path / "late"
    with_late_rows(raw_dir, late)
    # +180 days: 2026-07-14, after the supported end and before the late rows' end
    run_score(late, pd.Timestamp("2026-01-15").date(), "champion", tmp_path / "s.csv",
              store_config)  # fmt: skip
    run_monitor(store_config, late, pd.Timestamp("2026-12-01").date(), tmp_path / "m",
                log_to_mlflow=False)  # fmt: skip
    table = pd.read_csv(tmp_path / "m" / "backtest.csv", keep_default_na=False, na_values=[""])
    assert "2026-01-15" not in set(table["as_of"])


def test_a_rerun_reads_the_volume_baseline_its_first_run_read(store_config, raw_dir, tmp_path):
    """A scheduler re-runs a month (a retry, a fixed input): the first run had overwritten the
    state file with its own volumes, so the re-run compared the batch with the data's
    preceding window instead of the previous month's run, and its volume checks read
    otherwise (`x1.05 vs the previous run (as of 2026-06-01)`, then `x1.12 vs the preceding
    window`). A re-run of an earlier date (a backfill) replaced the state too, and the next
    month's run compared itself with the backfilled date."""
    out = tmp_path / "out"

    def volumes(as_of):
        result = run_monitor(
            store_config, raw_dir, pd.Timestamp(as_of).date(), out, log_to_mlflow=False
        )
        return {c.name: (c.status, c.detail) for c in result.checks if c.section == "quality"
                and c.name.startswith("quality.volume.")}  # fmt: skip

    volumes("2026-05-01")
    first = volumes("2026-06-01")
    assert all("previous run (as of 2026-05-01)" in d for _, d in first.values()), first
    assert volumes("2026-06-01") == first
    state = json.loads((out / "monitor_state.json").read_text())
    assert state["as_of"] == "2026-06-01" and state["baseline"]["as_of"] == "2026-05-01"
    volumes("2026-04-01")  # a backfill keeps the latest run's state
    assert json.loads((out / "monitor_state.json").read_text()) == state
    assert volumes("2026-06-01") == first
