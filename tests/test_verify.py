"""--verify: the alternatives are timed on the user's own model, and the advice follows them.

The recommendation logic is tested on crafted ``alternatives`` (deterministic); the
measurement itself on real Keras 3 models in-process and on tf-keras in a subprocess
(TF_USE_LEGACY_KERAS must be set before TensorFlow is imported). Speed ratios are not
asserted here: benchmarks/verify.py prints them.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import textwrap

import numpy as np
import pytest

from tfdiag import Recording, load, render
from tfdiag.analysis import alternatives as alt
from tfdiag.analysis import analyze, input_bound
from tfdiag.verify import RETRACE_CHECK_SHARE, Verifier, keepers, measure, specs

from .conftest import EXAMPLES, ROOT, run_tfdiag

DESIGN_KEYS = {"target", "path", "median_s", "speedup", "max_abs_diff", "recommended"}


# -- crafted recordings ------------------------------------------------------------------
def _entry(path, median_ms, *, diff=0.0, equivalent=True, error=None, user_path="predict", target="tiny",
           tolerance=1e-3):
    return {"target": target, "path": path, "user_path": user_path,
            "median_s": None if median_ms is None else median_ms / 1000, "speedup": None,
            "first_s": None if median_ms is None else 3 * median_ms / 1000,
            "max_abs_diff": diff, "equivalent": equivalent, "recommended": False, "calls": 100,
            "error": error, "tolerance": tolerance,
            "signature": {"shape": [None, 4], "dtype": "float32"}}


def _table(ms_by_path, user_path="predict", **overrides):
    entries = [_entry(path, ms, user_path=user_path, **overrides.get(path, {})) for path, ms in ms_by_path.items()]
    base = next(e for e in entries if e["path"] == user_path)["median_s"]
    for e in entries:
        if e["median_s"]:
            e["speedup"] = base / e["median_s"]
    return entries


def _recording(entries=None, api="predict", median_ms=75.0, count=20, flavor="keras3"):
    median = median_ms / 1000
    total = median * count
    if api == "__call__":  # eager-loop: Python overhead dominates
        phases = {"other": 0.7 * total, "input_processing": 0.1 * total, "kernel_execution": 0.2 * total}
    else:  # predict-overhead: fixed per-call cost dominates
        phases = {"data_adapter": 0.55 * total, "graph_creation": 0.1 * total, "other": 0.3 * total,
                  "kernel_execution": 0.05 * total}
    call = {"api": api, "target": "tiny", "call_site": "/work/loop.py:12", "input_signature": "float32[32, 4]",
            "count": count, "measured_count": count, "total_s": total, "median_s": median, "p95_s": median,
            "first_s": median, "max_s": median, "batch": 32,
            "phases": {p: phases.get(p, 0.0) for p in ("input_processing", "data_adapter", "graph_creation",
                                                       "kernel_execution", "output_processing", "other")}}
    extra = {} if entries is None else {"alternatives": entries}
    return Recording(environment={"keras_flavor": flavor, "tensorflow": "2.21.0"}, calls=[call], extra=extra)


def _call_finding(recording, code="predict-overhead"):
    found = [f for f in analyze(recording).findings if f["code"] == code]
    assert len(found) == 1, [f["code"] for f in analyze(recording).findings]
    return found[0]


def _recommended(recording):
    """The paths the analysis recommends (its Measured alternatives rows; the recording is not written)."""
    return [row["path"] for row in analyze(recording).alternatives if row["recommended"]]


KERAS3 = {"predict": 75.0, "predict_on_batch": 0.76, "__call__": 2.75, "tf.function": 0.43}
TF_KERAS = {"predict": 82.0, "predict_on_batch": 9.5, "__call__": 1.4, "tf.function": None}


# -- the recommendation follows the measurement -------------------------------------------
@pytest.mark.parametrize("fastest", ["predict_on_batch", "__call__", "tf.function", "tf.function_xla", "litert"])
def test_the_fastest_equivalent_path_is_recommended_whichever_it_is(fastest):
    times = {"predict": 80.0, "predict_on_batch": 6.0, "__call__": 5.0, "tf.function": 4.0,
             "tf.function_xla": 3.0, "litert": 2.0}
    times[fastest] = 0.5
    recording = _recording(_table(times))
    finding = _call_finding(recording)
    assert finding["fix"]["verified"] is True
    assert finding["fix"]["measured"]["path"] == fastest
    assert finding["fix"]["measured"]["speedup"] == pytest.approx(160.0)
    assert "160× faster" in finding["fix"]["text"]
    assert _recommended(recording) == [fastest]
    assert alt.snippet({"path": fastest, "signature": {"shape": [None, 4], "dtype": "float32"}}) \
        in finding["fix"]["code"]


def test_keras3_and_tf_keras_measurements_give_different_advice():
    """DESIGN.md's figures: tf.function wins on Keras 3, model(x) on tf-keras (its tf.function failed here)."""
    k3 = _recording(_table(KERAS3), flavor="keras3")
    tk_entries = _table({k: (v if v is not None else 1.0) for k, v in TF_KERAS.items()},
                        **{"tf.function": {"error": "failed: ValueError: crafted"}})
    tk = _recording(tk_entries, flavor="tf-keras")
    assert _call_finding(k3)["fix"]["measured"]["path"] == "tf.function"
    assert _call_finding(tk)["fix"]["measured"]["path"] == "__call__"
    # not a rule per Keras flavour: the same numbers under the other flavour give the same advice
    swapped = _recording(_table(KERAS3), flavor="tf-keras")
    assert _call_finding(swapped)["fix"]["measured"]["path"] == "tf.function"


def test_a_non_equivalent_path_is_never_recommended():
    times = {"predict": 80.0, "predict_on_batch": 6.0, "__call__": 5.0, "tf.function": 4.0,
             "tf.function_xla": 0.2, "litert": 0.1}
    entries = _table(times, **{
        "litert": {"diff": 0.5, "equivalent": False},              # flagged different
        "tf.function_xla": {"diff": 0.5, "equivalent": True},      # flag says same, diff says not
        "__call__": {"error": "failed: crafted"},                  # errored paths neither
    })
    recording = _recording(entries)
    finding = _call_finding(recording)
    assert finding["fix"]["measured"]["path"] == "tf.function"
    assert _recommended(recording) == ["tf.function"]
    assert not alt.is_equivalent(entries[-1]) and not alt.is_equivalent(entries[-2])


def test_no_faster_equivalent_path_means_no_recommendation():
    times = {"predict": 80.0, "predict_on_batch": 6.0, "tf.function": 4.0}
    entries = _table(times, **{p: {"diff": 1.0, "equivalent": False} for p in ("predict_on_batch", "tf.function")})
    recording = _recording(entries)
    finding = _call_finding(recording)
    assert finding["fix"]["verified"] is False
    assert "no alternative path was both faster and equivalent" in finding["fix"]["text"]
    assert _recommended(recording) == []


def test_ties_go_to_the_simpler_path():
    recording = _recording(_table({"predict": 80.0, "tf.function": 0.50, "tf.function_xla": 0.47}))
    assert _call_finding(recording)["fix"]["measured"]["path"] == "tf.function"


def test_eager_loop_recommendation_is_against_model_call():
    recording = _recording(_table({"__call__": 2.75, "predict": 75.0, "tf.function": 0.43}, user_path="__call__"),
                           api="__call__", median_ms=2.75, count=50)
    finding = _call_finding(recording, "eager-loop")
    assert finding["fix"]["measured"]["path"] == "tf.function"
    assert finding["fix"]["measured"]["base_path"] == "__call__"
    assert "input_signature=[tf.TensorSpec([None, 4], tf.float32)]" in finding["fix"]["code"]


def test_without_verify_the_fix_says_it_is_unverified_and_how_to_verify():
    finding = _call_finding(_recording(None))
    assert finding["fix"]["verified"] is False
    assert "Unverified" in finding["fix"]["text"] and "tfdiag analyze --verify" in finding["fix"]["text"]


def test_a_model_verify_could_not_measure_says_why():
    entries = [measure.failed_entry("tiny", "predict", "not measured: input is a _BatchDataset, which cannot be replayed")]
    finding = _call_finding(_recording(entries))
    assert finding["fix"]["verified"] is False
    assert "_BatchDataset" in finding["fix"]["text"]


def test_analysis_recommends_without_writing_and_reanalysis_agrees(tmp_path):
    recording = _recording(_table(KERAS3))
    before = copy.deepcopy(recording.extra)
    analysis = analyze(recording)
    assert recording.extra == before  # analysis is pure: the measured entries are not marked
    assert [row["path"] for row in analysis.alternatives if row["recommended"]] == ["tf.function"]
    assert alt.recommended(recording, analysis.findings) == [recording.extra["alternatives"][3]]
    recording.save(tmp_path / "r.json")
    again = load(tmp_path / "r.json")
    assert _recommended(again) == ["tf.function"]
    again.extra["alternatives"][0]["recommended"] = True  # a stale flag in a file: the findings decide
    assert _recommended(again) == ["tf.function"]


def test_view_rows_carry_the_labels_and_flags_the_page_shows():
    entries = _table({"predict": 80.0, "tf.function": 0.4, "litert": 0.05},
                     **{"litert": {"diff": 0.25, "equivalent": False}})
    entries.append(measure.failed_entry("tiny", "tf.function_xla", "failed: crafted", "predict"))
    rows = {row["path"]: row for row in analyze(_recording(entries)).alternatives}
    assert rows["predict"]["label"] == "model.predict(x)" and rows["predict"]["your_path"] is True
    assert rows["tf.function"]["label"] == "tf.function + input_signature" and rows["tf.function"]["recommended"]
    assert rows["tf.function"]["user_label"] == "model.predict(x)" and rows["tf.function"]["same_outputs"] is True
    assert rows["litert"]["same_outputs"] is False and not rows["litert"]["recommended"]
    assert rows["tf.function_xla"]["same_outputs"] is None
    assert set(alt.PATHS) == set(alt.CALL_PATHS) | {alt.TFDATA_PATH}  # one table of paths, labels with it


def test_report_shows_the_measured_table_with_equivalence(tmp_path):
    entries = _table({"predict": 80.0, "predict_on_batch": 1.0, "tf.function": 0.4, "litert": 0.05},
                     **{"litert": {"diff": 0.25, "equivalent": False}})
    recording = _recording(entries)
    page = open(render(recording, str(tmp_path / "report.html")), encoding="utf-8").read()
    assert "Measured alternatives" in page
    rows = re.findall(r'<tr class="alt[^"]*".*?</tr>', page, flags=re.S)
    assert len(rows) == 4
    by_path = {re.search(r"<code>(.*?)</code>", row).group(1): row for row in rows}
    assert "recommended" in by_path["tf.function + input_signature"]
    assert 'class="alt recommended"' not in by_path["LiteRT (ai-edge-litert)"]
    assert re.search(r'class="equivalent"><strong>no</strong>', by_path["LiteRT (ai-edge-litert)"])
    assert 'class="equivalent">yes' in by_path["model.predict_on_batch(x)"]
    assert "your path" in by_path["model.predict(x)"]
    plain = open(render(_recording(None), str(tmp_path / "plain.html")), encoding="utf-8").read()
    assert "tfdiag analyze --verify" in plain and 'class="alt' not in plain


# -- pure helpers of the capture ---------------------------------------------------------
def test_compare_outputs():
    a = [np.array([[1.0, np.nan], [3.0, 4.0]], dtype=np.float32)]
    assert measure.compare(a, [a[0].copy()]) == (0.0, None)
    b = [a[0] + np.array([[1e-3, 0.0], [0.0, -2e-3]], dtype=np.float32)]
    diff, why = measure.compare(a, b)
    assert why is None and diff == pytest.approx(2e-3, rel=1e-3)
    assert measure.compare(a, [np.zeros((2, 2), np.float32)])[0] is None  # NaN where the reference has a number
    assert "shape" in measure.compare(a, [np.zeros((2, 3), np.float32)])[1]
    assert "outputs" in measure.compare(a, a + a)[1]
    assert measure.compare([np.array([1, 2])], [np.array([1, 5])]) == (3.0, None)


def test_specs_merge_to_none_where_shapes_varied():
    s1 = {"shape": [32, 4, 7], "dtype": "float32"}
    s2 = {"shape": [5, 4, 9], "dtype": "float32"}
    merged = specs.merge_specs(s1, s2)
    assert merged == {"shape": [None, 4, None], "dtype": "float32"}
    assert specs.signature_of({"shape": [32, 4], "dtype": "float32"}) == {"shape": [None, 4], "dtype": "float32"}
    nested = specs.merge_specs([s1, {"shape": [32], "dtype": "int64"}], [s2, {"shape": [5], "dtype": "int64"}])
    assert nested == [{"shape": [None, 4, None], "dtype": "float32"}, {"shape": [None], "dtype": "int64"}]
    assert specs.describe_spec(specs.signature_of(nested)) == "[float32[None, 4, None], int64[None]]"
    assert alt.snippet({"path": "tf.function", "signature": specs.signature_of(nested)}).count("tf.TensorSpec") == 2


def test_one_walk_serves_specs_and_inputs_in_the_same_order():
    x = {"b": np.zeros((3, 2), np.float32), "a": [np.zeros((3,), np.int64), np.ones((3, 1), np.float32)]}
    spec = specs.input_spec(x)
    assert spec == {"a": [{"shape": [3], "dtype": "int64"}, {"shape": [3, 1], "dtype": "float32"}],
                    "b": {"shape": [3, 2], "dtype": "float32"}}
    assert [leaf["dtype"] for leaf in specs.leaves(spec)] == [a.dtype.name for a in specs.input_leaves(x)]
    assert specs.pack(spec, [1, 2, 3]) == {"a": [1, 2], "b": 3}
    assert specs.skeleton(spec) == {"a": [None, None], "b": None} and specs.leading_dim(spec) == 3
    calls = [(np.zeros((2, 4), np.float32), np.zeros((3,))), (np.zeros((5, 4), np.float32), np.zeros((3, 1)))]
    assert specs.common_signature(calls) == [{"shape": [None, 4], "dtype": "float32"}, {"shape": None, "dtype": "float64"}]
    assert specs.common_signature([(np.zeros(2, np.float32),), (np.zeros(2, np.int32),)]) is None
    assert specs.leaf_text({"shape": None, "dtype": "float64"}) == "float64[?]"
    with pytest.raises(specs.Unsupported, match="str"):
        specs.input_spec([np.zeros(2), "text"])


def test_verify_builds_on_captures_input_spec_and_batch_size():
    from tfdiag.analysis import retracing
    from tfdiag.capture import keras_calls

    x = {"b": np.zeros((5, 2), np.float32), "a": [np.zeros((3,), np.int64)] * 10}
    assert specs.input_spec(x) == keras_calls.input_spec(x, limit=None)  # one format, taken whole for verify
    assert len(specs.input_spec(x)["a"]) == 10 and keras_calls.input_spec(x)["a"][-1] == {"type": "…", "omitted": 2}
    assert specs.leading_dim is keras_calls.leading_dim  # one batch size of a spec
    # The batch a call records is the spec's: the first array in sorted-key order, not dict insertion order.
    assert keras_calls.describe_call_input((x,), {})[1] == specs.leading_dim(specs.input_spec(x)) == 3
    assert retracing.call_batch({"input_spec": keras_calls.input_spec(x)}) == 3
    assert not hasattr(retracing, "signature_code")  # one spec-to-code helper in analysis: spec_code


def test_path_groups_are_explicit_tuples_not_the_order_of_the_label_table(monkeypatch):
    assert alt.USER_APIS == ("predict", "predict_on_batch", "__call__")
    assert alt.IN_TENSORFLOW == ("predict", "predict_on_batch", "__call__", "tf.function", "tf.function_xla")
    assert alt.CALL_PATHS == (*alt.IN_TENSORFLOW, "litert") and set(alt.SIMPLEST_FIRST) == set(alt.PATHS)
    # A tie goes to the simpler path whatever order the label table is written in.
    monkeypatch.setattr(alt, "PATHS", dict(reversed(list(alt.PATHS.items()))))
    entries = _table({"predict": 80.0, "predict_on_batch": 1.0, "tf.function": 0.95})
    assert alt.choose(entries, "predict")["entry"]["path"] == "predict_on_batch"


# -- training loops get no inference advice -------------------------------------------------
def test_no_inference_path_is_recommended_for_a_training_loop():
    entries = _table({"__call__": 5.0, "predict": 80.0, "predict_on_batch": 1.0, "tf.function": 0.5, "litert": 0.1},
                     user_path="__call__")
    assert alt.choose(entries, "__call__")["entry"]["path"] == "litert"  # for inference, LiteRT would win
    assert alt.choose(entries, "__call__", training=True) is None
    recording = _recording(entries, api="__call__", median_ms=5.0, count=50)
    recording.calls[0]["training"] = True
    analysis = analyze(recording)
    for finding in analysis.findings:
        assert (finding["fix"].get("measured") or {}).get("path") not in ("litert", "predict", "predict_on_batch",
                                                                          alt.TFDATA_PATH), finding
        assert "LiteRT" not in finding["fix"].get("text", "") and "predict" not in finding["fix"].get("code", "")
    assert not any(row["recommended"] for row in analysis.alternatives)


# -- the input-bound fix is measured or modest ----------------------------------------------
def _input_bound_recording(entries=None, count=200):
    split = {"input_processing": 0.02, "data_adapter": 0.10, "graph_creation": 0.0, "kernel_execution": 0.06,
             "output_processing": 0.0, "other": 0.02}
    call = {"api": "predict", "target": "tiny", "call_site": "/work/big.py:9", "input_signature": "float32[4096, 4]",
            "count": count, "total_s": 0.2 * count, "median_s": 0.2, "p95_s": 0.2, "first_s": 0.2, "batch": 4096,
            "phases": {p: v * count for p, v in split.items()}, "steady_phases": split}
    extra = {} if entries is None else {"alternatives": entries}
    return Recording(environment={"keras_flavor": "keras3", "tensorflow": "2.21.0"}, calls=[call], extra=extra)


def test_input_bound_without_a_measurement_is_unverified_and_at_most_medium():
    [finding] = input_bound.input_bound_findings(_input_bound_recording(), {})
    assert finding.estimated_savings_s == pytest.approx(0.12 * 200 * 0.5)  # 12 s: "high" if it were measured
    assert finding.severity == "medium" and finding.fix["verified"] is False
    assert "Unverified" in finding.fix["text"] and "--verify" in finding.fix["text"]
    assert "input-bound" in [f["code"] for f in analyze(_input_bound_recording()).findings]  # in the rules


def test_input_bound_quotes_the_measured_speedup_and_is_recommended_only_when_faster_and_equal():
    faster = _table({"predict": 200.0, "tf.function": 150.0, alt.TFDATA_PATH: 100.0})
    recording = _input_bound_recording(faster)
    [finding] = input_bound.input_bound_findings(recording, {})
    assert finding.fix["verified"] is True and finding.fix["measured"]["path"] == alt.TFDATA_PATH
    assert "2.0× faster" in finding.fix["text"] and "from_tensor_slices(x).batch(32)" in finding.fix["code"]
    assert finding.estimated_savings_s == pytest.approx(200 * 0.2 * 0.5) and finding.severity == "high"
    assert alt.recommended(recording, [finding.to_dict()]) == [faster[2]]
    assert alt.choose(faster, "predict")["entry"]["path"] == "tf.function"  # never a predict-overhead fix
    analysis = analyze(recording)
    assert alt.TFDATA_PATH in [row["path"] for row in analysis.alternatives if row["recommended"]]
    for overrides, words in (({alt.TFDATA_PATH: {"diff": 0.5, "equivalent": False}}, "outputs differed"),
                             ({}, "not clearly faster")):
        times = {"predict": 200.0, alt.TFDATA_PATH: 100.0 if overrides else 210.0}
        recording = _input_bound_recording(_table(times, **overrides))
        [finding] = input_bound.input_bound_findings(recording, {})
        assert finding.fix["verified"] is False and finding.severity == "low" and words in finding.fix["text"]
        assert finding.estimated_savings_s == 0.0 and alt.recommended(recording, [finding.to_dict()]) == []


# -- verify is its own layer ---------------------------------------------------------------
def test_verify_imports_no_session_and_reads_no_diagnoser_state():
    package = ROOT / "tfdiag" / "verify"
    modules = sorted(package.glob("*.py"))
    assert {m.name for m in modules} >= {"__init__.py", "keepers.py", "specs.py", "paths.py", "measure.py",
                                         "retrace_checks.py"}
    for module in modules:
        assert len(module.read_text().splitlines()) < 400, module
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert "session" not in (node.module or "").split(".") + [a.name for a in node.names], module
            elif isinstance(node, ast.Import):
                assert not any("session" in a.name.split(".") for a in node.names), module
            elif isinstance(node, ast.Attribute):
                assert node.attr != "_ACTIVE", module
    assert not (ROOT / "tfdiag" / "capture" / "whatif.py").exists()


def test_verifier_splits_its_budget_by_a_named_share_on_the_injected_clock():
    ticks = iter(range(1000))
    said: list[str] = []
    verifier = Verifier(budget_s=2.0 / RETRACE_CHECK_SHARE, warn=said.append, clock=lambda: float(next(ticks)))
    kept = [keepers.Traced(None, f"f{i}", "a.py:1") for i in range(3)]
    for traced in kept:
        traced.traces, traced.unsupported = 2, "crafted"
    verifier.functions.take = lambda: kept
    sections = verifier.run(interrupted=False)
    # one tick per clock read: the checks start at 1, the third reads 4 (3 s in, over the 2 s share)
    assert [c["error"] for c in sections["retrace_checks"]] == ["not verified: crafted"] * 2 + [
        "skipped: the --verify budget was spent"]
    assert sections["alternatives"] == [] and said == []
    assert Verifier(warn=said.append).run(interrupted=True) == {"alternatives": [], "retrace_checks": []}
    assert said == ["--verify skipped: the run was interrupted"]


# -- real Keras 3, in this process --------------------------------------------------------
def _tiny_model(name="tiny"):
    import keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Dense(1)], name=name)


def _x(batch=32):
    return np.random.default_rng(0).random((batch, 4), dtype=np.float32)


@pytest.mark.tf
def test_measure_alternatives_times_every_path_on_the_same_input(tmp_path):
    import tfdiag

    model = _tiny_model()
    x = _x()
    model.predict(x, verbose=0)
    entries = tfdiag.measure_alternatives(model, x, user_path="predict", budget_s=4.0)
    assert [e["path"] for e in entries] == list(alt.CALL_PATHS)
    for e in entries:
        assert DESIGN_KEYS <= set(e) and e["target"] == "tiny"
        if e["path"] == "litert" and e["error"]:
            assert e["error"].startswith("skipped:"), e["error"]  # not installed / not convertible: said so
            continue
        assert e["error"] is None, e
        assert e["median_s"] > 0 and e["first_s"] > 0 and e["calls"] >= 1
        assert e["equivalent"] is True and e["max_abs_diff"] <= e["tolerance"]
        assert e["recommended"] is False  # capture measures; analysis recommends
    user = entries[0]
    assert user["path"] == "predict" and user["speedup"] == pytest.approx(1.0) and user["max_abs_diff"] == 0.0
    counts = {e["calls"] for e in entries if not e["error"]}
    assert len(counts) == 1  # round-robin: every path was called as often as the others
    assert entries[3]["input_signature"] == "float32[None, 4]"
    Recording(extra={"alternatives": entries}).save(tmp_path / "r.json")  # JSON-safe (no NaN/inf)


@pytest.mark.tf
def test_every_snippet_runs_as_written_and_gives_the_same_outputs():
    import importlib.util

    import tensorflow as tf

    model = _tiny_model()
    x = _x()
    reference = model.predict(x, verbose=0)
    paths = [p for p in alt.CALL_PATHS[1:] if p != "litert" or importlib.util.find_spec("ai_edge_litert")]
    for path in paths:
        namespace = {"tf": tf, "model": model, "x": x}
        exec(alt.snippet({"path": path, "signature": {"shape": [None, 4], "dtype": "float32"}}), namespace)
        assert np.max(np.abs(np.asarray(namespace["y"]) - reference)) < 1e-5, path


@pytest.mark.tf
def test_no_side_effects_on_the_users_model():
    import keras

    trained = _tiny_model()
    x = _x(1024)  # large enough that the prebuilt tf.data path is measured too
    trained.compile(optimizer="adam", loss="mse")
    trained.fit(x, x[:, :1], epochs=1, verbose=0)
    trained.predict(x, verbose=0)
    fresh = _tiny_model()
    fresh(x)  # only ever called directly: predict() must not leave a predict function behind
    for model in (trained, fresh):
        weights = [v.numpy().copy() for v in model.variables]
        attrs = dict(vars(model))
        compiled = model.compiled
        optimizer = getattr(model, "optimizer", None)
        iterations = int(optimizer.iterations.numpy()) if optimizer is not None else None
        predict_function = model.predict_function
        # every path runs (none may start past 60% of the budget: XLA's compile and LiteRT's
        # conversion come before tf.data's, seconds on a slow machine)
        entries = measure.measure_alternatives(model, x, user_path="predict", budget_s=5.0)
        assert alt.TFDATA_PATH in [e["path"] for e in entries if e["median_s"]]
        assert all(np.array_equal(w, v.numpy()) for w, v in zip(weights, model.variables))
        assert model.compiled is compiled
        assert getattr(model, "optimizer", None) is optimizer
        if optimizer is not None:
            assert int(optimizer.iterations.numpy()) == iterations
        assert model.predict_function is predict_function
        now = vars(model)
        assert set(now) == set(attrs)
        assert [k for k in attrs if now[k] is not attrs[k]] == []
    assert fresh.predict_function is None and fresh.compiled is False
    assert isinstance(trained.optimizer, keras.optimizers.Adam)


@pytest.mark.tf
def test_diagnose_verify_measures_after_the_run_and_outside_the_recording():
    import tfdiag

    model = _tiny_model()
    x = _x()
    with tfdiag.diagnose(verify=True, verify_budget=4.0, cprofile=False, tf_profiler=False) as d:
        for _ in range(5):
            model.predict(x, verbose=0)
    recording = d.recording
    assert {c["api"] for c in recording.calls} == {"predict"}  # the what-if calls were not recorded
    assert sum(c["count"] for c in recording.calls) == 5
    assert not recording.user_functions()  # nor its tf.function traces
    entries = recording.extra["alternatives"]
    assert {e["target"] for e in entries} == {"tiny"} and entries[0]["path"] == "predict"
    finding = next(f for f in d.findings if f["code"] == "predict-overhead")
    recommended = [row for row in analyze(recording).alternatives if row["recommended"]]
    assert len(recommended) == 1 and alt.is_equivalent(recommended[0])
    assert finding["fix"]["verified"] is True
    assert finding["fix"]["measured"]["path"] == recommended[0]["path"]
    assert recommended[0]["path"] == alt.choose(entries, "predict")["entry"]["path"]


@pytest.mark.tf
def test_verify_skips_symbolic_calls_and_says_why_a_dataset_input_was_not_measured():
    import tensorflow as tf

    import tfdiag

    inner = _tiny_model("inner")
    other = _tiny_model("other")
    serve = tf.function(lambda t: inner(t, training=False))
    data = tf.data.Dataset.from_tensor_slices(_x()).batch(16)
    with tfdiag.diagnose(verify=True, verify_budget=2.0, cprofile=False, tf_profiler=False) as d:
        for _ in range(3):
            serve(tf.constant(_x()))   # inner is called while tracing only: nothing replayable
            other.predict(data, verbose=0)
    entries = d.recording.extra["alternatives"]
    assert {e["target"] for e in entries} == {"other"}
    assert len(entries) == 1 and "cannot be replayed" in entries[0]["error"]
    assert entries[0]["median_s"] is None and entries[0]["recommended"] is False


@pytest.mark.tf
def test_retrace_fix_is_verified_by_rerunning_the_function_with_the_generated_signature(tmp_path):
    import tensorflow as tf

    import tfdiag

    @tf.function
    def scale(x, w):
        return tf.reduce_sum(x * w, axis=-1)

    counter = tf.Variable(0.0)

    @tf.function
    def accumulate(x):
        counter.assign_add(tf.reduce_sum(x))
        return counter * 2

    @tf.function
    def times(x, n):
        return x * n

    with tfdiag.diagnose(verify=True, verify_budget=3.0, cprofile=False, tf_profiler=False) as d:
        for n in (3, 5, 7, 9):
            scale(tf.random.normal((n, 4)), tf.ones((4,)))
            accumulate(tf.ones((n,)))
            times(tf.ones((2,)), n)
    checks = {c["function"]: c for c in d.recording.extra["retrace_checks"]}
    assert set(checks) == {"scale", "accumulate", "times"}
    fixed = checks["scale"]
    assert fixed["input_signature"] == "(float32[None, 4], float32[4])"
    assert (fixed["inputs"], fixed["traces_before"], fixed["traces_after"]) == (4, 4, 1)
    assert fixed["equivalent"] is True and fixed["max_abs_diff"] == 0.0 and fixed["error"] is None
    # a function that writes state is never run again by tfdiag
    assert "change state" in checks["accumulate"]["error"] and checks["accumulate"]["traces_after"] is None
    assert float(counter.numpy()) == 3 + 5 + 7 + 9
    assert "not a tensor" in checks["times"]["error"]
    # the re-runs stayed out of the recording
    traced = {f["name"]: f["trace_count"] for f in d.recording.user_functions()}
    assert traced == {"scale": 4, "accumulate": 4, "times": 4}
    page = open(d.report(str(tmp_path / "r.html")), encoding="utf-8").read()
    assert "Retrace fixes, verified" in page and "4 → 1" in page


def test_verify_budget_must_be_positive(tmp_path):
    from tfdiag import cli

    script = tmp_path / "s.py"
    script.write_text("pass\n")
    assert cli.main(["analyze", "--verify", "--verify-budget", "0", "-o", str(tmp_path / "o"), str(script)]) == 2


@pytest.mark.tf
def test_a_model_in_a_training_loop_is_not_kept_for_inference_paths():
    import keras
    import tensorflow as tf

    import tfdiag

    trained, served = _tiny_model("trained"), _tiny_model("served")
    x = _x()
    optimizer = keras.optimizers.SGD(0.01)
    with tfdiag.diagnose(verify=True, verify_budget=3.0, cprofile=False, tf_profiler=False) as d:
        for _ in range(4):
            with tf.GradientTape() as tape:  # under a tape, without the training keyword
                loss = tf.reduce_mean((trained(x) - x[:, :1]) ** 2)
            optimizer.apply_gradients(zip(tape.gradient(loss, trained.trainable_variables),
                                          trained.trainable_variables))
            trained(x, training=True)  # the keyword alone marks a training loop too
            served(x, training=False)
    entries = d.recording.extra["alternatives"]
    assert {e["target"] for e in entries} == {"served"}
    assert any("training loop" in w["message"] and "trained" in w["message"] for w in d.recording.warnings)
    assert not any(row["recommended"] and row["target"] == "trained" for row in analyze(d.recording).alternatives)
    keeper = keepers.InputKeeper()
    for _ in range(3):
        keeper("__call__", served, (x,), {"training": True})
    assert keeper.take() == [] and keeper.training == {"served"}


@pytest.mark.tf
def test_a_large_batch_predict_gets_a_prebuilt_tf_data_input_measured_and_compared():
    import tensorflow as tf

    model = _tiny_model()
    x = _x(2048)
    model.predict(x, verbose=0, batch_size=256)
    assert alt.TFDATA_PATH in measure.default_paths("predict", specs.input_spec(x))
    assert alt.TFDATA_PATH not in measure.default_paths("predict", specs.input_spec(_x(1023)))
    assert alt.TFDATA_PATH not in measure.default_paths("__call__", specs.input_spec(x))
    entries = measure.measure_alternatives(model, x, user_path="predict", budget_s=3.0, batch_size=256,
                                           paths=("predict", "__call__", alt.TFDATA_PATH))
    tfdata = entries[-1]
    assert tfdata["path"] == alt.TFDATA_PATH and tfdata["error"] is None and tfdata["batch_size"] == 256
    assert tfdata["median_s"] > 0 and tfdata["calls"] >= 1 and tfdata["calls"] == entries[0]["calls"]
    assert tfdata["equivalent"] is True and tfdata["max_abs_diff"] <= tfdata["tolerance"]
    namespace = {"tf": tf, "model": model, "x": x}
    exec(alt.snippet(tfdata), namespace)  # the fix's code runs as written and gives the same outputs
    assert np.max(np.abs(namespace["y"] - model.predict(x, verbose=0))) < 1e-5


@pytest.mark.tf
def test_measure_alternatives_inside_diagnose_warns_and_outside_does_not(recwarn):
    import tfdiag

    model = _tiny_model()
    x = _x()
    with tfdiag.diagnose(cprofile=False, tf_profiler=False):
        with pytest.warns(UserWarning, match="inside tfdiag.diagnose"):
            tfdiag.measure_alternatives(model, x, budget_s=0.5, paths=("predict",))
    recwarn.clear()
    tfdiag.measure_alternatives(model, x, budget_s=0.5, paths=("predict",))
    assert not [w for w in recwarn if "diagnose" in str(w.message)]


# -- tf-keras (Keras 2), in a subprocess ---------------------------------------------------
@pytest.mark.tf
def test_tf_keras_verify_writes_the_table_and_recommends_what_it_measured(tmp_path):
    out = tmp_path / "out"
    result = run_tfdiag("analyze", "-o", str(out), "--verify", "--verify-budget", "5", "--no-cprofile",
                        "--no-tf-profiler", str(EXAMPLES / "predict_loop.py"), "--calls", "4",
                        env_extra={"TF_USE_LEGACY_KERAS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    recording = load(out / "recording.json")
    assert recording.environment["keras_flavor"] == "tf-keras"
    entries = recording.extra["alternatives"]
    assert [e["path"] for e in entries][:5] == list(alt.CALL_PATHS)[:5]
    assert all(DESIGN_KEYS <= set(e) for e in entries)
    assert all(e["error"] is None for e in entries if e["path"] in alt.IN_TENSORFLOW), entries
    choice = alt.choose(entries, "predict")
    assert [e["path"] for e in entries if e["recommended"]] == ([choice["entry"]["path"]] if choice else [])
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Measured alternatives" in page and page.count('<tr class="alt') == len(entries)


@pytest.mark.tf
def test_no_side_effects_on_a_tf_keras_model(tmp_path):
    """tf-keras predict() replaces model.history and resets a counter variable: both are put back
    (as they were just before the measurement)."""
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent("""
        import json, numpy as np, tensorflow as tf
        from tfdiag.analysis.alternatives import CALL_PATHS
        from tfdiag.verify import measure
        keras = tf.keras
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Dense(1)])
        x = np.random.default_rng(0).random((32, 4), dtype=np.float32)
        model.compile(optimizer="adam", loss="mse")
        model.fit(x, x[:, :1], epochs=2, verbose=0)
        model.predict(x, verbose=0)
        weights = [v.numpy().copy() for v in model.variables]
        attrs = dict(vars(model))
        counter = int(model._predict_counter.numpy())
        iterations = int(model.optimizer.iterations.numpy())
        entries = measure.measure_alternatives(model, x, budget_s=2.0, paths=CALL_PATHS[:4])
        now = vars(model)
        print(json.dumps({
            "module": type(model).__module__,
            "timed": [e["path"] for e in entries if e["median_s"]],
            "weights": all(np.array_equal(w, v.numpy()) for w, v in zip(weights, model.variables)),
            "changed": sorted(set(now) ^ set(attrs)) + [k for k in attrs if now.get(k) is not attrs[k]],
            "history": model.history is attrs["history"] is not None, "compiled": model._is_compiled,
            "counter": int(model._predict_counter.numpy()) == counter,
            "iterations": int(model.optimizer.iterations.numpy()) == iterations,
        }))
    """))
    import subprocess
    import sys

    env = dict(__import__("os").environ, TF_USE_LEGACY_KERAS="1")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["module"].startswith("tf_keras")
    assert report == {**report, "weights": True, "changed": [], "history": True, "compiled": True,
                      "counter": True, "iterations": True}
    assert report["timed"] == list(alt.CALL_PATHS[:4])
