"""The HTML report: jinja2 with autoescape and StrictUndefined over the shipped templates."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jinja2

from .. import __version__
from ..analysis import Analysis
from ..analysis.findings import ms, short_site
from ..recording import PHASES, Recording

PHASE_COLORS = {
    "input_processing": "#8e6cc4",
    "data_adapter": "#e0823d",
    "graph_creation": "#d64550",
    "kernel_execution": "#3b8f5a",
    "output_processing": "#3c7dc4",
    "other": "#9aa1a9",
}


def templates_dir() -> Path:
    """Where report.html.j2 lives: ``tfdiag/templates`` in an installed wheel (the top-level
    ``templates/`` is mapped there by pyproject.toml), else the checkout's ``templates/``."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "templates", package.parent / "templates"):
        if (candidate / "report.html.j2").is_file():
            return candidate
    raise FileNotFoundError("tfdiag's report templates are missing from this installation")


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ms"] = ms
    env.filters["short_site"] = short_site
    env.filters["pct"] = lambda v: f"{100 * v:.0f}%"
    return env


def render_report(recording: Recording, analysis: Analysis) -> str:
    template = environment().get_template("report.html.j2")
    return template.render(
        r=recording.to_dict(),
        a=analysis,
        phases=PHASES,
        phase_colors=PHASE_COLORS,
        version=__version__,
        max_row_s=max((row["per_call_s"] for row in analysis.phase_rows), default=0.0),
    )


def write_report(recording: Recording, analysis: Analysis, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    text = render_report(recording, analysis)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path
