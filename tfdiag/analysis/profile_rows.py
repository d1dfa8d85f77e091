"""The profilers' sections, read: which phase a hot function belongs to, and what each
profiler cost in the run it measured.

Pure functions over plain rows (no TensorFlow, no jinja2), so a saved recording is
annotated the same way anywhere. The phase rules read file paths and function names as
pstats reports them, and use the phase names of the recording (see ``recording.PHASES``).
"""

from __future__ import annotations

from statistics import median

# Built-in functions (pstats file "~") are matched by a fragment of their name; Python
# functions by exact name. Names are checked before files: they say what a function does
# wherever it lives (``_call_flat`` is in concrete_function.py, which also builds graphs).
BUILTIN_PHASES = (
    ("TFE_Py_FastPathExecute", "kernel_execution"),
    ("TFE_Py_Execute", "kernel_execution"),
    ("TFE_Py_ExecuteCancelable", "kernel_execution"),
    ("_pywrap_tf_session.TF_", "graph_creation"),  # the C API that adds nodes to a graph
    ("_tf_stack.extract_stack", "graph_creation"),  # records where each graph op was created
)
# (path fragment, function names, phase) for names that are only unambiguous in one file.
FILE_FUNCTION_PHASES = (
    # Keras 3 predict(): TFEpochIterator builds and steps the tf.data iterator.
    ("/backend/tensorflow/trainer.py", {"__init__", "__next__", "_get_iterator", "enumerate_epoch"},
     "data_adapter"),
    # tf.data traces a function per map/flat_map: graph creation, though it lives under data/.
    ("/data/ops/structured_function.py", {"__init__", "wrapper_fn", "trace_tf_function"}, "graph_creation"),
    ("/polymorphic_function/polymorphic_function.py",
     {"get_concrete_function", "_get_concrete_function_garbage_collected",
      "_get_concrete_function_internal_garbage_collected", "_initialize"}, "graph_creation"),
    ("/framework/ops.py", {"_create_c_op", "_create_op_internal", "create_op", "from_node_def", "_NodeDef",
                           "_create_op_helper"}, "graph_creation"),
)
FUNCTION_PHASES = {
    "quick_execute": "kernel_execution",
    "_call_flat": "kernel_execution",
    "call_flat": "kernel_execution",
    "call_preflattened": "kernel_execution",
    "call_function": "kernel_execution",
    "_create_concrete_function": "graph_creation",
    "convert_to_tensor": "input_processing",
    "convert_to_tensor_v2": "input_processing",
    "convert_to_tensor_v2_with_dispatch": "input_processing",
    "_standardize_inputs": "input_processing",
    "_conform_to_reference_input": "input_processing",
    "convert_to_np_if_not_ragged": "output_processing",
    "potentially_ragged_concat": "output_processing",
    "sync_to_numpy_or_python_type": "output_processing",
}
# Path fragments ("/" separators), most specific first.
FILE_PHASES = (
    ("/trainers/data_adapters/", "data_adapter"),
    ("/trainers/epoch_iterator.py", "data_adapter"),
    ("/engine/data_adapter.py", "data_adapter"),
    ("/tensorflow/python/data/", "data_adapter"),
    ("/ops/gen_dataset_ops.py", "data_adapter"),
    ("/ops/gen_experimental_dataset_ops.py", "data_adapter"),
    ("/eager/polymorphic_function/tracing_compilation.py", "graph_creation"),
    ("/framework/func_graph.py", "graph_creation"),
    ("/autograph/", "graph_creation"),
    ("/framework/op_def_library.py", "graph_creation"),
    ("/framework/tensor_util.py", "graph_creation"),
    ("/framework/tensor_conversion", "input_processing"),
    ("/framework/constant_op.py", "input_processing"),
    ("/eager/execute.py", "kernel_execution"),
)


def phase_of(file: str, function: str) -> str:
    """The phase a profiled function's time belongs to (``other`` when no rule says)."""
    if file == "~" or function.startswith("<"):
        for fragment, phase in BUILTIN_PHASES:
            if fragment in function:
                return phase
        return "other"
    path = file.replace("\\", "/")
    for fragment, names, phase in FILE_FUNCTION_PHASES:
        if function in names and fragment in path:
            return phase
    phase = FUNCTION_PHASES.get(function)
    if phase is not None:
        return phase
    for fragment, phase in FILE_PHASES:
        if fragment in path:
            return phase
    return "other"


def with_phases(rows: list[dict]) -> list[dict]:
    """Copies of cProfile rows (``file``, ``function``) with a ``phase`` field added."""
    return [dict(row, phase=phase_of(str(row.get("file", "")), str(row.get("function", "")))) for row in rows]


def measured_overhead(profiled: list[dict], calls: list[dict]) -> dict:
    """A profiler's cost in this run: each call it profiled against the unprofiled median
    of the same call site (``api`` + ``call_site``), as ``ratio`` = profiled / unprofiled.

    ``ratio`` is the median over profiled calls; ``None`` when no profiled call has an
    unprofiled call at its site to compare with.
    """
    baseline: dict[tuple, tuple[int, float]] = {}
    for call in calls:
        measured = (call.get("count", 0) or 0) - (call.get("profiled_calls", 0) or 0)  # behind median_s
        median_s = call.get("median_s") or 0.0
        if measured <= 0 or median_s <= 0:
            continue
        key = (call.get("api"), call.get("call_site"))
        # Several entries per site (other models or input shapes): compare with the most measured.
        if key not in baseline or measured > baseline[key][0]:
            baseline[key] = (measured, median_s)
    by_site: dict[tuple, list[float]] = {}
    for entry in profiled:
        by_site.setdefault((entry.get("api"), entry.get("call_site")), []).append(float(entry.get("duration_s", 0.0)))
    sites, ratios = [], []
    for key, durations in by_site.items():
        base = baseline.get(key)
        profiled_median = median(durations)
        ratio = profiled_median / base[1] if base else None
        if base:
            ratios.extend(d / base[1] for d in durations)
        sites.append({"api": key[0], "call_site": key[1], "profiled_calls": len(durations),
                      "profiled_median_s": profiled_median,
                      "unprofiled_median_s": base[1] if base else None,
                      "unprofiled_calls": base[0] if base else 0, "ratio": ratio})
    sites.sort(key=lambda s: -s["profiled_calls"])
    return {
        "ratio": median(ratios) if ratios else None,
        "profiled_calls": sum(len(d) for d in by_site.values()),
        "compared_calls": len(ratios),
        "sites": sites,
    }


def annotate(section: dict | None, calls: list[dict]) -> dict | None:
    """A profiler section with its measured overhead, and phases on any cProfile rows."""
    if section is None:
        return None
    section = dict(section)
    section["overhead"] = measured_overhead(section.get("profiled", []), calls)
    for key in ("top_cumulative", "top_own"):
        if key in section:
            section[key] = with_phases(section[key])
    return section
