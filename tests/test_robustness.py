"""Faults in the user's script, signals, threads, other profilers, bad input and long runs."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import tfdiag
from tfdiag import cli
from tfdiag.capture.call_stats import RESERVOIR_SIZE
from tfdiag.capture.collector import MAX_CALL_SAMPLES
from tfdiag.recording import load

from .conftest import DATA

pytestmark = pytest.mark.tf

LOOPING_SCRIPT = """
    import pathlib, sys
    import tensorflow as tf
    step = tf.function(lambda x: x * 2.0)
    for i in range(5):
        step(tf.ones((1, i + 1)))
    pathlib.Path(sys.argv[1]).write_text("ready")
    while True:
        step(tf.ones((1, 1)))
"""


def _start_looping(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent(LOOPING_SCRIPT))
    ready = tmp_path / "ready"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen([sys.executable, "-m", "tfdiag", "analyze", "--no-cprofile", "--no-tf-profiler",
                                "-o", str(tmp_path / "out"), str(script), str(ready)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 240
    while not ready.exists():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the script never became ready"
        time.sleep(0.1)
    time.sleep(0.3)
    return process


@pytest.mark.parametrize("sig, status, ended_by", [(signal.SIGTERM, 143, "terminated"),
                                                    (signal.SIGINT, 130, "interrupted")])
def test_signal_flushes_a_partial_report(tmp_path, sig, status, ended_by):
    process = _start_looping(tmp_path)
    try:
        process.send_signal(sig)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == status, err[-2000:]
    recording = load(tmp_path / "out" / "recording.json")
    assert recording.run["ended_by"] == ended_by
    step = [f for f in recording.functions if f["origin"] == "user"]
    assert step and step[0]["trace_count"] >= 5
    calls = sum(c["count"] for c in recording.calls if c["api"] == "tf.function")
    assert calls > 5
    assert "report.html" in err


@pytest.mark.parametrize("legacy", [False, True], ids=["keras3", "tf-keras"])
def test_eight_threads_exact_counts_and_per_thread_phases(legacy):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    if legacy:
        env["TF_USE_LEGACY_KERAS"] = "1"
    result = subprocess.run([sys.executable, str(DATA / "threads_probe.py")], capture_output=True, text=True,
                            env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert data["flavor"] == ("tf-keras" if legacy else "keras3")
    assert data["errors"] == []
    assert data["counts"] == {"__call__": 1600, "predict_on_batch": 1600, "tf.function": 1600, "predict": 80}
    assert data["user_traces"] == 1
    assert data["threads"] == [f"t{i}" for i in range(8)]
    assert data["bad_samples"] == 0
    # 600 calls a thread, one in 32 sampled: every thread has calls with a full phase split.
    assert data["sampled_threads"] == [f"t{i}" for i in range(8)]
    assert data["warnings"] == []


def test_sys_setprofile_already_held_is_reported_and_left_alone():
    import tensorflow as tf

    keras = tf.keras
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    x = np.ones((2, 4), np.float32)
    seen = []

    def other_profiler(frame, event, arg):
        seen.append(event)

    sys.setprofile(other_profiler)
    try:
        with tfdiag.diagnose(tf_profiler=False) as d:
            for _ in range(4):
                model.predict_on_batch(x)
        assert sys.getprofile() is other_profiler
    finally:
        sys.setprofile(None)
    assert any("sys.setprofile" in w["message"] for w in d.recording.warnings)
    assert d.recording.extra["cprofile"]["calls_profiled"] == 0
    assert sum(c["count"] for c in d.recording.calls) == 4
    assert seen


def test_unwritable_output_folder_is_a_usage_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    script = tmp_path / "s.py"
    script.write_text("print('never runs')\n")
    assert cli.main(["analyze", "-o", str(blocker / "out"), str(script)]) == 2
    captured = capsys.readouterr()
    assert "never runs" not in captured.out
    assert "cannot create output folder" in captured.err and len(captured.err.strip().splitlines()) == 1


def test_script_that_never_imports_tensorflow(tmp_path):
    script = tmp_path / "plain.py"
    script.write_text("print(sum(range(10)))\n")
    env = dict(os.environ)
    result = subprocess.run([sys.executable, "-m", "tfdiag", "analyze", "-o", str(tmp_path / "o"), str(script)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "45" in result.stdout
    assert "the code never imported TensorFlow" in (tmp_path / "o" / "report.html").read_text()


def test_long_run_keeps_memory_bounded(tmp_path):
    import tensorflow as tf

    step = tf.function(lambda t: t + 1.0)
    x = tf.ones((2,))
    with tfdiag.diagnose(cprofile=False, tf_profiler=False) as d:
        for _ in range(MAX_CALL_SAMPLES * 3):
            step(x)
    (call,) = [c for c in d.recording.calls if c["api"] == "tf.function"]
    assert call["count"] == MAX_CALL_SAMPLES * 3
    assert len(d.recording.call_samples) == MAX_CALL_SAMPLES
    assert d.recording.run["call_samples_total"] == MAX_CALL_SAMPLES * 3
    assert len(d.collector.calls[next(iter(d.collector.calls))].durations.items) == RESERVOIR_SIZE
    path = d.report(tmp_path / "r.html")
    assert os.path.getsize(path) < 3_000_000
    assert len(json.dumps(d.recording.to_dict())) < 2_000_000


def test_threads_left_running_are_waited_for_like_python_does(tmp_path):
    script = tmp_path / "bg.py"
    script.write_text(textwrap.dedent("""
        import threading, time
        from concurrent.futures import ThreadPoolExecutor
        import tensorflow as tf
        step = tf.function(lambda t: t + 1.0)
        def work():
            time.sleep(0.5)
            for _ in range(50):
                step(tf.ones((2,)))
        threading.Thread(target=work).start()
        ThreadPoolExecutor(2).submit(lambda: None)  # its idle worker must not block the report
    """))
    out = tmp_path / "o"
    assert cli.main(["analyze", "--no-cprofile", "--no-tf-profiler", "-o", str(out), str(script)]) == 0
    recording = load(out / "recording.json")
    assert sum(c["count"] for c in recording.calls if c["api"] == "tf.function") == 50


def test_relative_out_folder_is_fixed_before_the_script_changes_directory(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = tmp_path / "cd.py"
    script.write_text(f"import os\nos.chdir({str(elsewhere)!r})\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["analyze", "--no-cprofile", "--no-tf-profiler", "-o", "rel-out", str(script)]) == 0
    assert (tmp_path / "rel-out" / "report.html").exists()
    assert not (elsewhere / "rel-out").exists()


def test_stale_profiles_are_removed_from_a_reused_folder(tmp_path):
    from .conftest import EXAMPLES

    out = tmp_path / "o"
    assert cli.main(["analyze", "-o", str(out), str(EXAMPLES / "predict_loop.py"), "--calls", "3"]) == 0
    assert (out / "profile.prof").exists() and (out / "tensorboard").is_dir()
    assert cli.main(["analyze", "--no-cprofile", "--no-tf-profiler", "-o", str(out),
                     str(EXAMPLES / "retracing" / "shape.py")]) == 0
    assert not (out / "profile.prof").exists() and not (out / "tensorboard").exists()


def test_a_reused_diagnoser_starts_afresh():
    import tensorflow as tf

    runs = tfdiag.diagnose(cprofile=False, tf_profiler=False)
    with pytest.raises(ValueError):
        with runs:
            raise ValueError("first run fails")
    assert runs.recording.run["ended_by"] == "exception"
    with runs:
        tf.function(lambda t: t * 3.0)(tf.ones((1,)))
    assert runs.recording.run["ended_by"] == "returned"
    assert "exception" not in runs.recording.run


@pytest.mark.parametrize("change", [
    lambda d: d.update(cprofile=5),
    lambda d: d.update(alternatives=[1]),
    lambda d: d["calls"][0].update(batch="x"),
    lambda d: d["run"].update(wall_s="x"),
    lambda d: d["environment"].update(command=5),
])
def test_report_on_a_subtly_corrupt_recording_is_one_line(tmp_path, capsys, change):
    from .conftest import DATA

    data = json.loads((DATA / "golden_recording.json").read_text())
    change(data)
    path = tmp_path / "recording.json"
    path.write_text(json.dumps(data))
    status = cli.main(["report", str(path), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert status in (0, 2), err
    if status == 2:
        assert len(err.splitlines()) == 1 and "corrupt recording" in err


def test_a_signal_inside_a_gc_callback_is_recognised_and_not_raised_there():
    """A Ctrl-C or SIGTERM whose handler runs inside a gc callback is delivered again in ordinary
    code (raised there, Python would print "Exception ignored" and the script would run on)."""
    import gc

    from tfdiag import runner

    callback_code = []

    def callback(phase, info):
        callback_code.append(sys._getframe().f_code)

    gc.callbacks.append(callback)
    previous = runner._install_sigint_handler()
    try:
        assert previous is not None  # pytest keeps Python's default Ctrl-C handler
        frame = sys._getframe()
        gc.collect()
        assert runner._swallows_exceptions(frame) is False
        assert any(code is callback.__code__ for code in callback_code)
        # Simulate the handler being reached inside the callback: it must not raise there.
        inside = type("F", (), {"f_code": callback.__code__, "f_back": None})()
        assert runner._swallows_exceptions(inside) is True
    finally:
        gc.callbacks.remove(callback)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
