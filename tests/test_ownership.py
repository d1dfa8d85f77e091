"""tfdiag speaks only about code the user can change, with advice that fits the context.

The first part runs the rules on hand-made recordings (no TensorFlow); the second runs small
scripts through tfdiag on real Keras 3 and tf-keras and checks the same promises end to end.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from tfdiag.analysis import analyze, retracing, rules, views
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


def _growth(seconds_each=0.04, role="predict", site="/u/p.py:6", name="predict_step"):
    traces = [_trace(i, _data([n, 4]), site=site) for i, n in enumerate((1, 8, 32, 5), start=1)]
    return _function(name, [dict(t, duration_s=seconds_each) for t in traces], model="m", role=role)


def _internal_words(finding: dict, name: str) -> list[str]:
    """The texts a user reads (title, evidence, fix) that name an internal function."""
    texts = [finding["title"], *finding["evidence"], finding["fix"]["text"], finding["fix"].get("code") or ""]
    return [t for t in texts if name in t]


def test_growth_in_a_keras_function_gets_a_fix_at_the_users_call_site_when_it_costs():
    step = _growth()
    recording = Recording(functions=[step], calls=[_call("predict_on_batch", "/u/p.py:6", count=4)])
    found = analyze(recording).findings
    _assert_owned(recording, found)
    (finding,) = [f for f in found if f["code"].startswith("retrace")]
    assert finding["code"] == "retrace-shape" and finding["call_site"] == "/u/p.py:6"
    assert finding["function"] == "seq" and finding["details"]["traced_function"] == "predict_step"
    assert _internal_words(finding, "predict_step") == []  # the internal name lives in details only
    assert finding["severity"] == "low"  # 0.12 s of tracing: a note, not a problem
    assert "predict_on_batch()" in finding["title"] and "np.pad" in finding["fix"]["code"]
    assert "model.predict_on_batch(x)[:n]" in finding["fix"]["code"]
    cheap = dict(step, traces=[dict(t, duration_s=0.001) for t in step["traces"]])
    assert analyze(Recording(functions=[cheap])).findings == []


def test_growth_that_measurably_matters_is_medium_never_high():
    recording = Recording(functions=[_growth(seconds_each=0.4)], calls=[_call("predict_on_batch", "/u/p.py:6", count=4)])
    (finding,) = [f for f in analyze(recording).findings if f["code"].startswith("retrace")]
    assert finding["estimated_savings_s"] == pytest.approx(1.2) and finding["severity"] == "medium"


def test_growth_with_no_known_api_or_role_is_worded_without_code():
    (finding,) = analyze(Recording(functions=[_growth(role=None)])).findings
    assert finding["fix"]["code"] == ""
    assert "predict" not in (finding["title"] + finding["fix"]["text"]).lower()
    assert "Calls at p.py:6" in finding["title"]
    (training,) = analyze(Recording(functions=[_growth(role="train", name="train_step")])).findings
    assert "fit() at p.py:6" in training["title"] and "training function" in training["title"]
    assert "drop_remainder=True" in training["fix"]["code"] and "predict" not in training["fix"]["code"]


def test_a_rebuild_with_no_known_api_or_role_writes_no_call_code():
    traces = [_trace(i, _data([8, 4]), site="/u/loop.py:11", compiled_at="/u/loop.py:10", new_object=i > 1)
              for i in (1, 2)]
    (finding,) = analyze(Recording(functions=[_function("step_fn", traces, model="seq")])).findings
    assert finding["code"] == "model-rebuilt"
    assert finding["fix"]["code"] == "model.compile(...)  # once, before the loop (now at loop.py:10)"
    assert "predict()" not in finding["title"] + finding["fix"]["text"] + " ".join(finding["evidence"])
    assert "the next call traces them again" in finding["fix"]["text"]


def _tf_data_traces(site, calls):
    return [_function("Dataset_map_grab_batch", [_trace(i, [_tensor([None], name="args_0")], site=site, new_object=i > 1)
                                                 for i in range(1, calls + 1)], origin="tf.data")]


def test_tf_data_traces_of_a_predict_call_with_its_own_finding_are_in_that_finding_only():
    # predict() on small batches: predict-overhead covers the call site; its graph_creation holds the tf.data traces.
    recording = Recording(functions=_tf_data_traces("/u/p.py:5", 40),
                          calls=[_call("predict", "/u/p.py:5", count=40, shares={"graph_creation": 0.3, "data_adapter": 0.5,
                                                                                   "kernel_execution": 0.2})])
    found = analyze(recording).findings
    assert [f["code"] for f in found] == ["predict-overhead"]
    (finding,) = found
    assert any("40 traces of tf.data's functions over 40 calls (1.0 per call" in e for e in finding["evidence"])
    overhead = 0.8 * 0.004 * 40
    assert finding["estimated_savings_s"] == pytest.approx(overhead)  # the tracing is in it once, not added again


def test_tf_data_traces_no_call_finding_covers_are_tfdata_retrace_only():
    # A large-batch predict dominated by its kernels: no predict-overhead, so tf.data's traces get their own finding.
    kernels = {"kernel_execution": 0.8, "graph_creation": 0.2}
    calls = [dict(_call("predict", "/u/p.py:5", count=3, shares=kernels), batch=5000)]
    recording = Recording(functions=_tf_data_traces("/u/p.py:5", 3), calls=calls)
    assert _codes(recording) == [("tfdata-retrace", "predict")]
    (finding,) = analyze(recording).findings
    assert finding["estimated_savings_s"] == pytest.approx(0.12) and finding["details"]["call_sites"] == ["/u/p.py:5"]
    # Two predict() sites, one covered: only the other site's traces are counted.
    both = Recording(functions=_tf_data_traces("/u/p.py:5", 3) + _tf_data_traces("/u/q.py:9", 40),
                     calls=calls + [_call("predict", "/u/q.py:9", count=40)])
    data = [f for f in analyze(both).findings if f["code"] == "tfdata-retrace"]
    assert len(data) == 1 and data[0]["details"]["call_sites"] == ["/u/p.py:5"]
    assert data[0]["details"]["tfdata_traces"] == 3


def test_a_rebuild_at_a_predict_overhead_call_site_is_saved_once():
    traces = [_trace(i, _data([8, 4]), site="/u/loop.py:11", compiled_at="/u/loop.py:10", role="predict",
                     new_object=i > 1) for i in (1, 2, 3)]
    call = _call("predict_on_batch", "/u/loop.py:11", count=40,
                 shares={"graph_creation": 0.5, "other": 0.3, "kernel_execution": 0.2})
    found = {f["code"]: f for f in analyze(Recording(functions=[_function("step", traces, model="seq")],
                                                     calls=[call])).findings}
    assert found["model-rebuilt"]["estimated_savings_s"] == pytest.approx(0.08)
    # The overhead's graph_creation holds those 0.08 s of re-tracing: model-rebuilt counts them, not it.
    assert found["predict-overhead"]["estimated_savings_s"] == pytest.approx(0.8 * 0.004 * 40 - 0.08)


def test_the_retracing_section_and_the_findings_classify_a_keras_trace_the_same_way():
    # No roles recorded: the API called at each trace's call site says which function it was.
    traces = [_trace(1, _data([8, 4]), site="/u/s.py:8"), _trace(2, _data([8, 4]), site="/u/s.py:9", new_object=True)]
    step = _function("one_step_on_data", traces, model="m")
    for apis, expected in ((("fit", "evaluate"), "entry-point"), (("predict", "predict"), "rebuilt")):
        recording = Recording(functions=[step], calls=[_call(apis[0], "/u/s.py:8", count=1),
                                                       _call(apis[1], "/u/s.py:9", count=1)])
        (entry,) = views.retracing_view(recording)
        note = entry["traces"][1]["changes"][-1]["text"]
        codes = [f["code"] for f in rules.run_rules(recording)]
        if expected == "entry-point":
            assert "nothing to change" in note and codes == []
        else:
            assert "made this function again" in note and codes == ["model-rebuilt"]
        # analyze() shares one explanation between the page and the rules: they always agree.
        analysis = analyze(recording)
        shown = analysis.retracing[0]["traces"][1]["changes"][-1]["text"]
        assert ("model-rebuilt" in [f["code"] for f in analysis.findings]) == ("made this function again" in shown)


def test_a_tf_function_the_user_wraps_around_keras_code_is_theirs_with_the_fix_where_they_create_it():
    # tf.function(model.call) written by the user: Keras's code, the user's tf.function object.
    traces = [_trace(i, [_tensor([n, 4], name="inputs")], site="/u/serve.py:9", created_at="/u/serve.py:5",
                     code_origin="keras") for i, n in enumerate((1, 8, 32), start=1)]
    call = _function("call", traces, origin="user")
    (finding,) = analyze(Recording(functions=[call])).findings
    assert finding["code"] == "retrace-shape" and finding["function"] == "call"
    code = finding["fix"]["code"]
    assert code.startswith("tf.function(..., input_signature=[tf.TensorSpec([None, 4], tf.float32)])  # at serve.py:5")
    assert "def call" not in code and "where you create it at serve.py:5" in finding["fix"]["text"]
    compile(code, "<fix>", "exec")
    # A lambda the user wraps: the same, never `def <lambda>`.
    lam = _function("<lambda>", [dict(t, code_origin=None) for t in traces], origin="user")
    (finding,) = analyze(Recording(functions=[lam])).findings
    assert "<lambda>" not in finding["fix"]["code"] and finding["fix"]["code"].startswith("tf.function(...,")


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


def test_predict_overhead_advice_follows_the_api_the_user_already_calls():
    spec = {"shape": [32, 4], "dtype": "float32"}

    def fix(api, flavor):
        recording = Recording(environment={"keras_flavor": flavor}, calls=[_call(api, "/u/p.py:7", spec=spec)])
        (finding,) = analyze(recording).findings
        assert finding["code"] == "predict-overhead"
        return finding["fix"]

    on_batch = fix("predict_on_batch", "keras3")  # already on predict_on_batch: the next step is a traced graph
    assert "predict_on_batch(x)" not in on_batch["code"]
    assert "input_signature=[tf.TensorSpec([None, 4], tf.float32)]" in on_batch["code"]
    compile(on_batch["code"], "<fix>", "exec")
    predict = fix("predict", "keras3")
    assert "model.predict_on_batch(x)" in predict["code"]
    legacy = fix("predict", "tf-keras")
    assert "model(x, training=False)" in legacy["code"]
    assert "no tf.data pipeline is built per call" in on_batch["text"]  # none measured in its data adapter
    # tf-keras's predict_on_batch() wraps each batch in a one-batch tf.data iterator: where the calls
    # spend time in the data adapter, the advice says so and never that none is built.
    recording = Recording(environment={"keras_flavor": "tf-keras"}, calls=[_call(
        "predict_on_batch", "/u/p.py:7", spec=spec, shares={"data_adapter": 0.54, "kernel_execution": 0.33,
                                                            "other": 0.13})])
    (finding,) = analyze(recording).findings
    adapter = finding["fix"]
    assert "no tf.data pipeline" not in adapter["text"]
    assert "54% of its time in the data adapter (tf-keras's predict_on_batch() wraps each batch" in adapter["text"]
    for advice in (on_batch, predict, legacy, adapter):
        assert "reference machine" not in advice["text"] and not re.search(r"\d ms", advice["text"]), advice
        assert "Unverified on your model" in advice["text"] and "--verify" in advice["text"]
        assert advice["verified"] is False


def test_the_unverified_input_pipeline_fix_batches_as_the_user_does():
    shares = {"data_adapter": 0.5, "kernel_execution": 0.5}

    def code(call, alternatives=None):
        extra = {"alternatives": alternatives} if alternatives is not None else {}
        found = [f for f in analyze(Recording(calls=[call], extra=extra)).findings if f["code"] == "input-bound"]
        assert len(found) == 1 and found[0]["fix"]["verified"] is False and found[0]["severity"] != "high"
        return found[0]["fix"]["code"]

    on_batch = dict(_call("predict_on_batch", "/u/p.py:7", count=4, shares=shares), batch=4096)
    assert ".batch(4096)" in code(on_batch) and ".batch(32)" not in code(on_batch)
    from_spec = {k: v for k, v in on_batch.items() if k != "batch"}
    from_spec["input_spec"] = {"b": {"shape": [3, 2], "dtype": "int32"}, "a": {"shape": [2048, 4], "dtype": "float32"}}
    assert ".batch(2048)" in code(from_spec)  # the first array in the spec's (sorted) order
    timed = [{"target": "seq", "path": "predict", "median_s": 0.01, "equivalent": True, "max_abs_diff": 0.0},
             {"target": "seq", "path": "tf.data prefetch", "median_s": 0.02, "equivalent": True, "max_abs_diff": 0.0,
              "batch_size": 256}]
    predict = dict(_call("predict", "/u/p.py:7", count=4, shares=shares), batch=4096)
    assert ".batch(256)" in code(predict, timed)  # the batch_size --verify saw the user pass to predict()


def test_the_verdict_calls_a_training_call_a_training_step():
    step = {"name": "train_step", "defined_at": "/u/train.py:12"}
    analysis = analyze(Recording(calls=[_call("__call__", "/u/train.py:14", training=True, caller=step)]))
    assert analysis.verdict.startswith("The training step `model(x, training=True)` on batches of 32"), analysis.verdict
    assert "`model(x)`" not in analysis.verdict


def test_the_signature_is_never_parsed_back_from_display_text():
    (finding,) = analyze(Recording(calls=[_call("__call__", "/u/s.py:7")])).findings
    assert "TensorSpec([None, 4]" not in finding["fix"]["code"]  # no input_spec: no shape claimed
    assert "input_signature=[tf.TensorSpec(None, tf.float32)]" in finding["fix"]["code"]
    compile(finding["fix"]["code"], "<fix>", "exec")
    assert retracing.spec_code([{"shape": [8, 3], "dtype": "float32"}, {"type": "int"}]) is None
    assert retracing.spec_code({"shape": None, "dtype": "int64"}) == "tf.TensorSpec(None, tf.int64)"


# -- real TensorFlow: Keras 3 and tf-keras ------------------------------------------------------
FIT_EVALUATE = textwrap.dedent("""
    import numpy as np
    import tensorflow as tf
    keras = tf.keras
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    x = np.random.rand(100, 4).astype("float32")
    y = np.random.rand(100, 1).astype("float32")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    model.evaluate(x, y, batch_size=32, verbose=0)
""")
SCRIPTS = {
    "fit_evaluate_predict": FIT_EVALUATE + "model.predict(x, batch_size=32, verbose=0)\n",
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
    "user_wraps_model": """
        import numpy as np
        import tensorflow as tf
        keras = tf.keras
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        serve = tf.function(model)
        call = tf.function(model.call)
        step = tf.function(lambda x: model(x))
        for n in (1, 8, 32, 5):
            serve(tf.ones((n, 4)))
            call(tf.ones((n, 4)))
            step(tf.ones((n, 4)))
        model.predict(np.ones((10, 4), np.float32), verbose=0)
    """,
    "eager_step": (EXAMPLES / "training" / "eager_step.py").read_text(),
}
USER_CREATED_LINES = {6, 7, 8}  # user_wraps_model: the lines that create a tf.function around Keras code
# Run with tfdiag's default options (cProfile, the TF Profiler and its in-graph tf.data correction on).
DEFAULT_SCRIPTS = {
    "fit_evaluate_predict_loop": FIT_EVALUATE + "for _ in range(12):\n    model.predict(x[:32], verbose=0)\n",
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
    for name, body in {**SCRIPTS, **DEFAULT_SCRIPTS}.items():
        paths[name] = root / f"{name}.py"
        paths[name].write_text(textwrap.dedent(body))
    driver = (f"from tfdiag import cli\n"
              f"for name, options in {[(n, ['--no-cprofile', '--no-tf-profiler']) for n in SCRIPTS]!r} + "
              f"{[(n, []) for n in DEFAULT_SCRIPTS]!r}:\n"
              f"    status = cli.main(['analyze', '--quiet', *options,\n"
              f"                       '-o', {str(root)!r} + '/' + name, {str(root)!r} + '/' + name + '.py'])\n"
              f"    assert status == 0, (name, status)\n")
    legacy = "1" if request.param == "tf-keras" else "0"
    result = run_python(driver, env_extra={"TF_USE_LEGACY_KERAS": legacy}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return request.param, {name: load(root / name / "recording.json") for name in paths}, paths


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
def test_a_tf_function_the_user_creates_around_a_model_is_the_users(runs):
    _, recordings, paths = runs
    recording = recordings["user_wraps_model"]
    created = {f"{paths['user_wraps_model']}:{line}" for line in USER_CREATED_LINES}
    mine = [f for f in recording.functions if {t.get("created_at") for t in f["traces"]} & created]
    assert len(mine) == 3 and all(f["origin"] == "user" for f in mine), [(f["name"], f["origin"]) for f in mine]
    keras_made = [f for f in recording.functions if f.get("role")]
    assert keras_made and all(f["origin"] == "keras" for f in keras_made)  # Keras's own predict function stays Keras's
    fixed = set()
    for finding in recording.findings:
        if finding["code"].startswith("retrace") and finding["function"] in {f["name"] for f in mine}:
            code = finding["fix"]["code"]
            assert code.startswith("tf.function(..., ") and "def " not in code, finding
            fixed |= {line for line in USER_CREATED_LINES if f"user_wraps_model.py:{line}" in code}
    assert fixed == USER_CREATED_LINES, recording.findings


@pytest.mark.tf
def test_fit_evaluate_predict_with_the_default_options(runs):
    """cProfile and the TF Profiler on: the profiled calls, the Profiler's kernel correction and the
    findings still speak only about the user's code, with one finding per call site."""
    _, recordings, paths = runs
    recording = recordings["fit_evaluate_predict_loop"]
    assert recording.extra.get("cprofile") and recording.extra["tf_profiler"]["calls_profiled"] >= 1
    site = f"{paths['fit_evaluate_predict_loop']}:12"
    (predict,) = [c for c in recording.calls if c["api"] == "predict"]
    assert predict["call_site"] == site and predict["count"] == 12 and predict["phase_calls"] >= 5
    assert sum(predict["phases"].values()) == pytest.approx(predict["total_s"], rel=1e-6)
    (profiled,) = [s for s in recording.extra["tf_profiler"]["call_sites"] if s["call_site"] == site]
    if (profiled.get("graph_tf_data_s_per_call") or 0) > 0:  # the in-graph tf.data wait moved out of the kernels
        assert predict.get("graph_tf_data_s") is not None
    analysis = analyze(recording)
    (row,) = [r for r in analysis.kernel_check if r["call_site"] == site]
    assert row["profiler_model_op_s"] > 0 and row["tfdiag_kernel_s"] <= row["tfdiag_kernel_uncorrected_s"]
    found = analysis.findings
    _assert_owned(recording, found)
    assert not [f for f in found if f["code"].startswith(("retrace", "model-rebuilt"))], found
    at_site = [f for f in found if site in f["details"].get("call_sites", [f["call_site"]])]
    assert len({f["code"] for f in at_site}) == len(at_site) <= 1, at_site  # one finding, one saving per site
    if at_site and at_site[0]["code"] == "predict-overhead":
        assert any("tf.data's functions" in e for e in at_site[0]["evidence"]), at_site


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
    # The step is the problem, not its model calls: one eager-training finding, no eager-loop.
    assert not [f for f in recording.findings if f["code"] == "eager-loop"]
    (finding,) = [f for f in recording.findings if f["code"] == "eager-training"]
    assert "`train_step` (defined at eager_step.py:17)" in finding["fix"]["text"]
    assert "@tf.function" in finding["fix"]["code"] and "def train_step(" in finding["fix"]["code"]
    assert "litert" not in (finding["fix"]["text"] + finding["fix"]["code"]).lower()
