"""Memory that grows with the user's own objects: every prediction kept in a list.

Each predict_on_batch() returns a new 256x256 float32 array (256 KiB) and the loop keeps
all of them, so memory grows by about 0.25 MB per call however well TensorFlow behaves.

    tfdiag analyze examples/memory/kept_predictions.py --calls 300
"""

import argparse

import numpy as np
import tensorflow as tf

parser = argparse.ArgumentParser()
parser.add_argument("--calls", type=int, default=300)
args = parser.parse_args()

keras = tf.keras
model = keras.Sequential([keras.Input(shape=(16,)), keras.layers.Dense(256 * 256), keras.layers.Reshape((256, 256))])
x = np.ones((1, 16), np.float32)
predictions = []
for _ in range(args.calls):
    predictions.append(model.predict_on_batch(x))  # every result kept: the list only grows
print(f"kept {len(predictions)} predictions")
