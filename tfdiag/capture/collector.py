"""The Collector: where hooks append what they saw, in bounded memory.

Hooks run on the user's threads, so every mutation takes one lock. Per call
site only aggregates and a fixed-size reservoir of durations are kept, and
each function keeps its first ``MAX_TRACES_KEPT`` traces in full, so memory
stays bounded however long the diagnosed program runs.

A call site's entry (``_call_section``) reports its first call apart (``first_phases``: tracing,
first-run setup) from the calls after it (``steady_phases``, per call: what findings quote), and
``phases``, the whole call site, is their sum. Every call, profiled or not, counts in ``count``,
``total_s`` and graph creation; the steady split's proportions come from the sampled unprofiled
calls after the first (``phase_calls`` of them).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

from ..recording import PHASES

MAX_TRACES_KEPT = 200
RESERVOIR_SIZE = 512
MAX_CALL_SAMPLES = 2000
MAX_WARNINGS = 100
MAX_INSTANCES_TRACKED = 10_000


@dataclass
class CallStats:
    """One call site (api, target, calling line, input signature, training): every call's wall
    time and graph creation; the first call's split on its own; the steady-state split from the
    sampled unprofiled calls after the first (sampling.py)."""

    api: str
    target: str
    call_site: str
    input_signature: str
    training: bool = False
    caller: dict | None = None
    input_spec: object = None
    batch: int | None = None  # leading dimension of the input (Keras calls)
    count: int = 0  # every call, profiled ones included
    total_s: float = 0.0
    graph_s: float = 0.0  # graph creation, measured on every call
    max_s: float = 0.0  # of unprofiled calls
    reservoir: list = field(default_factory=list)  # unprofiled calls' durations
    first_s: float = 0.0
    first_phases: dict | None = None  # the first call's split (None until it is recorded)
    first_graph_s: float = 0.0
    first_teardown_s: float = 0.0
    first_measured: bool = False  # False: the first call was profiled (only its graph creation is known)
    # The calls after the first: seconds times each sampled unprofiled call's weight (sampling.py).
    weighted_split: dict = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    phase_calls: int = 0  # sampled unprofiled calls after the first
    weighted_teardown: float = 0.0  # of data_adapter: the tf.data iterator's teardown (sampled, weighted)
    profiled: int = 0  # calls made under a profiler: in count, total_s and graph creation, not in the split
    profiled_s: list = field(default_factory=list)

    def add(self, duration: float, rng: random.Random, phases: dict, weight: int, teardown_s: float = 0.0,
            profiled: bool = False, first: bool = True) -> None:
        """One call. ``first``: the sampler saw it as its call site's first (the first such call
        recorded is the call site's first call; calls before it, from other threads, are steady)."""
        self.count += 1
        self.total_s += duration
        graph = phases.get("graph_creation", 0.0)
        self.graph_s += graph
        if profiled:
            self.profiled += 1
            if len(self.profiled_s) < RESERVOIR_SIZE:
                self.profiled_s.append(duration)
        else:
            if duration > self.max_s:
                self.max_s = duration
            if len(self.reservoir) < RESERVOIR_SIZE:
                self.reservoir.append(duration)
            else:
                slot = rng.randrange(self.count)
                if slot < RESERVOIR_SIZE:
                    self.reservoir[slot] = duration
        if first and self.first_phases is None:
            self.first_s, self.first_graph_s = duration, graph
            self.first_measured = bool(weight)
            if weight:
                self.first_phases, self.first_teardown_s = phases, teardown_s
            else:
                self.first_phases = dict.fromkeys(PHASES, 0.0)
                self.first_phases.update(graph_creation=graph, other=max(0.0, duration - graph))
            return
        if weight and not profiled:
            self.phase_calls += 1
            self.weighted_teardown += teardown_s * weight
            split = self.weighted_split
            for name, seconds in phases.items():
                split[name] = split.get(name, 0.0) + seconds * weight

    # -- the estimate ------------------------------------------------------------------
    def steady_count(self) -> int:
        return self.count - (1 if self.first_phases is not None else 0)

    def _weights(self, pooled: tuple | None) -> tuple[dict, float]:
        """(weighted split, weighted teardown) the steady estimate rests on: this call site's own
        sampled calls, or, with none, ``pooled``: the same target's other call sites together."""
        if self.phase_calls:
            return self.weighted_split, self.weighted_teardown
        return pooled if pooled is not None else ({}, 0.0)

    def _scale(self, split: dict) -> float:
        """Seconds of steady wall time per weighted sampled second of ``split``, outside graph creation."""
        weighed = sum(s for name, s in split.items() if name != "graph_creation")
        rest = (self.total_s - self.first_s) - (self.graph_s - self.first_graph_s)
        return max(0.0, rest) / weighed if weighed > 0 else 0.0

    def steady_phases(self, pooled: tuple | None = None) -> dict:
        """Seconds per phase per call after the first; they add up to ``(total_s - first_s) /
        (count - 1)``. Graph creation is the measured mean; the rest of the wall time is split in
        the proportions of the sampled calls' weighted phases. ``{}`` with no call after the first."""
        calls = self.steady_count()
        if calls <= 0:
            return {}
        out = dict.fromkeys(PHASES, 0.0)
        graph = self.graph_s - self.first_graph_s
        out["graph_creation"] = graph / calls
        split, _ = self._weights(pooled)
        scale = self._scale(split)
        if scale <= 0:
            out["other"] += max(0.0, (self.total_s - self.first_s) - graph) / calls
            return out
        for name, seconds in split.items():
            if name != "graph_creation":
                out[name] = out.get(name, 0.0) + seconds * scale / calls
        return out

    def phases(self, pooled: tuple | None = None) -> dict:
        """Seconds per phase over all calls: the first call's split plus the steady split times
        the calls after it; they add up to ``total_s``."""
        out = dict.fromkeys(PHASES, 0.0)
        for name, seconds in (self.first_phases or {}).items():
            out[name] = out.get(name, 0.0) + seconds
        calls = self.steady_count()
        for name, seconds in self.steady_phases(pooled).items():
            out[name] = out.get(name, 0.0) + seconds * calls
        return out

    def steady_teardown(self, pooled: tuple | None = None) -> float:
        """Of ``steady_phases(pooled)["data_adapter"]``, the seconds per call after the call's
        tf.data iterator was released."""
        calls = self.steady_count()
        if calls <= 0:
            return 0.0
        split, teardown = self._weights(pooled)
        return teardown * self._scale(split) / calls

    def teardown(self, pooled: tuple | None = None) -> float:
        """Of ``phases(pooled)["data_adapter"]``, the seconds after the calls' tf.data iterators
        were released."""
        return self.first_teardown_s + self.steady_teardown(pooled) * self.steady_count()


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


class Collector:
    """Thread-safe, bounded store of raw events from every hook."""

    def __init__(self, seed: int = 0) -> None:
        self.lock = threading.Lock()
        self.functions: dict[tuple, FunctionStats] = {}
        self.calls: dict[tuple, CallStats] = {}
        self.samples: list[tuple] = []
        self.sample_count = 0
        self.warnings: dict[str, int] = {}
        self._rng = random.Random(seed)

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
            stats.trace_s += trace["duration_s"]
            trace["index"] = stats.trace_count
            stats.object_count = max(stats.object_count, trace.get("object_index", 0))
            stats.model = trace.get("model", stats.model)
            stats.role = trace.get("role", stats.role)
            stats.model_created_at = trace.get("model_created_at") or stats.model_created_at
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
                 thread: str = "", profiled: bool = False, batch: int | None = None, weight: int = 1,
                 teardown_s: float = 0.0, training: bool = False, caller: dict | None = None,
                 input_spec=None, first: bool = True) -> None:
        """One finished call; ``phases`` is its own dict, kept without a copy. ``weight``: how many
        calls its phase split stands for (0: only its wall time and graph creation were measured).
        ``teardown_s``: of its data_adapter seconds, those after its tf.data iterator was released.
        ``first``: the sampler saw it as its call site's first call."""
        self.add_calls([(api, target, call_site, input_signature, start, duration, phases, thread, profiled,
                         batch, weight, teardown_s, training, caller, input_spec, first)])

    def add_calls(self, records: list[tuple]) -> None:
        """A batch of finished calls, as ``add_call``'s arguments in order (one lock for all)."""
        with self.lock:
            for record in records:
                self._add_call(*record)

    def _add_call(self, api, target, call_site, input_signature, start, duration, phases, thread, profiled,
                  batch, weight, teardown_s, training, caller, input_spec, first) -> None:
        key = (api, target, call_site, input_signature, training)
        stats = self.calls.get(key)
        if stats is None:
            stats = self.calls[key] = CallStats(api, target, call_site, input_signature, training, caller,
                                                input_spec, batch=batch)
        elif stats.input_spec is None and input_spec is not None:
            stats.input_spec = input_spec
        stats.add(duration, self._rng, phases, weight, teardown_s, profiled, first)
        self.sample_count += 1
        # A tuple now, a dict at export.
        sample = (api, target, call_site, start, duration, thread, profiled, phases, weight, teardown_s)
        if len(self.samples) < MAX_CALL_SAMPLES:
            self.samples.append(sample)
        else:
            slot = self._rng.randrange(self.sample_count)
            if slot < MAX_CALL_SAMPLES:
                self.samples[slot] = sample

    # -- export -------------------------------------------------------------------
    def sections(self) -> dict:
        """The recording sections built from what was collected (called once, at the end)."""
        with self.lock:
            functions = [_function_section(s) for s in self.functions.values()]
            # (api, target) -> (weighted split, weighted teardown) of its sampled calls after each
            # site's first, all sites and inputs: what a site with none of its own borrows
            splits: dict = {}
            teardowns: dict = {}
            for stats in self.calls.values():
                if stats.phase_calls:
                    key = (stats.api, stats.target)
                    into = splits.setdefault(key, dict.fromkeys(PHASES, 0.0))
                    for name, seconds in stats.weighted_split.items():
                        into[name] = into.get(name, 0.0) + seconds
                    teardowns[key] = teardowns.get(key, 0.0) + stats.weighted_teardown
            pooled = {key: (split, teardowns[key]) for key, split in splits.items()}
            calls = [_call_section(s, pooled.get((s.api, s.target))) for s in self.calls.values()]
            samples = [_sample_section(s) for s in sorted(self.samples, key=lambda s: s[3])]
            warnings = [{"message": m, "count": n} for m, n in self.warnings.items()]
        totals = dict.fromkeys(PHASES, 0.0)
        wall = 0.0
        for call in calls:
            wall += call["total_s"]
            for name in PHASES:
                totals[name] += call["phases"].get(name, 0.0)
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
            "call_samples_total": self.sample_count,
        }


def _sample_section(sample: tuple) -> dict:
    """A call of the timeline; its ``phases`` only if it was a sampled call."""
    api, target, call_site, start, duration, thread, profiled, phases, weight, teardown_s = sample
    out = {"api": api, "target": target, "call_site": call_site, "start_s": start,
           "duration_s": duration, "thread": thread, "profiled": profiled,
           "graph_s": phases.get("graph_creation", 0.0)}
    if weight:
        out["phases"] = dict(phases)
        if teardown_s:
            out["data_adapter_teardown_s"] = teardown_s
    return out


def _percentile(sorted_values: list, q: float) -> float:
    if not sorted_values:
        return 0.0
    rank = q * (len(sorted_values) - 1)
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def _call_section(stats: CallStats, pooled: tuple | None) -> dict:
    values = sorted(stats.reservoir)
    steady = stats.steady_count()
    # No sampled call after the first here: the steady split (outside graph creation) is that of
    # the target's other call sites.
    borrowed = not stats.phase_calls and steady > 0 and stats._scale(stats._weights(pooled)[0]) > 0
    return {
        "api": stats.api,
        "target": stats.target,
        "call_site": stats.call_site,
        "caller": stats.caller,
        "training": stats.training,
        "input_signature": stats.input_signature,
        "input_spec": stats.input_spec,
        "batch": stats.batch,
        "count": stats.count,
        "measured_count": stats.count,
        "total_s": stats.total_s,
        "median_s": _percentile(values, 0.5),
        "p95_s": _percentile(values, 0.95),
        "first_s": stats.first_s,
        "max_s": stats.max_s,
        "phases": stats.phases(pooled),
        "first_phases": dict(stats.first_phases or {}),
        "first_call_measured": stats.first_measured,
        "steady_phases": stats.steady_phases(pooled),
        "phase_calls": stats.phase_calls,
        "phase_split_pooled": borrowed,
        "data_adapter_teardown_s": stats.teardown(pooled),
        "steady_teardown_s": stats.steady_teardown(pooled),
        "profiled_calls": stats.profiled,
        "profiled_median_s": _percentile(sorted(stats.profiled_s), 0.5) if stats.profiled_s else None,
    }


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
    }
