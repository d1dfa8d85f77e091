"""Analysis and rendering on the saved golden recording: no TensorFlow needed."""

import json
import subprocess

import pytest
import sys

from tfdiag.analysis import analyze, max_user_traces, retracing
from tfdiag.recording import load
from tfdiag.renderers import html, text

from .conftest import DATA, ROOT

GOLDEN = DATA / "golden_recording.json"


def test_analysis_and_rendering_never_import_tensorflow(tmp_path):
    code = (
        "import sys, tfdiag\n"
        "from tfdiag.analysis import analyze\n"
        "from tfdiag import output\n"
        f"r = tfdiag.load({str(GOLDEN)!r})\n"
        f"output.write_report(analyze(r), {str(tmp_path / 'report.html')!r})\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report.html").stat().st_size > 1000


def test_findings_from_golden_recording():
    analysis = analyze(load(GOLDEN))
    codes = {(f["code"], f["function"]) for f in analysis.findings}
    assert ("retrace-shape", "encode") in codes
    assert ("retrace-python-value", "sample") in codes
    assert any(code == "model-rebuilt" for code, _ in codes)  # roles read from the API called at each site
    assert any(code == "predict-overhead" for code, _ in codes)
    savings = [f["estimated_savings_s"] for f in analysis.findings]
    assert savings == sorted(savings, reverse=True)


def test_tf_data_traces_of_covered_predict_calls_are_evidence_not_a_second_finding():
    analysis = analyze(load(GOLDEN))
    overhead = [f for f in analysis.findings if f["code"] == "predict-overhead"]
    covered = {site for f in overhead for site in f["details"]["call_sites"]}
    assert covered and not [f for f in analysis.findings if f["code"] == "tfdata-retrace"
                            and set(f["details"]["call_sites"]) & covered]
    assert any("traces of tf.data's functions" in e for f in overhead for e in f["evidence"])


def test_shape_fix_uses_observed_dimensions():
    analysis = analyze(load(GOLDEN))
    shape = next(f for f in analysis.findings if f["code"] == "retrace-shape")
    assert "tokens" in shape["details"]["arguments"]
    assert "tf.TensorSpec([1, None], tf.int32)" in shape["fix"]["code"]
    assert any("dimension 1 varies (5, 9, 13)" in e for e in shape["evidence"])


def test_python_value_change_is_explained():
    analysis = analyze(load(GOLDEN))
    value = next(f for f in analysis.findings if f["code"] == "retrace-python-value")
    assert any("temperature: Python float 1.0 → 0.95" in e for e in value["evidence"])
    assert "tf.constant" in value["fix"]["code"]


def test_a_function_traced_once_is_never_flagged():
    recording = load(GOLDEN)
    once = {f["name"] for f in recording.functions if f["trace_count"] == 1}
    flagged = {f["function"] for f in analyze(recording).findings}
    assert not once & flagged


def test_gate_counts_user_traces():
    traces, name = max_user_traces(load(GOLDEN))
    assert (traces, name) == (3, "encode") or (traces, name) == (3, "sample")


def test_report_rerenders_identically():
    recording = load(GOLDEN)
    first = html.render_report(analyze(recording))
    second = html.render_report(analyze(load(GOLDEN)))
    assert first == second
    for name in ("encode", "sample", "model-rebuilt", "predict-overhead"):
        assert name in first


def test_terminal_summary_names_the_files():
    recording = load(GOLDEN)
    out = text.summary(analyze(recording), {"report": "out/report.html"})
    assert "out/report.html" in out and "tfdiag open" in out


def test_hostile_strings_are_escaped():
    data = json.loads(GOLDEN.read_text())
    evil = "</script><script>alert(1)</script>"
    data["functions"][0]["name"] = evil
    data["calls"][0]["call_site"] = evil + ":3"
    data["run"]["exception"] = evil
    data["environment"]["command"] = [evil]
    from tfdiag.recording import Recording

    recording = Recording.from_dict(data)
    page = html.render_report(analyze(recording))
    assert "<script>alert(1)" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page


def hostile_data(evil: str) -> dict:
    """The golden recording with ``evil`` in every kind of user-derived string the report shows."""
    data = json.loads(GOLDEN.read_text())
    user = [f for f in data["functions"] if f["origin"] == "user"]
    user[0]["name"] = evil  # function name (findings, retracing, functions table)
    user[0]["defined_at"] = f"/home/{evil}/model.py:3"  # path
    for trace in user[0]["traces"]:
        trace["call_site"] = f"/srv/{evil}.py:9"
    sample = next(f for f in data["functions"] if f["name"] == "sample")
    for trace in sample["traces"][1:]:
        for arg in trace["args"]:
            if arg["kind"] == "literal":
                arg["value"] = evil  # argument value (evidence, retracing table)
    sample["traces"][1]["args"][0]["name"] = evil  # argument name
    data["calls"][0]["call_site"] = evil + ":3"
    data["calls"][0]["target"] = evil
    data["calls"][1]["input_signature"] = evil
    for s in data["call_samples"]:
        s["call_site"] = evil + ":3"  # timeline tooltips and legend
        s["target"] = evil
    data["run"] = dict(data["run"], ended_by="exception", exception=f"ValueError: {evil}")
    data["environment"]["command"] = [evil]
    data["environment"]["devices"] = [evil]
    data["warnings"] = [{"message": f"could not record a call: {evil}", "count": 2}]
    for row in (data.get("cprofile") or {}).get("top_cumulative", [])[:1]:
        row["function"] = evil
    return data


def test_hostile_strings_in_every_field_are_escaped():
    from tfdiag.recording import Recording

    evil = "</script><script>alert(1)</script>"
    recording = Recording.from_dict(hostile_data(evil))
    analysis = analyze(recording)
    page = html.render_report(analysis)
    assert "<script>alert(1)" not in page and "alert(1)</script>" not in page
    escaped = "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;"
    assert page.count(escaped) >= 10
    assert page.count("<script") == 1  # the page's own constant script, nothing else
    sections = {chunk.split('"', 1)[0]: chunk for chunk in page.split('<section id="')[1:]}
    for name in ("verdict", "findings", "phases", "retracing", "functions", "calls", "environment"):
        assert escaped in sections[name], name
    timeline_svg = page.split('id="timeline"', 1)[1].split("</svg>", 1)[0]
    assert escaped in timeline_svg
    out = text.summary(analysis, {"report": "r.html"})
    assert evil in out  # the terminal shows the text as it is


def test_diff_args_names_each_change():
    old = {"name": "parts", "kind": "list", "length": 2, "items": [{"kind": "tensor", "shape": [3], "dtype": "float32"}] * 2}
    new = {"name": "parts", "kind": "list", "length": 3, "items": [{"kind": "tensor", "shape": [3], "dtype": "float32"}] * 3}
    (change,) = retracing.diff_args(old, new, "parts")
    assert change.cause == "retrace-structure"
    assert change.text == "parts: list of 2 tensors → 3 tensors"
    a = {"kind": "tensor", "shape": [2], "dtype": "float64"}
    b = {"kind": "tensor", "shape": [2], "dtype": "float32"}
    assert retracing.diff_args(a, b, "x")[0].text == "x: float64 → float32"


def _function_with(args_per_trace):
    traces = [{"index": i + 1, "duration_s": 0.01, "call_site": "s.py:3", "args": args}
              for i, args in enumerate(args_per_trace)]
    return {"name": "f", "qualname": "f", "origin": "user", "defined_at": "s.py:1", "trace_count": len(traces),
            "trace_s": 0.01 * len(traces), "object_count": 1, "traces": traces, "traces_dropped": 0}


def test_fixes_use_the_observed_types():
    from tfdiag.recording import Recording

    ids = _function_with([[{"name": "ids", "kind": "tensor", "shape": [4], "dtype": "int32"}],
                          [{"name": "ids", "kind": "tensor", "shape": [4], "dtype": "int64"}]])
    flag = _function_with([[{"name": "training", "kind": "literal", "type": "bool", "value": "True"}],
                           [{"name": "training", "kind": "literal", "type": "bool", "value": "False"}]])
    steps = _function_with([[{"name": "n", "kind": "literal", "type": "int", "value": "1"}],
                            [{"name": "n", "kind": "literal", "type": "int", "value": "2"}]])
    found = analyze(Recording(functions=[ids, flag, steps])).findings
    by_arg = {f["details"]["arguments"][0]: f for f in found}
    assert "dtype=tf.int32" in by_arg["ids"]["fix"]["code"]
    assert "tf.constant" not in by_arg["training"]["fix"]["code"]
    assert "one function per value" in by_arg["training"]["fix"]["code"]
    assert "dtype=tf.int32" in by_arg["n"]["fix"]["code"]


def test_eager_loop_snippet_is_built_from_the_observed_input():
    from tfdiag.recording import PHASES, Recording

    phases = dict.fromkeys(PHASES, 0.0)
    phases.update(other=0.6, input_processing=0.1, kernel_execution=0.3)
    call = {"api": "__call__", "target": "tiny", "call_site": "s.py:9", "input_signature": "float32[32, 4]",
            "input_spec": {"shape": [32, 4], "dtype": "float32"}, "batch": 32, "count": 1000, "measured_count": 1000, "median_s": 0.001, "p95_s": 0.002,
            "first_s": 0.05, "total_s": 1.0, "phases": phases}
    (finding,) = [f for f in analyze(Recording(calls=[call])).findings if f["code"] == "eager-loop"]
    assert "input_signature=[tf.TensorSpec([None, 4], tf.float32)]" in finding["fix"]["code"]
    compile(finding["fix"]["code"], "<snippet>", "exec")


def test_legacy_sampled_split_and_iterator_teardown_are_stated():
    recording = load(GOLDEN)
    call = max(recording.calls, key=lambda c: c["count"])
    for key in ("steady_phases", "first_phases", "phase_split_pooled"):  # as recordings before them
        call.pop(key, None)
    call["count"] = measured = max(call["count"], 12)
    call["phase_calls"] = measured - 2
    call["data_adapter_teardown_s"] = 0.5 * call["phases"]["data_adapter"]
    page = html.render_report(analyze(recording))
    assert f"split measured on {measured - 2} of {measured} calls" in page
    assert "waiting for the tf.data iterator to be released" in page
    # A recording from before sampling (no phase_calls, no teardown) says neither.
    before = load(GOLDEN)
    for entry in before.calls:
        for key in ("phase_calls", "data_adapter_teardown_s", "steady_phases", "phase_split_pooled"):
            entry.pop(key, None)
    plain = html.render_report(analyze(before))
    assert "split measured on" not in plain and "iterator to be released" not in plain


def _steady_call(count: int, phase_calls: int, **extra) -> dict:
    """A call entry as the contract has it: the first call split alone, then the steady state per call."""
    from tfdiag.recording import PHASES

    first = dict.fromkeys(PHASES, 0.0)
    first.update(graph_creation=0.030, kernel_execution=0.031, data_adapter=0.004)
    steady = dict.fromkeys(PHASES, 0.0)
    steady.update(data_adapter=0.040, kernel_execution=0.0005, other=0.0015)
    first_s, per_call = sum(first.values()), sum(steady.values())
    call = {"api": "predict", "target": "tiny", "call_site": "/app/loop.py:12", "input_signature": "float32[32, 4]",
            "input_spec": {"shape": [32, 4], "dtype": "float32"}, "batch": 32, "count": count, "median_s": per_call,
            "p95_s": per_call, "first_s": first_s, "total_s": first_s + per_call * (count - 1),
            "phases": {p: first[p] + steady[p] * (count - 1) for p in PHASES},
            "first_phases": first, "steady_phases": steady, "phase_calls": phase_calls, "training": False,
            "caller": None}
    call.update(extra)
    return call


def test_steady_state_split_excludes_the_first_call():
    from tfdiag.analysis.phases import call_phase_split, first_call_split

    call = _steady_call(60, 8)
    split = call_phase_split(call)
    assert split["kernel_execution"] == 0.0005 and split["graph_creation"] == 0.0  # not 31 ms / n from call 1
    assert sum(split.values()) == pytest.approx((call["total_s"] - call["first_s"]) / (call["count"] - 1))
    assert first_call_split(call)["graph_creation"] == 0.030
    once = _steady_call(1, 0, steady_phases={})
    assert sum(call_phase_split(once).values()) == 0.0
    # a recording from before steady_phases: the old whole-site estimate
    legacy = {k: v for k, v in call.items() if k not in ("steady_phases", "first_phases")}
    assert call_phase_split(legacy)["kernel_execution"] == pytest.approx(call["phases"]["kernel_execution"] / 60)
    assert first_call_split(legacy) is None


def test_report_shows_the_first_call_apart_and_how_many_calls_a_split_rests_on():
    from tfdiag.recording import Recording

    many, few = _steady_call(60, 8), _steady_call(4, 3, call_site="/app/loop.py:20")
    analysis = analyze(Recording(calls=[many, few], run={"wall_s": 5.0}))
    rows = {r["call_site"]: r for r in analysis.phase_rows}
    assert rows["/app/loop.py:12"]["few_calls"] is False and rows["/app/loop.py:20"]["few_calls"] is True
    page = html.render_report(analysis)
    phases = page.split('<section id="phases">', 1)[1].split("</section>", 1)[0]
    assert "split measured on 8 of 59 calls after the first" in phases
    assert "split measured on only 3 calls after the first" in phases
    first_lines = phases.split('class="meta first-call">')[1:]
    assert len(first_lines) == 2
    assert first_lines[0].startswith("first call, apart: 65 ms — data_adapter 4.00 ms · graph_creation 30 ms · "
                                     "kernel_execution 31 ms")
    assert "kernel_execution 0.50 ms" in phases  # the steady split, not the first call's 31 ms
    verdict = analysis.verdict
    assert "42 ms per call × 60 calls" in verdict and "rather than the model's own kernels" in verdict
    few_only = analyze(Recording(calls=[few], run={"wall_s": 5.0}))
    assert "(a split measured on only 3 calls)" in few_only.verdict
    assert "measured on only" not in verdict


def test_fail_on_retrace_counts_the_variable_creation_pair_as_one_trace():
    from tfdiag.recording import Recording

    traces = [{"index": 0, "duration_s": 0.01, "args": [], "variable_creation": True},
              {"index": 1, "duration_s": 0.01, "args": [], "variable_creation": False},
              {"index": 2, "duration_s": 0.01, "args": []}]
    function = {"name": "step", "origin": "user", "defined_at": "s.py:1", "trace_count": 3,
                "trace_s": 0.03, "traces": traces}
    assert max_user_traces(Recording(functions=[function])) == (2, "step")
    function = dict(function, traces=[dict(t, variable_creation=None) for t in traces])
    assert max_user_traces(Recording(functions=[function])) == (3, "step")
