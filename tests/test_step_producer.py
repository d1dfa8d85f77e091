"""A training step's share of its producer's time (capture/steps.py, capture/producers.py), on
an injected clock: no TensorFlow. The producer's batches are made on another thread, and a step
is charged the production that overlapped it, from the graph call's time and then from Keras's
own Python around it (where the producer's GIL kept it waiting)."""

from types import SimpleNamespace

import pytest

from tfdiag.capture import producers, steps
from tfdiag.recording import PHASES


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _frame(now: float):
    return SimpleNamespace(totals=dict.fromkeys(PHASES, 0.0), last=now)


def _spend(frame, **seconds) -> None:
    for phase, s in seconds.items():
        frame.totals[phase] += s


def test_a_batch_still_in_the_making_is_charged_to_the_step_it_overlapped():
    """The producer began its batch before the step and finishes it after: the old accounting,
    by batches finished within the step, charged the step nothing (CI read 46% of a step as the
    producer's where ~85% was)."""
    clock = Clock(1.0)
    log = steps.StepLog("train", {}, None, True)
    log.made = (0.5, 0.5)
    log.making[1] = (0.995, lambda: clock.now - 0.995)  # in pure Python: its CPU keeps pace
    frame = _frame(1.0)
    log.open(1.0, frame, "train")
    clock.now = 1.010
    _spend(frame, kernel_execution=0.004, other=0.005, callbacks=0.001)
    log.close(clock.now, frame, "train")
    # 10 ms of production overlapped the step: the graph call's 4 ms, then Keras's 5 ms of Python
    assert log.first_phases["data_adapter"] == pytest.approx(0.009)
    assert log.first_phases["kernel_execution"] == pytest.approx(0.0)
    assert log.first_phases["other"] == pytest.approx(0.0)
    assert log.first_phases["callbacks"] == pytest.approx(0.001)  # the user's callback keeps its time


def test_a_producer_holding_no_gil_leaves_kerass_own_python_alone():
    """A producer that sleeps (I/O) overlapping the whole step, with no ready time for the step's
    batch: the graph call's wait is its, Keras's Python around the call is not."""
    clock = Clock(1.0)
    log = steps.StepLog("train", {}, None, True)
    log.made = (0.5, 0.0)
    log.making[1] = (0.995, lambda: 0.0)
    frame = _frame(1.0)
    log.open(1.0, frame, "train")
    _spend(frame, kernel_execution=0.004, other=0.005, callbacks=0.001)
    log.close(1.010, frame, "train")
    assert log.first_phases["data_adapter"] == pytest.approx(0.004)
    assert log.first_phases["kernel_execution"] == pytest.approx(0.0)
    assert log.first_phases["other"] == pytest.approx(0.005)


def test_production_that_did_not_overlap_the_step_is_not_charged_to_it():
    clock = Clock(1.0)
    log = steps.StepLog("train", {}, None, True)
    log.made = (0.2, 0.2)  # its batches were made before the step
    frame = _frame(1.0)
    log.open(1.0, frame, "train")
    _spend(frame, kernel_execution=0.004, other=0.001)
    log.close(1.005, frame, "train")
    assert log.first_phases["data_adapter"] == 0.0
    assert log.first_phases["kernel_execution"] == pytest.approx(0.004)


def test_a_producer_waiting_on_io_is_charged_its_wait_for_the_batch_not_its_wall():
    """A producer that sleeps (I/O) holds no GIL: the step owes it only the wait for its batch."""
    clock = Clock(0.0)
    log = steps.StepLog("train", {}, None, True)

    def batches():
        clock.now += 0.010  # the batch takes 10 ms of wall and no CPU of this thread's
        yield 1
        clock.now += 0.010
        yield 2

    made = producers.timed_producer(batches, clock, log=log)()
    frame = _frame(0.0)
    assert next(made) == 1  # batch 0, ready at 0.010, before the step
    log.open(0.012, frame, "train")
    clock.now = 0.012
    assert next(made) == 2  # batch 1 is made during the step; the step takes batch 0
    _spend(frame, kernel_execution=0.006, other=0.002)
    log.close(0.020, frame, "train")
    held = log.first_phases["data_adapter"]
    assert 0.0 <= held < 0.001, log.first_phases  # its CPU seconds only (this test's own, ~0)
    assert log.making == {} and log.made[0] == pytest.approx(0.020)


def test_the_producer_is_not_left_in_the_making_after_its_end_or_its_error():
    clock = Clock(0.0)
    log = steps.StepLog("train", {}, None, True)

    def failing():
        yield 1
        raise ValueError("bad row")

    made = producers.timed_producer(failing, clock, log=log)()
    assert next(made) == 1
    with pytest.raises(ValueError):
        next(made)
    assert log.making == {} and log.batches == 1
    assert log.produced(5.0) == log.made
    done = producers.timed_producer(lambda: iter([1]), clock, log=log)()
    assert list(done) == [1] and log.making == {} and log.batches == 2


def test_without_a_per_thread_cpu_clock_the_batch_in_the_making_counts_its_wall_only(monkeypatch):
    monkeypatch.setattr(producers, "pthread_getcpuclockid", None)
    clock = Clock(0.0)
    log = steps.StepLog("train", {}, None, True)
    seen = []

    def batches():
        clock.now = 0.004
        seen.append(log.produced(clock.now))
        yield 1

    assert list(producers.timed_producer(batches, clock, log=log)()) == [1]
    assert seen == [(pytest.approx(0.004), 0.0)]  # its CPU counts when the batch is done
    assert log.made[0] == pytest.approx(0.004) and log.made[1] >= 0.0


@pytest.mark.skipif(producers.pthread_getcpuclockid is None, reason="no per-thread CPU clock here")
def test_the_batch_in_the_making_counts_the_cpu_its_thread_spent_so_far():
    from time import thread_time

    clock = Clock(0.0)
    log = steps.StepLog("train", {}, None, True)
    seen = []

    def batches():
        began = thread_time()
        while thread_time() - began < 0.02:  # 20 ms of pure Python, the GIL held
            pass
        clock.now = 0.03
        seen.append(log.produced(clock.now))
        yield 1

    assert list(producers.timed_producer(batches, clock, log=log)()) == [1]
    (wall, cpu), = seen
    assert wall == pytest.approx(0.03) and cpu >= 0.02


def test_two_producers_in_the_making_both_count_and_one_ending_leaves_the_other():
    """A fit's validation pass can make batches while the training pass makes its own."""
    log = steps.StepLog("train", {}, None, True)
    log.making[1] = (1.000, lambda: 0.004)
    log.making[2] = (1.002, lambda: 0.002)
    assert log.produced(1.006) == (pytest.approx(0.010), pytest.approx(0.006))
    del log.making[2]  # thread 2's batch is done: its seconds join ``made`` (producers.py)
    log.made = (0.004, 0.002)
    assert log.produced(1.006) == (pytest.approx(0.010), pytest.approx(0.006))


def test_kerass_own_cpu_time_is_not_taken_for_the_producers_gil():
    """The training thread ran on the CPU the whole step (Keras's own Python): however much CPU
    the producer spent meanwhile on another core, the step's other time is Keras's."""
    from time import thread_time

    clock = Clock(1.0)
    log = steps.StepLog("train", {}, None, True)
    log.made = (0.5, 0.5)
    log.making[1] = (0.995, lambda: clock.now - 0.995)  # in pure Python on another core
    frame = _frame(1.0)
    log.open(1.0, frame, "train")
    began = thread_time()
    while thread_time() - began < 0.012:  # on the CPU for longer than the 10 ms step below
        pass
    clock.now = 1.010
    _spend(frame, kernel_execution=0.004, other=0.005, callbacks=0.001)
    log.close(clock.now, frame, "train")
    assert log.first_phases["other"] == pytest.approx(0.005)
    assert log.first_phases["data_adapter"] == pytest.approx(0.004)  # the graph call's wait


@pytest.mark.skipif(producers.pthread_getcpuclockid is None, reason="no per-thread CPU clock here")
def test_the_training_thread_reads_the_cpu_of_the_producers_thread():
    import threading
    from time import perf_counter, thread_time

    log = steps.StepLog("train", {}, None, True)
    burned, read = threading.Event(), threading.Event()

    def batches():
        began = thread_time()
        while thread_time() - began < 0.02:  # 20 ms of pure Python on the producer's thread
            pass
        burned.set()
        read.wait(10)
        yield 1

    made = producers.timed_producer(batches, perf_counter, log=log)()
    producer = threading.Thread(target=lambda: list(made))
    producer.start()
    assert burned.wait(10)
    seconds, cpu = log.produced(perf_counter())  # on this thread, the batch still in the making
    read.set()
    producer.join(10)
    assert cpu >= 0.02 and seconds >= cpu * 0.99
    assert log.making == {} and log.batches == 1
