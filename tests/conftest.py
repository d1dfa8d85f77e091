"""Shared fixtures. Every test checks that no tfdiag hook is left installed after it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def no_hooks_left_behind():
    from tfdiag.capture import memory, patching

    import gc
    import signal
    import threading
    import tracemalloc

    assert patching.installed() == [], "a tfdiag hook was live before the test"

    def ours():  # other libraries (hypothesis) add gc callbacks of their own
        return [cb for cb in gc.callbacks if str(getattr(cb, "__module__", "")).startswith("tfdiag")]

    assert ours() == [], "a tfdiag gc callback was live before the test"
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    environ = {name: os.environ.get(name) for name in ("TFDIAG_CHILD", "PYTHONPATH")}
    tracing = tracemalloc.is_tracing()
    yield
    for thread in threading.enumerate():  # a cancelled timer ends at once; one closing the window soon
        if thread.name == memory.TIMER_NAME:
            thread.join(5)
    assert not any(t.name == memory.TIMER_NAME for t in threading.enumerate()), "a memory window timer outlived the test"
    assert tracing or not tracemalloc.is_tracing(), "tracemalloc was left tracing after the test"
    assert {name: os.environ.get(name) for name in environ} == environ, "an environment variable was left changed"
    assert patching.installed() == [], "a tfdiag hook was left installed after the test"
    assert ours() == [], "a tfdiag gc callback was left installed after the test"
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers, "a signal handler was left changed"


def run_tfdiag(*args: str, env_extra: dict | None = None, cwd: str | None = None, timeout: int = 300):
    """Run ``python -m tfdiag ARGS`` in a fresh process (needed for TF_USE_LEGACY_KERAS)."""
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "tfdiag", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)
