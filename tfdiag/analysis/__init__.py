"""Analysis: pure passes from a Recording to findings and report views.

Never imports TensorFlow or jinja2, so it runs on a saved recording anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..recording import Recording
from . import findings as findings_module
from . import phases, retracing


@dataclass
class Analysis:
    findings: list[dict]
    verdict: str
    retracing: list[dict] = field(default_factory=list)
    phase_rows: list[dict] = field(default_factory=list)
    phase_shares: dict = field(default_factory=dict)


def retracing_view(recording: Recording) -> list[dict]:
    """Per function traced more than once: its traces in order, each with what changed."""
    view = []
    for function in recording.functions:
        if function.get("trace_count", 0) < 2 or function.get("origin") == "tf.data":
            continue
        explanations = {e.index: e for e in retracing.explain_function(function)}
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


def verdict_for(recording: Recording, found: list[dict]) -> str:
    if not recording.functions and not recording.calls:
        why = ("the code never imported TensorFlow" if not recording.environment.get("tensorflow_imported", True)
               else "no tf.function was traced and no Keras model was called")
        return f"No TensorFlow activity was seen: {why}."
    if not found:
        calls = sum(c.get("count", 0) for c in recording.calls)
        traces = sum(f.get("trace_count", 0) for f in recording.functions)
        return (f"No problem found: {calls} Keras call(s) and {traces} tf.function trace(s) recorded, "
                "none with avoidable overhead or retracing.")
    top = found[0]
    return (f"{top['title']}. Fixing it would save about "
            f"{findings_module.ms(top['estimated_savings_s'])} in this run; see the fix below.")


def analyze(recording: Recording) -> Analysis:
    found = findings_module.run_rules(recording)
    return Analysis(
        findings=found,
        verdict=verdict_for(recording, found),
        retracing=retracing_view(recording),
        phase_rows=phases.phase_rows(recording.calls),
        phase_shares=phases.totals_shares(recording.phases),
    )


def max_user_traces(recording: Recording) -> tuple[int, str | None]:
    """The largest trace count of any user function, and its name (for --fail-on-retrace)."""
    best, name = 0, None
    for function in recording.user_functions():
        if function.get("trace_count", 0) > best:
            best, name = function["trace_count"], function.get("name")
    return best, name
