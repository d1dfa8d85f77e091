"""cProfile on a bounded, spread-out sample of predict-family calls.

cProfile slows a Keras ``predict()`` call by tens of percent, so it runs only
on a few calls (numbers 2, 3, 5, 9, 17, … — not a call site's first call, which traces
and is measured on its own: a later call stands in, gates.FirstCallDeferral), those calls are marked ``profiled``
and kept out of the phase split, and their stats are merged into one ``pstats`` file that
snakeviz opens.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
import time
from typing import Callable

from . import callsite
from .collector import Collector
from ..options import CPROFILE_CALLS as DEFAULT_MAX_CALLS
from .gates import FirstCallDeferral

TOP_ROWS = 25


def is_scheduled(call_number: int) -> bool:
    """Calls 2, 3, 5, 9, 17, 33, … (one more than a power of two): spread over any run length."""
    n = call_number - 1
    return n >= 1 and (n & (n - 1)) == 0


class ProfileGate:
    """Decides which calls run under cProfile and merges what they measured."""

    def __init__(self, collector: Collector, max_calls: int = DEFAULT_MAX_CALLS,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.collector = collector
        self.max_calls = max_calls
        self.clock = clock
        self.calls_seen = 0
        self.calls_profiled = 0
        self.stats: pstats.Stats | None = None
        self.blocked_by: str | None = None
        # ``exclude(number, first)``: True for a call another profiler takes (the TF Profiler's
        # window; ``first``: a call site's first call): a scheduled call that falls there moves
        # to the next free call, so no call runs under two profilers.
        self.exclude: Callable[[int, bool], bool] | None = None
        # Each profiled call's own duration and call site, to measure cProfile's overhead.
        self.profiled: list[dict] = []
        self.deferral = FirstCallDeferral()
        self._busy = False
        self._lock = threading.Lock()
        self.finished = max_calls <= 0  # no call will be profiled any more (gates.start_all stops asking)

    def start_first(self, api: str):
        """A call site's first call: counted, not profiled (if it was its turn, a later call stands
        in), unless a turn has waited ``MAX_WAIT`` calls already."""
        with self._lock:
            number = self.calls_seen + 1
            if not self.deferral.must_take(number):
                self.calls_seen = number
                if is_scheduled(number):
                    self.deferral.defer(number)
                return None
        return self.start(api, first=True)

    def start(self, api: str, first: bool = False):
        with self._lock:
            self.calls_seen += 1
            number = self.calls_seen
            if self.exclude is not None and self.exclude(number, first):
                if is_scheduled(number):
                    self.deferral.defer(number)
                return None
            if (self._busy or self.blocked_by or self.calls_profiled >= self.max_calls
                    or not (self.deferral.since is not None or is_scheduled(number))):
                return None
            self.deferral.taken()
            holder = sys.getprofile()
            if holder is not None:
                self.blocked_by = _describe(holder)
                self.finished = True
                self.collector.warn(
                    f"cProfile skipped: another profiler already holds sys.setprofile ({self.blocked_by})"
                )
                return None
            self._busy = True
            self.calls_profiled += 1
            self.finished = self.calls_profiled >= self.max_calls
        site = callsite.user_call_site(2)
        profiler = cProfile.Profile()
        try:
            profiler.enable()
        except ValueError as exc:  # another cProfile is active on this thread
            with self._lock:
                self._busy = False
                self.blocked_by = str(exc)
                self.finished = True
            self.collector.warn(f"cProfile skipped: {exc}")
            return None
        return profiler, api, site, number, self.clock()

    def stop(self, token) -> None:
        profiler, api, site, number, started = token
        elapsed = self.clock() - started
        profiler.disable()
        with self._lock:
            self._busy = False
            self.profiled.append({"api": api, "call_site": site, "call_number": number, "duration_s": elapsed})
            try:
                if self.stats is None:
                    self.stats = pstats.Stats(profiler)
                else:
                    self.stats.add(profiler)
            except TypeError:  # a profile with no calls recorded
                pass

    def save(self, path: str) -> bool:
        if self.stats is None:
            return False
        self.stats.dump_stats(path)
        return True

    def section(self) -> dict:
        """The ``cprofile`` section of the recording: top functions by cumulative and own time."""
        rows = stats_rows(self.stats) if self.stats is not None else []
        return {
            "calls_profiled": self.calls_profiled,
            "max_calls": self.max_calls,
            "blocked_by": self.blocked_by,
            "profiled": list(self.profiled),
            "top_cumulative": sorted(rows, key=lambda r: r["cumulative_s"], reverse=True)[:TOP_ROWS],
            "top_own": sorted(rows, key=lambda r: r["own_s"], reverse=True)[:TOP_ROWS],
        }


def stats_rows(stats: pstats.Stats) -> list[dict]:
    """One plain row per profiled function (snakeviz's table, as data)."""
    rows = []
    for (filename, line, name), (prim_calls, calls, own, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({
            "function": name,
            "file": filename,
            "line": line,
            "calls": calls,
            "primitive_calls": prim_calls,
            "own_s": own,
            "cumulative_s": cumulative,
        })
    return rows


def _describe(holder) -> str:
    owner = getattr(holder, "__self__", None)
    if owner is not None:
        return f"{type(owner).__module__}.{type(owner).__qualname__}"
    return getattr(holder, "__qualname__", repr(holder))
