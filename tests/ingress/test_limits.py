"""Per-automation limits (issue 13, items 2 and 3) on real Kafka and PostgreSQL.

- One ingress applies an automation's own rate, burst and largest body (413 naming it),
  while another automation keeps the global settings.
- Two ingress replicas sharing the rate store (HOOKSTREAM_INGRESS_RATE_STORE_URL) accept
  together at most `burst + rate * elapsed` from a full bucket (docs/DESIGN.md), spend
  leased tokens locally (fewer store round trips than accepted requests), and one
  automation's exhausted bucket never refuses another's requests.
- The store out of reach: each replica limits on its own (the documented fallback).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson

from automations.snapshot import ApiKeyHash, AutomationSnapshot
from core.kafka.topics import Topics, ensure_topics
from hookstream.local.kafka import free_port
from ingress.ratelimit import RateLimiter, SharedRateLimiter
from tests.ingress.conftest import (
    make_snapshot,
    new_key,
    publish_snapshots,
    read_raw,
    settings_for,
    sha,
    start_app,
)

OBJ = b'{"email": "a@example.com", "first_name": "Ann", "country": "NL"}'
JSON = {"Content-Type": "application/json"}


def limited(key: str, **limits: object) -> AutomationSnapshot:
    return dataclasses.replace(make_snapshot(keys=[ApiKeyHash(sha(key))]), **limits)


async def test_an_automation_has_its_own_rate_burst_and_body_limit(
        kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> None:
    await ensure_topics(kafka_bootstrap, topics, 2)
    key = new_key()
    own = limited(key, rate_limit=0.2, rate_burst=2, max_body_bytes=200)
    default = limited(key)  # the globals below: rate 1000/s, burst 2000, 1 MiB
    await publish_snapshots(kafka_bootstrap, topics, own, default)
    app, client = await start_app(settings_for(kafka_bootstrap, topics, tmp_path))
    auth = {**JSON, "X-API-Key": key}
    try:
        big = b'{"email": "a@x.nl", "pad": "' + b"x" * 250 + b'"}'
        for body, headers in ((big, auth), (gzip.compress(big), {**auth,
                                                                  "Content-Encoding": "gzip"})):
            r = await client.post(f"/v1/hooks/{own.id}", content=body, headers=headers)
            assert r.status_code == 413, r.text
            answer = orjson.loads(r.content)
            assert answer["error"] == "body_too_large"
            assert "this automation's limit of 200 bytes" in answer["detail"]
        r = await client.post(f"/v1/hooks/{default.id}", content=big, headers=auth)
        assert r.status_code == 202, r.text

        statuses = [(await client.post(f"/v1/hooks/{own.id}", content=OBJ,
                                       headers=auth)).status_code for _ in range(4)]
        assert statuses == [202, 202, 429, 429]  # burst 2, then 0.2/s
        r = await client.post(f"/v1/hooks/{own.id}", content=OBJ, headers=auth)
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 5
        statuses = [(await client.post(f"/v1/hooks/{default.id}", content=OBJ,
                                       headers=auth)).status_code for _ in range(10)]
        assert statuses == [202] * 10
        recs = await read_raw(kafka_bootstrap, topics.raw, at_least=13)
        assert Counter(r.key for r in recs) == {own.id: 2, default.id: 11}
    finally:
        await client.aclose()
        await app.shutdown()


async def _hammer(client: httpx.AsyncClient, url: str, key: str, until: float,
                  out: Counter[int]) -> None:
    while time.monotonic() < until:
        r = await client.post(url, content=OBJ, headers={**JSON, "X-API-Key": key})
        out[r.status_code] += 1
        if r.status_code == 429:
            await asyncio.sleep(0.002)  # a client that retries at once, not a spin


async def test_two_replicas_share_each_automations_bucket(
        kafka_bootstrap: str, topics: Topics, tmp_path: Path, postgres_db: str) -> None:
    await ensure_topics(kafka_bootstrap, topics, 2)
    key = new_key()
    rate, burst = 20.0, 10  # low enough for the clients to exceed on a loaded machine
    hot = limited(key, rate_limit=rate, rate_burst=burst)
    other = limited(key, rate_limit=rate, rate_burst=burst)
    await publish_snapshots(kafka_bootstrap, topics, hot, other)
    replicas = []
    for n in (1, 2):
        replicas.append(await start_app(settings_for(
            kafka_bootstrap, topics, tmp_path / f"r{n}", ingress_rate_store_url=postgres_db,
            ingress_rate_lease=20)))
    try:
        limiters = [app.limiter for app, _ in replicas]
        assert all(isinstance(x, SharedRateLimiter) for x in limiters)
        assert limiters[0].want(rate) == 2  # a tenth of a second of the rate per lease

        # Both replicas hammer one automation, 6 clients each, for 3 s.
        counts = [Counter[int](), Counter[int]()]
        started = time.monotonic()
        until = started + 3.0
        await asyncio.gather(*(_hammer(client, f"/v1/hooks/{hot.id}", key, until, counts[i])
                               for i, (_, client) in enumerate(replicas) for _ in range(6)))
        elapsed = time.monotonic() - started
        accepted = [c[202] for c in counts]
        bound = burst + rate * elapsed
        assert set(counts[0]) | set(counts[1]) <= {202, 429}
        offered = sum(counts[0].values()) + sum(counts[1].values())
        leases = sum(x.leases for x in limiters)  # type: ignore[attr-defined]
        granting = sum(x.granting_leases for x in limiters)  # type: ignore[attr-defined]
        print(f"two replicas: accepted={accepted} refused={[c[429] for c in counts]} "
              f"bound={bound:.1f} elapsed={elapsed:.2f}s leases={leases} "
              f"granting={granting}")
        assert counts[0][429] + counts[1][429] > 0  # the clients were over the limit
        # Within the documented bound from a full bucket, and not far below what was sent
        # or allowed (a loaded machine may send less than the bound).
        assert sum(accepted) <= bound, (accepted, elapsed)
        assert sum(accepted) >= 0.6 * min(bound, offered), (accepted, offered, elapsed)
        assert min(accepted) > 0  # both replicas got a share
        # Leased in chunks (up to 2 tokens at 20/s; 1 when only 1 is left): fewer granting
        # round trips than requests accepted, and far fewer round trips than requests.
        assert granting < sum(accepted), (granting, accepted)
        assert leases < offered, (leases, offered)

        # The hot automation's bucket is empty; the other's is full: its whole burst passes,
        # half through each replica. Sent in runs of one chunk per replica, so neither ends
        # up holding leased tokens it does not spend (which the documented bound allows:
        # alternating one by one strands a token on one replica, and the last request then
        # waits for the refill).
        chunk = limiters[0].want(rate)
        statuses = []
        for i in range(burst):
            _, client = replicas[(i // chunk) % 2]
            r = await client.post(f"/v1/hooks/{other.id}", content=OBJ,
                                  headers={**JSON, "X-API-Key": key})
            statuses.append(r.status_code)
        assert statuses == [202] * burst
        recs = await read_raw(kafka_bootstrap, topics.raw, at_least=sum(accepted) + burst)
        assert Counter(r.key for r in recs) == {hot.id: sum(accepted), other.id: burst}
    finally:
        for app, client in replicas:
            await client.aclose()
            await app.shutdown()


async def test_the_store_out_of_reach_means_each_replica_limits_alone() -> None:
    # A port nobody listens on: the connection is refused at once.
    url = f"postgresql://hookstream@127.0.0.1:{free_port()}/nothing"
    limiter = SharedRateLimiter(url, lease=20, fallback=RateLimiter(1000.0, 2000))
    try:
        assert limiter.try_take("a", 0.5, 3) is None  # holds nothing yet: must lease
        waits = [await limiter.acquire("a", 0.5, 3) for _ in range(4)]
        assert waits[:3] == [0.0, 0.0, 0.0]  # the automation's burst, in this process
        assert 1.0 < waits[3] <= 2.0  # then its rate: 0.5/s
        assert limiter.leases == 0
    finally:
        limiter.close()
