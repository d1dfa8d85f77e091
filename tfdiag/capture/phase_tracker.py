"""The phase tracker: an exclusive-time phase stack, so every second of a call goes to one phase.

Each thread has its own stack. ``begin_call`` opens a call (its base phase is
``other``); hooks ``enter``/``exit`` phases inside it; the time between two
switches is charged to the phase on top, so the phases of a call add up to its
wall time exactly. Innermost wins, except as ``_ABSORBED_BY`` says.

Calls the sampler picks (see sampling.py) switch the per-op entry points on for
their duration; the others measure wall time and graph creation only.

A full garbage collection (Python's generation 2: on a process holding TensorFlow and a
model, 0.1 s or more) that runs inside a call is charged to ``other``, not to the phase it
interrupted: it falls wherever the allocations that trigger it happen, most often while a
graph is traced, and would make graph creation look 100 ms dearer than it is. (The younger
generations' collections are short and left where they fall: watching them would cost each
call more than they take.)
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from ..recording import PHASES
from .sampling import PhaseSampler

try:  # a compiled pass-through for entry points that stay wrapped (_hotpath.c)
    from ._hotpath import Gate
except ImportError:  # not built here: the Python wrapper checks the toggle itself
    Gate = None

# A phase entered inside the key phase is charged to the key phase instead: kernels run
# while the data adapter builds its pipeline are data_adapter time, and everything done
# while tracing a graph (symbolic ops, conversions) is graph_creation time.
_ABSORBED_BY = {
    "data_adapter": {"kernel_execution", "input_processing"},
    "graph_creation": {"kernel_execution", "input_processing", "data_adapter", "output_processing"},
    # What a Keras callback runs (its ops, the logs' conversion to NumPy) is the callback's time.
    "callbacks": {"kernel_execution", "input_processing", "data_adapter", "output_processing"},
}


class CallFrame:
    __slots__ = ("totals", "stack", "last", "start", "target", "weight", "off_thread_s", "teardown_base",
                 "teardown_s", "extra")

    def __init__(self, now: float, target, weight: int) -> None:
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.stack = ["other"]
        self.last = self.start = now
        self.target = target  # the model or function the call is about (labels Keras's own traces)
        self.weight = weight  # 1: sampled (every sampled call weighs the same); 0: only wall time and graph creation
        self.off_thread_s = 0.0  # input batches produced on other threads for this call
        self.teardown_base = None  # data_adapter seconds when the call's tf.data iterator was released
        self.teardown_s = 0.0  # data_adapter seconds from then on: the iterator's teardown
        self.extra = None  # what a kind of call adds to its record (a training call's steps), or None


class LightFrame:
    """A ``CallFrame`` for an unsampled call at a known call site (most calls: timed_calls.py
    sets ``target``, ``start`` and ``last``): the same fields, read the same way, the others at a
    CallFrame's defaults until a hook changes them. ``__slots__``: the compiled wrapper reads and
    writes them in place (_hotpath.c).

    Each thread keeps one spare (``CallStack.spare``), reused by its next unsampled call while a
    call leaves it as it found it (no phase switch: each one sets ``last``, so ``last`` is still
    the very object ``start`` is; its stack back to "other"; no record of its own): making a
    frame, its totals and its stack was about 4 us of such a call on a tf.function loop, three
    allocations in the middle of TensorFlow's own."""

    __slots__ = CallFrame.__slots__

    def __init__(self) -> None:
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.stack = ["other"]
        self.last = self.start = self.target = self.teardown_base = self.extra = None
        self.weight = 0
        self.off_thread_s = self.teardown_s = 0.0


class CallStack(list):
    """A thread's open calls, innermost last, with the thread's name (``thread``: the timed-call
    wrapper keeps its unsampled calls' thread as the stack they ran on) and its spare
    ``LightFrame`` (``spare``, or None while one is in use or none is made yet)."""

    __slots__ = ("thread", "spare")


class PhaseTracker:
    def __init__(self, clock: Callable[[], float] = time.perf_counter, sampler: PhaseSampler | None = None) -> None:
        self.clock = clock
        self.sampler = sampler or PhaseSampler()
        self.per_op = None  # the Toggle of per-op entry points (phase_points.install sets it)
        self.local = threading.local()  # per thread: ``frames``, the stack of open calls

    def current_target(self):
        frames = getattr(self.local, "frames", None)
        return frames[-1].target if frames else None

    def current_frame(self) -> CallFrame | None:
        frames = getattr(self.local, "frames", None)
        return frames[-1] if frames else None

    def begin_call(self, target=None, weight: int = 1) -> CallFrame:
        """Open a top-level call on this thread. ``weight``: the sampler's answer for it (1: sampled,
        0: only wall time and graph creation are measured). The caller checks that no call is open.
        (timed_calls.py opens and closes unsampled calls inline: keep it in step.)"""
        frames = getattr(self.local, "frames", None)
        if frames is None:
            frames = self.local.frames = CallStack()
            frames.thread = threading.current_thread().name
            frames.spare = None
        if weight and self.per_op is not None:
            self.per_op.acquire()
        frame = CallFrame(self.clock(), target, weight)
        frames.append(frame)
        return frame

    def end_call(self, frame: CallFrame) -> CallFrame:
        now = self.clock()
        frame.totals[frame.stack[-1]] += now - frame.last
        frame.last = now
        frames = self.local.frames
        if frames[-1] is frame:
            frames.pop()
        elif frame in frames:
            frames.remove(frame)
        if frame.weight:
            self.end_sampled(frame)
        return frame

    def end_sampled(self, frame: CallFrame) -> None:
        """The rest of closing a sampled call, once its frame is off the stack."""
        if self.per_op is not None:
            self.per_op.release()
        if frame.teardown_base is not None:  # before the move below, which is not teardown
            frame.teardown_s = frame.totals["data_adapter"] - frame.teardown_base
        if frame.off_thread_s:
            # The call's thread waited for those batches inside its graph function, which shows
            # as kernel time: up to that much of it was the wait. (An overestimate by whatever
            # part of the production overlapped real kernels, which prefetching allows.)
            moved = min(frame.off_thread_s, frame.totals["kernel_execution"])
            frame.totals["kernel_execution"] -= moved
            frame.totals["data_adapter"] += moved

    def enter(self, phase: str):
        """Switch to ``phase`` (in sampled and unsampled calls alike: the tracing hook's graph
        creation); returns a token for ``exit`` (None: nothing to undo)."""
        frames = getattr(self.local, "frames", None)
        if not frames:
            return None
        frame = frames[-1]
        stack = frame.stack
        top = stack[-1]
        if top == phase or phase in _ABSORBED_BY.get(top, ()):
            return None  # time keeps going to the phase on top
        now = self.clock()
        frame.totals[top] += now - frame.last
        frame.last = now
        stack.append(phase)
        return frame, len(stack)

    def teardown_begins(self, frame: CallFrame) -> None:
        """``frame``'s tf.data iterator is being released: if ``frame`` is this thread's open call,
        the rest of it (the iterator's teardown) is data_adapter time, also counted apart."""
        if self.current_frame() is frame:
            self.enter("data_adapter")
            if frame.teardown_base is None:
                frame.teardown_base = frame.totals["data_adapter"]

    def collection(self, phase: str, info: dict) -> None:
        """A ``gc.callbacks`` entry (the session adds it for the diagnosis): a full collection
        inside a call is ``other`` time."""
        if info.get("generation") != 2:
            return
        try:
            if phase == "start":
                self.local.collecting = self.enter("other")
                return
            token, self.local.collecting = getattr(self.local, "collecting", None), None
            if token is None:
                return
            frame, depth = token
            now = self.clock()
            frame.totals[frame.stack[-1]] += now - frame.last
            frame.last = now
            # Only the collection's own entry goes: a phase the collection's finalizers switched
            # to (an iterator's teardown) stays on top.
            if len(frame.stack) >= depth and frame.stack[depth - 1] == "other":
                del frame.stack[depth - 1]
        except Exception:  # a callback of the garbage collector must never raise
            self.local.collecting = None

    def exit(self, token) -> None:
        if token is None:
            return
        frame, depth = token
        now = self.clock()
        frame.totals[frame.stack[-1]] += now - frame.last
        frame.last = now
        del frame.stack[depth - 1:]

    def wrap(self, original: Callable, phase: str, applies: Callable | None = None) -> Callable:
        """``original`` with its time charged to ``phase`` inside a call (hot path: kept inline).

        ``applies(args, kwargs)``, if given, decides per call whether the phase applies at all.
        """
        local = self.local
        clock = self.clock
        absorbed = _ABSORBED_BY
        every_call = phase == "graph_creation"  # measured in every call; the rest in sampled calls

        toggle = None if every_call else self.per_op

        def in_phase(*args, **kwargs):
            # No sampled call open on any thread (each holds ``per_op``: see begin_call), as in
            # most calls: the phase does not apply, found with one read, not a thread-local lookup
            # (a class's entry point, such as ConcreteFunction._call_flat, stays wrapped).
            if toggle is not None and not toggle.users:
                return original(*args, **kwargs)
            frames = getattr(local, "frames", None)
            if not frames or not (every_call or frames[-1].weight):
                return original(*args, **kwargs)
            frame = frames[-1]
            stack = frame.stack
            top = stack[-1]
            if top == phase or phase in absorbed.get(top, ()) or (applies is not None and not applies(args, kwargs)):
                return original(*args, **kwargs)
            now = clock()
            frame.totals[top] += now - frame.last
            frame.last = now
            depth = len(stack)
            stack.append(phase)
            try:
                return original(*args, **kwargs)
            finally:
                now = clock()
                frame.totals[stack[-1]] += now - frame.last
                frame.last = now
                del stack[depth:]

        in_phase.__wrapped__ = original
        if toggle is not None and Gate is not None:  # no sampled call open: straight to ``original``, in C
            return Gate(original, in_phase, toggle)
        return in_phase
