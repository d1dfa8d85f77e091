"""What --verify measures on the question's two models: each call path, timed on the same input.

    python benchmarks/verify.py [--budget 20]
    TF_USE_LEGACY_KERAS=1 python benchmarks/verify.py

Models (as in examples/): a tiny Dense(2) -> Dense(1) on batch 32, and the
256-384-384-256-128-32 MLP on single records (batch 1). For each, the user's path is
``predict()``; ``tfdiag.measure_alternatives`` times every path round-robin within the
budget, and ``tfdiag.analysis.alternatives.choose`` picks the recommendation exactly as the
report does (fastest path with the same outputs). Prints the table and the ratio
predict() / recommended. Target (issue 7, Keras 3): the recommended path >= 50x faster.
A third workload, the MLP's predict() on 4096 rows, is where --verify also times the
input-bound fix (predict on a tf.data input built once, batch and prefetch): its row is
printed with the ratio, no target.

Training (issue 14, no target): a tiny model fitted on arrays (batch 16), and the same on a
tf.data input whose map sleeps 2 ms per row in a numpy_function; --verify's training what-ifs
(``tfdiag.verify.training.measure_fitted``, clones of the model) are printed with the paths
``analysis.alternatives.choose_training``/``choose_training_input`` recommend.
Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfdiag  # noqa: E402
from tfdiag.analysis import alternatives  # noqa: E402

keras = tf.keras
LEGACY = keras.layers.Dense.__module__.startswith("tf_keras")
TARGET = 50.0


def tiny():
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2), keras.layers.Dense(1)], name="tiny")
    return model, np.random.default_rng(0).random((32, 4), dtype=np.float32)


def mlp():
    model = keras.Sequential(
        [keras.Input(shape=(256,))]
        + [keras.layers.Dense(units, activation="relu") for units in (384, 384, 256, 128)]
        + [keras.layers.Dense(32)], name="mlp")
    return model, np.random.default_rng(0).random((1, 256), dtype=np.float32)


def big():
    model, _ = mlp()
    return model, np.random.default_rng(0).random((4096, 256), dtype=np.float32)


def fmt_ms(seconds):
    return "—" if seconds is None else f"{seconds * 1000:9.3f} ms"


def run(name, build, budget):
    model, x = build()
    for _ in range(3):  # the user's loop, warmed up as theirs would be
        model.predict(x, verbose=0)
    entries = tfdiag.measure_alternatives(model, x, user_path="predict", budget_s=budget)
    choice = alternatives.choose(entries, "predict")
    print(f"\n{name}: input {list(x.shape)}, budget {budget:.0f} s, "
          f"{max(e['calls'] for e in entries)} interleaved calls per path")
    print(f"  {'path':<18} {'median':>12} {'speed-up':>9} {'first call':>12} {'max abs diff':>13}  same  note")
    for e in entries:
        speedup = f"{e['speedup']:8.1f}x" if e["speedup"] else f"{'—':>9}"
        diff = f"{e['max_abs_diff']:.1e}" if e["max_abs_diff"] is not None else "—"
        mark = "  <- recommended" if choice and e is choice["entry"] else ""
        print(f"  {e['path']:<18} {fmt_ms(e['median_s']):>12} {speedup} {fmt_ms(e['first_s']):>12} "
              f"{diff:>13}  {'yes' if e['equivalent'] else 'no ':<4}  {e['error'] or ''}{mark}")
    entry, pipeline = alternatives.choose_input_pipeline(entries, "predict")
    if entry is not None and entry["speedup"]:
        print(f"  prebuilt tf.data input vs predict(x): {entry['speedup']:.2f}x"
              + (" (recommended)" if pipeline else " (not recommended: not clearly faster with the same outputs)"))
    if choice is None:
        print("  no faster equivalent path: nothing recommended")
        return name, None, None
    best = choice["entry"]
    in_tf = choice["in_tensorflow"] or best
    print(f"  ratio predict() / recommended ({best['path']}): {choice['speedup']:.0f}x"
          + (f"; staying in TensorFlow ({in_tf['path']}): {choice['base']['median_s'] / in_tf['median_s']:.0f}x"
             if in_tf is not best else ""))
    return name, best["path"], choice["speedup"]


def run_training(budget):
    import time

    from tfdiag.verify import training
    from tfdiag.verify.fit_keeper import FitKeeper

    rng = np.random.default_rng(0)
    x, y = rng.random((1024, 8), dtype=np.float32), rng.random((1024, 1), dtype=np.float32)

    def slow(row):
        time.sleep(0.002)
        return row

    keeper = FitKeeper()
    for name, data in (("fit_arrays", None), ("fit_slow_map", tf.data.Dataset.from_tensor_slices((x, y)).map(
            lambda a, b: (tf.numpy_function(slow, [a], tf.float32), b)).batch(16))):
        model = keras.Sequential([keras.Input(shape=(8,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(1)], name=name)
        model.compile(optimizer="adam", loss="mse")
        if data is None:
            model.fit(x, y, batch_size=16, epochs=1, verbose=0)
            keeper("fit", model, (x, y), {"batch_size": 16})
        else:
            model.fit(data.map(lambda a, b: (tf.ensure_shape(a, [None, 8]), b)), epochs=1, verbose=0)
            keeper("fit", model, (data.map(lambda a, b: (tf.ensure_shape(a, [None, 8]), b)),), {})
    began = time.perf_counter()
    entries = training.measure_fitted(keeper.take(), budget, time.perf_counter)
    print(f"\ntraining what-ifs (budget {budget:.0f} s, took {time.perf_counter() - began:.1f} s):")
    print(f"  {'model':<13} {'path':<30} {'per batch':>12} {'speed-up':>9} {'loss diff':>10}  same  steps  note")
    for e in entries:
        speedup = f"{e['speedup']:8.2f}x" if e["speedup"] else f"{'—':>9}"
        diff = f"{e['max_abs_diff']:.1e}" if e["max_abs_diff"] is not None else "—"
        mark = "  <- recommended" if e["recommended"] else ""
        print(f"  {e['target']:<13} {e['path']:<30} {fmt_ms(e['median_s']):>12} {speedup} {diff:>10}  "
              f"{'yes' if e['equivalent'] else 'no ':<4}  {e['steps_timed']:>5}  {e['error'] or ''}{mark}")
    for target in dict.fromkeys(e["target"] for e in entries):
        mine = [e for e in entries if e["target"] == target]
        for label, choice in (("train", alternatives.choose_training(mine)),
                              ("input", alternatives.choose_training_input(mine))):
            if choice is not None:
                print(f"  {target}: {label} {choice['entry']['path']} {choice['speedup']:.2f}x faster per batch")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per model (default 20)")
    parser.add_argument("--training-only", action="store_true", help="only the training what-ifs")
    args = parser.parse_args()
    if args.training_only:
        run_training(args.budget)
        return 0
    flavor = "tf-keras" if LEGACY else "keras3"
    print(f"TensorFlow {tf.__version__}, {flavor}, {os.cpu_count()} CPU(s)")
    results = [run("tiny Dense(2)->Dense(1), batch 32", tiny, args.budget),
               run("MLP 256-384-384-256-128-32, batch 1", mlp, args.budget)]
    run("MLP 256-384-384-256-128-32, 4096 rows (input-bound fix)", big, args.budget)
    run_training(args.budget)
    print()
    ok = True
    for name, path, ratio in results:
        met = ratio is not None and ratio >= TARGET
        ok = ok and met
        shown = f"{ratio:.0f}x via {path}" if ratio else "no recommendation"
        print(f"{'PASS' if met else 'MISS'} {name}: {shown} (target >= {TARGET:.0f}x)")
    return 0 if ok or LEGACY else 1


if __name__ == "__main__":
    raise SystemExit(main())
