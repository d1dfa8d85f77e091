"""tfdiag's kernel time beside the TF Profiler's: does ``kernel_execution`` mean the model's kernels?

The TF Profiler traced a few calls (the ``tf_profiler`` section); per call site it measured the
model's op time per call (``call_sites[].model_op_s_per_call``: the self time of the ops that are
not tf.data's, or for eager calls their host compute, here less the slowdown the profiler itself
caused there). tfdiag's steady-state split of the same call site says how much of each call was
``kernel_execution``. The two measure the same thing
by different means, so they should agree up to the runtime's own dispatch cost per call: a row
disagrees when tfdiag's figure is above twice the profiler's plus half a millisecond, or below
half of it. A disagreement is a warning, never a finding: it says which figure to doubt.

Where the profiler saw a call's graph functions wait for tf.data themselves, capture has already
moved that wait out of tfdiag's kernel time (``graph_tf_data_s`` on the call entry, see
capture/trace_ops.py); the row says how much, so a reader knows the figure is corrected.
"""

from __future__ import annotations

from ..recording import Recording
from . import phases, profile_rows
from .units import duration

HIGH_RATIO = 2.0
HIGH_SLACK_S = 0.0005  # dispatching a graph function or an eager op costs about this per call
LOW_RATIO = 0.5


def agrees(tfdiag_s: float, profiler_s: float) -> bool:
    """True when ``tfdiag_s`` is within [0.5x, 2x + 0.5 ms] of ``profiler_s``."""
    return LOW_RATIO * profiler_s <= tfdiag_s <= HIGH_RATIO * profiler_s + HIGH_SLACK_S


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _site_calls(recording: Recording, api, call_site) -> list[dict]:
    return [c for c in recording.calls if isinstance(c, dict) and c.get("api") == api
            and c.get("call_site") == call_site and (c.get("count") or 0) > 0]


def kernel_rows(recording: Recording) -> list[dict]:
    """One row per call site the TF Profiler measured: both kernel times per call and whether they agree.

    A call site may hold several call entries (models or input shapes): tfdiag's figure is their
    steady-state kernel time per call, weighted by their call counts, as the profiled calls are
    a draw from all of them."""
    section = recording.extra.get("tf_profiler")
    sites = section.get("call_sites") if isinstance(section, dict) else None
    rows: list[dict] = []
    for site in sites if isinstance(sites, list) else []:
        if not isinstance(site, dict):
            continue
        measured_s = _number(site.get("model_op_s_per_call"))
        calls = _site_calls(recording, site.get("api"), site.get("call_site"))
        if measured_s is None or not calls:
            continue
        # An eager call's host compute holds the profiler's own per-op instrumentation: take the
        # slowdown the profiled calls showed against the unprofiled ones at the same site out of it.
        # (Graph ops' self time is timed around the kernel alone, so it stays as measured.)
        slowdown = _slowdown(section, calls) if site.get("measure") == "host_compute" else 1.0
        profiler_s = measured_s / slowdown
        weights = [float(c.get("count") or 0) for c in calls]
        tfdiag_s = sum(phases.call_phase_split(c)["kernel_execution"] * w for c, w in zip(calls, weights)) / sum(weights)
        phase_calls = sum(int(c.get("phase_calls") or 0) for c in calls)
        moved = sum(float(_number(c.get("graph_tf_data_s")) or 0.0) * w for c, w in zip(calls, weights)) / sum(weights)
        ok = agrees(tfdiag_s, profiler_s)
        row = {
            "api": site.get("api"),
            "call_site": site.get("call_site"),
            "targets": sorted({str(c.get("target")) for c in calls}),
            "count": int(sum(weights)),
            "tfdiag_kernel_s": tfdiag_s,
            "profiler_model_op_s": profiler_s,
            "ratio": tfdiag_s / profiler_s if profiler_s > 0 else None,
            "phase_calls": phase_calls,
            "calls_profiled": int(site.get("calls_profiled") or 0),
            "measure": site.get("measure"),
            "profiler_measured_s": measured_s,
            "profiler_slowdown": slowdown,
            "moved_tf_data_s": moved,  # per call, taken out of kernel_execution as tf.data time inside graphs
            "agrees": ok,
            "warning": None if ok else _warning(site, tfdiag_s, profiler_s, phase_calls),
        }
        rows.append(row)
    return rows


def _slowdown(section: dict, calls: list[dict]) -> float:
    """How many times slower the profiled calls ran than the unprofiled median of their call site (>= 1)."""
    sites = profile_rows.measured_overhead(section.get("profiled") or [], calls)["sites"]
    ratios = [s["ratio"] for s in sites if s.get("ratio")]
    return max(1.0, ratios[0]) if ratios else 1.0


def _warning(site: dict, tfdiag_s: float, profiler_s: float, phase_calls: int) -> str:
    what = ("host compute per call (less the profiler's own slowdown)" if site.get("measure") == "host_compute"
            else "model-op time per call (self time of the non-tf.data ops)")
    direction = "above" if tfdiag_s > profiler_s else "below"
    ratio = f"×{tfdiag_s / profiler_s:.1f}" if profiler_s > 0 else "with nothing to compare"
    return (f"kernel time disagrees with the TF Profiler at {site.get('call_site')} ({site.get('api')}): "
            f"tfdiag's steady-state kernel_execution is {duration(tfdiag_s)} per call (over {phase_calls} sampled "
            f"call(s)), {direction} the TF Profiler's {what} of {duration(profiler_s)} over "
            f"{int(site.get('calls_profiled') or 0)} profiled call(s) ({ratio}; agreement is 0.5× to 2× + 0.5 ms)")


def warnings(rows: list[dict]) -> list[str]:
    """The disagreement warnings of ``kernel_rows``, in order."""
    return [row["warning"] for row in rows if row.get("warning")]
