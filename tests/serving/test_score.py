import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from partnerscore.features.core import PartnerscoreError, read_frame
from partnerscore.features.validate import load_raw
from partnerscore.models.config import PolicyConfig
from partnerscore.models.policy import GRADUATED, QUADRANTS
from partnerscore.serving.cli import main
from partnerscore.serving.history import ScoreHistory
from partnerscore.serving.report import peer_groups
from partnerscore.serving.score import peer_percentile, rejects_path, run_score

AS_OF = pd.Timestamp("2026-03-01").date()


def test_score_job_end_to_end(raw_dir, store_config, tmp_path):
    out = tmp_path / "scores.parquet"
    result = run_score(raw_dir, AS_OF, "champion", out, store_config)
    scores = pd.read_parquet(out)
    partners = pd.read_csv(raw_dir / "partners.csv")
    in_scope = (pd.to_datetime(partners["signed_at"]) < pd.Timestamp(AS_OF)).sum()
    assert result.scored == len(scores) == in_scope
    assert result.partners_input == result.scored + result.rejected + result.not_yet
    assert scores["partner_id"].is_monotonic_increasing
    assert (scores["as_of"] == pd.Timestamp(AS_OF)).all()
    assert scores["config_hash"].eq(store_config.hash()).all()
    assert scores["model_version"].eq("1").all()
    assert scores["peer_percentile"].between(0, 100).all()
    assert scores["score_previous"].isna().all() and not scores["guardrail_flag"].any()
    # the model's horizon and phase length ride on every row, for the forecast
    assert scores["revenue_horizon_days"].eq(180).all()
    assert scores["revenue_phase_days"].eq(30).all()
    phases = scores.filter(like="pred_revenue_phase_")
    assert phases.shape[1] == 6
    np.testing.assert_allclose(phases.sum(axis=1), scores["pred_revenue"], rtol=1e-9)
    assert pd.read_csv(rejects_path(out)).empty
    assert "scored" in result.summary()


def test_a_local_model_folder_scores_with_allow_local_model(raw_dir, store_config, tmp_path):
    """The README's --allow-local-model refused every folder: relative paths were not paths,
    and the reference-profile lookup demanded a models:/ or runs:/ URI."""
    import mlflow

    mlflow.set_tracking_uri(store_config.paths.tracking_uri())
    folder = mlflow.artifacts.download_artifacts(
        "models:/partnerscore@champion", dst_path=str(tmp_path / "model")
    )
    registered = run_score(raw_dir, AS_OF, "champion", tmp_path / "a.parquet", store_config)
    with pytest.raises(PartnerscoreError, match="needs --allow-local-model"):
        run_score(raw_dir, AS_OF, folder, tmp_path / "b.parquet", store_config)
    local = run_score(
        raw_dir, AS_OF, folder, tmp_path / "b.parquet", store_config,
        allow_local_model=True, record_history=False,
    )  # fmt: skip
    assert local.scored == registered.scored
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    np.testing.assert_allclose(a["pred_revenue"], b["pred_revenue"], rtol=1e-12)
    np.testing.assert_allclose(a["pred_engagement"], b["pred_engagement"], rtol=1e-12)
    # a relative folder (with a /) is a folder, not an alias
    from partnerscore.models.model_uri import resolve_model_uri

    assert resolve_model_uri("./model", "partnerscore") == str((Path.cwd() / "model").resolve())
    assert resolve_model_uri("champion", "partnerscore") == "models:/partnerscore@champion"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_rerun_is_byte_identical_and_history_idempotent(raw_dir, store_config, tmp_path, suffix):
    out = tmp_path / f"scores{suffix}"
    run_score(raw_dir, AS_OF, "champion", out, store_config)
    first, first_rejects = out.read_bytes(), rejects_path(out).read_bytes()
    run_score(raw_dir, AS_OF, "champion", out, store_config)
    assert out.read_bytes() == first
    assert rejects_path(out).read_bytes() == first_rejects
    history = ScoreHistory(store_config.paths.history_database()).read()
    assert len(history) == len(read_frame(out))
    assert not history.duplicated(["partner_id", "as_of"]).any()


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


def test_rejects_accounting_none_silently_dropped(raw_dir, store_config, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    partners = pd.read_csv(raw / "partners.csv", dtype=str, keep_default_na=False)
    partners.loc[3, "signed_at"] = "someday"
    partners.loc[5, "partner_name"] = ""  # a required value missing
    partners.loc[7, "tier"] = "unobtainium"  # an unknown category is scored, not rejected
    partners.to_csv(raw / "partners.csv", index=False)
    deals = pd.read_csv(raw / "deals.csv", dtype=str, keep_default_na=False)
    deals.loc[0, "amount"] = "-5"  # a bad deal row: quarantined, its partner still scored
    deals.to_csv(raw / "deals.csv", index=False)
    out = tmp_path / "scores.csv"
    result = run_score(raw, AS_OF, "champion", out, store_config)
    scores = read_frame(out)
    rejects = read_frame(rejects_path(out))
    assert list(rejects.columns) == ["partner_id", "as_of", "reason"]
    bad = {partners.loc[3, "partner_id"], partners.loc[5, "partner_id"]}
    assert set(rejects["partner_id"]) == bad
    reasons = dict(zip(rejects["partner_id"], rejects["reason"], strict=True))
    assert "signed_at 'someday' is not a date" in reasons[partners.loc[3, "partner_id"]]
    assert "partner_name" in reasons[partners.loc[5, "partner_id"]]
    assert partners.loc[7, "partner_id"] in set(scores["partner_id"])
    # every input partner is scored, rejected or out of scope, exactly once
    signed = pd.to_datetime(partners["signed_at"], errors="coerce")
    later = set(partners.loc[signed >= pd.Timestamp(AS_OF), "partner_id"])
    assert set(scores["partner_id"]).isdisjoint(later | bad)
    assert set(scores["partner_id"]) | bad | later == set(partners["partner_id"])
    assert result.partners_input == len(partners)
    assert result.partners_input == result.scored + result.rejected + result.not_yet
    assert result.not_yet == len(later)
    assert deals.loc[0, "partner_id"] in set(scores["partner_id"]) | later
    assert result.quarantined_rows["deals"] >= 1
    assert "quarantined rows (scored without them): " in result.summary()
    assert result.quarantine_dir == tmp_path / "quarantine"
    assert (result.quarantine_dir / "deals.csv").is_file()
    # a clean batch names no quarantine folder (--json gave one where nothing was written)
    clean = run_score(raw_dir, AS_OF, "champion", tmp_path / "c" / "s.csv", store_config)
    assert clean.quarantine_dir is None and not (tmp_path / "c" / "quarantine").exists()


def test_killed_write_leaves_no_partial_file(raw_dir, store_config, tmp_path, monkeypatch):
    out = tmp_path / "scores.parquet"

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(KeyboardInterrupt):
        run_score(raw_dir, AS_OF, "champion", out, store_config)
    assert list(tmp_path.glob("scores*")) == []
    assert list(tmp_path.glob(".scores*")) == []
    assert not ScoreHistory(store_config.paths.history_database()).exists()


def test_failure_mid_write_keeps_the_previous_file(raw_dir, store_config, tmp_path, monkeypatch):
    out = tmp_path / "scores.csv"
    out.write_text("previous scores\n")
    real = pd.DataFrame.to_csv

    def half_then_die(frame, path, *args, **kwargs):
        text = real(frame, None, *args, **kwargs)
        with open(path, "w") as handle:  # the temporary file gets half of the rows
            handle.write(text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_die)
    with pytest.raises(PartnerscoreError, match="scores.csv: cannot write: disk full"):
        run_score(raw_dir, AS_OF, "champion", out, store_config)
    assert out.read_text() == "previous scores\n"
    # nothing was published, so the history holds no batch of this run either
    assert ScoreHistory(store_config.paths.history_database()).read().empty
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "data") == ["scores.csv"]


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_after_the_history_commit_waits_for_the_ledger_and_the_files(
    raw_dir, store_config, tmp_path, monkeypatch, capsys, signum
):
    """A scheduler's SIGTERM (or Ctrl-C) between the history's commit and the ledger's write
    left the history holding the batch while the decision ledger and the scores file did not
    (the next month's smoothing read the batch, its tier hysteresis did not): seen once in 25
    SIGTERMs of a 3,000-partner job. The signal now waits until the files are published, and
    the job then finishes: it said `aborted` / `terminated` (130 / 143), the code of a job that
    published nothing, over a batch published whole (1 of 60 Ctrl-Cs in a demo score); now it
    says its result and a note, exit 0."""
    import json
    import signal

    from partnerscore.serving.ledger import DecisionLedger

    number = getattr(signal, signum)
    real = DecisionLedger.record_decisions

    def signalled_first(self, *args, **kwargs):
        signal.raise_signal(number)  # lands as the history has committed
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DecisionLedger, "record_decisions", signalled_first)
    # Ctrl-C's Python handler (a pytest-xdist worker ignores SIGINT); SIGTERM's is the CLI's
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    out = tmp_path / "scores.parquet"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(store_config.model_dump(mode="json")))
    try:
        code = main(
            ["score", "--raw", str(raw_dir), "--as-of", str(AS_OF), "--out", str(out)]
            + ["-c", str(cfg)]
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    said = capsys.readouterr()
    name = "Ctrl-C" if signum == "SIGINT" else "SIGTERM"
    assert code == 0, said.err
    assert said.err.strip().splitlines()[-1] == (
        f"note: {name} came as the job published its results: they are whole, and the job finished"
    )
    assert f"wrote {out}" in said.out
    url = store_config.paths.history_database()
    history = ScoreHistory(url).read()
    decisions = DecisionLedger(url).read_decisions()
    assert len(history) > 0 and len(decisions) == len(history)
    assert len(pd.read_parquet(out)) == len(history)
    assert list(tmp_path.glob(".scores*")) == []
    # said once: the next job in this process says nothing of it
    assert main(["metrics", "--json"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_smoothing_window_and_guardrail_hand_computed(raw_dir, store_config, tmp_path):
    cfg = store_config.model_copy(
        update={"policy": PolicyConfig(smoothing_window=2, guardrail_threshold=3.0)}
    )
    dates = [pd.Timestamp(d).date() for d in ("2025-09-01", "2025-12-01", "2026-03-01")]
    runs = []
    for i, day in enumerate(dates):
        run_score(raw_dir, day, "champion", tmp_path / f"s{i}.csv", cfg)
        runs.append(read_frame(tmp_path / f"s{i}.csv").set_index("partner_id"))
    s0, s1, s2 = runs
    both = s0.index.intersection(s2.index)
    assert len(both) > 50
    # window 2: the newest score and the one before it, never the oldest
    pd.testing.assert_series_equal(
        s2.loc[both, "score_smoothed"],
        (s1.loc[both, "score"] + s2.loc[both, "score"]) / 2,
        check_names=False,
    )
    pd.testing.assert_series_equal(
        s2.loc[both, "score_previous"], s1.loc[both, "score"], check_names=False
    )
    swing = (s2.loc[both, "score"] - s1.loc[both, "score"]).abs() > 3.0
    assert swing.any() and (~swing).any()
    assert (s2.loc[both, "guardrail_flag"] == swing).all()
    # re-scoring an earlier date uses only what came before it
    again = tmp_path / "again.csv"
    run_score(raw_dir, dates[1], "champion", again, cfg)
    assert again.read_bytes() == (tmp_path / "s1.csv").read_bytes()


def test_playbook_override_and_bad_playbook(raw_dir, store_config, tmp_path):
    book = tmp_path / "book.yaml"
    quads = "\n".join(
        f"  {q}:\n    label: Group {i}\n    title: Action {i}\n    detail: Do thing {i}."
        for i, q in enumerate(QUADRANTS)
    )
    book.write_text(f"quadrants:\n{quads}\n")
    policy = store_config.policy.model_copy(update={"playbook_path": str(book)})
    cfg = store_config.model_copy(update={"policy": policy})
    run_score(raw_dir, AS_OF, "champion", tmp_path / "s.csv", cfg)
    scores = read_frame(tmp_path / "s.csv")
    expected = scores["quadrant"].map({q: f"Action {i}" for i, q in enumerate(QUADRANTS)})
    # partners past the trained onboarding ages get the (default) graduated action instead
    graduated = scores["out_of_scope"].astype(bool)
    expected = expected.where(~graduated, GRADUATED["title"])
    assert graduated.any() and (~graduated).any()
    assert (scores["intervention"] == expected).all()
    assert (scores.loc[graduated, "score_tier"] == "graduated").all()
    book.write_text(f"quadrants:\n{quads.replace('title: Action 1', 'titel: Action 1')}\n")
    with pytest.raises(PartnerscoreError, match=r"book.yaml: quadrants.high_revenue_low_eng"):
        run_score(raw_dir, AS_OF, "champion", tmp_path / "t.csv", cfg)
    assert not (tmp_path / "t.csv").exists()


def test_user_errors(raw_dir, store_config, tmp_path):
    with pytest.raises(PartnerscoreError, match="no partner signed before"):
        run_score(
            raw_dir, pd.Timestamp("2000-01-01").date(), "champion", tmp_path / "s.csv", store_config
        )
    with pytest.raises(PartnerscoreError, match="cannot load model 'models:/partnerscore@nosuch'"):
        run_score(raw_dir, AS_OF, "nosuch", tmp_path / "s.csv", store_config)
    with pytest.raises(PartnerscoreError, match="unsupported file type"):
        run_score(raw_dir, AS_OF, "champion", tmp_path / "s.xlsx", store_config)


def test_a_local_model_folder_needs_no_registry_and_creates_none(
    raw_dir, store_config, tmp_path, monkeypatch
):
    """The pyfunc's version lookup and the reference profile's run lookup made MLflow create
    an empty store where the tracking URI pointed, for a model that needs none."""
    import mlflow

    mlflow.set_tracking_uri(store_config.paths.tracking_uri())
    folder = mlflow.artifacts.download_artifacts(
        "models:/partnerscore@champion", dst_path=str(tmp_path / "model")
    )
    paths = store_config.paths.model_copy(update={"mlflow_dir": str(tmp_path / "none")})
    cfg = store_config.model_copy(update={"paths": paths})
    with pytest.raises(PartnerscoreError, match=f"no model registry found at {tmp_path}/none/"):
        run_score(raw_dir, AS_OF, "champion", tmp_path / "a.parquet", cfg)
    local = run_score(
        raw_dir, AS_OF, folder, tmp_path / "b.parquet", cfg,
        allow_local_model=True, record_history=False,
    )  # fmt: skip
    assert local.scored > 0 and local.model_version == ""
    assert not (tmp_path / "none").exists()
    # a tracking URI with a query string: the champion lookup (is this a shadow run?) went
    # through MLflow, which created an empty store there, folder included
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/none/mlflow.db?timeout=20")
    local = run_score(
        raw_dir, AS_OF, folder, tmp_path / "c.parquet", cfg,
        allow_local_model=True, record_history=False,
    )  # fmt: skip
    assert local.scored > 0 and local.shadow_of is None
    assert not (tmp_path / "none").exists()


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


def test_score_json_counts_the_graduated_as_the_summary_does(
    raw_dir, store_config, tmp_path, capsys, monkeypatch
):
    """``--json``'s in_scope counted every partner due a score, graduated ones included,
    while the summary set the graduated (out of onboarding scope) apart; its ``partners`` was 0
    from raw tables (it counted a feature table's partners only)."""
    import json

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(store_config.model_dump_json())
    out = tmp_path / "cli.csv"
    argv = ["--json", "score", "--raw", str(raw_dir), "--as-of", "2026-03-01", "--out", str(out)]
    assert main([*argv, "--no-history", "--config", str(cfg)]) == 0
    payload = json.loads(capsys.readouterr().out)
    graduated = read_frame(out)["out_of_scope"].astype(str).eq("True")
    assert graduated.any() and not graduated.all()  # both kinds in the batch
    assert payload["in_scope"] == int((~graduated).sum())
    assert payload["out_of_scope"] == payload["graduated"] == int(graduated.sum())
    assert payload["in_scope"] + payload["out_of_scope"] == payload["scored"] == len(graduated)
    assert payload["eligible"] == payload["scored"] + payload["rejected"]  # nothing quarantined
    # one row per partner from raw tables: the partners scored are the rows scored
    assert payload["partners"] == payload["scored"] == read_frame(out)["partner_id"].nunique()
    partners = len(pd.read_csv(raw_dir / "partners.csv"))
    assert payload["partners_input"] == partners == payload["scored"] + payload["not_yet"]
    assert f"in onboarding scope: {payload['in_scope']:,};" in payload["summary"]
    assert f"past the trained onboarding ages): {graduated.sum():,};" in payload["summary"]


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


def test_peer_segments_never_merge_values_that_read_alike():
    # tier "a|b" x type "c" and tier "a" x type "b|c" (and with spaces) are different segments
    frame = pd.DataFrame(
        {
            "score": list(range(10, 110, 10)),
            "tier": ["a|b"] * 5 + ["a"] * 5,
            "partner_type": ["c"] * 5 + ["b|c"] * 5,
        }
    )
    pct = peer_percentile(frame)
    assert pct[:5].tolist() == pct[5:].tolist() == [20.0, 40.0, 60.0, 80.0, 100.0]
    spaced = frame.assign(
        tier=["a b"] * 5 + ["a"] * 5, partner_type=["c"] * 5 + ["b c"] * 5, score=0.0
    )
    key, name = peer_groups(spaced)
    assert len(set(key[:5])) == len(set(key[5:])) == 1 and key[0] != key[5]
    assert name[0] == name[5] == "a b c"  # the readable names do read alike


def test_score_at_onboarding_age(raw_dir, store_config, tmp_path):
    out = tmp_path / "age90.csv"
    result = run_score(raw_dir, None, "champion", out, store_config, at_age=90)
    scores = read_frame(out)
    as_of = pd.to_datetime(scores["as_of"])
    signed = pd.to_datetime(scores["signed_at"])
    assert ((as_of - signed) == pd.Timedelta(days=90)).all()
    assert (scores["age_days"] == 90).all()
    assert not scores["out_of_scope"].astype(bool).any()  # 90 days is a trained age
    partners = pd.read_csv(raw_dir / "partners.csv", dtype=str)
    newest = load_raw(raw_dir, write_quarantine=False).data_end  # newest event of any table
    milestone = pd.to_datetime(partners["signed_at"]) + pd.Timedelta(days=90)
    assert result.not_yet == int((milestone > newest).sum()) > 0
    assert result.scored + result.rejected + result.not_yet == len(partners)
    assert "at onboarding age 90 days" in result.summary()
    with pytest.raises(PartnerscoreError, match="either --as-of DATE or --at-age DAYS"):
        run_score(raw_dir, AS_OF, "champion", out, store_config, at_age=90)


def test_old_partners_are_graduated_not_scored_as_new(raw_dir, store_config, tmp_path):
    result = run_score(raw_dir, AS_OF, "champion", tmp_path / "s.parquet", store_config)
    scores = pd.read_parquet(tmp_path / "s.parquet")
    limit = 180 + store_config.policy.scope_tolerance_days  # oldest trained age + tolerance
    old = scores["age_days"] > limit
    assert (scores["out_of_scope"] == old).all() and old.any()
    assert (scores.loc[old, "score_tier"] == "graduated").all()
    assert (scores.loc[~old, "score_tier"] != "graduated").all()
    assert result.graduated == int(old.sum())


def test_raw_tables_spelling_a_tier_in_another_case_score_as_the_models(
    raw_dir, store_config, tmp_path
):
    """A batch spelling every registered tier 'Registered' (validation keeps the batch's own
    spelling) gave the model, trained on 'registered', a category it never saw: other scores,
    silently. Whole or in groups, the rows now score as 'registered' and are counted."""
    from partnerscore.features.validated import default_dir, run_validate_snapshot

    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    partners = pd.read_csv(raw / "partners.csv", dtype=str, keep_default_na=False)
    partners["tier"] = partners["tier"].replace({"registered": "Registered"})
    partners.to_csv(raw / "partners.csv", index=False)
    run_validate_snapshot(raw, default_dir(raw))
    plain = run_score(raw_dir, AS_OF, "champion", tmp_path / "a.parquet", store_config,
                      record_history=False)  # fmt: skip
    a = pd.read_parquet(tmp_path / "a.parquet")
    said = "tier 'Registered' -> 'registered'"
    registered = int(a["tier"].eq("registered").sum())
    assert registered and plain.respelled_categories == 0
    for groups in (0, 37):
        out = tmp_path / f"b{groups}.parquet"
        result = run_score(raw, AS_OF, "champion", out, store_config, record_history=False,
                           group_partners=groups)  # fmt: skip
        b = pd.read_parquet(out)
        assert result.respelled_categories == registered
        assert result.respelled == {said: registered}
        assert f"{registered:,} rows: {said} ({registered:,})" in result.summary()
        assert (b["respelled_categories"] == np.where(a["tier"] == "registered", said, "")).all()
        pd.testing.assert_frame_equal(
            b.drop(columns="respelled_categories"), a.drop(columns="respelled_categories")
        )


def test_raw_tables_list_categories_the_model_never_saw(raw_dir, store_config, tmp_path):
    """A partner whose industry the model never saw ('aerospace') was scored as missing from raw
    tables and recorded nowhere (only ``score --features`` listed it): the account owner's page
    showed 'aerospace' with no warning. The raw job's rows now carry ``unseen_categories``, the
    same text as the feature table's check gives for the same rows, counted in the summary and
    the JSON summary."""
    from partnerscore.models.frame_check import check_feature_frame, unseen_categories
    from partnerscore.serving.api import load_model

    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    partners = pd.read_csv(raw / "partners.csv", dtype=str, keep_default_na=False)
    signed = pd.to_datetime(partners["signed_at"]) < pd.Timestamp(AS_OF)
    first, second = partners.index[signed][:2]
    partners.loc[[first, second], "industry"] = "aerospace"
    partners.loc[second, "region"] = "MEA"
    partners.to_csv(raw / "partners.csv", index=False)
    result = run_score(raw, AS_OF, "champion", tmp_path / "s.parquet", store_config,
                       record_history=False)  # fmt: skip
    scores = pd.read_parquet(tmp_path / "s.parquet").set_index("partner_id")
    ids = partners["partner_id"]
    assert scores.loc[ids[first], "unseen_categories"] == "industry=aerospace"
    assert scores.loc[ids[second], "unseen_categories"] == "region=MEA; industry=aerospace"
    assert (scores["unseen_categories"] != "").sum() == 2
    # the function score --features uses, on the same feature rows
    model = load_model("champion", tracking_uri=store_config.paths.tracking_uri())
    frame = scores.reset_index()[["partner_id", "as_of", *model.feature_names]]
    check_feature_frame(model, frame)
    assert unseen_categories(model, frame).tolist() == scores["unseen_categories"].tolist()
    assert result.unseen_categories == 2
    assert result.unseen == {"industry=aerospace": 1, "region=MEA; industry=aerospace": 1}
    assert result.json_payload()["unseen_categories"] == 2
    assert (
        "scored as missing (categories the model never saw): 2 rows: industry=aerospace (1); "
        "region=MEA; industry=aerospace (1)" in result.summary()
    )
    # the account owner's page now says so (it read the column only from feature tables)
    from partnerscore.serving.report import report_filename, run_report

    run_report(tmp_path / "s.parquet", tmp_path / "pages", store_config,
               partners=[ids[first], ids[second]])  # fmt: skip
    page = (tmp_path / "pages" / "partners" / report_filename(ids[first])).read_text("utf-8")
    assert "Categories the model never saw, scored as unknown: industry=aerospace</div>" in page
