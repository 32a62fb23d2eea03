"""With HOOKSTREAM_KAFKA_CREATE_TOPICS off, an ingress that finds a topic missing creates
none, is not ready with the topic named on /readyz, says so once in its log, and becomes ready
once someone creates the topics."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx
import pytest

from core.kafka.plan import admin_client
from core.kafka.topics import Topics, ensure_topics
from ingress.app import create_app
from tests.ingress.conftest import settings_for


async def prefixed(bootstrap: str, prefix: str) -> list[str]:
    admin = admin_client(bootstrap)
    await admin.start()
    try:
        return [t for t in await admin.list_topics() if t.startswith(prefix)]
    finally:
        await admin.close()


async def test_ingress_not_ready_naming_the_missing_topic(
        kafka_bootstrap: str, topics: Topics, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="core.kafka.plan")
    settings = settings_for(kafka_bootstrap, topics, tmp_path, kafka_create_topics=False)
    app = create_app(settings)
    app.topic_gate.retry_seconds = 0.2  # looks again often: the log must still say it once
    await app.startup()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress",
                             timeout=10)
    try:
        deadline = time.monotonic() + 30
        while True:
            ready = await http.get("/readyz")
            if "reasons" in ready.json():
                break
            assert time.monotonic() < deadline, ready.text
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # several more looks
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["checks"]["topics"] is False
        assert topics.raw in body["reasons"]["topics"] and topics.config in body["detail"]
        said = [r.getMessage() for r in caplog.records if "missing topic" in r.getMessage()]
        assert len(said) == 1, said
        assert topics.raw in said[0] and "HOOKSTREAM_KAFKA_CREATE_TOPICS is off" in said[0]
        assert await prefixed(kafka_bootstrap, topics.prefix) == []  # it created none

        await ensure_topics(kafka_bootstrap, topics, 2)  # the platform team's part
        await app.wait_ready(60)
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["topics"] is True
    finally:
        await http.aclose()
        await app.shutdown()
