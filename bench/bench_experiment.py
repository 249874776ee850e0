"""Calibration study of the experiment analysis on simulated programs with a known effect.

For every replication: a seeded synthetic program, a stratified randomisation, the effect
injected by ``features.experiment_sim`` (whose potential outcomes give the true effect), and
the analysis's own outcome reader and estimators (``serving.experiment``). Prints, per outcome and
method, how often the 95% interval covers the true effect, the mean interval width, and how
often a null effect is declared significant; then the sample-ratio check's false-alarm rate and
its detection rate when a share of one arm is lost.

    .venv/bin/python bench/bench_experiment.py [--programs 40] [--per-program 10] [--partners 1000]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import pandas as pd

from partnerscore.features.config import BuildConfig, SimulateConfig
from partnerscore.features.experiment_sim import (
    inject_effect,
    simulated_assignment,
    simulated_start,
)
from partnerscore.features.simulate import simulate_program
from partnerscore.serving.experiment import estimate_effects, experiment_outcomes
from partnerscore.training.experiments import sample_ratio_mismatch

HORIZON = 180


def replicate(tables, cfg, rep: int, effect_revenue: float, effect_engagement: float, n_boot):
    start = pd.Timestamp(simulated_start(cfg))
    end = pd.Timestamp(cfg.end_date) + pd.Timedelta(days=1)
    assignment = simulated_assignment(tables["partners"], "calibration", start, 0.5, seed=rep)
    injected = inject_effect(
        tables, assignment, effect_revenue, effect_engagement, HORIZON, seed=rep, data_end=end
    )
    outcomes = experiment_outcomes(injected.tables, assignment, HORIZON, (HORIZON,), BuildConfig())
    effects = estimate_effects(
        outcomes,
        "control",
        ["pre_revenue", "pre_engaged"],
        HORIZON,
        (HORIZON,),
        n_boot=n_boot,
        seed=rep,
    )
    truth = injected.summary["true_effect"]
    return [e for e in effects if e["stratum"] == "all"], truth, assignment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=40)
    parser.add_argument("--per-program", type=int, default=10)
    parser.add_argument("--partners", type=int, default=1000)
    parser.add_argument("--effect-revenue", type=float, default=0.3)
    parser.add_argument("--effect-engagement", type=float, default=0.3)
    parser.add_argument("--bootstrap", type=int, default=999)
    args = parser.parse_args()

    started = time.perf_counter()
    cover = defaultdict(list)
    width = defaultdict(list)
    null_sig = defaultdict(list)
    losses = (0.1, 0.2, 0.3)
    srm_false, srm_detect = [], defaultdict(list)
    rng = np.random.default_rng(0)
    for program in range(args.programs):
        cfg = SimulateConfig(partners=args.partners, seed=10_000 + program)
        tables = {k: v for k, v in simulate_program(cfg).items() if k != "truth"}
        for k in range(args.per_program):
            rep = program * args.per_program + k
            rows, truth, assignment = replicate(
                tables, cfg, rep, args.effect_revenue, args.effect_engagement, args.bootstrap
            )
            for e in rows:
                key = (e["outcome"], e["method"])
                cover[key].append(e["ci_low"] <= truth[e["outcome"]] <= e["ci_high"])
                width[key].append(e["ci_high"] - e["ci_low"])
            null_rows, _, _ = replicate(tables, cfg, rep, 0.0, 0.0, args.bootstrap)
            for e in null_rows:
                null_sig[(e["outcome"], e["method"])].append(bool(e["significant"]))
            counts = assignment["arm"].value_counts().to_dict()
            shares = {"control": 0.5, "treatment": 0.5}
            srm_false.append(sample_ratio_mismatch(counts, shares).mismatch)
            # lose a share of the treated partners (e.g. a broken join) and check again
            for loss in losses:
                lost = dict(counts)
                lost["treatment"] = int(rng.binomial(counts["treatment"], 1 - loss))
                srm_detect[loss].append(sample_ratio_mismatch(lost, shares).mismatch)
    reps = args.programs * args.per_program
    print(
        f"{reps} replications ({args.programs} programs x {args.per_program} randomisations, "
        f"{args.partners} partners each, horizon {HORIZON} days) in "
        f"{time.perf_counter() - started:.0f} s"
    )
    print(
        f"effect: revenue x{1 + args.effect_revenue:g} after assignment, "
        f"+{args.effect_engagement:g} meetings / 30 days"
    )
    print(f"{'outcome':<8} {'method':<10} {'coverage':>9} {'mean width':>14} {'null signif.':>13}")
    for key in sorted(cover):
        outcome, method = key
        w = np.mean(width[key])
        w_text = f"${w:,.0f}" if outcome == "revenue" else f"{w * 100:.1f} pts"
        print(
            f"{outcome:<8} {method:<10} {np.mean(cover[key]):>9.3f} {w_text:>14} "
            f"{np.mean(null_sig[key]):>13.3f}"
        )
    se = np.sqrt(0.95 * 0.05 / reps)
    print(f"(binomial sd of a coverage of 0.95 over {reps} replications: {se:.3f})")
    detect = ", ".join(f"{loss:.0%} lost: {np.mean(v):.3f}" for loss, v in srm_detect.items())
    print(
        f"sample-ratio check (p < 0.001): false alarms {np.mean(srm_false):.3f}; "
        f"detection when treated partners are lost: {detect}"
    )


if __name__ == "__main__":
    main()
