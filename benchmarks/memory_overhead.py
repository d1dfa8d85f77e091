"""What memory capture costs: the overhead benchmark's loops under tfdiag with memory readings on
and off (``diagnose(memory=False)``, the CLI's ``--no-memory``), interleaved in one run; then
the one-off costs when growth is suspected (the forced collection, the tracemalloc window).

    python benchmarks/memory_overhead.py [--rounds 41] [--predict-calls 30] [--call-calls 300]
                                         [--fit-calls 3] [--fit-steps 32] [--train-steps 200]
                                         [--only predict,call,fit,train] [--window-calls 300]

Each round times, per workload, three blocks in shuffled order, each a whole
``tfdiag.diagnose(cprofile=False, tf_profiler=False)``: memory on, memory off, and memory off
again (its ratio to "memory off" is this machine's noise alone). Printed per workload: the
median over rounds of each mode's mean time per call and the median of the paired per-round
ratio memory on / memory off [its quartiles; the 95% interval of that median] (rounds.py: why
short blocks, many rounds; each block's first calls are untimed). Target (issue 15): memory capture keeps the
default capture within the overhead budget (on/off of overhead.py <= 1.03), so its own ratio
should be indistinguishable from the noise.

Then one run of a loop that keeps every prediction (256 KiB each): memory grows, so capture forces
a full collection and opens a tracemalloc window once; printed: their seconds, and the window's
calls against the same number of calls outside it.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfdiag  # noqa: E402
from overhead import workloads  # noqa: E402  (the same loops, benchmarks/overhead.py)
from rounds import per_call, pin, ratio_row, run  # noqa: E402  (benchmarks/rounds.py)

MODES = {"memory off": dict(cprofile=False, tf_profiler=False, memory=False),
         "memory off again": dict(cprofile=False, tf_profiler=False, memory=False),
         "memory on": dict(cprofile=False, tf_profiler=False)}


def window_costs(calls: int) -> None:
    """One run whose memory grows: the forced collection's and the tracemalloc window's cost."""
    keras = tf.keras
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(256 * 256)])
    x = np.ones((1, 16), np.float32)
    kept = []
    with tfdiag.diagnose(cprofile=False, tf_profiler=False) as d:
        for _ in range(calls):
            kept.append(model.predict_on_batch(x))
    section = d.recording.extra["memory"]
    call = next(c for c in d.recording.calls if c["api"] == "predict_on_batch")
    print(f"growth suspected ({calls} calls of predict_on_batch, each result kept, median call "
          f"{call['median_s'] * 1e3:.2f} ms):")
    collection = section.get("collection")
    if collection:
        print(f"  forced full collection after call {collection['after_call']}: {collection['seconds'] * 1e3:.0f} ms (once)")
    window = section.get("tracemalloc")
    if window:
        span = window["to_call"] - window["from_call"]
        print(f"  tracemalloc window, calls {window['from_call']}-{window['to_call']}: {window['seconds'] * 1e3:.0f} ms "
              f"for {span} calls ({window['seconds'] / max(1, span) / call['median_s']:.1f}x the median call), "
              f"then collection + snapshot {window['snapshot_s'] * 1e3:.0f} ms (once)")
        top = window["lines"][0] if window["lines"] else None
        if top:
            print(f"  top line: {top['line']} {top['bytes'] / 2**20:.1f} MB in {top['count']} blocks")
    if not collection and not window:
        print("  (growth was not suspected in this run: nothing to measure)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--predict-calls", type=int, default=30)
    parser.add_argument("--call-calls", type=int, default=300)
    parser.add_argument("--fit-calls", type=int, default=3)
    parser.add_argument("--fit-steps", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--only", default="", help="comma-separated: predict, call, fit, train")
    parser.add_argument("--window-calls", type=int, default=300, help="calls of the growing loop (0: skip it)")
    parser.add_argument("--all-cpus", action="store_true", help="do not pin the process to one CPU (rounds.py)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    where = pin(args.all_cpus)

    chosen = workloads(args)
    if args.only:
        chosen = {name: chosen[name] for name in args.only.split(",")}
    loops = {label: (fn, calls, warm) for label, fn, calls, warm in chosen.values()}
    run(loops, MODES, 1, args.seed)  # warm up: first traces out of the measurement
    results = run(loops, MODES, args.rounds, args.seed)

    print(f"memory capture's cost, {args.rounds} rounds, each block a whole diagnosis "
          f"(cprofile and TF Profiler off); TF {tf.__version__}; {where}")
    print("  per call: median over rounds; ratio: median over rounds of the paired per-round ratio")
    for name, modes in results.items():
        off = modes["memory off"]
        print(f"  {name:16s} memory off {per_call(off) * 1e3:8.3f} ms   on {per_call(modes['memory on']) * 1e3:8.3f} ms"
              f"   on/off {ratio_row(modes['memory on'], off)}")
        print(f"  {'':16s} noise (off again/off) {ratio_row(modes['memory off again'], off)}")
    if args.window_calls:
        window_costs(args.window_calls)


if __name__ == "__main__":
    main()
