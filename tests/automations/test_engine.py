"""What an automation does with a record: the engine (`process`) and the dry run."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from automations.dry_run import dry_run
from automations.engine import Accepted, FilteredOut, Rejected, compile_automation
from automations.snapshot import (
    ApiKeyHash,
    AutomationSnapshot,
    FieldMapping,
    MessageTemplate,
    Variable,
)


def snapshot(**changes: Any) -> AutomationSnapshot:
    base = AutomationSnapshot(
        id="auto-1", version=1, name="Na aankoop", survey_id="s-1", survey_name="NPS",
        enabled=True,
        message=MessageTemplate("m-1", "Uitnodiging", "Hoi {{ name }}", "{{ survey_link }}"),
        variables=(Variable("name", "text"), Variable("age", "number"),
                   Variable("birthday", "date"), Variable("member", "boolean"),
                   Variable("size", "choice", ("S", "M", "L"))),
        email_field="contact.email",
        fields_mode="exclude", fields_paths=("secret", "contact.phone"),
        filters={"all": [{"field": "country", "op": "eq", "value": "NL"}]},
        mapping=(FieldMapping("contact.name", "name"), FieldMapping("age", "age"),
                 FieldMapping("born", "birthday"), FieldMapping("member", "member"),
                 FieldMapping("items.0.size", "size"), FieldMapping("internal_id", None)),
        delay_days=0, error_notifications_enabled=False, error_recipients=(),
        api_keys=(ApiKeyHash("0" * 64),), updated_at=datetime(2024, 1, 1, tzinfo=UTC),
    )
    return dataclasses.replace(base, **changes)


GOOD: dict[str, Any] = {
    "country": "nl",
    "contact": {"email": " Jan@Example.NL ", "name": "Jan", "phone": "0612345678"},
    "age": "42", "born": "05-03-1980", "member": "ja",
    "items": [{"size": "m"}], "internal_id": 77, "secret": "s3cr3t",
}


# --- process -------------------------------------------------------------------------------

def test_accepted_record_is_taken_in_filtered_and_mapped() -> None:
    out = compile_automation(snapshot()).process(GOOD)
    assert isinstance(out, Accepted)
    assert out.email == "Jan@example.nl"
    assert out.variables == {"name": "Jan", "age": 42, "birthday": "1980-03-05",
                             "member": True, "size": "M"}
    assert "secret" not in out.taken_in
    assert "phone" not in out.taken_in["contact"]
    assert out.taken_in["internal_id"] == 77  # skipped in the mapping, still taken in


def test_filtered_out_reason_has_no_values() -> None:
    out = compile_automation(snapshot()).process({**GOOD, "country": "Belgium"})
    assert isinstance(out, FilteredOut)
    assert out.reason.startswith("country eq 'NL'")
    assert "Belgium" not in out.reason


def test_filters_see_only_taken_in_fields() -> None:
    snap = snapshot(filters={"field": "secret", "op": "exists"})
    assert isinstance(compile_automation(snap).process(GOOD), FilteredOut)


def test_filtered_out_wins_over_errors() -> None:
    record = {"country": "BE", "age": "old"}
    assert isinstance(compile_automation(snapshot()).process(record), FilteredOut)


@pytest.mark.parametrize(("changes", "kind", "field"), [
    ({"contact": {"name": "Jan"}}, "missing_email", "contact.email"),
    ({"contact": {"email": None}}, "missing_email", "contact.email"),
    ({"contact": {"email": "  "}}, "missing_email", "contact.email"),
    ({"contact": {"email": "jan-at-example.nl"}}, "invalid_email", "contact.email"),
    ({"contact": {"email": ["a@b.nl"]}}, "invalid_email", "contact.email"),
    ({"age": "veertig"}, "type_mismatch", "age"),
    ({"born": "1980-02-30"}, "type_mismatch", "born"),
    ({"member": "misschien"}, "type_mismatch", "member"),
    ({"items": [{"size": "XXL"}]}, "type_mismatch", "items.0.size"),
    ({"contact": {"email": "jan@example.nl", "name": {"first": "Jan"}}}, "type_mismatch",
     "contact.name"),
])
def test_rejections(changes: dict[str, Any], kind: str, field: str) -> None:
    out = compile_automation(snapshot()).process({**GOOD, **changes})
    assert isinstance(out, Rejected)
    assert [(e.kind, e.field) for e in out.errors] == [(kind, field)]
    detail = out.errors[0].detail
    for value in ("veertig", "misschien", "XXL", "jan-at-example.nl", "1980-02-30"):
        assert value not in detail
    if kind == "type_mismatch":
        assert f"field '{field}'" in detail and "variable '" in detail


def test_all_errors_of_a_record_are_listed() -> None:
    out = compile_automation(snapshot()).process({**GOOD, "contact": {}, "age": "x",
                                                  "member": "?"})
    assert isinstance(out, Rejected)
    assert [e.kind for e in out.errors] == ["missing_email", "type_mismatch", "type_mismatch"]


@pytest.mark.parametrize("record", [[1, 2], "text", 42, None, True])
def test_not_an_object(record: Any) -> None:
    out = compile_automation(snapshot()).process(record)
    assert isinstance(out, Rejected)
    assert out.errors[0].kind == "not_object"
    assert out.errors[0].field is None


def test_missing_or_null_mapped_fields_leave_the_variable_absent() -> None:
    record = {"country": "NL", "contact": {"email": "a@b.nl", "name": None}}
    out = compile_automation(snapshot()).process(record)
    assert isinstance(out, Accepted)
    assert out.variables == {}


def test_first_present_value_wins_for_a_variable_mapped_twice() -> None:
    snap = snapshot(mapping=(FieldMapping("nick", "name"), FieldMapping("contact.name", "name")))
    out = compile_automation(snap).process(GOOD)
    assert isinstance(out, Accepted) and out.variables == {"name": "Jan"}
    out = compile_automation(snap).process({**GOOD, "nick": "Jantje"})
    assert isinstance(out, Accepted) and out.variables == {"name": "Jantje"}


def test_include_mode_and_no_filters() -> None:
    snap = snapshot(fields_mode="include", fields_paths=("contact.email", "age"), filters=None)
    out = compile_automation(snap).process(GOOD)
    assert isinstance(out, Accepted)
    assert out.taken_in == {"contact": {"email": " Jan@Example.NL "}, "age": "42"}
    assert out.variables == {"age": 42}  # the other mapped fields are not taken in


def test_compile_cache_by_id_and_version() -> None:
    snap = snapshot()
    assert compile_automation(snap) is compile_automation(snap)
    assert compile_automation(snap) is compile_automation(snapshot())  # equal snapshot
    changed = snapshot(filters=None)  # same id and version, other content: not stale
    assert compile_automation(changed) is not compile_automation(snap)
    assert isinstance(compile_automation(changed).process({**GOOD, "country": "BE"}), Accepted)
    newer = snapshot(version=2)
    assert compile_automation(newer).snapshot.version == 2


def test_mapping_onto_unknown_variable_is_reported_as_a_configuration_problem() -> None:
    snap = snapshot(mapping=(FieldMapping("age", "leeftijd"),))
    compiled = compile_automation(snap)
    assert compiled.problems and "leeftijd" in compiled.problems[0]
    assert isinstance(compiled.process(GOOD), Accepted)


# --- dry run -------------------------------------------------------------------------------

def test_dry_run_shows_everything_and_is_json() -> None:
    records = [GOOD, {**GOOD, "country": "BE"}, {**GOOD, "age": "old", "contact": {}}, [1]]
    result = dry_run(snapshot(), records)
    json.dumps(result)  # serializable
    assert result["summary"] == {"records": 4, "accepted": 1, "filtered_out": 1, "rejected": 2}
    first, second, third, fourth = result["records"]
    assert first["outcome"] == "accepted"
    assert "secret" in first["fields_found"] and "contact.phone" in first["fields_found"]
    assert "secret" not in first["fields_taken_in"]
    assert "items.0.size" in first["fields_taken_in"]
    assert first["filters"] == {"passed": True, "failed": None}
    assert first["email"] == "Jan@example.nl"
    assert first["variables"]["birthday"] == "1980-03-05"
    assert first["errors"] == []
    assert second["outcome"] == "filtered_out"
    assert second["filters"] == {"passed": False, "failed": "country eq 'NL': the value is 'BE'"}
    assert second["variables"]["age"] == 42  # still shown
    assert third["outcome"] == "rejected"
    assert {e["kind"] for e in third["errors"]} == {"missing_email", "type_mismatch"}
    assert third["errors"][1] == {"kind": "type_mismatch", "field": "age",
                                  "detail": third["errors"][1]["detail"]}
    assert fourth["outcome"] == "rejected"
    assert fourth["errors"][0]["kind"] == "not_object"
    assert result["automation_id"] == "auto-1" and result["version"] == 1
