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
import shutil
import sys
import tempfile
import threading
import time
from typing import Callable

from . import analysis, output
from .capture import assemble, phase_points, process_exits, processes, sampling
from .capture.collector import Collector
from .capture.cprofile import DEFAULT_MAX_CALLS, ProfileGate
from .capture.step_profiler import StepProfiler
from .capture.tf_profiler import DEFAULT_CALLS as TF_PROFILER_CALLS, TfProfilerGate
from .capture.custom_loops import CustomLoopCapture
from .capture.function_calls import FunctionCallCapture
from .capture.keras_calls import KerasCallCapture
from .capture.loop_inputs import LoopInputs
from .capture.memory import MemoryProbe
from .capture.patching import Patcher, guarded
from .capture.phase_tracker import PhaseTracker
from .capture.call_log import CallLog
from .capture.tracing import TraceCapture
from .capture.training_calls import TrainingCallCapture
from .capture import worker
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
                 clock: Callable[[], float] = time.perf_counter, command: list[str] | None = None,
                 processes_dir: str | None = None, child: processes.Child | None = None) -> None:
        """``options``: what to capture, already checked (``tfdiag.options``: ``from_arguments``,
        ``from_keywords``); None: the defaults. ``processes_dir``: where followed children write
        (default ``<out>/processes``; a temporary folder without ``out``). ``child``: this run is
        a followed child's own (``start_child``)."""
        chosen = self.options = options if options is not None else Options()
        # timing=False records tf.function traces only: no call timing, phases or profilers, so
        # calls that do not trace pass through untouched (a CI retrace gate at no measurable cost).
        self.timing = chosen.timing
        self.cprofile, self.tf_profiler = chosen.profiles
        # After each call site's first calls, one call in ``phase_every`` gets the full phase
        # split (sampling.py); 1 measures every call.
        self.phase_every = chosen.phase_every  # None: sampling.EVERY, less often at fast call sites
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
        self.follow = chosen.follow
        self.child = child
        if processes_dir is None and self.out is not None and child is None:
            processes_dir = os.path.join(self.out, processes.FOLDER)
        # absolute: a child that runs in another folder writes here all the same
        self.processes_dir = os.path.abspath(processes_dir) if processes_dir is not None else None
        # The CLI's: write, summarise, return the status. While it is set, the finish __exit__ starts
        # stays claimed until ``release_finish()`` (the CLI writes after the block).
        # ``on_os_exit(code)``: called with the os._exit status; returns the status to exit with.
        self.on_os_exit: Callable[[int], int] | None = None
        # How the CLI's runner says the program ended: recorded by __exit__ under the finish's claim,
        # so it never overwrites an os._exit that finished the run first (None: ``outcome`` as set).
        self.ran: dict | None = None
        # An os._exit(code) that came while another ending held the finish (it waits): the run is
        # recorded as ended by it when __exit__ has not recorded an ending yet, and the CLI exits with it.
        self.pending_exit: int | None = None
        self.abandoned = False  # True in a child forked from this run: nothing of it is written there
        self.finished_by: str | None = None  # which ending finishes the run: "exit", "os._exit", "terminated"
        # Re-entrant: an os._exit from a signal handler (or from code the write runs) in the thread that
        # holds the finish finds it taken at once, and exits as asked instead of waiting on itself.
        self._finish_lock = threading.RLock()
        self._holding = False
        self._exit_patcher: Patcher | None = None
        self._pid: int | None = None
        self._children: str | None = None
        self._run: str | None = None

    # -- lifecycle --------------------------------------------------------------------
    def __enter__(self) -> "Diagnoser":
        followed = [d for d in _ACTIVE if d.child is not None and self.child is None]
        for boot in followed:  # a followed child that runs tfdiag itself: its own diagnosis wins
            boot._step_aside()
        with _ACTIVE_LOCK:
            if _ACTIVE:
                raise DiagnoseError("tfdiag.diagnose() is already active; nesting diagnose() is not supported")
            _ACTIVE.append(self)
        self.outcome = {}  # a Diagnoser used twice (e.g. as a decorator) starts afresh each time
        self.files = {}
        self.finished_by, self._finish_lock, self._holding = None, threading.RLock(), False
        self.ran, self.pending_exit = None, None
        self.collector = Collector()
        self.call_log: CallLog | None = None
        self.memory: MemoryProbe | None = None
        self.loop_inputs: LoopInputs | None = None
        self.tracker = PhaseTracker(self.clock, sampling.PhaseSampler(self.phase_every))
        self.gate = ProfileGate(self.collector, self.cprofile_calls, clock=self.clock) if self.cprofile else None
        self.tf_gate = (TfProfilerGate(self.collector, self.tf_profiler_calls, clock=self.clock)
                        if self.tf_profiler else None)
        if self.gate is not None and self.tf_gate is not None:
            self.gate.exclude = self.tf_gate.owns  # no call runs under both profilers
        self._patcher = Patcher()
        self.worker, unreadable = worker.task()  # this process's TF_CONFIG task, read at start
        if unreadable:
            self.collector.warn(unreadable)
        try:
            self._follow_processes()
            if self.options.profiler_port is not None:  # TensorFlow's profiler server, once TF is imported
                if self.tf_profiler:  # TF profiles one session at a time: a capture and a window collide
                    self.collector.warn(worker.window_clash(self.options.profiler_port))
                self._patcher.when_imported("tensorflow", guarded(self.collector.warn, "TensorFlow's profiler server",
                                                                  worker.serve_profiler, self.options.profiler_port,
                                                                  self.collector.warn))
            traces = TraceCapture(self.collector, self.clock, self.tracker)
            traces.install(self._patcher)
            CustomLoopCapture(self.collector, self.tracker, traces, eager=self.timing).install(self._patcher)
            if not self.timing:
                self._started = self.clock()
                return self
            phase_points.install(self._patcher, self.tracker, self.collector)
            self.loop_inputs = LoopInputs(self.collector, self.tracker)  # batches a loop takes between calls
            self.loop_inputs.install(self._patcher)
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
            if self.options.memory:  # readings at the sampled calls' starts (capture/memory.py)
                self.memory = MemoryProbe(self.collector, self.clock, gates=self.keras_capture.gates)
                self.memory.install(self._patcher, self.tracker.sampler)
            self.keras_capture.install(self._patcher)
            # fit/evaluate/...: their observers are the Keras calls' (--verify's keeper reads fit's inputs)
            steps = StepProfiler(self.tf_gate, self.clock) if self.tf_gate is not None else None
            TrainingCallCapture(self.collector, self.tracker, self.call_log,
                                self.keras_capture.observers, steps).install(self._patcher)
        except BaseException:
            self._uninstall()
            self._restore_exit_hook()
            raise
        self._started = self.clock()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.abandoned or self._pid != os.getpid():
            return False  # in a forked child (this run is the parent's), or never entered
        if not self._claim("exit"):  # waits while another ending (os._exit in a thread) finishes
            return False  # os._exit finished this run (and ends the process)
        if self.pending_exit is not None:  # os._exit in a thread, waiting: the program ends by it
            self.outcome = {"ended_by": "os._exit", "exit_status": self.pending_exit}
        elif self.ran is not None:
            self.outcome = dict(self.ran)
        try:
            self._end(exc_type, exc)
        finally:
            if self.on_os_exit is None:
                self.release_finish()
        return False

    # -- one finish per run (__exit__, os._exit in any thread, a child's SIGTERM) -------------
    def _claim(self, by: str) -> bool:
        """Take the run's finish for ``by``, waiting for one already under way; False when another
        ending took it, at once when this thread holds it (a signal handler's os._exit in the middle of
        the finish: re-entrant). The taker holds it until ``release_finish``."""
        self._finish_lock.acquire()
        if self.finished_by is not None:
            self._finish_lock.release()
            return False
        self.finished_by, self._holding = by, True
        return True

    def release_finish(self) -> None:
        """The finish is over (the CLI's files written too): os._exit's hook comes off, and a thread
        waiting in it exits with its own status."""
        self._restore_exit_hook()
        if self._holding:
            self._holding = False
            self._finish_lock.release()

    def _restore_exit_hook(self) -> None:
        if self._exit_patcher is not None:
            self._exit_patcher.restore()
            self._exit_patcher = None

    def _end(self, exc_type, exc) -> None:
        """Uninstall, verify, build the recording, analyse and (with ``out``) write: once per run."""
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

    def _verify(self, exc_type) -> dict | None:
        """--verify's ``alternatives`` and ``retrace_checks`` sections; None when not asked."""
        verifier, self.verifier = self.verifier, None
        if verifier is None:
            return None
        interrupted = ((exc_type is not None and issubclass(exc_type, KeyboardInterrupt))
                       or self.outcome.get("ended_by") == "interrupted")
        return verifier.run(interrupted)

    def _uninstall(self) -> None:
        if getattr(self, "tf_gate", None) is not None and not self.abandoned:
            self.tf_gate.close()  # never leave the TF Profiler running, whatever route we exit by
        if getattr(self, "memory", None) is not None:
            self.memory.close()  # a tracemalloc window still open ends here
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
        built = assemble.recording(self.collector, self.command, self.outcome, self.call_log, self.gate, self.tf_gate)
        if self.memory is not None:  # after the call log's flush: each series knows its call site
            built.extra["memory"] = self.memory.section()
        if self.loop_inputs is not None and self.loop_inputs.sites:
            built.extra["loop_inputs"] = self.loop_inputs.section()
        if self.worker is not None:
            built.extra["worker"] = self.worker
        built.run["pid"] = os.getpid()
        if self.child is not None:
            built.run.update(role=self.child.role, parent_pid=self.child.parent, run_id=self.child.settings.run)
        elif self._children is not None:  # the children's recordings, read now (capture/processes.py)
            kept = self._children == self.processes_dir
            found = processes.collect(self._children, self._run, processes.FOLDER if kept else None)
            if found:
                built.extra["processes"] = found
            processes.close_run(self._children, self._run)  # children still running write nothing now
            if not kept:
                shutil.rmtree(self._children, ignore_errors=True)
            self._children = None
        return built

    # -- processes (capture/processes.py) --------------------------------------------------
    def _follow_processes(self) -> None:
        """os._exit writes this run first; children (forked, spawned, subprocess) are followed."""
        self._pid = os.getpid()
        self._exit_patcher = Patcher()  # on until the finish is over (release_finish), not only the block
        process_exits.install_exit_hook(self._exit_patcher, self._os_exit)
        processes.install_fork_handler(self._patcher, self._forked)
        if not self.follow:
            return
        if self.child is not None:
            folder, self._run = self.child.settings.dir, self.child.settings.run
        else:
            if self.processes_dir is not None:
                processes.clear(self.processes_dir)  # an earlier run's children are not this run's
            folder = self._children = self.processes_dir or tempfile.mkdtemp(prefix="tfdiag-processes-")
            self._run = processes.open_run(folder)
        process_exits.install_reaper(self._patcher, folder)
        processes.install_environment(self._patcher, folder, self._run, processes.child_options(self.options))

    def _os_exit(self, code: int) -> int:
        """Inside the patched os._exit: finish capture and write (or wait for the finish under way);
        returns the status to exit with."""
        if self.abandoned:
            return code
        if self.pending_exit is None:
            self.pending_exit = code  # seen by the finish under way, if one is (it records this ending)
        if not self._claim("os._exit"):
            return code  # another ending finished the run (or this thread is finishing it): exit as asked
        self.outcome = {"ended_by": "os._exit", "exit_status": code}
        self._end(None, None)
        return self.on_os_exit(code) if self.on_os_exit is not None else code

    def _forked(self) -> None:
        """In a child forked during this run: this run's hooks come off there and nothing of it is
        written there; when following, the child starts its own run."""
        global _ACTIVE_LOCK
        _ACTIVE_LOCK = threading.Lock()  # another thread of the parent may have held it at the fork
        self._finish_lock, self._holding = threading.RLock(), False
        process_exits.drop_inherited_sigterm()
        settings = processes.read_settings() if self.follow else None  # before the environment is put back
        self.abandoned = True
        self._children = None
        self._uninstall()
        self._restore_exit_hook()
        if settings is not None:
            start_child(settings, "fork")

    def _step_aside(self) -> None:
        """A followed child's run gives way to a diagnosis the child starts itself: its hooks come
        off and it is not listed (the child's own report is its own)."""
        self.abandoned = True
        self._uninstall()
        self._restore_exit_hook()
        process_exits.drop_inherited_sigterm()
        processes.forget(self.child)

    def _finish_child(self, outcome: dict) -> bool:
        """A followed child's end (atexit, SIGTERM): its recording, written once; False when another
        ending took the run."""
        if self._pid != os.getpid() or self.abandoned or not self._claim(outcome["ended_by"]):
            return False
        if self.pending_exit is not None:  # os._exit in a thread, waiting: the child ends by it
            outcome = {"ended_by": "os._exit", "exit_status": self.pending_exit}
        try:
            self.outcome = outcome
            self._end(None, None)
        finally:
            self.release_finish()
        return True

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
        if self.child is not None:  # a followed child: its recording only, for the parent to read
            if not processes.is_live(self.child.settings.dir, self.child.settings.run):
                return {}  # its run is over (or its folder gone): nothing is written, nothing recreated
            path = os.path.join(out, processes.RECORDING)
            self.files = {"recording": output.write_recording(path, self.recording, self.analysis)}
            return dict(self.files)
        self.files, self.analysis = output.write(out, self.recording, self.analysis, self.artifacts())
        return dict(self.files)

    def report(self, path: str | os.PathLike | None = None) -> str:
        """Write the HTML report (to ``path`` or ``<out>/report.html``) and return its path."""
        if self.recording is None or self.analysis is None:
            raise DiagnoseError("no recording yet: report() is available after the diagnose() block ends")
        target = os.fspath(path) if path is not None else os.path.join(self.out or "tfdiag-report", "report.html")
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        return output.write_report(self.analysis, target)


def start_child(settings: processes.Settings | None = None, role: str | None = None) -> Diagnoser | None:
    """A followed child's own run, from its startup (``tfdiag/_boot``) or its fork to its exit;
    None when this process is not followed (or is multiprocessing's helper)."""
    settings = settings if settings is not None else processes.read_settings()
    role = role or processes.role_of(list(getattr(sys, "orig_argv", sys.argv)))
    if settings is None or role == "helper":
        return None
    if role == "forkserver-server":  # not user code: the children it forks are followed
        patcher = Patcher()
        processes.install_fork_handler(patcher, lambda: (patcher.restore(), start_child(settings, "forkserver")))
        return None
    me = processes.child(settings, role)
    if not processes.write_marker(me):
        return None  # its run is over (a forkserver or pool kept past it) or its folder gone: not followed
    diagnoser = Diagnoser(me.folder, options=processes.options_of(settings), child=me,
                          command=[str(a) for a in getattr(sys, "orig_argv", sys.argv)])
    diagnoser.__enter__()
    processes.install_exec_hook(diagnoser._patcher, me)
    processes.install_child_exits(diagnoser._patcher, diagnoser._finish_child, lambda: diagnoser.finished_by not in (None, "terminated"))
    return diagnoser


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
