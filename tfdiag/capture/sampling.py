"""Which calls get their full phase split measured, and how the steady-state split is estimated.

Which calls. Switching the per-op phase entry points on costs a few microseconds per
TensorFlow op: a sampled eager ``model(x)`` on a tiny model takes about 5% (Keras 3) to 15%
(tf-keras) longer than one that is not. So they are switched on, per call site (the API, the
model or function, the calling line, the input's signature and the training flag), for its
first call (where one-off costs such as tracing live: it is reported on its own), for the
``first`` unprofiled calls after it, and then for each call with probability ``1 / every``,
drawn as a random gap to the next sampled call (a geometric draw: the same as deciding each
call at random, and no loop period can line up with it, but an unsampled call costs one
countdown, not a random number). Unless the user chose ``every``, a fast call site is sampled
less often, so that its sampled calls add about ``BUDGET`` (0.5%) to its time: a sampled call
costs about ``SAMPLED_CALL_S`` more than one that is not (switching the entry points on and
off, its frame and record, the memory reading). Measured call-interleaved (TF 2.21, Python
3.11, one CPU): on a small tf.function, 24 us without the memory reading when every call is
sampled, but 80-100 us at one call in 16 or fewer, and 100-190 us with the memory reading
(code run once in a few milliseconds runs out of the CPU's caches); on a custom training step
(a GradientTape and an optimizer, 0.2 ms), 190-220 us. At one in 32 that was 3-4% of a 0.1 ms
call's loop. The rate is ``1 / max(every, SAMPLED_CALL_S / (BUDGET * t))``, ``t`` the call
site's typical unsampled call (the median of its last three kept in place), at most one in
``MAX_EVERY``: only call sites under about 1.6 ms sample less often, and their calls are many
(a 0.1 ms call: one in 500, 40 samples in 20,000 calls, and always its first 5). The countdown
after the first calls is drawn before any call was kept in place to tell ``t``: when it runs
out, the call is sampled with probability (its rate) / (the rate ``t`` now calls for), else a
new countdown starts at that rate (thinning: the sampled calls stay one in ``every`` at random;
without it, a 200-call loop of a 0.2 ms training step paid one more sampled call, about 0.5%
of its time). Calls a profiler takes (cProfile, the TF Profiler) are never
sampled and use up none of the countdown: a profiler slows a call's Python, not in
proportion to its phases. Graph creation is measured on every call (its entry points stay
on), so a rare retrace is counted exactly, never estimated.

The estimate (collector.py). Every sampled unprofiled call after the first weighs the same:
the steady split's shares are a ratio estimator, the sampled calls' seconds in each phase
over their wall time (both outside graph creation), and those shares divide the measured
mean wall time of the unprofiled calls after the first (less their measured graph creation).
Why not weigh each sample by the calls it stands for (1 for the first ``first``, ``every``
after them, a Horvitz-Thompson sum): on 40-60 calls one random late sample would then carry
most of the split, and a call the OS stretched could decide it. Equal weights give the
estimate as many effective samples as it has samples; what it costs is a small bias towards
the calls right after the first, which a loop's steady state shares. A sample whose wall
time (outside graph creation) is over ``OUTLIER`` times the samples' median is left out
while at least ``MIN_KEPT`` samples remain: a call the OS stretched should not decide the
split. ``phase_calls`` is the number of samples the shares rest on.
"""

from __future__ import annotations

import math
import random

from ..options import PHASE_EVERY as EVERY, PHASE_FIRST_CALLS as FIRST_CALLS

_exp, _log, _log1p = math.exp, math.log, math.log1p
MAX_KEYS = 10_000
SAMPLED_CALL_S = 250e-6  # what a sampled call adds to a call (see above) ...
BUDGET = 0.005  # ... kept to about this share of a fast call site's time ...
MAX_EVERY = 1024  # ... sampling at least one call in this many
OUTLIER = 4.0  # a sample over this many times the median sampled wall time is left out ...
MIN_KEPT = 5  # ... while at least this many samples remain


class PhaseSampler:
    """Per call site, a countdown to its next sampled call.

    ``sites[key]`` is ``[calls until the next sampled one, sampled calls after the first, the
    call site's statistics, the rate that countdown was drawn at]`` (a list: the timed-call
    wrapper counts down in place, one dict lookup per call); a key in ``sites`` has had its
    first call. The third item is None until the call site's first call is in the collector,
    then its ``CallStats`` (False: looked for, not there yet): the wrapper adds unsampled calls
    to it in place (timed_calls.py). The fourth is ``every`` of the current countdown.
    """

    def __init__(self, every: int | None = None, first: int = FIRST_CALLS, seed: int = 0) -> None:
        """``every``: one call in this many (checked by options.validate); None: one in EVERY,
        fewer at fast call sites (see the module's docstring)."""
        self.adaptive = every is None
        every = self.every = EVERY if every is None else every
        self.first = first
        self.sites: dict = {}
        self._random = random.Random(seed).random
        self._log_skip = math.log1p(-1.0 / every) if every > 1 else 0.0
        # ``memory(state)``, or None: a reading at the start of each sampled call and of each call
        # site's first call (capture/memory.py), so memory costs unsampled calls nothing.
        self.memory = None

    def weight(self, key, profiled: bool = False) -> int:
        """1: measure this call's full split; 0: only its wall time (and graph creation)."""
        state = self.sites.get(key)
        if state is None:
            self.first_call(key)
            return 0 if profiled else 1
        if profiled:
            return 0
        left = state[0] - 1
        if left > 0:
            state[0] = left
            return 0
        return self.sampled(state)

    def first_call(self, key) -> list:
        """A call site's first call: its countdown starts (its first ``first`` calls after it are sampled)."""
        if len(self.sites) >= MAX_KEYS:
            self.sites.clear()
        state = self.sites[key] = [1 if self.first > 0 else self.gap(), 0, None, self.every]
        if self.memory is not None:
            self.memory(state)
        return state

    def sampled(self, state: list) -> int:
        """A call whose countdown ran out: 1, it is sampled, and the countdown to the next one
        starts. Or 0, not sampled, with a new countdown: at an adaptive call site whose countdown
        was drawn at a higher rate than its calls now call for (the one after its first calls,
        drawn before any call was kept in place to tell their time), the call is kept with
        probability old rate / new rate. Thinned so, the sampled calls are one in ``every`` at
        random, as if drawn at the new rate from the start."""
        drawn = state[3]
        if self.adaptive and state[1] >= self.first and state[2]:
            every = self.site_every(state[2])
            if every > drawn and self._random() * every >= drawn:
                self._restart(state, every)
                return 0
        if self.memory is not None:
            self.memory(state)
        state[1] += 1
        if state[1] < self.first:
            state[0] = 1
        else:
            self._restart(state, self.site_every(state[2]) if self.adaptive and state[2] else self.every)
        return 1

    def _restart(self, state: list, every: int) -> None:
        state[0], state[3] = self.gap(every), every

    def site_every(self, stats) -> int:
        """One call in how many to sample at the call site of ``stats`` (its CallStats: ``light``,
        its calls kept in place as start, duration, stack; else ``count``, ``total_s``, ``first_s``)."""
        try:
            light = stats.light
            if len(light) >= 9:
                typical = sorted((light[-2], light[-5], light[-8]))[1]
            elif stats.count > 1:
                typical = (stats.total_s - stats.first_s) / (stats.count - 1)
            else:
                return self.every
        except (IndexError, AttributeError, TypeError):  # emptied by another thread meanwhile
            return self.every
        if typical * BUDGET * MAX_EVERY <= SAMPLED_CALL_S:
            return MAX_EVERY
        return max(self.every, int(SAMPLED_CALL_S / (BUDGET * typical)))

    def gap(self, every: int | None = None) -> int:
        """Calls until the next sampled one, each sampled with probability 1/every (``every``:
        this sampler's, unless given)."""
        log_skip = self._log_skip if every is None or every == self.every else math.log1p(-1.0 / every)
        if not log_skip:
            return 1
        return int(math.log(1.0 - self._random()) / log_skip) + 1


def kept_samples(samples: list) -> list:
    """``samples`` (``(wall outside graph creation, phases, teardown)``) less those over
    ``OUTLIER`` times their median wall time, if at least ``MIN_KEPT`` remain."""
    if len(samples) <= MIN_KEPT:
        return samples
    walls = sorted(s[0] for s in samples)
    middle = len(walls) // 2
    median = walls[middle] if len(walls) % 2 else (walls[middle - 1] + walls[middle]) / 2
    kept = [s for s in samples if s[0] <= OUTLIER * median]
    return kept if len(kept) >= MIN_KEPT else samples


class Reservoir:
    """A uniform random sample of at most ``size`` of the items offered, in bounded memory.

    Li's Algorithm L: once full, the number of the next item to keep is drawn ahead, so an item
    that is not kept (nearly all of a long run's) costs one count and two comparisons, not a
    random number. Callers on the per-call path offer inline::

        r.seen += 1
        if len(r.items) < r.size:
            r.items.append(item)
        elif r.seen >= r.next:
            r.keep(item)
    """

    __slots__ = ("items", "size", "seen", "next", "_weight", "_random")

    def __init__(self, size: int, rng: random.Random) -> None:
        self.items: list = []
        self.size = size
        self.seen = 0  # items offered
        self.next = size + 1  # the number of the next item to keep, once full
        self._weight: float | None = None
        self._random = rng.random

    def offer(self, item) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        elif self.seen >= self.next:
            self.keep(item)

    def extend(self, items) -> None:
        """Offer each of ``items`` (a batch: one call for all)."""
        if not isinstance(items, (list, tuple)):
            items = list(items)
        self.extend_made(len(items), items.__getitem__)

    def extend_made(self, count: int, make) -> None:
        """Offer ``count`` items, item ``i`` being ``make(i)``, made only if it is kept. Items that
        are not kept cost nothing: the reservoir fills by slices, then goes straight to the next
        item to keep (the collector offers every call of the diagnosis through here)."""
        kept = self.items
        start = min(max(self.size - len(kept), 0), count)
        if start:
            kept.extend(map(make, range(start)))
            self.seen += start
        while start < count and self._weight is None:  # just filled: ``keep`` draws the first skip
            index = start + self.next - self.seen - 1  # item number ``next``, if this batch has it
            if index >= count:
                self.seen += count - start
                return
            self.seen = self.next
            self.keep(make(index))
            start = index + 1
        if start >= count:
            return
        # ``keep``, inline, its state in locals: early in a run a batch keeps hundreds of items
        # (size x ln(seen after / seen before)), and a method call each was most of their cost.
        draw, size, weight, upcoming, seen = self._random, self.size, self._weight, self.next, self.seen
        try:
            while True:
                index = start + upcoming - seen - 1
                if index >= count:
                    seen += count - start
                    return
                seen = upcoming
                kept[int(draw() * size)] = make(index)  # (made first, then the slot drawn: as ``keep``)
                weight *= _exp(_log(1.0 - draw()) / size)
                upcoming = seen + 1 if weight >= 1.0 else seen + int(_log(1.0 - draw()) / _log1p(-weight)) + 1
                start = index + 1
        finally:
            self._weight, self.next, self.seen = weight, upcoming, seen

    def keep(self, item) -> None:
        """Item number ``seen``, offered to a full reservoir when ``seen`` reached ``next``."""
        if self._weight is None:  # just filled: draw the first skip
            self._weight = 1.0
            self._advance(self.size)
            if self.seen < self.next:
                return
        # _advance(seen), inline: a short diagnosis keeps a good part of its calls' timeline entries.
        draw, size, position = self._random, self.size, self.seen
        self.items[int(draw() * size)] = item
        weight = self._weight = self._weight * _exp(_log(1.0 - draw()) / size)
        if weight >= 1.0:
            self.next = position + 1
            return
        self.next = position + int(_log(1.0 - draw()) / _log1p(-weight)) + 1

    def _advance(self, position: int) -> None:
        self._weight *= math.exp(math.log(1.0 - self._random()) / self.size)
        if self._weight >= 1.0:
            self.next = position + 1
            return
        self.next = position + int(math.log(1.0 - self._random()) / math.log1p(-self._weight)) + 1
