"""Outputs that are symbolic links (``data/scores/latest.csv -> /shared/scores.csv``, a common
deployment layout) are written through: the link stays, its target gets the new content.

Every atomic writer staged a temporary beside the path and renamed it over the path: the link
became a plain file and the shared target kept its old content. One command per writer kind:
``score`` (staged frames, published together), ``forecast`` (``write_frame_atomic``),
``report`` (``write_text_atomic`` and its own page writer), ``monitor`` (staged text).
"""

import json
import os

import pandas as pd

from partnerscore.features.core import read_frame
from partnerscore.serving.cli import main


def _link(path, target, old="old"):
    """``path`` -> ``target`` (which holds ``old``); the target's folder is made."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(old)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


def _still_linked(path, target):
    assert path.is_symlink() and os.path.realpath(path) == str(target)
    assert not [p.name for p in target.parent.iterdir() if p.name.startswith(".")]  # no temps


def test_score_out_is_written_through_a_link(raw_dir, cli_config, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config, _ = cli_config
    shared = tmp_path / "shared" / "scores.csv"
    out = _link(tmp_path / "data" / "scores" / "latest.csv", shared)
    argv = ["score", "--raw", str(raw_dir), "--as-of", "2026-03-01", "--out", str(out)]
    assert main([*argv, "--no-history", "-c", str(config)]) == 0
    _still_linked(out, shared)
    assert len(read_frame(shared)) > 10 and "score" in read_frame(shared).columns


def test_forecast_out_is_written_through_a_link(scored_dir, tmp_path):
    root, _ = scored_dir
    shared = tmp_path / "shared" / "forecast.csv"
    out = _link(tmp_path / "latest.csv", shared)
    assert main(["forecast", "--scores", str(root / "scores.csv"), "--out", str(out)]) == 0
    _still_linked(out, shared)
    assert "expected_revenue" in read_frame(shared).columns


def test_a_dangling_forecast_link_creates_its_target(scored_dir, tmp_path):
    root, _ = scored_dir
    shared = tmp_path / "shared" / "new" / "forecast.parquet"
    out = tmp_path / "latest.parquet"
    out.symlink_to(shared)
    assert main(["forecast", "--scores", str(root / "scores.csv"), "--out", str(out)]) == 0
    _still_linked(out, shared)
    assert "expected_revenue" in pd.read_parquet(shared).columns


def test_a_looping_output_link_is_one_line(scored_dir, tmp_path, capsys):
    root, _ = scored_dir
    (tmp_path / "a.csv").symlink_to(tmp_path / "b.csv")
    (tmp_path / "b.csv").symlink_to(tmp_path / "a.csv")
    argv = ["forecast", "--scores", str(root / "scores.csv"), "--out", str(tmp_path / "a.csv")]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path / 'a.csv'}: cannot write: symbolic link loop"


def test_report_index_and_pages_are_written_through_links(scored_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root, _ = scored_dir
    out = tmp_path / "reports"
    argv = ["report", "--scores", str(root / "scores.csv"), "--out", str(out)]
    assert main(argv) == 0
    page = sorted((out / "partners").glob("*.html"))[0]
    shared_page = tmp_path / "shared" / "pages" / page.name
    expected_page = page.read_bytes()
    page.unlink()
    _link(page, shared_page)
    shared_index = tmp_path / "shared" / "index.html"
    (out / "index.html").unlink()
    _link(out / "index.html", shared_index)
    assert main(argv) == 0
    _still_linked(out / "index.html", shared_index)
    _still_linked(page, shared_page)
    assert "<html" in shared_index.read_text("utf-8")
    assert shared_page.read_bytes() == expected_page


def test_monitor_outputs_are_written_through_links(store_config, raw_dir, tmp_path):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"paths": store_config.paths.model_dump()}))
    out = tmp_path / "out"
    shared = tmp_path / "shared" / "monitor.json"
    _link(out / "monitor.json", shared)
    argv = ["monitor", "--as-of", "2026-06-01", "--raw", str(raw_dir), "--out", str(out)]
    assert main([*argv, "--config", str(config)]) in (0, 1)  # 1: an alarm
    _still_linked(out / "monitor.json", shared)
    assert json.loads(shared.read_text())["checks"]
