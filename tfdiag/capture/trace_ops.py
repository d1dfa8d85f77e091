"""The model's own op time in each call the TF Profiler traced, read from its XSpace.

This is the independent measurement that tfdiag's ``kernel_execution`` is checked against
(analysis/agreement.py). It follows xprof's own reading of a host trace (TensorFlow 2.21 /
xprof 2.24, ``xplane_to_op_metrics_db.cc`` and ``xplane_to_step_events.cc``):

- a TF op is a host event named ``name:Type`` (``ParseTfOpFullname``); its self time is its
  duration less the TF ops nested in it on the same thread line;
- ``Iterator::...`` events are tf.data's (xprof's ``Dataset`` category), and so are the iterator
  and dataset kernels (``IteratorGetNext``, ``MakeIterator``, ``*Dataset``, ``Optional*``) and
  everything on tf.data's own threads (lines named ``tf_data_*``: prefetch, parallel map) or
  inside its work on another thread (an op run while ``MakeIterator::...`` makes an iterator):
  none of that is the model;
- a step's host compute is the time covered by its thread's events other than the step marker,
  the ``EagerExecute``/``EagerLocalExecute``/``EagerKernelExecute``/``FunctionRun`` wrappers
  (``IsRealCpuCompute``) and input waits (``IteratorGetNext``).

Each profiled call is one step (``Trace(api, step_num=n, _r=1)`` in tf_profiler.py). A call's
model-op time is the self time of the non-tf.data ops that start inside its step; an eager call,
whose ops the profiler does not list as TF ops, is measured by its host compute instead. The
step's graph functions (``EagerExecute`` of a function, on the step's thread) are timed too, and
the part of them spent on tf.data (a batch waited for inside the graph, an iterator made there):
tfdiag sees a graph function only from outside, so ``move_graph_tf_data`` uses it to take that
time out of kernel_execution.
"""

from __future__ import annotations

import bisect
import re
import statistics

_OP_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_./>-]*")
_OP_TYPE = re.compile(r"[A-Z_][a-zA-Z0-9_]*")
# Kernels of tf.data itself: datasets, iterators and the optionals they hand out.
_TF_DATA_TYPE = re.compile(r"Dataset(V\d+)?$|Iterator|^Optional(FromValue|GetValue|HasValue|None)$")
_INPUT_WAIT = "IteratorGetNext"
_EXECUTE = "EagerExecute"  # with ``is_func``: a graph function run from this thread; else ``eager_op``
_TF_DATA_WORK = ("MakeIterator", _INPUT_WAIT)  # making an iterator (MakeIterator::...), waiting for a batch
_NOT_COMPUTE = ("EagerExecute", "EagerLocalExecute", "EagerKernelExecute", "FunctionRun", _INPUT_WAIT)
_TF_DATA_LINE = "tf_data"
_STEP_KEYS = ("call_number", "step_s", "model_op_s", "host_compute_s", "graph_function_s", "graph_tf_data_s")


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


def _inside(begin: int, spans: list[tuple[int, int]]) -> bool:
    """``begin`` falls in one of ``spans`` (merged and sorted)."""
    at = bisect.bisect_right(spans, (begin, float("inf"))) - 1
    return at >= 0 and spans[at][0] <= begin < spans[at][1]


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for begin, end in sorted(spans):
        if out and begin <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([begin, end])
    return [(b, e) for b, e in out]


class _Line:
    """One thread line's events, read once: ops, tf.data's spans, graph functions, step markers."""

    def __init__(self, line, names: dict, stat_names: dict, markers: dict[int, str], apis: set) -> None:
        base = line.timestamp_ns * 1000
        self.tf_data_thread = line.name.startswith(_TF_DATA_LINE) or line.display_name.startswith(_TF_DATA_LINE)
        self.events: list[tuple[int, int, str]] = []  # everything but step markers, for host compute
        self.steps: dict[int, tuple[int, int]] = {}
        self.functions: list[tuple[int, int]] = []  # graph functions run from this thread
        self.tf_data: list[tuple[int, int]] = []  # tf.data at work or waited for on this thread
        self.waits: list[tuple[int, int]] = []  # of those, waits for a batch
        line_ops = []
        for event in line.events:
            name = names.get(event.metadata_id, "")
            begin = base + event.offset_ps
            end = begin + event.duration_ps
            kind = op_type(name)
            if kind is not None:
                line_ops.append((begin, end, kind))
            stats = _stats(event, stat_names) if event.stats and (name == _EXECUTE or name in apis) else {}
            if (kind is not None and is_tf_data_type(kind)) or name.startswith(_TF_DATA_WORK) or (
                    name == _EXECUTE and is_tf_data_type(str(stats.get("eager_op") or ""))):
                self.tf_data.append((begin, end))
                if name.startswith(_INPUT_WAIT):
                    self.waits.append((begin, end))
            elif name == _EXECUTE and stats.get("is_func"):
                self.functions.append((begin, end))
            number = stats.get("step_num")
            if name in apis and "_r" in stats and isinstance(number, int) and markers.get(number) == name:
                self.steps[number] = (begin, end)
                continue  # a step marker is not compute
            self.events.append((begin, end, name))
        data = _merged(self.tf_data)
        # The model's ops: not tf.data's kind, not run by tf.data (inside its work on this thread,
        # such as a function instantiated while an iterator is made), not on tf.data's threads.
        self.ops = [] if self.tf_data_thread else [
            (b, s) for b, s, kind in _line_op_self_times(line_ops) if not is_tf_data_type(kind) and not _inside(b, data)]


def plane_steps(plane, markers: dict[int, str]) -> dict[int, dict]:
    """Per profiled call number in ``markers`` (number -> api): its model-op and host-compute time,
    and its graph functions' time, all of it and the part spent on tf.data."""
    names = {key: meta.name for key, meta in plane.event_metadata.items()}
    stat_names = {key: meta.name for key, meta in plane.stat_metadata.items()}
    lines = [_Line(line, names, stat_names, markers, set(markers.values())) for line in plane.lines]
    ops = [op for line in lines for op in line.ops]
    # tf.data's time a graph function can spend: a wait for a batch on whichever thread serves it,
    # and tf.data work off tf.data's threads (its own threads run alongside, e.g. prefetching).
    tf_data = [span for line in lines for span in (line.waits if line.tf_data_thread else line.tf_data)]
    steps: dict[int, dict] = {}
    for line in lines:
        for number, (begin, end) in line.steps.items():
            model = [s for b, s in ops if begin <= b < end]
            inside = [(max(b, begin), min(e, end), name) for b, e, name in line.events if b < end and e > begin]
            waited = [(b, e) for b, e, name in inside if name.startswith(_INPUT_WAIT)]
            compute = [(b, e) for b, e, name in inside if not name.startswith(_NOT_COMPUTE)]
            graphs = [(max(b, begin), min(e, end)) for b, e in line.functions if b < end and e > begin]
            steps[number] = {
                "step_s": (end - begin) / 1e12,
                "model_op_s": sum(model) / 1e12,
                "model_ops": len(model),
                "host_compute_s": (_union_ps(compute + waited) - _union_ps(waited)) / 1e12,  # waits win, as in xprof
                "graph_function_s": _union_ps(graphs) / 1e12,
                "graph_tf_data_s": _overlap_ps(graphs, tf_data) / 1e12,
            }
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
            sites.setdefault((call.get("api"), call.get("call_site")), []).append(dict(step, call_number=call["call_number"]))
    rows = []
    for (api, site), found in sites.items():
        eager = not any(step["model_ops"] for step in found)
        key = "host_compute_s" if eager else "model_op_s"
        rows.append({
            "graph_tf_data_s_per_call": sum(step["graph_tf_data_s"] for step in found) / len(found),
            "graph_function_s_per_call": sum(step["graph_function_s"] for step in found) / len(found),
            "api": api,
            "call_site": site,
            "calls_profiled": len(found),
            "model_op_s_per_call": sum(step[key] for step in found) / len(found),
            "measure": "host_compute" if eager else "op_self_time",
            "step_s_per_call": sum(step["step_s"] for step in found) / len(found),
            "steps": [{key: step[key] for key in _STEP_KEYS} for step in found],
        })
    return rows


def _share(site: dict) -> tuple[float, float] | None:
    """(share of the graph functions' time spent on tf.data, least time a profiled call's or
    step's functions ran besides tf.data) of a ``per_call_site`` row; None when nothing to move."""
    wait = site.get("graph_tf_data_s_per_call") or 0.0
    running = site.get("graph_function_s_per_call") or 0.0
    if wait <= 0 or running <= 0:
        return None
    steps = [step for step in site.get("steps") or [] if step.get("graph_function_s")]
    if not steps:
        return min(1.0, wait / running), max(0.0, running - wait)
    # The median share of the profiled calls or steps: one whose batch wait the profiler missed
    # (it started or stopped mid-wait) must not halve the move, as a mean of sums would, nor set
    # the floor below.
    shares = sorted(step["graph_tf_data_s"] / step["graph_function_s"] for step in steps)
    share = statistics.median(shares)
    kept = [step for step in steps if step["graph_tf_data_s"] / step["graph_function_s"] >= share / 2]
    # The least any (kept) profiled call's functions ran besides tf.data (one call the machine's
    # load stretched must not stop the move).
    busy = min(step["graph_function_s"] - step["graph_tf_data_s"] for step in kept)
    return min(1.0, share), max(0.0, busy)


def _shift(split, seconds: float) -> None:
    if isinstance(split, dict) and "kernel_execution" in split:
        seconds = max(0.0, min(seconds, split["kernel_execution"]))
        split["kernel_execution"] -= seconds
        split["data_adapter"] = split.get("data_adapter", 0.0) + seconds


def _moves(calls: list[dict], sites: list[dict], key: str):
    """(call, its split under ``key``, seconds of its kernel time to move) for each call entry at
    a profiled call site (``sites``) whose graph functions spent time on tf.data: the site's share
    of the split's kernel time, never leaving less than the least time they ran besides."""
    for site in sites:
        share = _share(site)
        if share is None:
            continue
        for call in calls:
            split = call.get(key)
            if (call.get("api"), call.get("call_site")) != (site.get("api"), site.get("call_site")) \
                    or not isinstance(split, dict) or not split:
                continue
            kernel = split.get("kernel_execution", 0.0)
            yield call, split, max(0.0, min(share[0] * kernel, kernel - share[1]))


def move_step_tf_data(calls: list[dict], totals: dict, sites: list[dict]) -> None:
    """``move_graph_tf_data`` for fit()/evaluate() steps (``sites``: step_profiler.py's
    ``step_sites``, one row per call site, its "calls" being the profiled steps): Keras's train and
    test functions fetch each batch inside the graph. The share moves in the call entry's
    ``step_phases`` (per step), and as much per step after each call's first in its ``phases``
    and the run's ``totals``; ``graph_tf_data_s_per_step`` on the call entry says how much moved
    per step. A call whose batches a timed producer made (a PyDataset, a generator: steps.py
    moves their production time already) is left alone."""
    for call, steady, moved in _moves(calls, sites, "step_phases"):
        if (call.get("data_producer") or {}).get("seconds"):
            continue
        later = max(0, int(call.get("steps") or 0) - int(call.get("count") or 0)) * moved
        for split, shift in ((steady, moved), (call.get("phases"), later), (totals, later)):
            _shift(split, shift)
        call["graph_tf_data_s_per_step"] = moved


def move_graph_tf_data(calls: list[dict], totals: dict, sites: list[dict]) -> None:
    """Move the tf.data time inside graph functions out of kernel_execution, into data_adapter.

    tfdiag times a graph function from the outside, all of it as kernel_execution; when the
    function pulls its batches from a tf.data iterator itself (tf-keras's predict function, a
    user's tf.function looping over an iterator) or makes one, the wait for those batches is
    inside that time, and no Python entry point marks it. The TF Profiler measured, at the call
    sites it traced (``sites``, from ``per_call_site``), which share of the graph functions' time
    went to tf.data and how long they ran besides. That share of each steady-state call's kernel
    time is tf.data time (a share, as the wait grows and shrinks with the load on the machine,
    in profiled and unprofiled calls alike), but the kernel time never falls below the least
    time a profiled call's functions ran besides tf.data (under the profiler, tf.data's threads
    run slower and its share looks bigger). It moves in ``steady_phases``, and the same fraction of
    the later calls' kernel time moves in the call site's ``phases`` totals and in the run's
    ``totals``; ``graph_tf_data_s`` on the call entry says how much moved per call. The first
    call keeps its own split."""
    for call, steady, moved in _moves(calls, sites, "steady_phases"):
        # The same fraction of the later calls' kernel time in the call site's totals (which
        # hold the profiled calls too) and in the run's.
        kernel = steady.get("kernel_execution", 0.0)
        fraction = moved / kernel if kernel > 0 else 0.0
        whole = call.get("phases") if isinstance(call.get("phases"), dict) else {}
        later = whole.get("kernel_execution", 0.0) - (call.get("first_phases") or {}).get("kernel_execution", 0.0)
        for split, shift in ((steady, moved), (whole, fraction * later), (totals, fraction * later)):
            _shift(split, shift)
        call["graph_tf_data_s"] = moved


# -- xprof's tool tables (tf_profiler.read_trace) ----------------------------------------------
def _table_dicts(table: dict) -> list[dict]:
    """A Google-Charts DataTable (``cols`` + ``rows``) as one dict per row."""
    ids = [c["id"] for c in table["cols"]]
    return [dict(zip(ids, (cell.get("v") if isinstance(cell, dict) else None for cell in row["c"])))
            for row in table.get("rows", [])]


def op_rows(tables) -> list[dict]:
    """framework_op_stats rows (the table without IDLE time) as plain op records, in seconds."""
    tables = tables if isinstance(tables, list) else [tables]
    table = tables[-1]  # xprof emits [with IDLE, without IDLE]; IDLE is not an op
    rows = []
    for row in _table_dicts(table):
        if row.get("type") == "IDLE":
            continue
        rows.append({
            "op": str(row["operation"]),
            "type": str(row["type"]),
            "where": str(row["host_or_device"]),
            "occurrences": int(row.get("occurrences") or 0),
            "self_s": float(row.get("total_self_time") or 0.0) / 1e6,
            "total_s": float(row.get("total_time") or 0.0) / 1e6,
            "mode": str(row.get("eager") or ""),
        })
    return rows


_STEP_FIELDS = {"hostComputeTimeMs": "host_compute_s", "deviceComputeTimeMs": "device_compute_s",
                "infeedTimeMs": "input_s", "outfeedTimeMs": "output_s", "kernelLaunchTimeMs": "kernel_launch_s",
                "compileTimeMs": "compile_s", "otherTimeMs": "other_s", "stepTimeMs": "step_s"}
_SUMMARY_FIELDS = ("hardware_type", "steptime_ms_average", "input_conclusion", "all_other_statement",
                   "host_tf_op_percent", "host_op_time_eager_percent")


def overview_rows(tables) -> tuple[list[dict], dict]:
    """overview_page's step-time table (one row per marked step) and its one-line conclusions."""
    steps: list[dict] = []
    summary: dict = {}
    for table in tables if isinstance(tables, list) else [tables]:
        if not isinstance(table, dict) or "cols" not in table:
            continue
        ids = {c.get("id") for c in table["cols"]}
        if "stepnum" in ids and "stepTimeMs" in ids:
            for row in _table_dicts(table):
                step = {"step": str(row["stepnum"])}
                for key, field_name in _STEP_FIELDS.items():
                    if isinstance(row.get(key), (int, float)):
                        step[field_name] = float(row[key]) / 1000.0
                steps.append(step)
        props = table.get("p") or {}
        for key in _SUMMARY_FIELDS:
            if props.get(key) and key not in summary:
                summary[key] = str(props[key])
    return steps, summary
