"""The TF Profiler cross-check (analysis/agreement.py) on hand-made recordings: each row names the
two figures it compares, and a disagreement reaches every place a reader looks: the Analysis's
warnings (the report's banner), recording.json and the terminal summary."""

import json

import pytest

from tfdiag import output
from tfdiag.analysis import agreement, analyze
from tfdiag.recording import PHASES, Recording, load
from tfdiag.renderers import html, text

SITE = "/home/u/run.py:12"
CAPTURE_WARNING = {"message": "a capture warning", "count": 1}


def _recording(kernel_s: float, profiler_s: float, measure: str = "op_self_time", moved_s: float = 0.0,
               unprofiled_median_s: float = 0.025) -> Recording:
    """One predict call site of 40 calls; the TF Profiler traced calls 3-5 (30 ms each)."""
    steady = dict.fromkeys(PHASES, 0.0)
    steady.update(kernel_execution=kernel_s, data_adapter=0.03, other=0.001)
    call = {"api": "predict", "target": "sequential", "call_site": SITE, "input_signature": "float32[32, 4]",
            "count": 40, "measured_count": 37, "total_s": 1.0, "median_s": unprofiled_median_s, "p95_s": 0.03,
            "first_s": 0.1, "phases": dict.fromkeys(PHASES, 0.0), "steady_phases": steady, "phase_calls": 7}
    if moved_s:
        call["graph_tf_data_s"] = moved_s
    section = {"first_call": 3, "window_calls": 3, "calls_profiled": 3,
               "profiled": [{"api": "predict", "call_site": SITE, "call_number": n, "duration_s": 0.03}
                            for n in (3, 4, 5)],
               "call_sites": [{"api": "predict", "call_site": SITE, "calls_profiled": 3,
                               "model_op_s_per_call": profiler_s, "measure": measure}]}
    return Recording(calls=[call], warnings=[dict(CAPTURE_WARNING)], extra={"tf_profiler": section})


def test_a_row_carries_the_kernel_time_before_the_in_graph_tf_data_move_and_names_its_figures():
    (row,) = agreement.kernel_rows(_recording(kernel_s=0.0004, profiler_s=0.0003, moved_s=0.0009))
    assert row["tfdiag_kernel_s"] == 0.0004 and row["moved_tf_data_s"] == 0.0009
    assert row["tfdiag_kernel_uncorrected_s"] == pytest.approx(0.0013)
    assert "after moving 0.90 ms of tf.data wait inside the graph" in row["tfdiag_figure"]
    assert row["profiler_figure"] == "self time of the non-tf.data ops per call"
    assert row["profiler_model_op_s"] == row["profiler_measured_s"] == 0.0003 and row["profiler_slowdown"] == 1.0
    assert row["slowdown_profiled_median_s"] is None
    (plain,) = agreement.kernel_rows(_recording(kernel_s=0.0004, profiler_s=0.0003))
    assert plain["tfdiag_kernel_uncorrected_s"] == plain["tfdiag_kernel_s"]
    assert plain["tfdiag_figure"] == "steady-state kernel_execution per call"


def test_an_eager_row_divides_host_compute_by_the_slowdown_tfdiags_wall_timings_show():
    (row,) = agreement.kernel_rows(_recording(kernel_s=0.0004, profiler_s=0.0006, measure="host_compute",
                                              unprofiled_median_s=0.02))
    assert row["slowdown_profiled_median_s"] == 0.03 and row["slowdown_unprofiled_median_s"] == 0.02
    assert row["profiler_slowdown"] == pytest.approx(1.5)
    assert row["profiler_model_op_s"] == pytest.approx(0.0004) and row["profiler_measured_s"] == 0.0006
    assert row["profiler_figure"].startswith("host compute per call ÷ ×1.50")
    assert "profiled median 30 ms against unprofiled 20 ms" in row["profiler_figure"]
    # No unprofiled call at the site: nothing to take out, and the row says so.
    (bare,) = agreement.kernel_rows(_recording(0.0004, 0.0006, measure="host_compute", unprofiled_median_s=0.0))
    assert bare["profiler_slowdown"] == 1.0 and bare["profiler_model_op_s"] == 0.0006
    assert "no unprofiled call" in bare["profiler_figure"]


def test_a_disagreement_reaches_the_warnings_the_page_the_recording_file_and_the_summary(tmp_path):
    recording = _recording(kernel_s=0.014, profiler_s=0.0001, moved_s=0.002)  # the 14 ms against 0.1 ms
    before = json.loads(recording.to_json())
    analysis = analyze(recording)
    (row,) = analysis.kernel_check
    assert not row["agrees"] and "16 ms before that move" in row["warning"]
    assert row["tfdiag_figure"] in row["warning"] and row["profiler_figure"] in row["warning"]
    assert analysis.warnings == [{"message": row["warning"], "count": 1, "source": "kernel_check"}, CAPTURE_WARNING]
    page = html.render_report(analysis)
    assert "2 capture warnings" in page and page.count(row["warning"][:60]) >= 2  # banner list and the section

    files, written = output.write(tmp_path / "out", recording, analysis)
    assert json.loads(recording.to_json()) == before  # writing never changes the recording
    saved = json.loads((tmp_path / "out" / "recording.json").read_text(encoding="utf-8"))
    assert [w["message"] for w in saved["warnings"]] == [row["warning"], CAPTURE_WARNING["message"]]
    again = analyze(load(files["recording"]))  # derived again, not repeated
    assert again.warnings == written.warnings and again.kernel_check == analysis.kernel_check

    summary = text.summary(written, files)
    assert "warning: kernel time disagrees with the TF Profiler" in summary
    assert "warning: a capture warning" in summary


def test_the_summary_shows_every_cross_check_warning_and_counts_only_capture_warnings_as_more():
    analysis = analyze(_recording(kernel_s=0.014, profiler_s=0.0001))
    analysis.warnings += [{"message": f"capture {i}", "count": 1} for i in range(4)]
    out = text.summary(analysis, {"report": "r.html"})
    assert out.index("kernel time disagrees") < out.index("warning: a capture warning")
    assert "… and 2 more capture warnings in the report" in out


def test_agreeing_rows_add_no_warning():
    recording = _recording(kernel_s=0.0004, profiler_s=0.0001)
    analysis = analyze(recording)
    assert analysis.kernel_check[0]["agrees"] and analysis.warnings == [CAPTURE_WARNING]
    assert "kernel time disagrees" not in text.summary(analysis, {"report": "r.html"})
