"""AutomationError records: one builder, deterministic ids, valid against the schema."""

from __future__ import annotations

import uuid

from automations.error_events import ERROR_NAMESPACE, automation_error, error_id
from notifier.events import invitation_error
from schemas import codec


def test_error_id_is_uuid5_of_the_identity_joined_by_nul() -> None:
    assert error_id(("a1", "ev", None, "bad_json")) == str(
        uuid.uuid5(ERROR_NAMESPACE, "a1\x00ev\x00None\x00bad_json"))
    assert error_id(("a1", "ev", 0, "bad_json")) != error_id(("a1", "ev", 1, "bad_json"))
    assert error_id(("a1", "ev", 0, "bad_json")) != error_id(("a1", "ev", 0, "not_object"))


def test_the_record_encodes_as_an_automation_error() -> None:
    record = automation_error(identity=("i-1", "smtp_permanent"), automation_id="a1",
                              kind="smtp_permanent", detail="The server refused it.",
                              source="notifier", at_ms=1_700_000_000_000, invitation_id="i-1")
    decoded = codec.decode_as("AutomationError", codec.encode("AutomationError", record))
    assert decoded["error_id"] == error_id(("i-1", "smtp_permanent"))
    assert decoded["invitation_id"] == "i-1" and decoded["field"] is None
    assert int(decoded["at"].timestamp() * 1000) == 1_700_000_000_000


def test_the_notifier_builds_its_errors_with_it_deterministically() -> None:
    req = {"invitation_id": "i-1", "automation_id": "a1", "event_id": "ev", "record_index": 3}
    first = invitation_error(req, "smtp_permanent", "The server refused it.")
    again = invitation_error(req, "smtp_permanent", "The server refused it.")
    assert first["error_id"] == again["error_id"] == error_id(("i-1", "smtp_permanent"))
    assert invitation_error(req, "template_error", "x")["error_id"] != first["error_id"]
    assert (first["source"], first["record_index"], first["event_id"]) == ("notifier", 3, "ev")
    codec.encode("AutomationError", first)  # valid against the schema
