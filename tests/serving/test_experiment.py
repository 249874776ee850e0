"""Experiment jobs on real scores: assignment, registry, analysis against a known effect."""

import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
from support import assert_said_left_publish, killed_at_rename, sqlite_write_lock_held

from partnerscore.features.core import PartnerscoreError, check_listed
from partnerscore.features.experiments import ASSIGNMENT_COLUMNS
from partnerscore.serving.experiment import (
    EFFECT_COLUMNS,
    OUTCOME_COLUMNS,
    RESULT_KEYS,
    read_assignments,
    run_analyze,
    run_assign,
    run_stop,
)
from partnerscore.serving.history import ScoreHistory

ARMS = ("control", "treatment")
HORIZON = 90


@pytest.fixture()
def cfg(scored_dir, tmp_path):
    _, config = scored_dir
    paths = config.paths.model_copy(update={"data_dir": str(tmp_path / "data")})
    return config.model_copy(update={"paths": paths})


def test_assignment_is_reproducible_stratified_and_carries_the_pre_period(
    scored_dir, cfg, tmp_path
):
    root, _ = scored_dir
    a = run_assign(root / "scores.csv", "onb", ARMS, tmp_path / "a.csv", cfg, seed=3)
    b = run_assign(
        root / "scores.csv",
        "onb",
        ARMS,
        tmp_path / "b.csv",
        cfg,
        seed=3,
        registry=tmp_path / "r.csv",
    )
    assert (tmp_path / "a.csv").read_bytes().replace(b"a.csv", b"") == (
        tmp_path / "b.csv"
    ).read_bytes().replace(b"b.csv", b"")
    table = read_assignments(tmp_path / "a.csv")
    assert list(table.columns[: len(ASSIGNMENT_COLUMNS)]) == list(ASSIGNMENT_COLUMNS)
    scores = pd.read_csv(root / "scores.csv", dtype={"partner_id": str})
    assert set(table["partner_id"]) == set(scores["partner_id"])  # hostile ids included
    assert {"pre_score", "pre_quadrant", "pre_activities_touchpoints_30d"} <= set(table.columns)
    assert (table["assigned_at"] == pd.Timestamp("2026-03-01")).all()
    for _, group in table.groupby("stratum"):
        assert abs((group["arm"] == "treatment").sum() - len(group) / 2) < 1
    merged = table.merge(scores, on="partner_id")
    assert (merged["stratum"] == merged["tier"] + "|" + merged["quadrant"]).all()
    assert (merged["pre_score"] == merged["score"]).all()
    assert a.arms == b.arms and sum(a.arms.values()) == len(scores)
    other = run_assign(root / "scores.csv", "x", ARMS, tmp_path / "c.csv", cfg, seed=4)
    assert other.arms != a.arms or not read_assignments(tmp_path / "c.csv")["arm"].equals(
        table["arm"]
    )


def test_registry_refuses_to_reassign_a_running_partner(scored_dir, cfg, tmp_path):
    root, _ = scored_dir
    scores = root / "scores.csv"
    run_assign(scores, "onb", ARMS, tmp_path / "a.csv", cfg, seed=1)
    before = (tmp_path / "a.csv").read_bytes()
    again = run_assign(scores, "onb", ARMS, tmp_path / "a.csv", cfg, seed=1)
    assert again.unchanged and (tmp_path / "a.csv").read_bytes() == before
    with pytest.raises(PartnerscoreError, match="is already in running experiment 'onb'"):
        run_assign(scores, "onb", ARMS, tmp_path / "b.csv", cfg, seed=2)
    assert not (tmp_path / "b.csv").exists()
    run_assign(scores, "other", ARMS, tmp_path / "c.csv", cfg, seed=2)  # another name is fine
    assert run_stop("onb", cfg).stopped == sum(again.arms.values())
    run_assign(scores, "onb", ARMS, tmp_path / "b.csv", cfg, seed=2)  # stopped: may reassign
    with pytest.raises(PartnerscoreError, match="no running experiment 'nope'"):
        run_stop("nope", cfg)
    registry = pd.read_csv(tmp_path / "data" / "experiments" / "registry.csv")
    assert set(registry["status"]) == {"running", "stopped"}


def test_assign_rejects_bad_input(scored_dir, cfg, tmp_path):
    root, _ = scored_dir
    with pytest.raises(PartnerscoreError, match="missing column 'segment' \\(given in --stratify"):
        run_assign(root / "scores.csv", "e", ARMS, tmp_path / "a.csv", cfg, stratify=("segment",))
    with pytest.raises(PartnerscoreError, match="before the scores' as_of"):
        run_assign(
            root / "scores.csv",
            "e",
            ARMS,
            tmp_path / "a.csv",
            cfg,
            assigned_at=pd.Timestamp("2026-01-01"),
        )


@pytest.fixture()
def experiment(scored_dir, cfg, tmp_path):
    """Real scores assigned, a known effect injected into the scored program's raw data."""
    from partnerscore.features.experiment_sim import inject_effect
    from partnerscore.features.simulate import write_tables
    from partnerscore.features.validate import load_raw

    root, _ = scored_dir
    run_assign(root / "scores.csv", "onb", ARMS, tmp_path / "assign.csv", cfg, seed=5)
    assignment = read_assignments(tmp_path / "assign.csv")
    raw = load_raw(root / "raw", write_quarantine=False)
    injected = inject_effect(
        raw.tables, assignment, 0.5, 2.0, HORIZON, seed=5, data_end=raw.data_end
    )
    write_tables(injected.tables, tmp_path / "raw", fmt="parquet")
    return tmp_path / "assign.csv", tmp_path / "raw", injected


def test_analysis_finds_the_injected_effect(experiment, scored_dir, cfg, tmp_path):
    assign, raw, injected = experiment
    history = scored_dir[1].paths.history_database()
    result = run_analyze(assign, raw, HORIZON, tmp_path / "out", cfg, history=history, n_boot=500)
    r = result.results
    assert set(r) == set(RESULT_KEYS)
    assert not r["sample_ratio"]["mismatch"]
    assert r["covariates"] == ["pre_revenue", "pre_engaged", "pre_score"]
    truth = injected.summary["true_effect"]
    overall = {
        (e["outcome"], e["method"]): e
        for e in r["effects"]
        if e["stratum"] == "all" and e["day"] == HORIZON
    }
    assert set(overall) == {
        ("revenue", "welch"),
        ("revenue", "adjusted"),
        ("revenue", "bootstrap"),
        ("engaged", "welch"),
        ("engaged", "adjusted"),
    }
    for (outcome, _), est in overall.items():
        assert est["ci_low"] <= truth[outcome] <= est["ci_high"], (outcome, est, truth)
    assert overall[("engaged", "adjusted")]["significant"]
    # outcomes file agrees with the potential outcomes of the injector
    outcomes = pd.read_csv(result.files["outcomes"], dtype={"partner_id": str})
    fixed = {c for c in OUTCOME_COLUMNS if "<" not in c}
    assert fixed <= set(outcomes.columns)
    assert {"revenue_d30", "engaged_d60", "revenue_d90"} <= set(outcomes.columns)
    t = injected.truth.set_index("partner_id").loc[outcomes["partner_id"]]
    observed = t["revenue_y1"].where(t["treated"], t["revenue_y0"]).to_numpy()
    assert outcomes["revenue"].to_numpy() == pytest.approx(observed, abs=0.01)
    effects = pd.read_csv(result.files["effects"])
    assert list(effects.columns) == list(EFFECT_COLUMNS)
    assert set(effects["day"]) >= {30, 60, 90}
    assert effects["stratum"].nunique() > 2  # per-stratum effects
    # score trajectory from the history: runs at 2026-01-01 (day -59) and 2026-03-01 (day 0)
    score_days = {t["day"] for t in r["trajectory"] if t["outcome"] == "score"}
    assert score_days == {-59, 0}
    assert any(e["outcome"] == "score" and e["day"] == 0 for e in r["effects"])
    page = result.files["report"].read_text()
    assert page.count("<svg") >= 5 and 'id="chart-score"' in page
    assert "<script" not in page and "sample ratio mismatch" not in page
    assert json.loads(result.files["results"].read_text())["schema_version"] == 1
    assert "treatment vs control" in result.summary()


def test_sample_ratio_mismatch_is_flagged(experiment, cfg, tmp_path):
    assign, raw, _ = experiment
    table = pd.read_csv(assign, dtype={"partner_id": str}, keep_default_na=False, na_values=[""])
    treated = table.index[table["arm"] == "treatment"]
    lossy = table.drop(treated[: len(treated) * 2 // 3])
    lossy.to_csv(tmp_path / "lossy.csv", index=False)
    result = run_analyze(tmp_path / "lossy.csv", raw, HORIZON, tmp_path / "out", cfg, n_boot=200)
    assert result.results["sample_ratio"]["mismatch"]
    assert "MISMATCH" in result.summary()
    assert 'id="srm-mismatch"' in result.files["report"].read_text()


def test_analysis_rejects_bad_input(experiment, cfg, tmp_path):
    assign, raw, _ = experiment
    with pytest.raises(PartnerscoreError, match="--control: unknown arm 'placebo'"):
        run_analyze(assign, raw, HORIZON, tmp_path / "o", cfg, control="placebo")
    with pytest.raises(PartnerscoreError, match="--horizon 200: the data ends 2026-06-30"):
        run_analyze(assign, raw, 200, tmp_path / "o", cfg)
    table = pd.read_csv(assign, dtype={"partner_id": str}, keep_default_na=False, na_values=[""])
    table.loc[3, "partner_id"] = "NOT-A-PARTNER"
    table.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(PartnerscoreError, match="row 4: partner_id 'NOT-A-PARTNER' is not in"):
        run_analyze(tmp_path / "bad.csv", raw, HORIZON, tmp_path / "o", cfg)
    table = table.drop(index=3)
    table.loc[5, "target_share"] = 3.0
    table.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(PartnerscoreError, match="column 'target_share'"):
        run_analyze(tmp_path / "bad.csv", raw, HORIZON, tmp_path / "o", cfg)


def test_a_late_tail_completes_no_horizon(experiment, cfg, tmp_path):
    from partnerscore.features.simulate import write_tables
    from partnerscore.features.validate import load_raw

    assign, raw, _ = experiment
    tables = dict(load_raw(raw, write_quarantine=False).tables)
    events = tables["portal_events"]
    late = events.drop_duplicates("partner_id").head(2).copy()  # two partners' logins
    for col in late.columns:
        if late[col].dtype.kind == "M":
            late[col] = pd.Timestamp("2026-11-20 10:00")
    tables["portal_events"] = pd.concat([events, late], ignore_index=True)
    write_tables(tables, tmp_path / "late", fmt="parquet")
    assert load_raw(tmp_path / "late", write_quarantine=False).late_tail is not None
    with pytest.raises(PartnerscoreError, match="--horizon 200: the data ends 2026-06-30 .a late"):
        run_analyze(assign, tmp_path / "late", 200, tmp_path / "o", cfg)


def test_analysis_is_logged_to_mlflow(experiment, cfg, tmp_path, tracking_uri):
    import mlflow

    assign, raw, _ = experiment
    result = run_analyze(assign, raw, HORIZON, tmp_path / "o", cfg, n_boot=200, log_mlflow=True)
    run = mlflow.MlflowClient(tracking_uri).get_run(result.mlflow_run_id)
    assert run.data.params["experiment"] == "onb"
    assert "treatment.engaged.adjusted.effect" in run.data.metrics
    assert "srm_p_value" in run.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient(tracking_uri).list_artifacts(run.info.run_id)}
    assert {"results.json", "report.html", "effects.csv", "outcomes.csv"} <= artifacts


def test_history_is_only_read_and_must_exist(experiment, scored_dir, cfg, tmp_path):
    url = scored_dir[1].paths.history_database()
    store = ScoreHistory(url)
    before = store.read()
    assign, raw, _ = experiment
    run_analyze(assign, raw, HORIZON, tmp_path / "o", cfg, history=url, n_boot=50)
    pd.testing.assert_frame_equal(store.read(), before)
    with pytest.raises(PartnerscoreError, match="none.sqlite: score history file not found"):
        run_analyze(
            assign, raw, HORIZON, tmp_path / "o", cfg, history=str(tmp_path / "none.sqlite")
        )


def test_a_history_file_that_is_no_store_is_refused_and_left_alone(experiment, cfg, tmp_path):
    """An empty file or another SQLite database: the analysis ran, then the store's opening
    wrote its empty table into the file (an empty file gave an analysis without trajectory,
    exit 0)."""
    import sqlite3

    assign, raw, _ = experiment
    empty, other = tmp_path / "empty.sqlite", tmp_path / "other.sqlite"
    empty.touch()
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (x)")
    conn.close()
    for path, said in [
        (empty, "empty file (no score history)"),
        (other, "no score history in this SQLite database (no table score_history_v2)"),
    ]:
        with pytest.raises(PartnerscoreError) as got:
            run_analyze(assign, raw, HORIZON, tmp_path / "o", cfg, history=str(path))
        assert got.value.message == f"{path}: {said}"
    assert empty.stat().st_size == 0
    with sqlite3.connect(other) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master")]
    conn.close()
    assert tables == ["notes"]
    assert not (tmp_path / "o").exists()


def test_the_history_file_check_waits_for_a_writer_as_the_stores_do(tmp_path):
    """``--history FILE`` is checked read-only before the analysis; its connection waited
    pysqlite's default 5 s for a score job committing to the file, the stores 10 s
    (``SQLITE_BUSY_SECONDS``). Another process holds the file's write lock for 7 s, then
    commits: the check said "cannot read score history: database is locked" after 5 s."""
    import sqlite3

    from partnerscore.serving.experiment import history_store_url
    from partnerscore.serving.history import TABLE

    path = tmp_path / "history.sqlite"
    with sqlite3.connect(path) as conn:  # the check reads the table's name only
        conn.execute(f"CREATE TABLE {TABLE} (partner_id TEXT)")
    conn.close()
    with sqlite_write_lock_held(path, 7):
        assert history_store_url(str(path)) == f"sqlite:///{path.resolve()}"


def test_a_history_urls_password_is_not_written(experiment, cfg, tmp_path, postgres_url):
    """results.json's inputs (and so report.html) held the --history URL as given, password
    and all; the store's errors already masked it."""
    assign, raw, _ = experiment
    url = postgres_url.replace("partnerscore@", "partnerscore:s3cret-pw@")
    run_analyze(assign, raw, HORIZON, tmp_path / "o", cfg, history=url, n_boot=50)
    written = {p.name: p.read_text(errors="replace") for p in (tmp_path / "o").iterdir()}
    assert written and not [name for name, text in written.items() if "s3cret-pw" in text]
    results = json.loads(written["results.json"])
    assert results["inputs"]["history"] == url.replace("s3cret-pw", "***")


ANALYSIS_FILES = ("effects.csv", "outcomes.csv", "report.html", "results.json")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills a real process")
@pytest.mark.parametrize("renames", [1, 3, 4])
def test_an_analysis_killed_while_publishing_leaves_a_mix_results_json_names(
    experiment, cfg, tmp_path, renames
):
    # results.json was written first and the other three renamed one by one after it: killed
    # between two renames (SIGKILL, out of memory), the folder held one analysis's results.json
    # beside another's effects.csv or page, with no sign of it. results.json is renamed last
    # and lists the others' SHA-256: check_listed names the file of the other run
    assign, raw, _ = experiment
    out = tmp_path / "o"
    run_analyze(assign, raw, HORIZON, out, cfg, n_boot=50, seed=0)
    check_listed(out / "results.json")
    before = {name: (out / name).read_bytes() for name in ANALYSIS_FILES}
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(cfg.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    hooked = killed_at_rename(dict(env), tmp_path / "hook", out, renames)

    def analyze(env, *extra):
        return subprocess.run(
            [sys.executable, "-m", "partnerscore.serving.cli", "experiment", "analyze"]
            + ["--assignments", str(assign), "--raw", str(raw), "--horizon", str(HORIZON)]
            + ["--out", str(out), "--bootstrap", "50", "--seed", "1", "--config", str(config)]
            + list(extra),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    job = analyze(hooked)
    assert job.returncode == -signal.SIGKILL, job.stderr
    changed = {name for name in ANALYSIS_FILES if (out / name).read_bytes() != before[name]}
    assert "effects.csv" in changed  # another seed: other bootstrap intervals
    said = f"{out}: an earlier experiment analyze run was killed while publishing "
    said += "(.results.json.publishing was left)"
    if renames == len(ANALYSIS_FILES):  # killed after the last rename: the new analysis, whole
        assert check_listed(out / "results.json")["files"]
        mixed = []
        said += ", but its files are the set results.json lists"
    else:
        assert "results.json" not in changed  # renamed last
        with pytest.raises(PartnerscoreError) as caught:
            check_listed(out / "results.json")
        message = str(caught.value)
        assert len(message.splitlines()) == 1
        assert message.startswith(f"{out / 'effects.csv'}: not the file results.json lists: ")
        assert "interrupted while publishing" in message
        mixed = [name for name in ANALYSIS_FILES[:renames] if name in changed]  # not the same
        more = f"and {len(mixed) - 1} more are not the files" if mixed[1:] else "is not the file"
        said += f": effects.csv {more} results.json lists, a mix of two runs' files"
    # the next analysis says what it replaced (until 2026-12-06 nothing), and publishes it whole
    said += "; this run replaced them with its own"
    again = analyze(env, "--json")
    assert again.returncode in (0, 1), again.stderr  # 1: a sample-ratio mismatch
    assert_said_left_publish(again, out, "results.json", list(mixed), said)
    assert check_listed(out / "results.json")["files"]
    assert not (out / ".results.json.publishing").exists()
