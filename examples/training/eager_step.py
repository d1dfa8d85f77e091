"""A custom training loop whose step runs eagerly: every step re-runs the layers' Python code.

The fix is a tf.function on the step function (train_step below), not an inference path:
the model is called with training=True under a GradientTape.
"""

import numpy as np
import tensorflow as tf

keras = tf.keras
model = keras.Sequential([keras.Input((4,))] + [keras.layers.Dense(4) for _ in range(8)])
optimizer = keras.optimizers.SGD(0.01)
x = np.random.default_rng(0).random((4, 4), dtype=np.float32)
y = np.random.default_rng(1).random((4, 4), dtype=np.float32)


def train_step(x, y):  # eager: add @tf.function to run each step as one graph
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss


for _ in range(60):
    train_step(x, y)
print("trained 60 eager steps")
