"""What-if timing: the alternative call paths, timed on the user's own model and input.

Folklore advice ("use model(x)") is wrong on some Keras versions, so tfdiag measures
before it recommends. ``measure_alternatives`` times ``predict``, ``predict_on_batch``,
``model(x, training=False)``, a ``tf.function`` with a generated ``input_signature``, the
same with XLA and (optionally) LiteRT on the same input, interleaved round-robin so that
drift hits every path alike. It only measures: which path to recommend is decided by
``tfdiag.analysis.alternatives`` from these entries.

It runs after the user's code and outside the capture hooks (the Diagnoser calls it after
uninstalling them), so its calls and traces never enter the recording. It leaves the model
as it found it: no compile, no weight change, and attributes Keras sets while predicting
(``predict_function``, ``history``, counters) are put back.
"""

from __future__ import annotations

import gc
import threading
import time
import warnings
from collections import OrderedDict
from typing import Callable

PATHS = ("predict", "predict_on_batch", "__call__", "tf.function", "tf.function_xla", "litert")
USER_APIS = ("predict", "predict_on_batch", "__call__")
DEFAULT_BUDGET_S = 20.0
RTOL = 1e-3  # outputs within ATOL + RTOL * max|reference| count as the same
ATOL = 1e-5
MAX_MODELS = 8  # models kept for verification (least recently called dropped first)
MIN_CALLS_TO_MEASURE = 2
MAX_ROUNDS = 2000
SETUP_SHARE = 0.6  # no path starts its setup after this share of the budget is spent
_RESTORED_COUNTERS = ("_predict_counter",)


class _Unsupported(Exception):
    """A path that cannot run on this model or input (the message says why)."""


# -- input description ------------------------------------------------------------------
def _leaf_spec(leaf) -> dict | None:
    shape = getattr(leaf, "shape", None)
    dtype = getattr(leaf, "dtype", None)
    if shape is None or dtype is None:
        return None
    try:
        dims = [None if d is None else int(d) for d in tuple(shape)]
    except TypeError:
        return None
    return {"shape": dims, "dtype": str(getattr(dtype, "name", dtype))}


def input_spec(x):
    """The JSON-able spec of a model input: ``{"shape": [...], "dtype": ...}`` per leaf,
    nested in lists/dicts as the input is. Raises _Unsupported for inputs with no shape."""
    import tensorflow as tf

    leaves = tf.nest.flatten(x)
    specs = []
    for leaf in leaves:
        spec = _leaf_spec(leaf)
        if spec is None:
            raise _Unsupported(f"input of type {type(leaf).__name__} has no shape/dtype")
        specs.append(spec)
    return tf.nest.pack_sequence_as(x, specs) if not _is_leaf(x) else specs[0]


def _is_leaf(x) -> bool:
    return not isinstance(x, (list, tuple, dict))


def merge_specs(old, new):
    """Dimensions that differ between two specs of the same structure become None."""
    if _skeleton(old) != _skeleton(new):
        return new
    old_leaves = _spec_leaves(old)
    new_leaves = _spec_leaves(new)
    merged = []
    for a, b in zip(old_leaves, new_leaves):
        if a["dtype"] != b["dtype"] or len(a["shape"]) != len(b["shape"]):
            return new
        merged.append({"shape": [p if p == q else None for p, q in zip(a["shape"], b["shape"])],
                       "dtype": b["dtype"]})
    return _pack_specs(new, merged)


def _skeleton(spec):
    if isinstance(spec, dict) and set(spec) == {"shape", "dtype"}:
        return None
    if isinstance(spec, dict):
        return {key: _skeleton(value) for key, value in spec.items()}
    return [_skeleton(item) for item in spec]


def _spec_leaves(spec) -> list[dict]:
    if isinstance(spec, dict) and set(spec) == {"shape", "dtype"}:
        return [spec]
    if isinstance(spec, dict):
        return [leaf for key in sorted(spec) for leaf in _spec_leaves(spec[key])]
    return [leaf for item in spec for leaf in _spec_leaves(item)]


def _pack_specs(structure, leaves: list):
    it = iter(leaves)

    def pack(node):
        if isinstance(node, dict) and set(node) == {"shape", "dtype"}:
            return next(it)
        if isinstance(node, dict):
            return {key: pack(node[key]) for key in sorted(node)}
        return [pack(item) for item in node]

    return pack(structure)


def signature_of(spec):
    """The input_signature spec: batch dimension None, other dimensions as observed."""
    leaves = [{"shape": ([None] + leaf["shape"][1:]) if leaf["shape"] else [], "dtype": leaf["dtype"]}
              for leaf in _spec_leaves(spec)]
    return _pack_specs(spec, leaves)


def describe_spec(spec) -> str:
    leaves = _spec_leaves(spec)
    text = ", ".join(f"{leaf['dtype']}[{', '.join('None' if d is None else str(d) for d in leaf['shape'])}]"
                     for leaf in leaves)
    return text if len(leaves) == 1 and not isinstance(spec, (list, tuple)) else f"[{text}]"


def _tensor_specs(spec, names: bool = False):
    import tensorflow as tf

    counter = iter(range(10_000))

    def make(leaf):
        name = f"input_{next(counter)}" if names else None
        return tf.TensorSpec(leaf["shape"], tf.as_dtype(leaf["dtype"]), name=name)

    def walk(node):
        if isinstance(node, dict) and set(node) == {"shape", "dtype"}:
            return make(node)
        if isinstance(node, dict):
            return {key: walk(node[key]) for key in sorted(node)}
        return [walk(item) for item in node]

    return walk(spec)


def _eager_input(x) -> tuple[bool, str | None]:
    """(usable, why-not): only concrete arrays/eager tensors can be replayed later."""
    import numpy as np
    import tensorflow as tf

    if not tf.executing_eagerly():
        return False, None  # a call made while tracing: symbolic, ignored silently
    try:
        leaves = tf.nest.flatten(x)
    except (TypeError, ValueError) as exc:
        return False, f"input structure not understood ({exc})"
    if not leaves:
        return False, "no input"
    for leaf in leaves:
        if isinstance(leaf, np.ndarray):
            continue
        if isinstance(leaf, tf.Tensor) and hasattr(leaf, "numpy"):
            continue
        kind = type(leaf).__name__
        if "KerasTensor" in kind or isinstance(leaf, tf.Tensor):
            return False, None  # symbolic (building a functional model): not a real call
        return False, f"input is a {kind}, which cannot be replayed (only arrays and tensors can)"
    return True, None


# -- what the Diagnoser keeps while the user's code runs -------------------------------
class _Seen:
    __slots__ = ("model", "target", "counts", "call_site", "last_input", "spec", "unsupported", "order")

    def __init__(self, model, target: str) -> None:
        self.model = model
        self.target = target
        self.counts: dict[str, int] = {}
        self.call_site = ""
        self.last_input = None
        self.spec = None
        self.unsupported: str | None = None
        self.order = 0

    def user_path(self) -> str:
        return max(USER_APIS, key=lambda api: (self.counts.get(api, 0), -USER_APIS.index(api)))


class InputKeeper:
    """A KerasCallCapture observer: per model, the APIs used, the last input and the shapes seen.

    It holds strong references to at most MAX_MODELS models (the least recently called
    ones are dropped): the diagnosed script's globals may be gone by the time verification
    runs after it, and a weak reference would then measure nothing. One input per model
    is kept, so memory stays bounded.
    """

    def __init__(self, max_models: int = MAX_MODELS) -> None:
        self.max_models = max_models
        self._lock = threading.Lock()
        self._seen: OrderedDict[int, _Seen] = OrderedDict()
        self._order = 0
        self.dropped: list[str] = []

    def __call__(self, api: str, model, args, kwargs) -> None:
        x = args[0] if args else kwargs.get("x", kwargs.get("inputs"))
        usable, why = _eager_input(x)
        if not usable and why is None:
            return
        spec = None
        if usable:
            try:
                spec = input_spec(x)
            except _Unsupported as exc:
                usable, why = False, str(exc)
        from . import callsite

        site = callsite.user_call_site(3)
        with self._lock:
            key = id(model)
            seen = self._seen.get(key)
            if seen is None or seen.model is not model:
                seen = _Seen(model, str(getattr(model, "name", type(model).__name__)))
                self._seen[key] = seen
                while len(self._seen) > self.max_models:
                    _, old = self._seen.popitem(last=False)
                    self.dropped.append(old.target)
            self._seen.move_to_end(key)
            self._order += 1
            seen.order = self._order
            seen.counts[api] = seen.counts.get(api, 0) + 1
            if api == seen.user_path():
                seen.call_site = site
            if usable:
                seen.last_input = x
                seen.spec = spec if seen.spec is None else merge_specs(seen.spec, spec)
                seen.unsupported = None
            elif seen.last_input is None:
                seen.unsupported = why

    def models(self) -> list[_Seen]:
        """Models worth measuring, most called first."""
        with self._lock:
            seen = list(self._seen.values())
        seen = [s for s in seen if sum(s.counts.values()) >= MIN_CALLS_TO_MEASURE]
        seen.sort(key=lambda s: (-sum(s.counts.values()), s.order))
        return seen

    def measure_all(self, budget_s: float = DEFAULT_BUDGET_S, warn: Callable[[str], None] | None = None,
                    clock: Callable[[], float] = time.perf_counter) -> list[dict]:
        """Measure every kept model within one total budget; then forget the models and inputs."""
        entries: list[dict] = []
        start = clock()
        models = self.models()
        if self.dropped and warn is not None:
            warn(f"--verify kept the last {self.max_models} models called; not measured: "
                 + ", ".join(sorted(set(self.dropped))[:8]))
        try:
            for position, seen in enumerate(models):
                remaining = budget_s - (clock() - start)
                share = remaining / (len(models) - position)
                if seen.last_input is None:
                    entries.append(_failed_entry(seen.target, seen.user_path(),
                                                 f"not measured: {seen.unsupported or 'no replayable input seen'}"))
                    continue
                if share <= 0:
                    entries.append(_failed_entry(seen.target, seen.user_path(),
                                                 "not measured: the --verify budget was spent on other models"))
                    continue
                entries.extend(measure_alternatives(
                    seen.model, seen.last_input, user_path=seen.user_path(), budget_s=share,
                    spec=seen.spec, target=seen.target, call_site=seen.call_site, clock=clock))
        except KeyboardInterrupt:  # Ctrl-C during verification: keep what was measured
            if warn is not None:
                warn("--verify interrupted (Ctrl-C): only the models measured before it are reported")
        finally:
            with self._lock:
                self._seen.clear()
        return entries


def _failed_entry(target: str, path: str, error: str, user_path: str | None = None) -> dict:
    return {"target": target, "path": path, "user_path": user_path or path, "median_s": None,
            "speedup": None, "first_s": None, "max_abs_diff": None, "equivalent": False,
            "recommended": False, "calls": 0, "error": error}


# -- building each path ----------------------------------------------------------------
def _outputs(value) -> list:
    """Flat list of NumPy arrays, whatever structure the path returned."""
    import numpy as np
    import tensorflow as tf

    return [np.asarray(leaf) for leaf in tf.nest.flatten(value)]


def _build(path: str, model, x, spec) -> Callable[[], object]:
    """A zero-argument callable running ``path`` once on ``x`` and returning its raw output."""
    import tensorflow as tf

    if path == "predict":
        return lambda: model.predict(x, verbose=0)
    if path == "predict_on_batch":
        return lambda: model.predict_on_batch(x)
    if path == "__call__":
        return lambda: model(x, training=False)
    if path in ("tf.function", "tf.function_xla"):
        signature = [_tensor_specs(signature_of(spec))]
        serve = tf.function(lambda inputs: model(inputs, training=False), input_signature=signature,
                            jit_compile=path == "tf.function_xla")
        return lambda: serve(x)
    if path == "litert":
        return _build_litert(model, x, spec)
    raise _Unsupported(f"unknown path {path!r}")


def _build_litert(model, x, spec) -> Callable[[], object]:
    """Convert through a concrete function (variables tracked by a tf.Module, so they are
    frozen into the flatbuffer) and run it with ai-edge-litert's Interpreter."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise _Unsupported("ai-edge-litert is not installed (pip install 'tfdiag[litert]')") from None
    import numpy as np
    import tensorflow as tf

    structure = spec
    flat_specs = tf.nest.flatten(_tensor_specs(signature_of(spec), names=True))

    def flat_call(*flat):
        return tuple(tf.nest.flatten(model(_pack_specs(structure, list(flat)), training=False)))

    serve = tf.function(flat_call, input_signature=flat_specs)
    holder = tf.Module()
    holder.serve = serve
    holder.weights_ = [v if isinstance(v, tf.Variable) else getattr(v, "value", v) for v in model.variables]
    try:
        flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], holder).convert()
    except Exception as exc:  # the converter rejects many ops: report why, time the rest
        raise _Unsupported(f"LiteRT conversion failed: {exc.__class__.__name__}: {_short(exc)}") from None
    # Tensor indices by signature name (input_0, output_0, ...), read from a throwaway
    # interpreter: a signature runner keeps references that forbid resizing the one we time.
    runner = Interpreter(model_content=flatbuffer).get_signature_runner()
    inputs = sorted(runner.get_input_details().items(), key=lambda kv: _suffix(kv[0]))
    outputs = sorted(runner.get_output_details().items(), key=lambda kv: _suffix(kv[0]))
    del runner
    interpreter = Interpreter(model_content=flatbuffer)
    leaves = [np.asarray(leaf, dtype=leaf_spec["dtype"]) for leaf, leaf_spec in zip(tf.nest.flatten(x), _spec_leaves(spec))]
    if len(inputs) != len(leaves):
        raise _Unsupported(f"LiteRT model has {len(inputs)} inputs, the input has {len(leaves)}")
    for (_, detail), leaf in zip(inputs, leaves):
        interpreter.resize_tensor_input(detail["index"], leaf.shape)
    interpreter.allocate_tensors()
    in_index = [detail["index"] for _, detail in inputs]
    out_index = [detail["index"] for _, detail in outputs]

    def run():
        for index, leaf in zip(in_index, leaves):
            interpreter.set_tensor(index, leaf)
        interpreter.invoke()
        return [interpreter.get_tensor(index) for index in out_index]

    return run


def _suffix(name: str) -> int:
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "…"


# -- comparing outputs -----------------------------------------------------------------
def compare(reference: list, outputs: list) -> tuple[float | None, str | None]:
    """Largest absolute difference between two flat output lists, or (None, why not)."""
    import numpy as np

    if len(reference) != len(outputs):
        return None, f"{len(outputs)} outputs instead of {len(reference)}"
    worst = 0.0
    for a, b in zip(reference, outputs):
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


def _scale(reference: list) -> float:
    import numpy as np

    scale = 0.0
    for a in reference:
        if a.dtype.kind in "fciu" and a.size:
            finite = np.abs(a[np.isfinite(a)]) if a.dtype.kind in "fc" else np.abs(a)
            if finite.size:
                scale = max(scale, float(finite.max()))
    return scale


# -- keeping the model as it was --------------------------------------------------------
class _ModelState:
    """Attributes and counters Keras changes while predicting, to put back afterwards."""

    def __init__(self, model) -> None:
        self.model = model
        self.attrs = dict(vars(model)) if hasattr(model, "__dict__") else {}
        self.counters = {}
        for name in _RESTORED_COUNTERS:
            counter = self.attrs.get(name)
            if counter is not None and hasattr(counter, "assign") and hasattr(counter, "numpy"):
                self.counters[name] = counter.numpy()

    def restore(self) -> list[str]:
        """Put the model back; returns the attribute names that had to be restored."""
        restored = []
        now = vars(self.model) if hasattr(self.model, "__dict__") else {}
        for name in [k for k in list(now) if k not in self.attrs]:
            restored.append(name)
            try:
                delattr(self.model, name)
            except AttributeError:
                object.__delattr__(self.model, name)
        for name, value in self.attrs.items():
            if name not in now or now[name] is not value:
                restored.append(name)
                try:
                    setattr(self.model, name, value)
                except (AttributeError, TypeError, ValueError):
                    object.__setattr__(self.model, name, value)
        for name, value in self.counters.items():
            self.attrs[name].assign(value)
        return restored


# -- the measurement -------------------------------------------------------------------
def measure_alternatives(model, x, *, user_path: str = "predict", budget_s: float = DEFAULT_BUDGET_S,
                         paths: tuple[str, ...] | list[str] | None = None, spec=None, target: str | None = None,
                         call_site: str = "", rtol: float = RTOL, atol: float = ATOL,
                         max_rounds: int = MAX_ROUNDS,
                         clock: Callable[[], float] = time.perf_counter) -> list[dict]:
    """Time each call path on ``model`` and ``x``; one entry per path (DESIGN.md's ``alternatives``).

    ``spec`` is the input spec observed over the user's calls (``None`` where dimensions
    varied); by default it is taken from ``x``. Paths that cannot run say why in ``error``.
    Call it outside ``tfdiag.diagnose()``: inside, its calls would be recorded as the user's.
    """
    from .. import session

    if session._ACTIVE:  # pylint: disable=protected-access
        warnings.warn("tfdiag.measure_alternatives() inside tfdiag.diagnose(): its calls are recorded as "
                      "yours; call it after the diagnose() block (or use diagnose(verify=True))", stacklevel=2)
    start = clock()
    name = target or str(getattr(model, "name", type(model).__name__))
    wanted = list(paths) if paths is not None else list(PATHS)
    if user_path not in USER_APIS:
        raise ValueError(f"user_path must be one of {', '.join(USER_APIS)}, not {user_path!r}")
    order = [user_path] + [p for p in wanted if p != user_path]
    try:
        spec = spec if spec is not None else input_spec(x)
    except _Unsupported as exc:
        return [_failed_entry(name, p, f"not measured: {exc}", user_path) for p in order]
    signature_text = describe_spec(signature_of(spec))
    state = _ModelState(model)
    entries: dict[str, dict] = {}
    runners: dict[str, Callable] = {}
    samples: dict[str, list[float]] = {}
    reference = None
    try:
        for path in order:
            entry = {"target": name, "path": path, "user_path": user_path, "median_s": None, "speedup": None,
                     "first_s": None, "max_abs_diff": None, "equivalent": False, "recommended": False,
                     "calls": 0, "error": None}
            if call_site:
                entry["call_site"] = call_site
            if path in ("tf.function", "tf.function_xla", "litert"):
                entry["input_signature"] = signature_text
                entry["signature"] = signature_of(spec)
            entries[path] = entry
            if clock() - start > budget_s * SETUP_SHARE:
                entry["error"] = f"skipped: the time budget ({budget_s:.1f} s) ran out before this path"
                continue
            try:
                began = clock()
                run = _build(path, model, x, spec)
                out = _outputs(run())
                entry["first_s"] = clock() - began
            except _Unsupported as exc:
                entry["error"] = f"skipped: {exc}"
                continue
            except Exception as exc:  # a path that fails on this model is a result, not a crash
                entry["error"] = f"failed: {exc.__class__.__name__}: {_short(exc)}"
                continue
            if path == user_path:
                reference = out
            if reference is None:
                entry["error"] = "no reference outputs: your own path failed"
            else:
                diff, why = compare(reference, out)
                tolerance = atol + rtol * _scale(reference)
                entry["max_abs_diff"] = diff
                entry["tolerance"] = tolerance
                entry["equivalent"] = diff is not None and diff <= tolerance
                if why:
                    entry["error"] = f"outputs not comparable: {why}"
            runners[path] = run
            samples[path] = []
        _timed_rounds(runners, samples, start, budget_s, max_rounds, clock)
    finally:
        restored = state.restore()
    _summarise(entries, samples, user_path)
    if restored:
        for entry in entries.values():
            entry["restored_attributes"] = sorted(set(restored))
    return [entries[p] for p in order if p in entries]


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
            entry["error"] = f"failed after {len(times)} calls: {exc.__class__.__name__}: {_short(exc)}"
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


# -- retrace fixes, verified -------------------------------------------------------------
FUNCTION_MODULE = "tensorflow.python.eager.polymorphic_function.polymorphic_function"
MAX_FUNCTIONS = 16  # user tf.functions whose trace-triggering inputs are kept
MAX_INPUTS = 8  # inputs kept per function (the first ones that made it trace)
# Stateful ops that only read: re-running a function made of these changes nothing.
_READ_ONLY_STATEFUL = frozenset({
    "ReadVariableOp", "VarHandleOp", "VarIsInitializedOp", "StatefulPartitionedCall", "PartitionedCall",
    "If", "While", "Case", "StatelessIf", "StatelessWhile", "NoOp", "Placeholder", "Const", "Identity",
    "DestroyResourceOp",
})


class _Traced:
    __slots__ = ("function", "name", "defined_at", "inputs", "traces", "unsupported")

    def __init__(self, function, name: str, defined_at: str) -> None:
        self.function = function
        self.name = name
        self.defined_at = defined_at
        self.inputs: list[tuple] = []
        self.traces = 0
        self.unsupported: str | None = None


class FunctionKeeper:
    """Keeps, per user tf.function, the inputs of the calls that traced it (bounded), so that
    --verify can re-run it with a generated input_signature after the run."""

    def __init__(self, max_functions: int = MAX_FUNCTIONS, max_inputs: int = MAX_INPUTS) -> None:
        self.max_functions = max_functions
        self.max_inputs = max_inputs
        self._lock = threading.Lock()
        self._kept: dict[int, _Traced] = {}
        self._user_code: dict[int, tuple | None] = {}
        self.warn: Callable[[str], None] | None = None

    def install(self, patcher, warn: Callable[[str], None] | None = None) -> None:
        self.warn = warn
        patcher.when_imported(FUNCTION_MODULE, lambda m: self._guarded(patcher, m))

    def _guarded(self, patcher, module) -> None:
        try:
            patcher.patch(module.Function, "__call__", self._wrap)
        except Exception as exc:  # TF internals differ: --verify then skips retrace checks
            if self.warn is not None:
                self.warn(f"--verify cannot keep tf.function inputs: {exc.__class__.__name__}: {exc}")

    def _user_site(self, function) -> tuple | None:
        """(name, defined_at) for a user function, None for TF/Keras/tfdiag ones (cached per code)."""
        import inspect

        from . import callsite

        python_function = getattr(function, "_python_function", None)
        try:
            python_function = inspect.unwrap(python_function)
        except ValueError:
            pass
        code = getattr(python_function, "__code__", None)
        if code is None:
            return None
        cached = self._user_code.get(id(code))
        if cached is None or cached[0] is not code:  # an id is only valid while its code object lives
            cached = self._user_code[id(code)] = (code, None if callsite.is_library_file(code.co_filename)
                                                  else (str(getattr(function, "_name", code.co_name)),
                                                        callsite.code_site(code)))
        return cached[1]

    def _wrap(self, original):
        keeper = self

        def __call__(function, *args, **kwargs):
            try:
                before = len(function._function_cache)  # pylint: disable=protected-access
            except (AttributeError, TypeError):
                return original(function, *args, **kwargs)
            result = original(function, *args, **kwargs)
            try:
                if len(function._function_cache) > before:  # pylint: disable=protected-access
                    keeper._note(function, args, kwargs)
            except Exception as exc:  # never break the user's call
                if keeper.warn is not None:
                    keeper.warn(f"--verify could not keep a tf.function input: {exc.__class__.__name__}: {exc}")
            return result

        __call__.__wrapped__ = original
        return __call__

    def _note(self, function, args, kwargs) -> None:
        site = self._user_site(function)
        if site is None:
            return
        import tensorflow as tf

        if not tf.executing_eagerly():
            return  # called from inside another trace: symbolic inputs cannot be replayed
        with self._lock:
            kept = self._kept.get(id(function))
            if kept is None or kept.function is not function:
                if len(self._kept) >= self.max_functions:
                    return
                kept = self._kept[id(function)] = _Traced(function, *site)
            kept.traces += 1
            if kept.unsupported:
                return
            if kwargs:
                kept.unsupported = "called with keyword arguments"
            elif not all(_replayable(a) for a in args):
                kept.unsupported = ("an argument is not a tensor or array (a Python value or object is "
                                    "part of the trace key; the finding's fix is to pass a tensor)")
            elif len(kept.inputs) < self.max_inputs:
                kept.inputs.append(tuple(args))

    def verify_all(self, budget_s: float, clock: Callable[[], float] = time.perf_counter) -> list[dict]:
        """For each function that traced more than once: one trace with the generated signature?"""
        start = clock()
        with self._lock:
            kept = [k for k in self._kept.values() if k.traces >= 2]
            self._kept.clear()
        checks = []
        for traced in kept:
            if clock() - start > budget_s:
                checks.append(_check_entry(traced, error="skipped: the --verify budget was spent"))
                continue
            checks.append(verify_retrace_fix(traced))
        return checks


def _replayable(value) -> bool:
    import numpy as np
    import tensorflow as tf

    return isinstance(value, np.ndarray) or (isinstance(value, tf.Tensor) and hasattr(value, "numpy"))


def _check_entry(traced: _Traced, **fields) -> dict:
    entry = {"function": traced.name, "defined_at": traced.defined_at, "fix": "input_signature",
             "input_signature": None, "inputs": len(traced.inputs), "traces_before": traced.traces,
             "traces_after": None, "max_abs_diff": None, "equivalent": False, "error": None}
    entry.update(fields)
    return entry


def _function_signature(inputs: list[tuple]):
    """Per positional argument: dims that varied become None, a rank that varied makes the
    shape unknown; a dtype that varied cannot be fixed by a signature (None returned)."""
    specs = []
    for position in range(len(inputs[0])):
        leaves = [_leaf_spec(args[position]) for args in inputs]
        dtypes = {leaf["dtype"] for leaf in leaves}
        if len(dtypes) > 1:
            return None
        ranks = {len(leaf["shape"]) for leaf in leaves}
        if len(ranks) > 1:
            specs.append({"shape": None, "dtype": leaves[0]["dtype"]})
            continue
        shape = leaves[0]["shape"]
        for leaf in leaves[1:]:
            shape = [a if a == b else None for a, b in zip(shape, leaf["shape"])]
        specs.append({"shape": shape, "dtype": leaves[0]["dtype"]})
    return specs


def _writes_state(concrete) -> list[str]:
    """Op types in the function (and the functions it calls) that change state when run."""
    from tensorflow.python.framework import op_def_registry

    graph_def = concrete.graph.as_graph_def()
    library = {f.signature.name for f in graph_def.library.function}
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    writers = set()
    for node in nodes:
        if node.op in library or node.op in _READ_ONLY_STATEFUL:
            continue
        op_def = op_def_registry.get(node.op)
        if op_def is None or op_def.is_stateful:
            writers.add(node.op)
    return sorted(writers)


def verify_retrace_fix(traced: _Traced) -> dict:
    """Re-run the user's function with the generated input_signature on every kept input:
    how many traces, and the largest output difference against the original function."""
    import tensorflow as tf

    if traced.unsupported:
        return _check_entry(traced, error=f"not verified: {traced.unsupported}")
    if len(traced.inputs) < 2:
        return _check_entry(traced, error="not verified: fewer than two traced inputs were kept")
    specs = _function_signature(traced.inputs)
    if specs is None:
        return _check_entry(traced, error="not verified: the dtype varied; the fix is one dtype, not a signature")
    text = ", ".join(f"{s['dtype']}[{'?' if s['shape'] is None else ', '.join('None' if d is None else str(d) for d in s['shape'])}]"
                     for s in specs)
    entry = _check_entry(traced, input_signature=f"({text})", signature=specs)
    original = traced.function
    try:
        writers = _writes_state(original.get_concrete_function(*traced.inputs[0]))
        if writers:
            entry["error"] = ("not verified: re-running it would change state (" + ", ".join(writers[:5])
                              + "); tfdiag does not run such functions again")
            return entry
        signature = [tf.TensorSpec(s["shape"], tf.as_dtype(s["dtype"])) for s in specs]
        fixed = tf.function(original.python_function, input_signature=signature)
        worst = 0.0
        for args in traced.inputs:
            reference = _outputs(original(*args))
            diff, why = compare(reference, _outputs(fixed(*args)))
            if diff is None:
                entry["error"] = f"outputs not comparable: {why}"
                worst = None
                break
            tolerance = ATOL + RTOL * _scale(reference)
            if diff > tolerance:
                entry["tolerance"] = tolerance
            worst = max(worst, diff)
        entry["traces_after"] = fixed.experimental_get_tracing_count()
        entry["max_abs_diff"] = worst
        entry["equivalent"] = worst is not None and "tolerance" not in entry
    except Exception as exc:  # the fix does not apply to this function: say why
        entry["error"] = f"failed: {exc.__class__.__name__}: {_short(exc)}"
    return entry
