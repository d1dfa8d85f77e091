"""The model's own op time in each call the TF Profiler traced, read from its XSpace.

This is the independent measurement that tfdiag's ``kernel_execution`` is checked against
(analysis/agreement.py). It follows xprof's own reading of a host trace (TensorFlow 2.21 /
xprof 2.24, ``xplane_to_op_metrics_db.cc`` and ``xplane_to_step_events.cc``):

- a TF op is a host event named ``name:Type`` (``ParseTfOpFullname``); its self time is its
  duration less the TF ops nested in it on the same thread line;
- ``Iterator::...`` events are tf.data's (xprof's ``Dataset`` category), and so are the iterator
  and dataset kernels (``IteratorGetNext``, ``MakeIterator``, ``*Dataset``, ``Optional*``) and
  everything on tf.data's own threads (lines named ``tf_data_*``: prefetch, parallel map):
  none of that is the model;
- a step's host compute is the time covered by its thread's events other than the step marker,
  the ``EagerExecute``/``EagerLocalExecute``/``EagerKernelExecute``/``FunctionRun`` wrappers
  (``IsRealCpuCompute``) and input waits (``IteratorGetNext``).

Each profiled call is one step (``Trace(api, step_num=n, _r=1)`` in tf_profiler.py). A call's
model-op time is the self time of the non-tf.data ops that start inside its step; an eager call,
whose ops the profiler does not list as TF ops, is measured by its host compute instead.
"""

from __future__ import annotations

import re

_OP_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_./>-]*")
_OP_TYPE = re.compile(r"[A-Z_][a-zA-Z0-9_]*")
# Kernels of tf.data itself: datasets, iterators and the optionals they hand out.
_TF_DATA_TYPE = re.compile(r"Dataset(V\d+)?$|Iterator|^Optional(FromValue|GetValue|HasValue|None)$")
_INPUT_WAIT = "IteratorGetNext"
_EXECUTE = "EagerExecute"  # with ``is_func``: a graph function run from this thread
_NOT_COMPUTE = ("EagerExecute", "EagerLocalExecute", "EagerKernelExecute", "FunctionRun", _INPUT_WAIT)
_TF_DATA_LINE = "tf_data"


def op_type(event_name: str) -> str | None:
    """The TF op type of a host event (``Dataset`` for tf.data's iterator events), None if not an op."""
    name, sep, kind = event_name.partition(":")
    if not sep:
        return None
    if name == "Iterator":
        return "Dataset"
    if _OP_TYPE.fullmatch(kind) and _OP_NAME.fullmatch(name):
        return kind
    return None


def is_tf_data_type(kind: str) -> bool:
    return kind == "Dataset" or bool(_TF_DATA_TYPE.search(kind))


def _stats(event, stat_names: dict) -> dict:
    out = {}
    for stat in event.stats:
        field = stat.WhichOneof("value")
        value = getattr(stat, field) if field else None
        if field == "ref_value":
            value = stat_names.get(value)
        out[stat_names.get(stat.metadata_id, "")] = value
    return out


def _union_ps(spans: list[tuple[int, int]]) -> int:
    total, end = 0, None
    for begin, finish in sorted(spans):
        if end is None or begin > end:
            total += finish - begin
            end = finish
        elif finish > end:
            total += finish - end
            end = finish
    return total


def _overlap_ps(spans: list[tuple[int, int]], others: list[tuple[int, int]]) -> int:
    """Time covered both by ``spans`` and by ``others``."""
    return _union_ps(spans) + _union_ps(others) - _union_ps(spans + others) if spans and others else 0


def _line_op_self_times(events: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """``(begin_ps, self_ps, type)`` of each TF op on one line (nested TF ops' time taken out)."""
    ops = sorted(((b, e, t) for b, e, t in events), key=lambda x: (x[0], -x[1]))
    out: list[tuple[int, int, str]] = []
    stack: list[list] = []  # [begin, end, type, children_ps]

    def close(item):
        out.append((item[0], max(0, item[1] - item[0] - item[3]), item[2]))

    for begin, end, kind in ops:
        while stack and stack[-1][1] <= begin:
            close(stack.pop())
        if stack:
            stack[-1][3] += end - begin
        stack.append([begin, end, kind, 0])
    while stack:
        close(stack.pop())
    return out


def plane_steps(plane, markers: dict[int, str]) -> dict[int, dict]:
    """Per profiled call number in ``markers`` (number -> api): its model-op and host-compute time."""
    names = {key: meta.name for key, meta in plane.event_metadata.items()}
    stat_names = {key: meta.name for key, meta in plane.stat_metadata.items()}
    steps: dict[int, dict] = {}
    ops: list[tuple[int, int, str]] = []  # (begin_ps, self_ps, type) off tf.data's threads
    by_line: dict[int, list] = {}
    tf_data: list[tuple[int, int]] = []  # tf.data at work or waited for: input waits, tf.data ops off its threads
    functions: dict[int, list] = {}  # per line: graph functions run from it (EagerExecute of a function)
    apis = set(markers.values())
    for position, line in enumerate(plane.lines):
        base = line.timestamp_ns * 1000
        tf_data_line = line.name.startswith(_TF_DATA_LINE) or line.display_name.startswith(_TF_DATA_LINE)
        line_ops, events = [], []
        for event in line.events:
            name = names.get(event.metadata_id, "")
            begin = base + event.offset_ps
            end = begin + event.duration_ps
            kind = op_type(name)
            if kind is not None:
                line_ops.append((begin, end, kind))
                if is_tf_data_type(kind) and not tf_data_line:
                    tf_data.append((begin, end))
            elif name.startswith(_INPUT_WAIT):
                tf_data.append((begin, end))
            elif name == _EXECUTE and event.stats and _stats(event, stat_names).get("is_func"):
                functions.setdefault(position, []).append((begin, end))
            if name in apis and event.stats:
                stats = _stats(event, stat_names)
                number = stats.get("step_num")
                if "_r" in stats and isinstance(number, int) and markers.get(number) == name:
                    steps[number] = {"line": position, "begin": begin, "end": end}
                    continue  # a step marker is not compute
            events.append((begin, end, name))
        by_line[position] = events
        if not tf_data_line:
            ops.extend(_line_op_self_times(line_ops))
    for step in steps.values():
        begin, end = step["begin"], step["end"]
        model = [(b, s) for b, s, kind in ops if begin <= b < end and not is_tf_data_type(kind)]
        inside = [(max(b, begin), min(e, end), name) for b, e, name in by_line[step["line"]] if b < end and e > begin]
        waited = [(b, e) for b, e, name in inside if name.startswith(_INPUT_WAIT)]
        compute = [(b, e) for b, e, name in inside if not name.startswith(_NOT_COMPUTE)]
        graphs = [(max(b, begin), min(e, end)) for b, e in functions.get(step["line"], []) if b < end and e > begin]
        step["model_op_s"] = sum(s for _, s in model) / 1e12
        step["model_ops"] = len(model)
        step["host_compute_s"] = (_union_ps(compute + waited) - _union_ps(waited)) / 1e12  # waits win, as in xprof
        step["graph_tf_data_s"] = _overlap_ps(graphs, tf_data) / 1e12
        step["graph_function_s"] = _union_ps(graphs) / 1e12
        step["step_s"] = (end - begin) / 1e12
    return steps


def call_steps(paths: list[str], markers: dict[int, str]) -> dict[int, dict]:
    """``plane_steps`` over the host planes of every ``.xplane.pb`` in ``paths``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    found: dict[int, dict] = {}
    for path in paths:
        space = xplane_pb2.XSpace()
        with open(path, "rb") as handle:
            space.ParseFromString(handle.read())
        for plane in space.planes:
            if plane.name.startswith("/host:"):
                found.update(plane_steps(plane, markers))
    return found


def per_call_site(profiled: list[dict], steps: dict[int, dict]) -> list[dict]:
    """Per (api, call site) of the profiled calls: the model's op time per call.

    ``measure`` says what it is: ``op_self_time`` (self time of the non-tf.data TF ops the calls
    ran) or, for calls that ran no TF op the profiler lists (eager ops), ``host_compute``.
    ``graph_tf_data_s_per_call``: how long, per call, the call's graph functions spent on tf.data
    themselves: waiting for the batches they pull from an iterator passed in, or making one."""
    sites: dict[tuple, list[dict]] = {}
    for call in profiled:
        step = steps.get(call.get("call_number"))
        if step is not None:
            sites.setdefault((call.get("api"), call.get("call_site")), []).append(step)
    rows = []
    for (api, site), found in sites.items():
        eager = not any(step["model_ops"] for step in found)
        key = "host_compute_s" if eager else "model_op_s"
        rows.append({
            "graph_tf_data_s_per_call": sum(step["graph_tf_data_s"] for step in found) / len(found),
            "api": api,
            "call_site": site,
            "calls_profiled": len(found),
            "model_op_s_per_call": sum(step[key] for step in found) / len(found),
            "measure": "host_compute" if eager else "op_self_time",
            "step_s_per_call": sum(step["step_s"] for step in found) / len(found),
        })
    return rows


def move_graph_tf_data(calls: list[dict], totals: dict, sites: list[dict]) -> None:
    """Move each traced call site's tf.data time inside graph functions from kernel_execution
    to data_adapter.

    tfdiag times a graph function from the outside, all of it as kernel_execution; when the
    function pulls its batches from a tf.data iterator itself (tf-keras's predict function, a
    user's tf.function looping over an iterator) or makes one, the wait for those batches is
    inside that time, and no Python entry point marks it. The TF Profiler measured it per call (``sites``, from
    ``per_call_site``): it moves, per steady-state call, from kernel_execution to data_adapter
    in ``steady_phases``, in the call site's ``phases`` totals and in the run's ``totals``; never
    more than the kernel time there is. ``graph_tf_data_s`` on the call entry says how much
    moved per call. The first call keeps its split (its own was not measured)."""
    for site in sites:
        wait = site.get("graph_tf_data_s_per_call") or 0.0
        if wait <= 0:
            continue
        for call in calls:
            steady = call.get("steady_phases")
            if (call.get("api"), call.get("call_site")) != (site.get("api"), site.get("call_site")) or not steady:
                continue
            moved = min(wait, steady.get("kernel_execution", 0.0))
            steady_calls = max(0, (call.get("count") or 0) - (1 if call.get("first_phases") else 0))
            for split, times in ((steady, 1), (call.get("phases"), steady_calls), (totals, steady_calls)):
                if isinstance(split, dict) and "kernel_execution" in split:
                    shift = min(moved * times, split["kernel_execution"])
                    split["kernel_execution"] -= shift
                    split["data_adapter"] = split.get("data_adapter", 0.0) + shift
            call["graph_tf_data_s"] = moved
