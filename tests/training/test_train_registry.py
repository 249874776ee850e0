import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from partnerscore.features.config import BuildConfig, SimulateConfig
from partnerscore.features.core import PartnerscoreError
from partnerscore.features.pipeline import run_build
from partnerscore.features.simulate import run_simulate
from partnerscore.models.config import HeadParams
from partnerscore.serving.cli import main
from partnerscore.training.config import TrainConfig
from partnerscore.training.registry import baseline_checks, run_models, run_promote
from partnerscore.training.train import TrainResult, run_train


def train(features, uri, tmp_path, **overrides):
    """``run_train`` with trials 0 and no plots (only the first test reads them) unless
    ``overrides`` say otherwise."""
    cfg = TrainConfig(**{"trials": 0, "plots": False, **overrides})
    return run_train(
        features,
        cfg,
        tracking_uri=uri,
        artifact_root=(tmp_path / "art").as_uri(),
        config_hash="cafe",
    )


def aliases(uri: str) -> dict[str, str]:
    """The registered model's aliases, {alias: version}."""
    model = mlflow.MlflowClient(tracking_uri=uri).get_registered_model("partnerscore")
    return {alias: str(version) for alias, version in model.aliases.items()}


def test_train_logs_everything_and_registers_challenger(built_dir, tracking_uri, tmp_path):
    result = train(built_dir, tracking_uri, tmp_path, trials=2, plots=True)
    assert result.version == "1"
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(result.run_id)
    for key in (
        "holdout_revenue_normalized_gini",
        "holdout_revenue_spearman",
        "holdout_revenue_mae",
        "holdout_revenue_rmse",
        "holdout_revenue_tweedie_deviance",
        "holdout_revenue_top_decile_capture",
        "holdout_revenue_portfolio_bias",
        "holdout_engagement_roc_auc",
        "holdout_engagement_pr_auc",
        "holdout_engagement_brier",
        "holdout_engagement_log_loss",
        "holdout_engagement_ece",
        "holdout_oracle_revenue_normalized_gini",
        "holdout_oracle_engagement_roc_auc",
        "baseline_linear_primary_score",
        "baseline_scorecard_primary_score",
        "baseline_naive_primary_score",
        "tuning_revenue_best_loss",
    ):
        assert key in run.data.metrics, key
    # 59 holdout partners: the oracle's metrics are logged, no ratio to them (too noisy)
    assert run.data.metrics["holdout_oracle_partners"] == 59
    assert not any(k.startswith("holdout_oracle_ratio_") for k in run.data.metrics)
    assert "oracle ratio (simulated truth): not shown, the holdout holds 59 partners" in (
        result.summary()
    )
    assert run.data.tags["config_hash"] == "cafe"
    assert run.data.params["trials"] == "2"
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {
        "plots/importance_revenue.png",
        "plots/shap_summary_revenue.png",
        "plots/calibration.png",
        "plots/lift.png",
    } <= artifacts
    assert {a.path for a in client.list_artifacts(result.run_id, "training")} >= {
        "training/manifest.json",
        "training/feature_specs.json",
    }
    mv = client.get_model_version_by_alias("partnerscore", "challenger")
    assert str(mv.version) == "1"
    assert "holdout_primary_score" in mv.tags
    assert "gbm" in result.summary() and "linear" in result.summary()
    # the portfolio intervals' coverage and variance model, with the conservative default named
    cover = result.metrics["revenue_portfolio_interval_coverage"]
    assert f"portfolio intervals (tier/region cells of each age): {cover:.1%} covered" in (
        result.summary()
    )
    assert "variance model 'bins' (conservative" in result.summary()
    assert result.metrics["revenue_portfolio_level_cv"] == 0.0


def test_segment_bias_report_reads_the_logged_segment_table(first_version, tracking_uri, tmp_path):
    result = first_version("segment_bias_20", tracking_uri, tmp_path)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    metrics = client.get_run(result.run_id).data.metrics
    path = mlflow.artifacts.download_artifacts(
        run_id=result.run_id,
        artifact_path="evaluation/segment_metrics.csv",
        tracking_uri=tracking_uri,
        dst_path=str(tmp_path),  # else a new temporary folder, never removed
    )
    seg = pd.read_csv(path, keep_default_na=False, na_values=[""])
    assert seg["revenue_portfolio_bias_se"].gt(0).all()
    assert seg["partners"].le(seg["rows"]).all()
    checked = seg[seg["partners"] >= 20]
    assert len(checked) >= 2
    bias, se = checked["revenue_portfolio_bias"], checked["revenue_portfolio_bias_se"]
    assert metrics["holdout_revenue_segments_checked"] == len(checked)
    assert metrics["holdout_revenue_segment_bias_max_abs"] == pytest.approx(bias.abs().max())
    assert metrics["holdout_revenue_segments_beyond_bias_limit"] == int(
        (bias.abs() - 2.0 * se > 0.1).sum()
    )
    truth_max = checked["revenue_portfolio_bias_vs_truth"].abs().max()
    assert metrics["holdout_revenue_segment_bias_vs_truth_max_abs"] == pytest.approx(truth_max)
    assert f"tier/region segments with >= 20 partners: {len(checked)}" in result.summary()
    # the out-of-fold cohort-drift diagnostic is logged with the fit
    assert metrics["holdout_fit_revenue_oof_cohort_trend_se"] > 0
    assert np.isfinite(metrics["holdout_fit_revenue_oof_cohort_trend"])


def test_summary_flags_cohort_drift_beyond_two_standard_errors():
    base = {"revenue_segments_checked": 0.0}
    drift = TrainResult(
        "r",
        None,
        {**base, "fit_revenue_oof_cohort_trend": 0.3, "fit_revenue_oof_cohort_trend_se": 0.1},
        {},
        {},
    )
    assert "cohort drift? out of fold, newer signing cohorts earn +30% per year" in drift.summary()
    assert "train.recalibration_cv: time" in drift.summary()
    calm = TrainResult(
        "r",
        None,
        {**base, "fit_revenue_oof_cohort_trend": 0.15, "fit_revenue_oof_cohort_trend_se": 0.1},
        {},
        {},
    )
    assert "cohort drift" not in calm.summary()
    handled = dict(drift.metrics, fit_revenue_recalibration_time_folds=1.0)
    text = TrainResult("r", None, handled, {}, {}).summary()
    assert "the recalibration used the time folds" in text and "(or auto)" not in text


def test_gbm_beats_baselines_on_holdout(tmp_path, tracking_uri):
    raw, features = tmp_path / "raw", tmp_path / "features"
    run_simulate(SimulateConfig(partners=1500, seed=21), raw)
    run_build(raw, features, BuildConfig())
    result = train(features, tracking_uri, tmp_path)
    # the hand-weighted scorecard and the run-rate extrapolation are clearly beaten
    for name in ("scorecard", "naive"):
        assert result.metrics["primary_score"] > result.baselines[name]["primary_score"], name
    # against the best baseline (the linear one, on this simulator with interactions) the
    # difference at 1,500 partners is within sampling noise: the paired partner-bootstrap
    # s.e. of the Gini difference is ~0.04, so the check is "not worse beyond 2 s.e."
    c = result.comparison
    for key in ("revenue_gini", "engagement_auc"):
        assert c[f"compare_{key}_diff_se"] > 0, key
        assert c[f"compare_{key}_diff"] > -2 * c[f"compare_{key}_diff_se"], key
    assert 0.8 < result.metrics["oracle_ratio_primary_score"] <= 1.05
    # train.plots: false (the helper's) logs no plot, and everything else as with them
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    assert client.list_artifacts(result.run_id, "plots") == []
    assert {a.path for a in client.list_artifacts(result.run_id, "evaluation")} >= {
        "evaluation/holdout.parquet",
        "evaluation/holdout_predictions.parquet",
    }


def test_promotion_gate_and_force(built_dir, first_version, tracking_uri, tmp_path, capsys):
    # the primary-score gate alone (the bias gate has its own test below)
    cfg = TrainConfig(trials=0, promotion_margin=0.01, max_portfolio_bias=10.0)
    first_version("default", tracking_uri, tmp_path)
    first = run_promote(cfg, tracking_uri=tracking_uri)
    assert first.promoted and first.champion is None
    assert aliases(tracking_uri) == {"champion": "1"}  # the promoted version is no challenger
    train(built_dir, tracking_uri, tmp_path)  # same data and seed: no improvement
    gate = run_promote(cfg, tracking_uri=tracking_uri)
    assert not gate.promoted
    assert gate.challenger_score == pytest.approx(gate.champion_score)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    assert aliases(tracking_uri) == {"champion": "1", "challenger": "2"}  # rejected: kept
    assert client.get_model_version("partnerscore", "2").tags["promotion_decision"] == "rejected"
    # CLI: gate refuses (exit 1), --force overrides and is recorded
    code = main(["promote"])
    assert "not promoted" in capsys.readouterr().out
    assert code == 1
    assert main(["promote", "--force", "--reason", "hotfix for region mapping"]) == 0
    assert "FORCED" in capsys.readouterr().out
    mv = client.get_model_version("partnerscore", "2")
    assert mv.tags["promotion_forced"] == "true"
    assert mv.tags["promotion_reason"] == "hotfix for region mapping"
    assert aliases(tracking_uri) == {"champion": "2"}
    # a rollback to v1 leaves an alias on another version alone
    train(built_dir, tracking_uri, tmp_path)
    rollback = run_promote(cfg, tracking_uri=tracking_uri, version="1", force=True, reason="undo")
    assert rollback.promoted
    assert aliases(tracking_uri) == {"champion": "1", "challenger": "3"}
    run_promote(cfg, tracking_uri=tracking_uri, version="2", force=True, reason="redo")
    assert aliases(tracking_uri) == {"champion": "2", "challenger": "3"}
    table = run_models(cfg, tracking_uri=tracking_uri).table
    assert table["version"].tolist() == [1, 2, 3]
    assert "champion" in table.loc[table["version"] == 2, "aliases"].iloc[0]
    assert main(["models"]) == 0
    assert "champion" in capsys.readouterr().out
    assert main(["--json", "models"]) == 0  # the versions themselves, not a row count
    versions = json.loads(capsys.readouterr().out)["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3] and "champion" in versions[1]["aliases"]


def test_a_reason_is_recorded_whenever_one_is_given(
    built_dir, first_version, tracking_uri, tmp_path
):
    """`promote --force --reason` on a challenger that passed the gate anyway, and `--reason`
    without `--force`, dropped the reason: only a promotion the gate refused recorded it."""
    cfg = TrainConfig(trials=0, promotion_margin=0.01, max_portfolio_bias=10.0)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    first_version("default", tracking_uri, tmp_path)
    first = run_promote(cfg, tracking_uri=tracking_uri, force=True, reason="first go-live")
    assert first.promoted and not first.forced  # no champion yet: the gate passes
    assert client.get_model_version("partnerscore", "1").tags["promotion_reason"] == "first go-live"
    train(built_dir, tracking_uri, tmp_path)  # same data and seed: no improvement
    refused = run_promote(cfg, tracking_uri=tracking_uri, reason="monthly retrain")
    assert not refused.promoted
    tags = client.get_model_version("partnerscore", "2").tags
    assert tags["promotion_decision"] == "rejected"
    assert tags["promotion_reason"] == "monthly retrain"
    assert "promotion_forced" not in tags


def test_the_gate_scores_a_refitted_version_by_its_pre_refit_predictions(
    built_dir, first_version, tracking_uri, tmp_path
):
    """v1 is not refitted, v2 is (the default): same data and seed, so the same pre-refit
    model. The registered v2 was refitted on the holdout itself; scoring it there made it look
    ~4 points better than v1 and promoted it. Each is now scored by a model that never saw
    the rows: equal scores, not promoted."""
    cfg = TrainConfig(trials=0, promotion_margin=0.01, max_portfolio_bias=10.0)
    first_version("no_refit", tracking_uri, tmp_path)
    assert run_promote(cfg, tracking_uri=tracking_uri).promoted
    second = train(built_dir, tracking_uri, tmp_path)
    gate = run_promote(cfg, tracking_uri=tracking_uri)
    assert gate.details["challenger_predictions"] == "pre-refit"
    assert gate.details["champion_predictions"] == "registered"  # v1 never saw the holdout
    assert gate.challenger_score == pytest.approx(gate.champion_score, abs=1e-9)
    assert gate.challenger_score == pytest.approx(second.metrics["primary_score"], abs=1e-9)
    assert not gate.promoted and "optimistic" not in gate.summary()
    # the refitted model itself does score its own training rows better (the old reading)
    from partnerscore.models.pyfunc import load_partner_model
    from partnerscore.training.metrics import evaluate
    from partnerscore.training.registry import _holdout_of, unseen_predictions

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    holdout = _holdout_of(client, second.run_id)
    pred = load_partner_model("models:/partnerscore/2").predict(holdout)
    in_sample = evaluate(holdout, pred["pred_revenue"], pred["pred_engagement"])
    assert in_sample["primary_score"] > gate.champion_score * 1.01
    # rows the run logged no pre-refit predictions for (as for runs trained before they were
    # logged): the refitted model predicts them, and says so
    mv2 = client.get_model_version("partnerscore", "2")
    sha = client.get_run(second.run_id).data.tags["training_set_sha256"]
    run2 = client.get_run(second.run_id)
    unlogged = holdout.copy()
    unlogged.loc[unlogged.index[-1], "as_of"] += pd.Timedelta(days=1)
    _, basis = unseen_predictions(client, "partnerscore", mv2, run2, unlogged, sha)
    assert basis == "refitted on these rows"
    # a subset of the logged rows is read from the logged predictions
    _, basis = unseen_predictions(client, "partnerscore", mv2, run2, holdout.iloc[:-1], sha)
    assert basis == "pre-refit"


def test_the_gate_names_rows_the_champion_was_trained_on(
    built_dir, first_version, tracking_uri, tmp_path
):
    """v1 held out only the newest 10% of cohorts (no refit), so it was fitted on part of v2's
    20% holdout: those rows are read by a model that saw them, and the gate line says so. The
    gate used to read v1 as "registered", a fair reading, without a word."""
    cfg = TrainConfig(trials=0, promotion_margin=0.01, max_portfolio_bias=10.0)
    first = first_version("no_refit_holdout_10", tracking_uri, tmp_path)
    assert run_promote(cfg, tracking_uri=tracking_uri).promoted
    second = train(built_dir, tracking_uri, tmp_path, refit=False)
    gate = run_promote(cfg, tracking_uri=tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    from partnerscore.training.registry import _holdout_of

    mine, theirs = _holdout_of(client, second.run_id), _holdout_of(client, first.run_id)
    keys = ["partner_id", "as_of"]
    overlap = len(mine[keys].merge(theirs[keys], on=keys))
    trained = len(mine) - overlap  # v2's holdout rows outside v1's holdout: v1 fitted them
    assert 0 < trained < len(mine)
    assert (
        gate.details["champion_predictions"]
        == f"trained on {trained:,} of these {len(mine):,} rows"
    )
    assert gate.details["challenger_predictions"] == "registered"  # v2 never saw its holdout
    assert f"[v1 trained on {trained:,} of these {len(mine):,} rows: optimistic]" in gate.summary()


def without_feature(built: Path, out: Path, name: str) -> Path:
    """The build ``built`` as a registry without feature ``name`` would have written it."""
    out.mkdir()
    frame = pd.read_parquet(built / "training_set.parquet")
    frame.drop(columns=name).to_parquet(out / "training_set.parquet")
    manifest = json.loads((built / "manifest.json").read_text())
    manifest["feature_names"] = [n for n in manifest["feature_names"] if n != name]
    manifest["features"] = [f for f in manifest["features"] if f["name"] != name]
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "truth.parquet").write_bytes((built / "truth.parquet").read_bytes())
    return out


def test_the_gate_names_rows_a_champion_of_another_registry_was_trained_on(
    built_dir, first_version, tracking_uri, tmp_path
):
    """As above, but v2's build comes from a registry that dropped one of v1's features. v1's
    logged keys were one fingerprint of the whole row, a column of which v2's holdout lacks:
    none of its rows were found and the gate read v1 as "registered", a fair score, without a
    word. The values both builds hold decide now."""
    cfg = TrainConfig(trials=0, promotion_margin=0.01, max_portfolio_bias=10.0)
    first = first_version("no_refit_holdout_10", tracking_uri, tmp_path)
    assert run_promote(cfg, tracking_uri=tracking_uri).promoted
    dropped = without_feature(built_dir, tmp_path / "dropped", "activities_days_since_last")
    second = train(dropped, tracking_uri, tmp_path, refit=False)
    gate = run_promote(cfg, tracking_uri=tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    from partnerscore.training.registry import _holdout_of

    mine, theirs = _holdout_of(client, second.run_id), _holdout_of(client, first.run_id)
    assert "activities_days_since_last" in theirs and "activities_days_since_last" not in mine
    keys = ["partner_id", "as_of"]
    trained = len(mine) - len(mine[keys].merge(theirs[keys], on=keys))
    assert 0 < trained < len(mine)
    # v1 reads the feature v2's build dropped: only its own holdout's rows have its values
    absent = (
        "1 of its features absent from these rows (scored as missing: activities_days_since_last)"
    )
    assert (
        gate.details["champion_predictions"]
        == f"trained on {trained:,} of these {len(mine):,} rows; {absent}"
    )
    assert f"[v1 trained on {trained:,} of these {len(mine):,} rows: optimistic]" in gate.summary()
    assert f"[v1 {absent}: not its real score]" in gate.summary()


def test_the_gate_reads_a_champion_refitted_on_another_build_of_the_same_rows(
    raw_dir, first_version, tracking_uri, tmp_path
):
    """v1 is refitted (the default) on the 30/60/90/180 build; v2 is trained on a 30/60/90
    build of the same program: its holdout rows are v1's holdout rows, which v1 was refitted
    on. The gate used to score v1 there by its registered model (only the same training set's
    sha was checked), flattering the champion silently; now by its run's pre-refit
    predictions, and a version that saw only some of the rows is flagged optimistic."""
    from partnerscore.training.registry import _holdout_of, unseen_predictions

    cfg = TrainConfig(trials=0, promotion_margin=0.01, max_portfolio_bias=10.0)
    first = first_version("default", tracking_uri, tmp_path)
    assert run_promote(cfg, tracking_uri=tracking_uri).promoted
    other = tmp_path / "ages"
    run_build(raw_dir, other, BuildConfig(ages=(30, 60, 90)))
    second = train(other, tracking_uri, tmp_path)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    run1, run2 = client.get_run(first.run_id), client.get_run(second.run_id)
    assert run1.data.tags["training_set_sha256"] != run2.data.tags["training_set_sha256"]
    gate = run_promote(cfg, tracking_uri=tracking_uri)
    assert gate.details["champion_predictions"] == "pre-refit"
    assert gate.label_differences == {}  # other onboarding ages, the same labels
    # v1's score is the one its own pre-refit predictions of those rows give
    holdout = _holdout_of(client, second.run_id)
    logged = pd.read_parquet(
        client.download_artifacts(
            first.run_id, "evaluation/holdout_predictions.parquet", str(tmp_path)
        )
    )
    mine = holdout[["partner_id", "as_of"]].merge(logged, on=["partner_id", "as_of"])
    assert len(mine) == len(holdout)
    from partnerscore.training.metrics import evaluate

    honest = evaluate(holdout, mine["pred_revenue"], mine["pred_engagement"])
    assert gate.champion_score == pytest.approx(honest["primary_score"], abs=1e-12)
    assert "optimistic" not in gate.summary()
    # the line says by how much the challenger beat (or trailed) the champion, not only the margin
    change = gate.challenger_score / gate.champion_score - 1
    assert f"({change:+.1%}, needs +1.0%)" in gate.summary()
    # one row changed (another program's namesake, or a later correction of its data): v1
    # never saw that snapshot, so its registered model predicts the rows and says it saw most
    changed = holdout.copy()
    changed.loc[0, "deals_created_todate"] = changed.loc[0, "deals_created_todate"] + 1
    mv1 = client.get_model_version("partnerscore", "1")
    sha2 = run2.data.tags["training_set_sha256"]
    _, basis = unseen_predictions(client, "partnerscore", mv1, run1, changed, sha2)
    assert basis == f"refitted on {len(holdout) - 1:,} of these {len(holdout):,} rows"


def test_the_gate_says_when_the_champion_was_trained_on_other_labels(
    raw_dir, first_version, tracking_uri, tmp_path
):
    """A challenger built with a 90-day horizon against a 180-day champion: the gate ranks
    both on the challenger's 90-day labels, which the champion never learnt. It used to say
    nothing; the line now names the settings that differ (reported, not gated)."""
    cfg = TrainConfig(trials=0, promotion_margin=0.01, max_portfolio_bias=10.0)
    first_version("default", tracking_uri, tmp_path)
    assert run_promote(cfg, tracking_uri=tracking_uri).promoted
    short = tmp_path / "short"
    run_build(raw_dir, short, BuildConfig(horizon_days=90))
    train(short, tracking_uri, tmp_path)
    gate = run_promote(cfg, tracking_uri=tracking_uri)
    assert gate.label_differences == {"horizon_days": (180, 90)}
    assert "champion v1 was trained on other labels (horizon_days 180 vs 90)" in gate.summary()


def test_train_cli_and_errors(built_dir, tracking_uri, tmp_path, capsys):
    assert main(["train", "--features", str(built_dir), "--trials", "0"]) == 0
    out = capsys.readouterr().out
    assert "registered version 1" in out
    assert main(["train", "--features", str(tmp_path / "missing")]) == 2
    assert f"--features {tmp_path / 'missing'}: folder not found" in capsys.readouterr().err
    with pytest.raises(PartnerscoreError, match=r"no registered model 'other' .*: partnerscore"):
        run_promote(TrainConfig(registered_model="other"), tracking_uri=tracking_uri)
    assert main(["promote", "--version", "99"]) == 2


def test_bias_gate_blocks_promotion_without_force_and_reason(
    built_dir, first_version, tracking_uri, tmp_path
):
    result = first_version("default", tracking_uri, tmp_path)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(result.run_id)
    # holdout metrics are the pre-refit model's; the registered model was refitted on all rows
    assert run.data.params["refit"] == "True"
    assert int(run.data.params["refit_rows"]) > int(run.data.params["train_rows"])
    for key in (
        "holdout_revenue_portfolio_bias_se",
        "holdout_revenue_interval_coverage",
        "holdout_revenue_interval_coverage_label_zero",
        "holdout_revenue_interval_coverage_mu_bin_0",
        "holdout_revenue_interval_coverage_age_30",
        "holdout_revenue_median_mae",
        "compare_revenue_median_mae_diff_se",
        "compare_revenue_rmse_diff_se",
        "holdout_fit_revenue_recalibration_factor",
        "compare_engagement_auc_diff_se",
        "compare_revenue_gini_margin_over_se",
    ):
        assert key in run.data.metrics, key
    # per-segment revenue factors: a param, one metric per value, the table as an artifact
    assert run.data.params["segment_recalibration"] == "True"
    assert any(
        k.startswith("holdout_fit_revenue_segment_factor_age_days_") for k in run.data.metrics
    )
    factors = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            run_id=result.run_id,
            artifact_path="training/segment_factors_evaluated.csv",
            dst_path=str(tmp_path),
        )
    )
    assert set(factors["column"]) == {"age_days"}  # the default columns
    assert (factors["factor"] > 0).all()
    report = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            run_id=result.run_id,
            artifact_path="evaluation/interval_coverage.csv",
            dst_path=str(tmp_path),
        )
    ).set_index("group")
    assert report.loc["all", "coverage"] == pytest.approx(
        run.data.metrics["holdout_revenue_interval_coverage"]
    )
    bias = run.data.metrics["holdout_revenue_portfolio_bias"]
    strict = TrainConfig(trials=0, max_portfolio_bias=abs(bias) / 2, portfolio_bias_z=0)
    gate = run_promote(strict, tracking_uri=tracking_uri)  # no champion yet, still refused
    assert not gate.promoted and gate.champion is None
    assert "BEYOND" in gate.summary()
    assert gate.segments_checked == int(run.data.metrics["holdout_revenue_segments_checked"])
    assert gate.cohort_trend == run.data.metrics["holdout_fit_revenue_oof_cohort_trend"]
    assert client.get_model_version("partnerscore", "1").tags["promotion_bias_ok"] == "false"
    with pytest.raises(PartnerscoreError, match="--reason"):
        run_promote(strict, tracking_uri=tracking_uri, force=True)
    forced = run_promote(strict, tracking_uri=tracking_uri, force=True, reason="known bias")
    assert forced.promoted and forced.forced
    # v2 (same data: same bias and s.e.): the limit allows z bootstrap s.e. of noise
    train(built_dir, tracking_uri, tmp_path)
    se = run.data.metrics["holdout_revenue_portfolio_bias_se"]
    assert se > 0
    z_edge = (abs(bias) / 2) / se
    for z, word in ((z_edge + 0.05, "within"), (max(z_edge - 0.05, 0), "BEYOND")):
        cfg = TrainConfig(trials=0, max_portfolio_bias=abs(bias) / 2, portfolio_bias_z=z)
        assert word in run_promote(cfg, tracking_uri=tracking_uri).summary()


def test_baseline_gate_refuses_a_first_version_worse_than_its_baseline(
    built_dir, tracking_uri, tmp_path, capsys
):
    # a revenue head that cannot split (every leaf needs more rows than the training set
    # holds) and no segment factors: one prediction for every partner, a Gini near 0 where
    # the scorecard's is ~0.8 (a 150-partner program's tuned head fell this far too: README)
    result = train(
        built_dir,
        tracking_uri,
        tmp_path,
        revenue=HeadParams(min_child_samples=100_000),
        segment_recalibration=False,
        segment_balance_columns=(),
    )
    c = result.comparison
    assert c["compare_revenue_gini_diff"] < -2 * c["compare_revenue_gini_diff_se"]
    cfg = TrainConfig(trials=0, max_portfolio_bias=10.0)  # the baseline check alone
    gate = run_promote(cfg, tracking_uri=tracking_uri)
    assert not gate.promoted and gate.champion is None  # no champion: refused all the same
    assert aliases(tracking_uri) == {"challenger": "1"}
    text = gate.summary()
    assert "baseline check (not worse than the best baseline beyond the noise): FAILED on " in text
    best = next(k for k in c if k.startswith("compare_revenue_gini_best_baseline_is_"))
    name = best.removeprefix("compare_revenue_gini_best_baseline_is_")
    gini = result.metrics["revenue_normalized_gini"]
    base = result.baselines[name]["revenue_normalized_gini"]
    assert (  # one line per head: value, baseline, difference, s.e.
        f"\n  revenue Gini {gini:.3f} vs {name} {base:.3f}, diff "
        f"{c['compare_revenue_gini_diff']:+.3f} (s.e. {c['compare_revenue_gini_diff_se']:.3f}): "
        "WORSE than the baseline by more than 2 s.e. (refuses the promotion)"
    ) in text
    assert "\n  engagement AUC " in text
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    tags = client.get_model_version("partnerscore", "1").tags
    assert tags["promotion_baseline_ok"] == "false" and "WORSE" in tags["promotion_baseline"]
    # the threshold is train.baseline_gate_z: a wider noise allowance lets it through
    z = -c["compare_revenue_gini_diff"] / c["compare_revenue_gini_diff_se"] + 0.1
    assert baseline_checks(client.get_run(result.run_id).data.metrics, z)[0].verdict == "within"
    # CLI: refused (exit 1), promoted with --force --reason, on the record
    assert main(["promote"]) == 1
    assert "FAILED on revenue Gini" in capsys.readouterr().out
    code = main(["promote", "--force", "--reason", "scorecard outage, model only option"])
    assert code == 0
    assert "FORCED: v1 is now champion" in capsys.readouterr().out
    tags = client.get_model_version("partnerscore", "1").tags
    assert tags["promotion_forced"] == "true"
    assert tags["promotion_reason"] == "scorecard outage, model only option"
    assert aliases(tracking_uri) == {"champion": "1"}


def test_baseline_check_reads_the_logged_comparison():
    logged = {
        "holdout_revenue_normalized_gini": -0.127,
        "holdout_engagement_roc_auc": 0.871,
        "baseline_scorecard_revenue_normalized_gini": 0.896,
        "baseline_linear_revenue_normalized_gini": 0.5,
        "baseline_linear_engagement_roc_auc": 0.8696,
        "baseline_scorecard_engagement_roc_auc": 0.80,
    }
    compare = {
        "compare_revenue_gini_best_baseline_is_scorecard": 1.0,
        "compare_revenue_gini_diff": -1.023,
        "compare_revenue_gini_diff_se": 0.263,
        "compare_engagement_auc_best_baseline_is_linear": 1.0,
        "compare_engagement_auc_diff": 0.0014,
        "compare_engagement_auc_diff_se": 0.035,
    }
    # the 150-partner program's logged model (README): revenue worse by 3.9 s.e.
    rev, eng = baseline_checks(logged | compare, 2.0)
    assert (rev.verdict, rev.blocks, rev.baseline) == ("worse", True, "scorecard")
    assert rev.baseline_value == 0.896 and rev.se == 0.263
    assert rev.line() == (
        "  revenue Gini -0.127 vs scorecard 0.896, diff -1.023 (s.e. 0.263): WORSE than the "
        "baseline by more than 2 s.e. (refuses the promotion)"
    )
    assert (eng.verdict, eng.blocks, eng.baseline) == ("within", False, "linear")
    assert eng.line() == (
        "  engagement AUC 0.871 vs linear 0.870, diff +0.001 (s.e. 0.035): within 2 s.e. of "
        "the baseline"
    )
    assert baseline_checks(logged | compare, 4.0)[0].verdict == "within"  # 3.9 s.e. < 4
    # rule "better": within the noise refuses too; better beyond it does not
    assert baseline_checks(logged | compare, 2.0, "better")[1].blocks
    ahead = compare | {"compare_engagement_auc_diff": 0.08}
    assert not baseline_checks(logged | ahead, 2.0, "better")[1].blocks
    # a run from before the comparison was logged: the difference from the logged metrics
    # (best baseline by the metric), reported and not gated
    for check in baseline_checks(logged, 2.0):
        assert check.verdict == "unchecked" and not check.blocks
        assert "trained before 2026-12-02" in check.line()
    old = baseline_checks(logged, 2.0)[0]
    assert old.baseline == "scorecard" and old.diff == pytest.approx(-1.023)
    # bootstrap_rounds 0: a difference without s.e. is not gated either
    no_se = {k: v for k, v in compare.items() if not k.endswith("_se")}
    assert all(
        c.verdict == "unchecked" and "bootstrap_rounds 0" in c.note
        for c in baseline_checks(logged | no_se, 2.0)
    )
    # no baseline logged at all
    bare = baseline_checks({"holdout_revenue_normalized_gini": 0.5}, 2.0)[0]
    assert bare.verdict == "unchecked" and "no baseline logged" in bare.line()


def test_an_unchecked_head_says_why_it_has_no_se():
    """A holdout of one engagement class gives no AUC on any resample: the note said
    "train.bootstrap_rounds 0" although the run drew its resamples. The run now logs how many
    it drew (``compare_bootstrap_rounds``) and the note names the right cause."""
    from partnerscore.training.train import _compare

    rng = np.random.default_rng(0)
    holdout = pd.DataFrame(
        {
            "partner_id": [f"p{i}" for i in range(60)],
            "label_revenue": rng.gamma(1.0, 1000.0, 60),
            "label_engaged": np.ones(60, dtype=int),  # one class: no AUC
        }
    )
    preds = pd.DataFrame({"pred_revenue": rng.random(60), "pred_engagement": rng.random(60)})
    base = {"revenue_normalized_gini": 0.1, "revenue_mae": 1e3, "revenue_rmse": 1e3}
    baselines = {"linear": base | {"engagement_roc_auc": 0.5}}
    baseline_preds = {"linear": (rng.random(60), rng.random(60))}
    compare = _compare(holdout, preds, baseline_preds, baselines, rounds=40, seed=0)
    logged = {k: v for k, v in compare.items() if np.isfinite(v)}  # as train logs them
    assert logged["compare_bootstrap_rounds"] == 40
    revenue, engagement = baseline_checks(logged, 2.0)
    assert revenue.verdict != "unchecked"
    assert engagement.verdict == "unchecked"
    assert engagement.note == "no difference on this holdout (e.g. it holds one engagement class)"
    # a finite difference without an s.e.: no resamples drawn, or too few gave a difference
    no_se = {k: v for k, v in logged.items() if k != "compare_revenue_gini_diff_se"}
    assert baseline_checks(no_se, 2.0)[0].note == (
        "the run logged no paired s.e. (fewer than 2 of its 40 partner resamples gave a "
        "difference, e.g. a holdout of very few partners)"
    )
    zero = baseline_checks(no_se | {"compare_bootstrap_rounds": 0.0}, 2.0)[0]
    assert zero.note == "the run logged no paired s.e. (train.bootstrap_rounds 0)"


def test_promote_summary_reports_segments_and_drift_without_gating():
    from partnerscore.training.registry import PromoteResult

    common = {"challenger": "2", "champion": None, "challenger_score": 0.8}
    common |= {"champion_score": None, "margin": 0.01, "bias": 0.02, "max_bias": 0.1}
    res = PromoteResult(
        promoted=True,
        **common,
        segments_checked=8,
        segments_beyond=2,
        cohort_trend=0.25,
        cohort_trend_se=0.08,
    )
    text = res.summary()
    assert text.startswith("promoted v2")
    assert "2 of 8 tier/region segments beyond that limit by more than their noise" in text
    assert "cohort drift? out of fold newer cohorts earn +25% per year (s.e. 8%)" in text
    old_run = PromoteResult(promoted=True, **common)  # a run from before these metrics
    assert "segments" not in old_run.summary() and "drift" not in old_run.summary()


def test_revenue_phases_report_reads_the_logged_phase_table(first_version, tracking_uri, tmp_path):
    """The phase table against the holdout it was computed from, and the model's phasing."""
    result = first_version("segment_bias_20", tracking_uri, tmp_path)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    metrics = client.get_run(result.run_id).data.metrics

    def artifact(name):
        return mlflow.artifacts.download_artifacts(
            run_id=result.run_id,
            artifact_path=name,
            tracking_uri=tracking_uri,
            dst_path=str(tmp_path),  # else a new temporary folder each, never removed
        )

    table = pd.read_csv(artifact("evaluation/revenue_phases.csv"))
    holdout = pd.read_parquet(artifact("evaluation/holdout.parquet"))
    whole = table[table["segment"] == "all"]
    n_phases = whole["phase"].max()
    assert n_phases == 6  # 180-day horizon, 30-day phases
    for age, part in whole.groupby("age_days"):
        rows = holdout[holdout["age_days"] == age]
        assert (part["rows"] == len(rows)).all()
        # the phases split the age's revenue: realised exactly, expected by shares adding to 1
        assert part["actual"].sum() == pytest.approx(rows["label_revenue"].sum())
        assert part["expected_share"].sum() == pytest.approx(1.0)
        for rec in part.itertuples():
            phase = rows[f"label_revenue_phase_{rec.phase}"].sum()
            assert rec.actual == pytest.approx(phase)
    checked = whole[whole["rows"] >= 20]
    gap = (checked["expected_share"] - checked["realised_share"]).abs().max()
    assert metrics["holdout_revenue_phase_share_error_max_abs"] == pytest.approx(gap)
    # the gap's noise: the partner-bootstrap s.e. of the whole ages' phases, a plain reading
    assert table.loc[table["segment"] != "all", "share_gap_se"].isna().all()
    # (NaN where a resample of an age's few partners has no revenue at all)
    assert whole["share_gap_se"].notna().any() and not (whole["share_gap_se"] < 0).any()
    worst = (checked["expected_share"] - checked["realised_share"]).abs().idxmax()
    assert metrics.get("holdout_revenue_phase_share_error_se", float("nan")) == pytest.approx(
        checked.loc[worst, "share_gap_se"], nan_ok=True
    )
    beyond = (
        (checked["expected_share"] - checked["realised_share"]).abs() - 2 * checked["share_gap_se"]
    ).max()
    assert metrics["holdout_revenue_phase_share_error_beyond_2se"] == pytest.approx(
        max(beyond, 0.0)
    )
    cells = table[table["segment"] != "all"]
    assert metrics["holdout_revenue_phase_interval_coverage"] == pytest.approx(
        cells["covered"].mean()
    )
    assert "revenue phasing" in result.summary()
    # the registered model carries the phasing its scores use
    fit = json.loads(Path(artifact("training/fit.json")).read_text())
    phasing = fit["registered"]["phasing"]
    assert phasing["phase_days"] == 30 and phasing["horizon_days"] == 180
    assert sum(phasing["pooled"]) == pytest.approx(1.0)


def test_models_json_holds_what_mlflow_holds(model_store, monkeypatch, capsys):
    # --json gave the run id cut to 8 characters and every metric rounded to 10 digits
    # (pandas' to_json): a scheduler could neither find the run nor match its metrics
    uri = model_store.paths.tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["--json", "models"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["versions"]
    client = mlflow.MlflowClient(tracking_uri=uri)
    version = client.get_model_version("partnerscore", str(row["version"]))
    assert row["run_id"] == version.run_id
    logged = client.get_run(version.run_id).data.metrics
    assert row["primary"] == logged["holdout_primary_score"]
    assert row["eng_brier"] == logged["holdout_engagement_brier"]
    assert main(["models"]) == 0  # the table still shows 8 characters
    assert f" {version.run_id[:8]} " in capsys.readouterr().out


def test_a_baseline_check_with_no_head_checked_does_not_say_passed():
    """A run trained with bootstrap_rounds 0 (no paired s.e.) or before the comparison was
    logged has every head 'not checked'; the summary said 'baseline check (...): passed'."""
    from partnerscore.training.registry import PromoteResult

    common = {"challenger": "2", "champion": None, "challenger_score": 0.8}
    common |= {"champion_score": None, "margin": 0.01, "bias": 0.02, "max_bias": 0.1}
    logged = {
        "holdout_revenue_normalized_gini": 0.6,
        "holdout_engagement_roc_auc": 0.8,
        "compare_revenue_gini_best_baseline_is_scorecard": 1.0,
        "compare_revenue_gini_diff": 0.1,
        "compare_engagement_auc_best_baseline_is_linear": 1.0,
        "compare_engagement_auc_diff": -0.2,
    }
    unchecked = baseline_checks(logged, 2.0)
    text = PromoteResult(promoted=True, **common, baseline=unchecked).summary()
    assert "passed" not in text, text
    assert "baseline check (not worse than the best baseline beyond the noise): not checked" in text
    half = baseline_checks(logged | {"compare_revenue_gini_diff_se": 0.02}, 2.0)
    text = PromoteResult(promoted=True, **common, baseline=half).summary()
    assert "baseline check (not worse than the best baseline beyond the noise): passed" in text


def _purge_run(uri: str, run_id: str) -> None:
    """Delete a run and purge it from the store for good, as ``mlflow gc`` does."""
    from support import purge_run

    purge_run(uri, run_id)


def test_models_and_promote_name_a_version_whose_run_is_gone(
    built_dir, first_version, tracking_uri, tmp_path, capsys
):
    """A version whose training run was deleted (soft: restorable) or purged (``mlflow gc``):
    `models` and `promote` stopped with 'unexpected MlflowException: Run with id=... not
    found'. `models` lists it with a note, `promote` refuses it as a challenger in one line
    and reads it as a champion by its registered model, flagged."""
    cfg = TrainConfig(trials=0, promotion_margin=0.01, max_portfolio_bias=10.0)
    first = first_version("default", tracking_uri, tmp_path)
    assert run_promote(cfg, tracking_uri=tracking_uri).promoted
    second = train(built_dir, tracking_uri, tmp_path)
    third = train(built_dir, tracking_uri, tmp_path)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    client.delete_run(third.run_id)  # soft: still readable, restorable
    _purge_run(tracking_uri, second.run_id)
    result = run_models(cfg, tracking_uri=tracking_uri)
    assert result.table["version"].tolist() == [1, 2, 3]
    gone = result.table.set_index("version").loc[2]
    assert np.isnan(gone["primary"]) and gone["run_id"] == second.run_id
    assert np.isfinite(result.table.set_index("version").loc[3, "primary"])
    text = result.summary()
    assert f"v2: training run {second.run_id} is not in the store" in text
    assert f"v3: training run {third.run_id} is deleted" in text
    assert main(["--json", "models"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert any(second.run_id in note for note in payload["notes"])
    # the purged run's version as the challenger: one line, exit 2
    with pytest.raises(PartnerscoreError, match=f"v2's training run {second.run_id}"):
        run_promote(cfg, tracking_uri=tracking_uri, version="2")
    assert main(["promote", "--version", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not in the store" in err
    # as the champion: read by its registered model, and the line says what is unknown
    client.set_registered_model_alias("partnerscore", "champion", "2")  # an earlier rollback
    gate = run_promote(cfg, tracking_uri=tracking_uri, version="1")
    assert gate.champion == "2" and gate.champion_score == gate.champion_score
    assert "[v2 read by its registered model, its training run is gone" in gate.summary()
    assert first.run_id  # v1 itself untouched


def test_models_says_where_the_versions_metrics_do_not_compare(
    raw_dir, built_dir, first_version, tracking_uri, tmp_path, capsys
):
    """v1 on the default build, v2 without one feature, v3 on 90-day labels: `models` put
    their holdout metrics side by side as if they measured one thing (v3's Gini is of another
    target, on other rows). The table now gives each version's feature and holdout row counts,
    and notes under it name the other training sets and v3's other labels."""
    cfg = TrainConfig(trials=0, max_portfolio_bias=10.0)
    first_version("default", tracking_uri, tmp_path)
    assert run_promote(cfg, tracking_uri=tracking_uri).promoted
    dropped = without_feature(built_dir, tmp_path / "dropped", "activities_days_since_last")
    train(dropped, tracking_uri, tmp_path)
    short = tmp_path / "short"
    run_build(raw_dir, short, BuildConfig(horizon_days=90))
    train(short, tracking_uri, tmp_path)
    result = run_models(cfg, tracking_uri=tracking_uri)
    table = result.table.set_index("version")
    n = int(table.loc[1, "features"])
    assert table["features"].tolist() == [n, n - 1, n]
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    for v in (1, 2, 3):
        run = client.get_run(client.get_model_version("partnerscore", str(v)).run_id)
        assert table.loc[v, "holdout"] == int(run.data.params["holdout_rows"])
    assert table.loc[1, "holdout"] != table.loc[3, "holdout"]
    text = result.summary()
    assert "holdout metrics are each version's own holdout, and these versions have 3" in text
    # the notebook is the repository's: an installed package has no notebooks/ folder
    assert "or the repository's notebooks/compare_models.ipynb" in text
    assert "v3 was trained on other labels than v1 (horizon_days 180 vs 90)" in text
    assert "v2 was trained on other labels" not in text
    assert main(["--json", "models"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["notes"] == result.notes
    assert [v["features"] for v in payload["versions"]] == [n, n - 1, n]
    # the same training set cut at another holdout share is another holdout too
    train(built_dir, tracking_uri, tmp_path, holdout_share=0.3)
    text = run_models(cfg, tracking_uri=tracking_uri).summary()
    assert "these versions have 4 different ones" in text


def test_the_logged_config_hash_is_the_hash_of_the_config_in_effect(
    built_dir, tracking_uri, tmp_path, capsys
):
    """`train --trials 0` and `train --trials 1` logged one config hash (of the config before
    the command line's override), so `models` showed two configurations as one; the run's own
    config/resolved.json held the trials. The hash is now that of the resolved config."""
    from partnerscore.serving.config import AppConfig

    assert main(["train", "--features", str(built_dir), "--trials", "0"]) == 0
    assert main(["train", "--features", str(built_dir), "--trials", "1"]) == 0
    capsys.readouterr()
    table = run_models(TrainConfig(), tracking_uri=tracking_uri).table
    assert table["config_hash"].nunique() == 2
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    for version in ("1", "2"):
        run_id = client.get_model_version("partnerscore", version).run_id
        resolved = json.loads(
            Path(
                client.download_artifacts(run_id, "config/resolved.json", str(tmp_path))
            ).read_text()
        )
        tag = client.get_run(run_id).data.tags["config_hash"]
        assert tag == AppConfig.model_validate(resolved).hash()
    # the same training set and configuration again: the same model, and train says so
    assert main(["train", "--features", str(built_dir), "--trials", "0"]) == 0
    first = client.get_model_version("partnerscore", "1").run_id
    said = f"same training set and configuration as earlier run {first[:8]} (v1): training"
    assert said in capsys.readouterr().out
    assert main(["--json", "train", "--features", str(built_dir), "--trials", "1"]) == 0
    second = client.get_model_version("partnerscore", "2").run_id
    assert json.loads(capsys.readouterr().out)["identical_to"] == [f"{second[:8]} (v2)"]


def test_the_gate_reads_a_champion_with_features_the_challenger_build_lacks(
    built_dir, first_version, tracking_uri, tmp_path
):
    """v1 (not refitted) reads a feature v2's registry dropped; v2's holdout has no column for
    it, so the gate scored v1 with it all-missing: on a 1,500-partner program (10 features
    absent) that cost v1 0.733 -> 0.720 and promoted a challenger (0.732) the gate should have
    refused; here it read 0.875 for 0.864 (either way). v1 now reads its own logged holdout's
    values of the same rows; where it cannot, the line says so."""
    from partnerscore.training.metrics import evaluate
    from partnerscore.training.registry import _holdout_of, unseen_predictions

    cfg = TrainConfig(trials=0, promotion_margin=0.01, max_portfolio_bias=10.0)
    first = first_version("no_refit", tracking_uri, tmp_path)
    assert run_promote(cfg, tracking_uri=tracking_uri).promoted
    dropped = without_feature(built_dir, tmp_path / "dropped", "activities_days_since_last")
    train(dropped, tracking_uri, tmp_path, refit=False)
    gate = run_promote(cfg, tracking_uri=tracking_uri)
    assert gate.details["champion_predictions"] == "registered"
    # the same rows with all of v1's features: its own holdout score
    assert gate.champion_score == pytest.approx(first.metrics["primary_score"], abs=1e-12)
    assert "not its real score" not in gate.summary()
    # rows v1 never held out (one feature value changed): no values to complete, flagged
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    mine = _holdout_of(client, client.get_model_version("partnerscore", "2").run_id)
    changed = mine.copy()
    changed.loc[0, "deals_created_todate"] = changed.loc[0, "deals_created_todate"] + 1
    mv1 = client.get_model_version("partnerscore", "1")
    pred, basis = unseen_predictions(
        client, "partnerscore", mv1, client.get_run(first.run_id), changed, ""
    )
    assert basis == (
        "registered; 1 of its features absent from these rows (scored as missing:"
        " activities_days_since_last)"
    )
    handicapped = evaluate(changed, pred["pred_revenue"], pred["pred_engagement"])
    assert handicapped["primary_score"] != pytest.approx(first.metrics["primary_score"])
