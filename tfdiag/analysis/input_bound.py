"""The input-bound rule: large-batch predict work whose input side takes a large share of each call,
and training steps that wait for their next batch (``training_input_findings``, at XProf's
thresholds: 5% of the steady step is medium, 20% high, naming the user's generator, PyDataset or
tf.data map function and writing the fix from what was observed: a PyDataset's, Sequence's or
generator's batches made on threads or processes as the producer's measured CPU share says).

Its fix (a tf.data input built once, with batch() and prefetch()) is measured or modest: with
``--verify`` the prebuilt input is timed against the user's own ``predict(x)`` on their model,
and the fix quotes that speed-up and is recommended only when it is faster with the same
outputs; without a measurement the finding says it is unverified and is never above medium.
The snippet batches as the user does: the ``batch_size`` they pass to predict() where --verify
recorded it, else the batch each call was observed to carry.
"""

from __future__ import annotations

from ..recording import Recording
from . import alternatives, retracing, training
from .fields import count
from .findings import GUIDES, Finding, at_most, severity_for, short_site
from .phases import call_phase_split
from .tfdata_fix import tfdata_fix
from .training_findings import ESTIMATE, NEGLIGIBLE_S, make_finding, measured_text, severity, split_text, \
    unverified_note
from .units import duration

LARGE_BATCH = 1024       # "large-batch work" starts here (verify times the tf.data input from here)
INPUT_BOUND_SHARE = 0.2  # XProf's input-bound threshold
INPUT_MEDIUM = 0.05  # ... and its medium one (training steps)
UNVERIFIED_SEVERITY = "medium"  # the most an unmeasured fix may claim


def _batch_size(call: dict, target_entries: list[dict]) -> tuple[int, str]:
    """(batch size, what it is) for the snippet: the user's predict() batch_size where --verify
    recorded it, else the rows each call was observed to pass."""
    recorded = next((e["batch_size"] for e in target_entries if isinstance(e.get("batch_size"), int)
                     and not isinstance(e.get("batch_size"), bool) and e["batch_size"] > 0), None)
    if recorded is not None:
        return recorded, "predict()'s batch_size in your calls"
    return retracing.call_batch(call) or 0, f"the rows each {call.get('api')}() call passes"


def _unverified_fix(text: str, batch: tuple[int, str]) -> dict:
    size, what = batch
    return {"text": ("Build the input pipeline once and let it overlap with the model: a tf.data.Dataset "
                     f"with batch() and prefetch(), passed to predict(). {text}"),
            "code": (f"ds = tf.data.Dataset.from_tensor_slices(x).batch({size})"
                     f".prefetch(tf.data.AUTOTUNE)  # once; {size}: {what}\n"
                     "y = model.predict(ds, verbose=0)"),
            "guide": GUIDES["tfdata"], "verified": False}


def input_bound_findings(recording: Recording, explained: dict) -> list[Finding]:
    """Large-batch predict calls (not in a training loop) whose input side takes >= 20% of the call."""
    findings: list[Finding] = []
    measured_any = bool(alternatives.entries(recording))
    for call in recording.calls:
        batch = retracing.call_batch(call)
        if (call.get("api") not in ("predict", "predict_on_batch") or not batch or batch < LARGE_BATCH
                or call.get("training")):
            continue
        split = call_phase_split(call)
        per_call = sum(split.values())
        input_side = split.get("data_adapter", 0.0) + split.get("input_processing", 0.0)
        if per_call <= 0 or input_side / per_call < INPUT_BOUND_SHARE:
            continue
        count = call.get("count", 0)
        evidence = [f"{count} call(s) on {call.get('input_signature')}, {duration(per_call)} per call",
                    f"per call: data adapter {duration(split.get('data_adapter', 0.0))}, input conversion "
                    f"{duration(split.get('input_processing', 0.0))}, kernels {duration(split.get('kernel_execution', 0.0))}"]
        savings = input_side * count * 0.5
        target_entries = alternatives.entries_for(recording, call.get("target", ""))
        batch_size = _batch_size(call, target_entries)
        entry, choice = alternatives.choose_input_pipeline(target_entries, call.get("api", ""))
        if choice is not None:
            fix = alternatives.measured_fix(choice, GUIDES["tfdata"])
            savings = count * (call.get("median_s") or 0.0) * (1.0 - 1.0 / choice["speedup"])
            severity = severity_for(savings, 0)
            evidence.append(f"--verify: the prebuilt tf.data input measured {choice['speedup']:.1f}× faster than "
                            f"{alternatives.label(choice['base']['path'])} on this model and input, same outputs")
        elif alternatives.has_timing(entry or {}):
            base = alternatives.base_entry(target_entries, call.get("api", ""))
            timing = duration(entry["median_s"]) + " per call" + (
                f" against {duration(base['median_s'])} for your {call.get('api')}(x)" if base else "")
            outcome = ("its outputs differed from yours" if not alternatives.is_equivalent(entry)
                       else "it was not clearly faster")
            fix = _unverified_fix(f"Measured on your model, {outcome} ({timing}), so tfdiag does not recommend it.",
                                  batch_size)
            savings, severity = 0.0, "low"
        else:
            reason = (f"--verify could not time it ({entry['error']})" if entry is not None and entry.get("error")
                      else "run `tfdiag analyze --verify` to time it on your model" if not measured_any
                      else "--verify times it only for predict(x) on an array input")
            fix = _unverified_fix(f"Unverified on your model: {reason}.", batch_size)
            severity = at_most(severity_for(savings, 0), UNVERIFIED_SEVERITY)
        findings.append(Finding(
            code="input-bound", severity=severity,
            title=(f"{call['api']}() at {short_site(call.get('call_site', ''))} is input-bound: "
                   f"{100 * input_side / per_call:.0f}% of each call prepares data"),
            function=call.get("target", ""), call_site=call.get("call_site", ""), evidence=evidence,
            estimated_savings_s=savings, fix=fix,
        ))
    return findings


# -- training steps ------------------------------------------------------------------------------
CPU_BOUND_SHARE = 0.5  # the producer thread's CPU seconds over its wall seconds: from here pure Python
# ... and under this, waiting. Between the two the share cannot tell: a pure-Python producer that waits
# for the GIL or for a core TensorFlow's threads hold runs at 0.3-0.5 of its wall time.
WAITING_SHARE = 0.25
# Unmeasured savings of a workers fix (a PyDataset's, a Sequence's, a generator moved into one). N
# workers overlap batch making at best N-fold, so the wait per step falls to no less than wait/N: the
# saving is at most wait * (1 - 1/N), N counted up to the CPUs for processes (pure-Python work runs on
# a core each). Threads on a producer that waits reach that bound: a PyDataset sleeping 30 ms a batch
# (80 steps, one CPU) saved 0.54 of its wait with 2 threads and 0.80 with 4 (bounds 0.50 and 0.75).
# Processes fall short of it (each batch is pickled back, the pool starts each epoch): 0.45 of the
# wait with 2 on that PyDataset, and a reviewer's 2 processes saved 0.40 of what 2 threads saved on
# another: counted at half the bound, as is a producer whose CPU time is unknown (it may need them).
THREAD_OVERLAP, PROCESS_OVERLAP = 1.0, 0.5
WAITING_THREADS = 4  # the fewest threads suggested for a waiting producer (4 beat 2 on that PyDataset, on one CPU)
WORKER_KINDS = ("PyDataset", "Sequence", "generator")


def _making(recording: Recording, call: dict, measured: int | None = None) -> dict:
    """How the batches were made: the producer's wall and CPU seconds on the thread that made them,
    their CPU ``share`` and the ``mode`` it calls for: "threads" (mostly waiting: I/O, sleeps, NumPy/TF
    ops that release the GIL), "processes" (mostly pure Python, which the GIL serialises), None when
    unknown (a recording without ``cpu_seconds``, or batches that came through Keras's worker queue,
    whose thread only waited for them). ``workers``: the N a fix suggests (``measured``: the N --verify
    timed, when it did); ``now``: the workers it ran with."""
    data = training.producer(call) or {}
    seconds, cpu = data.get("seconds"), data.get("cpu_seconds")
    now = data.get("workers") if (data.get("workers") or 0) > 1 else 1
    queued = now > 1 or data.get("use_multiprocessing") is True
    share = min(1.0, max(0.0, cpu / seconds)) if seconds and cpu is not None and not queued else None
    cpus = count(recording.environment.get("cpu_count"))
    workers = max(2, min(8, cpus)) if cpus is not None else 4
    mode = (None if share is None else "processes" if share >= CPU_BOUND_SHARE
            else "threads" if share < WAITING_SHARE else None)
    if mode == "threads":
        workers = max(workers, WAITING_THREADS)  # waiting threads need no core each
    if now > 1:
        workers = max(workers, 2 * now)  # more than it has: the wait is still there
    timed = measured is not None and measured > 1  # --verify timed this many threads: the code shows them
    workers = measured if timed else workers
    # what the code shows: what was measured; unknown, threads, or the processes it already runs
    shown = "threads" if timed else mode or ("processes" if data.get("use_multiprocessing") is True else "threads")
    return {"seconds": seconds, "cpu": cpu if not queued else None, "share": share, "queued": queued, "mode": mode,
            "shown": shown, "timed": timed, "batches": data.get("batches"), "workers": workers, "now": now, "cpus": cpus}


def workers_estimate(making: dict) -> float:
    """The share of the wait a workers fix may save, unmeasured (see THREAD_OVERLAP)."""
    workers, now = making["workers"], making["now"]
    threads = THREAD_OVERLAP * max(0.0, 1.0 - now / workers)
    parallel = min(workers, making["cpus"]) if making["cpus"] else workers
    processes = PROCESS_OVERLAP * max(0.0, 1.0 - now / parallel)
    return threads if making["mode"] == "threads" else processes if making["mode"] == "processes" \
        else min(threads, processes)


def _making_text(making: dict) -> str | None:
    """The evidence line: what was measured of batch making, and what it says."""
    seconds, cpu, share = making["seconds"], making["cpu"], making["share"]
    if not seconds:
        return None
    batches = f"its {making['batches']} batches" if making["batches"] else "its batches"
    if share is None:
        why = ("on Keras's worker threads or processes, whose CPU time tfdiag does not see" if making["queued"]
               else "this recording has no CPU time for them (recorded by newer tfdiag)")
        return f"{batches} took {duration(seconds)} to make; how much of it was CPU work is unknown: {why}"
    if making["mode"] is None:
        return (f"{batches} took {duration(seconds)} to make, {duration(cpu)} of it on the CPU ({100 * share:.0f}%): "
                "between waiting and computing (a pure-Python producer also waits for the GIL and for a core)")
    verdict = ("waiting (I/O, sleeps, NumPy/TF ops that release the GIL), not computing" if making["mode"] == "threads"
               else "pure-Python work, which holds the GIL")
    return (f"{batches} took {duration(seconds)} to make, {duration(cpu)} of it on the CPU "
            f"({100 * share:.0f}%): {verdict}")


def _parallel_text(making: dict, base: str) -> str:
    """Why threads or processes, from what was measured (both, plainly, where it was not)."""
    n, share = making["workers"], making["share"]
    spawn = ("Processes need the dataset picklable (open files, connections and locks inside `__getitem__`, not "
             "in `__init__`), and where processes are spawned (Windows, macOS) the script must call fit() under "
             "`if __name__ == \"__main__\":`.")
    if making["timed"]:
        return f"--verify timed {n} threads: `workers={n}` and no `use_multiprocessing`."
    if making["mode"] == "threads":
        return (f"Making a batch mostly waits ({100 * share:.0f}% of its time on the CPU), so threads overlap it: "
                f"`workers={n}` and no `use_multiprocessing` (processes would only add pickling and start-up).")
    if making["mode"] == "processes":
        cores = (" This machine has 1 CPU: processes cannot make batches in parallel on it, only where there are "
                 "more cores." if making["cpus"] == 1 else "")
        return (f"Making a batch is pure-Python work ({100 * share:.0f}% of its time on the CPU), which the GIL "
                f"serialises across threads, so use processes: `workers={n}, use_multiprocessing=True`. "
                f"{spawn}{cores}")
    return (f"Threads (`workers={n}`) when the {base}'s work mostly waits (reading files, sleeps, NumPy/TF ops "
            "that release the GIL); processes (`use_multiprocessing=True` as well) when it is pure-Python "
            f"computation, which the GIL serialises across threads. {spawn} The code shows "
            + ("processes, as you run now" if making["shown"] == "processes" else "threads")
            + ": this recording does not say which the work is.")


def _pydataset_code(cls: str, making: dict, site: str) -> str:
    n = making["workers"]
    if making["shown"] == "processes":
        return (f"class {cls}(keras.utils.PyDataset):  # processes pickle it: open files and connections in "
                "__getitem__, not __init__\n"
                f"    def __init__(self, ..., **kwargs):\n        super().__init__(workers={n}, use_multiprocessing=True, "
                f"**kwargs)  # __getitem__ in {n} processes\n\n"
                f"if __name__ == \"__main__\":  # needed where processes are spawned (Windows, macOS)\n"
                f"    model.fit({cls}(...), ...)  # at {site}")
    how = ("as --verify timed" if making["timed"] else "it waits" if making["mode"] == "threads"
           else "pure-Python work: add use_multiprocessing=True")
    return (f"class {cls}(keras.utils.PyDataset):\n    def __init__(self, ..., **kwargs):\n"
            f"        super().__init__(workers={n}, **kwargs)  # __getitem__ on {n} threads ({how})")


def _fit_code(what: str, making: dict, site: str) -> str:
    """tf-keras: fit()'s own workers for a Sequence (or one a generator became)."""
    n = making["workers"]
    if making["shown"] == "processes":
        return (f"if __name__ == \"__main__\":  # needed where processes are spawned (Windows, macOS)\n"
                f"    model.fit({what}, workers={n}, use_multiprocessing=True, ...)  # at {site}")
    return f"model.fit({what}, workers={n}, use_multiprocessing=False, ...)  # at {site}"


def input_fix(recording: Recording, call: dict, share: float, measured: int | None = None) -> dict:
    """The fix for a training call's input; ``measured``: the workers --verify timed (the code shows them)."""
    data = training.producer(call) or {}
    kind, name, where = data.get("kind"), str(data.get("name") or ""), data.get("defined_at")
    at = f" (defined at {short_site(where)})" if where else ""
    fit = short_site(call.get("call_site", ""))
    if kind in ("PyDataset", "Sequence"):
        making = _making(recording, call, measured)
        cls = name.split(".")[0] or "YourData"
        now = making["now"]
        already = f" It runs with workers={now} now." if now > 1 else ""
        if recording.environment.get("keras_flavor") == "tf-keras":
            return {"text": (f"Load batches in parallel: your `{cls}`{at} builds each batch in `__getitem__` on the "
                             f"training thread.{already} Pass `workers` to fit() at {fit}. "
                             + _parallel_text(making, "Sequence")),
                    "code": _fit_code(f"{cls}(...)", making, fit), "guide": GUIDES["fit"]}
        return {"text": (f"Load batches in parallel: your PyDataset `{cls}`{at} builds each batch in `__getitem__` "
                         f"while the model waits.{already} Give its constructor `workers`. "
                         + _parallel_text(making, "PyDataset")),
                "code": _pydataset_code(cls, making, fit), "guide": GUIDES["pydataset"]}
    if kind == "generator":
        return _generator_fix(recording, call, data, share)
    if kind == "tf.data":
        return tfdata_fix(data)
    return {"text": (f"Building each batch is on the step's critical path at {fit}: feed fit() a tf.data pipeline "
                     "that batches and prefetches, so the next batch is ready before the step."),
            "code": "ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).prefetch(tf.data.AUTOTUNE)\n"
                    "model.fit(ds, ...)", "guide": GUIDES["tfdata"]}


def training_input(recording: Recording, call: dict) -> Finding | None:
    split = training.step_split(call)
    if call.get("api") not in training.TRAINING_APIS or split is None:
        return None
    step = sum(split.values())
    share = split["data_adapter"] / step
    if share < INPUT_MEDIUM or split["data_adapter"] * training.steady_steps(call) < NEGLIGIBLE_S:
        return None  # under the threshold, or too few steps for the wait to matter
    steps = training.steady_steps(call)
    data = training.producer(call) or {}
    if data.get("kind") == "arrays":
        # Keras feeds arrays through its own tf.data pipeline, already mapped in parallel and
        # prefetched (Keras 3's ArrayDataAdapter, tf-keras's TensorLikeDataAdapter): the wait left
        # is its per-batch cost, which a hand-written pipeline of the same arrays would pay too,
        # and --verify has no other path to time for arrays. Nothing the user would change.
        return None
    name = str(data.get("name") or "")
    if data.get("kind") in ("PyDataset", "Sequence"):
        name = name.split(".")[0]  # the class the user wrote, not its method
    what = {"PyDataset": "PyDataset", "Sequence": "Sequence", "generator": "generator", "tf.data": "tf.data pipeline",
            "arrays": "array input"}.get(str(data.get("kind")), "input")
    named = f" `{name}`" if name else ""
    evidence = [f"{call.get('steps')} steps at {short_site(call.get('call_site', ''))}: {duration(split['data_adapter'])} "
                f"of the {duration(step)} steady step waits for the next batch ({100 * share:.0f}%)",
                "steady step: " + split_text(split, step)]
    making = _making(recording, call) if data.get("kind") in WORKER_KINDS else None
    making_text = _making_text(making) if making is not None else None
    if data:
        made = (f", {data.get('batches')} batches in {duration(data.get('seconds') or 0.0)}"
                if isinstance(data.get("batches"), int) and data.get("batches") and not making_text else "")
        evidence.append(f"input: {what}{named}" + (f" defined at {data.get('defined_at')}" if data.get("defined_at") else "")
                        + made + (f", workers={data.get('workers')}" if data.get("workers") is not None else ""))
    if making_text:
        evidence.append(making_text)
    choice = alternatives.choose_training_input(alternatives.entries_for(recording, call.get("target", "")))
    verified = choice is not None
    timed = count(choice["entry"].get("workers")) if verified and choice["entry"].get("path") == "input:workers" else None
    fix = input_fix(recording, call, share, timed)
    if verified:
        text, measured = measured_text(choice, f"the input with `{str(choice['entry'].get('path')).split(':')[-1]}`")
        fix = dict(fix, text=text + " " + fix["text"], measured=measured)
        savings = split["data_adapter"] * steps * (1.0 - 1.0 / choice["speedup"])
    else:
        kind = (training.producer(call) or {}).get("kind")
        fix["text"] += unverified_note(recording, call.get("target", ""), "input:", replayable=kind != "generator")
        # workers make batches N-fold in parallel at best (workers_estimate); the rest, half the wait
        savings = split["data_adapter"] * steps * (workers_estimate(making) if making is not None else ESTIMATE)
    fix["verified"] = verified
    floor = "high" if share >= INPUT_BOUND_SHARE else "medium"
    settled = fix.pop("settled", False) and not verified  # parallel maps, prefetched: little left to change
    return make_finding("input-bound", call,
                    f"{training.api_text(call)} at {short_site(call.get('call_site', ''))} is input-bound: "
                    f"{100 * share:.0f}% of each step waits for the {what}{named}",
                    evidence, savings, fix, "low" if settled else severity(savings, verified, floor),
                    share=share, producer=data or None,
                    **({"cpu_share": making["share"], "workers": making["workers"]} if making is not None else {}))


def _merged(findings: list[Finding]) -> list[Finding]:
    """Input-bound findings about one producer (fit() and evaluate() on the same PyDataset): one finding,
    the busiest call site speaking for the others, their savings added."""
    by_producer: dict[tuple, Finding] = {}
    out = []
    for finding in sorted(findings, key=lambda f: -f.estimated_savings_s):
        data = finding.details.get("producer") or {}
        key = (finding.function, data.get("kind"), data.get("name"), data.get("defined_at"))
        first = by_producer.get(key) if data.get("name") or data.get("defined_at") else None
        if first is None:
            by_producer[key] = finding
            out.append(finding)
            continue
        first.estimated_savings_s += finding.estimated_savings_s
        first.evidence.append(f"the same input also feeds {finding.details['api']}() at "
                              f"{short_site(finding.call_site)} ({100 * finding.details['share']:.0f}% of its step)")
        first.details.setdefault("call_sites", [first.call_site]).append(finding.call_site)
    return out


def training_input_findings(recording: Recording, explained: dict) -> list[Finding]:
    """Training steps that wait for their next batch: one finding per input (producer)."""
    found = [training_input(recording, c) for c in recording.calls if isinstance(c, dict)]
    return _merged([f for f in found if f is not None])


def _batch_text(spec) -> str:
    """``float32[256, 512]`` for each array of a batch's ``batch_spec`` (empty if unknown)."""
    leaves = spec if isinstance(spec, list) else [spec]
    texts = [f"{leaf['dtype']}[{', '.join('None' if d is None else str(d) for d in leaf['shape'])}]"
             for leaf in leaves if isinstance(leaf, dict) and isinstance(leaf.get("dtype"), str)
             and isinstance(leaf.get("shape"), list)]
    return ", ".join(texts)


def _generator_fix(recording: Recording, call: dict, data: dict, share: float) -> dict:
    """Keras already runs a generator on a tf.data thread, a batch ahead (``from_generator`` and
    ``prefetch``): the wait left is one thread making batches more slowly than the steps use them,
    so the fix makes them in parallel (a PyDataset's or Sequence's workers: threads or processes, as
    the generator's CPU time says) or faster."""
    gen = str(data.get("name") or "") or "your_generator"
    where = data.get("defined_at")
    at = f" (defined at {short_site(where)})" if where else ""
    cls = "".join(part[:1].upper() + part[1:] for part in gen.split(".")[-1].split("_") if part) or "Batches"
    per_epoch = call.get("steps_per_epoch")
    steps = per_epoch[0] if isinstance(per_epoch, list) and per_epoch and isinstance(per_epoch[0], int) else None
    shapes = _batch_text(data.get("batch_spec"))
    tf_keras = recording.environment.get("keras_flavor") == "tf-keras"
    making = _making(recording, call)
    n, processes, site = making["workers"], making["shown"] == "processes", short_site(call.get("call_site", ""))
    base = "keras.utils.Sequence" if tf_keras else "keras.utils.PyDataset"
    how = (f"{n} processes" if processes else f"{n} threads" if making["mode"] == "threads"
           else f"{n} threads; pure-Python work: add use_multiprocessing=True")
    init = "" if tf_keras else (f"    def __init__(self, **kwargs):\n        super().__init__(workers={n}"
                                + (", use_multiprocessing=True" if processes else "")
                                + f", **kwargs)  # batches made in parallel ({how})\n")
    body = (f"class {cls}({base}):  # instead of the generator {gen}{at}\n"
            + ("    # processes pickle it: open files and connections in __getitem__, not __init__\n" if processes else "")
            + init + f"    def __len__(self):\n        return {steps if steps else 'STEPS'}  # batches per epoch\n"
            f"    def __getitem__(self, index):\n        ...  # make batch `index` as {gen} does; return (x, y)\n\n")
    if tf_keras:
        fit = _fit_code(f"{cls}()", making, site)
    elif processes:
        fit = (f"if __name__ == \"__main__\":  # needed where processes are spawned (Windows, macOS)\n"
               f"    model.fit({cls}(), ...)  # at {site}")
    else:
        fit = f"model.fit({cls}(), ...)  # at {site}"
    kind = base.rsplit(".", 1)[-1]
    return {"text": (f"Your generator `{gen}`{at} makes one batch at a time{f' ({shapes})' if shapes else ''}. Keras "
                     "already runs it on a tf.data thread, a batch ahead of the step, so the step waits only because "
                     "a batch takes longer to make than to train on. Make batches in parallel: move the generator's "
                     f"body into a {kind}'s `__getitem__` (one batch per index) with `workers`"
                     + (" (given to fit())" if tf_keras else "") + ". " + _parallel_text(making, kind)
                     + " Building each batch with whole-array NumPy instead of row by row helps either way."),
            "code": body + fit, "guide": GUIDES["pydataset" if not tf_keras else "fit"]}
