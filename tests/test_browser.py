"""The report of a real run in headless Chromium: no console errors, no network, content visible."""

import os
import shutil

import pytest

from tfdiag import cli

from .conftest import EXAMPLES, ROOT

pytestmark = [pytest.mark.browser, pytest.mark.tf]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser") / "report"
    assert cli.main(["analyze", "-o", str(out), str(EXAMPLES / "predict_loop.py"), "--calls", "4"]) == 0
    return out / "report.html"


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is required for the browser test (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        yield browser
        browser.close()


def test_report_in_headless_chromium(real_report, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console_errors, requests = [], []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(real_report.as_uri())
    page.wait_for_load_state("load")
    assert console_errors == []
    assert [u for u in requests if not u.startswith("file://")] == []
    verdict = page.locator("#verdict")
    assert verdict.is_visible()
    assert "predict()" in verdict.inner_text()
    findings = page.locator("article.finding")
    assert findings.count() >= 2
    assert findings.first.is_visible()
    assert page.locator("#phases svg.bar rect").count() >= 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-1280.png"), full_page=True)
    assert (ARTIFACTS / "report-1280.png").stat().st_size > 10_000
    page.close()


def test_hostile_strings_run_nothing_in_the_browser(tmp_path, browser):
    import json

    from tfdiag import Recording, render

    from .conftest import DATA

    data = json.loads((DATA / "golden_recording.json").read_text())
    evil = "</script><script>window.pwned=1</script><img src=x onerror=window.pwned=2>"
    data["functions"][0]["name"] = evil
    data["run"]["exception"] = evil
    data["calls"][0]["target"] = evil
    path = render(Recording.from_dict(data), str(tmp_path / "evil.html"))
    page = browser.new_page()
    page.goto("file://" + path)
    assert page.evaluate("window.pwned === undefined")
    assert evil in page.locator("body").inner_text()
    page.close()
