"""How durations are written in findings, verdicts and reports."""


def duration(seconds: float) -> str:
    """``2.00 s``, ``31 ms`` or ``0.45 ms``: seconds written in the unit that reads best."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds * 1000:.2f} ms"

