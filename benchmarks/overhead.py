"""tfdiag's cost on the question's loops: default capture on vs off, interleaved in one run.

    python benchmarks/overhead.py [--rounds 15] [--calls 20]

Each round times a block of ``predict()`` calls on the tiny Dense(2)->Dense(1) model
(batch 32) and a block of ``model(x)`` calls, once with ``tfdiag.diagnose(cprofile=False, tf_profiler=False)``
active and once without, in alternating order; the ratio of medians is printed.
Target (issue 4): ratio <= 1.03.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfdiag  # noqa: E402


def block(fn, calls: int) -> float:
    """Median seconds per call over a block of calls."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()

    keras = tf.keras
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    x = np.ones((32, 4), np.float32)
    workloads = {
        "predict() loop": lambda: model.predict(x, verbose=0),
        "model(x) loop": lambda: model(x),
    }
    for fn in workloads.values():  # warm up: first traces out of the measurement
        block(fn, 3)

    results = {name: {"on": [], "off": []} for name in workloads}
    for round_index in range(args.rounds):
        order = ("on", "off") if round_index % 2 == 0 else ("off", "on")
        for name, fn in workloads.items():
            for mode in order:
                if mode == "on":
                    with tfdiag.diagnose(cprofile=False, tf_profiler=False):
                        results[name]["on"].append(block(fn, args.calls))
                else:
                    results[name]["off"].append(block(fn, args.calls))

    print(f"tfdiag overhead, {args.rounds} interleaved rounds x {args.calls} calls, Keras {keras.__version__ if hasattr(keras, '__version__') else '?'}")
    for name, modes in results.items():
        on, off = statistics.median(modes["on"]), statistics.median(modes["off"])
        print(f"  {name:16s} off {off * 1e3:8.3f} ms  on {on * 1e3:8.3f} ms  ratio on/off {on / off:.3f}")


if __name__ == "__main__":
    main()
