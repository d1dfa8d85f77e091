"""Reading a TF Profiler trace back through xprof's converter: its op table and overview.

Why a module of its own: the single-process TF Profiler gate (tf_profiler.py) and ``tfdiag
capture`` (remote.py) read traces the same way. ``read_trace`` gives the top TF ops by self time
(host vs device) and the per-step times, ``read_ops`` every op (trace_ops.op_rows and
overview_rows parse xprof's tables). xprof logs about 30 lines of C++ per conversion to stderr:
``quiet_stderr`` keeps them off the terminal (and in the warning when a conversion fails); the
profiler session's start and stop (tf_profiler.py) use it too.

Cost: a conversion per tool per trace, once, after the run (about a second for a few calls).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import threading

from .collector import Collector
from .trace_ops import op_rows, overview_rows

TOP_OPS = 20
CONVERTER_MODULES = ("xprof.convert.raw_to_tool_data", "tensorboard_plugin_profile.convert.raw_to_tool_data")
# A C++ log line (absl/glog: "I0000 00:00:1796172917.664741   11408 file.cc:214] ...") or absl's notice.
LOG_LINE = re.compile(rb"[IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\] |WARNING: All log messages before absl::")
_STDERR = threading.RLock()  # one redirection of file descriptor 2 at a time (re-entrant)


@contextlib.contextmanager
def quiet_stderr(captured: list):
    """File descriptor 2 goes to a temporary file while xprof converts tfdiag's own trace: its C++
    logging is tfdiag's, not the script's. The redirection is process-wide (one at a time: a lock),
    so whatever else reaches the file meanwhile (another thread's print, a traceback) is written back
    to stderr afterwards; only C++ log lines (``LOG_LINE``) stay out, added to ``captured``."""
    try:
        sink = tempfile.TemporaryFile()
    except OSError:  # no room for the file: the conversion runs with its logging, rather than not at all
        yield
        return
    with _STDERR, sink:
        with contextlib.suppress(Exception):
            sys.stderr.flush()  # what Python holds for stderr goes out before, not into the file
        try:
            saved = os.dup(2)
        except OSError:  # no file descriptor 2: nothing reaches a terminal to keep quiet
            saved = None
        try:
            if saved is not None:
                os.dup2(sink.fileno(), 2)
            yield
        finally:
            if saved is not None:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                lines = sink.read().splitlines(keepends=True)
                captured.extend(line.decode("utf-8", "replace").rstrip() for line in lines if LOG_LINE.match(line))
                others = b"".join(line for line in lines if not LOG_LINE.match(line))
                with contextlib.suppress(OSError):
                    while others:
                        others = others[os.write(2, others):]


def _logged(captured: list) -> str:
    """xprof's last log lines, for a warning (it says why a conversion failed)."""
    return f"; xprof logged: {' | '.join(captured[-8:])}" if captured else ""


def _converter(collector: Collector):
    import importlib

    for name in CONVERTER_MODULES:
        try:
            with quiet_stderr([]):  # loading xprof's library logs absl's notice
                module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "xspace_to_tool_data"):
            return name, module
    collector.warn("TF Profiler trace not read back: xprof (tensorboard-plugin-profile) with "
                   "raw_to_tool_data.xspace_to_tool_data is not installed")
    return None, None


def _tool_json(module, name: str, paths: list[str], tool: str, collector: Collector, options: dict | None = None):
    """One xprof tool's output as parsed JSON, or None with a warning (``options``: xprof's tool
    options, e.g. ``{"use_saved_result": False}`` not to reuse tables it cached beside the files)."""
    captured: list[str] = []
    try:
        with quiet_stderr(captured):
            result = module.xspace_to_tool_data(paths, tool, dict(options or {}))
        data = result[0] if isinstance(result, tuple) else result
        if data is None:
            collector.warn(f"xprof ({name}) produced no {tool} data for the TF Profiler trace{_logged(captured)}")
            return None
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        return json.loads(data)
    except Exception as exc:  # converter API or output format differs in this version
        collector.warn(f"xprof ({name}) could not convert the trace to {tool}: {exc.__class__.__name__}: {exc}"
                       f"{_logged(captured)}")
        return None


def _ops(module, name: str, paths: list[str], collector: Collector, options: dict | None) -> list[dict] | None:
    """Every op of xprof's framework_op_stats (trace_ops.op_rows), or None with a warning."""
    tables = _tool_json(module, name, paths, "framework_op_stats", collector, options)
    if tables is None:
        return None
    try:
        return op_rows(tables)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        collector.warn(f"xprof framework_op_stats had an unexpected layout: {exc.__class__.__name__}: {exc}")
        return None


def read_ops(paths: list[str], collector: Collector, options: dict | None = None) -> list[dict] | None:
    """Every op in the trace (not only the top ones), or None (with a warning) without xprof."""
    name, module = _converter(collector)
    return None if module is None else _ops(module, name, paths, collector, options)


def read_trace(paths: list[str], collector: Collector, options: dict | None = None, all_ops: bool = False) -> dict:
    """Top TF ops by self time (host vs device) and per-step times, via xprof's converter;
    ``all_ops``: every op too, under ``ops`` (for remote.py; the recording keeps the top ones)."""
    name, module = _converter(collector)
    if module is None:
        return {}
    out: dict = {"converter": name}
    ops = _ops(module, name, paths, collector, options)
    if ops is not None:
        out["top_ops"] = sorted(ops, key=lambda r: r["self_s"], reverse=True)[:TOP_OPS]
        by_where: dict = {}
        for row in ops:
            by_where[row["where"]] = by_where.get(row["where"], 0.0) + row["self_s"]
        out["self_s_by_where"] = by_where
        if all_ops:
            out["ops"] = ops
    overview = _tool_json(module, name, paths, "overview_page", collector, options)
    if overview is not None:
        try:
            out["steps"], out["summary"] = overview_rows(overview)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            collector.warn(f"xprof overview_page had an unexpected layout: {exc.__class__.__name__}: {exc}")
    return out
