"""A partner whose features add up to infinity is rejected by ``score``, never scored.

Two valid won deals of the largest float add up to ``inf`` in the partner's won amount.
``score --features`` stops on such a value and ``train`` names the partner; ``score`` from raw
tables scored it as the largest value the trees saw, a confident score from no real number.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from support import with_two_largest_won_deals

from partnerscore.features.core import read_frame
from partnerscore.features.validated import default_dir, run_validate_snapshot
from partnerscore.serving.cli import main
from partnerscore.serving.score import rejects_path

AS_OF = "2026-03-01"
AT_AGE = ["--at-age", "90"]
REASON = (
    "features 'deals_won_amount_todate', 'deals_avg_won_size_todate' are infinite (their raw "
    "values add past the float range)"
)


def _program_with_two_huge_deals(raw_dir: Path, dest: Path) -> str:
    """The shared program with two largest-float won deals of one partner; returns its id."""
    return with_two_largest_won_deals(raw_dir, dest, signed_before=AS_OF)


# 150: three groups of the 400 partners (each group costs a pass over every table: 7, ~60
# groups, took 35 s a run and checked nothing more)
@pytest.mark.parametrize(
    ("group_partners", "when"), [(0, ["--as-of", AS_OF]), (150, ["--as-of", AS_OF]), (150, AT_AGE)]
)
def test_a_partner_with_an_infinite_feature_is_rejected_naming_it(
    raw_dir, store_config, tmp_path, capsys, group_partners, when
):
    raw = tmp_path / "raw"
    pid = _program_with_two_huge_deals(raw_dir, raw)
    if group_partners:  # the grouped job reads a validated snapshot
        run_validate_snapshot(raw, default_dir(raw))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(store_config.model_dump_json())
    out = tmp_path / "scores.csv"
    args = ["--json", "score", "--raw", str(raw), *when, "--out", str(out)]
    args += ["--config", str(cfg), "--group-partners", str(group_partners)]
    assert main(args) == 0, capsys.readouterr().err
    counts = json.loads(capsys.readouterr().out)
    scores = read_frame(out)
    rejects = read_frame(rejects_path(out))
    assert pid not in set(scores["partner_id"])
    mine = rejects[rejects["partner_id"] == pid]
    if when == AT_AGE:  # at 90 days both deals are also in the last 90 days' won amount
        reason = REASON.replace("size_todate'", "size_todate', 'deals_won_amount_90d'")
    else:
        reason = REASON
    assert mine["reason"].tolist() == [reason]
    if when == AT_AGE:  # the partner's own milestone
        partners = pd.read_csv(raw / "partners.csv", dtype=str).set_index("partner_id")
        due = pd.Timestamp(partners.loc[pid, "signed_at"]) + pd.Timedelta(days=90)
        assert pd.Timestamp(mine["as_of"].iloc[0]) == due
    else:
        assert pd.Timestamp(mine["as_of"].iloc[0]) == pd.Timestamp(AS_OF)
    assert counts["rejected"] == len(rejects) >= 1
    assert counts["partners_input"] == counts["scored"] + counts["rejected"] + counts["not_yet"]
    assert counts["scored"] == len(scores)
