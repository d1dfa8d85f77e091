"""Run a user's program as ``__main__`` as ``python`` would: a script, ``-m MODULE`` or ``-c CODE``,
with its argv, its sys.path[0] and its exit status.

A script or ``-c`` code is compiled before any heavy work, so a missing file or a syntax
error is one clear line (exit 2) rather than a half-started run. A module is found as
``python -m`` finds it (``runpy``), once sys.path[0] is the working folder: finding it imports
its parent packages, which is the user's code running; a module that is not there is one line
(exit 2) too, and costs only an empty capture.
"""

from __future__ import annotations

import _thread
import gc
import os
import runpy
import signal
import sys
import threading
import time
import traceback
import types
import weakref
from dataclasses import dataclass
from typing import Callable

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


@dataclass(frozen=True)
class Program:
    """What runs as ``__main__``, started as python starts it. ``words``: how a command line names
    it (``script.py``, ``-m pkg``, ``-c CODE``); ``argv0`` and ``path0``: sys.argv[0] and sys.path[0]
    as it starts. ``load(main_globals)`` runs once those are set: it fills ``__main__``'s globals
    (and sys.argv[0] where python sets it late, for -m) and returns the code to execute."""

    words: tuple[str, ...]
    argv0: str
    path0: str
    load: Callable[[dict], types.CodeType]


def script(path: str) -> Program:
    """A script file: compiled now (ScriptError if it cannot be); its folder is sys.path[0]."""
    code = compile_script(path)

    def load(main: dict) -> types.CodeType:
        main.update({"__file__": path, "__spec__": None, "__loader__": None, "__package__": None, "__cached__": None})
        return code

    return Program((path,), path, os.path.dirname(os.path.abspath(path)), load)


def command(source: str) -> Program:
    """``-c CODE``: compiled now; sys.argv[0] is ``-c`` and sys.path[0] ``""`` (the working folder)
    as python sets them; no ``__file__``. Its file name is ``<string>``, so its call sites read
    ``<string>:LINE`` and count as the user's code (capture/callsite.py)."""
    try:
        code = compile(source, "<string>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        _raise_syntax("-c", exc)
    except ValueError as exc:  # e.g. a NUL byte
        raise ScriptError(f"-c: cannot compile ({exc})") from None

    def load(main: dict) -> types.CodeType:
        main.update({"__spec__": None, "__loader__": None, "__package__": None})
        return code

    return Program(("-c", source), "-c", "", load)


def module(name: str) -> Program:
    """``-m MODULE``, found when it runs as ``python -m`` finds it: sys.path[0] the working folder,
    sys.argv[0] ``-m`` while its parent packages are imported, then the module's file; a package
    runs its ``__main__``. Not found, or a syntax error: ScriptError (runpy's own message)."""
    if not name:
        raise ScriptError("-m: give the name of a module to run")

    def load(main: dict) -> types.CodeType:
        try:  # runpy's finder for ``python -m`` (pdb finds its -m target the same way)
            _, spec, code = runpy._get_module_details(name, ScriptError)
        except SyntaxError as exc:
            _raise_syntax(exc.filename or name, exc)
        sys.argv[0] = spec.origin or name
        main.update({"__file__": spec.origin if spec.has_location else None, "__cached__": spec.cached,
                     "__loader__": spec.loader, "__package__": spec.parent, "__spec__": spec})
        return code

    return Program(("-m", name), "-m", os.getcwd(), load)


def program(kind: str | None, target: str) -> Program:
    """What a command line names: ``-m`` MODULE, ``-c`` CODE, or (kind None) a SCRIPT."""
    return {"-m": module, "-c": command, None: script}[kind](target)


def run(program: Program, args: list[str]) -> dict:
    """Execute ``program`` as __main__ with ``args``; returns how it ended (status and cause).

    Exceptions are printed as Python prints them (tfdiag's own frames left out); nothing
    propagates but a ScriptError (a module that cannot be found or compiled), so the caller
    always gets to write its report of what ran.
    """
    saved_argv = sys.argv
    saved_path0 = list(sys.path)
    saved_main = sys.modules.get("__main__")
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.argv = [program.argv0, *args]
    sys.path.insert(0, program.path0)
    sys.modules["__main__"] = main
    previous_handler = _install_sigterm_handler()
    previous_int = _install_sigint_handler()
    threads_before = set(threading.enumerate())
    try:
        try:
            exec(program.load(main.__dict__), main.__dict__)
        finally:
            _join_script_threads(threads_before)
        return outcome_of(None)
    except ScriptError:
        raise
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
    """Print as the interpreter would, minus the runner's own frames."""
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
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
