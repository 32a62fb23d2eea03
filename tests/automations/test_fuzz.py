"""Fuzzing the request path's pure parts (issue 15): body parsing, flattening, filters,
take-in and mapping. Whatever bytes arrive, the only exception is the documented one
(`BodyError` with a known code); records then always get a verdict, a dry-run answer that
serialises, and a flat view, at any depth the parser lets through."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from automations.bodies import BodyError, parse_body
from automations.dry_run import dry_run
from automations.engine import Accepted, FilteredOut, Rejected, compile_automation
from automations.filters import validate_filter
from automations.paths import flatten
from automations.snapshot import AutomationSnapshot, FieldMapping, MessageTemplate, Variable

BODY_CODES = {"unsupported_media_type", "empty", "bad_json", "bad_form", "not_object",
              "too_deep", "number_out_of_range"}
CONTENT_TYPES = [None, "", "application/json", "application/vnd.x+json", "application/x-ndjson",
                 "application/ndjson", "application/x-www-form-urlencoded",
                 "application/x-www-form-urlencoded; charset=latin-1",
                 "application/x-www-form-urlencoded; charset=utf-16",
                 "multipart/form-data; boundary=xyz", "multipart/form-data",
                 "application/json; charset=utf-8", "application/json; charset=latin-1",
                 "text/plain", "application/jsonx", "application/json; boundary=\x00",
                 "\u00e9/\u00e9", "a" * 300]

_scalars = (st.none() | st.booleans() | st.integers() | st.floats()
            | st.text(max_size=30) | st.sampled_from(["", " ", "NL", "nl", "42", "3,5",
                                                      "1e-400", "2024-02-30", "a@b.co",
                                                      "\u00df", "\ud7ff", "\x00"]))
_docs = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8) | st.sampled_from(
                         ["email", "country", "age", "name", "customer", "city", "a.b", ""]),
                         inner, max_size=5), max_leaves=60)


def _deep(depth: int, leaf: str) -> str:
    return '{"a":' * depth + leaf + "}" * depth


def _to_bytes(doc: Any) -> bytes:
    # Python's writer: writes NaN/Infinity and integers of any size, as attackers do.
    return json.dumps(doc, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


_bodies = st.one_of(
    st.binary(max_size=300),
    _docs.map(_to_bytes),
    st.lists(_docs, max_size=5).map(lambda xs: b"\n".join(_to_bytes(x) for x in xs)),
    st.builds(lambda d, leaf: _deep(d, leaf).encode(), st.integers(0, 1500),
              st.sampled_from(["1", "[]", "1e999", "123456789012345678901234", '"x"'])),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"\xef\xbb\xbf{}", b"\xef\xbb\xbf", b"a=1&a[b]=2", b"a[b][c][d]=1",
                     b"%ZZ=1", b"x=" + b"%FF" * 10, gzip.compress(b'{"a": 1}'),
                     b"--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--xyz--",
                     b"[" * 2000, b"{" * 2000, b'{"a":1,"a":2}', b"NaN", b"-0", b"1" * 5000]),
)


def _snapshot(filters: dict[str, Any] | None) -> AutomationSnapshot:
    return AutomationSnapshot(
        id="fuzz", version=1, name="Fuzz", survey_id="s", survey_name="S", enabled=True,
        message=MessageTemplate("m", "Invite", "Hi {{ name }}", "Hi {{ name }}"),
        variables=(Variable("name", "text"), Variable("age", "number"),
                   Variable("member", "boolean"), Variable("born", "date"),
                   Variable("size", "choice", options=("S", "M", "L")),
                   Variable("city", "text")),
        email_field="email", fields_mode="exclude", fields_paths=("secret", "items.1"),
        filters=filters,
        mapping=(FieldMapping("name", "name"), FieldMapping("age", "age"),
                 FieldMapping("member", "member"), FieldMapping("born", "born"),
                 FieldMapping("size", "size"), FieldMapping("customer.city", "city")),
        delay_days=0, error_notifications_enabled=False, error_recipients=(), api_keys=(),
        updated_at=datetime.now(UTC))


_ops = ["eq", "ne", "gt", "gte", "lt", "lte", "contains", "starts_with", "ends_with", "in",
        "not_in", "exists", "not_exists", "empty", "not_empty"]
_conditions = st.builds(
    lambda field, op, value: {"field": field, "op": op, "value": (
        [value] if op in ("in", "not_in") else value)},
    st.sampled_from(["country", "age", "customer.city", "items.0", "name", "a.b.c"]),
    st.sampled_from(_ops), _scalars.filter(lambda v: not isinstance(v, float) or v == v))
# Only trees the control plane would save (it refuses the others with their problems).
_filters = (st.none() | st.builds(lambda cs: {"all": cs}, st.lists(_conditions, max_size=3))
            | st.builds(lambda cs: {"any": cs}, st.lists(_conditions, min_size=1, max_size=3))
            ).filter(lambda tree: not validate_filter(tree))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies, st.sampled_from(CONTENT_TYPES), _filters)
def test_no_exception_but_the_documented_ones(body: bytes, content_type: str | None,
                                              filters: dict[str, Any] | None) -> None:
    try:
        records = parse_body(body, content_type, require_objects=False)
    except BodyError as exc:
        assert exc.code in BODY_CODES, exc.code
        assert exc.detail
        return
    assert records
    snapshot = _snapshot(filters)
    compiled = compile_automation(snapshot)
    for record in records:
        flatten(record)
        if type(record) is dict:
            verdict = compiled.process(record)
            assert type(verdict) in (Accepted, FilteredOut, Rejected)
    answer = dry_run(snapshot, records)
    orjson.dumps(answer, default=str)  # the dry run's answer always serialises
    assert answer["summary"]["records"] == len(records)


@settings(max_examples=200, deadline=None)
@given(_docs)
def test_a_document_that_parses_keeps_its_values(doc: Any) -> None:
    """What the parser accepts it returns unchanged (numbers included): never rounded."""
    body = _to_bytes({"record": doc})
    try:
        [parsed] = parse_body(body, "application/json")
    except BodyError as exc:
        assert exc.code in {"bad_json", "number_out_of_range"}, exc.code
        return
    assert _same(parsed, json.loads(body))


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON kinds all the way down (an int stays an int)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b or (a != a and b != b)
