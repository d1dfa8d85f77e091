"""One call site's statistics: what each of its calls adds, and its entry in the recording.

Why a module of its own: the Collector (collector.py) stores every hook's events under one lock;
a call site's arithmetic (the first call apart, the reservoirs, the steady split estimated from
the sampled calls, the calls the timed-call wrapper keeps in place) is a job of its own, read by
the memory probe too (``count`` and ``light`` at sampled calls).

A call site's entry (``CallStats.section``) reports its first call apart (``first_phases``: tracing,
first-run setup) from the calls after it. ``steady_phases`` is what a normal call after the
first costs, per call: it adds up to the mean wall time of the unprofiled calls after the
first (the profilers' own slowdown stays out of it, as it stays out of ``median_s``); its
graph creation is their measured mean, the rest is split in the shares of the sampled calls
(the ratio estimator of sampling.py, on ``phase_calls`` samples). ``phases``, the whole call
site, adds up to ``total_s``: the first call's split, the graph creation measured on every
later call (profiled ones included: a profiled call that traces still spent that time
tracing), and the rest of their wall time in the steady shares.

Cost: per call, the timed-call wrapper's few list items (``light``) or ``add``; the rest once, at
the end.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import repeat

from ..recording import PHASES
from . import steps as training_steps
from .sampling import Reservoir, kept_samples
from .steps import percentile as _percentile

RESERVOIR_SIZE = 512
# The phases of a timeline entry for a call kept in place (``add_light``): none measured, no graph
# creation. Shared by all such entries and never changed (the export reads its graph_creation).
NO_PHASES = dict.fromkeys(PHASES, 0.0)


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
    # Unsampled, unprofiled calls after the first that the timed-call wrapper kept in place and
    # not yet added here: flat, (start, duration, the thread's CallStack) per call (``add_light``).
    light: list = field(default_factory=list, repr=False, compare=False)

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
        self.durations.offer(duration)
        if sampled:
            self._basis_cache = None
            self.splits.offer((max(0.0, duration - graph), phases, teardown_s))

    def add_light(self, timeline: Reservoir) -> None:
        """The calls waiting in ``light`` (the collector's lock held), as ``add`` would add each,
        and offered to ``timeline``: a batch at a time, so that the wrapper's per-call part is
        three list items."""
        light = self.light
        pending = light[:]
        del light[:len(pending)]  # (other threads append behind them meanwhile)
        durations = pending[1::3]
        count = len(durations)
        if not count:
            return
        self.count += count
        self.total_s += sum(durations)
        longest = max(durations)
        if longest > self.max_s:
            self.max_s = longest
        self.durations.extend(durations)
        starts, stacks = pending[0::3], pending[2::3]
        api, target, site = self.api, self.target, self.call_site
        if len(timeline.items) < timeline.size:  # filling: every entry is kept, made in C
            timeline.extend(list(zip(repeat(api), repeat(target), repeat(site), starts, durations,
                                     [stack.thread for stack in stacks], repeat(False), repeat(NO_PHASES),
                                     repeat(0), repeat(0.0))))
            return

        def entry(index: int) -> tuple:
            return api, target, site, starts[index], durations[index], stacks[index].thread, False, NO_PHASES, 0, 0.0

        timeline.extend_made(count, entry)  # full: only the few it keeps are made

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

    def section(self, pooled: tuple | None) -> dict:
        """This call site's ``calls`` entry in the recording."""
        values = sorted(self.durations.items)
        return {
            "api": self.api,
            "target": self.target,
            "call_site": self.call_site,
            "caller": self.caller,
            "training": self.training,
            "input_signature": self.input_signature,
            "input_spec": self.input_spec,
            "batch": self.batch,
            "count": self.count,
            "total_s": self.total_s,
            "median_s": _percentile(values, 0.5),
            "p95_s": _percentile(values, 0.95),
            # The reservoir the median is read from (at most RESERVOIR_SIZE unprofiled calls' wall
            # times, the first call's among them): ``tfdiag diff`` bootstraps its interval from it.
            "durations_sample_s": list(self.durations.items),
            "first_s": self.first_s,
            "max_s": self.max_s,
            "phases": self.phases(pooled),
            "first_phases": dict(self.first_phases or {}),
            "first_call_measured": self.first_measured,
            "steady_phases": self.steady_phases(pooled),
            "phase_calls": self.phase_calls,
            # No sampled call after the first here: the steady shares are the target's other call sites'.
            "phase_split_pooled": self.borrowed(pooled),
            "data_adapter_teardown_s": self.teardown(pooled),
            "steady_teardown_s": self.steady_teardown(pooled),
            "profiled_calls": self.profiled,
            **(self.steps.section(self.count) if self.steps is not None else {}),
        }


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


