"""A score job killed while publishing its files leaves a set its readers can tell.

``score --out FILE`` renamed the scores file, then its rejects file, into the folder, after
the history and the decision ledger had committed the batch: a SIGKILL (out of memory,
``kill -9``) between the two renames left this run's scores beside the previous run's
rejects, and ``report``, ``forecast``, ``monitor --scores`` and ``experiment assign
--scores`` read them with no sign. The job now renames ``<stem>.manifest.json`` last, listing
each file's SHA-256, with a mark beside it while the renames run; the readers refuse only a
publish evidently interrupted (a scores file copied elsewhere, without its manifest, is read as
before). The child process kills itself at the exact rename (a sitecustomize hook), so
nothing here depends on timing.
"""

import json
import shutil
import signal
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest
from support import assert_said_left_publish, killed_at_rename

import partnerscore
from partnerscore.features.core import PartnerscoreError, check_listed, companion_manifest
from partnerscore.serving.forecast import run_forecast
from partnerscore.serving.monitor import _batch_scores
from partnerscore.serving.report import read_scores

FILES = ("scores.parquet", "scores.rejects.csv", "scores.manifest.json")
AGAIN = "run `partnerscore score` again"


def _score(cli_config, raw_dir, out, as_of, when="after", renames=0, options=()):
    config, env = cli_config
    env = dict(env)
    if renames:
        killed_at_rename(env, out.parent.parent / "hook", out.parent, renames, when)
    return subprocess.run(
        [sys.executable, "-m", "partnerscore.serving.cli", *options, "score"]
        + ["--raw", str(raw_dir)]
        + ["--as-of", as_of, "--out", str(out), "--config", str(config), "--workers", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _rows(database, as_of):
    """(rows, distinct keys) of the history and of the ledger at ``as_of``."""
    with sqlite3.connect(database) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        counts = {}
        for table in ("score_history_v2", "score_decisions"):
            assert table in tables, tables
            counts[table] = conn.execute(
                f"SELECT COUNT(*), COUNT(DISTINCT partner_id || '|' || model_version) "
                f"FROM {table} WHERE as_of LIKE ?",
                (f"{as_of}%",),
            ).fetchone()
    return counts


def _readers(out, tmp_path, store_config):
    """Read ``out`` as report, experiment assign, forecast and monitor --scores do."""
    read_scores(out)  # report, experiment assign --scores, whatif
    partnerscore.forecast(out)
    run_forecast(store_config, out, tmp_path / "forecast.csv")
    _batch_scores(out, pd.Timestamp(pd.read_parquet(out)["as_of"].iloc[0]))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills a real process")
@pytest.mark.parametrize("when, renames", [("before", 1), ("after", 1), ("after", 2), ("after", 3)])
def test_a_score_killed_while_publishing_leaves_a_set_its_readers_tell(
    raw_dir, cli_config, store_config, tmp_path, when, renames
):
    out = tmp_path / "scores" / "scores.parquet"
    first = _score(cli_config, raw_dir, out, "2026-06-01")
    assert first.returncode == 0, first.stderr
    assert "note: " not in first.stderr  # no mark: nothing to say
    before = {name: (out.parent / name).read_bytes() for name in FILES}
    database = tmp_path / "data" / "scores" / "history.sqlite"
    # this month's batch has a partner row the contract refuses: a reject last month's lacks
    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    with open(raw / "partners.csv", "a", encoding="utf-8") as partners:
        partners.write("PBAD,Bad,not a date,silver,NA,healthcare,msp,2.0,27.0,3.0\n")
    job = _score(cli_config, raw, out, "2026-07-01", when, renames)
    assert job.returncode == -signal.SIGKILL, job.stderr
    left = {p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")}  # the kill's
    done = 0 if when == "before" else renames
    changed = {name for name in FILES if (out.parent / name).read_bytes() != before[name]}
    assert changed == set(FILES[:done]), changed  # in order, the manifest last
    # the history and the ledger committed the batch before the renames, whatever the point
    assert _rows(database, "2026-07-01") == {
        "score_history_v2": _rows(database, "2026-06-01")["score_history_v2"],
        "score_decisions": _rows(database, "2026-06-01")["score_decisions"],
    }
    if done in (0, len(FILES)):  # one run's whole set (the previous one's, or this one's)
        as_of = "2026-06-01" if done == 0 else "2026-07-01"
        assert check_listed(companion_manifest(out))["rows"] == len(pd.read_parquet(out))
        assert str(pd.read_parquet(out)["as_of"].iloc[0])[:10] == as_of
        _readers(out, tmp_path, store_config)
    else:  # a mix: every reader refuses it in one line
        for read in (
            read_scores,
            lambda p: run_forecast(store_config, p, tmp_path / "forecast.csv"),
            lambda p: _batch_scores(p, pd.Timestamp("2026-07-01")),
            partnerscore.forecast,  # the Python API's
        ):
            with pytest.raises(PartnerscoreError) as caught:
                read(out)
            message = str(caught.value)
            assert len(message.splitlines()) == 1, message
            assert "interrupted while publishing" in message and AGAIN in message, message
            assert message.startswith(f"{out}: not the file scores.manifest.json lists"), message
        assert not (tmp_path / "forecast.csv").exists()
        # the scores file copied elsewhere, on its own, is read as any file
        alone = tmp_path / "copy" / "scores.parquet"
        alone.parent.mkdir()
        shutil.copy(out, alone)
        assert len(read_scores(alone)) == len(pd.read_parquet(out))
    # the same batch again: its history and ledger rows replaced (no duplicates), the set whole.
    # It said nothing of the set it replaced until 2026-12-06: now one note names the folder,
    # the mark and the files not those the manifest in place lists; --json records it
    again = _score(cli_config, raw, out, "2026-07-01", options=["--json"])
    assert again.returncode == 0, again.stderr
    mixed = list(FILES[:done]) if 0 < done < len(FILES) else []  # in the manifest's order
    said = f"{out.parent}: an earlier score run was killed while publishing "
    said += "(.scores.manifest.json.publishing was left)"
    if mixed:
        said += f": {mixed[0]} " + (
            "and 1 more are not the files" if done == 2 else "is not the file"
        )
        said += " scores.manifest.json lists, a mix of two runs' files"
    else:
        said += ", but its files are the set scores.manifest.json lists"
    said += "; this run replaced them with its own"
    assert_said_left_publish(again, out.parent, "scores.manifest.json", mixed, said)
    assert _rows(database, "2026-07-01") == _rows(database, "2026-06-01")
    rows, keys = _rows(database, "2026-07-01")["score_history_v2"]
    assert rows == keys == len(pd.read_parquet(out))
    assert check_listed(companion_manifest(out))["rows"] == rows
    assert "PBAD" in (out.parent / "scores.rejects.csv").read_text()
    assert not (out.parent / ".scores.manifest.json.publishing").exists()
    _readers(out, tmp_path, store_config)
    # no temporaries but the killed job's (removed by a later run after a grace period)
    assert {p.name for p in out.parent.iterdir() if p.name.startswith(".")} <= left


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills a real process")
def test_score_features_after_a_first_publish_killed_says_no_manifest_tells_whose_files(
    built_dir, cli_config, tmp_path
):
    # score --features, a first publish into an empty folder killed after its first rename
    # (the scores file): no manifest says whose it is. The next run says so, and replaces it
    table = pd.read_parquet(built_dir / "training_set.parquet")
    table = table[table["age_days"] == 90].head(60)
    table.to_csv(tmp_path / "features.csv", index=False)
    out = tmp_path / "scores" / "scores.csv"
    out.parent.mkdir()
    config, env = cli_config

    def score(env, *options):
        return subprocess.run(
            [sys.executable, "-m", "partnerscore.serving.cli", *options, "score"]
            + ["--features", str(tmp_path / "features.csv"), "--out", str(out)]
            + ["--no-history", "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    job = score(killed_at_rename(dict(env), tmp_path / "hook", out.parent, 1))
    assert job.returncode == -signal.SIGKILL, job.stderr
    assert out.exists() and not companion_manifest(out).exists()
    again = score(env, "--json")
    assert again.returncode == 0, again.stderr
    said = (
        f"{out.parent}: an earlier score run was killed while publishing "
        "(.scores.manifest.json.publishing was left): no scores.manifest.json lists the files, "
        "whose run cannot be told; this run replaced them with its own"
    )
    assert_said_left_publish(again, out.parent, None, [], said)
    assert check_listed(companion_manifest(out))["rows"] == 60
    assert not (out.parent / ".scores.manifest.json.publishing").exists()
    quiet = score(env, "--json")  # no mark: nothing said
    assert quiet.returncode == 0 and "note: " not in quiet.stderr, quiet.stderr
    assert json.loads(quiet.stdout)["interrupted_publish"] is None
