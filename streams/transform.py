"""One raw webhook record in, the records it produces out: invitations, DLQ records, errors.

Pure apart from the clock: the Kafka loops (streams/raw_loop.py, and bench/streams.py's
baseline) feed it consumed records and send what it returns inside their transaction.
The domain does the per-record work (`automations.bodies` reads the body,
`automations.engine` judges each record); this module maps its verdicts onto the topics and
headers of the shared contract.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson

from automations.bodies import MAX_DEPTH, BodyError, parse_body
from automations.engine import (
    Accepted,
    CompiledAutomation,
    FilteredOut,
    Rejected,
    compile_automation,
)
from automations.error_events import automation_error
from automations.fastpath import fast_process
from automations.filters import FilterError
from automations.ids import invitation_id
from automations.send_window import WindowError, WindowRule
from automations.snapshot import AutomationSnapshot
from automations.validation import zone_variable
from core.kafka.headers import (
    CONTENT_TYPE,
    DLQ_AT,
    DLQ_DETAIL,
    DLQ_HEADERS,
    DLQ_REASON,
    DLQ_RECORD_INDEX,
    DLQ_SOURCE,
    DUE_AT,
    RECEIVED_AT,
    RECORD_INDEX,
    REQUEST_ID,
    header,
    integer,
    text,
)
from core.kafka.topics import Topics
from schemas import codec
from streams import metrics
from streams.counts import Tally
from streams.fast_avro import (
    encode_invitation,
    encode_invitation_fields,
    invitation_static,
)
from streams.records import Headers, Output, RawRecord

log = logging.getLogger(__name__)

ConfigLookup = Callable[[str], AutomationSnapshot | None]
_SIMPLE = frozenset({str, int, float, bool, type(None)})
# Label lookups cost microseconds a record: resolve the fixed ones once.
_ACCEPTED = metrics.RECORDS.labels("accepted")
_FILTERED = metrics.RECORDS.labels("filtered")
_DUE = metrics.INVITATIONS.labels("due")
_SCHEDULED = metrics.INVITATIONS.labels("scheduled")


@functools.lru_cache(maxsize=4096)
def _filtered(automation_id: str) -> Any:
    return metrics.FILTERED.labels(automation_id)


# A dead letter larger than this keeps only its head (the producer's batch is 1 MiB; headers
# and the error ride along): setting a record aside must not fail on its size.
DLQ_VALUE_MAX = 900 * 1024


def record_json(record: Any, body: bytes) -> bytes:
    """One record of a batch as JSON, for its dead letter; never fails on the record's shape.
    orjson stops at 255 levels of nesting; the standard library goes deeper; past that, the
    whole body as received (it holds the record, and the dead letter says which index)."""
    try:
        return orjson.dumps(record)
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        pass
    try:
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"),
                          default=str).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError, RecursionError, UnicodeError):
        return body


def dead_letter_value(value: bytes | None) -> bytes:
    """A dead letter's value: the record as it came, cut to `DLQ_VALUE_MAX` bytes."""
    value = value or b""
    return value if len(value) <= DLQ_VALUE_MAX else value[:DLQ_VALUE_MAX]


def plain(value: Any) -> Any:
    """A value the InvitationRequested variables map (null|boolean|long|double|string) takes."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


@dataclass(frozen=True, slots=True)
class _Plan:
    """A snapshot prepared for its records (`Transformer._plan`)."""

    snapshot: AutomationSnapshot
    compiled: CompiledAutomation | FilterError  # the error: its records go to the DLQ
    process: Callable[[Any], Any] | None  # compiled.process as one generated function
    window: WindowRule | WindowError | None
    static: bytes  # the Avro fields every invitation of the snapshot shares


class Transformer:
    def __init__(self, topics: Topics, config: ConfigLookup, day_seconds: float,
                 clock: Callable[[], float] = time.time, smtp_utf8: bool = False,
                 max_depth: int = MAX_DEPTH) -> None:
        self.topics = topics
        # The ingress's nesting cap (HOOKSTREAM_INGRESS_MAX_DEPTH): what it accepted parses.
        self.max_depth = max_depth
        self.smtp_utf8 = smtp_utf8  # issue 15: may an address have non-ASCII before the @?
        self.config = config
        self.day_ms = day_seconds * 1000.0
        self.day_seconds = day_seconds
        self.clock = clock
        # Outcome counts per automation, drained by the caller into `automations.counts`.
        self.tally = Tally()
        # What each snapshot needs per record, prepared once, by snapshot identity (snapshots
        # are immutable; a new version is a new object): one dict lookup a record instead of
        # the engine's locked LRU, the window and the static Avro fields one by one.
        self._plans: dict[int, _Plan] = {}
        # Accepted records and due / scheduled invitations not yet added to their Prometheus
        # counters: a counter's inc takes a lock (~0.5 us); the raw loop flushes once a batch.
        self._accepted = self._due = self._scheduled = 0

    def flush_metrics(self) -> None:
        """Add the counts kept since the last flush to the Prometheus counters."""
        if self._accepted:
            _ACCEPTED.inc(self._accepted)
        if self._due:
            _DUE.inc(self._due)
        if self._scheduled:
            _SCHEDULED.inc(self._scheduled)
        self._accepted = self._due = self._scheduled = 0

    def _plan(self, snap: AutomationSnapshot) -> _Plan:
        plan = self._plans.get(id(snap))
        if plan is not None and plan.snapshot is snap:
            return plan
        if len(self._plans) > 1024:
            self._plans.clear()  # snapshots replaced over time: bounded, rebuilt on use
        compiled: CompiledAutomation | FilterError
        try:
            compiled = compile_automation(snap)
        except FilterError as exc:
            compiled = exc
        # The transform reads an Accepted's email and variables, never its taken_in.
        process = None if isinstance(compiled, FilterError) else fast_process(compiled,
                                                                              taken_in=False)
        plan = _Plan(snap, compiled, process, self._window(snap),
                     invitation_static(snap.id, snap.version, snap.survey_id))
        self._plans[id(snap)] = plan  # holding snap keeps its id unique
        return plan

    def transform(self, rec: RawRecord) -> list[Output]:
        headers = rec.headers
        # The four headers read here, first occurrence of each (as header()), in one pass
        # rather than a dict of every header per record.
        request_id = received = record_index = content_type_raw = None
        for name, value in headers:
            if name == REQUEST_ID:
                if request_id is None:
                    request_id = value
            elif name == RECEIVED_AT:
                if received is None:
                    received = value
            elif name == CONTENT_TYPE:
                if content_type_raw is None:
                    content_type_raw = value
            elif name == RECORD_INDEX and record_index is None:
                record_index = value
        automation_id = rec.key.decode("utf-8", "replace") if rec.key else ""
        body = rec.value or b""
        event_id = text(request_id) or f"{self.topics.raw}/{rec.partition}/{rec.offset}"
        received_at = integer(received) or rec.timestamp_ms
        fixed_index = integer(record_index)

        snapshot = self.config(automation_id)
        if snapshot is None:
            return self._fail(automation_id, body, headers, event_id, None, "unknown_automation",
                              "No automation with this id is configured; the webhook was not "
                              "processed.", None)
        if not snapshot.enabled:
            return self._fail(automation_id, body, headers, event_id, None, "automation_disabled",
                              "The automation is disabled; enable it and replay the record from "
                              "the dead-letter topic.", None)

        content_type = text(content_type_raw) or "application/json"
        try:
            # Non-objects in a batch are rejected one by one below, not the whole body.
            parsed = parse_body(body, content_type, require_objects=False,
                                max_depth=self.max_depth)
        except BodyError as exc:
            return self._fail(automation_id, body, headers, event_id, None, exc.code,
                              exc.detail, None)

        plan = self._plan(snapshot)
        compiled = plan.compiled
        if isinstance(compiled, FilterError):
            # Saved before the regex engine was RE2 (issue 15), a pattern it cannot run: the
            # webhook waits on the dead-letter topic until the filter is fixed, rather than
            # retry a failure that every attempt repeats.
            return self._fail(automation_id, body, headers, event_id, None, "invalid_filter",
                              f"The automation's filters cannot be used: {compiled}", None)
        window = plan.window
        # A body that is its one record goes to the DLQ as received (a form must: its content
        # type travels with it); a record of a JSON batch goes as that record's JSON.
        single = len(parsed) == 1 and fixed_index is None and (
            body[:1] == b"{" or body.lstrip()[:1] != b"[")
        process = plan.process
        assert process is not None  # a compiled automation has its generated function
        out: list[Output] = []
        for i, record in enumerate(parsed):
            index = fixed_index + i if fixed_index is not None else i
            record_bytes = body if (single or fixed_index is not None) else None
            if type(record) is not dict and not isinstance(record, Mapping):
                out += self._fail(automation_id, record_bytes or record_json(record, body), headers,
                                  event_id, index, "not_object",
                                  f"Record {index} is not a JSON object.", None)
                continue
            try:
                verdict = process(record)
            except Exception as exc:  # noqa: BLE001 - an engine bug must not stop the stream
                log.exception("engine failed on %s record %d of event %s", automation_id, index,
                              event_id)
                out += self._fail(automation_id, record_bytes or record_json(record, body), headers,
                                  event_id, index, "internal_error",
                                  f"The record could not be processed ({type(exc).__name__}).",
                                  None)
                continue
            kind = type(verdict)
            if kind is Accepted and isinstance(window, WindowError):
                # Saved valid, unusable here (say, a zone this machine's database lacks): the
                # record waits on the dead-letter topic rather than go out of its window.
                out += self._fail(automation_id, record_bytes or record_json(record, body), headers,
                                  event_id, index, "invalid_send_window",
                                  f"The automation's send window cannot be used here: "
                                  f"{window}.", None)
            elif (kind is Accepted and not self.smtp_utf8 and not verdict.email.isascii()
                  and not verdict.email.partition("@")[0].isascii()):
                # Issue 15: no mail server connection without SMTPUTF8 can deliver it; a clear
                # reason here, not a permanent SMTP failure at the notifier.
                out += self._fail(automation_id, record_bytes or orjson.dumps(record), headers,
                                  event_id, index, "unsupported_email",
                                  "The e-mail address has non-ASCII characters before the @, "
                                  "which needs SMTPUTF8; this deployment's mail server "
                                  "connection is not set up for it (HOOKSTREAM_SMTP_UTF8).",
                                  snapshot.email_field)
            elif kind is Accepted:
                out.append(self._invitation(snapshot, event_id, index, verdict, received_at,
                                            window, plan.static))
                self._accepted += 1
                if self._accepted >= 1024:
                    self.flush_metrics()  # a caller that never flushes still counts
                self.tally.invited(automation_id)
            elif kind is FilteredOut:
                _filtered(automation_id).inc()
                _FILTERED.inc()
                self.tally.filtered(automation_id, verdict.reason)
            elif kind is Rejected:
                first = verdict.errors[0]
                detail = " ".join(e.detail for e in verdict.errors)
                out += self._fail(automation_id, record_bytes or record_json(record, body), headers,
                                  event_id, index, first.kind, detail, first.field)
            else:  # pragma: no cover - the engine's contract has exactly three verdicts
                raise TypeError(f"unexpected verdict {verdict!r}")
        return out

    def dead_letter(self, rec: RawRecord, reason: str, detail: str) -> list[Output]:
        """The dead letter and AutomationError of a record given up on as a whole (the loop's
        bounded retries): built from its key and headers only, so it cannot fail on it."""
        headers = list(rec.headers)
        automation_id = rec.key.decode("utf-8", "replace") if rec.key else ""
        event_id = text(header(headers, REQUEST_ID)) or \
            f"{self.topics.raw}/{rec.partition}/{rec.offset}"
        return self._fail(automation_id, dead_letter_value(rec.value), headers, event_id,
                          integer(header(headers, RECORD_INDEX)), reason, detail, None)

    def _invitation(self, snap: AutomationSnapshot, event_id: str, index: int,
                    verdict: Accepted, received_at: int,
                    window: WindowRule | None = None, static: bytes | None = None) -> Output:
        inv_id = invitation_id(snap.id, event_id, index)
        delay = snap.delay_days
        due_at = received_at + int(delay * self.day_ms)
        held = False
        if window is not None:
            now_ms = int(self.clock() * 1000)
            due_at = self._in_window(window, due_at, now_ms, verdict.variables)
            held = due_at > now_ms  # waits in the scheduler, as a delay does
        if static is None:
            static = self._plan(snap).static
        try:
            value = encode_invitation_fields(inv_id, static, event_id, index, verdict.email,
                                             verdict.variables, received_at, due_at, delay)
        except (TypeError, OverflowError):
            # A value the fast writer does not take as it is (a date, a Decimal...): plain it
            # and let the general writer (or the codec, which names the problem) handle it.
            value = encode_invitation({
                "invitation_id": inv_id, "automation_id": snap.id,
                "automation_version": snap.version, "survey_id": snap.survey_id,
                "event_id": event_id, "record_index": index, "email": verdict.email,
                "variables": {k: v if type(v) in _SIMPLE else plain(v)
                              for k, v in verdict.variables.items()},
                "received_at": received_at, "due_at": due_at, "delay_days": delay,
            })
        if delay > 0 or held:
            self._scheduled += 1
            return Output(self.topics.scheduled, inv_id.encode(), value,
                          [(DUE_AT, str(due_at).encode())])
        self._due += 1
        return Output(self.topics.due, inv_id.encode(), value, [])

    # -- send windows (issue 16) -------------------------------------------------------------

    def _window(self, snap: AutomationSnapshot) -> WindowRule | WindowError | None:
        """The snapshot's send window compiled (or why it cannot be); `_plan` keeps it."""
        if snap.send_window is None:
            return None
        rule: WindowRule | WindowError
        try:
            rule = WindowRule(snap.send_window, zone_variable(snap.send_window, snap.mapping))
        except WindowError as exc:
            log.error("automation %s: its send window cannot be used: %s", snap.id, exc)
            rule = exc
        return rule

    def _in_window(self, window: WindowRule, due_at: int, now_ms: int,
                   variables: Mapping[str, Any]) -> int:
        """When an invitation due at `due_at` may go out: due_at (or now, if that is later)
        when the window is open then, else the moment it opens, in the respondent's zone
        when a valid one was mapped, else the automation's."""
        zone, own = window.zone_for(variables)
        if window.zone_variable is not None and not own:
            metrics.WINDOW_ZONE_FALLBACK.inc()
        base = max(due_at, now_ms)  # a record read late is not sent into a closed window
        release = window.release_ms(base, zone, self.day_seconds)
        if release == base:
            return due_at
        metrics.WINDOW_HELD.inc()
        return release

    def _fail(self, automation_id: str, value: bytes, headers: Headers, event_id: str,
              index: int | None, reason: str, detail: str, field: str | None) -> list[Output]:
        """The failing record to the DLQ and an AutomationError (no respondent values)."""
        metrics.RECORDS.labels("failed").inc()
        metrics.DLQ.labels(reason).inc()
        self.tally.failed(automation_id, reason)
        now_ms = int(self.clock() * 1000)
        dlq_headers = [(k, v) for k, v in headers if k not in DLQ_HEADERS]
        dlq_headers += [(DLQ_REASON, reason.encode()), (DLQ_DETAIL, detail.encode()),
                        (DLQ_SOURCE, b"streams"), (DLQ_AT, str(now_ms).encode())]
        if index is not None:
            dlq_headers.append((DLQ_RECORD_INDEX, str(index).encode()))
        error = codec.encode("AutomationError", automation_error(
            identity=(automation_id, event_id, index, reason), automation_id=automation_id,
            kind=reason, detail=detail, source="streams", at_ms=now_ms, field=field,
            event_id=event_id, record_index=index))
        key = automation_id.encode()
        return [Output(self.topics.dlq, key, value, dlq_headers),
                Output(self.topics.errors, key, error, [])]

