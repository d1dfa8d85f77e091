"""The timeline of calls: one point per sampled call over time, first calls and traces marked.

Pure data preparation for the report's inline SVG (no TensorFlow, no jinja2): it places
each of a bounded number of call samples in chart coordinates (time on x, duration on a
log scale on y), so the template only writes the numbers out.

Marks, from what the recording holds:

* ``first``: the first call of a call site (its duration equals the call entry's ``first_s``
  and no earlier sample of that site exists);
* ``traced``: a graph was traced during the call (its ``graph_creation`` phase is non-zero);
* ``profiled``: the call ran under cProfile and is kept out of the timings.
"""

from __future__ import annotations

import math

from .findings import ms, short_site

MAX_POINTS = 1200
MAX_SERIES = 8
WIDTH = 960
HEIGHT = 240
MARGIN = {"left": 64, "right": 16, "top": 12, "bottom": 34}
MIN_DURATION_S = 1e-6


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


def _select(samples: list[dict], marks: list[set], max_points: int) -> list[int]:
    """Indices of the samples to draw: first calls, the slowest calls, then an even spread."""
    if len(samples) <= max_points:
        return list(range(len(samples)))
    quarter = max(1, max_points // 4)
    chosen: set[int] = set([i for i, m in enumerate(marks) if "first" in m][:quarter])
    budget = len(chosen) + quarter
    for i in sorted(range(len(samples)), key=lambda i: (-samples[i]["duration_s"], i)):
        if len(chosen) >= budget:
            break
        chosen.add(i)
    remaining = max_points - len(chosen)
    rest = [i for i in range(len(samples)) if i not in chosen]
    if remaining > 0 and rest:
        stride = len(rest) / remaining
        chosen.update(rest[int(k * stride)] for k in range(min(remaining, len(rest))))
    return sorted(chosen)


def timeline(recording, max_points: int = MAX_POINTS, width: int = WIDTH, height: int = HEIGHT) -> dict:
    """Chart-ready view of ``recording.call_samples``; ``points`` is empty when there are none."""
    raw = [s for s in recording.call_samples if isinstance(s, dict)]
    samples = []
    for s in raw:
        samples.append(dict(s, start_s=_number(s.get("start_s")),
                            duration_s=max(MIN_DURATION_S, _number(s.get("duration_s"), MIN_DURATION_S))))
    samples.sort(key=lambda s: s["start_s"])
    total = recording.run.get("call_samples_total", len(samples)) if isinstance(recording.run, dict) else len(samples)
    view = {"points": [], "series": [], "x_ticks": [], "y_ticks": [], "width": width, "height": height,
            "plot": {}, "sampled": len(samples), "total": total if isinstance(total, int) else len(samples),
            "shown": 0, "traced": 0, "first": 0, "profiled": 0, "max_points": max_points}
    if not samples:
        return view

    # Series: one per call site, busiest first; past MAX_SERIES they share the last colour.
    counts: dict[tuple, int] = {}
    for s in samples:
        counts[_series_key(s)] = counts.get(_series_key(s), 0) + 1
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

    first_s: dict[tuple, set] = {}
    for call in recording.calls:
        if isinstance(call, dict):
            key = (str(call.get("api", "")), str(call.get("target", "")), str(call.get("call_site", "")))
            first_s.setdefault(key, set()).add(_number(call.get("first_s"), -1.0))
    seen: set[tuple] = set()
    marks: list[set] = []
    for s in samples:
        key = _series_key(s)
        m = set()
        if key not in seen:
            seen.add(key)
            if s["duration_s"] in first_s.get(key, ()) or not first_s.get(key):
                m.add("first")
        phases = s.get("phases") if isinstance(s.get("phases"), dict) else {}
        if _number(phases.get("graph_creation")) > 0:
            m.add("traced")
        if s.get("profiled"):
            m.add("profiled")
        marks.append(m)

    keep = _select(samples, marks, max_points)

    left, right, top, bottom = MARGIN["left"], width - MARGIN["right"], MARGIN["top"], height - MARGIN["bottom"]
    view["plot"] = {"left": left, "right": right, "top": top, "bottom": bottom,
                    "width": right - left, "height": bottom - top}
    t_end = max(s["start_s"] + s["duration_s"] for s in samples)
    t_end = t_end if t_end > 0 else 1.0
    durations = [s["duration_s"] for s in samples]
    lo = math.floor(math.log10(min(durations)))
    hi = math.ceil(math.log10(max(durations)))
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
        view["y_ticks"].append({"y": y_of(10.0 ** power), "label": ms(10.0 ** power)})

    for i in keep:
        s, m = samples[i], marks[i]
        phases = s.get("phases") if isinstance(s.get("phases"), dict) else {}
        view["points"].append({
            "x": x_of(s["start_s"]), "y": y_of(s["duration_s"]),
            "series": series_index[_series_key(s)],
            "api": str(s.get("api", "")), "target": str(s.get("target", "")),
            "call_site": str(s.get("call_site", "")), "thread": str(s.get("thread", "")),
            "start_s": s["start_s"], "duration_s": s["duration_s"],
            "graph_s": _number(phases.get("graph_creation")),
            "first": "first" in m, "traced": "traced" in m, "profiled": "profiled" in m,
        })
    view["shown"] = len(view["points"])
    view["traced"] = sum(1 for m in marks if "traced" in m)
    view["first"] = sum(1 for m in marks if "first" in m)
    view["profiled"] = sum(1 for m in marks if "profiled" in m)
    # Draw plain points first and marked ones last, so spikes and traces stay on top.
    view["points"].sort(key=lambda p: (p["first"] or p["traced"], p["x"]))
    return view
