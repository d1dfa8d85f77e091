"""Traces of Keras's, TensorFlow's and tf.data's own functions, said in terms of the user's code.

The user cannot change these functions, so no fix is ever written against them, and their
internal names stay in ``details``. What a trace was decides whether it is a finding at all
(``retracing.library_kind``, read off each explanation's ``kind``: the report's retracing
section says the same):

- another entry point (fit, evaluate and predict each trace their own; (x, y) against x), another
  context, or a bounded shape relaxation (traced once more with ``None`` dimensions): no finding;
  the report's retracing section carries the note;
- a rebuilt function (the model was compiled or created again): ``model-rebuilt``, worded for the
  function's role and pointing at the user's line that compiled or created the model;
- new models made at one line of the user's code and run at one call site one after another (a model
  built in a loop): ``model-rebuilt``, with the count, the tracing they repeated and the creating line;
- growth (a new concrete shape or dtype each time, no relaxation): a fix at the user's call site,
  only when the extra traces measurably cost time, low severity below ``MATTERS_S``, never above medium;
- tf.data's functions, traced for every predict() call: ``tfdata-retrace`` only, and only for
  calls no call-path finding covers (``predict-overhead`` counts that tracing in its own
  graph_creation and lists it in its evidence: one finding and one saving per call site).

Code is written only from the API the user called (or the role of the function, which names
it); where neither is known the fix is words alone.
"""

from __future__ import annotations

from ..recording import Recording
from . import call_findings, retracing
from .findings import GUIDES, Finding, severity_for, short_site
from .phases import STEP_APIS
from .units import duration

ROLE_API = {"train": "fit", "test": "evaluate", "predict": "predict"}
ROLE_ENTRY_POINTS = {"train": "fit() and train_on_batch()", "test": "evaluate() and test_on_batch()",
                     "predict": "predict() and predict_on_batch()"}
API_LINE = {
    "fit": "model.fit(x, y)", "train_on_batch": "model.train_on_batch(x, y)",
    "evaluate": "model.evaluate(x, y)", "test_on_batch": "model.test_on_batch(x, y)",
    "predict": "y = model.predict(x)", "predict_on_batch": "y = model.predict_on_batch(x)",
}
GROWTH_MIN_S = 0.05  # growth is worth a fix at the user's call site from this much extra tracing
MATTERS_S = 0.5  # ... and medium severity (never more) from this much: below it, a low note


def _keras_made(function: dict) -> bool:
    """One of a model's train/test/predict functions (or Keras code traced for a model)."""
    return function.get("origin") == "keras" or bool(function.get("role") or function.get("model"))


def _target_at(recording: Recording, site: str | None) -> str | None:
    """The model the user called at ``site``: what a finding about that call is about."""
    return next((c.get("target") for c in recording.calls if site and c.get("call_site") == site), None)


def _api_for(recording: Recording, sites: list, role: str | None) -> str | None:
    """The API the user called at these sites, else the one the function's role names; None if neither is known."""
    return next((a for a in (retracing.api_at(recording.calls, s) for s in sites) if a), None) or ROLE_API.get(role or "")


def _classified(recording: Recording, function: dict, explanations: list) -> list[tuple[str, dict, str | None]]:
    """(kind, trace, role) for each explained trace: the kind ``retracing.library_kind`` gave it."""
    traces = {t.get("index"): t for t in function.get("traces", [])}
    out = []
    for explanation in explanations:
        trace = traces.get(explanation.index)
        if trace is not None:
            out.append((explanation.kind or "entry-point", trace, retracing.trace_role(function, trace, recording.calls)))
    return out


def library_findings(recording: Recording, explained: dict) -> list[Finding]:
    rebuilt: dict[tuple, list[tuple[dict, dict]]] = {}
    findings: list[Finding] = []
    for position, function in enumerate(recording.functions):
        if not retracing.is_library(function) or function.get("origin") == "tf.data":
            continue
        classified = _classified(recording, function, explained.get(position, []))
        for kind, trace, role in classified:
            if kind == "rebuilt" and _keras_made(function):
                pointer = trace.get("compiled_at") or function.get("model_created_at")
                rebuilt.setdefault((function.get("model"), role, pointer), []).append((function, trace))
        growth = [(trace, role) for kind, trace, role in classified if kind == "growth"]
        if len(growth) >= 2:
            finding = _growth_finding(recording, function, growth)
            if finding is not None:
                findings.append(finding)
    findings.extend(_rebuilt_finding(recording, key, traced) for key, traced in rebuilt.items())
    findings.extend(_new_models_findings(recording))
    return findings


def _new_models_findings(recording: Recording) -> list[Finding]:
    """Models created at one line of the user's code and run at one call site, one after another
    (a model built in a loop): each new model traces its functions from scratch."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for function in recording.functions:
        traces = function.get("traces") or []
        if (not retracing.is_library(function) or not _keras_made(function) or not function.get("model")
                or not function.get("model_created_at") or not traces):
            continue
        site = traces[0].get("call_site")
        key = (retracing.trace_role(function, traces[0], recording.calls), site, function.get("model_created_at"))
        groups.setdefault(key, {}).setdefault(function["model"], []).extend(traces)
    findings = []
    for (role, site, created), models in groups.items():
        # Only training: several models made at one line and run for inference are an ensemble,
        # each needing its own functions; a model built per round of training is rebuilt work.
        if len(models) < 2 or role != "train":
            continue
        names = list(models)
        later = [t for name in names[1:] for t in models[name]]
        seconds = sum(t.get("duration_s", 0.0) for t in later)
        count = len(names) - 1
        api = _api_for(recording, [site], role)
        call = f"{api}()" if api else "the call"
        what = retracing.ROLE_TEXT.get(role or "", "functions")
        code = (f"model = build_model()  # once, before the loop (now at {short_site(created)})\n"
                "initial = model.get_weights()\nfor ...:\n    model.set_weights(initial)  # fresh weights, same traced functions\n"
                + (f"    {API_LINE[api]}" if api else "    ..."))
        findings.append(Finding(
            code="model-rebuilt", severity=severity_for(seconds, count),
            title=(f"{len(names)} models created at {short_site(created)} each ran {call} at {short_site(site or '')}: "
                   f"Keras traced the {what} again for each new model"),
            function=names[0], call_site=created or site or "",
            evidence=[f"models {', '.join(f'`{n}`' for n in names[:6])}{' …' if len(names) > 6 else ''} were created at "
                      f"{created} and used at {site}",
                      f"{len(later)} trace(s) of the {count} model(s) after the first, {duration(seconds)} spent tracing "
                      "what the first model had already traced"],
            estimated_savings_s=seconds,
            fix={"text": (f"Create and compile the model once, before the loop, and reuse it: every new model starts "
                          f"without traced functions, so {call} traces them again. If each round needs fresh weights, "
                          "keep the initial weights and restore them with `set_weights` (and reset the optimizer's "
                          "variables the same way) instead of building and compiling a new model."),
                 "code": code, "guide": GUIDES["performance"]},
            details={"origin": "keras", "role": role, "models": names, "retraces": count, "compiled_at": None,
                     "model_created_at": created, "call_sites": [site] if site else [], "new_models": True,
                     "training": role == "train"},
        ))
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
    api = _api_for(recording, sites, role)
    next_call = f"the next {api}()" if api else "the next call"
    what = (f"the {retracing.ROLE_TEXT[role]} (what {ROLE_ENTRY_POINTS[role]} run)" if role in retracing.ROLE_TEXT
            else "the model's functions")
    of_model = f" of model `{model}`" if model else ""
    now = f" (now at {short_site(pointer)})" if pointer else ""
    if compiled:
        why = (f"the model is compiled again{' at ' + short_site(pointer) if pointer else ''}, and each compile() "
               "discards the functions Keras traced")
        text = (f"Compile the model once, before the loop: every compile() throws away the training, evaluation and "
                f"predict functions Keras traced, so {next_call} traces them again.")
        code = f"model.compile(...)  # once, before the loop{now}"
    else:
        why = (f"the model is created again at {short_site(pointer)}" if pointer
               else "the model was compiled or created again, which discards the functions Keras traced")
        text = (f"Create and compile the model once, before the loop, and reuse it: a new or re-compiled model "
                f"starts without traced functions, so {next_call} traces them again.")
        code = f"model = build_model()  # create and compile once, before the loop{now}"
    if api:
        code += f"\nfor x in batches:\n    {API_LINE[api]}"
    return Finding(
        code="model-rebuilt", severity=severity_for(seconds, count),
        title=f"Keras traced {what}{of_model} again {count} time(s): {why}",
        function=model or name, call_site=pointer or (sites[0] if sites else ""),
        evidence=[f"{len(traced)} trace(s) of the model's {retracing.ROLE_TEXT.get(role or '', 'functions')} after "
                  f"the first, each a new tf.function object for the same input; {duration(seconds)} spent tracing again",
                  *(_traced_again(retracing.api_at(recording.calls, s) or api, s) for s in sites[:4])],
        estimated_savings_s=seconds,
        fix={"text": text, "code": code, "guide": GUIDES["performance"]},
        details={"origin": "keras", "role": role, "model": model, "functions": list(per_function),
                 "retraces": count, "compiled_at": pointer if compiled else None,
                 "model_created_at": next((f.get("model_created_at") for f, _ in traced if f.get("model_created_at")), None),
                 "call_sites": sites, "training": role == "train"},
    )


def _traced_again(api: str | None, site: str) -> str:
    return f"traced again {'by ' + api + '() ' if api else ''}at {short_site(site)}"


def _growth_fix(api: str | None, changed: str, site: str) -> tuple[str, str]:
    """(text, code) of a growth finding: code only for an API the user is known to call."""
    where = short_site(site) if site else "your call site"
    if changed == "dtype":
        if api is None:
            return f"Convert the input to one dtype before the call at {where}, so every call presents the same.", ""
        return (f"Convert the input to one dtype before {api}() at {where}, so every call presents the same.",
                f'x = x.astype("float32")  # one dtype for every call\n{API_LINE[api]}')
    if api in STEP_APIS:
        return (f"Give every batch passed at {where} the same shape, e.g. drop the short last batch "
                "(drop_remainder=True when batching with tf.data).",
                "ds = ds.batch(BATCH, drop_remainder=True)  # one shape for every step")
    text = (f"Give every call at {where} the same batch size: pad short batches to one size "
            "and drop the padded rows from the result.")
    if api is None:
        return text, ""
    return text, ("n = len(x)\nx = np.pad(x, [(0, BATCH - n)] + [(0, 0)] * (x.ndim - 1))  # one batch size for every call\n"
                  f"y = model.{api}(x)[:n]")


def _growth_finding(recording: Recording, function: dict, growth: list[tuple[dict, str | None]]) -> Finding | None:
    """A library function traced for a new concrete shape or dtype again and again: fix the user's calls."""
    seconds = sum(t.get("duration_s", 0.0) for t, _ in growth)
    if seconds < GROWTH_MIN_S:
        return None
    site = next((t.get("call_site") for t, _ in growth if t.get("call_site")), "") or ""
    role = growth[-1][1]
    api = _api_for(recording, [site], role)
    leaves = [_leaves(t.get("args", [])) for t, _ in growth]
    dtypes = {a.get("dtype") for found in leaves for a in found} - {None}
    owner = retracing.OWNER.get(function.get("origin"), function.get("origin"))
    changed = "dtype" if len(dtypes) > 1 else "shape"
    seen = list(dict.fromkeys(retracing.describe_value(found[0]) for found in leaves if found))
    who = f"{api}() at {short_site(site)}" if api else (f"Calls at {short_site(site)}" if site else "Your calls")
    text, code = _growth_fix(api, changed, site)
    return Finding(
        code=f"retrace-{changed}", severity="medium" if seconds >= MATTERS_S else "low",
        title=(f"{who} made {owner} trace the model's "
               f"{retracing.ROLE_TEXT.get(role or '', 'function')} {len(growth)} more time(s), once per new input {changed}"),
        function=_target_at(recording, site) or function.get("model") or "model", call_site=site,
        evidence=[f"{len(growth)} extra trace(s) for new input {changed}s, {duration(seconds)} spent tracing again; "
                  f"{owner} did not relax them into one trace",
                  *([f"inputs seen: {', '.join(seen[:4])}{', …' if len(seen) > 4 else ''}"] if seen else [])],
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
    """tf.data functions traced again on every predict() call (graph creation nobody warns about), at
    the predict() call sites no call-path finding already covers."""
    data_functions = [f for f in recording.functions if f.get("origin") == "tf.data"]
    covered = call_findings.covered_sites(recording)
    predict_calls = [c for c in recording.calls if c.get("api") == "predict"]
    sites = {c.get("call_site") for c in predict_calls}
    per_site = call_findings.tfdata_traces(recording, sites)
    if per_site:
        predict_calls = [c for c in predict_calls if c.get("call_site") not in covered]
        per_site = [t for t in per_site if t.get("call_site") not in covered]
        traces, seconds = len(per_site), sum(t.get("duration_s", 0.0) for t in per_site)
    elif sites & covered:
        return []  # traces not attributable to a call site: a covered one may hold them, so never count them twice
    else:
        traces = sum(f.get("trace_count", 0) for f in data_functions)
        seconds = sum(f.get("trace_s", 0.0) for f in data_functions)
    calls = sum(c.get("count", 0) for c in predict_calls)
    if not data_functions or calls < 2 or traces < calls:
        return []
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
        details={"tfdata_traces": traces, "predict_calls": calls,
                 "call_sites": sorted({c.get("call_site") for c in predict_calls if c.get("call_site")})},
    )]
