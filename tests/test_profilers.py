"""cProfile and the TF Profiler around predict calls: files, recording sections, report, viewers.

Real TensorFlow, real servers on loopback; nothing is mocked.
"""

import gzip
import json
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
        {"api": "predict", "call_site": SITE, "measured_count": 30, "median_s": 0.040},
        {"api": "predict", "call_site": SITE, "measured_count": 2, "median_s": 0.500},  # other input shape
        {"api": "predict", "call_site": "/home/u/other.py:3", "measured_count": 10, "median_s": 1.0},
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
    recording = Recording(extra={
        "cprofile": {"calls_profiled": 1, "blocked_by": None, "file": "profile.prof",
                     "command": f"tfdiag snakeviz {nasty}", "profiled": [],
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
    page = html.render_report(recording, analyze(recording))
    assert nasty not in page and "&lt;script&gt;" in page
    assert "Measured overhead of cProfile in this run: ×1.25" in page
    assert "The TF Profiler did not run" in page
