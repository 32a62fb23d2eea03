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
"""

from __future__ import annotations

import functools
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


def _loads(data: bytes, where: str = "") -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BodyError("bad_json", f"the body is not valid JSON: {exc.msg} at {where}line "
                                    f"{exc.lineno}, column {exc.colno}") from None


def parse_body(body: bytes, content_type: str | None, *,
               require_objects: bool = True) -> list[Any]:
    """The records in a request body.

    Raises BodyError: `unsupported_media_type` (also a form's file part), `empty` (no record
    at all), `bad_json` (with line and column), `bad_form` (where, and what is wrong),
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
                try:
                    records.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    raise BodyError("bad_json", f"line {lineno} is not valid JSON: {exc.msg} "
                                                f"at column {exc.colno}") from None
    else:
        doc = _loads(body)
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
