"""The ``memory-growth`` finding: a call site whose memory keeps growing after warm-up, its cause,
and a fix written from what was observed (analysis/memory.py measures; this writes).

One finding per cause and subject (resident memory is the process's, so two call sites in one
loop see the same growth): the call site that the cause points at (the function's own call site,
the user's line) when it is one of them, else the busiest. The finding saves no time
(``estimated_savings_s`` 0): its severity comes from the projection at the observed call rate.
"""

from __future__ import annotations

from ..recording import Recording
from . import memory, retracing
from .fields import count
from .findings import Finding, short_site
from .retrace_findings import _by_cause, _changed, _fix_for

GUIDE = "https://www.tensorflow.org/guide/profiler#memory_profile_tool"


def _function_for(recording: Recording, analysis: dict) -> tuple[int, dict] | None:
    """The function whose traces grew: among the user's functions traced again (at least twice),
    the one traced most from this call site, then most in all; else any function, likewise (a
    library function traced once here does not outrank a user function traced hundreds of times)."""
    site = analysis["call_site"]
    best = None
    for position, function in enumerate(recording.functions):
        traces = function.get("traces") or []
        here = sum(1 for t in traces if isinstance(t, dict) and t.get("call_site") == site)
        traced = count(function.get("trace_count")) or 0
        key = (not retracing.is_library(function) and traced >= 2, here, traced)
        if best is None or key > best[0]:
            best = (key, position, function)
    return None if best is None or best[0][2] < 2 else (best[1], best[2])


def _traces_cause(recording: Recording, analysis: dict, explained: dict) -> tuple[str, dict, dict]:
    """(subject, details, fix) for growth that tracks traces: the function, the argument that changes."""
    found = _function_for(recording, analysis)
    if found is None:
        return "", {}, {"text": "Find what makes TensorFlow trace again on every call (see Retracing).",
                        "guide": GUIDE}
    position, function = found
    name = str(function.get("name", "?"))
    by_cause = _by_cause(explained.get(position, []))
    retrace = max(by_cause, key=lambda c: len(by_cause[c])) if by_cause else "retrace-new-function"
    arguments = _changed(by_cause.get(retrace, []), retrace, "argument")
    fix = dict(_fix_for(retrace, function, arguments))
    grew = analysis["traces"]["end"] - analysis["traces"]["start"]
    what = f"`{arguments[0]}`" if arguments else "its inputs"
    fix["text"] = (f"`{name}` keeps every trace in its cache, so each new trace ({grew} after warm-up, because {what} "
                   f"changed: {retrace.replace('retrace-', '')}) stays in memory. " + fix.get("text", ""))
    details = {"function": name, "arguments": arguments, "retrace_cause": retrace,
               "defined_at": function.get("defined_at"), "traces_after_warmup": grew}
    return name, details, fix


def _fix_user_objects(line: dict, window: dict) -> tuple[str, dict, dict]:
    where = line["line"]
    size = line["bytes"] / memory.MB
    calls = window["calls"]
    text = (f"The objects allocated at `{short_site(where)}` stay alive: {size:.1f} MB in {line.get('count')} blocks "
            f"made there over {calls} calls were still reachable at the end of tfdiag's tracemalloc window. Your "
            "code keeps every result (a list or dict that only grows, a cache without a bound): keep only what "
            "you need (a running total, the last N in a deque, results written out as you go).")
    code = (f"# {short_site(where)}: keep a bounded window or a summary, not every result\n"
            "import collections\nrecent = collections.deque(maxlen=100)  # instead of a list that grows\n"
            "recent.append(result)")
    details = {"line": where, "line_bytes": line.get("bytes"), "line_blocks": line.get("count"),
               "window_calls": calls}
    return where, details, {"text": text, "code": code, "guide": GUIDE}


FIXES = {
    "models": ("A new Keras model is created on each call and each one stays alive (with its traced functions): "
               "build the model once, outside the loop, and reuse it; if you must rebuild, drop the old one and "
               "call `keras.utils.clear_session()`.",
               "model = build_model()  # once, outside the loop\nfor batch in data:\n    model.predict_on_batch(batch)"),
    "iterators": ("tf.data iterators stay alive: something keeps each iterator (or a dataset made per call). "
                  "Make the dataset and its iterator once and reuse them; do not keep iterators in a list.",
                  "iterator = iter(dataset)  # once\nfor _ in range(steps):\n    batch = next(iterator)"),
    "unknown": ("Memory grows without a cause tfdiag could count (traces, models, iterators) or place on a line "
                "of yours. Look for objects your loop keeps (lists, caches, closures holding tensors), or run "
                "tracemalloc over a window of calls.",
                "import tracemalloc\ntracemalloc.start(25)\n...  # a few hundred calls\n"
                "print(tracemalloc.take_snapshot().statistics('traceback')[0])"),
}


def _severity(per_hour_mb: float | None, slope: float) -> str:
    if (per_hour_mb is not None and per_hour_mb >= 1024) or slope >= 50:
        return "high"
    if (per_hour_mb is not None and per_hour_mb >= 100) or slope >= 5:
        return "medium"
    return "low"


def memory_findings(recording: Recording, explained: dict) -> list[Finding]:
    """One ``memory-growth`` finding per cause and subject among the growing call sites."""
    section = recording.extra.get("memory")
    if not isinstance(section, dict):
        return []
    window = memory.clean_window(section.get("tracemalloc"))
    chosen: dict[tuple, tuple] = {}
    sites: dict[tuple, list] = {}  # the growing call sites of each (cause, subject)
    for analysis in memory.site_analyses(recording):
        if not analysis["growing"]:
            continue
        cause = memory.cause_of(analysis, window)
        if cause == "traces":
            subject, details, fix = _traces_cause(recording, analysis, explained)
            own = any(isinstance(t, dict) and t.get("call_site") == analysis["call_site"]
                      for f in recording.functions if f.get("name") == subject for t in f.get("traces") or [])
        elif cause == "user-objects":
            subject, details, fix = _fix_user_objects(memory.top_line(window, analysis), window)
            own = subject == analysis["call_site"]
        else:
            text, code = FIXES[cause]
            subject, details, fix = "", {}, {"text": text, "code": code, "guide": GUIDE}
            own = False
        rank = (own, analysis["calls"])
        key = (cause, subject)
        sites.setdefault(key, []).append(analysis)
        if key not in chosen or rank > chosen[key][0]:
            chosen[key] = (rank, analysis, cause, subject, details, fix)
    found = []
    for key, entry in chosen.items():
        finding = _finding(recording, *entry[1:], window)
        others = [a for a in sites[key] if a is not entry[1]]
        if others and not key[1]:  # nothing points at one of them: say so, blame none
            _shared(finding, entry[1], others)
        found.append(finding)
    return found


def _shared(finding: Finding, analysis: dict, others: list[dict]) -> None:
    """Resident memory is the process's: call sites interleaved in one loop all see its growth.
    With no cause that points at one of them, the finding names them all and blames none."""
    every = [analysis, *others]
    names = ", ".join(f"`{a['api']} {a['target']}` at {short_site(a['call_site'])}" for a in every[:4])
    finding.title = finding.title.replace(
        f"of `{analysis['api']} {analysis['target']}` at {short_site(analysis['call_site'])}",
        f"of a loop that calls {names}")
    finding.evidence.insert(0, f"{len(every)} call sites saw this growth in step: memory is the process's, so "
                               "tfdiag cannot tell which of them holds it (the figures are the busiest one's)")
    finding.details["call_sites"] = [a["call_site"] for a in every]


def _finding(recording: Recording, analysis: dict, cause: str, subject: str, details: dict, fix: dict,
             window: dict | None = None) -> Finding:
    slope = analysis["slope_mb_per_1000_calls"]
    low, high = analysis["spread_mb_per_1000_calls"]
    rate = analysis.get("calls_per_s")
    per_hour = slope / 1000 * rate * 3600 if rate else None
    where = short_site(analysis["call_site"])
    because = {"traces": f"each call traces `{subject}` again" if subject else "traces keep being added",
               "models": "models are created and kept alive", "iterators": "tf.data iterators are kept alive",
               "user-objects": ("the objects made on that line stay alive" if subject == analysis["call_site"]
                                else f"objects made at {short_site(subject)} stay alive"),
               "unknown": "no cause tfdiag could count"}[cause]
    title = f"Memory grows {slope:.1f} MB per 1000 calls of `{analysis['api']} {analysis['target']}` at {where}: {because}"
    evidence = [
        f"steady-state growth {slope:.2f} MB per 1000 calls (25-75% of pairwise slopes {low:.2f} to {high:.2f}), "
        f"measured from call {analysis['warmup_calls']} on (before it: warm-up); {analysis['growth_mb']:.1f} MB "
        f"over the {analysis['steady_calls']} calls after it, a new high as late as call {analysis['last_high_call']}",
    ]
    if per_hour is not None:
        evidence.append(f"at the {rate:.1f} calls/s observed over the steady window (tfdiag's own pauses left "
                        f"out): about {per_hour:,.0f} MB per hour")
    counts = ", ".join(f"{name} {analysis[name]['start']} → {analysis[name]['end']}"
                       for name in ("traces", "models", "iterators"))
    evidence.append(f"over the steady window: {counts}")
    if analysis.get("collected_after_call") is not None:
        evidence.append(f"measured after a full garbage collection tfdiag forced at call {int(analysis['collected_after_call'])}"
                        " (uncollected garbage is not counted as growth)")
    if cause == "unknown" and window is not None and window["calls"]:
        kept = (window["traced_bytes"] or 0.0) / window["calls"] / 1024
        evidence.append(f"tracemalloc over {window['calls']} calls: {kept:.1f} KB of Python objects kept per call, "
                        f"against {slope * 1.024:.1f} KB per call of resident growth: the rest is native memory "
                        "(TensorFlow's or the C allocator's), which may still level off later")
    if analysis.get("gpu_slope_mb_per_1000_calls") is not None:
        evidence.append(f"GPU memory held by TensorFlow: {analysis['gpu_slope_mb_per_1000_calls']:.2f} MB per 1000 calls")
    return Finding(
        code="memory-growth", severity=_severity(per_hour, slope),
        title=title,
        function=analysis["target"], call_site=analysis["call_site"], evidence=evidence, estimated_savings_s=0.0,
        fix=fix,
        details={"slope_mb_per_1000_calls": slope, "cause": cause, "spread_mb_per_1000_calls": [low, high],
                 "warmup_calls": analysis["warmup_calls"], "growth_mb": analysis["growth_mb"],
                 "mb_per_hour": per_hour, "api": analysis["api"], **details},
    )
