"""A tf.function that retraces because a Python float changes on every call."""

import tensorflow as tf


@tf.function
def sample(logits, temperature):
    return tf.nn.softmax(logits / temperature)


logits = tf.constant([[1.0, 2.0, 3.0]])
for temperature in (1.0, 0.95, 0.9, 0.85):
    sample(logits, temperature)
print("sampled at 4 temperatures")
