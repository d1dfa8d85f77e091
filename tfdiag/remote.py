"""``tfdiag capture``: a trace pulled from running workers through TensorFlow's own profiler service.

Why: a job that spans processes or machines is already reachable through the profiler server
TensorFlow runs in each worker (``tfdiag analyze --profiler-port P``, or the user's own
``tf.profiler.experimental.server.start(P)``). ``tf.profiler.experimental.client.trace`` asks every
worker at once for the same window and writes one ``<host>_<port>.xplane.pb`` per worker into a
TensorBoard logdir (``DIR/tensorboard/plugins/profile/<run>/``); each host's file is then read with
xprof as the single-process TF Profiler section reads its own (capture/xprof_read.read_trace):
op time by self time, host and device. ``capture.json`` holds that summary. ``tfdiag merge`` reads
each worker's own step traces the same way (``collective_seconds``): how long its collective ops
(the all-reduce) ran per step, the measured side of the straggler finding's "waiting" evidence.

Cost: the workers run under TensorFlow's profiler for ``duration_ms``; reading each host's trace
back takes about a second per host. TensorFlow is imported here (this process traces nothing).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import tempfile

from .capture.xprof_read import read_ops, read_trace

TENSORBOARD = "tensorboard"
TOP_OPS = 10
FRESH = {"use_saved_result": False}  # xprof's tool option: convert the trace, never reuse cached tables
_ADDRESS = re.compile(r"(?:grpc://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")


class CaptureError(ValueError):
    """Addresses that cannot be traced, or a trace that did not come (the message is one line)."""


def addresses(text: str) -> list[tuple[str, int]]:
    """``grpc://HOST:P[,HOST:P...]`` as (host, port) pairs; CaptureError for anything else."""
    found = []
    for part in (p.strip() for p in text.split(",")):
        match = _ADDRESS.fullmatch(part)
        if not match or not 0 < int(match.group(2)) < 65536:
            raise CaptureError(f"{part or text!r} is not a profiler address; give grpc://HOST:PORT[,HOST:PORT...]")
        found.append((match.group(1), int(match.group(2))))
    if len(set(found)) != len(found):
        raise CaptureError(f"{text}: an address is given twice")
    return found


def _reachable(host: str, port: int) -> str | None:
    """None when something listens at host:port, else why not."""
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=3):
            return None
    except OSError as exc:
        return exc.strerror or exc.__class__.__name__


class _Warnings:
    """read_trace's collector: keeps the warnings it raises."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def warn(self, message: str) -> None:
        self.messages.append(message)


def _runs(logdir: str) -> set[str]:
    return {os.path.basename(p) for p in glob.glob(os.path.join(logdir, "plugins", "profile", "*"))}


def trace(hosts: list[tuple[str, int]], duration_ms: int, out: str) -> dict:
    """Pull one trace of ``duration_ms`` from every host into ``out/tensorboard/`` and read each
    host's op time; returns the ``capture.json`` section (CaptureError when no host answered)."""
    unreachable = {f"{h}:{p}": why for h, p in hosts if (why := _reachable(h, p)) is not None}
    if len(unreachable) == len(hosts):
        first = next(iter(unreachable.items()))
        raise CaptureError(f"no profiler server at {first[0]} ({first[1]}); start the worker with "
                           f"`tfdiag analyze --profiler-port PORT` or tf.profiler.experimental.server.start(PORT)")
    import tensorflow as tf

    logdir = os.path.join(out, TENSORBOARD)
    os.makedirs(logdir, exist_ok=True)
    before = _runs(logdir)
    service = ",".join(f"grpc://{h}:{p}" for h, p in hosts if f"{h}:{p}" not in unreachable)
    try:
        tf.profiler.experimental.client.trace(service, logdir, duration_ms)
    except Exception as exc:
        raise CaptureError(f"no trace from {service} in {duration_ms} ms ({str(exc).splitlines()[0][:200]}); "
                           "were the workers running TensorFlow ops then? try a longer --duration-ms") from None
    new = sorted(_runs(logdir) - before)
    run = new[-1] if new else None
    files = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", run, "*.xplane.pb"))) if run else []
    rows = [_host(host, port, files, unreachable, out) for host, port in hosts]
    return {"service": service, "duration_ms": duration_ms, "logdir": TENSORBOARD, "run": run, "hosts": rows,
            "traced": sum(1 for r in rows if r["file"]), "converter": next(
                (r["converter"] for r in rows if r.get("converter")), None)}


def _host_file(host: str, port: int, files: list[str]) -> str | None:
    """The run's file for host:port (TensorFlow names it ``<host>_<port>.xplane.pb``)."""
    wanted = f"{host.strip('[]')}_{port}.xplane.pb"
    return next((f for f in files if os.path.basename(f) == wanted), None)


def _host(host: str, port: int, files: list[str], unreachable: dict[str, str], out: str) -> dict:
    address = f"{host}:{port}"
    path = _host_file(host, port, files)
    row: dict = {"address": address, "file": None, "bytes": None, "error": None, "op_s": None,
                 "op_s_by_where": {}, "collective_s": None, "top_ops": [], "steps": 0, "step_s_average": None, "summary": {}, "warnings": [], "converter": None}
    if path is None:
        row["error"] = (f"not reachable ({unreachable[address]})" if address in unreachable
                        else "no trace came back from this host")
        return row
    row.update(file=os.path.relpath(path, out).replace(os.sep, "/"), bytes=os.path.getsize(path))
    row.update(_read(path))
    return row


def _read(path: str) -> dict:
    """One host's op time, read by xprof from a private copy of its file: xprof caches a session's
    tables beside the files it reads (``ALL_HOSTS.op_stats*``), and a cache for the run's other
    host must not stand for this one's."""
    warnings = _Warnings()
    with tempfile.TemporaryDirectory(prefix="tfdiag-capture-") as private:
        copy = os.path.join(private, os.path.basename(path))
        shutil.copyfile(path, copy)
        section = read_trace([copy], warnings, FRESH, all_ops=True)
    return host_summary(section, warnings.messages)


def host_summary(section: dict, warnings: list[str]) -> dict:
    """A host's row from read_trace's section (read with ``all_ops``): the top ops, op time by
    where it ran, and the collective ops' time over every op (all-reduce and the like: waiting,
    in a synchronous job), not only over the top ones."""
    ops = section.get("ops")
    by_where = section.get("self_s_by_where") or {}
    steps = section.get("steps") or []
    return {"converter": section.get("converter"), "op_s_by_where": by_where,
            "collective_s": sum(op["self_s"] for op in ops if _collective(op)) if ops is not None else None,
            "op_s": sum(by_where.values()) if by_where else None, "top_ops": (section.get("top_ops") or [])[:TOP_OPS],
            "steps": len(steps), "summary": section.get("summary") or {},
            "step_s_average": sum(step.get("step_s", 0.0) for step in steps) / len(steps) if steps else None,
            "warnings": list(warnings)}


def _collective(op: dict) -> bool:
    return str(op.get("type", "")).startswith("Collective")


# -- a worker's own trace, read for tfdiag merge -------------------------------------------------------
def _all_ops(paths: list[str]) -> list[dict] | None:
    """Every op of xprof's framework_op_stats over ``paths`` (read from private copies), or None
    without xprof or with a trace it cannot read."""
    with tempfile.TemporaryDirectory(prefix="tfdiag-merge-") as private:
        copies = []
        for index, path in enumerate(paths):
            copies.append(os.path.join(private, f"{index}-{os.path.basename(path)}"))
            shutil.copyfile(path, copies[-1])
        return read_ops(copies, _Warnings(), FRESH)


def collective_seconds(report_dir: str, section: dict) -> dict[tuple[str, str], float]:
    """Per (api, call site) whose steps the worker's TF Profiler traced (its recording's
    ``tf_profiler.step_windows``, the traces under ``report_dir/tensorboard/``): the seconds per step
    its collective ops ran (all-reduce and the like, op types ``Collective*``), each op's mean time
    per run added up (a window may hold part of a step beyond the ones it marks). Reading takes
    xprof; without it, or with a trace it cannot read, the site is left out."""
    found: dict[tuple[str, str], list[float]] = {}
    windows = section.get("step_windows") if isinstance(section, dict) else None
    for window in windows if isinstance(windows, list) else []:
        if not isinstance(window, dict):
            continue
        paths = [os.path.join(report_dir, TENSORBOARD, f) for f in window.get("trace_files") or []
                 if isinstance(f, str)]
        paths = [p for p in paths if os.path.isfile(p)]
        if not paths or not isinstance(window.get("call_site"), str):
            continue
        ops = _all_ops(paths)  # None: a trace this xprof cannot read, and the merge goes on without it
        if ops is None:
            continue
        key = (str(window.get("api")), window["call_site"])
        found.setdefault(key, []).append(sum(op["self_s"] / op["occurrences"] for op in ops
                                             if _collective(op) and op["occurrences"] > 0))
    return {key: sum(values) / len(values) for key, values in found.items()}  # windows of one site: their mean
