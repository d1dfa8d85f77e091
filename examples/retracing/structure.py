"""A tf.function that retraces because the list it receives grows."""

import tensorflow as tf


@tf.function
def total(parts):
    return tf.add_n(parts)


for n in (2, 3, 4):
    total([tf.ones((3,)) for _ in range(n)])
print("summed 3 lists")
