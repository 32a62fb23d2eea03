"""Send windows in the transform (no broker): an invitation due while its automation's window
is closed goes to the delay topic with due_at at the window's opening; one due while it is
open goes out as before."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import orjson

from automations.snapshot import WEEKDAYS, FieldMapping, SendWindow, Variable
from core.kafka.topics import Topics
from schemas import codec
from streams import metrics
from streams.records import RawRecord
from streams.transform import Transformer
from tests.streams.conftest import make_snapshot, raw_headers

TOPICS = Topics("u.")
AMS = ZoneInfo("Europe/Amsterdam")
NINE_TO_FIVE = SendWindow(WEEKDAYS, "09:00", "17:00", "Europe/Amsterdam", "tz")


def at(local: str, zone: ZoneInfo = AMS) -> int:
    return int(datetime.fromisoformat(local).replace(tzinfo=zone).timestamp() * 1000)


def snapshot(**changes: object):
    snap = make_snapshot("a1")
    return replace(snap, variables=(*snap.variables, Variable("tz", "text")),
                   mapping=(*snap.mapping, FieldMapping("tz", "tz")),
                   **{"send_window": NINE_TO_FIVE, **changes})


def run(snap, received: int, now: int | None = None, **body: object):
    t = Transformer(TOPICS, {"a1": snap}.get, day_seconds=86_400.0,
                    clock=lambda: (now if now is not None else received) / 1000)
    data = orjson.dumps({"email": "ann@example.com", **body})
    rec = RawRecord(b"a1", data, raw_headers("ev", received_at_ms=received), 0, 7, received)
    return t.transform(rec)


def test_due_at_23_00_waits_in_the_scheduler_until_09_00() -> None:
    held = metrics.WINDOW_HELD._value.get()
    [out] = run(snapshot(), at("2026-11-30T23:00"))
    assert out.topic == TOPICS.scheduled
    inv = codec.decode_as("InvitationRequested", out.value)
    assert inv["due_at"].astimezone(AMS) == datetime(2026, 12, 1, 9, 0, tzinfo=AMS)
    assert dict(out.headers)["due-at"] == str(at("2026-12-01T09:00")).encode()
    assert inv["received_at"].astimezone(AMS).hour == 23 and inv["delay_days"] == 0
    assert metrics.WINDOW_HELD._value.get() == held + 1


def test_due_inside_the_window_goes_out_at_once_unchanged() -> None:
    [out] = run(snapshot(), at("2026-11-30T10:15"))
    assert out.topic == TOPICS.due
    inv = codec.decode_as("InvitationRequested", out.value)
    assert int(inv["due_at"].timestamp() * 1000) == at("2026-11-30T10:15")


def test_the_respondents_zone_decides_when_it_names_one() -> None:
    # 23:00 in Amsterdam is 17:00 in New York, after its window: 09:00 New York time.
    ny = ZoneInfo("America/New_York")
    [out] = run(snapshot(), at("2026-11-30T23:00"), tz="America/New_York")
    inv = codec.decode_as("InvitationRequested", out.value)
    assert inv["due_at"].astimezone(ny) == datetime(2026, 12, 1, 9, 0, tzinfo=ny)
    # 10:15 in Amsterdam is 18:15 in Tokyo: closed there, although open in Amsterdam.
    tokyo = ZoneInfo("Asia/Tokyo")
    [out] = run(snapshot(), at("2026-11-30T10:15"), tz="Asia/Tokyo")
    assert out.topic == TOPICS.scheduled
    inv = codec.decode_as("InvitationRequested", out.value)
    assert inv["due_at"].astimezone(tokyo) == datetime(2026, 12, 1, 9, 0, tzinfo=tokyo)
    # Not a zone: the automation's, and counted.
    fallbacks = metrics.WINDOW_ZONE_FALLBACK._value.get()
    [out] = run(snapshot(), at("2026-11-30T10:15"), tz="Mars/Olympus")
    assert out.topic == TOPICS.due
    assert metrics.WINDOW_ZONE_FALLBACK._value.get() == fallbacks + 1


def test_a_delay_ends_in_the_window_and_a_late_record_is_not_sent_into_a_closed_one() -> None:
    # Received Friday 16:00 with a 1-day delay: due Saturday 16:00; a weekday window opens
    # on Monday 09:00.
    weekdays = replace(NINE_TO_FIVE, days=("mon", "tue", "wed", "thu", "fri"))
    [out] = run(snapshot(delay_days=1, send_window=weekdays), at("2026-12-04T16:00"))
    inv = codec.decode_as("InvitationRequested", out.value)
    assert inv["due_at"].astimezone(AMS) == datetime(2026, 12, 7, 9, 0, tzinfo=AMS)
    # Received at 16:59 but read by the worker at 17:05 (lag): it waits for 09:00.
    [out] = run(snapshot(), at("2026-11-30T16:59"), now=at("2026-11-30T17:05"))
    assert out.topic == TOPICS.scheduled
    inv = codec.decode_as("InvitationRequested", out.value)
    assert inv["due_at"].astimezone(AMS) == datetime(2026, 12, 1, 9, 0, tzinfo=AMS)


def test_a_window_this_worker_cannot_use_dead_letters_the_record() -> None:
    bad = replace(NINE_TO_FIVE, time_zone="Nowhere/Atlantis", time_zone_field=None)
    dlq, error = run(snapshot(send_window=bad), at("2026-11-30T23:00"))
    assert dlq.topic == TOPICS.dlq and dict(dlq.headers)["dlq-reason"] == b"invalid_send_window"
    err = codec.decode_as("AutomationError", error.value)
    assert err["kind"] == "invalid_send_window" and "time_zone" in err["detail"]
