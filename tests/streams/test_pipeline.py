"""The worker on a real broker: bodies in, typed invitations, DLQ records and errors out."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import orjson
import pytest

from automations.ids import invitation_id
from core.kafka.topics import Topics
from schemas import codec
from tests.streams.conftest import (
    decode_invitations,
    header_dict,
    make_snapshot,
    metric_value,
    produce_raw,
    publish_snapshot,
    read_topic,
    webhook,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def person(i: int, **extra: object) -> dict[str, object]:
    return {"email": f"p{i}@example.com", "name": f"Person {i}", "age": str(20 + i),
            "member": i % 2 == 0, "address": {"city": "Utrecht"}, "note": "skip me", **extra}


async def test_object_batch_and_ndjson_become_typed_invitations(
        kafka_bootstrap: str, stream_topics: Topics, worker_factory) -> None:
    topics = stream_topics
    await publish_snapshot(kafka_bootstrap, topics, make_snapshot("auto-1"))
    worker = worker_factory()
    worker.start()
    await worker.wait_ready()

    ndjson = b"\n".join(orjson.dumps(person(i)) for i in (10, 11)) + b"\n"
    await produce_raw(kafka_bootstrap, topics, [
        webhook("auto-1", person(1), "ev-object"),
        webhook("auto-1", [person(2), person(3), person(4)], "ev-batch"),
        webhook("auto-1", ndjson, "ev-ndjson", content_type="application/x-ndjson"),
        # A DLQ replay of record 7 of an earlier event: same index, same invitation id.
        webhook("auto-1", person(7), "ev-replayed", record_index=7),
    ])
    records = await read_topic(kafka_bootstrap, topics.due, until=lambda rs: len(rs) >= 7,
                               timeout=60, settle=1.0)
    assert len(records) == 7
    by_id = {r.key.decode(): inv for r, inv in zip(records, decode_invitations(records),
                                                   strict=True)}
    expected = {invitation_id("auto-1", "ev-object", 0): (1, "ev-object", 0),
                invitation_id("auto-1", "ev-batch", 0): (2, "ev-batch", 0),
                invitation_id("auto-1", "ev-batch", 1): (3, "ev-batch", 1),
                invitation_id("auto-1", "ev-batch", 2): (4, "ev-batch", 2),
                invitation_id("auto-1", "ev-ndjson", 0): (10, "ev-ndjson", 0),
                invitation_id("auto-1", "ev-ndjson", 1): (11, "ev-ndjson", 1),
                invitation_id("auto-1", "ev-replayed", 7): (7, "ev-replayed", 7)}
    assert set(by_id) == set(expected)
    for inv_id, (i, event, index) in expected.items():
        inv = by_id[inv_id]
        assert inv["invitation_id"] == inv_id
        assert (inv["event_id"], inv["record_index"]) == (event, index)
        assert inv["email"] == f"p{i}@example.com"
        assert inv["automation_id"] == "auto-1" and inv["survey_id"] == "survey-1"
        # Typed: the text "21" became a number, the skipped field is absent, nested mapped.
        assert inv["variables"] == {"name": f"Person {i}", "age": 20 + i,
                                    "member": i % 2 == 0, "city": "Utrecht"}
        assert inv["delay_days"] == 0 and inv["due_at"] == inv["received_at"]


async def test_each_failure_goes_to_dlq_with_an_error_and_the_stream_goes_on(
        kafka_bootstrap: str, stream_topics: Topics, worker_factory) -> None:
    topics = stream_topics
    await publish_snapshot(kafka_bootstrap, topics, make_snapshot("auto-1"))
    await publish_snapshot(kafka_bootstrap, topics, make_snapshot("auto-off", enabled=False))
    worker = worker_factory()
    worker.start()
    await worker.wait_ready()

    bad_json = b'{"email": "x@example.com",'
    hooks = [
        webhook("auto-1", bad_json, "ev-bad-json"),
        webhook("auto-1", person(1), "ev-good-1"),
        webhook("auto-1", [person(2), 42, person(3)], "ev-not-object"),
        webhook("auto-1", {"name": "No Mail"}, "ev-missing-email"),
        webhook("auto-1", person(4, email="not-an-address"), "ev-invalid-email"),
        webhook("auto-1", person(5, age="seventy-ish"), "ev-type-mismatch"),
        webhook("auto-unknown", person(6), "ev-unknown"),
        webhook("auto-off", person(8), "ev-disabled"),
        webhook("auto-1", person(9), "ev-good-2"),
    ]
    await produce_raw(kafka_bootstrap, topics, hooks)

    dlq = await read_topic(kafka_bootstrap, topics.dlq, until=lambda rs: len(rs) >= 7,
                           timeout=60, settle=0.5)
    errors = await read_topic(kafka_bootstrap, topics.errors, until=lambda rs: len(rs) >= 7,
                              timeout=10)
    due = await read_topic(kafka_bootstrap, topics.due, until=lambda rs: len(rs) >= 4,
                           timeout=10, settle=0.5)

    by_event = {header_dict(r)[b"request-id".decode()].decode(): r for r in dlq}
    assert len(dlq) == 7
    # (reason, dlq-record-index: absent when the whole body failed, the DLQ value)
    expect = {"ev-bad-json": ("bad_json", None, bad_json),
              "ev-not-object": ("not_object", b"1", b"42"),
              "ev-missing-email": ("missing_email", b"0", None),
              "ev-invalid-email": ("invalid_email", b"0", None),
              "ev-type-mismatch": ("type_mismatch", b"0", None),
              "ev-unknown": ("unknown_automation", None, None),
              "ev-disabled": ("automation_disabled", None, None)}
    for event, (reason, index, value) in expect.items():
        h = header_dict(by_event[event])
        assert h["dlq-reason"] == reason.encode(), event
        assert h["dlq-source"] == b"streams"
        assert int(h["dlq-at"]) > 0 and h["dlq-detail"]
        assert h["content-type"] == b"application/json"  # the original headers are kept
        assert h.get("dlq-record-index") == index, event
        if value is not None:
            assert by_event[event].value == value
    # A single-object body is its own record: the DLQ holds the body as received.
    assert orjson.loads(by_event["ev-invalid-email"].value)["email"] == "not-an-address"
    assert by_event["ev-unknown"].key == b"auto-unknown"

    kinds = sorted(codec.decode_as("AutomationError", r.value)["kind"] for r in errors)
    assert kinds == sorted(v[0] for v in expect.values())
    for r in errors:
        err = codec.decode_as("AutomationError", r.value)
        assert r.key.decode() == err["automation_id"] and err["source"] == "streams"
        # No respondent values in the error.
        for secret in ("not-an-address", "seventy-ish", "Person", "example.com"):
            assert secret not in err["detail"], err
    type_err = next(codec.decode_as("AutomationError", r.value) for r in errors
                    if codec.decode_as("AutomationError", r.value)["kind"] == "type_mismatch")
    assert type_err["field"] == "age" and type_err["event_id"] == "ev-type-mismatch"

    # The good records around the bad ones all came through: 1, 2 and 3 of the mixed batch, 9.
    emails = sorted(inv["email"] for inv in decode_invitations(due))
    assert emails == ["p1@example.com", "p2@example.com", "p3@example.com", "p9@example.com"]
    text = await worker.metrics()
    assert metric_value(text, "hookstream_dlq_records_total", 'reason="bad_json"') == 1


async def test_filtered_records_are_counted_not_errors_and_config_changes_apply_live(
        kafka_bootstrap: str, stream_topics: Topics, worker_factory) -> None:
    topics = stream_topics
    snap = make_snapshot("auto-f", filters={"all": [{"field": "address.city", "op": "eq",
                                                      "value": "Utrecht"}]})
    await publish_snapshot(kafka_bootstrap, topics, snap)
    worker = worker_factory()
    worker.start()
    await worker.wait_ready()

    def at(city: str, i: int) -> dict[str, object]:
        return person(i, address={"city": city})

    await produce_raw(kafka_bootstrap, topics, [
        webhook("auto-f", [at("Utrecht", 1), at("Delft", 2), at("Delft", 3)], "ev-1")])
    due = await read_topic(kafka_bootstrap, topics.due, until=lambda rs: len(rs) >= 1,
                           timeout=60, settle=1.0)
    assert [inv["email"] for inv in decode_invitations(due)] == ["p1@example.com"]
    text = await worker.metrics()
    assert metric_value(text, "hookstream_records_filtered_total", 'automation="auto-f"') == 2
    # Issue 17: the worker's stages of the end-to-end latency were timed (a batch at least).
    for stage in ("raw_wait", "transform", "raw_commit"):
        assert metric_value(text, "hookstream_stage_seconds_count", f'stage="{stage}"') >= 1
    # Filtered out is not an error: nothing on the DLQ nor on the error topic.
    for topic in (topics.dlq, topics.errors):
        assert await read_topic(kafka_bootstrap, topic, until=lambda rs: True, timeout=10,
                                settle=0.3) == []
    # The counts committed with the batch say the same, with the condition that failed.
    counts = [codec.decode_as("AutomationCounts", r.value) for r in await read_topic(
        kafka_bootstrap, topics.counts, until=lambda rs: True, timeout=10, settle=0.3)]
    assert {c["automation_id"] for c in counts} == {"auto-f"}
    assert [sum(c[k] for c in counts) for k in ("accepted", "filtered", "failed", "invited")
            ] == [3, 2, 0, 1]
    assert sum((Counter(c["filtered_by"]) for c in counts), Counter()) == {
        "address.city eq 'Utrecht': the value (a text) does not meet it": 2}

    # Edit the filter: now Delft passes and Utrecht does not; no restart.
    edited = replace(snap, version=2, filters={"all": [{"field": "address.city", "op": "eq",
                                                        "value": "Delft"}]})
    await publish_snapshot(kafka_bootstrap, topics, edited)
    await _wait_config_applied(kafka_bootstrap, topics, worker, "auto-f", "ev-probe-2",
                               at("Delft", 50), expect_due=2)
    await produce_raw(kafka_bootstrap, topics, [
        webhook("auto-f", [at("Utrecht", 4), at("Delft", 5)], "ev-2")])
    due = await read_topic(kafka_bootstrap, topics.due, until=lambda rs: len(rs) >= 3,
                           timeout=30, settle=1.0)
    assert sorted(inv["email"] for inv in decode_invitations(due)) == [
        "p1@example.com", "p50@example.com", "p5@example.com"]

    # Delay changed to 2 days: the next record goes to the delay topic with its due_at.
    delayed = replace(edited, version=3, delay_days=2)
    await publish_snapshot(kafka_bootstrap, topics, delayed)
    sched = []
    for attempt in range(20):  # the config applies within a cache poll; probe until it has
        await produce_raw(kafka_bootstrap, topics, [webhook("auto-f", at("Delft", 6),
                                                            f"ev-delay-{attempt}")])
        sched = await read_topic(kafka_bootstrap, topics.scheduled, until=lambda rs: True,
                                 timeout=10, settle=1.0)
        if sched:
            assert attempt <= 5, "the delay change took more than a few seconds to apply"
            break
    assert len(sched) == 1
    inv = decode_invitations(sched)[0]
    assert inv["delay_days"] == 2
    assert (inv["due_at"] - inv["received_at"]).total_seconds() == pytest.approx(2 * 86400)

    # Disabled: the next record is a DLQ record with automation_disabled, no invitation.
    await publish_snapshot(kafka_bootstrap, topics, replace(delayed, version=4, enabled=False))
    await _wait_disabled(kafka_bootstrap, topics, "auto-f", at("Delft", 7))


async def _wait_config_applied(bootstrap: str, topics: Topics, worker, automation_id: str,
                               event: str, record: dict[str, object], expect_due: int) -> None:
    """Send a probe until the new config lets it through (it applies within ~a second)."""
    for attempt in range(20):
        await produce_raw(bootstrap, topics, [webhook(automation_id, record,
                                                      f"{event}-{attempt}")])
        due = await read_topic(bootstrap, topics.due, until=lambda rs: True, timeout=10,
                               settle=1.0)
        if len(due) >= expect_due:
            assert attempt <= 5, "the config change took more than a few seconds to apply"
            return
    raise AssertionError("the edited filter never applied")


async def _wait_disabled(bootstrap: str, topics: Topics, automation_id: str,
                         record: dict[str, object]) -> None:
    for attempt in range(20):
        await produce_raw(bootstrap, topics, [webhook(automation_id, record,
                                                      f"ev-off-{attempt}")])
        dlq = await read_topic(bootstrap, topics.dlq, until=lambda rs: True, timeout=10,
                               settle=1.0)
        if any(header_dict(r)["dlq-reason"] == b"automation_disabled" for r in dlq):
            assert attempt <= 5, "disabling took more than a few seconds to apply"
            return
    raise AssertionError("disabling the automation never applied")
