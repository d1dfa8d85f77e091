"""Retrace fixes, verified: each user tf.function that traced more than once is re-run after the
user's code with an ``input_signature`` generated from the inputs that made it trace, on those
same inputs; the entry says how many traces that took and how far its outputs were from the
original function's (DESIGN.md's ``retrace_checks``). Functions that write state are never
run again.
"""

from __future__ import annotations

from typing import Callable

from . import specs
from .measure import ATOL, RTOL, compare, outputs, scale
from .paths import short_error

# Stateful ops that only read: re-running a function made of these changes nothing.
_READ_ONLY_STATEFUL = frozenset({
    "ReadVariableOp", "VarHandleOp", "VarIsInitializedOp", "StatefulPartitionedCall", "PartitionedCall",
    "If", "While", "Case", "StatelessIf", "StatelessWhile", "NoOp", "Placeholder", "Const", "Identity",
    "DestroyResourceOp",
})


def check_all(kept: list, budget_s: float, clock: Callable[[], float], into: list | None = None) -> list[dict]:
    """One check per kept function (``keepers.Traced``) while the budget lasts (into ``into``)."""
    start = clock()
    checks: list[dict] = [] if into is None else into
    for traced in kept:
        if clock() - start > budget_s:
            checks.append(_entry(traced, error="skipped: the --verify budget was spent"))
            continue
        checks.append(check(traced))
    return checks


def _entry(traced, **fields) -> dict:
    entry = {"function": traced.name, "defined_at": traced.defined_at, "fix": "input_signature",
             "input_signature": None, "inputs": len(traced.inputs), "traces_before": traced.traces,
             "traces_after": None, "max_abs_diff": None, "equivalent": False, "error": None}
    entry.update(fields)
    return entry


def _writes_state(concrete) -> list[str]:
    """Op types in the function (and the functions it calls) that change state when run."""
    from tensorflow.python.framework import op_def_registry

    graph_def = concrete.graph.as_graph_def()
    library = {f.signature.name for f in graph_def.library.function}
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    writers = set()
    for node in nodes:
        if node.op in library or node.op in _READ_ONLY_STATEFUL:
            continue
        op_def = op_def_registry.get(node.op)
        if op_def is None or op_def.is_stateful:
            writers.add(node.op)
    return sorted(writers)


def check(traced) -> dict:
    """Re-run the user's function with the generated input_signature on every kept input:
    how many traces, and the largest output difference against the original function."""
    import tensorflow as tf

    if traced.unsupported:
        return _entry(traced, error=f"not verified: {traced.unsupported}")
    if len(traced.inputs) < 2:
        return _entry(traced, error="not verified: fewer than two traced inputs were kept")
    signature = specs.common_signature(traced.inputs)
    if signature is None:
        return _entry(traced, error="not verified: the dtype varied; the fix is one dtype, not a signature")
    text = ", ".join(specs.leaf_text(leaf) for leaf in signature)
    entry = _entry(traced, input_signature=f"({text})", signature=signature)
    original = traced.function
    try:
        writers = _writes_state(original.get_concrete_function(*traced.inputs[0]))
        if writers:
            entry["error"] = ("not verified: re-running it would change state (" + ", ".join(writers[:5])
                              + "); tfdiag does not run such functions again")
            return entry
        fixed = tf.function(original.python_function, input_signature=specs.tensor_specs(signature))
        worst = 0.0
        for args in traced.inputs:
            reference = outputs(original(*args))
            diff, why = compare(reference, outputs(fixed(*args)))
            if diff is None:
                entry["error"] = f"outputs not comparable: {why}"
                worst = None
                break
            tolerance = ATOL + RTOL * scale(reference)
            if diff > tolerance:
                entry["tolerance"] = tolerance
            worst = max(worst, diff)
        entry["traces_after"] = fixed.experimental_get_tracing_count()
        entry["max_abs_diff"] = worst
        entry["equivalent"] = worst is not None and "tolerance" not in entry
    except Exception as exc:  # the fix does not apply to this function: say why
        entry["error"] = f"failed: {exc.__class__.__name__}: {short_error(exc)}"
    return entry
