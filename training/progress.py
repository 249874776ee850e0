"""Progress bars and status lines for long steps (rich), quiet unless someone is watching.

One mechanism for every job: :func:`task` opens a bar (``total`` known) or a spinner (``total``
None) on stderr and yields a :class:`Task` to advance. Bars show only when :func:`enabled`:
``--progress/--no-progress`` (:func:`set_enabled`) decides when given; otherwise they show when
stderr is a terminal and neither ``CI`` nor ``PARTNERSCORE_NO_PROGRESS`` is set. Disabled, a task
costs nothing and prints nothing. Nested tasks (a demo step running the tuning bars) share one
live display; bars disappear when done, so summaries and logs stay clean.

Nothing happens at import time: rich is imported on the first visible task.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

_STATE: dict[str, Any] = {"enabled": None, "progress": None, "depth": 0, "stop_pid": None}


def set_enabled(value: bool | None) -> None:
    """Force bars on (True) or off (False); None restores the automatic choice."""
    _STATE["enabled"] = value


def enabled() -> bool:
    """Whether tasks are shown: the forced choice, else a terminal outside CI."""
    if _STATE["enabled"] is not None:
        return bool(_STATE["enabled"])
    if os.environ.get("CI") or os.environ.get("PARTNERSCORE_NO_PROGRESS"):
        return False
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


class Task:
    """A handle on one bar or spinner; every method is a no-op when progress is disabled."""

    def __init__(self, progress=None, task_id=None) -> None:
        self._progress = progress
        self._id = task_id
        self.completed = 0

    def advance(self, steps: int = 1) -> None:
        """Move the bar by ``steps``."""
        self.completed += steps
        if self._progress is not None:
            self._progress.advance(self._id, steps)

    def describe(self, description: str) -> None:
        """Replace the bar's text (e.g. the current step's name)."""
        if self._progress is not None:
            self._progress.update(self._id, description=description)


def _new_progress():
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def request_stop(requested: bool = True) -> None:
    """Note that this process was asked to stop (the console script's SIGTERM handler).

    Its KeyboardInterrupt can be swallowed where it lands (C code that clears errors, a
    library's broad ``except``): the job then ran on to its end (exit 0, 1 SIGTERM in 250
    sent as ``score`` started). The next step (:func:`task`) raises it again.

    Args:
        requested: False clears the note (a new job in the same process).
    """
    _STATE["stop_pid"] = os.getpid() if requested else None


def _stop_if_requested() -> None:
    """KeyboardInterrupt if this process was asked to stop and its job carried on.

    Only in the main thread of the process that was asked, and not while an exception is
    being handled (the job unwinding: its cleanup runs on).
    """
    import threading

    if (
        _STATE["stop_pid"] == os.getpid()
        and threading.current_thread() is threading.main_thread()
        and sys.exc_info()[1] is None
    ):
        raise KeyboardInterrupt


@contextmanager
def task(description: str, total: int | None = None) -> Iterator[Task]:
    """A bar (``total`` steps) or a spinner (``total`` None) while the block runs.

    A job asked to stop that carried on (:func:`request_stop`) stops here.

    Args:
        description: What is happening, e.g. ``"tuning revenue head"``.
        total: Number of steps, or None for an open-ended step.

    Yields:
        The :class:`Task` to advance.
    """
    _stop_if_requested()
    if not enabled():
        yield Task()
        return
    if _STATE["progress"] is None:
        _STATE["progress"] = _new_progress()
        _STATE["progress"].start()
    progress = _STATE["progress"]
    _STATE["depth"] += 1
    task_id = progress.add_task(description, total=total)
    try:
        yield Task(progress, task_id)
    finally:
        progress.remove_task(task_id)
        _STATE["depth"] -= 1
        if _STATE["depth"] == 0:
            progress.stop()
            _STATE["progress"] = None


def track(items: Iterable, description: str, total: int | None = None) -> Iterator:
    """Iterate ``items`` with a bar (``total`` defaults to ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with task(description, total) as bar:
        for item in items:
            yield item
            bar.advance()
