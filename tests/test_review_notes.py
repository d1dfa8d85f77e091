"""Three notes of a review: no kernel-time cross-check where every call traced (analysis/agreement.py);
the TF Profiler note names the fit() steps it profiled (templates/_profilers.html.j2); xprof's C++
logging while tfdiag reads its own trace stays off the terminal (capture/xprof_read.py)."""

import json
import os
import re
import subprocess
import sys
import textwrap

from tfdiag.analysis import agreement, analyze
from tfdiag.recording import PHASES, Recording
from tfdiag.renderers import html

SITE = "/home/u/step.py:9"


def _tf_function_site(user_traces: int, tf_data_traces: int = 0) -> Recording:
    """The review's case: ``step(x, 0.1 * i)`` 20 times at one line; steady kernel time 7.24 ms per
    call against 0.09 ms of op self time in the profiled calls 3-5; ``user_traces`` of its traces
    were made at that line (and ``tf_data_traces`` of a tf.data function, as predict() makes)."""
    steady = dict.fromkeys(PHASES, 0.0)
    steady.update(kernel_execution=0.00724, graph_creation=0.008, other=0.002)
    call = {"api": "tf.function", "target": "step", "call_site": SITE, "input_signature": "float32[64, 64], float",
            "count": 20, "total_s": 0.9, "median_s": 0.02, "p95_s": 0.03, "first_s": 0.5,
            "phases": dict.fromkeys(PHASES, 0.0), "steady_phases": steady, "phase_calls": 5}
    traces = [{"call_site": SITE, "duration_s": 0.01, "args": []} for _ in range(user_traces)]
    functions = [{"name": "step", "qualname": "step", "origin": "user", "trace_count": user_traces,
                  "traces": traces, "traces_dropped": 0}]
    if tf_data_traces:
        functions.append({"name": "Dataset_map", "qualname": "wrapped_fn", "origin": "tf.data",
                          "trace_count": tf_data_traces, "traces_dropped": 0,
                          "traces": [{"call_site": SITE, "duration_s": 0.001, "args": []}] * tf_data_traces})
    section = {"first_call": 3, "window_calls": 3, "calls_profiled": 3,
               "profiled": [{"api": "tf.function", "call_site": SITE, "call_number": n, "duration_s": 0.02}
                            for n in (3, 4, 5)],
               "call_sites": [{"api": "tf.function", "call_site": SITE, "calls_profiled": 3,
                               "model_op_s_per_call": 0.00009, "measure": "op_self_time"}]}
    return Recording(calls=[call], functions=functions, extra={"tf_profiler": section})


def test_a_call_site_whose_calls_mostly_traced_gets_no_kernel_check_and_no_warning():
    retraced = analyze(_tf_function_site(user_traces=20))
    assert retraced.kernel_check == []
    assert not any("kernel time disagrees" in str(w) for w in retraced.warnings)
    # 11 of 20 calls traced: 10 of the 19 after the first, more than half.
    assert agreement.kernel_rows(_tf_function_site(user_traces=11)) == []


def test_a_site_that_traced_once_or_only_traced_tf_data_functions_is_still_checked():
    for recording in (_tf_function_site(user_traces=1), _tf_function_site(user_traces=1, tf_data_traces=20),
                      _tf_function_site(user_traces=10)):  # 9 of the 19 after the first: not most
        (row,) = agreement.kernel_rows(recording)
        assert not row["agrees"] and "kernel time disagrees" in row["warning"]
    assert agreement.traced_calls(_tf_function_site(user_traces=1, tf_data_traces=20), SITE) == 1


def _fit_only(step_windows: list[dict]) -> Recording:
    """A script that only calls fit(): the call window saw no call, the step window profiled steps 4-6."""
    section = {"first_call": 3, "window_calls": 3, "calls_profiled": 0, "blocked_by": None, "start_s": None,
               "stop_s": None, "profiled": [], "trace_files": [], "trace_bytes": 0, "run": None,
               "logdir": "tensorboard", "command": "tfdiag tensorboard out", "top_ops": [], "self_s_by_where": {},
               "steps": [], "summary": {}, "converter": None, "call_sites": [], "step_windows": step_windows,
               "step_sites": []}
    return Recording(extra={"tf_profiler": section})


WINDOW = {"api": "fit", "call_site": "/home/u/train.py:18", "steps": [4, 5, 6], "start_s": 0.0005, "stop_s": 0.004,
          "blocked_by": None, "trace_files": ["steps/fit-1/plugins/profile/2026_01_01_00_00_00/host.xplane.pb"]}


def _profiler_note(page: str) -> str:
    article = page[page.index('<article id="tf-profiler">'):]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", article[:article.index("</article>")]))


def test_the_note_names_the_profiled_fit_steps_instead_of_saying_the_profiler_did_not_run():
    note = _profiler_note(html.render_report(analyze(_fit_only([WINDOW]))))
    assert "did not run" not in note and "was never reached" not in note
    assert "profiled 3 steps of fit() at train.py:18 (steps 4, 5, 6)" in note
    assert "tfdiag tensorboard out" in note


def test_the_note_says_did_not_run_only_when_no_window_ran():
    skipped = dict(WINDOW, steps=[], trace_files=[], blocked_by="another TF Profiler window was open")
    note = _profiler_note(html.render_report(analyze(_fit_only([skipped]))))
    assert "The TF Profiler did not run: its window (call 3 onwards, 3 call(s)) was never reached." in note
    assert "skipped the steps of fit() at train.py:18: another TF Profiler window was open" in note


SCRIPT = """\
import sys
import numpy as np
import keras

model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(1)])
x = np.zeros((8, 4), dtype="float32")
for _ in range(6):
    model.predict(x, verbose=0)
print("the script's own stdout")
print("the script's own stderr", file=sys.stderr)
"""


def test_the_trace_conversion_logs_nothing_to_the_terminal_but_the_script_still_does(tmp_path):
    script = tmp_path / "tiny_predict.py"
    script.write_text(textwrap.dedent(SCRIPT), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the user's default logging
    done = subprocess.run([sys.executable, "-m", "tfdiag", "analyze", "--no-cprofile",
                           "-o", str(tmp_path / "out"), str(script)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the script's own stdout" in done.stdout and "the script's own stderr" in done.stderr
    section = json.loads((tmp_path / "out" / "recording.json").read_text(encoding="utf-8"))["tf_profiler"]
    assert section["converter"] and section["top_ops"]  # xprof did convert the trace
    # xprof's lines while converting the trace (multi_xplanes_to_op_stats.cc, xplane_to_op_stats.cc, ...).
    assert "ConvertMultiXSpacesToCombinedOpStats" not in done.stderr
    assert "xplane_to_tools_data" not in done.stderr and "serving tool:" not in done.stderr
    # nor the profiler session's own start and stop (profiler_session.cc, save_profile.cc)
    assert "Profiler session" not in done.stderr and "save_profile" not in done.stderr


class _Warnings:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def warn(self, message: str) -> None:
        self.messages.append(message)


class _FailingConverter:
    """An xprof whose conversion logs (C++ style, straight to file descriptor 2) and then fails,
    while something else (another thread's print, say) writes a plain line to file descriptor 2."""

    @staticmethod
    def xspace_to_tool_data(paths, tool, options):
        os.write(2, b"I0000 00:00:1796172917.664741   11408 xplane_to_op_stats.cc:623] converting\n")
        os.write(2, b"a plain line from elsewhere\n")
        os.write(2, b"E0000 00:00:1796172917.700000   11408 xplane_to_op_stats.cc:700] cannot read the XSpace\n")
        raise RuntimeError("no tables")


def test_a_failed_conversion_keeps_xprofs_log_in_its_warning_and_lets_other_output_through(capfd):
    from tfdiag.capture import xprof_read

    warnings = _Warnings()
    assert xprof_read._tool_json(_FailingConverter, "xprof", ["x.xplane.pb"], "overview_page", warnings) is None
    out, err = capfd.readouterr()
    assert err == "a plain line from elsewhere\n"  # only the C++ log lines were kept off stderr
    (message,) = warnings.messages
    assert "could not convert the trace to overview_page: RuntimeError: no tables" in message
    assert "xplane_to_op_stats.cc:700] cannot read the XSpace" in message and "] converting" in message


def test_a_varying_dimension_is_said_once_across_a_findings_retraces():
    """Each retrace of an argument used to repeat "dimension 1 varies (…)" on its own evidence line."""
    from tfdiag.analysis import analyze
    from tfdiag.recording import Recording

    site = "/home/ana/encode.py"
    traces = [{"call_site": f"{site}:10", "duration_s": 0.006, "object_index": 1, "new_object": False,
               "created_at": f"{site}:3", "thread": "MainThread", "variable_creation": False, "index": i + 1,
               "args": [{"kind": "tensor", "shape": [4, n, 8], "dtype": "float32", "name": "tokens"}]}
              for i, n in enumerate((29, 31, 7, 21, 37))]
    recording = Recording.from_dict({
        "schema_version": 1, "environment": {}, "run": {"wall_s": 1.0}, "calls": [], "call_samples": [],
        "phases": {}, "findings": [], "warnings": [],
        "functions": [{"name": "encode", "qualname": "encode", "origin": "user", "defined_at": f"{site}:3",
                       "trace_count": 5, "trace_s": 0.03, "object_count": 1, "traces": traces, "traces_dropped": 0}]})
    (finding,) = [f for f in analyze(recording).findings if f["code"] == "retrace-shape"]
    lines = [e for e in finding["evidence"] if e.startswith("tokens: shape")]
    assert len(lines) == 4 and "dimension 1 varies (29, 31, 7, …)" in lines[0]
    assert not any("varies" in line for line in lines[1:]), lines
