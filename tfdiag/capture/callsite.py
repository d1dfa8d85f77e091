"""Find the user's frame: the first stack frame outside TensorFlow, Keras and tfdiag."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import sys
import sysconfig

# Packages whose frames are never "the user's code". Located by their install folders (found
# without importing them), so a user's own folder called keras/ or tfdiag/ is still user code.
LIBRARY_PACKAGES = ("tensorflow", "keras", "tf_keras", "tfdiag", "absl", "optree", "numpy", "wrapt",
                    "tensorboard", "ml_dtypes", "h5py", "google", "IPython", "ipykernel")


def _package_dirs(names) -> dict[str, tuple[str, ...]]:
    dirs: dict[str, tuple[str, ...]] = {}
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        locations = list(getattr(spec, "submodule_search_locations", None) or []) if spec else []
        if locations:
            dirs[name] = tuple(os.path.join(os.path.realpath(p), "") for p in locations)
    return dirs


PACKAGE_DIRS = _package_dirs(LIBRARY_PACKAGES)
_LIBRARY_PREFIXES = tuple(p for paths in PACKAGE_DIRS.values() for p in paths)
_STDLIB = tuple(
    os.path.join(os.path.realpath(p), "")
    for p in {sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("platstdlib")} if p
)
_SITE_PACKAGES = f"{os.sep}site-packages{os.sep}"
# Console scripts (the ``tfdiag`` entry point) and AutoGraph's generated copies of user functions.
_SCRIPTS = os.path.join(os.path.realpath(sysconfig.get_paths().get("scripts", sys.prefix)), "")
_GENERATED = "__autograph_generated_file"
_is_library: dict[str, bool] = {}


def is_library_file(filename: str) -> bool:
    """True for files of TF, Keras, tfdiag, their helpers and the standard library."""
    known = _is_library.get(filename)
    if known is None:
        if filename.startswith("<"):
            known = filename.startswith(("<frozen", "<built-in"))
        else:
            path = os.path.realpath(os.path.abspath(filename))
            known = (
                path.startswith(_LIBRARY_PREFIXES)
                or (path.startswith(_STDLIB) and _SITE_PACKAGES not in path)
                or path.startswith(_SCRIPTS)
                or _GENERATED in os.path.basename(path)
            )
        _is_library[filename] = known
    return known


@functools.lru_cache(maxsize=4096)
def package_of(filename: str) -> str | None:
    """Which of LIBRARY_PACKAGES a file belongs to (None for the user's own files)."""
    if filename.startswith("<"):
        return None
    path = os.path.realpath(os.path.abspath(filename))
    for name, prefixes in PACKAGE_DIRS.items():
        if path.startswith(prefixes):
            return name
    return None


# Keyed by id(code), holding the code object itself: code objects compare equal across files
# (co_filename is not part of their equality), so they cannot be dict keys here.
# (The timed-call wrapper reads it inline: ``CODE_IS_LIBRARY``.)
_code_is_library: dict[int, tuple] = {}
CODE_IS_LIBRARY = _code_is_library
_site_text: dict[tuple, tuple] = {}


def user_frame(skip: int = 1):
    """The innermost frame that belongs to the user's code, or None."""
    return first_user_frame(sys._getframe(skip))


def first_user_frame(frame):
    """``frame`` or the first frame out from it that belongs to the user's code, or None."""
    while frame is not None:
        code = frame.f_code
        cached = _code_is_library.get(id(code))
        if cached is not None and cached[0] is code:
            library = cached[1]
        else:
            library = is_library_file(code.co_filename)
            _code_is_library[id(code)] = (code, library)
        if not library:
            return frame
        frame = frame.f_back
    return None


def user_call_site(skip: int = 2) -> str:
    """``file:line`` of the user's code that led here (``<unknown>`` if none). The search starts
    ``skip`` frames up from this function (2: its caller) and skips library frames."""
    return site_text(user_code_line(skip))


def user_code_line(skip: int = 2) -> tuple | None:
    """(code, line) of the user's code that led here: cheap, for every call; ``site_text`` later.
    The search starts ``skip`` frames up from this function (1: its caller)."""
    frame = first_user_frame(sys._getframe(skip))
    return None if frame is None else (frame.f_code, frame.f_lineno)


def site_text(code_line: tuple | None) -> str:
    """``file:line`` of a ``user_code_line`` result (cached: one text per code object and line)."""
    if code_line is None:
        return "<unknown>"
    code, line = code_line
    key = (id(code), line)
    cached = _site_text.get(key)
    if cached is not None and cached[0] is code:
        return cached[1]
    site = f"{code.co_filename}:{line}"
    _site_text[key] = (code, site)
    return site


_lines: dict[tuple, tuple] = {}


def line_at(code, offset: int | None) -> int | None:
    """The line of bytecode offset ``offset`` (a frame's ``f_lasti``) in ``code``, as the frame's
    ``f_lineno`` would say; cached per code object and offset (the timed calls' log keeps offsets:
    ``f_lineno`` walks the line table on every call)."""
    key = (id(code), offset)
    cached = _lines.get(key)
    if cached is not None and cached[0] is code:
        return cached[1]
    line = None
    if offset is not None and offset >= 0:
        for start, end, number in code.co_lines():
            if start <= offset < end:
                line = number
                break
    if line is None:
        line = code.co_firstlineno
    if len(_lines) > 10_000:
        _lines.clear()
    _lines[key] = (code, line)
    return line


def code_site(code) -> str:
    return f"{code.co_filename}:{code.co_firstlineno}"


_callers: dict[int, tuple] = {}


def caller_of(code) -> dict | None:
    """``{"name", "defined_at"}`` of the user function whose body ``code`` is (None at module
    level); cached per code object, so a call site costs one lookup at most."""
    cached = _callers.get(id(code))
    if cached is not None and cached[0] is code:
        return cached[1]
    if code.co_name == "<module>":
        caller = None
    else:
        caller = {"name": getattr(code, "co_qualname", code.co_name), "defined_at": code_site(code)}
    if len(_callers) > 10_000:
        _callers.clear()
    _callers[id(code)] = (code, caller)
    return caller


def user_site_outside(owner, skip: int = 2) -> str | None:
    """``file:line`` of the user's code that led here, outside ``owner``'s own methods (a model's
    ``__init__`` or ``compile`` written by the user calling ``super()``), or None. Walks the stack:
    for rare events only (a model created or compiled)."""
    frame = user_frame(skip + 1)
    while frame is not None:
        code = frame.f_code
        if not (code.co_argcount and frame.f_locals.get(code.co_varnames[0]) is owner):
            return site_text((code, frame.f_lineno))
        frame = first_user_frame(frame.f_back)
    return None


def unwrap_function(function):
    """The Python function under decorators (``__wrapped__`` chains); itself if the chain loops."""
    try:
        return inspect.unwrap(function)
    except ValueError:
        return function


def code_of(function):
    """The code object behind a function, method or tf.function's Python function (decorators
    and bound methods unwrapped), or None."""
    function = unwrap_function(function)
    function = getattr(function, "__func__", function)  # a bound method
    return getattr(function, "__code__", None)
