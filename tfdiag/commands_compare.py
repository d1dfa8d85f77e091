"""The handlers of ``tfdiag diff`` and ``tfdiag export`` (``analyze --json`` is commands_analyze.py).

Kept out of cli.py (which only parses): each handler loads what it was given, calls the
library (analysis/diff.py, renderers/diff.py, renderers/chrome_trace.py) and writes. A bad
input is one line on stderr and exit status 2, as cli.py's own usage errors; a tripped
``--fail-if-slower`` is exit status 3. Costs nothing until a command runs.
"""

from __future__ import annotations

import json
import os
import sys

from .commands_common import GATE_TRIPPED, fail


def _load(path: str):
    """A recording from a recording.json or a report folder (RecordingError, one line, if not)."""
    from .recording import load

    return load(os.path.join(path, "recording.json") if os.path.isdir(path) else path)


def diff(args) -> int:
    from .analysis.diff import DiffError, compare, describe, slower_than
    from .recording import RecordingError, write_atomically
    from .renderers import diff as render

    if args.fail_if_slower is not None and not args.fail_if_slower >= 0:
        return fail("--fail-if-slower takes a percentage, 0 or more")
    try:
        result = compare(_load(args.before), _load(args.after), labels=(args.before, args.after))
    except (RecordingError, DiffError) as exc:
        return fail(str(exc))
    print(render.text(result))
    if args.out:
        try:
            os.makedirs(args.out, exist_ok=True)
            page = write_atomically(os.path.join(args.out, "diff.html"), render.render_html(result))
        except OSError as exc:
            return fail(f"could not write {os.path.join(args.out, 'diff.html')}: {exc.strerror or exc}")
        print(f"diff page: {page}", file=sys.stderr)
    if args.fail_if_slower is None:
        return 0
    slow = slower_than(result, args.fail_if_slower)
    for row in slow:
        print(f"tfdiag: --fail-if-slower {args.fail_if_slower:g}: `{row['target']}` at "
              f"{os.path.basename(row['call_site'])} is {describe(row['change'], result.level)}", file=sys.stderr)
    return GATE_TRIPPED if slow else 0


def export(args) -> int:
    from .recording import RecordingError, write_atomically
    from .renderers.chrome_trace import chrome_trace

    try:
        recording = _load(args.path)
    except RecordingError as exc:
        return fail(str(exc))
    trace = chrome_trace(recording)
    try:
        write_atomically(args.out, json.dumps(trace, separators=(",", ":"), allow_nan=False))
    except OSError as exc:
        return fail(f"could not write {args.out}: {exc.strerror or exc}")
    calls = trace["otherData"]["calls_kept"]
    print(f"{args.out}: {calls} sampled call{'s' if calls != 1 else ''} as Chrome trace events "
          "(open in https://ui.perfetto.dev or chrome://tracing)", file=sys.stderr)
    return 0
