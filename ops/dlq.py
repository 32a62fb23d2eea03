"""`hookstream dlq replay`: dead-letter records back onto `webhooks.raw`, once their cause is fixed.

Reads `webhooks.dlq` from its beginning to its end as it is when the replay starts (records
that fail again during the replay are not replayed a second time in the same run). Each
selected record is re-published with the original raw headers; when the record was one of
several in its webhook (`dlq-record-index`), `record-index` tells the streams to treat the
body as that single record at its original index. The invitation id derives from
(automation, request id, index), so replaying twice invites nobody twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.kafka import clients
from core.kafka.clients import Kafka
from core.kafka.headers import DLQ_AT, DLQ_REASON, DLQ_TOPIC, integer, replayed_headers, text
from ops.reading import open_reader, read_records

log = logging.getLogger(__name__)

IN_FLIGHT = 500  # sends awaited in batches of this many, so memory stays bounded


@dataclass(frozen=True)
class ReplayFilter:
    automation: str | None = None
    reasons: frozenset[str] = frozenset()  # empty: every reason
    since_ms: int | None = None  # on dlq-at (when the record failed), inclusive
    until_ms: int | None = None  # exclusive

    def matches(self, key: bytes | None, headers: dict[str, bytes], timestamp_ms: int) -> bool:
        if DLQ_TOPIC in headers:
            return False  # read from another topic (an undecodable invitation): not a webhook
        if self.automation is not None and key != self.automation.encode():
            return False
        if self.reasons and text(headers.get(DLQ_REASON)) not in self.reasons:
            return False
        at = integer(headers.get(DLQ_AT))
        at = timestamp_ms if at is None else at  # the record's own time if dlq-at is missing
        if self.since_ms is not None and at < self.since_ms:
            return False
        return self.until_ms is None or at < self.until_ms


@dataclass
class ReplayResult:
    scanned: int = 0
    replayed: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_automation: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {"scanned": self.scanned, "replayed": self.replayed,
                "by_reason": dict(self.by_reason), "by_automation": dict(self.by_automation)}


async def replay(bootstrap: Kafka, dlq_topic: str, raw_topic: str, selection: ReplayFilter,
                 dry_run: bool = False,
                 on_record: Callable[[Any, list[tuple[str, bytes]]], None] | None = None
                 ) -> ReplayResult:
    """Re-publish the matching DLQ records to `raw_topic`; with `dry_run`, only count them."""
    result = ReplayResult()
    producer = None
    if not dry_run:
        producer = clients.producer(bootstrap, acks="all", enable_idempotence=True,
                                    request_timeout_ms=30_000)
        await producer.start()
    consumer, tps = await open_reader(bootstrap, dlq_topic, "beginning")
    pending: list[asyncio.Future[Any]] = []
    try:
        async for record in read_records(consumer, tps, follow=False):
            result.scanned += 1
            headers = {k: v for k, v in record.headers or () if v is not None}
            if not selection.matches(record.key, headers, record.timestamp):
                continue
            out_headers = replayed_headers(headers)
            if on_record is not None:
                on_record(record, out_headers)
            if producer is not None:
                pending.append(await producer.send(raw_topic, value=record.value, key=record.key,
                                                   headers=out_headers))
                if len(pending) >= IN_FLIGHT:
                    await asyncio.gather(*pending)  # raises if Kafka refused any: no silent loss
                    pending.clear()
            result.replayed += 1
            result.by_reason[text(headers.get(DLQ_REASON)) or "unknown"] += 1
            result.by_automation[text(record.key) or ""] += 1
        if pending:
            await asyncio.gather(*pending)
    finally:
        await consumer.stop()
        if producer is not None:
            await producer.stop()  # flushes what is still buffered
    return result
