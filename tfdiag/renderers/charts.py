"""Chart layout for the report: the timeline of calls, one point per sampled call over time,
first calls and traces marked.

Layout only (no TensorFlow, no jinja2): it places each of a bounded number of the Analysis's
call samples in chart coordinates (time on x, duration on a log scale on y), so the template
only writes the numbers out.

Marks, from what the recording holds:

* ``first``: the first call of a call site (its duration equals the call entry's ``first_s``
  and no earlier sample of that site exists);
* ``traced``: a graph was traced during the call (its ``graph_creation`` phase is non-zero);
* ``profiled``: the call ran under cProfile and is kept out of the timings;
* ``spike``: a later call at least ``SPIKE_RATIO`` times its call site's median (a retrace,
  a rebuilt model, a pause).
"""

from __future__ import annotations

import heapq
import math

from ..analysis.findings import short_site
from ..analysis.units import duration

MAX_POINTS = 1200
MAX_SERIES = 8
WIDTH = 960
HEIGHT = 240
MARGIN = {"left": 64, "right": 16, "top": 12, "bottom": 34}
MIN_DURATION_S = 1e-6
SPIKE_RATIO = 2.0
MAX_LABELS = 6
LABEL_WIDTH = 230  # chart units a label may take, to keep labels apart
LABEL_HEIGHT = 14


def _series_key(sample: dict) -> tuple:
    return (str(sample.get("api", "")), str(sample.get("target", "")), str(sample.get("call_site", "")))


def _number(value, default: float = 0.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _nice_step(span: float, ticks: int = 6) -> float:
    raw = span / max(1, ticks)
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _seconds_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f} s"


class _Sample:
    """One call sample, normalised once (the recording may hold any number of them)."""

    __slots__ = ("start", "duration", "key", "graph", "profiled", "thread", "first", "spike")

    def __init__(self, raw: dict) -> None:
        self.start = _number(raw.get("start_s"))
        self.duration = max(MIN_DURATION_S, _number(raw.get("duration_s"), MIN_DURATION_S))
        self.key = _series_key(raw)
        phases = raw.get("phases")
        if "graph_s" in raw:  # measured on every call (phases only on sampled ones)
            self.graph = _number(raw.get("graph_s"))
        else:
            self.graph = _number(phases.get("graph_creation")) if isinstance(phases, dict) else 0.0
        self.profiled = bool(raw.get("profiled"))
        self.thread = str(raw.get("thread", ""))
        self.first = False
        self.spike = False


def _select(samples: list[_Sample], max_points: int) -> list[int]:
    """Indices of the samples to draw: first calls, the slowest calls, then an even spread."""
    if len(samples) <= max_points:
        return list(range(len(samples)))
    quarter = max(1, max_points // 4)
    chosen: set[int] = set([i for i, s in enumerate(samples) if s.first][:quarter])
    slowest = heapq.nlargest(quarter, range(len(samples)), key=lambda i: (samples[i].duration, -i))
    chosen.update(slowest)
    remaining = max_points - len(chosen)
    rest = [i for i in range(len(samples)) if i not in chosen]
    if remaining > 0 and rest:
        stride = len(rest) / remaining
        chosen.update(rest[int(k * stride)] for k in range(min(remaining, len(rest))))
    return sorted(chosen)


def timeline(analysis, max_points: int = MAX_POINTS, width: int = WIDTH, height: int = HEIGHT) -> dict:
    """Chart-ready view of ``analysis.call_samples``; ``points`` is empty when there are none."""
    samples = [_Sample(s) for s in analysis.call_samples if isinstance(s, dict)]
    samples.sort(key=lambda s: s.start)
    total = analysis.run.get("calls_seen")
    view = {"points": [], "series": [], "x_ticks": [], "y_ticks": [], "width": width, "height": height,
            "plot": {}, "sampled": len(samples), "total": total if total is not None else len(samples),
            "shown": 0, "traced": 0, "first": 0, "profiled": 0, "spikes": 0, "labels": [],
            "max_points": max_points}
    if not samples:
        return view

    # Series: one per call site, busiest first; past MAX_SERIES they share the last colour.
    counts: dict[tuple, int] = {}
    for s in samples:
        counts[s.key] = counts.get(s.key, 0) + 1
    ordered = sorted(counts, key=lambda k: (-counts[k], k))
    series_index = {key: min(i, MAX_SERIES) for i, key in enumerate(ordered)}
    for i, key in enumerate(ordered[:MAX_SERIES]):
        api, target, site = key
        view["series"].append({"index": i, "api": api, "target": target, "call_site": site,
                               "label": f"{api} {target}".strip() + (f" at {short_site(site)}" if site else ""),
                               "count": counts[key]})
    if len(ordered) > MAX_SERIES:
        view["series"].append({"index": MAX_SERIES, "api": "", "target": "", "call_site": "",
                               "label": f"{len(ordered) - MAX_SERIES} other call sites",
                               "count": sum(counts[k] for k in ordered[MAX_SERIES:])})

    # First calls: the earliest sample of a call site, when it is the call entry's first call.
    first_s: dict[tuple, set] = {}
    for call in analysis.calls:
        if isinstance(call, dict):
            key = (str(call.get("api", "")), str(call.get("target", "")), str(call.get("call_site", "")))
            first_s.setdefault(key, set()).add(_number(call.get("first_s"), -1.0))
    seen: set[tuple] = set()
    for s in samples:
        if s.key not in seen:
            seen.add(s.key)
            known = first_s.get(s.key)
            s.first = not known or s.duration in known

    # Spikes: later calls at least SPIKE_RATIO times their call site's median.
    by_series: dict[tuple, list] = {}
    for s in samples:
        if not s.profiled:
            by_series.setdefault(s.key, []).append(s.duration)
    medians = {k: sorted(v)[len(v) // 2] for k, v in by_series.items()}
    for s in samples:
        median = medians.get(s.key)
        s.spike = bool(median) and not s.first and not s.profiled and s.duration >= SPIKE_RATIO * median

    keep = _select(samples, max_points)

    left, right, top, bottom = MARGIN["left"], width - MARGIN["right"], MARGIN["top"], height - MARGIN["bottom"]
    view["plot"] = {"left": left, "right": right, "top": top, "bottom": bottom,
                    "width": right - left, "height": bottom - top}
    t_end = max(s.start + s.duration for s in samples)
    t_end = t_end if t_end > 0 else 1.0
    lo = math.floor(math.log10(min(s.duration for s in samples) / 1.3))  # keep the dots off the axis lines
    hi = math.ceil(math.log10(max(s.duration for s in samples) * 1.3))
    if hi <= lo:
        hi = lo + 1
    pad = 8  # keeps the first and last dots clear of the axis labels

    def x_of(t: float) -> float:
        return round(left + pad + (t / t_end) * (right - left - 2 * pad), 1)

    def y_of(d: float) -> float:
        return round(bottom - (math.log10(d) - lo) / (hi - lo) * (bottom - top), 1)

    step = _nice_step(t_end)
    k = 0
    while k * step <= t_end * 1.0001 and k < 50:
        view["x_ticks"].append({"x": x_of(k * step), "label": _seconds_label(k * step, step)})
        k += 1
    for power in range(lo, hi + 1):
        view["y_ticks"].append({"y": y_of(10.0 ** power), "label": duration(10.0 ** power)})

    for i in keep:
        s = samples[i]
        api, target, site = s.key
        view["points"].append({
            "x": x_of(s.start), "y": y_of(s.duration), "series": series_index[s.key],
            "api": api, "target": target, "call_site": site, "thread": s.thread,
            "start_s": s.start, "duration_s": s.duration, "graph_s": s.graph,
            "first": s.first, "traced": s.graph > 0, "profiled": s.profiled, "spike": s.spike,
        })

    # Labels for the first calls and the biggest spikes, so the chart says what it shows.
    # Greedy: the most telling first, each skipped if it would overlap one already placed.
    placed: list = []
    for p in sorted((p for p in view["points"] if p["first"] or p["spike"]),
                    key=lambda p: (not p["first"], -p["duration_s"])):
        if len(placed) >= MAX_LABELS:
            break
        if all(abs(p["x"] - q["x"]) > LABEL_WIDTH or abs(p["y"] - q["y"]) > LABEL_HEIGHT for q in placed):
            placed.append(p)
    for p in sorted(placed, key=lambda p: p["x"]):
        median = medians.get((p["api"], p["target"], p["call_site"]))
        if p["first"]:
            text = f"first call {duration(p['duration_s'])}"
        else:
            text = f"{duration(p['duration_s'])}, {p['duration_s'] / median:.1f}× median" if median else duration(p["duration_s"])
        if p["graph_s"] > 0:
            text += f" (tracing {duration(p['graph_s'])})"
        anchor = "start" if p["x"] < left + (right - left) * 0.75 else "end"
        view["labels"].append({"x": round(p["x"] + (7 if anchor == "start" else -7), 1),
                               "y": round(max(top + 10, p["y"] - 6), 1), "text": text, "anchor": anchor})
    view["shown"] = len(view["points"])
    view["first"] = sum(1 for s in samples if s.first)
    view["traced"] = sum(1 for s in samples if s.graph > 0)
    view["profiled"] = sum(1 for s in samples if s.profiled)
    view["spikes"] = sum(1 for s in samples if s.spike)
    # Draw plain points first and marked ones last, so spikes and traces stay on top.
    view["points"].sort(key=lambda p: (p["first"] or p["spike"], p["traced"], p["x"]))
    return view


STEP_HEIGHT = 200
MAX_EPOCH_LABELS = 12


def step_chart(view: dict | None, width: int = WIDTH, height: int = STEP_HEIGHT) -> dict:
    """Chart-ready step timeline of one training call (``analysis.training`` row's ``timeline``):
    step number on x, step duration on a log scale on y, one line through the steps, each epoch's
    first step marked (a dot and a dashed line) and the call's first step labelled. ``points`` is
    empty when capture kept no timeline."""
    chart = {"points": [], "line": "", "epochs": [], "marks": [], "x_ticks": [], "y_ticks": [], "width": width,
             "height": height, "plot": {}, "label": None}
    points = (view or {}).get("points") or []
    if not points:
        return chart
    left, right, top, bottom = MARGIN["left"], width - MARGIN["right"], MARGIN["top"], height - MARGIN["bottom"]
    chart["plot"] = {"left": left, "right": right, "top": top, "bottom": bottom}
    last = max(1, max(p["step"] for p in points))
    durations = [max(MIN_DURATION_S, _number(p.get("duration_s"), MIN_DURATION_S)) for p in points]
    lo = math.floor(math.log10(min(durations) / 1.3))
    hi = math.ceil(math.log10(max(durations) * 1.3))
    hi = hi if hi > lo else lo + 1
    pad = 6

    def x_of(step: float) -> float:
        return round(left + pad + step / last * (right - left - 2 * pad), 1)

    def y_of(d: float) -> float:
        return round(bottom - (math.log10(d) - lo) / (hi - lo) * (bottom - top), 1)

    coords = []
    for p, d in zip(points, durations):
        x, y = x_of(p["step"]), y_of(d)
        coords.append(f"{x},{y}")
        if p.get("epoch_start") or p.get("first"):
            chart["marks"].append({"x": x, "y": y, "step": p["step"], "duration_s": d, "epoch": p.get("epoch", 1),
                                   "first": bool(p.get("first"))})
    chart["line"] = " ".join(coords)
    starts = (view or {}).get("epoch_starts") or []
    every = max(1, math.ceil(len(starts) / MAX_EPOCH_LABELS))
    for number, step in enumerate(starts, 1):
        if step <= last:
            chart["epochs"].append({"x": x_of(step), "step": step, "epoch": number,
                                    "label": f"epoch {number}" if (number - 1) % every == 0 else ""})
    step = _nice_step(last)
    k = 0
    while k * step <= last * 1.0001 and k < 50:
        chart["x_ticks"].append({"x": x_of(k * step), "label": f"{int(k * step):,}"})
        k += 1
    for power in range(lo, hi + 1):
        chart["y_ticks"].append({"y": y_of(10.0 ** power), "label": duration(10.0 ** power)})
    first = next((m for m in chart["marks"] if m["first"]), None)
    if first is not None:
        # below the dot: the epoch labels take the top of the plot
        chart["label"] = {"x": round(first["x"] + 7, 1), "y": round(min(bottom - 4, first["y"] + 16), 1),
                          "text": f"first step {duration(first['duration_s'])}"}
    chart["points"] = points
    return chart
