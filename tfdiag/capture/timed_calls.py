"""The wrapper every timed top-level call goes through, and the per-thread log it writes to.

It runs on every call of the user's loop. An eager ``model(x)`` on a tiny model runs
through so much Keras code that, measured in that loop, each Python call of ours costs
about 0.5 us (our code and data are out of the CPU caches by then), ten times what a
micro-benchmark says. So per call the wrapper does only what cannot wait: the nesting
check, the call site's key (the input's signature, cached; the caller's code and line; the
training flag), the sampler and the gates, the phase frame, the target's name, and one
append to its thread's buffer. The call site key comes before the call: a call site's first
call is measured on its own and never profiled. Turning buffered calls into the collector's
records (call-site text, caller, statistics, samples) happens a batch at a time.
"""

from __future__ import annotations

import threading
from typing import Callable

from . import callsite, gates
from .collector import Collector
from .phase_tracker import CallFrame, PhaseTracker

FLUSH_EVERY = 256
MAX_THREAD_BUFFERS = 256


class CallLog:
    """Per-thread buffers of finished calls, handed to the collector in batches."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.local = threading.local()  # per thread: ``entry``, (thread name, buffer of finished calls)
        self._buffers: list[tuple[tuple[str, list], threading.Thread]] = []  # ((name, buffer), thread)
        self._lock = threading.Lock()

    def new_buffer(self) -> tuple[str, list]:
        thread = threading.current_thread()
        entry = self.local.entry = (thread.name, [])
        with self._lock:
            finished = []
            if len(self._buffers) >= MAX_THREAD_BUFFERS:  # a thread per request: keep the live ones
                live = []
                for entry_thread in self._buffers:
                    (live if entry_thread[1].is_alive() else finished).append(entry_thread)
                self._buffers = live
            self._buffers.append((entry, thread))
        for (name, buffer), _ in finished:
            self._flush(name, buffer)
        return entry

    def call_site(self, api: str, capture, target, args: tuple, kwargs: dict, seen) -> tuple | None:
        """Before a call (from the wrapper): ``(key, first, signature, batch, code_line, training,
        spec, name)``. ``key`` identifies the call site for the sampler; ``first``: not in ``seen``
        (the sampler's keys), so its first call, whose input is also described as a structure
        (``spec``). None if the call cannot be told (a warning says why)."""
        try:
            try:
                signature, batch = capture.describe(args, kwargs)
            except Exception as exc:  # an input we cannot describe still counts as a call
                self.collector.warn(f"could not describe a {api} input: {exc.__class__.__name__}: {exc}")
                signature, batch = (type(args[0]).__name__ if args else "()"), None
            code_line = callsite.user_code_line(2)  # 2: the wrapper's caller
            training = kwargs.get("training") is True or not capture.tape_is_empty()
            key = (api, id(target), signature, training) if code_line is None else \
                (api, id(target), signature, training, id(code_line[0]), code_line[1])
            first = key not in seen
            spec = None
            if first:
                try:
                    spec = capture.input_spec(args, kwargs)
                except Exception as exc:
                    self.collector.warn(f"could not describe a {api} input: {exc.__class__.__name__}: {exc}")
            try:
                name = capture.target_name(target)
            except Exception as exc:  # a target whose name cannot be read still counts
                self.collector.warn(f"could not name a {api} target: {exc.__class__.__name__}: {exc}")
                name = type(target).__name__
            return key, first, signature, batch, code_line, training, spec, name
        except Exception as exc:
            self.collector.warn(f"could not record a {api} call: {exc.__class__.__name__}: {exc}")
            return None

    def flush_full(self, entry: tuple[str, list]) -> None:
        """A thread's buffer reached FLUSH_EVERY calls (from the wrapper; never raises)."""
        try:
            self._flush(*entry)
        except Exception as exc:
            self.collector.warn(f"could not record calls: {exc.__class__.__name__}: {exc}")

    def observe(self, observers, api: str, target, args: tuple, kwargs: dict) -> None:
        for observer in observers:
            try:
                observer(api, target, args, kwargs)
            except Exception as exc:
                self.collector.warn(f"call observer failed: {exc.__class__.__name__}: {exc}")

    def flush_all(self) -> None:
        """Every thread's buffered calls into the collector (at the end of the diagnosis)."""
        with self._lock:
            entries = [entry for entry, _ in self._buffers]
        for name, buffer in entries:
            self._flush(name, buffer)

    def _flush(self, thread: str, buffer: list) -> None:
        with self._lock:  # the owner thread and the final flush may both get here
            pending = buffer[:]
            del buffer[:len(pending)]
        records = []
        for api, site, frame, profiled in pending:
            _, first, signature, batch, code_line, training, spec, name = site
            caller = callsite.caller_of(code_line[0]) if code_line is not None else None
            records.append((api, name, callsite.site_text(code_line), signature, frame.start,
                            frame.last - frame.start, frame.totals, thread, profiled, batch, frame.weight,
                            frame.teardown_s, training, caller, spec, first))
        self.collector.add_calls(records)


def timed_call_wrapper(original: Callable, api: str, capture, skip: Callable, tracker: PhaseTracker, log: CallLog,
                       observers=()) -> Callable:
    """``original`` timed when it is a top-level call that ``skip(target)`` does not refuse.

    ``capture`` provides ``describe(args, kwargs) -> (signature, batch)``, ``input_spec(args,
    kwargs)`` (first calls only), ``tape_is_empty()`` (False under a gradient tape: a training
    call), ``target_name(target)`` (cheap: they run per call) and ``gates`` (gates.py, read per
    call). ``observers``: called with ``(api, target, args, kwargs)`` after each timed call.
    """
    # Unsampled calls (most calls) open and close their frame inline, as begin_call/end_call
    # would: in a hot eager loop each Python call of ours costs ~0.5 us.
    begin_call = tracker.begin_call
    end_call = tracker.end_call
    sampler = tracker.sampler
    weight_of = sampler.weight
    seen = sampler.seen
    clock = tracker.clock
    call_site = log.call_site
    log_local = log.local
    new_buffer = log.new_buffer
    local = tracker.local

    def timed_call(target, *args, **kwargs):
        # Nested in another timed call (a model called inside predict() or inside the user's
        # tf.function), or refused (e.g. called while a graph is traced): part of the outer call.
        frames = getattr(local, "frames", None)
        if frames or skip(target):
            return original(target, *args, **kwargs)
        site = call_site(api, capture, target, args, kwargs, seen)
        if site is None:
            return original(target, *args, **kwargs)
        # A profiler's start is not part of the call. If it fails, the call runs unprofiled.
        taken = None
        if capture.gates:
            try:
                taken = gates.start_all(capture.gates, api, site[1])
            except Exception as exc:
                log.collector.warn(f"a profiler could not start on a {api} call: {exc.__class__.__name__}: {exc}")
        weight = weight_of(site[0], bool(taken))
        frame = None
        try:
            if weight or frames is None:
                frame = begin_call(target, weight)
                frames = local.frames  # made by begin_call on a thread's first call
            else:
                frame = CallFrame(clock(), target, 0)
                frames.append(frame)
            return original(target, *args, **kwargs)
        finally:
            if frame is not None:
                if weight:
                    end_call(frame)
                else:
                    now = clock()
                    frame.totals[frame.stack[-1]] += now - frame.last
                    frame.last = now
                    if frames[-1] is frame:
                        frames.pop()
                    elif frame in frames:
                        frames.remove(frame)
                frame.target = None  # the record keeps the target's name, not the model
            if taken:
                gates.stop_all(taken)
            if frame is not None:
                entry = getattr(log_local, "entry", None) or new_buffer()
                entry[1].append((api, site, frame, bool(taken)))
                if len(entry[1]) >= FLUSH_EVERY:
                    log.flush_full(entry)
                if observers:
                    log.observe(observers, api, target, args, kwargs)

    timed_call.__wrapped__ = original
    timed_call.__name__ = getattr(original, "__name__", api)
    timed_call.__qualname__ = getattr(original, "__qualname__", api)
    timed_call.__doc__ = getattr(original, "__doc__", None)
    return timed_call
