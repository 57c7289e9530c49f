"""Argument checks shared by the public functions: one message format everywhere."""

from __future__ import annotations

from curvprune.errors import InvalidArgument


def positive_int(name: str, value: object) -> int:
    """`value` if it is an int ≥ 1 (not a bool); else an error naming `name` and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"{name} must be a positive integer, got {value!r}")
    return value


__all__ = ["positive_int"]
