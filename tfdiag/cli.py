"""Command line: argument parsing only; every command calls the library.

Exit statuses: the script's own (0, its sys.exit code, its os._exit code, 1 on an uncaught
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

from .commands_common import USAGE_ERROR, UsageError, file_url as _file_url, prepare_out as _prepare_out

TFDIAG_BUG = 70  # sysexits' EX_SOFTWARE: tfdiag's own failure, never the script's


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfdiag", description=(
        "Where TensorFlow/Keras inference time goes, why each tf.function trace happened, "
        "and what to change."))
    from . import options
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"tfdiag {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    analyze = sub.add_parser("analyze", help="run a script (or -m MODULE, -c CODE) under tfdiag and write the report",
                             usage="tfdiag analyze [OPTIONS] (SCRIPT | -m MODULE | -c CODE) [ARGS ...]")
    analyze.add_argument("-o", "--out", default="tfdiag-report", metavar="DIR",
                         help="output folder (default: tfdiag-report/)")
    analyze.add_argument("--open", action="store_true", help="open the report in a browser afterwards")
    options.add_arguments(analyze)
    analyze.add_argument("--fail-on-retrace", type=int, default=None, metavar="N",
                         help="exit 3 if a user tf.function traced more than N times")
    analyze.add_argument("--fail-on-memory-growth", type=float, default=None, metavar="MB",
                         help="exit 3 if a call site's memory keeps growing after warm-up by more than MB per 1000 calls")
    analyze.add_argument("--quiet", action="store_true", help="print only the paths written")
    analyze.add_argument("--json", action="store_true", help=(
        "print the findings as one JSON document on stdout (the summary and the script's own output go to stderr)"))
    # As python takes them: all that follows SCRIPT, -m MODULE or -c CODE is the program's (see _parse).
    analyze.add_argument("-m", dest="module", nargs=argparse.REMAINDER,
                         help="MODULE [ARGS]: run a module (a package's __main__) as python -m does")
    analyze.add_argument("-c", dest="code", nargs=argparse.REMAINDER, help="CODE [ARGS]: run CODE as python -c does")
    analyze.add_argument("script", nargs="?", metavar="SCRIPT", help="the Python script to run")
    analyze.add_argument("script_args", nargs=argparse.REMAINDER, metavar="ARGS",
                         help="arguments passed to the script, module or code")

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

    diff = sub.add_parser("diff", help="compare two runs: per call site, the change in median time with its interval")
    diff.add_argument("before", metavar="BEFORE", help="recording.json or report folder of the run before the change")
    diff.add_argument("after", metavar="AFTER", help="recording.json or report folder of the run after it")
    diff.add_argument("-o", "--out", default=None, metavar="DIR", help="also write DIR/diff.html")
    diff.add_argument("--fail-if-slower", type=float, default=None, metavar="PCT", help=(
        "exit 3 if a matched call site's median got slower by more than PCT percent, its interval clear of zero"))

    export = sub.add_parser("export", help="write the sampled calls and their phases as a Chrome trace")
    export.add_argument("path", metavar="DIR|FILE", help="report folder or recording.json")
    export.add_argument("--format", choices=["chrome"], default="chrome",
                        help="chrome: Trace Event JSON for Perfetto UI and chrome://tracing (the default)")
    export.add_argument("-o", "--out", required=True, metavar="FILE", help="the trace file to write")

    merge = sub.add_parser("merge", help="one report of a multi-worker job's workers, and the one that holds them back")
    merge.add_argument("recordings", nargs="+", metavar="DIR", help="each worker's report folder (or recording.json)")
    merge.add_argument("-o", "--out", required=True, metavar="OUT", help="folder for report.html and merged.json")

    capture = sub.add_parser("capture", help="pull a TF Profiler trace from running workers' profiler servers")
    capture.add_argument("service", metavar="grpc://HOST:P[,HOST:P...]",
                         help="the workers' profiler servers (tfdiag analyze --profiler-port P)")
    capture.add_argument("--duration-ms", type=int, default=2000, metavar="N", help="trace window (default: 2000)")
    capture.add_argument("-o", "--out", required=True, metavar="DIR", help="folder for tensorboard/ and capture.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = _parse(parser, sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else USAGE_ERROR
    from . import commands_analyze, commands_compare, commands_workers

    handler = {"analyze": commands_analyze.analyze, "report": _report, "open": _open, "snakeviz": _snakeviz,
               "tensorboard": _tensorboard, "diff": commands_compare.diff,
               "export": commands_compare.export, "merge": commands_workers.merge,
               "capture": commands_workers.capture}[args.command]
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


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parse_args, reading analyze's program as python reads its own command line: all that
    follows SCRIPT, ``-m MODULE`` or ``-c CODE`` is the program's, a ``--`` included; a ``--``
    before it only ends tfdiag's options. Sets ``args.program``: (``-m``, ``-c`` or None for a
    script; [what to run, *its arguments])."""
    if argv[:1] == ["analyze"]:
        argv = _split_joined_program(parser, argv)
    cut = argv.index("--") if argv[:1] == ["analyze"] and "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    if args.command == "analyze":
        named = [*(args.module or args.code or []), *([args.script] if args.script is not None else []),
                 *args.script_args]
        rest = argv[cut + 1:]
        words = [*named, "--", *rest] if named and cut < len(argv) else named + rest
        args.program = ("-m" if args.module is not None else "-c" if args.code is not None else None, words)
    return args


def _split_joined_program(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``-mNAME`` and ``-cCODE`` as python takes them: the program's first word split from its
    flag, so that what follows stays the program's (argparse keeps a joined value to itself)."""
    analyze = next(action for action in parser._actions  # pylint: disable=protected-access
                   if isinstance(action, argparse._SubParsersAction)).choices["analyze"]  # pylint: disable=protected-access
    takes_value = {option for action in analyze._actions  # pylint: disable=protected-access
                   if action.nargs != 0 and action.dest not in ("module", "code") for option in action.option_strings}
    index = 1
    while index < len(argv):
        word = argv[index]
        if word == "--" or not word.startswith("-"):
            break  # tfdiag's options ended: a script, or -- before the program
        if word[:2] in ("-m", "-c") and len(word) > 2:
            return [*argv[:index], word[:2], word[2:], *argv[index + 1:]]
        index += 2 if word in takes_value else 1
    return argv


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
