"""Which calls get their full phase split measured, and what each one stands for.

Switching the per-op phase entry points on costs a few microseconds per TensorFlow op:
a sampled eager ``model(x)`` on a tiny model takes about 5% (Keras 3) to 15% (tf-keras)
longer, on average, than one that is not. So they are switched on for the first
``first`` calls of each model or function (where one-off costs such as tracing live) and
then for one call in ``every``, drawn at random so that no loop period can line up with
it. A sampled call's weight is how many calls it stands for (1 or ``every``): the
per-call-site split is the weighted sum over sampled calls, a Horvitz-Thompson estimate,
scaled to the wall time every call measured. Graph creation is measured on every call
(its entry points stay on), so a rare retrace is never lost or multiplied by a weight.
"""

from __future__ import annotations

import random

FIRST_CALLS = 5
EVERY = 32
MAX_KEYS = 10_000


class PhaseSampler:
    def __init__(self, every: int = EVERY, first: int = FIRST_CALLS, seed: int = 0) -> None:
        if every < 1:
            raise ValueError(f"phase sampling: every must be >= 1, got {every}")
        self.every = every
        self.first = first
        self._seen: dict = {}
        self._random = random.Random(seed).random

    def weight(self, key) -> int:
        """0: measure only the wall time (and graph creation); else the calls this one stands for."""
        seen = self._seen.get(key, 0)
        if seen < self.first:
            if len(self._seen) >= MAX_KEYS:
                self._seen.clear()
            self._seen[key] = seen + 1
            return 1
        if self.every == 1:
            return 1
        return self.every if self._random() * self.every < 1.0 else 0
