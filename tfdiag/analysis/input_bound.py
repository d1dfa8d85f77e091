"""The input-bound rule: large-batch predict work whose input side takes a large share of each call.

Its fix (a tf.data input built once, with batch() and prefetch()) is measured or modest: with
``--verify`` the prebuilt input is timed against the user's own ``predict(x)`` on their model,
and the fix quotes that speed-up and is recommended only when it is faster with the same
outputs; without a measurement the finding says it is unverified and is never above medium.
The snippet batches as the user does: the ``batch_size`` they pass to predict() where --verify
recorded it, else the batch each call was observed to carry.
"""

from __future__ import annotations

from ..recording import Recording
from . import alternatives, retracing
from .findings import GUIDES, Finding, at_most, severity_for, short_site
from .phases import call_phase_split
from .units import duration

LARGE_BATCH = 1024       # "large-batch work" starts here (verify times the tf.data input from here)
INPUT_BOUND_SHARE = 0.2  # XProf's input-bound threshold
UNVERIFIED_SEVERITY = "medium"  # the most an unmeasured fix may claim


def _batch_size(call: dict, target_entries: list[dict]) -> tuple[int, str]:
    """(batch size, what it is) for the snippet: the user's predict() batch_size where --verify
    recorded it, else the rows each call was observed to pass."""
    recorded = next((e["batch_size"] for e in target_entries if isinstance(e.get("batch_size"), int)
                     and not isinstance(e.get("batch_size"), bool) and e["batch_size"] > 0), None)
    if recorded is not None:
        return recorded, "predict()'s batch_size in your calls"
    return retracing.call_batch(call) or 0, f"the rows each {call.get('api')}() call passes"


def _unverified_fix(text: str, batch: tuple[int, str]) -> dict:
    size, what = batch
    return {"text": ("Build the input pipeline once and let it overlap with the model: a tf.data.Dataset "
                     f"with batch() and prefetch(), passed to predict(). {text}"),
            "code": (f"ds = tf.data.Dataset.from_tensor_slices(x).batch({size})"
                     f".prefetch(tf.data.AUTOTUNE)  # once; {size}: {what}\n"
                     "y = model.predict(ds, verbose=0)"),
            "guide": GUIDES["tfdata"], "verified": False}


def input_bound_findings(recording: Recording, explained: dict) -> list[Finding]:
    """Large-batch predict calls (not in a training loop) whose input side takes >= 20% of the call."""
    findings: list[Finding] = []
    measured_any = bool(alternatives.entries(recording))
    for call in recording.calls:
        batch = retracing.call_batch(call)
        if (call.get("api") not in ("predict", "predict_on_batch") or not batch or batch < LARGE_BATCH
                or call.get("training")):
            continue
        split = call_phase_split(call)
        per_call = sum(split.values())
        input_side = split.get("data_adapter", 0.0) + split.get("input_processing", 0.0)
        if per_call <= 0 or input_side / per_call < INPUT_BOUND_SHARE:
            continue
        count = call.get("count", 0)
        evidence = [f"{count} call(s) on {call.get('input_signature')}, {duration(per_call)} per call",
                    f"per call: data adapter {duration(split.get('data_adapter', 0.0))}, input conversion "
                    f"{duration(split.get('input_processing', 0.0))}, kernels {duration(split.get('kernel_execution', 0.0))}"]
        savings = input_side * count * 0.5
        target_entries = alternatives.entries_for(recording, call.get("target", ""))
        batch_size = _batch_size(call, target_entries)
        entry, choice = alternatives.choose_input_pipeline(target_entries, call.get("api", ""))
        if choice is not None:
            fix = alternatives.measured_fix(choice, GUIDES["tfdata"])
            savings = count * (call.get("median_s") or 0.0) * (1.0 - 1.0 / choice["speedup"])
            severity = severity_for(savings, 0)
            evidence.append(f"--verify: the prebuilt tf.data input measured {choice['speedup']:.1f}× faster than "
                            f"{alternatives.label(choice['base']['path'])} on this model and input, same outputs")
        elif alternatives.has_timing(entry or {}):
            base = alternatives.base_entry(target_entries, call.get("api", ""))
            timing = duration(entry["median_s"]) + " per call" + (
                f" against {duration(base['median_s'])} for your {call.get('api')}(x)" if base else "")
            outcome = ("its outputs differed from yours" if not alternatives.is_equivalent(entry)
                       else "it was not clearly faster")
            fix = _unverified_fix(f"Measured on your model, {outcome} ({timing}), so tfdiag does not recommend it.",
                                  batch_size)
            savings, severity = 0.0, "low"
        else:
            reason = (f"--verify could not time it ({entry['error']})" if entry is not None and entry.get("error")
                      else "run `tfdiag analyze --verify` to time it on your model" if not measured_any
                      else "--verify times it only for predict(x) on an array input")
            fix = _unverified_fix(f"Unverified on your model: {reason}.", batch_size)
            severity = at_most(severity_for(savings, 0), UNVERIFIED_SEVERITY)
        findings.append(Finding(
            code="input-bound", severity=severity,
            title=(f"{call['api']}() at {short_site(call.get('call_site', ''))} is input-bound: "
                   f"{100 * input_side / per_call:.0f}% of each call prepares data"),
            function=call.get("target", ""), call_site=call.get("call_site", ""), evidence=evidence,
            estimated_savings_s=savings, fix=fix,
        ))
    return findings
