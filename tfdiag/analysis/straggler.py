"""The ``straggler`` finding: the worker of a multi-worker job that holds the others back.

Why: in a job of several workers, the slowest one sets every worker's pace. The rule compares,
per training call site the workers share, each worker's median step with the others' median,
and names a worker whose step is at least ``RATIO`` times the others' by its task (``worker:1``),
with the phase that makes it slow: the phase whose seconds per step differ most from the others'.

A synchronous job (MultiWorkerMirroredStrategy's all-reduce) needs one more step of reasoning:
every worker waits for the slowest inside the collective op each step, so all steps last the same,
and a fast worker's wait is inside its kernel_execution (the collective runs in the step's graph
function, which tfdiag times from outside). The workers' steps are then compared without that
wait: the least kernel time among the workers is the step's own kernel work (the collective
included), and a worker's kernel time above it is waiting for the straggler. That wait is said
to be waiting in the finding, never the fast workers' own cost. A straggler whose own *kernels*
are slower cannot be told apart this way (its wait and theirs both look like kernel time): the
rule speaks about the phases outside the graph then, and says nothing.

Cost: pure arithmetic over a few numbers per worker and call site; no TensorFlow.
"""

from __future__ import annotations

import statistics

from ..recording import PHASES
from .findings import Finding, severity_for
from .units import duration

RATIO = 1.2  # a worker's step at least this many times the others' median is a straggler
KERNEL = "kernel_execution"
GUIDE = "https://www.tensorflow.org/tutorials/distribute/multi_worker_with_keras"

_FIXES = {
    "callbacks": ("`{task}` spends {phase_s} per step in Keras callbacks that the other workers do not "
                  "(its report lists them): every worker waits for it at each all-reduce. Run per-step "
                  "work like logging or checkpointing less often (in `on_epoch_end`, or every N batches), "
                  "or on one worker only when it is not needed on the others."),
    "data_adapter": ("`{task}` waits {phase_s} per step for its batches, more than the others: its input "
                     "pipeline is the slowest, and every worker waits for it. Make its batches faster "
                     "(`.prefetch(tf.data.AUTOTUNE)`, `num_parallel_calls` in `map`, data on local disk), "
                     "and give each worker an equal share of the data."),
    "input_processing": ("`{task}` spends {phase_s} per step preparing its inputs, more than the others: "
                         "move that preparation into the `tf.data` pipeline (`map` with "
                         "`num_parallel_calls`) or do it once before training."),
    "other": ("`{task}` spends {phase_s} per step in Python outside the model and its callbacks (your "
              "loop or another thread of its process). Find what runs there only on that worker "
              "(its report's cProfile table) and move it out of the steps."),
    "graph_creation": ("`{task}` traces functions during its steps ({phase_s} per step) where the others do "
                       "not: its report's retracing section says which function and why."),
    "output_processing": ("`{task}` spends {phase_s} per step turning outputs into Python values: fetch "
                          "fewer outputs per step on that worker."),
    KERNEL: ("`{task}`'s own kernels take {phase_s} per step longer than the others': its machine is slower "
             "or busier (other processes, fewer cores, a throttled CPU). Give it the same hardware and "
             "nothing else to run, or fewer examples per step."),
}


# A worker's own findings that speak for a phase (their codes start so): the straggler's fix cites them.
_RELATED = {"callbacks": ("callback-bound",), "data_adapter": ("input-bound", "tfdata-retrace"),
            "input_processing": ("input-bound",), "graph_creation": ("retrace-", "tfdata-retrace", "model-rebuilt"),
            "other": ("step-overhead", "eager-training")}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _waits(rows: list[dict]) -> dict[str, float]:
    """Per worker, its kernel time per step above the least of the workers' (waiting in collectives)."""
    kernels = {row["task"]: row["split"][KERNEL] for row in rows if row.get("split")}
    if len(kernels) < 2:
        return {}
    least = min(kernels.values())
    return {task: max(0.0, kernel - least) for task, kernel in kernels.items()}


def _own(row: dict, waits: dict[str, float]) -> tuple[float, dict | None]:
    """A worker's step and split without its wait in the collectives."""
    wait = waits.get(row["task"], 0.0)
    split = dict(row["split"]) if row.get("split") else None
    if split is not None:
        split[KERNEL] = max(0.0, split[KERNEL] - wait)
    return max(0.0, row["step_s"] - wait), split


def site_findings(site: dict) -> list[dict]:
    """``straggler`` findings at one call site. ``site``: ``label``, ``call_site``, ``target`` and
    ``workers`` (each ``task``, ``step_s`` its median step, ``split`` seconds per steady step by
    phase or None, ``steps``, ``findings``: that worker's own findings at this call site, and
    ``collective_s``: its collective ops' seconds per step as its TF Profiler measured them, or None)."""
    rows = [r for r in site.get("workers") or [] if r.get("step_s") and r["step_s"] > 0]
    if len(rows) < 2:
        return []
    found = []
    raw = {r["task"]: r["step_s"] for r in rows}
    slowest = max(rows, key=lambda r: r["step_s"])
    others_raw = _median([s for t, s in raw.items() if t != slowest["task"]])
    synchronous = slowest["step_s"] < RATIO * others_raw
    waits = _waits(rows) if synchronous else {}
    own = {r["task"]: _own(r, waits) for r in rows}
    straggler = max(rows, key=lambda r: own[r["task"]][0])
    others = [r for r in rows if r is not straggler]
    step, split = own[straggler["task"]]
    others_step = _median([own[r["task"]][0] for r in others])
    if others_step <= 0 or step < RATIO * others_step:
        return found
    phase, gap, others_split = _slow_phase(split, [own[r["task"]][1] for r in others])
    found.append(_finding(site, straggler, others, step, others_step, phase, gap, split, others_split,
                          waits, synchronous))
    return found


def _slow_phase(split: dict | None, others: list[dict | None]) -> tuple[str | None, float, dict]:
    """The phase whose seconds per step exceed the others' median by the most, that excess, and the
    others' median split."""
    known = [o for o in others if o]
    if not split or not known:
        return None, 0.0, {}
    median = {p: _median([o.get(p, 0.0) for o in known]) for p in PHASES}
    gaps = {p: split.get(p, 0.0) - median[p] for p in PHASES}
    phase = max(PHASES, key=lambda p: gaps[p])
    return (phase, gaps[phase], median) if gaps[phase] > 0 else (None, 0.0, median)


def _finding(site, straggler, others, step, others_step, phase, gap, split, others_split, waits,
             synchronous) -> dict:
    task = straggler["task"]
    names = ", ".join(f"`{r['task']}`" for r in others)
    where = f"{site['label']} at `{site['call_site']}`"
    ratio = step / others_step
    evidence = []
    if synchronous:
        evidence.append(
            f"Median step at {where}: " + ", ".join(f"`{r['task']}` {duration(r['step_s'])}" for r in [straggler, *others])
            + ": about the same on every worker, as a synchronous all-reduce makes each worker wait for the "
              "slowest at every step.")
        evidence.append(f"Without that wait, `{task}`'s step takes {duration(step)} and the others' "
                        f"{duration(others_step)} (median): {ratio:.1f}×.")
    else:
        evidence.append(f"Median step at {where}: `{task}` {duration(straggler['step_s'])}, the others "
                        f"({names}) {duration(others_step)} (median): {ratio:.1f}×.")
    if phase is not None:
        evidence.append(f"`{task}` spends {duration(split[phase])} per step in {phase}; the others "
                        f"{duration(others_split.get(phase, 0.0))} (median).")
    waiting = [(r["task"], waits.get(r["task"], 0.0)) for r in others if waits.get(r["task"], 0.0) > 0]
    if waiting and straggler.get("split"):
        lead = straggler["split"][KERNEL]
        for other, wait in waiting:
            kernel = next(r["split"][KERNEL] for r in others if r["task"] == other)
            evidence.append(
                f"`{other}`'s kernel_execution ({duration(kernel)} per step) exceeds `{task}`'s "
                f"({duration(lead)}) by {duration(wait)}, about the time `{task}` adds in {phase or 'its slower step'}: "
                f"that is `{other}` waiting for `{task}` inside the all-reduce (a collective op), not "
                f"`{other}`'s own kernels.")
    measured = [r for r in [straggler, *others] if r.get("collective_s") is not None]
    if waiting and len(measured) == len(others) + 1:
        evidence.append("The TF Profiler's trace of each worker's steps agrees: its collective ops (the all-reduce) "
                        "ran " + ", ".join(f"{duration(r['collective_s'])} per step on `{r['task']}`" for r in measured)
                        + ".")
    related = next((f for f in straggler.get("findings") or [] if f.get("code", "").startswith(
        _RELATED.get(phase or "", ("-",)))), None)
    if related is not None:
        evidence.append(f"`{task}`'s own report finds: {related.get('title')}")
    steps = straggler.get("steps") or 0
    savings = max(0.0, step - others_step) * steps
    fix_text = _FIXES.get(phase or "", "Find what `{task}` does in its steps that the others do not: its "
                                       "report has the split of its steps.")
    fix = {"text": fix_text.format(task=task, phase_s=duration(split[phase]) if phase else ""),
           "code": None, "guide": GUIDE, "verified": False}
    if related is not None and isinstance(related.get("fix"), dict):
        fix.update(text=f"Every worker waits for `{task}` at each all-reduce, so the {duration(split[phase])} per step "
                        f"it spends in {phase} is lost on every worker. On `{task}`: {related['fix'].get('text', '')}",
                   code=related["fix"].get("code"))
    title = (f"`{task}` is the straggler at {site['label']} {site['call_site'].rsplit('/', 1)[-1]}: its step "
             f"takes {ratio:.1f}× the others'" + (f", from {phase}" if phase else ""))
    return Finding(
        code="straggler", severity=severity_for(savings, 0), title=title, function=str(site.get("target") or ""),
        call_site=site["call_site"], evidence=evidence, estimated_savings_s=savings, fix=fix,
        details={"worker": task, "phase": phase, "ratio": ratio, "step_s": step, "others_step_s": others_step,
                 "median_step_s": {r["task"]: r["step_s"] for r in [straggler, *others]},
                 "phase_s_per_step": split.get(phase) if phase else None,
                 "others_phase_s_per_step": others_split.get(phase) if phase else None,
                 "synchronous": synchronous, "collective_wait_s_per_step": {t: w for t, w in waits.items() if w > 0},
                 "profiled_collective_s_per_step": {r["task"]: r.get("collective_s") for r in [straggler, *others]
                                                    if r.get("collective_s") is not None}},
    ).to_dict()


def findings(sites: list[dict]) -> list[dict]:
    """``straggler`` findings over every shared call site, most time at stake first."""
    found = [f for site in sites for f in site_findings(site)]
    found.sort(key=lambda f: -f["estimated_savings_s"])
    return found
