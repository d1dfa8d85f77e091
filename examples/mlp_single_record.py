"""The question's second experiment: a 256-384-384-256-128-32 MLP predicting single records.

    tfdiag analyze examples/mlp_single_record.py --records 20
"""

import argparse

import numpy as np
import tensorflow as tf

parser = argparse.ArgumentParser()
parser.add_argument("--records", type=int, default=20)
args = parser.parse_args()

keras = tf.keras
model = keras.Sequential(
    [keras.Input(shape=(256,))]
    + [keras.layers.Dense(units, activation="relu") for units in (384, 384, 256, 128)]
    + [keras.layers.Dense(32)]
)
records = np.random.default_rng(0).random((args.records, 256), dtype=np.float32)

outputs = []
for record in records:
    outputs.append(model.predict(record[None, :], verbose=0))
print(f"predicted {len(outputs)} records one at a time, output shape {outputs[-1].shape}")
