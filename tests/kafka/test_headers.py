"""Header helpers: absent, empty and unreadable values read as missing."""

from __future__ import annotations

from core.kafka.headers import DLQ_HEADERS, RAW_HEADERS, header, integer, text


def test_header_takes_the_first_occurrence() -> None:
    headers = [("a", b"1"), ("b", b"2"), ("a", b"3")]
    assert header(headers, "a") == b"1"
    assert header(headers, "c") is None and header(None, "a") is None


def test_integer_reads_digits_and_treats_the_rest_as_missing() -> None:
    assert integer(b"1700000000000") == 1_700_000_000_000
    assert integer(b"-5") == -5
    for raw in (None, b"", b"12a", b"1.5", b"\xff"):
        assert integer(raw) is None, raw


def test_text_decodes_and_replaces_bad_bytes() -> None:
    assert text(b"caf\xc3\xa9") == "café"
    assert text(b"\xff") == "\ufffd"
    assert text(None) is None and text(b"") == ""


def test_the_wire_names_of_the_contract() -> None:
    # Literal on purpose: renaming a constant must not silently change the wire contract.
    assert RAW_HEADERS == ("content-type", "received-at", "request-id", "idempotency-key")
    assert DLQ_HEADERS == ("dlq-reason", "dlq-detail", "dlq-record-index", "dlq-source",
                           "dlq-at")
