"""Notifier fixtures: a real aiosmtpd server (with scripted refusals), a migrated SQLite
database, settings pointing at both, and helpers to publish and read the notifier's topics."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import SecretStr

from automations.snapshot import AutomationSnapshot, FieldMapping, MessageTemplate, Variable
from core.kafka.topics import Topics, ensure_topics
from core.settings import Settings
from hookstream.local.kafka import free_port
from hookstream.local.smtp_sink import EmlWriter, SmtpSink
from notifier.app import Notifier
from notifier.invitations import Tuning
from notifier.migrations import migrate
from schemas import codec

ADMIN_TOKEN = "notifier-test-admin-token"
FAST = Tuning(backoff_base=0.05, backoff_max=0.4, unknown_automation_wait=2.0,
              busy_poll=0.05, commit_interval=0.1)


class ScriptedHandler(EmlWriter):
    """Writes .eml files like the sink, but answers RCPT TO from a script first:
    `always[address]` is answered every time, `script[address]` once per entry."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.always: dict[str, str] = {}
        self.script: dict[str, deque[str]] = {}

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address in self.always:
            return self.always[address]
        queue = self.script.get(address)
        if queue:
            return queue.popleft()
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpSink]:
    sink = SmtpSink(tmp_path / "mail", handler=ScriptedHandler(tmp_path / "mail")).start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/hookstream.db"
    migrate(url)
    return url


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "disable_after(n): the notifier's HOOKSTREAM_DISABLE_AFTER")


@pytest.fixture
def settings(request: pytest.FixtureRequest, kafka_bootstrap: str, topic_prefix: str,
             db_url: str, smtp: SmtpSink) -> Settings:
    marker = request.node.get_closest_marker("disable_after")
    admin_port = free_port()
    return Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, topic_partitions=2,
        database_url=db_url, smtp_url=SecretStr(smtp.url), admin_token=SecretStr(ADMIN_TOKEN),
        admin_url=f"http://127.0.0.1:{admin_port}", admin_port=admin_port,
        survey_base_url=f"http://127.0.0.1:{admin_port}/s", alert_interval_seconds=0.6,
        disable_after=marker.args[0] if marker else 10, smtp_concurrency=4,
        notifier_port=free_port())


@pytest_asyncio.fixture
async def notifier(settings: Settings, topics: Topics) -> AsyncIterator[Notifier]:
    await ensure_topics(settings.kafka_bootstrap, topics, settings.topic_partitions)
    n = Notifier(settings, tuning=FAST, group_id=f"notifier-{uuid.uuid4().hex[:8]}",
                 migrate_db=False)
    await n.start()
    try:
        await n.wait_running()
        yield n
    finally:
        await n.stop()


def make_snapshot(automation_id: str | None = None, **changes: Any) -> AutomationSnapshot:
    snap = AutomationSnapshot(
        id=automation_id or f"auto-{uuid.uuid4().hex[:8]}", version=1, name="Webshop orders",
        survey_id="survey-1", survey_name="Customer satisfaction", enabled=True,
        message=MessageTemplate("msg-1", "Invite", "Your opinion, {{ name }}",
                                "Dear {{ name }} from {{ city }},\n\nPlease answer: "
                                "{{ survey_link }}\n"),
        variables=(Variable("name", "text"), Variable("city", "text"),
                   Variable("age", "number")),
        email_field="email", fields_mode="exclude", fields_paths=(), filters=None,
        mapping=(FieldMapping("name", "name"), FieldMapping("city", "city"),
                 FieldMapping("age", "age")),
        delay_days=0, error_notifications_enabled=True,
        error_recipients=("ops@example.com", "lead@example.com"), api_keys=(),
        updated_at=datetime.now(UTC))
    return replace(snap, **changes) if changes else snap


def invitation(snap: AutomationSnapshot, email: str = "bob@example.com",
               variables: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    req = {"invitation_id": str(uuid.uuid4()), "automation_id": snap.id,
           "automation_version": snap.version, "survey_id": snap.survey_id,
           "event_id": uuid.uuid4().hex, "record_index": 0, "email": email,
           "variables": variables if variables is not None else
           {"name": "Bob", "city": "Utrecht", "age": 42},
           "received_at": now, "due_at": now, "delay_days": 0}
    req.update(changes)
    return req


def automation_error(automation_id: str, kind: str = "type_mismatch",
                     field: str | None = "age") -> dict[str, Any]:
    return {"error_id": str(uuid.uuid4()), "automation_id": automation_id, "kind": kind,
            "detail": f"The value of {field} does not fit the variable's type number.",
            "source": "streams", "field": field, "event_id": uuid.uuid4().hex,
            "record_index": 0, "invitation_id": None, "at": datetime.now(UTC)}


class Bus:
    """Publish onto and read from the test's topics."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                          enable_idempotence=True)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def snapshot(self, snap: AutomationSnapshot) -> None:
        assert self._producer is not None
        await self._producer.send_and_wait(
            self.topics.config, codec.encode("AutomationSnapshot", snap.to_record()),
            key=snap.id.encode())

    async def tombstone(self, automation_id: str) -> None:
        """The automation's deletion on the config topic (as the control plane writes it)."""
        assert self._producer is not None
        await self._producer.send_and_wait(self.topics.config, None,
                                           key=automation_id.encode())

    async def due(self, req: dict[str, Any]) -> None:
        assert self._producer is not None
        await self._producer.send_and_wait(
            self.topics.due, codec.encode("InvitationRequested", req),
            key=req["invitation_id"].encode())

    async def error(self, err: dict[str, Any]) -> None:
        assert self._producer is not None
        await self._producer.send_and_wait(
            self.topics.errors, codec.encode("AutomationError", err),
            key=err["automation_id"].encode())

    async def errors(self, errs: list[dict[str, Any]]) -> None:
        """Many at once (a flood): sent together, then all acknowledged."""
        assert self._producer is not None
        futures = [await self._producer.send(
            self.topics.errors, codec.encode("AutomationError", e),
            key=e["automation_id"].encode()) for e in errs]
        await asyncio.gather(*futures)

    async def read(self, topic: str, schema: str, until: Callable[[list[dict]], bool],
                   timeout: float = 20.0) -> list[dict[str, Any]]:
        """Every record of `topic` from the start, until `until(records)` holds."""
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=self.bootstrap, group_id=None,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=50,
                                    isolation_level="read_committed")
        await consumer.start()
        out: list[dict[str, Any]] = []
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while not until(out):
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"timed out reading {topic}; got {out}")
                batches = await consumer.getmany(timeout_ms=100)
                for records in batches.values():
                    out.extend(codec.decode_as(schema, r.value) for r in records)
        finally:
            await consumer.stop()
        return out

    async def outcomes(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        return await self.read(self.topics.outcomes, "InvitationOutcome",
                               lambda xs: len(xs) >= n, timeout)


@pytest_asyncio.fixture
async def bus(kafka_bootstrap: str, topics: Topics) -> AsyncIterator[Bus]:
    await ensure_topics(kafka_bootstrap, topics, 2)
    b = Bus(kafka_bootstrap, topics)
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


async def wait_for(predicate: Callable[[], Any], timeout: float = 20.0,
                   what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy (and return that)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
