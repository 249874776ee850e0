import json

import pytest

from partnerscore.features.core import PartnerscoreError
from partnerscore.serving.config import AppConfig, load_config


def test_defaults_and_hash_stable():
    assert load_config() == AppConfig()
    assert load_config().hash() == AppConfig().hash()


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("c.json", json.dumps({"train": {"trials": 3}, "build": {"ages": [90, 30]}})),
        ("c.toml", "[train]\ntrials = 3\n[build]\nages = [90, 30]\n"),
        ("c.yaml", "train:\n  trials: 3\nbuild:\n  ages: [90, 30]\n"),
    ],
)
def test_override_file_formats(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.train.trials == 3
    assert cfg.build.ages == (30, 90)
    assert cfg.simulate == AppConfig().simulate
    assert cfg.hash() != AppConfig().hash()


def test_the_hash_ignores_where_files_live(tmp_path):
    """The same settings at another data folder, MLflow store or history database stamped
    another config_hash on every score row (a SQLite and a PostgreSQL run of one program
    differed); the hash identifies what changes results, so paths are left out."""
    elsewhere = AppConfig.model_validate(
        {
            "paths": {
                "data_dir": str(tmp_path / "d"),
                "mlflow_dir": str(tmp_path / "m"),
                "history_url": "postgresql+psycopg://u@h/db",
            }
        }
    )
    assert elsewhere.hash() == AppConfig().hash()
    assert elsewhere.train_arguments()["config_hash"] == AppConfig().hash()
    for key, value in (("train", {"seed": 8}), ("policy", {"revenue_weight": 0.4})):
        assert AppConfig.model_validate({key: value}).hash() != AppConfig().hash(), key


def test_unknown_key_names_the_key(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train": {"trails": 3}}))
    with pytest.raises(PartnerscoreError, match=r"c.json: config key 'train.trails'"):
        load_config(path)


def test_bad_value_and_bad_syntax(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("build:\n  horizon_days: -4\n")
    with pytest.raises(PartnerscoreError, match="build.horizon_days"):
        load_config(path)
    path.write_text("build: [unclosed\n")
    with pytest.raises(PartnerscoreError, match="cannot parse config"):
        load_config(path)
    with pytest.raises(PartnerscoreError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_tracking_uri_env_override(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = AppConfig.model_validate({"paths": {"mlflow_dir": str(tmp_path / "ml")}})
    assert cfg.paths.tracking_uri() == f"sqlite:///{tmp_path / 'ml' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert cfg.paths.tracking_uri() == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    "argv",
    [
        ["build", "--raw", "raw", "--out", "f"],
        ["train", "--features", "f"],
        ["score", "--raw", "raw", "--as-of", "2026-06-01", "--out", "s.csv"],
    ],
    ids=["build", "train", "score"],
)
def test_an_engagement_period_past_the_horizon_is_refused(argv, tmp_path, capsys, monkeypatch):
    """A period longer than the horizon is cut at its end: label_engaged silently became "any
    qualifying touchpoint in the horizon". Every command reading the file refuses it first."""
    from partnerscore.serving.cli import main

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text("build:\n  horizon_days: 30\n  engagement_period_days: 60\n")
    assert main([*argv, "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: --config {path}: build.engagement_period_days 60 is longer than build.horizon_days 30: "
        "label_engaged would be one period cut at the horizon (any qualifying touchpoint in "
        "it); give an engagement period of at most the horizon\n"
    )
    assert list(tmp_path.iterdir()) == [path]  # nothing read, nothing written
    path.write_text("build:\n  horizon_days: 30\n  engagement_period_days: 30\n")
    assert load_config(path).build.engagement_period_days == 30  # a period as long: one period


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgresql://u:secret@db.example:port/x", "not a database URL (a port that is no number"),
        ("sqlite:/x.db", "not a database URL (unparsable"),
        ("mongodb://u:secret@db.example/x", "unknown database URL scheme 'mongodb'"),
        ("mysql://u:secret@db.example/x", "scheme 'mysql' needs a driver that is not installed"),
    ],
)
def test_a_bad_history_url_says_what_is_wrong(tmp_path, url, said):
    """A port that is no number was "unknown database URL scheme 'postgresql'"."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"paths": {"history_url": url}}))
    with pytest.raises(PartnerscoreError) as err:
        load_config(path)
    assert "config key 'paths.history_url'" in str(err.value) and said in str(err.value)
    assert "secret" not in str(err.value)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///x.db",
        "sqlite://",
        "postgresql://u:secret@127.0.0.1:1/x",
        "postgres://u:secret@127.0.0.1:1/x",  # SQLAlchemy's old alias: the stores open it
        "postgresql+psycopg://u:secret@127.0.0.1:1/x",
        "postgres+psycopg://u:secret@127.0.0.1:1/x",
        "mysql://u:secret@127.0.0.1:1/x",  # a known dialect, its driver not installed
        "mongodb://u:secret@127.0.0.1:1/x",
        "sqlite:/x.db",
        "postgresql://u:secret@db.example:port/x",
    ],
)
def test_the_config_accepts_a_history_url_if_and_only_if_the_stores_open_it(
    tmp_path, url, monkeypatch
):
    """Two rules disagreed: `postgres://` was refused by the config although both stores open
    it, `mysql://` accepted although neither can. One rule now decides both. A store that
    accepts the URL tries to connect: nothing listens there, so it cannot reach the server
    (ServiceUnavailable, exit 69), which is accepting the URL."""
    from partnerscore.features.core import ServiceUnavailable
    from partnerscore.models import stores
    from partnerscore.serving.history import store_engine

    monkeypatch.setattr(stores, "PROBE_RETRY_SECONDS", ())  # refused at once: no retry

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"paths": {"history_url": url}}))
    try:
        load_config(path)
        config_error = None
    except PartnerscoreError as exc:
        config_error = str(exc)
    try:
        store_engine("score history", url, lambda: "URL").dispose()
        store_error = None
    except ServiceUnavailable:  # the URL opened; its server is not there
        store_error = None
    except PartnerscoreError as exc:
        store_error = str(exc)
    assert (config_error is None) == (store_error is None), (config_error, store_error)
    if store_error is not None:  # the same reason, one line, no password
        reason = store_error.removeprefix("score history URL: ")
        assert config_error.endswith(reason) and "\n" not in config_error
        assert "secret" not in config_error


def test_the_hash_follows_the_content_of_the_files_it_names(tmp_path):
    """`policy.playbook_path` and `score.overrides_path` entered the hash by their path: an
    edited playbook stamped the same hash as before the edit, and a moved copy of the same
    file another one. They now enter by the file's bytes (SHA-256)."""
    import shutil

    from partnerscore.models.policy import SHIPPED_PLAYBOOK

    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    shutil.copy(SHIPPED_PLAYBOOK, here / "playbook.yaml")
    (here / "overrides.csv").write_text("partner_id,tier,reason,expires\nP1,A,deal,2030-01-01\n")
    shutil.copytree(here, there)

    def config(folder):
        return AppConfig.model_validate(
            {
                "policy": {"playbook_path": str(folder / "playbook.yaml")},
                "score": {"overrides_path": str(folder / "overrides.csv")},
            }
        )

    first = config(here).hash()
    assert config(there).hash() == first  # a moved copy: the same settings
    assert first != AppConfig().hash()
    with open(here / "playbook.yaml", "a", encoding="utf-8") as handle:
        handle.write("# edited\n")
    edited = config(here).hash()
    assert edited != first  # the same path, other content
    (here / "overrides.csv").write_text("partner_id,tier,reason,expires\nP1,B,deal,2030-01-01\n")
    assert config(here).hash() not in (first, edited)
    assert config(there).hash() == first  # the copy's content did not change


@pytest.mark.parametrize("key", ["policy.playbook_path", "score.overrides_path"])
def test_a_file_the_hash_cannot_read_is_one_line(tmp_path, key):
    section, name = key.split(".")
    for path, said in ((tmp_path / "gone.yaml", "not found"), (tmp_path, "is a folder")):
        cfg = AppConfig.model_validate({section: {name: str(path)}})
        with pytest.raises(PartnerscoreError) as err:
            cfg.hash()
        message = str(err.value)
        assert message.startswith(f"{path}: ") and said in message and key in message, message
        assert "\n" not in message
