"""The worker's probes: liveness (`/healthz`) and readiness (`/readyz`) apart.

A rebalance that cannot finish (another member of the raw loop's group holds on to its
partitions) keeps the worker not ready, with `raw_loop` named, while it stays alive; once
the rebalance completes, it is ready."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from core.kafka.topics import Topics
from streams.app import group_ids

from .conftest import Worker

pytestmark = pytest.mark.kafka


class _HoldOnRevoke(ConsumerRebalanceListener):
    """Does not give partitions back until `release` is set: the group's rebalance waits."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.holding = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:  # not the empty revoke before the first join
            self.holding.set()
            await self.release.wait()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Nothing to do: the test only holds the rebalance up."""


async def test_alive_but_not_ready_while_a_rebalance_is_held_up(
        kafka_bootstrap: str, stream_topics: Topics,
        worker_factory: Callable[..., Worker]) -> None:
    hold = _HoldOnRevoke()
    member = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, enable_auto_commit=False,
        group_id=group_ids(stream_topics.prefix)["raw"], session_timeout_ms=10_000,
        heartbeat_interval_ms=500, max_poll_interval_ms=120_000, rebalance_timeout_ms=120_000)
    member.subscribe([stream_topics.raw], listener=hold)
    await member.start()
    try:
        while not member.assignment():  # alone in the group: every raw partition
            await member.getmany(timeout_ms=200)
        worker = worker_factory()
        worker.start()

        # The worker's raw loop asks to join; the group waits for the member to rejoin.
        deadline = time.monotonic() + 60
        while True:
            assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
            try:
                live, ready = await worker.probes()
            except httpx.TransportError:  # not listening yet
                live, ready = 0, None
            checks = ready.json()["checks"] if ready is not None else {}
            if hold.holding.is_set() and checks.get("config_loaded") and checks.get("scheduler"):
                break
            assert time.monotonic() < deadline, (checks, worker.log_tail())
            await asyncio.sleep(0.2)
        for _ in range(10):  # for a few seconds: alive, not ready, the raw loop named
            live, ready = await worker.probes()
            assert live == 200
            assert ready.status_code == 503, ready.text
            body = ready.json()
            assert body["checks"] == {"kafka": True, "topics": True, "started": True,
                                      "config_loaded": True,
                                      "raw_loop": False, "scheduler": True}
            # Named, with why (the loop's own words) in the detail and under `reasons`.
            assert set(body["reasons"]) == {"raw_loop"}, body
            assert body["detail"] == f"not ready: raw_loop ({body['reasons']['raw_loop']})"
            assert "no partitions" in body["reasons"]["raw_loop"]
            await asyncio.sleep(0.3)

        hold.release.set()  # the rebalance completes: the worker gets its partitions
        await worker.wait_ready(timeout=60)
        live, ready = await worker.probes()
        assert (live, ready.status_code) == (200, 200)
        assert all(ready.json()["checks"].values())
    finally:
        hold.release.set()
        await member.stop()
