"""Property tests: the loader only ever fails with RecordingError; the renderer escapes anything."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfdiag.analysis import analyze
from tfdiag.recording import Recording, RecordingError, loads
from tfdiag.renderers import html

from .conftest import DATA

GOLDEN = json.loads((DATA / "golden_recording.json").read_text())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_loads_never_raises_anything_else_on_text(text):
    try:
        loads(text)
    except RecordingError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["schema_version", "functions", "calls", "phases", "findings",
                                        "environment", "run", "warnings", "extra"]), json_values, max_size=6))
def test_loads_never_raises_anything_else_on_json(data):
    try:
        loads(json.dumps(data))
    except RecordingError as exc:
        assert "\n" not in str(exc)


hostile = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).map(
    lambda s: s + "</script><script>alert(1)</script>")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=hostile, site=hostile, value=hostile, number=st.floats(min_value=0, max_value=1e6))
def test_renderer_escapes_arbitrary_strings(name, site, value, number):
    data = json.loads(json.dumps(GOLDEN))
    function = next(f for f in data["functions"] if f["name"] == "sample")
    function["name"] = name
    function["defined_at"] = site
    for trace in function["traces"]:
        trace["call_site"] = site
        for arg in trace["args"]:
            if arg.get("kind") == "literal":
                arg["value"] = value
    data["calls"][0]["call_site"] = site
    data["calls"][0]["median_s"] = number
    data["warnings"] = [{"message": value, "count": 1}]
    recording = Recording.from_dict(data)
    page = html.render_report(analyze(recording))
    assert "<script>alert(1)" not in page


entry = st.dictionaries(st.sampled_from(["api", "target", "call_site", "input_signature", "count", "median_s",
                                         "p95_s", "first_s", "total_s", "phases", "name", "origin", "defined_at",
                                         "trace_count", "trace_s", "traces", "code", "severity", "title"]),
                        json_values, max_size=12)


@settings(max_examples=200, deadline=None)
@given(section=st.sampled_from(["calls", "functions", "findings", "call_samples", "warnings"]),
       entries=st.lists(entry, max_size=3))
def test_a_recording_that_loads_always_renders(section, entries):
    data = json.loads(json.dumps(GOLDEN))
    data[section] = data[section][:1] + entries
    try:
        recording = loads(json.dumps(data))
    except RecordingError as exc:
        assert "\n" not in str(exc)
        return
    html.render_report(analyze(recording))
