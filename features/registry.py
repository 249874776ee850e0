"""The metric registry: every feature declared once, with what a reader needs to trust it.

A :class:`FeatureSpec` says what a feature means (description and a short readable label used in
driver sentences), where it comes from (source table), who owns it, its unit, which direction is
good, and which scorecard layer it rolls up into:

- ``strategic``: fit and profile — who the partner is and what they committed to;
- ``execution``: capability and engagement behaviour — training, touchpoints, responsiveness;
- ``results``: early performance outcomes — leads, collaboration, deals and revenue.

Builders (``partnerscore.features.builders``) compute the features of one source table each;
``tests/features/test_registry.py`` fails when a builder and the declarations disagree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

from partnerscore.features.core import FrozenConfig, stable_hash

Layer = Literal["strategic", "execution", "results"]
Direction = Literal["higher_is_better", "lower_is_better", "neutral"]
LAYERS: tuple[Layer, ...] = ("strategic", "execution", "results")
PHASE_PREFIX = "label_revenue_phase_"
"""Column prefix of the revenue phases (``label_revenue_phase_1`` ...: ``label_revenue`` per
``build.phase_days`` of the horizon)."""


class FeatureSpec(FrozenConfig):
    """Declaration of one feature.

    Attributes:
        name: Column name, ``<source>_<measure>_<window>``.
        label: Short readable name for sentences and charts.
        description: What it measures, exactly (window, numerator, denominator).
        layer: Scorecard layer the feature rolls up into.
        source: Raw table it is computed from.
        owner: Team answerable for the definition.
        unit: Unit of the value.
        direction: Which way is better for the partnership (``neutral`` when neither).
        kind: ``numeric`` or ``categorical``.
        actionable: Whether a partner manager can move it directly with an intervention
            (touchpoints, enablement, joint marketing, portal, lead programs); profile fields,
            milestones already reached, feedback and deal results are not.
        recency: Whether it is the days from the partner's latest event of a kind to as_of
            (missing when there has been none). Nobody sets such a value to some number of
            days: the only way to lower it is a new event now, which makes it 0. Scenario
            planning (``models/whatif.py``) suggests only that.
    """

    name: str
    label: str
    description: str
    layer: Layer
    source: str
    owner: str
    unit: str
    direction: Direction
    kind: Literal["numeric", "categorical"] = "numeric"
    actionable: bool = False
    recency: bool = False


ACTIONABLE_SOURCES = ("activities", "trainings", "marketing_commitments", "portal_events", "leads")
NOT_ACTIONABLE = ("leads_conversion_rate_todate",)


def _actionable(name: str, source: str) -> bool:
    """Engagement-table features a manager can move (not milestones such as days_to_first)."""
    return (
        source in ACTIONABLE_SOURCES
        and "days_to_first" not in name
        and (name not in NOT_ACTIONABLE)
    )


def _f(
    name,
    label,
    description,
    layer,
    source,
    unit,
    direction,
    kind="numeric",
    owner=None,
    recency=False,
):
    owners = {
        "partners": "partner-program",
        "activities": "channel-sales",
        "portal_events": "partner-experience",
        "trainings": "partner-enablement",
        "marketing_commitments": "channel-marketing",
        "leads": "channel-marketing",
        "deals": "channel-sales",
        "feedback": "partner-experience",
    }
    return FeatureSpec(
        name=name,
        label=label,
        description=description,
        layer=layer,
        source=source,
        owner=owner or owners[source],
        unit=unit,
        direction=direction,
        kind=kind,
        actionable=_actionable(name, source),
        recency=recency,
    )


HB, LB, NE = "higher_is_better", "lower_is_better", "neutral"

REGISTRY: tuple[FeatureSpec, ...] = (
    # --- partners: profile and assessed fit (strategic)
    _f(
        "age_days",
        "Days since signing",
        "Onboarding age: days from signed_at to as_of.",
        "strategic",
        "partners",
        "days",
        NE,
    ),
    _f(
        "tier",
        "Program tier",
        "Partner program tier at signing.",
        "strategic",
        "partners",
        "category",
        NE,
        "categorical",
    ),
    _f(
        "region",
        "Region",
        "Sales region of the partner.",
        "strategic",
        "partners",
        "category",
        NE,
        "categorical",
    ),
    _f(
        "industry",
        "Industry",
        "Main industry the partner sells into.",
        "strategic",
        "partners",
        "category",
        NE,
        "categorical",
    ),
    _f(
        "partner_type",
        "Partner type",
        "Reseller, referral, MSP or SI.",
        "strategic",
        "partners",
        "category",
        NE,
        "categorical",
    ),
    _f(
        "partners_market_alignment",
        "Market alignment",
        "Assessed market alignment at onboarding.",
        "strategic",
        "partners",
        "score 1-5",
        HB,
    ),
    _f(
        "partners_channel_reach",
        "Channel reach",
        "Assessed number of reachable customer accounts.",
        "strategic",
        "partners",
        "accounts",
        HB,
    ),
    _f(
        "partners_adoption_potential",
        "Product adoption potential",
        "Assessed potential to adopt and resell the product line.",
        "strategic",
        "partners",
        "score 1-5",
        HB,
    ),
    # --- marketing commitments: what the partner committed to (strategic) and kept (execution)
    _f(
        "marketing_commitments_count_todate",
        "Joint-marketing commitments",
        "Marketing commitments made before as_of.",
        "strategic",
        "marketing_commitments",
        "count",
        HB,
    ),
    _f(
        "marketing_adherence_rate_todate",
        "Joint-marketing adherence",
        "Share of commitments due before as_of that were delivered by their due date.",
        "execution",
        "marketing_commitments",
        "share",
        HB,
    ),
    _f(
        "marketing_commitments_90d",
        "Joint-marketing commitments, last 90 days",
        "Marketing commitments made in the 90 days before as_of.",
        "strategic",
        "marketing_commitments",
        "count",
        HB,
    ),
    _f(
        "marketing_commitments_days_since_last",
        "Days since last marketing commitment",
        "Days from the latest marketing commitment to as_of (missing if none).",
        "execution",
        "marketing_commitments",
        "days",
        LB,
        recency=True,
    ),
    # --- trainings: capability (execution)
    _f(
        "trainings_enrolled_todate",
        "Courses enrolled",
        "Courses enrolled in before as_of.",
        "execution",
        "trainings",
        "count",
        HB,
    ),
    _f(
        "trainings_completion_rate_todate",
        "Training completion rate",
        "Courses completed before as_of / courses enrolled before as_of.",
        "execution",
        "trainings",
        "share",
        HB,
    ),
    _f(
        "trainings_certifications_todate",
        "Certifications earned",
        "Certification courses completed before as_of.",
        "execution",
        "trainings",
        "count",
        HB,
    ),
    _f(
        "trainings_days_to_first_completion",
        "Days to first completed course",
        "Onboarding completion time: days from signing to the first completed course "
        "(missing if none completed before as_of).",
        "execution",
        "trainings",
        "days",
        LB,
    ),
    _f(
        "trainings_days_to_first_certification",
        "Days to first certification",
        "Days from signing to the first completed certification (missing if none yet).",
        "execution",
        "trainings",
        "days",
        LB,
    ),
    _f(
        "trainings_completed_90d",
        "Courses completed, last 90 days",
        "Courses completed in the 90 days before as_of.",
        "execution",
        "trainings",
        "count",
        HB,
    ),
    _f(
        "trainings_days_since_last_completion",
        "Days since last completed course",
        "Days from the latest course completion to as_of (missing if none).",
        "execution",
        "trainings",
        "days",
        LB,
        recency=True,
    ),
    # --- activities: engagement behaviour (execution) and collaboration (results)
    _f(
        "activities_touchpoints_per30d_todate",
        "Touchpoints per month",
        "CRM activities before as_of per 30 days since signing.",
        "execution",
        "activities",
        "rate/30d",
        HB,
    ),
    _f(
        "activities_touchpoints_30d",
        "Touchpoints, last 30 days",
        "CRM activities in the 30 days before as_of.",
        "execution",
        "activities",
        "count",
        HB,
    ),
    _f(
        "activities_trend_30d_vs_todate",
        "Recent vs early activity",
        "Last-30-day activity rate divided by the to-date rate (1 = steady, <1 = slowing; "
        "missing without activity).",
        "execution",
        "activities",
        "ratio",
        HB,
    ),
    _f(
        "activities_days_since_last",
        "Days since last touchpoint",
        "Days from the latest CRM activity to as_of (missing if none).",
        "execution",
        "activities",
        "days",
        LB,
        recency=True,
    ),
    _f(
        "activities_days_to_first",
        "Days to first touchpoint",
        "Days from signing to the first CRM activity (missing if none yet).",
        "execution",
        "activities",
        "days",
        LB,
    ),
    _f(
        "activities_response_hours_median_todate",
        "Response time",
        "Median response time in hours of activities whose response came before as_of "
        "(occurred_at + response_hours < as_of; missing if none).",
        "execution",
        "activities",
        "hours",
        LB,
    ),
    _f(
        "activities_collaborations_todate",
        "Joint selling activities",
        "Co-selling activities and joint events before as_of.",
        "results",
        "activities",
        "count",
        HB,
    ),
    _f(
        "activities_touchpoints_90d",
        "Touchpoints, last 90 days",
        "CRM activities in the 90 days before as_of.",
        "execution",
        "activities",
        "count",
        HB,
    ),
    _f(
        "activities_gap_mean_days_todate",
        "Days between touchpoints",
        "Mean days between consecutive CRM activities before as_of: (last - first) / (n - 1) "
        "(missing with fewer than two).",
        "execution",
        "activities",
        "days",
        LB,
    ),
    _f(
        "activities_active_periods_share_todate",
        "Months with a touchpoint",
        "Share of the 30-day periods since signing (the current one included) with at least one "
        "CRM activity before as_of.",
        "execution",
        "activities",
        "share",
        HB,
    ),
    _f(
        "activities_touchpoints_trend_90d",
        "Touchpoint trend, last 90 days",
        "(b - a) / (b + a) of the CRM activities a in the first and b in the second half of the "
        "last min(90, age) days before as_of: -1 = all early, 1 = all recent (missing if none).",
        "execution",
        "activities",
        "balance -1..1",
        HB,
    ),
    # --- portal: engagement behaviour (execution)
    _f(
        "portal_events_per30d_todate",
        "Portal use per month",
        "Partner-portal events before as_of per 30 days since signing.",
        "execution",
        "portal_events",
        "rate/30d",
        HB,
    ),
    _f(
        "portal_events_30d",
        "Portal events, last 30 days",
        "Partner-portal events in the 30 days before as_of.",
        "execution",
        "portal_events",
        "count",
        HB,
    ),
    _f(
        "portal_events_90d",
        "Portal events, last 90 days",
        "Partner-portal events in the 90 days before as_of.",
        "execution",
        "portal_events",
        "count",
        HB,
    ),
    _f(
        "portal_events_days_since_last",
        "Days since last portal visit",
        "Days from the latest partner-portal event to as_of (missing if none).",
        "execution",
        "portal_events",
        "days",
        LB,
        recency=True,
    ),
    _f(
        "portal_events_active_periods_share_todate",
        "Months with portal use",
        "Share of the 30-day periods since signing (the current one included) with at least one "
        "partner-portal event before as_of.",
        "execution",
        "portal_events",
        "share",
        HB,
    ),
    _f(
        "portal_events_trend_90d",
        "Portal use trend, last 90 days",
        "(b - a) / (b + a) of the partner-portal events a in the first and b in the second half "
        "of the last min(90, age) days before as_of: -1 = all early, 1 = all recent (missing if "
        "none).",
        "execution",
        "portal_events",
        "balance -1..1",
        HB,
    ),
    # --- feedback: qualitative (execution)
    _f(
        "feedback_score_mean_todate",
        "Satisfaction score",
        "Mean feedback score before as_of.",
        "execution",
        "feedback",
        "score 1-5",
        HB,
    ),
    _f(
        "feedback_count_todate",
        "Feedback responses",
        "Feedback responses before as_of.",
        "execution",
        "feedback",
        "count",
        HB,
    ),
    _f(
        "feedback_score_last_todate",
        "Latest satisfaction score",
        "Score of the latest scored feedback before as_of (missing if none).",
        "execution",
        "feedback",
        "score 1-5",
        HB,
    ),
    _f(
        "feedback_days_since_last",
        "Days since last feedback",
        "Days from the latest feedback response to as_of (missing if none).",
        "execution",
        "feedback",
        "days",
        NE,
        recency=True,
    ),
    # --- leads: early performance (results)
    _f(
        "leads_created_todate",
        "Leads registered",
        "Leads created before as_of.",
        "results",
        "leads",
        "count",
        HB,
    ),
    _f(
        "leads_qualified_todate",
        "Qualified leads",
        "Leads qualified before as_of.",
        "results",
        "leads",
        "count",
        HB,
    ),
    _f(
        "leads_qualified_30d",
        "Qualified leads, last 30 days",
        "Leads qualified in the 30 days before as_of.",
        "results",
        "leads",
        "count",
        HB,
    ),
    _f(
        "leads_conversion_rate_todate",
        "Lead conversion rate",
        "Leads converted before as_of / leads created before as_of.",
        "results",
        "leads",
        "share",
        HB,
    ),
    _f(
        "leads_days_to_first",
        "Days to first lead",
        "Days from signing to the first lead (missing if none yet).",
        "results",
        "leads",
        "days",
        LB,
    ),
    _f(
        "leads_created_90d",
        "Leads registered, last 90 days",
        "Leads created in the 90 days before as_of.",
        "results",
        "leads",
        "count",
        HB,
    ),
    _f(
        "leads_days_since_last",
        "Days since last lead",
        "Days from the latest lead created to as_of (missing if none).",
        "results",
        "leads",
        "days",
        LB,
        recency=True,
    ),
    # --- deals: early performance (results)
    _f(
        "deals_created_todate",
        "Deals registered",
        "Deals created before as_of.",
        "results",
        "deals",
        "count",
        HB,
    ),
    _f(
        "deals_won_todate",
        "Deals won",
        "Deals won and closed before as_of.",
        "results",
        "deals",
        "count",
        HB,
    ),
    _f(
        "deals_won_amount_todate",
        "Revenue won to date",
        "Sum of amounts of deals won and closed before as_of.",
        "results",
        "deals",
        "USD",
        HB,
    ),
    _f(
        "deals_win_rate_todate",
        "Win rate",
        "Won / (won + lost) among deals closed before as_of (missing if none closed).",
        "results",
        "deals",
        "share",
        HB,
    ),
    _f(
        "deals_avg_won_size_todate",
        "Average won deal size",
        "Mean amount of deals won before as_of (missing if none).",
        "results",
        "deals",
        "USD",
        HB,
    ),
    _f(
        "deals_velocity_days_todate",
        "Deal cycle time",
        "Median days from creation to close of deals closed (won or lost) before as_of "
        "(missing if none closed).",
        "results",
        "deals",
        "days",
        LB,
    ),
    _f(
        "deals_open_pipeline_amount",
        "Open pipeline",
        "Amount of deals created before as_of and not closed before as_of.",
        "results",
        "deals",
        "USD",
        HB,
    ),
    _f(
        "deals_days_to_first",
        "Days to first deal",
        "Days from signing to the first deal registered (missing if none yet).",
        "results",
        "deals",
        "days",
        LB,
    ),
    _f(
        "deals_days_to_first_won",
        "Days to first won deal",
        "Days from signing to the close of the first won deal (missing if none yet).",
        "results",
        "deals",
        "days",
        LB,
    ),
    _f(
        "deals_has_won_todate",
        "First deal won (1 = yes)",
        "1 if at least one deal was won and closed before as_of, else 0.",
        "results",
        "deals",
        "flag",
        HB,
    ),
    _f(
        "deals_created_90d",
        "Deals registered, last 90 days",
        "Deals created in the 90 days before as_of.",
        "results",
        "deals",
        "count",
        HB,
    ),
    _f(
        "deals_active_periods_share_todate",
        "Months with a deal registered",
        "Share of the 30-day periods since signing (the current one included) with at least one "
        "deal created before as_of.",
        "results",
        "deals",
        "share",
        HB,
    ),
    _f(
        "deals_days_since_last_won",
        "Days since last won deal",
        "Days from the close of the latest deal won before as_of to as_of (missing if none).",
        "results",
        "deals",
        "days",
        LB,
        recency=True,
    ),
    _f(
        "deals_won_30d",
        "Deals won, last 30 days",
        "Deals won and closed in the 30 days before as_of.",
        "results",
        "deals",
        "count",
        HB,
    ),
    _f(
        "deals_won_90d",
        "Deals won, last 90 days",
        "Deals won and closed in the 90 days before as_of.",
        "results",
        "deals",
        "count",
        HB,
    ),
    _f(
        "deals_won_amount_30d",
        "Revenue won, last 30 days",
        "Sum of amounts of deals won and closed in the 30 days before as_of.",
        "results",
        "deals",
        "USD",
        HB,
    ),
    _f(
        "deals_won_amount_90d",
        "Revenue won, last 90 days",
        "Sum of amounts of deals won and closed in the 90 days before as_of.",
        "results",
        "deals",
        "USD",
        HB,
    ),
    _f(
        "deals_first_won_amount",
        "First won deal size",
        "Amount of the first deal won before as_of (missing if none).",
        "results",
        "deals",
        "USD",
        HB,
    ),
    _f(
        "deals_won_gap_median_days_todate",
        "Days between won deals",
        "Median days between the closes of consecutive deals won before as_of (missing with fewer "
        "than two).",
        "results",
        "deals",
        "days",
        LB,
    ),
    _f(
        "deals_won_amount_trend_90d",
        "Won revenue trend, last 90 days",
        "(b - a) / (b + a) of the won deal amounts a in the first and b in the second half of the "
        "last min(90, age) days before as_of: -1 = all early, 1 = all recent (missing if none).",
        "results",
        "deals",
        "balance -1..1",
        HB,
    ),
)

_BY_NAME = {spec.name: spec for spec in REGISTRY}


def feature_specs(available_tables: Iterable[str] | None = None) -> list[FeatureSpec]:
    """Features computable from the given tables, in registry order.

    Args:
        available_tables: Names of the raw tables present (None: all tables).

    Returns:
        The declarations whose source table is available.
    """
    if available_tables is None:
        return list(REGISTRY)
    present = set(available_tables)
    return [spec for spec in REGISTRY if spec.source in present]


UNIT_RANGES: dict[str, tuple[float, float]] = {
    "count": (0.0, math.inf),
    "days": (0.0, math.inf),
    "hours": (0.0, math.inf),
    "USD": (0.0, math.inf),
    "accounts": (0.0, math.inf),
    "rate/30d": (0.0, math.inf),
    "ratio": (0.0, math.inf),
    "share": (0.0, 1.0),
    "flag": (0.0, 1.0),
    "score 1-5": (1.0, 5.0),
    "balance -1..1": (-1.0, 1.0),
}
"""The values a numeric feature of each unit can take (inclusive), as the builders make them.

A feature table built elsewhere (``score --features``, ``whatif --set``) with a value outside
its unit's range is wrong (a share given as a percentage, a count with its sign flipped) and is
refused rather than scored; the builders' property tests check that they stay inside."""


def value_range(spec: FeatureSpec) -> tuple[float, float] | None:
    """The inclusive range of a numeric feature's values (None: a unit with no declared range)."""
    return UNIT_RANGES.get(spec.unit) if spec.kind == "numeric" else None


def get_spec(name: str) -> FeatureSpec | None:
    """The declaration of a feature, or None for an unknown name."""
    return _BY_NAME.get(name)


def is_recency(spec: FeatureSpec) -> bool:
    """Whether a declaration is a recency, days since the latest event (``spec.recency``).

    A model pickled before the attribute existed holds declarations without it: the current
    registry's declaration of the same name answers for those.
    """
    declared = getattr(spec, "recency", None)
    if declared is None:
        current = get_spec(spec.name)
        return current is not None and current.recency
    return bool(declared)


def registry_version() -> str:
    """Hash of every declaration: changes whenever a feature is added, removed or redefined."""
    return stable_hash([spec.model_dump() for spec in REGISTRY])


def data_dictionary(fmt: str = "text") -> str:
    """The data dictionary of every feature.

    Args:
        fmt: ``text`` (aligned columns) or ``markdown`` (a table).

    Returns:
        The rendered dictionary.

    Raises:
        ValueError: For another ``fmt``.
    """
    if fmt not in ("text", "markdown"):
        raise ValueError(f"unknown data dictionary format {fmt!r} (use 'text' or 'markdown')")
    cols = (
        "name",
        "label",
        "layer",
        "source",
        "unit",
        "direction",
        "actionable",
        "recency",
        "owner",
        "description",
    )

    def cell(spec: FeatureSpec, col: str) -> str:
        value = getattr(spec, col)
        return ("yes" if value else "no") if isinstance(value, bool) else str(value)

    rows = [[cell(spec, c) for c in cols] for spec in REGISTRY]
    if fmt == "markdown":
        lines = [
            f"# partnerscore data dictionary (registry {registry_version()})",
            "",
            "| " + " | ".join(cols) + " |",
            "|" + "|".join("---" for _ in cols) + "|",
        ]
        for row in rows:
            cells = [cell.replace("|", "\\|") for cell in row]
            cells[0] = f"`{cells[0]}`"
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols[:-1])]
    header = "  ".join(c.ljust(w) for c, w in zip(cols[:-1], widths, strict=True)) + "  description"
    lines = [f"registry {registry_version()}: {len(REGISTRY)} features", header]
    for row in rows:
        lines.append(
            "  ".join(v.ljust(w) for v, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        )
    return "\n".join(lines)
