"""The steps of a fit()/evaluate() call: one ``StepLog`` per call, summed per call site.

Why it exists: a training call is one timed call (timed_calls.py) made of many batch steps, and
the report needs the steps themselves: their wall time, their phase split, the callbacks that
ran in them and the producer that fed them. The CallbackList's batch hooks (training_calls.py)
mark each step's begin and end on the call frame's ``StepLog`` (``CallFrame.extra``); the
collector hands each finished log to its call site's ``SiteSteps``.

What it costs, per step: two clock reads and, in sampled calls, a copy of the frame's seven
phase totals at the begin mark and a seven-item sum at the end mark (about 1-2 us). Memory is
bounded: a call keeps every ``stride``-th step duration (stride doubles past ``MAX_POINTS``),
at most ``MAX_EPOCHS`` epoch starts, and one entry per callback class.

Batches produced on tf.data's threads (a PyDataset, a Sequence, a generator) are waited for
inside the train function's graph, which shows as kernel time on the call's thread, and a
producer in Python holds the GIL that Keras's own Python around the call then waits for
(``other``): at each step's end, up to the production seconds that overlapped the step move
from kernel_execution, then from other, to data_adapter (as ``PhaseTracker.end_sampled`` does
for predict's ``off_thread_s``).
"""

from __future__ import annotations

import linecache
import random
from time import thread_time

from ..recording import PHASES
from . import callsite
from .sampling import Reservoir

MAX_POINTS = 2000
FIRST_STEPS = 6  # a sampled call's steps measured before one in the sampler's gap is
MAX_EPOCHS = 1000
STEP_RESERVOIR = 4096


class StepLog:
    """One training call's steps. ``mode``: ``train`` or ``test`` (which batch hooks are its
    steps), None for train_on_batch/test_on_batch (no steps). ``settings``: the model's
    steps_per_execution, run_eagerly, jit_compile; ``producer``: ``describe_producer`` of its x."""

    __slots__ = ("mode", "settings", "producer", "steps", "begin", "marks", "made", "making", "produced_mark",
                 "batches", "durations", "stride", "first_phases", "phase_sums", "phase_steps", "epoch_starts",
                 "callbacks", "in_callback", "sampled", "teardown", "held_marks", "countdown", "measured",
                 "per_op", "gap", "paused", "unmeasured_s", "steady_s", "steady_n", "ready", "consumed", "last_end", "gap_marks", "gap_produced", "gap_cpu", "window", "in_window", "profiled_steps", "profiler_s")

    def __init__(self, mode: str | None, settings: dict, producer: dict | None, sampled: bool,
                 per_op=None, gap=None) -> None:
        self.mode, self.settings, self.producer, self.sampled = mode, settings, producer, sampled
        self.steps = 0
        self.begin = None  # the open step's begin mark (None between steps)
        self.marks = None  # the frame's phase totals at the begin mark (sampled calls)
        # What the producer has spent on finished batches (producers.py writes it, on any thread,
        # as one tuple so a reader never sees half an update): (seconds, CPU seconds); and the
        # batches in the making, per producing thread (a fit's validation pass may overlap the
        # training pass): thread -> (when it began, a function reading its CPU seconds so far, or
        # None). The CPU seconds matter: a producer in pure Python holds the GIL that long, and the
        # training thread's Python (Keras's loop, the graph call, callbacks) waits for it even when
        # the batch itself is ready in time. ``produced(now)`` counts the batches in the making.
        self.made = (0.0, 0.0)
        self.making: dict = {}
        # When each batch of the producer's current pass was ready (batch number -> clock), and how
        # many of them this call's steps have taken: a step waited for its batch only if that batch
        # was made after the step began (Keras runs the producer a batch or more ahead).
        self.ready: dict = {}
        self.consumed = 0
        # A step runs from the previous step's end (its batch may be fetched before the begin hook:
        # Keras 3 pulls a generator's batches between steps) to the end of its own end hook; an
        # epoch's first step from its begin hook. ``gap_marks``: the phase totals at that end, in a
        # sampled frame (the start of the next measured step's split).
        self.last_end = None
        self.gap_marks = None
        self.gap_produced = (0.0, 0.0)  # ``produced()`` at the last step's end
        self.gap_cpu = 0.0  # the training thread's CPU seconds then (``held_marks``)
        self.produced_mark = (0.0, 0.0)  # the same at the open step's begin
        self.batches = 0
        self.durations: list = []
        self.stride = 1
        self.first_phases = None
        self.phase_sums = dict.fromkeys(PHASES, 0.0)
        self.phase_steps = 0
        self.epoch_starts: list = []
        self.callbacks: dict = {}  # callback class -> [seconds, hook calls, seconds in its steps' batch hooks] (sampled calls)
        self.in_callback = False  # a callback's hook is running (its super() calls are not counted twice)
        self.teardown = None  # the tracker's token while a released epoch iterator is torn down
        # Step sampling, in a sampled call: only the measured steps (the first FIRST_STEPS, each
        # epoch's first, then one in ``gap()``) and what runs outside steps (epoch hooks,
        # validation) run with the frame sampled and the per-op entry points (``per_op``, the
        # tracker's Toggle, held by the frame for the whole call) on; from an unmeasured step's
        # begin to the next measured step or epoch hook the frame is unsampled (``paused``), and
        # those seconds are spread in the measured steps' shares (``finish``). (A retrace while
        # paused charges its time so far to ``other``.)
        # At the open step's begin: its kernel_execution and other seconds, and the training
        # thread's CPU seconds (how long it was off the CPU bounds its wait for the GIL).
        self.held_marks, self.countdown, self.measured = (0.0, 0.0, 0.0), 1, 0
        self.per_op = per_op
        self.gap = gap
        self.paused = None  # the frame, while an unmeasured step runs with it unsampled
        self.unmeasured_s = 0.0
        # The wall seconds and count of the steady steps (the basis of step_phases): every step but
        # the call's first, each later epoch's first (a new iterator, epoch hooks: shown in the
        # timeline, not in the steady step) and the profiled ones.
        self.steady_s = 0.0
        self.steady_n = 0
        # The TF Profiler's steps (step_profiler.py; their indices): unsampled, out of the step
        # statistics; its start and stop (``profiler_s``) are charged to no phase and no step.
        self.window, self.in_window, self.profiled_steps, self.profiler_s = None, False, [], 0.0

    def end_teardown(self, tracker) -> None:
        """The next callback hook after an iterator's release: its teardown is over."""
        token, self.teardown = self.teardown, None
        frame, depth = token
        if len(frame.stack) >= depth and frame.stack[depth - 1] == "data_adapter":
            tracker.exit(token)

    def open(self, now: float, frame, mode: str) -> None:
        """The begin of a batch hook (``mode``: whose) in a sampled call (``frame``: the call's),
        where the step is measured (``CallbackList`` hooks: training_calls.py)."""
        if mode != self.mode:
            self.begin = now
            self.produced_mark = self.produced(now)
            self.held_marks = (frame.totals["kernel_execution"], frame.totals["other"], thread_time())
            self.marks = None
            return
        self.measured += 1
        self.countdown = 1 if self.measured < FIRST_STEPS or self.gap is None else self.gap()
        if self.last_end is not None and self.gap_marks is not None:
            self.begin, self.marks, self.produced_mark = self.last_end, self.gap_marks, self.gap_produced
            cpu = self.gap_cpu
        else:
            self.begin, self.marks, self.produced_mark = now, frame.totals.copy(), self.produced(now)
            cpu = thread_time()
        self.held_marks = (self.marks["kernel_execution"], self.marks["other"], cpu)

    def start(self, now: float) -> None:
        """An unmeasured (or unsampled) step's begin hook: the step began at the previous one's end."""
        self.begin = self.last_end if self.last_end is not None else now

    def mark_gap(self, totals: dict, now: float) -> None:
        """The call's frame (its phase ``totals``) runs sampled at ``now``, after a step's end: the
        next measured step's split starts here (``open``)."""
        self.gap_marks, self.gap_produced, self.gap_cpu = totals.copy(), self.produced(now), thread_time()

    def produced(self, now: float) -> tuple:
        """(seconds, CPU seconds) the producer has spent on batches by ``now``, the batch it is
        making counted so far: a step is charged the production that overlapped it, not the
        batches that happened to finish in it. (Without a readable CPU clock, the batch in the
        making counts as wall time only, its CPU when it is done.)"""
        seconds, cpu = self.made
        for since, cpu_so_far in list(self.making.values()):
            if now > since:
                seconds += now - since
                if cpu_so_far is not None:
                    try:
                        cpu += cpu_so_far()
                    except OSError:  # its thread is gone
                        pass
        return seconds, cpu

    def pause(self, frame, now: float) -> None:
        """An unmeasured step begins: the frame runs unsampled (its time so far is charged)."""
        frame.totals[frame.stack[-1]] += now - frame.last
        frame.last = now
        self.paused = frame
        frame.weight = 0
        if self.per_op is not None:
            self.per_op.release()

    def resume(self, now: float) -> None:
        """A measured step or an epoch hook: the frame is sampled again."""
        frame, self.paused = self.paused, None
        self.unmeasured_s += now - frame.last
        frame.last = now
        frame.weight = 1
        if self.per_op is not None:
            self.per_op.acquire()

    def finish(self, frame, now: float) -> None:
        """The call is over: the unmeasured steps' seconds go to the phases in the measured
        steps' shares."""
        if self.paused is not None:
            self.resume(now)
        shares = self.phase_sums if self.phase_steps else (self.first_phases or {})
        total = sum(shares.values())
        if self.unmeasured_s > 0 and total > 0:
            for name, seconds in shares.items():
                frame.totals[name] += self.unmeasured_s * seconds / total
        self.unmeasured_s = 0.0

    def close(self, now: float, frame, mode: str) -> None:
        """The end of a batch hook (``mode``: whose); a step of this call when ``mode`` is its own.
        ``frame``: the call's, when it runs sampled."""
        begin = self.begin
        if begin is None:
            return
        self.begin = None
        totals = None
        own = mode == self.mode
        if own:  # the batches this step took from the producer
            first, per = self.consumed, self.settings.get("steps_per_execution") or 1
            self.consumed = first + per
            ready = self.ready.pop(first + per - 1, None)
            for number in range(first, first + per - 1):
                self.ready.pop(number, None)
        if frame is not None:
            totals = frame.totals
            produced_s, produced_cpu = self.produced(now)
            produced = produced_s - self.produced_mark[0]
            if produced > 0:
                # The producer's cost to the step: the wait until the step's (last) batch was made,
                # if after the step began, or the GIL its Python held meanwhile (its CPU time),
                # whichever is more; without a batch's ready time, what it spent during the step.
                held = min(produced_cpu - self.produced_mark[1], produced)
                waited = produced if not own or ready is None else max(0.0, ready - begin, held)
                # It shows in the graph call, which waits for the batch inside; what the GIL held
                # beyond that kept Keras's own Python around the call waiting (``other``), for no
                # longer than the training thread was off the CPU (its own CPU time is its own).
                kernel_mark, other_mark, cpu_mark = self.held_marks
                in_graph = max(0.0, min(waited, totals["kernel_execution"] - kernel_mark))
                off_cpu = (now - begin) - (thread_time() - cpu_mark) - in_graph
                in_python = min(waited - in_graph, held, totals["other"] - other_mark, off_cpu)
                for phase, moved in (("kernel_execution", in_graph), ("other", in_python)):
                    if moved > 0:
                        totals[phase] -= moved
                        totals["data_adapter"] += moved
        if not own:
            return
        n = self.steps
        self.steps = n + 1
        steady = n > 0 and not (self.epoch_starts and self.epoch_starts[-1] == n)
        if self.in_window:
            self.in_window = False
            self.profiled_steps.append(n)
        elif steady:
            self.steady_s += now - begin
            self.steady_n += 1
        if n % self.stride == 0:
            durations = self.durations
            durations.append(now - begin)
            if len(durations) > MAX_POINTS:
                self.durations = durations[::2]
                self.stride *= 2
        self.last_end = now
        if totals is not None:
            self.mark_gap(totals, now)
        else:
            self.gap_marks = None
        marks = self.marks
        if totals is not None and marks is not None:
            if n == 0:
                self.first_phases = {p: totals[p] - marks[p] for p in marks}
            elif steady:
                sums = self.phase_sums
                for p in marks:
                    sums[p] += totals[p] - marks[p]
                self.phase_steps += 1

    def epoch(self) -> None:
        self.countdown = 1  # an epoch's first step (a new iterator's first batch) is always measured
        self.last_end = self.gap_marks = None  # it begins at its begin hook, after the epoch's hooks
        if len(self.epoch_starts) < MAX_EPOCHS:
            self.epoch_starts.append(self.steps)

    def steps_per_epoch(self) -> list:
        starts = self.epoch_starts or [0]
        ends = starts[1:] + [self.steps]
        return [end - start for start, end in zip(starts, ends)][:MAX_EPOCHS]


def teardown_begins(tracker, frame) -> None:
    """A training call's epoch iterator is released (a weakref callback, before its C++ teardown,
    which waits for tf.data's threads): data_adapter time, up to the next callback hook."""
    log = frame.extra
    if tracker.current_frame() is frame and log.teardown is None and log.paused is None:
        log.teardown = tracker.enter("data_adapter")


# -- per call site ------------------------------------------------------------------------
_CLASS_INFO: dict = {}


def _class_info(cls) -> dict:
    known = _CLASS_INFO.get(cls)
    if known is None:
        code = next((callsite.code_of(v) for v in vars(cls).values() if callsite.code_of(v) is not None), None)
        filename = code.co_filename if code is not None else ""
        defined_at = None
        if code is not None:  # the ``class`` line above its first method
            line = code.co_firstlineno
            while line > 1 and not linecache.getline(filename, line).lstrip().startswith(f"class {cls.__name__}"):
                line -= 1
            defined_at = f"{filename}:{line}"
        known = _CLASS_INFO[cls] = {"name": cls.__name__, "qualname": cls.__qualname__, "defined_at": defined_at,
                                    "user": bool(filename) and not callsite.is_library_file(filename)}
    return known


class SiteSteps:
    """The steps of every call at one call site (kept in its CallStats)."""

    def __init__(self) -> None:
        self.calls = self.steps = self.epochs = self.sampled_steps = 0
        self.first_step_s = self.steps_per_epoch = self.timeline = None
        self.durations = Reservoir(STEP_RESERVOIR, random.Random(2))
        self.phase_sums = dict.fromkeys(PHASES, 0.0)
        self.phase_steps = 0
        self.steady_s = 0.0  # wall seconds of the steps after each call's first
        self.steady_steps = 0
        self.first_step_phases = None
        self.profiled_steps, self.profiler_s = 0, 0.0  # steps the TF Profiler traced; its start and stop
        self.settings: dict = {}
        self.callbacks: dict = {}  # (module, qualname) -> [info, seconds, calls, batch-hook seconds]
        self.producer = None

    def add(self, log: StepLog, sampled: bool) -> None:
        self.calls += 1
        self.steps += log.steps
        if not self.settings:
            self.settings = dict(log.settings)
        if log.mode is None:
            return
        self.epochs += len(log.epoch_starts)
        if self.calls == 1:
            self.first_step_s = log.durations[0] if log.durations else None
            self.steps_per_epoch = log.steps_per_epoch() if log.epoch_starts else None
            self.timeline = {"stride": log.stride, "durations_s": list(log.durations),
                             "epoch_starts": list(log.epoch_starts)}
            if log.profiled_steps:  # slowed by the profiler: not in the statistics
                self.timeline["profiled_steps"] = list(log.profiled_steps)
        skip = {n // log.stride for n in log.profiled_steps if n % log.stride == 0}
        self.durations.extend(d for i, d in enumerate(log.durations) if i and i not in skip)
        self.steady_s += log.steady_s
        self.steady_steps += log.steady_n
        self.profiled_steps += len(log.profiled_steps)
        self.profiler_s += log.profiler_s
        if log.producer is not None:
            if self.producer is None:
                self.producer = dict(log.producer)
            if sampled and log.batches:
                made_s, made_cpu = log.made
                self.producer["seconds"] = (self.producer["seconds"] or 0.0) + made_s
                # of them, the producer thread's CPU seconds (little: it waited on I/O, a sleep, a
                # lock-free NumPy/TF op or a worker queue; most: pure Python holding the GIL)
                self.producer["cpu_seconds"] = (self.producer.get("cpu_seconds") or 0.0) + made_cpu
                self.producer["batches"] = (self.producer["batches"] or 0) + log.batches
        if not sampled:
            return
        self.sampled_steps += log.steps
        if self.first_step_phases is None and log.first_phases is not None:
            self.first_step_phases = log.first_phases
        for name, seconds in log.phase_sums.items():
            self.phase_sums[name] = self.phase_sums.get(name, 0.0) + seconds
        self.phase_steps += log.phase_steps
        for cls, (seconds, count, batch_seconds) in log.callbacks.items():
            entry = self.callbacks.get((cls.__module__, cls.__qualname__))
            if entry is None:
                entry = self.callbacks[(cls.__module__, cls.__qualname__)] = [_class_info(cls), 0.0, 0, 0.0]
            entry[1] += seconds
            entry[2] += count
            entry[3] += batch_seconds

    def section(self, count: int) -> dict:
        """The call site's step fields; ``count``: its calls (train_on_batch's steps)."""
        out = dict(self.settings)
        out["steps"] = self.steps if self.timeline else count
        if not self.timeline:
            return out
        values = sorted(self.durations.items)
        # per step: its batch hooks of the call's own steps only (epoch and begin/end hooks, and
        # validation's batch hooks, run once per epoch or call: in ``seconds``, not per step)
        callbacks = [{**info, "seconds": seconds, "calls": count,
                      "per_step_s": batch_seconds / self.sampled_steps if self.sampled_steps else None}
                     for info, seconds, count, batch_seconds in self.callbacks.values()]
        out.update(
            epochs=self.epochs, steps_per_epoch=self.steps_per_epoch,
            step_median_s=percentile(values, 0.5) if values else None,
            step_p95_s=percentile(values, 0.95) if values else None,
            first_step_s=self.first_step_s,
            step_phases=self._step_phases(),
            first_step_phases=self.first_step_phases, step_timeline=self.timeline,
            callbacks=sorted(callbacks, key=lambda c: -c["seconds"]), data_producer=self.producer)
        if self.profiled_steps:
            out.update(profiled_steps=self.profiled_steps, tf_profiler_s=self.profiler_s)
        return out

    def _step_phases(self) -> dict | None:
        """Mean seconds per step after each call's first, by phase: the measured steps' shares
        (the first few of each call and each epoch's first are always among them, and they run
        slower than the rest) scaled to the mean wall time of all those steps, as a call site's
        steady split is scaled to its unsampled calls."""
        measured = sum(self.phase_sums.values())
        if not self.phase_steps or measured <= 0:
            return None
        if not self.steady_steps:
            return {k: v / self.phase_steps for k, v in self.phase_sums.items()}
        mean = self.steady_s / self.steady_steps
        return {k: mean * v / measured for k, v in self.phase_sums.items()}


def add(site: SiteSteps | None, log, sampled: bool) -> SiteSteps | None:
    """``log`` (a call's ``CallFrame.extra``) into its call site's steps (made on first use)."""
    if not isinstance(log, StepLog):
        return site
    site = site if site is not None else SiteSteps()
    site.add(log, sampled)
    return site


def percentile(sorted_values: list, q: float) -> float:
    """The ``q`` quantile of ``sorted_values`` (linear interpolation; 0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = q * (len(sorted_values) - 1)
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)
