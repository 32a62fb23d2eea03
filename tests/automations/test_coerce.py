"""Type coercion onto background variables: a table per type, errors without values,
idempotence."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from automations.coerce import CoercionError, coerce, normalize_email
from automations.snapshot import Variable

TEXT = Variable("note", "text")
NUMBER = Variable("age", "number")
DATE = Variable("birthday", "date")
BOOLEAN = Variable("member", "boolean")
EMAIL = Variable("contact", "email")
CHOICE = Variable("size", "choice", ("Small", "Medium", "Large", "3"))
ALL = (TEXT, NUMBER, DATE, BOOLEAN, EMAIL, CHOICE)


@pytest.mark.parametrize(("variable", "value", "expected"), [
    (TEXT, "Hallo wereld", "Hallo wereld"),
    (TEXT, "  spaces kept ", "  spaces kept "),
    (TEXT, 42, "42"),
    (TEXT, 3.5, "3.5"),
    (TEXT, True, "true"),
    (TEXT, "ünïcødé ✓", "ünïcødé ✓"),
    (NUMBER, 42, 42),
    (NUMBER, -7, -7),
    (NUMBER, 3.5, 3.5),
    (NUMBER, "3", 3),
    (NUMBER, " 3.5 ", 3.5),
    (NUMBER, "-0.25", -0.25),
    (NUMBER, "1e3", 1000.0),
    (NUMBER, "1,5", 1.5),
    (NUMBER, "-12,75", -12.75),
    (NUMBER, "9223372036854775807", 9223372036854775807),  # the largest Avro long
    (DATE, "2024-03-05", "2024-03-05"),
    (DATE, "2024-03-05T23:30:00+01:00", "2024-03-05"),  # the day as written
    (DATE, "2024-03-05T10:00:00Z", "2024-03-05"),
    (DATE, "2024-03-05 10:00", "2024-03-05"),
    (DATE, "05-03-2024", "2024-03-05"),  # day first
    (DATE, "5-3-2024", "2024-03-05"),
    (DATE, "05/03/2024", "2024-03-05"),
    (DATE, "31.12.2023", "2023-12-31"),
    (DATE, " 2024-02-29 ", "2024-02-29"),
    (DATE, date(2024, 3, 5), "2024-03-05"),
    (DATE, datetime(2024, 3, 5, 10, 0), "2024-03-05"),
    (BOOLEAN, True, True),
    (BOOLEAN, False, False),
    (BOOLEAN, 1, True),
    (BOOLEAN, 0, False),
    (BOOLEAN, "true", True),
    (BOOLEAN, "FALSE", False),
    (BOOLEAN, "yes", True),
    (BOOLEAN, "No", False),
    (BOOLEAN, " ja ", True),
    (BOOLEAN, "Nee", False),
    (BOOLEAN, "1", True),
    (BOOLEAN, "0", False),
    (EMAIL, "jan@example.nl", "jan@example.nl"),
    (EMAIL, "  Jan.Jansen+tag@Example.NL ", "Jan.Jansen+tag@example.nl"),
    (EMAIL, "josé@bücher.de", "josé@bücher.de"),
    (EMAIL, "a@B\u00dcCHER.de", "a@b\u00fccher.de"),
    (CHOICE, "Medium", "Medium"),
    (CHOICE, "medium", "Medium"),
    (CHOICE, " LARGE ", "Large"),
    (CHOICE, 3, "3"),
    (TEXT, None, None),
    (NUMBER, None, None),
])
def test_coerce_table(variable: Variable, value: Any, expected: Any) -> None:
    got = coerce(value, variable)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(("variable", "value"), [
    (TEXT, {"a": 1}),
    (TEXT, [1, 2]),
    (NUMBER, True),  # a boolean is not a number
    (NUMBER, "abc"),
    (NUMBER, ""),
    (NUMBER, "1,500"),  # ambiguous: thousands separator or decimal comma
    (NUMBER, "1.500,25"),
    (NUMBER, "1,000,000"),
    (NUMBER, "nan"),
    (NUMBER, "inf"),
    (NUMBER, float("inf")),
    (NUMBER, "1e999"),
    # Numbers keep their value or are refused (issue 15): never rounded, never zeroed.
    (NUMBER, "12345678901234567890"),  # beyond a 64-bit long
    (NUMBER, 2**70),
    (NUMBER, -(2**63) - 1),
    (NUMBER, "1e-400"),  # would become 0
    (NUMBER, "0.1e-999"),
    (NUMBER, [1]),
    (DATE, "2024-02-30"),
    (DATE, "2023-02-29"),
    (DATE, "13-13-2024"),
    (DATE, "03/05/24"),
    (DATE, "5 maart 2024"),
    (DATE, "2024-03-05Tnonsense"),
    (DATE, 20240305),
    (DATE, "05-03/2024"),  # mixed separators
    (BOOLEAN, "maybe"),
    (BOOLEAN, 2),
    (BOOLEAN, 1.0),
    (BOOLEAN, []),
    (EMAIL, "not an address"),
    (EMAIL, "jan@"),
    (EMAIL, "@example.nl"),
    (EMAIL, "jan@example"),
    (EMAIL, "jan@@example.nl"),
    (EMAIL, "jan@exa mple.nl"),
    (EMAIL, "Jan <jan@example.nl>"),
    (EMAIL, "jan..x@example.nl"),
    (EMAIL, "jan@-example.nl"),
    (EMAIL, "jan@example.nl."),
    (EMAIL, "jan@1.2.3.4"),
    (EMAIL, ""),
    (EMAIL, 42),
    (EMAIL, "x" * 65 + "@example.nl"),
    (CHOICE, "Huge"),
    (CHOICE, True),
    (CHOICE, ["Small"]),
])
def test_coerce_refuses_with_a_sentence_that_names_no_value(variable: Variable,
                                                            value: Any) -> None:
    with pytest.raises(CoercionError) as info:
        coerce(value, variable)
    message = str(info.value)
    assert message.startswith(f"variable '{variable.name}' expects ")
    assert info.value.variable == variable.name
    if isinstance(value, str) and len(value.strip()) > 2:
        assert value.strip() not in message


def test_choice_error_lists_options_and_number_error_explains_ambiguity() -> None:
    with pytest.raises(CoercionError, match="Small, Medium, Large"):
        coerce("Huge", CHOICE)
    with pytest.raises(CoercionError, match="ambiguous"):
        coerce("1,500", NUMBER)


def test_unknown_type_is_an_error() -> None:
    with pytest.raises(CoercionError, match="unknown variable type"):
        coerce("x", Variable("v", "colour"))  # type: ignore[arg-type]


def test_normalize_email_reasons() -> None:
    with pytest.raises(ValueError, match="exactly one @"):
        normalize_email("a@b@c.nl")
    assert normalize_email(" A@EXAMPLE.com ") == "A@example.com"


# --- properties ----------------------------------------------------------------------------

_inputs = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
           | st.text(max_size=12)
           | st.sampled_from(["3", "3.5", "1,5", "1,500", "2024-03-05", "05-03-2024",
                              "2024-03-05T10:00:00+02:00", "ja", "NEE", "yes", "0",
                              "Jan@Example.NL", " medium ", "a@b.co", "Small", "3"])
           | st.emails())


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL), _inputs)
def test_coercion_is_idempotent(variable: Variable, value: Any) -> None:
    try:
        once = coerce(value, variable)
    except CoercionError:
        return
    twice = coerce(once, variable)
    assert twice == once
    assert type(twice) is type(once)


@settings(max_examples=100, deadline=None)
@given(st.emails())
def test_generated_emails_are_accepted(address: str) -> None:
    assert coerce(address, EMAIL).endswith(address.split("@")[1].lower())


@settings(max_examples=100, deadline=None)
@given(st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False))
def test_numbers_round_trip_through_text(n: int | float) -> None:
    assert coerce(coerce(n, TEXT), NUMBER) == n
