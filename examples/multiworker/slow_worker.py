"""One worker of a two-worker MultiWorkerMirroredStrategy job, where worker 1 is slow in every step.

Run each worker with its TF_CONFIG (tf-keras, as TensorFlow's multi-worker tutorial does):

    export TF_USE_LEGACY_KERAS=1
    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]}, "task": {"type": "worker", "index": 0}}' \
        tfdiag analyze -o runs/worker-0 slow_worker.py &
    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]}, "task": {"type": "worker", "index": 1}}' \
        tfdiag analyze -o runs/worker-1 slow_worker.py
    tfdiag merge runs/worker-0 runs/worker-1 -o runs/merged

``tfdiag merge`` names worker:1 as the straggler, from its callback; worker:0's wait for it inside
the all-reduce shows as worker:0's kernel time, and the finding says it is waiting.
"""

import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf

keras = tf.keras  # tf-keras with TF_USE_LEGACY_KERAS=1

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--steps", type=int, default=10, help="steps per epoch")
args = parser.parse_args()
task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
strategy = tf.distribute.MultiWorkerMirroredStrategy()


class LogEveryBatch(keras.callbacks.Callback):
    """Stands for per-batch logging that only worker 1 does (50 ms a batch)."""

    def on_train_batch_end(self, batch, logs=None):
        if task == 1:
            time.sleep(0.05)


x = np.random.rand(320, 4).astype("float32")
y = np.random.rand(320, 1).astype("float32")
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()
with strategy.scope():
    model = keras.Sequential([keras.layers.Dense(8, input_shape=(4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
model.fit(data, epochs=args.epochs, steps_per_epoch=args.steps, verbose=0, callbacks=[LogEveryBatch()])
