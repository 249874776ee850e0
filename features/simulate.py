"""A seeded synthetic partner program that writes every contract table plus a ``truth`` table.

The generative model, in short: every partner has a latent *quality* (drives fit assessments,
training speed, leads, win rate and deal size) and a latent *engagement propensity* (drives CRM
touchpoints, responsiveness, portal use and commitments kept), correlated and shifted by segment
(tier, region, industry, partner type). Activity is generated month by month since signing
(30-day months) from Poisson rates that ramp up with onboarding age; some partners go quiet at a
latent time, after which their rates collapse. Revenue comes from won deals: many partners win
nothing in a horizon (zero inflation) and deal sizes are lognormal (heavy tail).

The ``truth`` table holds, per partner and onboarding age, the expectation of the two labels given
the latent state (the same rate model the events were drawn from), so a perfect model's metrics
are an oracle ceiling. It is for evaluation only, never a feature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special

from partnerscore.features.config import SimulateConfig
from partnerscore.features.core import PartnerscoreError, frame_format, write_frame_atomic

MONTH_DAYS = 30
TIERS = ("registered", "silver", "gold", "platinum")
TIER_P = (0.40, 0.30, 0.20, 0.10)
TIER_EFFECT = {"registered": -0.35, "silver": 0.0, "gold": 0.3, "platinum": 0.55}
REGIONS = ("NA", "EMEA", "APAC", "LATAM")
REGION_P = (0.38, 0.32, 0.20, 0.10)
REGION_EFFECT = {"NA": 0.15, "EMEA": 0.05, "APAC": -0.05, "LATAM": -0.2}
INDUSTRIES = (
    "software",
    "manufacturing",
    "healthcare",
    "financial services",
    "retail",
    "public sector",
    "education",
)
INDUSTRY_EFFECT = (0.2, 0.0, 0.1, 0.25, -0.1, -0.15, -0.25)
PARTNER_TYPES = ("reseller", "referral", "msp", "si")
TYPE_P = (0.40, 0.25, 0.20, 0.15)
# (deal-rate effect, deal-size effect, engagement effect)
TYPE_EFFECT = {
    "reseller": (0.1, 0.0, 0.0),
    "referral": (0.2, -0.5, -0.3),
    "msp": (0.0, 0.2, 0.2),
    "si": (-0.4, 0.7, 0.1),
}
ACTIVITY_TYPES = ("meeting", "call", "email", "qbr", "co_sell", "joint_event")
ACTIVITY_P = np.array([0.28, 0.22, 0.32, 0.06, 0.07, 0.05])
QUALIFYING_ACTIVITY_SHARE = float(ACTIVITY_P[[0, 3, 4, 5]].sum())
PORTAL_EVENTS = ("login", "content_view", "asset_download", "deal_registration", "training_view")
PORTAL_P = (0.40, 0.25, 0.15, 0.08, 0.12)
COURSES = (
    "ONB-101",
    "SALES-201",
    "TECH-210",
    "TECH-220",
    "SVC-230",
    "MKT-240",
    "CERT-SALES",
    "CERT-TECH",
)
NAME_HEADS = (
    "Acme",
    "Blue Harbor",
    "Northwind",
    "Summit",
    "Brightpath",
    "Crescent",
    "Ironclad",
    "Keystone",
    "Lumen",
    "Meridian",
    "Nimbus",
    "Orbital",
    "Pioneer",
    "Quantum",
    "Redwood",
    "Sterling",
    "Tidewater",
    "Vertex",
    "Willow",
    "Zenith",
    "Müller",
    "Søren",
    "Café Réseau",
    "O'Brien",
    "Núcleo",
    "Åkesson",
)
NAME_TAILS = (
    "Systems",
    "Solutions",
    "IT",
    "Consulting",
    "Networks",
    "Partners",
    "Group",
    "& Sons",
    "Technologies",
    "Digital",
    "Cloud Services",
    "Integrators",
)
NAME_SUFFIX = ("Ltd", "Inc.", "GmbH", "LLC", "S.A.", "Pty Ltd", "", "", "")

CONTRACT_TABLES = (
    "partners",
    "deals",
    "activities",
    "trainings",
    "portal_events",
    "marketing_commitments",
    "leads",
    "feedback",
)


@dataclass
class SimulateResult:
    """What ``run_simulate`` wrote.

    Attributes:
        out_dir: Folder holding the tables.
        paths: Table name -> file written.
        rows: Table name -> number of rows.
        seconds: Wall-clock time of simulation and writing.
    """

    out_dir: Path
    paths: dict[str, Path] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line per table, then the folder."""
        lines = [f"simulated program written to {self.out_dir} in {self.seconds:.1f} s"]
        width = max(len(name) for name in self.rows)
        for name, count in self.rows.items():
            lines.append(f"  {name:<{width}}  {count:>10,} rows  {self.paths[name].name}")
        return "\n".join(lines)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _ramp(month_index: np.ndarray) -> np.ndarray:
    """Activity multiplier by onboarding month: partners take a few months to ramp up."""
    return 0.25 + 0.75 * (1.0 - np.exp(-(month_index + 0.5) / 3.0))


def _company_names(rng: np.random.Generator, n: int) -> np.ndarray:
    heads = rng.choice(np.array(NAME_HEADS, dtype=object), n)
    tails = rng.choice(np.array(NAME_TAILS, dtype=object), n)
    suffix = rng.choice(np.array(NAME_SUFFIX, dtype=object), n)
    names = np.array(
        [f"{h} {t} {s}".strip() for h, t, s in zip(heads, tails, suffix, strict=True)], dtype=object
    )
    return names


class _Program:
    """The latent state of every partner and the monthly rate grid derived from it."""

    def __init__(self, config: SimulateConfig) -> None:
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        rng = self.rng
        n = config.partners
        self.n = n
        self.end = pd.Timestamp(config.end_date) + pd.Timedelta(days=1)  # exclusive end
        span_days = int(config.years * 365)
        first = self.end - pd.Timedelta(days=span_days)
        last = self.end - pd.Timedelta(days=30)
        offsets = np.sort(rng.uniform(0, (last - first).days, n))
        # signing at business hours, second resolution
        self.signed_days = np.floor(offsets) + 0.375  # days after `first`, 09:00 local
        self.first = first
        self.tier = rng.choice(np.array(TIERS, dtype=object), n, p=TIER_P)
        self.region = rng.choice(np.array(REGIONS, dtype=object), n, p=REGION_P)
        industry_idx = rng.integers(0, len(INDUSTRIES), n)
        self.industry = np.array(INDUSTRIES, dtype=object)[industry_idx]
        self.ptype = rng.choice(np.array(PARTNER_TYPES, dtype=object), n, p=TYPE_P)
        tier_eff = np.array([TIER_EFFECT[t] for t in self.tier])
        region_eff = np.array([REGION_EFFECT[r] for r in self.region])
        type_eff = np.array([TYPE_EFFECT[t] for t in self.ptype])
        ind_eff = np.array(INDUSTRY_EFFECT)[industry_idx]
        self.tier_eff = tier_eff
        self.type_rate, self.type_size, self.type_eng = type_eff.T
        z1, z2 = rng.standard_normal((2, n))
        self.quality = 0.5 * tier_eff + 0.6 * region_eff + 0.6 * ind_eff + z1
        self.engagement = 0.55 * self.quality + 0.3 * tier_eff + self.type_eng + 0.85 * z2
        # some partners go quiet: after this month their activity collapses
        quiet_p = _sigmoid(-1.3 - 0.9 * self.engagement)
        goes_quiet = rng.random(n) < quiet_p
        quiet_month = np.floor(rng.exponential(7.0, n)).astype(int)
        self.quiet_month = np.where(goes_quiet, quiet_month, 10_000)

        # monthly grid since signing
        self.months = int(np.ceil(span_days / MONTH_DAYS)) + 1
        k = np.arange(self.months)
        self.k = k
        start = self.signed_days[:, None] + k[None, :] * MONTH_DAYS
        horizon_end = (self.end - first).days
        self.exposure = np.clip(horizon_end - start, 0, MONTH_DAYS) / MONTH_DAYS  # (n, M)
        ramp = _ramp(k)[None, :]
        quiet = np.where(k[None, :] >= self.quiet_month[:, None], 0.06, 1.0)
        self.activity_mult = ramp * quiet
        # monthly rates (per full month) before exposure
        scale = config.event_scale
        self.rate_activity = (
            np.exp(-0.3 + 0.75 * self.engagement + 0.3 * tier_eff)[:, None]
            * self.activity_mult
            * scale
        )
        self.rate_portal = (
            np.exp(1.2 + 0.5 * self.engagement + 0.2 * self.quality)[:, None]
            * self.activity_mult
            * scale
        )
        self.rate_leads = (
            np.exp(-1.6 + 0.55 * self.quality + 0.3 * self.engagement + 0.5 * self.type_rate)[
                :, None
            ]
            * self.activity_mult
        )
        self.rate_deals = (
            np.exp(-2.1 + 0.65 * self.quality + 0.25 * self.engagement + self.type_rate)[:, None]
            * self.activity_mult
        )
        self.win_p = _sigmoid(-0.4 + 0.8 * self.quality)
        self.size_mu = 9.4 + 0.45 * self.quality + 0.5 * tier_eff + self.type_size
        self.size_sigma = 1.1
        self.cycle_shape = 2.0
        self.cycle_scale = (
            25.0 * np.exp(-0.15 * self.quality) * np.where(self.ptype == "si", 1.6, 1.0)
        )

    # -- helpers -------------------------------------------------------------------------------
    def to_time(self, days: np.ndarray) -> np.ndarray:
        """Days after ``first`` -> datetime64[s]."""
        seconds = np.round(np.asarray(days, dtype=float) * 86400.0).astype("int64")
        return np.datetime64(self.first.to_datetime64(), "s") + seconds.astype("timedelta64[s]")

    def to_time_or_null(self, days: np.ndarray) -> pd.Series:
        """Like :meth:`to_time`, with NaN days -> NaT."""
        days = np.asarray(days, dtype=float)
        return pd.Series(self.to_time(np.nan_to_num(days))).where(~np.isnan(days))

    def monthly_events(self, rate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw Poisson counts per partner-month and uniform times inside each month.

        Returns:
            (partner index, month index, day offset after ``first``) per event, sorted by partner.
        """
        counts = self.rng.poisson(rate * self.exposure)
        flat = counts.ravel()
        cell = np.repeat(np.arange(flat.size), flat)
        pidx, midx = np.divmod(cell, self.months)
        u = self.rng.random(cell.size)
        day = self.signed_days[pidx] + (midx + u * self.exposure[pidx, midx]) * MONTH_DAYS
        return pidx, midx, day

    @property
    def end_day(self) -> float:
        return float((self.end - self.first).days)


def _partners(p: _Program) -> pd.DataFrame:
    rng = p.rng
    n = p.n
    market = np.clip(np.round(3 + 0.7 * p.quality + rng.normal(0, 0.8, n)), 1, 5)
    market[rng.random(n) < 0.08] = np.nan
    reach = np.round(np.exp(3.0 + 0.35 * p.quality + 0.4 * p.tier_eff + rng.normal(0, 0.6, n)))
    reach[rng.random(n) < 0.06] = np.nan
    adoption = np.clip(
        np.round(3 + 0.5 * p.quality + 0.3 * p.engagement + rng.normal(0, 0.9, n)), 1, 5
    )
    adoption[rng.random(n) < 0.1] = np.nan
    signed = p.to_time(p.signed_days)
    return pd.DataFrame(
        {
            "partner_id": [f"P{i + 1:05d}" for i in range(n)],
            "partner_name": _company_names(rng, n),
            "signed_at": signed,
            "tier": p.tier,
            "region": p.region,
            "industry": p.industry,
            "partner_type": p.ptype,
            "market_alignment": market,
            "channel_reach": reach,
            "product_adoption_potential": adoption,
        }
    )


def _activities(p: _Program, ids: np.ndarray) -> pd.DataFrame:
    pidx, _, day = p.monthly_events(p.rate_activity)
    rng = p.rng
    kind = rng.choice(len(ACTIVITY_TYPES), pidx.size, p=ACTIVITY_P)
    hours = np.exp(2.6 - 0.45 * p.engagement[pidx] + rng.normal(0, 0.7, pidx.size))
    hours = np.round(hours, 1)
    hours[(rng.random(pidx.size) < 0.15) | (kind == 5)] = np.nan
    order = np.lexsort((day, pidx))
    return pd.DataFrame(
        {
            "activity_id": [f"A{i + 1:08d}" for i in range(pidx.size)],
            "partner_id": ids[pidx[order]],
            "occurred_at": p.to_time(day[order]),
            "activity_type": np.array(ACTIVITY_TYPES, dtype=object)[kind[order]],
            "response_hours": hours[order],
        }
    )


def _portal(p: _Program, ids: np.ndarray) -> pd.DataFrame:
    pidx, _, day = p.monthly_events(p.rate_portal)
    kind = p.rng.choice(len(PORTAL_EVENTS), pidx.size, p=PORTAL_P)
    order = np.lexsort((day, pidx))
    return pd.DataFrame(
        {
            "partner_id": ids[pidx[order]],
            "occurred_at": p.to_time(day[order]),
            "event_type": np.array(PORTAL_EVENTS, dtype=object)[kind[order]],
        }
    )


def _trainings(p: _Program, ids: np.ndarray) -> pd.DataFrame:
    rng = p.rng
    n = p.n
    n_courses = np.clip(2 + rng.poisson(np.exp(0.6 + 0.3 * p.engagement)), 1, len(COURSES))
    pidx = np.repeat(np.arange(n), n_courses)
    # course j of a partner: the first n_courses of a partner-specific shuffle (ONB first)
    within = np.concatenate([np.arange(c) for c in n_courses]) if n else np.array([], int)
    course_idx = np.where(within == 0, 0, rng.integers(1, len(COURSES), pidx.size))
    speed = np.exp(0.35 * p.quality[pidx] + 0.25 * p.engagement[pidx])
    enrolled = (
        p.signed_days[pidx]
        + within * rng.exponential(18.0, pidx.size) / speed
        + rng.exponential(6.0, pidx.size)
    )
    complete_p = _sigmoid(0.6 + 0.9 * p.quality[pidx] + 0.3 * p.engagement[pidx])
    completes = rng.random(pidx.size) < complete_p
    completed = enrolled + rng.gamma(2.0, 9.0, pidx.size) / speed
    quiet_day = p.signed_days[pidx] + p.quiet_month[pidx] * MONTH_DAYS
    completes &= completed < quiet_day
    keep = (enrolled < p.end_day) & (enrolled < quiet_day + 15)
    completed = np.where(completes & (completed < p.end_day), completed, np.nan)
    pidx, course_idx, enrolled, completed = (
        pidx[keep],
        course_idx[keep],
        enrolled[keep],
        completed[keep],
    )
    courses = np.array(COURSES, dtype=object)[course_idx]
    frame = pd.DataFrame(
        {
            "partner_id": ids[pidx],
            "course_id": courses,
            "enrolled_at": p.to_time(enrolled),
            "completed_at": p.to_time_or_null(completed),
            "is_certification": pd.Series(courses).str.startswith("CERT").to_numpy(),
        }
    )
    return frame.drop_duplicates(["partner_id", "course_id"]).reset_index(drop=True)


def _commitments(p: _Program, ids: np.ndarray) -> pd.DataFrame:
    rng = p.rng
    n = p.n
    counts = rng.poisson(1.5 + 1.2 * (p.tier_eff + 0.35))
    pidx = np.repeat(np.arange(n), counts)
    committed = p.signed_days[pidx] + rng.uniform(5, 300, pidx.size)
    due = committed + rng.choice([30, 45, 60, 90], pidx.size)
    keep_p = _sigmoid(0.4 + 1.1 * p.engagement[pidx])
    quiet_day = p.signed_days[pidx] + p.quiet_month[pidx] * MONTH_DAYS
    on_time = rng.random(pidx.size) < keep_p
    late = ~on_time & (rng.random(pidx.size) < 0.5)
    delivered = np.where(
        on_time,
        committed + (due - committed) * rng.uniform(0.4, 1.0, pidx.size),
        np.where(late, due + rng.exponential(20, pidx.size), np.nan),
    )
    delivered = np.where(delivered > quiet_day, np.nan, delivered)
    keep = committed < p.end_day
    delivered = np.where(delivered < p.end_day, delivered, np.nan)
    pidx, committed, due, delivered = pidx[keep], committed[keep], due[keep], delivered[keep]
    order = np.lexsort((committed, pidx))
    pidx, committed, due, delivered = pidx[order], committed[order], due[order], delivered[order]
    return pd.DataFrame(
        {
            "commitment_id": [f"M{i + 1:07d}" for i in range(pidx.size)],
            "partner_id": ids[pidx],
            "committed_at": p.to_time(np.floor(committed)),
            "due_at": p.to_time(np.floor(due)),
            "delivered_at": p.to_time_or_null(delivered),
        }
    )


def _leads(p: _Program, ids: np.ndarray) -> pd.DataFrame:
    rng = p.rng
    pidx, _, day = p.monthly_events(p.rate_leads)
    qual = rng.random(pidx.size) < _sigmoid(-0.2 + 0.9 * p.quality[pidx])
    qualified = np.where(qual, day + rng.exponential(6, pidx.size), np.nan)
    conv = qual & (rng.random(pidx.size) < _sigmoid(-0.8 + 0.8 * p.quality[pidx]))
    converted = np.where(conv, qualified + rng.exponential(25, pidx.size), np.nan)
    qualified = np.where(qualified < p.end_day, qualified, np.nan)
    converted = np.where((converted < p.end_day) & ~np.isnan(qualified), converted, np.nan)
    order = np.lexsort((day, pidx))
    return pd.DataFrame(
        {
            "lead_id": [f"L{i + 1:07d}" for i in range(pidx.size)],
            "partner_id": ids[pidx[order]],
            "created_at": p.to_time(day[order]),
            "qualified_at": p.to_time_or_null(qualified[order]),
            "converted_at": p.to_time_or_null(converted[order]),
        }
    )


def _deals(p: _Program, ids: np.ndarray) -> pd.DataFrame:
    rng = p.rng
    pidx, _, day = p.monthly_events(p.rate_deals)
    cycle = rng.gamma(p.cycle_shape, p.cycle_scale[pidx])
    closed = day + cycle
    won = rng.random(pidx.size) < p.win_p[pidx]
    amount = np.round(np.exp(rng.normal(p.size_mu[pidx], p.size_sigma)), 2)
    is_open = closed >= p.end_day
    status = np.where(is_open, "open", np.where(won, "won", "lost")).astype(object)
    closed = np.where(is_open, np.nan, closed)
    order = np.lexsort((day, pidx))
    return pd.DataFrame(
        {
            "deal_id": [f"D{i + 1:07d}" for i in range(pidx.size)],
            "partner_id": ids[pidx[order]],
            "created_at": p.to_time(day[order]),
            "closed_at": p.to_time_or_null(closed[order]),
            "amount": amount[order],
            "status": status[order],
        }
    )


def _feedback(p: _Program, ids: np.ndarray) -> pd.DataFrame:
    rng = p.rng
    quarters = p.months // 3 + 1
    n = p.n
    pidx = np.repeat(np.arange(n), quarters)
    q = np.tile(np.arange(quarters), n)
    day = p.signed_days[pidx] + (q * 3 + rng.uniform(1, 3, pidx.size)) * MONTH_DAYS
    answered = rng.random(pidx.size) < 0.45 * np.where(q >= p.quiet_month[pidx] / 3, 0.2, 1.0)
    keep = answered & (day < p.end_day)
    pidx, day = pidx[keep], day[keep]
    score = np.clip(
        np.round(
            3.2 + 0.5 * p.engagement[pidx] + 0.2 * p.quality[pidx] + rng.normal(0, 0.8, pidx.size)
        ),
        1,
        5,
    )
    return pd.DataFrame({"partner_id": ids[pidx], "submitted_at": p.to_time(day), "score": score})


def _poisson_binomial_tail(probs: np.ndarray, at_least: int) -> np.ndarray:
    """P(at least ``at_least`` successes) for independent Bernoulli columns of ``probs`` (rows)."""
    dist = np.zeros((probs.shape[0], probs.shape[1] + 1))
    dist[:, 0] = 1.0
    for j in range(probs.shape[1]):
        pj = probs[:, j : j + 1]
        shifted = np.zeros_like(dist)
        shifted[:, 1:] = dist[:, :-1]
        dist = dist * (1 - pj) + shifted * pj
    return dist[:, at_least:].sum(axis=1)


def _truth(p: _Program, ids: np.ndarray) -> pd.DataFrame:
    """Expected labels given the latent state, from the same monthly rate model."""
    cfg = p.config
    horizon = cfg.horizon_days
    rows = []
    sub = (np.arange(10) + 0.5) / 10  # integration points inside a month
    for age in cfg.truth_ages:
        as_of_day = p.signed_days + age
        valid = as_of_day <= p.end_day - 1 + 0.999
        idx = np.flatnonzero(valid)
        if idx.size == 0:
            continue
        # expected revenue: deals created in month k at time t close in (a, a + h]
        months = np.arange(p.months)
        t = (
            p.signed_days[idx, None, None]
            + (months[None, :, None] + sub[None, None, :]) * MONTH_DAYS
        )
        a = as_of_day[idx, None, None]
        shape = p.cycle_shape
        scale = p.cycle_scale[idx, None, None]
        lo = np.clip(a - t, 0, None) / scale
        hi = np.clip(a + horizon - t, 0, None) / scale
        p_close = special.gammainc(shape, hi) - special.gammainc(shape, lo)
        # a deal created after the data end is never observed, but the truth is a model
        # expectation: use the full-month rate for months past the end
        full_rate = p.rate_deals[idx]
        expected_deals = (full_rate[:, :, None] * p_close / sub.size).sum(axis=(1, 2))
        mean_amount = np.exp(p.size_mu[idx] + p.size_sigma**2 / 2)
        true_rev = expected_deals * p.win_p[idx] * mean_amount
        # engagement: qualifying touchpoints per 30-day period of the horizon
        periods = horizon // 30
        first_month = age // MONTH_DAYS
        month_idx = np.clip(first_month + np.arange(periods), 0, p.months - 1)
        mu = (
            p.rate_activity[idx][:, month_idx] * QUALIFYING_ACTIVITY_SHARE
            + p.rate_leads[idx][:, month_idx]
            + p.rate_deals[idx][:, month_idx]
        )
        p_period = 1 - np.exp(-mu)
        need = int(np.ceil(0.5 * periods))
        true_eng = _poisson_binomial_tail(p_period, need)
        rows.append(
            pd.DataFrame(
                {
                    "partner_id": ids[idx],
                    "age_days": age,
                    "as_of": p.to_time(as_of_day[idx]),
                    "horizon_days": horizon,
                    "true_expected_revenue": np.round(true_rev, 2),
                    "true_engagement_prob": np.round(true_eng, 6),
                }
            )
        )
    if not rows:
        return pd.DataFrame(
            columns=[
                "partner_id",
                "age_days",
                "as_of",
                "horizon_days",
                "true_expected_revenue",
                "true_engagement_prob",
            ]
        )
    return (
        pd.concat(rows, ignore_index=True)
        .sort_values(["partner_id", "age_days"])
        .reset_index(drop=True)
    )


def simulate_program(config: SimulateConfig) -> dict[str, pd.DataFrame]:
    """Simulate a partner program.

    Args:
        config: Size, seed, date range and event volume.

    Returns:
        Table name -> DataFrame for every contract table plus ``truth``; the same config gives
        identical tables.
    """
    program = _Program(config)
    partners = _partners(program)
    ids = partners["partner_id"].to_numpy(dtype=object)
    tables = {
        "partners": partners,
        "deals": _deals(program, ids),
        "activities": _activities(program, ids),
        "trainings": _trainings(program, ids),
        "portal_events": _portal(program, ids),
        "marketing_commitments": _commitments(program, ids),
        "leads": _leads(program, ids),
        "feedback": _feedback(program, ids),
        "truth": _truth(program, ids),
    }
    return tables


def write_tables(
    tables: dict[str, pd.DataFrame], out_dir: str | Path, fmt: str = "csv"
) -> dict[str, Path]:
    """Write one file per table, ``<name>.<fmt>``, atomically.

    Args:
        tables: Table name -> frame.
        out_dir: Destination folder (created).
        fmt: ``csv`` or ``parquet``.

    Returns:
        Table name -> path written.
    """
    if fmt not in ("csv", "parquet"):
        raise PartnerscoreError(f"--format: expected csv or parquet, got '{fmt}'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in tables.items():
        path = out / f"{name}.{fmt}"
        frame_format(path)
        if fmt == "csv":
            frame = frame.copy()
            for col in frame.columns:
                if pd.api.types.is_datetime64_any_dtype(frame[col]):
                    frame[col] = frame[col].dt.strftime("%Y-%m-%d %H:%M:%S")
        # a table in the other format from an earlier run would make the folder ambiguous
        (out / f"{name}.{'parquet' if fmt == 'csv' else 'csv'}").unlink(missing_ok=True)
        paths[name] = write_frame_atomic(frame, path)
    return paths


def run_simulate(config: SimulateConfig, out_dir: str | Path, fmt: str = "csv") -> SimulateResult:
    """Simulate a program and write it: the ``partnerscore simulate`` job.

    Args:
        config: Simulation settings.
        out_dir: Folder for the tables.
        fmt: ``csv`` or ``parquet``.

    Returns:
        Paths, row counts and timing.
    """
    import time

    started = time.perf_counter()
    tables = simulate_program(config)
    paths = write_tables(tables, out_dir, fmt=fmt)
    return SimulateResult(
        out_dir=Path(out_dir),
        paths=paths,
        rows={name: len(frame) for name, frame in tables.items()},
        seconds=time.perf_counter() - started,
    )


__all__ = ["CONTRACT_TABLES", "SimulateResult", "run_simulate", "simulate_program", "write_tables"]
