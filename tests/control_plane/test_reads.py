"""The admin API's lists and reads of what the pipeline did, on SQLite and PostgreSQL, with a
real Kafka: pagination and filters, respondents and invitations (the notifier's tables),
outcomes (the worker's counts topic and the mails), waiting invitations, dead-letter replay."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import insert

from core.kafka.topics import Topics
from core.settings import Settings
from core.sql import make_engine
from notifier.migrations import migrate as migrate_notifier
from notifier.models import Invitation, Respondent
from schemas import codec
from tests.control_plane.builders import make_automation

pytestmark = pytest.mark.kafka


async def _all_pages(admin: httpx.AsyncClient, path: str, show: str = "name",
                     **params: Any) -> list[list[str]]:
    """Field `show` of each item, page by page, following next_cursor to the end."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        r = await admin.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append([x[show] for x in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_lists_are_paginated_and_filtered(admin: httpx.AsyncClient) -> None:
    for i in range(7):
        r = await admin.post("/v1/surveys", json={"name": f"Survey {i} {'NL' if i % 2 else 'BE'}"})
        assert r.status_code == 201
    pages = await _all_pages(admin, "/v1/surveys", limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sum(pages, []) == [f"Survey {i} {'NL' if i % 2 else 'BE'}" for i in range(7)]
    assert await _all_pages(admin, "/v1/surveys", name="nl") == [
        ["Survey 1 NL", "Survey 3 NL", "Survey 5 NL"]]
    assert await _all_pages(admin, "/v1/surveys", name="100%") == [[]]  # LIKE escaped
    bad = await admin.get("/v1/surveys", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"
    assert (await admin.get("/v1/surveys", params={"limit": 0})).status_code == 422

    await make_automation(admin, name="Orders NL", enabled=True)
    await make_automation(admin, name="Orders BE")  # created disabled
    a3 = await make_automation(admin, name="Returns", enabled=True)
    assert sum(await _all_pages(admin, "/v1/automations", limit=2), []) == [
        "Orders NL", "Orders BE", "Returns"]
    assert await _all_pages(admin, "/v1/automations", enabled="false") == [["Orders BE"]]
    assert await _all_pages(admin, "/v1/automations", name="orders", enabled="true") == [
        ["Orders NL"]]
    assert await _all_pages(admin, "/v1/automations", survey_id=a3["survey_id"]) == [
        ["Returns"]]
    msgs = await _all_pages(admin, "/v1/messages", limit=2)
    assert [len(p) for p in msgs] == [2, 1]


def _notifier_rows(db_url: str, automation_id: str, survey_id: str) -> None:
    """What the notifier would have stored: two respondents, three invitations."""
    migrate_notifier(db_url)
    now = datetime.now(UTC)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        ids = []
        for email in ("ada@example.com", "bob@example.com"):
            res = conn.execute(insert(Respondent.__table__).values(
                survey_id=survey_id, email=email, variables={"city": "Utrecht"},
                values_at=now, created_at=now, updated_at=now))
            ids.append(res.inserted_primary_key[0])
        for n, (rid, status, finished) in enumerate([
                (ids[0], "sent", now - timedelta(hours=1)),
                (ids[1], "failed", now - timedelta(hours=2)),
                (ids[0], "sent", now - timedelta(hours=30))]):  # older than a day
            conn.execute(insert(Invitation.__table__).values(
                id=f"inv-{n}", automation_id=automation_id, automation_version=1,
                survey_id=survey_id, survey_name="s", event_id=f"ev-{n}", record_index=0,
                respondent_id=rid, token=uuid.uuid4().hex, status=status,
                reason="550 no such mailbox" if status == "failed" else None,
                smtp_code=550 if status == "failed" else None, attempts=1,
                outcome_published=True, received_at=finished, due_at=finished,
                claimed_by="n1", claimed_at=finished,
                created_at=finished - timedelta(seconds=n), finished_at=finished))
    engine.dispose()


async def test_respondents_and_invitations(admin: httpx.AsyncClient, settings: Settings) -> None:
    a = await make_automation(admin, enabled=True)
    empty = await admin.get("/v1/invitations")  # the notifier has not created its tables yet
    assert empty.status_code == 200 and empty.json() == {"items": [], "next_cursor": None}
    _notifier_rows(settings.database_url, a["id"], a["survey_id"])

    r = await admin.get("/v1/respondents", params={"email": " ADA@example.com "})
    assert [x["email"] for x in r.json()["items"]] == ["ada@example.com"]
    assert r.json()["items"][0]["variables"] == {"city": "Utrecht"}
    assert [len(p) for p in await _all_pages(admin, "/v1/respondents", "email",
                                                     limit=1)] == [1, 1]

    pages = await _all_pages(admin, "/v1/invitations", "id", automation_id=a["id"],
                             limit=2)
    assert sum(pages, []) == ["inv-0", "inv-1", "inv-2"]  # newest first
    sent = (await admin.get("/v1/invitations", params={"status": "sent",
                                                       "email": "ada@example.com"})).json()
    assert [(x["id"], x["email"], x["status"]) for x in sent["items"]] == [
        ("inv-0", "ada@example.com", "sent"), ("inv-2", "ada@example.com", "sent")]
    failed = (await admin.get("/v1/invitations", params={"status": "failed"})).json()["items"]
    assert failed[0]["reason"] == "550 no such mailbox" and failed[0]["smtp_code"] == 550
    assert (await admin.get("/v1/invitations", params={"status": "lost"})).status_code == 422


async def _send(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None,
                                                                 list[tuple[str, bytes]]]]
                ) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


def _counts(automation_id: str, at: datetime, **n: Any) -> bytes:
    return codec.encode("AutomationCounts", {
        "automation_id": automation_id, "at": at, "accepted": n.get("accepted", 0),
        "filtered": n.get("filtered", 0), "failed": n.get("failed", 0),
        "invited": n.get("invited", 0), "filtered_by": n.get("filtered_by", {}),
        "failed_by": n.get("failed_by", {})})


async def test_outcomes_dead_letters_and_replay(admin: httpx.AsyncClient,
                                                settings: Settings) -> None:
    a = await make_automation(admin, enabled=True)
    aid, key = a["id"], a["id"].encode()
    topics = Topics(settings.topic_prefix)
    now = datetime.now(UTC)
    why = "age gte 18: wrong type: the value is a text, not a number"
    await _send(settings.kafka_bootstrap, topics.counts, [
        (key, _counts(aid, now - timedelta(minutes=5), accepted=5, filtered=2, failed=1,
                      invited=2, filtered_by={why: 2}, failed_by={"missing_email": 1}), []),
        (key, _counts(aid, now, accepted=2, filtered=1, invited=1,
                      filtered_by={"country eq 'NL': the field is missing": 1}), []),
        (key, _counts(aid, now - timedelta(hours=30), accepted=100, invited=100), []),  # old
        (b"other", _counts("other", now, accepted=9, invited=9), []),
    ])
    dlq_headers = [("content-type", b"application/json"), ("request-id", b"ev-9"),
                   ("received-at", b"1700000000000"), ("dlq-reason", b"missing_email"),
                   ("dlq-record-index", b"1"), ("dlq-at", b"1700000000001")]
    await _send(settings.kafka_bootstrap, topics.dlq, [
        (key, b'{"name": "no address"}', dlq_headers),
        (key, b'{"name": "no address either"}', [*dlq_headers[:4]]),
        (b"other", b"{}", dlq_headers)])
    _notifier_rows(settings.database_url, aid, a["survey_id"])

    async def outcomes() -> dict[str, Any]:
        for _ in range(100):
            body = (await admin.get(f"/v1/automations/{aid}/outcomes")).json()
            if body["accepted"] == 7 and body["dead_letters"] == 2:
                return body
            await asyncio.sleep(0.1)
        raise AssertionError(f"outcomes never added up: {body}")
    body = await outcomes()
    assert body["counts_complete"] is True
    assert [body[k] for k in ("accepted", "filtered", "failed", "invited", "mailed",
                              "mail_failed", "suppressed")] == [7, 3, 1, 3, 1, 1, 0]
    assert body["filtered_by"] == [{"reason": why, "count": 2},
                                   {"reason": "country eq 'NL': the field is missing",
                                    "count": 1}]
    assert body["failed_by"] == [{"reason": "missing_email", "count": 1}]
    assert (await admin.get("/v1/automations/nope/outcomes")).status_code == 404

    r = await admin.post(f"/v1/automations/{aid}/dead-letters/replay")
    assert r.status_code == 200 and r.json() == {"replayed": 2}
    raw = await _read_all(settings.kafka_bootstrap, topics.raw)
    assert [(r.key, r.value) for r in raw] == [(key, b'{"name": "no address"}'),
                                              (key, b'{"name": "no address either"}')]
    first = dict(raw[0].headers)
    assert first["request-id"] == b"ev-9" and first["record-index"] == b"1"
    assert not any(k.startswith("dlq-") for k in first)
    assert "record-index" not in dict(raw[1].headers)


async def _read_all(bootstrap: str, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(
            await _partitions(bootstrap, topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        while sum(ends.values()) > len(out):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out += records
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (desc,) = await admin.describe_topics([topic])
        return [p["partition"] for p in desc["partitions"]]
    finally:
        await admin.close()


async def test_waiting_invitations_by_email(admin: httpx.AsyncClient,
                                            settings: Settings) -> None:
    a = await make_automation(admin, delay_days=3)
    topics = Topics(settings.topic_prefix)
    missing = await admin.get(f"/v1/automations/{a['id']}/invitations/waiting",
                              params={"email": "ada@example.com"})
    assert missing.json() == {"items": [], "complete": True}  # no changelog topic yet

    client = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await client.start()
    try:
        await client.create_topics([NewTopic(topics.scheduler_changelog, 2, 1)])
    finally:
        await client.close()
    now = datetime.now(UTC)

    def invitation(inv_id: str, email: str, automation_id: str = a["id"]) -> bytes:
        return codec.encode("InvitationRequested", {
            "invitation_id": inv_id, "automation_id": automation_id, "automation_version": 1,
            "survey_id": a["survey_id"], "event_id": "ev", "record_index": 0, "email": email,
            "variables": {}, "received_at": now, "due_at": now + timedelta(days=3),
            "delay_days": 3})
    await _send(settings.kafka_bootstrap, topics.scheduler_changelog, [
        (b"i1", invitation("i1", "ada@example.com"), []),
        (b"i2", invitation("i2", "ada@example.com"), []),
        (b"i2", None, []),  # released
        (b"i3", invitation("i3", "bob@example.com"), []),
        (b"i4", invitation("i4", "ada@example.com", "another-automation"), []),
    ])
    r = await admin.get(f"/v1/automations/{a['id']}/invitations/waiting",
                        params={"email": "ADA@example.com"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["complete"] is True
    assert [x["invitation_id"] for x in body["items"]] == ["i1"]
    assert body["items"][0]["email"] == "ada@example.com"
