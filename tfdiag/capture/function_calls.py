"""Time each top-level call of a user tf.function, with its phases.

``Function.__call__`` is wrapped; a call is recorded only when it is the user's
own function (its Python code lives outside TensorFlow, Keras and tfdiag) and it
is not nested in another timed call (a user tf.function calling another, or
called inside a timed Keras call). Everything else passes straight through.
"""

from __future__ import annotations

from . import callsite
from .collector import Collector
from .keras_calls import call_input_spec, describe_call_input, describe_input, input_spec, no_tape, tape_check
from .patching import Patcher, guarded
from .phase_tracker import PhaseTracker
from .timed_calls import CallLog, timed_call_wrapper
from .tracing import FUNCTION_MODULE


class FunctionCallCapture:
    def __init__(self, collector: Collector, tracker: PhaseTracker, log: CallLog) -> None:
        self.collector = collector
        self.tracker = tracker
        self.log = log
        self._user_code: dict[int, tuple] = {}
        self.gates: list = []  # see gates.py; shared with the Keras call capture
        self.tape_is_empty = no_tape

    def install(self, patcher: Patcher) -> None:
        patcher.when_imported(FUNCTION_MODULE, guarded(self.collector.warn, "tf.function call timing",
                                                       self._wrap_call, patcher))

    def _wrap_call(self, patcher: Patcher, module) -> None:
        self.tape_is_empty = tape_check()
        patcher.patch(module.Function, "__call__", lambda orig: timed_call_wrapper(
            orig, "tf.function", self, self.skip, self.tracker, self.log))

    def skip(self, function) -> bool:
        """Only the user's own functions are timed (TensorFlow's and Keras's pass through)."""
        python_function = getattr(function, "_python_function", None)
        cached = self._user_code.get(id(python_function))
        if cached is not None and cached[0] is python_function:  # an id is only valid for its object
            return cached[1]
        code = callsite.code_of(python_function)
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
    def input_spec(args: tuple, kwargs: dict):
        """Mirrors ``describe``: the one argument's spec, else a list of the arguments (and a dict
        of the keyword arguments)."""
        if len(args) == 1 and not kwargs:
            return call_input_spec(args, kwargs)
        return input_spec([*args, kwargs] if kwargs else list(args))

    @staticmethod
    def target_name(function) -> str:
        return str(getattr(function, "_name", None) or getattr(function, "__name__", "?"))
