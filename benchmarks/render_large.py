"""Render time and page size of the report for a large recording (100,000 calls, 10,000 traces).

    python benchmarks/render_large.py [--runs 5] [--scenario bounded|unbounded|both]

Two synthetic recordings, built through the Recording data shape (no TensorFlow):

* ``bounded``: what the collector keeps of such a run. 100,000 Keras calls over 20 call sites
  (aggregates per site, ``MAX_CALL_SAMPLES`` individual samples for the timeline) and 10,000
  traces: 50 user functions traced 200 times each (``MAX_TRACES_KEPT`` kept per function),
  every trace a new shape and a new Python value, plus tf.data functions.
* ``unbounded``: a recording file holding more than the collector would ever keep, to test the
  renderer's own bounds: 100,000 call samples, 1,000 call sites, 10 functions with 1,000 kept
  traces each (10,000 traces), 500 capture warnings.

Prints, per scenario, the median over ``--runs`` of the analysis time, the render time
(jinja2 over the templates) and their sum, and the page size. Targets: render < 2 s,
page < 3 MB. Not a test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tfdiag.analysis import analyze  # noqa: E402
from tfdiag.capture.collector import MAX_CALL_SAMPLES, MAX_TRACES_KEPT  # noqa: E402
from tfdiag.recording import PHASES, Recording  # noqa: E402
from tfdiag.renderers.html import render_report  # noqa: E402

TOTAL_CALLS = 100_000
TOTAL_TRACES = 10_000
TARGET_RENDER_S = 2.0
TARGET_PAGE_BYTES = 3_000_000


def _phases(seconds: float) -> dict:
    split = {"input_processing": 0.02, "data_adapter": 0.55, "graph_creation": 0.2,
             "kernel_execution": 0.05, "output_processing": 0.03, "other": 0.15}
    return {p: seconds * split[p] for p in PHASES}


def _calls(sites: int) -> list[dict]:
    calls = []
    per_site = TOTAL_CALLS // sites
    for i in range(sites):
        median = 0.04 + 0.001 * (i % 7)
        calls.append({
            "api": "predict" if i % 3 else "predict_on_batch", "target": f"model_{i % 5}",
            "call_site": f"/home/user/project/serving/pipeline_{i}.py:{40 + i}",
            "input_signature": f"float32[{1 + i % 4}, 256]", "batch": 1 + i % 4,
            "count": per_site, "measured_count": per_site - 4, "total_s": median * per_site,
            "median_s": median, "p95_s": median * 1.6, "first_s": median * 9, "max_s": median * 12,
            "phases": _phases(median * (per_site - 4)), "profiled_calls": 4, "profiled_median_s": median * 1.4,
        })
    return calls


def _samples(calls: list[dict], count: int) -> list[dict]:
    samples, t = [], 0.0
    for k in range(count):
        call = calls[k % len(calls)]
        first = k < len(calls)
        duration = call["first_s"] if first else call["median_s"] * (3.0 if k % 997 == 0 else 1.0 + (k % 13) / 40)
        samples.append({"api": call["api"], "target": call["target"], "call_site": call["call_site"],
                        "start_s": t, "duration_s": duration, "thread": "MainThread",
                        "profiled": k % 500 == 7, "phases": _phases(duration)})
        t += duration + 0.0005
    return samples


def _function(i: int, traces_total: int, kept: int) -> dict:
    traces = []
    for index in range(1, kept + 1):
        traces.append({
            "index": index, "call_site": f"/home/user/project/model/layers_{i}.py:{100 + i}",
            "duration_s": 0.003 + 0.0001 * (index % 10), "object_index": 1, "new_object": False,
            "created_at": f"/home/user/project/model/layers_{i}.py:{90 + i}", "thread": "MainThread",
            "args": [
                {"name": "tokens", "kind": "tensor", "shape": [1, 5 + index], "dtype": "int32"},
                {"name": "temperature", "kind": "literal", "type": "float", "value": f"{1 - index / 10_000:.4f}"},
                {"name": "mask", "kind": "tensor", "shape": [1, 5 + index], "dtype": "bool"},
            ],
        })
    return {"name": f"encode_block_{i}", "qualname": f"Encoder.encode_block_{i}", "origin": "user",
            "defined_at": f"/home/user/project/model/layers_{i}.py:{20 + i}", "trace_count": traces_total,
            "trace_s": sum(t["duration_s"] for t in traces) * traces_total / max(1, kept),
            "object_count": 1, "traces": traces, "traces_dropped": traces_total - kept}


def _tfdata_functions() -> list[dict]:
    out = []
    for name in ("Dataset_map_grab_batch", "Dataset_flat_map_slice_batch_indices", "Dataset_map_permutation"):
        out.append({"name": name, "qualname": name, "origin": "tf.data", "defined_at": "structured_function.py:238",
                    "trace_count": 3000, "trace_s": 9.0, "object_count": 3000,
                    "traces": [{"index": 1, "call_site": "/home/user/project/serving/pipeline_1.py:41",
                                "duration_s": 0.003, "args": [{"name": "args_0", "kind": "tensor", "shape": [],
                                                               "dtype": "int64"}]}],
                    "traces_dropped": 2999})
    return out


def _recording(calls, samples, functions, warnings) -> Recording:
    wall = sum(c["total_s"] for c in calls)
    totals = dict.fromkeys(PHASES, 0.0)
    for c in calls:
        for p in PHASES:
            totals[p] += c["phases"][p]
    return Recording(
        environment={"python": "3.11.7", "tensorflow": "2.21.0", "keras": "3.15.1", "keras_flavor": "keras3",
                     "devices": ["CPU:0"], "platform": "Linux", "command": ["tfdiag", "analyze", "serve.py"]},
        run={"ended_by": "returned", "exit_status": 0, "wall_s": wall * 1.2, "call_samples_total": TOTAL_CALLS},
        functions=functions, calls=calls, call_samples=samples, phases={"wall_s": wall, **totals},
        warnings=warnings)


def bounded() -> Recording:
    calls = _calls(20)
    per_function = MAX_TRACES_KEPT
    functions = [_function(i, per_function, min(per_function, MAX_TRACES_KEPT))
                 for i in range(TOTAL_TRACES // per_function)]
    return _recording(calls, _samples(calls, MAX_CALL_SAMPLES), functions + _tfdata_functions(), [])


def unbounded() -> Recording:
    calls = _calls(1000)
    functions = [_function(i, 1000, 1000) for i in range(TOTAL_TRACES // 1000)]
    warnings = [{"message": f"could not record a predict call #{i}: RuntimeError: synthetic", "count": 3}
                for i in range(500)]
    return _recording(calls, _samples(calls, TOTAL_CALLS), functions + _tfdata_functions(), warnings)


def measure(name: str, recording: Recording, runs: int) -> dict:
    kept = sum(len(f["traces"]) for f in recording.functions if f["origin"] == "user")
    counted = sum(f["trace_count"] for f in recording.functions if f["origin"] == "user")
    print(f"{name}: {sum(c['count'] for c in recording.calls):,} calls at {len(recording.calls):,} call sites, "
          f"{len(recording.call_samples):,} call samples, {counted:,} user traces ({kept:,} kept in detail), "
          f"{len(recording.warnings)} warnings", flush=True)
    analyze_s, render_s, size = [], [], 0
    for _ in range(runs):
        start = time.perf_counter()
        analysis = analyze(recording)
        middle = time.perf_counter()
        page = render_report(analysis)
        end = time.perf_counter()
        analyze_s.append(middle - start)
        render_s.append(end - middle)
        size = len(page.encode("utf-8"))
    result = {"analyze_s": statistics.median(analyze_s), "render_s": statistics.median(render_s),
              "total_s": statistics.median(a + r for a, r in zip(analyze_s, render_s)), "bytes": size}
    ok_time = "OK" if result["total_s"] < TARGET_RENDER_S else "OVER TARGET"
    ok_size = "OK" if size < TARGET_PAGE_BYTES else "OVER TARGET"
    print(f"  render time (median of {runs}): {result['total_s']:.3f} s  "
          f"[analysis {result['analyze_s']:.3f} s + HTML {result['render_s']:.3f} s]  target < {TARGET_RENDER_S:.0f} s: {ok_time}")
    print(f"  page size: {size / 1e6:.2f} MB ({size:,} bytes)  target < {TARGET_PAGE_BYTES / 1e6:.0f} MB: {ok_size}",
          flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenario", choices=("bounded", "unbounded", "both"), default="both")
    args = parser.parse_args(argv)
    results = {}
    if args.scenario in ("bounded", "both"):
        results["bounded"] = measure("bounded (as the collector keeps it)", bounded(), args.runs)
    if args.scenario in ("unbounded", "both"):
        results["unbounded"] = measure("unbounded (a file holding more than the collector keeps)", unbounded(),
                                       args.runs)
    over = [k for k, r in results.items() if r["total_s"] >= TARGET_RENDER_S or r["bytes"] >= TARGET_PAGE_BYTES]
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
