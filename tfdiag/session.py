"""``diagnose()``: install capture, run the user's code, uninstall, return a Recording.

Every hook goes through one Patcher, restored in ``__exit__`` whatever route the
code leaves by, so TensorFlow is never left patched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import shlex
import threading
import time
from typing import Callable

from . import analysis
from .analysis import profile_rows
from .capture import environment
from .capture.collector import Collector
from .capture import phase_points, sampling
from .capture.cprofile import DEFAULT_MAX_CALLS, ProfileGate
from .capture.tf_profiler import DEFAULT_CALLS as TF_PROFILER_CALLS, TfProfilerGate
from .capture.function_calls import FunctionCallCapture
from .capture import whatif
from .capture.keras_calls import KerasCallCapture
from .capture.patching import Patcher
from .capture.phases import PhaseTracker
from .capture.timed_calls import CallLog
from .capture.tracing import TraceCapture
from .recording import Recording

_ACTIVE_LOCK = threading.Lock()
_ACTIVE: list["Diagnoser"] = []


class DiagnoseError(RuntimeError):
    """A misuse of diagnose() (the message is one line)."""


class Diagnoser(contextlib.ContextDecorator):
    """Context manager (and decorator) that records what TensorFlow and Keras do inside it."""

    def __init__(self, out: str | os.PathLike | None = None, *, cprofile: bool = True,
                 cprofile_calls: int = DEFAULT_MAX_CALLS,
                 tf_profiler: bool = True, tf_profiler_calls: int = TF_PROFILER_CALLS,
                 clock: Callable[[], float] = time.perf_counter, command: list[str] | None = None,
                 verify: bool = False, verify_budget: float = whatif.DEFAULT_BUDGET_S,
                 timing: bool = True, phase_every: int | None = None) -> None:
        if not timing and verify:
            raise DiagnoseError("verify=True needs call timing (it measures the models seen in timed calls)")
        if not timing and phase_every is not None:
            raise DiagnoseError("phase_every needs call timing (it samples timed calls)")
        if phase_every is None:
            phase_every = sampling.EVERY
        if isinstance(phase_every, bool) or not isinstance(phase_every, int) or phase_every < 1:
            raise DiagnoseError(f"phase_every takes a whole number of calls, 1 or more (got {phase_every!r})")
        # After each model's or function's first calls, one call in ``phase_every`` gets the full
        # phase split (sampling.py); 1 measures every call.
        self.phase_every = phase_every
        self.out = os.fspath(out) if out is not None else None
        # timing=False records tf.function traces only: no call timing, phases or profilers, so
        # calls that do not trace pass through untouched (a CI retrace gate at no measurable cost).
        self.timing = timing
        cprofile = cprofile and timing
        tf_profiler = tf_profiler and timing
        self.cprofile = cprofile
        self.cprofile_calls = cprofile_calls
        self.tf_profiler = tf_profiler
        self.tf_profiler_calls = tf_profiler_calls
        self.clock = clock
        self.command = command
        self.verify = verify
        self.verify_budget = verify_budget
        self.keeper: whatif.InputKeeper | None = None
        self.fn_keeper: whatif.FunctionKeeper | None = None
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
                        if self.tf_profiler and self.tf_profiler_calls > 0 else None)
        if self.gate is not None and self.tf_gate is not None:
            self.gate.exclude = self.tf_gate.owns  # no call runs under both profilers
        self._patcher = Patcher()
        try:
            TraceCapture(self.collector, self.clock, self.tracker).install(self._patcher)
            if not self.timing:
                self._started = self.clock()
                return self
            phase_points.install(self._patcher, self.tracker, self.collector)
            self.call_log = CallLog(self.collector)
            function_calls = FunctionCallCapture(self.collector, self.tracker, self.call_log)
            function_calls.install(self._patcher)
            self.calls = KerasCallCapture(self.collector, self.tracker, self.call_log)
            if self.verify:  # keeps each model's last input for the what-if timing after exit
                self.keeper = whatif.InputKeeper()
                self.calls.observers.append(self.keeper)
                self.fn_keeper = whatif.FunctionKeeper()  # inputs that made user tf.functions trace
                self.fn_keeper.install(self._patcher, warn=self.collector.warn)
            if self.gate is not None:
                self.calls.gates.append(self.gate)
            if self.tf_gate is not None:
                self.calls.gates.append(self.tf_gate)
                self.tf_gate.install(self._patcher)
            function_calls.gates = self.calls.gates  # user tf.function calls get profiled too
            self.calls.install(self._patcher)
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
            self.outcome = outcome_of(exc_type, exc)
        self.outcome.setdefault("wall_s", wall)
        self.recording = self._build_recording()
        if verified is not None:
            self.recording.extra.update(verified)
        try:
            self.analysis = analysis.analyze(self.recording)
            self.recording.findings = self.analysis.findings
            if self.out is not None:
                self.write(self.out)
        except Exception as exc:
            if exc_type is None:
                raise
            # The user's own exception matters more: say what failed in one line and let it go on.
            print(f"tfdiag: could not finish the report ({exc.__class__.__name__}: {exc})", file=sys.stderr)
        return False

    def _verify(self, exc_type) -> dict | None:
        """--verify: re-run retracing user functions with a generated input_signature, then time
        the alternative call paths on each model seen. None when not asked."""
        keeper, self.keeper = self.keeper, None
        fn_keeper, self.fn_keeper = self.fn_keeper, None
        if keeper is None:
            return None
        sections: dict = {"alternatives": [], "retrace_checks": []}
        if (exc_type is not None and issubclass(exc_type, KeyboardInterrupt)) or \
                self.outcome.get("ended_by") == "interrupted":
            self.collector.warn("--verify skipped: the run was interrupted")
            return sections
        started = time.perf_counter()
        try:
            if fn_keeper is not None:
                sections["retrace_checks"] = fn_keeper.verify_all(self.verify_budget * 0.25)
            remaining = max(0.0, self.verify_budget - (time.perf_counter() - started))
            sections["alternatives"] = keeper.measure_all(remaining, warn=self.collector.warn)
        except KeyboardInterrupt:
            self.collector.warn("--verify interrupted: what was not measured is missing")
        except Exception as exc:  # verification must never cost the user the report
            self.collector.warn(f"--verify failed: {exc.__class__.__name__}: {exc}")
        return sections

    def _uninstall(self) -> None:
        if getattr(self, "tf_gate", None) is not None:
            self.tf_gate.close()  # never leave the TF Profiler running, whatever route we exit by
        if self._patcher is not None:
            self._patcher.restore()
            self._patcher = None
        with _ACTIVE_LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)

    def _build_recording(self) -> Recording:
        tf_section = self._tf_profiler_section()  # first: reading the trace back may add warnings
        if self.call_log is not None:
            self.call_log.flush_all()
        sections = self.collector.sections()
        total_samples = sections.pop("call_samples_total")
        recording = Recording(environment=environment.collect(self.command), run=dict(self.outcome), **sections)
        recording.run["call_samples_total"] = total_samples
        if self.timing:
            recording.run["phase_sampling"] = {"first_calls": sampling.FIRST_CALLS, "every": self.phase_every}
        if self.gate is not None:
            recording.extra["cprofile"] = profile_rows.annotate(self.gate.section(), recording.calls)
        if tf_section is not None:
            recording.extra["tf_profiler"] = profile_rows.annotate(tf_section, recording.calls)
        return recording

    def _tf_profiler_section(self) -> dict | None:
        if self.tf_gate is None:
            return None
        try:
            return self.tf_gate.section()
        except Exception as exc:  # a broken trace must not cost the rest of the report
            self.collector.warn(f"TF Profiler results unavailable: {exc.__class__.__name__}: {exc}")
            return None

    def _write_tensorboard(self, out: str) -> None:
        """Copy the TF Profiler's logdir to ``out/tensorboard`` (the layout TensorBoard reads)."""
        section = self.recording.extra.get("tf_profiler") if self.recording is not None else None
        if self.tf_gate is None or section is None:
            return
        target = os.path.join(out, "tensorboard")
        try:
            copied = self.tf_gate.copy_to(target)
        except OSError as exc:
            self.recording.warnings.append({"message": f"could not copy the TF Profiler trace to {target}: {exc}",
                                            "count": 1})
            return
        if copied:
            self.files["tensorboard"] = target
            section["logdir"] = "tensorboard"
            section["command"] = f"tfdiag tensorboard {shlex.quote(out)}"

    # -- results ---------------------------------------------------------------------
    @property
    def findings(self) -> list[dict]:
        return self.recording.findings if self.recording is not None else []

    def write(self, out: str) -> dict[str, str]:
        """Write report.html, recording.json, profile.prof (when cProfile ran) and tensorboard/ (when the
        TF Profiler ran) into ``out``."""
        from .renderers import html

        os.makedirs(out, exist_ok=True)
        assert self.recording is not None and self.analysis is not None
        if self.gate is not None:
            prof = os.path.join(out, "profile.prof")
            if self.gate.save(prof):
                self.files["profile"] = prof
                self.recording.extra["cprofile"]["file"] = "profile.prof"
                self.recording.extra["cprofile"]["command"] = f"tfdiag snakeviz {shlex.quote(out)}"
        self._write_tensorboard(out)
        _remove_stale(out, self.files)
        self.files["recording"] = self.recording.save(os.path.join(out, "recording.json"))
        self.files["report"] = html.write_report(self.recording, self.analysis, os.path.join(out, "report.html"))
        return dict(self.files)

    def report(self, path: str | os.PathLike | None = None) -> str:
        """Write the HTML report (to ``path`` or ``<out>/report.html``) and return its path."""
        from .renderers import html

        if self.recording is None or self.analysis is None:
            raise DiagnoseError("no recording yet: report() is available after the diagnose() block ends")
        target = os.fspath(path) if path is not None else os.path.join(self.out or "tfdiag-report", "report.html")
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        return html.write_report(self.recording, self.analysis, target)


def _remove_stale(out: str, files: dict) -> None:
    """Drop a profile.prof or tensorboard/ left in ``out`` by an earlier run that this run did not write,
    so the folder never pairs this report with another run's profiles."""
    prof = os.path.join(out, "profile.prof")
    if "profile" not in files and os.path.isfile(prof):
        os.remove(prof)
    logdir = os.path.join(out, "tensorboard")
    if "tensorboard" not in files and os.path.isdir(logdir):
        shutil.rmtree(logdir)


def outcome_of(exc_type, exc) -> dict:
    """How the diagnosed code ended, as the recording's ``run`` section says it."""
    if exc_type is None:
        return {"ended_by": "returned", "exit_status": 0}
    if issubclass(exc_type, KeyboardInterrupt):
        return {"ended_by": "interrupted", "exit_status": 130}
    if issubclass(exc_type, SystemExit):
        return {"ended_by": "sys.exit", "exit_status": exit_status_of(exc)}
    return {"ended_by": "exception", "exit_status": 1,
            "exception": f"{exc_type.__name__}: {exc}"}


def exit_status_of(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1


def diagnose(out: str | os.PathLike | None = None, **options) -> Diagnoser:
    """``with tfdiag.diagnose(out="dir") as d: ...`` then ``d.findings``, ``d.recording``, ``d.report()``."""
    return Diagnoser(out, **options)
