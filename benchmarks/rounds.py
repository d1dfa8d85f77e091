"""Paired, interleaved timing rounds: what the overhead benchmarks share.

Why this shape. On a shared 2-core machine the speed of the same loop drifts by 10-15% over
tenths of a second to seconds, more than the overhead being measured. Two long blocks timed a
second apart then differ by more than tfdiag's cost, and a few rounds give a median ratio whose
quartiles span 0.9-1.15 with tfdiag off in both blocks. Short blocks, each mode once per round
in shuffled order, pair every mode with the others under the same conditions, and many rounds
give the median of the paired ratios a narrow interval: ``median_interval`` prints it.

One CPU. By default ``pin`` runs the whole process (every thread TensorFlow has started, and so
the ones it starts later) on one CPU. On the 2-core machine these figures come from, a small
tf.function call took 180-280 us across both cores and 88 us on one (TensorFlow's executor hands
the call to its thread pool, and waking a thread on the other core is slow there), and the "off
again" row's quartiles narrowed from 0.91-1.09 to 0.99-1.01. One CPU makes TensorFlow's own
time per call smaller, so the same microseconds of tfdiag read as a larger ratio: the pinned
ratio is the stricter one. ``--all-cpus`` measures without it.

What a block measures. A mode is tfdiag off (None) or a whole ``tfdiag.diagnose(**options)``.
Inside it, ``warm`` calls come first, untimed for the ratio and timed on their own: a diagnosis
measures each call site's first calls in full (sampling.py), a one-off per call site printed as
"first calls" (their extra seconds over the same calls with tfdiag off), not spread over however
many calls a block happens to have. Then ``calls`` calls are timed: the steady cost per call.
"""

from __future__ import annotations

import contextlib
import os
import random
import statistics
import time

import tfdiag
from tfdiag.capture import phase_tracker, timed_calls

# A mode's options with this key set run tfdiag without its compiled hot path
# (tfdiag/capture/_hotpath.c): what a machine that could not build it gets.
PURE_PYTHON = "pure_python"


def pin(all_cpus: bool = False) -> str:
    """Every thread of this process on one CPU (the last this process may use), unless
    ``all_cpus``; says where the benchmark runs."""
    if all_cpus or not hasattr(os, "sched_setaffinity"):
        return "on all CPUs"
    cpu = max(os.sched_getaffinity(0))
    for task in os.listdir("/proc/self/task"):  # threads TensorFlow started already
        try:
            os.sched_setaffinity(int(task), {cpu})
        except OSError:  # a thread that ended meanwhile
            pass
    return f"pinned to CPU {cpu}"


def block(fn, calls: int) -> float:
    """Seconds for ``calls`` calls of ``fn``."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - start


def quartiles(values: list) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return q1, q2, q3


def median_interval(values: list, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A bootstrap 95% interval of the median of ``values`` (seeded: the same run prints the same)."""
    draw = random.Random(seed).choices
    medians = sorted(statistics.median(draw(values, k=len(values))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def timed_block(fn, calls: int, warm: int, options: dict | None) -> tuple[float, float]:
    """(mean seconds per call over ``calls`` calls, seconds of the ``warm`` calls before them),
    with tfdiag off (``options`` None) or inside one diagnosis."""
    if options is None:
        first = block(fn, warm) if warm else 0.0
        return block(fn, calls) / calls, first
    options = dict(options)
    pure = options.pop(PURE_PYTHON, False)
    with (without_hot_path() if pure else contextlib.nullcontext()), tfdiag.diagnose(**options):
        first = block(fn, warm) if warm else 0.0
        return block(fn, calls) / calls, first


@contextlib.contextmanager
def without_hot_path():
    """Diagnoses made inside use the pure-Python wrappers (as where _hotpath.c was not built)."""
    saved = timed_calls.HotCall, phase_tracker.Gate
    timed_calls.HotCall = phase_tracker.Gate = None
    try:
        yield
    finally:
        timed_calls.HotCall, phase_tracker.Gate = saved


def hot_path_row() -> str:
    """Whether this tfdiag has its compiled hot path."""
    return "compiled hot path: " + ("built" if timed_calls.HotCall is not None else "NOT BUILT (pure Python)")


def run(workloads: dict, modes: dict, rounds: int, seed: int = 0) -> dict:
    """``workloads``: name -> (fn, calls, warm); ``modes``: name -> diagnose options or None (off).
    Each round times each workload once in each mode, the modes in shuffled order. Returns
    name -> mode -> list of (seconds per call, seconds of the warm calls), one per round. The
    warm calls of an "off" block run before its timed ones, as in the diagnosed blocks."""
    order_rng = random.Random(seed)
    results = {name: {mode: [] for mode in modes} for name in workloads}
    for _ in range(rounds):
        for name, (fn, calls, warm) in workloads.items():
            order = list(modes)
            order_rng.shuffle(order)
            for mode in order:
                results[name][mode].append(timed_block(fn, calls, warm, modes[mode]))
    return results


def ratio_row(timings: list, baseline: list) -> str:
    """The median paired ratio of ``timings`` to ``baseline`` (per call), its quartiles and the
    95% interval of that median."""
    ratios = [a[0] / b[0] for a, b in zip(timings, baseline)]
    low, middle, high = quartiles(ratios)
    lo, hi = median_interval(ratios)
    return f"ratio {middle:.3f} [quartiles {low:.3f}-{high:.3f}; median within {lo:.3f}-{hi:.3f}]"


def first_calls_row(timings: list, baseline: list) -> str:
    """The median over rounds of the warm calls' extra seconds over tfdiag off."""
    extra = statistics.median(a[1] - b[1] for a, b in zip(timings, baseline))
    return f"first calls +{extra * 1e3:.2f} ms"


def per_call(timings: list) -> float:
    """The median over rounds of seconds per call."""
    return statistics.median(t[0] for t in timings)
