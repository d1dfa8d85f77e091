"""pytest plugin (``pytest11`` entry point ``tfdiag``): diagnose tests, and fail those that break a budget.

- ``pytest --tfdiag[=DIR]`` runs each test's call inside ``tfdiag.diagnose()`` and writes a report
  (report.html, recording.json, profile.prof) for each test that fails or has a finding, under
  ``DIR/<test id>/`` (DIR defaults to ``tfdiag-report``).
- ``@pytest.mark.tfdiag(max_traces=N, max_memory_growth=MB)`` diagnoses that test even without
  ``--tfdiag`` and fails it when a user tf.function traced more than N times (as ``tfdiag analyze
  --fail-on-retrace N`` counts) or its ``memory-growth`` finding's steady-state slope is over MB
  per 1000 calls (else the steepest call site's, as ``--fail-on-memory-growth`` reads it); the
  failure message is the finding's title.
- The ``tfdiag`` fixture: the test's Diagnoser, which the test enters around what it wants
  diagnosed (``with tfdiag: ...``, then ``tfdiag.findings``). A test that takes it chooses its
  diagnosed part: the plugin does not wrap its call, and the marker's budgets and ``--tfdiag``'s
  report use the fixture's recording, so the same test works with and without ``--tfdiag``.

Inactive unless asked: without ``--tfdiag``, the marker or the fixture, a test costs one option and
one marker lookup; no capture is imported and nothing is installed (a test that takes the fixture
gets a Diagnoser, installed only while it is entered). A diagnosed test pays tfdiag's
capture for its call only (setup and fixtures are not diagnosed); the TF Profiler is left off, so
no test pays for starting it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re

import pytest

DEFAULT_DIR = "tfdiag-report"
BUDGETS = ("max_traces", "max_memory_growth")
_DIAGNOSER = pytest.StashKey[object]()
_WRITTEN = pytest.StashKey[dict]()  # config: test id -> report folder (one folder per test id)
_BREACH = pytest.StashKey[str]()  # item: why a test that passed fails (a broken budget, a misused marker)


def pytest_addoption(parser) -> None:
    group = parser.getgroup("tfdiag", "tfdiag: TensorFlow/Keras diagnostics")
    group.addoption("--tfdiag", nargs="?", const=DEFAULT_DIR, default=None, metavar="DIR", help=(
        "diagnose each test with tfdiag; write a report for each test that fails or has a finding "
        f"under DIR/<test id>/ (default DIR: {DEFAULT_DIR}; write --tfdiag=DIR)"))


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "tfdiag(max_traces=None, max_memory_growth=None): diagnose this test "
                            "with tfdiag; fail it when a user tf.function traced more than max_traces times, or "
                            "memory grew more than max_memory_growth MB per 1000 calls")
    out = config.getoption("tfdiag")
    if out is None:
        return
    if _misread_test_path(config, out):
        raise pytest.UsageError(f"--tfdiag {out}: that is a test path, read as the report folder; "
                                "write --tfdiag=DIR, or put --tfdiag after the test paths")
    config.stash[_WRITTEN] = {}


def _misread_test_path(config, out: str) -> bool:
    """``pytest --tfdiag tests/``: argparse takes the test path as DIR (an optional value)."""
    args = list(config.invocation_params.args)
    separate = any(a == "--tfdiag" and b == out for a, b in zip(args, args[1:]))
    if not separate:
        return False
    path = os.path.join(str(config.invocation_params.dir), out.split("::")[0])
    if "::" in out or out.endswith(".py"):
        return True
    return os.path.isdir(path) and any(re.fullmatch(r"(test_.*|.*_test)\.py|conftest\.py", name)
                                       for name in os.listdir(path))


def _diagnosed(item) -> bool:
    return item.config.getoption("tfdiag") is not None or item.get_closest_marker("tfdiag") is not None


def _diagnoser(item):
    """The test's Diagnoser, made once per test (by the fixture, or when its call starts)."""
    diagnoser = item.stash.get(_DIAGNOSER, None)
    if diagnoser is None:
        from .options import Options
        from .session import Diagnoser

        diagnoser = item.stash[_DIAGNOSER] = Diagnoser(None, options=Options(tf_profiler=False),
                                                       command=["pytest", item.nodeid])
    return diagnoser


def budgets(item) -> dict:
    """The marker's budgets (the closest marker's value for each); a misuse is a ValueError."""
    found: dict = {}
    for mark in item.iter_markers("tfdiag"):
        if mark.args:
            raise ValueError("@pytest.mark.tfdiag takes keyword arguments only: max_traces=N, max_memory_growth=MB")
        for key, value in mark.kwargs.items():
            found.setdefault(key, value)
    for key, value in found.items():
        if key not in BUDGETS:
            raise ValueError(f"@pytest.mark.tfdiag: unknown budget {key}= (known: {', '.join(BUDGETS)})")
        whole = key == "max_traces"
        if value is not None and (isinstance(value, bool) or not isinstance(value, int if whole else (int, float))
                                  or value < 0):
            kind = "a number of traces, 0 or more" if whole else "megabytes per 1000 calls, 0 or more"
            raise ValueError(f"@pytest.mark.tfdiag: {key} takes {kind} (got {value!r})")
    return {key: value for key, value in found.items() if value is not None}


def breach(recording, findings: list[dict], limits: dict) -> str | None:
    """The failure message for the first budget broken (the finding's title first), or None."""
    from .analysis import max_user_traces

    limit = limits.get("max_traces")
    if limit is not None:
        traces, name = max_user_traces(recording)
        if traces > limit:
            title = next((f.get("title") for f in findings if str(f.get("code", "")).startswith("retrace-")
                          and f.get("function") == name), None)
            return f"{title or f'`{name}` traced {traces} times'}\n(tfdiag: max_traces={limit}, `{name}` traced {traces} times)"
    limit = limits.get("max_memory_growth")
    if limit is not None:
        budget = f"(tfdiag: max_memory_growth={limit} MB per 1000 calls, grew {{:.3g}} MB per 1000 calls)"
        for finding in findings:  # the memory-growth finding's own slope; no memory readings, no breach
            slope = (finding.get("details") or {}).get("slope_mb_per_1000_calls") if finding.get("code") == "memory-growth" else None
            if isinstance(slope, (int, float)) and not isinstance(slope, bool) and slope > limit:
                return f"{finding.get('title')}\n{budget.format(slope)}"
        from .analysis.memory import max_growth

        slope, where = max_growth(recording)  # as --fail-on-memory-growth: a slope under the finding's threshold
        if slope > limit:
            return f"memory grows {slope:.3g} MB per 1000 calls after warm-up at {where}\n{budget.format(slope)}"
    return None


# Old-style wrappers (any pluggy): a broken budget turns the call's passing report into a failure
# (makereport below) rather than raising from a wrapper.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    chooses = "tfdiag" in getattr(item, "fixturenames", ())  # the test enters its diagnoser itself
    if not (chooses or _diagnosed(item)):
        yield
        return
    try:
        limits = budgets(item)
    except ValueError as exc:  # a misused marker: the test runs undiagnosed and fails with this line
        item.stash[_BREACH] = str(exc)
        yield
        return
    diagnoser = _diagnoser(item)
    with contextlib.ExitStack() as around:
        if not chooses:
            around.enter_context(diagnoser)
        outcome = yield
        if not chooses and outcome.excinfo is not None:  # the recording's ``run`` says how the test ended
            from .runner import outcome_of

            diagnoser.outcome = outcome_of(outcome.excinfo[1])
        try:
            around.close()  # the diagnosis ends here: capture removed, recording analysed
        except Exception as exc:  # tfdiag's own failure: the test's result stands
            item.warn(pytest.PytestWarning(f"tfdiag could not finish this test's diagnosis: "
                                           f"{exc.__class__.__name__}: {exc}"))
            return
    if outcome.excinfo is not None:
        if not issubclass(outcome.excinfo[0], (KeyboardInterrupt, pytest.skip.Exception)):
            _keep_report(item, diagnoser, failed=True)
        return
    if diagnoser.recording is None:  # took the fixture, never entered it
        if limits:
            item.stash[_BREACH] = ("@pytest.mark.tfdiag: this test takes the tfdiag fixture, so its budgets apply "
                                   "to what it runs inside `with tfdiag:`, and it never entered it")
        return
    message = breach(diagnoser.recording, diagnoser.findings, limits)
    _keep_report(item, diagnoser, failed=message is not None)
    if message is not None:
        if item.config.getoption("tfdiag") is None:
            message += "; run pytest with --tfdiag=DIR for the report"
        item.stash[_BREACH] = message


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    message = item.stash.get(_BREACH, None)
    if message is not None and call.when == "call":
        report = outcome.get_result()
        if report.passed:
            report.outcome, report.longrepr = "failed", message


def pytest_runtest_teardown(item) -> None:
    if _DIAGNOSER in item.stash:  # a session keeps its items: not every test's recording with them
        del item.stash[_DIAGNOSER]


def folder_name(nodeid: str) -> str:
    """A test id as one folder name: ``tests/test_a.py::test_b[x-1]`` -> ``tests_test_a.py_test_b_x-1``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", nodeid).strip("._") or "test"
    if len(name) > 120:
        name = f"{name[:100]}-{hashlib.sha1(nodeid.encode()).hexdigest()[:10]}"
    return name


def _keep_report(item, diagnoser, failed: bool) -> None:
    """Under --tfdiag, write the report of a test that failed or has a finding."""
    out = item.config.getoption("tfdiag")
    written = item.config.stash.get(_WRITTEN, None)
    if out is None or written is None or diagnoser.recording is None or not (failed or diagnoser.findings):
        return
    taken = {path for nodeid, path in written.items() if nodeid != item.nodeid}
    base = folder = os.path.join(str(item.config.invocation_params.dir), out, folder_name(item.nodeid))
    n = 1
    while folder in taken:  # two ids that read the same once made a folder name
        n += 1
        folder = f"{base}-{n}"
    try:
        files = diagnoser.write(folder)
    except Exception as exc:  # tfdiag's own failure: never the test's, and never hiding its failure
        item.warn(pytest.PytestWarning(f"tfdiag could not write the report to {folder}: "
                                       f"{exc.__class__.__name__}: {exc}"))
        return
    written[item.nodeid] = folder
    item.user_properties.append(("tfdiag_report", files["report"]))
    item.add_report_section("call", "tfdiag", f"report: {files['report']}\n")


@pytest.fixture
def tfdiag(request):
    """The test's Diagnoser, to enter around what it wants diagnosed (``with tfdiag: ...``), then
    ``tfdiag.findings``; the marker's budgets and ``--tfdiag``'s report use what it recorded."""
    return _diagnoser(request.node)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    written = config.stash.get(_WRITTEN, None)
    if written is None:
        return
    terminalreporter.write_sep("-", "tfdiag")
    if not written:
        terminalreporter.write_line("no test failed or had a finding: no report written")
    for nodeid, folder in written.items():
        terminalreporter.write_line(f"{nodeid}: {os.path.join(folder, 'report.html')}")
