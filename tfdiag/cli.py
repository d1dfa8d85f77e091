"""Command line: argument parsing only; every command calls the library.

Exit statuses: the script's own (0, its sys.exit code, 1 on an uncaught
exception, 130 on Ctrl-C); 2 for tfdiag's usage errors; 3 when a
``--fail-on-…`` gate trips.
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


class UsageError(Exception):
    """A problem with what tfdiag was asked to do: one line on stderr, exit 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfdiag", description=(
        "Where TensorFlow/Keras inference time goes, why each tf.function trace happened, "
        "and what to change."))
    from . import __version__
    parser.add_argument("--version", action="version", version=f"tfdiag {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    analyze = sub.add_parser("analyze", help="run a script under tfdiag and write the report")
    analyze.add_argument("-o", "--out", default="tfdiag-report", metavar="DIR",
                         help="output folder (default: tfdiag-report/)")
    analyze.add_argument("--open", action="store_true", help="open the report in a browser afterwards")
    analyze.add_argument("--no-cprofile", action="store_true", help="do not run cProfile on sampled calls")
    analyze.add_argument("--no-tf-profiler", action="store_true",
                         help="do not run the TF Profiler (no tensorboard/ folder)")
    analyze.add_argument("--tf-profiler-calls", type=int, default=None, metavar="N",
                         help="how many calls the TF Profiler window covers, from call 3 (default: 3)")
    analyze.add_argument("--cprofile-calls", type=int, default=None, metavar="N",
                         help="how many calls cProfile samples at most (default: 8)")
    analyze.add_argument("--phase-every", type=int, default=None, metavar="N",
                         help="after each model's first 5 calls, measure the full phase split on one "
                              "call in N at random (default: 32; 1: every call, at more cost per call)")
    analyze.add_argument("--fail-on-retrace", type=int, default=None, metavar="N",
                         help="exit 3 if a user tf.function traced more than N times")
    analyze.add_argument("--verify", action="store_true",
                         help="after the script, time predict, predict_on_batch, model(x), tf.function, XLA "
                              "and LiteRT on each model's own input, and recommend what was measured")
    analyze.add_argument("--verify-budget", type=float, default=None, metavar="SECONDS",
                         help="time budget for --verify over all models (default: 20)")
    analyze.add_argument("--traces-only", action="store_true",
                         help="record tf.function traces only (no call timing, phases or profilers): "
                              "the cheapest capture, e.g. for a --fail-on-retrace gate in CI")
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


def _prepare_out(out: str) -> str:
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {out} is not writable")
    return out


def _analyze(args) -> int:
    from . import runner
    from .analysis import max_user_traces
    from .renderers import text
    from .session import Diagnoser

    try:
        code = runner.compile_script(args.script)
    except runner.ScriptError as exc:
        raise UsageError(str(exc)) from None
    if args.fail_on_retrace is not None and args.fail_on_retrace < 0:
        raise UsageError("--fail-on-retrace takes a number of traces, 0 or more")
    out = os.path.abspath(_prepare_out(args.out))  # the script may chdir
    options = {"cprofile": not args.no_cprofile}
    if args.cprofile_calls is not None:
        options["cprofile_calls"] = args.cprofile_calls
    if args.no_tf_profiler:
        options["tf_profiler"] = False
    if args.tf_profiler_calls is not None:
        if args.tf_profiler_calls < 0:
            raise UsageError("--tf-profiler-calls takes a number of calls, 0 or more")
        options["tf_profiler_calls"] = args.tf_profiler_calls
    if args.verify_budget is not None and not args.verify_budget > 0:
        raise UsageError("--verify-budget takes a number of seconds, more than 0")
    if args.verify_budget is not None and not args.verify:
        raise UsageError("--verify-budget only applies with --verify")
    if args.cprofile_calls is not None and args.cprofile_calls < 0:
        raise UsageError("--cprofile-calls takes a number of calls, 0 or more")
    if args.phase_every is not None:
        if args.phase_every < 1:
            raise UsageError("--phase-every takes a number of calls, 1 or more")
        options["phase_every"] = args.phase_every
    if args.traces_only:
        if args.verify:
            raise UsageError("--verify needs call timing; it cannot be combined with --traces-only")
        if args.phase_every is not None:
            raise UsageError("--phase-every needs call timing; it cannot be combined with --traces-only")
        options.update(timing=False, cprofile=False, tf_profiler=False)
    if args.verify:
        options["verify"] = True
        if args.verify_budget is not None:
            options["verify_budget"] = args.verify_budget
    diagnoser = Diagnoser(None, command=["tfdiag", "analyze", args.script, *args.script_args], **options)
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
        print(text.summary(diagnoser.recording, diagnoser.analysis, files), file=sys.stderr)
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
    from . import recording as recording_module
    import jinja2

    from .analysis import analyze
    from .renderers import html

    try:
        recording = recording_module.load(args.recording)
    except recording_module.RecordingError as exc:
        raise UsageError(str(exc)) from None
    out = _prepare_out(args.out or os.path.dirname(os.path.abspath(args.recording)))
    try:
        path = html.write_report(recording, analyze(recording), os.path.join(out, "report.html"))
    except (TypeError, KeyError, AttributeError, ValueError, IndexError, jinja2.TemplateError) as exc:
        # load() checks the fields every stage relies on; anything else malformed lands here.
        raise UsageError(f"{args.recording}: corrupt recording ({exc.__class__.__name__}: {exc})") from None
    print(path)
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
