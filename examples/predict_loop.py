"""The question's experiment: a tiny Dense(2) -> Dense(1) model's predict() in a loop,
before and after compile(), on today's Keras (Keras 3 or tf-keras with TF_USE_LEGACY_KERAS=1).

    tfdiag analyze examples/predict_loop.py --calls 20
"""

import argparse
import time

import numpy as np
import tensorflow as tf

parser = argparse.ArgumentParser()
parser.add_argument("--calls", type=int, default=20)
parser.add_argument("--batch", type=int, default=32)
args = parser.parse_args()

keras = tf.keras
model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2), keras.layers.Dense(1)])
x = np.random.default_rng(0).random((args.batch, 4), dtype=np.float32)


def timed_loop(label):
    times = []
    for _ in range(args.calls):
        start = time.perf_counter()
        model.predict(x, verbose=0)
        times.append(time.perf_counter() - start)
    print(f"{label}: median {1000 * float(np.median(times)):.1f} ms per predict() call")


timed_loop("before compile")
model.compile(optimizer="adam", loss="mse")
timed_loop("after compile")
