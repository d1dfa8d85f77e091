"""The training rules: callback-bound steps, fixed per-step overhead and eager training, each read
off the steady step (``training.step_split``) and written against the user's own code: their
callback class, their compile() and fit() lines, their step function; and the helpers every
training rule shares (``input_bound.training_input_findings`` uses them for input-bound steps).

Why a module of its own: predict's rules (``call_findings``, ``input_bound``) reason per call; a
training call is thousands of steps, and its advice (workers, prefetch, steps_per_execution,
verbose=2, tf.function on the step) is different. Savings come from ``--verify``'s measurements on
a clone of the model (``alternatives.choose_training``/``choose_training_input``) when present;
otherwise they are an estimate, said to be unverified, and the severity is never above medium.

Cost: one pass over the ``calls`` entries; no TensorFlow.
"""

from __future__ import annotations

from ..recording import Recording
from . import alternatives, training
from .fields import number
from .findings import GUIDES, SEVERITY_RANK, Finding, at_most, severity_for, short_site
from .units import duration

CALLBACK_SHARE, CALLBACK_HIGH = 0.10, 0.20  # one callback taking this share of the step (high from the second)
OVERHEAD_SHARE = 0.5  # fixed cost (all but the model's ops and input) at least half the step ...
OVERHEAD_STEPS = 100  # ... over at least this many steps
NEGLIGIBLE_S = 0.01  # below this in the whole run, a finding is a low note whatever its share
UNVERIFIED = "medium"  # the most an unmeasured fix may claim
ESTIMATE = 0.5  # unmeasured: assume the fix removes half of the cost it targets
CALLBACK_EVERY = 50  # "do the work every N batches"
SPE = 32  # the steps_per_execution an unmeasured fix suggests


def make_finding(code: str, call: dict, title: str, evidence: list[str], savings: float, fix: dict,
             severity: str, **details) -> Finding:
    return Finding(code=code, severity=severity, title=title, function=str(call.get("target") or ""),
                   call_site=details.pop("site", None) or call.get("call_site", ""), evidence=evidence,
                   estimated_savings_s=max(0.0, savings), fix=fix,
                   details={"training": True, "api": call.get("api"), **details})


def severity(savings: float, verified: bool, floor: str | None = None) -> str:
    """From the seconds at stake (and a share threshold's ``floor``), capped when unmeasured."""
    severity = severity_for(savings, 0)
    if floor is not None and savings >= NEGLIGIBLE_S:  # at least what the share threshold says
        severity = min(severity, floor, key=SEVERITY_RANK.__getitem__)
    return severity if verified else at_most(severity, UNVERIFIED)


def measured_text(choice: dict, what: str) -> tuple[str, dict]:
    best, base = choice["entry"], choice["base"]
    diff = best.get("max_abs_diff")
    same = f", loss within tolerance (difference {diff:.1e})" if isinstance(diff, (int, float)) else ""
    text = (f"Measured by --verify on a clone of your model with your own batches ({best.get('steps_timed') or '?'} "
            f"steps per path): {what} takes {duration(best['median_s'])} per batch against "
            f"{duration(base['median_s'])} as written, {choice['speedup']:.1f}× faster{same}.")
    return text, {"path": best.get("path"), "speedup": choice["speedup"], "median_s": best["median_s"],
                  "base_path": base.get("path"), "base_median_s": base["median_s"]}


def unverified_note(recording: Recording, target: str, prefix: str = "train:", replayable: bool = True) -> str:
    """Why a fix is unmeasured: --verify's own words for this model's ``prefix`` paths (``train:``
    or ``input:``), or that it was not run; ``replayable``: False for an input --verify cannot run
    again (a generator)."""
    if not replayable:
        return (" Unverified (an estimate): a generator cannot be run again after your code has used it, so "
                "--verify does not time it.")
    entries = [e for e in alternatives.entries_for(recording, target)
               if e.get("kind") == "training" and str(e.get("path", "")).startswith(prefix)]
    errors = [e.get("error") for e in entries if e.get("error")]
    if errors:
        return f" Unverified: --verify could not measure it on this model ({errors[0]})."
    if entries:
        return " Unverified: --verify measured no faster equivalent setting for this one."
    return " Unverified on your model (an estimate): run `tfdiag analyze --verify` to time it on a clone."


def split_text(split: dict, step: float) -> str:
    return ", ".join(f"{p} {duration(v)} ({100 * v / step:.0f}%)" for p, v in
                     sorted(split.items(), key=lambda kv: -kv[1]) if v > 0 and step > 0)


# -- callback-bound -------------------------------------------------------------------------------
def _callback_fix(recording: Recording, call: dict, callback: dict) -> dict:
    name, fit = callback["name"], short_site(call.get("call_site", ""))
    if callback.get("progress_bar"):
        api = call.get("api")
        return {"text": (f"Keras's progress bar (`{name}`, {api}()'s default verbose=1) updates every batch and "
                         "waits for each step's logs. Pass `verbose=2` (one line per epoch) or `verbose=0` to your "
                         f"{api}() at {fit}."),
                "code": f"model.{api}(..., verbose=2)  # at {fit}: one line per epoch, no per-batch bar",
                "guide": GUIDES["fit"]}
    if not callback.get("user"):
        return {"text": (f"Keras's `{name}`, in the callbacks you pass at {fit}, does work on every batch. Where it "
                         "has a per-epoch setting (TensorBoard's `update_freq=\"epoch\"`, ModelCheckpoint's "
                         "`save_freq=\"epoch\"`), set it where you create the callback; otherwise it costs this much "
                         "for as long as it is in the list."),
                "code": "", "guide": GUIDES["callbacks"]}
    hook = "on_test_batch_end" if call.get("api") in ("evaluate", "test_on_batch") else "on_train_batch_end"
    base = ("tf.keras.callbacks.Callback" if recording.environment.get("keras_flavor") == "tf-keras"
            else "keras.callbacks.Callback")
    where = f"  # defined at {short_site(callback['defined_at'])}" if callback.get("defined_at") else ""
    return {"text": (f"Your callback `{name}` does its work in a batch hook on every step. Do it every "
                     f"{CALLBACK_EVERY} batches, or once per epoch in `on_epoch_end`."),
            "code": (f"class {name}({base}):{where}\n    def {hook}(self, batch, logs=None):\n"
                     f"        if batch % {CALLBACK_EVERY}:  # every {CALLBACK_EVERY} batches, not every one\n"
                     "            return\n        ...  # your per-batch work, unchanged\n"
                     "    # or move it to on_epoch_end(self, epoch, logs=None)"),
            "guide": GUIDES["callbacks"]}


def callback_bound(recording: Recording, call: dict) -> list[Finding]:
    if call.get("api") not in training.TRAINING_APIS or training.step_split(call) is None:
        return []
    step = training.step_seconds(call)
    out = []
    for callback in training.callbacks(call):
        steps = training.steady_steps(call)
        if callback["share"] < CALLBACK_SHARE or callback["per_step_s"] * steps < NEGLIGIBLE_S:
            continue
        savings = callback["per_step_s"] * steps * (1.0 - 1.0 / CALLBACK_EVERY)
        fix = _callback_fix(recording, call, callback)
        fix["text"] += (" Unverified: the saving is an estimate from the time measured in its hooks "
                        f"({duration(callback['per_step_s'])} per step).")
        fix["verified"] = False
        site = call.get("call_site", "") if callback["progress_bar"] or not callback.get("defined_at") \
            else callback["defined_at"]
        kind = "Keras's progress bar" if callback["progress_bar"] else (
            "Your callback" if callback["user"] else "Keras's callback")
        out.append(make_finding(
            "callback-bound", call,
            f"{kind} `{callback['name']}` takes {100 * callback['share']:.0f}% of each step of "
            f"{training.api_text(call)} at {short_site(call.get('call_site', ''))}",
            [f"`{callback['name']}`" + (f" (defined at {callback['defined_at']})" if callback.get("defined_at") else "")
             + f": {duration(callback['per_step_s'])} per step of a {duration(step)} step, "
             f"{callback.get('calls', '?')} hook calls in sampled calls",
             f"{call.get('steps')} steps in all at {short_site(call.get('call_site', ''))}"],
            savings, fix, severity(savings, False, "high" if callback["share"] >= CALLBACK_HIGH else "medium"),
            site=site, callback=callback["name"], share=callback["share"], user=callback["user"]))
    return out


# -- step-overhead --------------------------------------------------------------------------------
SPE_PATHS = ("train:as_written", "train:steps_per_execution=8", "train:steps_per_execution=32")


def step_overhead(recording: Recording, call: dict) -> Finding | None:
    """Steps whose fixed cost (all but the model's ops, the wait for input and callbacks named in
    their own finding) is at least half of each step. The model's ops are what the TF Profiler
    measured on the call site's profiled steps where it did: capture sees the graph call only
    from outside, so its kernel_execution also holds the call's own dispatch, most of a small
    step. Without the profiler's figure, the split's kernel_execution stands for them."""
    split = training.step_split(call)
    if (call.get("api") not in training.MULTI_STEP_APIS or split is None or call.get("steps_per_execution") != 1
            or call.get("run_eagerly") is True or training.steady_steps(call) < OVERHEAD_STEPS):
        return None
    step = sum(split.values())
    # callbacks a callback-bound finding names are its to fix (one finding, one saving per cost)
    claimed = sum(c["per_step_s"] for c in training.callbacks(call) if c["share"] >= CALLBACK_SHARE)
    # The profiler's host planes hold CPU op time; on a GPU they hold the kernels' launches
    profiled = None if _gpus(recording) else training.profiled_steps(recording, call)
    measured = None if profiled is None else profiled[0]
    model = split["kernel_execution"] if measured is None else min(measured, split["kernel_execution"])
    fixed = step - model - split["data_adapter"] - claimed
    if fixed / step < OVERHEAD_SHARE:
        return None
    target, steps = str(call.get("target") or ""), training.steady_steps(call)
    compile_at = training.compile_line(recording, target)
    where = f"at {short_site(compile_at)}" if compile_at else "where you compile the model"
    entries = [e for e in alternatives.entries_for(recording, target) if e.get("path") in SPE_PATHS]
    choice = alternatives.choose_training(entries)
    timed = [e for e in entries if e.get("path") != "train:as_written" and alternatives.has_timing(e)]
    if choice is None and timed:
        return None  # --verify measured steps_per_execution on a clone, and it did not help
    spe = int(str(choice["entry"]["path"]).rsplit("=", 1)[-1]) if choice else SPE
    fix = {"text": (f"Run {spe} steps per call of the compiled train function: `steps_per_execution={spe}` in "
                    f"your compile() {where}. The fixed cost of a step (Python, callbacks, dispatch) is then paid "
                    f"once per {spe} batches; batch-level callbacks and logs then run once per {spe} batches too."),
           "code": f"model.compile(..., steps_per_execution={spe})  # {where}", "guide": GUIDES["fit"]}
    if choice is not None:
        text, fix["measured"] = measured_text(choice, f"steps_per_execution={spe}")
        fix["text"] = text + " " + fix["text"]
        # The measurement is the truth (part of kernel_execution is the graph call's own dispatch,
        # which it removes too), but what it saves on input and on callbacks named apart is
        # their findings' to claim.
        savings = min(steps * step * (1.0 - 1.0 / choice["speedup"]),
                      steps * (step - split["data_adapter"] - claimed))
    else:
        fix["text"] += unverified_note(recording, target)
        savings = steps * fixed * ESTIMATE
    fix["verified"] = choice is not None
    parts = {p: v for p, v in split.items() if p not in ("kernel_execution", "data_adapter")}
    if measured is not None:  # the graph call's dispatch: kernel_execution less the model's ops
        parts["kernel_execution"] = max(0.0, split["kernel_execution"] - model)
    head = f"{training.api_text(call)} at {short_site(call.get('call_site', ''))}"
    title = (f"{head} spends {100 * fixed / step:.0f}% of each {duration(step)} step on fixed per-step overhead, "
             f"{duration(model)} on the model's ops")
    median = number(call.get("step_median_s"))
    return make_finding(
        "step-overhead", call, title,
        [f"{call.get('steps')} steps with steps_per_execution=1, steady step {duration(step)}"
         + (f" (median {duration(median)})" if median else ""),
         *([f"the TF Profiler measured {duration(measured)} of the model's op time per step on "
            f"{profiled[1]} steady steps; capture's kernel_execution, "
            f"{duration(split['kernel_execution'])}, also holds the graph call's own dispatch"]
           if measured is not None else []),
         f"fixed cost per step {duration(fixed)}: " + split_text(
             {("graph call dispatch" if p == "kernel_execution" else p): v for p, v in parts.items()}, step),
         f"the model's ops {duration(model)}, waiting for input {duration(split['data_adapter'])}"
         + (f", callbacks named in their own finding {duration(claimed)}" if claimed else "")],
        savings, fix, severity(savings, choice is not None), compile_line=compile_at)


def _gpus(recording: Recording) -> bool:
    """Whether the run had an accelerator (``devices``: "GPU:/physical_device:GPU:0", ...)."""
    environment = recording.environment if isinstance(recording.environment, dict) else {}
    devices = environment.get("devices") if isinstance(environment.get("devices"), list) else []
    return any(str(d).split(":", 1)[0] in ("GPU", "TPU") for d in devices)


# -- eager-training -------------------------------------------------------------------------------
def eager_fit(recording: Recording, call: dict) -> Finding | None:
    if call.get("api") not in training.TRAINING_APIS or call.get("run_eagerly") is not True:
        return None
    target = str(call.get("target") or "")
    split = training.step_split(call)
    step = training.step_seconds(call)
    steps = training.steady_steps(call) or max(0, (call.get("count") or 0) - 1)
    compile_at = training.compile_line(recording, target)
    where = f"at {short_site(compile_at)}" if compile_at else "where you compile the model"
    entries = alternatives.entries_for(recording, target)
    choice = alternatives.choose_training([e for e in entries if e.get("path") in ("train:as_written", "train:graph")])
    fix = {"text": (f"Drop `run_eagerly=True` from your compile() {where} (or the line that sets `model.run_eagerly`): Keras then "
                    "runs the train step as one compiled graph instead of op by op from Python."),
           "code": f"model.compile(...)  # {where}: without run_eagerly=True", "guide": GUIDES["fit"]}
    if choice is not None:
        text, fix["measured"] = measured_text(choice, "the graph train step (run_eagerly=False)")
        fix["text"] = text + " " + fix["text"]
        savings = steps * step * (1.0 - 1.0 / choice["speedup"])
    else:
        fix["text"] += unverified_note(recording, target)
        wait = split["data_adapter"] + split["callbacks"] if split else 0.0
        savings = steps * max(0.0, step - wait) * ESTIMATE
    fix["verified"] = choice is not None
    return make_finding("eager-training", call,
                    f"{training.api_text(call)} at {short_site(call.get('call_site', ''))} trains eagerly: "
                    f"run_eagerly=True runs each step op by op from Python",
                    [f"{call.get('steps') or call.get('count')} steps, steady step {duration(step)}",
                     *(["steady step: " + split_text(split, step)] if split else [])],
                    savings, fix, severity(savings, choice is not None), compile_line=compile_at)


def eager_step(recording: Recording, call: dict) -> Finding | None:
    if call.get("api") != training.CUSTOM_STEP or call.get("eager") is not True:
        return None
    name, count = str(call.get("target") or ""), call.get("count") or 0
    median = float(call.get("median_s") or 0.0)
    phases = call.get("phases") if isinstance(call.get("phases"), dict) else {}
    measured = (call.get("phase_calls") or 0) > 0 and sum(v for v in phases.values() if isinstance(v, (int, float))) > 0
    if measured:
        total = sum(v for v in phases.values() if isinstance(v, (int, float)))
        python_share = max(0.0, 1.0 - (phases.get("kernel_execution", 0.0) + phases.get("data_adapter", 0.0)) / total)
    else:
        python_share = 1.0
    savings = max(0, count - 1) * median * python_share * ESTIMATE
    inline = name in ("", "<module>")
    models = sum(c.get("count", 0) for c in recording.calls if isinstance(c, dict) and c.get("api") == "__call__"
                 and training.in_eager_step(recording, c))
    if inline:
        text = (f"Your training loop's step at {short_site(call.get('call_site', ''))} runs eagerly, op by op from Python. "
                "Move the step (forward pass under the tape, gradient, optimizer update) into a function decorated "
                "with @tf.function and call it in the loop.")
        code = ("@tf.function  # traces once; every later step runs as one graph\ndef train_step(x, y):\n"
                "    with tf.GradientTape() as tape:\n        loss = loss_fn(y, model(x, training=True))\n"
                "    grads = tape.gradient(loss, model.trainable_variables)\n"
                "    optimizer.apply_gradients(zip(grads, model.trainable_variables))\n    return loss")
    else:
        where = f" (defined at {short_site(call.get('defined_at'))})" if call.get("defined_at") else ""
        text = (f"Decorate your step function `{name}`{where} with @tf.function: the forward pass, the gradient and "
                "the optimizer update then run as one graph, and its Python runs once per trace instead of every step.")
        code = (f"@tf.function  # traces once; every later step runs as one graph\ndef {name}(...):\n"
                "    ...  # your step, unchanged")
    text += (" Unverified on your model (an estimate of half the step's Python time): --verify does not time "
             "custom loops.")
    evidence = [f"{count} eager steps called at {short_site(call.get('call_site', ''))}, median {duration(median)} per step",
                (f"{100 * python_share:.0f}% of the step is not kernels or input (Python and per-op dispatch)"
                 if measured else "the step's split was not measured: the estimate assumes half the step is saved")]
    if models:
        evidence.append(f"{models} model calls inside it ran eagerly (model(x, training=True)); this finding covers them")
    return make_finding("eager-training", call,
                    f"The training step {training.api_text(call)} at {short_site(call.get('call_site', ''))} runs "
                    f"eagerly {count} times, {duration(median)} per step",
                    evidence, savings, {"text": text, "code": code, "guide": GUIDES["training"], "verified": False},
                    severity(savings, False), defined_at=call.get("defined_at"))


def training_findings(recording: Recording, explained: dict) -> list[Finding]:
    """step-overhead, eager-training and callback-bound for every training call (input-bound for
    training steps is ``input_bound.training_input_findings``)."""
    found: list[Finding] = []
    for call in recording.calls:
        if not isinstance(call, dict) or not training.is_training(call):
            continue
        eager = eager_fit(recording, call) or eager_step(recording, call)
        found.extend(f for f in (step_overhead(recording, call), eager) if f is not None)
        found.extend(callback_bound(recording, call))
    return found
