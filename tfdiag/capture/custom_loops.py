"""Custom training loops: a user's step that runs a GradientTape and applies gradients.

Why it exists: a hand-written loop calls no Keras training API, so nothing else sees its steps.
What every such step does is apply gradients, so the optimizers' entry points are hooked
(Keras 3: ``BaseOptimizer.apply``, which ``apply_gradients`` calls; tf-keras: ``Optimizer`` and
``_BaseOptimizer.apply_gradients``, the legacy ``OptimizerV2.apply_gradients``). Inside fit()
(its call frame has a StepLog) nothing is done. While a graph is traced, the function being
traced is marked a training step (tracing.py). Run eagerly, outside any timed call, the step
function is the first user frame calling the optimizer (the loop's module if inline); its
caller's line is the call site, and the wall time between successive applications at that
call site is the step's time, reported as a ``train_step`` call entry.

What it costs: per eager application (itself hundreds of microseconds), a walk to the user's
frame, a clock read and a dict lookup (a few microseconds); per traced application, one list write.
"""

from __future__ import annotations

import random
import sys
import threading
from typing import Callable

from ..recording import PHASES
from . import callsite
from .call_stats import RESERVOIR_SIZE
from .collector import Collector
from .patching import Patcher, guarded
from .phase_tracker import PhaseTracker
from .sampling import Reservoir
from .steps import StepLog, percentile

MAX_SITES = 1000

# (module, class, method)
OPTIMIZER_POINTS = (
    ("keras.src.optimizers.base_optimizer", "BaseOptimizer", "apply"),
    ("tf_keras.src.optimizers.optimizer", "_BaseOptimizer", "apply_gradients"),
    ("tf_keras.src.optimizers.optimizer", "Optimizer", "apply_gradients"),
    ("tf_keras.src.optimizers.legacy.optimizer_v2", "OptimizerV2", "apply_gradients"),
)


class _StepSite:
    __slots__ = ("codes", "name", "defined_at", "call_site", "count", "last", "first_s", "total_s", "max_s",
                 "intervals", "line")

    def __init__(self, codes: tuple, name: str, defined_at: str, call_site: str, now: float, line: int) -> None:
        self.codes = codes  # (step function's code, calling code): an id is only valid for its object
        # The line of the step's first gradient application: a step that applies two optimizers
        # (a GAN's generator and discriminator) is still one step, begun at that line.
        self.line = line
        self.name, self.defined_at, self.call_site = name, defined_at, call_site
        self.count = 1
        self.last = now
        self.first_s = self.total_s = self.max_s = 0.0
        self.intervals = Reservoir(RESERVOIR_SIZE, random.Random(3))

    def entry(self) -> dict:
        values = sorted(self.intervals.items)
        zeros = dict.fromkeys(PHASES, 0.0)
        return {"api": "train_step", "target": self.name, "call_site": self.call_site,
                "defined_at": self.defined_at, "eager": True, "training": True, "input_signature": "",
                "count": self.count, "total_s": self.total_s + self.first_s, "first_s": self.first_s,
                "median_s": percentile(values, 0.5), "p95_s": percentile(values, 0.95), "max_s": self.max_s,
                "phases": zeros, "first_phases": {}, "steady_phases": {}, "phase_calls": 0}


class CustomLoopCapture:
    """``eager``: also time eager steps (False with timing off: traced steps are only marked)."""

    def __init__(self, collector: Collector, tracker: PhaseTracker, traces, eager: bool = True) -> None:
        self.collector = collector
        self.tracker = tracker
        self.traces = traces  # the TraceCapture: ``mark_training_step()``
        self.eager = eager
        self.sites: dict = {}
        self._local = threading.local()  # ``busy``: inside an optimizer entry point on this thread
        if eager:
            collector.call_providers.append(self.entries)

    def install(self, patcher: Patcher) -> None:
        by_module: dict = {}
        for module, cls, method in OPTIMIZER_POINTS:
            by_module.setdefault(module, []).append((cls, method))
        for module, points in by_module.items():
            patcher.when_imported(module, guarded(self.collector.warn, "custom training loop capture",
                                                  self._install, patcher, points))

    def _install(self, patcher: Patcher, points, module) -> None:
        from tensorflow.python.eager import context

        for cls, method in points:
            patcher.patch(getattr(module, cls), method, lambda orig: self._wrap(orig, context.executing_eagerly))

    def _wrap(self, original: Callable, executing_eagerly: Callable) -> Callable:
        local, tracker_local, warn = self._local, self.tracker.local, self.collector.warn

        def apply(optimizer, *args, **kwargs):
            if getattr(local, "busy", False):
                return original(optimizer, *args, **kwargs)
            frames = getattr(tracker_local, "frames", None)
            if frames and frames[-1].extra.__class__ is StepLog:  # fit() and friends: theirs
                return original(optimizer, *args, **kwargs)
            local.busy = True
            try:
                if not executing_eagerly():
                    self.traces.mark_training_step()
                elif self.eager and not frames:
                    self._eager_step(sys._getframe(1))
            except Exception as exc:
                warn(f"could not follow a training step: {exc.__class__.__name__}: {exc}")
            try:
                return original(optimizer, *args, **kwargs)
            finally:
                local.busy = False

        apply.__wrapped__ = original
        apply.__name__ = getattr(original, "__name__", "apply")
        apply.__qualname__ = getattr(original, "__qualname__", "apply")
        apply.__doc__ = getattr(original, "__doc__", None)
        return apply

    def _eager_step(self, frame) -> None:
        now = self.tracker.clock()
        user = callsite.first_user_frame(frame)
        if user is None:
            return
        code = user.f_code
        caller = user if code.co_name == "<module>" else (callsite.first_user_frame(user.f_back) or user)
        key = (id(code), id(caller.f_code), caller.f_lineno)
        site = self.sites.get(key)
        if site is not None and site.codes[0] is code and site.codes[1] is caller.f_code:
            if user.f_lineno != site.line:
                return
            interval = now - site.last
            site.last = now
            site.count += 1
            if site.count == 2:
                site.first_s = interval
                return
            site.total_s += interval
            site.max_s = max(site.max_s, interval)
            site.intervals.offer(interval)
            return
        if len(self.sites) >= MAX_SITES:
            return
        name = "<module>" if code.co_name == "<module>" else getattr(code, "co_qualname", code.co_name)
        self.sites[key] = _StepSite((code, caller.f_code), name, callsite.code_site(code),
                                    callsite.site_text((caller.f_code, caller.f_lineno)), now, user.f_lineno)

    def entries(self) -> list:
        """The ``train_step`` calls entries (the collector's call provider)."""
        return [site.entry() for site in list(self.sites.values())]
