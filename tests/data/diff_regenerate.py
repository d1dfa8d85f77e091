"""Regenerate diff_before.json and diff_after.json from two real runs (python tests/data/diff_regenerate.py).

The same serving loop is diagnosed twice, the way a user fixes their code: first as written
(``model.predict`` per batch, a tf.function given a Python float), then with the one line edited
in place (``predict_on_batch``, the float passed as a tensor). Both runs go through
``tfdiag analyze --no-cprofile --no-tf-profiler``, so the call sites share a file and a line,
and the diff and export tests read the saved recordings without TensorFlow.
"""

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

LOOP = '''\
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf
import keras

model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(1)], name="scorer")
x = np.ones((32, 4), dtype=np.float32)


@tf.function
def calibrate(scores, factor):
    return scores * factor


for i in range(30):
    scores = {call}
    calibrated = calibrate(scores, {factor})
'''

RUNS = {
    "before": {"call": "model.predict(x, verbose=0)", "factor": "1.0 + i % 3"},
    "after": {"call": "model.predict_on_batch(x)", "factor": "tf.constant(1.0 + i % 3)"},
}


def main() -> None:
    work = tempfile.mkdtemp(prefix="tfdiag-diff-")
    script = os.path.join(work, "serve_loop.py")
    try:
        for name, edits in RUNS.items():
            with open(script, "w", encoding="utf-8") as fh:
                fh.write(LOOP.format(**edits))
            out = os.path.join(work, name)
            subprocess.run([sys.executable, "-m", "tfdiag", "analyze", "--no-cprofile", "--no-tf-profiler",
                            "--quiet", "-o", out, script], check=True, cwd=work)
            shutil.copyfile(os.path.join(out, "recording.json"), os.path.join(HERE, f"diff_{name}.json"))
            print("wrote", os.path.join(HERE, f"diff_{name}.json"), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
