"""The ingress assembled: its parts, their life cycle, and the Starlette app that routes to them.

Routes: `POST /v1/hooks/{automation_id}` (`webhook.Webhook`, the hot path, a raw ASGI app),
`POST /v1/hooks/{automation_id}/test` (`dry_run.DryRun`), `/healthz`, `/readyz` and
`/metrics` (`core.serving.probe_routes`; ready = configuration loaded and Kafka producer
connected), `/openapi.json`. Anything else is 404 `not_found`, a known path with another
method 405 `method_not_allowed` with `Allow`; both in the error body every answer uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from automations.config_cache import ConfigCache
from automations.signing import SecretBox
from automations.snapshot import AutomationSnapshot
from core.kafka.clients import ConnectGate, KafkaConnection
from core.kafka.plan import TopicGate
from core.kafka.topics import Topics
from core.serving import Failed, ProbeServer, probe_routes
from core.settings import Settings
from core.tasks import cancel_and_wait
from ingress.dry_run import DryRun
from ingress.errors import error_body
from ingress.idempotency import IdempotencyStore
from ingress.keys import KeyIndex
from ingress.metrics import UNKNOWN, IngressMetrics
from ingress.openapi import build_openapi
from ingress.publishing import KafkaPublisher, Publisher, PublisherPool
from ingress.publishing_rdkafka import RdKafkaPublisher
from ingress.ratelimit import Limiter, RateLimiter, SharedRateLimiter
from ingress.refusals import Refusals
from ingress.samples import SampleFeed
from ingress.signatures import SigningIndex
from ingress.webhook import Webhook

log = logging.getLogger(__name__)

HOOKS_PREFIX = "/v1/hooks/"
# The router's HTTPExceptions, as the ingress's error codes.
ROUTING_ERRORS = {404: "not_found", 405: "method_not_allowed"}


def build_publisher(settings: Settings, client: str | None = None) -> Publisher:
    """The Kafka publisher named by `client` (default: `settings.ingress_client`).

    rdkafka (confluent-kafka: batching and pipelining in C threads) is the default
    (bench/ingress.py ratio 0.63 against aiokafka's 0.51 in one session); aiokafka uses a
    pool of `ingress_producers`.
    """
    client = (client or settings.ingress_client).lower()
    timeout = settings.ingress_send_timeout_seconds
    kafka = KafkaConnection.from_settings(settings)
    # The largest body the ingress accepts, with its headers and framing.
    max_request = kafka.max_request_size
    if client == "rdkafka":
        return RdKafkaPublisher(kafka, timeout=timeout,
                                linger_ms=settings.ingress_linger_ms,
                                max_request_size=max_request)
    if client == "aiokafka":
        return PublisherPool([
            KafkaPublisher(kafka, timeout=timeout,
                           max_request_size=max_request)
            for _ in range(settings.ingress_producers)])
    raise ValueError(f"HOOKSTREAM_INGRESS_CLIENT must be 'rdkafka' or 'aiokafka', not {client!r}")


def build_limiter(settings: Settings) -> Limiter:
    """Buckets in PostgreSQL shared by the replicas when `ingress_rate_store_url` is set
    (issue 13), else this process's own."""
    local = RateLimiter(settings.rate_limit, settings.rate_burst)
    if settings.ingress_rate_store_url is None:
        return local
    return SharedRateLimiter(settings.ingress_rate_store_url, lease=settings.ingress_rate_lease,
                             fallback=local)


class IngressApp:
    """The ingress as one ASGI app. `startup`/`shutdown` run in its lifespan; a test driving
    it without one calls them itself."""

    def __init__(self, settings: Settings, *, publisher: Publisher | None = None,
                 cache: ConfigCache | None = None) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.topic_gate = TopicGate(settings)
        self.kafka = KafkaConnection.from_settings(settings)
        self.kafka_gate = ConnectGate(self.kafka, "the ingress")
        self.publisher: Publisher = publisher or build_publisher(settings)
        self.cache = cache or ConfigCache(self.kafka, self.topics.config)
        self.keys = KeyIndex()
        self.signing = SigningIndex(SecretBox(settings.secrets_key.get_secret_value()))
        self.refusals = Refusals(self.cache, self.kafka, self.topics.errors,
                                 settings.ingress_error_report_seconds)
        self.cache.add_listener(self._on_snapshot)
        self.limiter: Limiter = build_limiter(settings)
        self.idempotency = IdempotencyStore.from_settings(settings)
        self.metrics = IngressMetrics()
        self.openapi = orjson.dumps(build_openapi(settings))
        self._tasks: list[asyncio.Task[None]] = []
        webhook = Webhook(cache=self.cache, keys=self.keys, metrics=self.metrics,
                          max_body=settings.max_body_bytes, limiter=self.limiter,
                          rate=settings.rate_limit, burst=settings.rate_burst,
                          idempotency=self.idempotency, publisher=self.publisher,
                          topic=self.topics.raw, signing_index=self.signing,
                          tolerance=settings.signature_tolerance_seconds,
                          refusals=self.refusals, max_depth=settings.ingress_max_depth)
        self.samples = SampleFeed(self.kafka, self.topics.samples)
        self.dry_run_limiter = RateLimiter(settings.dry_run_rate, settings.dry_run_burst)
        dry_run = DryRun(cache=self.cache, keys=self.keys, metrics=self.metrics,
                         max_body=settings.max_body_bytes, samples=self.samples,
                         signing_index=self.signing,
                         tolerance=settings.signature_tolerance_seconds,
                         limiter=self.dry_run_limiter,
                         max_records=settings.dry_run_max_records,
                         max_depth=settings.ingress_max_depth)
        probes = probe_routes(self._readiness, registry=self.metrics.registry,
)
        # /metrics on an internal address of its own when one is set: the public address
        # then serves only the webhook routes and the probes.
        self.metrics_server: ProbeServer | None = None
        if settings.ingress_metrics_port is not None:
            probes = [r for r in probes if getattr(r, "path", None) != "/metrics"]
        hook_route = Route(webhook.route, webhook, methods=["POST"])
        self.asgi = Starlette(
            routes=[hook_route,
                    Route(dry_run.route, dry_run, methods=["POST"]),
                    *probes,
                    Route("/openapi.json", self._openapi, methods=["GET"])],
            exception_handlers={status: self._routing_error for status in ROUTING_ERRORS},
            lifespan=self._lifespan)
        # /v1/hooks/x/ is not /v1/hooks/x: a 404, not a redirect a webhook sender won't follow.
        self.asgi.router.redirect_slashes = False
        self._webhook = webhook
        self._hook_path = hook_route.path_regex

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The webhook's POST skips Starlette's middleware and router (their ~25 us a request
        # cost a tenth of the throughput; bench/README.md); it matches with the route's own
        # pattern, so both agree on what the route is. Everything else is Starlette's.
        path: str = scope.get("path", "")
        if path.startswith(HOOKS_PREFIX) and scope.get("raw_path") is not None and \
                scope["raw_path"].count(b"/") != path.count("/"):
            # A percent-encoded slash (`{id}%2Ftest`): routes are matched on the path as sent,
            # so it names no route here (decoded, it would reach another one).
            await self._not_found(scope, send)
            return
        if scope["type"] == "http" and scope["method"] == "POST":
            match = self._hook_path.match(path)
            if match is not None:
                scope["path_params"] = match.groupdict()
                await self._webhook(scope, receive, send)
                return
        await self.asgi(scope, receive, send)

    # --- configuration ---------------------------------------------------------------------

    def _on_snapshot(self, automation_id: str, snapshot: AutomationSnapshot | None) -> None:
        self.keys.update(automation_id, snapshot)
        self.signing.update(automation_id, snapshot)
        if snapshot is None:
            self.limiter.forget(automation_id)
            self.dry_run_limiter.forget(automation_id)
            self.metrics.forget(automation_id)
            self.refusals.forget(automation_id)

    @property
    def config_ready(self) -> bool:
        return self.cache.ready.is_set()

    # --- life cycle ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        # Blocking (connect, migrate, purge): on a thread, not the loop.
        await asyncio.to_thread(self.idempotency.open)
        if isinstance(self.limiter, SharedRateLimiter):
            await asyncio.to_thread(self.limiter.open)
        if self.settings.ingress_metrics_port is not None:
            self.metrics_server = await self._serve_metrics(self.settings.ingress_metrics_port)
        self._tasks.append(asyncio.create_task(self._connect(), name="ingress-connect"))
        self._tasks.append(asyncio.create_task(self.idempotency.purge_forever(),
                                               name="ingress-idempotency-purge"))
        self._tasks.append(asyncio.create_task(self.refusals.run_forever(),
                                               name="ingress-refusal-reports"))

    async def _serve_metrics(self, first: int) -> ProbeServer:
        """The internal /metrics server of this process: on `first`, or with several
        workers (`ingress_workers`) on the first free port of the workers' range, so
        worker k serves its own series on port first+k (their sum is the ingress's)."""
        workers = self.settings.ingress_workers
        for port in range(first, first + workers):
            server = ProbeServer(self.settings.ingress_metrics_host, port, self._readiness,
                                 name="ingress", registry=self.metrics.registry)
            try:
                await server.start()
            except OSError:
                if port == first + workers - 1:
                    raise  # every port of the range taken: say which address failed
                continue  # another worker's: try the next
            return server
        raise AssertionError("unreachable: the loop returns or raises")

    async def _connect(self) -> None:
        """Topics, producer and configuration; retried until Kafka answers (readyz says)."""
        await self.kafka_gate.wait()  # says once why Kafka cannot be reached, if it cannot
        delay = 0.5
        while True:
            try:
                # Creates what is missing, or (creation off) waits, not ready, until it exists.
                await self.topic_gate.wait()
                break
            except Exception as exc:  # noqa: BLE001 - any failure: log, wait, retry
                log.error("cannot create/check topics on %s yet: %s",
                          self.kafka, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        await self.publisher.start()
        while True:
            try:
                await self.cache.start(wait_ready=60)
                # Everything loaded so far (modules, app, clients, configuration) lives as
                # long as the process: out of the collector's sight, a full collection scans
                # only what came since (it scanned ~57,000 objects, 0.46 s on this loaded
                # machine: the stalls behind the p99; bench/README.md).
                gc.freeze()
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
        await self.refusals.stop()  # the last counts of refused requests
        await self.cache.stop()
        await self.samples.stop()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        await asyncio.to_thread(self.idempotency.close)
        if isinstance(self.limiter, SharedRateLimiter):
            self.limiter.close()

    # --- the small routes ------------------------------------------------------------------

    async def _readiness(self) -> dict[str, bool | Failed]:
        if not self.kafka_gate.ok:  # the first connection failed: the reason is in the body
            return {"kafka": self.kafka_gate.check(), "topics": False, "config_loaded": False,
                    "kafka_producer": False}
        producer = await self.publisher.probe()
        return {"topics": self.topic_gate.check(), "config_loaded": self.config_ready,
                "kafka_producer": producer}

    async def _openapi(self, _: Request) -> Response:
        return Response(self.openapi, media_type="application/json")

    async def _not_found(self, scope: Scope, send: Send) -> None:
        body = error_body("not_found")
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        self.metrics.request("other", 404)
        self.metrics.reject(UNKNOWN, "not_found")

    async def _routing_error(self, request: Request, exc: Exception) -> Response:
        """The router's 404 and 405, in the ingress's error body."""
        assert isinstance(exc, HTTPException)
        code = ROUTING_ERRORS[exc.status_code]
        headers = None
        if exc.status_code == 405 and exc.headers:
            # Starlette joins a set of methods: sort it, so the header is the same every time.
            allowed = sorted(m.strip() for m in exc.headers["Allow"].split(","))
            headers = {"Allow": ", ".join(allowed)}
        route = getattr(request.scope.get("route"), "path", "other")
        self.metrics.request(route, exc.status_code)
        if request.scope["path"].startswith(HOOKS_PREFIX):
            # Labelled _unknown: the id in such a path is unauthenticated (bounded cardinality).
            self.metrics.reject(UNKNOWN, code)
        return Response(error_body(code), status_code=exc.status_code,
                        media_type="application/json", headers=headers)


def create_app(settings: Settings, *, publisher: Publisher | None = None,
               cache: ConfigCache | None = None) -> IngressApp:
    """The ingress ASGI app; `publisher` replaces the Kafka publisher `settings` names."""
    return IngressApp(settings, publisher=publisher, cache=cache)
