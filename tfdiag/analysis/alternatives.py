"""Which measured path to recommend, from a recording's ``alternatives`` (``--verify``).

Pure functions, no TensorFlow, and nothing written into the recording: verify only times the
paths; the choice is made here so that a saved recording re-renders the same advice. The rule is
the measurement: the fastest path whose outputs matched the user's own, never a fixed preference
per Keras version. A path whose outputs differ beyond the tolerance is shown, never recommended.
The call paths run the model for inference (``training=False``), so ``choose`` recommends nothing
for a call made in a training loop; fit() gets its own paths (``train:*`` timed on clones of the
model, ``input:*`` on its input pipeline), chosen by ``choose_training``/``choose_training_input``.
"""

from __future__ import annotations

from ..recording import Recording
from .retracing import spec_code
from .units import duration

MIN_SPEEDUP = 1.1  # closer than this to the user's own path is within timing noise
TIE = 0.10  # paths within 10% of the fastest are a tie: the simpler one (earlier in SIMPLEST_FIRST) wins
TFDATA_PATH = "tf.data prefetch"  # predict() on a tf.data input built once (the input-bound fix)

# Every path --verify times: path -> (table label, label in a sentence). Order is kept in the tuples below.
PATHS = {
    "predict": ("model.predict(x)", "model.predict(x)"),
    "predict_on_batch": ("model.predict_on_batch(x)", "model.predict_on_batch(x)"),
    "__call__": ("model(x, training=False)", "model(x, training=False)"),
    "tf.function": ("tf.function + input_signature", "tf.function with an input_signature"),
    "tf.function_xla": ("tf.function + input_signature, jit_compile=True (XLA)",
                        "tf.function with an input_signature and jit_compile=True (XLA)"),
    "litert": ("LiteRT (ai-edge-litert)", "LiteRT (ai-edge-litert)"),
    TFDATA_PATH: ("model.predict(ds), ds = tf.data batch() + prefetch(), built once",
                  "model.predict on a tf.data input built once (batch and prefetch)"),
}
USER_APIS = ("predict", "predict_on_batch", "__call__")  # the paths a user's own calls are recorded under
IN_TENSORFLOW = (*USER_APIS, "tf.function", "tf.function_xla")  # paths that stay in TensorFlow
CALL_PATHS = (*IN_TENSORFLOW, "litert")  # the ways of calling the model, simplest first: timed for every model
SIMPLEST_FIRST = (*CALL_PATHS, TFDATA_PATH)  # ties go to the earlier path


def label(path: str) -> str:
    """The path as a sentence names it."""
    return PATHS[path][1] if path in PATHS else path


def table_label(path: str) -> str:
    """The path as the Measured alternatives table names it."""
    return PATHS[path][0] if path in PATHS else path


def entries(recording: Recording) -> list[dict]:
    value = recording.extra.get("alternatives")
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def entries_for(recording: Recording, target: str) -> list[dict]:
    return [e for e in entries(recording) if e.get("target") == target]


def has_timing(entry: dict) -> bool:
    median = entry.get("median_s")
    return not entry.get("error") and isinstance(median, (int, float)) and median > 0


def is_equivalent(entry: dict) -> bool:
    """Same outputs as the user's path: flagged so, and the difference within its tolerance."""
    if entry.get("equivalent") is not True or entry.get("error"):
        return False
    diff = entry.get("max_abs_diff")
    if not isinstance(diff, (int, float)):
        return False
    tolerance = entry.get("tolerance")
    return not isinstance(tolerance, (int, float)) or diff <= tolerance


def base_entry(target_entries: list[dict], base_path: str) -> dict | None:
    """The timed entry of the user's own path, or None."""
    return next((e for e in target_entries if e.get("path") == base_path and has_timing(e)), None)


def _better(entry: dict, base: dict) -> bool:
    """Timed, the same outputs as the base, and clearly faster than it."""
    return (entry is not base and has_timing(entry) and is_equivalent(entry)
            and base["median_s"] / entry["median_s"] >= MIN_SPEEDUP)


def choose(target_entries: list[dict], base_path: str, *, training: bool = False) -> dict | None:
    """The recommendation against ``base_path``: fastest equivalent call path, if clearly faster.

    Returns ``{"entry", "base", "speedup", "in_tensorflow"}`` (``in_tensorflow``: the fastest
    equivalent path that stays in TensorFlow, when the winner is LiteRT), or None. Always None
    for a call in a training loop (``training``): the paths were timed for inference.
    """
    base = base_entry(target_entries, base_path)
    if base is None or training:
        return None
    candidates = [e for e in target_entries if e.get("path") in CALL_PATHS and _better(e, base)]
    if not candidates:
        return None
    best = _fastest(candidates)
    in_tf = None
    if best.get("path") not in IN_TENSORFLOW:
        in_tf = _fastest([e for e in candidates if e.get("path") in IN_TENSORFLOW])
    return {"entry": best, "base": base, "speedup": base["median_s"] / best["median_s"], "in_tensorflow": in_tf}


def choose_input_pipeline(target_entries: list[dict], base_path: str) -> tuple[dict | None, dict | None]:
    """(the measured tf.data entry or None, the choice when it is clearly faster with the same outputs)."""
    entry = next((e for e in target_entries if e.get("path") == TFDATA_PATH), None)
    base = base_entry(target_entries, base_path)
    if entry is None or base is None or not _better(entry, base):
        return entry, None
    return entry, {"entry": entry, "base": base, "speedup": base["median_s"] / entry["median_s"],
                   "in_tensorflow": None}


def _fastest(candidates: list[dict], order: tuple[str, ...] = SIMPLEST_FIRST) -> dict | None:
    """The fastest entry; among those within TIE of it, the simplest path (earliest in ``order``)."""
    if not candidates:
        return None
    floor = min(e["median_s"] for e in candidates)
    close = [e for e in candidates if e["median_s"] <= floor * (1 + TIE)]
    return min(close, key=lambda e: (order.index(e["path"]) if e.get("path") in order else len(order), e["median_s"]))


# -- training (--verify on fit(): what-ifs timed on a clone, see tfdiag/verify/training.py) ----------
TRAIN_BASE = "train:as_written"  # the user's own fit() settings
INPUT_BASE = "input:as_written"  # the user's input pipeline alone, as written
# Simplest first: ties go to the earlier (dropping run_eagerly before batching steps; XLA last).
TRAIN_PATHS = (TRAIN_BASE, "train:graph", "train:steps_per_execution=8", "train:steps_per_execution=32",
               "train:jit_compile")
INPUT_PATHS = (INPUT_BASE, "input:prefetch", "input:parallel_map", "input:workers")


def _choose_among(target_entries: list[dict], base_path: str, paths: tuple[str, ...]) -> dict | None:
    """Fastest equivalent training entry among ``paths`` clearly faster than ``base_path``'s."""
    mine = [e for e in target_entries if e.get("kind", "training") == "training"]
    base = base_entry(mine, base_path)
    if base is None:
        return None
    best = _fastest([e for e in mine if e.get("path") in paths and _better(e, base)], paths)
    if best is None:
        return None
    return {"entry": best, "base": base, "speedup": base["median_s"] / best["median_s"], "in_tensorflow": None}


def choose_training(target_entries: list[dict]) -> dict | None:
    """The ``train:*`` path to recommend for one model's fit(): the fastest whose loss after the
    same steps matched ``train:as_written`` and that is at least MIN_SPEEDUP faster per batch
    (``{"entry", "base", "speedup", "in_tensorflow": None}``), or None."""
    return _choose_among(target_entries, TRAIN_BASE, TRAIN_PATHS)


def choose_training_input(target_entries: list[dict]) -> dict | None:
    """The ``input:*`` pipeline to recommend for one model's fit() (same rule, against
    ``input:as_written``; equivalent = the same batches), or None."""
    return _choose_among(target_entries, INPUT_BASE, INPUT_PATHS)


def recommended(recording: Recording, findings: list[dict]) -> list[dict]:
    """The entries the findings' measured fixes recommend (each at most once), for the table."""
    chosen: list[dict] = []
    for finding in findings:
        fix = finding.get("fix") or {}
        measured = fix.get("measured")
        if fix.get("verified") is not True or not isinstance(measured, dict):
            continue
        for entry in entries_for(recording, finding.get("function", "")):
            if (entry.get("path") == measured.get("path") and entry.get("user_path", measured.get("base_path"))
                    == measured.get("base_path") and has_timing(entry) and all(entry is not c for c in chosen)):
                chosen.append(entry)
                break
    return chosen


def ran(recording: Recording) -> bool:
    """Whether --verify ran for this recording (its sections are present, possibly empty)."""
    return "alternatives" in recording.extra or "retrace_checks" in recording.extra


def view(recording: Recording, chosen: list[dict]) -> list[dict]:
    """The Measured alternatives table: one row per measured entry, in recorded order (grouped by
    ``target``), with display labels, ``your_path``, ``recommended`` (from ``chosen``, see
    ``recommended``) and ``same_outputs`` (True/False, None where not compared)."""
    rows = []
    for entry in entries(recording):
        path, user_path = str(entry.get("path", "")), str(entry.get("user_path", ""))
        diff = entry.get("max_abs_diff")
        rows.append(dict(entry, label=table_label(path), user_label=table_label(user_path),
                         your_path=path == user_path, recommended=any(entry is c for c in chosen),
                         same_outputs=None if not isinstance(diff, (int, float)) else (
                             entry.get("equivalent") is True and not entry.get("error")
                             and diff <= entry.get("tolerance", diff))))
    return rows


def checks_view(recording: Recording) -> list[dict]:
    """The Retrace fixes, verified table: one row per checked function, as recorded."""
    value = recording.extra.get("retrace_checks")
    return [dict(c) for c in value if isinstance(c, dict)] if isinstance(value, list) else []


def not_measured_reason(target_entries: list[dict]) -> str | None:
    """Why a model has no timings (unsupported input, budget spent), from its entries."""
    if any(has_timing(e) for e in target_entries):
        return None
    errors = [e.get("error") for e in target_entries if e.get("error")]
    return errors[0] if errors else None


# -- the fix text and snippet ---------------------------------------------------------
def snippet(entry: dict) -> str:
    """Code for the path, with the input_signature generated from the observed shapes."""
    path = entry.get("path")
    if path == "predict_on_batch":
        return "y = model.predict_on_batch(x)  # no tf.data pipeline per call"
    if path == "__call__":
        return "y = model(x, training=False)  # a tensor; .numpy() if you need an array"
    if path == "predict":
        return "y = model.predict(x, verbose=0)"
    if path == TFDATA_PATH:
        return (f"ds = tf.data.Dataset.from_tensor_slices(x).batch({entry.get('batch_size') or 32})"
                ".prefetch(tf.data.AUTOTUNE)  # once\n"
                "y = model.predict(ds, verbose=0)")
    signature = (spec_code(entry.get("signature"), free_batch=False)
                 or "tf.TensorSpec([None, ...], tf.float32)  # describe your input here")
    if path in ("tf.function", "tf.function_xla"):
        jit = ", jit_compile=True" if path == "tf.function_xla" else ""
        return ("serve = tf.function(lambda x: model(x, training=False),  # once, outside the loop\n"
                f"                    input_signature=[{signature}]{jit})\n"
                + ("y = serve(x)  # traces once; XLA compiles once per distinct input shape"
                   if jit else "y = serve(x)  # traces once, on the first call"))
    if path == "litert":
        return ("from ai_edge_litert.interpreter import Interpreter  # pip install ai-edge-litert\n"
                "# convert once, outside the loop (single input and output):\n"
                "serve = tf.function(lambda x: model(x, training=False),\n"
                f"                    input_signature=[{signature}])\n"
                "holder = tf.Module()  # tracks the weights so the converter freezes them\n"
                "holder.serve = serve\n"
                "holder.weights_ = [v if isinstance(v, tf.Variable) else v.value for v in model.variables]\n"
                "converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], holder)\n"
                "interpreter = Interpreter(model_content=converter.convert())\n"
                "inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]\n"
                "interpreter.resize_tensor_input(inp['index'], x.shape)\n"
                "interpreter.allocate_tensors()\n"
                "# per call:\n"
                "interpreter.set_tensor(inp['index'], x)\n"
                "interpreter.invoke()\n"
                "y = interpreter.get_tensor(out['index'])")
    return ""


def _times(speedup: float) -> str:
    return f"{speedup:.0f}×" if speedup >= 10 else f"{speedup:.1f}×"


def measured_fix(choice: dict, guide: str) -> dict:
    """The measured fix of a finding, from a ``choose`` (or ``choose_input_pipeline``) result."""
    best, base = choice["entry"], choice["base"]
    diff = best.get("max_abs_diff") or 0.0
    text = (f"Measured on your model and input ({best.get('calls', 0)} interleaved calls per path): "
            f"{label(best['path'])} takes {duration(best['median_s'])} per call against {duration(base['median_s'])} for "
            f"{label(base['path'])}, {_times(choice['speedup'])} faster, with the same outputs "
            f"(largest difference {diff:.1e}).")
    first = best.get("first_s")
    if isinstance(first, (int, float)) and first > 2 * best["median_s"]:
        text += f" Its first call costs {duration(first)} once (tracing/compiling/converting)."
    alt = choice.get("in_tensorflow")
    if alt is not None:
        text += (f" Staying in TensorFlow: {label(alt['path'])} at {duration(alt['median_s'])} "
                 f"({_times(base['median_s'] / alt['median_s'])} faster).")
    code = snippet(best)
    if alt is not None:
        code += "\n\n# or, staying in TensorFlow:\n" + snippet(alt)
    return {"text": text, "code": code, "guide": guide, "verified": True,
            "measured": {"path": best["path"], "speedup": choice["speedup"], "median_s": best["median_s"],
                         "base_path": base["path"], "base_median_s": base["median_s"]}}


def unmeasured_note(target_entries: list[dict], base_path: str) -> str:
    """What the report says when --verify ran but could not recommend for this model."""
    reason = not_measured_reason(target_entries)
    if reason:
        return f" Not verified on this model ({reason})."
    if base_entry(target_entries, base_path) is None:
        return f" Not verified: {label(base_path)} could not be timed on this model."
    return (" Measured on your model: no alternative path was both faster and equivalent, "
            "so tfdiag recommends none (see Measured alternatives).")


def apply(finding, choice: dict, call: dict) -> None:
    """Turn a finding's folklore fix into the measured one; savings from the measured speedup."""
    finding.fix = measured_fix(choice, finding.fix.get("guide", ""))
    count = call.get("count", 0)
    median = call.get("median_s", 0.0) or 0.0
    finding.estimated_savings_s = count * median * (1.0 - 1.0 / choice["speedup"])
    finding.evidence.append(
        f"--verify: {label(choice['entry']['path'])} measured {_times(choice['speedup'])} faster than "
        f"{label(choice['base']['path'])} on this model and input, same outputs")
