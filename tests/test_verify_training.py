"""--verify on training: the what-ifs timed on a clone of the user's model (``verify/training.py``),
the choice among them (``analysis.alternatives.choose_training*``), and no side effects.

The choice is tested on crafted entries (no TensorFlow); the keeper and the measurement on real
tiny Keras 3 models in-process and on tf-keras in a subprocess (TF_USE_LEGACY_KERAS must be set
before TensorFlow is imported). Speed ratios are not asserted: benchmarks/verify.py prints them.
"""

from __future__ import annotations

import pytest

from tfdiag.analysis import alternatives as alt


# -- choosing (crafted entries, no TensorFlow) --------------------------------------------------
def _t(path, ms, *, diff=0.0, equivalent=True, error=None, tolerance=1e-3, kind="training"):
    return {"kind": kind, "target": "tiny", "call_site": "/work/fit.py:9", "path": path,
            "median_s": None if ms is None else ms / 1000, "speedup": None, "equivalent": equivalent,
            "max_abs_diff": diff, "tolerance": tolerance, "steps_timed": 8, "recommended": False,
            "error": error}


def _train(**ms):
    names = {"as_written": "train:as_written", "graph": "train:graph", "spe8": "train:steps_per_execution=8",
             "spe32": "train:steps_per_execution=32", "jit": "train:jit_compile"}
    return [_t(names[k], v) for k, v in ms.items()]


def test_choose_training_picks_the_fastest_equivalent_path():
    entries = _train(as_written=10.0, spe8=4.0, spe32=2.0, jit=6.0)
    choice = alt.choose_training(entries)
    assert choice["entry"]["path"] == "train:steps_per_execution=32"
    assert choice["base"]["path"] == "train:as_written"
    assert choice["speedup"] == pytest.approx(5.0)


def test_choose_training_needs_a_clear_speedup():
    assert alt.choose_training(_train(as_written=10.0, spe8=9.5, spe32=9.3)) is None
    assert alt.choose_training(_train(as_written=10.0, spe8=10.0 / alt.MIN_SPEEDUP)) is not None


def test_choose_training_skips_paths_that_train_differently_or_failed():
    entries = _train(as_written=10.0, spe8=5.0, spe32=2.0, jit=1.0)
    entries[2].update(equivalent=False, max_abs_diff=0.5)  # spe32: the loss drifted
    entries[3].update(error="skipped: XLA is not available", median_s=None)  # jit
    assert alt.choose_training(entries)["entry"]["path"] == "train:steps_per_execution=8"
    entries[1].update(max_abs_diff=0.01, tolerance=1e-3)  # flagged equivalent but beyond its tolerance
    assert alt.choose_training(entries) is None


def test_choose_training_ties_go_to_the_simplest_path():
    # within TIE of the fastest: graph (drop run_eagerly) beats steps_per_execution, 8 beats 32, XLA last
    assert alt.choose_training(_train(as_written=10.0, graph=2.05, spe8=2.0))["entry"]["path"] == "train:graph"
    assert alt.choose_training(_train(as_written=10.0, spe8=2.1, spe32=2.0))["entry"]["path"] == \
        "train:steps_per_execution=8"
    assert alt.choose_training(_train(as_written=10.0, spe32=2.1, jit=2.0))["entry"]["path"] == \
        "train:steps_per_execution=32"
    assert alt.choose_training(_train(as_written=10.0, spe8=5.0, jit=2.0))["entry"]["path"] == "train:jit_compile"


def test_choose_training_without_a_timed_baseline_recommends_nothing():
    entries = _train(as_written=None, spe8=1.0)
    entries[0]["error"] = "not verified: the model could not be cloned (custom layer without get_config)"
    assert alt.choose_training(entries) is None
    assert alt.choose_training([]) is None
    assert alt.choose_training([_t("train:as_written", None, error="cannot clone")]) is None


def test_choose_training_ignores_input_and_inference_entries():
    entries = _train(as_written=10.0) + [_t("input:as_written", 5.0), _t("input:prefetch", 1.0),
                                         _t("predict_on_batch", 1.0, kind="inference")]
    assert alt.choose_training(entries) is None
    choice = alt.choose_training_input(entries)
    assert choice["entry"]["path"] == "input:prefetch" and choice["base"]["path"] == "input:as_written"
    assert choice["speedup"] == pytest.approx(5.0)


def test_choose_training_input_rule():
    entries = [_t("input:as_written", 8.0), _t("input:prefetch", 7.8), _t("input:parallel_map", 2.0),
               _t("input:workers", 1.9)]
    assert alt.choose_training_input(entries)["entry"]["path"] == "input:parallel_map"  # tie: the simpler one
    entries[2]["equivalent"] = False  # a parallel map that changed the batches (order) is not recommended
    assert alt.choose_training_input(entries)["entry"]["path"] == "input:workers"
    assert alt.choose_training_input(entries[:2]) is None  # prefetch within noise
    assert alt.choose_training_input(_train(as_written=10.0, spe8=1.0)) is None


# -- the keeper and the measurement (real Keras 3 in-process, tf-keras in a subprocess) ----------
def _tiny(keras, *, run_eagerly=False, steps_per_execution=1, lazy=False):
    layers = [keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
    model = keras.Sequential(layers if lazy else [keras.Input((4,)), *layers])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"],
                  run_eagerly=run_eagerly, steps_per_execution=steps_per_execution)
    return model


def _data(rows=256):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.random((rows, 4), dtype=np.float32), rng.random((rows, 1), dtype=np.float32)


def _values(variables) -> list:
    import numpy as np

    variables = variables() if callable(variables) else variables
    return [np.array(v.numpy() if hasattr(v, "numpy") else v) for v in variables]


def snapshot(model) -> dict:
    """Everything of the user's model that --verify must leave as it was."""
    import copy

    from tfdiag.verify.fit_keeper import settings_of

    optimizer = model.optimizer
    return {"weights": [w.copy() for w in model.get_weights()], "optimizer": optimizer,
            "optimizer_variables": _values(optimizer.variables),
            "iterations": int(optimizer.iterations.numpy()),
            "loss": model.loss, "compile_config": copy.deepcopy(model.get_compile_config()),
            "metrics": [(m.name, _values(m.variables)) for m in model.metrics],
            "settings": settings_of(model), "history": getattr(model, "history", None),
            "history_values": copy.deepcopy(getattr(getattr(model, "history", None), "history", None)),
            "attributes": dict(vars(model))}


def differences(before: dict, model) -> list[str]:
    """What changed on the user's model since ``snapshot`` (empty when nothing did)."""
    import numpy as np

    after = snapshot(model)
    changed = []

    def arrays_differ(a, b):
        return len(a) != len(b) or any(x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(a, b))

    if arrays_differ(before["weights"], after["weights"]):
        changed.append("weights")
    if after["optimizer"] is not before["optimizer"]:
        changed.append("model.optimizer object")
    if arrays_differ(before["optimizer_variables"], after["optimizer_variables"]):
        changed.append("optimizer variables")
    for key in ("iterations", "loss", "compile_config", "settings", "history_values"):
        if before[key] != after[key]:
            changed.append(key)
    if after["history"] is not before["history"]:
        changed.append("model.history object")
    if [n for n, _ in before["metrics"]] != [n for n, _ in after["metrics"]] or any(
            arrays_differ(a, b) for (_, a), (_, b) in zip(before["metrics"], after["metrics"])):
        changed.append("metrics")
    attrs = after["attributes"]
    changed += [f"attribute {k}" for k in set(before["attributes"]) | set(attrs)
                if k not in attrs or k not in before["attributes"] or attrs[k] is not before["attributes"][k]]
    return changed


def side_effect_run(budget_s: float = 9.0) -> dict:
    """Fit tiny models as a user would (arrays, tf.data, a lazily built eager model), keep them with
    the keeper, measure them on clones; report what changed on the user's models and the entries.
    (9 s: a model's clone and trace run even past its share of the budget; under load, 6 s left the
    third model none.)"""
    import time

    import tensorflow as tf

    from tfdiag.verify import training
    from tfdiag.verify.fit_keeper import FitKeeper
    from tfdiag.verify.training import keras_of

    x, y = _data()
    keeper = FitKeeper()
    models, before = [], []
    for kind in ("arrays", "tf.data", "eager"):
        keras = keras_of(tf.keras.Sequential())  # Keras 3, or tf-keras under TF_USE_LEGACY_KERAS=1
        model = _tiny(keras, run_eagerly=kind == "eager", steps_per_execution=2 if kind == "arrays" else 1,
                      lazy=kind == "eager")
        if kind == "tf.data":
            data = tf.data.Dataset.from_tensor_slices((x, y)).map(lambda a, b: (a * 2.0, b)).batch(16)
            model.fit(data, epochs=2, verbose=0, shuffle=False)
            keeper("fit", model, (data,), {"epochs": 2, "verbose": 0})
        else:
            model.fit(x, y, batch_size=16, epochs=2, verbose=0)
            keeper("fit", model, (x, y), {"batch_size": 16, "epochs": 2, "verbose": 0})
        models.append(model)
        before.append(snapshot(model))
    import random

    import numpy as np

    draws = lambda: (random.random(), float(np.random.random()))  # noqa: E731
    state = (random.getstate(), np.random.get_state())
    expected = draws()
    random.setstate(state[0])
    np.random.set_state(state[1])
    began = time.perf_counter()
    entries = training.measure_fitted(keeper.take(), budget_s, time.perf_counter)
    elapsed = time.perf_counter() - began
    same_draws = draws() == expected  # the user's next random numbers, as without --verify
    changed = {m.name: differences(b, m) for m, b in zip(models, before)}
    models[0].fit(x[:16], y[:16], batch_size=16, verbose=0)  # the control: one real step on the user's model
    control = differences(before[0], models[0])
    return {"elapsed_s": elapsed, "budget_s": budget_s, "control": control, "changed": changed, "same_draws": same_draws,
            "names": [m.name for m in models], "entries": entries, "flavor": type(models[0]).__module__}


def _check_side_effect_run(result: dict) -> None:
    assert result["changed"] == {name: [] for name in result["names"]}
    assert result["same_draws"] is True  # Python's and NumPy's global random state put back
    assert {"weights", "optimizer variables", "iterations", "model.history object"} <= set(result["control"])
    assert result["elapsed_s"] <= result["budget_s"] * 1.3 + 1.0, result["elapsed_s"]
    entries = result["entries"]
    assert all(e["kind"] == "training" for e in entries)
    for name in result["names"]:
        mine = {e["path"]: e for e in entries if e["target"] == name}
        base = mine["train:as_written"]
        assert not base["error"] and base["median_s"] > 0 and base["equivalent"] is True, base
        assert 0 < base["steps_compared"] <= base["steps_timed"]  # at least one timed round
        assert all(e.get("steps_compared") in (None, base["steps_compared"]) for e in mine.values())
        assert sum(bool(e["recommended"]) for e in mine.values() if e["path"].startswith("train:")) <= 1
        for entry in mine.values():
            assert entry["error"] or entry["median_s"] > 0, entry
    arrays, dataset, eager = ({e["path"]: e for e in entries if e["target"] == n} for n in result["names"])
    assert "train:graph" not in arrays and "train:graph" in eager  # only where the user ran eagerly
    assert "train:steps_per_execution=8" in arrays and "input:as_written" not in arrays
    assert {"input:as_written", "input:parallel_map"} <= set(dataset) and "input:prefetch" not in dataset
    assert dataset["input:parallel_map"]["equivalent"] is True  # the same batches, in order


@pytest.mark.tf
def test_verify_training_leaves_the_users_models_as_they_were_keras3():
    result = side_effect_run()
    assert result["flavor"].startswith("keras")
    _check_side_effect_run(result)


@pytest.mark.tf
def test_verify_training_leaves_the_users_models_as_they_were_tf_keras():
    import json
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    code = ("import json, numpy as np; from tests.test_verify_training import side_effect_run; "
            "r = side_effect_run(); print('RESULT' + json.dumps(r, default=lambda v: v.item() "
            "if isinstance(v, np.generic) else str(v)))")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(ROOT),
                          timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT"):])
    assert result["flavor"].startswith("tf_keras")
    _check_side_effect_run(result)


@pytest.mark.tf
def test_fit_keeper_keeps_batches_settings_and_says_what_cannot_be_replayed():
    import keras
    import numpy as np
    import tensorflow as tf

    from tfdiag.verify.fit_keeper import FitKeeper
    from tfdiag.verify.keepers import InputKeeper

    x, y = _data(100)
    keeper, inputs = FitKeeper(), InputKeeper()
    arrays, dataset, gen, batch = (_tiny(keras, steps_per_execution=4) for _ in range(4))
    keeper("fit", arrays, (x, y, 16), {"epochs": 3})
    inputs("fit", arrays, (x, y, 16), {})  # fit() is FitKeeper's: the inference keeper ignores it
    assert inputs.take() == []
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    keeper("fit", dataset, (data,), {})
    keeper("fit", gen, ((b for b in [(x, y)]),), {})
    keeper("fit", batch, (x[:5], y[:5]), {})  # then train_on_batch: its batches replace fit()'s
    keeper("train_on_batch", batch, (x[:5], y[:5]), {})
    keeper("train_on_batch", batch, (x[5:10],), {"y": y[5:10]})
    keeper("evaluate", batch, (x, y), {})  # nothing to train
    kept = {k.model.name: k for k in keeper.take()}
    assert keeper.take() == []  # forgotten once taken
    a = kept[arrays.name]
    assert (a.kind, a.batch_size, len(a.batches), a.settings["steps_per_execution"]) == ("arrays", 16, 6, 4)
    np.testing.assert_array_equal(a.batches[1][0], x[16:32])
    np.testing.assert_array_equal(a.batches[5][1], y[80:96])
    assert a.batches[0][0].base is None or a.batches[0][0].base is not x  # copied, not a view of the user's array
    d = kept[dataset.name]
    assert d.kind == "tf.data" and d.source is data and not d.batches
    g = kept[gen.name]
    assert g.kind == "generator" and "cannot be replayed" in g.unsupported
    b = kept[batch.name]
    assert b.api == "train_on_batch" and len(b.batches) == 2 and b.batch_size == 5
    np.testing.assert_array_equal(b.batches[1][1], y[5:10])


@pytest.mark.tf
def test_unclonable_or_unreplayable_training_is_one_error_entry():
    import time

    import keras

    from tfdiag.verify import training
    from tfdiag.verify.fit_keeper import FitKeeper

    class Opaque(keras.Model):  # a subclassed model whose constructor takes a non-serializable argument
        def __init__(self, thing):
            super().__init__()
            self.thing = thing
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

    x, y = _data(64)
    opaque = Opaque(object())
    opaque.compile(optimizer="sgd", loss="mse")
    opaque.fit(x, y, batch_size=16, verbose=0)
    fed_by_generator = _tiny(keras)
    fed_by_generator.compile(optimizer="sgd", loss="mse")
    keeper = FitKeeper()
    keeper("fit", opaque, (x, y), {"batch_size": 16})
    keeper("fit", fed_by_generator, (iter([(x, y)]),), {})
    entries = training.measure_fitted(keeper.take(), 3.0, time.perf_counter)
    assert [e["path"] for e in entries] == ["train:as_written", "train:as_written"]
    by_target = {e["target"]: e for e in entries}
    assert by_target[opaque.name]["error"].startswith("not verified: the model cannot be cloned")
    assert "generator" in by_target[fed_by_generator.name]["error"] or "replay" in by_target[fed_by_generator.name]["error"]
    assert all(e["median_s"] is None and e["recommended"] is False for e in entries)


@pytest.mark.tf
def test_pydataset_input_is_timed_with_workers():
    import time

    import keras

    from tfdiag.verify import training
    from tfdiag.verify.fit_keeper import FitKeeper

    x, y = _data(128)

    class Slow(keras.utils.PyDataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            time.sleep(0.01)
            return x[i * 16:(i + 1) * 16], y[i * 16:(i + 1) * 16]

    data = Slow()
    model = _tiny(keras)
    model.fit(data, epochs=1, verbose=0)
    keeper = FitKeeper()
    keeper("fit", model, (data,), {})
    entries = {e["path"]: e for e in training.measure_fitted(keeper.take(), 5.0, time.perf_counter)}
    assert entries["input:as_written"]["median_s"] >= 0.009  # each batch sleeps 10 ms
    workers = entries["input:workers"]
    assert workers["workers"] >= 2 and workers["equivalent"] is True and workers["median_s"] > 0
    assert entries["train:as_written"]["equivalent"] is True


@pytest.mark.tf
def test_diagnose_verify_times_fit_on_clones_outside_the_recording():
    import keras

    import tfdiag

    x, y = _data(256)
    model = _tiny(keras)
    with tfdiag.diagnose(verify=True, verify_budget=6.0, cprofile=False, tf_profiler=False) as d:
        model.fit(x, y, batch_size=16, epochs=2, verbose=0)
        before = snapshot(model)
    assert differences(before, model) == []
    recording = d.recording
    fits = [c for c in recording.calls if c["api"] == "fit"]
    if not fits:
        pytest.skip("fit() is not captured in this checkout yet")
    assert sum(c["count"] for c in fits) == 1  # the clones' fit() calls were not recorded
    entries = [e for e in recording.extra["alternatives"] if e.get("kind") == "training"]
    paths = {e["path"]: e for e in entries}
    assert {"train:as_written", "train:steps_per_execution=8", "train:steps_per_execution=32"} <= set(paths)
    assert paths["train:as_written"]["call_site"].endswith(f"test_verify_training.py:{_fit_line()}")
    assert paths["train:as_written"]["median_s"] > 0 and paths["train:as_written"]["equivalent"] is True
    chosen = alt.choose_training(entries)
    assert [e["path"] for e in entries if e["recommended"]] == ([chosen["entry"]["path"]] if chosen else [])


def _fit_line() -> int:
    import inspect

    source, start = inspect.getsourcelines(test_diagnose_verify_times_fit_on_clones_outside_the_recording)
    return start + next(i for i, line in enumerate(source) if "model.fit(x, y, batch_size=16, epochs=2" in line)


@pytest.mark.tf
def test_slow_steps_train_fewer_steps_within_the_budget():
    import time

    import keras
    import numpy as np
    import tensorflow as tf

    from tfdiag.verify import training

    class Sleepy(keras.layers.Layer):  # 20 ms per step, inside the graph
        def call(self, x):
            pause = tf.numpy_function(lambda: np.float32(time.sleep(0.02) or 0.0), [], tf.float32, stateful=True)
            return x + tf.ensure_shape(pause, []) * 0.0

        def compute_output_shape(self, shape):
            return shape

    x, y = _data(64)
    model = keras.Sequential([keras.Input((4,)), Sleepy(), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, batch_size=16, verbose=0)
    began = time.perf_counter()
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    entries = training.measure_training(model, batches, settings={"steps_per_execution": 1}, budget_s=3.0,
                                        target="sleepy", clock=time.perf_counter)
    elapsed = time.perf_counter() - began
    base = entries[0]
    assert base["path"] == "train:as_written" and base["median_s"] >= 0.018, base
    assert 0 < base["steps_compared"] < training.STEPS  # stopped early, after WARM_SHARE of the budget
    assert all(e["steps_compared"] in (None, base["steps_compared"]) for e in entries)
    assert elapsed < 3.0 * 1.5 + 1.0, elapsed


@pytest.mark.tf
def test_cli_verify_on_a_tf_keras_fit_script(tmp_path):
    """Through the CLI, the script's globals are gone when --verify runs: the keeper's reference
    keeps the model; the clones' fit() calls stay out of the recording."""
    import textwrap

    from tfdiag import load

    from .conftest import run_tfdiag

    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import numpy as np, tensorflow as tf
        keras = tf.keras
        rng = np.random.default_rng(0)
        x, y = rng.random((512, 4), dtype=np.float32), rng.random((512, 1), dtype=np.float32)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(1)], name="cli_fit")
        model.compile(optimizer="adam", loss="mse")
        ds = tf.data.Dataset.from_tensor_slices((x, y)).map(lambda a, b: (a + 1.0, b)).batch(16)
        model.fit(ds, epochs=2, verbose=0)
    """))
    out = tmp_path / "out"
    result = run_tfdiag("analyze", "-o", str(out), "--verify", "--verify-budget", "6", "--no-cprofile",
                        "--no-tf-profiler", str(script), env_extra={"TF_USE_LEGACY_KERAS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    recording = load(out / "recording.json")
    assert recording.environment["keras_flavor"] == "tf-keras"
    fits = [c for c in recording.calls if c["api"] == "fit"]
    if not fits:
        pytest.skip("fit() is not captured in this checkout yet")
    assert sum(c["count"] for c in fits) == 1
    entries = {e["path"]: e for e in recording.extra["alternatives"] if e.get("kind") == "training"}
    assert entries["train:as_written"]["target"] == "cli_fit" and entries["train:as_written"]["median_s"] > 0
    assert entries["train:as_written"]["call_site"].endswith("train.py:10")
    assert {"input:as_written", "input:parallel_map"} <= set(entries) and "input:prefetch" not in entries
    assert entries["input:as_written"]["median_s"] > 0


@pytest.mark.tf
def test_train_on_batch_loop_is_timed_as_written_and_compared_with_fit():
    import time

    import keras

    from tfdiag.verify import training
    from tfdiag.verify.fit_keeper import FitKeeper

    x, y = _data(160)
    model = _tiny(keras)
    keeper = FitKeeper()
    for i in range(0, 160, 16):
        model.train_on_batch(x[i:i + 16], y[i:i + 16])
        keeper("train_on_batch", model, (x[i:i + 16], y[i:i + 16]), {})
    before = snapshot(model)
    entries = {e["path"]: e for e in training.measure_fitted(keeper.take(), 4.0, time.perf_counter)}
    assert differences(before, model) == []
    base = entries["train:as_written"]
    assert base["api"] == "train_on_batch" and base["median_s"] > 0 and not base["error"]
    spe = entries["train:steps_per_execution=8"]
    assert spe["equivalent"] is True, spe  # fit() on the same batches trains the same as the loop
    assert spe["max_abs_diff"] < 1e-4


def test_input_equivalence_compares_the_batches_both_runs_read():
    import numpy as np

    from tfdiag.verify import input_paths

    a = [[np.arange(4.0)], [np.arange(4.0) + 1]]
    paths = ("input:as_written", "input:parallel_map", "input:prefetch")
    entries = {p: input_paths._entry("m", "", p) for p in paths}
    firsts = {"input:as_written": [a, a], "input:parallel_map": [a[:1]],  # cut short by the budget
              "input:prefetch": [[[np.arange(4.0) * 2], a[1]]]}
    input_paths._equivalence(entries, firsts)
    assert entries["input:parallel_map"]["equivalent"] is True
    assert entries["input:prefetch"]["equivalent"] is False and entries["input:prefetch"]["max_abs_diff"] == 3.0
    shuffled = {"input:as_written": [a, a[::-1]], "input:prefetch": [a[::-1]]}
    entries = {p: input_paths._entry("m", "", p) for p in paths}
    input_paths._equivalence(entries, shuffled)  # the user's own pipeline differs run to run: by structure
    assert entries["input:prefetch"]["equivalent"] is True and "structure" in entries["input:prefetch"]["note"]


def test_plan_leaves_out_the_users_own_setting():
    from tfdiag.verify.training import plan

    assert [p for p, _ in plan({"steps_per_execution": 1, "run_eagerly": False, "jit_compile": False})] == [
        "train:as_written", "train:steps_per_execution=8", "train:steps_per_execution=32", "train:jit_compile"]
    wanted = dict(plan({"steps_per_execution": 8, "run_eagerly": True, "jit_compile": True}))
    assert list(wanted) == ["train:as_written", "train:graph", "train:steps_per_execution=32"]
    assert wanted["train:graph"] == {"run_eagerly": False}
