"""The code that makes a training call's batches: what it is, and its time batch by batch.

Why it exists: a fit()'s batches come from the user's PyDataset, Sequence, generator or tf.data
pipeline, and the input-bound finding names that code and its line (``describe_producer``). A
PyDataset's or generator's batches are made on tf.data's threads, a batch or more ahead of the
step; ``timed_producer`` times each one where it is made, with the producer thread's CPU time and
when the batch was ready, so the step (steps.py) can tell a wait for its batch, or the GIL the
producer held, from batch-making that overlapped it. What it costs: per batch, two clock reads,
two thread-CPU reads and a dict entry; per call, a walk up the tf.data pipeline for its map
functions.
"""

from __future__ import annotations

import inspect
from threading import get_ident
from time import thread_time

try:  # a thread's CPU clock, readable from another thread (POSIX)
    from time import clock_gettime, pthread_getcpuclockid
except ImportError:  # Windows, macOS
    clock_gettime = pthread_getcpuclockid = None

from . import callsite

MAX_READY = 4096  # batches made ahead and not yet taken (a producer far ahead: the rest are not timed)


def timed_producer(generator_fn, clock, log=None, frame=None, describe=None):
    """``generator_fn`` (what a data adapter hands to ``tf.data.Dataset.from_generator``) timed
    batch by batch, on whatever thread runs it, into ``log`` (a training call's) or, without
    one, into ``frame.off_thread_s`` (a predict call's; see ``PhaseTracker.end_sampled``). ``log``: a
    steps.StepLog (its ``made``, ``making``, ``batches``, ``ready``, ``consumed``).
    ``describe(batch)``, if given, describes a training call's first batch as the producer's
    ``batch_spec`` (the shapes a fix's ``output_signature`` needs)."""

    def timed_generator_fn():
        batches = iter(generator_fn())
        if log is not None:  # a new pass (an epoch's iterator): its batches are numbered from 0
            log.ready, log.consumed = {}, 0
        number = 0
        while True:
            start, cpu = clock(), thread_time()
            if log is not None:  # the batch in the making counts from now (StepLog.produced)
                me = get_ident()
                log.making[me] = (start, _cpu_since(me, cpu))
            try:
                batch = next(batches)
            except BaseException as error:  # the end of the pass, or the user's error
                if log is not None:
                    log.making.pop(me, None)
                if isinstance(error, StopIteration):
                    return
                raise
            if log is not None:
                done = clock()
                wall, used = done - start, thread_time() - cpu
                log.making.pop(me, None)
                seconds, cpu_seconds = log.made
                log.made = (seconds + wall, cpu_seconds + used)  # no call in between: no thread switch
                log.batches += 1
                if len(log.ready) < MAX_READY:
                    log.ready[number] = done
                number += 1
                if describe is not None and log.batches == 1 and log.producer is not None:
                    try:
                        log.producer.setdefault("batch_spec", describe(batch))
                    except Exception:  # a batch we cannot describe: the fix says "your shapes"
                        pass
            else:
                frame.off_thread_s += clock() - start
            yield batch

    return timed_generator_fn


def _cpu_since(thread: int, cpu: float):
    """A function that reads, from any thread, the CPU seconds ``thread`` (the calling thread) has
    spent since its ``thread_time()`` was ``cpu`` (None where the platform has no per-thread CPU
    clock)."""
    if pthread_getcpuclockid is None:
        return None
    try:
        clock_id = pthread_getcpuclockid(thread)
    except OSError:
        return None
    return lambda: clock_gettime(clock_id) - cpu


# -- what a call's data is ------------------------------------------------------------------
def describe_producer(x, workers=None, use_multiprocessing=None) -> dict | None:
    """``data_producer`` of a fit/evaluate input ``x`` (without its timing): the user's PyDataset,
    Sequence, generator, tf.data pipeline or arrays; None for no input."""
    if x is None:
        return None
    cls = type(x)
    names = {klass.__name__ for klass in cls.__mro__}
    out = {"kind": "arrays", "name": cls.__name__, "defined_at": None, "seconds": None, "batches": None,
           "workers": workers, "use_multiprocessing": use_multiprocessing, "map_functions": []}
    if "PyDataset" in names or ("Sequence" in names and hasattr(cls, "__getitem__")):
        out["kind"] = "PyDataset" if "PyDataset" in names else "Sequence"
        out["name"] = f"{cls.__name__}.__getitem__"
        out["defined_at"] = _user_site(callsite.code_of(getattr(cls, "__getitem__", None)))
        if out["kind"] == "PyDataset":
            out["workers"] = getattr(x, "workers", workers)
            out["use_multiprocessing"] = getattr(x, "use_multiprocessing", use_multiprocessing)
    elif inspect.isgenerator(x):
        code = x.gi_code
        out.update(kind="generator", name=getattr(code, "co_qualname", code.co_name), defined_at=_user_site(code))
    elif cls.__module__.startswith("tensorflow.python.data"):
        out.update(kind="tf.data", map_functions=_map_functions(x), prefetched=_prefetched(x))
    return out


def _user_site(code) -> str | None:
    return None if code is None or callsite.is_library_file(code.co_filename) else callsite.code_site(code)


def _map_functions(dataset, limit: int = 32) -> list:
    """The user's functions given to ``Dataset.map`` (or flat_map, filter ...) up the pipeline."""
    found = []
    for _ in range(limit):
        if dataset is None:
            break
        wrapper = getattr(dataset, "_map_func", None) or getattr(dataset, "_predicate", None)
        code = callsite.code_of(getattr(wrapper, "_func", None))
        site = _user_site(code)
        if site is not None:
            found.append({"name": getattr(code, "co_qualname", code.co_name), "defined_at": site,
                          # a map given num_parallel_calls is a ParallelMapDataset
                          "parallel": "Parallel" in type(dataset).__name__,
                          "py_function": _calls_python(wrapper)})
        dataset = getattr(dataset, "_input_dataset", None)
    return found[::-1]


_PYTHON_OPS = ("EagerPyFunc", "PyFunc", "PyFuncStateless")


def _calls_python(wrapper) -> bool | None:
    """Whether a map's traced function runs Python (``tf.py_function``/``tf.numpy_function``): it
    holds the GIL, one element at a time, however many parallel calls the map is given."""
    try:
        return any(op.type in _PYTHON_OPS for op in wrapper.function.graph.get_operations())
    except Exception:  # another TensorFlow's wrapper: unknown
        return None


def _prefetched(dataset, limit: int = 32) -> bool:
    """Whether the pipeline ends with ``prefetch`` (its outermost stages, past options and the like)."""
    for _ in range(limit):
        if dataset is None:
            return False
        name = type(dataset).__name__
        if "Prefetch" in name:
            return True
        if "Options" not in name and "Unbatch" not in name:  # the first real stage decides
            return False
        dataset = getattr(dataset, "_input_dataset", None)
    return False
