"""Which calls get their full phase split measured, and what each one stands for.

Switching the per-op phase entry points on costs a few microseconds per TensorFlow op:
a sampled eager ``model(x)`` on a tiny model takes about 5% (Keras 3) to 15% (tf-keras)
longer, on average, than one that is not. So they are switched on, per call site (the
API, the model or function, the calling line, the input's signature and the training
flag), for its first call (where one-off costs such as tracing live: it is reported on its
own), for the ``first`` unprofiled calls after it (the steady-state split rests on at least
these), and then for one call in ``every``, drawn at random so that no loop period can line
up with it. Calls a profiler takes (cProfile, the TF Profiler) are never sampled and use up
none of the first calls: a profiler slows a call's Python, not in proportion to its phases.
A sampled call's weight is how many calls it stands for (1 or ``every``): the steady-state
split is the weighted sum over the sampled calls after the first, a Horvitz-Thompson
estimate, scaled to the wall time every call measured. Graph creation is measured on every
call (its entry points stay on), so a rare retrace is never lost or multiplied by a weight.
"""

from __future__ import annotations

import random

FIRST_CALLS = 5  # unprofiled calls after each call site's first one that are always sampled
EVERY = 32
MAX_KEYS = 10_000


class PhaseSampler:
    def __init__(self, every: int = EVERY, first: int = FIRST_CALLS, seed: int = 0) -> None:
        if every < 1:
            raise ValueError(f"phase sampling: every must be >= 1, got {every}")
        self.every = every
        self.first = first
        # Per call site key: unprofiled calls after its first one, counted up to ``first``.
        # A key in here has had its first call: ``key not in seen`` is the hot path's test.
        self.seen: dict = {}
        self._random = random.Random(seed).random

    def weight(self, key, profiled: bool = False) -> int:
        """0: measure only the wall time (and graph creation); else the calls this one stands for.
        A call site's first call is sampled (weight 1) unless a profiler took it (the gates leave
        first calls alone where they can: gates.start_all)."""
        seen = self.seen.get(key)
        if seen is None:
            if len(self.seen) >= MAX_KEYS:
                self.seen.clear()
            self.seen[key] = 0
            return 0 if profiled else 1
        if profiled:
            return 0
        if seen < self.first:
            self.seen[key] = seen + 1
            return 1
        if self.every == 1:
            return 1
        return self.every if self._random() * self.every < 1.0 else 0
