"""The filter language: a table of cases per operator, validation, verdicts, properties."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from automations.filters import (
    OPERATORS,
    REGEX_UNSUPPORTED,
    FilterError,
    compile_filter,
    compile_regex,
    regex_search,
    validate_filter,
)

RECORD: dict[str, Any] = {
    "email": "jan@example.nl",
    "customer": {"city": "Utrecht", "name": None, "nick": "", "blank": "  ",
                 "street": "Straße 5", "accented": "Cafe\u0301"},  # decomposed é
    "items": [{"sku": "A1", "qty": 2, "price": "9.95"}, {"sku": "b2", "qty": "10"}],
    "tags": ["vip", "Nieuw"],
    "age": 42,
    "age_text": "42",
    "zip": "01234",
    "score": 3.5,
    "active": True,
    "active_text": "TRUE",
    "joined": "2024-03-05",
    "seen_at": "2024-03-05T23:30:00+01:00",
    "naive_at": "2024-03-05T10:00:00",
    "meta": {},
    "list_empty": [],
}


def holds(field: str, op: str, value: Any = None, **extra: Any) -> bool:
    cond: dict[str, Any] = {"field": field, "op": op, **extra}
    if value is not None or op in ("eq", "ne"):
        cond["value"] = value
    return compile_filter(cond).test(RECORD)


CASES: list[tuple[str, str, Any, bool]] = [
    # eq: text (case-insensitive, unicode), numbers, dates, null, booleans, nested, arrays
    ("customer.city", "eq", "Utrecht", True),
    ("customer.city", "eq", "utrecht", True),
    ("customer.city", "eq", " UTRECHT ", True),
    ("customer.city", "eq", "Amsterdam", False),
    ("customer.street", "eq", "STRASSE 5", True),  # case folding: ß = ss
    ("customer.accented", "eq", "café", True),  # NFC: decomposed equals composed
    ("customer.accented", "eq", "CAFÉ", True),
    ("items.0.sku", "eq", "a1", True),
    ("items.1.sku", "eq", "B2", True),
    ("items.5.sku", "eq", "A1", False),
    ("age", "eq", 42, True),
    ("age", "eq", "42", True),  # number given as text on the filter side
    ("age_text", "eq", 42, True),  # number given as text in the record
    ("age_text", "eq", 42.0, True),
    ("age_text", "eq", "42.0", False),  # two texts compare as text
    ("zip", "eq", "1234", False),  # leading zero kept: text vs text
    ("zip", "eq", 1234, True),  # a real number on one side: numbers
    ("score", "eq", "3.5", True),
    ("active", "eq", True, True),
    ("active", "eq", False, False),
    ("active_text", "eq", True, True),
    ("active", "eq", "true", False),  # a text value never equals JSON true
    ("customer.name", "eq", None, True),
    ("customer.zip", "eq", None, False),  # missing is not null
    ("age", "eq", None, False),
    ("joined", "eq", "2024-03-05", True),
    ("seen_at", "eq", "2024-03-05", True),  # the day the date-time states
    ("seen_at", "eq", "2024-03-05T22:30:00Z", True),  # same instant
    ("naive_at", "eq", "2024-03-05T10:00:00+00:00", True),  # no offset means UTC
    ("missing", "eq", "x", False),
    # ne is exactly not eq
    ("customer.city", "ne", "Amsterdam", True),
    ("customer.city", "ne", "utrecht", False),
    ("missing", "ne", "x", True),
    ("customer.name", "ne", None, False),
    # in / not_in
    ("customer.city", "in", ["Amsterdam", "utrecht"], True),
    ("customer.city", "in", ["Amsterdam", "Rotterdam"], False),
    ("age", "in", ["41", 42], True),
    ("tags", "in", ["nieuw", "x"], True),  # array field: any element
    ("tags", "in", ["x"], False),
    ("missing", "in", ["x"], False),
    ("customer.name", "in", [None, "x"], True),
    ("customer.city", "not_in", ["Amsterdam"], True),
    ("customer.city", "not_in", ["UTRECHT"], False),
    ("missing", "not_in", ["x"], True),
    # contains
    ("customer.city", "contains", "tre", True),
    ("customer.city", "contains", "TRE", True),
    ("customer.city", "contains", "xyz", False),
    ("tags", "contains", "VIP", True),  # array: an equal element
    ("tags", "contains", "vi", False),  # not a substring of an element
    ("age", "contains", 4, True),  # numbers as written
    ("missing", "contains", "a", False),
    ("customer.name", "contains", "a", False),
    ("customer.street", "contains", "strasse", True),
    # starts_with / ends_with
    ("email", "starts_with", "JAN@", True),
    ("email", "starts_with", "piet", False),
    ("email", "ends_with", "@example.nl", True),
    ("email", "ends_with", ".com", False),
    ("zip", "starts_with", "0", True),
    ("age", "starts_with", 4, True),
    ("missing", "starts_with", "a", False),
    ("customer.name", "ends_with", "a", False),
    ("tags", "starts_with", "v", False),
    ("customer.accented", "ends_with", "É", True),
    # regex: as written, case-sensitive; search, not full match
    ("email", "regex", r"@example\.(nl|be)$", True),
    ("email", "regex", "^JAN", False),
    ("email", "regex", "(?i)^JAN", True),
    ("age", "regex", r"^\d+$", True),
    ("missing", "regex", ".*", False),
    ("customer.name", "regex", ".*", False),
    ("customer.city", "regex", "^Utr", True),
    # ordering: numbers (also as text), dates, texts
    ("age", "gt", 41, True),
    ("age", "gt", 42, False),
    ("age", "gte", 42, True),
    ("age", "lt", "100", True),
    ("age_text", "gt", 9, True),
    ("items.1.qty", "gt", "9", True),  # two numeric texts compare as numbers
    ("items.0.price", "lte", 9.95, True),
    ("items.0.price", "lt", 9.95, False),
    ("score", "gte", 3.5, True),
    ("joined", "gt", "2024-03-04", True),
    ("joined", "lt", "2024-03-05", False),
    ("joined", "lte", "2024-03-05T08:00:00Z", True),  # day granularity with a date side
    ("seen_at", "lte", "2024-03-05", True),  # 23:30+01:00 is on 2024-03-05
    ("seen_at", "gt", "2024-03-05T22:00:00Z", True),
    ("seen_at", "lt", "2024-03-05T22:00:00Z", False),
    ("customer.city", "gt", "amsterdam", True),  # texts: Unicode order, case folded
    ("customer.city", "lt", "Amsterdam", False),
    ("customer.city", "gt", 5, False),  # text against a number: never
    ("active", "gt", 0, False),  # booleans are not numbers
    ("customer.name", "gt", 0, False),
    ("missing", "lt", 10, False),
    ("tags", "gt", "a", False),
    # exists / not_exists: null exists
    ("customer.name", "exists", None, True),
    ("customer.city", "exists", None, True),
    ("items.1", "exists", None, True),
    ("items.2", "exists", None, False),
    ("missing", "exists", None, False),
    ("missing", "not_exists", None, True),
    ("customer.name", "not_exists", None, False),
    # empty / not_empty
    ("missing", "empty", None, True),
    ("customer.name", "empty", None, True),
    ("customer.nick", "empty", None, True),
    ("customer.blank", "empty", None, True),
    ("meta", "empty", None, True),
    ("list_empty", "empty", None, True),
    ("customer.city", "empty", None, False),
    ("age", "empty", None, False),
    ("active", "empty", None, False),
    ("tags", "not_empty", None, True),
    ("missing", "not_empty", None, False),
    ("customer.blank", "not_empty", None, False),
]


@pytest.mark.parametrize(("field", "op", "value", "expected"), CASES,
                         ids=[f"{f}-{o}-{v!r}" for f, o, v, _ in CASES])
def test_operator_table(field: str, op: str, value: Any, expected: bool) -> None:
    assert holds(field, op, value) is expected


def test_every_operator_has_cases() -> None:
    assert {op for _, op, _, _ in CASES} == set(OPERATORS)


@pytest.mark.parametrize(("field", "op", "value", "expected"), [
    ("customer.city", "eq", "utrecht", False),
    ("customer.city", "eq", "Utrecht", True),
    ("customer.city", "contains", "TRE", False),
    ("email", "starts_with", "JAN", False),
    ("customer.accented", "eq", "Café", True),  # NFC still applies
    ("tags", "in", ["nieuw"], False),
])
def test_case_sensitive_flag(field: str, op: str, value: Any, expected: bool) -> None:
    assert holds(field, op, value, case_sensitive=True) is expected


def test_groups() -> None:
    city = {"field": "customer.city", "op": "eq", "value": "Utrecht"}
    old = {"field": "age", "op": "gte", "value": 65}
    assert compile_filter({"all": [city]}).test(RECORD)
    assert not compile_filter({"all": [city, old]}).test(RECORD)
    assert compile_filter({"any": [city, old]}).test(RECORD)
    assert not compile_filter({"not": city}).test(RECORD)
    assert compile_filter({"all": [city, {"not": old}]}).test(RECORD)
    assert compile_filter({"all": []}).test(RECORD)
    assert compile_filter(None).test(RECORD)
    assert compile_filter({}).test(RECORD)


def test_verdict_names_the_failed_condition_with_and_without_values() -> None:
    f = compile_filter({"all": [
        {"field": "email", "op": "exists"},
        {"field": "customer.city", "op": "eq", "value": "Amsterdam"},
    ]})
    verdict = f(RECORD)
    assert not verdict.passed
    assert verdict.failed == "customer.city eq 'Amsterdam': the value is 'Utrecht'"
    assert verdict.failed_redacted is not None
    assert "customer.city eq 'Amsterdam'" in verdict.failed_redacted
    assert "Utrecht" not in verdict.failed_redacted
    assert f.explain(RECORD, with_values=False) == verdict.failed_redacted
    assert compile_filter({"field": "email", "op": "exists"})(RECORD).passed
    assert compile_filter({"field": "email", "op": "exists"})(RECORD).failed is None


def test_verdict_tells_a_value_of_the_wrong_type_apart() -> None:
    """A text where a number is compared is a type mismatch, counted apart from a number that
    merely does not meet the condition (the console counts filtered-out records by reason)."""
    f = compile_filter({"all": [{"field": "age", "op": "gte", "value": 18}]})
    wrong = f({"age": "old"})
    assert wrong.failed_redacted == "age gte 18: wrong type: the value is a text, not a number"
    assert wrong.failed == "age gte 18: the value is 'old', of the wrong type (not a number)"
    low = f({"age": 12})
    assert low.failed_redacted == "age gte 18: the value (a number) does not meet it"
    assert f({"age": "12"}).failed_redacted == "age gte 18: the value (a text) does not meet it"
    dates = compile_filter({"field": "d", "op": "lt", "value": "2024-01-01"})
    assert dates({"d": 5}).failed_redacted == "d lt '2024-01-01': wrong type: the value is a " \
        "number, not a date"
    flag = compile_filter({"field": "member", "op": "eq", "value": True})
    assert "wrong type" in (flag({"member": "yes"}).failed_redacted or "")
    assert "wrong type" not in (flag({"member": "false"}).failed_redacted or "")


def test_verdict_missing_field_any_and_not() -> None:
    v = compile_filter({"field": "customer.zip", "op": "starts_with", "value": "35"})(RECORD)
    assert v.failed == "customer.zip starts_with '35': the field is missing"
    v = compile_filter({"any": [{"field": "age", "op": "gt", "value": 50},
                                {"field": "customer.city", "op": "eq", "value": "Ede"}]})(RECORD)
    assert v.failed is not None and v.failed.startswith("none of the conditions holds")
    assert "age gt 50: the value is 42" in v.failed
    assert "42" not in (v.failed_redacted or "") and "Utrecht" not in (v.failed_redacted or "")
    v = compile_filter({"not": {"field": "email", "op": "ends_with", "value": ".nl"}})(RECORD)
    assert v.failed == "not (email ends_with '.nl'): it holds (the value is 'jan@example.nl')"
    assert v.failed_redacted == "not (email ends_with '.nl'): it holds"


# --- validation ----------------------------------------------------------------------------

@pytest.mark.parametrize(("tree", "path", "fragment"), [
    ({"field": "a", "op": "like", "value": "x"}, "filters.op", "unknown operator 'like'"),
    ({"all": [{"field": "a", "op": "eq", "value": 1},
              {"field": "a", "op": "bogus", "value": 1}]}, "filters.all[1].op", "unknown"),
    ({"field": "a", "op": "regex", "value": "(unclosed"}, "filters.value", "does not compile"),
    ({"field": "a", "op": "eq"}, "filters.value", "is required"),
    ({"field": "a", "op": "gt"}, "filters.value", "is required"),
    ({"field": "a", "op": "in", "value": "x"}, "filters.value", "non-empty list"),
    ({"field": "a", "op": "in", "value": []}, "filters.value", "non-empty list"),
    ({"field": "a", "op": "not_in", "value": [1, [2]]}, "filters.value", "item 1"),
    ({"field": "a", "op": "eq", "value": [1]}, "filters.value", "use 'in'"),
    ({"field": "a", "op": "exists", "value": 3}, "filters.value", "takes no value"),
    ({"field": "a", "op": "starts_with", "value": ""}, "filters.value", "non-empty text"),
    ({"field": "a", "op": "contains", "value": None}, "filters.value", "text or a number"),
    ({"field": "a", "op": "gt", "value": True}, "filters.value", "number, a date"),
    ({"op": "eq", "value": 1}, "filters.field", "is required"),
    ({"field": "a..b", "op": "eq", "value": 1}, "filters.field", "empty part"),
    ({"field": "a", "value": 1}, "filters.op", "is required"),
    ({"field": "a", "op": "eq", "value": 1, "extra": 1}, "filters.extra", "unknown key"),
    ({"field": "a", "op": "eq", "value": 1, "case_sensitive": "yes"},
     "filters.case_sensitive", "true or false"),
    ({"all": {"field": "a"}}, "filters.all", "must be a list"),
    ({"any": []}, "filters.any", "never holds"),
    ({"all": [], "any": []}, "filters", "exactly one key"),
    ({"not": [1]}, "filters.not", "must be an object"),
    ([1, 2], "filters", "must be an object"),
    ({"something": 1}, "filters", "neither a condition"),
    ({"any": [{"not": {"all": [{"field": "x", "op": "nope"}]}}]},
     "filters.any[0].not.all[0].op", "unknown operator"),
])
def test_validate_filter_problems(tree: Any, path: str, fragment: str) -> None:
    problems = validate_filter(tree)
    assert any(p.field == path and fragment in p.reason for p in problems), problems
    with pytest.raises(FilterError):
        compile_filter(tree)


def test_validate_filter_accepts_valid_trees() -> None:
    tree = {"all": [
        {"field": "customer.city", "op": "in", "value": ["Utrecht", "Ede"]},
        {"any": [{"field": "items.0.sku", "op": "regex", "value": "^A"},
                 {"not": {"field": "age", "op": "lt", "value": "18"}}]},
        {"field": "email", "op": "exists"},
        {"field": "x", "op": "empty", "value": None},
    ]}
    assert validate_filter(tree) == []
    assert validate_filter(None) == []
    assert validate_filter({}) == []


def test_validate_filter_depth_is_bounded() -> None:
    tree: Any = {"field": "a", "op": "exists"}
    for _ in range(40):
        tree = {"not": tree}
    assert any("deeper" in p.reason for p in validate_filter(tree))


def test_validate_filter_custom_prefix() -> None:
    assert validate_filter({"field": "a", "op": "x"}, prefix="f")[0].field == "f.op"


def test_regex_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import re2 as re

    calls = []
    real = re.compile

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    f = compile_filter({"field": "email", "op": "regex", "value": "^jan"})
    monkeypatch.setattr(re, "compile", counting)
    for _ in range(100):
        assert f.test(RECORD)
    assert calls == []


# --- properties ----------------------------------------------------------------------------

_values = (st.none() | st.booleans() | st.integers(-1000, 1000)
           | st.floats(-1e6, 1e6, allow_nan=False)
           | st.text(max_size=6) | st.sampled_from(["42", "3.5", "2024-03-05", "Utrecht",
                                                    "2024-03-05T10:00:00Z", "ja", " x "]))
_records = st.fixed_dictionaries({}, optional={
    "a": _values | st.lists(_values, max_size=3),
    "b": st.fixed_dictionaries({}, optional={"c": _values}),
})


def _condition() -> st.SearchStrategy[dict[str, Any]]:
    field = st.sampled_from(["a", "b.c", "b", "a.0", "zz"])
    simple = st.builds(lambda f, o, v: {"field": f, "op": o, "value": v}, field,
                       st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]),
                       _values.filter(lambda v: v is not None and v is not True
                                      and v is not False) | st.just("x"))
    listy = st.builds(lambda f, o, v: {"field": f, "op": o, "value": v}, field,
                      st.sampled_from(["in", "not_in"]), st.lists(_values, min_size=1,
                                                                  max_size=3))
    texty = st.builds(lambda f, o, v: {"field": f, "op": o, "value": v}, field,
                      st.sampled_from(["contains", "starts_with", "ends_with"]),
                      st.text(min_size=1, max_size=3))
    regex = st.builds(lambda f, v: {"field": f, "op": "regex", "value": v}, field,
                      st.sampled_from(["^a", r"\d", "x$", "(?i)utr"]))
    novalue = st.builds(lambda f, o: {"field": f, "op": o}, field,
                        st.sampled_from(["exists", "not_exists", "empty", "not_empty"]))
    return (simple | listy | texty | regex | novalue).filter(lambda c: not validate_filter(c))


_trees = st.recursive(_condition(), lambda kids: st.builds(lambda c: {"all": c},
                                                           st.lists(kids, max_size=3))
                      | st.builds(lambda c: {"any": c}, st.lists(kids, min_size=1, max_size=3))
                      | st.builds(lambda c: {"not": c}, kids), max_leaves=6)


@settings(max_examples=150, deadline=None)
@given(_trees, _records)
def test_not_inverts(tree: dict[str, Any], record: dict[str, Any]) -> None:
    assert compile_filter({"not": tree}).test(record) is (not compile_filter(tree).test(record))


@settings(max_examples=150, deadline=None)
@given(_trees, _records)
def test_all_and_any_of_one_equal_it(tree: dict[str, Any], record: dict[str, Any]) -> None:
    expected = compile_filter(tree).test(record)
    assert compile_filter({"all": [tree]}).test(record) is expected
    assert compile_filter({"any": [tree]}).test(record) is expected


@settings(max_examples=150, deadline=None)
@given(_condition(), _records)
def test_negated_operators_are_exact_inverses(cond: dict[str, Any], record: dict[str, Any]
                                              ) -> None:
    inverse = {"eq": "ne", "ne": "eq", "in": "not_in", "not_in": "in", "exists": "not_exists",
               "not_exists": "exists", "empty": "not_empty", "not_empty": "empty"}
    if cond["op"] not in inverse:
        return
    flipped = {**cond, "op": inverse[cond["op"]]}
    assert compile_filter(flipped).test(record) is (not compile_filter(cond).test(record))


@settings(max_examples=150, deadline=None)
@given(_trees, _records)
def test_verdict_agrees_with_test_and_explains_failures(tree: dict[str, Any],
                                                        record: dict[str, Any]) -> None:
    f = compile_filter(tree)
    verdict = f(record)
    assert verdict.passed is f.test(record)
    assert (verdict.failed is None) is verdict.passed
    assert (verdict.failed_redacted is None) is verdict.passed


# --- regex on a linear-time engine (issue 15) -------------------------------------------------

def test_a_catastrophic_pattern_runs_in_linear_time() -> None:
    """`(a+)+$` backtracks exponentially on Python's engine (41 characters froze the worker);
    on RE2 a 10,000-character value is one pass."""
    import re2

    f = compile_filter({"field": "v", "op": "regex", "value": "(a+)+$"})
    pattern = compile_regex("(a+)+$")
    assert isinstance(pattern, re2._Regexp)  # the engine, not a timing, is the guarantee
    value = "a" * 10_000 + "!"
    start = time.perf_counter()
    assert not f.test({"v": value})
    assert f.test({"v": "a" * 10_000})
    assert time.perf_counter() - start < 0.05  # generous: the backtracking engine never ends


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?P<x>a)(?P=x)", r"foo(?=bar)", r"foo(?!bar)",
                                     r"(?<=a)b", r"(?<!a)b", r"a++", r"(?>ab)"])
def test_syntax_only_a_backtracking_engine_runs_is_refused_by_name(pattern: str) -> None:
    problems = validate_filter({"field": "a", "op": "regex", "value": pattern})
    assert len(problems) == 1, problems
    assert problems[0].field == "filters.value"
    assert problems[0].code == REGEX_UNSUPPORTED
    assert "RE2" in problems[0].reason and "does not support" in problems[0].reason
    with pytest.raises(FilterError):
        compile_filter({"field": "a", "op": "regex", "value": pattern})


def test_python_syntax_re2_shares_still_works() -> None:
    record = {"email": "Jan.Jansen@Example.NL", "code": "AB-12"}
    for field, pattern, holds in (("email", r"(?i)@example\.nl$", True),
                                  ("email", r"^(?P<first>\w+)\.", True),
                                  ("code", r"\d{2}$", True), ("code", r"[[:alpha:]]{2}-", True),
                                  ("email", r"^x", False)):
        got = compile_filter({"field": field, "op": "regex", "value": pattern}).test(record)
        assert got is holds, pattern
    problems = validate_filter({"field": "a", "op": "regex", "value": "(unclosed"})
    assert problems[0].code == "invalid" and "does not compile" in problems[0].reason


@pytest.mark.parametrize("pattern", [r"^respondent\d+@example\.com$", "é+$", "(?i)ÉCOLE", "^$",
                                     r"\bword\b", "a|", "[^a]"])
@pytest.mark.parametrize("text", ["", "respondent12@example.com", "école", "ÉCOLE é", "a word",
                                  "ééé", "\ud800x", "b"])
def test_the_yes_no_search_agrees_with_re2s_own(pattern: str, text: str) -> None:
    compiled = compile_regex(pattern)
    try:
        expected = compiled.search(text) is not None
    except UnicodeEncodeError:  # the wrapper refuses a lone surrogate; the bytes go through
        expected = compiled.search(text.encode("utf-8", "surrogatepass")) is not None
    assert regex_search(compiled)(text) is expected


# The `in` condition's fast path (a set of normalised texts) against its reference (every
# operand through `_equals`): the same verdict for any value, texts that fold, pad or look
# like numbers, dates or booleans included.
_TEXTISH = st.one_of(st.text(max_size=12), st.sampled_from(
    ["pro", " PRO ", "Straße", "STRASSE", "ǅ", "1", "1.0", "true", "2026-03-14", "ﬁ", "é",
     "e\u0301"]))
_ANY = st.one_of(_TEXTISH, st.none(), st.booleans(), st.integers(-3, 3),
                 st.floats(allow_nan=False), st.lists(_TEXTISH, max_size=3))


@settings(max_examples=400, deadline=None)
@given(st.lists(_TEXTISH, min_size=1, max_size=5), _ANY, st.booleans())
def test_in_fast_path_matches_its_reference(values: list[str], v: Any, case: bool) -> None:
    from automations.filters import _make_test

    expected = _make_test("in", values, case).reference(v)  # type: ignore[attr-defined]
    assert _make_test("in", values, case)(v) is expected, (values, v)
    assert _make_test("not_in", values, case)(v) is (not expected), (values, v)
