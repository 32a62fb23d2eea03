"""10,000 requests, 50 in flight, over HTTP on loopback to `hookstream ingress` in its own
process: every 202 is exactly one record on webhooks.raw with the body as sent, and retries
with the same Idempotency-Key add none, also after the process restarted."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import orjson

from automations.snapshot import ApiKeyHash
from core.kafka.topics import Topics, ensure_topics
from tests.ingress.conftest import (
    ServedIngress,
    make_snapshot,
    new_key,
    publish_snapshots,
    read_raw,
    sha,
)

N = 10_000
IN_FLIGHT = 50


def body_of(i: int) -> bytes:
    rnd = random.Random(i)
    if i % 10 == 0:  # every tenth a small batch, some NDJSON-like spacing kept as sent
        return orjson.dumps([{"email": f"u{i}.{j}@example.com", "n": j} for j in range(3)])
    return b'{"email": "u%d@example.com", "score": %d, "note": "%s" }' % (
        i, rnd.randint(0, 10), b"x" * rnd.randint(0, 50))


async def fire(url: str, key: str, items: list[int], idem: bool) -> dict[int, tuple[int, bytes]]:
    """POST each body with IN_FLIGHT requests at a time (aiohttp: httpx's pool is too slow
    at 50 connections to finish 10,000 requests within the test budget)."""
    pending = list(reversed(items))
    out: dict[int, tuple[int, bytes]] = {}

    async def worker(session: aiohttp.ClientSession) -> None:
        while pending:
            i = pending.pop()
            headers = {"Content-Type": "application/json", "X-API-Key": key}
            if idem:
                headers["Idempotency-Key"] = f"req-{i}"
            async with session.post(url, data=body_of(i), headers=headers) as resp:
                out[i] = (resp.status, await resp.read())

    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*[worker(session) for _ in range(IN_FLIGHT)])
    return out


async def test_ten_thousand_requests_each_exactly_once(
        kafka_bootstrap: str, topics: Topics, served: ServedIngress) -> None:
    await ensure_topics(kafka_bootstrap, topics, 2)
    key = new_key()
    snap = make_snapshot(keys=[ApiKeyHash(sha(key))])
    await publish_snapshots(kafka_bootstrap, topics, snap)
    await asyncio.to_thread(served.start)
    url = f"{served.base_url}/v1/hooks/{snap.id}"
    # 10,000 without an Idempotency-Key, then 500 more each with its own key.
    first = await fire(url, key, list(range(N)), idem=False)
    first.update(await fire(url, key, list(range(N, N + 500)), idem=True))
    statuses = {status for status, _ in first.values()}
    assert statuses == {202}, statuses
    # Retries of the keyed ones: answered like the first, nothing new published.
    retried = await fire(url, key, list(range(N, N + 250)), idem=True)
    assert retried == {i: first[i] for i in range(N, N + 250)}
    # After a restart of the process on the same idempotency store, too.
    assert await asyncio.to_thread(served.stop) == 0  # graceful: exit status 0
    await asyncio.to_thread(served.start)
    retried = await fire(url, key, list(range(N + 250, N + 500)), idem=True)
    assert retried == {i: first[i] for i in range(N + 250, N + 500)}

    total = len(first)
    records = await read_raw(kafka_bootstrap, topics.raw, at_least=total, timeout=60)
    by_id: dict[str, list[bytes]] = {}
    for rec in records:
        assert rec.key == snap.id
        by_id.setdefault(rec.headers["request-id"].decode(), []).append(rec.value)
    assert len(records) == total
    for i, (_, raw) in first.items():
        answer = orjson.loads(raw)
        assert by_id[answer["event_id"]] == [body_of(i)]
        assert answer["accepted"] == (3 if i % 10 == 0 else 1)
