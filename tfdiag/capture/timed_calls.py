"""The wrapper every timed top-level call goes through (its log: call_log.py).

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
CallFrame; reused while calls leave it untouched: no phase switch, so its ``last`` is still its
start) and, unless it traced, appends its start, duration and thread to its call
site's ``light`` list (one ``extend``, no lock); every LIGHT_EVERY calls, and at the end,
``CallStats.add_light`` adds them to the count, total and maximum, offers them to the
reservoir and the timeline, a batch at a time. In place, under the collector's lock and
call by call, that bookkeeping was about 120 of the 510 opcodes such a call cost on a
tf.function loop (TF 2.21, Python 3.11), and each of them costs far more there than in a
micro-benchmark (see below). A batch costs less per call the larger it is (each ``settle``
runs with its code out of the CPU's caches): 1.2 us per call at 256, 0.5 us at 1024, while the
timeline fills.

The compiled wrapper. Even so, the shortest Python path was over 400 opcodes, about 7 us per
call on a 0.1 ms tf.function (call-interleaved median, one CPU). Where ``_hotpath.c`` is built,
a target whose name is fixed (a user tf.function) gets ``HotCall`` instead: each call kept in
place here arms it with what that call was (thread, target, caller code and offset, the
arguments' kinds, the training flag, the call site's sampler state and statistics; a few such
at once, one per thread, target and line), and a call that repeats it is kept in place in C,
the same way, for about 2 us; every other call (first calls, sampled and profiled ones, a new
signature, keyword arguments) comes here, as before. Without the extension (no compiler where tfdiag was
installed) all of it runs here, at the Python cost.

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
import weakref
from typing import Callable

from . import callsite, gates
from .call_log import FIELDS, FLUSH_EVERY, CallLog
from .phase_tracker import CallFrame, CallStack, LightFrame, PhaseTracker

try:  # the common case compiled (_hotpath.c); without it the wrapper below does all of it
    from ._hotpath import HotCall
except ImportError:  # not built here (no compiler): pure Python
    HotCall = None

LIGHT_EVERY = 1024  # calls kept in place at a call site between two ``CallLog.settle``


def timed_call_wrapper(original: Callable, api: str, capture, skip: Callable, tracker: PhaseTracker, log: CallLog,
                       observers=()) -> Callable:
    """``original`` timed when it is a top-level call that ``skip(target)`` does not refuse.

    ``capture`` provides ``describe(args, kwargs) -> (signature, batch)``, ``input_spec(args,
    kwargs)`` (first calls only), ``tape_is_empty()`` (False under a gradient tape: a training
    call), ``target_name(target)`` (cheap: they run per call), ``gates`` (gates.py, read per
    call) and, optionally, ``training_argument(api)``: None, or ``positional(target, args)``,
    True when the call passed ``training=True`` by position; and ``identify(target)``: the
    target's name, or None where ``skip`` refuses it (one call instead of two; it must never
    raise), else made of ``skip`` and ``target_name``; and ``argument_kinds(args)``: what
    ``describe`` keys positional arguments on, for the compiled wrapper (_hotpath.c) to compare,
    or None (a capture without it, or whose targets' names are not ``fixed_names``, gets the
    Python wrapper only). ``observers``: called with
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

    def touched(frame, now, fields):
        """A call kept in place that traced, or that a hook gave a record of its own: its record,
        into the collector at once (``fields``: api, signature, batch, code, offset, training, name)."""
        totals = frame.totals
        totals[frame.stack[-1]] += now - frame.last
        frame.last = now
        log.buffer((*fields, frame.start, frame.last - frame.start, totals, False, 0, frame.teardown_s, None, None,
                    frame.extra), now=True)

    # The compiled common case (_hotpath.c): the calls that repeat the last one kept in place
    # (armed below) go no further than it; every other call comes here. Only for targets whose
    # name is fixed, with no observers: it repeats the call site, not the naming or the observing.
    hot = None  # made below, once ``timed_call`` is

    def arm(frames, target, args, code, offset, training, state, light, sink, fields):
        """The compiled wrapper told of a call kept in place: the calls that repeat it stay in C."""
        try:
            kinds = argument_kinds(args)
            if kinds is not None:
                hot.arm(frames, target, code, offset, kinds, bool(training), state, light, sink, touched, fields)
        except Exception as exc:  # the call goes on in Python
            hot.disarm()
            warn(f"could not keep {api} calls in the compiled wrapper: {exc.__class__.__name__}: {exc}")

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
                    if frame.extra is None and frame.last is start and len(frame.stack) == 1:  # untouched
                        light.extend((start, now - start, frames))  # CallStats.add_light adds them
                        frames.spare = frame
                        if len(light) >= light_size:
                            log.settle(sink)
                    else:  # it traced, or a hook gave it a record of its own: a record, and a new spare
                        touched(frame, now, (api, signature, batch, code, offset, training, name))
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
                        if hot is not None and not kwargs and code is user_code and code is not None:
                            arm(frames, target, args, code, offset, training, state, light, sink,
                                (api, signature, batch, code, offset, training, name))
                else:
                    weight = sampled(state)

    argument_kinds = getattr(capture, "argument_kinds", None)
    if HotCall is not None and argument_kinds is not None and fixed_names and not observers and positional is None:
        try:
            hot = HotCall(original, timed_call, capture, clock, tape_is_empty, log.settle, light_size, LightFrame,
                          CallStack)
        except TypeError as exc:  # an extension built from an older _hotpath.c (not rebuilt): the Python wrapper
            warn(f"the compiled wrapper does not fit this tfdiag ({exc}); `pip install -e .` rebuilds it")
    wrapper = timed_call if hot is None else hot
    wrapper.__name__ = getattr(original, "__name__", api)
    wrapper.__qualname__ = getattr(original, "__qualname__", api)
    wrapper.__doc__ = getattr(original, "__doc__", None)
    if hot is None:
        timed_call.__wrapped__ = original
    return wrapper
