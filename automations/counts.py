"""What the worker decided about an automation's records, as counts: the model of the Avro
`AutomationCounts` record. The worker fills one per automation and batch (`streams/counts.py`);
the control plane adds them up over 24 hours (`control_plane/activity.py`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Counts:
    accepted: int = 0
    filtered: int = 0
    failed: int = 0
    invited: int = 0
    filtered_by: Counter[str] = field(default_factory=Counter)  # condition in words -> count
    failed_by: Counter[str] = field(default_factory=Counter)  # error kind -> count

    def add(self, other: Counts | dict[str, Any]) -> None:
        """Add another `Counts` or a decoded `AutomationCounts` record."""
        get = other.get if isinstance(other, dict) else other.__dict__.get
        self.accepted += int(get("accepted") or 0)
        self.filtered += int(get("filtered") or 0)
        self.failed += int(get("failed") or 0)
        self.invited += int(get("invited") or 0)
        self.filtered_by.update(get("filtered_by") or {})
        self.failed_by.update(get("failed_by") or {})

    def record(self, automation_id: str, at_ms: int) -> dict[str, Any]:
        """The `AutomationCounts` record of these counts."""
        return {"automation_id": automation_id, "at": at_ms, "accepted": self.accepted,
                "filtered": self.filtered, "failed": self.failed, "invited": self.invited,
                "filtered_by": dict(self.filtered_by), "failed_by": dict(self.failed_by)}
