"""input-bound for custom training loops: the batches a loop waits for between its steps.

A loop ``for x, y in ds: train_step(x, y)`` takes each batch outside every timed call; capture
times those waits per line (``loop_inputs``, capture/loop_inputs.py) and describes the line's
pipeline. Here a line's wait is set against the custom training steps called from the same file
(``training.is_step``: an eager step, or a user tf.function that applies gradients): at XProf's
thresholds (5% of the loop's time medium, 20% high) it is an ``input-bound`` finding naming the
pipeline's map functions, with input_bound.py's fix for what was observed. The saving is an
estimate (unverified: --verify times fit()'s inputs, not a custom loop's), capped at medium.

Cost: one pass over ``loop_inputs`` and ``calls``; no TensorFlow.
"""

from __future__ import annotations

from ..recording import Recording
from . import training
from .fields import count, number
from .findings import Finding, short_site, site_file
from .input_bound import INPUT_BOUND_SHARE, INPUT_MEDIUM, input_fix
from .training_findings import ESTIMATE, NEGLIGIBLE_S, make_finding, severity
from .units import duration


def _steps_bysite_file(recording: Recording) -> dict[str, list[dict]]:
    steps: dict[str, list[dict]] = {}
    for call in recording.calls:
        if isinstance(call, dict) and training.is_step(call):
            steps.setdefault(site_file(str(call.get("call_site") or "")), []).append(call)
    return steps


def _running_s(call: dict) -> float:
    """A step call site's seconds at its steady rate: the mean of its calls after the first, less
    their graph creation (retraces), for each of its calls. The first call's trace and first-run
    setup are one-offs (the report's first-call figures): on a short loop they would outweigh every
    wait. One call: its seconds less its graph creation."""
    phases = call.get("phases") if isinstance(call.get("phases"), dict) else {}
    total, graph = number(call.get("total_s")) or 0.0, number(phases.get("graph_creation")) or 0.0
    calls, first = count(call.get("count")) or 0, number(call.get("first_s"))
    if calls < 2 or first is None:
        return max(0.0, total - graph)
    first_phases = call.get("first_phases") if isinstance(call.get("first_phases"), dict) else {}
    later_graph = max(0.0, graph - (number(first_phases.get("graph_creation")) or 0.0))
    return max(0.0, total - first - later_graph) * calls / (calls - 1)


def loop_input_findings(recording: Recording, explained: dict) -> list[Finding]:
    """One finding per loop line whose batches its custom training steps waited for."""
    entries = recording.extra.get("loop_inputs")
    steps_by_file = _steps_bysite_file(recording)
    found = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("call_site"), str):
            continue
        steps = steps_by_file.get(site_file(entry["call_site"]))
        waited = number(entry.get("total_s")) or 0.0
        if not steps or waited < NEGLIGIBLE_S:
            continue
        # An eager step's time is from one optimizer update to the next (custom_loops.py): the loop's
        # wait for the batch is inside it already.
        # A tf.function step's first call and traces are one-offs (the first-call figures, the
        # retrace findings' business), not the loop's steady state (``_running_s``).
        eager = sum(number(c.get("total_s")) or 0.0 for c in steps if c.get("api") == training.CUSTOM_STEP)
        graph = sum(_running_s(c) for c in steps if c.get("api") != training.CUSTOM_STEP)
        stepped = graph + max(0.0, eager - waited)
        share = waited / (waited + stepped)
        if share >= INPUT_MEDIUM:
            found.append(_finding(recording, entry, steps, waited, stepped, share))
    return found


def _finding(recording: Recording, entry: dict, steps: list[dict], waited: float, stepped: float,
             share: float) -> Finding:
    step = max(steps, key=lambda c: number(c.get("total_s")) or 0.0)
    producer = entry.get("producer") if isinstance(entry.get("producer"), dict) else {}
    maps = [m for m in producer.get("map_functions") or [] if isinstance(m, dict) and m.get("name")]
    names = ", ".join(f"`{m['name']}`" for m in maps[:3])
    named = f" (map {names})" if maps else ""
    loop = short_site(entry["call_site"])
    batches = count(entry.get("count")) or 0
    calls = sum(count(c.get("count")) or 0 for c in steps)
    evidence = [f"{batches} batches taken at {loop}: {duration(waited)} waiting for them (median "
                f"{duration(number(entry.get('median_s')) or 0.0)} a batch), against {duration(stepped)} in "
                f"{calls} steps of {training.api_text(step)} at {short_site(str(step.get('call_site') or ''))}"]
    if maps:
        evidence.append("its pipeline's map functions: " + ", ".join(
            f"`{m['name']}`" + (f" defined at {short_site(m['defined_at'])}" if m.get("defined_at") else "")
            for m in maps[:3]))
    pseudo = {"data_producer": producer, "call_site": entry["call_site"]}  # the loop, as input_fix reads a call
    fix = input_fix(recording, pseudo, share)
    fix["text"] += " Unverified on your model: --verify times fit()'s inputs, not a custom loop's."
    fix["verified"] = False
    savings = waited * ESTIMATE
    floor = "high" if share >= INPUT_BOUND_SHARE else "medium"
    level = "low" if fix.pop("settled", False) else severity(savings, False, floor)  # little left to change
    return make_finding(
        "input-bound", step,
        f"the training loop at {loop} is input-bound: {100 * share:.0f}% of its time waits for the next batch "
        f"of its tf.data pipeline{named}",
        evidence, savings, fix, level, site=entry["call_site"], share=share,
        producer=producer or None, loop=True)
