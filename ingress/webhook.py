"""`POST /v1/hooks/{automation_id}`: the hot path of the whole product.

Written against ASGI directly (see `Endpoint`): the body bytes are published as received
(never re-encoded), and the answer is a few precomputed bytes. After the checks `Endpoint`
makes: the signature, where the automation requires one (401) -> not empty (400) -> replay
(of the Idempotency-Key, or of a signed request's delivery id) -> rate limit (429) -> body
shape (400) -> Kafka (503, or 202 once the broker acknowledged).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import Receive, Scope

from automations.bodies import BodyError, parse_body
from automations.config_cache import ConfigCache
from automations.ids import new_event_id
from core.kafka import headers as kafka_headers
from ingress.endpoint import Endpoint, Head, body_error
from ingress.errors import HttpError
from ingress.idempotency import IdempotencyStore, KeyClaim, Replay, StoreUnavailable
from ingress.keys import KeyIndex
from ingress.metrics import IngressMetrics
from ingress.publishing import Publisher, PublishUnavailable, RecordRejected
from ingress.ratelimit import Limiter

DEFAULT_CONTENT_TYPE = b"application/json"

log = logging.getLogger(__name__)



class Webhook(Endpoint):
    route = "/v1/hooks/{automation_id}"

    def __init__(self, *, cache: ConfigCache, keys: KeyIndex, metrics: IngressMetrics,
                 max_body: int, limiter: Limiter, idempotency: IdempotencyStore,
                 publisher: Publisher, topic: str, rate: float, burst: int,
                 **endpoint: Any) -> None:
        super().__init__(cache=cache, keys=keys, metrics=metrics, max_body=max_body, **endpoint)
        self.limiter = limiter
        self.rate = rate  # the global limits; an automation's own replace them
        self.burst = burst
        self.idempotency = idempotency
        self.publisher = publisher
        self.topic = topic

    async def handle(self, scope: Scope, receive: Receive,
                     automation_id: str) -> tuple[int, bytes]:
        head = self.authenticate(scope, automation_id, require_enabled=True)
        body = await self.read_body(receive, head)
        if head.snapshot.auth_mode != "key":  # type: ignore[union-attr] - set by authenticate
            self.check_signature(head, body)
        if not body:
            raise HttpError("empty_body")
        if head.dedupe_key is None:
            return await self._accept(automation_id, head, body, None)
        return await self._accept_once(automation_id, head, body)

    async def _accept_once(self, automation_id: str, head: Head,
                           body: bytes) -> tuple[int, bytes]:
        key = head.dedupe_key
        assert key is not None
        try:
            outcome = await self.idempotency.begin(automation_id, key)
        except TimeoutError:
            raise HttpError("kafka_unavailable", "An earlier request with this Idempotency-Key "
                            "is still being stored; retry after Retry-After seconds.",
                            retry_after=1.0) from None
        except StoreUnavailable as exc:
            log.error("%s", exc)
            raise HttpError("kafka_unavailable", "The ingress cannot reach its idempotency "
                            "store; retry after Retry-After seconds with the same "
                            "Idempotency-Key.", retry_after=1.0) from None
        if isinstance(outcome, Replay):
            self.metrics.replayed.inc()
            return outcome.status, outcome.body
        try:
            status, answer = await self._accept(automation_id, head, body, outcome)
        except BaseException:
            try:
                await self.idempotency.release(outcome)  # not a 202: the key may be retried
            except StoreUnavailable as exc:
                # The claim stays pending: re-claimable here at once, elsewhere once stale.
                log.error("%s (releasing a claim)", exc)
            raise
        try:
            await self.idempotency.complete(outcome, status, answer)
        except StoreUnavailable as exc:
            # Kafka has the record: the answer is still 202. The claim stays pending; a retry
            # re-claims it (here at once, on another replica once stale) and publishes under
            # the same event id.
            log.error("%s (recording an answer)", exc)
        return status, answer

    async def _accept(self, automation_id: str, head: Head, body: bytes,
                      claim: KeyClaim | None) -> tuple[int, bytes]:
        snap = head.snapshot
        assert snap is not None  # set by authenticate
        rate = self.rate if snap.rate_limit is None else snap.rate_limit
        burst = self.burst if snap.rate_burst is None else snap.rate_burst
        wait = self.limiter.try_take(automation_id, rate, burst)
        if wait is None:  # the shared store: this replica holds no tokens; lease some
            wait = await self.limiter.acquire(automation_id, rate, burst)
        if wait:
            raise HttpError("rate_limited", retry_after=wait)
        try:
            records = parse_body(body, head.content_type_str, max_depth=self.max_depth)
        except BodyError as exc:
            raise body_error(exc) from None
        event_id = claim.event_id if claim is not None else new_event_id()
        headers = [(kafka_headers.CONTENT_TYPE, head.content_type or DEFAULT_CONTENT_TYPE),
                   (kafka_headers.RECEIVED_AT, str(time.time_ns() // 1_000_000).encode()),
                   (kafka_headers.REQUEST_ID, event_id.encode())]
        if head.idempotency_key is not None:
            headers.append((kafka_headers.IDEMPOTENCY_KEY, head.idempotency_key.encode()))
        metrics = self.metrics
        metrics.publishing += 1
        started = time.perf_counter()
        try:
            await self.publisher.publish(self.topic, head.key_bytes, body, headers)
        except PublishUnavailable as exc:
            raise HttpError("kafka_unavailable", retry_after=exc.retry_after) from None
        except RecordRejected as exc:  # this record only; other requests are unaffected
            if exc.too_large:
                raise HttpError("body_too_large", "Kafka refused the event as too large for "
                                "its topic (max.message.bytes); send a smaller body.") from None
            raise HttpError("kafka_unavailable", retry_after=1.0) from None
        finally:
            metrics.publishing -= 1
        metrics.publish_seconds.observe(time.perf_counter() - started)
        metrics.accept(automation_id, len(records))
        return 202, b'{"event_id":"%s","accepted":%d}' % (event_id.encode(), len(records))
