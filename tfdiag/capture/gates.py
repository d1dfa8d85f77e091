"""Profilers that take some calls (cProfile, the TF Profiler), started and stopped around a call.

A gate's ``start(api)`` returns a token when it takes the call, ``stop(token)`` ends it. A call
any gate took is marked ``profiled`` and kept out of the timing statistics.
"""

from __future__ import annotations


def start_all(gates: list, api: str) -> list:
    taken: list = []
    try:
        for gate in gates:
            token = gate.start(api)
            if token is not None:
                taken.append((gate, token))
    except BaseException:
        stop_all(taken)
        raise
    return taken


def stop_all(taken: list) -> None:
    for gate, token in reversed(taken):
        gate.stop(token)
