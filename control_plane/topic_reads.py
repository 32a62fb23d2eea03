"""On-demand reads of topics for one automation: its waiting invitations, its DLQ replay.

Both read every partition outside any consumer group, from the beginning to the end offsets
as they are when the read starts (read_committed), so they never move a service's position.

- Waiting invitations live only in the scheduler's compacted changelog until they are due
  (the notifier sees them then): a lookup by e-mail scans it, keeping the newest value per
  invitation id (a tombstone means released). The e-mail is first looked for in the raw
  bytes, so only candidate records are decoded. Its cost grows with the number of waiting
  invitations; `MAX_SCAN_S` bounds it and the answer says when it stopped early.
- The replay is `hookstream dlq replay --automation ID` (ops/dlq.py) for one automation, with
  the same header contract (`core.kafka.headers.replayed_headers`: `record-index` for one record
  of a batch). The invitation id derives from (automation, request id, index), so a second
  replay invites nobody twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from core.kafka import clients
from core.kafka.clients import Kafka
from core.kafka.headers import replayed_headers
from core.kafka.topics import Topics
from schemas import codec

MAX_SCAN_S = 20.0
IN_FLIGHT = 500


@dataclass(frozen=True)
class Waiting:
    invitation_id: str
    email: str
    due_at: datetime
    received_at: datetime
    variables: dict[str, Any]


@dataclass(frozen=True)
class WaitingLookup:
    items: list[Waiting]
    complete: bool  # False: the scan stopped at MAX_SCAN_S before the end


async def partitions_of(bootstrap: Kafka, topics: list[str]) -> dict[str, list[int]]:
    """Each existing topic's partitions (a missing topic is left out)."""
    admin = clients.admin(bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in topics if t in existing]
        described = await admin.describe_topics(wanted) if wanted else []
    finally:
        await admin.close()
    return {d["topic"]: sorted(p["partition"] for p in d["partitions"])
            for d in described if not d["error_code"]}


async def _read_to_end(bootstrap: Kafka, topic: str,
                       deadline: float | None = None) -> AsyncIterator[ConsumerRecord]:
    consumer = clients.consumer(bootstrap, group_id=None,
                                enable_auto_commit=False, isolation_level="read_committed",
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    parts = (await partitions_of(bootstrap, [topic])).get(topic)
    if not parts:
        return  # not created yet: nothing waits, nothing failed
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        open_tps = {tp for tp in tps if ends[tp] > 0}
        while open_tps:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError
            batch = await consumer.getmany(*open_tps, timeout_ms=300, max_records=5000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp]:
                        yield r
            open_tps = {tp for tp in open_tps if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()


async def waiting_invitations(bootstrap: Kafka, topics: Topics, automation_id: str,
                              email: str) -> WaitingLookup:
    """The automation's invitations to `email` that wait for their due time."""
    needle = email.strip().lower().encode()
    found: dict[bytes, Waiting | None] = {}
    complete = True
    try:
        async for r in _read_to_end(bootstrap, topics.scheduler_changelog,
                                    time.monotonic() + MAX_SCAN_S):
            if r.key is None:
                continue
            if r.value is None:
                if r.key in found:
                    found[r.key] = None  # released
                continue
            if needle not in r.value.lower():
                continue
            inv = codec.decode_as("InvitationRequested", r.value)
            if inv["automation_id"] != automation_id or inv["email"].lower() != needle.decode():
                continue
            found[r.key] = Waiting(inv["invitation_id"], inv["email"], inv["due_at"],
                                   inv["received_at"], dict(inv["variables"]))
    except TimeoutError:
        complete = False
    items = sorted((w for w in found.values() if w is not None), key=lambda w: w.due_at)
    return WaitingLookup(items, complete)


async def replay_dead_letters(bootstrap: Kafka, topics: Topics, automation_id: str) -> int:
    """Put the automation's dead-letter records back on `webhooks.raw`; how many."""
    producer = clients.producer(bootstrap, acks="all", enable_idempotence=True,
                                request_timeout_ms=30_000)
    await producer.start()
    key = automation_id.encode()
    replayed = 0
    pending: list[asyncio.Future[Any]] = []
    try:
        async for r in _read_to_end(bootstrap, topics.dlq):
            if r.key != key:
                continue
            headers = {k: v for k, v in r.headers or () if v is not None}
            pending.append(await producer.send(topics.raw, value=r.value, key=key,
                                               headers=replayed_headers(headers)))
            replayed += 1
            if len(pending) >= IN_FLIGHT:
                await asyncio.gather(*pending)  # raises if Kafka refused one: no silent loss
                pending.clear()
        if pending:
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return replayed
