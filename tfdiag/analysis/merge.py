"""``tfdiag merge``: the recordings of one job's workers, side by side, as one view.

Why: a multi-worker job (tf.distribute) runs one process per worker, each diagnosed into its own
folder; what the user needs is the workers compared: each one's step time and split per training
call site, its traces, and the worker that holds the others back (``straggler.py``). Each worker
is named by its ``TF_CONFIG`` task (capture/worker.py's ``worker`` section, ``worker:1``), or by its
folder's name when its recording is not tagged.

Cost: each recording's training view and rules, as ``tfdiag report`` runs them (pure, no
TensorFlow); the merged view is plain data, written to merged.json as it is.
"""

from __future__ import annotations

import os

from ..recording import Recording
from . import rules, straggler, training
from .fields import count, number

MERGED_SCHEMA_VERSION = 1


class MergeError(ValueError):
    """Recordings that cannot be merged (the message is one line)."""


def task_label(source: str, recording: Recording) -> tuple[str, bool]:
    """(``type:index`` from the recording's ``worker`` section, True), or (the folder's name, False)."""
    section = recording.extra.get("worker")
    if isinstance(section, dict) and isinstance(section.get("type"), str) and count(section.get("index")) is not None:
        return f"{section['type']}:{section['index']}", True
    name = os.path.basename(os.path.normpath(source))
    if name == "recording.json":
        name = os.path.basename(os.path.dirname(os.path.normpath(source))) or name
    return name, False


def _order(task: str) -> tuple:
    kind, _, index = task.partition(":")
    return ({"chief": 0, "worker": 1}.get(kind, 2), kind, int(index) if index.isdigit() else 0, task)


def _worker(source: str, recording: Recording, task: str, tagged: bool, found: list[dict]) -> dict:
    section = recording.extra.get("worker") if isinstance(recording.extra.get("worker"), dict) else {}
    functions = [f for f in recording.functions if isinstance(f, dict)]
    top = found[0] if found else None
    return {
        "task": task, "tagged": tagged, "source": source,
        "cluster_size": count(section.get("cluster_size")), "address": section.get("address"),
        "wall_s": number(recording.run.get("wall_s")), "exit_status": count(recording.run.get("exit_status")),
        "ended_by": recording.run.get("ended_by"),
        "traces": sum(count(f.get("trace_count")) or 0 for f in functions),
        "user_traces": sum(count(f.get("trace_count")) or 0 for f in functions if f.get("origin") == "user"),
        "retrace_findings": sum(1 for f in found if str(f.get("code", "")).startswith("retrace-")),
        "findings": len(found),
        "top_finding": {"code": top["code"], "title": top["title"], "severity": top["severity"]} if top else None,
        "command": " ".join(recording.environment.get("command") or []),
    }


def _speaks_for(finding: dict, view: dict) -> bool:
    """A finding about this training call site: at its line, or about its api and model (a
    callback-bound finding points at the callback's own line)."""
    details = finding.get("details") if isinstance(finding.get("details"), dict) else {}
    return finding.get("call_site") == view["call_site"] or (
        details.get("api") == view["api"] and finding.get("function") == str(view.get("target") or ""))


def _site_rows(recording: Recording, task: str, found: list[dict], collectives: dict) -> dict[tuple, dict]:
    """Per training call site of one worker: its steps, median step and split, and the seconds per
    step its collective ops ran, as its TF Profiler measured them (``collectives``; else None)."""
    rows = {}
    for view in training.training_view(recording):
        key = (view["api"], view["call_site"])
        if key in rows:
            continue
        split = view["split"]
        rows[key] = {
            "label": view["label"].replace(f" {view['target']}", "") if view.get("target") else view["label"],
            "target": view.get("target"), "call_site": view["call_site"],
            "worker": {"task": task, "steps": view["steps"],
                       "step_s": view["step_median_s"] if view["step_median_s"] is not None else view["step_s"],
                       "step_p95_s": view["step_p95_s"], "split": split, "shares": view["shares"],
                       "findings": [f for f in found if _speaks_for(f, view)],
                       "collective_s": number(collectives.get(key))},
        }
    return rows


def _retraces(recordings: list[tuple[str, Recording]]) -> list[dict]:
    """The user's tf.functions, each with its trace count on every worker (most traces first)."""
    table: dict[tuple, dict] = {}
    for task, recording in recordings:
        for function in recording.user_functions():
            key = (function.get("name"), function.get("defined_at"))
            row = table.setdefault(key, {"name": key[0], "defined_at": key[1], "traces": {}})
            row["traces"][task] = row["traces"].get(task, 0) + (count(function.get("trace_count")) or 0)
    return sorted(table.values(), key=lambda r: (-max(r["traces"].values(), default=0), str(r["name"])))


def merge(entries: list[tuple[str, Recording]], collectives: dict[str, dict] | None = None) -> dict:
    """The merged view of ``entries`` ((source, recording) per worker): ``workers``, ``sites`` (the
    training call sites, each worker's steps there), ``retraces``, ``findings`` (``straggler``) and
    ``warnings``. ``collectives``: per source, {(api, call site): seconds per step its collective ops
    ran}, read from the worker's own TF Profiler trace (remote.collective_seconds). MergeError when
    fewer than two, or when two recordings are the same task."""
    if len(entries) < 2:
        raise MergeError("merge needs the recordings of two workers or more")
    labelled = []
    seen: dict[str, str] = {}
    for source, recording in entries:
        task, tagged = task_label(source, recording)
        if task in seen:
            raise MergeError(f"{seen[task]} and {source} are both {task}; merge the folders of one job's "
                             f"workers, each once")
        seen[task] = source
        labelled.append((source, recording, task, tagged))
    labelled.sort(key=lambda item: _order(item[2]))
    warnings = [{"message": f"{source} has no TF_CONFIG task (was it run as a tf.distribute worker?): "
                            f"it is named {task} here"} for source, _, task, tagged in labelled if not tagged]
    workers, sites = [], {}
    for source, recording, task, tagged in labelled:
        found = rules.run_rules(recording)
        workers.append(_worker(source, recording, task, tagged, found))
        for key, row in _site_rows(recording, task, found, (collectives or {}).get(source) or {}).items():
            site = sites.setdefault(key, {"api": key[0], "call_site": key[1], "label": row["label"],
                                          "target": row["target"], "workers": []})
            site["workers"].append(row["worker"])
    if len({w["command"] for w in workers}) > 1:
        warnings.append({"message": "the workers ran different commands; their call sites are matched by "
                                    "file and line"})
    shared = [s for s in sites.values() if len(s["workers"]) >= 2]
    found = straggler.findings(shared)
    waits = {(f["call_site"], task): wait for f in found
             for task, wait in (f["details"].get("collective_wait_s_per_step") or {}).items()}
    for site in sites.values():
        for row in site["workers"]:
            row["collective_wait_s"] = waits.get((site["call_site"], row["task"]))
            row.pop("findings", None)  # the worker's own findings stay in its own report
    return {
        "schema_version": MERGED_SCHEMA_VERSION,
        "workers": workers,
        "sites": sorted(sites.values(), key=lambda s: -len(s["workers"])),
        "retraces": _retraces([(task, recording) for _, recording, task, _ in labelled]),
        "findings": found,
        "straggler_ratio": straggler.RATIO,
        "warnings": warnings,
    }
