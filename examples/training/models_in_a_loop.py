"""A new model built, compiled and fitted for every epoch: its training function is traced again each time.

To lower the learning rate epoch by epoch, the loop rebuilds the model with ``build(lr)``, copies
the weights over and fits one epoch. Every pass makes a new model, a new optimizer (its state is
lost) and a new train function, traced from scratch. The fix is to build and compile once and
change the rate with a callback: model.fit(x, y, epochs=5,
callbacks=[keras.callbacks.LearningRateScheduler(lambda epoch: RATES[epoch])]).
"""

import numpy as np
import tensorflow as tf

keras = tf.keras
RATES = [1e-2, 5e-3, 2e-3, 1e-3, 5e-4]
rng = np.random.default_rng(0)
x = rng.random((256, 8), dtype=np.float32)
y = x.sum(axis=1, keepdims=True)


def build(lr):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    return model


weights = None
for lr in RATES:
    model = build(lr)  # a new model and train function every epoch: build once, outside the loop
    if weights is not None:
        model.set_weights(weights)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    weights = model.get_weights()
print(f"trained {len(RATES)} epochs, one model per epoch")
