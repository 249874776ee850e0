"""Inject a known causal effect into a simulated program, so experiment analysis can be checked.

Works on the simulator's output tables (``partners``, ``deals``, ``activities``); nothing in the
generative model itself changes. Given an assignment (partner -> arm, assigned_at), every partner
in the experiment gets two potential versions of its post-assignment data:

- *untreated*: the simulated data as it is;
- *treated*: every won deal closed at or after ``assigned_at`` is worth ``1 + effect_revenue``
  times as much, and extra ``meeting`` activities arrive after ``assigned_at`` as a Poisson
  process of ``effect_engagement`` touchpoints per 30 days until the data end.

The output tables keep the treated version for partners in a treatment arm and the untreated one
for the control arm. Because both versions exist for everyone, each partner's potential outcomes
``Y(0)`` and ``Y(1)`` over the horizon are computed with the label rules themselves
(:func:`partnerscore.features.pipeline.build_labels` at ``as_of = assigned_at``), and the true
effect is their mean difference over the partners in the experiment (the sample average
treatment effect, what a randomised comparison of means estimates). Extra meetings for a partner
are drawn once (seeded), whichever arm it lands in.

Files written next to the tables by :func:`run_inject_effect`:

- ``experiment_assignment.csv``: the assignment table (contract in
  :mod:`partnerscore.features.experiments`), ready for ``partnerscore experiment analyze``;
- ``experiment_truth.csv``: per partner ``experiment, partner_id, arm, treated, assigned_at,
  horizon_days, revenue_y0, revenue_y1, engaged_y0, engaged_y1``;
- ``experiment_truth.json``: the injected effect sizes and the true effects (``true_effect``:
  SATE per outcome, ``true_effect_on_treated``: ATT) with arm counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from partnerscore.features.config import BuildConfig
from partnerscore.features.core import (
    OptionError,
    PartnerscoreError,
    write_frame_atomic,
    write_text_atomic,
)
from partnerscore.features.experiments import NO_STRATUM, arm_shares, assign_arms

EXTRA_ACTIVITY = "meeting"
TRUTH_COLUMNS = (
    "experiment",
    "partner_id",
    "arm",
    "treated",
    "assigned_at",
    "horizon_days",
    "revenue_y0",
    "revenue_y1",
    "engaged_y0",
    "engaged_y1",
)


@dataclass
class InjectedExperiment:
    """Tables with the effect applied, and the truth to check an analysis against.

    Attributes:
        tables: The input tables with ``deals`` and ``activities`` replaced.
        assignment: The assignment table (declared columns).
        truth: Potential outcomes per partner (``TRUTH_COLUMNS``).
        summary: Effect sizes, true effects and arm counts (written as JSON).
    """

    tables: dict[str, pd.DataFrame]
    assignment: pd.DataFrame
    truth: pd.DataFrame
    summary: dict = field(default_factory=dict)


def simulated_start(config) -> date:
    """Default assignment date of a simulated experiment: a full horizon before the data end."""
    return config.end_date - pd.Timedelta(days=int(config.horizon_days)).to_pytimedelta()


def simulated_assignment(
    partners: pd.DataFrame,
    name: str,
    assigned_at: pd.Timestamp,
    treated_fraction: float,
    seed: int,
    arms: tuple[str, str] = ("control", "treatment"),
    stratify: str | None = "tier",
) -> pd.DataFrame:
    """Randomise every partner signed before ``assigned_at`` (stratified by ``stratify``).

    Returns:
        An assignment table (experiment, partner_id, arm, stratum, assigned_at, target_share,
        seed), sorted by partner_id.
    """
    assigned_at = pd.Timestamp(assigned_at)
    scope = partners[pd.to_datetime(partners["signed_at"]) < assigned_at]
    if scope.empty:
        raise PartnerscoreError(
            f"--assigned-at {assigned_at:%Y-%m-%d}: no partner signed before it to randomise"
        )
    scope = scope.sort_values("partner_id", kind="stable")
    ids = scope["partner_id"].astype(str).to_numpy()
    strata = (
        scope[stratify].astype(str).to_numpy()
        if stratify
        else np.full(len(ids), NO_STRATUM, dtype=object)
    )
    arm = assign_arms(ids, strata, arms, treated_fraction, seed, salt=name)
    shares = arm_shares(arms, treated_fraction)
    return pd.DataFrame(
        {
            "experiment": name,
            "partner_id": ids,
            "arm": arm,
            "stratum": strata,
            "assigned_at": assigned_at,
            "target_share": [shares[a] for a in arm],
            "seed": int(seed),
        }
    )


def _extra_meetings(
    assignment: pd.DataFrame, data_end: pd.Timestamp, rate_per_30d: float, seed: int
) -> pd.DataFrame:
    """Poisson extra meetings per partner in [assigned_at, data_end), drawn for every partner."""
    ids = assignment["partner_id"].astype(str).to_numpy()
    start = pd.to_datetime(assignment["assigned_at"]).to_numpy("datetime64[s]")
    end = np.datetime64(pd.Timestamp(data_end).to_datetime64(), "s")
    span = np.maximum((end - start).astype("int64"), 0).astype(float)  # seconds
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EED])
    counts = rng.poisson(rate_per_30d * span / (30 * 86400.0)) if rate_per_30d > 0 else 0
    counts = np.broadcast_to(np.asarray(counts), ids.shape)
    owner = np.repeat(np.arange(len(ids)), counts)
    offset = np.floor(rng.random(owner.size) * span[owner]).astype("int64")
    occurred = start[owner] + offset.astype("timedelta64[s]")
    return pd.DataFrame(
        {
            "activity_id": [f"AX{i:08d}" for i in range(owner.size)],
            "partner_id": pd.array(ids[owner], dtype="str"),
            "occurred_at": occurred.astype("datetime64[s]"),
            "activity_type": pd.array([EXTRA_ACTIVITY] * owner.size, dtype="str"),
            "response_hours": np.full(owner.size, np.nan),
        }
    )


def _treated_version(
    tables: dict[str, pd.DataFrame],
    assignment: pd.DataFrame,
    who: np.ndarray,
    effect_revenue: float,
    extra: pd.DataFrame,
) -> dict[str, pd.DataFrame]:
    """Copy of ``tables`` with the treatment applied to the partners in ``who`` (ids)."""
    out = dict(tables)
    assigned = dict(
        zip(
            assignment["partner_id"].astype(str),
            pd.to_datetime(assignment["assigned_at"]),
            strict=True,
        )
    )
    deals = tables["deals"].copy()
    pid = deals["partner_id"].astype(str)
    cut = pd.to_datetime(pid.map(assigned))
    closed = pd.to_datetime(deals["closed_at"])
    hit = (
        pid.isin(set(who)).to_numpy()
        & (deals["status"].astype(str) == "won").to_numpy()
        & (closed >= cut).fillna(False).to_numpy(dtype=bool)
    )
    amount = deals["amount"].to_numpy(dtype=float).copy()
    amount[hit] = np.round(amount[hit] * (1.0 + effect_revenue), 2)
    deals["amount"] = amount
    out["deals"] = deals
    add = extra[extra["partner_id"].astype(str).isin(set(who))]
    if "activities" in tables and len(add):
        base = tables["activities"]
        add = add.reindex(columns=base.columns).astype(base.dtypes.to_dict())
        acts = pd.concat([base, add], ignore_index=True)
        out["activities"] = acts.sort_values(
            ["partner_id", "occurred_at"], kind="stable"
        ).reset_index(drop=True)
    elif len(add):
        out["activities"] = add.reset_index(drop=True)
    return out


def inject_effect(
    tables: dict[str, pd.DataFrame],
    assignment: pd.DataFrame,
    effect_revenue: float,
    effect_engagement: float,
    horizon_days: int = 180,
    seed: int = 0,
    data_end: pd.Timestamp | None = None,
    build: BuildConfig | None = None,
) -> InjectedExperiment:
    """Apply a known effect to the treated partners and compute the true effect.

    Args:
        tables: Simulated tables (``partners`` and ``deals`` required; ``activities``,
            ``leads`` optional), typed as :func:`~partnerscore.features.simulate.simulate_program`
            returns them.
        assignment: Assignment table (experiment, partner_id, arm, assigned_at). The control
            arm is the arm named ``control`` if present, else the most common arm.
        effect_revenue: Relative uplift of won deal amounts closed after assignment (> -1).
        effect_engagement: Extra qualifying touchpoints (meetings) per 30 days after assignment
            (>= 0).
        horizon_days: Outcome horizon the truth is computed for.
        seed: Seed of the extra meetings.
        data_end: Exclusive end of the data (extra meetings stop there); default the day after
            the latest deal or activity date.
        build: Label rules (engagement periods and touchpoints); default ``BuildConfig()``.

    Returns:
        The tables with the effect applied, the assignment, the per-partner truth and a summary.
    """
    from partnerscore.features.pipeline import build_labels

    _check_effects(effect_revenue, effect_engagement)
    assignment = assignment.reset_index(drop=True)
    arms = assignment["arm"].astype(str)
    control = "control" if (arms == "control").any() else arms.value_counts().index[0]
    treated_mask = (arms != control).to_numpy()
    if data_end is None:
        dates = [pd.to_datetime(tables["deals"]["created_at"]).max()]
        if "activities" in tables:
            dates.append(pd.to_datetime(tables["activities"]["occurred_at"]).max())
        data_end = (max(dates) + pd.Timedelta(days=1)).normalize()
    extra = _extra_meetings(assignment, pd.Timestamp(data_end), effect_engagement, seed)
    ids = assignment["partner_id"].astype(str).to_numpy()
    everyone = _treated_version(tables, assignment, ids, effect_revenue, extra)
    observed = _treated_version(tables, assignment, ids[treated_mask], effect_revenue, extra)
    rules = (build or BuildConfig()).model_copy(update={"horizon_days": int(horizon_days)})
    snaps = pd.DataFrame(
        {"partner_id": ids, "as_of": pd.to_datetime(assignment["assigned_at"]).to_numpy()}
    )
    y0 = build_labels(tables, snaps, rules)
    y1 = build_labels(everyone, snaps, rules)
    truth = pd.DataFrame(
        {
            "experiment": assignment["experiment"].astype(str).to_numpy(),
            "partner_id": ids,
            "arm": arms.to_numpy(),
            "treated": treated_mask,
            "assigned_at": pd.to_datetime(assignment["assigned_at"]).to_numpy(),
            "horizon_days": int(horizon_days),
            "revenue_y0": y0["label_revenue"].to_numpy(),
            "revenue_y1": y1["label_revenue"].to_numpy(),
            "engaged_y0": y0["label_engaged"].to_numpy(),
            "engaged_y1": y1["label_engaged"].to_numpy(),
        }
    )
    d_rev = truth["revenue_y1"] - truth["revenue_y0"]
    d_eng = truth["engaged_y1"] - truth["engaged_y0"]
    summary = {
        "experiment": str(truth["experiment"].iloc[0]) if len(truth) else "",
        "control_arm": control,
        "effect_revenue_relative": float(effect_revenue),
        "effect_engagement_touchpoints_per_30d": float(effect_engagement),
        "horizon_days": int(horizon_days),
        "data_end": f"{pd.Timestamp(data_end):%Y-%m-%d %H:%M:%S}",
        "extra_meetings_added": int(extra["partner_id"].isin(set(ids[treated_mask])).sum()),
        "arms": {str(k): int(v) for k, v in arms.value_counts().sort_index().items()},
        "true_effect": {
            "revenue": float(d_rev.mean()),
            "engaged": float(d_eng.mean()),
        },
        "true_effect_on_treated": {
            "revenue": float(d_rev[treated_mask].mean()) if treated_mask.any() else None,
            "engaged": float(d_eng[treated_mask].mean()) if treated_mask.any() else None,
        },
        "control_mean_y0": {
            "revenue": float(truth["revenue_y0"].mean()),
            "engaged": float(truth["engaged_y0"].mean()),
        },
    }
    return InjectedExperiment(tables=observed, assignment=assignment, truth=truth, summary=summary)


@dataclass
class InjectResult:
    """What ``run_inject_effect`` wrote."""

    out_dir: Path
    files: dict[str, Path]
    summary: dict

    def text(self) -> str:
        """Human-readable lines: the experiment, arm counts and the true effects."""
        s = self.summary
        arms = ", ".join(f"{k} {v:,}" for k, v in s["arms"].items())
        lines = [
            f"experiment '{s['experiment']}' injected ({arms}): revenue x"
            f"{1 + s['effect_revenue_relative']:.3g} after assignment, "
            f"+{s['effect_engagement_touchpoints_per_30d']:g} meetings per 30 days",
            f"  true effect over {s['horizon_days']} days: revenue "
            f"{s['true_effect']['revenue']:+,.0f} per partner, engaged share "
            f"{s['true_effect']['engaged']:+.3f}",
        ]
        lines += [f"  wrote {path}" for path in self.files.values()]
        return "\n".join(lines)


def _check_effects(effect_revenue: float, effect_engagement: float) -> None:
    """An uplift above -100% and a non-negative number of extra touchpoints (NaN refused)."""
    if not effect_revenue > -1.0:
        raise OptionError(f"--effect-revenue: must be greater than -1, got {effect_revenue}")
    if not effect_engagement >= 0:
        raise OptionError(
            f"--effect-engagement: extra touchpoints per 30 days must be >= 0, got "
            f"{effect_engagement}"
        )


def check_injection(
    name: str,
    effect_revenue: float,
    effect_engagement: float,
    treated_fraction: float,
    assigned_at: date | pd.Timestamp,
    data_end: date | pd.Timestamp,
    horizon_days: int,
) -> None:
    """Stop before anything is written when the experiment to inject cannot be made.

    Raises:
        OptionError: An empty name, an effect out of range, a treated share outside
            (0, 1), or an assignment whose ``horizon_days`` would pass the data end (the true
            effect would cover days the data does not: ``experiment analyze`` could not check
            it; ``data_end`` is the newest event, or the simulation's last day before it is
            written); one line naming the ``simulate`` option.
    """
    if not name.strip():
        raise OptionError("--treatment: the experiment name must not be empty")
    _check_effects(effect_revenue, effect_engagement)
    if not 0.0 < float(treated_fraction) < 1.0:
        raise OptionError(
            f"--treated-fraction: expected a share between 0 and 1, got {treated_fraction}"
        )
    start, end = pd.Timestamp(assigned_at), pd.Timestamp(data_end)
    latest = end - pd.Timedelta(days=int(horizon_days))
    if start > latest:  # as `experiment analyze` reads a horizon: complete by the data end
        raise OptionError(
            f"--assigned-at {start:%Y-%m-%d}: the true effect's {horizon_days}-day horizon would "
            f"pass the data end {end:%Y-%m-%d}; assign by {latest:%Y-%m-%d} "
            "(simulate.horizon_days)"
        )


def run_inject_effect(
    raw_dir: str | Path,
    name: str,
    effect_revenue: float,
    effect_engagement: float,
    treated_fraction: float,
    assigned_at: date | pd.Timestamp,
    seed: int,
    horizon_days: int = 180,
) -> InjectResult:
    """Randomise a simulated program's partners, inject the effect, write tables and truth.

    Reads the tables from ``raw_dir`` (as the simulator wrote them), rewrites ``deals`` and
    ``activities`` in the same format with the effect applied to the treated partners, and
    writes ``experiment_assignment.csv``, ``experiment_truth.csv`` and ``experiment_truth.json``.

    Args:
        raw_dir: Folder written by ``partnerscore simulate``.
        name: Experiment name.
        effect_revenue: Relative uplift of won deal amounts after assignment.
        effect_engagement: Extra meetings per 30 days after assignment.
        treated_fraction: Share of partners randomised to the treatment.
        assigned_at: Assignment date (partners signed before it take part).
        seed: Seed of the randomisation and the extra meetings.
        horizon_days: Horizon of the true effect.

    Returns:
        What was written, with the true effects.
    """
    from partnerscore.features.simulate import write_tables
    from partnerscore.features.validate import load_raw

    out = Path(raw_dir)
    fmt = "parquet" if (out / "deals.parquet").exists() else "csv"
    raw = load_raw(out, write_quarantine=False)
    tables = raw.tables
    assigned_at = pd.Timestamp(assigned_at)
    end = pd.Timestamp(raw.data_end)
    check_injection(
        name, effect_revenue, effect_engagement, treated_fraction, assigned_at, end, horizon_days
    )
    assignment = simulated_assignment(tables["partners"], name, assigned_at, treated_fraction, seed)
    injected = inject_effect(
        tables,
        assignment,
        effect_revenue,
        effect_engagement,
        horizon_days,
        seed=seed,
        data_end=end,
    )
    write_tables(
        {k: injected.tables[k] for k in ("deals", "activities") if k in injected.tables},
        out,
        fmt=fmt,
    )
    stamp = "%Y-%m-%d %H:%M:%S"
    assign_out = injected.assignment.assign(
        assigned_at=pd.to_datetime(injected.assignment["assigned_at"]).dt.strftime(stamp)
    )
    truth_out = injected.truth.assign(
        assigned_at=pd.to_datetime(injected.truth["assigned_at"]).dt.strftime(stamp)
    )
    files = {
        "assignment": write_frame_atomic(assign_out, out / "experiment_assignment.csv"),
        "truth": write_frame_atomic(truth_out, out / "experiment_truth.csv"),
        "summary": write_text_atomic(
            json.dumps(injected.summary, indent=2), out / "experiment_truth.json"
        ),
    }
    return InjectResult(out_dir=out, files=files, summary=injected.summary)


__all__ = [
    "EXTRA_ACTIVITY",
    "InjectResult",
    "InjectedExperiment",
    "TRUTH_COLUMNS",
    "check_injection",
    "inject_effect",
    "run_inject_effect",
    "simulated_assignment",
    "simulated_start",
]
