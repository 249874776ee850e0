"""``experiment assign`` killed between its two writes leaves its partners protected.

The job wrote the assignment table, then the registry of running experiments: a SIGKILL (out
of memory, ``kill -9``) between the two left partners assigned (a table a team may act on)
that the registry did not hold, so another assignment of the same experiment was accepted
and the partners assigned twice. The registry is now written first and the table (staged
before) renamed in last; the child kills itself at the exact rename (a sitecustomize hook).
"""

import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
from support import hand_scores, killed_at_rename


def _assign(tmp_path, seed, hook=None):
    env = dict(os.environ)
    if hook is not None:  # (when, n): killed at the n-th rename into tmp_path (a.csv, reg.csv)
        when, renames = hook
        killed_at_rename(env, tmp_path / "hook", tmp_path, int(renames), when)
    return subprocess.run(
        [sys.executable, "-m", "partnerscore.serving.cli", "experiment", "assign"]
        + ["--scores", str(tmp_path / "scores.csv"), "--name", "e", "--seed", str(seed)]
        + ["--out", str(tmp_path / "a.csv"), "--registry", str(tmp_path / "reg.csv")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills a real process")
@pytest.mark.parametrize("when, renames", [("before", 1), ("after", 1), ("after", 2)])
def test_an_assignment_killed_between_its_writes_is_protected_or_absent(tmp_path, when, renames):
    hand_scores(tmp_path)
    whole = tmp_path / "whole"  # an uninterrupted run's files, for comparison
    whole.mkdir()
    hand_scores(whole)
    assert _assign(whole, 7).returncode == 0
    job = _assign(tmp_path, 7, (when, str(renames)))
    assert job.returncode == -signal.SIGKILL, job.stderr
    table, registry = tmp_path / "a.csv", tmp_path / "reg.csv"
    done = 0 if when == "before" else renames
    # the registry first: never a table the registry does not protect
    assert registry.exists() == (done >= 1) and table.exists() == (done == 2)
    # another assignment of the experiment: refused while its partners are registered
    other = _assign(tmp_path, 8)
    if done >= 1:
        assert other.returncode == 2, other.stderr
        assert "is already in running experiment 'e'" in other.stderr, other.stderr
        assert not table.exists() or table.read_bytes() == (whole / "a.csv").read_bytes()
        # the identical run again: no new registry row, the table written
        again = _assign(tmp_path, 7)
        assert again.returncode == 0, again.stderr
        assert "registry unchanged" in again.stdout, again.stdout
        assert table.read_bytes() == (whole / "a.csv").read_bytes()
        assert len(pd.read_csv(registry)) == len(pd.read_csv(whole / "reg.csv"))
    else:  # killed before writing anything: nothing registered, any assignment may run
        assert other.returncode == 0, other.stderr
        assert table.read_bytes() != (whole / "a.csv").read_bytes()
        assert len(pd.read_csv(registry)) == len(pd.read_csv(whole / "reg.csv"))
