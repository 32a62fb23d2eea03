"""A partition fenced by a stale owner is taken back, not left paused for ever (issue 13).

The chaos suite found it: a worker that was out of its group for a moment got a partition
back with its old producer, whose transactional id the interim owner had initialised; its
next transaction was refused (ProducerFenced) and the partition stayed paused, with no
rebalance to follow. Here a second producer initialises the loop's transactional id while
the loop keeps the partition: the records sent after it must still come out, once each.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from streams.records import Output
from streams.txloop import LoopConfig, TransactionalLoop
from tests.streams.conftest import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


async def _read_all(bootstrap: str, topic: str, want: int, within: float) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        got: list[bytes] = []
        deadline = time.monotonic() + within
        while len(got) < want and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                got += [r.value for r in records if r.value is not None]
        await asyncio.sleep(1.0)  # anything more (a duplicate) would show up by now
        for records in (await consumer.getmany(timeout_ms=500)).values():
            got += [r.value for r in records if r.value is not None]
        return got
    finally:
        await consumer.stop()


async def test_a_fenced_partition_still_ours_is_taken_back(kafka_bootstrap: str) -> None:
    name = uuid.uuid4().hex[:8]
    source, sink, group = f"fence-in-{name}", f"fence-out-{name}", f"fence-{name}"
    await create_topics(kafka_bootstrap, {source: 1, sink: 1})

    async def copy(tp: TopicPartition, records: list[ConsumerRecord]):  # type: ignore[no-untyped-def]
        return [Output(sink, r.key or b"", r.value, []) for r in records], None

    loop = TransactionalLoop(LoopConfig("streams", kafka_bootstrap, group, source,
                                        session_timeout_ms=6_000), copy)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await loop.start()
    task = asyncio.create_task(loop.run())
    await producer.start()
    try:
        await asyncio.wait_for(loop.assigned.wait(), 30)
        await producer.send_and_wait(source, b"before", key=b"k")
        assert await _read_all(kafka_bootstrap, sink, 1, 30) == [b"before"]

        # A stale owner's successor: the same transactional id, initialised elsewhere.
        tp = TopicPartition(source, 0)
        intruder = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap,
                                    transactional_id=loop.transactional_id(tp))
        await intruder.start()
        await intruder.stop()
        for i in range(5):
            await producer.send_and_wait(source, f"after-{i}".encode(), key=b"k")

        got = await _read_all(kafka_bootstrap, sink, 6, 40)
        assert not task.done(), task
        assert sorted(got) == sorted([b"before"] + [f"after-{i}".encode() for i in range(5)])
        ready, why = loop.health()
        assert ready, why
    finally:
        await producer.stop()
        loop.running = False
        await asyncio.wait_for(task, 10)
        await loop.stop()
