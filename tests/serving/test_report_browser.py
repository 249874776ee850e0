"""The reports in real headless Chromium (Debian's chromium + chromedriver, `make browser`).

Without the browser these tests skip locally and fail when the CI environment variable is set.
CHROMIUM_BIN / CHROMEDRIVER_BIN point at another Chromium build if needed.
"""

import os
import re
import shutil

import pandas as pd
import pytest
from support import sibling

from partnerscore.serving.report import read_scores, report_filename


def synthetic_scores(n, seed=0):
    """tests/serving/test_report_pages.py's synthetic scores frame (modules without packages)."""
    return sibling(__file__, "test_report_pages").synthetic_scores(n, seed)


CHROMIUM = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = (
    os.environ.get("CHROMEDRIVER_BIN") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
)

MISSING = (
    ""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)
    else f"chromium/chromedriver not found ({CHROMIUM}, {CHROMEDRIVER})"
)
if MISSING and not os.environ.get("CI"):
    pytest.skip(f"{MISSING}: run `make browser`", allow_module_level=True)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    """One headless Chromium for the module, offline, with a fresh profile."""
    if MISSING:  # only on CI (skipped above otherwise): CI must run these tests
        pytest.fail(f"CI must run the browser tests: {MISSING}", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1600",
        f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()


def severe(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def no_alert(driver):
    from selenium.common.exceptions import NoAlertPresentException

    try:
        _ = driver.switch_to.alert  # raises when no alert is open
    except NoAlertPresentException:
        return True
    return False


def no_injected_code_ran(driver):
    """The hostile names set window.__pwned if any of them is ever parsed as markup."""
    return no_alert(driver) and driver.execute_script("return window.__pwned === undefined")


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


ROWS_JS = """
return Array.from(document.querySelectorAll('#portfolio tbody tr')).map(function (r) {
  return {text: r.innerText, name: r.cells[0].querySelector('a').textContent.toLowerCase(),
          id: r.cells[0].querySelector('div').textContent,
          href: r.cells[0].querySelector('a').getAttribute('href'),
          tier: r.cells[3].textContent, score: parseFloat(r.cells[2].textContent)};
});
"""


def visible_rows(driver):
    """The table's rows in the DOM (one page), in one round trip."""
    return driver.execute_script(ROWS_JS)


def shown_count(driver):
    from selenium.webdriver.common.by import By

    return int(driver.find_element(By.ID, "shown-count").text)


def test_index_renders_sorts_filters(driver, report_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    driver.get((report_dir / "index.html").as_uri())
    assert severe(driver) == []
    assert no_injected_code_ran(driver)
    for cls in ("histogram", "scatter"):
        svg = driver.find_element(By.CSS_SELECTOR, f"svg.{cls}")
        assert svg.size["width"] > 100 and svg.size["height"] > 100
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.scatter circle")) > 50
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.histogram rect")) == 10
    total = shown_count(driver)
    assert total > 300 and len(visible_rows(driver)) == 100  # one page of the paged table
    # every link the script builds is the page's real file name, hostile ids included
    box = driver.find_element(By.ID, "filter")
    for pid in ("../../etc/passwd", "P/1", "ID with spaces & <b>",
                '"><script>window.__pwned=2</script>'):  # fmt: skip
        box.clear()
        box.send_keys(pid.lower())
        rows = [r for r in visible_rows(driver) if r["id"] == pid]
        assert len(rows) == 1 and rows[0]["href"] == f"partners/{report_filename(pid)}"
    box.clear()
    box.send_keys("x")
    box.send_keys(Keys.BACK_SPACE)
    assert shown_count(driver) == total
    # sort by score: first click ascending, second descending (over all pages)
    header = driver.find_elements(By.CSS_SELECTOR, "#portfolio th")[2]
    header.click()
    scores = [r["score"] for r in visible_rows(driver)]
    assert scores == sorted(scores)
    header.click()
    first_page = [r["score"] for r in visible_rows(driver)]
    assert first_page == sorted(first_page, reverse=True)
    assert "sorted-desc" in header.get_attribute("class")
    driver.find_element(By.ID, "page-next").click()
    assert max(r["score"] for r in visible_rows(driver)) <= min(first_page)
    # typing in the filter box; the hostile name is shown literally, not executed
    box.send_keys("alert(1)")
    visible = visible_rows(driver)
    assert len(visible) == 1 and shown_count(driver) == 1
    assert "<script>alert(1)</script>" in visible[0]["text"]
    box.send_keys("zz")
    assert shown_count(driver) == 0 and visible_rows(driver) == []
    box.send_keys(Keys.BACK_SPACE * 10)
    assert shown_count(driver) == total
    # the tier select filters on the rows' tier
    Select(driver.find_element(By.ID, "tier-filter")).select_by_value("A")
    shown = visible_rows(driver)
    assert 0 < shown_count(driver) < total and len(shown) == min(shown_count(driver), 100)
    assert {r["tier"] for r in shown} == {"A"}
    Select(driver.find_element(By.ID, "tier-filter")).select_by_value("")
    # sorting by a text column (partner name) ascending
    driver.find_elements(By.CSS_SELECTOR, "#portfolio th")[0].click()
    names = [r["name"] for r in visible_rows(driver)]
    assert names == sorted(names)
    assert no_injected_code_ran(driver)
    assert severe(driver) == []
    shot = tmp_path / "index.png"
    driver.save_screenshot(str(shot))
    assert_png(shot)


def test_index_pages_through_thousands_of_partners(driver, tmp_path):
    """A 2,500-partner portfolio: 25 pages of 100 rows, sorted and filtered over all of them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from partnerscore.features.core import write_frame_atomic
    from partnerscore.serving.config import AppConfig
    from partnerscore.serving.report import run_report

    n = 2500
    frame = synthetic_scores(n, seed=4)
    write_frame_atomic(frame, tmp_path / "scores.parquet")
    cfg = AppConfig.model_validate({"paths": {"data_dir": str(tmp_path / "data")}})
    run_report(tmp_path / "scores.parquet", tmp_path / "out", cfg, workers=2)
    driver.get((tmp_path / "out" / "index.html").as_uri())
    assert severe(driver) == []
    assert shown_count(driver) == n and len(visible_rows(driver)) == 100
    info = driver.find_element(By.ID, "page-info")
    assert info.text == "rows 1–100 of 2500 · page 1 of 25"
    assert driver.find_element(By.ID, "page-prev").get_attribute("disabled")
    driver.find_element(By.ID, "page-next").click()
    assert [r["id"] for r in visible_rows(driver)] == frame["partner_id"].iloc[100:200].tolist()
    driver.find_element(By.ID, "page-last").click()
    assert info.text == "rows 2401–2500 of 2500 · page 25 of 25"
    assert driver.find_element(By.ID, "page-next").get_attribute("disabled")
    # sort by expected revenue, descending: the first page is the top 100 of the portfolio
    header = driver.find_elements(By.CSS_SELECTOR, "#portfolio th")[4]
    header.click()
    header.click()
    assert info.text.startswith("rows 1–100 of 2500")
    top = frame.sort_values("pred_revenue", ascending=False, kind="stable")
    assert [r["id"] for r in visible_rows(driver)] == top["partner_id"].iloc[:100].tolist()
    # filter by tier and search by name: counts match the data
    Select(driver.find_element(By.ID, "tier-filter")).select_by_value("B")
    assert shown_count(driver) == int((frame["score_tier"] == "B").sum())
    box = driver.find_element(By.ID, "filter")
    box.send_keys("keystone harbor")
    expected = frame[(frame["score_tier"] == "B")
                     & frame["partner_name"].str.lower().str.contains("keystone harbor")]  # fmt: skip
    assert shown_count(driver) == len(expected) > 0
    assert {r["id"] for r in visible_rows(driver)} <= set(expected["partner_id"])
    Select(driver.find_element(By.ID, "tier-filter")).select_by_value("")
    box.clear()
    box.send_keys("P0001234")  # search by id
    rows = visible_rows(driver)
    assert shown_count(driver) == 1 and rows[0]["id"] == "P0001234"
    # click through to the partner page and back
    driver.find_element(By.CSS_SELECTOR, "#portfolio tbody a").click()  # focus leaves the box
    WebDriverWait(driver, 20).until(lambda d: "P0001234" in d.title)
    assert driver.find_element(By.TAG_NAME, "h1").text.startswith(
        frame.set_index("partner_id").loc["P0001234", "partner_name"]
    )
    assert severe(driver) == []
    driver.find_element(By.LINK_TEXT, "portfolio").click()
    WebDriverWait(driver, 20).until(lambda d: d.title.startswith("Partner portfolio"))


def test_partner_report_renders(driver, report_dir, tmp_path):
    from selenium.webdriver.common.by import By

    driver.get((report_dir / "partners" / report_filename("P/1")).as_uri())
    assert severe(driver) == []
    assert no_injected_code_ran(driver)
    assert driver.find_element(By.TAG_NAME, "h1").text.startswith('"><img src=x onerror=alert(2)>')
    assert driver.find_elements(By.TAG_NAME, "img") == []
    waterfalls = driver.find_elements(By.CSS_SELECTOR, "svg.waterfall")
    assert len(waterfalls) == 2
    for svg in waterfalls:
        assert svg.size["width"] > 300 and svg.size["height"] > 100
        assert len(svg.find_elements(By.TAG_NAME, "rect")) >= 4
    assert driver.find_element(By.CSS_SELECTOR, "svg.trajectory").size["height"] > 100
    assert driver.find_element(By.ID, "score").text
    shot = tmp_path / "partner.png"
    driver.save_screenshot(str(shot))
    assert_png(shot)
    # back to the portfolio through the link
    driver.find_element(By.LINK_TEXT, "portfolio").click()
    assert driver.title.startswith("Partner portfolio")


def test_hostile_id_and_name_pages_show_text_literally(driver, report_dir):
    from selenium.webdriver.common.by import By

    for pid, name in (
        ('"><script>window.__pwned=2</script>', '<svg onload="window.__pwned=1"></svg>'),
        ("../../etc/passwd", "<script>alert(1)</script>"),
    ):
        driver.get((report_dir / "partners" / report_filename(pid)).as_uri())
        assert severe(driver) == []
        assert no_injected_code_ran(driver)
        header = driver.find_element(By.TAG_NAME, "h1").text
        assert header.startswith(name) and pid in header
        assert driver.find_elements(By.CSS_SELECTOR, "main script, header svg, header img") == []
        assert name in driver.title


def test_account_owner_sections_render(driver, scored_dir, tmp_path):
    """Changes since the last batch, typical values, thresholds, band, notes, next tier."""
    from selenium.webdriver.common.by import By

    from partnerscore.serving.report import read_scores, run_report

    root, cfg = scored_dir
    scores = read_scores(root / "scores.csv")
    pid = scores.loc[scores["next_tier_changes"].fillna("") != "", "partner_id"].iloc[0]
    notes = tmp_path / "notes.csv"
    pd.DataFrame(
        {
            "partner_id": [pid, pid],
            "note": ["Asked for MDF <b>twice</b>", "<script>window.__pwned=3</script>"],
            "noted_at": ["2026-02-01", "2026-02-20"],
        }
    ).to_csv(notes, index=False)
    out = tmp_path / "reports"
    run_report(root / "scores.csv", out, cfg, notes=notes)
    driver.get((out / "partners" / report_filename(pid)).as_uri())
    assert severe(driver) == [] and no_injected_code_ran(driver)
    changes = driver.find_element(By.ID, "changes")
    assert changes.is_displayed() and "since 2026-01-01" in changes.text
    assert "Composite score" in changes.text and "Tier" in changes.text
    typical = driver.find_elements(By.CSS_SELECTOR, "ul.drivers .typical")
    assert typical and all(t.text.startswith("(typical for peers:") for t in typical)
    thresholds = driver.find_element(By.ID, "thresholds")
    assert thresholds.find_element(By.CSS_SELECTOR, "tr.current").is_displayed()
    assert driver.find_element(By.ID, "maturity-band").text in cfg.policy.band_names()
    assert driver.find_element(By.ID, "tier-action").is_displayed()
    assert "owner:" in driver.find_element(By.ID, "quadrant-action").text
    items = driver.find_elements(By.CSS_SELECTOR, "#notes li")
    assert [i.text.split(": ", 1)[1] for i in items] == [
        "<script>window.__pwned=3</script>",
        "Asked for MDF <b>twice</b>",
    ]  # newest first, shown literally
    assert driver.find_element(By.ID, "next-tier").is_displayed()
    lines = driver.find_elements(By.CSS_SELECTOR, "svg.trajectory line.threshold")
    assert len(lines) == 3
    assert "$-0" not in driver.page_source and "-$0" not in driver.page_source
    shot = tmp_path / "partner_sections.png"
    driver.save_screenshot(str(shot))
    assert_png(shot)
    driver.get((out / "index.html").as_uri())
    assert severe(driver) == [] and no_injected_code_ran(driver)
    table = driver.find_element(By.ID, "tier-thresholds")
    assert table.is_displayed() and len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) == 4
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.histogram line.threshold")) == 3
    assert driver.find_elements(By.CSS_SELECTOR, "svg.histogram text.axis-label")
    assert driver.find_elements(By.CSS_SELECTOR, "svg.scatter line.threshold")


# the badge's left edge and the right edge of everything in the h1 before it, as laid out
BADGE_AFTER_NAME_JS = """
var h1 = document.querySelector('h1'), badge = h1.querySelector('span.badge');
var r = document.createRange(); r.setStart(h1, 0); r.setEndBefore(badge);
return [badge.getBoundingClientRect().left, r.getBoundingClientRect().right];
"""


def test_right_to_left_name_keeps_the_rest_of_the_line_in_order(driver, tmp_path):
    """A name with a right-to-left override (or in Hebrew) turns only itself around.

    Unisolated, U+202E reverses the direction of everything after it to the end of the line:
    the h1's partner id badge was laid out to the left of the name, and the title's
    "(P0000999) · partnerscore" came out mirrored. Names are isolated: <bdi> in the h1,
    U+2068 ... U+2069 in the title (text only).
    """
    from partnerscore.features.core import write_frame_atomic
    from partnerscore.serving.config import AppConfig
    from partnerscore.serving.report import run_report

    frame = synthetic_scores(40, seed=5)
    rtl = {frame["partner_id"].iloc[0]: "\u202eevil corp", frame["partner_id"].iloc[1]: "שותף טוב"}
    frame["partner_name"] = frame["partner_id"].map(rtl).fillna(frame["partner_name"])
    write_frame_atomic(frame, tmp_path / "scores.parquet")
    cfg = AppConfig.model_validate({"paths": {"data_dir": str(tmp_path / "data")}})
    run_report(tmp_path / "scores.parquet", tmp_path / "out", cfg)
    for pid, name in rtl.items():
        driver.get((tmp_path / "out" / "partners" / report_filename(pid)).as_uri())
        assert severe(driver) == []
        badge_left, name_right = driver.execute_script(BADGE_AFTER_NAME_JS)
        assert badge_left >= name_right - 1, f"{pid}'s badge is laid out left of its name"
        assert driver.title == f"\u2068{name}\u2069 ({pid}) · partnerscore"


OVERFLOW_JS = """
var width = document.documentElement.clientWidth, out = [];
document.querySelectorAll('body *').forEach(function (e) {
  var r = e.getBoundingClientRect();
  if (r.width > 0 && r.right > width + 1) { out.push(e.tagName + '#' + e.id + ' ' + Math.round(r.right)); }
});
return [width, out.slice(0, 5)];
"""


def test_pages_print_on_a4_without_cut_content(driver, report_dir, scored_dir):
    # printed, the partner page's trajectory table ran ~200 px past an A4 page's right edge
    # ("Revenue won to date" and "Open pipeline" cut) and the portfolio table ~120 px
    root, _ = scored_dir
    frame = read_scores(root / "scores.csv")
    widest = frame.loc[frame["deals_won_amount_todate"].idxmax(), "partner_id"]
    pages = [report_dir / "index.html", report_dir / "partners" / report_filename(widest)]
    try:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        driver.set_window_size(718, 1000)  # A4 minus 1 cm margins at 96 px per inch
        for page in pages:
            driver.get(page.as_uri())
            width, over = driver.execute_script(OVERFLOW_JS)
            assert width > 650 and over == [], (page.name, over)
    finally:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
        driver.set_window_size(1280, 1600)


SIDEWAYS_JS = """
var de = document.documentElement, out = [];
document.querySelectorAll('svg').forEach(function (e) {
  var r = e.getBoundingClientRect();
  if (r.right > de.clientWidth + 1) { out.push(e.getAttribute('class') + ' ' + Math.round(r.right)); }
});
return [de.clientWidth, de.scrollWidth, out];
"""


def test_pages_fit_a_narrow_window_without_scrolling_sideways(driver, report_dir, scored_dir):
    """Below ~1,120 px (a laptop's half screen: 1,024) both pages scrolled sideways, the
    portfolio's scatter and the partner's engagement waterfall cut at the window's right edge
    (their fixed widths held the two columns open). The charts now shrink with their column, and
    a table wider than the window scrolls inside its section: at 1,024, 800 and 400 px the page
    is no wider than the window and no chart passes its right edge."""
    root, _ = scored_dir
    frame = read_scores(root / "scores.csv")
    widest = frame.loc[frame["deals_won_amount_todate"].idxmax(), "partner_id"]
    pages = [report_dir / "index.html", report_dir / "partners" / report_filename(widest)]
    try:
        for width in (1024, 800, 400):
            driver.set_window_size(width, 1000)
            for page in pages:
                driver.get(page.as_uri())
                client, scroll, cut = driver.execute_script(SIDEWAYS_JS)
                assert scroll <= client and cut == [], (width, page.name, client, scroll, cut)
    finally:
        driver.set_window_size(1280, 1600)


def test_index_columns_sort_from_the_keyboard(driver, report_dir):
    # the sortable headers took mouse clicks only: not focusable, no aria-sort
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get((report_dir / "index.html").as_uri())
    score = driver.find_elements(By.CSS_SELECTOR, "#portfolio th")[2]
    assert score.get_attribute("tabindex") == "0" and score.get_attribute("aria-sort") == "none"
    score.send_keys(Keys.ENTER)
    assert score.get_attribute("aria-sort") == "ascending"
    shown = [r["score"] for r in visible_rows(driver) if r["score"] == r["score"]]
    assert shown == sorted(shown)
    score.send_keys(Keys.SPACE)
    assert score.get_attribute("aria-sort") == "descending"
    shown = [r["score"] for r in visible_rows(driver) if r["score"] == r["score"]]
    assert shown == sorted(shown, reverse=True)
    tier = driver.find_elements(By.CSS_SELECTOR, "#portfolio th")[3]
    tier.send_keys(Keys.ENTER)
    assert (
        score.get_attribute("aria-sort") == "none"
        and tier.get_attribute("aria-sort") == "ascending"
    )


def test_every_chart_has_an_accessible_name(driver, report_dir):
    """The SVG charts had role="img" but no name, so screen readers skipped them: Chromium's
    accessibility tree now names each one with what it shows and its key numbers."""
    from selenium.webdriver.common.by import By

    pages = {
        report_dir / "index.html": {"histogram": "composite scores", "scatter": "engagement"},
        report_dir / "partners" / report_filename("P/1"): {
            "waterfall": "this partner",
            "trajectory": "Trajectory over onboarding, day",
        },
    }
    for page, expected in pages.items():
        driver.get(page.as_uri())
        charts = driver.find_elements(By.CSS_SELECTOR, 'svg[role="img"]')
        assert {c.get_attribute("class") for c in charts} == set(expected), page
        for chart in charts:
            name = chart.accessible_name
            assert expected[chart.get_attribute("class")] in name, (page, name)
            assert any(ch.isdigit() for ch in name), name  # its key numbers


def test_the_monitor_page_shows_the_flagged_segments_volume(driver, tmp_path):
    """monitor.html charted rows per day of whole tables only: the flagged segment (leads of
    region NA, alarm) and the segments it explains each get a chart of what the check
    compared, rows per partner per 30 days at each onboarding age, baseline vs window."""
    from selenium.webdriver.common.by import By
    from support import segment_volume_page, tables_known_at

    from partnerscore.features.config import SimulateConfig
    from partnerscore.features.drift_sim import apply_drift, drift_start
    from partnerscore.features.simulate import simulate_program

    config = SimulateConfig(partners=3000, seed=3)
    tables = apply_drift(
        simulate_program(config), "leads_dry_up", drift_start(config.end_date, 180)
    )
    month = pd.Timestamp("2026-04-01")
    page, checks = segment_volume_page(tables_known_at(tables, month), month)
    explained = [c for c in checks if c.explained_by]
    path = tmp_path / "monitor.html"
    path.write_text(page, encoding="utf-8")
    driver.get(path.as_uri())
    assert severe(driver) == []
    section = driver.find_element(By.ID, "segment-volume")
    charts = section.find_elements(By.CSS_SELECTOR, 'svg.segvol[role="img"]')
    assert len(charts) == 1 + len(explained)
    first = charts[0].accessible_name
    assert first.startswith("leads of region=NA: rows per partner per 30 days"), first
    assert "(alarm)" in first and "drop x0.0" in first, first
    assert all("explained by region=NA" in c.accessible_name for c in charts[1:])
    assert charts[0].size["width"] > 300 and charts[0].size["height"] > 100  # drawn
    note = driver.find_element(By.ID, "segment-volume-explained").text
    assert f"{len(explained)} flagged segments explained" in note and "by region=NA" in note
    bars = charts[0].find_elements(By.CSS_SELECTOR, "rect.bar")
    assert len(bars) >= 5  # one window bar per compared onboarding age
    assert not charts[0].find_elements(By.CSS_SELECTOR, "rect.rest")
    # an explained segment also shows its rest, without region=NA's partners: flat
    for chart in charts[1:]:
        name = chart.accessible_name
        assert "; the rest, without the partners of region=NA: " in name, name
        rest = float(re.search(r"the rest, [^:]*: (?:drop|spike) x([0-9.]+)", name).group(1))
        assert 1 / 1.5 < rest < 1.5, name
        assert len(chart.find_elements(By.CSS_SELECTOR, "rect.bar.rest")) >= 5
        assert chart.size["height"] > charts[0].size["height"] + 80  # a second panel drawn
