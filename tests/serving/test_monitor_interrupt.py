"""An interrupted monitor run publishes its files together, or none of them.

Each file used to be renamed over its target as soon as it was written (anomalies.csv,
backtest.csv, backtest_phases.csv, monitor.json, then the page and the state): a SIGTERM
while the page was rendered left this run's CSVs and monitor.json beside last month's page
and state file. The job process signals itself at the exact point (a sitecustomize hook),
so the test does not depend on timing.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from markupsafe import escape
from support import killed_at_rename, with_sitecustomize

from partnerscore.features.core import PartnerscoreError, check_listed
from partnerscore.serving.monitor import run_monitor

FILES = (
    "anomalies.csv",
    "backtest.csv",
    "backtest_phases.csv",
    "monitor.json",
    "monitor.html",
    "monitor_state.json",
)

_HOOKS = {
    # SIGTERM to itself as soon as the page is rendered (the CSVs and monitor.json written)
    "while_rendering": """
import os, signal
import partnerscore.serving.monitor_report as report

_render = report.render_monitor_html


def render_monitor_html(*args, **kwargs):
    html = _render(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
    return html


report.render_monitor_html = render_monitor_html
""",
    # SIGTERM to itself right after the first file is renamed into the output folder
    "while_publishing": """
import os, signal

_replace = os.replace
_out = os.environ["PARTNERSCORE_TEST_OUT"]


def replace(src, dst, *args, **kwargs):
    _replace(src, dst, *args, **kwargs)
    if os.path.dirname(os.path.abspath(dst)) == _out and os.replace is replace:
        os.replace = _replace
        os.kill(os.getpid(), signal.SIGTERM)


os.replace = replace
""",
}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals a real process")
@pytest.mark.parametrize("when", sorted(_HOOKS))
def test_a_terminated_monitor_publishes_all_its_files_or_none(
    store_config, raw_dir, tmp_path, when
):
    out = tmp_path / "monitor"
    run_monitor(store_config, raw_dir, pd.Timestamp("2026-06-01").date(), out, log_to_mlflow=False)
    before = {name: (out / name).stat().st_ino for name in FILES}
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(store_config.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with_sitecustomize(env, tmp_path / "hook", _HOOKS[when])
    env["PARTNERSCORE_TEST_OUT"] = str(out.resolve())
    job = subprocess.run(
        [sys.executable, "-m", "partnerscore.serving.cli", "monitor", "--raw", str(raw_dir)]
        + ["--as-of", "2026-07-01", "--out", str(out), "--config", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if when == "while_rendering":
        assert job.returncode == 143, job.stderr
        assert job.stderr.strip().splitlines()[-1] == "terminated", job.stderr
    else:  # held by the publication, the job's last step: it finishes, with its own code
        # (0, or 1 for an alarm), where it said `terminated`, 143, until 2026-12-06
        assert job.returncode in (0, 1), job.stderr
        assert job.stderr.strip().splitlines()[-1] == (
            "note: SIGTERM came as the job published its results: they are whole, and the job "
            "finished"
        )
    assert "Traceback" not in job.stderr
    replaced = {name for name in FILES if (out / name).stat().st_ino != before[name]}
    # interrupted before the renames: none; during them: the renames finish, all of them
    assert replaced == (set() if when == "while_rendering" else set(FILES)), replaced
    as_of = json.loads((out / "monitor.json").read_text())["as_of"]
    state = json.loads((out / "monitor_state.json").read_text())["as_of"]
    assert as_of == state == ("2026-06-01" if when == "while_rendering" else "2026-07-01")
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporaries


def _monitor(raw_dir, out, cfg, env, *options):
    """A real ``partnerscore [options] monitor`` of 2026-07-01 into ``out``."""
    return subprocess.run(
        [sys.executable, "-m", "partnerscore.serving.cli", *options, "monitor"]
        + ["--raw", str(raw_dir), "--as-of", "2026-07-01", "--out", str(out)]
        + ["--config", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills a real process")
@pytest.mark.parametrize("renames", [1, 4, 5, 6])
def test_a_monitor_killed_while_publishing_leaves_a_mix_its_manifest_names(
    store_config, raw_dir, tmp_path, renames
):
    # the six files were renamed one by one: a SIGKILL between two renames (which no handler
    # can hold) left this run's first files beside the previous run's others, and nothing in
    # the folder said so. monitor.json is renamed last and lists every file's SHA-256: a
    # folder holds one run's files (their bytes), or check_listed names one that is not
    out = tmp_path / "monitor"
    run_monitor(store_config, raw_dir, pd.Timestamp("2026-06-01").date(), out, log_to_mlflow=False)
    assert check_listed(out / "monitor.json").get("interrupted_publish") is None  # whole
    assert 'id="interrupted-publish"' not in (out / "monitor.html").read_text()
    before = {name: ((out / name).stat().st_ino, (out / name).read_bytes()) for name in FILES}
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(store_config.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    plain = dict(env)  # the next run's, without the hook
    killed_at_rename(env, tmp_path / "hook", out, renames)
    job = _monitor(raw_dir, out, cfg, env)
    assert job.returncode == -signal.SIGKILL, job.stderr
    replaced = {name for name in FILES if (out / name).stat().st_ino != before[name][0]}
    assert len(replaced) == renames, replaced
    changed = {name for name in replaced if (out / name).read_bytes() != before[name][1]}
    if replaced == set(FILES):  # killed after the last rename: the new run's set, whole
        assert check_listed(out / "monitor.json")["as_of"] == "2026-07-01"
    elif not changed:  # this run's first files hold the previous run's bytes: its set, whole
        assert check_listed(out / "monitor.json")["as_of"] == "2026-06-01"
    else:
        assert "monitor.json" not in replaced  # the manifest is the last file renamed
        if renames >= 4:
            assert "monitor.html" in changed  # the page names its as_of: a mix of two runs
        with pytest.raises(PartnerscoreError) as caught:
            check_listed(out / "monitor.json")
        message = str(caught.value)
        assert len(message.splitlines()) == 1
        assert "not the file monitor.json lists" in message and "interrupted" in message, message
        assert Path(message.split(": ")[0]).name in changed, (message, changed)
    assert (out / ".monitor.json.publishing").exists()
    # the killed run's temporaries: removed by a run staging the same file 15 minutes later
    # (a younger one may be a run's beside it, staging now: core.STALE_TMP_SECONDS)
    left = {p.name for p in out.iterdir() if p.name.startswith(".")} - {".monitor.json.publishing"}

    # the next run said nothing of it and read the state file, whichever run's it was, until
    # 2026-12-06: now one note names the folder, what was left, whose state it read, and
    # that it replaced every file; monitor.json and --json record it
    again = _monitor(raw_dir, out, cfg, plain, "--json")
    assert again.returncode in (0, 1), again.stderr
    notes = [line for line in again.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1, again.stderr
    note = notes[0]
    listed_as_of = "2026-07-01" if renames == 6 else "2026-06-01"
    mixed = sorted(changed) if renames < 6 else []
    state_as_of = "2026-07-01" if renames >= 5 else "2026-06-01"
    state_run = "interrupted run" if renames == 5 else "last whole run"
    assert note.startswith(
        f"note: {out}: an earlier monitor run was killed while publishing "
        "(.monitor.json.publishing was left)"
    ), note
    if mixed:  # the first file in monitor.json's order (that of the renames)
        assert f": {mixed[0]} is not" in note or f": {mixed[0]} and " in note, note
        assert f" monitor.json (as of {listed_as_of}) lists, a mix of two runs'" in note, note
    else:
        assert f"its files are the set monitor.json (as of {listed_as_of}) lists" in note
    assert f"monitor_state.json (as of {state_as_of}) is the {state_run}'s" in note, note
    assert note.endswith("this run replaced every file with its own"), note
    recorded = json.loads(again.stdout)["interrupted_publish"]
    assert recorded["note"] == note.removeprefix("note: ")
    assert f"Note: {escape(recorded['note'])}.</p>" in (out / "monitor.html").read_text()
    assert set(recorded["mixed"]) == set(mixed), (recorded, changed)  # quarantine: the same
    assert (recorded["listed_as_of"], recorded["state_as_of"]) == (listed_as_of, state_as_of)
    assert recorded["state_run"] == state_run and recorded["state_kept"] is False
    # a whole set, this run's, its volumes compared with June's whichever state it read
    manifest = check_listed(out / "monitor.json")
    assert manifest["as_of"] == "2026-07-01" and manifest["interrupted_publish"] == recorded
    assert set(FILES) - {"monitor.json"} <= set(manifest["files"])
    state = json.loads((out / "monitor_state.json").read_text())
    assert state["as_of"] == "2026-07-01" and state["baseline"]["as_of"] == "2026-06-01"
    assert {p.name for p in out.iterdir() if p.name.startswith(".")} == left  # the mark: gone


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills a real process")
def test_a_backfill_after_a_first_publish_killed_says_it_kept_the_killed_runs_state(
    store_config, raw_dir, tmp_path
):
    # a first run into an empty folder killed after its state's rename (the 5th): no
    # monitor.json tells whose the files are. A backfill (an earlier date) then keeps the
    # state, the latest run's, as a backfill does, and says so
    out = tmp_path / "monitor"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(store_config.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    killed_at_rename(env, tmp_path / "hook", out, 5)
    job = _monitor(raw_dir, out, cfg, env)
    assert job.returncode == -signal.SIGKILL, job.stderr
    assert not (out / "monitor.json").exists() and (out / ".monitor.json.publishing").exists()
    state = (out / "monitor_state.json").read_bytes()
    result = run_monitor(
        store_config, raw_dir, pd.Timestamp("2026-06-01").date(), out, log_to_mlflow=False
    )
    left = result.interrupted_publish
    assert (left.listed_as_of, left.mixed, left.state_as_of) == (None, (), "2026-07-01")
    assert (left.state_run, left.state_kept) == ("interrupted run", True)
    assert left.note() == (
        f"{out}: an earlier monitor run was killed while publishing (.monitor.json.publishing "
        "was left): no monitor.json lists the files, whose run cannot be told; "
        "monitor_state.json (as of 2026-07-01) is the interrupted run's (renamed whole before "
        "the kill), read as the previous run's state; this run replaced every file but "
        "monitor_state.json, kept (a later date's)"
    )
    assert check_listed(out / "monitor.json")["interrupted_publish"] == left.to_dict()
    # the page says it too (it said nothing: the note was on stderr and in monitor.json only)
    page = (out / "monitor.html").read_text()
    assert f'<p class="muted" id="interrupted-publish">Note: {escape(left.note())}.</p>' in page
    assert (out / "monitor_state.json").read_bytes() == state
    assert not (out / ".monitor.json.publishing").exists()
