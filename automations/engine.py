"""What an automation does with one record: `compile_automation(snapshot).process(record)`.

In this order:
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

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from automations.coerce import COERCERS, CoercionError, Unfit, coerce, normalize_email
from automations.filters import compile_filter
from automations.kinds import json_kind
from automations.paths import MISSING, compile_take_in, get_parts, split_path
from automations.snapshot import AutomationSnapshot, Variable


@dataclass(frozen=True, slots=True)
class RecordError:
    kind: str  # not_object | missing_email | invalid_email | type_mismatch
    field: str | None  # the dotted path concerned, if any
    detail: str  # a sentence without any value from the record

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "field": self.field, "detail": self.detail}


# Not frozen (one per accepted record: a frozen __init__ costs three times as much); it holds
# dicts, so it was never hashable, and nothing changes it after `process` returns it.
@dataclass(slots=True)
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


def not_object(record: Any) -> RecordError:
    return RecordError("not_object", None, f"the record is {json_kind(record)}, not a JSON object")


class CompiledAutomation:
    """An automation snapshot prepared for many records (paths split, filters and regexes
    compiled once)."""

    def __init__(self, snapshot: AutomationSnapshot) -> None:
        self.snapshot = snapshot
        self.take_in = compile_take_in(snapshot.fields_mode, snapshot.fields_paths)
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
        # Per mapping: the one key of a one-part path (else None) and the type's coercer (the
        # same function `coerce` would pick; None for an unknown type: `coerce` reports it).
        self._plan = tuple((name, parts, var, parts[0] if len(parts) == 1 else None,
                            COERCERS.get(var.type)) for name, parts, var in mappings)

    def read_email(self, taken: dict[str, Any], errors: list[RecordError]) -> str | None:
        """The normalised address of a taken-in record; None (and an error) without one."""
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

    def read_variables(self, taken: dict[str, Any], errors: list[RecordError]) -> dict[str, Any]:
        """The survey variables of a taken-in record; a value that does not fit is an error."""
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
            return Rejected([not_object(record)])
        taken = self.take_in(record)
        if not self.filter.test(taken):
            return FilteredOut(self.filter.explain(taken, with_values=False) or "")
        errors: list[RecordError] = []
        email = self.read_email(taken, errors)
        variables = self.read_variables(taken, errors)
        if errors or email is None:
            return Rejected(errors)
        return Accepted(email, variables, taken)


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
