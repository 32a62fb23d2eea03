"""The consumer plumbing both notifier services share: one topic read by a group, records
finished out of order, offsets committed by hand up to the lowest record still in flight.

`TrackedConsumer` owns the aiokafka consumer, the `OffsetTracker` and the rebalance listener
(commit what is done before partitions go, then forget them). A service adds its records
with `tracker.add`, marks them `tracker.done`, and calls `commit()` when it suits it;
`before_commit` lets it make durable what must precede the offsets (the invitation
service's "outcome published" flags).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError

from core.kafka import clients
from core.kafka.clients import IDLE_FETCH_WAIT_MS, Kafka
from notifier.offsets import OffsetTracker

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]
# A rebalance normally ends within seconds; without partitions for longer, not ready.
REBALANCE_GRACE_S = 30.0
# How long the broker may hold a fetch that finds nothing new (see IDLE_FETCH_WAIT_MS): at
# 50 ms the two consumers of an idle notifier took ~8% of a core of the broker's.
FETCH_MAX_WAIT_MS = IDLE_FETCH_WAIT_MS


class TrackedConsumer:
    def __init__(self, *, bootstrap: Kafka, group_id: str, topic: str,
                 before_commit: Hook | None = None,
                 fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.topic = topic
        self.before_commit = before_commit
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.tracker = OffsetTracker()
        self.consumer: AIOKafkaConsumer | None = None
        self.in_group = False  # partitions assigned (even if none), and none revoked since
        self.revoked_at: float | None = None  # monotonic, while a rebalance is under way

    @property
    def assigned(self) -> bool:
        """In its group now (not only once): a rebalance that does not end within
        REBALANCE_GRACE_S, or a stopped consumer, is not."""
        if self.consumer is None:
            return False
        if self.revoked_at is not None:
            return time.monotonic() - self.revoked_at < REBALANCE_GRACE_S
        return self.in_group

    async def start(self) -> AIOKafkaConsumer:
        self.consumer = clients.consumer(
            self.bootstrap, group_id=self.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed", fetch_max_wait_ms=self.fetch_max_wait_ms)
        self.consumer.subscribe([self.topic], listener=_Rebalance(self))
        await self.consumer.start()
        log.info("consuming %s as group %s", self.topic, self.group_id)
        return self.consumer

    async def commit(self) -> None:
        """Commit every partition's position that moved (only partitions still ours)."""
        if self.before_commit is not None:
            await self.before_commit()
        offsets = self.tracker.committable()
        if not offsets or self.consumer is None:
            return
        assigned = self.consumer.assignment()
        offsets = {tp: off for tp, off in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError as exc:
            log.warning("offset commit on %s refused (a rebalance); the new owner resumes "
                        "from the last commit and finds finished records done: %s",
                        self.topic, exc)
            return
        self.tracker.committed(offsets)

    async def final_commit(self) -> None:
        """The commit on the way out: a failure only means some redelivery, found done."""
        try:
            await self.commit()
        except (KafkaError, OSError) as exc:
            log.warning("final offset commit on %s failed (records will be redelivered and "
                        "found done): %s", self.topic, exc)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
            self.in_group = False


class ConsumerService:
    """Base of a service reading one topic: what the app and health see of it."""

    def __init__(self, inbound: TrackedConsumer) -> None:
        self._in = inbound
        self._tracker = inbound.tracker
        self._stopping = asyncio.Event()
        self.running = False

    @property
    def assigned(self) -> bool:
        return self._in.assigned

    async def stop(self) -> None:
        """Ask `run()` to finish: it ends its loop, commits and stops the consumer."""
        self._stopping.set()


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, owner: TrackedConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await self.owner.commit()
        except (KafkaError, OSError) as exc:
            log.warning("commit on %s before a rebalance failed: %s", self.owner.topic, exc)
        self.owner.tracker.forget(revoked)
        if self.owner.revoked_at is None:
            self.owner.revoked_at = time.monotonic()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.owner.in_group = True  # in its group: what health reports as running
        self.owner.revoked_at = None
        log.info("assigned %d partitions of %s", len(assigned), self.owner.topic)
