"""Memory that levels off: the same predict_on_batch() loop without keeping the results.

After the first calls (tracing, TensorFlow's allocator pools) memory stays flat, and tfdiag
reports no memory-growth finding: the common case today.

    tfdiag analyze examples/memory/levels_off.py --calls 600
"""

import argparse

import numpy as np
import tensorflow as tf

parser = argparse.ArgumentParser()
parser.add_argument("--calls", type=int, default=600)
args = parser.parse_args()

keras = tf.keras
model = keras.Sequential([keras.Input(shape=(16,)), keras.layers.Dense(256 * 256), keras.layers.Reshape((256, 256))])
x = np.ones((1, 16), np.float32)
total = 0.0
for _ in range(args.calls):
    total += float(model.predict_on_batch(x)[0, 0, 0])  # a number kept, not the array
print(f"{args.calls} calls, total {total:.3f}")
