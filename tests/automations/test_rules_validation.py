"""Save-time checks of the invitation rules (issue 16): throttle_days and the send window."""

from __future__ import annotations

from typing import Any

import pytest

from automations.snapshot import WEEKDAYS, SendWindow
from automations.validation import validate_automation, zone_variable
from tests.automations.test_validation import VALID

WINDOW = SendWindow(WEEKDAYS, "09:00", "17:00", "Europe/Amsterdam")
TYPES = {"name": "text", "product": "choice", "tz": "text", "age": "number"}


def problems(**changes: Any) -> list[tuple[str, str]]:
    settings = {**VALID, "variables": list(TYPES), "variable_types": TYPES,
                "fields_mode": "exclude", "fields_paths": [], **changes}
    return [(p.field, p.reason) for p in validate_automation(**settings)]


def test_rules_that_can_be_saved() -> None:
    assert problems(throttle_days=0, send_window=None) == []
    assert problems(throttle_days=3650, send_window=WINDOW) == []
    mapping = [*VALID["mapping"], {"field": "customer.tz", "variable": "tz"}]
    with_field = SendWindow(WEEKDAYS, "09:00", "17:00", "UTC", "customer.tz")
    assert problems(mapping=mapping, send_window=with_field) == []
    assert zone_variable(with_field, mapping) == "tz"


@pytest.mark.parametrize("days", [-1, 3651, 1.5, True, "7", None])
def test_throttle_days_is_a_whole_number_of_days(days: object) -> None:
    [(where, reason)] = problems(throttle_days=days)
    assert where == "throttle_days" and "from 0 (no limit) to 3650" in reason


@pytest.mark.parametrize(("mapping", "fragment"), [
    ([], "is not mapped onto a survey variable"),
    ([{"field": "customer.tz", "variable": None}], "is not mapped onto a survey variable"),
    ([{"field": "customer.tz", "variable": "age"}], "a number variable; a time zone name "
                                                    "needs a text or choice variable"),
])
def test_the_respondents_zone_field_must_be_mapped_onto_a_text_variable(
        mapping: list[dict[str, Any]], fragment: str) -> None:
    window = SendWindow(WEEKDAYS, "09:00", "17:00", "UTC", "customer.tz")
    found = problems(mapping=mapping, send_window=window)
    assert [w for w, _ in found] == ["send_window.time_zone_field"], found
    assert fragment in found[0][1]


def test_window_problems_carry_their_path() -> None:
    bad = SendWindow(("mon",), "17:00", "09:00", "Nowhere/City", "a..b")
    assert [w for w, _ in problems(send_window=bad)] == [
        "send_window.end", "send_window.time_zone", "send_window.time_zone_field"]
