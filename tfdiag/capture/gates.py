"""Profilers that take some calls (cProfile, the TF Profiler), started and stopped around a call.

A gate's ``start(api)`` returns a token when it takes the call, ``stop(token)`` ends it, and
``finished`` says it will take no more calls: ``start_all`` then drops it from the list, so a
long run's calls stop paying for profilers that are done. A call
any gate took is marked ``profiled``: its wall time and graph creation count, its phase split
does not (sampling.py). A call site's first call is measured on its own, so each gate has
``start_first(api)``, told of such a call instead of ``start``: it counts the call and, by the
rule of ``FirstCallDeferral``, takes it only when it has no other choice, returning a token as
``start`` does.
"""

from __future__ import annotations

# A profiler's turn that falls on a call site's first call waits for a later call, unless it
# has waited this many calls: a loop whose every call is a new call site (a new input shape
# each time) still gets profiled, and the report says that call site's first call was profiled.
MAX_WAIT = 8


class FirstCallDeferral:
    """When a profiler's turn is waiting because it fell on a call site's first call."""

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since: int | None = None  # the call number whose turn is waiting for a later call

    def defer(self, number: int) -> None:
        if self.since is None:
            self.since = number

    def must_take(self, number: int) -> bool:
        """Call ``number`` is a first call, but the turn has waited ``MAX_WAIT`` calls: take it."""
        return self.since is not None and number - self.since >= MAX_WAIT

    def taken(self) -> None:
        self.since = None


def start_all(gates: list, api: str, first: bool = False) -> list:
    """The gates that take this call, as ``(gate, token)``; ``gates`` (shared by the timed-call
    wrappers) loses those that are finished."""
    taken: list = []
    finished = False
    try:
        for gate in gates:
            token = gate.start_first(api) if first else gate.start(api)
            if token is not None:
                taken.append((gate, token))
            finished = finished or gate.finished
    except BaseException:
        stop_all(taken)
        raise
    if finished and not taken:
        gates[:] = [gate for gate in gates if not gate.finished]
    return taken


def stop_all(taken: list) -> None:
    for gate, token in reversed(taken):
        gate.stop(token)
