"""Ingress fixtures: automations published straight onto the config topic, the app in-process
(httpx over ASGI) or served in its own process on a free port, and reading `webhooks.raw` back.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from automations.snapshot import (
    ApiKeyHash,
    AutomationSnapshot,
    FieldMapping,
    MessageTemplate,
    Variable,
)
from core.kafka import clients
from core.kafka.clients import Kafka
from core.kafka.topics import Topics, ensure_topics
from core.settings import Settings
from hookstream.local.kafka import free_port
from ingress.app import IngressApp, create_app
from schemas import codec

ROOT = Path(__file__).resolve().parents[2]


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return secrets.token_urlsafe(32)


def make_snapshot(automation_id: str | None = None, *, keys: list[ApiKeyHash],
                  enabled: bool = True, version: int = 1, name: str = "Welcome survey",
                  disabled_reason: str | None = None) -> AutomationSnapshot:
    """An automation taking in email, name, age and customer.*, filtering on country NL."""
    return AutomationSnapshot(
        id=automation_id or str(uuid.uuid4()), version=version, name=name,
        survey_id="s1", survey_name="Customer satisfaction", enabled=enabled,
        disabled_reason=disabled_reason,
        message=MessageTemplate("m1", "Invite", "Hello {{ first_name }}", "Link {{ survey_link }}"),
        variables=(Variable("first_name", "text"), Variable("age", "number"),
                   Variable("city", "text")),
        email_field="email", fields_mode="include",
        fields_paths=("email", "first_name", "age", "customer", "country"),
        filters={"all": [{"field": "country", "op": "eq", "value": "NL"}]},
        mapping=(FieldMapping("first_name", "first_name"), FieldMapping("age", "age"),
                 FieldMapping("customer.city", "city"), FieldMapping("country", None)),
        delay_days=0, error_notifications_enabled=False, error_recipients=(),
        api_keys=tuple(keys), updated_at=datetime.now(UTC))


async def publish_snapshots(bootstrap: Kafka, topics: Topics, *snaps: AutomationSnapshot) -> None:
    producer = clients.producer(bootstrap, acks="all")
    await producer.start()
    try:
        for s in snaps:
            await producer.send_and_wait(topics.config, codec.encode("AutomationSnapshot",
                                                                      s.to_record()),
                                         key=s.id.encode())
    finally:
        await producer.stop()


@dataclass
class RawRecord:
    key: str
    value: bytes
    headers: dict[str, bytes]


async def read_raw(bootstrap: str, topic: str, *, at_least: int = 0,
                   timeout: float = 30.0) -> list[RawRecord]:
    """Every record on `topic` up to its end offsets (waiting until there are `at_least`)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            parts = consumer.partitions_for_topic(topic)
            if parts:
                tps = [TopicPartition(topic, p) for p in sorted(parts)]
                end = await consumer.end_offsets(tps)
                if sum(end.values()) >= at_least:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic} has fewer than {at_least} records")
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.2)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[RawRecord] = []
        remaining = {tp: off for tp, off in end.items() if off > 0}
        while remaining:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic} did not reach its end in time")
            batches = await consumer.getmany(timeout_ms=500, max_records=20000)
            for tp, recs in batches.items():
                for r in recs:
                    if r.offset < end[tp]:
                        out.append(RawRecord(r.key.decode(), r.value,
                                             {k: v for k, v in r.headers}))
                if recs and recs[-1].offset + 1 >= end[tp]:
                    remaining.pop(tp, None)
        return out
    finally:
        await consumer.stop()


@dataclass
class Ingress:
    app: IngressApp
    client: httpx.AsyncClient
    settings: Settings
    topics: Topics
    bootstrap: str
    automation: AutomationSnapshot
    key: str
    extra: dict[str, Any] = field(default_factory=dict)

    def url(self, automation_id: str | None = None, test: bool = False) -> str:
        return f"/v1/hooks/{automation_id or self.automation.id}" + ("/test" if test else "")

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"X-API-Key": key or self.key}


async def start_app(settings: Settings, **kw: Any) -> tuple[IngressApp, httpx.AsyncClient]:
    app = create_app(settings, **kw)
    await app.startup()
    await app.wait_ready(60)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress",
                               timeout=30)
    return app, client


def settings_for(bootstrap: str, topics: Topics, var_dir: Path, **kw: Any) -> Settings:
    return Settings(kafka_bootstrap=bootstrap, topic_prefix=topics.prefix, var_dir=var_dir,
                    topic_partitions=2, **kw)


@pytest.fixture
async def ingress(kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> AsyncIterator[Ingress]:
    """The app in-process over ASGI, with one enabled automation and its key."""
    await ensure_topics(kafka_bootstrap, topics, 2)
    key = new_key()
    snap = make_snapshot(keys=[ApiKeyHash(sha(key))])
    await publish_snapshots(kafka_bootstrap, topics, snap)
    settings = settings_for(kafka_bootstrap, topics, tmp_path)
    app, client = await start_app(settings)
    try:
        yield Ingress(app, client, settings, topics, kafka_bootstrap, snap, key)
    finally:
        await client.aclose()
        await app.shutdown()


def grace_keys(current: str, in_grace: str, expired: str) -> list[ApiKeyHash]:
    now = datetime.now(UTC)
    return [ApiKeyHash(sha(current)),
            ApiKeyHash(sha(in_grace), now + timedelta(hours=1)),
            ApiKeyHash(sha(expired), now - timedelta(seconds=1))]


class ServedIngress:
    """`hookstream ingress` in its own process (granian), stopped by pid."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env = env
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hookstream.cli", "ingress", "--port", str(self.port)],
            env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ingress exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"ingress not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self, timeout: float = 20.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its worker
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        return proc.returncode


@pytest.fixture
def served_env(kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HOOKSTREAM_") or k == "HOOKSTREAM_INGRESS_CLIENT"}
    env.update({"HOOKSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
                "HOOKSTREAM_TOPIC_PREFIX": topics.prefix,
                "HOOKSTREAM_VAR_DIR": str(tmp_path / "var"),
                "HOOKSTREAM_TOPIC_PARTITIONS": "2",
                "HOOKSTREAM_RATE_LIMIT": "100000", "HOOKSTREAM_RATE_BURST": "100000",
                "HOOKSTREAM_LOG_LEVEL": "WARNING"})
    return env


@pytest.fixture
def served(served_env: dict[str, str], tmp_path: Path) -> Iterator[ServedIngress]:
    server = ServedIngress(served_env, free_port(), tmp_path / "ingress.log")
    try:
        yield server
    finally:
        server.stop()
