"""Issue 15, item 8: the worker accepts only addresses the deployment can deliver."""

from __future__ import annotations

import orjson

from core.kafka.topics import Topics
from schemas import codec
from streams.records import RawRecord
from streams.transform import Transformer
from tests.streams.conftest import make_snapshot, raw_headers

TOPICS = Topics("u.")


def _raw(email: str) -> RawRecord:
    return RawRecord(b"a1", orjson.dumps({"email": email}), raw_headers("ev", received_at_ms=1),
                     0, 42, 1)


def test_a_non_ascii_local_part_is_a_dead_letter_unless_smtputf8_is_set() -> None:
    snap = make_snapshot("a1")
    off = Transformer(TOPICS, {"a1": snap}.get, day_seconds=10.0, clock=lambda: 1000.0)
    dlq, err = off.transform(_raw("jürgen@example.com"))
    assert dlq.topic == TOPICS.dlq and dict(dlq.headers)["dlq-reason"] == b"unsupported_email"
    detail = dict(dlq.headers)["dlq-detail"].decode()
    assert "SMTPUTF8" in detail and "HOOKSTREAM_SMTP_UTF8" in detail
    assert "jürgen" not in detail  # the reason never repeats the respondent's address
    error = codec.decode_as("AutomationError", err.value)
    assert error["kind"] == "unsupported_email" and error["field"] == "email"

    # An internationalised domain is deliverable (IDNA) with or without SMTPUTF8.
    [inv] = off.transform(_raw("ann@Bücher.example"))
    assert inv.topic == TOPICS.due
    assert codec.decode_as("InvitationRequested", inv.value)["email"] == "ann@bücher.example"

    on = Transformer(TOPICS, {"a1": snap}.get, day_seconds=10.0, clock=lambda: 1000.0,
                     smtp_utf8=True)
    [inv] = on.transform(_raw("jürgen@example.com"))
    assert inv.topic == TOPICS.due
    assert codec.decode_as("InvitationRequested", inv.value)["email"] == "jürgen@example.com"
