"""What every command handler shares: the exit statuses, the one-line usage error, the output folder.

Why: cli.py parses and dispatches; the handlers of its subcommands live in their own modules
(commands_compare.py, commands_workers.py). Each needs the same exit statuses and the same
one-line error, so they are defined once, here, and cli.py imports them too. Costs nothing.
"""

from __future__ import annotations

import os
import sys

USAGE_ERROR = 2  # a problem with what tfdiag was asked to do (a corrupt recording included)
GATE_TRIPPED = 3  # a --fail-on-... / --fail-if-slower gate


class UsageError(Exception):
    """A problem with what tfdiag was asked to do: one line on stderr, exit 2 (cli.main says it)."""


def say(message: str) -> None:
    """One line on stderr, as tfdiag says its errors."""
    print(f"tfdiag: error: {message}", file=sys.stderr)


def fail(message: str) -> int:
    """Say ``message`` and return the usage-error status (for a handler to return)."""
    say(message)
    return USAGE_ERROR


def prepare_out(out: str) -> str:
    """``out``, created if needed and writable; UsageError if not."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {out} is not writable")
    return out


def file_url(path: str) -> str:
    """A file:// address of ``path`` (for a browser)."""
    from pathlib import Path

    return Path(path).resolve().as_uri()
