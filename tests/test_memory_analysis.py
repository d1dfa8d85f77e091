"""Memory analysis, finding, gate and report from saved recordings (tests/data/memory_*.json, made by
tests/data/memory_regenerate.py on TF 2.21): no TensorFlow needed."""

from __future__ import annotations

import copy
import json
import random
import re

import pytest

from tfdiag import cli
from tfdiag.analysis import analyze, max_memory_growth
from tfdiag import growth as growth_fit
from tfdiag.analysis import memory
from tfdiag.recording import Recording, RecordingError, load, loads
from tfdiag.renderers import html
from tfdiag.renderers.memory_chart import memory_chart

from .conftest import DATA

MB = 1 << 20


def growth(recording) -> list[dict]:
    return [f for f in analyze(recording).findings if f["code"] == "memory-growth"]


def test_theil_sen_recovers_a_slope_through_outliers():
    draw = random.Random(3)
    xs = list(range(0, 2000, 20))
    ys = [5e8 + 3000.0 * x + draw.uniform(-4000, 4000) for x in xs]
    for i in (3, 40, 77):  # a few readings a collection or a spike moved far off
        ys[i] += 5e7
    slope, intercept, low, high = growth_fit.theil_sen(xs, ys)
    assert slope == pytest.approx(3000, rel=0.02) and low < slope < high
    assert intercept == pytest.approx(5e8, rel=1e-3)
    assert growth_fit.theil_sen([1, 1], [2, 3]) is None
    # many points: a fixed subset of pairs, the same answer each time
    big = list(range(300))
    assert growth_fit.theil_sen(big, [2.0 * x for x in big]) == growth_fit.theil_sen(big, [2.0 * x for x in big])
    assert growth_fit.theil_sen(big, [2.0 * x for x in big])[0] == pytest.approx(2.0)


def test_warm_up_is_the_step_before_memory_levels_off():
    points = [[0, 500 * MB, 0, 0, 0, None]] + [[c, 520 * MB + c, 0, 0, 0, None] for c in range(1, 400, 10)]
    points[1][1] = 512 * MB  # still rising on the first calls
    start = memory.warm_up(points)
    assert points[start][0] >= 11
    site = {"api": "predict_on_batch", "target": "m", "call_site": "a.py:3", "calls": 400,
            "points": [p[:5] for p in points]}
    analysed = memory.analyze_site(site)
    assert analysed["warmup_calls"] >= 11 and not analysed["growing"]
    assert analysed["slope_mb_per_1000_calls"] == pytest.approx(1000 / MB, abs=1e-3)


def test_growth_needs_slope_interval_and_total():
    def site(per_call: float, calls: int, noise: float = 0.0):
        draw = random.Random(1)
        return {"api": "__call__", "target": "m", "call_site": "a.py:3", "calls": calls,
                "points": [[c, 6e8 + per_call * c + draw.uniform(-noise, noise), 5, 1, 0] for c in range(0, calls, calls // 40)]}
    assert memory.analyze_site(site(20_000, 2000))["growing"]  # 19 MB per 1000 calls, 38 MB in all
    assert not memory.analyze_site(site(20_000, 150))["growing"]  # the same slope, 3 MB in all: too little to say
    assert not memory.analyze_site(site(500, 20_000))["growing"]  # 0.5 MB per 1000 calls: below the threshold
    noisy = memory.analyze_site(site(2_000, 4000, noise=40 * MB))
    assert noisy["spread_mb_per_1000_calls"][0] <= 0 and not noisy["growing"]  # the interval straddles zero
    assert memory.analyze_site({"points": [[0, 1, 0, 0, 0]] * 3}) is None  # too few points to say
    # rose steadily, then no new high over the last 40% of the calls: it levelled off, no growth
    rose = site(20_000, 2000)
    for point in rose["points"]:
        point[1] = min(point[1], 6e8 + 20_000 * 1200)
    levelled = memory.analyze_site(rose)
    assert not levelled["growing"] and levelled["warmup_calls"] >= 1000  # the rise is its warm-up
    # 19 MB per 1000 calls, then flat: growth stopped at the last new high, which ends the warm-up
    # (the slope is refit on the flat tail), judged by persistence, not by a share of the calls
    def stops_at(call):
        return memory.analyze_site({"points": [[c, 6e8 + 20_000 * min(c, call), 5, 1, 0] for c in range(0, 2400, 60)]})
    stalled, late, rising = stops_at(1900), stops_at(2100), stops_at(2250)
    assert stalled["stopped"] and stalled["warmup_calls"] == stalled["last_high_call"] == 1920
    assert stalled["slope_mb_per_1000_calls"] == pytest.approx(0.0) and not stalled["growing"]
    # Flat over the last 240 calls (5 readings from 2100 on): the old test (a new high in the last
    # 15% of the calls, 2040 on) called this growth; but at 19 MB per 1000 calls those 240 calls
    # should have added 4.6 MB and added none, so it levelled off: quiet now.
    assert late["stopped"] and late["warmup_calls"] == 2100 and not late["growing"]
    # Flat for only 2 readings after the last high: too little to say it stopped, still growth.
    assert not rising["stopped"] and rising["growing"]
    # A count that still rises in the flat tail (traces here) keeps it from counting as stopped.
    traced = memory.analyze_site({"points": [[c, 6e8 + 100_000 * min(c, 1000), c // 10, 0, 0]
                                             for c in range(0, 1400, 20)]})
    assert not traced["stopped"]
    # A leak with a 2 MB spike late (at 80% of the calls): the spike is not a last high that sticks.
    draw = random.Random(5)
    spiked = [[c, 6e8 + 7_000 * c + draw.uniform(-5e4, 5e4) + (2 * MB if abs(c - 960) < 20 else 0), 5, 1, 0]
              for c in sorted(draw.sample(range(1, 1200), 50))]
    assert memory.analyze_site({"points": spiked})["growing"]


def test_traces_finding_names_function_and_argument():
    recording = load(DATA / "memory_traces.json")
    [finding] = growth(recording)
    assert finding["details"]["cause"] == "traces"
    assert finding["details"]["function"] == "scale" and finding["details"]["arguments"] == ["factor"]
    assert finding["details"]["retrace_cause"] == "retrace-python-value"
    assert finding["details"]["slope_mb_per_1000_calls"] > 20
    assert finding["details"]["mb_per_hour"] > 0
    assert finding["title"].startswith("Memory grows") and "`scale`" in finding["title"]
    assert "Pass `factor` as a tensor" in finding["fix"]["text"]
    assert finding["estimated_savings_s"] == 0.0


def test_user_objects_finding_names_the_users_line():
    recording = load(DATA / "memory_user_objects.json")
    [finding] = growth(recording)
    details = finding["details"]
    assert details["cause"] == "user-objects"
    assert details["line"].endswith("examples/memory/kept_predictions.py:23")
    assert "kept_predictions.py:23" in finding["fix"]["text"] and "deque" in finding["fix"]["code"]
    assert finding["severity"] == "high"


def test_flat_recordings_stay_quiet_and_pass_the_gate():
    for name in ("memory_flat_pob.json", "memory_flat_predict.json"):
        recording = load(DATA / name)
        assert growth(recording) == []
        slope, _ = max_memory_growth(recording)
        assert slope < 50
    assert max_memory_growth(load(DATA / "memory_user_objects.json"))[0] > 100
    slope, where = max_memory_growth(load(DATA / "memory_traces.json"))
    assert slope > 20 and where.startswith("tf.function scale at ") and where.endswith("python_float.py:25")
    assert max_memory_growth(Recording()) == (0.0, None)


def test_count_causes_from_edited_recordings():
    """models and iterators: the same growing series with those counts climbing instead."""
    base = json.loads((DATA / "memory_user_objects.json").read_text())
    for index, cause in ((3, "models"), (4, "iterators")):
        data = copy.deepcopy(base)
        data["memory"]["tracemalloc"] = None
        for site in data["memory"]["sites"]:
            for point in site["points"]:
                point[index] = point[0]  # one more alive per call
        [finding] = growth(Recording.from_dict(data))
        assert finding["details"]["cause"] == cause
    data = copy.deepcopy(base)
    data["memory"]["tracemalloc"] = None
    [finding] = growth(Recording.from_dict(data))
    assert finding["details"]["cause"] == "unknown"


def test_bad_memory_sections():
    base = json.loads((DATA / "memory_flat_pob.json").read_text())
    base["memory"] = ["not", "a", "dict"]
    with pytest.raises(RecordingError, match="'memory' should be a dict"):
        loads(json.dumps(base))
    base["memory"] = {"sites": [{"points": [[1, "x"], None, [1, 2, 3, 4, 5]]}, "junk"], "tracemalloc": "?"}
    assert growth(Recording.from_dict(base)) == []  # malformed points and entries are skipped
    assert analyze(Recording.from_dict(base)).memory["rows"] == []


def test_report_draws_memory_with_warmup_and_slope():
    page = html.render_report(analyze(load(DATA / "memory_user_objects.json")))
    section = page[page.index('<section id="memory">'):page.index("</section>", page.index('<section id="memory">'))]
    assert "grows " in section and "cause: <strong>user-objects</strong>" in section
    assert re.search(r'<rect class="warmup" x="[\d.]+" y="[\d.]+" width="[\d.]+"', section)
    assert re.search(r'<line class="slope" x1="[\d.]+" y1="[\d.]+" x2="[\d.]+" y2="[\d.]+" stroke="#d64550"', section)
    assert "tracemalloc window" in section and "kept_predictions.py:23" in section
    flat = html.render_report(analyze(load(DATA / "memory_flat_pob.json")))
    assert "levels off" in flat and 'stroke="#3b8f5a"' in flat
    assert 'id="memory"' not in html.render_report(analyze(Recording()))


def test_chart_layout_follows_the_row():
    row = {"points": [(0, 500 * MB), (10, 510 * MB), (100, 511 * MB), (200, 512 * MB)], "warmup_calls": 10,
           "steady_calls": 190, "slope_mb_per_1000_calls": 10.0, "intercept_bytes": 510 * MB,
           "collected_after_call": None}
    chart = memory_chart(row)
    assert len(chart["points"]) == 4 and chart["warmup"]["width"] > 0
    xs = [p["x"] for p in chart["points"]]
    ys = [p["y"] for p in chart["points"]]
    assert xs == sorted(xs) and ys[0] > ys[-1]  # more memory is higher up
    assert chart["slope"]["x1"] == pytest.approx(chart["warmup"]["x"] + chart["warmup"]["width"])
    assert chart["slope"]["y2"] < chart["slope"]["y1"]
    assert memory_chart({"points": []})["points"] == []


def test_gate_flag_usage_errors(tmp_path, capsys):
    script = tmp_path / "s.py"
    script.write_text("print('hi')\n")
    assert cli.main(["analyze", "--fail-on-memory-growth", "-1", str(script)]) == 2
    assert "--fail-on-memory-growth takes MB per 1000 calls" in capsys.readouterr().err
    assert cli.main(["analyze", "--traces-only", "--fail-on-memory-growth", "5", str(script)]) == 2
    assert "cannot be combined with --traces-only" in capsys.readouterr().err
    assert cli.main(["analyze", "--no-memory", "--fail-on-memory-growth", "5", str(script)]) == 2
    assert "cannot be combined with --no-memory" in capsys.readouterr().err


def test_predict_loop_that_levels_off_late_stays_quiet_and_passes_the_gate():
    """1,500 predict() calls (memory_regenerate.py): memory rises for ~1,300 calls, its last new high
    at call 1331, then flat to the end. It levelled off: no finding, and the gate stays open."""
    from types import SimpleNamespace

    from tfdiag.commands_analyze import gate_message

    recording = load(DATA / "memory_long_predict.json")
    [site] = memory.site_analyses(recording)
    assert site["stopped"] and not site["growing"]
    assert site["warmup_calls"] == site["last_high_call"] == 1321  # levels off from its last new high
    assert site["slope_mb_per_1000_calls"] < 1.0  # refit on the flat tail
    assert growth(recording) == []
    # The old code reported 14.0 MB per 1000 calls here and tripped --fail-on-memory-growth 5.
    assert max_memory_growth(recording) == (0.0, None)
    args = SimpleNamespace(fail_on_retrace=None, fail_on_memory_growth=5.0)
    assert gate_message(args, recording) is None
    row = analyze(recording).memory["rows"][0]
    assert row["cause"] is None and row["warmup_calls"] == 1321
    page = html.render_report(analyze(recording))
    assert "levels off: " in page and "from call 1,321 on" in page


def test_user_line_must_account_for_the_growth():
    """The window keeps every allocation between its calls: a line is the cause only if what it
    kept per call is between half and twice the resident growth per call."""
    base = json.loads((DATA / "memory_user_objects.json").read_text())
    for scale, cause in ((1.0, "user-objects"), (0.25, "unknown"), (3.0, "unknown")):
        data = copy.deepcopy(base)
        window = data["memory"]["tracemalloc"]
        for line in window["lines"]:
            line["bytes"] = int(line["bytes"] * scale)
        window["traced_bytes"] = int(window["traced_bytes"] * scale)
        [finding] = growth(Recording.from_dict(data))
        assert finding["details"]["cause"] == cause, scale
        if cause == "unknown":
            assert "line" not in finding["details"] and "deque" not in finding["fix"].get("code", "")


def test_projection_uses_the_steady_windows_own_call_rate():
    """Calls per second from the readings' times over the steady window, less tfdiag's pauses."""
    points = [[c, 6e8 + 20_000 * c, 5, 1, 0, c / 100.0] for c in range(0, 2000, 50)]  # 100 calls/s
    site = {"api": "predict", "target": "m", "call_site": "a.py:3", "calls": 2000, "points": points}
    assert memory.analyze_site(site)["calls_per_s"] == pytest.approx(100.0)
    paused = copy.deepcopy(points)
    for point in paused:
        if point[0] >= 1000:
            point[5] += 5.0  # a 5 s pause (a tracemalloc window) at call 1000 ...
    assert memory.analyze_site({**site, "points": paused})["calls_per_s"] < 80
    rate = memory.analyze_site({**site, "points": paused}, [(10.0, 15.0)])["calls_per_s"]
    assert rate == pytest.approx(100.0)  # ... left out
    assert memory.analyze_site(site | {"points": [p[:5] for p in points]})["calls_per_s"] is None  # untimed
    section = {"sites": [{**site, "points": paused}], "tracemalloc": {"at_s": 10.0, "seconds": 4.0, "snapshot_s": 1.0}}
    [analysed] = memory.site_analyses(Recording(extra={"memory": section}))
    assert analysed["calls_per_s"] == pytest.approx(100.0)
    # the finding projects from it (the whole run's wall time, TensorFlow's import included, is not used)
    recording = Recording(extra={"memory": section}, run={"wall_s": 1e6})
    [finding] = growth(recording)
    assert finding["details"]["mb_per_hour"] == pytest.approx(finding["details"]["slope_mb_per_1000_calls"] * 360)


def test_traces_cause_names_the_user_function_over_a_library_one():
    data = json.loads((DATA / "memory_traces.json").read_text())
    for function in data["functions"]:  # the user's traces recorded at another site (a wrapper's)
        for trace in function.get("traces") or []:
            trace["call_site"] = "elsewhere.py:9"
    site = data["memory"]["sites"][0]["call_site"]
    library = copy.deepcopy(data["functions"][0])
    library.update(name="keras_internal_fn", origin="library", trace_count=1, traces=library["traces"][:1])
    library["traces"][0]["call_site"] = site
    data["functions"].append(library)
    [finding] = growth(Recording.from_dict(data))
    assert finding["details"]["cause"] == "traces" and finding["details"]["function"] == "scale"


def test_malformed_window_and_collection_fields_are_dropped():
    base = json.loads((DATA / "memory_user_objects.json").read_text())
    edits = [("bytes", "12"), ("seconds", "x"), ("lines", "abc"), ("from_call", "<b>x</b>"), ("to_call", "9"),
             ("calls", "abc"), ("traced_bytes", "abc")]
    for key, value in edits + [("line", 5)]:
        data = copy.deepcopy(base)
        window = data["memory"]["tracemalloc"]
        if key == "bytes":
            window["lines"][0]["bytes"] = value
        elif key == "line":
            window["lines"].insert(0, {"line": value, "bytes": 1})
        else:
            window[key] = value
        data["memory"]["collection"] = {"after_call": "x", "seconds": [1], "rss_before": {}}
        page = html.render_report(analyze(loads(json.dumps(data))))
        assert 'id="memory"' in page and "&lt;b&gt;" not in page, key


def test_verdict_for_memory_growth_speaks_of_memory_not_time():
    analysis = analyze(load(DATA / "memory_user_objects.json"))
    assert analysis.findings[0]["code"] == "memory-growth"
    assert analysis.verdict.startswith("Memory grows ") and "steady-state growth" in analysis.verdict
    assert "save about" not in analysis.verdict


def test_a_leak_in_steps_is_growth_not_a_level_off():
    """2 MB every 200 calls, 5 MB every 500: flat between steps, so the flat tail since the last
    step must outlast twice the usual gap between new highs before growth counts as stopped."""
    draw = random.Random(2)

    def stairs(step_mb, every, end, spacing):
        return memory.analyze_site({"points": [[c, 6e8 + step_mb * MB * (c // every) + draw.uniform(-1e5, 1e5), 5, 1, 0]
                                               for c in range(0, end, spacing)]})

    for step_mb, every, end, spacing in ((2, 200, 1190, 8), (5, 500, 2999, 33), (5, 500, 3400, 37)):
        site = stairs(step_mb, every, end, spacing)
        assert site["growing"] and not site["stopped"], (step_mb, every, end)
        assert site["slope_mb_per_1000_calls"] > 5
    # the same stairs, then flat for three times the gap between steps: it levelled off (the steps are warm-up)
    flat = memory.analyze_site({"points": [[c, 6e8 + 2 * MB * (min(c, 1000) // 200), 5, 1, 0]
                                           for c in range(0, 1600, 8)]})
    assert not flat["growing"] and flat["warmup_calls"] >= 1000


def test_interleaved_call_sites_growing_in_step_are_named_together_and_none_blamed():
    """Resident memory is the process's: a loop that calls model(x) and fit() in turn shows the same
    growth at both call sites. With no cause that points at one, the finding names both."""
    data = json.loads((DATA / "memory_user_objects.json").read_text())
    data["memory"]["tracemalloc"] = None
    other = copy.deepcopy(data["memory"]["sites"][0])
    other.update(api="fit", target="sequential", call_site="examples/memory/kept_predictions.py:30", calls=299)
    data["memory"]["sites"].append(other)
    [finding] = growth(Recording.from_dict(data))
    assert finding["details"]["cause"] == "unknown"
    assert "of a loop that calls `predict_on_batch sequential` at kept_predictions.py:23, `fit sequential` at " \
           "kept_predictions.py:30" in finding["title"]
    assert finding["evidence"][0].startswith("2 call sites saw this growth in step")
    assert sorted(finding["details"]["call_sites"]) == ["examples/memory/kept_predictions.py:23",
                                                         "examples/memory/kept_predictions.py:30"]
