"""Memory over a loop: per call site, the warm-up, the steady-state slope after it, and its cause.

Pure: reads the recording's ``memory`` section (capture/memory.py: per call site, points
``[calls done, resident bytes, traces, models alive, iterators alive(, seconds)(, [GPU bytes])]``
read at the start of sampled calls) and never writes into it. Costs a few ms per call site (at most 256
points; Theil-Sen on at most ``MAX_PAIRS`` pairs, for each of at most ``CUTS`` warm-up cuts).

The slope is Theil-Sen's (the median of the pairwise slopes, robust to the odd point a
collection or a spike moves), in MB (2**20 bytes) per 1000 calls of that call site; its spread is
the 25-75% range of those pairwise slopes. The warm-up is the shortest start that, left out, lets
a straight line describe the rest as well as any later start does (memory that levels off: the
step up, then flat). Where capture forced a full collection because growth was suspected, or
ran its tracemalloc window, only the points after it count (garbage Python had not collected yet
is not growth; the window's own memory is tfdiag's).

Growth that stopped (``growth_stopped``), judged by persistence rather than by a share of the
calls: the tail from the last new high (by ``PEAK_STEP``) on has at least ``STOP_POINTS``
readings, spans at least the calls in which the steady slope would have added ``STOP_MB`` and
``STEP_GAPS`` times the median gap between the earlier new highs (a leak in steps, 2 MB every
200 calls, is flat between them), its own Theil-Sen slope and that of its later half (a spike that made the high, then the leak
again) are under ``STOP_SHARE`` of the steady slope, and no count (traces, models,
iterators) rose by ``MIN_COUNT_GROWTH`` within it. Then memory levels off from that high: the
warm-up ends there and the slope is refit on the tail.

Growth is reported (``growing``) only when all of: the slope is at least ``MIN_SLOPE_MB``, the
25% pairwise slope is above zero (the interval is clear of zero), the steady growth over the
observed calls is at least ``MIN_GROWTH_MB``, the steady window spans at least ``MIN_STEADY_CALLS``
calls, and growth did not stop: memory that levels off
after warm-up stays quiet.
"""

from __future__ import annotations


from ..recording import Recording
from .fields import count, number
from ..growth import MAX_PAIRS, MB, MIN_COUNT_GROWTH, growth_stopped, last_high, theil_sen

MIN_POINTS = 6  # a steady window needs this many points
MIN_SLOPE_MB = 1.0  # MB per 1000 calls
MIN_GROWTH_MB = 4.0  # over the steady window
# ... which spans at least this many calls: a rate per 1000 calls drawn from a few calls (a loop of nine
# fit() calls, each one's warm-up still settling) is an extrapolation, not a measurement
MIN_STEADY_CALLS = 32
CUTS = 16
CORRELATED = 0.8  # a count "tracks" memory when their correlation over the steady window is at least this


def correlation(xs: list, ys: list) -> float:
    """Pearson's r (0.0 when either side is constant)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / (sxx * syy) ** 0.5 if sxx > 0 and syy > 0 else 0.0


def _points(site: dict) -> list[list]:
    """The site's well-formed points, ``[calls, rss, traces, models, iterators, gpu bytes or None,
    seconds or None]``, by calls (after the first five fields: a number is the reading's time, a
    list the GPU bytes per device)."""
    out = []
    for point in site.get("points") or []:
        if not isinstance(point, list) or len(point) < 5:
            continue
        values = [number(v) for v in point[:5]]
        if any(v is None for v in values):
            continue
        gpu = next((v for v in point[5:] if isinstance(v, list)), None)
        seconds = next((number(v) for v in point[5:] if number(v) is not None), None)
        gpu_total = sum(v for v in (number(g) for g in gpu or []) if v is not None) if gpu else None
        out.append(values + [gpu_total, seconds])
    out.sort(key=lambda p: p[0])
    return out


def _residual(points: list, fit: tuple) -> float:
    slope, intercept = fit[0], fit[1]
    return sum(abs(p[1] - (intercept + slope * p[0])) for p in points) / len(points)


def warm_up(points: list) -> int:
    """Index of the first steady point: the earliest cut after which a line fits the rest (its mean
    absolute residual) about as well as after any later cut (within 50%, or 20 KB: a few pages)."""
    last = len(points) - max(MIN_POINTS, len(points) // 3)
    if last <= 0:
        return 0
    step = max(1, last // CUTS)
    cuts = list(range(0, last + 1, step))
    scores = []
    for cut in cuts:
        steady = points[cut:]
        fit = theil_sen([p[0] for p in steady], [p[1] for p in steady], MAX_PAIRS // 2)
        scores.append(_residual(steady, fit) if fit is not None else float("inf"))
    best = min(scores)
    allowed = max(1.5 * best, best + 0.02 * MB)
    return next(cut for cut, score in zip(cuts, scores) if score <= allowed)


def _rate(steady: list, pauses: list) -> float | None:
    """Calls per second over the steady window, from its readings' times less tfdiag's own pauses
    in it (``(from, to)`` seconds: the forced collection, the tracemalloc window); None untimed."""
    timed = [p for p in steady if p[6] is not None]
    if len(timed) < 2:
        return None
    c0, t0, c1, t1 = timed[0][0], timed[0][6], timed[-1][0], timed[-1][6]
    seconds = t1 - t0 - sum(max(0.0, min(t1, end) - max(t0, begin)) for begin, end in pauses)
    return (c1 - c0) / seconds if seconds > 0 and c1 > c0 else None


def _pauses(section: dict) -> list[tuple[float, float]]:
    """tfdiag's own pauses, ``(from, to)`` in the readings' seconds: the collection, the window."""
    out = []
    for key, extra in (("collection", ()), ("tracemalloc", ("snapshot_s",))):
        entry = section.get(key)
        if isinstance(entry, dict) and number(entry.get("at_s")) is not None:
            length = sum(number(entry.get(k)) or 0.0 for k in ("seconds", *extra))
            out.append((entry["at_s"], entry["at_s"] + length))
    return out


def analyze_site(site: dict, pauses: list | None = None) -> dict | None:
    """One call site's series: its warm-up, steady slope and spread, and the counts over the
    steady window; None when it has too few points to say. ``pauses``: see ``_rate``."""
    excluded = pauses or []
    points = _points(site)
    cuts = [v for v in (number(site.get("collected_after_call")), number(site.get("window_closed_after"))) if v is not None]
    after = max(cuts) if cuts else None
    if after is not None and sum(1 for p in points if p[0] > after) >= MIN_POINTS:
        first = next(i for i, p in enumerate(points) if p[0] > after)
    else:
        first, after = 0, None
    if len(points) - first < MIN_POINTS:
        return None
    start = first + warm_up(points[first:])
    steady = points[start:]
    xs = [p[0] for p in steady]
    fit = theil_sen(xs, [p[1] for p in steady])
    if fit is None:
        return None
    stopped = growth_stopped(steady, fit[0])
    if stopped:  # levels off from the last high: that is where warm-up ends, the slope is the tail's
        start += stopped
        steady = points[start:]
        xs = [p[0] for p in steady]
        fit = theil_sen(xs, [p[1] for p in steady]) or fit
    slope, intercept, low, high = fit
    per_1000 = 1000.0 / MB
    span = xs[-1] - xs[0]
    growth_mb = slope * span / MB
    out = {
        "api": str(site.get("api", "")), "target": str(site.get("target", "")),
        "call_site": str(site.get("call_site", "")), "input_signature": str(site.get("input_signature", "")),
        "calls": count(site.get("calls")) or int(points[-1][0]),
        "points": [(p[0], p[1]) for p in points], "warmup_calls": int(steady[0][0]),
        "collected_after_call": number(site.get("collected_after_call")) if after is not None else None,
        "steady_calls": int(span), "slope_mb_per_1000_calls": slope * per_1000, "intercept_bytes": intercept,
        "spread_mb_per_1000_calls": [low * per_1000, high * per_1000], "growth_mb": growth_mb,
    }
    out["last_high_call"] = int(steady[last_high(steady)][0])
    out["stopped"] = stopped is not None
    out["growing"] = bool(out["slope_mb_per_1000_calls"] >= MIN_SLOPE_MB and low > 0 and growth_mb >= MIN_GROWTH_MB
                          and span >= MIN_STEADY_CALLS and not out["stopped"])
    out["calls_per_s"] = _rate(steady, excluded)
    ys = [p[1] for p in steady]
    for index, name in ((2, "traces"), (3, "models"), (4, "iterators")):
        values = [p[index] for p in steady]
        out[name] = {"start": int(values[0]), "end": int(values[-1]), "correlation": correlation(values, ys)}
    gpu = [p for p in steady if p[5] is not None]
    if len(gpu) >= MIN_POINTS:
        gpu_fit = theil_sen([p[0] for p in gpu], [p[5] for p in gpu])
        if gpu_fit is not None:
            out["gpu_slope_mb_per_1000_calls"] = gpu_fit[0] * per_1000
    return out


def site_analyses(recording: Recording) -> list[dict]:
    """Every call site's analysis that has enough points, growing ones first (steepest first)."""
    section = recording.extra.get("memory")
    if not isinstance(section, dict):
        return []
    pauses = _pauses(section)
    out = [a for a in (analyze_site(s, pauses) for s in section.get("sites") or [] if isinstance(s, dict))
           if a is not None]
    out.sort(key=lambda a: (not a["growing"], -a["slope_mb_per_1000_calls"], -a["calls"]))
    return out


def cause_of(analysis: dict, tracemalloc: dict | None) -> str:
    """``models``, ``traces``, ``iterators`` (the count grew over the steady window and tracks
    memory), ``user-objects`` (tracemalloc placed the growth on a user line), else ``unknown``."""
    for name in ("models", "traces", "iterators"):
        counted = analysis[name]
        if counted["end"] - counted["start"] >= MIN_COUNT_GROWTH and counted["correlation"] >= CORRELATED:
            return name
    if top_line(tracemalloc, analysis) is not None:
        return "user-objects"
    return "unknown"


def top_line(tracemalloc: dict | None, analysis: dict | None = None) -> dict | None:
    """The user's line tracemalloc saw holding the most bytes still alive, if it holds at least a
    third of what the window traced and, given the call site's ``analysis``, its bytes kept per
    window call are between half and twice the resident growth per call (the window keeps every
    allocation between its calls: TensorFlow's own, made under the user's call line, are not the
    growth unless they account for it); else None."""
    tm = clean_window(tracemalloc)
    if tm is None or not tm["lines"] or not tm["traced_bytes"]:
        return None
    best = max(tm["lines"], key=lambda l: l["bytes"])
    if best["bytes"] < tm["traced_bytes"] / 3:
        return None
    if analysis is not None:
        per_call = analysis["slope_mb_per_1000_calls"] * MB / 1000
        if not tm["calls"] or per_call <= 0 or not 0.5 * per_call <= best["bytes"] / tm["calls"] <= 2 * per_call:
            return None
    return best


def clean_window(tracemalloc) -> dict | None:
    """The recording's tracemalloc window with its fields checked (numbers, strings; bad lines dropped)."""
    if not isinstance(tracemalloc, dict):
        return None
    out = {k: number(tracemalloc.get(k)) for k in ("from_call", "to_call", "seconds", "snapshot_s", "traced_bytes")}
    out["calls"] = count(tracemalloc.get("calls"))
    out.update({k: str(tracemalloc.get(k) or "") for k in ("api", "target", "call_site")})
    lines = tracemalloc.get("lines") if isinstance(tracemalloc.get("lines"), list) else []
    out["lines"] = [{"line": l["line"], "bytes": number(l.get("bytes")), "count": count(l.get("count")) or 0}
                    for l in lines if isinstance(l, dict) and isinstance(l.get("line"), str)
                    and number(l.get("bytes")) is not None]
    return out


def _clean_collection(collection) -> dict | None:
    if not isinstance(collection, dict):
        return None
    out = {k: number(collection.get(k)) for k in ("after_call", "seconds", "rss_before", "rss_after")}
    out.update({k: str(collection.get(k) or "") for k in ("api", "target", "call_site")})
    return out


def max_growth(recording: Recording) -> tuple[float, str | None]:
    """The steepest steady-state growth (after warm-up, refit where growth stopped) of any call site
    that grows, in MB per 1000 calls, and that call site (``0.0, None`` when none grows): for
    --fail-on-memory-growth and the pytest plugin."""
    best, where = 0.0, None
    for analysis in site_analyses(recording):
        slope = analysis["slope_mb_per_1000_calls"]
        if analysis["growing"] and slope > best:
            best, where = slope, f"{analysis['api']} {analysis['target']} at {analysis['call_site']}"
    return best, where


def memory_view(recording: Recording, analyses: list[dict] | None = None, limit: int = 8) -> dict:
    """What the report's memory section shows: the rows (growing call sites first), the forced
    collection and the tracemalloc window, if any; ``rows`` is empty with no memory section."""
    section = recording.extra.get("memory")
    if not isinstance(section, dict):
        return {"rows": [], "sites": 0}
    analyses = site_analyses(recording) if analyses is None else analyses
    tm = clean_window(section.get("tracemalloc"))
    rows = []
    for analysis in analyses[:limit]:
        row = dict(analysis)
        row["cause"] = cause_of(analysis, tm) if analysis["growing"] else None
        row["label"] = f"{analysis['api']} {analysis['target']}".strip()
        rows.append(row)
    return {"rows": rows, "sites": len(analyses), "source": section.get("rss_source"),
            "collection": _clean_collection(section.get("collection")),
            "tracemalloc": tm, "notes": [str(n) for n in section.get("notes") or []],
            "gpu_devices": [str(d) for d in section.get("gpu_devices") or []]}
