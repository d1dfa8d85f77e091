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
    slope, intercept, low, high = memory.theil_sen(xs, ys)
    assert slope == pytest.approx(3000, rel=0.02) and low < slope < high
    assert intercept == pytest.approx(5e8, rel=1e-3)
    assert memory.theil_sen([1, 1], [2, 3]) is None
    # many points: a fixed subset of pairs, the same answer each time
    big = list(range(300))
    assert memory.theil_sen(big, [2.0 * x for x in big]) == memory.theil_sen(big, [2.0 * x for x in big])
    assert memory.theil_sen(big, [2.0 * x for x in big])[0] == pytest.approx(2.0)


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
    # a steady slope, but no new high over the last 18% of the calls: it stopped, no growth reported;
    # the same series still rising at the end is growth
    def stops_at(call):
        return memory.analyze_site({"points": [[c, 6e8 + 20_000 * min(c, call), 5, 1, 0] for c in range(0, 2400, 60)]})
    stalled, rising = stops_at(1900), stops_at(2100)
    assert stalled["slope_mb_per_1000_calls"] > memory.MIN_SLOPE_MB and stalled["growth_mb"] > memory.MIN_GROWTH_MB
    assert stalled["last_high_call"] == 1920 and not stalled["still_rising"] and not stalled["growing"]
    assert rising["still_rising"] and rising["growing"]


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
