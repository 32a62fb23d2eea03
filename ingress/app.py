"""The ingress: authenticate, bound, publish, answer. A plain ASGI app (no framework).

The webhook route is the hot path of the whole product, so it is written against ASGI
directly: one pass over the headers, the body read once with the size limit enforced while it
streams in, the body bytes published as received (never re-encoded), precomputed response
headers, orjson for the few bytes it answers. Everything else (health, metrics, OpenAPI, the
dry run) is small and rare.

Order of checks on `POST /v1/hooks/{id}`: configuration loaded (503 not_ready) -> a key is
given (401) -> the automation exists (404) -> the key opens it (401) -> enabled (409) ->
media type (415) -> declared size (413) -> body read within the limit (413) -> not empty
(400) -> Idempotency-Key replay -> rate limit (429) -> JSON shape (400) -> Kafka (503/202).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from automations.bodies import BodyError, media_type, parse_body
from automations.config_cache import ConfigCache
from automations.dry_run import dry_run
from automations.snapshot import AutomationSnapshot
from core.kafka.topics import Topics, ensure_topics
from core.settings import Settings
from core.tasks import cancel_and_wait
from ingress.errors import ERRORS, error_body
from ingress.idempotency import Claim, IdempotencyStore, Replay
from ingress.keys import KeyIndex
from ingress.metrics import CONTENT_TYPE_LATEST, UNKNOWN, IngressMetrics
from ingress.openapi import build_openapi
from ingress.publishing import KafkaPublisher, Publisher, PublisherPool, PublishUnavailable
from ingress.publishing_rdkafka import RdKafkaPublisher
from ingress.ratelimit import RateLimiter, retry_after_header
from ingress.samples import SampleFeed

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HOOK_ROUTE = "/v1/hooks/{automation_id}"
TEST_ROUTE = "/v1/hooks/{automation_id}/test"
PREFIX = "/v1/hooks/"
JSON_HEADERS = [(b"content-type", b"application/json")]
DEFAULT_CONTENT_TYPE = b"application/json"
MAX_IDEMPOTENCY_KEY = 255
BODY_CODES = {"empty": "empty_body"}
# aiokafka client only: producers used in turn (it has one produce request in flight per
# connection, so a second one halves the wait for the request ahead; more cost broker CPU).
PRODUCERS = int(os.environ.get("HOOKSTREAM_INGRESS_PRODUCERS", "2"))
# Kafka client: "rdkafka" (confluent-kafka: batching and pipelining in C threads; the
# default: bench/ingress.py ratio 0.63 against aiokafka's 0.51 in one session) or
# "aiokafka" (a pool of PRODUCERS). Read when the app is built, so a test can choose per app.
CLIENT_ENV = "HOOKSTREAM_INGRESS_CLIENT"
DEFAULT_CLIENT = "rdkafka"


def build_publisher(settings: Settings, send_timeout: float,
                    client: str | None = None) -> Publisher:
    """The Kafka publisher named by `client` (default: $HOOKSTREAM_INGRESS_CLIENT)."""
    client = (client or os.environ.get(CLIENT_ENV) or DEFAULT_CLIENT).lower()
    max_request = max(1024 * 1024, settings.max_body_bytes + 64 * 1024)
    if client == "rdkafka":
        return RdKafkaPublisher(settings.kafka_bootstrap, timeout=send_timeout,
                                linger_ms=settings.ingress_linger_ms,
                                max_request_size=max_request)
    if client == "aiokafka":
        return PublisherPool([
            KafkaPublisher(settings.kafka_bootstrap, timeout=send_timeout,
                           max_request_size=max_request)
            for _ in range(PRODUCERS)])
    raise ValueError(f"{CLIENT_ENV} must be 'rdkafka' or 'aiokafka', not {client!r}")


def new_event_id() -> str:
    """A random (version 4) UUID string, like str(uuid.uuid4()) at a fifth of its cost."""
    h = os.urandom(16).hex()
    return (f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-"
            f"{h[20:]}")  # parse_body's codes -> the ingress's public ones


class HttpError(Exception):
    """An answer other than success, raised anywhere in a handler."""

    def __init__(self, code: str, detail: str | None = None, *,
                 retry_after: float | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.status = ERRORS[code][0]
        self.detail = detail
        self.retry_after = retry_after


class IngressApp:
    def __init__(self, settings: Settings, *, publisher: Publisher | None = None,
                 cache: ConfigCache | None = None, send_timeout: float = 4.0) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.raw_topic = self.topics.raw
        self.publisher: Publisher = publisher or build_publisher(settings, send_timeout)
        self.cache = cache or ConfigCache(settings.kafka_bootstrap, self.topics.config)
        self.keys = KeyIndex()
        self.cache.add_listener(self._on_snapshot)
        self.samples = SampleFeed(settings.kafka_bootstrap, self.topics.samples)
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        self.idempotency = IdempotencyStore(
            settings.var_dir / "ingress-idempotency.sqlite3",
            settings.idempotency_window_seconds, stale_after=send_timeout + 10.0)
        self.metrics = IngressMetrics()
        self.max_body = settings.max_body_bytes
        self._too_large = (f"The body is larger than the limit of {self.max_body} bytes; "
                           "send fewer records per request.")
        self.openapi = orjson.dumps(build_openapi(settings))
        self._tasks: list[asyncio.Task[None]] = []
        self._cache_started = False

    # --- configuration ---------------------------------------------------------------------

    def _on_snapshot(self, automation_id: str, snapshot: AutomationSnapshot | None) -> None:
        self.keys.update(automation_id, snapshot)
        if snapshot is None:
            self.limiter.forget(automation_id)
            self.metrics.forget(automation_id)

    @property
    def config_ready(self) -> bool:
        return self.cache.ready.is_set()

    async def startup(self) -> None:
        self.idempotency.open()
        self._tasks.append(asyncio.create_task(self._connect(), name="ingress-connect"))
        self._tasks.append(asyncio.create_task(self.idempotency.purge_forever(),
                                               name="ingress-idempotency-purge"))

    async def _connect(self) -> None:
        """Topics, producer and configuration; retried until Kafka answers (readyz says)."""
        delay = 0.5
        while True:
            try:
                await asyncio.wait_for(ensure_topics(self.settings.kafka_bootstrap, self.topics,
                                                     self.settings.topic_partitions), 15)
                break
            except Exception as exc:  # noqa: BLE001 - any failure: log, wait, retry
                log.error("cannot create/check topics on %s yet: %s",
                          self.settings.kafka_bootstrap, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        await self.publisher.start()
        while True:
            try:
                await self.cache.start(wait_ready=60)
                self._cache_started = True
                return
            except Exception as exc:  # noqa: BLE001 - any failure: log, stop, retry
                log.error("cannot load automations from %s yet: %s", self.topics.config, exc)
                await self.cache.stop()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            await self.cache.ready.wait()
            while not self.publisher.ready:  # noqa: ASYNC110 - a property, no event to wait on
                await asyncio.sleep(0.05)

    async def shutdown(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        await self.publisher.stop()  # flushes what was sent and not yet acknowledged
        await self.cache.stop()
        await self.samples.stop()
        self.idempotency.close()

    # --- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith(PREFIX):
                rest = path[len(PREFIX):]
                if rest and "/" not in rest:
                    await self._hook(scope, receive, send, rest)
                    return
                if rest.endswith("/test") and rest.count("/") == 1 and len(rest) > 5:
                    await self._test(scope, receive, send, rest[:-5])
                    return
            await self._other(scope, receive, send, path)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("ingress start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    # --- responses -------------------------------------------------------------------------

    @staticmethod
    async def _respond(send: Send, status: int, body: bytes,
                       headers: list[tuple[bytes, bytes]] = JSON_HEADERS) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _error(self, send: Send, route: str, automation: str, err: HttpError) -> None:
        headers = JSON_HEADERS
        if err.retry_after is not None:
            headers = [*JSON_HEADERS, (b"retry-after", retry_after_header(err.retry_after))]
        elif err.status == 405:
            headers = [*JSON_HEADERS, (b"allow", b"POST")]
        await self._respond(send, err.status, error_body(err.code, err.detail), headers)
        self.metrics.request(route, err.status)
        self.metrics.reject(automation, err.code)

    # --- the webhook -----------------------------------------------------------------------

    async def _hook(self, scope: Scope, receive: Receive, send: Send, automation_id: str) -> None:
        label = automation_id
        try:
            if scope["method"] != "POST":
                raise HttpError("method_not_allowed")
            head = self._authenticate(scope, automation_id, require_enabled=True)
            body = await self._read_body(receive, head)
            if not body:
                raise HttpError("empty_body")
            if head.idempotency_key is None:
                status, answer = await self._accept(automation_id, head, body, None)
            else:
                status, answer = await self._accept_once(automation_id, head, body)
        except HttpError as err:
            if err.code == "unknown_automation":
                label = UNKNOWN
            await self._error(send, HOOK_ROUTE, label, err)
            return
        await self._respond(send, status, answer)
        self.metrics.request(HOOK_ROUTE, status)

    async def _accept_once(self, automation_id: str, head: _Head,
                           body: bytes) -> tuple[int, bytes]:
        key = head.idempotency_key
        assert key is not None
        try:
            outcome = await self.idempotency.begin(automation_id, key)
        except TimeoutError:
            raise HttpError("kafka_unavailable", "An earlier request with this Idempotency-Key "
                            "is still being stored; retry after Retry-After seconds.",
                            retry_after=1.0) from None
        if isinstance(outcome, Replay):
            self.metrics.replayed.inc()
            return outcome.status, outcome.body
        try:
            status, answer = await self._accept(automation_id, head, body, outcome)
        except BaseException:
            self.idempotency.release(outcome)  # not answered 202: the key may be retried
            raise
        self.idempotency.complete(outcome, status, answer)
        return status, answer

    async def _accept(self, automation_id: str, head: _Head, body: bytes,
                      claim: Claim | None) -> tuple[int, bytes]:
        wait = self.limiter.take(automation_id)
        if wait:
            raise HttpError("rate_limited", retry_after=wait)
        try:
            records = parse_body(body, head.content_type_str)
        except BodyError as exc:
            raise HttpError(BODY_CODES.get(exc.code, exc.code),
                            exc.detail[:1].upper() + exc.detail[1:] + ".") from None
        event_id = claim.event_id if claim is not None else new_event_id()
        headers = [("content-type", head.content_type or DEFAULT_CONTENT_TYPE),
                   ("received-at", str(time.time_ns() // 1_000_000).encode()),
                   ("request-id", event_id.encode())]
        if head.idempotency_key is not None:
            headers.append(("idempotency-key", head.idempotency_key.encode()))
        metrics = self.metrics
        metrics.publishing += 1
        started = time.perf_counter()
        try:
            await self.publisher.publish(self.raw_topic, head.key_bytes, body, headers)
        except PublishUnavailable as exc:
            raise HttpError("kafka_unavailable", retry_after=exc.retry_after) from None
        finally:
            metrics.publishing -= 1
        metrics.publish_seconds.observe(time.perf_counter() - started)
        metrics.accept(automation_id, len(records))
        return 202, b'{"event_id":"%s","accepted":%d}' % (event_id.encode(), len(records))

    # --- shared by the webhook and its test ------------------------------------------------

    def _authenticate(self, scope: Scope, automation_id: str, *,
                      require_enabled: bool) -> _Head:
        head = _Head(automation_id)
        authorization = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                head.api_key = value
            elif name == b"authorization":
                authorization = value
            elif name == b"content-type":
                head.content_type = value
            elif name == b"content-length":
                head.content_length = value
            elif name == b"idempotency-key":
                head.idempotency_raw = value
        if not self.config_ready:
            raise HttpError("not_ready", retry_after=1.0)
        if head.api_key is None and authorization is not None:
            scheme, _, token = authorization.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                head.api_key = token.strip()
            else:
                raise HttpError("missing_api_key", "The Authorization header must be "
                                "'Bearer KEY'; or send the key in X-API-Key.")
        if not head.api_key:
            raise HttpError("missing_api_key")
        snapshot = self.cache.get(automation_id)
        if snapshot is None:
            raise HttpError("unknown_automation")
        if not self.keys.check(automation_id, head.api_key.decode("latin-1")):
            raise HttpError("invalid_api_key")
        if require_enabled and not snapshot.enabled:
            detail = None
            if snapshot.disabled_reason:
                detail = (f"This automation is disabled ({snapshot.disabled_reason[:200]}); "
                          "enable it in the control plane to send it data.")
            raise HttpError("automation_disabled", detail)
        head.snapshot = snapshot
        if head.idempotency_raw is not None:
            raw = head.idempotency_raw
            if not 0 < len(raw) <= MAX_IDEMPOTENCY_KEY or not raw.isascii() or any(
                    c < 0x20 or c == 0x7F for c in raw):
                raise HttpError("invalid_idempotency_key")
            head.idempotency_key = raw.decode("ascii")
        return head

    async def _read_body(self, receive: Receive, head: _Head) -> bytes:
        """The whole body, refusing (413) as soon as it is known to exceed the limit."""
        if head.content_type is not None:
            try:
                media_type(head.content_type_str)
            except BodyError as exc:
                raise HttpError("unsupported_media_type",
                                exc.detail[:1].upper() + exc.detail[1:] + ".") from None
        limit = self.max_body
        if head.content_length is not None:
            try:
                declared = int(head.content_length)
            except ValueError:
                declared = -1
            if declared > limit:
                raise HttpError("body_too_large", self._too_large)
        message = await receive()
        chunk: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(chunk) > limit:
                raise HttpError("body_too_large", self._too_large)
            return chunk
        chunks = [chunk]
        size = len(chunk)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpError("empty_body", "The client went away before the body was "
                                "complete.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HttpError("body_too_large", self._too_large)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    # --- the dry run -----------------------------------------------------------------------

    async def _test(self, scope: Scope, receive: Receive, send: Send,
                    automation_id: str) -> None:
        label = automation_id
        head: _Head | None = None
        body: bytes | None = None
        try:
            if scope["method"] != "POST":
                raise HttpError("method_not_allowed")
            head = self._authenticate(scope, automation_id, require_enabled=False)
            body = await self._read_body(receive, head)
            snapshot = head.snapshot
            assert snapshot is not None
            answer: dict[str, Any] = {
                "ok": True,
                "automation": {"id": snapshot.id, "name": snapshot.name,
                               "enabled": snapshot.enabled, "survey": snapshot.survey_name},
            }
            if body.strip():
                try:
                    records = parse_body(body, head.content_type_str)
                except BodyError as exc:
                    raise HttpError(BODY_CODES.get(exc.code, exc.code),
                                    exc.detail[:1].upper() + exc.detail[1:] + ".") from None
                answer["dry_run"] = dry_run(snapshot, records)
                answer["published"] = False
            else:
                answer["detail"] = ("The connection works: the key opens this automation. "
                                    "Send a sample body to this address for a dry run.")
        except HttpError as err:
            if err.code == "unknown_automation":
                label = UNKNOWN
            await self._error(send, TEST_ROUTE, label, err)
            if head is not None and body is not None:  # authenticated: the console sees it
                await self.samples.publish(automation_id, head.content_type_str, body,
                                           err.status, {"error": err.code, "detail": err.detail})
            return
        await self._respond(send, 200, orjson.dumps(answer, default=str))
        self.metrics.request(TEST_ROUTE, 200)
        await self.samples.publish(automation_id, head.content_type_str, body, 200, answer)

    # --- health, metrics, OpenAPI ----------------------------------------------------------

    async def _other(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        method = scope["method"]
        if path.startswith(PREFIX):
            if method != "POST":
                await self._error(send, "other", UNKNOWN, HttpError("method_not_allowed"))
            else:
                await self._error(send, "other", UNKNOWN, HttpError("not_found"))
            return
        if method not in ("GET", "HEAD"):
            if path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
                await self._respond(send, 405, error_body("method_not_allowed"),
                                    [*JSON_HEADERS, (b"allow", b"GET")])
                self.metrics.request(path, 405)
                return
        if path == "/healthz":
            status, body, headers = 200, b'{"status":"ok"}', JSON_HEADERS
        elif path == "/readyz":
            producer = await self.publisher.probe()
            checks = {"config_loaded": self.config_ready, "kafka_producer": producer}
            ok = all(checks.values())
            status = 200 if ok else 503
            body = orjson.dumps({"ready": ok, "checks": checks})
            headers = JSON_HEADERS if ok else [*JSON_HEADERS, (b"retry-after", b"1")]
        elif path == "/metrics":
            status, body = 200, self.metrics.render()
            headers = [(b"content-type", CONTENT_TYPE_LATEST.encode())]
        elif path == "/openapi.json":
            status, body, headers = 200, self.openapi, JSON_HEADERS
        else:
            await self._respond(send, 404, error_body("not_found"))
            self.metrics.request("other", 404)
            return
        await self._respond(send, status, body, headers)
        self.metrics.request(path, status)


class _Head:
    """What a webhook request's headers said, read in one pass."""

    __slots__ = ("api_key", "automation_id", "content_length", "content_type",
                 "idempotency_key", "idempotency_raw", "snapshot")

    def __init__(self, automation_id: str) -> None:
        self.automation_id = automation_id
        self.api_key: bytes | None = None
        self.content_type: bytes | None = None
        self.content_length: bytes | None = None
        self.idempotency_raw: bytes | None = None
        self.idempotency_key: str | None = None
        self.snapshot: AutomationSnapshot | None = None

    @property
    def content_type_str(self) -> str | None:
        return None if self.content_type is None else self.content_type.decode("latin-1")

    @property
    def key_bytes(self) -> bytes:
        return self.automation_id.encode()


def create_app(settings: Settings, *, publisher: Publisher | None = None,
               cache: ConfigCache | None = None, send_timeout: float = 4.0) -> IngressApp:
    """The ingress ASGI app; `publisher` replaces Kafka publishing (the bench's baseline)."""
    return IngressApp(settings, publisher=publisher, cache=cache, send_timeout=send_timeout)
