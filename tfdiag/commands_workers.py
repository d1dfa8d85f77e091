"""The handlers of ``tfdiag merge`` and ``tfdiag capture`` (cli.py parses, these call the library).

``merge``: the recordings of one job's workers -> OUT/merged.json and OUT/report.html
(analysis/merge.py, renderers/merge.py). ``capture``: a trace from running workers' profiler
servers -> OUT/tensorboard/ and OUT/capture.json (remote.py). Bad input (an address that is not
one, an unreadable recording, an output folder that cannot be written) is one line on stderr and
exit status 2 (commands_common.py); a capture that reached only some of the hosts writes what came
and exits 1, and one that brought back nothing says so in one line and exits 1.
"""

from __future__ import annotations

import os
import shlex
import sys

from .commands_common import fail, prepare_out, say
from .recording import RecordingError, load, to_json, write_atomically

INCOMPLETE = 1  # a capture that brought back nothing, or not every host's trace


def _folder(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def merge(args) -> int:
    from .analysis.merge import MergeError, merge as merge_view
    from .renderers.merge import merge_summary, render_merge

    entries, paths = [], []
    for source in args.recordings:
        path = os.path.join(source, "recording.json") if os.path.isdir(source) else source
        paths.append(path)
        try:
            entries.append((source, load(path)))
        except RecordingError as exc:
            return fail(str(exc))
    clash = next((source for source, path in zip(args.recordings, paths)
                  if _folder(os.path.dirname(path) or ".") == _folder(args.out)), None)
    if clash is not None:
        return fail(f"-o {args.out} is the folder of {clash}: the merged report would overwrite that worker's "
                    "report.html; give another folder")
    from .remote import collective_seconds

    measured = {source: collective_seconds(os.path.dirname(path), recording.extra.get("tf_profiler") or {})
                for (source, recording), path in zip(entries, paths)}
    try:
        view = merge_view(entries, measured)
    except MergeError as exc:
        return fail(str(exc))
    prepare_out(args.out)
    command = " ".join(["tfdiag", "merge", *map(shlex.quote, args.recordings), "-o", shlex.quote(args.out)])
    try:
        merged = write_atomically(os.path.join(args.out, "merged.json"), to_json(view))
        report = write_atomically(os.path.join(args.out, "report.html"), render_merge(view, command))
    except OSError as exc:
        return fail(f"could not write the merged report to {args.out}: {exc.strerror or exc}")
    print(merge_summary(view), file=sys.stderr)
    print(f"files written:\n  report:  {report}\n  merged:  {merged}", file=sys.stderr)
    return 0


def capture(args) -> int:
    from . import remote
    from .renderers.merge import capture_table

    try:
        hosts = remote.addresses(args.service)
    except remote.CaptureError as exc:
        return fail(str(exc))
    if args.duration_ms < 1:
        return fail("--duration-ms takes milliseconds, 1 or more")
    prepare_out(args.out)
    try:
        section = remote.trace(hosts, args.duration_ms, args.out)
    except remote.CaptureError as exc:  # no server answered, or no trace came: not a usage error
        say(str(exc))
        return INCOMPLETE
    if not section["traced"]:
        say(f"no trace came back from {args.service}; "
            + "; ".join(f"{h['address']}: {h['error']}" for h in section["hosts"]))
        return INCOMPLETE
    try:
        written = write_atomically(os.path.join(args.out, "capture.json"), to_json(section))
    except OSError as exc:
        return fail(f"could not write {os.path.join(args.out, 'capture.json')}: {exc.strerror or exc}")
    print(capture_table(section), file=sys.stderr)
    print(f"files written:\n  capture:     {written}\n  tensorboard: {os.path.join(args.out, remote.TENSORBOARD)}"
          f"\nopen it with:\n  tfdiag tensorboard {shlex.quote(args.out)}", file=sys.stderr)
    return 0 if section["traced"] == len(section["hosts"]) else INCOMPLETE
