"""The only hooks of --verify: what it keeps while the user's code runs, to measure afterwards.

All are observers of capture's own call wrappers; verify patches nothing. ``InputKeeper``
observes the Keras call capture: per model, the APIs used, the last input and the shapes seen.
``FitKeeper`` (``fit_keeper.py``) observes the same capture's fit()/train_on_batch() calls.
``FunctionKeeper`` observes the tf.function call capture (``capture/function_calls.py``), which
says whether each call traced: per user tf.function, it keeps the inputs of the calls that made
it trace. All are bounded, and none measures anything: that runs after the hooks are gone
(``measure.py``, ``retrace_checks.py``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

from ..analysis.alternatives import USER_APIS
from ..capture import callsite
from ..capture.keras_calls import training_check
from . import specs

MAX_MODELS = 8  # models kept for verification (least recently called dropped first)
MIN_CALLS_TO_MEASURE = 2
MAX_TRAINING_NAMES = 32  # models seen only in a training loop, named in one warning
MAX_FUNCTIONS = 16  # user tf.functions whose trace-triggering inputs are kept
MAX_INPUTS = 8  # inputs kept per function (the first ones that made it trace)


def replayable(value) -> bool:
    """A concrete array or eager tensor: something that can be fed again after the run."""
    import numpy as np
    import tensorflow as tf

    return isinstance(value, np.ndarray) or (isinstance(value, tf.Tensor) and hasattr(value, "numpy"))


def _eager_input(x) -> tuple[bool, str | None]:
    """(usable, why-not): only concrete arrays/eager tensors can be replayed later; why-not is
    None for calls that are not real calls (made while tracing or building a model)."""
    import tensorflow as tf

    if not tf.executing_eagerly():
        return False, None
    found = specs.input_leaves(x)
    if not found:
        return False, "no input"
    for leaf in found:
        if replayable(leaf):
            continue
        kind = type(leaf).__name__
        if "KerasTensor" in kind or isinstance(leaf, tf.Tensor):
            return False, None  # symbolic (building a functional model): not a real call
        return False, f"input is a {kind}, which cannot be replayed (only arrays and tensors can)"
    return True, None


class Seen:
    """One model as the user called it."""
    __slots__ = ("model", "target", "counts", "call_site", "last_input", "spec", "unsupported", "order",
                 "batch_size")

    def __init__(self, model, target: str) -> None:
        self.model = model
        self.target = target
        self.counts: dict[str, int] = {}
        self.call_site = ""
        self.last_input = None
        self.spec = None
        self.unsupported: str | None = None
        self.order = 0
        self.batch_size: int | None = None  # predict()'s batch_size, as the user passed it

    def user_path(self) -> str:
        return max(USER_APIS, key=lambda api: (self.counts.get(api, 0), -USER_APIS.index(api)))


class RecentModels:
    """A keeper's per-model records (``make(model, name)``, with ``model``, ``target`` and ``order``),
    at most ``max_models``: the least recently used is dropped first, its name kept in ``dropped``.
    Callers hold their own lock."""

    def __init__(self, make: Callable, max_models: int) -> None:
        self.make = make
        self.max_models = max_models
        self.records: OrderedDict[int, object] = OrderedDict()
        self.order = 0
        self.dropped: list[str] = []

    def get(self, model):
        """The model's record (made on first use), now the most recently used."""
        key = id(model)
        record = self.records.get(key)
        if record is None or record.model is not model:
            record = self.records[key] = self.make(model, str(getattr(model, "name", type(model).__name__)))
            while len(self.records) > self.max_models:
                _, old = self.records.popitem(last=False)
                self.dropped.append(old.target)
        self.records.move_to_end(key)
        self.order += 1
        record.order = self.order
        return record

    def drain(self) -> list:
        """Every record; the table forgets them."""
        records = list(self.records.values())
        self.records.clear()
        return records


class InputKeeper:
    """A Keras call observer: per model, the APIs used, the last input and the shapes seen.

    It holds strong references to at most MAX_MODELS models (the least recently called ones
    are dropped): the diagnosed script's globals may be gone by the time verification runs
    after it, and a weak reference would then measure nothing. One input per model is kept,
    so memory stays bounded. Calls in a training loop are not kept.
    """

    def __init__(self, max_models: int = MAX_MODELS) -> None:
        self._lock = threading.Lock()
        self.models = RecentModels(Seen, max_models)
        self.training: set[str] = set()  # models called in a training loop
        self._in_training: Callable[..., bool] | None = None  # the capture's own test, made once TF is in

    def __call__(self, api: str, model, args, kwargs) -> None:
        if api not in USER_APIS:  # fit(), evaluate() and the like: FitKeeper's
            return
        if self._in_training is None:
            self._in_training = training_check()
        if self._in_training(kwargs, model, args):  # training=True (keyword or position) or a tape: no inference advice
            if len(self.training) < MAX_TRAINING_NAMES:
                self.training.add(str(getattr(model, "name", type(model).__name__)))
            return
        x = args[0] if args else kwargs.get("x", kwargs.get("inputs"))
        usable, why = _eager_input(x)
        if not usable and why is None:
            return
        spec = None
        if usable:
            try:
                spec = specs.input_spec(x)
            except specs.Unsupported as exc:
                usable, why = False, str(exc)
        site = callsite.user_call_site(3)
        with self._lock:
            seen = self.models.get(model)
            seen.counts[api] = seen.counts.get(api, 0) + 1
            if api == seen.user_path():
                seen.call_site = site
            if api == "predict":
                size = kwargs.get("batch_size", args[1] if len(args) > 1 else None)
                seen.batch_size = size if isinstance(size, int) and not isinstance(size, bool) else None
            if usable:
                seen.last_input = x
                seen.spec = spec if seen.spec is None else specs.merge_specs(seen.spec, spec)
                seen.unsupported = None
            elif seen.last_input is None:
                seen.unsupported = why

    def take(self) -> list[Seen]:
        """Models worth measuring, most called first; the keeper forgets them all."""
        with self._lock:
            seen = self.models.drain()
        seen = [s for s in seen if sum(s.counts.values()) >= MIN_CALLS_TO_MEASURE]
        seen.sort(key=lambda s: (-sum(s.counts.values()), s.order))
        return seen


class Traced:
    """One user tf.function and the inputs that made it trace."""
    __slots__ = ("function", "name", "defined_at", "inputs", "traces", "unsupported")

    def __init__(self, function, name: str, defined_at: str) -> None:
        self.function = function
        self.name = name
        self.defined_at = defined_at
        self.inputs: list[tuple] = []
        self.traces = 0
        self.unsupported: str | None = None


class FunctionKeeper:
    """A tf.function call observer: keeps, per user tf.function, the inputs of the calls that traced
    it (bounded), so that --verify can re-run it with a generated input_signature after the run.
    Capture's function-call wrapper reports each user tf.function call (``observe``); the keeper
    patches nothing itself."""

    def __init__(self, max_functions: int = MAX_FUNCTIONS, max_inputs: int = MAX_INPUTS) -> None:
        self.max_functions = max_functions
        self.max_inputs = max_inputs
        self._lock = threading.Lock()
        self._kept: dict[int, Traced] = {}

    def __call__(self, function, args: tuple, kwargs: dict, traced: bool) -> None:
        if traced:
            self._note(function, args, kwargs)

    @staticmethod
    def _site(function) -> tuple[str, str]:
        """(name, defined_at) of a user tf.function."""
        code = callsite.code_of(getattr(function, "_python_function", None))
        name = str(getattr(function, "_name", None) or getattr(code, "co_name", "?"))
        return name, (callsite.code_site(code) if code is not None else "<unknown>")

    def _note(self, function, args, kwargs) -> None:
        import tensorflow as tf

        if not tf.executing_eagerly():
            return  # called from inside another trace: symbolic inputs cannot be replayed
        with self._lock:
            kept = self._kept.get(id(function))
            if kept is None or kept.function is not function:
                if len(self._kept) >= self.max_functions:
                    return
                kept = self._kept[id(function)] = Traced(function, *self._site(function))
            kept.traces += 1
            if kept.unsupported:
                return
            if kwargs:
                kept.unsupported = "called with keyword arguments"
            elif not all(replayable(a) for a in args):
                kept.unsupported = ("an argument is not a tensor or array (a Python value or object is "
                                    "part of the trace key; the finding's fix is to pass a tensor)")
            elif len(kept.inputs) < self.max_inputs:
                kept.inputs.append(tuple(args))

    def take(self) -> list[Traced]:
        """The functions that traced more than once; the keeper forgets them all."""
        with self._lock:
            kept = [k for k in self._kept.values() if k.traces >= 2]
            self._kept.clear()
        return kept
