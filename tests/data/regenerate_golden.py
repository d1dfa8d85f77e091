"""Regenerate golden_recording.json from a real run (python tests/data/regenerate_golden.py).

The golden recording lets analysis and rendering tests run without TensorFlow.
It holds: a Keras 3 predict() loop before/after compile (predict-overhead,
tfdata-retrace, model-rebuilt) and user functions retracing on shape and on a
Python float.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import tfdiag  # noqa: E402
from tfdiag import output  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

with tfdiag.diagnose(command=["golden"]) as d:
    import tensorflow as tf

    keras = tf.keras
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2), keras.layers.Dense(1)], name="tiny")
    x = np.ones((32, 4), dtype=np.float32)
    for _ in range(6):
        model.predict(x, verbose=0)
    model.compile(optimizer="adam", loss="mse")
    for _ in range(6):
        model.predict(x, verbose=0)

    @tf.function
    def encode(tokens):
        return tf.reduce_sum(tf.cast(tokens, tf.float32), axis=-1)

    for length in (5, 9, 13):
        encode(tf.ones((1, length), dtype=tf.int32))

    @tf.function
    def sample(logits, temperature):
        return tf.nn.softmax(logits / temperature)

    for temperature in (1.0, 0.95, 0.9):
        sample(tf.constant([[1.0, 2.0]]), temperature)

output.write_recording(os.path.join(HERE, "golden_recording.json"), d.recording, d.analysis)  # as recording.json
print("wrote", os.path.join(HERE, "golden_recording.json"), file=sys.stderr)
