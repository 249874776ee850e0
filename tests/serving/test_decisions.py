"""Stable decisions in the scoring job: tiers from the smoothed score, recorded in the ledger."""

import numpy as np
import pandas as pd

from partnerscore.models import policy as pol
from partnerscore.serving.ledger import DecisionLedger
from partnerscore.serving.score import run_score

DATES = [pd.Timestamp(d).date() for d in ("2026-01-01", "2026-02-01", "2026-03-01")]


def test_tiers_come_from_the_smoothed_score_with_hysteresis(raw_dir, store_config, tmp_path):
    cfg = store_config
    frames = []
    for i, day in enumerate(DATES):
        run_score(raw_dir, day, "champion", tmp_path / f"s{i}.parquet", cfg)
        frames.append(pd.read_parquet(tmp_path / f"s{i}.parquet"))
    ledger = DecisionLedger(cfg.paths.history_database())
    decisions = ledger.read_decisions()
    assert len(decisions) == sum(len(f) for f in frames)
    previous: dict[str, list[tuple[float, str]]] = {}
    for frame in frames:
        scope = frame["out_of_scope"].to_numpy(bool)
        assert (frame.loc[scope, "score_tier"] == "graduated").all()
        live = frame[~scope]
        # the candidate is the tier of the smoothed score
        expected = pol.score_tier(live["score_smoothed"].to_numpy(), cfg.policy)
        assert (live["score_tier_candidate"].to_numpy() == expected).all()
        held = live["tier_held_reason"].fillna("") != ""
        assert (live.loc[~held, "score_tier"] == live.loc[~held, "score_tier_candidate"]).all()
        # every decision replays from the recorded history (the slow twin: one row at a time)
        for rec in live.itertuples():
            tier, cand, reason = pol.stable_tier(
                rec.score_smoothed,
                rec.score,
                bool(rec.guardrail_flag),
                previous.get(rec.partner_id, []),
                cfg.policy,
            )
            assert (tier, cand, reason or None) == (
                rec.score_tier,
                rec.score_tier_candidate,
                rec.tier_held_reason or None,
            )
        for rec in frame.itertuples():
            previous.setdefault(rec.partner_id, []).append((rec.score, rec.score_tier))
    last = frames[-1].set_index("partner_id")
    mine = decisions[decisions["as_of"] == pd.Timestamp(DATES[-1])].set_index("partner_id")
    assert (mine.loc[last.index, "score_tier"] == last["score_tier"]).all()
    assert (mine.loc[last.index, "maturity_band"] == last["maturity_band"]).all()
    np.testing.assert_allclose(mine.loc[last.index, "score"], last["score"])


def test_rescoring_a_batch_replaces_its_decisions(raw_dir, store_config, tmp_path):
    run_score(raw_dir, DATES[0], "champion", tmp_path / "a.csv", store_config)
    run_score(raw_dir, DATES[0], "champion", tmp_path / "a.csv", store_config)
    decisions = DecisionLedger(store_config.paths.history_database()).read_decisions()
    assert not decisions.duplicated(["partner_id", "as_of"]).any()
    assert len(decisions) == len(pd.read_csv(tmp_path / "a.csv"))
