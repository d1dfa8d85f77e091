"""The fix for a tf.data pipeline on the step's critical path, from what capture saw of it.

Capture describes a pipeline (``producers.describe_producer``): the user's ``Dataset.map``
functions up the pipeline, whether each already runs in parallel (``num_parallel_calls``), and
whether the pipeline ends with ``prefetch``. The fix changes only what the pipeline does not do
yet: a map already parallel is not told to be, a prefetched pipeline is not told to prefetch.
Recordings from before those fields say "if it does not already". A map that runs Python
(``tf.py_function``) holds the GIL, so parallel calls barely help it: ``cache()`` comes first
(measured by a reviewer on such a map: 9.85 s as written, 10.5-11.4 s with parallel calls, 2.85 s
with ``cache()``). A pipeline whose maps already run
in parallel and that prefetches has little left to change (``settled``: its finding is a low note):
``cache()`` helps only data that fits in memory and does not change between epochs.

Cost: a few string operations; no TensorFlow.
"""

from __future__ import annotations

from .findings import GUIDES, short_site


CACHE = "ds = ds.cache()  # if it fits in memory and does not change per epoch"
PREFETCH = "ds = ds.prefetch(tf.data.AUTOTUNE)  # the pipeline's last step"


def tfdata_fix(data: dict) -> dict:
    maps = [m for m in data.get("map_functions") or [] if isinstance(m, dict) and m.get("name")]
    prefetched = data.get("prefetched") is True
    serial = [m for m in maps if m.get("parallel") is not True]
    python = [m for m in maps if m.get("py_function") is True]
    last = [] if prefetched else [PREFETCH]
    fix = {"guide": GUIDES["tfdata"], "settled": not serial and prefetched}
    if python:  # cache() first: parallel calls of Python code wait for the GIL
        names = ", ".join(f"`{m['name']}`" for m in python[:3])
        first = python[0]
        where = f" at {short_site(first['defined_at'])}" if first.get("defined_at") else ""
        code = [f"ds = ds.map({first['name']}).cache()  # {first['name']}{where} runs Python: its results, computed "
                "once (cache(path) when they do not fit in memory)"]
        text = (f"{names} call{'s' if len(python) == 1 else ''} Python through `tf.py_function`, which holds the GIL: "
                "one element at a time, however many parallel calls the map is given. `cache()` its results when "
                "they fit in memory and do not change between epochs (a file cache, `cache(path)`, when they do not "
                "fit), or write the map in TensorFlow ops (`tf.io.decode_image`, `tf.strings`...), which run in "
                "parallel" + ("" if prefetched else "; end the pipeline with `prefetch`") + ".")
        return dict(fix, text=text, code="\n".join(code + last))
    rest = ("`cache()` what does not change between epochs"
            + (" (it already prefetches)" if prefetched else
               ", and end with `prefetch` so batches are ready before the step"))
    code = []
    if serial:
        first = serial[0]
        where = f"  # {first['name']} at {short_site(first['defined_at'])}" if first.get("defined_at") else ""
        code.append(f"ds = ds.map({first['name']}, num_parallel_calls=tf.data.AUTOTUNE){where}")
        names = ", ".join(f"`{m['name']}`" for m in serial[:3])
        opening = (f"Your tf.data pipeline runs {names} one element at a time" if all("parallel" in m for m in maps)
                   else f"Run {names} in parallel (`num_parallel_calls`) if it does not already")
        text = (f"{opening} on the step's critical path. Run the map in parallel (`num_parallel_calls`), {rest}; "
                "batching before the map lets a vectorised map parse a whole batch at once.")
    elif maps:
        text = ("Your pipeline's maps already run in parallel: a vectorised map, batching before the map so it "
                f"parses a whole batch at once, and `cache()` are what is left; {rest}.")
    else:
        text = f"Your tf.data pipeline is on the step's critical path: {rest}."
    return dict(fix, text=text, code="\n".join(code + [CACHE] + last))
