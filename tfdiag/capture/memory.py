"""Resident memory and the counts that explain it, read at the start of sampled calls.

Why: "memory grows when I call predict() in a loop" has a few usual causes (a tf.function that
keeps a trace per call, models or tf.data iterators kept alive, the user's own lists), and the
counts that tell them apart are cheap to read at the moments tfdiag already stops at.

When: at the start of each call the phase sampler picks for the full split (sampling.py) the
sampler calls ``MemoryProbe.reading(state)``; unsampled calls pay nothing. A reading is a point
of its call site's series: ``[calls done here, resident bytes, traces so far (all functions but
tf.data's), live Keras models, live tf.data iterators, seconds since the probe started]`` plus,
where TensorFlow has logical GPUs, the bytes its allocator holds per GPU (``get_memory_info``;
if that fails, the series goes on without it).

What it costs: one ``pread`` of ``/proc/self/statm`` (about 1.5 us; elsewhere ``getrusage``'s
peak RSS), three counter reads and a lock, on one call in ``phase_every``. Models and iterators
are counted in WeakSets filled by ``__init__`` hooks (~1 us per iterator against predict()'s
tens of ms). At most ``MAX_POINTS`` points per call site (when full, every other point goes and
one reading in two, then four, ... is kept) and ``MAX_SERIES`` call sites: at most ~10 MB.

Growth suspected (a series rose by ``SUSPECT_BYTES`` over its second half and did not level off,
by analysis/memory.py's ``growth_stopped``): once per run, a full ``gc.collect()`` (~0.2 s with
TensorFlow loaded), so that cyclic garbage Python frees late is not taken for growth (the
analysis reads the slope after it). If the counts do not explain the growth, a tracemalloc
window (``TRACE_FRAMES`` frames) opens for the next ``WINDOW_CALLS`` timed calls or ``WINDOW_S``
seconds (a daemon timer closes it when no timed call comes; at the latest the diagnosis' end),
closing after another full collection: the blocks still alive, grouped by the innermost frame of
the user's code (TensorFlow, Keras, site-packages, the standard library, tfdiag skipped), name
the user's line that keeps them. tracemalloc slows the window's calls ~10x
(benchmarks/memory_overhead.py); collection plus snapshot take ~0.2-0.5 s, once. The window is a
gate (gates.py): its calls (those that start while it closes too) are marked ``profiled`` and stay
out of the timings; a child forked from the run just stops tracemalloc there; no reading is
taken while it is open, and the analysis reads only points after it (``window_closed_after``:
tracemalloc's memory is tfdiag's). It never opens if the program traces allocations itself.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
import time
import tracemalloc
import weakref

from ..growth import growth_stopped, theil_sen
from .call_stats import CallStats
from .collector import Collector
from .memory_lines import user_lines
from .patching import Patcher, guarded

MAX_POINTS = 256
MAX_SERIES = 200
SUSPECT_POINTS = 8  # a series is judged for growth once it has this many points ...
SUSPECT_CALLS = 50  # ... and this many calls
SUSPECT_BYTES = 4 << 20  # growth over its second half that opens the check (a collection, tracemalloc)
WINDOW_CALLS = 16  # the tracemalloc window closes after this many timed calls ...
WINDOW_S = 3.0  # ... or once it has been open this long (a predict() call runs ~10x slower under it)
TRACE_FRAMES = 48  # deep enough to reach the user's line from an allocation inside predict()
TIMER_NAME = "tfdiag-memory-window"

KERAS3_MODEL = "keras.src.models.model"
TF_KERAS_TRAINING = "tf_keras.src.engine.training"
ITERATOR_OPS = "tensorflow.python.data.ops.iterator_ops"


class _Rss:
    """The process's resident bytes: ``/proc/self/statm`` (kept open, read with pread), else
    ``getrusage``'s peak (``source`` says which)."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.fd = None
        self.pid = None
        self.source = None
        try:
            self._open()
            self.read()
            self.source = "statm"
        except (OSError, ValueError, IndexError, AttributeError):
            self.close()
            self.source = "maxrss" if _maxrss() is not None else None

    def _open(self) -> None:
        self.fd = os.open("/proc/self/statm", os.O_RDONLY)
        self.pid = os.getpid()

    def read(self) -> int:
        if self.fd is None:
            return _maxrss() or 0
        if self.pid != os.getpid():  # a forked child: /proc/self was the parent when opened
            os.close(self.fd)
            self._open()
        return int(os.pread(self.fd, 128, 0).split()[1]) * self.page

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def _maxrss() -> int | None:
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


class _Series:
    __slots__ = ("state", "points", "stride", "readings", "last", "collected_after", "window_closed_after",
                 "judged")

    def __init__(self, state: list) -> None:
        self.state = state  # the sampler's state of the call site: its third item becomes its CallStats
        self.points: list = []
        self.stride = 1
        self.readings = 0
        self.last = None
        self.collected_after = None  # calls done here when the forced collection ran
        self.window_closed_after = None  # calls done here (last reading) when the tracemalloc window closed
        self.judged = 0  # points when growth_stopped last said this series levelled off

    def add(self, point: list) -> None:
        self.last = point
        if self.readings % self.stride == 0:
            self.points.append(point)
            if len(self.points) >= MAX_POINTS:
                del self.points[1::2]
                self.stride *= 2
        self.readings += 1


class MemoryProbe:
    """Installs the model and iterator counters and gives the sampler its ``reading``."""

    def __init__(self, collector: Collector, clock=time.perf_counter, gates: list | None = None) -> None:
        """``gates``: the timed calls' profiler gates (gates.py), where the tracemalloc window goes
        while it is open (None: no window)."""
        self.collector = collector
        self.clock = clock
        self.gates = gates
        self.rss = _Rss()
        self.t0 = clock()
        self.gpu_off = False  # reading the GPU failed once: series go on without it
        self.models: weakref.WeakSet = weakref.WeakSet()
        self.iterators: weakref.WeakSet = weakref.WeakSet()
        self.lock = threading.RLock()
        self.series: dict[int, _Series] = {}
        self.dropped = 0  # call sites past MAX_SERIES
        self.gpus: list[str] | None = None  # found at the first reading once TensorFlow is loaded
        self.collection: dict | None = None
        self.window: _Window | None = None
        self.tracemalloc: dict | None = None
        self.notes: list[str] = []
        self._checked = False  # the once-per-run check (collection, tracemalloc window) has run
        self._busy = False  # a collection or window runs now (a finalizer may call back into a reading)
        self.closed = False  # the diagnosis ended: no window opens after it (set and read under the lock)
        self.pid = os.getpid()  # close() in a child forked from the run abandons the probe instead

    # -- installing ----------------------------------------------------------------
    def install(self, patcher: Patcher, sampler) -> None:
        warn = self.collector.warn
        for module, owner in ((KERAS3_MODEL, "Model"), (TF_KERAS_TRAINING, "Model")):
            patcher.when_imported(module, guarded(warn, "memory: model counting", self._count, patcher,
                                                  owner, self.models))
        patcher.when_imported(ITERATOR_OPS, guarded(warn, "memory: iterator counting", self._count, patcher,
                                                    "OwnedIterator", self.iterators))
        patcher.patch(sampler, "memory", lambda _: self.reading)

    @staticmethod
    def _count(patcher: Patcher, owner: str, live: weakref.WeakSet, module) -> None:
        cls = getattr(module, owner)

        def make(original):
            def __init__(obj, *args, **kwargs):
                original(obj, *args, **kwargs)
                try:
                    live.add(obj)
                except TypeError:  # no weak references: not counted
                    pass

            __init__.__wrapped__ = original
            return __init__

        patcher.patch(cls, "__init__", make)

    # -- per sampled call ----------------------------------------------------------------
    def reading(self, state: list) -> None:
        """A point for the call site of ``state`` (the sampler's), before its call starts.
        Never raises into the user's call."""
        if self._busy or self.window is not None:  # tracemalloc's own memory is not the program's
            return
        try:
            point = [0, self.rss.read(), self.collector.traces_total, len(self.models), len(self.iterators),
                     round(self.clock() - self.t0, 4)]
            gpu = self._gpu()
            if gpu is not None:
                point.append(gpu)
            with self.lock:
                series = self.series.get(id(state))
                new = series is None or series.state is not state
                if new:
                    if len(self.series) >= MAX_SERIES:
                        self.dropped += 1
                        return
                    series = self.series[id(state)] = _Series(state)
                point[0] = _calls_done(state, new)
                series.add(point)
                check = self._due(series)
            if check:
                self._check(*check)
        except Exception as exc:
            self.collector.warn(f"memory reading failed: {exc.__class__.__name__}: {exc}")

    def _gpu(self) -> list | None:
        if self.gpus is None:
            tf = sys.modules.get("tensorflow")
            if tf is None:
                return None
            try:
                self.gpus = [f"GPU:{i}" for i, _ in enumerate(tf.config.list_logical_devices("GPU"))]
            except Exception:
                self.gpus = []
        if not self.gpus or self.gpu_off:
            return None
        try:
            get = sys.modules["tensorflow"].config.experimental.get_memory_info
            return [int(get(name).get("current", 0)) for name in self.gpus]
        except Exception as exc:  # the resident memory is still read
            self.gpu_off = True
            self.notes.append(f"GPU memory could not be read ({exc.__class__.__name__}): resident memory only")
            return None

    def _due(self, series: _Series):
        """(what to do, series) when ``series`` calls for the once-per-run check: ``collect`` (the
        counts explain the growth) or ``trace`` (they do not: a tracemalloc window too); else None
        (under the lock)."""
        if self._checked or len(series.points) < SUSPECT_POINTS or series.last[0] < SUSPECT_CALLS:
            return None
        points = series.points
        middle = points[len(points) // 2]
        now = series.last
        if now[1] - middle[1] < SUSPECT_BYTES or points[3 * len(points) // 4][1] > now[1]:
            return None
        if series.judged and len(points) < series.judged + 4:
            return None  # levelled off a few readings ago: judged again every 4 new points
        half = points[len(points) // 2:] + ([now] if now is not points[-1] else [])
        fit = theil_sen([p[0] for p in half], [p[1] for p in half])  # levelled off, as the analysis judges it
        if fit is not None and growth_stopped(half, fit[0]) is not None:
            series.judged = len(points)
            return None
        self._checked = True
        explained = now[2] > middle[2] or now[3] > middle[3] or now[4] > middle[4]
        return ("collect" if explained else "trace"), series

    def _check(self, what: str, series: _Series) -> None:
        """Outside the lock: the forced collection, and the tracemalloc window's start."""
        self._busy = True
        try:
            if not gc.isenabled():
                self.notes.append("growth was suspected but the program disabled the garbage collector: "
                                  "no collection was forced, so uncollected garbage may count as growth")
            else:
                before = self.rss.read()
                start = self.clock()
                at = start - self.t0
                gc.collect()
                seconds = self.clock() - start
                with self.lock:
                    for other in self.series.values():
                        if other.last is not None:
                            other.collected_after = other.last[0]
                    self.collection = {"site": series.state, "after_call": series.last[0], "seconds": seconds,
                                       "at_s": round(at, 4),
                                       "rss_before": before, "rss_after": self.rss.read()}
            if what == "trace":
                if tracemalloc.is_tracing():
                    self.notes.append("the program traces its own allocations (tracemalloc): tfdiag opened "
                                      "no window, so Python allocations were not measured")
                elif self.gates is None:
                    self.notes.append("no tracemalloc window: no timed calls to open it on")
                else:
                    with self.lock:
                        if self.closed:  # the diagnosis ended during the collection
                            return
                        window = self.window = _Window(self, series)
                        tracemalloc.start(TRACE_FRAMES)
                        self.gates.append(window)  # every timed call is the window's until it closes
                        window.timer.start()
        finally:
            self._busy = False

    def _close_window(self, window: "_Window") -> None:
        """The window's end: a full collection (only what is still reachable counts), the snapshot,
        tracemalloc stopped; its top user lines kept."""
        try:
            wall = self.clock() - window.started
            start = self.clock()
            gc.collect()
            snapshot = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
            self.window = None
            with self.lock:
                for other in self.series.values():
                    if other.last is not None:
                        other.window_closed_after = other.last[0]
        lines, traced, unplaced = user_lines(snapshot)
        self.tracemalloc = {"site": window.series.state, "from_call": window.from_call,
                            "at_s": round(window.started - self.t0, 4),
                            "to_call": window.from_call + window.calls, "calls": window.calls, "seconds": wall,
                            "snapshot_s": self.clock() - start, "frames": TRACE_FRAMES, "traced_bytes": traced,
                            "unplaced_bytes": unplaced, "lines": lines}

    # -- the recording ---------------------------------------------------------------
    def close(self) -> None:
        """End any open tracemalloc window (the diagnosis ends) and stop reading; in a child
        forked from the run, ``abandon``."""
        if os.getpid() != self.pid:
            return self.abandon()
        with self.lock:
            self.closed = True
        window = self.window
        if window is not None:
            window.end()  # or waits for the timer thread that is ending it
        self.rss.close()

    def abandon(self) -> None:
        """In a child forked from the run: no lock (a parent's thread may have held one at the
        fork), no collection or snapshot; tracemalloc stops if the window was open."""
        window, self.window = self.window, None
        if window is not None:
            window.finished = True
            if tracemalloc.is_tracing():
                tracemalloc.stop()
        self.lock, self.closed, self._busy = threading.RLock(), True, False
        self.rss.close()

    def section(self) -> dict:
        """The recording's ``memory`` section (after the call log's flush: each series' call site is known)."""
        self.close()
        sites = []
        with self.lock:
            named = {}
            for series in self.series.values():
                stats = series.state[2]
                if not isinstance(stats, CallStats) or not series.points:
                    continue
                points = list(series.points)
                if series.last is not None and points[-1] is not series.last:
                    points.append(series.last)
                entry = {"api": stats.api, "target": stats.target, "call_site": stats.call_site,
                         "input_signature": stats.input_signature, "training": stats.training,
                         "calls": stats.count, "points": points, "stride": series.stride,
                         "readings": series.readings, "collected_after_call": series.collected_after,
                         "window_closed_after": series.window_closed_after}
                named[id(series.state)] = entry
                sites.append(entry)
        out = {"rss_source": self.rss.source, "max_points": MAX_POINTS, "gpu_devices": list(self.gpus or []),
               "point_fields": ["calls", "rss_bytes", "traces", "models", "iterators", "seconds"]
               + (["gpu_bytes"] if self.gpus else []),
               "sites": sites, "sites_dropped": self.dropped, "collection": None, "tracemalloc": None,
               "notes": list(self.notes)}
        if self.rss.source == "maxrss":
            out["notes"].append("no /proc/self/statm here: memory is the peak resident size, which never falls")
        out["notes"].append("traces: every function's traces so far but tf.data's (those go with their dataset), "
                            "not only this call site's; iterators: tf.data OwnedIterator objects alive")
        for key in ("collection", "tracemalloc"):
            value = getattr(self, key)
            if value is not None:
                site = named.get(id(value["site"]), {})
                out[key] = {k: v for k, v in value.items() if k != "site"}
                out[key].update({k: site.get(k) for k in ("api", "target", "call_site")})
        return out


class _Window:
    """The tracemalloc window as a gate (gates.py): it takes every timed call while it is open, so
    calls slowed by tracemalloc are marked ``profiled`` and kept out of the timings; it closes
    after ``WINDOW_CALLS`` calls or ``WINDOW_S`` seconds, whichever comes first."""

    def __init__(self, probe: MemoryProbe, series: _Series) -> None:
        self.probe = probe
        self.series = series
        self.from_call = series.last[0]
        self.started = probe.clock()
        self.calls = 0
        self.finished = False
        self.closer = None  # the thread that closes it; end() elsewhere waits on ``done``
        self.done = threading.Event()
        self.lock = threading.Lock()  # counts the calls and claims the close; never held through it
        self.timer = threading.Timer(WINDOW_S, self.end)  # no timed call may come: closes it anyway
        self.timer.name, self.timer.daemon = TIMER_NAME, True

    def start(self, api: str):
        return None if self.finished else self  # a call while it closes is slowed too: profiled

    start_first = start

    def stop(self, token) -> None:
        with self.lock:
            if self.closer is not None:
                return
            self.calls += 1
            if self.calls < WINDOW_CALLS and self.probe.clock() - self.started < WINDOW_S:
                return
        self.end()

    def end(self) -> None:
        """Close the window once (a timed call's end, the timer's thread, or the diagnosis' end)."""
        me = threading.get_ident()
        with self.lock:
            claimed = self.closer is None
            self.closer = self.closer or me
        if not claimed:
            return None if self.closer == me else self.done.wait()  # closed here already, or waits
        self.timer.cancel()
        self.probe._busy = True
        try:
            self.probe._close_window(self)
        except Exception as exc:
            self.probe.collector.warn(f"memory: tracemalloc window failed: {exc.__class__.__name__}: {exc}")
        finally:
            self.finished = True
            self.probe.window = None
            self.probe._busy = False
            self.done.set()


def _calls_done(state: list, new: bool) -> int:
    """Calls made at the call site of sampler ``state`` before the one starting now: those its
    CallStats has (flushed, and kept in place: its ``light`` list) plus its sampled calls still in a thread's buffer; before
    the collector has its first call, 0 at that first call (``new``), else it and the sampled
    calls after it (every call until then is sampled)."""
    stats = state[2]
    if isinstance(stats, CallStats):
        return stats.count + len(stats.light) // 3 + max(0, state[1] - stats.splits.seen)
    return 0 if new else state[1] + 1
