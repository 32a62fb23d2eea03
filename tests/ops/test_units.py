"""Pure pieces of the ops tools: lag arithmetic, topic names, replay selection, body rendering."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.kafka.headers import replayed_headers as raw_headers
from core.kafka.lag import _lag
from ops.dlq import ReplayFilter
from ops.reading import ReadError, parse_from, resolve_topic
from ops.tap import body_value

offsets = st.integers(min_value=0, max_value=10**12)


@given(committed=st.one_of(st.none(), offsets), begin=offsets, extra=offsets)
def test_lag_is_what_is_left_to_read(committed: int | None, begin: int, extra: int) -> None:
    end = begin + extra
    lag = _lag(committed, begin, end)
    assert 0 <= lag <= end - begin  # never negative, never more than is retained
    if committed is None or committed <= begin:
        assert lag == end - begin
    elif committed <= end:
        assert lag == end - committed
    else:
        assert lag == 0  # committed past the end (a truncated topic): nothing to read


def test_resolve_topic_short_full_and_foreign() -> None:
    assert resolve_topic("invitations.due", "hs.") == ("hs.invitations.due", "invitations.due")
    assert resolve_topic("prod.webhooks.dlq", "hs.") == ("prod.webhooks.dlq", "webhooks.dlq")
    assert resolve_topic("hs_webhooks.raw", "hs_") == ("hs_webhooks.raw", "webhooks.raw")
    assert resolve_topic("other-topic", "hs.") == ("other-topic", None)


def test_parse_from() -> None:
    assert parse_from("beginning") == "beginning" and parse_from("end") == "end"
    assert parse_from("2026-01-01T00:00:00Z") == 1_767_225_600_000
    assert parse_from("2026-01-01T00:00:00") == 1_767_225_600_000  # naive: UTC
    assert parse_from("2026-01-01T01:00:00+01:00") == 1_767_225_600_000
    with pytest.raises(ReadError, match="ISO-8601"):
        parse_from("last tuesday")


def test_raw_headers_keep_the_contract_and_set_record_index() -> None:
    dlq = {"content-type": b"application/json", "received-at": b"1", "request-id": b"ev",
           "idempotency-key": b"k", "dlq-reason": b"missing_email", "dlq-detail": b"x",
           "dlq-record-index": b"7", "dlq-source": b"streams", "dlq-at": b"2",
           "something-else": b"?"}
    assert raw_headers(dlq) == [("content-type", b"application/json"), ("received-at", b"1"),
                                ("request-id", b"ev"), ("idempotency-key", b"k"),
                                ("record-index", b"7")]
    del dlq["dlq-record-index"], dlq["idempotency-key"]
    assert [k for k, _ in raw_headers(dlq)] == ["content-type", "received-at", "request-id"]


def test_replay_filter() -> None:
    h = {"dlq-reason": b"bad_json", "dlq-at": b"1000"}
    assert ReplayFilter().matches(b"a", h, 0)
    assert ReplayFilter(automation="a").matches(b"a", h, 0)
    assert not ReplayFilter(automation="a").matches(b"b", h, 0)
    assert ReplayFilter(reasons=frozenset({"bad_json", "x"})).matches(b"a", h, 0)
    assert not ReplayFilter(reasons=frozenset({"missing_email"})).matches(b"a", h, 0)
    assert ReplayFilter(since_ms=1000, until_ms=1001).matches(b"a", h, 0)  # since inclusive
    assert not ReplayFilter(until_ms=1000).matches(b"a", h, 0)  # until exclusive
    assert not ReplayFilter(since_ms=1001).matches(b"a", h, 0)
    # Without dlq-at, the Kafka record's timestamp decides.
    assert ReplayFilter(since_ms=500).matches(b"a", {}, 600)
    assert not ReplayFilter(since_ms=500).matches(b"a", {}, 400)


def test_body_value_text_only_for_json() -> None:
    assert body_value(b'{"a": 1}') == ('{"a": 1}', "text")
    assert body_value(b'{"a": 1}\n{"b": 2}\n') == ('{"a": 1}\n{"b": 2}\n', "text")  # NDJSON
    assert body_value(b"not json") == (base64.b64encode(b"not json").decode(), "base64")
    assert body_value(b"\xff") == ("/w==", "base64")
