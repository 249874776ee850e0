"""Benchmark: model quality against the issue-10 goals on simulated programs (prints tables).

Part A — one program of ``--partners`` (default 5,000): the training job's pure part
(:func:`~partnerscore.training.train.train_and_evaluate`: per-head tuning, revenue
recalibration, calibrated engagement, conformal intervals, baselines, paired bootstrap) and, on
its holdout (newest signing cohorts, pre-refit model):

- revenue portfolio bias (vs realised labels with its partner-bootstrap s.e., and vs the
  simulator's true expectations) overall and per tier / region with >= 200 holdout partners,
  and the per-segment recalibration factors (``train.segment_recalibration``);
- revenue RMSE and Gini of the mean ``pred_revenue`` and MAE of the predictive median
  ``pred_revenue_median`` against the best baseline's (paired bootstrap s.e.); Gini / oracle;
- engagement ROC AUC, AUC / oracle AUC, ECE and the chosen calibration map;
- each head's margin over the best baseline in units of its paired bootstrap s.e.;
- 80% interval coverage, marginal and conditional (per prediction quintile, zero / positive
  outcomes), and the share of tier / region portfolio intervals (each onboarding age summed on
  its own) covering the realised total;
- scoring speed with drivers of the tuned model (``score_features``: rows/s on two threads,
  and rows per CPU-second on one thread, which a loaded machine distorts less);
- a revenue ranking ceiling: the tuned head's class and a depth 6 / 63-leaf booster, each
  fitted to labels and to the simulator's truth, as Gini / oracle and Gini of the truth.

Part B — a learning curve on one program of ``--curve-partners`` (default 10x a 1,000-partner
base): the holdout is fixed (newest cohorts) and the heads are trained on random subsets of the
training partners (10%, 25%, 50%, 100%), so the points differ only in training size. The value
at 100% (10x the base) estimates the ceiling reachable from these features; the oracle knows
the latent traits the features reveal only partly.

Asserts nothing; the goals are printed with met / NOT met.

    .venv/bin/python bench/bench_models.py [--partners 5000] [--trials 10]
        [--curve-partners 10000] [--seed 7] [--skip-curve]
"""

from __future__ import annotations

import argparse
import os
import time
from math import erf

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from partnerscore.features.config import BuildConfig, SimulateConfig  # noqa: E402
from partnerscore.features.pipeline import build_training_set  # noqa: E402
from partnerscore.features.registry import feature_specs  # noqa: E402
from partnerscore.features.simulate import simulate_program  # noqa: E402
from partnerscore.features.validate import RawData  # noqa: E402
from partnerscore.models.config import PolicyConfig  # noqa: E402
from partnerscore.models.heads import RevenueRegressor  # noqa: E402
from partnerscore.models.scoring import score_features  # noqa: E402
from partnerscore.training.config import TrainConfig  # noqa: E402
from partnerscore.training.metrics import evaluate, normalized_gini, oracle_ratios  # noqa: E402
from partnerscore.training.splits import holdout_split  # noqa: E402
from partnerscore.training.train import (  # noqa: E402
    fit_partner_model,
    monotone_constraints,
    train_and_evaluate,
)

MIN_SEGMENT_PARTNERS = 200
# a flexible booster, for measurement only (its trees are too large for compiled SHAP)
FLEXIBLE = {
    "num_leaves": 63,
    "max_depth": 6,
    "n_estimators": 400,
    "learning_rate": 0.05,
    "min_child_samples": 40,
}


def program(
    partners: int, seed: int, simulate: dict | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """(training set, truth aligned on (partner_id, as_of), seconds) of a simulated program.

    ``simulate``: further :class:`SimulateConfig` fields (e.g. ``{"cohort_trend": 0.2}``).
    """
    started = time.perf_counter()
    tables = simulate_program(SimulateConfig(partners=partners, seed=seed, **(simulate or {})))
    frame = build_training_set(RawData.from_frames(tables), BuildConfig())
    truth = tables["truth"][["partner_id", "age_days", "true_expected_revenue"]]
    truth = truth.assign(true_engagement_prob=tables["truth"]["true_engagement_prob"])
    aligned = frame[["partner_id", "as_of"]].assign(age_days=frame["age_days"].astype(int))
    aligned = aligned.merge(truth, on=["partner_id", "age_days"], how="left")
    return frame, aligned, time.perf_counter() - started


def flag(ok: bool) -> str:
    return "met" if ok else "NOT met"


def part_a(partners: int, seed: int, trials: int, segment_recalibration: bool = True) -> dict:
    frame, truth, build_s = program(partners, seed)
    print(f"\n== A: program of {partners:,} partners (seed {seed}), {len(frame):,} snapshots ==")
    print(f"simulate + build {build_s:.1f} s; training with {trials} trials per head ...")
    started = time.perf_counter()
    config = TrainConfig(
        trials=trials,
        seed=seed,
        segment_recalibration=segment_recalibration,
        segment_bias_min_partners=MIN_SEGMENT_PARTNERS,
    )
    ev = train_and_evaluate(frame, {}, truth, config)
    train_s = time.perf_counter() - started
    m, hold, preds = ev.metrics, ev.holdout, ev.preds
    merged = hold[["partner_id", "as_of"]].merge(truth, on=["partner_id", "as_of"], how="left")
    true_rev = merged["true_expected_revenue"].to_numpy(float)
    pred = preds["pred_revenue"].to_numpy(float)
    label = hold["label_revenue"].to_numpy(float)
    print(
        f"trained in {train_s:.0f} s on {len(ev.train):,} snapshots; holdout "
        f"{len(hold):,} snapshots of {hold['partner_id'].nunique():,} partners"
    )
    params = {
        h: {
            k: (round(v, 3) if isinstance(v, float) else v)
            for k, v in p.items()
            if k not in ("monotone_constraints", "n_jobs", "random_state", "subsample_freq")
        }
        for h, p in ev.params.items()
    }
    print(f"chosen parameters: {params}")

    print("\nrevenue portfolio bias on the holdout (pred / actual - 1)")
    print(
        f"{'segment':<22}{'partners':>9}{'vs labels':>11}{'s.e.':>7}{'vs truth':>10}{'s.e.':>7}"
        f"{'oracle':>9}{'top 1%':>8}"
    )
    rows = [("all", np.ones(len(hold), bool))]
    for seg in ("tier", "region"):
        for value in sorted(hold[seg].astype(str).unique()):
            rows.append((f"{seg}={value}", (hold[seg].astype(str) == value).to_numpy()))
    seg_ok = seg_ok_truth = True
    floor = 1.0  # chance that a model unbiased for every segment meets the goal vs truth
    rng = np.random.default_rng(seed)
    for name, sel in rows:
        n_partners = hold.loc[sel, "partner_id"].nunique()
        b_lab = pred[sel].sum() / label[sel].sum() - 1
        b_true = pred[sel].sum() / true_rev[sel].sum() - 1
        b_oracle = true_rev[sel].sum() / label[sel].sum() - 1
        # partner bootstrap of the labels-based bias, and the top 1% partners' revenue share
        per = (
            pd.DataFrame(
                {
                    "p": hold["partner_id"].to_numpy()[sel],
                    "y": label[sel],
                    "m": pred[sel],
                    "t": true_rev[sel],
                }
            )
            .groupby("p")[["y", "m", "t"]]
            .sum()
        )
        draws = [rng.integers(0, len(per), len(per)) for _ in range(200)]
        y_, m_, t_ = per["y"].to_numpy(), per["m"].to_numpy(), per["t"].to_numpy()
        se = float(np.std([m_[i].sum() / y_[i].sum() - 1 for i in draws]))
        # the truth knows latent traits the features do not: its segment totals are noisy too
        se_true = float(np.std([m_[i].sum() / t_[i].sum() - 1 for i in draws]))
        top = np.sort(y_)[::-1]
        top_share = top[: max(1, len(top) // 100)].sum() / top.sum()
        checked = n_partners >= MIN_SEGMENT_PARTNERS
        if checked:
            seg_ok &= abs(b_lab) <= 0.05
            seg_ok_truth &= abs(b_true) <= 0.05
            floor *= float(erf(0.05 / (se_true * np.sqrt(2)))) if se_true > 0 else 1.0
        mark = "  <- goal |bias| <= 5%" if checked else ""
        print(
            f"{name:<22}{n_partners:>9,}{b_lab:>+11.1%}{se:>7.1%}{b_true:>+10.1%}{se_true:>7.1%}"
            f"{b_oracle:>+9.1%}"
            f"{top_share:>8.0%}{mark}"
        )
    print(
        f"chance that a model unbiased in every segment shows |bias vs truth| <= 5% in all "
        f"checked rows on this holdout (normal, independent, the s.e. above): {floor:.0%}"
    )
    print(
        f"overall bias s.e. (partner bootstrap) {m['revenue_portfolio_bias_se']:.1%}; "
        f"'oracle' = truth vs labels: the sampling noise a perfect model would show; "
        f"recalibration factor {m['fit_revenue_recalibration_factor']:.3f} "
        f"(out-of-fold bias before it {m['fit_revenue_oof_bias_before_recalibration']:+.1%})"
    )
    if m.get("revenue_segments_checked"):  # what the training run logs of the same table
        print(
            f"training run's segment report (>= {MIN_SEGMENT_PARTNERS} partners): "
            f"{m['revenue_segments_checked']:.0f} checked, largest |bias| "
            f"{m['revenue_segment_bias_max_abs']:.1%} vs labels, "
            f"{m.get('revenue_segment_bias_vs_truth_max_abs', float('nan')):.1%} vs truth; "
            f"{m['revenue_segments_beyond_bias_limit']:.0f} beyond the promotion limit "
            "by more than 2 s.e."
        )

    seg = ev.evaluated.metadata["fit"].get("revenue_segment_factors")
    if seg:
        print(
            f"\nper-segment recalibration (out of fold, shrunk toward 1; overall "
            f"{seg['overall']:.3f}, prior s.d. of log factors {seg['tau']}, "
            f"out-of-fold bias after {m['fit_revenue_oof_bias_after_recalibration']:+.1%})"
        )
        table = pd.DataFrame(seg["table"])[
            ["column", "value", "partners", "raw_factor", "se_log", "weight", "factor"]
        ]
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    else:
        print("\nper-segment recalibration: off")

    print("\nholdout metrics")
    print(f"{'model':<12}{'gini':>8}{'MAE':>10}{'RMSE':>10}{'bias':>8}{'AUC':>8}{'ECE':>8}")
    for name, mm in {"gbm": m, **ev.baselines}.items():
        print(
            f"{name:<12}{mm['revenue_normalized_gini']:>8.3f}{mm['revenue_mae']:>10,.0f}"
            f"{mm['revenue_rmse']:>10,.0f}{mm['revenue_portfolio_bias']:>+8.1%}"
            f"{mm['engagement_roc_auc']:>8.3f}{mm['engagement_ece']:>8.3f}"
        )
    oracle_gini, oracle_auc = m["oracle_revenue_normalized_gini"], m["oracle_engagement_roc_auc"]
    print(f"{'oracle':<12}{oracle_gini:>8.3f}{'':>34}{oracle_auc:>8.3f}")
    c = ev.comparison
    best_mae = min(b["revenue_mae"] for b in ev.baselines.values())
    best_rmse = min(b["revenue_rmse"] for b in ev.baselines.values())
    best_mae_name = min(ev.baselines, key=lambda k: ev.baselines[k]["revenue_mae"])
    med_mae = m.get("revenue_median_mae", np.nan)
    print(
        f"predictive median (pred_revenue_median): MAE {med_mae:,.0f} vs best baseline "
        f"{best_mae_name} {ev.baselines[best_mae_name]['revenue_mae']:,.0f}; share of holdout "
        f"rows with median 0: {(preds['pred_revenue_median'] == 0).mean():.0%}"
    )
    # absent where the holdout is too small or the oracle is within its noise of chance
    gini_or = m.get("oracle_ratio_revenue_normalized_gini", np.nan)
    auc_or = m.get("oracle_ratio_engagement_roc_auc", np.nan)
    goals = [
        ("|bias| <= 5% overall and in every tier/region with >= 200 partners, vs labels", seg_ok),
        (
            "|bias| <= 5% overall and in every tier/region with >= 200 partners, vs truth",
            seg_ok_truth,
        ),
        (
            f"revenue MAE <= best baseline ({m['revenue_mae']:,.0f} vs {best_mae:,.0f})",
            m["revenue_mae"] <= best_mae,
        ),
        (
            f"revenue median MAE <= best baseline MAE ({med_mae:,.0f} vs {best_mae:,.0f})",
            med_mae <= best_mae,
        ),
        (
            f"revenue RMSE <= best baseline ({m['revenue_rmse']:,.0f} vs {best_rmse:,.0f})",
            m["revenue_rmse"] <= best_rmse,
        ),
        (
            f"revenue Gini / oracle >= 0.99 ({gini_or:.3f})",
            gini_or >= 0.99,
        ),
        (
            f"engagement AUC / oracle >= 0.97 ({auc_or:.3f})",
            auc_or >= 0.97,
        ),
    ]
    for key, label_, sign in (
        ("revenue_gini", "revenue Gini", 1),
        ("revenue_rmse", "revenue RMSE", -1),
        ("revenue_median_mae", "revenue median MAE", -1),
        ("engagement_auc", "engagement AUC", 1),
    ):
        diff, se = c.get(f"compare_{key}_diff", np.nan), c.get(f"compare_{key}_diff_se", np.nan)
        goals.append(
            (
                f"{label_} beats best baseline by > 1 s.e. ({diff:+,.4f}, s.e. {se:,.4f})",
                sign * diff > se,
            )
        )
    cov = m.get("revenue_interval_coverage", np.nan)
    goals.append(
        (
            f"80% intervals cover 77-83% of holdout rows ({cov:.1%}, "
            f"{ev.evaluated.intervals.method} split conformal)",
            0.77 <= cov <= 0.83,
        )
    )
    print("\ninterval coverage on the holdout, overall and conditional")
    print(ev.interval_report.to_string(index=False, float_format=lambda v: f"{v:,.3f}"))
    part_cov = hold.assign(_p=pred, _lo=preds["pred_revenue_lo"], _hi=preds["pred_revenue_hi"])
    per_partner = part_cov.groupby("partner_id").apply(
        lambda g: float(((g.label_revenue >= g._lo) & (g.label_revenue <= g._hi)).mean()),
        include_groups=False,
    )
    positive = hold["label_revenue"].to_numpy() > 0
    print(f"\nzero revenue in the horizon: {1 - positive.mean():.0%} of holdout rows")
    print(
        f"interval coverage: rows {cov:.1%}, mean per partner {per_partner.mean():.1%}, "
        f"mean width {m['revenue_interval_mean_width']:,.0f}; tier/region portfolio intervals "
        "(per onboarding age) covering the realised total: "
        f"{m.get('revenue_portfolio_interval_coverage', np.nan):.0%}"
    )
    print(
        f"engagement calibration map: {ev.evaluated.engagement.calibration_method_}; CV log "
        f"loss {ev.evaluated.metadata['fit']['calibration_cv_log_loss']}"
    )

    # scoring speed of the tuned, refitted model (drivers, subscores, policy)
    rows = pd.concat([ev.train] * max(1, int(np.ceil(50_000 / len(ev.train)))), ignore_index=True)
    rows = rows.iloc[:50_000]
    score_features(ev.model, rows.iloc[:1000])
    t0 = time.perf_counter()
    score_features(ev.model, rows, num_threads=2)
    speed = len(rows) / (time.perf_counter() - t0)
    t0 = time.process_time()
    score_features(ev.model, rows, num_threads=1)
    per_cpu_s = len(rows) / (time.process_time() - t0)
    print(
        f"\nscoring with drivers: {speed:,.0f} rows/s (2 threads, wall), {per_cpu_s:,.0f} rows per CPU-second (1 thread)"
    )
    trees = (ev.model.revenue.booster_.num_trees(), ev.model.engagement.booster_.num_trees())
    ceiling_rows(ev, truth)
    goals.append(
        (f"scoring with drivers >= 20k rows/s ({speed:,.0f}; trees {trees})", speed >= 20_000)
    )
    print("\ngoals (part A)")
    for text, ok in goals:
        print(f"  [{flag(ok):>7}] {text}")
    return {"metrics": m, "params": ev.params}


def ceiling_rows(ev, truth: pd.DataFrame) -> None:
    """Revenue Gini / oracle of boosters fitted to the simulator's truth instead of labels.

    The truth is E[label | latent traits]; a model fitted to it on the training rows learns
    E[truth | features] = E[label | features] without label noise, the best ranking these
    features allow (up to the model class and the training size). Its Gini / oracle on the
    holdout is the ceiling from the features; the oracle knows the latent traits themselves.
    Also: the tuned head's class on labels with deeper trees (depth 6, 63 leaves).
    """
    specs = ev.model.feature_specs
    X_tr, X_ho = ev.model.prepare(ev.train), ev.model.prepare(ev.holdout)
    t_tr = (
        ev.train[["partner_id", "as_of"]]
        .merge(truth, on=["partner_id", "as_of"], how="left")["true_expected_revenue"]
        .to_numpy(float)
    )
    hold = ev.holdout[["partner_id", "as_of"]].merge(truth, on=["partner_id", "as_of"], how="left")
    t_ho = hold["true_expected_revenue"].to_numpy(float)
    y_tr = ev.train["label_revenue"].to_numpy(float)
    y_ho = ev.holdout["label_revenue"].to_numpy(float)
    oracle = normalized_gini(y_ho, t_ho)
    tuned = {
        k: v for k, v in ev.params["revenue"].items() if k not in ("monotone_constraints", "n_jobs")
    }
    mono = monotone_constraints(specs)
    rows = [
        ("tuned head, labels (the model above)", ev.preds["pred_revenue"].to_numpy(float)),
    ]
    for name, params, target in (
        ("tuned head's class, truth", tuned, t_tr),
        ("depth 6 / 63 leaves, labels", {**tuned, **FLEXIBLE}, y_tr),
        ("depth 6 / 63 leaves, truth", {**tuned, **FLEXIBLE}, t_tr),
    ):
        model = RevenueRegressor(**params, monotone_constraints=mono).fit(X_tr, target)
        rows.append((name, model.predict(X_ho)))
    print("\nrevenue ranking ceiling (holdout): Gini / oracle on labels, and Gini of the truth")
    print(f"{'model':<40}{'gini/or':>9}{'vs truth':>10}")
    for name, pred in rows:
        print(
            f"{name:<40}{normalized_gini(y_ho, pred) / oracle:>9.3f}"
            f"{normalized_gini(t_ho, pred):>10.3f}"
        )
    print(f"{'oracle (the truth itself)':<40}{1.0:>9.3f}{1.0:>10.3f}")


def part_b(partners: int, seed: int, params: dict | None) -> None:
    frame, truth, build_s = program(partners, seed)
    frame = frame.sort_values(["partner_id", "as_of"], kind="stable").reset_index(drop=True)
    print(f"\n== B: learning curve on {partners:,} partners (seed {seed}), fixed holdout ==")
    config = TrainConfig(trials=0, seed=seed, refit=False)
    tr, ho = holdout_split(frame, config.holdout_share)
    train, hold = frame[tr].reset_index(drop=True), frame[ho].reset_index(drop=True)
    specs = [s for s in feature_specs() if s.name in frame.columns]
    ids = train["partner_id"].unique()
    rng = np.random.default_rng(seed)
    order = rng.permutation(ids)
    rev_p = dict((params or {}).get("revenue", {}))
    eng_p = dict((params or {}).get("engagement", {}))
    print(
        f"{'train partners':>15}{'gini':>8}{'gini/or':>9}{'AUC':>8}{'AUC/or':>8}{'bias':>8}"
        f"{'vs truth':>10}{'seconds':>9}"
    )
    results = []
    for share in (0.1, 0.25, 0.5, 1.0):
        keep = set(order[: int(round(share * len(ids)))])
        sub = train[train["partner_id"].isin(keep)].reset_index(drop=True)
        t0 = time.perf_counter()
        model = fit_partner_model(sub, specs, config, PolicyConfig(), rev_p, eng_p)
        p = model.predict(hold)
        m = evaluate(hold, p["pred_revenue"], p["pred_engagement"])
        m.update(oracle_ratios(m, hold, truth))
        gini_or = m.get("oracle_ratio_revenue_normalized_gini", np.nan)
        auc_or = m.get("oracle_ratio_engagement_roc_auc", np.nan)
        merged = hold[["partner_id", "as_of"]].merge(truth, on=["partner_id", "as_of"])
        b_true = p["pred_revenue"].sum() / merged["true_expected_revenue"].sum() - 1
        results.append((len(keep), m))
        print(
            f"{len(keep):>15,}{m['revenue_normalized_gini']:>8.3f}"
            f"{gini_or:>9.3f}{m['engagement_roc_auc']:>8.3f}"
            f"{auc_or:>8.3f}{m['revenue_portfolio_bias']:>+8.1%}"
            f"{b_true:>+10.1%}{time.perf_counter() - t0:>9.0f}"
        )
    base, ceiling = results[0][1], results[-1][1]
    print(
        f"oracle on this holdout: gini {ceiling['oracle_revenue_normalized_gini']:.3f}, "
        f"AUC {ceiling['oracle_engagement_roc_auc']:.3f}; ceiling (10x the base) AUC "
        f"{ceiling['engagement_roc_auc']:.3f}, gini {ceiling['revenue_normalized_gini']:.3f}"
    )
    for n, m in results[:-1]:
        gap = ceiling["engagement_roc_auc"] - m["engagement_roc_auc"]
        print(
            f"  engagement AUC at {n:,} training partners is {gap:+.4f} below the ceiling "
            f"[{flag(gap <= 0.01)} within 0.01]"
        )
    del base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, default=5000)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--curve-partners", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-curve", action="store_true")
    parser.add_argument("--skip-main", action="store_true")
    parser.add_argument(
        "--no-segment-recalibration",
        action="store_true",
        help="overall recalibration factor only (train.segment_recalibration: false)",
    )
    args = parser.parse_args()
    params = None
    if not args.skip_main:
        params = part_a(args.partners, args.seed, args.trials, not args.no_segment_recalibration)[
            "params"
        ]
    if not args.skip_curve:
        part_b(args.curve_partners, args.seed + 1, params)


if __name__ == "__main__":
    main()
