"""The TF Profiler over a few fit()/evaluate() steps (capture/step_profiler.py): the wait for a
tf.data pipeline inside the train function's graph is data_adapter time, not kernel time, on
Keras 3 and tf-keras; the profiled steps and the profiler's start and stop stay out of the step
statistics; the kernel cross-check is not fooled by fit rows."""

import json
import time

import pytest

import tfdiag
from tfdiag.capture import steps as steps_mod, trace_ops
from tfdiag.recording import PHASES

from .conftest import run_tfdiag

SLOW_PIPELINE = """
import time, numpy as np
import tensorflow as tf
keras = tf.keras
x = np.random.rand(512, 8).astype("float32"); y = np.random.rand(512, 1).astype("float32")
def slow(a, b):
    def py(a):
        time.sleep(0.02)
        return a
    a = tf.py_function(py, [a], tf.float32)
    a.set_shape([None, 8])
    return a, b
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).map(slow)
m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(1)])
m.compile("adam", "mse")
m.fit(ds, epochs=2, verbose=0)
"""


def _fit(calls):
    return next(c for c in calls if c["api"] == "fit")


def _check_slow_pipeline(recording: dict) -> None:
    fit = _fit(recording["calls"])
    split = fit["step_phases"]
    step = sum(split.values())
    assert split["data_adapter"] > 0.5 * step, split  # ~20 ms of a ~21 ms step is the pipeline
    assert split["data_adapter"] > split["kernel_execution"], split
    # the profiler's in-graph wait, plus what Python's own data_adapter entry points took per step
    moved = fit["graph_tf_data_s_per_step"]
    assert moved <= split["data_adapter"] <= moved * 1.1 + 1e-4, (moved, split)
    # steps 3-6 ran under the profiler (3 unmarked: the pipeline got ahead while it started)
    assert fit["profiled_steps"] == 4 and fit["step_timeline"]["profiled_steps"] == [2, 3, 4, 5]
    later = fit["steps"] - fit["count"] - 0.5
    assert recording["phases"]["data_adapter"] >= fit["graph_tf_data_s_per_step"] * later
    section = recording["tf_profiler"]
    assert [w["steps"] for w in section["step_windows"]] == [[4, 5, 6]]
    assert [(s["api"], s["calls_profiled"]) for s in section["step_sites"]] == [("fit", 3)]


@pytest.mark.tf
def test_keras3_fit_tf_data_wait_is_data_adapter(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(SLOW_PIPELINE)
    result = run_tfdiag("analyze", "--no-cprofile", "-o", str(tmp_path / "out"), str(script))
    assert result.returncode == 0, result.stderr[-3000:]
    recording = json.loads((tmp_path / "out" / "recording.json").read_text())
    _check_slow_pipeline(recording)
    assert list((tmp_path / "out" / "tensorboard" / "steps" / "fit-1").rglob("*.xplane.pb"))
    assert "input-bound" in result.stdout + result.stderr


@pytest.mark.tf
def test_tf_keras_fit_tf_data_wait_is_data_adapter(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(SLOW_PIPELINE)
    result = run_tfdiag("analyze", "--no-cprofile", "-o", str(tmp_path / "out"), str(script),
                        env_extra={"TF_USE_LEGACY_KERAS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    recording = json.loads((tmp_path / "out" / "recording.json").read_text())
    assert recording["environment"]["keras_flavor"] == "tf-keras"
    _check_slow_pipeline(recording)


@pytest.mark.tf
def test_profiler_start_and_stop_land_in_no_step_and_no_phase(monkeypatch):
    """A slow profiler start (0.3 s here) is charged nowhere: not to the steps' durations, their
    median or split, nor to the call's phases; arrays gain no meaningful data_adapter share."""
    from tfdiag.capture.tf_profiler import TfProfilerGate

    real = TfProfilerGate.start_session

    def slow_start(self, under=None):
        time.sleep(0.3)
        return real(self, under)

    monkeypatch.setattr(TfProfilerGate, "start_session", slow_start)
    import numpy as np
    import keras

    x, y = np.random.rand(256, 8).astype("float32"), np.random.rand(256, 1).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with tfdiag.diagnose(cprofile=False) as d:
        model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    fit = _fit(d.recording.calls)
    assert fit["profiled_steps"] == 4 and fit["tf_profiler_s"] >= 0.3
    assert max(fit["step_timeline"]["durations_s"][1:]) < 0.25
    assert fit["step_median_s"] < 0.1 and sum(fit["step_phases"].values()) < 0.1
    assert sum(fit["phases"][p] for p in PHASES) < fit["total_s"] - 0.25
    assert fit["step_phases"]["data_adapter"] < 0.25 * sum(fit["step_phases"].values())
    assert not [row for row in d.analysis.kernel_check if row["api"] == "fit"]


def test_no_tf_profiler_profiles_no_step():
    import numpy as np
    keras = pytest.importorskip("keras")

    x, y = np.ones((64, 4), "float32"), np.ones((64, 1), "float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with tfdiag.diagnose(cprofile=False, tf_profiler=False) as d:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    fit = _fit(d.recording.calls)
    assert "profiled_steps" not in fit and "graph_tf_data_s_per_step" not in fit
    assert "profiled_steps" not in fit["step_timeline"] and "tf_profiler" not in d.recording.extra


# -- the move, on synthetic rows ---------------------------------------------------------------
def _site(wait, running, steps=None):
    return {"api": "fit", "call_site": "s.py:3", "graph_tf_data_s_per_call": wait,
            "graph_function_s_per_call": running,
            "steps": steps or [{"graph_function_s": running, "graph_tf_data_s": wait}]}


def _call(kernel, steps=11, count=1, producer=None):
    split = dict.fromkeys(PHASES, 0.0)
    split["kernel_execution"] = kernel
    whole = dict.fromkeys(PHASES, 0.0)
    whole["kernel_execution"] = 1.0
    return {"api": "fit", "call_site": "s.py:3", "steps": steps, "count": count, "step_phases": split,
            "phases": whole, "data_producer": producer or {"kind": "tf.data", "seconds": None}}


def test_move_step_tf_data_shares_the_wait():
    call = _call(0.010)
    totals = {"kernel_execution": 2.0, "data_adapter": 0.0}
    trace_ops.move_step_tf_data([call], totals, [_site(0.004, 0.005)])
    assert call["step_phases"]["data_adapter"] == pytest.approx(0.008)  # 80% of the kernel time
    assert call["step_phases"]["kernel_execution"] == pytest.approx(0.002)
    assert call["graph_tf_data_s_per_step"] == pytest.approx(0.008)
    assert call["phases"]["data_adapter"] == pytest.approx(0.08)  # 10 steps after the first
    assert totals == pytest.approx({"kernel_execution": 1.92, "data_adapter": 0.08})


def test_move_step_tf_data_keeps_the_least_busy_time_and_skips_timed_producers():
    call = _call(0.003)
    trace_ops.move_step_tf_data([call], {}, [_site(0.004, 0.005, [{"graph_function_s": 0.005,
                                                                     "graph_tf_data_s": 0.0025}])])
    # a share of 0.8 would leave 0.6 ms, below the 2.5 ms the profiled step's functions ran besides
    assert call["step_phases"]["kernel_execution"] == pytest.approx(0.0025)
    timed = _call(0.010, producer={"kind": "PyDataset", "seconds": 0.3})
    trace_ops.move_step_tf_data([timed], {}, [_site(0.004, 0.005)])
    assert timed["step_phases"]["kernel_execution"] == 0.010 and "graph_tf_data_s_per_step" not in timed


def test_profiled_steps_stay_out_of_the_step_statistics():
    log = steps_mod.StepLog("train", {}, None, False)
    for n, seconds in enumerate([1.0, 0.01, 0.5, 0.5, 0.5, 0.01, 0.01]):
        log.begin = 10.0 * n
        log.in_window = 3 <= n + 1 <= 5
        log.close(10.0 * n + seconds, None, "train")
    assert log.profiled_steps == [2, 3, 4]
    site = steps_mod.add(None, log, False)
    assert sorted(site.durations.items) == pytest.approx([0.01, 0.01, 0.01])
    assert site.steady_steps == 3 and site.steady_s == pytest.approx(0.03)
    out = site.section(1)
    assert out["profiled_steps"] == 3 and out["step_timeline"]["profiled_steps"] == [2, 3, 4]
    assert out["step_median_s"] == pytest.approx(0.01)


@pytest.mark.tf
def test_an_open_call_window_ends_before_fit_steps():
    """The call gate's window (open between its calls) ends when a fit() begins: the fit's steps
    do not run under it, and the step window opens; the call profiled so far is kept."""
    import numpy as np
    import keras
    import tensorflow as tf

    x, y = np.ones((64, 8), "float32"), np.ones((64, 1), "float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with tfdiag.diagnose(cprofile=False) as d:
        step = tf.function(lambda t: model(t))
        for _ in range(3):
            step(x)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        for _ in range(2):
            step(x)
    section = d.recording.extra["tf_profiler"]
    assert section["calls_profiled"] == 1 and [s["api"] for s in section["call_sites"]] == ["tf.function"]
    assert [(w["steps"], w["blocked_by"]) for w in section["step_windows"]] == [([4, 5, 6], None)]
    assert _fit(d.recording.calls)["profiled_steps"] == 4 and not d.recording.warnings
