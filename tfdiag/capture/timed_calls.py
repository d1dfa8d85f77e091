"""The wrapper every timed top-level call goes through, and the per-thread log it writes to.

It runs on every call of the user's loop. An eager ``model(x)`` on a tiny model runs
through so much Keras code that, measured in that loop, each Python call of ours costs
about 0.5 us (our code and data are out of the CPU caches by then), ten times what a
micro-benchmark says. So per call the wrapper does only what cannot wait, inline where it
can: the nesting check, the call site (the input's signature, cached; the caller's code and
line; the training flag; the target's name), one lookup of the call site's sampling
countdown (sampling.py; counted down in place), the gates, the phase frame, and one append
to its thread's buffer. The call site comes before the call: a
call site's first call is measured on its own and never profiled. Turning buffered calls
into the collector's records (call-site text, caller, statistics, samples) happens a batch
at a time.
"""

from __future__ import annotations

import sys
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

    def first_spec(self, api: str, capture, args: tuple, kwargs: dict):
        """A call site's first call: its input described as a structure (None, with a warning, if it cannot be)."""
        try:
            return capture.input_spec(args, kwargs)
        except Exception as exc:
            self.collector.warn(f"could not describe a {api} input: {exc.__class__.__name__}: {exc}")
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
        site_text, caller_of = callsite.site_text, callsite.caller_of
        last, text = None, None  # a loop's calls come from one line: its text is looked up once per run of them
        for api, signature, batch, code_line, training, name, frame, profiled, first, spec in pending:
            # A call site's first call brings what is said once per call site: its caller, its input's structure.
            caller = caller_of(code_line[0]) if first and code_line is not None else None
            if code_line is None or last is None or code_line[0] is not last[0] or code_line[1] != last[1]:
                last, text = code_line, site_text(code_line)
            records.append((api, name, text, signature, frame.start,
                            frame.last - frame.start, frame.totals, thread, profiled, batch, frame.weight,
                            frame.teardown_s, training, caller, spec, first, frame.extra))
        self.collector.add_calls(records)


def timed_call_wrapper(original: Callable, api: str, capture, skip: Callable, tracker: PhaseTracker, log: CallLog,
                       observers=()) -> Callable:
    """``original`` timed when it is a top-level call that ``skip(target)`` does not refuse.

    ``capture`` provides ``describe(args, kwargs) -> (signature, batch)``, ``input_spec(args,
    kwargs)`` (first calls only), ``tape_is_empty()`` (False under a gradient tape: a training
    call), ``target_name(target)`` (cheap: they run per call), ``gates`` (gates.py, read per
    call) and, optionally, ``training_argument(api)``: None, or ``positional(target, args)``,
    True when the call passed ``training=True`` by position. ``observers``: called with
    ``(api, target, args, kwargs)`` after each timed call.
    """
    # Unsampled calls (most calls) read their call site, open and close their frame inline, as
    # begin_call/end_call would, and count down their call site's sampling in place, as
    # sampler.weight would: in a hot eager loop each Python call of ours costs ~0.5 us.
    begin_call = tracker.begin_call
    end_call = tracker.end_call
    sampler = tracker.sampler
    sites = sampler.sites
    first_call = sampler.first_call
    sampled = sampler.sampled
    clock = tracker.clock
    log_local = log.local
    new_buffer = log.new_buffer
    local = tracker.local
    warn = log.collector.warn
    # What ``capture`` provides for the call site, looked up once.
    describe = capture.describe
    tape_is_empty = capture.tape_is_empty
    training_argument = getattr(capture, "training_argument", None)
    positional = training_argument(api) if training_argument is not None else None
    target_name = capture.target_name
    first_user_frame = callsite.first_user_frame
    get_frame = sys._getframe

    def timed_call(target, *args, **kwargs):
        # Nested in another timed call (a model called inside predict() or inside the user's
        # tf.function), or refused (e.g. called while a graph is traced): part of the outer call.
        frames = getattr(local, "frames", None)
        if frames or skip(target):
            return original(target, *args, **kwargs)
        # The call site (inline, not a function of its own: see the module's docstring).
        try:
            try:
                signature, batch = describe(args, kwargs)
            except Exception as exc:  # an input we cannot describe still counts as a call
                warn(f"could not describe a {api} input: {exc.__class__.__name__}: {exc}")
                signature, batch = (type(args[0]).__name__ if args else "()"), None
            caller = first_user_frame(get_frame(1))  # from this wrapper's caller out
            # A training call: ``training=True`` (by keyword, or by position where the API takes
            # it), or under a recording gradient tape.
            training = ((kwargs and kwargs.get("training") is True) or not tape_is_empty()
                        or (positional is not None and len(args) > 1 and positional(target, args)))
            if caller is None:
                code_line = None
                key = (api, id(target), signature, training)
            else:
                code, line = caller.f_code, caller.f_lineno
                code_line = (code, line)
                key = (api, id(target), signature, training, id(code), line)
            try:
                name = target_name(target)
            except Exception as exc:  # a target whose name cannot be read still counts
                warn(f"could not name a {api} target: {exc.__class__.__name__}: {exc}")
                name = type(target).__name__
        except Exception as exc:
            warn(f"could not record a {api} call: {exc.__class__.__name__}: {exc}")
            return original(target, *args, **kwargs)
        state = sites.get(key)
        # A profiler's start is not part of the call. If it fails, the call runs unprofiled.
        taken = None
        profiled = False
        if capture.gates:
            try:
                taken = gates.start_all(capture.gates, api, state is None)
                profiled = bool(taken)
            except Exception as exc:
                warn(f"a profiler could not start on a {api} call: {exc.__class__.__name__}: {exc}")
        spec = None
        if state is None:  # the call site's first call: sampled unless a profiler had to take it
            spec = log.first_spec(api, capture, args, kwargs)
            first_call(key)
            weight = 0 if profiled else 1
        elif profiled:
            weight = 0
        else:
            left = state[0] - 1
            if left > 0:
                state[0] = left
                weight = 0
            else:
                weight = sampled(state)
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
                entry[1].append((api, signature, batch, code_line, training, name, frame, profiled,
                                 state is None, spec))
                if len(entry[1]) >= FLUSH_EVERY:
                    log.flush_full(entry)
                if observers:
                    log.observe(observers, api, target, args, kwargs)

    timed_call.__wrapped__ = original
    timed_call.__name__ = getattr(original, "__name__", api)
    timed_call.__qualname__ = getattr(original, "__qualname__", api)
    timed_call.__doc__ = getattr(original, "__doc__", None)
    return timed_call
