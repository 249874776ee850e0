"""Progress bars: shown on a terminal only, never in CI or pipes, nested tasks share one display."""

import io

import pytest

from partnerscore.serving.cli import main
from partnerscore.training import progress


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def automatic():
    progress.set_enabled(None)
    yield
    progress.set_enabled(None)


def test_automatic_choice(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PARTNERSCORE_NO_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not progress.enabled()  # a pipe or file
    monkeypatch.setattr("sys.stderr", FakeTerminal())
    assert progress.enabled()
    monkeypatch.setenv("CI", "true")
    assert not progress.enabled()
    progress.set_enabled(True)
    assert progress.enabled()
    progress.set_enabled(False)
    monkeypatch.delenv("CI")
    assert not progress.enabled()


def test_disabled_tasks_print_nothing_and_count(capsys):
    progress.set_enabled(False)
    with progress.task("outer", total=3) as bar:
        for _ in range(3):
            bar.advance()
        bar.describe("still quiet")
    assert bar.completed == 3
    assert list(progress.track(range(4), "items")) == [0, 1, 2, 3]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_nested_tasks_share_one_live_display(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    progress.set_enabled(True)
    with progress.task("demo: train") as outer:
        shared = progress._STATE["progress"]
        assert shared is not None and shared.live.is_started
        with progress.task("tuning revenue head", total=2) as inner:
            assert progress._STATE["progress"] is shared
            inner.advance(2)
            assert [t.description for t in shared.tasks] == ["demo: train", "tuning revenue head"]
            assert shared.tasks[1].completed == 2
        assert [t.description for t in shared.tasks] == ["demo: train"]
        outer.describe("demo: score")
        assert shared.tasks[0].description == "demo: score"
    assert progress._STATE["progress"] is None and progress._STATE["depth"] == 0
    assert not shared.live.is_started
    assert list(progress.track([1, 2], "items")) == [1, 2]


def test_cli_progress_option(capsys):
    assert main(["--no-progress", "metrics"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["--progress", "metrics"]) == 0
    assert progress._STATE["progress"] is None
