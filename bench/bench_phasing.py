"""Benchmark: the revenue phasing (when a horizon's revenue arrives) on the newest-cohort holdout.

``forecast --phased`` spreads each partner's expected revenue over the calendar months with the
model's phase shares (per onboarding age) and bounds each part's standard deviation by
``pred_revenue_sd * sqrt(share)``. One holdout's phases are too noisy to judge the shares (a
phase of a few thousand partners moves by 15-50% between programs: heavy-tailed deals), so
this script fits the heads (trials 0, ``fit_partner_model``) on several seeded programs and
prints, per program, the share of tier / region phase cells (one onboarding age at a time)
whose realised revenue the 80% interval covers, for cells of >= 50 partners and smaller ones,
next to the horizon's own cells; then, pooled over the programs, each (age, phase)'s expected
against realised revenue and the mean gap between expected and realised shares with its s.d.
across programs. Tier / region cells of a holdout are large except at day 180; a forecast's
are often a few partners (a month of one tier in one region), so the script also draws random
groups of 5, 10, 20 and 50 holdout partners of one age (30, 60, 90 days; up to 40 groups per
size, age and program) and prints how often the 80% interval of their horizon total and of
their third month covers the realised sum, with the compound Poisson-gamma shape (default) and
with the lognormal used before, and how often the realised sum is exactly 0.

Asserts nothing. Programs are cached under ``--cache`` (default: none); a cache written before
the phase labels existed is refused (use another folder).

    .venv/bin/python bench/bench_phasing.py --partners 20000 --seeds 200-205 [--cache DIR]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from bench_holdout_bias import load_program, seeds_arg  # noqa: E402

from partnerscore.features.registry import feature_specs  # noqa: E402
from partnerscore.models.config import PolicyConfig  # noqa: E402
from partnerscore.models.intervals import portfolio_interval, segment_coverage  # noqa: E402
from partnerscore.training.config import TrainConfig  # noqa: E402
from partnerscore.training.splits import holdout_split  # noqa: E402
from partnerscore.training.train import (  # noqa: E402
    fit_partner_model,
    phase_columns,
    phase_coverage,
)

MIN_CELL = 50
GROUP_SIZES = (5, 10, 20, 50)


def group_coverage(
    hold: pd.DataFrame, pred, sd, shares, seed: int, level: float = 0.0
) -> pd.DataFrame:
    """Random groups of one age's holdout partners: their sums inside the 80% interval?"""
    rng = np.random.default_rng(seed)
    ages = hold["age_days"].to_numpy(float)
    out = []
    for age in (30.0, 60.0, 90.0):
        rows = np.flatnonzero(ages == age)
        for size in GROUP_SIZES:
            groups = rng.permutation(rows)[: len(rows) // size * size].reshape(-1, size)[:40]
            for target, y, mu, s in (
                ("horizon", hold["label_revenue"].to_numpy(float), pred, sd),
                (
                    "phase 3",
                    hold["label_revenue_phase_3"].to_numpy(float),
                    pred * shares[:, 2],
                    sd * np.sqrt(shares[:, 2]),
                ),
            ):
                for g in groups:
                    actual = y[g].sum()
                    rec = {"target": target, "size": size, "zero": actual == 0}
                    for name, power in (("poisson-gamma", 1.8), ("lognormal", None)):
                        _, lo, hi = portfolio_interval(
                            mu[g], s[g], 0.8, power=power, level_cv=level
                        )
                        rec[name] = lo <= actual <= hi
                    out.append(rec)
    return pd.DataFrame(out)


def one_program(
    partners: int, seed: int, cache: Path | None
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    frame, _ = load_program(partners, seed, cache)
    if not phase_columns(frame):
        raise SystemExit(f"{cache}: program {partners}/{seed} has no phase labels (old cache)")
    _, held = holdout_split(frame, 0.2)
    config = TrainConfig(trials=0, seed=seed, refit=False)
    specs = [s for s in feature_specs() if s.name in frame.columns]
    revenue = {
        **config.revenue.model_dump(),
        "tweedie_variance_power": config.tweedie_variance_power,
        "random_state": seed,
    }
    engagement = {**config.engagement.model_dump(), "random_state": seed, "n_estimators": 20}
    train, hold = frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)
    model = fit_partner_model(
        train, specs, config, PolicyConfig(), revenue, engagement, phases=(30, 180)
    )
    pred = model.revenue.predict(model.prepare(hold))
    sd = model.intervals.sd(pred)
    level = model.intervals.level
    report = phase_coverage(hold, pred, sd, model.phasing, config.interval_coverage, level)
    cells = report[report["segment"] != "all"]
    horizon = []
    data = hold.assign(_mu=pred, _sd=sd)
    for _, part in data.groupby("age_days"):
        for seg in ("tier", "region"):
            horizon.append(
                segment_coverage(
                    part, "label_revenue", "_mu", "_sd", seg, config.interval_coverage, level
                )
            )
    horizon = pd.concat(horizon)
    big = cells["rows"] >= MIN_CELL
    line = {
        "seed": seed,
        "phase cells >= 50": f"{cells.loc[big, 'covered'].mean():.1%} of {big.sum()}",
        "phase cells < 50": f"{cells.loc[~big, 'covered'].mean():.1%} of {(~big).sum()}",
        "horizon cells >= 50": f"{horizon.loc[horizon['rows'] >= MIN_CELL, 'covered'].mean():.1%}",
        "horizon cells < 50": f"{horizon.loc[horizon['rows'] < MIN_CELL, 'covered'].mean():.1%}",
        "young shares": np.round(model.phasing.shares(np.array([30.0]))[0], 3).tolist(),
    }
    shares = model.phasing.shares(hold["age_days"].to_numpy(float), len(hold))
    groups = group_coverage(hold, pred, sd, shares, seed, level)
    both = [
        report.assign(seed=seed),
        horizon.assign(seed=seed, segment="horizon:" + horizon["segment"]),
    ]
    return line, pd.concat(both), groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, default=20_000)
    parser.add_argument("--seeds", type=seeds_arg, default=seeds_arg("200-205"))
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    reports, groups = [], []
    for seed in args.seeds:
        line, report, group = one_program(args.partners, seed, args.cache)
        print(line, flush=True)
        reports.append(report)
        groups.append(group)
    every = pd.concat(reports, ignore_index=True)
    is_horizon = every["segment"].str.startswith("horizon:")
    horizon, every = every[is_horizon], every[~is_horizon]
    cells = every[every["segment"] != "all"]
    big = cells["rows"] >= MIN_CELL
    print(
        f"\n{len(args.seeds)} programs of {args.partners:,}: tier/region phase cells covered "
        f"{cells.loc[big, 'covered'].mean():.1%} (>= {MIN_CELL} partners, {big.sum()} cells), "
        f"{cells.loc[~big, 'covered'].mean():.1%} (smaller, {(~big).sum()} cells); 80% nominal"
    )
    big = horizon["rows"] >= MIN_CELL
    print(
        f"the horizon's own tier/region cells: {horizon.loc[big, 'covered'].mean():.1%} "
        f"(>= {MIN_CELL}, {big.sum()} cells), {horizon.loc[~big, 'covered'].mean():.1%} "
        f"(smaller, {(~big).sum()} cells)"
    )
    whole = every[every["segment"] == "all"].assign(
        gap=lambda d: d["expected_share"] - d["realised_share"],
        bias=lambda d: d["expected"] / d["actual"] - 1,
    )
    pooled = whole.groupby(["age_days", "phase"]).agg(
        partners=("rows", "sum"),
        expected=("expected", "sum"),
        realised=("actual", "sum"),
        bias_sd_across_programs=("bias", "std"),
        share_gap_mean=("gap", "mean"),
        share_gap_sd=("gap", "std"),
    )
    pooled.insert(3, "pooled_bias", pooled["expected"] / pooled["realised"] - 1)
    print("\npooled over the programs, per onboarding age and phase of the horizon:")
    print(pooled.round(3).to_string())
    table = pd.concat(groups).groupby(["target", "size"])[["poisson-gamma", "lognormal", "zero"]]
    print("\nrandom groups of one age's holdout partners: 80% interval covers the realised sum")
    print(table.mean().round(3).assign(groups=table.size()).to_string())


if __name__ == "__main__":
    main()
