"""The wrapper every timed top-level call goes through, and the per-thread log it writes to.

It runs on every call of the user's loop. An eager ``model(x)`` on a tiny model runs
through so much Keras code that, measured in that loop, each Python call of ours costs
about 0.5 us (our code and data are out of the CPU caches by then), ten times what a
micro-benchmark says. So per call the wrapper does only what cannot wait, inline where it
can: the nesting check, the call site (the input's signature, cached; the caller's code and
line; the training flag; the target's name), one lookup of the call site's sampling
countdown (sampling.py; counted down in place), the gates, the phase frame, and one extend
of its thread's buffer. The call site comes before the call: a
call site's first call is measured on its own and never profiled. Turning buffered calls
into the collector's records (call-site text, caller, statistics, samples) happens a batch
at a time.

Most calls go shorter still: an unsampled, unprofiled call at a call site whose first call
the collector has (linked at flush time: the sampler state's third item) makes no record.
It pushes its thread's spare ``LightFrame`` (nesting and graph creation work on it as on a
CallFrame; reused while calls leave it untouched) and, unless it traced, appends its start, duration and thread to its call
site's ``light`` list (one ``extend``, no lock); every LIGHT_EVERY calls, and at the end,
``CallStats.add_light`` adds them to the count, total and maximum, offers them to the
reservoir and the timeline, a batch at a time. In place, under the collector's lock and
call by call, that bookkeeping was about 120 of the 510 opcodes such a call cost on a
tf.function loop (TF 2.21, Python 3.11), and each of them costs far more there than in a
micro-benchmark (see below).

Three costs that do not show in the wrapper's own lines, measured on a tf.function loop (about
120 us per call, Python 3.11): a buffered call must hold no object the garbage collector tracks
(a buffer of tuples and frames made Python's collector run about once per 240 calls, 0.9 us per
call, and, by promoting them, brought on full collections: one of 0.15-0.2 s in a 30,000-call
run, 7 us per call; the loop without tfdiag collected nothing), so a
thread's buffer is a flat list of plain values, FIELDS per call; the caller's line is read as its
bytecode offset (``f_lasti``), turned into a line number once per call site at flush time:
``f_lineno`` walks the caller's line table on every call (about 1 us at line 300 of a script);
and TensorFlow reads the line of every frame on the stack for each op it runs, so the wrapper's
calls of ``original`` come first in its bytecode.
"""

from __future__ import annotations

import sys
import threading
import weakref
from itertools import compress, repeat
from typing import Callable

from . import callsite, gates
from .collector import Collector
from ..recording import PHASES
from .phase_tracker import CallFrame, LightFrame, PhaseTracker

FLUSH_EVERY = 256
LIGHT_EVERY = 64  # calls kept in place at a call site between two ``CallLog.settle``
MAX_THREAD_BUFFERS = 256
# Values per call in a thread's buffer, in this order (see ``_flush``): api, signature, batch,
# caller's code, its bytecode offset, training, target name, start, duration, phase totals,
# profiled, weight, teardown seconds, the call site's sampler state on its first call (else None), input
# spec, the frame's extra.
FIELDS = 16


class CallLog:
    """Per-thread buffers of finished calls, handed to the collector in batches."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.local = threading.local()  # per thread: ``entry``, (thread name, flat buffer of finished calls)
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

    def buffer(self, values: tuple, now: bool = False) -> None:
        """One finished call's FIELDS values into this thread's buffer (the wrapper's rare paths);
        ``now``: and into the collector at once (a call kept in place that traced: its call site's
        count stays current for the memory probe, which reads it at sampled calls)."""
        try:
            entry = self.local.entry
        except AttributeError:
            entry = self.new_buffer()
        entry[1].extend(values)
        if now or len(entry[1]) >= FLUSH_EVERY * FIELDS:
            self.flush_full(entry)

    def link(self, state: list):
        """A call site's statistics for the wrapper to keep its unsampled calls in place
        (``state``: its sampler state): once, at its first unsampled call, this thread's buffer is
        flushed (its first call is most often there); False while the collector does not have it
        (a flush from the thread that has it links it later)."""
        entry = getattr(self.local, "entry", None)
        if entry is not None:
            self.flush_full(entry)
        if state[2] is None:
            state[2] = False
        return state[2]

    def settle(self, stats) -> None:
        """A call site's calls kept in place into its statistics (from the wrapper; never raises)."""
        collector = self.collector
        try:
            with collector.lock:
                stats.add_light(collector.timeline)
        except Exception as exc:
            collector.warn(f"could not record calls: {exc.__class__.__name__}: {exc}")

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
        """A thread's buffered calls, as the collector's records (column by column, in C where it
        can be: a flush runs once per FLUSH_EVERY calls, and its cost per call counts as the
        wrapper's does)."""
        with self._lock:  # the owner thread and the final flush may both get here
            pending = buffer[:]
            del buffer[:len(pending)]
        count = len(pending) // FIELDS
        if not count:
            return
        (apis, signatures, batches, codes, offsets, trainings, names, starts, durations, totals, profiled,
         weights, teardowns, sites, specs, extras) = (pending[index::FIELDS] for index in range(FIELDS))
        firsts = [site is not None for site in sites]
        # Call-site texts, looked up once per calling code object and offset (a loop's calls share one).
        keys = list(zip(map(id, codes), offsets))
        site_text, line_at = callsite.site_text, callsite.line_at
        texts = {key: site_text(None if code is None else (code, line_at(code, key[1])))
                 for key, code in dict(zip(keys, codes)).items()}
        # A call site's first call brings what is said once per call site: its caller.
        callers = [None] * count
        for index in compress(range(count), firsts):
            if codes[index] is not None:
                callers[index] = callsite.caller_of(codes[index])
        site_texts = list(map(texts.__getitem__, keys))
        self.collector.add_calls(list(zip(apis, names, site_texts, signatures, starts, durations,
                                          totals, repeat(thread, count), profiled, batches, weights, teardowns,
                                          trainings, callers, specs, firsts, extras)))
        # Each first call's sampler state gets its call site's statistics: the wrapper keeps the
        # site's unsampled calls in them from now on.
        calls = self.collector.calls
        for index in compress(range(count), firsts):
            stats = calls.get((apis[index], names[index], site_texts[index], signatures[index], trainings[index]))
            if stats is not None:
                sites[index][2] = stats


def timed_call_wrapper(original: Callable, api: str, capture, skip: Callable, tracker: PhaseTracker, log: CallLog,
                       observers=()) -> Callable:
    """``original`` timed when it is a top-level call that ``skip(target)`` does not refuse.

    ``capture`` provides ``describe(args, kwargs) -> (signature, batch)``, ``input_spec(args,
    kwargs)`` (first calls only), ``tape_is_empty()`` (False under a gradient tape: a training
    call), ``target_name(target)`` (cheap: they run per call), ``gates`` (gates.py, read per
    call) and, optionally, ``training_argument(api)``: None, or ``positional(target, args)``,
    True when the call passed ``training=True`` by position; and ``identify(target)``: the
    target's name, or None where ``skip`` refuses it (one call instead of two; it must never
    raise), else made of ``skip`` and ``target_name``. ``observers``: called with
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
    code_is_library = callsite.CODE_IS_LIBRARY
    get_frame = sys._getframe
    flush_size = FLUSH_EVERY * FIELDS
    light_size = LIGHT_EVERY * 3
    untouched = dict.fromkeys(PHASES, 0.0)  # a light frame's totals and stack, as made and as left
    at_rest = ["other"]

    # The rare paths, out of the wrapper's body: TensorFlow captures the Python stack on each
    # op it runs, and the line of each frame costs in proportion to the code before it.
    def undescribed(api, args, exc):
        warn(f"could not describe a {api} input: {exc.__class__.__name__}: {exc}")
        return (type(args[0]).__name__ if args else "()"), None

    # A capture whose targets keep their names and refusals (``fixed_names``: tf.functions) has the
    # last target named remembered: a loop calls one target, and naming it is a call of ~40 opcodes.
    fixed_names = getattr(capture, "fixed_names", False)
    last = (lambda: None, None)  # (a weak reference to the last target named, its name)
    # The last calling code found to be the user's (a loop calls from one line): its frame is the
    # call site, with no lookup.
    user_code = None

    def remember(target, name):
        nonlocal last
        try:
            last = (weakref.ref(target), name)  # one tuple: a thread reads both or neither
        except TypeError:  # a target with no weak references is named on every call
            pass

    identify = getattr(capture, "identify", None)
    if identify is None:
        def identify(target):
            """The target's name, or None when ``skip`` refuses it (one call per call: both, at once)."""
            if skip(target):
                return None
            try:
                return target_name(target)
            except Exception as exc:  # a target whose name cannot be read still counts
                warn(f"could not name a {api} target: {exc.__class__.__name__}: {exc}")
                return type(target).__name__

    def start_gates(api, first):
        try:
            return gates.start_all(capture.gates, api, first)
        except Exception as exc:
            warn(f"a profiler could not start on a {api} call: {exc.__class__.__name__}: {exc}")
            return None

    def timed_call(target, *args, **kwargs):
        nonlocal user_code
        # The calls of ``original`` come first in the bytecode, the preparation after them (the
        # loop runs it first): TensorFlow reads the line of each frame on the stack for each op it
        # runs, walking the line table up to the frame's call, and this way that walk is short.
        weight = None  # None: not prepared yet; -1: passed through untimed; 2: kept in place
        while True:
            if weight == -1:
                return original(target, *args, **kwargs)
            if weight == 2:
                # An unsampled, unprofiled call at a call site the collector has (most calls): the
                # thread's spare light frame on the stack (nesting; graph creation, charged by the
                # tracing hook and the graph_creation points), and, unless it traced, its start,
                # duration and thread appended to its call site's statistics' ``light`` list,
                # added to them a batch at a time (``CallStats.add_light``): no record, no buffer,
                # no lock, no allocation but the appended tuple.
                frame = frames.spare  # taken while in use: a call that comes in meanwhile makes its own
                if frame is None:
                    frame = LightFrame()
                else:
                    frames.spare = None
                frame.target = target
                frame.last = frame.start = start = clock()
                frames.append(frame)
                try:
                    return original(target, *args, **kwargs)
                finally:
                    now = clock()
                    if frames[-1] is frame:
                        frames.pop()
                    elif frame in frames:
                        frames.remove(frame)
                    frame.target = None
                    totals = frame.totals
                    if frame.extra is None and totals == untouched and frame.stack == at_rest:
                        light.extend((start, now - start, frames))  # CallStats.add_light adds them
                        frames.spare = frame
                        if len(light) >= light_size:
                            log.settle(sink)
                    else:  # it traced, or a hook gave it a record of its own: a record, and a new spare
                        totals[frame.stack[-1]] += now - frame.last
                        frame.last = now
                        log.buffer((api, signature, batch, code, offset, training, name, frame.start,
                                    frame.last - frame.start, totals, False, 0, frame.teardown_s, None, None,
                                    frame.extra), now=True)
                    if observers:
                        log.observe(observers, api, target, args, kwargs)
            if weight is not None:
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
                        try:
                            buffer = log_local.entry[1]
                        except AttributeError:  # this thread's first call
                            buffer = new_buffer()[1]
                        buffer.extend((api, signature, batch, code, offset, training, name, frame.start,
                                       frame.last - frame.start, frame.totals, profiled, frame.weight,
                                       frame.teardown_s, site, spec, frame.extra))
                        if len(buffer) >= flush_size:
                            log.flush_full(log_local.entry)
                        if observers:
                            log.observe(observers, api, target, args, kwargs)
            # Nested in another timed call (a model called inside predict() or inside the user's
            # tf.function), or refused (e.g. called while a graph is traced): part of the outer call.
            weight = -1
            try:
                frames = local.frames
            except AttributeError:  # this thread's first call
                frames = None
            if frames:
                continue
            known = last  # fixed names only
            if known[0]() is target:
                name = known[1]
            else:
                name = identify(target)  # None: refused
                if name is None:
                    continue
                if fixed_names:
                    remember(target, name)
            # The call site (inline, not a function of its own: see the module's docstring).
            try:
                try:
                    signature, batch = describe(args, kwargs)
                except Exception as exc:  # an input we cannot describe still counts as a call
                    signature, batch = undescribed(api, args, exc)
                caller = get_frame(1)  # this wrapper's caller: most often the user's own line
                code = caller.f_code
                if code is not user_code:
                    known = code_is_library.get(id(code))
                    if known is None or known[0] is not code or known[1]:
                        caller = first_user_frame(caller)
                        code = None if caller is None else caller.f_code
                    else:
                        user_code = code
                code_id = id(code)
                # A training call: ``training=True`` (by keyword, or by position where the API
                # takes it), or under a recording gradient tape.
                training = ((kwargs and kwargs.get("training") is True) or not tape_is_empty()
                            or (positional is not None and len(args) > 1 and positional(target, args)))
                if caller is None:
                    offset = None
                    key = (api, id(target), signature, training)
                else:
                    offset = caller.f_lasti  # the line is looked up at flush time
                    key = (api, id(target), signature, training, code_id, offset)
            except Exception as exc:
                warn(f"could not record a {api} call: {exc.__class__.__name__}: {exc}")
                continue
            state = sites.get(key)
            # A profiler's start is not part of the call. If it fails, the call runs unprofiled.
            taken = None
            profiled = False
            if capture.gates:
                taken = start_gates(api, state is None)
                profiled = bool(taken)
            spec = site = None
            if state is None:  # the call site's first call: sampled unless a profiler had to take it
                spec = log.first_spec(api, capture, args, kwargs)
                site = first_call(key)  # its record links it to its statistics (``_flush``)
                weight = 0 if profiled else 1
            elif profiled:
                weight = 0
            else:
                left = state[0] - 1
                if left > 0:
                    state[0] = left
                    weight = 0
                    sink = state[2]  # the call site's CallStats, once the collector has its first call
                    if sink is None:
                        sink = log.link(state)
                    if sink and frames is not None and sink.target == name:  # (an id reused by another target: not)
                        light = sink.light
                        weight = 2
                else:
                    weight = sampled(state)

    timed_call.__wrapped__ = original
    timed_call.__name__ = getattr(original, "__name__", api)
    timed_call.__qualname__ = getattr(original, "__qualname__", api)
    timed_call.__doc__ = getattr(original, "__doc__", None)
    return timed_call
