"""Independent tasks in forked worker processes: the second core for single-threaded pandas work.

A job hands :func:`start_tasks` a list of zero-argument callables (closures over the tables it
already holds) and gets back a function that waits for their results, in task order. With
``workers`` > 1 and ``fork`` available, the tasks run in a pool of forked processes, which
inherit the caller's memory (no pickling of the inputs; only results travel back, pickled);
otherwise they run one after the other in this process when the results are asked for, so a
task's result never depends on where it ran.

The pool is :class:`WorkerPool` (``concurrent.futures``' process pool, which the report's page
workers use too): a worker that dies mid-task (killed, e.g. by the kernel when out of memory)
is a one-line :class:`WorkerDied` error, where ``multiprocessing.Pool`` would wait for the lost
task forever.

Fork safety is the caller's part: fork only while no other thread of this process runs (a
thread holding a lock at fork time leaves the lock held forever in the child), so join helper
threads first. Arrow's and OpenBLAS's own thread pools are re-created after fork.

Nothing happens at import time.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from partnerscore.features.core import OptionError, PartnerscoreError

BATCH_TRIM_THRESHOLD = 2**31 - 1
"""glibc malloc returns heap memory to the system only once ~2 GB are free at the top of its
heap in a batch process (the largest value ``mallopt`` takes; see :func:`tune_batch_memory`)."""
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # mallopt parameters (glibc malloc.h)

_TASKS: list[Callable[[], Any]] = []
"""The tasks of the pool being started (inherited by its forked workers)."""

STOP_GRACE = 5.0
"""Seconds a worker has to end after SIGTERM (:meth:`WorkerPool.stop`) before it is killed."""

_RUNNING: set[WorkerPool] = set()
"""The pools started and not closed or stopped yet (:func:`stop_workers`)."""


WORKER_DIED = 71
"""Exit code of a job whose worker process died: ``EX_OSERR`` of BSD's sysexits.h.

Not 1 (a command that ran and reports a failing verdict: ``monitor``'s alarms, a refused
``promote``) nor 70 (a bug): the job failed for a reason outside its code, most often the
kernel's out-of-memory killer, and a rerun with ``--workers 1`` or more memory may succeed.
"""


class WorkerDied(PartnerscoreError):
    """A worker process ended before returning its task's result (exit :data:`WORKER_DIED`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=WORKER_DIED)


def available_workers() -> int:
    """Cores this process may run on."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


def worker_count(workers: int | None) -> int:
    """``--workers``: the given count, else :func:`available_workers`.

    Raises:
        OptionError: A count below 1.
    """
    if workers is not None and workers < 1:
        raise OptionError(f"--workers {workers}: must be at least 1")
    return available_workers() if workers is None else workers


def can_fork() -> bool:
    """Whether worker processes can be forked here (not on Windows; macOS has it too)."""
    return "fork" in multiprocessing.get_all_start_methods()


class WorkerPool:
    """Worker processes (forked where possible) whose death is an error, never a hang.

    The processes start at the first :meth:`submit` (with fork: all of them, before the pool's
    own manager thread), so whatever the caller holds then is what they inherit.
    """

    def __init__(
        self,
        workers: int,
        initializer: Callable[..., None] | None = None,
        initargs: tuple = (),
    ) -> None:
        context = multiprocessing.get_context("fork" if can_fork() else None)
        self._executor = ProcessPoolExecutor(
            workers, mp_context=context, initializer=initializer, initargs=initargs
        )
        self._processes: list[multiprocessing.process.BaseProcess] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Queue ``fn(*args)`` (both pickled by reference: module-level functions).

        The first call forks the workers with Ctrl-C and SIGTERM held until they are recorded
        (here and in the executor): a KeyboardInterrupt raised just after a fork left a worker
        that nothing knew of, waiting for work for ever and holding the job's stdout.
        """
        with signals_deferred() if not self._processes else contextlib.nullcontext():
            _RUNNING.add(self)
            future = self._executor.submit(fn, *args)
            # the executor's processes, kept to report how one died and to stop them on an error
            self._processes = list((self._executor._processes or {}).values()) or self._processes
        return future

    def result(self, future: Future) -> Any:
        """The task's result; its error re-raised; :class:`WorkerDied` if its worker died."""
        try:
            return future.result()
        except BrokenProcessPool:
            raise WorkerDied(self._death()) from None

    def _death(self) -> str:
        # the pool's manager thread terminates the other workers (SIGTERM) and reaps them all;
        # a join from this thread would race with its waitpid (and read no exit code)
        self._executor.shutdown(wait=True, cancel_futures=True)
        codes = sorted({p.exitcode for p in self._processes if p.exitcode})
        if len(codes) > 1:
            codes = [code for code in codes if code != -signal.SIGTERM]
        how = ", ".join(_killed_by(-code) if code < 0 else f"exit code {code}" for code in codes)
        hint = "; out of memory?" if -signal.SIGKILL in codes else ""
        return (
            f"a worker process stopped before finishing its task ({how or 'no exit code'}"
            f"{hint}); rerun with --workers 1 or with more memory"
        )

    def stop(self) -> None:
        """Stop at once: cancel queued tasks and terminate the workers (on an error).

        A worker still there :data:`STOP_GRACE` seconds after SIGTERM is killed: Python acts
        on a signal in a process's main thread only, so a worker whose main thread waits for
        a helper thread of its own (blocked reading a pipe) never does.
        """
        alive = [process for process in self._processes if process.is_alive()]
        for process in alive:
            process.terminate()
        # the sentinels, not join(): the executor's manager thread reaps the workers
        ended = multiprocessing.connection.wait([p.sentinel for p in alive], STOP_GRACE)
        for process in alive:
            if process.sentinel not in ended:
                process.kill()
        self._executor.shutdown(wait=True, cancel_futures=True)
        _RUNNING.discard(self)

    def close(self) -> None:
        """Wait for the submitted tasks and the processes to end."""
        self._executor.shutdown(wait=True)
        _RUNNING.discard(self)


def _killed_by(number: int) -> str:
    """``killed by signal 9, SIGKILL`` (the number alone where this system has no name)."""
    try:
        return f"killed by signal {number}, {signal.Signals(number).name}"
    except ValueError:
        return f"killed by signal {number}"


def stop_workers() -> None:
    """Stop every pool still running (:meth:`WorkerPool.stop`): a job ended by a signal.

    A KeyboardInterrupt can land between a pool's start and the moment its owner has its
    cleanup in place (a ``finally``, an exit stack's callback); the pool's workers then wait
    for work, or for a word on a pipe, for ever, and the interpreter's exit waits for them.
    The console script calls this once the interrupted job has unwound.
    """
    for pool in list(_RUNNING):
        pool.stop()


def tune_batch_memory() -> dict[str, bool]:
    """Make a short-lived batch process reuse its memory instead of faulting in fresh pages.

    A batch job allocates and frees arrays of a few MB to GBs many times. By default numpy
    asks for transparent huge pages for every array of 4 MB or more, and glibc serves every
    block above its (adaptive, at most 32 MB) mmap threshold with a fresh mapping that it
    unmaps on free, so the next array of that size faults in zeroed pages again. On the
    benchmark VM (nested paging) a GB of memory not used in the last seconds costs 1-2.6 s
    of system time to fault in, and faults were a third of the 100k-partner score job's CPU
    time and half of the 1M one's.

    This turns numpy's huge-page advice off and makes glibc serve every block from its heap
    (``M_MMAP_MAX`` 0), returning memory to the system only once :data:`BATCH_TRIM_THRESHOLD`
    is free at the heap's top. Helper threads share that heap (``M_ARENA_MAX`` 1): a thread's
    own arena grows in 64 MB heaps and maps every larger block afresh, as the feature
    builders' event-level columns are at 1M partners (61M portal events: 490 MB per 8-byte
    column; 49 MB at 100k). Arrow's own allocator (mimalloc) is left as it is. The arena
    limit takes effect only if no helper thread has allocated yet: call this first thing.
    Measured (README, "Scale benchmark"), minor faults at 1M partners: score 11.3M -> 7.3M
    with the heap settings and ~14 s less system time (mean of 4 runs each; the same 0.67M
    at 100k, whose arrays were below the earlier 64 MB threshold already), then 7.3M -> 6.6M
    with the shared arena and build 1.4-1.7M -> 1.1-1.4M, CPU the same within the VM's noise (3
    runs each). Peak RSS about the same at 100k partners and +1 GB at 1M. Process-wide and
    not undone: only for a command-line job's own process (not a server). Memory placement
    only: no result depends on it.

    Returns:
        Which of the two settings took effect (``numpy_hugepage_off``, ``glibc_malloc``).
    """
    done = {"numpy_hugepage_off": False, "glibc_malloc": False}
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # pragma: no cover - another numpy layout: keep its default
        pass
    else:
        _set_madvise_hugepage(False)
        done["numpy_hugepage_off"] = True
    if _glibc():  # musl's mallopt is a no-op stub; other systems have other allocators
        try:
            mallopt = ctypes.CDLL(None).mallopt
            done["glibc_malloc"] = bool(
                mallopt(_M_MMAP_MAX, 0)
                and mallopt(_M_TRIM_THRESHOLD, BATCH_TRIM_THRESHOLD)
                and mallopt(_M_ARENA_MAX, 1)
            )
        except (OSError, AttributeError):  # pragma: no cover - no C library symbols
            pass
    return done


HELD_AT_COMMIT: dict[str, int | None] = {"signal": None}
"""The signal a job's commit (``signals_deferred(commit=True)``) held to its end, or None: the
job's results are published whole, and it finishes (the CLI notes it and exits with the job's
code); the CLI clears it as a job starts."""


def take_held_at_commit() -> str | None:
    """The signal :data:`HELD_AT_COMMIT` holds, by name (``Ctrl-C``, ``SIGTERM``), forgotten.

    None when no commit held one. For the CLI's note and the Python API's warning.
    """
    number, HELD_AT_COMMIT["signal"] = HELD_AT_COMMIT["signal"], None
    if number is None:
        return None
    return "Ctrl-C" if number == signal.SIGINT else signal.Signals(number).name


@contextlib.contextmanager
def signals_deferred(
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
    *,
    commit: bool = False,
) -> Iterator[None]:
    """Hold ``signals`` while the block runs, then act on the first one that came.

    For a short write that must happen whole (a model version with its alias and tags). The
    previous handlers are back before the signal is raised again, so Ctrl-C still ends the
    job (KeyboardInterrupt), only after the block. A second signal acts at once: a block
    stuck on an unreachable server still yields to a repeated Ctrl-C. Outside the main thread
    (where Python cannot set handlers) the block runs as it is. A process forked inside the
    block (a worker) is not held: there the signal acts as it would have before the block.

    ``commit``: the block is the job's last step, the publication of its results (a score
    batch's history, ledger and files; a version's registration; a monitor's files): a signal
    held to its end does not act but is recorded (:data:`HELD_AT_COMMIT`), and the job
    finishes. Acting on it said ``aborted`` (130) or ``terminated`` (143), the code of a job
    that published nothing, after results published whole (1 of 60 Ctrl-Cs sent in a demo
    score). A block that raises acts on it as without ``commit``.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}

    def restore() -> None:
        while previous:
            signum, handler = previous.popitem()
            signal.signal(signum, handler)

    holder = os.getpid()

    def hold(number: int, _frame) -> None:
        if os.getpid() != holder:  # a process forked inside the block: acts as before it
            restore()
            signal.raise_signal(number)
            return
        received.append(number)
        if len(received) > 1:  # asked twice: act now
            restore()
            signal.raise_signal(number)

    for signum in signals:
        handler = signal.getsignal(signum)
        if handler is None:  # installed outside Python: leave it alone
            continue
        previous[signum] = handler
        signal.signal(signum, hold)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        restore()
        if len(received) == 1:
            if commit and not failed:
                HELD_AT_COMMIT["signal"] = received[0]
            else:
                signal.raise_signal(received[0])


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off inside (as it was again after); also a decorator.

    For a batch job whose objects live until it ends: the modules it imports, an unpickled
    model, a batch's rows as Python values. A full collection walks every tracked object, and
    the collector starts one whenever a quarter more of them have survived since the last:
    the score job at 100k partners ran 7-11 (~0.1 s each in the job, more in its workers),
    all finding (nearly) nothing to free. Memory is freed by reference counting as before;
    only garbage in reference cycles waits until the collector is on again. Workers forked
    inside inherit the pause.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _glibc() -> bool:
    """Whether this process runs on glibc (its version is a configuration string there)."""
    try:
        return sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not defined here
        return False


def _run(index: int) -> Any:
    return _TASKS[index]()


def start_tasks(tasks: Sequence[Callable[[], Any]], workers: int) -> Callable[[], list[Any]]:
    """Start ``tasks`` on ``workers`` forked processes; returns a function waiting for results.

    Tasks are handed out one at a time in list order (put the longest first). With one worker
    or no ``fork``, nothing starts: the returned function runs the tasks in this process (one
    task with more workers runs beside this process). A task's exception is raised by the
    returned function (the pool is stopped); so is :class:`WorkerDied` if a worker dies.

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
    pool = WorkerPool(min(workers, len(tasks)))
    # the workers' garbage collector must not visit (write to) every inherited object: that
    # would copy each page holding one (copy on write)
    gc.freeze()
    try:
        # the workers are forked by the first submit, before the pool starts its own thread
        pending = [pool.submit(_run, i) for i in range(len(tasks))]
    finally:
        gc.unfreeze()
        _TASKS.clear()  # the parent keeps no reference; the workers have their copy

    def wait() -> list[Any]:
        try:
            results = [pool.result(future) for future in pending]
        except BaseException:
            pool.stop()
            raise
        pool.close()
        return results

    return wait
