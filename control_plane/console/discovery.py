"""The mapping step's field list: paths found in the captured samples, each with its type,
an example value, and the survey variables its values fit."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from automations.bodies import BodyError, parse_body
from automations.coerce import CoercionError, coerce
from automations.paths import flatten, is_kept
from automations.snapshot import Variable
from control_plane.activity import Sample

MAX_VALUES = 5
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ][0-9:.+\-Z]*)?$")
_DMY_DATE = re.compile(r"^\d{1,2}[-/.]\d{1,2}[-/.]\d{4}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class FoundField:
    path: str
    values: list[Any] = field(default_factory=list)
    taken_in: bool = True

    @property
    def type(self) -> str:
        """The type the values have in words: text, number, date, boolean, email, ..."""
        kinds = {value_type(v) for v in self.values if v is not None}
        if not kinds:
            return "null"
        if len(kinds) == 1:
            return kinds.pop()
        if kinds <= {"number", "text (number)"}:
            return "number"
        return "mixed: " + ", ".join(sorted(kinds))

    @property
    def example(self) -> str:
        for v in self.values:
            if v is not None:
                text = v if isinstance(v, str) else _json(v)
                return text if len(text) <= 60 else text[:59] + "…"
        return "null"

    def fits(self, var: Variable) -> bool:
        """Every value seen coerces onto the variable without an error."""
        seen = [v for v in self.values if v is not None]
        if not seen:
            return True
        for v in seen:
            try:
                coerce(v, var)
            except (CoercionError, ValueError, TypeError):
                return False
        return True


def _json(v: Any) -> str:
    import orjson

    return orjson.dumps(v).decode()


def value_type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        s = v.strip()
        if _EMAIL.match(s):
            return "email"
        if _ISO_DATE.match(s) or _DMY_DATE.match(s):
            return "date"
        try:
            float(s.replace(",", "."))
            return "text (number)"
        except ValueError:
            return "text"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def records_of(sample: Sample) -> list[dict[str, Any]]:
    """The JSON objects in a sample's body (none when it cannot be read)."""
    if sample.truncated:
        return []
    try:
        records = parse_body(sample.body.encode(), sample.content_type, require_objects=False)
    except BodyError:
        return []
    return [r for r in records if isinstance(r, dict)]


def discover(samples: Iterable[Sample], mode: str, paths: Sequence[str],
             known: Iterable[str] = ()) -> list[FoundField]:
    """Every leaf path of the samples' records (first seen first), plus `known` paths (say,
    already mapped) that the samples lack."""
    found: dict[str, FoundField] = {}
    for sample in samples:
        for record in records_of(sample):
            for path, value in flatten(record).items():
                f = found.get(path)
                if f is None:
                    f = found[path] = FoundField(path)
                if len(f.values) < MAX_VALUES:
                    f.values.append(value)
    for path in known:
        found.setdefault(path, FoundField(path))
    for f in found.values():
        f.taken_in = is_kept(mode, list(paths), f.path)  # type: ignore[arg-type]
    return list(found.values())
