"""Every command-line option and config key naming an input file or folder, given a bad one.

For each input (an option such as ``score --overrides``, or a config key such as
``score.overrides_path``) and each way it can be wrong (missing, a folder where a file is
expected or the reverse, an unreadable file, an empty file, a Parquet file or binary junk where
CSV, YAML or JSON is expected) the console script must print one ``error:`` line on stderr
naming the option or config key and the path, exit 2, and with ``--json`` print one JSON error
object on stdout. Table-driven: :data:`FILE_INPUTS` and :data:`FOLDER_INPUTS` list the inputs,
:data:`FILE_DEFECTS` and :data:`FOLDER_DEFECTS` the ways to break them.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from support import assert_one_error

from partnerscore.serving.cli import main

BASE = Path(__file__).parents[1] / "features" / "malformed" / "_base"
AS_OF = "2024-06-01"
JUNK = bytes(range(256)) * 4
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def raw_copy(tmp: Path) -> Path:
    raw = tmp / "raw"
    if not raw.exists():
        shutil.copytree(BASE, raw)
    return raw


def score_raw(tmp: Path) -> list:
    """A score job's arguments on a copy of the program (the input under test added after)."""
    return ["score", "--raw", raw_copy(tmp), "--as-of", AS_OF, "--out", tmp / "s.csv"]


def config_with(tmp: Path, section: str, key: str, value: Path) -> Path:
    path = tmp / f"cfg_{section}_{key}.json"
    path.write_text(json.dumps({section: {key: str(value)}}), encoding="utf-8")
    return path


def assignments_file(tmp: Path) -> Path:
    """A well-formed assignment table of two arms (the partners need not be in the raw data:
    the inputs' errors come first)."""
    path = tmp / "assignments.csv"
    pd.DataFrame(
        {
            "experiment": ["e", "e"],
            "partner_id": ["p1", "p2"],
            "arm": ["control", "treatment"],
            "stratum": ["all", "all"],
            "assigned_at": [AS_OF, AS_OF],
            "target_share": [0.5, 0.5],
            "seed": [0, 0],
        }
    ).to_csv(path, index=False)
    return path


def policy_file(tmp: Path) -> Path:
    path = tmp / "other_policy.yaml"
    path.write_text("policy:\n  revenue_weight: 0.6\n", encoding="utf-8")
    return path


def a_scores_file(tmp: Path, scored) -> Path:
    """A real scores file (the session's scored program), for the inputs read after it."""
    root, _ = scored
    return root / "scores.csv"


# Each input: (suffix its file takes, what names it in the error, argv builder). The builder
# gets the bad path, the test's folder and the session's scored program (for inputs read only
# once a valid scores file was); it returns the arguments.
FILE_INPUTS = {
    "config": (".yaml", "--config", lambda p, t, s: ["metrics", "--config", p]),
    "build_cutoffs": (
        ".csv",
        "--cutoffs",
        lambda p, t, s: ["build", "--raw", raw_copy(t), "--out", t / "f", "--cutoffs", p],
    ),
    "score_features": (
        ".csv",
        "--features",
        lambda p, t, s: ["score", "--features", p, "--out", t / "s.csv"],
    ),
    "score_overrides": (
        ".csv",
        "--overrides",
        lambda p, t, s: [*score_raw(t), "--overrides", p],
    ),
    "config_score_overrides_path": (
        ".csv",
        "score.overrides_path",
        lambda p, t, s: [*score_raw(t), "--config", config_with(t, "score", "overrides_path", p)],
    ),
    "config_policy_playbook_path": (
        ".yaml",
        "policy.playbook_path",
        lambda p, t, s: [*score_raw(t), "--config", config_with(t, "policy", "playbook_path", p)],
    ),
    "report_scores": (".csv", "--scores", lambda p, t, s: ["report", "--scores", p, "--out", t]),
    "report_partners_file": (
        ".csv",
        "--partners-file",
        lambda p, t, s: [
            *("report", "--scores", a_scores_file(t, s), "--out", t / "rep"),
            *("--partners-file", p),
        ],
    ),
    "report_notes": (
        ".csv",
        "--notes",
        lambda p, t, s: [
            *("report", "--scores", a_scores_file(t, s), "--out", t / "rep", "--notes", p),
        ],
    ),
    "forecast_scores": (
        ".csv",
        "--scores",
        lambda p, t, s: ["forecast", "--scores", p, "--out", t / "fc.csv"],
    ),
    "monitor_scores": (
        ".csv",
        "--scores",
        lambda p, t, s: [
            *("monitor", "--raw", raw_copy(t), "--as-of", AS_OF, "--out", t / "m"),
            *("--scores", p),
        ],
    ),
    "whatif_policy": (
        ".yaml",
        "--policy",
        lambda p, t, s: ["whatif", "--policy", p, "--scores", a_scores_file(t, s)],
    ),
    "whatif_scores": (
        ".csv",
        "--scores",
        lambda p, t, s: ["whatif", "--policy", policy_file(t), "--scores", p],
    ),
    "experiment_assign_scores": (
        ".csv",
        "--scores",
        lambda p, t, s: [
            "experiment",
            "assign",
            "--scores",
            p,
            "--name",
            "e",
            "--out",
            t / "a.csv",
        ],
    ),
    "experiment_assign_registry": (
        ".csv",
        "--registry",
        lambda p, t, s: [
            *("experiment", "assign", "--scores", a_scores_file(t, s), "--name", "e"),
            *("--out", t / "a.csv", "--registry", p),
        ],
    ),
    "experiment_stop_registry": (
        ".csv",
        "--registry",
        lambda p, t, s: ["experiment", "stop", "--name", "e", "--registry", p],
    ),
    "experiment_analyze_assignments": (
        ".csv",
        "--assignments",
        lambda p, t, s: [
            *("experiment", "analyze", "--assignments", p, "--raw", raw_copy(t)),
            *("--horizon", "90", "--out", t / "an"),
        ],
    ),
    "experiment_analyze_history": (
        ".sqlite",
        "--history",
        lambda p, t, s: [
            *("experiment", "analyze", "--assignments", assignments_file(t), "--raw", raw_copy(t)),
            *("--horizon", "30", "--out", t / "an", "--history", p),
        ],
    ),
}

FOLDER_INPUTS = {
    # an argument: named as the usage line names it (until 2026-12-06 the path alone)
    "validate_raw": ("RAW", lambda p, t, s: ["validate", p]),
    "build_raw": ("--raw", lambda p, t, s: ["build", "--raw", p, "--out", t / "f"]),
    "build_validated": (
        "--validated",
        lambda p, t, s: ["build", "--raw", raw_copy(t), "--out", t / "f", "--validated", p],
    ),
    "train_features": ("--features", lambda p, t, s: ["train", "--features", p]),
    "score_raw": (
        "--raw",
        lambda p, t, s: ["score", "--raw", p, "--as-of", AS_OF, "--out", t / "s.csv"],
    ),
    "score_validated": (
        "--validated",
        lambda p, t, s: [*score_raw(t), "--validated", p],
    ),
    "monitor_raw": (
        "--raw",
        lambda p, t, s: ["monitor", "--raw", p, "--as-of", AS_OF, "--out", t / "m"],
    ),
    "whatif_raw": (
        "--raw",
        lambda p, t, s: [
            *("whatif", "--raw", p, "--partner", "p1", "--as-of", AS_OF, "--set", "age_days=30"),
        ],
    ),
    "experiment_analyze_raw": (
        "--raw",
        lambda p, t, s: [
            *("experiment", "analyze", "--assignments", t / "assignments.csv", "--raw", p),
            *("--horizon", "90", "--out", t / "an"),
        ],
    ),
    "experiment_plan_raw": (
        "--raw",
        lambda p, t, s: ["experiment", "plan", "--partners", "100", "--raw", p],
    ),
}


def _parquet(path: Path) -> None:
    pd.DataFrame({"partner_id": ["p1"], "x": [1.0]}).to_parquet(path)


FILE_DEFECTS = {
    # defect: (make it at the path, words the error line holds besides the option and path)
    "missing": (lambda p: None, ["not found"]),
    "folder": (lambda p: p.mkdir(), ["is a folder, expected a"]),
    "empty": (lambda p: p.write_bytes(b""), ["empty"]),
    "parquet": (_parquet, []),
    "junk": (lambda p: p.write_bytes(JUNK), []),
    # ours says "cannot read", the parser's own path check (Typer) "is not readable"
    "unreadable": (lambda p: (p.write_text("a\n1\n"), p.chmod(0)), [("cannot read", "readable")]),
}

FOLDER_DEFECTS = {
    "missing": (lambda p: None, ["not found"]),
    "file": (lambda p: p.write_text("partner_id\np1\n"), ["is a file, expected a"]),
    "unreadable": (lambda p: (p.mkdir(), p.chmod(0)), [("cannot read", "readable")]),
    "empty": (lambda p: p.mkdir(), []),  # the job's own error about it
}


def _user_namespace() -> str | None:
    """util-linux's ``unshare`` if it can make a user namespace here (a container's seccomp
    profile may refuse it), else None."""
    import subprocess

    path = shutil.which("unshare")
    if path is None or not ROOT:
        return None
    probe = subprocess.run([path, "--user", "true"], capture_output=True, timeout=30)
    return path if probe.returncode == 0 else None


UNSHARE = _user_namespace()


def _unprivileged(defect: str) -> bool:
    """Whether the case runs the console script in a user namespace of its own.

    Root reads a chmod 000 file and lists such a folder anyway (checked in
    test_root_reads_a_mode_000_file), so as root (CI) the "unreadable" cases would be the
    well-formed input's. In a new user namespace (``unshare --user``, util-linux) the process
    keeps its uid but loses the override for files the namespace does not map: a mode 000 file
    is unreadable to it, as to any user, while its own files (owner bits) stay usable.
    """
    if defect != "unreadable" or not ROOT:
        return False
    if UNSHARE is None:
        pytest.skip("running as root, no user namespace (unshare): a mode 000 file is readable")
    return True


def assert_said_once(code: int, out: str, err: str, *parts: str) -> str:
    assert code == 2, (code, out, err)
    return assert_one_error(err, *parts)


def run_both_ways(argv, capsys) -> None:
    """The line without --json; with --json the same line on stderr and one object on stdout."""
    argv = [str(a) for a in argv]
    code, first = main(argv), capsys.readouterr()
    code_json, second = main(["--json", *argv]), capsys.readouterr()
    return code, first.out, first.err, code_json, second.out, second.err


@pytest.fixture()
def quiet_store(tmp_path, monkeypatch):
    """An empty registry in a temporary folder: the input's error comes before the model's."""
    monkeypatch.chdir(tmp_path)  # nothing may land in the repository's data/ folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("PARTNERSCORE_DEBUG", raising=False)
    sqlite3.connect(tmp_path / "mlflow.db").close()


CREATED = {"experiment_assign_registry", "experiment_stop_registry"}
"""Inputs a job creates when missing (the experiment registry): a missing one is no error."""

NEEDS_SCORES = {
    "report_partners_file",
    "report_notes",
    "whatif_policy",
    "experiment_assign_registry",
}


def run_unprivileged(argv) -> tuple:
    """:func:`run_both_ways` through the console script in a user namespace of its own."""
    import subprocess
    import sys

    runs = []
    for args in ([str(a) for a in argv], ["--json", *map(str, argv)]):
        job = subprocess.run(
            [UNSHARE, "--user", sys.executable, "-m", "partnerscore", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        runs += [job.returncode, job.stdout, job.stderr]
    return tuple(runs)


def _check(argv, said_by, bad: Path, words, capsys, unprivileged: bool = False) -> None:
    run = run_unprivileged(argv) if unprivileged else run_both_ways(argv, capsys)
    code, out, err, code_json, out_json, err_json = run
    line = assert_said_once(
        code, out, err, said_by, str(bad), *(w for w in words if isinstance(w, str))
    )
    for either in (w for w in words if isinstance(w, tuple)):  # one of these words
        assert any(word in line for word in either), (either, line)
    assert out.strip() == "", out
    assert code_json == 2 and err_json == err, (code_json, err_json)
    assert json.loads(out_json) == {
        "error": line.removeprefix("error: "),
        "exit_code": 2,
        "command": argv[0] if argv[0] != "experiment" else f"experiment {argv[1]}",
    }, out_json


@pytest.mark.parametrize(
    ("name", "defect"),
    [
        (name, defect)
        for name in sorted(FILE_INPUTS)
        for defect in sorted(FILE_DEFECTS)
        if not (defect == "missing" and name in CREATED)  # the job creates it: no error
    ],
)
def test_a_bad_input_file_is_one_line_naming_its_option(
    name, defect, tmp_path, quiet_store, request, capsys
):
    unprivileged = _unprivileged(defect)
    suffix, said_by, argv_for = FILE_INPUTS[name]
    scored = request.getfixturevalue("scored_dir") if name in NEEDS_SCORES else None
    capsys.readouterr()  # the scored program's own lines, when this test built it first
    make, words = FILE_DEFECTS[defect]
    if defect == "folder" and name.endswith("_scores"):  # a scores dataset folder is taken
        words = ["empty folder (expected a file, or a Parquet dataset folder of *.parquet"]
    bad = tmp_path / "bad" / f"input{suffix}"
    bad.parent.mkdir()
    make(bad)
    try:
        _check(argv_for(bad, tmp_path, scored), said_by, bad, words, capsys, unprivileged)
    finally:
        if bad.exists():
            bad.chmod(0o700)


EMPTY_LATER = {"monitor_raw", "score_validated", "train_features"}
"""Inputs whose empty folder the job meets after another check or names by a file in it: monitor
loads the model first, an empty --validated is a stale cache (rebuilt), train names
``DIR/training_set.parquet: not found (run partnerscore build first)``."""


@pytest.mark.parametrize(
    ("name", "defect"),
    [
        (name, defect)
        for name in sorted(FOLDER_INPUTS)
        for defect in sorted(FOLDER_DEFECTS)
        if not (defect == "empty" and name in EMPTY_LATER)
    ],
)
def test_a_bad_input_folder_is_one_line_naming_its_option(
    name, defect, tmp_path, quiet_store, capsys
):
    unprivileged = _unprivileged(defect)
    said_by, argv_for = FOLDER_INPUTS[name]
    make, words = FOLDER_DEFECTS[defect]
    bad = tmp_path / "bad" / "input_dir"
    bad.parent.mkdir()
    make(bad)
    assignments_file(tmp_path)  # a well-formed table of two arms: the folder's error first
    try:
        _check(argv_for(bad, tmp_path, None), said_by, bad, words, capsys, unprivileged)
    finally:
        if bad.exists():
            bad.chmod(0o700)


@pytest.mark.skipif(not ROOT, reason="only root reads a mode 000 file")
def test_root_reads_a_mode_000_file(tmp_path):
    path = tmp_path / "locked.csv"
    path.write_text("partner_id\np1\n")
    path.chmod(0)
    assert path.read_text() == "partner_id\np1\n"
    assert os.access(path, os.R_OK)


# a Latin-1 byte in a cell, and in a field past the header's (a record longer than it): every
# CSV reader says the cell's column and 1-based data record, or the line, and the byte, in the
# wording of the other one-line errors (until 2026-12-06: "not UTF-8 text at line 3 (row 2,
# column 3 (past the header)): byte 0xE9"; a config or playbook file "(byte 27)", an offset)
LATIN1 = {
    "cell": (
        b"partner_id,name\nP1,ok\nP2,Caf\xe9\n",
        "column 'name' row 2: not UTF-8 text (byte 0xE9 at line 3); save the file as UTF-8",
    ),
    "past_the_header": (
        b"partner_id,name\nP1,ok\n\nP2,ok,Caf\xe9\n",
        "line 4: not UTF-8 text (byte 0xE9 in field 3 of row 2, past the header's 2 columns); "
        "save the file as UTF-8",
    ),
}
TEXT_LATIN1 = {
    "cell": "line 3: not UTF-8 text (byte 0xE9); save the file as UTF-8",
    "past_the_header": "line 4: not UTF-8 text (byte 0xE9); save the file as UTF-8",
}
"""The same bytes in a YAML file (config, playbook, policy): their line."""


@pytest.mark.parametrize(
    ("name", "case"),
    [
        (name, case)
        for name in sorted(FILE_INPUTS)
        for case in sorted(LATIN1)
        if FILE_INPUTS[name][0] in (".csv", ".yaml")
    ],
)
def test_a_file_that_is_not_utf8_names_the_cell_or_line_and_the_byte(
    name, case, tmp_path, quiet_store, request, capsys
):
    suffix, said_by, argv_for = FILE_INPUTS[name]
    scored = request.getfixturevalue("scored_dir") if name in NEEDS_SCORES else None
    capsys.readouterr()  # the scored program's own lines, when this test built it first
    content, said = LATIN1[case]
    bad = tmp_path / "bad" / f"input{suffix}"
    bad.parent.mkdir()
    bad.write_bytes(content)
    code, out, err, code_json, out_json, _ = run_both_ways(argv_for(bad, tmp_path, scored), capsys)
    said = said if suffix == ".csv" else TEXT_LATIN1[case]
    line = assert_said_once(code, out, err, f"{said_by} {bad}: {said}")
    assert line == f"error: {said_by} {bad}: {said}", line
    assert code_json == 2 and json.loads(out_json)["error"] == line.removeprefix("error: ")


def _hand_scores(tmp: Path) -> Path:
    """A small scores-contract file (the job never reads it: the options' clash comes first)."""
    path = tmp / "s.csv"
    pd.DataFrame(
        {"partner_id": ["P1", "P2"], "as_of": AS_OF, "score": [10.0, 20.0], "tier": "gold"}
    ).to_csv(path, index=False)
    return path


def _hand_scores_folder(tmp: Path) -> Path:
    """:func:`_hand_scores` as the folder of part files ``score --engine spark`` writes."""
    path = tmp / "s.parquet"
    path.mkdir()
    pd.read_csv(_hand_scores(tmp)).to_parquet(path / "part-00000.parquet")
    return path


def _in_folder(path: Path, folder: str, name: str = "outcomes.csv") -> Path:
    """``path`` moved to ``<its folder>/<folder>/<name>`` (an output folder's file name)."""
    moved = path.parent / folder / name
    moved.parent.mkdir(exist_ok=True)
    path.rename(moved)
    return moved


def _overrides_config(tmp: Path) -> Path:
    for name in ("o.csv", "o.rejects.csv"):
        (tmp / name).write_text("partner_id,tier,action,reason,expires\n", encoding="utf-8")
    return config_with(tmp, "score", "overrides_path", tmp / "o.csv")


# Two options naming one file, each: (argv builder on the test's folder, the file that must be
# left as it was, the error after "error: "). Until 2026-12-06 none was refused: `experiment
# assign --scores s.csv --out s.csv` replaced the scores with the assignment table (exit 0),
# `--out a.csv --registry a.csv` the table with the registry, `forecast --out` the scores,
# `score --out raw/partners.csv` a raw table; two inputs naming one file were said by the last
# option alone
SHARED_FILES = {
    "assign_out_is_scores": (
        lambda t: [
            *("experiment", "assign", "--scores", _hand_scores(t), "--name", "e"),
            *("--out", t / "s.csv", "--registry", t / "reg.csv", "--stratify", ""),
        ],
        "s.csv",
        "--out {t}/s.csv: also given as --scores; an output must not overwrite an input",
    ),
    "assign_registry_is_scores": (
        lambda t: [
            *("experiment", "assign", "--scores", _hand_scores(t), "--name", "e"),
            *("--out", t / "a.csv", "--registry", t / "s.csv", "--stratify", ""),
        ],
        "s.csv",
        "--registry {t}/s.csv: also given as --scores; an output must not overwrite an input",
    ),
    "assign_out_is_registry": (
        lambda t: [
            *("experiment", "assign", "--scores", _hand_scores(t), "--name", "e"),
            *("--out", t / "reg.csv", "--registry", t / "reg.csv", "--stratify", ""),
        ],
        "s.csv",
        "--out {t}/reg.csv: also given as --registry; two outputs cannot share one file",
    ),
    "assign_out_is_the_default_registry": (
        lambda t: [
            *("experiment", "assign", "--scores", _hand_scores(t), "--name", "e"),
            *("--out", "data/experiments/registry.csv", "--stratify", ""),
        ],
        "s.csv",
        "--out data/experiments/registry.csv: is the experiment registry "
        "(DATA_DIR/experiments/registry.csv); two outputs cannot share one file",
    ),
    "forecast_out_is_scores": (
        lambda t: ["forecast", "--scores", _hand_scores(t), "--out", t / "s.csv"],
        "s.csv",
        "--out {t}/s.csv: also given as --scores; an output must not overwrite an input",
    ),
    "report_out_is_scores": (
        lambda t: ["report", "--scores", _hand_scores(t), "--out", t / "s.csv"],
        "s.csv",
        "--out {t}/s.csv: also given as --scores; an output must not overwrite an input",
    ),
    "whatif_out_is_scores": (
        lambda t: [
            *("whatif", "--policy", policy_file(t), "--scores", _hand_scores(t)),
            *("--out", t / "s.csv"),
        ],
        "s.csv",
        "--out {t}/s.csv: also given as --scores; an output must not overwrite an input",
    ),
    # the Parquet dataset folder `score --engine spark` writes, read whole: an output over it
    # or anywhere inside it (until 2026-12-06 the readers took no folder)
    "report_out_is_the_scores_folder": (
        lambda t: ["report", "--scores", _hand_scores_folder(t), "--out", t / "s.parquet"],
        "s.parquet/part-00000.parquet",
        "--out {t}/s.parquet: also given as --scores; an output must not overwrite an input",
    ),
    "forecast_out_in_the_scores_folder": (
        lambda t: [
            *("forecast", "--scores", _hand_scores_folder(t)),
            *("--out", t / "s.parquet" / "part-00009.parquet"),
        ],
        "s.parquet/part-00000.parquet",
        "--out {t}/s.parquet/part-00009.parquet: inside --scores {t}/s.parquet, an input "
        "folder; write outputs elsewhere",
    ),
    "forecast_out_below_the_scores_folder": (
        lambda t: [
            *("forecast", "--scores", _hand_scores_folder(t)),
            *("--out", t / "s.parquet" / "f" / "forecast.csv"),
        ],
        "s.parquet/part-00000.parquet",
        "--out {t}/s.parquet/f/forecast.csv: inside --scores {t}/s.parquet, an input folder; "
        "write outputs elsewhere",
    ),
    "report_out_below_the_scores_folder": (
        lambda t: [
            *("report", "--scores", _hand_scores_folder(t)),
            *("--out", t / "s.parquet" / "r" / "reports"),
        ],
        "s.parquet/part-00000.parquet",
        "--out {t}/s.parquet/r/reports: inside --scores {t}/s.parquet, an input folder; "
        "write outputs elsewhere",
    ),
    "assign_registry_in_the_scores_folder": (
        lambda t: [
            *("experiment", "assign", "--scores", _hand_scores_folder(t), "--name", "e"),
            *("--out", t / "a.csv", "--registry", t / "s.parquet" / "reg.csv"),
        ],
        "s.parquet/part-00000.parquet",
        "--registry {t}/s.parquet/reg.csv: inside --scores {t}/s.parquet, an input folder; "
        "write outputs elsewhere",
    ),
    "score_out_is_features": (
        lambda t: ["score", "--features", _hand_scores(t), "--out", t / "s.csv"],
        "s.csv",
        "--out {t}/s.csv: also given as --features; an output must not overwrite an input",
    ),
    "score_out_is_overrides": (
        lambda t: [
            *score_raw(t)[:-1],
            t / "o.csv",
            "--overrides",
            _overrides_config(t).parent / "o.csv",
        ],
        "o.csv",
        "--out {t}/o.csv: also given as --overrides; an output must not overwrite an input",
    ),
    "score_out_is_the_configs_overrides": (
        lambda t: [*score_raw(t)[:-1], t / "o.csv", "--config", _overrides_config(t)],
        "o.csv",
        "--out {t}/o.csv: also given as score.overrides_path; an output must not overwrite an "
        "input",
    ),
    "score_rejects_are_overrides": (
        lambda t: [
            *score_raw(t)[:-1],
            *(t / "o.csv", "--overrides", _overrides_config(t).parent / "o.rejects.csv"),
        ],
        "o.rejects.csv",
        "--out's rejects file {t}/o.rejects.csv: also given as --overrides; an output must not "
        "overwrite an input",
    ),
    "score_out_in_the_raw_folder": (
        lambda t: [*score_raw(t)[:-1], t / "raw" / "partners.csv"],
        "raw/partners.csv",
        "--out {t}/raw/partners.csv: inside --raw {t}/raw, an input folder; write outputs "
        "elsewhere",
    ),
    "build_out_is_raw": (
        lambda t: ["build", "--raw", raw_copy(t), "--out", t / "raw"],
        "raw/partners.csv",
        "--out {t}/raw: also given as --raw; an output must not overwrite an input",
    ),
    "monitor_out_in_the_raw_folder": (
        lambda t: ["monitor", "--raw", raw_copy(t), "--as-of", AS_OF, "--out", t / "raw" / "m"],
        "raw/partners.csv",
        "--out {t}/raw/m: inside --raw {t}/raw, an input folder; write outputs elsewhere",
    ),
    "analyze_out_is_raw": (
        lambda t: [
            *("experiment", "analyze", "--assignments", assignments_file(t), "--raw", raw_copy(t)),
            *("--horizon", "90", "--out", t / "raw"),
        ],
        "raw/partners.csv",
        "--out {t}/raw: also given as --raw; an output must not overwrite an input",
    ),
    # an input among the files a job writes in its output folder (overwritten until 2026-12-06)
    "analyze_assignments_are_its_outcomes": (
        lambda t: [
            *("experiment", "analyze", "--assignments", _in_folder(assignments_file(t), "O")),
            *("--raw", raw_copy(t), "--horizon", "90", "--out", t / "O"),
        ],
        "O/outcomes.csv",
        "--out {t}/O/outcomes.csv: also given as --assignments; an output must not overwrite "
        "an input",
    ),
    "build_cutoffs_are_its_training_set": (
        lambda t: [
            *("build", "--raw", raw_copy(t)),
            *("--cutoffs", _in_folder(_hand_scores(t), "F", "training_set.parquet")),
            *("--out", t / "F"),
        ],
        "F/training_set.parquet",
        "--out {t}/F/training_set.parquet: also given as --cutoffs; an output must not "
        "overwrite an input",
    ),
    "monitor_scores_are_its_report": (
        lambda t: [
            *("monitor", "--raw", raw_copy(t), "--as-of", AS_OF),
            *("--scores", _in_folder(_hand_scores(t), "M", "monitor.json"), "--out", t / "M"),
        ],
        "M/monitor.json",
        "--out {t}/M/monitor.json: also given as --scores; an output must not overwrite an input",
    ),
    # two inputs: the error about the file names both options
    "report_scores_is_partners_file": (
        lambda t: [
            *("report", "--scores", _hand_scores(t), "--partners-file", t / "s.csv"),
            *("--out", t / "rep"),
        ],
        "s.csv",
        "--scores and --partners-file {t}/s.csv: missing column 'score_tier' (not a "
        "partnerscore scores file)",
    ),
}


@pytest.mark.parametrize("case", sorted(SHARED_FILES))
def test_two_options_naming_one_file_are_named_together(case, tmp_path, quiet_store, capsys):
    argv_for, kept, message = SHARED_FILES[case]
    argv = argv_for(tmp_path)
    before = (tmp_path / kept).read_bytes()
    code, out, err, code_json, out_json, err_json = run_both_ways(argv, capsys)
    line = assert_said_once(code, out, err)
    assert line == "error: " + message.format(t=tmp_path), line
    assert (tmp_path / kept).read_bytes() == before
    assert not (tmp_path / "data").exists() and not (tmp_path / "a.csv").exists()
    assert code_json == 2 and json.loads(out_json)["error"] == line.removeprefix("error: ")


def test_an_output_below_an_input_folder_is_not_among_its_files(tmp_path, monkeypatch):
    """Only an output placed directly in an input folder is refused (its tables are read
    from there); one in a folder below it is not (``--raw data --out data/scores/s.parquet``,
    the shipped layout with the program's raw tables in the data folder itself)."""
    from partnerscore.features.core import OptionError
    from partnerscore.serving import cli_common

    raw = raw_copy(tmp_path)
    (raw / "scores").mkdir()
    monkeypatch.setitem(cli_common._STATE, "files", [])
    cli_common.name_input(raw, "--raw")
    cli_common.name_output(raw / "scores" / "s.parquet", "--out")
    cli_common.name_output(raw / "monitor" / "m" / "monitor.json", "--out-json")
    with pytest.raises(OptionError, match=r"^--out2 .*/raw/s\.parquet: inside --raw "):
        cli_common.name_output(raw / "s.parquet", "--out2")
    monkeypatch.setitem(cli_common._STATE, "files", [])
    cli_common.name_output(raw / "partners.csv", "--out")  # the output named first
    with pytest.raises(OptionError, match=r"^--out .*/raw/partners\.csv: inside --raw "):
        cli_common.name_input(raw, "--raw")
