"""The verdict: the biggest problem in one sentence: where, what it costs per call, why, and
what fixing it gains. Pure; reads the recording and the ranked findings."""

from __future__ import annotations

from ..recording import Recording
from . import training
from .call_findings import api_text
from .findings import short_site
from .phases import FEW_CALLS, call_phase_split
from .retracing import call_batch
from .units import duration

PHASE_LABELS = {
    "input_processing": "input conversion",
    "data_adapter": "data adapter / tf.data pipeline",
    "graph_creation": "graph tracing",
    "kernel_execution": "kernel execution",
    "output_processing": "output conversion",
    "callbacks": "callbacks / progress bar",
    "other": "other Python overhead",
}
# A step's kernel_execution is its graph call seen from outside: the model's ops and the call's own
# dispatch (step-overhead tells them apart with the TF Profiler's op time).
STEP_LABELS = dict(PHASE_LABELS, data_adapter="waiting for the next batch",
                   kernel_execution="kernel execution (the model's ops and their dispatch)")


def _batch_text(call: dict) -> str:
    """``batches of 32 (float32[32, 4])`` from the call's batch size and input signature."""
    signature = str(call.get("input_signature") or "")
    batch = call_batch(call)
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
    split = call_phase_split(call)
    per_call = sum(split.values())
    if per_call <= 0:
        return ""
    shares = {p: v / per_call for p, v in split.items()}
    overhead = [p for p in sorted(shares, key=lambda p: -shares[p]) if p != "kernel_execution" and shares[p] >= 0.05]
    rests = call.get("phase_calls")
    few = (f" (a split measured on only {rests} call{'s' if rests != 1 else ''})"
           if isinstance(rests, int) and "steady_phases" in call and rests < FEW_CALLS else "")
    if shares["kernel_execution"] > 0:
        named = ", ".join(f"{PHASE_LABELS[p]} {100 * shares[p]:.0f}%" for p in overhead[:3])
        return (f", of which {100 * (1 - shares['kernel_execution']):.0f}% is per-call overhead"
                + (f" ({named})" if named else "") + f" rather than the model's own kernels{few}")
    parts = [f"{PHASE_LABELS[p]} {'is ' if i == 0 else ''}{100 * shares[p]:.0f}%" for i, p in enumerate(overhead[:3])]
    if not parts:
        return ""
    return ", of which " + (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]) + few


def _measured_gain(finding: dict) -> str:
    """What --verify measured for the recommended path on the user's own model, if it ran."""
    measured = (finding.get("fix") or {}).get("measured")
    if not isinstance(measured, dict):
        return ""
    median, speedup = measured.get("median_s"), measured.get("speedup")
    if isinstance(median, (int, float)) and isinstance(speedup, (int, float)) and speedup > 0:
        return (f"; measured on your model, `{measured.get('path')}` takes {duration(median)} "
                f"per call ({speedup:.1f}× faster)")
    return ""


def _run_share(recording: Recording, seconds: float) -> str:
    wall = recording.run.get("wall_s")
    if not isinstance(wall, (int, float)) or wall <= 0 or seconds > wall:
        return ""
    percent = 100 * seconds / wall
    return f" ({'<1' if percent < 1 else f'{percent:.0f}'}% of the {duration(wall)} run)"


def training_verdict(recording: Recording, found: list[dict]) -> str:
    """Training dominates the timed work: the busiest training call site, which phase dominates its
    step, the top finding."""
    row = training.training_view(recording)[0]
    site = short_site(row["call_site"]) or "an unknown call site"
    if training.is_step(row):
        what = (f"the training loop's step `{training.api_text(row)}` at `{site}` ran {row['count']} "
                f"step{'s' if row['count'] != 1 else ''}")
    else:
        steps = f"{row['steps']} steps" if row["steps"] is not None else f"{row['count']} call(s)"
        per = row.get("steps_per_execution")
        if row["steps"] is not None and isinstance(per, int) and per > 1:  # a step is one execution
            steps += f" (each {per} batches, steps_per_execution={per})"
        epochs = f" over {row['epochs']} epoch{'s' if row['epochs'] != 1 else ''}" if row["epochs"] else ""
        calls = row["count"] or 0
        if calls > 1 and row["steps"] is not None:  # a loop of calls: their epochs are each call's own
            epochs = f" in {calls} calls ({row['steps'] / calls:.3g} per call)"
        what = f"`{row['api']}()` of `{row['target']}` at `{site}` ran {steps}{epochs}"
    kind = "Evaluation" if row.get("api") in ("evaluate", "test_on_batch") else "Training"
    seconds, wall = training.training_seconds(recording)[0], recording.run.get("wall_s")
    if isinstance(wall, (int, float)) and 0 < seconds < 0.5 * wall:  # the rest of the run is not TensorFlow's
        text = f"{kind} is most of this run's TensorFlow time ({duration(seconds)} of the {duration(wall)} run): {what}"
    else:
        text = f"{kind} dominates this run: {what}"
    median = row["step_median_s"]
    if median is not None and median > 0:
        text += f", median step {duration(median)}"
        if row["first_step_s"]:
            text += f" (first step {duration(row['first_step_s'])})"
    if row["shares"]:
        ranked = sorted((p for p in row["shares"] if row["shares"][p] >= 0.05), key=lambda p: -row["shares"][p])
        if ranked:
            text += "; each step is mostly " + f"{STEP_LABELS[ranked[0]]} ({100 * row['shares'][ranked[0]]:.0f}%)"
            text += "".join(f", then {STEP_LABELS[p]} ({100 * row['shares'][p]:.0f}%)" for p in ranked[1:3])
    mine = [f for f in found if (f.get("details") or {}).get("training")]
    top = mine[0] if mine else (found[0] if found else None)
    if top is None:
        return text + ". No avoidable cost was found in its steps."
    savings = float(top.get("estimated_savings_s") or 0.0)
    more = len(found) - 1
    tail = f" {more} more finding{'s' if more != 1 else ''} below." if more else ""
    site_text = short_site(top.get("call_site") or "")
    where = f" (`{site_text}`)" if site_text and site_text not in top["title"] else ""
    lead = "Top finding" if top is found[0] else "Top training finding"
    if savings <= 0:  # e.g. processes for a pure-Python producer on a machine with one CPU: the fix says why
        return f"{text}. {lead}: {top['title']}{where}; no saving is estimated on this machine — see the fix below.{tail}"
    return (f"{text}. {lead}: {top['title']}{where}; fixing it would save about {duration(savings)}"
            f"{_run_share(recording, savings)} — see the fix below.{tail}")


def verdict_for(recording: Recording, found: list[dict]) -> str:
    """The biggest problem in one sentence: where, what it costs per call, why, and what fixing it gains."""
    if training.dominates(recording) and training.training_view(recording):
        return training_verdict(recording, found)
    if not recording.functions and not recording.calls:
        why = ("the code never imported TensorFlow" if not recording.environment.get("tensorflow_imported", True)
               else "no tf.function was traced and no Keras model was called")
        if recording.extra.get("processes"):  # the work may be in its children (analysis/processes.py)
            return f"No TensorFlow activity was seen in this process ({why}); see its child processes below."
        return f"No TensorFlow activity was seen: {why}."
    if not found:
        calls = sum(c.get("count", 0) for c in recording.calls)
        traces = sum(f.get("trace_count", 0) for f in recording.functions)
        return (f"No problem found: {calls} Keras call(s) and {traces} tf.function trace(s) recorded, "
                "none with avoidable overhead or retracing.")
    top = found[0]
    savings = float(top.get("estimated_savings_s") or 0.0)
    more = len(found) - 1
    tail = f" {more} more finding{'s' if more != 1 else ''} below." if more else ""
    wall = recording.run.get("wall_s")
    share = ""
    if isinstance(wall, (int, float)) and wall > 0 and savings <= wall:
        percent = 100 * savings / wall
        share = f" ({'<1' if percent < 1 else f'{percent:.0f}'}% of the {duration(wall)} run)"
    site = short_site(top.get("call_site") or "") or "an unknown call site"
    call = _call_of(recording, top) if top.get("code") in ("predict-overhead", "eager-loop") else None
    if call is not None:
        what = f"The training step `{api_text(call)}`" if call.get("training") else f"`{api_text(call)}`"
        count = call.get("count", 0) or 0
        return (f"{what} on {_batch_text(call)} at `{site}` costs "
                f"{duration(call.get('median_s', 0.0))} per call × {count} calls{_phase_clause(call)}; "
                f"fixing it would save about {duration(savings)} in this run{share}"
                f"{_measured_gain(top)} — see the fix below.{tail}")
    if top.get("code") == "tfdata-retrace":
        calls = (top.get("details") or {}).get("predict_calls") or 0
        per_call = f" (≈{duration(savings / calls)} of graph tracing per call)" if calls else ""
        return (f"{top['title']} at `{site}`{per_call}: {duration(savings)} spent re-tracing the input pipeline"
                f"{share}, which the fix below avoids.{tail}")
    if top.get("code") == "memory-growth":  # saves memory, not time: worded from the finding itself
        evidence = (top.get("evidence") or [""])[0]
        return f"{top['title']}; {evidence} — see the fix below.{tail}"
    where = f" at `{site}`" if top.get("call_site") else ""
    return (f"{top['title']}{where}; the extra traces cost about {duration(savings)} in this run{share}, "
            f"which the fix below saves.{tail}" if top.get("code", "").startswith(("retrace-", "model-rebuilt"))
            else f"{top['title']}{where}. Fixing it would save about {duration(savings)} in this run{share} — "
                 f"see the fix below.{tail}")
