"""How the scheduler reads a record of the delay topic (no broker)."""

from __future__ import annotations

from dataclasses import replace

from aiokafka import ConsumerRecord

from core.kafka.topics import Topics
from streams.records import Output, RawRecord
from streams.scheduler import _parse_scheduled
from streams.transform import Transformer
from tests.streams.conftest import make_snapshot, raw_headers

TOPICS = Topics("u.")
DUE_MS = 500_000 + 2 * 10_000  # received at 500 s, two days of 10 s


def scheduled() -> Output:
    snap = replace(make_snapshot("a1"), delay_days=2)
    t = Transformer(TOPICS, {"a1": snap}.get, day_seconds=10.0, clock=lambda: 1000.0)
    [out] = t.transform(RawRecord(b"a1", b'{"email": "x@example.com"}',
                                  raw_headers("ev", received_at_ms=500_000), 0, 0, 1))
    assert out.topic == TOPICS.scheduled
    return out


def consumed(out: Output, headers: list[tuple[str, bytes]], key: bytes | None) -> ConsumerRecord:
    return ConsumerRecord(TOPICS.scheduled, 0, 7, 1, 0, key, out.value, None,
                          len(key or b""), len(out.value or b""), headers)


def test_due_at_and_id_come_from_the_header_and_key() -> None:
    out = scheduled()
    assert _parse_scheduled(consumed(out, out.headers, out.key)) == (
        out.key.decode(), DUE_MS, out.value)
    # The header wins: the scheduler need not decode the value.
    assert _parse_scheduled(consumed(out, [("due-at", b"123")], out.key))[1] == 123


def test_without_a_readable_due_at_the_record_itself_says() -> None:
    out = scheduled()
    for headers in ([], [("due-at", b"")], [("due-at", b"soon")]):
        assert _parse_scheduled(consumed(out, headers, out.key)) == (
            out.key.decode(), DUE_MS, out.value), headers
    assert _parse_scheduled(consumed(out, [], None)) == (out.key.decode(), DUE_MS, out.value)


def test_an_empty_or_undecodable_record_says_why() -> None:
    out = scheduled()
    # Not skipped: the reason it cannot be scheduled, for its dead letter.
    assert "empty record" in _parse_scheduled(consumed(replace(out, value=None), [], out.key))
    assert "cannot be decoded" in _parse_scheduled(consumed(replace(out, value=b"junk"), [],
                                                            out.key))
