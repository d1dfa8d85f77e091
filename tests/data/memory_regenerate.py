"""Regenerate tests/data/memory_*.json: real runs of the memory examples under tfdiag.

    python tests/data/memory_regenerate.py

Four recordings for the analysis tests (no TensorFlow needed to read them): a tf.function given
a new Python float per call (memory_traces.json), predictions kept in a list
(memory_user_objects.json), and two loops that level off: predict_on_batch (memory_flat_pob.json)
and predict() (memory_flat_predict.json).
"""

import os
import runpy
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tfdiag  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent
RUNS = {
    "memory_traces.json": ("python_float.py", 300, {}),
    "memory_user_objects.json": ("kept_predictions.py", 300, {}),
    "memory_flat_pob.json": ("levels_off.py", 600, {"phase_every": 8}),
    "memory_flat_predict.json": (None, 100, {"phase_every": 4}),
}
FLAT_PREDICT = """
import numpy as np, tensorflow as tf
keras = tf.keras
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Dense(1)])
x = np.ones((32, 4), np.float32)
for _ in range(CALLS):
    model.predict(x, verbose=0)
"""


def main() -> None:
    os.chdir(ROOT)  # call sites read examples/memory/...
    for name, (script, calls, options) in RUNS.items():
        with tfdiag.diagnose(cprofile=False, tf_profiler=False, **options) as d:
            if script is None:
                exec(compile(FLAT_PREDICT.replace("CALLS", str(calls)), "flat_predict.py", "exec"), {})
            else:
                sys.argv = [f"examples/memory/{script}", "--calls", str(calls)]
                runpy.run_path(sys.argv[0], run_name="__main__")
        recording = d.recording
        recording.findings = d.findings
        recording.environment = {k: v for k, v in recording.environment.items() if k != "executable"}
        recording.save(DATA / name)
        print(name, [f["code"] for f in d.findings])


if __name__ == "__main__":
    main()
