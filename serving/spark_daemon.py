"""Spark's Python daemon for local masters, its standard error in the run's Spark log.

Spark starts one daemon (``python -m pyspark.daemon``) that forks the Python workers, and
copies the daemon's standard error, the workers' included, to the driver JVM's: the console
of ``score --engine spark``. When a worker dies mid-task (killed, out of memory) Spark ends the
other workers' tasks, and those could print PySpark's ``Traceback ... BrokenPipeError`` ("PySpark
daemon failed to flush the output to the worker process") on the console beside the job's one
error line. With ``spark.python.daemon.module`` naming this module (local masters only, where
the workers run this interpreter), the daemon's standard error goes to ``workers.log`` in the
run's Spark log folder (:class:`~partnerscore.serving.spark_engine.SparkLog`, given in
:data:`WORKER_LOG_VARIABLE` through ``spark.executorEnv``), kept with ``spark.log`` when the
job's error names it. Standard output is the daemon's channel to the JVM: left alone.
"""

from __future__ import annotations

import os

WORKER_LOG_VARIABLE = "PARTNERSCORE_SPARK_WORKER_LOG"
"""The environment variable holding the file the daemon's standard error is appended to."""


def redirect_stderr(path: str | None) -> bool:
    """Point file descriptor 2 (``sys.stderr``'s) at ``path``, appended to; whether it did.

    A path that cannot be opened (its folder removed, a full disk) leaves standard error as it
    is: the daemon must start whatever happens to its log.
    """
    if not path:
        return False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        return False
    try:
        os.dup2(fd, 2)
    finally:
        os.close(fd)
    return True


def main() -> None:
    """Run PySpark's daemon with its standard error redirected."""
    redirect_stderr(os.environ.get(WORKER_LOG_VARIABLE))
    from pyspark.daemon import manager

    manager()


if __name__ == "__main__":
    main()
