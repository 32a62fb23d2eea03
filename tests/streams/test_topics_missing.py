"""With HOOKSTREAM_KAFKA_CREATE_TOPICS off, a worker that finds the pipeline's topics missing
stays up and not ready, names them on /readyz, logs it once (not at every look), and starts
its loops once the topics exist."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from core.kafka.plan import admin_client
from core.kafka.topics import Topics, ensure_topics
from tests.streams.conftest import Worker


async def test_worker_not_ready_naming_the_missing_topics(
        kafka_bootstrap: str, topics: Topics, worker_factory: Callable[..., Worker]) -> None:
    worker = worker_factory(HOOKSTREAM_KAFKA_CREATE_TOPICS="false")
    worker.start()
    deadline = time.monotonic() + 60
    body: dict[str, object] = {}
    while "reasons" not in body:
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
        assert time.monotonic() < deadline, worker.log_tail()
        try:
            live, ready = await worker.probes()
            body = ready.json()
        except Exception:  # noqa: BLE001 - not listening yet: look again
            body = {}
        await asyncio.sleep(0.3)
    await asyncio.sleep(6)  # past the gate's next look (every 5 s)
    live, ready = await worker.probes()
    assert live == 200 and ready.status_code == 503
    body = ready.json()
    assert body["checks"]["topics"] is False
    for name in (topics.raw, topics.scheduled, topics.scheduler_changelog, topics.config):
        assert name in body["reasons"]["topics"], body
    said = [line for line in worker.log_tail(400).splitlines()
            if "HOOKSTREAM_KAFKA_CREATE_TOPICS is off" in line]
    assert len(said) == 1, said
    assert topics.raw in said[0]
    admin = admin_client(kafka_bootstrap)
    await admin.start()
    try:
        listed = set(await admin.list_topics())
    finally:
        await admin.close()
    assert topics.raw not in listed and topics.scheduler_changelog not in listed

    await ensure_topics(kafka_bootstrap, topics, 3)  # the platform team's part
    await worker.wait_ready(timeout=90)
    live, ready = await worker.probes()
    assert ready.json()["checks"]["topics"] is True
