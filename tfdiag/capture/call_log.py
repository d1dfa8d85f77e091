"""The per-thread log of finished timed calls, handed to the collector a batch at a time.

The timed-call wrapper (timed_calls.py) writes each call it records into its thread's buffer:
a flat list of plain values, FIELDS per call, so that a buffered call holds nothing the
garbage collector tracks (why: timed_calls.py). ``_flush`` turns a batch of them into the
collector's records, column by column; a flush runs once per FLUSH_EVERY calls and its cost
per call counts as the wrapper's does. ``settle`` adds a call site's calls kept in place (its
``light`` list) to its statistics. Nothing here runs on an unsampled call's path but ``settle``,
once per many calls.
"""

from __future__ import annotations

import threading
from itertools import compress, repeat

from . import callsite
from .collector import Collector

FLUSH_EVERY = 256
MAX_THREAD_BUFFERS = 256
# Values per call in a thread's buffer, in this order (see ``_flush``): api, signature, batch,
# caller's code, its bytecode offset, training, target name, start, duration, phase totals,
# profiled, weight, teardown seconds, the call site's sampler state on its first call (else None), input
# spec, the frame's extra.
FIELDS = 16



class CallLog:
    """Per-thread buffers of finished calls, handed to the collector in batches."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.local = threading.local()  # per thread: ``entry``, (thread name, flat buffer of finished calls)
        self._buffers: list[tuple[tuple[str, list], threading.Thread]] = []  # ((name, buffer), thread)
        self._lock = threading.Lock()

    def new_buffer(self) -> tuple[str, list]:
        thread = threading.current_thread()
        entry = self.local.entry = (thread.name, [])
        with self._lock:
            finished = []
            if len(self._buffers) >= MAX_THREAD_BUFFERS:  # a thread per request: keep the live ones
                live = []
                for entry_thread in self._buffers:
                    (live if entry_thread[1].is_alive() else finished).append(entry_thread)
                self._buffers = live
            self._buffers.append((entry, thread))
        for (name, buffer), _ in finished:
            self._flush(name, buffer)
        return entry

    def first_spec(self, api: str, capture, args: tuple, kwargs: dict):
        """A call site's first call: its input described as a structure (None, with a warning, if it cannot be)."""
        try:
            return capture.input_spec(args, kwargs)
        except Exception as exc:
            self.collector.warn(f"could not describe a {api} input: {exc.__class__.__name__}: {exc}")
            return None

    def flush_full(self, entry: tuple[str, list]) -> None:
        """A thread's buffer reached FLUSH_EVERY calls (from the wrapper; never raises)."""
        try:
            self._flush(*entry)
        except Exception as exc:
            self.collector.warn(f"could not record calls: {exc.__class__.__name__}: {exc}")

    def buffer(self, values: tuple, now: bool = False) -> None:
        """One finished call's FIELDS values into this thread's buffer (the wrapper's rare paths);
        ``now``: and into the collector at once (a call kept in place that traced: its call site's
        count stays current for the memory probe, which reads it at sampled calls)."""
        try:
            entry = self.local.entry
        except AttributeError:
            entry = self.new_buffer()
        entry[1].extend(values)
        if now or len(entry[1]) >= FLUSH_EVERY * FIELDS:
            self.flush_full(entry)

    def link(self, state: list):
        """A call site's statistics for the wrapper to keep its unsampled calls in place
        (``state``: its sampler state): once, at its first unsampled call, this thread's buffer is
        flushed (its first call is most often there), else every thread's (a warm-up call on
        the main thread, then a pool of threads serving: its record would wait in the main
        thread's buffer, and every call of theirs take the slow path until it was flushed); False
        while the collector does not have it (its first call has not ended yet: a flush from the
        thread that has it links it later)."""
        entry = getattr(self.local, "entry", None)
        if entry is not None:
            self.flush_full(entry)
        if state[2] is None:
            try:
                self.flush_all()
            except Exception as exc:
                self.collector.warn(f"could not record calls: {exc.__class__.__name__}: {exc}")
        if state[2] is None:
            state[2] = False
        return state[2]

    def settle(self, stats) -> None:
        """A call site's calls kept in place into its statistics (from the wrapper; never raises)."""
        collector = self.collector
        try:
            with collector.lock:
                stats.add_light(collector.timeline)
        except Exception as exc:
            collector.warn(f"could not record calls: {exc.__class__.__name__}: {exc}")

    def observe(self, observers, api: str, target, args: tuple, kwargs: dict) -> None:
        for observer in observers:
            try:
                observer(api, target, args, kwargs)
            except Exception as exc:
                self.collector.warn(f"call observer failed: {exc.__class__.__name__}: {exc}")

    def flush_all(self) -> None:
        """Every thread's buffered calls into the collector (at the end of the diagnosis, or to
        link a call site whose first call another thread made). A thread's buffer is flushed
        under the lock; its owner appends a whole call in one ``extend`` meanwhile (atomic)."""
        with self._lock:
            entries = [entry for entry, _ in self._buffers]
        for name, buffer in entries:
            self._flush(name, buffer)

    def _flush(self, thread: str, buffer: list) -> None:
        """A thread's buffered calls, as the collector's records (column by column, in C where it
        can be: a flush runs once per FLUSH_EVERY calls, and its cost per call counts as the
        wrapper's does)."""
        with self._lock:  # the owner thread and the final flush may both get here
            pending = buffer[:]
            del buffer[:len(pending)]
        count = len(pending) // FIELDS
        if not count:
            return
        (apis, signatures, batches, codes, offsets, trainings, names, starts, durations, totals, profiled,
         weights, teardowns, sites, specs, extras) = (pending[index::FIELDS] for index in range(FIELDS))
        firsts = [site is not None for site in sites]
        # Call-site texts, looked up once per calling code object and offset (a loop's calls share one).
        keys = list(zip(map(id, codes), offsets))
        site_text, line_at = callsite.site_text, callsite.line_at
        texts = {key: site_text(None if code is None else (code, line_at(code, key[1])))
                 for key, code in dict(zip(keys, codes)).items()}
        # A call site's first call brings what is said once per call site: its caller.
        callers = [None] * count
        for index in compress(range(count), firsts):
            if codes[index] is not None:
                callers[index] = callsite.caller_of(codes[index])
        site_texts = list(map(texts.__getitem__, keys))
        self.collector.add_calls(list(zip(apis, names, site_texts, signatures, starts, durations,
                                          totals, repeat(thread, count), profiled, batches, weights, teardowns,
                                          trainings, callers, specs, firsts, extras)))
        # Each first call's sampler state gets its call site's statistics: the wrapper keeps the
        # site's unsampled calls in them from now on.
        calls = self.collector.calls
        for index in compress(range(count), firsts):
            stats = calls.get((apis[index], names[index], site_texts[index], signatures[index], trainings[index]))
            if stats is not None:
                sites[index][2] = stats
