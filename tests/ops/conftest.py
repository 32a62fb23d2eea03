"""Helpers of the ops tests: produce and read real Kafka records, run the real CLI."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from typer.testing import CliRunner

from core.kafka.topics import Topics, ensure_topics


@dataclass
class Rec:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int | None = None
    timestamp_ms: int | None = None


async def produce(bootstrap: str, topic: str, records: Sequence[Rec]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futs = [await producer.send(topic, value=r.value, key=r.key, headers=r.headers,
                                    partition=r.partition, timestamp_ms=r.timestamp_ms)
                for r in records]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, partitions: int = 3) -> list[ConsumerRecord]:
    """Every record of `topic` up to its current end, with a plain consumer of its own."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[ConsumerRecord] = []
        for _ in range(100):  # bounded: each round waits at most 200 ms
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            for recs in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(recs)
        return out
    finally:
        await consumer.stop()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def ready_topics(kafka_bootstrap: str, topics: Topics) -> Topics:
    asyncio.run(ensure_topics(kafka_bootstrap, topics, partitions=3))
    return topics
