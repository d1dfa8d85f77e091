"""Chart layout for the report's memory section: resident memory against call number at one call
site, the warm-up shaded, the steady-state slope drawn over the points after it.

Layout only (no TensorFlow, no jinja2): it turns one row of ``analysis.memory["rows"]``
(analysis/memory.py) into chart coordinates; the template writes the numbers out.
"""

from __future__ import annotations

from .charts import MARGIN, WIDTH, _nice_step

HEIGHT = 200
MB = float(1 << 20)


def memory_chart(row: dict, width: int = WIDTH, height: int = HEIGHT) -> dict:
    """``points`` (x, y, calls, MB), ``line`` (a polyline), ``warmup`` (the shaded x range, or
    None), ``slope`` (the fitted line over the steady window), ticks; ``points`` empty with none."""
    chart = {"points": [], "line": "", "warmup": None, "slope": None, "collection": None, "x_ticks": [],
             "y_ticks": [], "width": width, "height": height, "plot": {}}
    points = [(float(c), float(b)) for c, b in row.get("points") or []]
    if not points:
        return chart
    left, right, top, bottom = MARGIN["left"], width - MARGIN["right"], MARGIN["top"], height - MARGIN["bottom"]
    chart["plot"] = {"left": left, "right": right, "top": top, "bottom": bottom}
    last = max(1.0, max(c for c, _ in points))
    lows = [b / MB for _, b in points]
    lo, hi = min(lows), max(lows)
    pad_mb = max(0.5, (hi - lo) * 0.08)
    lo, hi = lo - pad_mb, hi + pad_mb
    pad = 6

    def x_of(calls: float) -> float:
        return round(left + pad + calls / last * (right - left - 2 * pad), 1)

    def y_of(mb: float) -> float:
        return round(bottom - (mb - lo) / (hi - lo) * (bottom - top), 1)

    coords = []
    for calls, size in points:
        x, y = x_of(calls), y_of(size / MB)
        coords.append(f"{x},{y}")
        chart["points"].append({"x": x, "y": y, "calls": int(calls), "mb": size / MB})
    chart["line"] = " ".join(coords)
    warm = float(row.get("warmup_calls") or 0)
    if warm > 0:
        chart["warmup"] = {"x": x_of(0), "width": round(x_of(warm) - x_of(0), 1), "calls": int(warm)}
    after = row.get("collected_after_call")
    if after is not None:
        chart["collection"] = {"x": x_of(float(after)), "calls": int(after)}
    slope, intercept = row.get("slope_mb_per_1000_calls"), row.get("intercept_bytes")
    if slope is not None and intercept is not None:
        per_call = slope / 1000.0 * MB
        end = warm + float(row.get("steady_calls") or 0)

        def clamp(mb: float) -> float:
            return min(max(mb, lo), hi)

        chart["slope"] = {"x1": x_of(warm), "y1": y_of(clamp((intercept + per_call * warm) / MB)),
                          "x2": x_of(end), "y2": y_of(clamp((intercept + per_call * end) / MB))}
    step = _nice_step(last)
    k = 0
    while k * step <= last * 1.0001 and k < 50:
        chart["x_ticks"].append({"x": x_of(k * step), "label": f"{int(k * step):,}"})
        k += 1
    step_mb = _nice_step(hi - lo, 4)
    k = int(lo // step_mb) + 1
    while k * step_mb <= hi and len(chart["y_ticks"]) < 12:
        chart["y_ticks"].append({"y": y_of(k * step_mb), "label": f"{k * step_mb:,.{0 if step_mb >= 1 else 1}f} MB"})
        k += 1
    return chart
