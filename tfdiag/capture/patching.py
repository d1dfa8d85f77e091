"""Install and remove attribute patches, and run code when a module is first imported.

Every patch tfdiag makes goes through a ``Patcher`` so that ``restore()`` puts
back the exact original objects (or removes attributes that did not exist),
whatever route the diagnosed code left by. A ``Toggle`` holds patches that are
switched on only while some call needs them (the per-op phase entry points);
its patcher switches it off for good on restore. ``installed()`` lists the
patches that are live anywhere, for tests that check nothing is left behind.
Every installer runs through ``guarded``: it may run inside the user's ``import``.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading
from typing import Any, Callable

_MISSING = object()
_LIVE: list["Patcher"] = []
_LIVE_LOCK = threading.Lock()


class Patcher:
    """A stack of (owner, attribute, original) records, undone in reverse order."""

    def __init__(self) -> None:
        self._records: list[tuple[Any, str, Any]] = []
        self._toggles: list[Toggle] = []
        self._import_hook: _PostImportFinder | None = None
        with _LIVE_LOCK:
            _LIVE.append(self)

    def patch(self, owner: Any, name: str, make_replacement: Callable[[Any], Any]) -> Any:
        """Replace ``owner.name`` with ``make_replacement(original)``; returns the original."""
        own, original = _lookup(owner, name)
        replacement = make_replacement(original)
        setattr(owner, name, replacement)
        self._records.append((owner, name, own))
        return original

    def toggle(self) -> "Toggle":
        """A new set of switchable patches, switched off when this patcher restores."""
        toggle = Toggle()
        self._toggles.append(toggle)
        return toggle

    def when_imported(self, module_name: str, callback: Callable[[Any], None]) -> None:
        """Call ``callback(module)`` now if the module is loaded, else right after its import."""
        module = sys.modules.get(module_name)
        if module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False) is False:
            callback(module)
            return
        if self._import_hook is None:
            self._import_hook = _PostImportFinder()
            sys.meta_path.insert(0, self._import_hook)
        self._import_hook.callbacks.setdefault(module_name, []).append(callback)

    def restore(self) -> None:
        if self._import_hook is not None:
            try:
                sys.meta_path.remove(self._import_hook)
            except ValueError:
                pass
            self._import_hook.callbacks.clear()
            self._import_hook = None
        for toggle in self._toggles:
            toggle.switch_off()
        self._toggles.clear()
        while self._records:
            owner, name, own = self._records.pop()
            _put_back(owner, name, own)
        with _LIVE_LOCK:
            if self in _LIVE:
                _LIVE.remove(self)

    @property
    def records(self) -> list[tuple[Any, str, Any]]:
        return list(self._records)


def guarded(warn: Callable[[str], None], what: str, install: Callable[..., None], *args) -> Callable[[Any], None]:
    """The ``when_imported`` callback that runs ``install(*args, module)``. It may run inside the
    user's ``import``: any exception becomes ``warn(...)`` (a capture warning), never the user's
    ImportError, and the rest of capture goes on."""

    def callback(module) -> None:
        try:
            install(*args, module)
        except Exception as exc:  # internals differ in this version: say so, capture the rest
            name = getattr(module, "__name__", "?")
            try:
                warn(f"{what} unavailable ({name}): {exc.__class__.__name__}: {exc}")
            except Exception:  # a broken warn must not break the import either
                pass

    return callback


def capture_installed() -> bool:
    """True while any Patcher is live (between its creation and ``restore()``): a diagnosis is
    capturing, so code run now is recorded as the user's."""
    with _LIVE_LOCK:
        return bool(_LIVE)


def installed() -> list[tuple[Any, str]]:
    """Every (owner, attribute) currently patched by any live Patcher, plus import hooks."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    out: list[tuple[Any, str]] = []
    for patcher in live:
        out.extend((owner, name) for owner, name, _ in patcher.records)
        for toggle in list(patcher._toggles):
            out.extend(toggle.live())
    out.extend((sys.meta_path, repr(f)) for f in sys.meta_path if isinstance(f, _PostImportFinder))
    return out


def _lookup(owner: Any, name: str) -> tuple[Any, Any]:
    """(what to restore, the original). For a class, the class's own ``__dict__`` entry, so that
    restoring never turns an inherited method into an own attribute."""
    if isinstance(owner, type):
        own = owner.__dict__.get(name, _MISSING)
        return own, (getattr(owner, name) if own is _MISSING else own)
    own = getattr(owner, name)
    return own, own


def _put_back(owner: Any, name: str, own: Any) -> None:
    if own is _MISSING:
        try:
            delattr(owner, name)
        except AttributeError:
            pass
    else:
        setattr(owner, name, own)


class Toggle:
    """Patches that are on while at least one user holds them (``acquire``/``release``).

    Users on several threads share them: the patches go in on the first ``acquire`` and
    come out on the last ``release``. Wrappers therefore also run for other threads'
    calls while switched on, and must not assume they were asked for.
    """

    def __init__(self) -> None:
        self._entries: list[tuple[Any, str, Any, Any]] = []
        self.users = 0  # calls holding it switched on (read on hot paths; changed only here)
        self._lock = threading.Lock()

    def add(self, owner: Any, name: str, make_replacement: Callable[[Any], Any]) -> Any:
        """Register ``owner.name -> make_replacement(original)`` (switched on now if in use)."""
        own, original = _lookup(owner, name)
        replacement = make_replacement(original)
        with self._lock:
            self._entries.append((owner, name, own, replacement))
            if self.users:
                setattr(owner, name, replacement)
        return original

    def acquire(self) -> None:
        with self._lock:
            self.users += 1
            if self.users == 1:
                for owner, name, _, replacement in self._entries:
                    setattr(owner, name, replacement)

    def release(self) -> None:
        with self._lock:
            if self.users == 0:
                return
            self.users -= 1
            if self.users == 0:  # once per sampled call: plain setattr where the original was own
                for owner, name, own, _ in reversed(self._entries):
                    if own is _MISSING:
                        _put_back(owner, name, own)
                    else:
                        setattr(owner, name, own)

    def switch_off(self) -> None:
        """Off for good, whoever still holds it (the diagnosis is over)."""
        with self._lock:
            if self.users:
                for owner, name, own, _ in reversed(self._entries):
                    _put_back(owner, name, own)
            self.users = 0
            self._entries.clear()

    def live(self) -> list[tuple[Any, str]]:
        with self._lock:
            return [(owner, name) for owner, name, _, _ in self._entries] if self.users else []


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of watched modules so a callback runs once the module has executed."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list[Callable[[Any], None]]] = {}
        self._busy = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.callbacks or getattr(self._busy, "name", None) == fullname:
            return None
        self._busy.name = fullname
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy.name = None
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _CallbackLoader(spec.loader, self, fullname)
        return spec


class _CallbackLoader(importlib.abc.Loader):
    def __init__(self, loader, finder: _PostImportFinder, name: str) -> None:
        self._loader = loader
        self._finder = finder
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        for callback in self._finder.callbacks.pop(self._name, []):
            callback(module)

    def __getattr__(self, name):  # get_source, get_code, ... for tracebacks
        return getattr(self._loader, name)
