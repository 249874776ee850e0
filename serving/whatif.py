"""Scenario planning jobs: ``partnerscore whatif``.

- ``whatif --partner ID --as-of DATE --set feature=value ...``: :func:`run_whatif_partner`
  builds the partner's features at DATE from the raw data, sets the given values, re-scores it
  with the model and shows the predictions, score, tier and driver deltas. ``--out FILE``
  writes the driver deltas (schema :data:`DRIVER_COLUMNS`).
- ``whatif --policy FILE --scores FILE``: :func:`run_whatif_policy` re-applies the ``policy``
  section of another config file to a scores file (no model needed), prints the tier migration
  matrix, and with ``--out FILE`` writes expected revenue per segment and tier before and after
  (schema :data:`SEGMENT_COLUMNS_OUT`). Tiers here are the policy's tiers of the score, before
  any hysteresis (which needs the next batches).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd

from partnerscore.features.core import PartnerscoreError, frame_format, write_frame_atomic
from partnerscore.features.pipeline import build_scoring_frame
from partnerscore.features.validate import load_raw
from partnerscore.models import whatif as wi
from partnerscore.models.explain import format_value
from partnerscore.serving.config import AppConfig, load_config

DRIVER_COLUMNS = (
    "partner_id",
    "feature",
    "label",
    "value_before",
    "value_after",
    "revenue_effect_before",
    "revenue_effect_after",
    "revenue_effect_delta",
    "engagement_effect_before",
    "engagement_effect_after",
    "engagement_effect_delta",
)
SEGMENT_COLUMNS_OUT = wi.REVENUE_BY_SEGMENT_COLUMNS


@dataclass
class WhatIfResult:
    """Outcome of :func:`run_whatif_partner`."""

    partner_id: str
    as_of: date
    summary_rows: pd.DataFrame
    drivers: pd.DataFrame
    out: Path | None = None

    def value(self, measure: str, when: str):
        """The ``before``/``after``/``delta`` value of one measure."""
        row = self.summary_rows[self.summary_rows["measure"] == measure]
        return row[when].iat[0]

    def summary(self) -> str:
        """Before, after and change of each measure, then the largest driver changes."""
        lines = [f"what if for partner {self.partner_id} as of {self.as_of}:"]
        for rec in self.summary_rows.to_dict("records"):
            m = rec["measure"]
            if m == "pred_revenue":
                text = f"${rec['before']:,.0f} -> ${rec['after']:,.0f} ({rec['delta']:+,.0f})"
            elif m == "pred_engagement":
                text = f"{rec['before']:.1%} -> {rec['after']:.1%} ({rec['delta'] * 100:+.1f} pts)"
            elif m == "score":
                text = f"{rec['before']:.1f} -> {rec['after']:.1f} ({rec['delta']:+.1f})"
            else:
                text = f"{rec['before']} -> {rec['after']}"
            lines.append(f"  {m:<16} {text}")
        lines.append("  driver changes (expected revenue, engagement likelihood):")
        for rec in self.drivers.head(8).to_dict("records"):
            before, after = wi.value_text(rec["value_before"]), wi.value_text(rec["value_after"])
            # an unchanged feature moves through its interactions with the changed ones
            values = f"{before} -> {after}" if before != after else f"{before} (unchanged)"
            lines.append(
                f"    {rec['label']}: {values}: "
                f"{rec['revenue_effect_delta']:+,.0f} $, "
                f"{rec['engagement_effect_delta'] * 100:+.1f} pts"
            )
        if self.out is not None:
            lines.append(f"  wrote {self.out}")
        return "\n".join(lines)


def run_whatif_partner(
    config: AppConfig,
    raw_dir: str | Path,
    partner_id: str,
    as_of: date,
    assignments: list[str],
    model: str = "champion",
    out: str | Path | None = None,
    *,
    allow_local_model: bool = False,
) -> WhatIfResult:
    """Re-score one partner at ``as_of`` with some feature values changed.

    Raises:
        PartnerscoreError: Unknown partner, feature or value; no changes given.
    """
    from partnerscore.serving.model_store import refuse_missing_model
    from partnerscore.serving.score import _checked_uri, _load

    if not assignments:
        raise PartnerscoreError("whatif: give at least one --set feature=value")
    wi.split_assignments(assignments)  # malformed ones stop the run before any data is read
    if out is not None:
        frame_format(out)
    uri = _checked_uri(model, config, allow_local_model)
    refuse_missing_model(uri, config.paths.tracking_uri())  # one line, names a typo
    raw = load_raw(Path(raw_dir), write_quarantine=False, config=config.validation)
    features = build_scoring_frame(raw, pd.Timestamp(as_of))
    row = features[features["partner_id"].astype(str) == str(partner_id)]
    if row.empty:
        raise PartnerscoreError(
            f"--partner {partner_id}: not a partner signed before {as_of} in {raw_dir}"
        )
    partner_model, _ = _load(uri, config)
    changes = wi.parse_changes(
        assignments, partner_model.feature_specs, getattr(partner_model, "categories", None)
    )
    after = wi.apply_changes(row, changes)
    summary, drivers = wi.compare_scores(partner_model, row, after, config.policy)
    drivers = drivers[list(DRIVER_COLUMNS)].reset_index(drop=True)
    if out is not None:
        out = Path(out)
        shown = drivers.astype({"value_before": str, "value_after": str})
        write_frame_atomic(shown, out)
    return WhatIfResult(str(partner_id), as_of, summary, drivers, out)


@dataclass
class WhatIfPolicyResult:
    """Outcome of :func:`run_whatif_policy`."""

    matrix: pd.DataFrame
    segments: pd.DataFrame
    moves: pd.DataFrame
    out: Path | None = None
    tiers: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The migration matrix and the expected revenue per tier, before and after."""
        changed = int((self.moves["tier_before"] != self.moves["tier_after"]).sum())
        lines = [
            f"policy what-if: {changed:,} of {len(self.moves):,} partners change tier",
            "  tier migration (rows: current tier, columns: tier under the new policy):",
        ]
        for line in self.matrix.to_string().splitlines():
            lines.append(f"    {line}")
        by_tier = self.segments.groupby("tier", sort=False)[
            ["revenue_before", "revenue_after", "revenue_delta"]
        ].sum()
        lines.append("  expected revenue per tier (before -> after):")
        for tier, rec in by_tier.iterrows():
            lines.append(
                f"    {tier}: ${rec['revenue_before']:,.0f} -> ${rec['revenue_after']:,.0f} "
                f"({rec['revenue_delta']:+,.0f})"
            )
        if self.out is not None:
            lines.append(f"  wrote {self.out} (per region x partner type x tier)")
        return "\n".join(lines)


def run_whatif_policy(
    config: AppConfig, policy_file: str | Path, scores_file: str | Path, out=None
) -> WhatIfPolicyResult:
    """Re-apply another config file's ``policy`` to a scores file.

    Raises:
        PartnerscoreError: Bad policy file, scores file or output type (one line).
    """
    from partnerscore.serving.report import read_scores

    if out is not None:
        frame_format(out)
    policy = load_config(policy_file).policy
    scores = read_scores(scores_file)
    moves = wi.reapply_policy(scores, policy)
    tiers = [n for n, _ in sorted(policy.tier_cutoffs.items(), key=lambda kv: -kv[1])]
    old = [n for n, _ in sorted(config.policy.tier_cutoffs.items(), key=lambda kv: -kv[1])]
    order = list(dict.fromkeys([*old, *tiers]))
    matrix = wi.migration_matrix(moves, order)
    segments = wi.revenue_by_segment(scores, moves, order)
    if out is not None:
        out = Path(out)
        write_frame_atomic(segments[list(SEGMENT_COLUMNS_OUT)], out)
    return WhatIfPolicyResult(matrix, segments, moves, out, order)


def change_text(model_specs, path: list[tuple[str, float, float]]) -> str:
    """``Certifications earned: 0 -> 2; Leads qualified: 1 -> 4`` for an upgrade path."""
    specs = {s.name: s for s in model_specs}
    return "; ".join(
        f"{specs[name].label}: {format_value(a, specs[name])} → {format_value(b, specs[name])}"
        for name, a, b in path
    )
