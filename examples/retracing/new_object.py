"""A tf.function that retraces because a new config object is passed on every call."""

import tensorflow as tf


class Scale:
    def __init__(self, factor):
        self.factor = factor


@tf.function
def apply(x, cfg):
    return x * cfg.factor


x = tf.ones((2, 2))
for _ in range(4):
    apply(x, Scale(2.0))  # a new object each time: compared by identity
print("applied 4 times")
