"""Where each Keras model was created and compiled, and which model function a tf.function is.

Keras makes a model's train, test and predict functions in ``make_train_function``,
``make_test_function`` and ``make_predict_function`` (Keras 3:
``keras.src.backend.tensorflow.trainer``; tf-keras: ``tf_keras.src.engine.training``). A
tf.function created while one of those Keras frames is on the stack is that role's function
of the model the frame belongs to (its ``self``). ``Model.__init__`` and ``compile`` are
wrapped to note the user's line that created and last compiled each model, so a trace can
point at the user's code that made a model's functions trace again. These hooks run a few
times per model, never per call; models are held weakly.
"""

from __future__ import annotations

import re
import weakref

from . import callsite
from .collector import Collector
from .patching import Patcher, guarded

KERAS3_MODEL = "keras.src.models.model"
KERAS3_TRAINER = "keras.src.trainers.trainer"
TF_KERAS_TRAINING = "tf_keras.src.engine.training"
KERAS_PACKAGES = ("keras", "tf_keras")
# The Keras methods that make a model's functions, and the role of what they make.
_MAKER = re.compile(r"make_(train|test|predict)_function")
MAX_MODELS = 10_000
MAX_FRAMES = 64  # how far up from a tf.function's creation a Keras maker is looked for


class ModelRegistry:
    """Per live model: the user's line that created it and the one of its latest ``compile()``."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        # id(model) -> (weakref to the model, created_at, compiled_at); the weakref tells a reused id.
        self._models: dict[int, list] = {}
        self._maker_role: dict[int, tuple] = {}  # id(code) -> (code, role or None)

    def install(self, patcher: Patcher) -> None:
        warn = self.collector.warn
        patcher.when_imported(KERAS3_MODEL, guarded(warn, "model tracking", self._hook_init, patcher))
        patcher.when_imported(KERAS3_TRAINER, guarded(warn, "model tracking", self._hook_compile, patcher))
        patcher.when_imported(TF_KERAS_TRAINING, guarded(warn, "model tracking", self._hook_init, patcher))
        patcher.when_imported(TF_KERAS_TRAINING, guarded(warn, "model tracking", self._hook_compile, patcher))

    # -- hooks ------------------------------------------------------------------------
    def _hook_init(self, patcher: Patcher, module) -> None:
        registry = self

        def make(original):
            def __init__(model, *args, **kwargs):
                original(model, *args, **kwargs)
                registry._note(model, "created")

            __init__.__wrapped__ = original
            return __init__

        owner = getattr(module, "Model")
        patcher.patch(owner, "__init__", make)

    def _hook_compile(self, patcher: Patcher, module) -> None:
        registry = self

        def make(original):
            def compile(model, *args, **kwargs):
                result = original(model, *args, **kwargs)
                registry._note(model, "compiled")
                return result

            compile.__wrapped__ = original
            compile.__name__, compile.__qualname__ = original.__name__, original.__qualname__
            compile.__doc__ = original.__doc__
            return compile

        owner = getattr(module, "Trainer", None) or getattr(module, "Model")
        patcher.patch(owner, "compile", make)

    def _note(self, model, event: str) -> None:
        """Note the user's line of ``event`` for ``model`` (never raises into the user's code)."""
        try:
            entry = self._entry(model)
            if entry is None:
                return
            if event == "created":
                # A model's __init__ may run through several wrapped levels: the first one noted counts
                # (all see the same user line: the walk skips frames of the model's own methods).
                if entry[1] is None:
                    entry[1] = callsite.user_site_outside(model)
            else:
                entry[2] = callsite.user_site_outside(model)
        except Exception as exc:
            self.collector.warn(f"could not note a model's {event} line: {exc.__class__.__name__}: {exc}")

    def _entry(self, model) -> list | None:
        entry = self._models.get(id(model))
        if entry is not None and entry[0]() is model:
            return entry
        try:
            ref = weakref.ref(model)
        except TypeError:
            return None
        if len(self._models) >= MAX_MODELS:
            self._models.clear()
        entry = self._models[id(model)] = [ref, None, None]
        return entry

    # -- lookups ----------------------------------------------------------------------
    def lines(self, model) -> tuple[str | None, str | None]:
        """(created_at, compiled_at) of ``model`` as known now (None where not seen)."""
        entry = self._models.get(id(model))
        if entry is None or entry[0]() is not model:
            return None, None
        return entry[1], entry[2]

    def maker(self, frame) -> tuple[str, object] | None:
        """(role, model) when a Keras make_*_function frame is on the stack from ``frame`` out."""
        for _ in range(MAX_FRAMES):
            if frame is None:
                return None
            code = frame.f_code
            cached = self._maker_role.get(id(code))
            if cached is None or cached[0] is not code:
                match = _MAKER.search(code.co_name)
                role = match.group(1) if match and callsite.package_of(code.co_filename) in KERAS_PACKAGES else None
                if len(self._maker_role) > 10_000:
                    self._maker_role.clear()
                cached = self._maker_role[id(code)] = (code, role)
            if cached[1] is not None:
                model = frame.f_locals.get(code.co_varnames[0]) if code.co_argcount else None
                return cached[1], model
            frame = frame.f_back
        return None
