"""The incentives job: partners newly eligible for a milestone's incentive, awarded once.

``partnerscore incentives --as-of DATE --out FILE`` evaluates the configured milestones
(``incentives.milestones``) on the decision ledger's history up to DATE, records every pair
(partner, milestone) met for the first time in the ``incentive_awards`` table, and writes the
awards made at DATE. Running it again for the same DATE writes the same file and awards nothing
new; a later DATE never lists a partner again for a milestone it was already awarded.

Output schema (:data:`INCENTIVE_COLUMNS`), one row per award, sorted by partner_id and milestone:
``partner_id`` (text), ``milestone``, ``incentive``, ``amount`` (dollars), ``achieved_as_of``
(the first scored batch that met it) and ``awarded_as_of`` (DATE).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from partnerscore.features.core import PartnerscoreError, frame_format, write_frame_atomic
from partnerscore.models.milestones import first_achievements
from partnerscore.serving.config import AppConfig
from partnerscore.serving.ledger import DecisionLedger, as_of_text

INCENTIVE_COLUMNS = (
    "partner_id",
    "milestone",
    "incentive",
    "amount",
    "achieved_as_of",
    "awarded_as_of",
)


@dataclass
class IncentivesResult:
    """Outcome of :func:`run_incentives`."""

    out: Path
    as_of: date
    awarded: int
    newly_recorded: int
    already_awarded: int
    partners_evaluated: int
    total_amount: float
    seconds: float

    def summary(self) -> str:
        """Counts and where the file went."""
        return "\n".join(
            [
                f"incentives as of {self.as_of}: {self.awarded:,} awards "
                f"(${self.total_amount:,.0f}) to partners newly meeting a milestone "
                f"({self.newly_recorded:,} recorded now) in {self.seconds:.1f} s",
                f"  partners with a scored history: {self.partners_evaluated:,}; "
                f"awarded in other runs (never again): {self.already_awarded:,}",
                f"  wrote {self.out}",
            ]
        )


def run_incentives(config: AppConfig, as_of: date, out: str | Path) -> IncentivesResult:
    """Award the incentives of milestones first met by ``as_of``; write the awards made then.

    Args:
        config: Milestones (``incentives``) and the history database (``paths``).
        as_of: Evaluate the score history up to this date (inclusive).
        out: Output file (.csv or .parquet).

    Returns:
        Counts and the output path.

    Raises:
        PartnerscoreError: Unsupported output type, no scored history, or a milestone testing
            a column the history does not record.
    """
    started = time.perf_counter()
    out = Path(out)
    frame_format(out)
    ledger = DecisionLedger(config.paths.history_database())
    until = pd.Timestamp(as_of) + pd.Timedelta(days=1) - pd.Timedelta(seconds=1)
    history = ledger.read_decisions(until=until)
    if history.empty:
        raise PartnerscoreError(
            f"--as-of {as_of}: no scored history up to this date in "
            f"{config.paths.history_database()} (run `partnerscore score` first)"
        )
    achieved = first_achievements(history, config.incentives)
    stamp = as_of_text([pd.Timestamp(as_of)])[0]
    achieved["achieved_as_of"] = as_of_text(achieved["achieved_as_of"])
    achieved["awarded_as_of"] = stamp
    earlier = ledger.read_awards()
    newly = ledger.record_awards(achieved)
    awards = ledger.read_awards()
    mine = awards[awards["awarded_as_of"] == stamp].copy()
    mine = mine.sort_values(["partner_id", "milestone"], kind="stable").reset_index(drop=True)
    table = pd.DataFrame(
        {
            "partner_id": mine["partner_id"].astype(str),
            "milestone": mine["milestone"].astype(str),
            "incentive": mine["incentive"].astype(str),
            "amount": mine["amount"].astype(float),
            "achieved_as_of": pd.to_datetime(mine["achieved_as_of"]),
            "awarded_as_of": pd.to_datetime(mine["awarded_as_of"]),
        },
        columns=list(INCENTIVE_COLUMNS),
    )
    write_frame_atomic(table, out)
    return IncentivesResult(
        out=out,
        as_of=as_of,
        awarded=len(table),
        newly_recorded=newly,
        already_awarded=int((earlier["awarded_as_of"] != stamp).sum()) if len(earlier) else 0,
        partners_evaluated=int(history["partner_id"].nunique()),
        total_amount=float(table["amount"].sum()),
        seconds=time.perf_counter() - started,
    )
