"""Traces of Keras's, TensorFlow's and tf.data's own functions, said in terms of the user's code.

The user cannot change these functions, so no fix is ever written against them. What a trace
was decides whether it is a finding at all (``retracing.library_kind``):

- another entry point (fit, evaluate and predict each trace their own; (x, y) against x), another
  context, or a bounded shape relaxation (traced once more with ``None`` dimensions): no finding;
  the report's retracing section carries the note;
- a rebuilt function (the model was compiled or created again): ``model-rebuilt``, worded for the
  function's role and pointing at the user's line that compiled or created the model;
- growth (a new concrete shape or dtype each time, no relaxation): a fix at the user's call site,
  only when the extra traces measurably cost time;
- tf.data's functions, traced for every predict() call: ``tfdata-retrace`` only.
"""

from __future__ import annotations

from ..recording import Recording
from . import retracing
from .findings import GUIDES, Finding, severity_for, short_site
from .units import duration

API_ROLE = {"fit": "train", "train_on_batch": "train", "evaluate": "test", "test_on_batch": "test",
            "predict": "predict", "predict_on_batch": "predict"}
ROLE_API = {"train": "fit", "test": "evaluate", "predict": "predict"}
ROLE_ENTRY_POINTS = {"train": "fit() and train_on_batch()", "test": "evaluate() and test_on_batch()",
                     "predict": "predict() and predict_on_batch()"}
API_LINE = {
    "fit": "model.fit(x, y)", "train_on_batch": "model.train_on_batch(x, y)",
    "evaluate": "model.evaluate(x, y)", "test_on_batch": "model.test_on_batch(x, y)",
    "predict": "y = model.predict(x)", "predict_on_batch": "y = model.predict_on_batch(x)",
}
GROWTH_MIN_S = 0.05  # growth is worth a fix at the user's call site from this much extra tracing


def _keras_made(function: dict) -> bool:
    """One of a model's train/test/predict functions (or Keras code traced for a model)."""
    return function.get("origin") == "keras" or bool(function.get("role") or function.get("model"))


def _api_at(recording: Recording, site: str | None) -> str | None:
    """The Keras API the user called at ``site``, from the recorded calls."""
    return next((c.get("api") for c in recording.calls if site and c.get("call_site") == site
                 and c.get("api") in API_ROLE), None)


def _target_at(recording: Recording, site: str | None) -> str | None:
    """The model the user called at ``site``: what a finding about that call is about."""
    return next((c.get("target") for c in recording.calls if site and c.get("call_site") == site), None)


def _classified(recording: Recording, function: dict, explanations: list) -> list[tuple[str, dict, dict, str | None]]:
    """(kind, trace, earlier trace, role) for each explained trace; roles the recording lacks are
    read from the API called at the trace's call site."""
    traces = {t.get("index"): t for t in function.get("traces", [])}

    def role_of(trace: dict) -> str | None:
        return retracing.trace_role(function, trace) or API_ROLE.get(_api_at(recording, trace.get("call_site")) or "")

    out = []
    for explanation in explanations:
        trace, earlier = traces.get(explanation.index), traces.get(explanation.compared_to)
        if trace is None:
            continue
        kind = retracing.library_kind(function, trace, earlier, explanation.changes, role_of)
        if (kind == "rebuilt" and earlier is not None and role_of(trace) is None
                and earlier.get("call_site") != trace.get("call_site")):
            kind = "entry-point"  # no role known, another call site: most likely another entry point
        out.append((kind, trace, earlier or {}, role_of(trace)))
    return out


def library_findings(recording: Recording, explained: dict) -> list[Finding]:
    rebuilt: dict[tuple, list[tuple[dict, dict]]] = {}
    findings: list[Finding] = []
    for position, function in enumerate(recording.functions):
        if not retracing.is_library(function) or function.get("origin") == "tf.data":
            continue
        classified = _classified(recording, function, explained.get(position, []))
        for kind, trace, _, role in classified:
            if kind == "rebuilt" and _keras_made(function):
                pointer = trace.get("compiled_at") or function.get("model_created_at")
                rebuilt.setdefault((function.get("model"), role, pointer), []).append((function, trace))
        growth = [(trace, role) for kind, trace, _, role in classified if kind == "growth"]
        if len(growth) >= 2:
            finding = _growth_finding(recording, function, growth)
            if finding is not None:
                findings.append(finding)
    findings.extend(_rebuilt_finding(recording, key, traced) for key, traced in rebuilt.items())
    return findings


def _rebuilt_finding(recording: Recording, key: tuple, traced: list[tuple[dict, dict]]) -> Finding:
    model, role, pointer = key
    per_function: dict[str, int] = {}
    for function, _ in traced:
        per_function[function.get("name", "?")] = per_function.get(function.get("name", "?"), 0) + 1
    name = max(per_function, key=per_function.get)
    count = per_function[name]  # one rebuild re-makes each of the role's functions once
    seconds = sum(t.get("duration_s", 0.0) for _, t in traced)
    compiled = any(t.get("compiled_at") for _, t in traced)
    sites = list(dict.fromkeys(t.get("call_site") for _, t in traced if t.get("call_site")))
    api = next((a for a in (_api_at(recording, s) for s in sites) if a), None) or ROLE_API.get(role or "", "predict")
    what = (f"the {retracing.ROLE_TEXT[role]} (what {ROLE_ENTRY_POINTS[role]} run)" if role in retracing.ROLE_TEXT
            else "the model's functions")
    of_model = f" of model `{model}`" if model else ""
    now = f" (now at {short_site(pointer)})" if pointer else ""
    if compiled:
        why = (f"the model is compiled again{' at ' + short_site(pointer) if pointer else ''}, and each compile() "
               "discards the functions Keras traced")
        text = (f"Compile the model once, before the loop: every compile() throws away the training, evaluation and "
                f"predict functions Keras traced, so the next {api}() traces them again.")
        code = f"model.compile(...)  # once, before the loop{now}"
    else:
        why = (f"the model is created again at {short_site(pointer)}" if pointer
               else "the model was compiled or created again, which discards the functions Keras traced")
        text = (f"Create and compile the model once, before the loop, and reuse it: a new or re-compiled model "
                f"starts without traced functions, so the next {api}() traces them again.")
        code = f"model = build_model()  # create and compile once, before the loop{now}"
    code += f"\nfor x in batches:\n    {API_LINE.get(api, 'y = model.predict(x)')}"
    functions = ", ".join(f"`{n}`" for n in per_function)
    return Finding(
        code="model-rebuilt", severity=severity_for(seconds, count),
        title=f"Keras traced {what}{of_model} again {count} time(s): {why}",
        function=name, call_site=pointer or (sites[0] if sites else ""),
        evidence=[f"{len(traced)} trace(s) of Keras's {functions} after the first, each a new tf.function object "
                  f"for the same input; {duration(seconds)} spent tracing again",
                  *(f"traced again by {_api_at(recording, s) or api}() at {short_site(s)}" for s in sites[:4])],
        estimated_savings_s=seconds,
        fix={"text": text, "code": code, "guide": GUIDES["performance"]},
        details={"origin": "keras", "role": role, "model": model, "functions": list(per_function),
                 "retraces": count, "compiled_at": pointer if compiled else None,
                 "model_created_at": next((f.get("model_created_at") for f, _ in traced if f.get("model_created_at")), None),
                 "call_sites": sites},
    )


def _growth_finding(recording: Recording, function: dict, growth: list[tuple[dict, str | None]]) -> Finding | None:
    """A library function traced for a new concrete shape or dtype again and again: fix the user's calls."""
    seconds = sum(t.get("duration_s", 0.0) for t, _ in growth)
    if seconds < GROWTH_MIN_S:
        return None
    site = next((t.get("call_site") for t, _ in growth if t.get("call_site")), "") or ""
    role = growth[-1][1]
    api = _api_at(recording, site) or ROLE_API.get(role or "", "predict")
    dtypes = {a.get("dtype") for t, _ in growth for a in _leaves(t.get("args", []))} - {None}
    owner = retracing.OWNER.get(function.get("origin"), function.get("origin"))
    changed = "dtype" if len(dtypes) > 1 else "shape"
    if changed == "dtype":
        text = f"Convert the input to one dtype before {api}() at {short_site(site)}, so every call presents the same."
        code = f'x = x.astype("float32")  # one dtype for every call\n{API_LINE.get(api, "y = model.predict(x)")}'
    elif role == "train" or api in ("fit", "train_on_batch", "evaluate", "test_on_batch"):
        text = (f"Give every batch passed at {short_site(site)} the same shape, e.g. drop the short last batch "
                "(drop_remainder=True when batching with tf.data).")
        code = "ds = ds.batch(BATCH, drop_remainder=True)  # one shape for every step"
    else:
        text = (f"Give every call at {short_site(site)} the same batch size: pad short batches to one size "
                "and drop the padded rows from the result.")
        code = ("n = len(x)\nx = np.pad(x, [(0, BATCH - n)] + [(0, 0)] * (x.ndim - 1))  # one batch size for every call\n"
                f"y = model.{'predict_on_batch' if api == 'predict_on_batch' else 'predict'}(x)[:n]")
    return Finding(
        code=f"retrace-{changed}", severity=severity_for(seconds, 0),
        title=(f"{api}() at {short_site(site)} made {owner} trace the model's "
               f"{retracing.ROLE_TEXT.get(role or '', 'function')} {len(growth)} more time(s), once per new input {changed}"),
        function=_target_at(recording, site) or function.get("model") or function.get("name", "?"), call_site=site,
        evidence=[f"{len(growth)} traces of {owner}'s `{function.get('name')}` for new input {changed}s, "
                  f"{duration(seconds)} spent tracing again; {owner} did not relax them into one trace"],
        estimated_savings_s=seconds, fix={"text": text, "code": code, "guide": GUIDES["retrace"]},
        details={"origin": function.get("origin"), "role": role, "retraces": len(growth), "call_sites": [site],
                 "traced_function": function.get("name")},
    )


def _leaves(args: list) -> list[dict]:
    out = []
    for arg in args:
        out.extend(_leaves(arg.get("items") or []) if arg.get("items") else [arg])
    return out


def tfdata_findings(recording: Recording, explained: dict) -> list[Finding]:
    """tf.data functions traced again on every predict() call (graph creation nobody warns about)."""
    data_functions = [f for f in recording.functions if f.get("origin") == "tf.data"]
    predict_calls = [c for c in recording.calls if c.get("api") == "predict"]
    calls = sum(c.get("count", 0) for c in predict_calls)
    sites = {c.get("call_site") for c in predict_calls}
    per_site = [t for f in data_functions for t in f.get("traces", []) if t.get("call_site") in sites]
    traces = len(per_site) if per_site else sum(f.get("trace_count", 0) for f in data_functions)
    if not data_functions or calls < 2 or traces < calls:
        return []
    seconds = (sum(t.get("duration_s", 0.0) for t in per_site) if per_site
               else sum(f.get("trace_s", 0.0) for f in data_functions))
    names = ", ".join(sorted({f.get("name", "?") for f in data_functions}))
    site = max(predict_calls, key=lambda c: c.get("count", 0)).get("call_site", "")
    return [Finding(
        code="tfdata-retrace", severity=severity_for(seconds, calls),
        title=(f"predict() traced {traces / calls:.1f} tf.data functions on every call ({traces} traces over "
               f"{calls} calls)"),
        function="predict", call_site=site,
        evidence=[f"{duration(seconds)} spent tracing input-pipeline functions: {names}",
                  "predict() builds a new tf.data pipeline per call; its map functions are new "
                  "tf.function objects, so they trace every time and no retracing warning fires"],
        estimated_savings_s=seconds,
        fix={"text": ("For small inputs call the model without predict()'s input pipeline (e.g. "
                      "`predict_on_batch(x)` or a tf.function with an input_signature); the fastest path "
                      "depends on the Keras version — "
                      + ("see the paths measured on your model under Measured alternatives."
                         if recording.extra.get("alternatives") else
                         "unverified here, run `tfdiag analyze --verify` to measure it.")),
             "code": "y = model.predict_on_batch(x)  # no tf.data pipeline per call",
             "guide": GUIDES["tfdata"]},
        details={"tfdata_traces": traces, "predict_calls": calls, "call_sites": sorted(s for s in sites if s)},
    )]
