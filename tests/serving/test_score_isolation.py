"""One hostile partner in a scoring batch leaves every other partner's score row unchanged.

The founding bug was one extreme value or far-future date silently changing *other* partners'
features (``tests/features/test_pit_properties.py`` proves features and labels isolated).
Here the same property is checked downstream, through validation, scoring, explanations,
anomaly flags, tiers and actions: the shared program is scored (as of a date, and at an
onboarding age) with and without one generated hostile partner (extreme amounts, dates in 1900
or 2199 or months after the data's end, contract-breaking cells, case and unicode spellings of the others' categories, repeated
rows, huge text, other partners' record ids, its rows first or last in each file), and every
other partner's score row and reject rows must be identical. Only :data:`BATCH_RELATIVE` columns may differ:
they compare a partner with the batch by design (and stay within their range).

Not covered, batch-relative by design: the table outliers (a row against its table's median
and MAD, switched off here: :data:`MONITOR`) and the case fold of a free category (the batch's
most frequent spelling: a partner with the only ``Robotics`` reads ``ROBOTICS`` once another
partner spells it so, a tie; the model reads categories in any case, so no number moves).

Runs are derandomized and use no example database (each example scores 400 partners, ~1.5 s;
raise ``max_examples`` locally for a deeper search: 40 found nothing more as of a date).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from support import costly_examples

from partnerscore.features.config import MonitorConfig

AS_OF = "2026-03-01"
HOSTILE_ID = "PX-HOSTILE"
BATCH_RELATIVE = ("peer_percentile",)
"""Score columns that compare a partner with the batch by design (``peer_percentile``: its rank
among its peers in this run, a rank: one partner's extremes move it by a rank, or move a peer
group across the 5-partner minimum)."""

MONITOR = MonitorConfig(outlier_z=1e9, outlier_z_alarm=1e9, partner_z=1.5, partner_min_history=3)
"""Low bars for the per-partner anomaly checks (a partner's rows against its own history), so
that many partners carry flags whose reasons must not move; the table outliers (a row against
its table's median and spread: batch-relative by design, see the module docstring) off."""

SETTINGS = costly_examples(6)

DATES = [
    "1900-01-01 00:00:00",
    "1900-01-01",
    "1950-06-15 12:00:00",
    "2023-01-01 00:00:00",
    "2026-02-28 23:59:59",
    "2026-03-01 00:00:00",
    "2026-06-30 23:59:59",
    "2026-11-20 10:00:00",  # months after the data's end (2026-06-30), not in the future
    "2199-12-31 23:59:59",
]
AMOUNTS = ["0", "5e-324", "1e300", "1.7976931348623157e308", "123.45", "1e15"]
BAD = ["abc", "-1", "inf", "NaN", "1e400", "2026-13-45", "today", " ", "x" * 5000]
"""Cells that break the contract (each row holding one is quarantined)."""
CATEGORY_TEXT = {
    "tier": ["registered", "REGISTERED", "Gold", "PLATINUM", "İ", "ǅ"],
    "region": ["emea", "Emea", "apac", "latam", "na", "ΣΑΣ"],
    "industry": ["SOFTWARE", "Retail", "public SECTOR", "straße", "STRASSE", "x" * 3000],
    "partner_type": ["RESELLER", "Msp", "si", "SI", "referral ", "ß"],
}


def _csv(value) -> str:
    text = str(value)
    return '"' + text.replace('"', '""') + '"'


@st.composite
def hostile_rows(draw) -> dict[str, list[list]]:
    """Rows of one hostile partner, per table (as CSV fields, the header's order)."""
    dates = st.one_of(st.sampled_from(DATES), st.sampled_from(BAD))
    amounts = st.one_of(st.sampled_from(AMOUNTS), st.sampled_from(BAD))
    # record ids: the hostile's own, or another partner's (the first rows of the shared program)
    ids = st.sampled_from(["own", "own", "taken"])

    def record_id(prefix: str, taken: str, i: int) -> str:
        return taken if draw(ids) == "taken" else f"{prefix}X{i}"

    # 2026-01-01 20:00: the newest milestone at 180 days within the data (the data ends
    # 2026-06-30 23:45)
    signed = draw(
        st.sampled_from(
            ["2024-01-01 09:00:00", "2026-01-01 20:00:00", "1900-01-01", "2199-12-31", *DATES]
        )
    )
    partner = [
        HOSTILE_ID,
        draw(st.sampled_from(["Hostile", "<b>" + "Ω" * 5000, ""])),
        signed,
        *(draw(st.sampled_from(CATEGORY_TEXT[c])) for c in CATEGORY_TEXT),
        draw(st.sampled_from(["1", "5", ""])),
        draw(st.sampled_from(["0", "1e300", ""])),
        draw(st.sampled_from(["3", ""])),
    ]
    rows: dict[str, list[list]] = {"partners": [partner]}
    n = draw(st.integers(0, 40))
    rows["deals"] = [
        [
            record_id("D", "D0000001", i),
            HOSTILE_ID,
            draw(dates),
            draw(st.sampled_from(["", *DATES])),
            draw(amounts),
            draw(st.sampled_from(["won", "lost", "open", "WON"])),
        ]
        for i in range(n)
    ]
    n = draw(st.integers(0, 40))
    rows["activities"] = [
        [
            record_id("A", "A00000001", i),
            HOSTILE_ID,
            draw(dates),
            draw(st.sampled_from(["meeting", "qbr", "co_sell", "email"])),
            draw(st.sampled_from(["", "0", "1e300"])),
        ]
        for i in range(n)
    ]
    n = draw(st.integers(0, 60))
    rows["portal_events"] = [[HOSTILE_ID, draw(dates), "login"] for _ in range(n)]
    n = draw(st.integers(0, 20))
    rows["leads"] = [
        [
            record_id("L", "L0000001", i),
            HOSTILE_ID,
            draw(dates),
            draw(st.sampled_from(["", *DATES])),
            "",
        ]
        for i in range(n)
    ]
    n = draw(st.integers(0, 10))
    rows["trainings"] = [
        [HOSTILE_ID, "C1", draw(dates), draw(st.sampled_from(["", *DATES])), "False"]
        for _ in range(n)
    ]
    n = draw(st.integers(0, 10))
    rows["marketing_commitments"] = [
        [
            record_id("M", "M0000001", i),
            HOSTILE_ID,
            draw(dates),
            draw(dates),
            draw(st.sampled_from(["", *DATES])),
        ]
        for i in range(n)
    ]
    n = draw(st.integers(0, 10))
    rows["feedback"] = [
        [HOSTILE_ID, draw(dates), draw(st.sampled_from(["1", "5", "3.5"]))] for _ in range(n)
    ]
    if draw(st.booleans()):  # repeated rows
        for table in ("deals", "portal_events", "feedback"):
            rows[table] = rows[table] + rows[table][:3]
    rows["_first"] = draw(st.booleans())  # the hostile rows first in each file, else last
    return rows


def _write(raw: Path, hostile: dict) -> None:
    """Add the hostile rows to the copied raw files (after the header, or at the end)."""
    for table, rows in hostile.items():
        if table.startswith("_") or not rows:
            continue
        path = raw / f"{table}.csv"
        header, *lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        added = [",".join(map(_csv, r)) + "\n" for r in rows]
        lines = added + lines if hostile["_first"] else lines + added
        path.write_text(header + "".join(lines), encoding="utf-8")


def _score(raw: Path, root: Path, cfg, at_age: int | None):
    """Scores and rejects of ``raw`` (files under ``root``; ``cfg``'s config hash on each row)
    as of :data:`AS_OF`, or at onboarding age ``at_age``."""
    from partnerscore.serving.score import rejects_path, run_score

    out = root / "scores.parquet"
    as_of = pd.Timestamp(AS_OF).date() if at_age is None else None
    run_score(
        raw, as_of, "champion", out, cfg, record_history=False, workers=1, at_age=at_age
    )  # fmt: skip
    return pd.read_parquet(out), pd.read_csv(rejects_path(out), dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def baseline(raw_dir, model_store, tmp_path_factory):
    """The shared program scored without a hostile partner: at_age -> (config, scores,
    rejects), computed once per mode."""
    root = tmp_path_factory.mktemp("isolation")
    paths = model_store.paths.model_copy(update={"data_dir": str(root / "data")})
    cfg = model_store.model_copy(update={"paths": paths, "monitor": MONITOR})
    done = {}

    def of(at_age: int | None):
        if at_age not in done:
            done[at_age] = (cfg, *_score(raw_dir, root / f"age{at_age}", cfg, at_age))
        return done[at_age]

    return of


def _others(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows[rows["partner_id"].astype(str) != HOSTILE_ID]
    return rows.drop(columns=[c for c in BATCH_RELATIVE if c in rows]).reset_index(drop=True)


OLD = {  # signed in 1900, one event of each volume table in 1950: older than any other row
    "partners": [
        [HOSTILE_ID, "Old", "1900-01-01", "gold", "EMEA", "software", "si", "3", "5", "3"]
    ],
    "deals": [["DX0", HOSTILE_ID, "1950-06-15 12:00:00", "", "10", "open"]],
    "activities": [["AX0", HOSTILE_ID, "1950-06-15 12:00:00", "meeting", ""]],
    "portal_events": [[HOSTILE_ID, "1950-06-15 12:00:00", "login"]],
    "leads": [["LX0", HOSTILE_ID, "1950-06-15 12:00:00", "", ""]],
    "_first": False,
}


LATE = {  # signed 2026-01-01 20:00: its 180-day milestone is the newest within the data
    "partners": [
        [HOSTILE_ID, "Late", "2026-01-01 20:00:00", "gold", "EMEA", "software", "si", "3", "5", "3"]
    ],
    "portal_events": [[HOSTILE_ID, "2026-06-15 12:00:00", "login"]],
    "_first": False,
}


FAR_LATE = {  # one login 2026-11-20: months after the program's data ends, not in the future
    "partners": [
        [HOSTILE_ID, "Far late", "2025-06-01", "gold", "EMEA", "software", "si", "3", "5", "3"]
    ],
    "portal_events": [[HOSTILE_ID, "2026-11-20 10:00:00", "login"]],
    "_first": False,
}


@pytest.mark.parametrize("at_age", [None, 180])
@SETTINGS
@given(hostile=hostile_rows())
@example(hostile=OLD)
@example(hostile=LATE)
@example(hostile=FAR_LATE)
def test_one_hostile_partner_changes_no_other_score_row(hostile, at_age, raw_dir, baseline):
    cfg, base_scores, base_rejects = baseline(at_age)
    root = Path(tempfile.mkdtemp(prefix="isolation-"))
    try:
        raw = root / "raw"
        shutil.copytree(raw_dir, raw)
        _write(raw, hostile)
        scores, rejects = _score(raw, root, cfg, at_age)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    pct = scores["peer_percentile"].to_numpy(dtype=float)
    assert ((pct >= 0) & (pct <= 100)).all()
    before, after = _others(base_scores), _others(scores)
    assert base_scores["anomaly"].sum() >= 20  # not vacuous: many partners carry flags
    assert list(after.columns) == list(before.columns)
    assert after["partner_id"].tolist() == before["partner_id"].tolist()
    differ = [c for c in before.columns if not before[c].equals(after[c])]
    assert not differ, {
        c: (before[c][before[c].ne(after[c])].head(3).tolist(),
            after[c][before[c].ne(after[c])].head(3).tolist())
        for c in differ
    }  # fmt: skip
    pd.testing.assert_frame_equal(
        rejects[rejects["partner_id"] != HOSTILE_ID].reset_index(drop=True),
        base_rejects[base_rejects["partner_id"] != HOSTILE_ID].reset_index(drop=True),
    )


SMALL = 150
"""Partners of the small program (the newest signed of the shared one, whose milestones straddle
its data end): under 200, where the late tail was not checked
(``features/validate.py::late_tail_k``)."""


@pytest.mark.parametrize("at_age", [90, 180, None])
def test_one_far_late_event_in_a_small_program_changes_no_other_score_row(
    at_age, raw_dir, model_store, tmp_path
):
    """A small program (150 partners): one partner's single login months after every other
    partner's data (2026-11-20; the data ends 2026-06-30) moved the data end, so every partner
    whose milestone fell between the two dates became "ready" and was scored on features
    counting months no data covers (the late tail was checked from 200 partners only).
    Every other partner's row, and who is scored, must not move; the summary names the tail."""
    from support import newest_partners

    from partnerscore.features.validate import load_raw

    small = tmp_path / "small"
    newest_partners(raw_dir, small, SMALL)
    paths = model_store.paths.model_copy(update={"data_dir": str(tmp_path / "data")})
    cfg = model_store.model_copy(update={"paths": paths, "monitor": MONITOR})
    base_scores, base_rejects = _score(small, tmp_path / "base", cfg, at_age)
    raw = tmp_path / "raw"
    shutil.copytree(small, raw)
    _write(raw, FAR_LATE)
    scores, rejects = _score(raw, tmp_path / "hostile", cfg, at_age)
    base = load_raw(small, write_quarantine=False)
    tail = load_raw(raw, write_quarantine=False).late_tail  # the summary's warning line
    assert base.late_tail is None and tail.partners == (HOSTILE_ID,) and tail.k == 2
    assert tail.supported == base.data_end
    assert (
        "on 1 partner(s) (PX-HOSTILE: 1 portal_events row(s) dated after 2026-06-30)"
        in (tail.note())
        and "by 2026-06-30, 143 days earlier (the 2nd newest partner's last event)" in tail.note()
    )
    before, after = _others(base_scores), _others(scores)
    assert len(before) >= 40  # not vacuous
    assert after["partner_id"].tolist() == before["partner_id"].tolist()
    pd.testing.assert_frame_equal(after, before)
    pd.testing.assert_frame_equal(
        rejects[rejects["partner_id"] != HOSTILE_ID].reset_index(drop=True),
        base_rejects[base_rejects["partner_id"] != HOSTILE_ID].reset_index(drop=True),
    )
