"""The records the worker passes around: what it consumed (`RawRecord`) and what it will
produce (`Output`). The Kafka plumbing (txloop, batching, scheduler) and the transform both
use these, and neither needs the other to name them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Headers = Sequence[tuple[str, bytes]]

# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, about
# three times the cost of a plain one, and the worker builds one of each per record. Nothing
# hashes them (their header lists are not hashable anyway) and nothing changes them.


@dataclass(slots=True)
class Output:
    """One record to produce, inside the caller's transaction."""

    topic: str
    key: bytes
    value: bytes | None  # None: a tombstone (the scheduler's changelog)
    headers: list[tuple[str, bytes]]
    partition: int | None = None  # None: by key


@dataclass(slots=True)
class RawRecord:
    """What the transform needs of a consumed `webhooks.raw` record."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    partition: int
    offset: int
    timestamp_ms: int
