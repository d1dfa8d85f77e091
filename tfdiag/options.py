"""What a run of tfdiag was asked to do, checked once for every way of asking.

``tfdiag analyze``, the ``%%tfdiag`` cell magic and ``tfdiag.diagnose(...)`` all build one
:class:`Options` and pass it through :func:`validate`; a misuse is an :class:`OptionsError`
whose message names the option as the caller spelled it (``--phase-every`` on the command
line and in the magic, ``phase_every`` in Python). ``None`` means "the default of the part
that uses it" (the sampler's, cProfile's, the TF Profiler's, --verify's); those defaults are
defined here, once each, so the help can state them without importing the parts.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass


# The defaults, one place each: the parts that use them import them from here.
CPROFILE_CALLS = 8  # cProfile: calls profiled at most (capture/cprofile.py)
TF_PROFILER_CALLS = 3  # the TF Profiler's window (capture/tf_profiler.py) ...
TF_PROFILER_FIRST_CALL = 3  # ... from this call on
PHASE_EVERY = 32  # after the first calls, the full phase split on one call in this many (capture/sampling.py)
PHASE_FIRST_CALLS = 5  # unprofiled calls after each call site's first one that are always sampled
VERIFY_BUDGET_S = 20.0  # --verify's time budget over all models (verify/measure.py)


class OptionsError(ValueError):
    """Options that cannot be used together or out of range (the message is one line)."""


@dataclass(frozen=True)
class Options:
    timing: bool = True  # False: record tf.function traces only (no call timing, phases or profilers)
    cprofile: bool = True
    cprofile_calls: int | None = None
    tf_profiler: bool = True
    tf_profiler_calls: int | None = None
    phase_every: int | None = None  # after each model's first calls, the full split on one call in N
    verify: bool = False
    verify_budget: float | None = None
    follow: bool = True  # follow Python child processes (capture/processes.py); --no-follow
    profiler_port: int | None = None  # serve TensorFlow's profiler on this port (capture/worker.py)
    memory: bool = True  # memory at sampled calls (capture/memory.py); --no-memory. Needs call timing.

    @property
    def profiles(self) -> tuple[bool, bool]:
        """Whether cProfile and the TF Profiler run: neither without call timing."""
        return (self.cprofile and self.timing,
                self.tf_profiler and self.timing and self.tf_profiler_calls != 0)


# How each option is spelled on the command line, where it differs from ``--name-with-dashes``.
_FLAGS = {"timing": "--traces-only", "cprofile": "--no-cprofile", "tf_profiler": "--no-tf-profiler",
          "follow": "--no-follow", "memory": "--no-memory"}
_PYTHON = {"timing": "timing=False", "verify": "verify=True", "follow": "follow"}


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(options: Options, flags: bool = False) -> Options:
    """``options`` if they can be used; else OptionsError. ``flags``: name them as command-line flags."""

    def name(field: str) -> str:
        if flags:
            return _FLAGS.get(field, "--" + field.replace("_", "-"))
        return _PYTHON.get(field, field)

    if not options.timing:
        for field in ("verify", "phase_every"):
            if getattr(options, field) not in (None, False):
                raise OptionsError(f"{name(field)} needs call timing; it cannot be combined with {name('timing')}")
    for field in ("memory", "follow"):
        if not isinstance(getattr(options, field), bool):
            raise OptionsError(f"{name(field)} takes True or False (got {getattr(options, field)!r})")
    every = options.phase_every
    if every is not None and (not _whole(every) or every < 1):
        raise OptionsError(f"{name('phase_every')} takes a number of calls, 1 or more (got {every!r})")
    for field in ("cprofile_calls", "tf_profiler_calls"):
        calls = getattr(options, field)
        if calls is not None and (not _whole(calls) or calls < 0):
            raise OptionsError(f"{name(field)} takes a number of calls, 0 or more (got {calls!r})")
    port = options.profiler_port
    if port is not None and (not _whole(port) or not 0 < port < 65536):
        raise OptionsError(f"{name('profiler_port')} takes a TCP port, 1 to 65535 (got {port!r})")
    budget = options.verify_budget
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
            raise OptionsError(f"{name('verify_budget')} takes a number of seconds, more than 0 (got {budget!r})")
        if not options.verify:
            raise OptionsError(f"{name('verify_budget')} only applies with {name('verify')}")
    return options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The capture options, the same for ``tfdiag analyze`` and ``%%tfdiag``."""
    parser.add_argument("--no-cprofile", action="store_true", help="do not run cProfile on sampled calls")
    parser.add_argument("--cprofile-calls", type=int, default=None, metavar="N",
                        help=f"how many calls cProfile samples at most (default: {CPROFILE_CALLS})")
    parser.add_argument("--no-tf-profiler", action="store_true",
                        help="do not run the TF Profiler (no tensorboard/ folder)")
    parser.add_argument("--tf-profiler-calls", type=int, default=None, metavar="N",
                        help=f"how many calls the TF Profiler window covers, from call {TF_PROFILER_FIRST_CALL} "
                             f"(default: {TF_PROFILER_CALLS})")
    parser.add_argument("--phase-every", type=int, default=None, metavar="N",
                        help=f"after each call site's first call and the {PHASE_FIRST_CALLS} unprofiled calls after it, "
                             f"measure the full phase split on one call in N at random (default: {PHASE_EVERY}, and fewer "
                             f"at call sites whose calls take under about 1.6 ms; 1: every call, at more cost per call)")
    parser.add_argument("--verify", action="store_true",
                        help="after the code, time predict, predict_on_batch, model(x), tf.function, XLA "
                             "and LiteRT on each model's own input, and recommend what was measured")
    parser.add_argument("--verify-budget", type=float, default=None, metavar="SECONDS",
                        help=f"time budget for --verify over all models (default: {VERIFY_BUDGET_S:g})")
    parser.add_argument("--traces-only", action="store_true",
                        help="record tf.function traces only (no call timing, phases or profilers): "
                             "the cheapest capture, e.g. for a --fail-on-retrace gate in CI")
    parser.add_argument("--no-follow", action="store_true",
                        help="do not diagnose Python child processes (multiprocessing, subprocess); by default each "
                             "writes its recording under DIR/processes/ and the report lists them")
    parser.add_argument("--profiler-port", type=int, default=None, metavar="P",
                        help="start TensorFlow's profiler server on port P once TensorFlow is imported, for "
                             "`tfdiag capture grpc://HOST:P` (it serves until the process ends)")
    parser.add_argument("--no-memory", action="store_true",
                        help="do not read memory at sampled calls (resident size, traces, models and tf.data "
                             "iterators alive; for the memory-growth finding and --fail-on-memory-growth)")


def from_arguments(args: argparse.Namespace) -> Options:
    """Checked Options from a namespace parsed with :func:`add_arguments` (OptionsError if misused)."""
    return validate(Options(
        timing=not args.traces_only, cprofile=not args.no_cprofile, cprofile_calls=args.cprofile_calls,
        tf_profiler=not args.no_tf_profiler, tf_profiler_calls=args.tf_profiler_calls,
        phase_every=args.phase_every, verify=args.verify, verify_budget=args.verify_budget,
        profiler_port=args.profiler_port, follow=not args.no_follow, memory=not args.no_memory), flags=True)


def from_keywords(given: dict) -> Options:
    """Checked Options from ``diagnose(**given)`` (TypeError for an unknown keyword, as Python would)."""
    known = {f.name for f in dataclasses.fields(Options)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(f"diagnose() got an unexpected keyword argument {unknown[0]!r}")
    return validate(Options(**given))
