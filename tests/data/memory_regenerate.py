"""Regenerate tests/data/memory_*.json: real runs of the memory examples under tfdiag.

    python tests/data/memory_regenerate.py [NAME.json ...]

Four recordings for the analysis tests (no TensorFlow needed to read them): a tf.function given
a new Python float per call (memory_traces.json), predictions kept in a list
(memory_user_objects.json), and two loops that level off: predict_on_batch (memory_flat_pob.json)
and predict() (memory_flat_predict.json); and a 1,500-call predict() loop whose memory rises for
~1,300 calls, then levels off (memory_long_predict.json, ~3 minutes; its functions and call
samples are dropped to keep it small: the memory tests read only its calls and memory section).
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
    "memory_long_predict.json": (None, 1500, {}),
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
    wanted = sys.argv[1:] or list(RUNS)  # e.g. memory_traces.json: only those
    for name, (script, calls, options) in RUNS.items():
        if name not in wanted:
            continue
        with tfdiag.diagnose(cprofile=False, tf_profiler=False, **options) as d:
            if script is None:
                source = "longpredict.py" if "long" in name else "flat_predict.py"
                exec(compile(FLAT_PREDICT.replace("CALLS", str(calls)), source, "exec"), {})
            else:
                sys.argv = [f"examples/memory/{script}", "--calls", str(calls)]
                runpy.run_path(sys.argv[0], run_name="__main__")
        recording = d.recording
        recording.findings = d.findings
        recording.environment = {k: v for k, v in recording.environment.items() if k != "executable"}
        if "long" in name:
            recording.functions, recording.call_samples, recording.findings = [], [], []
        recording.save(DATA / name)
        print(name, [f["code"] for f in d.findings])


if __name__ == "__main__":
    main()
