"""What the ``partnerscore`` console script and its command groups share.

The app factory, the ``--config`` option and configuration loading (imported lazily, so
``--help`` stays fast).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from partnerscore.features.core import OptionError, PartnerscoreError, same_file
from partnerscore.serving.console import ENDING

_STATE = {
    "json": False,
    "exit_now": False,
    "command": None,
    "terminated": False,
    "inputs": {},
    "files": [],
}
"""Process-wide CLI state: ``--json`` output (set by the console script's callback), the
command being run (``score``, ``experiment assign``; set when it starts, for error objects),
the input files and folders the command's options and config keys name (path -> option or
key, :func:`input_path`) and every file or folder named so far, input or output
(:func:`name_output`: two options naming one file)."""

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Override file (.json, .toml or .yaml) for the defaults."),
]


class UsageError(PartnerscoreError):
    """A usage error found after parsing: an option missing, clashing or given a bad value.

    Bad values are :class:`~partnerscore.features.core.OptionError` s of the command or its job
    (see :func:`new_app`). The console script prints the command's usage line before the one
    ``error:`` line, as it does for the parser's own usage errors; exit code 2.

    Args:
        message: One line naming the options.
        ctx: The command's context (Typer passes it to a ``typer.Context`` parameter).
    """

    def __init__(self, message: str, ctx: typer.Context) -> None:
        super().__init__(message)
        self.usage = ctx.get_usage()
        self.command = command_name(ctx)


def command_name(ctx) -> str | None:
    """The command a (click) context runs, without the program name.

    ``score``, ``experiment assign``; None for the console script itself before a command is
    known (an unknown command, no command).
    """
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    if not names and ctx is not None and ctx.invoked_subcommand:  # in the global options
        names.append(ctx.invoked_subcommand)
    return " ".join(reversed(names)) or None


class _Command(TyperCommand):
    """A command whose :class:`~partnerscore.features.core.OptionError` s are usage errors."""

    def invoke(self, ctx: typer.Context):
        _STATE["command"] = command_name(ctx)
        try:
            return super().invoke(ctx)
        except OptionError as exc:
            raise UsageError(exc.message, ctx) from exc


class _Group(TyperGroup):
    """A command group that, under ``--json``, answers no command with a usage error.

    Without ``--json`` it prints its help on stdout (``no_args_is_help``); a job parsing stdout
    gets the error object instead (``partnerscore --json experiment``).
    """

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if not args and _STATE["json"] and not ctx.resilient_parsing:
            ctx.fail("Missing command.")
        return super().parse_args(ctx, args)


class _App(typer.Typer):
    """A Typer app whose commands are :class:`_Command` s unless given another class."""

    def command(self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kw):
        return super().command(name, cls=cls or _Command, **kw)


def new_app(name: str, help: str) -> typer.Typer:
    """A Typer app with the project's defaults.

    Help on no arguments, no shell-completion commands, no pretty tracebacks (errors are one
    line, see ``serving/cli.py``), and a bad option value found by a command or its job (an
    :class:`~partnerscore.features.core.OptionError`) reported as a usage error.
    """
    return _App(
        name=name,
        help=help,
        no_args_is_help=True,
        cls=_Group,
        add_completion=False,
        pretty_exceptions_enable=False,
    )


def name_input(path: str | Path | None, name: str, *, whole: bool = False) -> None:
    """Remember that option (or config key) ``name`` gave the input ``path``.

    A one-line error of the job that begins with the path (``<path>: empty file``, ``<path>:
    column 'tier' row 3: ...``) is then said with ``name`` before it (:func:`named_error`).
    ``whole``: the input may be a folder read whole (a scores file, or the Parquet dataset
    folder of part files ``score --engine spark`` writes): an error beginning with a file in
    it (``<path>/part-00001.parquet: ...``) is said with ``name`` too, and an output anywhere
    inside it is refused (:func:`name_output`), not only one directly in it.
    """
    import os

    if path is None:
        return
    text = str(path)
    name = _claim(path, name, output=False, whole=whole)
    for form in {text, str(Path(text)), os.path.abspath(text)}:
        _STATE["inputs"][form] = name
        if whole:
            _STATE["inputs"][form.rstrip("/") + "/"] = name


def name_output(path: str | Path | None, name: str, *, writes: tuple[str, ...] = ()) -> None:
    """Remember that option ``name`` gives the output ``path``; refuse it over an input.

    Called before the job does any work. An output that is the file an input option or
    config key names (``experiment assign --scores s.csv --out s.csv`` overwrote the scores
    with the assignment table, exit 0), the file another output names (``--out a.csv
    --registry a.csv``: the registry replaced the assignment table), or lies directly in an
    input folder, among the files read from it (``score --raw data/raw --out
    data/raw/partners.csv``), is a usage error naming both options (exit 2). An output in a
    folder below an input folder is not (``--raw data --out data/scores/s.parquet``: no table
    is read from ``data/scores``). A file named by an option that is input and output (the
    experiment registry) is given to both :func:`name_input` and this. An output folder's
    files the job writes (``writes``) are claimed as outputs too: an input file among them
    (``experiment analyze --assignments O/outcomes.csv --out O``) was overwritten without a
    word until 2026-12-06.

    Args:
        path: The option's value (None: not given, nothing checked).
        name: The option (``--out``).
        writes: For an output folder, the names of the files the job writes in it.

    Raises:
        OptionError: ``--out s.csv: also given as --scores; an output must not overwrite an
            input``, and the like.
    """
    if path is not None:
        _claim(path, name, output=True)
        for file in writes:
            _claim(Path(path) / file, name, output=True)


def _claim(path: str | Path, name: str, *, output: bool, whole: bool = False) -> str:
    """Record that option ``name`` names ``path`` (an input or an output).

    Returns the name an error about the input is said with: two input options naming one
    file are said together (``--scores and --partners-file s.csv: ...``; until 2026-12-06 the
    last one alone, as if only it gave the file), an option after a config key naming the
    same file alone (the option's file is the one used).

    Raises:
        OptionError: An output over an input or another output, or directly in an input folder.
    """
    import os

    here = Path(os.path.realpath(path))  # a link loop: as it stands, said by the writer
    said = name
    # an output over a file named as input and output (the registry) is said as two outputs
    for there, given, other, was_output, read_whole in sorted(
        _STATE["files"], key=lambda f: not f[3]
    ):
        if other == name:  # one option's path in several forms
            continue
        if same_file(here, there):
            if output or was_output:  # said by the output (the later one of two outputs)
                first, second = (other, name) if output else (name, other)
                what = (
                    "two outputs cannot share one file"
                    if output and was_output
                    else "an output must not overwrite an input"
                )
                raise OptionError(f"{second} {path}: also given as {first}; {what}")
            if "." not in other.lstrip("-"):  # two input options (not a config key): both
                said = f"{other} and {said}"
            continue
        # a folder read whole (a scores dataset folder): anywhere below it, not only in it
        if output and not was_output and there.is_dir() and _inside(here, there, read_whole):
            raise OptionError(
                f"{name} {path}: inside {other} {given}, an input folder; write outputs elsewhere"
            )
        if was_output and not output and here.is_dir() and _inside(there, here, whole):
            raise OptionError(
                f"{other} {given}: inside {name} {path}, an input folder; write outputs elsewhere"
            )
    _STATE["files"].append((here, str(path), name, output, whole))
    return said


def _inside(path: Path, folder: Path, anywhere: bool) -> bool:
    """Whether ``path`` is directly in ``folder`` (``anywhere``: or in a folder below it)."""
    return path.parent == folder or (anywhere and folder in path.parents)


def named_error(message: str) -> str:
    """``message`` with the option or config key that gave the file it begins with, if any.

    ``<path>: empty file`` -> ``--overrides <path>: empty file`` (a folder read whole: also
    ``<path>/part-00001.parquet: empty file`` -> ``--scores <path>/part-00001.parquet: ...``);
    a message naming the option or key already (``(config key score.overrides_path)``) is
    left as it is.
    """
    import re

    for path in sorted(_STATE["inputs"], key=len, reverse=True):
        # ``<folder>/``: a folder read whole (name_input's ``whole``), a message about its file
        folder = path.endswith("/")
        if message.startswith(path if folder else f"{path}:"):
            name = _STATE["inputs"][path]
            # named already: the name as a word of its own, not inside a path (RAW/validated)
            rest = message.partition(": ")[2] if folder else message[len(path) + 1 :]
            said = re.search(rf"(?<![\w/.-]){re.escape(name)}(?![\w/.-])", rest)
            return message if said else f"{name} {message}"
    return message


def input_path(
    path: Path | None,
    option: str | None,
    *,
    folder: bool = False,
    created: bool = False,
    what: str | None = None,
) -> Path | None:
    """The input file or folder an option names, checked before the job starts.

    One line naming the option and the path when nothing is there (unless the job creates
    it: ``created``), a folder is there where a file is expected or the reverse, or it cannot
    be read (root reads a mode 000 file anyway). The option is remembered for the job's own
    errors about the file (:func:`name_input`).

    Args:
        path: The option's value (None: not given, nothing checked).
        option: ``--overrides``, or a positional argument's name as the usage line says it
            (``RAW``): ``RAW r: is a file, expected a raw data folder``.
        folder: A folder is expected, not a file.
        created: A missing file is fine (the job writes it, as the experiment registry).
        what: What it is, for messages ("config file", "raw data folder"; default "file" or
            "folder").

    Raises:
        PartnerscoreError: ``--overrides x.csv: file not found`` and the like.
    """
    import os

    if path is None:
        return None
    if option is not None:
        name_input(path, option)
    said = f"{option} {path}" if option is not None else str(path)
    what = what or ("folder" if folder else "file")
    if not path.exists():
        if created and not path.is_symlink():
            return path
        raise PartnerscoreError(f"{said}: {what} not found")
    if folder and not path.is_dir():
        raise PartnerscoreError(f"{said}: is a file, expected a {what}")
    if not folder and path.is_dir():
        raise PartnerscoreError(f"{said}: is a folder, expected a {what}")
    if not os.access(path, os.R_OK | (os.X_OK if folder else 0)):
        raise PartnerscoreError(f"{said}: cannot read {what}: permission denied")
    return path


def load(path: Path | None):
    """The application configuration: shipped defaults, optionally overridden by one file.

    The file is ``--config``'s, and the input files the configuration names (the playbook,
    the overrides: ``HASH_CONTENT_KEYS``) are their keys' in the job's errors about them.
    """
    from partnerscore.serving.config import HASH_CONTENT_KEYS, load_config

    input_path(path, "--config", what="config file")
    config = load_config(path)
    for section, key in HASH_CONTENT_KEYS:
        value = getattr(getattr(config, section), key)
        if value is not None:
            name_input(value, f"{section}.{key}")
    return config


def jsonable(value):
    """Result objects (dataclasses of paths, dates, numbers, frames' counts) as JSON values."""
    import dataclasses
    import math
    from datetime import date as _date

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (Path, _date)):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    if hasattr(value, "shape"):  # frames and arrays ride along as their size only
        return {"rows": int(value.shape[0])}
    return str(value)


def emit(result, exit_code: int = 0) -> None:
    """Print a job's result: its human summary, or with ``--json`` its fields as JSON.

    Args:
        result: The job's result.
        exit_code: The command's exit code with this result (1: a failing outcome). Once the
            result is printed the job's ending is said
            (:data:`~partnerscore.serving.console.ENDING`): a SIGTERM or Ctrl-C after it no
            longer adds ``terminated``/``aborted`` (and a second JSON object).
    """
    if _STATE["json"]:
        payload = result.json_payload() if hasattr(result, "json_payload") else jsonable(result)
        if not isinstance(payload, dict):
            payload = {"result": payload}
        payload["summary"] = result.summary()
        said_result(lambda: say_json(payload), exit_code)
    else:
        said_result(lambda: say(result.summary()), exit_code)


def said_result(write, exit_code: int = 0) -> None:
    """Print the job's result with ``write`` and record its ending, with no signal between.

    Ctrl-C and SIGTERM are held while it prints
    (:func:`~partnerscore.features.parallel.signals_deferred`; a second one acts at once) and
    act after, on a job whose ending is said: its own code. One landing between the printed
    result and the record said ``aborted``, exit 130, after a whole result (1 of 3 Ctrl-Cs
    sent as `models --json` printed its last line).
    """
    from partnerscore.features.parallel import signals_deferred

    with signals_deferred():
        write()
        ENDING["code"] = exit_code


def emit_error(message: str, exit_code: int, command: str | None) -> None:
    """A failed command's one JSON object on stdout, for ``--json``.

    Its human ``error:`` line goes to stderr as without ``--json``. Fields: ``error`` (that
    line without ``error: ``), ``exit_code`` and ``command`` (None when no command was
    recognised).
    """
    say_json({"error": message, "exit_code": exit_code, "command": command})


def say_json(payload: dict) -> None:
    """One JSON object on stdout (keys sorted, indented), as every ``--json`` output is."""
    import json

    say(json.dumps(payload, indent=2, sort_keys=True, default=str))


def say(text: str) -> None:
    """``text`` and a newline on stdout; nothing more once its reader is gone.

    A reader that went away (``partnerscore --json ... | head -1``, a scheduler that closed
    the job's stdout before stopping it) made the write raise BrokenPipeError: a job's result
    then ended with exit 1 (click's handling), its error object (or ``terminated``) with a
    traceback and exit 1 instead of its code. Now stdout goes to ``os.devnull`` (Python's
    advice for SIGPIPE, so that its flush at exit does not fail either) and the command ends
    with its own code.
    """
    import errno
    import os
    import sys

    try:
        typer.echo(text)
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.EBADF):
            raise
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


def json_first(args: list[str], root) -> list[str]:
    """``args`` with a ``--json`` given after the command moved before it, where it belongs.

    ``--json`` is a global option: after the command (``partnerscore validate DIR --json``)
    the parser said "No such option: --json" as text, exit 2. A ``--json`` that is the value
    of an option taking one (``--reason --json``: the parser gives it to ``--reason``) or
    that follows ``--`` stays where it is. Options are read from the commands themselves
    (``root``, the console script's click group, and its command groups).

    Args:
        args: The console script's arguments.
        root: The click group the arguments are parsed by.

    Returns:
        The arguments, ``--json`` first when one was moved (otherwise unchanged).
    """
    if "--json" not in args:
        return args
    kept: list[str] = []
    command, moved, given = root, False, False
    at = 0
    while at < len(args):
        arg = args[at]
        at += 1
        if arg == "--":
            kept.extend(args[at - 1 :])
            break
        if arg == "--json" and command is root:
            given = True
        elif arg == "--json" and (command is None or _takes_value(command, arg) is None):
            moved = True  # not an option of the command: the global one
            continue
        kept.append(arg)
        if command is None:  # an unknown command: its options are unknown
            continue
        if arg.startswith("-") and len(arg) > 1:
            values = _takes_value(command, arg)
            if values:
                kept.extend(args[at : at + values])
                at += values
        elif isinstance(getattr(command, "commands", None), dict):  # a group: its command
            command = command.commands.get(arg)
    return ["--json", *kept] if moved and not given else kept


def _takes_value(command, arg: str) -> int | None:
    """How many values follow option ``arg`` of ``command``; None: no such option.

    0 for a flag, or when the value is in ``arg`` (``--out=x.csv``, ``-cFILE``).
    """
    name = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
    for param in command.params:
        if name in (*getattr(param, "opts", ()), *getattr(param, "secondary_opts", ())):
            if param.is_flag or getattr(param, "count", False) or name != arg:
                return 0
            return max(param.nargs, 1)
    return None


def note_left(result) -> None:
    """Say an earlier run's publish of the job's set killed between its renames, in one line.

    For build, score and experiment analyze: ``result.interrupted_publish``
    (:class:`~partnerscore.features.core.LeftPublish`), found before the run wrote there and
    replaced by its own files; on stderr, before the job's summary.
    """
    if result.interrupted_publish is not None:
        typer.echo(f"note: {result.interrupted_publish.note}", err=True)
