"""The Recording: the one data type every stage of tfdiag shares.

Capture fills it, analysis reads it, rendering formats it. It is plain data
(dicts, lists, strings, numbers) so that it round-trips through JSON exactly,
and a saved ``recording.json`` re-renders the same report as the live run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1

PHASES = (
    "input_processing",
    "data_adapter",
    "graph_creation",
    "kernel_execution",
    "output_processing",
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
            kwargs[name] = value
        extra = {k: v for k, v in data.items() if k not in _SECTIONS and k != "schema_version"}
        return cls(schema_version=version, extra=extra, **kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False, default=_json_default)

    def save(self, path: str | os.PathLike) -> str:
        """Write the recording as JSON (atomically, so a crash never leaves half a file)."""
        path = os.fspath(path)
        text = self.to_json()
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
        return path

    # Convenience views used by analysis and rendering.
    def user_functions(self) -> list[dict]:
        return [f for f in self.functions if f.get("origin") == "user"]


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
