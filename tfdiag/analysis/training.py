"""The step view of training: fit(), evaluate(), train_on_batch()/test_on_batch() and custom loops.

Why: a training call is one long call made of many steps, so its per-call split says little; what
the user can act on is the steady step (``step_phases``: mean seconds per step, each call's first
step apart), the callbacks that run every step, the code that produces the batches, and how the
steps evolve across epochs. The training rules (``training_findings``), the verdict and the report
all read the recording's training fields through this module, so they never disagree.

Cost: pure passes over the ``calls`` entries (no TensorFlow); the step timeline is at most the
2,000 points capture kept per call site.
"""

from __future__ import annotations

import statistics

from ..recording import PHASES, Recording
from .fields import count, number
from .phases import STEP_APIS

TRAINING_APIS = STEP_APIS  # Keras's step-running APIs
MULTI_STEP_APIS = ("fit", "evaluate")  # APIs whose calls run many steps (steps_per_execution applies)
CUSTOM_STEP = "train_step"  # a custom training loop's eager step (api of its calls entry)
PROGRESS_BAR = "ProgbarLogger"  # Keras's own progress bar (fit's verbose=1)




def is_training(call: dict) -> bool:
    """A call the training rules speak for (not predict's family, not model(x), not a user tf.function)."""
    return call.get("api") in TRAINING_APIS or call.get("api") == CUSTOM_STEP


def is_step(call: dict) -> bool:
    """One call is one step: a custom loop's eager step, or a user tf.function that applies gradients."""
    return call.get("api") == CUSTOM_STEP or call.get("training_step") is True


def in_view(call: dict) -> bool:
    """A call the step view and the training verdict show: the training rules' calls and graph steps."""
    return is_training(call) or call.get("training_step") is True


def step_split(call: dict) -> dict[str, float] | None:
    """Mean seconds per steady step in each phase (missing phases are 0), or None if not measured."""
    phases, per = call.get("step_phases"), 1
    if not isinstance(phases, dict) and is_step(call):  # a call is a step: its steady split per call
        if isinstance(call.get("steady_phases"), dict) and any(call["steady_phases"].values()):
            phases = call["steady_phases"]
        else:
            phases, per = call.get("phases"), count(call.get("phase_calls")) or 0
    if not isinstance(phases, dict) or per <= 0:
        return None
    split = {p: max(0.0, number(phases.get(p)) or 0.0) / per for p in PHASES}
    return split if sum(split.values()) > 0 else None


def first_step_split(call: dict) -> dict[str, float] | None:
    phases = call.get("first_step_phases")
    if not isinstance(phases, dict):
        return None
    split = {p: max(0.0, number(phases.get(p)) or 0.0) for p in PHASES}
    return split if sum(split.values()) > 0 else None


def steady_steps(call: dict) -> int:
    """Steps after each call's first step at this call site (what the steady split describes)."""
    steps = count(call.get("steps"))
    if steps is None:
        return 0
    return max(0, steps - max(1, count(call.get("count")) or 1))


def step_seconds(call: dict) -> float:
    """The steady step's mean seconds (the split's sum), else its median, else 0."""
    split = step_split(call)
    if split is not None:
        return sum(split.values())
    return number(call.get("step_median_s")) or 0.0


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def producer(call: dict) -> dict | None:
    """The code that made the batches, each field of the type the contract gives it (else None)."""
    value = call.get("data_producer")
    if not isinstance(value, dict):
        return None
    maps = [{"name": m["name"], "defined_at": _text(m.get("defined_at")),
             **{key: m[key] for key in ("parallel", "py_function") if isinstance(m.get(key), bool)}}
            for m in value.get("map_functions") or [] if isinstance(m, dict) and _text(m.get("name"))]
    multi, prefetched = value.get("use_multiprocessing"), value.get("prefetched")
    return {"kind": _text(value.get("kind")), "name": _text(value.get("name")),
            "defined_at": _text(value.get("defined_at")), "seconds": number(value.get("seconds")),
            "cpu_seconds": number(value.get("cpu_seconds")),
            "batches": count(value.get("batches")), "workers": count(value.get("workers")),
            "use_multiprocessing": multi if isinstance(multi, bool) else None, "map_functions": maps,
            "prefetched": prefetched if isinstance(prefetched, bool) else None,
            "batch_spec": value.get("batch_spec") if isinstance(value.get("batch_spec"), (dict, list)) else None}


def callbacks(call: dict) -> list[dict]:
    """The call's callbacks, each with ``share`` of the steady step, most seconds first."""
    step = step_seconds(call)
    split = step_split(call)
    # a callback's per_step_s may include each call's first step; it never exceeds the steady callbacks phase
    ceiling = split["callbacks"] if split is not None else None
    out = []
    for entry in call.get("callbacks") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        per_step = number(entry.get("per_step_s")) or 0.0
        per_step = min(per_step, ceiling) if ceiling is not None else per_step
        out.append(dict(entry, per_step_s=per_step, share=per_step / step if step > 0 else 0.0,
                        defined_at=_text(entry.get("defined_at")), calls=count(entry.get("calls")),
                        seconds=number(entry.get("seconds")),
                        user=entry.get("user") is True, progress_bar=entry.get("name") == PROGRESS_BAR
                        and entry.get("user") is not True))
    out.sort(key=lambda e: -(e["seconds"] or e["per_step_s"]))
    return out


def profiled_steps(recording: Recording, call: dict) -> tuple[float, int] | None:
    """(the model's op time per step, steps profiled) that the TF Profiler measured on a few steady
    steps of this call's call site (``tf_profiler.step_sites``: the self time of the graph's ops,
    tf.data's left out; the median step where the steps are listed), or None where it did not
    (no profiler window, or steps it could only time from outside)."""
    section = recording.extra.get("tf_profiler")
    sites = section.get("step_sites") if isinstance(section, dict) else None
    for site in sites if isinstance(sites, list) else []:
        if (isinstance(site, dict) and site.get("measure") == "op_self_time"
                and (site.get("api"), site.get("call_site")) == (call.get("api"), call.get("call_site"))):
            # The median profiled step: on a loaded machine one of a few early steps can be
            # preempted mid-op, and a mean would carry that into every step.
            steps = site.get("steps")
            per_step = [number(step.get("model_op_s")) for step in (steps if isinstance(steps, list) else [])
                        if isinstance(step, dict)]
            per_step = [seconds for seconds in per_step if seconds is not None and seconds >= 0]
            seconds = statistics.median(per_step) if per_step else number(site.get("model_op_s_per_call"))
            if seconds is not None and seconds >= 0:
                return seconds, count(site.get("calls_profiled")) or 0
    return None


def compile_line(recording: Recording, target: str) -> str | None:
    """The user's line that compiled model ``target`` (last seen), else the line that created it."""
    compiled, created = None, None
    for function in recording.functions:
        if not isinstance(function, dict) or function.get("model") != target:
            continue
        created = created or function.get("model_created_at")
        for trace in function.get("traces") or []:
            if isinstance(trace, dict) and trace.get("compiled_at"):
                compiled = trace["compiled_at"]
    return compiled or created


def api_text(call: dict) -> str:
    if is_step(call):
        name = str(call.get("target") or "")
        return "your training loop" if name in ("", "<module>") else f"{name}()"
    return f"{call.get('api')}()"


def timeline_points(call: dict) -> dict | None:
    """The first call's steps as chart data: ``points`` ({step, duration_s, epoch_start, first}),
    ``epoch_starts`` (step numbers), ``stride``; None when capture kept no timeline."""
    timeline = call.get("step_timeline")
    if not isinstance(timeline, dict):
        return None
    stride = count(timeline.get("stride")) or 1
    stride = max(1, stride)
    durations = [d for d in (timeline.get("durations_s") or []) if number(d) is not None]
    if not durations:
        return None
    starts = sorted({s for s in (timeline.get("epoch_starts") or []) if count(s) is not None and s >= 0})
    start_set = set(starts)
    points = []
    for index, value in enumerate(durations[:2000]):
        step = index * stride
        points.append({"step": step, "duration_s": max(0.0, float(value)), "first": step == 0,
                       "epoch_start": step in start_set,
                       "epoch": sum(1 for s in starts if s <= step) or 1})
    return {"points": points, "epoch_starts": starts, "stride": stride,
            "steps_shown": len(points), "last_step": points[-1]["step"]}


def call_view(recording: Recording, call: dict) -> dict:
    """One training call site as the report shows it."""
    split = step_split(call)
    step = step_seconds(call)
    custom = is_step(call)  # one call of the step function is one step
    return {
        "api": call.get("api"), "training_step": call.get("training_step") is True, "one_call_per_step": custom,
        "label": (f"training loop step {api_text(call)}{' (tf.function)' if call.get('api') == 'tf.function' else ''}"
                  if custom
                  else f"{api_text(call)} {call.get('target')}".strip()),
        "target": call.get("target"), "call_site": call.get("call_site", ""), "count": call.get("count", 0),
        "steps": count(call.get("count" if custom else "steps")), "epochs": count(call.get("epochs")),
        "steps_per_epoch": [s for s in (call.get("steps_per_epoch") or []) if count(s) is not None][:10],
        "step_median_s": number(call.get("median_s" if custom else "step_median_s")),
        "step_p95_s": number(call.get("p95_s" if custom else "step_p95_s")),
        "first_step_s": number(call.get("first_s" if custom else "first_step_s")), "step_s": step,
        "split": split, "shares": {p: v / step for p, v in split.items()} if split and step > 0 else None,
        "first_split": first_step_split(call),
        "callbacks": callbacks(call), "producer": producer(call),
        "steps_per_execution": count(call.get("steps_per_execution")),
        "run_eagerly": call.get("run_eagerly") if isinstance(call.get("run_eagerly"), bool) else None,
        "jit_compile": call.get("jit_compile") if isinstance(call.get("jit_compile"), bool) else None,
        "eager": call.get("eager") is True, "defined_at": call.get("defined_at"),
        "total_s": number(call.get("total_s")) or 0.0,
        "timeline": timeline_points(call),
    }


def _sites(recording: Recording) -> list[dict]:
    """The calls, a user tf.function step's entries (one per input signature) merged per call site:
    its steps added, the busiest entry's timings."""
    merged: dict[tuple, dict] = {}
    out = []
    for call in recording.calls:
        if not (isinstance(call, dict) and call.get("api") == "tf.function" and call.get("training_step") is True):
            out.append(call)
            continue
        key = (call.get("target"), call.get("call_site"))
        if key not in merged:
            merged[key] = dict(call)
            out.append(merged[key])
            continue
        site = merged[key]
        busiest = call if (call.get("count") or 0) > (site.get("count") or 0) else site
        site.update({k: busiest.get(k) for k in ("median_s", "p95_s", "steady_phases", "phases", "phase_calls")},
                    count=(site.get("count") or 0) + (call.get("count") or 0),
                    total_s=(number(site.get("total_s")) or 0.0) + (number(call.get("total_s")) or 0.0))
    return out


def training_view(recording: Recording) -> list[dict]:
    """Every training call site, most time first."""
    rows = [call_view(recording, c) for c in _sites(recording) if isinstance(c, dict) and in_view(c)]
    rows.sort(key=lambda r: -r["total_s"])
    return rows


def training_seconds(recording: Recording) -> tuple[float, float]:
    """(seconds in training calls, seconds in every other timed call not nested in a training step)."""
    training = other = 0.0
    for call in recording.calls:
        if not isinstance(call, dict):
            continue
        total = number(call.get("total_s")) or 0.0
        if in_view(call):
            training += total
        elif not call.get("training"):  # model(x, training=True) runs inside a step counted above
            other += total
    return training, other


def dominates(recording: Recording) -> bool:
    """Training calls take most of the timed wall time."""
    training, other = training_seconds(recording)
    return training > 0 and training >= other


def eager_steps(recording: Recording) -> list[dict]:
    """The custom training loops' eager steps (``train_step`` entries with ``eager: true``)."""
    return [c for c in recording.calls if isinstance(c, dict) and c.get("api") == CUSTOM_STEP
            and c.get("eager") is True]


def in_eager_step(recording: Recording, call: dict) -> bool:
    """A model call made inside a custom loop's eager step: eager-training speaks for it."""
    caller = call.get("caller") if isinstance(call.get("caller"), dict) else None
    if not call.get("training") or caller is None:
        return False
    for step in eager_steps(recording):
        name = str(caller.get("name") or "").rsplit(".", 1)[-1]
        if (caller.get("defined_at") and caller.get("defined_at") == step.get("defined_at")) or (
                name and name == step.get("target")):
            return True
    return False
