"""Putting a webhook body on `webhooks.raw` and knowing Kafka has it.

`KafkaPublisher.publish` returns only after the broker acknowledged the record (acks=all,
idempotent producer) and raises `PublishUnavailable` within `timeout` seconds otherwise, so
the ingress answers 202 only for bodies that are on Kafka. Once a publish has failed, further
requests are refused at once (a circuit breaker) except one probe per `probe_interval`, so an
outage costs clients a fast 503 instead of a wait each; the first successful probe closes it.

A record that timed out may still reach Kafka later: the idempotent producer never drops a
batch it holds. That is at-least-once for a 503'd body; a retry with the same Idempotency-Key
is published under the same event id, so the streams make the same invitations of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from core.kafka import clients
from core.kafka.clients import Kafka

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class PublishUnavailable(Exception):
    """The record is not known to be on Kafka; answer 503 with Retry-After."""

    def __init__(self, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class RecordRejected(Exception):
    """Kafka refused this one record (larger than the topic or the producer admits, say),
    not the connection: this request fails (413 when too large) and the breaker is left
    alone, so every other automation's requests go on being accepted."""

    def __init__(self, reason: str, *, too_large: bool) -> None:
        super().__init__(reason)
        self.too_large = too_large


def record_rejected(exc: BaseException) -> RecordRejected | None:
    """The `RecordRejected` for a per-record produce error, else None."""
    if not clients.is_record_error(exc):
        return None
    text = f"{type(exc).__name__}: {exc}"
    return RecordRejected(text, too_large="SIZE" in text.upper() or "LARGE" in text.upper())


class Publisher(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    @property
    def ready(self) -> bool: ...
    async def probe(self) -> bool: ...
    async def publish(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None: ...


class Breaker:
    """The circuit breaker both publishers share: after a failed publish, requests get a 503
    at once except one probe per `probe_interval`; a write acknowledged again, or a /readyz
    probe that reaches the cluster, closes it. `log` is the publisher's own logger."""

    def __init__(self, probe_interval: float, log: logging.Logger) -> None:
        self.probe_interval = probe_interval
        self._log = log
        self._down_since: float | None = None
        self._next_probe = 0.0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    @property
    def probe_due(self) -> bool:
        """Down, but the next request would be let through as a probe."""
        return self._down_since is not None and time.monotonic() >= self._next_probe

    @property
    def down_for(self) -> float:
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    def gate(self) -> None:
        """Raise `PublishUnavailable` while down, unless this request is the due probe."""
        if self._down_since is not None:
            now = time.monotonic()
            if now < self._next_probe:
                raise PublishUnavailable("Kafka did not acknowledge recent writes")
            self._next_probe = now + self.probe_interval

    def mark_down(self, why: str) -> None:
        if self._down_since is None:
            self._log.error("publishing to Kafka failed (%s); answering 503 until a probe "
                            "succeeds", why)
            self._down_since = time.monotonic()
            self._next_probe = self._down_since + self.probe_interval

    def acknowledged(self) -> None:
        """A write was acknowledged: close the breaker (and say so) if it was open."""
        if self._down_since is not None:
            self._log.warning("Kafka acknowledges again after %.1fs", self.down_for)
            self._down_since = None

    def reset(self) -> None:
        """The cluster answers again: requests try again; a failure opens the breaker anew."""
        self._down_since = None

    def restart_period(self) -> None:
        """A new producer replaced the old one: give it a fresh rebuild period."""
        if self._down_since is not None:
            self._down_since = time.monotonic()


class KafkaPublisher:
    def __init__(self, bootstrap: Kafka, *, timeout: float = 4.0, linger_ms: int = 0,
                 compression: str | None = None, probe_interval: float = 0.5,
                 rebuild_after: float | None = None,
                 max_batch_size: int = 1024 * 1024, max_request_size: int = 8 * 1024 * 1024
                 ) -> None:
        self.bootstrap = bootstrap
        self.timeout = timeout
        self.linger_ms = linger_ms
        self.compression = compression
        self.breaker = Breaker(probe_interval, log)
        self.rebuild_after = 2 * timeout if rebuild_after is None else rebuild_after
        self.max_batch_size = max_batch_size
        self.max_request_size = max_request_size
        self._producer: AIOKafkaProducer | None = None
        self._restart_lock = asyncio.Lock()
        self._restart_task: asyncio.Task[None] | None = None

    def _new_producer(self) -> AIOKafkaProducer:
        # linger 0: aiokafka keeps one produce request in flight per broker, so records
        # arriving meanwhile batch by themselves; a linger only added latency (bench/ingress.py).
        return clients.producer(
            self.bootstrap, acks="all", enable_idempotence=True,
            linger_ms=self.linger_ms, compression_type=self.compression,
            max_batch_size=self.max_batch_size, max_request_size=self.max_request_size,
            request_timeout_ms=max(1000, int(self.timeout * 1000)), retry_backoff_ms=100)

    async def start(self) -> None:
        """Connect; when Kafka is not there yet, stay down and let probes connect later."""
        if not await self._connect():
            self.breaker.mark_down("could not connect at start")

    async def _connect(self) -> bool:
        async with self._restart_lock:
            if self._producer is not None:
                return True
            fresh = self._new_producer()
            try:
                await asyncio.wait_for(fresh.start(), self.timeout)
            except (KafkaError, TimeoutError, OSError) as exc:
                log.error("the Kafka producer could not connect to %s: %s", self.bootstrap, exc)
                await fresh.stop()
                return False
            self._producer = fresh
            return True

    async def _connect_quietly(self) -> None:
        await self._connect()  # logs its own failure; the next probe tries again

    async def probe(self) -> bool:
        """For /readyz: connect if needed; when down, check that the cluster answers again."""
        if self._producer is None and not await self._connect():
            return False
        producer = self._producer
        if producer is not None and self.breaker.down:
            try:
                ok = await asyncio.wait_for(producer.client.force_metadata_update(), 1.0)
            except (KafkaError, TimeoutError, OSError):
                return False
            if ok:
                self.breaker.reset()
        return self.ready

    async def stop(self) -> None:
        """Flush what is held (bounded by the send timeout), then close."""
        if self._restart_task is not None and not self._restart_task.done():
            self._restart_task.cancel()
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            await asyncio.wait_for(producer.flush(), self.timeout)
        except TimeoutError:
            log.error("could not flush the producer within %.1fs; records not yet acknowledged "
                      "were answered 503, never 202", self.timeout)
        finally:
            await producer.stop()

    @property
    def ready(self) -> bool:
        return self._producer is not None and not self.breaker.down

    @property
    def probe_due(self) -> bool:
        return self.breaker.probe_due

    @property
    def down_for(self) -> float:
        return self.breaker.down_for

    async def publish(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
        self.breaker.gate()
        producer = self._producer
        if producer is None:
            # Connect in the background: a slow broker must not stretch this answer past 5 s.
            self.breaker.mark_down("the producer is not connected")
            if self._restart_task is None or self._restart_task.done():
                self._restart_task = asyncio.create_task(self._connect_quietly())
            raise PublishUnavailable("the producer is not connected")
        try:
            async with asyncio.timeout(self.timeout):
                fut = await producer.send(topic, value, key=key, headers=headers)
                await fut
        except TimeoutError:
            self.breaker.mark_down("no acknowledgement within the send timeout")
            self._restart_if_dead()
            raise PublishUnavailable("Kafka did not acknowledge in time") from None
        except KafkaError as exc:
            if (rejected := record_rejected(exc)) is not None:
                raise rejected from exc  # this record only: the breaker stays as it is
            self.breaker.mark_down(f"{type(exc).__name__}: {exc}")
            self._restart_if_dead()
            raise PublishUnavailable(type(exc).__name__) from exc
        self.breaker.acknowledged()

    def _restart_if_dead(self) -> None:
        """Replace the producer when it cannot recover by itself.

        Two cases: a fatal error (e.g. a sequence gap) ended aiokafka's sender; or the breaker
        has been open longer than `rebuild_after` and probes still time out (seen here after
        a broker restart: the old producer kept retrying without delivering). Every record
        the old producer still holds was answered 503, so dropping it breaks no promise.
        Done in the background, so the request that noticed still gets its 503 in time.
        """
        producer = self._producer
        if producer is None or (self._restart_task and not self._restart_task.done()):
            return
        task = producer._sender.sender_task
        dead = task is None or task.done()
        if dead or self.down_for >= self.rebuild_after:
            why = "its sender stopped" if dead else f"no acknowledgement for {self.down_for:.1f}s"
            self._restart_task = asyncio.create_task(self._replace(producer, why))

    async def _replace(self, producer: AIOKafkaProducer, why: str) -> None:
        async with self._restart_lock:
            if self._producer is not producer:
                return  # already replaced
            log.error("replacing the Kafka producer (%s)", why)
            self._producer = None
        await self._discard(producer)
        if await self._connect():
            self.breaker.restart_period()

    async def _discard(self, producer: AIOKafkaProducer) -> None:
        """Close without flushing: what it holds was answered 503 (aiokafka's own stop()
        would wait for those records)."""
        producer._closed = True
        try:
            await asyncio.wait_for(producer._sender.close(), 2.0)
        except (TimeoutError, KafkaError) as exc:
            log.error("the old producer's sender did not stop cleanly: %r", exc)
        try:
            await asyncio.wait_for(producer.client.close(), 2.0)
        except (TimeoutError, KafkaError, OSError) as exc:
            log.error("the old producer's connections did not close cleanly: %r", exc)


class PublisherPool:
    """Several independent publishers, used in turn: more produce requests in flight.

    aiokafka keeps ONE produce request in flight per broker connection, so with a single
    producer every record waits for the request before it to be acknowledged (about 1.5
    round trips). Each member here is a full `KafkaPublisher` (own connection, own
    idempotent producer id, own breaker), so the durability and outage rules are the
    members': a 202 still means acks=all from that member, a dead broker still means a 503
    within its timeout. Records of concurrent requests carry no order promise, so spreading
    them over members changes nothing a client can rely on.
    """

    def __init__(self, members: list[KafkaPublisher]) -> None:
        if not members:
            raise ValueError("a publisher pool needs at least one member")
        self.members = members
        self._next = 0

    async def start(self) -> None:
        await asyncio.gather(*(m.start() for m in self.members))

    async def stop(self) -> None:
        await asyncio.gather(*(m.stop() for m in self.members))

    @property
    def ready(self) -> bool:
        return all(m.ready for m in self.members)

    async def probe(self) -> bool:
        results = await asyncio.gather(*(m.probe() for m in self.members))
        return all(results)

    async def publish(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
        members = self.members
        i = self._next
        self._next = (i + 1) % len(members)
        member = members[i]
        if not member.ready and not member.probe_due:
            # Prefer a healthy member; when none is, this one's breaker decides (503).
            for other in members:
                if other.ready:
                    member = other
                    break
        await member.publish(topic, key, value, headers)
