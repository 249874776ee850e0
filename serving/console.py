"""The ``partnerscore`` console script's entry point: SIGTERM handled before the imports.

Importing the CLI (Typer, click, pydantic and the commands' modules) takes ~0.2 s, more on a
busy machine, before :func:`partnerscore.serving.cli.main` can install its SIGTERM handler;
a SIGTERM in that time ended the process by the signal (exit -15 for a scheduler, nothing
said). This module imports only the standard library's ``contextlib``, ``json``, ``os``, ``signal``
and ``sys``: from its first line a SIGTERM says ``terminated`` and exits 143, as it does once the
job runs (nothing has started yet: no worker, no file). Only the interpreter's own start
(~20-60 ms before this module runs) still ends by the signal, with nothing left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys

_GLOBAL_VALUE_OPTIONS = ("--log-level",)
"""The console script's global options that take a value (the next argument)."""

ENDING: dict[str, int | None] = {"code": None}
"""The job's exit code once its ending is said (its result or its error printed), else None.

Set by :mod:`partnerscore.serving.cli` (``emit``, ``main``). From then on a SIGTERM or a
Ctrl-C changes nothing the job said: :func:`ended_as_said`."""


def json_requested(argv: list[str]) -> bool:
    """``--json`` among the global options, before the command.

    Read when the parser failed before the console script's callback set it (an unknown
    command, a bad global option) and for a SIGTERM before the CLI is imported.
    """
    args = iter(argv)
    for arg in args:
        if arg == "--json":
            return True
        if arg in _GLOBAL_VALUE_OPTIONS:
            next(args, None)
        elif arg == "--" or not arg.startswith("-"):  # the command: its options are its own
            return False
    return False


def _ended_before_the_job(said: str, code: int) -> None:
    """End before the job runs, as the job's own ending says it: ``said``, exit ``code``.

    ``said`` on stderr; with ``--json`` the error object on stdout too (``command`` null: none
    is recognised yet). The process exits at once (nothing has started).
    """
    if json_requested(sys.argv[1:]):
        payload = {"command": None, "error": said, "exit_code": code}
        _write(1, json.dumps(payload, indent=2, sort_keys=True) + "\n")
    _write(2, f"{said}\n")
    os._exit(code)


def _write(fd: int, text: str) -> None:
    """``text`` to a descriptor; nothing when it is closed or its reader gone.

    A scheduler often closes its end of the job's stdout before its SIGTERM: the write's
    BrokenPipeError went up through the import machinery, a traceback and exit 1 instead of
    143.
    """
    with contextlib.suppress(OSError):
        os.write(fd, text.encode())


def terminated_before_the_job(number: int, _frame) -> None:
    """SIGTERM while the CLI imports: ``terminated``, exit 143, as once the job runs.

    Once the job's ending is said (the handler is back while the process exits), as
    :func:`ended_as_said`.
    """
    if ENDING["code"] is not None:
        ended_as_said(number, _frame)
    _ended_before_the_job("terminated", 128 + number)


def ended_as_said(_number: int, _frame) -> None:
    """SIGTERM or Ctrl-C after the job said its ending: exit at once with the job's code.

    The job's result (or error) is printed whole; the process only exits (the atexit
    functions, the interpreter's teardown: ~0.1-0.5 s). A SIGTERM then printed ``terminated``
    and, with ``--json``, a second JSON object after the result (a scheduler's parser read
    "Extra data"), exit 143 for a job that had finished; a Ctrl-C printed a
    KeyboardInterrupt traceback from an exit function. Nothing more is said now.
    """
    for stream in (sys.stdout, sys.stderr):
        # printed by click, which flushes: a closed pipe or a write under way, nothing more
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(ENDING["code"])


def main() -> int:
    """Console-script entry point: :func:`partnerscore.serving.cli.main` after its imports."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, terminated_before_the_job)
    try:
        from partnerscore.serving.cli import main as run
    except KeyboardInterrupt:
        # Ctrl-C while the CLI imports printed Python's KeyboardInterrupt traceback through
        # the import machinery and died by the signal (-2): ``aborted``, exit 130, as once
        # the job runs
        _ended_before_the_job("aborted", 130)
    return run()


if __name__ == "__main__":
    sys.exit(main())
