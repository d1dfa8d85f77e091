"""How the user calls the model: predict()-family overhead and eager loops, with advice that fits
the context.

A call made in a training loop (``training: true``: ``model(x, training=True)`` or under a
GradientTape) never gets inference advice (predict-family paths, LiteRT, an inference
``tf.function``): its fix is a ``tf.function`` on the user's own step function. The same fix for
the same model at several call sites is one finding that lists the sites (``details.call_sites``).
"""

from __future__ import annotations

from ..recording import Recording
from . import alternatives, retracing
from .findings import GUIDES, Finding, severity_for, short_site
from .phases import call_phase_split
from .units import duration

SMALL_BATCH = 256        # predict-overhead: per-call cost matters on batches up to this size
EAGER_LOOP_CALLS = 20    # eager-loop: a hot loop has at least this many calls
OVERHEAD_PHASES = ("data_adapter", "graph_creation", "other", "input_processing", "output_processing")


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


def _kind(call: dict) -> str | None:
    """``predict-overhead``, ``eager-loop`` or None for one call site."""
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
    return None


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
    return (split.get("other", 0.0) + split.get("input_processing", 0.0)) * count * 0.5


def call_findings(recording: Recording, explained: dict) -> list[Finding]:
    groups: dict[tuple, list[dict]] = {}
    for call in recording.calls:
        kind = _kind(call)
        if kind is not None:
            groups.setdefault(_group_key(kind, call), []).append(call)
    findings = []
    for (kind, *_), calls in groups.items():
        calls.sort(key=lambda c: -(c.get("count", 0) * (c.get("median_s") or 0.0)))
        findings.append(_finding(recording, kind, calls))
    return findings


def _finding(recording: Recording, kind: str, calls: list[dict]) -> Finding:
    call = calls[0]  # the busiest site speaks for the group
    training = bool(call.get("training"))
    count = sum(c.get("count", 0) for c in calls)
    median = call.get("median_s", 0.0)
    split = call_phase_split(call)
    sites = [c.get("call_site", "") for c in calls]
    where = short_site(sites[0]) + (f" and {len(sites) - 1} more call site(s)" if len(sites) > 1 else "")
    api = call.get("api", "")
    target_entries = alternatives.entries_for(recording, call.get("target", ""))
    choice = alternatives.choose(target_entries, api, training=training)
    if choice is not None:
        suffix = ""
    elif training:
        suffix = " Unverified on your model: --verify times inference paths only."
    elif alternatives.entries(recording):
        suffix = (alternatives.unmeasured_note(target_entries, api) if target_entries
                  else " Not verified: --verify did not measure this model.")
    else:
        suffix = " Unverified on your model: run `tfdiag analyze --verify` to time each path."
    evidence = [f"{c.get('count', 0)} calls of {_api_text(c)} at {short_site(c.get('call_site', ''))} on "
                f"{c.get('input_signature')}, median {duration(c.get('median_s', 0.0))}" for c in calls[:5]]
    if kind == "predict-overhead":
        if any(split.values()):
            evidence.append("per call: " + ", ".join(f"{p} {duration(v)}" for p, v in split.items() if v > 0))
        advice, code = _fastest_path_advice(recording.environment.get("keras_flavor"))
        title = f"{api}() at {where} costs {duration(median)} per call × {count} calls, mostly fixed per-call overhead"
        fix = {"text": f"In a loop of small batches, {advice}.{suffix}", "code": code, "guide": GUIDES["predict"]}
    else:
        evidence.append(f"per call: Python/Keras overhead {duration(split.get('other', 0.0))} and input conversion "
                        f"{duration(split.get('input_processing', 0.0))} vs kernels {duration(split.get('kernel_execution', 0.0))}")
        title = (f"{_api_text(call)} at {where} runs eagerly{' in a training loop' if training else ''} "
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
        finding.estimated_savings_s = sum(_savings(kind, c) for c in calls)
    finding.severity = severity_for(finding.estimated_savings_s, 0)
    return finding


def _api_text(call: dict) -> str:
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
