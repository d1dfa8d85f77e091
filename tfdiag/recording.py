"""The Recording: the one data type every stage of tfdiag shares.

Capture fills it, analysis reads it, rendering formats it. It is plain data
(dicts, lists, strings, numbers) so that it round-trips through JSON exactly,
and a saved ``recording.json`` re-renders the same report as the live run.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1

PHASES = (
    "input_processing",
    "data_adapter",
    "graph_creation",
    "kernel_execution",
    "output_processing",
    "callbacks",
    "other",
)

# Sections every recording has, with the type each must be.
_SECTIONS: dict[str, type] = {
    "environment": dict,
    "run": dict,
    "functions": list,
    "calls": list,
    "call_samples": list,
    "phases": dict,
    "findings": list,
    "warnings": list,
}


_NUMBER = (int, float)

# Fields each entry of a section must have, with their types: checked on load so analysis and
# rendering can trust a recording they did not make.
_ENTRY_FIELDS: dict[str, dict[str, tuple]] = {
    "calls": {"api": (str,), "target": (str,), "call_site": (str,), "input_signature": (str,),
              "count": (int,), "median_s": _NUMBER, "p95_s": _NUMBER, "first_s": _NUMBER,
              "total_s": _NUMBER, "phases": (dict,)},
    "functions": {"name": (str,), "origin": (str,), "defined_at": (str,), "trace_count": (int,),
                  "trace_s": _NUMBER, "traces": (list,)},
    "findings": {"code": (str,), "severity": (str,), "title": (str,), "function": (str,),
                 "call_site": (str,), "evidence": (list,), "estimated_savings_s": _NUMBER, "fix": (dict,)},
    "call_samples": {"api": (str,), "start_s": _NUMBER, "duration_s": _NUMBER},
    "warnings": {"message": (str,)},
}
_TRACE_FIELDS = {"duration_s": _NUMBER, "args": (list,)}
_NONE = (type(None),)
# Fields an entry may have (absent or null is fine; otherwise of this type).
_OPTIONAL_FIELDS: dict[str, dict[str, tuple]] = {
    "calls": {"batch": (int,), "phase_calls": (int,), "first_phases": (dict,),
              "steady_phases": (dict,), "training": (bool,), "caller": (dict,), "data_adapter_teardown_s": _NUMBER,
              "input_spec": (dict, list), "first_call_measured": (bool,), "steady_teardown_s": _NUMBER,
              # training calls (fit, evaluate, train_on_batch, test_on_batch, train_step)
              "steps": (int,), "epochs": (int,), "steps_per_epoch": (list,), "step_median_s": _NUMBER,
              "step_p95_s": _NUMBER, "first_step_s": _NUMBER, "step_phases": (dict,), "first_step_phases": (dict,),
              "step_timeline": (dict,), "steps_per_execution": (int,), "run_eagerly": (bool,),
              "jit_compile": (bool,), "callbacks": (list,), "data_producer": (dict,), "training_step": (bool,),
              "defined_at": (str,), "eager": (bool,), "durations_sample_s": (list,)},
    "functions": {"role": (str,), "model_created_at": (str,), "traces_dropped": (int,), "training_step": (bool,)},
}
_PHASE_MAPS = ("phases", "first_phases", "steady_phases", "step_phases", "first_step_phases")
# Top-level tool sections, when present: (type, type of each entry for lists).
_TOOL_SECTIONS: dict[str, tuple[type, type | None]] = {
    "cprofile": (dict, None), "tf_profiler": (dict, None), "alternatives": (list, dict), "retrace_checks": (list, dict),
    "worker": (dict, None),  # the TF_CONFIG task (capture/worker.py)
    "processes": (list, dict),  # the child processes followed (capture/processes.py)
    "memory": (dict, None),  # memory at sampled calls (capture/memory.py)
}
# Each ``processes`` entry (a followed child): its pid, and fields the page reads when present.
_PROCESS_OPTIONAL = {"parent_pid": (int,), "role": (str,), "status": (str,), "argv": (list,), "wall_s": _NUMBER,
                     "exit_status": (int,), "ended_by": (str,), "exception": (str,), "signal": (str, int),
                     "recording": (str,), "top_finding": (dict,), "calls": (list,), "functions": (list,)}
_PROCESS_CALL_OPTIONAL = {"api": (str,), "target": (str,), "call_site": (str,), "count": (int,), "total_s": _NUMBER}
# Fields of ``run`` and ``environment`` that reports format, with their types.
_RUN_FIELDS = {"wall_s": _NUMBER, "exit_status": (int,), "ended_by": (str,), "exception": (str,),
               "call_samples_total": (int,)}


def _check_entries(section: str, entries: list) -> None:
    fields = _ENTRY_FIELDS.get(section)
    if fields is None:
        return
    for index, entry in enumerate(entries):
        _check_fields(f"{section}[{index}]", entry, fields)
        _check_fields(f"{section}[{index}]", entry, _OPTIONAL_FIELDS.get(section, {}), optional=True)
        if section == "functions":
            for t_index, trace in enumerate(entry["traces"]):
                _check_fields(f"{section}[{index}].traces[{t_index}]", trace, _TRACE_FIELDS)
                for a_index, arg in enumerate(trace["args"]):
                    if not isinstance(arg, dict) or not isinstance(arg.get("name"), str):
                        raise RecordingError(f"corrupt recording: {section}[{index}].traces[{t_index}]"
                                             f".args[{a_index}] has no name")
        if section == "calls":
            for key in _PHASE_MAPS:
                for name, value in (entry.get(key) or {}).items():
                    if not isinstance(value, _NUMBER) or isinstance(value, bool):
                        raise RecordingError(f"corrupt recording: {section}[{index}].{key}.{name} is not a number")


def _check_fields(where: str, entry, fields: dict, optional: bool = False) -> None:
    if not isinstance(entry, dict):
        raise RecordingError(f"corrupt recording: {where} should be an object")
    for name, kinds in fields.items():
        value = entry.get(name)
        if optional and value is None:
            continue
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise RecordingError(f"corrupt recording: {where}.{name} is missing or not a "
                                 f"{' or '.join(k.__name__ for k in kinds)}")


class RecordingError(ValueError):
    """A file that cannot be read as a tfdiag recording (the message is one line)."""


@dataclass
class Recording:
    """Raw measurements of one diagnosed run, plus the findings derived from them.

    ``extra`` holds tool-specific top-level sections (``cprofile``,
    ``tf_profiler``, ``alternatives``, ...) that round-trip untouched.
    """

    environment: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)
    functions: list = field(default_factory=list)
    calls: list = field(default_factory=list)
    call_samples: list = field(default_factory=list)
    phases: dict = field(default_factory=dict)
    findings: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"schema_version": self.schema_version}
        for name in _SECTIONS:
            data[name] = getattr(self, name)
        for key, value in self.extra.items():
            data.setdefault(key, value)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "Recording":
        if not isinstance(data, dict) or "schema_version" not in data:
            raise RecordingError("not a tfdiag recording (no schema_version field)")
        version = data["schema_version"]
        if not isinstance(version, int) or isinstance(version, bool):
            raise RecordingError(f"not a tfdiag recording (schema_version is {version!r})")
        if version > SCHEMA_VERSION:
            raise RecordingError(
                f"recording has schema_version {version}, newer than this tfdiag "
                f"understands ({SCHEMA_VERSION}); upgrade tfdiag to read it"
            )
        if version < 1:
            raise RecordingError(f"recording has unknown schema_version {version}")
        kwargs: dict[str, Any] = {}
        for name, kind in _SECTIONS.items():
            value = data.get(name, kind())
            if not isinstance(value, kind):
                raise RecordingError(
                    f"corrupt recording: {name!r} should be a {kind.__name__}, "
                    f"found {type(value).__name__}"
                )
            if isinstance(value, list):
                _check_entries(name, value)
            kwargs[name] = value
        phases = kwargs["phases"]
        if any(not isinstance(v, _NUMBER) or isinstance(v, bool) for v in phases.values()):
            raise RecordingError("corrupt recording: 'phases' should map phase names to seconds")
        extra = {k: v for k, v in data.items() if k not in _SECTIONS and k != "schema_version"}
        _check_tool_sections(extra)
        _check_fields("run", kwargs["run"], _RUN_FIELDS, optional=True)
        command = kwargs["environment"].get("command")
        if command is not None and not (isinstance(command, list) and all(isinstance(w, str) for w in command)):
            raise RecordingError("corrupt recording: environment.command should be a list of strings")
        return cls(schema_version=version, extra=extra, **kwargs)

    def to_json(self) -> str:
        return to_json(self.to_dict())

    def save(self, path: str | os.PathLike) -> str:
        """Write the recording as JSON (atomically, so a crash never leaves half a file)."""
        return write_atomically(path, self.to_json())

    # Convenience views used by analysis and rendering.
    def user_functions(self) -> list[dict]:
        return [f for f in self.functions if f.get("origin") == "user"]


def _check_tool_sections(extra: dict) -> None:
    for name, (kind, entry_kind) in _TOOL_SECTIONS.items():
        value = extra.get(name)
        if value is None:
            continue
        if not isinstance(value, kind):
            raise RecordingError(f"corrupt recording: {name!r} should be a {kind.__name__}, found {type(value).__name__}")
        if entry_kind is not None and not all(isinstance(e, entry_kind) for e in value):
            raise RecordingError(f"corrupt recording: each entry of {name!r} should be an object")
    for index, entry in enumerate(extra.get("processes") or []):
        _check_fields(f"processes[{index}]", entry, {"pid": (int,)})
        _check_fields(f"processes[{index}]", entry, _PROCESS_OPTIONAL, optional=True)
        for c_index, call in enumerate(entry.get("calls") or []):
            _check_fields(f"processes[{index}].calls[{c_index}]", call, _PROCESS_CALL_OPTIONAL, optional=True)


def to_json(data: dict) -> str:
    """A recording's dict as the JSON recording.json holds (NumPy scalars made plain, no NaN)."""
    return json.dumps(data, indent=1, allow_nan=False, default=_json_default)


def write_atomically(path: str | os.PathLike, text: str) -> str:
    """Write ``text`` to ``path`` through a temporary file, so a crash never leaves half a file."""
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"  # one per writer: two never share it
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return path


def _json_default(value: Any) -> Any:
    """Make NumPy scalars and other stragglers JSON-safe rather than failing the save."""
    for attr in ("item", "tolist"):
        if hasattr(value, attr):
            try:
                return getattr(value, attr)()
            except (TypeError, ValueError):
                break
    return repr(value)


def load(path: str | os.PathLike) -> Recording:
    """Load a saved recording; any problem is a RecordingError with a one-line message."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise RecordingError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RecordingError(f"{path}: is a directory, not a recording.json") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordingError(f"{path}: cannot read ({exc.__class__.__name__}: {exc})") from None
    return loads(text, source=path)


def loads(text: str, source: str = "<string>") -> Recording:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordingError(
            f"{source}: not valid JSON (truncated or corrupt at line {exc.lineno}, column {exc.colno})"
        ) from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise RecordingError(f"{source}: not valid JSON ({exc.__class__.__name__})") from None
    try:
        return Recording.from_dict(data)
    except RecordingError as exc:
        raise RecordingError(f"{source}: {exc}") from None
