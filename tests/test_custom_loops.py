"""Custom training loops found by where gradients are applied (capture/custom_loops.py), on real Keras."""

import pytest

from .test_training_capture import _line, _run

pytestmark = pytest.mark.tf

GAN = """
    import numpy as np
    import tensorflow as tf
    keras = tf.keras
    g = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
    d = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    og, od = keras.optimizers.Adam(), keras.optimizers.Adam()
    x = np.ones((8, 4), "float32")

    def gan_step(x):
        with tf.GradientTape() as t:
            loss = tf.reduce_mean(d(g(x, training=True), training=True))
        od.apply_gradients(zip(t.gradient(loss, d.trainable_variables), d.trainable_variables))
        with tf.GradientTape() as t:
            loss = -tf.reduce_mean(d(g(x, training=True), training=True))
        og.apply_gradients(zip(t.gradient(loss, g.trainable_variables), g.trainable_variables))

    for _ in range(12):
        gan_step(x)
"""


def test_a_step_applying_two_optimizers_is_one_step(tmp_path):
    recording, script = _run(tmp_path, GAN)
    (step,) = [c for c in recording.calls if c["api"] == "train_step"]
    assert step["target"] == "gan_step" and step["count"] == 12
    assert step["defined_at"] == f"{script}:{_line(GAN, 'def gan_step')}"
    assert step["call_site"] == f"{script}:{_line(GAN, '    gan_step(x)')}"
