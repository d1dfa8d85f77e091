"""Capture of training: fit/evaluate/train_on_batch steps, callbacks, data producers and custom
loops, on real Keras 3 and tf-keras (tiny models, few steps). The autouse fixture checks that
no patch is left behind (the callback classes' hooks included)."""

import textwrap

import pytest

from tfdiag import cli
from tfdiag.recording import PHASES, load

pytestmark = pytest.mark.tf

FIT = """
    import time
    import numpy as np
    import {keras} as keras

    class SlowData(keras.utils.{dataset}):
        def __init__(self):
            super().__init__()

        def __len__(self):
            return 6

        def __getitem__(self, i):
            time.sleep(0.04)
            return np.ones((8, 4), "float32"), np.ones((8, 1), "float32")

    class SlowCallback(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.01)

    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    m.compile("sgd", "mse")
    m.fit(SlowData(), epochs=2, verbose=0, callbacks=[SlowCallback()])
    m.evaluate(np.ones((32, 4)), np.ones((32, 1)), batch_size=8, verbose=0)
    for _ in range(3):
        m.train_on_batch(np.ones((8, 4)), np.ones((8, 1)))
"""


def _line(body: str, text: str) -> int:
    """The line of the script (as ``_run`` writes it) that holds ``text``."""
    return textwrap.dedent(body).splitlines().index(next(
        line for line in textwrap.dedent(body).splitlines() if text in line)) + 1


def _run(tmp_path, body: str):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    out = tmp_path / "out"
    assert cli.main(["analyze", "--no-cprofile", "--no-tf-profiler", "-o", str(out), str(script)]) == 0
    return load(out / "recording.json"), str(script)


@pytest.mark.parametrize("keras, dataset", [("keras", "PyDataset"), ("tf_keras", "Sequence")])
def test_fit_steps_callbacks_and_producer(tmp_path, keras, dataset):
    body = FIT.format(keras=keras, dataset=dataset)
    recording, script = _run(tmp_path, body)
    calls = {c["api"]: c for c in recording.calls}
    fit = calls["fit"]
    assert fit["training"] is True and fit["count"] == 1
    assert fit["steps"] == 12 and fit["epochs"] == 2 and fit["steps_per_epoch"] == [6, 6]
    assert fit["steps_per_execution"] == 1 and fit["run_eagerly"] is False
    timeline = fit["step_timeline"]
    assert timeline["stride"] == 1 and len(timeline["durations_s"]) == 12 and timeline["epoch_starts"] == [0, 6]
    assert fit["first_step_s"] == timeline["durations_s"][0] > fit["step_median_s"]
    # Each step waits for a 40 ms batch made on tf.data's thread (made while the step's 10 ms
    # callback and its few ms of work run), and sleeps 10 ms in the callback.
    assert 0.04 <= fit["step_median_s"] < 0.07
    steady = fit["step_phases"]
    assert set(steady) == set(PHASES)
    assert abs(sum(steady.values()) - fit["step_median_s"]) < 0.01
    assert 0.008 <= steady["callbacks"] < 0.015
    assert steady["data_adapter"] > 0.015 and steady["other"] < 0.003
    assert fit["first_step_phases"]["graph_creation"] > 0
    slow = fit["callbacks"][0]
    assert slow["name"] == "SlowCallback" and slow["user"] is True and slow["calls"] == 12
    assert slow["defined_at"] == f"{script}:{_line(body, 'class SlowCallback')}" and 0.009 < slow["per_step_s"] < 0.015
    assert all(not c["user"] for c in fit["callbacks"][1:])
    producer = fit["data_producer"]
    assert producer["kind"] == dataset and producer["name"] == "SlowData.__getitem__"
    assert producer["defined_at"] == f"{script}:{_line(body, 'def __getitem__')}" and producer["batches"] >= 12
    assert producer["seconds"] >= 0.04 * 12
    assert abs(fit["phases"]["callbacks"] - 12 * 0.01) < 0.03
    evaluate = calls["evaluate"]
    assert evaluate["training"] is False and evaluate["steps"] == 4
    assert evaluate["data_producer"]["kind"] == "arrays" and evaluate["callbacks"] == []
    on_batch = calls["train_on_batch"]
    assert on_batch["training"] is True and on_batch["steps"] == 3 and on_batch["steps_per_execution"] == 1
    assert recording.phases["callbacks"] > 0.1


LOOP = """
    import time
    import tensorflow as tf
    import keras

    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD()
    x, y = tf.ones((8, 4)), tf.ones((8, 1))

    def eager_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((m(x, training=True) - y) ** 2)
        grads = tape.gradient(loss, m.trainable_variables)
        opt.apply_gradients(zip(grads, m.trainable_variables))

    for _ in range(6):
        eager_step(x, y)

    @tf.function
    def graph_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((m(x, training=True) - y) ** 2)
        grads = tape.gradient(loss, m.trainable_variables)
        opt.apply_gradients(zip(grads, m.trainable_variables))
        return loss

    @tf.function
    def not_a_step(x):
        return x * 2

    for _ in range(4):
        graph_step(x, y)
        not_a_step(x)
    m.compile("sgd", "mse")
    m.fit(x, y, verbose=0)
"""


def test_custom_loops_eager_step_and_traced_training_step(tmp_path):
    recording, script = _run(tmp_path, LOOP)
    steps = [c for c in recording.calls if c["api"] == "train_step"]
    assert len(steps) == 1  # fit()'s own gradient applications are not a custom loop
    step = steps[0]
    assert step["target"] == "eager_step" and step["eager"] is True and step["training"] is True
    assert step["count"] == 6 and step["call_site"] == f"{script}:{_line(LOOP, '    eager_step(x, y)')}"
    assert step["defined_at"] == f"{script}:{_line(LOOP, 'def eager_step')}"
    assert step["median_s"] > 0 and step["phase_calls"] == 0 and not any(step["phases"].values())
    functions = {f["name"]: f for f in recording.functions if f["origin"] == "user"}
    assert functions["graph_step"]["training_step"] is True
    assert functions["not_a_step"]["training_step"] is False
    graph_calls = [c for c in recording.calls if c["api"] == "tf.function"]
    assert {c["target"]: c["training_step"] for c in graph_calls} == {"graph_step": True, "not_a_step": None}
    # The train_step entries stay out of the top-level totals (their time is in the model calls).
    assert recording.phases["wall_s"] == pytest.approx(sum(c["total_s"] for c in recording.calls
                                                           if c["api"] != "train_step"))


def test_generator_producer_is_named(tmp_path):
    body = """
        import numpy as np
        import keras

        def batches():
            while True:
                yield np.ones((4, 2), "float32"), np.ones((4, 1), "float32")

        m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        m.compile("sgd", "mse", steps_per_execution=2)
        m.fit(batches(), steps_per_epoch=4, epochs=1, verbose=0)
    """
    recording, script = _run(tmp_path, body)
    fit = next(c for c in recording.calls if c["api"] == "fit")
    assert fit["steps_per_execution"] == 2 and fit["steps"] == 2  # one step per execution
    producer = fit["data_producer"]
    assert producer["kind"] == "generator" and producer["name"] == "batches"
    assert producer["defined_at"] == f"{script}:{_line(body, 'def batches')}" and producer["batches"] >= 4
    # the first batch it made, for a fix's output_signature
    assert producer["batch_spec"] == [{"shape": [4, 2], "dtype": "float32"}, {"shape": [4, 1], "dtype": "float32"}]


def test_a_long_fit_is_split_from_sampled_steps(tmp_path):
    """Past its first steps a fit measures one step in a few (steps.py); the call's phases still add
    up to its wall time and keep the callbacks' share."""
    body = """
        import time
        import numpy as np
        import keras

        class Sleepy(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                time.sleep(0.003)

        m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        m.compile("sgd", "mse")
        m.fit(np.ones((400, 4)), np.ones((400, 1)), batch_size=4, epochs=1, verbose=0, callbacks=[Sleepy()])
    """
    recording, _ = _run(tmp_path, body)
    fit = next(c for c in recording.calls if c["api"] == "fit")
    assert fit["steps"] == 100 and fit["callbacks"][0]["calls"] == 100
    assert sum(fit["phases"].values()) == pytest.approx(fit["total_s"], rel=1e-6)
    assert fit["phases"]["callbacks"] == pytest.approx(100 * 0.003, rel=0.3)
    assert fit["callbacks"][0]["per_step_s"] == pytest.approx(0.003, rel=0.3)


def test_tf_data_producer_names_the_map_function(tmp_path):
    body = """
        import numpy as np
        import tensorflow as tf
        import keras

        def parse(x, y):
            return x * 2, y

        ds = tf.data.Dataset.from_tensor_slices((np.ones((32, 4), "float32"), np.ones((32, 1), "float32")))
        m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        m.compile("sgd", "mse")
        m.fit(ds.map(parse).batch(8), epochs=1, verbose=0)
    """
    recording, script = _run(tmp_path, body)
    producer = next(c for c in recording.calls if c["api"] == "fit")["data_producer"]
    assert producer["kind"] == "tf.data" and producer["seconds"] is None
    assert producer["map_functions"] == [{"name": "parse", "defined_at": f"{script}:{_line(body, 'def parse')}",
                                          "parallel": False, "py_function": False}]  # no num_parallel_calls
    assert producer["prefetched"] is False


def test_a_callback_working_once_per_epoch_costs_nothing_per_step(tmp_path):
    body = """
        import time
        import numpy as np
        import keras

        class EpochEval(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                time.sleep(0.05)

        class PerBatch(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                time.sleep(0.002)

        x, y = np.ones((64, 4), "float32"), np.ones((64, 1), "float32")
        m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        m.compile("sgd", "mse")
        m.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[EpochEval(), PerBatch()])
    """
    recording, _ = _run(tmp_path, body)
    fit = next(c for c in recording.calls if c["api"] == "fit")
    callbacks = {c["name"]: c for c in fit["callbacks"]}
    assert callbacks["EpochEval"]["seconds"] >= 0.1 and callbacks["EpochEval"]["per_step_s"] == 0.0
    assert 0.002 <= callbacks["PerBatch"]["per_step_s"] < 0.004
    assert not [f for f in recording.findings if f["code"] == "callback-bound" and "EpochEval" in f["title"]]
