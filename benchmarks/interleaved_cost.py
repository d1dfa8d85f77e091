"""tfdiag's cost per tf.function call, measured call by call: less noise than whole blocks.

    python benchmarks/interleaved_cost.py [--rounds 41] [--calls 300] [--warm 50] [--all-cpus]

retrace_overhead.py and overhead.py compare whole blocks with tfdiag on and off. On a shared
machine whose speed drifts by 10% within seconds, their median ratio needs many rounds and
still moves by a few percent from one run to the next. Here each timed call is a pair, made
microseconds apart inside one diagnosis: the call through tfdiag (the patched
``Function.__call__``) and the same call through TensorFlow's own ``Function.__call__``, which
tfdiag does not time. Their difference is what tfdiag adds to that call: every call is counted,
sampled calls, their memory readings and the batches added in place (``settle``) included.

Each round is a fresh diagnosis (cProfile and the TF Profiler off), as in retrace_overhead.py:
``--warm`` pairs first (each call site's first calls are measured in full: printed apart as
"first calls"), then ``--calls`` timed pairs. Per round: the mean added microseconds per call and
the mean untouched call; printed: their medians over rounds, the ratio 1 + added / untouched
[the 95% interval of the median added cost, as a ratio], for the compiled hot path and for the
pure-Python wrapper. What it leaves out: the class entry point that stays wrapped
(``ConcreteFunction._call_flat``, passed through in C in both calls of a pair) and any cost that
lands outside the calls (a garbage collection our allocations bring on inside the untouched
call counts against TensorFlow).

Workloads: ``step(x)`` and ``step3(x, y, 2.0)`` of retrace_overhead.py, and the custom training
step of overhead.py (a GradientTape, an optimizer, two tensors).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.eager.polymorphic_function import polymorphic_function  # noqa: E402

import tfdiag  # noqa: E402
from overhead import custom_train_step  # noqa: E402  (benchmarks/overhead.py)
from retrace_overhead import step, step3  # noqa: E402
from rounds import hot_path_row, median_interval, pin, without_hot_path  # noqa: E402  (benchmarks/rounds.py)


def workloads() -> dict:
    """name -> (function, its arguments): retrace_overhead.py's and overhead.py's."""
    features = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    train_step, train_args = custom_train_step(features, features.sum(axis=1, keepdims=True))
    x, y = tf.ones((8, 8)), tf.ones((8, 8))
    return {"step(x)": (step, (x,)), "step3(x, y, 2.0)": (step3, (x, y, 2.0)), "train step": (train_step, train_args)}


def one_round(function, args: tuple, calls: int, warm: int) -> tuple[float, float, float]:
    """(mean added seconds per timed call, mean untouched call, added seconds of the warm calls)."""
    untouched = polymorphic_function.Function.__call__
    clock = time.perf_counter
    with tfdiag.diagnose(cprofile=False, tf_profiler=False):
        through = polymorphic_function.Function.__call__  # tfdiag's wrapper
        added = plain = first = 0.0
        for index in range(warm + calls):
            t0 = clock()
            through(function, *args)
            t1 = clock()
            untouched(function, *args)
            t2 = clock()
            if index < warm:
                first += (t1 - t0) - (t2 - t1)
            else:
                added += (t1 - t0) - (t2 - t1)
                plain += t2 - t1
    return added / calls, plain / calls, first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warm", type=int, default=50)
    parser.add_argument("--all-cpus", action="store_true", help="do not pin the process to one CPU (rounds.py)")
    args = parser.parse_args()
    where = pin(args.all_cpus)
    chosen = workloads()
    for function, call_args in chosen.values():
        function(*call_args)  # the one trace, out of the measurement
    print(f"{args.rounds} rounds, each a fresh diagnosis: {args.warm} + {args.calls} pairs of calls (through tfdiag, "
          f"then TensorFlow's own), {where}; {hot_path_row()}")
    for name, (function, call_args) in chosen.items():
        results = {"compiled hot path": [], "pure-Python wrapper": []}
        for index in range(args.rounds):
            for mode in (results if index % 2 else reversed(list(results))):
                if mode == "pure-Python wrapper":
                    with without_hot_path():
                        results[mode].append(one_round(function, call_args, args.calls, args.warm))
                else:
                    results[mode].append(one_round(function, call_args, args.calls, args.warm))
        print(f"  {name}")
        for mode, rows in results.items():
            added = [row[0] for row in rows]
            plain = statistics.median(row[1] for row in rows)
            middle = statistics.median(added)
            low, high = median_interval(added)
            first = statistics.median(row[2] for row in rows)
            print(f"    {mode:20s} +{middle * 1e6:5.2f} us on {plain * 1e6:6.1f} us per call: ratio "
                  f"{1 + middle / plain:.3f} [median within {1 + low / plain:.3f}-{1 + high / plain:.3f}]   "
                  f"first calls +{first * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
