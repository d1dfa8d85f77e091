"""The top-level templates/ ship inside the wheel and load from an installed copy."""

import os
import subprocess
import sys
import zipfile

from .conftest import ROOT


def test_wheel_contains_templates_and_they_load_when_installed(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("tfdiag-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "tfdiag/templates/report.html.j2" in names
    assert "tfdiag/templates/report.css.j2" in names

    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr
    code = (
        "import tfdiag, tfdiag.renderers.html as h\n"
        f"assert tfdiag.__file__.startswith({str(target)!r}), tfdiag.__file__\n"
        f"assert str(h.templates_dir()).startswith({str(target)!r}), h.templates_dir()\n"
        f"r = tfdiag.load({str(ROOT / 'tests' / 'data' / 'golden_recording.json')!r})\n"
        f"print(tfdiag.render(r, {str(tmp_path / 'report.html')!r}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    run = subprocess.run([sys.executable, "-c", code],
                         capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "report.html").read_text().count("retrace-shape") >= 1
