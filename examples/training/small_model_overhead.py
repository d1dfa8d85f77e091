"""A fit() of a tiny model on small batches: the fixed cost of every step dwarfs its kernels.

Each step's math is a few microseconds (an 8-feature linear model on 16 rows), but every step
still goes through Keras's Python loop, the callbacks and one graph call. The fix is to run
many steps per graph call: model.compile(..., steps_per_execution=32), which made this fit 2-4x
faster on 2 CPU cores (or a larger batch_size).
"""

import numpy as np
import tensorflow as tf

keras = tf.keras
rng = np.random.default_rng(0)
x = rng.random((4096, 8), dtype=np.float32)
y = x.sum(axis=1, keepdims=True)
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(1)])
model.compile(optimizer="sgd", loss="mse")  # one step per graph call: add steps_per_execution=32
model.fit(x, y, batch_size=16, epochs=2, verbose=0)
print("trained 2 epochs of 256 steps")
