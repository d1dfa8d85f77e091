"""Growth of a series of memory readings: a robust slope (Theil-Sen) and whether growth stopped.

Why a module of its own: capture (capture/memory.py, to decide whether growth is still suspected
before it opens a tracemalloc window) and analysis (analysis/memory.py, the steady slope and the
warm-up) judge growth the same way, and neither may import the other. Pure Python, no imports
from tfdiag; Theil-Sen costs O(pairs), at most MAX_PAIRS pairs.
"""

from __future__ import annotations

import random

MB = float(1 << 20)
MAX_PAIRS = 2000
MIN_COUNT_GROWTH = 2
PEAK_STEP = 0.25 * MB  # a new high: this much above the last one
STOP_MB = 1.0  # growth stopped: the tail since the last high spans the calls the slope needs to add this ...
STOP_POINTS = 4  # ... with at least this many readings ...
STOP_SHARE = 0.25  # ... and its own slope under this share of the steady slope ...
STEP_GAPS = 2  # ... and it outlasts this many times the median gap between earlier new highs


def theil_sen(xs: list, ys: list, max_pairs: int = MAX_PAIRS) -> tuple[float, float, float, float] | None:
    """(slope, intercept, 25% and 75% of the pairwise slopes) of ys against xs; None with fewer
    than two distinct xs. Beyond ``max_pairs`` pairs, a fixed random subset of them."""
    n = len(xs)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)] if n * (n - 1) // 2 <= max_pairs else None
    if pairs is None:
        draw = random.Random(0)
        pairs = []
        while len(pairs) < max_pairs:
            i, j = sorted(draw.sample(range(n), 2))
            pairs.append((i, j))
    slopes = sorted((ys[j] - ys[i]) / (xs[j] - xs[i]) for i, j in pairs if xs[j] != xs[i])
    if not slopes:
        return None
    slope = quantile(slopes, 0.5)
    intercept = quantile(sorted(y - slope * x for x, y in zip(xs, ys)), 0.5)
    return slope, intercept, quantile(slopes, 0.25), quantile(slopes, 0.75)


def quantile(values: list, q: float) -> float:
    """``q`` quantile of sorted ``values`` (linear between neighbours)."""
    position = q * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def highs(points: list) -> list[int]:
    """Indices of the points that made a new high (``PEAK_STEP`` above the one before it), the first point first."""
    peak, at = points[0][1], [0]
    for index in range(1, len(points)):
        if points[index][1] > peak + PEAK_STEP:
            peak = points[index][1]
            at.append(index)
    return at


def last_high(points: list) -> int:
    """Index of the last point that made a new high."""
    return highs(points)[-1]


def growth_stopped(points: list, slope: float) -> int | None:
    """Index of the last new high in ``points`` (steady points, by calls) when growth at ``slope``
    bytes per call stopped there (see the module's docstring), else None."""
    if slope <= 0 or len(points) < STOP_POINTS:
        return None
    at = highs(points)
    tail = points[at[-1]:]
    # a leak in steps (2 MB every 200 calls) is flat between its highs: the tail must outlast twice their
    # usual (median) gap; not the longest, which a warm-up's late jump sets
    gaps = sorted(points[b][0] - points[a][0] for a, b in zip(at, at[1:]))
    gap = quantile(gaps, 0.5) if gaps else 0
    if len(tail) < STOP_POINTS or tail[-1][0] - tail[0][0] < max(STOP_MB * MB / slope, STEP_GAPS * gap):
        return None
    if any(max(p[i] for p in tail) - tail[0][i] >= MIN_COUNT_GROWTH for i in (2, 3, 4)):
        return None
    for part in (tail, tail[len(tail) // 2:]):  # its later half too: a spike at the high, then the leak again
        fit = theil_sen([p[0] for p in part], [p[1] for p in part])
        if fit is not None and fit[0] >= STOP_SHARE * slope:
            return None
    return at[-1]
