"""The TF Profiler over a short window of predict-family calls, for TensorBoard's Profile tab.

Why a window: the TF Profiler's trace grows with every op it sees, so it runs over a few
calls after warm-up (calls 3, 4, 5 by default; never a call site's first call, which traces
and is measured on its own: the window moves on to a later call, or ends early if it is
open, by the rule cProfile keeps too, gates.FirstCallDeferral), each marked as a step
(``Trace(api, step_num=n, _r=1)``) so the Profile tab shows steps even on CPU. The report
folder is only known when the report is written, so the trace goes to a private temporary
logdir and ``copy_to`` puts it under ``<out>/tensorboard/`` in the layout TensorBoard reads
(``plugins/profile/<run>/<host>.xplane.pb``). ``xprof_read.read_trace`` turns it into op
statistics with xprof's converter, and ``call_sites`` into the model's op time per profiled call
site (trace_ops.py), the independent check on tfdiag's kernel_execution (assemble.py takes the
tf.data time the trace shows inside graph functions out of kernel_execution). A TF Profiler
the user's code already runs is left alone.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import threading
import time
import weakref
from typing import Callable

from ..options import TF_PROFILER_CALLS as DEFAULT_CALLS, TF_PROFILER_FIRST_CALL as DEFAULT_FIRST_CALL
from . import callsite, trace_ops
from .collector import Collector
from .gates import FirstCallDeferral
from .patching import Patcher, guarded
from .xprof_read import quiet_stderr, read_trace

# Where ``tf.profiler.experimental.start`` is looked up (the implementation, tf.* and tf.compat.v2.*).
PROFILER_START_MODULES = ("tensorflow.python.profiler.profiler_v2", "tensorflow._api.v2.profiler.experimental",
                          "tensorflow._api.v2.compat.v2.profiler.experimental")


class _Token:
    __slots__ = ("api", "call_site", "number", "trace", "started")

    def __init__(self, api: str, call_site: str, number: int, trace, started: float) -> None:
        self.api, self.call_site, self.number, self.trace, self.started = api, call_site, number, trace, started


class TfProfilerGate:
    """Runs one TF Profiler session over calls ``first_call .. first_call + calls - 1``."""

    def __init__(self, collector: Collector, calls: int = DEFAULT_CALLS, first_call: int = DEFAULT_FIRST_CALL,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.collector = collector
        self.calls = max(0, int(calls))
        self.first_call = max(1, int(first_call))
        self.clock = clock
        self.calls_seen = 0
        self.state = "waiting"  # waiting -> open -> done, or blocked
        self.finished = self.calls == 0  # done or blocked: no call will be taken (gates.start_all stops asking)
        self.blocked_by: str | None = None
        self.logdir: str | None = None
        self.start_s: float | None = None  # cost of starting the profiler session
        self.stop_s: float | None = None  # cost of stopping it and writing the trace
        self.profiled: list[dict] = []
        self.deferral = FirstCallDeferral()
        self._in_flight = 0
        self._stopped = 0  # profiled calls that have ended
        self._lock = threading.Lock()
        self._cleanup: weakref.finalize | None = None
        self._real_start: Callable | None = None
        self.step_profiler = None  # step_profiler.py's, sharing this logdir and one session at a time
        self.busy = False  # its session is running: a call window waits

    def install(self, patcher: Patcher) -> None:
        """Let the user's own TF Profiler win: starting one while tfdiag's window is open ends the
        window first (keeping its trace), so the user's ``start()`` never fails because of tfdiag."""
        for name in PROFILER_START_MODULES:
            patcher.when_imported(name, guarded(self.collector.warn, "the TF Profiler's start() hook",
                                                self._guard_start, patcher))

    def _guard_start(self, patcher: Patcher, module) -> None:
        if not callable(getattr(module, "start", None)):
            return
        gate = self

        def wrap(original: Callable) -> Callable:
            if gate._real_start is None:
                gate._real_start = original

            def start(*args, **kwargs):
                gate.yield_to_user()
                return original(*args, **kwargs)

            start.__wrapped__ = original
            start.__name__, start.__qualname__ = original.__name__, original.__qualname__
            start.__doc__ = original.__doc__
            return start

        patcher.patch(module, "start", wrap)

    def yield_to_user(self) -> None:
        """The diagnosed code is starting a TF Profiler: end tfdiag's window if it is open."""
        if self.step_profiler is not None:
            self.step_profiler.yield_to_user()
        try:
            with self._lock:
                if self.state != "open":
                    return
                self._close()
                ended_at = self.calls_seen
            self.collector.warn(f"the diagnosed code started its own TF Profiler inside tfdiag's window; "
                                f"tfdiag's TF Profiler trace ends at call {ended_at}")
        except Exception as exc:  # the user's start() goes ahead whatever happens here
            self.collector.warn(f"could not end tfdiag's TF Profiler window: {exc.__class__.__name__}: {exc}")

    # -- the window ---------------------------------------------------------------------
    def owns(self, call_number: int, first: bool = False) -> bool:
        """True for call numbers in this profiler's window (cProfile leaves those to it); for a
        call site's first call (``first``), only if this profiler will take it (``start_first``)."""
        inside = (self.state in ("waiting", "open") and self.calls > 0
                  and self.first_call <= call_number < self.first_call + self.calls)
        if not (first and inside):
            return inside
        return self.state == "waiting" and self.deferral.must_take(call_number)

    def start_first(self, api: str):
        """A call site's first call: counted, not profiled. A window waiting to open moves on to
        the next call; an open one ends first (so the call runs without the profiler), unless a
        call of another thread is in it. After ``MAX_WAIT`` calls of waiting, it is taken."""
        with self._lock:
            number = self.calls_seen + 1
            if self.state == "open":
                self.calls_seen = number
                if self._in_flight == 0:
                    self._close()
                return None
            if not (self.owns(number) and self.deferral.must_take(number)):
                self.calls_seen = number
                if self.owns(number):
                    self.deferral.defer(number)
                    self.first_call = number + 1
                return None
        return self.start(api)

    def start(self, api: str):
        with self._lock:
            self.calls_seen += 1
            number = self.calls_seen
            if not self.owns(number):
                return None
            if self.state == "waiting" and self.busy:  # the window moves on to a later call
                self.first_call = number + 1
                return None
            if self.state == "waiting" and not self._open():
                return None
            self.deferral.taken()
            self._in_flight += 1
        site = callsite.user_call_site(2)
        trace = None
        try:
            import tensorflow as tf

            trace = tf.profiler.experimental.Trace(api, step_num=number, _r=1)
            trace.__enter__()
        except Exception as exc:  # the call is still profiled, just not marked as a step
            trace = None
            self.collector.warn(f"TF Profiler step marker unavailable: {exc.__class__.__name__}: {exc}")
        return _Token(api, site, number, trace, self.clock())

    def stop(self, token: _Token) -> None:
        elapsed = self.clock() - token.started
        if token.trace is not None:
            try:
                token.trace.__exit__(None, None, None)
            except Exception as exc:
                self.collector.warn(f"TF Profiler step marker failed: {exc.__class__.__name__}: {exc}")
        with self._lock:
            self.profiled.append({"api": token.api, "call_site": token.call_site, "call_number": token.number,
                                  "duration_s": elapsed})
            self._in_flight -= 1
            self._stopped += 1
            done = self.state == "open" and self._stopped >= self.calls and self._in_flight == 0
            if done:
                self._close()

    def close(self) -> None:
        """Stop the profiler if the window is still open (diagnose() is exiting)."""
        if self.step_profiler is not None and self.step_profiler.active is not None:
            self.step_profiler.close(self.step_profiler.active)
        with self._lock:
            if self.state == "open":
                self._close()

    def _open(self) -> bool:
        """Start the profiler session (under the lock); False if it cannot run."""
        started = self.clock()
        reason = self.start_session()
        if reason is not None:
            return self._block(reason)
        self.start_s = self.clock() - started
        self.state = "open"
        return True

    def start_session(self, under: str | None = None) -> str | None:
        """Start a profiler session into the logdir (made on first use), or into its folder ``under``
        (step_profiler.py's: a run directory is named by the second it ends in, so sessions that
        end in the same second need their own folders); None when it runs, else why it does not."""
        try:
            import tensorflow as tf
            from tensorflow.python.framework import errors
        except ImportError as exc:
            return f"TensorFlow's profiler is not importable ({exc})"
        if self.logdir is None:
            self.logdir = tempfile.mkdtemp(prefix="tfdiag-tensorboard-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, self.logdir, True)
        try:
            with quiet_stderr([]):  # the session's C++ logging is tfdiag's, not the script's
                (self._real_start or tf.profiler.experimental.start)(os.path.join(self.logdir, under or ""))
        except errors.AlreadyExistsError:
            return ("another TF Profiler session was already running (started by the diagnosed code); "
                    "tfdiag left it alone")
        except Exception as exc:
            return f"the TF Profiler could not start ({exc.__class__.__name__}: {exc})"
        return None

    def _close(self) -> None:
        """Stop the session and write the trace (under the lock)."""
        self.state = "done"
        self.finished = True
        started = self.clock()
        self.stop_session()
        self.stop_s = self.clock() - started

    def stop_session(self) -> None:
        try:
            import tensorflow as tf
            from tensorflow.python.framework import errors

            try:
                with quiet_stderr([]):  # as at the start
                    tf.profiler.experimental.stop()
            except errors.UnavailableError:
                self.collector.warn("the diagnosed code stopped the TF Profiler inside tfdiag's window; "
                                    "its trace may be incomplete")
        except Exception as exc:
            self.collector.warn(f"the TF Profiler failed to stop: {exc.__class__.__name__}: {exc}")

    def _block(self, reason: str) -> bool:
        self.state = "blocked"
        self.finished = True
        self.blocked_by = reason
        self.collector.warn(f"TF Profiler skipped: {reason}")
        return False

    # -- results --------------------------------------------------------------------------
    def trace_files(self, under: str | None = None) -> list[dict]:
        """The ``.xplane.pb`` files written (by the call window, or into its folder ``under``),
        relative to the logdir, with their sizes."""
        if not self.logdir:
            return []
        found = sorted(glob.glob(os.path.join(self.logdir, under or "", "plugins", "profile", "*", "*.xplane.pb")))
        return [{"path": os.path.relpath(p, self.logdir).replace(os.sep, "/"), "bytes": os.path.getsize(p)}
                for p in found]

    def section(self) -> dict:
        """The ``tf_profiler`` section of the recording (op statistics read back from the trace)."""
        files = self.trace_files()
        section = {
            "first_call": self.first_call,
            "window_calls": self.calls,
            "calls_profiled": len(self.profiled),
            "blocked_by": self.blocked_by,
            "start_s": self.start_s,
            "stop_s": self.stop_s,
            "profiled": list(self.profiled),
            "trace_files": files,
            "trace_bytes": sum(f["bytes"] for f in files),
            "run": files[0]["path"].split("/")[2] if files else None,
            "logdir": None,
            "top_ops": [],
            "self_s_by_where": {},
            "steps": [],
            "summary": {},
            "converter": None,
            "call_sites": [],  # per call site: the model's op time per call (trace_ops.py)
        }
        if files and self.logdir:
            paths = [os.path.join(self.logdir, f["path"]) for f in files]
            section.update(read_trace(paths, self.collector))
            section["call_sites"] = self.call_sites(paths)
        if self.step_profiler is not None:  # fit()/evaluate() steps, per step (step_profiler.py)
            section.update(self.step_profiler.section())
        return section

    def call_sites(self, paths: list[str]) -> list[dict]:
        """Per profiled call site, the model's op time per call (trace_ops.py), or [] with a warning."""
        try:
            markers = {call["call_number"]: call["api"] for call in self.profiled}
            return trace_ops.per_call_site(self.profiled, trace_ops.call_steps(paths, markers))
        except Exception as exc:  # a trace this version cannot read costs only the cross-check
            self.collector.warn(f"TF Profiler trace not read per call: {exc.__class__.__name__}: {exc}")
            return []

    def copy_to(self, target: str) -> bool:
        """Copy the logdir into ``target`` (merging with earlier runs there); False if no trace."""
        if not self.trace_files() and not (self.step_profiler and any(w.paths for w in self.step_profiler.windows)):
            return False
        shutil.copytree(self.logdir, target, dirs_exist_ok=True)
        return True
