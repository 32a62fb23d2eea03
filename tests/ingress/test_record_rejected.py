"""A produce error of one record (too large for its topic) fails that request only: a 413
for it, while the circuit breaker stays closed and every other request is accepted, with
both Kafka clients. The broker is real; the raw topic's max.message.bytes is made small."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from aiokafka.admin import NewTopic

from automations.snapshot import ApiKeyHash
from core.kafka import clients
from core.kafka.topics import Topics, ensure_topics
from ingress.publishing import KafkaPublisher, PublisherPool
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

pytestmark = pytest.mark.kafka

TOPIC_LIMIT = 4096
SMALL = b'{"email": "a@example.com", "first_name": "Ann"}'


async def _limited_topic(bootstrap: str, topic: str, limit: int) -> None:
    admin = clients.admin(bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1,
                                            topic_configs={"max.message.bytes": str(limit)})])
    finally:
        await admin.close()


def _breakers_closed(publisher: object) -> bool:
    if isinstance(publisher, PublisherPool):
        return all(not m.breaker.down for m in publisher.members)
    assert isinstance(publisher, KafkaPublisher | RdKafkaPublisher)
    return not publisher.breaker.down


@pytest.mark.parametrize("client", ["rdkafka", "aiokafka"])
async def test_a_record_too_large_for_its_topic_fails_that_request_only(
        client: str, kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> None:
    await _limited_topic(kafka_bootstrap, topics.raw, TOPIC_LIMIT)
    await ensure_topics(kafka_bootstrap, topics, 2)  # the others
    key = new_key()
    snap = make_snapshot(keys=[ApiKeyHash(sha(key))])
    await publish_snapshots(kafka_bootstrap, topics, snap)
    settings = settings_for(kafka_bootstrap, topics, tmp_path, ingress_client=client)
    app, http = await start_app(settings)
    headers = {"Content-Type": "application/json", "X-API-Key": key}
    big = orjson.dumps({"email": "b@example.com", "note": "x" * (4 * TOPIC_LIMIT)})
    assert len(big) < settings.max_body_bytes  # the ingress's own limit admits it
    try:
        for _ in range(3):
            resp = await http.post(f"/v1/hooks/{snap.id}", content=big, headers=headers)
            assert resp.status_code == 413, resp.text
            assert resp.json()["error"] == "body_too_large"
            assert "max.message.bytes" in resp.json()["detail"]
            assert _breakers_closed(app.publisher), "a per-record error opened the breaker"
            # Every other request goes on: accepted at once, no 503.
            ok = await http.post(f"/v1/hooks/{snap.id}", content=SMALL, headers=headers)
            assert ok.status_code == 202, ok.text
        assert app.publisher.ready
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        recs = await read_raw(kafka_bootstrap, topics.raw, at_least=3)
        assert [r.value for r in recs] == [SMALL] * 3
    finally:
        await http.aclose()
        await app.shutdown()
