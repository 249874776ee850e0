import subprocess
import sys

import pytest

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


def test_bad_date_is_one_line_error(capsys):
    assert main(["score", "--as-of", "2026-13-45"]) == 2
    err = capsys.readouterr().err.strip()
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
    assert proc.stderr.strip() == "error: --ages: expected comma-separated day counts, got 'x,y'"
