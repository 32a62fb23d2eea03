"""The dry-run sample feed: what reached the test endpoint, for the console's connection test.

Each authenticated `POST /v1/hooks/{id}/test` is published, with its verdict, on
`automations.samples` (keyed by automation id, retention one hour: it holds respondent data).
The console follows that topic and shows the samples live, so the ingress never calls the
control plane. The value is JSON: `received_at` (ms), `content_type`, `body` (the text as
sent, cut at `MAX_SAMPLE_BYTES`), `truncated`, `status` (the HTTP status answered) and
`answer` (the dry run, or the error). The API key is never part of it.

The feed has its own small producer, so a samples problem can never slow or break the
webhook path (its circuit breaker, its acknowledgements); a failed publish is logged without
the body and the dry run is answered all the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from core.kafka import clients
from core.kafka.clients import Kafka

log = logging.getLogger(__name__)

MAX_SAMPLE_BYTES = 256 * 1024  # the console shows samples, it does not need whole batches
SEND_TIMEOUT_S = 3.0


def sample_value(*, content_type: str | None, body: bytes, status: int,
                 answer: dict[str, Any], received_at_ms: int | None = None) -> bytes:
    """The JSON value of one sample record."""
    cut = body[:MAX_SAMPLE_BYTES]
    return orjson.dumps({
        "received_at": received_at_ms if received_at_ms is not None else time.time_ns() // 10**6,
        "content_type": content_type,
        "body": cut.decode("utf-8", "replace"),
        "truncated": len(body) > MAX_SAMPLE_BYTES,
        "status": status,
        "answer": answer,
    }, default=str)


class SampleFeed:
    def __init__(self, bootstrap: Kafka, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = clients.producer(self.bootstrap, acks=1,
                                            max_request_size=MAX_SAMPLE_BYTES + 64 * 1024,
                                            request_timeout_ms=int(SEND_TIMEOUT_S * 1000))
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def publish(self, automation_id: str, content_type: str | None, body: bytes,
                      status: int, answer: dict[str, Any]) -> None:
        """Best effort: the dry run's answer does not depend on it."""
        value = sample_value(content_type=content_type, body=body, status=status, answer=answer)
        try:
            producer = await asyncio.wait_for(self._started(), SEND_TIMEOUT_S)
            await asyncio.wait_for(producer.send_and_wait(self.topic, value,
                                                          key=automation_id.encode()),
                                   SEND_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the console misses a sample, nothing more
            log.warning("dry-run sample of automation %s not published for the console: %s",
                        automation_id, type(exc).__name__)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
