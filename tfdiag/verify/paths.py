"""The call paths --verify times, each built as a zero-argument callable on the user's model and
input, and the model state they may disturb, put back afterwards.

Paths: ``predict``, ``predict_on_batch``, ``model(x, training=False)``, a ``tf.function`` with a
generated ``input_signature``, the same with XLA, LiteRT (ai-edge-litert), and, for large-batch
``predict``, ``predict`` on a ``tf.data`` input built once (batch and prefetch).
"""

from __future__ import annotations

from typing import Callable

from ..analysis.alternatives import TFDATA_PATH
from . import specs
from .specs import Unsupported

DEFAULT_PREDICT_BATCH = 32  # predict()'s batch_size when the user passes none
_RESTORED_COUNTERS = ("_predict_counter",)


def short_error(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "…"


def build(path: str, model, x, spec, batch_size: int | None = None) -> Callable[[], object]:
    """A zero-argument callable running ``path`` once on ``x`` and returning its raw output.
    What a path needs once (a trace, a conversion, a dataset) is built here, outside the timing."""
    import tensorflow as tf

    if path == "predict":
        return lambda: model.predict(x, verbose=0)
    if path == "predict_on_batch":
        return lambda: model.predict_on_batch(x)
    if path == "__call__":
        return lambda: model(x, training=False)
    if path in ("tf.function", "tf.function_xla"):
        signature = [specs.tensor_specs(specs.signature_of(spec))]
        serve = tf.function(lambda inputs: model(inputs, training=False), input_signature=signature,
                            jit_compile=path == "tf.function_xla")
        return lambda: serve(x)
    if path == "litert":
        return _build_litert(model, x, spec)
    if path == TFDATA_PATH:
        data = tuple(x) if isinstance(x, list) else x  # a list would be stacked into one tensor
        dataset = (tf.data.Dataset.from_tensor_slices(data).batch(batch_size or DEFAULT_PREDICT_BATCH)
                   .prefetch(tf.data.AUTOTUNE))
        return lambda: model.predict(dataset, verbose=0)
    raise Unsupported(f"unknown path {path!r}")


def _build_litert(model, x, spec) -> Callable[[], object]:
    """Convert through a concrete function (variables tracked by a tf.Module, so they are
    frozen into the flatbuffer) and run it with ai-edge-litert's Interpreter."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise Unsupported("ai-edge-litert is not installed (pip install 'tfdiag[litert]')") from None
    import numpy as np
    import tensorflow as tf

    flat_specs = specs.input_leaves(specs.tensor_specs(specs.signature_of(spec), names=True))

    def flat_call(*flat):
        return tuple(specs.input_leaves(model(specs.pack(spec, list(flat)), training=False)))

    serve = tf.function(flat_call, input_signature=flat_specs)
    holder = tf.Module()
    holder.serve = serve
    holder.weights_ = [v if isinstance(v, tf.Variable) else getattr(v, "value", v) for v in model.variables]
    try:
        flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], holder).convert()
    except Exception as exc:  # the converter rejects many ops: report why, time the rest
        raise Unsupported(f"LiteRT conversion failed: {exc.__class__.__name__}: {short_error(exc)}") from None
    # Tensor indices by signature name (input_0, output_0, ...), read from a throwaway
    # interpreter: a signature runner keeps references that forbid resizing the one we time.
    runner = Interpreter(model_content=flatbuffer).get_signature_runner()
    inputs = sorted(runner.get_input_details().items(), key=lambda kv: _suffix(kv[0]))
    outputs = sorted(runner.get_output_details().items(), key=lambda kv: _suffix(kv[0]))
    del runner
    interpreter = Interpreter(model_content=flatbuffer)
    leaves = [np.asarray(leaf, dtype=leaf_spec["dtype"])
              for leaf, leaf_spec in zip(specs.input_leaves(x), specs.leaves(spec))]
    if len(inputs) != len(leaves):
        raise Unsupported(f"LiteRT model has {len(inputs)} inputs, the input has {len(leaves)}")
    for (_, detail), leaf in zip(inputs, leaves):
        interpreter.resize_tensor_input(detail["index"], leaf.shape)
    interpreter.allocate_tensors()
    in_index = [detail["index"] for _, detail in inputs]
    out_index = [detail["index"] for _, detail in outputs]

    def run():
        for index, leaf in zip(in_index, leaves):
            interpreter.set_tensor(index, leaf)
        interpreter.invoke()
        return [interpreter.get_tensor(index) for index in out_index]

    return run


def _suffix(name: str) -> int:
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class ModelState:
    """Attributes and counters Keras changes while predicting, to put back afterwards."""

    def __init__(self, model) -> None:
        self.model = model
        self.attrs = dict(vars(model)) if hasattr(model, "__dict__") else {}
        self.counters = {}
        for name in _RESTORED_COUNTERS:
            counter = self.attrs.get(name)
            if counter is not None and hasattr(counter, "assign") and hasattr(counter, "numpy"):
                self.counters[name] = counter.numpy()

    def restore(self) -> list[str]:
        """Put the model back; returns the attribute names that had to be restored."""
        restored = []
        now = vars(self.model) if hasattr(self.model, "__dict__") else {}
        for name in [k for k in list(now) if k not in self.attrs]:
            restored.append(name)
            try:
                delattr(self.model, name)
            except AttributeError:
                object.__delattr__(self.model, name)
        for name, value in self.attrs.items():
            if name not in now or now[name] is not value:
                restored.append(name)
                try:
                    setattr(self.model, name, value)
                except (AttributeError, TypeError, ValueError):
                    object.__setattr__(self.model, name, value)
        for name, value in self.counters.items():
            self.attrs[name].assign(value)
        return restored
