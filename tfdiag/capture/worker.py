"""The worker's side of a multi-worker job: which task this process is, and TF's profiler server.

Why: a ``tf.distribute`` job runs one process per worker, each diagnosed on its own
(``tfdiag analyze -o DIR/worker-N script.py``). ``tfdiag merge`` puts them side by side, so each
recording says which task it was: the ``worker`` section, read from ``TF_CONFIG`` (the variable
every tf.distribute worker is started with) when capture starts. ``--profiler-port P`` starts
TensorFlow's own profiler server (``tf.profiler.experimental.server.start``) once TensorFlow is
imported, so ``tfdiag capture grpc://HOST:P`` (tfdiag/remote.py) can pull a trace from the
running worker through TensorFlow's own service, not a transport of tfdiag's. TensorFlow runs one
profiling session per process: with tfdiag's own TF Profiler windows on, the recording warns
(``window_clash``) that a capture landing in a window fails, and suggests ``--no-tf-profiler``.

Cost: one environment read and a JSON parse at start; the server is a gRPC listener that costs
nothing until a client asks for a trace. TensorFlow has no way to stop it: it serves until the
process ends, and is started at most once per process.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
from typing import Callable, Mapping

_SERVING_LOCK = threading.Lock()
_SERVING: list[int] = []  # the port this process's profiler server listens on (TF starts one at most)


def task(environ: Mapping[str, str] | None = None) -> tuple[dict | None, str | None]:
    """(the ``worker`` section, None), (None, None) without TF_CONFIG, or (None, why it is unreadable).

    The section: ``type`` and ``index`` of this task, ``cluster_size`` (tasks in the cluster, every
    type counted), ``address`` (this task's host:port in the cluster, when listed) and ``cluster``
    (tasks per type)."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG")
    if raw is None or not raw.strip():
        return None, None
    try:
        config = json.loads(raw)
    except ValueError:
        return None, "TF_CONFIG is not valid JSON; the recording is not tagged with its worker task"
    entry = config.get("task") if isinstance(config, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        return None, "TF_CONFIG has no task type; the recording is not tagged with its worker task"
    index = entry.get("index", 0)
    if isinstance(index, str) and index.isdigit():
        index = int(index)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        return None, f"TF_CONFIG's task index is {index!r}; the recording is not tagged with its worker task"
    cluster = config.get("cluster") if isinstance(config.get("cluster"), dict) else {}
    tasks = {kind: len(members) for kind, members in cluster.items() if isinstance(members, (list, dict))}
    members = cluster.get(entry["type"])
    address = None
    if isinstance(members, list) and index < len(members) and isinstance(members[index], str):
        address = members[index]
    return {"type": entry["type"], "index": index, "cluster_size": sum(tasks.values()) or None,
            "cluster": tasks, "address": address}, None


def label(section: Mapping) -> str:
    """``worker:1``: how tfdiag names a task (TensorFlow's ``/job:worker/task:1``, shortened)."""
    return f"{section.get('type')}:{section.get('index')}"


def serve_profiler(port: int, warn: Callable[[str], None], module=None) -> None:
    """Start TensorFlow's profiler server on ``port`` (once per process; ``module``: tensorflow,
    from ``Patcher.when_imported``). A second diagnosis in the same process asking for the same
    port finds it serving; another port is a warning, as TensorFlow serves one at most."""
    with _SERVING_LOCK:
        if _SERVING:
            if _SERVING[0] != port:
                warn(f"TensorFlow's profiler server already listens on port {_SERVING[0]} in this process; "
                     f"--profiler-port {port} was not started (TensorFlow serves one per process)")
            return
        busy = _in_use(port)
        if busy:  # TensorFlow would only log that it could not bind, and serve nothing
            warn(f"--profiler-port {port}: the port is in use ({busy}); TensorFlow's profiler server did not start")
            return
        import tensorflow as tf

        tf.profiler.experimental.server.start(port)
        _SERVING.append(port)


def window_clash(port: int) -> str:
    """The warning for ``--profiler-port`` with tfdiag's own TF Profiler windows on: TensorFlow runs
    one profiling session per process, so a capture and a window that overlap cannot both run."""
    return (f"--profiler-port {port} with tfdiag's own TF Profiler windows on: TensorFlow runs one profiling "
            "session at a time, so a `tfdiag capture` that lands during a window gets no trace from this "
            "process (and a window that opens during a capture is skipped); run with --no-tf-profiler "
            "(tf_profiler=False) to leave the profiler to `tfdiag capture`")


def _in_use(port: int) -> str | None:
    """Why ``port`` cannot be bound on every address (as TensorFlow's server binds it), else None."""
    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            with socket.socket(family) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((address, port))
            return None
        except OSError as exc:
            if family == socket.AF_INET6 and exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                continue  # no IPv6 here: TensorFlow binds IPv4
            return exc.strerror or exc.__class__.__name__
    return None
