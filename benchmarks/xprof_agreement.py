"""Does tfdiag's kernel_execution mean the model's kernels? Checked against the TF Profiler.

    python benchmarks/xprof_agreement.py            # Keras 3 here, then tf-keras in a subprocess
    python benchmarks/xprof_agreement.py --flavor keras3|tf-keras   # one flavor only

Each workload runs under ``tfdiag.diagnose()`` with the default options, so the TF Profiler
traces calls 3-5 as it does for any user. Per call site the TF Profiler trace gives the model's
op time per call (self time of the non-tf.data ops; host compute for eager calls), and tfdiag's
steady-state split gives its ``kernel_execution`` per call (analysis/agreement.py pairs them).
Printed per workload: tfdiag's kernel ms per call, the profiler's, their ratio, and how many
sampled calls tfdiag's split rests on. Target (issue 12): every row within 0.5x to 2x + 0.5 ms,
and at least 5 calls behind the split of every call site with 20 or more calls.

Workloads: the question's tiny-model predict loop before and after compile(), a single-record
MLP predict, a tf-keras predict (``import tf_keras``, whatever tf.keras is), an eager ``model(x)``
loop, a user tf.function loop and a large-batch predict.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MIN_PHASE_CALLS = 5
BUSY_SITE = 20


def tiny_model(keras):
    return keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2), keras.layers.Dense(1)])


def mlp(keras, width=256):
    return keras.Sequential([keras.Input(shape=(width,))]
                            + [keras.layers.Dense(units, activation="relu") for units in (384, 384, 256, 128)]
                            + [keras.layers.Dense(32)])


def predict_loop(keras, np, tf):
    """examples/predict_loop.py: 20 predict() calls on 32 rows, compile(), 20 more."""
    model = tiny_model(keras)
    x = np.random.default_rng(0).random((32, 4), dtype=np.float32)

    def loop():
        for _ in range(20):
            model.predict(x, verbose=0)

    loop()
    model.compile(optimizer="adam", loss="mse")
    loop()


def mlp_single_record(keras, np, tf):
    """examples/mlp_single_record.py: 30 records predicted one at a time."""
    model = mlp(keras)
    for record in np.random.default_rng(0).random((30, 256), dtype=np.float32):
        model.predict(record[None, :], verbose=0)


def tf_keras_predict(keras, np, tf):
    """tf-keras itself (``import tf_keras``): 30 predict() calls on 32 rows."""
    import tf_keras

    predict_loop_on(tiny_model(tf_keras), np, calls=30)


def predict_loop_on(model, np, calls):
    x = np.random.default_rng(0).random((32, 4), dtype=np.float32)
    for _ in range(calls):
        model.predict(x, verbose=0)


def eager_loop(keras, np, tf):
    """300 eager model(x) calls on 32 rows."""
    model = tiny_model(keras)
    x = tf.constant(np.random.default_rng(0).random((32, 4), dtype=np.float32))
    for _ in range(300):
        model(x)


def tf_function_loop(keras, np, tf):
    """300 calls of the user's own tf.function around the model."""
    model = tiny_model(keras)
    step = tf.function(lambda x: model(x, training=False))
    x = tf.constant(np.random.default_rng(0).random((32, 4), dtype=np.float32))
    for _ in range(300):
        step(x)


def large_batch_predict(keras, np, tf):
    """12 predict() calls on 16384 rows in batches of 4096 through the MLP (the kernels dominate)."""
    model = mlp(keras)
    x = np.random.default_rng(0).random((16384, 256), dtype=np.float32)
    for _ in range(12):
        model.predict(x, batch_size=4096, verbose=0)


WORKLOADS = (predict_loop, mlp_single_record, tf_keras_predict, eager_loop, tf_function_loop, large_batch_predict)


def run_flavor(flavor: str) -> list[dict]:
    import numpy as np
    import tensorflow as tf

    import tfdiag
    from tfdiag.analysis import agreement

    rows = []
    for workload in WORKLOADS:
        started = time.perf_counter()
        with tfdiag.diagnose() as diagnosis:
            workload(tf.keras, np, tf)
        wall = time.perf_counter() - started
        found = agreement.kernel_rows(diagnosis.recording)
        if not found:
            rows.append({"flavor": flavor, "workload": workload.__name__, "api": "-", "missing": True, "wall_s": wall})
        for row in found:
            rows.append(dict(row, flavor=flavor, workload=workload.__name__, wall_s=wall))
    return rows


def meets(row: dict) -> bool:
    if row.get("missing"):
        return False
    enough = row["count"] < BUSY_SITE or row["phase_calls"] >= MIN_PHASE_CALLS
    return bool(row["agrees"]) and enough


def print_table(rows: list[dict]) -> bool:
    header = (f"{'flavor':9} {'workload':20} {'api':11} {'calls':>5} {'tfdiag kernel':>14} {'profiler ops':>13} "
              f"{'measure':13} {'ratio':>6} {'split on':>8} {'tf.data moved':>13}  {'run':>6}  target")
    print(header)
    print("-" * len(header))
    every = True
    for row in rows:
        ok = meets(row)
        every = every and ok
        if row.get("missing"):
            print(f"{row['flavor']:9} {row['workload']:20} no call site in the TF Profiler's trace  "
                  f"{row['wall_s']:5.1f}s  MISSED")
            continue
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
        print(f"{row['flavor']:9} {row['workload']:20} {row['api']:11} {row['count']:5d} "
              f"{1000 * row['tfdiag_kernel_s']:11.3f} ms {1000 * row['profiler_model_op_s']:10.3f} ms "
              f"{row['measure'] or '-':13} {ratio:>6} {row['phase_calls']:8d} {1000 * row['moved_tf_data_s']:10.3f} ms"
              f"  {row['wall_s']:5.1f}s  {'ok' if ok else 'MISSED'}")
    print(f"load average {' / '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs "
          f"(other processes' load stretches single calls, and so tfdiag's sampled kernel time)")
    return every


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flavor", choices=("keras3", "tf-keras"), help="run one flavor only, in this process")
    parser.add_argument("--rows-out", help=argparse.SUPPRESS)  # the subprocess hands its rows back here
    args = parser.parse_args(argv)
    if args.flavor:
        rows = run_flavor(args.flavor)
        if args.rows_out:
            import json

            with open(args.rows_out, "w") as handle:
                json.dump(rows, handle)
            return 0
        return 0 if print_table(rows) else 1
    import json
    import tempfile

    rows = []
    for flavor, legacy in (("keras3", "0"), ("tf-keras", "1")):
        with tempfile.NamedTemporaryFile(suffix=".json") as handle:
            env = dict(os.environ, TF_USE_LEGACY_KERAS=legacy)
            done = subprocess.run([sys.executable, __file__, "--flavor", flavor, "--rows-out", handle.name], env=env)
            if done.returncode != 0:
                print(f"{flavor}: the benchmark process failed ({done.returncode})", file=sys.stderr)
                return 2
            rows.extend(json.load(open(handle.name)))
    return 0 if print_table(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
