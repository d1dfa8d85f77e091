"""The house, from the source: tfdiag's imports form layers with no circle and no upward import,
analysis and rendering stay clear of TensorFlow and capture, and re-rendering a saved recording
loads neither."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import DATA, ROOT

PACKAGE = ROOT / "tfdiag"
GOLDEN = DATA / "golden_recording.json"

# Lower layers never import higher ones; two parts on one layer never import each other.
LAYERS = [
    ("tfdiag._version", "tfdiag.recording", "tfdiag.options", "tfdiag.runner", "tfdiag.commands_common",
     "tfdiag.growth"),
    ("tfdiag.capture", "tfdiag.analysis"),  # capture never analyses; analysis never captures
    ("tfdiag.verify", "tfdiag.renderers"),
    ("tfdiag.output", "tfdiag.remote"),
    ("tfdiag.session",),
    # each command's handlers, which cli.py dispatches to
    ("tfdiag.commands_analyze", "tfdiag.commands_compare", "tfdiag.commands_workers"),
    ("tfdiag.cli", "tfdiag.jupyter", "tfdiag.pytest_plugin", "tfdiag._boot"),
    ("tfdiag", "tfdiag.__main__"),
]
PURE = ("tfdiag.analysis", "tfdiag.renderers")
NEVER_IN_PURE = ("tensorflow", "keras", "tf_keras", "tfdiag.capture", "tfdiag.verify", "tfdiag.session",
                 "tfdiag.output", "tfdiag.jupyter", "tfdiag.cli")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("tfdiag",) + path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, anywhere in its body (function-level imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            for alias in node.names:  # ``from . import x``: the submodule x when there is one
                sub = f"{module}.{alias.name}"
                out.add(sub if sub in MODULES else module)
    return out


GRAPH = {name: {m for m in _imports(name, path) if m != name} for name, path in MODULES.items()}


def _part(module: str) -> tuple[int, str]:
    """(layer, part) of a tfdiag module: the longest listed prefix names its part."""
    best = None
    for rank, parts in enumerate(LAYERS):
        for part in parts:
            if (module == part or module.startswith(part + ".")) and (best is None or len(part) > len(best[1])):
                best = (rank, part)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best


def test_every_module_has_a_layer_and_the_walk_sees_the_package():
    assert {"tfdiag.session", "tfdiag.output", "tfdiag.analysis", "tfdiag.renderers.html"} <= set(MODULES)
    for name in MODULES:
        _part(name)
    assert "tfdiag.analysis.phases" in GRAPH["tfdiag.analysis"]  # relative imports are resolved
    assert "tfdiag.recording" in GRAPH["tfdiag.analysis"]


def test_no_import_circle():
    index, low, stack, on_stack, circles = {}, {}, [], set(), []
    counter = [0]
    local = {name: {m for m in deps if m in MODULES} for name, deps in GRAPH.items()}

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in local[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in local:
        if v not in index:
            visit(v)
    assert circles == []


def test_no_upward_import():
    wrong = []
    for name, deps in GRAPH.items():
        rank, part = _part(name)
        for dep in deps:
            if dep not in MODULES:
                continue
            dep_rank, dep_part = _part(dep)
            if dep_part != part and dep_rank >= rank:
                wrong.append(f"{name} -> {dep}")
    assert wrong == []


def test_analysis_and_renderers_import_no_tensorflow_capture_verify_session_or_root():
    wrong = []
    for name, deps in GRAPH.items():
        if not name.startswith(PURE):
            continue
        for dep in deps:
            if dep == "tfdiag" or dep.split(".")[0] in NEVER_IN_PURE or dep.startswith(NEVER_IN_PURE):
                wrong.append(f"{name} -> {dep}")
    assert wrong == []


def test_the_layer_check_catches_a_bad_import(tmp_path):
    """The walk is not vacuous: an upward import in analysis would be seen."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ..session import Diagnoser\n    import tensorflow as tf\n")
    seen = _imports("tfdiag.analysis.bad", bad)
    assert {"tfdiag.session", "tensorflow"} <= seen


RERENDER = """
import sys
{how}
loaded = sorted(m for m in sys.modules
                if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")
                or m.startswith(("tfdiag.capture", "tfdiag.verify", "tfdiag.session")))
assert not loaded, loaded
"""


@pytest.mark.parametrize("how", [
    "import tfdiag\ntfdiag.render(tfdiag.load({golden!r}), {out!r})",
    "from tfdiag import cli\nassert cli.main(['report', {golden!r}, '-o', {folder!r}]) == 0",
], ids=["tfdiag.render", "tfdiag report"])
def test_rerendering_a_saved_recording_loads_no_capture_verify_or_tensorflow(tmp_path, how):
    out = tmp_path / "report.html"
    code = RERENDER.format(how=how.format(golden=str(GOLDEN), out=str(out), folder=str(tmp_path)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.stat().st_size > 10_000


def test_the_package_still_offers_diagnose_lazily():
    code = ("import sys, tfdiag\n"
            "assert 'tfdiag.session' not in sys.modules\n"
            "assert callable(tfdiag.diagnose) and tfdiag.DiagnoseError.__module__ == 'tfdiag.session'\n"
            "assert 'diagnose' in dir(tfdiag)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_templates_read_the_analysis_and_the_renderers_constants_only():
    """No template reaches past the Analysis into the recording: the only data they name is ``a``
    (the Analysis), the chart laid out from it, and the renderer's own constants."""
    import jinja2
    from jinja2 import meta

    from tfdiag.renderers import html

    env = html.environment()
    allowed = {"a", "timeline", "phases", "phase_colors", "version", "max_row_s", "limits", "copy_script",
               "script_hash"}
    # The pages of their own read their own view the same way: the diff (``d``, with its bars laid
    # out and the renderer's wording of a change), the merged workers (``m``, the command).
    own_view = {"diff.html.j2": {"d", "bars", "describe"}, "merge.html.j2": {"m", "command"}}
    names = sorted(p.name for p in html.templates_dir().glob("*.j2"))
    assert "report.html.j2" in names and "_profilers.html.j2" in names
    for name in names:
        source = env.loader.get_source(env, name)[0]
        tree = env.parse(source)
        assigned = {node.target.name for node in tree.find_all(jinja2.nodes.Assign)
                    if isinstance(node.target, jinja2.nodes.Name)}
        used = meta.find_undeclared_variables(tree) - assigned  # set inside an {% if %} counts as set
        assert used <= allowed | own_view.get(name, set()), (name, sorted(used - allowed))
    with_recording = env.parse("{{ r.calls }}{{ recording.run }}")
    assert meta.find_undeclared_variables(with_recording) - allowed == {"r", "recording"}  # the check can fail
    assert isinstance(env.undefined, type) and issubclass(env.undefined, jinja2.StrictUndefined)


# -- verify observes capture; it patches nothing --------------------------------------------
PATCHING_CALLS = ("patch", "when_imported", "toggle")


def _patching_calls(source: str) -> list[int]:
    """Lines of ``source`` that install a patch or an import hook (``x.patch(...)`` and the like)."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in PATCHING_CALLS]


def test_verify_installs_no_patch_of_its_own():
    found = {path.name: _patching_calls(path.read_text(encoding="utf-8"))
             for path in sorted((PACKAGE / "verify").glob("*.py"))}
    assert "keepers.py" in found and all(lines == [] for lines in found.values()), found
    assert _patching_calls("patcher.patch(module.Function, '__call__', wrap)\n") == [1]  # the check can fail


def _live_patches() -> list[tuple[str, str]]:
    from tfdiag.capture import patching

    return sorted(("sys.meta_path", "import hook") if owner is sys.meta_path else
                  (getattr(owner, "__name__", type(owner).__name__), name) for owner, name in patching.installed())


@pytest.mark.tf
def test_with_verify_function_call_is_patched_once_and_its_keeper_still_keeps_traced_inputs():
    import tensorflow as tf

    import tfdiag

    live = {}
    for verify in (False, True):
        @tf.function
        def double(x):
            return x * 2

        budget = {"verify": True, "verify_budget": 2.0} if verify else {}
        with tfdiag.diagnose(cprofile=False, tf_profiler=False, **budget) as d:
            live[verify] = _live_patches()
            for n in (2, 2, 3, 4):
                double(tf.ones((n,)))
    assert live[True] == live[False] and live[True].count(("Function", "__call__")) == 1
    checks = d.recording.extra["retrace_checks"]
    assert [(c["function"], c["traces_before"], c["inputs"], c["traces_after"]) for c in checks] == [
        ("double", 3, 3, 1)]


@pytest.mark.tf
def test_function_call_observers_hear_each_user_call_and_whether_it_traced():
    import tensorflow as tf
    from tensorflow.python.eager.polymorphic_function import polymorphic_function

    from tfdiag.capture.collector import Collector
    from tfdiag.capture.function_calls import FunctionCallCapture
    from tfdiag.capture.patching import Patcher
    from tfdiag.capture.phase_tracker import PhaseTracker
    from tfdiag.capture.call_log import CallLog

    original = polymorphic_function.Function.__call__

    @tf.function
    def plus_one(x):
        return x + 1

    def installed(*observers):
        collector = Collector()
        capture = FunctionCallCapture(collector, PhaseTracker(), CallLog(collector))
        for observer in observers:
            capture.observe(observer)
        patcher = Patcher()
        capture.install(patcher)
        return capture, patcher

    capture, patcher = installed()
    try:  # no observer: the patched __call__ is the timed wrapper alone, nothing more per call
        assert polymorphic_function.Function.__call__.__wrapped__ is original
    finally:
        patcher.restore()
    heard = []
    capture, patcher = installed(lambda fn, args, kwargs, traced: heard.append((fn, args[0].shape[0], traced)),
                                 lambda *_: 1 / 0)
    try:
        assert polymorphic_function.Function.__call__.__wrapped__.__wrapped__ is original
        with pytest.raises(RuntimeError, match="before the capture is installed"):
            capture.observe(print)
        for n in (2, 2, 3):
            plus_one(tf.ones((n,)))
    finally:
        patcher.restore()
    assert heard == [(plus_one, 2, True), (plus_one, 2, False), (plus_one, 3, True)]
    assert capture.collector.warnings == {"tf.function call observer failed: ZeroDivisionError: division by zero": 3}


def test_the_analysis_names_the_recorded_alternatives_entries_for_what_they_are():
    import dataclasses

    from tfdiag.analysis import Analysis, analyze
    from tfdiag.recording import Recording

    fields = {f.name for f in dataclasses.fields(Analysis)}
    assert "recommended" not in fields and {"alternatives", "alternative_entries"} <= fields
    assert analyze(Recording()).alternative_entries is None and "alternatives" not in analyze(Recording()).recorded()
    verified = analyze(Recording(extra={"alternatives": []}))
    assert verified.alternative_entries == [] and verified.recorded()["alternatives"] == []
