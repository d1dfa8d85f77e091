"""Analysis: pure passes from a Recording to findings and report views.

Never imports TensorFlow or jinja2, so it runs on a saved recording anywhere.
"""

from __future__ import annotations

import re
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


def retracing_view(recording: Recording, explained: dict | None = None) -> list[dict]:
    """Per function traced more than once: its traces in order, each with what changed."""
    if explained is None:
        explained = retracing.explain_all(recording.functions)
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


PHASE_LABELS = {
    "input_processing": "input conversion",
    "data_adapter": "data adapter / tf.data pipeline",
    "graph_creation": "graph tracing",
    "kernel_execution": "kernel execution",
    "output_processing": "output conversion",
    "other": "other Python overhead",
}


def _batch_text(call: dict) -> str:
    """``batches of 32 (float32[32, 4])`` from the call's ``batch`` or its input signature."""
    signature = str(call.get("input_signature") or "")
    batch = call.get("batch")
    if not isinstance(batch, int) or isinstance(batch, bool):
        match = re.fullmatch(r"\w+\[(\d+)(?:,[^\]]*)?\]", signature)
        batch = int(match.group(1)) if match else None
    if batch is not None:
        noun = "batches of 1" if batch == 1 else f"batches of {batch}"
        return f"{noun} ({signature})" if signature else noun
    return signature or "its input"


def _call_of(recording: Recording, finding: dict) -> dict | None:
    """The call entry a call-path finding is about (same call site and model), busiest first."""
    apis = ("__call__",) if finding.get("code") == "eager-loop" else ("predict", "predict_on_batch")
    matches = [c for c in recording.calls if isinstance(c, dict) and c.get("api") in apis
               and c.get("call_site") == finding.get("call_site") and c.get("target") == finding.get("function")]
    return max(matches, key=lambda c: c.get("count", 0), default=None)


def _phase_clause(call: dict) -> str:
    split = phases.call_phase_split(call)
    per_call = sum(split.values())
    if per_call <= 0:
        return ""
    shares = {p: v / per_call for p, v in split.items()}
    overhead = [p for p in sorted(shares, key=lambda p: -shares[p]) if p != "kernel_execution" and shares[p] >= 0.05]
    if shares["kernel_execution"] > 0:
        named = ", ".join(f"{PHASE_LABELS[p]} {100 * shares[p]:.0f}%" for p in overhead[:3])
        return (f", of which {100 * (1 - shares['kernel_execution']):.0f}% is per-call overhead"
                + (f" ({named})" if named else "") + " rather than the model's own kernels")
    parts = [f"{PHASE_LABELS[p]} {'is ' if i == 0 else ''}{100 * shares[p]:.0f}%" for i, p in enumerate(overhead[:3])]
    if not parts:
        return ""
    return ", of which " + (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1])


def _measured_gain(recording: Recording, finding: dict) -> str:
    """What --verify measured for the recommended path on the user's own model, if it ran."""
    alternatives = recording.extra.get("alternatives")
    if not isinstance(alternatives, list):
        return ""
    for alt in alternatives:
        if isinstance(alt, dict) and alt.get("recommended") and alt.get("target") == finding.get("function"):
            median, speedup = alt.get("median_s"), alt.get("speedup")
            if isinstance(median, (int, float)) and isinstance(speedup, (int, float)) and speedup > 0:
                return (f"; measured on your model, `{alt.get('path')}` takes {findings_module.ms(median)} "
                        f"per call ({speedup:.1f}× faster)")
    return ""


def verdict_for(recording: Recording, found: list[dict]) -> str:
    """The biggest problem in one sentence: where, what it costs per call, why, and what fixing it gains."""
    if not recording.functions and not recording.calls:
        why = ("the code never imported TensorFlow" if not recording.environment.get("tensorflow_imported", True)
               else "no tf.function was traced and no Keras model was called")
        return f"No TensorFlow activity was seen: {why}."
    if not found:
        calls = sum(c.get("count", 0) for c in recording.calls)
        traces = sum(f.get("trace_count", 0) for f in recording.functions)
        return (f"No problem found: {calls} Keras call(s) and {traces} tf.function trace(s) recorded, "
                "none with avoidable overhead or retracing.")
    ms = findings_module.ms
    top = found[0]
    savings = float(top.get("estimated_savings_s") or 0.0)
    more = len(found) - 1
    tail = f" {more} more finding{'s' if more != 1 else ''} below." if more else ""
    wall = recording.run.get("wall_s") if isinstance(recording.run, dict) else None
    share = ""
    if isinstance(wall, (int, float)) and wall > 0 and savings <= wall:
        percent = 100 * savings / wall
        share = f" ({'<1' if percent < 1 else f'{percent:.0f}'}% of the {ms(wall)} run)"
    site = findings_module.short_site(top.get("call_site") or "") or "an unknown call site"
    call = _call_of(recording, top) if top.get("code") in ("predict-overhead", "eager-loop") else None
    if call is not None:
        api = "model(x)" if call.get("api") == "__call__" else f"{call.get('api')}()"
        count = call.get("count", 0) or 0
        return (f"`{api}` on {_batch_text(call)} at `{site}` costs "
                f"{ms(call.get('median_s', 0.0))} per call × {count} calls{_phase_clause(call)}; "
                f"fixing it would save about {ms(savings)} in this run{share}"
                f"{_measured_gain(recording, top)} — see the fix below.{tail}")
    if top.get("code") == "tfdata-retrace":
        calls = (top.get("details") or {}).get("predict_calls") or 0
        per_call = f" (≈{ms(savings / calls)} of graph tracing per call)" if calls else ""
        return (f"{top['title']} at `{site}`{per_call}: {ms(savings)} spent re-tracing the input pipeline"
                f"{share}, which the fix below avoids.{tail}")
    where = f" at `{site}`" if top.get("call_site") else ""
    return (f"{top['title']}{where}; the extra traces cost about {ms(savings)} in this run{share}, "
            f"which the fix below saves.{tail}" if top.get("code", "").startswith(("retrace-", "model-rebuilt"))
            else f"{top['title']}{where}. Fixing it would save about {ms(savings)} in this run{share} — "
                 f"see the fix below.{tail}")


def analyze(recording: Recording) -> Analysis:
    explained = retracing.explain_all(recording.functions)
    found = findings_module.run_rules(recording, explained)
    return Analysis(
        findings=found,
        verdict=verdict_for(recording, found),
        retracing=retracing_view(recording, explained),
        phase_rows=phases.phase_rows(recording.calls),
        phase_shares=phases.totals_shares(recording.phases),
    )


def max_user_traces(recording: Recording) -> tuple[int, str | None]:
    """The largest trace count of any user function, and its name (for --fail-on-retrace)."""
    best, name = 0, None
    for function in recording.user_functions():
        # A tf.function method traces once per instance by design: count per instance.
        traces = function.get("max_traces_per_instance") or function.get("trace_count", 0)
        if traces > best:
            best, name = traces, function.get("name")
    return best, name
