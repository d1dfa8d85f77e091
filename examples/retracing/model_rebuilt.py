"""A Keras model re-compiled inside the loop: its predict function is thrown away and traced again."""

import numpy as np
import tensorflow as tf

keras = tf.keras
model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2), keras.layers.Dense(1)])
x = np.ones((8, 4), dtype=np.float32)
for _ in range(3):
    model.compile(optimizer="sgd", loss="mse")  # discards the traced predict function
    model.predict_on_batch(x)
print("predicted 3 times")
