"""A transaction's requests never race each other (issue 17).

Since KIP-890 the partition leader checks a transactional produce with the transaction
coordinator. When the offsets were added to the transaction (AddOffsetsToTxn) while the
produce was still in flight, the coordinator was mid-way through that change and the
leader answered NOT_ENOUGH_REPLICAS. aiokafka retried after its backoff, and ~10% of the
worker's transactions in `make bench-notifier` waited 20 ms or more for it (240-316 retries
in 30 s). `send_in_transaction` now adds the offsets once the outputs are delivered, and
this test counts aiokafka's retries on a real broker.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka import TopicPartition

from core.kafka import clients
from streams.records import Output
from streams.txloop import LoopConfig, TransactionalLoop, send_in_transaction
from tests.streams.conftest import create_topics, read_topic

TRANSACTIONS = 120
PARTITIONS = 6


async def _no_handler(tp: TopicPartition, records: list) -> tuple[list[Output], None]:
    return [], None


async def _run(bootstrap: str, prefix: str) -> tuple[int, int]:
    source, out = f"{prefix}in", f"{prefix}out"
    await create_topics(bootstrap, {source: 1, out: PARTITIONS})
    group = f"{prefix}g"
    loop = TransactionalLoop(LoopConfig("streams", bootstrap, group, source), _no_handler)
    tp = TopicPartition(source, 0)
    producer = await loop.producer_for(tp)  # the worker's producer settings
    partitions = {out: list(range(PARTITIONS))}
    try:
        for i in range(TRANSACTIONS):
            outputs = [Output(out, f"k{i}-{j}".encode(), b"v", []) for j in range(4)]
            await send_in_transaction(producer, partitions, outputs, {tp: i + 1}, group)
    finally:
        await producer.stop()
    seen = len(await read_topic(bootstrap, out, until=lambda rs: len(rs) >= TRANSACTIONS * 4,
                                timeout=25))
    committed_consumer = clients.consumer(bootstrap, group_id=group, enable_auto_commit=False)
    await committed_consumer.start()
    try:
        committed = await committed_consumer.committed(tp)
    finally:
        await committed_consumer.stop()
    return seen, committed or 0


def test_a_transaction_is_never_retried_for_its_own_requests(
        kafka_bootstrap: str, topic_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aiokafka")
    seen, committed = asyncio.run(_run(kafka_bootstrap, topic_prefix))
    # The race's signature (a new topic's first metadata may cause other, harmless retries).
    retries = [r.getMessage() for r in caplog.records
               if r.name.startswith("aiokafka") and "NotEnoughReplicas" in r.getMessage()]
    assert retries == [], f"{len(retries)} produce retries, the first: {retries[0]}"
    assert seen == TRANSACTIONS * 4  # every output committed, none twice
    assert committed == TRANSACTIONS  # and the offsets with them
