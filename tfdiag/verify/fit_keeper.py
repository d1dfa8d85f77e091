"""What --verify keeps of the user's fit() and train_on_batch() calls, to time training what-ifs
on a clone after the run (``training.py``).

An observer of capture's Keras call wrapper, called after each top-level call: per model, the
model, the call site, the settings that matter (batch_size, steps_per_execution, run_eagerly,
jit_compile) and where the batches come from. Arrays are sliced now (the first MAX_BATCHES
batches, copied: a few batches of memory, and later in-place changes do not matter); a
tf.data.Dataset or a PyDataset/Sequence is kept by reference and read only after the capture
hooks are gone (so its work never enters the recording); a Python generator or iterator has
been consumed and cannot be replayed, which is recorded as the reason. Nothing is measured here.

The model is held by a strong reference (at most MAX_FITTED models): a script run by the CLI
has dropped its globals by the time verification runs, and a weak reference would then
measure nothing (``keepers.InputKeeper`` does the same).
"""

from __future__ import annotations

import threading

from ..capture import callsite
from ..capture.training_calls import model_settings
from .keepers import RecentModels, replayable

MAX_FITTED = 4  # models whose training is kept (least recently fitted dropped first)
MAX_BATCHES = 8  # user batches kept per model
DEFAULT_FIT_BATCH = 32  # fit()'s batch_size when the user passes none
_FIT_ARGS = ("x", "y", "batch_size")  # fit()'s first positional parameters (Keras 3 and tf-keras)
_BATCH_ARGS = ("x", "y", "sample_weight")  # train_on_batch()'s


class Fitted:
    """One model as the user trained it."""
    __slots__ = ("model", "target", "api", "call_site", "source", "kind", "batches", "batch_size",
                 "settings", "unsupported", "workers", "calls", "order")

    def __init__(self, model, target: str) -> None:
        self.model = model
        self.target = target
        self.api = "fit"
        self.call_site = ""
        self.source = None  # a tf.data.Dataset or PyDataset/Sequence, read after the run
        self.kind: str | None = None  # "arrays", "tf.data", "PyDataset", "Sequence", "generator"
        self.batches: list[tuple] = []  # (x, y[, sample_weight]) batches copied from arrays
        self.batch_size: int | None = None
        self.settings: dict = {}
        self.unsupported: str | None = None
        self.workers: int | None = None
        self.calls = 0
        self.order = 0


def settings_of(model) -> dict:
    """The model's compile settings as capture reads them, with steps_per_execution 1 where unknown."""
    settings = model_settings(model)
    settings["steps_per_execution"] = settings["steps_per_execution"] or 1
    return settings


def _bound(args: tuple, kwargs: dict, names: tuple[str, ...]) -> dict:
    bound = {name: value for name, value in zip(names, args)}
    bound.update({k: kwargs[k] for k in names if k in kwargs})
    return bound


def classify(x) -> str:
    """Where fit() read its batches from."""
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        return "tf.data"
    if hasattr(x, "__getitem__") and hasattr(x, "__len__") and hasattr(x, "on_epoch_end"):
        return "PyDataset" if any(c.__name__ == "PyDataset" for c in type(x).__mro__) else "Sequence"
    leaves = _leaves(x)
    if leaves and all(replayable(leaf) for leaf in leaves):
        return "arrays"
    if hasattr(x, "__next__") or hasattr(x, "gi_frame"):
        return "generator"
    return type(x).__name__


def _leaves(value) -> list:
    import tensorflow as tf

    if value is None:
        return []
    try:
        return tf.nest.flatten(value)
    except (TypeError, ValueError):
        return [value]


def _head(value, rows: int):
    """The first ``rows`` rows of every array in ``value``, copied (None stays None)."""
    import numpy as np
    import tensorflow as tf

    if value is None:
        return None
    return tf.nest.map_structure(lambda a: np.array(a[:rows].numpy() if hasattr(a, "numpy") else a[:rows]), value)


def slice_batches(x, y, sample_weight, batch_size: int, count: int) -> list[tuple]:
    """The first ``count`` full batches of array inputs, copied, as fit() would cut them (no shuffle)."""
    import tensorflow as tf

    rows = min(len(leaf) for leaf in _leaves(x))
    count = min(count, rows // batch_size) or (1 if rows else 0)
    size = batch_size if rows >= batch_size else rows
    head = [_head(v, size * count) for v in (x, y, sample_weight)]
    batches = []
    for i in range(count):
        part = [None if v is None else tf.nest.map_structure(lambda a: a[i * size:(i + 1) * size], v)
                for v in head]
        while part[-1] is None:
            part.pop()
        batches.append(tuple(part))
    return batches


class FitKeeper:
    """A Keras call observer for fit() and train_on_batch(); see the module docstring."""

    def __init__(self, max_models: int = MAX_FITTED, max_batches: int = MAX_BATCHES) -> None:
        self.max_batches = max_batches
        self._lock = threading.Lock()
        self.models = RecentModels(Fitted, max_models)

    def __call__(self, api: str, model, args, kwargs) -> None:
        if api not in ("fit", "train_on_batch"):
            return
        import tensorflow as tf

        if not tf.executing_eagerly():
            return
        site = callsite.user_call_site(3)
        with self._lock:
            kept = self.models.get(model)
        kept.calls += 1
        if kept.calls > 1 and kept.api == api == "fit":
            return  # kept from the first fit() call: the first batches are what is replayed
        switched = kept.calls > 1 and kept.api != api
        kept.api, kept.call_site = api, site
        kept.settings = settings_of(model)
        if api == "fit":
            self._note_fit(kept, _bound(args, kwargs, _FIT_ARGS), kwargs)
        else:
            self._note_batch(kept, _bound(args, kwargs, _BATCH_ARGS), switched)

    def _note_fit(self, kept: Fitted, bound: dict, kwargs: dict) -> None:
        x = bound.get("x")
        kind = kept.kind = classify(x)
        size = bound.get("batch_size")
        kept.batch_size = size if isinstance(size, int) and not isinstance(size, bool) else None
        kept.batches, kept.source, kept.unsupported = [], None, None
        if kind == "arrays":
            kept.batch_size = kept.batch_size or DEFAULT_FIT_BATCH
            kept.batches = slice_batches(x, bound.get("y"), kwargs.get("sample_weight"), kept.batch_size,
                                         self.max_batches)
        elif kind in ("tf.data", "PyDataset", "Sequence"):
            kept.source = x
            workers = getattr(x, "workers", None) if kind == "PyDataset" else kwargs.get("workers")
            kept.workers = workers if isinstance(workers, int) else 1
        elif kind == "generator":
            kept.unsupported = ("fit() read a Python generator, which was consumed and cannot be replayed "
                                "(a PyDataset or tf.data input can be)")
        else:
            kept.unsupported = f"fit() read a {kind}, which tfdiag cannot replay"

    def _note_batch(self, kept: Fitted, bound: dict, switched: bool) -> None:
        x = bound.get("x")
        if kept.kind != "arrays" or switched:  # the batches of the API used last
            kept.kind, kept.batches, kept.source, kept.unsupported = "arrays", [], None, None
        if classify(x) != "arrays":
            kept.unsupported = kept.unsupported or "train_on_batch() was given something other than arrays"
            return
        if len(kept.batches) < self.max_batches:
            rows = min(len(leaf) for leaf in _leaves(x))
            kept.batch_size = rows
            kept.batches.extend(slice_batches(x, bound.get("y"), bound.get("sample_weight"), rows, 1))

    def take(self) -> list[Fitted]:
        """The models trained, most recently trained first; the keeper forgets them all."""
        with self._lock:
            kept = self.models.drain()
        kept.sort(key=lambda k: -k.order)
        return kept
