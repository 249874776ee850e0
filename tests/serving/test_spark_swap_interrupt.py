"""``score --engine spark`` killed while swapping its output folder never loses the old one.

The job's output is a folder of part files, built beside it (``.scores.parquet.new``) and
swapped in at the end. The swap deleted the old folder and then renamed the new one in: a
SIGKILL (out of memory, ``kill -9``) between the two left no scores folder at all, the
previous run's results gone. The old folder is now renamed aside (``.scores.parquet.old``),
the new one renamed in, and the old one deleted last; the next run first puts an aside
folder back when no output is there, or removes it when the new one is. The child kills
itself at the exact rename (a sitecustomize hook), so nothing depends on timing.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

import pandas as pd
import pytest
from support import needs_java, with_sitecustomize

from partnerscore.serving.spark_engine import recover_aside

# SIGKILL to itself right before, or right after, renaming a path ending with PARTNERSCORE_TEST_SRC
_KILL_AT_RENAME = """
import os, signal

_replace = os.replace
_src = os.environ["PARTNERSCORE_TEST_SRC"]
_before = os.environ["PARTNERSCORE_TEST_WHEN"] == "before"


def replace(src, dst, *args, **kwargs):
    mine = str(src).endswith(_src)
    if mine and _before:
        os.kill(os.getpid(), signal.SIGKILL)
    _replace(src, dst, *args, **kwargs)
    if mine:
        os.kill(os.getpid(), signal.SIGKILL)


os.replace = replace
"""


def _score(raw_dir, out, cli_config, tmp_path, as_of, hook=None):
    config, env = cli_config
    env = dict(env)
    if hook is not None:
        with_sitecustomize(env, tmp_path / "hook", _KILL_AT_RENAME)
        env["PARTNERSCORE_TEST_WHEN"], env["PARTNERSCORE_TEST_SRC"] = hook
    env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "partnerscore.serving.cli", "score", "--engine", "spark"]
        + ["--master", "local[2]", "--raw", str(raw_dir), "--as-of", as_of]
        + ["--out", str(out), "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def _parts(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("part-*.parquet"))}


def _as_of(folder):
    return str(pd.read_parquet(folder)["as_of"].iloc[0])[:10]


@pytest.fixture(scope="module")
def previous_output(raw_dir, model_store, tmp_path_factory):
    """A scores folder of an earlier run (as_of 2026-03-01)."""
    needs_java()
    import json
    import os

    tmp = tmp_path_factory.mktemp("previous")
    config = tmp / "config.json"
    paths = {"data_dir": str(tmp / "data"), "mlflow_dir": model_store.paths.mlflow_dir}
    config.write_text(json.dumps({"paths": paths}))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    out = tmp / "out" / "scores.parquet"
    job = _score(raw_dir, out, (config, env), tmp, "2026-03-01")
    assert job.returncode == 0, job.stderr[-3000:]
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills a real process")
@pytest.mark.parametrize(
    "when, src",
    [
        ("before", "scores.parquet"),  # before the old folder goes aside
        ("before", ".scores.parquet.new"),  # the old folder aside (deleted, until 2026-12-06)
        ("after", ".scores.parquet.new"),  # the new folder in, the old one still aside
    ],
)
def test_a_spark_score_killed_while_swapping_keeps_the_previous_scores(
    raw_dir, cli_config, previous_output, tmp_path, when, src
):
    needs_java()
    out = tmp_path / "out" / "scores.parquet"
    shutil.copytree(previous_output, out)
    before = _parts(out)
    aside = out.with_name(".scores.parquet.old")
    job = _score(raw_dir, out, cli_config, tmp_path, "2026-04-01", (when, src))
    assert job.returncode == -signal.SIGKILL, job.stderr[-3000:]
    if src == "scores.parquet":  # nothing swapped yet: the previous folder in place
        assert _parts(out) == before and not aside.exists()
    elif when == "before":  # the previous scores aside, whole: put back by the next run
        assert not out.exists() and _parts(aside) == before
        recover_aside(out)
        assert _parts(out) == before and not aside.exists()
        assert _as_of(out) == "2026-03-01"
    else:  # the new folder in place, the previous one aside: removed by the next run
        assert _as_of(out) == "2026-04-01" and _parts(aside) == before
    # the next run (the same batch) recovers or cleans what the kill left, and publishes
    again = _score(raw_dir, out, cli_config, tmp_path, "2026-04-01")
    assert again.returncode == 0, again.stderr[-3000:]
    assert _as_of(out) == "2026-04-01" and not aside.exists()
    assert not out.with_name(".scores.parquet.new").exists()
