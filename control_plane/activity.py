"""What the admin app follows on Kafka for the console and the outcome endpoints.

One group-less, read_committed consumer (nothing committed: every admin replica keeps its own
view) follows three topics:
- `automations.samples` (from one retention back): the connection test's samples, kept ONLY
  in memory, a few per automation, for `SAMPLE_TTL_S`; never logged (respondent data).
- `automations.counts` (from 24 hours back): the worker's per-transaction counts, summed in
  5-minute buckets per automation, so "the last 24 hours" is exact to a bucket.
- `webhooks.dlq` (from the beginning): dead-letter records counted per automation and reason;
  only the counts are kept, never a body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from automations.counts import Counts
from control_plane.topic_reads import partitions_of
from core.kafka import clients
from core.kafka.clients import Kafka
from core.kafka.headers import DLQ_AT, DLQ_REASON, header, integer, text
from core.kafka.seek import seek_to_times
from core.kafka.topics import SAMPLES_RETENTION_MS, Topics
from core.tasks import cancel_and_wait
from schemas import codec

log = logging.getLogger(__name__)

SAMPLES_PER_AUTOMATION = 20
SAMPLE_AUTOMATIONS = 500  # automations with samples kept at once (least recently used go)
SAMPLE_TTL_S = SAMPLES_RETENTION_MS / 1000
BUCKET_MS = 5 * 60 * 1000
DAY_MS = 24 * 60 * 60 * 1000
# At most two fetches a second while the topics are quiet or trickle (a sample shows within
# half a second, and the console polls every second); at once when 64 KiB are waiting.
FETCH_MAX_WAIT_MS = clients.IDLE_FETCH_WAIT_MS
FETCH_MIN_BYTES = 64 * 1024


@dataclass(frozen=True)
class Sample:
    """One request to the test endpoint as the ingress saw it (with the dry run's verdict)."""

    offset: tuple[int, int]  # (partition, offset): a stable id for the page
    received_at_ms: int
    content_type: str | None
    body: str
    truncated: bool
    status: int
    answer: dict[str, Any]

    @property
    def seq(self) -> str:
        return f"{self.received_at_ms}-{self.offset[0]}-{self.offset[1]}"


class SampleStore:
    def __init__(self) -> None:
        self._by: OrderedDict[str, deque[Sample]] = OrderedDict()
        self.changed = asyncio.Event()

    def add(self, automation_id: str, sample: Sample) -> None:
        samples = self._by.get(automation_id)
        if samples is None:
            samples = self._by[automation_id] = deque(maxlen=SAMPLES_PER_AUTOMATION)
        samples.append(sample)
        self._by.move_to_end(automation_id)
        while len(self._by) > SAMPLE_AUTOMATIONS:
            self._by.popitem(last=False)
        self.changed.set()

    def of(self, automation_id: str, now_ms: int | None = None) -> list[Sample]:
        """The automation's samples, oldest first, without expired ones."""
        samples = self._by.get(automation_id)
        if not samples:
            return []
        cutoff = (now_ms if now_ms is not None else _now_ms()) - SAMPLE_TTL_S * 1000
        while samples and samples[0].received_at_ms < cutoff:
            samples.popleft()
        return list(samples)

    def forget(self, automation_id: str) -> None:
        self._by.pop(automation_id, None)


class CountWindow:
    def __init__(self) -> None:
        self._by: dict[str, dict[int, Counts]] = {}

    def add(self, automation_id: str, at_ms: int, record: dict[str, Any]) -> None:
        buckets = self._by.setdefault(automation_id, {})
        bucket = buckets.get(at_ms - at_ms % BUCKET_MS)
        if bucket is None:
            bucket = buckets[at_ms - at_ms % BUCKET_MS] = Counts()
        bucket.add(record)

    def last_day(self, automation_id: str, now_ms: int | None = None) -> Counts:
        now_ms = now_ms if now_ms is not None else _now_ms()
        since = now_ms - DAY_MS
        total = Counts()
        buckets = self._by.get(automation_id, {})
        for start in [b for b in buckets if b + BUCKET_MS <= since]:
            del buckets[start]  # wholly older than a day: never counted again
        for start, bucket in buckets.items():
            if start >= since - BUCKET_MS:
                total.add(bucket)
        return total


class DeadLetters:
    def __init__(self) -> None:
        self.by_automation: dict[str, Counter[str]] = {}
        self.newest_ms: dict[str, int] = {}

    def add(self, automation_id: str, reason: str, at_ms: int) -> None:
        self.by_automation.setdefault(automation_id, Counter())[reason] += 1
        self.newest_ms[automation_id] = max(at_ms, self.newest_ms.get(automation_id, 0))

    def of(self, automation_id: str) -> Counter[str]:
        return self.by_automation.get(automation_id, Counter())


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Activity:
    """Follows the three topics in the background; `ready` once each was read to its end."""

    def __init__(self, bootstrap: Kafka, topics: Topics) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.samples = SampleStore()
        self.counts = CountWindow()
        self.dead_letters = DeadLetters()
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="console-activity")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run_forever(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Kafka away: the console shows less; retry
                log.warning("following samples, counts and dead letters failed (%s: %s); "
                            "retrying in %.0fs", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _run(self) -> None:
        # The broker holds each fetch until FETCH_MIN_BYTES are readable or FETCH_MAX_WAIT_MS
        # passed: the worker writes a counts record in every transaction, and answering each
        # one with a fetch of its own cost the admin ~2 CPU-ms per transaction (issue 17).
        consumer = clients.consumer(self.bootstrap, group_id=None,
                                    enable_auto_commit=False, isolation_level="read_committed",
                                    auto_offset_reset="earliest",
                                    fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                    fetch_min_bytes=FETCH_MIN_BYTES)
        await consumer.start()
        try:
            tps = await self._assign(consumer)
            ends = await consumer.end_offsets(tps)
            pending = {tp for tp in tps if ends[tp] > await consumer.position(tp)}
            if not pending:
                self.caught_up.set()
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=2000)
                for tp, records in batch.items():
                    self._apply(tp.topic, records)
                if pending:
                    pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
                    if not pending:
                        self.caught_up.set()
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        t = self.topics
        tps: list[TopicPartition] = []
        found = await partitions_of(self.bootstrap, [t.samples, t.counts, t.dlq])
        for topic in (t.samples, t.counts, t.dlq):
            if not found.get(topic):
                raise RuntimeError(f"topic {topic} does not exist yet")
            tps += [TopicPartition(topic, p) for p in found[topic]]
        consumer.assign(tps)
        now = _now_ms()
        starts = {t.samples: now - SAMPLES_RETENTION_MS, t.counts: now - DAY_MS - BUCKET_MS}
        await seek_to_times(consumer, {tp: starts[tp.topic] for tp in tps
                                       if tp.topic in starts})
        await consumer.seek_to_beginning(*[tp for tp in tps if tp.topic == t.dlq])
        return tps

    def _apply(self, topic: str, records: Iterable[ConsumerRecord]) -> None:
        t = self.topics
        for r in records:
            key = r.key.decode("utf-8", "replace") if r.key else ""
            try:
                if topic == t.samples:
                    self._sample(key, r)
                elif topic == t.counts:
                    record = codec.decode_as("AutomationCounts", r.value)
                    self.counts.add(key, _ms(record["at"]), record)
                elif topic == t.dlq:
                    reason = text(header(r.headers, DLQ_REASON)) or "unknown"
                    at = integer(header(r.headers, DLQ_AT)) or r.timestamp
                    self.dead_letters.add(key, reason, at)
            except (ValueError, KeyError, TypeError, codec.CodecError) as exc:
                # Say where, never what: a sample's value is respondent data.
                log.warning("skipping an unreadable record of %s[%d]@%d: %s", topic,
                            r.partition, r.offset, type(exc).__name__)

    def _sample(self, automation_id: str, r: ConsumerRecord) -> None:
        v = orjson.loads(r.value)
        self.samples.add(automation_id, Sample(
            offset=(r.partition, r.offset), received_at_ms=int(v["received_at"]),
            content_type=v.get("content_type"), body=str(v.get("body", "")),
            truncated=bool(v.get("truncated")), status=int(v.get("status", 0)),
            answer=dict(v.get("answer") or {})))


def _ms(value: Any) -> int:
    if isinstance(value, int):
        return value
    return int(value.timestamp() * 1000)
