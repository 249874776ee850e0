"""The public Python API: DataFrames and paths give the same results; strict feature frames."""

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import partnerscore
from partnerscore.features.core import PartnerscoreError
from partnerscore.features.validate import load_raw


def test_version_and_lazy_import():
    assert partnerscore.__version__ and partnerscore.__version__ != "0+unknown"
    code = "import sys, partnerscore; partnerscore.__version__; print(sorted(m for m in ('mlflow', 'lightgbm', 'sklearn', 'shap', 'pandas') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert set(partnerscore.__all__) <= set(dir(partnerscore))
    assert partnerscore.PartnerscoreError is PartnerscoreError  # the README catches it so
    with pytest.raises(AttributeError):
        partnerscore.nothing_here  # noqa: B018


def test_frames_and_folder_validate_alike(raw_dir, sim_tables):
    from_frames = partnerscore.validate({k: v for k, v in sim_tables.items()})
    from_files = load_raw(raw_dir, write_quarantine=False)
    assert from_frames.report.ignored == ["truth"]
    for name, frame in from_files.tables.items():
        pd.testing.assert_frame_equal(from_frames.tables[name], frame, check_dtype=False)


def test_frames_get_row_level_quarantine(sim_tables):
    tables = {k: v.copy() for k, v in sim_tables.items() if k != "truth"}
    deals = tables["deals"].astype(object)
    deals.loc[0, "amount"] = "lots"
    deals.loc[1, "partner_id"] = "NOBODY"
    tables["deals"] = deals
    data = partnerscore.validate(tables)
    t = data.report.tables["deals"]
    assert t.quarantined == 2 and t.valid_rows + t.quarantined == t.input_rows
    reasons = data.quarantine["deals"]["reason"].tolist()
    assert "amount 'lots' is not a number" in reasons[0]
    assert "unknown partner_id 'NOBODY'" in reasons[1]
    with pytest.raises(PartnerscoreError, match="frames: missing required table 'deals'"):
        partnerscore.validate({"partners": tables["partners"]})


@pytest.fixture(scope="module")
def api_model(built_dir, tmp_path_factory):
    """A model trained through the API on a DataFrame (trials=0, no plots)."""
    store = tmp_path_factory.mktemp("api_store")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    training = pd.read_parquet(built_dir / "training_set.parquet")
    result = partnerscore.train(training, tracking_uri=uri, trials=0, config={"plots": False})
    return uri, result


def test_build_from_frames_matches_the_build_job(sim_tables, built_dir):
    frame = partnerscore.build({k: v for k, v in sim_tables.items()})
    job = pd.read_parquet(built_dir / "training_set.parquet")
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), job, check_dtype=False)
    assert frame.attrs["snapshots_dropped"] > 0


def add_a_column(scores: pd.DataFrame) -> None:
    """A column added to scored rows, as a user goes on: without pandas' "DataFrame is highly
    fragmented" PerformanceWarning (each of the ~250 columns was a block of its own)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)
        scores["owner_note"] = "call"


def test_train_and_score_on_frames(api_model, sim_tables):
    uri, result = api_model
    assert result.version
    # artifacts live beside the store's database, never in ./mlruns of the current directory
    store = Path(uri.removeprefix("sqlite:///")).parent
    assert any((store / "artifacts").rglob("MLmodel"))
    model = partnerscore.load_model(result.version, tracking_uri=uri)
    tables = {k: v for k, v in sim_tables.items()}
    scores = partnerscore.score(model, raw=tables, as_of="2026-04-01")
    assert len(scores) and np.isfinite(scores["score"]).all()
    add_a_column(scores)
    # the same model through a prebuilt feature frame gives the same scores
    from partnerscore.features.pipeline import build_scoring_frame

    feats = build_scoring_frame(partnerscore.validate(tables), pd.Timestamp("2026-04-01"))
    again = partnerscore.score(model, features=feats)
    np.testing.assert_allclose(again["score"], scores["score"], rtol=0, atol=1e-9)
    assert (again["unseen_categories"] == "").all()
    by_age = partnerscore.score(result.version, raw=tables, at_age=60, tracking_uri=uri)
    assert (by_age["age_days"] == 60).all()
    # the forecast of those scores: by scoring date, and by the month the revenue arrives
    in_scope = scores[~scores["out_of_scope"]]
    totals = partnerscore.forecast(scores, by="tier")
    total = totals[totals["level"] == "total"].iloc[0]
    assert total["expected_revenue"] == pytest.approx(in_scope["pred_revenue"].sum())
    monthly = partnerscore.forecast(scores, by=(), phased=True)
    assert monthly["expected_revenue"].sum() == pytest.approx(total["expected_revenue"])
    assert (monthly["period_start"].dt.day == 1).all() and len(monthly) in (6, 7)
    with pytest.raises(PartnerscoreError, match="missing column 'nope'"):
        partnerscore.forecast(scores, by="nope")
    with pytest.raises(PartnerscoreError, match="not a registered model"):
        partnerscore.load_model("/tmp", tracking_uri=uri)


def test_load_model_reads_a_sqlite_registry_without_mlflow(api_model, sim_tables):
    """A local registry's version is read from its files (MLflow not imported, as in the score
    job) and is the model MLflow loads: same version, same scores, to the last bit."""
    uri, result = api_model
    code = (
        "import sys, partnerscore\n"
        f"m = partnerscore.load_model({result.version!r}, tracking_uri={uri!r})\n"
        "print(m.metadata['version'], 'mlflow' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [str(result.version), "False"]

    import mlflow

    from partnerscore.models.pyfunc import load_partner_model

    fast = partnerscore.load_model("challenger", tracking_uri=uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    slow = load_partner_model(f"models:/partnerscore/{result.version}")
    assert fast.metadata["version"] == str(result.version)
    tables = dict(sim_tables)
    a = partnerscore.score(fast, raw=tables, as_of="2026-04-01")
    b = partnerscore.score(slow, raw=tables, as_of="2026-04-01")
    pd.testing.assert_frame_equal(a, b)


def test_feature_frames_are_checked_strictly(api_model, sim_tables):
    uri, result = api_model
    model = partnerscore.load_model(result.version, tracking_uri=uri)
    from partnerscore.features.pipeline import build_scoring_frame

    feats = build_scoring_frame(partnerscore.validate(dict(sim_tables)), pd.Timestamp("2026-04-01"))
    with pytest.raises(PartnerscoreError, match=r"missing feature column '.+' and 2 more"):
        partnerscore.score(model, features=feats.drop(columns=feats.columns[3:6]))
    loose = partnerscore.score(
        model, features=feats.drop(columns=feats.columns[3:6]), allow_missing_features=True
    )
    assert len(loose) == len(feats)
    bad = feats.astype({"deals_won_todate": object})
    bad.loc[4, "deals_won_todate"] = "seven"
    with pytest.raises(PartnerscoreError, match=r"column 'deals_won_todate' row 5: 'seven'"):
        partnerscore.score(model, features=bad)
    odd = feats.copy()
    odd.loc[2, "region"] = "atlantis"
    flagged = partnerscore.score(model, features=odd)
    assert flagged.loc[2, "unseen_categories"] == "region=atlantis"
    assert (flagged["unseen_categories"] != "").sum() == 1
    with pytest.raises(PartnerscoreError, match="missing column 'as_of'"):
        partnerscore.score(model, features=feats.drop(columns=["as_of"]))
    dup = pd.concat([feats.head(2), feats.head(1)])
    with pytest.raises(PartnerscoreError, match="row 3: duplicate"):
        partnerscore.score(model, features=dup)


# --- the API and the batch jobs are twins; bad input is one line; inputs are left alone -------


def _same_columns(api: pd.DataFrame, job: pd.DataFrame) -> None:
    """Every column the API returns equals the job's (the job adds history, peers, flags)."""
    assert set(api.columns) <= set(job.columns), set(api.columns) - set(job.columns)
    job = job[list(api.columns)].reset_index(drop=True)
    pd.testing.assert_frame_equal(api.reset_index(drop=True), job, check_dtype=False)


def test_score_and_forecast_equal_the_cli_jobs(sim_tables, raw_dir, store_config, tmp_path):
    """score(raw, as_of) / score(raw, at_age) / score(features) / forecast equal the files of
    `score` and `forecast` for the same model and program: scores, tiers, drivers, intervals,
    forecast rows. Nothing compared them before."""
    from partnerscore.features.pipeline import build_scoring_frame
    from partnerscore.serving.forecast import run_forecast
    from partnerscore.serving.score import run_score, run_score_features

    uri = store_config.paths.tracking_uri()
    model = partnerscore.load_model("champion", tracking_uri=uri)
    tables = dict(sim_tables)
    as_of = "2026-03-01"
    run_score(raw_dir, pd.Timestamp(as_of).date(), "champion", tmp_path / "a.parquet",
              store_config, record_history=False)  # fmt: skip
    api = partnerscore.score(model, raw=tables, as_of=as_of)
    job = pd.read_parquet(tmp_path / "a.parquet")
    assert len(api) == len(job) > 0
    _same_columns(api, job)

    run_score(raw_dir, None, "champion", tmp_path / "g.parquet", store_config, at_age=60,
              record_history=False)  # fmt: skip
    _same_columns(
        partnerscore.score("champion", raw=tables, at_age=60, tracking_uri=uri),
        pd.read_parquet(tmp_path / "g.parquet"),
    )

    feats = build_scoring_frame(partnerscore.validate(tables), pd.Timestamp(as_of))
    feats.to_parquet(tmp_path / "features.parquet")
    run_score_features(tmp_path / "features.parquet", "champion", tmp_path / "f.parquet",
                       store_config, record_history=False)  # fmt: skip
    _same_columns(
        partnerscore.score(model, features=feats), pd.read_parquet(tmp_path / "f.parquet")
    )

    for by, phased in ((("tier", "region"), False), (("tier",), True)):
        run_forecast(store_config, tmp_path / "a.parquet", tmp_path / "fc.parquet", by=by,
                     phased=phased)  # fmt: skip
        pd.testing.assert_frame_equal(
            partnerscore.forecast(api, by=by, phased=phased),
            pd.read_parquet(tmp_path / "fc.parquet"),
            check_dtype=False,
        )


def test_the_mlflow_model_scores_as_the_api(model_store, sim_tables):
    """mlflow.pyfunc.load_model(...).predict(features) == score(features=...) for the same
    rows, every column (MLflow hands the frame on with as_of in nanoseconds)."""
    import mlflow

    from partnerscore.features.pipeline import build_scoring_frame

    uri = model_store.paths.tracking_uri()
    feats = build_scoring_frame(partnerscore.validate(dict(sim_tables)), pd.Timestamp("2026-03-01"))
    api = partnerscore.score(partnerscore.load_model("1", tracking_uri=uri), features=feats)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    served = mlflow.pyfunc.load_model("models:/partnerscore/1").predict(feats)
    pd.testing.assert_frame_equal(api, served, check_dtype=False)
    assert api["model_version"].eq("1").all()
    for frame in (api, served):
        add_a_column(frame)


def test_train_logs_the_hash_of_its_configuration(api_model, built_dir, tmp_path):
    """The API's config hash covered the training set's manifest only: a model trained with
    another seed was reported as `identical_to` the first and stamped the same
    model_config_hash. Now it is the hash `partnerscore train --trials 0` logs (with the
    fixture's `train.plots: false`)."""
    from partnerscore.serving.config import AppConfig
    from partnerscore.training.config import TrainConfig

    uri, first = api_model
    cli_hash = AppConfig.model_validate({"train": {"trials": 0, "plots": False}}).hash()
    model = partnerscore.load_model(first.version, tracking_uri=uri)
    training = pd.read_parquet(built_dir / "training_set.parquet")
    feats = training.drop_duplicates("partner_id").head(5)
    assert partnerscore.score(model, features=feats)["model_config_hash"].eq(cli_hash).all()
    other = TrainConfig(trials=0, plots=False, seed=TrainConfig().seed + 1)
    again = _train_beside_a_notebooks_mlflow(training, uri, other, tmp_path)
    assert again.identical_to == []
    rescored = partnerscore.score(
        partnerscore.load_model(again.version, tracking_uri=uri), features=feats
    )
    assert rescored["model_config_hash"].ne(cli_hash).all()


def _train_beside_a_notebooks_mlflow(training, uri, config, tmp_path):
    """train() inside a notebook that logs to its own MLflow store: an active run of the
    caller's is refused in one line (MLflow's own error came after the tracking URI had moved:
    the caller's run could not even end); the caller's tracking and registry URIs, experiment
    and MLFLOW_* variables are as they were after train and after load_model through MLflow
    (they pointed at partnerscore's store)."""
    import os

    import mlflow

    mine = f"sqlite:///{tmp_path / 'mine.db'}"
    mlflow.set_tracking_uri(mine)
    mlflow.set_experiment("my-notebook")
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")
    env = {name: os.environ.get(name) for name in names}
    experiment = mlflow.get_experiment_by_name("my-notebook").experiment_id
    active = pytest.raises(PartnerscoreError, match="train: an MLflow run is active in this")
    with mlflow.start_run() as mine_run, active:
        partnerscore.train(training, tracking_uri=uri, config=config)
    assert mlflow.MlflowClient(mine).get_run(mine_run.info.run_id).info.status == "FINISHED"
    result = partnerscore.train(training, tracking_uri=uri, config=config)
    partnerscore.load_model(f"runs:/{result.run_id}/model", tracking_uri=uri)  # through MLflow
    assert mlflow.get_tracking_uri() == mine and mlflow.get_registry_uri() == mine
    assert {name: os.environ.get(name) for name in names} == env
    with mlflow.start_run() as later:
        assert later.info.experiment_id == experiment
    return result


@pytest.fixture(scope="module")
def small_tables():
    tables = partnerscore.simulate(partners=80, seed=5)
    tables.pop("truth")
    return tables


def _caller_copy(value):
    if isinstance(value, pd.DataFrame):
        return value.copy(deep=True)
    if isinstance(value, dict):
        return {k: _caller_copy(v) for k, v in value.items()}
    return value


def _assert_unchanged(before, after):
    if isinstance(before, pd.DataFrame):
        pd.testing.assert_frame_equal(before, after)
        assert before.attrs == after.attrs
    elif isinstance(before, dict):
        assert before.keys() == after.keys()
        for key in before:
            _assert_unchanged(before[key], after[key])


def _tables_with(tables, name, change):
    out = {k: v.copy() for k, v in tables.items()}
    out[name] = change(out[name])
    return out


BAD_SCORE_CALLS = {
    # as_of: a date as text (YYYY-MM-DD, as `score --as-of`), date, datetime at midnight
    "as_of zoned, not midnight UTC": (
        dict(as_of=pd.Timestamp("2026-06-01", tz="Europe/Berlin")),
        r"as_of: .* is 2026-05-31 22:00:00 UTC, not a date",
    ),
    "as_of offset text": (dict(as_of="2026-06-01T00:00:00+02:00"), "as_of: expected a date"),
    "as_of month 13": (
        dict(as_of="2026-13-01"),
        r"as_of: expected a date YYYY-MM-DD, got '2026-13-01'",
    ),
    "as_of today": (dict(as_of="today"), "as_of: expected a date YYYY-MM-DD, got 'today'"),
    "as_of month first": (dict(as_of="06/01/2026"), "as_of: expected a date YYYY-MM-DD"),
    "as_of empty": (dict(as_of=""), "as_of: expected a date YYYY-MM-DD"),
    "as_of number": (dict(as_of=20260601), "as_of: expected a date .* got int 20260601"),
    "as_of NaT": (dict(as_of=pd.NaT), "as_of: expected a date, got NaT"),
    "as_of list": (dict(as_of=["2026-06-01"]), "as_of: expected a date .* got list"),
    "as_of time of day": (dict(as_of=pd.Timestamp("2026-06-01 12:30")), "not a date"),
    "as_of stale": (dict(as_of="2030-01-01"), "as_of 2030-01-01: more than 45 days after"),
    "as_of before everyone": (dict(as_of="1990-01-01"), "no partner signed before this date"),
    "at_age negative": (dict(at_age=-5), r"at_age -5: expected a number of days from 0"),
    "at_age fraction": (dict(at_age=90.5), "at_age: expected a whole number of days, got 90.5"),
    "at_age text": (dict(at_age="90"), "at_age: expected a whole number of days, got '90'"),
    "at_age bool": (dict(at_age=True), "at_age: expected a whole number of days, got True"),
    "at_age huge": (dict(at_age=10**6), "at_age 1000000: expected a number of days"),
    "raw list": (dict(raw=[], as_of="2026-06-01"), "raw: expected a folder .* got list"),
    "raw frame": (dict(raw=pd.DataFrame(), as_of="2026-06-01"), "raw: expected .* got DataFrame"),
    "model none": (dict(model=None, as_of="2026-06-01"), "score: model: expected .* got NoneType"),
    "typo deal": (
        dict(rename=("deals", "deal"), as_of="2026-06-01"),
        "frames: unknown table 'deal': did you mean 'deals'",
    ),
    "typo activity": (
        dict(rename=("activities", "activity"), as_of="2026-06-01"),
        "frames: unknown table 'activity': did you mean 'activities'",
    ),
    "duplicate column": (
        dict(change=("deals", lambda f: pd.concat([f, f[["amount"]]], axis=1)), as_of="2026-06-01"),
        r"<frames>/deals: column 'amount' appears twice",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SCORE_CALLS))
def test_bad_score_arguments_are_one_line(api_model, small_tables, case):
    """Each was a TypeError, DateParseError, KeyError or AttributeError, or silently scored
    nothing ('', NaT, 20260601 read as nanoseconds), or scored what the CLI refuses (a stale
    as_of, at_age 90.5 or True, a time of day)."""
    uri, result = api_model
    kwargs, message = BAD_SCORE_CALLS[case]
    kwargs = dict(kwargs)
    tables = small_tables
    if "rename" in kwargs:
        old, new = kwargs.pop("rename")
        tables = {(new if k == old else k): v for k, v in tables.items()}
    if "change" in kwargs:
        tables = _tables_with(tables, *kwargs.pop("change"))
    model = (
        kwargs.pop("model", None)
        if "model" in kwargs
        else partnerscore.load_model(result.version, tracking_uri=uri)
    )
    kwargs.setdefault("raw", tables)
    before = _caller_copy(kwargs["raw"])
    with pytest.raises(PartnerscoreError, match=message) as caught:
        partnerscore.score(model, **kwargs)
    assert "\n" not in str(caught.value)
    _assert_unchanged(before, kwargs["raw"])


def test_good_as_of_and_at_age_forms_agree(api_model, small_tables):
    uri, result = api_model
    model = partnerscore.load_model(result.version, tracking_uri=uri)
    import datetime as dt

    before = _caller_copy(small_tables)
    text = partnerscore.score(model, raw=small_tables, as_of="2026-06-01")
    for when in (
        dt.date(2026, 6, 1),
        dt.datetime(2026, 6, 1),
        pd.Timestamp("2026-06-01"),
        np.datetime64("2026-06-01"),
        pd.Timestamp("2026-06-01", tz="UTC"),
    ):
        pd.testing.assert_frame_equal(partnerscore.score(model, raw=small_tables, as_of=when), text)
    ages = partnerscore.score(model, raw=small_tables, at_age=90)
    for days in (np.int64(90), 90.0):
        pd.testing.assert_frame_equal(
            partnerscore.score(model, raw=small_tables, at_age=days), ages
        )
    _assert_unchanged(before, small_tables)


def test_odd_feature_frames(api_model, small_tables):
    """Duplicated or multi-level column names were an AttributeError / ValueError, an Arrow
    timestamp as_of an ArrowTypeError; other dtypes score as the plain frame, the caller's
    frame unchanged."""
    from partnerscore.features.pipeline import build_scoring_frame

    uri, result = api_model
    model = partnerscore.load_model(result.version, tracking_uri=uri)
    feats = build_scoring_frame(partnerscore.validate(small_tables), pd.Timestamp("2026-06-01"))
    plain = partnerscore.score(model, features=feats)
    numeric = [c for c in model.feature_names if pd.api.types.is_numeric_dtype(feats[c])]
    text = [c for c in model.feature_names if c not in numeric]
    same = {
        "arrow timestamp as_of": feats.assign(
            as_of=feats["as_of"].astype("timestamp[us][pyarrow]")
        ),
        "as_of in seconds": feats.assign(as_of=feats["as_of"].astype("datetime64[s]")),
        "as_of zoned UTC": feats.assign(as_of=feats["as_of"].dt.tz_localize("UTC")),
        "numbers as objects": feats.astype(dict.fromkeys(numeric, object)),
        "nullable floats": feats.astype(dict.fromkeys(numeric, "Float64")),
        "categories": feats.astype(dict.fromkeys(text, "category")),
        "arrow text": feats.astype(dict.fromkeys([*text, "partner_id"], "string[pyarrow]")),
        "another index": feats.set_axis(feats.index * 3 + 11),
        "a MultiIndex": feats.set_index(["partner_id", "as_of"], drop=False),
    }
    for name, frame in same.items():
        before = frame.copy(deep=True)
        scored = partnerscore.score(model, features=frame)
        pd.testing.assert_frame_equal(scored.drop(columns="as_of"), plain.drop(columns="as_of"),
                                      obj=name)  # fmt: skip
        pd.testing.assert_frame_equal(frame, before, obj=name)
    wrong = {
        "column 'tier' appears twice": pd.concat([feats, feats[["tier"]]], axis=1),
        "column 'as_of' appears twice": pd.concat([feats, feats[["as_of"]]], axis=1),
        "columns with several levels": feats.set_axis(
            pd.MultiIndex.from_tuples([(c, "x") for c in feats.columns]), axis=1
        ),
        "a feature frame carries its own as_of; drop as_of": None,
        "features: expected a DataFrame or a CSV/Parquet file, got dict": {"a": 1},
    }
    for message, frame in wrong.items():
        kwargs = {"as_of": "2026-06-01"} if frame is None else {}
        with pytest.raises(PartnerscoreError, match=message):
            partnerscore.score(model, features=feats if frame is None else frame, **kwargs)


def test_other_functions_say_bad_input_in_one_line(api_model, small_tables):
    uri, result = api_model
    scores = partnerscore.score(
        partnerscore.load_model(result.version, tracking_uri=uri),
        raw=small_tables,
        as_of="2026-06-01",
    )
    calls = {
        r"simulate: partners: Input should be greater than or equal to 1 \(got 0\)": lambda: (
            partnerscore.simulate(partners=0)
        ),
        "simulate: nope: Extra inputs are not permitted": lambda: partnerscore.simulate(
            partners=5, nope=1
        ),
        "raw: expected a folder .* got int": lambda: partnerscore.validate(5),
        r"model: expected an alias, a version number or a models:/ URI, got NoneType": lambda: (
            partnerscore.load_model(None, tracking_uri=uri)
        ),
        r"^model: expected an alias": lambda: partnerscore.load_model("-1", tracking_uri=uri),
        r"^tracking_uri: no model registry found at .*nowhere.db \(train\(\) creates one": lambda: (
            partnerscore.load_model("1", tracking_uri=uri.replace("mlflow.db", "nowhere.db"))
        ),
        r"^period fortnight: expected one of": lambda: partnerscore.forecast(
            scores, period="fortnight"
        ),
        r"^coverage: expected a share": lambda: partnerscore.forecast(scores, coverage=2),
        r"^cutoffs: missing column 'partner_id'": lambda: partnerscore.build(
            small_tables, cutoffs=pd.DataFrame({"x": [1]})
        ),
        "training_set: expected a frame from build.* got list": lambda: partnerscore.train(
            [], tracking_uri=uri
        ),
        r"^training set: only 10 rows": lambda: partnerscore.train(
            partnerscore.build(small_tables).head(10), tracking_uri=uri
        ),
        "cutoffs: expected a DataFrame of .* got list": lambda: partnerscore.build(
            small_tables, cutoffs=[1]
        ),
        r"^config: x: Extra inputs are not permitted \(got 1\)": lambda: partnerscore.validate(
            small_tables, config={"x": 1}
        ),
        "config: expected a ValidateConfig or a dict of its settings, got list": lambda: (
            partnerscore.validate(small_tables, config=[])
        ),
        r"^policy: nope: Extra inputs": lambda: partnerscore.score(
            result.version,
            raw=small_tables,
            as_of="2026-06-01",
            tracking_uri=uri,
            policy={"nope": 1},
        ),
        "scores: expected score rows .* got list": lambda: partnerscore.forecast([1]),
    }
    for message, call in calls.items():
        with pytest.raises(PartnerscoreError, match=message) as caught:
            call()
        assert "\n" not in str(caught.value), message
    assert not Path(uri.removeprefix("sqlite:///")).with_name("nowhere.db").exists()
    # settings as dicts (were AttributeErrors), a Period date column read as its start dates
    # (was quarantined as "'20308' is not a date")
    assert partnerscore.build(small_tables, config={"ages": [30]})["age_days"].eq(30).all()
    deals = small_tables["deals"]
    periods = dict(
        small_tables, deals=deals.assign(created_at=deals["created_at"].dt.to_period("D"))
    )
    days = dict(small_tables, deals=deals.assign(created_at=deals["created_at"].dt.normalize()))
    pd.testing.assert_frame_equal(
        partnerscore.validate(periods).tables["deals"], partnerscore.validate(days).tables["deals"]
    )
    # by=None: totals only, as by=() (was a TypeError)
    pd.testing.assert_frame_equal(
        partnerscore.forecast(scores, by=None), partnerscore.forecast(scores, by=())
    )


def test_score_from_a_folder_writes_nothing(api_model, raw_dir, tmp_path):
    """score(raw=FOLDER) and build(FOLDER) wrote (and cleared) FOLDER/quarantine/<table>.csv,
    though the docstrings and the README say nothing is written."""
    import shutil

    uri, result = api_model
    folder = tmp_path / "raw"
    shutil.copytree(raw_dir, folder)
    deals = pd.read_csv(folder / "deals.csv", dtype=str)
    deals.loc[0, "amount"] = "lots"
    deals.to_csv(folder / "deals.csv", index=False)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    scores = partnerscore.score(result.version, raw=folder, as_of="2026-04-01", tracking_uri=uri)
    assert len(scores)
    assert len(partnerscore.build(folder))  # nor does build
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert partnerscore.validate(folder).quarantine["deals"]["_row"].tolist() == [1]
    assert (folder / "quarantine" / "deals.csv").exists()  # validate() does write them


def test_frames_quarantine_the_rows_the_validate_job_does(small_tables, tmp_path):
    """validate(frames).quarantine holds the rows and reasons `partnerscore validate` writes to
    quarantine/<table>.csv for the same tables as files (nothing compared them)."""
    from partnerscore.features.simulate import write_tables
    from partnerscore.serving.cli import main

    tables = dict(small_tables)
    deals = tables["deals"].astype({"amount": object, "status": object})
    deals.loc[0, "amount"] = -5.0
    deals.loc[1, "partner_id"] = "NOBODY"
    deals.loc[2, "status"] = "maybe"
    deals.loc[3, "amount"] = "lots"
    deals.loc[4, "created_at"] = pd.Timestamp("1990-01-01")
    partners = tables["partners"].copy()
    partners.loc[5, "tier"] = None
    tables |= {"deals": deals, "partners": pd.concat([partners, partners.iloc[[7]]])}
    api = partnerscore.validate(tables)
    write_tables(tables, tmp_path, fmt="csv")
    assert main(["validate", str(tmp_path)]) == 0
    for name in ("partners", "deals", "trainings"):
        job = pd.read_csv(tmp_path / "quarantine" / f"{name}.csv", dtype=str, keep_default_na=False)
        assert api.quarantine[name]["_row"].astype(str).tolist() == job["_row"].tolist()
        assert api.quarantine[name]["reason"].tolist() == job["reason"].tolist()
    assert len(api.quarantine["deals"]) >= 5 and len(api.quarantine["partners"]) == 2


@pytest.mark.parametrize(
    "uri, said",
    [
        ("foo://x", "unsupported scheme 'foo'"),
        ("sqlite:/x.db", "not a database URL SQLAlchemy can read"),
        ("postgres://someone:secret@127.0.0.1:1/mlflow", "PostgreSQL is postgresql://"),
        ("mlflow.db", "MLFLOW_ALLOW_FILE_STORE"),
    ],
)
def test_an_unsupported_tracking_uri_is_one_line(uri, said, tmp_path, monkeypatch):
    """train, load_model and score gave MLflow's own exception (several lines, e.g.
    UnsupportedModelRegistryStoreURIException listing MLflow's registry schemes), or
    SQLAlchemy's "Could not parse SQLAlchemy URL"; now one line naming the argument."""
    monkeypatch.chdir(tmp_path)
    frame = pd.DataFrame({"partner_id": ["P1"]})
    shown = uri.replace("secret", "***")
    calls = [
        lambda: partnerscore.train(frame, tracking_uri=uri, trials=0),
        lambda: partnerscore.load_model("champion", tracking_uri=uri),
        lambda: partnerscore.score("champion", features=frame, tracking_uri=uri),
    ]
    for call in calls:
        with pytest.raises(PartnerscoreError) as err:
            call()
        message = str(err.value)
        assert message.startswith(f"tracking_uri: cannot open the MLflow store '{shown}': ")
        assert said in message and "supported: sqlite:///FILE" in message, message
        assert "secret" not in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


_NOTEBOOK_TRAIN = """
import logging, os, sys
import partnerscore
{prelude}
levels = {{n: logging.getLogger(n).level for n in ("mlflow", "mlflow.pyfunc", "alembic")}}
env = {{k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}}
result = partnerscore.train(sys.argv[1], tracking_uri=sys.argv[2], trials=0)
model = partnerscore.load_model(f"runs:/{{result.run_id}}/model", tracking_uri=sys.argv[2])
after = {{n: logging.getLogger(n).level for n in ("mlflow", "mlflow.pyfunc", "alembic")}}
assert after == ({expected} or levels), (levels, after)
assert {{k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}} == env
from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM
assert MLFLOW_LOGGING_STREAM.enabled
print("trained", result.version)
"""


@pytest.mark.parametrize(
    "prelude, levels",
    [
        # mlflow not imported yet: afterwards its loggers as `import mlflow` sets them
        ("", {"mlflow": logging.INFO, "mlflow.pyfunc": logging.NOTSET, "alembic": logging.WARNING}),
        (
            "import mlflow\nlogging.getLogger('mlflow.pyfunc').setLevel(logging.DEBUG)\n"
            "logging.getLogger('alembic').setLevel(logging.INFO)",
            None,
        ),
    ],
    ids=["fresh", "caller_levels"],
)
def test_train_in_a_notebook_prints_nothing_of_mlflow(prelude, levels, built_dir, tmp_path):
    """What a notebook user saw of ``train`` on a new SQLite store: MLflow's INFO lines
    ("Creating initial MLflow database tables...", "Validating input example against model
    signature"), the pyfunc pickling WARNING, two "Downloading artifacts" progress bars and
    "Successfully registered model 'partnerscore'." / "Created version '1' ..." (and a bar
    again from load_model through MLflow). Now nothing; the caller's logger levels and
    MLFLOW_* variables are as they were, MLflow's own printing on again."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    script = _NOTEBOOK_TRAIN.format(prelude=prelude, expected=levels)
    done = subprocess.run(
        [sys.executable, "-c", script, str(built_dir), uri],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "trained 1", done.stdout
    said = done.stderr
    for noise in ("INFO", "WARNING", "Downloading artifacts", "Uploading", "%|", "registered",
                  "Created version"):  # fmt: skip
        assert noise not in said, said[-3000:]
    assert said.strip() == "", said[-3000:]


def test_what_the_mlflow_signature_refuses_and_the_api_accepts(model_store, sim_tables):
    """The README's list of inputs MLflow's signature enforcement refuses before the model's
    own checks, while score(features=...) takes them: MLflow 3 has no column type that
    takes them and still declares one (mlflow/models/utils.py::_enforce_mlflow_datatype:
    int -> double only up to int32, or an int64 of 0/1 only; no rule for category; zoned
    datetimes refused; AnyType takes anything but declares nothing and leaves a JSON
    request's dates as text). Each cast as the README says scores as the API does."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from partnerscore.features.pipeline import build_scoring_frame

    uri = model_store.paths.tracking_uri()
    feats = build_scoring_frame(partnerscore.validate(dict(sim_tables)), pd.Timestamp("2026-03-01"))
    feats = feats.head(40).reset_index(drop=True)
    api = partnerscore.score(partnerscore.load_model("1", tracking_uri=uri), features=feats)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    served = mlflow.pyfunc.load_model("models:/partnerscore/1")
    assert feats["age_days"].max() > 1 and feats["age_days"].notna().all()
    refused = {
        "int64": (feats.assign(age_days=feats["age_days"].astype("int64")), "int64 to float64"),
        "Int64": (feats.assign(age_days=feats["age_days"].astype("Int64")), "Int64 to float64"),
        "category": (feats.assign(region=feats["region"].astype("category")), "region"),
        "zoned as_of": (feats.assign(as_of=feats["as_of"].dt.tz_localize("UTC")), "timezone"),
    }
    for case, (frame, said) in refused.items():
        assert_frame = partnerscore.score(served.unwrap_python_model().model, features=frame)
        pd.testing.assert_frame_equal(assert_frame, api, check_dtype=False, obj=case)
        with pytest.raises(MlflowException, match=said):
            served.predict(frame)
    accepted = {
        "int32": feats.assign(age_days=feats["age_days"].astype("int32")),
        "int64 of 0/1": feats.assign(age_days=1).astype({"age_days": "int64"}),
    }
    for case, frame in accepted.items():
        pd.testing.assert_frame_equal(
            served.predict(frame),
            partnerscore.score(served.unwrap_python_model().model, features=frame),
            check_dtype=False,
            obj=case,
        )


def test_jobs_overlapping_in_threads_give_the_callers_mlflow_settings_back(monkeypatch):
    """Two API jobs overlapping in threads (a server's threads loading models): each saved the
    MLflow settings it found and gave them back as it ended. The first to end put the caller's
    back while the other still ran (progress bars and INFO lines on again mid-job), and the
    last gave back the quiet settings it had found: MLflow stayed quiet for the caller for
    good. Now the first job saves, the last gives back; a job that raises gives back too."""
    import threading

    from partnerscore.serving import api
    from partnerscore.training.quiet import MLFLOW_ENVIRONMENT, MLFLOW_LOGGERS

    for name in MLFLOW_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    loggers = {name: logging.getLogger(name) for name in MLFLOW_LOGGERS}
    for logger in loggers.values():
        monkeypatch.setattr(logger, "level", logging.DEBUG)  # the caller's

    def settings():
        env = {name: os.environ.get(name) for name in MLFLOW_ENVIRONMENT}
        return env, {name: logger.level for name, logger in loggers.items()}

    caller = settings()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def job_a():
        with api._caller_mlflow_kept("load_model", run_allowed=True, uses_mlflow=False):
            a_in.set()
            assert b_in.wait(30)
        a_out.set()

    def job_b():
        assert a_in.wait(30)
        with api._caller_mlflow_kept("load_model", run_allowed=True, uses_mlflow=False):
            b_in.set()
            assert a_out.wait(30)
            seen["b after a"] = settings()

    threads = [threading.Thread(target=job_a), threading.Thread(target=job_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    quiet = ({n: v for n, v in MLFLOW_ENVIRONMENT.items()}, dict(MLFLOW_LOGGERS))
    assert seen["b after a"] == quiet  # the other job still runs: still quiet
    assert settings() == caller  # both ended: the caller's
    kept = api._caller_mlflow_kept("train", run_allowed=True, uses_mlflow=False)
    with pytest.raises(RuntimeError, match="boom"), kept:
        assert settings() == quiet
        raise RuntimeError("boom")
    assert settings() == caller and api._KEPT["jobs"] == 0


def test_a_ctrl_c_during_trains_registration_is_warned_of(built_dir, tmp_path, monkeypatch):
    """A notebook's interrupt while train() registered its version (its last step) is held
    until the version is whole, and train() returns it. Nothing said the interrupt came; the
    CLI says it in a note. Now a RuntimeWarning names it and the version."""
    import signal

    import mlflow

    from partnerscore.features import parallel

    set_alias = mlflow.MlflowClient.set_registered_model_alias

    def interrupted(self, *args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # held: the registration is under way
        return set_alias(self, *args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", interrupted)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    training = pd.read_parquet(built_dir / "training_set.parquet")
    said = "Ctrl-C came as train registered its version: version 1 is whole, and train returned"
    no_plots = {"plots": False}
    with pytest.warns(RuntimeWarning, match=said):
        result = partnerscore.train(training, tracking_uri=uri, trials=0, config=no_plots)
    assert result.version == "1" and parallel.HELD_AT_COMMIT["signal"] is None
    version = mlflow.MlflowClient(tracking_uri=uri).get_model_version("partnerscore", "1")
    assert version.aliases == ["challenger"] and "partnerscore.incomplete" not in version.tags
    monkeypatch.undo()
    with warnings.catch_warnings(record=True) as seen:  # no interrupt: no such warning
        warnings.simplefilter("always")
        assert (
            partnerscore.train(training, tracking_uri=uri, trials=0, config=no_plots).version == "2"
        )
    assert not [w for w in seen if "came as train registered" in str(w.message)]
