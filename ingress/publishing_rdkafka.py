"""The `Publisher` on librdkafka (confluent-kafka): the same promises as `KafkaPublisher`.

Why: aiokafka's Python send path cost ~100 us per request in the ingress process and kept one
produce request in flight per connection; librdkafka batches and pipelines in C threads.

How: `produce()` is called on the event loop (it only queues the record) and the delivery
reports are served there too (`poll(0)`, see `_Client`), resolving the request's future.
A 202 is only given for a delivery report without error (acks=all, idempotent producer).
`message.timeout.ms` bounds how long librdkafka tries, and the pump fails any future still
open after `timeout` (one deadline queue instead of a timer per request, which cost ~4% of
the ingress's CPU), so an outage gives a 503 within `timeout` seconds. The breaker
is the shared `Breaker` (publishing.py): after a failure, requests get a 503 at once except
one probe per `probe_interval`.

A record that timed out on our side may still reach Kafka (at-least-once for a 503'd body,
as with aiokafka; see publishing.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from core.kafka import clients
from core.kafka.clients import Kafka
from ingress.publishing import Breaker, Headers, PublishUnavailable, record_rejected

log = logging.getLogger(__name__)

# s between polls while records await their delivery report. 0.25 ms answered sooner but
# spent what it saved on ticks (bench/ingress.py: no gain); 1 ms it is.
PUMP_INTERVAL = 0.001


class _Client:
    """One librdkafka producer whose delivery reports are served on the event loop.

    `poll(0)` runs after each produce and, while records are pending, on a timer (`_pump`)
    every PUMP_INTERVAL: the callbacks then run in the loop's thread and resolve the futures
    directly. (A poll thread blocking in `poll()` was measured no faster: it must win the GIL
    back from a busy loop, and its hand-over costs a loop wake-up.) The same tick fails the
    futures whose deadline passed: `_deadlines` is in send order, so only its head needs
    looking at.
    """

    def __init__(self, kafka: Kafka, config: dict[str, Any], loop: asyncio.AbstractEventLoop,
                 on_fatal: Any, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.fatal: str | None = None
        self._on_fatal = on_fatal
        self.producer = clients.rdkafka_producer(kafka, {**config, "error_cb": self._error})
        self.pending = 0
        self._deadlines: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._tick: asyncio.TimerHandle | None = None  # the pump, armed while records wait
        self._closed = False

    def _error(self, err: KafkaError) -> None:
        # Transport errors are normal during an outage (the delivery reports say what
        # matters); a fatal one means this producer can never deliver again.
        if err.fatal():
            self.fatal = err.str()
            log.error("the Kafka producer hit a fatal error: %s", err.str())
            self.loop.call_soon_threadsafe(self._on_fatal, self)
        else:
            log.warning("Kafka producer: %s", err.str())

    def delivered(self, fut: asyncio.Future[None], err: KafkaError | None, _msg: Any) -> None:
        self.pending -= 1
        if fut.done():
            return  # the request gave up (timeout); its 503 is already sent
        if err is None:
            fut.set_result(None)
        else:
            # A per-record error (the topic's max.message.bytes, say) fails this request only.
            rejected = record_rejected(KafkaException(err))
            fut.set_exception(rejected if rejected is not None
                              else PublishUnavailable(err.name()))

    def produce(self, topic: str, key: bytes, value: bytes,
                headers: Headers) -> asyncio.Future[None]:
        """Queue one record; the future resolves on its delivery report or its deadline."""
        fut = self.loop.create_future()
        self.producer.produce(topic, value, key, headers=headers,
                              on_delivery=partial(self.delivered, fut))
        self.pending += 1
        # Serve the reports that are ready now: under load that answers earlier requests
        # sooner than the next tick would (p99 15 ms against 21 ms in bench/ingress.py).
        self.producer.poll(0)
        self._deadlines.append((time.monotonic() + self.timeout, fut))
        if self._tick is None and not self._closed:
            self._tick = self.loop.call_later(PUMP_INTERVAL, self._pump)
        return fut

    def expire(self, now: float) -> None:
        """Drop answered futures from the head of the deadline queue; fail the overdue."""
        deadlines = self._deadlines
        while deadlines:
            deadline, fut = deadlines[0]
            if not fut.done():
                if deadline > now:
                    return
                fut.set_exception(PublishUnavailable("Kafka did not acknowledge in time"))
            deadlines.popleft()

    def _pump(self) -> None:
        """Serve delivery reports and deadlines; re-arm while anything waits. A plain timer
        callback, not a task: a tick is then a poll and a heap push, nothing more."""
        self._tick = None
        try:
            self.producer.poll(0)
        except Exception:  # noqa: BLE001 - a callback failed: log it, keep serving
            log.exception("serving Kafka delivery reports failed")
        self.expire(time.monotonic())
        if (self.pending > 0 or self._deadlines) and not self._closed:
            self._tick = self.loop.call_later(PUMP_INTERVAL, self._pump)

    async def close(self, timeout: float, *, purge: bool = False) -> int:
        """Deliver (or purge) what is held, serving its reports; returns how many records
        were still held at the end."""
        if purge:
            self.producer.purge()  # their delivery reports carry _PURGE_QUEUE/_PURGE_INFLIGHT
        deadline = time.monotonic() + (0.5 if purge else timeout)
        while self.pending > 0 and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded
            await asyncio.sleep(0.005)  # the pump polls meanwhile
        self._closed = True
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        self.producer.poll(0)
        self.expire(float("inf"))  # nobody serves reports any more: answer the rest 503
        return len(self.producer)


class RdKafkaPublisher:
    def __init__(self, bootstrap: Kafka, *, timeout: float = 4.0, linger_ms: float = 0.5,
                 probe_interval: float = 0.5, rebuild_after: float | None = None,
                 max_request_size: int = 8 * 1024 * 1024) -> None:
        self.bootstrap = bootstrap
        self.timeout = timeout
        self.breaker = Breaker(probe_interval, log)
        self.rebuild_after = 3 * timeout if rebuild_after is None else rebuild_after
        timeout_ms = max(1000, int(timeout * 1000))
        # Under the connection's own properties (bootstrap, security, client.id).
        self.config: dict[str, Any] = {
            "acks": "all",
            "enable.idempotence": True,
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": linger_ms,
            # librdkafka fails a record it could not deliver in this time: part of the
            # "503 within 5 s" promise (the deadline queue in _Client is the other part).
            "message.timeout.ms": timeout_ms,
            "request.timeout.ms": timeout_ms,
            "socket.timeout.ms": timeout_ms,
            "socket.connection.setup.timeout.ms": timeout_ms,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            "retry.backoff.ms": 100,
            "message.max.bytes": max_request_size,
            # Java's (and aiokafka's) key hashing: an automation's records land on the same
            # partition whichever client wrote them.
            "partitioner": "murmur2_random",
        }
        self._client: _Client | None = None
        self._lock = asyncio.Lock()
        self._rebuild: asyncio.Task[None] | None = None

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect; when Kafka is not there yet, stay down and let probes connect later."""
        if not await self._connect():
            self.breaker.mark_down("could not connect at start")

    async def _connect(self) -> bool:
        async with self._lock:
            if self._client is not None:
                return True
            client = _Client(self.bootstrap, self.config, asyncio.get_running_loop(), self._fatal,
                             self.timeout)
            if not await self._reachable(client, self.timeout):
                await client.close(0.5, purge=True)
                return False
            self._client = client
            return True

    async def _reachable(self, client: _Client, timeout: float) -> bool:
        try:
            await asyncio.to_thread(client.producer.list_topics, None, timeout)
        except KafkaException as exc:
            log.error("Kafka at %s does not answer: %s", self.bootstrap, exc)
            return False
        return True

    async def stop(self) -> None:
        """Deliver what is held (bounded by the send timeout), then close."""
        if self._rebuild is not None and not self._rebuild.done():
            self._rebuild.cancel()
        client, self._client = self._client, None
        if client is None:
            return
        left = await client.close(self.timeout)
        if left:
            log.error("%d records were not acknowledged before shutdown; they were answered "
                      "503, never 202", left)

    @property
    def ready(self) -> bool:
        return self._client is not None and not self.breaker.down

    async def probe(self) -> bool:
        """For /readyz: connect if needed; when down, check that the cluster answers again."""
        if self._client is None and not await self._connect():
            return False
        client = self._client
        if client is not None and self.breaker.down and client.fatal is None:
            if await self._reachable(client, 1.0):
                self.breaker.reset()
        return self.ready

    # --- publishing ------------------------------------------------------------------------

    async def publish(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
        self.breaker.gate()
        client = self._client
        if client is None or client.fatal is not None:
            self.breaker.mark_down("the producer is not connected")
            self._start_rebuild(client, "it is not connected")
            raise PublishUnavailable("the producer is not connected")
        try:
            fut = client.produce(topic, key, value, headers)
        except BufferError:
            self.breaker.mark_down("the producer's queue is full")
            raise PublishUnavailable("the producer's queue is full") from None
        except KafkaException as exc:
            if (rejected := record_rejected(exc)) is not None:
                raise rejected from exc  # this record only: the breaker stays as it is
            self.breaker.mark_down(str(exc))
            raise PublishUnavailable(str(exc)) from exc
        try:
            await fut
        except PublishUnavailable as exc:
            self._failed(client, f"delivery failed: {exc}")
            raise
        self.breaker.acknowledged()

    def _failed(self, client: _Client, why: str) -> None:
        self.breaker.mark_down(why)
        down_for = self.breaker.down_for
        if down_for >= self.rebuild_after:
            self._start_rebuild(client, f"no acknowledgement for {down_for:.1f}s")

    def _fatal(self, client: _Client) -> None:
        self.breaker.mark_down(f"fatal producer error: {client.fatal}")
        self._start_rebuild(client, "a fatal error")

    def _start_rebuild(self, client: _Client | None, why: str) -> None:
        """Replace the producer in the background (the request that noticed gets its 503 in
        time). Whatever the old one holds was answered 503, so purging it breaks no promise."""
        if self._rebuild is not None and not self._rebuild.done():
            return
        self._rebuild = asyncio.create_task(self._replace(client, why))

    async def _replace(self, client: _Client | None, why: str) -> None:
        async with self._lock:
            if self._client is not client:
                return  # already replaced
            self._client = None
        if client is not None:
            log.error("replacing the Kafka producer (%s)", why)
            await client.close(0.5, purge=True)
        if await self._connect():
            self.breaker.restart_period()
