"""The terminal summary printed after ``tfdiag analyze``: the verdict, the top findings, the
files written and how to open them. Formatting only; the numbers come from the Analysis."""

from __future__ import annotations

import os
import textwrap

from ..analysis import Analysis, agreement
from ..analysis.units import duration

TOP_FINDINGS = 3
TOP_WARNINGS = 3
TOP_TRAINING = 2  # training call sites summarised (the page has them all)  # capture warnings shown (the TF Profiler cross-check's always are)
WIDTH = 100


def _wrap(text: str, indent: str, first: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=first or indent, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False) or [first or indent]


def summary(analysis: Analysis, files: dict[str, str]) -> str:
    lines = [""]
    lines += _wrap(analysis.verdict, "        ", "tfdiag: ")
    run = analysis.run
    if run["failed"]:
        how = f"  the code {run['ending']}"
        if run["exit_status"] is not None:
            how += f" (exit status {run['exit_status']})"
        if run["exception"]:
            how += f": {run['exception']}"
        lines.append(how + "; the report covers what ran before that")
    for row in analysis.training[:TOP_TRAINING]:
        lines += _wrap(_training_line(row), "            ", "  training: ")
    for rank, finding in enumerate(analysis.findings[:TOP_FINDINGS], 1):
        saves = finding["estimated_savings_s"]  # 0 for a finding about memory, not time
        lines += _wrap(f"[{finding['severity']}] {finding['code']}: {finding['title']}"
                       + (f" (≈{duration(saves)} to save)" if saves > 0 else ""), "     ", f"  {rank}. ")
        code = (finding.get("fix") or {}).get("code") or ""
        first_line = next((line.strip() for line in code.splitlines() if line.strip()), "")
        if first_line:
            lines.append(f"     fix: {first_line}" + (" …" if code.strip().count("\n") else ""))
    if len(analysis.findings) > TOP_FINDINGS:
        lines.append(f"  … and {len(analysis.findings) - TOP_FINDINGS} more in the report")
    if analysis.processes:  # followed child processes (analysis/processes.py)
        lines += _wrap(analysis.processes["summary"] + "; see Processes in the report", "             ", "  processes: ")
    # The TF Profiler cross-check's disagreements all show (one per profiled call site at most): they
    # say which figure to doubt. Then the first capture warnings.
    checks = [w for w in analysis.warnings if agreement.is_derived(w)]
    others = [w for w in analysis.warnings if isinstance(w, dict) and not agreement.is_derived(w)]
    for warning in checks:
        lines += _wrap(str(warning.get("message")), "           ", "  warning: ")
    for warning in others[:TOP_WARNINGS]:
        lines.append(f"  warning: {warning.get('message')}")
    if len(others) > TOP_WARNINGS:
        lines.append(f"  … and {len(others) - TOP_WARNINGS} more capture warnings in the report")
    lines.append(paths(files))
    return "\n".join(lines)


def _training_line(row: dict) -> str:
    """``fit() m at train.py:31: 150 steps, median step 12 ms: data_adapter 62% · kernel_execution 26%``."""
    line = f"{row['label']} at {os.path.basename(row['call_site'] or '')}"
    if row["steps"] is not None:
        line += f": {row['steps']} steps"
    if row["step_median_s"]:
        line += f", median step {duration(row['step_median_s'])}"
    if row["shares"]:
        top = sorted((p for p, v in row["shares"].items() if v >= 0.05), key=lambda p: -row["shares"][p])
        line += (": " + " · ".join(f"{p} {100 * row['shares'][p]:.0f}%" for p in top)) if top else ""
    return line


def paths(files: dict[str, str]) -> str:
    """The files written, then the commands that open each of them."""
    lines = ["files written:"]
    labels = {"report": "report", "recording": "recording", "profile": "cProfile",
              "tensorboard": "TF Profiler"}
    for key, label in labels.items():
        if key in files:
            lines.append(f"  {label + ':':<13}{files[key]}")
    for key, value in files.items():
        if key not in labels:
            lines.append(f"  {key + ':':<13}{value}")
    opens = []
    if "report" in files:
        opens.append(f"  tfdiag open {files['report']}")
    folder = os.path.dirname(files.get("report") or files.get("recording") or "") or "."
    if "profile" in files:
        opens.append(f"  tfdiag snakeviz {files['profile']}")
    if "tensorboard" in files:
        opens.append(f"  tfdiag tensorboard {folder}")
    if "recording" in files:
        opens.append(f"  tfdiag report {files['recording']}   # re-render the page from the recording")
    if opens:
        lines.append("open them with:")
        lines += opens
    return "\n".join(lines)
