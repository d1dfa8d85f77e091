"""8 threads x 200 calls each of model(x), predict_on_batch and a tf.function (plus a few
predict() calls) under diagnose(); prints counts as JSON. Run in a fresh process so
TF_USE_LEGACY_KERAS can pick tf-keras."""

import json
import os
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import tfdiag  # noqa: E402

THREADS, CALLS, PREDICT_EVERY = 8, 200, 20

import tensorflow as tf  # noqa: E402

keras = tf.keras
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Dense(1)], name="shared")
x = np.ones((4, 4), np.float32)
step = tf.function(lambda t: t * 2.0)
model(x)
errors = []


def worker():
    try:
        for i in range(CALLS):
            model(x)
            model.predict_on_batch(x)
            step(tf.ones((2,)))
            if i % PREDICT_EVERY == 0:
                model.predict(x, verbose=0)
    except Exception as exc:  # reported in the JSON, asserted by the test
        errors.append(repr(exc))


with tfdiag.diagnose(cprofile=False, tf_profiler=False) as d:
    threads = [threading.Thread(target=worker, name=f"t{i}") for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

counts: dict = {}
for call in d.recording.calls:
    counts[call["api"]] = counts.get(call["api"], 0) + call["count"]
sampled = [s for s in d.recording.call_samples if "phases" in s]  # calls with a full phase split
bad_samples = [s for s in sampled if abs(sum(s["phases"].values()) - s["duration_s"]) > 0.01 * s["duration_s"] + 1e-9]
json.dump({"flavor": d.recording.environment["keras_flavor"], "errors": errors, "counts": counts,
           "user_traces": sum(f["trace_count"] for f in d.recording.functions if f["origin"] == "user"),
           "threads": sorted({s["thread"] for s in d.recording.call_samples}),
           "bad_samples": len(bad_samples), "sampled_threads": sorted({s["thread"] for s in sampled}), "warnings": d.recording.warnings}, sys.stdout)
