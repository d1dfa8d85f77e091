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
    # each call site's first call on its own line, apart from the steady-state split
    first_calls = page.locator("#phases .first-call")
    assert first_calls.count() == page.locator("#phases table.bars tbody tr").count() >= 1
    assert first_calls.first.is_visible()
    assert first_calls.first.inner_text().startswith("first call, apart: ")
    assert any("graph_creation" in t for t in first_calls.all_inner_texts())  # the first call's own split
    # the TF Profiler cross-check: tfdiag's kernel time per call beside the profiler's model-op time
    check = page.locator("#kernel-check")
    assert check.is_visible()
    assert page.locator("#kernel-check tr.kernel-check-row").count() >= 1
    assert "TF Profiler" in check.inner_text()
    # the timeline of calls: one dot per call, the first call marked
    timeline = page.locator("#timeline svg.timeline-chart")
    assert timeline.is_visible()
    assert page.locator("#timeline circle.pt").count() >= 8  # 2 loops × 4 calls
    assert page.locator("#timeline circle.pt.first").count() >= 1
    assert "first call" in page.locator("#timeline").inner_text()
    # each finding's fix as a visible code snippet with a Copy button (the one inline script,
    # allowed by its CSP hash: had the hash not matched, there would be no button and a console error)
    snippet = page.locator("#finding-1 div.snippet pre.code")
    assert snippet.is_visible() and snippet.inner_text().strip()
    assert page.locator("div.snippet button.copy").count() == page.locator("div.snippet").count() >= 2
    button = page.locator("#finding-1 button.copy")
    assert button.is_visible()
    button.click()
    # Polled from Python: the page's CSP forbids the eval() that wait_for_function's polling uses.
    from playwright.sync_api import expect

    expect(button).not_to_have_text("Copy", timeout=5000)
    assert button.inner_text() in ("Copied", "Press Ctrl+C")
    assert page.locator("#finding-1 .badge.sev").inner_text().lower() in ("high", "medium", "low")
    guide = page.locator("#finding-1 .guide a")
    assert guide.count() == 1 and guide.get_attribute("href").startswith("https://")
    assert console_errors == []
    assert [u for u in requests if not u.startswith("file://")] == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-1280.png"), full_page=True)
    assert (ARTIFACTS / "report-1280.png").stat().st_size > 10_000
    page.close()


def test_hostile_strings_run_nothing_in_the_browser(tmp_path, browser):
    from tfdiag import Recording, render

    from .test_analysis_golden import hostile_data

    evil = "</script><script>window.pwned=1</script><img src=x onerror=window.pwned=2>"
    path = render(Recording.from_dict(hostile_data(evil)), str(tmp_path / "evil.html"))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    dialogs, requests, errors = [], [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto("file://" + path)
    page.wait_for_load_state("load")
    assert page.evaluate("window.pwned === undefined")
    assert dialogs == [] and errors == []
    assert [u for u in requests if not u.startswith("file://")] == []
    assert page.locator("img").count() == 0
    assert page.locator("script").count() == 1
    body = page.locator("body").inner_text()
    assert body.count(evil) >= 5  # shown as text: function name, argument value, exception, warning, command
    for section in ("#findings", "#retracing", "#environment"):
        assert evil in page.locator(section).inner_text(), section
    assert page.locator("div.snippet button.copy").count() >= 1  # the page's own script still runs
    page.close()


def test_timeline_data_is_bounded_and_marks_first_calls_and_spikes():
    """The chart's data (pure, no browser): bounded points, first calls and spikes kept and marked."""
    from tfdiag import Recording
    from tfdiag.analysis import analyze
    from tfdiag.renderers.charts import MAX_LABELS, timeline

    site = "/app/serve.py:41"
    samples, t = [], 0.0
    for k in range(30_000):
        duration = 0.5 if k == 0 else (0.2 if k == 15_000 else 0.01)
        samples.append({"api": "predict", "target": "m", "call_site": site, "start_s": t, "duration_s": duration,
                        "thread": "MainThread", "profiled": k == 3,
                        "phases": {"graph_creation": 0.05 if k in (0, 15_000) else 0.0}})
        t += duration
    recording = Recording(calls=[{"api": "predict", "target": "m", "call_site": site, "first_s": 0.5,
                                  "count": 30_000}],
                          call_samples=samples[::-1], run={"call_samples_total": 30_000})
    view = timeline(analyze(recording), max_points=500)
    assert view["shown"] == len(view["points"]) <= 500
    assert (view["sampled"], view["total"], view["first"], view["spikes"], view["traced"]) == (30_000, 30_000, 1, 1, 2)
    first = [p for p in view["points"] if p["first"]]
    spike = [p for p in view["points"] if p["spike"]]
    assert len(first) == 1 and first[0]["start_s"] == 0.0 and first[0]["traced"]
    assert len(spike) == 1 and spike[0]["duration_s"] == 0.2
    assert view["profiled"] == 1
    plot = view["plot"]
    for p in view["points"]:
        assert plot["left"] <= p["x"] <= plot["right"] and plot["top"] <= p["y"] <= plot["bottom"]
    assert first[0]["y"] < spike[0]["y"] < min(p["y"] for p in view["points"] if not (p["first"] or p["spike"])) + 1
    assert 1 <= len(view["labels"]) <= MAX_LABELS and view["labels"][0]["text"].startswith("first call 500 ms")
    assert timeline(analyze(Recording()))["points"] == []
