"""Memory of a long run: 1,000,000 calls of a small tf.function under diagnose() vs without.

    python benchmarks/long_run.py [--calls 1000000]

Runs the same loop in two fresh processes, one under ``tfdiag.diagnose(cprofile=False,
tf_profiler=False)`` and one without, and prints each one's peak RSS and the difference
(target, issue 8: under 50 MB added), plus the size of the recording and of the report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, resource, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
import tfdiag
calls, mode, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
step = tf.function(lambda t: t + 1.0)
x = tf.ones((2,))
step(x)
start = time.perf_counter()
if mode == "on":
    with tfdiag.diagnose(out, cprofile=False, tf_profiler=False) as d:
        for _ in range(calls):
            step(x)
    sizes = {name: os.path.getsize(os.path.join(out, name)) for name in ("recording.json", "report.html")}
    counted = sum(c["count"] for c in d.recording.calls)
else:
    for _ in range(calls):
        step(x)
    sizes, counted = {}, calls
print(json.dumps({"peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "seconds": time.perf_counter() - start, "sizes": sizes, "counted": counted}))
"""


def run(calls: int, mode: str, out: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", CHILD, str(calls), mode, out], capture_output=True,
                            text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        off = run(args.calls, "off", out)
        on = run(args.calls, "on", out)
    added_mb = (on["peak_rss_kb"] - off["peak_rss_kb"]) / 1024
    print(f"{args.calls} calls of a small tf.function (counted under tfdiag: {on['counted']})")
    print(f"  peak RSS without tfdiag {off['peak_rss_kb'] / 1024:.1f} MB, with {on['peak_rss_kb'] / 1024:.1f} MB, "
          f"added {added_mb:.1f} MB (target < 50 MB)")
    print(f"  recording.json {on['sizes']['recording.json'] / 1024:.0f} KB, report.html "
          f"{on['sizes']['report.html'] / 1024:.0f} KB; loop {off['seconds']:.1f} s off, {on['seconds']:.1f} s on")


if __name__ == "__main__":
    main()
