"""tfdiag's kernel time beside the TF Profiler's: does ``kernel_execution`` mean the model's kernels?

The TF Profiler traced a few calls (the ``tf_profiler`` section); per call site it measured the
model's op time per call (``call_sites[].model_op_s_per_call``: the self time of the ops that are
not tf.data's, or for eager calls their host compute, here less the slowdown the profiler itself
caused there). tfdiag's steady-state split of the same call site says how much of each call was
``kernel_execution``. The two measure the same thing
by different means, so they should agree up to the runtime's own dispatch cost per call: a row
disagrees when tfdiag's figure is above twice the profiler's plus half a millisecond, or below
half of it. A disagreement is a warning, never a finding: it says which figure to doubt.

Each row names the two figures it compares (``tfdiag_figure``, ``profiler_figure``), as neither is
the raw one everywhere:
- Where the profiler saw a call's graph functions wait for tf.data themselves (tf-keras's predict
  function pulls its batches inside the graph), capture has already moved that wait, as the
  profiler measured it, out of tfdiag's kernel time (``graph_tf_data_s`` on the call entry, see
  capture/trace_ops.py). ``tfdiag_kernel_s`` is after that move, ``moved_tf_data_s`` how much moved
  per call, and ``tfdiag_kernel_uncorrected_s`` the figure before it (kernel + moved).
- For eager calls the profiler's host compute (``profiler_measured_s``) is divided by its own
  slowdown, which tfdiag's wall timings give: the profiled calls' median against the unprofiled
  median at the same call site (``profiler_slowdown``, from ``slowdown_profiled_median_s`` and
  ``slowdown_unprofiled_median_s``); ``profiler_model_op_s`` is the result.
A disagreement reaches the Analysis's warnings (``warning_entries``, marked ``source:
"kernel_check"`` so a re-analysed recording.json derives them again instead of repeating them).

A call site whose calls mostly traced gets no row (``retraced``): more than half of its calls after
the first made a trace of a function that is not tf.data's (``traced_calls``, from the traces the
``functions`` entries keep with their call site; tf.data's functions are left out, as Keras's
predict() traces them on every call by design). Such a site has no steady state: each call runs a
new graph for the first time, and that one-off setup is booked as kernel_execution, so tfdiag's
figure is far above the profiler's and the warning would only be about tfdiag's bookkeeping (the
retrace findings say what to change).
"""

from __future__ import annotations

from ..recording import Recording
from . import phases, profile_rows
from .fields import number
from .units import duration

HIGH_RATIO = 2.0
HIGH_SLACK_S = 0.0005  # dispatching a graph function or an eager op costs about this per call
LOW_RATIO = 0.5
SOURCE = "kernel_check"  # the ``source`` of the warnings derived here (recording.json carries them)


def agrees(tfdiag_s: float, profiler_s: float) -> bool:
    """True when ``tfdiag_s`` is within [0.5x, 2x + 0.5 ms] of ``profiler_s``."""
    return LOW_RATIO * profiler_s <= tfdiag_s <= HIGH_RATIO * profiler_s + HIGH_SLACK_S



def _site_calls(recording: Recording, api, call_site) -> list[dict]:
    return [c for c in recording.calls if isinstance(c, dict) and c.get("api") == api
            and c.get("call_site") == call_site and (c.get("count") or 0) > 0]


def traced_calls(recording: Recording, call_site) -> int:
    """How many traces of functions that are not tf.data's were made at ``call_site``: those kept in
    full there, plus each function's dropped traces in the share its kept ones have at that site."""
    total = 0.0
    for function in recording.functions:
        if not isinstance(function, dict) or function.get("origin") == "tf.data":
            continue
        kept = [t for t in function.get("traces") or [] if isinstance(t, dict)]
        here = sum(1 for t in kept if t.get("call_site") == call_site)
        dropped = int(function.get("traces_dropped") or 0)
        total += here + (dropped * here / len(kept) if kept else 0.0)
    return round(total)


def retraced(recording: Recording, call_site, count: int) -> bool:
    """True when more than half of the ``count`` calls at ``call_site`` after the first traced (the
    first call is taken to be one of those that traced, so a single trace never counts)."""
    after_first = max(0, min(traced_calls(recording, call_site), count) - 1)
    return 2 * after_first > count - 1


def kernel_rows(recording: Recording) -> list[dict]:
    """One row per call site the TF Profiler measured (but those whose calls mostly traced): both
    kernel times per call and whether they agree.

    A call site may hold several call entries (models or input shapes): tfdiag's figure is their
    steady-state kernel time per call, weighted by their call counts, as the profiled calls are
    a draw from all of them."""
    section = recording.extra.get("tf_profiler")
    sites = section.get("call_sites") if isinstance(section, dict) else None
    rows: list[dict] = []
    for site in sites if isinstance(sites, list) else []:
        if not isinstance(site, dict):
            continue
        measured_s = number(site.get("model_op_s_per_call"))
        calls = _site_calls(recording, site.get("api"), site.get("call_site"))
        if measured_s is None or not calls:
            continue
        if retraced(recording, site.get("call_site"), sum(int(c.get("count") or 0) for c in calls)):
            continue  # no steady state to compare (see the module's docstring)
        # An eager call's host compute holds the profiler's own per-op instrumentation: take the
        # slowdown the profiled calls showed against the unprofiled ones at the same site out of it.
        # (Graph ops' self time is timed around the kernel alone, so it stays as measured.)
        eager = site.get("measure") == "host_compute"
        slowdown = _slowdown(section, site, calls) if eager else None
        profiler_s = measured_s / (slowdown["ratio"] if slowdown else 1.0)
        weights = [float(c.get("count") or 0) for c in calls]
        tfdiag_s = sum(phases.call_phase_split(c)["kernel_execution"] * w for c, w in zip(calls, weights)) / sum(weights)
        phase_calls = sum(int(c.get("phase_calls") or 0) for c in calls)
        moved = sum(float(number(c.get("graph_tf_data_s")) or 0.0) * w for c, w in zip(calls, weights)) / sum(weights)
        ok = agrees(tfdiag_s, profiler_s)
        row = {
            "api": site.get("api"),
            "call_site": site.get("call_site"),
            "targets": sorted({str(c.get("target")) for c in calls}),
            "count": int(sum(weights)),
            "tfdiag_kernel_s": tfdiag_s,  # the figure compared: see tfdiag_figure
            "tfdiag_figure": _tfdiag_figure(moved),
            "tfdiag_kernel_uncorrected_s": tfdiag_s + moved,  # before the in-graph tf.data wait moved out
            "moved_tf_data_s": moved,  # per call, taken out of kernel_execution as tf.data time inside graphs
            "profiler_model_op_s": profiler_s,  # the figure compared: see profiler_figure
            "profiler_figure": _profiler_figure(site.get("measure"), slowdown),
            "profiler_measured_s": measured_s,  # as the profiler measured it
            "profiler_slowdown": slowdown["ratio"] if slowdown else 1.0,
            "slowdown_profiled_median_s": slowdown["profiled_median_s"] if slowdown else None,
            "slowdown_unprofiled_median_s": slowdown["unprofiled_median_s"] if slowdown else None,
            "ratio": tfdiag_s / profiler_s if profiler_s > 0 else None,
            "phase_calls": phase_calls,
            "calls_profiled": int(site.get("calls_profiled") or 0),
            "measure": site.get("measure"),
            "agrees": ok,
        }
        row["warning"] = None if ok else _warning(row)
        rows.append(row)
    return rows


def _slowdown(section: dict, site: dict, calls: list[dict]) -> dict | None:
    """How many times slower this call site's profiled calls ran than its unprofiled median, by
    tfdiag's wall timings: ``{"ratio" (>= 1), "profiled_median_s", "unprofiled_median_s"}``; None
    when there is nothing to compare (no unprofiled call at the site)."""
    key = (site.get("api"), site.get("call_site"))
    for found in profile_rows.measured_overhead(section.get("profiled") or [], calls)["sites"]:
        if (found["api"], found["call_site"]) == key and found.get("ratio"):
            return {"ratio": max(1.0, found["ratio"]), "profiled_median_s": found["profiled_median_s"],
                    "unprofiled_median_s": found["unprofiled_median_s"]}
    return None


def _tfdiag_figure(moved_s: float) -> str:
    if moved_s > 0:
        return (f"steady-state kernel_execution per call, after moving {duration(moved_s)} of tf.data wait inside "
                f"the graph (measured by the TF Profiler) to data_adapter")
    return "steady-state kernel_execution per call"


def _profiler_figure(measure, slowdown: dict | None) -> str:
    if measure != "host_compute":
        return "self time of the non-tf.data ops per call"
    if slowdown is None:
        return "host compute per call (no unprofiled call at this site to take the profiler's slowdown out)"
    return (f"host compute per call ÷ ×{slowdown['ratio']:.2f}, the profiler's slowdown by tfdiag's wall timings "
            f"(profiled median {duration(slowdown['profiled_median_s'])} against unprofiled "
            f"{duration(slowdown['unprofiled_median_s'])})")


def _warning(row: dict) -> str:
    tfdiag_s, profiler_s = row["tfdiag_kernel_s"], row["profiler_model_op_s"]
    direction = "above" if tfdiag_s > profiler_s else "below"
    ratio = f"×{tfdiag_s / profiler_s:.1f}" if profiler_s > 0 else "with nothing to compare"
    before = (f"; {duration(row['tfdiag_kernel_uncorrected_s'])} before that move"
              if row["moved_tf_data_s"] > 0 else "")
    return (f"kernel time disagrees with the TF Profiler at {row['call_site']} ({row['api']}): "
            f"tfdiag's {row['tfdiag_figure']} is {duration(tfdiag_s)} (over {row['phase_calls']} sampled "
            f"call(s){before}), {direction} the TF Profiler's {row['profiler_figure']} of {duration(profiler_s)} "
            f"over {row['calls_profiled']} profiled call(s) ({ratio}; agreement is 0.5× to 2× + 0.5 ms)")


def warnings(rows: list[dict]) -> list[str]:
    """The disagreement warnings of ``kernel_rows``, in order."""
    return [row["warning"] for row in rows if row.get("warning")]


def warning_entries(rows: list[dict]) -> list[dict]:
    """``warnings(rows)`` as warnings entries (``{"message", "count", "source"}``)."""
    return [{"message": text, "count": 1, "source": SOURCE} for text in warnings(rows)]


def is_derived(warning) -> bool:
    """A warning this module derives (from a recording.json written earlier): analysis derives it again."""
    return isinstance(warning, dict) and warning.get("source") == SOURCE
