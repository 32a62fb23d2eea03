"""Per-automation counts of what the worker decided, published with the decisions.

The raw processor adds each record's outcome to a `Tally` while it transforms a batch, then
drains it into one `AutomationCounts` record per automation (topic `automations.counts`,
keyed by automation id) that is sent in the SAME Kafka transaction as the batch's outputs:
a read_committed reader that sums these records sees exactly the records that were decided,
once each, whatever crashed. The control plane sums them over the last 24 hours.
"""

from __future__ import annotations

from collections import defaultdict

from automations.counts import Counts
from schemas import codec

# A filtered-out reason is a condition in words; a pathological filter must not make the
# counts record unbounded.
MAX_REASONS = 50
MAX_REASON_CHARS = 300
OTHER = "(other conditions)"


class Tally:
    def __init__(self) -> None:
        # A missing automation's Counts made in C: `invited` runs once a record.
        self._by: defaultdict[str, Counts] = defaultdict(Counts)

    def invited(self, automation_id: str) -> None:
        c = self._by[automation_id]
        c.accepted += 1
        c.invited += 1

    def filtered(self, automation_id: str, reason: str) -> None:
        c = self._by[automation_id]
        c.accepted += 1
        c.filtered += 1
        reason = reason[:MAX_REASON_CHARS] or "(no reason)"
        if reason not in c.filtered_by and len(c.filtered_by) >= MAX_REASONS:
            reason = OTHER
        c.filtered_by[reason] += 1

    def failed(self, automation_id: str, kind: str) -> None:
        c = self._by[automation_id]
        c.accepted += 1
        c.failed += 1
        c.failed_by[kind] += 1

    def __bool__(self) -> bool:
        return bool(self._by)

    def clear(self) -> None:
        self._by.clear()

    def drain(self, at_ms: int) -> list[tuple[bytes, bytes]]:
        """(key, AutomationCounts value) per automation counted since the last drain."""
        out = [(automation_id.encode(),
                codec.encode("AutomationCounts", c.record(automation_id, at_ms)))
               for automation_id, c in self._by.items()]
        self._by.clear()
        return out
