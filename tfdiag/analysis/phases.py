"""Phase breakdowns per call site: seconds per call in each phase."""

from __future__ import annotations

from ..recording import PHASES


def call_phase_split(call: dict) -> dict[str, float]:
    """Median-call-scaled seconds per phase for one call entry (phases are totals over measured calls)."""
    measured = call.get("measured_count", call.get("count", 0)) or 0
    phases = call.get("phases") or {}
    if measured <= 0:
        return dict.fromkeys(PHASES, 0.0)
    return {p: float(phases.get(p, 0.0)) / measured for p in PHASES}


def phase_rows(calls: list[dict]) -> list[dict]:
    """One row per call site for the stacked bar: ms per call in each phase, largest first."""
    rows = []
    for call in calls:
        split = call_phase_split(call)
        per_call = sum(split.values())
        measured = call.get("measured_count", call.get("count", 0)) or 0
        teardown = call.get("data_adapter_teardown_s") or 0.0
        rows.append({
            "teardown_s": float(teardown) / measured if measured > 0 else 0.0,
            "phase_calls": call.get("phase_calls"),
            "phase_split_pooled": bool(call.get("phase_split_pooled")),
            "measured_count": measured,
            "label": f"{call.get('api')} {call.get('target')}",
            "call_site": call.get("call_site", ""),
            "input_signature": call.get("input_signature", ""),
            "count": call.get("count", 0),
            "per_call_s": per_call,
            "median_s": call.get("median_s", 0.0),
            "first_s": call.get("first_s", 0.0),
            "phases": split,
            "shares": {p: (v / per_call if per_call > 0 else 0.0) for p, v in split.items()},
        })
    rows.sort(key=lambda r: r["per_call_s"] * r["count"], reverse=True)
    return rows


def totals_shares(totals: dict) -> dict[str, float]:
    wall = totals.get("wall_s", 0.0) or 0.0
    return {p: (totals.get(p, 0.0) / wall if wall > 0 else 0.0) for p in PHASES}
