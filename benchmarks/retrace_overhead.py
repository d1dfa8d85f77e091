"""The cost of tfdiag's hooks on tf.function calls that do not trace.

    python benchmarks/retrace_overhead.py [--calls 3000] [--rounds 15] [--seed 0]

Small tf.functions are traced once, then called ``--calls`` times per block: ``step(x)`` (one
tensor) and ``step3(x, y, 2.0)`` (two tensors and a Python float: a multi-argument signature).
Each round runs, per workload, one block in each mode in shuffled order: tfdiag off (twice: "off"
and "off again", whose ratio is this machine's noise), trace hooks only (``timing=False``, what
``--traces-only`` runs), and the default capture (cprofile/tf_profiler off; per-call timing, the
phase frame, sampling), each inside its own diagnosis.
Printed per workload and mode: the median per-call time over rounds, and the median over rounds of
the paired per-round ratio to "off" [quartiles]. Targets: <= 1.02 for the trace hooks alone
(issue 3); <= 1.05 for the default capture (issue 14).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

import tfdiag  # noqa: E402

MODES = {"off": None, "off again": None,
         "trace hooks (timing=False)": dict(timing=False),
         "default capture (cprofile/tf_profiler off)": dict(cprofile=False, tf_profiler=False)}


@tf.function
def step(x):
    return tf.reduce_sum(x * 2.0 + 1.0)


@tf.function
def step3(x, y, scale):
    return tf.reduce_sum(x * scale + y)


def block(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def quartiles(values: list) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return q1, q2, q3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0, help="seed of the block order")
    args = parser.parse_args()
    x, y = tf.ones((8, 8)), tf.ones((8, 8))
    workloads = {"step(x)": lambda: step(x), "step3(x, y, 2.0)": lambda: step3(x, y, 2.0)}
    for fn in workloads.values():
        fn()  # the one trace
        block(fn, 500)
    order_rng = random.Random(args.seed)
    times = {name: {mode: [] for mode in MODES} for name in workloads}
    for _ in range(args.rounds):
        for name, fn in workloads.items():
            order = list(MODES)
            order_rng.shuffle(order)
            for mode in order:
                if MODES[mode] is None:
                    times[name][mode].append(block(fn, args.calls))
                    continue
                with tfdiag.diagnose(**MODES[mode]) as d:
                    times[name][mode].append(block(fn, args.calls))
                traces = sum(f["trace_count"] for f in d.recording.functions if f["origin"] == "user")
                assert traces == 0, "the measured calls must not trace"
    print(f"{args.calls} calls per block of tf.functions traced once, {args.rounds} rounds of shuffled blocks; "
          f"median per call, paired ratio to off [quartiles]")
    for name, modes in times.items():
        print(f"  {name}")
        off = modes["off"]
        for mode, values in modes.items():
            ratio = quartiles([a / b for a, b in zip(values, off)])
            print(f"    {mode:44s} {statistics.median(values) * 1e6:8.2f} us/call   "
                  f"ratio to off {ratio[1]:.3f} [{ratio[0]:.3f}-{ratio[2]:.3f}]")


if __name__ == "__main__":
    main()
