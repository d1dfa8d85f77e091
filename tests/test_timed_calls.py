"""The timed-call wrapper and its per-thread log, on plain Python targets (no TensorFlow)."""

import threading

import pytest

from tfdiag.capture import timed_calls
from tfdiag.capture.collector import Collector
from tfdiag.capture.phase_tracker import PhaseTracker
from tfdiag.capture.sampling import PhaseSampler


class FakeCapture:
    gates: list = []

    def __init__(self):
        self.observers = []

    @staticmethod
    def describe(args, kwargs):
        return f"{len(args)} args", None

    @staticmethod
    def target_name(target):
        return target.name


class Target:
    name = "model"

    def call(self, x):
        return x * 2


def _wrapped(skip=lambda target: False):
    collector = Collector()
    tracker = PhaseTracker(sampler=PhaseSampler(every=1, first=0))
    log = timed_calls.CallLog(collector)
    wrapped = timed_calls.timed(Target.call, "__call__", FakeCapture(), skip, tracker, log)
    return wrapped, collector, log, tracker


def test_top_level_calls_are_recorded_and_nested_ones_are_part_of_them():
    wrapped, collector, log, tracker = _wrapped()
    target = Target()

    def predict(model, x):
        return wrapped(model, x) + 1  # the model called inside predict(): part of the predict call

    outer = timed_calls.timed(predict, "predict", FakeCapture(), lambda t: False, tracker, log)
    assert wrapped(target, 3) == 6
    assert outer(target, 3) == 7
    log.flush_all()
    calls = {c["api"]: c for c in collector.sections()["calls"]}
    assert set(calls) == {"__call__", "predict"}
    assert calls["__call__"]["count"] == 1 and calls["predict"]["count"] == 1
    assert calls["predict"]["target"] == "model"
    assert "test_timed_calls.py:" in calls["predict"]["call_site"]  # the user's line, not tfdiag's


def test_skipped_calls_pass_through():
    wrapped, collector, log, _ = _wrapped(skip=lambda target: True)
    assert wrapped(Target(), 4) == 8
    log.flush_all()
    assert collector.sections()["calls"] == []


def test_a_thread_per_call_keeps_every_call_and_a_bounded_log():
    wrapped, collector, log, _ = _wrapped()
    target = Target()
    count = timed_calls.MAX_THREAD_BUFFERS * 2 + 10
    for index in range(count):
        thread = threading.Thread(target=wrapped, args=(target, index), name=f"request-{index}")
        thread.start()
        thread.join()
    assert len(log._buffers) <= timed_calls.MAX_THREAD_BUFFERS + 1
    log.flush_all()
    calls = collector.sections()["calls"]
    assert sum(c["count"] for c in calls) == count


def test_buffers_flush_every_so_often_and_at_the_end():
    wrapped, collector, log, _ = _wrapped()
    target = Target()
    for index in range(timed_calls.FLUSH_EVERY + 3):
        wrapped(target, index)
    assert sum(c["count"] for c in collector.sections()["calls"]) == timed_calls.FLUSH_EVERY
    log.flush_all()
    assert sum(c["count"] for c in collector.sections()["calls"]) == timed_calls.FLUSH_EVERY + 3


class BrokenGate:
    def start(self, api):
        raise RuntimeError("profiler failed to start")

    def stop(self, token):
        raise AssertionError("never started")


def test_a_failing_profiler_start_is_a_warning_and_the_call_runs_unprofiled():
    wrapped, collector, log, tracker = _wrapped()
    capture = FakeCapture()
    capture.gates = [BrokenGate()]
    gated = timed_calls.timed(Target.call, "predict", capture, lambda t: False, tracker, log)
    assert gated(Target(), 1) == 2
    assert not tracker.local.frames
    log.flush_all()
    sections = collector.sections()
    assert [(c["api"], c["count"], c["profiled_calls"]) for c in sections["calls"]] == [("predict", 1, 0)]
    assert any("profiler could not start" in w["message"] for w in sections["warnings"])


def test_an_exception_in_the_call_closes_it_and_is_recorded():
    wrapped, collector, log, tracker = _wrapped()

    class Failing(Target):
        def call(self, x):
            raise ValueError("bad input")

    failing = timed_calls.timed(Failing.call, "__call__", FakeCapture(), lambda t: False, tracker, log)
    with pytest.raises(ValueError):
        failing(Failing(), 1)
    assert not tracker.local.frames
    log.flush_all()
    assert collector.sections()["calls"][0]["count"] == 1


def test_a_threads_first_call_may_be_unsampled():
    collector = Collector()
    tracker = PhaseTracker(sampler=PhaseSampler(every=10**9, first=0))  # no call is sampled
    log = timed_calls.CallLog(collector)
    wrapped = timed_calls.timed(Target.call, "__call__", FakeCapture(), lambda t: False, tracker, log)
    errors = []

    def first_call():
        try:
            wrapped(Target(), 1)
        except Exception as exc:  # the wrapper must not fail on a thread's first call
            errors.append(exc)

    thread = threading.Thread(target=first_call)
    thread.start()
    thread.join()
    assert errors == []
    log.flush_all()
    assert collector.sections()["calls"][0]["phase_calls"] == 0
