"""Form bodies (URL-encoded and multipart): the record each becomes, and the documented errors.

The fuzz tests feed arbitrary and near-valid bodies through `parse_body`, the one function the
ingress, its dry run, the worker and the console use, and find no outcome other than a
record or a `BodyError` with a documented code.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from automations.bodies import BodyError, parse_body
from automations.forms import MAX_DEPTH, MAX_FIELDS, key_parts
from automations.paths import flatten

FORM = "application/x-www-form-urlencoded"
BOUNDARY = "----formbuilder7MA4YWxkTrZu0gW"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
DOCUMENTED = {"bad_form", "empty", "unsupported_media_type"}


def multipart(fields: list[tuple[str, str | bytes]], *, boundary: str = BOUNDARY,
              extra: dict[str, str] | None = None) -> bytes:
    """A multipart/form-data body as form builders send it; `extra` adds part headers by
    field name (say a filename or a Content-Type)."""
    out = b""
    for name, value in fields:
        data = value.encode() if isinstance(value, str) else value
        disposition = f'form-data; name="{name}"'
        more = (extra or {}).get(name, "")
        if more.startswith(";"):  # parameters of Content-Disposition, then any header lines
            params, _, more = more.partition("\r\n")
            disposition += params
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{more}\r\n".encode()
        out += data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def one(body: bytes, content_type: str) -> dict[str, Any]:
    [record] = parse_body(body, content_type)
    return record


def refused(body: bytes, content_type: str) -> BodyError:
    with pytest.raises(BodyError) as info:
        parse_body(body, content_type)
    return info.value


# --- URL-encoded ---------------------------------------------------------------------------

def test_twilio_body_is_one_flat_record_of_texts() -> None:
    body = (b"ToCountry=NL&SmsSid=SM123&From=%2B31612345678&Body=Ja%2C+graag%21+%F0%9F%98%80"
            b"&NumMedia=0&To=%2B3197010203040")
    assert parse_body(body, FORM) == [{
        "ToCountry": "NL", "SmsSid": "SM123", "From": "+31612345678", "Body": "Ja, graag! 😀",
        "NumMedia": "0", "To": "+3197010203040"}]


def test_mailchimp_bracketed_keys_nest_and_show_as_dotted_paths() -> None:
    body = (b"type=subscribe&fired_at=2024-03-26+21%3A35%3A57&data%5Bid%5D=8a25ff1d98"
            b"&data[email]=ada%40example.com&data[merges][FNAME]=Ada&data[merges][AGE]=36"
            b"&data[merges][INTERESTS]=Books&data[merges][INTERESTS]=Music")
    record = one(body, FORM)
    assert record == {"type": "subscribe", "fired_at": "2024-03-26 21:35:57",
                      "data": {"id": "8a25ff1d98", "email": "ada@example.com",
                               "merges": {"FNAME": "Ada", "AGE": "36",
                                          "INTERESTS": ["Books", "Music"]}}}
    assert list(flatten(record)) == [
        "type", "fired_at", "data.id", "data.email", "data.merges.FNAME", "data.merges.AGE",
        "data.merges.INTERESTS.0", "data.merges.INTERESTS.1"]


@pytest.mark.parametrize(("body", "expected"), [
    (b"tag=a&tag=b&tag=c", {"tag": ["a", "b", "c"]}),
    (b"a[]=x&a[]=y", {"a": ["x", "y"]}),
    (b"a=x&a[]=y", {"a": ["x", "y"]}),
    (b"a[]=x&a=y", {"a": ["x", "y"]}),
    (b"a[b]=1&a[b]=2", {"a": {"b": ["1", "2"]}}),
    (b"items[0][sku]=A&items[0][qty]=2&items[1][sku]=B",
     {"items": {"0": {"sku": "A", "qty": "2"}, "1": {"sku": "B"}}}),
    (b"x[][a]=1&x[][a]=2", {"x": [{"a": "1"}, {"a": "2"}]}),
    (b"m[][]=1&m[][]=2", {"m": [["1"], ["2"]]}),
    (b"a[b=1&a]=2&[c]=3&a[b]c=4&a.b=5", {"a[b": "1", "a]": "2", "[c]": "3", "a[b]c": "4",
                                         "a.b": "5"}),
    (b"flag&empty=&&trailing=1&", {"flag": "", "empty": "", "trailing": "1"}),
    (b"plus=1+2%2B3&space=a%20b", {"plus": "1 2+3", "space": "a b"}),
    ("raw=Zoë&esc=Zo%C3%AB".encode(), {"raw": "Zoë", "esc": "Zoë"}),
    (b"n=1\r\n", {"n": "1\r\n"}),
])
def test_form_rules(body: bytes, expected: dict[str, Any]) -> None:
    assert one(body, FORM) == expected


@pytest.mark.parametrize(("content_type", "body", "expected"), [
    (f"{FORM}; charset=ISO-8859-1", b"stad=Li%E8ge&caf%E9=1", {"stad": "Liège", "café": "1"}),
    (f"{FORM}; charset=windows-1252", b"prijs=%8012", {"prijs": "€12"}),
    (f'{FORM}; charset="utf-8"', b"a=%C3%A9", {"a": "é"}),
    (f"{FORM.upper()}", b"a=1", {"a": "1"}),
])
def test_charset_is_honoured(content_type: str, body: bytes, expected: dict[str, Any]) -> None:
    assert one(body, content_type) == expected


@pytest.mark.parametrize(("body", "code", "fragments"), [
    (b"name=Ada&pct=50%&x=1", "bad_form", ["percent-encoding at byte 15", "%25"]),
    (b"a=%G1", "bad_form", ["byte 2"]),
    (b"a=1&bad=%C3%28", "bad_form", ["field 'bad' at byte 8", "not valid utf-8"]),
    (b"ok=1&%FF=2", "bad_form", ["a field name at byte 5"]),
    (b"a=1&a[b]=2", "bad_form", ["'a[b]' (at byte 4)", "'a' is already a value"]),
    (b"a[b]=1&a=2", "bad_form", ["'a' (at byte 7)", "already a group"]),
    (b"a[]=1&a[b]=2", "bad_form", ["already a list"]),
    (b"a[b]=1&a[]=2", "bad_form", ["already a group"]),
    (b"a[b]=1&a[b][c]=2", "bad_form", ["'a.b' is already a value"]),
    (b"=x", "bad_form", ["no name"]),
    (b"a" + b"[x]" * (MAX_DEPTH + 1) + b"=1", "bad_form", [f"at most {MAX_DEPTH}"]),
    (b"&".join(b"f%d=1" % i for i in range(MAX_FIELDS + 1)), "bad_form",
     [f"more than {MAX_FIELDS} fields"]),
    (b'{"email": "ann@example.com"}', "bad_form", ["looks like JSON", "application/json"]),
    (b' [{"email": "ann@example.com"}]', "bad_form", ["looks like JSON"]),
    (b"&&", "empty", ["no fields"]),
    (b"  ", "empty", ["empty"]),
])
def test_form_errors_say_where(body: bytes, code: str, fragments: list[str]) -> None:
    exc = refused(body, FORM)
    assert exc.code == code
    for fragment in fragments:
        assert fragment in exc.detail, exc.detail


def test_errors_never_show_values() -> None:
    exc = refused(b"email=ann%40example.com&secret=s3cr%ZZ", FORM)
    assert exc.code == "bad_form"
    assert "ann" not in exc.detail and "s3cr" not in exc.detail


@pytest.mark.parametrize(("charset", "fragment"), [
    ("utf-16", "ASCII-compatible"), ("utf-7", "ASCII-compatible"), ("base64", "not a known"),
    ("klingon", "not a known"),
])
def test_unusable_charsets_are_415(charset: str, fragment: str) -> None:
    exc = refused(b"a=1", f"{FORM}; charset={charset}")
    assert exc.code == "unsupported_media_type" and fragment in exc.detail


def test_key_parts() -> None:
    assert key_parts("data[merges][FNAME]") == ["data", "merges", "FNAME"]
    assert key_parts("a[]") == ["a", ""]
    assert key_parts("a[b") == ["a[b"]
    assert key_parts("plain") == ["plain"]


# --- multipart/form-data -------------------------------------------------------------------

def test_multipart_text_fields_become_the_same_record_as_urlencoded() -> None:
    fields = [("q3_name[first]", "Ada"), ("q3_name[last]", "Lovelace"), ("q4_email", "a@x.nl"),
              ("q5_age", "36"), ("q6_date", "05-03-2024"), ("tags[]", "a"), ("tags[]", "b")]
    from_multipart = one(multipart(fields), MULTIPART)
    assert from_multipart == one(urlencode(fields).encode(), FORM)
    assert from_multipart["q3_name"] == {"first": "Ada", "last": "Lovelace"}


def test_multipart_part_charsets_and_quoted_boundary() -> None:
    body = multipart([("stad", "Liège".encode("latin-1")), ("naam", "Zoë")],
                     extra={"stad": "Content-Type: text/plain; charset=iso-8859-1\r\n"})
    assert one(body, f'multipart/form-data; boundary="{BOUNDARY}"') == {
        "stad": "Liège", "naam": "Zoë"}


def test_multipart_file_part_is_415_naming_the_field_before_its_content_is_read() -> None:
    # The file's content is followed by garbage: the answer is the 415 at its headers, so the
    # parser never went on into the file's bytes.
    body = multipart([("name", "Ada"), ("cv", b"%PDF-1.7 ...")],
                     extra={"cv": '; filename="cv.pdf"'})
    body = body.replace(b"%PDF-1.7 ...\r\n", b"%PDF-1.7 " + b"\x00garbage" * 100)
    exc = refused(body, MULTIPART)
    assert exc.code == "unsupported_media_type"
    assert "part 2 (field 'cv') is a file" in exc.detail and "cv.pdf" not in exc.detail


@pytest.mark.parametrize("extra", [
    "; filename*=UTF-8''cv.pdf", "Content-Type: application/octet-stream\r\n",
    "Content-Type: image/png\r\n", "; filename=\"\"\r\nContent-Type: image/png\r\n",
])
def test_multipart_non_text_parts_are_415(extra: str) -> None:
    exc = refused(multipart([("photo", b"\x89PNG")], extra={"photo": extra}), MULTIPART)
    assert exc.code == "unsupported_media_type" and "'photo'" in exc.detail


def test_an_unused_file_input_is_skipped_but_a_filled_one_is_not() -> None:
    empty = '; filename=""\r\nContent-Type: application/octet-stream\r\n'
    assert one(multipart([("name", "Ada"), ("cv", b"")], extra={"cv": empty}),
               MULTIPART) == {"name": "Ada"}
    exc = refused(multipart([("name", "Ada"), ("cv", b"x")], extra={"cv": empty}), MULTIPART)
    assert exc.code == "unsupported_media_type" and "'cv'" in exc.detail


@pytest.mark.parametrize(("body", "content_type", "fragment"), [
    (multipart([("a", "1")]), "multipart/form-data", "no boundary"),
    (multipart([("a", "1")]), "multipart/form-data; boundary=other", "malformed at byte"),
    (multipart([("a", "1")]).replace(b"\r\n", b"\n"), MULTIPART, "CRLF"),
    (multipart([("a", "1")])[:-12], MULTIPART, "ends before its closing boundary"),
    (multipart([("a", "1")]).replace(b"form-data; ", b"attachment; "), MULTIPART,
     "form-data; name"),
    (multipart([("a", "1")]).replace(b'name="a"', b'name=""'), MULTIPART, "no name"),
    (multipart([("a", b"\xff")]), MULTIPART, "not valid utf-8 at byte 0 of the value"),
    (multipart([("a", "1")], extra={"a": "Content-Transfer-Encoding: base64\r\n"}),
     MULTIPART, "Content-Transfer-Encoding"),
    (multipart([("a", "1"), ("a[b]", "2")]), MULTIPART, "'a[b]' (in part 2)"),
])
def test_multipart_errors(body: bytes, content_type: str, fragment: str) -> None:
    exc = refused(body, content_type)
    assert exc.code == "bad_form" and fragment in exc.detail, exc.detail


def test_multipart_without_fields_is_empty() -> None:
    assert refused(f"--{BOUNDARY}--\r\n".encode(), MULTIPART).code == "empty"


# --- properties and fuzzing ----------------------------------------------------------------

_KEY = st.text(st.characters(blacklist_characters="[]", blacklist_categories=("Cs",)),
               min_size=1, max_size=8)
_VALUE = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_RECORD = st.recursive(
    _VALUE | st.lists(_VALUE, min_size=1, max_size=3),
    lambda inner: st.dictionaries(_KEY, inner, min_size=1, max_size=4), max_leaves=12,
).filter(lambda r: isinstance(r, dict))


def _fields(record: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in record.items():
        name = f"{prefix}[{key}]" if prefix else key
        if isinstance(value, dict):
            out += _fields(value, name)
        elif isinstance(value, list):
            out += [(f"{name}[]", v) for v in value]
        else:
            out.append((name, value))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_RECORD)
def test_nested_records_round_trip_through_both_form_types(record: dict[str, Any]) -> None:
    fields = _fields(record)
    if len(fields) > MAX_FIELDS or not fields:
        return
    encoded = "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in fields).encode()
    assert parse_body(encoded, FORM) == [record]
    names_fit = all(not set(n) & set('"\\\r\n') for n, _ in fields)
    if names_fit:  # a multipart name is a quoted header parameter (a backslash escapes)
        assert parse_body(multipart(fields), MULTIPART) == [record]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200),
       st.sampled_from(["", "; charset=utf-8", "; charset=latin-1", "; charset=utf-16",
                        "; charset=nope", "; charset=shift_jis"]))
def test_any_urlencoded_bytes_give_a_record_or_a_documented_error(body: bytes,
                                                                  params: str) -> None:
    _documented(body, FORM + params)


_HEADERS = st.sampled_from([
    b'Content-Disposition: form-data; name="a[b]"', b'Content-Disposition: form-data; name="a"',
    b'Content-Disposition: form-data; name="a[]"', b"Content-Disposition: form-data",
    b'Content-Disposition: form-data; name="f"; filename="x.pdf"',
    b'Content-Disposition: form-data; name="f"; filename=""',
    b"Content-Type: text/plain; charset=latin-1", b"Content-Type: image/png",
    b"Content-Type: application/octet-stream", b"Content-Type: text/plain; charset=utf-16",
    b"Content-Transfer-Encoding: base64", b"X: " + b"y" * 5000, b":", b"no colon",
])
_PART = st.builds(lambda headers, data: b"--%s\r\n%s\r\n%s\r\n" % (
    BOUNDARY.encode(), b"".join(h + b"\r\n" for h in headers), data),
    st.lists(_HEADERS, min_size=1, max_size=3), st.binary(max_size=12) | st.just(b"36"))


@st.composite
def _multipart_bodies(draw: st.DrawFn) -> bytes:
    """Near-valid bodies: parts of likely headers and data, closed or not, then maybe cut or
    with bytes spliced in, so the parser's later states are reached, not only its first."""
    body = b"".join(draw(st.lists(_PART, max_size=5)))
    body += draw(st.sampled_from([b"--%s--\r\n" % BOUNDARY.encode(), b"--%s--" % BOUNDARY.encode(),
                                  b"", b"--%s" % BOUNDARY.encode()]))
    if body and draw(st.booleans()):
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.binary(max_size=8)) + body[at + draw(st.integers(0, 4)):]
    return body


@settings(max_examples=500, deadline=None)
@given(_multipart_bodies(),
       st.sampled_from([f"; boundary={BOUNDARY}", f'; boundary="{BOUNDARY}"', "",
                        "; boundary=", "; boundary=é", f"; boundary={BOUNDARY}; charset=cp037",
                        f"; boundary={BOUNDARY}; charset=latin-1", "; boundary=" + "b" * 300]))
def test_any_multipart_bytes_give_a_record_or_a_documented_error(body: bytes,
                                                                 params: str) -> None:
    _documented(body, "multipart/form-data" + params)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([FORM, "multipart/form-data", "application/json", ""]),
       st.text(max_size=60) | st.text(alphabet=' ;="\\charsetboundaryutf8-\x00é', max_size=60))
def test_any_content_type_parameters_give_a_record_or_a_documented_error(
        main: str, params: str) -> None:
    _documented(b"a=1", f"{main};{params}", DOCUMENTED | {"bad_json"})


def _documented(body: bytes, content_type: str, codes: set[str] = DOCUMENTED) -> None:
    try:
        records = parse_body(body, content_type)
    except BodyError as exc:
        assert exc.code in codes, exc
        assert exc.detail
        return
    assert len(records) == 1 and isinstance(records[0], dict) and records[0]


def test_a_backslash_in_a_multipart_name_escapes_the_next_character() -> None:
    # the name is a quoted string (RFC 7578 section 4.2); python-multipart unescapes it
    body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="a\\\\b\\"c"\r\n\r\nv\r\n'
            f"--{BOUNDARY}--\r\n").encode()
    assert parse_body(body, MULTIPART) == [{'a\\b"c': "v"}]
