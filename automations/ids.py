"""The ids of the pipeline's events: a webhook's event id and the invitations derived from it.

An event id is random (the ingress gives one to every accepted webhook). An invitation id is
derived: uuid5 of (automation, event, record index), so reprocessing a record, replaying it
from the dead-letter topic or a worker's crash mid-batch yields the same id, and the notifier
mails each invitation once.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Final

INVITATION_NAMESPACE: Final = uuid.UUID("6f1c9a52-2d7e-5b3a-9c41-8e0f4b7d2a10")

# uuid.uuid5 builds a UUID object (with checks) only to format it again: the same bytes
# straight from SHA-1 cost a third. Equality with uuid.uuid5 is a property test.
_NS_SHA1: Final = hashlib.sha1(INVITATION_NAMESPACE.bytes, usedforsecurity=False)


def _uuid_text(h: str, version: str) -> str:
    """The first 32 hex digits of `h` as an RFC 4122 UUID: `version` as digit 12, variant 10
    in the top bits of digit 16."""
    return (f"{h[:8]}-{h[8:12]}-{version}{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-"
            f"{h[20:32]}")


def invitation_id(automation_id: str, event_id: str, index: int) -> str:
    """The invitation of record `index` of event `event_id`: uuid5 over
    "{automation_id}:{event_id}:{index}", so reprocessing yields the same id."""
    h = _NS_SHA1.copy()
    h.update(f"{automation_id}:{event_id}:{index}".encode())
    return _uuid_text(h.hexdigest(), "5")


def new_event_id() -> str:
    """A random (version 4) UUID, as str(uuid.uuid4()) at a fifth of its cost."""
    return _uuid_text(os.urandom(16).hex(), "4")
