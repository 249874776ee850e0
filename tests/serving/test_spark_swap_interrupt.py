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

import json
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


# SIGKILL to itself right after renaming onto a path named PARTNERSCORE_TEST_DST
_KILL_AFTER_RENAME_TO = """
import os, signal

_replace = os.replace
_dst = os.environ["PARTNERSCORE_TEST_DST"]


def replace(src, dst, *args, **kwargs):
    _replace(src, dst, *args, **kwargs)
    if os.path.basename(dst) == _dst:
        os.kill(os.getpid(), signal.SIGKILL)


os.replace = replace
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills a real process")
def test_a_spark_score_killed_after_its_rejects_is_refused_by_the_readers(
    raw_dir, cli_config, previous_output, tmp_path
):
    """The rejects were written on their own before the folder swap, with no manifest: a kill
    between the two left this run's rejects beside the previous run's scores, read silently.
    They are now published with the folder under scores.manifest.json (renamed last, a mark
    meanwhile), as the pandas engine's files are, and check_companions refuses the mix."""
    needs_java()
    from partnerscore.features.core import (
        PartnerscoreError,
        check_companions,
        check_listed,
        file_fingerprint,
    )

    out = tmp_path / "out" / "scores.parquet"
    shutil.copytree(previous_output.parent, out.parent)  # scores, rejects, manifest
    manifest = out.with_name("scores.manifest.json")
    listed = check_listed(manifest)["files"]  # the previous run's parts and rejects, listed
    assert {"scores.rejects.csv", *(f"scores.parquet/{p}" for p in _parts(out))} == set(listed)
    before, rejects = _parts(out), out.with_name("scores.rejects.csv")
    # the previous run's rejects made to hold a row (this batch rejects none), listed as such
    rejects.write_text("partner_id,as_of,reason\nP-previous,2026-03-01,a reject of before\n")
    whole = json.loads(manifest.read_text())
    whole["files"]["scores.rejects.csv"] = file_fingerprint(rejects)
    manifest.write_text(json.dumps(whole))
    rejects_before = rejects.read_bytes()
    config, env = cli_config
    env = with_sitecustomize(dict(env), tmp_path / "hook", _KILL_AFTER_RENAME_TO)
    env["PARTNERSCORE_TEST_DST"] = "scores.rejects.csv"
    job = _score(raw_dir, out, (config, env), tmp_path, "2026-04-01")
    assert job.returncode == -signal.SIGKILL, job.stderr[-3000:]
    # this run's rejects beside the previous run's scores, the publishing mark there
    assert _parts(out) == before and rejects.read_bytes() != rejects_before
    assert out.with_name(".scores.manifest.json.publishing").exists()
    with pytest.raises(PartnerscoreError, match="scores.rejects.csv: .* mixes two runs' files"):
        check_companions(out)  # what every reader of a scores file calls first
    # the next run publishes the whole set, which the readers take
    again = _score(raw_dir, out, cli_config, tmp_path, "2026-04-01")
    assert again.returncode == 0, again.stderr[-3000:]
    assert not out.with_name(".scores.manifest.json.publishing").exists()
    check_companions(out)
    check_listed(manifest)
    assert _as_of(out) == "2026-04-01"
