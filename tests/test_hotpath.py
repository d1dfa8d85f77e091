"""The compiled common case of the timed-call wrapper (tfdiag/capture/_hotpath.c): built, and
recording exactly what the pure-Python wrapper records, on real tf.functions."""

import inspect
import threading
import types

import pytest

from tfdiag.capture import phase_tracker, timed_calls


def test_the_compiled_wrapper_is_built():
    assert timed_calls.HotCall is not None and phase_tracker.Gate is not None, (
        "tfdiag/capture/_hotpath.c was not built: `pip install -e .` needs gcc and the Python headers")


def test_a_gate_calls_the_original_until_a_sampled_call_holds_the_toggle():
    toggle = types.SimpleNamespace(users=0)
    seen = []

    class Owner:
        def method(self, x):
            return ("original", x)

    def slow(owner, x):
        seen.append(x)
        return ("slow", x)

    original = Owner.method
    Owner.method = phase_tracker.Gate(original, slow, toggle)
    owner = Owner()
    assert owner.method(1) == ("original", 1)  # bound as a method, as the function it replaces
    toggle.users = 1
    assert owner.method(x=2) == ("slow", 2) and seen == [2]
    assert Owner.method.__wrapped__ is original


def _loop(tf, step, step3, failing):
    """One run's calls: a loop at one line, two signatures alternating, new tensors of three
    signatures, a retracing Python float,
    keyword arguments, threads at once and one after another, calls that raise, two functions
    in one loop."""
    x, small = tf.ones((8, 8)), tf.ones((4, 8))
    for _ in range(300):
        step(x)
    for index in range(60):
        step(small if index % 2 else x)
    for index in range(60):  # a new tensor per call (no TensorShape cached on it yet); another dtype
        step(tf.ones((8, 8), tf.float64) if index % 20 == 19 else tf.ones((8, 8)) if index % 3 else tf.ones((4, 8)))
    for index in range(40):
        step3(x, small[:1], 2.0 if index < 20 else 3.0)  # a new float: one retrace
    for _ in range(30):
        step(x=x)
    workers = [threading.Thread(target=lambda: [step(x) for _ in range(50)], name=f"worker{i}") for i in range(4)]
    for worker in workers:  # at once, and with the loop below: a call may arm the wrapper while another runs
        worker.start()
    for _ in range(50):
        step(x)
    for worker in workers:
        worker.join()
    for _ in range(3):
        with pytest.raises(tf.errors.InvalidArgumentError):
            failing(x)
    x = -x
    for _ in range(40):
        step(x)  # after the failures: still timed
    for _ in range(100):  # two functions in one loop: each keeps its own
        step(x)
        step3(x, small[:1], 3.0)
    raised = 0
    for index in range(60):  # a call that raises after many that repeat it (the compiled way)
        try:
            failing(-x if index == 55 else x)
        except tf.errors.InvalidArgumentError:
            raised += 1
    assert raised == 1
    for index in range(4):  # threads one after another: a later thread may get an earlier one's id
        worker = threading.Thread(target=lambda: [step(x) for _ in range(40)], name=f"later{index}")
        worker.start()
        worker.join()


def _line_of(function, text: str) -> int:
    lines, first = inspect.getsourcelines(function)
    return next(first + index for index, line in enumerate(lines) if text in line)


_NEW_TENSORS_LINE = _line_of(_loop, "tf.float64) if index")


def _run(tf, tfdiag, compiled: bool, monkeypatch):
    from tensorflow.python.eager.polymorphic_function import polymorphic_function

    if not compiled:
        monkeypatch.setattr(timed_calls, "HotCall", None)
        monkeypatch.setattr(phase_tracker, "Gate", None)

    @tf.function
    def step(x):
        return tf.reduce_sum(x * 2.0)

    @tf.function
    def step3(x, y, scale):
        return tf.reduce_sum(x * scale + y)

    @tf.function
    def failing(x):  # raises for a positive x
        tf.debugging.assert_non_positive(x)
        return x

    original = polymorphic_function.Function.__call__
    with tfdiag.diagnose(cprofile=False, tf_profiler=False) as diagnosis:
        wrapper = polymorphic_function.Function.__dict__["__call__"]
        _loop(tf, step, step3, failing)
        assert not diagnosis.tracker.local.frames  # no frame left open, the failing calls' included
    assert polymorphic_function.Function.__call__ is original
    calls = {(c["target"], c["call_site"].rsplit(":", 1)[1], c["input_signature"], c["training"]): c
             for c in diagnosis.recording.calls}
    # One clock: the calls of this thread, kept in place in C or recorded in Python, follow one
    # another on the timeline without overlapping (the compiled wrapper reads time.perf_counter's clock).
    samples = sorted((s for s in diagnosis.recording.call_samples if s["thread"] == threading.current_thread().name),
                     key=lambda s: s["start_s"])
    assert len(samples) == sum(c["count"] for c in calls.values()) - 4 * 50 - 4 * 40
    for index in range(4):  # each later thread's calls on its own stack, under its own name
        assert sum(s["thread"] == f"later{index}" for s in diagnosis.recording.call_samples) == 40
    for before, after in zip(samples, samples[1:]):
        assert after["start_s"] >= before["start_s"] + before["duration_s"] - 1e-9
    return calls, getattr(wrapper, "fast_calls", None)


@pytest.mark.tf
def test_compiled_and_python_wrappers_record_the_same_calls(monkeypatch):
    import tensorflow as tf

    import tfdiag

    compiled, fast = _run(tf, tfdiag, True, monkeypatch)
    with monkeypatch.context() as patch:
        python, none = _run(tf, tfdiag, False, patch)
    assert none is None
    assert fast > 500  # the calls that repeat the last of their thread, function and line (300 + 2 x 100 + ...)
    counts = {key: c["count"] for key, c in compiled.items()}
    assert counts == {key: c["count"] for key, c in python.items()}
    assert sum(counts.values()) == 300 + 60 + 60 + 40 + 30 + 4 * 50 + 50 + 3 + 40 + 200 + 60 + 4 * 40
    by_target: dict = {}
    for (target, _, _, _), call in compiled.items():
        by_target[target] = by_target.get(target, 0) + call["count"]
    assert by_target == {"step": 1000, "step3": 140, "failing": 63}
    new = {key[2]: c["count"] for key, c in compiled.items() if key[1] == str(_NEW_TENSORS_LINE)}
    assert new == {"float32[8, 8]": 38, "float32[4, 8]": 19, "float64[8, 8]": 3}
    for calls in (compiled, python):
        (retraced, alternating) = sorted((c for (target, *_), c in calls.items() if target == "step3"),
                                         key=lambda c: c["count"])
        # its first call and the call with the new float traced: both graph creation, measured
        assert retraced["phases"]["graph_creation"] >= retraced["first_phases"]["graph_creation"] > 0
        assert retraced["phases"]["graph_creation"] > retraced["first_phases"]["graph_creation"]
        signatures = {key[2] for key in calls if key[0] == "step"}
        assert {"float32[8, 8]", "float32[4, 8]"} < signatures  # the alternating calls told apart
        for call in calls.values():
            assert sum(call["phases"].values()) == pytest.approx(call["total_s"], rel=1e-6)


@pytest.mark.tf
def test_an_extension_built_from_older_code_leaves_the_python_wrapper(monkeypatch):
    """A compiled wrapper that does not take this tfdiag's arguments (an editable install not
    rebuilt): the calls are timed by the Python wrapper, and the recording says why."""
    import tensorflow as tf

    import tfdiag

    def older(original, slow, capture, clock, tape_is_empty, settle, light_size):  # the old signature
        raise AssertionError("never called with the old arguments")

    monkeypatch.setattr(timed_calls, "HotCall", older)

    @tf.function
    def step(x):
        return x + 1.0

    with tfdiag.diagnose(cprofile=False, tf_profiler=False) as diagnosis:
        for _ in range(40):
            step(tf.ones(3))
    (call,) = [c for c in diagnosis.recording.calls if c["target"] == "step"]
    assert call["count"] == 40
    assert any("does not fit this tfdiag" in w["message"] for w in diagnosis.recording.warnings)


@pytest.mark.tf
def test_a_call_site_warmed_up_on_one_thread_and_served_by_others_is_kept_in_place():
    """The first call on the main thread (its record in that thread's buffer), then threads
    calling the same line: their calls are linked to the call site's statistics and repeat in C."""
    from tensorflow.python.eager.polymorphic_function import polymorphic_function
    import tensorflow as tf

    import tfdiag

    @tf.function
    def step(x):
        return tf.reduce_sum(x * 2.0)

    x = tf.ones((8, 8))

    def serve(count):
        for _ in range(count):
            step(x)

    with tfdiag.diagnose(cprofile=False, tf_profiler=False) as diagnosis:
        serve(1)  # the warm-up, on this thread: its only call
        wrapper = polymorphic_function.Function.__dict__["__call__"]
        workers = [threading.Thread(target=serve, args=(100,)) for _ in range(2)]
        for worker in workers:
            worker.start()
            worker.join()  # one after another: each thread's calls repeat its own last call
        fast = wrapper.fast_calls
    (call,) = [c for c in diagnosis.recording.calls if c["target"] == "step"]
    assert call["count"] == 201
    assert fast >= 150, fast  # without the link, none: every call of theirs recorded by the Python wrapper
