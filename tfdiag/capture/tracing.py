"""Record every tf.function trace: which function, which arguments, where from, how long.

Hook point (TF 2.16-2.21): ``tracing_compilation._create_concrete_function`` is
called by ``_maybe_define_function`` only on a cache miss, i.e. exactly once per
trace, for user functions, Keras's predict/train functions and tf.data's
``StructuredFunctionWrapper`` alike. Its ``function_type`` holds the trace type
of every argument (the cache key), and ``tracing_options.function_cache``
identifies the ``Function`` object. ``Function.__init__`` is wrapped to learn
where each Function object was created (for "a new tf.function object for the
same code"), whose code created it, and, for Keras's functions, which role (train, test,
predict) of which model they are (models.py). A call that does not trace never reaches these hooks.

A tf.function that creates variables on its first call is traced twice by that call, by TensorFlow's
design (``Function._initialize``): once with variable creation allowed (``ScopeType.VARIABLE_CREATION``),
then again for the version that may not create them (``NO_VARIABLE_CREATION``), which every later call
runs. Each trace says which path made it (``variable_creation``): ``true`` for the first when it created
variables, ``false`` for traces made with variable creation forbidden; absent otherwise (the function
created no variables, or TensorFlow traced it outside both scopes). Both count in
``experimental_get_tracing_count()`` and so in ``trace_count``.

A function's ``origin`` (whose it is: ``user``, ``keras``, ``tf.data``, ``tensorflow``) is the
origin of the code that created the tf.function object (``creator_origin``), not of the code it
wraps: the user's ``tf.function(model.call)`` is the user's, Keras's ``make_predict_function``'s
is Keras's. Where the wrapped code's own origin differs, each trace says so (``code_origin``).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
import weakref
from typing import Callable

from . import callsite, trace_types
from .collector import Collector
from .models import KERAS_PACKAGES, ModelRegistry
from .patching import Patcher, guarded

TRACING_MODULE = "tensorflow.python.eager.polymorphic_function.tracing_compilation"
FUNCTION_MODULE = "tensorflow.python.eager.polymorphic_function.polymorphic_function"

_DATA_DIR = tuple(os.path.join(p, "python", "data", "") for p in callsite.PACKAGE_DIRS.get("tensorflow", ()))
# tf.function's own machinery and its decorators: frames between ``Function.__init__`` and whoever
# asked for the tf.function (the user's ``tf.function(model)``, Keras's make_predict_function, ...).
_MACHINERY = tuple(os.path.join(p, "python", d, "") for p in callsite.PACKAGE_DIRS.get("tensorflow", ())
                   for d in ("eager", "util"))


@functools.lru_cache(maxsize=4096)
def origin_of(filename: str) -> str:
    """``user``, ``keras``, ``tf.data`` or ``tensorflow``: whose code a traced function is."""
    package = callsite.package_of(filename)
    if package == "tensorflow":
        return "tf.data" if os.path.realpath(os.path.abspath(filename)).startswith(_DATA_DIR) else "tensorflow"
    if package in ("keras", "tf_keras"):
        return "keras"
    return "user" if package is None else package


def creator_origin(frame) -> str | None:
    """Whose code created a tf.function object: the origin of the first frame out from ``frame``
    (inside ``Function.__init__``) that is not tf.function's own machinery; None if none is found.
    This, not where the wrapped code is defined, decides ownership: ``tf.function(model)`` written
    by the user is the user's function; one Keras makes inside ``make_predict_function`` is Keras's."""
    while frame is not None:
        filename = frame.f_code.co_filename
        if not _is_machinery(filename):
            return origin_of(filename)
        frame = frame.f_back
    return None


@functools.lru_cache(maxsize=4096)
def _is_machinery(filename: str) -> bool:
    return os.path.realpath(os.path.abspath(filename)).startswith(_MACHINERY)


def _bound_instance(python_function):
    """The object a tf.function method is bound to (TF binds through a TfMethodTarget), else None."""
    bound = getattr(python_function, "__self__", None)
    if bound is None:
        return None
    return getattr(bound, "target", bound)


class TraceCapture:
    """Installs the trace hooks on a Patcher and appends each trace to a Collector."""

    def __init__(self, collector: Collector, clock: Callable[[], float] = time.perf_counter,
                 phase_tracker=None) -> None:
        self.collector = collector
        self.clock = clock
        self.phase_tracker = phase_tracker
        # Keyed by id() of a Function's cache (FunctionCache takes no weak references);
        # entries are dropped when their Function object is collected.
        self._created_at: dict[int, str] = {}
        self._creators: dict[int, str] = {}  # id of a Function's cache -> origin of the code that created it
        self._object_index: dict[int, int] = {}
        self._objects_per_code: dict[tuple, int] = {}
        self._roles: dict[int, tuple] = {}  # id of a Keras-made Function's cache -> (role, weakref to model)
        self._functions: dict[int, weakref.ref] = {}  # id of a Function's cache -> the Function
        self.models = ModelRegistry(collector)
        self._tracing = threading.local()  # ``marks``: per trace being made on this thread, [applies gradients]

    def mark_training_step(self) -> bool:
        """The function traced now on this thread applies gradients (custom_loops.py); False if
        no trace is being made here."""
        marks = getattr(self._tracing, "marks", None)
        if not marks:
            return False
        marks[-1][0] = True
        return True

    def install(self, patcher: Patcher) -> None:
        warn = self.collector.warn
        patcher.when_imported(FUNCTION_MODULE, guarded(warn, "trace capture", self._hook_function_init, patcher))
        patcher.when_imported(TRACING_MODULE, guarded(warn, "trace capture", self._hook_tracing, patcher))
        self.models.install(patcher)

    # -- hooks ----------------------------------------------------------------------
    def _hook_function_init(self, patcher: Patcher, module) -> None:
        created_at = self._created_at
        capture = self

        def make(original):
            def __init__(function_self, *args, **kwargs):
                original(function_self, *args, **kwargs)
                try:
                    cache_id = id(function_self._function_cache)  # pylint: disable=protected-access
                    created_at[cache_id] = callsite.user_call_site(2)
                    creator = creator_origin(sys._getframe(1))
                    if creator is not None:
                        capture._creators[cache_id] = creator
                    capture._functions[cache_id] = weakref.ref(function_self)
                    weakref.finalize(function_self, capture._forget, cache_id)
                    capture._note_role(cache_id, function_self)
                except (AttributeError, TypeError):
                    pass
            __init__.__wrapped__ = original
            return __init__

        patcher.patch(module.Function, "__init__", make)

    def _hook_tracing(self, patcher: Patcher, module) -> None:
        if not hasattr(module, "_create_concrete_function"):
            raise AttributeError("no _create_concrete_function to hook")
        capture = self

        def make(original):
            def _create_concrete_function(function_type, type_context, func_graph, tracing_options):
                tracker = capture.phase_tracker
                token = tracker.enter("graph_creation") if tracker is not None else None
                marks = capture._tracing.__dict__.setdefault("marks", [])
                mark = [False]
                marks.append(mark)
                start = capture.clock()
                failed = True
                try:
                    result = original(function_type, type_context, func_graph, tracing_options)
                    failed = False
                    return result
                finally:
                    duration = capture.clock() - start
                    if token is not None:
                        tracker.exit(token)
                    if marks and marks[-1] is mark:
                        marks.pop()
                    try:
                        capture._record(function_type, tracing_options, duration, failed, mark[0])
                    except Exception as exc:  # never break the user's trace
                        capture.collector.warn(f"could not describe a trace: {exc.__class__.__name__}: {exc}")
            _create_concrete_function.__wrapped__ = original
            return _create_concrete_function

        patcher.patch(module, "_create_concrete_function", make)

    def _note_role(self, cache_id: int, function) -> None:
        """A Function Keras makes inside a model's make_*_function: remember its role and model."""
        code = callsite.code_of(getattr(function, "_python_function", None))
        if code is None or callsite.package_of(code.co_filename) not in KERAS_PACKAGES:
            return
        made = self.models.maker(sys._getframe(2))
        if made is None:
            return
        role, model = made
        try:
            ref = weakref.ref(model) if model is not None else None
        except TypeError:
            ref = None
        self._roles[cache_id] = (role, ref)

    # -- recording ------------------------------------------------------------------
    def _record(self, function_type, tracing_options, duration: float, failed: bool,
                training_step: bool = False) -> None:
        python_function = callsite.unwrap_function(tracing_options.python_function)
        code = callsite.code_of(python_function)
        qualname = getattr(python_function, "__qualname__", None) or str(tracing_options.name)
        if code is not None:
            defined_at = callsite.code_site(code)
            # The name is part of the key: tf.data wraps every map function in the same code.
            key = (code.co_filename, code.co_firstlineno, qualname, str(tracing_options.name))
            code_origin = origin_of(code.co_filename)
        else:
            defined_at = "<unknown>"
            key = ("<no code>", 0, qualname, str(tracing_options.name))
            code_origin = "user"
        name = str(tracing_options.name)
        model = None
        cache = tracing_options.function_cache
        # Whoever created the tf.function object owns it (the code's own origin where unknown).
        origin = self._creators.get(id(cache), code_origin) if cache is not None else code_origin
        role, model_object = self._role_of(cache) if origin == "keras" else (None, None)
        if origin == "keras":
            # Keras's functions share code across models, and Keras 3's train and test functions
            # share code too: one entry per model and role.
            if model_object is None and self.phase_tracker is not None:
                model_object = self.phase_tracker.current_target()
            model = None if model_object is None else str(getattr(model_object, "name", type(model_object).__name__))
            key = (*key, model, role)
        args = []
        for parameter in function_type.parameters.values():
            entry = trace_types.describe(parameter.type_constraint)
            entry["name"] = parameter.name
            args.append(entry)

        object_index, new_object = self._object_of(cache, key)
        trace = {
            "call_site": callsite.user_call_site(3),
            "duration_s": duration,
            "args": args,
            "object_index": object_index,
            "new_object": new_object,
            "created_at": self._created_at.get(id(cache)),
            "thread": threading.current_thread().name,
        }
        if code_origin != origin:  # e.g. the user's tf.function(model.call): Keras's code, the user's function
            trace["code_origin"] = code_origin
        instance = _bound_instance(python_function)
        if instance is not None:
            # A tf.function method: each instance of the class has its own Function and traces.
            trace["instance"] = {"type": type(instance).__name__, "id": hex(id(instance))}
        if model is not None:
            trace["model"] = model
        if role is not None:
            trace["role"] = role
        if model_object is not None:
            created_at, compiled_at = self.models.lines(model_object)
            trace["model_created_at"], trace["compiled_at"] = created_at, compiled_at
        if tracing_options.input_signature is not None:
            trace["has_input_signature"] = True
        if tracing_options.reduce_retracing:
            trace["reduce_retracing"] = True
        variable_creation = self._variable_creation(tracing_options, cache)
        if variable_creation is not None:
            trace["variable_creation"] = variable_creation
        if failed:
            trace["failed"] = True
        if training_step:
            trace["training_step"] = True
        self.collector.add_trace(key, name, qualname, origin, defined_at, trace)

    def _object_of(self, cache, key: tuple) -> tuple[int, bool]:
        """Ordinal of the Function object among those seen for this code; True if first seen now."""
        if cache is None:
            return 0, False
        with self.collector.lock:
            index = self._object_index.get(id(cache))
            if index is not None:
                return index, False
            index = self._objects_per_code.get(key, 0) + 1
            self._objects_per_code[key] = index
            if id(cache) in self._created_at:  # only ids whose lifetime we track
                self._object_index[id(cache)] = index
        return index, index > 1

    def _variable_creation(self, tracing_options, cache) -> bool | None:
        """True for the trace made with variable creation allowed when it created the function's
        variables, False for one made with variable creation forbidden, None otherwise."""
        scope = getattr(getattr(tracing_options, "scope_type", None), "name", None)
        if scope == "NO_VARIABLE_CREATION":
            return False
        if scope != "VARIABLE_CREATION" or cache is None:
            return None
        ref = self._functions.get(id(cache))
        function = ref() if ref is not None else None
        return True if getattr(function, "_created_variables", None) else None

    def _role_of(self, cache) -> tuple:
        """(role, model) of a Keras-made Function (None, None if not made by a make_*_function)."""
        entry = self._roles.get(id(cache)) if cache is not None else None
        if entry is None:
            return None, None
        role, ref = entry
        return role, (ref() if ref is not None else None)

    def _forget(self, cache_id: int) -> None:
        self._roles.pop(cache_id, None)
        self._functions.pop(cache_id, None)
        self._created_at.pop(cache_id, None)
        self._creators.pop(cache_id, None)
        self._object_index.pop(cache_id, None)
