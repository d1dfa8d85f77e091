"""--verify: measure the fixes on the user's own model and functions, after their code has run.

While the code runs, three keepers (``keepers.py``, ``fit_keeper.py``, the only hooks of verify,
all observers of capture's call wrappers) keep each model's last input, each trained model's
first batches and fit() settings, and the inputs that made each user tf.function trace. After
the capture hooks are removed, ``Verifier.run`` re-runs each retracing function with a
generated input_signature (``retrace_checks.py``), times training what-ifs on clones of each
trained model (``training.py``, ``input_paths.py``) and each model's call paths (``paths.py``,
``measure.py``) within one budget. The result is the recording's ``alternatives`` and
``retrace_checks`` sections;
which path to recommend is decided by ``tfdiag.analysis.alternatives``.
"""

from __future__ import annotations

import time
from typing import Callable

from . import measure, retrace_checks, training
from .fit_keeper import FitKeeper
from .keepers import FunctionKeeper, InputKeeper
from .measure import DEFAULT_BUDGET_S, measure_alternatives

RETRACE_CHECK_SHARE = 0.25  # the retrace-fix checks may use this share of the budget; the paths get the rest
TRAINING_SHARE = 0.5  # of what is left, the share for trained models when models were also called for inference

__all__ = ["DEFAULT_BUDGET_S", "RETRACE_CHECK_SHARE", "Verifier", "measure_alternatives"]


class Verifier:
    """Keeps what it needs while the user's code runs (``install``), measures afterwards (``run``)."""

    def __init__(self, budget_s: float = DEFAULT_BUDGET_S, warn: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.budget_s = budget_s
        self.warn = warn if warn is not None else (lambda message: None)
        self.clock = clock
        self.inputs = InputKeeper()
        self.functions = FunctionKeeper()
        self.fits = FitKeeper()

    def install(self, keras_capture, function_capture) -> None:
        """Observe the Keras calls ``keras_capture`` times and the user tf.function calls
        ``function_capture`` sees (before either capture installs); verify patches nothing."""
        keras_capture.observers.append(self.inputs)
        keras_capture.observers.append(self.fits)  # fit() and train_on_batch(), where capture times them
        function_capture.observe(self.functions)

    def run(self, interrupted: bool) -> dict:
        """``{"alternatives": [...], "retrace_checks": [...]}``; call it after the hooks are removed.
        The keepers forget their models and inputs whatever happens."""
        sections: dict = {"alternatives": [], "retrace_checks": []}
        models, functions, fitted = self.inputs.take(), self.functions.take(), self.fits.take()
        if interrupted:
            self.warn("--verify skipped: the run was interrupted")
            return sections
        self._say_what_is_left_out()
        start = self.clock()
        try:
            retrace_checks.check_all(functions, self.budget_s * RETRACE_CHECK_SHARE, self.clock,
                                     into=sections["retrace_checks"])
            remaining = max(0.0, self.budget_s - (self.clock() - start))
            if fitted:
                share = remaining * TRAINING_SHARE if models else remaining
                training.measure_fitted(fitted, share, self.clock, into=sections["alternatives"])
                remaining = max(0.0, self.budget_s - (self.clock() - start))
            measure.measure_all(models, remaining, self.clock, into=sections["alternatives"])
        except KeyboardInterrupt:  # Ctrl-C during verification: keep what was measured
            self.warn("--verify interrupted (Ctrl-C): what was not measured is missing")
        except Exception as exc:  # verification must never cost the user the report
            self.warn(f"--verify failed: {exc.__class__.__name__}: {exc}")
        return sections

    def _say_what_is_left_out(self) -> None:
        keeper = self.inputs
        for table, done in ((keeper.models, "called"), (self.fits.models, "trained")):
            if table.dropped:
                self.warn(f"--verify kept the last {table.max_models} models {done}; not measured: "
                          + ", ".join(sorted(set(table.dropped))[:8]))
        if keeper.training:
            self.warn("--verify times inference paths only; not measured for the calls in a training loop "
                      "(training=True or under a GradientTape) of: " + ", ".join(sorted(keeper.training)[:8]))
