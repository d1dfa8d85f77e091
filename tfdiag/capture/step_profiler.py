"""The TF Profiler over a few steady steps of a fit()/evaluate() call, for the tf.data wait inside them.

Why it exists: Keras 3's and tf-keras's train and test functions fetch each batch inside their
graph (``IteratorGetNext``), so a slow tf.data pipeline waits where tfdiag only sees a graph
function running: ``kernel_execution``. No Python entry point marks that wait; the TF Profiler
does. For the first sampled fit()/evaluate() call at each call site (at most ``MAX_WINDOWS``
call sites in a run), a ``StepWindow`` profiles ``STEPS`` steps of the call from step
``FIRST_STEP + WARM_UP`` (never its first step, which traces), each a profiler step (``Trace(api,
step_num=n, _r=1)``), in its own profiler session started and stopped by the CallbackList's batch
hooks (training_calls.py) through the TF Profiler gate's session logic (tf_profiler.py), into the
same logdir (so TensorBoard's Profile tab shows these runs too). The trace is read per step
(trace_ops.py) and assemble.py moves the steps' share of graph-function time spent on tf.data
from kernel_execution to data_adapter (``trace_ops.move_step_tf_data``).

What it costs: per window, one profiler start and stop (about 0.1-1 s, charged to no phase and
to no step: steps.py leaves the profiled steps out of the step statistics and they run with the
call frame unsampled, as unmeasured steps do), and the profiler's slowdown of those few steps.
Nothing for other steps or calls beyond an attribute check in the batch hooks.
"""

from __future__ import annotations

import os
import threading
from typing import Callable

from . import trace_ops

FIRST_STEP = 3  # the window's first step (1-based, within the call): the profiler starts before it
WARM_UP = 1  # steps run under the profiler before the marked ones (see ``StepWindow``)
STEPS = 3  # steps marked and read per window
MAX_WINDOWS = 4  # call sites profiled per run (each window starts and stops a profiler session)


class StepWindow:
    """One call's profiled steps: opens the profiler at its first step, closes after its last
    (or at an epoch hook or the call's end, whichever comes first). The first ``WARM_UP`` steps
    run under the profiler unmarked: while the profiler starts, a prefetching pipeline gets ahead,
    so the step after the start waits less for its batch than a steady step does."""

    def __init__(self, owner: "StepProfiler", api: str, call_site: str) -> None:
        self.owner = owner
        self.api, self.call_site = api, call_site
        self.state = "waiting"  # waiting -> open -> done
        self.steps: list[int] = []  # profiled step numbers (1-based)
        self.trace = None  # the open step marker
        self.start_s: float | None = None
        self.stop_s: float | None = None
        self.blocked_by: str | None = None
        self.paths: list[str] = []  # the trace files this window wrote (relative to the logdir)
        self.under = ""  # its folder in the logdir (TensorBoard shows it as a run of its own)

    def wants(self, number: int) -> bool:
        return self.state != "done" and FIRST_STEP <= number < FIRST_STEP + WARM_UP + STEPS

    def begin_step(self, number: int) -> float:
        """Step ``number`` begins (before its begin mark): open the session if needed and start
        the step marker; returns the seconds the session start took (to be charged nowhere)."""
        cost = 0.0
        if self.state == "waiting":
            cost = self.owner.open(self)
            if self.state != "open":
                return cost
        if self.state != "open" or number < FIRST_STEP + WARM_UP:
            return cost
        try:
            import tensorflow as tf

            self.trace = tf.profiler.experimental.Trace(self.api, step_num=number, _r=1)
            self.trace.__enter__()
            self.steps.append(number)
        except Exception as exc:
            self.trace = None
            self.owner.gate.collector.warn(f"TF Profiler step marker unavailable: {exc.__class__.__name__}: {exc}")
        return cost

    def end_step(self, number: int) -> float:
        """Step ``number`` ended (after its end mark): end its marker; close the session after the
        window's last step. Returns the seconds the session stop took."""
        trace, self.trace = self.trace, None
        if trace is not None:
            try:
                trace.__exit__(None, None, None)
            except Exception as exc:
                self.owner.gate.collector.warn(f"TF Profiler step marker failed: {exc.__class__.__name__}: {exc}")
        if self.state == "open" and not self.wants(number + 1):
            return self.owner.close(self)
        return 0.0

    def end(self) -> float:
        """An epoch hook or the call's end: no more steps in this window."""
        if self.state == "open":
            return self.end_step(0)
        if self.state == "waiting":  # too few steps: a later call at this call site may be profiled
            self.owner.release(self)
        self.state = "done"
        return 0.0

    def record(self) -> dict:
        return {"api": self.api, "call_site": self.call_site, "steps": list(self.steps), "start_s": self.start_s,
                "stop_s": self.stop_s, "blocked_by": self.blocked_by, "trace_files": list(self.paths)}


class StepProfiler:
    """Hands out a ``StepWindow`` to the first sampled call at each fit()/evaluate() call site,
    and runs their profiler sessions through the TF Profiler gate (``gate``)."""

    def __init__(self, gate, clock: Callable[[], float], max_windows: int = MAX_WINDOWS) -> None:
        self.gate = gate
        self.clock = clock
        self.max_windows = max_windows
        self.windows: list[StepWindow] = []
        self.sites: set = set()
        self.active: StepWindow | None = None
        self.sessions = 0  # started, each into its own folder
        self._lock = threading.Lock()
        gate.step_profiler = self

    def claim(self, api: str, call_site: str) -> StepWindow | None:
        with self._lock:
            key = (api, call_site)
            if key in self.sites or len(self.windows) >= self.max_windows or self.gate.state == "blocked":
                return None
            self.sites.add(key)
            with self.gate._lock:
                self._end_call_window()
            window = StepWindow(self, api, call_site)
            self.windows.append(window)
            return window

    def _end_call_window(self) -> None:
        """The call gate's window, open between its calls, ends before a training call's steps (as
        it does before a call site's first call): they would run under it, and this window could
        not open. Not while one of its calls runs (a call on another thread). Under the gate's lock."""
        gate = self.gate
        if gate.state == "open" and gate._in_flight == 0:
            gate._close()

    def release(self, window: StepWindow) -> None:
        with self._lock:
            self.sites.discard((window.api, window.call_site))
            if window in self.windows:
                self.windows.remove(window)

    def open(self, window: StepWindow) -> float:
        """Start a profiler session for ``window`` (unless another is running); returns its cost."""
        gate = self.gate
        started = self.clock()
        with gate._lock:
            self._end_call_window()
            if self.active is not None or gate.state == "open":
                reason = "another TF Profiler window was open"
            else:
                self.sessions += 1
                window.under = f"steps/{window.api}-{self.sessions}"
                reason = gate.start_session(window.under)
            if reason is None:
                self.active = window
                gate.busy = True
        cost = self.clock() - started
        if reason is not None:
            window.state, window.blocked_by = "done", reason
            gate.collector.warn(f"TF Profiler skipped the steps of {window.api}() at {window.call_site}: {reason}")
            return cost
        window.state, window.start_s = "open", cost
        return cost

    def close(self, window: StepWindow) -> float:
        """Stop ``window``'s session (its trace is written); returns the cost."""
        gate = self.gate
        started = self.clock()
        with gate._lock:
            if window.state == "open" and self.active is window:
                gate.stop_session()
                self.active = None
                gate.busy = False
                window.paths = [f["path"] for f in gate.trace_files(window.under)]
            window.state = "done"
        cost = self.clock() - started
        window.stop_s = cost
        return cost

    def yield_to_user(self) -> None:
        """The diagnosed code starts its own TF Profiler: end the open window (its trace is kept)."""
        window = self.active
        if window is not None:
            if window.trace is not None:
                try:
                    window.trace.__exit__(None, None, None)
                except Exception:
                    pass
                window.trace = None
            self.close(window)
            self.gate.collector.warn(f"the diagnosed code started its own TF Profiler; tfdiag's profile of the "
                                     f"steps of {window.api}() at {window.call_site} ends early")

    def section(self) -> dict:
        """``step_windows`` (what each window profiled) and ``step_sites`` (per call site, its
        steps' graph-function time and the part spent on tf.data, as ``trace_ops.per_call_site``
        gives per call, here per step)."""
        sites: list[dict] = []
        for window in self.windows:
            if not window.paths or not window.steps:
                continue
            try:
                paths = [os.path.join(self.gate.logdir, p) for p in window.paths]
                markers = {number: window.api for number in window.steps}
                steps = trace_ops.call_steps(paths, markers)
                profiled = [{"api": window.api, "call_site": window.call_site, "call_number": n} for n in window.steps]
                sites.extend(trace_ops.per_call_site(profiled, steps))
            except Exception as exc:  # a trace this version cannot read costs only the correction
                self.gate.collector.warn(f"TF Profiler trace not read per step: {exc.__class__.__name__}: {exc}")
        return {"step_windows": [w.record() for w in self.windows], "step_sites": sites}
