"""Time each top-level Keras ``predict`` / ``predict_on_batch`` / model call.

Keras 3 (TensorFlow backend): ``TensorFlowTrainer.predict`` and
``predict_on_batch`` in ``keras.src.backend.tensorflow.trainer``; ``Model`` has
no ``__call__`` of its own (it inherits ``Layer.__call__``), so one is added on
``Model`` only, which leaves the nested layer calls untouched.
tf-keras: ``Model.predict``, ``predict_on_batch`` and ``__call__`` in
``tf_keras.src.engine.training``. Calls nested inside an instrumented call
(the model called inside ``predict``) are part of the outer call.
"""

from __future__ import annotations

from typing import Callable

from . import gates
from .collector import Collector
from .patching import Patcher
from .phases import PhaseTracker

KERAS3_TRAINER = "keras.src.backend.tensorflow.trainer"
KERAS3_MODEL = "keras.src.models.model"
TF_KERAS_TRAINING = "tf_keras.src.engine.training"

MAX_SIGNATURE_ITEMS = 8


def leading_dim(value, depth: int = 0):
    """The batch size of a model input: the first dimension of its first array (None if unknown)."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        dims = tuple(shape)
        return int(dims[0]) if dims and dims[0] is not None else None
    if depth < 3 and isinstance(value, (list, tuple)) and value:
        return leading_dim(value[0], depth + 1)
    if depth < 3 and isinstance(value, dict) and value:
        return leading_dim(next(iter(value.values())), depth + 1)
    return None


_ARRAY_SIGNATURES: dict = {}


def describe_call_input(value) -> tuple[str, int | None]:
    """(signature, batch size) of a call's input, cached for arrays: this runs on every call."""
    dtype = getattr(value, "dtype", None)
    fast = getattr(value, "_shape_tuple", None)  # EagerTensor: a plain tuple, no TensorShape
    shape = fast() if fast is not None else getattr(value, "shape", None)
    if dtype is None or shape is None:
        return describe_input(value), leading_dim(value)
    try:
        key = (type(value), tuple(shape), dtype)
        known = _ARRAY_SIGNATURES.get(key)
    except TypeError:  # an unhashable shape or dtype
        return describe_input(value), leading_dim(value)
    if known is None:
        if len(_ARRAY_SIGNATURES) > 10_000:
            _ARRAY_SIGNATURES.clear()
        known = _ARRAY_SIGNATURES[key] = (describe_input(value), leading_dim(value))
    return known


def describe_input(value, depth: int = 0) -> str:
    """A short, stable signature of a model input: ``float32[32, 4]``, ``[float32[1, 5], int64[1]]``."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        fast = getattr(value, "_shape_tuple", None)  # EagerTensor: a plain tuple, no TensorShape
        dims = fast() if fast is not None else tuple(shape)
        text = ", ".join("None" if d is None else str(int(d)) for d in dims)
        return f"{getattr(dtype, 'name', dtype)}[{text}]"
    if depth > 3:
        return "…"
    if isinstance(value, (list, tuple)):
        inner = [describe_input(v, depth + 1) for v in value[:MAX_SIGNATURE_ITEMS]]
        if len(value) > MAX_SIGNATURE_ITEMS:
            inner.append(f"… {len(value)} items")
        return "[" + ", ".join(inner) + "]"
    if isinstance(value, dict):
        items = list(value.items())[:MAX_SIGNATURE_ITEMS]
        inner = [f"{k}: {describe_input(v, depth + 1)}" for k, v in items]
        return "{" + ", ".join(inner) + "}"
    return type(value).__name__


class KerasCallCapture:
    """Wraps the predict-family entry points; each top-level call becomes one timed call record."""

    def __init__(self, collector: Collector, tracker: PhaseTracker) -> None:
        self.collector = collector
        self.tracker = tracker
        # Profilers that run on some calls (cProfile, the TF Profiler): ``start(api)`` returns a
        # token when it takes the call, ``stop(token)`` ends it. Calls any gate took are marked
        # ``profiled`` and kept out of the timing statistics.
        self.gates: list = []
        # ``observer(api, model, args, kwargs)`` after each top-level call (e.g. the what-if
        # capture keeping the last input per model); errors become capture warnings.
        self.observers: list = []
        self._executing_eagerly = None

    def executing_eagerly(self) -> bool:
        """TensorFlow's own check, looked up once (Keras has imported TensorFlow by the first call)."""
        check = self._executing_eagerly
        if check is None:
            from tensorflow.python.eager import context

            check = self._executing_eagerly = context.executing_eagerly
        return check()

    def install(self, patcher: Patcher) -> None:
        patcher.when_imported(KERAS3_TRAINER, lambda m: self._guarded(patcher, m, self._keras3_trainer))
        patcher.when_imported(KERAS3_MODEL, lambda m: self._guarded(patcher, m, self._keras3_model))
        patcher.when_imported(TF_KERAS_TRAINING, lambda m: self._guarded(patcher, m, self._tf_keras))

    def _guarded(self, patcher: Patcher, module, install: Callable) -> None:
        try:
            install(patcher, module)
        except Exception as exc:  # Keras internals differ: say so, capture the rest
            self.collector.warn(f"Keras call timing unavailable ({module.__name__}): {exc.__class__.__name__}: {exc}")

    def _keras3_trainer(self, patcher: Patcher, module) -> None:
        cls = module.TensorFlowTrainer
        patcher.patch(cls, "predict", lambda orig: self._wrap(orig, "predict"))
        patcher.patch(cls, "predict_on_batch", lambda orig: self._wrap(orig, "predict_on_batch"))

    def _keras3_model(self, patcher: Patcher, module) -> None:
        patcher.patch(module.Model, "__call__", lambda orig: self._wrap(orig, "__call__"))

    def _tf_keras(self, patcher: Patcher, module) -> None:
        cls = module.Model
        for api in ("predict", "predict_on_batch", "__call__"):
            patcher.patch(cls, api, lambda orig, api=api: self._wrap(orig, api))

    def _wrap(self, original: Callable, api: str) -> Callable:
        capture = self
        tracker = self.tracker

        def instrumented(model, *args, **kwargs):
            # Nested in another instrumented call (a model called inside predict() or inside the
            # user's tf.function), or called while a graph is traced: part of the outer call.
            if tracker.in_call() or not capture.executing_eagerly():
                return original(model, *args, **kwargs)
            taken = gates.start_all(capture.gates, api)
            frame = tracker.begin_call(str(getattr(model, "name", "")))
            start = frame.last
            try:
                return original(model, *args, **kwargs)
            finally:
                phases = tracker.end_call(frame)
                gates.stop_all(taken)
                capture._record(api, model, args, kwargs, start, phases, bool(taken))

        instrumented.__wrapped__ = original
        instrumented.__name__ = getattr(original, "__name__", api)
        instrumented.__qualname__ = getattr(original, "__qualname__", api)
        instrumented.__doc__ = getattr(original, "__doc__", None)
        return instrumented

    def _record(self, api, model, args, kwargs, start, phases, profiled) -> None:
        x = args[0] if args else kwargs.get("x", kwargs.get("inputs"))
        try:
            signature, batch = describe_call_input(x)
        except Exception as exc:  # an input we cannot describe still counts as a call
            self.collector.warn(f"could not describe a {api} input: {exc.__class__.__name__}: {exc}")
            signature, batch = type(x).__name__, None
        target = str(getattr(model, "name", type(model).__name__))
        self.collector.record_call(api, target, signature, start, phases, profiled, batch)
        for observer in self.observers:
            try:
                observer(api, model, args, kwargs)
            except Exception as exc:
                self.collector.warn(f"call observer failed: {exc.__class__.__name__}: {exc}")
