"""tfdiag's fixed cost per timed call, in microseconds, on an eager ``model(x)`` loop.

    python benchmarks/call_cost.py [--rounds 150] [--calls 20]
    TF_USE_LEGACY_KERAS=1 python benchmarks/call_cost.py

overhead.py gives ratios for whole loops; this gives the absolute cost per call in the
steady state, which is what matters for small models. Each round runs, in shuffled order,
a block of ``--calls`` calls with tfdiag off (twice: "off" and "off again", whose difference
is this machine's noise), inside ``diagnose(cprofile=False, tf_profiler=False)`` ("on", the
default phase sampling) and inside ``diagnose(timing=False)`` ("traces only"). Inside a
diagnosis, 10 untimed calls come first, from the same line: each call site's first calls always
get the full phase split, which a long loop pays once. Printed: the median per-call time of each mode over all
rounds and its difference from "off".
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfdiag  # noqa: E402

MODES = {"off": None, "off again": None, "on": dict(cprofile=False, tf_profiler=False),
         "traces only": dict(timing=False)}
WARM_CALLS = 10


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1, help="seed of the block order")
    args = parser.parse_args()

    keras = tf.keras
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    x = np.ones((32, 4), np.float32)
    for _ in range(50):
        model(x)

    def block(times: list) -> None:
        # One line for the untimed and the timed calls: one call site, whose first calls are
        # always sampled (and which the untimed ones use up).
        for index in range(WARM_CALLS + args.calls):
            start = time.perf_counter()
            model(x)
            if index >= WARM_CALLS:
                times.append(time.perf_counter() - start)

    times: dict[str, list] = {mode: [] for mode in MODES}
    order_rng = random.Random(args.seed)
    for _ in range(args.rounds):
        order = list(MODES)
        order_rng.shuffle(order)
        for mode in order:
            if MODES[mode] is None:
                block(times[mode])
            else:
                with tfdiag.diagnose(**MODES[mode]):
                    block(times[mode])

    off = statistics.median(times["off"])
    flavour = "tf-keras" if "tf_keras" in type(model).__module__ else f"Keras {keras.__version__}"
    print(f"per-call cost of an eager model(x) on the tiny model, {flavour}, "
          f"{args.rounds} rounds x {args.calls} calls per mode")
    for mode, values in times.items():
        median = statistics.median(values)
        print(f"  {mode:12s} median {median * 1e6:8.1f} us   {(median - off) * 1e6:+6.1f} us   x{median / off:.3f}")


if __name__ == "__main__":
    main()
