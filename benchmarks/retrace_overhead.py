"""The cost of tfdiag's hooks on tf.function calls that do not trace.

    python benchmarks/retrace_overhead.py [--calls 10000] [--rounds 7]

A small tf.function is traced once, then called ``--calls`` times per block; blocks run
alternately with ``tfdiag.diagnose(cprofile=False, tf_profiler=False)`` active and not.
Printed: the median per-call time of each mode and their ratio. Target (issue 3): <= 1.02
for the trace hooks; the line "with call timing" includes the per-call phase frame that
issue 4 adds for every top-level user tf.function call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

import tfdiag  # noqa: E402


@tf.function
def step(x):
    return tf.reduce_sum(x * 2.0 + 1.0)


def block(x, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        step(x)
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    x = tf.ones((8, 8))
    step(x)  # the one trace
    block(x, 500)
    on, off = [], []
    for round_index in range(args.rounds):
        for mode in (("on", "off") if round_index % 2 == 0 else ("off", "on")):
            if mode == "on":
                with tfdiag.diagnose(cprofile=False, tf_profiler=False) as d:
                    on.append(block(x, args.calls))
            else:
                off.append(block(x, args.calls))
    traces = sum(f["trace_count"] for f in d.recording.functions if f["origin"] == "user")
    on_m, off_m = statistics.median(on), statistics.median(off)
    print(f"{args.calls} calls of a tf.function traced once, {args.rounds} interleaved rounds "
          f"(traces recorded while on: {traces})")
    print(f"  off {off_m * 1e6:7.2f} us/call   on {on_m * 1e6:7.2f} us/call   ratio on/off {on_m / off_m:.3f}")


if __name__ == "__main__":
    main()
