"""A custom training loop's wait for its batches, taken outside any timed call (capture/loop_inputs.py,
analysis/loop_input.py): real TensorFlow for the capture, a saved recording for the rule."""

import copy
import time

import pytest

from tfdiag.analysis import analyze
from tfdiag.recording import Recording

SLEEP_S = 0.01  # per element, in the map's py_function (a batch of 40 ms: tf.data prefetches it while a ~1-5 ms step runs)
ELEMENTS, BATCH = 32, 4


@pytest.fixture(scope="module")
def loop_run():
    """A loop over a tf.data pipeline whose map sleeps, stepping a tf.function that applies
    gradients; and a fit() over the same pipeline (its batches are taken inside the call)."""
    import numpy as np
    import tensorflow as tf

    import tfdiag

    keras = tf.keras

    def slow(i):
        time.sleep(SLEEP_S)
        return np.float32(i) * np.ones(4, np.float32)

    def load(i):
        x = tf.py_function(slow, [i], tf.float32)
        x.set_shape([4])
        return x, tf.ones([1])

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD(0.01)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    ds = tf.data.Dataset.range(ELEMENTS).map(load).batch(BATCH)
    with tfdiag.diagnose(cprofile=False, tf_profiler=False) as d:
        for x, y in ds:
            train_step(x, y)
    model.compile(optimizer="sgd", loss="mse")
    with tfdiag.diagnose(cprofile=False, tf_profiler=False) as fitted:
        model.fit(ds, epochs=1, verbose=0)
    return d.recording, fitted.recording


def test_the_loop_line_gets_its_wait_and_its_pipeline(loop_run):
    recording, _ = loop_run
    (entry,) = recording.extra["loop_inputs"]
    assert entry["call_site"].endswith("test_loop_input.py:48")  # the ``for x, y in ds`` line
    assert entry["count"] == ELEMENTS // BATCH  # every batch (the StopIteration that ends the loop is none)
    assert entry["total_s"] >= 0.75 * ELEMENTS * SLEEP_S
    assert entry["median_s"] >= 0.75 * BATCH * SLEEP_S
    producer = entry["producer"]
    assert producer["kind"] == "tf.data"
    assert [(m["name"], m["parallel"], m["py_function"]) for m in producer["map_functions"]] == [
        ("loop_run.<locals>.load", False, True)]


def test_the_loop_is_input_bound_naming_its_map(loop_run):
    recording, _ = loop_run
    (finding,) = [f for f in analyze(recording).findings if f["code"] == "input-bound"]
    assert finding["title"].startswith("the training loop at test_loop_input.py:48 is input-bound: ")
    assert "`loop_run.<locals>.load`" in finding["title"]
    assert finding["function"] == "train_step" and finding["details"]["loop"] is True
    # the map calls tf.py_function: cache its results (parallel calls of Python wait for the GIL)
    assert finding["fix"]["code"].startswith("ds = ds.map(loop_run.<locals>.load).cache()")
    assert finding["fix"]["verified"] is False and finding["severity"] in ("medium", "low")
    assert finding["details"]["share"] > 0.5


def test_batches_taken_inside_a_timed_call_are_not_a_loops(loop_run):
    _, fitted = loop_run
    assert "loop_inputs" not in fitted.extra


def _recording(wait_s: float, step_file: str = "/home/ana/loop.py") -> Recording:
    return Recording.from_dict({
        "schema_version": 1, "environment": {}, "run": {"wall_s": 10.0}, "functions": [], "call_samples": [],
        "phases": {}, "findings": [], "warnings": [],
        "calls": [{"api": "tf.function", "target": "train_step", "call_site": f"{step_file}:24", "count": 100,
                   "total_s": 1.0, "median_s": 0.01, "p95_s": 0.01, "first_s": 0.2, "training_step": True,
                   "training": True, "phases": {}, "input_signature": "float32[32, 4]", "phase_calls": 0}],
        "loop_inputs": [{"call_site": "/home/ana/loop.py:23", "count": 101, "total_s": wait_s, "max_s": 0.1,
                         "median_s": wait_s / 101, "producer": {"kind": "tf.data", "map_functions": []}}]})


def test_the_rule_on_a_saved_recording():
    found = [f for f in analyze(_recording(0.5)).findings if f["code"] == "input-bound"]
    # 0.5 s of waits against 100 steps at the steady rate: (1.0 - 0.2) s over the 99 after the first
    assert len(found) == 1 and "38% of its time" in found[0]["title"]
    assert found[0]["estimated_savings_s"] == pytest.approx(0.25)  # half the wait: an estimate
    assert not [f for f in analyze(_recording(0.04)).findings if f["code"] == "input-bound"]  # under 5%
    # the steps are in another file: not this loop's
    assert not [f for f in analyze(_recording(0.5, "/home/ana/other.py")).findings if f["code"] == "input-bound"]
    untouched = _recording(0.5)
    before = copy.deepcopy(untouched.to_dict())
    analyze(untouched)
    assert untouched.to_dict() == before  # analysis never writes into the recording


def test_the_tf_data_fix_changes_only_what_the_pipeline_does_not_do_yet():
    from tfdiag.analysis.tfdata_fix import tfdata_fix

    parse = {"name": "parse", "defined_at": "/home/ana/loop.py:8"}
    serial = tfdata_fix({"map_functions": [dict(parse, parallel=False)], "prefetched": True})
    assert serial["code"].splitlines()[0] == "ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)  # parse at loop.py:8"
    assert "prefetch(" not in serial["code"] and "it already prefetches" in serial["text"]
    assert "runs `parse` one element at a time" in serial["text"]
    parallel = tfdata_fix({"map_functions": [dict(parse, parallel=True)], "prefetched": False})
    assert "num_parallel_calls" not in parallel["code"] and "ds = ds.prefetch(tf.data.AUTOTUNE)" in parallel["code"]
    assert "already run in parallel" in parallel["text"]
    old = tfdata_fix({"map_functions": [parse]})  # a recording from before those fields
    assert "if it does not already" in old["text"] and "num_parallel_calls" in old["code"] and "prefetch(" in old["code"]
    assert "prefetch(" in tfdata_fix({"map_functions": []})["code"]


def test_a_steps_traces_are_not_the_loops_steady_time():
    """On a short loop the step's first call (its trace and first-run setup) can outweigh every
    wait: the share sets the wait against the steps at their steady rate, retraces left out."""
    raw = _recording(0.5).to_dict()
    # the first call: 0.2 s (0.15 s of it its trace); later calls 3.3 s, 2.5 s of it retraces
    raw["calls"][0].update(total_s=3.5, phases={"graph_creation": 2.65, "kernel_execution": 0.85},
                           first_phases={"graph_creation": 0.15, "other": 0.05})
    found = [f for f in analyze(Recording.from_dict(raw)).findings if f["code"] == "input-bound"]
    assert len(found) == 1 and "38% of its time" in found[0]["title"], [f["title"] for f in found]
    # a first call of 3 s (a long first run, little of it tracing) does not hide the loop's wait
    raw["calls"][0].update(total_s=3.8, first_s=3.0, phases={"graph_creation": 0.1, "kernel_execution": 3.7},
                           first_phases={"graph_creation": 0.1, "kernel_execution": 2.9})
    found = [f for f in analyze(Recording.from_dict(raw)).findings if f["code"] == "input-bound"]
    assert len(found) == 1 and "38% of its time" in found[0]["title"], [f["title"] for f in found]


def test_an_eager_steps_time_already_holds_the_loops_wait():
    """An eager step's time runs from one optimizer update to the next (custom_loops.py), so the
    batch the loop waited for is inside it: the share is the wait over the loop's time, not over
    the wait plus the steps."""
    raw = _recording(0.5).to_dict()
    raw["calls"][0].update(api="train_step", training_step=False)
    found = [f for f in analyze(Recording.from_dict(raw)).findings
             if f["code"] == "input-bound" and (f.get("details") or {}).get("loop")]
    assert len(found) == 1 and "50% of its time" in found[0]["title"], [f["title"] for f in found]


def test_a_parallel_prefetched_pipeline_is_a_low_note_with_only_cache_left():
    """The user's pipeline already maps in parallel and prefetches: the fix repeats neither, and the
    finding is a note (cache() is all that is left, and it helps only data that fits and does not change)."""
    raw = _recording(0.5).to_dict()
    raw["loop_inputs"][0]["producer"] = {"kind": "tf.data", "prefetched": True, "map_functions": [
        {"name": "preprocess", "defined_at": "/home/ana/loop.py:8", "parallel": True}]}
    (finding,) = [f for f in analyze(Recording.from_dict(raw)).findings if f["code"] == "input-bound"]
    assert finding["severity"] == "low" and "settled" not in finding["fix"]
    assert "num_parallel_calls" not in finding["fix"]["code"] and "prefetch(" not in finding["fix"]["code"]
    assert finding["fix"]["code"].startswith("ds = ds.cache()")
    assert "already run in parallel" in finding["fix"]["text"] and "it already prefetches" in finding["fix"]["text"]


def test_a_map_that_runs_python_is_told_to_cache_not_to_run_in_parallel():
    from tfdiag.analysis.tfdata_fix import tfdata_fix

    fix = tfdata_fix({"map_functions": [{"name": "tf_load", "defined_at": "/home/ana/loop.py:8", "parallel": False,
                                         "py_function": True}], "prefetched": False})
    assert fix["code"].splitlines()[0].startswith("ds = ds.map(tf_load).cache()  # tf_load at loop.py:8 runs Python")
    assert "num_parallel_calls=" not in fix["code"] and "ds = ds.prefetch(tf.data.AUTOTUNE)" in fix["code"]
    assert "holds the GIL" in fix["text"] and "end the pipeline with `prefetch`" in fix["text"]
