"""The backtest leaves out history rows whose outcome period lies in the data the model that
scored them was trained on (``as_of + horizon <= training_data_end``): an in-sample fit is no
forecast. A champion trained on the test program's data to 2025-08-31 only scores batches
inside and after that window; the monitor reads the whole program (data to 2026-06-30)."""

import dataclasses
import json
from datetime import date

import mlflow
import numpy as np
import pandas as pd
import pytest

from partnerscore.features.validate import load_raw
from partnerscore.models.bundle import parse_data_end
from partnerscore.models.pyfunc import load_partner_model
from partnerscore.serving.history import ScoreHistory
from partnerscore.serving.monitor import (
    monitored_training_end,
    registry_manifests,
    registry_training_ends,
    run_backtest,
    run_monitor,
)
from partnerscore.serving.score import run_score
from partnerscore.training.backtest import (
    TrainingWindowSplit,
    in_training_window,
    training_window_split,
)
from partnerscore.training.reference import load_reference_profile, logged_manifest

AS_OF = date(2026, 7, 1)
EARLY_END = pd.Timestamp("2025-09-01")  # build --data-end 2025-08-31: the whole day
INSIDE = "2025-01-01"  # + 180 days = 2025-06-30: inside the early champion's training data
AFTER = ("2025-06-01", "2025-10-01")  # + 180 days: 2025-11-28, 2026-03-30 (out of time)
URI = "models:/partnerscore/1"


@pytest.fixture()
def early(early_store, tmp_path, monkeypatch):
    """The early store (conftest: trained to 2025-08-31) with a fresh score history."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = early_store.paths.model_copy(update={"data_dir": str(tmp_path / "data")})
    return early_store.model_copy(update={"paths": paths})


def _data_end(built_dir) -> pd.Timestamp:
    return pd.Timestamp(json.loads((built_dir / "manifest.json").read_text())["data_end"])


def _score(raw, dates, config, tmp_path) -> dict[str, pd.DataFrame]:
    """Score each date into the config's history; each batch's in-scope rows (age <= 180)."""
    out = {}
    for as_of in dates:
        path = tmp_path / f"s{as_of}.csv"
        run_score(raw, pd.Timestamp(as_of).date(), "champion", path, config)
        scores = pd.read_csv(path, keep_default_na=False, na_values=[""])
        out[as_of] = scores[scores["age_days"] <= 180]
    return out


def test_the_model_records_its_training_data_end(store_config, built_dir):
    """train writes the manifest's data_end into the model; an older model falls back to the
    manifest its run logged."""
    mlflow.set_tracking_uri(store_config.paths.tracking_uri())
    model = load_partner_model(URI)
    end = _data_end(built_dir)
    assert model.metadata["training_data_end"] == f"{end:%Y-%m-%d %H:%M:%S}"
    assert model.training_data_end == end
    manifest = logged_manifest(URI)
    assert parse_data_end(manifest["data_end"]) == end
    older = dataclasses.replace(
        model, metadata={k: v for k, v in model.metadata.items() if k != "training_data_end"}
    )
    assert older.training_data_end is None
    assert monitored_training_end(older, manifest) == end  # from the run's training/manifest.json
    assert logged_manifest("models:/partnerscore/99") is None  # not a version
    assert monitored_training_end(older, None) is None
    # other versions are read from their runs' manifests, each once; unknown ones give None
    manifests = registry_manifests("models:/partnerscore@champion", "", None, "partnerscore")
    ends = registry_training_ends(manifests, "", None)
    assert ends("1") == end and ends("99") is None and ends("") is None and ends("x") is None
    mine = registry_manifests(URI, "1", manifest, "p")
    assert registry_training_ends(mine, "1", end - pd.Timedelta(days=9))("1") == (
        end - pd.Timedelta(days=9)
    )


def test_in_sample_rows_are_counted_apart_and_the_checks_read_the_rest(early, raw_dir, tmp_path):
    scored = _score(raw_dir, (INSIDE, *AFTER), early, tmp_path)
    result = run_monitor(early, raw_dir, AS_OF, tmp_path / "m", log_to_mlflow=False)
    table = pd.read_csv(tmp_path / "m" / "backtest.csv", keep_default_na=False, na_values=[""])
    assert set(table["as_of"]) == {"all", *AFTER}
    overall = table[table["segment"] == "all"].set_index("as_of")
    n_after = sum(len(scored[d]) for d in AFTER)
    n_inside = len(scored[INSIDE])
    assert n_inside > 30 and overall.loc["all", "rows"] == n_after
    # the all-batches row is the out-of-time batches' rows only
    pred = sum(scored[d]["pred_revenue"].sum() for d in AFTER)
    assert overall.loc["all", "revenue_predicted_mean"] == pytest.approx(pred / n_after)
    realised = sum(overall.loc[d, "revenue_realised_mean"] * overall.loc[d, "rows"] for d in AFTER)
    bias = pred / realised - 1
    by_name = {c.name: c for c in result.checks}
    check = by_name["backtest.revenue_bias.all_batches"]
    assert check.value == pytest.approx(bias, rel=1e-9)
    assert f"over {n_after:,} scored partners" in check.detail
    assert f"batch {AFTER[1]}" in by_name["backtest.revenue_bias.latest_batch"].detail
    assert "2 batches" in by_name["backtest.trend.revenue_normalized_gini"].detail
    phases = pd.read_csv(tmp_path / "m" / "backtest_phases.csv")
    assert (phases["rows"] == n_after).all()
    # the in-sample rows: counted, and said in the check, the summary, monitor.json and the page
    window = by_name["backtest.in_training_window"]
    assert window.status == "info" and window.value == n_inside
    said = (
        f"{n_inside:,} of {n_inside + n_after:,} completed rows lie inside the training window "
        f"of the model that scored them (as_of + 180 days <= "
    )
    assert window.detail.startswith(said)
    assert f"backtest window: {said}" in result.summary()
    payload = json.loads((tmp_path / "m" / "monitor.json").read_text())
    field = payload["backtest_training_window"]
    assert field["in_training_window_rows"] == n_inside
    assert field["out_of_time_rows"] == n_after and field["completed_rows"] == n_inside + n_after
    assert field["batches_in_training_window"] == [INSIDE]
    assert field["versions"] == {
        "1": {
            "training_data_end": f"{EARLY_END:%Y-%m-%d %H:%M:%S}",
            "source": "version",
            "rows": n_inside + n_after,
            "in_window": n_inside,
        }
    }
    html = (tmp_path / "m" / "monitor.html").read_text(encoding="utf-8")
    assert 'id="backtest-training-window"' in html and f"{n_inside:,} of" in html


def test_only_in_sample_rows_skip_the_backtest_with_that_reason(early, raw_dir, tmp_path):
    scored = _score(raw_dir, (INSIDE,), early, tmp_path)
    result = run_monitor(early, raw_dir, AS_OF, tmp_path / "m", log_to_mlflow=False)
    backtest = [c for c in result.checks if c.section == "backtest"]
    by_name = {c.name: c for c in backtest}
    n = len(scored[INSIDE])
    assert set(by_name) == {
        "backtest.batches",
        "backtest.in_training_window",
        "backtest.revenue_phase_share_gap",
    }
    reason = f"every completed row ({n:,}) lies inside the training window"
    for name in ("backtest.batches", "backtest.revenue_phase_share_gap"):
        assert by_name[name].status == "skip" and by_name[name].detail.startswith(reason)
    assert by_name["backtest.in_training_window"].value == n
    assert result.backtest.empty and result.backtest_phases.empty
    html = (tmp_path / "m" / "monitor.html").read_text(encoding="utf-8")
    assert f"No backtest: {reason}" in html


def test_each_row_is_judged_by_the_version_that_scored_it(early, built_dir, raw_dir, tmp_path):
    """Version 2 (trained to 2026-06-30, as the session champion) scored the 2025-06-01 batch:
    in its window, though not in version 1's (to 2025-08-31). A version nobody can place is
    judged by the monitored model's end."""
    _score(raw_dir, (INSIDE, *AFTER), early, tmp_path)
    rows = ScoreHistory(early.paths.history_database()).read()
    rows["model_version"] = np.where(rows["as_of"] == pd.Timestamp(AFTER[0]), "2", "1")
    store = ScoreHistory(f"sqlite:///{tmp_path / 'two.db'}")
    store.upsert(rows)
    mlflow.set_tracking_uri(early.paths.tracking_uri())
    reference = load_reference_profile(URI)
    raw = load_raw(raw_dir, write_quarantine=False)
    end1, end2 = EARLY_END, _data_end(built_dir)
    cut = pd.Timestamp(AS_OF)

    def backtest(ends, fallback=None):
        return run_backtest(store, raw, cut, reference, early, None, None, ends, fallback)[:3]

    joined, table, _ = backtest({"1": end1, "2": end2}.get)
    as_of = joined["as_of"].dt.strftime("%Y-%m-%d")
    np.testing.assert_array_equal(joined["in_training_window"], as_of.isin([INSIDE, AFTER[0]]))
    assert set(table["as_of"]) == {"all", AFTER[1]}
    split = training_window_split(joined, 180)
    assert split.in_window == int(as_of.isin([INSIDE, AFTER[0]]).sum())
    assert split.batches == [INSIDE, AFTER[0]] and split.by_monitored == split.unknown == 0
    assert f"{end2:%Y-%m-%d %H:%M:%S} for version 2" in split.note()
    # judged by the monitored model (version 1) instead, version 2's batch would count
    joined, table, _ = backtest({"1": end1}.get, end1)
    assert set(table["as_of"]) == {"all", *AFTER}
    split = training_window_split(joined, 180)
    assert split.by_monitored == int((as_of == AFTER[0]).sum()) and split.unknown == 0
    assert split.versions["2"]["source"] == "monitored"
    assert f"{split.by_monitored:,} rows of versions whose training data end is unknown" in (
        split.note()
    )
    # no end known at all: every row is kept, and counted
    joined, table, _ = backtest(None)
    assert set(table["as_of"]) == {"all", INSIDE, *AFTER}
    split = training_window_split(joined, 180)
    assert split.in_window == 0 and split.unknown == len(joined)
    assert "have no known training data end" in split.note()


@pytest.mark.parametrize(
    ("as_of", "end", "inside"),
    [
        ("2025-06-01", "2025-11-28 00:00:00", True),  # the horizon's last instant: inside
        ("2025-06-01", "2025-11-27 23:59:59", False),
        ("2025-06-01", None, False),  # unknown: kept
        ("2199-12-31", "2199-12-31", False),  # far dates do not wrap
        ("1900-01-01", "2199-12-31", True),
    ],
)
def test_in_training_window_at_the_boundary(as_of, end, inside):
    ends = pd.Series([pd.Timestamp(end) if end else pd.NaT])
    got = in_training_window(pd.Series([pd.Timestamp(as_of)]), ends, 180)
    assert got.tolist() == [inside]


def test_the_split_of_no_rows_says_nothing():
    split = training_window_split(pd.DataFrame(), 180)
    assert split == TrainingWindowSplit(180) and split.note() == "" and split.out_of_time == 0


def test_json_says_the_split_as_monitor_json_does(tmp_path):
    """``--json``'s ``backtest_window`` is monitor.json's ``backtest_training_window``: it was
    the split's attribute names (``in_window``, ``rows``), without the out-of-time count or the
    note the file and the summary give."""
    from partnerscore.serving.monitor import MonitorResult

    split = TrainingWindowSplit(
        180,
        rows=10,
        in_window=4,
        versions={"1": {"training_data_end": "2025-09-01 00:00:00", "source": "version",
                        "rows": 10, "in_window": 4}},
        batches=["2025-01-01"],
    )  # fmt: skip
    result = MonitorResult(
        tmp_path, AS_OF, URI, "1", [], pd.DataFrame(), pd.DataFrame(), backtest_window=split
    )
    payload = json.loads(json.dumps(result.json_payload(), default=str))
    assert payload["backtest_window"] == json.loads(json.dumps(split.to_dict()))
    assert payload["backtest_window"]["out_of_time_rows"] == 6
    assert payload["backtest_window"]["note"].startswith("4 of 10 completed rows")


def test_the_summary_counts_every_check(tmp_path):
    """The summary line left out the info checks: '1,284 checks, 0 alarm, 0 warn, 1094 ok,
    186 skipped' on the demo (4 info checks: anomalous partners, volume, scope, staleness)."""
    from partnerscore.features.checks import Check
    from partnerscore.serving.monitor import SEVERITY, MonitorResult

    statuses = ["ok"] * 1094 + ["info"] * 4 + ["skip"] * 186 + ["warn"] * 2 + ["alarm"]
    checks = [
        Check(f"c{i}", "quality", "x", "all", "s", 1.0, None, None, None, status)
        for i, status in enumerate(statuses)
    ]
    result = MonitorResult(tmp_path, AS_OF, URI, "1", checks, pd.DataFrame(), pd.DataFrame())
    line = result.summary().splitlines()[0]
    assert "1,287 checks, 1 alarm, 2 warn, 1,094 ok, 4 info, 186 skipped" in line
    assert sum(result.json_payload()["counts"][s] for s in SEVERITY) == len(checks)
