import shutil

import pandas as pd
import pytest

from partnerscore.features.core import PartnerscoreError
from partnerscore.serving.cli import main
from partnerscore.serving.history import ScoreHistory
from partnerscore.serving.score import peer_percentile, rejects_path, run_score

AS_OF = pd.Timestamp("2026-03-01").date()


def test_score_job_end_to_end(raw_dir, store_config, tmp_path):
    out = tmp_path / "scores.parquet"
    result = run_score(raw_dir, AS_OF, "champion", out, store_config)
    scores = pd.read_parquet(out)
    partners = pd.read_csv(raw_dir / "partners.csv")
    in_scope = (pd.to_datetime(partners["signed_at"]) < pd.Timestamp(AS_OF)).sum()
    assert result.scored == len(scores) == in_scope
    assert result.partners_input == result.scored + result.rejected + result.out_of_scope
    assert scores["partner_id"].is_monotonic_increasing
    assert (scores["as_of"] == pd.Timestamp(AS_OF)).all()
    assert scores["config_hash"].eq(store_config.hash()).all()
    assert scores["model_version"].eq("1").all()
    assert scores["peer_percentile"].between(0, 100).all()
    assert scores["score_previous"].isna().all() and not scores["guardrail_flag"].any()
    assert pd.read_csv(rejects_path(out)).empty
    assert "scored" in result.summary()


def test_rerun_is_deterministic_and_history_idempotent(raw_dir, store_config, tmp_path):
    out = tmp_path / "scores.csv"
    run_score(raw_dir, AS_OF, "champion", out, store_config)
    first = out.read_bytes()
    run_score(raw_dir, AS_OF, "champion", out, store_config)
    assert out.read_bytes() == first
    history = ScoreHistory(store_config.paths.history_database()).read()
    assert len(history) == len(pd.read_csv(out))


def test_smoothing_and_guardrails_use_history(raw_dir, store_config, tmp_path):
    early = pd.Timestamp("2025-11-01").date()
    run_score(raw_dir, early, "champion", tmp_path / "a.parquet", store_config)
    run_score(raw_dir, AS_OF, "champion", tmp_path / "b.parquet", store_config)
    a = pd.read_parquet(tmp_path / "a.parquet").set_index("partner_id")
    b = pd.read_parquet(tmp_path / "b.parquet").set_index("partner_id")
    both = a.index.intersection(b.index)
    pd.testing.assert_series_equal(
        b.loc[both, "score_previous"], a.loc[both, "score"], check_names=False
    )
    expected = (a.loc[both, "score"] + b.loc[both, "score"]) / 2  # window 3, two scores so far
    pd.testing.assert_series_equal(b.loc[both, "score_smoothed"], expected, check_names=False)
    swing = (
        b.loc[both, "score"] - a.loc[both, "score"]
    ).abs() > store_config.policy.guardrail_threshold
    assert (b.loc[both, "guardrail_flag"] == swing).all()
    new = b.index.difference(a.index)
    assert b.loc[new, "score_previous"].isna().all()


def test_quarantined_partners_are_rejects_not_dropped(raw_dir, store_config, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    partners = pd.read_csv(raw / "partners.csv", dtype=str, keep_default_na=False)
    partners.loc[3, "signed_at"] = "someday"
    partners.to_csv(raw / "partners.csv", index=False)
    out = tmp_path / "scores.csv"
    result = run_score(raw, AS_OF, "champion", out, store_config)
    rejects = pd.read_csv(rejects_path(out))
    assert rejects["partner_id"].tolist() == [partners.loc[3, "partner_id"]]
    assert "signed_at 'someday' is not a date" in rejects["reason"].iloc[0]
    assert result.partners_input == len(partners)
    assert result.partners_input == result.scored + result.rejected + result.out_of_scope


def test_killed_write_leaves_no_partial_file(raw_dir, store_config, tmp_path, monkeypatch):
    out = tmp_path / "scores.parquet"

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(KeyboardInterrupt):
        run_score(raw_dir, AS_OF, "champion", out, store_config)
    assert list(tmp_path.glob("scores*")) == []


def test_user_errors(raw_dir, store_config, tmp_path):
    with pytest.raises(PartnerscoreError, match="no partner signed before"):
        run_score(
            raw_dir, pd.Timestamp("2000-01-01").date(), "champion", tmp_path / "s.csv", store_config
        )
    with pytest.raises(PartnerscoreError, match="cannot load model 'models:/partnerscore@nosuch'"):
        run_score(raw_dir, AS_OF, "nosuch", tmp_path / "s.csv", store_config)
    with pytest.raises(PartnerscoreError, match="unsupported file type"):
        run_score(raw_dir, AS_OF, "champion", tmp_path / "s.xlsx", store_config)


def test_score_cli(raw_dir, store_config, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(store_config.model_dump_json())
    out = tmp_path / "cli.csv"
    code = main(
        [
            "score",
            "--raw",
            str(raw_dir),
            "--as-of",
            "2026-03-01",
            "--out",
            str(out),
            "--config",
            str(cfg),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert out.exists() and "scored" in capsys.readouterr().out


def test_peer_percentile_segments_and_fallback():
    frame = pd.DataFrame(
        {
            "score": [10, 20, 30, 40, 50, 60, 70],
            "tier": ["gold"] * 5 + ["silver"] * 2,
            "partner_type": ["msp"] * 5 + ["si", "si"],
        }
    )
    pct = peer_percentile(frame)
    assert pct[:5].tolist() == [20.0, 40.0, 60.0, 80.0, 100.0]
    # silver/si has 2 partners (< 5) and silver 2 too: falls back to everyone
    assert pct[5:].tolist() == [round(6 / 7 * 100, 1), 100.0]
