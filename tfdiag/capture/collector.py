"""The Collector: where hooks append what they saw, in bounded memory.

Hooks run on the user's threads, so every mutation takes one lock. Per call
site only aggregates, a fixed-size reservoir of durations and a fixed-size
reservoir of sampled phase splits are kept, and each function keeps its first
``MAX_TRACES_KEPT`` traces in full, so memory stays bounded however long the
diagnosed program runs.

A call site's entry (``_call_section``) reports its first call apart (``first_phases``: tracing,
first-run setup) from the calls after it. ``steady_phases`` is what a normal call after the
first costs, per call: it adds up to the mean wall time of the unprofiled calls after the
first (the profilers' own slowdown stays out of it, as it stays out of ``median_s``); its
graph creation is their measured mean, the rest is split in the shares of the sampled calls
(the ratio estimator of sampling.py, on ``phase_calls`` samples). ``phases``, the whole call
site, adds up to ``total_s``: the first call's split, the graph creation measured on every
later call (profiled ones included: a profiled call that traces still spent that time
tracing), and the rest of their wall time in the steady shares.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

from ..recording import PHASES
from . import steps as training_steps
from .steps import percentile as _percentile
from .sampling import Reservoir, kept_samples

MAX_TRACES_KEPT = 200
RESERVOIR_SIZE = 512
MAX_CALL_SAMPLES = 2000
MAX_WARNINGS = 100
MAX_INSTANCES_TRACKED = 10_000


def _basis(samples: list) -> tuple[dict, float, float]:
    """What a steady split rests on: ``(seconds per phase outside graph creation, teardown
    seconds, wall seconds outside graph creation)`` summed over ``samples``."""
    phases: dict = dict.fromkeys(PHASES, 0.0)
    teardown = wall = 0.0
    for rest, split, teardown_s in samples:
        wall += rest
        teardown += teardown_s
        for name, seconds in split.items():
            if name != "graph_creation":
                phases[name] = phases.get(name, 0.0) + seconds
    return phases, teardown, wall


@dataclass
class CallStats:
    """One call site (api, target, calling line, input signature, training): every call's wall
    time and graph creation; the first call's split on its own; the unprofiled calls after the
    first (their wall time, graph creation, and the sampled ones' splits)."""

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
    durations: Reservoir | None = None  # unprofiled calls' durations (made by the collector)
    first_s: float = 0.0
    first_phases: dict | None = None  # the first call's split (None until it is recorded)
    first_graph_s: float = 0.0
    first_teardown_s: float = 0.0
    first_measured: bool = False  # False: a profiler took the first call (only its graph creation is known)
    # Profiled calls after the first (the unprofiled ones are the rest: ``_normal_call``).
    later_profiled: int = 0
    later_profiled_s: float = 0.0
    later_profiled_graph_s: float = 0.0
    # Sampled unprofiled calls after the first, each (wall outside graph creation, phases,
    # teardown), all of equal weight (sampling.py).
    splits: Reservoir | None = None
    profiled: int = 0  # calls made under a profiler: in count, total_s and graph creation, not in the steady split
    steps: training_steps.SiteSteps | None = None  # fit/evaluate/...: their steps (steps.py)
    _basis_cache: tuple | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.durations is None:
            self.durations = Reservoir(RESERVOIR_SIZE, random.Random(0))
        if self.splits is None:
            self.splits = Reservoir(RESERVOIR_SIZE, random.Random(1))

    @property
    def samples(self) -> list:
        """The sampled calls after the first: ``(wall outside graph creation, phases, teardown)``."""
        return self.splits.items

    def add(self, duration: float, phases: dict, sampled, teardown_s: float = 0.0,
            profiled: bool = False, first: bool = True) -> None:
        """One call (per call of the user's: the common case, an unsampled unprofiled call after
        the first, is kept short). ``sampled``: its full split was measured. ``first``: the
        sampler saw it as its call site's first (the first such call recorded is the call site's
        first call; calls before it, from other threads, are steady)."""
        self.count += 1
        self.total_s += duration
        graph = phases.get("graph_creation", 0.0)
        self.graph_s += graph
        if first and self.first_phases is None:
            if self._first(duration, graph, phases, sampled, teardown_s, profiled):
                return
            sampled = False  # the first call is reported on its own, not a sample of the steady state
        elif profiled:
            self.profiled += 1
            self.later_profiled += 1
            self.later_profiled_s += duration
            self.later_profiled_graph_s += graph
            return
        if duration > self.max_s:
            self.max_s = duration
        durations = self.durations  # Reservoir.offer, inline: it runs per call
        durations.seen += 1
        if len(durations.items) < durations.size:
            durations.items.append(duration)
        elif durations.seen >= durations.next:
            durations.keep(duration)
        if sampled:
            self._basis_cache = None
            self.splits.offer((max(0.0, duration - graph), phases, teardown_s))

    def _first(self, duration: float, graph: float, phases: dict, sampled, teardown_s: float, profiled: bool) -> bool:
        """The call site's first call, apart; True if a profiler took it (it is then not in the percentiles)."""
        self.first_s, self.first_graph_s = duration, graph
        self.first_measured = bool(sampled) and not profiled
        if self.first_measured:
            self.first_phases, self.first_teardown_s = phases, teardown_s
        else:
            self.first_phases = dict.fromkeys(PHASES, 0.0)
            self.first_phases.update(graph_creation=graph, other=max(0.0, duration - graph))
        self.profiled += bool(profiled)
        return profiled

    # -- the estimate ------------------------------------------------------------------
    def steady_count(self) -> int:
        return self.count - (1 if self.first_phases is not None else 0)

    @property
    def phase_calls(self) -> int:
        """The sampled calls after the first that the steady shares rest on."""
        return len(self.kept())

    def kept(self) -> list:
        return kept_samples(self.samples)

    def basis(self) -> tuple[dict, float, float]:
        """This call site's own ``_basis`` (of its kept samples), computed once per change."""
        if self._basis_cache is None:
            self._basis_cache = _basis(self.kept())
        return self._basis_cache

    def _shares(self, pooled: tuple | None) -> tuple[dict, float] | None:
        """(share of each phase, share of iterator teardown) of the wall time outside graph
        creation: this call site's own samples, or, with none, ``pooled`` (the same target's
        other call sites together); None when there is nothing to go by."""
        phases, teardown, wall = self.basis() if self.samples else (pooled or ({}, 0.0, 0.0))
        if wall <= 0:
            return None
        return {name: seconds / wall for name, seconds in phases.items()}, teardown / wall

    def borrowed(self, pooled: tuple | None) -> bool:
        """True when the steady shares come from the target's other call sites."""
        return not self.samples and self.steady_count() > 0 and self._shares(pooled) is not None

    def _normal_call(self) -> tuple[float, float]:
        """(wall, graph creation) of a normal call after the first: the mean of the unprofiled
        ones (of all of them, if a profiler took every call after the first)."""
        calls = self.steady_count()
        wall, graph = self.total_s - self.first_s, self.graph_s - self.first_graph_s
        plain = calls - self.later_profiled
        if plain > 0:
            return (wall - self.later_profiled_s) / plain, (graph - self.later_profiled_graph_s) / plain
        return wall / calls, graph / calls

    def steady_phases(self, pooled: tuple | None = None) -> dict:
        """Seconds per phase of a normal call after the first; they add up to the mean wall time
        of the unprofiled calls after the first. ``{}`` with no call after the first."""
        if self.steady_count() <= 0:
            return {}
        wall, graph = self._normal_call()
        return _spread(graph, max(0.0, wall - graph), self._shares(pooled))

    def phases(self, pooled: tuple | None = None) -> dict:
        """Seconds per phase over all calls: the first call's split, then every later call's
        graph creation and the rest of their wall time in the steady shares; they add up to ``total_s``."""
        later = self.steady_count()
        out = dict.fromkeys(PHASES, 0.0)
        if later > 0:
            graph = self.graph_s - self.first_graph_s
            out = _spread(graph, max(0.0, (self.total_s - self.first_s) - graph), self._shares(pooled))
        for name, seconds in (self.first_phases or {}).items():
            out[name] = out.get(name, 0.0) + seconds
        return out

    def steady_teardown(self, pooled: tuple | None = None) -> float:
        """Of ``steady_phases(pooled)["data_adapter"]``, the seconds after the call's tf.data
        iterator was released."""
        shares = self._shares(pooled)
        if self.steady_count() <= 0 or shares is None:
            return 0.0
        wall, graph = self._normal_call()
        return max(0.0, wall - graph) * shares[1]

    def teardown(self, pooled: tuple | None = None) -> float:
        """Of ``phases(pooled)["data_adapter"]``, the seconds after the calls' tf.data iterators
        were released."""
        shares = self._shares(pooled)
        if self.steady_count() <= 0 or shares is None:
            return self.first_teardown_s
        rest = (self.total_s - self.first_s) - (self.graph_s - self.first_graph_s)
        return self.first_teardown_s + max(0.0, rest) * shares[1]


def _spread(graph: float, rest: float, shares: tuple | None) -> dict:
    """``graph`` seconds of graph creation and ``rest`` seconds in ``shares`` (all to ``other``
    when there are none)."""
    out = dict.fromkeys(PHASES, 0.0)
    out["graph_creation"] = graph
    if shares is None:
        out["other"] += rest
        return out
    for name, share in shares[0].items():
        out[name] = out.get(name, 0.0) + rest * share
    return out


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
            calls = [_call_section(s, pooled.get((s.api, s.target))) for s in self.calls.values()]
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


def _call_section(stats: CallStats, pooled: tuple | None) -> dict:
    values = sorted(stats.durations.items)
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
        "total_s": stats.total_s,
        "median_s": _percentile(values, 0.5),
        "p95_s": _percentile(values, 0.95),
        # The reservoir the median is read from (at most RESERVOIR_SIZE unprofiled calls' wall
        # times, the first call's among them): ``tfdiag diff`` bootstraps its interval from it.
        "durations_sample_s": list(stats.durations.items),
        "first_s": stats.first_s,
        "max_s": stats.max_s,
        "phases": stats.phases(pooled),
        "first_phases": dict(stats.first_phases or {}),
        "first_call_measured": stats.first_measured,
        "steady_phases": stats.steady_phases(pooled),
        "phase_calls": stats.phase_calls,
        # No sampled call after the first here: the steady shares are the target's other call sites'.
        "phase_split_pooled": stats.borrowed(pooled),
        "data_adapter_teardown_s": stats.teardown(pooled),
        "steady_teardown_s": stats.steady_teardown(pooled),
        "profiled_calls": stats.profiled,
        **(stats.steps.section(stats.count) if stats.steps is not None else {}),
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
        "training_step": stats.training_step,
    }
