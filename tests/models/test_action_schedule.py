"""Thresholds mapped to interventions: tier and quadrant actions with owner and review date."""

import numpy as np
import pytest

from partnerscore.features.core import PartnerscoreError
from partnerscore.models import policy as pol
from partnerscore.models.config import PolicyConfig

BOOK = """
quadrants:
{quads}
tiers:
  top: {{title: Invest, detail: Big plan, owner: director, review_days: 10}}
  rest: {{title: Grow, detail: Small plan}}
provisional: {{title: Onboard, detail: First steps, owner: onboarding, review_days: 7}}
"""
QUADS = "\n".join(f"  {q}: {{label: L{i}, title: T{i}, detail: D{i}}}" for i, q in enumerate(
    pol.QUADRANTS
))  # fmt: skip


def test_tiers_and_quadrants_map_to_owned_actions_with_review_dates(tmp_path):
    path = tmp_path / "book.yaml"
    path.write_text(BOOK.format(quads=QUADS))
    cfg = PolicyConfig(playbook_path=str(path), tier_cutoffs={"top": 60.0, "rest": 0.0})
    out = pol.action_schedule(
        np.array(["top", "rest", "top", "graduated"], dtype=object),
        np.array(pol.QUADRANTS, dtype=object),
        np.array([False, False, True, False]),
        np.array([False, False, False, True]),
        np.datetime64("2026-03-01"),
        cfg,
    )
    assert out["tier_action"].tolist() == ["Invest", "Grow", "Onboard", pol.GRADUATED["title"]]
    assert out["tier_action_owner"].tolist() == [
        "director", pol.DEFAULT_OWNER, "onboarding", pol.DEFAULT_OWNER
    ]  # fmt: skip
    assert out["tier_review_date"].tolist() == [
        "2026-03-11", "2026-03-31", "2026-03-08", "2026-03-31"
    ]  # fmt: skip
    # quadrants: default owner and 30 days unless the playbook says otherwise
    assert out["intervention_owner"].tolist()[:2] == [pol.DEFAULT_OWNER] * 2
    assert out["intervention_review_date"].tolist()[:2] == ["2026-03-31"] * 2
    assert out["intervention_owner"][2] == "onboarding"  # provisional keeps its own action


def test_shipped_playbook_has_an_action_for_every_default_tier():
    cfg = PolicyConfig()
    book = pol.load_playbook(cfg)
    assert set(book["tiers"]) == set(cfg.tier_cutoffs)
    for entry in [*book["tiers"].values(), *book["quadrants"].values()]:
        assert entry["owner"] and entry["review_days"] > 0


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ("  top: {title: a, detail: b}\n", "missing key 'tiers.rest'"),
        (
            "  top: {title: a, detail: b, review_days: -3}\n  rest: {title: a, detail: b}\n",
            "tiers.top: key 'review_days'",
        ),
        (
            "  top: {title: a, detail: b, owners: x}\n  rest: {title: a, detail: b}\n",
            "tiers.top: unknown key 'owners'",
        ),
    ],
)
def test_bad_tier_sections_are_one_line(tmp_path, tiers, message):
    path = tmp_path / "book.yaml"
    path.write_text(f"quadrants:\n{QUADS}\ntiers:\n{tiers}")
    cfg = PolicyConfig(playbook_path=str(path), tier_cutoffs={"top": 60.0, "rest": 0.0})
    with pytest.raises(PartnerscoreError, match=message) as err:
        pol.load_playbook(cfg)
    assert "\n" not in err.value.message
