"""The cost of tfdiag's hooks on tf.function calls that do not trace.

    python benchmarks/retrace_overhead.py [--calls 300] [--warm 50] [--rounds 100] [--seed 0]

Small tf.functions are traced once, then called in blocks: ``step(x)`` (one tensor) and
``step3(x, y, 2.0)`` (two tensors and a Python float: a multi-argument signature). Each round
runs, per workload, one block in each mode in shuffled order: tfdiag off (twice: "off" and "off
again", whose ratio is this machine's noise), trace hooks only (``timing=False``, what
``--traces-only`` runs), and the default capture (cprofile/tf_profiler off; per-call timing, the
phase frame, sampling, memory readings), each inside its own diagnosis (rounds.py: why short
blocks, many rounds). Each block makes ``--warm`` calls, then times ``--calls``.
Printed per workload and mode: the median per-call time over rounds, the median over rounds of
the paired per-round ratio to "off" [its quartiles; the 95% interval of that median], and the
first calls' one-off cost per diagnosis. Targets: <= 1.02 for the trace hooks alone (issue 3);
<= 1.05 for the default capture (issue 14).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

import tfdiag  # noqa: E402
from rounds import PURE_PYTHON, first_calls_row, hot_path_row, per_call, pin, ratio_row, run  # noqa: E402  (benchmarks/rounds.py)

MODES = {"off": None, "off again": None,
         "trace hooks (timing=False)": dict(timing=False),
         "default capture (cprofile/tf_profiler off)": dict(cprofile=False, tf_profiler=False),
         "  the same, pure-Python wrapper": dict(cprofile=False, tf_profiler=False, **{PURE_PYTHON: True})}


@tf.function
def step(x):
    return tf.reduce_sum(x * 2.0 + 1.0)


@tf.function
def step3(x, y, scale):
    return tf.reduce_sum(x * scale + y)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300, help="timed calls per block")
    parser.add_argument("--warm", type=int, default=50, help="calls per block before the timed ones")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--all-cpus", action="store_true", help="do not pin the process to one CPU (rounds.py)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the block order")
    args = parser.parse_args()
    where = pin(args.all_cpus)
    x, y = tf.ones((8, 8)), tf.ones((8, 8))
    calls = {"step(x)": lambda: step(x), "step3(x, y, 2.0)": lambda: step3(x, y, 2.0)}
    for fn in calls.values():
        fn()  # the one trace
        with tfdiag.diagnose(cprofile=False, tf_profiler=False) as d:
            fn()
        traces = sum(f["trace_count"] for f in d.recording.functions if f["origin"] == "user")
        assert traces == 0, "the measured calls must not trace"
    results = run({name: (fn, args.calls, args.warm) for name, fn in calls.items()}, MODES, args.rounds, args.seed)
    print(f"tf.functions traced once; {args.rounds} rounds of shuffled blocks of {args.warm} + {args.calls} calls, "
          f"{where}; median per call, paired ratio to off; {hot_path_row()}")
    for name, modes in results.items():
        print(f"  {name}")
        off = modes["off"]
        for mode, timings in modes.items():
            extra = "" if MODES[mode] is None else "   " + first_calls_row(timings, off)
            print(f"    {mode:44s} {per_call(timings) * 1e6:8.2f} us/call   {ratio_row(timings, off)}{extra}")


if __name__ == "__main__":
    main()
