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

import weakref
from typing import Callable

from .collector import Collector
from .patching import Patcher, guarded
from .phase_tracker import PhaseTracker
from .producers import timed_producer
from .steps import StepLog, teardown_begins as steps_teardown

# Not a phase switch: the batches of a tf-keras generator or Sequence are produced on tf.data's
# threads (``from_generator`` + prefetch) while the call's own thread waits inside the predict
# function's graph (IteratorGetNext, so under kernel_execution). The adapter's generator is
# timed where it runs and the time charged to the call that built it (see ``producer_wrapper``).
PRODUCER = "data_adapter, produced off-thread"
# Not a phase switch either: when an iterator the call created is finalized on the call's own
# thread, the rest of the call (the iterator's C++ teardown, then returning) is data_adapter.
TEARDOWN = "data_adapter, teardown"

# (module, "Class.attribute" or "function", phase, or one of the two markers above)
TENSORFLOW_POINTS = (
    # tf.data builds a tf.function per map/flat_map: tracing and concrete-function creation.
    ("tensorflow.python.data.ops.structured_function", "StructuredFunctionWrapper.__init__", "graph_creation"),
    # Creating a tf.data iterator (~20 ms per Keras 3 predict() call) and fetching batches from it.
    ("tensorflow.python.data.ops.dataset_ops", "DatasetV2.__iter__", "data_adapter"),
    ("tensorflow.python.data.ops.iterator_ops", "OwnedIterator.__next__", "data_adapter"),
    ("tensorflow.python.data.ops.iterator_ops", "OwnedIterator.get_next", "data_adapter"),
    # Deleting the iterator at the end of the call can wait for its prefetch threads (Keras 3's
    # predict() on large arrays: about 0.5 s, every other call here), after the last Python line.
    ("tensorflow.python.data.ops.iterator_ops", "OwnedIterator.__init__", TEARDOWN),
    # Running a traced graph function, and eager ops (generated op wrappers' fast path and fallback).
    ("tensorflow.python.eager.polymorphic_function.concrete_function", "ConcreteFunction._call_flat",
     "kernel_execution"),
    ("tensorflow.python.pywrap_tfe", "TFE_Py_FastPathExecute", "kernel_execution"),
    ("tensorflow.python.eager.execute", "execute", "kernel_execution"),
    # Waiting for kernels still running asynchronously (Keras 3 predict() syncs after the last batch).
    ("tensorflow.python.eager.context", "async_wait", "kernel_execution"),
    # Turning Python/NumPy inputs into tensors (only for values that are not TF/Keras objects already:
    # see ``converts_user_data``). Keras 3 and tf-keras convert a model's NumPy inputs through here.
    # Their Functional input standardising methods are not points: a class attribute stays wrapped
    # on every call (see _wrap_all), and that wrapper cost about 4 us per eager model(x) here;
    # the casts they may add run as ops (kernel_execution).
    ("tensorflow.python.framework.tensor_conversion_registry", "convert", "input_processing"),
)

KERAS3_POINTS = (
    # Choosing and building the data adapter and its tf.data pipeline.
    ("keras.src.backend.tensorflow.trainer", "TFEpochIterator.__init__", "data_adapter"),
    ("keras.src.backend.tensorflow.trainer", "TFEpochIterator.__next__", "data_adapter"),
    ("keras.src.backend.tensorflow.trainer", "convert_to_np_if_not_ragged", "output_processing"),
    ("keras.src.backend.tensorflow.trainer", "potentially_ragged_concat", "output_processing"),
)


TF_KERAS_POINTS = (
    ("tf_keras.src.engine.data_adapter", "get_data_handler", "data_adapter"),
    ("tf_keras.src.engine.data_adapter", "GeneratorDataAdapter._handle_multiprocessing", PRODUCER),
    ("tf_keras.src.engine.data_adapter", "KerasSequenceAdapter._handle_multiprocessing", PRODUCER),
    ("tf_keras.src.engine.training", "potentially_ragged_concat", "output_processing"),
    ("tf_keras.src.utils.tf_utils", "sync_to_numpy_or_python_type", "output_processing"),
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


def producer_wrapper(original: Callable, tracker: PhaseTracker) -> Callable:
    """Wrap an adapter's ``_handle_multiprocessing``: the generator function it returns is timed
    batch by batch, on whatever thread tf.data runs it, into the open call's ``off_thread_s``
    (a training call's: its StepLog, which moves it step by step; see steps.py)."""

    def _handle_multiprocessing(adapter, *args, **kwargs):
        generator_fn = original(adapter, *args, **kwargs)
        frame = tracker.current_frame()
        if frame is None:
            return generator_fn
        log = frame.extra if isinstance(frame.extra, StepLog) else None
        return timed_producer(generator_fn, tracker.clock, log, frame)

    _handle_multiprocessing.__wrapped__ = original
    return _handle_multiprocessing


def teardown_wrapper(original: Callable, tracker: PhaseTracker) -> Callable:
    """Wrap ``OwnedIterator.__init__``: an iterator made in a sampled call switches that call to
    data_adapter when it is finalized there (weakref callbacks run before the object's
    attributes, and so its resource handle, are released)."""

    def __init__(iterator, *args, **kwargs):
        original(iterator, *args, **kwargs)
        frame = tracker.current_frame()
        if frame is not None and frame.weight:
            if frame.extra.__class__ is StepLog:  # a training call's epochs' iterators: see steps.py
                weakref.finalize(iterator, steps_teardown, tracker, frame).atexit = False
            else:
                weakref.finalize(iterator, tracker.teardown_begins, frame).atexit = False

    __init__.__wrapped__ = original
    return __init__


def install(patcher: Patcher, tracker: PhaseTracker, collector: Collector, points=ALL_POINTS) -> None:
    """Wrap every entry point of ``points``; the per-op ones become ``tracker.per_op``."""
    per_op = tracker.per_op = patcher.toggle()
    by_module: dict[str, list[tuple[str, str]]] = {}
    for module_name, attribute, phase in points:
        by_module.setdefault(module_name, []).append((attribute, phase))
    for module_name, entries in by_module.items():
        patcher.when_imported(module_name, guarded(collector.warn, "phase entry points", _wrap_all,
                                                   patcher.patch, per_op.add, tracker, collector, entries))


def _wrap_all(patch_always: Callable, patch_per_op: Callable, tracker: PhaseTracker, collector: Collector,
              entries, module) -> None:
    """Wrap each of ``entries`` in ``module`` (inside the user's import: a point that fails is a
    warning, and the others still go in)."""
    for attribute, phase in entries:
        owner = module
        *path, name = attribute.split(".")
        try:
            for part in path:
                owner = getattr(owner, part)
            if phase in (PRODUCER, TEARDOWN):
                wrapper = producer_wrapper if phase == PRODUCER else teardown_wrapper
                patch_always(owner, name, lambda original, wrapper=wrapper: wrapper(original, tracker))
                continue
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
        except Exception as exc:
            collector.warn(f"phase entry point {module.__name__}.{attribute} could not be wrapped "
                           f"({exc.__class__.__name__}: {exc}); its time is attributed to the enclosing phase")
