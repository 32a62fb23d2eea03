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

Bounded retries (issue 15): a batch that fails is retried from its first offset after a
backoff (the partition is paused meanwhile; the others go on). A failure that is not the
broker's (the handler raised, or the outputs cannot be sent) halves the batch until the
failing record is alone; once that record has failed `max_attempts` times, the loop's
`dead_letter` builder turns it into dead-letter outputs, committed with the offset past it,
and the partition moves on. Broker trouble (retriable Kafka errors, connection loss) is
retried without limit: the record is not at fault. A partition that keeps failing, or a
loop left without partitions after a rebalance, turns `health()` false with the reason.

Fenced (issue 13): a transaction refused because another producer initialised the
partition's id pauses the partition; normally the group's revocation follows. If after a
session timeout the group still gives us the partition and no rebalance is under way, the
fencer was a member of an earlier generation (we were out of the group meanwhile and got the
partition back with a stale producer): the partition is taken back as an assignment does,
instead of staying paused for ever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaConnectionError, KafkaError, ProducerFenced

from core.kafka import clients
from core.kafka.clients import Kafka
from core.stages import STAGE_SECONDS
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
# The outputs that replace a record given up on (its DLQ record and error), from the record,
# a reason code and a sentence naming no respondent value. Must not fail on the record.
DeadLetter = Callable[[TopicPartition, ConsumerRecord, str, str], list[Output]]

GIVEN_UP = "processing_failed"  # the dead-letter reason of a record given up on

RETRY_BACKOFF_MS = 20  # the transactional producers' (see producer_for)

# The stage names (hookstream_stage_seconds) of each loop: topic wait, handler, transaction.
_STAGES = {"streams": ("raw_wait", "transform", "raw_commit"),
           "scheduler": ("scheduled_wait", "schedule", "scheduled_commit")}


def broker_trouble(exc: BaseException) -> bool:
    """A failure of the broker or the network, not of the record: retried without limit."""
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False)) or isinstance(exc, KafkaConnectionError)
    return isinstance(exc, OSError | TimeoutError)


@dataclass
class _Failing:
    """The current failure streak of a partition."""

    offset: int  # the first offset of the failing batch
    since: float  # monotonic
    attempts: int = 0  # failures the record is blamed for
    failures: int = 0  # every failure, broker trouble included (backoff, readiness)
    error: str = ""


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
    # A record that fails this often (one record alone in its batch) is dead-lettered.
    max_attempts: int = 5
    backoff_s: float = 0.5  # before the first retry; doubles each failure, up to the cap
    backoff_max_s: float = 30.0
    # Readiness turns false after this long without partitions during a rebalance.
    rebalance_grace_s: float = 30.0
    # How long the broker may hold a fetch of partitions with nothing new. aiokafka sends a
    # node no second fetch while one is in flight, and a partition whose records wait over
    # 100 ms to be consumed (a slow transaction) is left out of the next one: that fetch, of
    # idle partitions only, then holds the busy partition back for up to this long
    # (bench/README.md, "The fetch that holds a busy partition back").
    fetch_max_wait_ms: int = clients.IDLE_FETCH_WAIT_MS
    # Least time from the end of one round of transactions to the beginning of the next (0:
    # none). The coordinator writes a commit's markers after it has answered EndTxn; the next
    # transaction's AddPartitionsToTxn before they are written is answered
    # CONCURRENT_TRANSACTIONS, and aiokafka waits 20 ms before asking again (KAFKA-5477).
    # Records fetched within the gap wait out its rest and join the batch (bench/README.md,
    # "The gap between transactions"). An idle loop's next record finds the gap long over.
    commit_gap_ms: float = 0.0


class TransactionalLoop:
    def __init__(self, config: LoopConfig, handler: Handler,
                 on_assigned: PartitionHook | None = None,
                 on_revoked: PartitionHook | None = None,
                 dead_letter: DeadLetter | None = None) -> None:
        self.cfg = config
        self.handler = handler
        self.dead_letter = dead_letter
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
        # Bounded retries: the failure streak, the batch size while isolating a failing
        # record, and until when (monotonic) a failing partition stays paused.
        self._failing: dict[TopicPartition, _Failing] = {}
        self._limit: dict[TopicPartition, int] = {}
        self._paused_until: dict[TopicPartition, float] = {}
        self._rebalancing_since: float | None = None
        # Fenced partitions: when (monotonic) to take one back if the group still gives it us.
        self._fenced: dict[TopicPartition, float] = {}
        wait, handle, commit = _STAGES.get(config.name, (f"{config.name}_wait",
                                                         f"{config.name}_handle",
                                                         f"{config.name}_commit"))
        self._wait_stage = STAGE_SECONDS.labels(wait)
        self._handle_stage = STAGE_SECONDS.labels(handle)
        self._commit_stage = STAGE_SECONDS.labels(commit)

    def transactional_id(self, tp: TopicPartition) -> str:
        return f"{self.cfg.group_id}-{tp.topic}-{tp.partition}"

    async def producer_for(self, tp: TopicPartition) -> AIOKafkaProducer:
        # Latency (issue 17, bench/README.md): linger 0, since BatchSender hands over whole
        # batches and aiokafka's linger is a sleep after every produce request. A short retry
        # backoff, since a transaction begun right after the previous commit finds its
        # markers still being written: AddOffsetsToTxn / EndTxn answer CONCURRENT_TRANSACTIONS
        # and aiokafka waits retry_backoff_ms (default 100 ms) before asking again (KAFKA-5477;
        # the Java client waits 20 ms). Same requests, same guarantees, just asked sooner.
        producer = clients.producer(
            self.cfg.bootstrap, transactional_id=self.transactional_id(tp),
            enable_idempotence=True, acks="all", linger_ms=0, max_batch_size=1024 * 1024,
            retry_backoff_ms=RETRY_BACKOFF_MS,
            transaction_timeout_ms=self.cfg.transaction_timeout_ms, **self.cfg.extra_producer)
        await producer.start()  # InitProducerId: fences a zombie with this id
        return producer

    async def start(self) -> None:
        self.consumer = clients.consumer(
            self.cfg.bootstrap, group_id=self.cfg.group_id,
            enable_auto_commit=False, heartbeat_interval_ms=self.cfg.heartbeat_interval_ms,
            auto_offset_reset="earliest", isolation_level="read_committed",
            session_timeout_ms=self.cfg.session_timeout_ms, max_poll_interval_ms=300_000,
            # A busy topic is answered at once; this bounds idle polls (the scheduler's topic
            # is idle unless invitations are delayed), each a request the broker pays for.
            fetch_max_wait_ms=self.cfg.fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024)
        await self.consumer.start()
        self.consumer.subscribe([self.cfg.topic], listener=_Listener(self))
        self.running = True

    async def run(self) -> None:
        """Poll and process until stopped; the caller runs this as a task."""
        assert self.consumer is not None
        gap = self.cfg.commit_gap_ms / 1000
        ended = 0.0  # monotonic: when the last round of transactions ended
        while self.running:
            self._resume_due()
            if self._fenced:
                await self._reclaim_fenced()
            epochs = dict(self._epoch)
            batches = await self.consumer.getmany(timeout_ms=100,
                                                  max_records=self.cfg.max_records)
            if not batches:
                continue
            rest = gap - (time.monotonic() - ended)
            if rest > 0:
                batches = await self._gather_more(batches, rest)
            now_ms = time.time() * 1000
            for records in batches.values():
                if records:  # per batch: its oldest record (the longest wait)
                    self._wait_stage.observe(max(0.0, now_ms - records[0].timestamp) / 1000)
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
                    if tp in self._paused_until:
                        continue  # fetched before the pause: re-read after the backoff
                    limit = self._limit.get(tp)
                    truncated = limit is not None and len(records) > limit
                    if truncated:
                        records = records[:limit]  # isolating a failing record
                    todo.append(self._process(tp, records, truncated))
                await asyncio.gather(*todo)
            if todo:
                ended = time.monotonic()

    async def _gather_more(self, batches: dict[TopicPartition, list[ConsumerRecord]],
                           wait: float) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Wait out the gap after the last commit; what arrived meanwhile joins `batches`
        (after them: a partition's records come from the fetcher in offset order)."""
        assert self.consumer is not None
        await asyncio.sleep(wait)
        room = self.cfg.max_records - sum(len(r) for r in batches.values())
        if room > 0:
            more = await self.consumer.getmany(timeout_ms=0, max_records=room)
            for tp, records in more.items():
                batches.setdefault(tp, []).extend(records)
        return batches

    def _resume_due(self) -> None:
        assert self.consumer is not None
        now = time.monotonic()
        for tp, until in list(self._paused_until.items()):
            if now >= until:
                del self._paused_until[tp]
                if tp in self.producers and tp in self.consumer.assignment():
                    self.consumer.resume(tp)

    def health(self) -> tuple[bool, str]:
        """(ready, why): running, in its group, and every partition making progress."""
        if not self.running:
            return False, f"{self.cfg.name}: stopped"
        if not self.assigned.is_set():
            return False, f"{self.cfg.name}: no partitions assigned yet"
        since = self._rebalancing_since
        if since is not None and time.monotonic() - since > self.cfg.rebalance_grace_s:
            return False, (f"{self.cfg.name}: no partitions assigned for "
                           f"{time.monotonic() - since:.0f} s after a rebalance")
        stuck = [f"{tp.topic}[{tp.partition}] fenced by another producer"
                 for tp in sorted(self._fenced)]
        stuck += [f"{tp.topic}[{tp.partition}] at offset {f.offset}: {f.failures} failed "
                 f"attempts for {time.monotonic() - f.since:.0f} s, last {f.error}"
                 for tp, f in sorted(self._failing.items()) if f.failures >= 2]
        if stuck:
            return False, f"{self.cfg.name}: no progress on " + "; ".join(stuck)
        return True, "ok"

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        assert self.consumer is not None
        self._epoch[tp] = self._epoch.get(tp, 0) + 1
        self._sought[tp] = offset
        self.consumer.seek(tp, offset)

    async def _process(self, tp: TopicPartition, records: list[ConsumerRecord],
                       truncated: bool = False) -> None:
        assert self.consumer is not None
        producer = self.producers[tp]
        in_transaction = False
        try:
            t0 = time.perf_counter()
            outputs, after = await self.handler(tp, records)
            t1 = time.perf_counter()
            in_transaction = True
            sent = await send_in_transaction(producer, self._partitions, outputs,
                                             {tp: records[-1].offset + 1}, self.cfg.group_id)
            self._handle_stage.observe(t1 - t0)
            self._commit_stage.observe(time.perf_counter() - t1)
        except asyncio.CancelledError:
            raise
        except ProducerFenced:
            # Another worker initialised this partition's transactional id: the group gave it
            # the partition, so our revocation is under way. Hand over; never fence it back.
            await self.fenced(tp)
            return
        except Exception as exc:  # noqa: BLE001 - retried, isolated, then dead-lettered
            # Nothing of this batch is visible: re-read it (a failed transaction with a fresh,
            # fencing producer; a handler failure began none, so the producer is still good).
            metrics.TRANSACTIONS.labels(self.cfg.name, "aborted").inc()
            await self._failed(tp, records, exc, renew=in_transaction)
            return
        metrics.TRANSACTIONS.labels(self.cfg.name, "committed").inc()
        self._progressed(tp, records[-1].offset + 1, truncated)
        if after is not None:
            await after(last_offsets(sent))

    def _progressed(self, tp: TopicPartition, next_offset: int, truncated: bool) -> None:
        failing = self._failing.get(tp)
        if failing is not None and next_offset > failing.offset:
            del self._failing[tp]
        limit = self._limit.get(tp)
        if limit is not None:
            # Past the isolated record: grow back to full batches.
            if limit * 2 >= self.cfg.max_records:
                del self._limit[tp]
            else:
                self._limit[tp] = limit * 2
        if truncated:
            self._seek(tp, next_offset)  # the rest of the fetched batch is read again

    async def _failed(self, tp: TopicPartition, records: list[ConsumerRecord],
                      exc: Exception, renew: bool) -> None:
        first = records[0].offset
        failing = self._failing.get(tp)
        if failing is None or failing.offset != first:
            failing = self._failing[tp] = _Failing(first, time.monotonic())
        failing.failures += 1
        failing.error = type(exc).__name__
        broker = broker_trouble(exc)
        if not broker and len(records) > 1:
            # Which record? Halve the batch until the failing one is alone (no backoff: the
            # next attempt is a different, smaller batch).
            self._limit[tp] = max(1, len(records) // 2)
            log.warning("%s: a batch of %d records on %s failed at offset %d (%s): "
                        "retrying in smaller batches", self.cfg.name, len(records), tp, first,
                        failing.error, exc_info=exc)
            await self._reset_partition(tp, first, renew)
            return
        if not broker:
            failing.attempts += 1
        log.error("%s: %s at offset %d failed (attempt %d of %d%s): %s", self.cfg.name, tp,
                  first, failing.attempts, self.cfg.max_attempts,
                  ", broker trouble: not counted" if broker else "", failing.error,
                  exc_info=exc if failing.failures == 1 or not broker else None)
        if not broker and failing.attempts >= self.cfg.max_attempts and \
                self.dead_letter is not None:
            if renew:
                await self.renew_producer(tp, delay=0)
            if await self._give_up(tp, records[0], failing, exc):
                return
            renew = True  # the dead-letter transaction failed: retried after the backoff
        delay = min(self.cfg.backoff_max_s, self.cfg.backoff_s * 2 ** (failing.failures - 1))
        # Broker trouble: a moment before the new producer's InitProducerId, as before
        # (a producer that cannot start stops the loop: the worker is restarted).
        await self._reset_partition(tp, first, renew, renew_delay=1.0 if broker else 0.0)
        self._pause(tp, delay)

    async def _give_up(self, tp: TopicPartition, record: ConsumerRecord, failing: _Failing,
                       exc: Exception) -> bool:
        """The record's dead-letter outputs and the offset past it, in one transaction."""
        assert self.dead_letter is not None
        detail = (f"The record could not be processed after {failing.attempts} attempts "
                  f"({type(exc).__name__}); it was set aside so its partition goes on.")
        try:
            outputs = self.dead_letter(tp, record, GIVEN_UP, detail)
            await send_in_transaction(self.producers[tp], self._partitions, outputs,
                                      {tp: record.offset + 1}, self.cfg.group_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the partition stays stuck (readiness says so)
            failing.failures += 1
            log.exception("%s: dead-lettering %s offset %d failed; retrying", self.cfg.name,
                          tp, record.offset)
            return False
        metrics.TRANSACTIONS.labels(self.cfg.name, "dead_lettered").inc()
        log.error("%s: gave up on %s offset %d after %d attempts: dead-lettered (%s)",
                  self.cfg.name, tp, record.offset, failing.attempts, GIVEN_UP)
        del self._failing[tp]
        self._seek(tp, record.offset + 1)
        return True

    def _pause(self, tp: TopicPartition, delay: float) -> None:
        assert self.consumer is not None
        if delay > 0 and tp in self.consumer.assignment():
            self.consumer.pause(tp)
            self._paused_until[tp] = time.monotonic() + delay

    async def _reset_partition(self, tp: TopicPartition, offset: int,
                               renew: bool = True, renew_delay: float = 0.0) -> None:
        assert self.consumer is not None
        if renew:
            await self.renew_producer(tp, delay=renew_delay)
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
            self._fenced[tp] = time.monotonic() + self.cfg.session_timeout_ms / 1000

    async def _reclaim_fenced(self) -> None:
        """Take back a fenced partition the group still gives us a session timeout later
        (see the module's docstring): a fresh producer (which fences the stale one's
        successor), then the committed offset, as `partitions_assigned` does."""
        assert self.consumer is not None
        now = time.monotonic()
        if self._rebalancing_since is not None or all(at > now for at in self._fenced.values()):
            return
        async with self.lock:
            for tp in [tp for tp, at in self._fenced.items() if at <= now]:
                del self._fenced[tp]
                if tp not in self.consumer.assignment() or tp in self.producers:
                    continue  # revoked meanwhile, or reassigned (with a fresh producer)
                log.warning("%s: %s is still ours %.0f s after it was fenced: taking it back",
                            self.cfg.name, tp, self.cfg.session_timeout_ms / 1000)
                try:
                    self.producers[tp] = await self.producer_for(tp)
                    self._seek(tp, await self._committed(tp))
                except Exception:  # noqa: BLE001 - tried again a session timeout later
                    log.exception("%s: taking %s back failed", self.cfg.name, tp)
                    producer = self.producers.pop(tp, None)
                    if producer is not None:
                        await _stop_quietly(producer)
                    self._fenced[tp] = time.monotonic() + self.cfg.session_timeout_ms / 1000
                    continue
                self.consumer.resume(tp)

    async def _committed(self, tp: TopicPartition) -> int:
        """The partition's committed offset (read after the fence: final), else its start."""
        assert self.consumer is not None
        committed = await self.consumer.committed(tp)
        if committed is None:
            committed = (await self.consumer.beginning_offsets([tp]))[tp]
        return committed

    async def renew_producer(self, tp: TopicPartition, delay: float = 1.0) -> None:
        """Replace a failed producer by a fresh one with the same id (call under the lock).
        `delay`: a broker hiccup, do not spin (the loop's own retries pause the partition
        instead of sleeping under the lock)."""
        old = self.producers.pop(tp, None)
        if old is not None:
            await _stop_quietly(old)
        if delay > 0:
            await asyncio.sleep(delay)
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
            self._rebalancing_since = None
            self._fenced.clear()  # every partition of ours gets a producer and a seek below
            for state in (self._failing, self._limit, self._paused_until):
                for tp in [tp for tp in state if tp not in mine]:
                    del state[tp]  # type: ignore[attr-defined]
            self._paused_until.clear()  # every partition of ours is resumed below
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
                # seek() (unlike the asynchronous seek_to_beginning) drops records fetched
                # from an earlier position, so none of them is processed twice.
                self._seek(tp, await self._committed(tp))
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
                if self._rebalancing_since is None:
                    self._rebalancing_since = time.monotonic()

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
        # Every batch delivered before the commit: a batch the broker refuses outright (say,
        # MessageSizeTooLarge) fails only its own future, and the commit would go through
        # without it. The offsets only then (issue 17): added while the produce was in
        # flight, AddOffsetsToTxn raced the leader's KIP-890 check of that produce with the
        # coordinator, which answered NOT_ENOUGH_REPLICAS, and ~10% of the transactions
        # waited out a retry backoff (tests/streams/test_transaction_order.py).
        await asyncio.gather(*(s.future for s in sent))
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
