"""Batches a loop takes from a tf.data iterator outside any timed call: how long it waits for input.

Why it exists: a custom training loop (``for x, y in ds: train_step(x, y)``) fetches each batch
between its steps, outside every call tfdiag times, so a slow pipeline leaves the steps fast and
the loop slow, with nothing measured. ``OwnedIterator.__next__`` is wrapped: inside a timed call
it stays the phase points' (data_adapter, phase_points.py); with no call open on the thread, its
wall time is added to the line that asked for the batch (the user's ``for``; the first user
frame out from it), and that line's pipeline is described once (its ``Dataset.map`` functions,
``producers.describe_producer``). analysis/input_bound.py reads ``loop_inputs`` for the loops of
custom training steps.

What it costs: per batch fetched outside a call, two clock reads, a frame and a dict lookup under
the collector's lock (a few microseconds, against a batch's tens of microseconds or more); inside
calls, one thread-local read.
"""

from __future__ import annotations

import random
import sys
from typing import Callable

from . import callsite
from .call_stats import RESERVOIR_SIZE
from .collector import Collector
from .patching import Patcher, guarded
from .phase_tracker import PhaseTracker
from .producers import describe_producer
from .sampling import Reservoir
from .steps import percentile

MODULE = "tensorflow.python.data.ops.iterator_ops"
MAX_SITES = 200


class _Site:
    __slots__ = ("code", "offset", "count", "total_s", "max_s", "durations", "producer")

    def __init__(self, code, offset: int, producer: dict | None) -> None:
        self.code, self.offset, self.producer = code, offset, producer
        self.count, self.total_s, self.max_s = 0, 0.0, 0.0
        self.durations = Reservoir(RESERVOIR_SIZE, random.Random(0))


class LoopInputs:
    def __init__(self, collector: Collector, tracker: PhaseTracker) -> None:
        self.collector = collector
        self.tracker = tracker
        self.sites: dict[tuple, _Site] = {}  # (id(code), offset) of the line asking for batches

    def install(self, patcher: Patcher) -> None:
        patcher.when_imported(MODULE, guarded(self.collector.warn, "loop input timing", self._install, patcher))

    def _install(self, patcher: Patcher, module) -> None:
        patcher.patch(module.OwnedIterator, "__next__", self._wrap)

    def _wrap(self, original: Callable) -> Callable:
        local, clock, lock = self.tracker.local, self.tracker.clock, self.collector.lock
        sites, get_frame, first_user_frame = self.sites, sys._getframe, callsite.first_user_frame

        def __next__(iterator):
            if getattr(local, "frames", None):  # inside a timed call: the phase points' business
                return original(iterator)
            start, batch = clock(), 1
            try:
                return original(iterator)
            except StopIteration:  # the end of a pass: its wait counts, no batch
                batch = 0
                raise
            finally:
                seconds = clock() - start
                user = first_user_frame(get_frame(1))
                if user is not None:
                    key = (id(user.f_code), user.f_lasti)
                    with lock:
                        site = sites.get(key)
                        if site is not None and site.code is user.f_code:
                            site.count += batch
                            site.total_s += seconds
                            if seconds > site.max_s:
                                site.max_s = seconds
                            site.durations.offer(seconds)
                            user = None
                    if user is not None:
                        self._first(key, user, iterator, seconds, batch)

        __next__.__wrapped__ = original
        return __next__

    def _first(self, key: tuple, user, iterator, seconds: float, batch: int) -> None:
        """The first batch asked for at a line: the line, and its pipeline described (never raises)."""
        try:
            producer = describe_producer(getattr(iterator, "_dataset", None))
        except Exception as exc:
            self.collector.warn(f"could not describe a loop's input: {exc.__class__.__name__}: {exc}")
            producer = None
        site = _Site(user.f_code, user.f_lasti, producer)
        site.count, site.total_s, site.max_s = batch, seconds, seconds
        site.durations.offer(seconds)
        with self.collector.lock:
            if key not in self.sites and len(self.sites) < MAX_SITES:
                self.sites[key] = site

    def section(self) -> list[dict]:
        """``loop_inputs``: per line, the batches it took outside timed calls and their wait."""
        with self.collector.lock:
            sites = list(self.sites.values())
        out = []
        for site in sites:
            values = sorted(site.durations.items)
            out.append({"call_site": callsite.site_text((site.code, callsite.line_at(site.code, site.offset))),
                        "count": site.count, "total_s": site.total_s, "max_s": site.max_s,
                        "median_s": percentile(values, 0.5), "producer": site.producer})
        return sorted(out, key=lambda entry: -entry["total_s"])
