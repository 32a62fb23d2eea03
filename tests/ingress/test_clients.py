"""Both Kafka clients the ingress can use (`ingress_client`) keep the same promise:
a 202 means the body is on webhooks.raw, once, with the contract's headers. The rest of the
suite runs with the default client; this keeps the other one exercised too."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from automations.snapshot import ApiKeyHash
from core.kafka.topics import Topics, ensure_topics
from ingress.app import build_publisher
from ingress.publishing import PublisherPool
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


@pytest.mark.parametrize("client", ["aiokafka", "rdkafka"])
async def test_each_client_publishes_what_it_acknowledged(
        client: str, kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> None:
    await ensure_topics(kafka_bootstrap, topics, 2)
    key = new_key()
    snap = make_snapshot(keys=[ApiKeyHash(sha(key))])
    await publish_snapshots(kafka_bootstrap, topics, snap)
    settings = settings_for(kafka_bootstrap, topics, tmp_path)
    publisher = build_publisher(settings, client)
    expected = RdKafkaPublisher if client == "rdkafka" else PublisherPool
    assert isinstance(publisher, expected)
    app, http = await start_app(settings, publisher=publisher)
    bodies = [b'{"email": "c%d@example.com"}' % i for i in range(40)]
    try:
        responses = await asyncio.gather(*(
            http.post(f"/v1/hooks/{snap.id}", content=b, headers={
                "Content-Type": "application/json", "X-API-Key": key,
                **({"Idempotency-Key": f"k{i}"} if i % 2 else {})})
            for i, b in enumerate(bodies)))
        ready = await http.get("/readyz")
    finally:
        await http.aclose()
        await app.shutdown()
    assert [r.status_code for r in responses] == [202] * len(bodies)
    assert ready.status_code == 200 and ready.json()["checks"]["kafka_producer"] is True
    sent = {r.json()["event_id"]: b for r, b in zip(responses, bodies, strict=True)}
    records = await read_raw(kafka_bootstrap, topics.raw, at_least=len(bodies))
    assert len(records) == len(bodies)
    for rec in records:
        event_id = rec.headers["request-id"].decode()
        assert rec.key == snap.id
        assert rec.value == sent[event_id]
        assert rec.headers["content-type"] == b"application/json"
        assert rec.headers["received-at"].isdigit()
    with_key = [r for r in records if "idempotency-key" in r.headers]
    assert len(with_key) == len(bodies) // 2


def test_unknown_client_name_is_refused(tmp_path: Path) -> None:
    settings = settings_for("127.0.0.1:1", Topics("x."), tmp_path)
    with pytest.raises(ValueError, match="HOOKSTREAM_INGRESS_CLIENT"):
        build_publisher(settings, "kafka-python")
