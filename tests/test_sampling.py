"""Sampled phase splits: the sampler, the switchable patches, and the estimate (no TensorFlow)."""

import random
import types

import pytest

from tfdiag.capture import patching
from tfdiag.capture.collector import CallStats, Collector
from tfdiag.capture.phase_tracker import PhaseTracker
from tfdiag.capture.sampling import PhaseSampler
from tfdiag.recording import PHASES


def test_sampler_takes_the_first_calls_then_one_in_every():
    sampler = PhaseSampler(every=4, first=3, seed=1)
    weights = [sampler.weight("model") for _ in range(4003)]
    assert weights[:3] == [1, 1, 1]
    later = weights[3:]
    assert set(later) == {0, 4}
    assert 800 < later.count(4) < 1200  # one in 4 of 4000, at random
    assert PhaseSampler(every=4, first=3, seed=1).weight("other") == 1  # counted per model
    again = PhaseSampler(every=4, first=3, seed=1)
    assert [again.weight("model") for _ in range(4003)] == weights  # seeded: reproducible


def test_sampler_every_one_measures_every_call():
    sampler = PhaseSampler(every=1, first=0)
    assert {sampler.weight("m") for _ in range(100)} == {1}
    with pytest.raises(ValueError):
        PhaseSampler(every=0)


def test_estimate_keeps_graph_creation_exact_and_adds_up_to_the_wall_time():
    stats = CallStats("__call__", "m", "x.py:1", "float32[1]")
    rng = random.Random(0)

    def phases(**seconds):
        out = dict.fromkeys(PHASES, 0.0)
        out.update(seconds)
        return out

    # The first call traces (always sampled, weight 1); later calls: 1 in 16 sampled.
    stats.add(0.5, rng, phases(graph_creation=0.45, other=0.05), 1)
    for index in range(160):
        if index % 16 == 0:
            stats.add(0.010, rng, phases(kernel_execution=0.006, other=0.004), 16)
        else:
            stats.add(0.010, rng, phases(other=0.010), 0)  # unsampled: only wall time counts
    stats.add(0.3, rng, phases(graph_creation=0.29, other=0.01), 0)  # a retrace in an unsampled call
    split = stats.phases()
    assert split["graph_creation"] == pytest.approx(0.74)  # measured on every call, never weighted
    assert sum(split.values()) == pytest.approx(stats.total_s)
    rest = stats.total_s - 0.74
    # Weighted: the first call's 0.05 s of other counts once, each sampled later call 16 times.
    weighted_kernel, weighted_other = 10 * 16 * 0.006, 0.05 + 10 * 16 * 0.004
    assert split["kernel_execution"] == pytest.approx(rest * weighted_kernel / (weighted_kernel + weighted_other))
    assert stats.phase_calls == 11


def test_collector_samples_carry_phases_only_when_sampled():
    collector = Collector()
    split = dict.fromkeys(PHASES, 0.0)
    collector.add_call("predict", "m", "x.py:1", "sig", 0.0, 0.01, dict(split, other=0.01), weight=1)
    collector.add_call("predict", "m", "x.py:1", "sig", 0.1, 0.02, dict(split, graph_creation=0.015, other=0.005),
                       weight=0, teardown_s=0.0)
    first, second = collector.sections()["call_samples"]
    assert "phases" in first and "phases" not in second
    assert second["graph_s"] == pytest.approx(0.015)


def test_toggle_is_on_while_anyone_holds_it_and_off_after_restore():
    module = types.ModuleType("fake_ops")
    module.execute = original = lambda: "original"
    patcher = patching.Patcher()
    toggle = patcher.toggle()
    toggle.add(module, "execute", lambda orig: lambda: "wrapped")
    assert module.execute is original and patching.installed() == []
    toggle.acquire()
    toggle.acquire()  # a second thread's sampled call
    assert module.execute() == "wrapped"
    assert (module, "execute") in patching.installed()
    toggle.release()
    assert module.execute() == "wrapped"  # the other call still runs
    toggle.release()
    assert module.execute is original
    toggle.release()  # an extra release is harmless
    toggle.acquire()
    patcher.restore()  # the diagnosis ends while a call holds it
    assert module.execute is original and patching.installed() == []


def test_tracker_switches_the_per_op_points_only_for_sampled_calls():
    module = types.ModuleType("fake_ops")
    module.execute = lambda: None
    patcher = patching.Patcher()
    try:
        tracker = PhaseTracker(clock=iter(range(100)).__next__)
        tracker.per_op = patcher.toggle()
        original = module.execute
        tracker.per_op.add(module, "execute", lambda orig: lambda: "wrapped")
        frame = tracker.begin_call("m", 0)
        assert module.execute is original
        tracker.end_call(frame)
        frame = tracker.begin_call("m", 16)
        assert module.execute() == "wrapped"
        tracker.end_call(frame)
        assert module.execute is original
    finally:
        patcher.restore()


def test_a_call_site_without_sampled_calls_borrows_its_models_split():
    collector = Collector()
    split = dict.fromkeys(PHASES, 0.0)
    for _ in range(3):  # sampled calls at one line
        collector.add_call("__call__", "m", "x.py:1", "sig", 0.0, 0.010, dict(split, kernel_execution=0.008,
                                                                               other=0.002), weight=1)
    # another line, never sampled; one of its calls traced
    collector.add_call("__call__", "m", "x.py:9", "sig", 0.0, 0.050, dict(split, graph_creation=0.040,
                                                                           other=0.010), weight=0)
    collector.add_call("__call__", "m", "x.py:9", "sig", 0.0, 0.010, dict(split, other=0.010), weight=0)
    calls = {c["call_site"]: c for c in collector.sections()["calls"]}
    borrowed = calls["x.py:9"]
    assert borrowed["phase_split_pooled"] and borrowed["phase_calls"] == 0
    assert borrowed["phases"]["graph_creation"] == pytest.approx(0.040)
    assert borrowed["phases"]["kernel_execution"] == pytest.approx(0.020 * 0.8)
    assert sum(borrowed["phases"].values()) == pytest.approx(borrowed["total_s"])
    assert not calls["x.py:1"]["phase_split_pooled"]


def test_teardown_is_measured_before_the_off_thread_move():
    tracker = PhaseTracker(clock=iter([0.0, 1.0, 2.0, 3.0, 4.0]).__next__)
    frame = tracker.begin_call("m", 1)  # t=0
    token = tracker.enter("kernel_execution")  # t=1: other 1 s
    tracker.exit(token)  # t=2: kernel 1 s
    frame.off_thread_s = 0.5  # batches made on tf.data threads while the call waited in its graph
    tracker.teardown_begins(frame)  # t=3: the iterator is released
    tracker.end_call(frame)  # t=4: teardown 1 s
    assert frame.teardown_s == pytest.approx(1.0)
    assert frame.totals["data_adapter"] == pytest.approx(1.5)
    assert frame.totals["kernel_execution"] == pytest.approx(0.5)


def test_diagnose_refuses_phase_every_it_cannot_use():
    import tfdiag
    from tfdiag.session import DiagnoseError

    with pytest.raises(DiagnoseError, match="needs call timing"):
        tfdiag.diagnose(timing=False, phase_every=4)
    with pytest.raises(DiagnoseError, match="1 or more"):
        tfdiag.diagnose(phase_every=0)


def test_a_borrowed_split_brings_its_share_of_iterator_teardown():
    collector = Collector()
    split = dict.fromkeys(PHASES, 0.0)
    collector.add_call("predict", "m", "x.py:1", "big", 0.0, 2.0, dict(split, kernel_execution=1.0,
                                                                        data_adapter=1.0), weight=1,
                       teardown_s=0.8)
    collector.add_call("predict", "m", "x.py:9", "big", 0.0, 1.0, dict(split, other=1.0), weight=0)
    calls = {c["call_site"]: c for c in collector.sections()["calls"]}
    assert calls["x.py:9"]["phase_split_pooled"]
    assert calls["x.py:9"]["data_adapter_teardown_s"] == pytest.approx(0.4)
    assert calls["x.py:9"]["data_adapter_teardown_s"] <= calls["x.py:9"]["phases"]["data_adapter"]
