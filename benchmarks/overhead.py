"""tfdiag's cost on the question's loops: default capture on vs off, interleaved in one run.

    python benchmarks/overhead.py [--rounds 41] [--predict-calls 30] [--call-calls 300]
                                  [--fit-calls 3] [--fit-steps 32] [--train-steps 200] [--only fit,train]
    TF_USE_LEGACY_KERAS=1 python benchmarks/overhead.py   # the same on tf-keras

Each round times, for each workload, three blocks of calls in shuffled order: one inside its
own ``tfdiag.diagnose(cprofile=False, tf_profiler=False)`` ("on") and two without ("off" and
"off again"). Workloads: ``predict()`` on the question's tiny Dense(2)->Dense(1) model
(batch 32), an eager ``model(x)`` loop on the same model, ``fit()`` of the same model (``--fit-steps``
batches of 32 per epoch, one epoch per call, verbose 0, so each step runs the callbacks' batch hooks),
and a custom training loop: a ``@tf.function`` step with a ``GradientTape`` and
``optimizer.apply_gradients``, called once per step. Each block first makes a few untimed calls
(a diagnosis measures each call site's first calls in full: their one-off cost is printed on
its own as "first calls"), then times its calls (rounds.py: why short blocks, many rounds).

Printed per workload: the median over rounds of each mode's mean time per call, and the median
over rounds of the paired ratio on/off [its quartiles; the 95% interval of that median]. The
"off again"/off ratio is the same measurement with tfdiag off in both blocks: how far this
machine's noise alone moves the ratio. "pure-Python wrapper" is the default capture without its
compiled hot path (tfdiag/capture/_hotpath.c), as where it could not be built. Target (issue 4): on/off <= 1.03 (issue 14: also on the
fit() and the custom training loop).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfdiag  # noqa: E402
from rounds import PURE_PYTHON, block, first_calls_row, hot_path_row, per_call, pin, ratio_row, run  # noqa: E402  (benchmarks/rounds.py)

MODES = {"off": None, "off again": None, "on": dict(cprofile=False, tf_profiler=False),
         "on, pure Python": dict(cprofile=False, tf_profiler=False, **{PURE_PYTHON: True})}


def custom_train_step(features, labels) -> tuple:
    """A custom training loop's step: a tf.function applying gradients (GradientTape, SGD) to
    its own small model, called once per step; returned with its two argument tensors.
    interleaved_cost.py times the same."""
    keras = tf.keras
    loop_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD(0.01)

    @tf.function
    def train_step(features, labels):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(loop_model(features, training=True) - labels))
        gradients = tape.gradient(loss, loop_model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, loop_model.trainable_variables))
        return loss

    return train_step, (tf.constant(features), tf.constant(labels))


def workloads(args) -> dict:
    """The loops, by short name: (label, one call, timed calls per block, calls before them).
    memory_overhead.py times the same."""
    keras = tf.keras
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    x = np.ones((32, 4), np.float32)
    # fit(): its own model (training changes weights), compiled once; one epoch per call.
    fit_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    fit_model.compile(optimizer="sgd", loss="mse")
    fit_x = np.random.default_rng(0).normal(size=(32 * args.fit_steps, 4)).astype(np.float32)
    fit_y = fit_x.sum(axis=1, keepdims=True)
    train_step, (loop_x, loop_y) = custom_train_step(fit_x[:32], fit_y[:32])
    return {
        "predict": ("predict() loop", lambda: model.predict(x, verbose=0), args.predict_calls, 3),
        "call": ("model(x) loop", lambda: model(x), args.call_calls, 50),
        "fit": ("fit()", lambda: fit_model.fit(fit_x, fit_y, batch_size=32, epochs=1, verbose=0), args.fit_calls, 1),
        "train": ("train-step loop", lambda: train_step(loop_x, loop_y), args.train_steps, 20),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--predict-calls", type=int, default=30, help="timed calls per predict() block")
    parser.add_argument("--call-calls", type=int, default=300, help="timed calls per model(x) block")
    parser.add_argument("--fit-calls", type=int, default=3, help="timed fit() calls (one epoch each) per block")
    parser.add_argument("--fit-steps", type=int, default=32, help="batches of 32 per fit() epoch")
    parser.add_argument("--train-steps", type=int, default=200, help="timed steps per custom training loop block")
    parser.add_argument("--only", default="", help="comma-separated workloads to run: predict, call, fit, train")
    parser.add_argument("--all-cpus", action="store_true", help="do not pin the process to one CPU (rounds.py)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the block order")
    args = parser.parse_args()
    where = pin(args.all_cpus)

    chosen = workloads(args)
    if args.only:
        chosen = {name: chosen[name] for name in args.only.split(",")}
    loops = {label: (fn, calls, warm) for label, fn, calls, warm in chosen.values()}
    for fn, _, _ in loops.values():  # warm up: first traces out of the measurement
        block(fn, 5)
        with tfdiag.diagnose(cprofile=False, tf_profiler=False):
            block(fn, 5)
    results = run(loops, MODES, args.rounds, args.seed)

    keras = tf.keras
    model_module = type(keras.Sequential()).__module__
    package = sys.modules.get(model_module.split(".")[0])
    version = getattr(keras, "__version__", None) or getattr(package, "__version__", "?")
    flavour = "tf-keras" if "tf_keras" in model_module else "Keras"
    print(f"tfdiag overhead, {args.rounds} rounds; timed calls per block: predict() {args.predict_calls}, "
          f"model(x) {args.call_calls}, fit() {args.fit_calls} x {args.fit_steps} steps, "
          f"train step {args.train_steps}; {flavour} {version}; {where}; {hot_path_row()}")
    print("  per call: median over rounds; ratio: median over rounds of the paired per-round ratio")
    for name, modes in results.items():
        off = modes["off"]
        print(f"  {name:16s} off {per_call(off) * 1e3:8.3f} ms   on {per_call(modes['on']) * 1e3:8.3f} ms"
              f"   on/off {ratio_row(modes['on'], off)}   {first_calls_row(modes['on'], off)}")
        print(f"  {'':16s} the same, pure-Python wrapper: {ratio_row(modes['on, pure Python'], off)}")
        print(f"  {'':16s} noise (off again/off) {ratio_row(modes['off again'], off)}")


if __name__ == "__main__":
    main()
