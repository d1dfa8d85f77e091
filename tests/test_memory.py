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
    """Memory read on one call in 16 (``phase_every``): the steady slope is read after the
    tracemalloc window, from enough readings in 300 calls. (By default a call site as fast as this
    one, about 1 ms, is read less often: sampling.py.)"""
    return _run_example("kept_predictions.py", 300, phase_every=16)


@pytest.fixture(scope="module")
def flat_on_batch():
    """A predict_on_batch loop that keeps nothing. (A flat predict() loop needs 1,000+ calls to say
    anything: tests/data/memory_long_predict.json, read by test_memory_analysis.py.)"""
    import tensorflow as tf

    import tfdiag

    keras = tf.keras
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    x = np.ones((32, 4), np.float32)
    with tfdiag.diagnose(cprofile=False, tf_profiler=False, phase_every=8) as on_batch:
        for _ in range(800):
            model.predict_on_batch(x)
    return on_batch


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
    # the analysis reads only the points after the window (tracemalloc's own memory is tfdiag's)
    [site] = kept_predictions.recording.extra["memory"]["sites"]
    assert site["window_closed_after"] is not None and finding["details"]["warmup_calls"] > site["window_closed_after"]
    assert 0 < finding["details"]["mb_per_hour"] < float("inf")
    import tracemalloc

    assert not tracemalloc.is_tracing()  # the window was closed


def test_flat_predict_on_batch_loop_gives_no_finding(flat_on_batch):
    assert _growth(flat_on_batch) == []
    sites = flat_on_batch.recording.extra["memory"]["sites"]
    assert sites and all(len(s["points"]) >= 8 for s in sites)
    from tfdiag.analysis.memory import site_analyses

    [pob] = site_analyses(flat_on_batch.recording)
    assert not pob["growing"] and pob["slope_mb_per_1000_calls"] < 1.0


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


def test_tracemalloc_window_closes_on_its_own_when_calls_stop(monkeypatch):
    """No more timed calls after the window opens (the user's untimed post-processing): a timer
    closes it after WINDOW_S, not the diagnosis' end."""
    import time
    import tracemalloc

    import tensorflow as tf

    import tfdiag
    from tfdiag.capture import memory

    monkeypatch.setattr(memory, "WINDOW_CALLS", 10**6)
    monkeypatch.setattr(memory, "WINDOW_S", 0.5)
    keras = tf.keras
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(256 * 256)])  # 256 KiB out per call
    x = np.ones((1, 16), np.float32)
    kept = []
    with tfdiag.diagnose(cprofile=False, tf_profiler=False) as d:
        for _ in range(400):
            kept.append(model.predict_on_batch(x))
            if tracemalloc.is_tracing():
                break  # the window just opened: no more timed calls
        opened = tracemalloc.is_tracing()
        time.sleep(1.5)
        still = tracemalloc.is_tracing()
    assert opened and not still
    window = d.recording.extra["memory"]["tracemalloc"]
    assert window["calls"] <= 1 and window["seconds"] >= 0.5


def test_unreadable_gpu_keeps_the_resident_series():
    """A GPU TensorFlow cannot read (hidden by set_visible_devices, or gone): the point is still taken."""
    import types

    import tensorflow as tf

    from tfdiag.capture import memory

    warned = []
    probe = memory.MemoryProbe(types.SimpleNamespace(warn=warned.append, traces_total=3))
    assert tf.config.list_logical_devices("CPU")  # TensorFlow is loaded: the probe asks it about GPUs
    try:
        probe.gpus = ["GPU:7"]  # not a logical device here: get_memory_info raises
        state = [None, 0, None]
        probe.reading(state)
        probe.reading(state)
    finally:
        probe.rss.close()
    points = probe.series[id(state)].points
    assert len(points) == 2 and points[0][1] > 0 and points[0][2] == 3 and warned == []
    assert probe.gpu_off and any("GPU memory could not be read" in n for n in probe.notes)


def test_no_check_opens_when_the_series_levelled_off():
    """Growth suspected (4 MB over the second half) but levelled off since: no forced collection and
    no tracemalloc window (which would itself raise memory); growth that goes on still opens them."""
    import json
    import types

    from tfdiag.capture import memory

    data = json.loads((ROOT / "tests" / "data" / "memory_long_predict.json").read_text())
    levelled = [p[:5] + [0.0] for p in data["memory"]["sites"][0]["points"]]
    probe = memory.MemoryProbe(types.SimpleNamespace(warn=print, traces_total=0))
    probe.rss.close()
    series = memory._Series([None, 0, None])
    for point in levelled:
        series.add(point)
    assert probe._due(series) is None and not probe._checked
    rising = memory._Series([None, 0, None])
    for call in range(0, 1500, 30):
        rising.add([call, 6e8 + 12_000 * call, 1, 0, 0, 0.0])
    assert probe._due(rising) == ("trace", rising) and probe._checked


def _probe_with_series(memory, gates):
    import types

    probe = memory.MemoryProbe(types.SimpleNamespace(warn=print, traces_total=0), gates=gates)
    series = memory._Series([None, 0, None])
    series.add([100, 1, 0, 0, 0, 0.0])
    return probe, series


def test_a_child_forked_while_the_timer_closes_the_window_abandons_it_at_once(monkeypatch):
    """Forked while the timer thread is inside the window's close (its collection and snapshot):
    the child's close() takes no lock the parent's thread held and runs no collection or snapshot;
    tracemalloc is off in the child at once."""
    import os
    import threading
    import tracemalloc
    import warnings

    from tfdiag.capture import memory

    monkeypatch.setattr(memory, "WINDOW_S", 0.05)
    probe, series = _probe_with_series(memory, [])
    inside, release = threading.Event(), threading.Event()
    close_window = probe._close_window

    def slow_close(window):  # the timer thread, in the middle of the close
        inside.set()
        release.wait(10)
        close_window(window)

    probe._close_window = slow_close
    probe._check("trace", series)
    assert inside.wait(10) and tracemalloc.is_tracing()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: the child only exits
        pid = os.fork()
    if pid == 0:
        import signal
        import time

        signal.alarm(5)  # before the fix: blocked on the window's lock for good
        start = time.perf_counter()
        probe.close()
        os._exit(0 if not tracemalloc.is_tracing() and probe.window is None
                 and time.perf_counter() - start < 1.0 else 1)
    _, status = os.waitpid(pid, 0)
    release.set()
    probe.close()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert not tracemalloc.is_tracing() and probe.tracemalloc is not None  # the parent's close ran


def test_a_window_never_opens_after_the_diagnosis_closed_the_probe(monkeypatch):
    """close() (the diagnosis' end) while another thread's check is in its forced collection: the
    check opens no tracemalloc window and starts no timer after it."""
    import gc
    import tracemalloc
    import types

    from tfdiag.capture import memory

    probe, series = _probe_with_series(memory, [])
    monkeypatch.setattr(memory, "gc", types.SimpleNamespace(isenabled=gc.isenabled, collect=probe.close))
    probe._check("trace", series)
    assert probe.closed and probe.window is None and probe.gates == []
    assert not tracemalloc.is_tracing() and probe.collection is not None


def test_calls_while_the_window_closes_are_profiled_and_do_not_wait_for_it(monkeypatch):
    """A timed call that starts while the window closes (slowed by the collection and snapshot) is
    the window's (profiled), and its end does not wait for the close."""
    import threading
    import tracemalloc

    from tfdiag.capture import memory

    monkeypatch.setattr(memory, "WINDOW_S", 60.0)
    probe, series = _probe_with_series(memory, [])
    inside, release = threading.Event(), threading.Event()
    close_window = probe._close_window

    def slow_close(window):
        inside.set()
        release.wait(10)
        close_window(window)

    probe._close_window = slow_close
    probe._check("trace", series)
    window = probe.window
    closer = threading.Thread(target=window.end)
    closer.start()
    try:
        assert inside.wait(10)
        token = window.start("predict")
        assert token is window  # profiled: kept out of the timings
        stopper = threading.Thread(target=window.stop, args=(token,))
        stopper.start()
        stopper.join(5)
        assert not stopper.is_alive()  # its end did not wait for the close
    finally:
        release.set()
        closer.join(10)
    probe.close()
    assert window.finished and window.start("predict") is None and not tracemalloc.is_tracing()
