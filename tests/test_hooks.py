"""Hooks install and uninstall cleanly: every patched attribute is the original object again."""

import numpy as np
import pytest

import tfdiag
from tfdiag.capture import patching

pytestmark = pytest.mark.tf


def _phase_point_originals():
    """Every phase entry point, looked up in its owner's own namespace (None if absent)."""
    import importlib

    from tfdiag.capture.phase_points import ALL_POINTS

    found = {}
    for module_name, attribute, _ in ALL_POINTS:
        try:
            owner = importlib.import_module(module_name)
        except ImportError:
            continue
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        found[(module_name, attribute)] = vars(owner).get(name)
    return found


def _originals():
    import keras
    from keras.src.backend.tensorflow import trainer
    from keras.src.models import model as model_module
    from keras.src.trainers import trainer as base_trainer
    from tensorflow.python.eager.polymorphic_function import polymorphic_function, tracing_compilation

    return {
        "create": tracing_compilation._create_concrete_function,
        "init": polymorphic_function.Function.__dict__["__init__"],
        "predict": trainer.TensorFlowTrainer.__dict__["predict"],
        "pob": trainer.TensorFlowTrainer.__dict__["predict_on_batch"],
        "model_has_call": "__call__" in model_module.Model.__dict__,
        "function_call": polymorphic_function.Function.__dict__["__call__"],
        "model_init": model_module.Model.__dict__["__init__"],
        "compile": base_trainer.Trainer.__dict__["compile"],
        "phase_points": _phase_point_originals(),
        "keras": keras,
    }


def _use_everything():
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    x = np.ones((2, 3), dtype=np.float32)
    model.predict(x, verbose=0)
    model.predict_on_batch(x)
    model(x)
    tf.function(lambda t: t * 2)(tf.constant(1.0))


def _assert_restored(before):
    after = _originals()
    for key in ("create", "init", "predict", "pob", "function_call", "model_init", "compile"):
        assert after[key] is before[key], key
    assert len(before["phase_points"]) >= 15
    for point, original in before["phase_points"].items():
        assert after["phase_points"][point] is original, point
    assert after["model_has_call"] is before["model_has_call"] is False
    assert patching.installed() == []


def test_hooks_are_live_inside_and_restored_after_return():
    before = _originals()
    with tfdiag.diagnose(cprofile=False) as d:
        from tensorflow.python.eager.polymorphic_function import tracing_compilation

        assert tracing_compilation._create_concrete_function is not before["create"]
        _use_everything()
    _assert_restored(before)
    apis = {c["api"] for c in d.recording.calls}
    assert apis == {"predict", "predict_on_batch", "__call__", "tf.function"}


def test_hooks_restored_after_raise():
    before = _originals()
    with pytest.raises(ZeroDivisionError):
        with tfdiag.diagnose(cprofile=False) as d:
            _use_everything()
            1 / 0
    _assert_restored(before)
    assert d.recording.run["ended_by"] == "exception"


def test_diagnose_twice_in_a_row_and_as_decorator():
    before = _originals()

    @tfdiag.diagnose(cprofile=False)
    def work():
        _use_everything()

    work()
    with tfdiag.diagnose(cprofile=False) as second:
        _use_everything()
    _assert_restored(before)
    assert second.recording.calls


def test_nesting_fails_with_one_clear_line():
    with tfdiag.diagnose(cprofile=False):
        with pytest.raises(tfdiag.DiagnoseError, match="nesting diagnose\\(\\) is not supported"):
            with tfdiag.diagnose(cprofile=False):
                pass
    assert patching.installed() == []


def test_hooks_installed_lazily_when_tensorflow_is_imported_later(tmp_path):
    """A fresh process: diagnose() starts before TensorFlow is imported."""
    import subprocess
    import sys

    code = (
        "import sys, tfdiag\n"
        "with tfdiag.diagnose(cprofile=False) as d:\n"
        "    assert 'tensorflow' not in sys.modules\n"
        "    import tensorflow as tf\n"
        "    f = tf.function(lambda x: x * 2)\n"
        "    f(tf.ones(2)); f(tf.ones(3))\n"
        "from tensorflow.python.eager.polymorphic_function import tracing_compilation as tc\n"
        "assert not hasattr(tc._create_concrete_function, '__wrapped__')\n"
        "print(sum(f['trace_count'] for f in d.recording.functions if f['origin'] == 'user'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"


def test_report_method_writes_html(tmp_path):
    with tfdiag.diagnose(cprofile=False) as d:
        _use_everything()
    path = d.report(tmp_path / "r.html")
    assert "predict_on_batch" in open(path).read()


def test_a_patch_that_raises_inside_the_users_import_is_a_warning_not_an_import_error():
    """Installers run inside the user's ``import``: whatever a patch raises there is a warning."""
    import sys

    from tfdiag.capture import phase_points
    from tfdiag.capture.collector import Collector
    from tfdiag.capture.phase_tracker import PhaseTracker

    class BrokenTracker(PhaseTracker):
        def wrap(self, original, phase, applies=None):
            raise RuntimeError("broken wrapper")

    saved = sys.modules.pop("colorsys", None)  # a real module, imported afresh below
    collector = Collector()
    patcher = patching.Patcher()
    try:
        phase_points.install(patcher, BrokenTracker(), collector,
                             points=[("colorsys", "rgb_to_hls", "kernel_execution"),
                                     ("colorsys", "hls_to_rgb", "graph_creation")])
        patcher.when_imported("colorsys", patching.guarded(collector.warn, "a broken installer",
                                                           lambda patcher, module: 1 / 0, patcher))
        import colorsys  # must not raise

        assert colorsys.hls_to_rgb(0.0, 0.5, 0.0) == (0.5, 0.5, 0.5)
    finally:
        patcher.restore()
        sys.modules.pop("colorsys", None)
        if saved is not None:
            sys.modules["colorsys"] = saved
    messages = [w for w in collector.warnings]
    assert sum("could not be wrapped (RuntimeError: broken wrapper)" in m for m in messages) == 2
    assert any(m.startswith("a broken installer unavailable (colorsys): ZeroDivisionError") for m in messages)


def test_diagnose_takes_an_injected_clock_and_a_command():
    ticks = iter(float(i) for i in range(1000))
    with tfdiag.diagnose(clock=lambda: next(ticks), command=["probe", "run"]) as d:
        pass
    assert d.recording.run["wall_s"] == 1.0  # two reads of the injected clock, one tick apart
    assert d.recording.environment["command"] == ["probe", "run"]
    with pytest.raises(TypeError, match="unexpected keyword argument 'clocks'"):
        tfdiag.diagnose(clocks=None)
