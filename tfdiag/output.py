"""Writing a diagnosed run's files: report.html, recording.json, profile.prof, tensorboard/.

The Recording is never changed here. recording.json is a derived form of it: the capture's
sections with what the Analysis read from them (findings, each profiler's section as read,
which measured path is recommended) and what writing the files added (their names, the
command that opens each). So ``tfdiag report recording.json`` re-renders the same page.
"""

from __future__ import annotations

import os
import shlex
import shutil
from typing import Callable

from .analysis import Analysis
from .recording import Recording, to_json, write_atomically
from .renderers import html

PROFILE = "profile.prof"
TENSORBOARD = "tensorboard"

# What a run may leave besides the report and the recording: name -> writer(path) -> written?
Artifacts = dict[str, Callable[[str], bool]]


def write_report(analysis: Analysis, path: str | os.PathLike) -> str:
    """Render the page and write it atomically to ``path``; returns the path."""
    return write_atomically(path, html.render_report(analysis))


def write_recording(path: str | os.PathLike, recording: Recording, analysis: Analysis) -> str:
    """Write recording.json: the recording's sections with the analysis's (``Analysis.recorded``)."""
    data = recording.to_dict()
    data.update(analysis.recorded())
    return write_atomically(path, to_json(data))


def write(out: str | os.PathLike, recording: Recording, analysis: Analysis,
          artifacts: Artifacts | None = None) -> tuple[dict[str, str], Analysis]:
    """Write every file of the run into ``out``. Returns {kind: path} of what was written, and
    the analysis as the files show it (``Analysis.with_output``).

    ``artifacts``: ``"profile"`` (writes cProfile's stats to a path) and ``"tensorboard"``
    (copies the TF Profiler's logdir to a path), each present when that profiler ran.
    """
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    artifacts = artifacts or {}
    files: dict[str, str] = {}
    sections: dict[str, dict] = {}
    warnings: list[dict] = []
    quoted = shlex.quote(out)
    save_profile = artifacts.get("profile")
    prof = os.path.join(out, PROFILE)
    if save_profile is not None and save_profile(prof):
        files["profile"] = prof
        sections["cprofile"] = {"file": PROFILE, "command": f"tfdiag snakeviz {quoted}"}
    copy_trace = artifacts.get("tensorboard")
    logdir = os.path.join(out, TENSORBOARD)
    if copy_trace is not None and analysis.profilers.get("tf_profiler") is not None:
        try:
            copied = copy_trace(logdir)
        except OSError as exc:
            warnings.append({"message": f"could not copy the TF Profiler trace to {logdir}: {exc}", "count": 1})
        else:
            if copied:
                files["tensorboard"] = logdir
                sections["tf_profiler"] = {"logdir": TENSORBOARD, "command": f"tfdiag tensorboard {quoted}"}
    _remove_stale(out, files)
    written = analysis.with_output(sections, warnings)
    files["recording"] = write_recording(os.path.join(out, "recording.json"), recording, written)
    files["report"] = write_report(written, os.path.join(out, "report.html"))
    return files, written


def _remove_stale(out: str, files: dict) -> None:
    """Drop a profile.prof or tensorboard/ left in ``out`` by an earlier run that this run did not write,
    so the folder never pairs this report with another run's profiles."""
    prof = os.path.join(out, PROFILE)
    if "profile" not in files and os.path.isfile(prof):
        os.remove(prof)
    logdir = os.path.join(out, TENSORBOARD)
    if "tensorboard" not in files and os.path.isdir(logdir):
        shutil.rmtree(logdir)
