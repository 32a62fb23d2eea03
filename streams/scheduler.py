"""The scheduler on the delay topic: holds waiting invitations and releases them when due.

Durability, in Kafka transactions of the partition's producer (see txloop.py):
- ingest: a consumed `invitations.scheduled` record is written to the scheduler's compacted
  changelog topic (key = invitation id) together with the consumed offset; only after that
  commit is it put into the local SQLite store. The offset is never committed before the
  invitation is stored in the changelog.
- release: the due invitation goes to `invitations.due` and a tombstone to the changelog in
  one transaction; only after that commit is the row deleted locally. A crash before the
  commit aborts both (read_committed readers see nothing, the row is still there and is
  released again); a crash after it leaves the tombstone, which the restart replays.
So an invitation is released once, whatever crashes where.

The local store (one SQLite file per partition, indexed by due_at) replays the changelog
from its recorded position when the partition is assigned, also on a worker that never held
it. Release order is by due_at, never by offset: no head-of-line blocking.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import ProducerFenced

from core.kafka import clients
from core.kafka.clients import Kafka
from core.kafka.headers import DUE_AT, dead_letter_headers, header, integer
from core.kafka.topics import Topics
from core.tasks import cancel_and_wait
from schemas import codec
from streams import metrics
from streams.batching import last_offsets
from streams.records import Output
from streams.txloop import AfterCommit, LoopConfig, TransactionalLoop, send_in_transaction
from streams.waiting_store import WaitingStore

log = logging.getLogger(__name__)


def changelog_topic(topics: Topics) -> str:
    return f"{topics.prefix}streams.scheduler-changelog"


class Scheduler:
    def __init__(self, bootstrap: Kafka, topics: Topics, group_id: str, state_dir: Path,
                 release_batch: int = 2000, tick: float = 0.1, max_attempts: int = 5,
                 backoff_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.changelog = changelog_topic(topics)
        self.state_dir = state_dir
        self.release_batch = release_batch
        self.tick = tick
        self.stores: dict[int, WaitingStore] = {}
        self.loop = TransactionalLoop(
            LoopConfig("scheduler", bootstrap, group_id, topics.scheduled,
                       max_attempts=max_attempts, backoff_s=backoff_s,
                       backoff_max_s=backoff_max_s),
            self._ingest, on_assigned=self._assigned, on_revoked=self._revoked,
            dead_letter=self._dead_letter)
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._offsets: AIOKafkaConsumer | None = None
        self._partitions: dict[str, list[int]] = {}

    async def start(self) -> None:
        await self._ensure_changelog()
        # Asks for the changelog's offsets when partitions are assigned (no group, no reads).
        self._offsets = clients.consumer(self.bootstrap, group_id=None,
                                         enable_auto_commit=False,
                                         isolation_level="read_committed")
        await self._offsets.start()
        await self.loop.start()
        self._tasks = [asyncio.create_task(self.loop.run(), name="scheduler-ingest"),
                       asyncio.create_task(self._release_forever(), name="scheduler-release")]

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        await self.loop.stop()
        if self._offsets is not None:
            await self._offsets.stop()
            self._offsets = None
        for store in self.stores.values():
            store.close()
        self.stores.clear()

    def failed(self) -> BaseException | None:
        """The exception a background task died of, if one did (for /healthz)."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None

    async def _ensure_changelog(self) -> None:
        """The changelog exists with the delay topic's partitions (the topic plan creates
        both, core/kafka/plan.py): a store per partition relies on it."""
        admin = clients.admin(self.bootstrap)
        await admin.start()
        try:
            # Listed first: a metadata request for a missing topic may create it with the
            # broker's defaults (auto.create.topics.enable), not compacted.
            there = set(await admin.list_topics()) & {self.topics.scheduled, self.changelog}
            meta = {t["topic"]: len(t["partitions"])
                    for t in (await admin.describe_topics(sorted(there)) if there else [])}
        finally:
            await admin.close()
        scheduled, changelog = meta.get(self.topics.scheduled, 0), meta.get(self.changelog, 0)
        if not scheduled or not changelog:
            raise RuntimeError(f"topic {self.topics.scheduled if not scheduled else self.changelog}"
                               " does not exist; create the pipeline's topics first "
                               "(hookstream topics apply)")
        if scheduled != changelog:
            raise RuntimeError(f"{self.changelog} has {changelog} partitions and "
                               f"{self.topics.scheduled} {scheduled}: the scheduler's store "
                               "needs them equal (hookstream topics apply reports it)")

    # -- ingest -----------------------------------------------------------------------------

    async def _ingest(self, tp: TopicPartition, records: list[ConsumerRecord]
                      ) -> tuple[list[Output], AfterCommit | None]:
        rows: list[tuple[str, int, bytes]] = []
        dead: list[Output] = []
        for r in records:
            parsed = _parse_scheduled(r)
            if isinstance(parsed, str):
                # Never skipped: set aside on the dead-letter topic, in this transaction.
                dead += self._dead_letter(tp, r, "undecodable", parsed)
            else:
                rows.append(parsed)
        outputs = [Output(self.changelog, inv_id.encode(), value,
                          [(DUE_AT, str(due_at).encode())], tp.partition)
                   for inv_id, due_at, value in rows] + dead

        async def after(last: dict[TopicPartition, int]) -> None:
            end = last.get(TopicPartition(self.changelog, tp.partition))
            if end is None:
                return
            # Our transaction's commit marker follows its last record on this partition (the
            # partition has one writer: this transactional id), so the store is past it.
            self.stores[tp.partition].put_many(rows, end + 2)
            metrics.SCHEDULED.inc(len(rows))
            self._wake.set()

        return outputs, after

    def _dead_letter(self, tp: TopicPartition, r: ConsumerRecord, reason: str,
                     detail: str) -> list[Output]:
        """A delay-topic record set aside: to the DLQ as it came, with why and from where."""
        metrics.DLQ.labels(reason).inc()
        log.error("%s offset %d set aside on the dead-letter topic: %s (%s)", tp, r.offset,
                  reason, detail)
        headers = dead_letter_headers(r.headers, reason=reason, detail=detail,
                                      source="scheduler", at_ms=int(time.time() * 1000),
                                      topic=r.topic)
        return [Output(self.topics.dlq, r.key or b"", r.value, headers)]

    # -- release ----------------------------------------------------------------------------

    async def _release_forever(self) -> None:
        last_count = 0.0
        while True:
            released = await self.release_due()
            now = time.monotonic()
            if now - last_count > 2.0:
                metrics.WAITING.set(sum(s.count() for s in list(self.stores.values())))
                last_count = now
            if released:
                continue  # more may be due: no sleep while behind
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._sleep_for())
            except TimeoutError:
                pass  # the usual case: time to look again

    def _sleep_for(self) -> float:
        nexts = [n for s in list(self.stores.values()) if (n := s.next_due()) is not None]
        if not nexts:
            return self.tick * 5
        return max(0.0, min(self.tick, min(nexts) / 1000.0 - time.time()))

    async def release_due(self) -> int:
        """Release what is due on every partition this worker owns; the count released."""
        total = 0
        async with self.loop.lock:
            for tp, producer in list(self.loop.producers.items()):
                store = self.stores.get(tp.partition)
                if store is None:
                    continue
                now_ms = int(time.time() * 1000)
                rows = store.due(now_ms, self.release_batch)
                if not rows:
                    continue
                due = [Output(self.topics.due, inv_id.encode(), value, [])
                       for inv_id, _due, value in rows]
                try:
                    sent = await send_in_transaction(
                        producer, self._partitions,
                        due + [Output(self.changelog, o.key, None, [], tp.partition)
                               for o in due])
                except asyncio.CancelledError:
                    raise
                except ProducerFenced:
                    await self.loop.fenced(tp)  # another worker owns the partition now
                    continue
                except Exception:
                    metrics.TRANSACTIONS.labels("scheduler-release", "aborted").inc()
                    log.exception("release on %s failed; the rows stay and are retried", tp)
                    await self.loop.renew_producer(tp)
                    continue
                metrics.TRANSACTIONS.labels("scheduler-release", "committed").inc()
                end = last_offsets(sent)[TopicPartition(self.changelog, tp.partition)]
                store.delete_many([r[0] for r in rows], end + 2)
                done_s = time.time()
                for _id, due_at, _value in rows:
                    metrics.RELEASE_LAG.observe(max(0.0, done_s - due_at / 1000.0))
                metrics.RELEASED.inc(len(rows))
                total += len(rows)
        return total

    # -- partitions -------------------------------------------------------------------------

    async def _assigned(self, tp: TopicPartition) -> None:
        store = self.stores.get(tp.partition)
        if store is None:
            store = WaitingStore(self.state_dir / f"p{tp.partition}.sqlite")
            self.stores[tp.partition] = store
        await self._restore(tp.partition, store)
        self._wake.set()

    async def _revoked(self, tp: TopicPartition) -> None:
        store = self.stores.pop(tp.partition, None)
        if store is not None:
            store.close()

    async def _restore(self, partition: int, store: WaitingStore) -> None:
        """Replay the changelog from the store's position to its end (after the fence)."""
        ctp = TopicPartition(self.changelog, partition)
        assert self._offsets is not None
        end = (await self._offsets.end_offsets([ctp]))[ctp]
        start = store.next_offset
        if start == end:
            return  # the usual case: this store is up to date
        first = (await self._offsets.beginning_offsets([ctp]))[ctp]
        if start > end or start < first:
            log.warning("scheduler store p%d is at %d, outside the changelog [%d, %d]: "
                        "rebuilding it", partition, start, first, end)
            store.reset()
            start = first
        if start >= end:
            return
        consumer = clients.consumer(self.bootstrap, group_id=None,
                                    enable_auto_commit=False, isolation_level="read_committed",
                                    fetch_max_wait_ms=50)
        await consumer.start()
        try:
            consumer.assign([ctp])
            consumer.seek(ctp, start)
            t0, applied = time.monotonic(), 0
            while await consumer.position(ctp) < end:
                batch = (await consumer.getmany(ctp, timeout_ms=100, max_records=5000)).get(ctp)
                if not batch:
                    continue
                # A tombstone carries no due-at: 0 (unused, the row is deleted).
                store.apply(((r.key.decode(), integer(header(r.headers, DUE_AT)) or 0, r.value)
                             for r in batch if r.key is not None), batch[-1].offset + 1)
                applied += len(batch)
            store.apply((), await consumer.position(ctp))  # skip trailing control records
            log.info("scheduler p%d: restored %d changelog records in %.1fs", partition,
                     applied, time.monotonic() - t0)
        finally:
            await consumer.stop()


def _parse_scheduled(r: ConsumerRecord) -> tuple[str, int, bytes] | str:
    """(invitation id, due at, value), or why the record cannot be scheduled."""
    if r.value is None:
        return "An empty record on the delay topic: no invitation to schedule."
    # Without (or with an unreadable) due-at header or key, the record itself says.
    due_at = integer(header(r.headers, DUE_AT))
    inv_id = r.key.decode() if r.key else None
    if due_at is None or inv_id is None:
        try:
            rec = codec.decode_as("InvitationRequested", r.value)
        except codec.CodecError as exc:
            return f"The invitation cannot be decoded: {exc}."
        due_ms = rec["due_at"]
        due_at = int(due_ms.timestamp() * 1000) if hasattr(due_ms, "timestamp") else int(due_ms)
        inv_id = rec["invitation_id"]
    return inv_id, due_at, r.value
