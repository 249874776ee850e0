"""``score --engine spark`` killed while publishing its output never loses or mixes scores.

The job's output is a folder of part files, built beside it (``.scores.parquet.new``) and
swapped in at the end with its rejects file, under one ``scores.manifest.json`` renamed last
(``spark_engine.publish_dataset``). The swap deleted the old folder and then renamed the new
one in: a SIGKILL (out of memory, ``kill -9``) between the two left no scores folder at all,
the previous run's results gone. The old folder is now renamed aside
(``.scores.parquet.old``), the new one renamed in, and the old one deleted last; the next run
first puts an aside folder back when no output is there, or removes it when the new one is.

The kills: the publish step runs in a child Python that kills itself at the exact rename (a
sitecustomize hook), so nothing depends on timing. That child runs ``publish_dataset``, the
function the job calls last, on a staged folder of real part files (the job's previous
output, as of another date): a whole Spark job reaches that step only after ~50 s of JVM and
scoring, and nine such runs made this the suite's slowest file (478 s). Whole Spark jobs
still make the previous output, restore an aside folder at their start, and publish over
what a kill left.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import assert_said_left_publish, cli_config_in, needs_java, with_sitecustomize

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

# the job's last step on the folder staged beside OUT (argv[1]), with one rejected row
_PUBLISH = """
import sys
from pathlib import Path

import pandas as pd

from partnerscore.serving.score import scores_manifest
from partnerscore.serving.spark_engine import publish_dataset

out = Path(sys.argv[1])
fresh = out.with_name(f".{out.name}.new")
rows = sum(len(pd.read_parquet(part)) for part in fresh.glob("part-*.parquet"))
rejects = pd.DataFrame({"partner_id": ["P-now"], "as_of": ["2026-04-01"], "reason": ["now"]})
manifest = scores_manifest(out, "models:/m/1", rows, 1, recorded=True, engine="spark")
publish_dataset(out, fresh, rejects, manifest)
"""


def _score(raw_dir, out, cli_config, tmp_path, as_of, hook=None, options=()):
    config, env = cli_config
    env = dict(env)
    if hook is not None:
        with_sitecustomize(env, tmp_path / "hook", _KILL_AT_RENAME)
        env["PARTNERSCORE_TEST_WHEN"], env["PARTNERSCORE_TEST_SRC"] = hook
    env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "partnerscore.serving.cli", *options, "score"]
        + ["--engine", "spark", "--master", "local[2]", "--raw", str(raw_dir), "--as-of", as_of]
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


def _readers(out):
    """Each reader of a scores file given the Spark job's folder, as a callable (``report``,
    ``experiment assign`` and ``whatif`` read it by read_scores; ``forecast``, the API's
    forecast and ``monitor --scores``'s own reader)."""
    from partnerscore.serving import api
    from partnerscore.serving.config import AppConfig
    from partnerscore.serving.forecast import run_forecast
    from partnerscore.serving.monitor import _batch_scores
    from partnerscore.serving.report import read_scores

    forecast = out.parent / "forecast.csv"
    return {
        "report": lambda: read_scores(out)["as_of"],
        "forecast": lambda: run_forecast(AppConfig(), out, forecast, ("tier",)).table,
        "api.forecast": lambda: api.forecast(out, by="tier"),
        "monitor": lambda: _batch_scores(out, pd.Timestamp("2026-04-01"))["as_of"],
    }


def _refused_by_the_readers(out, message):
    """Every reader of a scores file refuses ``out`` (a kill left its publish half done)."""
    from partnerscore.features.core import PartnerscoreError, companion_manifest

    assert companion_manifest(out) == out.with_name("scores.manifest.json")
    for name, read in _readers(out).items():
        with pytest.raises(PartnerscoreError, match=message):
            read()
        assert not out.with_name("forecast.csv").exists(), name


def _read_by_the_readers(out):
    """Every reader of a scores file reads the Spark job's folder (refused until 2026-12-06:
    "is a folder, expected a file"), the batch of 2026-04-01."""
    for name, read in _readers(out).items():
        got = read()
        assert len(got) > 0, name
        if name in ("report", "monitor"):
            assert set(got.astype(str).str[:10]) == {"2026-04-01"}, name
        else:
            assert set(got["period_start"].astype(str).str[:10]) == {"2026-04-01"}, name


@pytest.fixture(scope="module")
def previous_output(raw_dir, model_store, tmp_path_factory):
    """A scores folder of an earlier run (as_of 2026-03-01)."""
    needs_java()
    tmp = tmp_path_factory.mktemp("previous")
    out = tmp / "out" / "scores.parquet"
    job = _score(raw_dir, out, cli_config_in(tmp, model_store), tmp, "2026-03-01")
    assert job.returncode == 0, job.stderr[-3000:]
    return out


def _stage(out, as_of="2026-04-01"):
    """The previous output's parts as of ``as_of``, staged where the job stages its folder."""
    fresh = out.with_name(f".{out.name}.new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    for part in sorted(out.glob("part-*.parquet")):
        table = pq.read_table(part)
        column = table.schema.get_field_index("as_of")
        values = pa.array([pd.Timestamp(as_of)] * len(table)).cast(table.schema.field(column).type)
        pq.write_table(table.set_column(column, "as_of", values), fresh / part.name)
    return fresh


def _publish(out, env_hook=None):
    """``publish_dataset`` in a child Python; ``env_hook(env)`` sets its kill hook."""
    import os

    env = dict(os.environ)  # no store: the step writes files only
    if env_hook is not None:
        env_hook(env)
    return subprocess.run(
        [sys.executable, "-c", _PUBLISH, str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _killed_at(tmp_path, when, src):
    def hook(env):
        with_sitecustomize(env, tmp_path / "hook", _KILL_AT_RENAME)
        env["PARTNERSCORE_TEST_WHEN"], env["PARTNERSCORE_TEST_SRC"] = when, src

    return hook


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
    previous_output, tmp_path, when, src
):
    needs_java()
    out = tmp_path / "out" / "scores.parquet"
    shutil.copytree(previous_output.parent, out.parent)  # scores, rejects, manifest
    before = _parts(out)
    aside = out.with_name(".scores.parquet.old")
    _stage(out)
    job = _publish(out, _killed_at(tmp_path, when, src))
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
    # this run's rejects (renamed first) beside a folder the previous manifest does not list
    # or its rejects: the publishing mark is there, and the readers refuse the mix
    _refused_by_the_readers(out, r"scores\.rejects\.csv: not the file .* mixes two runs' files")
    # the next publish recovers or cleans what the kill left, and publishes
    _stage(out)
    again = _publish(out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _as_of(out) == "2026-04-01" and not aside.exists()
    assert not out.with_name(".scores.parquet.new").exists()
    _read_by_the_readers(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills a real process")
def test_the_next_spark_score_puts_an_aside_folder_back_before_any_other_work(
    raw_dir, cli_config, previous_output, tmp_path
):
    """Killed between the swap's renames, a run left the previous scores aside and no output:
    the next run puts them back first, so a run that then stops (here: a --validated folder
    that holds no snapshot) leaves the previous scores in place, not aside."""
    needs_java()
    out = tmp_path / "out" / "scores.parquet"
    shutil.copytree(previous_output.parent, out.parent)
    before = _parts(out)
    aside = out.with_name(".scores.parquet.old")
    out.rename(aside)  # what a kill between the two renames leaves (the test above)
    empty = tmp_path / "not-a-snapshot"  # a folder, so the option's check passes
    empty.mkdir()
    config, env = cli_config
    env = dict(env)
    job = subprocess.run(
        [sys.executable, "-m", "partnerscore.serving.cli", "score", "--engine", "spark"]
        + ["--master", "local[2]", "--raw", str(raw_dir), "--as-of", "2026-04-01"]
        + ["--validated", str(empty)]
        + ["--out", str(out), "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert job.returncode != 0 and "not-a-snapshot" in job.stderr, job.stderr[-3000:]
    assert len(job.stderr.strip().splitlines()) == 1, job.stderr[-3000:]
    assert _parts(out) == before and not aside.exists()


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
    meanwhile), as the pandas engine's files are, and check_companions refuses the mix. The
    next whole Spark job publishes over what the kill left (its staged folder, the mark)."""
    needs_java()
    from partnerscore.features.core import PartnerscoreError, check_companions, check_listed

    out = tmp_path / "out" / "scores.parquet"
    shutil.copytree(previous_output.parent, out.parent)  # scores, rejects, manifest
    manifest = out.with_name("scores.manifest.json")
    listed = check_listed(manifest)["files"]  # the previous run's parts and rejects, listed
    assert {"scores.rejects.csv", *(f"scores.parquet/{p}" for p in _parts(out))} == set(listed)
    before, rejects = _parts(out), out.with_name("scores.rejects.csv")
    rejects_before = rejects.read_bytes()
    _stage(out)

    def hook(env):
        with_sitecustomize(env, tmp_path / "hook", _KILL_AFTER_RENAME_TO)
        env["PARTNERSCORE_TEST_DST"] = "scores.rejects.csv"

    job = _publish(out, hook)
    assert job.returncode == -signal.SIGKILL, job.stderr[-3000:]
    # this run's rejects beside the previous run's scores, the publishing mark there
    assert _parts(out) == before and rejects.read_bytes() != rejects_before
    assert out.with_name(".scores.manifest.json.publishing").exists()
    with pytest.raises(PartnerscoreError, match="scores.rejects.csv: .* mixes two runs' files"):
        check_companions(out)  # what every reader of a scores file calls first
    _refused_by_the_readers(out, r"scores\.rejects\.csv: not the file .* mixes two runs' files")
    # the next run publishes the whole set, which the readers take. It said nothing of the
    # set it replaced until 2026-12-06: now one note, as the pandas engine's; --json records it
    again = _score(raw_dir, out, cli_config, tmp_path, "2026-04-01", options=["--json"])
    assert again.returncode == 0, again.stderr[-3000:]
    said = (
        f"{out.parent}: an earlier score run was killed while publishing "
        "(.scores.manifest.json.publishing was left): scores.rejects.csv is not the file "
        "scores.manifest.json lists, a mix of two runs' files; this run replaced them with its own"
    )
    assert_said_left_publish(
        again, out.parent, "scores.manifest.json", ["scores.rejects.csv"], said
    )
    assert not out.with_name(".scores.manifest.json.publishing").exists()
    assert not out.with_name(".scores.parquet.new").exists()
    check_companions(out)
    check_listed(manifest)
    assert _as_of(out) == "2026-04-01"
    _read_by_the_readers(out)
