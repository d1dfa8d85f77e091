"""The pytest plugin as pytest loads it (the ``pytest11`` entry point), in an inner pytest run in a
fresh process each (pytester's runpytest_subprocess), so TensorFlow's state never leaks."""

import json

import pytest

pytest_plugins = ["pytester"]

# Tiny tests: a tf.function on tf.ones, no Keras model. ``double`` traces once per new shape.
BUDGETS = '''
import sys
import pytest


def _calls(shapes):
    import tensorflow as tf

    @tf.function
    def double(x):
        return x * 2

    for n in shapes:
        double(tf.ones([n]))


def test_inactive_unless_asked():
    assert "tensorflow" not in sys.modules and "tfdiag.session" not in sys.modules
    assert "tfdiag.pytest_plugin" in sys.modules


@pytest.mark.tfdiag(max_traces=2)
def test_retraces_too_often():
    _calls([1, 2, 3, 4])


@pytest.mark.tfdiag(max_traces=2)
def test_within_budget():
    from tfdiag.session import _ACTIVE
    assert len(_ACTIVE) == 1  # diagnosed without --tfdiag
    _calls([3, 3, 3, 3])


def test_fixture_outside_a_diagnosed_run(tfdiag):
    with tfdiag:
        _calls([1, 2, 3])
    assert [f["code"] for f in tfdiag.findings] == ["retrace-shape"]


@pytest.mark.tfdiag(max_traces=1)
def test_budget_on_what_the_fixture_recorded(tfdiag):
    _calls([1, 2, 3])  # not inside `with tfdiag:`: not counted
    with tfdiag:
        _calls([5, 6])


@pytest.mark.tfdiag(max_trace=1)
def test_misspelt_budget():
    pass
'''

REPORTS = '''
import pytest


def test_fails():
    import tensorflow as tf
    square = tf.function(lambda x: x * x)
    assert square(tf.constant(3.0)).numpy() == 10.0


def test_clean():
    import tensorflow as tf
    assert tf.constant(3.0).numpy() == 3.0


def test_fixture_works_under_the_option(tfdiag):
    import tensorflow as tf
    bump = tf.function(lambda x: x + 1)
    with tfdiag:
        for n in (1, 2, 3):
            bump(tf.ones([n]))
    assert tfdiag.findings and tfdiag.findings[0]["code"] == "retrace-shape"
'''


@pytest.mark.tf
def test_marker_fails_a_test_over_its_trace_budget_and_passes_one_within(pytester):
    pytester.makepyfile(test_inner=BUDGETS)
    result = pytester.runpytest_subprocess("-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=3)
    result.stdout.fnmatch_lines([
        "*test_inactive_unless_asked PASSED*",
        "*test_retraces_too_often FAILED*",
        "*test_within_budget PASSED*",
        "*test_fixture_outside_a_diagnosed_run PASSED*",
        "*test_budget_on_what_the_fixture_recorded FAILED*",
        "*test_misspelt_budget FAILED*",
    ])
    # The failure message is the retrace finding's title, then the budget it broke.
    result.stdout.fnmatch_lines([
        "*_ test_retraces_too_often _*",
        "`double` retraced 3 time(s) because `x` changed (shape)",
        "(tfdiag: max_traces=2, `double` traced 4 times); run pytest with --tfdiag=DIR for the report",
    ])
    result.stdout.fnmatch_lines(["(tfdiag: max_traces=1, `double` traced 2 times)*"])
    result.stdout.fnmatch_lines(["@pytest.mark.tfdiag: unknown budget max_trace= (known: max_traces, max_memory_growth)"])
    assert "Traceback" not in result.stdout.str()


@pytest.mark.tf
def test_option_writes_a_report_for_each_failing_or_flagged_test(pytester):
    pytester.makepyfile(test_inner=REPORTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tfdiag=reports")
    result.assert_outcomes(passed=2, failed=1)
    reports = pytester.path / "reports"
    assert sorted(p.name for p in reports.iterdir()) == [
        "test_inner.py_test_fails", "test_inner.py_test_fixture_works_under_the_option"]
    failed = reports / "test_inner.py_test_fails"
    assert (failed / "report.html").is_file()
    recording = json.loads((failed / "recording.json").read_text())
    assert recording["environment"]["command"] == ["pytest", "test_inner.py::test_fails"]
    assert recording["run"]["exception"].startswith("AssertionError")
    calls = [c for c in recording["calls"] if c["api"] == "tf.function"]
    source = (pytester.path / "test_inner.py").read_text().splitlines()
    line = next(n for n, text in enumerate(source, 1) if "square(tf.constant" in text)
    assert calls and calls[0]["call_site"] == f"{pytester.path / 'test_inner.py'}:{line}"
    result.stdout.fnmatch_lines([
        "*Captured tfdiag call*", f"report: {failed / 'report.html'}",
        "*- tfdiag -*",
        f"test_inner.py::test_fails: {failed / 'report.html'}",
    ])
    # --tfdiag given a test path as its folder (pytest --tfdiag test_x.py): one clear line.
    misread = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tfdiag", "test_inner.py")
    assert misread.ret == pytest.ExitCode.USAGE_ERROR
    misread.stderr.fnmatch_lines(["*--tfdiag test_inner.py: that is a test path*write --tfdiag=DIR*"])


def test_memory_budget_reads_the_memory_growth_finding_and_folder_names_are_one_word():
    from tfdiag.pytest_plugin import breach, folder_name
    from tfdiag.recording import load

    from .conftest import DATA

    recording = load(DATA / "golden_recording.json")  # no memory readings: no growth, no breach
    grows = {"code": "memory-growth", "title": "predict() at a.py:3 grows 40 MB per 1000 calls",
             "details": {"slope_mb_per_1000_calls": 40.0, "cause": "models"}}
    assert breach(recording, [grows], {"max_memory_growth": 50}) is None
    assert breach(recording, [grows], {"max_memory_growth": 10}).splitlines() == [
        grows["title"], "(tfdiag: max_memory_growth=10 MB per 1000 calls, grew 40 MB per 1000 calls)"]
    assert breach(recording, recording.findings, {"max_memory_growth": 0}) is None
    assert folder_name("tests/test_a.py::TestX::test_b[x-1/2]") == "tests_test_a.py_TestX_test_b_x-1_2"
    assert len(folder_name("t.py::test[" + "x" * 300 + "]")) <= 120
