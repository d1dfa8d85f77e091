"""Explain each retrace: diff a trace against the closest earlier trace of the same code.

Pure functions over the ``functions`` section of a recording. Each explained
trace gets a list of changes, each with a ``cause`` (the finding code it leads
to), the ``argument`` path and a sentence saying exactly what changed.

A function that is not the user's (origin ``keras``, ``tensorflow``, …) is traced by its
library, not by code the user wrote: ``library_kind`` says what each of its traces was in
terms of the user's code (another entry point, a rebuilt model, a bounded shape relaxation,
another context, or growth that keeps tracing), and its explanation ends with that note. It is
the one classification: the report's retracing section and ``library_findings`` both read it off
the explanation (``TraceExplanation.kind``), so they never disagree.

A function that creates variables is traced twice by its first call, by TensorFlow's design (capture
marks the traces ``variable_creation``): that second trace is never a retrace (kind ``variable-creation``).

The recording's structured inputs (a call's ``input_spec``) become code in one place, ``spec_code``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CAUSE_ORDER = (
    "retrace-new-function",
    "retrace-structure",
    "retrace-dtype",
    "retrace-shape",
    "retrace-python-value",
    "retrace-new-object",
)


@dataclass
class Change:
    cause: str
    argument: str
    text: str

    def to_dict(self) -> dict:
        return {"cause": self.cause, "argument": self.argument, "text": self.text}


@dataclass
class TraceExplanation:
    index: int
    compared_to: int | None
    changes: list[Change] = field(default_factory=list)
    kind: str | None = None  # library functions only: ``library_kind``'s word, or ``variable-creation``

    def to_dict(self) -> dict:
        return {"index": self.index, "compared_to": self.compared_to,
                "changes": [c.to_dict() for c in self.changes]}


def shape_text(shape) -> str:
    if shape is None:
        return "unknown rank"
    inner = ", ".join("None" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def describe_value(arg: dict) -> str:
    kind = arg.get("kind")
    if kind == "tensor":
        return f"{arg.get('dtype')} tensor {shape_text(arg.get('shape'))}"
    if kind == "literal":
        return f"Python {arg.get('type')} {arg.get('value')}"
    if kind == "object":
        return f"a {arg.get('type')} object"
    if kind in ("list", "tuple", "namedtuple", "dict"):
        return f"{kind} of {arg.get('length')}"
    return str(arg.get("type", kind))


def _container_items_text(arg: dict) -> str:
    items = arg.get("items") or []
    kinds = {i.get("kind") for i in items}
    noun = "tensors" if kinds == {"tensor"} else "items"
    return f"{arg.get('length')} {noun}"


def diff_args(old: dict, new: dict, path: str) -> list[Change]:
    """What changed between two descriptions of the same argument."""
    ok, nk = old.get("kind"), new.get("kind")
    if ok != nk:
        cause = "retrace-new-object" if "object" in (ok, nk) else "retrace-structure"
        if {ok, nk} == {"literal"}:
            cause = "retrace-python-value"
        return [Change(cause, path, f"{path}: {describe_value(old)} → {describe_value(new)}")]
    if ok == "tensor":
        changes = []
        if old.get("dtype") != new.get("dtype"):
            changes.append(Change("retrace-dtype", path, f"{path}: {old.get('dtype')} → {new.get('dtype')}"))
        if old.get("shape") != new.get("shape"):
            changes.append(Change("retrace-shape", path,
                                  f"{path}: shape {shape_text(old.get('shape'))} → {shape_text(new.get('shape'))}"))
        return changes
    if ok == "literal":
        if old.get("value") != new.get("value") or old.get("type") != new.get("type"):
            if old.get("type") == new.get("type"):
                text = (f"{path}: Python {new.get('type')} {old.get('value')} → {new.get('value')}"
                        " — every distinct value is a new trace")
            else:
                text = f"{path}: {describe_value(old)} → {describe_value(new)}"
            return [Change("retrace-python-value", path, text)]
        return []
    if ok == "object":
        if old.get("id") != new.get("id"):
            if old.get("type") == new.get("type"):
                text = f"{path}: a new {new.get('type')} object (a different instance, compared by identity)"
            else:
                text = f"{path}: {old.get('type')} object → {new.get('type')} object"
            return [Change("retrace-new-object", path, text)]
        return []
    if ok in ("list", "tuple", "namedtuple", "dict", "attrs"):
        if old.get("length") != new.get("length") or old.get("keys") != new.get("keys"):
            if ok == "dict" and old.get("length") == new.get("length"):
                text = f"{path}: dict keys {old.get('keys')} → {new.get('keys')}"
            else:
                text = f"{path}: {ok} of {_container_items_text(old)} → {_container_items_text(new)}"
            return [Change("retrace-structure", path, text)]
        changes: list[Change] = []
        keys = old.get("keys") or list(range(len(old.get("items") or [])))
        for key, (o, n) in zip(keys, zip(old.get("items") or [], new.get("items") or [])):
            label = f"{path}.{key}" if ok in ("namedtuple", "attrs") else f"{path}[{key}]"
            changes.extend(diff_args(o, n, label))
        return changes
    if old.get("repr") != new.get("repr"):
        return [Change("retrace-structure", path, f"{path}: {old.get('repr')} → {new.get('repr')}")]
    return []


def diff_traces(old: dict, new: dict) -> list[Change]:
    old_args = {a["name"]: a for a in old.get("args", [])}
    new_args = {a["name"]: a for a in new.get("args", [])}
    changes: list[Change] = []
    for name, arg in new_args.items():
        if name not in old_args:
            changes.append(Change("retrace-structure", name, f"{name}: new argument ({describe_value(arg)})"))
        else:
            changes.extend(diff_args(old_args[name], arg, name))
    for name in old_args:
        if name not in new_args:
            changes.append(Change("retrace-structure", name, f"{name}: argument no longer passed"))
    return changes


COMPARE_WINDOW = 16  # earlier traces a trace is compared with (plus the first): linear, not quadratic


def explain_all(functions: list[dict], calls: list[dict] = ()) -> dict[int, list[TraceExplanation]]:
    """Explanations of every function traced more than once, keyed by position in ``functions``;
    ``calls`` (the recording's) supply the roles of Keras traces that lack them."""
    return {i: explain_function(f, calls) for i, f in enumerate(functions) if f.get("trace_count", 0) >= 2}


def explain_function(function: dict, calls: list[dict] = ()) -> list[TraceExplanation]:
    """One explanation per kept trace after the first, against the closest earlier trace.

    "Closest" is the earlier trace with the fewest changed arguments among the previous
    ``COMPARE_WINDOW`` traces and the first one, the most recent winning ties.
    """
    traces = function.get("traces", [])
    explanations: list[TraceExplanation] = []
    varying = varying_dimensions(traces)
    for position, trace in enumerate(traces):
        if position == 0:
            continue
        first = _first_call_trace(traces, position)
        if first is not None:  # the same first call, traced again without variable creation
            kind = "variable-creation" if is_library(function) else None
            owner = f"{OWNER.get(function.get('origin'), function.get('origin'))}: " if kind else ""
            explanations.append(TraceExplanation(trace.get("index", position + 1), traces[first].get(
                "index", first + 1), [Change("variable-creation", "", owner + VARIABLE_CREATION_NOTE)], kind))
            continue
        instance = trace.get("instance")
        if instance is not None and trace.get("new_object"):
            # A tf.function method on another instance: that instance's first trace, not a retrace.
            explanations.append(_with_library_note(function, trace, None, TraceExplanation(
                trace.get("index", position + 1), None, [Change(
                    "new-instance", "self", f"self: first trace for another {instance.get('type')} instance "
                    "(each instance keeps its own traces of a tf.function method)")]), calls))
            continue
        best: tuple[int, int, list[Change]] | None = None
        window = list(range(position - 1, max(-1, position - 1 - COMPARE_WINDOW), -1))
        if 0 not in window:
            window.append(0)
        if instance is not None:  # compare with the same instance's traces only
            window = [i for i in window if (traces[i].get("instance") or {}).get("id") == instance.get("id")] or window
        for earlier_position in window:
            changes = diff_traces(traces[earlier_position], trace)
            if best is None or len(changes) < len(best[2]):
                best = (earlier_position, traces[earlier_position].get("index", earlier_position + 1), changes)
            if not changes:
                break
        assert best is not None
        earlier_position, compared_index, changes = best
        changes = [_with_varying(c, varying) for c in changes]
        if not changes and trace.get("new_object"):
            where = trace.get("created_at") or trace.get("call_site") or "an unknown place"
            changes = [Change("retrace-new-function", "", f"a new tf.function object for the same code, created at {where}")]
        elif not changes:
            changes = [Change("retrace-structure", "", "same argument types as an earlier trace (a context change: "
                              "device, graph or variable-creation scope)")]
        explanation = TraceExplanation(trace.get("index", position + 1), compared_index, changes)
        explanations.append(_with_library_note(function, trace, traces[earlier_position], explanation, calls))
    return explanations


VARIABLE_CREATION_NOTE = ("traced twice on its first call because it creates variables (once with variable "
                          "creation allowed, once without): TensorFlow's design, nothing to change")


def _first_call_trace(traces: list[dict], position: int) -> int | None:
    """Where the trace that created the function's variables is, when the one at ``position`` is its
    same first call traced again: the same object's next trace, without variable creation, same arguments."""
    trace = traces[position]
    if trace.get("variable_creation") is not False:
        return None
    def owner(t): return t.get("object_index"), (t.get("instance") or {}).get("id")
    earlier = next((p for p in range(position - 1, -1, -1) if owner(traces[p]) == owner(trace)), None)
    if earlier is None or traces[earlier].get("variable_creation") is not True or diff_traces(traces[earlier], trace):
        return None
    return earlier


def _with_library_note(function: dict, trace: dict, earlier: dict | None, explanation: TraceExplanation,
                       calls) -> TraceExplanation:
    """A library function's explanation, with its ``kind`` and the note saying it in the user's terms."""
    if is_library(function):
        explanation.kind = library_kind(function, trace, earlier, explanation.changes, calls)
        explanation.changes.append(Change("library", "", library_note(function, trace, explanation.kind, calls)))
    return explanation


def varying_dimensions(traces: list[dict]) -> dict[str, dict[int, list]]:
    """For each top-level tensor argument: the dimensions whose size varied, with the values seen."""
    seen: dict[str, dict[int, list]] = {}
    ranks: dict[str, set] = {}
    for trace in traces:
        for arg in trace.get("args", []):
            if arg.get("kind") != "tensor" or arg.get("shape") is None:
                continue
            shape = arg["shape"]
            ranks.setdefault(arg["name"], set()).add(len(shape))
            dims = seen.setdefault(arg["name"], {})
            for i, d in enumerate(shape):
                values = dims.setdefault(i, [])
                if d not in values:
                    values.append(d)
    return {name: {i: v for i, v in dims.items() if len(v) > 1}
            for name, dims in seen.items() if len(ranks[name]) == 1}


def _with_varying(change: Change, varying: dict) -> Change:
    dims = varying.get(change.argument)
    if change.cause != "retrace-shape" or not dims:
        return change
    parts = []
    for i, values in sorted(dims.items()):
        shown = ", ".join(str(v) for v in values[:3]) + (", …" if len(values) > 3 else "")
        parts.append(f"dimension {i} varies ({shown})")
    return Change(change.cause, change.argument, f"{change.text}; {'; '.join(parts)}")


def generalized_signature(function: dict) -> list[dict] | None:
    """The ``input_signature`` the observed traces call for: ``None`` where a dimension varied.

    Returns None when an argument is not a tensor (an input_signature cannot hold it) or the
    ranks or dtypes differ between traces.
    """
    traces = function.get("traces", [])
    if not traces:
        return None
    names = [a["name"] for a in traces[0].get("args", [])]
    signature = []
    for name in names:
        shapes, dtypes = [], set()
        for trace in traces:
            arg = next((a for a in trace.get("args", []) if a["name"] == name), None)
            if arg is None or arg.get("kind") != "tensor" or arg.get("shape") is None:
                return None
            shapes.append(arg["shape"])
            dtypes.add(arg.get("dtype"))
        if len(dtypes) != 1 or len({len(s) for s in shapes}) != 1:
            return None
        dims = [shapes[0][i] if all(s[i] == shapes[0][i] for s in shapes) else None
                for i in range(len(shapes[0]))]
        signature.append({"name": name, "shape": dims, "dtype": dtypes.pop()})
    return signature


# -- traces of library functions (Keras, TensorFlow): what they were, in the user's terms --------
ROLE_TEXT = {"train": "training function", "test": "evaluation function", "predict": "predict function"}
OWNER = {"keras": "Keras", "tensorflow": "TensorFlow", "tf.data": "tf.data"}
# The Keras API a user calls -> the role of the model function it runs.
API_ROLE = {"fit": "train", "train_on_batch": "train", "evaluate": "test", "test_on_batch": "test",
            "predict": "predict", "predict_on_batch": "predict"}


def is_library(function: dict) -> bool:
    """Not the user's code: Keras's, TensorFlow's, tf.data's or another package's function."""
    return function.get("origin", "user") != "user"


def api_at(calls, site: str | None) -> str | None:
    """The Keras API (fit, evaluate, predict, ...) the user called at ``site``, from the recorded calls."""
    return next((c.get("api") for c in calls if site and isinstance(c, dict) and c.get("call_site") == site
                 and c.get("api") in API_ROLE), None)


def trace_role(function: dict, trace: dict, calls=()) -> str | None:
    """``train``/``test``/``predict``: which of the model's functions this trace belongs to, if known:
    recorded with the trace, else read from the Keras API the user called at the trace's call site."""
    return (trace.get("role") or function.get("role")
            or API_ROLE.get(api_at(calls, trace.get("call_site")) or ""))


def library_kind(function: dict, trace: dict, earlier: dict | None, changes: list[Change], calls=()) -> str:
    """What a library function's trace was, against the ``earlier`` trace it was compared with.

    ``entry-point``: another of the model's functions (fit, evaluate and predict each trace their
    own), ``rebuilt``: a new function object for the same inputs (the model was compiled or created
    again), ``relaxation``: the same function traced once more with ``None`` where sizes varied (later
    sizes reuse it), ``context``: another input structure or tracing context, ``growth``: a new
    concrete shape or dtype, traced again with no relaxation in sight. ``calls`` (the recording's)
    supply roles the traces lack (``trace_role``).
    """
    if earlier is None or any(c.cause == "new-instance" for c in changes):
        return "entry-point"
    roles = (trace_role(function, earlier, calls), trace_role(function, trace, calls))
    if None not in roles and roles[0] != roles[1]:
        return "entry-point"
    argument_changes = [c for c in changes if c.argument and c.cause not in ("library", "retrace-new-function")]
    causes = {c.cause for c in argument_changes}
    if trace.get("new_object"):
        if argument_changes:
            return "entry-point"
        # No role known and another call site: most likely another entry point, not a rebuild.
        if roles[1] is None and earlier.get("call_site") != trace.get("call_site"):
            return "entry-point"
        return "rebuilt"
    if not argument_changes:
        return "context"
    if _generalizes(earlier.get("args", []), trace.get("args", [])):
        return "relaxation"
    if causes <= {"retrace-structure"}:
        return "relaxation" if trace.get("reduce_retracing") and _only_opaque(argument_changes, trace) else "context"
    if trace.get("reduce_retracing") and causes <= {"retrace-shape", "retrace-structure"}:
        return "relaxation"
    return "growth"


def library_note(function: dict, trace: dict, kind: str, calls=()) -> str:
    owner = OWNER.get(function.get("origin"), function.get("origin") or "A library")
    role = ROLE_TEXT.get(trace_role(function, trace, calls) or "", "")
    if kind == "entry-point":
        return (f"{owner}: the first trace of the model's {role or 'function'} for this entry point "
                "(fit, evaluate and predict each trace their own): expected, nothing to change")
    if kind == "rebuilt":
        compiled, created = trace.get("compiled_at"), function.get("model_created_at")
        what = (f"compiled again (at {compiled})" if compiled else f"created again (at {created})" if created
                else "compiled or created again")
        return f"{owner} made this function again: the model was {what}, which discards its traced functions"
    if kind == "relaxation":
        return (f"{owner} traced it once more with None where the sizes varied, so later sizes reuse this "
                "trace: a bounded relaxation, nothing to change")
    if kind == "context":
        return f"{owner} traced it again for another input structure or context: nothing to change in your code"
    return f"{owner} traced it again for a new input shape or dtype from your code"


def _generalizes(old_args: list, new_args: list) -> bool:
    """Every argument of the new trace accepts what the old one did (``None`` where a size was)."""
    old = {a.get("name"): a for a in old_args}
    return len(old) == len(new_args) and all(
        a.get("name") in old and _relaxes(old[a.get("name")], a) for a in new_args)


def _relaxes(old: dict, new: dict) -> bool:
    kind = old.get("kind")
    if kind != new.get("kind"):
        return False
    if kind == "tensor":
        if old.get("dtype") != new.get("dtype"):
            return False
        old_shape, new_shape = old.get("shape"), new.get("shape")
        if new_shape is None:
            return True
        return (old_shape is not None and len(old_shape) == len(new_shape)
                and all(n is None or n == o for o, n in zip(old_shape, new_shape)))
    if kind in ("list", "tuple", "namedtuple", "dict", "attrs"):
        old_items, new_items = old.get("items") or [], new.get("items") or []
        return (old.get("length") == new.get("length") and old.get("keys") == new.get("keys")
                and len(old_items) == len(new_items) and all(_relaxes(o, n) for o, n in zip(old_items, new_items)))
    keys = ("type", "value", "id", "repr")
    return all(old.get(k) == new.get(k) for k in keys)


def _only_opaque(changes: list[Change], trace: dict) -> bool:
    """Every structure change is in an argument TensorFlow describes only by its repr (an iterator spec)."""
    kinds = {a.get("name"): a.get("kind") for a in trace.get("args", [])}
    return all(kinds.get(c.argument) == "other" for c in changes if c.cause == "retrace-structure")


# -- the recording's structured inputs (``input_spec``) ------------------------------------------
def spec_leaves(spec) -> list[dict]:
    """The array leaves of an ``input_spec`` (``{"shape", "dtype"}``), in order (dict keys sorted)."""
    if isinstance(spec, dict) and "dtype" in spec and "shape" in spec:
        return [spec]
    if isinstance(spec, dict) and "type" not in spec:
        return [leaf for key in sorted(spec) for leaf in spec_leaves(spec[key])]
    if isinstance(spec, list):
        return [leaf for item in spec for leaf in spec_leaves(item)]
    return []


def call_batch(call: dict) -> int | None:
    """A call's batch size: its recorded ``batch``, else the first dimension of its input's first array."""
    batch = call.get("batch")
    if isinstance(batch, int) and not isinstance(batch, bool):
        return batch
    leaves = spec_leaves(call.get("input_spec"))
    shape = leaves[0].get("shape") if leaves else None
    first = shape[0] if isinstance(shape, list) and shape else None
    return first if isinstance(first, int) and not isinstance(first, bool) else None


def spec_code(spec, free_batch: bool = True) -> str | None:
    """A call's structured ``input_spec`` as ``tf.TensorSpec`` code, the batch dimension left free.

    None when a leaf is not an array (an input_signature cannot hold a Python value).
    """
    if isinstance(spec, dict) and "dtype" in spec and "shape" in spec:
        shape = spec["shape"]
        if shape is None:
            return f"tf.TensorSpec(None, tf.{spec['dtype']})"
        dims = ["None" if d is None else str(d) for d in shape]
        if free_batch and dims:
            dims[0] = "None"
        return f"tf.TensorSpec([{', '.join(dims)}], tf.{spec['dtype']})"
    if isinstance(spec, dict) and "type" not in spec:
        inner = {k: spec_code(v, free_batch) for k, v in spec.items()}
        return None if None in inner.values() else "{" + ", ".join(f"{k!r}: {v}" for k, v in inner.items()) + "}"
    if isinstance(spec, list):
        parts = [spec_code(v, free_batch) for v in spec]
        return None if None in parts or not parts else "[" + ", ".join(parts) + "]"
    return None
