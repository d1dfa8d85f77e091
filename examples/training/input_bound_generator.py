"""A fit() on a Python generator that parses every sample in Python: each step waits on its input.

``parse_batches`` turns 256 CSV lines into floats value by value, on every step and every epoch,
and that costs far more than the training step itself (a small 512-feature model: 25 ms of
parsing against 1 ms of training per batch, measured on 2 CPU cores). The fix is to parse
vectorised, and once: decode the file with np.loadtxt (or tf.io.decode_csv in a tf.data map with
num_parallel_calls), then feed fit() a tf.data.Dataset with .cache().prefetch(), or arrays.
"""

import numpy as np
import tensorflow as tf

keras = tf.keras
FEATURES = 512
rng = np.random.default_rng(0)
LINES = [",".join(f"{v:.4f}" for v in row) for row in rng.random((2048, FEATURES))]  # a CSV file's lines
TARGETS = rng.random((2048, 1)).astype(np.float32)


def parse_batches(batch_size=256):
    """Yields (features, targets) forever, parsing each line in Python on every pass."""
    while True:
        for start in range(0, len(LINES), batch_size):
            rows = [[float(v) for v in line.split(",")] for line in LINES[start:start + batch_size]]
            yield np.array(rows, np.float32), TARGETS[start:start + batch_size]


model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")
model.fit(parse_batches(), steps_per_epoch=8, epochs=3, verbose=0)
print("trained 3 epochs of 8 steps on parsed batches")
