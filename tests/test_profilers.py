"""cProfile and the TF Profiler around predict calls: files, recording sections, report, viewers.

Real TensorFlow, real servers on loopback; nothing is mocked.
"""

import gzip
import json
import statistics
import os
import pstats
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from tfdiag import cli
from tfdiag.analysis import profile_rows
from tfdiag.recording import PHASES, load

from .conftest import EXAMPLES, ROOT

pytestmark = pytest.mark.tf

SERVER_READY_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def predict_run(tmp_path_factory):
    """`tfdiag analyze` on the question's predict loop (20 calls before and after compile)."""
    out = tmp_path_factory.mktemp("profilers") / "report"
    assert cli.main(["analyze", "-o", str(out), str(EXAMPLES / "predict_loop.py")]) == 0
    return out, load(out / "recording.json")


def test_profile_prof_loads_and_holds_keras_predict(predict_run):
    out, recording = predict_run
    stats = pstats.Stats(str(out / "profile.prof"))
    predicts = [(f, line) for (f, line, name) in stats.stats if name == "predict"]  # type: ignore[attr-defined]
    assert any(f"{os.sep}keras{os.sep}" in f for f, _ in predicts), predicts
    cp = recording.extra["cprofile"]
    assert cp["calls_profiled"] >= 3 and cp["file"] == "profile.prof"
    assert {row["phase"] for row in cp["top_cumulative"]} <= set(PHASES)
    assert any(row["phase"] == "data_adapter" for row in cp["top_cumulative"])


def test_tf_profiler_trace_in_tensorboard_layout_and_read_back(predict_run):
    out, recording = predict_run
    traces = list((out / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1
    tp = recording.extra["tf_profiler"]
    assert tp["blocked_by"] is None and tp["logdir"] == "tensorboard"
    assert tp["trace_bytes"] == traces[0].stat().st_size > 0
    assert tp["run"] == traces[0].parent.name
    # Top TF ops by self time, read from that trace with xprof's converter.
    assert tp["converter"] and tp["top_ops"]
    assert all(op["where"] in ("Host", "Device") and op["self_s"] >= 0 for op in tp["top_ops"])
    assert "IDLE" not in {op["type"] for op in tp["top_ops"]}
    assert any(op["type"] == "Dataset" for op in tp["top_ops"])  # Keras 3 predict() builds tf.data
    assert tp["self_s_by_where"].get("Host", 0) > 0
    assert [s["step"] for s in tp["steps"]] == ["predict 3", "predict 4", "predict 5"]


def test_no_call_runs_under_both_profilers(predict_run):
    _, recording = predict_run
    tf_calls = {p["call_number"] for p in recording.extra["tf_profiler"]["profiled"]}
    cp_calls = {p["call_number"] for p in recording.extra["cprofile"]["profiled"]}
    assert tf_calls == {3, 4, 5}
    assert cp_calls and not cp_calls & tf_calls
    assert {2, 6, 9} <= cp_calls  # 3 and 5 belong to the TF window: the next free call (6) stands in
    predict = [c for c in recording.calls if c["api"] == "predict"]
    assert sum(c["profiled_calls"] for c in predict) == len(tf_calls) + len(cp_calls)


def test_report_states_each_profilers_measured_overhead(predict_run):
    out, recording = predict_run
    page = (out / "report.html").read_text()
    for key, name in (("cprofile", "cProfile"), ("tf_profiler", "the TF Profiler")):
        overhead = recording.extra[key]["overhead"]
        assert overhead["ratio"] is not None and overhead["compared_calls"] == overhead["profiled_calls"] > 0
        site = overhead["sites"][0]
        assert site["unprofiled_calls"] > 0
        assert site["ratio"] == pytest.approx(site["profiled_median_s"] / site["unprofiled_median_s"])
        assert f"Measured overhead of {name} in this run: ×{overhead['ratio']:.2f}" in page
    assert f"tfdiag snakeviz {out}" in page and f"tfdiag tensorboard {out}" in page
    assert re.search(r"trace: \d+\.\d KiB", page)
    assert 'id="tf-profiler"' in page and "Iterator::Root" in page


def test_saved_recording_re_renders_the_same_profilers_section(predict_run, tmp_path):
    out, _ = predict_run
    assert cli.main(["report", str(out / "recording.json"), "-o", str(tmp_path)]) == 0

    def section(path):
        page = path.read_text()
        start = page.index('<section id="profilers">')
        return page[start:page.index("</section>", start)]

    assert section(tmp_path / "report.html") == section(out / "report.html")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, deadline: float, proc: subprocess.Popen) -> bytes:
    """Fetch ``url``, retrying until the server answers (bounded by ``deadline``)."""
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}: {Path(proc.args[-1]).name}; "
                                 f"{proc.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read()
                # TensorBoard gzips its JSON whatever the request says
                return gzip.decompress(body) if response.headers.get("Content-Encoding") == "gzip" else body
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
            time.sleep(0.3)
    raise AssertionError(f"{url} not served within {SERVER_READY_TIMEOUT_S} s: {last}")


def _start(log: Path, *args: str) -> subprocess.Popen:
    """``python -m tfdiag ARGS`` in its own process group; stderr (server logs) to ``log``."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tfdiag", *args], stdout=subprocess.PIPE, stderr=err,
                                text=True, env=env, cwd=str(ROOT), start_new_session=True)
    proc.log = log
    return proc


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to tfdiag (which stops its server); then make sure nothing of the group is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group tfdiag leads: its server, should it linger
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def test_snakeviz_and_tensorboard_serve_the_report_on_loopback(predict_run, tmp_path):
    out, recording = predict_run
    snake_port, board_port = _free_port(), _free_port()
    snakeviz = _start(tmp_path / "snakeviz.log", "snakeviz", str(out), "--port", str(snake_port))
    try:
        board = _start(tmp_path / "tensorboard.log", "tensorboard", str(out), "--port", str(board_port))
        try:
            deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
            prof = os.path.abspath(out / "profile.prof")
            page = _get(f"http://127.0.0.1:{snake_port}/snakeviz/{quote(prof, safe='')}", deadline, snakeviz)
            assert b"snakeviz" in page.lower() and b"predict" in page
            runs = json.loads(_get(f"http://127.0.0.1:{board_port}/data/plugin/profile/runs", deadline, board))
            assert recording.extra["tf_profiler"]["run"] in runs
            listing = json.loads(_get(f"http://127.0.0.1:{board_port}/data/plugins_listing", deadline, board))
            assert listing["profile"]["enabled"]
            assert board.stdout.readline().strip() == f"http://127.0.0.1:{board_port}/#profile"
            assert snakeviz.stdout.readline().strip() == (
                f"http://127.0.0.1:{snake_port}/snakeviz/{quote(prof, safe='')}")
        finally:
            _stop(board)
    finally:
        _stop(snakeviz)
    assert snakeviz.returncode == 0 and board.returncode == 0


def test_viewer_on_a_busy_port_is_a_usage_error(predict_run, capsys):
    out, _ = predict_run
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        assert cli.main(["snakeviz", str(out), "--port", port]) == 2
        assert cli.main(["tensorboard", str(out), "--port", port]) == 2
    assert "choose another --port" in capsys.readouterr().err


def test_tensorboard_on_a_folder_without_a_trace_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["tensorboard", str(tmp_path)]) == 2
    assert "no TF Profiler trace" in capsys.readouterr().err


def _script(tmp_path, body: str) -> str:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


MODEL = """
    import numpy as np
    import tensorflow as tf
    keras = tf.keras
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    x = np.ones((8, 4), dtype=np.float32)
"""


def test_user_code_already_running_the_tf_profiler(tmp_path):
    user_logdir = tmp_path / "users-own-logdir"
    script = _script(tmp_path, MODEL + f"""
    tf.profiler.experimental.start({str(user_logdir)!r})
    for _ in range(6):
        model.predict(x, verbose=0)
    tf.profiler.experimental.stop()
    """)
    out = tmp_path / "out"
    assert cli.main(["analyze", "-o", str(out), script]) == 0
    # The user's own profile is intact, tfdiag's TF Profiler stood aside.
    assert list(user_logdir.glob("plugins/profile/*/*.xplane.pb"))
    recording = load(out / "recording.json")
    tp = recording.extra["tf_profiler"]
    assert "already running" in tp["blocked_by"] and tp["calls_profiled"] == 0
    assert any("TF Profiler skipped" in w["message"] for w in recording.warnings)
    assert not (out / "tensorboard").exists()
    # The rest of the report is there: timings, cProfile (which took the window's calls), findings.
    predict = [c for c in recording.calls if c["api"] == "predict"]
    assert sum(c["count"] for c in predict) == 6
    assert recording.extra["cprofile"]["calls_profiled"] >= 2
    page = (out / "report.html").read_text()
    assert "The TF Profiler did not run: another TF Profiler session was already running" in page
    assert "Measured overhead of cProfile in this run" in page
    assert recording.findings


def test_user_starting_the_tf_profiler_inside_the_window_ends_it(tmp_path):
    user_logdir = tmp_path / "users-own-logdir"
    script = _script(tmp_path, MODEL + f"""
    for step in range(6):
        if step == 3:  # the usual "profile after warm-up": tfdiag's window (calls 3..5) is open here
            with tf.profiler.experimental.Profile({str(user_logdir)!r}):
                model.predict(x, verbose=0)
        else:
            model.predict(x, verbose=0)
    """)
    out = tmp_path / "out"
    assert cli.main(["analyze", "-o", str(out), script]) == 0
    assert list(user_logdir.glob("plugins/profile/*/*.xplane.pb"))
    recording = load(out / "recording.json")
    tp = recording.extra["tf_profiler"]
    assert [p["call_number"] for p in tp["profiled"]] == [3] and tp["trace_bytes"] > 0
    assert any("started its own TF Profiler inside tfdiag's window" in w["message"] for w in recording.warnings)


def test_no_tf_profiler_option(tmp_path):
    script = _script(tmp_path, MODEL + """
    for _ in range(5):
        model.predict_on_batch(x)
    """)
    out = tmp_path / "out"
    assert cli.main(["analyze", "--no-tf-profiler", "-o", str(out), script]) == 0
    recording = load(out / "recording.json")
    assert "tf_profiler" not in recording.extra and not (out / "tensorboard").exists()
    assert 'id="tf-profiler"' not in (out / "report.html").read_text()


def test_profiler_stopped_when_diagnose_exits_mid_window(tmp_path):
    import numpy as np
    import tensorflow as tf

    import tfdiag
    from tensorflow.python.profiler import profiler_v2

    model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), tf.keras.layers.Dense(1)])
    x = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(RuntimeError, match="boom"):
        with tfdiag.diagnose(out=tmp_path / "o", cprofile=False, tf_profiler_calls=5) as d:
            for _ in range(4):  # calls 3 and 4 of the window 3..7
                model.predict_on_batch(x)
            raise RuntimeError("boom")
    assert profiler_v2._profiler is None  # nobody holds the TF Profiler any more
    tp = d.recording.extra["tf_profiler"]
    assert tp["calls_profiled"] == 2 and tp["trace_bytes"] > 0
    assert list((tmp_path / "o" / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb"))
    tf.profiler.experimental.start(str(tmp_path / "after"))  # free for the user again
    tf.profiler.experimental.stop()


# -- pure parts (no TensorFlow) ---------------------------------------------------------------
SITE = "/home/u/run.py:12"


def _call(api: str, call_site: str, **fields) -> dict:
    """A recording's call entry with every field the page shows."""
    call = {"api": api, "target": "sequential", "call_site": call_site, "input_signature": "float32[32, 4]",
            "count": 40, "total_s": 1.0, "median_s": 0.025, "p95_s": 0.03, "first_s": 0.1, "max_s": 0.1,
            "phases": dict.fromkeys(PHASES, 0.0), "phase_calls": 5}
    call.update(fields)
    call.setdefault("measured_count", call["count"])
    return call


def test_phase_of_maps_profiled_functions_to_phases():
    k3 = "/venv/lib/python3.11/site-packages/keras/src"
    tf_ = "/venv/lib/python3.11/site-packages/tensorflow/python"
    assert profile_rows.phase_of(f"{k3}/trainers/data_adapters/array_data_adapter.py", "get_tf_dataset") == "data_adapter"
    assert profile_rows.phase_of(f"{tf_}/data/ops/iterator_ops.py", "_create_iterator") == "data_adapter"
    assert profile_rows.phase_of(f"{tf_}/data/ops/structured_function.py", "__init__") == "graph_creation"
    assert profile_rows.phase_of(f"{tf_}/eager/polymorphic_function/tracing_compilation.py",
                                 "_maybe_define_function") == "graph_creation"
    assert profile_rows.phase_of(f"{tf_}/framework/func_graph.py", "func_graph_from_py_func") == "graph_creation"
    assert profile_rows.phase_of(
        "~", "<built-in method tensorflow.python._pywrap_tfe.TFE_Py_FastPathExecute>") == "kernel_execution"
    assert profile_rows.phase_of(f"{tf_}/eager/execute.py", "quick_execute") == "kernel_execution"
    assert profile_rows.phase_of(f"{tf_}/eager/polymorphic_function/concrete_function.py",
                                 "_call_flat") == "kernel_execution"
    assert profile_rows.phase_of(f"{k3}/backend/tensorflow/trainer.py",
                                 "convert_to_np_if_not_ragged") == "output_processing"
    assert profile_rows.phase_of(f"{k3}/backend/tensorflow/trainer.py", "predict") == "other"
    assert profile_rows.phase_of("~", "<built-in method builtins.isinstance>") == "other"
    assert profile_rows.phase_of("C:\\py\\tensorflow\\python\\framework\\func_graph.py", "f") == "graph_creation"


def test_measured_overhead_compares_with_the_same_call_site():
    calls = [
        {"api": "predict", "call_site": SITE, "count": 33, "profiled_calls": 3, "median_s": 0.040},
        {"api": "predict", "call_site": SITE, "count": 2, "median_s": 0.500},  # other input shape
        {"api": "predict", "call_site": "/home/u/other.py:3", "count": 10, "median_s": 1.0},
    ]
    profiled = [{"api": "predict", "call_site": SITE, "duration_s": d} for d in (0.050, 0.060, 0.070)]
    result = profile_rows.measured_overhead(profiled, calls)
    assert result["ratio"] == pytest.approx(1.5)
    assert result["profiled_calls"] == result["compared_calls"] == 3
    (site,) = result["sites"]
    assert site["unprofiled_median_s"] == 0.040 and site["unprofiled_calls"] == 30
    assert site["ratio"] == pytest.approx(1.5)


def test_measured_overhead_without_a_baseline_says_so():
    profiled = [{"api": "__call__", "call_site": SITE, "duration_s": 0.01}]
    result = profile_rows.measured_overhead(profiled, [{"api": "__call__", "call_site": SITE,
                                                        "measured_count": 0, "median_s": 0.0}])
    assert result["ratio"] is None and result["compared_calls"] == 0
    assert result["sites"][0]["ratio"] is None
    assert profile_rows.measured_overhead([], [])["ratio"] is None


def test_profilers_partial_escapes_recorded_text():
    from tfdiag.analysis import analyze
    from tfdiag.recording import Recording
    from tfdiag.renderers import html

    nasty = "<script>alert(1)</script>"
    # The overhead is derived when the page is made: one profiled call of 50 ms against a 40 ms median.
    calls = [_call(nasty, nasty, count=9, median_s=0.04)]
    recording = Recording(calls=calls, extra={
        "cprofile": {"calls_profiled": 1, "blocked_by": None, "file": "profile.prof",
                     "command": f"tfdiag snakeviz {nasty}",
                     "profiled": [{"api": nasty, "call_site": nasty, "call_number": 2, "duration_s": 0.05}],
                     "top_cumulative": [{"function": nasty, "file": nasty, "line": 1, "calls": 1, "own_s": 0.1,
                                         "cumulative_s": 0.2, "phase": nasty}],
                     "top_own": [],
                     "overhead": {"ratio": 1.25, "profiled_calls": 1, "compared_calls": 1, "sites": [
                         {"api": nasty, "call_site": nasty, "profiled_calls": 1, "profiled_median_s": 0.05,
                          "unprofiled_median_s": 0.04, "unprofiled_calls": 9, "ratio": 1.25}]}},
        "tf_profiler": {"first_call": 3, "window_calls": 3, "calls_profiled": 0, "blocked_by": nasty,
                        "profiled": [], "overhead": {"ratio": None, "profiled_calls": 0,
                                                     "compared_calls": 0, "sites": []}},
    })
    page = html.render_report(analyze(recording))
    assert nasty not in page and "&lt;script&gt;" in page
    assert "Measured overhead of cProfile in this run: ×1.25" in page
    assert "The TF Profiler did not run" in page


# -- the TF Profiler as a check on kernel_execution (issue 12) ------------------------------------
def test_tf_profiler_measures_the_model_ops_per_call_site(predict_run):
    """The profiled predict loop's call site gets the model's op time per call: the self time of
    its Dense ops, a sliver of each call, with tf.data's own work (which dominates) left out."""
    _, recording = predict_run
    tp = recording.extra["tf_profiler"]
    (site,) = tp["call_sites"]
    predict = [c for c in recording.calls if c["api"] == "predict"]
    assert site["api"] == "predict" and site["call_site"] in {c["call_site"] for c in predict}
    assert site["calls_profiled"] == 3 and [s["call_number"] for s in site["steps"]] == [3, 4, 5]
    assert site["measure"] == "op_self_time"
    model_ops = sum(op["self_s"] for op in tp["top_ops"] if op["type"] != "Dataset" and "sequential" in op["op"])
    # The Dense ops in the op table, spread over the 3 steps, are what the call site measured
    # (tf.data's GatherV2 runs on tf.data's own threads and is not the model).
    assert 0 < site["model_op_s_per_call"] <= model_ops / 3 * 1.01 + 1e-6
    assert site["model_op_s_per_call"] < 0.05 * site["step_s_per_call"]
    dataset_s = sum(op["self_s"] for op in tp["top_ops"] if op["type"] == "Dataset")
    assert dataset_s / 3 > 10 * site["model_op_s_per_call"]
    # Keras 3 fetches its batch outside the predict function: no tf.data time inside it.
    assert site["graph_tf_data_s_per_call"] == 0.0


def test_kernel_check_rows_on_a_real_run(predict_run):
    from tfdiag.analysis import agreement, phases

    _, recording = predict_run
    (row,) = agreement.kernel_rows(recording)
    (site,) = recording.extra["tf_profiler"]["call_sites"]
    calls = [c for c in recording.calls if c["api"] == row["api"] and c["call_site"] == row["call_site"]]
    assert row["profiler_model_op_s"] == site["model_op_s_per_call"]
    assert row["tfdiag_kernel_s"] == pytest.approx(
        sum(phases.call_phase_split(c)["kernel_execution"] * c["count"] for c in calls) / sum(c["count"] for c in calls))
    assert row["phase_calls"] == sum(c["phase_calls"] for c in calls) and row["count"] == 40
    assert row["agrees"] == agreement.agrees(row["tfdiag_kernel_s"], row["profiler_model_op_s"])
    assert (row["warning"] is None) == row["agrees"]


def _eager_script(tmp_path) -> str:
    return _script(tmp_path, MODEL + """
    x = tf.constant(x)
    for _ in range(12):
        model(x)
    """)


def test_eager_calls_are_measured_by_host_compute_as_xprof_counts_it(tmp_path):
    """Eager ops are not TF ops in the trace: the call site falls back to its host compute per
    step, which must be xprof's own figure (overview_page) for the same steps."""
    out = tmp_path / "out"
    assert cli.main(["analyze", "--no-cprofile", "-o", str(out), _eager_script(tmp_path)]) == 0
    tp = load(out / "recording.json").extra["tf_profiler"]
    (site,) = tp["call_sites"]
    assert site["api"] == "__call__" and site["measure"] == "host_compute" and site["calls_profiled"] == 3
    xprof = {s["step"]: s["host_compute_s"] for s in tp["steps"]}
    compared = 0
    for step in site["steps"]:
        name = f"__call__ {step['call_number']}"
        if name in xprof:  # xprof may leave an edge step out of its step table
            assert step["host_compute_s"] == pytest.approx(xprof[name], rel=0.01, abs=2e-6)
            compared += 1
    assert compared >= 1
    assert site["model_op_s_per_call"] == pytest.approx(sum(s["host_compute_s"] for s in site["steps"]) / 3)
    assert 0 < site["model_op_s_per_call"] < site["step_s_per_call"]


def test_tf_keras_predict_waits_for_its_batch_inside_the_graph_and_that_is_not_kernel_time(tmp_path):
    """tf-keras's predict function takes the iterator and pulls its batch inside the graph: the TF
    Profiler sees that wait inside the function, and tfdiag moves it out of kernel_execution."""
    script = _script(tmp_path, """
    import numpy as np
    import tf_keras as keras
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    x = np.ones((8, 4), dtype=np.float32)
    for _ in range(12):
        model.predict(x, verbose=0)
    """)
    out = tmp_path / "out"
    assert cli.main(["analyze", "--no-cprofile", "-o", str(out), script]) == 0
    recording = load(out / "recording.json")
    (site,) = recording.extra["tf_profiler"]["call_sites"]
    assert site["measure"] == "op_self_time" and site["model_op_s_per_call"] > 0
    assert 0 < site["graph_tf_data_s_per_call"] <= site["graph_function_s_per_call"]
    (call,) = [c for c in recording.calls if c["api"] == "predict"]
    moved = call["graph_tf_data_s"]
    steady = call["steady_phases"]
    before = steady["kernel_execution"] + moved  # the kernel time tfdiag measured
    share = statistics.median(step["graph_tf_data_s"] / step["graph_function_s"] for step in site["steps"])
    busy = min(step["graph_function_s"] - step["graph_tf_data_s"] for step in site["steps"])
    assert moved > 0 and moved == pytest.approx(min(share * before, before - busy))
    assert steady["kernel_execution"] >= 0 and steady["data_adapter"] >= moved
    # A normal call: the mean of the unprofiled calls after the first (the TF Profiler's are slower).
    plain = [c["duration_s"] for c in recording.call_samples[1:] if c["api"] == "predict" and not c["profiled"]]
    assert len(plain) == call["count"] - 1 - call["profiled_calls"]
    assert sum(steady.values()) == pytest.approx(sum(plain) / len(plain))
    assert sum(call["phases"].values()) == pytest.approx(call["total_s"])


# -- pure parts: agreement rows and the in-graph tf.data move, on hand-made recordings --------------
def _recording(kernel_s: float, profiler_s: float, measure: str = "op_self_time", count: int = 40):
    from tfdiag.recording import Recording

    steady = dict.fromkeys(PHASES, 0.0)
    steady.update(kernel_execution=kernel_s, data_adapter=0.03, other=0.001)
    call = _call("predict", SITE, count=count, steady_phases=steady, phase_calls=7)
    section = {"first_call": 3, "window_calls": 3, "calls_profiled": 3, "blocked_by": None, "trace_bytes": 2048,
               "profiled": [{"api": "predict", "call_site": SITE, "call_number": n, "duration_s": 0.03} for n in (3, 4, 5)],
               "call_sites": [
        {"api": "predict", "call_site": SITE, "calls_profiled": 3, "model_op_s_per_call": profiler_s,
         "measure": measure, "graph_tf_data_s_per_call": 0.0, "graph_function_s_per_call": 0.0003}]}
    return Recording(calls=[call], extra={"tf_profiler": section})


def test_agreement_rows_from_a_hand_made_recording():
    from tfdiag.analysis import agreement

    (row,) = agreement.kernel_rows(_recording(kernel_s=0.0004, profiler_s=0.0001))
    assert row["agrees"] and row["warning"] is None  # 4x, but within 2x + 0.5 ms
    assert row["tfdiag_kernel_s"] == 0.0004 and row["profiler_model_op_s"] == 0.0001
    assert row["ratio"] == pytest.approx(4.0) and row["phase_calls"] == 7 and row["calls_profiled"] == 3
    assert row["targets"] == ["sequential"] and row["count"] == 40
    assert agreement.kernel_rows(_recording(0.0004, 0.0001, count=0)) == []  # no calls: nothing to compare
    from tfdiag.recording import Recording

    assert agreement.kernel_rows(Recording()) == []  # no TF Profiler section (old recording, --no-tf-profiler)


def test_agreement_bounds():
    from tfdiag.analysis import agreement

    assert agreement.agrees(0.0025, 0.001) and not agreement.agrees(0.0026, 0.001)  # 2x + 0.5 ms
    assert agreement.agrees(0.0005, 0.001) and not agreement.agrees(0.00049, 0.001)  # 0.5x
    assert agreement.agrees(0.0005, 0.0) and not agreement.agrees(0.00051, 0.0)


def test_a_disagreement_is_a_warning_in_the_analysis_and_on_the_page():
    from tfdiag.analysis import agreement, analyze
    from tfdiag.renderers import html

    recording = _recording(kernel_s=0.014, profiler_s=0.0001)  # the 14 ms against 0.1 ms
    (row,) = agreement.kernel_rows(recording)
    assert not row["agrees"] and row["ratio"] == pytest.approx(140.0)
    assert "disagrees with the TF Profiler" in row["warning"] and "14 ms" in row["warning"]
    assert "0.10 ms" in row["warning"] and SITE in row["warning"]
    assert agreement.warnings([row]) == [row["warning"]]
    low = agreement.kernel_rows(_recording(kernel_s=0.0001, profiler_s=0.001, measure="host_compute"))[0]
    assert not low["agrees"] and "below" in low["warning"] and "host compute" in low["warning"]
    # Host compute (eager calls) is taken less the profiler's own slowdown there: profiled calls of
    # 30 ms against an unprofiled median of 25 ms.
    assert low["profiler_slowdown"] == pytest.approx(1.2) and low["profiler_measured_s"] == 0.001
    assert low["profiler_model_op_s"] == pytest.approx(0.001 / 1.2)
    assert row["profiler_slowdown"] == 1.0  # op self time stays as measured
    analysis = analyze(recording)
    assert analysis.kernel_check == [row]
    page = html.render_report(analysis)
    assert 'id="kernel-check"' in page and 'class="kernel-check-row disagrees"' in page
    assert 'class="kernel-check-warning"' in page and "×140.00" in page


def test_agreeing_rows_show_without_a_warning():
    from tfdiag.analysis import analyze
    from tfdiag.renderers import html

    page = html.render_report(analyze(_recording(kernel_s=0.0004, profiler_s=0.0001)))
    assert 'class="kernel-check-row agrees"' in page and 'class="kernel-check-warning"' not in page


def test_in_graph_tf_data_time_moves_out_of_kernel_execution():
    from tfdiag.capture import trace_ops

    steady = dict.fromkeys(PHASES, 0.0)
    steady.update(kernel_execution=0.0012, data_adapter=0.016, other=0.001)
    first = dict.fromkeys(PHASES, 0.0)
    first.update(kernel_execution=0.05)
    phases = {p: first[p] + 9 * steady[p] for p in PHASES}
    call = {"api": "predict", "call_site": SITE, "count": 10, "first_phases": first,
            "steady_phases": dict(steady), "phases": dict(phases)}
    other = {"api": "predict", "call_site": "/home/u/other.py:3", "count": 10, "first_phases": first,
             "steady_phases": dict(steady), "phases": dict(phases)}
    totals = {p: 2 * phases[p] for p in PHASES}
    # The profiled calls' functions ran 1.6 ms each, 0.9 ms of it waiting for tf.data.
    steps = [{"graph_function_s": 0.0016, "graph_tf_data_s": 0.0009}] * 3
    sites = [{"api": "predict", "call_site": SITE, "graph_tf_data_s_per_call": 0.0009,
              "graph_function_s_per_call": 0.0016, "steps": steps}]
    trace_ops.move_graph_tf_data([call, other], totals, sites)
    # The profiled share (9/16) of 1.2 ms would leave 0.525 ms, less than the 0.7 ms the functions
    # ran besides tf.data: the kernel time keeps those 0.7 ms.
    moved = 0.0012 - (0.0016 - 0.0009)
    assert call["graph_tf_data_s"] == pytest.approx(moved)
    assert call["steady_phases"]["kernel_execution"] == pytest.approx(0.0012 - moved)
    assert call["steady_phases"]["data_adapter"] == pytest.approx(0.016 + moved)
    assert sum(call["steady_phases"].values()) == pytest.approx(sum(steady.values()))
    assert call["phases"]["kernel_execution"] == pytest.approx(phases["kernel_execution"] - 9 * moved)
    assert sum(call["phases"].values()) == pytest.approx(sum(phases.values()))
    assert totals["kernel_execution"] == pytest.approx(2 * phases["kernel_execution"] - 9 * moved)
    assert call["first_phases"] is first and first["kernel_execution"] == 0.05  # the first call keeps its own
    assert other["steady_phases"] == steady and "graph_tf_data_s" not in other  # another call site: untouched
    # A slow machine makes the waits long in every call: the profiled share of the kernel time
    # moves. Nothing moves when the kernel time is no more than the functions' other time.
    slow = {"api": "predict", "call_site": SITE, "count": 3, "steady_phases": dict(steady, kernel_execution=0.01)}
    quick = {"api": "predict", "call_site": SITE, "count": 3, "steady_phases": dict(steady, kernel_execution=0.0005)}
    trace_ops.move_graph_tf_data([slow, quick], {}, sites)
    assert slow["graph_tf_data_s"] == pytest.approx(0.01 * 9 / 16)
    assert slow["steady_phases"]["kernel_execution"] == pytest.approx(0.01 * 7 / 16)
    assert quick["graph_tf_data_s"] == 0.0 and quick["steady_phases"]["kernel_execution"] == 0.0005
    # One profiled call the machine's load stretched outside tf.data (2.3 ms besides it, where the
    # other ran 0.7 ms) does not hold the move back: the floor is the least such time.
    stretched = [{"api": "predict", "call_site": SITE, "graph_tf_data_s_per_call": 0.0009,
                  "graph_function_s_per_call": 0.0024, "steps": [
                      {"graph_function_s": 0.0011, "graph_tf_data_s": 0.0004},
                      {"graph_function_s": 0.0037, "graph_tf_data_s": 0.0014}]}]
    again = {"api": "predict", "call_site": SITE, "count": 3, "steady_phases": dict(steady)}
    trace_ops.move_graph_tf_data([again], {}, stretched)
    share = (0.0004 / 0.0011 + 0.0014 / 0.0037) / 2  # the median of the calls' shares
    assert again["graph_tf_data_s"] == pytest.approx(min(0.0012 * share, 0.0012 - 0.0007))
    # One profiled step whose batch wait the profiler missed (it started mid-wait) does not halve
    # the move: the share is the median step's, not the mean of the sums.
    missed = [{"api": "predict", "call_site": SITE, "graph_tf_data_s_per_call": 0.006,
               "graph_function_s_per_call": 0.0047, "steps": [
                   {"graph_function_s": 0.0047, "graph_tf_data_s": 0.0042},
                   {"graph_function_s": 0.0047, "graph_tf_data_s": 0.0},
                   {"graph_function_s": 0.0046, "graph_tf_data_s": 0.0041}]}]
    long_wait = {"api": "predict", "call_site": SITE, "count": 3, "steady_phases": dict(steady, kernel_execution=0.006)}
    trace_ops.move_graph_tf_data([long_wait], {}, missed)
    assert long_wait["graph_tf_data_s"] == pytest.approx(0.006 * 0.0041 / 0.0046)  # the median step; not held back by 4.7 ms "besides"


def test_op_types_follow_xprofs_reading_of_event_names():
    from tfdiag.capture import trace_ops

    assert trace_ops.op_type("sequential/dense/BiasAdd:_MklNativeFusedMatMul") == "_MklNativeFusedMatMul"
    assert trace_ops.op_type("Iterator::Root::Prefetch") == "Dataset"
    assert trace_ops.op_type("predict") is None and trace_ops.op_type("EagerExecute") is None
    assert trace_ops.op_type("IteratorGetNextOp::DoCompute") is None  # a wait, not an op
    for kind in ("Dataset", "IteratorGetNext", "MakeIterator", "AnonymousIteratorV3", "TensorSliceDataset",
                 "ParallelMapDatasetV2", "OptionalGetValue", "DeleteIterator"):
        assert trace_ops.is_tf_data_type(kind), kind
    for kind in ("MatMul", "_MklNativeFusedMatMul", "ReadVariableOp", "GatherV2", "Optional"):
        assert not trace_ops.is_tf_data_type(kind), kind


def test_a_failing_profiler_start_hook_is_a_warning_not_the_users_import_error(monkeypatch):
    import types

    from tfdiag.capture.collector import Collector
    from tfdiag.capture.patching import Patcher
    from tfdiag.capture.tf_profiler import PROFILER_START_MODULES, TfProfilerGate

    collector = Collector()
    gate = TfProfilerGate(collector)

    def broken(patcher, module):
        raise RuntimeError("internals moved")

    monkeypatch.setattr(gate, "_guard_start", broken)
    fake = types.ModuleType(PROFILER_START_MODULES[0])
    monkeypatch.setitem(sys.modules, PROFILER_START_MODULES[0], fake)  # loaded: the hook runs now
    patcher = Patcher()
    try:
        gate.install(patcher)  # would raise into the user's ``import tensorflow``
    finally:
        patcher.restore()
    assert any("internals moved" in message for message in collector.warnings)
