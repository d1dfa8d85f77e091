"""--verify for training's input: the user's tf.data pipeline or PyDataset/Sequence timed alone,
as written and with one change, after the run (so its work never enters the recording).

Paths: ``input:as_written``; for tf.data, ``input:parallel_map`` (the user's maps rebuilt with ``num_parallel_calls=AUTOTUNE``,
``deterministic=True``, where the pipeline can be rebuilt); for a PyDataset/Sequence,
``input:workers`` (items fetched by N threads, in order, as Keras's enqueuer does with
``workers=N``). Each round opens a fresh iterator, skips its first element (warm-up) and times
the next ones; rounds alternate between paths. Equivalent means the same batches as written
(compared by value where the user's own pipeline gives the same batches twice, else by structure).
``prefetch`` is not a path: it overlaps the pipeline with the step, and a pipeline timed alone has
no step to overlap, so it cannot show a gain here.

Cost: reads ELEMENTS batches per path per round from the user's input (their own map functions
or ``__getitem__`` run again); the user's dataset object is never changed (new datasets are built
on top of it).
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from .measure import _median, compare
from .paths import short_error

ELEMENTS = 16  # batches timed per path per round (after one warm-up batch)
MAX_ROUNDS = 8
MAX_WORKERS = 8


def _flat(element) -> list:
    import numpy as np
    import tensorflow as tf

    return [np.asarray(leaf) for leaf in tf.nest.flatten(element)]


def _entry(target: str, call_site: str, path: str, error: str | None = None) -> dict:
    return {"kind": "training", "target": target, "call_site": call_site, "path": path, "median_s": None,
            "speedup": None, "first_s": None, "equivalent": False, "max_abs_diff": None, "tolerance": 0.0,
            "steps_timed": 0, "recommended": False, "error": error}


def _kind(node) -> str:
    return type(node).__name__.lstrip("_")  # TensorFlow's dataset classes are private (_MapDataset)


def _parallel_maps(dataset):
    """The pipeline with every map rebuilt parallel (deterministic); raises ValueError when a step
    above the deepest map cannot be rebuilt."""
    import tensorflow as tf
    from tensorflow.python.data.util import structure

    chain, node = [], dataset
    while node is not None:
        chain.append(node)
        node = getattr(node, "_input_dataset", None)
    maps = [i for i, n in enumerate(chain) if hasattr(n, "_map_func") and _kind(n).endswith("MapDataset")]
    if not maps:
        raise ValueError("your pipeline has no Dataset.map")
    rebuilt = chain[maps[-1]]._input_dataset
    for node in reversed(chain[:maps[-1] + 1]):
        kind = _kind(node)
        if kind in ("MapDataset", "ParallelMapDataset"):
            wrapper, source = node._map_func, rebuilt
            in_spec, out_spec = source.element_spec, wrapper.output_structure

            @tf.autograph.experimental.do_not_convert
            def call(*args, _fn=wrapper.function, _in=in_spec, _out=out_spec):
                value = args[0] if len(args) == 1 else args
                return structure.from_compatible_tensor_list(_out, _fn(*structure.to_tensor_list(_in, value)))

            rebuilt = rebuilt.map(call, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        elif kind in ("BatchDataset", "ParallelBatchDataset"):
            rebuilt = rebuilt.batch(int(node._batch_size), drop_remainder=bool(node._drop_remainder))
        elif kind == "PrefetchDataset":
            rebuilt = rebuilt.prefetch(int(node._buffer_size))
        elif kind == "RepeatDataset":
            rebuilt = rebuilt.repeat(int(node._count))
        elif kind == "TakeDataset":
            rebuilt = rebuilt.take(int(node._count))
        elif kind == "OptionsDataset":
            rebuilt = rebuilt.with_options(node._options)
        else:
            raise ValueError(f"a {kind} step after a map cannot be rebuilt")
    return rebuilt


def _iterators(kept) -> dict[str, Callable[[], object]]:
    """path -> a function returning a fresh iterator over the input as that path reads it."""
    source = kept.source
    if kept.kind == "tf.data":
        paths: dict = {"input:as_written": lambda: iter(source)}
        try:
            parallel = _parallel_maps(source)
            paths["input:parallel_map"] = lambda: iter(parallel)
        except Exception as exc:
            paths["input:parallel_map"] = f"skipped: {short_error(exc, 160)}"
        return paths

    def indexed(workers: int):
        count = len(source)
        if workers <= 1:
            return lambda: (source[i] for i in range(count))

        def pooled():  # in order, at most 2 * workers items ahead, as an enqueuer would
            pool = ThreadPoolExecutor(workers)
            try:
                pending = deque(pool.submit(source.__getitem__, i) for i in range(min(count, 2 * workers)))
                following = len(pending)
                while pending:
                    item = pending.popleft().result()
                    if following < count:
                        pending.append(pool.submit(source.__getitem__, following))
                        following += 1
                    yield item
            finally:
                pool.shutdown(wait=True, cancel_futures=True)

        return pooled

    workers = max(2, min(MAX_WORKERS, os.cpu_count() or 2))
    mine = kept.workers or 1
    paths = {"input:as_written": indexed(mine)}
    if workers > mine:
        paths["input:workers"] = indexed(workers)
    return paths


def measure_input(kept, budget_s: float, clock: Callable[[], float], *, target: str, call_site: str = "",
                  elements: int = ELEMENTS, max_rounds: int = MAX_ROUNDS) -> list[dict]:
    """Time the kept input (``fit_keeper.Fitted`` with a tf.data or PyDataset/Sequence source)."""
    start = clock()
    entries: dict[str, dict] = {}
    runnable: dict[str, Callable] = {}
    for path, make in _iterators(kept).items():
        entry = entries[path] = _entry(target, call_site, path, make if isinstance(make, str) else None)
        if path == "input:workers":
            entry["workers"] = max(2, min(MAX_WORKERS, os.cpu_count() or 2))
        if not entry["error"]:
            runnable[path] = make
    samples: dict[str, list[float]] = {p: [] for p in runnable}
    firsts: dict[str, list] = {}
    last = 0.0
    for number in range(max_rounds):
        if number and clock() - start + last > budget_s:
            break
        began = clock()
        names = list(runnable)
        for i in range(len(names)):
            path = names[(number + i) % len(names)]
            if runnable.get(path) is None:
                continue
            iterator, got, t0 = None, [], clock()
            t1 = t0
            try:
                iterator = runnable[path]()
                got.append(next(iterator))
                t1 = clock()
                for _ in range(elements):
                    if len(got) > 2 and clock() - start > budget_s:
                        break  # slow batches: fewer of them, within the budget
                    got.append(next(iterator))
                t2 = clock()
            except StopIteration:
                t2 = clock()
            except Exception as exc:
                entries[path]["error"] = f"failed: {exc.__class__.__name__}: {short_error(exc)}"
                runnable[path] = None
                continue
            finally:
                getattr(iterator, "close", lambda: None)()  # a worker pool's threads end here
            if entries[path]["first_s"] is None:
                entries[path]["first_s"] = t1 - t0
            if len(got) > 1:
                samples[path].append((t2 - t1) / (len(got) - 1))
                entries[path]["steps_timed"] += len(got) - 1
            if len(firsts.setdefault(path, [])) < 2:
                firsts[path].append([_flat(e) for e in got[:4]])
        last = clock() - began
    _equivalence(entries, firsts)
    base = None
    for path, entry in entries.items():
        if samples.get(path):
            entry["median_s"] = _median(samples[path])
        if path == "input:as_written":
            base = entry["median_s"]
    for entry in entries.values():
        if base and entry["median_s"]:
            entry["speedup"] = base / entry["median_s"]
    return list(entries.values())


def _equivalence(entries: dict, firsts: dict) -> None:
    """Same batches as written: by value when the user's own pipeline repeats itself, else by structure."""
    reference = firsts.get("input:as_written")
    if not reference:
        return
    repeatable = len(reference) < 2 or _diff(reference[0], reference[1]) == 0.0
    for path, runs in firsts.items():
        diff = _diff(reference[0], runs[0])
        if diff is None:
            entries[path]["equivalent"] = False
            continue
        if not repeatable:
            entries[path]["note"] = "your pipeline gives different batches each time (shuffled?): compared by structure"
            diff = 0.0
        entries[path]["max_abs_diff"] = diff
        entries[path]["equivalent"] = diff == 0.0


def _diff(a: list, b: list) -> float | None:
    """Largest difference over the batches both runs read (a run cut short by the budget reads fewer)."""
    if not a or not b:
        return None
    worst = 0.0
    for x, y in zip(a, b):
        diff, why = compare(x, y)
        if why:
            return None
        worst = max(worst, diff)
    return worst
