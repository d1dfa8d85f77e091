"""How a diagnosed process ends, seen from inside it and from its parent: ``os._exit``, SIGTERM,
the end of the program, and the exit status of the children it reaps.

Why: a run that ends with ``os._exit`` (as multiprocessing's children always do) or that a
pool's ``terminate()`` ends with SIGTERM would otherwise lose everything measured; and what a
child says of its own end cannot always be known inside it (``raise SystemExit(4)`` reaching
the top leaves no trace an ``atexit`` hook can read), while the parent that reaps it knows.

- ``install_exit_hook``: ``os._exit(code)`` first finishes the run (the caller's ``flush``), in
  whichever thread calls it; a second thread waits in ``flush`` for the first to finish (and the
  CLI then exits with its status); the thread that is finishing (a signal handler's ``os._exit``
  mid-write) exits at once, its files written atomically or not at all.
- ``Terminator``: a followed child's SIGTERM. Python runs a signal handler only once the main
  thread is back in Python, which a call blocked in C (a TensorFlow wait) may never be: so the
  signal also wakes a watcher thread (``signal.set_wakeup_fd``), which writes the recording; the
  main thread's handler, when it runs, waits for that write and dies of SIGTERM as it would have.
  If the main thread stays stuck in C, the watcher ends the process with status 143 (128 + 15).
- ``install_reaper``: ``os.waitpid`` (subprocess's and multiprocessing's wait) and ``Popen.poll()``
  (through ``Popen._handle_exitstatus``: poll binds ``os.waitpid`` at import) note the status of
  each followed child it reaps in that child's folder (``exit.json``), so the parent's listing
  says how it really ended. ``ending()``: what the child itself can tell at exit, no guess.

Cost: nothing per call. One pipe and one idle thread per followed child; a stat per reaped child.
"""

from __future__ import annotations

import _thread
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

from ..recording import write_atomically
from ..runner import SIGTERM_STATUS

EXIT_FILE = "exit.json"  # in a child's folder: its status as the process that reaped it saw it
FLUSH_TIMEOUT_S = 10.0  # a child on SIGTERM writes within this, or dies without a recording
GRACE_S = 0.5  # after writing: the main thread's handler gets this long to die of the signal itself
TERMINATED = {"ended_by": "terminated", "exit_status": SIGTERM_STATUS}
_REAL_EXIT = os._exit  # taken at import, before any run patches it


# -- os._exit -----------------------------------------------------------------------------
def install_exit_hook(patcher, flush: Callable[[int], int]) -> None:
    """``os._exit(code)`` first calls ``flush(code)`` (which finishes and writes the run, or waits
    for a finish already under way, and returns the status to exit with), then the real
    ``os._exit``. Only in this process: a forked child that inherits the hook exits at once; a
    thread that calls it again from inside its own flush exits at once too."""
    owner = os.getpid()

    def make(real):
        busy: set[int] = set()

        def _exit(code=0):
            status = code
            me = _thread.get_ident()
            if os.getpid() == owner and me not in busy:
                busy.add(me)
                try:
                    status = flush(code)
                except BaseException as exc:  # exit as asked, whatever writing did
                    say(f"could not write the report before os._exit ({exc.__class__.__name__}: {exc})")
                try:
                    sys.stderr.flush()
                except Exception:
                    pass
            real(status)

        _exit.__wrapped__ = real
        return _exit

    patcher.patch(os, "_exit", make)


def say(message: str) -> None:
    try:
        print(f"tfdiag: {message}", file=sys.stderr, flush=True)
    except Exception:
        pass


# -- the end of a followed child's program ------------------------------------------------------
def ending() -> dict:
    """How this process's program ended, as far as it can tell at exit (an ``atexit`` hook):
    Ctrl-C (130) or an uncaught exception (1), which Python leaves in ``sys.last_value``; else
    ``exited`` with no status: a return and a ``SystemExit`` reaching the top look alike here
    (the parent that reaps the child fills the status in, ``install_reaper``)."""
    error = getattr(sys, "last_value", None)
    if isinstance(error, KeyboardInterrupt):
        return {"ended_by": "interrupted", "exit_status": 130}
    if error is not None:
        return {"ended_by": "exception", "exit_status": 1, "exception": f"{type(error).__name__}: {error}"}
    return {"ended_by": "exited", "exit_status": None}


# -- SIGTERM in a followed child ------------------------------------------------------------------
_WAKEUP: list[int] = []  # this process's wakeup pipe (pid, read end, write end), while a Terminator has it
_DISPLACED: list[bool] = []  # [True] while the program's own wakeup fd stands in for the Terminator's
_REAL_SET_WAKEUP = signal.set_wakeup_fd


class Terminator:
    """A followed child's SIGTERM: ``finish(TERMINATED)`` writes the recording (returns False when
    another ending, at exit or ``os._exit``, took the run: that one ends the process), then the
    process dies of SIGTERM. ``finishing()``: another ending is writing the run already."""

    def __init__(self, finish: Callable[[dict], bool], finishing: Callable[[], bool]) -> None:
        self.finish, self.finishing = finish, finishing
        self.started = _thread.allocate_lock()  # taken by whichever thread writes
        self.done = _thread.allocate_lock()
        self.done.acquire()  # released once the write is over
        self.wrote = False

    def install(self) -> bool:
        """In the main thread, where SIGTERM still kills (default, or tfdiag's inherited handler)
        and no one else uses the wakeup fd; False (SIGTERM left as it is) otherwise."""
        if threading.current_thread() is not threading.main_thread():
            return False
        current = signal.getsignal(signal.SIGTERM)
        if current not in (signal.SIG_DFL, None) and not inherited(current):
            return False  # the child's own handler: its way of ending stays its own
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        try:
            previous = _REAL_SET_WAKEUP(write_fd, warn_on_full_buffer=False)
        except (ValueError, OSError):
            previous = None
        if previous != -1:  # taken by someone else (or unavailable): put theirs back, leave SIGTERM
            if previous is not None:
                _REAL_SET_WAKEUP(previous)
            os.close(read_fd)
            os.close(write_fd)
            return False
        _WAKEUP[:] = [os.getpid(), read_fd, write_fd]
        signal.signal(signal.SIGTERM, self.on_signal)
        _thread.start_new_thread(self.watch, (read_fd,))  # a bare thread: not in threading.enumerate()
        return True

    def watch(self, read_fd: int) -> None:
        """The watcher: wakes on every signal's byte, acts on SIGTERM's, whatever the main thread does."""
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            if not data:  # the write end was closed (drop_inherited_sigterm): the pipe is done with
                with contextlib.suppress(OSError):
                    os.close(read_fd)
                return
            if signal.SIGTERM in data and _WAKEUP and signal.getsignal(signal.SIGTERM) == self.on_signal:
                # (a handler the child set since is its own way of ending: then this one stays out)
                if self.started.acquire(False):
                    self._write()
                if self.wrote:  # the main thread's handler dies of the signal; if it is stuck in C, we end it
                    time.sleep(GRACE_S)
                    _REAL_EXIT(SIGTERM_STATUS)
                return

    def on_signal(self, signum, frame) -> None:
        """The main thread's handler, once it is back in Python: the write happens in another thread
        (a lock the interrupted code holds cannot hang it), then die of SIGTERM as before."""
        if self.finishing():
            return  # already on its way out (at exit, os._exit: a pool worker that took its sentinel)
        if self.started.acquire(False):
            _thread.start_new_thread(self._write, ())  # never threading.Thread in a handler (its locks)
        self.done.acquire(timeout=FLUSH_TIMEOUT_S)
        if not self.wrote and self.finishing():
            return  # another ending took the run meanwhile: it ends the process
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    def _write(self) -> None:
        try:
            self.wrote = bool(self.finish(dict(TERMINATED)))
        except BaseException as exc:
            say(f"could not write process {os.getpid()}'s recording on SIGTERM ({exc.__class__.__name__}: {exc})")
            self.wrote = True  # nothing else will end the process: die of the signal anyway
        finally:
            self.done.release()


def install_wakeup_guard(patcher) -> None:
    """``signal.set_wakeup_fd`` as the program sees it while a Terminator holds the wakeup fd: the
    program's own fd (asyncio's ``loop.add_signal_handler``) replaces it, and taking that off again
    (-1: the loop closed) puts the Terminator's back, so SIGTERM still wakes the watcher afterwards.
    Where the Terminator's is set, the program is told none is (-1), as it would be without tfdiag."""

    def make(real):
        def set_wakeup_fd(fd, /, *, warn_on_full_buffer=True):
            ours = _WAKEUP[2] if _WAKEUP and _WAKEUP[0] == os.getpid() else None
            if ours is None or threading.current_thread() is not threading.main_thread():
                return real(fd, warn_on_full_buffer=warn_on_full_buffer)  # (in a thread: its ValueError)
            if fd != -1:
                previous = real(fd, warn_on_full_buffer=warn_on_full_buffer)
                if previous != ours:
                    return previous
                _DISPLACED[:] = [True]
                return -1
            if not _DISPLACED:
                return -1  # only the Terminator's is set: it stays
            _DISPLACED.clear()
            return real(ours, warn_on_full_buffer=False)

        return set_wakeup_fd

    patcher.patch(signal, "set_wakeup_fd", make)


def inherited(handler) -> bool:
    """The runner's SIGTERM handler, or a followed parent's own (``Terminator.on_signal``)."""
    return getattr(handler, "__module__", "") in ("tfdiag.runner", __name__)


def drop_inherited_sigterm() -> None:
    """In a child forked from ``tfdiag analyze`` or from a followed child, or where a followed
    child's run steps aside: SIGTERM kills it again, as it would without tfdiag, and the
    wakeup fd a Terminator set is taken off and its pipe closed (its watcher thread, where there
    is one, ends on the closed pipe; none came through a fork)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if inherited(signal.getsignal(signal.SIGTERM)):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if _WAKEUP:
        pid, read_fd, write_fd = _WAKEUP
        _WAKEUP.clear()
        _DISPLACED.clear()
        previous = _REAL_SET_WAKEUP(-1)
        if previous != write_fd:
            _REAL_SET_WAKEUP(previous)
        with contextlib.suppress(OSError):
            os.close(write_fd)  # the watcher, where there is one, reads the end of the pipe and closes its end
        if pid != os.getpid():  # forked: no watcher came through the fork
            with contextlib.suppress(OSError):
                os.close(read_fd)


# -- the status of reaped children ------------------------------------------------------------------
def install_reaper(patcher, folder: str) -> None:
    """``os.waitpid`` (subprocess's ``wait()``, multiprocessing's ``join()``, a script's own) and
    ``subprocess.Popen.poll()`` note the status of a followed child of this run they reap in
    ``folder/<pid>/exit.json``."""

    def make(real):
        def waitpid(pid, options):
            result = real(pid, options)
            if result[0] > 0:
                note_exit(folder, *result)
            return result

        return waitpid

    patcher.patch(os, "waitpid", make)

    def make_handler(real):  # Popen.poll() reaps with the os.waitpid it bound at import: seen here instead
        def _handle_exitstatus(self, sts, *rest, **kwargs):
            try:
                note_exit(folder, self.pid, sts)
            except Exception:  # (also called from __del__: never let a note break it)
                pass
            return real(self, sts, *rest, **kwargs)

        return _handle_exitstatus

    patcher.patch(subprocess.Popen, "_handle_exitstatus", make_handler)


def note_exit(folder: str, pid: int, status: int) -> None:
    here = os.path.join(folder, str(pid))
    if not (os.WIFEXITED(status) or os.WIFSIGNALED(status)) or not os.path.isdir(here):
        return
    signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    noted = {"exit_status": 128 + signum if signum else os.WEXITSTATUS(status),
             "signal": signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else signum}
    try:
        write_atomically(os.path.join(here, EXIT_FILE), json.dumps(noted))
    except OSError:
        pass  # the run's folder went: nothing to tell
