"""--verify for training: the fit() what-ifs timed on clones of the user's model, never on it.

Per model the user trained (``fit_keeper.Fitted``), each path gets its own clone
(``keras.models.clone_model`` or tf-keras's, the user's weights copied in, a fresh optimizer of
the same config, the same loss and metrics via ``get_compile_config``), compiled with the user's
settings except one: ``steps_per_execution`` 8 or 32, ``jit_compile=True``, or
``run_eagerly=False`` where the user ran eagerly. Each clone first trains STEPS steps on the
user's own first batches (held in memory and cycled): that traces it, and its loss after those
steps, against the user's setting's, says whether it trains the same. Then the clones are timed
in round-robin rounds of STEPS steps each (one fit() call, the epoch timed by a callback, so
fit()'s own setup stays out) until the budget is spent. The input pipeline alone is timed by
``input_paths.py``; which path to recommend is decided by ``analysis.alternatives``.

Cost: one clone per path (the model's memory again, freed afterwards), one trace per clone,
and STEPS steps per clone per round. The user's model is only read (its weights, configs and
compile config); its optimizer, History and compile state are never touched.
"""

from __future__ import annotations

import gc
import time
from typing import Callable

from ..analysis.alternatives import TRAIN_BASE, choose_training, choose_training_input
from . import input_paths, random_state
from .measure import _median
from .paths import short_error

STEPS = 64  # steps per fit() of a clone: a multiple of 32, so steps_per_execution=32 runs whole executions
MAX_ROUNDS = 12
SETUP_SHARE = 0.6  # no clone is built after this share of the model's budget is spent
WARM_SHARE = 0.1  # the user's setting's first STEPS steps stop early past this share (after the trace)
LOSS_RTOL = 1e-2  # losses within LOSS_ATOL + LOSS_RTOL * |loss| after the same steps train the same
LOSS_ATOL = 1e-4
NOISE_FACTOR = 3.0  # for a model that trains randomly: within this many times its own run-to-run spread
INPUT_SHARE = 0.25  # the input pipeline's share of a model's budget (when it has one to time)


class NotClonable(Exception):
    """The model cannot be cloned, compiled and trained apart from the user's."""


def keras_of(model):
    """The Keras the model belongs to: tf_keras for tf-keras models, else Keras 3."""
    if any(cls.__module__.split(".")[0] == "tf_keras" for cls in type(model).__mro__):
        import tf_keras

        return tf_keras
    import keras

    return keras


def compile_kwargs(model, keras) -> dict:
    """The user's compile() arguments, rebuilt from the compile config: a fresh optimizer of the
    same config, fresh metrics, the same loss and settings. The user's objects are only read."""
    config = model.get_compile_config() if hasattr(model, "get_compile_config") else None
    if not config:
        raise NotClonable("the model is not compiled (or its compile config is unavailable)")
    try:
        return dict(keras.saving.deserialize_keras_object(config))
    except Exception as exc:  # a custom loss or metric not registered: the same loss, no metrics
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None or not hasattr(optimizer, "get_config"):
            raise NotClonable(f"its compile config cannot be rebuilt ({short_error(exc, 120)})") from None
        return {"optimizer": type(optimizer).from_config(optimizer.get_config()), "loss": model.loss,
                "run_eagerly": config.get("run_eagerly"), "steps_per_execution": config.get("steps_per_execution"),
                "jit_compile": config.get("jit_compile"), "metrics_dropped": True}


def make_clone(model, keras, overrides: dict, first_x):
    """A compiled clone with the user's weights; compile() takes the user's settings but ``overrides``."""
    kwargs = compile_kwargs(model, keras)
    kwargs.pop("metrics_dropped", None)
    kwargs.update(overrides)
    try:
        clone = keras.models.clone_model(model)
    except Exception as exc:
        raise NotClonable(f"clone_model failed: {exc.__class__.__name__}: {short_error(exc, 160)}") from None
    if not clone.built or len(clone.weights) != len(model.weights):
        clone(first_x)  # a model built lazily (no Input): build it as fit() would
    clone.set_weights(model.get_weights())
    _same_random_state(clone, model)
    clone.compile(**{k: v for k, v in kwargs.items() if v is not None or k in ("loss", "metrics")})
    return clone


def _same_random_state(clone, model) -> None:
    """The clone draws the same random numbers as the user's model would next (Dropout masks),
    so a random model trains the same on every path. Keras 3 lists each layer's seed-generator
    state among ``variables`` (not ``weights``); tf-keras layers keep a ``tf.random.Generator``
    (read from the user's layer, reset on the clone's). Where neither applies (tf-keras's legacy
    stateful ops), the run-to-run spread is measured instead (``_widen_by_noise``)."""
    mine, theirs = clone.variables, model.variables
    if len(mine) == len(theirs):
        for variable, value in zip(mine, theirs):
            if "seed_generator" in str(getattr(variable, "path", variable.name)) and variable.shape == value.shape:
                variable.assign(value.numpy() if hasattr(value, "numpy") else value)
    try:
        pairs = list(zip(clone.submodules, model.submodules))
    except Exception:  # no tf.Module walk (Keras 3 layers are not tf.Modules on every version)
        return
    for layer, user_layer in pairs:
        ours, theirs = getattr(layer, "_random_generator", None), getattr(user_layer, "_random_generator", None)
        source = getattr(theirs, "_generator", None)
        if ours is None or source is None or not hasattr(ours, "_maybe_init"):
            continue
        try:
            ours._maybe_init()
            if getattr(ours, "_generator", None) is not None:
                ours._generator.reset(source.state.numpy())
        except Exception:  # leave it random: the spread is measured instead
            continue


def dataset_of(batches: list[tuple]):
    """The kept batches, in order, repeated: every clone sees the same batches in the same order."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensors(batches[0])
    for batch in batches[1:]:
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(batch))
    return dataset.repeat()


def _timer(keras, clock: Callable[[], float], limit_s: float | None = None):
    class EpochTimer(keras.callbacks.Callback):
        """Times the epoch (not fit()'s setup) and keeps its loss."""

        def __init__(self) -> None:
            super().__init__()
            self.began = self.seconds = self.loss = self.traced = None
            self.steps = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.began = clock()

        def on_train_batch_end(self, batch, logs=None):
            self.steps = int(batch) + 1  # with steps_per_execution > 1, the execution's last step
            if limit_s is None:
                return
            if self.traced is None:
                self.traced = clock()  # the first execution traced the step: the limit counts from here
            elif clock() - self.traced > limit_s and self.steps % (32 if self.steps >= 32 else 8) == 0:
                self.model.stop_training = True  # slow steps: fewer (whole executions of 8 or 32) on every path

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = clock() - self.began
            loss = (logs or {}).get("loss")
            self.loss = float(loss) if loss is not None else None

    return EpochTimer()


def run_steps(clone, keras, dataset, steps: int, clock: Callable[[], float], limit_s: float | None = None):
    """One fit() of ``steps`` steps on the clone (fewer where ``limit_s`` runs out after the trace)."""
    timer = _timer(keras, clock, limit_s)
    clone.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer], shuffle=False)
    return timer


class _Run:
    """What a train_on_batch() loop gives, shaped as the epoch timer."""
    __slots__ = ("seconds", "loss", "steps")


def run_batches(clone, batches: list[tuple], steps: int, clock: Callable[[], float], limit_s: float | None = None):
    """``steps`` train_on_batch() calls over the cycled batches, as the user's loop makes them; the
    loss is the mean of the batch losses (what fit() reports for an epoch of the same batches)."""
    run, losses, traced = _Run(), [], None
    began = clock()
    for step in range(steps):
        out = clone.train_on_batch(*batches[step % len(batches)])
        losses.append(float(out[0] if isinstance(out, (list, tuple)) else out))
        if limit_s is not None:
            if traced is None:
                traced = clock()
            elif clock() - traced > limit_s and len(losses) % (32 if len(losses) >= 32 else 8) == 0:
                break
    run.seconds, run.steps = clock() - began, len(losses)
    run.loss = sum(losses) / len(losses) if losses else None
    return run


def plan(settings: dict) -> list[tuple[str, dict]]:
    """The train paths for the user's settings (those that equal the user's own are left out)."""
    wanted = [(TRAIN_BASE, {})]
    if settings.get("run_eagerly"):
        wanted.append(("train:graph", {"run_eagerly": False}))
    for spe in (8, 32):
        if settings.get("steps_per_execution", 1) != spe:
            wanted.append((f"train:steps_per_execution={spe}", {"steps_per_execution": spe}))
    if settings.get("jit_compile") is not True and not settings.get("run_eagerly"):  # XLA needs a graph
        wanted.append(("train:jit_compile", {"jit_compile": True}))
    return wanted


def entry_for(target: str, call_site: str, path: str, error: str | None = None) -> dict:
    return {"kind": "training", "target": target, "call_site": call_site, "path": path, "median_s": None,
            "speedup": None, "first_s": None, "equivalent": False, "max_abs_diff": None, "loss": None,
            "tolerance": None, "steps_timed": 0, "steps_compared": None, "recommended": False, "error": error}


def measure_training(model, batches: list[tuple], *, settings: dict, budget_s: float, target: str,
                     call_site: str = "", api: str = "fit", steps: int = STEPS, max_rounds: int = MAX_ROUNDS,
                     clock: Callable[[], float] = time.perf_counter) -> list[dict]:
    """Time each train path on clones of ``model`` over ``batches`` (the user's); one entry per path.
    ``api``: how the user trained (``train_on_batch``: as written is a loop of those calls; the other
    paths are fit() calls). Where no clone can be made or trained, one ``train:as_written`` entry
    saying why."""
    start = clock()
    if not batches:
        return [entry_for(target, call_site, TRAIN_BASE, "not verified: no batch of yours could be kept")]
    try:
        keras = keras_of(model)
        compile_kwargs(model, keras)
        dataset = dataset_of(batches)
    except Exception as exc:
        why = str(exc) if isinstance(exc, NotClonable) else f"{exc.__class__.__name__}: {short_error(exc, 160)}"
        return [entry_for(target, call_site, TRAIN_BASE, f"not verified: the model cannot be cloned ({why})")]
    def trainer(path: str) -> Callable:
        if path == TRAIN_BASE and api == "train_on_batch":
            return lambda clone, n, limit_s=None: run_batches(clone, batches, n, clock, limit_s)
        return lambda clone, n, limit_s=None: run_steps(clone, keras, dataset, n, clock, limit_s)

    entries: dict[str, dict] = {}
    clones: dict[str, tuple] = {}
    base_loss = None
    for path, overrides in plan(settings):
        entry = entries[path] = entry_for(target, call_site, path)
        entry["api"] = api
        if path != TRAIN_BASE and clock() - start > budget_s * SETUP_SHARE:
            entry["error"] = f"skipped: the time budget ({budget_s:.1f} s) ran out before this path"
            continue
        spe = overrides.get("steps_per_execution")
        if spe and steps % spe:
            entry["error"] = f"skipped: slow steps: only {steps} fit in the budget, not whole executions of {spe}"
            continue
        try:
            began = clock()
            clone = make_clone(model, keras, overrides, batches[0][0])
            timer = trainer(path)(clone, steps, budget_s * WARM_SHARE if path == TRAIN_BASE else None)
            entry["first_s"] = clock() - began
            if path == TRAIN_BASE and 0 < timer.steps < steps:
                steps = timer.steps  # slow steps: every path trains (and is timed on) this many
        except Exception as exc:
            why = str(exc) if isinstance(exc, NotClonable) else f"{exc.__class__.__name__}: {short_error(exc)}"
            if path == TRAIN_BASE:
                return [entry_for(target, call_site, TRAIN_BASE,
                                  f"not verified: the model cannot be cloned and trained apart from yours ({why})")]
            entry["error"] = ("skipped: XLA is unavailable or failed here: " if path == "train:jit_compile"
                              else "failed: ") + why
            continue
        entry["loss"] = timer.loss
        if path == TRAIN_BASE:
            base_loss = timer.loss
        if base_loss is not None and timer.loss is not None:
            entry["max_abs_diff"] = abs(timer.loss - base_loss)
            entry["tolerance"] = LOSS_ATOL + LOSS_RTOL * abs(base_loss)
            entry["equivalent"] = entry["max_abs_diff"] <= entry["tolerance"]
        clones[path] = (clone, trainer(path))
    if any(e["equivalent"] is False and e["loss"] is not None for e in entries.values()):
        _widen_by_noise(entries, lambda: trainer(TRAIN_BASE)(make_clone(model, keras, {}, batches[0][0]), steps),
                        base_loss, budget_s * SETUP_SHARE - (clock() - start))
    samples = _rounds(clones, steps, start, budget_s, max_rounds, clock)
    base = None
    for path, entry in entries.items():
        times = samples.get(path, [])
        entry["steps_timed"] = len(times) * steps
        entry["steps_compared"] = steps if entry["max_abs_diff"] is not None else None
        if times:
            entry["median_s"] = _median(times)
        elif entry["first_s"] is not None and not entry["error"]:
            entry["median_s"] = entry["first_s"] / steps  # no timed round: the first steps are all there is
            entry["note"] = "only the first steps (with tracing) could be timed"
        if path == TRAIN_BASE:
            base = entry["median_s"]
    for entry in entries.values():
        if base and entry["median_s"]:
            entry["speedup"] = base / entry["median_s"]
    clones.clear()
    gc.collect()
    return list(entries.values())


def _widen_by_noise(entries: dict, train_again: Callable, base_loss: float | None, time_left: float) -> None:
    """A model whose training is random (Dropout, noise layers: each clone draws its own) gives a
    different loss on every run. A second clone of the user's own setting measures that spread;
    a path whose loss differs by less than NOISE_FACTOR times it trains as the user's does."""
    first = entries[TRAIN_BASE].get("first_s") or 0.0
    if base_loss is None or first > time_left:
        return
    try:
        again = train_again().loss
    except Exception:
        return
    noise = abs(again - base_loss) if again is not None else 0.0
    if not noise:
        return  # the user's setting trains the same twice: the differences are real
    for entry in entries.values():
        entry["loss_noise"] = noise
        if entry["max_abs_diff"] is not None:
            entry["tolerance"] = max(entry["tolerance"], NOISE_FACTOR * noise)
            entry["equivalent"] = entry["max_abs_diff"] <= entry["tolerance"]


def _rounds(clones: dict, steps: int, start: float, budget_s: float, max_rounds: int,
            clock: Callable[[], float]) -> dict[str, list[float]]:
    """Round-robin: each round trains every clone ``steps`` steps, starting one path later each round."""
    names = list(clones)
    samples: dict[str, list[float]] = {name: [] for name in names}
    last_round = 0.0
    for number in range(max_rounds):
        if not names or (number and clock() - start + last_round > budget_s):
            break
        began = clock()
        for i in range(len(names)):
            name = names[(number + i) % len(names)]
            if clones.get(name) is None:
                continue
            try:
                clone, train = clones[name]
                timer = train(clone, steps)
            except Exception:  # a clone that breaks mid-way stops being timed
                clones[name] = None
                continue
            if timer.seconds:
                samples[name].append(timer.seconds / steps)
        last_round = clock() - began
    return samples


def replay_batches(fitted, count: int, clock: Callable[[], float] = time.perf_counter,
                   time_s: float = float("inf")) -> list[tuple]:
    """The user's first batches: kept from arrays, or read now from the kept tf.data/PyDataset input
    (at most ``count``, and no more once ``time_s`` is spent reading them)."""
    if fitted.kind == "arrays":
        return list(fitted.batches)
    if fitted.kind == "tf.data":
        items = iter(fitted.source.take(count))
    elif fitted.kind in ("PyDataset", "Sequence"):
        items = (fitted.source[i] for i in range(min(count, len(fitted.source))))
    else:
        return []
    start, batches = clock(), []
    for element in items:
        batches.append(tuple(element) if isinstance(element, (tuple, list)) else (element,))
        if clock() - start > time_s:
            break
    return batches


def measure_fitted(fitted: list, budget_s: float, clock: Callable[[], float], into: list | None = None,
                   max_batches: int = 8) -> list[dict]:
    """Every kept trained model (``fit_keeper.Fitted``) within one budget; entries into ``into``.
    The process's global random state is put back afterwards (random_state.py)."""
    with random_state.preserved():
        return _measure_fitted(fitted, budget_s, clock, [] if into is None else into, max_batches)


def _measure_fitted(fitted: list, budget_s: float, clock: Callable[[], float], entries: list,
                    max_batches: int) -> list[dict]:
    start = clock()
    for position, kept in enumerate(fitted):
        share = (budget_s - (clock() - start)) / (len(fitted) - position)
        model_start = len(entries)
        if kept.unsupported:
            entries.append(entry_for(kept.target, kept.call_site, TRAIN_BASE, f"not verified: {kept.unsupported}"))
            continue
        if share <= 0:
            entries.append(entry_for(kept.target, kept.call_site, TRAIN_BASE,
                                     "not verified: the --verify budget was spent on other models"))
            continue
        input_share = share * INPUT_SHARE if kept.kind != "arrays" else 0.0
        try:
            batches = replay_batches(kept, max_batches, clock, share * WARM_SHARE)
        except Exception as exc:
            entries.append(entry_for(kept.target, kept.call_site, TRAIN_BASE,
                                     f"not verified: your input could not be read again ({short_error(exc, 160)})"))
            continue
        try:
            entries.extend(measure_training(kept.model, batches, settings=kept.settings,
                                            budget_s=share - input_share, target=kept.target,
                                            call_site=kept.call_site, api=kept.api, clock=clock))
            if input_share:
                entries.extend(input_paths.measure_input(kept, input_share, clock, target=kept.target,
                                                         call_site=kept.call_site))
        except Exception as exc:  # one model's failure is its entry, not the end of --verify
            entries.append(entry_for(kept.target, kept.call_site, TRAIN_BASE if len(entries) == model_start
                                     else "input:as_written", f"failed: {exc.__class__.__name__}: {short_error(exc)}"))
        mine = entries[model_start:]
        for choice in (choose_training(mine), choose_training_input(mine)):
            if choice is not None:
                choice["entry"]["recommended"] = True
    return entries
