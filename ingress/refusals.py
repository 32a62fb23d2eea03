"""The integrator's errors: webhook requests the ingress refused, counted per automation and
reported on `automations.errors`, so they reach the automation's error mails and error list.

A refusal with 400, 401, 409, 413, 415 or 429 is the integrator's to fix (a rotated-out key,
bad JSON, a disabled automation, too large, wrong media type, too fast); a 404 names no
automation and a 503 is ours. Only ids of automations that exist are counted (bounded
cardinality), and only a count per (automation, error code) is kept: no body, no key, no
respondent data. Every `interval` each count becomes one `AutomationError` (source `ingress`,
kind `refused_<code>`, `count`, the interval `since`..`at`), keyed by the automation id. A
count whose record Kafka did not acknowledge stays and is reported with the next interval.
The notifier stores and mails them like any error but never counts them toward auto-disable.
The test endpoint's refusals are not counted: trying things out there is what it is for.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Final

from aiokafka import AIOKafkaProducer

from automations.config_cache import ConfigCache
from automations.error_events import automation_error
from core.kafka import clients
from core.kafka.clients import Kafka
from ingress.errors import ERRORS, HttpError
from schemas import codec

log = logging.getLogger(__name__)

COUNTED_STATUSES: Final = frozenset({400, 401, 409, 413, 415, 429})
KIND_PREFIX: Final = "refused_"
SOURCE: Final = "ingress"
SEND_TIMEOUT_S: Final = 10.0


def kind_of(code: str) -> str:
    return KIND_PREFIX + code


def _ms() -> int:
    return time.time_ns() // 1_000_000


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def refusal_detail(code: str, count: int, since_ms: int, at_ms: int) -> str:
    status, sentence = ERRORS[code]
    times = "request was" if count == 1 else "requests were"
    return (f"{count} webhook {times} refused with {status} {code} between "
            f"{_clock(since_ms)} and {_clock(at_ms)}: {sentence}")


class Refusals:
    """Counts refusals on the hot path (a dict add) and reports them every `interval`."""

    def __init__(self, cache: ConfigCache, bootstrap: Kafka, topic: str,
                 interval: float) -> None:
        self.cache = cache
        self.bootstrap = bootstrap
        self.topic = topic
        self.interval = interval
        self.instance = uuid.uuid4().hex  # error ids of two replicas never collide
        self._counts: dict[tuple[str, str], int] = {}
        self._since: dict[tuple[str, str], int] = {}
        self._producer: AIOKafkaProducer | None = None

    def count(self, automation_id: str, err: HttpError) -> None:
        if err.status not in COUNTED_STATUSES or self.cache.get(automation_id) is None:
            return
        key = (automation_id, err.code)
        n = self._counts.get(key)
        if n is None:
            self._counts[key] = 1
            self._since.setdefault(key, _ms())
        else:
            self._counts[key] = n + 1

    def pending(self) -> dict[tuple[str, str], int]:
        return dict(self._counts)

    def forget(self, automation_id: str) -> None:
        """A deleted automation: its counts go (nobody is left to tell)."""
        for key in [k for k in self._counts if k[0] == automation_id]:
            del self._counts[key]
            self._since.pop(key, None)

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = clients.producer(self.bootstrap, acks="all",
                                        enable_idempotence=True,
                                        request_timeout_ms=int(SEND_TIMEOUT_S * 1000))
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def flush(self) -> int:
        """Report every count; returns how many records Kafka acknowledged. A count whose
        record failed stays (what came in meanwhile is added to it)."""
        if not self._counts:
            return 0
        at = _ms()
        taken = dict(self._counts)
        records = {}
        for (automation_id, code), n in taken.items():
            since = self._since.get((automation_id, code), at)
            records[(automation_id, code)] = automation_error(
                identity=("ingress", self.instance, automation_id, code, since, at),
                automation_id=automation_id, kind=kind_of(code),
                detail=refusal_detail(code, n, since, at), source=SOURCE, at_ms=at,
                count=n, since_ms=since)
        futures: dict[tuple[str, str], asyncio.Future[object]] = {}
        try:
            producer = await asyncio.wait_for(self._started(), SEND_TIMEOUT_S)
            for key, rec in records.items():
                futures[key] = await producer.send(
                    self.topic, codec.encode("AutomationError", rec), key=key[0].encode())
        except Exception as exc:  # noqa: BLE001 - Kafka away: keep the counts, report later
            log.warning("the ingress's refusal counts were not all reported (%s); kept for "
                        "the next interval", type(exc).__name__)
        sent = 0
        for key, fut in futures.items():
            try:
                await asyncio.wait_for(fut, SEND_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - this count stays for the next interval
                log.warning("a refusal count of automation %s was not acknowledged (%s)",
                            key[0], type(exc).__name__)
                continue
            sent += 1
            left = self._counts.get(key, 0) - taken[key]
            if left > 0:
                self._counts[key] = left
                self._since[key] = at  # these came in after `at`
            else:
                self._counts.pop(key, None)
                self._since.pop(key, None)
        return sent

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def stop(self) -> None:
        """A last report (bounded), then the producer goes."""
        try:
            await asyncio.wait_for(self.flush(), SEND_TIMEOUT_S)
        except TimeoutError:
            log.warning("the last refusal counts were not reported before the stop")
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
