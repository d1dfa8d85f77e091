"""``tfdiag export --format chrome``: the sampled calls as Chrome Trace Event JSON, checked against the
format's rules as a reader applies them (a schema test), and loaded by Perfetto's trace processor
when its binary is on this machine (it downloads one at run time otherwise, so that test skips)."""

import json
import os
import shutil

import pytest

from tfdiag import cli
from tfdiag.recording import PHASES, Recording, load
from tfdiag.renderers.chrome_trace import chrome_trace

from .conftest import DATA

BEFORE = DATA / "diff_before.json"


def check_trace(trace: dict) -> list[dict]:
    """The Trace Event Format's rules for what this exporter writes; returns the complete slices.
    Every event: name, ph, integer pid/tid; "X": numeric ts and dur >= 0; "M": process/thread
    names. Per (pid, tid), complete slices nest properly: none ends inside another it began in."""
    assert isinstance(trace, dict) and isinstance(trace["traceEvents"], list)
    assert trace["displayTimeUnit"] in ("ms", "ns")
    slices = []
    for event in trace["traceEvents"]:
        assert isinstance(event["name"], str) and event["name"]
        assert isinstance(event["pid"], int) and isinstance(event["tid"], int)
        assert event["ph"] in ("X", "M"), event
        if event["ph"] == "M":
            assert event["name"] in ("process_name", "thread_name") and isinstance(event["args"]["name"], str)
            continue
        assert isinstance(event["ts"], (int, float)) and event["ts"] >= 0
        assert isinstance(event["dur"], (int, float)) and event["dur"] >= 0
        assert isinstance(event.get("args", {}), dict)
        slices.append(event)
    tracks: dict = {}
    for event in slices:
        tracks.setdefault((event["pid"], event["tid"]), []).append(event)
    for events in tracks.values():
        open_ = []
        for event in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
            while open_ and open_[-1]["ts"] + open_[-1]["dur"] <= event["ts"]:
                open_.pop()
            if open_:  # begins inside the innermost open slice: must end inside it too
                parent = open_[-1]
                assert event["ts"] + event["dur"] <= parent["ts"] + parent["dur"], (event, parent)
                event["_parent"] = parent
            open_.append(event)
    return slices


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "trace.json"
    assert cli.main(["export", str(BEFORE), "--format", "chrome", "-o", str(path)]) == 0
    return path


def test_export_is_valid_and_phases_nest_in_their_calls(exported):
    trace = json.loads(exported.read_text())
    slices = check_trace(trace)
    recording = load(BEFORE)
    calls = [s for s in slices if s["cat"] != "phase"]
    phases = [s for s in slices if s["cat"] == "phase"]
    assert len(calls) == len(recording.call_samples) == 60
    assert {c["name"] for c in calls} == {"predict scorer", "tf.function calibrate"}
    assert all("_parent" not in c for c in calls)  # calls are top level: one thread, one after another
    assert phases and all(p["_parent"]["cat"] != "phase" and p["name"] in PHASES for p in phases)
    for call in calls:  # children laid end to end, in PHASES order, filling the call
        children = [p for p in phases if p["_parent"] is call]
        assert children, call
        assert children[0]["ts"] == call["ts"]
        assert children[-1]["ts"] + children[-1]["dur"] == call["ts"] + call["dur"]
        assert [PHASES.index(c["name"]) for c in children] == sorted(PHASES.index(c["name"]) for c in children)
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"}
    assert "MainThread" in names


def test_a_sampled_calls_phases_follow_its_own_split(exported):
    trace = json.loads(exported.read_text())
    slices = check_trace(trace)
    sample = next(s for s in load(BEFORE).call_samples if s.get("phases") and s["api"] == "predict"
                  and s["start_s"] > 0)
    call = next(s for s in slices if s["cat"] == "predict" and s["ts"] == int(sample["start_s"] * 1e6))
    children = {p["name"]: p for p in slices if p.get("_parent") is call}
    assert all(c["args"]["split"] == "measured" for c in children.values())
    total = sum(sample["phases"].values())
    for name, seconds in sample["phases"].items():
        if name in children:  # within the microsecond rounding of both ends
            assert abs(children[name]["dur"] - call["dur"] * seconds / total) <= 2
    # an unsampled call gets its site's steady shares, marked as such
    estimated = [s for s in slices if s["cat"] == "phase" and s["args"]["split"] == "call site's steady split"]
    assert estimated and len(estimated) < len([s for s in slices if s["cat"] == "phase"])


def test_threads_get_their_own_tracks_and_a_call_holding_another_gets_no_phases():
    data = json.loads(BEFORE.read_text())
    first, other, outer, no_thread = (dict(s) for s in data["call_samples"][:4])
    other.update(thread="worker-1", start_s=first["start_s"] + 0.001)  # overlaps `first`, on another thread
    no_thread.pop("thread")
    # a call inside `outer`, on its thread (a model called within a tf.function)
    inner = dict(outer, start_s=outer["start_s"] + 0.0001, duration_s=outer["duration_s"] / 10)
    data["call_samples"] = [first, other, outer, inner, no_thread]
    trace = chrome_trace(Recording.from_dict(data))
    slices = check_trace(trace)
    calls = [s for s in slices if s["cat"] != "phase"]
    assert len({c["tid"] for c in calls}) == 3  # MainThread, worker-1, and the call that named none
    assert {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"} == {
        "MainThread", "worker-1", "calls"}
    assert all(e["pid"] == 1 for e in trace["traceEvents"])
    outer_slice = next(c for c in calls if c["args"]["duration_ms"] == 1000 * outer["duration_s"])
    inside = [s for s in slices if s.get("_parent") is outer_slice]
    assert [s["cat"] for s in inside] == [inner["api"]]  # the inner call alone: no phase slices to cross it
    inner_slice = inside[0]
    assert [s["name"] for s in slices if s.get("_parent") is inner_slice]  # the inner call keeps its phases
    other_slice = next(c for c in calls if c["tid"] != outer_slice["tid"] and c["ts"] == int(other["start_s"] * 1e6))
    assert "_parent" not in other_slice  # overlapping in time on another thread is no nesting


def test_export_bad_input_is_one_line(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "none.json"), "-o", str(tmp_path / "t.json")]) == cli.USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file" in err[0]
    assert cli.main(["export", str(BEFORE), "-o", str(tmp_path / "no" / "dir" / "t.json")]) == cli.USAGE_ERROR
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "t.json").exists()


def _trace_processor_binary():
    for candidate in (os.environ.get("TFDIAG_TRACE_PROCESSOR"), shutil.which("trace_processor_shell"),
                      shutil.which("trace_processor")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def test_perfetto_trace_processor_loads_it(exported):
    trace_processor = pytest.importorskip("perfetto.trace_processor")
    binary = _trace_processor_binary()
    if binary is None:
        pytest.skip("no trace_processor_shell here (the perfetto package downloads it at run time); "
                    "set TFDIAG_TRACE_PROCESSOR to one to run this test")
    config = trace_processor.TraceProcessorConfig(bin_path=binary)
    with trace_processor.TraceProcessor(trace=str(exported), config=config) as tp:
        rows = list(tp.query("select s.name as name, s.depth as depth, p.name as parent "
                             "from slice s left join slice p on s.parent_id = p.id"))
    calls = [r for r in rows if r.depth == 0]
    phases = [r for r in rows if r.depth == 1]
    assert len(calls) == 60 and {r.name for r in calls} == {"predict scorer", "tf.function calibrate"}
    assert phases and {r.parent for r in phases} <= {"predict scorer", "tf.function calibrate"}
    assert {r.name for r in phases} <= set(PHASES)


TREE_SCRIPT = """
import {analyzeTrace} from '%s/analyze-trace.mjs';
const {parsedTrace} = await analyzeTrace(process.argv[2]);
const out = [];
const walk = (node, depth) => { out.push([depth, node.entry.name]); node.children.forEach(c => walk(c, depth + 1)); };
for (const [, proc] of parsedTrace.data.Renderer.processes)
  for (const [, thread] of proc.threads) (thread.tree?.roots ?? []).forEach(root => walk(root, 0));
console.log(JSON.stringify(out));
"""


def test_chrome_devtools_trace_engine_loads_it(exported, tmp_path):
    """The DevTools Performance panel's own parser (npm @paulirish/trace_engine), when installed:
    TFDIAG_TRACE_ENGINE=/path/to/node_modules/@paulirish/trace_engine."""
    import subprocess

    engine, node = os.environ.get("TFDIAG_TRACE_ENGINE"), shutil.which("node")
    if not engine or not node or not os.path.isfile(os.path.join(engine, "analyze-trace.mjs")):
        pytest.skip("set TFDIAG_TRACE_ENGINE to an npm install of @paulirish/trace_engine (and have node)")
    script = tmp_path / "tree.mjs"
    script.write_text(TREE_SCRIPT % engine)
    done = subprocess.run([node, str(script), str(exported)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    tree = json.loads(done.stdout.strip().splitlines()[-1])
    assert sum(1 for depth, _ in tree if depth == 0) == 60
    assert {name for depth, name in tree if depth == 1} <= set(PHASES)
    assert sum(1 for depth, _ in tree if depth == 1) == len(
        [e for e in json.loads(exported.read_text())["traceEvents"] if e.get("cat") == "phase"])


def test_odd_samples_a_loadable_recording_may_hold_are_skipped_or_read_plainly():
    data = json.loads(BEFORE.read_text())
    base = data["call_samples"][0]
    data["call_samples"] = [
        {"api": "predict", "start_s": 0.0, "duration_s": 0.01},  # no target, call site or thread
        dict(base, start_s=0.02, thread=7, phases={"data_adapter": "slow", "other": None}),
        dict(base, start_s=0.04, phases={"kernel_execution": 0.0}),  # a split of nothing
        dict(base, start_s=0.06, duration_s=0.0),
    ]
    slices = check_trace(chrome_trace(Recording.from_dict(data)))
    assert len([s for s in slices if s["cat"] != "phase"]) == 4
    assert all(s["dur"] >= 1 for s in slices if s["cat"] != "phase")
