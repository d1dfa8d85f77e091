"""Run the capture scenarios of tests/test_capture_cases.py under tfdiag.diagnose(), print JSON.

Fresh process, so TF_USE_LEGACY_KERAS (tf-keras) can be chosen before TensorFlow loads:
    TF_USE_LEGACY_KERAS=1 python tests/data/capture_probe.py
Lines the test checks carry a ``# @name`` marker; the test reads their numbers off this file.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import tfdiag  # noqa: E402


def _keep(diagnoser) -> dict:
    recording = diagnoser.recording
    return {"calls": recording.calls, "functions": recording.functions, "warnings": recording.warnings,
            "call_samples": recording.call_samples}


out = {}

# A 60-call predict loop with the default options: cProfile and the TF Profiler take some calls.
with tfdiag.diagnose() as d:
    import tensorflow as tf

    keras = tf.keras
    tiny = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)], name="tiny")
    x = np.ones((32, 4), np.float32)

    def predict_loop():  # @predict_loop
        for _ in range(60):
            tiny.predict(x, verbose=0)  # @predict

    predict_loop()
out["predict_loop"] = _keep(d)
out["flavor"] = d.recording.environment["keras_flavor"]

# A custom training loop whose tf.function step retraces on calls 2 and 4 (a new Python value),
# which cProfile and the TF Profiler take with the default options.
with tfdiag.diagnose() as d:
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)], name="net")
    optimizer = keras.optimizers.SGD(0.01)

    @tf.function
    def train_step(features, labels, scale):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((net(features, training=True) - labels) ** 2) * scale
        grads = tape.gradient(loss, net.trainable_variables)
        optimizer.apply_gradients(zip(grads, net.trainable_variables))
        return loss

    features, labels = tf.ones((8, 4)), tf.ones((8, 1))
    for scale in [1.0, 2.0, 2.0, 3.0] + [3.0] * 16:
        train_step(features, labels, scale)
out["retrace_loop"] = _keep(d)

# An eager GradientTape loop, a model called under a tape without training=True, and plain calls;
# a tf.function given nested inputs.
with tfdiag.diagnose(cprofile=False, tf_profiler=False) as d:
    for _ in range(5):
        with tf.GradientTape() as tape:
            prediction = net(features, training=True)  # @eager_training
        with tf.GradientTape() as tape:
            prediction = net(features)  # @under_tape
        net(features)  # @inference
        if out["flavor"] == "tf-keras":  # Keras 3 takes only tensors by position
            net(features, True)  # @positional_training

    @tf.function
    def nested(batch, config):
        return batch["a"] * 2.0 + tf.cast(batch["b"], tf.float32)

    nested({"b": tf.ones((2,), tf.int32), "a": tf.ones((2,))}, 3)  # @nested
out["eager"] = _keep(d)

# fit -> evaluate -> predict, and models created and compiled in a loop.
with tfdiag.diagnose(cprofile=False, tf_profiler=False) as d:
    data_x, data_y = np.ones((64, 4), np.float32), np.ones((64, 1), np.float32)

    def make_model(name):
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name=name)  # @make_model

    model = make_model("fitted")  # @fitted_created
    model.compile(optimizer="sgd", loss="mse")  # @fitted_compiled
    model.fit(data_x, data_y, epochs=1, batch_size=32, verbose=0)
    model.evaluate(data_x, data_y, batch_size=32, verbose=0)
    model.compile(optimizer="adam", loss="mse")  # @recompiled
    model.fit(data_x, data_y, epochs=1, batch_size=32, verbose=0)
    model.predict(data_x, batch_size=32, verbose=0)

    for index in range(3):
        looped = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name=f"looped{index}")  # @looped_created
        looped.compile(optimizer="sgd", loss="mse")  # @looped_compiled
        looped.fit(data_x, data_y, epochs=1, batch_size=32, verbose=0)
out["keras_functions"] = _keep(d)

json.dump(out, sys.stdout)
