"""Small random programs for the engine twins (``score --workers N`` against ``--workers 1``,
the Spark engine against the pandas job).

A case is a slice of the shared program's partners (any ``n`` of them, from any position)
with, maybe, one hostile partner of ``test_score_isolation.py`` (extreme amounts, dates in 1900
or 2199, contract-breaking cells, other partners' record ids, repeated rows) and maybe a
partner with no events at all, scored as of a date or at an onboarding age.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from hypothesis import strategies as st
from support import costly_examples, sibling

isolation = sibling(__file__, "test_score_isolation")
HOSTILE_ID = isolation.HOSTILE_ID
SILENT_ID = "PX-SILENT"
AS_OF = "2026-03-01"

ENGINE_SETTINGS = costly_examples(5)
"""Each example runs the real jobs twice (seconds each): few, derandomized, no shrinking."""

EXTREME = {  # a far-future deal, an absurd won amount, a $0 one and a 1900 one
    "partners": [
        [HOSTILE_ID, "Extreme", "2025-10-01", "gold", "EMEA", "software", "si", "3", "1e300", "3"]
    ],
    "deals": [
        ["DX1", HOSTILE_ID, "2199-12-31 23:59:59", "", "1e15", "open"],
        ["DX2", HOSTILE_ID, "2025-12-01", "2025-12-20", "1.7976931348623157e308", "won"],
        ["DX3", HOSTILE_ID, "2025-12-02", "2025-12-21", "0", "won"],
        ["DX4", HOSTILE_ID, "1900-01-01", "", "5e-324", "lost"],
    ],
    "portal_events": [[HOSTILE_ID, "2199-12-31 23:59:59", "login"]],
    "_first": True,
}


@st.composite
def small_programs(draw, partners: int):
    """(first partner's position, how many, hostile rows or None, a silent partner?, at_age)."""
    start = draw(st.integers(0, partners - 1))
    count = draw(st.sampled_from([1, 2, 5, 12, 30]))
    hostile = draw(st.none() | isolation.hostile_rows())
    silent = draw(st.booleans())
    at_age = draw(st.sampled_from([None, None, 90]))
    return start, count, hostile, silent, at_age


FIXED = [
    (0, 12, EXTREME, True, None),  # every extreme at once, as of a date
    (390, 30, EXTREME, True, 90),  # and at an onboarding age
    (5, 1, None, True, None),  # one partner and one with no events
]


def write_program(raw_dir: Path, dest: Path, case) -> None:
    """The case's raw CSV files in ``dest``."""
    start, count, hostile, silent, _ = case
    dest.mkdir(parents=True)
    ids = pd.read_csv(raw_dir / "partners.csv", dtype=str)["partner_id"]
    keep = set(ids.iloc[start : start + count])
    for path in raw_dir.glob("*.csv"):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame[frame["partner_id"].isin(keep)].to_csv(dest / path.name, index=False)
    if hostile:
        isolation._write(dest, hostile)
    if silent:
        row = [SILENT_ID, "Silent", "2025-11-15", "gold", "NA", "software", "si", "", "", ""]
        with open(dest / "partners.csv", "a", encoding="utf-8") as handle:
            handle.write(",".join(row) + "\n")


def as_of_of(case):
    """The case's scoring date (None at an onboarding age) and age."""
    at_age = case[4]
    return (None if at_age else pd.Timestamp(AS_OF).date()), at_age


def with_fixed(count: int):
    """The first ``count`` :data:`FIXED` cases as explicit examples of a ``case`` test."""
    from hypothesis import example

    def decorate(test):
        for case in reversed(FIXED[:count]):
            test = example(case=case)(test)
        return test

    return decorate


def outcome(job):
    """What ``job()`` returned, or its one-line error as ("error", message)."""
    from partnerscore.features.core import PartnerscoreError

    try:
        return job()
    except PartnerscoreError as error:
        return ("error", str(error))
