"""Memory growth on real TensorFlow (issue 15): the growth, its cause, quiet loops, the gate.

Each workload runs once per module (module-scoped fixtures); the CLI gate runs in subprocesses.
"""

from __future__ import annotations

import runpy
import sys

import numpy as np
import pytest

from tests.conftest import EXAMPLES, ROOT, run_tfdiag

pytestmark = pytest.mark.tf

MEMORY = EXAMPLES / "memory"


def _run_example(name: str, calls: int, **options):
    import tfdiag

    argv = sys.argv
    sys.argv = [str(MEMORY / name), "--calls", str(calls)]
    try:
        with tfdiag.diagnose(cprofile=False, tf_profiler=False, **options) as d:
            runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        sys.argv = argv
    return d


def _growth(d) -> list[dict]:
    return [f for f in d.findings if f["code"] == "memory-growth"]


@pytest.fixture(scope="module")
def python_float():
    return _run_example("python_float.py", 300)


@pytest.fixture(scope="module")
def kept_predictions():
    return _run_example("kept_predictions.py", 300)


@pytest.fixture(scope="module")
def flat_loops():
    """A predict_on_batch loop and a predict() loop that keep nothing, one diagnosis each."""
    import tensorflow as tf

    import tfdiag

    keras = tf.keras
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    x = np.ones((32, 4), np.float32)
    with tfdiag.diagnose(cprofile=False, tf_profiler=False, phase_every=8) as on_batch:
        for _ in range(800):
            model.predict_on_batch(x)
    with tfdiag.diagnose(cprofile=False, tf_profiler=False, phase_every=4) as predict:
        for _ in range(80):
            model.predict(x, verbose=0)
    return on_batch, predict


def test_float_argument_grows_with_traces_and_names_function_and_argument(python_float):
    section = python_float.recording.extra["memory"]
    site = next(s for s in section["sites"] if s["target"] == "scale")
    # Points are [calls done, rss, traces, models, iterators], and traces climb with the calls.
    first, last = site["points"][1], site["points"][-1]
    assert last[2] - first[2] >= last[0] - first[0] - 2
    [finding] = _growth(python_float)
    details = finding["details"]
    assert details["cause"] == "traces"
    assert details["function"] == "scale" and details["arguments"] == ["factor"]
    assert details["slope_mb_per_1000_calls"] > 20  # ~0.1 MB per trace on TF 2.21
    low, high = details["spread_mb_per_1000_calls"]
    assert 0 < low <= details["slope_mb_per_1000_calls"] <= high
    assert finding["call_site"].endswith("python_float.py:25")
    assert "`factor`" in finding["fix"]["text"] and "tf.constant" in finding["fix"]["code"]
    # The same run's retrace finding is still there: the memory finding adds to it.
    assert any(f["code"] == "retrace-python-value" for f in python_float.findings)


def test_kept_predictions_are_user_objects_on_the_users_line(kept_predictions):
    [finding] = _growth(kept_predictions)
    details = finding["details"]
    assert details["cause"] == "user-objects"
    assert details["line"].endswith("kept_predictions.py:23")  # the user's line, not TensorFlow's
    assert "site-packages" not in details["line"]
    assert details["slope_mb_per_1000_calls"] > 100  # 256 KiB kept per call
    window = kept_predictions.recording.extra["memory"]["tracemalloc"]
    assert window["lines"][0]["line"] == details["line"]
    assert window["calls"] >= 2 and window["to_call"] - window["from_call"] == window["calls"]
    # tracemalloc slows the window's calls: they are marked profiled and kept out of the timings
    call = next(c for c in kept_predictions.recording.calls if c["api"] == "predict_on_batch")
    assert call["profiled_calls"] == window["calls"]
    import tracemalloc

    assert not tracemalloc.is_tracing()  # the window was closed


def test_flat_loops_give_no_finding(flat_loops):
    for d in flat_loops:
        assert _growth(d) == []
        sites = d.recording.extra["memory"]["sites"]
        assert sites and all(len(s["points"]) >= 8 for s in sites)
    from tfdiag.analysis.memory import site_analyses

    [pob] = site_analyses(flat_loops[0].recording)
    assert not pob["growing"] and pob["slope_mb_per_1000_calls"] < 1.0
    assert pob["warmup_calls"] >= 1  # the step up on the first call is warm-up, not growth


def test_points_are_bounded_and_memory_can_be_off():
    import tensorflow as tf

    import tfdiag
    from tfdiag.capture import memory

    step = tf.function(lambda t: t + 1.0)
    x = tf.ones((2,))
    old = memory.MAX_POINTS
    memory.MAX_POINTS = 16
    try:
        with tfdiag.diagnose(cprofile=False, tf_profiler=False, phase_every=1) as d:
            for _ in range(300):
                step(x)
    finally:
        memory.MAX_POINTS = old
    [site] = d.recording.extra["memory"]["sites"]
    assert len(site["points"]) <= 17 and site["stride"] >= 16  # halved as it filled, the last reading kept
    calls = [p[0] for p in site["points"]]
    assert calls == sorted(calls) and calls[-1] >= 290
    with tfdiag.diagnose(cprofile=False, tf_profiler=False, memory=False) as off:
        step(x)
    assert "memory" not in off.recording.extra


def test_gate_exits_3_on_growth_and_0_when_below(tmp_path):
    common = ("--no-cprofile", "--no-tf-profiler", "--quiet")
    tripped = run_tfdiag("analyze", "-o", str(tmp_path / "a"), *common, "--fail-on-memory-growth", "20",
                         str(MEMORY / "kept_predictions.py"), "--calls", "250", cwd=str(ROOT))
    assert tripped.returncode == 3, tripped.stderr[-2000:]
    assert "--fail-on-memory-growth 20: predict_on_batch" in tripped.stderr
    assert "kept_predictions.py:23 grows" in tripped.stderr
    quiet = run_tfdiag("analyze", "-o", str(tmp_path / "b"), *common, "--phase-every", "8",
                       "--fail-on-memory-growth", "5", str(MEMORY / "levels_off.py"), "--calls", "400",
                       cwd=str(ROOT))
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "fail-on-memory-growth" not in quiet.stderr
    report = (tmp_path / "b" / "report.html").read_text()
    assert 'id="memory"' in report and "levels off" in report
