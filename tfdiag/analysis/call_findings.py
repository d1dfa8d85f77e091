"""How the user calls the model: predict()-family overhead and eager loops, with advice that fits
the context.

A call made in a training loop (``training: true``: ``model(x, training=True)`` or under a
GradientTape) never gets inference advice (predict-family paths, LiteRT, an inference
``tf.function``): its fix is a ``tf.function`` on the user's own step function. The same fix for
the same model at several call sites is one finding that lists the sites (``details.call_sites``).

Unmeasured advice depends on the API the user already calls (``predict()`` -> a path without its
per-call tf.data pipeline; ``predict_on_batch()`` -> a tf.function with an input_signature from the
call's ``input_spec``) and says it is unverified: ``--verify`` measures the paths on their model.
The tf.data functions ``predict()`` traces per call are part of a predict-overhead finding's
graph_creation, so that finding lists them in its evidence and ``tfdata-retrace`` stays silent on
the call sites it covers (``covered_sites``): one finding and one saving per call site. Tracing
another finding claims (Keras's functions rebuilt or grown at the same call site) is left out of
the predict-overhead saving, so no second counts it. A model call made inside a custom loop's eager
step (a ``train_step`` entry) gets no eager-loop finding: ``eager-training`` speaks for that step.
``fit()``/``evaluate()`` called in a loop for a few steps each (``call-overhead``) pay their setup
(data adapter, pipeline, callbacks' begin and end) per call: the fix is the single-batch API
(``train_on_batch``/``test_on_batch``) or one call over all the data; it is unverified.
"""

from __future__ import annotations

from ..recording import Recording
from . import alternatives, retracing, training
from .fields import count as whole, number
from .findings import GUIDES, Finding, at_most, severity_for, short_site
from .phases import call_phase_split
from .units import duration

SMALL_BATCH = 256        # predict-overhead: per-call cost matters on batches up to this size
EAGER_LOOP_CALLS = 20    # eager-loop: a hot loop has at least this many calls
LOOP_STEPS = 4           # call-overhead: fit()/evaluate() calls of at most this many steps each ...
FIXED_SHARE = 0.5        # ... whose cost is at least this much outside their steps
ADAPTER_SHARE = 0.1      # predict_on_batch(): a data adapter this big a share of the call is said so
OVERHEAD_PHASES = ("data_adapter", "graph_creation", "other", "input_processing", "output_processing")


def _unmeasured_fix(call: dict, flavor: str | None) -> dict:
    """The path to try first, from the API the user already calls (not measured on their model)."""
    if call.get("api") == "predict_on_batch":
        fix = _serve_fix(call)
        split = call_phase_split(call)
        adapter, total = split.get("data_adapter", 0.0), sum(split.values())
        if total > 0 and adapter >= ADAPTER_SHARE * total:  # measured: the batch still goes through a data adapter
            how = ("tf-keras's predict_on_batch() wraps each batch in a one-batch tf.data iterator"
                   if flavor == "tf-keras" else "its data adapter and iterator")
            fix["text"] = (f"Each predict_on_batch() call here still spends {100 * adapter / total:.0f}% of its time "
                           f"in the data adapter ({how}); the model called in a tf.function on the batch itself "
                           "makes none. " + fix["text"])
        else:
            fix["text"] = ("You already call predict_on_batch(), so no tf.data pipeline is built per call; what is "
                           "left is Keras's Python per call. " + fix["text"])
        return fix
    if flavor == "tf-keras":
        text, code = ("call the model directly, `model(x, training=False)`: tf-keras's predict_on_batch() still "
                      "builds a data handler per call", "y = model(x, training=False).numpy()")
    else:
        text, code = ("use `model.predict_on_batch(x)` (no tf.data pipeline per call) or a tf.function with a "
                      "fixed input_signature", "y = model.predict_on_batch(x)  # no tf.data pipeline per call")
    return {"text": f"In a loop of small batches, {text}.", "code": code, "guide": GUIDES["predict"]}


def tfdata_traces(recording: Recording, sites) -> list[dict]:
    """Traces of tf.data's functions made during the calls at ``sites`` (predict()'s per-call pipeline)."""
    return [t for f in recording.functions if f.get("origin") == "tf.data"
            for t in f.get("traces", []) if t.get("call_site") in sites]


def _claimed_s(recording: Recording, explained: dict, site: str) -> float:
    """Seconds of tracing at ``site`` another finding claims: Keras's functions rebuilt or grown there."""
    total = 0.0
    for position, function in enumerate(recording.functions):
        if not retracing.is_library(function) or function.get("origin") == "tf.data":
            continue
        kinds = {e.index: e.kind for e in explained.get(position, [])}
        total += sum(t.get("duration_s", 0.0) for t in function.get("traces", [])
                     if t.get("call_site") == site and kinds.get(t.get("index")) in ("rebuilt", "growth"))
    return total


def covered_sites(recording: Recording) -> set[str]:
    """Call sites a call-path finding (predict-overhead, eager-loop) speaks for."""
    return {c.get("call_site") for c in recording.calls if _kind(c) is not None}


def _kind(call: dict) -> str | None:
    """``predict-overhead``, ``eager-loop``, ``call-overhead`` (fit()/evaluate() in a loop, a few steps
    per call) or None for one call site."""
    count, median = call.get("count", 0), call.get("median_s", 0.0)
    if count < 3 or not median or median <= 0:
        return None
    split = call_phase_split(call)
    per_call = sum(split.values())
    shares = {p: (v / per_call if per_call > 0 else 0.0) for p, v in split.items()}
    small_batch = call.get("batch") is None or call.get("batch") <= SMALL_BATCH
    if (call.get("api") in ("predict", "predict_on_batch") and median >= 0.002 and small_batch
            and shares.get("kernel_execution", 0.0) < 0.5 and not call.get("training")):
        return "predict-overhead"
    if (call.get("api") == "__call__" and count >= EAGER_LOOP_CALLS
            and shares.get("other", 0.0) + shares.get("input_processing", 0.0) >= 0.5):
        return "eager-loop"
    if call.get("api") in training.MULTI_STEP_APIS and median >= 0.002:
        steps = _steps_per_call(call)
        if steps is not None and steps <= LOOP_STEPS and _outside_steps(call) >= FIXED_SHARE * median:
            return "call-overhead"
    return None


def _steps_per_call(call: dict) -> float | None:
    steps, calls = whole(call.get("steps")), whole(call.get("count"))
    return steps / calls if steps is not None and calls else None


def _outside_steps(call: dict) -> float:
    """Seconds of a median fit()/evaluate() call spent outside its steps (building the data adapter
    and its pipeline, the callbacks' begin and end, the steps' first-call setup). Each call's first
    step is left out of the step median (steps.py): with one step a call there is none, and the
    steady split's kernel share stands for the step."""
    median = number(call.get("median_s")) or 0.0
    step = number(call.get("step_median_s"))
    if step is not None and step > 0:
        return max(0.0, median - (_steps_per_call(call) or 0.0) * step)
    split = call_phase_split(call)
    total = sum(split.values())
    return max(0.0, median * (1.0 - split.get("kernel_execution", 0.0) / total)) if total > 0 else 0.0


def _caller_key(call: dict) -> tuple:
    caller = call.get("caller") if isinstance(call.get("caller"), dict) else {}
    return (caller.get("name"), caller.get("defined_at"))


def _group_key(kind: str, call: dict) -> tuple:
    """Call sites that share one fix: same model and API; in a training loop, the same step function."""
    if call.get("training"):
        return (kind, call.get("target"), call.get("api"), True, _caller_key(call))
    return (kind, call.get("target"), call.get("api"), False, None)


def _savings(kind: str, call: dict) -> float:
    split = call_phase_split(call)
    count, median = call.get("count", 0), call.get("median_s", 0.0) or 0.0
    if kind == "predict-overhead":
        fixed = sum(split.get(p, 0.0) for p in OVERHEAD_PHASES)
        return fixed * count if fixed > 0 else max(0.0, median - split.get("kernel_execution", 0.0)) * count * 0.5
    if kind == "call-overhead":  # unmeasured: half of what the calls spent outside their steps
        return _outside_steps(call) * count * 0.5
    return (split.get("other", 0.0) + split.get("input_processing", 0.0)) * count * 0.5


def call_findings(recording: Recording, explained: dict) -> list[Finding]:
    groups: dict[tuple, list[dict]] = {}
    for call in recording.calls:
        kind = _kind(call)
        if kind == "eager-loop" and training.in_eager_step(recording, call):
            continue  # eager-training speaks for the step function that makes this call
        if kind is not None:
            groups.setdefault(_group_key(kind, call), []).append(call)
    findings = []
    for (kind, *_), calls in groups.items():
        calls.sort(key=lambda c: -(c.get("count", 0) * (c.get("median_s") or 0.0)))
        findings.append(_finding(recording, kind, calls, explained))
    return findings


def _finding(recording: Recording, kind: str, calls: list[dict], explained: dict) -> Finding:
    call = calls[0]  # the busiest site speaks for the group
    training = bool(call.get("training"))
    count = sum(c.get("count", 0) for c in calls)
    median = call.get("median_s", 0.0)
    split = call_phase_split(call)
    sites = [c.get("call_site", "") for c in calls]
    where = short_site(sites[0]) + (f" and {len(sites) - 1} more call site(s)" if len(sites) > 1 else "")
    api = call.get("api", "")
    target_entries = alternatives.entries_for(recording, call.get("target", ""))
    # --verify's inference paths are no alternative to a fit()/evaluate() loop
    choice = None if kind == "call-overhead" else alternatives.choose(target_entries, api, training=training)
    if choice is not None:
        suffix = ""
    elif training:
        suffix = " Unverified on your model: --verify times inference paths only."
    elif alternatives.entries(recording):
        suffix = (alternatives.unmeasured_note(target_entries, api) if target_entries
                  else " Not verified: --verify did not measure this model.")
    else:
        suffix = " Unverified on your model: run `tfdiag analyze --verify` to time each path."
    evidence = [f"{c.get('count', 0)} calls of {api_text(c)} at {short_site(c.get('call_site', ''))} on "
                f"{c.get('input_signature')}, median {duration(c.get('median_s', 0.0))}" for c in calls[:5]]
    if kind == "predict-overhead":
        if any(split.values()):
            evidence.append("per call: " + ", ".join(f"{p} {duration(v)}" for p, v in split.items() if v > 0))
        data = tfdata_traces(recording, set(sites))
        if data:
            traced_s = sum(t.get("duration_s", 0.0) for t in data)
            evidence.append(f"of its graph_creation: {len(data)} traces of tf.data's functions over {count} calls "
                            f"({len(data) / max(count, 1):.1f} per call, {duration(traced_s)}): "
                            f"{api}() builds a new input pipeline on every call")
        title = f"{api}() at {where} costs {duration(median)} per call × {count} calls, mostly fixed per-call overhead"
        fix = _unmeasured_fix(call, recording.environment.get("keras_flavor"))
        fix["text"] += suffix
    elif kind == "call-overhead":
        per_call = _steps_per_call(call) or 0.0
        step = number(call.get("step_median_s"))
        measure = (f"median step {duration(step)}" if step else
                   "each call's only step is its first: the steps are the calls' kernel time")
        evidence.append(f"{call.get('steps')} steps in {count} calls ({per_call:.3g} per call, {measure}): "
                        f"{duration(_outside_steps(call))} of each call is outside its steps")
        title = (f"{api}() at {where} is called {count} times for {per_call:.3g} step{'' if per_call == 1 else 's'} "
                 f"each: {duration(median)} per call, mostly its own setup")
        fix = _loop_fix(call)
        fix["text"] += " Unverified on your model: --verify times inference paths and fit()'s settings only."
    else:
        evidence.append(f"per call: Python/Keras overhead {duration(split.get('other', 0.0))} and input conversion "
                        f"{duration(split.get('input_processing', 0.0))} vs kernels {duration(split.get('kernel_execution', 0.0))}")
        title = (f"{api_text(call)} at {where} runs eagerly{' in a training loop' if training else ''} "
                 f"{count} times, {duration(median)} per call")
        fix = _training_fix(call) if training else _serve_fix(call)
        fix["text"] += suffix
    fix["verified"] = choice is not None
    finding = Finding(
        code=kind, severity=severity_for(0.0, 0), title=title, function=call.get("target", ""),
        call_site=sites[0], evidence=evidence, estimated_savings_s=0.0, fix=fix,
        details={"call_sites": sites, "training": training, "api": api,
                 **({"caller": call.get("caller")} if call.get("caller") else {})},
    )
    if choice is not None:
        alternatives.apply(finding, choice, call)
        finding.estimated_savings_s = sum(
            c.get("count", 0) * (c.get("median_s") or 0.0) * (1.0 - 1.0 / choice["speedup"]) for c in calls)
    else:
        claimed = {c.get("call_site"): _claimed_s(recording, explained, c.get("call_site")) if kind == "predict-overhead"
                   else 0.0 for c in calls}
        if sum(claimed.values()) > 0:
            finding.evidence.append(f"{duration(sum(claimed.values()))} of its graph_creation re-traced Keras's functions "
                                    "(a rebuilt model or new input shapes): counted in that finding, not here")
        finding.estimated_savings_s = max(0.0, sum(_savings(kind, c) for c in calls) - sum(claimed.values()))
    finding.severity = severity_for(finding.estimated_savings_s, 0)
    if kind == "call-overhead":  # an estimate: never above medium until measured
        finding.severity = at_most(finding.severity, "medium")
    return finding


def _loop_fix(call: dict) -> dict:
    """fit()/evaluate() called in a loop for a batch at a time: the single-batch API runs the same
    compiled step on the batch, without building a data adapter, its tf.data pipeline and the
    callbacks each call."""
    api, site = call.get("api"), short_site(call.get("call_site", ""))
    single = "train_on_batch" if api == "fit" else "test_on_batch"
    one = (_steps_per_call(call) or 0.0) <= 1.0
    how = (f"`model.{single}(x, y)` runs the same compiled step on your batch directly" if one else
           f"split each call's data into batches and call `model.{single}(x_batch, y_batch)` on each: it runs the "
           "same compiled step on a batch directly")
    return {"text": (f"Each {api}() call at {site} builds a data adapter and its tf.data pipeline and runs the "
                     f"callbacks' begin and end hooks before its few steps. {how[0].upper()}{how[1:]}, and returns "
                     "the loss and metrics (no callbacks, no History object). Or gather the data and make one "
                     f"{api}() call over all of it."),
            "code": (f"logs = model.{single}(x, y, return_dict=True)  # instead of model.{api}(x, y, ...) at {site}"),
            "guide": GUIDES["fit"]}


def api_text(call: dict) -> str:
    """The user's call as code: ``predict()``, ``model(x)``, ``model(x, training=True)``."""
    if call.get("api") == "__call__":
        return "model(x, training=True)" if call.get("training") else "model(x)"
    return f"{call.get('api')}()"


def _serve_fix(call: dict) -> dict:
    """Inference: one tf.function around the model, its input_signature from the call's input_spec."""
    spec = retracing.spec_code(call.get("input_spec"))
    note = "" if spec is not None else "# input_signature: your input's shape and dtype, None for the batch dimension\n"
    return {"text": ("Wrap the call in a tf.function with a fixed input_signature so the Python "
                     "layer code runs once, not per call."),
            "code": (f"{note}serve = tf.function(lambda x: model(x, training=False),  # once, outside the loop\n"
                     f"                    input_signature=[{spec or 'tf.TensorSpec(None, tf.float32)'}])\n"
                     "y = serve(x)"),
            "guide": GUIDES["performance"]}


def _training_fix(call: dict) -> dict:
    """A training loop: compile the user's own step function, named with its line."""
    caller = call.get("caller") if isinstance(call.get("caller"), dict) else None
    if caller and caller.get("name"):
        name = str(caller["name"])
        short = name.rsplit(".", 1)[-1]
        where = f" (defined at {short_site(caller.get('defined_at') or '')})" if caller.get("defined_at") else ""
        return {"text": (f"This call is in a training loop (training=True or under a GradientTape), so inference "
                         f"paths do not apply. Decorate your step function `{name}`{where} with @tf.function: the "
                         "forward pass, the gradient and the optimizer update then run as one graph, and the "
                         "Python code runs once per trace instead of every step."),
                "code": (f"@tf.function  # traces once; every later step runs as one graph\n"
                         f"def {short}(...):\n    ...  # your step, unchanged"),
                "guide": GUIDES["training"]}
    return {"text": (f"This call is in a training loop (training=True or under a GradientTape) at module level, so "
                     f"inference paths do not apply. Move the step at {short_site(call.get('call_site', ''))} (forward "
                     "pass under the tape, gradient, optimizer update) into a function decorated with @tf.function "
                     "and call it in the loop."),
            "code": ("@tf.function  # traces once; every later step runs as one graph\n"
                     "def train_step(x, y):\n"
                     "    with tf.GradientTape() as tape:\n"
                     "        loss = loss_fn(y, model(x, training=True))\n"
                     "    grads = tape.gradient(loss, model.trainable_variables)\n"
                     "    optimizer.apply_gradients(zip(grads, model.trainable_variables))\n"
                     "    return loss"),
            "guide": GUIDES["training"]}
