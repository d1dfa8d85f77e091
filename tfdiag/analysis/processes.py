"""The processes a run followed, side by side, and their call sites merged across processes.

Why: work done in a pool's workers or a subprocess is the user's too; the page lists every
process (the main one first) and adds up each call site's calls where the target and the
calling line match, so "4 workers each traced `step` once" reads as one line. Pure: reads the
recording's ``processes`` section (capture/processes.py) and ``calls``; never writes.
"""

from __future__ import annotations

import os
from collections import Counter

from ..recording import Recording
from .fields import count, number
from .views import RUN_ENDINGS

SEVERITY = {"high": 0, "medium": 1, "low": 2}
ROLES = {"main": "this run", "spawn": "multiprocessing (spawn)", "fork": "forked (os.fork / multiprocessing fork)",
         "forkserver": "multiprocessing (forkserver)", "subprocess": "subprocess running Python"}


def processes_view(recording: Recording, findings: list[dict]) -> dict | None:
    """None when no child process was followed; else ``rows`` (the main process first),
    ``merged`` (call sites seen in a child, summed over every process), ``functions`` (user
    tf.functions traced in children, traces summed), ``lost`` (children that left no recording)
    and ``summary`` (one line for the terminal)."""
    children = [c for c in recording.extra.get("processes") or [] if isinstance(c, dict)]
    if not children:
        return None
    main = _main_row(recording, findings)
    rows = [main, *(_child_row(c) for c in children)]
    lost = [row for row in rows if row["status"] == "no-recording"]
    return {"rows": rows, "merged": merged_call_sites(recording, children),
            "functions": merged_functions(recording, children), "lost": len(lost),
            "summary": _summary(children, lost)}


def _main_row(recording: Recording, findings: list[dict]) -> dict:
    run = recording.run
    top = findings[0] if findings else None
    return {"pid": run.get("pid"), "parent_pid": None, "role": "main", "role_text": ROLES["main"],
            "status": "recorded", "status_text": _ended(run.get("ended_by"), run.get("exit_status"), run.get("exception"), None),
            "wall_s": number(run.get("wall_s")), "calls": sum((count(c.get("count")) or 0) for c in recording.calls),
            "traces": sum((count(f.get("trace_count")) or 0) for f in recording.user_functions()),
            "top_finding": _finding(top), "recording": "recording.json", "command": ""}


def _child_row(child: dict) -> dict:
    status = child.get("status")
    signal, exit_status = child.get("signal"), count(child.get("exit_status"))
    if status == "recorded":
        text = _ended(child.get("ended_by"), exit_status, child.get("exception"), signal)
    elif status == "exec":
        program = " ".join(str(a) for a in child.get("exec_argv") or [])[:120]
        text = (f"replaced itself with another program (exec: {program}); "
                + (f"exit {exit_status}" if exit_status is not None else "exit status unknown"))
    elif status == "running":
        text = "still running when this report was written: no recording yet"
    elif signal:
        text = f"killed by {signal}: left no recording"
    elif exit_status is not None:
        text = f"exit {exit_status}, but left no recording: it crashed, or replaced itself (exec)"
    else:
        text = "left no recording: it was killed (SIGKILL, for example) or crashed before it could write one"
    argv = [str(a) for a in child.get("argv") or []]
    return {"pid": child.get("pid"), "parent_pid": child.get("parent_pid"), "role": str(child.get("role")),
            "role_text": ROLES.get(str(child.get("role")), str(child.get("role"))), "status": status,
            "status_text": text, "wall_s": number(child.get("wall_s")),
            "calls": sum((count(c.get("count")) or 0) for c in _calls(child)),
            "traces": sum((count(f.get("trace_count")) or 0) for f in child.get("functions") or [] if isinstance(f, dict)),
            "top_finding": _finding(child.get("top_finding")), "recording": child.get("recording"),
            "command": " ".join(argv[1:]) if child.get("role") == "subprocess" else ""}


def _ended(ended_by, status, exception, signal) -> str:
    """How a process ended, in the words of the run's own (views.RUN_ENDINGS), with its status:
    the one the reaping process saw where there is one (a signal's name when it died of one)."""
    words = RUN_ENDINGS.get(ended_by, "ended")
    if ended_by == "exception" and exception:
        words += f" ({exception})"
    if ended_by == "terminated":
        words += " (a Pool's terminate() ends its workers so)"
    if signal:
        return f"{words}; killed by {signal}"
    return f"{words}; exit {status}" if status is not None else f"{words}; exit status unknown"


def _finding(finding) -> dict | None:
    if not isinstance(finding, dict) or not finding.get("code"):
        return None
    return {"code": str(finding.get("code")), "title": str(finding.get("title") or ""),
            "severity": str(finding.get("severity") or "")}


def _calls(child: dict) -> list[dict]:
    return [c for c in child.get("calls") or [] if isinstance(c, dict)]


def _canonical_sites(sites: set[str]) -> dict[str, str]:
    """A relative ``file:line`` (the main script as typed) names the absolute one that ends with
    it (as spawn children import it), when exactly one does."""
    absolute = {s for s in sites if os.path.isabs(s)}
    out = {}
    for site in sites:
        if not site or os.path.isabs(site):
            out[site] = site
            continue
        tail = os.sep + os.path.normpath(site)
        matches = {a for a in absolute if a.endswith(tail)}
        out[site] = matches.pop() if len(matches) == 1 else site
    return out


def merged_call_sites(recording: Recording, children: list[dict]) -> list[dict]:
    """Call sites seen in at least one child, each summed over every process where its api,
    target and call site match (inputs of any shape together), most time first."""
    sources = [(recording.run.get("pid"), "main", list(recording.calls))]
    sources += [(c.get("pid"), str(c.get("role")), _calls(c)) for c in children]
    canonical = _canonical_sites({str(call.get("call_site") or "") for _, _, calls in sources for call in calls})
    merged: dict[tuple, dict] = {}
    for pid, role, calls in sources:
        for call in calls:
            key = (str(call.get("api")), str(call.get("target")), canonical[str(call.get("call_site") or "")])
            entry = merged.setdefault(key, {"api": key[0], "target": key[1], "call_site": key[2], "count": 0,
                                            "total_s": 0.0, "per_process": {}, "in_child": False})
            calls_here = (count(call.get("count")) or 0)
            entry["count"] += calls_here
            entry["total_s"] += number(call.get("total_s")) or 0.0
            entry["in_child"] = entry["in_child"] or role != "main"
            into = entry["per_process"].setdefault(pid, {"pid": pid, "role": role, "count": 0})
            into["count"] += calls_here
    rows = []
    for entry in merged.values():
        if not entry.pop("in_child"):
            continue
        entry["per_process"] = list(entry["per_process"].values())
        entry["processes"] = len(entry["per_process"])
        entry["mean_s"] = entry["total_s"] / entry["count"] if entry["count"] else 0.0
        rows.append(entry)
    return sorted(rows, key=lambda e: (-e["total_s"], e["call_site"]))


def merged_functions(recording: Recording, children: list[dict]) -> list[dict]:
    """User tf.functions traced in a child: traces and processes summed where the name and the
    defining line match (each process traces its own functions again)."""
    sources = [list(recording.user_functions())]
    sources += [[f for f in c.get("functions") or [] if isinstance(f, dict)] for c in children]
    canonical = _canonical_sites({str(f.get("defined_at") or "") for fs in sources for f in fs})
    merged: dict[tuple, dict] = {}
    for index, functions in enumerate(sources):
        for function in functions:
            key = (str(function.get("name")), canonical[str(function.get("defined_at") or "")])
            entry = merged.setdefault(key, {"name": key[0], "defined_at": key[1], "traces": 0, "processes": 0,
                                            "in_child": False})
            entry["traces"] += (count(function.get("trace_count")) or 0)
            entry["processes"] += 1
            entry["in_child"] = entry["in_child"] or index > 0
    rows = [dict(e) for e in merged.values() if e["in_child"]]
    for row in rows:
        del row["in_child"]
    return sorted(rows, key=lambda e: (-e["traces"], e["name"]))


def _summary(children: list[dict], lost: list[dict]) -> str:
    roles = Counter(str(c.get("role")) for c in children)
    kinds = ", ".join(f"{role} ×{n}" if n > 1 else role for role, n in sorted(roles.items()))
    calls = sum((count(call.get("count")) or 0) for c in children for call in _calls(c))
    line = f"{len(children)} child process{'es' if len(children) != 1 else ''} followed ({kinds}): {calls} calls"
    if lost:
        line += f"; {len(lost)} left no recording"
    ranked = [c for c in children if isinstance(c.get("top_finding"), dict) and c["top_finding"].get("code")]
    if ranked:
        top = min(ranked, key=lambda c: SEVERITY.get(c["top_finding"].get("severity"), 3))
        line += f"; top finding in a child: [{top['top_finding'].get('severity')}] {top['top_finding']['code']} (pid {top.get('pid')})"
    return line
