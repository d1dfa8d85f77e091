"""Memory that grows with traces: a tf.function given a new Python float on every call.

Each distinct float is part of the trace key, so every call traces `scale` again and its
cache keeps every graph: memory grows by about 0.1 MB per call.

    tfdiag analyze examples/memory/python_float.py --calls 300
"""

import argparse

import tensorflow as tf

parser = argparse.ArgumentParser()
parser.add_argument("--calls", type=int, default=300)
args = parser.parse_args()


@tf.function
def scale(x, factor):
    return x * factor


x = tf.ones((8,))
for step in range(args.calls):
    scale(x, 1.0 + step / 1000)  # a new Python float each call: a new trace each call
print(f"{args.calls} calls of scale()")
