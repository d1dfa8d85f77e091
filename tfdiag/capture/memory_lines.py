"""The user's lines that hold the blocks a tracemalloc snapshot still traces (capture/memory.py's window).

Why a module of its own: it reads only the snapshot, not the probe, and keeps memory.py short.
What it costs: one pass over the snapshot's traces when the window closes,
once per run.
"""

from __future__ import annotations

import os
import tracemalloc

from . import callsite

TOP_LINES = 10
_SITE_PACKAGES = f"{os.sep}site-packages{os.sep}"
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _user_line(traceback) -> str | None:
    """``file:line`` of the innermost frame of the user's own code in ``traceback``, or None."""
    for frame in reversed(traceback):  # oldest first in tracemalloc: walk from the allocation out
        filename = frame.filename
        if filename.startswith(_OWN_DIR) or _SITE_PACKAGES in filename or callsite.is_library_file(filename):
            continue
        return f"{filename}:{frame.lineno}"
    return None


def user_lines(snapshot) -> tuple[list, int, int]:
    """The user's lines holding the most traced bytes: (top lines, traced bytes, bytes placed on no user line)."""
    by_line: dict[str, list] = {}
    traced = unplaced = 0
    for trace in snapshot.traces:
        traced += trace.size
        # tfdiag's own bookkeeping, allocated in its frames, is not the program's
        innermost = trace.traceback[-1].filename if len(trace.traceback) else ""
        if innermost.startswith(_OWN_DIR) or innermost == tracemalloc.__file__:
            continue
        line = _user_line(trace.traceback)
        if line is None:
            unplaced += trace.size
            continue
        entry = by_line.setdefault(line, [0, 0])
        entry[0] += trace.size
        entry[1] += 1
    top = sorted(by_line.items(), key=lambda item: -item[1][0])[:TOP_LINES]
    return [{"line": line, "bytes": size, "count": count} for line, (size, count) in top], traced, unplaced
