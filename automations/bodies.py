"""Request bodies: which content types are read, and the records a body holds.

One JSON object is one record; a JSON array is a batch of records; with `application/x-ndjson`
(or `application/ndjson`) every non-empty line is one record. An
`application/x-www-form-urlencoded` or `multipart/form-data` body is one record whose text
fields nest by their bracketed names (`automations.forms` has the rules). Accepted content
types: `application/json`, `application/*+json`, the two NDJSON types, the two form types, and
none at all (read as JSON). Anything else, `text/plain` included, is `unsupported_media_type`:
being explicit keeps mistakes from being half-understood. JSON's charset, if given, must be
UTF-8 (a UTF-8 byte-order mark is tolerated); a form's charset (default UTF-8) is honoured.
The ingress parses to answer the caller (and for its dry run); the streams worker parses the
same bytes with the same content type again to process the records, and the console reads its
samples with it too.

Limits, each a `BodyError` with its own code (the ingress answers 400): nesting deeper than
`max_depth` (default `MAX_DEPTH`) is `too_deep`; a number that JSON's reader cannot keep
(an integer outside the 64-bit range, a decimal that overflows to infinity or underflows to
zero) is `number_out_of_range` rather than being rounded or zeroed silently. Decimals are
read as IEEE doubles (RFC 8259's interoperable range): `0.1` is the nearest double, as in
every JSON reader. Strings are bounded by the body size limit only.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any, Final, NamedTuple

import orjson
from python_multipart.multipart import parse_options_header

from automations.forms import FormError, charset_problem, parse_multipart, parse_urlencoded
from automations.kinds import json_kind

ACCEPTED_MEDIA_TYPES: Final = ("application/json", "application/*+json",
                               "application/x-ndjson", "application/ndjson",
                               "application/x-www-form-urlencoded", "multipart/form-data")
FORM_KINDS: Final = frozenset({"form", "multipart"})  # one record per body, never a batch
_NDJSON: Final = frozenset({"application/x-ndjson", "application/ndjson"})
_FORM_TYPES: Final = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
_UTF8: Final = frozenset({"utf-8", "utf8", "us-ascii"})
_BOM: Final = b"\xef\xbb\xbf"
MAX_DEPTH: Final = 64  # nesting levels of objects/arrays; a top-level object is level 1
# Both limits are checked on the bytes at C speed (translate, replace, `in`), so the common
# body costs microseconds; a Python walk or re-read runs only when those say it may be needed.
# Numbers: digits read as 0, so a run of 19 zeros finds every integer that may pass 64 bits
# (2**64 has 20 digits, -2**63 19) and "e000" every 3-digit exponent (where 0 or infinity
# begins). A string with such a run (a long digit id) costs one exact re-read, rightly passed.
# The signs are dropped (`_SIGNS`), so "e+000" and "e-000" read as "e000": two searches
# instead of four (1.2 us instead of 2.1 a record, issue 17); dropping bytes only joins runs,
# so it can add a (harmless) re-read, never miss a number.
_DIGITS_AS_ZERO: Final = bytes.maketrans(b"123456789E", b"000000000e")
_SIGNS: Final = b"+-"
_LONG_RUN: Final = b"0" * 19
# Nesting: only brackets and quotes kept, both bracket kinds as one (depth is all we count).
_BRACKETS: Final = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE: Final = bytes(c for c in range(256) if c not in b'"[]{}')
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1  # orjson keeps every integer in [-2**63, 2**64) exactly


class MediaType(NamedTuple):
    kind: str  # "json", "ndjson", "form" or "multipart"
    charset: str = "utf-8"
    boundary: str | None = None  # multipart only


class BodyError(ValueError):
    """A body that cannot be read; `code` is machine-readable, `detail` a sentence."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


_JSON_TYPE: Final = MediaType("json")


@functools.lru_cache(maxsize=256)
def _accepted_media_type(content_type: str) -> MediaType:
    # The worker sees the same few content types on every record: parse each once (a
    # refused one raises and is not cached; multipart boundaries vary, the LRU bounds them).
    return _media_type(content_type)


def read_media_type(content_type: str | None) -> MediaType:
    """The accepted media type of a Content-Type header; BodyError otherwise."""
    if content_type is None:
        return _JSON_TYPE
    if len(content_type) <= 200:
        return _accepted_media_type(content_type)
    return _media_type(content_type)


def media_type(content_type: str | None) -> str:
    """"json", "ndjson", "form" or "multipart" for an accepted content type; BodyError
    otherwise."""
    return read_media_type(content_type).kind


def _media_type(content_type: str) -> MediaType:
    if not content_type.strip():
        return _JSON_TYPE
    if not content_type.isascii():
        # The ingress reads header bytes as Latin-1, the worker its header as UTF-8: only
        # ASCII reads the same in both, which matters for a form's boundary and charset.
        if content_type.split(";", 1)[0].strip().lower() in _FORM_TYPES:
            raise BodyError("unsupported_media_type", "the Content-Type header must be ASCII")
        content_type = content_type.encode("ascii", "replace").decode("ascii")
    raw_main, params = parse_options_header(content_type)
    main = raw_main.decode("latin-1").strip()
    charset = params.get(b"charset", b"").decode("latin-1").strip().lower() or None
    if main in _FORM_TYPES:
        problem = charset_problem(charset) if charset else None
        if problem is not None:
            raise BodyError("unsupported_media_type", problem)
        if main == "multipart/form-data":
            boundary = params.get(b"boundary")
            return MediaType("multipart", charset or "utf-8",
                             boundary.decode("latin-1") if boundary is not None else None)
        return MediaType("form", charset or "utf-8")
    if charset is not None and charset not in _UTF8:
        raise BodyError("unsupported_media_type",
                        "a JSON body must be UTF-8 (charset=utf-8 or no charset)")
    if main == "application/json" or (main.startswith("application/")
                                      and main.endswith("+json")):
        return _JSON_TYPE
    if main in _NDJSON:
        return MediaType("ndjson")
    raise BodyError("unsupported_media_type",
                    f"content type '{main[:100]}' is not supported; send "
                    f"{', '.join(ACCEPTED_MEDIA_TYPES)}")


def _loads(data: bytes, max_depth: int, lineno: int | None = None) -> Any:
    """One JSON document (the body, or NDJSON line `lineno`), within the limits."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        msg = exc.msg.lower()
        if "depth limit" in msg or "recursion" in msg:
            raise _too_deep(max_depth) from None
        if "infinity" in msg:
            raise BodyError("number_out_of_range", "the body holds a number too large to be "
                            "represented (it would be infinity); send it as a JSON "
                            "string") from None
        if lineno is not None:
            raise BodyError("bad_json", f"line {lineno} is not valid JSON: {exc.msg} "
                                        f"at column {exc.colno}") from None
        raise BodyError("bad_json", f"the body is not valid JSON: {exc.msg} at line "
                                    f"{exc.lineno}, column {exc.colno}") from None
    where = "" if lineno is None else f"(line {lineno}) "
    if type(doc) is dict or type(doc) is list:
        # Cheap first: a body with no more brackets than the limit cannot be deeper.
        if data.count(b"{") + data.count(b"[") > max_depth:
            deeper = _bytes_deeper_than(data, max_depth)
            if deeper or (deeper is None and depth_exceeds(doc, max_depth)):
                raise _too_deep(max_depth)
    # Signs dropped, so two patterns; both hold "000": one search when none can match.
    digits = data.translate(_DIGITS_AS_ZERO, _SIGNS)
    if b"000" in digits and (_LONG_RUN in digits or b"e000" in digits):
        _check_numbers(data, where)
    return doc


def _bytes_deeper_than(data: bytes, limit: int) -> bool | None:
    """Whether valid JSON `data` nests deeper than `limit`, from its bytes: escapes dropped,
    then strings, then one level of innermost `[]` per pass. None when the brackets do not
    pair up as expected (the caller walks the document instead)."""
    s = data
    if b"\\" in s:  # escaped \ and " (in strings only); most bodies have none
        s = s.replace(b"\\\\", b"").replace(b'\\"', b"")
    s = s.translate(_BRACKETS, _NOT_STRUCTURE)
    # Adjacent quotes are an empty string or two strings with no structure between them:
    # dropping them keeps the structure, and leaves only the (rare) strings with brackets.
    s = s.replace(b'""', b"")
    if b'"' in s:
        s = b"".join(s.split(b'"')[::2])  # outside the strings: every other piece
    for _ in range(limit):
        if not s:
            return False
        inner = s.replace(b"[]", b"")  # non-overlapping, left to right: one level a pass
        if len(inner) == len(s):
            return None
        s = inner
    return bool(s)


def _too_deep(max_depth: int) -> BodyError:
    return BodyError("too_deep", f"the body nests objects and arrays more than {max_depth} "
                                 "levels deep")


def depth_exceeds(doc: Any, limit: int) -> bool:
    """Whether `doc` nests objects/arrays more than `limit` levels (iterative: any depth)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        for sub in (value.values() if type(value) is dict else value):
            if type(sub) is dict or type(sub) is list:
                stack.append((sub, depth + 1))
    return False


class _NumberLost(ValueError):
    pass


def _exact_int(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > 20 or not _INT_MIN <= int(text) <= _INT_MAX:
        raise _NumberLost("an integer outside the 64-bit range (-2**63 to 2**64-1)")
    return 0


def _exact_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NumberLost("a number too large to be represented (it would be infinity)")
    if value == 0.0 and any(c in "123456789" for c in text.split("e")[0].split("E")[0]):
        raise _NumberLost("a number too small to be represented (it would be zero)")
    return 0.0


def _check_numbers(data: bytes, where: str) -> None:
    """BodyError `number_out_of_range` for a number orjson would round or zero (see the
    module). Python's reader gives every number's text; the values are thrown away."""
    try:
        json.loads(data, parse_int=_exact_int, parse_float=_exact_float)
    except _NumberLost as exc:
        raise BodyError("number_out_of_range",
                        f"the body {where}holds {exc}; send it as a JSON string") from None
    except (ValueError, RecursionError):
        return  # orjson read it; anything else Python's reader says is not about numbers


def parse_body(body: bytes, content_type: str | None, *,
               require_objects: bool = True, max_depth: int = MAX_DEPTH) -> list[Any]:
    """The records in a request body.

    Raises BodyError: `unsupported_media_type` (also a form's file part), `empty` (no record
    at all), `bad_json` (with line and column), `bad_form` (where, and what is wrong),
    `too_deep` (nesting beyond `max_depth`), `number_out_of_range` (see the module),
    `not_object` (which record is not an object; only with `require_objects`, which the
    ingress uses; the streams worker may pass False and let the engine reject such records
    one by one).
    """
    media = read_media_type(content_type)
    kind = media.kind
    if kind in FORM_KINDS:
        if not body.strip():
            raise BodyError("empty", "the body is empty; send the form's fields")
        try:
            if kind == "form":
                return [parse_urlencoded(body, media.charset)]
            return [parse_multipart(body, media.boundary, media.charset)]
        except FormError as exc:
            raise BodyError(exc.code, exc.detail) from None
    if body.startswith(_BOM):
        body = body[len(_BOM):]
    if not body.strip():
        raise BodyError("empty", "the body is empty; send a JSON object, an array of objects, "
                                 "or NDJSON lines")
    if kind == "ndjson":
        records = []
        for lineno, line in enumerate(body.split(b"\n"), start=1):
            if line.strip():
                records.append(_loads(line, max_depth, lineno))
    else:
        doc = _loads(body, max_depth)
        if type(doc) is list:
            records = doc
        elif type(doc) is dict:
            return [doc]
        else:
            raise BodyError("not_object", f"the body is {json_kind(doc)}; send a JSON object or "
                                          "an array of objects")
    if not records:
        raise BodyError("empty", "the body holds no records")
    if require_objects:
        for i, record in enumerate(records):
            if type(record) is not dict:
                where = f"line {_line_of(body, i)}" if kind == "ndjson" else f"item {i}"
                raise BodyError("not_object", f"record {i} ({where}) is {json_kind(record)}, not "
                                              "a JSON object")
    return records


def _line_of(body: bytes, index: int) -> int:
    seen = -1
    for lineno, line in enumerate(body.split(b"\n"), start=1):
        if line.strip():
            seen += 1
            if seen == index:
                return lineno
    return 0
