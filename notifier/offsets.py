"""Which offsets may be committed when records finish out of order.

Records of one partition are worked on concurrently (a retrying invitation must not hold up
the others), but a consumer offset says "everything before this is done". So the committable
position of a partition is its lowest offset still in flight, or one past the highest seen.
"""

from __future__ import annotations

from aiokafka import TopicPartition


class OffsetTracker:
    def __init__(self) -> None:
        self._in_flight: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def add(self, tp: TopicPartition, offset: int) -> None:
        self._in_flight.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def done(self, tp: TopicPartition, offset: int) -> None:
        pending = self._in_flight.get(tp)
        if pending is not None:
            pending.discard(offset)

    def in_flight(self) -> int:
        return sum(len(p) for p in self._in_flight.values())

    def committable(self) -> dict[TopicPartition, int]:
        """Positions that moved since the last `committed()`."""
        out: dict[TopicPartition, int] = {}
        for tp, nxt in self._next.items():
            pending = self._in_flight.get(tp)
            position = min(pending) if pending else nxt
            if position > self._committed.get(tp, -1):
                out[tp] = position
        return out

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, position in offsets.items():
            self._committed[tp] = max(self._committed.get(tp, -1), position)

    def forget(self, tps: set[TopicPartition] | list[TopicPartition]) -> None:
        """Partitions taken away by a rebalance: their new owner tracks them."""
        for tp in tps:
            self._in_flight.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
