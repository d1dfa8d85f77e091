"""Random state put back after --verify's training what-ifs.

Why it exists: a clone's fresh layers draw initial weights, dropout masks and shuffles from the
process's global random sources (Python's ``random``, NumPy's global generator, TensorFlow's
op-seed counter and global ``tf.random.Generator``, Keras 3's global seed generator). The user's
code may go on after the diagnosis (``diagnose()``, a notebook, a test), and a seeded run must
draw the same numbers with or without ``--verify``. What it costs: a copy of each state before
the measurements and one assignment of each after.
"""

from __future__ import annotations

import contextlib
import random
import sys

_MISSING = object()


@contextlib.contextmanager
def preserved():
    """Run the block, then put every global random source it may have drawn from back as it was."""
    saved = [_save(save, restore) for save, restore in _SOURCES]
    try:
        yield
    finally:
        for restore, state in saved:
            if state is not _MISSING:
                try:
                    restore(state)
                except Exception:  # a source that cannot be put back must not cost the report
                    pass


def _save(save, restore):
    try:
        return restore, save()
    except Exception:
        return restore, _MISSING


def _numpy_save():
    numpy = sys.modules.get("numpy")
    return _MISSING if numpy is None else numpy.random.get_state()


def _numpy_restore(state) -> None:
    sys.modules["numpy"].random.set_state(state)


def _tf_context():
    context = sys.modules.get("tensorflow.python.eager.context")
    return None if context is None else context.context()


def _op_seeds_save():
    """TensorFlow's op-level seed counter (after ``tf.random.set_seed``, each unseeded op draws from it)."""
    ctx = _tf_context()
    rng = getattr(ctx, "_rng", None)
    return _MISSING if rng is None else (rng, rng.getstate())


def _op_seeds_restore(state) -> None:
    rng, value = state
    rng.setstate(value)


def _tf_generator_save():
    module = sys.modules.get("tensorflow.python.ops.stateful_random_ops")
    if module is None:
        return _MISSING
    generator = getattr(module, "global_generator", None)
    return (module, generator, None if generator is None else generator.state.numpy())


def _tf_generator_restore(state) -> None:
    module, generator, value = state
    if generator is None:
        module.global_generator = None  # made during --verify: the user's first use makes its own
    else:
        module.global_generator = generator
        generator.state.assign(value)


def _keras_seed_save():
    global_state = sys.modules.get("keras.src.backend.common.global_state")
    if global_state is None:
        return _MISSING
    generator = global_state.get_global_attribute("global_seed_generator")
    return (global_state, generator, None if generator is None else generator.state.numpy())


def _keras_seed_restore(state) -> None:
    global_state, generator, value = state
    global_state.set_global_attribute("global_seed_generator", generator)
    if generator is not None:
        generator.state.assign(value)


_SOURCES = (
    (random.getstate, random.setstate),
    (_numpy_save, _numpy_restore),
    (_op_seeds_save, _op_seeds_restore),
    (_tf_generator_save, _tf_generator_restore),
    (_keras_seed_save, _keras_seed_restore),
)
