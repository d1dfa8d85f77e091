"""Every rule, run in order and ranked by estimated time saved.

Each rule is a pure function ``(Recording, explained retraces) -> list[Finding]``.
"""

from __future__ import annotations

from ..recording import Recording
from . import retracing
from .call_findings import call_findings
from .findings import SEVERITY_RANK, Finding
from .input_bound import input_bound_findings, training_input_findings
from .library_findings import library_findings, tfdata_findings
from .loop_input import loop_input_findings
from .memory_findings import memory_findings
from .retrace_findings import retrace_findings
from .training_findings import training_findings

RULES = (retrace_findings, library_findings, tfdata_findings, call_findings, input_bound_findings,
         training_input_findings, loop_input_findings, training_findings, memory_findings)


def run_rules(recording: Recording, explained: dict | None = None) -> list[dict]:
    """All rules, ranked; ``explained`` is ``retracing.explain_all(recording.functions, recording.calls)`` if known."""
    if explained is None:
        explained = retracing.explain_all(recording.functions, recording.calls)
    found: list[Finding] = []
    for rule in RULES:
        found.extend(rule(recording, explained))
    found.sort(key=lambda f: (-f.estimated_savings_s, SEVERITY_RANK.get(f.severity, 3), f.code, f.function))
    return [f.to_dict() for f in found]
