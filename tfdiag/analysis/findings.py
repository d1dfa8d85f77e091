"""Rules that turn a recording into ranked findings, each with evidence, savings and a fix.

Every rule is a pure function ``(Recording, explained retraces) -> list[Finding]``; ``RULES`` lists
them in order and ``run_rules`` ranks the result by estimated time saved.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field

from ..recording import Recording
from . import retracing
from .phases import call_phase_split
from .units import ms  # noqa: F401  (re-exported: renderers format with it)

GUIDES = {
    "retrace": "https://www.tensorflow.org/guide/function#controlling_retracing",
    "performance": "https://www.tensorflow.org/guide/function",
    "predict": "https://keras.io/getting_started/faq/#whats-the-difference-between-model-methods-predict-and-call",
    "tfdata": "https://www.tensorflow.org/guide/data_performance",
}

SEVERITY_RANK = {"high": 0, "medium": 1, "low": 2}

SMALL_BATCH = 256        # predict-overhead: per-call cost matters on batches up to this size
LARGE_BATCH = 1024       # input-bound: "large-batch work" starts here
INPUT_BOUND_SHARE = 0.2  # XProf's input-bound threshold
EAGER_LOOP_CALLS = 20    # eager-loop: a hot loop has at least this many calls


@dataclass
class Finding:
    code: str
    severity: str
    title: str
    function: str
    call_site: str
    evidence: list[str]
    estimated_savings_s: float
    fix: dict
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "code": self.code, "severity": self.severity, "title": self.title,
            "function": self.function, "call_site": self.call_site, "evidence": list(self.evidence),
            "estimated_savings_s": self.estimated_savings_s, "fix": dict(self.fix),
            "details": dict(self.details),
        }


def severity_for(seconds_lost: float, occurrences: int) -> str:
    if seconds_lost >= 0.5 or occurrences >= 20:
        return "high"
    if seconds_lost >= 0.05 or occurrences >= 5:
        return "medium"
    return "low"


def short_site(site: str) -> str:
    """``dir/file.py:12`` -> ``file.py:12`` for titles (the full path stays in call_site)."""
    return os.path.basename(site) if site else site


# -- retracing ------------------------------------------------------------------------
def _spec_code(signature: str) -> str:
    """``float32[32, 4]`` -> ``tf.TensorSpec([None, 4], tf.float32)``: the batch dimension left free."""
    match = re.fullmatch(r"(\w+)\[([\d, None]*)\]", signature or "")
    if not match:
        return "tf.TensorSpec(None, tf.float32)  # describe your input here"
    dims = [d.strip() for d in match.group(2).split(",") if d.strip()]
    shape = ", ".join(["None", *dims[1:]]) if dims else ""
    return f"tf.TensorSpec([{shape}], tf.{match.group(1)})"


def _seen(function: dict, argument: str, field: str) -> list:
    """The values of a field (``dtype``, ``type``) of a top-level argument over the traces, in order."""
    values = []
    for trace in function.get("traces", []):
        for arg in trace.get("args", []):
            if arg.get("name") == argument and arg.get(field) is not None and arg.get(field) not in values:
                values.append(arg.get(field))
    return values


def _first_seen(function: dict, argument: str, field: str):
    values = _seen(function, argument, field)
    return values[0] if values else None


def _fix_for(cause: str, function: dict, arguments: list[str]) -> dict:
    name = function.get("name", "f")
    arg = arguments[0] if arguments else "x"
    if cause in ("retrace-shape", "retrace-dtype"):
        signature = retracing.generalized_signature(function)
        if cause == "retrace-dtype":
            seen = _seen(function, arg, "dtype")
            dtype = "float32" if "float32" in seen else (seen[0] if seen else "float32")
            text = (f"Convert `{arg}` to one dtype at the boundary, before calling `{name}`, so every call "
                    f"presents the same dtype (seen: {', '.join(seen) or 'unknown'}).")
            code = f"{arg} = tf.convert_to_tensor({arg}, dtype=tf.{dtype})  # one dtype for every call\n{name}({arg})"
            return {"text": text, "code": code, "guide": GUIDES["retrace"]}
        if signature is not None:
            text = (f"Give `{name}` an input_signature with None in the dimensions that varied, so one "
                    "trace serves every shape observed.")
            code = f"@tf.function({retracing.signature_code(signature)})\ndef {name}(...):\n    ..."
        else:
            text = (f"Let TensorFlow generalise the varying shapes of `{arg}` instead of tracing each one.")
            code = f"@tf.function(reduce_retracing=True)\ndef {name}(...):\n    ..."
        return {"text": text, "code": code, "guide": GUIDES["retrace"]}
    if cause == "retrace-python-value":
        kind = _first_seen(function, arg, "type")
        if kind in ("bool", "str", "NoneType"):
            return {"text": (f"`{arg}` is a Python {kind} and part of the trace key: each value gets its own "
                             f"trace by design. Keep it constant in the hot loop, or split `{name}` into one "
                             "function per value; make it a tensor only if the code inside can branch on a tensor "
                             "(tf.cond)."),
                    "code": f"{name}_a = tf.function(lambda x: body(x, {arg}=...))  # one function per value",
                    "guide": GUIDES["retrace"]}
        dtype = {"int": "int32"}.get(kind or "", "float32")
        return {"text": (f"Pass `{arg}` as a tensor: a Python number is part of the trace key, so every "
                         "distinct value traces again; a tensor of the same dtype does not."),
                "code": f"{name}(..., {arg}=tf.constant({arg}, dtype=tf.{dtype}))",
                "guide": GUIDES["retrace"]}
    if cause == "retrace-new-object":
        return {"text": (f"Create the object passed as `{arg}` once and reuse it, or pass the tensors it "
                         "holds instead: tf.function keys Python objects by identity."),
                "code": f"{arg} = ...  # build once, outside the loop\nfor batch in data:\n    {name}(batch, {arg})",
                "guide": GUIDES["retrace"]}
    if cause == "retrace-structure":
        return {"text": (f"Give `{arg}` a fixed structure: stack the items into one tensor (with a None "
                         "dimension) or pad to a fixed length."),
                "code": f"{arg} = tf.stack({arg})  # one tensor, shape [None, ...]\n{name}({arg})",
                "guide": GUIDES["retrace"]}
    return {"text": (f"Create the tf.function `{name}` once (module level or in __init__) and call it in "
                     "the loop; a new tf.function object starts with an empty trace cache."),
            "code": f"{name} = tf.function(fn)  # once, outside the loop\nfor batch in data:\n    {name}(batch)",
            "guide": GUIDES["retrace"]}


def retrace_findings(recording: Recording, explained: dict) -> list[Finding]:
    findings: list[Finding] = []
    for position, function in enumerate(recording.functions):
        origin = function.get("origin")
        if origin == "tf.data" or function.get("trace_count", 0) < 2:
            continue
        traces = function.get("traces", [])
        durations = {t.get("index"): t.get("duration_s", 0.0) for t in traces}
        by_cause: dict[str, list] = defaultdict(list)
        for explanation in explained.get(position, []):
            causes = {c.cause for c in explanation.changes}
            primary = min(causes, key=retracing.CAUSE_ORDER.index) if causes <= set(retracing.CAUSE_ORDER) else None
            if primary is None:
                continue
            by_cause[primary].append(explanation)
        for cause, explanations in by_cause.items():
            if origin == "keras" and cause == "retrace-new-function":
                cause_code = "model-rebuilt"
            else:
                cause_code = cause
            seconds = sum(durations.get(e.index, 0.0) for e in explanations)
            dropped = function.get("traces_dropped", 0)
            if dropped and explanations:  # traces past the kept ones cost about the same each
                seconds += dropped * seconds / len(explanations) * (len(explanations) / max(1, len(traces) - 1))
            arguments = []
            for e in explanations:
                for c in e.changes:
                    if c.cause == cause and c.argument and c.argument not in arguments:
                        arguments.append(c.argument)
            examples = []
            for e in explanations:
                for c in e.changes:
                    if c.cause == cause and c.text not in examples:
                        examples.append(c.text)
            name = function.get("name", "?")
            count = len(explanations) + (dropped if by_cause and len(by_cause) == 1 else 0)
            call_site = next((t.get("call_site") for t in traces if t.get("index") == explanations[0].index), "")
            if cause_code == "model-rebuilt":
                of_model = f" of model `{function['model']}`" if function.get("model") else ""
                title = (f"Keras rebuilt `{name}`{of_model} {count} time(s) for the same input: the model was "
                         "re-compiled or re-created, so its predict function was traced again")
                fix = {"text": ("Build and compile the model once, before the loop; `compile()` (and creating "
                                "a model) discards the traced predict function."),
                       "code": "model = build_model()\nmodel.compile(...)  # once\nfor x in batches:\n    model.predict_on_batch(x)",
                       "guide": GUIDES["performance"]}
            elif cause_code == "retrace-new-function":
                created = next((t.get("created_at") for t in traces if t.get("new_object") and t.get("created_at")), None)
                title = (f"`{name}` was traced again {count} time(s) because a new tf.function object was made "
                         f"for the same code{' at ' + short_site(created) if created else ''}")
                fix = _fix_for(cause, function, arguments)
            else:
                what = ", ".join(f"`{a}`" for a in arguments) or "its inputs"
                title = f"`{name}` retraced {count} time(s) because {what} changed ({cause.replace('retrace-', '')})"
                fix = _fix_for(cause, function, arguments)
            evidence = [f"{function.get('trace_count')} traces of `{name}` (defined at {function.get('defined_at')}), "
                        f"{ms(seconds)} spent tracing again"] + examples[:6]
            findings.append(Finding(
                code=cause_code, severity=severity_for(seconds, count), title=title, function=name,
                call_site=call_site or "", evidence=evidence, estimated_savings_s=seconds, fix=fix,
                details={"origin": origin, "arguments": arguments, "retraces": count,
                         "defined_at": function.get("defined_at")},
            ))
    return findings


def tfdata_findings(recording: Recording, explained: dict) -> list[Finding]:
    """tf.data functions traced again on every predict() call (graph creation nobody warns about)."""
    data_functions = [f for f in recording.functions if f.get("origin") == "tf.data"]
    if not data_functions:
        return []
    predict_calls = sum(c.get("count", 0) for c in recording.calls if c.get("api") == "predict")
    traces = sum(f.get("trace_count", 0) for f in data_functions)
    if predict_calls < 2 or traces < predict_calls:
        return []
    seconds = sum(f.get("trace_s", 0.0) for f in data_functions)
    per_call = traces / predict_calls
    names = ", ".join(sorted({f.get("name", "?") for f in data_functions}))
    site = next((c.get("call_site", "") for c in recording.calls if c.get("api") == "predict"), "")
    return [Finding(
        code="tfdata-retrace", severity=severity_for(seconds, predict_calls),
        title=(f"predict() traced {per_call:.1f} tf.data functions on every call ({traces} traces over "
               f"{predict_calls} calls)"),
        function="predict", call_site=site,
        evidence=[f"{ms(seconds)} spent tracing input-pipeline functions: {names}",
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
        details={"tfdata_traces": traces, "predict_calls": predict_calls},
    )]


# -- call paths -----------------------------------------------------------------------
def _fastest_path_advice(flavor: str | None) -> tuple[str, str]:
    """Which path to try first, from the figures measured on this project's reference machine."""
    if flavor == "tf-keras":
        return ("call the model directly, `model(x, training=False)` (tf-keras, tiny model, batch 32: "
                "1.4 ms vs 9.5 ms for predict_on_batch and 82 ms for predict, measured on the reference machine)",
                "y = model(x, training=False).numpy()")
    return ("use `model.predict_on_batch(x)` or a tf.function with a fixed input_signature (Keras 3, tiny "
            "model, batch 32: 0.76 ms and 0.43 ms vs 75 ms for predict() and 2.75 ms for model(x), "
            "measured on the reference machine)",
            "y = model.predict_on_batch(x)")


def call_findings(recording: Recording, explained: dict) -> list[Finding]:
    from . import alternatives  # measured paths (--verify) decide the fix when present

    findings: list[Finding] = []
    flavor = recording.environment.get("keras_flavor")
    measured_any = bool(alternatives.entries(recording))
    chosen: list[dict] = []
    for call in recording.calls:
        before = len(findings)
        count = call.get("count", 0)
        median = call.get("median_s", 0.0)
        if count < 3 or median <= 0:
            continue
        split = call_phase_split(call)
        kernel = split.get("kernel_execution", 0.0)
        overhead = max(0.0, median - kernel)
        advice, code = _fastest_path_advice(flavor)
        target_entries = alternatives.entries_for(recording, call.get("target", ""))
        choice = alternatives.choose(target_entries, call.get("api", ""))
        verified = choice is not None
        if verified or not measured_any:
            suffix = "" if verified else " Unverified on your model: run `tfdiag analyze --verify` to time each path."
        elif target_entries:
            suffix = alternatives.unmeasured_note(target_entries, call.get("api", ""))
        else:
            suffix = " Not verified: --verify did not measure this model."
        per_call = sum(split.values())
        shares = {p: (v / per_call if per_call > 0 else 0.0) for p, v in split.items()}
        small_batch = call.get("batch") is None or call.get("batch") <= SMALL_BATCH
        if (call.get("api") in ("predict", "predict_on_batch") and median >= 0.002 and small_batch
                and shares.get("kernel_execution", 0.0) < 0.5):
            fixed = sum(split.get(p, 0.0) for p in ("data_adapter", "graph_creation", "other", "input_processing", "output_processing"))
            savings = fixed * count if fixed > 0 else overhead * count * 0.5
            evidence = [f"{count} calls of {call['api']}() on {call.get('input_signature')}, median {ms(median)} per call"]
            if any(split.values()):
                evidence.append("per call: " + ", ".join(f"{p} {ms(v)}" for p, v in split.items() if v > 0))
            findings.append(Finding(
                code="predict-overhead", severity=severity_for(savings, 0),
                title=(f"{call['api']}() at {short_site(call.get('call_site', ''))} costs {ms(median)} per call "
                       f"× {count} calls, mostly fixed per-call overhead"),
                function=call.get("target", ""), call_site=call.get("call_site", ""), evidence=evidence,
                estimated_savings_s=savings,
                fix={"text": f"In a loop of small batches, {advice}.{suffix}", "code": code,
                     "guide": GUIDES["predict"], "verified": verified},
            ))
        elif (call.get("api") == "__call__" and count >= EAGER_LOOP_CALLS
              and shares.get("other", 0.0) + shares.get("input_processing", 0.0) >= 0.5):
            savings = (split.get("other", 0.0) + split.get("input_processing", 0.0)) * count * 0.5
            findings.append(Finding(
                code="eager-loop", severity=severity_for(savings, 0),
                title=(f"model(x) at {short_site(call.get('call_site', ''))} runs eagerly {count} times, "
                       f"{ms(median)} per call"),
                function=call.get("target", ""), call_site=call.get("call_site", ""),
                evidence=[f"{count} eager calls on {call.get('input_signature')}, median {ms(median)}",
                          f"per call: Python/Keras overhead {ms(split.get('other', 0.0))} and input conversion "
                          f"{ms(split.get('input_processing', 0.0))} vs kernels {ms(split.get('kernel_execution', 0.0))}"],
                estimated_savings_s=savings,
                fix={"text": ("Wrap the call in a tf.function with a fixed input_signature so the Python "
                              f"layer code runs once, not per call.{suffix}"),
                     "code": ("serve = tf.function(lambda x: model(x, training=False),\n"
                              f"                    input_signature=[{_spec_code(call.get('input_signature', ''))}])\n"
                              "y = serve(x)"),
                     "guide": GUIDES["performance"], "verified": verified},
            ))
        if choice is not None and len(findings) > before:
            alternatives.apply(findings[-1], choice, call)
            chosen.append(choice["entry"])
    alternatives.mark_recommended(recording, chosen)
    return findings


def input_bound_findings(recording: Recording, explained: dict) -> list[Finding]:
    """Large-batch predict work whose input side takes >= 20% of the call (XProf's threshold)."""
    findings: list[Finding] = []
    for call in recording.calls:
        batch = call.get("batch")
        if call.get("api") not in ("predict", "predict_on_batch") or not batch or batch < LARGE_BATCH:
            continue
        split = call_phase_split(call)
        per_call = sum(split.values())
        input_side = split.get("data_adapter", 0.0) + split.get("input_processing", 0.0)
        if per_call <= 0 or input_side / per_call < INPUT_BOUND_SHARE:
            continue
        count = call.get("count", 0)
        findings.append(Finding(
            code="input-bound", severity=severity_for(input_side * count * 0.5, 0),
            title=(f"{call['api']}() at {short_site(call.get('call_site', ''))} is input-bound: "
                   f"{100 * input_side / per_call:.0f}% of each call prepares data"),
            function=call.get("target", ""), call_site=call.get("call_site", ""),
            evidence=[f"{count} call(s) on {call.get('input_signature')}, {ms(per_call)} per call",
                      f"per call: data adapter {ms(split.get('data_adapter', 0.0))}, input conversion "
                      f"{ms(split.get('input_processing', 0.0))}, kernels {ms(split.get('kernel_execution', 0.0))}"],
            estimated_savings_s=input_side * count * 0.5,
            fix={"text": ("Build the input pipeline once and let it overlap with the model: a tf.data.Dataset "
                          "with batch() and prefetch(), converted to tensors once, passed to predict(). "
                          "Unverified on your model."),
                 "code": ("ds = tf.data.Dataset.from_tensor_slices(x).batch(4096).prefetch(tf.data.AUTOTUNE)\n"
                          "y = model.predict(ds, verbose=0)"),
                 "guide": GUIDES["tfdata"]},
        ))
    return findings


RULES = (retrace_findings, tfdata_findings, call_findings, input_bound_findings)


def run_rules(recording: Recording, explained: dict | None = None) -> list[dict]:
    """All rules, ranked; ``explained`` is ``retracing.explain_all(recording.functions)`` if known."""
    if explained is None:
        explained = retracing.explain_all(recording.functions)
    found: list[Finding] = []
    for rule in RULES:
        found.extend(rule(recording, explained))
    found.sort(key=lambda f: (-f.estimated_savings_s, SEVERITY_RANK.get(f.severity, 3), f.code, f.function))
    return [f.to_dict() for f in found]
