"""The Avro codec: round trips, the single-object header, the fingerprint, clear errors."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec
from tests.schemas.avro_reference import canonical_form, crc64_avro

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
T0 = datetime(2026, 11, 29, 9, 30, 15, 123000, tzinfo=UTC)  # millisecond precision


def _avsc(name: str) -> dict[str, Any]:
    """The published `.avsc`, read without any hookstream code."""
    return json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())


def invitation(**over: Any) -> dict[str, Any]:
    rec = {
        "invitation_id": "0b6f2c8e-3c1d-5a8e-9a43-2f1e6d0c9b77",
        "automation_id": "aut_7Qx2", "automation_version": 12, "survey_id": "srv_1",
        "event_id": "evt_01HZX", "record_index": 3, "email": "anne.de.vries@example.nl",
        # One value of every branch of the map's union.
        "variables": {"city": "Utrecht", "age": 42, "score": 7.25, "member": True,
                      "opted_out": False, "middle_name": None, "joined": "2024-02-29",
                      "naïve": "café ☕"},
        "received_at": T0, "due_at": T0 + timedelta(days=3), "delay_days": 3,
    }
    rec.update(over)
    return rec


def outcome(**over: Any) -> dict[str, Any]:
    rec = {"invitation_id": "0b6f2c8e", "automation_id": "aut_7Qx2", "survey_id": "srv_1",
           "status": "failed", "reason": "550 mailbox unavailable", "smtp_code": 550,
           "attempts": 1, "message_id": "<0b6f2c8e@hookstream.local>", "at": T0}
    rec.update(over)
    return rec


def automation_error(**over: Any) -> dict[str, Any]:
    rec = {"error_id": "err_1", "automation_id": "aut_7Qx2", "kind": "type_mismatch",
           "detail": "The field 'age' does not fit the number variable 'age'.",
           "source": "streams", "field": "age", "event_id": "evt_01HZX", "record_index": 0,
           "invitation_id": None, "at": T0, "count": 1, "since": None}
    rec.update(over)
    return rec


def snapshot(**over: Any) -> dict[str, Any]:
    rec = {
        "id": "aut_7Qx2", "version": 12, "name": "Welcome survey", "survey_id": "srv_1",
        "survey_name": "Onboarding", "enabled": False,
        "disabled_reason": "10 consecutive failures",
        "message": {"id": "msg_1", "name": "Invite", "subject": "Hi {{ first_name }}",
                    "body": "Please fill in {{ survey_link }}"},
        "variables": [{"name": "first_name", "type": "text", "options": []},
                      {"name": "age", "type": "number", "options": []},
                      {"name": "plan", "type": "choice", "options": ["free", "pro"]}],
        "email_field": "customer.email", "fields_mode": "exclude",
        "fields_paths": ["customer.phone", "items.0.sku"],
        "filters_json": json.dumps({"all": [{"field": "customer.city", "op": "eq",
                                             "value": "Utrecht"}]}),
        "mapping": [{"field": "customer.first_name", "variable": "first_name"},
                    {"field": "customer.phone", "variable": None}],
        "delay_days": 0, "error_notifications_enabled": True,
        "error_recipients": ["ops@example.nl"],
        "api_keys": [{"sha256": "a" * 64, "expires_at": None},
                     {"sha256": "b" * 64, "expires_at": T0 + timedelta(hours=1)}],
        "updated_at": T0,
        "auth_mode": "both", "signature_scheme": "standard",
        "signing_secrets": [{"id": "sec_1", "sealed": "v1.bm9uY2U", "expires_at": None}],
        "throttle_days": 30,
        "send_window": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00",
                        "end": "17:00", "time_zone": "Europe/Amsterdam",
                        "time_zone_field": "customer.tz"},
        "rate_limit": 2.5, "rate_burst": 7, "max_body_bytes": 4096,  # issue 13
    }
    rec.update(over)
    return rec


def counts(**over: Any) -> dict[str, Any]:
    rec = {"automation_id": "aut_7Qx2", "at": T0, "accepted": 7, "filtered": 3, "failed": 1,
           "invited": 3, "filtered_by": {"age gte 18: the value (text) does not meet it": 2,
                                         "country eq 'NL': the field is missing": 1},
           "failed_by": {"type_mismatch": 1}}
    rec.update(over)
    return rec


RECORDS = {
    "InvitationRequested": [invitation(), invitation(variables={}, record_index=0)],
    "InvitationOutcome": [outcome(), outcome(status="sent", reason=None, smtp_code=None,
                                             message_id=None, attempts=3),
                          outcome(status="throttled", reason="throttled: invited before",
                                  smtp_code=None, message_id=None, attempts=0)],
    "AutomationError": [automation_error(),
                        automation_error(field=None, event_id=None, record_index=None,
                                         invitation_id="inv_1", source="notifier"),
                        automation_error(kind="refused_invalid_api_key", source="ingress",
                                         field=None, event_id=None, record_index=None,
                                         count=41, since=T0 - timedelta(minutes=1))],
    "AutomationSnapshot": [snapshot(), snapshot(disabled_reason=None, filters_json=None,
                                                api_keys=[], variables=[], mapping=[],
                                                auth_mode="key", signing_secrets=[],
                                                throttle_days=0, send_window=None,
                                                rate_limit=None, rate_burst=None,
                                                max_body_bytes=None)],
    "AutomationCounts": [counts(), counts(filtered_by={}, failed_by={}, accepted=0)],
}


def test_every_schema_has_records_here() -> None:
    assert set(RECORDS) == set(codec.NAMES)
    assert {p.stem for p in SCHEMA_DIR.glob("*.avsc")} == set(codec.NAMES)


@pytest.mark.parametrize("name,record", [(n, r) for n, rs in RECORDS.items() for r in rs])
def test_round_trip(name: str, record: dict[str, Any]) -> None:
    data = codec.encode(name, record)
    got_name, got = codec.decode(data)
    assert got_name == name
    assert got == record
    assert codec.decode_as(name, data) == record


def test_map_values_keep_their_type() -> None:
    got = codec.decode_as("InvitationRequested", codec.encode("InvitationRequested",
                                                              invitation()))["variables"]
    assert {k: type(v) for k, v in got.items()} == {
        "city": str, "age": int, "score": float, "member": bool, "opted_out": bool,
        "middle_name": type(None), "joined": str, "naïve": str}
    # A whole-number float stays a double (not narrowed to long).
    one = codec.decode_as("InvitationRequested", codec.encode(
        "InvitationRequested", invitation(variables={"x": 1.0})))["variables"]["x"]
    assert type(one) is float


def test_timestamps_take_ms_and_decode_aware() -> None:
    ms = int(T0.timestamp() * 1000)
    got = codec.decode_as("InvitationRequested", codec.encode(
        "InvitationRequested", invitation(received_at=ms)))
    assert got["received_at"] == T0
    assert got["received_at"].tzinfo is not None
    assert got["received_at"].utcoffset() == timedelta(0)
    # A datetime in another zone is the same instant.
    cet = T0.astimezone(timezone(timedelta(hours=1)))
    got = codec.decode_as("InvitationOutcome", codec.encode("InvitationOutcome", outcome(at=cet)))
    assert got["at"] == T0


# --- the header and the fingerprint -----------------------------------------------------

def test_reference_crc64_matches_published_values() -> None:
    # Values published by other Avro implementations' tests (Ruby, Go, C#); they pin down our
    # reference implementation before it judges the codec.
    assert crc64_avro(b'"int"') == 0x7275D51A3F395C8F
    assert crc64_avro(b'"string"') == 0x8F014872634503C7
    assert crc64_avro(b'"null"') == 7195948357588979594


def test_hand_written_canonical_form() -> None:
    tiny = {
        "type": "record", "name": "Tiny", "namespace": "ex.ample", "doc": "dropped",
        "aliases": ["Old"], "fields": [
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"},
             "doc": "dropped", "default": 0},
            {"name": "maybe", "type": ["null", {"type": "string"}], "default": None},
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["a", "b"]}},
            {"name": "again", "type": "Kind"},
            {"name": "tags", "type": {"type": "map", "values": {"type": "array",
                                                                "items": "int"}}},
            {"name": "id", "type": {"type": "fixed", "name": "other.Id", "size": 16}},
        ]}
    expected = (
        '{"name":"ex.ample.Tiny","type":"record","fields":['
        '{"name":"at","type":"long"},'
        '{"name":"maybe","type":["null","string"]},'
        '{"name":"kind","type":{"name":"ex.ample.Kind","type":"enum","symbols":["a","b"]}},'
        '{"name":"again","type":"ex.ample.Kind"},'
        '{"name":"tags","type":{"type":"map","values":{"type":"array","items":"int"}}},'
        '{"name":"id","type":{"name":"other.Id","type":"fixed","size":16}}]}')
    assert canonical_form(tiny) == expected
    assert fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(tiny)) == expected


@pytest.mark.parametrize("name", codec.NAMES)
def test_fingerprint_is_crc64_avro_of_canonical_form(name: str) -> None:
    pcf = canonical_form(_avsc(name))
    # Our canonical form and fastavro's agree, so the fingerprint input is the spec's.
    assert pcf == fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(_avsc(name)))
    expected = crc64_avro(pcf.encode("utf-8")).to_bytes(8, "little")  # spec: little endian
    assert codec.fingerprint(name) == expected


@pytest.mark.parametrize("name", codec.NAMES)
def test_header_is_single_object_encoding(name: str) -> None:
    data = codec.encode(name, RECORDS[name][0])
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == crc64_avro(canonical_form(_avsc(name)).encode()).to_bytes(8, "little")
    assert codec.schema_of(data) == name


def test_fingerprints_are_distinct() -> None:
    assert len({codec.fingerprint(n) for n in codec.NAMES}) == len(codec.NAMES)


@pytest.mark.parametrize("name", codec.NAMES)
def test_plain_fastavro_decodes_a_message(name: str) -> None:
    data = codec.encode(name, RECORDS[name][0])
    schema = fastavro.parse_schema(_avsc(name))  # from the .avsc alone
    got = fastavro.schemaless_reader(io.BytesIO(data[10:]), schema, None)
    assert got == RECORDS[name][0]


# --- clear errors -----------------------------------------------------------------------

def test_unknown_fingerprint_is_a_clear_error() -> None:
    data = codec.encode("AutomationError", automation_error())
    forged = data[:2] + bytes(8) + data[10:]
    with pytest.raises(codec.CodecError, match=r"unknown schema fingerprint 0000000000000000"):
        codec.decode(forged)
    with pytest.raises(codec.CodecError, match="unknown schema fingerprint"):
        codec.decode_as("AutomationError", forged)


@pytest.mark.parametrize("data", [b"", b"\xc3", b"{\"json\": true}", b"\x00\x01" + bytes(12),
                                  b"\xc3\x02" + bytes(12), b"\xc3\x01\x00"])
def test_bad_magic_or_short_message_is_a_clear_error(data: bytes) -> None:
    with pytest.raises(codec.CodecError, match="does not start with C3 01"):
        codec.decode(data)


def test_wrong_schema_for_decode_as() -> None:
    data = codec.encode("InvitationOutcome", outcome())
    with pytest.raises(codec.CodecError, match="expected a InvitationRequested message, got "
                                                "InvitationOutcome"):
        codec.decode_as("InvitationRequested", data)


def test_corrupt_body_is_a_clear_error() -> None:
    data = codec.encode("AutomationError", automation_error())
    with pytest.raises(codec.CodecError, match="corrupt AutomationError message"):
        codec.decode(data[:-3])
    with pytest.raises(codec.CodecError, match="2 trailing bytes"):
        codec.decode(data + b"\x00\x00")


def test_unknown_schema_name_and_bad_record_are_clear_errors() -> None:
    with pytest.raises(codec.CodecError, match="unknown schema 'Nope'"):
        codec.encode("Nope", {})
    bad = automation_error()
    del bad["kind"]
    with pytest.raises(codec.CodecError, match="cannot encode a AutomationError.*kind"):
        codec.encode("AutomationError", bad)
    with pytest.raises(codec.CodecError, match="cannot encode a InvitationRequested"):
        codec.encode("InvitationRequested", invitation(variables={"x": [1, 2]}))


# --- property: random InvitationRequested records survive a round trip --------------------

LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT = st.integers(min_value=-(2**31), max_value=2**31 - 1)
MS = st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999)  # years 1..9999
VALUE = st.one_of(st.none(), st.booleans(), LONG, st.floats(allow_nan=False), st.text())


@settings(max_examples=150, deadline=None)
@given(ids=st.lists(st.text(), min_size=5, max_size=5), version=LONG, index=INT, delay=INT,
       variables=st.dictionaries(st.text(), VALUE, max_size=12), received=MS, due=MS)
def test_invitation_round_trip_property(ids: list[str], version: int, index: int, delay: int,
                                        variables: dict[str, Any], received: int,
                                        due: int) -> None:
    rec = invitation(invitation_id=ids[0], automation_id=ids[1], survey_id=ids[2],
                     event_id=ids[3], email=ids[4], automation_version=version,
                     record_index=index, delay_days=delay, variables=variables,
                     received_at=received, due_at=due)
    got = codec.decode_as("InvitationRequested", codec.encode("InvitationRequested", rec))
    assert got["received_at"] == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=received)
    assert got["due_at"] == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=due)
    rest = {k: v for k, v in rec.items() if k not in ("received_at", "due_at", "variables")}
    assert {k: got[k] for k in rest} == rest
    assert got["variables"].keys() == variables.keys()
    for key, value in variables.items():
        out = got["variables"][key]
        assert type(out) is type(value), key
        assert out == value, key
