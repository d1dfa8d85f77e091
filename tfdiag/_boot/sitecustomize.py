"""tfdiag's bootstrap in a followed child process (capture/processes.py says how it gets here).

This folder is put first on PYTHONPATH while a diagnosis runs, so a Python child started then
imports this at startup. It takes its folder off sys.path again, runs the ``sitecustomize``
it hides (if any; that one is then ``sys.modules["sitecustomize"]``, and what it raises is
raised again for site.py to report), and, when ``TFDIAG_CHILD`` is set, starts the child's own
diagnosis. A child whose Python cannot import tfdiag runs on unobserved; so does one started
with ``-I``, ``-E`` (PYTHONPATH ignored) or ``-S`` (no site, no sitecustomize). Cost: importing
tfdiag (~0.2 s).
"""

import os
import sys


def _run_hidden_sitecustomize() -> BaseException | None:
    """Run the sitecustomize this file hides, as site.py would; it stays ``sys.modules["sitecustomize"]``.
    Returns what it raised (an ImportError of its own imports, say), for site.py to report as usual."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    ours = sys.modules.pop("sitecustomize", None)
    try:
        import sitecustomize  # noqa: F401  (the one this file shadows, if there is one)
    except ImportError as exc:
        if exc.name != "sitecustomize":  # not "there is none": the user's own failed
            return exc
    except BaseException as exc:
        return exc
    finally:
        if "sitecustomize" not in sys.modules and ours is not None:
            sys.modules["sitecustomize"] = ours  # there was none: ours stands in, as site.py left it
    return None


def _start() -> None:
    if not os.environ.get("TFDIAG_CHILD"):
        return
    try:
        from tfdiag.session import start_child
    except Exception:  # another Python, without tfdiag: not followed
        return
    try:
        start_child()
    except Exception as exc:
        print(f"tfdiag: could not follow process {os.getpid()} ({exc.__class__.__name__}: {exc})", file=sys.stderr)


_failed = _run_hidden_sitecustomize()
_start()
if _failed is not None:
    raise _failed
