"""A transactional consume-transform-produce loop (Kafka exactly-once, aiokafka).

For each batch of one input partition: begin a transaction, send every output, add the
consumed offsets to the transaction (`send_offsets_to_transaction`), commit. Outputs and
progress become visible together or not at all, so a crash anywhere re-runs an aborted
batch and readers with `isolation_level="read_committed"` never see a duplicate.

One transactional producer per input partition, with a `transactional.id` derived from
(group, topic, partition): whichever worker owns the partition after a crash or rebalance
initialises the same id, which fences the zombie and aborts its open transaction. The
consumer seeks to the committed offset only after that fence, so it never reads a stale one.

Generic plumbing: it knows `streams.records.Output`, not what a handler does with a batch.
It runs inside the Faust worker's service tree, but Faust's own exactly-once processing is
not used (see streams/__init__.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import ProducerFenced

from core.kafka import clients
from core.kafka.clients import Kafka
from streams import metrics
from streams.batching import BatchSender, Sent, last_offsets
from streams.records import Output

log = logging.getLogger(__name__)

# After the commit, a batch handler may act on the offsets its outputs got (the scheduler
# stores them): it receives the offset of the last output written to each partition.
AfterCommit = Callable[[dict[TopicPartition, int]], Awaitable[None]]
Handler = Callable[[TopicPartition, list[ConsumerRecord]],
                   Awaitable[tuple[list[Output], AfterCommit | None]]]
PartitionHook = Callable[[TopicPartition], Awaitable[None]]


@dataclass
class LoopConfig:
    name: str  # for logs and metrics: "streams" or "scheduler"
    bootstrap: Kafka
    group_id: str
    topic: str
    max_records: int = 2000
    # Dynamic membership: a stopping worker leaves the group, so a rolling restart hands its
    # partitions over at once; a killed one is noticed after the session timeout.
    session_timeout_ms: int = 6_000
    heartbeat_interval_ms: int = 500
    transaction_timeout_ms: int = 60_000
    extra_producer: dict[str, object] = field(default_factory=dict)


class TransactionalLoop:
    def __init__(self, config: LoopConfig, handler: Handler,
                 on_assigned: PartitionHook | None = None,
                 on_revoked: PartitionHook | None = None) -> None:
        self.cfg = config
        self.handler = handler
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self.consumer: AIOKafkaConsumer | None = None
        self.producers: dict[TopicPartition, AIOKafkaProducer] = {}
        self._parked: dict[TopicPartition, AIOKafkaProducer] = {}
        self._partitions: dict[str, list[int]] = {}  # partitions of each output topic
        # Held while a batch is in flight and while partitions move, so a revoke never
        # interleaves with a transaction of the revoked partition.
        self.lock = asyncio.Lock()
        self.running = False
        self.assigned = asyncio.Event()
        # Bumped on every seek of a partition: a batch fetched before it is not processed.
        self._epoch: dict[TopicPartition, int] = {}
        self._sought: dict[TopicPartition, int] = {}

    def transactional_id(self, tp: TopicPartition) -> str:
        return f"{self.cfg.group_id}-{tp.topic}-{tp.partition}"

    async def producer_for(self, tp: TopicPartition) -> AIOKafkaProducer:
        producer = clients.producer(
            self.cfg.bootstrap, transactional_id=self.transactional_id(tp),
            enable_idempotence=True, acks="all", linger_ms=5, max_batch_size=1024 * 1024,
            transaction_timeout_ms=self.cfg.transaction_timeout_ms, **self.cfg.extra_producer)
        await producer.start()  # InitProducerId: fences a zombie with this id
        return producer

    async def start(self) -> None:
        self.consumer = clients.consumer(
            self.cfg.bootstrap, group_id=self.cfg.group_id,
            enable_auto_commit=False, heartbeat_interval_ms=self.cfg.heartbeat_interval_ms,
            auto_offset_reset="earliest", isolation_level="read_committed",
            session_timeout_ms=self.cfg.session_timeout_ms, max_poll_interval_ms=300_000,
            fetch_max_wait_ms=100, max_partition_fetch_bytes=4 * 1024 * 1024)
        await self.consumer.start()
        self.consumer.subscribe([self.cfg.topic], listener=_Listener(self))
        self.running = True

    async def run(self) -> None:
        """Poll and process until stopped; the caller runs this as a task."""
        assert self.consumer is not None
        while self.running:
            epochs = dict(self._epoch)
            batches = await self.consumer.getmany(timeout_ms=100,
                                                  max_records=self.cfg.max_records)
            if not batches:
                continue
            async with self.lock:
                todo = []
                for tp, records in batches.items():
                    if tp not in self.producers or not records:
                        continue  # revoked meanwhile: its new owner reads it
                    if self._epoch.get(tp) != epochs.get(tp):
                        # Sought while we fetched: the batch may predate the seek. Re-read
                        # from the sought offset rather than process it twice or skip it.
                        self.consumer.seek(tp, self._sought[tp])
                        continue
                    todo.append(self._process(tp, records))
                await asyncio.gather(*todo)

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        assert self.consumer is not None
        self._epoch[tp] = self._epoch.get(tp, 0) + 1
        self._sought[tp] = offset
        self.consumer.seek(tp, offset)

    async def _process(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        assert self.consumer is not None
        producer = self.producers[tp]
        try:
            outputs, after = await self.handler(tp, records)
            sent = await send_in_transaction(producer, self._partitions, outputs,
                                             {tp: records[-1].offset + 1}, self.cfg.group_id)
        except asyncio.CancelledError:
            raise
        except ProducerFenced:
            # Another worker initialised this partition's transactional id: the group gave it
            # the partition, so our revocation is under way. Hand over; never fence it back.
            await self.fenced(tp)
            return
        except Exception:
            # Nothing of this batch is visible: re-read it with a fresh (fencing) producer.
            metrics.TRANSACTIONS.labels(self.cfg.name, "aborted").inc()
            log.exception("%s: transaction on %s failed; retrying from offset %d",
                          self.cfg.name, tp, records[0].offset)
            await self._reset_partition(tp, records[0].offset)
            return
        metrics.TRANSACTIONS.labels(self.cfg.name, "committed").inc()
        if after is not None:
            await after(last_offsets(sent))

    async def _reset_partition(self, tp: TopicPartition, offset: int) -> None:
        assert self.consumer is not None
        await self.renew_producer(tp)
        self._seek(tp, offset)

    async def fenced(self, tp: TopicPartition) -> None:
        """Stop working on a partition another worker took over (call under the lock)."""
        assert self.consumer is not None
        log.error("%s: fenced on %s by a newer owner; pausing it until reassigned",
                  self.cfg.name, tp)
        metrics.TRANSACTIONS.labels(self.cfg.name, "fenced").inc()
        producer = self.producers.pop(tp, None)
        if producer is not None:
            await _stop_quietly(producer)
        if tp in self.consumer.assignment():
            self.consumer.pause(tp)

    async def renew_producer(self, tp: TopicPartition) -> None:
        """Replace a failed producer by a fresh one with the same id (call under the lock)."""
        old = self.producers.pop(tp, None)
        if old is not None:
            await _stop_quietly(old)
        await asyncio.sleep(1.0)  # a broker hiccup: do not spin
        try:
            self.producers[tp] = await self.producer_for(tp)
        except Exception:
            # Without a producer the partition's records are skipped by run(); surface it
            # loudly and stop the loop so the worker restarts rather than stalls silently.
            log.exception("%s: cannot recreate the producer for %s; stopping", self.cfg.name, tp)
            self.running = False
            raise

    async def partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        assert self.consumer is not None
        async with self.lock:
            mine = set(assigned)
            # Partitions revoked by this rebalance and given back keep their producer (no
            # other worker owned them meanwhile); the others are let go now.
            for tp in [tp for tp in self._parked if tp not in mine]:
                await _stop_quietly(self._parked.pop(tp))
                if self.on_revoked is not None:
                    await self.on_revoked(tp)
            for tp in mine & set(self._parked):
                self.producers[tp] = self._parked.pop(tp)
            new = sorted(tp for tp in mine if tp not in self.producers)
            for tp, producer in zip(new, await asyncio.gather(*map(self.producer_for, new)),
                                    strict=True):
                self.producers[tp] = producer
            for tp in sorted(mine):
                self.consumer.resume(tp)  # in case an earlier fence paused it
                # Fenced first, then read: the committed offset is final for this partition.
                committed = await self.consumer.committed(tp)
                if committed is None:
                    committed = (await self.consumer.beginning_offsets([tp]))[tp]
                # seek() (unlike the asynchronous seek_to_beginning) drops records fetched
                # from an earlier position, so none of them is processed twice.
                self._seek(tp, committed)
            if self.on_assigned is not None:
                await asyncio.gather(*map(self.on_assigned, sorted(mine)))
            log.info("%s: assigned %s", self.cfg.name, sorted(mine))
            self.assigned.set()

    async def partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        async with self.lock:
            for tp in revoked:
                producer = self.producers.pop(tp, None)
                if producer is not None:
                    self._parked[tp] = producer  # until the assignment: given back or let go
            if revoked:
                log.info("%s: revoked %s", self.cfg.name, sorted(revoked))

    async def stop(self) -> None:
        self.running = False
        async with self.lock:
            for producer in [*self.producers.values(), *self._parked.values()]:
                await _stop_quietly(producer)
            self.producers.clear()
            self._parked.clear()
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None


class _Listener(ConsumerRebalanceListener):
    def __init__(self, loop: TransactionalLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.loop.partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.loop.partitions_assigned(assigned)


async def send_in_transaction(producer: AIOKafkaProducer, partitions: dict[str, list[int]],
                              outputs: Sequence[Output],
                              offsets: dict[TopicPartition, int] | None = None,
                              group_id: str = "") -> list[Sent]:
    """Send `outputs` (and commit `offsets` for `group_id`) in one transaction. On any
    failure the transaction is aborted and the failure re-raised: none of it is visible."""
    await producer.begin_transaction()
    try:
        sent = await BatchSender(producer, partitions).send_all(outputs)
        if offsets:
            await producer.send_offsets_to_transaction(offsets, group_id)
        await producer.commit_transaction()
    except BaseException:
        await abort_quietly(producer)
        raise
    return sent


async def abort_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await producer.abort_transaction()
    except Exception:  # noqa: BLE001 - the caller re-raises the original failure
        log.exception("abort_transaction failed (the transaction times out on the broker)")


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await producer.stop()
    except Exception:  # noqa: BLE001 - stopping a broken producer: report and go on
        log.exception("stopping a producer failed")
