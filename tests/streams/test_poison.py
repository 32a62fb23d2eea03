"""No record can block a partition (issue 15, item 2), on a real broker.

A record whose processing always fails is retried a bounded number of times, then set aside
on the dead-letter topic with its reason and an AutomationError, and the records behind it on
the same partition go on. The genuine poison here: a webhook whose invitation is larger than
the broker takes (message.max.bytes, 1 MiB by default), so its transaction can never commit
(the raw record itself is small on the wire: gzip). Before, the refused batch failed only
its own future and the transaction committed without it: the invitation was lost silently.
The 300-deep batch record without an e-mail address (whose rejected-record path once failed
in `orjson.dumps`) rides on the same partition.
"""

from __future__ import annotations

import asyncio
import json
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from core.kafka.topics import Topics
from schemas import codec
from streams.batching import partition_for
from tests.streams.conftest import (
    decode_invitations,
    header_dict,
    make_snapshot,
    metric_value,
    publish_snapshot,
    raw_headers,
    read_topic,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


def same_partition(first: str, prefix: str, partitions: int = 3) -> str:
    """An automation id whose records land on `first`'s partition of webhooks.raw."""
    want = partition_for(first.encode(), list(range(partitions)))
    return next(f"{prefix}-{i}" for i in range(1000)
                if partition_for(f"{prefix}-{i}".encode(), list(range(partitions))) == want)


def nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": "x"}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


async def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes, str]]) -> None:
    """Raw records in this order; gzip and a large request size let a 1.3 MB body through."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                compression_type="gzip", max_request_size=8 * 1024 * 1024)
    await producer.start()
    try:
        for automation_id, body, event_id in records:
            await producer.send_and_wait(topic, body, key=automation_id.encode(),
                                         headers=raw_headers(event_id))
    finally:
        await producer.stop()


async def test_a_record_that_always_fails_is_set_aside_and_its_partition_goes_on(
        kafka_bootstrap: str, stream_topics: Topics, worker_factory) -> None:
    topics = stream_topics
    poison_id = "auto-poison"
    other_id = same_partition(poison_id, "auto-other")
    for automation_id in (poison_id, other_id):
        await publish_snapshot(kafka_bootstrap, topics, make_snapshot(automation_id))
    worker = worker_factory(HOOKSTREAM_WORKER_MAX_ATTEMPTS="3",
                            HOOKSTREAM_WORKER_RETRY_BACKOFF_SECONDS="0.2")
    worker.start()
    await worker.wait_ready()

    big = "a" * 700_000  # mapped twice (name, city): an invitation of 1.4 MB
    poison = orjson.dumps({"email": "p@example.com", "name": big, "address": {"city": big}})
    # 300 levels (and no e-mail address): past the nesting cap.
    deep = json.dumps([{"name": "No Mail", "payload": nested(300)}]).encode()
    good = orjson.dumps({"email": "other@example.com", "name": "Other"})
    started = time.monotonic()
    await produce(kafka_bootstrap, topics.raw, [(other_id, deep, "ev-deep"),
                                                (poison_id, poison, "ev-poison"),
                                                (other_id, good, "ev-good")])

    # The automation behind the poison on the same partition is served within seconds.
    due = await read_topic(kafka_bootstrap, topics.due, until=lambda rs: len(rs) >= 1,
                           timeout=60, settle=0.5)
    waited = time.monotonic() - started
    assert [inv["email"] for inv in decode_invitations(due)] == ["other@example.com"]
    assert waited < 20, f"the partition was blocked for {waited:.1f} s"

    dlq = await read_topic(kafka_bootstrap, topics.dlq, until=lambda rs: len(rs) >= 2,
                           timeout=10, settle=0.5)
    by_event = {header_dict(r)["request-id"].decode(): r for r in dlq}
    assert sorted(by_event) == ["ev-deep", "ev-poison"]
    poisoned = header_dict(by_event["ev-poison"])
    assert poisoned["dlq-reason"] == b"processing_failed"
    assert poisoned["dlq-source"] == b"streams"
    assert b"after 3 attempts" in poisoned["dlq-detail"]
    assert by_event["ev-poison"].key == poison_id.encode()
    assert by_event["ev-poison"].value == poison[:len(by_event["ev-poison"].value)]
    # The deep body is refused whole for its depth (the parser's cap, 64 by default): the
    # dead letter keeps the body as it came. (That the rejected-record path survives a record
    # deeper than orjson's 255 is tests/streams/test_transform.py's.)
    deep_h = header_dict(by_event["ev-deep"])
    assert deep_h["dlq-reason"] == b"too_deep"
    assert json.loads(by_event["ev-deep"].value)[0]["payload"] == nested(300)

    errors = await read_topic(kafka_bootstrap, topics.errors, until=lambda rs: len(rs) >= 2,
                              timeout=10)
    kinds = {(e["automation_id"], e["kind"], e["event_id"])
             for e in (codec.decode_as("AutomationError", r.value) for r in errors)}
    assert kinds == {(poison_id, "processing_failed", "ev-poison"),
                     (other_id, "too_deep", "ev-deep")}
    # Progress again: ready, and nothing said about a stuck partition.
    live, ready = await worker.probes()
    assert live == 200 and ready.status_code == 200, ready.text


async def test_a_partition_that_makes_no_progress_turns_readiness_false_with_why(
        kafka_bootstrap: str, stream_topics: Topics, worker_factory) -> None:
    topics = stream_topics
    await publish_snapshot(kafka_bootstrap, topics, make_snapshot("auto-poison"))
    # Many attempts, so the record is still being retried while we look.
    worker = worker_factory(HOOKSTREAM_WORKER_MAX_ATTEMPTS="1000",
                            HOOKSTREAM_WORKER_RETRY_BACKOFF_SECONDS="0.2",
                            HOOKSTREAM_WORKER_RETRY_BACKOFF_MAX_SECONDS="0.5")
    worker.start()
    await worker.wait_ready()
    big = "a" * 700_000
    await produce(kafka_bootstrap, topics.raw, [("auto-poison", orjson.dumps(
        {"email": "p@example.com", "name": big, "address": {"city": big}}), "ev-poison")])

    deadline = time.monotonic() + 60
    body: dict[str, object] = {}
    while time.monotonic() < deadline:
        live, ready = await worker.probes()
        assert live == 200  # liveness is not readiness: nothing to restart for
        if ready.status_code == 503:
            body = ready.json()
            break
        await asyncio.sleep(0.3)
    assert body, "readiness stayed true while the partition made no progress"
    assert body["checks"]["raw_loop"] is False  # type: ignore[index]
    reason = body["reasons"]["raw_loop"]  # type: ignore[index]
    assert "no progress" in reason and topics.raw in reason and "MessageSizeTooLargeError" in reason
    aborted = metric_value(await worker.metrics(), "hookstream_stream_transactions_total",
                           'loop="streams",result="aborted"')
    assert aborted >= 2
