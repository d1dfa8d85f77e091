"""``tfdiag diff``'s output: the terminal text and the self-contained diff.html page.

Formatting only: every number comes from the Diff (analysis/diff.py); the page is jinja2 with
autoescape and StrictUndefined in the report's style (its stylesheet), with no script at all.
"""

from __future__ import annotations

import os
import textwrap

from .._version import __version__
from ..analysis.diff import Diff, describe
from ..analysis.units import duration
from ..recording import PHASES
from .html import PHASE_COLORS, environment

WIDTH = 100
TOP_PHASES = 3  # phase changes per site in the terminal (the page has them all)
TOP_FUNCTIONS = 5


def text(diff: Diff) -> str:
    lines = [f"tfdiag diff: {diff.before['label']} -> {diff.after['label']}", ""]
    lines += textwrap.wrap(diff.verdict, WIDTH, break_long_words=False, break_on_hyphens=False)
    lines.append(f"run: {_run(diff.before)} -> {_run(diff.after)}")
    lines += ["", "call sites (median per call, steady state: first call and profiled calls left out):"]
    for row in diff.sites:
        api = row["api_before"] if row["api_before"] == row["api_after"] else f"{row['api_before']} -> {row['api_after']}"
        site = os.path.basename(row["call_site"])
        if row["call_site_before"] != row["call_site"]:
            site = f"{os.path.basename(row['call_site_before'])} -> {site} (matched by {row['matched_by']})"
        lines.append(f"  {row['target']}  {api}  at {site}")
        old, new = row["before"], row["after"]
        medians = old["statistic"].startswith("median") and new["statistic"].startswith("median")
        times = (f"median {duration(old['per_call_s'])} -> {duration(new['per_call_s'])}" if medians
                 else f"{_per_call(old)} -> {_per_call(new)}")
        lines.append(f"    {times}: {describe(row['change'], diff.level)}")
        lines.append(f"    calls {old['count']} -> {new['count']} ({old['samples']} and {new['samples']} sampled); "
                     f"first call {duration(old['first_s'])} -> {duration(new['first_s'])}; "
                     f"traces {old['traces']} -> {new['traces']}")
        shown = [c for c in row["phase_changes"] if abs(c["delta_s"]) > 0][:TOP_PHASES]
        if shown:
            lines.append("    per call: " + " · ".join(
                f"{c['phase']} {duration(c['before_s'])} -> {duration(c['after_s'])}" for c in shown))
    for side, rows in (("before", diff.only_before), ("after", diff.only_after)):
        for row in rows:
            lines.append(f"  only {side}: {row['target']} {row['api']} at {os.path.basename(row['call_site'])} "
                         f"({row['count']} call{'s' if row['count'] != 1 else ''})")
    if diff.functions:
        lines += ["", "traces:"]
        for fn in diff.functions[:TOP_FUNCTIONS]:
            lines.append(f"  {fn['name']} ({fn['origin']}): {fn['before']} -> {fn['after']}")
        if len(diff.functions) > TOP_FUNCTIONS:
            lines.append(f"  … and {len(diff.functions) - TOP_FUNCTIONS} more functions traced a different number of times")
    lines += ["", "findings:"]
    for label, findings in (("resolved", diff.resolved), ("new", diff.new), ("still there", diff.kept)):
        for finding in findings:
            lines += textwrap.wrap(f"[{finding['severity']}] {finding['code']}: {finding['title']}", WIDTH,
                                   initial_indent=f"  {label}: ", subsequent_indent="      ",
                                   break_long_words=False, break_on_hyphens=False)
    if not (diff.resolved or diff.new or diff.kept):
        lines.append("  none on either side")
    return "\n".join(lines)


def _per_call(side: dict) -> str:
    """``median 51 ms``, or what stands in for it: ``0.42 ms (mean of 29 later calls ...)``."""
    if side["per_call_s"] is None:
        return side["statistic"]
    if side["statistic"].startswith("median"):
        return f"median {duration(side['per_call_s'])}"
    return f"{duration(side['per_call_s'])} ({side['statistic']})"


def _run(side: dict) -> str:
    wall = f"{duration(side['wall_s'])} under tfdiag" if side["wall_s"] is not None else "wall time not recorded"
    return f"{wall}, {side['calls']} calls"


def render_html(diff: Diff) -> str:
    """The page, from the Diff alone."""
    template = environment().get_template("diff.html.j2")
    bar_max = {id(row): max(sum(row["before"]["phases"].values()), sum(row["after"]["phases"].values()))
               for row in diff.sites}
    return template.render(d=diff, phases=PHASES, phase_colors=PHASE_COLORS, version=__version__,
                           describe=describe, bars=[_bars(row, bar_max[id(row)]) for row in diff.sites])


def _bars(row: dict, widest: float) -> dict:
    """Each side's steady split per call as bar segments (x, width of 400), on one scale per site."""
    out = {}
    for side in ("before", "after"):
        x, segments = 0.0, []
        for phase in PHASES:
            seconds = row[side]["phases"][phase]
            width = seconds / widest * 400 if widest > 0 else 0.0
            if width > 0:
                segments.append({"phase": phase, "x": x, "width": width, "seconds": seconds})
                x += width
        out[side] = segments
    return out
