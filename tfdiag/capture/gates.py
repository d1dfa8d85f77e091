"""Profilers that take some calls (cProfile, the TF Profiler), started and stopped around a call.

A gate's ``start(api)`` returns a token when it takes the call, ``stop(token)`` ends it. A call
any gate took is marked ``profiled``: its wall time and graph creation count, its phase split
does not (sampling.py). A call site's first call is measured on its own, so a gate that has
``start_first(api)`` is told of it instead: it counts the call and takes it only when it has no
other choice (cprofile.MAX_WAIT), returning a token as ``start`` does.
"""

from __future__ import annotations


def start_all(gates: list, api: str, first: bool = False) -> list:
    taken: list = []
    try:
        for gate in gates:
            start_first = getattr(gate, "start_first", None) if first else None
            token = start_first(api) if start_first is not None else gate.start(api)
            if token is not None:
                taken.append((gate, token))
    except BaseException:
        stop_all(taken)
        raise
    return taken


def stop_all(taken: list) -> None:
    for gate, token in reversed(taken):
        gate.stop(token)
