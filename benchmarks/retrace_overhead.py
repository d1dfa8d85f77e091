"""The cost of tfdiag's hooks on tf.function calls that do not trace.

    python benchmarks/retrace_overhead.py [--calls 10000] [--rounds 7]

A small tf.function is traced once, then called ``--calls`` times per block; blocks run
alternately with no tfdiag, with trace hooks only, and with the default capture.
Printed: the median per-call time of each mode and its ratio to "off". Target (issue 3):
<= 1.02 for the trace hooks alone (``timing=False``, what ``--traces-only`` runs); the default
capture adds the per-call timing and phase frame of issue 4 to every top-level user call.
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
    modes = {"off": None,
             "trace hooks (timing=False)": dict(timing=False),
             "default capture (cprofile/tf_profiler off)": dict(cprofile=False, tf_profiler=False)}
    times: dict[str, list] = {name: [] for name in modes}
    for round_index in range(args.rounds):
        order = list(modes) if round_index % 2 == 0 else list(reversed(modes))
        for name in order:
            if modes[name] is None:
                times[name].append(block(x, args.calls))
            else:
                with tfdiag.diagnose(**modes[name]) as d:
                    times[name].append(block(x, args.calls))
                traces = sum(f["trace_count"] for f in d.recording.functions if f["origin"] == "user")
                assert traces == 0, "the measured calls must not trace"
    off_m = statistics.median(times["off"])
    print(f"{args.calls} calls of a tf.function traced once, {args.rounds} interleaved rounds, median per call")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:44s} {median * 1e6:8.2f} us/call   ratio to off {median / off_m:.3f}")


if __name__ == "__main__":
    main()
