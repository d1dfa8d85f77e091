"""What ran: Python, TensorFlow, Keras (3 or tf-keras), devices, command line.

Reads only modules the user's code already imported: it never imports
TensorFlow itself, so a script that never used TensorFlow is reported as such.
"""

from __future__ import annotations

import os
import platform
import sys


def _version(module_name: str) -> str | None:
    module = sys.modules.get(module_name)
    return None if module is None else str(getattr(module, "__version__", "unknown"))


def keras_flavor() -> str | None:
    """``keras3``, ``tf-keras`` or None, from what the user's code imported and TF's switch."""
    legacy = os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")
    if "tf_keras" in sys.modules and (legacy or "keras" not in sys.modules):
        return "tf-keras"
    if "keras" in sys.modules:
        return "keras3" if (_version("keras") or "3").split(".")[0] >= "3" else "keras2"
    return None


def collect(command: list[str] | None = None) -> dict:
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "command": list(command if command is not None else sys.argv),
        "tensorflow": _version("tensorflow"),
        "keras": _version("keras"),
        "tf_keras": _version("tf_keras"),
        "keras_flavor": keras_flavor(),
        "tf_use_legacy_keras": os.environ.get("TF_USE_LEGACY_KERAS"),
        "tensorflow_imported": "tensorflow" in sys.modules,
        "devices": [],
        "cpu_count": _usable_cpus(),
    }
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            env["devices"] = [f"{d.device_type}:{d.name}" for d in tf.config.list_physical_devices()]
        except Exception as exc:  # a half-imported or broken TF: report, don't fail
            env["devices_error"] = f"{exc.__class__.__name__}: {exc}"
    return env


def _usable_cpus() -> int | None:
    """The CPUs this process may run on (``taskset``, a container's cpuset), which is what advice
    about workers needs; the machine's count where the platform cannot say."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()
