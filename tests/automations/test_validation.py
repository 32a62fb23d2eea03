"""Validation of an automation's settings when it is saved (each case a 422 upstream)."""

from __future__ import annotations

from typing import Any

import pytest

from automations.problems import Problem
from automations.snapshot import FieldMapping
from automations.validation import validate_automation

VALID: dict[str, Any] = {
    "fields_mode": "include",
    "fields_paths": ["email", "customer", "items.0.sku"],
    "filters": {"all": [{"field": "customer.city", "op": "eq", "value": "Utrecht"},
                        {"field": "items.0.sku", "op": "regex", "value": "^A"}]},
    "mapping": [{"field": "customer.name", "variable": "name"},
                {"field": "customer.id", "variable": None},
                FieldMapping("items.0.sku", "product")],
    "email_field": "email",
    "variables": ["name", "product"],
    "subject": "Hoi {{ name }}",
    "body": "Vul in: {{survey_link}} over {{ product }}",
}


def problems(**changes: Any) -> list[Problem]:
    return validate_automation(**{**VALID, **changes})


def test_valid_settings_have_no_problems() -> None:
    assert problems() == []
    assert problems(fields_mode="exclude", fields_paths=[]) == []
    assert problems(filters=None, subject=None, body=None) == []


@pytest.mark.parametrize(("changes", "path", "fragment"), [
    ({"mapping": [{"field": "customer.name", "variable": "naam"}]},
     "mapping[0].variable", "the survey has no variable 'naam'"),
    ({"email_field": "contact.email"}, "email_field", "not taken in"),
    ({"fields_mode": "exclude", "fields_paths": ["email"]}, "email_field", "excluded"),
    ({"mapping": [{"field": "customer.name", "variable": "name"},
                  {"field": "age", "variable": "product"}]},
     "mapping[1].field", "field 'age' is mapped but not taken in"),
    ({"fields_mode": "exclude", "fields_paths": ["customer"]},
     "mapping[0].field", "among the excluded fields"),
    ({"filters": {"all": [{"field": "customer.city", "op": "equals", "value": "x"}]}},
     "filters.all[0].op", "unknown operator 'equals'"),
    ({"filters": {"field": "customer.city", "op": "regex", "value": "[a-"}},
     "filters.value", "does not compile"),
    ({"filters": {"field": "age", "op": "gt", "value": 3}},
     "filters.field", "not taken in"),
    ({"subject": "Hoi {{ voornaam }}"}, "message_id", "{{ voornaam }}"),
    ({"body": "{{ survey_link }} {{ city }}"}, "message_id", "no variable 'city'"),
    ({"mapping": [{"field": "customer.name", "variable": "name"},
                  {"field": "customer.nick", "variable": "name"}]},
     "mapping[1].variable", "already mapped by mapping[0]"),
    ({"mapping": [{"field": "a..b", "variable": None}]}, "mapping[0].field", "empty part"),
    ({"mapping": "name"}, "mapping", "must be a list"),
    ({"fields_mode": "some"}, "fields.mode", "'include' or 'exclude'"),
    ({"fields_paths": []}, "fields.paths", "at least one"),
    ({"fields_paths": ["email", ""]}, "fields.paths[1]", "non-empty"),
    ({"fields_paths": "email"}, "fields.paths", "must be a list"),
    ({"email_field": ""}, "email_field", "non-empty"),
])
def test_each_problem_names_the_field_and_the_reason(changes: dict[str, Any], path: str,
                                                     fragment: str) -> None:
    found = problems(**changes)
    assert any(p.field == path and fragment in p.reason for p in found), found


def test_skipped_fields_need_not_be_taken_in() -> None:
    assert problems(mapping=[{"field": "not.taken", "variable": None}]) == []


def test_message_path_can_be_changed() -> None:
    found = problems(subject="{{ x }}", message_path="message.subject")
    assert [p.field for p in found] == ["message.subject"]


def test_problems_are_the_shared_problem_type() -> None:
    # The control plane answers 422 with these as they are (code "invalid" until it says).
    (p,) = problems(email_field="nope")
    assert p == Problem("email_field", p.reason) and "'nope'" in p.reason
    assert p.code == "invalid"
