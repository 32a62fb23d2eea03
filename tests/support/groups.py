"""What a consumer group's coordinator says: its state and each member's partitions."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NotCoordinatorError,
)


async def group_assignment(bootstrap: str, group: str, topic: str) -> tuple[str, list[set[int]]]:
    """The group's state ("Stable", "PreparingRebalance", ...) and, per member, the
    partitions of `topic` it owns (members of a group that reads one topic: one set each).
    While the group's coordinator is not there yet (a young broker still loading
    __consumer_offsets), the state is "" and nobody owns anything: callers poll."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        try:
            (resp,) = await admin.describe_consumer_groups([group])
        except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError,
                NotCoordinatorError):
            return "", []
        [g] = resp.groups
        # (error_code, group_id, state, protocol_type, protocol, members, ...); a member's
        # last field is its assignment, in the consumer protocol's encoding.
        owned = []
        for member in g[5]:
            if not member[-1]:  # mid-rebalance: no assignment yet
                owned.append(set())
                continue
            assignment = ConsumerProtocolMemberAssignment.decode(member[-1])
            owned.append({p for t, parts in assignment.assignment if t == topic for p in parts})
        return g[2], owned
    finally:
        await admin.close()
