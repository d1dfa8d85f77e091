"""Retraces of the user's own tf.functions: one finding per function and cause, with a fix
written against that function (an input_signature, a tensor instead of a Python value, …).

A function is the user's when the user created the tf.function object (capture keys ownership on
the creator, so ``tf.function(model)`` and ``tf.function(lambda x: model(x))`` are the user's too).
Where the user wrapped a callable with a call rather than decorating a ``def`` of their own, the
fix is written at the line that creates the tf.function (``created_at``), never against the
wrapped code. Functions that are not the user's (Keras's, TensorFlow's, tf.data's) are
``library_findings``'s.
"""

from __future__ import annotations

from collections import defaultdict

from ..recording import Recording
from . import retracing
from .findings import GUIDES, Finding, severity_for, short_site
from .units import duration


def _seen(function: dict, argument: str, field: str) -> list:
    """The values of a field (``dtype``, ``type``) of a top-level argument over the traces, in order."""
    values = []
    for trace in function.get("traces", []):
        for arg in trace.get("args", []):
            if arg.get("name") == argument and arg.get(field) is not None and arg.get(field) not in values:
                values.append(arg.get(field))
    return values


def _first_seen(function: dict, argument: str, field: str):
    values = _seen(function, argument, field)
    return values[0] if values else None


def _created_by_call(function: dict) -> tuple[bool, str | None]:
    """(True, the line that created it) when the user made this tf.function by calling
    ``tf.function(...)`` on a callable that is not a ``def`` of theirs (a lambda, a model, a library
    method); (False, None) for a decorated function of their own."""
    traces = function.get("traces", [])
    library_code = any(t.get("code_origin") not in (None, "user") for t in traces)
    if not (library_code or not str(function.get("name", "")).isidentifier()
            or function.get("defined_at") in (None, "<unknown>")):
        return False, None
    return True, next((t.get("created_at") for t in traces if t.get("created_at")), None)


def _with_options(function: dict, options: str) -> str:
    """``@tf.function(options)`` on the user's ``def``, or the options passed where they create it."""
    by_call, created_at = _created_by_call(function)
    if by_call:
        where = f"at {short_site(created_at)}" if created_at else "where you create it"
        return f"tf.function(..., {options})  # {where}: the callable you wrap, unchanged"
    return f"@tf.function({options})\ndef {function.get('name')}(...):\n    ..."


def _fix_for(cause: str, function: dict, arguments: list[str]) -> dict:
    name = function.get("name", "f")
    name = name if name.isidentifier() else "f"
    arg = arguments[0] if arguments else "x"
    by_call, created_at = _created_by_call(function)
    where = f" where you create it{' at ' + short_site(created_at) if created_at else ''}" if by_call else ""
    if cause in ("retrace-shape", "retrace-dtype"):
        signature = retracing.generalized_signature(function)
        if cause == "retrace-dtype":
            seen = _seen(function, arg, "dtype")
            dtype = "float32" if "float32" in seen else (seen[0] if seen else "float32")
            text = (f"Convert `{arg}` to one dtype at the boundary, before calling `{name}`, so every call "
                    f"presents the same dtype (seen: {', '.join(seen) or 'unknown'}).")
            code = f"{arg} = tf.convert_to_tensor({arg}, dtype=tf.{dtype})  # one dtype for every call\n{name}({arg})"
            return {"text": text, "code": code, "guide": GUIDES["retrace"]}
        spec = retracing.spec_code(signature, free_batch=False) if signature is not None else None
        if spec is not None:
            text = (f"Give `{name}` an input_signature{where} with None in the dimensions that varied, so one "
                    "trace serves every shape observed.")
            code = _with_options(function, f"input_signature={spec}")
        else:
            text = f"Let TensorFlow generalise the varying shapes of `{arg}`{where} instead of tracing each one."
            code = _with_options(function, "reduce_retracing=True")
        return {"text": text, "code": code, "guide": GUIDES["retrace"]}
    if cause == "retrace-python-value":
        kind = _first_seen(function, arg, "type")
        if kind in ("bool", "str", "NoneType"):
            return {"text": (f"`{arg}` is a Python {kind} and part of the trace key: each value gets its own "
                             f"trace by design. Keep it constant in the hot loop, or split `{name}` into one "
                             "function per value; make it a tensor only if the code inside can branch on a tensor "
                             "(tf.cond)."),
                    "code": f"{name}_a = tf.function(lambda x: body(x, {arg}=...))  # one function per value",
                    "guide": GUIDES["retrace"]}
        dtype = {"int": "int32"}.get(kind or "", "float32")
        return {"text": (f"Pass `{arg}` as a tensor: a Python number is part of the trace key, so every "
                         "distinct value traces again; a tensor of the same dtype does not."),
                "code": f"{name}(..., {arg}=tf.constant({arg}, dtype=tf.{dtype}))",
                "guide": GUIDES["retrace"]}
    if cause == "retrace-new-object":
        return {"text": (f"Create the object passed as `{arg}` once and reuse it, or pass the tensors it "
                         "holds instead: tf.function keys Python objects by identity."),
                "code": f"{arg} = ...  # build once, outside the loop\nfor batch in data:\n    {name}(batch, {arg})",
                "guide": GUIDES["retrace"]}
    if cause == "retrace-structure":
        return {"text": (f"Give `{arg}` a fixed structure: stack the items into one tensor (with a None "
                         "dimension) or pad to a fixed length."),
                "code": f"{arg} = tf.stack({arg})  # one tensor, shape [None, ...]\n{name}({arg})",
                "guide": GUIDES["retrace"]}
    return {"text": (f"Create the tf.function `{name}` once (module level or in __init__) and call it in "
                     "the loop; a new tf.function object starts with an empty trace cache."),
            "code": f"{name} = tf.function(fn)  # once, outside the loop\nfor batch in data:\n    {name}(batch)",
            "guide": GUIDES["retrace"]}


def _by_cause(explanations: list) -> dict[str, list]:
    """Explanations grouped by their primary cause (the first in ``CAUSE_ORDER``)."""
    grouped: dict[str, list] = defaultdict(list)
    for explanation in explanations:
        causes = {c.cause for c in explanation.changes}
        if causes and causes <= set(retracing.CAUSE_ORDER):
            grouped[min(causes, key=retracing.CAUSE_ORDER.index)].append(explanation)
    return grouped


def _changed(explanations: list, cause: str, attribute: str) -> list[str]:
    values: list[str] = []
    for explanation in explanations:
        for change in explanation.changes:
            value = getattr(change, attribute)
            if change.cause == cause and value and value not in values:
                values.append(value)
    return values


def _said_once(lines: list[str]) -> list[str]:
    """Each line's clauses after its first ("; dimension 1 varies (29, 31, 7, …)": the same for every
    retrace of an argument) only where they are first said."""
    out, said = [], set()
    for line in lines:
        head, *clauses = line.split("; ")
        out.append("; ".join([head, *(c for c in clauses if c not in said)]))
        said.update(clauses)
    return out


def retrace_findings(recording: Recording, explained: dict) -> list[Finding]:
    """The user's tf.functions traced again: one finding per function and cause."""
    findings: list[Finding] = []
    for position, function in enumerate(recording.functions):
        if retracing.is_library(function) or function.get("trace_count", 0) < 2:
            continue
        traces = function.get("traces", [])
        durations = {t.get("index"): t.get("duration_s", 0.0) for t in traces}
        by_cause = _by_cause(explained.get(position, []))
        first_calls = sum(1 for e in explained.get(position, []) if any(c.cause == "variable-creation" for c in e.changes))
        for cause, explanations in by_cause.items():
            seconds = sum(durations.get(e.index, 0.0) for e in explanations)
            dropped = function.get("traces_dropped", 0)
            if dropped and explanations:  # traces past the kept ones cost about the same each
                seconds += dropped * seconds / len(explanations) * (len(explanations) / max(1, len(traces) - 1))
            arguments = _changed(explanations, cause, "argument")
            examples = _said_once(_changed(explanations, cause, "text"))
            name = function.get("name", "?")
            count = len(explanations) + (dropped if len(by_cause) == 1 else 0)
            call_site = next((t.get("call_site") for t in traces if t.get("index") == explanations[0].index), "")
            if cause == "retrace-new-function":
                created = next((t.get("created_at") for t in traces if t.get("new_object") and t.get("created_at")), None)
                title = (f"`{name}` was traced again {count} time(s) because a new tf.function object was made "
                         f"for the same code{' at ' + short_site(created) if created else ''}")
            else:
                what = ", ".join(f"`{a}`" for a in arguments) or "its inputs"
                title = f"`{name}` retraced {count} time(s) because {what} changed ({cause.replace('retrace-', '')})"
            evidence = [f"{function.get('trace_count')} traces of `{name}` (defined at {function.get('defined_at')}), "
                        f"{duration(seconds)} spent tracing again"] + examples[:6]
            if first_calls:
                evidence.insert(1, f"{first_calls} of those traces: a first call traced again because it creates "
                                   "variables (TensorFlow's design, not counted as a retrace)")
            findings.append(Finding(
                code=cause, severity=severity_for(seconds, count), title=title, function=name,
                call_site=call_site or "", evidence=evidence, estimated_savings_s=seconds,
                fix=_fix_for(cause, function, arguments),
                details={"origin": function.get("origin", "user"), "arguments": arguments, "retraces": count,
                         "defined_at": function.get("defined_at")},
            ))
    return findings
