"""Time each top-level call of a user tf.function, with its phases.

``Function.__call__`` is wrapped; a call is recorded only when it is the user's
own function (its Python code lives outside TensorFlow, Keras and tfdiag), it
runs eagerly at the top level (not nested in another instrumented call, not
while a graph is being traced). Everything else passes straight through.
"""

from __future__ import annotations

import inspect

from . import callsite, gates
from .collector import Collector
from .keras_calls import describe_call_input, describe_input
from .patching import Patcher
from .phases import PhaseTracker

FUNCTION_MODULE = "tensorflow.python.eager.polymorphic_function.polymorphic_function"


def code_of(python_function):
    """The user's code object behind a tf.function's Python function (methods and decorators unwrapped)."""
    try:
        python_function = inspect.unwrap(python_function)
    except ValueError:
        pass
    python_function = getattr(python_function, "__func__", python_function)  # a bound method
    return getattr(python_function, "__code__", None)


class FunctionCallCapture:
    def __init__(self, collector: Collector, tracker: PhaseTracker) -> None:
        self.collector = collector
        self.tracker = tracker
        self._user_code: dict[int, tuple] = {}
        self.gates: list = []  # see gates.py; shared with the Keras call capture

    def install(self, patcher: Patcher) -> None:
        patcher.when_imported(FUNCTION_MODULE, lambda m: self._guarded(patcher, m))

    def _guarded(self, patcher: Patcher, module) -> None:
        try:
            patcher.patch(module.Function, "__call__", self._wrap)
        except Exception as exc:  # TF internals differ: say so, capture the rest
            self.collector.warn(f"tf.function call timing unavailable: {exc.__class__.__name__}: {exc}")

    def _is_user_function(self, function) -> bool:
        python_function = getattr(function, "_python_function", None)
        cached = self._user_code.get(id(python_function))
        if cached is not None and cached[0] is python_function:  # an id is only valid for its object
            return cached[1]
        code = code_of(python_function)
        known = code is not None and not callsite.is_library_file(code.co_filename)
        if len(self._user_code) > 10_000:
            self._user_code.clear()
        self._user_code[id(python_function)] = (python_function, known)
        return known

    def _wrap(self, original):
        capture = self
        tracker = self.tracker

        def __call__(function, *args, **kwargs):
            if tracker.in_call() or not capture._is_user_function(function):
                return original(function, *args, **kwargs)
            taken = gates.start_all(capture.gates, "tf.function")
            frame = tracker.begin_call()
            start = frame.last
            try:
                return original(function, *args, **kwargs)
            finally:
                phases = tracker.end_call(frame)
                gates.stop_all(taken)
                capture._record(function, args, kwargs, start, phases, bool(taken))

        __call__.__wrapped__ = original
        return __call__

    def _record(self, function, args, kwargs, start, phases, profiled) -> None:
        if len(args) == 1 and not kwargs:
            signature = describe_call_input(args[0])[0]
        else:
            signature = describe_input([*args, kwargs] if kwargs else list(args)) if args or kwargs else "()"
        name = getattr(function, "_name", None) or getattr(function, "__name__", "?")
        self.collector.record_call("tf.function", str(name), signature, start, phases, profiled)
