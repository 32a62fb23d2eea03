"""Puts automation snapshots on the compacted config topic, keyed by automation id.

Every send is acknowledged (acks=all, idempotent producer) before the admin API answers.
A send that fails after the SQL commit leaves the id in `pending`; `republish_pending`
(called by a background loop and on every later change) catches the topic up with the store.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter

from automations.snapshot import AutomationSnapshot
from core.kafka import clients
from core.kafka.clients import Kafka
from schemas import codec

log = logging.getLogger(__name__)

PUBLISHED = Counter("hookstream_config_published_total",
                    "Records put on the automations.config topic", ["kind"])
PUBLISH_FAILURES = Counter("hookstream_config_publish_failures_total",
                           "Config records Kafka did not acknowledge (retried later)")


class ConfigPublisher:
    def __init__(self, bootstrap: Kafka, topic: str, *, timeout_ms: int = 15000) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout_ms = timeout_ms
        self.pending: set[str] = set()
        self._producer: AIOKafkaProducer | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        producer = clients.producer(
            self.bootstrap, acks="all", enable_idempotence=True,
            linger_ms=0, request_timeout_ms=self.timeout_ms,
            # Retries are bounded by delivery_timeout: past it the caller reports the failure.
            )
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, snapshot: AutomationSnapshot) -> None:
        await self._send(snapshot.id, codec.encode("AutomationSnapshot", snapshot.to_record()))
        PUBLISHED.labels("snapshot").inc()

    async def tombstone(self, automation_id: str) -> None:
        """A null value: compaction then forgets the key, and readers drop the automation."""
        await self._send(automation_id, None)
        PUBLISHED.labels("tombstone").inc()

    async def _send(self, automation_id: str, value: bytes | None) -> None:
        if self._producer is None:
            raise RuntimeError("the config publisher is not started")
        try:
            await self._producer.send_and_wait(self.topic, value, key=automation_id.encode())
        except Exception:
            self.pending.add(automation_id)
            PUBLISH_FAILURES.inc()
            raise
        self.pending.discard(automation_id)
