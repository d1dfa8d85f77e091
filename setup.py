"""The one compiled part: the timed-call wrapper's common case (tfdiag/capture/_hotpath.c).

Optional: where it cannot be built (no compiler, no Python headers), tfdiag installs and runs
without it, its pure-Python wrapper doing the same work (tfdiag/capture/timed_calls.py).
Everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("tfdiag.capture._hotpath", ["tfdiag/capture/_hotpath.c"], optional=True)])
