"""Incentives tied to milestones: evaluated on the score history, awarded once."""

import json
import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.features.core import PartnerscoreError, read_frame
from partnerscore.models.milestones import (
    DEFAULT_MILESTONES,
    Condition,
    IncentivesConfig,
    Milestone,
    condition_holds,
    first_achievements,
)
from partnerscore.serving.cli import main
from partnerscore.serving.incentives import INCENTIVE_COLUMNS, run_incentives
from partnerscore.serving.ledger import DecisionLedger
from partnerscore.serving.score import run_score

DATES = [pd.Timestamp(d).date() for d in ("2026-01-01", "2026-03-01")]


def test_first_achievements_by_hand():
    history = pd.DataFrame(
        {
            "partner_id": ["a", "a", "b", "b", "c", "c"],
            "as_of": pd.to_datetime(["2026-01-01", "2026-02-01"] * 3),
            "age_days": [60, 91, 100, 131, 10, 41],
            "score_tier": ["A", "A", "A", "B", "C", None],
            "trainings_certifications_todate": [0, 1, 2, 2, None, 1],
            "deals_won_todate": [1, 1, 0, 0, 3, 3],
        }
    )
    got = first_achievements(history, IncentivesConfig())
    pairs = set(zip(got["partner_id"], got["milestone"], got["achieved_as_of"], strict=True))
    assert pairs == {
        ("a", "tier_a_within_90_days", pd.Timestamp("2026-01-01")),  # b was A only at day 100
        ("a", "first_certification_and_won_deal", pd.Timestamp("2026-02-01")),
        ("c", "first_certification_and_won_deal", pd.Timestamp("2026-02-01")),
    }
    # missing values never satisfy a condition
    assert not condition_holds(history, DEFAULT_MILESTONES[0].conditions[0])[5]


def slow_awards(frames, config):
    """Obviously-correct twin: every (partner, milestone) some scored row satisfies."""
    out = set()
    for frame in frames:
        for rec in frame.to_dict("records"):
            for m in config.milestones:
                if m.within_days is not None and not rec["age_days"] <= m.within_days:
                    continue
                ok = True
                for c in m.conditions:
                    v = rec.get(c.column)
                    if v is None or (isinstance(v, float) and v != v):
                        ok = False
                        continue
                    if isinstance(c.value, str):
                        ok &= {"==": str(v) == c.value, "!=": str(v) != c.value}[c.op]
                    else:
                        ok &= eval(f"{float(v)!r} {c.op} {float(c.value)!r}")  # noqa: S307
                if ok:
                    out.add((str(rec["partner_id"]), m.name))
    return out


def test_incentives_are_awarded_once(raw_dir, store_config, tmp_path):
    cfg = store_config
    run_score(raw_dir, DATES[0], "champion", tmp_path / "s0.parquet", cfg)
    first = run_incentives(cfg, DATES[0], tmp_path / "i0.csv")
    again = run_incentives(cfg, DATES[0], tmp_path / "i0b.csv")
    a0 = read_frame(tmp_path / "i0.csv", text=lambda c: c == "partner_id")
    assert list(a0.columns) == list(INCENTIVE_COLUMNS)
    assert first.awarded == len(a0) > 0 and first.newly_recorded == len(a0)
    # idempotent: the same date lists the same awards and records nothing new
    assert again.newly_recorded == 0
    assert (tmp_path / "i0.csv").read_bytes() == (tmp_path / "i0b.csv").read_bytes()

    run_score(raw_dir, DATES[1], "champion", tmp_path / "s1.parquet", cfg)
    second = run_incentives(cfg, DATES[1], tmp_path / "i1.csv")
    a1 = read_frame(tmp_path / "i1.csv", text=lambda c: c == "partner_id")
    pairs0 = set(zip(a0["partner_id"], a0["milestone"], strict=True))
    pairs1 = set(zip(a1["partner_id"], a1["milestone"], strict=True))
    assert not pairs0 & pairs1  # never re-awarded
    assert second.already_awarded == len(a0)
    frames = [pd.read_parquet(tmp_path / f"s{i}.parquet") for i in range(2)]
    assert pairs0 == slow_awards(frames[:1], cfg.incentives)
    assert pairs0 | pairs1 == slow_awards(frames, cfg.incentives)
    awards = DecisionLedger(cfg.paths.history_database()).read_awards()
    assert not awards.duplicated(["partner_id", "milestone"]).any()
    assert len(awards) == len(pairs0 | pairs1)


def test_incentives_cli_errors(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"paths": {"data_dir": str(tmp_path / "data")}}))
    code = main(["incentives", "--as-of", "2026-01-01", "--out", str(tmp_path / "i.csv"),
                 "--config", str(cfg)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no scored history" in err and "\n" not in err
    code = main(["incentives", "--as-of", "2026-13-01", "--config", str(cfg)])
    assert code == 2 and "--as-of" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"incentives": {"milestones": [{"name": "x", "incentive": "y"}]}}))
    code = main(["incentives", "--as-of", "2026-01-01", "--config", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and "incentives.milestones.0.conditions" in err


def test_milestone_on_an_unrecorded_column_is_one_line():
    cfg = IncentivesConfig.model_validate(
        {
            "milestones": [
                {"name": "m", "incentive": "x", "conditions": [{"column": "nope", "value": 1}]}
            ]
        }
    )
    history = pd.DataFrame({"partner_id": ["a"], "as_of": [pd.Timestamp("2026-01-01")]})
    with pytest.raises(PartnerscoreError, match="'m': column 'nope' is not recorded"):
        first_achievements(history, cfg)


def reference_holds(value, condition: Condition) -> bool:
    """One value against one condition: missing (or not a finite number) never satisfies."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if isinstance(condition.value, str):
        a, b = str(value), condition.value
    else:
        try:
            a, b = float(value), float(condition.value)
        except (TypeError, ValueError):
            return False
        if not math.isfinite(a):
            return False
    return {
        ">=": a >= b, ">": a > b, "<=": a <= b, "<": a < b, "==": a == b, "!=": a != b
    }[condition.op]  # fmt: skip


def reference_achievements(rows: list[dict], config: IncentivesConfig) -> dict:
    """(partner, milestone) -> the oldest as_of whose row meets it, one partner at a time."""
    out = {}
    partners = sorted({str(r["partner_id"]) for r in rows})
    for m in config.milestones:
        for pid in partners:
            mine = [r for r in rows if str(r["partner_id"]) == pid]
            met = [
                r["as_of"]
                for r in mine
                if (m.within_days is None or r["age_days"] <= m.within_days)
                and all(reference_holds(r.get(c.column), c) for c in m.conditions)
            ]
            if met:
                out[(pid, m.name)] = (min(met), m.incentive, m.amount)
    return out


cell = st.one_of(
    st.none(),
    st.sampled_from([float("nan"), 0.0, -0.0, 1.0, 1e300, -1e300, 2.5, "A", "B", "a", "1", ""]),
    st.integers(-3, 3),
)
conditions = st.builds(
    Condition,
    column=st.sampled_from(["c1", "c2"]),
    op=st.sampled_from([">=", ">", "<=", "<", "==", "!="]),
    value=st.one_of(st.sampled_from([0, 1, 2.5, -1e300, "A", "a", "1"]), st.floats(-5, 5)),
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["p1", "p2", "10", "P1"]),
            st.integers(0, 5),
            st.one_of(st.sampled_from([float("nan"), 0.0, 90.0, 90.5]), st.floats(-10, 400)),
            cell,
            cell,
        ),
        max_size=25,
    ),
    milestones=st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 200)),
            st.lists(conditions, min_size=1, max_size=2),
            st.sampled_from([0.0, 5000.0, 0.01]),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_first_achievements_equal_the_per_partner_reference(rows, milestones):
    config = IncentivesConfig(
        milestones=tuple(
            Milestone(
                name=f"m{i}", incentive=f"i{i}", amount=amount, within_days=days, conditions=c
            )
            for i, (days, c, amount) in enumerate(milestones)
        )
    )
    history = pd.DataFrame(
        {
            "partner_id": [r[0] for r in rows],
            "as_of": pd.to_datetime([pd.Timestamp("2026-01-01") + pd.Timedelta(days=30 * r[1])
                                     for r in rows]),
            "age_days": [r[2] for r in rows],
            "c1": pd.Series([r[3] for r in rows], dtype=object),
            "c2": pd.Series([r[4] for r in rows], dtype=object),
        }
    )  # fmt: skip
    got = first_achievements(history, config)
    expected = reference_achievements(history.to_dict("records"), config)
    assert {
        (p, m): (pd.Timestamp(d), i, a)
        for p, m, i, a, d in zip(
            got["partner_id"], got["milestone"], got["incentive"], got["amount"],
            got["achieved_as_of"], strict=True,
        )
    } == expected  # fmt: skip
    assert len(got) == len(expected)
    assert list(zip(got["partner_id"], got["milestone"], strict=True)) == sorted(expected)
