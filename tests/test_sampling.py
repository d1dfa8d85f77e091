"""Sampled phase splits: the sampler, the switchable patches, and the estimate (no TensorFlow)."""

import random
import time
import types

import pytest

from tfdiag.capture import patching
from tfdiag.capture.call_stats import CallStats
from tfdiag.capture.collector import Collector
from tfdiag.capture.phase_tracker import PhaseTracker
from tfdiag.capture.sampling import PhaseSampler
from tfdiag.recording import PHASES


def test_fast_call_sites_are_sampled_less_often_unless_the_user_chose_the_rate():
    from tfdiag.capture import sampling

    def site(typical_s):  # a call site's statistics with calls kept in place of about that duration
        stats = CallStats("tf.function", "step", "loop.py:3", "(8, 8) float32", False)
        for index in range(12):
            stats.light.extend((float(index), typical_s * (1.1 if index % 2 else 0.9), None))
        return stats

    sampler = PhaseSampler()  # the default: adaptive
    assert sampler.adaptive and sampler.every == sampling.EVERY
    budget = sampling.SAMPLED_CALL_S / sampling.BUDGET  # seconds of calls per sampled call
    assert sampler.site_every(site(0.1)) == sampling.EVERY  # slow calls: one in EVERY
    assert sampler.site_every(site(budget / 100)) == pytest.approx(100, abs=12)  # BUDGET of the site's time
    assert sampler.site_every(site(1e-7)) == sampling.MAX_EVERY
    early = CallStats("tf.function", "step", "loop.py:3", "(8, 8) float32", False)  # nothing in place yet
    early.count, early.total_s, early.first_s = 3, 0.2 + 2 * budget / 300, 0.2
    assert sampler.site_every(early) == pytest.approx(300, abs=2)  # the calls after the first
    # Measured: one in ~100 at such a call site, drawn at random.
    state = [1, sampling.FIRST_CALLS, site(budget / 100), sampling.EVERY]
    gaps = []
    for _ in range(2000):
        state[0] = 1
        sampler.sampled(state)
        gaps.append(state[0])
    assert 80 < sum(gaps) / len(gaps) < 125
    # A countdown drawn at one in 32 (after the first calls, before any call was kept in place to
    # tell their time) runs out at a call site that calls for one in ~100: the call is sampled with
    # probability 32/100, else a new countdown at the new rate starts.
    kept = 0
    for _ in range(4000):
        state = [1, sampling.FIRST_CALLS, site(budget / 100), sampling.EVERY]
        taken = sampler.sampled(state)
        kept += taken
        assert state[3] == pytest.approx(100, abs=12) and state[0] >= 1
    assert 0.27 < kept / 4000 < 0.37
    # Call by call: the first calls, a countdown drawn at one in 32 (nothing kept in place yet),
    # then calls kept in place tell their time: about one in 100 from there on.
    stats = CallStats("tf.function", "step", "loop.py:3", "(8, 8) float32", False)
    fresh = PhaseSampler(seed=3)
    weights = [fresh.weight("loop")]
    fresh.sites["loop"][2] = stats  # (linked by the collector after the first call)
    weights += [fresh.weight("loop") for _ in range(sampling.FIRST_CALLS)]
    assert weights == [1] * (1 + sampling.FIRST_CALLS) and fresh.sites["loop"][3] == sampling.EVERY
    stats.light.extend(site(budget / 100).light)
    later = [fresh.weight("loop") for _ in range(20000)]
    assert 0.007 < sum(later) / len(later) < 0.014
    chosen = PhaseSampler(every=8)  # the user's rate is kept
    state = [1, sampling.FIRST_CALLS, site(budget / 100), 8]
    means = []
    for _ in range(2000):
        chosen.sampled(state)
        means.append(state[0])
    assert not chosen.adaptive and 6 < sum(means) / len(means) < 10


def test_sampler_takes_the_first_call_and_the_next_unprofiled_calls_then_one_in_every():
    sampler = PhaseSampler(every=4, first=3, seed=1)
    weights = [sampler.weight("site") for _ in range(4004)]
    assert weights[:4] == [1, 1, 1, 1]  # the first call, then 3 more
    later = weights[4:]
    assert set(later) == {0, 1}
    assert 800 < later.count(1) < 1200  # one in 4 of 4000, at random
    # At random: the gaps between sampled calls vary (no loop period can line up with them), and
    # about a quarter of the sampled calls follow a sampled call, as deciding each call would give.
    picked = [index for index, weight in enumerate(later) if weight]
    gaps = [b - a for a, b in zip(picked, picked[1:])]
    assert len(set(gaps)) > 8 and 0.18 < gaps.count(1) / len(gaps) < 0.32
    assert PhaseSampler(every=4, first=3, seed=1).weight("other") == 1  # counted per call site
    again = PhaseSampler(every=4, first=3, seed=1)
    assert [again.weight("site") for _ in range(4004)] == weights  # seeded: reproducible


def test_profiled_calls_use_up_none_of_the_first_calls():
    sampler = PhaseSampler(every=10**9, first=5)
    assert "site" not in sampler.sites
    assert sampler.weight("site") == 1  # the first call
    weights = []
    for index in range(20):  # every other call runs under a profiler
        weights.append(sampler.weight("site", profiled=index % 2 == 0))
    assert weights[0::2] == [0] * 10  # profiled: never sampled
    assert weights[1::2] == [1] * 5 + [0] * 5  # five unprofiled calls after the first, whatever came between
    profiled_first = PhaseSampler(every=10**9, first=2)
    assert profiled_first.weight("s", profiled=True) == 0  # a first call a profiler took: not sampled
    assert [profiled_first.weight("s") for _ in range(3)] == [1, 1, 0]


def test_sampler_every_one_measures_every_call():
    sampler = PhaseSampler(every=1, first=0)
    assert {sampler.weight("m") for _ in range(100)} == {1}


def _phases(**seconds):
    out = dict.fromkeys(PHASES, 0.0)
    out.update(seconds)
    return out


def test_first_call_apart_and_the_steady_estimate_adds_up_to_the_wall_time():
    stats = CallStats("__call__", "m", "x.py:1", "float32[1]")
    # The first call traces (always sampled); later calls: 1 in 16 sampled.
    stats.add(0.5, _phases(graph_creation=0.45, other=0.05), True)
    for index in range(160):
        if index % 16 == 0:
            stats.add(0.010, _phases(kernel_execution=0.006, other=0.004), True)
        else:
            stats.add(0.010, _phases(other=0.010), False)  # unsampled: only wall time counts
    stats.add(0.3, _phases(graph_creation=0.29, other=0.01), False)  # a retrace in an unsampled call
    assert stats.first_s == 0.5
    assert stats.first_phases["graph_creation"] == 0.45 and sum(stats.first_phases.values()) == pytest.approx(0.5)
    steady = stats.steady_phases()
    assert sum(steady.values()) == pytest.approx((stats.total_s - 0.5) / 161)
    assert steady["graph_creation"] == pytest.approx(0.29 / 161)  # measured on every call, never estimated
    # The first call's one-off costs stay out: kernel and other split 6:4 as in the sampled later calls.
    assert steady["kernel_execution"] == pytest.approx((1.9 - 0.29) * 0.6 / 161)
    assert steady["other"] == pytest.approx((1.9 - 0.29) * 0.4 / 161)
    split = stats.phases()
    assert split["graph_creation"] == pytest.approx(0.74)
    assert sum(split.values()) == pytest.approx(stats.total_s)
    for name in PHASES:
        assert split[name] == pytest.approx(stats.first_phases[name] + steady[name] * 161)
    assert stats.phase_calls == 10  # sampled calls after the first


def test_profiled_calls_count_in_the_wall_time_and_graph_creation_not_in_the_split():
    collector = Collector()
    collector.add_call("tf.function", "step", "x.py:1", "sig", 0.0, 0.1, _phases(graph_creation=0.09, other=0.01))
    # Call 2 runs under cProfile and retraces: its tracing time is kept.
    collector.add_call("tf.function", "step", "x.py:1", "sig", 0.2, 0.12, _phases(graph_creation=0.1, other=0.02),
                       profiled=True, sampled=False)
    for index in range(5):
        collector.add_call("tf.function", "step", "x.py:1", "sig", 1.0 + index, 0.01,
                           _phases(kernel_execution=0.008, other=0.002))
    call = collector.sections()["calls"][0]
    assert call["count"] == 7 and call["profiled_calls"] == 1 and call["phase_calls"] == 5
    assert call["total_s"] == pytest.approx(0.1 + 0.12 + 0.05)
    assert call["phases"]["graph_creation"] == pytest.approx(0.19)
    assert call["total_s"] >= call["phases"]["graph_creation"]
    assert sum(call["phases"].values()) == pytest.approx(call["total_s"])
    # The profiled call's other 0.02 s is spread in the unprofiled calls' proportions (8:2) in
    # the call site's totals ...
    assert call["phases"]["kernel_execution"] == pytest.approx((0.17 - 0.1) * 0.8)
    # ... but a normal call after the first is an unprofiled one: 10 ms, no tracing.
    steady = call["steady_phases"]
    assert sum(steady.values()) == pytest.approx(0.01) and steady["graph_creation"] == 0.0
    assert steady["kernel_execution"] == pytest.approx(0.008)
    assert call["median_s"] == pytest.approx(0.01)  # profiled durations stay out of the percentiles
    assert call["first_phases"]["graph_creation"] == 0.09 and call["first_s"] == 0.1
    # The reservoir the percentiles come from is written too (tfdiag diff bootstraps from it):
    # the first call's time and the unprofiled ones, not the profiled call's.
    assert sorted(call["durations_sample_s"]) == pytest.approx([0.01] * 5 + [0.1])


def test_collector_samples_carry_phases_only_when_sampled():
    collector = Collector()
    split = dict.fromkeys(PHASES, 0.0)
    collector.add_call("predict", "m", "x.py:1", "sig", 0.0, 0.01, dict(split, other=0.01), sampled=True)
    collector.add_call("predict", "m", "x.py:1", "sig", 0.1, 0.02, dict(split, graph_creation=0.015, other=0.005),
                       sampled=False, teardown_s=0.0)
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
        frame = tracker.begin_call("m", 1)
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
                                                                               other=0.002), sampled=True)
    # another line, whose calls after the first were all profiled; one of them traced
    collector.add_call("__call__", "m", "x.py:9", "sig", 0.0, 0.020, dict(split, other=0.020), sampled=True)
    collector.add_call("__call__", "m", "x.py:9", "sig", 0.0, 0.050, dict(split, graph_creation=0.040,
                                                                           other=0.010), sampled=False, profiled=True)
    collector.add_call("__call__", "m", "x.py:9", "sig", 0.0, 0.010, dict(split, other=0.010), sampled=False,
                       profiled=True)
    calls = {c["call_site"]: c for c in collector.sections()["calls"]}
    borrowed = calls["x.py:9"]
    assert borrowed["phase_split_pooled"] and borrowed["phase_calls"] == 0
    assert borrowed["phases"]["graph_creation"] == pytest.approx(0.040)
    # The other site's calls after its first (8:2) split the 0.020 s outside graph creation.
    assert borrowed["steady_phases"]["kernel_execution"] == pytest.approx(0.020 * 0.8 / 2)
    assert borrowed["first_phases"]["other"] == pytest.approx(0.020)  # its own first call, not borrowed
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
    for _ in range(2):
        collector.add_call("predict", "m", "x.py:1", "big", 0.0, 2.0, dict(split, kernel_execution=1.0,
                                                                            data_adapter=1.0), sampled=True,
                           teardown_s=0.8)
    collector.add_call("predict", "m", "x.py:9", "big", 0.0, 1.0, dict(split, other=1.0), sampled=True)
    collector.add_call("predict", "m", "x.py:9", "big", 0.0, 1.0, dict(split, other=1.0), sampled=False, profiled=True)
    calls = {c["call_site"]: c for c in collector.sections()["calls"]}
    assert calls["x.py:9"]["phase_split_pooled"]
    assert calls["x.py:9"]["steady_teardown_s"] == pytest.approx(0.4)
    assert calls["x.py:9"]["data_adapter_teardown_s"] == pytest.approx(0.4)
    assert calls["x.py:9"]["data_adapter_teardown_s"] <= calls["x.py:9"]["phases"]["data_adapter"]
    assert calls["x.py:1"]["data_adapter_teardown_s"] == pytest.approx(1.6)  # its first call's, plus the steady


def test_a_call_site_first_call_is_never_taken_by_cprofile():
    from tfdiag.capture import gates
    from tfdiag.capture.cprofile import ProfileGate

    gate = ProfileGate(Collector())
    assert gates.start_all([gate], "predict", first=True) == []  # call 1
    assert gates.start_all([gate], "predict", first=True) == []  # call 2, its turn: the next call stands in
    taken = gates.start_all([gate], "predict")  # call 3
    assert taken
    gates.stop_all(taken)
    assert [p["call_number"] for p in gate.profiled] == [3]


def test_cprofile_still_runs_in_a_loop_whose_every_call_is_a_new_call_site():
    from tfdiag.capture import gates
    from tfdiag.capture.cprofile import ProfileGate
    from tfdiag.capture.gates import MAX_WAIT

    gate = ProfileGate(Collector())
    for _ in range(MAX_WAIT + 2):  # a new input shape every call: each one a call site's first
        taken = gates.start_all([gate], "tf.function", first=True)
        if taken:
            gates.stop_all(taken)
    assert [p["call_number"] for p in gate.profiled] == [2 + MAX_WAIT]  # call 2's turn, after waiting


def _predict_site(later_kernel_share: float, outlier: bool = False) -> dict:
    """A 40-call predict site: a first call, calls 2-6 sampled, one random later sample, and 7
    calls under a profiler (three times slower): the call entry collected from them."""
    collector = Collector()

    def add(duration, sampled, profiled=False, share=0.5):
        phases = _phases(kernel_execution=duration * share, other=duration * (1 - share))
        collector.add_call("predict", "m", "x.py:1", "sig", 0.0, duration, phases, sampled=sampled, profiled=profiled)

    add(0.2, True, share=0.1)  # the first call
    for _ in range(5):
        add(0.010, True)
    add(0.010, True, share=later_kernel_share)  # the random later sample
    if outlier:  # a sampled call the OS stretched
        add(0.2, True, share=0.95)
    for index in range(33 - outlier):
        add(0.030 if index % 5 == 0 else 0.010, False, profiled=index % 5 == 0)
    (call,) = collector.sections()["calls"]
    return call


def test_profiled_calls_do_not_inflate_the_steady_split():
    call = _predict_site(0.5)
    assert call["count"] == 40 and call["profiled_calls"] == 7
    # A normal call after the first costs 10 ms: the profilers' slowdown stays out of it ...
    steady = call["steady_phases"]
    assert sum(steady.values()) == pytest.approx(0.010)
    assert steady["kernel_execution"] == pytest.approx(0.005)
    # ... while the call site's totals hold every call's wall time.
    assert sum(call["phases"].values()) == pytest.approx(call["total_s"])
    assert call["phases"]["kernel_execution"] == pytest.approx(0.2 * 0.1 + (call["total_s"] - 0.2) * 0.5)


def test_every_sampled_call_weighs_the_same():
    # Calls 2-6 put half of each call in kernels, the one random later sample 90%: with equal
    # weights it is one sample of six, not 32 calls' worth of the split.
    call = _predict_site(0.9)
    assert call["phase_calls"] == 6
    kernel = call["steady_phases"]["kernel_execution"] / sum(call["steady_phases"].values())
    assert kernel == pytest.approx((5 * 0.5 + 0.9) / 6)


def test_a_sample_the_os_stretched_is_left_out():
    call = _predict_site(0.5, outlier=True)
    assert call["phase_calls"] == 6  # of 7 samples: the 200 ms one is 20x their median
    assert call["steady_phases"]["kernel_execution"] == pytest.approx(0.5 * sum(call["steady_phases"].values()))
    # It still counts in the wall time: a normal call's mean includes it.
    assert sum(call["steady_phases"].values()) == pytest.approx((0.010 * 31 + 0.2) / 32)  # 31 calls of 10 ms and it


def test_the_tf_profiler_never_takes_a_call_sites_first_call():
    from tfdiag.capture import gates
    from tfdiag.capture.tf_profiler import TfProfilerGate

    gate = TfProfilerGate(Collector(), calls=3, first_call=3)
    opened = []
    gate._open = lambda: (opened.append(gate.calls_seen), setattr(gate, "state", "open"))[1] is None
    gate._close = lambda: setattr(gate, "state", "done")
    for first in (True, False, True):  # calls 1-3: call 3, the window's first, is a new call site's first
        assert gates.start_all([gate], "predict", first=first) == []
    assert gate.first_call == 4 and not opened  # the window moved on to call 4
    taken = gates.start_all([gate], "predict")  # call 4
    assert taken and opened == [4]
    gates.stop_all(taken)
    # A first call while the window is open: the window ends first, and the call runs unprofiled.
    assert gates.start_all([gate], "predict", first=True) == [] and gate.state == "done"
    assert [p["call_number"] for p in gate.profiled] == [4]


def test_the_tf_profiler_takes_a_first_call_only_after_waiting(monkeypatch):
    from tfdiag.capture import gates
    from tfdiag.capture.tf_profiler import TfProfilerGate

    gate = TfProfilerGate(Collector(), calls=1, first_call=3)
    monkeypatch.setattr(gate, "_open", lambda: setattr(gate, "state", "open") is None)
    monkeypatch.setattr(gate, "_close", lambda: setattr(gate, "state", "done"))
    for _ in range(3 + gates.MAX_WAIT):  # a new input shape every call: each one a call site's first
        taken = gates.start_all([gate], "tf.function", first=True)
        if taken:
            gates.stop_all(taken)
    assert [p["call_number"] for p in gate.profiled] == [3 + gates.MAX_WAIT]


def test_a_first_call_a_profiler_took_is_said_on_the_page():
    from tfdiag.analysis import phases

    collector = Collector()
    collector.add_call("tf.function", "f", "x.py:1", "float32[1]", 0.0, 0.1, _phases(graph_creation=0.06, other=0.04),
                       profiled=True, sampled=False)
    (call,) = collector.sections()["calls"]
    assert call["first_call_measured"] is False
    assert call["first_phases"]["graph_creation"] == 0.06 and call["first_phases"]["other"] == pytest.approx(0.04)
    (row,) = phases.phase_rows([call])
    assert row["first_measured"] is False
    assert "measured_count" not in call and "profiled_median_s" not in call
    from tfdiag.analysis import analyze
    from tfdiag.recording import Recording
    from tfdiag.renderers import html

    sections = collector.sections()
    sections.pop("call_samples_total")
    page = html.render_report(analyze(Recording(**sections)))
    assert "it ran under a profiler" in page
    call["first_call_measured"] = True
    assert "it ran under a profiler" not in html.render_report(analyze(Recording(calls=[call])))


def test_a_full_garbage_collection_inside_a_call_is_other_time():
    import gc

    ticks = iter(range(100))
    tracker = PhaseTracker(clock=lambda: float(next(ticks)))
    frame = tracker.begin_call("m", 0)  # t=0
    token = tracker.enter("graph_creation")  # t=1: other 1
    tracker.collection("start", {"generation": 2})  # t=2: graph 1
    tracker.collection("stop", {"generation": 2})  # t=3: the collection, 1 s of other
    tracker.collection("start", {"generation": 0})  # young generations: left where they fall
    tracker.exit(token)  # t=4: graph 1 more
    tracker.end_call(frame)  # t=5: other 1
    assert frame.totals["graph_creation"] == 2.0 and frame.totals["other"] == 3.0
    # A real one, inside a traced function, in a diagnosis: it stays out of graph_creation.
    import tensorflow as tf

    import tfdiag

    seconds = {}

    @tf.function
    def traced(x):
        junk = [[] for _ in range(200_000)]
        for a, b in zip(junk, junk[1:]):
            a.append(b)
            b.append(a)
        del junk
        start = time.perf_counter()
        gc.collect()
        seconds["collect"] = time.perf_counter() - start
        return x + 1

    with tfdiag.diagnose(cprofile=False, tf_profiler=False) as d:
        traced(tf.constant(1.0))
    (call,) = d.recording.calls
    (function,) = [f for f in d.recording.functions if f["name"] == "traced"]
    assert seconds["collect"] > 0.02
    assert call["phases"]["graph_creation"] < function["trace_s"] - 0.8 * seconds["collect"]
    assert call["phases"]["other"] > 0.8 * seconds["collect"]
    assert d.tracker.collection not in gc.callbacks  # removed when the diagnosis ends


def test_a_phase_switched_to_during_a_collection_stays():
    ticks = iter(range(100))
    tracker = PhaseTracker(clock=lambda: float(next(ticks)))
    frame = tracker.begin_call("m", 1)  # t=0
    tracker.enter("kernel_execution")  # t=1: other 1
    tracker.collection("start", {"generation": 2})  # t=2: kernel 1
    tracker.teardown_begins(frame)  # t=3: other 1 (the collection); a finalizer it ran: the iterator's teardown
    tracker.collection("stop", {"generation": 2})  # t=4: data_adapter 1
    tracker.end_call(frame)  # t=5: the rest of the call is still teardown
    assert frame.stack == ["other", "kernel_execution", "data_adapter"]
    assert frame.totals["data_adapter"] == 2.0 and frame.teardown_s == 2.0 and frame.totals["other"] == 2.0


def test_finished_profilers_leave_the_call_path():
    from tfdiag.capture import gates
    from tfdiag.capture.cprofile import ProfileGate

    gate = ProfileGate(Collector(), max_calls=1)
    shared = [gate]
    assert gates.start_all(shared, "predict", first=True) == []  # call 1
    taken = gates.start_all(shared, "predict")  # call 2: its one call
    assert taken and shared == [gate]
    gates.stop_all(taken)
    assert gates.start_all(shared, "predict") == [] and shared == []  # done: no more cost per call


def test_the_reservoir_keeps_a_uniform_sample_drawing_few_random_numbers():
    from tfdiag.capture.sampling import Reservoir

    rng = random.Random(3)
    drawn = [0]
    real = rng.random

    def counted():
        drawn[0] += 1
        return real()

    rng.random = counted
    kept = [0] * 10
    for _ in range(40):
        reservoir = Reservoir(50, rng)
        for item in range(10_000):
            reservoir.offer(item)
        assert len(reservoir.items) == 50 and len(set(reservoir.items)) == 50 and reservoir.seen == 10_000
        for item in reservoir.items:
            kept[item // 1000] += 1
    # Every tenth of the stream is kept about as often (50 of 10,000: 200 per tenth over 40 runs) ...
    assert all(140 < count < 260 for count in kept), kept
    # ... and items not kept drew no random number: about 3 x 50 x ln(200) draws per run, not 10,000.
    assert drawn[0] < 40 * 1200


def test_a_reservoir_fed_in_batches_keeps_what_one_fed_item_by_item_keeps():
    """``extend`` skips straight to the next item to keep: the same items, the same draws."""
    from tfdiag.capture.sampling import Reservoir

    for size, batches in ((5, [3, 1, 7, 100, 2, 0, 50]), (64, [256] * 20), (1, [10] * 10)):
        batched, single = Reservoir(size, random.Random(7)), Reservoir(size, random.Random(7))
        count = 0
        for length in batches:
            items = list(range(count, count + length))
            count += length
            batched.extend(items)
            for item in items:  # the reservoir's own per-item rule
                single.seen += 1
                if len(single.items) < single.size:
                    single.items.append(item)
                elif single.seen >= single.next:
                    single.keep(item)
            assert (batched.items, batched.seen, batched.next) == (single.items, single.seen, single.next)
        assert batched.seen == count and len(batched.items) == size
        assert batched.items != list(range(size))  # later items did replace early ones
