"""Streams fixtures: automation snapshots on the config topic, raw records, and the worker
as a real subprocess (`python -m streams`) on the test broker, stopped by pid."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import NewTopic

from automations.snapshot import (
    AutomationSnapshot,
    FieldMapping,
    MessageTemplate,
    Variable,
)
from core.kafka import clients
from core.kafka.topics import Topics, ensure_topics
from hookstream.local.kafka import free_port
from schemas import codec

ROOT = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fleet: several worker processes at once; `make fleet`, "
                            "deselected by `make test`")


def make_snapshot(automation_id: str = "auto-1", **changes: Any) -> AutomationSnapshot:
    """A small enabled automation: e-mail from `email`, three typed variables."""
    snap = AutomationSnapshot(
        id=automation_id, version=1, name="Test automation", survey_id="survey-1",
        survey_name="Survey", enabled=True,
        message=MessageTemplate("msg-1", "Invite", "Hi {{ name }}", "Hello {{ name }}"),
        variables=(Variable("name", "text"), Variable("age", "number"),
                   Variable("member", "boolean"), Variable("city", "text")),
        email_field="email", fields_mode="exclude", fields_paths=(),
        filters=None,
        mapping=(FieldMapping("name", "name"), FieldMapping("age", "age"),
                 FieldMapping("member", "member"), FieldMapping("address.city", "city"),
                 FieldMapping("note", None)),
        delay_days=0, error_notifications_enabled=True, error_recipients=("ops@example.com",),
        api_keys=(), updated_at=datetime.now(UTC))
    return replace(snap, **changes) if changes else snap


async def publish_snapshot(bootstrap: str, topics: Topics, snap: AutomationSnapshot) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topics.config,
                                     codec.encode("AutomationSnapshot", snap.to_record()),
                                     key=snap.id.encode())
    finally:
        await producer.stop()


def raw_headers(event_id: str, content_type: str = "application/json",
                received_at_ms: int | None = None,
                record_index: int | None = None) -> list[tuple[str, bytes]]:
    at = received_at_ms if received_at_ms is not None else int(time.time() * 1000)
    headers = [("content-type", content_type.encode()), ("received-at", str(at).encode()),
               ("request-id", event_id.encode())]
    if record_index is not None:
        headers.append(("record-index", str(record_index).encode()))
    return headers


@dataclass
class RawWebhook:
    automation_id: str
    body: bytes
    headers: list[tuple[str, bytes]]


def webhook(automation_id: str, payload: Any, event_id: str,
            content_type: str = "application/json", **kw: Any) -> RawWebhook:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return RawWebhook(automation_id, body, raw_headers(event_id, content_type, **kw))


async def create_topics(bootstrap: str, partitions: Mapping[str, int]) -> None:
    """Topics of a test's own loop (name: partitions), replication factor 1."""
    admin = clients.admin(bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, n, 1) for t, n in partitions.items()])
    finally:
        await admin.close()


async def produce_raw(bootstrap: str, topics: Topics, hooks: Iterable[RawWebhook]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                enable_idempotence=True)
    await producer.start()
    try:
        futures = [await producer.send(topics.raw, h.body, key=h.automation_id.encode(),
                                       headers=h.headers) for h in hooks]
        await producer.flush()
        for f in futures:
            f.result()
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, *, until: Callable[[list[ConsumerRecord]], bool],
                     timeout: float, on_record: Callable[[ConsumerRecord, float], None]
                     | None = None, settle: float = 0.0) -> list[ConsumerRecord]:
    """Read `topic` from the start (read_committed) until `until(records)` holds, then for
    `settle` seconds more (to catch duplicates); fail after `timeout`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, isolation_level="read_committed",
                                auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        partitions: set[int] | None = None
        deadline = time.monotonic() + timeout
        while not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} does not exist")
            if not partitions:
                await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        settle_until: float | None = None
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.time()
            for batch in batches.values():
                for r in batch:
                    records.append(r)
                    if on_record is not None:
                        on_record(r, now)
            mono = time.monotonic()
            if settle_until is None and until(records):
                settle_until = mono + settle
            if settle_until is not None and mono >= settle_until:
                return records
            if mono > deadline:
                raise TimeoutError(f"{topic}: condition not met after {timeout}s with "
                                   f"{len(records)} records")
    finally:
        await consumer.stop()


def decode_invitations(records: Iterable[ConsumerRecord]) -> list[dict[str, Any]]:
    return [codec.decode_as("InvitationRequested", r.value) for r in records]


def header_dict(r: ConsumerRecord) -> dict[str, bytes]:
    return dict(r.headers)


@dataclass
class Worker:
    """The streams worker as a subprocess; started, stopped and killed by its pid."""

    env: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _logs: list[Any] = field(default_factory=list)

    def start(self) -> None:
        log = self.log_path.open("ab")
        self._logs.append(log)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "--loglevel", "info"], cwd=ROOT, env=self.env,
            stdout=log, stderr=subprocess.STDOUT)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Until /readyz answers 200: config loaded, raw loop and scheduler assigned."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"worker exited with {self.proc.returncode}:\n"
                                         f"{self.log_tail()}")
                try:
                    r = await client.get(f"http://127.0.0.1:{self.port}/readyz")
                    if r.status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet: poll again
                await asyncio.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log_tail()}")

    async def probes(self) -> tuple[int, httpx.Response]:
        """The status of /healthz and the answer of /readyz."""
        async with httpx.AsyncClient(timeout=5.0) as client:
            live = await client.get(f"http://127.0.0.1:{self.port}/healthz")
            return live.status_code, await client.get(f"http://127.0.0.1:{self.port}/readyz")

    async def metrics(self) -> str:
        async with httpx.AsyncClient(timeout=5.0) as client:
            r = await client.get(f"http://127.0.0.1:{self.port}/metrics")
            r.raise_for_status()
            return r.text

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def peak_rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def close(self) -> None:
        self.stop()
        for log in self._logs:
            log.close()


def metric_value(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
async def stream_topics(kafka_bootstrap: str, topics: Topics) -> AsyncIterator[Topics]:
    await ensure_topics(kafka_bootstrap, topics, 3)
    yield topics


@pytest.fixture
def worker_factory(kafka_bootstrap: str, topic_prefix: str,
                   tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def make(day_seconds: float = 86400.0, **extra_env: str) -> Worker:
        env = dict(os.environ)
        env.update({
            "HOOKSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "HOOKSTREAM_TOPIC_PREFIX": topic_prefix,
            # Each worker its own state, as on its own machine.
            "HOOKSTREAM_VAR_DIR": str(tmp_path / f"var-{len(workers)}"),
            "HOOKSTREAM_WORKER_PORT": str(free_port()),
            "HOOKSTREAM_DAY_SECONDS": str(day_seconds),
            "HOOKSTREAM_TOPIC_PARTITIONS": "3",
            **extra_env,
        })
        w = Worker(env, int(env["HOOKSTREAM_WORKER_PORT"]),
                   tmp_path / f"worker-{len(workers)}.log")
        workers.append(w)
        return w

    yield make
    for w in workers:
        w.close()


class _NoConfig:
    """A config cache with no automation (for building a RawProcessor offline)."""

    def get(self, automation_id: str) -> None:
        return None

    def add_listener(self, listener: object) -> None:
        pass


@pytest.fixture
def offline_raw() -> Callable[..., Any]:
    """Builds a `RawProcessor` that never connects, to check how its loop is configured."""
    from streams.raw_loop import RawProcessor

    def build(**kw: Any) -> RawProcessor:
        return RawProcessor("127.0.0.1:1", Topics("t."), "g", _NoConfig(), 86400.0,  # type: ignore[arg-type]
                            **kw)
    return build
