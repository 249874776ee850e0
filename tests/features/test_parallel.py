"""Forked worker pools: results in order, task errors re-raised, a dead worker an error (no hang).

``multiprocessing.Pool`` waits forever for a task whose worker was killed (the kernel's
out-of-memory killer, an operator's ``kill -9``); the pool here must say so in one line.
"""

import time

import pytest
from support import die_by_sigkill, no_hang

from partnerscore.features import parallel

pytestmark = pytest.mark.skipif(not parallel.can_fork(), reason="needs fork")


def test_a_killed_worker_is_an_error_naming_the_signal_not_a_hang():
    waiting = parallel.start_tasks([lambda: 1, die_by_sigkill, lambda: 3], 2)
    with no_hang(60), pytest.raises(parallel.WorkerDied) as caught:
        waiting()
    message = str(caught.value)
    assert "killed by signal 9" in message and "out of memory?" in message
    assert "--workers 1" in message and "\n" not in message


def test_stop_ends_running_tasks_at_once():
    pool = parallel.WorkerPool(2)
    futures = [pool.submit(time.sleep, 120) for _ in range(3)]
    started = time.monotonic()
    with no_hang(60):
        pool.stop()
    assert time.monotonic() - started < 30
    assert all(f.done() for f in futures)


def test_a_task_error_stops_the_other_workers():
    def fails():
        raise ValueError("task failed")

    waiting = parallel.start_tasks([fails, lambda: time.sleep(120)], 2)
    started = time.monotonic()
    with no_hang(60), pytest.raises(ValueError, match="task failed"):
        waiting()
    assert time.monotonic() - started < 30


def test_collector_paused_restores_the_collector_as_it_was():
    import gc

    assert gc.isenabled()
    with parallel.collector_paused():
        assert not gc.isenabled()
        with parallel.collector_paused():  # nested: the outer pause still holds after
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), parallel.collector_paused():
        raise ValueError("the error passes through")
    assert gc.isenabled()
    gc.disable()
    try:
        with parallel.collector_paused():
            pass
        assert not gc.isenabled()  # off before: not switched on by the pause
    finally:
        gc.enable()


def test_collector_paused_as_a_decorator_pauses_every_call():
    import gc

    @parallel.collector_paused()
    def state() -> bool:
        return gc.isenabled()

    assert state() is False and state() is False
    assert gc.isenabled()
