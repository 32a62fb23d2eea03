"""Kafka record header names, in one place (as `Topics` is for topic names).

The ingress writes the first four on every `webhooks.raw` record (`RAW_HEADERS`); a replay
from the dead-letter topic adds `record-index`; the dead-letter headers travel with a record
moved to `webhooks.dlq`; `due-at` rides on the delay topic and the scheduler's changelog.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

CONTENT_TYPE: Final = "content-type"
RECEIVED_AT: Final = "received-at"  # milliseconds since the epoch, as ASCII digits
REQUEST_ID: Final = "request-id"  # the event id the ingress answered with
IDEMPOTENCY_KEY: Final = "idempotency-key"
RECORD_INDEX: Final = "record-index"  # a replayed record: the body is that one record
DUE_AT: Final = "due-at"  # milliseconds since the epoch: when a scheduled invitation is due

DLQ_REASON: Final = "dlq-reason"  # machine-readable reason (an AutomationError kind)
DLQ_DETAIL: Final = "dlq-detail"  # a sentence, no respondent data
DLQ_RECORD_INDEX: Final = "dlq-record-index"  # which record of a batch failed
DLQ_SOURCE: Final = "dlq-source"  # the service that gave up on the record
DLQ_AT: Final = "dlq-at"  # milliseconds since the epoch
DLQ_HEADERS: Final = (DLQ_REASON, DLQ_DETAIL, DLQ_RECORD_INDEX, DLQ_SOURCE, DLQ_AT)
# The topic a dead letter was read from, set when it is not webhooks.raw (an invitation that
# cannot be decoded): a replay onto webhooks.raw leaves such records alone.
DLQ_TOPIC: Final = "dlq-topic"
RAW_HEADERS: Final = (CONTENT_TYPE, RECEIVED_AT, REQUEST_ID, IDEMPOTENCY_KEY)


def header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> bytes | None:
    """The first value of header `name` (None when absent)."""
    for key, value in headers or ():
        if key == name:
            return value
    return None


def text(raw: bytes | None) -> str | None:
    """A header's value as text (UTF-8, undecodable bytes replaced), None when absent."""
    return None if raw is None else raw.decode("utf-8", "replace")


def integer(raw: bytes | None) -> int | None:
    """A header's value as an integer (ASCII digits); None when absent, empty or not a
    number: a header we cannot read counts as missing, and each caller has its fallback."""
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def dead_letter_headers(headers: Sequence[tuple[str, bytes]] | None, *, reason: str,
                        detail: str, source: str, at_ms: int, index: int | None = None,
                        topic: str | None = None) -> list[tuple[str, bytes]]:
    """A dead letter's headers: the record's own (earlier dlq-* ones dropped) and why it was
    set aside; `topic` when it was read from another topic than webhooks.raw."""
    out = [(k, v) for k, v in headers or () if k not in DLQ_HEADERS and k != DLQ_TOPIC]
    out += [(DLQ_REASON, reason.encode()), (DLQ_DETAIL, detail.encode()),
            (DLQ_SOURCE, source.encode()), (DLQ_AT, str(at_ms).encode())]
    if index is not None:
        out.append((DLQ_RECORD_INDEX, str(index).encode()))
    if topic is not None:
        out.append((DLQ_TOPIC, topic.encode()))
    return out


def replayed_headers(dlq_headers: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """The headers a dead letter carries back onto `webhooks.raw` when replayed: the ones the
    ingress wrote, plus which record of a batch failed; the dlq-* headers stay behind."""
    out = [(name, dlq_headers[name]) for name in RAW_HEADERS if name in dlq_headers]
    index = integer(dlq_headers.get(DLQ_RECORD_INDEX))
    if index is not None:
        out.append((RECORD_INDEX, str(index).encode()))
    return out
