"""The training section of the report and the terminal summary, from the hand-made training
recordings (tests/data/training_*.json); the page is also checked in headless Chromium."""

import json
import re

import pytest

from tfdiag.analysis import analyze
from tfdiag.recording import Recording, load
from tfdiag.renderers import html, text
from tfdiag.renderers.charts import step_chart

from .conftest import DATA
from .test_browser import browser  # noqa: F401  (the headless Chromium fixture)


def page_of(name_or_data) -> str:
    recording = (load(DATA / f"{name_or_data}.json") if isinstance(name_or_data, str)
                 else Recording.from_dict(name_or_data))
    return html.render_report(analyze(recording))


def test_each_fit_call_gets_a_stacked_step_split_in_the_phase_colours():
    page = page_of("training_callbacks")
    section = page[page.index('<section id="training">'):page.index("</section>", page.index('<section id="training">'))]
    articles = section.split('<article class="training-call"')[1:]
    assert len(articles) == 2  # fit() and evaluate()
    fit = articles[0]
    assert "<code>fit() classifier</code>" in fit and "train_cb.py:58" in fit
    rects = re.findall(r'<rect class="phase-(\w+)" x="[\d.]+" y="0" width="([\d.]+)" height="20" fill="(#\w+)"', fit)
    assert {p for p, _, _ in rects} == {"input_processing", "data_adapter", "kernel_execution", "output_processing",
                                        "callbacks", "other"}
    assert all(colour == html.PHASE_COLORS[p] for p, _, colour in rects)
    assert sum(float(w) for _, w, _ in rects) == pytest.approx(600, abs=0.1)
    assert "callbacks 4.30 ms (43%)" in fit and "steps_per_execution=1" in fit
    # callbacks named, with whose they are and their share
    assert re.search(r"<code>BatchLogger</code></td><td>yours</td><td><code>train_cb.py:21</code>", fit)
    assert "<code>ProgbarLogger</code> <span class=\"meta\">(progress bar)</span>" in fit
    assert "SlowData.__getitem__" in fit and "workers=1" in fit


def test_step_timeline_marks_each_epoch_s_first_step():
    analysis = analyze(load(DATA / "training_callbacks.json"))
    chart = step_chart(analysis.training[0]["timeline"])
    assert [m["step"] for m in chart["marks"]] == [0, 120, 240, 360, 480] and chart["marks"][0]["first"]
    assert [e["label"] for e in chart["epochs"]] == [f"epoch {k}" for k in range(1, 6)]
    assert len(chart["line"].split()) == 300
    xs = [float(xy.split(",")[0]) for xy in chart["line"].split()]
    assert xs == sorted(xs) and chart["plot"]["left"] <= xs[0] and xs[-1] <= chart["plot"]["right"]
    ys = [float(xy.split(",")[1]) for xy in chart["line"].split()]
    assert min(ys) >= chart["plot"]["top"] and max(ys) <= chart["plot"]["bottom"]
    assert chart["label"]["text"] == "first step 441 ms"
    page = html.render_report(analysis)
    assert page.count('<circle class="epoch-start') == 5 + 1  # fit's 5 epochs, evaluate's 1
    assert step_chart(None)["points"] == [] and step_chart({"points": []})["line"] == ""


def test_many_epochs_label_a_bounded_number():
    points = [{"step": s, "duration_s": 0.01, "epoch_start": s % 10 == 0, "first": s == 0, "epoch": s // 10 + 1}
              for s in range(0, 2000)]
    chart = step_chart({"points": points, "epoch_starts": list(range(0, 2000, 10))})
    assert len(chart["epochs"]) == 200 and 0 < sum(1 for e in chart["epochs"] if e["label"]) <= 12


def test_page_without_training_has_no_training_section():
    assert '<section id="training">' not in page_of("golden_recording")


def test_hostile_training_strings_are_escaped():
    evil = "</script><script>alert(1)</script>"
    raw = json.loads((DATA / "training_callbacks.json").read_text())
    fit = raw["calls"][0]
    fit["target"] = evil
    fit["callbacks"][0]["name"] = evil
    fit["callbacks"][0]["defined_at"] = f"/x/{evil}.py:3"
    fit["data_producer"]["name"] = evil
    fit["data_producer"]["kind"] = evil
    fit["data_producer"]["map_functions"] = [{"name": evil, "defined_at": f"/m/{evil}.py:1"}]
    page = page_of(raw)
    assert "<script>alert(1)" not in page
    assert page.count("&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;") >= 5


def test_terminal_summary_leads_with_the_training_verdict():
    out = text.summary(analyze(load(DATA / "training_generator.json")), {"report": "out/report.html"})
    assert out.splitlines()[1].startswith("tfdiag: Training dominates this run: `fit()` of `sequential`")
    assert "input-bound" in out and "fix: class Batches(keras.utils.PyDataset):  # instead of the generator batches" in out
    assert "training: fit() sequential at train_gen.py:31: 150 steps, median step" in out


@pytest.mark.browser
def test_training_report_in_headless_chromium(tmp_path, browser):  # noqa: F811
    from tfdiag import render

    evil = "<img src=x onerror=window.pwned=1>"
    raw = json.loads((DATA / "training_callbacks.json").read_text())
    raw["calls"][0]["callbacks"][0]["name"] = evil
    path = render(Recording.from_dict(raw), str(tmp_path / "report.html"))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto("file://" + path)
    page.wait_for_load_state("load")
    assert errors == [] and [u for u in requests if not u.startswith("file://")] == []
    assert page.evaluate("window.pwned === undefined") and page.locator("img").count() == 0
    assert page.locator("#verdict").inner_text().count("Training dominates this run") == 1
    section = page.locator("#training")
    assert section.is_visible()
    first = page.locator("#training-1")
    assert first.locator("svg.step-bar rect").count() == 6
    box = first.locator("svg.step-bar").bounding_box()
    assert box["width"] > 500 and box["height"] >= 18
    chart = first.locator("svg.step-chart")
    assert chart.is_visible() and chart.bounding_box()["height"] > 100
    assert first.locator("circle.epoch-start").count() == 5
    assert first.locator("polyline.steps").count() == 1
    assert first.locator("table.callbacks tbody tr").count() == 3
    assert evil in first.locator("table.callbacks").inner_text()  # shown as text, not run
    assert "epoch 5" in chart.text_content()
    page.screenshot(path=str(tmp_path / "training.png"), full_page=True)
    page.close()


def test_odd_values_in_optional_training_fields_render():
    raw = json.loads((DATA / "training_callbacks.json").read_text())
    fit = raw["calls"][0]
    fit["data_producer"].update(seconds="1 s", batches="many", workers=True, map_functions=[{"name": 3}, "x"])
    fit["callbacks"][0].update(calls="lots", seconds=None, per_step_s="2", defined_at=7)
    fit["callbacks"].append("not a callback")
    fit["step_timeline"]["durations_s"][3] = "slow"
    fit["step_timeline"]["epoch_starts"].append("end")
    page = page_of(raw)
    assert '<section id="training">' in page and "SlowData.__getitem__" in page


def test_the_per_call_table_points_training_calls_to_their_steps():
    page = page_of("training_generator")
    phases = page[page.index('<section id="phases">'):page.index('<section id="retracing">')]
    assert phases.count('see <a href="#training">Training steps</a>') == 1  # fit(), not predict()
