"""Input specs: the JSON-able description of a model's or function's input, and the one walk over it.

A spec mirrors the input: a leaf is ``{"shape": [int|None, ...], "dtype": "float32"}`` (``shape``
is None where even the rank varied), nested in lists and dicts as the input is (dict keys
sorted). The format is capture's (``capture.keras_calls.input_spec``, what the recording's calls
carry), taken whole here (no item limit) and refused where a leaf is not an array; the batch
size of a spec is capture's ``leading_dim``. Every operation here (leaves, packing, merging,
signatures, TensorSpecs, text) goes through ``walk``, which is also how a real input's arrays are
visited, so the spec's leaves and the input's leaves always come in the same order.
"""

from __future__ import annotations

from functools import reduce
from typing import Any, Callable

from ..capture.keras_calls import input_spec as recorded_spec
from ..capture.keras_calls import leading_dim  # noqa: F401  (the batch size of a spec, for measure.py)


class Unsupported(Exception):
    """An input or path that cannot be measured (the message says why)."""


def is_spec_leaf(node) -> bool:
    return isinstance(node, dict) and isinstance(node.get("dtype"), str) and "shape" in node


def is_value_leaf(node) -> bool:
    return not isinstance(node, (list, tuple, dict))


def walk(node, leaf: Callable[[Any], Any], is_leaf: Callable[[Any], bool] = is_spec_leaf):
    """``node`` with every leaf replaced by ``leaf(it)``: lists and tuples become lists, dicts
    keep their keys (visited in sorted order)."""
    if is_leaf(node):
        return leaf(node)
    if isinstance(node, dict):
        return {key: walk(node[key], leaf, is_leaf) for key in sorted(node)}
    if isinstance(node, (list, tuple)):
        return [walk(item, leaf, is_leaf) for item in node]
    return leaf(node)


def leaves(node, is_leaf: Callable[[Any], bool] = is_spec_leaf) -> list:
    """The leaves of a spec (or, with ``is_value_leaf``, of an input value), in walk order."""
    found: list = []
    walk(node, found.append, is_leaf)
    return found


def pack(structure, new_leaves: list):
    """``structure`` (a spec) with its leaves replaced, in order, by ``new_leaves``."""
    items = iter(new_leaves)
    return walk(structure, lambda _: next(items))


def skeleton(spec):
    return walk(spec, lambda _: None)


# -- from real inputs ------------------------------------------------------------------
def leaf_spec(value) -> dict | None:
    """``{"shape", "dtype"}`` of one array or tensor of known rank; None for anything else."""
    spec = recorded_spec(value, limit=None)
    return spec if is_spec_leaf(spec) and spec["shape"] is not None else None


def input_spec(x):
    """The spec of a model input. Raises Unsupported for a leaf with no shape/dtype."""
    def is_leaf(node) -> bool:  # an array, or a value capture described by its type
        return is_spec_leaf(node) or isinstance(node, dict) and isinstance(node.get("type"), str)

    spec = recorded_spec(x, limit=None)
    for leaf in leaves(spec, is_leaf):
        if not is_spec_leaf(leaf) or leaf["shape"] is None:
            raise Unsupported(f"input of type {leaf.get('type', 'tensor of unknown rank')} has no shape/dtype")
    return spec


def input_leaves(x) -> list:
    """The arrays/tensors of an input, in the order of its spec's leaves."""
    return leaves(x, is_value_leaf)


# -- combining what was seen -------------------------------------------------------------
def merge_leaf(a: dict | None, b: dict | None) -> dict | None:
    """Dimensions that differ become None; a rank that differs makes the shape None; a dtype
    that differs cannot be merged (None)."""
    if a is None or b is None or a["dtype"] != b["dtype"]:
        return None
    if a["shape"] is None or b["shape"] is None or len(a["shape"]) != len(b["shape"]):
        return {"shape": None, "dtype": a["dtype"]}
    return {"shape": [p if p == q else None for p, q in zip(a["shape"], b["shape"])], "dtype": a["dtype"]}


def merge_specs(old, new):
    """The spec covering both inputs; ``new`` where their structure, ranks or dtypes differ."""
    if skeleton(old) != skeleton(new):
        return new
    merged = [merge_leaf(a, b) for a, b in zip(leaves(old), leaves(new))]
    if any(leaf is None or leaf["shape"] is None for leaf in merged):
        return new
    return pack(new, merged)


def common_signature(calls: list[tuple]) -> list[dict] | None:
    """Per positional argument of several calls, the leaf spec covering all of them; None where a
    dtype varied (no signature fixes that)."""
    specs = []
    for position in range(len(calls[0])):
        merged = reduce(merge_leaf, [leaf_spec(args[position]) for args in calls])
        if merged is None:
            return None
        specs.append(merged)
    return specs


def signature_of(spec):
    """The input_signature spec: batch dimension None, other dimensions as observed."""
    return walk(spec, lambda leaf: {"shape": [None] + leaf["shape"][1:] if leaf["shape"] else [],
                                    "dtype": leaf["dtype"]})


# -- into TensorFlow and text ------------------------------------------------------------
def tensor_specs(spec, names: bool = False):
    """The spec as ``tf.TensorSpec`` leaves (named ``input_0``, ``input_1``, ... with ``names``)."""
    import tensorflow as tf

    counter = iter(range(1 << 30))

    def make(leaf):
        name = f"input_{next(counter)}" if names else None
        return tf.TensorSpec(leaf["shape"], tf.as_dtype(leaf["dtype"]), name=name)

    return walk(spec, make)


def leaf_text(leaf: dict) -> str:
    """``float32[None, 4]`` (``float32[?]`` where the rank is unknown)."""
    if leaf["shape"] is None:
        return f"{leaf['dtype']}[?]"
    return f"{leaf['dtype']}[{', '.join('None' if d is None else str(d) for d in leaf['shape'])}]"


def describe_spec(spec) -> str:
    found = leaves(spec)
    text = ", ".join(leaf_text(leaf) for leaf in found)
    return text if len(found) == 1 and not isinstance(spec, (list, tuple)) else f"[{text}]"
