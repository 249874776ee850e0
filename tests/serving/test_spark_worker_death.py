"""A Spark Python worker killed mid-job (``score --engine spark``): exit 71 or a retried task.

Real local Spark, a real SIGKILL: the console script runs in a process of its own, and the
first Python worker of its Spark to start a task kills itself with SIGKILL as the task begins
(a ``sitecustomize`` hook in the workers' interpreter, :data:`_KILL_FIRST_TASK`). ``local[2]``
tries a task once: the job stops as the pandas job does when a worker of its pool dies (one
line, exit 71, nothing published). ``local[2,4]`` retries a failed task up to 4 times, as a
cluster does by default (``spark.task.maxFailures``): the retried task runs in a new worker and
the job succeeds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import cli_config_in, needs_java, with_sitecustomize

_KILL_FIRST_TASK = """
import importlib.abc
import importlib.machinery
import os
import signal
import sys

MARKER = os.environ.get("PARTNERSCORE_TEST_KILLED")
SAY = os.environ.get("PARTNERSCORE_TEST_WORKER_SAYS")


class _Wrap(importlib.abc.MetaPathFinder):
    # pyspark.worker.main runs each task in a worker forked by pyspark.daemon (which imports
    # it by name): the first task of the job, across its workers, is SIGKILLed as it begins
    def find_spec(self, name, path, target=None):
        if name != "pyspark.worker":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        spec.loader = _Loader(spec.loader)  # this module's only: the zip's loader is shared
        return spec


class _Loader(importlib.abc.Loader):
    def __init__(self, real):
        self.real = real

    def create_module(self, spec):
        return self.real.create_module(spec)

    def exec_module(self, module):
        self.real.exec_module(module)
        real = module.main

        def main(*args, **kwargs):
            if SAY:  # a worker's stderr, as PySpark's daemon prints a failed flush
                print("Traceback (most recent call last): " + SAY, file=sys.stderr, flush=True)
            if not MARKER:
                return real(*args, **kwargs)
            try:
                os.close(os.open(MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return real(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

        module.main = main


DAEMONS = ("pyspark.daemon", "partnerscore.serving.spark_daemon")
if (MARKER or SAY) and any(daemon in sys.orig_argv for daemon in DAEMONS):
    sys.meta_path.insert(0, _Wrap())
"""
"""A sitecustomize: the first Spark task to begin, in any worker, kills its worker (SIGKILL)."""


def start_score(argv, env, tmp_path, kill: bool = True, says: str | None = None):
    """Start the console script; its first Spark Python task kills its worker (SIGKILL).

    Its temporary folder (``TMPDIR``, where the run's Spark log goes) is ``tmp_path/tmp``, its
    standard output and error go to ``tmp_path/stdout`` and ``tmp_path/stderr``.
    ``says``: every task first writes ``Traceback (most recent call last): <says>`` to its
    worker's standard error (PySpark's daemon prints a failed flush so).
    """
    marker = tmp_path / "killed"
    env = dict(env)
    if kill or says:
        env = with_sitecustomize(env, tmp_path / "hook", _KILL_FIRST_TASK)
    if kill:
        env["PARTNERSCORE_TEST_KILLED"] = str(marker)
    if says:
        env["PARTNERSCORE_TEST_WORKER_SAYS"] = says
    env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir(exist_ok=True)
    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "partnerscore.serving.cli", *map(str, argv)],
            stdout=out,
            stderr=err,
            text=True,
            env=env,
        )


def finished(job: subprocess.Popen, tmp_path) -> tuple[int, str, str, bool]:
    """The exit code, standard output and error of :func:`start_score`'s job once it ended
    (killed after 600 s), and whether a task killed its worker."""
    try:
        code = job.wait(timeout=600)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    out, err = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    return code, out, err, (tmp_path / "killed").exists()


def score_killing_a_worker(
    argv, env, tmp_path, kill: bool = True, says: str | None = None
) -> tuple[int, str, str, bool]:
    """:func:`start_score`'s job, :func:`finished`."""
    return finished(start_score(argv, env, tmp_path, kill, says), tmp_path)


LOG4J_LINE = re.compile(r"^(\S+ \S+ )?(TRACE|DEBUG|INFO|WARN|ERROR|FATAL) |log4j", re.MULTILINE)
"""A line of Spark's logging on the console (``26/12/06 08:31:37 WARN Utils: ...``, ``Using
Spark's default log4j profile``)."""


def spark_logs(tmp_path) -> list[Path]:
    """The Spark log folders the run left in its temporary folder."""
    return sorted((tmp_path / "tmp").glob("partnerscore-spark-*"))


def named_log(line: str, tmp_path) -> Path:
    """The Spark log an error line names (its ending), which must be the run's kept one."""
    head, _, path = line.partition("; Spark's log: ")
    assert path, line
    log = Path(path)
    assert [log.parent] == spark_logs(tmp_path) and log.name == "spark.log", (line, log)
    return log


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
        _argv(raw_dir, tmp_path, config, "local[2]"), env, tmp_path, says="BrokenPipeError"
    )
    assert killed, err
    assert code == 71, (code, err[-3000:])
    assert "Traceback" not in err and "\tat org.apache" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err[-3000:]
    assert errors[0].startswith("error: a Spark Python worker process died"), errors[0]
    # Spark's lines in the run's log, which the line names, none on the console: until
    # 2026-12-06 Spark's level was FATAL and its errors were nowhere
    assert not LOG4J_LINE.search(err), err[-3000:]
    log = named_log(errors[0], tmp_path).read_text()
    assert " ERROR " in log and "Python worker exited unexpectedly" in log, log[-3000:]
    # the workers' standard error beside it: a killed worker's siblings could print PySpark's
    # "Traceback ... BrokenPipeError" on the console (a flaky failure of this test under load)
    workers = (named_log(errors[0], tmp_path).parent / "workers.log").read_text()
    assert "Traceback (most recent call last): BrokenPipeError" in workers, workers[-3000:]
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
        _argv(raw_dir, tmp_path, config, "local[2,4]"), env, tmp_path, says="a worker's line"
    )
    assert killed, err
    assert code == 0, (code, err[-3000:])
    assert "Traceback" not in err, err[-3000:]  # the workers' stderr: in the run's log
    result = json.loads(out)
    assert result["scored"] > 0 and (tmp_path / "out" / "scores.parquet").is_dir(), result
    # the failed attempt's Java stack trace went to the run's log, removed with the success;
    # the console had Spark's start-up lines until 2026-12-06 ("Using Spark's default log4j
    # profile", "WARN Utils: Your hostname ...")
    assert not LOG4J_LINE.search(err), err[-3000:]
    assert spark_logs(tmp_path) == []
    assert not [p for p in (tmp_path / "out").rglob("*") if "log" in p.name.lower()]


UNREACHABLE = "test_a_master_that_cannot_be_reached_names_sparks_log"


@pytest.fixture(scope="module", autouse=True)
def unreachable_master_run(request, raw_dir, model_store, tmp_path_factory):
    """The run of :func:`test_a_master_that_cannot_be_reached_names_sparks_log`, started as the
    module starts when that test is selected (else None): (the job, its folder).

    Spark's standalone client gives up on a master only after 3 x 20 s, fixed in Spark 4
    (``StandaloneAppClient``'s ``REGISTRATION_TIMEOUT_SECONDS`` and ``REGISTRATION_RETRIES``;
    no setting bounds them): the run waits them out asleep while the module's other runs go.
    """
    selected = [item for item in request.session.items if item.name == UNREACHABLE]
    java = shutil.which("java") or os.environ.get("JAVA_HOME")
    if not java or not any(item.module is request.module for item in selected):
        yield None  # the test's own needs_java() skips or fails it
        return
    folder = tmp_path_factory.mktemp("unreachable")
    config, env = cli_config_in(folder, model_store)
    argv = _argv(raw_dir, folder, config, "spark://127.0.0.1:1")
    job = start_score(argv, env, folder, kill=False)
    yield job, folder
    if job.poll() is None:  # its test did not wait for it
        job.kill()
        job.wait()


@pytest.mark.slow
def test_a_master_that_cannot_be_reached_names_sparks_log(unreachable_master_run):
    """Spark's own failure (here: no master at the URL; Spark gives up after 3 x 20 s): one
    line, exit 71, naming the run's log with Spark's reason. Until 2026-12-06: ``unexpected
    Py4JJavaError: An error occurred while calling None.org.apache.spark.sql.classic.
    SparkSession.``, exit 70, and Spark's "All masters are unresponsive! Giving up." nowhere
    (its level was FATAL). The run started with the module (:func:`unreachable_master_run`)."""
    needs_java()
    job, tmp_path = unreachable_master_run
    code, out, err, _ = finished(job, tmp_path)
    assert code == 71, (code, err[-3000:])
    assert "Traceback" not in err and "\tat org.apache" not in err, err[-3000:]
    assert not LOG4J_LINE.search(err), err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err[-3000:]
    assert errors[0].startswith("error: the Spark job failed: "), errors[0]
    log = named_log(errors[0], tmp_path).read_text()
    assert "All masters are unresponsive" in log, log[-3000:]
    assert json.loads(out)["exit_code"] == 71
    assert not (tmp_path / "out" / "scores.parquet").exists()
