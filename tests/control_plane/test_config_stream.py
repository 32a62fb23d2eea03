"""The config stream on a real broker: after a sequence of changes and a restart of the
control plane, the latest record per key on the compacted topic equals the store."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from automations.snapshot import AutomationSnapshot
from control_plane import service
from control_plane.api import create_app
from control_plane.store.unit import Store
from core.settings import Settings
from schemas import codec
from tests.control_plane.builders import automation_body, make_message, make_survey
from tests.control_plane.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.kafka


async def read_topic(bootstrap: str, topic: str) -> list[tuple[str, bytes | None]]:
    """Every (key, value) of the one-partition topic, in order, with a plain consumer."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        out: list[tuple[str, bytes | None]] = []
        for _ in range(200):  # bounded: each round waits at most 500 ms
            if await consumer.position(tp) >= end:
                break
            batch = await consumer.getmany(tp, timeout_ms=500)
            out.extend((r.key.decode(), r.value) for r in batch.get(tp, []))
        return out
    finally:
        await consumer.stop()


def normalized(snap: AutomationSnapshot) -> dict:
    """The record as it reads back from Avro (timestamps to the millisecond)."""
    return codec.decode_as("AutomationSnapshot",
                           codec.encode("AutomationSnapshot", snap.to_record()))


async def run_admin(settings: Settings, steps) -> None:  # noqa: ANN001 - a coroutine function
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a",
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as c:
            await steps(c)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_topic_equals_store_after_changes_and_restart(settings: Settings) -> None:
    ids: dict[str, str] = {}

    async def changes(admin: httpx.AsyncClient) -> None:
        survey = await make_survey(admin)
        message = await make_message(admin)
        for name in ("kept", "deleted", "other"):
            r = await admin.post("/v1/automations", json=automation_body(
                survey["id"], message["id"], name=name))
            assert r.status_code == 201, r.text
            ids[name] = r.json()["id"]
        assert (await admin.patch(f"/v1/automations/{ids['kept']}",
                                  json={"delay_days": 7})).status_code == 200
        assert (await admin.post(f"/v1/automations/{ids['kept']}/disable",
                                 json={"reason": "paused"})).status_code == 200
        assert (await admin.post(f"/v1/automations/{ids['other']}/keys")).status_code == 200
        assert (await admin.delete(f"/v1/automations/{ids['deleted']}")).status_code == 200
        # A survey change reaches every automation of that survey (new version each).
        assert (await admin.patch(f"/v1/surveys/{survey['id']}",
                                  json={"name": "Renamed survey"})).status_code == 200

    await run_admin(settings, changes)

    topic = f"{settings.topic_prefix}automations.config"
    before_restart = await read_topic(settings.kafka_bootstrap, topic)
    latest = dict(before_restart)
    assert latest[ids["deleted"]] is None  # tombstone
    kept = AutomationSnapshot.from_record(codec.decode_as("AutomationSnapshot",
                                                          latest[ids["kept"]]))
    assert (kept.delay_days, kept.enabled, kept.disabled_reason) == (7, False, "paused")
    assert kept.survey_name == "Renamed survey"
    # Versions only go up on the topic, key by key.
    seen: dict[str, int] = {}
    for key, value in before_restart:
        if value is not None:
            version = codec.decode_as("AutomationSnapshot", value)["version"]
            assert version > seen.get(key, 0)
            seen[key] = version

    # A stale key the store does not know (e.g. a delete whose tombstone got lost).
    stray = dataclasses.replace(kept, id="stray-automation")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        value = codec.encode("AutomationSnapshot", stray.to_record())
        await producer.send_and_wait(topic, value, key=b"stray-automation")
    finally:
        await producer.stop()

    async def nothing(admin: httpx.AsyncClient) -> None:
        assert (await admin.get("/readyz")).json()["status"] == "ready"

    await run_admin(settings, nothing)  # a new control plane: republishes at start

    records = await read_topic(settings.kafka_bootstrap, topic)
    assert len(records) > len(before_restart)
    latest = dict(records)
    store = Store(settings.database_url)
    try:
        stored = {s.id: s for s in store.run(service.all_snapshots)}
    finally:
        store.dispose()
    assert set(stored) == {ids["kept"], ids["other"]}
    for automation_id, snap in stored.items():
        on_topic = codec.decode_as("AutomationSnapshot", latest[automation_id])
        assert on_topic == normalized(snap), automation_id
    assert latest[ids["deleted"]] is None
    assert latest["stray-automation"] is None
    other = AutomationSnapshot.from_record(normalized(stored[ids["other"]]))
    assert len(other.api_keys) == 2 and other.version == 3
