"""Capture on the shapes real code takes: methods, several models, models inside tf.functions,
keyword arguments, and user code in a folder whose name matches a library."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tfdiag import cli
from tfdiag.recording import PHASES, load

from .conftest import DATA

pytestmark = pytest.mark.tf


def _run(tmp_path, body: str, *options: str, folder: str = "proj", status: int = 0):
    project = tmp_path / folder
    project.mkdir(parents=True, exist_ok=True)
    script = project / "script.py"
    script.write_text(textwrap.dedent(body))
    out = tmp_path / "out"
    assert cli.main(["analyze", "--no-cprofile", "--no-tf-profiler", *options, "-o", str(out), str(script)]) == status
    return load(out / "recording.json")


METHODS = """
    import tensorflow as tf

    class Scaler:
        def __init__(self, k):
            self.k = k

        @tf.function
        def apply(self, x):
            return x * self.k

    scalers = [Scaler(float(k)) for k in range(4)]
    for _ in range(10):
        for s in scalers:
            s.apply(tf.ones((3,)))
"""


def test_tf_function_methods_are_timed_and_one_trace_per_instance_is_not_retracing(tmp_path):
    recording = _run(tmp_path, METHODS, "--fail-on-retrace", "1")
    apply = next(f for f in recording.functions if f["name"] == "apply")
    assert apply["trace_count"] == 4 and apply["instances"] == 4 and apply["max_traces_per_instance"] == 1
    assert not [f for f in recording.findings if f["function"] == "apply"]
    calls = [c for c in recording.calls if c["api"] == "tf.function" and c["target"] == "apply"]
    assert sum(c["count"] for c in calls) == 40


def test_a_method_retracing_on_one_instance_is_still_found(tmp_path):
    body = METHODS.replace("s.apply(tf.ones((3,)))", "s.apply(tf.ones((3 + _,)))")
    recording = _run(tmp_path, body, "--fail-on-retrace", "3", status=3)
    assert any(f["code"] == "retrace-shape" and f["function"] == "apply" for f in recording.findings)


def test_several_models_are_not_mistaken_for_a_rebuilt_model(tmp_path):
    recording = _run(tmp_path, """
        import numpy as np
        import tensorflow as tf
        keras = tf.keras
        models = [keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name=f"m{i}") for i in range(3)]
        x = np.ones((8, 4), np.float32)
        for m in models:
            for _ in range(5):
                m.predict_on_batch(x)
    """)
    assert not [f for f in recording.findings if f["code"] in ("model-rebuilt", "retrace-structure")]
    predict_functions = [f for f in recording.functions if f["origin"] == "keras"]
    assert sorted(f["model"] for f in predict_functions) == ["m0", "m1", "m2"]


def test_a_model_inside_a_tf_function_is_part_of_that_call(tmp_path):
    recording = _run(tmp_path, """
        import numpy as np
        import tensorflow as tf
        keras = tf.keras
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="inner")
        serve = tf.function(lambda x: model(x), input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        for _ in range(5):
            serve(np.ones((8, 4), np.float32))
    """)
    apis = {(c["api"], c["target"]): c["count"] for c in recording.calls}
    assert apis == {("tf.function", "<lambda>"): 5}
    total = sum(c["total_s"] for c in recording.calls)
    assert recording.phases["wall_s"] == pytest.approx(total)


def test_keyword_arguments_are_part_of_the_call_signature(tmp_path):
    recording = _run(tmp_path, """
        import tensorflow as tf

        @tf.function
        def kw(x):
            return x + 1.0

        for n in (1, 2, 3):
            kw(x=tf.ones((n,)))
    """)
    signatures = sorted(c["input_signature"] for c in recording.calls if c["target"] == "kw")
    assert signatures == ["[{x: float32[1]}]", "[{x: float32[2]}]", "[{x: float32[3]}]"]


@pytest.mark.parametrize("folder", ["keras", "tfdiag", "tensorflow"])
def test_user_code_in_a_folder_named_like_a_library_is_the_users(tmp_path, folder):
    recording = _run(tmp_path, """
        import tensorflow as tf

        @tf.function
        def encode(t):
            return t * 2.0

        for n in (1, 2, 3):
            encode(tf.ones((n,)))
    """, folder=folder)
    encode = next(f for f in recording.functions if f["name"] == "encode")
    assert encode["origin"] == "user"
    assert encode["traces"][0]["call_site"].endswith(f"{folder}/script.py:9")
    assert sum(c["count"] for c in recording.calls if c["target"] == "encode") == 3


def test_plain_tf_function_loops_get_both_profilers(tmp_path):
    out = tmp_path / "out"
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent("""
        import tensorflow as tf

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def step(t):
            return tf.reduce_sum(t * 2.0)

        for n in range(12):
            step(tf.ones((n + 1,)))
    """))
    assert cli.main(["analyze", "-o", str(out), str(script)]) == 0
    recording = load(out / "recording.json")
    calls = [c for c in recording.calls if c["target"] == "step"]
    assert sum(c["count"] for c in calls) == 12
    assert 0 < sum(c["profiled_calls"] for c in calls) < 12
    assert recording.extra["cprofile"]["calls_profiled"] >= 1 and (out / "profile.prof").exists()
    assert list((out / "tensorboard" / "plugins" / "profile").rglob("*.xplane.pb"))


# -- the capture probe (tests/data/capture_probe.py), on Keras 3 and tf-keras ----------------------
PROBE = DATA / "capture_probe.py"


def _marked_line(marker: str) -> str:
    """``file:line`` of the probe line carrying ``# @marker``."""
    for number, text in enumerate(PROBE.read_text().splitlines(), start=1):
        if text.rstrip().endswith(f"# @{marker}"):
            return f"{PROBE}:{number}"
    raise AssertionError(f"no # @{marker} in {PROBE}")


@pytest.fixture(scope="module", params=["keras3", "tf-keras"])
def capture_probe(request):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    if request.param == "tf-keras":
        env["TF_USE_LEGACY_KERAS"] = "1"
    result = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert data["flavor"] == request.param
    for section in ("predict_loop", "retrace_loop", "eager", "keras_functions"):
        assert data[section]["warnings"] == [], data[section]["warnings"]
    return data


def test_a_predict_loop_under_both_profilers_has_its_split_on_five_calls_and_its_first_call_apart(capture_probe):
    (call,) = capture_probe["predict_loop"]["calls"]
    assert call["count"] == 60 and call["profiled_calls"] >= 3  # cProfile and the TF Profiler took some
    assert call["phase_calls"] >= 5
    assert call["call_site"] == _marked_line("predict")
    assert call["caller"] == {"name": "predict_loop", "defined_at": _marked_line("predict_loop")}
    assert call["training"] is False
    first, steady = call["first_phases"], call["steady_phases"]
    assert call["first_call_measured"] is True  # no profiler took it
    assert sum(first.values()) == pytest.approx(call["first_s"])
    # A normal call after the first: the mean of the unprofiled ones, the profilers' slowdown left out.
    samples = capture_probe["predict_loop"]["call_samples"]
    assert len(samples) == 60 and sum(s["profiled"] for s in samples) == call["profiled_calls"]
    plain = [s["duration_s"] for s in samples[1:] if not s["profiled"]]
    assert sum(steady.values()) == pytest.approx(sum(plain) / len(plain))
    assert sum(call["phases"].values()) == pytest.approx(call["total_s"])
    # The first call traces the predict function; the calls after it do not.
    assert first["graph_creation"] > 0
    assert first["graph_creation"] + first["kernel_execution"] > steady["graph_creation"] + steady["kernel_execution"]
    for name in PHASES:  # the site's totals: the first call, then the later calls in the steady shares
        assert call["phases"][name] >= first[name] - 1e-9


def test_graph_creation_keeps_the_traces_of_profiled_calls(capture_probe):
    section = capture_probe["retrace_loop"]
    (call,) = section["calls"]
    (step,) = [f for f in section["functions"] if f["name"] == "train_step"]
    # The first call (tf-keras traces it twice: its optimizer makes variables), then calls 2 and 4.
    assert step["trace_count"] in (3, 4)
    assert [t["args"][2]["value"] for t in step["traces"]][-2:] == ["2.0", "3.0"]
    assert call["count"] == 20 and call["profiled_calls"] >= 2  # calls 2 and 4 ran under a profiler
    assert call["phase_calls"] >= 5
    graph = call["phases"]["graph_creation"]
    assert graph >= step["trace_s"] * (1 - 1e-9)
    assert call["total_s"] >= graph
    assert call["input_spec"] == [{"shape": [8, 4], "dtype": "float32"}, {"shape": [8, 1], "dtype": "float32"},
                                  {"type": "float"}]


def test_calls_in_a_training_loop_are_marked_training(capture_probe):
    calls = {c["call_site"]: c for c in capture_probe["eager"]["calls"]}
    assert calls[_marked_line("eager_training")]["training"] is True
    assert calls[_marked_line("under_tape")]["training"] is True  # no training=True, but under a tape
    assert calls[_marked_line("inference")]["training"] is False
    if capture_probe["flavor"] == "tf-keras":
        assert calls[_marked_line("positional_training")]["training"] is True  # model(x, True)
    assert calls[_marked_line("inference")]["caller"] is None  # module level
    nested = calls[_marked_line("nested")]
    assert nested["input_spec"] == [{"a": {"shape": [2], "dtype": "float32"}, "b": {"shape": [2], "dtype": "int32"}},
                                    {"type": "int"}]
    assert nested["steady_phases"] == {} and nested["count"] == 1


def _keras_functions(capture_probe, model: str) -> list:
    return [f for f in capture_probe["keras_functions"]["functions"] if f["origin"] == "keras" and f["model"] == model]


def test_keras_functions_know_their_role_model_and_compile_line(capture_probe):
    fitted = _keras_functions(capture_probe, "fitted")
    assert {f["role"] for f in fitted} == {"train", "test", "predict"}
    assert {f["model_created_at"] for f in fitted} == {_marked_line("make_model")}
    first_compile, recompile = _marked_line("fitted_compiled"), _marked_line("recompiled")
    for function in fitted:
        lines = [t["compiled_at"] for t in function["traces"]]
        if function["role"] == "test":  # evaluate() ran before the second compile()
            assert set(lines) == {first_compile}
        elif function["role"] == "predict":
            assert set(lines) == {recompile}
        else:  # fit() traced before and after the second compile()
            assert lines[0] == first_compile and lines[-1] == recompile


def test_models_created_and_compiled_in_a_loop(capture_probe):
    for index in range(3):
        functions = _keras_functions(capture_probe, f"looped{index}")
        assert functions and {f["role"] for f in functions} == {"train"}
        assert {f["model_created_at"] for f in functions} == {_marked_line("looped_created")}
        assert {t["compiled_at"] for f in functions for t in f["traces"]} == {_marked_line("looped_compiled")}
