"""The Collector: where hooks append what they saw, in bounded memory.

Hooks run on the user's threads, so every mutation takes one lock. Per call
site only aggregates, a fixed-size reservoir of durations and a fixed-size
reservoir of sampled phase splits are kept, and each function keeps its first
``MAX_TRACES_KEPT`` traces in full, so memory stays bounded however long the
diagnosed program runs.

A call site's statistics and its entry in the recording are call_stats.py's.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

from ..recording import PHASES
from . import steps as training_steps
from .call_stats import RESERVOIR_SIZE, CallStats
from .sampling import Reservoir

MAX_TRACES_KEPT = 200
MAX_CALL_SAMPLES = 2000
MAX_WARNINGS = 100
MAX_INSTANCES_TRACKED = 10_000


@dataclass
class FunctionStats:
    key: tuple
    name: str
    qualname: str
    origin: str
    defined_at: str
    trace_count: int = 0
    trace_s: float = 0.0
    traces: list = field(default_factory=list)
    object_count: int = 0
    model: str | None = None
    role: str | None = None  # Keras-made functions: "train", "test" or "predict"
    model_created_at: str | None = None  # Keras-made functions: the user's line that created the model
    instance_traces: dict = field(default_factory=dict)  # tf.function methods: traces per instance
    max_instance_traces: int = 0
    training_step: bool = False  # it applied gradients while traced (a custom training loop's step)


class Collector:
    """Thread-safe, bounded store of raw events from every hook."""

    def __init__(self, seed: int = 0) -> None:
        self.lock = threading.Lock()
        self.functions: dict[tuple, FunctionStats] = {}
        self.calls: dict[tuple, CallStats] = {}
        self.timeline = Reservoir(MAX_CALL_SAMPLES, random.Random(seed))  # the calls the timeline draws
        self.warnings: dict[str, int] = {}
        self._rng = random.Random(seed)
        self.call_providers: list = []  # () -> calls entries made elsewhere (custom_loops.py), not in the totals
        self.traces_total = 0  # traces so far of every function but tf.data's (read by memory.py at sampled calls)

    # -- warnings ---------------------------------------------------------------
    def warn(self, message: str) -> None:
        """Record a capture problem; the user's program always goes on."""
        with self.lock:
            if message in self.warnings or len(self.warnings) < MAX_WARNINGS:
                self.warnings[message] = self.warnings.get(message, 0) + 1

    # -- traces -------------------------------------------------------------------
    def function(self, key: tuple, name: str, qualname: str, origin: str, defined_at: str) -> FunctionStats:
        stats = self.functions.get(key)
        if stats is None:
            stats = self.functions[key] = FunctionStats(key, name, qualname, origin, defined_at)
        return stats

    def add_trace(self, key: tuple, name: str, qualname: str, origin: str, defined_at: str, trace: dict) -> None:
        with self.lock:
            stats = self.function(key, name, qualname, origin, defined_at)
            stats.trace_count += 1
            if origin != "tf.data":  # tf.data's traces go with their dataset; the others stay cached
                self.traces_total += 1
            stats.trace_s += trace["duration_s"]
            trace["index"] = stats.trace_count
            stats.object_count = max(stats.object_count, trace.get("object_index", 0))
            stats.model = trace.get("model", stats.model)
            stats.role = trace.get("role", stats.role)
            stats.model_created_at = trace.get("model_created_at") or stats.model_created_at
            stats.training_step = stats.training_step or bool(trace.get("training_step"))
            instance = trace.get("instance")
            if instance is not None:
                seen = stats.instance_traces
                if instance["id"] in seen or len(seen) < MAX_INSTANCES_TRACKED:
                    seen[instance["id"]] = seen.get(instance["id"], 0) + 1
                    stats.max_instance_traces = max(stats.max_instance_traces, seen[instance["id"]])
            if len(stats.traces) < MAX_TRACES_KEPT:
                stats.traces.append(trace)

    # -- calls --------------------------------------------------------------------
    def add_call(self, api: str, target: str, call_site: str, input_signature: str,
                 start: float, duration: float, phases: dict,
                 thread: str = "", profiled: bool = False, batch: int | None = None, sampled: bool = True,
                 teardown_s: float = 0.0, training: bool = False, caller: dict | None = None,
                 input_spec=None, first: bool = True, extra=None) -> None:
        """One finished call; ``phases`` is its own dict, kept without a copy. ``sampled``: its
        full phase split was measured (else only its wall time and graph creation). ``teardown_s``:
        of its data_adapter seconds, those after its tf.data iterator was released. ``first``:
        the sampler saw it as its call site's first call."""
        self.add_calls([(api, target, call_site, input_signature, start, duration, phases, thread, profiled,
                         batch, sampled, teardown_s, training, caller, input_spec, first, extra)])

    def add_calls(self, records: list[tuple]) -> None:
        """A batch of finished calls, as ``add_call``'s arguments in order (one lock for all)."""
        with self.lock:
            self.timeline.extend([self._add_call(*record) for record in records])

    def _add_call(self, api, target, call_site, input_signature, start, duration, phases, thread, profiled,
                  batch, sampled, teardown_s, training, caller, input_spec, first, extra=None) -> tuple:
        """One call into its call site's statistics; returns its timeline entry (a tuple now, a dict at export)."""
        key = (api, target, call_site, input_signature, training)
        stats = self.calls.get(key)
        if stats is None:
            stats = self.calls[key] = CallStats(
                api, target, call_site, input_signature, training, caller, input_spec, batch=batch,
                durations=Reservoir(RESERVOIR_SIZE, self._rng), splits=Reservoir(RESERVOIR_SIZE, self._rng))
        elif first:  # the timed-call log describes (input spec, caller) a call site's first call only
            stats.input_spec = stats.input_spec if stats.input_spec is not None else input_spec
            stats.caller = stats.caller if stats.caller is not None else caller
        stats.add(duration, phases, sampled, teardown_s, profiled, first)
        if extra is not None:
            stats.steps = training_steps.add(stats.steps, extra, bool(sampled) and not profiled)
        return api, target, call_site, start, duration, thread, profiled, phases, sampled, teardown_s

    # -- export -------------------------------------------------------------------
    def sections(self) -> dict:
        """The recording sections built from what was collected (called once, at the end)."""
        with self.lock:
            for stats in self.calls.values():
                stats.add_light(self.timeline)
            functions = [_function_section(s) for s in self.functions.values()]
            # (api, target) -> the kept samples of all its call sites and inputs, summed: what a
            # call site with no sample of its own borrows
            pooled: dict = {}
            for stats in self.calls.values():
                if stats.samples:
                    phases, teardown, wall = stats.basis()
                    into = pooled.setdefault((stats.api, stats.target), (dict.fromkeys(PHASES, 0.0), [0.0, 0.0]))
                    for name, seconds in phases.items():
                        into[0][name] = into[0].get(name, 0.0) + seconds
                    into[1][0] += teardown
                    into[1][1] += wall
            pooled = {key: (phases, sums[0], sums[1]) for key, (phases, sums) in pooled.items()}
            calls = [s.section(pooled.get((s.api, s.target))) for s in self.calls.values()]
            samples = [_sample_section(s) for s in sorted(self.timeline.items, key=lambda s: s[3])]
            warnings = [{"message": m, "count": n} for m, n in self.warnings.items()]
        totals = dict.fromkeys(PHASES, 0.0)
        wall = 0.0
        for call in calls:
            wall += call["total_s"]
            for name in PHASES:
                totals[name] += call["phases"].get(name, 0.0)
        steps_of = {f["name"] for f in functions if f["training_step"]}
        for call in calls:
            call["training_step"] = call["api"] == "tf.function" and call["target"] in steps_of or None
        calls += [entry for provider in self.call_providers for entry in provider()]
        if samples:
            origin = samples[0]["start_s"]
            for sample in samples:
                sample["start_s"] -= origin
        return {
            "functions": functions,
            "calls": calls,
            "call_samples": samples,
            "phases": {"wall_s": wall, **totals},
            "warnings": warnings,
            "call_samples_total": self.timeline.seen,
        }


def _sample_section(sample: tuple) -> dict:
    """A call of the timeline; its ``phases`` only if it was a sampled call."""
    api, target, call_site, start, duration, thread, profiled, phases, sampled, teardown_s = sample
    out = {"api": api, "target": target, "call_site": call_site, "start_s": start,
           "duration_s": duration, "thread": thread, "profiled": profiled,
           "graph_s": phases.get("graph_creation", 0.0)}
    if sampled:
        out["phases"] = dict(phases)
        if teardown_s:
            out["data_adapter_teardown_s"] = teardown_s
    return out


def _function_section(stats: FunctionStats) -> dict:
    return {
        "name": stats.name,
        "qualname": stats.qualname,
        "origin": stats.origin,
        "defined_at": stats.defined_at,
        "trace_count": stats.trace_count,
        "trace_s": stats.trace_s,
        "object_count": stats.object_count,
        "model": stats.model,
        "role": stats.role,
        "model_created_at": stats.model_created_at,
        "instances": len(stats.instance_traces) or None,
        "max_traces_per_instance": stats.max_instance_traces or None,
        "traces": list(stats.traces),
        "traces_dropped": max(0, stats.trace_count - len(stats.traces)),
        "training_step": stats.training_step,
    }
