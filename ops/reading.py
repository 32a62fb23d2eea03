"""Reading a topic outside any consumer group: every partition, from a start, to its end or on.

Shared by `tap` and `dlq replay`. Nothing here joins a group or commits an offset, so an
operator's read never moves a service's position.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from core.kafka import clients
from core.kafka.clients import Kafka
from core.kafka.seek import seek_to_times

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_MS = 10_000
IDLE_LIMIT_SECONDS = 20.0  # no progress toward the end for this long means something is wrong

# Topic name (without prefix) -> the Avro schema its values are written with.
AVRO_TOPICS = {
    "invitations.scheduled": "InvitationRequested",
    "invitations.due": "InvitationRequested",
    "invitations.outcomes": "InvitationOutcome",
    "automations.errors": "AutomationError",
    "automations.config": "AutomationSnapshot",
    "automations.counts": "AutomationCounts",
}
# Topics whose values are request bodies as received (JSON, NDJSON, or anything sent).
RAW_TOPICS = ("webhooks.raw", "webhooks.dlq")


class ReadError(RuntimeError):
    """A read that cannot be done; the message says why, for a person."""


def resolve_topic(name: str, prefix: str) -> tuple[str, str | None]:
    """(full topic name, its hookstream short name or None) for a short or a full name."""
    short_names = list(AVRO_TOPICS) + list(RAW_TOPICS)
    if name in short_names:
        return prefix + name, name
    for short in short_names:
        if name.endswith("." + short) or name.endswith(short) and name.startswith(prefix):
            return name, short
    return name, None


async def topic_partitions(bootstrap: Kafka, topic: str) -> list[TopicPartition]:
    admin = clients.admin(bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if topic not in existing:
            raise ReadError(f"topic {topic!r} does not exist on {bootstrap}")
        (desc,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if desc["error_code"]:
        raise ReadError(f"topic {topic!r}: metadata error code {desc['error_code']}")
    return [TopicPartition(topic, p["partition"])
            for p in sorted(desc["partitions"], key=lambda p: p["partition"])]


def parse_from(value: str) -> str | int:
    """`beginning`, `end`, or an ISO-8601 timestamp (naive means UTC) as epoch milliseconds."""
    if value in ("beginning", "end"):
        return value
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ReadError(f"--from must be beginning, end or an ISO-8601 timestamp, not {value!r}"
                        ) from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return int(ts.timestamp() * 1000)


def new_consumer(bootstrap: Kafka) -> AIOKafkaConsumer:
    # read_committed: records of aborted transactions are never shown or replayed.
    return clients.consumer(bootstrap, group_id=None, enable_auto_commit=False,
                            isolation_level="read_committed", auto_offset_reset="earliest",
                            request_timeout_ms=REQUEST_TIMEOUT_MS)


async def seek_start(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition],
                     start: str | int) -> None:
    if start == "beginning":
        await consumer.seek_to_beginning(*tps)
    elif start == "end":
        await consumer.seek_to_end(*tps)
    else:
        await seek_to_times(consumer, {tp: start for tp in tps})


async def read_records(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition],
                       follow: bool) -> AsyncIterator[ConsumerRecord]:
    """Records of the assigned partitions from their current positions.

    Without `follow`, stops at the end offsets as they were when the read began (records
    written later are not read); with it, goes on until the caller stops iterating.
    """
    stop_at = None if follow else await consumer.end_offsets(list(tps))
    last_progress = time.monotonic()
    while True:
        if stop_at is not None:
            open_tps = [tp for tp in tps if await consumer.position(tp) < stop_at[tp]]
            if not open_tps:
                return
            if time.monotonic() - last_progress > IDLE_LIMIT_SECONDS:
                positions = {f"{tp.topic}[{tp.partition}]": await consumer.position(tp)
                             for tp in open_tps}
                raise ReadError(f"no progress for {IDLE_LIMIT_SECONDS:.0f}s before the end "
                                f"offsets {stop_at}; positions {positions}")
        batch = await consumer.getmany(timeout_ms=500, max_records=500)
        if batch:
            last_progress = time.monotonic()
        for tp, records in sorted(batch.items(), key=lambda kv: kv[0].partition):
            for record in records:
                if stop_at is not None and record.offset >= stop_at[tp]:
                    continue  # written after the read began
                yield record


async def open_reader(bootstrap: Kafka, topic: str, start: str | int
                      ) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """A started group-less consumer assigned to every partition of `topic`, at `start`."""
    tps = await topic_partitions(bootstrap, topic)
    consumer = new_consumer(bootstrap)
    await consumer.start()
    try:
        consumer.assign(tps)
        await seek_start(consumer, tps, start)
    except BaseException:
        await consumer.stop()
        raise
    return consumer, tps
