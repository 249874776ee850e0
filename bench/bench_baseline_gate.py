"""Benchmark: how often the promotion gate's baseline rule refuses a model, over many programs.

``promote`` reads, per head, the training run's GBM minus the best baseline on its own holdout
with its paired partner-bootstrap s.e. (``compare_revenue_gini_*``,
``compare_engagement_auc_*``). This script trains each seeded program exactly as
``partnerscore train`` does (``train_and_evaluate``: the job's defaults, ``--trials`` per head)
and prints per program both differences in s.e. units, then how many programs each rule would
refuse at a few thresholds:

- ``not_worse`` (the default): refused when a head is worse than its best baseline beyond
  the noise, ``diff < -z * s.e.``;
- ``better``: refused unless both heads beat their best baseline by more than the noise,
  ``diff <= z * s.e.``.

It also prints the holdout's partners and the oracle's metrics, with the oracle ratios the run
logged (left out where the oracle's metric is within its noise of chance or the holdout holds
too few partners: ``training/metrics.py::oracle_ratios``). ``--ratio-noise`` instead draws
random subsets of 25-400 of the first seed's holdout partners and prints the spread of the
oracle ratios on them (how small a holdout still gives a readable ratio). Asserts nothing.

    .venv/bin/python bench/bench_baseline_gate.py --partners 2000 --seeds 7-12 [--trials 5]
    .venv/bin/python bench/bench_baseline_gate.py --partners 5000 --seeds 7 --ratio-noise
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from bench_holdout_bias import seeds_arg  # noqa: E402
from bench_models import program  # noqa: E402

from partnerscore.training.config import TrainConfig  # noqa: E402
from partnerscore.training.metrics import evaluate, oracle_ratios  # noqa: E402
from partnerscore.training.registry import baseline_checks  # noqa: E402
from partnerscore.training.train import train_and_evaluate  # noqa: E402

HEADS = (("revenue_gini", "rev gini"), ("engagement_auc", "eng AUC"))
ZS = (1.0, 1.645, 2.0, 3.0)


def one_program(partners: int, seed: int, trials: int) -> dict[str, float]:
    frame, truth, _ = program(partners, seed)
    started = time.perf_counter()
    ev = train_and_evaluate(frame, {}, truth, TrainConfig(trials=trials))
    out = {"seconds": time.perf_counter() - started}
    out["partners"] = float(ev.holdout["partner_id"].nunique())
    # what promote reads from the training run: its holdout metrics and the comparison
    out["run_metrics"] = {f"holdout_{k}": v for k, v in ev.metrics.items()} | ev.comparison
    for key, _ in HEADS:
        out[f"{key}_diff"] = ev.comparison.get(f"compare_{key}_diff", float("nan"))
        out[f"{key}_se"] = ev.comparison.get(f"compare_{key}_diff_se", float("nan"))
    for key in ("revenue_normalized_gini", "engagement_roc_auc"):
        out[key] = ev.metrics[key]
        out[f"oracle_{key}"] = ev.metrics.get(f"oracle_{key}", float("nan"))
        out[f"ratio_{key}"] = ev.metrics.get(f"oracle_ratio_{key}", float("nan"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, default=2000)
    parser.add_argument("--seeds", type=seeds_arg, default=seeds_arg("7-12"))
    parser.add_argument("--trials", type=int, default=TrainConfig().trials)
    parser.add_argument(
        "--ratio-noise",
        action="store_true",
        help="only the oracle ratios' spread on subsets of the first seed's holdout",
    )
    args = parser.parse_args()
    if args.ratio_noise:
        ratio_noise(args.partners, args.seeds[0], args.trials)
        return
    print(f"{args.partners:,} partners, seeds {args.seeds}, {args.trials} trials per head")
    print(
        f"{'seed':>5}{'holdout':>8}"
        + "".join(f"{label + ' diff (s.e.)':>24}{'z':>7}" for _, label in HEADS)
        + f"{'gini/or':>9}{'AUC/or':>8}{'or gini':>9}{'or AUC':>8}{'s':>5}"
    )
    rows = []
    for seed in args.seeds:
        r = one_program(args.partners, seed, args.trials)
        rows.append(r)
        line = f"{seed:>5}{r['partners']:>8.0f}"
        for key, _ in HEADS:
            diff, se = r[f"{key}_diff"], r[f"{key}_se"]
            line += f"{f'{diff:+.4f} ({se:.4f})':>24}{diff / se:>+7.2f}"
        line += (
            f"{r['ratio_revenue_normalized_gini']:>9.3f}{r['ratio_engagement_roc_auc']:>8.3f}"
            f"{r['oracle_revenue_normalized_gini']:>9.3f}{r['oracle_engagement_roc_auc']:>8.3f}"
            f"{r['seconds']:>5.0f}"
        )
        print(line, flush=True)
    print(f"programs refused of {len(rows)} (either head, promote's own rule: baseline_checks):")
    for z in ZS:
        worse, not_better = (
            sum(any(c.blocks for c in baseline_checks(r["run_metrics"], z, rule)) for r in rows)
            for rule in ("not_worse", "better")
        )
        print(
            f"  z {z:<6} not_worse (refused if diff < -z s.e.) {worse:>3}   "
            f"better (refused unless diff > z s.e.) {not_better:>3}"
        )


def ratio_noise(partners: int, seed: int, trials: int, draws: int = 200) -> None:
    """Spread of the oracle ratios on random subsets of one program's holdout partners."""
    frame, truth, _ = program(partners, seed)
    ev = train_and_evaluate(frame, {}, truth, TrainConfig(trials=trials))
    hold = ev.holdout.reset_index(drop=True)
    preds = ev.preds.reset_index(drop=True)
    ids = hold["partner_id"].unique()
    rng = np.random.default_rng(seed)
    print(
        f"oracle ratios on {draws} random subsets of the {len(ids):,} holdout partners "
        f"({partners:,}-partner program, seed {seed}; full holdout: gini/or "
        f"{ev.metrics.get('oracle_ratio_revenue_normalized_gini', float('nan')):.3f}, AUC/or "
        f"{ev.metrics.get('oracle_ratio_engagement_roc_auc', float('nan')):.3f})"
    )
    print(
        f"{'partners':>9}{'gini/or sd':>12}{'1%':>8}{'99%':>8}{'AUC/or sd':>11}{'1%':>8}"
        f"{'99%':>8}{'oracle gini 1%':>16}"
    )
    for n in (25, 50, 100, 200, 400):
        if n > len(ids):
            break
        gini, auc, oracle = [], [], []
        for _ in range(draws):
            rows = hold["partner_id"].isin(rng.choice(ids, n, replace=False)).to_numpy()
            sub = hold[rows].reset_index(drop=True)
            m = evaluate(sub, preds["pred_revenue"][rows], preds["pred_engagement"][rows])
            o = oracle_ratios(m, sub, truth, min_partners=1)
            gini.append(o.get("oracle_ratio_revenue_normalized_gini", np.nan))
            auc.append(o.get("oracle_ratio_engagement_roc_auc", np.nan))
            oracle.append(o["oracle_revenue_normalized_gini"])
        g, a = np.array(gini), np.array(auc)
        print(
            f"{n:>9}{np.nanstd(g):>12.3f}{np.nanpercentile(g, 1):>8.2f}"
            f"{np.nanpercentile(g, 99):>8.2f}{np.nanstd(a):>11.3f}{np.nanpercentile(a, 1):>8.2f}"
            f"{np.nanpercentile(a, 99):>8.2f}{np.percentile(oracle, 1):>16.3f}"
        )


if __name__ == "__main__":
    main()
