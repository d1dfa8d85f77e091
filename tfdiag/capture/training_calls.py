"""Time fit(), evaluate(), train_on_batch() and test_on_batch(), step by step, with their callbacks.

Why it exists: a training call is timed like predict (``timed_call_wrapper``: the same sampling,
phases and first/steady split), but the report needs what happens inside it, step by step. The
call gets a ``StepLog`` (steps.py) on its frame; the CallbackList's batch hooks mark each step's
begin and end on it and charge their own time to the ``callbacks`` phase (so do all of its other
``on_*`` hooks and its construction); each callback class in the list gets its hooks timed
(sampled calls only); the batches a PyDataset or generator produces on tf.data's threads are timed
where they run (Keras 3: the adapters' ``get_tf_dataset``; tf-keras: phase_points.py's producer).

Hook points (Keras 3.15, TensorFlow backend): ``TensorFlowTrainer.fit/evaluate/train_on_batch/
test_on_batch``, ``keras.src.callbacks.callback_list.CallbackList``, ``PyDatasetAdapter`` and
``GeneratorDataAdapter.get_tf_dataset``. tf-keras 2.21: ``tf_keras.src.engine.training.Model``,
``tf_keras.src.callbacks.CallbackList``.

What it costs: per step, the two batch hooks' wrappers (a thread-local lookup, two clock reads,
in sampled calls the StepLog's marks: about 2 us), plus one timing wrapper per callback hook a
class overrides (about 0.5 us each). Per call: a StepLog and, in sampled calls, the model's
settings (tf-keras reads its steps_per_execution variable).
"""

from __future__ import annotations

from typing import Callable

from . import callsite
from .collector import Collector
from .keras_calls import KerasCallCapture, call_input_spec, describe_call_input, input_spec
from .patching import Patcher, guarded
from .phase_tracker import _ABSORBED_BY, PhaseTracker
from .producers import describe_producer, timed_producer
from .steps import StepLog
from .call_log import CallLog
from .timed_calls import timed_call_wrapper

KERAS3_TRAINER = "keras.src.backend.tensorflow.trainer"
KERAS3_CALLBACKS = "keras.src.callbacks.callback_list"
KERAS3_CALLBACK = "keras.src.callbacks.callback"
KERAS3_PY_DATASET = "keras.src.trainers.data_adapters.py_dataset_adapter"
KERAS3_GENERATOR = "keras.src.trainers.data_adapters.generator_data_adapter"
TF_KERAS_TRAINING = "tf_keras.src.engine.training"
TF_KERAS_CALLBACKS = "tf_keras.src.callbacks"

# api -> (the batch hooks that are its steps, training)
APIS = {"fit": ("train", True), "evaluate": ("test", False), "train_on_batch": (None, True),
        "test_on_batch": (None, False)}
BATCH_HOOKS = {"on_train_batch_begin": ("train", False), "on_train_batch_end": ("train", True),
               "on_test_batch_begin": ("test", False), "on_test_batch_end": ("test", True)}
OTHER_HOOKS = ("on_epoch_end", "on_train_begin", "on_train_end", "on_test_begin", "on_test_end",
               "on_predict_begin", "on_predict_end", "on_predict_batch_begin", "on_predict_batch_end",
               "on_batch_begin", "on_batch_end")
CLASS_HOOKS = tuple(BATCH_HOOKS) + ("on_epoch_begin",) + OTHER_HOOKS


class _Api:
    """What ``timed_call_wrapper`` asks of a capture, for one training API: a training call is
    one by its API (``tape_is_empty`` answers False for fit/train_on_batch). Never profiled."""

    gates = ()
    describe = staticmethod(describe_call_input)
    input_spec = staticmethod(call_input_spec)
    target_name = staticmethod(KerasCallCapture.target_name)

    def __init__(self, training: bool) -> None:
        self.tape_is_empty = (lambda: False) if training else (lambda: True)


def model_settings(model) -> dict:
    """steps_per_execution, run_eagerly, jit_compile of a model (the user's compile() choices), on
    both Keras flavours (tf-keras keeps steps_per_execution in a variable); None where unknown."""
    steps = getattr(model, "steps_per_execution", None)
    if steps is None or hasattr(steps, "numpy"):
        steps = getattr(model, "_steps_per_execution", steps)
    try:
        steps = int(steps.numpy()) if hasattr(steps, "numpy") else (int(steps) if steps is not None else None)
    except (TypeError, ValueError):
        steps = None
    jit = getattr(model, "jit_compile", getattr(model, "_jit_compile", None))
    return {"steps_per_execution": steps, "run_eagerly": bool(getattr(model, "run_eagerly", False)),
            "jit_compile": jit if isinstance(jit, bool) else None}


class TrainingCallCapture:
    def __init__(self, collector: Collector, tracker: PhaseTracker, log: CallLog, observers: list,
                 step_profiler=None) -> None:
        self.collector = collector
        self.step_profiler = step_profiler  # the TF Profiler over a few steps (step_profiler.py), or None
        self.tracker = tracker
        self.log = log
        self.observers = observers  # shared with the Keras call capture (--verify's keeper reads fit's inputs)
        self._wrapped: set = set()  # callback classes whose hooks are timed
        self._patcher: Patcher | None = None

    def install(self, patcher: Patcher) -> None:
        self._patcher = patcher
        warn = self.collector.warn
        for module, install in ((KERAS3_TRAINER, self._keras3_trainer), (KERAS3_CALLBACKS, self._callback_list),
                                (KERAS3_PY_DATASET, self._py_dataset), (KERAS3_GENERATOR, self._generator),
                                (TF_KERAS_TRAINING, self._tf_keras), (TF_KERAS_CALLBACKS, self._callback_list)):
            patcher.when_imported(module, guarded(warn, "training call timing", install, patcher))

    # -- the calls ---------------------------------------------------------------------
    def _keras3_trainer(self, patcher: Patcher, module) -> None:
        self._patch_apis(patcher, module.TensorFlowTrainer, None)

    def _tf_keras(self, patcher: Patcher, module) -> None:
        self._patch_apis(patcher, module.Model, (1, False))

    def _patch_apis(self, patcher: Patcher, cls, defaults) -> None:
        for api, (mode, training) in APIS.items():
            patcher.patch(cls, api, lambda orig, api=api, mode=mode, training=training: timed_call_wrapper(
                self._inner(orig, mode, defaults, api), api, _Api(training), _never, self.tracker, self.log,
                self.observers))

    def _inner(self, original: Callable, mode: str | None, defaults, api: str) -> Callable:
        """``original`` with a StepLog on the call's frame (``defaults``: tf-keras's workers and
        use_multiprocessing, for the producer when the call does not give them)."""
        tracker, warn = self.tracker, self.collector.warn

        def inner(model, *args, **kwargs):
            frame = tracker.current_frame()
            if frame is None or frame.extra is not None or frame.target is not model or not (mode or frame.weight):
                return original(model, *args, **kwargs)  # e.g. fit()'s own evaluate(): part of the fit
            try:
                settings = model_settings(model) if frame.weight else {}
                producer = None
                if mode is not None:
                    workers, multi = defaults or (None, None)
                    producer = describe_producer(args[0] if args else kwargs.get("x"),
                                                 kwargs.get("workers", workers), kwargs.get("use_multiprocessing", multi))
                log = frame.extra = StepLog(mode, settings, producer, bool(frame.weight),
                                            tracker.per_op if frame.weight else None, tracker.sampler.gap)
                if self.step_profiler is not None and mode is not None and frame.weight:
                    log.window = self.step_profiler.claim(api, callsite.user_call_site(2))
            except Exception as exc:
                warn(f"could not follow the steps of a training call: {exc.__class__.__name__}: {exc}")
                return original(model, *args, **kwargs)
            try:
                return original(model, *args, **kwargs)
            finally:
                try:
                    if log.window is not None:
                        _charge_nowhere(log, frame, log.window.end())
                    log.finish(frame, tracker.clock())
                except Exception as exc:  # never in place of the user's result or exception
                    warn(f"could not close the steps of a training call: {exc.__class__.__name__}: {exc}")

        inner.__wrapped__ = original
        return inner

    # -- the callbacks -----------------------------------------------------------------
    def _callback_list(self, patcher: Patcher, module) -> None:
        cls = module.CallbackList
        for name, (mode, end) in BATCH_HOOKS.items():
            patcher.patch(cls, name, lambda orig, mode=mode, end=end: self._batch_hook(orig, mode, end))
        for name in OTHER_HOOKS:
            if hasattr(cls, name):
                patcher.patch(cls, name, self._other_hook)
        patcher.patch(cls, "on_epoch_begin", self._epoch_hook)
        patcher.patch(cls, "__init__", self._init_hook)

    def _step_log(self) -> StepLog | None:
        frame = self.tracker.current_frame()
        log = frame.extra if frame is not None else None
        return log if log.__class__ is StepLog else None

    def _between_steps(self, log: StepLog) -> None:
        """A hook outside the steps (epoch, begin/end): the TF Profiler's step window, if open,
        ends, and a frame paused for unmeasured steps is sampled again."""
        if log.window is not None and log.window.state == "open":
            _charge_nowhere(log, self.tracker.current_frame(), log.window.end())
        if log.paused is not None:
            log.resume(self.tracker.clock())

    def _other_hook(self, original: Callable) -> Callable:
        """A CallbackList hook outside steps: ``callbacks`` time, measured (a paused frame resumes)."""
        in_phase = self.tracker.wrap(original, "callbacks")

        def other_hook(callbacks, *args, **kwargs):
            log = self._step_log()
            if log is not None:
                self._between_steps(log)
            return in_phase(callbacks, *args, **kwargs)

        other_hook.__wrapped__ = original
        return other_hook

    def _epoch_hook(self, original: Callable) -> Callable:
        in_phase = self.tracker.wrap(original, "callbacks")

        def on_epoch_begin(callbacks, *args, **kwargs):
            log = self._step_log()
            if log is not None:
                self._between_steps(log)
                if log.teardown is not None:
                    log.end_teardown(self.tracker)
                log.epoch()
            return in_phase(callbacks, *args, **kwargs)

        on_epoch_begin.__wrapped__ = original
        return on_epoch_begin

    def _init_hook(self, original: Callable) -> Callable:
        in_phase = self.tracker.wrap(original, "callbacks")

        def __init__(callbacks, *args, **kwargs):
            in_phase(callbacks, *args, **kwargs)
            if self._step_log() is not None:
                try:
                    self._time_classes({type(cb) for cb in getattr(callbacks, "callbacks", ())})
                except Exception as exc:
                    self.collector.warn(f"could not time callbacks: {exc.__class__.__name__}: {exc}")

        __init__.__wrapped__ = original
        return __init__

    def _batch_hook(self, original: Callable, mode: str, end: bool) -> Callable:
        """A CallbackList batch hook: its time is ``callbacks``; it marks a step's begin or end."""
        tracker = self.tracker
        local, clock = tracker.local, tracker.clock
        absorbed = _ABSORBED_BY

        def hook(callbacks, *args, **kwargs):
            frames = getattr(local, "frames", None)
            if not frames:
                return original(callbacks, *args, **kwargs)
            frame = frames[-1]
            log = frame.extra
            if log.__class__ is not StepLog:
                log = None
            else:
                if log.teardown is not None:
                    log.end_teardown(tracker)
                if not end and log.sampled and mode == log.mode:
                    if log.window is not None and log.window.wants(log.steps + 1):
                        return self._profiled_step(original, callbacks, args, kwargs, log, frame)
                    if log.countdown > 1:  # an unmeasured step (steps.py): the frame runs unsampled
                        log.countdown -= 1
                        if log.paused is None:
                            log.pause(frame, clock())
                        log.start(clock())
                        return original(callbacks, *args, **kwargs)
                    if log.paused is not None:
                        log.resume(clock())
            if not frame.weight:  # wall time only (an unsampled call, or a sampled call's unmeasured step)
                if log is None:
                    return original(callbacks, *args, **kwargs)
                if not end:
                    log.start(clock())
                    return original(callbacks, *args, **kwargs)
                try:
                    return original(callbacks, *args, **kwargs)
                finally:
                    profiled = log.in_window and mode == log.mode
                    log.close(clock(), None, mode)
                    if profiled:
                        _charge_nowhere(log, frame, log.window.end_step(log.steps))
                    elif (mode == log.mode and log.paused is not None and log.countdown <= 1
                          and not (log.window is not None and log.window.wants(log.steps + 1))):
                        # the next step is measured: from this end on, including the wait for its batch
                        log.resume(clock())
                        log.mark_gap(frame.totals, frame.last)
            stack, totals = frame.stack, frame.totals
            now = clock()
            top = stack[-1]
            totals[top] += now - frame.last
            frame.last = now
            if log is not None and not end:
                log.open(now, frame, mode)
            depth = len(stack)
            push = top != "callbacks" and "callbacks" not in absorbed.get(top, ())
            if push:
                stack.append("callbacks")
            try:
                return original(callbacks, *args, **kwargs)
            finally:
                now = clock()
                totals[stack[-1]] += now - frame.last
                frame.last = now
                if push:
                    del stack[depth:]
                if log is not None and end:
                    log.close(now, frame, mode)

        hook.__wrapped__ = original
        return hook

    def _profiled_step(self, original: Callable, callbacks, args, kwargs, log: StepLog, frame):
        """A step in the TF Profiler's window (step_profiler.py): it runs unsampled, as an
        unmeasured step does, and the profiler's start lands before its begin mark."""
        if log.paused is None:
            log.pause(frame, self.tracker.clock())
        number = log.steps + 1
        _charge_nowhere(log, frame, log.window.begin_step(number))
        log.in_window = log.window.state == "open"
        log.begin = self.tracker.clock()
        return original(callbacks, *args, **kwargs)

    def _time_classes(self, classes: set) -> None:
        """Time the hooks each callback class overrides (once per class, for the diagnosis)."""
        for cls in classes:
            if cls in self._wrapped or self._patcher is None:
                continue
            self._wrapped.add(cls)
            base = next((k for k in cls.__mro__ if k.__name__ == "Callback"
                         and k.__module__ in (KERAS3_CALLBACK, TF_KERAS_CALLBACKS)), None)
            for name in CLASS_HOOKS:
                method = getattr(cls, name, None)
                if method is None or method is getattr(base, name, None) or getattr(method, "_tfdiag_timed", False):
                    continue
                self._patcher.patch(cls, name, lambda orig, name=name: self._class_hook(
                    orig, BATCH_HOOKS[name][0] if name in BATCH_HOOKS else None))

    def _class_hook(self, original: Callable, mode: str | None) -> Callable:
        """A callback class's hook, timed into the call's StepLog; ``mode``: whose batch hook it is
        (its time counts per step only in a call whose steps those batches are)."""
        local, clock = self.tracker.local, self.tracker.clock

        def hook(callback, *args, **kwargs):
            frames = getattr(local, "frames", None)
            if not frames:
                return original(callback, *args, **kwargs)
            frame = frames[-1]
            log = frame.extra
            if log.__class__ is not StepLog or not log.sampled or log.in_callback:
                return original(callback, *args, **kwargs)
            log.in_callback = True
            start = clock()
            try:
                return original(callback, *args, **kwargs)
            finally:
                log.in_callback = False
                entry = log.callbacks.get(callback.__class__)
                if entry is None:
                    entry = log.callbacks[callback.__class__] = [0.0, 0, 0.0]
                spent = clock() - start
                entry[0] += spent
                entry[1] += 1
                if mode is not None and mode == log.mode:
                    entry[2] += spent

        hook.__wrapped__ = original
        hook._tfdiag_timed = True
        for attribute in ("__name__", "__qualname__", "__doc__"):
            setattr(hook, attribute, getattr(original, attribute, None) or "hook")
        return hook

    # -- Keras 3's producers -------------------------------------------------------------
    def _py_dataset(self, patcher: Patcher, module) -> None:
        def make(original):
            def get_tf_dataset(adapter):
                log = self._step_log()
                if log is None:
                    return original(adapter)
                try:
                    adapter._get_iterator = timed_producer(adapter._get_iterator, self.tracker.clock, log,
                                                           describe=input_spec)
                except Exception as exc:  # another Keras version: the batches go untimed
                    self.collector.warn(f"could not time a PyDataset's batches: {exc.__class__.__name__}: {exc}")
                    return original(adapter)
                try:
                    return original(adapter)
                finally:  # from_generator has taken the timed one; the adapter is left as it was
                    adapter.__dict__.pop("_get_iterator", None)

            get_tf_dataset.__wrapped__ = original
            return get_tf_dataset

        patcher.patch(module.PyDatasetAdapter, "get_tf_dataset", make)

    def _generator(self, patcher: Patcher, module) -> None:
        def make(original):
            def get_tf_dataset(adapter):
                log = self._step_log()
                try:
                    if log is not None and not getattr(adapter.generator, "_tfdiag_timed", False):
                        # Read lazily on tf.data's thread: this call's adapter keeps the timed one.
                        timed = timed_producer(adapter.generator, self.tracker.clock, log, describe=input_spec)
                        timed._tfdiag_timed = True
                        adapter.generator = timed
                except Exception as exc:  # another Keras version: the batches go untimed
                    self.collector.warn(f"could not time a generator's batches: {exc.__class__.__name__}: {exc}")
                return original(adapter)

            get_tf_dataset.__wrapped__ = original
            return get_tf_dataset

        patcher.patch(module.GeneratorDataAdapter, "get_tf_dataset", make)


def _charge_nowhere(log: StepLog, frame, seconds: float) -> None:
    """The TF Profiler's start or stop (``seconds``, just spent) goes to no phase of the call."""
    if seconds > 0 and frame is not None:
        log.profiler_s += seconds
        frame.last += seconds


def _never(target) -> bool:
    return False
