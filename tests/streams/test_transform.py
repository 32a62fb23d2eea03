"""The transform on its own: verdicts mapped onto topics, keys and headers (no broker)."""

from __future__ import annotations

import json
from dataclasses import replace

import orjson

from automations.ids import invitation_id
from core.kafka.topics import Topics
from schemas import codec
from streams.records import RawRecord
from streams.transform import DLQ_VALUE_MAX, Transformer, record_json
from tests.streams.conftest import make_snapshot, raw_headers

TOPICS = Topics("u.")


def transformer(**snapshots) -> Transformer:
    return Transformer(TOPICS, snapshots.get, day_seconds=10.0, clock=lambda: 1000.0)


def raw(body: object, event: str = "ev", automation: str = "a1", **kw) -> RawRecord:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return RawRecord(automation.encode(), data,
                     raw_headers(event, received_at_ms=500_000, **kw), 0, 42, 1)


def test_delay_goes_to_the_delay_topic_with_due_at_from_day_seconds() -> None:
    t = transformer(a1=replace(make_snapshot("a1"), delay_days=3))
    [out] = t.transform(raw({"email": "x@example.com", "age": "7"}))
    assert out.topic == TOPICS.scheduled
    inv = codec.decode_as("InvitationRequested", out.value)
    assert int(inv["due_at"].timestamp() * 1000) == 500_000 + 3 * 10_000
    assert dict(out.headers)["due-at"] == str(500_000 + 30_000).encode()
    assert out.key.decode() == invitation_id("a1", "ev", 0) == inv["invitation_id"]


def test_replayed_record_keeps_its_index_and_so_its_invitation_id() -> None:
    t = transformer(a1=make_snapshot("a1"))
    [out] = t.transform(raw({"email": "x@example.com"}, record_index=4))
    assert out.key.decode() == invitation_id("a1", "ev", 4)


def test_a_failing_replay_replaces_the_old_dlq_headers_and_keeps_the_others() -> None:
    t = transformer(a1=make_snapshot("a1"))
    rec = raw({"name": "no mail"}, record_index=2)
    rec = replace(rec, headers=[*rec.headers, ("dlq-reason", b"old"), ("x-trace", b"t1")])
    dlq, err = t.transform(rec)
    h = dict(dlq.headers)
    assert dlq.topic == TOPICS.dlq and err.topic == TOPICS.errors
    assert h["dlq-reason"] == b"missing_email" and h["x-trace"] == b"t1"
    assert [k for k, _ in dlq.headers].count("dlq-reason") == 1
    assert h["dlq-record-index"] == b"2" and h["dlq-at"] == b"1000000"
    error = codec.decode_as("AutomationError", err.value)
    assert error["record_index"] == 2 and error["field"] == "email"


def test_unknown_and_disabled_automations_fail_the_whole_body() -> None:
    t = transformer(off=replace(make_snapshot("off"), enabled=False))
    for automation, reason in (("nope", b"unknown_automation"), ("off", b"automation_disabled")):
        body = [{"email": "a@example.com"}, {"email": "b@example.com"}]
        dlq, err = t.transform(raw(body, automation=automation))
        assert dict(dlq.headers)["dlq-reason"] == reason
        assert "dlq-record-index" not in dict(dlq.headers)
        assert dlq.value == orjson.dumps(body) and dlq.key == automation.encode()
        assert codec.decode_as("AutomationError", err.value)["automation_id"] == automation


def test_batch_failures_carry_the_record_alone_and_the_rest_goes_on() -> None:
    t = transformer(a1=make_snapshot("a1"))
    outs = t.transform(raw([{"email": "a@example.com"}, {"email": "bad"},
                            {"email": "c@example.com"}]))
    assert [o.topic for o in outs] == [TOPICS.due, TOPICS.dlq, TOPICS.errors, TOPICS.due]
    assert orjson.loads(outs[1].value) == {"email": "bad"}
    assert dict(outs[1].headers)["dlq-record-index"] == b"1"


def test_error_ids_are_stable_so_reprocessing_records_each_failure_once() -> None:
    # Pinned: the ids the worker has always given (a changed id would store a failure twice
    # when a record is reprocessed after an upgrade).
    t = transformer(a1=make_snapshot("a1"))
    _dlq, err = t.transform(raw({"name": "no mail"}, record_index=2))
    assert codec.decode_as("AutomationError", err.value)["error_id"] == \
        "78ce8b3d-446f-53aa-adea-c5bd7e317ff9"
    _dlq, err = t.transform(raw({"email": "a@example.com"}, automation="nope"))
    error = codec.decode_as("AutomationError", err.value)
    assert error["error_id"] == "2db58001-9062-5512-85b6-6619b717affa"
    assert error["record_index"] is None and error["source"] == "streams"
    _dlq, again = t.transform(raw({"email": "a@example.com"}, automation="nope"))
    assert codec.decode_as("AutomationError", again.value)["error_id"] == error["error_id"]


FORM = "application/x-www-form-urlencoded"


def test_a_form_body_is_one_record_with_typed_values() -> None:
    t = transformer(a1=make_snapshot("a1"))
    [out] = t.transform(raw(b"email=ann%40example.com&name=Ann&age=42&member=ja"
                            b"&address[city]=Ede", content_type=FORM))
    inv = codec.decode_as("InvitationRequested", out.value)
    assert out.topic == TOPICS.due and inv["email"] == "ann@example.com"
    assert inv["variables"] == {"name": "Ann", "age": 42, "member": True, "city": "Ede"}


def test_a_failing_form_goes_to_the_dlq_as_received_so_a_replay_reads_it_again() -> None:
    t = transformer(a1=make_snapshot("a1"))
    body = b"email=ann%40example.com&age=old"
    dlq, _err = t.transform(raw(body, content_type=FORM))
    assert dlq.value == body and dict(dlq.headers)["content-type"] == FORM.encode()
    assert dict(dlq.headers)["dlq-reason"] == b"type_mismatch"
    # The replay (record-index from dlq-record-index) parses the same bytes the same way.
    fixed = replace(make_snapshot("a1"), mapping=make_snapshot("a1").mapping[:1])
    [out] = transformer(a1=fixed).transform(raw(body, content_type=FORM, record_index=0))
    assert codec.decode_as("InvitationRequested", out.value)["email"] == "ann@example.com"


def test_a_form_the_worker_cannot_read_is_a_dead_letter_with_the_reason() -> None:
    t = transformer(a1=make_snapshot("a1"))
    dlq, err = t.transform(raw(b"email=a%zz", content_type=FORM))
    assert dict(dlq.headers)["dlq-reason"] == b"bad_form" and dlq.value == b"email=a%zz"
    assert "byte 7" in codec.decode_as("AutomationError", err.value)["detail"]


# --- the rejected-record path never fails on the record's shape (issue 15) ----------------

def _nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def test_a_record_nested_deeper_than_orjson_writes_goes_to_the_dlq_whole() -> None:
    # 300 levels: orjson.dumps refuses past 255, which once made this record retry for ever.
    # (An ingress that allows such depth, HOOKSTREAM_INGRESS_MAX_DEPTH, lets it through.)
    t = Transformer(TOPICS, {"a1": make_snapshot("a1")}.get, day_seconds=10.0,
                    clock=lambda: 1000.0, max_depth=1000)
    out = t.transform(
        raw(json.dumps([{"name": "No Mail", "deep": _nested(300)}]).encode(), event="ev-deep"))
    dlq = next(o for o in out if o.topic == TOPICS.dlq)
    assert dict(dlq.headers)["dlq-reason"] == b"missing_email"
    assert dict(dlq.headers)["dlq-record-index"] == b"0"
    assert json.loads(dlq.value) == {"name": "No Mail", "deep": _nested(300)}
    errors = [codec.decode_as("AutomationError", o.value) for o in out
              if o.topic == TOPICS.errors]
    assert [e["kind"] for e in errors] == ["missing_email"]


def test_record_json_falls_back_to_the_body_when_nothing_can_write_the_record() -> None:
    assert record_json({"a": 1}, b"body") == b'{"a":1}'
    assert json.loads(record_json(_nested(300), b"body")) == _nested(300)
    # Deeper than the interpreter recurses: the body as received, which holds the record.
    assert record_json(_nested(5000), b"the body") == b"the body"
    assert record_json({"s": "\ud800"}, b"raw") in (b"raw", '{"s":"\ud800"}'.encode(
        "utf-8", "surrogatepass"))


def test_a_dead_letter_is_built_from_key_and_headers_and_cut_to_size() -> None:
    t = transformer(a1=make_snapshot("a1"))
    big = b"x" * (DLQ_VALUE_MAX + 10)
    out = t.dead_letter(raw(big, event="ev-big"), "processing_failed", "Gave up.")
    dlq, err = out
    assert dlq.topic == TOPICS.dlq and dlq.key == b"a1" and len(dlq.value) == DLQ_VALUE_MAX
    assert dict(dlq.headers)["dlq-reason"] == b"processing_failed"
    error = codec.decode_as("AutomationError", err.value)
    assert (error["kind"], error["event_id"], error["automation_id"]) == \
        ("processing_failed", "ev-big", "a1")


def test_a_filter_saved_before_re2_that_re2_cannot_run_dead_letters_the_webhook() -> None:
    snap = replace(make_snapshot("a1"), filters={"field": "email", "op": "regex",
                                                  "value": "^(?!spam)"})
    dlq, err = transformer(a1=snap).transform(raw({"email": "x@example.com"}))
    assert dict(dlq.headers)["dlq-reason"] == b"invalid_filter"
    assert b"RE2" in dict(dlq.headers)["dlq-detail"]
    assert codec.decode_as("AutomationError", err.value)["kind"] == "invalid_filter"
