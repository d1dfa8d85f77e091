"""What ``tfdiag merge`` and ``tfdiag capture`` show: the merged page, and their terminal tables.

The page is templates/merge.html.j2 in the report's jinja2 environment (autoescape,
StrictUndefined, the report's stylesheet and Content-Security-Policy); it reads only the merged
view (analysis/merge.py). The tables read only the merged view and capture.json's section.
"""

from __future__ import annotations

from .._version import __version__
from ..analysis.units import duration
from ..recording import PHASES
from .html import COPY_SCRIPT, COPY_SCRIPT_HASH, LIMITS, PHASE_COLORS, environment

import markupsafe


def render_merge(view: dict, command: str) -> str:
    """The merged page of ``view`` (analysis.merge.merge)."""
    template = environment().get_template("merge.html.j2")
    return template.render(m=view, command=command, phases=PHASES, phase_colors=PHASE_COLORS, version=__version__,
                           limits=LIMITS, copy_script=markupsafe.Markup(COPY_SCRIPT), script_hash=COPY_SCRIPT_HASH)


def _top_phase(split: dict | None) -> str:
    if not split or sum(split.values()) <= 0:
        return "—"
    phase = max(PHASES, key=lambda p: split.get(p, 0.0))
    return f"{phase} {100 * split[phase] / sum(split.values()):.0f}%"


def merge_summary(view: dict) -> str:
    """A few lines for the terminal: the findings, then each shared site's step per worker."""
    lines = []
    for finding in view["findings"]:
        lines.append(f"tfdiag: [{finding['severity']}] {finding['code']}: {finding['title'].replace('`', '')}")
    if not view["findings"]:
        lines.append(f"tfdiag: {len(view['workers'])} workers merged; no worker holds the others back")
    for site in view["sites"]:
        lines.append(f"  {site['label']} at {site['call_site']}:")
        for row in site["workers"]:
            wait = row.get("collective_wait_s")
            lines.append(f"    {row['task']:<12} median step {duration(row['step_s'] or 0.0):>9}  "
                         f"{_top_phase(row['split'])}"
                         + (f"  (of which ~{duration(wait)} waiting in the all-reduce)" if wait else ""))
    for warning in view["warnings"]:
        lines.append(f"  warning: {warning['message']}")
    return "\n".join(lines)


def capture_table(section: dict) -> str:
    """Per host: op time in the window, the part in collective ops (in a synchronous job, mostly waiting
    for the slowest worker), the op that took most of it, or why nothing came back."""
    lines = [f"tfdiag: traced {section['traced']} of {len(section['hosts'])} hosts for {section['duration_ms']} ms "
             f"(run {section['run'] or '—'})",
             f"  {'host':<24} {'op time':>10} {'of window':>9} {'collectives':>11}  top op (self time)"]
    window = section["duration_ms"] / 1000.0
    for host in section["hosts"]:
        if host["error"]:
            lines.append(f"  {host['address']:<24} {'—':>10} {'—':>9} {'—':>11}  {host['error']}")
            continue
        op_s = host["op_s"]
        top = host["top_ops"][0] if host["top_ops"] else None
        top_text = f"{top['op']} ({top['type']}) {duration(top['self_s'])}" if top else "no TF ops in the window"
        steps = f"; {host['steps']} steps, {duration(host['step_s_average'])} each" if host["step_s_average"] else ""
        lines.append(f"  {host['address']:<24} {duration(op_s) if op_s is not None else '—':>10} "
                     f"{(f'{100 * op_s / window:.0f}%' if op_s is not None and window > 0 else '—'):>9} "
                     f"{duration(host['collective_s']) if host['collective_s'] is not None else '—':>11}  {top_text}{steps}")
    return "\n".join(lines)
