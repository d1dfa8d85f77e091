"""Run the phase-attribution scenarios under tfdiag.diagnose() and print the split as JSON.

Run in a fresh process so TF_USE_LEGACY_KERAS (tf-keras) can be chosen before TensorFlow loads:
    TF_USE_LEGACY_KERAS=1 python tests/data/phase_probe.py
"""

import json
import os
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import tfdiag  # noqa: E402

with tfdiag.diagnose(cprofile=False, tf_profiler=False) as d:
    import tensorflow as tf

    keras = tf.keras
    tiny = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Dense(1)], name="tiny")
    small = np.ones((32, 4), np.float32)
    for _ in range(8):
        tiny.predict(small, verbose=0)

    # Large-batch work: a wide MLP, so each batch's compute clearly outweighs slicing its 4 MB of input
    # (with a narrow model the tf.data pipeline and the kernels trade places from run to run here).
    mlp = keras.Sequential([keras.Input((256,))] + [keras.layers.Dense(u, activation="relu") for u in (2048, 2048, 1024)]
                           + [keras.layers.Dense(32)], name="mlp")
    # 8 batches: Keras 3's iterator teardown at the end of predict() sometimes waits ~0.5 s for its
    # prefetch threads (data_adapter time), which must not outweigh the kernels.
    large = np.random.default_rng(0).random((32768, 256), dtype=np.float32)
    mlp.predict(large[:4096], batch_size=4096, verbose=0)  # warm-up: traces once
    for _ in range(2):
        mlp.predict(large, batch_size=4096, verbose=0)

    # Input batches that are slow to produce: Keras 3 fetches them on the call's own thread; tf-keras
    # produces them on tf.data's threads while the call waits inside its graph function.
    import time

    class SlowBatches(getattr(keras.utils, "PyDataset", keras.utils.Sequence)):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            time.sleep(0.03)
            return small

    fed = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="fed")
    for _ in range(2):
        fed.predict(SlowBatches(), verbose=0)

    def worker(n):
        for _ in range(n):
            tiny(small)

    threads = [threading.Thread(target=worker, args=(15,), name=f"worker-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

out = {"flavor": d.recording.environment["keras_flavor"], "calls": d.recording.calls,
       "samples": d.recording.call_samples, "phases": d.recording.phases, "warnings": d.recording.warnings}
json.dump(out, sys.stdout)
