"""Turn TensorFlow's TraceType objects (a trace's cache key) into plain, comparable dicts.

Duck-typed on purpose: TensorFlow's classes move between versions, and a type
we do not know is described by its class name and repr rather than failing.
"""

from __future__ import annotations

MAX_ITEMS = 16
MAX_REPR = 120


def describe(trace_type, depth: int = 0) -> dict:
    kind = type(trace_type).__name__
    if depth > 6:
        return {"kind": "other", "type": kind, "repr": "…"}
    if hasattr(trace_type, "shape") and hasattr(trace_type, "dtype"):
        shape = trace_type.shape
        dims = None if shape.rank is None else [d for d in shape.as_list()]
        dtype = getattr(trace_type.dtype, "name", str(trace_type.dtype))
        out = {"kind": "tensor", "shape": dims, "dtype": dtype}
        if kind not in ("TensorSpec", "BoundedTensorSpec"):
            out["spec"] = kind
        return out
    if kind == "Literal":
        value = trace_type.value
        return {"kind": "literal", "type": type(value).__name__, "value": _short_repr(value)}
    if kind == "Weakref":
        # The weakref itself is the identity TF keys on; the trace cache keeps it alive,
        # so unlike id(target) its id is never reused by a later object.
        ref = trace_type._ref  # pylint: disable=protected-access
        target = ref()
        return {"kind": "object", "type": type(target).__name__ if target is not None else "<collected>",
                "id": hex(id(ref))}
    if kind in ("Tuple", "List"):
        inner = getattr(trace_type, "components_tuple", trace_type)  # List wraps a Tuple
        items = list(inner.components)
        return {"kind": kind.lower(), "length": len(items),
                "items": [describe(t, depth + 1) for t in items[:MAX_ITEMS]]}
    if kind == "NamedTuple":
        names = list(trace_type.attribute_names)
        comps = list(trace_type.attributes.components)
        return {"kind": "namedtuple", "type": trace_type.type_name, "length": len(names),
                "keys": [str(n) for n in names[:MAX_ITEMS]],
                "items": [describe(t, depth + 1) for t in comps[:MAX_ITEMS]]}
    if kind == "Dict":
        keys = list(trace_type.mapping.keys())
        return {"kind": "dict", "length": len(keys), "keys": [_short_repr(k) for k in keys[:MAX_ITEMS]],
                "items": [describe(trace_type.mapping[k], depth + 1) for k in keys[:MAX_ITEMS]]}
    if kind == "Attrs":
        out = describe(trace_type.named_attributes, depth)
        out["kind"] = "attrs"
        return out
    return {"kind": "other", "type": kind, "repr": _short_repr(trace_type)}


def _short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 1] + "…"
