"""Timing the paths: round-robin rounds on the user's model and input, outputs compared against
the user's own path, one entry per path (DESIGN.md's ``alternatives``).

It only measures: which path to recommend is decided by ``tfdiag.analysis.alternatives``. It
runs after the user's code and outside the capture hooks, so its calls and traces never enter
the recording, and it leaves the model as it found it (``paths.ModelState``).
"""

from __future__ import annotations

import gc
import time
import warnings
from typing import Callable

from ..analysis.alternatives import CALL_PATHS, TFDATA_PATH, USER_APIS
from ..analysis.input_bound import LARGE_BATCH
from ..capture.patching import capture_installed
from ..options import VERIFY_BUDGET_S as DEFAULT_BUDGET_S  # the default, defined once
from . import paths as path_builders
from . import specs
from .specs import Unsupported

RTOL = 1e-3  # outputs within ATOL + RTOL * max|reference| count as the same
ATOL = 1e-5
MAX_ROUNDS = 2000
SETUP_SHARE = 0.6  # no path starts its setup after this share of the budget is spent
_SIGNED_PATHS = ("tf.function", "tf.function_xla", "litert")  # paths run through a generated signature


def failed_entry(target: str, path: str, error: str | None, user_path: str | None = None) -> dict:
    return {"target": target, "path": path, "user_path": user_path or path, "median_s": None,
            "speedup": None, "first_s": None, "max_abs_diff": None, "equivalent": False,
            "recommended": False, "calls": 0, "error": error}


def default_paths(user_path: str, spec) -> list[str]:
    """Every call path; for a large-batch predict(x), also predict on a prebuilt tf.data input."""
    wanted = list(CALL_PATHS)
    batch = specs.leading_dim(spec) if spec is not None else None
    if user_path == "predict" and batch is not None and batch >= LARGE_BATCH:
        wanted.append(TFDATA_PATH)
    return wanted


def measure_all(seen: list, budget_s: float, clock: Callable[[], float], into: list | None = None) -> list[dict]:
    """Measure each kept model (``keepers.Seen``, most called first) within one total budget;
    entries go into ``into`` as they are made (kept when interrupted)."""
    entries: list[dict] = [] if into is None else into
    start = clock()
    for position, model in enumerate(seen):
        share = (budget_s - (clock() - start)) / (len(seen) - position)
        if model.last_input is None:
            entries.append(failed_entry(model.target, model.user_path(),
                                        f"not measured: {model.unsupported or 'no replayable input seen'}"))
            continue
        if share <= 0:
            entries.append(failed_entry(model.target, model.user_path(),
                                        "not measured: the --verify budget was spent on other models"))
            continue
        entries.extend(measure_alternatives(
            model.model, model.last_input, user_path=model.user_path(), budget_s=share, spec=model.spec,
            target=model.target, call_site=model.call_site, batch_size=model.batch_size, clock=clock))
    return entries


def measure_alternatives(model, x, *, user_path: str = "predict", budget_s: float = DEFAULT_BUDGET_S,
                         paths: tuple[str, ...] | list[str] | None = None, spec=None, target: str | None = None,
                         call_site: str = "", batch_size: int | None = None, rtol: float = RTOL,
                         atol: float = ATOL, max_rounds: int = MAX_ROUNDS,
                         clock: Callable[[], float] = time.perf_counter) -> list[dict]:
    """Time each call path on ``model`` and ``x``; one entry per path.

    ``spec`` is the input spec observed over the user's calls (``None`` where dimensions
    varied); by default it is taken from ``x``. ``batch_size`` is the user's predict() batch
    size (for the tf.data path). Paths that cannot run say why in ``error``. Call it outside
    ``tfdiag.diagnose()``: inside, its calls would be recorded as the user's.
    """
    if capture_installed():
        warnings.warn("tfdiag.measure_alternatives() inside tfdiag.diagnose(): its calls are recorded as "
                      "yours; call it after the diagnose() block (or use diagnose(verify=True))", stacklevel=2)
    start = clock()
    name = target or str(getattr(model, "name", type(model).__name__))
    if user_path not in USER_APIS:
        raise ValueError(f"user_path must be one of {', '.join(USER_APIS)}, not {user_path!r}")
    try:
        own, why = specs.input_spec(x), None
    except Unsupported as exc:
        own, why = None, exc
    wanted = list(paths) if paths is not None else default_paths(user_path, own)
    order = [user_path] + [p for p in wanted if p != user_path]
    if own is None:
        return [failed_entry(name, p, f"not measured: {why}", user_path) for p in order]
    spec = spec if spec is not None else own
    signature = specs.signature_of(spec)
    state = path_builders.ModelState(model)
    entries: dict[str, dict] = {}
    runners: dict[str, Callable] = {}
    samples: dict[str, list] = {}
    reference = None
    try:
        for path in order:
            entry = entries[path] = failed_entry(name, path, None, user_path)
            if call_site:
                entry["call_site"] = call_site
            if path in _SIGNED_PATHS:
                entry["input_signature"] = specs.describe_spec(signature)
                entry["signature"] = signature
            if path == TFDATA_PATH:
                entry["batch_size"] = batch_size or path_builders.DEFAULT_PREDICT_BATCH
            if clock() - start > budget_s * SETUP_SHARE:
                entry["error"] = f"skipped: the time budget ({budget_s:.1f} s) ran out before this path"
                continue
            try:
                began = clock()
                run = path_builders.build(path, model, x, spec, batch_size)
                out = outputs(run())
                entry["first_s"] = clock() - began
            except Unsupported as exc:
                entry["error"] = f"skipped: {exc}"
                continue
            except Exception as exc:  # a path that fails on this model is a result, not a crash
                entry["error"] = f"failed: {exc.__class__.__name__}: {path_builders.short_error(exc)}"
                continue
            if path == user_path:
                reference = out
            if reference is None:
                entry["error"] = "no reference outputs: your own path failed"
            else:
                _compare_into(entry, reference, out, rtol, atol)
            runners[path] = run
            samples[path] = []
        _timed_rounds(runners, samples, start, budget_s, max_rounds, clock)
    finally:
        restored = state.restore()
    _summarise(entries, samples, user_path)
    if restored:
        for entry in entries.values():
            entry["restored_attributes"] = sorted(set(restored))
    return [entries[p] for p in order]


def _compare_into(entry: dict, reference: list, out: list, rtol: float, atol: float) -> None:
    diff, why = compare(reference, out)
    tolerance = atol + rtol * scale(reference)
    entry["max_abs_diff"] = diff
    entry["tolerance"] = tolerance
    entry["equivalent"] = diff is not None and diff <= tolerance
    if why:
        entry["error"] = f"outputs not comparable: {why}"


def _timed_rounds(runners: dict, samples: dict, start: float, budget_s: float, max_rounds: int,
                  clock: Callable[[], float]) -> None:
    """Round-robin: each round calls every path once, starting one path later each round."""
    names = list(runners)
    if not names:
        return
    gc.collect()
    last_round = 0.0
    for number in range(max_rounds):
        if number and clock() - start + last_round > budget_s:
            break
        began = clock()
        for i in range(len(names)):
            path = names[(number + i) % len(names)]
            run = runners[path]
            if run is None:
                continue
            t0 = clock()
            try:
                run()
            except Exception as exc:  # a path that breaks mid-way stops being timed
                runners[path] = None
                samples[path].append(exc)
                continue
            samples[path].append(clock() - t0)
        last_round = clock() - began


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _summarise(entries: dict, samples: dict, user_path: str) -> None:
    for path, entry in entries.items():
        values = samples.get(path) or []
        failures = [v for v in values if isinstance(v, BaseException)]
        times = [v for v in values if not isinstance(v, BaseException)]
        if failures and not entry["error"]:
            exc = failures[0]
            entry["error"] = (f"failed after {len(times)} calls: {exc.__class__.__name__}: "
                              f"{path_builders.short_error(exc)}")
            entry["equivalent"] = False
        entry["calls"] = len(times)
        if times:
            entry["median_s"] = _median(times)
        elif entry["first_s"] is not None and not entry["error"]:
            entry["median_s"] = entry["first_s"]  # no time for a timed round: the first call is all we have
            entry["note"] = "only the first call could be timed"
    base = entries.get(user_path, {}).get("median_s")
    for entry in entries.values():
        if base and entry["median_s"]:
            entry["speedup"] = base / entry["median_s"]


# -- comparing outputs -----------------------------------------------------------------
def outputs(value) -> list:
    """Flat list of NumPy arrays, whatever structure the path returned."""
    import numpy as np

    return [np.asarray(leaf) for leaf in specs.input_leaves(value)]


def compare(reference: list, out: list) -> tuple[float | None, str | None]:
    """Largest absolute difference between two flat output lists, or (None, why not)."""
    import numpy as np

    if len(reference) != len(out):
        return None, f"{len(out)} outputs instead of {len(reference)}"
    worst = 0.0
    for a, b in zip(reference, out):
        if a.shape != b.shape:
            return None, f"output shape {list(b.shape)} instead of {list(a.shape)}"
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            a64 = a.astype(np.float64)
            b64 = b.astype(np.float64)
            same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
            with np.errstate(invalid="ignore"):
                diff = np.where(same, 0.0, np.abs(a64 - b64))
            if not np.all(np.isfinite(diff)):
                return None, "outputs differ in NaN/inf positions"
        elif a.dtype.kind in "biu" and b.dtype.kind in "biu":
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        else:
            diff = np.zeros(1) if np.array_equal(a, b) else np.ones(1) * np.inf
            if not np.all(np.isfinite(diff)):
                return None, "non-numeric outputs differ"
        if diff.size:
            worst = max(worst, float(diff.max()))
    return worst, None


def scale(reference: list) -> float:
    """The largest finite magnitude among the reference outputs (the relative tolerance's base)."""
    import numpy as np

    largest = 0.0
    for a in reference:
        if a.dtype.kind in "fciu" and a.size:
            finite = np.abs(a[np.isfinite(a)]) if a.dtype.kind in "fc" else np.abs(a)
            if finite.size:
                largest = max(largest, float(finite.max()))
    return largest
