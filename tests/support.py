"""Helpers shared by test modules (``tests/`` is on ``sys.path``: see pyproject's pytest options).

Test modules are imported without packages (``--import-mode=importlib``), so a slow reference
twin beside a test is loaded from its file, and the malformed-input corpus is materialised
from one place.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sqlite3
import sys
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

CORPUS = Path(__file__).parent / "features" / "malformed"
"""The malformed-input corpus: ``_base`` tables plus one folder per case (``case.json``)."""
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir() and not p.name.startswith("_"))


def sibling(test_file: str, name: str) -> ModuleType:
    """The module ``name``.py in the same folder as ``test_file`` (pass ``__file__``)."""
    spec = importlib.util.spec_from_file_location(name, Path(test_file).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def spec_of(case: str) -> dict:
    """A corpus case's ``case.json``: expected exit code, messages, dropped tables."""
    return json.loads((CORPUS / case / "case.json").read_text(encoding="utf-8"))


def materialise(case: str, dest: Path) -> dict:
    """Copy ``_base`` then the case's files (same name overrides) into ``dest``.

    Base tables named in the case's ``drop`` list are left out. Returns the case's spec.
    """
    spec = spec_of(case)
    dest.mkdir(parents=True)
    for path in (CORPUS / "_base").iterdir():
        if path.stem not in spec.get("drop", []):
            shutil.copy(path, dest / path.name)
    for path in (CORPUS / case).rglob("*"):
        if path.is_file() and path.name != "case.json":
            target = dest / path.relative_to(CORPUS / case)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    return spec


def die_by_sigkill(*_args, **_kwargs) -> None:
    """A task that kills its own process, as the kernel's out-of-memory killer would."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def no_hang(seconds: int):
    """Fail (TimeoutError) instead of waiting forever: SIGALRM interrupts a blocked wait."""
    import signal

    def _expired(signum, frame):
        raise TimeoutError(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def stored_rows(database: Path) -> dict[str, list[tuple]]:
    """Every table's rows (ids included, write timestamps left out), in insertion order."""
    with sqlite3.connect(database) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        out = {}
        for table in tables:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            keep = [c for c in cols if c not in ("written_at", "recorded_at", "created_at")]
            out[table] = conn.execute(
                f"SELECT {', '.join(keep)} FROM {table} ORDER BY rowid"
            ).fetchall()
    return out


def reset_mlflow_uris(variables: dict[str, str | None]) -> None:
    """The MLflow URI variables as the session began, and no registry URI of an earlier test.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into ``os.environ``, so a
    test whose code calls it would otherwise point every later test at its (deleted) store.
    ``mlflow.set_registry_uri`` (the score, train and monitor jobs call it) also keeps its URI
    in a process global that outlives the variable: a later test that sets only the tracking
    URI would read that store's registry ("Registered Model ... not found", seen when
    pytest-xdist ran a test of an empty store just before one that sets the tracking URI
    only). Cleared here, the registry follows the tracking URI again.
    """
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_registry_uri(None)
    for key, value in variables.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def with_late_rows(source: Path, dest: Path) -> tuple[str, str]:
    """A copy of the raw folder ``source`` with a late tail: rows of two partners months after
    every other partner's data ends (2026-06-30 in the shared program).

    One portal login (2026-11-20) of the 4th partner and one deal of the 8th, created
    2026-10-01 and closed 2026-10-15 (two dates of one row beyond the supported date).

    Returns:
        The two partners' ids.
    """
    shutil.copytree(source, dest)
    with open(dest / "partners.csv", encoding="utf-8") as handle:
        ids = [line.split(",", 1)[0] for line in handle.read().splitlines()[1:]]
    with open(dest / "portal_events.csv", "a", encoding="utf-8") as handle:
        handle.write(f"{ids[3]},2026-11-20 10:00:00,login\n")
    with open(dest / "deals.csv", "a", encoding="utf-8") as handle:
        handle.write(f"D-LATE,{ids[7]},2026-10-01 09:00:00,2026-10-15 17:00:00,5000,won\n")
    return ids[3], ids[7]


def newest_partners(source: Path, dest: Path, n: int) -> None:
    """A small program: the ``n`` last partners of the raw folder ``source`` (CSV files; the
    newest signed in the shared program), with their rows in every table."""
    import pandas as pd

    dest.mkdir(parents=True)
    keep = pd.read_csv(source / "partners.csv", dtype=str)["partner_id"].tail(n)
    for path in source.glob("*.csv"):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame[frame["partner_id"].isin(keep)].to_csv(dest / path.name, index=False)


LARGEST = "1.7976931348623157e308"
"""A valid deal amount: the largest float. Two of one partner add up to ``inf``."""


def with_two_largest_won_deals(source: Path, dest: Path, signed_before: str | None = None) -> str:
    """A copy of the raw folder ``source`` where one partner won two deals of :data:`LARGEST`.

    Each amount is valid raw data, but the partner's won amount (and its label) add up to
    ``inf``. The partner is the first one signed 120 days before ``signed_before`` (else the
    first partner); its deals are created 40 and 41 days after signing, won 10 days later.

    Returns:
        The partner's id.
    """
    import pandas as pd

    shutil.copytree(source, dest)
    partners = pd.read_csv(dest / "partners.csv", dtype=str, keep_default_na=False)
    signed = pd.to_datetime(partners["signed_at"])
    row = 0
    if signed_before is not None:
        old = signed < pd.Timestamp(signed_before) - pd.Timedelta(days=120)
        row = int(old.to_numpy().argmax())
    pid, when = partners["partner_id"].iloc[row], signed.iloc[row]
    deals = pd.read_csv(dest / "deals.csv", dtype=str, keep_default_na=False)
    extreme = pd.DataFrame(
        {
            "deal_id": ["DX1", "DX2"],
            "partner_id": [pid, pid],
            "created_at": [str(when + pd.Timedelta(days=d)) for d in (40, 41)],
            "closed_at": [str(when + pd.Timedelta(days=d)) for d in (50, 51)],
            "amount": [LARGEST, LARGEST],
            "status": ["won", "won"],
        }
    )
    pd.concat([deals, extreme]).to_csv(dest / "deals.csv", index=False)
    return pid


@contextmanager
def sqlite_write_lock_held(database: Path, seconds: float):
    """Another process holds ``database``'s write lock (``BEGIN EXCLUSIVE``) for ``seconds``,
    then commits: the body runs while it holds it; on leaving, the holder's end is waited for
    and it must have committed."""
    import subprocess

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time; con = sqlite3.connect(sys.argv[1], isolation_level=None);"
            " con.execute('BEGIN EXCLUSIVE'); print('held', flush=True);"
            " time.sleep(float(sys.argv[2])); con.execute('COMMIT')",
            str(database),
            str(seconds),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        yield
    finally:
        holder.wait(timeout=60 + seconds)
    assert holder.returncode == 0


def stored_history(cfg):
    """Every history row of ``cfg``'s store as stored (shadow rows included): a DataFrame."""
    import pandas as pd
    import sqlalchemy as sa

    from partnerscore.serving.history import TABLE

    engine = sa.create_engine(cfg.paths.history_database())
    try:
        with engine.connect() as conn:
            rows = pd.read_sql(
                f"select partner_id, as_of, model_version, score, shadow from {TABLE}", conn
            )
    finally:
        engine.dispose()
    rows["shadow"] = rows["shadow"].astype(bool)
    return rows.assign(as_of=pd.to_datetime(rows["as_of"]))


def champion_store(features: Path, root: Path):
    """A store of its own under ``root`` whose champion was trained on ``features`` (trials 0,
    no plots: no test reads a fixture champion's plots).

    Trains and promotes with ``--force`` (a fixture needs a champion whatever the noisy holdout
    bias of a small program), with ``MLFLOW_TRACKING_URI`` unset meanwhile.

    Returns:
        An AppConfig whose paths point at the store and a history folder of its own.
    """
    from partnerscore.serving.config import AppConfig
    from partnerscore.training.registry import run_promote
    from partnerscore.training.train import run_train

    cfg = AppConfig.model_validate(
        {
            "paths": {"data_dir": str(root / "data"), "mlflow_dir": str(root / "mlflow")},
            "train": {"trials": 0, "plots": False},
        }
    )
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        run_train(features, cfg.train, **cfg.train_arguments())
        run_promote(
            cfg.train, tracking_uri=cfg.paths.tracking_uri(), force=True, reason="test fixture"
        )
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return cfg


def chart_names(page: str) -> dict[str, list[str]]:
    """Every ``<svg role="img">`` of an HTML page: its class -> the accessible names it has.

    A chart's name is its ``aria-label``, else the text of a ``<title>`` that is its first
    child; an unnamed chart has the name ``""``.
    """
    from html.parser import HTMLParser

    class Charts(HTMLParser):
        def __init__(self):
            super().__init__()
            self.names: dict[str, list[str]] = {}
            self.pending: tuple[str, int] | None = None  # (class, index) awaiting a <title>
            self.title: list[str] | None = None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if self.pending is not None and tag != "title":
                self.pending = None
            if tag == "svg" and a.get("role") == "img":
                names = self.names.setdefault(a.get("class") or "", [])
                names.append((a.get("aria-label") or "").strip())
                if not names[-1]:
                    self.pending = (a.get("class") or "", len(names) - 1)
            elif tag == "title" and self.pending is not None:
                self.title = []

        def handle_data(self, data):
            if self.title is not None:
                self.title.append(data)

        def handle_endtag(self, tag):
            if tag == "title" and self.title is not None and self.pending is not None:
                cls, i = self.pending
                self.names[cls][i] = "".join(self.title).strip()
                self.title, self.pending = None, None

    parser = Charts()
    parser.feed(page)
    return parser.names


def tables_known_at(tables: dict, at) -> dict:
    """:func:`partnerscore.features.drift_sim.tables_known_at` (the monitoring protocol's
    month-cut export; the bench script uses it too)."""
    from partnerscore.features.drift_sim import tables_known_at as known_at

    return known_at(tables, at)


def costly_examples(max_examples: int):
    """Hypothesis settings for examples that each build a program or run a real job.

    Derandomized, no example database, no shrinking (shrinking one costs minutes on 2 cores);
    the health checks such examples trip (too slow, large data, a function-scoped fixture
    shared by the examples: read-only or reset by the test) are off.
    """
    from hypothesis import HealthCheck, Phase, settings

    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


def fit_model(frame, specs, config, revenue=None, engagement=None):
    """``fit_partner_model`` of ``frame`` with ``config``'s head parameters (seed 7), each
    head's updated by ``revenue`` / ``engagement`` (e.g. fewer trees), the default policy."""
    from partnerscore.models.config import PolicyConfig
    from partnerscore.training.train import _head_kwargs, fit_partner_model

    return fit_partner_model(
        frame,
        specs,
        config,
        PolicyConfig(),
        {**_head_kwargs(config.revenue, 7), **(revenue or {})},
        {**_head_kwargs(config.engagement, 7), **(engagement or {})},
    )


def simulated_training_set(partners: int, seed: int):
    """A simulated program's training set, sorted by (partner, as_of), and its feature specs."""
    from partnerscore.features.config import BuildConfig, SimulateConfig
    from partnerscore.features.pipeline import build_training_set
    from partnerscore.features.registry import feature_specs
    from partnerscore.features.simulate import simulate_program
    from partnerscore.features.validate import RawData

    tables = simulate_program(SimulateConfig(partners=partners, seed=seed))
    frame = build_training_set(RawData.from_frames(tables), BuildConfig())
    frame = frame.sort_values(["partner_id", "as_of"], kind="stable").reset_index(drop=True)
    return frame, [s for s in feature_specs() if s.name in frame.columns]


def segment_volume_page(tables: dict, as_of, config=None) -> tuple[str, list]:
    """monitor.html of a run whose only checks are the per-segment volume ones (no model).

    Returns:
        (the page, the checks).
    """
    import pandas as pd

    from partnerscore.features.profile import ALL
    from partnerscore.features.segment_volume import segment_volume_report
    from partnerscore.serving.config import AppConfig
    from partnerscore.serving.monitor import (
        ANOMALY_COLUMNS,
        BACKTEST_COLUMNS,
        SEVERITY,
        MonitorResult,
    )
    from partnerscore.serving.monitor_report import render_monitor_html

    config = config or AppConfig()
    as_of = pd.Timestamp(as_of)
    checks, views = segment_volume_report(tables, as_of, config.monitor)
    result = MonitorResult(
        out_dir=".",
        as_of=as_of.date(),
        model_uri="models:/partnerscore@champion",
        model_version="1",
        checks=checks,
        anomalies=pd.DataFrame(columns=list(ANOMALY_COLUMNS)),
        backtest=pd.DataFrame(columns=list(BACKTEST_COLUMNS)),
        segment_volumes=views,
    )
    payload = {
        "as_of": f"{as_of:%Y-%m-%d}",
        "model_uri": result.model_uri,
        "model_version": "1",
        "config_hash": config.hash(),
        "generated_at": "",
        "exit_code": result.exit_code,
        "counts": {s: result.count(s) for s in SEVERITY},
        "batch_rows": 0,
        "anomalous_rows": 0,
    }
    reference = {"columns": {}, "groups": {ALL: {}}}
    return render_monitor_html(result, reference, pd.DataFrame(), config, payload), checks


def assert_one_error(err: str, *parts: str) -> str:
    """The CLI's stderr holds one ``error:`` line (after a usage line at most), no traceback
    and no "unexpected", and that line holds every one of ``parts``; returns the line."""
    assert "Traceback" not in err and "unexpected" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert all(line.startswith(("error: ", "Usage: ")) for line in lines), err
    for part in parts:
        assert part in errors[0], (part, errors[0])
    return errors[0]


def cli_config_in(folder: Path, model_store) -> tuple[Path, dict]:
    """A config file for CLI runs: data under ``folder/data``, the session's model store.

    Returns the file and the environment for a CLI process of its own: without
    ``MLFLOW_TRACKING_URI``, so that the file's store is the one used.
    """
    config = folder / "config.json"
    paths = {"data_dir": str(folder / "data"), "mlflow_dir": model_store.paths.mlflow_dir}
    config.write_text(json.dumps({"paths": paths}))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return config, env


def needs_java() -> None:
    """Skip a Spark test without a Java runtime (fail on CI, where ``make services`` installs
    one)."""
    import pytest

    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        message = "no Java runtime (make services installs one)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def with_sitecustomize(env: dict, folder: Path, code: str) -> dict:
    """``env`` for a child Python that runs ``code`` first: a ``sitecustomize.py`` in
    ``folder`` (created) put first on its ``PYTHONPATH``. Returns ``env``, updated."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(code)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH")]))
    return env


_KILL_AT_RENAME = """
import os, signal

_replace = os.replace
_out = os.environ["PARTNERSCORE_TEST_OUT"]
_left = int(os.environ["PARTNERSCORE_TEST_RENAMES"])
_before = os.environ["PARTNERSCORE_TEST_WHEN"] == "before"


def replace(src, dst, *args, **kwargs):
    global _left
    into = os.path.dirname(os.path.abspath(dst)) == _out
    if into and _before and _left == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    _replace(src, dst, *args, **kwargs)
    if into:
        _left -= 1
        if _left == 0:
            os.kill(os.getpid(), signal.SIGKILL)


os.replace = replace
"""


def killed_at_rename(env: dict, folder: Path, out: Path, renames: int, when: str = "after") -> dict:
    """``env`` for a child Python that kills itself (SIGKILL: no handler runs, as when the
    kernel's out-of-memory killer ends a job) right ``before`` or ``after`` its ``renames``-th
    :func:`os.replace` into the folder ``out`` (a ``sitecustomize.py`` in ``folder``).
    Returns ``env``, updated."""
    with_sitecustomize(env, folder, _KILL_AT_RENAME)
    env["PARTNERSCORE_TEST_OUT"] = str(Path(out).resolve())
    env["PARTNERSCORE_TEST_RENAMES"] = str(renames)
    env["PARTNERSCORE_TEST_WHEN"] = when
    return env


def assert_said_left_publish(run, folder: Path, manifest: str | None, mixed: list, said: str):
    """A job run again after its publish was killed: its one ``note:`` line and ``--json``.

    ``run``: the ``subprocess.run`` result of the job with ``--json``; the other arguments are
    the ``interrupted_publish`` record it must print (``said``: its note, without ``note: ``).
    """
    notes = [line for line in run.stderr.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: {said}"], run.stderr[-3000:]
    assert json.loads(run.stdout)["interrupted_publish"] == {
        "folder": str(folder),
        "manifest": manifest,
        "mixed": mixed,
        "note": said,
    }


def hand_scores(folder: Path, n: int = 40, drop: str | None = None) -> Path:
    """``folder/scores.csv``: a hand-built scores-contract file of ``n`` partners for
    ``experiment assign`` (partner, tier, quadrant, score), ``drop`` a column left out."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            "partner_id": [f"P{i:03d}" for i in range(n)],
            "as_of": "2026-03-01",
            "score": [float(i) for i in range(n)],
            "score_tier": "B",
            "pred_revenue": 1000.0,
            "pred_engagement": 0.5,
            "tier": ["gold", "silver"] * (n // 2),
            "quadrant": "star",
            "intervention": "x",
            "intervention_detail": "y",
        }
    )
    if drop:
        frame = frame.drop(columns=[drop])
    frame.to_csv(folder / "scores.csv", index=False)
    return folder / "scores.csv"


def copy_store(source: Path, dest: Path) -> None:
    """Copy a local MLflow store laid out as the training tests lay it out (``mlflow.db`` and
    the artifact folder ``art``) from the folder ``source`` into the folder ``dest``.

    Copying a trained store is far cheaper than training it again. MLflow keeps absolute
    artifact locations (the experiment's, each run's and logged model's, each version's
    storage location, each ``MLmodel``'s ``artifact_path``): every one under ``source`` is
    rewritten to ``dest``, so the copy reads and writes (``mlflow gc`` deletes) its own
    artifacts only.
    """
    old, new = f"{source}/", f"{dest}/"
    shutil.copy2(source / "mlflow.db", dest / "mlflow.db")
    shutil.copytree(source / "art", dest / "art")
    with sqlite3.connect(dest / "mlflow.db") as conn:
        tables = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for column in conn.execute(f"PRAGMA table_info({table})").fetchall():
                if column[2].upper() not in ("INTEGER", "BIGINT", "FLOAT", "BOOLEAN", "BLOB"):
                    conn.execute(
                        f'UPDATE {table} SET "{column[1]}" = replace("{column[1]}", ?, ?) '
                        f'WHERE instr("{column[1]}", ?) > 0',
                        (old, new, old),
                    )
    conn.close()
    for path in (dest / "art").rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if old.encode() not in data:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:  # a binary file: its length must not change
            raise AssertionError(f"{path} holds the store's path in binary data") from None
        path.write_text(text.replace(old, new), encoding="utf-8")


def purge_run(uri: str, run_id: str) -> None:
    """Delete a run and purge it from the store for good, as ``mlflow gc`` does: its command
    run in this process (its options as a child ``python -m mlflow gc`` with
    ``MLFLOW_TRACKING_URI`` set to ``uri`` would read; an interpreter start saved), its
    output kept apart from the test's as a child's would be (an error raises)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    import mlflow
    from mlflow.cli import gc

    mlflow.MlflowClient(tracking_uri=uri).delete_run(run_id)
    args = ["--backend-store-uri", uri, "--tracking-uri", uri, "--run-ids", run_id]
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        gc.main(args, prog_name="mlflow gc", standalone_mode=False)
