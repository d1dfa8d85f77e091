"""The timed-call wrapper and its per-thread log, on plain Python targets (no TensorFlow)."""

import threading

import pytest

from tfdiag.capture import call_log, timed_calls
from tfdiag.capture.collector import Collector
from tfdiag.capture.keras_calls import positional_training
from tfdiag.capture.phase_tracker import PhaseTracker
from tfdiag.capture.sampling import PhaseSampler


class FakeCapture:
    gates: list = []

    @staticmethod
    def describe(args, kwargs):
        return f"{len(args)} args", None

    @staticmethod
    def input_spec(args, kwargs):
        return [{"type": type(a).__name__} for a in args]

    @staticmethod
    def tape_is_empty():
        return True

    @staticmethod
    def target_name(target):
        return target.name


class Target:
    name = "model"

    def call(self, x, training=None):
        return x * 2


def _wrapped(skip=lambda target: False):
    collector = Collector()
    tracker = PhaseTracker(sampler=PhaseSampler(every=1, first=0))
    log = call_log.CallLog(collector)
    wrapped = timed_calls.timed_call_wrapper(Target.call, "__call__", FakeCapture(), skip, tracker, log)
    return wrapped, collector, log, tracker


def test_top_level_calls_are_recorded_and_nested_ones_are_part_of_them():
    wrapped, collector, log, tracker = _wrapped()
    target = Target()

    def predict(model, x):
        return wrapped(model, x) + 1  # the model called inside predict(): part of the predict call

    outer = timed_calls.timed_call_wrapper(predict, "predict", FakeCapture(), lambda t: False, tracker, log)
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
    count = call_log.MAX_THREAD_BUFFERS * 2 + 10
    for index in range(count):
        thread = threading.Thread(target=wrapped, args=(target, index), name=f"request-{index}")
        thread.start()
        thread.join()
    assert len(log._buffers) <= call_log.MAX_THREAD_BUFFERS + 1
    log.flush_all()
    calls = collector.sections()["calls"]
    assert sum(c["count"] for c in calls) == count


def test_buffers_flush_every_so_often_and_at_the_end():
    wrapped, collector, log, _ = _wrapped()
    target = Target()
    for index in range(call_log.FLUSH_EVERY + 3):
        wrapped(target, index)
    assert sum(c["count"] for c in collector.sections()["calls"]) == call_log.FLUSH_EVERY
    log.flush_all()
    assert sum(c["count"] for c in collector.sections()["calls"]) == call_log.FLUSH_EVERY + 3


class BrokenGate:
    finished = False

    def start(self, api):
        raise RuntimeError("profiler failed to start")

    def stop(self, token):
        raise AssertionError("never started")


def test_a_failing_profiler_start_is_a_warning_and_the_call_runs_unprofiled():
    wrapped, collector, log, tracker = _wrapped()
    capture = FakeCapture()
    capture.gates = [BrokenGate()]
    gated = timed_calls.timed_call_wrapper(Target.call, "predict", capture, lambda t: False, tracker, log)
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

    failing = timed_calls.timed_call_wrapper(Failing.call, "__call__", FakeCapture(), lambda t: False, tracker, log)
    with pytest.raises(ValueError):
        failing(Failing(), 1)
    assert not tracker.local.frames
    log.flush_all()
    assert collector.sections()["calls"][0]["count"] == 1


def test_a_threads_first_call_may_be_unsampled():
    collector = Collector()
    tracker = PhaseTracker(sampler=PhaseSampler(every=10**9, first=0))  # no call is sampled
    log = call_log.CallLog(collector)
    wrapped = timed_calls.timed_call_wrapper(Target.call, "__call__", FakeCapture(), lambda t: False, tracker, log)
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


class WindowGate:
    """Takes the calls whose number (counted over every call it is told of) is in ``numbers``,
    never a call site's first."""

    finished = False

    def __init__(self, numbers):
        self.numbers = set(numbers)
        self.seen = 0
        self.taken = []

    def start_first(self, api):
        self.seen += 1

    def start(self, api):
        self.seen += 1
        return self.seen if self.seen in self.numbers else None

    def stop(self, token):
        self.taken.append(token)


def test_profiled_calls_leave_the_first_call_and_five_unprofiled_calls_to_the_split():
    collector = Collector()
    tracker = PhaseTracker(sampler=PhaseSampler(every=10**9, first=5))  # no random samples
    log = call_log.CallLog(collector)
    capture = FakeCapture()
    capture.gates = [WindowGate(range(1, 12))]  # would take calls 1-11 if it could
    wrapped = timed_calls.timed_call_wrapper(Target.call, "predict", capture, lambda t: False, tracker, log)
    target = Target()
    for index in range(20):
        wrapped(target, index)
    log.flush_all()
    sections = collector.sections()
    call = sections["calls"][0]
    assert capture.gates[0].taken == list(range(2, 12))  # the first call was not the gate's to take
    assert call["count"] == 20 and call["profiled_calls"] == 10
    assert call["phase_calls"] == 5  # unprofiled calls after the first, never used up by profiled ones
    assert call["first_phases"] and sum(call["first_phases"].values()) == pytest.approx(call["first_s"])
    # A normal call after the first: the mean of the unprofiled ones (calls 12-20).
    plain = [c["duration_s"] for c in sections["call_samples"][1:] if not c["profiled"]]
    assert len(plain) == 9
    assert sum(call["steady_phases"].values()) == pytest.approx(sum(plain) / 9)
    assert sum(call["phases"].values()) == pytest.approx(call["total_s"])
    assert call["input_spec"] == [{"type": "int"}]
    assert call["training"] is False
    assert call["caller"]["name"].endswith("test_profiled_calls_leave_the_first_call_and_five_unprofiled_calls_to_the_split")


def test_call_sites_are_told_apart_by_line_and_training():
    collector = Collector()
    tracker = PhaseTracker(sampler=PhaseSampler(every=1, first=0))
    log = call_log.CallLog(collector)
    capture = FakeCapture()
    taping = [False]
    capture.tape_is_empty = lambda: not taping[0]
    capture.training_argument = lambda api: positional_training if api == "__call__" else None
    wrapped = timed_calls.timed_call_wrapper(Target.call, "__call__", capture, lambda t: False, tracker, log)
    target = Target()
    for _ in range(3):
        wrapped(target, 1)
    wrapped(target, 1, training=True)
    wrapped(target, 1, True)  # training=True by position: ``model(x, True)``
    wrapped(target, 1, False)  # the same call site as the first three
    taping[0] = True  # under a gradient tape
    wrapped(target, 1)
    log.flush_all()
    calls = collector.sections()["calls"]
    by_training = {}
    for call in calls:
        by_training.setdefault(call["training"], []).append(call)
    assert sorted(c["count"] for c in by_training[False]) == [1, 3]  # (1, False): another signature
    # training=True by keyword and by position, and under a tape: three lines
    assert sorted(c["count"] for c in by_training[True]) == [1, 1, 1]
    assert len({c["call_site"] for c in calls}) == 5


def test_buffered_calls_hold_nothing_the_garbage_collector_tracks_and_keep_their_lines():
    """A buffer of tracked objects made the collector run every few hundred calls and promote them
    into full collections; the caller's line is kept as a bytecode offset until the flush."""
    assert call_log.FIELDS == 16  # the spec is value 14 of a call
    import gc

    wrapped, collector, log, tracker = _wrapped()
    target = Target()
    for index in range(10):
        wrapped(target, index); line = __import__("sys")._getframe().f_lineno  # noqa: E702
    buffer = log.local.entry[1]
    assert len(buffer) == 10 * call_log.FIELDS
    tracked = [index for index, value in enumerate(buffer) if gc.is_tracked(value)]
    # only the first call's sampler state (the sampler's own list, not a new object) and input
    # spec (said once per call site)
    assert tracked == [13, 14] and buffer[13] is next(iter(tracker.sampler.sites.values()))
    log.flush_all()
    (call,) = collector.sections()["calls"]
    assert call["count"] == 10
    assert call["call_site"].endswith(f"test_timed_calls.py:{line}")


def test_unsampled_calls_at_a_known_call_site_are_kept_in_place_with_everything_measured():
    """Most calls (unsampled, unprofiled, at a call site the collector has) make no record: their
    count, time, maximum, durations and timeline entries go in place, a batch at a time, a call
    that retraced is a record of its own with its graph creation, and a timed call inside one is
    part of it."""
    import time

    collector = Collector()
    tracker = PhaseTracker(sampler=PhaseSampler(every=10**9, first=5))
    log = call_log.CallLog(collector)
    traced = tracker.wrap(lambda: time.sleep(0.003), "graph_creation")
    inner = timed_calls.timed_call_wrapper(Target.call, "inner", FakeCapture(), lambda t: False, tracker, log)

    class Stepping(Target):
        def call(self, x):
            if x in (50, 120):
                traced()  # a retrace in an unsampled call
            return inner(Target(), x)  # nested: part of this call

    wrapped = timed_calls.timed_call_wrapper(Stepping.call, "__call__", FakeCapture(), lambda t: False, tracker, log)
    target = Stepping()

    def loop(start, stop):  # one call site, on two threads
        for index in range(start, stop):
            wrapped(target, index)

    loop(0, 100)
    (state,) = tracker.sampler.sites.values()
    assert state[2] is next(iter(collector.calls.values()))  # linked: the calls after the sampled ones go in place
    # flushed when linked; the call that retraced went to the collector at once (a record of its own)
    assert len(log.local.entry[1]) == 0
    # the 94 after the sampled ones, less the one that retraced: whole batches added, the rest wait in place
    assert len(state[2].light) == 3 * ((94 - 1) % timed_calls.LIGHT_EVERY)
    assert state[2].count + len(state[2].light) // 3 == 100  # every call so far, as the memory probe reads it
    other = threading.Thread(target=loop, args=(100, 130), name="other")
    other.start()
    other.join()
    log.flush_all()
    sections = collector.sections()
    (call,) = sections["calls"]  # the nested calls are part of the outer ones
    assert call["api"] == "__call__" and call["count"] == 130 and call["phase_calls"] == 5
    samples = sections["call_samples"]
    assert len(samples) == 130 == sections["call_samples_total"]
    assert sum(s["duration_s"] for s in samples) == pytest.approx(call["total_s"])
    assert max(s["duration_s"] for s in samples[1:]) == call["max_s"]
    assert sorted({s["thread"] for s in samples}) == sorted({threading.current_thread().name, "other"})
    retraced = [s for s in samples if s["graph_s"] > 0]
    assert len(retraced) == 2 and all(s["graph_s"] >= 0.003 and "phases" not in s for s in retraced)
    assert call["phases"]["graph_creation"] == pytest.approx(sum(s["graph_s"] for s in retraced))
    assert sum(call["phases"].values()) == pytest.approx(call["total_s"])
    assert call["median_s"] < 0.003 < call["max_s"]
    assert not tracker.local.frames
