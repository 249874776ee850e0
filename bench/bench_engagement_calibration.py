"""Benchmark: is ``pred_engagement`` calibrated per onboarding age and partner segment?

The engagement head's map is chosen and fitted on one pooled slice (the newest training
cohorts); one program's holdout cannot tell a per-segment tilt from noise. This script fits,
on each seeded program (newest cohorts held out, as the training job does), the engagement
head exactly as ``fit_partner_model`` fits it (``training.train.fit_engagement_head``: default
parameters, monotone constraints, map chosen by cross-validated log loss on the newest
training cohorts, refit) and prints on the holdout, per onboarding age, tier, region, industry and partner type:

- mean predicted minus realised engagement rate (``pred - label``) and minus the simulator's
  truth (``pred - truth``, ``true_engagement_prob``: no label noise), as the mean over programs
  with its s.e. and the same on all programs' rows pooled;
- ECE (10 equal-width bins) against the labels and against the truth (per bin
  ``|mean truth - mean pred|``), log loss and ROC AUC, overall and per age;
- the age mix of the rows the map is fitted on and of the holdout.

``--trials N`` first tunes the head's parameters as the training job does (Optuna on
expanding time folds of the training cohorts; one search per program, shared by the variants).
``--tune-as-head`` adds a variant tuned on its own search whose folds are scored as the head
is fitted (segment offsets, map chosen on each fold's newest training partners) rather than
with the training job's Platt map on the fold's training margins. ``--variants JSON`` adds ``TrainConfig`` overrides to compare on the same programs, e.g.
``'{"no refit": {"engagement_refit": false}}'``; each variant's summary is printed with its
paired difference to the default, variant minus default (mean over programs and s.e.; for
``pred-label`` and ``pred-truth`` the change in their absolute value, ``|.|``: negative means
the variant is closer to 0). Asserts nothing. Programs are
cached under ``--cache`` in ``bench_holdout_bias.py``'s format.

    .venv/bin/python bench/bench_engagement_calibration.py --partners 5000 --seeds 7-22 \\
        [--trials N] [--variants JSON] [--cache /tmp/programs]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from bench_holdout_bias import load_program, probe_model, seeds_arg  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from partnerscore.features.registry import feature_specs  # noqa: E402
from partnerscore.training.config import TrainConfig  # noqa: E402
from partnerscore.training.metrics import expected_calibration_error  # noqa: E402
from partnerscore.training.splits import (  # noqa: E402
    holdout_split,
    newest_partners_mask,
    time_folds,
)
from partnerscore.training.train import (  # noqa: E402
    _head_kwargs,
    fit_engagement_head,
    monotone_constraints,
)
from partnerscore.training.tune import tune_head  # noqa: E402

AGES = (30, 60, 90, 180)
# the searched parameters that identify the chosen trial (n_estimators is learnt per search)
TUNED = ("learning_rate", "num_leaves", "max_depth", "min_child_samples", "reg_lambda")
SEGMENTS = ("tier", "region", "industry", "partner_type")
EPS = 1e-4


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean log loss of probabilities ``p`` against labels (or true probabilities) ``y``."""
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def segment_masks(hold: pd.DataFrame) -> dict[str, np.ndarray]:
    """Row masks: all, each onboarding age, each value of the ``SEGMENTS`` columns."""
    out = {"all": np.ones(len(hold), bool)}
    age = hold["age_days"].to_numpy(float)
    out.update({f"age {a}": age == a for a in AGES})
    for col in SEGMENTS:
        values = hold[col].astype(str).to_numpy()
        out.update({f"{col} {v}": values == v for v in sorted(set(values))})
    return out


def fold_calib_masks(train: pd.DataFrame, folds: list, share: float) -> list[np.ndarray]:
    """Per time fold, the newest ``share`` of its training partners (where its map is fitted)."""
    out = []
    for tr, _ in folds:
        mask = np.zeros(len(train), bool)
        mask[np.flatnonzero(tr)[newest_partners_mask(train[tr], share)]] = True
        out.append(mask)
    return out


def fit_head(
    train: pd.DataFrame, specs: list, config: TrainConfig, tuned=None, as_head: bool = False
) -> tuple:
    """(engagement head as ``fit_partner_model`` fits it, the probe model that prepares X).

    ``tuned``: a dict filled with the tuned parameters on the first call (``config.trials``
    > 0: the training job's Optuna search, :func:`tune_head`), reused by later calls.
    ``as_head``: the search scores its folds as the head is fitted (segment offsets, map
    chosen on the newest ``calibration_share`` of each fold's training partners) instead of
    the training job's Platt map on the fold's training margins.
    """
    probe = probe_model(train, specs)
    X = probe.prepare(train)
    params = _head_kwargs(config.engagement, config.seed)
    if config.monotone:
        params = {"monotone_constraints": monotone_constraints(specs), **params}
    if config.trials and tuned is not None:
        if not tuned:
            y = train["label_engaged"].to_numpy()
            folds = time_folds(train, config.folds)
            fold_head, calibs = None, None
            if as_head:
                fold_head = {
                    "calibration": config.calibration,
                    "calibration_candidates": tuple(config.calibration_candidates),
                    "segment_columns": tuple(config.engagement_segment_columns),
                }
                calibs = fold_calib_masks(train, folds, config.calibration_share)
            tuned.update(
                tune_head(
                    "engagement",
                    X,
                    y,
                    folds,
                    params,
                    config.trials,
                    config.seed,
                    engagement_head=fold_head,
                    calib_masks=calibs,
                )[0]
            )
        params = dict(tuned)
    return fit_engagement_head(train, X, config, params), probe


def one_program(args, seed: int) -> dict[str, dict]:
    """Per variant: per-program figures and the holdout rows (for the pooled figures)."""
    frame, truth = load_program(args.partners, seed, args.cache)
    train_mask, hold_mask = holdout_split(frame, 0.2)
    train = frame[train_mask].reset_index(drop=True)
    hold = frame[hold_mask].reset_index(drop=True)
    t = truth.loc[hold_mask, "true_engagement_prob"].to_numpy(float)
    y = hold["label_engaged"].to_numpy(float)
    specs = [s for s in feature_specs() if s.name in frame.columns]
    masks = segment_masks(hold)
    calib = newest_partners_mask(train, TrainConfig().calibration_share)
    mix = {f"calib rows @{a}": float((train.loc[calib, "age_days"] == a).mean()) for a in AGES} | {
        f"holdout rows @{a}": float((hold["age_days"] == a).mean()) for a in AGES
    }
    out = {}
    tuned: dict = {}  # one search per program, shared by the variants
    variants = {"default": {}, **args.variants}
    if args.tune_as_head:
        variants["folds as head"] = {}
    for name, overrides in variants.items():
        config = TrainConfig(trials=args.trials, seed=seed, **overrides)
        as_head = name == "folds as head"
        head, probe = fit_head(train, specs, config, {} if as_head else tuned, as_head)
        p = head.predict_proba(probe.prepare(hold))[:, 1]
        figures = {"map": head.calibration_method_, "trees": head.n_estimators, **mix}
        figures["params"] = json.dumps(
            {k: head.get_params()[k] for k in TUNED if k in head.get_params()}, sort_keys=True
        )
        for seg, m in masks.items():
            if not m.any():
                continue
            figures[f"{seg}: pred-label"] = p[m].mean() - y[m].mean()
            figures[f"{seg}: pred-truth"] = p[m].mean() - t[m].mean()
            figures[f"{seg}: rows"] = int(m.sum())
        for seg in ("all", *(f"age {a}" for a in AGES)):
            m = masks[seg]
            if m.sum() < 2:
                continue
            figures[f"{seg}: ECE label"] = expected_calibration_error(y[m], p[m])
            figures[f"{seg}: ECE truth"] = expected_calibration_error(t[m], p[m])  # vs truth
            figures[f"{seg}: log loss"] = log_loss(y[m], p[m])
            figures[f"{seg}: log loss vs truth"] = log_loss(t[m], p[m])
            if len(np.unique(y[m])) == 2:
                figures[f"{seg}: AUC"] = roc_auc_score(y[m], p[m])
        rows = pd.DataFrame({"p": p, "y": y, "t": t, "seed": seed})
        for seg, m in masks.items():
            rows[seg] = m
        out[name] = {"figures": figures, "rows": rows}
    return out


def mean_se(x: pd.Series) -> tuple[float, float, int]:
    x = x.dropna()
    se = x.std() / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return float(x.mean()), float(se), len(x)


def report(name: str, table: pd.DataFrame, rows: pd.DataFrame) -> None:
    """Print one variant's per-segment calibration and its summary metrics."""
    n = len(table)
    maps = table["map"].value_counts().to_dict()
    trees = table["trees"].mean()
    print(f"\n=== {name}: {n} programs, maps chosen {maps}, {trees:.0f} trees (mean) ===")
    segs = [c[: -len(": pred-label")] for c in table.columns if c.endswith(": pred-label")]
    print(
        f"{'segment':<30}{'rows/prog':>10}{'pred-label':>12}{'s.e.':>7}{'pooled':>8}"
        f"{'pred-truth':>12}{'s.e.':>7}{'pooled':>8}"
    )
    for seg in segs:
        m = rows[seg].to_numpy()
        sub = rows[m]
        dl, sl, _ = mean_se(table[f"{seg}: pred-label"])
        dt, st, _ = mean_se(table[f"{seg}: pred-truth"])
        pooled_l = sub["p"].mean() - sub["y"].mean()
        pooled_t = sub["p"].mean() - sub["t"].mean()
        per = table[f"{seg}: rows"].mean()
        print(
            f"{seg:<30}{per:>10.0f}{100 * dl:>+12.2f}{100 * sl:>7.2f}{100 * pooled_l:>+8.2f}"
            f"{100 * dt:>+12.2f}{100 * st:>7.2f}{100 * pooled_t:>+8.2f}"
        )
    print("(probability points; s.e. over programs; pooled: all programs' holdout rows)")
    print(
        f"{'':<10}{'ECE label':>16}{'ECE truth':>16}{'log loss':>18}{'LL vs truth':>18}{'AUC':>16}"
    )
    for seg in ("all", *(f"age {a}" for a in AGES)):
        cells = []
        for metric, scale, fmt in (
            ("ECE label", 100, ".2f"),
            ("ECE truth", 100, ".2f"),
            ("log loss", 1, ".4f"),
            ("log loss vs truth", 1, ".4f"),
            ("AUC", 1, ".4f"),
        ):
            col = f"{seg}: {metric}"
            if col not in table:
                cells.append(f"{'-':>16}")
                continue
            m, s, _ = mean_se(table[col])
            width = 18 if metric.startswith(("log", "LL")) else 16
            cells.append(f"{f'{scale * m:{fmt}} ({scale * s:{fmt}})':>{width}}")
        print(f"{seg:<10}" + "".join(cells))
    print("(ECE in points; mean over programs (s.e.))")


def paired(name: str, table: pd.DataFrame, base: pd.DataFrame) -> None:
    """Per-program differences variant - default of the summary metrics."""
    print(f"\n--- {name} minus default, paired over programs: mean (s.e.) ---")
    cols = [
        c
        for c in table.columns
        if c not in ("map", "trees", "params")
        and not c.endswith(": rows")
        and not c.startswith(("calib", "holdout"))
    ]
    same = (table["params"] == base["params"]).sum()
    trees = (table["trees"] - base["trees"]).astype(float)
    print(
        f"same tuned parameters (trial) as default: {same} of {len(table)} programs; trees "
        f"{base['trees'].mean():.0f} -> {table['trees'].mean():.0f}, paired change "
        f"{trees.mean():+.1f} ({mean_se(trees)[1]:.1f})"
    )
    for col in cols:
        if not col.startswith(("all", "age")) and not col.endswith("pred-truth"):
            continue
        d = (table[col] - base[col]).astype(float)
        if col.endswith(("pred-label", "pred-truth")):
            d = (table[col].abs() - base[col].abs()).astype(float)
            col = f"{col} |.|"
        m, s, _ = mean_se(d)
        scale = 100 if "ECE" in col or "pred-" in col else 1
        print(f"{col:<34}{scale * m:>+10.4f}{scale * s:>9.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, default=5_000)
    parser.add_argument("--seeds", type=seeds_arg, default=seeds_arg("7-22"))
    parser.add_argument("--variants", type=json.loads, default={})
    parser.add_argument(
        "--trials", type=int, default=0, help="tune the head first (N Optuna trials, as train)"
    )
    parser.add_argument(
        "--tune-as-head",
        action="store_true",
        help="with --trials: add a variant whose search scores its folds as the head is fitted",
    )
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    print(f"{args.partners:,} partners, seeds {args.seeds[0]}..{args.seeds[-1]}, newest held out")
    figures: dict[str, list] = {}
    rows: dict[str, list] = {}
    for seed in args.seeds:
        started = time.process_time()
        result = one_program(args, seed)
        for name, r in result.items():
            figures.setdefault(name, []).append(r["figures"])
            rows.setdefault(name, []).append(r["rows"])
        f = result["default"]["figures"]
        print(
            f"seed {seed} ({time.process_time() - started:.0f} s CPU): map {f['map']}, "
            f"pred-label {100 * f['all: pred-label']:+.2f} pts, "
            + ", ".join(
                f"@{a} {100 * f[f'age {a}: pred-label']:+.2f}"
                for a in AGES
                if f"age {a}: pred-label" in f
            ),
            flush=True,
        )
    base = pd.DataFrame(figures["default"])
    mix = base[[c for c in base.columns if c.startswith(("calib", "holdout"))]].mean()
    print(
        "\nage mix (share of rows, mean over programs): "
        + ", ".join(f"{k} {v:.2f}" for k, v in mix.items())
    )
    for name in figures:
        table = pd.DataFrame(figures[name])
        report(name, table, pd.concat(rows[name], ignore_index=True))
        if name != "default":
            paired(name, table, base)


if __name__ == "__main__":
    main()
