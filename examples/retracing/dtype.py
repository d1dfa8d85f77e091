"""A tf.function that retraces because callers pass float64 and float32 tensors."""

import numpy as np
import tensorflow as tf


@tf.function
def normalize(x):
    return (x - tf.reduce_mean(x)) / (tf.math.reduce_std(x) + 1e-6)


data = np.random.default_rng(0).random((4, 8))  # NumPy's default float64
normalize(tf.constant(data))                      # float64
normalize(tf.constant(data, dtype=tf.float32))    # float32: a second trace
normalize(tf.constant(data))                      # float64 again: cached
print("normalized 3 batches")
