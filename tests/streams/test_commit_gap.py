"""The worker's gap between transactions (issue 17, setting worker_commit_gap_ms).

After EndTxn is answered the coordinator still writes the commit's markers; a transaction
begun before they are written is answered CONCURRENT_TRANSACTIONS and waits 20 ms in
aiokafka. At 200 webhooks/s ~9% of the worker's transactions did (bench/README.md, "The gap
between transactions"). A busy loop now begins its next transaction `commit_gap_ms` after
the last one ended, with the records that arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from core.settings import Settings
from streams.raw_loop import RAW_COMMIT_GAP_MS
from streams.records import Output
from streams.txloop import AfterCommit, LoopConfig, TransactionalLoop
from tests.streams.conftest import create_topics

GAP_MS = 80.0
RECORDS = 30


def test_the_raw_loop_waits_the_gap_and_the_scheduler_does_not(
        offline_raw: Callable[..., Any]) -> None:
    assert Settings().worker_commit_gap_ms == RAW_COMMIT_GAP_MS == 4.0
    assert offline_raw().loop.cfg.commit_gap_ms == RAW_COMMIT_GAP_MS
    assert LoopConfig("scheduler", "b", "g", "t").commit_gap_ms == 0.0


def test_the_setting_reaches_the_raw_loop(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOOKSTREAM_WORKER_COMMIT_GAP_MS", "0")
    from streams.app import StreamsRuntime

    runtime = StreamsRuntime(Settings())
    assert runtime.processor.loop.cfg.commit_gap_ms == 0.0


async def _run(bootstrap: str, prefix: str, gap_ms: float) -> tuple[list[float], list[int], int]:
    """Records sent 10 ms apart through a loop with `gap_ms`: for each transaction after the
    first, the time from the previous one's end to its handler; the batch sizes; outputs."""
    source, sink = f"{prefix}src", f"{prefix}sink"
    await create_topics(bootstrap, {source: 1, sink: 1})
    ends: list[float] = []
    gaps: list[float] = []
    sizes: list[int] = []

    async def copy(tp: TopicPartition, records: list[ConsumerRecord]
                   ) -> tuple[list[Output], AfterCommit]:
        if ends:
            gaps.append(time.monotonic() - ends[-1])
        sizes.append(len(records))

        async def committed(_offsets: dict[TopicPartition, int]) -> None:
            ends.append(time.monotonic())
        return [Output(sink, r.key or b"", r.value, []) for r in records], committed

    loop = TransactionalLoop(LoopConfig("streams", bootstrap, f"{prefix}g", source,
                                        commit_gap_ms=gap_ms, fetch_max_wait_ms=20), copy)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await loop.start()
    task = asyncio.create_task(loop.run())
    await producer.start()
    try:
        await asyncio.wait_for(loop.assigned.wait(), 30)
        for i in range(RECORDS):
            await producer.send_and_wait(source, f"r{i}".encode(), key=b"k")
            await asyncio.sleep(0.01)
        deadline = time.monotonic() + 30
        while sum(sizes) < RECORDS and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await producer.stop()
        loop.running = False
        await asyncio.wait_for(task, 10)
        await loop.stop()
    return gaps, sizes, sum(sizes)


def test_a_busy_loop_begins_its_next_transaction_after_the_gap(
        kafka_bootstrap: str, topic_prefix: str) -> None:
    gaps, sizes, total = asyncio.run(_run(kafka_bootstrap, topic_prefix, GAP_MS))
    assert total == RECORDS  # every record, once
    # Each transaction began at least the gap after the previous one ended (a timer may
    # fire a little early on a coarse clock, never 10 ms early)...
    assert gaps and min(gaps) >= (GAP_MS - 10) / 1000, gaps
    # ...and carried the records that arrived meanwhile (10 ms apart, so several): without
    # the gap ~25 transactions of 1-3 records, with it ~6 of up to 8.
    assert len(sizes) <= RECORDS // 3 and max(sizes) >= 5, sizes
