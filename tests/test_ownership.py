"""tfdiag speaks only about code the user can change, with advice that fits the context.

The first part runs the rules on hand-made recordings (no TensorFlow); the second runs small
scripts through tfdiag on real Keras 3 and tf-keras and checks the same promises end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tfdiag.analysis import analyze, retracing
from tfdiag.recording import PHASES, Recording

from .conftest import EXAMPLES



# -- hand-made recordings ----------------------------------------------------------------------
def _tensor(shape, dtype="float32", name=None):
    arg = {"kind": "tensor", "shape": shape, "dtype": dtype}
    return dict(arg, name=name) if name else arg


def _trace(index, args, site="s.py:9", **extra):
    return {"index": index, "call_site": site, "duration_s": 0.04, "args": args, **extra}


def _function(name, traces, origin="keras", **extra):
    return {"name": name, "qualname": name, "origin": origin, "defined_at": f"/lib/{origin}/x.py:1",
            "trace_count": len(traces), "trace_s": sum(t["duration_s"] for t in traces),
            "traces": traces, "traces_dropped": 0, **extra}


def _data(*shapes):
    return [{"name": "data", "kind": "list", "length": 1, "items": [_tensor(s) for s in shapes]}]


def _library_names(recording: Recording) -> set[str]:
    return {f["name"] for f in recording.functions if f.get("origin", "user") != "user"}


def _assert_owned(recording: Recording, found: list[dict]) -> None:
    """No medium/high retrace finding on a library function, no fix code naming one."""
    internal = _library_names(recording)
    for finding in found:
        assert not any(name in (finding["fix"].get("code") or "") for name in internal), finding
        if finding["function"] in internal and finding["code"].startswith("retrace"):
            assert finding["severity"] == "low", finding


def _codes(recording: Recording) -> list[tuple[str, str]]:
    found = analyze(recording).findings
    _assert_owned(recording, found)
    return [(f["code"], f["function"]) for f in found]


def test_a_keras_shape_relaxation_is_no_finding_and_is_explained():
    # predict with a short last batch: Keras traces its step once more with None, later sizes reuse it.
    step = _function("one_step_on_data_distributed", [
        _trace(1, _data([64, 4]), reduce_retracing=True),
        _trace(2, _data([None, 4]), reduce_retracing=True)], model="sequential", role="predict")
    recording = Recording(functions=[step])
    assert _codes(recording) == []
    (explanation,) = retracing.explain_all(recording.functions)[0]
    assert explanation.kind == "relaxation"
    assert "bounded relaxation, nothing to change" in explanation.changes[-1].text


def test_an_iterator_spec_relaxation_on_tf_keras_is_no_finding():
    def spec(shape):
        return [{"name": "iterator", "kind": "other", "type": "IteratorSpec",
                 "repr": f"IteratorSpec((TensorSpec(shape={shape}, dtype=tf.float32, name=None),),)"}]
    predict = _function("predict_function", [_trace(1, spec("(1, 4)"), reduce_retracing=True),
                                             _trace(2, spec("(None, 4)"), reduce_retracing=True)],
                        model="sequential", role="predict")
    assert _codes(Recording(functions=[predict])) == []


def test_fit_evaluate_predict_each_trace_their_own_and_x_y_against_x_is_not_a_finding():
    xy = [{"name": "data", "kind": "tuple", "length": 2, "items": [_tensor([None, 4]), _tensor([None, 1])]}]
    one_step = _function("one_step_on_data", [
        _trace(1, xy, site="s.py:8", role="train"),
        _trace(2, xy, site="s.py:8", role="train"),                    # another context, same inputs
        _trace(3, xy, site="s.py:9", role="test", new_object=True),    # evaluate's own function
        _trace(4, [dict(xy[0], length=1, items=xy[0]["items"][:1])], site="s.py:10", role="predict",
               new_object=True)], model="m")
    init = _function("initialize_variables", [_trace(1, []), _trace(2, [], new_object=True)], origin="tensorflow")
    assert _codes(Recording(functions=[one_step, init])) == []


def test_roles_missing_are_read_from_the_api_called_at_the_trace_site():
    xy = [{"name": "data", "kind": "tuple", "length": 2, "items": [_tensor([None, 4]), _tensor([None, 1])]}]
    one_step = _function("one_step_on_data", [_trace(1, xy, site="s.py:8"),
                                              _trace(2, xy, site="s.py:9", new_object=True)])
    calls = [_call("fit", "s.py:8", count=1), _call("evaluate", "s.py:9", count=1)]
    assert _codes(Recording(functions=[one_step], calls=calls)) == []


@pytest.mark.parametrize("role, words, api", [("predict", "predict function", "predict_on_batch"),
                                              ("train", "training function", "fit"),
                                              ("test", "evaluation function", "evaluate")])
def test_a_recompiled_model_is_model_rebuilt_worded_for_its_role(role, words, api):
    traces = [_trace(i, _data([8, 4]), site="/u/loop.py:11", compiled_at="/u/loop.py:10", role=role,
                     new_object=i > 1) for i in (1, 2, 3)]
    step = _function("one_step_on_data_distributed", traces, model="seq", model_created_at="/u/loop.py:7")
    recording = Recording(functions=[step], calls=[_call(api, "/u/loop.py:11", count=3)])
    found = analyze(recording).findings
    _assert_owned(recording, found)
    (finding,) = [f for f in found if f["code"] == "model-rebuilt"]
    assert finding["code"] == "model-rebuilt"
    assert words in finding["title"] and "loop.py:10" in finding["title"]
    others = {"predict function", "training function", "evaluation function"} - {words}
    assert not any(other in finding["title"] for other in others)
    assert finding["call_site"] == "/u/loop.py:10"
    assert finding["details"]["role"] == role and finding["details"]["retraces"] == 2
    assert "compile(" in finding["fix"]["code"] and f"model.{api}(" in finding["fix"]["code"]


def test_one_rebuild_of_several_functions_is_one_finding():
    def traces():
        return [_trace(i, _data([None, 4]), compiled_at="/u/t.py:5", role="train", new_object=i > 1) for i in (1, 2)]
    functions = [_function("one_step_on_data", traces(), model="m"),
                 _function("multi_step_on_iterator", traces(), model="m")]
    (finding,) = analyze(Recording(functions=functions)).findings
    assert finding["code"] == "model-rebuilt" and finding["details"]["retraces"] == 1
    assert set(finding["details"]["functions"]) == {"one_step_on_data", "multi_step_on_iterator"}


def test_a_recreated_model_points_at_the_line_that_creates_it():
    traces = [_trace(i, _data([8, 4]), role="predict", new_object=i > 1) for i in (1, 2)]
    step = _function("predict_function", traces, model="net", model_created_at="/u/serve.py:4")
    (finding,) = analyze(Recording(functions=[step])).findings
    assert finding["code"] == "model-rebuilt" and finding["call_site"] == "/u/serve.py:4"
    assert "created again at serve.py:4" in finding["title"]


def test_growth_in_a_keras_function_gets_a_fix_at_the_users_call_site_when_it_costs():
    traces = [_trace(i, _data([n, 4]), site="/u/p.py:6") for i, n in enumerate((1, 8, 32, 5), start=1)]
    step = _function("predict_step", traces, model="m", role="predict")
    recording = Recording(functions=[step], calls=[_call("predict_on_batch", "/u/p.py:6", count=4)])
    found = analyze(recording).findings
    _assert_owned(recording, found)
    (finding,) = [f for f in found if f["code"].startswith("retrace")]
    assert finding["code"] == "retrace-shape" and finding["call_site"] == "/u/p.py:6"
    assert finding["function"] == "seq" and finding["details"]["traced_function"] == "predict_step"
    assert "predict_on_batch()" in finding["title"] and "np.pad" in finding["fix"]["code"]
    cheap = dict(step, traces=[dict(t, duration_s=0.001) for t in traces])
    assert analyze(Recording(functions=[cheap])).findings == []


def test_tf_data_functions_are_tfdata_retrace_only():
    data = [_function("Dataset_map_grab_batch", [_trace(i, [_tensor([None], name="args_0")], site="/u/p.py:5", new_object=i > 1)
                                                 for i in (1, 2, 3)], origin="tf.data")]
    recording = Recording(functions=data, calls=[_call("predict", "/u/p.py:5", count=3)])
    assert [c for c in _codes(recording) if c[0] != "predict-overhead"] == [("tfdata-retrace", "predict")]


def test_a_user_function_retracing_on_shapes_still_gets_an_input_signature():
    encode = _function("encode", [_trace(i, [_tensor([1, n], "int32", name="tokens")]) for i, n in
                                  enumerate((5, 9, 13), start=1)], origin="user")
    (finding,) = analyze(Recording(functions=[encode])).findings
    assert finding["code"] == "retrace-shape"
    assert "input_signature=[tf.TensorSpec([1, None], tf.int32)]" in finding["fix"]["code"]


# -- call advice ---------------------------------------------------------------------------------
def _call(api, site, count=40, target="seq", training=None, caller=None, spec=None, shares=None):
    phases = dict.fromkeys(PHASES, 0.0)
    phases.update(shares or {"other": 0.7, "input_processing": 0.1, "kernel_execution": 0.2})
    call = {"api": api, "target": target, "call_site": site, "input_signature": "float32[32, 4]", "batch": 32,
            "count": count, "median_s": 0.004, "p95_s": 0.005, "first_s": 0.05, "total_s": 0.004 * count,
            "phases": {p: v * 0.004 * count for p, v in phases.items()},
            "steady_phases": {p: v * 0.004 for p, v in phases.items()}}
    if training is not None:
        call["training"] = training
    if caller is not None:
        call["caller"] = caller
    if spec is not None:
        call["input_spec"] = spec
    return call


LITERT_FASTER = [{"target": "seq", "path": "__call__", "median_s": 0.004, "equivalent": True, "max_abs_diff": 0.0},
                 {"target": "seq", "path": "litert", "median_s": 0.0001, "equivalent": True, "max_abs_diff": 0.0}]


def test_an_eager_training_loop_gets_a_tf_function_on_the_step_and_no_inference_path():
    step = {"name": "train_step", "defined_at": "/u/train.py:12"}
    calls = [_call("__call__", "/u/train.py:14", training=True, caller=step),
             _call("__call__", "/u/train.py:16", training=True, caller=step)]
    recording = Recording(calls=calls, extra={"alternatives": [dict(e) for e in LITERT_FASTER]})
    (finding,) = analyze(recording).findings
    assert finding["code"] == "eager-loop" and finding["details"]["training"] is True
    assert finding["details"]["call_sites"] == ["/u/train.py:14", "/u/train.py:16"]
    fix = finding["fix"]
    assert "`train_step` (defined at train.py:12)" in fix["text"]
    assert fix["code"].startswith("@tf.function") and "def train_step(" in fix["code"]
    text = (fix["text"] + fix["code"]).lower()
    assert not any(word in text for word in ("litert", "predict", "serve", "training=false"))
    assert fix["verified"] is False
    compile(fix["code"].replace("(...)", "()"), "<fix>", "exec")


def test_steps_in_two_functions_are_two_fixes_and_module_level_gets_a_step_to_write():
    calls = [_call("__call__", "/u/t.py:5", training=True, caller={"name": "train_step", "defined_at": "/u/t.py:3"}),
             _call("__call__", "/u/t.py:9", training=True, caller={"name": "tune_step", "defined_at": "/u/t.py:8"}),
             _call("__call__", "/u/t.py:20", training=True)]
    found = analyze(Recording(calls=calls)).findings
    assert len(found) == 3
    codes = sorted(f["fix"]["code"].splitlines()[1] for f in found)
    assert codes == ["def train_step(...):", "def train_step(x, y):", "def tune_step(...):"]


def test_the_same_inference_fix_at_several_sites_is_one_finding_from_the_structured_spec():
    spec = {"a": {"shape": [32, 4], "dtype": "float32"}, "b": {"shape": [32], "dtype": "int32"}}
    calls = [_call("__call__", "/u/s.py:7", spec=spec), _call("__call__", "/u/s.py:9", count=30, spec=spec)]
    (finding,) = analyze(Recording(calls=calls)).findings
    assert finding["details"]["call_sites"] == ["/u/s.py:7", "/u/s.py:9"]
    assert ("input_signature=[{'a': tf.TensorSpec([None, 4], tf.float32), "
            "'b': tf.TensorSpec([None], tf.int32)}]") in finding["fix"]["code"]
    assert finding["estimated_savings_s"] == pytest.approx(0.5 * 0.8 * 0.004 * 70)
    compile(finding["fix"]["code"], "<fix>", "exec")


def test_the_signature_is_never_parsed_back_from_display_text():
    (finding,) = analyze(Recording(calls=[_call("__call__", "/u/s.py:7")])).findings
    assert "TensorSpec([None, 4]" not in finding["fix"]["code"]  # no input_spec: no shape claimed
    assert "input_signature=[tf.TensorSpec(None, tf.float32)]" in finding["fix"]["code"]
    compile(finding["fix"]["code"], "<fix>", "exec")
    assert retracing.spec_code([{"shape": [8, 3], "dtype": "float32"}, {"type": "int"}]) is None
    assert retracing.spec_code({"shape": None, "dtype": "int64"}) == "tf.TensorSpec(None, tf.int64)"


# -- real TensorFlow: Keras 3 and tf-keras ------------------------------------------------------
SCRIPTS = {
    "fit_evaluate_predict": """
        import numpy as np
        import tensorflow as tf
        keras = tf.keras
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        x = np.random.rand(100, 4).astype("float32")
        y = np.random.rand(100, 1).astype("float32")
        model.fit(x, y, epochs=2, batch_size=32, verbose=0)
        model.evaluate(x, y, batch_size=32, verbose=0)
        model.predict(x, batch_size=32, verbose=0)
    """,
    "short_last_batch": """
        import numpy as np
        import tensorflow as tf
        keras = tf.keras
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        x = np.random.rand(1000, 4).astype("float32")
        for _ in range(3):
            model.predict(x, batch_size=64, verbose=0)
    """,
    "predict_on_batch_sizes": """
        import numpy as np
        import tensorflow as tf
        keras = tf.keras
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        for n in (1, 8, 32, 5, 17, 64, 3):
            model.predict_on_batch(np.ones((n, 4), np.float32))
    """,
    "models_in_a_loop": """
        import numpy as np
        import tensorflow as tf
        keras = tf.keras
        x, y = np.ones((16, 4), np.float32), np.ones((16, 1), np.float32)
        for i in range(3):
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
            model.compile(optimizer="sgd", loss="mse")
            model.fit(x, y, epochs=1, verbose=0)
            model.predict_on_batch(x)
        same = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        for i in range(3):
            same.compile(optimizer="sgd", loss="mse")
            same.fit(x, y, epochs=1, verbose=0)
    """,
    "clean": """
        import numpy as np
        import tensorflow as tf
        keras = tf.keras

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def score(x):
            return tf.reduce_sum(x * 2.0, axis=-1)

        for b in (1, 8, 32):
            score(tf.ones((b, 4)))
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.predict(np.ones((5000, 4), np.float32), batch_size=1024, verbose=0)
    """,
    "eager_step": (EXAMPLES / "training" / "eager_step.py").read_text(),
}
REBUILT_LINES = {"models_in_a_loop": {7, 8, 13}}  # where each model is created or compiled
RECOMPILED_LINE = 13  # `same.compile(...)` in the second loop: the same model compiled again


def run_python(code: str, env_extra: dict, timeout: int):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env_extra})


@pytest.fixture(scope="module", params=["keras3", "tf-keras"])
def runs(request, tmp_path_factory):
    """Every script through `tfdiag analyze`, in one fresh process per Keras flavour."""
    from tfdiag.recording import load

    root = tmp_path_factory.mktemp(request.param)
    paths = {}
    for name, body in SCRIPTS.items():
        paths[name] = root / f"{name}.py"
        paths[name].write_text(textwrap.dedent(body))
    driver = (f"from tfdiag import cli\n"
              f"for name in {list(SCRIPTS)!r}:\n"
              f"    status = cli.main(['analyze', '--quiet', '--no-cprofile', '--no-tf-profiler',\n"
              f"                       '-o', {str(root)!r} + '/' + name, {str(root)!r} + '/' + name + '.py'])\n"
              f"    assert status == 0, (name, status)\n")
    legacy = "1" if request.param == "tf-keras" else "0"
    result = run_python(driver, env_extra={"TF_USE_LEGACY_KERAS": legacy}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return request.param, {name: load(root / name / "recording.json") for name in SCRIPTS}, paths


@pytest.mark.tf
@pytest.mark.parametrize("script", [s for s in SCRIPTS if s != "eager_step"])
def test_keras_and_tf_data_functions_get_no_retrace_advice(runs, script):
    flavor, recordings, paths = runs
    recording = recordings[script]
    assert recording.environment["keras_flavor"] == ("tf-keras" if flavor == "tf-keras" else "keras3")
    found = recording.findings
    _assert_owned(recording, found)
    for finding in found:
        if finding["code"] == "model-rebuilt":
            assert finding["call_site"] in {f"{paths[script]}:{line}" for line in REBUILT_LINES.get(script, ())}, \
                finding
            role = finding["details"]["role"]
            assert retracing.ROLE_TEXT[role] in finding["title"], finding["title"]
    if script == "clean":
        assert not [f for f in found if f["code"].startswith(("retrace", "model-rebuilt"))], found


@pytest.mark.tf
def test_a_model_recompiled_in_a_loop_is_model_rebuilt_at_the_compile_line(runs):
    _, recordings, paths = runs
    rebuilt = [f for f in recordings["models_in_a_loop"].findings if f["code"] == "model-rebuilt"
               and f["call_site"] == f"{paths['models_in_a_loop']}:{RECOMPILED_LINE}"]
    assert len(rebuilt) == 1, recordings["models_in_a_loop"].findings
    assert rebuilt[0]["details"]["role"] == "train" and rebuilt[0]["details"]["retraces"] == 2
    assert "training function" in rebuilt[0]["title"]


@pytest.mark.tf
def test_an_eager_gradient_tape_loop_gets_a_tf_function_on_its_step(runs):
    _, recordings, _ = runs
    recording = recordings["eager_step"]
    calls = [c for c in recording.calls if c["api"] == "__call__"]
    assert calls and all(c.get("training") for c in calls), calls
    assert all(c.get("caller", {}).get("name") == "train_step" for c in calls), calls
    (finding,) = [f for f in recording.findings if f["code"] == "eager-loop"]
    assert "`train_step` (defined at eager_step.py:17)" in finding["fix"]["text"]
    assert "def train_step(" in finding["fix"]["code"]
    assert "litert" not in (finding["fix"]["text"] + finding["fix"]["code"]).lower()
