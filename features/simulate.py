"""A seeded synthetic partner program that writes every contract table plus a ``truth`` table.

The generative model, in short: every partner has a latent *quality* (drives fit assessments,
training speed and certification, lead qualification, win rate and deal size) and a latent
*engagement propensity* (drives CRM touchpoints, responsiveness, portal use and commitments kept),
correlated and shifted by segment (tier, region, industry, partner type), with interactions that
segment main effects cannot express (partner type x region in engagement and in going quiet,
tier x engagement in deal flow, partner type x quality in deal size). Activity is generated
month by month since signing (30-day months) from Poisson rates that ramp up with onboarding
age (faster for engaged partners) and saturate (touchpoints and deal flow cannot grow without
bound); some partners go quiet at a latent time, after which their rates collapse. CRM
touchpoints also respond to observable onboarding behaviour, with effects no additive model
of the features expresses: a threshold on early pipeline (no lead or deal in the first 60 days
cuts touchpoints from then on) and a certification x enablement interaction (a certification
earned after enablement courses lifts them; either alone does nothing). Revenue
comes from won deals: many partners win nothing in a horizon (zero inflation) and deal sizes
are lognormal (heavy tail).

The ``truth`` table holds, per partner and onboarding age, the exact expectation of the two labels
given the latent state (and the two drawn onboarding events the touchpoint rates respond to),
computed in closed form from the same rate model the events are drawn
from (not from the drawn sample), so a perfect model's metrics are an oracle ceiling. It is for
evaluation only, never a feature.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special

from partnerscore.features.config import BuildConfig, SimulateConfig
from partnerscore.features.core import (
    AppendedFile,
    OptionError,
    PartnerscoreError,
    discard_staged,
    publish_staged,
)

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
# engagement the segment main effects do not explain: some partner types thrive in some regions
TYPE_REGION_ENGAGEMENT = {
    ("msp", "APAC"): 0.7,
    ("msp", "LATAM"): 0.6,
    ("si", "EMEA"): 0.5,
    ("referral", "NA"): -0.7,
    ("reseller", "LATAM"): -0.5,
}
# partners going quiet, by partner type x region (odds multiplier, mean quiet month): churn
# hot spots that no main effect explains and that early activity does not yet show
TYPE_REGION_QUIET = {
    ("referral", "NA"): (4.0, 4.0),
    ("reseller", "LATAM"): (3.0, 4.0),
    ("si", "APAC"): (3.0, 5.0),
    ("msp", "EMEA"): (0.25, 7.0),
    ("msp", "APAC"): (0.3, 7.0),
}
ACTIVITY_CAP = 5.0  # CRM touchpoints per month saturate towards this (before event_scale)
DEAL_CAP = 0.9  # deals created per month saturate towards this
QUIET_FACTOR = 0.06  # share of a partner's activity left after it goes quiet
# momentum from observable onboarding behaviour (acts on CRM touchpoints, see _Program.momentum)
EARLY_PIPELINE_DAYS = 60  # a lead or deal created in the first 60 days ...
# ... or from day 60 on, touchpoints fall to this share in the lower tiers (partner managers
# drop them) and rise in the higher ones (they are pushed into enablement campaigns)
NO_PIPELINE_FACTOR = {"registered": 0.25, "silver": 0.4, "gold": 1.6, "platinum": 2.0}
CERT_ENABLED_FACTOR = 2.5  # certified after >= 2 completed enablement courses: touchpoints x2.5
CERT_ENABLEMENT_COURSES = 2
DEAL_SIZE_SIGMA = 1.1  # lognormal sigma of deal amounts
CYCLE_SHAPE = 2.0  # gamma shape of the sales cycle (days from created to closed)
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
    "Granite",
    "Harbinger",
    "Kestrel",
    "Larkspur",
    "Mosaic",
    "Silverline",
    "Cobalt",
    "Evergreen",
    "Falcon",
    "Juniper",
    "Müller",
    "Søren",
    "Café Réseau",
    "O'Brien",
    "Núcleo",
    "Åkesson",
    "Smith, Lowe",
    "D'Angelo",
    "Ibáñez",
    "Łukasz",
)
NAME_MIDDLES = (
    "",
    "",
    "",
    "",
    "",
    "Pacific",
    "Atlantic",
    "Data",
    "Bay",
    "Peak",
    "River",
    "North",
    "Prime",
    "Metro",
    "Coastal",
    "Alpine",
    "United",
    "Hill & Vale",
    "Signal",
    "Bridge",
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
BLOCK_PARTNERS = 100_000
"""Largest program simulated in one piece: a larger one is simulated in blocks of near-equal
size (at most this many partners each), so memory stays bounded and cost grows linearly."""
ID_DIGITS = {"P": 5, "D": 7, "A": 8, "M": 7, "L": 7}
"""Minimum digits of each id prefix (``P00001``); more partners or events add digits."""
ID_COLUMNS = {
    "partners": ("partner_id", "P"),
    "deals": ("deal_id", "D"),
    "activities": ("activity_id", "A"),
    "marketing_commitments": ("commitment_id", "M"),
    "leads": ("lead_id", "L"),
}
"""Table -> (its id column, the id prefix): numbering continues across blocks."""
TRUTH_COLUMNS = (
    "partner_id",
    "age_days",
    "as_of",
    "horizon_days",
    "true_expected_revenue",
    "true_engagement_prob",
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
        """One line per table (rows and file), after a line naming the folder and the time."""
        lines = [f"simulated program written to {self.out_dir} in {self.seconds:.1f} s"]
        width = max((len(name) for name in self.rows), default=0)
        for name, count in self.rows.items():
            lines.append(f"  {name:<{width}}  {count:>10,} rows  {self.paths[name]}")
        return "\n".join(lines)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _ramp(month_index: np.ndarray, months: np.ndarray | float = 3.0) -> np.ndarray:
    """Activity multiplier by onboarding month: partners take a few months to ramp up.

    ``months`` is the ramp's time constant (per partner: engaged partners ramp up faster).
    """
    return 0.25 + 0.75 * (1.0 - np.exp(-(month_index + 0.5) / months))


def _saturate(rate: np.ndarray, cap: float) -> np.ndarray:
    """``rate`` bent towards ``cap``: about ``rate`` when small, never above ``cap``."""
    return rate * cap / (cap + rate)


def _company_names(rng: np.random.Generator, n: int) -> list[str]:
    heads = rng.choice(np.array(NAME_HEADS, dtype=object), n)
    middles = rng.choice(np.array(NAME_MIDDLES, dtype=object), n)
    tails = rng.choice(np.array(NAME_TAILS, dtype=object), n)
    suffix = rng.choice(np.array(NAME_SUFFIX, dtype=object), n)
    return [
        " ".join(part for part in parts if part)
        for parts in zip(heads, middles, tails, suffix, strict=True)
    ]


def _ids(prefix: str, n: int, digits: int, start: int = 0) -> list[str]:
    """Ids ``start + 1`` to ``start + n`` with ``prefix``, zero-padded to ``digits``."""
    return [f"{prefix}{i:0{digits}d}" for i in range(start + 1, start + n + 1)]


def _gamma_cdf_integral(x: np.ndarray, shape: float, scale: np.ndarray) -> np.ndarray:
    """Integral from 0 to ``x`` of the gamma(shape, scale) CDF (0 where ``x <= 0``).

    Uses ``d/dx [x P(k, x/s) - k s P(k+1, x/s)] = P(k, x/s)`` with ``P`` the regularised lower
    incomplete gamma function.
    """
    x = np.maximum(x, 0.0)
    z = x / scale
    return x * special.gammainc(shape, z) - shape * scale * special.gammainc(shape + 1.0, z)


def close_share(
    created_from: np.ndarray,
    window_lo: float,
    window_hi: float,
    shape: float,
    scale: np.ndarray,
    created_days: float = MONTH_DAYS,
) -> np.ndarray:
    """Probability that a deal created uniformly in a period closes inside a window.

    The deal is created at ``t ~ U[created_from, created_from + created_days)`` and closes at
    ``t + C`` with a gamma(shape, scale) sales cycle ``C``; the result is
    ``P(window_lo < t + C <= window_hi)``, exact (closed form), broadcast over the arguments.

    Args:
        created_from: Start of the creation period (days; any common origin).
        window_lo: Exclusive start of the closing window (same origin).
        window_hi: Inclusive end of the closing window.
        shape: Gamma shape of the cycle.
        scale: Gamma scale of the cycle (days).
        created_days: Length of the creation period.

    Returns:
        Probabilities, broadcast shape of ``created_from`` and ``scale``.
    """

    def mean_cdf(edge: float) -> np.ndarray:
        # (1/L) * integral over t of F(edge - t) = (G(edge - s) - G(edge - s - L)) / L
        lag = edge - created_from
        return (
            _gamma_cdf_integral(lag, shape, scale)
            - _gamma_cdf_integral(lag - created_days, shape, scale)
        ) / created_days

    return np.clip(mean_cdf(window_hi) - mean_cdf(window_lo), 0.0, 1.0)


def poisson_binomial_tail(probs: np.ndarray, at_least: int) -> np.ndarray:
    """P(at least ``at_least`` successes) of independent Bernoulli trials, one row per case.

    Args:
        probs: (cases, trials) success probabilities.
        at_least: Number of successes needed.

    Returns:
        One probability per row.
    """
    dist = np.zeros((probs.shape[0], probs.shape[1] + 1))
    dist[:, 0] = 1.0
    for j in range(probs.shape[1]):
        pj = probs[:, j : j + 1]
        shifted = np.zeros_like(dist)
        shifted[:, 1:] = dist[:, :-1]
        dist = dist * (1 - pj) + shifted * pj
    return dist[:, at_least:].sum(axis=1)


class _Program:
    """The latent state of every partner and the monthly rate grid derived from it.

    Times are float days after ``first`` (the start of the signing span); the exclusive end of
    the data is ``end_day`` (midnight after ``config.end_date``).

    Args:
        config: The program's constants (date span, horizon, event scale; its size and seed
            unless given).
        n: Number of partners (default ``config.partners``); a block of a larger program.
        rng: Random generator (default seeded with ``config.seed``).
        id_start: Id prefix -> ids already used by earlier blocks (default none).
    """

    def __init__(
        self,
        config: SimulateConfig,
        n: int | None = None,
        rng: np.random.Generator | None = None,
        id_start: dict[str, int] | None = None,
    ) -> None:
        self.config = config
        self.rng = np.random.default_rng(config.seed) if rng is None else rng
        rng = self.rng
        n = config.partners if n is None else n
        self.n = n
        self.id_start = dict(id_start or {})
        self.end = pd.Timestamp(config.end_date) + pd.Timedelta(days=1)  # exclusive end
        span_days = int(config.years * 365)
        self.first = self.end - pd.Timedelta(days=span_days)
        self.end_day = float(span_days)
        # no signings in the last 30 days; signing at 09:00
        offsets = np.sort(rng.uniform(0, max(span_days - 30, 1), n))
        self.signed_days = np.floor(offsets) + 0.375
        self.tier = rng.choice(np.array(TIERS, dtype=object), n, p=TIER_P)
        self.region = rng.choice(np.array(REGIONS, dtype=object), n, p=REGION_P)
        industry_idx = rng.integers(0, len(INDUSTRIES), n)
        self.industry = np.array(INDUSTRIES, dtype=object)[industry_idx]
        self.ptype = rng.choice(np.array(PARTNER_TYPES, dtype=object), n, p=TYPE_P)
        tier_eff = np.array([TIER_EFFECT[t] for t in self.tier])
        region_eff = np.array([REGION_EFFECT[r] for r in self.region])
        type_eff = np.array([TYPE_EFFECT[t] for t in self.ptype]).reshape(n, 3)
        ind_eff = np.array(INDUSTRY_EFFECT)[industry_idx]
        self.tier_eff = tier_eff
        self.no_pipeline_factor = np.array([NO_PIPELINE_FACTOR[t] for t in self.tier])
        self.type_rate, self.type_size, self.type_eng = type_eff.T
        z1, z2 = rng.standard_normal((2, n))
        self.quality = 0.5 * tier_eff + 0.6 * region_eff + 0.6 * ind_eff + z1
        type_region = np.array(
            [
                TYPE_REGION_ENGAGEMENT.get(key, 0.0)
                for key in zip(self.ptype, self.region, strict=True)
            ]
        )
        self.engagement = (
            0.55 * self.quality + 0.3 * tier_eff + self.type_eng + type_region + 0.85 * z2
        )
        # some partners go quiet: from this onboarding month on their activity collapses
        churn = [
            TYPE_REGION_QUIET.get(key, (1.0, 7.0))
            for key in zip(self.ptype, self.region, strict=True)
        ]
        odds, mean_month = np.array(churn).reshape(n, 2).T
        quiet_p = _sigmoid(-1.3 - 0.9 * self.engagement + np.log(odds))
        goes_quiet = rng.random(n) < quiet_p
        quiet_month = np.floor(rng.exponential(1.0, n) * mean_month).astype(int)
        self.quiet_month = np.where(goes_quiet, quiet_month, 10_000)
        self.quiet_day = self.signed_days + self.quiet_month * MONTH_DAYS

        # monthly grid since signing, long enough for the truth's horizon after any as_of
        self.months = int(np.ceil((span_days + config.horizon_days) / MONTH_DAYS)) + 1
        k = np.arange(self.months)
        start = self.signed_days[:, None] + k[None, :] * MONTH_DAYS
        self.exposure = np.clip(self.end_day - start, 0, MONTH_DAYS) / MONTH_DAYS  # (n, M)
        quiet = np.where(k[None, :] >= self.quiet_month[:, None], QUIET_FACTOR, 1.0)
        # engaged partners ramp up faster: onboarding age and engagement interact
        ramp_months = np.clip(3.0 * np.exp(-0.45 * self.engagement), 0.8, 9.0)
        activity_mult = _ramp(k[None, :], ramp_months[:, None]) * quiet
        # expected events per full month (before exposure)
        scale = config.event_scale
        activity_base = np.exp(-0.3 + 0.75 * self.engagement + 0.3 * tier_eff)
        # CRM touchpoints before the observable momentum (:meth:`momentum` sets rate_activity)
        self.rate_activity_latent = (
            _saturate(activity_base, ACTIVITY_CAP)[:, None] * activity_mult * scale
        )
        self.rate_activity = self.rate_activity_latent
        self.rate_portal = (
            np.exp(1.2 + 0.5 * self.engagement + 0.2 * self.quality)[:, None]
            * activity_mult
            * scale
        )
        lead_log = -1.6 + 0.55 * self.quality + 0.3 * self.engagement + 0.5 * self.type_rate
        self.rate_leads = np.exp(lead_log)[:, None] * activity_mult
        # a higher tier pays off only for engaged partners; deal flow saturates
        deal_log = (
            -2.1
            + 0.65 * self.quality
            + 0.25 * self.engagement
            + self.type_rate
            + 0.6 * tier_eff * np.tanh(self.engagement)
        )
        self.rate_deals = _saturate(np.exp(deal_log), DEAL_CAP)[:, None] * activity_mult
        self.win_p = _sigmoid(-0.4 + 0.8 * self.quality)
        # quality buys bigger deals for integrators and MSPs, smaller ones for referrals
        quality_size = np.select(
            [np.isin(self.ptype, ("si", "msp")), self.ptype == "referral"], [0.8, 0.15], 0.45
        )
        self.size_mu = 9.4 + quality_size * self.quality + 0.5 * tier_eff + self.type_size
        if config.cohort_trend:  # cohort drift: deal sizes move with the signing date
            years_from_middle = (self.signed_days - span_days / 2) / 365.0
            self.size_mu = self.size_mu + config.cohort_trend * years_from_middle
        self.cycle_scale = (
            25.0 * np.exp(-0.15 * self.quality) * np.where(self.ptype == "si", 1.6, 1.0)
        )

    def momentum(self, pipeline_day: np.ndarray, cert_day: np.ndarray) -> None:
        """Set ``rate_activity``: latent touchpoint rates times observable onboarding momentum.

        Two effects that act on behaviour the features see, not on latent traits, and that no
        additive model of the features expresses:

        - a threshold on early pipeline: a partner with no lead or deal created in its first
          ``EARLY_PIPELINE_DAYS`` days gets ``NO_PIPELINE_FACTOR`` of its touchpoints from then on
          (partner managers move their time to partners with pipeline);
        - certification x enablement: from the first month that starts after a partner's first
          certification, touchpoints rise by ``CERT_ENABLED_FACTOR`` if it had completed at least
          ``CERT_ENABLEMENT_COURSES`` enablement (non-certification) courses by then; a
          certification alone, or enablement alone, changes nothing.

        The rates stay piecewise constant per onboarding month, so the truth stays exact: it
        conditions on the latent state and on these two drawn onboarding events.

        Args:
            pipeline_day: Per partner, days after signing of its first lead or deal created
                (inf if none was drawn).
            cert_day: Per partner, days after signing of its first certification completed with
                enough enablement before it (inf if none; drawn whether or not after the data
                end, since the truth's horizon may pass it).
        """
        self.pipeline_day = np.asarray(pipeline_day, dtype=float)
        k = np.arange(self.months)[None, :]
        early_month = EARLY_PIPELINE_DAYS // MONTH_DAYS
        no_pipeline = (pipeline_day >= EARLY_PIPELINE_DAYS)[:, None] & (k >= early_month)
        with np.errstate(invalid="ignore"):
            cert_month = np.ceil(cert_day / MONTH_DAYS)
        certified = k >= cert_month[:, None]
        self.rate_activity = (
            self.rate_activity_latent
            * np.where(no_pipeline, self.no_pipeline_factor[:, None], 1.0)
            * np.where(certified, CERT_ENABLED_FACTOR, 1.0)
        )

    def ids(self, prefix: str, count: int) -> list[str]:
        """The next ``count`` ids with ``prefix``, numbered on from earlier blocks."""
        return _ids(prefix, count, ID_DIGITS[prefix], self.id_start.get(prefix, 0))

    def to_time(self, days: np.ndarray) -> np.ndarray:
        """Days after ``first`` -> datetime64[s], truncated so nothing reaches the end."""
        seconds = np.floor(np.asarray(days, dtype=float) * 86400.0).astype("int64")
        return np.datetime64(self.first.to_datetime64(), "s") + seconds.astype("timedelta64[s]")

    def to_time_or_null(self, days: np.ndarray) -> pd.Series:
        """Like :meth:`to_time`, with NaN days -> NaT."""
        days = np.asarray(days, dtype=float)
        return pd.Series(self.to_time(np.nan_to_num(days))).where(~np.isnan(days))

    def monthly_events(self, rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Draw Poisson counts per partner-month and uniform times inside each month.

        Returns:
            (partner index, day after ``first``) per event, in partner then month order.
        """
        counts = self.rng.poisson(rate * self.exposure)
        flat = counts.ravel()
        cell = np.repeat(np.arange(flat.size), flat)
        pidx, midx = np.divmod(cell, self.months)
        u = self.rng.random(cell.size)
        day = self.signed_days[pidx] + (midx + u * self.exposure[pidx, midx]) * MONTH_DAYS
        return pidx, day


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
    return pd.DataFrame(
        {
            "partner_id": p.ids("P", n),
            "partner_name": _company_names(rng, n),
            "signed_at": p.to_time(p.signed_days),
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
    pidx, day = p.monthly_events(p.rate_activity)
    rng = p.rng
    kind = rng.choice(len(ACTIVITY_TYPES), pidx.size, p=ACTIVITY_P)
    hours = np.exp(2.6 - 0.45 * p.engagement[pidx] + rng.normal(0, 0.7, pidx.size))
    hours = np.round(hours, 1)
    # no response time for events, and some not recorded
    hours[(rng.random(pidx.size) < 0.15) | (kind == ACTIVITY_TYPES.index("joint_event"))] = np.nan
    order = np.lexsort((day, pidx))
    return pd.DataFrame(
        {
            "activity_id": p.ids("A", pidx.size),
            "partner_id": ids[pidx[order]],
            "occurred_at": p.to_time(day[order]),
            "activity_type": np.array(ACTIVITY_TYPES, dtype=object)[kind[order]],
            "response_hours": hours[order],
        }
    )


def _portal(p: _Program, ids: np.ndarray) -> pd.DataFrame:
    pidx, day = p.monthly_events(p.rate_portal)
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
    """Course enrolments: onboarding first, then a partner-specific order of courses.

    Better partners take the certifications earlier, enrol and complete faster and pass more often.
    """
    rng = p.rng
    n = p.n
    n_courses = np.clip(2 + rng.poisson(np.exp(0.6 + 0.3 * p.engagement)), 1, len(COURSES))
    is_cert_course = np.array([c.startswith("CERT") for c in COURSES])
    keys = rng.random((n, len(COURSES) - 1))
    keys[:, is_cert_course[1:]] += 0.7 - 0.35 * p.quality[:, None]
    course_order = np.concatenate([np.zeros((n, 1), int), 1 + np.argsort(keys, axis=1)], axis=1)
    pidx, within = np.nonzero(np.arange(len(COURSES))[None, :] < n_courses[:, None])
    course_idx = course_order[pidx, within]
    cert = is_cert_course[course_idx]
    speed = np.exp(0.35 * p.quality[pidx] + 0.25 * p.engagement[pidx])
    gaps = rng.exponential(1.0, pidx.size) * np.where(within == 0, 6.0, 18.0) / speed
    elapsed = np.cumsum(gaps)
    starts = np.cumsum(n_courses) - n_courses
    elapsed -= np.repeat(elapsed[starts] - gaps[starts], n_courses)
    enrolled = p.signed_days[pidx] + elapsed
    complete_p = _sigmoid(0.6 + 0.9 * p.quality[pidx] + 0.3 * p.engagement[pidx] - 0.8 * cert)
    duration = rng.gamma(2.0, 9.0, pidx.size) * np.where(cert, 1.6, 1.0) / speed
    completed = enrolled + duration
    quiet_day = p.quiet_day[pidx]
    completes = (rng.random(pidx.size) < complete_p) & (completed < quiet_day)
    _certified_with_enablement(p, pidx, within, cert, np.where(completes, completed, np.inf))
    completed = np.where(completes & (completed < p.end_day), completed, np.nan)
    keep = (enrolled < p.end_day) & (enrolled < quiet_day + 15)
    courses = np.array(COURSES, dtype=object)[course_idx[keep]]
    return pd.DataFrame(
        {
            "partner_id": ids[pidx[keep]],
            "course_id": courses,
            "enrolled_at": p.to_time(enrolled[keep]),
            "completed_at": p.to_time_or_null(completed[keep]),
            "is_certification": cert[keep],
        }
    )


def _certified_with_enablement(
    p: _Program, pidx: np.ndarray, within: np.ndarray, cert: np.ndarray, completed: np.ndarray
) -> None:
    """Store ``p.cert_day``, each partner's first certification that followed enablement.

    Days after signing of the first certification completed after at least
    ``CERT_ENABLEMENT_COURSES`` completed enablement courses (inf if none).

    Args:
        p: The program.
        pidx: Partner index per enrolment.
        within: Position of the enrolment in its partner's course list (< len(COURSES)).
        cert: Whether the course is a certification.
        completed: Completion day (days after ``first``; inf if never completed).
    """
    slots = len(COURSES)
    done = np.full((p.n, slots), np.inf)
    done[pidx, within] = completed - p.signed_days[pidx]
    is_cert = np.zeros((p.n, slots), bool)
    is_cert[pidx, within] = cert
    enablement = np.where(is_cert, np.inf, done)  # (n, slots)
    before = (enablement[:, None, :] < done[:, :, None]).sum(axis=2)  # per course slot
    qualifies = is_cert & np.isfinite(done) & (before >= CERT_ENABLEMENT_COURSES)
    p.cert_day = np.where(qualifies, done, np.inf).min(axis=1)


def _first_created(p: _Program, pidx: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Per partner, days after signing of its first event in ``(pidx, day)`` (inf if none)."""
    first = np.full(p.n, np.inf)
    np.minimum.at(first, pidx, day - p.signed_days[pidx])
    return first


def _commitments(p: _Program, ids: np.ndarray) -> pd.DataFrame:
    rng = p.rng
    n = p.n
    counts = rng.poisson(1.5 + 1.2 * (p.tier_eff + 0.35), n)
    pidx = np.repeat(np.arange(n), counts)
    committed = np.floor(p.signed_days[pidx] + rng.uniform(5, 300, pidx.size))
    due = committed + rng.choice([30, 45, 60, 90], pidx.size)
    keep_p = _sigmoid(0.4 + 1.1 * p.engagement[pidx])
    quiet_day = p.quiet_day[pidx]
    on_time = rng.random(pidx.size) < keep_p
    late = ~on_time & (rng.random(pidx.size) < 0.5)
    delivered = np.where(
        on_time,
        committed + (due - committed) * rng.uniform(0.4, 1.0, pidx.size),
        np.where(late, due + rng.exponential(20, pidx.size), np.nan),
    )
    delivered = np.where((delivered < quiet_day) & (delivered < p.end_day), delivered, np.nan)
    keep = (committed < p.end_day) & (committed < quiet_day)
    pidx, committed, due, delivered = pidx[keep], committed[keep], due[keep], delivered[keep]
    order = np.lexsort((committed, pidx))
    pidx, committed, due, delivered = pidx[order], committed[order], due[order], delivered[order]
    return pd.DataFrame(
        {
            "commitment_id": p.ids("M", pidx.size),
            "partner_id": ids[pidx],
            "committed_at": p.to_time(committed),
            # a planned date: may lie after the data end
            "due_at": p.to_time(due),
            "delivered_at": p.to_time_or_null(delivered),
        }
    )


def _leads(p: _Program, ids: np.ndarray) -> pd.DataFrame:
    rng = p.rng
    pidx, day = p.monthly_events(p.rate_leads)
    qual = rng.random(pidx.size) < _sigmoid(-0.2 + 0.9 * p.quality[pidx])
    qualified = np.where(qual, day + rng.exponential(6, pidx.size), np.nan)
    conv = qual & (rng.random(pidx.size) < _sigmoid(-0.8 + 0.8 * p.quality[pidx]))
    converted = np.where(conv, qualified + rng.exponential(25, pidx.size), np.nan)
    qualified = np.where(qualified < p.end_day, qualified, np.nan)
    converted = np.where((converted < p.end_day) & ~np.isnan(qualified), converted, np.nan)
    p.first_lead_day = _first_created(p, pidx, day)
    order = np.lexsort((day, pidx))
    return pd.DataFrame(
        {
            "lead_id": p.ids("L", pidx.size),
            "partner_id": ids[pidx[order]],
            "created_at": p.to_time(day[order]),
            "qualified_at": p.to_time_or_null(qualified[order]),
            "converted_at": p.to_time_or_null(converted[order]),
        }
    )


def _deals(p: _Program, ids: np.ndarray) -> pd.DataFrame:
    rng = p.rng
    pidx, day = p.monthly_events(p.rate_deals)
    closed = day + rng.gamma(CYCLE_SHAPE, p.cycle_scale[pidx])
    won = rng.random(pidx.size) < p.win_p[pidx]
    amount = np.round(np.exp(rng.normal(p.size_mu[pidx], DEAL_SIZE_SIGMA)), 2)
    p.first_deal_day = _first_created(p, pidx, day)
    is_open = closed >= p.end_day  # would close after the data end: still open today
    status = np.where(is_open, "open", np.where(won, "won", "lost")).astype(object)
    closed = np.where(is_open, np.nan, closed)
    order = np.lexsort((day, pidx))
    return pd.DataFrame(
        {
            "deal_id": p.ids("D", pidx.size),
            "partner_id": ids[pidx[order]],
            "created_at": p.to_time(day[order]),
            "closed_at": p.to_time_or_null(closed[order]),
            "amount": amount[order],
            "status": status[order],
        }
    )


def _feedback(p: _Program, ids: np.ndarray) -> pd.DataFrame:
    """A quarterly survey; quiet partners rarely answer."""
    rng = p.rng
    quarters = p.months // 3 + 1
    n = p.n
    pidx = np.repeat(np.arange(n), quarters)
    q = np.tile(np.arange(quarters), n)
    day = p.signed_days[pidx] + (q * 3 + rng.uniform(1, 3, pidx.size)) * MONTH_DAYS
    answered = rng.random(pidx.size) < 0.45 * np.where(day >= p.quiet_day[pidx], 0.2, 1.0)
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


def _truth(p: _Program, ids: np.ndarray) -> pd.DataFrame:
    """Expected labels given the latent state, in closed form from the monthly rate model.

    Revenue: deals are created in onboarding month ``m`` at Poisson rate ``rate_deals[m]``,
    uniformly inside the month, win with ``win_p`` independently of a lognormal amount, and close
    after a gamma cycle, so E[won amount closed in (a, a + h]] = sum over months of rate x
    P(close in window) x win_p x E[amount], with P(close in window) exact (:func:`close_share`).

    Engagement: qualifying touchpoints (the label rule's activity types, leads and deals created)
    form a Poisson process with piecewise-constant monthly intensity, so a period holds at least
    one with probability ``1 - exp(-integrated rate)``, independently across periods; the label
    needs at least a share of the periods (Poisson-binomial tail). The rule is BuildConfig's
    default (30-day periods, half of them, DESIGN.md's touchpoints) with this config's horizon.

    The truth conditions on the drawn first lead or deal (``p.pipeline_day``) wherever the
    touchpoint momentum does, i.e. inside the first ``EARLY_PIPELINE_DAYS``: with the first one
    at day ``d < EARLY_PIPELINE_DAYS`` there is no lead or deal before ``d``, one at ``d`` (a
    touchpoint with the share of its kind in the touchpoint rule) and Poisson ones after it;
    with none in the window there is none before ``EARLY_PIPELINE_DAYS``. (A horizon starting
    before day 60, e.g. the day-30 snapshot, overlaps the window: treating those leads and
    deals as unconditioned Poisson draws put the truth 12 points under the realised rate for
    partners whose first lead or deal came on days 30-60, and 2.4 over for those without one.)
    Partners signed less than ``EARLY_PIPELINE_DAYS`` before the data end have their window cut
    by it (nothing after the end is drawn): their truth rows (never labelled, as the horizon
    passes the end) condition on no lead or deal in the uncut window.
    """
    cfg = p.config
    horizon = cfg.horizon_days
    rule = BuildConfig(horizon_days=horizon)
    touch = set(rule.engagement_touchpoints)
    qualifying_share = float(ACTIVITY_P[[t in touch for t in ACTIVITY_TYPES]].sum())
    activity_rate = p.rate_activity * qualifying_share
    pipeline_rate = np.zeros_like(activity_rate)  # leads and deals that are touchpoints
    if "lead" in touch:
        pipeline_rate = pipeline_rate + p.rate_leads
    if "deal" in touch:
        pipeline_rate = pipeline_rate + p.rate_deals
    # first lead or deal: none before it, inside the momentum's window (inf: none drawn)
    first = np.asarray(getattr(p, "pipeline_day", np.full(p.n, np.inf)), dtype=float)
    quiet_until = np.minimum(first, float(EARLY_PIPELINE_DAYS))
    has_first = first < EARLY_PIPELINE_DAYS
    first_month = np.minimum(np.floor(np.where(has_first, first, 0) / MONTH_DAYS), p.months - 1)
    first_month = first_month.astype(int)
    all_pipeline = (p.rate_leads + p.rate_deals)[np.arange(p.n), first_month]
    # chance that the first lead or deal is a touchpoint (its kind's share of the two rates)
    first_touch = np.divide(
        pipeline_rate[np.arange(p.n), first_month],
        all_pipeline,
        out=np.zeros(p.n),
        where=all_pipeline > 0,
    )

    def cumulative(rate: np.ndarray) -> np.ndarray:
        return np.concatenate([np.zeros((p.n, 1)), np.cumsum(rate, axis=1)], axis=1)

    cum_activity, cum_pipeline = cumulative(activity_rate), cumulative(pipeline_rate)

    def before(cum: np.ndarray, rate: np.ndarray, idx: np.ndarray, day) -> np.ndarray:
        # expected events in [0, day) after signing (days; scalar or per row), piecewise-constant
        day = np.broadcast_to(np.asarray(day, dtype=float), idx.shape)
        month = np.minimum((day // MONTH_DAYS).astype(int), p.months - 1)
        frac = day / MONTH_DAYS - month
        return cum[idx, month] + rate[idx, month] * frac

    def period_active(idx: np.ndarray, lo: float, hi: float) -> np.ndarray:
        # P(at least one touchpoint in [lo, hi)) given the first lead or deal
        acts = before(cum_activity, activity_rate, idx, hi) - before(
            cum_activity, activity_rate, idx, lo
        )
        start = np.clip(quiet_until[idx], lo, hi)  # leads and deals only after the first one
        pipes = before(cum_pipeline, pipeline_rate, idx, hi) - before(
            cum_pipeline, pipeline_rate, idx, start
        )
        at_first = has_first[idx] & (first[idx] >= lo) & (first[idx] < hi)
        miss = np.where(at_first, 1.0 - first_touch[idx], 1.0)
        return 1.0 - miss * np.exp(-(acts + pipes))

    period = rule.engagement_period_days
    n_periods = int(np.ceil(horizon / period))
    need = int(np.ceil(rule.engagement_min_share * n_periods - 1e-9))
    month_start = np.arange(p.months, dtype=float) * MONTH_DAYS
    mean_amount = np.exp(p.size_mu + DEAL_SIZE_SIGMA**2 / 2)

    frames = []
    for age in cfg.truth_ages:
        as_of_day = p.signed_days + age
        idx = np.flatnonzero(as_of_day < p.end_day)  # as_of on or before end_date
        if idx.size == 0:
            continue
        share = close_share(
            month_start[None, :], age, age + horizon, CYCLE_SHAPE, p.cycle_scale[idx, None]
        )
        expected_won = (p.rate_deals[idx] * share).sum(axis=1) * p.win_p[idx]
        true_rev = expected_won * mean_amount[idx]
        p_period = np.empty((idx.size, n_periods))
        for j in range(n_periods):
            lo, hi = age + j * period, age + min((j + 1) * period, horizon)
            p_period[:, j] = period_active(idx, lo, hi)
        true_eng = poisson_binomial_tail(p_period, need)
        frames.append(
            pd.DataFrame(
                {
                    "partner_id": ids[idx],
                    "age_days": np.full(idx.size, age, dtype=np.int64),
                    "as_of": p.to_time(as_of_day[idx]),
                    "horizon_days": np.full(idx.size, horizon, dtype=np.int64),
                    "true_expected_revenue": np.round(true_rev, 2),
                    "true_engagement_prob": np.round(true_eng, 6),
                }
            )
        )
    if not frames:
        return pd.DataFrame({col: [] for col in TRUTH_COLUMNS})
    return (
        pd.concat(frames, ignore_index=True)
        .sort_values(["partner_id", "age_days"], kind="stable")
        .reset_index(drop=True)
    )


def _simulate(
    config: SimulateConfig,
    n: int,
    rng: np.random.Generator,
    id_start: dict[str, int] | None = None,
) -> dict[str, pd.DataFrame]:
    """Simulate ``n`` partners of the program ``config`` describes, drawing from ``rng``.

    Args:
        config: The program's constants (its ``partners`` and ``seed`` are not used).
        n: Number of partners.
        rng: Random generator.
        id_start: Id prefix -> ids already used (ids are numbered on from there).

    Returns:
        Table name -> DataFrame (see :func:`simulate_program`).
    """
    program = _Program(config, n=n, rng=rng, id_start=id_start)
    partners = _partners(program)
    ids = partners["partner_id"].to_numpy(dtype=object)
    # pipeline and enablement first: CRM touchpoints respond to them (_Program.momentum)
    deals = _deals(program, ids)
    leads = _leads(program, ids)
    trainings = _trainings(program, ids)
    program.momentum(np.minimum(program.first_deal_day, program.first_lead_day), program.cert_day)
    return {
        "partners": partners,
        "deals": deals,
        "activities": _activities(program, ids),
        "trainings": trainings,
        "portal_events": _portal(program, ids),
        "marketing_commitments": _commitments(program, ids),
        "leads": leads,
        "feedback": _feedback(program, ids),
        "truth": _truth(program, ids),
    }


def block_sizes(partners: int) -> list[int]:
    """Partners per block: one block up to ``BLOCK_PARTNERS``, else near-equal blocks.

    ``ceil(partners / BLOCK_PARTNERS)`` blocks whose sizes differ by at most one (larger first).
    """
    count = -(-partners // BLOCK_PARTNERS)
    size, extra = divmod(partners, count)
    return [size + (b < extra) for b in range(count)]


def block_rng(seed: int, block: int) -> np.random.Generator:
    """Random generator of block ``block`` of a blocked program.

    ``SeedSequence(seed).spawn``'s child ``block``: independent streams, the same seed gives
    the same blocks.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(block,)))


def simulate_blocks(config: SimulateConfig) -> Iterator[dict[str, pd.DataFrame]]:
    """Simulate a program block by block (see :func:`block_sizes`), yielding each block's tables.

    A program of at most ``BLOCK_PARTNERS`` partners is one block drawn from ``config.seed``.
    A larger one is a sequence of independent sub-programs with the same constants (date span,
    horizon, event scale), block ``b`` drawn from :func:`block_rng` ``(seed, b)``; partners are
    independent given the constants (nothing in a partner's draws or its truth depends on other
    partners or on the program's size), so the blocked program is the same program in
    distribution. Ids are numbered on across blocks in the format of an unblocked program of
    the same size; partner ids follow signing order only within a block.

    Args:
        config: Size, seed, date range and event volume.

    Yields:
        Table name -> DataFrame for every contract table plus ``truth``, one block at a time.
    """
    sizes = block_sizes(config.partners)
    if len(sizes) == 1:
        yield _simulate(config, config.partners, np.random.default_rng(config.seed))
        return
    id_start = dict.fromkeys(ID_DIGITS, 0)
    for block, size in enumerate(sizes):
        tables = _simulate(config, size, block_rng(config.seed, block), id_start)
        for table, (_, prefix) in ID_COLUMNS.items():
            id_start[prefix] += len(tables[table])
        yield tables
        del tables  # free this block before simulating the next one


def simulate_program(config: SimulateConfig) -> dict[str, pd.DataFrame]:
    """Simulate a partner program, all in memory (``run_simulate`` writes it block by block).

    Args:
        config: Size, seed, date range and event volume.

    Returns:
        Table name -> DataFrame for every contract table plus ``truth``, the blocks of
        :func:`simulate_blocks` concatenated; the same config gives identical tables. Dates are
        naive ``datetime64[s]``, ids and text ``str``.
    """
    blocks = list(simulate_blocks(config))
    if len(blocks) == 1:
        return blocks[0]
    return {
        name: pd.concat([block[name] for block in blocks], ignore_index=True) for name in blocks[0]
    }


def _check_format(fmt: str) -> None:
    if fmt not in ("csv", "parquet"):
        raise OptionError(f"--format: expected csv or parquet, got '{fmt}'")


def write_blocks(
    blocks: Iterable[dict[str, pd.DataFrame]], out_dir: str | Path, fmt: str = "csv"
) -> tuple[dict[str, Path], dict[str, int]]:
    """Write a program block by block: one file per table, ``<name>.<fmt>``, atomically.

    Each block's tables are appended to temporaries as they come (memory: one block), renamed
    over the targets once every block is written (none are if one fails). The files read back
    as :func:`write_tables` of the concatenated blocks would write them; one block gives the
    same bytes. A file of the same table in the other format is removed.

    Args:
        blocks: Table name -> frame, per block (every block has the same tables and columns).
        out_dir: Destination folder (created).
        fmt: ``csv`` or ``parquet``.

    Returns:
        (table name -> path written, table name -> rows written).
    """
    _check_format(fmt)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, AppendedFile] = {}
    try:
        for tables in blocks:
            for name, frame in tables.items():
                if name not in files:
                    files[name] = AppendedFile(out / f"{name}.{fmt}")
                files[name].append(frame)
            tables = frame = None  # free this block before the next one is made
        for file in files.values():
            file.close()
    except BaseException:
        for file in files.values():
            with contextlib.suppress(PartnerscoreError):
                file.close()
        discard_staged([(file.tmp, file.path) for file in files.values()])
        raise
    for name in files:
        (out / f"{name}.{'parquet' if fmt == 'csv' else 'csv'}").unlink(missing_ok=True)
    publish_staged([(file.tmp, file.path) for file in files.values()])
    return (
        {name: file.path for name, file in files.items()},
        {name: file.rows for name, file in files.items()},
    )


def write_tables(
    tables: dict[str, pd.DataFrame], out_dir: str | Path, fmt: str = "csv"
) -> dict[str, Path]:
    """Write one file per table, ``<name>.<fmt>``, atomically.

    CSV dates are written as ``YYYY-MM-DD HH:MM:SS`` (missing: empty cell). A file of the same
    table in the other format is removed so the folder is never ambiguous.

    Args:
        tables: Table name -> frame.
        out_dir: Destination folder (created).
        fmt: ``csv`` or ``parquet``.

    Returns:
        Table name -> path written.
    """
    return write_blocks([tables], out_dir, fmt=fmt)[0]


def run_simulate(config: SimulateConfig, out_dir: str | Path, fmt: str = "csv") -> SimulateResult:
    """Simulate a program and write it: the ``partnerscore simulate`` job.

    Blocks (:func:`simulate_blocks`) are written as they are simulated, so memory stays about
    one block's whatever the program's size.

    Args:
        config: Simulation settings.
        out_dir: Folder for the tables.
        fmt: ``csv`` or ``parquet``.

    Returns:
        Paths, row counts (totals) and timing.
    """
    _check_format(fmt)
    started = time.perf_counter()
    paths, rows = write_blocks(simulate_blocks(config), out_dir, fmt=fmt)
    return SimulateResult(
        out_dir=Path(out_dir), paths=paths, rows=rows, seconds=time.perf_counter() - started
    )


__all__ = [
    "BLOCK_PARTNERS",
    "CONTRACT_TABLES",
    "SimulateResult",
    "block_rng",
    "block_sizes",
    "close_share",
    "poisson_binomial_tail",
    "run_simulate",
    "simulate_blocks",
    "simulate_program",
    "write_blocks",
    "write_tables",
]
