"""The backtest labels past score rows with the label definition of the model it monitors (the
``build_config`` of the training manifest its run logged), not with the current config's
engagement settings; rows of versions that defined their labels otherwise are left out and
counted; a model whose run logged no manifest is labelled by the config, and the summary says so.

A registry copy of the early store (conftest: a champion trained on the program's data to
2025-08-31) holds the champion (version 1, default labels), version 2 (the same model files,
its run's manifest says ``--engagement-period 15``) and version 3 (no manifest). The history:
the 2025-06-01 batch scored by version 2, the 2025-10-01 one by 1; both complete their
horizon after the versions' training data end (2025-09-01): out of time, backtested."""

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from partnerscore.features.config import QUALIFYING_TOUCHPOINTS
from partnerscore.features.validate import load_raw
from partnerscore.serving.history import ScoreHistory
from partnerscore.serving.monitor import run_monitor, split_by_label_definition
from partnerscore.serving.score import run_score
from partnerscore.training.backtest import LabelDefinitionSplit
from partnerscore.training.reference import MANIFEST_ARTIFACT, REFERENCE_ARTIFACT

AS_OF = pd.Timestamp("2026-07-01")
BY_2, BY_1 = "2025-06-01", "2025-10-01"  # the batches versions 2 and 1 scored
ACTIVITIES = {"meeting", "qbr", "co_sell", "joint_event"}


@pytest.fixture(scope="module")
def store(early_store, raw_dir, tmp_path_factory):
    """(config of the registry copy and its history, {batch: in-scope score rows})."""
    root = tmp_path_factory.mktemp("labels")
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        (root / "mlflow").mkdir()
        db = root / "mlflow" / "mlflow.db"
        shutil.copy(early_store.paths.tracking_uri().removeprefix("sqlite:///"), db)
        client = MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
        name = early_store.train.registered_model
        first = client.get_model_version_by_alias(name, "champion")
        files = client.get_model_version_download_uri(name, first.version)

        def logged(artifact: str) -> dict:
            with tempfile.TemporaryDirectory() as tmp:
                return json.loads(
                    Path(client.download_artifacts(first.run_id, artifact, tmp)).read_text()
                )

        manifest, reference = logged(MANIFEST_ARTIFACT), logged(REFERENCE_ARTIFACT)
        assert manifest["build_config"]["engagement_period_days"] == 30
        experiment = client.create_experiment("labels", (root / "artifacts").as_uri())

        def register(manifest: dict | None) -> str:
            run_id = client.create_run(experiment).info.run_id
            client.log_dict(run_id, reference, REFERENCE_ARTIFACT)
            if manifest is not None:
                client.log_dict(run_id, manifest, MANIFEST_ARTIFACT)
            client.set_terminated(run_id)
            return str(client.create_model_version(name, files, run_id=run_id).version)

        build = {**manifest["build_config"], "engagement_period_days": 15}
        assert register({**manifest, "build_config": build}) == "2"
        assert register(None) == "3"
        paths = early_store.paths.model_copy(
            update={"mlflow_dir": str(root / "mlflow"), "data_dir": str(root / "scratch")}
        )
        scratch = early_store.model_copy(update={"paths": paths})
        scored = {}
        for as_of in (BY_2, BY_1):
            path = root / f"s{as_of}.csv"
            run_score(raw_dir, pd.Timestamp(as_of).date(), "champion", path, scratch)
            scores = pd.read_csv(path, keep_default_na=False, na_values=[""])
            scored[as_of] = scores[scores["age_days"] <= 180]
        rows = ScoreHistory(scratch.paths.history_database()).read()
        rows["model_version"] = np.where(rows["as_of"] == pd.Timestamp(BY_2), "2", "1")
        paths = paths.model_copy(update={"data_dir": str(root / "data")})
        config = scratch.model_copy(update={"paths": paths})
        ScoreHistory(config.paths.history_database()).upsert(rows)
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return config, scored


@pytest.fixture()
def monitored(store, raw_dir, monkeypatch):
    """run_monitor on the store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config, scored = store

    def run(model: str, out: Path, build: dict | None = None):
        cfg = config.model_copy(update={"build": config.build.model_copy(update=build or {})})
        result = run_monitor(cfg, raw_dir, AS_OF.date(), out, model=model, log_to_mlflow=False)
        table = pd.read_csv(out / "backtest.csv", keep_default_na=False, na_values=[""])
        return result, table.set_index(["as_of", "segment"])

    return run, scored


def _engaged(tables, rows: pd.DataFrame, period: int, horizon: int = 180) -> np.ndarray:
    """label_engaged by plain filtering: a qualifying touchpoint in at least half of the
    horizon's periods [as_of + period * j, as_of + period * (j + 1)), the last cut at the end."""
    acts = tables["activities"]
    acts = acts[acts["activity_type"].isin(ACTIVITIES)]
    times = pd.concat(
        [
            acts[["partner_id", "occurred_at"]].set_axis(["partner_id", "t"], axis=1),
            tables["leads"][["partner_id", "created_at"]].set_axis(["partner_id", "t"], axis=1),
            tables["deals"][["partner_id", "created_at"]].set_axis(["partner_id", "t"], axis=1),
        ]
    )
    by_partner = {pid: pd.to_datetime(g["t"]).to_numpy() for pid, g in times.groupby("partner_id")}
    n_periods = math.ceil(horizon / period)
    out = []
    for pid, as_of in zip(
        rows["partner_id"].astype(str), pd.to_datetime(rows["as_of"]), strict=True
    ):
        stamps = by_partner.get(pid, np.array([], dtype="datetime64[ns]"))
        end = as_of + pd.Timedelta(days=horizon)
        active = 0
        for j in range(n_periods):
            lo = as_of + pd.Timedelta(days=period * j)
            hi = min(as_of + pd.Timedelta(days=period * (j + 1)), end)
            active += bool(((stamps >= lo.to_datetime64()) & (stamps < hi.to_datetime64())).any())
        out.append(int(active >= math.ceil(0.5 * n_periods)))
    return np.array(out)


def test_the_backtest_labels_with_the_monitored_models_definition(monitored, raw_dir, tmp_path):
    """Version 2 was trained on 'engaged in half of the 15-day periods': monitored under the
    default config (30-day periods) its batch was judged against 30-day labels, and version
    1's batch, whose predictions are for 30-day labels, was pooled in."""
    run, scored = monitored
    result, table = run("2", tmp_path / "m")
    tables = load_raw(raw_dir, write_quarantine=False).tables
    rows = scored[BY_2]
    y15, y30 = _engaged(tables, rows, 15), _engaged(tables, rows, 30)
    assert y15.mean() != y30.mean()  # the two definitions tell apart on this program
    assert {a for a, _ in table.index} == {"all", BY_2}
    row = table.loc[(BY_2, "all")]
    assert row["rows"] == len(rows)
    assert row["engagement_realised_rate"] == pytest.approx(y15.mean(), rel=1e-12)
    assert row["engagement_roc_auc"] == pytest.approx(
        roc_auc_score(y15, rows["pred_engagement"]), rel=1e-9
    )
    # version 1's batch: left out, counted, said in a check, the summary, monitor.json, the page
    n1 = len(scored[BY_1])
    check = next(c for c in result.checks if c.name == "backtest.label_definition")
    assert check.status == "info" and check.value == n1
    said = (
        f"{n1:,} of {n1 + len(rows):,} completed rows were scored by versions that defined "
        f"their labels otherwise (version 1 ({n1:,} rows): engagement_period_days 30 where the "
        "monitored model has 15): left out of the backtest table and checks"
    )
    assert check.detail == said
    assert f"  backtest labels: {said}" in result.summary()
    payload = json.loads((tmp_path / "m" / "monitor.json").read_text())
    field = payload["backtest_label_definition"]
    assert field["source"] == "model" and field["from_config"] == []
    assert field["definition"]["engagement_period_days"] == 15
    assert field["definition"]["horizon_days"] == 180
    assert field["other_definition_rows"] == n1 and field["unknown_definition_rows"] == 0
    assert field["versions"]["1"] == {
        "rows": n1,
        "status": "other",
        "differences": {"engagement_period_days": [30, 15]},
    }
    assert field["versions"]["2"]["status"] == "same"
    # judged by version 2's own training data end (its model's metadata): out of time
    window = payload["backtest_training_window"]
    assert window["completed_rows"] == len(rows) and window["in_training_window_rows"] == 0
    assert window["versions"]["2"]["source"] == "version"
    assert window["versions"]["2"]["training_data_end"] == "2025-09-01 00:00:00"
    html = (tmp_path / "m" / "monitor.html").read_text(encoding="utf-8")
    assert 'id="backtest-label-definition"' in html


def test_the_champion_reads_its_own_batch_and_leaves_version_2s_out(monitored, raw_dir, tmp_path):
    """Monitored with the champion (30-day periods) under a config of 15-day periods: the
    labels are the champion's, version 2's batch is left out."""
    run, scored = monitored
    result, table = run("champion", tmp_path / "m", {"engagement_period_days": 15})
    tables = load_raw(raw_dir, write_quarantine=False).tables
    rows = scored[BY_1]
    assert {a for a, _ in table.index} == {"all", BY_1}
    row = table.loc[(BY_1, "all")]
    assert row["engagement_realised_rate"] == pytest.approx(
        _engaged(tables, rows, 30).mean(), rel=1e-12
    )
    assert result.backtest_labels.other_definition == len(scored[BY_2])
    assert result.backtest_labels.versions["2"]["differences"] == {
        "engagement_period_days": [15, 30]
    }


def test_a_model_without_a_manifest_is_labelled_by_the_config_and_says_so(
    monitored, raw_dir, tmp_path
):
    run, scored = monitored
    result, table = run("3", tmp_path / "m", {"engagement_period_days": 15})
    labels = result.backtest_labels
    assert labels.source == "config" and labels.definition["engagement_period_days"] == 15
    touchpoints = "/".join(QUALIFYING_TOUCHPOINTS)
    n1, n2 = len(scored[BY_1]), len(scored[BY_2])
    assert labels.note() == (
        "the monitored model's training run logged no training-set manifest: labels built with "
        "the config's engagement_period_days 15, engagement_min_share 0.5, "
        f"engagement_touchpoints {touchpoints}; {n1:,} of {n1 + n2:,} completed rows were scored "
        f"by versions that defined their labels otherwise (version 1 ({n1:,} rows): "
        "engagement_period_days 30 where the monitored model has 15): left out of the backtest "
        "table and checks"
    )
    assert f"  backtest labels: {labels.note()}" in result.summary()
    # version 2's rows share the config's definition: labelled with it
    tables = load_raw(raw_dir, write_quarantine=False).tables
    assert table.loc[(BY_2, "all")]["engagement_realised_rate"] == pytest.approx(
        _engaged(tables, scored[BY_2], 15).mean(), rel=1e-12
    )


def test_each_version_is_compared_on_the_settings_it_records():
    """Touchpoints compare as a set; a setting a version does not record is not held against
    it; unknown versions are kept and counted."""
    ours = {
        "horizon_days": 180,
        "engagement_period_days": 30,
        "engagement_min_share": 0.5,
        "engagement_touchpoints": ["meeting", "qbr"],
    }
    rows = pd.DataFrame({"model_version": ["1", "1", "2", "3", "", "9", None, "4"]})
    known = {
        "1": dict(ours),
        "2": {**ours, "engagement_touchpoints": ["qbr", "meeting"]},
        "3": {"horizon_days": 180},
        "4": {**ours, "horizon_days": 90, "engagement_min_share": 0.6},
    }
    keep, split = split_by_label_definition(rows, LabelDefinitionSplit(ours), known.get)
    np.testing.assert_array_equal(keep, [1, 1, 1, 1, 1, 1, 1, 0])
    assert split.rows == 8 and split.other_definition == 1 and split.unknown == 3
    assert split.versions[""] == {"rows": 2, "status": "unknown", "differences": {}}
    assert split.versions["4"]["differences"] == {
        "horizon_days": [90, 180],
        "engagement_min_share": [0.6, 0.5],
    }
    assert split.note() == (
        "1 of 8 completed rows were scored by versions that defined their labels otherwise "
        "(version 4 (1 rows): horizon_days 90 where the monitored model has 180, "
        "engagement_min_share 0.6 where the monitored model has 0.5): left out of the backtest "
        "table and checks; 3 rows of versions whose label definition is unknown were labelled "
        "with the monitored model's"
    )


def test_a_history_of_other_definitions_only_skips_the_backtest_with_that_reason():
    """Every completed row scored by a version of another definition: the backtest checks say
    so, not 'no completed horizon yet'."""
    from partnerscore.features.config import MonitorConfig
    from partnerscore.serving.monitor import _backtest_checks, phase_checks
    from partnerscore.training.backtest import (
        BACKTEST_COLUMNS,
        PHASE_BACKTEST_COLUMNS,
        training_window_split,
    )

    ours = {"horizon_days": 90, "engagement_period_days": 15}
    rows = pd.DataFrame({"model_version": ["1"] * 40})
    _, split = split_by_label_definition(
        rows, LabelDefinitionSplit(ours), {"1": {"horizon_days": 180}}.get
    )
    window = training_window_split(pd.DataFrame(), 90)
    reason = (
        "every completed row (40) was scored by a version that defined its labels otherwise "
        "than the monitored model: nothing to backtest with its labels yet"
    )
    empty = pd.DataFrame(columns=list(BACKTEST_COLUMNS))
    (check,) = _backtest_checks(empty, MonitorConfig(), window, split)
    assert check.name == "backtest.batches" and check.status == "skip"
    assert check.detail == reason
    (check,) = phase_checks(
        pd.DataFrame(columns=list(PHASE_BACKTEST_COLUMNS)), MonitorConfig(), window, split
    )
    assert check.status == "skip" and check.detail == reason


def test_settings_the_model_does_not_record_come_from_the_config_and_are_named():
    from partnerscore.features.config import BuildConfig
    from partnerscore.serving.monitor import backtest_build

    config = BuildConfig(engagement_period_days=20, engagement_min_share=0.4, phase_days=45)
    build, split = backtest_build(config, {"engagement_period_days": 15}, 90, None)
    assert (build.horizon_days, build.engagement_period_days) == (90, 15)
    assert build.engagement_min_share == 0.4 and build.phase_days == 45
    assert split.source == "model and config"
    assert split.from_config == ("engagement_min_share", "engagement_touchpoints")
    assert split.note().startswith(
        "the monitored model's training manifest does not record them: labels built with the "
        "config's engagement_min_share 0.4, engagement_touchpoints meeting/"
    )
    # a manifest edited into an invalid share: the config's settings, and said so
    build, split = backtest_build(config, {"engagement_min_share": 0}, 180, 30)
    assert (build.engagement_min_share, build.phase_days) == (0.4, 30)
    assert split.source == "config"
    assert split.note().startswith(
        "the monitored model's training manifest records invalid label settings: labels built "
        "with the config's engagement_period_days 20, engagement_min_share 0.4"
    )
    # the model's own definition, complete: nothing to say
    full = {"engagement_period_days": 15, "engagement_min_share": 0.5}
    full["engagement_touchpoints"] = ["qbr"]
    _, split = backtest_build(config, full, 180, None)
    assert split.source == "model" and split.note() == ""
    assert split.definition["engagement_touchpoints"] == ["qbr"]


def test_each_versions_manifest_is_downloaded_once(monitored, tmp_path, monkeypatch):
    """The monitor downloaded a version's training/manifest.json twice, once for its training
    end and once for its label definition (version 2's, monitoring the champion). Counted
    where MLflow copies a local artifact, per file (one run's manifest is one file)."""
    from collections import Counter

    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    downloads = Counter()
    real = LocalArtifactRepository._download_file

    def counted(repo, remote_file_path, local_path):
        path = Path(repo.artifact_dir, remote_file_path).resolve()
        if path.name == Path(MANIFEST_ARTIFACT).name:
            downloads[path] += 1
        return real(repo, remote_file_path, local_path)

    monkeypatch.setattr(LocalArtifactRepository, "_download_file", counted)
    run, _ = monitored
    # the monitored version's manifest and that of each other version that scored rows (3's
    # is looked for: it has none)
    for model, manifests in (("champion", 2), ("2", 2), ("3", 3)):
        downloads.clear()
        run(model, tmp_path / model)
        assert len(downloads) == manifests, downloads
        assert set(downloads.values()) == {1}, downloads


def test_rows_of_another_horizon_are_completed_under_their_own(store, raw_dir, tmp_path):
    """A row of a version with another horizon was counted 'completed' (and left out) when
    the monitored model's 180 days had passed: version 5's 365-day rows of 2025-10-01 (not
    complete by 2026-07-01) were counted, version 6's 90-day rows of 2026-03-01 (complete)
    were not. Each row is now judged complete under its own version's horizon; the counts
    are checked against a plain row-by-row reading."""
    from partnerscore.serving.monitor import run_backtest
    from partnerscore.training.reference import load_reference_profile

    config, _ = store
    rows = ScoreHistory(config.paths.history_database()).read()
    later = rows[rows["as_of"] == pd.Timestamp(BY_1)].assign(as_of=pd.Timestamp("2026-03-01"))
    rows = pd.concat([rows, later], ignore_index=True)
    odd = np.arange(len(rows)) % 2 == 1
    rows["model_version"] = np.select(
        [rows["as_of"] == pd.Timestamp(BY_2), rows["as_of"] == pd.Timestamp(BY_1)],
        ["4", np.where(odd, "5", "1")],
        "6",
    )
    history = ScoreHistory(f"sqlite:///{tmp_path / 'h.db'}")
    history.upsert(rows)
    ours = {"horizon_days": 180, "engagement_period_days": 30}
    known = {
        "1": ours,
        "4": {**ours, "horizon_days": 365},
        "5": {**ours, "horizon_days": 365},
        "6": {**ours, "horizon_days": 90},
    }
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        import mlflow

        mlflow.set_tracking_uri(config.paths.tracking_uri())
        reference = load_reference_profile("models:/partnerscore@champion")
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    raw = load_raw(raw_dir, write_quarantine=False)
    _, _, _, split = run_backtest(
        history, raw, AS_OF, reference, config, definition=ours, version_definition=known.get
    )
    # the twin: row by row, completed when as_of + its own version's horizon <= 2026-07-01
    stored = history.read()
    stored = stored[pd.to_numeric(stored["age_days"]) <= 180]
    completed = {}
    for version, as_of in zip(stored["model_version"], stored["as_of"], strict=True):
        days = known[version]["horizon_days"]
        if pd.Timestamp(as_of) + pd.Timedelta(days=days) <= AS_OF:
            completed[version] = completed.get(version, 0) + 1
    assert "5" not in completed and completed["6"] > 0  # the two cases are present
    assert split.rows == sum(completed.values())
    assert split.other_definition == completed["4"] + completed["6"]
    assert {v: s["rows"] for v, s in split.versions.items()} == completed


def test_a_rows_horizon_is_its_versions_when_it_records_a_valid_one():
    """Hand-edited manifests (NaN, inf, 1e400, fractions, text, booleans) fall back to the
    monitored model's horizon, and completion agrees with a plain Timestamp comparison."""
    from partnerscore.features.core import MAX_DAYS
    from partnerscore.serving.monitor import horizon_completed, row_horizons

    recorded = [365, 90.0, 90.5, math.nan, math.inf, -5, 0, True, "365", 10**400, None]
    recorded += [MAX_DAYS, MAX_DAYS + 1]
    expected = [365, 90, 180, 180, 180, 180, 180, 180, 180, 180, 180, MAX_DAYS, 180]
    known = {str(i): {"horizon_days": v} for i, v in enumerate(recorded)}
    rows = pd.DataFrame({"model_version": [*known, "", None]})
    days = row_horizons(rows, 180, known.get)
    assert days.tolist() == [*expected, 180, 180]
    # the twin in Python datetimes (to year 9999): 2200-01-01 + 100 years is past pandas' range
    from datetime import timedelta

    dates = ["1900-01-01", "2200-01-01", "2025-06-01", "2025-06-01", "2026-01-02"]
    as_of = pd.Series(pd.to_datetime(dates))
    end = pd.Timestamp("2026-07-01")
    span = np.array([MAX_DAYS, MAX_DAYS, 395, 396, 180])
    plain = [
        t.to_pydatetime() + timedelta(days=int(d)) <= end.to_pydatetime()
        for t, d in zip(as_of, span, strict=True)
    ]
    assert horizon_completed(as_of, span, end).tolist() == plain
    assert plain == [True, False, True, False, True]
