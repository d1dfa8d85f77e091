"""``tfdiag analyze -m MODULE`` and ``-c CODE``, taken as python takes them: argv, sys.path[0],
``__main__``'s globals, exit statuses, ``--``, and call sites in the module's (or ``<string>``'s) lines."""

import sys
import textwrap
import uuid

import pytest

from tfdiag import cli
from tfdiag.recording import load

OFF = ["--no-cprofile", "--no-tf-profiler"]  # the profilers are tested elsewhere; these runs stay short


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package in a fresh working folder, with a unique name (sys.modules forgets it afterwards)."""
    name = f"entry_pkg_{uuid.uuid4().hex[:8]}"
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    yield name, folder
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def _write(path, body: str) -> str:
    path.write_text(textwrap.dedent(body))
    return str(path)


@pytest.mark.tf
def test_m_runs_a_packages_main_as_python_does_and_keeps_its_exit_status(package, tmp_path):
    name, folder = package
    _write(folder / "steps.py", """
        import tensorflow as tf

        @tf.function
        def step(x):
            return x * 2
    """)
    main = _write(folder / "__main__.py", f"""
        import os, sys
        import tensorflow as tf
        from . import steps  # a relative import: __package__ is set
        assert __name__ == "__main__" and __spec__.name == "{name}.__main__", (__name__, __spec__)
        assert sys.argv == [__file__, "--flag", "-o", "x", "--", "y"], sys.argv
        assert sys.path[0] == os.getcwd()
        for n in (1, 2, 3):
            steps.step(tf.ones([n]))
        sys.exit(5)
    """)
    out = tmp_path / "out"
    args = ["-m", name, "--flag", "-o", "x", "--", "y"]  # what follows the module is the module's, -o included
    assert cli.main(["analyze", *OFF, "-o", str(out), *args]) == 5
    assert not (tmp_path / "x").exists()
    recording = load(out / "recording.json")
    assert recording.run["ended_by"] == "sys.exit" and recording.run["exit_status"] == 5
    assert recording.environment["command"] == ["tfdiag", "analyze", *args]
    step = next(f for f in recording.functions if f["name"] == "step")
    assert step["origin"] == "user" and step["trace_count"] == 3
    calls = [c for c in recording.calls if c["target"] == "step"]
    assert calls and all(c["call_site"] == f"{main}:9" for c in calls)
    retrace = next(f for f in recording.findings if f["code"] == "retrace-shape")
    assert retrace["function"] == "step" and retrace["call_site"].startswith(main)


@pytest.mark.tf
def test_c_runs_code_records_its_call_site_and_keeps_the_gate(tmp_path, capsys):
    code = textwrap.dedent("""
        import sys
        import tensorflow as tf
        assert sys.argv == ["-c", "a"] and "__file__" not in globals(), sys.argv

        @tf.function
        def bump(x):
            return x + 1
        for n in (1, 2, 3):
            bump(tf.ones([n]))
    """)
    out = tmp_path / "out"
    assert cli.main(["analyze", *OFF, "--fail-on-retrace", "1", "-o", str(out), "-c", code, "a"]) == 3
    assert "--fail-on-retrace 1: `bump` traced 3 times" in capsys.readouterr().err
    recording = load(out / "recording.json")
    assert recording.run["exit_status"] == 0
    bump = next(f for f in recording.functions if f["name"] == "bump")
    assert bump["origin"] == "user" and bump["trace_count"] == 3
    assert {c["call_site"] for c in recording.calls if c["target"] == "bump"} == {"<string>:10"}
    retrace = next(f for f in recording.findings if f["code"] == "retrace-shape")
    assert retrace["call_site"] == "<string>:10"
    assert "&lt;string&gt;:10" in (out / "report.html").read_text()


def _no_main(name, folder):
    return ["-m", name], "is a package and cannot be directly executed"


def _syntax_error_module(name, folder):
    (folder / "broken.py").write_text("def broken(:\n    pass\n")
    return ["-m", f"{name}.broken"], "broken.py:1: syntax error"


@pytest.mark.parametrize("make", [
    lambda name, folder: (["-m", f"{name}_absent"], f"No module named {name}_absent"),
    lambda name, folder: (["-m", f"{name}.absent"], f"No module named {name}.absent"),
    _no_main,
    _syntax_error_module,
    lambda name, folder: (["-c", "def (:"], "-c:1: syntax error"),
    lambda name, folder: (["-m"], "-m: give the name of a module"),
    lambda name, folder: (["-c"], "-c: give the code to run"),
    lambda name, folder: ([], "name a program to run: SCRIPT, -m MODULE or -c CODE"),
])
def test_what_cannot_be_run_is_one_line_and_exit_2(package, tmp_path, capsys, make):
    args, message = make(*package)
    assert cli.main(["analyze", *OFF, "-o", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o" / "recording.json").exists()


def test_an_exception_in_the_module_or_its_package_is_the_programs_own(package, tmp_path, capsys):
    name, folder = package
    _write(folder / "__main__.py", "raise ValueError('bad shape in main')\n")
    assert cli.main(["analyze", *OFF, "-o", str(tmp_path / "o"), "-m", name]) == 1
    err = capsys.readouterr().err
    assert "ValueError: bad shape in main" in err and "runner.py" not in err
    assert load(tmp_path / "o" / "recording.json").run["exception"] == "ValueError: bad shape in main"
    # The package's __init__ runs as the module is found: its failure is the user's (1), not a usage error.
    (folder / "inner").mkdir()
    _write(folder / "inner" / "__init__.py", "raise RuntimeError('package init failed')\n")
    _write(folder / "inner" / "sub.py", "")
    assert cli.main(["analyze", *OFF, "-o", str(tmp_path / "o2"), "-m", f"{name}.inner.sub"]) == 1
    assert "RuntimeError: package init failed" in capsys.readouterr().err


@pytest.mark.parametrize("words, argv", [
    (["-o", "{out}", "--", "{script}", "--x"], ["--x"]),  # before the program, -- ends tfdiag's options
    (["-o", "{out}", "{script}", "--", "--x"], ["--", "--x"]),  # after it, -- is the program's
    (["-o", "{out}", "{script}", "-m", "x"], ["-m", "x"]),  # -m after the script is the script's
    (["-o", "{out}", "-c", "{code}", "--", "-o"], ["--", "-o"]),
])
def test_dashes_and_options_after_the_program_are_the_programs(tmp_path, capsys, words, argv):
    check = f"import sys; print('ARGV', sys.argv[1:]); assert sys.argv[1:] == {argv!r}"
    script = _write(tmp_path / "s.py", check + "\n")
    fill = {"out": str(tmp_path / "out"), "script": script, "code": check}
    assert cli.main(["analyze", *OFF, *[w.format(**fill) for w in words]]) == 0
    assert f"ARGV {argv!r}" in capsys.readouterr().out
    assert (tmp_path / "out" / "recording.json").exists()


@pytest.mark.parametrize("argv, program, out", [
    (["analyze", "-mpkg", "-o", "x"], ("-m", ["pkg", "-o", "x"]), "tfdiag-report"),
    (["analyze", "-cimport sys", "-o", "x", "a"], ("-c", ["import sys", "-o", "x", "a"]), "tfdiag-report"),
    (["analyze", "-o", "d", "-mpkg", "--flag"], ("-m", ["pkg", "--flag"]), "d"),
    (["analyze", "s.py", "-mfoo"], (None, ["s.py", "-mfoo"]), "tfdiag-report"),
])
def test_a_joined_m_or_c_keeps_what_follows_for_the_program(argv, program, out):
    """``-mNAME`` and ``-cCODE`` in one word, as python takes them: the options after them are
    the program's, not tfdiag's (argparse alone would give them to tfdiag)."""
    args = cli._parse(cli._parser(), argv)
    assert args.program == program and args.out == out
