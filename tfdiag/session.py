"""``diagnose()``: install capture, run the user's code, uninstall, return a Recording.

Every hook goes through one Patcher, restored in ``__exit__`` whatever route the
code leaves by, so TensorFlow is never left patched. The Recording is assembled by
``capture.assemble``, analysed once (``tfdiag.analysis``) and, when ``out`` is given, its
files are written by ``tfdiag.output``. Options come checked (``tfdiag.options``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
import time
from typing import Callable

from . import analysis, output
from .capture import assemble, phase_points, sampling
from .capture.collector import Collector
from .capture.cprofile import DEFAULT_MAX_CALLS, ProfileGate
from .capture.step_profiler import StepProfiler
from .capture.tf_profiler import DEFAULT_CALLS as TF_PROFILER_CALLS, TfProfilerGate
from .capture.custom_loops import CustomLoopCapture
from .capture.function_calls import FunctionCallCapture
from .capture.keras_calls import KerasCallCapture
from .capture.patching import Patcher
from .capture.phase_tracker import PhaseTracker
from .capture.timed_calls import CallLog
from .capture.tracing import TraceCapture
from .capture.training_calls import TrainingCallCapture
from .options import Options, OptionsError, from_keywords
from .recording import Recording
from .runner import outcome_of
from .verify import DEFAULT_BUDGET_S as VERIFY_BUDGET_S, Verifier

_ACTIVE_LOCK = threading.Lock()
_ACTIVE: list["Diagnoser"] = []


class DiagnoseError(RuntimeError):
    """A misuse of diagnose() (the message is one line)."""


class Diagnoser(contextlib.ContextDecorator):
    """Context manager (and decorator) that records what TensorFlow and Keras do inside it."""

    def __init__(self, out: str | os.PathLike | None = None, *, options: Options | None = None,
                 clock: Callable[[], float] = time.perf_counter, command: list[str] | None = None) -> None:
        """``options``: what to capture, already checked (``tfdiag.options``: ``from_arguments``,
        ``from_keywords``); None: the defaults."""
        chosen = self.options = options if options is not None else Options()
        # timing=False records tf.function traces only: no call timing, phases or profilers, so
        # calls that do not trace pass through untouched (a CI retrace gate at no measurable cost).
        self.timing = chosen.timing
        self.cprofile, self.tf_profiler = chosen.profiles
        # After each call site's first calls, one call in ``phase_every`` gets the full phase
        # split (sampling.py); 1 measures every call.
        self.phase_every = chosen.phase_every if chosen.phase_every is not None else sampling.EVERY
        self.cprofile_calls = chosen.cprofile_calls if chosen.cprofile_calls is not None else DEFAULT_MAX_CALLS
        self.tf_profiler_calls = chosen.tf_profiler_calls if chosen.tf_profiler_calls is not None else TF_PROFILER_CALLS
        self.out = os.fspath(out) if out is not None else None
        self.clock = clock
        self.command = command
        self.verify = chosen.verify
        self.verify_budget = chosen.verify_budget if chosen.verify_budget is not None else VERIFY_BUDGET_S
        self.verifier: Verifier | None = None
        self.recording: Recording | None = None
        self.analysis: analysis.Analysis | None = None
        self.outcome: dict = {}
        self.files: dict[str, str] = {}
        self._patcher: Patcher | None = None

    # -- lifecycle --------------------------------------------------------------------
    def __enter__(self) -> "Diagnoser":
        with _ACTIVE_LOCK:
            if _ACTIVE:
                raise DiagnoseError("tfdiag.diagnose() is already active; nesting diagnose() is not supported")
            _ACTIVE.append(self)
        self.outcome = {}  # a Diagnoser used twice (e.g. as a decorator) starts afresh each time
        self.files = {}
        self.collector = Collector()
        self.call_log: CallLog | None = None
        self.tracker = PhaseTracker(self.clock, sampling.PhaseSampler(self.phase_every))
        self.gate = ProfileGate(self.collector, self.cprofile_calls, clock=self.clock) if self.cprofile else None
        self.tf_gate = (TfProfilerGate(self.collector, self.tf_profiler_calls, clock=self.clock)
                        if self.tf_profiler else None)
        if self.gate is not None and self.tf_gate is not None:
            self.gate.exclude = self.tf_gate.owns  # no call runs under both profilers
        self._patcher = Patcher()
        try:
            traces = TraceCapture(self.collector, self.clock, self.tracker)
            traces.install(self._patcher)
            CustomLoopCapture(self.collector, self.tracker, traces, eager=self.timing).install(self._patcher)
            if not self.timing:
                self._started = self.clock()
                return self
            phase_points.install(self._patcher, self.tracker, self.collector)
            gc.callbacks.append(self.tracker.collection)  # full collections are ``other`` time
            self.call_log = CallLog(self.collector)
            function_calls = FunctionCallCapture(self.collector, self.tracker, self.call_log)
            self.keras_capture = KerasCallCapture(self.collector, self.tracker, self.call_log)
            if self.verify:  # observes models' inputs and tf.functions' traced inputs to measure after exit
                self.verifier = Verifier(self.verify_budget, warn=self.collector.warn, clock=self.clock)
                self.verifier.install(self.keras_capture, function_calls)  # observers: before installing
            function_calls.install(self._patcher)
            if self.gate is not None:
                self.keras_capture.gates.append(self.gate)
            if self.tf_gate is not None:
                self.keras_capture.gates.append(self.tf_gate)
                self.tf_gate.install(self._patcher)
            function_calls.gates = self.keras_capture.gates  # user tf.function calls get profiled too
            self.keras_capture.install(self._patcher)
            # fit/evaluate/...: their observers are the Keras calls' (--verify's keeper reads fit's inputs)
            steps = StepProfiler(self.tf_gate, self.clock) if self.tf_gate is not None else None
            TrainingCallCapture(self.collector, self.tracker, self.call_log,
                                self.keras_capture.observers, steps).install(self._patcher)
        except BaseException:
            self._uninstall()
            raise
        self._started = self.clock()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        wall = self.clock() - self._started
        self._uninstall()
        verified = self._verify(exc_type)  # after uninstall: its calls stay out of the recording
        if not self.outcome:
            self.outcome = outcome_of(exc)
        self.outcome.setdefault("wall_s", wall)
        self.recording = self._build_recording()
        if verified is not None:
            self.recording.extra.update(verified)
        try:
            self.analysis = analysis.analyze(self.recording)
            if self.out is not None:
                self.write(self.out)
        except Exception as exc:
            if exc_type is None:
                raise
            # The user's own exception matters more: say what failed in one line and let it go on.
            print(f"tfdiag: could not finish the report ({exc.__class__.__name__}: {exc})", file=sys.stderr)
        return False

    def _verify(self, exc_type) -> dict | None:
        """--verify's ``alternatives`` and ``retrace_checks`` sections; None when not asked."""
        verifier, self.verifier = self.verifier, None
        if verifier is None:
            return None
        interrupted = ((exc_type is not None and issubclass(exc_type, KeyboardInterrupt))
                       or self.outcome.get("ended_by") == "interrupted")
        return verifier.run(interrupted)

    def _uninstall(self) -> None:
        if getattr(self, "tf_gate", None) is not None:
            self.tf_gate.close()  # never leave the TF Profiler running, whatever route we exit by
        if self._patcher is not None:
            self._patcher.restore()
            self._patcher = None
        tracker = getattr(self, "tracker", None)
        if tracker is not None and tracker.collection in gc.callbacks:
            gc.callbacks.remove(tracker.collection)
        with _ACTIVE_LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)

    def _build_recording(self) -> Recording:
        return assemble.recording(self.collector, self.command, self.outcome, self.call_log, self.gate, self.tf_gate)

    # -- results ---------------------------------------------------------------------
    @property
    def findings(self) -> list[dict]:
        return self.analysis.findings if self.analysis is not None else []

    def artifacts(self) -> output.Artifacts:
        """The profilers' own files this run can leave (see ``output.write``)."""
        found: output.Artifacts = {}
        if self.gate is not None:
            found["profile"] = self.gate.save
        if self.tf_gate is not None:
            found["tensorboard"] = self.tf_gate.copy_to
        return found

    def write(self, out: str | os.PathLike) -> dict[str, str]:
        """Write report.html, recording.json, profile.prof (when cProfile ran) and tensorboard/ (when the
        TF Profiler ran) into ``out``; returns {kind: path}."""
        if self.recording is None or self.analysis is None:
            raise DiagnoseError("no recording yet: write() is available after the diagnose() block ends")
        self.files, self.analysis = output.write(out, self.recording, self.analysis, self.artifacts())
        return dict(self.files)

    def report(self, path: str | os.PathLike | None = None) -> str:
        """Write the HTML report (to ``path`` or ``<out>/report.html``) and return its path."""
        if self.recording is None or self.analysis is None:
            raise DiagnoseError("no recording yet: report() is available after the diagnose() block ends")
        target = os.fspath(path) if path is not None else os.path.join(self.out or "tfdiag-report", "report.html")
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        return output.write_report(self.analysis, target)


def diagnose(out: str | os.PathLike | None = None, *, clock: Callable[[], float] = time.perf_counter,
             command: list[str] | None = None, **options) -> Diagnoser:
    """``with tfdiag.diagnose(out="dir") as d: ...`` then ``d.findings``, ``d.recording``, ``d.report()``.

    ``options``: the fields of ``tfdiag.options.Options`` (cprofile, cprofile_calls, tf_profiler,
    tf_profiler_calls, phase_every, verify, verify_budget, timing), checked here once; a misuse
    is a DiagnoseError. ``clock`` (an injectable clock, for tests) and ``command`` (what the
    recording's environment names as the command run) are not capture options."""
    try:
        chosen = from_keywords(options)
    except OptionsError as exc:
        raise DiagnoseError(str(exc)) from None
    return Diagnoser(out, options=chosen, clock=clock, command=command)
