"""The broker goes away mid-load: 503 with Retry-After within 5 s, never a 202; when it is
back, 202s resume and every 202'd body is on the topic. Uses a broker of its own (the
session's is shared), stopped and started again on the same data directory."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from automations.snapshot import ApiKeyHash
from core.kafka.topics import Topics, ensure_topics
from hookstream.local.kafka import LocalKafka
from ingress.publishing import PublishUnavailable
from ingress.publishing_rdkafka import RdKafkaPublisher
from tests.ingress.conftest import (
    make_snapshot,
    new_key,
    publish_snapshots,
    read_raw,
    settings_for,
    sha,
    start_app,
)

SEND_TIMEOUT = 3.0


async def test_outage_gives_503_never_202_and_recovers(own_kafka: LocalKafka, tmp_path: Path,
                                                       topics: Topics) -> None:
    bootstrap = own_kafka.bootstrap
    await ensure_topics(bootstrap, topics, 2)
    key = new_key()
    snap = make_snapshot(keys=[ApiKeyHash(sha(key))])
    await publish_snapshots(bootstrap, topics, snap)
    app, client = await start_app(settings_for(bootstrap, topics, tmp_path / "var",
                                               ingress_send_timeout_seconds=SEND_TIMEOUT))
    # (started, took, status, retry-after, body, event id)
    results: list[tuple[float, float, int, str | None, bytes, str | None]] = []
    stop = asyncio.Event()
    counter = iter(range(10**9))

    async def load() -> None:
        while not stop.is_set():
            i = next(counter)
            body = b'{"email": "u%d@example.com"}' % i
            t0 = time.monotonic()
            resp = await client.post(f"/v1/hooks/{snap.id}", content=body,
                                     headers={"Content-Type": "application/json",
                                              "X-API-Key": key})
            took = time.monotonic() - t0
            event = resp.json().get("event_id") if resp.status_code == 202 else None
            results.append((t0, took, resp.status_code, resp.headers.get("retry-after"),
                            body, event))
            if resp.status_code != 202:
                await asyncio.sleep(0.05)  # a polite client backs off a little

    workers = [asyncio.create_task(load()) for _ in range(8)]
    try:
        async with asyncio.timeout(20):
            while sum(r[2] == 202 for r in results) < 200:
                await asyncio.sleep(0.05)
        await asyncio.to_thread(own_kafka.stop)
        stopped_at = time.monotonic()
        await asyncio.sleep(SEND_TIMEOUT + 2.0)  # long enough for every kind of failure
        restarting_at = time.monotonic()  # from here on the broker may answer again
        await asyncio.to_thread(own_kafka.start)
        restarted_at = time.monotonic()
        async with asyncio.timeout(40):
            while not any(r[2] == 202 and r[0] > restarted_at for r in results):
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        await client.aclose()
        await app.shutdown()

    during = [r for r in results if stopped_at <= r[0] and r[0] + r[1] <= restarting_at]
    assert len(during) >= 5
    assert {r[2] for r in during} == {503}, {r[2] for r in during}
    for _, took, _, retry_after, _, _ in during:
        assert took < 5.0
        assert retry_after is not None and int(retry_after) >= 1
    assert any(r[2] == 202 for r in results if r[0] > restarted_at)
    assert {r[2] for r in results} <= {202, 503}
    accepted = {r[5]: r[4] for r in results if r[2] == 202}
    records = await read_raw(bootstrap, topics.raw, at_least=len(accepted), timeout=30)
    on_topic = {rec.headers["request-id"].decode(): rec.value for rec in records}
    for event_id, body in accepted.items():
        assert on_topic.get(event_id) == body
    # No 202'd body twice (a 503'd one may land later: at-least-once, see publishing.py).
    ids = [rec.headers["request-id"] for rec in records]
    assert len(ids) == len(set(ids))


async def test_frozen_broker_gives_503_within_the_send_timeout(own_kafka: LocalKafka,
                                                                tmp_path: Path) -> None:
    """A broker that keeps its connections open but answers nothing (a long GC pause, a
    partition): no delivery report ever comes, so the publisher's own deadline must answer
    503 in time. SIGSTOP/SIGCONT by the broker's pid; it is always resumed."""
    state = own_kafka.state()
    assert state is not None
    bootstrap = f"127.0.0.1:{state.port}"
    topics = Topics(f"t{int(time.time())}.")
    await ensure_topics(bootstrap, topics, 1)
    timeout = 0.6  # below librdkafka's own floor of 1 s for message.timeout.ms
    publisher = RdKafkaPublisher(bootstrap, timeout=timeout)
    await publisher.start()
    try:
        # Warm-up (connections, producer id, the new topic's leader): not what is under test,
        # so not held to the send timeout; on a loaded machine it may take a few tries.
        await publish_until_acknowledged(publisher, topics.raw, b'{"n": 0}', within=60)
        assert publisher.ready
        os.kill(state.pid, signal.SIGSTOP)
        try:
            await wait_stopped(state.pid)  # every broker thread frozen before we publish
            started = time.monotonic()
            with pytest.raises(PublishUnavailable):
                await publisher.publish(topics.raw, b"a", b'{"n": 1}', [])
            waited = time.monotonic() - started
            # A probe-less breaker is now open: the next one is refused at once.
            with pytest.raises(PublishUnavailable):
                await publisher.publish(topics.raw, b"a", b'{"n": 2}', [])
        finally:
            os.kill(state.pid, signal.SIGCONT)
        assert timeout * 0.9 <= waited < timeout + 0.5, waited
        # Resumed: a probe is let through and acknowledged, which closes the breaker.
        await publish_until_acknowledged(publisher, topics.raw, b'{"n": 3}', within=30)
        assert publisher.ready
    finally:
        await publisher.stop()


async def wait_stopped(pid: int, within: float = 10.0) -> None:
    """Until every thread of `pid` is stopped: kill() only queues SIGSTOP, and a busy
    machine may let a broker thread run on (and answer a request) for a moment."""
    tasks = Path(f"/proc/{pid}/task")
    async with asyncio.timeout(within):
        while True:
            states = []
            for task in tasks.iterdir():
                try:
                    stat = (task / "stat").read_text()
                except FileNotFoundError:
                    continue  # the thread ended meanwhile
                states.append(stat.rpartition(")")[2].split()[0])
            if states and all(s in ("T", "t") for s in states):
                return
            await asyncio.sleep(0.01)


async def publish_until_acknowledged(publisher: RdKafkaPublisher, topic: str, value: bytes,
                                     within: float) -> None:
    """Publish `value`, retrying refusals (a breaker's 503 included) for up to `within` s."""
    async with asyncio.timeout(within):
        while True:
            try:
                await publisher.publish(topic, b"a", value, [])
                return
            except PublishUnavailable:
                await asyncio.sleep(0.2)
