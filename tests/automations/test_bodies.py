"""Request bodies: accepted content types and the records a body holds."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from automations.bodies import MAX_DEPTH, BodyError, _bytes_deeper_than, depth_exceeds, parse_body

# --- parse_body ----------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "content_type", "expected"), [
    (b'{"a": 1}', "application/json", [{"a": 1}]),
    (b'{"a": 1}', None, [{"a": 1}]),
    (b'{"a": 1}', "application/json; charset=utf-8", [{"a": 1}]),
    (b'{"a": 1}', "Application/JSON;charset=\"UTF-8\"", [{"a": 1}]),
    (b'{"a": 1}', "application/vnd.example+json", [{"a": 1}]),
    (b'[{"a": 1}, {"a": 2}]', "application/json", [{"a": 1}, {"a": 2}]),
    (b'\xef\xbb\xbf{"a": 1}', "application/json", [{"a": 1}]),
    (b'{"a": 1}\n\n{"a": 2}\r\n  \n', "application/x-ndjson", [{"a": 1}, {"a": 2}]),
    (b'{"a": 1}', "application/ndjson", [{"a": 1}]),
    ('{"stad": "Zoë"}'.encode(), "application/json", [{"stad": "Zoë"}]),
])
def test_parse_body(body: bytes, content_type: str | None, expected: list[Any]) -> None:
    assert parse_body(body, content_type) == expected


@pytest.mark.parametrize(("body", "content_type", "code", "fragment"), [
    (b"", "application/json", "empty", "empty"),
    (b"  \n ", "application/json", "empty", "empty"),
    (b"[]", "application/json", "empty", "no records"),
    (b"\n\n", "application/x-ndjson", "empty", "empty"),
    (b'{"a": 1,}', "application/json", "bad_json", "line 1, column 8"),
    (b'{\n  "a": x\n}', "application/json", "bad_json", "line 2, column 8"),
    (b'{"a": 1}\n{"a": \n', "application/x-ndjson", "bad_json", "line 2"),
    (b'\xff\xfe{}', "application/json", "bad_json", "UTF-8"),
    (b'[{"a": 1}, 2]', "application/json", "not_object", "record 1 (item 1) is a number"),
    (b'"hello"', "application/json", "not_object", "the body is a text"),
    (b"null", "application/json", "not_object", "null"),
    (b'{"a": 1}\n\n[1]', "application/x-ndjson", "not_object", "record 1 (line 3) is an array"),
    (b'{"a": 1}', "text/plain", "unsupported_media_type", "application/json"),
    (b"a=1", "multipart/mixed; boundary=x", "unsupported_media_type", "not supported"),
    (b"a=1", "application/x-www-form-urlencoded; charset=utf-16", "unsupported_media_type",
     "ASCII-compatible"),
    (b'{"a": 1}', "application/json; charset=latin-1", "unsupported_media_type", "UTF-8"),
])
def test_parse_body_errors(body: bytes, content_type: str | None, code: str,
                           fragment: str) -> None:
    with pytest.raises(BodyError) as info:
        parse_body(body, content_type)
    assert info.value.code == code
    assert fragment in info.value.detail


def test_parse_body_lenient_keeps_non_objects_for_per_record_rejection() -> None:
    assert parse_body(b'[{"a": 1}, 2]', "application/json", require_objects=False) == [
        {"a": 1}, 2]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=5),
                                st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
                                | st.text(max_size=5), max_size=4), min_size=1, max_size=5))
def test_parse_body_round_trips_json_and_ndjson(records: list[dict[str, Any]]) -> None:
    assert parse_body(json.dumps(records).encode(), "application/json") == records
    ndjson = "\n".join(json.dumps(r) for r in records).encode()
    assert parse_body(ndjson, "application/x-ndjson") == records


# --- the parser's limits (issue 15): each a BodyError with its own code --------------------

def _nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


@pytest.mark.parametrize("content_type", [None, "application/x-ndjson"])
def test_nesting_is_capped_with_its_own_code(content_type: str | None) -> None:
    assert parse_body(_nested(MAX_DEPTH), content_type)  # at the limit: read
    for depth in (MAX_DEPTH + 1, 300, 1000, 5000):  # orjson's own limit is 1024
        with pytest.raises(BodyError) as info:
            parse_body(_nested(depth), content_type)
        assert info.value.code == "too_deep"
        assert str(MAX_DEPTH) in info.value.detail
    with pytest.raises(BodyError, match="too_deep"):
        parse_body(_nested(10), None, max_depth=9)
    # A wide batch of flat records has many brackets but no depth.
    assert len(parse_body(b"[" + b",".join([b'{"a":[1]}'] * 500) + b"]", None)) == 500


@pytest.mark.parametrize("body", [
    b'{"n": 1180591620717411303424}',  # 2**70 (orjson: 1.1805916207174113e+21)
    b'{"n": 18446744073709551616}',  # 2**64
    b'{"n": -9223372036854775809}',  # -2**63 - 1
    b'{"n": 1e-400}',  # orjson: 0.0
    b'{"n": 0.0000000000000000000000000000000000000000000000000000000000001e-300}',
    b'{"n": 1e400}',  # orjson: an error about infinity
    b'[{"a": 1}, {"n": [[-1E+999]]}]',
])
def test_numbers_that_would_lose_their_value_are_refused(body: bytes) -> None:
    with pytest.raises(BodyError) as info:
        parse_body(body, None)
    assert info.value.code == "number_out_of_range"
    with pytest.raises(BodyError, match="number_out_of_range"):
        parse_body(b'{"ok": 1}\n' + body + b"\n", "application/x-ndjson")


def test_numbers_that_keep_their_value_and_digit_strings_pass() -> None:
    [record] = parse_body(b'{"a": 18446744073709551615, "b": -9223372036854775808, '
                          b'"c": 0.000000000000000000000, "d": 1e-300, "e": 5e-324, '
                          b'"f": "1180591620717411303424", "g": "1e-400", "h": 1.5e308}', None)
    assert record["a"] == 2**64 - 1 and type(record["a"]) is int
    assert record["b"] == -(2**63)
    assert record["c"] == 0.0 and record["d"] == 1e-300 and record["e"] == 5e-324
    assert record["f"] == "1180591620717411303424" and record["g"] == "1e-400"


@pytest.mark.parametrize(("body", "code"), [
    (b'{"a": NaN}', "bad_json"),
    (b'{"a": Infinity}', "bad_json"),
    (b'{"a": "\xff"}', "bad_json"),  # not UTF-8
    (b'{"a": "\xed\xa0\x80"}', "bad_json"),  # a UTF-8-encoded surrogate
    (b"\xef\xbb\xbf", "empty"),  # a BOM alone
])
def test_other_parser_refusals(body: bytes, code: str) -> None:
    with pytest.raises(BodyError) as info:
        parse_body(body, None)
    assert info.value.code == code


def test_brackets_and_escapes_in_strings_do_not_fool_the_depth_check() -> None:
    # Brackets in strings would pair with real ones if strings were not set aside.
    sneaky = (b'{"a":' * 40 + b'"]]]]}}}}\\"[[[[{{{{\\\\"' + b"}" * 40)
    assert parse_body(sneaky, None)  # 40 deep: within the limit
    hidden = b'[' * 40 + b'"]]]]]]]]]]]]]]][[[[[[[[[[[[[[[["' + b"," + b"[" * 40 + b"]" * 80
    with pytest.raises(BodyError, match="too_deep"):
        parse_body(hidden, None, require_objects=False)


_json = st.recursive(st.none() | st.integers(-5, 5) | st.text("[]{}\"\\ab", max_size=6),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text("[]{}\"\\a", max_size=3), inner, max_size=3),
                     max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(_json, st.integers(1, 12))
def test_depth_from_bytes_agrees_with_the_document(doc: Any, limit: int) -> None:
    data = json.dumps(doc).encode()
    from_bytes = _bytes_deeper_than(data, limit)
    assert from_bytes is not None
    assert from_bytes == (isinstance(doc, dict | list) and depth_exceeds(doc, limit))
