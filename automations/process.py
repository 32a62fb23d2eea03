"""From request body to invitation data: the pure core shared by the streams worker and the
ingress dry run.

Bodies (`parse_body`): one JSON object is one record; a JSON array is a batch of records; with
`application/x-ndjson` (or `application/ndjson`) every non-empty line is one record. Accepted
content types: `application/json`, `application/*+json`, the two NDJSON types, and none at
all (read as JSON). Anything else, `text/plain` included, is `unsupported_media_type`: being
explicit keeps form posts and mistakes from being half-understood. A charset, if given, must
be UTF-8. A UTF-8 byte-order mark is tolerated.

Records (`compile_automation(snapshot).process(record)`), in this order:
1. not a JSON object -> Rejected(`not_object`);
2. take in fields (include/exclude, `paths.py`);
3. filters, on the *taken-in* data: the article says filters apply to the incoming data, and
   the incoming data of an automation is what it takes in, so an excluded field can never
   decide anything (validation flags a filter on a field that is not taken in). A record
   that fails is FilteredOut (counted, not an error), whatever else is wrong with it;
4. the e-mail from `snapshot.email_field` (taken in): missing, null or blank ->
   `missing_email`; not an address -> `invalid_email`;
5. each mapping entry with a variable: the field's value coerced to the variable's type
   (`coerce.py`); a missing or null field leaves the variable absent (not an error); a value
   that does not fit -> `type_mismatch` naming field and variable. Skipped entries (variable
   None) are ignored; when several entries map onto one variable the first present value wins.
All errors of a record are collected (Rejected lists them all). No error detail contains a
value from the record.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from automations.coerce import COERCERS, CoercionError, Unfit, coerce, normalize_email
from automations.filters import compile_filter
from automations.kinds import json_kind as _kind
from automations.paths import MISSING, compile_take_in, flatten, get_parts, split_path
from automations.snapshot import AutomationSnapshot, Variable

# --- bodies --------------------------------------------------------------------------------

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
    `process` reject such records one by one).
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
            raise BodyError("not_object", f"the body is {_kind(doc)}; send a JSON object or "
                                          "an array of objects")
    if not records:
        raise BodyError("empty", "the body holds no records")
    if require_objects:
        for i, record in enumerate(records):
            if type(record) is not dict:
                where = f"line {_line_of(body, i)}" if kind == "ndjson" else f"item {i}"
                raise BodyError("not_object", f"record {i} ({where}) is {_kind(record)}, not "
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


# --- invitation ids ------------------------------------------------------------------------

INVITATION_NAMESPACE: Final = uuid.UUID("6f1c9a52-2d7e-5b3a-9c41-8e0f4b7d2a10")


# uuid.uuid5 builds a UUID object (with checks) only to format it again: the same bytes
# straight from SHA-1 cost a third. Equality with uuid.uuid5 is a property test.
_NS_SHA1: Final = hashlib.sha1(INVITATION_NAMESPACE.bytes, usedforsecurity=False)


def invitation_id(automation_id: str, event_id: str, index: int) -> str:
    """The invitation of record `index` of event `event_id`: uuid5 over
    "{automation_id}:{event_id}:{index}", so reprocessing yields the same id."""
    h = _NS_SHA1.copy()
    h.update(f"{automation_id}:{event_id}:{index}".encode())
    d = h.digest()
    # RFC 4122: version 5 in the high nibble of byte 6, variant 10 in the top bits of byte 8.
    x = (d[:6] + bytes(((d[6] & 0x0F) | 0x50, d[7], (d[8] & 0x3F) | 0x80)) + d[9:16]).hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


# --- outcomes ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RecordError:
    kind: str  # not_object | missing_email | invalid_email | type_mismatch
    field: str | None  # the dotted path concerned, if any
    detail: str  # a sentence without any value from the record

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "field": self.field, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Accepted:
    email: str
    variables: dict[str, Any]
    taken_in: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FilteredOut:
    reason: str  # which condition failed, without values from the record


@dataclass(frozen=True, slots=True)
class Rejected:
    errors: list[RecordError]


Outcome = Accepted | FilteredOut | Rejected


@dataclass
class _Evaluation:
    taken_in: dict[str, Any]
    passed: bool
    email: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    errors: list[RecordError] = field(default_factory=list)


class CompiledAutomation:
    """An automation snapshot prepared for many records (paths split, filters and regexes
    compiled once)."""

    def __init__(self, snapshot: AutomationSnapshot) -> None:
        self.snapshot = snapshot
        self._take_in = compile_take_in(snapshot.fields_mode, snapshot.fields_paths)
        self.filter = compile_filter(snapshot.filters)
        self._email_field = snapshot.email_field
        self._email_parts = split_path(snapshot.email_field)
        mappings: list[tuple[str, tuple[str, ...], Variable]] = []
        self.problems: list[str] = []  # configuration mistakes the control plane should stop
        for m in snapshot.mapping:
            if m.variable is None:
                continue
            var = snapshot.variable(m.variable)
            if var is None:
                self.problems.append(f"mapping of field '{m.field}' names variable "
                                     f"'{m.variable}', which the survey does not have")
                continue
            mappings.append((m.field, split_path(m.field), var))
        self._mappings = tuple(mappings)
        # Per mapping: the one key of a one-part path (else None) and the type's coercer (the
        # same function `coerce` would pick; None for an unknown type: `coerce` reports it).
        self._plan = tuple((name, parts, var, parts[0] if len(parts) == 1 else None,
                            COERCERS.get(var.type)) for name, parts, var in mappings)

    def _email(self, taken: dict[str, Any], errors: list[RecordError]) -> str | None:
        raw = get_parts(taken, self._email_parts)
        name = self._email_field
        if raw is MISSING or raw is None or (type(raw) is str and not raw.strip()):
            what = "missing" if raw is MISSING else "empty"
            errors.append(RecordError("missing_email", name,
                                      f"the e-mail field '{name}' is {what}"))
            return None
        try:
            return normalize_email(raw)
        except ValueError as exc:
            errors.append(RecordError("invalid_email", name,
                                      f"the e-mail field '{name}' does not hold a valid "
                                      f"address: {exc}"))
            return None

    def _variables(self, taken: dict[str, Any], errors: list[RecordError]) -> dict[str, Any]:
        variables: dict[str, Any] = {}
        for name, parts, var, key, fn in self._plan:
            if var.name in variables:
                continue
            # One-part paths (most mappings) straight from the dict; others walk the path.
            value = taken.get(key, MISSING) if key is not None else get_parts(taken, parts)
            if value is MISSING or value is None:
                continue
            try:
                variables[var.name] = fn(value, var) if fn is not None else coerce(value, var)
            except Unfit as exc:
                errors.append(RecordError("type_mismatch", name, "the value of field "
                                          f"'{name}' does not fit: "
                                          f"{CoercionError(var.name, var.type, exc.reason)}"))
            except CoercionError as exc:
                errors.append(RecordError("type_mismatch", name,
                                          f"the value of field '{name}' does not fit: {exc}"))
        return variables

    def process(self, record: Any) -> Outcome:
        """What the automation does with one record."""
        if type(record) is not dict:
            return Rejected([RecordError("not_object", None,
                                         f"the record is {_kind(record)}, not a JSON object")])
        taken = self._take_in(record)
        if not self.filter.test(taken):
            return FilteredOut(self.filter.explain(taken, with_values=False) or "")
        errors: list[RecordError] = []
        email = self._email(taken, errors)
        variables = self._variables(taken, errors)
        if errors or email is None:
            return Rejected(errors)
        return Accepted(email, variables, taken)

    def dry_run_record(self, record: Any, index: int) -> dict[str, Any]:
        """Everything the automation sees and decides for one record, with values (the
        integrator's own sample). Errors are listed even when the filters fail."""
        if type(record) is not dict:
            err = RecordError("not_object", None,
                              f"the record is {_kind(record)}, not a JSON object")
            return {"index": index, "outcome": "rejected", "fields_found": [],
                    "fields_taken_in": [], "filters": {"passed": False, "failed": None},
                    "email": None, "variables": {}, "errors": [err.to_dict()]}
        taken = self._take_in(record)
        verdict = self.filter(taken)
        errors: list[RecordError] = []
        email = self._email(taken, errors)
        variables = self._variables(taken, errors)
        outcome = ("filtered_out" if not verdict.passed
                   else "rejected" if errors else "accepted")
        return {"index": index, "outcome": outcome,
                "fields_found": list(flatten(record)),
                "fields_taken_in": list(flatten(taken)),
                "filters": {"passed": verdict.passed, "failed": verdict.failed},
                "email": email, "variables": variables,
                "errors": [e.to_dict() for e in errors]}


_CACHE_SIZE: Final = 1024
_cache: OrderedDict[tuple[str, int], CompiledAutomation] = OrderedDict()
_cache_lock = threading.Lock()


def compile_automation(snapshot: AutomationSnapshot) -> CompiledAutomation:
    """The compiled automation, cached by (id, version) (LRU). A cached entry is reused only
    for the same snapshot (identity, else equality), so a changed snapshot under a reused
    version, as tests make, is never served stale."""
    key = (snapshot.id, snapshot.version)
    with _cache_lock:
        compiled = _cache.get(key)
        if compiled is not None and (compiled.snapshot is snapshot
                                     or compiled.snapshot == snapshot):
            _cache.move_to_end(key)
            return compiled
    compiled = CompiledAutomation(snapshot)
    with _cache_lock:
        _cache[key] = compiled
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return compiled


def dry_run(snapshot: AutomationSnapshot, records: list[Any]) -> dict[str, Any]:
    """The dry run of `records` (from `parse_body`): JSON-serializable."""
    compiled = compile_automation(snapshot)
    results = [compiled.dry_run_record(r, i) for i, r in enumerate(records)]
    summary = {"records": len(results), "accepted": 0, "filtered_out": 0, "rejected": 0}
    for r in results:
        summary[r["outcome"]] += 1
    return {"automation_id": snapshot.id, "version": snapshot.version,
            "configuration_problems": list(compiled.problems),
            "summary": summary, "records": results}
