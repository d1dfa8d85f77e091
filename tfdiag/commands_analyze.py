"""``tfdiag analyze``'s handler: run the program under a Diagnoser, write the files, apply the
``--fail-on-…`` gates, print the summary; and ``--json``, where stdout carries one JSON document
and nothing else.

Why a module: cli.py only parses. With ``--json``, while the script runs, everything it prints
(Python's sys.stdout and file descriptor 1, so child processes' output too) is sent to stderr, and
afterwards the document is written to the real stdout, even from inside that redirection (a script
that calls os._exit is finished there). The document says how tfdiag ended: its own exit status (a
tripped gate's 3, not the script's 0) with the gate's message, and it is printed even when the
report could not be written. Costs a dup of file descriptor 1 while the script runs; nothing
without --json.
"""

from __future__ import annotations

import contextlib
import os
import sys
import webbrowser

from .commands_common import GATE_TRIPPED, USAGE_ERROR, UsageError, file_url, prepare_out

_redirected: list = []  # while stdout_to_stderr is on: (the saved file descriptor 1 or None, the sys.stdout it replaced)


@contextlib.contextmanager
def stdout_to_stderr():
    """While the script runs under ``analyze --json``, what it prints goes to stderr (Python's
    sys.stdout and file descriptor 1, so child processes' too): stdout holds the one document."""
    if sys.stdout is not None:
        sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no file descriptor 1 (an embedded interpreter): Python's stdout alone
        saved = None
    _redirected.append((saved, sys.stdout))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _redirected.pop()
        sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def print_document(text: str) -> None:
    """Print ``text`` on the real stdout, even from inside stdout_to_stderr (the script called
    os._exit, and tfdiag finishes the run there)."""
    if not _redirected:
        print(text, flush=True)
        return
    saved, stdout = _redirected[-1]
    try:
        on_fd1 = stdout is not None and stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):  # a stand-in stdout (pytest's capture, a notebook)
        on_fd1 = False
    if on_fd1 and saved is not None:
        data = (text + "\n").encode("utf-8")
        while data:
            data = data[os.write(saved, data):]
    elif stdout is not None:
        stdout.write(text + "\n")
        stdout.flush()


def findings_document(analysis, files: dict, exit_status: int, script_exit_status: int,
                      gate: str | None = None, error: str | None = None) -> str:
    """``analyze --json``'s document: the findings as recording.json has them, with the verdict,
    ``exit_status`` (tfdiag's own, the one it exits with), ``script_exit_status`` and
    ``ended_by`` (how the code ended), ``gate`` (the tripped gate's message, or null), ``error``
    (why the report could not be written, or null) and the files written ({} then). ``analysis``
    may be None (no analysis to report): no verdict and no findings then."""
    from ._version import __version__
    from .recording import to_json

    return to_json({
        "tfdiag": __version__, "schema_version": getattr(analysis, "schema_version", None),
        "verdict": getattr(analysis, "verdict", None), "exit_status": exit_status,
        "script_exit_status": script_exit_status,
        "ended_by": analysis.run.get("ended_by") if analysis is not None else None,
        "gate": gate, "error": error, "findings": analysis.findings if analysis is not None else [],
        "files": files})


def analyze(args) -> int:
    """``tfdiag analyze``: run the program under a Diagnoser, then ``finish``; the exit status."""
    from . import options, runner
    from .session import Diagnoser

    kind, words = args.program
    if args.module is not None and args.code is not None:
        raise UsageError("give one program to run: SCRIPT, -m MODULE or -c CODE")
    try:
        if not words:
            raise runner.ScriptError({"-m": "-m: give the name of a module to run", "-c": "-c: give the code to run"}
                                     .get(kind, "name a program to run: SCRIPT, -m MODULE or -c CODE"))
        program = runner.program(kind, words[0])
        chosen = options.from_arguments(args)
    except (runner.ScriptError, options.OptionsError) as exc:
        raise UsageError(str(exc)) from None
    if args.fail_on_retrace is not None and args.fail_on_retrace < 0:
        raise UsageError("--fail-on-retrace takes a number of traces, 0 or more")
    if args.fail_on_memory_growth is not None and not args.fail_on_memory_growth >= 0:
        raise UsageError("--fail-on-memory-growth takes MB per 1000 calls, 0 or more")
    if args.fail_on_memory_growth is not None and not (chosen.memory and chosen.timing):
        raise UsageError("--fail-on-memory-growth needs memory readings; it cannot be combined with "
                         + ("--no-memory" if not chosen.memory else "--traces-only"))
    out = os.path.abspath(prepare_out(args.out))  # the script may chdir
    diagnoser = Diagnoser(None, options=chosen, command=["tfdiag", "analyze", *program.words, *words[1:]],
                          processes_dir=os.path.join(out, "processes"))
    diagnoser.on_os_exit = lambda code: finish(args, diagnoser, out, code)  # os._exit writes and summarises first
    try:  # the finish __exit__ claims is held through finish(): an os._exit in a thread waits for it
        with stdout_to_stderr() if args.json else contextlib.nullcontext(), diagnoser:
            diagnoser.ran = runner.run(program, words[1:])  # recorded under the claim: never over an os._exit's
        if diagnoser.abandoned or diagnoser.finished_by != "exit":  # a forked child back here, or os._exit's
            return diagnoser.outcome.get("exit_status", 0)
        status = finish(args, diagnoser, out)
        if diagnoser.pending_exit is not None:  # a thread's os._exit waits: end now, as Python would have
            end_process(status)
        return status
    except runner.ScriptError as exc:  # -m: a module python could not find or compile either
        raise UsageError(str(exc)) from None
    finally:
        diagnoser.release_finish()


def end_process(status: int) -> None:
    """Exit at once with ``status`` (stdio flushed), still holding the run's finish: a thread
    waiting in os._exit never gets to race the interpreter's shutdown with another status."""
    from .capture.process_exits import _REAL_EXIT

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    _REAL_EXIT(status)


def finish(args, diagnoser, out: str, script_status: int | None = None) -> int:
    """After the program: write the files, apply the gates, print the summary (and the --json
    document, which carries this exit status); the exit status. ``script_status``: the program's
    (os._exit's code); None: the recorded outcome's."""
    from .renderers import text

    if script_status is None:
        script_status = diagnoser.outcome.get("exit_status", 0)
    try:
        files = diagnoser.write(out)
    except OSError as exc:
        error = f"could not write the report to {out}: {exc}"
        print(f"tfdiag: error: {error}", file=sys.stderr)
        failed = script_status or USAGE_ERROR
        if args.json:
            print_document(findings_document(diagnoser.analysis, {}, failed, script_status, error=error))
        return failed
    assert diagnoser.recording is not None and diagnoser.analysis is not None
    gate = gate_message(args, diagnoser.recording) if script_status == 0 else None
    status = GATE_TRIPPED if gate else script_status
    if args.quiet:
        print("\n".join(files.values()), file=sys.stderr)
    else:
        print(text.summary(diagnoser.analysis, files), file=sys.stderr)
    if args.json:
        print_document(findings_document(diagnoser.analysis, files, status, script_status, gate=gate))
    if args.open:
        webbrowser.open(file_url(files["report"]))
    if gate:
        print(f"tfdiag: {gate}", file=sys.stderr)
    return status


def gate_message(args, recording) -> str | None:
    """The message of the first ``--fail-on-…`` gate the run trips; None when none does."""
    from .analysis import max_memory_growth, max_user_traces

    if args.fail_on_retrace is not None:
        traces, name = max_user_traces(recording)
        if traces > args.fail_on_retrace:
            return f"--fail-on-retrace {args.fail_on_retrace}: `{name}` traced {traces} times"
    if args.fail_on_memory_growth is not None:
        slope, where = max_memory_growth(recording)
        if slope > args.fail_on_memory_growth:
            return (f"--fail-on-memory-growth {args.fail_on_memory_growth:g}: {where} grows "
                    f"{slope:.1f} MB per 1000 calls after warm-up")
    return None
