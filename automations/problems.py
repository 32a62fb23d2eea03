"""One thing wrong with an input, as every check reports it (settings, filters, API bodies)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """Where (a dotted path into the input, e.g. `mapping[2].variable`), why (a sentence a
    person understands), and a machine-readable code."""

    field: str
    reason: str
    code: str = "invalid"
