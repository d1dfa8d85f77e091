"""The Recording, assembled once from what capture collected, after the diagnosis.

The collector's sections (functions, calls, the timeline, phases, warnings), the profilers'
sections, and the one correction that needs both: the tf.data time the TF Profiler saw
inside graph functions moves out of kernel_execution (``trace_ops.move_graph_tf_data`` for
calls, ``move_step_tf_data`` for fit()/evaluate() steps).
"""

from __future__ import annotations

from ..recording import Recording
from . import environment, trace_ops
from .collector import Collector


def recording(collector: Collector, command: list[str] | None, outcome: dict, call_log=None,
              cprofile=None, tf_profiler=None) -> Recording:
    """The Recording of a diagnosis. ``call_log``: the timed calls' buffers (None with timing
    off); ``cprofile``, ``tf_profiler``: the gates that ran (None when off)."""
    tf_section = _tf_profiler_section(tf_profiler, collector)  # first: reading the trace back may warn
    if call_log is not None:
        call_log.flush_all()
    sections = collector.sections()
    total_samples = sections.pop("call_samples_total")
    built = Recording(environment=environment.collect(command), run=dict(outcome), **sections)
    built.run["call_samples_total"] = total_samples
    if cprofile is not None:
        built.extra["cprofile"] = cprofile.section()
    if tf_section is not None:
        built.extra["tf_profiler"] = tf_section
        # In-graph tf.data waits are data_adapter time, not kernels.
        trace_ops.move_graph_tf_data(built.calls, built.phases, tf_section.get("call_sites") or [])
        # So are fit()/evaluate()'s, waited for inside their train/test functions (step_profiler.py).
        trace_ops.move_step_tf_data(built.calls, built.phases, tf_section.get("step_sites") or [])
    return built


def _tf_profiler_section(gate, collector: Collector) -> dict | None:
    if gate is None:
        return None
    try:
        return gate.section()
    except Exception as exc:  # a broken trace must not cost the rest of the report
        collector.warn(f"TF Profiler results unavailable: {exc.__class__.__name__}: {exc}")
        return None
