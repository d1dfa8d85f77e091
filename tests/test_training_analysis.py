"""The training rules, step view and verdict on hand-made recordings that follow the training
contract (tests/data/training_*.json): no TensorFlow needed."""

import copy
import json
import subprocess
import sys

import pytest

from tfdiag.analysis import analyze, training
from tfdiag.analysis.findings import SEVERITY_RANK
from tfdiag.recording import Recording, load

from .conftest import DATA, ROOT

TRAINING_CODES = ("input-bound", "callback-bound", "step-overhead", "eager-training")
PREDICT_CODES = ("predict-overhead", "eager-loop", "tfdata-retrace")
GOLDEN = ("training_generator", "training_callbacks", "training_overhead", "training_eager")


def data(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def findings(source, code=None) -> list[dict]:
    recording = source if isinstance(source, Recording) else Recording.from_dict(source)
    found = analyze(recording).findings
    return [f for f in found if code is None or f["code"] == code]


def one(source, code) -> dict:
    found = findings(source, code)
    assert len(found) == 1, [(f["code"], f["title"]) for f in findings(source)]
    return found[0]


def test_training_analysis_never_imports_tensorflow():
    code = ("import sys\nfrom tfdiag.recording import load\nfrom tfdiag.analysis import analyze\n"
            "from tfdiag.renderers import html, text\n"
            f"for n in {GOLDEN!r}:\n    a = analyze(load({str(DATA)!r} + '/' + n + '.json'))\n"
            "    html.render_report(a); text.summary(a, {})\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')]\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_generator_input_bound_names_the_generator_and_its_fix():
    finding = one(data("training_generator"), "input-bound")
    assert finding["call_site"].endswith("train_gen.py:31") and finding["function"] == "sequential"
    assert "62%" in finding["title"] and "`batches`" in finding["title"]
    assert any("train_gen.py:9" in e for e in finding["evidence"])
    code, text = finding["fix"]["code"], finding["fix"]["text"]
    # Keras already runs a generator on a tf.data thread a batch ahead: no prefetch advice (a no-op),
    # the batches are made in parallel instead, in the user's names
    assert "prefetch" not in code and "from_generator" not in code
    assert code.startswith("class Batches(keras.utils.PyDataset):  # instead of the generator batches")
    assert "workers=" in code and "model.fit(Batches(), ...)  # at train_gen.py:31" in code
    assert "return 50  # batches per epoch" in code
    # unmeasured: said so (a generator cannot be replayed), and capped at medium past the 20% threshold
    assert finding["fix"]["verified"] is False and "a generator cannot be run again" in text
    assert finding["severity"] == "medium"
    split = training.step_split(load(DATA / "training_generator.json").calls[0])
    # CPU time unknown (an older recording), 2 CPUs: processes' bound, halved (input_bound.workers_estimate)
    assert finding["estimated_savings_s"] == pytest.approx(split["data_adapter"] * 149 * 0.25)


def test_generator_fix_names_the_batches_the_generator_made_and_the_flavour():
    # As capture records a generator: the fit input itself is a generator object (no shapes);
    # the producer's batch_spec is its first batch.
    recording = data("training_generator")
    call = next(c for c in recording["calls"] if c["api"] == "fit")
    call["input_spec"] = {"type": "generator"}
    call["data_producer"]["batch_spec"] = [{"shape": [256, 512], "dtype": "float32"},
                                           {"shape": [256, 1], "dtype": "int64"}]
    assert "(float32[256, 512], int64[256, 1])" in one(recording, "input-bound")["fix"]["text"]
    recording["environment"]["keras_flavor"] = "tf-keras"
    code = one(recording, "input-bound")["fix"]["code"]
    assert code.startswith("class Batches(keras.utils.Sequence):") and "super().__init__" not in code
    # CPU time unknown: threads in the code, both options in the text
    assert "model.fit(Batches(), workers=" in code and "use_multiprocessing=False" in code


def test_input_thresholds_are_xprof_s():
    raw = data("training_generator")
    phases = raw["calls"][0]["step_phases"]
    rest = sum(v for p, v in phases.items() if p != "data_adapter")
    for share, expected in ((0.04, None), (0.06, "medium"), (0.3, "medium")):
        phases["data_adapter"] = share * rest / (1 - share)
        found = findings(copy.deepcopy(raw), "input-bound")
        assert [f["details"]["share"] > 0 for f in found] == ([] if expected is None else [True]), share
        if expected:
            assert found[0]["severity"] == expected and abs(found[0]["details"]["share"] - share) < 1e-9


def test_measured_input_fix_is_verified_and_may_be_high():
    raw = data("training_generator")
    raw["alternatives"] = [
        {"kind": "training", "target": "sequential", "path": "input:as_written", "median_s": 0.0074,
         "speedup": 1.0, "equivalent": True, "max_abs_diff": 0.0, "steps_timed": 32},
        {"kind": "training", "target": "sequential", "path": "input:prefetch", "median_s": 0.0025,
         "speedup": 2.96, "equivalent": True, "max_abs_diff": 0.0, "steps_timed": 32}]
    finding = one(raw, "input-bound")
    assert finding["fix"]["verified"] is True and finding["fix"]["measured"]["path"] == "input:prefetch"
    assert "Measured by --verify" in finding["fix"]["text"] and "3.0× faster" in finding["fix"]["text"]
    assert finding["severity"] == "high"
    assert finding["estimated_savings_s"] == pytest.approx(0.0074 * 149 * (1 - 0.0025 / 0.0074))


def test_pydataset_fix_goes_in_its_constructor_or_tf_keras_fit():
    finding = one(data("training_callbacks"), "input-bound")
    assert finding["call_site"].endswith("train_cb.py:58") and "`SlowData`" in finding["title"]
    assert "class SlowData(keras.utils.PyDataset):" in finding["fix"]["code"]
    assert "super().__init__(workers=2, **kwargs)" in finding["fix"]["code"]  # CPU time unknown: threads
    assert "workers=1" in finding["fix"]["text"] or any("workers=1" in e for e in finding["evidence"])
    raw = data("training_callbacks")
    raw["environment"]["keras_flavor"] = "tf-keras"
    finding = one(raw, "input-bound")
    assert finding["fix"]["code"].startswith("model.fit(SlowData(...), workers=2, use_multiprocessing=False")


def test_tf_data_map_fix_parallelises_the_user_s_map():
    raw = data("training_overhead")
    raw["calls"][0]["step_phases"]["data_adapter"] = 0.0009  # ~35% of the step
    finding = one(raw, "input-bound")
    assert "ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)  # parse at small.py:14" in finding["fix"]["code"]
    assert ".cache()" in finding["fix"]["code"] and "prefetch(tf.data.AUTOTUNE)" in finding["fix"]["code"]


def test_callbacks_named_by_class_with_their_own_fixes():
    found = findings(data("training_callbacks"), "callback-bound")
    by_name = {f["details"]["callback"]: f for f in found if f["details"]["api"] == "fit"}
    assert set(by_name) == {"BatchLogger", "ProgbarLogger"}  # History (0%) is not
    user = by_name["BatchLogger"]
    assert user["call_site"].endswith("train_cb.py:21") and user["title"].startswith("Your callback `BatchLogger`")
    assert "def on_train_batch_end(self, batch, logs=None):" in user["fix"]["code"]
    assert "if batch % 50:" in user["fix"]["code"] and "on_epoch_end" in user["fix"]["code"]
    bar = by_name["ProgbarLogger"]
    assert bar["call_site"].endswith("train_cb.py:58")
    assert bar["fix"]["code"].startswith("model.fit(..., verbose=2)") and "verbose=0" in bar["fix"]["text"]
    for finding in found:
        assert finding["fix"]["verified"] is False and SEVERITY_RANK[finding["severity"]] >= SEVERITY_RANK["medium"]
    evaluate = [f for f in found if f["details"]["api"] == "evaluate"]
    assert all(f["fix"]["code"].startswith("model.evaluate(..., verbose=2)") for f in evaluate)


def test_callback_time_is_not_counted_again_as_step_overhead():
    assert findings(data("training_callbacks"), "step-overhead") == []


def test_step_overhead_measured_by_verify():
    finding = one(data("training_overhead"), "step-overhead")
    assert finding["call_site"].endswith("small.py:40") and finding["details"]["compile_line"].endswith("small.py:33")
    assert finding["fix"]["code"] == "model.compile(..., steps_per_execution=32)  # at small.py:33"
    assert finding["fix"]["verified"] is True and finding["fix"]["measured"]["speedup"] == pytest.approx(0.00161 / 0.00031)
    assert finding["severity"] == "high"
    assert any("steps_per_execution=1" in e for e in finding["evidence"])
    # the measured saving, less what the progress bar's own finding claims (part of kernel_execution is
    # the graph call's dispatch, which steps_per_execution removes too: the measurement decides)
    split = training.step_split(load(DATA / "training_overhead.json").calls[0])
    step = sum(split.values())
    rest = step - split["data_adapter"] - 0.00021
    assert finding["estimated_savings_s"] == pytest.approx(min(1999 * step * (1 - 0.00031 / 0.00161), 1999 * rest))
    assert one(data("training_overhead"), "callback-bound")["details"]["callback"] == "ProgbarLogger"


@pytest.mark.parametrize("alternatives", [None, [], [{"kind": "training", "target": "tiny", "path": "train:as_written",
                                                      "error": "the model could not be cloned"}]])
def test_step_overhead_unmeasured_is_an_estimate_at_most_medium(alternatives):
    raw = data("training_overhead")
    if alternatives is None:
        del raw["alternatives"]
    else:
        raw["alternatives"] = alternatives
    finding = one(raw, "step-overhead")
    assert finding["fix"]["verified"] is False and "measured" not in finding["fix"]
    assert finding["severity"] == "medium" and "Unverified" in finding["fix"]["text"]
    if alternatives:
        assert "could not be cloned" in finding["fix"]["text"]


def test_step_overhead_needs_one_step_per_execution_and_many_steps():
    raw = data("training_overhead")
    raw["calls"][0]["steps_per_execution"] = 8
    assert findings(raw, "step-overhead") == []
    raw = data("training_overhead")
    raw["calls"][0]["steps"] = 50
    assert findings(raw, "step-overhead") == []


def test_eager_custom_loop_gets_tf_function_on_its_step_and_no_eager_loop():
    recording = data("training_eager")
    found = findings(recording)
    step = [f for f in found if f["code"] == "eager-training" and f["details"]["api"] == "train_step"]
    assert len(step) == 1
    fix = step[0]["fix"]
    assert "@tf.function" in fix["code"] and "def train_step(...):" in fix["code"]
    assert "loop.py:22" in fix["text"] and fix["verified"] is False and step[0]["severity"] == "medium"
    assert any("400 model calls inside it" in e for e in step[0]["evidence"])
    assert not [f for f in found if f["code"] == "eager-loop"]  # the model calls inside it: one finding
    # without the train_step entry (older capture), eager-loop speaks for the model calls as before
    recording["calls"] = [c for c in recording["calls"] if c["api"] != "train_step"]
    assert [f["code"] for f in findings(recording) if f["details"].get("api") in ("__call__", "train_step")] \
        == ["eager-loop"]


def test_run_eagerly_fit_is_eager_training_not_step_overhead():
    found = [f for f in findings(data("training_eager")) if f["call_site"].endswith("loop.py:52")]
    assert [f["code"] for f in found] == ["eager-training"]
    assert "run_eagerly=True" in found[0]["fix"]["text"] and "run_eagerly=True" in found[0]["title"]


def test_models_created_in_a_loop_are_model_rebuilt_with_count_cost_and_line():
    finding = one(data("training_eager"), "model-rebuilt")
    assert finding["call_site"].endswith("loop.py:12") and finding["details"]["retraces"] == 2
    assert finding["details"]["models"] == ["sequential", "sequential_1", "sequential_2"]
    assert finding["estimated_savings_s"] == pytest.approx(0.203 + 0.121 + 0.062 + 0.205 + 0.121 + 0.062)
    assert "3 models created at loop.py:12" in finding["title"] and "fit()" in finding["title"]
    assert "set_weights" in finding["fix"]["code"] and "model.fit(x, y)" in finding["fix"]["code"]


@pytest.mark.parametrize("name", GOLDEN)
def test_predict_rules_say_nothing_about_training_calls(name):
    raw = data(name)
    sites = {c["call_site"] for c in raw["calls"] if c["api"] in training.TRAINING_APIS + ("train_step",)}
    for finding in findings(raw):
        assert finding["code"] not in PREDICT_CODES, finding["title"]
        if finding["call_site"] in sites:
            assert finding["code"] in TRAINING_CODES, finding["title"]
        if finding["code"] in TRAINING_CODES and not finding["fix"]["verified"]:
            assert finding["severity"] != "high", finding["title"]


@pytest.mark.parametrize("name", GOLDEN)
def test_training_verdict_names_the_step_and_the_top_finding(name):
    analysis = analyze(load(DATA / f"{name}.json"))
    assert analysis.verdict.startswith("Training dominates this run: ")
    top = next(f for f in analysis.findings if f["details"].get("training"))
    assert top["title"] in analysis.verdict
    savings = [f["estimated_savings_s"] for f in analysis.findings]
    assert savings == sorted(savings, reverse=True)


def test_verdict_says_which_phase_dominates_the_step():
    verdict = analyze(load(DATA / "training_generator.json")).verdict
    assert "`fit()` of `sequential` at `train_gen.py:31` ran 150 steps over 3 epochs" in verdict
    assert ("each step is mostly waiting for the next batch (62%), then kernel execution (the model's ops and "
            "their dispatch) (26%)") in verdict


def test_predict_runs_keep_their_verdict_and_old_recordings_load():
    golden = load(DATA / "golden_recording.json")
    assert "callbacks" not in golden.phases and not training.dominates(golden)
    assert not analyze(golden).verdict.startswith("Training")
    raw = data("training_generator")
    raw["calls"][0]["total_s"] = 0.01  # the predict call now takes most of the timed time
    raw["calls"][1]["total_s"] = 5.0
    assert not analyze(Recording.from_dict(raw)).verdict.startswith("Training")


def test_step_view_marks_each_epoch_s_first_step():
    rows = analyze(load(DATA / "training_callbacks.json")).training
    fit = next(r for r in rows if r["api"] == "fit")
    assert fit["timeline"]["stride"] == 2 and fit["timeline"]["epoch_starts"] == [0, 120, 240, 360, 480]
    marked = [p for p in fit["timeline"]["points"] if p["epoch_start"]]
    assert [p["step"] for p in marked] == [0, 120, 240, 360, 480] and [p["epoch"] for p in marked] == [1, 2, 3, 4, 5]
    assert fit["timeline"]["points"][0]["first"] and fit["timeline"]["steps_shown"] == 300
    assert [c["name"] for c in fit["callbacks"]] == ["BatchLogger", "ProgbarLogger", "History"]
    assert fit["callbacks"][0]["share"] == pytest.approx(0.0029 / fit["step_s"])
    assert fit["shares"]["callbacks"] == pytest.approx(0.0043 / fit["step_s"])
    assert sum(fit["shares"].values()) == pytest.approx(1.0)
    custom = next(r for r in analyze(load(DATA / "training_eager.json")).training if r["api"] == "train_step")
    assert custom["steps"] == 400 and custom["step_median_s"] == 0.0091 and custom["split"] is not None


def test_training_without_optional_fields_is_quiet_not_broken():
    raw = data("training_generator")
    for key in ("step_phases", "first_step_phases", "step_timeline", "callbacks", "data_producer", "steps",
                "steps_per_execution", "run_eagerly", "epochs", "step_median_s"):
        raw["calls"][0].pop(key)
    analysis = analyze(Recording.from_dict(raw))
    assert not [f for f in analysis.findings if f["code"] in TRAINING_CODES]
    row = analysis.training[0]
    assert row["split"] is None and row["timeline"] is None and row["callbacks"] == []


def test_the_tf_profilers_op_time_decides_when_the_split_says_kernels():
    """Capture sees the graph call from outside: its kernel_execution holds the call's dispatch.
    Where the TF Profiler measured the model's op time on the call site's steps, that decides, not
    the split and not the step's size (which depends on the machine)."""
    raw = data("training_overhead")
    fit = raw["calls"][0]
    fit["step_phases"] = {"kernel_execution": 0.00032, "callbacks": 0.00001, "other": 0.00018}
    fit["step_median_s"] = 0.00045
    fit["callbacks"] = []
    del raw["alternatives"]
    assert findings(raw, "step-overhead") == []  # no profiler figure: the split says kernels (64%)
    row = {"api": "fit", "call_site": fit["call_site"], "measure": "op_self_time", "calls_profiled": 3,
           "model_op_s_per_call": 0.00005, "step_s_per_call": 0.0009}
    raw.setdefault("tf_profiler", {})["step_sites"] = [row]
    finding = one(raw, "step-overhead")
    assert "90% of each 0.51 ms step on fixed per-step overhead, 0.05 ms on the model's ops" in finding["title"]
    assert any("the TF Profiler measured 0.05 ms of the model's op time per step on 3 steady steps" in e
               for e in finding["evidence"])
    assert any("graph call dispatch 0.27 ms" in e for e in finding["evidence"])
    assert finding["severity"] in ("low", "medium") and finding["fix"]["verified"] is False
    # a step twice as long, the same shares: the same finding (no rule keyed to this machine's speed)
    slow = data("training_overhead")
    slow["calls"][0].update(step_phases={p: 2 * v for p, v in fit["step_phases"].items()}, step_median_s=0.0009,
                            callbacks=[])
    del slow["alternatives"]
    slow["tf_profiler"] = {"step_sites": [dict(row, model_op_s_per_call=0.0001)]}
    assert "90% of each 1.02 ms step" in one(slow, "step-overhead")["title"]
    # one of the few profiled steps preempted mid-op (0.9 ms of op time): the median step decides
    steps = [{"call_number": n, "model_op_s": s} for n, s in ((4, 0.00005), (5, 0.0009), (6, 0.00006))]
    raw["tf_profiler"]["step_sites"] = [dict(row, model_op_s_per_call=sum(s["model_op_s"] for s in steps) / 3,
                                             steps=steps)]
    assert "0.06 ms on the model's ops" in one(raw, "step-overhead")["title"]
    raw["tf_profiler"]["step_sites"] = [row]
    # the model's ops are most of the step: no finding
    row["model_op_s_per_call"] = 0.0003
    assert findings(raw, "step-overhead") == []
    # measured by --verify with no gain from steps_per_execution: no finding
    row["model_op_s_per_call"] = 0.00005
    raw["alternatives"] = [
        {"kind": "training", "target": "tiny", "path": p, "median_s": 0.00045, "speedup": 1.0, "equivalent": True,
         "max_abs_diff": 0.0, "steps_timed": 64} for p in ("train:as_written", "train:steps_per_execution=32")]
    assert findings(raw, "step-overhead") == []
    # steps the profiler timed only from outside (eager ops: host compute) are no op-time figure
    del raw["alternatives"]
    row["measure"] = "host_compute"
    assert findings(raw, "step-overhead") == []


def test_a_user_tf_function_train_step_alone_gets_the_training_verdict():
    """No fit(): only a user tf.function that applies gradients, one calls entry per input signature."""
    site = "/home/ana/project/loop.py:16"
    calls = [{"api": "tf.function", "target": "train_step", "call_site": site, "input_signature": f"float32[{n}, 4]",
              "count": count, "median_s": median, "p95_s": median, "first_s": median, "total_s": count * median,
              "phases": {"graph_creation": 0.3 if n == 2 else 0.02, "kernel_execution": 0.001 * count},
              "phase_calls": count, "training_step": True}
             for n, count, median in ((2, 1, 0.36), (3, 40, 0.002), (4, 1, 0.025))]
    raw = {"schema_version": 1, "environment": {}, "run": {"wall_s": 3.0}, "functions": [], "calls": calls,
           "call_samples": [], "phases": {}, "findings": [], "warnings": []}
    analysis = analyze(Recording.from_dict(raw))
    # 0.47 s of steps in a 3 s run: the rest of the run is not TensorFlow's, and the verdict says so
    assert analysis.verdict.startswith("Training is most of this run's TensorFlow time (465 ms of the 3.00 s run): "
                                       "the training loop's step `train_step()` at `loop.py:16` ran 42 steps, "
                                       "median step 2.00 ms"), analysis.verdict
    (row,) = analysis.training
    assert row["label"] == "training loop step train_step() (tf.function)" and row["steps"] == 42
    assert not [f for f in analysis.findings if f["code"] in TRAINING_CODES]  # a graph step: nothing eager


def test_a_model_compiled_again_in_a_training_loop_is_model_rebuilt_at_its_compile_line():
    raw = data("training_eager")
    site, compiled = "/home/ana/project/loop.py:71", "/home/ana/project/loop.py:70"
    traces = [{"call_site": site, "duration_s": d, "args": [{"kind": "tensor", "shape": [None, 4], "dtype": "float32",
                                                              "name": "data"}],
               "object_index": k, "new_object": k > 1, "created_at": site, "index": k, "compiled_at": compiled,
               "role": "train"} for k, d in ((1, 0.35), (2, 0.2), (3, 0.21))]
    raw["functions"].append({"name": "multi_step_on_iterator", "origin": "keras", "defined_at": "/venv/trainer.py:219",
                             "trace_count": 3, "trace_s": 0.76, "object_count": 3, "model": "net_3", "role": "train",
                             "model_created_at": "/home/ana/project/loop.py:66", "traces": traces})
    found = [f for f in findings(raw, "model-rebuilt") if f["function"] == "net_3"]
    assert len(found) == 1 and found[0]["call_site"] == compiled and found[0]["details"]["retraces"] == 2
    assert found[0]["estimated_savings_s"] == pytest.approx(0.41) and found[0]["details"]["training"] is True
    assert "compiled again at loop.py:70" in found[0]["title"]


def test_a_run_of_evaluate_alone_is_said_to_be_evaluation():
    recording = data("training_callbacks")
    for call in recording["calls"]:
        if call["api"] == "fit":
            call["api"], call["training"] = "evaluate", False
    verdict = analyze(Recording.from_dict(recording)).verdict
    assert verdict.startswith("Evaluation dominates this run: `evaluate()`"), verdict


def test_a_keras_callback_without_a_per_epoch_setting_is_not_promised_one():
    recording = data("training_callbacks")
    for call in recording["calls"]:
        for callback in call.get("callbacks") or []:
            if callback.get("user"):
                callback.update(user=False, name="TerminateOnNaN")
    (finding,) = [f for f in findings(recording, "callback-bound") if "TerminateOnNaN" in f["title"]]
    text = finding["fix"]["text"]
    assert "Where it has a per-epoch setting" in text and "otherwise it costs this much" in text


def _fit_loop(api: str = "fit", calls: int = 30, steps: int = 30, median: float = 0.061) -> dict:
    """training_overhead.json's fit() entry as a loop of ``calls`` calls of ``steps`` steps in all."""
    raw = data("training_overhead")
    entry = raw["calls"][0]
    entry.update(api=api, count=calls, steps=steps, epochs=calls, median_s=median, step_median_s=0.0008,
                 total_s=calls * median, steps_per_epoch=[steps // calls] * min(calls, 10), callbacks=[])
    raw["calls"] = [entry]
    raw.pop("alternatives", None)
    return raw


@pytest.mark.parametrize("api,single", [("fit", "train_on_batch"), ("evaluate", "test_on_batch")])
def test_fit_or_evaluate_in_a_loop_for_one_step_each_is_call_overhead(api, single):
    """The DQN pattern (fit() on one sample per step) and evaluate() in a loop: each call's setup
    is most of it; the fix is the single-batch API, unverified, at most medium."""
    finding = one(_fit_loop(api), "call-overhead")
    assert finding["title"].startswith(f"{api}() at small.py:40 is called 30 times for 1 step each: 61 ms per call")
    assert finding["fix"]["code"].startswith(f"logs = model.{single}(x, y, return_dict=True)")
    assert f"instead of model.{api}(x, y, ...) at small.py:40" in finding["fix"]["code"]
    assert finding["fix"]["verified"] is False and "Unverified" in finding["fix"]["text"]
    assert SEVERITY_RANK[finding["severity"]] >= SEVERITY_RANK["medium"]  # never above medium unmeasured
    assert any("30 steps in 30 calls (1 per call" in e and "60 ms of each call is outside its steps" in e
               for e in finding["evidence"])
    # half of what the calls spent outside their steps
    assert finding["estimated_savings_s"] == pytest.approx(30 * (0.061 - 0.0008) * 0.5)
    assert findings(_fit_loop(api), "step-overhead") == []


def test_fit_calls_with_many_steps_or_mostly_steps_are_not_call_overhead():
    assert findings(_fit_loop(calls=30, steps=300), "call-overhead") == []  # 10 steps per call
    assert findings(_fit_loop(median=0.0015), "call-overhead") == []  # under 2 ms a call
    assert findings(_fit_loop(calls=2, steps=2), "call-overhead") == []  # not a loop
    # 4 steps a call, but the steps are most of it
    assert findings(_fit_loop(calls=30, steps=120, median=0.004), "call-overhead") == []


def test_verdict_of_a_fit_loop_counts_its_calls_not_epochs():
    from tfdiag.analysis import verdict
    recording = Recording.from_dict(_fit_loop())
    text = verdict.training_verdict(recording, [])
    assert "ran 30 steps in 30 calls (1 per call)" in text and "epochs" not in text


def test_step_overhead_leaves_the_profilers_host_op_time_alone_on_a_gpu():
    """On a GPU the profiler's host planes hold kernel launches, not the model's op time: the split decides."""
    raw = data("training_overhead")
    fit = raw["calls"][0]
    fit.update(step_phases={"kernel_execution": 0.00032, "callbacks": 0.00001, "other": 0.00018},
               step_median_s=0.00045, callbacks=[])
    del raw["alternatives"]
    raw["tf_profiler"] = {"step_sites": [{"api": "fit", "call_site": fit["call_site"], "measure": "op_self_time",
                                          "calls_profiled": 3, "model_op_s_per_call": 0.00005}]}
    assert len(findings(raw, "step-overhead")) == 1
    raw["environment"]["devices"] = ["CPU:/physical_device:CPU:0", "GPU:/physical_device:GPU:0"]
    assert findings(raw, "step-overhead") == []


def test_one_step_fit_calls_of_a_heavy_model_are_not_call_overhead():
    """With one step a call there is no step median (each call's first step is left out): the steady
    split's kernel share stands for the step, and a call that is mostly its step is no loop overhead."""
    raw = _fit_loop(calls=8, steps=8, median=0.242)
    entry = raw["calls"][0]
    entry["step_median_s"] = None
    entry["steady_phases"] = {"kernel_execution": 0.236, "data_adapter": 0.004, "other": 0.002}
    assert findings(raw, "call-overhead") == []
    entry["steady_phases"] = {"kernel_execution": 0.002, "data_adapter": 0.030, "graph_creation": 0.020, "other": 0.008}
    entry["median_s"] = 0.060
    finding = one(raw, "call-overhead")
    assert any("each call's only step is its first" in e and "0.00 ms" not in e for e in finding["evidence"])
