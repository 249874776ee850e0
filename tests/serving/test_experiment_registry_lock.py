"""Two ``experiment assign`` (or ``stop``) runs at once keep each other's registry rows.

Each run read the registry, checked it and wrote it back whole with its own rows: two at once
(two experiments, two schedulers) each wrote what it had read, and the one renamed last
dropped the other's rows, leaving partners assigned that the registry no longer protected.
The read-check-write now runs under an exclusive lock on the registry's folder. The first
run here pauses inside it (a sitecustomize hook at its registry rename, until told to go);
the second is seen waiting for the lock (/proc/locks), and then finds the first's rows.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from support import hand_scores, with_sitecustomize

# pause right before the rename onto reg.csv: say so (a file), wait for the go file
_PAUSE_AT_REGISTRY = """
import os, time
from pathlib import Path

_replace = os.replace
_flags = Path(os.environ["PARTNERSCORE_TEST_FLAGS"])


def replace(src, dst, *args, **kwargs):
    if os.path.basename(dst) == "reg.csv":
        (_flags / "paused").touch()
        while not (_flags / "go").exists():
            time.sleep(0.05)
    _replace(src, dst, *args, **kwargs)


os.replace = replace
"""


def _command(tmp_path, job, name):
    registry = ["--registry", str(tmp_path / "reg.csv")]
    cli = [sys.executable, "-m", "partnerscore.serving.cli", "experiment", job, "--name", name]
    if job == "stop":
        return cli + registry
    scores = ["--scores", str(tmp_path / "scores.csv"), "--seed", "1"]
    return cli + scores + ["--out", str(tmp_path / f"{name}.csv")] + registry


def _start(tmp_path, job, name, env=None):
    return subprocess.Popen(
        _command(tmp_path, job, name),
        env=env or dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _until(done, what, proc=None, limit=300.0):
    """Wait for ``done()`` (polled; ``limit`` only stops a hung test)."""
    end = time.monotonic() + limit
    while not done():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"{what}: the run ended first (exit {proc.returncode}): {err}{out}")
        assert time.monotonic() < end, f"{what}: not within {limit:.0f} s"
        time.sleep(0.05)


def _waits_for_a_lock(pid: int) -> bool:
    """Whether ``pid`` is blocked on a file lock (a '->' line of /proc/locks)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "->" and fields[5] == str(pid):
            return True
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/locks, real processes")
@pytest.mark.parametrize("second", ["assign", "stop"])
def test_a_second_registry_writer_waits_and_keeps_the_first_s_rows(tmp_path, second):
    hand_scores(tmp_path, 20)
    if second == "stop":  # an experiment already running, which the second run stops
        done = subprocess.run(_command(tmp_path, "assign", "old"), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    flags = tmp_path / "flags"
    flags.mkdir()
    env = with_sitecustomize(dict(os.environ), tmp_path / "hook", _PAUSE_AT_REGISTRY)
    env["PARTNERSCORE_TEST_FLAGS"] = str(flags)
    first = _start(tmp_path, "assign", "first", env)
    try:
        _until((flags / "paused").exists, "first run at its registry rename", first)
        other = _start(tmp_path, second, "second" if second == "assign" else "old")
        try:
            _until(lambda: _waits_for_a_lock(other.pid), "second run waiting for the lock", other)
            (flags / "go").touch()
            out, err = first.communicate(timeout=300)
            assert first.returncode == 0, err
            out, err = other.communicate(timeout=300)
            assert other.returncode == 0, err
        finally:
            other.kill()
            other.wait()
    finally:
        (flags / "go").touch()
        first.kill()
        first.wait()
    reg = pd.read_csv(tmp_path / "reg.csv")
    status = reg.groupby("experiment")["status"].unique().map(list).to_dict()
    if second == "assign":  # both experiments' rows, 20 partners each
        assert status == {"first": ["running"], "second": ["running"]}, status
        assert reg["experiment"].value_counts().to_dict() == {"first": 20, "second": 20}
    else:  # the first's rows kept, the stop applied to the old experiment's
        assert status == {"first": ["running"], "old": ["stopped"]}, status


def test_assign_holding_the_registry_lock_reads_scores_beside_it(tmp_path):
    # the registry's lock was its folder's, which a scores file's check waits for when a
    # publishing mark is beside it (a score job killed while publishing): with the scores in
    # the registry's folder, assign waited for its own lock for ever
    hand_scores(tmp_path, 20)
    (tmp_path / ".scores.manifest.json.publishing").touch()  # a first publish killed
    run = _start(tmp_path, "assign", "e1")
    try:
        out, err = run.communicate(timeout=300)  # only stops a hung test
    finally:
        run.kill()
    assert run.returncode == 2, (out, err)
    assert "its publish with the files beside it was interrupted" in err, err
    assert not (tmp_path / "reg.csv").exists() and not (tmp_path / "e1.csv").exists()
