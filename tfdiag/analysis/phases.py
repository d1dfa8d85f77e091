"""Phase splits per call site: the first call on its own, then the steady state per call."""

from __future__ import annotations

from ..recording import PHASES

FEW_CALLS = 5  # a steady-state split resting on fewer calls than this says how many
STEP_APIS = ("fit", "evaluate", "train_on_batch", "test_on_batch")  # Keras's APIs whose calls run steps


def _split(phases, divisor: float = 1.0) -> dict[str, float]:
    phases = phases if isinstance(phases, dict) else {}
    return {p: float(phases.get(p, 0.0)) / divisor for p in PHASES}


def call_phase_split(call: dict) -> dict[str, float]:
    """Seconds per call in each phase in the steady state: the calls after the first.

    ``steady_phases`` when the recording has it (all zeros for a call site called once); for
    recordings from before it, the old estimate: the whole call site's phases over its calls.
    """
    if "steady_phases" in call:
        return _split(call.get("steady_phases"))
    count = call.get("count", 0) or 0
    if count <= 0:
        return _split(None)
    return _split(call.get("phases"), count)


def first_call_split(call: dict) -> dict[str, float] | None:
    """The call site's first call, split alone (tracing and first-run setup live here); None if not recorded."""
    first = call.get("first_phases")
    return _split(first) if isinstance(first, dict) and first else None


def steady_calls(call: dict) -> int:
    """How many calls the steady state covers: all after the first (all, for old recordings)."""
    count = call.get("count", 0) or 0
    if "steady_phases" in call:
        return max(0, count - 1)
    return count


def phase_rows(calls: list[dict]) -> list[dict]:
    """One row per call site for the stacked bar: the steady-state ms per call in each phase, and
    the first call apart; busiest first."""
    rows = []
    for call in calls:
        split = call_phase_split(call)
        per_call = sum(split.values())
        steady = steady_calls(call)
        if "steady_phases" in call:  # per call, like the split
            teardown = float(call.get("steady_teardown_s") or 0.0)
        else:  # old recordings: over all calls, like ``phases``
            count = call.get("count", 0) or 0
            teardown = float(call.get("data_adapter_teardown_s") or 0.0) / count if count > 0 else 0.0
        phase_calls = call.get("phase_calls")
        rows.append({
            "label": f"{call.get('api')} {call.get('target')}",
            "call_site": call.get("call_site", ""),
            "input_signature": call.get("input_signature", ""),
            "count": call.get("count", 0),
            "median_s": call.get("median_s", 0.0),
            "first_s": call.get("first_s", 0.0),
            "first_phases": first_call_split(call),
            # False: a profiler took the first call (every call was a new call site), so only its
            # wall time and graph creation are known
            "first_measured": call.get("first_call_measured") is not False,
            "steady": "steady_phases" in call,
            "steady_calls": steady,
            "per_call_s": per_call,
            "phases": split,
            "shares": {p: (v / per_call if per_call > 0 else 0.0) for p, v in split.items()},
            "teardown_s": teardown,
            "phase_calls": phase_calls,
            "few_calls": isinstance(phase_calls, int) and steady > 0 and phase_calls < FEW_CALLS,
            "phase_split_pooled": bool(call.get("phase_split_pooled")),
            # fit() and the like: one call is many steps, split per step under Training steps
            "runs_steps": call.get("api") in STEP_APIS,
        })
    rows.sort(key=lambda r: r["per_call_s"] * r["count"], reverse=True)
    return rows
