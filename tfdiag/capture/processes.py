"""Beyond one process: Python children are followed, each run's own.

Why: work done in a pool's workers or a subprocess would otherwise be invisible.

How, as viztracer and ddtrace do it:
- While a diagnosis runs, ``TFDIAG_CHILD`` (JSON: where children write, this run's id, the
  capture options) is set and ``tfdiag/_boot`` is put first on ``PYTHONPATH`` (both through the
  Patcher, so both come off by value when it restores). That folder holds only a
  ``sitecustomize.py``: a Python child started by subprocess or by multiprocessing's spawn or
  forkserver starts its own diagnosis at startup (not one started with ``-I``, ``-E`` or ``-S``:
  those skip PYTHONPATH or sitecustomize). A forked child (``os.register_at_fork``) drops the
  parent's hooks and data and starts its own.
- The run's folder holds ``run.json`` (this run's id) while the run lasts: a child follows and
  writes only while it names the child's run, so a child started or ending after the run (a
  forkserver or a spawn pool kept past the block, an orphan) writes nothing, and never
  recreates a folder that is gone. Each child writes ``DIR/processes/<pid>/started.json`` at
  start and ``recording.json`` when it ends (process_exits.py: at exit, in ``os._exit``, on
  SIGTERM); a child killed outright (SIGKILL) leaves only the marker.
- The parent reads them all when it writes (``collect``, this run's only): one entry per child in
  its recording's ``processes`` section, with per-call-site summaries the analysis merges, and
  the exit status the reaping process saw (``exit.json``) where there is one.

Cost: nothing per call. Each followed Python child imports tfdiag at startup (~0.2 s on a
2-core machine) and runs without cProfile or the TF Profiler, so it pays only call timing.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Callable

from ..options import Options
from ..recording import write_atomically
from . import process_exits
from .process_exits import EXIT_FILE, say

ENV = "TFDIAG_CHILD"
FOLDER = "processes"  # under the run's output folder
MARKER = "started.json"
RECORDING = "recording.json"
RUN_FILE = "run.json"  # in the children's folder while the run lasts: its id
EXEC_FILE = "exec.json"  # in a child's folder: it replaced itself with another program (os.exec*)
BOOT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_boot")
TOP_CALLS = 50  # call sites summarised per child in the parent's recording

# The handler a forked child runs (the active diagnosis's); patched in through its Patcher.
on_fork_child: Callable[[], None] | None = None
_FORK_REGISTERED: list[bool] = []


# -- the environment children inherit ----------------------------------------------------
class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET = _Unset()


class _Environment:
    """``os.environ`` as attributes, so the Patcher sets variables and puts them back (an unset
    one reads as ``UNSET``, and setting ``UNSET`` removes it)."""

    def __getattr__(self, name: str):
        if name.startswith("__"):  # not a variable: what Python and tools look up on any object
            raise AttributeError(name)
        return os.environ.get(name, UNSET)

    def __setattr__(self, name: str, value) -> None:
        if value is UNSET:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    def __repr__(self) -> str:
        return "os.environ"


ENVIRONMENT = _Environment()


def child_options(options: Options) -> dict:
    """What a child captures: the parent's timing and memory choices, never the profilers or --verify."""
    return {"timing": options.timing, "phase_every": options.phase_every, "memory": options.memory, "follow": True}


def install_environment(patcher, folder: str, run: str, options: dict) -> None:
    """Children started from now on (subprocess, spawn, forkserver) run tfdiag's bootstrap."""
    setting = json.dumps({"dir": folder, "run": run, "options": options, "parent": os.getpid()})
    patcher.patch(ENVIRONMENT, ENV, lambda _: setting)
    patcher.patch(ENVIRONMENT, "PYTHONPATH", lambda path: boot_path(None if path is UNSET else path))


def boot_path(path: str | None) -> str:
    """PYTHONPATH with the bootstrap first: every entry kept as it was, an empty one (the working
    folder) included; only an earlier bootstrap entry goes."""
    parts = path.split(os.pathsep) if path else []
    return os.pathsep.join([BOOT_DIR, *(p for p in parts if not (p and os.path.abspath(p) == BOOT_DIR))])


@dataclass(frozen=True)
class Settings:
    """What a child was told by its parent (``TFDIAG_CHILD``)."""

    dir: str
    options: dict
    parent: int
    run: str


def read_settings(environ=None) -> Settings | None:
    """The parent's settings, or None when this process is not a followed child."""
    text = (os.environ if environ is None else environ).get(ENV)
    if not text:
        return None
    try:
        data = json.loads(text)
        folder, options, parent = data["dir"], data.get("options") or {}, int(data.get("parent") or 0)
        run = data["run"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(folder, str) or not isinstance(options, dict) or not isinstance(run, str) or not run:
        return None
    return Settings(folder, options, parent, run)


def options_of(settings: Settings) -> Options:
    known = {"timing", "phase_every", "memory", "follow"}
    given = {k: v for k, v in settings.options.items() if k in known}
    return Options(**given, cprofile=False, tf_profiler=False)


def role_of(argv: list[str]) -> str:
    """``spawn`` (a multiprocessing spawn child), ``forkserver-server`` (multiprocessing's fork
    server: its forked children are followed, it is not), ``helper`` (the resource tracker: not
    followed) or ``subprocess`` (any other Python started with the inherited environment)."""
    code = argv[argv.index("-c") + 1] if "-c" in argv[:-1] else ""
    if code.startswith("from multiprocessing.spawn import spawn_main"):
        return "spawn"
    if code.startswith("from multiprocessing.forkserver import main"):
        return "forkserver-server"
    if code.startswith("from multiprocessing.resource_tracker import main"):
        return "helper"
    return "subprocess"


# -- forks ----------------------------------------------------------------------------------
def install_fork_handler(patcher, handler: Callable[[], None]) -> None:
    """``handler()`` runs in each child forked while the patcher is live (os.fork, multiprocessing's
    fork and forkserver). The at-fork registration is for the process's life; it does nothing
    while no handler is patched in."""
    if not _FORK_REGISTERED:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _FORK_REGISTERED.append(True)
    patcher.patch(sys.modules[__name__], "on_fork_child", lambda _: handler)


def _after_fork_in_child() -> None:
    handler = on_fork_child
    if handler is None or _about_to_exec():
        return
    try:
        handler()
    except Exception as exc:  # the child goes on, unobserved
        say(f"could not follow forked process {os.getpid()} ({exc.__class__.__name__}: {exc})")


def _about_to_exec() -> bool:
    """subprocess with ``preexec_fn`` runs at-fork handlers in a child that will exec at once."""
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "_execute_child" and frame.f_code.co_filename.endswith("subprocess.py"):
            return True
        frame = frame.f_back
    return False


# -- a child's own run ------------------------------------------------------------------------
@dataclass(frozen=True)
class Child:
    """This process as a followed child: its role, its parent, the folder it writes to."""

    settings: Settings
    role: str
    pid: int
    parent: int

    @property
    def folder(self) -> str:
        return os.path.join(self.settings.dir, str(self.pid))


def child(settings: Settings, role: str) -> Child:
    return Child(settings, role, os.getpid(), os.getppid())


def forget(me: Child) -> None:
    """This child is not to be listed (its run stepped aside): its folder goes."""
    shutil.rmtree(me.folder, ignore_errors=True)


# -- this run's id, in the children's folder -----------------------------------------------------
def open_run(folder: str) -> str:
    """A new run's id, written to ``folder/run.json`` (the folder made if need be)."""
    run = os.urandom(8).hex()
    os.makedirs(folder, exist_ok=True)
    write_atomically(os.path.join(folder, RUN_FILE), json.dumps({"run": run, "parent": os.getpid()}))
    return run


def close_run(folder: str, run: str) -> None:
    """The run is over: children still running write nothing now."""
    if is_live(folder, run):
        try:
            os.remove(os.path.join(folder, RUN_FILE))
        except OSError:
            pass


def is_live(folder: str, run: str) -> bool:
    """``folder`` still holds the run ``run`` (not over, not replaced by a later run)."""
    data = _read_json(os.path.join(folder, RUN_FILE))
    return isinstance(data, dict) and data.get("run") == run


def write_marker(me: Child) -> bool:
    """``started.json``: so a child killed before it writes is still listed. False (nothing
    written, the child is not followed) when its run is over or its folder gone."""
    if not is_live(me.settings.dir, me.settings.run):
        return False
    try:
        os.mkdir(me.folder)  # never its parents: a run's folder that is gone stays gone
    except FileExistsError:
        pass
    except OSError:
        return False
    marker = {"pid": me.pid, "parent_pid": me.parent, "role": me.role, "run": me.settings.run,
              "argv": [str(a) for a in getattr(sys, "orig_argv", sys.argv)], "started_at": time.time()}
    write_atomically(os.path.join(me.folder, MARKER), json.dumps(marker))
    return True


def install_exec_hook(patcher, me: Child) -> None:
    """``os.execv``/``os.execve`` (which every ``os.exec*`` ends in) note in ``exec.json`` that the
    child replaced itself with another program: listed so, not as lost (it writes no recording)."""

    def make(real):
        def exec_(path, args, *rest):
            note = os.path.join(me.folder, EXEC_FILE)
            try:
                write_atomically(note, json.dumps({"argv": [str(a) for a in args] or [str(path)]}))
            except (OSError, TypeError):
                pass
            try:
                return real(path, args, *rest)
            except BaseException:  # it did not exec: the child goes on
                with contextlib.suppress(OSError):
                    os.remove(note)
                raise

        return exec_

    for name in ("execv", "execve"):
        patcher.patch(os, name, make)


def install_child_exits(patcher, finish: Callable[[dict], bool], finishing: Callable[[], bool]) -> None:
    """A child's ways out, each finishing its run once with how it ended: interpreter exit
    (atexit: ``process_exits.ending``), SIGTERM (``process_exits.Terminator``, its wakeup fd kept
    through the program's own uses: ``install_wakeup_guard``), and ``os._exit``
    (``process_exits.install_exit_hook``). ``finishing()``: another ending is writing the run."""
    atexit.register(lambda: finish(process_exits.ending()))
    if process_exits.Terminator(finish, finishing).install():
        process_exits.install_wakeup_guard(patcher)


# -- the parent's view of its children ------------------------------------------------------
def clear(folder: str) -> None:
    """Drop an earlier run's children (their ``<pid>`` folders, nothing else of ``folder``)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        here = os.path.join(folder, name)
        if name.isdigit() and any(os.path.isfile(os.path.join(here, f)) for f in (MARKER, RECORDING)):
            shutil.rmtree(here, ignore_errors=True)


def collect(folder: str, run: str, relative: str | None = FOLDER) -> list[dict]:
    """One entry per child of the run ``run`` that started under ``folder``, oldest first.
    ``relative``: how the parent's output folder reaches ``folder`` (None: the recordings are
    not kept)."""
    try:
        names = [n for n in os.listdir(folder) if n.isdigit()]
    except OSError:
        return []
    entries = [_entry(os.path.join(folder, name), int(name), run, relative) for name in names]
    found = [e for e in entries if e is not None]
    return sorted(found, key=lambda e: (e.get("started_at") or 0.0, e["pid"]))


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _entry(folder: str, pid: int, run_id: str, relative: str | None) -> dict | None:
    """The child ``pid``'s entry; None when it is not this run's."""
    marker = _read_json(os.path.join(folder, MARKER))
    if not isinstance(marker, dict) or marker.get("run") != run_id:
        return None
    data = _read_json(os.path.join(folder, RECORDING))
    run = data.get("run") if isinstance(data, dict) and isinstance(data.get("run"), dict) else None
    reaped = _read_json(os.path.join(folder, EXIT_FILE))
    reaped = reaped if isinstance(reaped, dict) else {}
    entry = {"pid": pid, "parent_pid": marker.get("parent_pid"), "role": marker.get("role") or "unknown",
             "argv": marker.get("argv") or [], "started_at": marker.get("started_at"), "recording": None,
             "signal": reaped.get("signal")}
    execed = _read_json(os.path.join(folder, EXEC_FILE))
    if run is None and isinstance(execed, dict) and isinstance(execed.get("argv"), list):
        entry.update(status="exec", exec_argv=[str(a) for a in execed["argv"]], wall_s=None,
                     exit_status=reaped.get("exit_status"), ended_by="exec", top_finding=None, calls=[],
                     functions=[], findings=0)
        return entry
    if run is None or run.get("run_id") != run_id:
        entry.update(status="running" if not reaped and _alive(pid) else "no-recording", wall_s=None,
                     exit_status=reaped.get("exit_status"), ended_by=None, top_finding=None, calls=[],
                     functions=[], findings=0)
        return entry
    findings = [f for f in data.get("findings") or [] if isinstance(f, dict)]
    top = findings[0] if findings else None
    status = reaped["exit_status"] if "exit_status" in reaped else run.get("exit_status")  # the reaper's, if any
    entry.update(
        status="recorded", wall_s=run.get("wall_s"), exit_status=status, ended_by=run.get("ended_by"),
        exception=run.get("exception"), recording=f"{relative}/{pid}/{RECORDING}" if relative is not None else None,
        findings=len(findings),
        top_finding={k: top.get(k) for k in ("code", "severity", "title", "call_site")} if top else None,
        calls=_calls(data.get("calls")), functions=_functions(data.get("functions")))
    return entry


def _calls(calls) -> list[dict]:
    keep = ("api", "target", "call_site", "input_signature", "count", "total_s", "median_s")
    rows = [{k: c.get(k) for k in keep} for c in calls or [] if isinstance(c, dict)]
    rows.sort(key=lambda c: -(c.get("total_s") or 0.0))
    return rows[:TOP_CALLS]


def _functions(functions) -> list[dict]:
    keep = ("name", "origin", "defined_at", "trace_count")
    return [{k: f.get(k) for k in keep} for f in functions or []
            if isinstance(f, dict) and f.get("origin") == "user"][:TOP_CALLS]


def _alive(pid: int) -> bool:
    """Still running (not a zombie) when the parent writes."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
