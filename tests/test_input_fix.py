"""The input-bound fix for a PyDataset, a Sequence or a generator follows what capture measured of
batch making: the producer thread's CPU seconds against its wall seconds (``data_producer``'s
``cpu_seconds`` and ``seconds``). Mostly waiting: threads; mostly pure Python: processes, with the
pickling and ``__main__`` guard they need; unknown: both said, threads in the code. The unmeasured
saving is at most wait × (1 − 1/N) for N workers. Analysis tests on the training_*.json recordings;
one real-TF test that capture records the CPU seconds."""

import copy
import json
import textwrap

import pytest

from tfdiag import cli
from tfdiag.analysis import analyze, input_bound, training
from tfdiag.recording import Recording, load

from .conftest import DATA


def data(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def input_bound_finding(raw: dict) -> dict:
    found = [f for f in analyze(Recording.from_dict(raw)).findings if f["code"] == "input-bound"]
    assert len(found) == 1, [f["title"] for f in found]
    return found[0]


def producer_made(raw: dict, seconds: float, cpu: float | None, **fields) -> dict:
    """``raw`` with every producer of a PyDataset/generator given these wall and CPU seconds."""
    raw = copy.deepcopy(raw)
    for call in raw["calls"]:
        producer = call.get("data_producer")
        if isinstance(producer, dict) and producer.get("kind") in ("PyDataset", "generator"):
            producer["seconds"] = seconds
            producer.pop("cpu_seconds", None)
            if cpu is not None:
                producer["cpu_seconds"] = cpu
            producer.update(fields)
    return raw


def steady_wait(raw: dict) -> float:
    """The wait for batches over the fit()'s steady steps (what the estimate is a share of)."""
    call = Recording.from_dict(raw).calls[0]
    return training.step_split(call)["data_adapter"] * training.steady_steps(call)


# -- what was measured decides threads or processes ----------------------------------------------
@pytest.mark.parametrize("name, cls", [("training_callbacks", "SlowData"), ("training_generator", "Batches")])
def test_a_waiting_producer_gets_threads(name, cls):
    finding = input_bound_finding(producer_made(data(name), 1.40, 0.02))
    code, text = finding["fix"]["code"], finding["fix"]["text"]
    assert "use_multiprocessing" not in code and "__main__" not in code
    assert f"class {cls}(keras.utils.PyDataset)" in code and "super().__init__(workers=4, **kwargs)" in code
    assert "threads" in text and "`workers=4` and no `use_multiprocessing`" in text and "picklable" not in text
    # the evidence says what was measured, and what it means
    assert any("took 1.40 s to make, 20 ms of it on the CPU (1%): waiting" in e for e in finding["evidence"])
    assert finding["details"]["cpu_share"] == pytest.approx(0.02 / 1.40)


@pytest.mark.parametrize("name, cls", [("training_callbacks", "SlowData"), ("training_generator", "Batches")])
def test_a_pure_python_producer_gets_processes_with_their_conditions(name, cls):
    finding = input_bound_finding(producer_made(data(name), 1.40, 1.30))
    code, text = finding["fix"]["code"], finding["fix"]["text"]
    assert "workers=2, use_multiprocessing=True, **kwargs" in code
    assert 'if __name__ == "__main__":' in code and f"    model.fit({cls}(" in code  # fit() under the guard
    assert "processes pickle it: open files and connections in __getitem__" in code
    assert "pure-Python work (93% of its time on the CPU)" in text and "GIL" in text
    assert "picklable" in text and 'if __name__ == "__main__":' in text
    assert any("1.30 s of it on the CPU (93%): pure-Python work" in e for e in finding["evidence"])


@pytest.mark.parametrize("name", ["training_callbacks", "training_generator"])
def test_unknown_cpu_time_explains_both_and_shows_threads(name):
    raw = data(name)  # recorded before cpu_seconds: unknown
    assert all("cpu_seconds" not in (c.get("data_producer") or {}) for c in raw["calls"])
    finding = input_bound_finding(raw)
    code, text = finding["fix"]["code"], finding["fix"]["text"]
    assert "super().__init__(workers=2, **kwargs)" in code and "add use_multiprocessing=True" in code
    assert "__main__" not in code
    assert "mostly waits" in text and "pure-Python" in text and "picklable" in text and "shows threads" in text
    assert any("how much of it was CPU work is unknown" in e for e in finding["evidence"])
    assert finding["details"]["cpu_share"] is None


def test_tf_keras_passes_workers_to_fit():
    raw = producer_made(data("training_callbacks"), 1.40, 0.02)
    raw["environment"]["keras_flavor"] = "tf-keras"
    code = input_bound_finding(raw)["fix"]["code"]
    assert code.startswith("model.fit(SlowData(...), workers=4, use_multiprocessing=False, ...)  # at train_cb.py:58")
    raw = producer_made(data("training_callbacks"), 1.40, 1.30)
    raw["environment"]["keras_flavor"] = "tf-keras"
    code = input_bound_finding(raw)["fix"]["code"]
    assert code.startswith('if __name__ == "__main__":')
    assert "    model.fit(SlowData(...), workers=2, use_multiprocessing=True, ...)" in code
    raw = producer_made(data("training_generator"), 1.40, 1.30)
    raw["environment"]["keras_flavor"] = "tf-keras"
    code = input_bound_finding(raw)["fix"]["code"]
    assert code.startswith("class Batches(keras.utils.Sequence):") and "super().__init__" not in code
    assert "    model.fit(Batches(), workers=2, use_multiprocessing=True, ...)" in code


def test_batches_from_keras_s_worker_queue_have_no_cpu_share():
    # With workers > 1 the timed thread only waits on Keras's queue: its CPU time says nothing of
    # __getitem__, so the advice is both options, keeping the processes the user already runs.
    raw = producer_made(data("training_callbacks"), 1.40, 0.01, workers=2, use_multiprocessing=True)
    finding = input_bound_finding(raw)
    assert finding["details"]["cpu_share"] is None
    assert "workers=4, use_multiprocessing=True" in finding["fix"]["code"]  # more than the 2 it has
    assert "processes, as you run now" in finding["fix"]["text"]
    assert any("Keras's worker threads or processes" in e for e in finding["evidence"])


# -- the unmeasured saving ---------------------------------------------------------------------------
@pytest.mark.parametrize("cpu, cpus, fraction", [
    (0.02, 2, 1 - 1 / 4),          # waiting: 4 threads, at most 3/4 of the wait
    (0.02, 16, 1 - 1 / 8),         # 8 threads where there are the cores to suggest them
    (1.30, 2, 0.5 * (1 - 1 / 2)),  # pure Python: 2 processes, half their bound
    (1.30, 1, 0.0),                # one CPU: processes cannot run in parallel
    (None, 2, 0.5 * (1 - 1 / 2)),  # unknown: the smaller of the two
])
def test_savings_are_bounded_by_the_workers(cpu, cpus, fraction):
    raw = producer_made(data("training_generator"), 1.40, cpu)
    raw["environment"]["cpu_count"] = cpus
    finding = input_bound_finding(raw)
    wait = steady_wait(raw)
    assert finding["estimated_savings_s"] == pytest.approx(wait * fraction)
    workers = finding["details"]["workers"]
    assert finding["estimated_savings_s"] <= wait * (1 - 1 / workers) + 1e-12
    assert finding["severity"] in ("medium", "low")  # unmeasured: never high
    if cpus == 1:
        assert "1 CPU" in finding["fix"]["text"]


@pytest.mark.parametrize("cpu", [0.02, 1.30])
def test_measured_fix_shows_the_threads_verify_timed(cpu):
    raw = producer_made(data("training_callbacks"), 1.40, cpu)
    raw["alternatives"] = [
        {"kind": "training", "target": "classifier", "path": "input:as_written", "median_s": 0.0060,
         "speedup": 1.0, "equivalent": True, "max_abs_diff": 0.0, "steps_timed": 32},
        {"kind": "training", "target": "classifier", "path": "input:workers", "median_s": 0.0020,
         "speedup": 3.0, "equivalent": True, "max_abs_diff": 0.0, "steps_timed": 32, "workers": 3}]
    finding = input_bound_finding(raw)
    # --verify's input:workers runs __getitem__ on that many threads: the code shows what was timed
    assert finding["fix"]["verified"] is True and "--verify timed 3 threads" in finding["fix"]["text"]
    assert "super().__init__(workers=3, **kwargs)" in finding["fix"]["code"]
    assert "use_multiprocessing" not in finding["fix"]["code"]
    # measured: the saving is what --verify measured (2/3 of the wait, over the 1/2 an estimate allows)
    fit = Recording.from_dict(raw).calls[0]
    fit_wait = training.step_split(fit)["data_adapter"] * training.steady_steps(fit)
    assert finding["estimated_savings_s"] >= fit_wait * (1 - 1 / 3) - 1e-12


def test_threshold_sits_between_waiting_and_computing():
    """Under WAITING_SHARE: waiting (threads); from CPU_BOUND_SHARE: pure Python (processes); between,
    the share cannot tell (a pure-Python producer also waits for the GIL and a core): both explained."""
    raw = data("training_callbacks")
    said = {}
    for cpu in (0.34, 0.36, 0.69, 0.70, 0.71):
        finding = input_bound_finding(producer_made(raw, 1.40, cpu))
        code = finding["fix"]["code"]
        line = next(e for e in finding["evidence"] if "to make" in e)
        said[cpu] = ("processes" if "workers=2, use_multiprocessing=True" in code else
                     "threads" if "(it waits)" in code else "both" if "between waiting and computing" in line else "?")
    assert (input_bound.WAITING_SHARE, input_bound.CPU_BOUND_SHARE) == (0.25, 0.5)
    assert said == {0.34: "threads", 0.36: "both", 0.69: "both", 0.70: "processes", 0.71: "processes"}, said


# -- capture records the producer's CPU seconds -----------------------------------------------------
SLEEPY = """
    import time
    import numpy as np
    import keras

    class Sleepy(keras.utils.PyDataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            time.sleep(0.03)
            return np.ones((8, 4), "float32"), np.ones((8, 1), "float32")

    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    m.compile("sgd", "mse")
    m.fit(Sleepy(), epochs=1, verbose=0)
"""


@pytest.mark.tf
def test_capture_records_the_producer_s_cpu_seconds(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SLEEPY))
    out = tmp_path / "out"
    assert cli.main(["analyze", "--no-cprofile", "--no-tf-profiler", "-o", str(out), str(script)]) == 0
    recording = load(out / "recording.json")
    producer = next(c for c in recording.calls if c["api"] == "fit")["data_producer"]
    assert producer["kind"] == "PyDataset" and producer["batches"] >= 6
    assert producer["seconds"] >= 6 * 0.03 * 0.9  # six 30 ms sleeps, timed where they ran
    assert isinstance(producer["cpu_seconds"], float) and 0 <= producer["cpu_seconds"]
    assert producer["cpu_seconds"] / producer["seconds"] < 0.5, producer  # sleeping is not computing


def test_one_cpu_and_a_pure_python_producer_promise_no_saving_in_the_verdict():
    """Processes cannot make batches in parallel on one CPU: the saving is 0, the fix says why, and
    the verdict does not say "fixing it would save about 0.00 ms"."""
    from tfdiag.analysis import analyze
    from tfdiag.recording import Recording

    raw = producer_made(data("training_generator"), 1.40, 1.35)
    raw["environment"]["cpu_count"] = 1
    result = analyze(Recording.from_dict(raw))
    (finding,) = [f for f in result.findings if f["code"] == "input-bound"]
    assert finding["estimated_savings_s"] == 0 and "This machine has 1 CPU" in finding["fix"]["text"]
    assert "no saving is estimated on this machine" in result.verdict and "0.00 ms" not in result.verdict
