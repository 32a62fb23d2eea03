"""Seeking to a time on a real broker: older records are skipped, and a record written while
the seek is worked out (after one of its two lookups, before the other) is still read. With
the end offset read after the time lookup, that record was skipped (the admin's outcome counts
lost a transaction's counts in CI that way)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from core.kafka import clients
from core.kafka.seek import seek_to_times
from core.kafka.topics import Topics, ensure_topics

pytestmark = pytest.mark.kafka
HOUR_MS = 3_600_000


async def _produce(bootstrap: str, topic: str, values: list[tuple[bytes, int | None]]) -> None:
    producer = clients.producer(bootstrap, acks="all")
    await producer.start()
    try:
        for value, ts in values:
            await producer.send_and_wait(topic, value, partition=0, timestamp_ms=ts)
    finally:
        await producer.stop()


async def _values(consumer: AIOKafkaConsumer) -> list[bytes]:
    batch = await consumer.getmany(timeout_ms=5_000)
    return [r.value for records in batch.values() for r in records]


def _write_between_lookups(consumer: AIOKafkaConsumer,
                           write: Callable[[], Awaitable[None]]) -> None:
    """Run `write` once, right after the first of the seek's two broker lookups returns."""
    done = False

    def wrap(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kw: Any) -> Any:
            nonlocal done
            result = await method(*args, **kw)
            if not done:
                done = True
                await write()
            return result
        return call

    consumer.end_offsets = wrap(consumer.end_offsets)  # type: ignore[method-assign]
    consumer.offsets_for_times = wrap(consumer.offsets_for_times)  # type: ignore[method-assign]


async def test_seek_skips_older_records_and_keeps_one_written_during_the_seek(
        kafka_bootstrap: str, topics: Topics) -> None:
    await ensure_topics(kafka_bootstrap, topics, partitions=1)
    tp = TopicPartition(topics.counts, 0)
    now = int(time.time() * 1000)
    await _produce(kafka_bootstrap, tp.topic, [(b"old", now - 2 * HOUR_MS)])

    consumer = clients.consumer(kafka_bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        _write_between_lookups(consumer,
                               lambda: _produce(kafka_bootstrap, tp.topic, [(b"new", None)]))
        await seek_to_times(consumer, {tp: now - HOUR_MS})
        assert await consumer.position(tp) == 1  # "old" (offset 0) is skipped, "new" is not
        assert await _values(consumer) == [b"new"]
    finally:
        await consumer.stop()


async def test_seek_starts_at_the_first_record_at_or_after_the_time(
        kafka_bootstrap: str, topics: Topics) -> None:
    await ensure_topics(kafka_bootstrap, topics, partitions=1)
    tp = TopicPartition(topics.counts, 0)
    now = int(time.time() * 1000)
    await _produce(kafka_bootstrap, tp.topic, [(b"a", now - 3 * HOUR_MS),
                                               (b"b", now - HOUR_MS), (b"c", now)])
    consumer = clients.consumer(kafka_bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        await seek_to_times(consumer, {tp: now - 2 * HOUR_MS})
        assert await _values(consumer) == [b"b", b"c"]
        await seek_to_times(consumer, {tp: now + HOUR_MS})  # nothing that new: the end
        assert await consumer.position(tp) == 3
    finally:
        await consumer.stop()
