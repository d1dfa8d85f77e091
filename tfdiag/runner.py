"""Run a user's script as ``__main__``: its argv, its folder first on sys.path, its exit status.

The script is read and compiled before any heavy work, so a missing file or a
syntax error is one clear line (exit 2) rather than a half-started run.
"""

from __future__ import annotations

import _thread
import gc
import os
import signal
import sys
import threading
import time
import traceback
import types
import weakref

SIGTERM_STATUS = 128 + signal.SIGTERM


class Terminated(BaseException):
    """Raised in the script's main thread on SIGTERM, so the report of what ran is still written."""


class ScriptError(Exception):
    """The script cannot be run at all (missing, a directory, a syntax error): one line, exit 2."""


def compile_script(path: str) -> types.CodeType:
    if not os.path.exists(path):
        raise ScriptError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ScriptError(f"{path}: is a directory, not a Python script")
    try:
        with open(path, "rb") as fh:
            source = fh.read()
    except OSError as exc:
        raise ScriptError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return _raise_syntax(path, exc)
    except ValueError as exc:  # e.g. source with NUL bytes
        raise ScriptError(f"{path}: cannot compile ({exc})") from None


def _raise_syntax(path: str, exc: SyntaxError):
    where = f"{path}:{exc.lineno}" if exc.lineno else path
    raise ScriptError(f"{where}: syntax error: {exc.msg}") from None


def run_code(code: types.CodeType, path: str, args: list[str]) -> dict:
    """Execute compiled script code as __main__; returns how it ended (status and cause).

    Exceptions are printed as Python prints them (tfdiag's own frame left out);
    nothing propagates, so the caller always gets to write its report.
    """
    saved_argv = sys.argv
    saved_path0 = list(sys.path)
    saved_main = sys.modules.get("__main__")
    module = types.ModuleType("__main__")
    module.__dict__.update({"__file__": path, "__builtins__": __builtins__, "__spec__": None,
                            "__loader__": None, "__package__": None, "__cached__": None})
    sys.argv = [path, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    sys.modules["__main__"] = module
    previous_handler = _install_sigterm_handler()
    previous_int = _install_sigint_handler()
    threads_before = set(threading.enumerate())
    try:
        try:
            exec(code, module.__dict__)
        finally:
            _join_script_threads(threads_before)
        return outcome_of(None)
    except Terminated as exc:
        print("Terminated (SIGTERM)", file=sys.stderr)
        return outcome_of(exc)
    except SystemExit as exc:
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)  # as the interpreter does for sys.exit("message")
        return outcome_of(exc)
    except BaseException as exc:  # the user's own exception (or Ctrl-C): print it, keep the report
        _print_user_traceback(*sys.exc_info())
        return outcome_of(exc)
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
        sys.argv = saved_argv
        sys.path[:] = saved_path0
        if saved_main is not None:
            sys.modules["__main__"] = saved_main


def outcome_of(exc: BaseException | None) -> dict:
    """How the code ended, as the recording's ``run`` section says it: ``ended_by``, the exit
    status the interpreter would have given, and the exception (one line) if one ended it."""
    if exc is None:
        return {"ended_by": "returned", "exit_status": 0}
    if isinstance(exc, Terminated):
        return {"ended_by": "terminated", "exit_status": SIGTERM_STATUS}
    if isinstance(exc, KeyboardInterrupt):
        return {"ended_by": "interrupted", "exit_status": 130}
    if isinstance(exc, SystemExit):
        code = exc.code
        return {"ended_by": "sys.exit", "exit_status": 0 if code is None else int(code) if isinstance(code, int) else 1}
    return {"ended_by": "exception", "exit_status": 1, "exception": f"{type(exc).__name__}: {exc}"}


def _print_user_traceback(exc_type, exc, tb) -> None:
    """Print as the interpreter would, minus the runner's own frame."""
    if tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    sys.stderr.flush()
    traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
    sys.stderr.flush()


def _raising(exception: type[BaseException]):
    """A signal handler that raises ``exception`` in the script. Raised in a gc callback (the
    session's PhaseTracker.collection runs on every collection), a weakref finalizer or a
    ``__del__``, it would only be printed as "Exception ignored" and the script would run on for
    ever: there the signal is delivered again shortly, from a bare thread (no Python lock taken
    here), once the main thread is back in ordinary code."""

    def handler(signum, frame):
        if _swallows_exceptions(frame):
            _thread.start_new_thread(_redeliver, (signum,))
            return
        raise exception()

    return handler


_raise_terminated = _raising(Terminated)
_raise_interrupt = _raising(KeyboardInterrupt)  # as Python's own Ctrl-C handler does


def _install_handler(signum, handler, replaces: tuple):
    """``handler`` for ``signum`` while the script runs (main thread only, and only in place of
    one of ``replaces``: an embedding program's own handler is left alone); returns the old
    handler to put back, or None when nothing was changed."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signum)
    if previous not in replaces:
        return None
    signal.signal(signum, handler)
    return previous


def _install_sigint_handler():
    return _install_handler(signal.SIGINT, _raise_interrupt, (signal.default_int_handler,))


def _install_sigterm_handler():
    return _install_handler(signal.SIGTERM, _raise_terminated, (signal.SIG_DFL, None))


def _swallows_exceptions(frame) -> bool:
    """True if ``frame`` runs inside code whose exceptions Python ignores."""
    codes = {getattr(getattr(cb, "__func__", cb), "__code__", None) for cb in list(gc.callbacks)}
    codes.add(weakref.finalize.__call__.__code__)
    while frame is not None:
        if frame.f_code in codes or frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _redeliver(signum) -> None:
    time.sleep(0.01)
    _thread.interrupt_main(signum)  # does nothing once the default handler is back (the run is over)


def _join_script_threads(before: set) -> None:
    """Wait for the non-daemon threads the script started, as the interpreter would at exit,
    so their calls are in the report (Ctrl-C or SIGTERM while waiting ends the wait)."""
    from concurrent.futures import thread as futures_thread

    for thread in threading.enumerate():
        if thread in before or thread.daemon or thread is threading.current_thread():
            continue
        if getattr(thread, "_target", None) is futures_thread._worker:
            continue  # executor workers end only at interpreter exit (threading's atexit hook)
        thread.join()
