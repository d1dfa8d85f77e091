"""Time each top-level call of a user tf.function, with its phases.

``Function.__call__`` is wrapped; a call is recorded only when it is the user's
own function (its Python code lives outside TensorFlow, Keras and tfdiag) and it
is not nested in another timed call (a user tf.function calling another, or
called inside a timed Keras call). Everything else passes straight through.

Observers (``observe``) hear of every call of a user tf.function, nested ones included, as
``observer(function, args, kwargs, traced)`` once it returns (``traced``: that call traced it);
--verify's function keeper is one. They are registered before ``install``: the wrapper is
chosen when the patch is made, so a run without observers pays nothing for them per call.
"""

from __future__ import annotations

import functools

from . import callsite
from .collector import Collector
from .keras_calls import argument_kinds, call_input_spec, describe_arguments, input_spec, no_tape, tape_check
from .patching import Patcher, guarded
from .phase_tracker import PhaseTracker
from .call_log import CallLog
from .timed_calls import timed_call_wrapper
from .tracing import FUNCTION_MODULE


class FunctionCallCapture:
    def __init__(self, collector: Collector, tracker: PhaseTracker, log: CallLog) -> None:
        self.collector = collector
        self.tracker = tracker
        self.log = log
        self._user_code: dict[int, tuple] = {}
        self.gates: list = []  # see gates.py; shared with the Keras call capture
        self.tape_is_empty = no_tape
        self.observers: list = []  # ``observer(function, args, kwargs, traced)``, see ``observe``
        self._installed = False

    def observe(self, observer) -> None:
        """Call ``observer(function, args, kwargs, traced)`` after each call of a user tf.function
        that returns; its errors become capture warnings. Only before ``install``."""
        if self._installed:
            raise RuntimeError("tf.function call observers are registered before the capture is installed")
        self.observers.append(observer)

    def install(self, patcher: Patcher) -> None:
        self._installed = True
        patcher.when_imported(FUNCTION_MODULE, guarded(self.collector.warn, "tf.function call timing",
                                                       self._wrap_call, patcher))

    def _wrap_call(self, patcher: Patcher, module) -> None:
        self.tape_is_empty = tape_check()
        patcher.patch(module.Function, "__call__", self._replacement)

    def _replacement(self, original):
        timed = timed_call_wrapper(original, "tf.function", self, self.skip, self.tracker, self.log)
        return self._observed(timed) if self.observers else timed

    def _observed(self, call):
        """``call`` (the timed wrapper), then the observers: outside the call's timing, and only for
        the user's functions. ``traced``: the function's cache of concrete functions grew."""
        observers, skip, warn = self.observers, self.skip, self.collector.warn

        def observed_call(function, *args, **kwargs):
            try:
                before = len(function._function_cache)  # pylint: disable=protected-access
            except (AttributeError, TypeError):
                return call(function, *args, **kwargs)
            result = call(function, *args, **kwargs)
            try:
                if skip(function):
                    return result
                traced = len(function._function_cache) > before  # pylint: disable=protected-access
            except Exception as exc:  # never break the user's call
                warn(f"tf.function call observer failed: {exc.__class__.__name__}: {exc}")
                return result
            for observer in observers:
                try:
                    observer(function, args, kwargs, traced)
                except Exception as exc:
                    warn(f"tf.function call observer failed: {exc.__class__.__name__}: {exc}")
            return result

        return functools.update_wrapper(observed_call, call)

    def skip(self, function) -> bool:
        """Only the user's own functions are timed (TensorFlow's and Keras's pass through)."""
        python_function = getattr(function, "_python_function", None)
        cached = self._user_code.get(id(python_function))
        if cached is not None and cached[0] is python_function:  # an id is only valid for its object
            return cached[1]
        return self._remember(python_function)[1]

    def identify(self, function) -> str | None:
        """``skip`` and ``target_name`` in one call (the timed-call wrapper's, per call): the
        function's name, or None for a function that is not the user's. Never raises."""
        try:
            python_function = function._python_function
        except AttributeError:
            python_function = None
        cached = self._user_code.get(id(python_function))
        if cached is None or cached[0] is not python_function:
            try:
                cached = self._remember(python_function)
            except Exception as exc:  # never break the user's call: it passes through untimed
                self.collector.warn(f"could not tell whose tf.function this is: {exc.__class__.__name__}: {exc}")
                return None
        if cached[1]:
            return None
        try:
            name = function._name
        except AttributeError:
            name = None
        return name if name.__class__ is str and name else self.target_name(function)

    def _remember(self, python_function) -> tuple:
        code = callsite.code_of(python_function)
        refused = code is None or callsite.is_library_file(code.co_filename)
        if len(self._user_code) > 10_000:
            self._user_code.clear()
        entry = self._user_code[id(python_function)] = (python_function, refused)
        return entry

    # A tf.function's name and whether it is the user's never change: the timed-call wrapper
    # remembers the last one's (timed_calls.py).
    fixed_names = True

    describe = staticmethod(describe_arguments)  # (signature, None), cached per kind of arguments
    argument_kinds = staticmethod(argument_kinds)  # what ``describe`` keys on, for the compiled wrapper

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
