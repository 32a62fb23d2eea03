"""`AutomationError` records (the value of `automations.errors`), as every service builds them.

The error id is a uuid5 of what identifies the failure (`identity`: the streams give
automation, event, record index and reason; the notifier the invitation and kind), so the same
failure reported again after a reprocessing or a replay keeps its id and is stored once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Final

ERROR_NAMESPACE: Final = uuid.UUID("5b0f4c1e-8f7a-4d0e-9a51-3c2d6b7e9f10")


def error_id(identity: Sequence[object]) -> str:
    """uuid5 over the parts of `identity` as text, joined by NUL (which no part holds)."""
    return str(uuid.uuid5(ERROR_NAMESPACE, "\x00".join(map(str, identity))))


def automation_error(*, identity: Sequence[object], automation_id: str, kind: str,
                     detail: str, source: str, at_ms: int, field: str | None = None,
                     event_id: str | None = None, record_index: int | None = None,
                     invitation_id: str | None = None, count: int = 1,
                     since_ms: int | None = None) -> dict[str, Any]:
    """An AutomationError record for `codec.encode("AutomationError", ...)`. `detail` is a
    sentence that names fields, never a respondent's values. A count of like errors (the
    ingress's refused requests) gives `count` and the interval `since_ms`..`at_ms`."""
    return {"error_id": error_id(identity), "automation_id": automation_id, "kind": kind,
            "detail": detail, "source": source, "field": field, "event_id": event_id,
            "record_index": record_index, "invitation_id": invitation_id, "at": at_ms,
            "count": count, "since": since_ms}
