"""Time each top-level call of a user tf.function, with its phases.

``Function.__call__`` is wrapped; a call is recorded only when it is the user's
own function (its Python code lives outside TensorFlow, Keras and tfdiag) and it
is not nested in another timed call (a user tf.function calling another, or
called inside a timed Keras call). Everything else passes straight through.
"""

from __future__ import annotations

import inspect

from . import callsite
from .collector import Collector
from .keras_calls import describe_call_input, describe_input
from .patching import Patcher
from .phases import PhaseTracker
from .timed_calls import CallLog, timed

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
    def __init__(self, collector: Collector, tracker: PhaseTracker, log: CallLog) -> None:
        self.collector = collector
        self.tracker = tracker
        self.log = log
        self._user_code: dict[int, tuple] = {}
        self.gates: list = []  # see gates.py; shared with the Keras call capture
        self.observers: list = []

    def install(self, patcher: Patcher) -> None:
        patcher.when_imported(FUNCTION_MODULE, lambda m: self._guarded(patcher, m))

    def _guarded(self, patcher: Patcher, module) -> None:
        try:
            patcher.patch(module.Function, "__call__", lambda orig: timed(orig, "tf.function", self, self.skip,
                                                                         self.tracker, self.log))
        except Exception as exc:  # TF internals differ: say so, capture the rest
            self.collector.warn(f"tf.function call timing unavailable: {exc.__class__.__name__}: {exc}")

    def skip(self, function) -> bool:
        """Only the user's own functions are timed (TensorFlow's and Keras's pass through)."""
        python_function = getattr(function, "_python_function", None)
        cached = self._user_code.get(id(python_function))
        if cached is not None and cached[0] is python_function:  # an id is only valid for its object
            return cached[1]
        code = code_of(python_function)
        refused = code is None or callsite.is_library_file(code.co_filename)
        if len(self._user_code) > 10_000:
            self._user_code.clear()
        self._user_code[id(python_function)] = (python_function, refused)
        return refused

    @staticmethod
    def describe(args: tuple, kwargs: dict) -> tuple[str, None]:
        if len(args) == 1 and not kwargs:
            return describe_call_input(args, kwargs)[0], None
        signature = describe_input([*args, kwargs] if kwargs else list(args)) if args or kwargs else "()"
        return signature, None

    @staticmethod
    def target_name(function) -> str:
        return str(getattr(function, "_name", None) or getattr(function, "__name__", "?"))
