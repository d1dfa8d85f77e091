"""What the report shows of the recording beyond the findings: how the run ended (the one table
of run labels), the environment, the tables of functions and calls, the profilers' sections
read, and each retraced function's traces. Pure: copies and views, never a write into the
recording."""

from __future__ import annotations

from ..recording import Recording
from . import profile_rows, retracing
from .fields import count

# How the code ended, in words: "the code {label}". The one table the page and the terminal use.
RUN_ENDINGS = {
    "returned": "ran to completion",
    "sys.exit": "called sys.exit",
    "os._exit": "called os._exit",
    "exception": "raised an exception",
    "interrupted": "was interrupted (Ctrl-C)",
    "terminated": "was terminated",
}
CUT_SHORT = ("exception", "interrupted", "terminated")
ENVIRONMENT_KEYS = ("python", "tensorflow", "keras", "tf_keras", "keras_flavor", "tf_use_legacy_keras", "devices",
                    "cpu_count", "platform", "executable", "command")
PROFILERS = ("cprofile", "tf_profiler")



def run_view(recording: Recording) -> dict:
    """How the diagnosed code ended: ``ending`` in words, ``cut_short`` when it stopped early,
    ``failed`` when the page and the terminal should flag it."""
    run = recording.run
    ended = run.get("ended_by")
    status = run.get("exit_status")
    return {
        "ended_by": ended,
        "ending": RUN_ENDINGS.get(ended, "ended"),
        "exit_status": status,
        "exception": run.get("exception"),
        "wall_s": run.get("wall_s") or 0.0,
        "cut_short": ended in CUT_SHORT,
        "failed": ended in CUT_SHORT or status not in (None, 0),
        "calls_seen": count(run.get("call_samples_total")),
        "calls_kept": len(recording.call_samples),
    }


def _text(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_text(v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
    if isinstance(value, (list, tuple)):
        return " ".join(_text(v) for v in value)
    return str(value)


def environment_rows(recording: Recording) -> list[tuple[str, str]]:
    return [(key, _text(recording.environment.get(key))) for key in ENVIRONMENT_KEYS]


def functions_table(recording: Recording) -> list[dict]:
    """Every traced function, most tracing time first."""
    return sorted(recording.functions, key=lambda f: f.get("trace_s") or 0.0, reverse=True)


def profilers_view(recording: Recording) -> dict[str, dict | None]:
    """Each profiler's section with its measured overhead and the phase of each hot function."""
    return {name: profile_rows.annotate(recording.extra.get(name), recording.calls) for name in PROFILERS}


def retracing_view(recording: Recording, explained: dict | None = None) -> list[dict]:
    """Per function traced more than once: its traces in order, each with what changed."""
    if explained is None:
        explained = retracing.explain_all(recording.functions, recording.calls)
    view = []
    for position, function in enumerate(recording.functions):
        if function.get("trace_count", 0) < 2 or function.get("origin") == "tf.data":
            continue
        explanations = {e.index: e for e in explained.get(position, [])}
        traces = []
        for trace in function.get("traces", []):
            explanation = explanations.get(trace.get("index"))
            changed = {c.argument.split("[")[0].split(".")[0] for c in explanation.changes} if explanation else set()
            traces.append({
                "index": trace.get("index"),
                "call_site": trace.get("call_site"),
                "duration_s": trace.get("duration_s", 0.0),
                "args": [dict(a, changed=a.get("name") in changed,
                              text=retracing.describe_value(a)) for a in trace.get("args", [])],
                "changes": [c.to_dict() for c in explanation.changes] if explanation else [],
                "compared_to": explanation.compared_to if explanation else None,
            })
        view.append({"name": function.get("name"), "origin": function.get("origin"),
                     "defined_at": function.get("defined_at"), "trace_count": function.get("trace_count"),
                     "trace_s": function.get("trace_s", 0.0), "traces": traces,
                     "traces_dropped": function.get("traces_dropped", 0)})
    view.sort(key=lambda f: (f["origin"] != "user", -f["trace_s"]))
    return view
