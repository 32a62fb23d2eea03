"""A retry with the same Idempotency-Key after a 503 never invites twice (issue 15, item 7).

The broker is frozen (SIGSTOP) while a keyed request is published: the ingress answers 503
and cannot know whether Kafka will store the record once it wakes. After SIGCONT the client
retries with the same key until a 202. Whatever the first attempt left on the topic carries
the same event id as the retry, so the real streams worker derives one invitation id from
them, which the notifier mails once. Uses a broker of its own (the session's is shared).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import orjson

from automations.ids import invitation_id
from automations.snapshot import ApiKeyHash
from core.kafka.topics import Topics, ensure_topics
from hookstream.local.kafka import LocalKafka, free_port
from ingress.errors import KAFKA_UNAVAILABLE
from tests.ingress.conftest import (
    make_snapshot,
    new_key,
    publish_snapshots,
    read_raw,
    settings_for,
    sha,
    start_app,
)
from tests.ingress.test_outage import wait_stopped
from tests.streams.conftest import Worker, decode_invitations, read_topic


async def test_retry_with_the_key_after_a_frozen_broker_invites_once(
        own_kafka: LocalKafka, tmp_path: Path) -> None:
    state = own_kafka.state()
    assert state is not None
    bootstrap = own_kafka.bootstrap
    topics = Topics(f"f{int(time.time())}.")
    await ensure_topics(bootstrap, topics, 2)
    key = new_key()
    snap = make_snapshot(keys=[ApiKeyHash(sha(key))])
    await publish_snapshots(bootstrap, topics, snap)
    app, client = await start_app(settings_for(bootstrap, topics, tmp_path / "var",
                                               ingress_send_timeout_seconds=1.0))
    url = f"/v1/hooks/{snap.id}"
    headers = {"Content-Type": "application/json", "X-API-Key": key}
    body = orjson.dumps({"email": "once@example.com", "first_name": "Ann", "country": "NL"})
    idem = {**headers, "Idempotency-Key": "order-4711"}
    try:
        async with asyncio.timeout(60):  # warm-up: producer id, the topic's leaders
            while (await client.post(url, content=b'{"email": "warm@example.com", "country": "NL"}',
                                     headers=headers)).status_code != 202:
                await asyncio.sleep(0.2)
        os.kill(state.pid, signal.SIGSTOP)
        try:
            await wait_stopped(state.pid)
            first = await client.post(url, content=body, headers=idem)
        finally:
            os.kill(state.pid, signal.SIGCONT)
        assert first.status_code == 503, first.text
        assert first.json() == {"error": "kafka_unavailable", "detail": KAFKA_UNAVAILABLE}
        assert "may or may not have been accepted" in first.json()["detail"]
        assert "same Idempotency-Key" in first.json()["detail"]
        retries = 0
        async with asyncio.timeout(60):
            while True:
                retry = await client.post(url, content=body, headers=idem)
                if retry.status_code == 202:
                    break
                assert retry.status_code == 503, retry.text
                retries += 1
                await asyncio.sleep(0.3)
        event_id = retry.json()["event_id"]
        again = await client.post(url, content=body, headers=idem)
        assert again.status_code == 202 and again.json()["event_id"] == event_id
    finally:
        await client.aclose()
        await app.shutdown()  # flushes: whatever the frozen attempt left is on Kafka now

    # Every record of this key on webhooks.raw (the frozen attempt's too, if it landed)
    # carries the one event id the client was answered with.
    raw = await read_raw(bootstrap, topics.raw, at_least=2)
    keyed = [r for r in raw if r.headers.get("idempotency-key") == b"order-4711"]
    assert keyed and {r.headers["request-id"].decode() for r in keyed} == {event_id}

    env = {**os.environ, "HOOKSTREAM_KAFKA_BOOTSTRAP": bootstrap,
           "HOOKSTREAM_TOPIC_PREFIX": topics.prefix, "HOOKSTREAM_VAR_DIR": str(tmp_path / "w"),
           "HOOKSTREAM_WORKER_PORT": str(free_port()), "HOOKSTREAM_TOPIC_PARTITIONS": "2"}
    worker = Worker(env, int(env["HOOKSTREAM_WORKER_PORT"]), tmp_path / "worker.log")
    worker.start()
    try:
        await worker.wait_ready(90)
        records = await read_topic(
            bootstrap, topics.due, timeout=90, settle=3.0,
            until=lambda recs: any(i["email"] == "warm@example.com"
                                   for i in decode_invitations(recs))
            and any(i["email"] == "once@example.com" for i in decode_invitations(recs)))
    finally:
        worker.close()
    ours = [i for i in decode_invitations(records) if i["email"] == "once@example.com"]
    assert {i["invitation_id"] for i in ours} == {invitation_id(snap.id, event_id, 0)}, ours
    assert {i["event_id"] for i in ours} == {event_id}
