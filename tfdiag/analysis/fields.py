"""Reading a recording's fields in analysis: a number, a count, or None when the field holds
something else (a recording may come from a file tfdiag did not write; booleans are not numbers)."""

from __future__ import annotations


def number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
