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

import inspect
from typing import Callable

from .collector import Collector
from .patching import Patcher, guarded
from .phase_tracker import PhaseTracker
from .call_log import CallLog
from .timed_calls import timed_call_wrapper

KERAS3_TRAINER = "keras.src.backend.tensorflow.trainer"
KERAS3_MODEL = "keras.src.models.model"
TF_KERAS_TRAINING = "tf_keras.src.engine.training"

MAX_SIGNATURE_ITEMS = 8


def _is_array_spec(spec) -> bool:
    return isinstance(spec, dict) and isinstance(spec.get("dtype"), str) and "shape" in spec


def spec_leaves(spec) -> list[dict]:
    """The arrays (``{"shape", "dtype"}``) of an ``input_spec``, in order (dict keys sorted)."""
    if _is_array_spec(spec):
        return [spec]
    if isinstance(spec, dict) and not isinstance(spec.get("type"), str):
        return [leaf for key in sorted(spec) for leaf in spec_leaves(spec[key])]
    if isinstance(spec, list):
        return [leaf for item in spec for leaf in spec_leaves(item)]
    return []


def leading_dim(spec) -> int | None:
    """The batch size of an input, from its ``input_spec``: the first dimension of its first array
    (None if unknown)."""
    found = spec_leaves(spec)
    shape = found[0]["shape"] if found else None
    return shape[0] if shape else None


_ARRAY_SIGNATURES: dict = {}
_ARRAY_SPECS: dict = {}
MAX_CACHED = 10_000


def _call_input(args: tuple, kwargs: dict):
    """A model call's input: the first argument, or ``x=``/``inputs=``."""
    return args[0] if args else kwargs.get("x", kwargs.get("inputs"))


def describe_call_input(args: tuple, kwargs: dict) -> tuple[str, int | None]:
    """(signature, batch size) of a call's input (the first argument, or ``x=``/``inputs=``),
    cached for arrays: this runs on every call, so it is one function. The cache is looked up by
    cheap keys: an EagerTensor's dtype enum (its ``dtype`` is a Python property), else the dtype
    object's identity (hashing a TensorFlow DType runs Python code), checked against the dtype
    the entry was made for."""
    value = args[0] if args else kwargs.get("x", kwargs.get("inputs"))
    fast = getattr(value, "_shape_tuple", None)  # EagerTensor: a plain tuple, no TensorShape
    enum = getattr(value, "_datatype_enum", None)
    try:
        if fast is not None and enum is not None:
            key = (type(value), fast(), enum())
            known = _ARRAY_SIGNATURES.get(key)
            if known is not None:
                return known[0]
            dtype = None
        else:
            dtype = getattr(value, "dtype", None)
            shape = getattr(value, "shape", None)
            if dtype is None or shape is None:
                return describe_input(value), leading_dim(input_spec(value))
            key = (type(value), tuple(shape), id(dtype))
            known = _ARRAY_SIGNATURES.get(key)
            if known is not None and known[1] is dtype:
                return known[0]
    except TypeError:  # an unhashable shape
        return describe_input(value), leading_dim(input_spec(value))
    if len(_ARRAY_SIGNATURES) > MAX_CACHED:
        _ARRAY_SIGNATURES.clear()
    known = _ARRAY_SIGNATURES[key] = ((describe_input(value), leading_dim(input_spec(value))), dtype)
    return known[0]


_ARGUMENT_SIGNATURES: dict = {}
_ONE_ARGUMENT: dict = {}  # (type, shape, dtype enum) -> (signature, None)
_EAGER: list = [None]  # TensorFlow's EagerTensor class, once seen (TensorFlow is imported lazily)
# Their signature is their type's name (``describe_input``), whatever their value.
_PLAIN = frozenset((bool, int, float, complex, str, bytes, type(None)))


def describe_arguments(args: tuple, kwargs: dict) -> tuple[str, None]:
    """(signature, None) of a function call's arguments: the one argument's signature, else
    ``describe_input`` of the list of arguments (and a dict of the keyword arguments). Runs on
    every call: cached on a key made of cheap per-argument keys (a plain Python value's type;
    an array's type, shape tuple and dtype enum or dtype identity; keyword names), as
    ``describe_call_input`` does for one array. Arguments of other kinds (lists, dicts, objects)
    are described uncached. An EagerTensor's shape is read as ``value.shape._dims``: the
    TensorShape the tensor caches, which TensorFlow makes anyway on every tf.function call (the
    argument's tracing type), where ``_shape_tuple()`` builds a new tuple on every call. (Where
    ``_dims`` is not a tuple, EagerTensors take the general path.)"""
    if not kwargs and len(args) == 1:
        value = args[0]
        kind = type(value)
        if kind is _EAGER[0]:  # the common case, inline: an EagerTensor's cached shape, its dtype's enum
            known = _ONE_ARGUMENT.get((kind, value.shape._dims, value._datatype_enum()))
            if known is not None:
                return known
        elif _EAGER[0] is None and kind.__name__ == "EagerTensor" and _cached_dims(value):
            _EAGER[0] = kind
        fast = getattr(value, "_shape_tuple", None)
        enum = getattr(value, "_datatype_enum", None)
        known = describe_call_input(args, kwargs)[0], None
        if fast is not None and enum is not None:
            if len(_ONE_ARGUMENT) > MAX_CACHED:
                _ONE_ARGUMENT.clear()
            _ONE_ARGUMENT[(type(value), fast(), enum())] = known
        return known
    eager = _EAGER[0]
    if len(args) == 2 and not kwargs:  # (features, labels): a training step's, inline as above
        first, second = args
        if type(first) is eager and type(second) is eager:
            known = _ARGUMENT_SIGNATURES.get(((eager, first.shape._dims, first._datatype_enum()),
                                              (eager, second.shape._dims, second._datatype_enum())))
            if known is not None:
                return known[0]
    parts = []
    held = []  # the dtypes whose identity is in the key: the entry keeps them alive
    for value in (args if not kwargs else (*args, *kwargs.values())):
        kind = type(value)
        if kind is eager:
            parts.append((kind, value.shape._dims, value._datatype_enum()))
            continue
        if kind in _PLAIN:
            parts.append(kind)
            continue
        fast = getattr(value, "_shape_tuple", None)
        enum = getattr(value, "_datatype_enum", None)
        if fast is not None and enum is not None:
            parts.append((kind, fast(), enum()))
            if eager is None and kind.__name__ == "EagerTensor" and _cached_dims(value):
                eager = _EAGER[0] = kind
            continue
        dtype = getattr(value, "dtype", None)
        shape = getattr(value, "shape", None)
        if dtype is None or shape is None:
            return _describe_arguments(args, kwargs), None
        try:
            parts.append((kind, tuple(shape), id(dtype)))
        except TypeError:
            return _describe_arguments(args, kwargs), None
        held.append(dtype)
    if kwargs:
        parts.append(tuple(kwargs))
    key = tuple(parts)
    try:
        known = _ARGUMENT_SIGNATURES.get(key)
    except TypeError:  # an unhashable shape
        return _describe_arguments(args, kwargs), None
    if known is None:
        if len(_ARGUMENT_SIGNATURES) > MAX_CACHED:
            _ARGUMENT_SIGNATURES.clear()
        known = _ARGUMENT_SIGNATURES[key] = ((_describe_arguments(args, kwargs), None), held)
    return known[0]


def _cached_dims(value) -> bool:
    """An EagerTensor's cached shape is a tuple of its dimensions, equal to ``_shape_tuple()``
    (TensorFlow 2.x's TensorShape; a list in old versions: those keep ``_shape_tuple()``)."""
    try:
        dims = value.shape._dims
        return type(dims) is tuple and dims == value._shape_tuple()
    except Exception:
        return False


def argument_kinds(args: tuple) -> tuple | None:
    """What ``describe_arguments`` keys positional arguments on, per argument, as the compiled
    wrapper compares them (_hotpath.c): a plain value's type; an EagerTensor's (type, shape
    tuple, dtype enum). None when an argument is of another kind (described the general way)."""
    eager = _EAGER[0]
    kinds = []
    for value in args:
        kind = type(value)
        if kind in _PLAIN:
            kinds.append(kind)
        elif kind is eager:
            kinds.append((kind, value._shape_tuple(), value._datatype_enum()))
        else:
            return None
    return tuple(kinds)


def _describe_arguments(args: tuple, kwargs: dict) -> str:
    return describe_input([*args, kwargs] if kwargs else list(args)) if args or kwargs else "()"


def call_input_spec(args: tuple, kwargs: dict):
    """``input_spec`` of a call's input (a call site's first call only), cached for arrays."""
    value = _call_input(args, kwargs)
    shape = getattr(value, "shape", None)
    if shape is None or getattr(value, "dtype", None) is None:
        return input_spec(value)
    try:
        key = (type(value), tuple(shape), value.dtype)
        known = _ARRAY_SPECS.get(key)
    except TypeError:
        return input_spec(value)
    if known is None:
        if len(_ARRAY_SPECS) > MAX_CACHED:
            _ARRAY_SPECS.clear()
        known = _ARRAY_SPECS[key] = input_spec(value)
    return known


def input_spec(value, depth: int = 0, limit: int | None = MAX_SIGNATURE_ITEMS):
    """The structure of an input as plain data, so analysis never parses signature text: an array
    is ``{"shape": [int|None, ...], "dtype": "float32"}`` (``shape`` None for an unknown rank),
    anything else ``{"type": "int"}``; lists, tuples and dicts (keys sorted) nest, up to the
    signature's limits (``limit`` items and 4 levels; ``limit=None``: the whole input, as verify
    needs it). The one format of an input spec: verify/specs.py builds on it."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        fast = getattr(value, "_shape_tuple", None)
        try:
            dims = fast() if fast is not None else tuple(shape)
            dims = None if dims is None else [None if d is None else int(d) for d in dims]
        except (TypeError, ValueError):  # an unknown rank
            dims = None
        return {"shape": dims, "dtype": str(getattr(dtype, "name", dtype))}
    if limit is not None and depth > 3:
        return {"type": type(value).__name__}
    if isinstance(value, (list, tuple)):
        inner = [input_spec(v, depth + 1, limit) for v in (value if limit is None else value[:limit])]
        if limit is not None and len(value) > limit:
            inner.append({"type": "…", "omitted": len(value) - limit})
        return inner
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda item: str(item[0]))
        return {str(k): input_spec(v, depth + 1, limit) for k, v in (items if limit is None else items[:limit])}
    return {"type": type(value).__name__}


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

    def __init__(self, collector: Collector, tracker: PhaseTracker, log: CallLog) -> None:
        self.collector = collector
        self.tracker = tracker
        self.log = log
        # Profilers that run on some calls (cProfile, the TF Profiler): see gates.py. Calls any
        # gate took are marked ``profiled`` and kept out of the timing statistics.
        self.gates: list = []
        # ``observer(api, model, args, kwargs)`` after each top-level call (e.g. the what-if
        # capture keeping the last input per model); errors become capture warnings.
        self.observers: list = []
        self.tape_is_empty: Callable[[], bool] = no_tape

    describe = staticmethod(describe_call_input)
    input_spec = staticmethod(call_input_spec)

    @staticmethod
    def target_name(model) -> str:
        return str(getattr(model, "name", type(model).__name__))

    @staticmethod
    def training_argument(api: str) -> Callable | None:
        """A model call (``model(x, True)``) may pass ``training`` by position; predict's second
        argument is its batch size."""
        return positional_training if api == "__call__" else None

    def install(self, patcher: Patcher) -> None:
        warn = self.collector.warn
        patcher.when_imported(KERAS3_TRAINER, guarded(warn, "Keras call timing", self._keras3_trainer, patcher))
        patcher.when_imported(KERAS3_MODEL, guarded(warn, "Keras call timing", self._keras3_model, patcher))
        patcher.when_imported(TF_KERAS_TRAINING, guarded(warn, "Keras call timing", self._tf_keras, patcher))

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
        # Keras has imported TensorFlow by now, so its eager context and tape stack can be looked up once.
        self.tape_is_empty = tape_check()
        in_graph = _in_graph_check()
        if self.identify is None:
            self.identify = _model_identity(in_graph)
        return timed_call_wrapper(original, api, self, in_graph, self.tracker, self.log, self.observers)

    identify = None  # ``identify(model)``: see timed_call_wrapper (made with the first wrapper)


def _in_graph_check() -> Callable[[object], bool]:
    """The ``skip`` of model calls: True while a graph is traced (the call belongs to that graph).

    What ``tf.executing_eagerly()`` answers, read straight off TensorFlow's context: this runs on
    every call, and the public function costs two more Python calls."""
    from tensorflow.python.eager import context

    public = context.executing_eagerly
    if not hasattr(context, "_context"):
        return lambda model: not public()

    def in_graph(model) -> bool:
        ctx = context._context
        if ctx is None:  # no context yet: TensorFlow's default mode decides
            return not public()
        try:
            return not ctx._thread_local_data.is_eager
        except AttributeError:
            return not public()

    return in_graph


def _model_identity(in_graph: Callable[[object], bool]) -> Callable[[object], str | None]:
    """``identify(model)`` for the timed-call wrapper: the model's name, or None while a graph is
    traced (``in_graph``); the eager check inline, as ``_in_graph_check`` reads it."""
    from tensorflow.python.eager import context

    def identify(model) -> str | None:
        ctx = getattr(context, "_context", None)
        try:
            eager = ctx._thread_local_data.is_eager
        except AttributeError:  # no context yet, or another TensorFlow: the check of its own
            eager = not in_graph(model)
        if not eager:
            return None
        try:
            name = model.name
        except Exception:  # a model whose name cannot be read still counts
            return type(model).__name__
        return name if name.__class__ is str else str(name)

    return identify


def no_tape() -> bool:
    return True


def tape_check() -> Callable[[], bool]:
    """``tape_is_empty()``: False while a gradient tape records on this thread (a call made under
    it is a training call). TensorFlow's own check, called directly: it runs per call."""
    try:
        from tensorflow.python import pywrap_tfe

        return pywrap_tfe.TFE_Py_TapeSetIsEmpty
    except (ImportError, AttributeError):
        return no_tape


def training_check() -> Callable[..., bool]:
    """``training(kwargs, model=None, args=())`` of a model call: True for ``training=True`` (by
    keyword, or by position when ``model`` and ``args`` are given) or under an active gradient
    tape (a training loop), as the timed-call wrapper tells it."""
    tape_is_empty = tape_check()

    def training(kwargs: dict, model=None, args: tuple = ()) -> bool:
        return (kwargs.get("training") is True or not tape_is_empty()
                or (model is not None and len(args) > 1 and positional_training(model, args)))

    return training


_TRAINING_INDEX: dict = {}


def positional_training(model, args: tuple) -> bool:
    """True when a model call passed ``training=True`` by position (``model(x, True)``), where
    the model's ``call`` takes ``training``: its position is looked up once per class."""
    cls = type(model)
    index = _TRAINING_INDEX.get(cls)
    if index is None:
        if len(_TRAINING_INDEX) > MAX_CACHED:
            _TRAINING_INDEX.clear()
        index = _TRAINING_INDEX[cls] = _training_index(cls)
    return 0 <= index < len(args) and args[index] is True


def _training_index(cls) -> int:
    """Where ``training`` comes in ``cls.call``'s positional arguments after ``self``; -1 if nowhere."""
    try:
        parameters = inspect.signature(cls.call).parameters.values()
    except (AttributeError, TypeError, ValueError):
        return -1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in parameters if p.kind in kinds][1:]  # less self
    return names.index("training") if "training" in names else -1
