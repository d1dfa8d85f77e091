"""A recording's sampled calls as Chrome Trace Event JSON, for Perfetto UI and chrome://tracing.

Each call of ``call_samples`` is a complete ("X") slice on its thread (one track per thread
name the samples give; one track when they give none), all in process 1. Its phases are child
slices named by phase, laid end to end inside the call in PHASES order: in proportion to the
call's own measured split when it was a sampled call, else to its call site's steady split
(with the call's own measured graph creation), marked ``"split": "call site's steady split"``.
Where phase order inside a call is not known, end to end is a layout, not a timeline.

A call that contains another sampled call on its thread (a model called inside a tf.function)
gets no phase slices: the inner call's slice already nests there, and phases laid end to end
would cross it. Times are whole microseconds, so every child ends inside its parent exactly.
Cost: linear in the samples (at most 2,000 in a recording).
"""

from __future__ import annotations

import math

from ..analysis.fields import number
from ..recording import PHASES, Recording

PID = 1


def chrome_trace(recording: Recording) -> dict:
    """The trace as a JSON-ready dict: ``{"traceEvents": [...], "displayTimeUnit": "ms", ...}``."""
    steady = _steady_shares(recording.calls)
    threads: dict[str, int] = {}
    calls = []
    for sample in recording.call_samples:
        start, duration = number(sample.get("start_s")), number(sample.get("duration_s"))
        if start is None or duration is None or duration < 0:
            continue
        thread = sample.get("thread") if isinstance(sample.get("thread"), str) and sample.get("thread") else ""
        tid = threads.setdefault(thread, len(threads) + 1)
        begin = math.floor(start * 1e6)  # floors keep the calls' order: one that ended before the next began still does
        calls.append({"sample": sample, "tid": tid, "ts": begin,
                      "dur": max(1, math.floor((start + duration) * 1e6) - begin)})
    events = [{"name": "process_name", "ph": "M", "pid": PID, "tid": 0,
               "args": {"name": "tfdiag: " + (" ".join(recording.environment.get("command") or []) or "run")}}]
    events += [{"name": "thread_name", "ph": "M", "pid": PID, "tid": tid, "args": {"name": name or "calls"}}
               for name, tid in threads.items()]
    outer = _containing(calls)
    for index, call in enumerate(calls):
        sample = call["sample"]
        events.append({"name": f"{sample.get('api')} {sample.get('target')}", "cat": str(sample.get("api")),
                       "ph": "X", "ts": call["ts"], "dur": call["dur"], "pid": PID, "tid": call["tid"],
                       "args": {"call_site": sample.get("call_site"), "profiled": sample.get("profiled") is True,
                                "duration_ms": 1000 * number(sample.get("duration_s"))}})
        if index in outer:
            continue
        split, source = _split(sample, steady)
        events += _phase_slices(call, split, source)
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"generator": "tfdiag", "schema_version": recording.schema_version,
                          "calls_seen": recording.run.get("call_samples_total"), "calls_kept": len(calls)}}


def _split(sample: dict, steady: dict) -> tuple[dict | None, str]:
    """Seconds per phase of this call: its own when measured, else its site's steady shares of the
    time outside its (always measured) graph creation."""
    own = sample.get("phases")
    if isinstance(own, dict) and any((number(v) or 0) > 0 for v in own.values()):
        return {p: number(own.get(p)) or 0.0 for p in PHASES}, "measured"
    shares = steady.get((sample.get("api"), sample.get("target"), sample.get("call_site")))
    if shares is None:
        return None, ""
    graph = max(0.0, number(sample.get("graph_s")) or 0.0)
    rest = max(0.0, (number(sample.get("duration_s")) or 0.0) - graph)
    split = {p: rest * shares.get(p, 0.0) for p in PHASES}
    split["graph_creation"] = graph
    return split, "call site's steady split"


def _steady_shares(calls: list[dict]) -> dict:
    """Per (api, target, call site): the steady split's shares outside graph creation, count-weighted."""
    sums: dict[tuple, dict] = {}
    for call in calls:
        steady = call.get("steady_phases")
        weight = max(0, call["count"] - 1)
        if not isinstance(steady, dict) or weight == 0:
            continue
        into = sums.setdefault((call["api"], call["target"], call["call_site"]), dict.fromkeys(PHASES, 0.0))
        for phase in PHASES:
            if phase != "graph_creation":
                into[phase] += weight * (number(steady.get(phase)) or 0.0)
    out = {}
    for key, seconds in sums.items():
        total = sum(seconds.values())
        if total > 0:
            out[key] = {p: s / total for p, s in seconds.items()}
    return out


def _phase_slices(call: dict, split: dict | None, source: str) -> list[dict]:
    """Child slices end to end inside the call, each phase's width in proportion to its seconds;
    boundaries in whole microseconds, the last one the call's own end."""
    if not split:
        return []
    total = sum(max(0.0, s) for s in split.values())
    if total <= 0:
        return []
    out, done, left = [], 0.0, call["ts"]
    end = call["ts"] + call["dur"]
    for phase in PHASES:
        seconds = max(0.0, split.get(phase, 0.0))
        if seconds <= 0:
            continue
        done += seconds
        right = end if done >= total else min(end, call["ts"] + round(call["dur"] * done / total))
        if right > left:
            out.append({"name": phase, "cat": "phase", "ph": "X", "ts": left, "dur": right - left, "pid": PID,
                        "tid": call["tid"], "args": {"seconds": seconds, "split": source}})
        left = right
    return out


def _containing(calls: list[dict]) -> set[int]:
    """Indexes of calls that contain another call on their thread."""
    outer: set[int] = set()
    by_thread: dict[int, list[int]] = {}
    for index, call in enumerate(calls):
        by_thread.setdefault(call["tid"], []).append(index)
    for indexes in by_thread.values():
        indexes.sort(key=lambda i: (calls[i]["ts"], -calls[i]["dur"]))
        open_: list[int] = []  # calls whose end is still ahead, outermost first
        for index in indexes:
            call = calls[index]
            while open_ and calls[open_[-1]]["ts"] + calls[open_[-1]]["dur"] <= call["ts"]:
                open_.pop()
            if open_:
                outer.add(open_[-1])
            open_.append(index)
    return outer
