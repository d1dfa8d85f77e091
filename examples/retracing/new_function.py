"""A tf.function object created inside the loop: each one starts with an empty trace cache."""

import tensorflow as tf


def scaled(x):
    return x * 3.0


x = tf.ones((2, 2))
for _ in range(4):
    step = tf.function(scaled)  # a new tf.function object on every iteration
    step(x)
print("called 4 fresh tf.functions")
