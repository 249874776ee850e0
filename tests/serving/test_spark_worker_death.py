"""A Spark Python worker killed mid-job (``score --engine spark``): exit 71 or a retried task.

Real local Spark, a real SIGKILL: the console script runs in a process of its own and the
first Python worker forked by Spark's ``pyspark.daemon`` is killed as soon as it appears (the
raw tables' validation, the job's first Python tasks). ``local[2]`` tries a task once: the job
stops as the pandas job does when a worker of its pool dies (one line, exit 71, nothing
published). ``local[2,4]`` retries a failed task up to 4 times, as a cluster does by default
(``spark.task.maxFailures``): the retried task runs in a new worker and the job succeeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from support import needs_java

psutil = pytest.importorskip("psutil")


BUSY = 0.5
"""Seconds a worker has run before it is killed: one killed as it starts, before the JVM has
handed it a task, is replaced without failing any (seen: the job then succeeded)."""


def _forked_worker(root: int):
    """A Python worker of the job's Spark (forked by ``pyspark.daemon``) at work on a task."""
    try:
        children = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:
            parent = child.parent()
            if parent is None or "pyspark.daemon" not in " ".join(parent.cmdline()):
                continue
            if time.time() - child.create_time() >= BUSY:
                return child
        except psutil.Error:
            continue
    return None


def score_killing_a_worker(argv, env) -> tuple[int, str, str, bool]:
    """Run the console script; SIGKILL the first Spark Python worker it forks."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "partnerscore.serving.cli", *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    killed = False
    deadline = time.monotonic() + 300
    while proc.poll() is None and not killed and time.monotonic() < deadline:
        worker = _forked_worker(proc.pid)
        if worker is not None:
            try:
                os.kill(worker.pid, signal.SIGKILL)
                killed = True
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err, killed


def _argv(raw_dir, tmp_path, config, master):
    return [
        *("--json", "score", "--engine", "spark", "--master", master, "--raw", raw_dir),
        *("--as-of", "2026-03-01", "--out", tmp_path / "out" / "scores.parquet"),
        *("--config", config),
    ]


def test_a_killed_spark_worker_stops_the_job_with_exit_71(raw_dir, cli_config, tmp_path):
    """Until 2026-12-06: exit 2, a Java stack trace and ``error: raw tables: cannot read file:
    at org.apache.spark.util.SparkErrorUtils.tryWithSafeFinally(...)`` (bad input, wrongly)."""
    needs_java()
    config, env = cli_config
    code, out, err, killed = score_killing_a_worker(
        _argv(raw_dir, tmp_path, config, "local[2]"), env
    )
    assert killed, err
    assert code == 71, (code, err[-3000:])
    assert "Traceback" not in err and "\tat org.apache" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err[-3000:]
    assert errors[0].startswith("error: a Spark Python worker process died"), errors[0]
    assert json.loads(out) == {
        "error": errors[0].removeprefix("error: "),
        "exit_code": 71,
        "command": "score",
    }
    assert not (tmp_path / "out" / "scores.parquet").exists()  # nothing published


def test_a_killed_spark_worker_is_retried_where_spark_retries_tasks(raw_dir, cli_config, tmp_path):
    needs_java()
    config, env = cli_config
    code, out, err, killed = score_killing_a_worker(
        _argv(raw_dir, tmp_path, config, "local[2,4]"), env
    )
    assert killed, err
    assert code == 0, (code, err[-3000:])
    result = json.loads(out)
    assert result["scored"] > 0 and (tmp_path / "out" / "scores.parquet").is_dir(), result
