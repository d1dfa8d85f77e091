"""Where each phase starts: the TensorFlow and Keras entry points wrapped to switch phase.

A table says which function, in which module, marks which phase; ``install``
wraps each one (when its module is imported) so that while it runs, the
current call's time goes to that phase. The per-op module functions are a
``Toggle``, switched on only while a sampled call runs (sampling.py says why);
the rest stay on for the whole diagnosis. Outside a sampled call a wrapper
costs one thread-local lookup. Entry points were read off the sources
of TF 2.21, Keras 3.15 and tf-keras 2.21; one that is missing in another
version becomes a capture warning, and the rest still work.
"""

from __future__ import annotations

from typing import Callable

from .collector import Collector
from .patching import Patcher
from .phases import PhaseTracker

# (module, "Class.attribute" or "function", phase)
TENSORFLOW_POINTS = (
    # tf.data builds a tf.function per map/flat_map: tracing and concrete-function creation.
    ("tensorflow.python.data.ops.structured_function", "StructuredFunctionWrapper.__init__", "graph_creation"),
    # Creating a tf.data iterator (~20 ms per Keras 3 predict() call) and fetching batches from it.
    ("tensorflow.python.data.ops.dataset_ops", "DatasetV2.__iter__", "data_adapter"),
    ("tensorflow.python.data.ops.iterator_ops", "OwnedIterator.__next__", "data_adapter"),
    ("tensorflow.python.data.ops.iterator_ops", "OwnedIterator.get_next", "data_adapter"),
    # Running a traced graph function, and eager ops (generated op wrappers' fast path and fallback).
    ("tensorflow.python.eager.polymorphic_function.concrete_function", "ConcreteFunction._call_flat",
     "kernel_execution"),
    ("tensorflow.python.pywrap_tfe", "TFE_Py_FastPathExecute", "kernel_execution"),
    ("tensorflow.python.eager.execute", "execute", "kernel_execution"),
    # Waiting for kernels still running asynchronously (Keras 3 predict() syncs after the last batch).
    ("tensorflow.python.eager.context", "async_wait", "kernel_execution"),
    # Turning Python/NumPy inputs into tensors (only for values that are not TF/Keras objects already:
    # see ``converts_user_data``).
    ("tensorflow.python.framework.tensor_conversion_registry", "convert", "input_processing"),
)

KERAS3_POINTS = (
    # Choosing and building the data adapter and its tf.data pipeline.
    ("keras.src.backend.tensorflow.trainer", "TFEpochIterator.__init__", "data_adapter"),
    ("keras.src.backend.tensorflow.trainer", "TFEpochIterator.__next__", "data_adapter"),
    ("keras.src.backend.tensorflow.trainer", "convert_to_np_if_not_ragged", "output_processing"),
    ("keras.src.backend.tensorflow.trainer", "potentially_ragged_concat", "output_processing"),
    ("keras.src.models.functional", "Functional._standardize_inputs", "input_processing"),
)

TF_KERAS_POINTS = (
    ("tf_keras.src.engine.data_adapter", "get_data_handler", "data_adapter"),
    ("tf_keras.src.engine.training", "potentially_ragged_concat", "output_processing"),
    ("tf_keras.src.utils.tf_utils", "sync_to_numpy_or_python_type", "output_processing"),
    ("tf_keras.src.engine.functional", "Functional._conform_to_reference_input", "input_processing"),
)

ALL_POINTS = TENSORFLOW_POINTS + KERAS3_POINTS + TF_KERAS_POINTS


_FRAMEWORK_TYPE: dict = {}


def converts_user_data(args, kwargs) -> bool:
    """True when a tensor conversion is given the user's data (NumPy, Python), not a tensor or variable."""
    value = args[0] if args else kwargs.get("value")
    kind = type(value)
    framework = _FRAMEWORK_TYPE.get(kind)
    if framework is None:
        framework = _FRAMEWORK_TYPE[kind] = kind.__module__.startswith(("tensorflow", "keras", "tf_keras"))
    return not framework


# Entry points whose phase applies only to some calls.
_APPLIES = {("tensor_conversion_registry", "convert"): converts_user_data}


def phase_wrapper(original: Callable, phase: str, tracker: PhaseTracker, applies: Callable | None = None) -> Callable:
    in_phase = tracker.wrap(original, phase, applies)
    in_phase.__name__ = getattr(original, "__name__", "in_phase")
    in_phase.__qualname__ = getattr(original, "__qualname__", in_phase.__name__)
    in_phase.__doc__ = getattr(original, "__doc__", None)
    return in_phase


def install(patcher: Patcher, tracker: PhaseTracker, collector: Collector, points=ALL_POINTS) -> None:
    """Wrap every entry point of ``points``; the per-op ones become ``tracker.per_op``."""
    per_op = tracker.per_op = patcher.toggle()
    by_module: dict[str, list[tuple[str, str]]] = {}
    for module_name, attribute, phase in points:
        by_module.setdefault(module_name, []).append((attribute, phase))
    for module_name, entries in by_module.items():
        patcher.when_imported(module_name, lambda module, entries=entries: _wrap_all(
            patcher.patch, per_op.add, tracker, collector, module, entries))


def _wrap_all(patch_always: Callable, patch_per_op: Callable, tracker: PhaseTracker, collector: Collector,
              module, entries) -> None:
    for attribute, phase in entries:
        owner = module
        *path, name = attribute.split(".")
        try:
            for part in path:
                owner = getattr(owner, part)
            applies = _APPLIES.get((module.__name__.rsplit(".", 1)[-1], attribute))
            # Only module functions are switched per call. Graph creation is measured on every
            # call, and class attributes stay put: each change of a class drops CPython's
            # attribute caches for it (from 3.12, a class changed 1000+ times is never
            # specialized again). The class entry points run a few times per call at most.
            switched = phase != "graph_creation" and not isinstance(owner, type)
            patch = patch_per_op if switched else patch_always
            patch(owner, name, lambda original, phase=phase, applies=applies: phase_wrapper(
                original, phase, tracker, applies))
        except AttributeError:
            collector.warn(f"phase entry point {module.__name__}.{attribute} not found in this version; "
                           f"its time is attributed to the enclosing phase")
