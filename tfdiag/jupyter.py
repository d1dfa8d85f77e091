"""Jupyter: ``%load_ext tfdiag``, then a ``%%tfdiag`` cell runs under ``tfdiag.diagnose()``.

    %load_ext tfdiag

    %%tfdiag -o tfdiag-report
    for x in batches:
        model.predict(x, verbose=0)

The cell runs as any cell does (its output and any traceback appear as usual); then the
report is written to the folder (``report.html``, ``recording.json``, …) and shown inline
in an ``<iframe srcdoc=…>`` (the whole page escaped into the attribute), so the report's
styles stay out of the notebook and its Content-Security-Policy still applies. The
Diagnoser is left in the notebook as ``_tfdiag`` (``_tfdiag.findings``, ``_tfdiag.recording``).

IPython is imported only when the extension is loaded; tfdiag never needs it otherwise.
"""

from __future__ import annotations

import argparse
import html
import os
import shlex

from . import options

DEFAULT_OUT = "tfdiag-report"
DEFAULT_HEIGHT = 720
RESULT_NAME = "_tfdiag"


class MagicUsageError(ValueError):
    """Bad ``%%tfdiag`` options (shown as IPython's UsageError)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # never sys.exit() inside a kernel
        raise MagicUsageError(f"%%tfdiag: {message}\n{self.format_usage().strip()}")

    def exit(self, status=0, message=None):
        raise MagicUsageError(message or self.format_help())


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="%%tfdiag", add_help=True, description=(
        "Run the cell under tfdiag.diagnose(), write the report and show it below the cell."))
    p.add_argument("-o", "--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"output folder (default: {DEFAULT_OUT}/)")
    options.add_arguments(p)
    p.add_argument("--height", type=int, default=DEFAULT_HEIGHT, metavar="PX",
                   help=f"height of the inline report (default: {DEFAULT_HEIGHT})")
    p.add_argument("--no-display", action="store_true", help="write the report but do not show it inline")
    return p


def parse_line(line: str) -> tuple[argparse.Namespace, options.Options]:
    try:
        words = shlex.split(line or "")
    except ValueError as exc:
        raise MagicUsageError(f"%%tfdiag: cannot parse the options ({exc})") from None
    args = parser().parse_args(words)
    if args.height < 100:
        raise MagicUsageError("%%tfdiag: --height takes a number of pixels, 100 or more")
    try:
        return args, options.from_arguments(args)
    except options.OptionsError as exc:
        raise MagicUsageError(f"%%tfdiag: {exc}") from None


def iframe(report_html: str, height: int = DEFAULT_HEIGHT) -> str:
    """The report as an isolated inline frame: the page goes escaped into ``srcdoc``."""
    return (
        '<iframe class="tfdiag-report" title="tfdiag report" '
        f'srcdoc="{html.escape(report_html, quote=True)}" '
        'sandbox="allow-scripts allow-popups allow-popups-to-escape-sandbox" allow="clipboard-write" '
        f'style="width: 100%; height: {int(height)}px; border: 1px solid #dde1e5; border-radius: 4px;">'
        "</iframe>"
    )


def output_bundle(diagnoser, files: dict[str, str], height: int, show: bool) -> dict[str, str]:
    """The display data for the cell: the inline report (HTML) and the terminal summary (plain text)."""
    from .renderers import text
    from .renderers.html import code_spans

    summary = text.summary(diagnoser.analysis, files).strip()
    report_path = files.get("report", "")
    links = " · ".join(f"{html.escape(k)}: <code>{html.escape(v)}</code>" for k, v in files.items())
    head = (f'<div class="tfdiag-output"><p><strong>tfdiag:</strong> {code_spans(diagnoser.analysis.verdict)}</p>'
            f'<p style="font-size: 12px; color: #5b6570;">{links}</p></div>')
    bundle = {"text/plain": summary, "text/html": head}
    if show and report_path:
        with open(report_path, encoding="utf-8") as fh:
            bundle["text/html"] = head + iframe(fh.read(), height)
    return bundle


def run_cell_under_tfdiag(shell, line: str, cell: str):
    """What ``%%tfdiag`` does; returns the Diagnoser (also stored as ``_tfdiag`` in the notebook)."""
    from IPython.display import display

    from .runner import outcome_of
    from .session import Diagnoser

    args, chosen = parse_line(line)
    diagnoser = Diagnoser(None, options=chosen, command=["%%tfdiag", *shlex.split(line or "")])
    with diagnoser:
        result = shell.run_cell(cell, store_history=False)
        diagnoser.outcome = outcome_of(result.error_before_exec or result.error_in_exec)
    out = os.path.abspath(os.path.expanduser(args.out))
    files = diagnoser.write(out)
    shell.user_ns[RESULT_NAME] = diagnoser
    display(output_bundle(diagnoser, files, args.height, not args.no_display), raw=True)
    return None


def load_ipython_extension(ipython) -> None:
    """``%load_ext tfdiag``: registers the ``%%tfdiag`` cell magic."""
    from IPython.core.error import UsageError
    from IPython.core.magic import Magics, cell_magic, magics_class

    @magics_class
    class TfdiagMagics(Magics):
        @cell_magic
        def tfdiag(self, line, cell):
            """Run the cell under tfdiag.diagnose() and show the report inline.

            Options: -o/--out DIR (default tfdiag-report/), --height PX, --no-display, and the
            capture options of `tfdiag analyze` (--no-cprofile, --no-tf-profiler, --phase-every N,
            --verify, --traces-only, ...; see `%%tfdiag --help`). Afterwards `_tfdiag` holds the Diagnoser
            (`_tfdiag.findings`, `_tfdiag.recording`, `_tfdiag.report()`).
            """
            try:
                return run_cell_under_tfdiag(self.shell, line, cell)
            except MagicUsageError as exc:
                raise UsageError(str(exc)) from None

    ipython.register_magics(TfdiagMagics)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext tfdiag``: nothing is left installed between cells, so nothing to undo."""
