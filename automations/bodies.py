"""Request bodies: which content types are read, and the records a body holds.

One JSON object is one record; a JSON array is a batch of records; with `application/x-ndjson`
(or `application/ndjson`) every non-empty line is one record. Accepted content types:
`application/json`, `application/*+json`, the two NDJSON types, and none at all (read as
JSON). Anything else, `text/plain` included, is `unsupported_media_type`: being explicit keeps
form posts and mistakes from being half-understood. A charset, if given, must be UTF-8. A
UTF-8 byte-order mark is tolerated. The ingress parses to answer the caller; the streams
worker parses again to process the records.
"""

from __future__ import annotations

import functools
from typing import Any, Final

import orjson

from automations.kinds import json_kind

ACCEPTED_MEDIA_TYPES: Final = ("application/json", "application/*+json",
                               "application/x-ndjson", "application/ndjson")
_NDJSON: Final = frozenset({"application/x-ndjson", "application/ndjson"})
_UTF8: Final = frozenset({"utf-8", "utf8", "us-ascii"})
_BOM: Final = b"\xef\xbb\xbf"


class BodyError(ValueError):
    """A body that cannot be read; `code` is machine-readable, `detail` a sentence."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@functools.lru_cache(maxsize=256)
def _accepted_media_type(content_type: str) -> str:
    # The worker sees the same few content types on every record: parse each once (a
    # refused one raises and is not cached).
    return _media_type(content_type)


def media_type(content_type: str | None) -> str:
    """"json" or "ndjson" for an accepted content type; BodyError otherwise."""
    if content_type is None:
        return "json"
    if len(content_type) <= 200:
        return _accepted_media_type(content_type)
    return _media_type(content_type)


def _media_type(content_type: str | None) -> str:
    if content_type is None or not content_type.strip():
        return "json"
    main, *params = content_type.split(";")
    main = main.strip().lower()
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in _UTF8:
            raise BodyError("unsupported_media_type",
                            "the body must be UTF-8 (charset=utf-8 or no charset)")
    if main == "application/json" or (main.startswith("application/")
                                      and main.endswith("+json")):
        return "json"
    if main in _NDJSON:
        return "ndjson"
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

    Raises BodyError: `unsupported_media_type`, `empty` (no record at all), `bad_json`
    (with line and column), `not_object` (which record is not an object; only with
    `require_objects`, which the ingress uses; the streams worker may pass False and let
    the engine reject such records one by one).
    """
    kind = media_type(content_type)
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
