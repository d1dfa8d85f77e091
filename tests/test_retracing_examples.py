"""Every retracing example through `tfdiag analyze`: the right code, function and argument."""

import pytest

from tfdiag import cli
from tfdiag.recording import load

from .conftest import EXAMPLES, run_tfdiag

pytestmark = pytest.mark.tf

CASES = [
    ("shape.py", "retrace-shape", "encode", "tokens", "dimension 1 varies (5, 9, 13, …)"),
    ("dtype.py", "retrace-dtype", "normalize", "x", "x: float64 → float32"),
    ("python_value.py", "retrace-python-value", "sample", "temperature",
     "temperature: Python float 1.0 → 0.95 — every distinct value is a new trace"),
    ("new_object.py", "retrace-new-object", "apply", "cfg", "cfg: a new Scale object"),
    ("structure.py", "retrace-structure", "total", "parts", "parts: list of 2 tensors → 3 tensors"),
    ("new_function.py", "retrace-new-function", "scaled", None, "a new tf.function object for the same code, created at"),
    ("model_rebuilt.py", "model-rebuilt", "sequential", None, "a new tf.function object"),
]


def _analyze(tmp_path, script):
    out = tmp_path / "out"
    status = cli.main(["analyze", "--no-cprofile", "--no-tf-profiler", "-o", str(out),
                       str(EXAMPLES / "retracing" / script)])
    assert status == 0
    return load(out / "recording.json"), (out / "report.html").read_text()


@pytest.mark.parametrize("script, code, function, argument, evidence", CASES, ids=[c[0] for c in CASES])
def test_each_cause_is_named(tmp_path, script, code, function, argument, evidence):
    recording, page = _analyze(tmp_path, script)
    # Keras numbers model names per process (sequential, sequential_1, ...): match the base name.
    matches = [f for f in recording.findings if f["code"] == code
               and (f["function"] == function or f["function"].startswith(function + "_"))]
    assert matches, [(f["code"], f["function"]) for f in recording.findings]
    finding = matches[0]
    if argument is not None:
        assert argument in finding["details"]["arguments"]
        assert f"`{argument}`" in finding["title"]
    assert any(evidence in e for e in finding["evidence"]), finding["evidence"]
    assert finding["fix"]["code"]
    assert finding["estimated_savings_s"] > 0
    function = finding["function"]
    other_retrace_codes = {f["code"] for f in recording.findings
                           if f["function"] == function and f["code"] != code and f["code"].startswith("retrace")}
    assert not other_retrace_codes
    assert function in page and code in page


def test_clean_script_gets_no_retrace_finding(tmp_path):
    recording, _ = _analyze(tmp_path, "clean.py")
    assert [f for f in recording.findings if f["code"].startswith("retrace")] == []
    score = next(f for f in recording.functions if f["name"] == "score")
    assert score["trace_count"] == 1


def test_shape_fix_is_a_signature_with_none_where_it_varied(tmp_path):
    recording, _ = _analyze(tmp_path, "shape.py")
    finding = next(f for f in recording.findings if f["code"] == "retrace-shape")
    assert "input_signature=[tf.TensorSpec([1, None], tf.int32)]" in finding["fix"]["code"]


def test_trace_records_call_site_and_duration(tmp_path):
    recording, _ = _analyze(tmp_path, "python_value.py")
    sample = next(f for f in recording.functions if f["name"] == "sample")
    assert sample["origin"] == "user"
    for trace in sample["traces"]:
        assert trace["call_site"].endswith("python_value.py:13")
        assert trace["duration_s"] > 0
        assert [a["name"] for a in trace["args"]] == ["logits", "temperature"]


def test_tf_data_functions_are_labelled(tmp_path):
    out = tmp_path / "o"
    assert cli.main(["analyze", "--no-cprofile", "--no-tf-profiler", "-o", str(out),
                     str(EXAMPLES / "predict_loop.py"), "--calls", "3"]) == 0
    recording = load(out / "recording.json")
    origins = {f["name"]: f["origin"] for f in recording.functions}
    data = [n for n, o in origins.items() if o == "tf.data"]
    assert len(data) == 3, origins
    assert origins["one_step_on_data_distributed"] == "keras"
    codes = {f["code"] for f in recording.findings}
    assert {"model-rebuilt", "predict-overhead"} <= codes
    # predict()'s per-call tf.data traces are in the predict-overhead finding's graph_creation: its evidence, once.
    assert "tfdata-retrace" not in codes
    (overhead,) = [f for f in recording.findings if f["code"] == "predict-overhead"]
    assert any("traces of tf.data's functions over 6 calls (3.0 per call" in e for e in overhead["evidence"]), overhead


@pytest.mark.parametrize("script, code, function", [
    ("shape.py", "retrace-shape", "encode"),
    ("model_rebuilt.py", "model-rebuilt", "sequential"),
])
def test_tf_keras(tmp_path, script, code, function):
    out = tmp_path / "o"
    result = run_tfdiag("analyze", "--no-cprofile", "--no-tf-profiler", "-o", str(out),
                        str(EXAMPLES / "retracing" / script), env_extra={"TF_USE_LEGACY_KERAS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    recording = load(out / "recording.json")
    if script == "model_rebuilt.py":
        assert recording.environment["keras_flavor"] == "tf-keras"
    assert any(f["code"] == code and f["function"] == function for f in recording.findings), \
        [(f["code"], f["function"]) for f in recording.findings]


@pytest.mark.parametrize("script", sorted(p.name for p in (EXAMPLES / "retracing").glob("*.py")))
def test_trace_counts_equal_tensorflows_own(script, monkeypatch):
    """For every user tf.function an example makes, tfdiag's trace count is TensorFlow's own
    ``experimental_get_tracing_count()``, summed over the function objects made for that code."""
    import inspect
    import os
    import runpy

    import tensorflow as tf

    import tfdiag

    path = str(EXAMPLES / "retracing" / script)
    made = []  # every tf.function object the example makes, kept alive to be asked afterwards
    original = tf.function

    def keep(function):
        if hasattr(function, "experimental_get_tracing_count"):
            made.append(function)
        return function

    def probe(*args, **kwargs):
        if args and callable(args[0]):
            return keep(original(*args, **kwargs))
        decorator = original(*args, **kwargs)
        return lambda fn: keep(decorator(fn))

    monkeypatch.setattr(tf, "function", probe)
    with tfdiag.diagnose(cprofile=False, tf_profiler=False) as d:
        runpy.run_path(path, run_name="__main__")
    theirs: dict[str, int] = {}
    for function in made:
        code = inspect.unwrap(function.python_function).__code__
        if os.path.samefile(code.co_filename, path):
            theirs[function.__name__] = theirs.get(function.__name__, 0) + function.experimental_get_tracing_count()
    ours = {f["name"]: f["trace_count"] for f in d.recording.functions
            if f["origin"] == "user" and os.path.samefile(f["defined_at"].rsplit(":", 1)[0], path)}
    assert ours == theirs
    assert ours or script == "model_rebuilt.py"  # every other example has a user tf.function


# A tf.function that creates variables on its first call is traced twice by that call (TensorFlow's
# design): never a retrace. ``train_step`` then really retraces once, for a new batch size.
VARIABLES_SCRIPT = '''
import json, os
import numpy as np
import tensorflow as tf

keras = tf.keras


class Accumulator:
    def __init__(self):
        self.total = None

    @tf.function
    def add(self, x):
        if self.total is None:
            self.total = tf.Variable(tf.zeros_like(x))
        self.total.assign_add(x)
        return self.total


accumulator = Accumulator()
for _ in range(4):
    accumulator.add(tf.ones([3]))

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
optimizer = keras.optimizers.Adam()


@tf.function
def train_step(x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss


for _ in range(4):
    train_step(tf.ones([8, 4]), tf.ones([8, 2]))
train_step(tf.ones([16, 4]), tf.ones([16, 2]))  # a real retrace: another batch size

fitted = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
fitted.compile(optimizer="adam", loss="mse")
fitted.fit(np.ones([16, 4], "float32"), np.ones([16, 2], "float32"), batch_size=8, verbose=0)

counts = {"add": accumulator.add.experimental_get_tracing_count(),
          "train_step": train_step.experimental_get_tracing_count()}
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "counts.json"), "w") as f:
    json.dump(counts, f)
'''


def _check_variable_creation(recording, counts):
    functions = {f["name"]: f for f in recording.functions if f["origin"] == "user"}
    assert {name: functions[name]["trace_count"] for name in counts} == counts == {"add": 2, "train_step": 3}
    for name in counts:  # the first call: a trace that created variables, then the same call without
        first, second = functions[name]["traces"][:2]
        assert (first.get("variable_creation"), second.get("variable_creation")) == (True, False), name
        assert first["args"] == second["args"]
    retraces = [(f["code"], f["function"]) for f in recording.findings
                if f["code"].startswith("retrace") or f["code"] == "model-rebuilt"]
    assert retraces == [("retrace-shape", "train_step")], retraces
    (finding,) = [f for f in recording.findings if f["code"] == "retrace-shape"]
    assert finding["details"]["retraces"] == 1 and finding["details"]["arguments"] == ["x", "y"]
    assert any("a first call traced again because it creates variables" in e for e in finding["evidence"])
    # Keras's training function creates the optimizer's variables on its first call too: a note, no finding.
    assert any(t.get("variable_creation") is False for f in recording.functions if f["origin"] == "keras"
               for t in f["traces"]), [f["name"] for f in recording.functions]


def test_first_call_creating_variables_is_not_a_retrace(tmp_path):
    import json
    import runpy

    import tfdiag
    from tfdiag.analysis import analyze

    script = tmp_path / "variables.py"
    script.write_text(VARIABLES_SCRIPT)
    with tfdiag.diagnose(cprofile=False, tf_profiler=False) as d:
        runpy.run_path(str(script), run_name="__main__")
    recording = d.recording
    recording.findings = analyze(recording).findings
    _check_variable_creation(recording, json.loads((tmp_path / "counts.json").read_text()))
    view = {f["name"]: f for f in analyze(recording).retracing}
    second = view["add"]["traces"][1]
    assert [c["cause"] for c in second["changes"]] == ["variable-creation"]
    assert "traced twice on its first call because it creates variables" in second["changes"][0]["text"]


def test_first_call_creating_variables_is_not_a_retrace_tf_keras(tmp_path):
    import json

    script = tmp_path / "variables.py"
    script.write_text(VARIABLES_SCRIPT)
    out = tmp_path / "o"
    result = run_tfdiag("analyze", "--no-cprofile", "--no-tf-profiler", "-o", str(out), str(script),
                        env_extra={"TF_USE_LEGACY_KERAS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    recording = load(out / "recording.json")
    assert recording.environment["keras_flavor"] == "tf-keras"
    _check_variable_creation(recording, json.loads((tmp_path / "counts.json").read_text()))
