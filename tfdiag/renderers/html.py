"""The HTML report: jinja2 with autoescape and StrictUndefined over the shipped templates."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from pathlib import Path

import jinja2
import markupsafe

from .._version import __version__
from ..analysis import Analysis
from ..analysis.findings import short_site
from ..analysis.units import duration
from ..recording import PHASES
from .charts import step_chart, timeline
from .memory_chart import memory_chart

PHASE_COLORS = {
    "input_processing": "#8e6cc4",
    "data_adapter": "#e0823d",
    "graph_creation": "#d64550",
    "kernel_execution": "#3b8f5a",
    "output_processing": "#3c7dc4",
    "callbacks": "#c9a227",
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
    env.filters["duration"] = duration
    env.filters["short_site"] = short_site
    env.filters["pct"] = lambda v: f"{100 * v:.0f}%"
    env.filters["code_spans"] = code_spans
    env.filters["step_chart"] = step_chart  # a training row's step timeline, laid out
    env.filters["memory_chart"] = memory_chart  # a memory row's series, laid out (memory_chart.py)
    env.filters["http_url"] = http_url
    env.filters["thousands"] = lambda n: f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else str(n)
    return env


# How much of each list the page shows at most; the rest is counted ("and K more") and stays in
# recording.json. Keeps a recording with 100,000 calls and 10,000 traces to a page of a few MB.
LIMITS = {
    "findings": 50,
    "evidence": 8,
    "phase_rows": 25,
    "retracing_functions": 25,
    "traces_per_function": 40,
    "functions": 100,
    "calls": 100,
    "warnings": 50,
    "profiler_rows": 15,  # cProfile's hot functions and the TF Profiler's top ops
    "training": 10,  # training call sites, each with its step chart
    "callbacks": 10,  # callbacks per training call site
}

# The page's only script: adds a Copy button to each code snippet. It is a constant (no data
# is ever put inside a <script> element); the Content-Security-Policy allows exactly this
# script by its hash, so nothing else on the page can run.
COPY_SCRIPT = """
(function () {
  function copied(button, ok) {
    button.textContent = ok ? "Copied" : "Press Ctrl+C";
    setTimeout(function () { button.textContent = "Copy"; }, 1500);
  }
  function selectAndCopy(pre, button) {
    var range = document.createRange();
    range.selectNodeContents(pre);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    copied(button, ok);
  }
  var snippets = document.querySelectorAll("div.snippet");
  for (var i = 0; i < snippets.length; i++) {
    (function (snippet) {
      var pre = snippet.querySelector("pre");
      if (!pre) { return; }
      var button = document.createElement("button");
      button.type = "button";
      button.className = "copy";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy this code");
      button.addEventListener("click", function () {
        var text = pre.textContent;
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(text).then(function () { copied(button, true); },
                                                   function () { selectAndCopy(pre, button); });
        } else {
          selectAndCopy(pre, button);
        }
      });
      snippet.insertBefore(button, pre);
    })(snippets[i]);
  }
})();
"""
COPY_SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(COPY_SCRIPT.encode("utf-8")).digest()).decode("ascii")

_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_HTTP_URL = re.compile(r"https?://[^\s\"'<>`]+")


def code_spans(value) -> markupsafe.Markup:
    """Escape ``value``, then show its `backticked` parts as <code> (escaping comes first)."""
    escaped = str(markupsafe.escape("" if value is None else str(value)))
    return markupsafe.Markup(_CODE_SPAN.sub(r"<code>\1</code>", escaped))


def http_url(value) -> str:
    """``value`` if it is a plain http(s) URL, else "" (no javascript: or data: links)."""
    text = str(value or "")
    return text if _HTTP_URL.fullmatch(text) else ""


def render_report(analysis: Analysis) -> str:
    """The page, from the Analysis alone (templates read nothing else)."""
    template = environment().get_template("report.html.j2")
    return template.render(
        a=analysis,
        phases=PHASES,
        phase_colors=PHASE_COLORS,
        version=__version__,
        max_row_s=max((row["per_call_s"] for row in analysis.phase_rows), default=0.0),
        timeline=timeline(analysis),
        limits=LIMITS,
        copy_script=markupsafe.Markup(COPY_SCRIPT),
        script_hash=COPY_SCRIPT_HASH,
    )

