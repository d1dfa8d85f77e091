"""The terminal summary printed after ``tfdiag analyze``."""

from __future__ import annotations

from ..analysis import Analysis
from ..analysis.findings import ms
from ..recording import Recording

TOP_FINDINGS = 3


def summary(recording: Recording, analysis: Analysis, files: dict[str, str]) -> str:
    lines = ["", "tfdiag: " + analysis.verdict]
    for finding in analysis.findings[:TOP_FINDINGS]:
        lines.append(f"  [{finding['severity']}] {finding['code']}: {finding['title']} "
                     f"(≈{ms(finding['estimated_savings_s'])} to save)")
    if len(analysis.findings) > TOP_FINDINGS:
        lines.append(f"  … and {len(analysis.findings) - TOP_FINDINGS} more in the report")
    for warning in recording.warnings[:3]:
        lines.append(f"  warning: {warning.get('message')}")
    lines.append(paths(files))
    return "\n".join(lines)


def paths(files: dict[str, str]) -> str:
    lines = []
    labels = {"report": "report", "recording": "recording", "profile": "cProfile (tfdiag snakeviz)",
              "tensorboard": "TF Profiler (tfdiag tensorboard)"}
    for key, label in labels.items():
        if key in files:
            lines.append(f"  {label}: {files[key]}")
    if "report" in files:
        lines.append(f"  open it with: tfdiag open {files['report']}")
    return "\n".join(lines)
