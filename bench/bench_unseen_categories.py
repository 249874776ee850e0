"""Benchmark: partners whose category the model never saw, by ``unknown_category_share``.

A category unseen at scoring is scored as missing. For each seeded program and each share in
``--shares`` this fits the model as the training job does (``fit_partner_model``, trials 0:
the default parameters with ``train.{revenue,engagement}.unknown_category_share`` set to the
share) on the older cohorts and, on the holdout (newest signing cohorts), prints

- what an unseen category does: with each categorical column's value replaced by one the
  model never saw on every holdout row, the change of the revenue total (``pred / pred - 1``)
  and of the mean engagement probability (points);
- what the share costs the partners whose categories are known: revenue normalized Gini
  against the labels and against the simulator's truth, tweedie deviance (power 1.3) and
  engagement ROC AUC;
- with ``--average``, the alternative not built: each row scored as the average over the
  column's known categories (weights: their shares of the training rows), the revenue total's
  change for the weighted mean of the predictions (``arith``) and of their logarithms
  (``geo``: the averaged margin, which would keep the drivers additive), and the mean
  engagement probability's change for the averaged probability.

Then the mean over the programs per share. Asserts nothing (README, "Categories the model
never saw").

    .venv/bin/python bench/bench_unseen_categories.py [--partners 3000] [--seeds 31-34]
        [--shares 0,0.1] [--average]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from bench_holdout_bias import seeds_arg  # noqa: E402
from bench_models import program  # noqa: E402
from sklearn.metrics import mean_tweedie_deviance, roc_auc_score  # noqa: E402

from partnerscore.features.registry import feature_specs  # noqa: E402
from partnerscore.models.config import HeadParams, PolicyConfig  # noqa: E402
from partnerscore.training.config import TrainConfig  # noqa: E402
from partnerscore.training.metrics import normalized_gini  # noqa: E402
from partnerscore.training.splits import holdout_split  # noqa: E402
from partnerscore.training.train import _head_kwargs, fit_partner_model  # noqa: E402

COLUMNS = ("tier", "region", "industry", "partner_type")
UNSEEN = "never-seen-in-training"


def measure(
    frame: pd.DataFrame, truth: pd.DataFrame, share: float, seed: int, average: bool = False
) -> dict:
    """One program and one share: the holdout's metrics and each column's unseen shift (and
    with ``average`` the shift of each row scored as the average of the known categories)."""
    specs = [s for s in feature_specs() if s.name in frame.columns]
    train_rows, hold_rows = holdout_split(frame, 0.2)
    head = HeadParams(unknown_category_share=share)
    config = TrainConfig(trials=0, seed=seed, revenue=head, engagement=head)
    model = fit_partner_model(
        frame[train_rows].reset_index(drop=True),
        specs,
        config,
        PolicyConfig(),
        _head_kwargs(config.revenue, seed),
        _head_kwargs(config.engagement, seed),
    )
    hold = frame[hold_rows].reset_index(drop=True)
    true = truth.loc[hold_rows, "true_expected_revenue"].to_numpy(float)
    scored = model.predict(hold)
    revenue = scored["pred_revenue"].to_numpy(float)
    engaged = scored["pred_engagement"].to_numpy(float)
    labels = hold["label_revenue"].to_numpy(float)
    out = {
        "gini": normalized_gini(labels, revenue),
        "gini_truth": normalized_gini(true, revenue),
        "deviance": mean_tweedie_deviance(labels, revenue, power=1.3),
        "auc": roc_auc_score(hold["label_engaged"].astype(int), engaged),
    }
    for column in COLUMNS:
        if column not in hold:
            continue
        unseen = model.predict(hold.assign(**{column: UNSEEN}))
        out[f"{column} revenue"] = unseen["pred_revenue"].sum() / revenue.sum() - 1
        out[f"{column} engagement"] = unseen["pred_engagement"].mean() - engaged.mean()
        if average:
            arith, logs, probability = 0.0, 0.0, 0.0
            weights = frame.loc[train_rows, column].value_counts(normalize=True)
            for value, weight in weights.items():
                known = model.predict(hold.assign(**{column: value}))
                arith = arith + weight * known["pred_revenue"].to_numpy(float)
                logs = logs + weight * np.log(known["pred_revenue"].to_numpy(float))
                probability = probability + weight * known["pred_engagement"].to_numpy(float)
            out[f"{column} arith revenue"] = arith.sum() / revenue.sum() - 1
            out[f"{column} geo revenue"] = np.exp(logs).sum() / revenue.sum() - 1
            out[f"{column} arith engagement"] = probability.mean() - engaged.mean()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, default=3000)
    parser.add_argument("--seeds", type=seeds_arg, default=seeds_arg("31-34"))
    parser.add_argument("--shares", default="0,0.1", help="comma-separated, e.g. 0,0.03,0.1")
    parser.add_argument("--average", action="store_true", help="also the known-category average")
    args = parser.parse_args()
    shares = [float(s) for s in args.shares.split(",")]
    rows = []
    for seed in args.seeds:
        frame, truth, _ = program(args.partners, seed)
        for share in shares:
            rows.append(
                {"seed": seed, "share": share, **measure(frame, truth, share, seed, args.average)}
            )
    table = pd.DataFrame(rows).astype({"share": str})
    shifts = [c for c in table.columns if c.endswith((" revenue", " engagement"))]
    pd.set_option("display.width", 200)
    print(f"programs of {args.partners:,} partners, holdout = newest 20% of signing dates")
    print("\nunseen category on every holdout row: revenue total change, engagement points")
    print(table[["seed", "share", *shifts]].to_string(index=False, float_format="{:+.3f}".format))
    print("\nholdout metrics (categories known)")
    metrics = ["seed", "share", "gini", "gini_truth", "deviance", "auc"]
    print(table[metrics].to_string(index=False, float_format="{:.4f}".format))
    means = table.drop(columns="seed").groupby("share").mean()
    print(f"\nmean over {len(args.seeds)} programs per share")
    print(means.T.to_string(float_format="{:+.4f}".format))
    spread = table.drop(columns=["seed", "share"]).abs().groupby(table["share"]).mean()
    for kind in ("unseen", "arith", "geo") if args.average else ("unseen",):
        names = [
            f"{c} revenue" if kind == "unseen" else f"{c} {kind} revenue"
            for c in COLUMNS
            if f"{c} revenue" in table
        ]
        print(
            f"mean |revenue shift| over the columns per share ({kind}): of the mean over the "
            "programs, and the mean of each program's"
        )
        for share in means.index:
            print(
                f"  {share}: {means.loc[share, names].abs().mean():.3f}, "
                f"{spread.loc[share, names].mean():.3f}"
            )


if __name__ == "__main__":
    main()
