"""Idempotency-Key: answered like the first, published once, across restarts, in a window."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from core.kafka.topics import Topics
from ingress.idempotency import IdempotencyStore, KeyClaim, Replay
from tests.ingress.conftest import Ingress, read_raw, settings_for, start_app

OBJ = b'{"email": "a@example.com", "country": "NL"}'


def hdrs(ing: Ingress, key: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Idempotency-Key": key, **ing.auth()}


async def test_retry_is_answered_like_the_first_and_published_once(ingress: Ingress) -> None:
    first = await ingress.client.post(ingress.url(), content=OBJ, headers=hdrs(ingress, "k-1"))
    again = await ingress.client.post(ingress.url(), content=OBJ, headers=hdrs(ingress, "k-1"))
    other = await ingress.client.post(ingress.url(), content=OBJ, headers=hdrs(ingress, "k-2"))
    assert first.status_code == again.status_code == other.status_code == 202
    assert first.content == again.content
    assert other.json()["event_id"] != first.json()["event_id"]
    await asyncio.sleep(0.3)
    recs = await read_raw(ingress.bootstrap, ingress.topics.raw, at_least=2)
    assert sorted(r.headers["idempotency-key"] for r in recs) == [b"k-1", b"k-2"]


async def test_concurrent_duplicates_publish_once(ingress: Ingress) -> None:
    results = await asyncio.gather(*[
        ingress.client.post(ingress.url(), content=OBJ, headers=hdrs(ingress, "same"))
        for _ in range(25)])
    assert {r.status_code for r in results} == {202}
    assert len({r.content for r in results}) == 1
    await asyncio.sleep(0.3)
    recs = await read_raw(ingress.bootstrap, ingress.topics.raw, at_least=1)
    assert len(recs) == 1


async def test_errors_are_not_remembered(ingress: Ingress) -> None:
    bad = await ingress.client.post(ingress.url(), content=b"{oops",
                                    headers=hdrs(ingress, "fix-me"))
    assert bad.status_code == 400
    good = await ingress.client.post(ingress.url(), content=OBJ, headers=hdrs(ingress, "fix-me"))
    assert good.status_code == 202


async def test_survives_a_restart_and_expires(ingress: Ingress, kafka_bootstrap: str,
                                               topics: Topics, tmp_path: Path) -> None:
    first = await ingress.client.post(ingress.url(), content=OBJ, headers=hdrs(ingress, "r"))
    assert first.status_code == 202
    # A second app instance on the same store (as after a process restart).
    app2, client2 = await start_app(settings_for(kafka_bootstrap, topics, tmp_path))
    try:
        again = await client2.post(ingress.url(), content=OBJ, headers=hdrs(ingress, "r"))
        assert again.status_code == 202 and again.content == first.content
    finally:
        await client2.aclose()
        await app2.shutdown()
    await asyncio.sleep(0.3)
    assert len(await read_raw(kafka_bootstrap, topics.raw, at_least=1)) == 1


def test_store_window_failure_and_takeover(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = IdempotencyStore(tmp_path / "i.sqlite3", window_seconds=0.5, stale_after=0.3)
        store.open()
        claim = await store.begin("a", "k")
        assert isinstance(claim, KeyClaim)
        await store.release(claim)  # a 503: the retry may publish, under the same event id
        retry = await store.begin("a", "k")
        assert isinstance(retry, KeyClaim) and retry.event_id == claim.event_id
        await store.complete(retry, 202, b'{"x":1}')
        assert await store.begin("a", "k") == Replay(202, b'{"x":1}')
        other = await store.begin("b", "k")  # keys are per automation
        assert isinstance(other, KeyClaim)
        # A pending claim of a process that died is taken over once stale.
        crashed = IdempotencyStore(tmp_path / "i.sqlite3", window_seconds=0.5, stale_after=0.3)
        crashed.open()
        t0 = time.monotonic()
        taken = await crashed.begin("b", "k")
        assert isinstance(taken, KeyClaim) and taken.event_id == other.event_id
        assert time.monotonic() - t0 >= 0.25
        await asyncio.sleep(0.6)
        fresh = await store.begin("a", "k")  # past the window: a new request
        assert isinstance(fresh, KeyClaim) and fresh.event_id != claim.event_id
        assert store.purge(time.time() + 10) >= 1
        store.close()
        crashed.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "ünïcode"])
async def test_invalid_keys(ingress: Ingress, key: str) -> None:
    resp = await ingress.client.post(ingress.url(), content=OBJ,
                                     headers={"Content-Type": "application/json",
                                              "Idempotency-Key": key.encode("utf-8"),
                                              **ingress.auth()})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_idempotency_key"
