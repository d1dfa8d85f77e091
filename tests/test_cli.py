"""The CLI through main(argv): reports written, exit statuses as DESIGN.md says."""

import json
import textwrap

import pytest

from tfdiag import cli
from tfdiag.capture import sampling
from tfdiag.recording import load

from .conftest import EXAMPLES

pytestmark = pytest.mark.tf


def _script(tmp_path, body: str, name: str = "script.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_analyze_predict_example_writes_report_and_recording(tmp_path, capsys):
    out = tmp_path / "out"
    status = cli.main(["analyze", "-o", str(out), str(EXAMPLES / "predict_loop.py"), "--calls", "4"])
    assert status == 0
    recording = load(out / "recording.json")
    assert recording.environment["keras_flavor"] == "keras3"
    predict = [c for c in recording.calls if c["api"] == "predict"]
    assert sum(c["count"] for c in predict) == 8
    names = {f["name"] for f in recording.functions}
    assert "one_step_on_data_distributed" in names
    assert any(n.startswith("Dataset_") for n in names)
    page = (out / "report.html").read_text()
    assert "one_step_on_data_distributed" in page and "predict" in page
    assert (out / "profile.prof").exists()
    err = capsys.readouterr().err
    assert str(out / "report.html") in err


def test_script_sees_its_own_argv_and_folder(tmp_path):
    (tmp_path / "helper_mod.py").write_text("VALUE = 7\n")
    script = _script(tmp_path, """
        import sys, helper_mod
        assert sys.argv[1:] == ["--flag", "x"], sys.argv
        assert __name__ == "__main__"
        sys.exit(helper_mod.VALUE - 7)
    """)
    assert cli.main(["analyze", "-o", str(tmp_path / "o"), script, "--flag", "x"]) == 0


def test_sys_exit_status_is_returned_and_report_written(tmp_path):
    script = _script(tmp_path, """
        import tensorflow as tf
        tf.function(lambda x: x + 1)(tf.constant(1))
        import sys; sys.exit(4)
    """)
    out = tmp_path / "o"
    assert cli.main(["analyze", "-o", str(out), script]) == 4
    recording = load(out / "recording.json")
    assert recording.run["ended_by"] == "sys.exit" and recording.run["exit_status"] == 4
    assert "called sys.exit" in (out / "report.html").read_text()


def test_exception_gives_1_and_python_traceback(tmp_path, capsys):
    script = _script(tmp_path, """
        def boom():
            raise ValueError("bad input shape")
        boom()
    """)
    out = tmp_path / "o"
    assert cli.main(["analyze", "-o", str(out), script]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last):" in err
    assert "ValueError: bad input shape" in err
    assert "runner.py" not in err
    assert load(out / "recording.json").run["exception"] == "ValueError: bad input shape"


def test_keyboard_interrupt_gives_130(tmp_path):
    script = _script(tmp_path, "raise KeyboardInterrupt\n")
    out = tmp_path / "o"
    assert cli.main(["analyze", "-o", str(out), script]) == 130
    assert load(out / "recording.json").run["ended_by"] == "interrupted"


def test_no_tensorflow_activity_is_said(tmp_path):
    script = _script(tmp_path, "print('hello')\n")
    out = tmp_path / "o"
    assert cli.main(["analyze", "--no-cprofile", "-o", str(out), script]) == 0
    assert "No TensorFlow activity was seen" in (out / "report.html").read_text()


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p / "absent.py"), "no such file"),
    (lambda p: str(p), "is a directory"),
    (lambda p: _script(p, "def broken(:\n    pass\n", "broken.py"), "broken.py:1: syntax error"),
])
def test_usage_errors_give_2_and_one_line(tmp_path, capsys, make, message):
    assert cli.main(["analyze", "-o", str(tmp_path / "o"), make(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "recording.json").exists()


def test_report_command_rerenders_saved_recording(tmp_path, capsys):
    out = tmp_path / "o"
    assert cli.main(["analyze", "--no-cprofile", "-o", str(out), str(EXAMPLES / "retracing" / "shape.py")]) == 0
    first = (out / "report.html").read_text()
    again = tmp_path / "again"
    assert cli.main(["report", str(out / "recording.json"), "-o", str(again)]) == 0
    assert (again / "report.html").read_text() == first


def test_report_command_rejects_corrupt_recording(tmp_path, capsys):
    bad = tmp_path / "recording.json"
    bad.write_text('{"schema_version": 1, "calls": [')
    assert cli.main(["report", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not valid JSON" in err and len(err.splitlines()) == 1


def test_fail_on_retrace_gate(tmp_path):
    shape = str(EXAMPLES / "retracing" / "shape.py")
    out = tmp_path / "o"
    assert cli.main(["analyze", "--no-cprofile", "--fail-on-retrace", "2", "-o", str(out), shape]) == 3
    assert (out / "report.html").exists()
    assert cli.main(["analyze", "--no-cprofile", "--fail-on-retrace", "5", "-o", str(out), shape]) == 0
    clean = str(EXAMPLES / "retracing" / "clean.py")
    assert cli.main(["analyze", "--no-cprofile", "--fail-on-retrace", "1", "-o", str(out), clean]) == 0


def test_recording_json_is_plain_json(tmp_path):
    out = tmp_path / "o"
    cli.main(["analyze", "--no-cprofile", "-o", str(out), str(EXAMPLES / "retracing" / "python_value.py")])
    data = json.loads((out / "recording.json").read_text())
    sample = next(f for f in data["functions"] if f["name"] == "sample")
    assert sample["trace_count"] == 4 and sample["origin"] == "user"
    assert sample["defined_at"].endswith("python_value.py:6")


def test_traces_only_gate_records_traces_and_no_calls(tmp_path, capsys):
    out = tmp_path / "o"
    shape = str(EXAMPLES / "retracing" / "shape.py")
    assert cli.main(["analyze", "--traces-only", "--fail-on-retrace", "2", "-o", str(out), shape]) == 3
    recording = load(out / "recording.json")
    assert recording.calls == [] and "cprofile" not in recording.extra
    encode = next(f for f in recording.functions if f["name"] == "encode")
    assert encode["trace_count"] == 5
    assert any(f["code"] == "retrace-shape" for f in recording.findings)
    assert cli.main(["analyze", "--traces-only", "--verify", "-o", str(out), shape]) == 2
    assert "cannot be combined" in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    (["--verify-budget", "5"], "--verify-budget only applies with --verify"),
    (["--cprofile-calls", "-1"], "--cprofile-calls takes a number"),
    (["--phase-every", "0"], "--phase-every takes a number of calls, 1 or more"),
    (["--phase-every", "4", "--traces-only"], "--phase-every needs call timing"),
    (["--tf-profiler-calls", "-2"], "--tf-profiler-calls takes a number of calls, 0 or more"),
    (["--verify", "--verify-budget", "0"], "--verify-budget takes a number of seconds, more than 0"),
])
def test_option_misuse_is_a_usage_error(tmp_path, capsys, options, message):
    script = _script(tmp_path, "print('never runs')\n")
    assert cli.main(["analyze", *options, "-o", str(tmp_path / "o"), script]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "never runs" not in captured.out


def test_phase_every_sets_how_many_calls_get_the_full_split(tmp_path):
    script = _script(tmp_path, """
        import numpy as np
        import tensorflow as tf
        model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
        for _ in range(40):
            model(np.ones((2, 4), np.float32))
    """)
    sampled = {}
    for every in ("1", "32"):
        out = tmp_path / f"out{every}"
        assert cli.main(["analyze", "--no-cprofile", "--no-tf-profiler", "--phase-every", every, "-o", str(out),
                         script]) == 0
        recording = load(out / "recording.json")
        (call,) = [c for c in recording.calls if c["api"] == "__call__"]
        assert call["count"] == 40
        # the calls that got the full split, the first (reported apart) left out
        sampled[every] = sum("phases" in s for s in recording.call_samples if s["api"] == "__call__") - 1
        # the estimate rests on them less any the OS stretched past 4x their median (sampling.OUTLIER)
        assert sampling.MIN_KEPT <= call["phase_calls"] <= sampled[every]
    assert sampled["1"] == 39  # every call after the first
    assert 5 <= sampled["32"] < 20  # the 5 after the first, then one in 32 at random


def test_a_bug_in_tfdiag_is_not_called_a_corrupt_recording(tmp_path, capsys, monkeypatch):
    """Only a recording that fails its checks is "corrupt"; a failure in analysis or rendering is
    tfdiag's own bug: one line that says so, and its own exit status."""
    from tfdiag.renderers import html

    from .conftest import DATA

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(html, "render_report", broken)
    monkeypatch.delenv("TFDIAG_DEBUG", raising=False)
    assert cli.main(["report", str(DATA / "golden_recording.json"), "-o", str(tmp_path)]) == cli.TFDIAG_BUG == 70
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "a bug in tfdiag" in err and "KeyError" in err and "TFDIAG_DEBUG=1" in err
    assert "corrupt" not in err
    monkeypatch.setenv("TFDIAG_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.main(["report", str(DATA / "golden_recording.json"), "-o", str(tmp_path)])


def test_saved_recording_is_derived_and_the_live_recording_is_untouched(tmp_path):
    """output.write adds findings and file names to recording.json, never to the Recording itself."""
    import tfdiag
    from tfdiag import output
    from tfdiag.analysis import analyze

    from .conftest import DATA

    recording = tfdiag.load(DATA / "golden_recording.json")
    recording.findings = []
    before = json.dumps(recording.to_dict(), sort_keys=True)
    analysis = analyze(recording)
    files, written = output.write(tmp_path / "o", recording, analysis,
                                  {"profile": lambda path: open(path, "w").close() is None})
    assert json.dumps(recording.to_dict(), sort_keys=True) == before
    saved = load(files["recording"])
    assert saved.findings == analysis.findings != []
    assert saved.extra["cprofile"]["file"] == "profile.prof"
    assert "tfdiag snakeviz" in written.profilers["cprofile"]["command"]
    assert "file" not in (analysis.profilers["cprofile"] or {})  # the analysis given is not changed either
    again = tmp_path / "again"
    assert cli.main(["report", files["recording"], "-o", str(again)]) == 0
    assert (again / "report.html").read_text() == (tmp_path / "o" / "report.html").read_text()


def test_option_help_states_the_defaults_the_parts_use(monkeypatch, capsys):
    from tfdiag import options

    for name, value in (("CPROFILE_CALLS", 11), ("TF_PROFILER_CALLS", 7), ("PHASE_EVERY", 17),
                        ("PHASE_FIRST_CALLS", 6), ("VERIFY_BUDGET_S", 12.5)):
        monkeypatch.setattr(options, name, value)
    assert cli.main(["analyze", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for stated in ("(default: 11)", "(default: 7)", "(default: 17,", "the 6 unprofiled", "(default: 12.5)"):
        assert stated in text


def test_diagnoser_takes_checked_options():
    from tfdiag.capture import sampling
    from tfdiag.options import Options
    from tfdiag.session import Diagnoser

    # None: the sampler's default, one in EVERY, fewer at fast call sites (test_sampling.py)
    assert Diagnoser(None).phase_every is None and sampling.PhaseSampler(None).every == sampling.EVERY
    assert Diagnoser(None, options=Options(phase_every=4, cprofile=False)).phase_every == 4
    with pytest.raises(TypeError):
        Diagnoser(None, phase_every=4)  # keywords are diagnose()'s, checked there once
