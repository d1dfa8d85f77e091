"""``tfdiag analyze --json``: stdout is one JSON document with the findings (for CI logs); the
summary and everything the script prints, its child processes' output included, go to stderr."""

import json
import textwrap

import pytest

from .conftest import run_tfdiag


@pytest.mark.tf
def test_json_findings_on_stdout_and_the_rest_on_stderr(tmp_path):
    script = tmp_path / "retracing.py"
    script.write_text(textwrap.dedent("""
        import os, subprocess, sys
        import tensorflow as tf

        @tf.function
        def scale(x, factor):
            return x * factor

        print("hello from the script")
        for factor in (1.0, 2.0, 3.0):
            scale(tf.ones((2,)), factor)
        subprocess.run([sys.executable, "-c", "print('hello from a child')"], check=True)
    """))
    out = tmp_path / "out"
    done = run_tfdiag("analyze", "--json", "--fail-on-retrace", "1", "--no-cprofile", "--no-tf-profiler",
                      "-o", str(out), str(script))
    assert done.returncode == 3, done.stderr  # the gate tripped: scale traced 3 times
    document = json.loads(done.stdout)  # the whole of stdout: nothing else was printed there
    # the document says how tfdiag ended (the gate's 3), and how the script did
    assert document["exit_status"] == 3 and document["script_exit_status"] == 0
    assert document["gate"] == "--fail-on-retrace 1: `scale` traced 3 times" and document["error"] is None
    assert document["ended_by"] == "returned"
    assert done.stderr.rstrip().endswith("tfdiag: --fail-on-retrace 1: `scale` traced 3 times")
    assert isinstance(document["findings"], list)
    retrace = next(f for f in document["findings"] if f["code"] == "retrace-python-value")
    assert retrace["function"] == "scale" and retrace["call_site"].endswith("retracing.py:11")
    assert document["files"]["report"] == str(out / "report.html")
    # the same findings as recording.json holds
    assert document["findings"] == json.loads((out / "recording.json").read_text())["findings"]
    assert "hello from the script" in done.stderr and "hello from a child" in done.stderr
    assert "files written:" in done.stderr  # the summary


def test_json_document_reaches_stdout_when_the_script_ends_with_os_exit(tmp_path):
    script = tmp_path / "quits.py"
    script.write_text("import os\nprint('from the script')\nos._exit(0)\n")
    done = run_tfdiag("analyze", "--json", "-o", str(tmp_path / "out"), str(script))
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["ended_by"] == "os._exit" and document["findings"] == []
    assert "from the script" in done.stderr


def test_json_document_is_printed_when_the_report_cannot_be_written(tmp_path):
    script = tmp_path / "clobbers.py"  # replaces the output folder with a file: writing the report fails
    script.write_text("import shutil, sys\nshutil.rmtree(sys.argv[1])\nopen(sys.argv[1], 'w').close()\n")
    out = tmp_path / "out"
    done = run_tfdiag("analyze", "--json", "--no-cprofile", "--no-tf-profiler", "-o", str(out), str(script), str(out))
    assert done.returncode == 2, done.stderr
    document = json.loads(done.stdout)
    assert document["exit_status"] == 2 and document["script_exit_status"] == 0 and document["gate"] is None
    assert document["error"].startswith(f"could not write the report to {out}") and document["files"] == {}
    assert document["ended_by"] == "returned" and document["findings"] == []
    assert f"tfdiag: error: could not write the report to {out}" in done.stderr
