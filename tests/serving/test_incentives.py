"""Incentives tied to milestones: evaluated on the score history, awarded once."""

import json

import pandas as pd
import pytest

from partnerscore.features.core import PartnerscoreError, read_frame
from partnerscore.models.milestones import (
    DEFAULT_MILESTONES,
    IncentivesConfig,
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
