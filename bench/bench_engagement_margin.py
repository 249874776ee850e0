"""Benchmark: the engagement head against the linear baseline over many simulated programs.

Issue 10 asks the engagement GBM to beat the best baseline (the logistic one) on the holdout by
more than the paired partner-bootstrap s.e. of the difference. One 5k holdout cannot say
whether a head misses that by design or by chance, so this script fits, on each seeded
program (newest cohorts held out, as the training job does):

- the logistic baseline (``LinearBaseline``);
- the engagement head as ``fit_partner_model`` fits it (default parameters, monotone
  constraints, calibration map chosen by cross-validated log loss, refit on all training
  cohorts), its raw booster margin (does the map cost ranking?), and the same head without
  the refit;
- with ``--trials N`` also the head with the training job's Optuna search for it;
- with ``--variants`` a few fixed regularisations (more min child samples, stronger L2).

and prints per program the holdout ROC AUC, GBM minus linear with its paired bootstrap s.e.
(the goal's reading), and over programs the mean difference with its s.e. and the number of
programs where the head wins by more than its s.e. Asserts nothing. Programs are cached under
``--cache`` in ``bench_holdout_bias.py``'s format.

    .venv/bin/python bench/bench_engagement_margin.py --partners 5000 --seeds 7-22 \\
        [--trials 10] [--variants] [--cache /tmp/programs]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from bench_holdout_bias import load_program, probe_model, seeds_arg  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from partnerscore.features.registry import feature_specs  # noqa: E402
from partnerscore.models.baselines import LinearBaseline  # noqa: E402
from partnerscore.models.heads import EngagementClassifier  # noqa: E402
from partnerscore.training.config import TrainConfig  # noqa: E402
from partnerscore.training.metrics import engagement_auc_metric, paired_bootstrap  # noqa: E402
from partnerscore.training.splits import holdout_split, newest_partners_mask, time_folds  # noqa: E402
from partnerscore.training.train import _head_kwargs, monotone_constraints  # noqa: E402
from partnerscore.training.tune import tune_head  # noqa: E402


def one_program(args, seed: int) -> dict[str, float]:
    frame, truth = load_program(args.partners, seed, args.cache)
    train_mask, hold_mask = holdout_split(frame, 0.2)
    train = frame[train_mask].reset_index(drop=True)
    hold = frame[hold_mask].reset_index(drop=True)
    specs = [s for s in feature_specs() if s.name in frame.columns]
    config = TrainConfig(trials=args.trials, seed=seed)
    probe = probe_model(train, specs)
    X, X_hold = probe.prepare(train), probe.prepare(hold)
    y = train["label_engaged"].to_numpy()
    linear = LinearBaseline(specs).fit(train, train["label_revenue"].to_numpy(), y)
    p_linear = linear.predict(hold)[1]
    calib = newest_partners_mask(train, config.calibration_share)
    base = {
        **_head_kwargs(config.engagement, seed),
        "monotone_constraints": monotone_constraints(specs),
    }
    heads = {"head": (base, True), "head, no refit": (base, False)}
    if args.trials:
        tuned, _ = tune_head(
            "engagement", X, y, time_folds(train, config.folds), base, args.trials, seed
        )
        heads["head, tuned"] = (tuned, True)
    if args.variants:
        heads["min child 120"] = ({**base, "min_child_samples": 120}, True)
        heads["L2 30"] = ({**base, "reg_lambda": 30.0}, True)
    out = {
        "linear": roc_auc_score(hold["label_engaged"], p_linear),
        "oracle": roc_auc_score(
            hold["label_engaged"], truth.loc[hold_mask, "true_engagement_prob"]
        ),
    }
    for name, (params, refit) in heads.items():
        head = EngagementClassifier(
            calibration=config.calibration,
            calibration_candidates=tuple(config.calibration_candidates),
            refit=refit,
            **params,
        ).fit(X[~calib], y[~calib], X[calib], y[calib])
        p = head.predict_proba(X_hold)[:, 1]
        out[name] = roc_auc_score(hold["label_engaged"], p)
        if name == "head":
            out["head margin"] = roc_auc_score(hold["label_engaged"], head.raw_score(X_hold))
            diff, se = paired_bootstrap(hold, engagement_auc_metric, p, p_linear, args.rounds, seed)
            out["head - linear"], out["paired s.e."] = diff, se
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, default=5_000)
    parser.add_argument("--seeds", type=seeds_arg, default=seeds_arg("7-22"))
    parser.add_argument("--trials", type=int, default=0, help="also the tuned head (N trials)")
    parser.add_argument("--variants", action="store_true")
    parser.add_argument("--rounds", type=int, default=200, help="bootstrap resamples")
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    print(f"{args.partners:,} partners, seeds {args.seeds[0]}..{args.seeds[-1]}, newest held out")
    results = {}
    for seed in args.seeds:
        started = time.process_time()
        results[seed] = one_program(args, seed)
        cpu = time.process_time() - started
        line = " ".join(f"{k}={v:.4f}" for k, v in results[seed].items())
        print(f"seed {seed} ({cpu:.0f} s CPU): {line}", flush=True)
    table = pd.DataFrame(results).T
    aucs = table.drop(columns=["head - linear", "paired s.e."])
    diff = aucs.sub(aucs["linear"], axis=0).drop(columns=["linear"])
    n = len(table)
    print(f"\nROC AUC minus the linear baseline's over {n} programs")
    print(f"{'':<16}{'mean':>9}{'s.e.':>9}{'above 0':>9}")
    for col in diff.columns:
        x = diff[col]
        print(f"{col:<16}{x.mean():>+9.4f}{x.std() / np.sqrt(n):>9.4f}{f'{(x > 0).sum()}/{n}':>9}")
    wins = (table["head - linear"] > table["paired s.e."]).sum()
    print(
        f"\nthe goal's reading (head - linear > its paired bootstrap s.e. on the program's "
        f"holdout): {wins} of {n} programs; mean paired s.e. {table['paired s.e.'].mean():.4f}, "
        f"mean head / oracle {(aucs['head'] / aucs['oracle']).mean():.3f}"
    )


if __name__ == "__main__":
    main()
