"""A JSON value's type in words, for the error sentences of bodies, filters and coercion."""

from __future__ import annotations


def json_kind(v: object) -> str:
    """`null`, `true/false`, `a number`, `a text`, `an array`, `an object` (else the type name)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a text"
    if isinstance(v, list):
        return "an array"
    return "an object" if isinstance(v, dict) else type(v).__name__
