"""Every training example through `tfdiag analyze`: the finding it is written for, naming the user's code.

Each example runs once per module (in-process, Keras 3) and its recording is shared by the tests
below; four also run on tf-keras, in one fresh process. About 35 s on 2 CPU cores.
"""

import ast
import os
import subprocess
import sys

import pytest

from tfdiag import cli
from tfdiag.analysis import training
from tfdiag.recording import load

from .conftest import EXAMPLES

pytestmark = pytest.mark.tf

TRAINING = EXAMPLES / "training"
TRAINING_CODES = {"input-bound", "callback-bound", "step-overhead", "eager-training", "model-rebuilt", "call-overhead"}
EXPECTED = {"input_bound_generator.py": "input-bound", "slow_callback.py": "callback-bound",
            "small_model_overhead.py": "step-overhead", "eager_step.py": "eager-training",
            "models_in_a_loop.py": "model-rebuilt", "fit_loop.py": "call-overhead"}


def _line(script: str, text: str) -> int:
    """The 1-based line of ``script``'s code (after its docstring) where ``text`` first appears, so
    that no test hard-codes a line number."""
    source = (TRAINING / script).read_text()
    after = ast.parse(source).body[0].end_lineno  # the module docstring
    lines = source.splitlines()
    return next(number for number, line in enumerate(lines, 1) if number > after and text in line)


def _site(script: str, text: str) -> str:
    return f"{script}:{_line(script, text)}"


def _text(finding: dict) -> str:
    """Everything a finding says to the user, in one string."""
    fix = finding.get("fix") or {}
    return "\n".join([finding["title"], *finding["evidence"], str(fix.get("text", "")), str(fix.get("code", ""))])


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    """``analyzed(script) -> (recording, report page)``, each example analysed once per module (with
    the TF Profiler for the one whose finding rests on its op time per step)."""
    done: dict[str, tuple] = {}

    def run(script: str):
        if script not in done:
            out = tmp_path_factory.mktemp(script.removesuffix(".py"))
            profiler = [] if script == "small_model_overhead.py" else ["--no-tf-profiler"]
            status = cli.main(["analyze", "--no-cprofile", *profiler, "-o", str(out), str(TRAINING / script)])
            assert status == 0
            done[script] = load(out / "recording.json"), (out / "report.html").read_text()
        return done[script]

    return run


def _finding(recording, code: str) -> dict:
    matches = [f for f in recording.findings if f["code"] == code]
    assert matches, [(f["code"], f["function"], f["title"]) for f in recording.findings]
    return matches[0]


def _fit_calls(recording) -> list[dict]:
    calls = [c for c in recording.calls if c["api"] == "fit"]
    assert calls, [(c["api"], c["target"]) for c in recording.calls]
    return calls


def _share(phases: dict, phase: str) -> float:
    total = sum(phases.values())
    return phases.get(phase, 0.0) / total if total else 0.0


def test_input_bound_generator_names_the_generator(analyzed):
    recording, page = analyzed("input_bound_generator.py")
    (fit,) = _fit_calls(recording)
    producer = fit["data_producer"]
    assert (producer["kind"], producer["name"]) == ("generator", "parse_batches"), producer
    assert producer["defined_at"].endswith(_site("input_bound_generator.py", "def parse_batches"))
    assert producer["batches"] >= 24 and producer["seconds"] > 0
    # Parsing 256 lines of 512 values in Python costs several times the step: most of each step
    # waits on it (75-88% measured here, one busy loop beside it or none). Two busy loops on the
    # 2 cores slow the train function's own ops too: 49%, kernel_execution 43%.
    assert _share(fit["step_phases"], "data_adapter") >= 0.4, (fit["step_phases"], producer, recording.warnings)
    finding = _finding(recording, "input-bound")
    assert "parse_batches" in _text(finding)
    assert finding["call_site"].endswith(_site("input_bound_generator.py", "model.fit("))
    assert finding["estimated_savings_s"] > 0 and finding["fix"]["code"]
    assert "input-bound" in page and "parse_batches" in page


def test_slow_callback_names_the_callback_class(analyzed):
    recording, page = analyzed("slow_callback.py")
    (fit,) = _fit_calls(recording)
    first = fit["callbacks"][0]
    assert (first["name"], first["user"]) == ("WeightStats", True), fit["callbacks"]
    assert first["defined_at"].endswith(_site("slow_callback.py", "class WeightStats"))
    assert first["calls"] >= 64 and first["per_step_s"] > 0
    assert _share(fit["step_phases"], "callbacks") >= 0.2, fit["step_phases"]
    finding = _finding(recording, "callback-bound")
    assert "WeightStats" in finding["title"]
    assert _site("slow_callback.py", "class WeightStats") in _text(finding) or \
        finding["call_site"].endswith(_site("slow_callback.py", "class WeightStats"))
    assert finding["estimated_savings_s"] > 0
    assert "callback-bound" in page and "WeightStats" in page


def test_small_model_overhead_suggests_steps_per_execution(analyzed):
    recording, page = analyzed("small_model_overhead.py")
    (fit,) = _fit_calls(recording)
    assert (fit["steps"], fit["epochs"], fit["steps_per_epoch"]) == (512, 2, [256, 256])
    assert fit["steps_per_execution"] == 1 and fit["step_median_s"] > 0
    assert fit["step_timeline"]["epoch_starts"] == [0, 256]
    # the TF Profiler timed the model's ops on a few of its steps: a small share of each step
    model_op_s, profiled = training.profiled_steps(recording, fit)
    assert profiled >= 1 and model_op_s < 0.5 * training.step_seconds(fit), (model_op_s, training.step_split(fit))
    finding = _finding(recording, "step-overhead")
    assert any("the TF Profiler measured" in line for line in finding["evidence"]), finding["evidence"]
    assert "steps_per_execution" in finding["fix"]["code"]
    assert finding["call_site"].rsplit("/", 1)[-1] in (_site("small_model_overhead.py", "model.compile("),
                                                       _site("small_model_overhead.py", "model.fit("))
    assert finding["estimated_savings_s"] > 0
    assert "step-overhead" in page


def test_eager_step_names_the_step_function_and_its_def_line(analyzed):
    recording, page = analyzed("eager_step.py")
    (step,) = [c for c in recording.calls if c["api"] == "train_step"]
    defined = _site("eager_step.py", "def train_step")
    assert (step["target"], step["count"], step["eager"], step["training"]) == ("train_step", 60, True, True)
    assert step["defined_at"].endswith(defined)
    assert step["call_site"].endswith(_site("eager_step.py", "    train_step(x, y)"))
    finding = _finding(recording, "eager-training")
    assert finding["function"] == "train_step"
    assert defined in finding["fix"]["text"] and "@tf.function" in finding["fix"]["code"]
    assert "eager-training" in page and "train_step" in page


def test_models_in_a_loop_counts_the_models_and_points_at_the_users_line(analyzed):
    recording, page = analyzed("models_in_a_loop.py")
    assert len(_fit_calls(recording)) == 5
    finding = _finding(recording, "model-rebuilt")
    assert finding["details"]["training"] is True
    assert len(finding["details"]["models"]) == 5 and finding["details"]["retraces"] == 4
    assert finding["call_site"].rsplit("/", 1)[-1] in (_site("models_in_a_loop.py", "keras.Sequential("),
                                                       _site("models_in_a_loop.py", "model = build(lr)"))
    assert finding["estimated_savings_s"] > 0
    assert "model-rebuilt" in page


def test_fit_in_a_loop_for_one_step_each_suggests_train_on_batch(analyzed):
    recording, page = analyzed("fit_loop.py")
    (fit,) = _fit_calls(recording)
    assert (fit["count"], fit["steps"]) == (30, 30)
    finding = _finding(recording, "call-overhead")
    assert finding["call_site"].endswith(_site("fit_loop.py", "model.fit("))
    assert finding["fix"]["code"].startswith("logs = model.train_on_batch(x, y, return_dict=True)")
    assert "ran 30 steps in 30 calls (1 per call)" in page
    assert "call-overhead" in page


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_each_example_gets_only_its_own_training_finding(analyzed, script):
    recording, _ = analyzed(script)
    codes = {f["code"] for f in recording.findings} & TRAINING_CODES
    assert codes <= {EXPECTED[script]}, [(f["code"], f["title"]) for f in recording.findings]
    assert codes == {EXPECTED[script]}, [(f["code"], f["title"]) for f in recording.findings]


# What each finding must name on tf-keras too (models_in_a_loop's model-rebuilt is tested on tf-keras
# by test_retracing_examples; left out here to keep this file under a minute).
NAMED = {"input_bound_generator.py": "parse_batches", "slow_callback.py": "WeightStats",
         "small_model_overhead.py": "steps_per_execution", "eager_step.py": "train_step",
         "fit_loop.py": "train_on_batch"}

# One fresh process (the flavour is fixed when TensorFlow is imported) analyses every example in turn
# (with the TF Profiler: its op time per step is what makes small_model_overhead's steps overhead).
TF_KERAS_RUN = """
import os, sys
from tfdiag import cli
out, scripts = sys.argv[1], sys.argv[2:]
sys.exit(max(cli.main(["analyze", "--no-cprofile", "-o", os.path.join(out, os.path.basename(s)), s])
             for s in scripts))
"""


@pytest.fixture(scope="module")
def tf_keras_recordings(tmp_path_factory):
    out = tmp_path_factory.mktemp("tf_keras")
    scripts = [str(TRAINING / name) for name in sorted(NAMED)]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    result = subprocess.run([sys.executable, "-c", TF_KERAS_RUN, str(out), *scripts], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return {name: load(out / name / "recording.json") for name in NAMED}


def _measured(recording) -> dict:
    """What the training findings rest on, for a failure's message: the steps' split, the TF
    Profiler's step windows and per-step op times, and capture's warnings."""
    section = recording.extra.get("tf_profiler") or {}
    return {"splits": [c.get("step_phases") for c in recording.calls if c.get("steps")],
            "windows": section.get("step_windows"),
            "steps": [s.get("steps") for s in section.get("step_sites") or []],
            "warnings": recording.warnings}


@pytest.mark.parametrize("script", sorted(NAMED))
def test_tf_keras(tf_keras_recordings, script):
    recording = tf_keras_recordings[script]
    assert recording.environment["keras_flavor"] == "tf-keras"
    assert EXPECTED[script] in {f["code"] for f in recording.findings}, _measured(recording)
    finding = _finding(recording, EXPECTED[script])
    assert NAMED[script] in _text(finding) + finding["function"], finding
