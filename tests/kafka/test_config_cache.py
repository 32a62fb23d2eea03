"""ConfigCache follows the compacted config topic: loads, applies changes live, and deletes."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from automations.config_cache import ConfigCache
from automations.snapshot import (
    AutomationSnapshot,
    FieldMapping,
    MessageTemplate,
    Variable,
)
from core.kafka.topics import Topics, ensure_topics
from schemas import codec


def snapshot(automation_id: str, version: int = 1, enabled: bool = True) -> AutomationSnapshot:
    return AutomationSnapshot(
        id=automation_id, version=version, name="Welcome", survey_id="s1", survey_name="NPS",
        enabled=enabled, message=MessageTemplate("m1", "invite", "Hi", "Hi {{ first_name }}"),
        variables=(Variable("first_name", "text"), Variable("plan", "choice", ("basic", "pro"))),
        email_field="email", fields_mode="include", fields_paths=("email", "first_name"),
        filters={"all": [{"field": "first_name", "op": "exists"}]},
        mapping=(FieldMapping("first_name", "first_name"), FieldMapping("email", None)),
        delay_days=0, error_notifications_enabled=True, error_recipients=("ops@example.com",),
        api_keys=(), updated_at=datetime(2026, 11, 29, tzinfo=UTC))


async def _wait(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.05)


async def test_loads_follows_and_deletes(kafka_bootstrap: str, topics: Topics) -> None:
    await ensure_topics(kafka_bootstrap, topics, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for a in ("a1", "a2"):
            await producer.send_and_wait(topics.config, codec.encode(
                "AutomationSnapshot", snapshot(a).to_record()), key=a.encode())
        cache = ConfigCache(kafka_bootstrap, topics.config)
        seen: list[tuple[str, bool]] = []
        cache.add_listener(lambda i, s: seen.append((i, s is not None)))
        await cache.start()
        try:
            # Ready means caught up with everything published before start.
            assert set(cache.all()) == {"a1", "a2"}
            assert cache.get("a1") == snapshot("a1")
            await producer.send_and_wait(topics.config, codec.encode(
                "AutomationSnapshot", snapshot("a1", 2, enabled=False).to_record()), key=b"a1")
            await _wait(lambda: cache.get("a1") is not None and not cache.get("a1").enabled)
            # A late, older snapshot does not undo a newer one.
            await producer.send_and_wait(topics.config, codec.encode(
                "AutomationSnapshot", replace(snapshot("a1", 1), name="old").to_record()),
                key=b"a1")
            await producer.send_and_wait(topics.config, None, key=b"a2")
            await _wait(lambda: cache.get("a2") is None)
            assert cache.get("a1").version == 2  # type: ignore[union-attr]
            assert ("a2", False) in seen
        finally:
            await cache.stop()
    finally:
        await producer.stop()


async def test_ready_on_empty_topic(kafka_bootstrap: str, topics: Topics) -> None:
    await ensure_topics(kafka_bootstrap, topics, partitions=1)
    cache = ConfigCache(kafka_bootstrap, topics.config)
    await cache.start(wait_ready=10)
    try:
        assert cache.ready.is_set() and len(cache) == 0
    finally:
        await cache.stop()
