"""The fast report path against its per-partner twin; workers; the portfolio page's data."""

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import die_by_sigkill, no_hang, sibling

from partnerscore.features.core import write_frame_atomic
from partnerscore.serving import report_pages as rp
from partnerscore.serving.cli import main
from partnerscore.serving.config import AppConfig
from partnerscore.serving.history import ScoreHistory
from partnerscore.serving.report import (
    _text,
    portfolio_page,
    read_scores,
    report_filename,
    run_report,
)

ref = sibling(__file__, "report_reference")
COMPARED = (
    "horizon",
    "revenue_range",
    "phases",
    "peers",
    "peer_label",
    "peer_n",
    "drivers_pos",
    "drivers_neg",
    "changes",
    "trajectory_svg",
    "trajectory_head",
    "trajectory_rows",
)


def assert_pages_match_reference(frame, config, keep=None, every=1):
    """Every selected page's numbers (every ``every``-th page) equal the reference's."""
    keep = np.ones(len(frame), dtype=bool) if keep is None else keep
    files = [report_filename(p) for p in frame["partner_id"]]
    batch = rp.build_batch(frame, keep, files, config)
    if "maturity_band" in frame:
        band = [_text(v) for v in frame["maturity_band"]]
    else:
        from partnerscore.models.policy import maturity_band

        band = [_text(v) for v in maturity_band(frame["age_days"], config.policy)[0]]
    history = ref.history_rows(config.paths.history_database(), frame)
    for j, i in enumerate(np.flatnonzero(keep).tolist()):
        if j % every:
            continue
        fast = rp.page_context(batch, j)
        slow = ref.reference_page(frame, band, history, i, config)
        for key in COMPARED:
            assert fast[key] == slow[key], (frame["partner_id"].iloc[i], key)
    return batch


def test_fast_pages_match_the_reference_on_a_scored_program(scored_dir):
    root, cfg = scored_dir
    frame = read_scores(root / "scores.csv")
    batch = assert_pages_match_reference(frame, cfg, every=12)  # the reference is slow
    assert sum(e - s >= 2 for s, e in batch.history.spans) > 300  # scored twice
    # and on a subset: peers still from the whole batch, history only for the selected
    keep = np.zeros(len(frame), dtype=bool)
    keep[[3, 17, 250]] = True
    assert_pages_match_reference(frame, cfg, keep)


# "gold msp" + "si" and "gold" + "msp si" read alike: group keys must still tell them apart
TIERS = ("gold", "silver", "", "gold msp")
TYPES = ("msp", "si", "", "msp si")
BANDS = ("0-45", "46-90", "")
METRICS = ("leads_qualified_todate", "trainings_certifications_todate", "age_days")
number = st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False), st.integers(0, 30))


@st.composite
def programs(draw):
    """A batch of 2-14 partners (tiers, types, bands, missing values) and 0-3 earlier batches."""
    n = draw(st.integers(2, 14))
    pick = lambda options: draw(st.lists(st.sampled_from(options), min_size=n, max_size=n))  # noqa: E731
    cells = lambda: draw(st.lists(number, min_size=n, max_size=n))  # noqa: E731
    frame = pd.DataFrame(
        {
            "partner_id": [f"P{i}" for i in range(n)],
            "partner_name": [f"name {i}" for i in range(n)],
            "as_of": pd.Timestamp("2026-03-01"),
            "tier": pick(TIERS),
            "region": "EMEA",
            "industry": "software",
            "partner_type": pick(TYPES),
            "maturity_band": pick(BANDS),
            "score": [float(x) for x in draw(st.lists(st.floats(0, 100), min_size=n, max_size=n))],
            "score_tier": pick(("A", "B", "C")),
            "pred_revenue": [v if v is not None else np.nan for v in cells()],
            "pred_engagement": draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)),
            "quadrant": "low_revenue_high_engagement",
            "quadrant_label": "low revenue high engagement",
            "intervention": "Enable",
            "intervention_detail": "Do it.",
        }
    )
    for m in METRICS:
        frame[m] = [np.nan if v is None else float(v) for v in cells()]
    frame["driver_pos_1"] = [
        "Qualified leads: 3 (raises)" if draw(st.booleans()) else "" for _ in range(n)
    ]
    frame["driver_neg_1"] = ["Days since signing: 9 (lowers)"] * n
    # revenue phases: none, or k of them (extreme, zero or missing amounts), with or without the
    # model's horizon and phase length on the rows (and sometimes a layout they do not fit)
    k = draw(st.sampled_from([0, 1, 3, 6]))
    amount = st.one_of(st.none(), st.just(0.0), st.floats(0, 1e12, allow_nan=False))
    for phase in range(1, k + 1):
        cells_k = draw(st.lists(amount, min_size=n, max_size=n))
        frame[f"pred_revenue_phase_{phase}"] = [np.nan if v is None else v for v in cells_k]
    if k and draw(st.booleans()):
        frame["revenue_horizon_days"] = draw(st.sampled_from([90, 180, 181, 0, -5, np.nan, 1e9]))
        frame["revenue_phase_days"] = draw(st.sampled_from([30, 31, 60, 90, 0, -1, np.nan]))
    if draw(st.booleans()):  # revenue intervals: missing, extreme, or a nonsense coverage
        frame["pred_revenue_lo"] = [np.nan if v is None else v for v in cells()]
        frame["pred_revenue_hi"] = draw(st.lists(amount, min_size=n, max_size=n))
        frame["pred_revenue_hi"] = frame["pred_revenue_hi"].astype(float)
        frame["pred_revenue_median"] = [np.nan if v is None else v for v in cells()]
        frame["revenue_interval_coverage"] = draw(st.sampled_from([0.8, 0.9, 0.0, 1.0, np.nan]))
    earlier = []
    for k in range(draw(st.integers(0, 3))):
        past = frame.copy()
        past["as_of"] = pd.Timestamp("2025-12-01") + pd.Timedelta(days=30 * k)
        past["score"] = draw(st.lists(st.floats(0, 100), min_size=n, max_size=n))
        for m in METRICS:
            past[m] = [np.nan if v is None else float(v) for v in cells()]
        if draw(st.booleans()):
            past = past.iloc[: draw(st.integers(0, n))]
        earlier.append(past)
    if earlier and draw(st.booleans()):  # a later batch: never shown on this batch's pages
        later = frame.copy()
        later["as_of"] = pd.Timestamp("2026-04-01")
        earlier.append(later)
    return frame, earlier


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_fast_pages_match_the_reference_on_generated_batches(program):
    frame, earlier = program
    with tempfile.TemporaryDirectory() as tmp:
        cfg = AppConfig.model_validate({"paths": {"data_dir": tmp}})
        store = ScoreHistory(cfg.paths.history_database())
        for past in earlier:
            store.upsert(past)
        path = Path(tmp) / "scores.parquet"
        write_frame_atomic(frame, path)
        assert_pages_match_reference(read_scores(path), cfg)


def test_pages_are_identical_with_one_and_two_workers(scored_dir, tmp_path):
    root, cfg = scored_dir
    one = run_report(root / "scores.csv", tmp_path / "one", cfg, workers=1)
    two = run_report(root / "scores.csv", tmp_path / "two", cfg, workers=2)
    assert one.workers == 1 and two.workers == 2 and one.reports == two.reports > 300
    names = sorted(p.name for p in (tmp_path / "one" / "partners").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two" / "partners").iterdir())
    for name in names:
        a = (tmp_path / "one" / "partners" / name).read_bytes()
        assert a == (tmp_path / "two" / "partners" / name).read_bytes(), name
    assert (tmp_path / "one" / "index.html").read_bytes() == (
        tmp_path / "two" / "index.html"
    ).read_bytes()
    assert not list((tmp_path / "two" / "partners").glob(".*.tmp"))


def portfolio_json(index_html: str) -> dict:
    block = re.search(
        r'<script type="application/json" id="portfolio-data">(.*?)</script>', index_html, re.S
    )
    return json.loads(block.group(1))


def test_portfolio_data_describes_every_listed_partner(report_dir, scored_dir):
    root, _ = scored_dir
    scores = read_scores(root / "scores.csv")
    data = portfolio_json((report_dir / "index.html").read_text(encoding="utf-8"))
    assert data["format"] == "partnerscore-portfolio/1" and data["rows"] == len(scores)
    cols, cats = data["columns"], data["categories"]
    assert set(cols) == {"id", "name", "file_hash", "score", "revenue", "engagement", "peer",
                         "flags", *rp.PORTFOLIO_CATEGORIES}  # fmt: skip
    assert all(len(v) == len(scores) for v in cols.values())
    assert cols["id"] == scores["partner_id"].tolist()  # hostile ids round-trip exactly
    assert cols["name"] == scores["partner_name"].tolist()
    for pid, digest in zip(cols["id"], cols["file_hash"], strict=True):
        assert report_filename(pid).endswith(f"-{digest}.html")
    assert cols["score"] == [round(v, 1) for v in scores["score"]]
    assert cols["revenue"] == [round(v) for v in scores["pred_revenue"]]
    assert [cats["score_tier"][c] for c in cols["score_tier"]] == scores["score_tier"].tolist()
    assert [cats["action"][c] for c in cols["action"]] == scores["intervention"].tolist()
    assert [cats["quadrant"][c] for c in cols["quadrant"]] == scores["quadrant"].tolist()


def synthetic_scores(n: int, seed: int = 0) -> pd.DataFrame:
    """A scores frame with the portfolio page's columns (ids and names as long as real ones)."""
    rng = np.random.default_rng(seed)
    quadrants = np.array(["high_revenue_high_engagement", "high_revenue_low_engagement",
                          "low_revenue_high_engagement", "low_revenue_low_engagement"])  # fmt: skip
    q = quadrants[rng.integers(0, 4, n)]
    words = np.array(["Silverline", "Keystone", "Mosaic", "Harbor", "Summit", "Northwind"])
    return pd.DataFrame(
        {
            "partner_id": [f"P{i:07d}" for i in range(n)],
            "partner_name": [
                f"{a} {b} Networks Ltd"
                for a, b in zip(
                    words[rng.integers(0, 6, n)], words[rng.integers(0, 6, n)], strict=True
                )  # fmt: skip
            ],
            "as_of": pd.Timestamp("2026-03-01"),
            "tier": rng.choice(["gold", "silver", "bronze"], n),
            "region": rng.choice(["EMEA", "NA", "APAC", "LATAM"], n),
            "industry": rng.choice(["software", "retail", "health", "finance"], n),
            "partner_type": rng.choice(["msp", "si", "reseller", "referral"], n),
            "score": rng.uniform(0, 100, n),
            "score_tier": rng.choice(["A", "B", "C", "D", "graduated"], n),
            "pred_revenue": rng.lognormal(9, 1.5, n),
            "pred_engagement": rng.uniform(0, 1, n),
            "peer_percentile": rng.uniform(0, 100, n),
            "quadrant": q,
            "quadrant_label": [s.replace("_", " ") for s in q],
            "intervention": rng.choice(["Enable pipeline", "Co-sell", "Onboarding", "Review"], n),
            "intervention_detail": "detail",
            "provisional": rng.uniform(size=n) < 0.1,
            "guardrail_flag": rng.uniform(size=n) < 0.01,
            "model_version": "3",
            "model_uri": "models:/partnerscore@champion",
            "config_hash": "abc",
        }
    )


def test_portfolio_page_stays_small_at_100k_partners():
    n = 100_000
    frame = synthetic_scores(n)
    files = [report_filename(p) for p in frame["partner_id"]]
    html = portfolio_page(frame, np.arange(n), files, AppConfig())
    size = len(html.encode("utf-8"))
    # ~85 bytes per partner in the data script: a few MB, not one 60 MB table of 100k rows
    assert 3e6 < size < 10e6, size
    assert html.count("<tr") < 50  # the partner table is built by script, one page at a time
    assert portfolio_json(html)["rows"] == n
    assert html.count("<circle") <= 4000  # the scatter plot is thinned


def test_workers_option(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_frame_atomic(synthetic_scores(30), tmp_path / "s.parquet")
    args = ["report", "--scores", str(tmp_path / "s.parquet"), "--out", str(tmp_path / "r")]
    assert main([*args, "--workers", "0"]) == 2
    usage, err = capsys.readouterr().err.strip().splitlines()  # a usage error
    assert usage.startswith("Usage: ") and err == "error: --workers 0: must be at least 1"
    assert main([*args, "--workers", "2"]) == 0
    assert "wrote 30 partner reports" in capsys.readouterr().out


def test_a_killed_page_worker_is_a_one_line_error_not_a_hang(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_frame_atomic(synthetic_scores(30), tmp_path / "s.parquet")
    monkeypatch.setattr(rp, "_render_chunk", die_by_sigkill)
    args = ["report", "--scores", str(tmp_path / "s.parquet"), "--out", str(tmp_path / "r")]
    with no_hang(60):
        assert main([*args, "--workers", "2"]) == 71  # EX_OSERR: was 1, a failing verdict's
    err = capsys.readouterr().err.strip()
    assert "killed by signal 9, SIGKILL" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("as_text", [False, True])
def test_portfolio_total_leaves_graduated_partners_apart(as_text):
    frame = synthetic_scores(200)
    graduated = np.arange(200) % 3 == 0
    flags = np.where(graduated, "True", "False") if as_text else graduated
    frame = frame.assign(out_of_scope=flags)
    files = [report_filename(p) for p in frame["partner_id"]]
    html = portfolio_page(frame, np.arange(200), files, AppConfig())
    revenue = frame["pred_revenue"].to_numpy(float)
    onboarding = f"${revenue[~graduated].sum():,.0f}"
    apart = f"${revenue[graduated].sum():,.0f}"
    assert f'in onboarding scope</div><div class="v">{onboarding}<' in html
    assert f'graduated (not validated)</div><div class="v">{apart}<' in html
    none = portfolio_page(frame.drop(columns="out_of_scope"), np.arange(200), files, AppConfig())
    assert f'in onboarding scope</div><div class="v">${revenue.sum():,.0f}<' in none
    assert "graduated (not validated)" not in none


def charted(html: str) -> tuple[int, int]:
    """(partners in the score histogram, points in the scatter) of a portfolio page."""
    counts = re.findall(r"<title>score \d+-\d+: (\d+) partners</title>", html)
    return sum(map(int, counts)), html.count("<circle ")


def test_portfolio_charts_leave_graduated_partners_out():
    """The histogram's tier lines and the quadrant chart are onboarding readings: graduated
    partners (out of scope) are left out of them, with a note, while any partner is in scope."""
    frame = synthetic_scores(200)
    graduated = np.arange(200) % 3 == 0
    files = [report_filename(p) for p in frame["partner_id"]]
    html = portfolio_page(frame.assign(out_of_scope=graduated), np.arange(200), files, AppConfig())
    assert charted(html) == (133, 133)
    assert "Charts: 133 partners in onboarding scope; 67 graduated not shown" in html
    in_scope = frame[~graduated]
    for q, n in in_scope["quadrant"].value_counts().items():
        label = in_scope.loc[in_scope["quadrant"] == q, "quadrant_label"].iloc[0]
        assert re.search(rf"{re.escape(label)}</td><td class=\"num\">{n}</td>", html), q
    # without the column, or with every partner graduated, every partner is charted, no note
    for page in (
        portfolio_page(frame, np.arange(200), files, AppConfig()),
        portfolio_page(frame.assign(out_of_scope=True), np.arange(200), files, AppConfig()),
    ):
        assert charted(page) == (200, 200)
        assert 'id="chart-note"' not in page


def test_a_quadrant_of_graduated_partners_only_has_no_row_under_the_chart():
    """The quadrant table counts the charted partners: a quadrant whose partners are all
    graduated is not charted, so it has no row (it showed 0 partners beside the action of the
    graduated ones, the playbook's hand-over)."""
    frame = synthetic_scores(200)
    gone = frame["quadrant"].iloc[0]
    graduated = (frame["quadrant"] == gone).to_numpy()
    files = [report_filename(p) for p in frame["partner_id"]]
    html = portfolio_page(frame.assign(out_of_scope=graduated), np.arange(200), files, AppConfig())
    table = re.search(r'<table id="quadrants">(.*?)</table>', html, re.S).group(1)
    label = frame.loc[graduated, "quadrant_label"].iloc[0]
    assert label not in table
    counts = re.findall(r'<td class="num">(\d+)</td>', table)
    assert len(counts) == frame.loc[~graduated, "quadrant"].nunique()
    assert sum(map(int, counts)) == int((~graduated).sum())
