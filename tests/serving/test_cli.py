import contextlib
import subprocess
import sys

import pytest
from support import with_sitecustomize

from partnerscore.serving.cli import app, main

COMMANDS = [
    "simulate",
    "validate",
    "build",
    "metrics",
    "train",
    "models",
    "promote",
    "score",
    "report",
    "forecast",
    "demo",
    "monitor",
    "incentives",
    "whatif",
]


def test_every_command_is_registered():
    names = {cmd.name or cmd.callback.__name__ for cmd in app.registered_commands}
    assert names == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_on_every_command(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage" in out and command in out


def test_bad_date_is_a_usage_error(capsys):
    assert main(["score", "--as-of", "2026-13-45"]) == 2
    usage, err = capsys.readouterr().err.strip().splitlines()
    assert usage.startswith("Usage: ") and usage.endswith(" score [OPTIONS]")
    assert err == "error: --as-of: expected a date YYYY-MM-DD, got '2026-13-45'"


def test_bad_config_is_one_line_error(tmp_path, capsys):
    assert main(["metrics", "--help"]) == 0
    capsys.readouterr()
    assert main(["simulate", "--config", str(tmp_path / "none.json")]) == 2
    assert capsys.readouterr().err.strip().endswith("none.json: config file not found")


def test_console_script_runs_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "partnerscore.serving.cli", "build", "--ages", "x,y"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    *usage, err = proc.stderr.strip().splitlines()  # a usage error (its line may wrap)
    assert usage[0].startswith("Usage: ") and " build " in " ".join(usage)
    assert err == "error: --ages: expected comma-separated day counts, got 'x,y'"


def _outputs(folder) -> dict[str, bytes]:
    """Every table and page a command wrote (manifests carry their creation time: left out)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.suffix in (".csv", ".parquet", ".html")
    }


def test_batch_commands_run_with_the_memory_settings_and_write_the_same_files(
    cli_config, tmp_path, monkeypatch
):
    """validate, build and score run with the batch memory settings, and the console script
    skips the interpreter's teardown after the outputs of those and of simulate and report.

    ``_batch_job`` applies ``tune_batch_memory``'s allocator settings (placement only);
    ``_batch_done`` lets ``_exit_now`` end the process. Twin: each command in this process
    without either; the console script in a fresh process (``main()`` with no argv, as
    installed) with both: the same files.
    """
    from partnerscore.features import parallel

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(parallel, "tune_batch_memory", lambda: {})
    config, env = cli_config
    script = (
        "import sys; from partnerscore.features import parallel; "
        "from partnerscore.serving import cli; real = parallel.tune_batch_memory; "
        "parallel.tune_batch_memory = lambda: print('tuned', real()); "
        "sys.exit(cli.main())"
    )
    written = {}
    tuned_commands: list[str] = []
    for tuned in (False, True):
        root = tmp_path / str(tuned)
        raw, scores = root / "raw", root / "scores" / "scores.parquet"
        steps = [
            ["simulate", "--partners", "150", "--seed", "5", "--out", str(raw)],
            ["validate", str(raw), "--validated", str(raw / "validated")],
            ["build", "--raw", str(raw), "--out", str(root / "features")],
            ["score", "--raw", str(raw), "--as-of", "2026-03-01", "--out", str(scores)],
            ["report", "--scores", str(scores), "--out", str(root / "reports")],
        ]
        (tmp_path / "data" / "scores" / "history.sqlite").unlink(missing_ok=True)
        for argv in steps:
            argv = [*argv, "-c", str(config)]
            if tuned:
                done = subprocess.run(
                    [sys.executable, "-c", script, *argv], capture_output=True, text=True, env=env
                )
                assert done.returncode == 0, done.stderr
                if "tuned {'numpy_hugepage_off': True" in done.stdout:
                    tuned_commands.append(argv[0])
            else:
                assert main(argv) == 0, argv[0]
        written[tuned] = _outputs(root)
    # simulate: -25% CPU but +34% peak RSS; report: no gain (measured, README)
    assert tuned_commands == ["validate", "build", "score"]
    assert len(written[False]) > 20
    assert written[True].keys() == written[False].keys()
    differ = [name for name in written[False] if written[True][name] != written[False][name]]
    assert differ == []


def test_ctrl_c_during_train_says_aborted_and_registers_nothing(built_dir, tmp_path):
    # typer turns Ctrl-C into exit code 130 without a word: the job just stopped
    import os
    import signal
    import time

    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    err = tmp_path / "err.txt"
    with err.open("w") as stderr:
        job = subprocess.Popen(
            [sys.executable, "-m", "partnerscore.serving.cli", "train"]
            + ["--features", str(built_dir), "--trials", "0"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            # a pytest-xdist worker ignores SIGINT, and an ignored signal stays ignored in a
            # child: Python then installs no Ctrl-C handler and the job ran to the end
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + 120
        while not (tmp_path / "mlflow.db").exists():  # the work begins as the store is set up
            assert job.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        time.sleep(1)
        # Ctrl-C, again every 5 s as a user would (Python drops a KeyboardInterrupt that lands in
        # a finalizer, "Exception ignored", and a loaded machine's job can run on past one)
        # (not once it said "aborted": Python restores the default handler as it shuts down,
        # and a Ctrl-C then kills it, -2)
        while job.poll() is None and time.monotonic() < deadline:
            if "aborted" in err.read_text():
                job.wait(timeout=120)
                break
            job.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                job.wait(timeout=5)
        code = job.wait(timeout=1)
        if code == 0 and err.read_text().rstrip().endswith("and the job finished"):
            # a Ctrl-C held by the registration, the job's last step: the version is whole
            client = mlflow.MlflowClient(tracking_uri=uri)
            assert client.get_model_version_by_alias("partnerscore", "challenger").description
            return
        if code != 130:  # what the job got to: a run it finished, a version it registered
            client = mlflow.MlflowClient(tracking_uri=uri)
            ids = [e.experiment_id for e in client.search_experiments()]
            runs = [(r.info.status, r.info.end_time) for r in client.search_runs(ids)]
            versions = [(v.version, v.aliases) for v in client.search_model_versions()]
            raise AssertionError(
                f"exit {code}, not 130; stderr {err.read_text()!r}; runs {runs}; "
                f"versions {versions}"
            )
    said = err.read_text()
    assert said.rstrip().endswith("aborted") and "Traceback" not in said, said
    # never a version without its description, tags and alias (a later Ctrl-C may come after
    # the registration, which is then whole)
    client = mlflow.MlflowClient(tracking_uri=uri)
    for found in client.search_model_versions():  # the search fills in no aliases
        version = client.get_model_version(found.name, found.version)
        assert version.description and version.tags and version.aliases, version


_CTRL_C_SWALLOWED = """
import signal

import partnerscore.training.tracking as tracking

_setup = tracking.setup_tracking


def setup_tracking(*args, **kwargs):
    out = _setup(*args, **kwargs)
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:  # as C code that clears errors, or a broad except, does
        pass
    return out


tracking.setup_tracking = setup_tracking
"""
"""A sitecustomize for `train`: a Ctrl-C's KeyboardInterrupt swallowed where it lands, as the
job has set up its store."""


def _train_with_hook(built_dir, tmp_path, hook: str):
    """`train` (trials 0) in a child Python running ``hook`` first, on a new SQLite store in
    ``tmp_path``, with Ctrl-C's default handling: (its completed process, the store's URI)."""
    import os
    import signal

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = with_sitecustomize({**os.environ, "MLFLOW_TRACKING_URI": uri}, tmp_path / "hook", hook)
    done = subprocess.run(
        [sys.executable, "-m", "partnerscore.serving.cli", "train"]
        + ["--features", str(built_dir), "--trials", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        # a pytest-xdist worker ignores SIGINT, and the child would inherit it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    return done, uri


def test_a_ctrl_c_swallowed_where_it_lands_still_aborts_train(built_dir, tmp_path):
    """With Python's own Ctrl-C handler, a KeyboardInterrupt swallowed where it landed (C code
    that clears errors, a library's broad ``except``) was lost: `train` ran on to register its
    version, exit 0 (the Ctrl-C test saw it once: a job that ran past its Ctrl-C). The job now
    notes the Ctrl-C, as it does a SIGTERM, and raises it again at its next step: `aborted`,
    exit 130, no version."""

    import mlflow

    done, uri = _train_with_hook(built_dir, tmp_path, _CTRL_C_SWALLOWED)
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert done.stderr.rstrip().endswith("aborted") and "Traceback" not in done.stderr
    assert mlflow.MlflowClient(tracking_uri=uri).search_model_versions() == []


_CTRL_C_AS_THE_VERSION_IS_REGISTERED = """
import signal

from mlflow import MlflowClient

_set_alias = MlflowClient.set_registered_model_alias


def set_registered_model_alias(self, *args, **kwargs):
    signal.raise_signal(signal.SIGINT)  # held: the registration is under way
    return _set_alias(self, *args, **kwargs)


MlflowClient.set_registered_model_alias = set_registered_model_alias
"""


def test_a_ctrl_c_during_the_registration_lets_train_finish_whole(built_dir, tmp_path):
    """A Ctrl-C while `train` registered its version (its last step) waited for the version
    to be whole, then said `aborted`, exit 130: the code of a job that registered nothing, over
    a version registered with its alias. The job now finishes: its result, a note, exit 0."""

    import mlflow

    done, uri = _train_with_hook(built_dir, tmp_path, _CTRL_C_AS_THE_VERSION_IS_REGISTERED)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "note: Ctrl-C came as the job published its results: they are whole, and the job finished"
    )
    assert "registered" in done.stdout and "version 1" in done.stdout, done.stdout
    client = mlflow.MlflowClient(tracking_uri=uri)
    (found,) = client.search_model_versions()  # its aliases are not filled in by the search
    version = client.get_model_version("partnerscore", found.version)
    assert version.aliases == ["challenger"] and version.description
    assert "partnerscore.incomplete" not in version.tags


@pytest.mark.parametrize(("signum", "delays"), [("SIGINT", (0, 0.1, 0.2)), ("SIGTERM", (0.1,))])
def test_a_signal_after_the_result_ends_the_command_with_its_code(
    first_version, tracking_uri, tmp_path, signum, delays
):
    """A Ctrl-C or SIGTERM once a command that is no batch job (here `models`) had printed its
    result killed it by the signal, -2 or -15 with nothing said (3 of 4 Ctrl-Cs; after `train`
    6 of 6): the interpreter's teardown puts Python's default handlers back before it frees
    the modules. The console script now skips the teardown after any command, once its
    threads are done (MLflow's idle artifact worker here): the command's own code, 0."""
    import json
    import os
    import signal
    import time

    first_version("default", tracking_uri, tmp_path)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    for delay in delays:
        job = subprocess.Popen(
            [sys.executable, "-m", "partnerscore.serving.cli", "models", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        lines = []
        while not lines or lines[-1] != "}\n":  # the result, whole (one JSON object)
            line = job.stdout.readline()
            assert line, (job.wait(), job.stderr.read())
            lines.append(line)
        time.sleep(delay)
        if job.poll() is None:
            job.send_signal(getattr(signal, signum))
        rest, err = job.communicate(timeout=60)
        assert job.returncode == 0, (delay, job.returncode, err)
        assert rest == "" and err == "", (rest, err)
        assert json.loads("".join(lines))["versions"]


# Options whose default is a config key: the help names the key and its shipped default, which
# `--help` cannot show by itself (the option's own default is None: "not given, use the config").
CONFIG_BACKED = [
    ("simulate", "--partners"),
    ("simulate", "--seed"),
    ("simulate", "--event-scale"),
    ("build", "--ages"),
    ("build", "--horizon"),
    ("build", "--engagement-period"),
    ("train", "--trials"),
    ("forecast", "--coverage"),
    ("demo", "--partners"),
    ("demo", "--trials"),
]


def test_config_backed_options_name_the_key_and_its_shipped_default():
    import re

    import typer

    from partnerscore.serving.config import AppConfig

    commands = typer.main.get_command(app).commands
    shipped = AppConfig()
    wrong = []
    for command, option in CONFIG_BACKED:
        param = next(p for p in commands[command].params if option in p.opts)
        found = re.search(r"\(default ([^:]+): config (\w+)\.(\w+)\)", param.help or "")
        if not found:
            wrong.append(f"{command} {option}: help names no config default ({param.help!r})")
            continue
        text, section, key = found.groups()
        value = getattr(getattr(shipped, section), key)
        expected = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        if text != expected:
            wrong.append(f"{command} {option}: help says {text}, {section}.{key} is {expected}")
    assert not wrong, "; ".join(wrong)


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    from pathlib import Path

    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    from pathlib import Path

    try:  # a zombie has ended (its parent has not reaped it yet)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


_SIGTERM_AFTER_FORK = """
import os, signal

_fork = os.fork


def fork():
    pid = _fork()
    if pid:  # the job: record the worker, then SIGTERM while the pool is being started
        with open(os.environ["PARTNERSCORE_TEST_FORKED"], "a") as f:
            f.write(f"{pid}\\n")
        os.kill(os.getpid(), signal.SIGTERM)
        os.fork = _fork
    return pid


os.fork = fork
"""
"""A sitecustomize for the job: SIGTERM to itself just after its first fork returns (in the
middle of the worker pool's start: the process is forked, not recorded yet)."""

_LOADER_STUCK = """
import threading

import partnerscore.serving.score as score


def _load_for_scoring(*args, **kwargs):
    threading.Event().wait()  # never returns


score._load_for_scoring = _load_for_scoring
"""
"""A sitecustomize for the job: the model's helper thread never returns, as when a SIGTERM in
the job's thread left Python's import lock taken while that thread imported (seen: 1 run in
~25 of `reader_running`, the helper stuck in ``_get_module_lock``)."""


_SIGTERM_IN_A_FINALIZER = """
import signal
import threading

import partnerscore.features.validate as validate

_read_arrow = validate._read_arrow


class _Finalized:
    def __del__(self):  # SIGTERM handled here, where no exception can propagate
        signal.raise_signal(signal.SIGTERM)


def read_arrow(path):
    table = _read_arrow(path)
    if threading.current_thread() is threading.main_thread():
        validate._read_arrow = _read_arrow  # once: the first table the job's thread reads
        _Finalized()
    return table


validate._read_arrow = read_arrow
"""
"""A sitecustomize for the job: SIGTERM handled inside a finalizer (``__del__``) in the job's
thread, as it was once inside WeakKeyDictionary's weakref callback (1 run in 250 of
`reader_running`-like SIGTERMs: "Exception ignored ... KeyboardInterrupt", then exit 0)."""


_SIGTERM_BECOMES_ANOTHER_ERROR = """
import signal
import threading

import partnerscore.features.validate as validate

_read_arrow = validate._read_arrow


class _Finalized:
    def __del__(self):  # as SQLAlchemy's weakref callback once did while the job unwound
        raise TypeError("weak object has gone away")


def read_arrow(path):
    table = _read_arrow(path)
    if threading.current_thread() is threading.main_thread():
        validate._read_arrow = _read_arrow  # once: the first table the job's thread reads
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:  # as C code it lands in may raise another error instead
            _Finalized()
            raise OSError(9, "Bad file descriptor") from None
    return table


validate._read_arrow = read_arrow
"""
"""A sitecustomize for the job: the SIGTERM's KeyboardInterrupt turned into another error on
its way out, as in the import machinery ("TypeError: expected a message argument") or a
descriptor closed twice ("OSError: Bad file descriptor"): 2 runs in 250 said "unexpected";
and a finalizer failing as the job unwinds, which printed "Exception ignored ... Traceback"
(1 run in 250)."""


_SIGTERM_AS_THE_FILES_ARE_SUBMITTED = """
import signal

import partnerscore.serving.score as score


class _Executor(score.ThreadPoolExecutor):
    def submit(self, fn, /, *args, **kwargs):
        future = super().submit(fn, *args, **kwargs)
        if getattr(fn, "__name__", "") == "stage_frames":  # queued, not yet returned
            signal.raise_signal(signal.SIGTERM)
        return future


score.ThreadPoolExecutor = _Executor
"""
"""A sitecustomize for the job: SIGTERM inside the submit that hands the scores and rejects
files to the writing thread (which waits for the thread to start), after the write was queued:
the job said `terminated` but left the staged `.scores.parquet.*.tmp` (3 runs in 250)."""


_SIGTERM_SWALLOWED = """
import signal
import threading

import partnerscore.features.validate as validate

_read_arrow = validate._read_arrow


def read_arrow(path):
    table = _read_arrow(path)
    if threading.current_thread() is threading.main_thread():
        validate._read_arrow = _read_arrow  # once: the first table the job's thread reads
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:  # as C code that clears errors, or a broad except, does
            pass
    return table


validate._read_arrow = read_arrow
"""
"""A sitecustomize for the job: the SIGTERM's KeyboardInterrupt swallowed where it lands (a
job exited 0 half a second after the signal, saying nothing: 1 run in 250)."""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    "when",
    [
        "reader_running",
        "just_after_fork",
        "loader_stuck",
        "in_a_finalizer",
        "another_error",
        "files_submitted",
        "swallowed",
    ],
)
def test_sigterm_ends_the_score_job_and_its_workers_and_publishes_nothing(
    raw_dir, store_config, postgres_url, tmp_path, when
):
    """A scheduler's SIGTERM (a timeout, `kill PID`) ended the score job at once, without its
    cleanup: the history reader it forks (any database server, a large SQLite store) stayed
    behind for ever, holding the job's stdout, so a scheduler reading it never saw the end
    (exit -15). It now unwinds as Ctrl-C does: `terminated`, exit 143, no process left, no
    file and no history row.

    `just_after_fork` sends it the moment the fork returns in the job, before the pool has
    recorded its worker (1 run in ~25 of `reader_running` hit that window): the worker was
    left waiting for work for ever, holding the job's stdout (TimeoutExpired), or the job's
    exit waited for it. `loader_stuck` sends it while the model's helper thread is stuck for
    ever: the job waited for that thread (an interrupt inside Python's import machinery had
    left the import lock taken), holding its stdout. `in_a_finalizer` has the job's thread
    handle it inside a finalizer: its KeyboardInterrupt was printed as "Exception ignored"
    and dropped, and the job finished normally (exit 0). `another_error` turns its
    KeyboardInterrupt into another error on the way out: "unexpected OSError", exit 70.
    `files_submitted` sends it as the files are handed to their writing thread: their staged
    temporaries were left behind. `swallowed` has its KeyboardInterrupt swallowed where it
    lands: the job ran on to its end (exit 0)."""
    import json
    import os
    import signal
    import time

    import sqlalchemy as sa

    from partnerscore.serving.history import ScoreHistory

    paths = store_config.paths.model_copy(update={"history_url": postgres_url})
    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps(store_config.model_copy(update={"paths": paths}).model_dump(mode="json"))
    )
    out = tmp_path / "scores.parquet"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    forked = tmp_path / "forked.txt"
    if when == "just_after_fork":
        with_sitecustomize(env, tmp_path / "hook", _SIGTERM_AFTER_FORK)
        env["PARTNERSCORE_TEST_FORKED"] = str(forked)
    hooks = {
        "loader_stuck": _LOADER_STUCK,
        "in_a_finalizer": _SIGTERM_IN_A_FINALIZER,
        "another_error": _SIGTERM_BECOMES_ANOTHER_ERROR,
        "files_submitted": _SIGTERM_AS_THE_FILES_ARE_SUBMITTED,
        "swallowed": _SIGTERM_SWALLOWED,
    }
    if when in hooks:
        with_sitecustomize(env, tmp_path / "hook", hooks[when])
    job = subprocess.Popen(
        [sys.executable, "-m", "partnerscore.serving.cli", "score", "--raw", str(raw_dir)]
        + ["--as-of", "2026-04-01", "--out", str(out), "--config", str(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    children: list[int] = []
    if when in ("reader_running", "loader_stuck"):
        deadline = time.monotonic() + 120
        while not children and job.poll() is None and time.monotonic() < deadline:
            children = _children(job.pid)  # the history reader, forked as the job starts
            time.sleep(0.01)
        assert children, "the job forked no history reader"
        job.send_signal(signal.SIGTERM)
    try:
        _, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:  # hung: end it and its workers, not leave them behind
            children += [pid for pid in _children(job.pid) if pid not in children]
            job.kill()
        if forked.exists():
            children += [int(pid) for pid in forked.read_text().split()]
        for pid in children:  # before the fix they outlived the job: end them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)
    if when == "just_after_fork":
        assert children, "the job forked no history reader"
    left = [pid for pid in children if _alive(pid)]
    assert left == []
    assert job.returncode == 143, err
    assert err.strip().splitlines()[-1] == "terminated" and "Traceback" not in err, err
    assert not out.exists() and not (tmp_path / "scores.rejects.csv").exists()
    assert list(tmp_path.glob(".*")) == []  # no staged temporaries
    history = ScoreHistory(postgres_url)
    if history.exists():
        with history.engine.connect() as conn:
            rows = conn.execute(sa.text("select count(*) from score_history_v2")).scalar()
        assert rows == 0
    history.dispose()


_SIGTERM_AT_TYPER_IMPORT = """
import os
import signal
import sys


class _SigtermAtImport:
    def find_spec(self, name, path=None, target=None):
        if name == "typer":  # the CLI's imports have begun
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGTERM)
        return None


sys.meta_path.insert(0, _SigtermAtImport())
"""
"""A sitecustomize: SIGTERM to itself as the console script starts importing the CLI."""


_CONSOLE_SCRIPT = (  # the installed console script's entry point, as its launcher runs it
    "import sys; from importlib.metadata import entry_points; "
    "(ep,) = entry_points(group='console_scripts', name='partnerscore'); sys.exit(ep.load()())"
)
ENTRY_POINTS = {
    "console_script": ["-c", _CONSOLE_SCRIPT],
    "module_cli": ["-m", "partnerscore.serving.cli"],
    "module_package": ["-m", "partnerscore"],
}
"""The ways to start the CLI: the console script, ``python -m`` of the CLI and of the package."""


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("json_flag", [[], ["--json"]])
@pytest.mark.parametrize(
    ("signum", "code", "said"), [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "aborted")]
)
def test_a_signal_while_the_console_script_imports_says_so(
    tmp_path, json_flag, signum, code, said, entry
):
    """A SIGTERM before `main()` had installed its handler (while the console script imported
    the CLI, ~0.2 s and more on a busy machine) ended the process by the signal: exit -15,
    nothing said (41 of 250 SIGTERMs sent in a score job's first 3.4 s); a Ctrl-C there printed
    Python's KeyboardInterrupt traceback and died by the signal (-2). The entry point now
    handles both before those imports: `terminated`, 143 / `aborted`, 130, with `--json` the
    error object, as once the job runs. `python -m partnerscore.serving.cli` still imported the
    whole CLI first (-15 / -2 with a traceback), and `python -m partnerscore` was no entry
    point at all ("No module named partnerscore.__main__", exit 1): both now start through
    the console script's entry (`serving/console.py`)."""
    import json
    import os
    import signal

    env = dict(os.environ)
    with_sitecustomize(env, tmp_path / "hook", _SIGTERM_AT_TYPER_IMPORT.replace("SIGTERM", signum))
    job = subprocess.run(
        [sys.executable, *ENTRY_POINTS[entry], *json_flag, "validate", "--raw", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        # a pytest-xdist worker ignores SIGINT, and a child inherits that: Ctrl-C's own handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert job.returncode == code, job.stderr
    assert job.stderr == f"{said}\n"
    if json_flag:
        assert json.loads(job.stdout) == {"command": None, "error": said, "exit_code": code}
    else:
        assert job.stdout == ""


def test_score_with_a_postgres_history_url_in_the_config_file(
    raw_dir, cli_config, postgres_url, tmp_path, capsys, monkeypatch
):
    """`paths.history_url: postgres://...` (SQLAlchemy's old alias, which both stores open
    through psycopg 3) was refused by config validation: "unknown database URL scheme
    'postgres'", exit 2. The config now accepts what the stores accept: the job scores and
    its rows land on the server."""
    import json

    from partnerscore.features.core import read_frame
    from partnerscore.serving.history import ScoreHistory

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config, _ = cli_config
    data = json.loads(config.read_text())
    data["paths"]["history_url"] = postgres_url.replace("postgresql+psycopg://", "postgres://")
    config.write_text(json.dumps(data))
    out = tmp_path / "scores.csv"
    argv = ["score", "--raw", str(raw_dir), "--as-of", "2026-04-01", "--out", str(out)]
    assert main([*argv, "--config", str(config)]) == 0, capsys.readouterr().err
    history = ScoreHistory(postgres_url)
    stored = history.read()
    history.dispose()
    assert len(stored) == len(read_frame(out)) > 0
    assert not (tmp_path / "data" / "scores" / "history.sqlite").exists()


def test_score_rows_stamp_the_playbook_by_content_not_by_path(raw_dir, cli_config, tmp_path):
    """An edited playbook (same `policy.playbook_path`) stamped the same config_hash on the
    score rows, and a moved copy of the same file another one: the hash took the path."""
    import json
    import shutil

    from partnerscore.features.core import read_frame
    from partnerscore.models.policy import SHIPPED_PLAYBOOK

    config, _ = cli_config
    data = json.loads(config.read_text())

    def stamped(playbook) -> str:
        data["policy"] = {"playbook_path": str(playbook)}
        config.write_text(json.dumps(data))
        out = tmp_path / "scores.csv"
        argv = ["score", "--raw", str(raw_dir), "--as-of", "2026-04-01", "--out", str(out)]
        assert main([*argv, "--no-history", "--config", str(config)]) == 0
        hashes = set(read_frame(out)["config_hash"])
        assert len(hashes) == 1
        return hashes.pop()

    here = tmp_path / "here" / "playbook.yaml"
    here.parent.mkdir()
    shutil.copy(SHIPPED_PLAYBOOK, here)
    first = stamped(here)
    moved = tmp_path / "moved" / "playbook.yaml"
    moved.parent.mkdir()
    shutil.copy(here, moved)
    assert stamped(moved) == first
    with open(here, "a", encoding="utf-8") as handle:
        handle.write("# reviewed by the channel team\n")
    assert stamped(here) != first


_SIGNAL_AS_IT_EXITS = """
import atexit
import os
import signal

atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))
"""
"""A sitecustomize: SIGTERM to itself as the process exits (its atexit functions run)."""


@pytest.mark.parametrize(
    ("argv", "code"), [(["metrics"], 0), (["validate", "EMPTY"], 2)], ids=["done", "error"]
)
@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_signal_after_the_job_said_its_ending_changes_nothing(tmp_path, argv, code, signum):
    """A SIGTERM (a scheduler's timeout) that came once the job had printed its result, while
    the process exited, printed `terminated` and a second JSON object after the result (a
    parser of stdout read "Extra data"), exit 143 for a job that was done; a Ctrl-C then
    printed a KeyboardInterrupt traceback from an exit function. Now the process exits at once
    with the job's own code, one JSON object on stdout, nothing more said."""
    import json
    import os
    import signal

    (tmp_path / "empty").mkdir()
    env = dict(os.environ)
    with_sitecustomize(env, tmp_path / "hook", _SIGNAL_AS_IT_EXITS.replace("SIGTERM", signum))
    script = _CONSOLE_SCRIPT
    argv = [str(tmp_path / "empty") if a == "EMPTY" else a for a in argv]
    job = subprocess.run(
        [sys.executable, "-c", script, "--json", *argv],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert job.returncode == code, job.stderr
    payload = json.loads(job.stdout)  # one object: a second one is "Extra data"
    assert ("error" in payload) == (code != 0), payload
    assert "terminated" not in job.stderr and "Traceback" not in job.stderr, job.stderr


def test_a_sigterm_while_the_console_script_imports_with_stdout_gone(tmp_path):
    """A scheduler that stops a job often closes its end of the job's stdout first. A SIGTERM
    while the console script imported the CLI then raised BrokenPipeError from the handler's
    --json object, through the import machinery: a traceback, exit 1. The object is dropped
    (nobody reads it); `terminated`, 143, as with a reader."""
    import os

    env = dict(os.environ)
    with_sitecustomize(env, tmp_path / "hook", _SIGTERM_AT_TYPER_IMPORT)
    script = _CONSOLE_SCRIPT
    read, write = os.pipe()
    os.close(read)  # the reader is gone
    try:
        job = subprocess.run(
            [sys.executable, "-c", script, "--json", "validate", str(tmp_path)],
            env=env,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert job.returncode == 143, job.stderr
    assert job.stderr == "terminated\n"


@pytest.mark.parametrize(
    ("argv", "code"),
    [(["metrics"], 0), (["--json", "metrics"], 0), (["--json", "validate", "EMPTY"], 2)],
    ids=["text", "json", "json_error"],
)
def test_a_reader_gone_from_stdout_leaves_the_exit_code_alone(tmp_path, argv, code):
    """`partnerscore ... | head -1`, or a scheduler that stopped reading: the write to stdout
    raised BrokenPipeError. A command's result then ended with exit 1 (click's handling: the
    code of a failing outcome), an error's JSON object with a traceback and exit 1. The
    command ends with its own code and its stderr as with a reader."""
    import os

    (tmp_path / "empty").mkdir()
    argv = [str(tmp_path / "empty") if a == "EMPTY" else a for a in argv]
    script = _CONSOLE_SCRIPT
    read, write = os.pipe()
    os.close(read)  # the reader is gone
    try:
        job = subprocess.run(
            [sys.executable, "-c", script, *argv],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
    finally:
        os.close(write)
    assert job.returncode == code, job.stderr
    assert "Traceback" not in job.stderr and "Exception ignored" not in job.stderr, job.stderr
    if code:
        assert job.stderr.startswith("error: ") and job.stderr.count("\n") == 1, job.stderr
    else:
        assert job.stderr == ""


@pytest.mark.parametrize("argv", [["--version"], ["--json", "--version"], ["validate"]])
def test_an_in_process_main_leaves_no_ending_behind(argv, capsys):
    """`main()` records the ending it said, so that a signal while the console script exits
    changes nothing. Run in a caller's own process (a test, a notebook), that record outlived
    it: a later job's SIGTERM was ignored as "after the result" (a fresh clone's suite failed
    `test_score`'s signal-after-the-commit test in the xdist worker that had run an
    in-process `main()` before it). Now the record ends with the call."""
    import signal

    from partnerscore.serving.cli import _signals_as_interrupt
    from partnerscore.serving.console import ENDING

    main(argv)
    capsys.readouterr()
    assert ENDING["code"] is None
    with _signals_as_interrupt(), pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGTERM)
