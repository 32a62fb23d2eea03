"""Idempotency-Key across ingress replicas sharing one PostgreSQL store (issue 13, item 1).

Two real ingress replicas on the session broker and one fresh PostgreSQL database: the same
key sent to both is answered alike and published once, one after the other and while the
first is still in flight on the other replica; a replica killed (SIGKILL) while it holds a
claim leaves it to the other, which publishes under the claim's event id.

Replica A lingers 1 s before its produce request leaves (librdkafka's linger), which holds
its keyed requests in flight long enough for the other replica to see them pending.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from automations.snapshot import ApiKeyHash, AutomationSnapshot
from core.kafka.topics import Topics, ensure_topics
from hookstream.local.kafka import free_port
from ingress.app import IngressApp
from tests.ingress.conftest import (
    ServedIngress,
    make_snapshot,
    new_key,
    publish_snapshots,
    read_raw,
    settings_for,
    sha,
    start_app,
)

OBJ = b'{"email": "a@example.com", "country": "NL"}'


@dataclass
class Replicas:
    a: httpx.AsyncClient
    b: httpx.AsyncClient
    apps: tuple[IngressApp, IngressApp]
    snap: AutomationSnapshot
    key: str
    db: str

    def headers(self, idem: str | None) -> dict[str, str]:
        h = {"Content-Type": "application/json", "X-API-Key": self.key}
        return h if idem is None else {**h, "Idempotency-Key": idem}

    def url(self) -> str:
        return f"/v1/hooks/{self.snap.id}"


def row(db: str, idem: str) -> tuple[Any, ...] | None:
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            found = conn.execute(text("SELECT state, event_id FROM ingress_idempotency "
                                      "WHERE key = :k"), {"k": idem}).first()
            return None if found is None else tuple(found)
    finally:
        engine.dispose()


async def wait_pending(db: str, idem: str, timeout: float = 10.0) -> str:
    """The event id of `idem`'s claim once some replica holds it pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(row, db, idem)
        if found is not None and found[0] == "pending":
            return str(found[1])
        await asyncio.sleep(0.02)
    raise AssertionError(f"no pending claim for {idem!r} within {timeout}s")


@pytest.fixture
async def replicas(kafka_bootstrap: str, topics: Topics, tmp_path: Path,
                   postgres_db: str) -> AsyncIterator[Replicas]:
    await ensure_topics(kafka_bootstrap, topics, 2)
    key = new_key()
    snap = make_snapshot(keys=[ApiKeyHash(sha(key))])
    await publish_snapshots(kafka_bootstrap, topics, snap)
    # Each replica has its own var_dir: nothing is shared but Kafka and PostgreSQL.
    common: dict[str, Any] = {"idempotency_url": postgres_db, "ingress_client": "rdkafka"}
    app_a, client_a = await start_app(settings_for(kafka_bootstrap, topics, tmp_path / "a",
                                                   ingress_linger_ms=1000, **common))
    try:
        app_b, client_b = await start_app(settings_for(
            kafka_bootstrap, topics, tmp_path / "b",
            # B takes over a dead replica's claim 11 s after it was made (send timeout + 10).
            ingress_send_timeout_seconds=1.0, **common))
        try:
            yield Replicas(client_a, client_b, (app_a, app_b), snap, key, postgres_db)
        finally:
            await client_b.aclose()
            await app_b.shutdown()
    finally:
        await client_a.aclose()
        await app_a.shutdown()


async def test_same_key_to_two_replicas_one_after_the_other(
        replicas: Replicas, kafka_bootstrap: str, topics: Topics) -> None:
    r = replicas
    first = await r.a.post(r.url(), content=OBJ, headers=r.headers("seq-1"))
    again = await r.b.post(r.url(), content=OBJ, headers=r.headers("seq-1"))
    other = await r.b.post(r.url(), content=OBJ, headers=r.headers("seq-2"))
    unkeyed = await r.b.post(r.url(), content=OBJ, headers=r.headers(None))
    assert first.status_code == again.status_code == other.status_code == 202
    assert unkeyed.status_code == 202
    assert again.content == first.content
    assert other.json()["event_id"] != first.json()["event_id"]
    recs = await read_raw(kafka_bootstrap, topics.raw, at_least=3)
    assert sorted(x.headers.get("idempotency-key", b"") for x in recs) == [b"", b"seq-1",
                                                                            b"seq-2"]
    assert row(r.db, "seq-1") == ("done", first.json()["event_id"])


async def test_same_key_while_the_first_is_in_flight_on_the_other_replica(
        replicas: Replicas, kafka_bootstrap: str, topics: Topics) -> None:
    r = replicas
    replayed_b = r.apps[1].metrics.replayed._value.get()
    first = asyncio.create_task(r.a.post(r.url(), content=OBJ, headers=r.headers("fly")))
    event_id = await wait_pending(r.db, "fly")  # A holds the claim, its record lingers
    t0 = time.monotonic()
    second = await r.b.post(r.url(), content=OBJ, headers=r.headers("fly"))
    waited = time.monotonic() - t0
    answer = await first
    assert answer.status_code == second.status_code == 202
    assert second.content == answer.content and answer.json()["event_id"] == event_id
    assert waited >= 0.2  # B waited for A's outcome instead of publishing
    assert r.apps[1].metrics.replayed._value.get() == replayed_b + 1
    await asyncio.sleep(0.5)  # a second record, if any, would have landed by now
    recs = await read_raw(kafka_bootstrap, topics.raw, at_least=1)
    assert [x.headers["request-id"].decode() for x in recs] == [event_id]


async def test_a_replica_killed_mid_claim_leaves_it_to_the_other(
        replicas: Replicas, served_env: dict[str, str], tmp_path: Path,
        kafka_bootstrap: str, topics: Topics) -> None:
    r = replicas
    env = {**served_env, "HOOKSTREAM_IDEMPOTENCY_URL": r.db, "HOOKSTREAM_INGRESS_CLIENT":
           "rdkafka", "HOOKSTREAM_INGRESS_LINGER_MS": "1000",
           "HOOKSTREAM_VAR_DIR": str(tmp_path / "c")}
    victim = ServedIngress(env, free_port(), tmp_path / "victim.log")
    victim.start()
    try:
        async with httpx.AsyncClient(base_url=victim.base_url, timeout=30) as c:
            doomed = asyncio.create_task(c.post(r.url(), content=OBJ,
                                                headers=r.headers("kill")))
            event_id = await wait_pending(r.db, "kill")
            assert victim.proc is not None
            os.killpg(victim.proc.pid, signal.SIGKILL)  # mid-claim, its record still lingering
            victim.proc.wait(10)
            with pytest.raises(httpx.HTTPError):
                await doomed
        t0 = time.monotonic()
        retry = await r.b.post(r.url(), content=OBJ, headers=r.headers("kill"))
        assert retry.status_code == 202, retry.text
        assert retry.json()["event_id"] == event_id  # the dead replica's event id
        assert time.monotonic() - t0 < 15  # re-claimable after stale_after (11 s), bounded
    finally:
        victim.stop()
    recs = await read_raw(kafka_bootstrap, topics.raw, at_least=1)
    assert {x.headers["request-id"].decode() for x in recs
            if x.headers.get("idempotency-key") == b"kill"} == {event_id}
    assert row(r.db, "kill") == ("done", event_id)
