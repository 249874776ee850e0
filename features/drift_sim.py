"""Known drift injected into a simulated program, to test that monitoring catches it.

Each kind post-processes the simulator's tables from a start date (default: ``days`` = 180 days
before the program's end) to the end; everything before stays as simulated. The ``truth``
table keeps describing the undrifted program.

- ``leads_dry_up``: leads created on or after the start disappear for partners of one region
  (default ``NA``).
- ``inflated_deals``: amounts of deals created on or after the start are multiplied by
  ``factor`` (default 5).
- ``new_partner_type``: a share (default 60%) of the partners signed on or after the start get
  a partner type never seen before (``distributor``).
- ``absurd_deal``: the newest won deal gets an amount of $999,999,999,999 (one absurd row, an
  anomaly rather than a drift).
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from partnerscore.features.config import SimulateConfig
from partnerscore.features.core import OptionError, PartnerscoreError

DRIFT_KINDS = ("leads_dry_up", "inflated_deals", "new_partner_type", "absurd_deal")
ABSURD_AMOUNT = 999_999_999_999.0
NEW_PARTNER_TYPE = "distributor"


def drift_start(end_date: date, days: int) -> pd.Timestamp:
    """Start of the drifted period: ``days`` before the day after ``end_date``."""
    return pd.Timestamp(end_date) + pd.Timedelta(days=1) - pd.Timedelta(days=days)


def _check_kind(kind: str) -> None:
    if kind not in DRIFT_KINDS:
        raise OptionError(f"--drift: expected one of {', '.join(DRIFT_KINDS)}, got '{kind}'")


def apply_drift(
    tables: dict[str, pd.DataFrame],
    kind: str,
    start: pd.Timestamp,
    *,
    region: str = "NA",
    segment: str | None = None,
    factor: float = 5.0,
    share: float = 0.6,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """A copy of the tables with one kind of drift from ``start`` on.

    Args:
        tables: Simulated tables (not modified).
        kind: One of :data:`DRIFT_KINDS`.
        start: First drifted timestamp.
        region: Region whose leads dry up.
        segment: ``name=value`` of a partners column whose leads dry up instead of the
            region's (``partner_type=si``); applied twice, two segments dry up.
        factor: Deal-amount multiplier of ``inflated_deals``.
        share: Share of new partners that get the new type.
        seed: Random seed of ``new_partner_type``.

    Returns:
        Table name -> frame (untouched tables are the same objects).
    """
    _check_kind(kind)
    out = dict(tables)
    start = pd.Timestamp(start)
    if kind == "leads_dry_up":
        partners = tables["partners"]
        name, value = segment.split("=", 1) if segment else ("region", region)
        in_region = set(partners.loc[partners[name] == value, "partner_id"].astype(str))
        if not in_region:
            what = f"region '{region}'" if segment is None else f"segment '{segment}'"
            raise PartnerscoreError(f"--drift leads_dry_up: no partner in {what}")
        leads = tables["leads"]
        drop = leads["partner_id"].astype(str).isin(in_region) & (leads["created_at"] >= start)
        out["leads"] = leads[~drop.to_numpy()].reset_index(drop=True)
    elif kind == "inflated_deals":
        deals = tables["deals"].copy()
        late = (deals["created_at"] >= start).to_numpy()
        deals.loc[late, "amount"] = np.round(deals.loc[late, "amount"] * factor, 2)
        out["deals"] = deals
    elif kind == "new_partner_type":
        partners = tables["partners"].copy()
        new = np.flatnonzero((pd.to_datetime(partners["signed_at"]) >= start).to_numpy())
        rng = np.random.default_rng(seed)
        pick = new[rng.random(new.size) < share]
        partners["partner_type"] = partners["partner_type"].astype(object)
        partners.loc[pick, "partner_type"] = NEW_PARTNER_TYPE
        partners["partner_type"] = partners["partner_type"].astype(str)
        out["partners"] = partners
    else:  # absurd_deal
        deals = tables["deals"].copy()
        won = deals.index[(deals["status"] == "won").to_numpy() & deals["closed_at"].notna()]
        if len(won) == 0:
            raise PartnerscoreError("--drift absurd_deal: the program has no won deal")
        newest = deals.loc[won, "closed_at"].idxmax()
        deals.loc[newest, "amount"] = ABSURD_AMOUNT
        out["deals"] = deals
    return out


def tables_known_at(tables: dict[str, pd.DataFrame], at) -> dict[str, pd.DataFrame]:
    """The raw tables as an operator's export at ``at`` holds them: what happened before it.

    Rows whose event time (``features.anomaly.EVENT_TIME``) is on or after ``at`` are cut; later
    outcomes of the rows kept are not known yet (deals closed later are open, leads qualified
    or converted later are not, trainings completed and commitments delivered later are not).
    The ``truth`` table is left out. The monitoring protocol (README "Monitoring",
    ``bench/bench_monitor.py --protocol``) runs ``monitor`` on such exports month by month.
    """
    from partnerscore.features.anomaly import EVENT_TIME

    at = pd.Timestamp(at)
    later = {
        "deals": ("closed_at",),
        "leads": ("qualified_at", "converted_at"),
        "trainings": ("completed_at",),
        "marketing_commitments": ("delivered_at",),
    }
    out = {}
    for name, (_, column) in EVENT_TIME.items():
        if name not in tables:
            continue
        frame = tables[name]
        frame = frame[(pd.to_datetime(frame[column]) < at).to_numpy()].copy()
        for col in later.get(name, ()):
            unknown = (pd.to_datetime(frame[col]) >= at).to_numpy()
            frame[col] = frame[col].mask(unknown)
            if name == "deals":
                frame.loc[unknown, "status"] = "open"
        out[name] = frame.reset_index(drop=True)
    return out


def run_simulate_drift(
    config: SimulateConfig, out_dir: str | Path, kind: str, fmt: str = "csv", days: int = 180
):
    """Simulate a program, inject one kind of drift and write it (``simulate --drift``).

    Returns:
        The simulator's :class:`~partnerscore.features.simulate.SimulateResult`.
    """
    from partnerscore.features.simulate import SimulateResult, simulate_program, write_tables

    if fmt not in ("csv", "parquet"):
        raise OptionError(f"--format: expected csv or parquet, got '{fmt}'")
    _check_kind(kind)  # before the program is simulated
    started = time.perf_counter()
    tables = apply_drift(
        simulate_program(config), kind, drift_start(config.end_date, days), seed=config.seed
    )
    paths = write_tables(tables, out_dir, fmt=fmt)
    return SimulateResult(
        out_dir=Path(out_dir),
        paths=paths,
        rows={name: len(frame) for name, frame in tables.items()},
        seconds=time.perf_counter() - started,
    )
