"""Reports: safe file names, escaping, content from real and hand-built scores, history."""

import json
import re
from html import escape

import numpy as np
import pandas as pd
import pytest

from partnerscore.features.core import PartnerscoreError, write_frame_atomic
from partnerscore.serving.cli import main
from partnerscore.serving.config import AppConfig
from partnerscore.serving.history import ScoreHistory
from partnerscore.serving.report import (
    ReportResult,
    peer_groups,
    read_scores,
    report_filename,
    run_report,
    scatter_svg,
)

# ten features: more than the waterfall's top 8, one not in the registry, one hostile name
FEATURES = (
    "leads_qualified_todate",
    "activities_touchpoints_30d",
    "trainings_certifications_todate",
    "deals_won_amount_todate",
    "deals_open_pipeline_amount",
    "portal_events_30d",
    "feedback_score_mean_todate",
    "age_days",
    "custom_metric_x",
    "<b>evil</b>",
)


def hand_scores(ids, names, as_of="2026-03-01", seed=0):
    """A scores frame with the columns of the scoring contract, built by hand."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    contrib_rev = rng.normal(0, 800, size=(n, len(FEATURES)))
    contrib_eng = rng.normal(0, 0.03, size=(n, len(FEATURES)))
    contrib_rev[:, 8:] = 5000.0  # the unregistered and the hostile feature are top drivers
    rev_base, eng_base = 5000.0, 0.5
    frame = pd.DataFrame(
        {
            "partner_id": list(ids),
            "as_of": pd.Timestamp(as_of),
            "age_days": rng.uniform(20, 400, n).round(),
            "partner_name": list(names),
            "signed_at": pd.Timestamp("2025-01-01"),
            "tier": (["gold", "silver"] * n)[:n],
            "region": "EMEA",
            "industry": "software",
            "partner_type": "msp",
            "pred_revenue": rev_base + contrib_rev.sum(axis=1),
            "pred_engagement": eng_base + contrib_eng.sum(axis=1),
            "score": np.linspace(10, 90, n),
            "score_tier": (["A", "B", "C", "D"] * n)[:n],
            "quadrant": "low_revenue_high_engagement",
            "intervention": "Enable pipeline generation",
            "intervention_detail": "Run joint pipeline planning.",
            "revenue_base": rev_base,
            "engagement_base": eng_base,
        }
    )
    for layer, cols in (("strategic", [7, 8]), ("execution", [1, 2, 5, 6]), ("results", [0, 3, 4])):
        frame[f"revenue_{layer}"] = contrib_rev[:, cols].sum(axis=1)
        frame[f"engagement_{layer}"] = contrib_eng[:, cols].sum(axis=1)
    frame["revenue_strategic"] += contrib_rev[:, 9]
    frame["engagement_strategic"] += contrib_eng[:, 9]
    for i in range(1, 4):
        frame[f"driver_pos_{i}"] = f"Qualified leads: {i} (raises the score by {i}.5 pts)"
        frame[f"driver_neg_{i}"] = "" if i == 3 else f"Response time: {i} h (lowers by 1 pts)"
    for j, name in enumerate(FEATURES):
        frame[f"shap_revenue_{name}"] = contrib_rev[:, j]
        frame[f"shap_engagement_{name}"] = contrib_eng[:, j]
    for name in FEATURES[:7]:
        frame[name] = rng.integers(0, 20, n).astype(float)
    frame["provisional"] = [True] + [False] * (n - 1)
    frame["model_version"] = "7"
    frame["model_config_hash"] = "cafe00model"
    frame["peer_percentile"] = np.linspace(0, 100, n).round(1)
    frame["score_previous"] = np.nan
    frame["score_smoothed"] = frame["score"] - 1
    frame["guardrail_flag"] = [False, True] + [False] * (n - 2)
    frame["anomaly"] = np.arange(n) == 2
    frame["anomaly_reason"] = np.where(
        frame["anomaly"], "deals.amount 9e+12 <is> far above the table", ""
    )
    frame["config_hash"] = "beef00score"
    frame["model_uri"] = "models:/partnerscore@champion"
    return frame


def config_for(tmp_path):
    return AppConfig.model_validate({"paths": {"data_dir": str(tmp_path / "data")}})


def page_of(out, partner_id):
    return (out / "partners" / report_filename(partner_id)).read_text(encoding="utf-8")


def test_filenames_are_safe_and_unique():
    ids = ["../../etc/passwd", "P/1", "P_1", "P 1", "..", "", "株式会社", "a" * 500, "P1", "p1"]
    names = [report_filename(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert len({n.lower() for n in names}) == len(ids)  # case-insensitive file systems too
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9_-]+-[0-9a-f]{10}\.html", name)
        assert len(name) < 80
    assert report_filename("P/1") == report_filename("P/1")


def test_one_report_per_partner_and_index(report_dir, scored_dir):
    root, _ = scored_dir
    scores = read_scores(root / "scores.csv")
    files = sorted(p.name for p in (report_dir / "partners").iterdir())
    assert files == sorted(report_filename(i) for i in scores["partner_id"])
    index = (report_dir / "index.html").read_text(encoding="utf-8")
    data = json.loads(
        re.search(r'id="portfolio-data">(.*?)</script>', index, re.S).group(1)
    )  # the paged table's rows (the page's script builds the links from id and hash)
    assert data["rows"] == len(scores)
    assert sorted(report_filename(i) for i in data["columns"]["id"]) == files
    assert all(
        report_filename(i).endswith(f"-{h}.html")
        for i, h in zip(data["columns"]["id"], data["columns"]["file_hash"], strict=True)
    )
    # self-contained: no external stylesheet, script, image or font
    assert "<style>" in index and "addEventListener" in index
    assert "fetch(" not in index  # data embedded: no request, works from file://
    pages = [(report_dir / "partners" / n).read_text(encoding="utf-8") for n in files[:5]]
    for page in [index, *pages]:
        assert not re.search(r"<(link|script|img|iframe)[^>]+(href|src)=", page)
        assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "https://" not in page
    # summary counts per tier and quadrant add up to the portfolio
    tiers = re.findall(r'<div class="k">Tier [^<]+</div><div class="v">(\d+)</div>', index)
    assert sum(map(int, tiers)) == len(scores)
    # the quadrant chart's counts: the partners in onboarding scope (graduated ones left out)
    in_scope = int((~scores["out_of_scope"].astype(bool)).sum())
    assert 0 < in_scope < len(scores)
    quadrants = re.search(r'<table id="quadrants">(.*?)</table>', index, re.S).group(1)
    counts = re.findall(r'<td class="num">(\d+)</td>', quadrants)
    assert sum(map(int, counts)) == in_scope
    assert f"Charts: {in_scope} partners in onboarding scope" in index
    # a graduated partner's first action is the hand-over, a provisional one's the playbook's
    # provisional action: neither is its quadrant's action
    columns = ["partner_id", "out_of_scope", "provisional", "quadrant_label"]
    for pid, out_of_scope, provisional, label in scores[columns].values:
        card = re.search(
            r'id="quadrant-action"><div class="muted">([^<]*)<', page_of(report_dir, pid)
        )
        scope = (
            "a graduated partner (quadrant "
            if out_of_scope
            else "a provisional partner (quadrant "
            if provisional
            else "the quadrant ("
        )
        assert card.group(1) == f"for {scope}{escape(label)})"


def test_quadrant_actions_and_flags_speak_for_the_whole_batch(scored_dir):
    """Graduated partners (past the trained ages, the playbook's hand-over) no longer decide a
    quadrant's action, and the guardrail card counts the batch, not the partners with pages."""
    from partnerscore.serving.report import portfolio_page

    root, cfg = scored_dir
    scores = read_scores(root / "scores.csv")
    n = len(scores)
    graduated = np.arange(n) % 3 != 0  # two in three: the mode of every quadrant before
    frame = scores.assign(
        out_of_scope=graduated,
        intervention=np.where(graduated, "Graduated: hand over", "Act on " + scores["quadrant"]),
        provisional=False,
        guardrail_flag=np.arange(n) % 5 == 0,
    )
    rows = np.arange(3)  # pages for three partners only (a --tier / --partners subset)
    page = portfolio_page(frame, rows, [f"p{i}.html" for i in range(n)], cfg, subset_note="x")
    table = re.search(r'<table id="quadrants">(.*?)</table>', page, re.S).group(1)
    assert "Graduated" not in table
    for quadrant in frame["quadrant"].unique():
        assert f"Act on {quadrant}" in table
    flags = re.search(r'Guardrail flags</div><div class="v">(\d+)<', page).group(1)
    assert int(flags) == int(frame["guardrail_flag"].sum())


def _money_text(text: str) -> float:
    return float(text.replace("$", "").replace(",", ""))


def test_revenue_by_month_on_the_portfolio_and_partner_pages(report_dir, scored_dir):
    """Monthly totals are the phased forecast's; a page's phases add up to its revenue."""
    from partnerscore.serving.forecast import forecast_table

    root, cfg = scored_dir
    scores = read_scores(root / "scores.csv")
    index = (report_dir / "index.html").read_text(encoding="utf-8")
    block = re.search(r'<table id="monthly-revenue">(.*?)</table>', index, re.S).group(1)
    rows = re.findall(
        r"<tr><td>([A-Z][a-z]{2} \d{4})</td><td class=\"num\">([^<]+)</td>"
        r'<td class="num">([^<]+) – ([^<]+)</td><td class="num">([\d,]+)</td>',
        block,
    )
    table = forecast_table(scores, (), None, 0.8, period="month", phased=True)
    assert [r[0] for r in rows] == [f"{d:%b %Y}" for d in table["period_start"]]
    assert len(rows) in (6, 7)  # a 180-day horizon from one date spans 6 or 7 months
    for r, rec in zip(rows, table.itertuples(), strict=True):
        assert _money_text(r[1]) == round(rec.expected_revenue)
        assert _money_text(r[2]) <= _money_text(r[1]) <= _money_text(r[3])
        assert int(r[4].replace(",", "")) == rec.partners
    in_scope = scores.loc[~scores["out_of_scope"].astype(bool), "pred_revenue"].sum()
    assert sum(_money_text(r[1]) for r in rows) == pytest.approx(in_scope, abs=len(rows))
    # a partner page: its six phases, dated from the scoring date, add up to its revenue
    rec = scores.loc[scores["pred_revenue"].idxmax()]
    page = page_of(report_dir, rec["partner_id"])
    assert "Expected revenue (180 days)" in page
    # its interval at the model's coverage and its predictive median, under the mean
    rng = re.search(
        r'id="revenue-range">80% range (\$[\d,]+) – (\$[\d,]+) · most likely (\$[\d,]+)<', page
    )
    assert _money_text(rng.group(1)) == round(rec["pred_revenue_lo"])
    assert _money_text(rng.group(2)) == round(rec["pred_revenue_hi"])
    assert _money_text(rng.group(3)) == round(rec["pred_revenue_median"])
    phases = re.findall(
        r"<tr><td>(\d+)–(\d+)</td><td>([\d-]+) – ([\d-]+)</td><td class=\"num\">([^<]+)</td>"
        r'<td class="num">(\d+)%</td>',
        re.search(r'<table id="phases">(.*?)</table>', page, re.S).group(1),
    )
    assert [(int(a), int(b)) for a, b, *_ in phases] == [
        (30 * k + 1, 30 * k + 30) for k in range(6)
    ]
    start = pd.Timestamp(rec["as_of"])
    assert phases[0][2] == f"{start:%Y-%m-%d}"
    assert phases[-1][3] == f"{start + pd.Timedelta(days=179):%Y-%m-%d}"
    amounts = [_money_text(p[4]) for p in phases]
    assert sum(amounts) == pytest.approx(rec["pred_revenue"], abs=6)
    for k, amount in enumerate(amounts, start=1):
        assert amount == round(rec[f"pred_revenue_phase_{k}"])
    # scores without phases: no section on the page, a reason on the portfolio
    plain = scores.drop(columns=[c for c in scores if c.startswith("pred_revenue_phase_")])
    write_frame_atomic(plain.head(20), root / "plain.csv")
    out = root / "plain_reports"
    run_report(root / "plain.csv", out, cfg)
    assert 'id="monthly-none">Not available: the scores have no revenue phases' in (
        out / "index.html"
    ).read_text(encoding="utf-8")
    assert 'id="phases"' not in page_of(out, plain["partner_id"].iloc[0])


def test_untrusted_text_is_escaped(report_dir, scored_dir):
    index = (report_dir / "index.html").read_text(encoding="utf-8")
    for raw in ("<script>alert(1)</script>", "<img src=x", "<svg onload", "<b>"):
        assert raw not in index
    # inside the scatter's SVG <title> (every partner charted: these are graduated ones)
    scatter = str(scatter_svg(read_scores(scored_dir[0] / "scores.csv")))
    assert "&lt;svg onload=&#34;window.__pwned=1&#34;&gt;" in scatter
    assert (
        "<title>&#x2068;&lt;script&gt;alert(1)&lt;/script&gt;&#x2069; (../../etc/passwd)</title>"
        in scatter
    )
    # in the scatter's titles quotes cannot break out; in the table's JSON no markup at all
    assert '"><img' not in index and '"><img' not in scatter
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in scatter
    data = re.search(r'id="portfolio-data">(.*?)</script>', index, re.S).group(1)
    assert "<" not in data and ">" not in data and "&" not in data
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in data
    page = page_of(report_dir, "../../etc/passwd")
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    page = page_of(report_dir, "ID with spaces & <b>")
    assert "ID with spaces &amp; &lt;b&gt;" in page
    assert "<b>" not in page
    assert "Ünïcödé &amp; Søns — 株式会社" in page
    page = page_of(report_dir, '"><script>window.__pwned=2</script>')
    assert "<script>" not in page and "&lt;script&gt;window.__pwned=2" in page
    assert not list(report_dir.parent.glob("etc*"))
    assert sorted(p.name for p in report_dir.iterdir()) == ["index.html", "partners"]


def test_report_content_from_real_scores(report_dir, scored_dir):
    root, _ = scored_dir
    scores = read_scores(root / "scores.csv")
    row = scores.iloc[5]
    page = page_of(report_dir, row["partner_id"])
    assert f"{row['score']:,.1f}" in page
    assert row["intervention"] in page and row["intervention_detail"] in page
    assert page.count('class="waterfall"') == 2
    assert 'id="trajectory"' in page  # two scoring runs in history
    assert "2026-01-01" in page and "2026-03-01" in page
    assert 'id="peers"' in page and 'id="layers"' in page
    assert row["driver_pos_1"] in page
    assert f"model version {row['model_version']}" in page
    assert len(page.encode()) < 60_000  # inline SVG, not megabytes


def test_report_content_from_hand_built_scores(tmp_path):
    ids = [f"P{i:03d}" for i in range(12)]
    frame = hand_scores(ids, [f"Partner {i}" for i in range(12)])
    frame["maturity_band"] = "91-180"  # one onboarding band: peers are the segment in that band
    write_frame_atomic(frame, tmp_path / "scores.parquet")
    result = run_report(tmp_path / "scores.parquet", tmp_path / "out", config_for(tmp_path))
    assert result.reports == 12 and result.with_history == 0
    page = page_of(tmp_path / "out", "P000")
    # waterfall: readable labels from the registry, raw column name as fall-back, escaped
    waterfall = re.search(r'<svg class="waterfall".*?</svg>', page, re.S).group(0)
    assert "Qualified leads" in page and "leads_qualified_todate" not in waterfall
    assert "custom_metric_x" in waterfall and "&lt;b&gt;evil&lt;/b&gt;" in waterfall
    assert "<b>evil" not in page
    assert "2 other features" in waterfall  # 10 features: top 8 + the rest
    assert f"${frame.loc[0, 'pred_revenue']:,.0f}" in waterfall
    # scores, flags, layers, drivers, actions, versions
    assert 'id="provisional"' in page and 'id="guardrail"' not in page
    assert 'id="guardrail"' in page_of(tmp_path / "out", "P001")
    assert 'id="anomaly"' not in page  # the input anomaly badge carries its (escaped) reasons
    flagged = page_of(tmp_path / "out", "P002")
    assert 'id="anomaly"' in flagged and "9e+12 &lt;is&gt; far above the table" in flagged
    assert "low revenue high engagement" in page  # no quadrant_label column: derived
    assert page.count("raises the score") == 3 and page.count("lowers by") == 2
    assert "Enable pipeline generation" in page and "Run joint pipeline planning." in page
    assert "model version 7" in page and "cafe00model" in page and "beef00score" in page
    assert 'id="no-history"' in page
    # peers: 6 gold msp and 6 silver msp partners, each group compared with its own median
    assert "(gold msp, days 91-180, 6 partners)" in page
    gold = frame[frame["tier"] == "gold"]
    assert f"{gold['score'].median():,.1f}" in page


def test_trajectory_from_history_stops_at_report_date(tmp_path):
    cfg = config_for(tmp_path)
    ids = ["../x", "P/2", "Q3", "Q4", "Q5", "Q6"]
    history = ScoreHistory(cfg.paths.history_database())
    for k, as_of in enumerate(("2026-01-01", "2026-02-01", "2026-03-01", "2026-04-01")):
        past = hand_scores(ids, ids, as_of=as_of, seed=k)
        past["age_days"] = 100.0 + 31 * k
        past["leads_qualified_todate"] = float(k * 3)
        history.upsert(past)
    current = hand_scores(ids, ids, as_of="2026-03-01", seed=2)
    write_frame_atomic(current, tmp_path / "scores.csv")
    result = run_report(tmp_path / "scores.csv", tmp_path / "out", cfg)
    assert result.with_history == len(ids)
    page = page_of(tmp_path / "out", "P/2")
    table = re.search(r'<table id="trajectory">.*?</table>', page, re.S).group(0)
    assert [d for d in ("2026-01-01", "2026-02-01", "2026-03-01") if d in table] == [
        "2026-01-01",
        "2026-02-01",
        "2026-03-01",
    ]
    assert "2026-04-01" not in page  # never a point after the report's own date
    head = re.findall(r"<th[^>]*>([^<]*)</th>", table)
    cells = [re.findall(r"<td[^>]*>([^<]*)</td>", r) for r in table.split("<tr>")[2:]]
    column = head.index("Qualified leads")
    assert [row[column] for row in cells] == ["0", "3", "6"]
    svg = re.search(r'<svg class="trajectory".*?</svg>', page, re.S).group(0)
    assert svg.count("<polyline") == 3  # score, smoothed score, engagement
    assert "day 100" in svg and "day 162" in svg


def test_csv_ids_stay_text_and_duplicates_keep_latest(tmp_path):
    frame = hand_scores(["007", "1e5", "NA", "null", "007", "x"], ["a", "b", "NA", "d", "e", "f"])
    frame["as_of"] = pd.to_datetime(["2026-01-01"] * 4 + ["2026-02-01", "2026-01-01"])
    write_frame_atomic(frame, tmp_path / "scores.csv")
    scores = read_scores(tmp_path / "scores.csv")
    assert scores["partner_id"].tolist() == ["007", "1e5", "NA", "null", "x"]
    assert scores.set_index("partner_id").loc["007", "partner_name"] == "e"
    out = tmp_path / "out"
    run_report(tmp_path / "scores.csv", out, config_for(tmp_path))
    assert "2026-02-01" in page_of(out, "007")
    assert '<h1><bdi>NA</bdi> <span class="badge">NA</span>' in page_of(out, "NA")


def test_stale_reports_are_removed_and_other_files_kept(tmp_path):
    cfg = config_for(tmp_path)
    out = tmp_path / "out"
    write_frame_atomic(hand_scores(list("ABCDEF"), list("ABCDEF")), tmp_path / "s1.parquet")
    run_report(tmp_path / "s1.parquet", out, cfg)
    (out / "partners" / "notes.txt").write_text("mine")
    write_frame_atomic(hand_scores(list("ABCXYZ"), list("ABCXYZ")), tmp_path / "s2.parquet")
    result = run_report(tmp_path / "s2.parquet", out, cfg)
    assert result.removed_stale == 3 and "removed 3 reports" in result.summary()
    names = {p.name for p in (out / "partners").iterdir()}
    assert names == {report_filename(i) for i in "ABCXYZ"} | {"notes.txt"}


def test_peer_groups_fall_back_like_peer_percentile():
    frame = pd.DataFrame(
        {
            "tier": ["gold"] * 5 + ["silver"] * 6 + ["bronze"],
            "partner_type": ["msp"] * 5 + ["msp", "msp", "si", "si", "si", "si"] + ["msp"],
        }
    )
    key, name = peer_groups(frame)
    assert list(name[:5]) == ["gold msp"] * 5  # 5 peers: own segment
    assert list(name[5:11]) == ["tier silver"] * 6  # both silver segments under 5: the tier
    assert name[11] == "all partners"
    assert len(set(key)) == 3


def test_report_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("partner_id,score\nP1,3\n")
    with pytest.raises(PartnerscoreError, match="missing column 'as_of'"):
        run_report(bad, tmp_path / "out", AppConfig())
    empty = hand_scores(list("AB"), list("ab")).iloc[:0]
    write_frame_atomic(empty, tmp_path / "empty.parquet")
    with pytest.raises(PartnerscoreError, match="no scored partners"):
        run_report(tmp_path / "empty.parquet", tmp_path / "out", AppConfig())
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(PartnerscoreError, match="broken.parquet: cannot read file"):
        run_report(broken, tmp_path / "out", AppConfig())
    assert main(["report", "--scores", str(tmp_path / "none.csv"), "--out", str(tmp_path)]) == 2
    assert "file not found" in capsys.readouterr().err
    # --partners and --tier together: the listed partners in the tier; when none is, the
    # error said the tier was empty although other partners were in it
    write_frame_atomic(hand_scores(list("ABCDEF"), list("ABCDEF")), tmp_path / "s.parquet")
    both = ["report", "--scores", str(tmp_path / "s.parquet"), "--out", str(tmp_path / "o")]
    assert main([*both, "--partners", "A,B", "--tier", "A"]) == 0  # A is in tier A
    assert main([*both, "--partners", "B,C", "--tier", "A"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --tier A: none of the --partners is in this tier (it has 2 partners)"
    assert len(list((tmp_path / "o" / "partners").iterdir())) == 1


@pytest.mark.parametrize(
    ("other", "said"),
    [
        # the second offset ended in 'unexpected ValueError: Mixed timezones detected' (exit 1)
        ("2026-03-01T00:00:00+00:00", "has another time zone than row 1 "
         "('2026-03-01T00:00:00+02:00') (partner 'C')"),
        # so did a value that is no date at all (to_datetime without errors='coerce')
        ("soon", "is not a date"),
        # an empty as_of sorted last: the undated row was kept as the partner's latest
        (None, "is empty"),
        # a date without an offset among offset dates was 'is not a date' (made NaT)
        ("2026-03-01", "has no UTC offset and row 1 ('2026-03-01T00:00:00+02:00') has one "
         "(partner 'C')"),
    ],
)  # fmt: skip
def test_report_cli_names_an_as_of_it_cannot_read(tmp_path, capsys, monkeypatch, other, said):
    monkeypatch.chdir(tmp_path)
    scores = hand_scores(list("ABCD"), list("ABCD")).assign(as_of="2026-03-01T00:00:00+02:00")
    scores.loc[2, "as_of"] = other
    scores.to_csv(tmp_path / "s.csv", index=False)
    args = ["report", "--scores", str(tmp_path / "s.csv"), "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unexpected" not in err
    value = "" if other is None else f" '{other}'"
    assert f"s.csv: column 'as_of' row 3:{value} {said}" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("column", [[True, False, True, False], [True, None, None, None]])
def test_report_cli_says_a_true_false_as_of_is_no_date(tmp_path, capsys, column):
    """A CSV as_of of True/False cells is read as booleans: it was "'True' is not a date (a
    number; ...)"; with an empty cell, as text: it was "'True' is not a date" alone."""
    scores = hand_scores(list("ABCD"), list("ABCD")).assign(as_of=column)
    scores.to_csv(tmp_path / "s.csv", index=False)
    args = ["report", "--scores", str(tmp_path / "s.csv"), "--out", str(tmp_path / "r")]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --scores {tmp_path / 's.csv'}: column 'as_of' row 1: 'True' is not a date "
        "(true/false; give dates as YYYY-MM-DD)"
    )


def test_report_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default config's history lives under ./data
    write_frame_atomic(hand_scores(list("ABCDEF"), list("ABCDEF")), tmp_path / "s.parquet")
    args = ["report", "--scores", str(tmp_path / "s.parquet"), "--out", str(tmp_path / "r")]
    assert main(args) == 0
    assert "wrote 6 partner reports" in capsys.readouterr().out
    assert (tmp_path / "r" / "index.html").exists()


def test_summary_counts_one_report_in_the_singular(tmp_path):
    # `report --partners P01550` said "wrote 1 partner reports"
    one = ReportResult(tmp_path, tmp_path / "index.html", 1, 0.5, 2048.0, removed_stale=1)
    text = one.summary()
    assert text.startswith("wrote 1 partner report and the portfolio page in 0.5 s with 1 worker")
    assert "removed 1 report of partners no longer scored" in text
    two = ReportResult(tmp_path, tmp_path / "index.html", 2, 0.5, 2048.0, removed_stale=3)
    assert two.summary().startswith("wrote 2 partner reports and the portfolio page")
    assert "removed 3 reports of partners" in two.summary()


def test_portfolio_header_says_when_per_partner_cut_offs_were_scored(tmp_path):
    """A file of per-partner cut-offs (score --at-age 90) read 'scored as of' its latest date
    alone, as if every partner had been scored then."""
    ids = [f"P{i:03d}" for i in range(6)]
    cfg = config_for(tmp_path)
    one = hand_scores(ids, ids)
    write_frame_atomic(one, tmp_path / "one.csv")
    run_report(tmp_path / "one.csv", tmp_path / "a", cfg)
    index = (tmp_path / "a" / "index.html").read_text(encoding="utf-8")
    assert "6 partners scored as of 2026-03-01 ·" in index
    milestones = one.assign(
        as_of=pd.to_datetime(["2026-01-05 09:00", "2026-02-01 09:00"] * 3), age_days=90.0
    )
    write_frame_atomic(milestones, tmp_path / "at_age.csv")
    run_report(tmp_path / "at_age.csv", tmp_path / "b", cfg)
    index = (tmp_path / "b" / "index.html").read_text(encoding="utf-8")
    assert "scored at onboarding day 90, as of 2026-01-05 to 2026-02-01 (2 dates) ·" in index
    write_frame_atomic(milestones.assign(age_days=[90.0, 120.0] * 3), tmp_path / "mixed.csv")
    run_report(tmp_path / "mixed.csv", tmp_path / "c", cfg)
    index = (tmp_path / "c" / "index.html").read_text(encoding="utf-8")
    assert "6 partners scored as of 2026-01-05 to 2026-02-01 (2 dates) ·" in index


def _two_versions_of_one_date(tmp_path):
    """One file holding two batches of one date: model version 1's, then version 2's."""
    ids = list("ABCD")
    v1 = hand_scores(ids, [f"{p} of v1" for p in ids]).assign(model_version="1")
    v2 = hand_scores(ids, [f"{p} of v2" for p in ids], seed=1).assign(model_version="2")
    v2["score"] = [12.5, 37.5, 62.5, 87.5]
    path = tmp_path / "s.csv"
    write_frame_atomic(pd.concat([v1, v2], ignore_index=True), path)
    return path, v2


def test_report_refuses_a_partner_scored_twice_at_its_latest_date(tmp_path, capsys):
    """Two batches of one date (v1 and v2) in one file: the report kept each partner's last row,
    silently, whichever version scored it. It refuses, as forecast does, naming both rows and
    versions; --model-version reports one version's rows."""
    path, v2 = _two_versions_of_one_date(tmp_path)
    args = ["report", "--scores", str(path), "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: --scores {path}: partner 'A' is scored in rows 1 and 5, both as of 2026-03-01 by model "
        "versions 1 and 2: a report shows one score per partner, the latest; pick one with "
        "--model-version, or use one batch per file"
    )
    assert not (tmp_path / "r").exists()
    with pytest.raises(PartnerscoreError) as got:  # what-if and experiment read it so
        read_scores(path)
    assert str(got.value).endswith(
        "by model versions 1 and 2: a report shows one score per "
        "partner, the latest; use one batch per file"
    )

    assert main([*args, "--model-version", "2"]) == 0
    assert "rows of model version 2 only" in capsys.readouterr().out
    assert "A of v2" in page_of(tmp_path / "r", "A") and "A of v1" not in page_of(
        tmp_path / "r", "A"
    )
    got = read_scores(path, model_version="2")
    assert got["partner_name"].tolist() == [f"{p} of v2" for p in "ABCD"]
    assert got["score"].tolist() == v2["score"].tolist()

    assert main([*args, "--model-version", "9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "s.csv: --model-version 9: no row of this model version (the file holds versions 1, 2)"
    )


def test_report_names_the_versions_of_a_partner_missing_from_model_version(tmp_path, capsys):
    """--model-version 2 with --partners C, whose rows are all version 1's (or 1's and 3's), said
    "'C' is not in the scores file", though the file holds C; --partners-file the same."""
    v1 = hand_scores(list("ABCD"), list("abcd")).assign(model_version="1")
    v2 = hand_scores(list("AB"), list("ab"), seed=1).assign(model_version="2")
    v3 = hand_scores(list("DE"), list("de"), as_of="2026-02-01").assign(model_version="3")
    path = tmp_path / "s.csv"
    write_frame_atomic(pd.concat([v1, v2, v3], ignore_index=True), path)
    args = ["report", "--scores", str(path), "--out", str(tmp_path / "r"), "--model-version", "2"]
    assert main([*args, "--partners", "A,C"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --partners: 'C' has rows only for model version 1 in the scores file, not for "
        "--model-version 2"
    )
    assert main([*args, "--partners", "D"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --partners: 'D' has rows only for model versions 1, 3 in the scores file, not "
        "for --model-version 2"
    )
    pd.DataFrame({"partner_id": ["A", "C"]}).to_csv(tmp_path / "ids.csv", index=False)
    assert main([*args, "--partners-file", str(tmp_path / "ids.csv")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --partners-file {tmp_path / 'ids.csv'}: column 'partner_id' row 2: 'C' has rows only for "
        "model version 1 in the scores file, not for --model-version 2"
    )
    # a partner the file does not hold at all is still said so
    assert main([*args, "--partners", "Z"]) == 2
    assert capsys.readouterr().err.strip() == "error: --partners: 'Z' is not in the scores file"
    assert not (tmp_path / "r").exists()
    assert main([*args, "--partners", "A,B"]) == 0


def test_report_names_one_versions_batch_given_twice(tmp_path):
    """The same version's batch twice (or a file without model_version): both rows, no hint
    to pick a version."""
    one = hand_scores(list("ABC"), list("abc"))
    write_frame_atomic(pd.concat([one, one], ignore_index=True), tmp_path / "s.parquet")
    with pytest.raises(PartnerscoreError) as got:
        read_scores(tmp_path / "s.parquet")
    assert str(got.value).endswith(
        "partner 'A' is scored in rows 1 and 4, both as of 2026-03-01 and by model version 7: "
        "a report shows one score per partner, the latest; use one batch per file"
    )
    write_frame_atomic(
        pd.concat([one, one], ignore_index=True).drop(columns="model_version"),
        tmp_path / "s.csv",
    )
    with pytest.raises(PartnerscoreError, match=r"rows 1 and 4, both as of 2026-03-01: a report"):
        read_scores(tmp_path / "s.csv")
    # rows of an earlier date are not the page's: the latest is kept, as before
    older = one.assign(as_of=pd.Timestamp("2026-02-01"), model_version="6")
    write_frame_atomic(pd.concat([one, older], ignore_index=True), tmp_path / "ok.csv")
    assert read_scores(tmp_path / "ok.csv")["model_version"].tolist() == ["7"] * 3


def test_report_partners_file_selects_any_id(tmp_path, capsys):
    """--partners splits on commas and trims: an id holding a comma (or padded) could not be
    selected. --partners-file takes a partner_id column, each cell as written."""
    ids = ["ACME, Inc.", " padded", "B", "C", "D", "E"]
    write_frame_atomic(hand_scores(ids, list("abcdef")), tmp_path / "s.parquet")
    pd.DataFrame({"partner_id": ["ACME, Inc.", " padded"]}).to_csv(
        tmp_path / "ids.csv", index=False
    )
    out = tmp_path / "r"
    args = ["report", "--scores", str(tmp_path / "s.parquet"), "--out", str(out)]
    assert main([*args, "--partners-file", str(tmp_path / "ids.csv")]) == 0
    assert "wrote 2 partner reports" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "partners").iterdir()) == sorted(
        report_filename(p) for p in ids[:2]
    )
    # with --partners: either's
    assert main([*args, "--partners-file", str(tmp_path / "ids.csv"), "--partners", "B,C"]) == 0
    assert "wrote 4 partner reports" in capsys.readouterr().out
    # an id the scores do not hold: file, column and row
    pd.DataFrame({"partner_id": ["B", "ACME"]}).to_csv(tmp_path / "bad.csv", index=False)
    assert main([*args, "--partners-file", str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"error: --partners-file {tmp_path / 'bad.csv'}: column 'partner_id' row 2: 'ACME' is not in the scores file"
    )
    pd.DataFrame({"id": ["B"]}).to_csv(tmp_path / "nohead.csv", index=False)
    assert main([*args, "--partners-file", str(tmp_path / "nohead.csv")]) == 2
    assert "nohead.csv: missing column 'partner_id'" in capsys.readouterr().err


def test_a_score_held_at_the_ends_of_the_scale_says_so(tmp_path):
    # the demo's clipped partners read "segment adjustment none (factor 1): -1.5 points"
    ids = [f"P{i:03d}" for i in range(6)]
    frame = hand_scores(ids, ids)
    frame["score_adjustment_factor"] = 1.0
    frame["score_adjustment"] = 0.0
    frame.loc[0, ["score", "score_adjustment"]] = [100.0, -1.5]  # 101.5 weighted: capped
    frame.loc[1, ["score", "score_adjustment"]] = [0.0, 2.0]  # -2.0 weighted: floored
    frame.loc[2, ["score", "score_adjustment_factor", "score_adjustment"]] = [99.0, 1.1, 9.0]
    write_frame_atomic(frame, tmp_path / "scores.parquet")
    run_report(tmp_path / "scores.parquet", tmp_path / "out", config_for(tmp_path))

    def policy(pid):
        text = re.search(r'<p class="muted" id="policy">(.*?)</p>', page_of(tmp_path / "out", pid))
        return re.sub(r"<[^>]+>", "", text.group(1))

    assert ", then held at 100, the top of the scale: -1.5 points." in policy("P000")
    assert ", then held at 0, the bottom of the scale: +2.0 points." in policy("P001")
    assert "held at" not in policy("P002") and "held at" not in policy("P003")
    assert_template_agrees(tmp_path / "scores.parquet", config_for(tmp_path))


def assert_template_agrees(path, cfg):
    """The renderer's pages equal the template's (the page's readable definition)."""
    from partnerscore.serving import report_pages as rp
    from partnerscore.serving.report import _environment

    scores = read_scores(path)
    files = [report_filename(p) for p in scores["partner_id"]]
    keep = np.ones(len(scores), dtype=bool)
    plan = rp.plan_pages(scores, keep, files, cfg, css="")
    try:
        batch = rp.chunk_batch(plan, 0, len(plan))
        template = _environment().get_template("partner.html")
        for j in range(len(batch)):
            assert rp.PageRenderer(batch)(j) == template.render(rp.page_context(batch, j))
    finally:
        rp.close_history()


def test_a_tier_decided_from_the_smoothed_score_says_so(tmp_path):
    # 43 of the demo's 2,000 pages read "46.8 · tier B · smoothed 54.3" under thresholds
    # putting 46.8 in C, with nothing saying that the tier follows the smoothed score
    ids = [f"P{i:03d}" for i in range(6)]
    frame = hand_scores(ids, ids)
    frame["score_tier_raw"] = frame["score_tier"]
    frame["tier_held_reason"] = ""
    frame["override_tier"] = ""
    frame.loc[0, ["score", "score_smoothed", "score_tier", "score_tier_raw"]] = [
        46.8,
        54.3,
        "B",
        "C",
    ]
    frame.loc[1, ["score_tier", "score_tier_raw", "tier_held_reason"]] = [
        "B",
        "C",
        "guardrail: held",
    ]
    frame.loc[2, ["score_tier", "score_tier_raw", "override_tier"]] = ["A", "C", "A"]
    write_frame_atomic(frame, tmp_path / "scores.parquet")
    run_report(tmp_path / "scores.parquet", tmp_path / "out", config_for(tmp_path))
    basis = (
        'id="tier-basis">tier from the smoothed score 54.3; this batch&#39;s score alone is tier C<'
    )
    assert basis in page_of(tmp_path / "out", "P000")
    for pid in ("P001", "P002", "P003"):  # a held reason or an override says why; tiers agree
        assert 'id="tier-basis"' not in page_of(tmp_path / "out", pid)
    assert_template_agrees(tmp_path / "scores.parquet", config_for(tmp_path))


def test_the_shipped_playbook_speaks_to_account_owners_not_in_config_keys():
    # the graduated action read "(policy.scope_tolerance_days beyond the oldest trained age)"
    # on 1,549 of the demo's 2,000 pages
    from partnerscore.models.config import PolicyConfig
    from partnerscore.models.policy import load_playbook

    book = load_playbook(PolicyConfig())
    entries = [*book["quadrants"].values(), *book["tiers"].values()]
    entries += [book[k] for k in ("provisional", "graduated") if k in book]
    texts = [str(e.get(k, "")) for e in entries for k in ("title", "detail", "label", "owner")]
    assert len(texts) > 20
    for text in texts:
        assert not re.search(r"\b[a-z]+_[a-z_]+\b|\bpolicy\.", text), text


def test_categories_the_model_never_saw_are_named_on_the_page(tmp_path):
    # `score --features` lists them per row in unseen_categories; the page showed the segment
    # ("aerospace") with nothing saying the model scored it as unknown
    ids = [f"P{i:03d}" for i in range(6)]
    frame = hand_scores(ids, ids)
    frame["unseen_categories"] = ""
    frame.loc[0, "unseen_categories"] = "industry=aero<space>; region=MEA"
    write_frame_atomic(frame, tmp_path / "scores.parquet")
    run_report(tmp_path / "scores.parquet", tmp_path / "out", config_for(tmp_path))
    said = (
        '<div class="held" id="unseen">Categories the model never saw, scored as unknown: '
        "industry=aero&lt;space&gt;; region=MEA</div>"
    )
    assert said in page_of(tmp_path / "out", "P000")
    assert 'id="unseen"' not in page_of(tmp_path / "out", "P001")
    assert_template_agrees(tmp_path / "scores.parquet", config_for(tmp_path))


def test_a_provisional_partners_action_is_not_said_to_be_the_quadrants(tmp_path):
    # provisional partners get the playbook's provisional action ("Complete onboarding
    # first"), which the page introduced as "for the quadrant (Dormant)" (49 demo pages)
    ids = [f"P{i:03d}" for i in range(6)]
    frame = hand_scores(ids, ids)
    assert frame["provisional"].iloc[0] and not frame["provisional"].iloc[1:].any()
    frame.loc[0, "intervention"] = "Complete onboarding first"  # as scoring gives it
    write_frame_atomic(frame, tmp_path / "scores.parquet")
    run_report(tmp_path / "scores.parquet", tmp_path / "out", config_for(tmp_path))
    scope = re.compile(r'id="quadrant-action"><div class="muted">([^<]*)</div>')
    assert (
        scope.search(page_of(tmp_path / "out", "P000"))
        .group(1)
        .startswith("for a provisional partner (quadrant ")
    )
    assert scope.search(page_of(tmp_path / "out", "P001")).group(1).startswith("for the quadrant (")
    assert_template_agrees(tmp_path / "scores.parquet", config_for(tmp_path))


def test_tier_ranges_say_which_tier_holds_the_boundary():
    """Ranges read "75-100" and "50-75": 75 belonged to both. A tier holds its lower bound
    (models.policy.score_tier); the lowest tier holds every score under the next bound."""
    from partnerscore.models.config import PolicyConfig
    from partnerscore.models.policy import score_tier
    from partnerscore.serving.report import tier_thresholds

    policy = PolicyConfig()
    ranges = [(t["name"], t["range"]) for t in tier_thresholds(policy)]
    assert ranges == [("A", "75-100"), ("B", "50 to under 75"), ("C", "25 to under 50"),
                      ("D", "0 to under 25")]  # fmt: skip
    assert score_tier(np.array([75.0, 74.99, 50.0, 25.0, 0.0]), policy).tolist() == [
        "A", "B", "B", "C", "D"
    ]  # fmt: skip
    two = PolicyConfig(tier_cutoffs={"A": 60.0, "B": 20.0})
    assert [t["range"] for t in tier_thresholds(two)] == ["60-100", "0 to under 60"]
    assert score_tier(np.array([10.0, 60.0]), two).tolist() == ["B", "A"]


def test_an_interrupted_run_leaves_no_index_of_the_previous_batch(
    scored_dir, tmp_path, monkeypatch
):
    """A report run stopped midway (SIGTERM, Ctrl-C) replaced some partner pages and left the
    previous run's index.html over them: a month's portfolio page linking to pages of two
    batches (operator run: 752 of 3,000 pages of July under June's index, exit 143). Until the
    portfolio page is written, index.html now says the report is incomplete."""
    from partnerscore.serving import report_pages as rp

    root, cfg = scored_dir
    out = tmp_path / "reports"
    run_report(root / "a.parquet", out, cfg, workers=1)
    previous = (out / "index.html").read_text()
    real = rp.render_pages

    def stopped_midway(plan, workers, meanwhile=None):
        pages = real(plan, workers, meanwhile)
        yield next(pages)
        raise KeyboardInterrupt

    monkeypatch.setattr(rp, "render_pages", stopped_midway)
    with pytest.raises(KeyboardInterrupt):
        run_report(root / "scores.csv", out, cfg, workers=1)
    left = (out / "index.html").read_text()
    assert left != previous and "Report incomplete" in left and "scores.csv" in left
    assert "run was interrupted" in left
    monkeypatch.setattr(rp, "render_pages", real)
    run_report(root / "scores.csv", out, cfg, workers=1)
    assert "Report incomplete" not in (out / "index.html").read_text()


def test_a_partner_without_a_score_has_no_tier_in_report_forecast_and_whatif(
    scored_dir, tmp_path, capsys
):
    """A scores row whose score and tiers are missing (the policy's `score_tier(NaN)` gave the
    best tier, A, until 2026-12-06; now no tier): `whatif --policy` crashed on it ("unexpected
    TypeError", exit 70: a missing tier sorted against tier names), and the portfolio page
    counted it as "Tier " (an empty name) with an empty filter option. Each caller now says
    it: the page `tier –`, the portfolio a "No tier (no score)" count, the forecast by
    score_tier its `missing` segment, the what-if its `missing` tier."""
    from partnerscore.features.core import read_frame

    root, _ = scored_dir
    frame = read_frame(root / "scores.csv")
    row = int(np.flatnonzero(frame["score_tier"].to_numpy(dtype=object) == "A")[0])
    pid = frame.loc[row, "partner_id"]
    frame.loc[row, ["score", "score_smoothed", "score_base"]] = np.nan
    frame.loc[row, ["score_tier", "score_tier_raw", "score_tier_candidate"]] = np.nan
    frame.loc[row, ["tier_action", "tier_action_detail", "tier_action_owner"]] = ""
    scores = tmp_path / "scores.parquet"
    write_frame_atomic(frame, scores)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"policy": {"revenue_weight": 0.6}}))

    assert main(["report", "--scores", str(scores), "--out", str(tmp_path / "r")]) == 0
    page = next((tmp_path / "r" / "partners").glob(f"{pid}-*.html")).read_text("utf-8")
    assert '<strong id="tier">–</strong>' in page
    index = (tmp_path / "r" / "index.html").read_text("utf-8")
    assert '<div class="k">Tier </div>' not in index and '<option value=""></option>' not in index
    assert '<div class="k">No tier (no score)</div><div class="v">1</div>' in index

    out = tmp_path / "forecast.csv"
    assert main(["forecast", "--scores", str(scores), "--by", "score_tier", "--out", str(out)]) == 0
    segments = read_frame(out).set_index("score_tier")
    assert segments.loc["missing", "partners"] == 1
    assert segments.loc["missing", "expected_revenue"] == pytest.approx(
        frame.loc[row, "pred_revenue"]
    )

    capsys.readouterr()
    assert main(["--json", "whatif", "--policy", str(policy), "--scores", str(scores)]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert re.search(r"^ +missing( +0)+ +1$", summary, re.M), summary  # missing -> missing
    assert "    missing: $" in summary


def test_a_partner_without_a_quadrant_reads_no_prediction_on_its_page(scored_dir, tmp_path):
    """A scores row whose quadrant is missing (``models.policy.quadrant`` gives none for a
    missing prediction; it read low/low, "Dormant", until 2026-12-06): the page showed an
    empty quadrant card and "for the quadrant ()" above an empty action. Now "–" and the
    action card says the model gave no prediction."""
    from partnerscore.features.core import read_frame

    root, _ = scored_dir
    frame = read_frame(root / "scores.csv")
    own = ~frame["out_of_scope"].astype(bool) & ~frame["provisional"].astype(bool)
    row = int(np.flatnonzero(own.to_numpy())[0])
    pid = frame.loc[row, "partner_id"]
    cols = ["quadrant", "quadrant_label", "intervention", "intervention_detail"]
    frame[cols] = frame[cols].astype(object)
    frame.loc[row, cols] = None
    scores = tmp_path / "scores.parquet"
    write_frame_atomic(frame, scores)
    assert main(["report", "--scores", str(scores), "--out", str(tmp_path / "r")]) == 0
    page = next((tmp_path / "r" / "partners").glob(f"{pid}-*.html")).read_text("utf-8")
    assert '<span class="swatch" style="background:#555555"></span>–</div>' in page
    assert "no quadrant: the model gave no prediction for this partner" in page
    assert "for the quadrant ()" not in page
