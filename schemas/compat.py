"""Backward compatibility of Avro schemas, by the specification's schema resolution rules.

`backward_problems(old, new)` lists why a reader using the `new` schema could NOT read data
written with the `old` one (empty list: compatible). It follows "Schema Resolution" of the
Avro specification: reader fields missing from the writer need a default, writer fields missing
from the reader are skipped, types change only by the promotions below, unions, enums,
records, arrays and maps are resolved recursively, and named types match by name or alias.
Logical types are ignored, as in resolution itself (they do not change the encoding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})
# writer type -> reader types that can read it (the specification's promotions).
PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


class SchemaError(ValueError):
    """A schema this module cannot make sense of (unknown type, undefined name)."""


@dataclass
class _Named:
    """The named types of one schema, by full name, so references can be resolved."""

    types: dict[str, dict[str, Any]] = field(default_factory=dict)


def _fullname(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _short(name: str) -> str:
    return name.rpartition(".")[2]


def _collect(schema: Any, namespace: str | None, named: _Named) -> None:
    """Register every named type (with the namespace it inherits) under its full name."""
    if isinstance(schema, list):
        for branch in schema:
            _collect(branch, namespace, named)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind in NAMED:
        full = _fullname(schema["name"], schema.get("namespace", namespace))
        inner = full.rpartition(".")[0] or None
        named.types[full] = {**schema, "_fullname": full, "_namespace": inner}
        for f in schema.get("fields", ()):
            _collect(f["type"], inner, named)
    elif kind == "array":
        _collect(schema["items"], namespace, named)
    elif kind == "map":
        _collect(schema["values"], namespace, named)
    elif isinstance(kind, dict | list):
        _collect(kind, namespace, named)


def _resolve(schema: Any, namespace: str | None, named: _Named) -> tuple[Any, str | None]:
    """(schema with references and {"type": primitive} wrappers resolved, its namespace)."""
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return schema, namespace
        for candidate in (_fullname(schema, namespace), schema):
            if candidate in named.types:
                found = named.types[candidate]
                return found, found["_namespace"]
        raise SchemaError(f"undefined type name {schema!r}")
    if isinstance(schema, list):
        return schema, namespace
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind in PRIMITIVES:
            return kind, namespace
        if kind in NAMED:
            full = _fullname(schema["name"], schema.get("namespace", namespace))
            found = named.types[full]
            return found, found["_namespace"]
        if kind in ("array", "map"):
            return schema, namespace
        if isinstance(kind, str | dict | list):
            return _resolve(kind, namespace, named)
    raise SchemaError(f"not an Avro schema: {schema!r}")


def _kind(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    kind = schema["type"]
    return "record" if kind == "error" else kind


def _describe(schema: Any) -> str:
    kind = _kind(schema)
    return f"{kind} {schema['_fullname']}" if isinstance(schema, dict) and kind in (
        "record", "enum", "fixed") else kind


def _names_match(writer: dict[str, Any], reader: dict[str, Any]) -> bool:
    """Same unqualified name, or the writer's name is one of the reader's aliases."""
    if _short(writer["_fullname"]) == _short(reader["_fullname"]):
        return True
    ns = reader["_namespace"]
    aliases = {_fullname(a, ns) for a in reader.get("aliases", ())}
    return writer["_fullname"] in aliases or _short(writer["_fullname"]) in {
        _short(a) for a in aliases}


class _Checker:
    def __init__(self, writer: dict[str, Any] | str | list[Any],
                 reader: dict[str, Any] | str | list[Any]) -> None:
        self.wn, self.rn = _Named(), _Named()
        _collect(writer, None, self.wn)
        _collect(reader, None, self.rn)
        self.in_progress: set[tuple[str, str]] = set()  # recursive named types: check once

    def _branch(self, w: Any, r_union: list[Any], r_ns: str | None) -> tuple[Any, str | None]:
        """The reader branch that resolution picks for writer type `w`: the first of the same
        type (and name, for named types), else the first it promotes to; (None, None) if none."""
        wk = _kind(w)
        branches = [_resolve(b, r_ns, self.rn) for b in r_union]
        for b, b_ns in branches:
            if _kind(b) == wk and (wk not in ("record", "enum", "fixed") or _names_match(w, b)):
                return b, b_ns
        for b, b_ns in branches:
            if _kind(b) in PROMOTIONS.get(wk, ()):
                return b, b_ns
        return None, None

    def check(self, w: Any, w_ns: str | None, r: Any, r_ns: str | None,
              path: str) -> list[str]:
        w, w_ns = _resolve(w, w_ns, self.wn)
        r, r_ns = _resolve(r, r_ns, self.rn)
        wk, rk = _kind(w), _kind(r)
        where = path or "<root>"
        if wk == "union":
            # Every branch the writer may have written must be readable.
            problems: list[str] = []
            for branch in w:
                b, b_ns = _resolve(branch, w_ns, self.wn)
                problems += [f"{p} (writer's union branch {_describe(b)})"
                             for p in self.check(b, b_ns, r, r_ns, path)]
            return problems
        if rk == "union":
            picked, picked_ns = self._branch(w, r, r_ns)
            if picked is None:
                return [f"{where}: {_describe(w)} matches no branch of the reader's union"]
            return self.check(w, w_ns, picked, picked_ns, path)
        if wk != rk:
            if wk in PROMOTIONS and rk in PROMOTIONS[wk]:
                return []
            return [f"{where}: type changed from {_describe(w)} to {_describe(r)}, which is "
                    "not one of Avro's promotions"]
        if wk == "array":
            return self.check(w["items"], w_ns, r["items"], r_ns, f"{path}[]")
        if wk == "map":
            return self.check(w["values"], w_ns, r["values"], r_ns, f"{path}{{}}")
        if wk in ("record", "enum", "fixed") and not _names_match(w, r):
            return [f"{where}: {wk} name changed from {w['_fullname']} to {r['_fullname']} "
                    "without an alias"]
        if wk == "fixed" and w["size"] != r["size"]:
            return [f"{where}: fixed size changed from {w['size']} to {r['size']}"]
        if wk == "enum":
            return self._enum(w, r, where)
        if wk == "record":
            return self._record(w, r, path)
        return []

    def _enum(self, w: dict[str, Any], r: dict[str, Any], where: str) -> list[str]:
        missing = [s for s in w["symbols"] if s not in r["symbols"]]
        if not missing:
            return []
        default = r.get("default")
        if default is not None and default in r["symbols"]:
            return []
        return [f"{where}: enum {r['_fullname']} lost symbol(s) {', '.join(missing)} and has "
                "no default symbol to read them as"]

    def _record(self, w: dict[str, Any], r: dict[str, Any], path: str) -> list[str]:
        key = (w["_fullname"], r["_fullname"])
        if key in self.in_progress:
            return []
        self.in_progress.add(key)
        try:
            problems: list[str] = []
            w_fields = {f["name"]: f for f in w["fields"]}
            for rf in r["fields"]:
                fpath = f"{path}.{rf['name']}" if path else rf["name"]
                names = [rf["name"], *rf.get("aliases", ())]
                wf = next((w_fields[n] for n in names if n in w_fields), None)
                if wf is None:
                    if "default" not in rf:
                        problems.append(f"{fpath}: field added without a default, so data "
                                        "written before it cannot be read")
                    else:
                        problems += [f"{fpath}: {p}" for p in self._default_problems(
                            rf["default"], rf["type"], r["_namespace"])]
                    continue
                problems += self.check(wf["type"], w["_namespace"], rf["type"],
                                       r["_namespace"], fpath)
            return problems
        finally:
            self.in_progress.discard(key)

    def _default_problems(self, value: Any, schema: Any, ns: str | None) -> list[str]:
        """Why `value` is not a valid default for `schema` (empty: valid)."""
        s, s_ns = _resolve(schema, ns, self.rn)
        kind = _kind(s)
        if kind == "union":  # a union's default belongs to its first branch
            return self._default_problems(value, s[0], s_ns)
        ok = {
            "null": lambda v: v is None,
            "boolean": lambda v: isinstance(v, bool),
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool)
            and -(2**31) <= v < 2**31,
            "long": lambda v: isinstance(v, int) and not isinstance(v, bool)
            and -(2**63) <= v < 2**63,
            "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "double": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "bytes": lambda v: isinstance(v, str),
            "string": lambda v: isinstance(v, str),
            "enum": lambda v: isinstance(v, str) and v in s["symbols"],
            "fixed": lambda v: isinstance(v, str) and len(v) == s["size"],
            "array": lambda v: isinstance(v, list),
            "map": lambda v: isinstance(v, dict),
            "record": lambda v: isinstance(v, dict),
        }[kind]
        if not ok(value):
            return [f"default {value!r} is not a valid {_describe(s)}"]
        if kind == "array":
            return [p for item in value for p in self._default_problems(item, s["items"], s_ns)]
        if kind == "map":
            return [p for item in value.values()
                    for p in self._default_problems(item, s["values"], s_ns)]
        if kind == "record":
            problems = []
            for f in s["fields"]:
                if f["name"] in value:
                    problems += self._default_problems(value[f["name"]], f["type"],
                                                       s["_namespace"])
                elif "default" not in f:
                    problems.append(f"default lacks field {f['name']!r} of {s['_fullname']}")
            return problems
        return []


def backward_problems(writer_old: dict[str, Any], reader_new: dict[str, Any]) -> list[str]:
    """Why data written with `writer_old` cannot be read with `reader_new`; [] if it can."""
    checker = _Checker(writer_old, reader_new)
    return checker.check(writer_old, None, reader_new, None, "")
