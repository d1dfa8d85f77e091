"""Two recordings of the same code, before and after a change: did the change work?

Call sites are matched by (target, call site); sites whose lines moved are then matched among
those with the same target and set of APIs, by the line shift they share, else by a clearly
closest call count, else not at all (an ambiguous site is listed as only before / only after).
For each matched site the median per call is taken from the recording's per-call durations
(each calls entry's ``durations_sample_s``, its reservoir of up to 512 unprofiled calls; in
recordings without it, ``call_samples``, the timeline's uniform sample of calls, each with its
API, target, call site and wall time), leaving out calls a profiler slowed and the site's first
call (tracing and setup, shown apart), and the change in the median gets a percentile-bootstrap interval; with
fewer than MIN_SAMPLES sampled calls a side, the mean of the later calls (from the calls
entries' totals) stands in, labelled so, without an interval. The bootstrap's generator is
seeded from the call site, so the same two recordings always give the same interval. Also compared: the steady phase split
per call, the traces of the site's functions and of every function, and the findings
(resolved, new, still there).

Cost: BOOTSTRAP resamples of each site's durations on each side, in pure Python: a recording keeps
at most 2,000 sampled calls in all, so a whole diff takes a few seconds at most (measured here:
0.04 s for two sites of 29 calls a side, loading included; 0.6 s for one site of 1,000 calls a
side). Matching moved sites compares every pair of unmatched sites of one target: a few dozen.
Pure: never writes into either recording.
"""

from __future__ import annotations

import os
import random
import statistics
from dataclasses import dataclass, field

from ..recording import PHASES, Recording
from .fields import number
from .findings import site_file
from .phases import call_phase_split

BOOTSTRAP = 2000  # resamples per site
LEVEL = 0.95  # the interval's coverage
MIN_SAMPLES = 5  # per side: fewer, and a site gets no interval (and its mean of later calls, not a median)
COUNT_MARGIN = 2.0  # a moved site pairs by call count only with a count this many times closer than the next
MAX_SAMPLES = 2000  # per side (the capture keeps 2,000 in all): more are subsampled (seeded) first


class DiffError(ValueError):
    """Two recordings that cannot be compared (the message is one line)."""


@dataclass
class Diff:
    """Everything ``tfdiag diff`` shows, in the terminal and on the page; templates read nothing else."""

    before: dict  # each side: label, command, wall_s, calls, samples
    after: dict
    sites: list[dict]  # matched call sites, the largest clear change first
    only_before: list[dict] = field(default_factory=list)  # call sites with no match
    only_after: list[dict] = field(default_factory=list)
    functions: list[dict] = field(default_factory=list)  # trace counts that changed, per function
    resolved: list[dict] = field(default_factory=list)  # findings
    new: list[dict] = field(default_factory=list)
    kept: list[dict] = field(default_factory=list)
    verdict: str = ""
    level: float = LEVEL
    min_samples: int = MIN_SAMPLES  # sampled calls a side for a median and an interval
    schema_version: int = 0


def compare(before: Recording, after: Recording, labels: tuple[str, str] = ("before", "after")) -> Diff:
    """The diff of two recordings; DiffError when they cannot be compared."""
    if before.schema_version != after.schema_version:
        raise DiffError(f"the recordings have different schema versions ({before.schema_version} and "
                        f"{after.schema_version}); re-record both with the same tfdiag")
    old_sites, new_sites = _sites(before), _sites(after)
    if not old_sites or not new_sites:
        empty = labels[0] if not old_sites else labels[1]
        raise DiffError(f"{empty}: the recording has no call sites to compare")
    pairs, only_old, only_new = match(old_sites, new_sites)
    if not pairs:
        raise DiffError(f"no call site in common: {labels[0]} has {_names(old_sites)}, "
                        f"{labels[1]} has {_names(new_sites)}")
    moved = {old["call_site"]: new["call_site"] for old, new, _ in pairs}
    rows = sorted((_site_row(old, new, by, before, after) for old, new, by in pairs), key=_rank)
    resolved, new_findings, kept = _findings(before.findings, after.findings, moved)
    diff = Diff(
        before=_side(before, labels[0]), after=_side(after, labels[1]), sites=rows,
        only_before=[_brief(s) for s in only_old], only_after=[_brief(s) for s in only_new],
        functions=_functions(before, after), resolved=resolved, new=new_findings, kept=kept,
        schema_version=after.schema_version)
    diff.verdict = _verdict(diff)
    return diff


def slower_than(diff: Diff, pct: float) -> list[dict]:
    """Matched sites whose median got slower by more than ``pct`` percent, interval clear of zero."""
    return [row for row in diff.sites
            if row["change"]["pct"] is not None and row["change"]["pct"] > pct
            and row["change"]["low_pct"] is not None and row["change"]["low_pct"] > 0]


# -- call sites -----------------------------------------------------------------------------

def _sites(recording: Recording) -> list[dict]:
    """The recording's call sites: its ``calls`` entries grouped by (target, call site)."""
    grouped: dict[tuple, dict] = {}
    for call in recording.calls:
        key = (call["target"], call["call_site"])
        site = grouped.setdefault(key, {"target": key[0], "call_site": key[1], "apis": [], "calls": []})
        if call["api"] not in site["apis"]:
            site["apis"].append(call["api"])
        site["calls"].append(call)
    for site in grouped.values():
        site["apis"].sort()
        site["durations"] = _durations(recording.call_samples, site)
    return sorted(grouped.values(), key=lambda s: (site_file(s["call_site"]), _line(s["call_site"]), s["target"]))


def match(old_sites: list[dict], new_sites: list[dict]) -> tuple[list[tuple], list[dict], list[dict]]:
    """``([(old, new, matched_by)], unmatched old, unmatched new)``. First by (target, call site).
    Then sites whose lines moved, among those with the same target and the same set of APIs: by
    the line shift most of them share (lines inserted above move the sites below together, so a
    shift two or more sites agree on pairs them), then by the clearly closest call count; a site
    still ambiguous is left unmatched (listed as only before / only after) rather than guessed."""
    by_site = {(s["target"], s["call_site"]): s for s in new_sites}
    pairs, rest_old = [], []
    for old in old_sites:
        new = by_site.pop((old["target"], old["call_site"]), None)
        if new is not None:
            pairs.append((old, new, "call site"))
        else:
            rest_old.append(old)
    rest_new = [s for s in new_sites if (s["target"], s["call_site"]) in by_site]
    while (shift := _common_shift(rest_old, rest_new)) is not None:
        for old, new in _candidates(rest_old, rest_new):
            if _shift(old, new) == shift:
                pairs.append((old, new, f"target and API, lines moved {shift[1]:+d}"))
                rest_old.remove(old)
                rest_new.remove(new)
    for old in list(rest_old):
        new = _closest(old, [n for o, n in _candidates([old], rest_new)])
        if new is not None and _closest(new, [o for o, n in _candidates(rest_old, [new])]) is old:
            pairs.append((old, new, "target and API, closest call count"))
            rest_old.remove(old)
            rest_new.remove(new)
    return pairs, rest_old, rest_new


def _candidates(olds: list[dict], news: list[dict]) -> list[tuple[dict, dict]]:
    """Pairs that could be one site moved: the same target and the same set of APIs."""
    return [(old, new) for old in olds for new in news
            if old["target"] == new["target"] and set(old["apis"]) == set(new["apis"])]


def _shift(old: dict, new: dict) -> tuple[str, int] | None:
    """(file, lines moved) when both sites are in one file with line numbers; None otherwise."""
    same_file = site_file(old["call_site"]) == site_file(new["call_site"])
    if not same_file or not _line(old["call_site"]) or not _line(new["call_site"]):
        return None
    return site_file(old["call_site"]), _line(new["call_site"]) - _line(old["call_site"])


def _common_shift(olds: list[dict], news: list[dict]) -> tuple[str, int] | None:
    """The line shift that pairs the most sites, when at least two share it and no other shift
    pairs as many; None otherwise. (At one shift each old line has one new line: no conflicts.)"""
    votes: dict[tuple, int] = {}
    for old, new in _candidates(olds, news):
        shift = _shift(old, new)
        if shift is not None:
            votes[shift] = votes.get(shift, 0) + 1
    ranked = sorted(votes.values(), reverse=True)
    if not ranked or ranked[0] < 2 or (len(ranked) > 1 and ranked[1] == ranked[0]):
        return None
    return next(shift for shift, n in votes.items() if n == ranked[0])


def _closest(site: dict, candidates: list[dict]) -> dict | None:
    """The candidate whose call count is clearly the closest to the site's: off by a factor at
    least COUNT_MARGIN times smaller than the next one's; None when there is no such one."""
    def off(other: dict) -> float:
        a, b = max(_count(site), 1), max(_count(other), 1)
        return max(a, b) / min(a, b)

    ranked = sorted(candidates, key=off)
    if not ranked:
        return None
    if len(ranked) > 1 and off(ranked[1]) < COUNT_MARGIN * off(ranked[0]):
        return None
    return ranked[0]


def _count(site: dict) -> int:
    return sum(c["count"] for c in site["calls"])


def _durations(samples: list, site: dict) -> list[float]:
    """The site's sampled calls' wall times: not the ones a profiler took, nor the site's first call.
    From the calls entries' own reservoirs (``durations_sample_s``: up to 512 unprofiled calls per
    entry) where the recording has them, else from the run's shared ``call_samples``."""
    kept = [c for c in site["calls"] if isinstance(c.get("durations_sample_s"), list)]
    if kept and len(kept) == len(site["calls"]):
        out = []
        for call in kept:
            values = [v for v in map(number, call["durations_sample_s"]) if v is not None]
            if call.get("first_s") in values:  # the first call's own time: left out once
                values.remove(call["first_s"])
            out += values
        return out
    firsts = [(c["api"], c["first_s"]) for c in site["calls"]]
    out = []
    for sample in samples:
        if not isinstance(sample, dict) or sample.get("profiled") is True:
            continue
        if sample.get("target") != site["target"] or sample.get("call_site") != site["call_site"]:
            continue
        duration = number(sample.get("duration_s"))
        if duration is None:
            continue
        first = (sample.get("api"), duration)
        if first in firsts:  # the same float as the entry's first_s: that call, left out once
            firsts.remove(first)
            continue
        out.append(duration)
    return out


def _site_row(old: dict, new: dict, by: str, before: Recording, after: Recording) -> dict:
    sides = {"before": _measure(old, before), "after": _measure(new, after)}
    split_old, split_new = sides["before"]["phases"], sides["after"]["phases"]
    phase_changes = sorted(({"phase": p, "before_s": split_old[p], "after_s": split_new[p],
                             "delta_s": split_new[p] - split_old[p]} for p in PHASES
                            if split_old[p] > 0 or split_new[p] > 0), key=lambda c: -abs(c["delta_s"]))
    return {
        "target": old["target"], "call_site": new["call_site"], "call_site_before": old["call_site"],
        "api_before": ", ".join(old["apis"]), "api_after": ", ".join(new["apis"]), "matched_by": by,
        **sides, "change": change(old["durations"], new["durations"], seed=f"{old['target']}|{new['call_site']}",
                                  point=(sides["before"]["per_call_s"], sides["after"]["per_call_s"])),
        "phase_changes": phase_changes,
    }


def _measure(site: dict, recording: Recording) -> dict:
    """One side of a matched site. ``per_call_s``: the median of the sampled later calls, or with
    fewer than MIN_SAMPLES of them the mean of all later calls from the calls entries' totals
    (None after a single call); ``statistic`` says which, in words."""
    calls = site["calls"]
    durations = site["durations"]
    if len(durations) >= MIN_SAMPLES:
        per_call, statistic = statistics.median(durations), f"median of {len(durations)} sampled calls"
    else:
        per_call, statistic = _mean_of_later(calls)
    steady = [(max(0, c["count"] - 1), call_phase_split(c)) for c in calls]
    weight = sum(n for n, _ in steady)
    phases = {p: (sum(n * split[p] for n, split in steady) / weight if weight else 0.0) for p in PHASES}
    split_total = sum(phases.values())
    return {
        "count": _count(site), "samples": len(durations), "per_call_s": per_call, "statistic": statistic,
        "first_s": calls[0]["first_s"], "phases": phases,
        "shares": {p: (phases[p] / split_total if split_total > 0 else 0.0) for p in PHASES},
        "traces": _site_traces(site, recording), "signatures": sorted({c["input_signature"] for c in calls}),
    }


def _mean_of_later(calls: list[dict]) -> tuple[float | None, str]:
    """The mean wall time of the calls after each entry's first, from ``total_s - first_s``; a
    profiler's calls are in those totals and cannot be taken out, so the label says so."""
    later = sum(c["count"] - 1 for c in calls)
    if later <= 0:
        return None, "a single call: no later calls"
    mean = max(0.0, sum(c["total_s"] - c["first_s"] for c in calls)) / later
    profiled = sum(int(number(c.get("profiled_calls")) or 0) for c in calls)
    label = f"mean of {later} later call{'s' if later != 1 else ''}, too few sampled for a median"
    return mean, label + (f", {profiled} profiled ones included" if profiled else "")


def _site_traces(site: dict, recording: Recording) -> int:
    """Traces of the functions this site runs: a tf.function by its name, a model's Keras-made ones."""
    total = 0
    for function in recording.functions:
        if function.get("model") == site["target"] or (
                "tf.function" in site["apis"] and function["name"] == site["target"]
                and function.get("origin") == "user"):
            total += function["trace_count"]
    return total


def change(old: list[float], new: list[float], seed: str,
           point: tuple[float | None, float | None] | None = None) -> dict:
    """The change of the time per call, in percent, with a percentile-bootstrap interval for the
    change of the median (``low_pct``/``high_pct``: None with fewer than MIN_SAMPLES on a side).
    ``point``: the per-call times to compare (by default the medians of ``old`` and ``new``)."""
    before, after = point if point is not None else (_median(old), _median(new))
    out = {"ratio": None, "pct": None, "low_pct": None, "high_pct": None, "speedup": None,
           "direction": "unknown", "clear": False}
    if before is None or after is None or before <= 0:
        return out
    ratio = after / before
    out.update(ratio=ratio, pct=100 * (ratio - 1), speedup=(before / after if after > 0 else None))
    if ratio == 1:
        out["direction"] = "no change"
    if len(old) < MIN_SAMPLES or len(new) < MIN_SAMPLES:
        return out
    rng = random.Random(seed)
    old, new = _cap(old, rng), _cap(new, rng)
    ratios = [statistics.median(rng.choices(new, k=len(new)))
              / max(statistics.median(rng.choices(old, k=len(old))), 1e-12) for _ in range(BOOTSTRAP)]
    # cut points at (1 - LEVEL) / 2 and its complement, interpolated between order statistics
    cuts = statistics.quantiles(ratios, n=round(2 / (1 - LEVEL)), method="inclusive")
    low, high = cuts[0], cuts[-1]
    clear = (low > 1 or high < 1) and ratio != 1
    out.update(low_pct=100 * (low - 1), high_pct=100 * (high - 1), clear=clear)
    if clear:
        out["direction"] = "slower" if low > 1 else "faster"
    elif ratio != 1:
        out["direction"] = "no clear change"
    return out


def _cap(values: list[float], rng: random.Random) -> list[float]:
    return values if len(values) <= MAX_SAMPLES else rng.sample(values, MAX_SAMPLES)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _rank(row: dict) -> tuple:
    """Clear changes first, the largest (as a factor either way) first."""
    ratio = row["change"]["ratio"]
    size = max(ratio, 1 / ratio) if ratio else 0.0
    return (not row["change"]["clear"], -size, row["call_site"])


# -- functions and findings ------------------------------------------------------------------

def _functions(before: Recording, after: Recording) -> list[dict]:
    """Trace counts per function (origin and name) on each side, where they differ; most changed first."""
    counts: dict[tuple, list[int]] = {}
    for side, recording in enumerate((before, after)):
        for function in recording.functions:
            key = (function.get("origin") or "", function["name"])
            counts.setdefault(key, [0, 0])[side] += function["trace_count"]
    rows = [{"origin": origin, "name": name, "before": b, "after": a}
            for (origin, name), (b, a) in counts.items() if b != a]
    return sorted(rows, key=lambda r: (-abs(r["after"] - r["before"]), r["name"]))


def _findings(old: list[dict], new: list[dict], moved: dict[str, str]) -> tuple[list, list, list]:
    """(resolved, new, kept): a finding is the same one when its code, its function and its call
    site (through the sites' matching, for moved lines; none for a finding without one) are."""
    def key(finding: dict, mapping: dict) -> tuple:
        site = finding.get("call_site") or ""
        return finding["code"], finding.get("function") or "", mapping.get(site, site)

    new_keys = {key(f, {}) for f in new}
    old_keys = {key(f, moved) for f in old}
    resolved = [_finding(f) for f in old if key(f, moved) not in new_keys]
    kept = [_finding(f) for f in new if key(f, {}) in old_keys]
    added = [_finding(f) for f in new if key(f, {}) not in old_keys]
    return resolved, added, kept


def _finding(finding: dict) -> dict:
    return {name: finding.get(name) for name in ("code", "severity", "title", "function", "call_site",
                                                 "estimated_savings_s")}


# -- sides and the verdict -------------------------------------------------------------------

def _side(recording: Recording, label: str) -> dict:
    run = recording.run
    return {"label": label, "command": " ".join(recording.environment.get("command") or []),
            "wall_s": number(run.get("wall_s")), "calls": sum(c["count"] for c in recording.calls),
            "sites": len({(c["target"], c["call_site"]) for c in recording.calls}),
            "keras": recording.environment.get("keras"), "tensorflow": recording.environment.get("tensorflow")}


def _brief(site: dict) -> dict:
    return {"target": site["target"], "call_site": site["call_site"], "api": ", ".join(site["apis"]),
            "count": _count(site)}


def _names(sites: list[dict]) -> str:
    shown = ", ".join(f"{s['target']} at {os.path.basename(s['call_site'])}" for s in sites[:3])
    return shown + (f" and {len(sites) - 3} more" if len(sites) > 3 else "")


def _verdict(diff: Diff) -> str:
    faster = [r for r in diff.sites if r["change"]["direction"] == "faster"]
    slower = [r for r in diff.sites if r["change"]["direction"] == "slower"]
    parts = [f"{len(diff.sites)} call site{'s' if len(diff.sites) != 1 else ''} compared: "
             f"{len(faster)} faster, {len(slower)} slower, {len(diff.sites) - len(faster) - len(slower)} "
             f"without a clear change"]
    if diff.sites and diff.sites[0]["change"]["clear"]:
        top = diff.sites[0]
        parts.append(f"the largest: `{top['target']}` at {os.path.basename(top['call_site'])} "
                     f"{describe(top['change'], diff.level)}")
    parts.append(f"{len(diff.resolved)} finding{'s' if len(diff.resolved) != 1 else ''} resolved, {len(diff.new)} new")
    return "; ".join(parts) + "."


def describe(change: dict, level: float = LEVEL) -> str:
    """``120.0x faster (-99.2%, 95% interval -99.3% to -99.1%)`` for a change; no direction is
    claimed without an interval, and equal times per call are ``no change``."""
    if change["pct"] is None:
        return "not comparable (a side has no time per call: a single call, or none measured)"
    text = f"{change['pct']:+.1f}%"
    if change["low_pct"] is not None:
        text += f", {100 * level:.0f}% interval {change['low_pct']:+.1f}% to {change['high_pct']:+.1f}%"
    else:
        text += f", fewer than {MIN_SAMPLES} sampled calls a side: no interval"
    ratio = change["ratio"]
    if ratio == 1:
        head = "no change"
    elif change["low_pct"] is None:
        head = "not enough sampled calls to tell"
    elif not change["clear"]:
        head = "no clear change"
    elif ratio >= 2:
        head = f"{ratio:.1f}x slower"
    elif change["speedup"] and change["speedup"] >= 2:
        head = f"{change['speedup']:.1f}x faster"
    else:
        head = change["direction"]
    return f"{head} ({text})"


def _line(site: str) -> int:
    tail = site.rpartition(":")[2]
    return int(tail) if tail.isdigit() else 0
