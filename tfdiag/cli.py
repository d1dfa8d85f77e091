"""Command line: argument parsing only; every command calls the library.

Exit statuses: the script's own (0, its sys.exit code, 1 on an uncaught
exception, 130 on Ctrl-C, 143 on SIGTERM); 2 for tfdiag's usage errors (a
corrupt recording included); 3 when a ``--fail-on-…`` gate trips; 70 when
tfdiag itself fails (a bug: one line says so; TFDIAG_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import webbrowser
from urllib.parse import quote

USAGE_ERROR = 2
GATE_TRIPPED = 3
TFDIAG_BUG = 70  # sysexits' EX_SOFTWARE: tfdiag's own failure, never the script's


class UsageError(Exception):
    """A problem with what tfdiag was asked to do: one line on stderr, exit 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfdiag", description=(
        "Where TensorFlow/Keras inference time goes, why each tf.function trace happened, "
        "and what to change."))
    from . import options
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"tfdiag {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    analyze = sub.add_parser("analyze", help="run a script under tfdiag and write the report")
    analyze.add_argument("-o", "--out", default="tfdiag-report", metavar="DIR",
                         help="output folder (default: tfdiag-report/)")
    analyze.add_argument("--open", action="store_true", help="open the report in a browser afterwards")
    options.add_arguments(analyze)
    analyze.add_argument("--fail-on-retrace", type=int, default=None, metavar="N",
                         help="exit 3 if a user tf.function traced more than N times")
    analyze.add_argument("--quiet", action="store_true", help="print only the paths written")
    analyze.add_argument("script", metavar="SCRIPT", help="the Python script to run")
    analyze.add_argument("script_args", nargs=argparse.REMAINDER, metavar="SCRIPT_ARGS",
                         help="arguments passed to the script")

    report = sub.add_parser("report", help="re-render the report from a saved recording.json")
    report.add_argument("recording", metavar="RECORDING.json")
    report.add_argument("-o", "--out", default=None, metavar="DIR",
                        help="output folder (default: the recording's folder)")

    open_ = sub.add_parser("open", help="open a report in the browser")
    open_.add_argument("path", metavar="DIR|FILE")

    snakeviz = sub.add_parser("snakeviz", help="start snakeviz on the report's cProfile output")
    snakeviz.add_argument("path", metavar="DIR|FILE")
    snakeviz.add_argument("--port", type=int, default=8080)
    snakeviz.add_argument("--host", default="127.0.0.1")

    tensorboard = sub.add_parser("tensorboard", help="start TensorBoard on the report's TF Profiler trace")
    tensorboard.add_argument("path", metavar="DIR", help="the report folder (or its tensorboard/ logdir)")
    tensorboard.add_argument("--port", type=int, default=6006)
    tensorboard.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else USAGE_ERROR
    handler = {"analyze": _analyze, "report": _report, "open": _open, "snakeviz": _snakeviz,
               "tensorboard": _tensorboard}[args.command]
    try:
        return handler(args)
    except UsageError as exc:
        print(f"tfdiag: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except Exception as exc:  # not the user's doing: tfdiag's own bug, said so in one line
        if os.environ.get("TFDIAG_DEBUG"):
            raise
        print(f"tfdiag: internal error, a bug in tfdiag ({exc.__class__.__name__}: {exc}); "
              "rerun with TFDIAG_DEBUG=1 for the traceback", file=sys.stderr)
        return TFDIAG_BUG


def _prepare_out(out: str) -> str:
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {out} is not writable")
    return out


def _analyze(args) -> int:
    from . import options, runner
    from .analysis import max_user_traces
    from .renderers import text
    from .session import Diagnoser

    try:
        code = runner.compile_script(args.script)
        chosen = options.from_arguments(args)
    except (runner.ScriptError, options.OptionsError) as exc:
        raise UsageError(str(exc)) from None
    if args.fail_on_retrace is not None and args.fail_on_retrace < 0:
        raise UsageError("--fail-on-retrace takes a number of traces, 0 or more")
    out = os.path.abspath(_prepare_out(args.out))  # the script may chdir
    diagnoser = Diagnoser(None, options=chosen, command=["tfdiag", "analyze", args.script, *args.script_args])
    with diagnoser:
        diagnoser.outcome = runner.run_code(code, args.script, args.script_args)
    try:
        files = diagnoser.write(out)
    except OSError as exc:
        print(f"tfdiag: error: could not write the report to {out}: {exc}", file=sys.stderr)
        return diagnoser.outcome.get("exit_status", 0) or USAGE_ERROR
    assert diagnoser.recording is not None and diagnoser.analysis is not None
    if args.quiet:
        print("\n".join(files.values()), file=sys.stderr)
    else:
        print(text.summary(diagnoser.analysis, files), file=sys.stderr)
    if args.open:
        webbrowser.open(_file_url(files["report"]))
    status = diagnoser.outcome.get("exit_status", 0)
    if status == 0 and args.fail_on_retrace is not None:
        traces, name = max_user_traces(diagnoser.recording)
        if traces > args.fail_on_retrace:
            print(f"tfdiag: --fail-on-retrace {args.fail_on_retrace}: `{name}` traced {traces} times",
                  file=sys.stderr)
            return GATE_TRIPPED
    return status


def _report(args) -> int:
    from . import output
    from .analysis import analyze
    from .recording import RecordingError, load

    try:
        recording = load(args.recording)  # checks every field analysis and the page rely on
    except RecordingError as exc:
        raise UsageError(str(exc)) from None
    out = _prepare_out(args.out or os.path.dirname(os.path.abspath(args.recording)))
    print(output.write_report(analyze(recording), os.path.join(out, "report.html")))
    return 0


def _resolve(path: str, filename: str) -> str:
    if os.path.isdir(path):
        path = os.path.join(path, filename)
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file")
    return path


def _file_url(path: str) -> str:
    from pathlib import Path

    return Path(path).resolve().as_uri()


def _open(args) -> int:
    path = _resolve(args.path, "report.html")
    if not webbrowser.open(_file_url(path)):
        print(f"tfdiag: no browser could be started; open {_file_url(path)}", file=sys.stderr)
    return 0


def _snakeviz(args) -> int:
    path = os.path.abspath(_resolve(args.path, "profile.prof"))
    command = [sys.executable, "-m", "snakeviz", "--server", "--hostname", args.host, "--port", str(args.port), path]
    return _serve(command, args.host, args.port, f"/snakeviz/{quote(path, safe='')}", "snakeviz")


def _tensorboard(args) -> int:
    logdir = os.path.join(args.path, "tensorboard")
    if not os.path.isdir(logdir):
        logdir = args.path  # given the logdir itself
    if not os.path.isdir(os.path.join(logdir, "plugins", "profile")):
        raise UsageError(f"{args.path}: no TF Profiler trace here (expected tensorboard/plugins/profile/; "
                         "was the report made with --no-tf-profiler?)")
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", os.path.abspath(logdir),
               "--host", args.host, "--port", str(args.port)]
    return _serve(command, args.host, args.port, "/#profile", "TensorBoard")


def _serve(command: list[str], host: str, port: int, path: str, name: str) -> int:
    """Run a viewer server in the foreground; Ctrl-C or SIGTERM stops it (never left orphaned)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise UsageError(f"cannot serve {name} on {host}:{port} ({exc.strerror or exc}); choose another --port")
    shown = f"[{host}]" if ":" in host else host
    print(f"tfdiag: starting {name}; stop it with Ctrl-C", file=sys.stderr)
    print(f"http://{shown}:{port}{path}", flush=True)
    child = subprocess.Popen(command)
    stopping = []

    def stop(*_):
        stopping.append(True)
        child.terminate()

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, stop)
    try:
        status = child.wait()
    except KeyboardInterrupt:
        stopping.append(True)
        status = 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if stopping:  # stopped on request (Ctrl-C, SIGTERM): a clean end
        return 0
    return status if status >= 0 else 1  # the server died of a signal nobody sent through tfdiag
