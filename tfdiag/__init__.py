"""tfdiag: where TensorFlow/Keras inference time goes, why each trace happened, what to change."""

from __future__ import annotations

__version__ = "0.1.0"

from .recording import Recording, RecordingError, load  # noqa: E402
from .session import Diagnoser, DiagnoseError, diagnose  # noqa: E402
from .capture.whatif import measure_alternatives  # noqa: E402


def render(recording: Recording, path: str) -> str:
    """Analyse a recording (pure, no TensorFlow) and write its HTML report to ``path``."""
    from .analysis import analyze
    from .renderers.html import write_report

    return write_report(recording, analyze(recording), path)


def load_ipython_extension(ipython) -> None:
    """``%load_ext tfdiag`` in Jupyter/IPython: adds the ``%%tfdiag`` cell magic (see tfdiag.jupyter)."""
    from .jupyter import load_ipython_extension as load

    load(ipython)


__all__ = ["Diagnoser", "DiagnoseError", "Recording", "RecordingError", "diagnose", "load", "measure_alternatives",
           "render", "__version__"]
