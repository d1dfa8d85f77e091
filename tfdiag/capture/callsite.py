"""Find the user's frame: the first stack frame outside TensorFlow, Keras and tfdiag."""

from __future__ import annotations

import os
import sys
import sysconfig

_LIBRARY_MARKERS = (
    f"{os.sep}tensorflow{os.sep}",
    f"{os.sep}keras{os.sep}",
    f"{os.sep}tf_keras{os.sep}",
    f"{os.sep}tfdiag{os.sep}",
    f"{os.sep}absl{os.sep}",
    f"{os.sep}optree{os.sep}",
    f"{os.sep}numpy{os.sep}",
    f"{os.sep}wrapt{os.sep}",
    f"{os.sep}tensorboard{os.sep}",
)
_STDLIB = tuple(
    p for p in {sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("platstdlib")} if p
)
_is_library: dict[str, bool] = {}


def is_library_file(filename: str) -> bool:
    """True for files of TF, Keras, tfdiag, their helpers and the standard library."""
    known = _is_library.get(filename)
    if known is None:
        known = (
            filename.startswith(("<frozen", "<built-in"))
            or any(marker in filename for marker in _LIBRARY_MARKERS)
            or (filename.startswith(_STDLIB) and f"{os.sep}site-packages{os.sep}" not in filename)
        )
        _is_library[filename] = known
    return known


_code_is_library: dict = {}
_site_text: dict = {}


def user_frame(skip: int = 1):
    """The innermost frame that belongs to the user's code, or None."""
    frame = sys._getframe(skip)
    while frame is not None:
        code = frame.f_code
        library = _code_is_library.get(code)
        if library is None:
            library = _code_is_library[code] = is_library_file(code.co_filename)
        if not library:
            return frame
        frame = frame.f_back
    return None


def user_call_site(skip: int = 2) -> str:
    """``file:line`` of the user's code that led here (``<unknown>`` if none); called per call, so cached."""
    frame = user_frame(skip)
    if frame is None:
        return "<unknown>"
    key = (frame.f_code, frame.f_lineno)
    site = _site_text.get(key)
    if site is None:
        site = _site_text[key] = f"{frame.f_code.co_filename}:{frame.f_lineno}"
    return site


def code_site(code) -> str:
    return f"{code.co_filename}:{code.co_firstlineno}"
