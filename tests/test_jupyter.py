"""The %%tfdiag cell magic in a real IPython kernel (driven by nbclient), and IPython stays optional."""

import html
import json
import re
import subprocess
import sys

import pytest

from .conftest import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = [pytest.mark.tf]

TRACING_CELL = """%%tfdiag -o {out} --no-tf-profiler --height 600
import tensorflow as tf

@tf.function
def double(x):
    return x * 2

for n in (1, 2, 3):
    double(tf.ones((n,)))
"""

FAILING_CELL = """%%tfdiag -o {out} --no-display --no-cprofile --no-tf-profiler
import tensorflow as tf
tf.constant(1.0)
raise ValueError("boom </script><script>alert(1)</script>")
"""


def _kernel_manager(tmp_path):
    """A kernel running this interpreter (the venv's), from a kernelspec made for the test only."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = tmp_path / "kernels" / "tfdiag-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tfdiag test", "language": "python",
        "env": {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)},
    }))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return KernelManager(kernel_spec_manager=ksm, kernel_name="tfdiag-test")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("jupyter")
    out, failed = tmp_path / "report", tmp_path / "failed"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext tfdiag"),
        nbformat.v4.new_code_cell(TRACING_CELL.format(out=out)),
        nbformat.v4.new_code_cell("print('findings:', sorted(f['code'] for f in _tfdiag.findings))"),
        nbformat.v4.new_code_cell(FAILING_CELL.format(out=failed)),
        nbformat.v4.new_code_cell("%%tfdiag --bogus\npass"),
    ]
    client = nbclient.NotebookClient(nb, km=_kernel_manager(tmp_path), timeout=600, allow_errors=True,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return nb, out, failed


def _html_outputs(cell):
    return [o["data"]["text/html"] for o in cell.outputs if "text/html" in o.get("data", {})]


def test_magic_shows_the_report_inline(executed):
    nb, out, _ = executed
    assert not [o for o in nb.cells[0].outputs if o.output_type == "error"]
    (shown,) = _html_outputs(nb.cells[1])
    assert "tfdiag:" in shown and "double" in shown
    match = re.search(r'<iframe[^>]* srcdoc="([^"]*)"', shown)
    assert match, shown[:500]
    assert "<" not in match.group(1)  # the whole page is escaped into the attribute
    page = html.unescape(match.group(1))
    assert page.startswith("<!DOCTYPE html>")
    assert 'id="verdict"' in page and 'id="findings"' in page and 'id="timeline"' in page
    assert "retrace-shape" in page and "double" in page
    assert "height: 600px" in shown
    plain = [o["data"]["text/plain"] for o in nb.cells[1].outputs if "text/plain" in o.get("data", {})]
    assert plain and "retrace-shape" in plain[0] and str(out / "report.html") in plain[0]
    assert (out / "report.html").is_file() and (out / "recording.json").is_file()
    assert (out / "report.html").read_text(encoding="utf-8") == page


def test_diagnoser_is_left_in_the_notebook(executed):
    nb, _, _ = executed
    text = "".join(o.get("text", "") for o in nb.cells[2].outputs if o.output_type == "stream")
    assert "findings: ['retrace-shape']" in text


def test_a_failing_cell_still_gets_its_report(executed):
    nb, _, failed = executed
    errors = [o for o in nb.cells[3].outputs if o.output_type == "error"]
    assert errors and errors[0]["ename"] == "ValueError"  # the user's traceback, shown as usual
    assert _html_outputs(nb.cells[3]) and "<iframe" not in _html_outputs(nb.cells[3])[0]  # --no-display
    run = json.loads((failed / "recording.json").read_text())["run"]
    assert run["ended_by"] == "exception" and run["exception"].startswith("ValueError: boom")
    page = (failed / "report.html").read_text(encoding="utf-8")
    assert "<script>alert(1)" not in page and "raised an exception" in page


def test_bad_options_are_a_usage_error(executed):
    nb, _, _ = executed
    # IPython reports a UsageError as one line on stderr (or as an error output), without a traceback
    shown = "".join(o.get("text", "") for o in nb.cells[4].outputs if o.output_type == "stream")
    shown += "".join(f"{o['ename']}: {o['evalue']}" for o in nb.cells[4].outputs if o.output_type == "error")
    assert "UsageError" in shown and "--bogus" in shown
    assert not _html_outputs(nb.cells[4])


def test_tfdiag_does_not_need_ipython():
    code = "import sys, tfdiag, tfdiag.jupyter; assert 'IPython' not in sys.modules, 'IPython imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
