"""The reports in real headless Chromium (Debian's chromium + chromedriver, installed by make)."""

import os
import shutil

import pytest

from partnerscore.serving.report import report_filename

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
HAVE_BROWSER = os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)

pytestmark = pytest.mark.browser
if not HAVE_BROWSER:
    if os.environ.get("CI"):
        pytest.fail("CI must run the browser tests: chromium/chromedriver missing", pytrace=False)
    pytestmark = [
        pytest.mark.browser,
        pytest.mark.skip(reason="chromium not installed (make browser)"),
    ]


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
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


def test_index_renders_sorts_filters(driver, report_dir, tmp_path):
    from selenium.webdriver.common.by import By

    driver.get((report_dir / "index.html").as_uri())
    assert severe(driver) == []
    assert no_alert(driver)
    for cls in ("histogram", "scatter"):
        svg = driver.find_element(By.CSS_SELECTOR, f"svg.{cls}")
        assert svg.size["width"] > 100 and svg.size["height"] > 100
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.scatter circle")) > 50
    rows = driver.find_elements(By.CSS_SELECTOR, "#portfolio tbody tr")
    total = len(rows)
    # sort by score descending (two clicks), check order
    header = driver.find_elements(By.CSS_SELECTOR, "#portfolio th")[2]
    header.click()
    header.click()
    values = [
        float(td.get_attribute("data-value"))
        for td in driver.find_elements(By.CSS_SELECTOR, "#portfolio tbody tr td:nth-child(3)")
    ]
    assert values == sorted(values, reverse=True)
    # the hostile name is shown literally, not executed
    box = driver.find_element(By.ID, "filter")
    box.send_keys("<script>alert(1)")
    visible = [
        r for r in driver.find_elements(By.CSS_SELECTOR, "#portfolio tbody tr") if r.is_displayed()
    ]
    assert len(visible) == 1
    assert "<script>alert(1)</script>" in visible[0].text
    assert driver.find_element(By.ID, "shown-count").text == "1"
    box.clear()
    box.send_keys("zzzz-no-such-partner")
    assert driver.find_element(By.ID, "shown-count").text == "0"
    box.clear()
    box.send_keys(" ")
    box.clear()
    assert no_alert(driver)
    shot = tmp_path / "index.png"
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000
    assert total > 100


def test_partner_report_renders(driver, report_dir, tmp_path):
    from selenium.webdriver.common.by import By

    driver.get((report_dir / "partners" / report_filename("P/1")).as_uri())
    assert severe(driver) == []
    assert no_alert(driver)
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
    assert shot.stat().st_size > 20_000
    # back to the portfolio through the link
    driver.find_element(By.LINK_TEXT, "portfolio").click()
    assert driver.title.startswith("Partner portfolio")
