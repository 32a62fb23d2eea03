"""Request bodies: accepted content types and the records a body holds."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from automations.bodies import BodyError, parse_body

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
