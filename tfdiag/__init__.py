"""tfdiag: where TensorFlow/Keras inference time goes, why each trace happened, what to change.

Importing the package loads only the Recording; ``diagnose`` (capture) and ``measure_alternatives``
(verify) load on first use, so loading and rendering a saved recording never imports capture,
verify or TensorFlow.
"""

from __future__ import annotations

import importlib

from ._version import __version__
from .recording import Recording, RecordingError, load

# Public names that live in heavier modules, imported when first asked for.
_LAZY = {
    "Diagnoser": ".session",
    "DiagnoseError": ".session",
    "diagnose": ".session",
    "measure_alternatives": ".verify",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tfdiag' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def render(recording: Recording, path: str) -> str:
    """Analyse a recording (pure, no TensorFlow) and write its HTML report to ``path``."""
    from .analysis import analyze
    from .output import write_report

    return write_report(analyze(recording), path)


def load_ipython_extension(ipython) -> None:
    """``%load_ext tfdiag`` in Jupyter/IPython: adds the ``%%tfdiag`` cell magic (see tfdiag.jupyter)."""
    from .jupyter import load_ipython_extension as load_extension

    load_extension(ipython)


__all__ = ["Diagnoser", "DiagnoseError", "Recording", "RecordingError", "diagnose", "load", "measure_alternatives",
           "render", "__version__"]
