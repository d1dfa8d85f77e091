"""Capture on the shapes real code takes: methods, several models, models inside tf.functions,
keyword arguments, and user code in a folder whose name matches a library."""

import textwrap

import pytest

from tfdiag import cli
from tfdiag.recording import load

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
