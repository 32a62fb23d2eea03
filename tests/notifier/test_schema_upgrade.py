"""Schema evolution never strands a waiting invitation (issue 15, item 1).

An invitation is written with today's `InvitationRequested` and waits on the delay topic in the
scheduler. Then the upgrade: `InvitationRequested` gains an optional field (a change the
compatibility check accepts), today's version is kept in the history, and the scheduler and
the notifier restart on the new schema. The waiting invitation is released, decoded into the
new version (the new field at its default) and mailed exactly once. A record that still
cannot be decoded (a fingerprint no version has) goes to the dead-letter topic with its
reason, never skipped.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from core.kafka.topics import Topics
from core.settings import Settings
from hookstream.local.smtp_sink import SmtpSink
from notifier.app import Notifier
from schemas import codec
from streams.scheduler import Scheduler
from tests.notifier.conftest import FAST, Bus, invitation, make_snapshot, wait_for
from tests.streams.conftest import header_dict, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

_CACHED = (codec.parsed, codec.fingerprint, codec._by_fingerprint, codec._earlier)


def _point_codec_at(schema_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The codec as a process with the schemas of `schema_dir` has it (a restart)."""
    monkeypatch.setattr(codec, "SCHEMA_DIR", schema_dir)
    monkeypatch.setattr(codec, "HISTORY_DIR", schema_dir / "history")
    for cached in _CACHED:
        cached.cache_clear()


@pytest.fixture
def upgraded_schemas(tmp_path: Path) -> Iterator[Path]:
    """The schema folder after the upgrade: InvitationRequested with an optional `locale`,
    today's version kept in history/ under its fingerprint (what `tests.support.
    schema_history` writes when a schema changes)."""
    folder = tmp_path / "schemas-upgraded"
    shutil.copytree(codec.SCHEMA_DIR, folder, ignore=shutil.ignore_patterns("*.py",
                                                                            "__pycache__"))
    old = codec.load_schema_json("InvitationRequested")
    new = {**old, "fields": [*old["fields"], {"name": "locale", "type": ["null", "string"],
                                               "default": None}]}
    (folder / "InvitationRequested.avsc").write_text(json.dumps(new, indent=2))
    fp = codec.fingerprint("InvitationRequested").hex()
    (folder / "history" / f"InvitationRequested.{fp}.avsc").write_text(json.dumps(old))
    yield folder
    for cached in _CACHED:
        cached.cache_clear()  # monkeypatch restores the folders; the caches follow them


async def _scheduled(bootstrap: str, topics: Topics, records: list[tuple[bytes, bytes, int]]
                     ) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, due_ms in records:
            await producer.send_and_wait(topics.scheduled, value, key=key,
                                         headers=[("due-at", str(due_ms).encode())])
    finally:
        await producer.stop()


async def test_an_invitation_waiting_across_a_schema_upgrade_is_mailed_once(
        settings: Settings, topics: Topics, bus: Bus, smtp: SmtpSink, tmp_path: Path,
        upgraded_schemas: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bootstrap = settings.kafka_bootstrap
    snap = make_snapshot()
    await bus.snapshot(snap)
    state = tmp_path / "scheduler"
    group = f"scheduler-{uuid.uuid4().hex[:8]}"
    before = Scheduler(bootstrap, topics, group, state)
    await before.start()
    try:
        await asyncio.wait_for(before.loop.assigned.wait(), 60)
        due = datetime.now(UTC) + timedelta(seconds=8)
        req = invitation(snap, email="waiting@example.com", due_at=due, delay_days=1)
        value = codec.encode("InvitationRequested", req)  # before the upgrade
        # And one no version of the schema wrote: a fingerprint nobody knows.
        stranger = codec.MAGIC + bytes.fromhex("0123456789abcdef") + \
            value[codec.HEADER_LEN:]
        due_ms = int(due.timestamp() * 1000)
        await _scheduled(bootstrap, topics, [(req["invitation_id"].encode(), value, due_ms),
                                             (b"stranger", stranger, due_ms)])
        await wait_for(lambda: sum(s.count() for s in before.stores.values()) == 2,
                       timeout=30, what="both invitations waiting in the scheduler")
    finally:
        await before.stop()
    assert datetime.now(UTC) < due, "the machine was too slow: the invitation fell due early"

    # The upgrade: new schema files, scheduler and notifier restarted on them.
    _point_codec_at(upgraded_schemas, monkeypatch)
    assert codec.fingerprint("InvitationRequested") != value[2:codec.HEADER_LEN]
    after = Scheduler(bootstrap, topics, group, state)
    notifier = Notifier(settings, tuning=FAST, group_id=f"notifier-{uuid.uuid4().hex[:8]}",
                        migrate_db=False)
    await after.start()
    await notifier.start()
    try:
        await notifier.wait_running()
        outcomes = await bus.outcomes(1, timeout=40)
        assert [(o["invitation_id"], o["status"]) for o in outcomes] == \
            [(req["invitation_id"], "sent")]
        dlq = await read_topic(bootstrap, topics.dlq, until=lambda rs: len(rs) >= 1,
                               timeout=20)
        await asyncio.sleep(1.5)  # a duplicate would be out by now
        mails = smtp.messages()
        assert len(mails) == 1 and "waiting@example.com" in mails[0]["To"]
        assert len(await bus.outcomes(1, timeout=5)) == 1
    finally:
        await notifier.stop()
        await after.stop()

    assert len(dlq) == 1 and dlq[0].key == b"stranger"
    h = header_dict(dlq[0])
    assert h["dlq-reason"] == b"undecodable"
    assert h["dlq-source"] == b"notifier"
    assert h["dlq-topic"] == topics.due.encode()
    assert b"unknown schema fingerprint 0123456789abcdef" in h["dlq-detail"]
    assert dlq[0].value == stranger  # kept as it came, for a later version to read


def test_after_the_upgrade_old_and_new_messages_both_decode(
        upgraded_schemas: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snap = make_snapshot()
    req = invitation(snap)
    old_value = codec.encode("InvitationRequested", req)
    _point_codec_at(upgraded_schemas, monkeypatch)
    got = codec.decode_as("InvitationRequested", old_value)
    assert got["locale"] is None and got["email"] == req["email"]
    new_value = codec.encode("InvitationRequested", {**req, "locale": "nl"})
    assert codec.decode_as("InvitationRequested", new_value)["locale"] == "nl"
