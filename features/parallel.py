"""Independent tasks in forked worker processes: the second core for single-threaded pandas work.

A job hands :func:`start_tasks` a list of zero-argument callables (closures over the tables it
already holds) and gets back a function that waits for their results, in task order. With
``workers`` > 1 and ``fork`` available, the tasks run in a pool of forked processes, which
inherit the caller's memory (no pickling of the inputs; only results travel back, pickled);
otherwise they run one after the other in this process when the results are asked for, so a
task's result never depends on where it ran.

Fork safety is the caller's part: fork only while no other thread of this process runs (a
thread holding a lock at fork time leaves the lock held forever in the child), so join helper
threads first. Arrow's and OpenBLAS's own thread pools are re-created after fork.

Nothing happens at import time.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any

_TASKS: list[Callable[[], Any]] = []
"""The tasks of the pool being started (inherited by its forked workers)."""


def available_workers() -> int:
    """Cores this process may run on."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


def can_fork() -> bool:
    """Whether worker processes can be forked here (not on Windows; macOS has it too)."""
    return "fork" in multiprocessing.get_all_start_methods()


def _run(index: int) -> Any:
    return _TASKS[index]()


def start_tasks(tasks: Sequence[Callable[[], Any]], workers: int) -> Callable[[], list[Any]]:
    """Start ``tasks`` on ``workers`` forked processes; returns a function waiting for results.

    Tasks are handed out one at a time in list order (put the longest first). With one worker
    or no ``fork``, nothing starts: the returned function runs the tasks in this process (one
    task with more workers runs beside this process). A task's exception is raised by the
    returned function (the pool is stopped).

    Args:
        tasks: Zero-argument callables; their results must pickle.
        workers: Processes to use (at most one per task).

    Returns:
        A function returning the tasks' results in task order (call it once).
    """
    tasks = list(tasks)
    if workers <= 1 or not tasks or not can_fork():
        return lambda: [task() for task in tasks]
    _TASKS[:] = tasks
    # the workers' garbage collector must not visit (write to) every inherited object: that
    # would copy each page holding one (copy on write)
    gc.freeze()
    try:
        # the workers are forked here, before the pool starts its own helper threads
        pool = multiprocessing.get_context("fork").Pool(min(workers, len(tasks)))
    finally:
        gc.unfreeze()
        _TASKS.clear()  # the parent keeps no reference; the workers have their copy
    pending = pool.map_async(_run, range(len(tasks)), chunksize=1)
    pool.close()

    def wait() -> list[Any]:
        try:
            results = pending.get()
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()
        return results

    return wait
