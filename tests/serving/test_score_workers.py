"""``score --workers N``: anomaly checks and ledger writes in forked worker processes.

The twin is the one-process job (``workers=1``: helper threads, the code as it was): every
worker count gives the same scores and rejects files byte for byte and the same history and
ledger rows, over a sequence of runs that reads its own history, and failures leave the same
state. ``MIN_WORKER_PARTNERS`` is lowered so the small test program uses the workers.
"""

import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from support import die_by_sigkill, no_hang, sibling, stored_rows

from partnerscore.features import parallel
from partnerscore.features.core import PartnerscoreError
from partnerscore.serving import score as score_job
from partnerscore.serving.cli import main
from partnerscore.serving.history import EarlierRows, ScoreHistory
from partnerscore.serving.ledger import DecisionLedger
from partnerscore.serving.score import rejects_path, run_score

RUNS = (
    ("2026-01-15", "scores-a.parquet"),
    ("2026-03-01", "scores-b.parquet"),  # reads the first run's history
    ("2026-03-01", "scores-c.csv"),  # replaces the second run's rows
)


def _run_sequence(raw_dir, config, workers: int, sqlite: bool = True, **kwargs) -> dict:
    """The three runs on a fresh history (the data folder is in the config hash: one folder);
    ``sqlite``: the history is the data folder's SQLite file (its rows are returned)."""
    folder = Path(config.paths.data_dir)
    shutil.rmtree(folder, ignore_errors=True)
    outputs: dict[str, bytes] = {}
    for as_of, name in RUNS:
        out = folder / "out" / name
        run_score(
            raw_dir,
            pd.Timestamp(as_of).date(),
            "champion",
            out,
            config,
            workers=workers,
            **kwargs,
        )
        outputs[name] = out.read_bytes()
        outputs[name + ".rejects"] = rejects_path(out).read_bytes()
    if not sqlite:
        return {"files": outputs}
    return {"files": outputs, "rows": stored_rows(folder / "scores" / "history.sqlite")}


@pytest.fixture()
def forced(monkeypatch):
    """Worker processes even for the small test program (and its small history store)."""
    monkeypatch.setattr(score_job, "MIN_WORKER_PARTNERS", 0)
    monkeypatch.setattr(score_job, "READER_MIN_BYTES", 0)


@pytest.fixture()
def reader_results(monkeypatch) -> list:
    """What each job's earlier-rows reader handed back (None: the job read the rows itself)."""
    seen: list = []
    real = score_job._EarlierReader.result

    def result(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        seen.append(out)
        return out

    monkeypatch.setattr(score_job._EarlierReader, "result", result)
    return seen


@pytest.fixture(scope="module")
def sequences(tmp_path_factory) -> tuple[Path, dict]:
    """One data folder for the module's sequences and their outcomes by worker count.

    The data folder is in the config hash that every score row carries, so sequences of two
    tests compare equal only in one folder (:func:`_run_sequence` empties it first). Each
    outcome (with what the earlier-rows reader handed back meanwhile) is run once for the
    module: the twin and the reader's test below read the same sequences.
    """
    return tmp_path_factory.mktemp("sequences") / "data", {}


@pytest.fixture()
def sequence_config(store_config, sequences):
    """``store_config`` with the module's one data folder (:func:`sequences`)."""
    paths = store_config.paths.model_copy(update={"data_dir": str(sequences[0])})
    return store_config.model_copy(update={"paths": paths})


def _sequence(sequences, raw_dir, config, workers: int, reader_results: list) -> tuple:
    """:func:`_run_sequence` with ``workers``, run once for the module, and what the reader
    handed back during it (``reader_results``' entries)."""
    done = sequences[1]
    if workers not in done:
        start = len(reader_results)
        outcome = _run_sequence(raw_dir, config, workers=workers)
        done[workers] = outcome, reader_results[start:]
    return done[workers]


def test_any_worker_count_writes_the_same_files_history_and_ledger(
    raw_dir, sequence_config, sequences, forced, reader_results
):
    one, _ = _sequence(sequences, raw_dir, sequence_config, 1, reader_results)
    assert len(one["rows"]["score_history_v2"]) > 0 and len(one["rows"]["score_decisions"]) > 0
    for workers in (2, 3):
        many, _ = _sequence(sequences, raw_dir, sequence_config, workers, reader_results)
        assert many["files"].keys() == one["files"].keys()
        for name, data in one["files"].items():
            assert many["files"][name] == data, f"{name} differs with {workers} workers"
        assert many["rows"] == one["rows"]


def test_the_earlier_rows_read_by_the_reader_are_the_ones_used(
    raw_dir, sequence_config, sequences, forced, reader_results
):
    """The sequence's later runs get their earlier rows from the reader forked at the start.

    The twin (the same files and rows as one process) is the test above; this one makes sure
    that the reader's rows, not a fallback read, are what the twin compared (its sequence with
    two workers, :func:`_sequence`).
    """
    _, reader_results = _sequence(sequences, raw_dir, sequence_config, 2, reader_results)
    # the first run has no store yet (no reader); the two later ones read the first's rows
    assert len(reader_results) == 2
    assert all(
        rows is not None and len(rows[0]) > 0 and len(rows[1]) > 0 for rows in reader_results
    )


def test_milestone_scoring_in_workers_matches_one_process(
    raw_dir, store_config, tmp_path, forced, reader_results
):
    files = {}
    for workers in (1, 2):
        shutil.rmtree(store_config.paths.data_dir, ignore_errors=True)
        for age in (60, 90):  # the second reads the first's history: per-partner cut-offs
            out = tmp_path / f"w{workers}-{age}" / "scores.parquet"
            out.parent.mkdir()
            result = run_score(
                raw_dir, None, "champion", out, store_config, at_age=age, workers=workers
            )
            files[workers, age] = (out.read_bytes(), rejects_path(out).read_bytes(), result.not_yet)
        files[workers, "rows"] = stored_rows(
            Path(store_config.paths.data_dir) / "scores" / "history.sqlite"
        )
    for key in [(60,), (90,), ("rows",)]:
        assert files[(2, *key)] == files[(1, *key)], key
    assert len(reader_results) == 1 and reader_results[0] is not None
    assert len(reader_results[0][0]) > 0


def _one_batch(raw_dir, config, as_of="2026-01-15"):
    shutil.rmtree(config.paths.data_dir, ignore_errors=True)
    out = Path(config.paths.data_dir) / "first" / "scores.parquet"
    run_score(raw_dir, pd.Timestamp(as_of).date(), "champion", out, config, workers=1)
    return pd.read_parquet(out)


def test_the_reader_hands_back_rows_only_for_the_batch_it_was_asked_about(
    raw_dir, store_config, tmp_path, forced
):
    """Twin: ``earlier_rows`` in this process. Rows read for other partners or cut-offs than
    the batch as built are not used (None: the job reads them itself)."""
    first = _one_batch(raw_dir, store_config)
    url = store_config.paths.history_database()
    ids = sorted(first["partner_id"].astype(str))
    cut = pd.Timestamp("2026-03-01")
    direct = score_job.earlier_rows(url, ids, cut)
    assert len(direct[0]) == len(ids) and len(direct[1]) == len(ids)
    per_partner = pd.Series(pd.Timestamp("2026-02-01"), index=ids)
    per_partner.iloc[::2] = pd.Timestamp("2026-01-10")  # before the first batch: no rows
    cases = [
        # (asked ids, asked cut-off, batch ids, batch cut-off, expected)
        (ids, cut, ids, cut, direct),
        (ids, cut, ids[: len(ids) // 2], cut, score_job.earlier_rows(url, ids, cut)),
        (ids[1:], cut, ids, cut, None),  # a partner of the batch was not asked about
        (ids, cut, ids, pd.Timestamp("2026-03-02"), None),  # another cut-off
        (ids, per_partner, ids, cut, None),  # per-partner rows for one cut-off
        (ids, per_partner, ids, per_partner, score_job.earlier_rows(url, ids, per_partner)),
        (ids, per_partner, ids, per_partner + pd.Timedelta(days=1), None),
    ]
    for asked_ids, asked_cut, batch_ids, batch_cut, expected in cases:
        reader = score_job._EarlierReader(url)
        try:
            reader.ask(asked_ids, asked_cut)
            got = reader.result(batch_ids, batch_cut)
        finally:
            reader.close()
        assert got == expected
    assert len(cases[5][4][0]) == len(ids) // 2  # the per-partner cut-offs took effect
    # with the cut-off known at the start the store's last dates are read before the request
    # (score --as-of); a request for other cut-offs is read as asked
    for asked in (cut, per_partner):
        reader = score_job._EarlierReader(url, cut, (2, 1))
        try:
            reader.ask(ids, asked)
            got = reader.result(ids, asked)
        finally:
            reader.close()
        assert got == score_job.earlier_rows(url, ids, asked, (2, 1))


def test_asking_does_not_wait_for_the_readers_read_of_the_store(
    raw_dir, store_config, tmp_path, monkeypatch
):
    """A batch's request is many pipe buffers long; the worker takes it while it still reads
    the store's last dates, so ``ask`` returns at once (the job builds its features meanwhile).

    The worker's read is held until a file appears; before the fix ``ask`` waited for it."""
    import threading
    import time

    _one_batch(raw_dir, store_config)
    url = store_config.paths.history_database()
    release = tmp_path / "release"
    real = EarlierRows.read

    def held(self, *args, **kwargs):  # in the forked reader
        while not release.exists():
            time.sleep(0.01)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(EarlierRows, "read", held)
    cut = pd.Timestamp("2026-03-01")
    ids = [f"P{i:07d}" for i in range(200_000)]  # ~2 MB pickled: 30+ pipe buffers
    reader = score_job._EarlierReader(url, cut, (2, 1))
    try:
        asking = threading.Thread(target=reader.ask, args=(ids, cut), daemon=True)
        asking.start()
        asking.join(timeout=30)
        returned = not asking.is_alive()
        release.touch()  # either way, let the worker finish
        asking.join(timeout=60)
        assert returned, "ask() waited for the reader's read of the store"
        with no_hang(120):
            rows = reader.result(ids, cut)
    finally:
        release.touch()
        reader.close()
    assert rows is not None
    assert rows == score_job.earlier_rows(url, ids, cut, (2, 1))


def test_a_small_store_or_none_is_read_by_the_job_itself(raw_dir, store_config, monkeypatch):
    url = store_config.paths.history_database()
    shutil.rmtree(store_config.paths.data_dir, ignore_errors=True)
    assert score_job._EarlierReader.start(url) is None  # no store yet
    _one_batch(raw_dir, store_config)
    assert score_job._EarlierReader.start(url) is None  # below READER_MIN_BYTES
    monkeypatch.setattr(score_job, "READER_MIN_BYTES", 0)
    reader = score_job._EarlierReader.start(url)
    assert reader is not None
    monkeypatch.setattr(score_job, "MIN_WORKER_PARTNERS", 2)
    reader.ask(["p"], pd.Timestamp("2026-03-01"))  # fewer than MIN_WORKER_PARTNERS: unasked
    assert reader.result(["p"], pd.Timestamp("2026-03-01")) is None
    reader.close()


@pytest.mark.parametrize(
    ("target", "name"),
    [
        (score_job, "_read_when_asked"),  # at once, before the request
        (EarlierRows, "of"),  # after the request, reading the batch's older rows
        (EarlierRows, "read"),  # reading the store's last dates before the request
    ],
)
def test_a_killed_reader_stops_the_job_with_a_one_line_error_and_publishes_nothing(
    raw_dir, store_config, tmp_path, forced, monkeypatch, target, name
):
    _one_batch(raw_dir, store_config)
    before = stored_rows(Path(store_config.paths.data_dir) / "scores" / "history.sqlite")
    monkeypatch.setattr(target, name, die_by_sigkill)  # in the forked reader
    out = tmp_path / "out" / "scores.parquet"
    out.parent.mkdir()
    with no_hang(120), pytest.raises(parallel.WorkerDied, match="killed by signal 9"):
        run_score(raw_dir, pd.Timestamp("2026-03-01").date(), "champion", out, store_config)
    assert not out.exists() and not rejects_path(out).exists()
    assert stored_rows(Path(store_config.paths.data_dir) / "scores" / "history.sqlite") == before


def test_a_failing_reader_raises_its_error_and_publishes_nothing(
    raw_dir, store_config, tmp_path, forced, monkeypatch
):
    _one_batch(raw_dir, store_config)
    monkeypatch.setattr(EarlierRows, "read", _fail("score history: locked"))
    out = tmp_path / "out" / "scores.parquet"
    out.parent.mkdir()
    with pytest.raises(PartnerscoreError, match="score history: locked"):
        run_score(raw_dir, pd.Timestamp("2026-03-01").date(), "champion", out, store_config)
    assert not out.exists() and not rejects_path(out).exists()


def test_the_job_runs_with_the_collector_paused_and_leaves_it_on(
    raw_dir, store_config, tmp_path, monkeypatch
):
    """The score job pauses Python's cyclic collector (``collector_paused``) and restores it,
    also when it fails; its files are those of the twin above (any worker count)."""
    import gc

    from partnerscore.models import scoring

    seen = []
    real = scoring.score_features

    def recording(*args, **kwargs):
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "score_features", recording)
    out = tmp_path / "out" / "scores.parquet"
    run_score(raw_dir, pd.Timestamp("2026-03-01").date(), "champion", out, store_config)
    assert seen == [False] and gc.isenabled()
    with pytest.raises(PartnerscoreError, match="either --as-of DATE or --at-age"):
        run_score(raw_dir, None, "champion", out, store_config)
    assert gc.isenabled()


def test_without_fork_the_job_runs_in_one_process(
    raw_dir, store_config, tmp_path, forced, monkeypatch
):
    one = _run_sequence(raw_dir, store_config, workers=1)
    monkeypatch.setattr(score_job, "can_fork", lambda: False)
    monkeypatch.setattr(parallel, "can_fork", lambda: False)

    def no_pool(*args, **kwargs):
        raise AssertionError("a pool was started without fork")

    monkeypatch.setattr(parallel.multiprocessing, "get_context", no_pool)
    assert _run_sequence(raw_dir, store_config, workers=2) == one


def test_small_batches_stay_in_one_process(raw_dir, store_config, tmp_path, monkeypatch):
    def no_pool(*args, **kwargs):
        raise AssertionError("a pool was started for a small batch")

    monkeypatch.setattr(parallel.multiprocessing, "get_context", no_pool)
    result = run_score(
        raw_dir, pd.Timestamp("2026-03-01").date(), "champion", tmp_path / "s.parquet",
        store_config, workers=2,
    )  # fmt: skip
    assert result.scored > 0


def test_workers_option_is_checked(raw_dir, store_config, tmp_path):
    with pytest.raises(PartnerscoreError, match="--workers 0: must be at least 1"):
        run_score(
            raw_dir, pd.Timestamp("2026-03-01").date(), "champion", tmp_path / "s.parquet",
            store_config, workers=0,
        )  # fmt: skip


def test_cli_workers_option(raw_dir, cli_config, tmp_path, monkeypatch, forced, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config, _ = cli_config
    outs = []
    for workers in ("1", "2"):
        out = tmp_path / f"scores{workers}.parquet"
        code = main(
            ["score", "--raw", str(raw_dir), "--as-of", "2026-03-01", "--out", str(out)]
            + ["--workers", workers, "--no-history", "-c", str(config)]
        )
        assert code == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    capsys.readouterr()
    code = main(["score", "--raw", str(raw_dir), "--as-of", "2026-03-01", "--workers", "0"])
    assert code != 0
    assert "--workers 0: must be at least 1" in capsys.readouterr().err


def test_cli_memory_tuning_changes_no_output(raw_dir, cli_config, tmp_path, monkeypatch, forced):
    """The CLI's batch memory settings (``tune_batch_memory``) are placement only.

    Twin: the job in this process without them; the tuned CLI runs in a fresh process (the
    settings are process-wide), on the same config, history included, with workers and without.
    """
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(parallel, "tune_batch_memory", lambda: {})
    config, env = cli_config
    database = tmp_path / "data" / "scores" / "history.sqlite"
    script = (
        "import sys; from partnerscore.features import parallel; "
        "from partnerscore.serving import score as job, cli; job.MIN_WORKER_PARTNERS = 0; "
        "real = parallel.tune_batch_memory; "
        "parallel.tune_batch_memory = lambda: print('tuned', real()); "
        "sys.exit(cli.main(sys.argv[1:]))"
    )
    for workers in ("1", "2"):
        outputs = []
        for tuned in (False, True):
            database.unlink(missing_ok=True)
            out = tmp_path / f"{tuned}-{workers}" / "scores.parquet"
            argv = ["score", "--raw", str(raw_dir), "--as-of", "2026-03-01", "--out", str(out)]
            argv += ["--workers", workers, "-c", str(config)]
            if tuned:
                done = subprocess.run(
                    [sys.executable, "-c", script, *argv], capture_output=True, text=True, env=env
                )
                assert done.returncode == 0, done.stderr
                assert "tuned {'numpy_hugepage_off': True" in done.stdout
            else:
                assert main(argv) == 0
            outputs.append(
                (out.read_bytes(), rejects_path(out).read_bytes(), stored_rows(database))
            )
        assert outputs[1] == outputs[0]


def test_tune_batch_memory_takes_effect():
    code = (
        "from numpy._core.multiarray import _set_madvise_hugepage as advise; "
        "from partnerscore.features.parallel import tune_batch_memory, _glibc; "
        "done = tune_batch_memory(); "
        "assert done['numpy_hugepage_off'] and advise(False) is False, done; "
        "assert done['glibc_malloc'] == _glibc(), done; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


@pytest.mark.skipif(not parallel._glibc(), reason="glibc's malloc settings")
def test_tune_batch_memory_serves_large_blocks_from_the_heap():
    """After ``tune_batch_memory`` a 256 MB block comes from glibc's heap (``[heap]`` in the
    process's maps), where it is reused after a free, in the main thread and in a helper
    thread started later (the feature builders' threads); untuned, glibc maps it afresh."""
    code = textwrap.dedent(
        """
        import ctypes, sys, threading
        from partnerscore.features.parallel import tune_batch_memory
        if sys.argv[1] == "tuned":
            tune_batch_memory()
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p

        def where(block):
            maps = [line for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
            lo, hi = (int(x, 16) for x in maps[0].split()[0].split("-"))
            return "heap" if lo <= block < hi else "mapped"

        seen = [where(libc.malloc(256 << 20))]
        helper = threading.Thread(target=lambda: seen.append(where(libc.malloc(256 << 20))))
        helper.start()
        helper.join()
        print(*seen)
        """
    )
    seen = {}
    for mode in ("tuned", "default"):
        done = subprocess.run(
            [sys.executable, "-c", code, mode], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        seen[mode] = done.stdout.strip()
    assert seen == {"tuned": "heap heap", "default": "mapped mapped"}


# -- the pieces --------------------------------------------------------------------------------


def test_start_tasks_returns_results_in_task_order_and_raises_a_task_error():
    tasks = [lambda i=i: i * i for i in range(7)]
    for workers in (1, 2, 3):
        assert parallel.start_tasks(tasks, workers)() == [i * i for i in range(7)]

    def fails():
        raise PartnerscoreError("task failed")

    for workers in (1, 2):
        waiting = parallel.start_tasks([lambda: 1, fails], workers)
        with pytest.raises(PartnerscoreError, match="task failed"):
            waiting()


def test_start_tasks_with_one_worker_runs_nothing_until_asked():
    ran = []
    waiting = parallel.start_tasks([lambda: ran.append(1)], 1)
    assert ran == []
    waiting()
    assert ran == [1]


# -- failures: the ledger writer process changes nothing the one-process job would not -------


def _fail(message):
    def fails(*args, **kwargs):
        raise PartnerscoreError(message)

    return fails


def _state(config, out: Path) -> dict:
    database = Path(config.paths.data_dir) / "scores" / "history.sqlite"
    rows = stored_rows(database) if database.exists() else {}
    return {
        "published": out.exists() or rejects_path(out).exists(),
        "history": len(rows.get("score_history_v2", [])),
        "ledger": len(rows.get("score_decisions", [])),
        "staged": sorted(p.name for p in out.parent.iterdir() if p.name != "quarantine"),
    }


@pytest.mark.parametrize(
    ("target", "name", "expected"),
    [
        # the ledger rows cannot be converted: nothing is written or published
        (DecisionLedger, "prepare_decisions", {"published": False, "history": 0, "ledger": 0}),
        # the history write fails: the ledger is not written either
        (ScoreHistory, "upsert", {"published": False, "history": 0, "ledger": 0}),
        # the ledger write fails after the history's: no files published (as before)
        (DecisionLedger, "record_decisions", {"published": False, "ledger": 0}),
    ],
)
def test_a_failed_store_write_leaves_the_same_state_with_workers(
    raw_dir, store_config, tmp_path, forced, monkeypatch, target, name, expected
):
    monkeypatch.setattr(target, name, _fail(f"{name} failed"))
    if name == "record_decisions":  # the worker writes the rows it staged
        monkeypatch.setattr(DecisionLedger, "record_staged", _fail(f"{name} failed"))
    states = {}
    for workers in (1, 2):
        shutil.rmtree(store_config.paths.data_dir, ignore_errors=True)
        out = tmp_path / f"w{workers}" / "scores.parquet"
        out.parent.mkdir()
        with pytest.raises(PartnerscoreError, match=f"{name} failed"):
            run_score(
                raw_dir, pd.Timestamp("2026-03-01").date(), "champion", out, store_config,
                workers=workers,
            )  # fmt: skip
        states[workers] = _state(store_config, out)
        assert states[workers]["staged"] == []  # no staged file left behind
        for key, value in expected.items():
            assert states[workers][key] == value, (workers, key)
    assert states[1] == states[2]


@pytest.mark.parametrize(
    ("target", "name"),
    [
        (score_job, "raw_anomalies"),  # the anomaly checks' worker
        (DecisionLedger, "prepare_decisions"),  # the ledger writer, converting
        (DecisionLedger, "record_staged"),  # the ledger writer, writing
    ],
)
def test_a_killed_worker_stops_the_job_with_a_one_line_error_and_publishes_nothing(
    raw_dir, store_config, tmp_path, forced, monkeypatch, target, name
):
    """A worker the kernel kills (out of memory) must not leave the job waiting forever."""
    monkeypatch.setattr(target, name, die_by_sigkill)
    out = tmp_path / "out" / "scores.parquet"
    out.parent.mkdir()
    with no_hang(120), pytest.raises(parallel.WorkerDied, match="killed by signal 9"):
        run_score(raw_dir, pd.Timestamp("2026-03-01").date(), "champion", out, store_config)
    state = _state(store_config, out)
    assert not state["published"] and state["staged"] == [] and state["ledger"] == 0


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_a_killed_worker_exits_71_naming_the_signal(
    raw_dir, cli_config, tmp_path, forced, monkeypatch, capsys, json_flag
):
    """A worker killed by the kernel (out of memory) or an operator exited 1, the code of a
    failing verdict (`monitor`'s alarms, a refused `promote`): a scheduler could not tell the
    job failed. It is now 71 (sysexits.h's EX_OSERR) and the line names the signal."""
    import json

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(score_job, "raw_anomalies", die_by_sigkill)  # the anomaly worker
    config, _ = cli_config
    out = tmp_path / "out" / "scores.parquet"
    argv = ["score", "--raw", str(raw_dir), "--as-of", "2026-03-01", "--out", str(out)]
    with no_hang(120):
        code = main([*json_flag, *argv, "--workers", "2", "-c", str(config)])
    captured = capsys.readouterr()
    said = (
        "a worker process stopped before finishing its task (killed by signal 9, SIGKILL; "
        "out of memory?); rerun with --workers 1 or with more memory"
    )
    assert code == 71
    assert captured.err == f"error: {said}\n"
    if json_flag:
        assert json.loads(captured.out) == {"command": "score", "error": said, "exit_code": 71}
    assert not out.exists() and not rejects_path(out).exists()


def test_a_failed_ledger_staging_in_the_worker_writes_and_publishes_nothing(
    raw_dir, store_config, tmp_path, forced, monkeypatch
):
    """The worker stages the ledger rows before it reports them ready: as a failed conversion."""
    monkeypatch.setattr(DecisionLedger, "stage_decisions", _fail("staging failed"))
    out = tmp_path / "w2" / "scores.parquet"
    out.parent.mkdir()
    with pytest.raises(PartnerscoreError, match="staging failed"):
        run_score(
            raw_dir, pd.Timestamp("2026-03-01").date(), "champion", out, store_config, workers=2
        )
    state = _state(store_config, out)
    assert state == {"published": False, "history": 0, "ledger": 0, "staged": []}


def test_a_failed_file_write_leaves_an_existing_history_as_it_was(
    raw_dir, store_config, tmp_path, forced, monkeypatch
):
    """The history rows are written while the files are staged: a failed write rolls back."""
    database = Path(store_config.paths.data_dir) / "scores" / "history.sqlite"
    for workers in (1, 2):
        shutil.rmtree(store_config.paths.data_dir, ignore_errors=True)
        out = tmp_path / f"w{workers}" / "scores.parquet"
        out.parent.mkdir()
        first = pd.Timestamp("2026-01-15").date()
        run_score(raw_dir, first, "champion", out, store_config, workers=workers)
        before, written = stored_rows(database), out.read_bytes()
        with monkeypatch.context() as patch:
            patch.setattr(pd.DataFrame, "to_parquet", _fail("disk full"))
            with pytest.raises(PartnerscoreError, match="disk full"):
                run_score(
                    raw_dir, pd.Timestamp("2026-03-01").date(), "champion", out, store_config,
                    workers=workers,
                )  # fmt: skip
        assert stored_rows(database) == before
        assert out.read_bytes() == written
        assert sorted(p.name for p in out.parent.iterdir() if p.name != "quarantine") == [
            "scores.manifest.json",
            "scores.parquet",
            "scores.rejects.csv",
        ]


def test_console_script_ends_after_the_score_job_with_exit_functions_run(
    raw_dir, cli_config, tmp_path
):
    """The console script skips the interpreter teardown after ``score`` (``_exit_now``): the
    summary is printed, atexit functions and finalizers still run, the exit code is kept, and
    the files are those of ``main`` run in-process; errors end as before."""
    config, env = cli_config
    script = (
        "import atexit, sys, tempfile, weakref; from partnerscore.serving import cli; "
        "atexit.register(lambda: print('atexit ran', flush=True)); "
        "folder = tempfile.TemporaryDirectory(); print('tmp', folder.name, flush=True); "
        "sys.argv[0] = 'partnerscore'; sys.exit(cli.main())"
    )
    out, twin = tmp_path / "cli" / "scores.parquet", tmp_path / "main" / "scores.parquet"
    common = ["score", "--raw", str(raw_dir), "--as-of", "2026-03-01", "-c", str(config)]
    argv = [*common, "--no-history", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "scored " in done.stdout and done.stdout.rstrip().endswith("atexit ran")
    leftover = done.stdout.split("tmp ", 1)[1].split()[0]
    assert not Path(leftover).exists()  # the TemporaryDirectory finalizer ran
    assert main([*common, "--no-history", "--out", str(twin)]) == 0
    assert out.read_bytes() == twin.read_bytes()
    assert rejects_path(out).read_bytes() == rejects_path(twin).read_bytes()
    bad = subprocess.run(
        [sys.executable, "-c", script, *argv, "--workers", "0"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "--workers 0: must be at least 1" in bad.stderr


# -- a first batch: the history is written into a new store while the files are staged ------


def _schema(database: Path) -> list[tuple]:
    with sqlite3.connect(database) as conn:
        return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_first_batch_writes_the_same_store_as_the_upsert_after_staging(
    raw_dir, store_config, tmp_path, forced, monkeypatch, workers
):
    """Twin: the old order (stage the files, then create the store and upsert): the same
    files, tables and rows (ids included), and the next batch (reading that history) too."""
    database = Path(store_config.paths.data_dir) / "scores" / "history.sqlite"
    new_store = score_job._new_sqlite_store
    results = []
    for new_path in (False, True):
        # the old order: no new-store path (monkeypatch.undo() would also undo the fixtures')
        old_order = None if new_path else (lambda history: False)
        monkeypatch.setattr(score_job, "_new_sqlite_store", old_order or new_store)
        shutil.rmtree(store_config.paths.data_dir, ignore_errors=True)
        files = []
        for as_of in ("2026-01-15", "2026-03-01"):
            out = tmp_path / f"{new_path}-{workers}" / f"{as_of}.parquet"
            run_score(
                raw_dir, pd.Timestamp(as_of).date(), "champion", out, store_config,
                workers=workers,
            )  # fmt: skip
            files.append((out.read_bytes(), rejects_path(out).read_bytes()))
            if as_of == "2026-01-15":
                first = (stored_rows(database), _schema(database))
        leftovers = sorted(p.name for p in database.parent.iterdir() if p.name != database.name)
        results.append((files, first, stored_rows(database), _schema(database), leftovers))
    assert results[1] == results[0]
    assert results[1][-1] == []  # no scratch file left


def test_a_store_that_appears_during_the_first_batch_gets_the_batch(tmp_path):
    """``os.link`` never replaces a store another job created meanwhile: the batch is upserted
    into it; a failed staging leaves neither a store nor a scratch file nor the folder."""
    folder = tmp_path / "data" / "scores"
    url = f"sqlite:///{folder / 'history.sqlite'}"
    frame = pd.DataFrame(
        {
            "partner_id": ["P1", "P2"],
            "as_of": pd.Timestamp("2026-03-01"),
            "model_version": "1",
            "score": [10.0, 20.0],
        }
    )
    other = frame.assign(partner_id=["Q1", "Q2"], score=[1.0, 2.0])
    history = ScoreHistory(url)
    assert score_job._new_sqlite_store(history)

    def another_job_writes():
        ScoreHistory(url).upsert(other)

    score_job._upsert_new_store(history, history.prepare(frame), another_job_writes)
    stored = ScoreHistory(url).read()
    assert sorted(stored["partner_id"]) == ["P1", "P2", "Q1", "Q2"]
    assert sorted(p.name for p in folder.iterdir()) == ["history.sqlite"]

    shutil.rmtree(tmp_path / "data")
    history = ScoreHistory(url)
    with pytest.raises(PartnerscoreError, match="staging failed"):
        score_job._upsert_new_store(history, history.prepare(frame), _fail("staging failed"))
    assert not (tmp_path / "data").exists()


def test_the_reader_on_a_postgresql_history_gives_the_files_of_one_process(
    raw_dir, store_config, postgres_url, forced, reader_results
):
    """The forked reader connects to a PostgreSQL history of its own (``paths.history_url``):
    the sequence's files and rows equal the one-process job's on the same server."""
    import sqlalchemy as sa

    paths = store_config.paths.model_copy(update={"history_url": postgres_url})
    config = store_config.model_copy(update={"paths": paths})
    engine = sa.create_engine(postgres_url)
    outputs = {}
    for workers in (1, 2):
        with engine.begin() as conn:  # a fresh store (ids from 1) for each worker count
            for table in sa.inspect(conn).get_table_names():
                conn.exec_driver_sql(f"TRUNCATE {table} RESTART IDENTITY")
        files = _run_sequence(raw_dir, config, workers=workers, sqlite=False)["files"]
        with engine.connect() as conn:
            rows = {
                table: conn.exec_driver_sql(
                    f"SELECT partner_id, as_of, score FROM {table} ORDER BY id"
                ).all()
                for table in ("score_history_v2", "score_decisions")
            }
        outputs[workers] = (files, rows)
    engine.dispose()
    assert outputs[2] == outputs[1]
    assert len(outputs[1][1]["score_decisions"]) > 0
    # one process reads in itself; with two, a server store always gets a reader: nothing
    # earlier for the first run, the first run's rows for the later two
    assert [bool(r[0]) if r is not None else None for r in reader_results] == [False, True, True]


cases = sibling(__file__, "program_cases")


@cases.ENGINE_SETTINGS
@given(case=cases.small_programs(400))
@cases.with_fixed(3)
def test_any_worker_count_scores_a_random_small_program_as_one_process(
    case, raw_dir, store_config, forced
):
    """Random small programs (any slice of the shared one, a hostile partner: a far-future
    date, absurd amounts, broken cells; a partner with no events; a date or an onboarding
    age): two workers write the files and history rows of one process, byte for byte."""
    root = Path(tempfile.mkdtemp(prefix="workers-"))
    try:
        raw = root / "raw"
        cases.write_program(raw_dir, raw, case)
        as_of, at_age = cases.as_of_of(case)
        folder = Path(store_config.paths.data_dir)
        out = folder / "out" / "scores.parquet"

        def job(workers):
            def run():
                shutil.rmtree(folder, ignore_errors=True)
                run_score(raw, as_of, "champion", out, store_config, workers=workers, at_age=at_age)
                history = folder / "scores" / "history.sqlite"
                rows = stored_rows(history) if history.exists() else None
                return out.read_bytes(), rejects_path(out).read_bytes(), rows

            return run

        one, two = cases.outcome(job(1)), cases.outcome(job(2))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert two == one
